//! Dependency-ordered start-up of the engine's components, with timeouts, retries and isolation of
//! optional parts.
//!
//! A [`Component`] is anything that must be brought up before the engine trades (the market-data
//! ring attach, a model load, the control server, the recorder, ...). Each is added to an
//! [`Orchestrator`] with the names of the components it depends on and whether it is optional.
//! [`Orchestrator::start`] then:
//!
//! 1. validates the graph: names are non-empty and unique, every dependency exists, and there is
//!    no cycle ([`StartError::Cycle`] names one);
//! 2. sorts the components into levels (level 0 has no dependencies; a component's level is one
//!    more than its deepest dependency's);
//! 3. starts the components of one level in parallel, each on its own thread, level after level,
//!    so a component starts only once everything it depends on is running;
//! 4. runs each attempt (`start`, then `health_check`) on a worker thread under the component's
//!    timeout, and retries a failed attempt after an exponential backoff ([`RetryPolicy`]);
//! 5. aborts if a required component finally fails: the components already running are stopped
//!    in reverse start order and the error carries the full [`StartupReport`] and the
//!    [`ShutdownReport`] of that roll-back. An optional component that fails is isolated instead:
//!    optional components that depend on it are skipped, and start-up goes on. A *required*
//!    component that depends on an optional one that is not running aborts start-up
//!    ([`AbortCause::DependencyUnavailable`]): it cannot run without it.
//!
//! The result is a [`Running`] set of components and the report of how start-up went, printable
//! as a table (`Display`) or serializable (serde) for a `/health` endpoint. [`Running::stop`] (or
//! dropping it) stops the components in reverse start order.
//!
//! # Timeouts
//!
//! An attempt that outlives its timeout cannot be interrupted: it is abandoned on its worker
//! thread, which owns the component from then on, so the component is not retried and ends
//! [`ComponentState::TimedOut`]. If the abandoned `start` later returns `Ok` (and its health check
//! passes), the worker thread calls the component's `stop` itself before dropping it, so a late
//! start does not leak what it acquired.
//!
//! # Handing outputs on
//!
//! The orchestrator owns the components while they run, so what a component builds (an attached
//! ring, a loaded model) travels through an [`Output`]: a shared slot the component fills in
//! `start`. The caller keeps a clone of the slot and takes the value after start-up; a dependent
//! component holding another clone can read it in its own `start`, because it starts only after
//! the producer is running.
//!
//! ```
//! use std::time::Duration;
//! use tickpipe_pipeline::orchestrator::{Component, Orchestrator, Output, RetryPolicy};
//!
//! struct Ring { out: Output<Vec<u8>> }
//! impl Component for Ring {
//!     fn name(&self) -> &str { "ring" }
//!     fn start(&mut self) -> Result<(), String> { self.out.put(vec![0; 64]); Ok(()) }
//!     fn stop(&mut self) {}
//! }
//!
//! struct Reader { ring: Output<Vec<u8>>, len: Output<usize> }
//! impl Component for Reader {
//!     fn name(&self) -> &str { "reader" }
//!     fn start(&mut self) -> Result<(), String> {
//!         let len = self.ring.with(|r| r.len()).ok_or("ring not attached")?;
//!         self.len.put(len);
//!         Ok(())
//!     }
//!     fn stop(&mut self) {}
//! }
//!
//! let policy = RetryPolicy {
//!     backoff: Duration::from_millis(1),
//!     timeout: Duration::from_secs(5),
//!     ..RetryPolicy::default()
//! };
//! let (ring, len) = (Output::new(), Output::new());
//! let mut orch = Orchestrator::new(policy);
//! orch.add(Ring { out: ring.clone() }, &[], false);
//! orch.add(Reader { ring: ring.clone(), len: len.clone() }, &["ring"], false);
//! let running = orch.start().expect("start-up");
//! assert_eq!(running.report().start_order, ["ring", "reader"]);
//! assert_eq!(len.take(), Some(64));
//! let buffer = ring.take().expect("the ring's output");
//! assert_eq!(buffer.len(), 64);
//! let stopped = running.stop();
//! assert_eq!(stopped.stop_order(), ["reader", "ring"]);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize, Serializer};

use crate::config::parse_duration;

/// A part of the engine brought up by the [`Orchestrator`].
///
/// `start` and `health_check` run on a worker thread under the component's timeout, so they may
/// block. A panic in either counts as a failed attempt.
pub trait Component: Send {
    /// The component's unique name, used for dependencies, reports and its start-up thread.
    fn name(&self) -> &str;

    /// Brings the component up.
    ///
    /// # Errors
    /// Why it could not start; the attempt is retried under the [`RetryPolicy`]. A failed `start`
    /// should release what it acquired: `stop` is not called after it.
    fn start(&mut self) -> Result<(), String>;

