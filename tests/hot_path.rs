//! A running pipeline stage neither allocates nor makes syscalls.
//!
//! - No allocation: this binary's global allocator counts what the stage threads allocate (and
//!   free) between entering and leaving their duty loops, armed by the engine's `ThreadHooks`,
//!   over runs that exercise batching, back-pressure, both lossy slow-lane policies, the
//!   histogram hand-over to the reporter (a 1 ms report interval over hundreds of milliseconds),
//!   the shipped regime and scoring models, scoring-model hot swaps every ten bursts, and a
//!   shadow candidate on every vector (scoring, then regime, then scoring again).
//! - No syscall: the binary runs itself again as a child whose stage threads forbid themselves
//!   every syscall (a seccomp filter) as they enter their duty loops. One syscall on the hot path,
//!   a futex, an `mmap`, a `clock_gettime` outside the vDSO, a `sched_yield`, kills the child
//!   with SIGSYS. A control child checks that the filter does kill.
//!
//! Both runs use Dedicated mode: one thread per stage, so each stage's loop is instrumented on
//! its own. The reporter is not on the hot path (it sleeps between collections) and is left
//! alone.
//!
//! - UDP ingest: the same allocation check with the engine fed over loopback UDP, on every
//!   receive backend (mio, io_uring multishot over a provided buffer ring, io_uring single
//!   shot). UDP is exempt from the syscall check by nature: with mio each poll is a `recvfrom`,
//!   and io_uring, whose completions are read from shared memory, still enters the kernel to
//!   re-arm and to return buffers.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tickpipe::models::sjm::SjmModel;
use tickpipe::models::xgb::XgbModel;
use tickpipe::pipeline::config::{ModelSettings, Placement, SlowLane};
use tickpipe::pipeline::sample::{sample_bars, sample_mbo_at};
use tickpipe::pipeline::shadow::{ShadowControl, ShadowSettings};
use tickpipe::pipeline::signal::{SIGNAL_LEN, SIGNAL_META, Signal};
use tickpipe::pipeline::stage::available_cores;
use tickpipe::pipeline::swap::ModelControl;
use tickpipe::pipeline::udp::{UdpBackend, UdpConfig, UdpError, UdpSource};
use tickpipe::pipeline::{
    Engine, EngineConfig, EngineReport, IdleStrategy, Policy, ThreadHooks, ThreadingMode,
};
use tickpipe::shm::hotpath::{self, CountingAlloc, FORBIDDEN_SYSCALL_SIGNAL};
use tickpipe::shm::ring::{HeapRegion, content};
use tickpipe::shm::{ReadError, RingReader, RingWriter, StartAt, heap_ring};
use tickpipe::udp_send::{UdpSendOptions, UdpSender};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

const SYSCALL_CHILD: &str = "--syscall-child";
const CONTROL_CHILD: &str = "--syscall-child-control";
/// The line a child prints when the kernel will not filter syscalls.
const SKIP: &str = "SKIP:";

/// Stage threads of a run with a slow lane: ingest, features, inference, health, forecast and
/// shadow (a candidate scoring or regime model beside the live ones).
const STAGE_THREADS: usize = 6;
/// Stages that record latency histograms (the shadow keeps its own).
const RECORDED_STAGES: usize = 5;
/// Records published per burst; between bursts the publisher lets the engine catch up.
const BURST: u64 = 1_000;
/// How far ingest may fall behind the publisher, far below what the 8 MiB ring holds (about
/// 100 000 records): the runs must lose nothing.
const MAX_LAG: u64 = 4 * BURST;
const REPORT_INTERVAL: Duration = Duration::from_millis(1);
/// Records are this far apart in exchange time, so that every burst closes a one-second bar for
/// each of the seven instruments: the bar lane gets seven bars per burst.
const STEP_NS: u64 = 1_000_000;
/// Slow-lane work per bar: slow enough that the bars of a burst overflow the lane and its policy
/// acts.
const LANE_WORK: Duration = Duration::from_millis(5);

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some(SYSCALL_CHILD) => syscall_child(),
        Some(CONTROL_CHILD) => control_child(),
        _ => {}
    }
    allocation_counter_is_live();
    no_allocation(Policy::ConflateLatest, 200_000);
    no_allocation(Policy::DropOldest, 100_000);
    for backend in [
        UdpBackend::Mio,
        UdpBackend::Uring,
        UdpBackend::UringSingleShot,
    ] {
        udp_ingest_allocates_nothing(backend, 100_000);
    }
    no_syscalls();
    println!("hot_path: all checks passed");
}

