//! The engine end to end on in-process rings: every mode gives the same signals, Invoker mode
//! with a mock clock is deterministic down to the latency histograms, shutdown drains, laps are
//! counted, and a slow lane conflates without holding the main path.

use std::sync::Arc;
use std::time::Duration;

use tickpipe_pipeline::config::{Placement, SlowLane};
use tickpipe_pipeline::latency::ticks_to_ns;
use tickpipe_pipeline::msg::Event;
use tickpipe_pipeline::sample::{sample_bars, sample_mbo, sample_mbo_at};
use tickpipe_pipeline::signal::{SIGNAL_LEN, SIGNAL_META, Signal};
use tickpipe_pipeline::{
    Engine, EngineConfig, EngineReport, IdleStrategy, Policy, ThreadHooks, ThreadingMode,
};
use tickpipe_shm::ring::{HeapRegion, RingInfo, content};
use tickpipe_shm::{ReadError, RingReader, RingWriter, StartAt, heap_ring};

type Ring = RingWriter<Arc<HeapRegion>>;

fn rings(md_capacity: usize) -> (Ring, RingInfo, Ring, RingInfo) {
    let (md, md_info) = heap_ring(md_capacity, 1024, b"DBN", content::DBN).unwrap();
    let (sig, sig_info) = heap_ring(8 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).unwrap();
    (md, md_info, sig, sig_info)
}

fn read_all(reader: &mut RingReader<Arc<HeapRegion>>) -> Vec<[u8; SIGNAL_LEN]> {
    let mut out = Vec::new();
    let mut buf = [0u8; SIGNAL_LEN];
    loop {
        match reader.try_read(&mut buf) {
            Ok(_) => out.push(buf),
            Err(ReadError::Empty) => break,
            Err(e) => panic!("signal ring: {e}"),
        }
    }
    out
}

fn config(mode: ThreadingMode) -> EngineConfig {
    EngineConfig {
        mode,
        batch: 32,
        link_capacity: 64,
        report_interval: Duration::from_millis(5),
        ..EngineConfig::default()
    }
}

/// Publishes `n` records with the real clock while the engine runs, then finishes the ring.
fn run(cfg: &EngineConfig, n: u64) -> (Vec<[u8; SIGNAL_LEN]>, EngineReport) {
    run_spaced(cfg, n, 10)
}

/// [`run`] with records `step_ns` apart in exchange time.
fn run_spaced(cfg: &EngineConfig, n: u64, step_ns: u64) -> (Vec<[u8; SIGNAL_LEN]>, EngineReport) {
    let (mut md, md_info, sig, sig_info) = rings(16 << 20);
    let mut sig_reader = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
    let clock = quanta::Clock::new();
    let mut engine =
        Engine::start(cfg, reader, sig, clock.clone(), ThreadHooks::default()).unwrap();
    for i in 0..n {
        md.publish(&sample_mbo_at(i, step_ns), clock.raw()).unwrap();
        if cfg.mode == ThreadingMode::Invoker && i % 5 == 0 {
            engine.invoke();
        }
    }
    md.finish();
    let report = engine.join().unwrap();
    (read_all(&mut sig_reader), report)
}

#[test]
fn modes_give_identical_signals() {
    let n = 5_000;
    let (invoker, rep) = run(&config(ThreadingMode::Invoker), n);
    assert_eq!(invoker.len() as u64, n);
    assert_eq!(rep.signals, n);
    assert_eq!(rep.main_path_loss(), 0);
    // Every signal carries its input's identity, in input order.
    for (i, bytes) in invoker.iter().enumerate() {
        let s = Signal::decode(bytes).unwrap();
        let m = Event::decode(&sample_mbo(i as u64), 0, 0).unwrap();
        assert_eq!(
            (s.input_seq, s.instrument_id, s.ts_event),
            (i as u64, m.instrument_id, m.ts_event)
        );
    }
    let cores = tickpipe_pipeline::stage::available_cores();
    let mut dedicated = config(ThreadingMode::Dedicated);
    let mut shared = config(ThreadingMode::Shared);
    // Threads yield when idle so the test does not depend on having a core per stage.
    for p in dedicated.stages.iter_mut().chain(shared.stages.iter_mut()) {
        p.idle = IdleStrategy::Yielding;
    }
    shared.stages[0].core = cores.first().copied();
    shared.stages[1].core = cores.first().copied();
    for cfg in [dedicated, shared] {
        let (signals, rep) = run(&cfg, n);
        assert!(
            signals == invoker,
            "{} mode differs from invoker mode",
            cfg.mode
        );
        assert_eq!(rep.ingest.frames, n);
        for stage in &rep.stages {
            assert_eq!(stage.hists.events, n, "{} saw every event", stage.name);
            assert_eq!(stage.hists.queue.len(), n);
        }
        let e2e = &rep
            .stages
            .iter()
            .find(|s| s.name == "health")
            .unwrap()
            .hists
            .e2e;
        assert_eq!(e2e.len(), n);
    }
}

fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Invoker mode on a mock clock: the publisher advances the clock 100 ns per record and the
/// engine runs a duty cycle every 5 records, 1 µs later.
fn golden_run() -> String {
    let (mut md, md_info, sig, sig_info) = rings(16 << 20);
    let mut sig_reader = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
    let (clock, mock) = quanta::Clock::mock();
    let mut cfg = config(ThreadingMode::Invoker);
    cfg.slow_lane = Some(SlowLane {
        policy: Policy::ConflateLatest,
        capacity: 4,
        overflow: 16,
        work: Duration::ZERO,
    });
    let mut engine =
        Engine::start(&cfg, reader, sig, clock.clone(), ThreadHooks::default()).unwrap();
    for i in 0..3_000u64 {
        md.publish(&sample_mbo(i), clock.raw()).unwrap();
        mock.increment(100u64);
        if i % 5 == 4 {
            mock.increment(1_000u64);
            engine.invoke();
        }
    }
    md.finish();
    let rep = engine.join().unwrap();
    let signals = read_all(&mut sig_reader);
    let mut out = format!(
        "signals {} fnv {:#018x}\n",
        signals.len(),
        fnv(signals.iter().flatten().copied())
    );
    for s in &rep.stages {
        let h = &s.hists;
        let q = |h: &hdrhistogram::Histogram<u64>| {
            format!(
                "n={} p50={} p99={} max={}",
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max()
            )
        };
        out += &format!(
            "{}: events={} queue[{}] service[{}] e2e[{}]\n",
            s.name,
            h.events,
            q(&h.queue),
            q(&h.service),
            q(&h.e2e)
        );
    }
    for l in &rep.links {
        out += &format!(
            "{} {}: pushed={} popped={} conflated={} dropped={} stalls={}\n",
            l.name, l.policy, l.pushed, l.popped, l.conflated, l.dropped, l.stalls
        );
    }
    out
}

#[test]
fn invoker_with_mock_clock_matches_golden() {
    let a = golden_run();
    assert_eq!(a, golden_run(), "two runs differ");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/invoker_mock.txt");
    if std::env::var_os("TICKPIPE_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &a).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (TICKPIPE_UPDATE_GOLDEN=1 writes it)",
            path.display()
        )
    });
    assert_eq!(a, want, "output differs from {}", path.display());
}

#[test]
fn stop_drains_what_ingest_read() {
    let (mut md, md_info, sig, sig_info) = rings(64 << 20);
    let mut sig_reader = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
    let clock = quanta::Clock::new();
    let mut cfg = config(ThreadingMode::Dedicated);
    for p in &mut cfg.stages {
        *p = Placement {
            core: None,
            idle: IdleStrategy::Yielding,
        };
    }
    let engine = Engine::start(&cfg, reader, sig, clock.clone(), ThreadHooks::default()).unwrap();
    let stop = engine.stop_handle();
    let publisher = std::thread::spawn(move || {
        let mut i = 0u64;
        // Publish until the engine has been asked to stop, without ever finishing the ring.
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 5_000_000 {
            md.publish(&sample_mbo(i), clock.raw()).unwrap();
            i += 1;
        }
        (md, i)
    });
    while engine.signals_published() < 10_000 {
        std::thread::yield_now();
    }
    engine.stop();
    let rep = engine.join().unwrap();
    let (_md, published) = publisher.join().unwrap();
    let signals = read_all(&mut sig_reader);
    assert!(rep.ingest.frames >= 10_000 && rep.ingest.frames <= published);
    // Everything ingest took in came out: stopping drains the pipeline in order.
    assert_eq!(signals.len() as u64, rep.ingest.frames);
    assert_eq!(rep.signals, rep.ingest.frames);
    for l in &rep.links {
        assert_eq!(l.pushed, l.popped, "{} drained", l.name);
    }
}

