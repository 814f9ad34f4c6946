//! The engine commands: `run` (attach to a market-data ring and run until stopped), `profile`
//! (a replay into a private ring with the engine behind it, reported per stage), and
//! `signals tail` (read another engine's signal ring).

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tickpipe_pipeline::host::Want;
use tickpipe_pipeline::latency::ticks_to_ns;
use tickpipe_pipeline::signal::{self, SIGNAL_LEN, Signal};
use tickpipe_pipeline::{Engine, EngineConfig, EngineReport, ThreadHooks, ThreadingMode};
use tickpipe_shm::mapped::{self, AttachOptions, CreateOptions, MappedRegion};
use tickpipe_shm::ring::{WriterState, content};
use tickpipe_shm::{ReadError, RingWriter, StartAt};

use crate::capture::{Capture, MAX_DBN_RECORD};
use crate::profile_report::{ProfileReport, Series};
use crate::synth::{Generator, SynthConfig};

/// Where a ring goes when none is named: `/dev/shm` where it exists.
pub fn default_ring_path(name: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("tickpipe-{name}-{}.ring", std::process::id()))
}

/// Creates a signal ring at `path`.
///
/// # Errors
/// The ring cannot be created.
pub fn create_signal_ring(path: &Path, capacity: usize) -> Result<RingWriter<MappedRegion>> {
    crate::host_setup::create_signal_ring(path, capacity, Want::Off).map(|(w, _)| w)
}

/// Turns an engine report into per-stage series in nanoseconds.
///
/// # Errors
/// Histogram conversion failing.
pub fn series(report: &EngineReport) -> Result<Vec<Series>> {
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let drops_into = |stage: &str| -> u64 {
        if stage == "ingest" {
            return report.ingest.missed + report.ingest.undecodable;
        }
        report
            .links
            .iter()
            .filter(|l| l.name.ends_with(&format!("->{stage}")))
            .map(|l| l.dropped + l.conflated)
            .sum()
    };
    let mut out = Vec::new();
    let mut e2e = None;
    for s in &report.stages {
        let h = &s.hists;
        let rate = h.events as f64 / secs;
        for (kind, hist) in [("queue", &h.queue), ("service", &h.service)] {
            out.push(Series {
                name: format!("{}.{kind}", s.name),
                hist: ticks_to_ns(hist, &report.clock)?,
                events_per_s: rate,
                drops: drops_into(&s.name),
                overflows: h.overflows,
            });
        }
        if !h.e2e.is_empty() {
            e2e = Some(Series {
                name: "end_to_end".into(),
                hist: ticks_to_ns(&h.e2e, &report.clock)?,
                events_per_s: rate,
                drops: report.main_path_loss(),
                overflows: h.overflows,
            });
        }
    }
    out.extend(e2e);
    Ok(out)
}

/// The models shipped with the sources (`models/fixtures/pipeline/`): the built-in default of
/// `tickpipe profile`.
pub fn shipped_models() -> tickpipe_pipeline::config::ModelSettings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/pipeline");
    tickpipe_pipeline::config::ModelSettings {
        sjm: Some(dir.join("sjm")),
        xgboost: Some(dir.join("score.json")),
        lstm: Some(dir.join("../lstm/lstm_h32.onnx")),
        ..Default::default()
    }
}

