//! Shadow mode (canary): a candidate model runs beside the live one, off the main path, on the
//! same vectors, and its agreement with the live model and its own latency are measured before
//! anyone promotes it.
//!
//! ```text
//! [inference] ─(main path)─► [health]
//!      │ every scored vector, while a candidate is set (drop-oldest, counted)
//!      └──────────────► [shadow] candidate model: compare with the live outputs the vector carries
//! ```
//!
//! - The inference stage copies each batch of scored vectors onto the `inference->shadow` link,
//!   and only while a candidate is set (one relaxed load per batch otherwise). The link is
//!   lossy: a candidate that cannot keep up loses vectors there, counted as the link's drops,
//!   and never slows the main path. The shadow stage runs on the slow lane's placement (the
//!   slow lane's thread in shared mode).
//! - A **scoring** candidate (XGBoost) is compared output by output with the live scores the
//!   vector carries: the distribution of `|candidate − live|` (HDR, in units of 1e-9, three
//!   significant digits), its maximum and the mean signed difference.
//! - A **regime** candidate (jump model) keeps its own online state and stability filter per
//!   instrument, from fresh, and is compared with the live model's labels: the share of
//!   vectors whose raw labels are equal, and the same for the stable regimes. "No label" (an
//!   input the model refuses, a regime not yet accepted) is a label like the others: two
//!   models that both refuse a vector agree on it. Labels are the fitted states' indices, so
//!   two fits only agree where they order their states alike (the fit orders them
//!   deterministically); the live model's history also differs from the candidate's fresh
//!   state, so even an identical model may disagree until their recursions meet. Vectors lost
//!   on the link leave gaps in the candidate's online state; the report carries the count.
//! - The candidate's own cost per vector is timed (HDR), as it runs here.
//!
//! A [`ShadowControl`] (taken from the running engine) binds a candidate off the hot path and
//! sends it over an SPSC command ring; what a new candidate replaces comes back over a second
//! ring and is dropped there. The stage publishes a [`ShadowSummary`] every
//! [`SUMMARY_EVERY`] and when its input ends, over an SPSC ring the control side drains: a
//! consistent snapshot, no lock.
//!
//! A promotion can be made to depend on the shadow ([`ShadowGate`]): a minimum shadow time, a
//! minimum number of compared vectors, a minimum label agreement (regime models) and a maximum
//! p99 score difference (scoring models). Each refusal names the rule.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Deserialize;
use tickpipe_models::registry::Validated;
use tickpipe_models::stability::StabilityConfig;

use crate::PipelineError;
use crate::features::TimeSource;
use crate::inference::{InstrumentSlots, MAX_REGIME_FEATURES};
use crate::link::{LinkStats, Receiver};
use crate::msg::{MAX_SCORES, NO_REGIME, Tick};
use crate::stage::Stage;
use crate::stages::ModelStats;
use crate::swap::{BoundModel, bind_regime, bind_scoring, bind_validated};

/// How often the stage publishes its summary while it compares.
pub const SUMMARY_EVERY: Duration = Duration::from_millis(10);
/// Score differences are recorded in units of this.
pub const DIFF_UNIT: f64 = 1e-9;
/// Largest recorded difference (in [`DIFF_UNIT`]s): differences above 1e3 are recorded as 1e3.
const DIFF_HIGHEST: u64 = 1_000_000_000_000;
/// Largest recorded candidate time per vector, in raw clock ticks.
const LATENCY_HIGHEST: u64 = 1 << 40;
/// Candidates that may wait in the command ring.
const COMMAND_SLOTS: usize = 4;
/// Vectors copied from the link at a time.
const BATCH: usize = 64;
/// The stage waits until this many vectors are ready (or half its link, or [`MAX_WAIT`] has
/// passed), then takes them all: few wake-ups, so that on a small host its thread idles (parks)
/// between them instead of spinning beside the main path.
const TAKE_AT: usize = 1024;
/// Longest a vector waits for the stage to take it (unless the link fills first).
const MAX_WAIT: Duration = Duration::from_millis(1);
/// Most vectors taken in one duty cycle.
const MAX_PER_CYCLE: usize = 8192;