fn config(idle: IdleStrategy, lane: Policy) -> EngineConfig {
    EngineConfig {
        mode: ThreadingMode::Dedicated,
        report_interval: REPORT_INTERVAL,
        stages: [Placement { core: None, idle }; 5],
        slow_lane: Some(SlowLane {
            policy: lane,
            capacity: 4,
            overflow: 64,
            work: LANE_WORK,
        }),
        models: shipped_hot_path_models(),
        shadow: ShadowSettings {
            enabled: true,
            ..ShadowSettings::default()
        },
        ..EngineConfig::default()
    }
}

/// The shipped regime and scoring models: inference runs them on every vector, so their code
/// is on the hot path and under both checks. (The slow lane runs artificial work here: ONNX
/// Runtime is off the hot path and manages its own memory.)
fn shipped_hot_path_models() -> ModelSettings {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/pipeline");
    ModelSettings {
        sjm: Some(dir.join("sjm")),
        xgboost: Some(dir.join("score.json")),
        ..ModelSettings::default()
    }
}

type Region = Arc<HeapRegion>;

/// An engine on in-process rings, fed and drained from the calling thread.
struct Run {
    engine: Engine,
    /// Swaps the scoring model every few bursts: applying an update is on the hot path too.
    control: ModelControl,
    scoring: XgbModel,
    /// Runs a scoring candidate, then a regime candidate, then the scoring one again: comparing
    /// and taking a new candidate are on the shadow stage's loop.
    shadow: ShadowControl,
    regime: SjmModel,
    md: RingWriter<Region>,
    signals: RingReader<Region>,
    clock: quanta::Clock,
    published: u64,
    read: u64,
}

impl Run {
    fn start(cfg: &EngineConfig, hooks: ThreadHooks) -> Self {
        let (md, md_info) = heap_ring(8 << 20, 1024, b"DBN", content::DBN).expect("md ring");
        let (sig, sig_info) =
            heap_ring(8 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).expect("signal ring");
        let signals = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
        let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
        let clock = quanta::Clock::new();
        let mut engine =
            Engine::start(cfg, reader, sig, clock.clone(), hooks).expect("engine start");
        let control = engine.model_control().expect("model control");
        let shipped =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/pipeline");
        let scoring = XgbModel::load(&shipped.join("score.json")).expect("shipped scoring model");
        let regime = SjmModel::load(&shipped.join("sjm")).expect("shipped regime model");
        let mut shadow = engine.shadow_control().expect("shadow control");
        shadow
            .start_scoring(scoring.clone(), "score", 2)
            .expect("a scoring candidate");
        Self {
            engine,
            control,
            scoring,
            shadow,
            regime,
            md,
            signals,
            clock,
            published: 0,
            read: 0,
        }
    }

    /// Publishes `n` records in bursts, resting a report interval after each and keeping ingest
    /// within [`MAX_LAG`], then finishes the ring.
    fn publish(&mut self, n: u64, deadline: Instant) {
        while self.published < n {
            let end = (self.published + BURST).min(n);
            for i in self.published..end {
                self.md
                    .publish(&sample_mbo_at(i, STEP_NS), self.clock.raw())
                    .expect("publish");
            }
            self.published = end;
            if (end / BURST).is_multiple_of(10) {
                // Prepared here (this thread is not armed); applied and handed back by the
                // stage, which is.
                let version = (end / BURST / 10) as u32 + 1;
                self.control
                    .swap_scoring(self.scoring.clone(), version)
                    .expect("queue a swap");
            }
            match end / BURST % 40 {
                15 => self
                    .shadow
                    .start_regime(self.regime.clone(), "regime", 2)
                    .expect("a regime candidate"),
                30 => self
                    .shadow
                    .start_scoring(self.scoring.clone(), "score", 3)
                    .expect("a scoring candidate"),
                _ => {}
            }
            std::thread::sleep(REPORT_INTERVAL);
            loop {
                drain(&mut self.signals, &mut self.read);
                let ingest = self.engine.ingest();
                assert!(
                    ingest.missed == 0 && ingest.undecodable == 0 && ingest.fatal.is_none(),
                    "ingest lost data: {ingest:?}"
                );
                if self.published - ingest.frames <= MAX_LAG {
                    break;
                }
                assert!(Instant::now() < deadline, "{}", self.state("timed out"));
                std::thread::yield_now();
            }
        }
        self.md.finish();
    }

