//! Parity of the jump model with the reference implementation (`jumpmodels` 0.1.1), read from
//! the goldens in `models/fixtures/sjm/` (made by `models/scripts/sjm_golden.py`; no Python runs
//! here).
//!
//! Given the reference's starting centres, the fit must give exactly the reference's labels,
//! the same best start, and centres, objectives and scaler within 1e-9 relative (with a floor
//! of 1: the centres are z-scores; the two sides do the same operations in the same order, so
//! the differences seen are zero or a few ulps). `predict` must equal the reference's `predict`
//! and the online step its `predict_online`, row for row.
//!
//! The real-data golden derives its rows from `bars/btc-perp-20211231-20220201_1m.csv` in the
//! shared data folder (`TICKPIPE_DATA`, else `../shared/data` next to the repository); it is
//! skipped with a message when the file is absent. The synthetic golden always runs.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tickpipe_models::sjm::{SjmError, SjmFitConfig, SjmModel, SjmParts, SjmStop};

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sjm")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("golden file");
    serde_json::from_str(&text).expect("golden JSON")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn matrix(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().flat_map(f64s).collect()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_str().expect("string").to_string())
        .collect()
}

fn label_string<T: Copy + Into<u64>>(labels: &[T]) -> String {
    labels.iter().map(|&l| l.into().to_string()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = 0.0f64;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(close(g, w), "{what}[{i}]: {g} vs reference {w}");
        worst = worst.max((g - w).abs() / w.abs().max(1.0));
    }
    worst
}

fn first_diff(a: &str, b: &str) -> Option<usize> {
    a.bytes().zip(b.bytes()).position(|(x, y)| x != y)
}

/// Runs every fit case of a golden on `rows` (row-major, the fit rows first) and checks the
/// reference's `predict` / `predict_online` for the cases that have them.
fn check_golden(golden: &Value, rows: &[f64]) {
    let names = names(&golden["feature_names"]);
    let f = names.len();
    let n_fit = golden["n_fit_rows"].as_u64().expect("n_fit_rows") as usize;
    let fit_rows = &rows[..n_fit * f];
    for case in golden["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let cfg = SjmFitConfig {
            n_states: case["n_states"].as_u64().expect("n_states") as usize,
            jump_penalty: case["jump_penalty"].as_f64().expect("jump_penalty"),
            max_iter: case["max_iter"].as_u64().expect("max_iter") as usize,
            tol: case["tol"].as_f64().expect("tol"),
            ..SjmFitConfig::default()
        };
        let starts: Vec<f64> = case["starts"]
            .as_array()
            .expect("starts")
            .iter()
            .flat_map(matrix)
            .collect();
        let result = SjmModel::fit_with_starts(fit_rows, f, &names, &cfg, &starts);
        if case["empty_state"].as_bool().expect("empty_state") {
            match result {
                Err(SjmError::EmptyState { .. }) => {
                    eprintln!("{name}: empty state, as the reference (NaN centre)");
                    continue;
                }
                other => panic!("{name}: the reference leaves a state empty, got {other:?}"),
            }
        }
        let (model, report) = result.unwrap_or_else(|e| panic!("{name}: fit failed: {e}"));
        let want_labels = case["labels"].as_str().expect("labels");
        let got_labels = label_string(&report.labels);
        assert!(
            got_labels == want_labels,
            "{name}: labels differ from the reference, first at row {:?}",
            first_diff(&got_labels, want_labels)
        );
        assert_eq!(
            report.best_init as u64,
            case["best_init"].as_u64().expect("best_init"),
            "{name}: best start"
        );
        let want_inits = f64s(&case["init_objectives"]);
        let got_inits: Vec<f64> = report.inits.iter().map(|i| i.objective).collect();
        let w_init = assert_close(
            &format!("{name}: start objectives"),
            &got_inits,
            &want_inits,
        );
        let w_obj = assert_close(
            &format!("{name}: objective"),
            &[report.objective],
            &[case["objective"].as_f64().expect("objective")],
        );
        let w_centres = assert_close(
            &format!("{name}: centres"),
            &(0..cfg.n_states)
                .flat_map(|k| model.centre(k).to_vec())
                .collect::<Vec<_>>(),
            &matrix(&case["centres"]),
        );
        let w_mean = assert_close(
            "scaler mean",
            model.scaler_mean(),
            &f64s(&golden["scaler"]["mean"]),
        );
        let w_std = assert_close(
            "scaler std",
            model.scaler_std(),
            &f64s(&golden["scaler"]["std"]),
        );
        if cfg.max_iter == 1 {
            assert!(
                report
                    .inits
                    .iter()
                    .all(|i| i.iterations == 1 && i.stop == SjmStop::MaxIter),
                "{name}: {:?}",
                report.inits
            );
        }
        if name.contains("_tol_") {
            // The case exists to exercise the tolerance stop (centres kept from the previous
            // labels); make sure it still does.
            assert!(
                report.inits.iter().any(|i| i.stop == SjmStop::Tolerance),
                "{name}: {:?}",
                report.inits
            );
        }
        eprintln!(
            "{name}: labels equal ({} rows, {} switches); largest relative differences: centres {w_centres:e}, objective {w_obj:e}, start objectives {w_init:e}, scaler {w_mean:e}/{w_std:e}; stops {:?}",
            report.labels.len(),
            report.n_switches,
            report
                .inits
                .iter()
                .map(|i| (i.iterations, i.stop))
                .collect::<Vec<_>>()
        );

        let Some(want_online) = case.get("predict_online").and_then(Value::as_str) else {
            continue;
        };
        let want_predict = case["predict"].as_str().expect("predict");
        // The reference's own parameters, so the online check does not depend on the fit.
        let reference = SjmModel::from_parts(SjmParts {
            feature_names: names.clone(),
            jump_penalty: cfg.jump_penalty,
            scaler_mean: f64s(&golden["scaler"]["mean"]),
            scaler_std: f64s(&golden["scaler"]["std"]),
            centres: matrix(&case["centres"]),
            regime_variances: vec![1.0; cfg.n_states * f],
        })
        .expect("reference parameters");
        for (which, m) in [
            ("reference parameters", &reference),
            ("fitted model", &model),
        ] {
            let predicted = m.predict(rows).expect("predict");
            let got = label_string(&predicted.iter().map(|&l| l as u64).collect::<Vec<_>>());
            assert!(
                got == want_predict,
                "{name} ({which}): predict differs, first at row {:?}",
                first_diff(&got, want_predict)
            );
            let mut state = m.new_online();
            let mut online = Vec::with_capacity(rows.len() / f);
            for x in rows.chunks_exact(f) {
                let step = m.step(&mut state, x);
                assert!(step.valid, "{name}: finite row rejected");
                assert!(
                    step.confidence >= 1.0 / cfg.n_states as f64 - 1e-12 && step.confidence <= 1.0,
                    "{name}: confidence {}",
                    step.confidence
                );
                online.push(step.label);
            }
            let got = label_string(&online);
            assert!(
                got == want_online,
                "{name} ({which}): online labels differ from predict_online, first at row {:?}",
                first_diff(&got, want_online)
            );
        }
        eprintln!(
            "{name}: predict and online labels equal the reference on {} rows ({} fit + {} unseen)",
            rows.len() / f,
            n_fit,
            rows.len() / f - n_fit
        );
    }
}

