//! Embedding the engine in a program of one's own: [`EngineBuilder`] puts together the
//! configuration, the market-data source, where signals go, the program's own models and
//! stages, and starts an [`Engine`].
//!
//! ```text
//! md ring ─► [ingest] ─► [features] ─► [inference] ─► [health] ─► signal ring (optional)
//!                                       + Scorer           │
//!                                                          ├─ inline SignalConsumer (same thread)
//!                                                          ├─(SPSC)─► [consumer thread] SignalConsumer
//!                                                          └─(SPSC)─► [user stage thread] UserStage
//! ```
//!
//! **Where user code runs.**
//! - A [`Scorer`] runs inside the inference stage, on every feature vector, after the built-in
//!   scoring model (XGBoost, `[models] xgboost`); its outputs fill the signal's scores after
//!   that model's, or in its place when none is configured. It is on the hot path: it must not
//!   block, allocate or make syscalls if the engine's guarantees are to hold.
//! - A [`SignalConsumer`] receives every published [`Signal`], in order. With
//!   [`Delivery::Thread`] (the default) it runs on a thread of its own, fed over a back-pressure
//!   SPSC link from the publish stage: its cost stays out of the pipeline's latency, and a
//!   consumer that falls behind fills the link and then slows the pipeline (counted as stalls
//!   on the link `health->NAME`) rather than losing signals. That is the default because the
//!   engine cannot know what a consumer costs: a consumer that sends orders or writes logs
//!   belongs off the publishing thread. [`Delivery::Inline`] calls it on the publish stage's own
//!   thread right after each signal is published: no hop and no extra core, for a consumer that
//!   is a few nanoseconds of non-blocking work (a counter, a flag); its time then counts in the
//!   publish stage's service time and in end-to-end latency.
//! - A [`UserStage`] receives every feature vector ([`Tick`]: the book state's identity, the
//!   features and the models' outputs, exactly what the signal was made from) on a thread of its
//!   own, fed the same way as a threaded consumer and run with the engine's idle strategy,
//!   pinned where its [`Placement`] says.
//! - Any [`Stage`] can also be added as it is ([`EngineBuilder::stage`]): it runs on a thread
//!   of its own with its placement, and wires its own inputs.
//!
//! In [`ThreadingMode::Invoker`](crate::ThreadingMode::Invoker) every one of them runs in the
//! caller's duty cycles, after the publish stage, like every other stage.
//!
//! ```no_run
//! use tickpipe_pipeline::builder::{Delivery, EngineBuilder};
//! use tickpipe_pipeline::signal::Signal;
//!
//! let mut buys = 0u64;
//! let engine = EngineBuilder::new()
//!     .config_file("tuning/profiles/shared.toml")
//!     .market_data_ring("/dev/shm/md.ring")
//!     .signal_ring("/dev/shm/signals.ring")
//!     .signal_consumer("buys", Delivery::default(), move |s: &Signal| {
//!         if s.n_scores > 0 && s.scores[0] > 0.5 {
//!             buys += 1;
//!         }
//!     })
//!     .start()?;
//! let report = engine.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tickpipe_shm::mapped::{self, AttachOptions, CreateOptions, MappedRegion, ShmError};
use tickpipe_shm::ring::{HeapRegion, content};
use tickpipe_shm::{Region, RingReader, RingWriter, StartAt, heap_ring};

use crate::PipelineError;
use crate::config::{EngineConfig, Placement};
use crate::engine::Engine;
use crate::link::{LinkStats, Message, Policy, Receiver, Sender, link};
use crate::msg::Tick;
use crate::signal::{SIGNAL_LEN, SIGNAL_META, Signal};
use crate::stage::{Stage, ThreadHooks};

/// Index of the publish stage (`health`) in [`crate::config::STAGES`]: user stages idle as it
/// does unless told otherwise.
const PUBLISH: usize = 3;

/// A scoring model of the embedding program's own, run by the inference stage on every feature
/// vector after the built-in scoring model.
///
/// `score` runs on the hot path: it must not block, and to keep the engine free of allocation
/// and syscalls it must not allocate or call the kernel either. Feature columns are in
/// [`crate::features::SCHEMA`] order (look names up once, when the scorer is built).
pub trait Scorer: Send {
    /// A name for errors and logs.
    fn name(&self) -> &str;