/// The `[shadow]` table: the shadow lane and the promotion gate.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSettings {
    /// Build the shadow lane (it runs a candidate only while one is set). Default false.
    pub enabled: bool,
    /// Slots of the `inference->shadow` link. Default 4096.
    pub capacity: usize,
    /// Vectors queued beyond the link before the oldest are dropped. Default 4096.
    pub overflow: usize,
    /// The promotion gate (every rule unset by default: promotion needs no shadow).
    pub gate: ShadowGate,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            capacity: 4096,
            overflow: 4096,
            gate: ShadowGate::default(),
        }
    }
}

/// What a promotion needs from the candidate's shadow run. Unset rules are not checked; with
/// every rule unset a promotion needs no shadow at all.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShadowGate {
    /// Least time the candidate has shadowed.
    pub min_time: Option<Duration>,
    /// Fewest vectors compared.
    pub min_vectors: Option<u64>,
    /// Regime models: least share of compared vectors with equal raw labels, in [0, 1].
    pub min_agreement: Option<f64>,
    /// Scoring models: largest p99 of `|candidate − live|`.
    pub max_score_diff: Option<f64>,
}

/// The `[shadow]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShadow {
    enabled: Option<bool>,
    capacity: Option<usize>,
    overflow: Option<usize>,
    min_time: Option<String>,
    min_vectors: Option<u64>,
    min_agreement: Option<f64>,
    max_score_diff: Option<f64>,
}

impl RawShadow {
    /// The settings, defaults filled in (ranges are checked by [`ShadowSettings::validate`]).
    pub(crate) fn settings(&self) -> Result<ShadowSettings, PipelineError> {
        let d = ShadowSettings::default();
        let min_time = match &self.min_time {
            Some(t) => Some(
                crate::config::parse_duration(t)
                    .map_err(|e| PipelineError::config("shadow.min_time", e))?,
            ),
            None => None,
        };
        Ok(ShadowSettings {
            enabled: self.enabled.unwrap_or(d.enabled),
            capacity: self.capacity.unwrap_or(d.capacity),
            overflow: self.overflow.unwrap_or(d.overflow),
            gate: ShadowGate {
                min_time,
                min_vectors: self.min_vectors,
                min_agreement: self.min_agreement,
                max_score_diff: self.max_score_diff,
            },
        })
    }
}

impl ShadowSettings {
    /// Checks the sizes and the gate's ranges.
    ///
    /// # Errors
    /// A link capacity below 2, a zero overflow, or a gate value out of range; the error names
    /// the field.
    pub fn validate(&self) -> Result<(), PipelineError> {
        if self.capacity < 2 {
            return Err(PipelineError::config(
                "shadow.capacity",
                format!("{} (at least 2)", self.capacity),
            ));
        }
        if self.overflow == 0 {
            return Err(PipelineError::config("shadow.overflow", "0 (at least 1)"));
        }
        if !self.enabled && self.gate.is_set() {
            return Err(PipelineError::config(
                "shadow.enabled",
                "false, but a promotion gate is set: the gate needs the shadow lane (enabled = true)",
            ));
        }
        if let Some(a) = self.gate.min_agreement
            && !(0.0..=1.0).contains(&a)
        {
            return Err(PipelineError::config(
                "shadow.min_agreement",
                format!("{a} (a share in [0, 1])"),
            ));
        }
        if let Some(d) = self.gate.max_score_diff
            && !(d.is_finite() && d >= 0.0)
        {
            return Err(PipelineError::config(
                "shadow.max_score_diff",
                format!("{d} (a finite difference ≥ 0)"),
            ));
        }
        Ok(())
    }
}

/// Which kind of model a candidate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateKind {
    /// A scoring model (XGBoost), compared score by score.
    Scoring,
    /// A regime model (jump model), compared label by label.
    Regime,
}

impl CandidateKind {
    /// `scoring` or `regime`.
    pub fn name(self) -> &'static str {
        match self {
            CandidateKind::Scoring => "scoring",
            CandidateKind::Regime => "regime",
        }
    }
}

/// A bound candidate model (a scoring or a regime model).
pub type Candidate = BoundModel;

fn kind(c: &Candidate) -> CandidateKind {
    match c {
        BoundModel::Scoring(_) => CandidateKind::Scoring,
        BoundModel::Regime(_) => CandidateKind::Regime,
    }
}

/// A command to the shadow stage (or, on the way back, the candidate it replaced).
#[derive(Debug)]
struct Command {
    /// The candidate to run from now on (`None`: stop shadowing).
    candidate: Option<Candidate>,
    /// Identifies the run in the summaries.
    generation: u64,
}

