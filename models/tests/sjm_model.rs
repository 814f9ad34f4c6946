//! The jump model's contract outside reference parity: fit configuration and input errors,
//! the model directory (round trip and every refusal), binding by name, batch decoding and the
//! online step (invalid rows, confidence, normalisation, agreement with the textbook
//! recursion).

use std::fs;
use std::path::Path;

use serde_json::Value;
use tickpipe_models::sjm::{
    FORMAT, FORMAT_VERSION, MAX_FEATURES, MAX_STATES, MODEL_FILE, SjmError, SjmFitConfig, SjmModel,
    SjmOnline, SjmParts, SjmStep,
};

/// A small deterministic generator for test data (splitmix64).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Roughly standard normal (sum of twelve uniforms).
    fn normal(&mut self) -> f64 {
        (0..12).map(|_| self.next()).sum::<f64>() - 6.0
    }
}

/// `n` rows of `f` features from three persistent regimes; returns the rows and the true
/// regime of each row.
fn regimes(n: usize, f: usize, seed: u64) -> (Vec<f64>, Vec<usize>) {
    let mut g = Gen(seed);
    let mut rows = Vec::with_capacity(n * f);
    let mut truth = Vec::with_capacity(n);
    let mut s = 0usize;
    for _ in 0..n {
        if g.next() < 0.01 {
            s = (s + 1 + usize::from(g.next() < 0.5)) % 3;
        }
        truth.push(s);
        for j in 0..f {
            let mu = [0.0, 3.0, -3.0][s] * if j.is_multiple_of(2) { 1.0 } else { -0.5 };
            rows.push(10.0 + mu + [0.5, 0.8, 0.6][s] * g.normal());
        }
    }
    (rows, truth)
}

fn names(f: usize) -> Vec<String> {
    (0..f).map(|j| format!("f{j}")).collect()
}

fn cfg(k: usize, lambda: f64) -> SjmFitConfig {
    SjmFitConfig {
        n_states: k,
        jump_penalty: lambda,
        ..SjmFitConfig::default()
    }
}

fn fitted() -> SjmModel {
    let (rows, _) = regimes(1500, 4, 7);
    SjmModel::fit(&rows, 4, &names(4), &cfg(3, 10.0))
        .expect("fit")
        .0
}

/// Fraction of rows where `labels` matches `truth` under the best relabelling.
fn accuracy(labels: &[u8], truth: &[usize], k: usize) -> f64 {
    let mut best = 0usize;
    let mut perm: Vec<usize> = (0..k).collect();
    // Heap's algorithm over the k! relabellings (k ≤ 4 here).
    fn permute(p: &mut Vec<usize>, n: usize, f: &mut dyn FnMut(&[usize])) {
        if n == 1 {
            f(p);
            return;
        }
        for i in 0..n {
            permute(p, n - 1, f);
            let j = if n.is_multiple_of(2) { i } else { 0 };
            p.swap(j, n - 1);
        }
    }
    permute(&mut perm, k, &mut |p| {
        let hits = labels
            .iter()
            .zip(truth)
            .filter(|&(&l, &t)| p[l as usize] == t)
            .count();
        best = best.max(hits);
    });
    best as f64 / labels.len() as f64
}

// ---------------------------------------------------------------- fit

#[test]
fn fit_recovers_planted_regimes_and_orders_states_by_frequency() {
    let (rows, truth) = regimes(3000, 4, 11);
    let (model, report) = SjmModel::fit(&rows, 4, &names(4), &cfg(3, 10.0)).expect("fit");
    assert_eq!(report.n_rows, 3000);
    assert_eq!(report.n_skipped, 0);
    assert_eq!(report.inits.len(), 10);
    assert!(accuracy(&report.labels, &truth, 3) > 0.98);
    assert!(
        report.state_frequencies.windows(2).all(|w| w[0] >= w[1]),
        "{:?}",
        report.state_frequencies
    );
    let counted: Vec<usize> = (0..3)
        .map(|k| report.labels.iter().filter(|&&l| l == k as u8).count())
        .collect();
    assert_eq!(counted, report.state_frequencies);
    let switches = report.labels.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, report.n_switches);
    // The reported objective is the jump objective of the reported labels and centres.
    let mut obj = 0.0;
    for (t, row) in rows.chunks_exact(4).enumerate() {
        let c = model.centre(report.labels[t] as usize);
        let mut d = 0.0;
        for j in 0..4 {
            let z = (row[j] - model.scaler_mean()[j]) / model.scaler_std()[j];
            d += (z - c[j]) * (z - c[j]);
        }
        obj += 0.5 * d;
    }
    obj += 10.0 * switches as f64;
    assert!(
        (obj - report.objective).abs() < 1e-6 * obj,
        "{obj} vs {}",
        report.objective
    );
    // The best start has the lowest objective of all starts.
    let lowest = report
        .inits
        .iter()
        .map(|i| i.objective)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(report.inits[report.best_init].objective, lowest);
    let info = model.fit_info().expect("fit info");
    assert_eq!(info.objective, report.objective);
    assert_eq!(info.n_init, 10);
    assert_eq!(info.init, "k-means++");
}

