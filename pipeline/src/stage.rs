//! The stage contract and the three ways to run stages: a pinned thread of its own
//! ([`StageRunner`]), several on one thread ([`CompositeStage`]), or driven by the caller
//! ([`Invoker`]).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::PipelineError;
use crate::host::{SettingOutcome, Want};
use crate::idle::{IdleStrategy, Idler};

/// A unit of work on the engine's duty cycle (Agrona's `Agent`).
///
/// `do_work` never blocks: it does what is ready (up to a batch), returns how much, and leaves
/// waiting to the runner's [`IdleStrategy`]. A stage that cannot push its output (the next stage
/// is full) returns without consuming more input: that is back-pressure, and the upstream link
/// fills in turn.
pub trait Stage: Send {
    /// The stage's name; also its thread's name.
    fn role_name(&self) -> &str;

    /// Runs once on the stage's own thread after pinning, before the first duty cycle: build and
    /// touch state here so its memory is local to the core that uses it.
    ///
    /// # Errors
    /// Anything that makes the stage unable to run; the engine does not start.
    fn on_start(&mut self) -> Result<(), PipelineError> {
        Ok(())
    }

    /// One duty cycle. Returns the work done (0 = nothing was ready).
    fn do_work(&mut self) -> usize;

    /// Whether the stage has finished: its input is closed and drained and its output flushed.
    fn is_done(&self) -> bool {
        false
    }

    /// Runs once on the stage's thread after the last duty cycle.
    fn on_close(&mut self) {}
}

/// Several stages run in order on one thread; done when all are.
pub struct CompositeStage {
    name: String,
    stages: Vec<Box<dyn Stage>>,
}

impl std::fmt::Debug for CompositeStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompositeStage")
            .field("name", &self.name)
            .finish()
    }
}

impl CompositeStage {
    /// Stages run in the given order every cycle (pipeline order keeps a message moving through
    /// all of them in one cycle). The name joins theirs with `+`.
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Self {
        let name = stages
            .iter()
            .map(|s| s.role_name())
            .collect::<Vec<_>>()
            .join("+");
        Self { name, stages }
    }
}

impl Stage for CompositeStage {
    fn role_name(&self) -> &str {
        &self.name
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.stages.iter_mut().try_for_each(|s| s.on_start())
    }

    #[inline]
    fn do_work(&mut self) -> usize {
        let mut work = 0;
        for stage in &mut self.stages {
            work += stage.do_work();
        }
        work
    }

    fn is_done(&self) -> bool {
        self.stages.iter().all(|s| s.is_done())
    }

    fn on_close(&mut self) {
        for stage in &mut self.stages {
            stage.on_close();
        }
    }
}

/// The CPU cores this process may run on, read once (before any thread of it is pinned: the
/// list is the calling thread's affinity, which pinning would narrow).
pub fn available_cores() -> &'static [usize] {
    static CORES: OnceLock<Vec<usize>> = OnceLock::new();
    CORES.get_or_init(|| {
        let mut ids: Vec<usize> = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        ids.sort_unstable();
        ids
    })
}

/// Pins the calling thread to `core`.
///
/// # Errors
/// [`PipelineError::Pin`] when the core is not available to this process or the kernel refuses.
pub fn pin_current(role: &str, core: usize) -> Result<(), PipelineError> {
    if !available_cores().contains(&core) {
        return Err(PipelineError::Pin {
            role: role.to_string(),
            core,
            why: format!("not among this process's cores {:?}", available_cores()),
        });
    }
    if core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        Ok(())
    } else {
        Err(PipelineError::Pin {
            role: role.to_string(),
            core,
            why: "the kernel refused the affinity change".into(),
        })
    }
}

/// Functions run on every stage thread around its duty loop (after `on_start`, before
/// `on_close`). Plain function pointers: they exist for instrumentation such as arming an
/// allocation counter or a syscall filter on exactly the running loop.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadHooks {
    /// After `on_start`, right before the first duty cycle.
    pub loop_entered: Option<fn(&str)>,
    /// After the last duty cycle, before `on_close`.
    pub loop_exited: Option<fn(&str)>,
}

/// What a runner's thread did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DutyStats {
    /// Duty cycles run.
    pub cycles: u64,
    /// Cycles that found no work.
    pub idle_cycles: u64,
}

/// One stage (often a [`CompositeStage`]) on a named thread of its own, optionally pinned.
#[derive(Debug)]
pub struct StageRunner {
    name: String,
    handle: Option<JoinHandle<DutyStats>>,
    realtime: Option<SettingOutcome>,
}