/// What the shadow stage has measured for the current candidate: a consistent snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ShadowSummary {
    /// The run this belongs to (each candidate set is a new run).
    pub generation: u64,
    /// The candidate's kind (`None` when no candidate is set).
    pub kind: Option<CandidateKind>,
    /// The candidate's version.
    pub version: u32,
    /// Vectors the stage took while this candidate was set.
    pub seen: u64,
    /// Vectors compared with the live model.
    pub compared: u64,
    /// Vectors the live model did not answer (no live model of this kind, or fewer outputs).
    pub no_live: u64,
    /// Vectors of instruments that found no free slot (regime candidates).
    pub no_slot: u64,
    /// Regime: compared vectors whose raw labels are equal.
    pub agreed: u64,
    /// Regime: compared vectors whose stable regimes are equal.
    pub stable_agreed: u64,
    /// Scoring: `|candidate − live|` at p50, p99, p99.9 and the maximum (one per output).
    pub diff_p50: f64,
    /// See `diff_p50`.
    pub diff_p99: f64,
    /// See `diff_p50`.
    pub diff_p999: f64,
    /// See `diff_p50` (exact, not bucketed).
    pub diff_max: f64,
    /// Scoring: mean of `candidate − live`.
    pub diff_mean: f64,
    /// Candidate time per vector, ns: p50, p99, p99.9, max.
    pub latency_ns: [u64; 4],
}

impl ShadowSummary {
    /// Share of compared vectors with equal raw labels (NaN before any).
    pub fn agreement(&self) -> f64 {
        self.agreed as f64 / self.compared as f64
    }

    /// Share of compared vectors with equal stable regimes (NaN before any).
    pub fn stable_agreement(&self) -> f64 {
        self.stable_agreed as f64 / self.compared as f64
    }
}

/// The comparison itself, without threads: runs a candidate on scored vectors and measures it.
#[derive(Debug)]
pub struct ShadowEngine {
    candidate: Option<Candidate>,
    slots: InstrumentSlots,
    time_source: TimeSource,
    x: [f64; MAX_REGIME_FEATURES],
    out: [f32; MAX_SCORES],
    diffs: Histogram<u64>,
    latency: Histogram<u64>,
    diff_max: f64,
    diff_sum: f64,
    diff_n: u64,
    s: ShadowSummary,
}

impl ShadowEngine {
    /// An engine with room for `max_instruments` instruments' regime state.
    ///
    /// # Errors
    /// Histograms that cannot be made (never with these bounds).
    pub fn new(max_instruments: usize, time_source: TimeSource) -> Result<Self, PipelineError> {
        let hist = |high| {
            Histogram::new_with_bounds(1, high, 3)
                .map_err(|e| PipelineError::Internal(format!("shadow histogram: {e}")))
        };
        Ok(Self {
            candidate: None,
            slots: InstrumentSlots::new(max_instruments),
            time_source,
            x: [0.0; MAX_REGIME_FEATURES],
            out: [f32::NAN; MAX_SCORES],
            diffs: hist(DIFF_HIGHEST)?,
            latency: hist(LATENCY_HIGHEST)?,
            diff_max: 0.0,
            diff_sum: 0.0,
            diff_n: 0,
            s: ShadowSummary::default(),
        })
    }

    /// Sets (or with `None` clears) the candidate, starting run `generation` from zero; returns
    /// the candidate it replaces. Allocates and frees nothing.
    pub fn set(&mut self, candidate: Option<Candidate>, generation: u64) -> Option<Candidate> {
        let old = std::mem::replace(&mut self.candidate, candidate);
        self.slots.clear();
        self.diffs.reset();
        self.latency.reset();
        self.diff_max = 0.0;
        self.diff_sum = 0.0;
        self.diff_n = 0;
        self.s = ShadowSummary {
            generation,
            kind: self.candidate.as_ref().map(kind),
            version: self.candidate.as_ref().map_or(0, Candidate::version),
            ..ShadowSummary::default()
        };
        old
    }

