//! Hot swap: a replay of 1 M events with 100 scoring-model swaps back and forth (and regime-model
//! swaps among them) while the engine runs. Every input event yields exactly one signal, in
//! order, without gaps or duplicates; each signal names the model versions that made it, and its
//! score is that version's own prediction on the event's feature vector, bit for bit.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tickpipe_models::sjm::SjmModel;
use tickpipe_models::xgb::XgbModel;
use tickpipe_pipeline::config::{FeatureSettings, ModelSettings};
use tickpipe_pipeline::feature_engine::FeatureEngine;
use tickpipe_pipeline::inference::schema_names;
use tickpipe_pipeline::msg::{Event, Tick};
use tickpipe_pipeline::sample::sample_mbo;
use tickpipe_pipeline::signal::{SIGNAL_LEN, SIGNAL_META, Signal};
use tickpipe_pipeline::swap::SwapError;
use tickpipe_pipeline::{Engine, EngineConfig, IdleStrategy, ThreadHooks, ThreadingMode};
use tickpipe_shm::ring::{HeapRegion, content};
use tickpipe_shm::{RingReader, StartAt, heap_ring};

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures")
}

/// The two scoring models swapped back and forth: even versions run `a`, odd ones `b`.
fn scoring_models() -> (XgbModel, XgbModel) {
    (
        XgbModel::load(&models().join("pipeline/score.json")).unwrap(),
        XgbModel::load(&models().join("xgb/binary_logistic.json")).unwrap(),
    )
}

/// The feature vector of every event of the sample stream (each record completes a state).
fn vectors(n: u64) -> Vec<Tick> {
    let mut e = FeatureEngine::new(&FeatureSettings::default().engine_config()).unwrap();
    let mut t = Tick::default();
    (0..n)
        .map(|i| {
            let ev = Event::decode(&sample_mbo(i), i, 0).unwrap();
            assert!(e.on_event(&ev, &mut t, &mut |_, _| {}));
            t
        })
        .collect()
}

fn run(mode: ThreadingMode, n: u64, swaps: u64) -> Vec<Signal> {
    let shipped = models().join("pipeline");
    let mut cfg = EngineConfig {
        mode,
        batch: 64,
        link_capacity: 256,
        // Histogram hand-overs are slow in debug builds; this test does not read them.
        report_interval: Duration::from_secs(1),
        models: ModelSettings {
            sjm: Some(shipped.join("sjm")),
            xgboost: Some(shipped.join("score.json")),
            ..ModelSettings::default()
        },
        ..EngineConfig::default()
    };
    for p in &mut cfg.stages {
        p.idle = IdleStrategy::Yielding;
    }
    let common::Rig {
        mut md,
        signals: mut sig_reader,
        mut engine,
        clock,
    } = common::start(&cfg, 128 << 20, 256 << 20);
    let mut control = engine.model_control().expect("the control handle");
    assert!(engine.model_control().is_none(), "one handle per engine");
    let (a, b) = scoring_models();
    let regime = SjmModel::load(&shipped.join("sjm")).unwrap();
    let every = n / (swaps + 1);
    let mut signals = Vec::with_capacity(n as usize);
    let mut sent = 0u64;
    for i in 0..n {
        md.publish(&sample_mbo(i), clock.raw()).unwrap();
        if i > 0 && i % every == 0 && sent < swaps {
            sent += 1;
            let version = sent as u32 + 1;
            let model = if version.is_multiple_of(2) {
                a.clone()
            } else {
                b.clone()
            };
            let mut update = control.swap_scoring(model, version);
            // A full command ring hands the update back: let the stage catch up.
            while let Err(SwapError::Busy(_)) = update {
                if mode == ThreadingMode::Invoker {
                    engine.invoke();
                } else {
                    std::thread::yield_now();
                }
                let model = if version.is_multiple_of(2) {
                    a.clone()
                } else {
                    b.clone()
                };
                update = control.swap_scoring(model, version);
            }
            update.unwrap();
            if sent.is_multiple_of(10) {
                control
                    .swap_regime(regime.clone(), sent as u32 / 10 + 1)
                    .unwrap();
            }
        }
        if mode == ThreadingMode::Invoker && i % 5 == 0 {
            engine.invoke();
        }
        if i % 4096 == 0 {
            common::drain(&mut sig_reader, &mut signals);
        }
    }
    md.finish();
    let report = engine.join().unwrap();
    common::drain(&mut sig_reader, &mut signals);
    assert_eq!(report.main_path_loss(), 0);
    assert_eq!(
        control.applied(),
        swaps + swaps / 10,
        "every update was applied"
    );
    assert_eq!(control.pending(), 0);
    assert!(
        control.collect() > 0,
        "replaced models come back to be dropped"
    );
    signals
}