/// Prints the counters every report ends with.
pub fn print_counters(out: &mut impl Write, report: &EngineReport) -> std::io::Result<()> {
    let i = &report.ingest;
    writeln!(
        out,
        "ingest: {} frames, {} laps ({} frames missed), {} undecodable{}",
        i.frames,
        i.laps,
        i.missed,
        i.undecodable,
        i.fatal
            .as_ref()
            .map(|f| format!("; stopped: {f}"))
            .unwrap_or_default()
    )?;
    for l in &report.links {
        writeln!(
            out,
            "link {:<22} {:<12} cap {:>6}: pushed {} popped {} conflated {} dropped {} stalls {}",
            l.name,
            l.policy.to_string(),
            l.capacity,
            l.pushed,
            l.popped,
            l.conflated,
            l.dropped,
            l.stalls
        )?;
    }
    let f = &report.features;
    let b = &f.book;
    writeln!(
        out,
        "features: {} events -> {} vectors, {} trades, {} bars; book: {} crossed and {} locked of {} \
         states, {} unknown orders, {} other book errors; windows: {} overflowed entries, {} \
         time regressions",
        f.events,
        f.vectors,
        f.trades,
        f.bars,
        b.crossed,
        b.locked,
        b.consistent,
        b.unknown_order,
        b.errors() - b.unknown_order,
        f.features.window_overflow,
        f.features.time_regressions
    )?;
    let m = &report.inference;
    writeln!(
        out,
        "inference: {} vectors, {} scored, {} regime changes; held: {} low confidence, {} rate \
         limited, {} off regime, {} unreliable input; {} invalid input, {} without a slot, {} \
         forecasts received",
        m.ticks,
        m.scored,
        m.regime_changes,
        m.held_low_confidence,
        m.held_rate_limited,
        m.held_off_regime,
        m.unreliable_input,
        m.invalid_input,
        m.no_slot,
        m.forecasts
    )?;
    if let Some(p) = report.slow_processed {
        writeln!(out, "slow lane processed {p} bars")?;
    }
    if let Some(f) = &report.forecast {
        writeln!(
            out,
            "forecast: {} bars, {} forecasts, {} refused, {} without a slot",
            f.bars, f.forecasts, f.refused, f.no_slot
        )?;
    }
    if let Some(s) = &report.shadow
        && let Some(kind) = s.kind
    {
        match kind {
            tickpipe_pipeline::shadow::CandidateKind::Scoring => writeln!(
                out,
                "shadow: scoring candidate v{}: {} vectors seen, {} compared ({} without a live \
                 score); |candidate - live| p50 {:.3e} p99 {:.3e} max {:.3e}; candidate p50 {} \
                 ns, p99.9 {} ns per vector",
                s.version,
                s.seen,
                s.compared,
                s.no_live,
                s.diff_p50,
                s.diff_p99,
                s.diff_max,
                s.latency_ns[0],
                s.latency_ns[2]
            )?,
            tickpipe_pipeline::shadow::CandidateKind::Regime => writeln!(
                out,
                "shadow: regime candidate v{}: {} vectors seen, {} compared; labels agree on \
                 {:.4}, stable regimes on {:.4}; candidate p50 {} ns, p99.9 {} ns per vector",
                s.version,
                s.seen,
                s.compared,
                s.agreement(),
                s.stable_agreement(),
                s.latency_ns[0],
                s.latency_ns[2]
            )?,
        }
    }
    writeln!(out, "signals published: {}", report.signals)?;
    for (name, d) in &report.threads {
        if d.cycles > 0 {
            writeln!(
                out,
                "thread {name}: {} duty cycles, {:.1}% idle",
                d.cycles,
                100.0 * d.idle_cycles as f64 / d.cycles as f64
            )?;
        }
    }
    Ok(())
}

/// Options of `tickpipe run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Engine profile.
    pub config: EngineConfig,
    /// Market-data ring (unused with `udp`).
    pub md_ring: PathBuf,
    /// Read market data from UDP instead of the ring.
    pub udp: Option<tickpipe_pipeline::udp::UdpConfig>,
    /// Signal ring to create.
    pub signal_ring: PathBuf,
    /// How long to wait for the market-data ring.
    pub wait: Duration,
    /// Start at the oldest record still in the ring (default: only new ones).
    pub from_oldest: bool,
    /// Writer considered dead after this heartbeat age with its process gone.
    pub stale_after: Duration,
    /// Model registry that `POST /models/{name}/promote` promotes from.
    pub registry: PathBuf,
    /// Follow the registry's active versions (see [`crate::control_api::EngineApi::follow_registry`]).
    pub follow_registry: bool,
    /// Retries, backoff and timeouts of start-up.
    pub startup: tickpipe_pipeline::orchestrator::RetryPolicy,
}

/// How `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The market-data writer finished and everything was processed.
    WriterFinished,
    /// Stopped by SIGINT/SIGTERM (drained).
    Signal,
    /// The writer's process died without finishing.
    WriterDead,
    /// Ingest stopped on a corrupt ring (or a failed socket).
    Corrupt,
    /// The UDP feed went quiet for longer than its idle timeout.
    IdleTimeout,
}

/// What `run` did.
#[derive(Debug)]
pub struct RunOutcome {
    /// How it ended.
    pub end: RunEnd,
    /// The engine's report.
    pub report: EngineReport,
    /// The UDP source's counters (UDP runs).
    pub udp: Option<tickpipe_pipeline::udp::UdpCounts>,
}