    /// Runs the candidate on one scored vector (its live outputs filled in) and compares.
    #[inline]
    pub fn on_tick(&mut self, t: &Tick) {
        let Some(c) = &mut self.candidate else {
            return;
        };
        self.s.seen += 1;
        match c {
            BoundModel::Scoring(m) => {
                let k = m.model.n_outputs();
                m.model.predict_row(&t.values, &m.cols, &mut self.out[..k]);
                if t.scoring_version == 0 || usize::from(t.n_scores) < k {
                    self.s.no_live += 1;
                    return;
                }
                self.s.compared += 1;
                for (&cand, &live) in self.out[..k].iter().zip(&t.scores[..k]) {
                    let d = f64::from(cand) - f64::from(live);
                    let a = d.abs();
                    if a.is_nan() {
                        // One side non-finite: the largest difference there is.
                        self.diff_max = f64::INFINITY;
                        self.diffs.saturating_record(DIFF_HIGHEST);
                        continue;
                    }
                    if a > self.diff_max {
                        self.diff_max = a;
                    }
                    self.diff_sum += d;
                    self.diff_n += 1;
                    self.diffs.saturating_record((a / DIFF_UNIT).round() as u64);
                }
            }
            BoundModel::Regime(r) => {
                let Some(slot) = self.slots.claim(t.instrument_id) else {
                    self.s.no_slot += 1;
                    return;
                };
                let ts = self.time_source.pick(t.ts_recv, t.ts_event);
                let (step, stable) = r.label(slot, &t.values, ts, &mut self.x);
                if t.regime_version == 0 {
                    self.s.no_live += 1;
                    return;
                }
                self.s.compared += 1;
                let label = if step.valid { step.label } else { NO_REGIME };
                self.s.agreed += u64::from(label == t.regime);
                self.s.stable_agreed += u64::from(stable.regime == t.stable_regime);
            }
        }
    }

    /// Records the candidate's time for one vector, in raw clock ticks.
    #[inline]
    pub fn record_time(&mut self, ticks: u64) {
        if self.candidate.is_some() {
            self.latency.saturating_record(ticks.max(1));
        }
    }

    /// Whether a candidate is set.
    pub fn is_active(&self) -> bool {
        self.candidate.is_some()
    }

    /// The measurements so far, latencies converted with `clock`.
    pub fn summary(&self, clock: &quanta::Clock) -> ShadowSummary {
        let mut s = self.s;
        if !self.diffs.is_empty() {
            let q = |p| self.diffs.value_at_quantile(p) as f64 * DIFF_UNIT;
            s.diff_p50 = q(0.5).min(self.diff_max);
            s.diff_p99 = q(0.99).min(self.diff_max);
            s.diff_p999 = q(0.999).min(self.diff_max);
            s.diff_max = self.diff_max;
        }
        if self.diff_n > 0 {
            s.diff_mean = self.diff_sum / self.diff_n as f64;
        }
        if !self.latency.is_empty() {
            let ns = |t: u64| clock.delta_as_nanos(0, t);
            s.latency_ns = [
                ns(self.latency.value_at_quantile(0.5)),
                ns(self.latency.value_at_quantile(0.99)),
                ns(self.latency.value_at_quantile(0.999)),
                ns(self.latency.max()),
            ];
        }
        s
    }
}

/// The stage's end of the shadow's rings.
#[derive(Debug)]
pub struct ShadowPort {
    commands: rtrb::Consumer<Box<Command>>,
    garbage: rtrb::Producer<Box<Command>>,
    summaries: rtrb::Producer<ShadowSummary>,
}

/// The inference stage's end: whether to copy vectors to the shadow, and where.
#[derive(Debug)]
pub struct ShadowTap {
    /// The lossy link to the shadow stage.
    pub tx: crate::link::Sender<Tick>,
    /// Set while a candidate runs.
    pub active: Arc<AtomicBool>,
}

/// Why a candidate was not set.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// The model does not fit the engine (see the message).
    #[error("{0}")]
    Invalid(#[from] PipelineError),
    /// Earlier commands are still waiting for the shadow stage.
    #[error("the shadow stage has not yet taken the last {COMMAND_SLOTS} commands")]
    Busy,
}

/// The caller's end: sets and clears candidates, reads their measurements, checks the gate.
#[derive(Debug)]
pub struct ShadowControl {
    commands: rtrb::Producer<Box<Command>>,
    garbage: rtrb::Consumer<Box<Command>>,
    summaries: rtrb::Consumer<ShadowSummary>,
    active: Arc<AtomicBool>,
    link: Arc<LinkStats>,
    stability: StabilityConfig,
    slots: usize,
    generation: u64,
    current: Option<Running>,
    latest: ShadowSummary,
    gate: ShadowGate,
}

/// The candidate set last, as the control side knows it.
#[derive(Debug, Clone)]
struct Running {
    name: String,
    version: String,
    started: Instant,
    /// The link's drop count when it started.
    dropped_before: u64,
}

