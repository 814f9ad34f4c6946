//! The monitor's thread: samples a [`HealthSource`] every tick (10 Hz by default), runs the
//! rollup, logs alert transitions, hands the kill switch and alert level to the health stage,
//! and publishes the rollup to a [`PageSink`] (the shared-memory health page).
//!
//! Commands (engage, release, snapshot) come from other threads (the control plane) through
//! [`HealthControl`]; they are served between ticks, at once: the thread waits on its command
//! channel with the time left to the next tick as the timeout.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::ReleaseRefused;
use super::page::{PAGE_WORDS, encode};
use super::{AlertEvent, AlertLevel, HealthCounters, HealthInputs, HealthMonitor, HealthSnapshot};

/// Where the monitor samples its inputs each tick.
pub trait HealthSource: Send {
    /// Fills `inp` (cumulative totals and current values; `now_ns`/`unix_ns` are set by the
    /// caller).
    fn sample(&mut self, inp: &mut HealthInputs);
}

/// Where the rollup goes each tick (the shared-memory health page).
pub trait PageSink: Send {
    /// Publishes the payload words ([`PAGE_WORDS`] of them).
    fn publish(&mut self, words: &[u64]);
    /// The kill-switch word: 0 released, otherwise the reason bits.
    fn set_kill(&mut self, word: u64);
}

/// Receives alert transitions (the log).
pub type AlertLog = Box<dyn FnMut(&AlertEvent) + Send>;

/// The default log: one line per transition on standard error.
pub fn stderr_log() -> AlertLog {
    Box::new(|e: &AlertEvent| {
        let level = match e.level {
            AlertLevel::Critical => "CRITICAL",
            AlertLevel::Warning => "WARNING",
            AlertLevel::Info => "INFO",
            AlertLevel::None => "NONE",
        };
        eprintln!("health {level} {}: {}", e.code, e.message);
    })
}

enum Command {
    Engage(Sender<HealthSnapshot>),
    Release(Sender<Result<HealthSnapshot, ReleaseRefused>>),
    Stop,
}

/// A cloneable handle to a running monitor, for the control plane.
#[derive(Debug, Clone)]
pub struct HealthControl {
    tx: Sender<Command>,
    latest: Arc<Mutex<HealthSnapshot>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Engage(_) => "Engage",
            Command::Release(_) => "Release",
            Command::Stop => "Stop",
        })
    }
}

/// The monitor has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the health monitor is not running")]
pub struct MonitorGone;

impl HealthControl {
    /// The latest rollup.
    pub fn snapshot(&self) -> HealthSnapshot {
        self.latest.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Engages the kill switch now; returns the rollup with it engaged.
    ///
    /// # Errors
    /// The monitor has stopped.
    pub fn engage(&self) -> Result<HealthSnapshot, MonitorGone> {
        let (tx, rx) = mpsc::channel();
        self.tx.send(Command::Engage(tx)).map_err(|_| MonitorGone)?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| MonitorGone)
    }

    /// Releases the kill switch, unless a critical condition still holds.
    ///
    /// # Errors
    /// The monitor has stopped (outer), or the release was refused (inner).
    pub fn release(&self) -> Result<Result<HealthSnapshot, ReleaseRefused>, MonitorGone> {
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Command::Release(tx))
            .map_err(|_| MonitorGone)?;
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| MonitorGone)
    }
}

/// The running monitor thread.
#[derive(Debug)]
pub struct MonitorThread {
    control: HealthControl,
    thread: Option<JoinHandle<HealthSnapshot>>,
}

struct Runner {
    monitor: HealthMonitor,
    source: Box<dyn HealthSource>,
    counters: Arc<HealthCounters>,
    sink: Option<Box<dyn PageSink>>,
    log: AlertLog,
    latest: Arc<Mutex<HealthSnapshot>>,
    words: Vec<u64>,
    origin: Instant,
    unix_origin: u64,
    inputs: HealthInputs,
}

impl Runner {
    fn tick(&mut self) {
        let now = self.origin.elapsed();
        self.inputs.now_ns = now.as_nanos() as u64;
        self.inputs.unix_ns = self.unix_origin + self.inputs.now_ns;
        self.source.sample(&mut self.inputs);
        let events = self.monitor.tick(&self.inputs);
        for e in &events {
            (self.log)(e);
        }
        self.apply();
    }

