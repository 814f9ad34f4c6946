//! Health monitoring: feature health, data freshness, pipeline health, the rollup with alert
//! levels, and the kill switch.
//!
//! Three parts, split by where they run:
//!
//! - **Counting** ([`tally`]) is on the hot path, in the health stage: per feature vector and
//!   per feature, a zero, a non-finite value and the run of zeros are added into thread-local
//!   arrays, and the totals are stored into [`HealthCounters`] once per batch.
//! - **The monitor** ([`HealthMonitor`]) runs off the hot path at 10 Hz (a thread of its own,
//!   see [`monitor`]). Each tick takes a [`HealthInputs`] sample of every total, keeps the
//!   samples of the last window (default 10 s), and computes rates as differences across the
//!   window, so a feature that recovers recovers its score once the bad values leave the window.
//!   (A health monitor that counts from start-up never forgets a bad hour; this one does, by
//!   design.)
//! - **Publishing**: the resulting [`HealthSnapshot`] goes to the shared-memory health page
//!   (see [`page`]), to `/health` and `/metrics`, and the kill switch and alert level are
//!   stamped on every signal.
//!
//! # Feature health
//! Per feature, over the window: zero rate > 30 % costs 25 points, > 50 % costs 50; a run of
//! more than 10 consecutive zeros (still running, or started in the window) costs 30; a NaN or
//! infinite rate > 1 % costs 20. The score is clamped to [0, 100]; the status is HEALTHY ≥ 80,
//! WARNING ≥ 50, CRITICAL > 0, DISABLED at 0 or with no values in the window.
//!
//! Features whose zeros are ordinary in a quiet market (flow over one second, returns) are
//! listed in [`HealthConfig::zero_exempt`]; the zero rules do not apply to them. Features that
//! are NaN by design while an instrument warms up are listed in [`HealthConfig::nan_exempt`]
//! ([`DEFAULT_NAN_EXEMPT`]); the NaN rules do not apply to them. NaN is how
//! tickpipe's features say "undefined" (a one-sided book, a window still filling), so a NaN is
//! counted against the score but is critical only as a *storm*: more than
//! [`HealthConfig::nan_critical_rate`] of a feature's values in the window, once at least
//! [`HealthConfig::min_samples`] values are in it and the feature has produced a finite value
//! since start-up (so a feature that has never been defined, such as `spread_ticks` without an
//! instrument definition, is reported DISABLED but does not engage the kill switch).
//!
//! # Alerts and actions
//! - CRITICAL (engages the kill switch): a monitored feature's zero rate over 50 %, a NaN storm,
//!   the feed stale ([`Freshness::Stale`]), the market-data writer dead (its process gone, or
//!   its heartbeat older than [`HealthConfig::heartbeat_stale`]).
//! - WARNING (log line + counter): a feature WARNING or CRITICAL by score, data OLD, a stage's
//!   p99 over its budget, frames lost to laps, messages dropped on the main path.
//! - INFO (log line): recoveries, the kill switch released.
//!
//! The kill switch latches: once engaged it stays engaged until an explicit release (the
//! control plane's authenticated `POST /kill-switch`), and a release is refused while a critical
//! condition still holds.

pub mod monitor;
pub mod page;
pub mod shm_page;
pub mod tally;

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::features::{N_FEATURES, SCHEMA};
pub use tally::{FeatureTally, FeatureTotals, HealthCounters, LONG_RUN};

/// Stages whose latency the monitor watches, in [`crate::config::STAGES`] order.
pub const N_STAGES: usize = crate::config::STAGES.len();

/// Feature status by score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum FeatureStatus {
    /// Score ≥ 80.
    #[default]
    Healthy,
    /// Score ≥ 50.
    Warning,
    /// Score > 0.
    Critical,
    /// Score 0, or no values in the window.
    Disabled,
}

impl FeatureStatus {
    /// The status for a score (`None`: no values in the window).
    pub fn from_score(score: Option<u8>) -> Self {
        match score {
            None | Some(0) => FeatureStatus::Disabled,
            Some(s) if s >= 80 => FeatureStatus::Healthy,
            Some(s) if s >= 50 => FeatureStatus::Warning,
            Some(_) => FeatureStatus::Critical,
        }
    }
}