/// A candidate's shadow run as the control side reports it.
#[derive(Debug, Clone)]
pub struct ShadowReport {
    /// Registry name of the candidate.
    pub name: String,
    /// Registry version of the candidate.
    pub version: String,
    /// Time since it was set.
    pub elapsed: Duration,
    /// Vectors lost on the link since it was set (they were never compared).
    pub dropped: u64,
    /// The stage's latest measurements (all zero until its first summary arrives).
    pub summary: ShadowSummary,
}

impl ShadowReport {
    /// The report as JSON (the control plane's `GET /models/shadow`).
    pub fn to_json(&self, gate: &ShadowGate) -> serde_json::Value {
        let s = &self.summary;
        let finite = |v: f64| if v.is_finite() { Some(v) } else { None };
        serde_json::json!({
            "name": self.name,
            "version": self.version,
            "kind": s.kind.map(CandidateKind::name),
            "running": true,
            "seconds": self.elapsed.as_secs_f64(),
            "seen": s.seen,
            "compared": s.compared,
            "no_live": s.no_live,
            "no_slot": s.no_slot,
            "dropped": self.dropped,
            "agreement": finite(s.agreement()),
            "stable_agreement": finite(s.stable_agreement()),
            "score_diff": {
                "p50": s.diff_p50, "p99": s.diff_p99, "p999": s.diff_p999,
                "max": finite(s.diff_max), "mean": s.diff_mean,
            },
            "latency_ns": {
                "p50": s.latency_ns[0], "p99": s.latency_ns[1],
                "p999": s.latency_ns[2], "max": s.latency_ns[3],
            },
            "promotable": gate.check(self).err().map_or(serde_json::Value::Bool(true), |e| {
                serde_json::Value::String(e)
            }),
        })
    }
}

impl ShadowGate {
    /// Whether any rule is set (a promotion then needs a passing shadow run).
    pub fn is_set(&self) -> bool {
        self.min_time.is_some()
            || self.min_vectors.is_some()
            || self.min_agreement.is_some()
            || self.max_score_diff.is_some()
    }

    /// Checks a run against every set rule.
    ///
    /// # Errors
    /// The first rule the run fails, named (`shadow.min_time: ...`).
    pub fn check(&self, r: &ShadowReport) -> Result<(), String> {
        let s = &r.summary;
        if let Some(t) = self.min_time
            && r.elapsed < t
        {
            return Err(format!(
                "shadow.min_time: {:.1} s of shadowing, {:.1} s needed",
                r.elapsed.as_secs_f64(),
                t.as_secs_f64()
            ));
        }
        if let Some(n) = self.min_vectors
            && s.compared < n
        {
            return Err(format!(
                "shadow.min_vectors: {} vectors compared, {n} needed",
                s.compared
            ));
        }
        if let Some(a) = self.min_agreement {
            if s.kind != Some(CandidateKind::Regime) {
                // Not a rule for this kind of model.
            } else if s.compared == 0 || s.agreement() < a {
                return Err(format!(
                    "shadow.min_agreement: labels agree on {:.4} of {} vectors, {a} needed",
                    if s.compared == 0 { 0.0 } else { s.agreement() },
                    s.compared
                ));
            }
        }
        if let Some(d) = self.max_score_diff
            && s.kind == Some(CandidateKind::Scoring)
            && (s.compared == 0 || s.diff_p99.is_nan() || s.diff_p99 > d)
        {
            return Err(format!(
                "shadow.max_score_diff: p99 |candidate - live| is {:e} over {} vectors, at most {d:e} allowed",
                s.diff_p99, s.compared
            ));
        }
        Ok(())
    }
}

/// The two ends of the shadow's rings: for the control side, the stage and the inference stage.
pub fn shadow_channel(
    settings: &ShadowSettings,
    stability: StabilityConfig,
    slots: usize,
    tx: crate::link::Sender<Tick>,
) -> (ShadowControl, ShadowPort, ShadowTap) {
    let (ctx, crx) = rtrb::RingBuffer::new(COMMAND_SLOTS);
    let (gtx, grx) = rtrb::RingBuffer::new(2 * COMMAND_SLOTS);
    let (stx, srx) = rtrb::RingBuffer::new(8);
    let active = Arc::new(AtomicBool::new(false));
    let link = tx.stats().clone();
    (
        ShadowControl {
            commands: ctx,
            garbage: grx,
            summaries: srx,
            active: active.clone(),
            link,
            stability,
            slots,
            generation: 0,
            current: None,
            latest: ShadowSummary::default(),
            gate: settings.gate.clone(),
        },
        ShadowPort {
            commands: crx,
            garbage: gtx,
            summaries: stx,
        },
        ShadowTap { tx, active },
    )
}