/// Runs the engine on an existing market-data ring until the writer finishes, a signal arrives
/// or the writer dies; or on a UDP feed until its end of stream, its idle timeout or a signal. Start-up goes through the orchestrator (see [`crate::startup`]): its
/// report, and the time from start to the first processed event, go to standard error.
///
/// # Errors
/// Set-up failures (ring missing or invalid, engine start-up), with the start-up report.
pub fn run(opts: &RunOptions, stop: &Arc<AtomicBool>) -> Result<RunOutcome> {
    use tickpipe_pipeline::orchestrator::{ComponentSpec, Orchestrator, Output, RetryPolicy};
    if opts.config.mode == ThreadingMode::Invoker {
        bail!("mode = \"invoker\" needs a caller to drive it; use dedicated or shared for `run`");
    }
    let t0 = Instant::now();
    let mut host_report = crate::host_setup::before_rings(&opts.config.host).context("start-up")?;
    let (sig_pages, host_out) = (Output::new(), Output::new());
    let (md, sig, engine_out, api, addr) = (
        Output::new(),
        Output::new(),
        Output::new(),
        Output::new(),
        Output::new(),
    );
    // The ring attach waits on its own (`--wait`); the engine's start is not worth retrying
    // (a bad model or core map fails the same way twice); the control server's bind is.
    let once = |timeout: Duration| RetryPolicy {
        max_attempts: 1,
        timeout,
        ..opts.startup
    };
    let mut orch = Orchestrator::new(opts.startup);
    let udp_stats = Output::new();
    let md_name = match &opts.udp {
        Some(cfg) => {
            orch.add_with(
                crate::startup::MdUdp {
                    config: cfg.clone(),
                    out: md.clone(),
                    stats: udp_stats.clone(),
                },
                ComponentSpec::new(&[]).with_policy(once(opts.startup.timeout)),
            );
            "md-udp"
        }
        None => {
            orch.add_with(
                crate::startup::MdRing {
                    path: opts.md_ring.clone(),
                    wait: opts.wait,
                    from_oldest: opts.from_oldest,
                    stale_after: opts.stale_after,
                    out: md.clone(),
                },
                ComponentSpec::new(&[]).with_policy(once(opts.wait + Duration::from_secs(5))),
            );
            "md-ring"
        }
    };
    orch.add_with(
        crate::startup::SignalRing {
            path: opts.signal_ring.clone(),
            capacity: opts.config.signal_capacity,
            huge_pages: opts.config.host.hugepages,
            pages: sig_pages.clone(),
            out: sig.clone(),
        },
        ComponentSpec::new(&[]).with_policy(once(opts.startup.timeout)),
    );
    orch.add_with(
        crate::startup::EngineComponent {
            config: opts.config.clone(),
            md_path: opts.md_ring.clone(),
            host: host_out.clone(),
            md,
            signals: sig,
            out: engine_out.clone(),
            api: api.clone(),
            registry: opts.registry.clone(),
            follow_registry: opts.follow_registry,
        },
        ComponentSpec::new(&[md_name, "signal-ring"]).with_policy(once(opts.startup.timeout)),
    );
    if let Some(c) = &opts.config.control {
        orch.add_with(
            crate::startup::Control {
                config: c.clone(),
                api,
                addr: addr.clone(),
                handle: None,
            },
            ComponentSpec::new(&["engine"]).optional(true),
        );
    }
    let started = orch.start();
    host_report.extend(sig_pages.take());
    host_report.extend(host_out.take().unwrap_or_default());
    crate::host_setup::print("tickpipe run", &host_report);
    eprintln!("tickpipe run: {}", opts.config.features.reserved_summary());
    let running = match started {
        Ok(r) => r,
        Err(e) => bail!("start-up: {e}"),
    };
    eprintln!("tickpipe run: start-up\n{}", running.report());
    if running.is_degraded() {
        eprintln!("tickpipe run: running degraded (an optional component did not start)");
    }
    let engine: Engine = engine_out
        .take()
        .ok_or_else(|| anyhow::anyhow!("the engine component handed over no engine"))?;
    let udp_stats: Option<Arc<tickpipe_pipeline::udp::UdpStats>> = udp_stats.take();
    // The ring's header, watched for a writer that dies (a UDP feed has its idle timeout).
    let watch = match &opts.udp {
        Some(_) => None,
        None => Some(mapped::inspect(&opts.md_ring)?),
    };
    eprintln!(
        "tickpipe run: engine running ({} mode) on {} -> signals {}{}{}",
        opts.config.mode,
        match &udp_stats {
            Some(u) => format!(
                "udp {} ({}, receive buffer {} bytes)",
                u.local_addr
                    .map_or_else(|| "?".to_string(), |a| a.to_string()),
                u.backend,
                u.recv_buffer
            ),
            None => opts.md_ring.display().to_string(),
        },
        opts.signal_ring.display(),
        addr.get()
            .map(|a| format!(", control plane http://{a}"))
            .unwrap_or_default(),
        opts.config
            .health
            .page
            .as_ref()
            .map(|p| format!(", health page {}", p.display()))
            .unwrap_or_default(),
    );
    let mut end = RunEnd::WriterFinished;
    let mut first_event = None;
    while !engine.is_done() {
        std::thread::sleep(Duration::from_millis(if first_event.is_none() {
            1
        } else {
            20
        }));
        if first_event.is_none() && engine.feature_progress().0 > 0 {
            let at = t0.elapsed();
            first_event = Some(at);
            eprintln!(
                "tickpipe run: first event processed {:.1} ms after start",
                at.as_secs_f64() * 1e3
            );
        }
        if stop.load(Ordering::Relaxed) {
            end = RunEnd::Signal;
            engine.stop();
            break;
        }
        let Some((watch, info)) = &watch else {
            continue;
        };
        let writer_pid = info.writer.pid;
        let status = tickpipe_shm::ring::writer_status(tickpipe_shm::Region::words(watch));
        let age = mapped::unix_now_ns().saturating_sub(status.heartbeat_ns);
        if status.state == WriterState::Running
            && age > opts.stale_after.as_nanos() as u64
            && !mapped::pid_alive(writer_pid)
        {
            eprintln!(
                "tickpipe run: the market-data writer (pid {writer_pid}) is gone, heartbeat {} ms old",
                age / 1_000_000
            );
            end = RunEnd::WriterDead;
            engine.stop();
            break;
        }
    }
    let report = engine.join()?;
    eprintln!("tickpipe run: shutdown\n{}", running.stop());
    let udp = udp_stats.map(|s| s.counts());
    if report.ingest.fatal.is_some() {
        end = RunEnd::Corrupt;
    } else if end == RunEnd::WriterFinished && udp.is_some_and(|u| u.idle_timeout && !u.end) {
        end = RunEnd::IdleTimeout;
    }
    Ok(RunOutcome { end, report, udp })
}

