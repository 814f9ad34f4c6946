//! Memory discipline of the whole process, not only of the stage threads.
//!
//! - The metric: `RssAnon` (in `/proc/self/status`) counts heap growth and leaves shared-memory
//!   rings out (they are `RssShmem`), checked with a heap allocation and a `/dev/shm` ring.
//! - No allocation after start-up, anywhere: this binary's global allocator keeps a tally per
//!   thread of the whole process. The engine runs from a generated source (Dedicated mode: a
//!   thread per stage, the slow lane, the reporter, the health monitor, a user stage and a
//!   threaded signal consumer from the builder); after a warm-up, a window of steady state
//!   must show zero allocations and zero frees on every thread of the process: pipeline
//!   threads, reporter, monitor, user threads, feeder and this one.
//! - `tickpipe profile --generate` reports RssAnon over time: after the first steady sample it
//!   grows by less than a bound, and its peak stays within 64 MB with the built-in default,
//!   which sizes per-instrument state for the generated stream (four instruments).
//!
//! `harness = false`: the test harness's own threads would share the tally.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tickpipe::pipeline::config::{ModelSettings, Placement, SlowLane};
use tickpipe::pipeline::msg::Tick;
use tickpipe::pipeline::sample::sample_mbo_at;
use tickpipe::pipeline::signal::{SIGNAL_LEN, SIGNAL_META, Signal};
use tickpipe::pipeline::{IdleStrategy, Policy, ThreadingMode};
use tickpipe::profile_report::{RssSample, read_rss};
use tickpipe::shm::hotpath::{self, CountingAlloc, TALLY_THREADS, ThreadTally};
use tickpipe::shm::ring::content;
use tickpipe::shm::{RingReader, StartAt, heap_ring};
use tickpipe::{Delivery, EngineBuilder, EngineConfig, UserStage};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc::new();

fn main() {
    hotpath::count_all_threads(true);
    tally_sees_every_thread();
    rss_anon_counts_the_heap_and_not_the_rings();
    steady_state_allocates_nothing_anywhere();
    profile_memory_stays_flat_and_small();
    println!("memory: all checks passed");
}

/// A thread's name from the kernel (`/proc/self/task/<tid>/comm`).
fn thread_name(tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("(ended {tid})"))
}

/// Allocations of thread `tid` so far, read without allocating.
fn allocations_of(tid: u32) -> u64 {
    let mut buf = [ThreadTally::default(); TALLY_THREADS];
    let n = hotpath::thread_tallies(&mut buf);
    buf[..n]
        .iter()
        .find(|t| t.tid == tid)
        .map_or(0, |t| t.allocations)
}

/// The control: an allocating thread shows up under its own id, with its count.
fn tally_sees_every_thread() {
    let (tid, allocs) = std::thread::spawn(|| {
        let tid = hotpath::current_tid();
        let before = allocations_of(tid);
        for i in 0..10u64 {
            std::hint::black_box(Box::new(i));
        }
        let after = allocations_of(tid);
        (tid, after - before)
    })
    .join()
    .expect("control thread");
    // The ten boxes and nothing else between the two readings.
    assert_eq!(allocs, 10, "thread {tid}: the tally missed allocations");
    assert_eq!(hotpath::untallied_allocations(), 0);
    println!("memory: control: the per-thread tally counts every thread's allocations");
}