    /// Outputs per vector (1 to [`crate::msg::MAX_SCORES`] together with the built-in model's).
    fn outputs(&self) -> usize;

    /// Scores one vector: `tick.values` holds the features, and the regime model's and built-in
    /// scoring model's outputs are already filled. Writes `out` (`outputs()` values, fewer only
    /// if a hot-swapped built-in model left less room).
    fn score(&mut self, tick: &Tick, out: &mut [f32]);
}

impl std::fmt::Debug for dyn Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("name", &self.name())
            .field("outputs", &self.outputs())
            .finish()
    }
}

/// Receives every signal the engine publishes, in order (see the module documentation for the
/// thread it runs on). Any `FnMut(&Signal) + Send` closure is one.
pub trait SignalConsumer: Send {
    /// Runs once before the first signal, on the thread that will call `on_signal`.
    ///
    /// # Errors
    /// Anything that makes the consumer unable to run: the engine does not start.
    fn on_start(&mut self) -> Result<(), PipelineError> {
        Ok(())
    }

    /// One published signal.
    fn on_signal(&mut self, signal: &Signal);

    /// Runs once after the last signal (the engine has drained).
    fn on_close(&mut self) {}
}

impl<F: FnMut(&Signal) + Send> SignalConsumer for F {
    fn on_signal(&mut self, signal: &Signal) {
        self(signal)
    }
}

/// A stage of the embedding program's own, fed every feature vector the engine publishes (the
/// [`Tick`] each signal was made from), in order, on a thread of its own.
pub trait UserStage: Send {
    /// The stage's name; also its thread's name and its link's (`health->NAME`).
    fn name(&self) -> &str;

    /// Runs once on the stage's thread (after pinning), before the first tick: allocate and
    /// touch state here.
    ///
    /// # Errors
    /// Anything that makes the stage unable to run: the engine does not start.
    fn on_start(&mut self) -> Result<(), PipelineError> {
        Ok(())
    }

    /// One feature vector with the models' outputs.
    fn on_tick(&mut self, tick: &Tick);

    /// Runs once after the last tick (the engine has drained), on the stage's thread.
    fn on_close(&mut self) {}
}

/// Where a [`SignalConsumer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// On the publish stage's thread, right after each signal is published.
    Inline,
    /// On a thread of its own, fed over a back-pressure SPSC link; `None` runs it unpinned with
    /// the publish stage's idle strategy.
    Thread(Option<Placement>),
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery::Thread(None)
    }
}

/// Why the engine was not built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither a market-data ring nor a reader was given.
    #[error(
        "no market-data source: give one with `market_data_ring` or `market_data_reader` \
         (or `md_ring` in the config)"
    )]
    MissingSource,
    /// Signals would go nowhere.
    #[error(
        "signals would go nowhere: give a signal ring or writer, a signal consumer or a user \
         stage (or `signal_ring` in the config)"
    )]
    NoOutput,
    /// The configuration (file or struct) is invalid, or a user model does not fit it.
    #[error("{0}")]
    Config(PipelineError),
    /// The market-data ring could not be attached.
    #[error("market-data ring {}: {source}", path.display())]
    Attach {
        /// The ring.
        path: PathBuf,
        /// Why.
        source: ShmError,
    },
    /// The ring attached is not a market-data (DBN) ring.
    #[error("market-data ring {}: the ring does not carry DBN records", path.display())]
    NotMarketData {
        /// The ring.
        path: PathBuf,
    },
    /// The signal ring could not be created.
    #[error("signal ring {}: {source}", path.display())]
    SignalRing {
        /// The ring.
        path: PathBuf,
        /// Why.
        source: ShmError,
    },
    /// A stage could not start (a thread, a core to pin to, a model that fails to load).
    #[error("{0}")]
    Start(PipelineError),
}

impl From<PipelineError> for BuildError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Config { .. } => BuildError::Config(e),
            other => BuildError::Start(other),
        }
    }
}

enum ConfigSource {
    Default,
    Struct(Box<EngineConfig>),
    File(PathBuf),
}

enum Source<R: Region> {
    Path(PathBuf, StartAt),
    Reader(RingReader<R>),
}

enum Output<W: Region> {
    None,
    Path(PathBuf),
    Writer(RingWriter<W>),
}

