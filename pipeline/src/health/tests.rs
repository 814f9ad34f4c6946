use super::*;
use crate::features::{MID, SPREAD_TICKS};

const MS: u64 = 1_000_000;

/// Drives a monitor the way the engine does: vectors through a tally, totals sampled each tick.
struct Sim {
    mon: HealthMonitor,
    tally: FeatureTally,
    counters: HealthCounters,
    now_ns: u64,
    inputs: HealthInputs,
}

impl Sim {
    fn new(cfg: HealthConfig) -> Self {
        cfg.validate().unwrap();
        Self {
            mon: HealthMonitor::new(cfg),
            tally: FeatureTally::default(),
            counters: HealthCounters::default(),
            now_ns: 0,
            inputs: HealthInputs {
                data_age: Some(Duration::from_millis(1)),
                ..HealthInputs::default()
            },
        }
    }

    /// `n` vectors made by `f(k)`, then one 100 ms tick.
    fn tick_with(&mut self, n: usize, f: impl Fn(usize) -> [f64; N_FEATURES]) -> Vec<AlertEvent> {
        for k in 0..n {
            self.tally.count(&f(k), 0);
        }
        self.tally.publish(&self.counters);
        self.now_ns += 100 * MS;
        self.inputs.now_ns = self.now_ns;
        self.inputs.unix_ns = 1_700_000_000_000_000_000 + self.now_ns;
        self.inputs.features = self.counters.feature_totals();
        self.mon.tick(&self.inputs)
    }

    fn snap(&self) -> &HealthSnapshot {
        self.mon.snapshot()
    }
}

fn healthy(k: usize) -> [f64; N_FEATURES] {
    std::array::from_fn(|i| 1.0 + (i + k) as f64)
}

#[test]
fn healthy_data_is_ok() {
    let mut sim = Sim::new(HealthConfig::default());
    for _ in 0..150 {
        assert!(sim.tick_with(1000, healthy).is_empty());
    }
    let s = sim.snap();
    assert_eq!(s.status, Status::Ok);
    assert_eq!(s.alert, AlertLevel::None);
    assert!(!s.kill);
    assert!(
        s.features
            .iter()
            .all(|f| f.score == 100 && f.status == FeatureStatus::Healthy)
    );
    assert_eq!(
        s.features[0].samples, 100_000,
        "a 10 s window holds 100 ticks"
    );
    assert_eq!(s.freshness, Freshness::Fresh);
}

#[test]
fn stuck_feature_warns_then_goes_critical_then_recovers() {
    let mut sim = Sim::new(HealthConfig::default());
    for _ in 0..100 {
        sim.tick_with(1000, healthy);
    }
    let stuck = |k: usize| {
        let mut v = healthy(k);
        v[MID] = 0.0;
        v
    };
    let mut levels = Vec::new();
    for _ in 0..100 {
        sim.tick_with(1000, stuck);
        levels.push((
            sim.snap().features[MID].status,
            sim.snap().alert,
            sim.snap().kill,
        ));
    }
    // First tick: a long run of zeros (-30): WARNING, no kill yet.
    assert_eq!(
        levels[0],
        (FeatureStatus::Warning, AlertLevel::Warning, false)
    );
    assert_eq!(
        levels[29],
        (FeatureStatus::Warning, AlertLevel::Warning, false)
    );
    // The zero rate passes 30 % on the 31st tick (-25 -30 = 45): CRITICAL status, a warning.
    assert_eq!(
        levels[30],
        (FeatureStatus::Critical, AlertLevel::Warning, false)
    );
    // Past 50 % (the 51st tick): critical alert, kill switch engaged.
    let first_kill = levels.iter().position(|l| l.2).unwrap();
    assert_eq!(first_kill, 50, "{levels:?}");
    assert_eq!(levels[first_kill].1, AlertLevel::Critical);
    let s = sim.snap();
    assert_eq!(s.kill_reasons, kill_reason::ZERO_STORM);
    assert_eq!(s.status, Status::Critical);
    assert_eq!(s.features_status, Status::Critical);
    // Release refused while the condition holds.
    assert!(
        sim.mon
            .release()
            .unwrap_err()
            .0
            .contains("feature.mid.zero_rate")
    );
    // Data recovers: the score comes back as the zeros leave the window.
    let mut recovered_after = None;
    for t in 0..120 {
        sim.tick_with(1000, healthy);
        if recovered_after.is_none() && sim.snap().features[MID].score == 100 {
            recovered_after = Some(t);
        }
    }
    assert_eq!(
        recovered_after,
        Some(99),
        "zeros leave a 10 s window after 100 ticks"
    );
    // The kill switch latched; status stays CRITICAL until a release, which now succeeds.
    assert!(sim.snap().kill);
    assert_eq!(sim.snap().status, Status::Critical);
    sim.mon.release().unwrap();
    assert_eq!(
        sim.snap().status,
        Status::Ok,
        "status follows the release at once"
    );
    sim.tick_with(1000, healthy);
    assert!(!sim.snap().kill);
    assert_eq!(sim.snap().status, Status::Ok);
    assert_eq!(sim.snap().kills_total, 1);
}

