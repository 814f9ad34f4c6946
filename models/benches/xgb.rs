//! XGBoost evaluator cost on the committed benchmark model (`fixtures/xgb/bench_d6_t100.ubj.gz`:
//! `binary:logistic`, 100 trees of depth 6, 16 of the 24 `tickpipe.features` columns).
//!
//! Rows are the model's golden cases (random values, missing cells, zeros, values at split
//! thresholds), tiled to 4096 rows of 24 columns. Benchmarks, in the `xgb` group:
//!
//! - `predict_row`: one row through `predict_row` (bind map, f64→f32 cast, 100 trees,
//!   sigmoid), cycling through the rows so branch history does not repeat;
//! - `predict_margin_row`: the same without the sigmoid;
//! - `predict_batch_4096`: 4096 rows through `predict_batch` (throughput in rows/s);
//! - `row_by_row_4096`: the same 4096 rows through `predict_row` one at a time, the baseline
//!   for the batch path.
//!
//! XGBoost's own timings on the same model and rows: `benches/python/xgb_reference.py`,
//! which also reads these results and prints the ratios.
//!
//! Run: `cargo bench -p tickpipe-models --bench xgb`. Under `cargo test --benches` each
//! benchmark runs once.

use std::hint::black_box;
use std::io::Read;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickpipe_models::xgb::XgbModel;

const BATCH: usize = 4096;

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/xgb")
}

fn model() -> XgbModel {
    let mut bytes = Vec::new();
    let file = std::fs::File::open(fixtures().join("bench_d6_t100.ubj.gz")).expect("bench model");
    flate2::read::GzDecoder::new(file)
        .read_to_end(&mut bytes)
        .expect("gunzip");
    XgbModel::from_ubjson(&bytes).expect("load")
}

/// The golden rows (schema order), tiled to `BATCH` rows; returns (schema, rows).
fn rows() -> (Vec<String>, Vec<f64>) {
    let text = std::fs::read_to_string(fixtures().join("bench_d6_t100.cases.json")).expect("cases");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("json");
    let schema: Vec<String> = doc["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect();
    let golden: Vec<Vec<f64>> = doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_str().expect("cell").parse().expect("f64"))
                .collect()
        })
        .collect();
    let rows = golden
        .iter()
        .cycle()
        .take(BATCH)
        .flatten()
        .copied()
        .collect();
    (schema, rows)
}

fn bench(c: &mut Criterion) {
    let model = model();
    let (schema, rows) = rows();
    let names: Vec<&str> = schema.iter().map(String::as_str).collect();
    let cols = model.bind(&names).expect("bind");
    let n_cols = schema.len();
    let n_rows = rows.len() / n_cols;

    let mut g = c.benchmark_group("xgb");
    let mut i = 0usize;
    let mut out = [0f32; 1];
    g.bench_function("predict_row", |b| {
        b.iter(|| {
            i = (i + 1) % n_rows;
            let row = &rows[i * n_cols..(i + 1) * n_cols];
            model.predict_row(black_box(row), &cols, &mut out);
            black_box(out[0])
        })
    });
    g.bench_function("predict_margin_row", |b| {
        b.iter(|| {
            i = (i + 1) % n_rows;
            let row = &rows[i * n_cols..(i + 1) * n_cols];
            model.predict_margin_row(black_box(row), &cols, &mut out);
            black_box(out[0])
        })
    });
    g.throughput(Throughput::Elements(n_rows as u64));
    let mut outs = vec![0f32; n_rows];
    g.bench_function(format!("predict_batch_{BATCH}"), |b| {
        b.iter(|| {
            model.predict_batch(black_box(&rows), n_cols, &cols, &mut outs);
            black_box(outs[n_rows - 1])
        })
    });
    g.bench_function(format!("row_by_row_{BATCH}"), |b| {
        b.iter(|| {
            for (row, o) in black_box(&rows)
                .chunks_exact(n_cols)
                .zip(outs.chunks_exact_mut(1))
            {
                model.predict_row(row, &cols, o);
            }
            black_box(outs[n_rows - 1])
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
