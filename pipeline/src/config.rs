//! Engine configuration: threading mode, core map, idle strategies, link sizes and policies,
//! read from a TOML profile (see `tuning/profiles/`). Everything is validated before any thread
//! starts, and every error names the field.
//!
//! ```toml
//! mode = "shared"            # dedicated | shared | invoker
//! batch = 256                # messages per duty cycle at most
//! report_interval = "100ms"  # histogram hand-over to the reporter
//!
//! [links]
//! capacity = 4096            # slots per main-path link
//!
//! [stages.ingest]            # ingest, features, inference, health, forecast
//! core = 1
//! idle = "busy-spin"         # busy-spin | no-op | yielding | backoff | sleeping[:<duration>]
//!
//! [slow_lane]                # the forecast lane: bars from features, forecasts back to inference
//! enabled = true
//! policy = "conflate"        # conflate | drop-oldest
//! capacity = 64
//! overflow = 4096            # conflation keys, or queued messages for drop-oldest
//! work = "0ns"               # artificial busy time per message (for tests and profiling)
//!
//! [features]               # order books and feature windows
//! time_source = "ts_recv"    # ts_recv | ts_event: the clock of the time windows
//! window_capacity = 65536    # entries per time window per instrument (overflow is counted)
//! max_instruments = 16
//! max_orders = 65536         # resting orders per instrument (MBO)
//! max_levels = 4096          # price levels per side per instrument
//! tick_size = 0.25           # used until an instrument definition gives one (optional)
//!
//! [models]                 # all optional; relative paths are relative to this file
//! sjm = "../../models/fixtures/pipeline/sjm"        # regime model directory
//! xgboost = "../../models/fixtures/pipeline/score.json"   # scoring model (JSON or UBJSON)
//! lstm = "../../models/fixtures/lstm/lstm_h32.onnx" # slow-lane forecaster (enables the lane)
//! lstm_bars = "1s"           # 1s | 1m: the bars that feed the forecaster
//!
//! [models.stability]         # the regime stability filter
//! min_confidence = 0.70
//! max_transitions_per_hour = 10
//! feature_zero_threshold = 0.5
//! covariance_regularization = 1e-4
//! max_regime_distance = 6.0  # RMS z-distance beyond which a vector cannot change the regime
//!
//! [shadow]                   # canary lane for a candidate model (see `shadow`)
//! enabled = true             # build the lane; it works only while a candidate is set
//! capacity = 4096            # slots of the inference->shadow link (drop-oldest beyond)
//! overflow = 4096
//! min_time = "10m"           # promotion gate, each rule optional: time shadowed,
//! min_vectors = 100000       #   vectors compared,
//! min_agreement = 0.95       #   regime label agreement,
//! max_score_diff = 1e-3      #   p99 |candidate - live| of scores
//!
//! [health]                   # the monitor (see `health`); all optional
//! window = "10s"             # sliding window of the rates
//! tick = "100ms"             # rollup period
//! heartbeat_stale = "250ms"  # market-data writer heartbeat older than this: writer dead
//! nan_critical_rate = 0.5    # NaN share of a feature's window that is a storm
//! page = "/dev/shm/tickpipe-health"  # shared-memory health page (none: not published)
//! e2e_budget = "100us"       # p99 end-to-end budget (none: unchecked)
//! [health.freshness]
//! fresh = "250ms"
//! recent = "1s"
//! old = "5s"                 # beyond: STALE, kill switch
//! [health.budgets]           # p99 service-time budget per stage
//! features = "20us"
//!
//! [control]                  # the HTTP control plane of `tickpipe run` (see `control`)
//! bind = "127.0.0.1:9180"
//! api_keys_file = "keys.txt" # POSTs need X-API-Key; keys also from $TICKPIPE_API_KEYS
//!
//! [host]                     # memory and scheduling (see `host`): off | on | required
//! mlockall = "on"            # mlockall(MCL_CURRENT | MCL_FUTURE)
//! prefault = "on"            # touch every ring page at start
//! hugepages = "on"           # rings on huge pages
//! realtime = "off"           # SCHED_FIFO for pinned stage threads
//! realtime_priority = 50
//!
//! [reporter]
//! idle = "sleeping:1ms"
//!
//! [feeder]                   # `tickpipe profile`'s replay thread
//! core = 0
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::PipelineError;
use crate::book::BookConfig;
use crate::feature_engine::FeatureEngineConfig;
use crate::features::{FeatureConfig, TimeSource};
use crate::health::HealthConfig;
use crate::host::{HostSettings, Want};
use crate::idle::IdleStrategy;
use crate::inference::InferenceSettings;
use crate::link::Policy;
use crate::stage::available_cores;
use tickpipe_models::stability::StabilityConfig;

/// How the stages are deployed (Aeron's threading modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadingMode {
    /// One thread per stage, each pinned to its core.
    Dedicated,
    /// Stages that share a core share one thread, run in pipeline order.
    Shared,
    /// No threads: the caller drives every duty cycle.
    Invoker,
}