/// Builds an [`Engine`] step by step (see the module documentation).
///
/// `R` and `W` are the regions of a market-data reader and a signal writer handed over as
/// values ([`EngineBuilder::market_data_reader`], [`EngineBuilder::signal_writer`]); rings named
/// by path are file mappings.
pub struct EngineBuilder<R: Region = MappedRegion, W: Region = MappedRegion> {
    config: ConfigSource,
    source: Option<Source<R>>,
    output: Output<W>,
    consumers: Vec<(String, Box<dyn SignalConsumer>, Delivery)>,
    user_stages: Vec<(Box<dyn UserStage>, Option<Placement>)>,
    stages: Vec<(Box<dyn Stage>, Option<Placement>)>,
    scorer: Option<Box<dyn Scorer>>,
    hooks: ThreadHooks,
    clock: Option<quanta::Clock>,
    wait: Duration,
}

impl<R: Region, W: Region> std::fmt::Debug for EngineBuilder<R, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder")
            .field("consumers", &self.consumers.len())
            .field("user_stages", &self.user_stages.len())
            .field("stages", &self.stages.len())
            .field("scorer", &self.scorer)
            .finish_non_exhaustive()
    }
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EngineBuilder {
    /// A builder with the default configuration and nothing attached.
    pub fn new() -> Self {
        Self {
            config: ConfigSource::Default,
            source: None,
            output: Output::None,
            consumers: Vec::new(),
            user_stages: Vec::new(),
            stages: Vec::new(),
            scorer: None,
            hooks: ThreadHooks::default(),
            clock: None,
            wait: Duration::ZERO,
        }
    }
}