#[test]
fn synthetic_golden() {
    let golden = fixture("synthetic.json");
    let rows = matrix(&golden["rows"]);
    check_golden(&golden, &rows);
}

fn data_dir() -> PathBuf {
    std::env::var_os("TICKPIPE_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"),
        PathBuf::from,
    )
}

/// The golden script's features, same operations in the same order.
fn btc_features(path: &Path, first: usize, n: usize) -> Vec<f64> {
    let text = std::fs::read_to_string(path).expect("bars file");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect("column");
    let (ih, il, ic) = (col("high"), col("low"), col("close"));
    let (mut high, mut low, mut close) = (Vec::new(), Vec::new(), Vec::new());
    for line in lines {
        let parts: Vec<&str> = line.trim().split(',').collect();
        if parts.len() < header.len() {
            continue;
        }
        high.push(parts[ih].parse::<f64>().expect("high"));
        low.push(parts[il].parse::<f64>().expect("low"));
        close.push(parts[ic].parse::<f64>().expect("close"));
    }
    let mut ret = vec![f64::NAN; close.len()];
    for t in 1..close.len() {
        ret[t] = close[t] / close[t - 1] - 1.0;
    }
    let mut rows = Vec::with_capacity(n * 4);
    for t in (first..close.len()).take(n) {
        let mut s = 0.0;
        for r in &ret[t - 14..=t] {
            s += r * r;
        }
        rows.extend_from_slice(&[
            ret[t],
            (s / 15.0).sqrt(),
            close[t] / close[t - 15] - 1.0,
            (high[t] - low[t]) / close[t],
        ]);
    }
    rows
}

#[test]
fn btc_golden() {
    let golden = fixture("btc_1m.json");
    let path = data_dir().join(golden["data"].as_str().expect("data"));
    if !path.exists() {
        eprintln!(
            "SKIPPED: real data {} not found (set TICKPIPE_DATA)",
            path.display()
        );
        return;
    }
    let first = golden["first_bar"].as_u64().expect("first_bar") as usize;
    let n = golden["n_rows"].as_u64().expect("n_rows") as usize;
    let rows = btc_features(&path, first, n);
    assert_eq!(rows.len(), n * 4, "rows derived");
    let sums = &golden["row_checksums"];
    assert_eq!(&rows[..4], f64s(&sums["first"]).as_slice(), "first row");
    assert_eq!(
        &rows[rows.len() - 4..],
        f64s(&sums["last"]).as_slice(),
        "last row"
    );
    check_golden(&golden, &rows);
}