/// What `profile` replays.
#[derive(Debug, Clone)]
pub enum ProfileInput {
    /// DBN captures, in order.
    Captures(Vec<PathBuf>),
    /// This many generated MBO events.
    Generate(u64),
}

/// Options of `tickpipe profile`.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    /// Engine profile.
    pub config: EngineConfig,
    /// Where the profile came from (for the report).
    pub config_name: String,
    /// Input.
    pub input: ProfileInput,
    /// Events per second; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Output folder.
    pub out: PathBuf,
    /// Market-data ring bytes (default: enough to hold the whole input, so that a max-speed
    /// replay measures the engine rather than laps).
    pub ring_capacity: Option<usize>,
    /// Hot-swap the scoring model this often while the replay runs (threaded modes).
    pub swap_every: Option<Duration>,
    /// Shadow this candidate from the first event: an XGBoost file or a jump-model directory
    /// (needs `config.shadow.enabled`).
    pub shadow: Option<PathBuf>,
    /// Resident memory is sampled this often (and once when start-up is done).
    pub rss_interval: Duration,
    /// The registry the control plane promotes from (with `config.control`).
    pub registry: PathBuf,
    /// Feed the engine over loopback UDP through this receive backend instead of the ring.
    pub udp: Option<tickpipe_pipeline::udp::UdpBackend>,
}

/// The input decoded once into a temporary file of DBN records, as they will be published
/// (each record's first byte is its length in 4-byte words). The replay streams it back
/// through a fixed buffer: the feeder copies from the page cache instead of decompressing or
/// generating, and the process's memory does not grow with the input.
struct Spool {
    path: PathBuf,
    records: u64,
    bytes: u64,
    meta: Vec<u8>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The smallest DBN record: its header.
const DBN_HEADER_LEN: usize = 16;

fn spool_records(input: &ProfileInput) -> Result<Spool> {
    let path = std::env::temp_dir().join(format!("tickpipe-profile-{}.spool", std::process::id()));
    let file = std::fs::File::create(&path)
        .with_context(|| format!("creating the input spool {}", path.display()))?;
    let mut spool = Spool {
        path,
        records: 0,
        bytes: 0,
        meta: Vec::new(),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut failure = None;
    let mut put = |rec: &[u8], spool: &mut Spool| {
        if let Err(e) = out.write_all(rec) {
            failure.get_or_insert(e);
            return ControlFlow::Break(());
        }
        spool.records += 1;
        spool.bytes += rec.len() as u64;
        ControlFlow::Continue(())
    };
    match input {
        ProfileInput::Generate(n) => {
            ensure!(*n > 0, "--generate needs at least one event");
            let mut g = Generator::new(&SynthConfig {
                events: *n,
                ..SynthConfig::default()
            })?;
            spool.meta = crate::capture::encode_metadata(&g.metadata())?;
            while let Some(r) = g.next_record() {
                if put(r.as_ref(), &mut spool).is_break() {
                    break;
                }
            }
        }
        ProfileInput::Captures(paths) => {
            ensure!(!paths.is_empty(), "no capture given");
            let caps = paths
                .iter()
                .map(|p| Capture::open(p))
                .collect::<Result<Vec<_>, _>>()?;
            spool.meta = crate::capture::encode_metadata(&crate::capture::stream_metadata(&caps)?)?;
            for mut c in caps {
                if c.visit(|rec| put(rec.as_ref(), &mut spool))?.is_break() {
                    break;
                }
            }
        }
    }
    if let Some(e) = failure {
        return Err(e).with_context(|| format!("writing {}", spool.path.display()));
    }
    out.flush()
        .with_context(|| format!("writing {}", spool.path.display()))?;
    ensure!(spool.records > 0, "the input holds no records");
    Ok(spool)
}

/// Reads a [`Spool`] back, one record at a time, into a fixed buffer.
struct SpoolReader {
    input: std::io::BufReader<std::fs::File>,
    buf: [u8; MAX_DBN_RECORD],
}

impl SpoolReader {
    fn open(spool: &Spool) -> Result<Self> {
        let file = std::fs::File::open(&spool.path)
            .with_context(|| format!("opening {}", spool.path.display()))?;
        Ok(Self {
            input: std::io::BufReader::with_capacity(1 << 20, file),
            buf: [0; MAX_DBN_RECORD],
        })
    }

    /// The next record; `None` at the end.
    fn next_record(&mut self) -> std::io::Result<Option<&[u8]>> {
        use std::io::Read;
        match self.input.read_exact(&mut self.buf[..1]) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = usize::from(self.buf[0]) * 4;
        if len < DBN_HEADER_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a record of {len} bytes in the input spool"),
            ));
        }
        self.input.read_exact(&mut self.buf[1..len])?;
        Ok(Some(&self.buf[..len]))
    }
}

/// Samples resident memory on a thread of its own until stopped.
struct RssSampler {
    stop: std::sync::mpsc::Sender<()>,
    handle: std::thread::JoinHandle<Vec<crate::profile_report::RssPoint>>,
}

