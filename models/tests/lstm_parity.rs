//! Parity of the streamed LSTM with onnxruntime 1.31.1 (Python) on the committed goldens
//! (`models/scripts/lstm_golden.py`), and the model's view of its own signature.
//!
//! Tolerance: absolute, |tickpipe - onnxruntime| <= 1e-5 on every output at every step.

use std::path::PathBuf;

use tickpipe_models::lstm::{LstmModel, LstmState};

const TOL_ABS: f32 = 1e-5;
const BAR_SCHEMA: [&str; 4] = [
    "bar_log_return",
    "bar_log_range",
    "bar_log_volume",
    "bar_log_trades",
];

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lstm")
        .join(name)
}

struct GoldenStep {
    instrument: usize,
    step: usize,
    x: [f32; 4],
    y: f32,
}

fn parse_f32s(fields: &[&str]) -> Vec<f32> {
    fields
        .iter()
        .map(|s| s.parse::<f32>().expect("golden value"))
        .collect()
}

fn golden_steps() -> Vec<GoldenStep> {
    let text = std::fs::read_to_string(fixture("lstm_h32_golden.csv")).expect("golden csv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 7, "golden line {l}");
            let v = parse_f32s(&f[2..]);
            GoldenStep {
                instrument: f[0].parse().unwrap(),
                step: f[1].parse().unwrap(),
                x: [v[0], v[1], v[2], v[3]],
                y: v[4],
            }
        })
        .collect()
}

/// (instrument, "h" | "c") -> values after the last step.
fn golden_final_states() -> Vec<(usize, String, Vec<f32>)> {
    let text = std::fs::read_to_string(fixture("lstm_h32_final_state.csv")).expect("state csv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[1].to_string(), parse_f32s(&f[2..]))
        })
        .collect()
}

fn load() -> LstmModel {
    LstmModel::load(&fixture("lstm_h32.onnx")).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn fixture_signature_and_features() {
    let model = load();
    assert_eq!(model.n_features(), 4);
    assert_eq!(model.hidden(), 32);
    assert_eq!(model.n_outputs(), 1);
    assert_eq!(model.feature_names(), BAR_SCHEMA);
    let state = model.new_state();
    assert_eq!(state.hidden(), 32);
    assert!(state.h().iter().chain(state.c()).all(|&v| v == 0.0));
}

/// Two instruments interleaved on one model, each with its own state, against the goldens
/// (which ran each instrument alone in Python): per-instrument state is really separate.
#[test]
fn streamed_outputs_match_onnxruntime_python() {
    let mut model = load();
    let steps = golden_steps();
    let n_instruments = steps.iter().map(|s| s.instrument).max().unwrap() + 1;
    assert_eq!(n_instruments, 2);
    let per: Vec<Vec<&GoldenStep>> = (0..n_instruments)
        .map(|i| steps.iter().filter(|s| s.instrument == i).collect())
        .collect();
    assert!(
        per.iter().all(|p| p.len() >= 200),
        "at least 200 steps per instrument"
    );
    let mut states: Vec<LstmState> = (0..n_instruments).map(|_| model.new_state()).collect();
    let mut out = [0.0_f32; 1];
    let mut max_diff = 0.0_f32;
    for t in 0..per[0].len() {
        for (inst, seq) in per.iter().enumerate() {
            let g = seq[t];
            assert_eq!(g.step, t);
            model.step(&mut states[inst], &g.x, &mut out).unwrap();
            let diff = (out[0] - g.y).abs();
            max_diff = max_diff.max(diff);
            assert!(
                diff <= TOL_ABS,
                "instrument {inst} step {t}: tickpipe {} vs onnxruntime {} (|diff| {diff:e})",
                out[0],
                g.y
            );
        }
    }
    for (inst, which, values) in golden_final_states() {
        let got = if which == "h" {
            states[inst].h()
        } else {
            states[inst].c()
        };
        assert_eq!(got.len(), values.len());
        for (k, (a, b)) in got.iter().zip(&values).enumerate() {
            assert!(
                (a - b).abs() <= TOL_ABS,
                "final {which}[{k}] of instrument {inst}: {a} vs {b}"
            );
        }
    }
    for s in &states {
        assert_eq!(s.steps(), per[0].len() as u64);
    }
    println!(
        "max |tickpipe - onnxruntime| over {} steps: {max_diff:e}",
        steps.len()
    );
}

/// Rows from a wider pipeline schema, in another column order, bound by name, give the same
/// forecasts as features passed in model order.
#[test]
fn bound_rows_match_model_order_steps() {
    let mut model = load();
    let schema = [
        "mid",
        "bar_log_volume",
        "spread_ticks",
        "bar_log_trades",
        "bar_log_return",
        "rv_1s",
        "bar_log_range",
    ];
    let binding = model.bind(&schema).unwrap();
    assert_eq!(binding, vec![4, 6, 1, 3]);
    let mut by_row = model.new_state();
    let mut by_x = model.new_state();
    let (mut y_row, mut y_x) = ([0.0_f32], [0.0_f32]);
    for g in golden_steps().iter().filter(|g| g.instrument == 0).take(50) {
        let mut row = [f32::NAN; 7];
        for (i, &col) in binding.iter().enumerate() {
            row[col] = g.x[i];
        }
        // Unbound columns are NaN: only the bound ones may be read.
        model
            .step_row(&mut by_row, &row, &binding, &mut y_row)
            .unwrap();
        model.step(&mut by_x, &g.x, &mut y_x).unwrap();
        assert_eq!(y_row, y_x);
        assert!((y_x[0] - g.y).abs() <= TOL_ABS);
    }
    assert_eq!(by_row, by_x);
}

/// After `reset` a state replays exactly like a fresh one.
#[test]
fn reset_state_replays_from_zero() {
    let mut model = load();
    let steps: Vec<GoldenStep> = golden_steps()
        .into_iter()
        .filter(|g| g.instrument == 1)
        .collect();
    let mut state = model.new_state();
    let mut out = [0.0_f32];
    for g in &steps[..30] {
        model.step(&mut state, &g.x, &mut out).unwrap();
    }
    state.reset();
    assert_eq!(state, model.new_state());
    for g in &steps[..30] {
        model.step(&mut state, &g.x, &mut out).unwrap();
        assert!((out[0] - g.y).abs() <= TOL_ABS);
    }
}

/// The model is `Send`: built on the thread that owns it and stepped there, it gives the
/// goldens too.
#[test]
fn model_is_send_and_works_on_its_owning_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<LstmModel>();
    assert_send::<LstmState>();
    let steps: Vec<GoldenStep> = golden_steps()
        .into_iter()
        .filter(|g| g.instrument == 0)
        .collect();
    let handle = std::thread::spawn(move || {
        let mut model = load();
        let mut state = model.new_state();
        let mut out = [0.0_f32];
        let mut worst = 0.0_f32;
        for g in &steps {
            model.step(&mut state, &g.x, &mut out).unwrap();
            worst = worst.max((out[0] - g.y).abs());
        }
        worst
    });
    let worst = handle.join().unwrap();
    assert!(worst <= TOL_ABS, "{worst}");
}