    fn apply(&mut self) {
        let s = self.monitor.snapshot();
        // Relaxed: the stage samples these once per batch; nothing else hangs on them.
        self.counters
            .kill
            .store(u8::from(s.kill), Ordering::Relaxed);
        self.counters
            .alert
            .store(s.alert.as_u8(), Ordering::Relaxed);
        if let Some(sink) = &mut self.sink {
            // The kill word first: a reader that sees the new rollup sees the switch too.
            sink.set_kill(if s.kill {
                u64::from(s.kill_reasons.max(1))
            } else {
                0
            });
            if encode(s, &mut self.words).is_ok() {
                sink.publish(&self.words);
            }
        }
        if let Ok(mut l) = self.latest.lock() {
            l.clone_from(s);
        }
    }

    fn unix_now(&self) -> u64 {
        self.unix_origin + self.origin.elapsed().as_nanos() as u64
    }
}

impl MonitorThread {
    /// Starts the monitor thread. It ticks every `monitor.config().tick` until stopped.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn spawn(
        monitor: HealthMonitor,
        source: Box<dyn HealthSource>,
        counters: Arc<HealthCounters>,
        sink: Option<Box<dyn PageSink>>,
        log: AlertLog,
    ) -> Result<Self, crate::PipelineError> {
        let (tx, rx) = mpsc::channel();
        let latest = Arc::new(Mutex::new(monitor.snapshot().clone()));
        let tick = monitor.config().tick;
        let mut runner = Runner {
            monitor,
            source,
            counters,
            sink,
            log,
            latest: latest.clone(),
            words: vec![0; PAGE_WORDS],
            origin: Instant::now(),
            unix_origin: tickpipe_shm::mapped::unix_now_ns(),
            inputs: HealthInputs::default(),
        };
        let thread = std::thread::Builder::new()
            .name("health-monitor".into())
            .spawn(move || run(&mut runner, &rx, tick))
            .map_err(|e| crate::PipelineError::Thread {
                role: "health-monitor".into(),
                why: e.to_string(),
            })?;
        Ok(Self {
            control: HealthControl { tx, latest },
            thread: Some(thread),
        })
    }

    /// A handle for other threads.
    pub fn control(&self) -> HealthControl {
        self.control.clone()
    }

    /// Stops the thread after one last tick; returns the final rollup.
    pub fn stop(mut self) -> HealthSnapshot {
        self.stop_inner().unwrap_or_default()
    }

    fn stop_inner(&mut self) -> Option<HealthSnapshot> {
        let t = self.thread.take()?;
        let _ = self.control.tx.send(Command::Stop);
        t.join().ok()
    }
}

impl Drop for MonitorThread {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

fn run(r: &mut Runner, rx: &Receiver<Command>, tick: Duration) -> HealthSnapshot {
    r.tick();
    let mut next = Instant::now() + tick;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Command::Engage(reply)) => {
                let now = r.unix_now();
                r.monitor.engage(now);
                (r.log)(&AlertEvent {
                    level: AlertLevel::Critical,
                    code: "kill_switch.engaged".into(),
                    message: "kill switch engaged by an operator".into(),
                });
                r.apply();
                let _ = reply.send(r.monitor.snapshot().clone());
            }
            Ok(Command::Release(reply)) => {
                let out = r.monitor.release();
                if out.is_ok() {
                    (r.log)(&AlertEvent {
                        level: AlertLevel::Info,
                        code: "kill_switch.released".into(),
                        message: "kill switch released by an operator".into(),
                    });
                    r.apply();
                }
                let _ = reply.send(out.map(|()| r.monitor.snapshot().clone()));
            }
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => {
                r.tick();
                return r.monitor.snapshot().clone();
            }
            Err(RecvTimeoutError::Timeout) => {
                r.tick();
                next += tick;
                let now = Instant::now();
                if next < now {
                    // Fell behind (a descheduled thread): skip, do not burst.
                    next = now + tick;
                }
            }
        }
    }
}