    /// Checks a started component before it is marked running.
    ///
    /// # Errors
    /// Why it is unhealthy. This counts as a failed attempt: the component is stopped, and started
    /// again on the next attempt.
    fn health_check(&mut self) -> Result<(), String> {
        Ok(())
    }

    /// Stops a started component.
    fn stop(&mut self);
}

impl<C: Component + ?Sized> Component for Box<C> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn start(&mut self) -> Result<(), String> {
        (**self).start()
    }
    fn health_check(&mut self) -> Result<(), String> {
        (**self).health_check()
    }
    fn stop(&mut self) {
        (**self).stop();
    }
}

/// A shared slot through which a component hands what it built to later components and to the
/// caller (see the [module docs](self)). Clones share the slot.
#[derive(Debug)]
pub struct Output<T>(Arc<Mutex<Option<T>>>);

impl<T> Clone for Output<T> {
    fn clone(&self) -> Self {
        Output(Arc::clone(&self.0))
    }
}

impl<T> Default for Output<T> {
    fn default() -> Self {
        Output(Arc::new(Mutex::new(None)))
    }
}

impl<T> Output<T> {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<T>> {
        // A panic while the slot was held (caught as a failed attempt) leaves a plain value
        // behind, never a torn one: nothing here can panic halfway through a write.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores `value`, returning what the slot held before.
    pub fn put(&self, value: T) -> Option<T> {
        self.lock().replace(value)
    }

    /// Takes the value out, leaving the slot empty.
    pub fn take(&self) -> Option<T> {
        self.lock().take()
    }

    /// Whether the slot holds a value.
    pub fn is_set(&self) -> bool {
        self.lock().is_some()
    }

    /// Runs `f` on the value in place, if there is one.
    pub fn with<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        self.lock().as_ref().map(f)
    }

    /// A clone of the value, if there is one.
    pub fn get(&self) -> Option<T>
    where
        T: Clone,
    {
        self.lock().clone()
    }
}

/// How often and how patiently a component is started.
///
/// Deserializes from a table whose durations are strings (`"10ms"`, `"1s"`, as in the engine
/// profile); every field may be left out:
///
/// ```toml
/// max_attempts = 3
/// backoff = "1s"        # before the 2nd attempt
/// backoff_factor = 2.0  # each further wait is this many times the previous one
/// max_backoff = "30s"   # cap on one wait
/// timeout = "30s"       # per attempt, start and health check together
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "RawRetryPolicy")]
pub struct RetryPolicy {
    /// Attempts in all, at least 1.
    pub max_attempts: u32,
    /// The wait before the second attempt.
    pub backoff: Duration,
    /// Growth of the wait from one retry to the next, finite and at least 1.
    pub backoff_factor: f64,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// How long one attempt (start and health check) may take before it is abandoned; non-zero.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, waits of 1 s then 2 s (factor 2, capped at 30 s), 30 s per attempt.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(1),
            backoff_factor: 2.0,
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// Checks the values.
    ///
    /// # Errors
    /// What is wrong: no attempts, a zero timeout, or a factor below 1 or not finite.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("timeout must be more than zero".into());
        }
        if !self.backoff_factor.is_finite() || self.backoff_factor < 1.0 {
            return Err(format!(
                "backoff_factor must be a finite number of at least 1, got {}",
                self.backoff_factor
            ));
        }
        Ok(())
    }

    /// The wait before attempt number `attempt` (1-based): zero before the first,
    /// `backoff * backoff_factor^(attempt - 2)` after that, never more than `max_backoff`.
    pub fn backoff_before(&self, attempt: u32) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(attempt - 2).unwrap_or(i32::MAX);
        let secs = self.backoff.as_secs_f64() * self.backoff_factor.powi(exponent);
        let cap = self.max_backoff.as_secs_f64();
        if secs.is_nan() || secs >= cap {
            return self.max_backoff;
        }
        Duration::try_from_secs_f64(secs).unwrap_or(self.max_backoff)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetryPolicy {
    max_attempts: Option<u32>,
    backoff: Option<String>,
    backoff_factor: Option<f64>,
    max_backoff: Option<String>,
    timeout: Option<String>,
}

impl TryFrom<RawRetryPolicy> for RetryPolicy {
    type Error = String;