/// Age of the newest market data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
pub enum Freshness {
    /// Within [`FreshnessThresholds::fresh`].
    #[default]
    Fresh,
    /// Within [`FreshnessThresholds::recent`].
    Recent,
    /// Within [`FreshnessThresholds::old`].
    #[serde(rename = "OLD")]
    Old,
    /// Older, or no data at all after [`FreshnessThresholds::old`] since start.
    #[serde(rename = "STALE")]
    Stale,
}

/// Overall and per-component status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Nothing wrong.
    #[default]
    Ok,
    /// A warning holds.
    Degraded,
    /// A critical condition holds.
    Critical,
}

/// Alert level (as stamped on signals: 0 none, 1 info, 2 warning, 3 critical).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum AlertLevel {
    /// No alert.
    #[default]
    None,
    /// Logged.
    Info,
    /// Logged and counted.
    Warning,
    /// Engages the kill switch.
    Critical,
}

macro_rules! byte_enum {
    ($t:ty, $($v:path = $n:expr),+) => {
        impl $t {
            /// As a byte (health page and signals).
            pub fn as_u8(self) -> u8 {
                match self { $($v => $n),+ }
            }
            /// From a byte; `None` for a value no writer stores.
            pub fn from_u8(b: u8) -> Option<Self> {
                match b { $($n => Some($v),)+ _ => None }
            }
        }
    };
}
byte_enum!(
    FeatureStatus,
    FeatureStatus::Healthy = 0,
    FeatureStatus::Warning = 1,
    FeatureStatus::Critical = 2,
    FeatureStatus::Disabled = 3
);
byte_enum!(
    Freshness,
    Freshness::Fresh = 0,
    Freshness::Recent = 1,
    Freshness::Old = 2,
    Freshness::Stale = 3
);
byte_enum!(
    Status,
    Status::Ok = 0,
    Status::Degraded = 1,
    Status::Critical = 2
);
byte_enum!(
    AlertLevel,
    AlertLevel::None = 0,
    AlertLevel::Info = 1,
    AlertLevel::Warning = 2,
    AlertLevel::Critical = 3
);

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Degraded => "DEGRADED",
            Status::Critical => "CRITICAL",
        })
    }
}

/// Why the kill switch is engaged (bits).
pub mod kill_reason {
    /// A monitored feature's zero rate went over 50 %.
    pub const ZERO_STORM: u32 = 1;
    /// A NaN storm.
    pub const NAN_STORM: u32 = 2;
    /// The feed went stale.
    pub const FEED_STALE: u32 = 4;
    /// The market-data writer died or stopped its heartbeat.
    pub const WRITER_DEAD: u32 = 8;
    /// Engaged by an operator.
    pub const MANUAL: u32 = 16;

    /// Names of the bits set in `bits`.
    pub fn names(bits: u32) -> Vec<&'static str> {
        [
            (ZERO_STORM, "zero_storm"),
            (NAN_STORM, "nan_storm"),
            (FEED_STALE, "feed_stale"),
            (WRITER_DEAD, "writer_dead"),
            (MANUAL, "manual"),
        ]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect()
    }
}

/// Freshness thresholds (age of the newest market data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessThresholds {
    /// Fresh up to this age.
    pub fresh: Duration,
    /// Recent up to this age.
    pub recent: Duration,
    /// OLD up to this age; STALE beyond.
    pub old: Duration,
}

impl Default for FreshnessThresholds {
    fn default() -> Self {
        // Co-located: a liquid feed updates many times a second, and the writer heartbeats
        // every 50 ms even when the market is quiet.
        Self {
            fresh: Duration::from_millis(250),
            recent: Duration::from_secs(1),
            old: Duration::from_secs(5),
        }
    }
}

impl FreshnessThresholds {
    /// Classifies an age.
    pub fn classify(&self, age: Duration) -> Freshness {
        if age <= self.fresh {
            Freshness::Fresh
        } else if age <= self.recent {
            Freshness::Recent
        } else if age <= self.old {
            Freshness::Old
        } else {
            Freshness::Stale
        }
    }
}