impl ShadowControl {
    /// Binds `v` (a registry-validated scoring or regime model) and makes it the candidate,
    /// replacing any other. `name` and `version` are how it is reported and promoted.
    ///
    /// # Errors
    /// A forecaster (not shadowed), a version that is not a number, a model that does not fit,
    /// or a full command ring.
    pub fn start_validated(&mut self, v: Validated) -> Result<(), ShadowError> {
        let name = v.manifest.name.clone();
        let version = v.manifest.model_version.clone();
        let candidate = bind_validated(
            v,
            &self.stability,
            self.slots,
            "shadowed (only scoring and regime models are)",
        )?;
        self.start(candidate, &name, &version)
    }

    /// Binds a scoring model and makes it the candidate, reported as `name` `v<version>`.
    ///
    /// # Errors
    /// A model that does not fit the feature schema or the signal, or a full command ring.
    pub fn start_scoring(
        &mut self,
        model: tickpipe_models::xgb::XgbModel,
        name: &str,
        version: u32,
    ) -> Result<(), ShadowError> {
        let c = BoundModel::Scoring(bind_scoring(model, version)?);
        self.start(c, name, &format!("v{version}"))
    }

    /// Binds a regime model (fresh state per instrument) and makes it the candidate, reported
    /// as `name` `v<version>`.
    ///
    /// # Errors
    /// A model that does not fit the feature schema, or a full command ring.
    pub fn start_regime(
        &mut self,
        model: tickpipe_models::sjm::SjmModel,
        name: &str,
        version: u32,
    ) -> Result<(), ShadowError> {
        let c = BoundModel::Regime(bind_regime(model, &self.stability, self.slots, version)?);
        self.start(c, name, &format!("v{version}"))
    }

    /// Makes `candidate` the shadow's candidate (reported as `name` `version`).
    ///
    /// # Errors
    /// A full command ring.
    pub fn start(
        &mut self,
        candidate: Candidate,
        name: &str,
        version: &str,
    ) -> Result<(), ShadowError> {
        self.send(Some(candidate))?;
        self.current = Some(Running {
            name: name.to_string(),
            version: version.to_string(),
            started: Instant::now(),
            dropped_before: self.link.counts().dropped,
        });
        // Relaxed: the inference stage starts copying vectors soon; which vector is first does
        // not matter (the candidate compares whatever it gets).
        self.active.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Stops shadowing; returns the run's last report, if one was running.
    ///
    /// # Errors
    /// A full command ring.
    pub fn stop(&mut self) -> Result<Option<ShadowReport>, ShadowError> {
        let last = self.report();
        if self.current.is_none() {
            return Ok(None);
        }
        // Refused (a full command ring): nothing changes, the candidate keeps running.
        self.send(None)?;
        self.active.store(false, Ordering::Relaxed);
        self.current = None;
        Ok(last)
    }

    fn send(&mut self, candidate: Option<Candidate>) -> Result<(), ShadowError> {
        self.collect();
        let generation = self.generation + 1;
        self.commands
            .push(Box::new(Command {
                candidate,
                generation,
            }))
            .map_err(|_| ShadowError::Busy)?;
        self.generation = generation;
        Ok(())
    }

    /// Drops what new candidates replaced; returns how many.
    pub fn collect(&mut self) -> usize {
        let mut n = 0;
        while let Ok(old) = self.garbage.pop() {
            drop(old);
            n += 1;
        }
        n
    }

    /// The running candidate's report (`None` when none is set).
    pub fn report(&mut self) -> Option<ShadowReport> {
        while let Ok(s) = self.summaries.pop() {
            if s.generation == self.generation {
                self.latest = s;
            }
        }
        let r = self.current.as_ref()?;
        let summary = if self.latest.generation == self.generation {
            self.latest
        } else {
            ShadowSummary {
                generation: self.generation,
                ..ShadowSummary::default()
            }
        };
        Some(ShadowReport {
            name: r.name.clone(),
            version: r.version.clone(),
            elapsed: r.started.elapsed(),
            dropped: self.link.counts().dropped.saturating_sub(r.dropped_before),
            summary,
        })
    }

    /// The promotion gate.
    pub fn gate(&self) -> &ShadowGate {
        &self.gate
    }

    /// Whether promoting `name` `version` is allowed by the gate: with no rule set, always;
    /// otherwise it must be the running candidate and pass every rule.
    ///
    /// # Errors
    /// Why not, naming the rule.
    pub fn may_promote(&mut self, name: &str, version: &str) -> Result<(), String> {
        if !self.gate.is_set() {
            return Ok(());
        }
        let Some(r) = self.report() else {
            return Err(format!(
                "shadow.required: {name} {version} has not shadowed (POST /models/{name}/shadow first)"
            ));
        };
        if r.name != name || r.version != version {
            return Err(format!(
                "shadow.required: the candidate shadowing is {} {}, not {name} {version}",
                r.name, r.version
            ));
        }
        self.gate.check(&r)
    }
}

/// The shadow stage: runs the candidate on what the inference stage copies to it.
pub struct ShadowStage {
    input: Receiver<Tick>,
    port: ShadowPort,
    engine: ShadowEngine,
    buf: Vec<Tick>,
    clock: quanta::Clock,
    every_ticks: u64,
    wait_ticks: u64,
    take_at: usize,
    last_take: u64,
    last_summary: u64,
    dirty: bool,
    done: bool,
    stats: Arc<ModelStats<ShadowSummary>>,
}

impl std::fmt::Debug for ShadowStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowStage").finish_non_exhaustive()
    }
}

