//! Pipeline throughput with pass-through stages, in events per second, beside the transport
//! floor measured the same way in the same run.
//!
//! One iteration is one batch of `BATCH` DBN MBO records published into a 64 MiB in-process
//! market-data ring:
//!
//! - `pipeline_throughput/invoker`: Invoker mode, everything on the bench thread. The batch is
//!   published first, untimed; the time is that of the duty cycles (`Engine::invoke`) that take
//!   it through ingest, features, inference and health until its last signal is published.
//! - `pipeline_throughput/shared`: Shared mode, the four stages on one thread pinned to the
//!   second core and busy-spinning; the bench thread, pinned to the first core, publishes. Timed
//!   from the first publish to the publication of the batch's last signal.
//! - `pipeline_throughput/ring_only`: the same publisher, and a plain thread on the second core
//!   that only drains the market-data ring with `read_batch` (no decoding, no stages, no signal
//!   ring), timed from the first publish to the last read. `shared / ring_only` is what the
//!   pipeline costs over the transport it cannot do without.
//!
//! A case keeps one engine (or drain thread) for all its iterations, so thread start-up stays out
//! of the numbers, and ends it the way a feed ends: the market-data ring is finished and the
//! engine joined. Its report must then show every record published as a signal and no loss, so a
//! pipeline that dropped events fails instead of looking faster. The signal ring has no reader:
//! its writer never waits, so its laps cost nothing, and the engine counts what it published.
//! The two-thread cases skip with a message where fewer than two cores are available.

mod common;

use std::hint::{black_box, spin_loop};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{MBO_LEN, pin};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickpipe::pipeline::config::Placement;
use tickpipe::pipeline::sample::sample_mbo;
use tickpipe::pipeline::signal::{SIGNAL_LEN, SIGNAL_META};
use tickpipe::pipeline::{Engine, EngineConfig, IdleStrategy, ThreadHooks, ThreadingMode};
use tickpipe::shm::layout::frame_len;
use tickpipe::shm::ring::{HeapRegion, content};
use tickpipe::shm::{ReadError, RingReader, RingWriter, StartAt, heap_ring};

/// Market-data ring data bytes.
const MD_CAPACITY: usize = 64 << 20;
/// As the engine's tests and `tickpipe run` size it; only the ingest scratch depends on it.
const MAX_PAYLOAD: usize = 1024;
/// Records per iteration.
const BATCH: u64 = 1 << 16;

// Every case waits for a batch to be consumed before publishing the next, so its consumer starts
// each batch caught up; with the batch under half the ring (padding at the wrap included) the
// writer, which never waits, cannot lap it.
const _: () = assert!(BATCH as usize * frame_len(MBO_LEN) <= MD_CAPACITY / 2);

/// Empty polls between two looks at whether the consumer can still deliver: rare enough to stay
/// off the spin path, frequent enough to fail within a millisecond instead of hanging.
const LIVENESS_POLLS: u32 = 1 << 16;

type MdWriter = RingWriter<Arc<HeapRegion>>;
type MdReader = RingReader<Arc<HeapRegion>>;

fn md_ring() -> (MdWriter, MdReader) {
    let (md, info) =
        heap_ring(MD_CAPACITY, MAX_PAYLOAD, b"DBN", content::DBN).expect("market-data ring");
    let reader = RingReader::new(md.region().clone(), info, StartAt::Oldest);
    (md, reader)
}

/// Publishes records `from..from + BATCH`, each stamped with the clock the engine reads, as a
/// feed handler does: the stamp is part of the publisher's cost in every case.
fn publish_batch(md: &mut MdWriter, clock: &quanta::Clock, from: u64) {
    for i in from..from + BATCH {
        md.publish(&sample_mbo(i), clock.raw())
            .expect("an MBO record fits the ring");
    }
}