/// Checks order, attribution and versions; `every_version`: each version scored events (true
/// in invoker mode, where the stage applies one update per cycle between publishes).
fn check(signals: &[Signal], vectors: &[Tick], swaps: u64, every_version: bool) {
    let (a, b) = scoring_models();
    let names = schema_names();
    let (ca, cb) = (a.bind(&names).unwrap(), b.bind(&names).unwrap());
    assert_eq!(signals.len(), vectors.len(), "one signal per event");
    let mut last = (1, 1);
    let mut seen = std::collections::BTreeSet::new();
    for (i, s) in signals.iter().enumerate() {
        assert_eq!(s.input_seq, i as u64, "no gap, no duplicate");
        let v = (s.scoring_version, s.regime_version);
        assert!(
            v.0 >= last.0 && v.1 >= last.1,
            "versions only move forward: {v:?} after {last:?}"
        );
        last = v;
        seen.insert(v.0);
        // Version 1 is the configured model (`a`); swaps bring a at even versions, b at odd.
        let (m, cols) = if v.0 == 1 || v.0.is_multiple_of(2) {
            (&a, &ca)
        } else {
            (&b, &cb)
        };
        let mut want = [0f32; 1];
        m.predict_row(&vectors[i].values, cols, &mut want);
        assert_eq!(
            s.scores[0].to_bits(),
            want[0].to_bits(),
            "signal {i} was scored by version {}",
            v.0
        );
    }
    if every_version {
        assert_eq!(seen.len() as u64, swaps + 1, "every version scored events");
    }
    assert_eq!(last, (swaps as u32 + 1, swaps as u32 / 10 + 1));
}

#[test]
fn swaps_during_a_million_event_replay_lose_nothing() {
    let n = 1_000_000;
    let swaps = 100;
    let vectors = vectors(n);
    // Threaded, the real case: 1 M events, 100 scoring swaps and 10 regime swaps while it runs.
    let signals = run(ThreadingMode::Dedicated, n, swaps);
    check(&signals, &vectors, swaps, false);
    // Invoker mode, deterministic: every version is seen scoring.
    let n = 100_000;
    let signals = run(ThreadingMode::Invoker, n, swaps);
    check(&signals, &vectors[..n as usize], swaps, true);
}

