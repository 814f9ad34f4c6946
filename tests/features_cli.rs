//! `tickpipe features` as a user runs it: the exported rows are exactly the vectors the feature
//! stage computes (CSV parses back bit for bit, Arrow holds the same bits), several captures
//! form one stream (a definition then the book), bars are written, and bad input fails loudly
//! without leaving a half-written file.

mod common;

use std::path::Path;

use common::*;
use tickpipe::pipeline::config::FeatureSettings;
use tickpipe::pipeline::feature_engine::FeatureEngine;
use tickpipe::pipeline::features::{N_FEATURES, SCHEMA, index_of};
use tickpipe::pipeline::msg::{Event, MAX_PARTS, Tick};

/// The vectors the feature stage computes for `paths`, in order.
fn engine_vectors(paths: &[&Path]) -> Vec<Tick> {
    let mut engine = FeatureEngine::new(&FeatureSettings::default().engine_config()).unwrap();
    let mut out = Vec::new();
    let mut tick = Tick::default();
    let mut parts = [Event::default(); MAX_PARTS];
    for (seq, bytes) in records(paths).iter().enumerate() {
        let n = Event::decode_parts(bytes, seq as u64 + 1, 0, &mut parts).unwrap();
        for ev in &parts[..n] {
            if engine.on_event(ev, &mut tick, &mut |_, _| {}) {
                out.push(tick);
            }
        }
    }
    out
}

fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

#[test]
fn csv_and_arrow_hold_exactly_the_engine_vectors() {
    let Some(day) = data_file("dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("f.csv");
    let arrow = tmp.path().join("f.arrow");
    let bars = tmp.path().join("bars.csv");
    for (out, extra) in [(&csv, Some(&bars)), (&arrow, None)] {
        let mut args = vec![
            "features",
            day.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if let Some(b) = extra {
            args.extend(["--bars", b.to_str().unwrap()]);
        }
        let o = run(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        assert!(text(&o.stdout).contains("vectors"), "{}", text(&o.stdout));
    }
    let expected = engine_vectors(&[&day]);
    assert!(expected.len() > 10_000, "{} vectors", expected.len());

    let (header, rows) = read_csv(&csv);
    assert_eq!(&header[..3], ["ts_recv", "ts_event", "instrument_id"]);
    let names: Vec<&str> = SCHEMA.iter().map(|s| s.name).collect();
    assert_eq!(&header[3..], names.as_slice());
    assert_eq!(rows.len(), expected.len());
    for (row, t) in rows.iter().zip(&expected) {
        assert_eq!(row[0], t.ts_recv.to_string());
        assert_eq!(row[1], t.ts_event.to_string());
        assert_eq!(row[2], t.instrument_id.to_string());
        for (cell, v) in row[3..].iter().zip(&t.values) {
            let parsed = if cell.is_empty() {
                f64::NAN
            } else {
                cell.parse::<f64>().unwrap()
            };
            assert!(same(parsed, *v), "{cell} vs {v}");
        }
    }

    let file = std::fs::File::open(&arrow).unwrap();
    let reader = arrow_ipc::reader::FileReader::try_new(file, None).unwrap();
    let schema = reader.schema();
    assert_eq!(
        schema
            .metadata()
            .get("tickpipe.schema_version")
            .map(String::as_str),
        Some("1")
    );
    let mut row = 0;
    for batch in reader {
        let batch = batch.unwrap();
        assert_eq!(batch.num_columns(), 3 + N_FEATURES);
        let ts = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow_array::UInt64Array>()
            .unwrap();
        for r in 0..batch.num_rows() {
            let t = &expected[row + r];
            assert_eq!(ts.value(r), t.ts_recv);
            for f in 0..N_FEATURES {
                let col = batch
                    .column(3 + f)
                    .as_any()
                    .downcast_ref::<arrow_array::Float64Array>()
                    .unwrap();
                assert!(same(col.value(r), t.values[f]));
            }
        }
        row += batch.num_rows();
    }
    assert_eq!(row, expected.len());

    let (bh, brows) = read_csv(&bars);
    assert_eq!(bh[0], "instrument_id");
    assert!(
        brows.iter().any(|r| r[1] == "60") && brows.iter().any(|r| r[1] == "1"),
        "1 s and 1 min bars"
    );
}

#[test]
fn a_definition_ahead_of_the_book_gives_the_tick_size() {
    let (Some(def), Some(mbo)) = (
        data_file("dbn/esm4-mbo-snapshot/orderbooks_definition.dbn.zst"),
        data_file(
            "dbn/esm4-mbo-snapshot/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
        ),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spread_ticks = index_of("spread_ticks").unwrap();
    let mut finite = Vec::new();
    for (name, inputs) in [("with", vec![&def, &mbo]), ("without", vec![&mbo])] {
        let out = tmp.path().join(format!("{name}.csv"));
        let mut args = vec!["features"];
        args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
        args.extend(["--out", out.to_str().unwrap()]);
        let o = run(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        let (_, rows) = read_csv(&out);
        assert!(!rows.is_empty());
        finite.push(
            rows.iter()
                .filter(|r| !r[3 + spread_ticks].is_empty())
                .count(),
        );
    }
    assert!(finite[0] > 0, "the definition's tick size is used");
    assert_eq!(
        finite[1], 0,
        "no tick size without a definition or a configured one"
    );
}

#[test]
fn bad_input_fails_loudly_and_leaves_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("f.csv");
    let o = run(&[
        "features",
        "/nonexistent.dbn",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("/nonexistent.dbn"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists());

    // A capture cut mid-record.
    let gen_path = tmp.path().join("g.dbn");
    let o = run(&[
        "gen",
        "--events",
        "2000",
        "--out",
        gen_path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let bytes = std::fs::read(&gen_path).unwrap();
    let cut = tmp.path().join("cut.dbn");
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let o = run(&[
        "features",
        cut.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("truncated"), "{}", text(&o.stderr));
    assert!(!out.exists(), "no half-written output");
    assert!(!tmp.path().join("f.csv.partial").exists());

    // The same capture whole works.
    let o = run(&[
        "features",
        gen_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));

    // A bad [features] table names the field.
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[features]\ntime_source = \"wall\"\n").unwrap();
    let o = run(&[
        "features",
        gen_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("features.time_source"),
        "{}",
        text(&o.stderr)
    );
}