impl RssSampler {
    /// Takes the start-up sample now, then one every `interval`, each with the engine's
    /// progress (frames ingested).
    fn start(
        interval: Duration,
        ingest: Arc<tickpipe_pipeline::stages::IngestStats>,
    ) -> Result<Self> {
        use crate::profile_report::{RssPoint, read_rss};
        let mut buf = String::with_capacity(4096);
        let origin = Instant::now();
        let first = RssPoint {
            at: Duration::ZERO,
            ingested: 0,
            rss: read_rss(&mut buf)?,
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                let mut points = Vec::with_capacity(4096);
                points.push(first);
                let mut next = origin + interval;
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    // Stopped (or the profile gone): one last sample, after the drain.
                    let last = !matches!(
                        stopped.recv_timeout(wait),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    next += interval;
                    if let Ok(rss) = read_rss(&mut buf) {
                        points.push(RssPoint {
                            at: origin.elapsed(),
                            ingested: ingest.counts().frames,
                            rss,
                        });
                    }
                    if last {
                        break;
                    }
                }
                points
            })
            .context("starting the memory sampler")?;
        Ok(Self { stop, handle })
    }

    /// Takes a last sample and returns them all.
    fn finish(self, interval: Duration, events: u64) -> crate::profile_report::MemoryTimeline {
        drop(self.stop);
        crate::profile_report::MemoryTimeline {
            interval,
            events,
            points: self.handle.join().unwrap_or_default(),
        }
    }
}

/// What the feeder did.
#[derive(Debug, Clone, Copy, Default)]
struct FeedStats {
    published: u64,
    elapsed: Duration,
    late_max_ns: u64,
    interrupted: bool,
}

/// The paced schedule in raw ticks: event `i` is due at `start + i * interval`.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: u64,
    interval_ticks: f64,
}

impl Schedule {
    fn new(clock: &quanta::Clock, rate: Option<f64>) -> Option<Self> {
        let ticks_per_s = tickpipe_pipeline::stages::clock_ticks_per_ms(clock) as f64 * 1e3;
        rate.map(|r| Schedule {
            start: clock.raw(),
            interval_ticks: ticks_per_s / r,
        })
    }

    fn due(&self, i: usize) -> u64 {
        self.start + (i as f64 * self.interval_ticks) as u64
    }
}

/// Publishes every record; paced runs stamp each frame with its scheduled instant, so a late
/// publish (the feeder itself delayed) counts in the end-to-end latency instead of hiding it:
/// latency is measured from when the event should have arrived, which is what avoids
/// coordinated omission.
/// Where the feeder puts records: the private ring, or datagrams to the engine's UDP source.
enum FeedSink {
    Ring(RingWriter<MappedRegion>),
    Udp(crate::udp_send::UdpSender),
}

impl FeedSink {
    fn put(&mut self, rec: &[u8], stamp: u64) -> Result<()> {
        match self {
            // Records come from a capture or the generator, all within the ring's max payload.
            FeedSink::Ring(w) => {
                let _ = w.publish(rec, stamp);
                Ok(())
            }
            FeedSink::Udp(s) => s.push_stamped(rec, stamp),
        }
    }

    /// Before the feeder waits for the next record: nothing held back (a partly filled
    /// datagram goes out).
    fn idle(&mut self) -> Result<()> {
        match self {
            FeedSink::Ring(_) => Ok(()),
            FeedSink::Udp(s) => s.flush(),
        }
    }

    fn heartbeat(&mut self) {
        // Over UDP the datagrams themselves show the sender is alive.
        if let FeedSink::Ring(w) = self {
            w.heartbeat(mapped::unix_now_ns());
        }
    }

    fn finish(&mut self) -> Result<()> {
        match self {
            FeedSink::Ring(w) => {
                w.heartbeat(mapped::unix_now_ns());
                w.finish();
                Ok(())
            }
            FeedSink::Udp(s) => s.finish().map(|_| ()),
        }
    }
}

fn feed(
    sink: &mut FeedSink,
    recs: &mut SpoolReader,
    schedule: Option<Schedule>,
    clock: &quanta::Clock,
    stop: &AtomicBool,
    mut between: impl FnMut(),
) -> Result<FeedStats> {
    let start = clock.raw();
    let mut stats = FeedStats::default();
    let mut failure = None;
    for i in 0usize.. {
        let rec = match recs.next_record() {
            Ok(Some(rec)) => rec,
            Ok(None) => break,
            Err(e) => {
                failure = Some(anyhow::Error::from(e).context("reading the input spool back"));
                break;
            }
        };
        let stamp = match schedule {
            Some(s) => {
                let due = s.due(i);
                let mut now = clock.raw();
                if now < due
                    && let Err(e) = sink.idle()
                {
                    failure = Some(e);
                    break;
                }
                while now < due {
                    between();
                    std::hint::spin_loop();
                    now = clock.raw();
                }
                stats.late_max_ns = stats.late_max_ns.max(clock.delta_as_nanos(due, now));
                due
            }
            None => clock.raw(),
        };
        if i.is_multiple_of(4096) {
            if stop.load(Ordering::Relaxed) {
                stats.interrupted = true;
                break;
            }
            sink.heartbeat();
        }
        if let Err(e) = sink.put(rec, stamp) {
            failure = Some(e);
            break;
        }
        stats.published += 1;
        if i.is_multiple_of(64) {
            between();
        }
    }
    stats.elapsed = clock.delta(start, clock.raw());
    let finished = sink.finish();
    match failure {
        Some(e) => Err(e),
        None => finished.map(|()| stats),
    }
}