#[test]
fn laps_are_counted_exactly() {
    // A 64 KiB ring holds about 800 of these frames; 5 000 are published before ingest runs.
    let (mut md, md_info, sig, sig_info) = rings(64 << 10);
    let mut sig_reader = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
    let mut engine = Engine::start(
        &config(ThreadingMode::Invoker),
        reader,
        sig,
        quanta::Clock::new(),
        ThreadHooks::default(),
    )
    .unwrap();
    for i in 0..5_000u64 {
        md.publish(&sample_mbo(i), 0).unwrap();
    }
    md.finish();
    engine.invoke();
    let rep = engine.join().unwrap();
    let signals = read_all(&mut sig_reader);
    assert_eq!(rep.ingest.laps, 1);
    assert!(rep.ingest.missed > 4_000, "{:?}", rep.ingest);
    assert_eq!(rep.ingest.frames + rep.ingest.missed, 5_000);
    assert_eq!(signals.len() as u64, rep.ingest.frames);
    assert_eq!(rep.main_path_loss(), rep.ingest.missed);
    // The records that got through are the newest, in order.
    let first = Signal::decode(&signals[0]).unwrap().input_seq;
    assert_eq!(first, rep.ingest.missed);
}

#[test]
fn slow_lane_conflates_and_never_holds_the_main_path() {
    // Records 1 ms apart: 50 s of exchange time, a one-second bar per instrument and second.
    let n = 50_000u64;
    let step = 1_000_000u64;
    // 20 ms per bar: the lane takes at most ~50 bars a second, so however slowly a loaded host
    // runs the main path (350 bars within well under 3.5 s), most bars must be conflated.
    let work = Duration::from_millis(20);
    let mut cfg = config(ThreadingMode::Shared);
    for p in &mut cfg.stages {
        p.idle = IdleStrategy::Yielding;
    }
    // The main path shares one thread; the lane has its own.
    let cores = tickpipe_pipeline::stage::available_cores();
    for p in &mut cfg.stages[..4] {
        p.core = cores.first().copied();
    }
    cfg.slow_lane = Some(SlowLane {
        policy: Policy::ConflateLatest,
        capacity: 4,
        overflow: 64,
        work,
    });
    let (signals, rep) = run_spaced(&cfg, n, step);
    assert_eq!(
        signals.len() as u64,
        n,
        "the main path delivered everything"
    );
    assert_eq!(rep.main_path_loss(), 0);
    let lane = rep
        .links
        .iter()
        .find(|l| l.name == "features->forecast")
        .unwrap();
    let offered = sample_bars(n, step, 1_000_000_000);
    assert!(offered > 300, "{offered}");
    // Every bar offered to the lane is accounted for.
    assert_eq!(
        lane.pushed + lane.conflated + lane.dropped,
        offered,
        "{lane:?}"
    );
    assert!(
        lane.conflated > offered / 2,
        "the lane could not keep up: {lane:?}"
    );
    assert_eq!(lane.dropped, 0, "7 instruments fit the table");
    assert_eq!(rep.slow_processed, Some(lane.pushed));
    // The main path never waited for the lane: had inference waited for even one lane message,
    // its batch would have taken the lane's `work`.
    let inference = &rep
        .stages
        .iter()
        .find(|s| s.name == "inference")
        .unwrap()
        .hists;
    let service = ticks_to_ns(&inference.service, &rep.clock).unwrap();
    assert!(
        service.value_at_quantile(0.9) < work.as_nanos() as u64,
        "inference p90 service {} ns",
        service.value_at_quantile(0.9)
    );
    let forecast = &rep
        .stages
        .iter()
        .find(|s| s.name == "forecast")
        .unwrap()
        .hists;
    assert_eq!(forecast.events, lane.pushed);
}