impl std::str::FromStr for ThreadingMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dedicated" => Ok(ThreadingMode::Dedicated),
            "shared" => Ok(ThreadingMode::Shared),
            "invoker" => Ok(ThreadingMode::Invoker),
            _ => Err(format!(
                "unknown threading mode {s:?} (dedicated, shared, invoker)"
            )),
        }
    }
}

impl std::fmt::Display for ThreadingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ThreadingMode::Dedicated => "dedicated",
            ThreadingMode::Shared => "shared",
            ThreadingMode::Invoker => "invoker",
        })
    }
}

/// The pipeline's stages in order; `forecast` is the slow lane.
pub const STAGES: [&str; 5] = ["ingest", "features", "inference", "health", "forecast"];

/// Where a thread runs and how it idles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// Core to pin to (none: unpinned).
    pub core: Option<usize>,
    /// Idle strategy.
    pub idle: IdleStrategy,
}

/// The slow lane's link and work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlowLane {
    /// Link policy (never back-pressure: the main path must not wait for it).
    pub policy: Policy,
    /// Ring slots.
    pub capacity: usize,
    /// Conflation keys or queued messages.
    pub overflow: usize,
    /// Artificial busy time per message.
    pub work: Duration,
}

/// Order book and feature sizes (the `[features]` table).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeatureSettings {
    /// Which timestamp drives the time windows.
    pub time_source: TimeSource,
    /// Entries per time window ring per instrument.
    pub window_capacity: usize,
    /// Instruments with a book.
    pub max_instruments: usize,
    /// Resting orders per instrument.
    pub max_orders: usize,
    /// Price levels per side per instrument.
    pub max_levels: usize,
    /// Tick size (DBN fixed point) used until a definition gives one.
    pub tick_size: Option<i64>,
}

impl Default for FeatureSettings {
    fn default() -> Self {
        Self {
            time_source: TimeSource::Recv,
            window_capacity: 1 << 16,
            max_instruments: 16,
            max_orders: 1 << 16,
            max_levels: 4096,
            tick_size: None,
        }
    }
}

impl FeatureSettings {
    /// Bytes the feature stage reserves and touches at start-up, as `(books, feature windows)`,
    /// for `max_instruments` instruments: nearly all of the engine's resident memory besides
    /// the models. Both grow linearly with `max_instruments`; the books with `max_orders` and
    /// `max_levels`, the windows with `window_capacity`.
    pub fn reserved_bytes(&self) -> (usize, usize) {
        let cfg = self.engine_config();
        let windows = crate::features::FeatureState::ring_bytes(self.window_capacity)
            .saturating_mul(self.max_instruments);
        (cfg.book.reserved_bytes(), windows)
    }

    /// One line for start-up reports: what [`FeatureSettings::reserved_bytes`] holds.
    pub fn reserved_summary(&self) -> String {
        let (books, windows) = self.reserved_bytes();
        format!(
            "per-instrument state for max_instruments = {}: books {} (max_orders {}, max_levels {}), feature windows {} (window_capacity {}), total {}",
            self.max_instruments,
            crate::host::bytes(books as u64),
            self.max_orders,
            self.max_levels,
            crate::host::bytes(windows as u64),
            self.window_capacity,
            crate::host::bytes(books.saturating_add(windows) as u64),
        )
    }

    /// The feature stage's configuration.
    pub fn engine_config(&self) -> FeatureEngineConfig {
        FeatureEngineConfig {
            book: BookConfig {
                max_instruments: self.max_instruments,
                max_orders: self.max_orders,
                max_levels: self.max_levels,
            },
            features: FeatureConfig {
                time_source: self.time_source,
                window_capacity: self.window_capacity,
                default_tick_size: self.tick_size,
            },
        }
    }
}

/// The models (the `[models]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSettings {
    /// Statistical Jump Model directory (regimes).
    pub sjm: Option<PathBuf>,
    /// XGBoost model (scores).
    pub xgboost: Option<PathBuf>,
    /// ONNX LSTM (slow-lane forecasts); setting it enables the slow lane.
    pub lstm: Option<PathBuf>,
    /// Interval of the bars that feed the forecaster (one of
    /// [`crate::feature_engine::BAR_INTERVALS_NS`]).
    pub lstm_bars_ns: u64,
    /// The regime stability filter.
    pub stability: StabilityConfig,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            sjm: None,
            xgboost: None,
            lstm: None,
            lstm_bars_ns: 1_000_000_000,
            stability: StabilityConfig::default(),
        }
    }
}

impl ModelSettings {
    /// The inference stage's settings, with state for `max_instruments` instruments.
    pub fn inference(&self, max_instruments: usize) -> InferenceSettings {
        InferenceSettings {
            sjm: self.sjm.clone(),
            xgboost: self.xgboost.clone(),
            stability: self.stability,
            max_instruments,
        }
    }