/// Runs a profiling session and writes its report.
///
/// # Errors
/// Set-up failures, or failing to write the report.
pub fn profile(opts: &ProfileOptions, stop: &Arc<AtomicBool>) -> Result<EngineReport> {
    let mode = opts.config.mode;
    let spool = spool_records(&opts.input)?;
    let mut recs = SpoolReader::open(&spool)?;
    let meta = &spool.meta;
    let n = spool.records;
    let md_path = default_ring_path("profile-md");
    let sig_path = default_ring_path("profile-signals");
    let host = opts.config.host;
    let mut host_report = crate::host_setup::before_rings(&host)?;
    let writer = match opts.udp {
        Some(_) => None,
        None => {
            let (writer, md_pages) = mapped::create_with_pages(
                &md_path,
                &CreateOptions {
                    capacity: opts.ring_capacity.unwrap_or_else(|| {
                        let framed = spool.bytes as usize
                            + spool.records as usize * tickpipe_shm::layout::frame_len(0);
                        framed.next_power_of_two().clamp(1 << 20, 1 << 30)
                    }),
                    max_payload: MAX_DBN_RECORD,
                    ..CreateOptions::default()
                },
                meta,
                host.hugepages != Want::Off,
            )
            .with_context(|| format!("creating ring {}", md_path.display()))?;
            host_report.extend([crate::host_setup::created_ring_pages(
                host.hugepages,
                "market-data ring",
                &md_pages,
            )]);
            Some(writer)
        }
    };
    let cleanup = || {
        let _ = std::fs::remove_file(&md_path);
        let _ = std::fs::remove_file(&sig_path);
    };
    let result = (|| {
        let clock = quanta::Clock::new();
        let reader = match writer {
            Some(_) => Some(mapped::attach_wait(
                &md_path,
                AttachOptions::default(),
                Duration::from_secs(1),
            )?),
            None => None,
        };
        let (signals, sig_pages) = crate::host_setup::create_signal_ring(
            &sig_path,
            opts.config.signal_capacity,
            host.hugepages,
        )?;
        host_report.extend([sig_pages]);
        host_report.extend(crate::host_setup::on_rings(
            &host,
            reader.as_ref(),
            None,
            &signals,
        ));
        if let Err(e) = host_report.check_required() {
            crate::host_setup::print("profile", &host_report);
            return Err(e.into());
        }
        let (mut engine, mut sink) = match (reader, writer) {
            (Some(reader), Some(writer)) => (
                Engine::start(
                    &opts.config,
                    reader,
                    signals,
                    clock.clone(),
                    ThreadHooks::default(),
                )?,
                FeedSink::Ring(writer),
            ),
            _ => {
                // Loopback UDP: the feeder sends datagrams, the engine's UDP source receives.
                let mut ucfg = tickpipe_pipeline::udp::UdpConfig::new(std::net::SocketAddr::from(
                    (std::net::Ipv4Addr::LOCALHOST, 0),
                ));
                ucfg.backend = opts.udp.unwrap_or_default();
                ucfg.from_start = true;
                // The stream ends with end-of-stream datagrams; should the kernel drop them too
                // (a receive buffer overrun), a second of silence ends it instead.
                ucfg.idle_timeout = Some(Duration::from_secs(1));
                let source = tickpipe_pipeline::udp::UdpSource::bind(&ucfg, clock.clone())?;
                let to = source
                    .local_addr()
                    .context("the UDP source has no local address")?;
                eprintln!(
                    "profile: market data over loopback UDP to {to}, {}",
                    source.stats().backend
                );
                let sender = crate::udp_send::UdpSender::new(
                    crate::udp_send::UdpSendOptions::new(to),
                    clock.clone(),
                )?;
                (
                    Engine::start(
                        &opts.config,
                        source,
                        signals,
                        clock.clone(),
                        ThreadHooks::default(),
                    )?,
                    FeedSink::Udp(sender),
                )
            }
        };
        host_report.extend(engine.host_outcomes().iter().cloned());
        crate::host_setup::print("profile", &host_report);
        eprintln!(
            "profile: {n} events, {} mode, {}, config {}",
            mode,
            opts.rate.map_or("max speed".to_string(), |r| format!(
                "paced at {r:.0} events/s"
            )),
            opts.config_name
        );
        eprintln!("profile: {}", opts.config.features.reserved_summary());
        // A second copy of the scoring model, swapped in and out while the replay runs.
        let swapping = match (opts.swap_every, &opts.config.models.xgboost) {
            (None, _) => None,
            (Some(_), _) if mode == ThreadingMode::Invoker => {
                anyhow::bail!("--swap-every needs a threaded mode (dedicated or shared)")
            }
            (Some(every), Some(path)) => {
                let model = tickpipe_models::xgb::XgbModel::load(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let control = engine
                    .model_control()
                    .ok_or_else(|| anyhow::anyhow!("the engine's model control is taken"))?;
                Some((every, model, control))
            }
            (Some(_), None) => {
                anyhow::bail!("--swap-every needs a scoring model ([models] xgboost)")
            }
        };
        // A candidate beside the live models, set before the first event is published.
        let _shadowing = match &opts.shadow {
            None => None,
            Some(path) => {
                let mut c = engine
                    .shadow_control()
                    .context("--shadow needs the shadow lane ([shadow] enabled = true)")?;
                let started = if path.is_dir() {
                    let m = tickpipe_models::sjm::SjmModel::load(path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    c.start_regime(m, "candidate", 2)
                } else {
                    let m = tickpipe_models::xgb::XgbModel::load(path)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    c.start_scoring(m, "candidate", 2)
                };
                started.map_err(|e| anyhow::anyhow!("--shadow {}: {e}", path.display()))?;
                eprintln!("profile: shadowing {} from the first event", path.display());
                Some(c)
            }
        };
        // The control plane, as `run` serves it, for measuring it beside a known load; its
        // promotions need the model control, which `--swap-every` already holds.
        let mut control = match &opts.config.control {
            None => None,
            Some(c) => {
                let health = engine.health().ok_or_else(|| {
                    anyhow::anyhow!("the control plane needs the health monitor ([health] enabled)")
                })?;
                let models = if swapping.is_none() {
                    engine.model_control()
                } else {
                    None
                };
                let api = crate::control_api::EngineApi::new(health, models, opts.registry.clone())
                    .with_shadow(engine.shadow_control());
                let h = tickpipe_pipeline::control::ControlServer::start(c, api)
                    .context("starting the control plane")?;
                eprintln!("profile: control plane http://{}", h.local_addr());
                Some(h)
            }
        };
        let sampler = RssSampler::start(opts.rss_interval, engine.ingest_stats())?;
        let started = Instant::now();
        let schedule = Schedule::new(&clock, opts.rate);
        let fed = AtomicBool::new(false);
        let mut control_back = None;
        let feed_stats = if mode == ThreadingMode::Invoker {
            // The caller's thread drives the engine while it waits and every 64 publishes.
            feed(&mut sink, &mut recs, schedule, &clock, stop, || {
                engine.invoke();
            })?
        } else {
            let feeder_core = opts.config.feeder.core;
            let (clock, stop) = (clock.clone(), stop.clone());
            let fed = &fed;
            let control_back = &mut control_back;
            let recs = &mut recs;
            std::thread::scope(|s| {
                let swapper = swapping.map(|(every, model, mut control)| {
                    // Off the hot path: prepares each update, then drops what it replaced.
                    s.spawn(move || {
                        let mut version = 1u32;
                        // Relaxed: a stop flag; the join below orders the rest.
                        while !fed.load(Ordering::Relaxed) {
                            std::thread::sleep(every);
                            version += 1;
                            if control.swap_scoring(model.clone(), version).is_err() {
                                version -= 1;
                            }
                        }
                        control
                    })
                });
                let stats = s
                    .spawn(|| -> Result<FeedStats> {
                        if let Some(core) = feeder_core {
                            tickpipe_pipeline::stage::pin_current("feeder", core)?;
                        }
                        feed(&mut sink, recs, schedule, &clock, &stop, || {})
                    })
                    .join()
                    .map_err(|_| anyhow::anyhow!("the feeder thread panicked"));
                fed.store(true, Ordering::Relaxed);
                if let Some(h) = swapper {
                    *control_back = Some(
                        h.join()
                            .map_err(|_| anyhow::anyhow!("the swapping thread panicked"))?,
                    );
                }
                stats?
            })?
        };
        if feed_stats.interrupted {
            engine.stop();
        }
        if let Some(h) = control.take() {
            h.stop().context("stopping the control plane")?;
        }
        let mut report = engine.join()?;
        let wall = started.elapsed();
        // Over UDP, records whose datagrams never arrived after the last one received leave no
        // sequence gap behind them: count them against what was sent.
        let seen = report.ingest.frames + report.ingest.missed;
        if matches!(sink, FeedSink::Udp(_)) && seen < feed_stats.published {
            let tail = feed_stats.published - seen;
            eprintln!(
                "profile: {tail} records sent over UDP never arrived (the end of the stream was lost)"
            );
            report.ingest.missed += tail;
        }
        let memory = sampler.finish(opts.rss_interval, n);
        if let Some(mut control) = control_back {
            // After the join: every queued update has been applied or will never be.
            control.collect();
            eprintln!(
                "swaps: {} scoring-model swaps applied during the replay",
                control.applied()
            );
        }
        eprintln!(
            "feeder: {} events in {:.3} s ({:.2} M events/s){}",
            feed_stats.published,
            feed_stats.elapsed.as_secs_f64(),
            feed_stats.published as f64 / feed_stats.elapsed.as_secs_f64().max(1e-9) / 1e6,
            if opts.rate.is_some() {
                format!(
                    ", latest publish {:.1} us behind schedule",
                    feed_stats.late_max_ns as f64 / 1e3
                )
            } else {
                String::new()
            }
        );
        let series = series(&report)?;
        let title = format!(
            "tickpipe profile: {} events, {} mode, {}",
            n,
            mode,
            opts.rate
                .map_or("max speed".into(), |r| format!("{r:.0} events/s"))
        );
        let run = vec![
            ("mode".to_string(), mode.to_string()),
            ("config".to_string(), opts.config_name.clone()),
            (
                "rate".to_string(),
                opts.rate.map_or("max".into(), |r| format!("{r:.0}")),
            ),
            ("events".to_string(), n.to_string()),
            ("signals".to_string(), report.signals.to_string()),
            ("wall_s".to_string(), format!("{:.3}", wall.as_secs_f64())),
            (
                "host_cores".to_string(),
                tickpipe_pipeline::stage::available_cores()
                    .len()
                    .to_string(),
            ),
            (
                "coordinated_omission".to_string(),
                if opts.rate.is_some() {
                    "avoided: latency measured from each event's scheduled publish instant".into()
                } else {
                    "n/a at max speed (latency measured from the actual publish)".into()
                },
            ),
            (
                "feeder_late_max_ns".to_string(),
                feed_stats.late_max_ns.to_string(),
            ),
        ];
        let mut run = run;
        run.extend(memory.run_entries());
        let rep = ProfileReport { title, series, run };
        let mut stdout = std::io::stdout().lock();
        crate::profile_report::print_table(&mut stdout, &rep)?;
        print_counters(&mut stdout, &report)?;
        memory.print(&mut stdout)?;
        let files = crate::profile_report::write_outputs(&opts.out, &rep)?;
        writeln!(
            stdout,
            "wrote {} files to {} (summary.json, percentiles.svg, one .hgrm per series)",
            files.len(),
            opts.out.display()
        )?;
        Ok(report)
    })();
    cleanup();
    result
}

/// Options of `tickpipe signals tail`.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Signal ring.
    pub ring: PathBuf,
    /// Start at the oldest signal still held (default: new ones only).
    pub from_start: bool,
    /// Stop after this many signals.
    pub count: Option<u64>,
    /// How long to wait for the ring.
    pub wait: Duration,
}

/// Prints signals as they arrive; returns (signals printed, signals missed).
///
/// # Errors
/// The ring is missing, not a signal ring, or corrupt; or stdout fails.
pub fn tail(opts: &TailOptions, stop: &Arc<AtomicBool>) -> Result<(u64, u64)> {
    let mut reader = mapped::attach_wait(
        &opts.ring,
        AttachOptions {
            start: if opts.from_start {
                StartAt::Oldest
            } else {
                StartAt::Tail
            },
            read_only: true,
        },
        opts.wait,
    )?;
    let info = *reader.info();
    if info.writer.content_tag != content::SIGNALS {
        bail!(
            "{}: not a signal ring (it carries other records)",
            opts.ring.display()
        );
    }
    signal::check_meta(&reader.metadata())
        .map_err(|e| anyhow::anyhow!("{}: {e}", opts.ring.display()))?;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; SIGNAL_LEN];
    let (mut printed, mut idle) = (0u64, 0u32);
    while opts.count.is_none_or(|c| printed < c) {
        match reader.try_read(&mut buf) {
            Ok(frame) => {
                idle = 0;
                let s = Signal::decode(&buf[..frame.len]).map_err(|e| {
                    anyhow::anyhow!("{}: frame {}: {e}", opts.ring.display(), frame.seq)
                })?;
                let r = writeln!(
                    out,
                    "seq={} input_seq={} instrument={} ts_event={} price={} regime={} confidence={} stable={} scores={:?} forecast={} forecast_age_ns={} alert={} kill={} flags={:#04x} model_flags={:#04x}",
                    frame.seq,
                    s.input_seq,
                    s.instrument_id,
                    s.ts_event,
                    s.price,
                    s.regime,
                    s.confidence,
                    s.stable_regime,
                    &s.scores[..usize::from(s.n_scores).min(s.scores.len())],
                    s.forecast,
                    s.forecast_age_ns,
                    s.alert,
                    s.kill,
                    s.flags,
                    s.model_flags
                );
                if let Err(e) = r {
                    // A closed pipe (`| head`) ends the tail quietly.
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        break;
                    }
                    return Err(e.into());
                }
                printed += 1;
            }
            Err(ReadError::Empty) => {
                if reader.is_finished() || stop.load(Ordering::Relaxed) {
                    break;
                }
                idle = idle.saturating_add(1);
                if idle > 100 {
                    std::thread::sleep(Duration::from_micros(200));
                } else {
                    std::hint::spin_loop();
                }
            }
            Err(ReadError::Lapped { missed }) => {
                eprintln!(
                    "tickpipe signals tail: WARNING: lapped by the writer, {missed} signals missed"
                );
            }
            Err(e) => bail!("{}: {e}", opts.ring.display()),
        }
    }
    out.flush()?;
    Ok((printed, reader.missed()))
}