impl<R, W> EngineBuilder<R, W>
where
    R: Region + Send + 'static,
    W: Region + Send + 'static,
{
    /// Uses `config` (validated at [`EngineBuilder::start`]).
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = ConfigSource::Struct(Box::new(config));
        self
    }

    /// Reads the configuration from a TOML profile at [`EngineBuilder::start`] (relative model
    /// paths are taken from the file's folder).
    pub fn config_file(mut self, path: impl AsRef<Path>) -> Self {
        self.config = ConfigSource::File(path.as_ref().to_path_buf());
        self
    }

    /// Attaches to the market-data ring at `path` at [`EngineBuilder::start`], reading from the
    /// oldest record still held.
    pub fn market_data_ring(self, path: impl AsRef<Path>) -> Self {
        self.market_data_ring_at(path, StartAt::Oldest)
    }

    /// Attaches to the market-data ring at `path`, starting at `start`.
    pub fn market_data_ring_at(mut self, path: impl AsRef<Path>, start: StartAt) -> Self {
        self.source = Some(Source::Path(path.as_ref().to_path_buf(), start));
        self
    }

    /// How long [`EngineBuilder::start`] waits for a market-data ring named by path to be ready
    /// (default: not at all).
    pub fn attach_wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Reads market data from `reader` (an in-process heap ring, or a ring attached already).
    pub fn market_data_reader<R2>(self, reader: RingReader<R2>) -> EngineBuilder<R2, W>
    where
        R2: Region + Send + 'static,
    {
        EngineBuilder {
            config: self.config,
            source: Some(Source::Reader(reader)),
            output: self.output,
            consumers: self.consumers,
            user_stages: self.user_stages,
            stages: self.stages,
            scorer: self.scorer,
            hooks: self.hooks,
            clock: self.clock,
            wait: self.wait,
        }
    }

    /// Creates the signal ring at `path` at [`EngineBuilder::start`] (`signal_capacity` bytes
    /// from the configuration); it is removed again if the engine then fails to start.
    pub fn signal_ring(mut self, path: impl AsRef<Path>) -> Self {
        self.output = Output::Path(path.as_ref().to_path_buf());
        self
    }

    /// Publishes signals into `writer` (a ring with [`SIGNAL_META`] metadata and room for
    /// [`SIGNAL_LEN`]-byte payloads).
    pub fn signal_writer<W2>(self, writer: RingWriter<W2>) -> EngineBuilder<R, W2>
    where
        W2: Region + Send + 'static,
    {
        EngineBuilder {
            config: self.config,
            source: self.source,
            output: Output::Writer(writer),
            consumers: self.consumers,
            user_stages: self.user_stages,
            stages: self.stages,
            scorer: self.scorer,
            hooks: self.hooks,
            clock: self.clock,
            wait: self.wait,
        }
    }

    /// Hands every published signal to `consumer` (see [`Delivery`]); `name` names its thread
    /// and link.
    pub fn signal_consumer(
        mut self,
        name: &str,
        delivery: Delivery,
        consumer: impl SignalConsumer + 'static,
    ) -> Self {
        self.consumers
            .push((name.to_string(), Box::new(consumer), delivery));
        self
    }

    /// Runs `stage` on a thread of its own, fed every published feature vector; `placement`
    /// pins it (`None`: unpinned, idling as the publish stage does).
    pub fn user_stage(
        mut self,
        stage: impl UserStage + 'static,
        placement: Option<Placement>,
    ) -> Self {
        self.user_stages.push((Box::new(stage), placement));
        self
    }

    /// Runs a [`Stage`] of the program's own on a thread of its own (it wires its own inputs).
    pub fn stage(mut self, stage: impl Stage + 'static, placement: Option<Placement>) -> Self {
        self.stages.push((Box::new(stage), placement));
        self
    }

    /// Runs `scorer` in the inference stage on every vector (see [`Scorer`]).
    pub fn scorer(mut self, scorer: impl Scorer + 'static) -> Self {
        self.scorer = Some(Box::new(scorer));
        self
    }

    /// Functions run on every stage thread around its duty loop (instrumentation).
    pub fn thread_hooks(mut self, hooks: ThreadHooks) -> Self {
        self.hooks = hooks;
        self
    }

    /// The clock the stages stamp with (default: a new calibrated TSC clock).
    pub fn clock(mut self, clock: quanta::Clock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates everything, attaches and creates the rings, loads the models and starts the
    /// stages (as [`Engine::start`]).
    ///
    /// # Errors
    /// [`BuildError::MissingSource`] or [`BuildError::NoOutput`] for an incomplete builder;
    /// [`BuildError::Config`] for an invalid configuration or a user model that does not fit;
    /// [`BuildError::Attach`], [`BuildError::NotMarketData`] or [`BuildError::SignalRing`] for
    /// the rings; [`BuildError::Start`] for a stage that cannot start.
    pub fn start(self) -> Result<Engine, BuildError> {
        let cfg = match self.config {
            ConfigSource::Default => EngineConfig::default(),
            ConfigSource::Struct(c) => *c,
            ConfigSource::File(p) => EngineConfig::load(&p).map_err(BuildError::Config)?,
        };
        cfg.validate().map_err(BuildError::Config)?;
        let source = match (self.source, &cfg.md_ring) {
            (Some(s), _) => s,
            (None, Some(p)) => Source::Path(p.clone(), StartAt::Oldest),
            (None, None) => return Err(BuildError::MissingSource),
        };
        let output = match (self.output, &cfg.signal_ring) {
            (Output::None, Some(p)) => Output::Path(p.clone()),
            (o, _) => o,
        };
        if matches!(output, Output::None)
            && self.consumers.is_empty()
            && self.user_stages.is_empty()
        {
            return Err(BuildError::NoOutput);
        }
        let placement = |p: Option<Placement>| {
            p.unwrap_or(Placement {
                core: None,
                idle: cfg.stages[PUBLISH].idle,
            })
        };
        let mut ext = Extensions {
            scorer: self.scorer,
            ..Extensions::default()
        };
        let batch = cfg.batch.max(1);
        for (name, consumer, delivery) in self.consumers {
            match delivery {
                Delivery::Inline => ext.taps.inline.push(consumer),
                Delivery::Thread(at) => {
                    let (tx, rx, stats) = link::<SignalMsg>(
                        &format!("health->{name}"),
                        cfg.link_capacity,
                        Policy::Backpressure,
                        0,
                    )?;
                    ext.taps.signals.push(tx);
                    ext.tap_links.push(stats);
                    let stage = TapStage::new(name, rx, batch, consumer);
                    ext.stages.push((Box::new(stage), placement(at)));
                }
            }
        }
        for (stage, at) in self.user_stages {
            let name = stage.name().to_string();
            let (tx, rx, stats) = link::<Tick>(
                &format!("health->{name}"),
                cfg.link_capacity,
                Policy::Backpressure,
                0,
            )?;
            ext.taps.ticks.push(tx);
            ext.tap_links.push(stats);
            ext.stages.push((
                Box::new(TapStage::new(name, rx, batch, stage)),
                placement(at),
            ));
        }
        if !ext.taps.signals.is_empty() {
            ext.taps.sig_buf = vec![SignalMsg::default(); batch];
        }
        for (stage, at) in self.stages {
            ext.stages.push((stage, placement(at)));
        }
        let clock = self.clock.unwrap_or_default();
        let hooks = self.hooks;
        match source {
            Source::Reader(reader) => start_output(&cfg, reader, output, clock, hooks, ext),
            Source::Path(path, start) => {
                let reader = mapped::attach_wait(
                    &path,
                    AttachOptions {
                        start,
                        read_only: false,
                    },
                    self.wait,
                )
                .map_err(|source| BuildError::Attach {
                    path: path.clone(),
                    source,
                })?;
                if reader.info().writer.content_tag != content::DBN {
                    return Err(BuildError::NotMarketData { path });
                }
                start_output(&cfg, reader, output, clock, hooks, ext)
            }
        }
    }
}

