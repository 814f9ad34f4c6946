//! Shadow mode: a candidate model beside the live one, on the same vectors, measured and never
//! in the way. In invoker mode every step is deterministic, so counts are exact.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tickpipe_models::sjm::SjmModel;
use tickpipe_models::xgb::XgbModel;
use tickpipe_pipeline::config::ModelSettings;
use tickpipe_pipeline::sample::sample_mbo_at;
use tickpipe_pipeline::shadow::{CandidateKind, ShadowControl, ShadowSettings, ShadowSummary};
use tickpipe_pipeline::signal::SIGNAL_LEN;
use tickpipe_pipeline::{EngineConfig, EngineReport, ThreadingMode};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures")
}

fn config(mode: ThreadingMode, shadow: bool, capacity: usize, overflow: usize) -> EngineConfig {
    let shipped = fixtures().join("pipeline");
    let mut cfg = EngineConfig {
        mode,
        batch: 64,
        link_capacity: 256,
        report_interval: Duration::from_secs(1),
        models: ModelSettings {
            sjm: Some(shipped.join("sjm")),
            xgboost: Some(shipped.join("score.json")),
            ..ModelSettings::default()
        },
        shadow: ShadowSettings {
            enabled: shadow,
            capacity,
            overflow,
            ..ShadowSettings::default()
        },
        ..EngineConfig::default()
    };
    for p in &mut cfg.stages {
        p.idle = tickpipe_pipeline::IdleStrategy::Yielding;
    }
    cfg
}

/// Exchange time between sample records: the regime model's inputs need seconds of history.
const STEP_NS: u64 = 1_000_000;

/// Runs `n` sample events through an engine; `candidate` sets the shadow's candidate before the
/// first event. Returns the raw signal records and the report.
fn run(
    cfg: &EngineConfig,
    n: u64,
    candidate: impl FnOnce(&mut ShadowControl),
) -> (Vec<[u8; SIGNAL_LEN]>, EngineReport, Option<ShadowControl>) {
    run_invoking(cfg, n, 7, candidate)
}

/// [`run`], invoking the engine every `every` publishes in invoker mode (0: only at the end,
/// so that every duty cycle takes a full batch).
fn run_invoking(
    cfg: &EngineConfig,
    n: u64,
    every: u64,
    candidate: impl FnOnce(&mut ShadowControl),
) -> (Vec<[u8; SIGNAL_LEN]>, EngineReport, Option<ShadowControl>) {
    let common::Rig {
        mut md,
        signals: mut sig_reader,
        mut engine,
        clock,
    } = common::start(cfg, 64 << 20, 64 << 20);
    let mut control = engine.shadow_control();
    assert_eq!(control.is_some(), cfg.shadow.enabled);
    assert!(engine.shadow_control().is_none(), "one handle per engine");
    if let Some(c) = &mut control {
        candidate(c);
    }
    let mut out = Vec::new();
    for i in 0..n {
        md.publish(&sample_mbo_at(i, STEP_NS), clock.raw()).unwrap();
        if cfg.mode == ThreadingMode::Invoker && every > 0 && i % every == 0 {
            engine.invoke();
        }
        if i % 4096 == 0 {
            common::drain_raw(&mut sig_reader, &mut out);
        }
    }
    md.finish();
    let report = engine.join().unwrap();
    common::drain_raw(&mut sig_reader, &mut out);
    assert_eq!(out.len() as u64, n, "one signal per event");
    assert_eq!(report.main_path_loss(), 0);
    (out, report, control)
}

fn scoring(name: &str) -> XgbModel {
    XgbModel::load(&fixtures().join(name)).unwrap()
}

fn regime() -> SjmModel {
    SjmModel::load(&fixtures().join("pipeline/sjm")).unwrap()
}

fn shadow_link(r: &EngineReport) -> tickpipe_pipeline::link::LinkCounts {
    r.links
        .iter()
        .find(|l| l.name == "inference->shadow")
        .expect("the shadow link")
        .clone()
}

fn summary(r: &EngineReport) -> ShadowSummary {
    r.shadow.expect("the shadow stage's last summary")
}

#[test]
fn an_identical_scoring_candidate_agrees_exactly_and_another_does_not() {
    let n = 20_000;
    let cfg = config(ThreadingMode::Invoker, true, 1 << 16, 4096);
    let (_, report, _) = run(&cfg, n, |c| {
        c.start_scoring(scoring("pipeline/score.json"), "score", 2)
            .unwrap()
    });
    let s = summary(&report);
    assert_eq!(s.kind, Some(CandidateKind::Scoring));
    assert_eq!(s.version, 2);
    // Every vector went to the shadow, none was lost, each was compared.
    assert_eq!((s.seen, s.compared, s.no_live), (n, n, 0), "{s:?}");
    assert_eq!(shadow_link(&report).dropped, 0);
    assert_eq!(
        (s.diff_max, s.diff_p99, s.diff_mean),
        (0.0, 0.0, 0.0),
        "the same model gives the same scores, bit for bit"
    );
    assert!(s.latency_ns[0] > 0 && s.latency_ns[3] >= s.latency_ns[1]);

    let (_, report, _) = run(&cfg, n, |c| {
        c.start_scoring(scoring("xgb/binary_logistic.json"), "score", 3)
            .unwrap()
    });
    let s = summary(&report);
    assert_eq!((s.seen, s.compared), (n, n));
    assert!(
        s.diff_max > 0.0 && s.diff_p99 > 0.0 && s.diff_p50 <= s.diff_p99,
        "another model scores differently: {s:?}"
    );
    assert!(s.diff_p99 <= s.diff_max && s.diff_mean.abs() <= s.diff_max);
}