/// Monitor settings (the `[health]` table of a profile).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Whether the engine runs the monitor.
    pub enabled: bool,
    /// Sliding window for rates.
    pub window: Duration,
    /// Rollup period.
    pub tick: Duration,
    /// Freshness thresholds.
    pub freshness: FreshnessThresholds,
    /// Writer heartbeat older than this: the writer is dead.
    pub heartbeat_stale: Duration,
    /// Values a feature needs in the window before its rates can raise a critical alert.
    pub min_samples: u64,
    /// Non-finite share of a feature's window that is a NaN storm.
    pub nan_critical_rate: f64,
    /// Features the zero rules do not apply to.
    pub zero_exempt: Vec<String>,
    /// Features the NaN rules do not apply to.
    pub nan_exempt: Vec<String>,
    /// p99 service-time budget per stage ([`crate::config::STAGES`] order; `None`: unchecked).
    pub stage_budgets: [Option<Duration>; N_STAGES],
    /// p99 end-to-end budget (market-data publish to signal).
    pub e2e_budget: Option<Duration>,
    /// Shared-memory health page to publish (none: not published).
    pub page: Option<std::path::PathBuf>,
}

/// Features whose zeros are ordinary in a quiet market: one-second flow, realized variance and
/// returns over short windows, trade counts and depth imbalance (equal sizes give 0).
pub const DEFAULT_ZERO_EXEMPT: &[&str] = &[
    "depth_imbalance_l1",
    "depth_imbalance_l2",
    "depth_imbalance_l3",
    "depth_imbalance_l4",
    "depth_imbalance_l5",
    "ofi_100ev",
    "ofi_1s",
    "ofi_10s",
    "signed_volume_1s",
    "signed_volume_10s",
    "rv_1s",
    "rv_10s",
    "rv_60s",
    "log_return_1s",
    "log_return_10s",
    "log_return_60s",
    "vwap_dev_60s_bps",
    "trade_rate_1s",
];

/// Features that are undefined (NaN) by design until something per instrument has happened:
/// a tick size from an instrument definition (`spread_ticks`), a first trade
/// (`last_trade_sign`, the VWAP deviation), a return window's first full span. With several
/// instruments warming up at different times their NaN share says nothing about the feed, so
/// the NaN rules watch the book-state features (mid, spreads, microprice, imbalances: NaN when a
/// book is one-sided or empty) and the window sums (never NaN).
pub const DEFAULT_NAN_EXEMPT: &[&str] = &[
    "spread_ticks",
    "last_trade_sign",
    "log_return_1s",
    "log_return_10s",
    "log_return_60s",
    "vwap_dev_60s_bps",
];

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: Duration::from_secs(10),
            tick: Duration::from_millis(100),
            freshness: FreshnessThresholds::default(),
            heartbeat_stale: Duration::from_millis(250),
            min_samples: 100,
            nan_critical_rate: 0.5,
            zero_exempt: DEFAULT_ZERO_EXEMPT.iter().map(|s| s.to_string()).collect(),
            nan_exempt: DEFAULT_NAN_EXEMPT.iter().map(|s| s.to_string()).collect(),
            stage_budgets: [None; N_STAGES],
            e2e_budget: None,
            page: None,
        }
    }
}

impl HealthConfig {
    /// Checks names and ranges.
    ///
    /// # Errors
    /// The offending field and why.
    pub fn validate(&self) -> Result<(), crate::PipelineError> {
        let err = |field: &str, msg: String| crate::PipelineError::Config {
            field: format!("health.{field}"),
            msg,
        };
        if self.tick.is_zero() {
            return Err(err("tick", "must be positive".into()));
        }
        if self.window < self.tick {
            return Err(err("window", "must be at least one tick".into()));
        }
        if self.window.as_nanos() / self.tick.as_nanos() > 100_000 {
            return Err(err("window", "more than 100000 ticks per window".into()));
        }
        if !(self.nan_critical_rate > 0.0 && self.nan_critical_rate <= 1.0) {
            return Err(err("nan_critical_rate", "must be in (0, 1]".into()));
        }
        let f = &self.freshness;
        if !(f.fresh <= f.recent && f.recent <= f.old) {
            return Err(err("freshness", "need fresh <= recent <= old".into()));
        }
        for (field, list) in [
            ("zero_exempt", &self.zero_exempt),
            ("nan_exempt", &self.nan_exempt),
        ] {
            for name in list {
                if !SCHEMA.iter().any(|s| s.name == name) {
                    return Err(err(field, format!("unknown feature {name:?}")));
                }
            }
        }
        Ok(())
    }