/// Bytes of the private signal ring used when signals go only to in-process consumers: nobody
/// reads it, so it only has to hold one batch's frames (the publish cost stays what it is with
/// a real ring, which keeps latency figures comparable).
const PRIVATE_SIGNAL_RING: usize = 1 << 20;

fn start_output<R, W>(
    cfg: &EngineConfig,
    reader: RingReader<R>,
    output: Output<W>,
    clock: quanta::Clock,
    hooks: ThreadHooks,
    ext: Extensions,
) -> Result<Engine, BuildError>
where
    R: Region + Send + 'static,
    W: Region + Send + 'static,
{
    match output {
        Output::Writer(w) => Ok(Engine::start_with(cfg, reader, w, clock, hooks, ext)?),
        Output::None => {
            let (w, _) = heap_ring(
                PRIVATE_SIGNAL_RING,
                SIGNAL_LEN,
                &SIGNAL_META,
                content::SIGNALS,
            )
            .map_err(|e| BuildError::Start(PipelineError::Internal(e.to_string())))?;
            let w: RingWriter<Arc<HeapRegion>> = w;
            Ok(Engine::start_with(cfg, reader, w, clock, hooks, ext)?)
        }
        Output::Path(path) => {
            let w = mapped::create(
                &path,
                &CreateOptions {
                    capacity: cfg.signal_capacity,
                    max_payload: SIGNAL_LEN,
                    content_tag: content::SIGNALS,
                    group: None,
                },
                &SIGNAL_META,
            )
            .map_err(|source| BuildError::SignalRing {
                path: path.clone(),
                source,
            })?;
            Engine::start_with(cfg, reader, w, clock, hooks, ext).map_err(|e| {
                // Nothing will ever write it: do not leave a ring that looks alive.
                let _ = std::fs::remove_file(&path);
                BuildError::from(e)
            })
        }
    }
}

/// What a builder adds to the engine [`Engine::start`] builds.
#[derive(Default)]
pub(crate) struct Extensions {
    /// Fed by the publish stage.
    pub(crate) taps: Taps,
    /// The taps' links, for the engine's counters.
    pub(crate) tap_links: Vec<Arc<LinkStats>>,
    /// Stages on threads of their own (or in the invoker's cycles), with their placement.
    pub(crate) stages: Vec<(Box<dyn Stage>, Placement)>,
    /// The user's scoring model.
    pub(crate) scorer: Option<Box<dyn Scorer>>,
}

/// A signal on its way to a consumer's thread.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SignalMsg {
    signal: Signal,
    enqueue_ticks: u64,
}

impl Message for SignalMsg {
    #[inline]
    fn key(&self) -> u32 {
        self.signal.instrument_id
    }
    #[inline]
    fn enqueue_ticks(&self) -> u64 {
        self.enqueue_ticks
    }
    #[inline]
    fn set_enqueue_ticks(&mut self, ticks: u64) {
        self.enqueue_ticks = ticks;
    }
}

