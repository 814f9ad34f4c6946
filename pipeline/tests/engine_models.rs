//! The engine with its models: the shipped regime, scoring and forecasting models run in the
//! inference stage and the slow lane; regimes and scores are deterministic across threading
//! modes; forecasts come back to the signals; a model that cannot be bound stops the start.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tickpipe_models::sjm::{SjmFitConfig, SjmModel};
use tickpipe_pipeline::config::ModelSettings;
use tickpipe_pipeline::msg::NO_REGIME;
use tickpipe_pipeline::sample::sample_mbo_at;
use tickpipe_pipeline::signal::{MF_INVALID_INPUT, SIGNAL_LEN, SIGNAL_META, Signal};
use tickpipe_pipeline::{
    Engine, EngineConfig, EngineReport, IdleStrategy, PipelineError, ThreadHooks, ThreadingMode,
};
use tickpipe_shm::ring::content;
use tickpipe_shm::{RingReader, StartAt, heap_ring};

/// Records 1 ms apart: one-second bars close all along the run.
const STEP_NS: u64 = 1_000_000;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/pipeline")
}

fn models(lstm: bool) -> ModelSettings {
    let d = shipped();
    let mut m = ModelSettings {
        sjm: Some(d.join("sjm")),
        xgboost: Some(d.join("score.json")),
        lstm: lstm.then(|| d.join("../lstm/lstm_h32.onnx")),
        ..ModelSettings::default()
    };
    // The generated stream is far from the ES day the regime model was fitted on: without
    // this, every change would be held as off-regime and the filter's acceptance path would
    // not run here.
    m.stability.max_regime_distance = f64::INFINITY;
    m
}

fn config(mode: ThreadingMode, lstm: bool) -> EngineConfig {
    let mut cfg = EngineConfig {
        mode,
        batch: 32,
        link_capacity: 64,
        // Histogram hand-overs are slow in debug builds; this test does not read them.
        report_interval: Duration::from_secs(1),
        models: models(lstm),
        ..EngineConfig::default()
    };
    for p in &mut cfg.stages {
        p.idle = IdleStrategy::Yielding;
    }
    cfg
}

fn start(cfg: &EngineConfig) -> Result<Engine, PipelineError> {
    let (_md, md_info) = heap_ring(1 << 20, 1024, b"DBN", content::DBN).unwrap();
    let (sig, _) = heap_ring(1 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).unwrap();
    let reader = RingReader::new(_md.region().clone(), md_info, StartAt::Oldest);
    Engine::start(
        cfg,
        reader,
        sig,
        quanta::Clock::new(),
        ThreadHooks::default(),
    )
}

fn run(cfg: &EngineConfig, n: u64) -> (Vec<Signal>, EngineReport) {
    let common::Rig {
        mut md,
        mut signals,
        mut engine,
        clock,
    } = common::start(cfg, 16 << 20, 32 << 20);
    for i in 0..n {
        md.publish(&sample_mbo_at(i, STEP_NS), clock.raw()).unwrap();
        if cfg.mode == ThreadingMode::Invoker && i % 5 == 0 {
            engine.invoke();
        }
    }
    md.finish();
    let report = engine.join().unwrap();
    let mut out = Vec::new();
    common::drain(&mut signals, &mut out);
    (out, report)
}

/// The deterministic part of a signal: everything but the forecast.
fn main_path(s: &Signal) -> (u64, u8, u32, u8, [u32; 4], u8, u8) {
    (
        s.input_seq,
        s.regime,
        s.confidence.to_bits(),
        s.stable_regime,
        s.scores.map(f32::to_bits),
        s.n_scores,
        s.model_flags,
    )
}