#[test]
fn scaler_is_population_mean_and_std() {
    let rows = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 6.0, 60.0];
    let (model, _) = SjmModel::fit(&rows, 2, &names(2), &cfg(2, 0.0)).expect("fit");
    assert_eq!(model.scaler_mean(), &[3.0, 30.0]);
    let var0 = (4.0 + 1.0 + 0.0 + 9.0) / 4.0;
    assert!((model.scaler_std()[0] - f64::sqrt(var0)).abs() < 1e-15);
    assert!((model.scaler_std()[1] - 10.0 * f64::sqrt(var0)).abs() < 1e-13);
}

#[test]
fn fit_is_deterministic_per_seed() {
    let (rows, _) = regimes(800, 3, 5);
    let a = SjmModel::fit(&rows, 3, &names(3), &cfg(3, 5.0)).expect("fit");
    let b = SjmModel::fit(&rows, 3, &names(3), &cfg(3, 5.0)).expect("fit");
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
}

#[test]
fn rows_with_non_finite_values_are_skipped_and_counted() {
    let (rows, _) = regimes(900, 3, 12);
    let mut dirty = Vec::new();
    for (t, row) in rows.chunks_exact(3).enumerate() {
        dirty.extend_from_slice(row);
        if t % 100 == 0 {
            dirty.extend_from_slice(&[f64::NAN, 1.0, 1.0]);
            dirty.extend_from_slice(&[1.0, f64::INFINITY, 1.0]);
            dirty.extend_from_slice(&[1.0, 1.0, f64::NEG_INFINITY]);
        }
    }
    let clean = SjmModel::fit(&rows, 3, &names(3), &cfg(3, 5.0)).expect("fit");
    let skipped = SjmModel::fit(&dirty, 3, &names(3), &cfg(3, 5.0)).expect("fit");
    assert_eq!(skipped.1.n_skipped, 27);
    assert_eq!(skipped.1.n_rows, 900);
    // Same parameters and labels; only the skip count in the metadata differs.
    assert_eq!(clean.0.to_parts(), skipped.0.to_parts());
    assert_eq!(clean.1.labels, skipped.1.labels);
    assert_eq!(skipped.0.fit_info().expect("info").n_skipped, 27);
}