    fn exempt(list: &[String]) -> [bool; N_FEATURES] {
        std::array::from_fn(|i| list.iter().any(|n| n == SCHEMA[i].name))
    }
}

/// Market-data writer liveness, as the monitor sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterHealth {
    /// Age of its last heartbeat.
    pub heartbeat_age: Duration,
    /// Whether its process exists.
    pub alive: bool,
    /// Whether it closed the ring (a finished stream is not a dead writer).
    pub finished: bool,
}

/// Everything the monitor samples on a tick: cumulative totals (it takes differences itself)
/// and current values.
#[derive(Debug, Clone, Default)]
pub struct HealthInputs {
    /// Monotonic time of the sample (ns since any fixed origin).
    pub now_ns: u64,
    /// Wall time of the sample (ns since the UNIX epoch).
    pub unix_ns: u64,
    /// Feature totals from the health stage.
    pub features: FeatureTotals,
    /// Age of the newest market data (`None`: none seen yet).
    pub data_age: Option<Duration>,
    /// The writer (`None`: not known, e.g. an in-process source).
    pub writer: Option<WriterHealth>,
    /// Latest p99 service time per stage over the last report interval (ns; `None`: no data).
    pub stage_p99_ns: [Option<u64>; N_STAGES],
    /// Latest p99 end to end over the last report interval (ns).
    pub e2e_p99_ns: Option<u64>,
    /// Frames lost at ingest (lapped by the writer, or undecodable), cumulative.
    pub missed: u64,
    /// Main-path messages dropped or conflated, cumulative.
    pub dropped: u64,
    /// Slow-lane messages dropped or conflated, cumulative (expected under load; reported).
    pub slow_lane_thinned: u64,
    /// Producer stalls on full main-path links, cumulative.
    pub stalls: u64,
    /// Fullest main-path link, as a share of its capacity.
    pub max_occupancy: f64,
    /// Models configured but not serving (load failed, or no output), by name.
    pub models_down: Vec<String>,
    /// Signals published, cumulative.
    pub signals: u64,
}

/// One feature's health over the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct FeatureHealth {
    /// Score in [0, 100].
    pub score: u8,
    /// Status by score.
    pub status: FeatureStatus,
    /// Zero share of the window's values.
    pub zero_rate: f64,
    /// Non-finite share of the window's values.
    pub nan_rate: f64,
    /// Current run of zeros.
    pub consecutive_zeros: u32,
    /// Values in the window.
    pub samples: u64,
}

/// One stage's latency against its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct StageHealth {
    /// Worst per-interval p99 service time in the window (ns; 0: no data).
    pub p99_ns: u64,
    /// Budget (ns; 0: none).
    pub budget_ns: u64,
}

/// The rollup the monitor publishes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HealthSnapshot {
    /// Rollup sequence (ticks since start).
    pub tick: u64,
    /// When it was computed (ns since the UNIX epoch).
    pub unix_ns: u64,
    /// Monitor uptime.
    pub uptime_ns: u64,
    /// Overall status.
    pub status: Status,
    /// Highest active alert level.
    pub alert: AlertLevel,
    /// Kill switch engaged.
    pub kill: bool,
    /// Why ([`kill_reason`] bits, accumulated while engaged).
    pub kill_reasons: u32,
    /// Since when (ns since the UNIX epoch; 0 when released).
    pub kill_since_unix_ns: u64,
    /// Freshness of the data.
    pub freshness: Freshness,
    /// Age of the newest market data (`u64::MAX`: none seen).
    pub data_age_ns: u64,
    /// Writer heartbeat age (`u64::MAX`: unknown).
    pub heartbeat_age_ns: u64,
    /// Component status: market data (freshness and writer).
    pub market_data: Status,
    /// Component status: features.
    pub features_status: Status,
    /// Component status: pipeline (latency budgets, losses).
    pub pipeline: Status,
    /// Component status: models.
    pub models: Status,
    /// Per feature, in schema order.
    pub features: [FeatureHealth; N_FEATURES],
    /// Per stage, in [`crate::config::STAGES`] order.
    pub stages: [StageHealth; N_STAGES],
    /// End-to-end p99 against its budget.
    pub e2e: StageHealth,
    /// Feature vectors counted, cumulative.
    pub vectors: u64,
    /// Signals published, cumulative.
    pub signals: u64,
    /// Frames lost at ingest (laps, undecodable) in the window.
    pub missed_window: u64,
    /// Main-path drops in the window.
    pub dropped_window: u64,
    /// Slow-lane drops and conflations in the window.
    pub slow_lane_thinned_window: u64,
    /// Link stalls (back-pressure) in the window.
    pub stalls_window: u64,
    /// Fullest main-path link, per mille of capacity.
    pub max_occupancy_permille: u16,
    /// WARNING notifications so far.
    pub warnings_total: u64,
    /// Kill-switch engagements so far.
    pub kills_total: u64,
    /// The window.
    pub window_ns: u64,
}