/// Publishes one batch from the bench thread and spins until `delivered` reaches its end: the
/// time from the first publish to the last delivery, the records still in flight when the
/// publisher finishes included. `alive` is asked now and then to fail a consumer that stopped.
fn publish_and_wait(
    md: &mut MdWriter,
    clock: &quanta::Clock,
    published: &mut u64,
    delivered: impl Fn() -> u64,
    alive: impl Fn(u64),
) -> Duration {
    let from = *published;
    let target = from + BATCH;
    let start = Instant::now();
    publish_batch(md, clock, from);
    *published = target;
    let mut polls = 0u32;
    while delivered() < target {
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(LIVENESS_POLLS) {
            alive(target);
        }
        spin_loop();
    }
    start.elapsed()
}

/// Pass-through stages on `core` (all four on one thread in Shared mode), busy-spinning; the
/// reporter unpinned and sleeping, so it takes only a sliver of either core.
fn config(mode: ThreadingMode, core: Option<usize>) -> EngineConfig {
    let mut cfg = EngineConfig {
        mode,
        ..EngineConfig::default()
    };
    for p in &mut cfg.stages[..4] {
        *p = Placement {
            core,
            idle: IdleStrategy::BusySpin,
        };
    }
    cfg.reporter = Placement {
        core: None,
        idle: IdleStrategy::Sleeping(Duration::from_millis(1)),
    };
    cfg
}

/// Fails the bench when the engine can no longer publish `target` signals: a lap or a bad frame
/// at ingest leaves the count short for good, and waiting on it would hang.
#[cold]
#[inline(never)]
fn check_alive(case: &str, engine: &Engine, target: u64) {
    let ingest = engine.ingest();
    if engine.is_done() || ingest.missed > 0 || ingest.undecodable > 0 || ingest.fatal.is_some() {
        panic!(
            "{case}: the engine stopped at {} of {target} signals: {ingest:?}",
            engine.signals_published()
        );
    }
}

/// An engine on in-process rings and the market-data writer that feeds it.
struct Rig {
    case: &'static str,
    engine: Engine,
    md: MdWriter,
    clock: quanta::Clock,
    published: u64,
}

impl Rig {
    fn start(case: &'static str, cfg: &EngineConfig) -> Self {
        let (md, reader) = md_ring();
        let (signals, _) = heap_ring(
            cfg.signal_capacity,
            SIGNAL_LEN,
            &SIGNAL_META,
            content::SIGNALS,
        )
        .expect("signal ring");
        let clock = quanta::Clock::new();
        let engine = Engine::start(cfg, reader, signals, clock.clone(), ThreadHooks::default())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        Self {
            case,
            engine,
            md,
            clock,
            published: 0,
        }
    }

    /// One Invoker-mode iteration: publish untimed, then time the duty cycles.
    fn invoke_batch(&mut self) -> Duration {
        publish_batch(&mut self.md, &self.clock, self.published);
        self.published += BATCH;
        let target = self.published;
        let start = Instant::now();
        while self.engine.signals_published() < target {
            // A cycle in which no stage moved anything means nothing ever will.
            if self.engine.invoke() == 0 {
                check_alive(self.case, &self.engine, target);
                panic!("{}: no stage has work short of {target} signals", self.case);
            }
        }
        start.elapsed()
    }

    /// One threaded iteration: the bench thread publishes while the stage thread runs.
    fn publish_batch_timed(&mut self) -> Duration {
        let Self {
            case,
            engine,
            md,
            clock,
            published,
        } = self;
        let engine = &*engine;
        publish_and_wait(
            md,
            clock,
            published,
            || engine.signals_published(),
            |target| check_alive(case, engine, target),
        )
    }

    /// Ends the feed, joins the engine and checks that every record became a signal.
    fn finish(self) {
        let Self {
            case,
            engine,
            mut md,
            published,
            ..
        } = self;
        md.finish();
        let report = engine.join().unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(
            report.main_path_loss(),
            0,
            "{case}: events lost on the main path: {:?}",
            report.ingest
        );
        assert_eq!(report.ingest.frames, published, "{case}: frames ingested");
        assert_eq!(report.signals, published, "{case}: signals published");
    }
}