impl StageRunner {
    /// Spawns the thread, pins it, runs `on_start` there and returns once that succeeded, so a
    /// start-up failure is an error here and not a dead thread later. The loop runs until the
    /// stage is done or `abort` is set.
    ///
    /// # Errors
    /// The thread cannot be spawned, pinning fails, or `on_start` fails.
    pub fn start(
        stage: Box<dyn Stage>,
        core: Option<usize>,
        idle: IdleStrategy,
        hooks: ThreadHooks,
        abort: Arc<AtomicBool>,
    ) -> Result<Self, PipelineError> {
        Self::start_realtime(stage, core, idle, hooks, abort, None)
    }

    /// As [`StageRunner::start`]; a pinned thread also moves itself to `SCHED_FIFO` at the given
    /// priority after `on_start`, right before its duty loop, and its outcome is kept
    /// ([`StageRunner::realtime`]). Unpinned threads are never made real-time.
    ///
    /// # Errors
    /// As [`StageRunner::start`], and [`PipelineError::Host`] when real-time scheduling is
    /// required and refused.
    pub fn start_realtime(
        mut stage: Box<dyn Stage>,
        core: Option<usize>,
        idle: IdleStrategy,
        hooks: ThreadHooks,
        abort: Arc<AtomicBool>,
        realtime: Option<(Want, i32)>,
    ) -> Result<Self, PipelineError> {
        let name = stage.role_name().to_string();
        let (ready_tx, ready_rx) =
            mpsc::sync_channel::<Result<Option<SettingOutcome>, PipelineError>>(1);
        let thread_name = name.clone();
        let handle = std::thread::Builder::new()
            .name(truncate_thread_name(&name))
            .spawn(move || {
                let started = core
                    .map_or(Ok(()), |c| pin_current(&thread_name, c))
                    .and_then(|()| stage.on_start())
                    .and_then(|()| match (core, realtime) {
                        (Some(c), Some((want, prio))) => {
                            let o =
                                crate::host::realtime_current_thread(want, &thread_name, c, prio);
                            let report = crate::host::HostReport { outcomes: vec![o] };
                            report.check_required()?;
                            Ok(report.outcomes.into_iter().next())
                        }
                        _ => Ok(None),
                    });
                let failed = started.is_err();
                let _ = ready_tx.send(started);
                if failed {
                    return DutyStats::default();
                }
                drop(ready_tx);
                let stats = duty_loop(stage.as_mut(), idle, &abort, hooks);
                stage.on_close();
                stats
            })
            .map_err(|e| PipelineError::Thread {
                role: name.clone(),
                why: e.to_string(),
            })?;
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(PipelineError::Thread {
                role: name.clone(),
                why: "the thread ended during start-up".into(),
            })
        });
        match ready {
            Ok(realtime) => Ok(Self {
                name,
                handle: Some(handle),
                realtime,
            }),
            Err(e) => {
                let _ = handle.join();
                Err(e)
            }
        }
    }

    /// What became of real-time scheduling on this thread (none when not asked for, or the
    /// thread is not pinned).
    pub fn realtime(&self) -> Option<&SettingOutcome> {
        self.realtime.as_ref()
    }

    /// Whether the thread has ended.
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the thread to finish.
    ///
    /// # Errors
    /// The thread panicked.
    pub fn join(mut self) -> Result<DutyStats, PipelineError> {
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| PipelineError::Thread {
                role: self.name.clone(),
                why: "panicked".into(),
            }),
            None => Ok(DutyStats::default()),
        }
    }
}

/// Linux limits thread names to 15 bytes.
fn truncate_thread_name(name: &str) -> String {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

fn duty_loop(
    stage: &mut dyn Stage,
    idle: IdleStrategy,
    abort: &AtomicBool,
    hooks: ThreadHooks,
) -> DutyStats {
    let mut idler = Idler::new(idle);
    let mut stats = DutyStats::default();
    if let Some(f) = hooks.loop_entered {
        f(stage.role_name());
    }
    // Relaxed: the abort flag carries no data, it only ends the loop.
    while !stage.is_done() && !abort.load(Ordering::Relaxed) {
        let work = stage.do_work();
        stats.cycles += 1;
        if work == 0 {
            stats.idle_cycles += 1;
        }
        idler.idle(work);
    }
    if let Some(f) = hooks.loop_exited {
        f(stage.role_name());
    }
    stats
}

/// Stages driven from the caller's thread: no thread, no pinning, no idle strategy. The caller
/// decides when a duty cycle happens, which makes a run fully deterministic.
pub struct Invoker {
    stage: Box<dyn Stage>,
    started: bool,
    closed: bool,
}

impl std::fmt::Debug for Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("stage", &self.stage.role_name())
            .finish()
    }
}

impl Invoker {
    /// Wraps a stage (typically a [`CompositeStage`] of the whole pipeline).
    pub fn new(stage: Box<dyn Stage>) -> Self {
        Self {
            stage,
            started: false,
            closed: false,
        }
    }