#[test]
fn fit_rejects_bad_configuration_and_inputs() {
    let (rows, _) = regimes(100, 2, 1);
    let n = names(2);
    let bad = |c: SjmFitConfig| SjmModel::fit(&rows, 2, &n, &c).unwrap_err();
    assert!(matches!(
        bad(cfg(1, 1.0)),
        SjmError::StateCount { n: 1, .. }
    ));
    assert!(matches!(
        bad(cfg(MAX_STATES + 1, 1.0)),
        SjmError::StateCount { n: 9, .. }
    ));
    for lambda in [-1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            bad(cfg(2, lambda)),
            SjmError::InvalidConfig {
                field: "jump_penalty",
                ..
            }
        ));
    }
    assert!(matches!(
        bad(SjmFitConfig {
            n_init: 0,
            ..cfg(2, 1.0)
        }),
        SjmError::InvalidConfig {
            field: "n_init",
            ..
        }
    ));
    for tol in [-1e-3, f64::NAN] {
        assert!(matches!(
            bad(SjmFitConfig { tol, ..cfg(2, 1.0) }),
            SjmError::InvalidConfig { field: "tol", .. }
        ));
    }
    let c = cfg(2, 1.0);
    assert!(matches!(
        SjmModel::fit(&rows[..5], 2, &n, &c),
        Err(SjmError::Shape { .. })
    ));
    assert!(matches!(
        SjmModel::fit(&rows, 2, &names(3), &c),
        Err(SjmError::Shape { .. })
    ));
    assert!(matches!(
        SjmModel::fit(&rows, 0, &[], &c),
        Err(SjmError::FeatureCount { n: 0, .. })
    ));
    let wide = vec![1.0; 33 * 4];
    assert!(matches!(
        SjmModel::fit(&wide, 33, &names(33), &c),
        Err(SjmError::FeatureCount { n: 33, .. })
    ));
    let dup = vec!["a".to_string(), "a".to_string()];
    assert!(matches!(
        SjmModel::fit(&rows, 2, &dup, &c),
        Err(SjmError::FeatureName { .. })
    ));
    let empty = vec!["a".to_string(), String::new()];
    assert!(matches!(
        SjmModel::fit(&rows, 2, &empty, &c),
        Err(SjmError::FeatureName { .. })
    ));
    // One usable row (the other is NaN) for two states.
    assert!(matches!(
        SjmModel::fit(&[1.0, 2.0, f64::NAN, 1.0], 2, &n, &c),
        Err(SjmError::TooFewRows {
            usable: 1,
            skipped: 1,
            needed: 2
        })
    ));
    let constant: Vec<f64> = rows.chunks_exact(2).flat_map(|r| [r[0], 4.25]).collect();
    match SjmModel::fit(&constant, 2, &n, &c) {
        Err(SjmError::ConstantFeature { name, .. }) => assert_eq!(name, "f1"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn fit_with_starts_checks_the_starts() {
    let (rows, _) = regimes(200, 2, 3);
    let n = names(2);
    let c = cfg(2, 1.0);
    assert!(matches!(
        SjmModel::fit_with_starts(&rows, 2, &n, &c, &[0.0; 3]),
        Err(SjmError::Shape { .. })
    ));
    assert!(matches!(
        SjmModel::fit_with_starts(&rows, 2, &n, &c, &[]),
        Err(SjmError::Shape { .. })
    ));
    assert!(matches!(
        SjmModel::fit_with_starts(&rows, 2, &n, &c, &[0.0, f64::NAN, 1.0, 1.0]),
        Err(SjmError::NonFinite { .. })
    ));
    let (m, r) = SjmModel::fit_with_starts(
        &rows,
        2,
        &n,
        &c,
        &[-1.0, 1.0, 1.0, -1.0, 0.0, 0.0, 1.0, 1.0],
    )
    .expect("two starts");
    assert_eq!(r.inits.len(), 2);
    assert_eq!(m.fit_info().expect("info").init, "given");
}

#[test]
fn a_penalty_that_forbids_switching_leaves_states_empty() {
    let (rows, _) = regimes(300, 2, 4);
    match SjmModel::fit(&rows, 2, &names(2), &cfg(3, 1e9)) {
        Err(SjmError::EmptyState {
            empty: 2,
            n_states: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- predict

#[test]
fn predict_reproduces_the_fit_labels() {
    let (rows, _) = regimes(1200, 3, 21);
    let (model, report) = SjmModel::fit(&rows, 3, &names(3), &cfg(3, 8.0)).expect("fit");
    // Converged by identical labels, so decoding with the final centres gives them again.
    assert!(report.inits[report.best_init].stop == tickpipe_models::sjm::SjmStop::SameLabels);
    let predicted = model.predict(&rows).expect("predict");
    let fit: Vec<usize> = report.labels.iter().map(|&l| l as usize).collect();
    assert_eq!(predicted, fit);
}

#[test]
fn predict_rejects_bad_rows() {
    let model = fitted();
    assert!(matches!(
        model.predict(&[1.0; 5]),
        Err(SjmError::Shape { .. })
    ));
    let mut rows = vec![10.0; 12];
    rows[9] = f64::NAN;
    assert!(matches!(
        model.predict(&rows),
        Err(SjmError::NonFiniteRow { row: 2 })
    ));
    rows[9] = 1e300;
    assert!(matches!(
        model.predict(&rows),
        Err(SjmError::NonFiniteRow { row: 2 })
    ));
    assert_eq!(model.predict(&[]).expect("empty"), Vec::<usize>::new());
}

// ---------------------------------------------------------------- online

/// The textbook forward recursion: K × K minimum, values never renormalised.
fn naive_online(model: &SjmModel, rows: &[f64]) -> Vec<u8> {
    let (k, f) = (model.n_states(), model.n_features());
    let mut v = vec![0.0; k];
    let mut out = Vec::new();
    for (t, x) in rows.chunks_exact(f).enumerate() {
        let loss: Vec<f64> = (0..k)
            .map(|s| {
                let c = model.centre(s);
                0.5 * (0..f)
                    .map(|j| {
                        let z = (x[j] - model.scaler_mean()[j]) / model.scaler_std()[j];
                        (z - c[j]) * (z - c[j])
                    })
                    .sum::<f64>()
            })
            .collect();
        let next: Vec<f64> = (0..k)
            .map(|s| {
                if t == 0 {
                    loss[s]
                } else {
                    loss[s]
                        + (0..k)
                            .map(|j| v[j] + if j == s { 0.0 } else { model.jump_penalty() })
                            .fold(f64::INFINITY, f64::min)
                }
            })
            .collect();
        v = next;
        let mut best = 0;
        for s in 1..k {
            if v[s] < v[best] {
                best = s;
            }
        }
        out.push(best as u8);
    }
    out
}

#[test]
fn online_step_equals_the_textbook_recursion() {
    for (seed, k, lambda) in [(1, 3, 0.0), (2, 3, 4.0), (3, 2, 15.0), (4, 3, 60.0)] {
        let (rows, _) = regimes(2000, 4, seed);
        let (model, _) = SjmModel::fit(&rows, 4, &names(4), &cfg(k, lambda)).expect("fit");
        let (test_rows, _) = regimes(3000, 4, seed + 100);
        let mut st = model.new_online();
        let got: Vec<u8> = test_rows
            .chunks_exact(4)
            .map(|x| model.step(&mut st, x).label)
            .collect();
        assert_eq!(got, naive_online(&model, &test_rows), "seed {seed}");
        assert_eq!(st.steps(), 3000);
    }
}

#[test]
fn online_values_stay_normalised_and_bounded() {
    let model = fitted();
    let (rows, _) = regimes(20_000, 4, 33);
    let mut st = model.new_online();
    let mut worst: f64 = 0.0;
    for x in rows.chunks_exact(4) {
        let s = model.step(&mut st, x);
        let v = st.values();
        assert_eq!(v[s.label as usize], 0.0);
        assert!(v.iter().all(|&x| x >= 0.0 && x.is_finite()));
        worst = worst.max(v.iter().copied().fold(0.0, f64::max));
    }
    // With the minimum subtracted every step, each value is at most λ plus one row's loss gap.
    assert!(worst < 1e4, "values grew to {worst}");
    assert!(std::mem::size_of::<SjmOnline>() <= 128);
}

/// Two centres symmetric about the scaler mean: a row at the mean is equidistant.
fn symmetric(k: usize, lambda: f64) -> SjmModel {
    let mut centres = Vec::new();
    for s in 0..k {
        let a = std::f64::consts::TAU * s as f64 / k as f64;
        centres.extend_from_slice(&[a.cos(), a.sin()]);
    }
    SjmModel::from_parts(SjmParts {
        feature_names: names(2),
        jump_penalty: lambda,
        scaler_mean: vec![100.0, -5.0],
        scaler_std: vec![2.0, 0.5],
        centres,
        regime_variances: vec![1.0; 2 * k],
    })
    .expect("parts")
}

#[test]
fn confidence_is_one_over_k_on_a_tie_and_one_when_a_state_dominates() {
    for k in [2usize, 3, 4, 8] {
        let model = symmetric(k, 5.0);
        let mut st = model.new_online();
        // A row at the mean: every state at distance 1 (up to rounding of the cosines).
        let s = model.step(&mut st, &[100.0, -5.0]);
        assert!(s.valid);
        assert!(
            (s.confidence - 1.0 / k as f64).abs() < 1e-12,
            "k {k}: {}",
            s.confidence
        );
        // Far along state 0's direction, state 0 dominates.
        let mut st = model.new_online();
        let s = model.step(&mut st, &[100.0 + 2.0 * 600.0, -5.0]);
        assert_eq!(s.label, 0);
        assert_eq!(s.confidence, 1.0);
    }
    // In between, confidence follows the softmax of −V exactly.
    let model = symmetric(2, 5.0);
    let mut st = model.new_online();
    let s = model.step(&mut st, &[100.0 + 2.0 * 0.3, -5.0]);
    let v = st.values();
    let want = 1.0 / (1.0 + (-v[1]).exp());
    assert_eq!(s.label, 0);
    assert!((s.confidence - want).abs() < 1e-15);
    assert!((v[1] - 0.6).abs() < 1e-12, "gap {}", v[1]);
}

#[test]
fn confidence_is_exactly_one_over_k_on_an_exact_tie() {
    // Centres (±1, 0), (0, ±1): a row at the scaler mean has bit-identical values.
    let model = SjmModel::from_parts(SjmParts {
        feature_names: names(2),
        jump_penalty: 1.0,
        scaler_mean: vec![3.0, 4.0],
        scaler_std: vec![1.0, 1.0],
        centres: vec![1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0],
        regime_variances: vec![1.0; 8],
    })
    .expect("parts");
    let mut st = model.new_online();
    let s = model.step(&mut st, &[3.0, 4.0]);
    assert_eq!(s.confidence, 0.25);
    assert_eq!(s.label, 0, "ties go to the lowest state");
}

#[test]
fn confidence_is_the_largest_softmax_entry_of_the_values() {
    let model = fitted();
    let (rows, _) = regimes(5000, 4, 77);
    let mut st = model.new_online();
    let k = model.n_states() as f64;
    for x in rows.chunks_exact(4) {
        let s = model.step(&mut st, x);
        let v = st.values();
        let want = 1.0 / v.iter().map(|g| (-g).exp()).sum::<f64>();
        assert!(
            (s.confidence - want).abs() <= 1e-15,
            "{} vs {want}",
            s.confidence
        );
        assert!(s.confidence >= 1.0 / k && s.confidence <= 1.0);
        if v.iter()
            .enumerate()
            .all(|(i, &g)| i == s.label as usize || g > 37.0)
        {
            assert_eq!(s.confidence, 1.0);
        }
    }
}

#[test]
fn invalid_rows_leave_the_state_untouched() {
    let model = fitted();
    let mut st = model.new_online();
    let first = model.step(&mut st, &[f64::NAN, 10.0, 10.0, 10.0]);
    assert_eq!(
        first,
        SjmStep {
            label: SjmStep::NO_LABEL,
            confidence: 0.0,
            valid: false
        }
    );
    assert_eq!(st.label(), None);
    let ok = model.step(&mut st, &[10.0, 10.0, 10.0, 10.0]);
    assert!(ok.valid);
    let before = st;
    for bad in [
        vec![f64::NAN, 10.0, 10.0, 10.0],
        vec![10.0, f64::INFINITY, 10.0, 10.0],
        vec![10.0, 10.0, f64::NEG_INFINITY, 10.0],
        vec![10.0, 10.0, 10.0],
        vec![10.0; 5],
    ] {
        let s = model.step(&mut st, &bad);
        assert!(!s.valid, "{bad:?}");
        assert_eq!(s.label, ok.label);
        assert_eq!(s.confidence, 0.0);
        assert_eq!(st, before, "state changed by {bad:?}");
        assert!(st.values().iter().all(|v| v.is_finite()));
    }
    // Finite but overflowing: 1e308 / std 0.5 · centre ±1 is beyond the largest double.
    let sym = SjmModel::from_parts(SjmParts {
        feature_names: names(2),
        jump_penalty: 1.0,
        scaler_mean: vec![0.0, 0.0],
        scaler_std: vec![0.5, 0.5],
        centres: vec![1.0, 0.0, -1.0, 0.0],
        regime_variances: vec![1.0; 4],
    })
    .expect("parts");
    let mut sst = sym.new_online();
    assert!(sym.step(&mut sst, &[0.1, 0.0]).valid);
    let before = sst;
    let s = sym.step(&mut sst, &[1e308, 0.0]);
    assert!(!s.valid);
    assert_eq!(sst, before);
    assert!(
        sym.step(&mut sst, &[1e300, 0.0]).valid,
        "large but representable"
    );
    // A state from a model with another state count is refused.
    let other = symmetric(2, 1.0);
    let mut foreign = other.new_online();
    assert!(!model.step(&mut foreign, &[10.0; 4]).valid);
    st.reset();
    assert_eq!(st.label(), None);
    assert_eq!(st.steps(), 0);
}

// ---------------------------------------------------------------- binding

#[test]
fn bind_maps_model_features_to_schema_columns_by_name() {
    let schema = [
        "mid",
        "spread_ticks",
        "spread_bps",
        "microprice",
        "depth_imbalance_l1",
        "depth_imbalance_l2",
        "depth_imbalance_l3",
        "depth_imbalance_l4",
        "depth_imbalance_l5",
        "ofi_100ev",
        "ofi_1s",
        "ofi_10s",
        "last_trade_sign",
        "signed_volume_1s",
        "signed_volume_10s",
        "rv_1s",
        "rv_10s",
        "rv_60s",
        "log_return_1s",
        "log_return_10s",
        "log_return_60s",
        "vwap_dev_60s_bps",
        "event_rate_1s",
        "trade_rate_1s",
    ];
    let feature_names: Vec<String> = ["rv_60s", "log_return_60s", "ofi_10s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut parts = symmetric(2, 1.0).to_parts();
    parts.feature_names = feature_names;
    parts.scaler_mean = vec![0.0; 3];
    parts.scaler_std = vec![1.0; 3];
    parts.centres = vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    parts.regime_variances = vec![1.0; 6];
    let model = SjmModel::from_parts(parts).expect("parts");
    assert_eq!(model.bind(&schema).expect("bind"), vec![17, 20, 11]);
    let mut short = schema.to_vec();
    short.retain(|n| *n != "log_return_60s");
    match model.bind(&short) {
        Err(SjmError::UnknownFeature { name }) => assert_eq!(name, "log_return_60s"),
        other => panic!("{other:?}"),
    }
    let mut twice = schema.to_vec();
    twice.push("ofi_10s");
    match model.bind(&twice) {
        Err(e @ SjmError::AmbiguousFeature { .. }) => {
            assert!(e.to_string().contains("ofi_10s"));
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------- model directory

fn saved() -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    fitted().save(dir.path()).expect("save");
    let text = fs::read_to_string(dir.path().join(MODEL_FILE)).expect("read");
    (dir, serde_json::from_str(&text).expect("json"))
}

fn write(dir: &Path, v: &Value) {
    fs::write(
        dir.join(MODEL_FILE),
        serde_json::to_string(v).expect("json"),
    )
    .expect("write");
}

#[test]
fn save_load_round_trip_is_exact() {
    let model = fitted();
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("a/b");
    model.save(&sub).expect("save");
    let loaded = SjmModel::load(&sub).expect("load");
    assert_eq!(loaded, model);
    let (rows, _) = regimes(500, 4, 99);
    assert_eq!(
        loaded.predict(&rows).expect("p"),
        model.predict(&rows).expect("p")
    );
    let text = fs::read_to_string(sub.join(MODEL_FILE)).expect("read");
    let v: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["format"], FORMAT);
    assert_eq!(v["version"], FORMAT_VERSION);
    assert_eq!(v["n_states"], 3);
    assert_eq!(v["feature_names"][3], "f3");
    assert!(!sub.join(format!("{MODEL_FILE}.tmp")).exists());
    // A model built from parts has no fit metadata and round-trips too.
    let plain = symmetric(3, 2.5);
    plain.save(dir.path()).expect("save");
    assert_eq!(SjmModel::load(dir.path()).expect("load"), plain);
}

#[test]
fn load_refuses_missing_truncated_and_corrupt_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(matches!(
        SjmModel::load(&dir.path().join("nope")),
        Err(SjmError::MissingFile { .. })
    ));
    assert!(matches!(
        SjmModel::load(dir.path()),
        Err(SjmError::MissingFile { .. })
    ));
    let (dir, v) = saved();
    let text = serde_json::to_string_pretty(&v).expect("json");
    for cut in [0, 1, text.len() / 3, text.len() / 2, text.len() - 2] {
        fs::write(dir.path().join(MODEL_FILE), &text[..cut]).expect("write");
        let err = SjmModel::load(dir.path()).unwrap_err();
        assert!(matches!(err, SjmError::Json { .. }), "cut {cut}: {err:?}");
        assert!(err.to_string().contains("truncated"));
    }
    fs::write(dir.path().join(MODEL_FILE), [0xff, 0xfe, 0x00, 0x13]).expect("write");
    assert!(matches!(
        SjmModel::load(dir.path()),
        Err(SjmError::Json { .. })
    ));
    fs::write(dir.path().join(MODEL_FILE), "[1, 2, 3]").expect("write");
    assert!(matches!(
        SjmModel::load(dir.path()),
        Err(SjmError::WrongFormat { .. })
    ));
    // A number JSON cannot hold as a double.
    let bad = text.replacen("\"jump_penalty\": 10.0", "\"jump_penalty\": 1e999", 1);
    assert_ne!(bad, text);
    fs::write(dir.path().join(MODEL_FILE), bad).expect("write");
    assert!(matches!(
        SjmModel::load(dir.path()),
        Err(SjmError::Json { .. })
    ));
}

#[test]
fn load_refuses_wrong_format_and_version() {
    let (dir, v) = saved();
    type Check = fn(&SjmError) -> bool;
    let cases: Vec<(&str, Value, Check)> = vec![
        (
            "format",
            Value::from("tickpipe.xgb"),
            |e| matches!(e, SjmError::WrongFormat { found, .. } if found == "tickpipe.xgb"),
        ),
        ("format", Value::Null, |e| {
            matches!(e, SjmError::WrongFormat { .. })
        }),
        ("version", Value::from(2), |e| {
            matches!(e, SjmError::UnsupportedVersion { found: 2, .. })
        }),
        ("version", Value::from(0), |e| {
            matches!(e, SjmError::UnsupportedVersion { found: 0, .. })
        }),
        ("version", Value::from("1"), |e| {
            matches!(e, SjmError::UnsupportedVersion { found: -1, .. })
        }),
    ];
    for (field, value, check) in cases {
        let mut w = v.clone();
        w[field] = value.clone();
        write(dir.path(), &w);
        let err = SjmModel::load(dir.path()).unwrap_err();
        assert!(check(&err), "{field} = {value}: {err:?}");
    }
    let mut w = v.clone();
    w.as_object_mut().expect("object").remove("version");
    write(dir.path(), &w);
    assert!(matches!(
        SjmModel::load(dir.path()),
        Err(SjmError::UnsupportedVersion { found: -1, .. })
    ));
}

#[test]
fn load_refuses_bad_parameters() {
    let (dir, v) = saved();
    type Edit = fn(&mut Value);
    type Check = fn(&SjmError) -> bool;
    let cases: Vec<(&str, Edit, Check)> = vec![
        (
            "null centre",
            |w| w["centres"][1][2] = Value::Null,
            |e| matches!(e, SjmError::NonFinite { field, index: 2 } if field == "centres[1]"),
        ),
        (
            "null mean",
            |w| w["scaler"]["mean"][0] = Value::Null,
            |e| matches!(e, SjmError::NonFinite { field, index: 0 } if field == "scaler.mean"),
        ),
        (
            "null std",
            |w| w["scaler"]["std"][3] = Value::Null,
            |e| matches!(e, SjmError::NonFinite { field, index: 3 } if field == "scaler.std"),
        ),
        (
            "null penalty",
            |w| w["jump_penalty"] = Value::Null,
            |e| matches!(e, SjmError::NonFinite { field, .. } if field == "jump_penalty"),
        ),
        (
            "null variance",
            |w| w["regime_variances"][0][0] = Value::Null,
            |e| matches!(e, SjmError::NonFinite { field, .. } if field == "regime_variances[0]"),
        ),
        (
            "zero std",
            |w| w["scaler"]["std"][1] = Value::from(0.0),
            |e| matches!(e, SjmError::BadStd { feature, .. } if feature == "f1"),
        ),
        (
            "negative std",
            |w| w["scaler"]["std"][2] = Value::from(-1.5),
            |e| matches!(e, SjmError::BadStd { feature, value } if feature == "f2" && *value == -1.5),
        ),
        (
            "negative variance",
            |w| w["regime_variances"][2][1] = Value::from(-0.1),
            |e| {
                matches!(
                    e,
                    SjmError::BadVariance {
                        state: 2,
                        feature: 1,
                        ..
                    }
                )
            },
        ),
        (
            "negative penalty",
            |w| w["jump_penalty"] = Value::from(-3.0),
            |e| matches!(e, SjmError::BadPenalty { .. }),
        ),
        (
            "centre rows",
            |w| {
                w["centres"].as_array_mut().expect("a").pop();
            },
            |e| {
                matches!(
                    e,
                    SjmError::Shape {
                        expected: 3,
                        found: 2,
                        ..
                    }
                )
            },
        ),
        (
            "centre width",
            |w| {
                w["centres"][0]
                    .as_array_mut()
                    .expect("a")
                    .push(Value::from(1.0));
            },
            |e| {
                matches!(
                    e,
                    SjmError::Shape {
                        expected: 4,
                        found: 5,
                        ..
                    }
                )
            },
        ),
        (
            "variance rows",
            |w| {
                w["regime_variances"].as_array_mut().expect("a").pop();
            },
            |e| matches!(e, SjmError::Shape { .. }),
        ),
        (
            "names",
            |w| {
                w["feature_names"].as_array_mut().expect("a").pop();
            },
            |e| {
                matches!(
                    e,
                    SjmError::Shape {
                        expected: 4,
                        found: 3,
                        ..
                    }
                )
            },
        ),
        (
            "duplicate names",
            |w| w["feature_names"][1] = Value::from("f0"),
            |e| matches!(e, SjmError::FeatureName { name, .. } if name == "f0"),
        ),
        (
            "scaler length",
            |w| {
                w["scaler"]["std"].as_array_mut().expect("a").pop();
            },
            |e| matches!(e, SjmError::Shape { .. }),
        ),
        (
            "frequencies length",
            |w| {
                w["fit"]["state_frequencies"]
                    .as_array_mut()
                    .expect("a")
                    .pop();
            },
            |e| matches!(e, SjmError::Shape { .. }),
        ),
        (
            "too many states",
            |w| {
                w["n_states"] = Value::from(MAX_STATES + 1);
                let row = w["centres"][0].clone();
                let var = w["regime_variances"][0].clone();
                w["centres"] = Value::Array(vec![row; MAX_STATES + 1]);
                w["regime_variances"] = Value::Array(vec![var; MAX_STATES + 1]);
            },
            |e| matches!(e, SjmError::StateCount { n: 9, .. }),
        ),
        (
            "one state",
            |w| w["n_states"] = Value::from(1),
            |e| matches!(e, SjmError::StateCount { n: 1, .. }),
        ),
        (
            "too many features",
            |w| w["n_features"] = Value::from(MAX_FEATURES + 1),
            |e| matches!(e, SjmError::FeatureCount { n: 33, .. }),
        ),
        (
            "unknown field",
            |w| w["colour"] = Value::from("blue"),
            |e| matches!(e, SjmError::Schema { .. }) && e.to_string().contains("colour"),
        ),
        (
            "missing field",
            |w| {
                w.as_object_mut().expect("o").remove("centres");
            },
            |e| matches!(e, SjmError::Schema { .. }) && e.to_string().contains("centres"),
        ),
        (
            "wrong type",
            |w| w["centres"] = Value::from("none"),
            |e| matches!(e, SjmError::Schema { .. }),
        ),
        (
            "negative count",
            |w| w["n_states"] = Value::from(-3),
            |e| matches!(e, SjmError::Schema { .. }),
        ),
    ];
    for (what, edit, check) in cases {
        let mut w = v.clone();
        edit(&mut w);
        write(dir.path(), &w);
        let err = SjmModel::load(dir.path()).unwrap_err();
        assert!(check(&err), "{what}: {err:?}");
        assert!(!err.to_string().is_empty());
    }
    // The untouched file still loads (the edits above are what made it fail).
    write(dir.path(), &v);
    SjmModel::load(dir.path()).expect("original");
}