/// The transport floor: the market-data ring drained by a thread of its own with nothing
/// behind it.
struct Drain {
    md: MdWriter,
    clock: quanta::Clock,
    published: u64,
    consumed: Arc<AtomicU64>,
    handle: JoinHandle<u64>,
}

impl Drain {
    /// Starts the drain thread on `core`, reading up to `batch` frames a call as ingest does,
    /// and returns once it is polling.
    fn start(core: usize, batch: usize) -> Self {
        let (md, mut reader) = md_ring();
        let consumed = Arc::new(AtomicU64::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let (count, up) = (consumed.clone(), ready.clone());
        let handle = std::thread::Builder::new()
            .name("ring_only".into())
            .spawn(move || {
                pin(core);
                // Sized and first touched on this core, as ingest sizes and touches its own.
                let mut scratch = vec![0u8; frame_len(MAX_PAYLOAD) * batch];
                scratch.fill(1);
                up.store(true, Ordering::Release);
                let mut n = 0u64;
                loop {
                    match reader.read_batch(&mut scratch, batch, |_, payload| {
                        black_box(payload);
                    }) {
                        Ok(k) => {
                            n += k as u64;
                            // Relaxed: a counter, as the engine's signal count.
                            count.store(n, Ordering::Relaxed);
                        }
                        Err(ReadError::Empty) => {
                            if reader.is_finished() {
                                return n;
                            }
                            spin_loop();
                        }
                        Err(e) => panic!("ring_only: {e}"),
                    }
                }
            })
            .expect("spawn the drain thread");
        while !ready.load(Ordering::Acquire) {
            assert!(!handle.is_finished(), "ring_only: the drain thread failed");
            spin_loop();
        }
        Self {
            md,
            clock: quanta::Clock::new(),
            published: 0,
            consumed,
            handle,
        }
    }

    fn publish_batch_timed(&mut self) -> Duration {
        let Self {
            md,
            clock,
            published,
            consumed,
            handle,
        } = self;
        publish_and_wait(
            md,
            clock,
            published,
            || consumed.load(Ordering::Relaxed),
            |target| {
                assert!(
                    !handle.is_finished(),
                    "ring_only: the drain thread stopped short of {target} records"
                );
            },
        )
    }

    fn finish(self) {
        let Self {
            mut md,
            published,
            handle,
            ..
        } = self;
        md.finish();
        let read = handle.join().expect("ring_only: the drain thread");
        assert_eq!(read, published, "ring_only: records read");
    }
}

fn pipeline_throughput(c: &mut Criterion) {
    // Both core lists are the calling thread's affinity, read once: read them before this thread
    // is pinned, or the engine would reject the second core as unavailable.
    let cores = common::cores();
    tickpipe::pipeline::stage::available_cores();
    let mut group = c.benchmark_group("pipeline_throughput");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    // The publisher (and in Invoker mode the whole pipeline) must not migrate mid-sample.
    if let Some(first) = cores.first() {
        pin(first.id);
    }

    let mut rig = Rig::start("invoker", &config(ThreadingMode::Invoker, None));
    group.bench_function("invoker", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.invoke_batch()).sum())
    });
    rig.finish();

    let [_, second, ..] = cores else {
        println!(
            "SKIPPED: pipeline_throughput/shared and ring_only need two cores, this process may use {}",
            cores.len()
        );
        group.finish();
        return;
    };
    let cfg = config(ThreadingMode::Shared, Some(second.id));

    // Each case's spinning thread is gone before the next case starts, so none competes with
    // another case for the second core.
    let mut rig = Rig::start("shared", &cfg);
    group.bench_function("shared", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.publish_batch_timed()).sum())
    });
    rig.finish();

    let mut drain = Drain::start(second.id, cfg.batch);
    group.bench_function("ring_only", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| drain.publish_batch_timed()).sum())
    });
    drain.finish();
    group.finish();
}

criterion_group!(benches, pipeline_throughput);
criterion_main!(benches);