impl ShadowStage {
    /// A stage comparing on `engine`, fed by `input`, commanded through `port`; its last
    /// summary goes to `stats` when its input ends.
    pub fn new(
        input: Receiver<Tick>,
        port: ShadowPort,
        engine: ShadowEngine,
        clock: quanta::Clock,
        stats: Arc<ModelStats<ShadowSummary>>,
    ) -> Self {
        let per_ms = crate::stages::clock_ticks_per_ms(&clock);
        let every_ticks = per_ms.saturating_mul(SUMMARY_EVERY.as_micros() as u64) / 1000;
        let wait_ticks = per_ms.saturating_mul(MAX_WAIT.as_micros() as u64) / 1000;
        // A link smaller than the threshold is taken from when half full.
        let take_at = TAKE_AT.min((input.stats().counts().capacity / 2).max(1));
        Self {
            input,
            port,
            engine,
            buf: vec![Tick::default(); BATCH],
            clock,
            every_ticks,
            wait_ticks,
            take_at,
            last_take: 0,
            last_summary: 0,
            dirty: false,
            done: false,
            stats,
        }
    }

    fn publish(&mut self, now: u64) {
        // A full ring means the control side has not read lately; it only wants the newest,
        // and the next publication comes soon.
        let _ = self.port.summaries.push(self.engine.summary(&self.clock));
        self.last_summary = now;
        self.dirty = false;
    }
}

impl Stage for ShadowStage {
    fn role_name(&self) -> &str {
        "shadow"
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.buf.fill(Tick::default());
        Ok(())
    }

    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        let mut work = 0;
        if !self.port.garbage.is_full()
            && let Ok(mut cmd) = self.port.commands.pop()
        {
            let old = self.engine.set(cmd.candidate.take(), cmd.generation);
            cmd.candidate = old;
            // Cannot fail: checked for room above, and this stage is the only producer.
            let _ = self.port.garbage.push(cmd);
            self.dirty = true;
            work += 1;
        }
        let mut t0 = self.clock.raw();
        let ready = self.input.available();
        let finished = ready == 0 && self.input.is_finished();
        let due = ready >= self.take_at || t0.wrapping_sub(self.last_take) >= self.wait_ticks;
        let mut n = 0;
        if ready > 0 && due {
            self.last_take = t0;
            while n < MAX_PER_CYCLE {
                let got = self.input.recv(&mut self.buf);
                if got == 0 {
                    break;
                }
                for t in &self.buf[..got] {
                    self.engine.on_tick(t);
                    let t1 = self.clock.raw();
                    self.engine.record_time(t1.saturating_sub(t0));
                    t0 = t1;
                }
                n += got;
            }
            self.dirty = self.engine.is_active();
        }
        if self.dirty && t0.wrapping_sub(self.last_summary) >= self.every_ticks {
            self.publish(t0);
        }
        if finished {
            self.publish(t0);
            self.stats.set(self.engine.summary(&self.clock));
            self.done = true;
        }
        work + n
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(
        kind: CandidateKind,
        compared: u64,
        agreed: u64,
        p99: f64,
        secs: u64,
    ) -> ShadowReport {
        ShadowReport {
            name: "m".into(),
            version: "v2".into(),
            elapsed: Duration::from_secs(secs),
            dropped: 0,
            summary: ShadowSummary {
                kind: Some(kind),
                compared,
                agreed,
                diff_p99: p99,
                ..ShadowSummary::default()
            },
        }
    }