#[test]
fn nan_storm_is_critical_but_an_undefined_feature_is_only_disabled() {
    let mut sim = Sim::new(HealthConfig::default());
    // spread_ticks is NaN throughout (no tick size): DISABLED, never a storm.
    let base = |k: usize| {
        let mut v = healthy(k);
        v[SPREAD_TICKS] = f64::NAN;
        v
    };
    for _ in 0..30 {
        assert!(
            !sim.tick_with(1000, base)
                .iter()
                .any(|e| e.level == AlertLevel::Critical)
        );
    }
    assert_eq!(
        sim.snap().features[SPREAD_TICKS].status,
        FeatureStatus::Disabled
    );
    assert!(!sim.snap().kill);
    // A storm on every feature that had values.
    let storm = |_| [f64::NAN; N_FEATURES];
    let mut ticks = 0;
    while !sim.snap().kill {
        sim.tick_with(1000, storm);
        ticks += 1;
        assert!(ticks < 200);
    }
    let s = sim.snap();
    assert_eq!(s.kill_reasons, kill_reason::NAN_STORM);
    assert_eq!(s.alert, AlertLevel::Critical);
    assert!(s.features[MID].nan_rate > 0.5);
    // Exactly when the NaN share of the window passes 50 %.
    assert_eq!(
        ticks, 31,
        "30 healthy ticks in the window, then 31 stormy ones"
    );
}

#[test]
fn exempt_features_may_be_zero() {
    let mut sim = Sim::new(HealthConfig::default());
    let idx = SCHEMA
        .iter()
        .position(|s| s.name == "log_return_1s")
        .unwrap();
    let quiet = |k: usize| {
        let mut v = healthy(k);
        v[idx] = 0.0;
        v
    };
    for _ in 0..150 {
        sim.tick_with(1000, quiet);
    }
    assert_eq!(sim.snap().features[idx].score, 100);
    assert!((sim.snap().features[idx].zero_rate - 1.0).abs() < 1e-12);
    assert_eq!(sim.snap().status, Status::Ok);
}

#[test]
fn few_samples_do_not_trip_the_kill_switch() {
    let mut sim = Sim::new(HealthConfig::default());
    let zeros = |_| [0.0; N_FEATURES];
    for _ in 0..50 {
        sim.tick_with(1, zeros);
    }
    // 50 values in the window (< min_samples): scored, but no critical alert.
    assert!(!sim.snap().kill);
    assert_eq!(sim.snap().features[MID].status, FeatureStatus::Critical);
    assert_eq!(sim.snap().alert, AlertLevel::Warning);
    // With enough of them, the same data is critical.
    sim.tick_with(100, zeros);
    assert!(sim.snap().kill);
}