    fn try_from(raw: RawRetryPolicy) -> Result<Self, String> {
        let d = RetryPolicy::default();
        let duration = |field: &str, value: Option<&str>, default: Duration| match value {
            None => Ok(default),
            Some(s) => parse_duration(s).map_err(|e| format!("{field}: {e}")),
        };
        let policy = RetryPolicy {
            max_attempts: raw.max_attempts.unwrap_or(d.max_attempts),
            backoff: duration("backoff", raw.backoff.as_deref(), d.backoff)?,
            backoff_factor: raw.backoff_factor.unwrap_or(d.backoff_factor),
            max_backoff: duration("max_backoff", raw.max_backoff.as_deref(), d.max_backoff)?,
            timeout: duration("timeout", raw.timeout.as_deref(), d.timeout)?,
        };
        policy.validate()?;
        Ok(policy)
    }
}

/// How one component is added: its dependencies, whether it is optional, and its own retry policy
/// if it differs from the orchestrator's.
#[derive(Debug, Clone, Default)]
pub struct ComponentSpec {
    /// Names of the components that must be running before this one starts.
    pub deps: Vec<String>,
    /// Whether start-up goes on without this component when it fails.
    pub optional: bool,
    /// Overrides the orchestrator's policy for this component.
    pub policy: Option<RetryPolicy>,
}

impl ComponentSpec {
    /// A required component depending on `deps`.
    pub fn new(deps: &[&str]) -> Self {
        ComponentSpec {
            deps: deps.iter().map(|d| (*d).to_owned()).collect(),
            optional: false,
            policy: None,
        }
    }

    /// Sets whether the component is optional.
    #[must_use]
    pub fn optional(mut self, optional: bool) -> Self {
        self.optional = optional;
        self
    }

    /// Gives the component its own retry policy.
    #[must_use]
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = Some(policy);
        self
    }
}

/// What became of a component during start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ComponentState {
    /// Started, passed its health check, and runs.
    Running,
    /// Optional, and every attempt failed: left out, start-up went on.
    Isolated,
    /// Not attempted because a dependency is not running.
    Skipped,
    /// Required, and every attempt failed: start-up aborted.
    Failed,
    /// An attempt outlived its timeout and was abandoned (start-up aborted if the component is
    /// required).
    TimedOut,
    /// Not attempted because start-up aborted first.
    NotStarted,
    /// Was running, and was stopped because start-up aborted.
    RolledBack,
}

impl ComponentState {
    fn label(self) -> &'static str {
        match self {
            ComponentState::Running => "running",
            ComponentState::Isolated => "isolated",
            ComponentState::Skipped => "skipped",
            ComponentState::Failed => "failed",
            ComponentState::TimedOut => "timed out",
            ComponentState::NotStarted => "not started",
            ComponentState::RolledBack => "rolled back",
        }
    }
}

impl fmt::Display for ComponentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttemptOutcome {
    /// Started and healthy.
    Ok,
    /// `start` returned an error.
    StartFailed,
    /// `start` succeeded but the health check failed.
    HealthCheckFailed,
    /// `start` or the health check panicked.
    Panicked,
    /// The attempt outlived the timeout and was abandoned.
    TimedOut,
    /// No thread could be spawned for the attempt.
    SpawnFailed,
}

impl AttemptOutcome {
    fn label(self) -> &'static str {
        match self {
            AttemptOutcome::Ok => "ok",
            AttemptOutcome::StartFailed => "failed",
            AttemptOutcome::HealthCheckFailed => "unhealthy",
            AttemptOutcome::Panicked => "panicked",
            AttemptOutcome::TimedOut => "timed out",
            AttemptOutcome::SpawnFailed => "no thread",
        }
    }
}

/// One attempt at starting a component.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct AttemptRecord {
    /// When the attempt began, counted from the start of start-up.
    #[serde(rename = "began_ns", serialize_with = "ser_ns")]
    pub began: Duration,
    /// How long it took (for a timed-out attempt: until it was abandoned).
    #[serde(rename = "duration_ns", serialize_with = "ser_ns")]
    pub duration: Duration,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The error, for an attempt that did not succeed.
    pub error: Option<String>,
}

/// What happened to one component during start-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ComponentReport {
    /// The component's name.
    pub name: String,
    /// Its level: 0 without dependencies, else one more than its deepest dependency's.
    pub level: usize,
    /// Whether it is optional.
    pub optional: bool,
    /// The components it depends on.
    pub deps: Vec<String>,
    /// How it ended.
    pub state: ComponentState,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptRecord>,
    /// When it was marked running, counted from the start of start-up.
    #[serde(rename = "running_after_ns", serialize_with = "ser_opt_ns")]
    pub running_after: Option<Duration>,
    /// Why it is not running: the last error, or the dependency that kept it from starting.
    pub detail: Option<String>,
}

/// How start-up went: one entry per component, in level order (components of one level in the
/// order they were added).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StartupReport {
    /// The components.
    pub components: Vec<ComponentReport>,
    /// The names of the components that reached running, in the order they did.
    pub start_order: Vec<String>,
    /// From the start of start-up to its end (for an aborted start-up: before the roll-back).
    #[serde(rename = "total_ns", serialize_with = "ser_ns")]
    pub total: Duration,
}