    /// Runs `on_start` on the caller's thread (once).
    ///
    /// # Errors
    /// As the stage's `on_start`.
    pub fn start(&mut self) -> Result<(), PipelineError> {
        if !self.started {
            self.started = true;
            self.stage.on_start()?;
        }
        Ok(())
    }

    /// One duty cycle.
    #[inline]
    pub fn invoke(&mut self) -> usize {
        self.stage.do_work()
    }

    /// Whether the stage is done.
    pub fn is_done(&self) -> bool {
        self.stage.is_done()
    }

    /// Runs `on_close` (once).
    pub fn close(&mut self) {
        if self.started && !self.closed {
            self.closed = true;
            self.stage.on_close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter {
        name: &'static str,
        left: usize,
        log: Arc<std::sync::Mutex<Vec<&'static str>>>,
    }

    impl Stage for Counter {
        fn role_name(&self) -> &str {
            self.name
        }
        fn do_work(&mut self) -> usize {
            if self.left == 0 {
                return 0;
            }
            self.left -= 1;
            self.log.lock().unwrap().push(self.name);
            1
        }
        fn is_done(&self) -> bool {
            self.left == 0
        }
        fn on_close(&mut self) {
            self.log.lock().unwrap().push("close");
        }
    }

    #[test]
    fn composite_runs_in_order_until_all_done() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mk = |name, left| -> Box<dyn Stage> {
            Box::new(Counter {
                name,
                left,
                log: log.clone(),
            })
        };
        let mut inv = Invoker::new(Box::new(CompositeStage::new(vec![mk("a", 2), mk("b", 1)])));
        inv.start().unwrap();
        let mut work = 0;
        while !inv.is_done() {
            work += inv.invoke();
        }
        inv.close();
        inv.close();
        assert_eq!(work, 3);
        assert_eq!(*log.lock().unwrap(), ["a", "b", "a", "close", "close"]);
    }

    #[test]
    fn runner_thread_is_named_and_runs_to_done() {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stage = Box::new(Counter {
            name: "counter",
            left: 5,
            log: log.clone(),
        });
        let r = StageRunner::start(
            stage,
            None,
            IdleStrategy::BusySpin,
            ThreadHooks::default(),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap();
        assert_eq!(r.name(), "counter");
        let stats = r.join().unwrap();
        assert_eq!(stats.cycles, 5);
        assert_eq!(log.lock().unwrap().len(), 6);
    }

    #[test]
    fn pinning_to_a_missing_core_is_a_start_error() {
        let stage = Box::new(Counter {
            name: "p",
            left: 1,
            log: Arc::default(),
        });
        let err = StageRunner::start(
            stage,
            Some(100_000),
            IdleStrategy::BusySpin,
            ThreadHooks::default(),
            Arc::new(AtomicBool::new(false)),
        )
        .unwrap_err();
        assert!(err.to_string().contains("core 100000"), "{err}");
    }

    #[test]
    fn thread_names_fit_the_kernel_limit() {
        assert_eq!(
            truncate_thread_name("ingest+features+inference"),
            "ingest+features"
        );
    }

    #[test]
    fn realtime_outcome_is_reported_and_required_refusal_fails_start() {
        let core = available_cores()[0];
        let mk = || -> Box<dyn Stage> {
            Box::new(Counter {
                name: "rt",
                left: 1,
                log: Arc::default(),
            })
        };
        let start = |stage, core, realtime| {
            StageRunner::start_realtime(
                stage,
                core,
                IdleStrategy::BusySpin,
                ThreadHooks::default(),
                Arc::new(AtomicBool::new(false)),
                realtime,
            )
        };
        // Whatever this host permits, a pinned thread reports what happened.
        let r = start(mk(), Some(core), Some((Want::On, 1))).unwrap();
        let o = r
            .realtime()
            .cloned()
            .expect("an outcome for a pinned thread");
        assert_eq!(o.setting, format!("realtime[rt@core {core}]"));
        assert!(
            matches!(
                o.outcome,
                crate::host::Outcome::Applied(_) | crate::host::Outcome::NotPermitted(_)
            ),
            "{o}"
        );
        r.join().unwrap();
        // Unpinned threads are never made real-time.
        let r = start(mk(), None, Some((Want::Required, 1))).unwrap();
        assert!(r.realtime().is_none());
        r.join().unwrap();
        // Priority 100 is outside SCHED_FIFO's range on every kernel: refused.
        let r = start(mk(), Some(core), Some((Want::On, 100))).unwrap();
        let o = r.realtime().cloned().unwrap();
        assert!(o.failed() && o.to_string().contains("EINVAL"), "{o}");
        r.join().unwrap();
        let e = start(mk(), Some(core), Some((Want::Required, 100))).unwrap_err();
        assert!(
            matches!(e, PipelineError::Host { .. }) && e.to_string().contains("EINVAL"),
            "{e}"
        );
    }
}