#[test]
fn writer_death_and_staleness_engage_within_a_tick() {
    let mut sim = Sim::new(HealthConfig::default());
    sim.inputs.writer = Some(WriterHealth {
        heartbeat_age: Duration::from_millis(40),
        alive: true,
        finished: false,
    });
    sim.tick_with(100, healthy);
    assert!(!sim.snap().kill);
    sim.inputs.writer.as_mut().unwrap().heartbeat_age = Duration::from_millis(260);
    let ev = sim.tick_with(100, healthy);
    assert!(sim.snap().kill);
    assert_eq!(sim.snap().kill_reasons, kill_reason::WRITER_DEAD);
    assert!(ev.iter().any(|e| e.code == "kill_switch.engaged"));
    assert_eq!(sim.snap().market_data, Status::Critical);

    // A finished writer is not dead, and its old data is not stale.
    let mut sim = Sim::new(HealthConfig::default());
    sim.inputs.writer = Some(WriterHealth {
        heartbeat_age: Duration::from_secs(60),
        alive: false,
        finished: true,
    });
    sim.inputs.data_age = Some(Duration::from_secs(60));
    sim.tick_with(100, healthy);
    assert!(!sim.snap().kill);

    // Freshness by age.
    let mut sim = Sim::new(HealthConfig::default());
    for (age_ms, fresh, kill) in [
        (100, Freshness::Fresh, false),
        (900, Freshness::Recent, false),
        (3000, Freshness::Old, false),
        (6000, Freshness::Stale, true),
    ] {
        sim.inputs.data_age = Some(Duration::from_millis(age_ms));
        sim.tick_with(100, healthy);
        assert_eq!(sim.snap().freshness, fresh);
        assert_eq!(sim.snap().kill, kill);
    }
    assert_eq!(sim.snap().kill_reasons, kill_reason::FEED_STALE);
}

#[test]
fn budgets_and_losses_degrade_the_pipeline() {
    let mut cfg = HealthConfig::default();
    cfg.stage_budgets[1] = Some(Duration::from_micros(2));
    let mut sim = Sim::new(cfg);
    sim.inputs.stage_p99_ns[1] = Some(1_500);
    sim.tick_with(100, healthy);
    assert_eq!(sim.snap().pipeline, Status::Ok);
    sim.inputs.stage_p99_ns[1] = Some(2_500);
    sim.tick_with(100, healthy);
    assert_eq!(sim.snap().pipeline, Status::Degraded);
    assert_eq!(sim.snap().stages[1].p99_ns, 2_500);
    // The bad interval stays the window's worst until it leaves the window (10 s).
    sim.inputs.stage_p99_ns[1] = Some(1_000);
    for _ in 0..100 {
        sim.tick_with(100, healthy);
        assert_eq!(sim.snap().stages[1].p99_ns, 2_500);
        assert_eq!(sim.snap().pipeline, Status::Degraded);
    }
    sim.tick_with(100, healthy);
    assert_eq!(sim.snap().stages[1].p99_ns, 1_000);
    assert_eq!(sim.snap().pipeline, Status::Ok);
    sim.inputs.missed = 7;
    sim.tick_with(100, healthy);
    assert_eq!(sim.snap().missed_window, 7);
    assert_eq!(sim.snap().pipeline, Status::Degraded);
    assert_eq!(sim.snap().status, Status::Degraded);
    assert!(!sim.snap().kill);
    assert!(sim.snap().warnings_total >= 2);
}

#[test]
fn a_manual_engage_is_critical_at_once() {
    let mut sim = Sim::new(HealthConfig::default());
    sim.tick_with(1000, healthy);
    sim.mon.engage(5);
    let s = sim.snap();
    assert_eq!(
        (s.kill, s.kill_reasons, s.status),
        (true, kill_reason::MANUAL, Status::Critical)
    );
    sim.tick_with(1000, healthy);
    assert_eq!(sim.snap().status, Status::Critical, "latched");
    sim.mon.release().unwrap();
    assert_eq!(sim.snap().status, Status::Ok);
}

#[test]
fn config_validation_names_the_field() {
    let mut c = HealthConfig::default();
    c.zero_exempt.push("nope".into());
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("health.zero_exempt")
    );
    let c = HealthConfig {
        tick: Duration::ZERO,
        ..HealthConfig::default()
    };
    assert!(c.validate().is_err());
    let c = HealthConfig {
        nan_critical_rate: f64::NAN,
        ..HealthConfig::default()
    };
    assert!(c.validate().is_err());
}