/// RssAnon grows with touched heap and not with a touched `/dev/shm` ring (RssShmem does).
fn rss_anon_counts_the_heap_and_not_the_rings() {
    const MIB: usize = 1 << 20;
    let mut buf = String::new();
    let at = |buf: &mut String| read_rss(buf).expect("/proc/self/status");
    let before = at(&mut buf);
    let heap = vec![1u8; 32 * MIB];
    let with_heap = at(&mut buf);
    let dir = if Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let path = dir.join(format!("tickpipe-memory-test-{}.ring", std::process::id()));
    let mut ring = tickpipe::shm::mapped::create(
        &path,
        &tickpipe::shm::mapped::CreateOptions {
            capacity: 32 * MIB,
            max_payload: 4096,
            ..Default::default()
        },
        b"",
    )
    .expect("a ring");
    let _ = std::fs::remove_file(&path);
    // Fill the whole data area: every page touched.
    let payload = [7u8; 4096];
    for _ in 0..(32 * MIB / 4096) {
        ring.publish(&payload, 0).expect("publish");
    }
    let with_ring = at(&mut buf);
    drop(heap);
    let grew = |a: &RssSample, b: &RssSample| {
        (
            b.anon_kib as i64 - a.anon_kib as i64,
            b.shmem_kib as i64 - a.shmem_kib as i64,
        )
    };
    let (heap_anon, heap_shmem) = grew(&before, &with_heap);
    let (ring_anon, ring_shmem) = grew(&with_heap, &with_ring);
    println!(
        "memory: 32 MiB heap: RssAnon {heap_anon:+} KiB, RssShmem {heap_shmem:+} KiB; 32 MiB \
         ring in {}: RssAnon {ring_anon:+} KiB, RssShmem {ring_shmem:+} KiB, RssFile {:+} KiB",
        dir.display(),
        with_ring.file_kib as i64 - with_heap.file_kib as i64
    );
    assert!(
        (31 * 1024..=34 * 1024).contains(&heap_anon),
        "heap counted in RssAnon"
    );
    assert!(
        ring_anon.abs() < 2048,
        "a ring is not RssAnon: {ring_anon:+} KiB"
    );
    if dir == Path::new("/dev/shm") {
        assert!(
            ring_shmem >= 31 * 1024,
            "a /dev/shm ring is RssShmem: {ring_shmem:+} KiB"
        );
    }
}

/// Counts ticks; allocates nothing after it is built.
struct Counter(Arc<AtomicU64>);