impl StartupReport {
    /// The entry of the component called `name`.
    pub fn component(&self, name: &str) -> Option<&ComponentReport> {
        self.components.iter().find(|c| c.name == name)
    }

    /// Whether some component is not running (isolated, skipped, timed out, ...).
    pub fn is_degraded(&self) -> bool {
        self.components
            .iter()
            .any(|c| c.state != ComponentState::Running)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

impl fmt::Display for StartupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = [
            "component",
            "level",
            "kind",
            "state",
            "tries",
            "running at ms",
            "attempts ms",
            "detail",
        ];
        let rows: Vec<[String; 8]> = self
            .components
            .iter()
            .map(|c| {
                let attempts = c
                    .attempts
                    .iter()
                    .map(|a| format!("{} {}", ms(a.duration), a.outcome.label()))
                    .collect::<Vec<_>>()
                    .join(", ");
                [
                    c.name.clone(),
                    c.level.to_string(),
                    if c.optional { "optional" } else { "required" }.to_owned(),
                    c.state.label().to_owned(),
                    c.attempts.len().to_string(),
                    c.running_after.map_or_else(|| "-".to_owned(), ms),
                    if attempts.is_empty() {
                        "-".to_owned()
                    } else {
                        attempts
                    },
                    c.detail.clone().unwrap_or_default(),
                ]
            })
            .collect();
        write_table(f, &header, &rows)?;
        write!(f, "start-up took {} ms", ms(self.total))
    }
}

fn write_table<const N: usize>(
    f: &mut fmt::Formatter<'_>,
    header: &[&str; N],
    rows: &[[String; N]],
) -> fmt::Result {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |f: &mut fmt::Formatter<'_>, cells: &[&str]| -> fmt::Result {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(&format!("{cell:<w$}"));
        }
        writeln!(f, "{}", text.trim_end())
    };
    line(f, header)?;
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(f, &cells)?;
    }
    Ok(())
}

/// One component's stop.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct StopRecord {
    /// The component's name.
    pub name: String,
    /// How long `stop` took.
    #[serde(rename = "duration_ns", serialize_with = "ser_ns")]
    pub duration: Duration,
    /// The panic message, if `stop` panicked (the other components are stopped all the same).
    pub panic: Option<String>,
}

/// How the running components were stopped, in the order they were.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// The stops, in order.
    pub stops: Vec<StopRecord>,
    /// All the stops together.
    #[serde(rename = "total_ns", serialize_with = "ser_ns")]
    pub total: Duration,
}

impl ShutdownReport {
    /// The names of the components, in the order they were stopped.
    pub fn stop_order(&self) -> Vec<&str> {
        self.stops.iter().map(|s| s.name.as_str()).collect()
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 3]> = self
            .stops
            .iter()
            .map(|s| {
                [
                    s.name.clone(),
                    ms(s.duration),
                    s.panic
                        .as_ref()
                        .map(|p| format!("panicked: {p}"))
                        .unwrap_or_default(),
                ]
            })
            .collect();
        write_table(f, &["component", "stop ms", "detail"], &rows)?;
        write!(f, "shutdown took {} ms", ms(self.total))
    }
}

fn ser_ns<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn ser_opt_ns<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => ser_ns(d, s),
        None => s.serialize_none(),
    }
}

/// Why a start-up that had begun was abandoned.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AbortCause {
    /// A required component failed every attempt.
    Failed {
        /// The component.
        component: String,
        /// How many attempts it had.
        attempts: usize,
        /// The last attempt's error.
        error: String,
    },
    /// An attempt of a required component outlived its timeout.
    TimedOut {
        /// The component.
        component: String,
        /// The timeout.
        timeout: Duration,
    },
    /// A required component depends on one that is not running (an optional component that
    /// failed, or one skipped because of it).
    DependencyUnavailable {
        /// The required component.
        component: String,
        /// Its dependency.
        dependency: String,
        /// What became of the dependency.
        state: ComponentState,
    },
}

impl fmt::Display for AbortCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbortCause::Failed {
                component,
                attempts,
                error,
            } => write!(
                f,
                "required component `{component}` failed after {attempts} attempt(s): {error}"
            ),
            AbortCause::TimedOut { component, timeout } => write!(
                f,
                "required component `{component}` did not start within {} ms",
                ms(*timeout)
            ),
            AbortCause::DependencyUnavailable {
                component,
                dependency,
                state,
            } => write!(
                f,
                "required component `{component}` depends on optional `{dependency}`, which is \
                 {state}"
            ),
        }
    }
}