    #[test]
    fn each_gate_rule_is_checked_and_named() {
        let gate = ShadowGate {
            min_time: Some(Duration::from_secs(60)),
            min_vectors: Some(1000),
            min_agreement: Some(0.95),
            max_score_diff: Some(1e-3),
        };
        assert!(gate.is_set());
        let ok_regime = report(CandidateKind::Regime, 2000, 1950, 0.0, 61);
        assert_eq!(gate.check(&ok_regime), Ok(()));
        let ok_scoring = report(CandidateKind::Scoring, 2000, 0, 1e-4, 61);
        assert_eq!(
            gate.check(&ok_scoring),
            Ok(()),
            "agreement is a regime rule"
        );
        let cases = [
            (
                report(CandidateKind::Regime, 2000, 1950, 0.0, 59),
                "shadow.min_time",
            ),
            (
                report(CandidateKind::Regime, 999, 999, 0.0, 61),
                "shadow.min_vectors",
            ),
            (
                report(CandidateKind::Regime, 2000, 1899, 0.0, 61),
                "shadow.min_agreement",
            ),
            (
                report(CandidateKind::Scoring, 2000, 0, 2e-3, 61),
                "shadow.max_score_diff",
            ),
            (
                report(CandidateKind::Scoring, 2000, 0, f64::NAN, 61),
                "shadow.max_score_diff",
            ),
        ];
        for (r, rule) in cases {
            let e = gate.check(&r).unwrap_err();
            assert!(e.starts_with(rule), "{rule}: {e}");
        }
        let none = ShadowGate::default();
        assert!(!none.is_set());
        assert_eq!(
            none.check(&report(CandidateKind::Regime, 0, 0, 0.0, 0)),
            Ok(())
        );
    }

    #[test]
    fn settings_refuse_out_of_range_values() {
        let bad = [
            (
                ShadowSettings {
                    capacity: 1,
                    ..Default::default()
                },
                "shadow.capacity",
            ),
            (
                ShadowSettings {
                    overflow: 0,
                    ..Default::default()
                },
                "shadow.overflow",
            ),
            (
                ShadowSettings {
                    enabled: true,
                    gate: ShadowGate {
                        min_agreement: Some(1.5),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "shadow.min_agreement",
            ),
            (
                ShadowSettings {
                    enabled: true,
                    gate: ShadowGate {
                        max_score_diff: Some(-1.0),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "shadow.max_score_diff",
            ),
            (
                ShadowSettings {
                    gate: ShadowGate {
                        min_vectors: Some(10),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "shadow.enabled",
            ),
        ];
        for (s, field) in bad {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
        assert!(ShadowSettings::default().validate().is_ok());
    }

    #[test]
    fn config_reads_the_shadow_table() {
        let cfg = crate::EngineConfig::from_toml(
            "[shadow]\nenabled = true\ncapacity = 64\nmin_time = \"2s\"\nmin_vectors = 10\n\
             min_agreement = 0.9\nmax_score_diff = 1e-4\n",
        )
        .unwrap();
        assert!(cfg.shadow.enabled);
        assert_eq!(cfg.shadow.capacity, 64);
        let g = &cfg.shadow.gate;
        assert_eq!(g.min_time, Some(Duration::from_secs(2)));
        assert_eq!(
            (g.min_vectors, g.min_agreement, g.max_score_diff),
            (Some(10), Some(0.9), Some(1e-4))
        );
        let e = crate::EngineConfig::from_toml("[shadow]\nenabled = true\nmin_agreement = 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shadow.min_agreement"), "{e}");
        let e = crate::EngineConfig::from_toml("[shadow]\nenabled = true\nmin_time = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("shadow.min_time"), "{e}");
        let e = crate::EngineConfig::from_toml("[shadow]\nagreement = 0.9\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