/// An alert raised or cleared on a tick (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEvent {
    /// Level.
    pub level: AlertLevel,
    /// Stable code, e.g. `feature.mid.zero_rate`.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// A condition evaluated on one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    level: AlertLevel,
    code: String,
    message: String,
    kill: u32,
}

#[derive(Debug, Clone)]
struct Sample {
    now_ns: u64,
    features: FeatureTotals,
    missed: u64,
    dropped: u64,
    slow: u64,
    stalls: u64,
}

/// A release of the kill switch that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kill switch not released: critical conditions hold: {0}")]
pub struct ReleaseRefused(pub String);

/// The rollup logic (no thread, no clock: [`HealthMonitor::tick`] takes every input, so it is
/// tested with synthetic samples and run by [`monitor`] on a thread).
#[derive(Debug)]
pub struct HealthMonitor {
    cfg: HealthConfig,
    zero_exempt: [bool; N_FEATURES],
    nan_exempt: [bool; N_FEATURES],
    samples: VecDeque<Sample>,
    stage_p99: [VecDeque<(u64, u64)>; N_STAGES],
    e2e_p99: VecDeque<(u64, u64)>,
    seen_finite: [bool; N_FEATURES],
    active: Vec<Condition>,
    start_ns: Option<u64>,
    snapshot: HealthSnapshot,
}