/// An aborted start-up: why, what every component did, and how the roll-back went.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Aborted {
    /// Why start-up was abandoned.
    pub cause: AbortCause,
    /// What every component did.
    pub report: StartupReport,
    /// The stops of the components that were running, in reverse start order.
    pub rollback: ShutdownReport,
}

/// Why [`Orchestrator::start`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A component's name is empty or holds a NUL byte.
    #[error("invalid component name {name:?}: names must be non-empty and free of NUL bytes")]
    InvalidName {
        /// The name.
        name: String,
    },
    /// Two components share a name.
    #[error("two components are named `{name}`")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// A component depends on a name no component has.
    #[error("component `{component}` depends on `{dependency}`, which was never added")]
    UnknownDependency {
        /// The component.
        component: String,
        /// The missing dependency.
        dependency: String,
    },
    /// The dependencies form a cycle.
    #[error("dependency cycle: {}", cycle.join(" -> "))]
    Cycle {
        /// The components of one cycle, each depending on the next; the first is repeated at
        /// the end.
        cycle: Vec<String>,
    },
    /// A retry policy is invalid.
    #[error("retry policy of `{component}`: {msg}")]
    InvalidPolicy {
        /// The component (or `orchestrator` for the default policy).
        component: String,
        /// What is wrong.
        msg: String,
    },
    /// Start-up began and was abandoned; the components that were running have been stopped.
    #[error("start-up aborted: {}\n{}", .0.cause, .0.report)]
    Aborted(Box<Aborted>),
}

impl StartError {
    /// The details of an aborted start-up.
    pub fn aborted(&self) -> Option<&Aborted> {
        match self {
            StartError::Aborted(a) => Some(a),
            _ => None,
        }
    }
}

struct Entry {
    component: Box<dyn Component>,
    name: String,
    deps: Vec<String>,
    optional: bool,
    policy: Option<RetryPolicy>,
}

/// Starts components in dependency order (see the [module docs](self)).
pub struct Orchestrator {
    policy: RetryPolicy,
    entries: Vec<Entry>,
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("policy", &self.policy)
            .field(
                "components",
                &self.entries.iter().map(|e| &e.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Orchestrator {
    /// An orchestrator whose components start under `policy` unless their spec overrides it.
    pub fn new(policy: RetryPolicy) -> Self {
        Orchestrator {
            policy,
            entries: Vec::new(),
        }
    }

    /// Adds a component depending on `deps`. Problems with names are reported by
    /// [`start`](Self::start).
    pub fn add<C: Component + 'static>(
        &mut self,
        component: C,
        deps: &[&str],
        optional: bool,
    ) -> &mut Self {
        self.add_with(component, ComponentSpec::new(deps).optional(optional))
    }

    /// Adds a component as `spec` describes.
    pub fn add_with<C: Component + 'static>(
        &mut self,
        component: C,
        spec: ComponentSpec,
    ) -> &mut Self {
        let name = component.name().to_owned();
        let mut deps = Vec::with_capacity(spec.deps.len());
        for d in spec.deps {
            if !deps.contains(&d) {
                deps.push(d);
            }
        }
        self.entries.push(Entry {
            component: Box::new(component),
            name,
            deps,
            optional: spec.optional,
            policy: spec.policy,
        });
        self
    }

    /// The level of every component, in the order they were added.
    ///
    /// # Errors
    /// As [`start`](Self::start), for a graph that cannot be started.
    pub fn levels(&self) -> Result<Vec<(String, usize)>, StartError> {
        let levels = self.validate()?;
        Ok(self
            .entries
            .iter()
            .zip(levels)
            .map(|(e, l)| (e.name.clone(), l))
            .collect())
    }

    /// Checks names, dependencies and policies, and computes each entry's level.
    fn validate(&self) -> Result<Vec<usize>, StartError> {
        self.policy
            .validate()
            .map_err(|msg| StartError::InvalidPolicy {
                component: "orchestrator".into(),
                msg,
            })?;
        let mut index = HashMap::with_capacity(self.entries.len());
        for (i, e) in self.entries.iter().enumerate() {
            if e.name.is_empty() || e.name.contains('\0') {
                return Err(StartError::InvalidName {
                    name: e.name.clone(),
                });
            }
            if index.insert(e.name.as_str(), i).is_some() {
                return Err(StartError::DuplicateName {
                    name: e.name.clone(),
                });
            }
            if let Some(p) = &e.policy {
                p.validate().map_err(|msg| StartError::InvalidPolicy {
                    component: e.name.clone(),
                    msg,
                })?;
            }
        }
        let mut deps: Vec<Vec<usize>> = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let mut ds = Vec::with_capacity(e.deps.len());
            for d in &e.deps {
                let Some(&j) = index.get(d.as_str()) else {
                    return Err(StartError::UnknownDependency {
                        component: e.name.clone(),
                        dependency: d.clone(),
                    });
                };
                ds.push(j);
            }
            deps.push(ds);
        }
        // Kahn's algorithm, one layer at a time.
        let n = self.entries.len();
        let mut level: Vec<Option<usize>> = vec![None; n];
        let mut placed = 0;
        let mut current = 0;
        while placed < n {
            let layer: Vec<usize> = (0..n)
                .filter(|&i| {
                    level[i].is_none()
                        && deps[i]
                            .iter()
                            .all(|&d| level[d].is_some_and(|l| l < current))
                })
                .collect();
            if layer.is_empty() {
                return Err(StartError::Cycle {
                    cycle: self.find_cycle(&deps, &level),
                });
            }
            for &i in &layer {
                level[i] = Some(current);
            }
            placed += layer.len();
            current += 1;
        }
        Ok(level.into_iter().map(|l| l.unwrap_or(0)).collect())
    }

