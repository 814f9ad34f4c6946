//! The engine: builds the stages and their links from an [`EngineConfig`] and deploys them in
//! one of the three threading modes.
//!
//! ```text
//! md ring ─► [ingest] ─► [features] ─► [inference] ─► [health] ─► signal ring
//!                            │ bars            ▲ forecasts  │ scored vectors, while a
//!                            └─(conflate)─► [forecast] ─(conflate)┘ candidate is set
//!                                                           └─(drop-oldest)─► [shadow]
//! every stage ──histogram sets over SPSC──► [reporter]
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tickpipe_shm::{Region, RingWriter};

use crate::PipelineError;
use crate::builder::Extensions;
use crate::config::{EngineConfig, STAGES, ThreadingMode};
use crate::feature_engine::{FeatureEngine, FeatureEngineCounts};
use crate::forecast::ForecastCounts;
use crate::health::monitor::{HealthControl, HealthSource, MonitorThread, PageSink, stderr_log};
use crate::health::{
    HealthCounters, HealthInputs, HealthMonitor, HealthSnapshot, N_STAGES, WriterHealth,
};
use crate::host::{Outcome, SettingOutcome, Want};
use crate::inference::{InferenceCounts, InferenceEngine};
use crate::latency::IntervalP99;
use crate::latency::{LatencySink, Reporter, StageLatency};
use crate::link::{LinkCounts, LinkStats, Message, Policy, link};
use crate::msg::{BarMsg, Event, Forecast, Tick};
use crate::source::MdSource;
use crate::stage::{CompositeStage, DutyStats, Invoker, Stage, StageRunner, ThreadHooks};
use crate::stages::{
    FeatureStage, FeatureStats, ForecastStage, InferenceStage, IngestCounts, IngestStage,
    IngestStats, ModelStats, PublishStage, clock_ticks_per_ms,
};

/// Index of the slow lane (`forecast`) in [`STAGES`].
const SLOW_LANE: usize = 4;

/// A stage with its index in [`STAGES`].
type Indexed = (usize, Box<dyn Stage>);

/// A running engine.
pub struct Engine {
    mode: ThreadingMode,
    runners: Vec<StageRunner>,
    reporter: Option<StageRunner>,
    invoker: Option<Invoker>,
    stop: Arc<AtomicBool>,
    abort: Arc<AtomicBool>,
    links: Vec<Arc<LinkStats>>,
    ingest: Arc<IngestStats>,
    features: Arc<FeatureStats>,
    inference: Arc<ModelStats<InferenceCounts>>,
    forecast: Option<Arc<ModelStats<ForecastCounts>>>,
    model_control: Option<crate::swap::ModelControl>,
    shadow_control: Option<crate::shadow::ShadowControl>,
    shadow: Option<Arc<ModelStats<crate::shadow::ShadowSummary>>>,
    published: Arc<AtomicU64>,
    slow_processed: Option<Arc<AtomicU64>>,
    sink: LatencySink,
    clock: quanta::Clock,
    started: Instant,
    health: Option<MonitorThread>,
    host: Vec<SettingOutcome>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// What a finished engine did.
#[derive(Debug, Clone)]
pub struct EngineReport {
    /// Threading mode.
    pub mode: ThreadingMode,
    /// Per-stage latency (raw ticks; convert with [`crate::latency::ticks_to_ns`] and `clock`).
    pub stages: Vec<StageLatency>,
    /// Link counters.
    pub links: Vec<LinkCounts>,
    /// Ingest counters.
    pub ingest: IngestCounts,
    /// Order book and feature counters.
    pub features: FeatureEngineCounts,
    /// Inference counters.
    pub inference: InferenceCounts,
    /// Slow-lane forecaster counters (with a model on the lane).
    pub forecast: Option<ForecastCounts>,
    /// Signals published (one per feature vector).
    pub signals: u64,
    /// Messages the slow lane processed (if enabled).
    pub slow_processed: Option<u64>,
    /// Duty cycles per thread.
    pub threads: Vec<(String, DutyStats)>,
    /// From start to the end of the join.
    pub elapsed: Duration,
    /// The clock the stages stamped with.
    pub clock: quanta::Clock,
    /// The health monitor's last rollup (with the monitor enabled).
    pub health: Option<HealthSnapshot>,
    /// The shadow stage's last measurements (with the shadow lane enabled).
    pub shadow: Option<crate::shadow::ShadowSummary>,
}

impl EngineReport {
    /// Messages lost or thinned anywhere: laps at ingest, undecodable frames, slow-lane drops and
    /// conflations (each counted where it happened).
    pub fn main_path_loss(&self) -> u64 {
        self.ingest.missed
            + self.ingest.undecodable
            + self
                .links
                .iter()
                .filter(|l| l.policy == Policy::Backpressure)
                .map(|l| l.dropped + l.conflated)
                .sum::<u64>()
    }
}

impl Engine {
    /// Builds every stage and link (all allocation happens here and in the stages' `on_start`)
    /// and starts them as `cfg.mode` says. In [`ThreadingMode::Invoker`] nothing runs until
    /// [`Engine::invoke`].
    ///
    /// # Errors
    /// An invalid configuration, a thread that cannot be spawned or pinned, or a stage whose
    /// `on_start` fails. Threads already started are stopped before the error is returned.
    ///
    /// `reader` is the market-data source: the shared-memory ring's reader, a
    /// [`crate::udp::UdpSource`], or any other [`MdSource`].
    pub fn start<S, W>(
        cfg: &EngineConfig,
        reader: S,
        signals: RingWriter<W>,
        clock: quanta::Clock,
        hooks: ThreadHooks,
    ) -> Result<Engine, PipelineError>
    where
        S: MdSource + 'static,
        W: Region + Send + 'static,
    {
        Self::start_with(cfg, reader, signals, clock, hooks, Extensions::default())
    }