    fn state(&self, what: &str) -> String {
        format!(
            "{what}: published {}, ingested {}, signals published {}, signals read {}, links {:?}",
            self.published,
            self.engine.ingest().frames,
            self.engine.signals_published(),
            self.read,
            self.engine.links()
        )
    }
}

/// Reads every signal available, checking each answers the next input in order.
fn drain(signals: &mut RingReader<Region>, read: &mut u64) {
    let mut buf = [0u8; SIGNAL_LEN];
    loop {
        match signals.try_read(&mut buf) {
            Ok(_) => {
                let s = Signal::decode(&buf).expect("a valid signal");
                assert_eq!(s.input_seq, *read, "signals arrive in input order");
                assert!(s.n_scores == 1 && s.scores[0].is_finite(), "{s:?}");
                *read += 1;
            }
            Err(ReadError::Empty) => return,
            Err(e) => panic!("signal ring: {e}"),
        }
    }
}

/// The counter sees an armed thread's allocation, and only an armed thread's: without this a
/// dead counter would pass the real check.
fn allocation_counter_is_live() {
    hotpath::reset_armed_counts();
    std::thread::spawn(|| {
        hotpath::arm();
        let v = std::hint::black_box(Vec::<u64>::with_capacity(100));
        hotpath::disarm();
        drop(v);
    })
    .join()
    .expect("control thread");
    assert_eq!(
        (hotpath::armed_allocations(), hotpath::first_armed_size()),
        (1, Some(800)),
        "the counter missed an armed thread's allocation"
    );
    hotpath::reset_armed_counts();
    std::thread::spawn(|| drop(std::hint::black_box(Vec::<u64>::with_capacity(100))))
        .join()
        .expect("control thread");
    assert_eq!(
        hotpath::armed_allocations(),
        0,
        "the counter counted an unarmed thread"
    );
    println!("hot_path: control: the allocation counter counts armed threads only");
}

static ARMED_LOOPS: AtomicUsize = AtomicUsize::new(0);
static DISARMED_LOOPS: AtomicUsize = AtomicUsize::new(0);

fn arm_loop(_: &str) {
    hotpath::arm();
    // Relaxed: read after the threads are joined.
    ARMED_LOOPS.fetch_add(1, Ordering::Relaxed);
}

fn disarm_loop(_: &str) {
    DISARMED_LOOPS.fetch_add(1, Ordering::Relaxed);
    hotpath::disarm();
}

fn no_allocation(policy: Policy, n: u64) {
    // A spinning thread per stage plus the publisher need a core each; with fewer, yielding
    // (a syscall, but no allocation) lets the run finish in reasonable time.
    let idle = if available_cores().len() > STAGE_THREADS {
        IdleStrategy::BusySpin
    } else {
        IdleStrategy::Yielding
    };
    let cfg = config(idle, policy);
    let hooks = ThreadHooks {
        loop_entered: Some(arm_loop),
        loop_exited: Some(disarm_loop),
    };
    hotpath::reset_armed_counts();
    ARMED_LOOPS.store(0, Ordering::Relaxed);
    DISARMED_LOOPS.store(0, Ordering::Relaxed);

    let mut run = Run::start(&cfg, hooks);
    run.publish(n, Instant::now() + Duration::from_secs(120));
    let Run {
        engine,
        mut control,
        mut signals,
        mut read,
        mut shadow,
        ..
    } = run;
    let report = engine.join().expect("engine join");
    drain(&mut signals, &mut read);
    assert!(
        shadow.collect() > 0,
        "replaced candidates came back from the shadow stage"
    );
    assert!(
        control.applied() >= 5 && control.collect() > 0,
        "model swaps were applied on the armed stage: {}",
        control.applied()
    );

    let (allocs, frees) = (hotpath::armed_allocations(), hotpath::armed_deallocations());
    assert!(
        allocs == 0 && frees == 0,
        "stage threads allocated {allocs} times (the first of {} bytes) and freed {frees} times \
         inside their duty loops",
        hotpath::first_armed_size().map_or("?".into(), |n| n.to_string())
    );
    // Not vacuous: every stage loop was armed, and the run did the work.
    let loops = (
        ARMED_LOOPS.load(Ordering::Relaxed),
        DISARMED_LOOPS.load(Ordering::Relaxed),
    );
    assert_eq!(
        loops,
        (STAGE_THREADS, STAGE_THREADS),
        "armed/disarmed loops"
    );
    let lane = check_report(&report, n, read);
    let overflowed = match policy {
        Policy::DropOldest => lane.dropped,
        _ => lane.conflated,
    };
    assert!(overflowed > 0, "the slow lane never overflowed: {lane:?}");
    assert!(
        report.elapsed >= REPORT_INTERVAL * 100,
        "the run ({:?}) was too short to hand histograms over many times",
        report.elapsed
    );
    println!(
        "hot_path: no allocation: {policy} lane, {idle:?} idle: {n} records -> {read} signals in \
         {:?}; lane pushed {} conflated {} dropped {}; {STAGE_THREADS} armed stage loops made 0 \
         allocations and 0 frees",
        report.elapsed, lane.pushed, lane.conflated, lane.dropped
    );
}