impl UserStage for Counter {
    fn name(&self) -> &str {
        "user-counter"
    }
    fn on_tick(&mut self, _: &Tick) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

const STEP_NS: u64 = 1_000_000;

fn steady_state_allocates_nothing_anywhere() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/pipeline");
    let mut cfg = EngineConfig {
        mode: ThreadingMode::Dedicated,
        report_interval: Duration::from_millis(10),
        // A thread per stage, yielding when idle: the test must not need a core per thread.
        stages: [Placement {
            core: None,
            idle: IdleStrategy::Yielding,
        }; 5],
        slow_lane: Some(SlowLane {
            policy: Policy::ConflateLatest,
            capacity: 4,
            overflow: 64,
            work: Duration::from_millis(2),
        }),
        models: ModelSettings {
            sjm: Some(dir.join("sjm")),
            xgboost: Some(dir.join("score.json")),
            ..ModelSettings::default()
        },
        ..EngineConfig::default()
    };
    cfg.features.max_instruments = 8;
    cfg.health.tick = Duration::from_millis(20);
    let (mut md, info) = heap_ring(64 << 20, 1024, b"DBN", content::DBN).expect("md ring");
    let (sig, sig_info) =
        heap_ring(1 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).expect("signal ring");
    let reader = RingReader::new(md.region().clone(), info, StartAt::Oldest);
    let _sig_reader = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let (ticks, signals) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let counted = signals.clone();
    let engine = EngineBuilder::new()
        .config(cfg)
        .market_data_reader(reader)
        .signal_writer(sig)
        .user_stage(Counter(ticks.clone()), None)
        .signal_consumer("consumer", Delivery::default(), move |_: &Signal| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .start()
        .expect("engine");
    let health = engine.health().expect("the monitor runs");
    let ingest = engine.ingest_stats();

    // The feeder: a paced stream of generated records, built on the stack.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let feeder = {
        let (stop, published) = (stop.clone(), published.clone());
        std::thread::Builder::new()
            .name("feeder".into())
            .spawn(move || {
                let clock = quanta::Clock::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..200 {
                        md.publish(&sample_mbo_at(i, STEP_NS), clock.raw())
                            .expect("publish");
                        i += 1;
                    }
                    published.store(i, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
                md.finish();
            })
            .expect("feeder")
    };

    // Warm-up: every stage, the reporter and the monitor have done their work a few times.
    let deadline = Instant::now() + Duration::from_secs(120);
    let warm = Instant::now();
    while ingest.counts().frames < 20_000 || warm.elapsed() < Duration::from_secs(1) {
        assert!(Instant::now() < deadline, "the engine did not warm up");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ticks_before = health.snapshot().tick;
    let frames_before = ingest.counts().frames;
    let mut before = [ThreadTally::default(); TALLY_THREADS];
    let mut after = [ThreadTally::default(); TALLY_THREADS];
    let nb = hotpath::thread_tallies(&mut before);
    // The window: this thread only sleeps.
    std::thread::sleep(Duration::from_secs(3));
    let na = hotpath::thread_tallies(&mut after);
    let frames_in_window = ingest.counts().frames - frames_before;
    let monitor_ticks = health.snapshot().tick - ticks_before;
    let names: BTreeMap<u32, String> = after[..na]
        .iter()
        .map(|t| (t.tid, thread_name(t.tid)))
        .collect();

    stop.store(true, Ordering::Relaxed);
    feeder.join().expect("feeder");
    let report = engine.join().expect("join");

    let start: BTreeMap<u32, ThreadTally> = before[..nb].iter().map(|t| (t.tid, *t)).collect();
    let mut total = (0, 0);
    let mut rows = Vec::new();
    for t in &after[..na] {
        let b = start.get(&t.tid).copied().unwrap_or_default();
        let (allocs, frees, bytes) = (
            t.allocations - b.allocations,
            t.deallocations - b.deallocations,
            t.bytes - b.bytes,
        );
        total.0 += allocs;
        total.1 += frees;
        let name = &names[&t.tid];
        rows.push(format!(
            "{name:>16} (tid {}): {allocs} allocations ({bytes} bytes), {frees} frees",
            t.tid
        ));
    }
    println!(
        "memory: steady-state window of 3 s: {frames_in_window} frames through the pipeline, \
         {monitor_ticks} monitor ticks, per thread of the process:"
    );
    for r in &rows {
        println!("memory:   {r}");
    }
    // Not vacuous: the pipeline worked, the monitor ticked, the reporter merged sets, the user
    // threads saw everything.
    assert!(frames_in_window >= 10_000, "{frames_in_window} frames");
    assert!(monitor_ticks >= 50, "{monitor_ticks} monitor ticks");
    let threads: Vec<&str> = names.values().map(String::as_str).collect();
    for t in [
        "ingest",
        "features",
        "inference",
        "health",
        "forecast",
        "reporter",
        "health-monitor",
        "user-counter",
        "consumer",
        "feeder",
    ] {
        assert!(
            threads.contains(&t),
            "thread {t} is in the tally: {threads:?}"
        );
    }
    let n = report.ingest.frames;
    assert_eq!(report.signals, n);
    assert_eq!(ticks.load(Ordering::Relaxed), n);
    assert_eq!(signals.load(Ordering::Relaxed), n);
    assert!(report.stages.iter().all(|s| s.hists.events > 0));
    assert_eq!(
        total,
        (0, 0),
        "allocations and frees in the steady-state window:\n{}",
        rows.join("\n")
    );
}

/// `tickpipe profile --generate` with the built-in default (every shipped model, state sized for
/// the four generated instruments).
fn profile_memory_stays_flat_and_small() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_tickpipe"))
        .args(["profile", "--generate", "300000", "--rss-interval", "100ms"])
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .expect("run tickpipe profile");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "profile failed\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = tickpipe::profile_report::load_summary(&dir.path().join("out"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let kib = |key: &str| -> i64 {
        summary.run[key]
            .parse()
            .unwrap_or_else(|e| panic!("{key}: {e}"))
    };
    let (startup, peak, growth) = (
        kib("rss_anon_startup_kib"),
        kib("rss_anon_peak_kib"),
        kib("rss_anon_growth_kib"),
    );
    let samples = summary.run["rss_samples"].split(' ').count();
    let memory: String = stdout
        .lines()
        .skip_while(|l| !l.starts_with("memory"))
        .collect::<Vec<_>>()
        .join("\n");
    println!("memory: tickpipe profile --generate 300000:\n{memory}");
    assert!(samples >= 4, "{samples} samples: {memory}");
    assert!(startup > 0 && peak >= startup);
    // After the first steady sample only histogram buckets for latencies not seen before are
    // touched for the first time: a few pages, never the input's size (300 000 events would be
    // 16 MiB of records).
    assert!(
        growth < 1024,
        "RssAnon grew {growth} KiB after warm-up\n{memory}"
    );
    // 64 MB in decimal units, the stricter reading.
    assert!(
        peak * 1024 <= 64_000_000,
        "RssAnon peak {peak} KiB\n{memory}"
    );
    // The built-in default sizes its state for the generated instruments and says so, and its
    // windows hold every entry of these 300,000 events.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("per-instrument state for max_instruments = 4:"),
        "{stderr}"
    );
    assert!(stdout.contains("windows: 0 overflowed entries"), "{stdout}");
}