/// The publish stage's in-process outputs. Every buffer is allocated when the engine is built.
#[derive(Default)]
pub(crate) struct Taps {
    ticks: Vec<Sender<Tick>>,
    signals: Vec<Sender<SignalMsg>>,
    inline: Vec<Box<dyn SignalConsumer>>,
    sig_buf: Vec<SignalMsg>,
}

impl Taps {
    /// Runs the inline consumers' `on_start` (on the publish stage's thread).
    pub(crate) fn on_start(&mut self) -> Result<(), PipelineError> {
        self.inline.iter_mut().try_for_each(|c| c.on_start())
    }

    /// The most ticks every linked tap has room for (`usize::MAX` without one).
    #[inline]
    pub(crate) fn room(&self) -> usize {
        let ticks = self.ticks.iter().map(Sender::free);
        let signals = self.signals.iter().map(Sender::free);
        ticks.chain(signals).min().unwrap_or(usize::MAX)
    }

    /// Counts a stall on every full link.
    pub(crate) fn note_stall(&mut self) {
        for tx in self.ticks.iter_mut().filter(|t| t.free() == 0) {
            tx.note_stall();
        }
        for tx in self.signals.iter_mut().filter(|t| t.free() == 0) {
            tx.note_stall();
        }
    }

    /// Signal `i` of the batch, just published.
    #[inline]
    pub(crate) fn on_signal(&mut self, i: usize, signal: &Signal) {
        for c in &mut self.inline {
            c.on_signal(signal);
        }
        if let Some(slot) = self.sig_buf.get_mut(i) {
            slot.signal = *signal;
        }
    }

    /// Sends the batch (the ticks, and the signals collected by `on_signal`) to the linked taps.
    #[inline]
    pub(crate) fn send(&mut self, ticks: &mut [Tick], now: u64) {
        for tx in &mut self.ticks {
            tx.send(ticks, now);
        }
        let n = ticks.len().min(self.sig_buf.len());
        for tx in &mut self.signals {
            tx.send(&mut self.sig_buf[..n], now);
        }
    }

    /// After the last batch: closes the links and the inline consumers.
    pub(crate) fn close(&mut self) {
        for tx in &self.ticks {
            tx.close();
        }
        for tx in &self.signals {
            tx.close();
        }
        for c in &mut self.inline {
            c.on_close();
        }
    }
}

/// What a tap stage hands its messages to.
trait Deliver<M>: Send {
    fn start(&mut self) -> Result<(), PipelineError>;
    fn deliver(&mut self, m: &M);
    fn close(&mut self);
}

impl Deliver<SignalMsg> for Box<dyn SignalConsumer> {
    fn start(&mut self) -> Result<(), PipelineError> {
        self.on_start()
    }
    #[inline]
    fn deliver(&mut self, m: &SignalMsg) {
        self.on_signal(&m.signal);
    }
    fn close(&mut self) {
        self.on_close();
    }
}

impl Deliver<Tick> for Box<dyn UserStage> {
    fn start(&mut self) -> Result<(), PipelineError> {
        self.on_start()
    }
    #[inline]
    fn deliver(&mut self, m: &Tick) {
        self.on_tick(m);
    }
    fn close(&mut self) {
        self.on_close();
    }
}

/// A stage that drains one tap link into user code, a batch per duty cycle.
struct TapStage<M: Message, D> {
    name: String,
    input: Receiver<M>,
    buf: Vec<M>,
    target: D,
    done: bool,
}

impl<M: Message, D: Deliver<M>> TapStage<M, D> {
    fn new(name: String, input: Receiver<M>, batch: usize, target: D) -> Self {
        Self {
            name,
            input,
            buf: vec![M::default(); batch],
            target,
            done: false,
        }
    }
}

impl<M: Message, D: Deliver<M>> Stage for TapStage<M, D> {
    fn role_name(&self) -> &str {
        &self.name
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.buf.fill(M::default());
        self.target.start()
    }

    #[inline]
    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        let n = self.input.recv(&mut self.buf);
        if n == 0 {
            if self.input.is_finished() {
                self.done = true;
                self.target.close();
            }
            return 0;
        }
        for m in &self.buf[..n] {
            self.target.deliver(m);
        }
        n
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn on_close(&mut self) {
        if !self.done {
            // Aborted before the input finished: the target still gets its close.
            self.done = true;
            self.target.close();
        }
    }
}