/// The engine fed over loopback UDP through `backend`, its five stage loops armed: no
/// allocation or free inside them while `n` records arrive, in bursts, every one delivered.
fn udp_ingest_allocates_nothing(backend: UdpBackend, n: u64) {
    let idle = if available_cores().len() > 4 {
        IdleStrategy::BusySpin
    } else {
        IdleStrategy::Yielding
    };
    let mut cfg = config(idle, Policy::ConflateLatest);
    cfg.slow_lane = None;
    let mut ucfg = UdpConfig::new("127.0.0.1:0".parse().expect("addr"));
    ucfg.backend = backend;
    ucfg.from_start = true;
    let clock = quanta::Clock::new();
    let source = match UdpSource::bind(&ucfg, clock.clone()) {
        Ok(s) => s,
        Err(e @ UdpError::Uring { .. }) => {
            println!("hot_path: SKIPPED udp {backend}: {e}");
            return;
        }
        Err(e) => panic!("udp {backend}: {e}"),
    };
    let stats = source.stats();
    let to = source.local_addr().expect("bound address");
    let (sig, sig_info) =
        heap_ring(8 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).expect("signal ring");
    let mut signals = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    hotpath::reset_armed_counts();
    ARMED_LOOPS.store(0, Ordering::Relaxed);
    DISARMED_LOOPS.store(0, Ordering::Relaxed);
    let hooks = ThreadHooks {
        loop_entered: Some(arm_loop),
        loop_exited: Some(disarm_loop),
    };
    let engine = Engine::start(&cfg, source, sig, clock.clone(), hooks).expect("engine start");
    let mut sender = UdpSender::new(UdpSendOptions::new(to), clock.clone()).expect("sender");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut read = 0;
    for i in 0..n {
        sender
            .push(&sample_mbo_at(i, STEP_NS))
            .expect("send a datagram");
        if (i + 1) % BURST == 0 {
            // Keep the receive buffer from overflowing: loopback drops what it cannot hold.
            sender.flush().expect("flush");
            while stats.counts().records <= i {
                drain(&mut signals, &mut read);
                assert!(Instant::now() < deadline, "udp {backend}: stalled at {i}");
                std::thread::yield_now();
            }
        }
    }
    sender.finish().expect("end of stream");
    let report = engine.join().expect("engine join");
    drain(&mut signals, &mut read);
    let (allocs, frees) = (hotpath::armed_allocations(), hotpath::armed_deallocations());
    assert!(
        allocs == 0 && frees == 0,
        "udp {backend}: stage threads allocated {allocs} times (the first of {} bytes) and freed \
         {frees} times inside their duty loops",
        hotpath::first_armed_size().map_or("?".into(), |n| n.to_string())
    );
    let loops = (
        ARMED_LOOPS.load(Ordering::Relaxed),
        DISARMED_LOOPS.load(Ordering::Relaxed),
    );
    // The four main-path stages and the (idle) shadow.
    assert_eq!(loops, (5, 5), "udp {backend}: armed/disarmed loops");
    let udp = stats.counts();
    assert_eq!(
        (udp.records, udp.records_missed, report.signals, read),
        (n, 0, n, n),
        "udp {backend}: every record received and answered: {udp:?}"
    );
    println!(
        "hot_path: no allocation: udp {backend} ({}), {idle:?} idle: {n} records -> {read} \
         signals in {:?}; 5 armed stage loops made 0 allocations and 0 frees",
        stats.backend, report.elapsed
    );
}