    /// Resolves relative model paths against `dir` (the config file's folder).
    pub fn resolve(&mut self, dir: &Path) {
        for p in [&mut self.sjm, &mut self.xgboost, &mut self.lstm]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}

/// A validated engine configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Threading mode.
    pub mode: ThreadingMode,
    /// Most messages a stage takes per duty cycle.
    pub batch: usize,
    /// Main-path link slots.
    pub link_capacity: usize,
    /// How often stages hand histograms to the reporter.
    pub report_interval: Duration,
    /// Placement per stage, in [`STAGES`] order.
    pub stages: [Placement; 5],
    /// The slow lane, if enabled.
    pub slow_lane: Option<SlowLane>,
    /// The reporter thread.
    pub reporter: Placement,
    /// The replay thread of `tickpipe profile`.
    pub feeder: Placement,
    /// Market-data ring to attach to (`tickpipe run`).
    pub md_ring: Option<PathBuf>,
    /// Signal ring to create.
    pub signal_ring: Option<PathBuf>,
    /// Signal ring data bytes (power of two).
    pub signal_capacity: usize,
    /// Order books and features.
    pub features: FeatureSettings,
    /// Models.
    pub models: ModelSettings,
    /// Health monitoring.
    pub health: HealthConfig,
    /// The HTTP control plane (`tickpipe run` serves it when set).
    pub control: Option<crate::control::ControlConfig>,
    /// Memory and scheduling settings applied at start.
    pub host: HostSettings,
    /// The shadow (canary) lane and the promotion gate.
    pub shadow: crate::shadow::ShadowSettings,
}