#[test]
fn regime_candidates_are_compared_label_by_label() {
    let n = 40_000;
    let cfg = config(ThreadingMode::Invoker, true, 1 << 16, 4096);
    // Set before the first vector, the same model walks the same recursion: full agreement.
    let (_, report, _) = run(&cfg, n, |c| c.start_regime(regime(), "regime", 2).unwrap());
    let s = summary(&report);
    assert_eq!(s.kind, Some(CandidateKind::Regime));
    assert_eq!(
        (s.seen, s.compared, s.agreed, s.stable_agreed),
        (n, n, n, n)
    );
    assert_eq!(s.agreement(), 1.0);
    let labelled = report.inference.ticks - report.inference.invalid_input;
    assert!(
        labelled > n / 2,
        "the live model labelled most vectors: {labelled} of {n}"
    );

    // The same fit with states 0 and 1 swapped: it refuses the same vectors (both sides say "no
    // label" there, which agrees) and names every state-0 or state-1 vector differently.
    let mut parts = regime().to_parts();
    let f = parts.scaler_mean.len();
    for v in [&mut parts.centres, &mut parts.regime_variances] {
        let (a, b) = v.split_at_mut(f);
        a.swap_with_slice(&mut b[..f]);
    }
    let swapped = SjmModel::from_parts(parts).unwrap();
    let (_, report, _) = run(&cfg, n, |c| c.start_regime(swapped, "regime", 3).unwrap());
    let s = summary(&report);
    assert_eq!((s.seen, s.compared), (n, n));
    let unlabelled = report.inference.invalid_input;
    assert!(
        s.agreed < n && s.agreed >= unlabelled,
        "swapped states disagree wherever the live model said 0 or 1: {s:?}, {unlabelled} unlabelled"
    );
}

#[test]
fn the_shadow_never_changes_the_live_signals() {
    let n = 30_000;
    for mode in [ThreadingMode::Invoker, ThreadingMode::Shared] {
        let (without, ..) = run(&config(mode, false, 1 << 16, 4096), n, |_| {});
        let (with, report, _) = run(&config(mode, true, 1 << 16, 4096), n, |c| {
            c.start_scoring(scoring("xgb/binary_logistic.json"), "score", 2)
                .unwrap()
        });
        // Signals carry no wall-clock stamp of their own, so the bytes must match.
        assert!(
            without == with,
            "{mode:?}: signals differ with a shadow running"
        );
        let s = summary(&report);
        let link = shadow_link(&report);
        assert_eq!(
            s.seen, link.pushed,
            "{mode:?}: the stage took all that reached it"
        );
        assert_eq!(
            link.pushed + link.dropped,
            n,
            "{mode:?}: every vector reached the shadow or was counted lost"
        );
    }
}

#[test]
fn a_candidate_that_falls_behind_loses_vectors_counted() {
    let n = 20_000;
    // Room for 8 + 16 while batches of 64 arrive: most of each batch is dropped, counted.
    let cfg = config(ThreadingMode::Invoker, true, 8, 16);
    let (_, report, _) = run_invoking(&cfg, n, 0, |c| {
        c.start_scoring(scoring("pipeline/score.json"), "score", 2)
            .unwrap()
    });
    let s = summary(&report);
    let link = shadow_link(&report);
    assert!(link.dropped > 0, "{link:?}");
    assert_eq!(s.seen, link.pushed);
    assert_eq!(link.pushed + link.dropped, n);
    assert_eq!(s.diff_max, 0.0, "what was compared still agrees");
}

#[test]
fn without_a_candidate_nothing_goes_to_the_shadow_and_stop_ends_a_run() {
    let n = 10_000;
    let cfg = config(ThreadingMode::Invoker, true, 1 << 16, 4096);
    let (_, report, control) = run(&cfg, n, |_| {});
    let link = shadow_link(&report);
    assert_eq!((link.pushed, link.dropped), (0, 0), "{link:?}");
    assert_eq!(summary(&report).kind, None);
    let mut control = control.unwrap();
    assert!(control.report().is_none());
    assert!(control.stop().unwrap().is_none(), "nothing to stop");
    // A run the stage never saw: stop still hands back its (empty) report.
    control
        .start_scoring(scoring("pipeline/score.json"), "score", 2)
        .unwrap();
    let r = control.stop().unwrap().expect("the run's report");
    assert_eq!((r.name.as_str(), r.version.as_str()), ("score", "v2"));
    assert!(control.report().is_none());
}