/// Checks that the engine delivered everything; returns the slow lane's counters.
fn check_report(report: &EngineReport, n: u64, read: u64) -> tickpipe::pipeline::link::LinkCounts {
    assert_eq!((report.signals, read), (n, n), "signals published and read");
    assert_eq!(report.ingest.frames, n);
    assert_eq!(report.main_path_loss(), 0);
    // The models ran on every vector (not vacuous).
    let m = &report.inference;
    assert_eq!((m.ticks, m.scored), (n, n), "{m:?}");
    assert!(
        m.invalid_input < n / 2,
        "the regime model mostly ran: {m:?}"
    );
    let lane = report
        .links
        .iter()
        .find(|l| l.name == "features->forecast")
        .expect("the slow lane's link")
        .clone();
    assert_eq!(
        lane.pushed + lane.conflated + lane.dropped,
        sample_bars(n, STEP_NS, 1_000_000_000),
        "every bar offered to the lane is accounted for: {lane:?}"
    );
    assert_eq!(report.slow_processed, Some(lane.pushed));
    for stage in &report.stages {
        let want = if stage.name == "forecast" {
            lane.pushed
        } else {
            n
        };
        assert_eq!(
            stage.hists.events, want,
            "{} recorded every event",
            stage.name
        );
    }
    assert_eq!(report.stages.len(), RECORDED_STAGES);
    // The shadow had a candidate from the first vector: each reached it or was counted lost.
    let link = report
        .links
        .iter()
        .find(|l| l.name == "inference->shadow")
        .expect("the shadow's link");
    assert_eq!(link.pushed + link.dropped, n, "{link:?}");
    let s = report.shadow.expect("the shadow's summary");
    assert!(
        s.seen > 0 && s.kind.is_some(),
        "the last candidate compared: {s:?}"
    );
    lane
}

fn child(flag: &str) -> Output {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .expect("spawn the child")
}

fn show(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn skip_reason(out: &Output) -> Option<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with(SKIP))?;
    Some(line.trim_start_matches(SKIP).trim().to_string())
}

fn no_syscalls() {
    let control = child(CONTROL_CHILD);
    if let Some(why) = skip_reason(&control) {
        println!("hot_path: no syscall: SKIPPED: {why}");
        return;
    }
    assert_eq!(
        control.status.signal(),
        Some(FORBIDDEN_SYSCALL_SIGNAL),
        "control: a thread that forbade itself syscalls and then slept should kill its process \
         with SIGSYS\n{}",
        show(&control)
    );
    assert!(
        String::from_utf8_lossy(&control.stderr).contains("made syscall"),
        "control: the SIGSYS handler did not name the syscall\n{}",
        show(&control)
    );
    println!("hot_path: control: a filtered thread's syscall kills the process with SIGSYS");

    let out = child(SYSCALL_CHILD);
    if let Some(why) = skip_reason(&out) {
        println!("hot_path: no syscall: SKIPPED: {why}");
        return;
    }
    if out.status.signal() == Some(FORBIDDEN_SYSCALL_SIGNAL) {
        panic!(
            "a stage thread made a syscall in its duty loop (killed by SIGSYS; stderr names the \
             syscall; run `{} {SYSCALL_CHILD}` under gdb to see where)\n{}",
            std::env::current_exe().unwrap_or_default().display(),
            show(&out)
        );
    }
    assert!(
        out.status.success(),
        "the syscall-free child failed\n{}",
        show(&out)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("hot_path: no syscall: {line}");
    }
}