    /// Every component left unplaced by Kahn's algorithm depends on another unplaced one, so
    /// walking such dependencies from any of them must come back to a component already seen.
    fn find_cycle(&self, deps: &[Vec<usize>], level: &[Option<usize>]) -> Vec<String> {
        let Some(mut at) = (0..deps.len()).find(|&i| level[i].is_none()) else {
            return Vec::new();
        };
        let mut path: Vec<usize> = Vec::new();
        loop {
            if let Some(pos) = path.iter().position(|&p| p == at) {
                let mut cycle: Vec<String> = path[pos..]
                    .iter()
                    .map(|&i| self.entries[i].name.clone())
                    .collect();
                cycle.push(self.entries[at].name.clone());
                return cycle;
            }
            path.push(at);
            match deps[at].iter().find(|&&d| level[d].is_none()) {
                Some(&next) => at = next,
                None => return Vec::new(),
            }
        }
    }

    /// Starts every component in dependency order.
    ///
    /// # Errors
    /// [`StartError`] for an invalid graph or policy (nothing is started), or
    /// [`StartError::Aborted`] when a required component cannot be brought up; the components
    /// that were running have then been stopped in reverse start order.
    pub fn start(self) -> Result<Running, StartError> {
        let levels = self.validate()?;
        let t0 = Instant::now();
        let seq = AtomicU64::new(0);
        let mut slots: Vec<Slot> = self
            .entries
            .into_iter()
            .zip(levels)
            .map(|(e, level)| Slot {
                policy: e.policy.unwrap_or(self.policy),
                component: Some(e.component),
                name: e.name,
                deps: e.deps,
                optional: e.optional,
                level,
                state: ComponentState::NotStarted,
                attempts: Vec::new(),
                running_after: None,
                running_seq: None,
                detail: None,
            })
            .collect();
        let depth = slots.iter().map(|s| s.level + 1).max().unwrap_or(0);
        let mut cause = None;
        for level in 0..depth {
            cause = mark_unreachable(&mut slots, level);
            if cause.is_some() {
                break;
            }
            let mut todo: Vec<&mut Slot> = slots
                .iter_mut()
                .filter(|s| s.level == level && s.state == ComponentState::NotStarted)
                .collect();
            start_level(&mut todo, t0, &seq);
            cause = slots
                .iter()
                .filter(|s| s.level == level && !s.optional)
                .find_map(Slot::abort_cause);
            if cause.is_some() {
                break;
            }
        }
        let total = t0.elapsed();
        let mut order: Vec<usize> = (0..slots.len())
            .filter(|&i| slots[i].running_seq.is_some())
            .collect();
        order.sort_by_key(|&i| slots[i].running_seq);
        let start_order = order.iter().map(|&i| slots[i].name.clone()).collect();
        let mut running: Vec<(String, Box<dyn Component>)> = Vec::with_capacity(order.len());
        for &i in &order {
            if let Some(c) = slots[i].component.take() {
                running.push((slots[i].name.clone(), c));
            }
        }
        if cause.is_some() {
            for &i in &order {
                slots[i].state = ComponentState::RolledBack;
            }
        }
        let mut components: Vec<ComponentReport> = slots
            .into_iter()
            .map(|s| ComponentReport {
                name: s.name,
                level: s.level,
                optional: s.optional,
                deps: s.deps,
                state: s.state,
                attempts: s.attempts,
                running_after: s.running_after,
                detail: s.detail,
            })
            .collect();
        // Stable, so a level keeps the order its components were added in.
        components.sort_by_key(|c| c.level);
        let report = StartupReport {
            components,
            start_order,
            total,
        };
        match cause {
            None => Ok(Running {
                components: running,
                report,
            }),
            Some(cause) => Err(StartError::Aborted(Box::new(Aborted {
                cause,
                report,
                rollback: stop_all(running),
            }))),
        }
    }
}

