//! Parity with XGBoost 3.2: every committed fixture model (trained and saved by XGBoost,
//! see `models/scripts/xgb_golden.py`), loaded from JSON and from UBJSON, must reproduce
//! XGBoost's own predictions bit for bit (`to_bits()` equality), margins and transformed
//! outputs, on rows with missing cells, zeros, and values exactly at split thresholds —
//! through `predict_row`, `predict_margin_row` and the batch paths.

use std::io::Read;
use std::path::{Path, PathBuf};

use tickpipe_models::xgb::{Objective, XgbModel};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/xgb")
}

struct Cases {
    columns: Option<Vec<String>>,
    n_cols: usize,
    rows: Vec<f64>,
    margin: Vec<Vec<u32>>,
    output: Vec<Vec<u32>>,
}

fn cases(name: &str) -> Cases {
    let text = std::fs::read_to_string(dir().join(format!("{name}.cases.json"))).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let columns = doc["columns"].as_array().map(|a| {
        a.iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    });
    let rows_v = doc["rows"].as_array().unwrap();
    let n_cols = rows_v[0].as_array().unwrap().len();
    let mut rows = Vec::new();
    for r in rows_v {
        let r = r.as_array().unwrap();
        assert_eq!(r.len(), n_cols);
        for v in r {
            // Python repr strings ("nan" for missing); Rust's parser is correctly rounded.
            rows.push(v.as_str().unwrap().parse::<f64>().unwrap());
        }
    }
    let hex = |key: &str| -> Vec<Vec<u32>> {
        doc[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|h| u32::from_str_radix(h.as_str().unwrap(), 16).unwrap())
                    .collect()
            })
            .collect()
    };
    let margin = hex("margin");
    let output = hex("output");
    assert_eq!(margin.len(), rows.len() / n_cols);
    assert_eq!(output.len(), rows.len() / n_cols);
    Cases {
        columns,
        n_cols,
        rows,
        margin,
        output,
    }
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Checks one model against its cases through every prediction path; returns the number of
/// rows checked.
fn check(model: &XgbModel, c: &Cases, label: &str) -> usize {
    let cols = match &c.columns {
        Some(names) => {
            let schema: Vec<&str> = names.iter().map(String::as_str).collect();
            model.bind(&schema).unwrap()
        }
        None => {
            assert!(model.feature_names().is_empty());
            let schema: Vec<String> = (0..c.n_cols).map(|i| format!("c{i}")).collect();
            let schema: Vec<&str> = schema.iter().map(String::as_str).collect();
            model.bind(&schema).unwrap()
        }
    };
    let n_rows = c.rows.len() / c.n_cols;
    let mut out = vec![0f32; model.n_outputs()];
    let mut margin = vec![0f32; model.n_margins()];
    for (i, row) in c.rows.chunks_exact(c.n_cols).enumerate() {
        model.predict_margin_row(row, &cols, &mut margin);
        assert_eq!(
            bits(&margin),
            c.margin[i],
            "{label}: margin of row {i}: {margin:?}"
        );
        model.predict_row(row, &cols, &mut out);
        assert_eq!(
            bits(&out),
            c.output[i],
            "{label}: output of row {i}: {out:?}"
        );
    }
    // Batch paths, over the whole set and over an odd-sized slice (a partial block).
    let mut all_out = vec![0f32; n_rows * model.n_outputs()];
    let mut all_margin = vec![0f32; n_rows * model.n_margins()];
    model.predict_batch(&c.rows, c.n_cols, &cols, &mut all_out);
    model.predict_margin_batch(&c.rows, c.n_cols, &cols, &mut all_margin);
    let want_out: Vec<u32> = c.output.iter().flatten().copied().collect();
    let want_margin: Vec<u32> = c.margin.iter().flatten().copied().collect();
    assert_eq!(bits(&all_out), want_out, "{label}: batch output");
    assert_eq!(bits(&all_margin), want_margin, "{label}: batch margin");
    let k = 7.min(n_rows - 1);
    let mut part = vec![0f32; k * model.n_outputs()];
    model.predict_batch(
        &c.rows[c.n_cols..(k + 1) * c.n_cols],
        c.n_cols,
        &cols,
        &mut part,
    );
    assert_eq!(
        bits(&part),
        want_out[model.n_outputs()..(k + 1) * model.n_outputs()],
        "{label}: partial batch"
    );
    n_rows
}

fn check_fixture(name: &str, objective: Objective, formats: &[&str]) {
    let c = cases(name);
    for ext in formats {
        let path = dir().join(format!("{name}.{ext}"));
        let model = XgbModel::load(&path).unwrap_or_else(|e| panic!("{name}.{ext}: {e}"));
        assert_eq!(model.objective(), objective);
        assert!(check(&model, &c, &format!("{name}.{ext}")) > 40);
    }
}

const BOTH: &[&str] = &["json", "ubj"];

#[test]
fn reg_squarederror() {
    check_fixture("reg_squarederror", Objective::SquaredError, BOTH);
}

#[test]
fn reg_logistic() {
    check_fixture("reg_logistic", Objective::RegLogistic, BOTH);
}

#[test]
fn reg_logistic_with_user_base_score() {
    check_fixture("reg_logistic_base03", Objective::RegLogistic, BOTH);
}

#[test]
fn binary_logistic() {
    check_fixture("binary_logistic", Objective::BinaryLogistic, BOTH);
}

#[test]
fn binary_logitraw() {
    check_fixture("binary_logitraw", Objective::BinaryLogitRaw, BOTH);
}

#[test]
fn multi_softprob() {
    check_fixture("multi_softprob", Objective::MultiSoftprob, BOTH);
}

#[test]
fn multi_softmax() {
    check_fixture("multi_softmax", Objective::MultiSoftmax, BOTH);
}

#[test]
fn model_without_feature_names_binds_positionally() {
    check_fixture("reg_noname", Objective::SquaredError, BOTH);
}

#[test]
fn xgboost_2x_layout() {
    check_fixture("binary_logistic_v2", Objective::BinaryLogistic, &["json"]);
    let m = XgbModel::load(&dir().join("binary_logistic_v2.json")).unwrap();
    assert_eq!(m.version(), (2, 1, 4));
}

#[test]
fn bench_model_100_trees_depth_6() {
    let bytes = gunzip(&dir().join("bench_d6_t100.ubj.gz"));
    let model = XgbModel::from_ubjson(&bytes).unwrap();
    assert_eq!(model.n_trees(), 100);
    assert_eq!(model.n_features(), 16);
    assert_eq!(XgbModel::from_bytes(&bytes).unwrap(), model);
    assert!(check(&model, &cases("bench_d6_t100"), "bench_d6_t100") > 40);
}

#[test]
fn json_and_ubjson_load_the_same_model() {
    for name in [
        "reg_squarederror",
        "binary_logistic",
        "multi_softprob",
        "reg_noname",
    ] {
        let a = XgbModel::load(&dir().join(format!("{name}.json"))).unwrap();
        let b = XgbModel::load(&dir().join(format!("{name}.ubj"))).unwrap();
        assert_eq!(a, b, "{name}");
        let json = std::fs::read(dir().join(format!("{name}.json"))).unwrap();
        assert_eq!(XgbModel::from_json(&json).unwrap(), a);
        let ubj = std::fs::read(dir().join(format!("{name}.ubj"))).unwrap();
        assert_eq!(XgbModel::from_ubjson(&ubj).unwrap(), a);
    }
}