/// Installs the filter on a plain thread that then sleeps: the process must die by SIGSYS.
fn control_child() -> ! {
    let _ = hotpath::disable_core_dumps();
    std::thread::spawn(|| {
        if let Err(e) = hotpath::forbid_syscalls_on_this_thread() {
            println!("{SKIP} the kernel will not filter syscalls: {e}");
            std::process::exit(0);
        }
        std::thread::sleep(Duration::from_millis(1));
        println!("the filter let a sleep through");
        std::process::exit(1);
    });
    std::thread::sleep(Duration::from_secs(30));
    println!("the filtered thread neither died nor returned");
    std::process::exit(2);
}

static FILTERED_LOOPS: AtomicUsize = AtomicUsize::new(0);
static FINISHED_LOOPS: AtomicUsize = AtomicUsize::new(0);

fn forbid_syscalls(role: &str) {
    if let Err(e) = hotpath::forbid_syscalls_on_this_thread() {
        println!("{SKIP} the kernel will not filter syscalls on the {role} thread: {e}");
        std::process::exit(0);
    }
    // Relaxed: polled by the main thread; no data hangs on it.
    FILTERED_LOOPS.fetch_add(1, Ordering::Relaxed);
}

/// A filtered thread can never exit (exiting is made of syscalls): it spins until the process
/// ends.
fn spin_forever(_: &str) {
    FINISHED_LOOPS.fetch_add(1, Ordering::Relaxed);
    loop {
        std::hint::spin_loop();
    }
}

/// Runs the pipeline with every stage thread filtered, from the first duty cycle through the
/// drain and shutdown to the last. Ends with `exit`, never a join (the threads cannot end).
fn syscall_child() -> ! {
    let _ = hotpath::disable_core_dumps();
    // A failed check must end the process rather than unwind into the engine's drop, which
    // would wait for threads that never end.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::exit(1);
    }));
    let n = 50_000;
    // No-op idling never enters the kernel; the other idle strategies would by design.
    let cfg = config(IdleStrategy::NoOp, Policy::ConflateLatest);
    let hooks = ThreadHooks {
        loop_entered: Some(forbid_syscalls),
        loop_exited: Some(spin_forever),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut run = Run::start(&cfg, hooks);
    run.publish(n, deadline);
    // Every stage drains, closes its output and leaves its loop, all under the filter.
    while FINISHED_LOOPS.load(Ordering::Relaxed) < STAGE_THREADS || !run.signals.is_finished() {
        drain(&mut run.signals, &mut run.read);
        assert!(Instant::now() < deadline, "{}", run.state("timed out"));
        std::thread::sleep(Duration::from_millis(1));
    }
    drain(&mut run.signals, &mut run.read);
    assert_eq!(FILTERED_LOOPS.load(Ordering::Relaxed), STAGE_THREADS);
    assert!(
        run.control.applied() >= 2,
        "model swaps ran under the filter"
    );
    assert_eq!(
        (run.engine.signals_published(), run.read),
        (n, n),
        "signals published and read"
    );
    let ingest = run.engine.ingest();
    assert_eq!((ingest.frames, ingest.missed), (n, 0));
    let lane = run
        .engine
        .links()
        .into_iter()
        .find(|l| l.name == "features->forecast")
        .expect("the slow lane's link");
    assert_eq!(
        lane.pushed + lane.conflated + lane.dropped,
        sample_bars(n, STEP_NS, 1_000_000_000),
        "{lane:?}"
    );
    // The kernel's own account: exactly the stage threads run under a filter.
    let modes = seccomp_modes();
    let filtered: Vec<&str> = modes
        .iter()
        .filter(|(_, mode)| *mode == "2")
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        filtered,
        [
            "features",
            "forecast",
            "health",
            "inference",
            "ingest",
            "shadow"
        ],
        "threads under a seccomp filter: {modes:?}"
    );
    println!(
        "{n} records -> {} signals published and read, lane pushed {} conflated {}, through \
         {STAGE_THREADS} stage loops that each ran start to finish under a filter that kills on \
         any syscall",
        run.read, lane.pushed, lane.conflated
    );
    std::process::exit(0);
}

/// Each thread's name and seccomp mode (`/proc/self/task/*/status`: 0 none, 2 filter).
fn seccomp_modes() -> BTreeMap<String, String> {
    let mut modes = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let path = task.expect("a task entry").path();
        let Ok(status) = std::fs::read_to_string(path.join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        modes.insert(field("Name:"), field("Seccomp:"));
    }
    modes
}
