//! `tickpipe models` as a user runs it: `fit-sjm` writes a model directory that `predict` and the
//! engine load, the same seed gives the same model, `predict` gives the library's numbers for
//! each model kind, and bad input fails with a message that names the problem.

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use common::*;
use tickpipe::models::sjm::SjmModel;
use tickpipe::models::xgb::XgbModel;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures")
}

/// A feature CSV with three regimes of different spread/volatility, 600 rows, two instruments,
/// and a few rows with a missing value.
fn feature_csv(dir: &Path) -> PathBuf {
    let mut s = String::from("ts_recv,instrument_id,spread_bps,rv_10s,ofi_1s\n");
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut noise = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    for i in 0..600u64 {
        let regime = (i / 100) % 3;
        let (spread, rv) = [(1.0, 0.1), (3.0, 0.5), (6.0, 2.0)][regime as usize];
        let inst = 1 + i % 2;
        if i % 97 == 5 {
            writeln!(s, "{i},{inst},,{},{}", rv + noise() * 0.05, noise()).unwrap();
        } else {
            writeln!(
                s,
                "{i},{inst},{},{},{}",
                spread + noise() * 0.3,
                rv + noise() * 0.05,
                noise()
            )
            .unwrap();
        }
    }
    let p = dir.join("features.csv");
    std::fs::write(&p, s).unwrap();
    p
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn fit(features: &Path, out: &Path, seed: &str) -> std::process::Output {
    run(&[
        "models",
        "fit-sjm",
        "--features",
        features.to_str().unwrap(),
        "--columns",
        "spread_bps,rv_10s",
        "--states",
        "3",
        "--lambda",
        "5",
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ])
}

#[test]
fn fit_sjm_then_predict_online() {
    let d = tmp();
    let csv = feature_csv(d.path());
    let m1 = d.path().join("m1");
    let o = fit(&csv, &m1, "3");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("593 of 600 rows used"),
        "{}",
        stdout(&o)
    );
    let model = SjmModel::load(&m1).unwrap();
    assert_eq!(model.n_states(), 3);
    assert_eq!(model.feature_names(), ["spread_bps", "rv_10s"]);
    // Same seed, same model, byte for byte.
    let m2 = d.path().join("m2");
    assert!(fit(&csv, &m2, "3").status.success());
    let read = |p: &Path| std::fs::read(p.join("model.json")).unwrap();
    assert_eq!(read(&m1), read(&m2));

    let pred = d.path().join("pred.csv");
    let o = run(&[
        "models",
        "predict",
        "--model",
        m1.to_str().unwrap(),
        "--input",
        csv.to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&pred).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("row,instrument_id,label,confidence,valid")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 600);
    // The missing cells are flagged, never labelled.
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[4] == "false", i % 97 == 5, "row {i}: {r:?}");
    }
    // Per instrument, the online labels separate the three regimes: within each block of 100
    // rows (after a short settling) one label dominates, and the blocks' labels differ.
    let mut block_label = Vec::new();
    for b in 0..3 {
        let mut counts = [0usize; 3];
        for r in &rows[b * 100 + 10..b * 100 + 100] {
            if r[4] == "true" {
                counts[r[2].parse::<usize>().unwrap()] += 1;
            }
        }
        let (label, &most) = counts.iter().enumerate().max_by_key(|c| *c.1).unwrap();
        assert!(most >= 80, "block {b}: {counts:?}");
        block_label.push(label);
    }
    block_label.sort_unstable();
    block_label.dedup();
    assert_eq!(block_label.len(), 3, "three regimes found");
}

#[test]
fn predict_with_xgboost_gives_the_library_numbers() {
    let d = tmp();
    let model = fixtures().join("pipeline/score.json");
    let m = XgbModel::load(&model).unwrap();
    let names: Vec<String> = m.feature_names().to_vec();
    // Rows over the model's columns in reverse order (binding is by name), with missing cells.
    let mut s = names.iter().rev().cloned().collect::<Vec<_>>().join(",");
    s.push('\n');
    let mut rows = Vec::new();
    for i in 0..50 {
        let row: Vec<f64> = (0..names.len())
            .map(|j| ((i * 7 + j * 3) % 11) as f64 * 0.37 - 1.5)
            .collect();
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .rev()
            .map(|(j, v)| {
                if (i + j) % 9 == 0 {
                    String::new()
                } else {
                    v.to_string()
                }
            })
            .collect();
        writeln!(s, "{}", cells.join(",")).unwrap();
        let row: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(j, v)| if (i + j) % 9 == 0 { f64::NAN } else { *v })
            .collect();
        rows.push(row);
    }
    let input = d.path().join("rows.csv");
    std::fs::write(&input, s).unwrap();
    let out = d.path().join("pred.csv");
    let o = run(&[
        "models",
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    let cols: Vec<usize> = (0..names.len()).collect();
    for (i, line) in text.lines().skip(1).enumerate() {
        let got: f32 = line.split(',').nth(1).unwrap().parse().unwrap();
        let mut want = [0f32];
        m.predict_row(&rows[i], &cols, &mut want);
        assert_eq!(got.to_bits(), want[0].to_bits(), "row {i}");
    }
    assert_eq!(text.lines().count(), 51);
}

#[test]
fn bad_input_is_named() {
    let d = tmp();
    let csv = feature_csv(d.path());
    let out = d.path().join("m");
    let fail = |args: &[&str], want: &str| {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(want),
            "{args:?}: wanted {want:?} in {}",
            stderr(&o)
        );
    };
    let csv_s = csv.to_str().unwrap();
    let out_s = out.to_str().unwrap();
    fail(
        &[
            "models",
            "fit-sjm",
            "--features",
            csv_s,
            "--states",
            "3",
            "--lambda",
            "1",
            "--out",
            out_s,
        ],
        "no column \"depth_imbalance_l1\"",
    );
    let bad = d.path().join("bad.csv");
    std::fs::write(&bad, "a,b\n1,2\n3,x\n").unwrap();
    fail(
        &[
            "models",
            "fit-sjm",
            "--features",
            bad.to_str().unwrap(),
            "--columns",
            "a,b",
            "--states",
            "2",
            "--lambda",
            "1",
            "--out",
            out_s,
        ],
        "line 3, column \"b\": \"x\" is not a number",
    );
    std::fs::write(&bad, "a,b\n1,2,3\n").unwrap();
    fail(
        &[
            "models",
            "predict",
            "--model",
            fixtures().join("pipeline/score.json").to_str().unwrap(),
            "--input",
            bad.to_str().unwrap(),
            "--out",
            out_s,
        ],
        "more than the header's 2 columns",
    );
    // A model whose features the input lacks names the feature.
    std::fs::write(&bad, "a,b\n1,2\n").unwrap();
    fail(
        &[
            "models",
            "predict",
            "--model",
            fixtures().join("pipeline/score.json").to_str().unwrap(),
            "--input",
            bad.to_str().unwrap(),
            "--out",
            out_s,
        ],
        "spread_bps",
    );
    fail(
        &[
            "models",
            "predict",
            "--model",
            d.path().join("missing.json").to_str().unwrap(),
            "--input",
            csv_s,
            "--out",
            out_s,
        ],
        "missing.json",
    );
    let empty = d.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    fail(
        &[
            "models",
            "fit-sjm",
            "--features",
            empty.to_str().unwrap(),
            "--states",
            "2",
            "--lambda",
            "1",
            "--out",
            out_s,
        ],
        "empty file",
    );
    assert!(!out.exists(), "no model written on failure");
}