    /// [`Engine::start`] with what an [`crate::builder::EngineBuilder`] adds: taps on the
    /// publish stage, user stages and a user scoring model.
    pub(crate) fn start_with<S, W>(
        cfg: &EngineConfig,
        reader: S,
        signals: RingWriter<W>,
        clock: quanta::Clock,
        hooks: ThreadHooks,
        ext: Extensions,
    ) -> Result<Engine, PipelineError>
    where
        S: MdSource + 'static,
        W: Region + Send + 'static,
    {
        cfg.validate()?;
        let Extensions {
            taps,
            tap_links,
            stages: user_stages,
            scorer,
        } = ext;
        let interval = clock_ticks_per_ms(&clock)
            .saturating_mul(cfg.report_interval.as_micros() as u64)
            / 1000;
        let (mut reporter, sink) = Reporter::new();
        let interval_p99 = reporter.interval_p99();
        let health_counters = Arc::new(HealthCounters::default());
        let writer_pid = reader.writer_pid();
        let mut links = Vec::new();
        fn main_link<M: Message>(
            name: &str,
            cfg: &EngineConfig,
        ) -> Result<crate::link::Link<M>, PipelineError> {
            link(name, cfg.link_capacity, Policy::Backpressure, 0)
        }
        let (ingest_tx, features_rx, stats) = main_link::<Event>("ingest->features", cfg)?;
        links.push(stats);
        let (features_tx, inference_rx, stats) = main_link::<Tick>("features->inference", cfg)?;
        links.push(stats);
        let (inference_tx, health_rx, stats) = main_link::<Tick>("inference->health", cfg)?;
        links.push(stats);
        let feature_engine = FeatureEngine::new(&cfg.features.engine_config())?;
        let feature_stats = Arc::new(FeatureStats::default());
        let max_instruments = cfg.features.max_instruments;
        let inference_engine = InferenceEngine::new(
            &cfg.models.inference(max_instruments),
            cfg.features.time_source,
        )?
        .with_user_scorer(scorer)?;
        let inference_stats = Arc::new(ModelStats::default());
        let (model_control, swap_port) =
            crate::swap::swap_channel(cfg.models.stability, max_instruments);
        let mut forecast_stats = None;
        let (lane_tx, forecast_rx, lane_stage, slow_processed) = match cfg.effective_slow_lane() {
            Some(lane) => {
                let (tx, rx, stats) = link::<BarMsg>(
                    "features->forecast",
                    lane.capacity,
                    lane.policy,
                    lane.overflow,
                )?;
                links.push(stats);
                // Forecasts back to inference: one per bar at most, the latest per instrument
                // is all inference keeps, so conflating loses nothing it would use.
                let (back, (ftx, frx)) = match &cfg.models.lstm {
                    Some(_) => {
                        let (ftx, frx, stats) = link::<Forecast>(
                            "forecast->inference",
                            lane.capacity,
                            Policy::ConflateLatest,
                            lane.overflow,
                        )?;
                        links.push(stats);
                        (true, (Some(ftx), Some(frx)))
                    }
                    None => (false, (None, None)),
                };
                let processed = Arc::new(AtomicU64::new(0));
                let fstats = Arc::new(ModelStats::default());
                if back {
                    forecast_stats = Some(fstats.clone());
                }
                let stage = ForecastStage::new(
                    rx,
                    ftx,
                    cfg.models.lstm.clone().map(|p| (p, max_instruments)),
                    clock.clone(),
                    lane.work.as_nanos() as u64,
                    reporter.recorder("forecast", interval)?,
                    processed.clone(),
                    fstats,
                );
                (
                    Some((tx, cfg.models.lstm_bars_ns)),
                    frx,
                    Some(stage),
                    Some(processed),
                )
            }
            None => (None, None, None, None),
        };
        let mut shadow_stats = None;
        let (shadow_tap, shadow_stage, shadow_control) = if cfg.shadow.enabled {
            let (tx, rx, stats) = link::<Tick>(
                "inference->shadow",
                cfg.shadow.capacity,
                Policy::DropOldest,
                cfg.shadow.overflow,
            )?;
            links.push(stats);
            let (control, port, tap) = crate::shadow::shadow_channel(
                &cfg.shadow,
                cfg.models.stability,
                max_instruments,
                tx,
            );
            let stats = Arc::new(ModelStats::default());
            shadow_stats = Some(stats.clone());
            let stage = crate::shadow::ShadowStage::new(
                rx,
                port,
                crate::shadow::ShadowEngine::new(max_instruments, cfg.features.time_source)?,
                clock.clone(),
                stats,
            );
            (Some(tap), Some(stage), Some(control))
        } else {
            (None, None, None)
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ingest_stats = Arc::new(IngestStats::default());
        let published = Arc::new(AtomicU64::new(0));
        let mut stages: Vec<Indexed> = vec![
            (
                0,
                Box::new(IngestStage::new(
                    reader,
                    ingest_tx,
                    cfg.batch,
                    clock.clone(),
                    reporter.recorder("ingest", interval)?,
                    stop.clone(),
                    ingest_stats.clone(),
                )),
            ),
            (
                1,
                Box::new(FeatureStage::new(
                    features_rx,
                    features_tx,
                    lane_tx,
                    feature_engine,
                    cfg.batch,
                    clock.clone(),
                    reporter.recorder("features", interval)?,
                    feature_stats.clone(),
                )),
            ),
            (
                2,
                Box::new(
                    InferenceStage::new(
                        inference_rx,
                        inference_tx,
                        forecast_rx,
                        Some(swap_port),
                        inference_engine,
                        cfg.batch,
                        clock.clone(),
                        reporter.recorder("inference", interval)?,
                        inference_stats.clone(),
                    )
                    .with_shadow(shadow_tap),
                ),
            ),
        ];
        if let Some(lane) = lane_stage {
            stages.push((SLOW_LANE, Box::new(lane)));
        }
        // The shadow runs where the slow lane is placed (on its thread in shared mode).
        if let Some(shadow) = shadow_stage {
            stages.push((SLOW_LANE, Box::new(shadow)));
        }
        stages.push((
            3,
            Box::new(
                PublishStage::new(
                    health_rx,
                    signals,
                    cfg.batch,
                    clock.clone(),
                    reporter.recorder("health", interval)?,
                    published.clone(),
                    health_counters.clone(),
                )
                .with_taps(taps),
            ),
        ));
        links.extend(tap_links);

        let abort = Arc::new(AtomicBool::new(false));
        let mut engine = Engine {
            mode: cfg.mode,
            runners: Vec::new(),
            reporter: None,
            invoker: None,
            stop,
            abort: abort.clone(),
            links,
            ingest: ingest_stats,
            features: feature_stats,
            inference: inference_stats,
            forecast: forecast_stats,
            model_control: Some(model_control),
            shadow_control,
            shadow: shadow_stats,
            published,
            slow_processed,
            sink,
            clock: clock.clone(),
            started: Instant::now(),
            health: None,
            host: Vec::new(),
        };
        match cfg.mode {
            ThreadingMode::Invoker => {
                let mut all: Vec<Box<dyn Stage>> = stages.into_iter().map(|(_, s)| s).collect();
                all.extend(user_stages.into_iter().map(|(s, _)| s));
                all.push(Box::new(reporter));
                let mut invoker = Invoker::new(Box::new(CompositeStage::new(all)));
                invoker.start()?;
                engine.invoker = Some(invoker);
            }
            ThreadingMode::Dedicated | ThreadingMode::Shared => {
                // Dedicated: a thread per stage. Shared: a thread per core, unpinned stages
                // together on one, the slow lane always on its own; each thread runs its stages
                // in pipeline order.
                let mut groups: Vec<(Option<usize>, Vec<Indexed>)> = Vec::new();
                for (i, stage) in stages {
                    let core = cfg.stages[i].core;
                    // The slow lane never shares a thread with the main path: its work (an ONNX
                    // Runtime call per bar, a shadow candidate per vector) would stall every
                    // stage on that thread. Its stages (forecast, shadow) share one.
                    let slot = match cfg.mode {
                        ThreadingMode::Shared => groups.iter().position(|(c, g)| {
                            *c == core
                                && g.iter().all(|(j, _)| (*j == SLOW_LANE) == (i == SLOW_LANE))
                        }),
                        _ => None,
                    };
                    match slot {
                        Some(g) => groups[g].1.push((i, stage)),
                        None => groups.push((core, vec![(i, stage)])),
                    }
                }
                let start = |core, group: Vec<Indexed>| {
                    // The strictest idle strategy of the group's stages (first listed wins).
                    let idle = cfg.stages[group[0].0].idle;
                    let stage: Box<dyn Stage> = if group.len() == 1 {
                        group.into_iter().next().map(|(_, s)| s).expect("one stage")
                    } else {
                        Box::new(CompositeStage::new(
                            group.into_iter().map(|(_, s)| s).collect(),
                        ))
                    };
                    let realtime = Some((cfg.host.realtime, cfg.host.realtime_priority));
                    StageRunner::start_realtime(stage, core, idle, hooks, abort.clone(), realtime)
                };
                // Downstream first, so that a consumer is polling before its producer runs:
                // user stages (fed by the publish stage) before the pipeline.
                for (stage, at) in user_stages {
                    match StageRunner::start(stage, at.core, at.idle, hooks, abort.clone()) {
                        Ok(r) => engine.runners.push(r),
                        Err(e) => {
                            engine.abort_and_join();
                            return Err(e);
                        }
                    }
                }
                for (core, group) in groups.into_iter().rev() {
                    match start(core, group) {
                        Ok(r) => engine.runners.push(r),
                        Err(e) => {
                            engine.abort_and_join();
                            return Err(e);
                        }
                    }
                }
                match StageRunner::start(
                    Box::new(reporter),
                    cfg.reporter.core,
                    cfg.reporter.idle,
                    ThreadHooks::default(),
                    abort.clone(),
                ) {
                    Ok(r) => engine.reporter = Some(r),
                    Err(e) => {
                        engine.abort_and_join();
                        return Err(e);
                    }
                }
            }
        }
        if cfg.health.enabled {
            let probe = EngineProbe {
                counters: health_counters.clone(),
                ingest: engine.ingest.clone(),
                links: engine.links.clone(),
                interval: interval_p99,
                published: engine.published.clone(),
                clock,
                writer_pid,
                last_sets: [0; N_STAGES],
            };
            let page = match &cfg.health.page {
                Some(path) => match crate::health::shm_page::create(path) {
                    Ok(p) => Some(Box::new(p) as Box<dyn PageSink>),
                    Err(e) => {
                        engine.abort_and_join();
                        return Err(e);
                    }
                },
                None => None,
            };
            match MonitorThread::spawn(
                HealthMonitor::new(cfg.health.clone()),
                Box::new(probe),
                health_counters,
                page,
                stderr_log(),
            ) {
                Ok(m) => engine.health = Some(m),
                Err(e) => {
                    engine.abort_and_join();
                    return Err(e);
                }
            }
        }
        engine.host = engine.realtime_outcomes(cfg);
        // Dropping the engine on this error stops and joins everything started.
        crate::host::HostReport {
            outcomes: engine.host.clone(),
        }
        .check_required()?;
        engine.started = Instant::now();
        Ok(engine)
    }

    fn realtime_outcomes(&self, cfg: &EngineConfig) -> Vec<SettingOutcome> {
        let want = cfg.host.realtime;
        let mut out: Vec<SettingOutcome> = self
            .runners
            .iter()
            .rev()
            .filter_map(|r| r.realtime().cloned())
            .collect();
        if out.is_empty() {
            let why = match cfg.mode {
                ThreadingMode::Invoker => "invoker mode runs on the caller's thread",
                _ => "no stage thread is pinned (SCHED_FIFO is only for pinned stage threads)",
            };
            out.push(SettingOutcome {
                setting: "realtime".into(),
                want,
                outcome: if want == Want::Off {
                    Outcome::Off
                } else {
                    Outcome::Unavailable(why.into())
                },
            });
        }
        out
    }

    /// What became of the `[host] realtime` setting: one outcome per pinned stage thread (or
    /// one saying why no thread was eligible).
    pub fn host_outcomes(&self) -> &[SettingOutcome] {
        &self.host
    }

    /// A handle on the health monitor (kill switch, latest rollup), when it runs.
    pub fn health(&self) -> Option<HealthControl> {
        self.health.as_ref().map(MonitorThread::control)
    }

    fn abort_and_join(&mut self) {
        // Relaxed: the flag carries no data; the joins below order everything after it.
        self.abort.store(true, Ordering::Relaxed);
        for r in self.runners.drain(..) {
            let _ = r.join();
        }
        if let Some(r) = self.reporter.take() {
            let _ = r.join();
        }
    }

    /// The flag that stops ingest (then the rest drains and finishes): set it from a signal
    /// handler or another thread.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Stops ingest; the stages behind it drain what is in flight.
    pub fn stop(&self) {
        // Relaxed: see `stop_handle`.
        self.stop.store(true, Ordering::Relaxed);
    }

    /// One duty cycle of every stage, in pipeline order (Invoker mode; 0 otherwise).
    pub fn invoke(&mut self) -> usize {
        self.invoker.as_mut().map_or(0, Invoker::invoke)
    }

    /// Whether every stage has finished (Invoker mode: checked directly; threaded modes: every
    /// thread has ended).
    pub fn is_done(&self) -> bool {
        match &self.invoker {
            Some(inv) => inv.is_done(),
            None => self.runners.iter().all(StageRunner::is_finished),
        }
    }

    /// Link counters, now.
    pub fn links(&self) -> Vec<LinkCounts> {
        self.links.iter().map(|l| l.counts()).collect()
    }

    /// Ingest counters, now.
    pub fn ingest(&self) -> IngestCounts {
        self.ingest.counts()
    }

    /// The ingest counters as a shared handle, for another thread that follows progress while
    /// the engine runs.
    pub fn ingest_stats(&self) -> Arc<IngestStats> {
        self.ingest.clone()
    }

    /// The handle that swaps the inference stage's models while it runs (see [`crate::swap`]);
    /// `None` after the first call.
    pub fn model_control(&mut self) -> Option<crate::swap::ModelControl> {
        self.model_control.take()
    }

    /// The shadow lane's control (once; `None` after the first call or without the lane): sets
    /// candidates, reads their measurements, checks the promotion gate.
    pub fn shadow_control(&mut self) -> Option<crate::shadow::ShadowControl> {
        self.shadow_control.take()
    }

    /// Events the feature stage has seen and vectors it has emitted so far.
    pub fn feature_progress(&self) -> (u64, u64) {
        self.features.progress()
    }

    /// Signals published so far.
    pub fn signals_published(&self) -> u64 {
        // Relaxed: a counter.
        self.published.load(Ordering::Relaxed)
    }

    /// Waits for every stage to finish (stop it first, or let the market-data writer finish)
    /// and returns what the engine did. In Invoker mode this drives the remaining cycles.
    ///
    /// # Errors
    /// A stage thread panicked, or the reporter left no totals.
    pub fn join(mut self) -> Result<EngineReport, PipelineError> {
        let mut threads = Vec::new();
        if let Some(mut inv) = self.invoker.take() {
            while !inv.is_done() {
                inv.invoke();
            }
            inv.close();
            threads.push(("invoker".to_string(), DutyStats::default()));
        }
        let mut failure = None;
        for r in self.runners.drain(..) {
            let name = r.name().to_string();
            match r.join() {
                Ok(stats) => threads.push((name, stats)),
                Err(e) => failure = Some(e),
            }
        }
        if let Some(r) = self.reporter.take() {
            let name = r.name().to_string();
            match r.join() {
                Ok(stats) => threads.push((name, stats)),
                Err(e) => failure = Some(e),
            }
        }
        // The monitor's last tick sees the final totals.
        let health = self.health.take().map(MonitorThread::stop);
        if let Some(e) = failure {
            return Err(e);
        }
        let mut stages = self
            .sink
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .ok_or_else(|| PipelineError::Internal("the reporter left no totals".into()))?;
        stages.sort_by_key(|s| STAGES.iter().position(|n| *n == s.name));
        Ok(EngineReport {
            mode: self.mode,
            stages,
            links: self.links(),
            ingest: self.ingest(),
            features: self.features.last().unwrap_or_default(),
            inference: self.inference.last().unwrap_or_default(),
            forecast: self.forecast.as_ref().and_then(|f| f.last()),
            signals: self.signals_published(),
            slow_processed: self
                .slow_processed
                .as_ref()
                .map(|p| p.load(Ordering::Relaxed)),
            threads,
            elapsed: self.started.elapsed(),
            clock: self.clock.clone(),
            health,
            shadow: self.shadow.as_ref().and_then(|s| s.last()),
        })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.runners.is_empty() || self.reporter.is_some() {
            self.stop();
            self.abort_and_join();
        }
    }
}

/// What the health monitor samples from a running engine.
struct EngineProbe {
    counters: Arc<HealthCounters>,
    ingest: Arc<IngestStats>,
    links: Vec<Arc<LinkStats>>,
    interval: Arc<IntervalP99>,
    published: Arc<AtomicU64>,
    clock: quanta::Clock,
    writer_pid: u64,
    last_sets: [u64; N_STAGES],
}

impl HealthSource for EngineProbe {
    fn sample(&mut self, inp: &mut HealthInputs) {
        inp.features = self.counters.feature_totals();
        // Relaxed: monitoring values.
        let newest = self.counters.newest_publish_ticks.load(Ordering::Relaxed);
        inp.data_age = (newest != 0)
            .then(|| Duration::from_nanos(self.clock.delta_as_nanos(newest, self.clock.raw())));
        let w = self.ingest.writer();
        inp.writer = (w.heartbeat_ns != 0 || w.finished).then(|| WriterHealth {
            heartbeat_age: Duration::from_nanos(inp.unix_ns.saturating_sub(w.heartbeat_ns)),
            alive: self.writer_pid == 0 || tickpipe_shm::mapped::pid_alive(self.writer_pid),
            finished: w.finished,
        });
        for i in 0..N_STAGES {
            let sets = self.interval.sets[i].load(Ordering::Relaxed);
            inp.stage_p99_ns[i] = (sets != self.last_sets[i]).then(|| {
                self.clock
                    .delta_as_nanos(0, self.interval.service[i].load(Ordering::Relaxed))
            });
            if i == 3 {
                inp.e2e_p99_ns = (sets != self.last_sets[i]).then(|| {
                    self.clock
                        .delta_as_nanos(0, self.interval.e2e.load(Ordering::Relaxed))
                });
            }
            self.last_sets[i] = sets;
        }
        let ing = self.ingest.counts();
        inp.missed = ing.missed + ing.undecodable;
        let (mut dropped, mut slow, mut stalls, mut occ) = (0, 0, 0, 0f64);
        for l in &self.links {
            // Without the name: a tick of the monitor allocates nothing.
            let c = l.totals();
            if c.policy == Policy::Backpressure {
                dropped += c.dropped + c.conflated;
                stalls += c.stalls;
                occ = occ.max(c.pushed.saturating_sub(c.popped) as f64 / c.capacity.max(1) as f64);
            } else {
                slow += c.dropped + c.conflated;
            }
        }
        inp.dropped = dropped;
        inp.slow_lane_thinned = slow;
        inp.stalls = stalls;
        inp.max_occupancy = occ;
        inp.signals = self.published.load(Ordering::Relaxed);
    }
}