impl EngineConfig {
    /// The slow lane the engine runs: the configured one, or a default conflating lane when a
    /// forecaster is configured without one.
    pub fn effective_slow_lane(&self) -> Option<SlowLane> {
        self.slow_lane.or_else(|| {
            self.models.lstm.as_ref().map(|_| SlowLane {
                policy: Policy::ConflateLatest,
                capacity: 64,
                overflow: 4096,
                work: Duration::ZERO,
            })
        })
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        let spin = Placement {
            core: None,
            idle: IdleStrategy::BusySpin,
        };
        Self {
            mode: ThreadingMode::Shared,
            batch: 256,
            link_capacity: 4096,
            report_interval: Duration::from_millis(100),
            // The slow lane backs off when idle: it must not take a core from the main path.
            stages: [
                spin,
                spin,
                spin,
                spin,
                Placement {
                    core: None,
                    idle: IdleStrategy::BACKOFF,
                },
            ],
            slow_lane: None,
            reporter: Placement {
                core: None,
                idle: IdleStrategy::Sleeping(Duration::from_millis(1)),
            },
            feeder: spin,
            md_ring: None,
            signal_ring: None,
            signal_capacity: 16 << 20,
            features: FeatureSettings::default(),
            models: ModelSettings::default(),
            health: HealthConfig::default(),
            control: None,
            host: HostSettings::default(),
            shadow: crate::shadow::ShadowSettings::default(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    mode: Option<String>,
    batch: Option<usize>,
    report_interval: Option<String>,
    md_ring: Option<PathBuf>,
    signal_ring: Option<PathBuf>,
    signal_capacity: Option<usize>,
    links: Option<RawLinks>,
    #[serde(default)]
    stages: BTreeMap<String, RawPlacement>,
    slow_lane: Option<RawSlowLane>,
    reporter: Option<RawPlacement>,
    feeder: Option<RawPlacement>,
    features: Option<RawFeatures>,
    models: Option<RawModels>,
    health: Option<RawHealth>,
    control: Option<crate::control::ControlConfig>,
    host: Option<RawHost>,
    shadow: Option<crate::shadow::RawShadow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    mlockall: Option<RawWant>,
    prefault: Option<RawWant>,
    hugepages: Option<RawWant>,
    realtime: Option<RawWant>,
    realtime_priority: Option<i64>,
}

/// `on`/`off`/`required`, or a boolean.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawWant {
    Bool(bool),
    Word(String),
}

fn host_settings(raw: Option<&RawHost>) -> Result<HostSettings, PipelineError> {
    let d = HostSettings::default();
    let Some(raw) = raw else { return Ok(d) };
    let want = |field: &str, v: &Option<RawWant>, default: Want| match v {
        None => Ok(default),
        Some(RawWant::Bool(true)) => Ok(Want::On),
        Some(RawWant::Bool(false)) => Ok(Want::Off),
        Some(RawWant::Word(w)) => w.parse().map_err(|e| err(format!("host.{field}"), e)),
    };
    let realtime_priority = match raw.realtime_priority {
        None => d.realtime_priority,
        Some(p @ 1..=99) => p as i32,
        Some(p) => {
            return Err(err(
                "host.realtime_priority",
                format!("must be a SCHED_FIFO priority between 1 and 99, got {p}"),
            ));
        }
    };
    Ok(HostSettings {
        mlockall: want("mlockall", &raw.mlockall, d.mlockall)?,
        prefault: want("prefault", &raw.prefault, d.prefault)?,
        hugepages: want("hugepages", &raw.hugepages, d.hugepages)?,
        realtime: want("realtime", &raw.realtime, d.realtime)?,
        realtime_priority,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    enabled: Option<bool>,
    window: Option<String>,
    tick: Option<String>,
    heartbeat_stale: Option<String>,
    min_samples: Option<u64>,
    nan_critical_rate: Option<f64>,
    zero_exempt: Option<Vec<String>>,
    nan_exempt: Option<Vec<String>>,
    page: Option<PathBuf>,
    e2e_budget: Option<String>,
    freshness: Option<RawFreshness>,
    #[serde(default)]
    budgets: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFreshness {
    fresh: Option<String>,
    recent: Option<String>,
    old: Option<String>,
}

fn health_settings(raw: Option<&RawHealth>) -> Result<HealthConfig, PipelineError> {
    let d = HealthConfig::default();
    let Some(raw) = raw else { return Ok(d) };
    let dur = |field: &str, v: &Option<String>, default: Duration| match v {
        Some(s) => parse_duration(s).map_err(|e| err(format!("health.{field}"), e)),
        None => Ok(default),
    };
    let f = raw.freshness.as_ref();
    let none = None;
    let freshness = crate::health::FreshnessThresholds {
        fresh: dur(
            "freshness.fresh",
            f.map_or(&none, |f| &f.fresh),
            d.freshness.fresh,
        )?,
        recent: dur(
            "freshness.recent",
            f.map_or(&none, |f| &f.recent),
            d.freshness.recent,
        )?,
        old: dur(
            "freshness.old",
            f.map_or(&none, |f| &f.old),
            d.freshness.old,
        )?,
    };
    let mut stage_budgets = d.stage_budgets;
    for (name, v) in &raw.budgets {
        let i = STAGES.iter().position(|s| s == name).ok_or_else(|| {
            err(
                format!("health.budgets.{name}"),
                format!("unknown stage (the stages are {})", STAGES.join(", ")),
            )
        })?;
        stage_budgets[i] =
            Some(parse_duration(v).map_err(|e| err(format!("health.budgets.{name}"), e))?);
    }
    let cfg = HealthConfig {
        enabled: raw.enabled.unwrap_or(d.enabled),
        window: dur("window", &raw.window, d.window)?,
        tick: dur("tick", &raw.tick, d.tick)?,
        freshness,
        heartbeat_stale: dur("heartbeat_stale", &raw.heartbeat_stale, d.heartbeat_stale)?,
        min_samples: raw.min_samples.unwrap_or(d.min_samples),
        nan_critical_rate: raw.nan_critical_rate.unwrap_or(d.nan_critical_rate),
        zero_exempt: raw.zero_exempt.clone().unwrap_or(d.zero_exempt),
        nan_exempt: raw.nan_exempt.clone().unwrap_or(d.nan_exempt),
        stage_budgets,
        e2e_budget: match &raw.e2e_budget {
            Some(s) => Some(parse_duration(s).map_err(|e| err("health.e2e_budget", e))?),
            None => None,
        },
        page: raw.page.clone(),
    };
    cfg.validate()?;
    Ok(cfg)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModels {
    sjm: Option<PathBuf>,
    xgboost: Option<PathBuf>,
    lstm: Option<PathBuf>,
    lstm_bars: Option<String>,
    stability: Option<RawStability>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStability {
    min_confidence: Option<f64>,
    max_transitions_per_hour: Option<u32>,
    feature_zero_threshold: Option<f64>,
    covariance_regularization: Option<f64>,
    max_regime_distance: Option<f64>,
}

fn model_settings(raw: Option<&RawModels>) -> Result<ModelSettings, PipelineError> {
    let d = ModelSettings::default();
    let Some(raw) = raw else { return Ok(d) };
    let lstm_bars_ns = match raw.lstm_bars.as_deref() {
        None => d.lstm_bars_ns,
        Some("1s") => 1_000_000_000,
        Some("1m") => 60_000_000_000,
        Some(other) => {
            return Err(err(
                "models.lstm_bars",
                format!("unknown bar interval {other:?} (1s, 1m)"),
            ));
        }
    };
    let mut stability = d.stability;
    if let Some(s) = &raw.stability {
        if let Some(v) = s.min_confidence {
            stability.min_confidence = v;
        }
        if let Some(v) = s.max_transitions_per_hour {
            stability.max_transitions_per_hour = v;
        }
        if let Some(v) = s.feature_zero_threshold {
            stability.feature_zero_threshold = v;
        }
        if let Some(v) = s.covariance_regularization {
            stability.covariance_regularization = v;
        }
        if let Some(v) = s.max_regime_distance {
            stability.max_regime_distance = v;
        }
        stability
            .validate()
            .map_err(|e| err("models.stability", e.to_string()))?;
    }
    Ok(ModelSettings {
        sjm: raw.sjm.clone(),
        xgboost: raw.xgboost.clone(),
        lstm: raw.lstm.clone(),
        lstm_bars_ns,
        stability,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeatures {
    time_source: Option<String>,
    window_capacity: Option<usize>,
    max_instruments: Option<usize>,
    max_orders: Option<usize>,
    max_levels: Option<usize>,
    tick_size: Option<f64>,
}

fn feature_settings(raw: Option<&RawFeatures>) -> Result<FeatureSettings, PipelineError> {
    let d = FeatureSettings::default();
    let Some(raw) = raw else { return Ok(d) };
    let time_source = match &raw.time_source {
        Some(s) => s.parse().map_err(|e| err("features.time_source", e))?,
        None => d.time_source,
    };
    let at_least = |field: &str, v: Option<usize>, default: usize, min: usize| match v {
        Some(v) if v < min || v > 1 << 28 => Err(err(
            format!("features.{field}"),
            format!("must be between {min} and {}, got {v}", 1usize << 28),
        )),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    let tick_size = match raw.tick_size {
        Some(t) if !(t.is_finite() && t > 0.0 && t < 1e9) => {
            return Err(err(
                "features.tick_size",
                format!("must be a positive price, got {t}"),
            ));
        }
        Some(t) => Some((t * 1e9).round() as i64),
        None => d.tick_size,
    };
    Ok(FeatureSettings {
        time_source,
        window_capacity: at_least("window_capacity", raw.window_capacity, d.window_capacity, 2)?,
        max_instruments: at_least("max_instruments", raw.max_instruments, d.max_instruments, 1)?,
        max_orders: at_least("max_orders", raw.max_orders, d.max_orders, 1)?,
        max_levels: at_least("max_levels", raw.max_levels, d.max_levels, 1)?,
        tick_size,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLinks {
    capacity: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    core: Option<usize>,
    idle: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlowLane {
    enabled: Option<bool>,
    policy: Option<String>,
    capacity: Option<usize>,
    overflow: Option<usize>,
    work: Option<String>,
}

fn err(field: impl Into<String>, msg: impl Into<String>) -> PipelineError {
    PipelineError::config(field, msg)
}

/// Parses `10ms`, `250us`, `1s`, `100ns` (a bare number is seconds).
///
/// # Errors
/// A description of the bad value.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 100ms, 10us, 1s)"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" | "" => 1.0,
        _ => return Err(format!("bad duration unit in {s:?} (ns, us, ms, s)")),
    };
    if !value.is_finite() || value < 0.0 {
        return Err(format!("duration must be non-negative, got {s:?}"));
    }
    Duration::try_from_secs_f64(value * scale)
        .map_err(|_| format!("duration {s:?} is too long (at most {} s)", u64::MAX))
}

fn placement(
    field: &str,
    raw: Option<&RawPlacement>,
    default: Placement,
    check_cores: bool,
) -> Result<Placement, PipelineError> {
    let Some(raw) = raw else { return Ok(default) };
    let idle = match &raw.idle {
        Some(s) => s.parse().map_err(|e| err(format!("{field}.idle"), e))?,
        None => default.idle,
    };
    if let Some(core) = raw.core
        && check_cores
        && !available_cores().contains(&core)
    {
        return Err(err(
            format!("{field}.core"),
            format!(
                "core {core} does not exist or is not available to this process (cores {:?})",
                available_cores()
            ),
        ));
    }
    Ok(Placement {
        core: raw.core.or(default.core),
        idle,
    })
}

impl EngineConfig {
    /// Reads and validates a TOML profile.
    ///
    /// # Errors
    /// An unreadable file, malformed TOML, or an invalid value (the error names the field).
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        Self::load_with(path, true)
    }

    /// Reads and validates a TOML profile like [`EngineConfig::load`], except that its cores
    /// are not checked against this machine's: for inspecting a profile written for another
    /// host (`tickpipe tune check`). Such a configuration may fail to start here.
    ///
    /// # Errors
    /// As [`EngineConfig::load`], less the core availability checks.
    pub fn load_for_another_host(path: &Path) -> Result<Self, PipelineError> {
        Self::load_with(path, false)
    }

    fn load_with(path: &Path, check_cores: bool) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            err(
                path.display().to_string(),
                format!("cannot read the config: {e}"),
            )
        })?;
        let mut cfg = Self::from_toml_with(&text, check_cores).map_err(|e| match e {
            PipelineError::Config { field, msg } => PipelineError::Config {
                field: format!("{}: {field}", path.display()),
                msg,
            },
            other => other,
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        cfg.models.resolve(dir);
        if let Some(keys) = cfg
            .control
            .as_mut()
            .and_then(|c| c.api_keys_file.as_mut())
            .filter(|k| k.is_relative())
        {
            *keys = dir.join(&*keys);
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    ///
    /// # Errors
    /// Malformed TOML or an invalid value (the error names the field).
    pub fn from_toml(text: &str) -> Result<Self, PipelineError> {
        Self::from_toml_with(text, true)
    }

    fn from_toml_with(text: &str, check_cores: bool) -> Result<Self, PipelineError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let what = e.message().to_string();
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_else(|| "toml".into());
            err(at, what)
        })?;
        let d = EngineConfig::default();
        let mode = match &raw.mode {
            Some(m) => m.parse().map_err(|e| err("mode", e))?,
            None => d.mode,
        };
        let batch = raw.batch.unwrap_or(d.batch);
        if batch == 0 {
            return Err(err("batch", "must be at least 1"));
        }
        let link_capacity = raw
            .links
            .as_ref()
            .and_then(|l| l.capacity)
            .unwrap_or(d.link_capacity);
        if link_capacity < 2 {
            return Err(err(
                "links.capacity",
                format!("must be at least 2, got {link_capacity}"),
            ));
        }
        let report_interval = match &raw.report_interval {
            Some(s) => parse_duration(s).map_err(|e| err("report_interval", e))?,
            None => d.report_interval,
        };
        if report_interval.is_zero() {
            return Err(err("report_interval", "must be positive"));
        }
        if let Some(name) = raw.stages.keys().find(|k| !STAGES.contains(&k.as_str())) {
            return Err(err(
                format!("stages.{name}"),
                format!("unknown stage (the stages are {})", STAGES.join(", ")),
            ));
        }
        let mut stages = d.stages;
        for (i, name) in STAGES.iter().enumerate() {
            stages[i] = placement(
                &format!("stages.{name}"),
                raw.stages.get(*name),
                d.stages[i],
                check_cores,
            )?;
        }
        let slow_lane = match &raw.slow_lane {
            Some(s) if s.enabled.unwrap_or(true) => {
                let policy: Policy = match &s.policy {
                    Some(p) => p.parse().map_err(|e| err("slow_lane.policy", e))?,
                    None => Policy::ConflateLatest,
                };
                if policy == Policy::Backpressure {
                    return Err(err(
                        "slow_lane.policy",
                        "a slow lane must not back-pressure the main path (conflate or drop-oldest)",
                    ));
                }
                let capacity = s.capacity.unwrap_or(64);
                if capacity < 2 {
                    return Err(err(
                        "slow_lane.capacity",
                        format!("must be at least 2, got {capacity}"),
                    ));
                }
                let overflow = s.overflow.unwrap_or(4096);
                if overflow == 0 {
                    return Err(err("slow_lane.overflow", "must be at least 1"));
                }
                let work = match &s.work {
                    Some(w) => parse_duration(w).map_err(|e| err("slow_lane.work", e))?,
                    None => Duration::ZERO,
                };
                Some(SlowLane {
                    policy,
                    capacity,
                    overflow,
                    work,
                })
            }
            _ => None,
        };
        let signal_capacity = raw.signal_capacity.unwrap_or(d.signal_capacity);
        if !signal_capacity.is_power_of_two() || signal_capacity < 4096 {
            return Err(err(
                "signal_capacity",
                format!("must be a power of two of at least 4096 bytes, got {signal_capacity}"),
            ));
        }
        let cfg = EngineConfig {
            mode,
            batch,
            link_capacity,
            report_interval,
            stages,
            slow_lane,
            reporter: placement("reporter", raw.reporter.as_ref(), d.reporter, check_cores)?,
            feeder: placement("feeder", raw.feeder.as_ref(), d.feeder, check_cores)?,
            md_ring: raw.md_ring,
            signal_ring: raw.signal_ring,
            signal_capacity,
            features: feature_settings(raw.features.as_ref())?,
            models: model_settings(raw.models.as_ref())?,
            health: health_settings(raw.health.as_ref())?,
            control: match raw.control {
                Some(c) => {
                    c.validate().map_err(|e| match e {
                        PipelineError::Config { field, msg } => {
                            err(format!("control.{field}"), msg)
                        }
                        other => other,
                    })?;
                    Some(c)
                }
                None => None,
            },
            host: host_settings(raw.host.as_ref())?,
            shadow: match &raw.shadow {
                Some(r) => r.settings()?,
                None => crate::shadow::ShadowSettings::default(),
            },
        };
        cfg.validate_with(check_cores)?;
        Ok(cfg)
    }

    /// Checks what depends on several fields (also for configurations built in code).
    ///
    /// # Errors
    /// The first problem found, naming the field.
    pub fn validate(&self) -> Result<(), PipelineError> {
        self.validate_with(true)
    }

    fn validate_with(&self, check_cores: bool) -> Result<(), PipelineError> {
        self.health.validate()?;
        self.shadow.validate()?;
        if self.batch == 0 {
            return Err(err("batch", "must be at least 1"));
        }
        if self.link_capacity < 2 {
            return Err(err("links.capacity", "must be at least 2"));
        }
        for (i, p) in self.stages.iter().enumerate() {
            if let Some(core) = p.core
                && check_cores
                && !available_cores().contains(&core)
            {
                return Err(err(
                    format!("stages.{}.core", STAGES[i]),
                    format!("core {core} does not exist or is not available to this process"),
                ));
            }
        }
        if self.mode == ThreadingMode::Dedicated {
            let active = if self.effective_slow_lane().is_some() || self.shadow.enabled {
                5
            } else {
                4
            };
            let placed = STAGES.iter().zip(&self.stages).take(active);
            for (i, (name, p)) in placed.clone().enumerate() {
                if let Some((other, _)) = placed
                    .clone()
                    .take(i)
                    .find(|(_, q)| q.core.is_some() && q.core == p.core)
                {
                    return Err(err(
                        format!("stages.{name}.core"),
                        format!(
                            "core {} is already {other}'s in dedicated mode (use mode = \"shared\" to share a core)",
                            p.core.unwrap_or_default()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> String {
        EngineConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn defaults_and_full_profile() {
        assert_eq!(
            EngineConfig::from_toml("").unwrap(),
            EngineConfig::default()
        );
        let core = available_cores()[0];
        let cfg = EngineConfig::from_toml(&format!(
            r#"
            mode = "dedicated"
            batch = 64
            report_interval = "50ms"
            [links]
            capacity = 1024
            [stages.ingest]
            core = {core}
            idle = "no-op"
            [stages.health]
            idle = "backoff"
            [slow_lane]
            policy = "drop-oldest"
            work = "20us"
            [reporter]
            idle = "sleeping:5ms"
            "#
        ))
        .unwrap();
        assert_eq!(cfg.mode, ThreadingMode::Dedicated);
        assert_eq!((cfg.batch, cfg.link_capacity), (64, 1024));
        assert_eq!(cfg.stages[0].core, Some(core));
        assert_eq!(cfg.stages[0].idle, IdleStrategy::NoOp);
        assert_eq!(cfg.stages[3].idle, IdleStrategy::BACKOFF);
        let lane = cfg.slow_lane.unwrap();
        assert_eq!(
            (lane.policy, lane.work),
            (Policy::DropOldest, Duration::from_micros(20))
        );
        assert_eq!(
            cfg.reporter.idle,
            IdleStrategy::Sleeping(Duration::from_millis(5))
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        assert!(msg("[stages.risk]\ncore = 0").contains("stages.risk: unknown stage"));
        let m = msg("[stages.features]\ncore = 4096");
        assert!(
            m.contains("stages.features.core") && m.contains("core 4096"),
            "{m}"
        );
        assert!(msg("[links]\ncapacity = 0").contains("links.capacity"));
        assert!(msg("batch = 0").contains("batch"));
        let m = msg("mode = \"dedicated\"\nbatch = [");
        assert!(m.contains("line 2"), "{m}");
        assert!(msg("mode = \"turbo\"").contains("mode"));
        assert!(msg("[stages.ingest]\nidle = \"spin\"").contains("stages.ingest.idle"));
        assert!(msg("[stages.ingest]\ncpu = 1").contains("unknown field `cpu`"));
        assert!(msg("[slow_lane]\npolicy = \"backpressure\"").contains("slow_lane.policy"));
        assert!(msg("[slow_lane]\ncapacity = 1").contains("slow_lane.capacity"));
        assert!(msg("signal_capacity = 1000").contains("signal_capacity"));
        assert!(msg("report_interval = \"0ms\"").contains("report_interval"));
        assert!(msg("[features]\ntime_source = \"wall\"").contains("features.time_source"));
        assert!(msg("[features]\nwindow_capacity = 1").contains("features.window_capacity"));
        assert!(msg("[features]\nmax_orders = 0").contains("features.max_orders"));
        assert!(msg("[features]\ntick_size = -0.25").contains("features.tick_size"));
        assert!(msg("[features]\nticks = 1").contains("unknown field `ticks`"));
        let f = EngineConfig::from_toml(
            "[features]\ntime_source = \"ts_event\"\ntick_size = 0.25\nmax_instruments = 3",
        )
        .unwrap()
        .features;
        assert_eq!(
            (f.time_source, f.tick_size, f.max_instruments),
            (TimeSource::Event, Some(250_000_000), 3)
        );
        let core = available_cores()[0];
        let m = msg(&format!(
            "mode = \"dedicated\"\n[stages.ingest]\ncore = {core}\n[stages.features]\ncore = {core}"
        ));
        assert!(
            m.contains("stages.features.core") && m.contains("ingest"),
            "{m}"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("-1ms").is_err());
        // Found by the `config` fuzz target: finite but beyond `Duration`, which panicked.
        let err = parse_duration("100000000000000000000000s").expect_err("too long");
        assert!(err.contains("too long"), "{err}");
        let err = EngineConfig::from_toml("report_interval = \"100000000000000000000000\"\n")
            .expect_err("too long")
            .to_string();
        assert!(
            err.contains("report_interval") && err.contains("too long"),
            "{err}"
        );
    }

    #[test]
    fn models_table() {
        let cfg = EngineConfig::from_toml(
            r#"
            [models]
            sjm = "m/sjm"
            xgboost = "/abs/score.json"
            lstm = "lstm.onnx"
            lstm_bars = "1m"
            [models.stability]
            min_confidence = 0.8
            max_transitions_per_hour = 4
            feature_zero_threshold = 0.25
            covariance_regularization = 1e-3
            max_regime_distance = 3.5
            "#,
        )
        .unwrap();
        let m = &cfg.models;
        assert_eq!(m.lstm_bars_ns, 60_000_000_000);
        assert_eq!(
            (
                m.stability.min_confidence,
                m.stability.max_transitions_per_hour,
                m.stability.feature_zero_threshold,
                m.stability.covariance_regularization,
                m.stability.max_regime_distance
            ),
            (0.8, 4, 0.25, 1e-3, 3.5)
        );
        // A forecaster brings its lane even without a [slow_lane] table.
        assert!(cfg.slow_lane.is_none());
        assert_eq!(
            cfg.effective_slow_lane().map(|l| l.policy),
            Some(Policy::ConflateLatest)
        );
        // Relative paths are relative to the profile's folder; absolute ones stay.
        let mut m = cfg.models.clone();
        m.resolve(Path::new("/etc/tickpipe"));
        assert_eq!(m.sjm.as_deref(), Some(Path::new("/etc/tickpipe/m/sjm")));
        assert_eq!(m.xgboost.as_deref(), Some(Path::new("/abs/score.json")));
        assert!(msg("[models]\nlstm_bars = \"5m\"").contains("models.lstm_bars"));
        assert!(msg("[models]\nonnx = \"x\"").contains("unknown field"));
        let e = msg("[models.stability]\nmin_confidence = 1.5");
        assert!(
            e.contains("models.stability") && e.contains("min_confidence"),
            "{e}"
        );
        let e = msg("[models.stability]\nmax_transitions_per_hour = 0");
        assert!(e.contains("max_transitions_per_hour"), "{e}");
    }

    #[test]
    fn host_table() {
        assert_eq!(
            EngineConfig::from_toml("").unwrap().host,
            HostSettings::default()
        );
        let h = EngineConfig::from_toml(
            r#"
            [host]
            mlockall = "required"
            prefault = true
            hugepages = "on"
            realtime = false
            realtime_priority = 80
            "#,
        )
        .unwrap()
        .host;
        assert_eq!(
            (
                h.mlockall,
                h.prefault,
                h.hugepages,
                h.realtime,
                h.realtime_priority
            ),
            (Want::Required, Want::On, Want::On, Want::Off, 80)
        );
        let e = msg("[host]\nmlockall = \"always\"");
        assert!(e.contains("host.mlockall") && e.contains("always"), "{e}");
        let e = msg("[host]\nrealtime_priority = 0");
        assert!(e.contains("host.realtime_priority"), "{e}");
        assert!(msg("[host]\nrealtime_priority = 100").contains("between 1 and 99"));
        assert!(msg("[host]\nswap = \"off\"").contains("unknown field `swap`"));
        assert!(msg("[host]\nprefault = 1").contains("line 2"));
    }

    #[test]
    fn shipped_profiles_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tuning/profiles");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg = EngineConfig::load_for_another_host(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                // Where the host has the profile's cores, the ordinary load takes it too.
                let cores = cfg.stages.iter().chain([&cfg.reporter, &cfg.feeder]);
                if cores
                    .filter_map(|p| p.core)
                    .all(|c| available_cores().contains(&c))
                {
                    assert_eq!(
                        EngineConfig::load(&path).unwrap(),
                        cfg,
                        "{}",
                        path.display()
                    );
                }
                // The profiles name models relative to themselves: they must exist.
                for m in [&cfg.models.sjm, &cfg.models.xgboost, &cfg.models.lstm]
                    .into_iter()
                    .flatten()
                {
                    assert!(m.exists(), "{}: {}", path.display(), m.display());
                }
                seen += 1;
            }
        }
        assert!(seen >= 3, "expected the 2-, 4- and 8-core profiles");
        // A profile for a bigger host is refused here only for its cores.
        let big = dir.join("dedicated-8.toml");
        if available_cores().len() < 8 {
            let e = EngineConfig::load(&big).unwrap_err().to_string();
            assert!(e.contains(".core"), "{e}");
        }
    }
}