/// Start-up's bookkeeping for one component.
struct Slot {
    component: Option<Box<dyn Component>>,
    name: String,
    deps: Vec<String>,
    optional: bool,
    policy: RetryPolicy,
    level: usize,
    state: ComponentState,
    attempts: Vec<AttemptRecord>,
    running_after: Option<Duration>,
    running_seq: Option<u64>,
    detail: Option<String>,
}

impl Slot {
    fn abort_cause(&self) -> Option<AbortCause> {
        match self.state {
            ComponentState::Failed => Some(AbortCause::Failed {
                component: self.name.clone(),
                attempts: self.attempts.len(),
                error: self.detail.clone().unwrap_or_default(),
            }),
            ComponentState::TimedOut => Some(AbortCause::TimedOut {
                component: self.name.clone(),
                timeout: self.policy.timeout,
            }),
            _ => None,
        }
    }
}

/// Marks the components of `level` whose dependencies are not all running: optional ones are
/// skipped; a required one aborts start-up.
fn mark_unreachable(slots: &mut [Slot], level: usize) -> Option<AbortCause> {
    let states: BTreeMap<String, ComponentState> =
        slots.iter().map(|s| (s.name.clone(), s.state)).collect();
    for s in slots.iter_mut().filter(|s| s.level == level) {
        let missing = s.deps.iter().find_map(|d| match states.get(d) {
            Some(ComponentState::Running) => None,
            Some(&state) => Some((d.clone(), state)),
            None => Some((d.clone(), ComponentState::NotStarted)),
        });
        let Some((dependency, state)) = missing else {
            continue;
        };
        s.state = ComponentState::Skipped;
        s.detail = Some(format!("dependency `{dependency}` is {state}"));
        if !s.optional {
            return Some(AbortCause::DependencyUnavailable {
                component: s.name.clone(),
                dependency,
                state,
            });
        }
    }
    None
}

/// Runs the attempts of every component of one level, each on its own thread.
fn start_level(todo: &mut [&mut Slot], t0: Instant, seq: &AtomicU64) {
    if todo.len() > 1 {
        thread::scope(|scope| {
            for slot in todo.iter_mut() {
                let slot: &mut Slot = slot;
                // A failed spawn drops only the borrow: that component still has no attempt
                // and runs on this thread below.
                let _ = thread::Builder::new()
                    .name(format!("orch:{}", slot.name))
                    .spawn_scoped(scope, move || run_attempts(slot, t0, seq));
            }
        });
    }
    for slot in todo
        .iter_mut()
        .filter(|s| s.attempts.is_empty() && s.state == ComponentState::NotStarted)
    {
        run_attempts(slot, t0, seq);
    }
}

/// What an attempt's worker thread sends back: the component and how the attempt went.
type Finished = (Box<dyn Component>, Result<(), (AttemptOutcome, String)>);

/// Attempts to start one component until it runs, its attempts run out, or one times out.
fn run_attempts(slot: &mut Slot, t0: Instant, seq: &AtomicU64) {
    let policy = slot.policy;
    for attempt in 1..=policy.max_attempts {
        thread::sleep(policy.backoff_before(attempt));
        let Some(component) = slot.component.take() else {
            break;
        };
        let began = Instant::now();
        let record = |outcome, error, slot: &mut Slot| {
            slot.attempts.push(AttemptRecord {
                began: began.saturating_duration_since(t0),
                duration: began.elapsed(),
                outcome,
                error,
            });
        };
        let rx = match launch(component, &slot.name) {
            Ok(rx) => rx,
            Err((component, why)) => {
                slot.component = Some(component);
                let error = format!("cannot spawn a start-up thread: {why}");
                record(AttemptOutcome::SpawnFailed, Some(error.clone()), slot);
                slot.detail = Some(error);
                continue;
            }
        };
        match rx.recv_timeout(policy.timeout) {
            Ok((component, Ok(()))) => {
                slot.component = Some(component);
                record(AttemptOutcome::Ok, None, slot);
                slot.state = ComponentState::Running;
                slot.running_after = Some(t0.elapsed());
                // Only a tie-breaker for the start order; the scope's join publishes it.
                slot.running_seq = Some(seq.fetch_add(1, Ordering::Relaxed));
                slot.detail = None;
                return;
            }
            Ok((component, Err((outcome, error)))) => {
                slot.component = Some(component);
                record(outcome, Some(error.clone()), slot);
                slot.detail = Some(error);
            }
            Err(RecvTimeoutError::Timeout) => {
                // Dropping the receiver hands the component to the worker thread for good: its
                // rendezvous send fails, and it stops a late-started component itself.
                drop(rx);
                let error = format!("no answer within {} ms; abandoned", ms(policy.timeout));
                record(AttemptOutcome::TimedOut, Some(error.clone()), slot);
                slot.detail = Some(error);
                slot.state = ComponentState::TimedOut;
                return;
            }
            Err(RecvTimeoutError::Disconnected) => {
                let error = "the start-up thread ended without answering".to_owned();
                record(AttemptOutcome::Panicked, Some(error.clone()), slot);
                slot.detail = Some(error);
                break;
            }
        }
    }
    slot.state = if slot.optional {
        ComponentState::Isolated
    } else {
        ComponentState::Failed
    };
}