#[test]
fn models_run_and_modes_agree() {
    let n = 20_000;
    let (invoker, rep) = run(&config(ThreadingMode::Invoker, true), n);
    assert_eq!(invoker.len() as u64, n);
    assert_eq!(rep.main_path_loss(), 0);
    let m = rep.inference;
    assert_eq!((m.ticks, m.scored, m.no_slot), (n, n, 0), "{m:?}");
    // Regimes: the state advanced on valid input, and only there.
    let valid = invoker
        .iter()
        .filter(|s| s.model_flags & MF_INVALID_INPUT == 0)
        .count() as u64;
    assert_eq!(valid, n - m.invalid_input);
    // log_return_10s is undefined for the first 10 s of the 20 s stream.
    assert!(valid > n / 3, "{m:?}");
    assert!(m.regime_changes >= 1, "{m:?}");
    let stable = invoker
        .iter()
        .filter(|s| s.stable_regime != NO_REGIME)
        .count();
    assert!(
        stable as u64 > n / 4,
        "{stable} signals carry a stable regime"
    );
    for s in &invoker {
        assert_eq!(s.n_scores, 1);
        assert!(
            (0.0..=1.0).contains(&s.scores[0]),
            "a logistic score: {s:?}"
        );
        if s.model_flags & MF_INVALID_INPUT == 0 {
            assert!(s.regime != NO_REGIME && (0.0..=1.0).contains(&s.confidence));
        } else {
            assert_eq!(s.regime, NO_REGIME);
        }
    }
    // Forecasts: the lane made them from bars and they reached the signals, with their age.
    let f = rep.forecast.expect("the forecaster's counters");
    assert!(f.forecasts > 100 && f.refused == 0, "{f:?}");
    // In invoker mode only the forecasts of the bars closed at the end of the stream (one per
    // instrument at most) arrive after inference has finished.
    assert!(
        m.forecasts <= f.forecasts && m.forecasts + 7 >= f.forecasts,
        "{m:?} {f:?}"
    );
    let with = invoker.iter().filter(|s| s.forecast.is_finite()).count();
    assert!(with as u64 > n / 2, "{with} signals carry a forecast");
    for s in invoker.iter().filter(|s| s.forecast.is_finite()) {
        assert!(s.forecast_age_ns < 2_000_000_000, "{s:?}");
    }
    // Threaded: the main path gives the same regimes and scores.
    let (dedicated, rep) = run(&config(ThreadingMode::Dedicated, true), n);
    assert_eq!(rep.main_path_loss(), 0);
    assert_eq!(
        invoker.iter().map(main_path).collect::<Vec<_>>(),
        dedicated.iter().map(main_path).collect::<Vec<_>>()
    );
}

#[test]
fn models_that_do_not_fit_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    // A regime model over a feature the schema does not have.
    let rows: Vec<f64> = (0..200).map(|i| ((i * 37) % 101) as f64).collect();
    let cfg = SjmFitConfig {
        n_states: 2,
        jump_penalty: 1.0,
        ..SjmFitConfig::default()
    };
    let (m, _) = SjmModel::fit(&rows, 1, &["not_a_feature".to_string()], &cfg).unwrap();
    let bad = dir.path().join("sjm");
    m.save(&bad).unwrap();
    let mut c = config(ThreadingMode::Invoker, false);
    c.models.sjm = Some(bad);
    let e = start(&c).unwrap_err().to_string();
    assert!(
        e.contains("models.sjm") && e.contains("not_a_feature"),
        "{e}"
    );

    let mut c = config(ThreadingMode::Invoker, false);
    c.models.xgboost = Some(dir.path().join("missing.json"));
    let e = start(&c).unwrap_err().to_string();
    assert!(
        e.contains("models.xgboost") && e.contains("missing.json"),
        "{e}"
    );

    // The forecaster is loaded on its own thread; its failure still fails the start.
    let mut c = config(ThreadingMode::Dedicated, true);
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not an onnx model").unwrap();
    c.models.lstm = Some(junk);
    let e = start(&c).unwrap_err().to_string();
    assert!(e.contains("models.lstm") && e.contains("junk.onnx"), "{e}");
}

#[test]
fn shipped_profiles_load_their_models() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/profiles");
    // (dedicated-8.toml pins cores 3-7: it loads only on a host that has them.)
    for name in ["two-core.toml"] {
        let mut cfg = EngineConfig::load(&root.join(name)).unwrap();
        for p in ["sjm", "xgboost", "lstm"] {
            let path = match p {
                "sjm" => &cfg.models.sjm,
                "xgboost" => &cfg.models.xgboost,
                _ => &cfg.models.lstm,
            };
            let path = path
                .as_ref()
                .unwrap_or_else(|| panic!("{name}: models.{p}"));
            assert!(path.exists(), "{name}: {}", path.display());
        }
        // Cores and modes are the host's business; the models must start anywhere.
        cfg.mode = ThreadingMode::Invoker;
        for p in &mut cfg.stages {
            p.core = None;
        }
        let engine = start(&cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        drop(engine);
    }
}