impl HealthMonitor {
    /// A monitor with `cfg` (validate it first: see [`HealthConfig::validate`]).
    pub fn new(cfg: HealthConfig) -> Self {
        let cap = (cfg.window.as_nanos() / cfg.tick.as_nanos().max(1)) as usize + 4;
        let mut snapshot = HealthSnapshot {
            window_ns: cfg.window.as_nanos() as u64,
            data_age_ns: u64::MAX,
            heartbeat_age_ns: u64::MAX,
            ..HealthSnapshot::default()
        };
        for (s, b) in snapshot.stages.iter_mut().zip(cfg.stage_budgets) {
            s.budget_ns = b.map_or(0, |d| d.as_nanos() as u64);
        }
        snapshot.e2e.budget_ns = cfg.e2e_budget.map_or(0, |d| d.as_nanos() as u64);
        Self {
            zero_exempt: HealthConfig::exempt(&cfg.zero_exempt),
            nan_exempt: HealthConfig::exempt(&cfg.nan_exempt),
            samples: VecDeque::with_capacity(cap),
            stage_p99: std::array::from_fn(|_| VecDeque::with_capacity(cap)),
            e2e_p99: VecDeque::with_capacity(cap),
            seen_finite: [false; N_FEATURES],
            active: Vec::new(),
            start_ns: None,
            snapshot,
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    /// The latest rollup.
    pub fn snapshot(&self) -> &HealthSnapshot {
        &self.snapshot
    }

    /// Engages the kill switch by hand.
    pub fn engage(&mut self, unix_ns: u64) {
        self.engage_bits(kill_reason::MANUAL, unix_ns);
    }

    fn engage_bits(&mut self, bits: u32, unix_ns: u64) {
        let s = &mut self.snapshot;
        if !s.kill {
            s.kill = true;
            s.kill_since_unix_ns = unix_ns;
            s.kills_total += 1;
        }
        s.kill_reasons |= bits;
        self.refresh_status();
    }

    /// Overall status from the components and the kill switch (engaged: CRITICAL).
    fn refresh_status(&mut self) {
        let s = &mut self.snapshot;
        s.status = s
            .market_data
            .max(s.features_status)
            .max(s.pipeline)
            .max(s.models)
            .max(if s.kill { Status::Critical } else { Status::Ok });
    }

    /// Releases the kill switch, unless a critical condition holds on the latest tick.
    ///
    /// # Errors
    /// The conditions that still hold.
    pub fn release(&mut self) -> Result<(), ReleaseRefused> {
        let critical: Vec<&str> = self
            .active
            .iter()
            .filter(|c| c.kill != 0)
            .map(|c| c.code.as_str())
            .collect();
        if !critical.is_empty() {
            return Err(ReleaseRefused(critical.join(", ")));
        }
        let s = &mut self.snapshot;
        s.kill = false;
        s.kill_reasons = 0;
        s.kill_since_unix_ns = 0;
        self.refresh_status();
        Ok(())
    }

    /// One rollup. Returns the alerts raised and cleared on this tick (for the log); the
    /// snapshot is in [`HealthMonitor::snapshot`].
    pub fn tick(&mut self, inp: &HealthInputs) -> Vec<AlertEvent> {
        let start = *self.start_ns.get_or_insert(inp.now_ns);
        if self.samples.is_empty() {
            // Everything counted so far happened after start: the first base is all zeros.
            self.samples.push_back(Sample {
                now_ns: start,
                features: FeatureTotals::default(),
                missed: 0,
                dropped: 0,
                slow: 0,
                stalls: 0,
            });
        }
        let window_ns = self.cfg.window.as_nanos() as u64;
        // Keep the oldest sample at or before the window start, so the differences cover the
        // whole window once it has filled.
        while self.samples.len() >= 2
            && inp.now_ns.saturating_sub(self.samples[1].now_ns) >= window_ns
        {
            self.samples.pop_front();
        }
        let base = self.samples.front().cloned();
        self.samples.push_back(Sample {
            now_ns: inp.now_ns,
            features: inp.features.clone(),
            missed: inp.missed,
            dropped: inp.dropped,
            slow: inp.slow_lane_thinned,
            stalls: inp.stalls,
        });
        let zero = FeatureTotals::default();
        let (b, bm, bd, bs, bst) = match &base {
            Some(s) => (&s.features, s.missed, s.dropped, s.slow, s.stalls),
            None => (&zero, 0, 0, 0, 0),
        };
        let f = &inp.features;
        let mut conds: Vec<Condition> = Vec::new();
        let mut feature_status = Status::Ok;
        let samples = f.vectors.saturating_sub(b.vectors);
        for (i, spec) in SCHEMA.iter().enumerate() {
            let name = spec.name;
            let zeros = f.zeros[i].saturating_sub(b.zeros[i]);
            let nonfinite = f.nonfinite[i].saturating_sub(b.nonfinite[i]);
            let long_runs = f.long_runs[i].saturating_sub(b.long_runs[i]);
            if f.finite_seen & (1 << i) != 0 {
                self.seen_finite[i] = true;
            }
            // The totals are read one by one while the stage runs: a difference may be off by
            // the vectors of a batch, so rates are clamped.
            let rate = |n: u64| {
                if samples == 0 {
                    0.0
                } else {
                    (n as f64 / samples as f64).min(1.0)
                }
            };
            let (zero_rate, nan_rate) = (rate(zeros), rate(nonfinite));
            let mut score: i32 = 100;
            if !self.zero_exempt[i] {
                if zero_rate > 0.5 {
                    score -= 50;
                } else if zero_rate > 0.3 {
                    score -= 25;
                }
                if f.runs[i] > LONG_RUN || long_runs > 0 {
                    score -= 30;
                }
            }
            if !self.nan_exempt[i] && nan_rate > 0.01 {
                score -= 20;
            }
            let score = (samples > 0 && self.seen_finite[i]).then_some(score.clamp(0, 100) as u8);
            let status = FeatureStatus::from_score(score);
            self.snapshot.features[i] = FeatureHealth {
                score: score.unwrap_or(0),
                status,
                zero_rate,
                nan_rate,
                consecutive_zeros: f.runs[i],
                samples,
            };
            let enough = samples >= self.cfg.min_samples;
            if enough && !self.zero_exempt[i] && zero_rate > 0.5 {
                conds.push(Condition {
                    level: AlertLevel::Critical,
                    code: format!("feature.{name}.zero_rate"),
                    message: format!(
                        "{name}: {:.1}% zeros over the last {:?}",
                        zero_rate * 100.0,
                        self.cfg.window
                    ),
                    kill: kill_reason::ZERO_STORM,
                });
            } else if enough
                && !self.nan_exempt[i]
                && self.seen_finite[i]
                && nan_rate > self.cfg.nan_critical_rate
            {
                conds.push(Condition {
                    level: AlertLevel::Critical,
                    code: format!("feature.{name}.nan_storm"),
                    message: format!(
                        "{name}: {:.1}% NaN/Inf over the last {:?}",
                        nan_rate * 100.0,
                        self.cfg.window
                    ),
                    kill: kill_reason::NAN_STORM,
                });
            } else if matches!(status, FeatureStatus::Warning | FeatureStatus::Critical) {
                conds.push(Condition {
                    level: AlertLevel::Warning,
                    code: format!("feature.{name}.score"),
                    message: format!(
                        "{name}: score {} (zeros {:.1}%, NaN {:.1}%, run {})",
                        score.unwrap_or(0),
                        zero_rate * 100.0,
                        nan_rate * 100.0,
                        f.runs[i]
                    ),
                    kill: 0,
                });
            }
        }
        for c in &conds {
            feature_status = feature_status.max(level_status(c.level));
        }

        // Market data: freshness and the writer.
        let mut md: Vec<Condition> = Vec::new();
        let since_start = Duration::from_nanos(inp.now_ns.saturating_sub(start));
        let age = inp.data_age.unwrap_or(since_start);
        let writer_finished = inp.writer.is_some_and(|w| w.finished);
        let freshness = if inp.data_age.is_none() && since_start <= self.cfg.freshness.old {
            // Nothing yet, but not for long: starting up.
            Freshness::Recent
        } else {
            self.cfg.freshness.classify(age)
        };
        if !writer_finished {
            match freshness {
                Freshness::Stale => md.push(Condition {
                    level: AlertLevel::Critical,
                    code: "market_data.stale".into(),
                    message: format!("newest market data is {age:?} old"),
                    kill: kill_reason::FEED_STALE,
                }),
                Freshness::Old => md.push(Condition {
                    level: AlertLevel::Warning,
                    code: "market_data.old".into(),
                    message: format!("newest market data is {age:?} old"),
                    kill: 0,
                }),
                _ => {}
            }
        }
        if let Some(w) = inp.writer
            && !w.finished
            && (!w.alive || w.heartbeat_age > self.cfg.heartbeat_stale)
        {
            md.push(Condition {
                level: AlertLevel::Critical,
                code: "market_data.writer_dead".into(),
                message: if w.alive {
                    format!("writer heartbeat is {:?} old", w.heartbeat_age)
                } else {
                    "writer process is gone".into()
                },
                kill: kill_reason::WRITER_DEAD,
            });
        }
        let md_status = md
            .iter()
            .map(|c| level_status(c.level))
            .max()
            .unwrap_or_default();
        conds.extend(md);

        // Pipeline: latency budgets and losses.
        let mut pipe: Vec<Condition> = Vec::new();
        let window_max = |q: &mut VecDeque<(u64, u64)>, v: Option<u64>| -> u64 {
            if let Some(v) = v {
                q.push_back((inp.now_ns, v));
            }
            while q
                .front()
                .is_some_and(|(t, _)| inp.now_ns.saturating_sub(*t) > window_ns)
            {
                q.pop_front();
            }
            q.iter().map(|(_, v)| *v).max().unwrap_or(0)
        };
        for s in 0..N_STAGES {
            let p99 = window_max(&mut self.stage_p99[s], inp.stage_p99_ns[s]);
            let st = &mut self.snapshot.stages[s];
            st.p99_ns = p99;
            if st.budget_ns > 0 && p99 > st.budget_ns {
                pipe.push(Condition {
                    level: AlertLevel::Warning,
                    code: format!("stage.{}.p99", crate::config::STAGES[s]),
                    message: format!(
                        "{}: p99 {} ns over its budget of {} ns",
                        crate::config::STAGES[s],
                        p99,
                        st.budget_ns
                    ),
                    kill: 0,
                });
            }
        }
        let e2e = window_max(&mut self.e2e_p99, inp.e2e_p99_ns);
        self.snapshot.e2e.p99_ns = e2e;
        if self.snapshot.e2e.budget_ns > 0 && e2e > self.snapshot.e2e.budget_ns {
            pipe.push(Condition {
                level: AlertLevel::Warning,
                code: "pipeline.e2e.p99".into(),
                message: format!(
                    "end-to-end p99 {e2e} ns over its budget of {} ns",
                    self.snapshot.e2e.budget_ns
                ),
                kill: 0,
            });
        }
        let missed = inp.missed.saturating_sub(bm);
        let dropped = inp.dropped.saturating_sub(bd);
        if missed > 0 {
            pipe.push(Condition {
                level: AlertLevel::Warning,
                code: "pipeline.lapped".into(),
                message: format!(
                    "{missed} frames lost at ingest (laps, undecodable) in the window"
                ),
                kill: 0,
            });
        }
        if dropped > 0 {
            pipe.push(Condition {
                level: AlertLevel::Warning,
                code: "pipeline.dropped".into(),
                message: format!("{dropped} main-path messages dropped in the window"),
                kill: 0,
            });
        }
        let pipe_status = pipe
            .iter()
            .map(|c| level_status(c.level))
            .max()
            .unwrap_or_default();
        conds.extend(pipe);
        let models_status = if inp.models_down.is_empty() {
            Status::Ok
        } else {
            conds.push(Condition {
                level: AlertLevel::Warning,
                code: "models.down".into(),
                message: format!("models not serving: {}", inp.models_down.join(", ")),
                kill: 0,
            });
            Status::Degraded
        };

        // Transitions for the log, then actions.
        let mut events = Vec::new();
        for c in &conds {
            if !self
                .active
                .iter()
                .any(|a| a.code == c.code && a.level == c.level)
            {
                if c.level == AlertLevel::Warning {
                    self.snapshot.warnings_total += 1;
                }
                events.push(AlertEvent {
                    level: c.level,
                    code: c.code.clone(),
                    message: c.message.clone(),
                });
            }
        }
        for a in &self.active {
            if !conds.iter().any(|c| c.code == a.code) {
                events.push(AlertEvent {
                    level: AlertLevel::Info,
                    code: a.code.clone(),
                    message: format!("recovered: {}", a.code),
                });
            }
        }
        let kill_bits = conds.iter().fold(0, |b, c| b | c.kill);
        if kill_bits != 0 {
            let was = self.snapshot.kill;
            self.engage_bits(kill_bits, inp.unix_ns);
            if !was {
                events.push(AlertEvent {
                    level: AlertLevel::Critical,
                    code: "kill_switch.engaged".into(),
                    message: format!(
                        "kill switch engaged: {}",
                        kill_reason::names(kill_bits).join(", ")
                    ),
                });
            }
        }
        let alert = conds.iter().map(|c| c.level).max().unwrap_or_default();
        self.active = conds;

        let s = &mut self.snapshot;
        s.tick += 1;
        s.unix_ns = inp.unix_ns;
        s.uptime_ns = inp.now_ns.saturating_sub(start);
        s.alert = alert;
        s.freshness = freshness;
        s.data_age_ns = inp.data_age.map_or(u64::MAX, |d| d.as_nanos() as u64);
        s.heartbeat_age_ns = inp
            .writer
            .map_or(u64::MAX, |w| w.heartbeat_age.as_nanos() as u64);
        s.market_data = md_status;
        s.features_status = feature_status;
        s.pipeline = pipe_status;
        s.models = models_status;

        s.vectors = f.vectors;
        s.signals = inp.signals;
        s.missed_window = missed;
        s.dropped_window = dropped;
        s.slow_lane_thinned_window = inp.slow_lane_thinned.saturating_sub(bs);
        s.stalls_window = inp.stalls.saturating_sub(bst);
        s.max_occupancy_permille = (inp.max_occupancy.clamp(0.0, 1.0) * 1000.0).round() as u16;
        self.refresh_status();
        events
    }

    /// Active conditions on the latest tick, as (level, code, message).
    pub fn active(&self) -> Vec<(AlertLevel, String, String)> {
        self.active
            .iter()
            .map(|c| (c.level, c.code.clone(), c.message.clone()))
            .collect()
    }
}

fn level_status(l: AlertLevel) -> Status {
    match l {
        AlertLevel::Critical => Status::Critical,
        AlertLevel::Warning => Status::Degraded,
        _ => Status::Ok,
    }
}

#[cfg(test)]
mod tests;