/// Runs one attempt on a new thread named after the component.
///
/// The answer comes over a rendezvous channel, so the component either reaches the caller or,
/// once the caller has given up and dropped the receiver, comes back to the worker thread: it is
/// never dropped unseen in a channel's buffer.
///
/// # Errors
/// The component, untouched, when no thread can be spawned.
fn launch(
    component: Box<dyn Component>,
    name: &str,
) -> Result<mpsc::Receiver<Finished>, (Box<dyn Component>, std::io::Error)> {
    // The component goes to the thread only once it exists, so a failed spawn keeps it.
    let (in_tx, in_rx) = mpsc::channel::<Box<dyn Component>>();
    let (out_tx, out_rx) = mpsc::sync_channel::<Finished>(0);
    let spawned = thread::Builder::new().name(name.to_owned()).spawn(move || {
        let Ok(mut component) = in_rx.recv() else {
            return;
        };
        let result = attempt(&mut *component);
        if let Err(SendError((mut component, result))) = out_tx.send((component, result))
            && result.is_ok()
        {
            let _ = catch_unwind(AssertUnwindSafe(|| component.stop()));
        }
    });
    match spawned {
        Ok(_) => match in_tx.send(component) {
            Ok(()) => Ok(out_rx),
            Err(SendError(component)) => Err((
                component,
                std::io::Error::other("the start-up thread ended before it got the component"),
            )),
        },
        Err(why) => Err((component, why)),
    }
}

/// One attempt: `start`, then the health check; an unhealthy component is stopped again.
fn attempt(component: &mut dyn Component) -> Result<(), (AttemptOutcome, String)> {
    match catch_unwind(AssertUnwindSafe(|| component.start())) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err((AttemptOutcome::StartFailed, e)),
        Err(panic) => return Err((AttemptOutcome::Panicked, panic_message(&*panic))),
    }
    let (outcome, error) = match catch_unwind(AssertUnwindSafe(|| component.health_check())) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => (AttemptOutcome::HealthCheckFailed, e),
        Err(panic) => (AttemptOutcome::Panicked, panic_message(&*panic)),
    };
    let _ = catch_unwind(AssertUnwindSafe(|| component.stop()));
    Err((outcome, format!("health check: {error}")))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".to_owned());
    format!("panicked: {text}")
}

/// Stops `started` (given in start order) in reverse.
fn stop_all(started: Vec<(String, Box<dyn Component>)>) -> ShutdownReport {
    let t = Instant::now();
    let stops = started
        .into_iter()
        .rev()
        .map(|(name, mut component)| {
            let began = Instant::now();
            let panic = catch_unwind(AssertUnwindSafe(|| component.stop()))
                .err()
                .map(|p| panic_message(&*p));
            StopRecord {
                name,
                duration: began.elapsed(),
                panic,
            }
        })
        .collect();
    ShutdownReport {
        stops,
        total: t.elapsed(),
    }
}

/// The components that started, and the report of how start-up went. Stopping it (or dropping
/// it) stops them in reverse start order.
pub struct Running {
    /// In start order.
    components: Vec<(String, Box<dyn Component>)>,
    report: StartupReport,
}

impl fmt::Debug for Running {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Running")
            .field(
                "components",
                &self.components.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("report", &self.report)
            .finish()
    }
}

impl Running {
    /// How start-up went.
    pub fn report(&self) -> &StartupReport {
        &self.report
    }

    /// Whether some component is not running.
    pub fn is_degraded(&self) -> bool {
        self.report.is_degraded()
    }

    /// Whether the component called `name` is running.
    pub fn is_running(&self, name: &str) -> bool {
        self.components.iter().any(|(n, _)| n == name)
    }

    /// Stops every component, in reverse start order. A panicking `stop` is recorded and the
    /// others are stopped all the same.
    pub fn stop(mut self) -> ShutdownReport {
        stop_all(std::mem::take(&mut self.components))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        stop_all(std::mem::take(&mut self.components));
    }
}