#[test]
fn models_that_do_not_fit_are_refused_and_the_old_one_serves() {
    let shipped = models().join("pipeline");
    let cfg = EngineConfig {
        mode: ThreadingMode::Invoker,
        models: ModelSettings {
            sjm: Some(shipped.join("sjm")),
            xgboost: Some(shipped.join("score.json")),
            ..ModelSettings::default()
        },
        ..EngineConfig::default()
    };
    let (mut md, md_info) = heap_ring(1 << 20, 1024, b"DBN", content::DBN).unwrap();
    let (sig, sig_info) = heap_ring(1 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).unwrap();
    let mut sig_reader: RingReader<Arc<HeapRegion>> =
        RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
    let clock = quanta::Clock::new();
    let mut engine =
        Engine::start(&cfg, reader, sig, clock.clone(), ThreadHooks::default()).unwrap();
    let mut control = engine.model_control().unwrap();
    // A regime model over a feature the schema does not have.
    let rows: Vec<f64> = (0..200).map(|i| ((i * 37) % 101) as f64).collect();
    let fit = tickpipe_models::sjm::SjmFitConfig {
        n_states: 2,
        jump_penalty: 1.0,
        ..Default::default()
    };
    let (bad, _) = SjmModel::fit(&rows, 1, &["not_a_feature".to_string()], &fit).unwrap();
    let e = control.swap_regime(bad, 9).unwrap_err().to_string();
    assert!(e.contains("not_a_feature"), "{e}");
    // A scoring model with more outputs than a signal carries.
    let wide = XgbModel::load(&models().join("xgb/multi_softprob.json")).unwrap();
    if wide.n_outputs() > tickpipe_pipeline::msg::MAX_SCORES {
        let e = control.swap_scoring(wide, 9).unwrap_err().to_string();
        assert!(e.contains("outputs per row"), "{e}");
    }
    assert_eq!(control.pending(), 0, "nothing refused was queued");
    for i in 0..1000 {
        md.publish(&sample_mbo(i), clock.raw()).unwrap();
        engine.invoke();
    }
    md.finish();
    engine.join().unwrap();
    let mut buf = [0u8; SIGNAL_LEN];
    let mut n = 0;
    while sig_reader.try_read(&mut buf).is_ok() {
        let s = Signal::decode(&buf).unwrap();
        assert_eq!(
            (s.scoring_version, s.regime_version),
            (1, 1),
            "the old models serve"
        );
        n += 1;
    }
    assert_eq!(n, 1000);
    assert_eq!(control.applied(), 0);
}

#[test]
fn registry_versions_swap_in_and_name_themselves() {
    use tickpipe_models::registry::{Expected, Registry};
    use tickpipe_pipeline::features::{SCHEMA_NAME, SCHEMA_VERSION};
    let registry = Registry::open(&models().parent().unwrap().join("registry")).unwrap();
    let names = schema_names();
    let expected = Expected {
        schema_name: SCHEMA_NAME,
        schema_version: SCHEMA_VERSION,
        schema: &names,
    };
    let cfg = EngineConfig {
        mode: ThreadingMode::Invoker,
        models: ModelSettings {
            xgboost: Some(models().join("pipeline/score.json")),
            ..ModelSettings::default()
        },
        ..EngineConfig::default()
    };
    let (mut md, md_info) = heap_ring(1 << 20, 1024, b"DBN", content::DBN).unwrap();
    let (sig, sig_info) = heap_ring(1 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).unwrap();
    let mut sig_reader: RingReader<Arc<HeapRegion>> =
        RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
    let clock = quanta::Clock::new();
    let mut engine =
        Engine::start(&cfg, reader, sig, clock.clone(), ThreadHooks::default()).unwrap();
    let mut control = engine.model_control().unwrap();
    let mut publish = |engine: &mut Engine, from: u64| {
        for i in from..from + 100 {
            md.publish(&sample_mbo(i), clock.raw()).unwrap();
            engine.invoke();
        }
    };
    publish(&mut engine, 0);
    control
        .swap_validated(registry.validate("score", "v2", &expected).unwrap())
        .unwrap();
    publish(&mut engine, 100);
    control
        .swap_validated(registry.validate("regime", "v1", &expected).unwrap())
        .unwrap();
    publish(&mut engine, 200);
    // The forecaster is not hot-swapped: refused, and nothing is queued.
    let bars = tickpipe_pipeline::forecast::BAR_SCHEMA;
    let lstm = registry.validate(
        "forecast",
        "v1",
        &Expected {
            schema_name: "tickpipe.bars",
            schema_version: 1,
            schema: &bars,
        },
    );
    let e = control
        .swap_validated(lstm.unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("slow lane"), "{e}");
    md.finish();
    engine.join().unwrap();
    let mut buf = [0u8; SIGNAL_LEN];
    let mut versions = Vec::new();
    while sig_reader.try_read(&mut buf).is_ok() {
        let s = Signal::decode(&buf).unwrap();
        versions.push((s.scoring_version, s.regime_version));
    }
    assert_eq!(versions.len(), 300);
    assert!(versions[..100].iter().all(|v| *v == (1, 0)));
    assert!(
        versions[101..200].iter().all(|v| *v == (2, 0)),
        "{:?}",
        &versions[100..110]
    );
    assert!(versions[201..].iter().all(|v| *v == (2, 1)));
    assert_eq!(control.applied(), 2);
}
