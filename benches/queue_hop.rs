//! One hop of a 48-byte market-data event through three bounded in-process queues, side by side
//! in the same run: `rtrb::RingBuffer` (SPSC), `crossbeam::queue::ArrayQueue` (MPMC, used here
//! with one producer and one consumer) and `std::sync::mpsc::sync_channel`. All three hold
//! `CAPACITY` events and are driven through the same non-blocking loop (try to push, try to pop,
//! spin when full or empty), so the queue is the only thing that differs between cases.
//!
//! - `queue_hop/same_thread`: push one event and pop it back on one thread: the cost of the two
//!   operations with everything in cache and no other core involved. One iteration is one event.
//! - `queue_hop/cross_thread`: a producer on the first allowed core streams events, spinning
//!   while the queue is full, to a consumer on the second. Timed from the first push to the
//!   consumer's receipt of the last event; one iteration is one event delivered.
//! - `queue_hop/round_trip`: ping-pong. The first core sends an event, the second pops it and
//!   pushes it back on a second queue of the same kind, and the first waits for the echo before
//!   sending the next. One iteration is one round trip, i.e. two one-way hops with nothing
//!   queued.
//!
//! Every receiver checks the sequence numbers, and panics on the first one out of place: a queue
//! that lost, duplicated or reordered an event must fail the bench, not report a better number.
//! The two-core groups skip with a message where fewer than two cores are available.

mod common;

use std::hint::{black_box, spin_loop};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, Instant};

use common::pin;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam::queue::ArrayQueue;

/// Slots in every queue. Large enough that the cross-thread producer rarely waits on a consumer
/// that is briefly descheduled, and the same for all three so none gets more slack.
const CAPACITY: usize = 4096;

/// Empty or full polls between two looks at whether the other thread is still there. Rare
/// enough to stay off the spin path, frequent enough to fail within microseconds.
const LIVENESS_POLLS: u32 = 1024;

/// A top-of-book style event, the size of what the pipeline moves between stages.
#[derive(Clone, Copy)]
#[repr(C)]
struct Event {
    seq: u64,
    ticks: u64,
    order_id: u64,
    price: i64,
    instrument: u32,
    size: u32,
    side: u8,
    flags: u8,
    _pad: [u8; 6],
}

const _: () = assert!(size_of::<Event>() == 48);

fn event(seq: u64) -> Event {
    Event {
        seq,
        ticks: seq << 4,
        order_id: seq ^ 0x5bd1_e995,
        price: 4_500_250_000_000 + (seq & 63) as i64 * 250_000_000,
        instrument: 5602,
        size: 1 + (seq & 7) as u32,
        side: (seq & 1) as u8,
        flags: 0x80,
        _pad: [0; 6],
    }
}

/// Kept out of line so that the check costs the receiver a compare and a branch, nothing more.
#[cold]
#[inline(never)]
fn out_of_sequence(queue: &str, expected: u64, got: u64) -> ! {
    panic!(
        "{queue}: expected event {expected}, received {got}: an event was lost, duplicated or reordered"
    );
}

#[inline(always)]
fn check(queue: &str, expected: u64, ev: &Event) {
    if ev.seq != expected {
        out_of_sequence(queue, expected, ev.seq);
    }
}

/// The non-blocking operations every case is built from.
trait Queue {
    const NAME: &'static str;
    type Tx: Send;
    type Rx: Send;
    fn bounded(capacity: usize) -> (Self::Tx, Self::Rx);
    /// Hands the event back when the queue is full.
    fn try_push(tx: &mut Self::Tx, ev: Event) -> Result<(), Event>;
    /// `None` when the queue is empty.
    fn try_pop(rx: &mut Self::Rx) -> Option<Event>;
}

enum Rtrb {}

impl Queue for Rtrb {
    const NAME: &'static str = "rtrb";
    type Tx = rtrb::Producer<Event>;
    type Rx = rtrb::Consumer<Event>;

    fn bounded(capacity: usize) -> (Self::Tx, Self::Rx) {
        rtrb::RingBuffer::new(capacity)
    }

    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, ev: Event) -> Result<(), Event> {
        tx.push(ev).map_err(|rtrb::PushError::Full(ev)| ev)
    }

    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<Event> {
        rx.pop().ok()
    }
}

enum CrossbeamArrayQueue {}

impl Queue for CrossbeamArrayQueue {
    const NAME: &'static str = "crossbeam_array_queue";
    type Tx = Arc<ArrayQueue<Event>>;
    type Rx = Arc<ArrayQueue<Event>>;

    fn bounded(capacity: usize) -> (Self::Tx, Self::Rx) {
        let q = Arc::new(ArrayQueue::new(capacity));
        (q.clone(), q)
    }

    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, ev: Event) -> Result<(), Event> {
        tx.push(ev)
    }

    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<Event> {
        rx.pop()
    }
}

enum StdSyncChannel {}

impl Queue for StdSyncChannel {
    const NAME: &'static str = "std_sync_channel";
    type Tx = SyncSender<Event>;
    type Rx = Receiver<Event>;

    fn bounded(capacity: usize) -> (Self::Tx, Self::Rx) {
        std::sync::mpsc::sync_channel(capacity)
    }

    #[inline(always)]
    fn try_push(tx: &mut Self::Tx, ev: Event) -> Result<(), Event> {
        match tx.try_send(ev) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(ev)) => Err(ev),
            Err(TrySendError::Disconnected(_)) => panic!("{}: receiver dropped", Self::NAME),
        }
    }

    #[inline(always)]
    fn try_pop(rx: &mut Self::Rx) -> Option<Event> {
        match rx.try_recv() {
            Ok(ev) => Some(ev),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => panic!("{}: sender dropped", Self::NAME),
        }
    }
}

/// Raises its flag when the thread holding it leaves, by returning or by panicking. A peer
/// spinning on a queue the departed thread was meant to fill or drain then fails with a message
/// instead of spinning forever (benches unwind rather than abort).
struct Departure<'a>(&'a AtomicBool);

impl Drop for Departure<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[inline(always)]
fn push_spin<Q: Queue>(tx: &mut Q::Tx, mut ev: Event, consumer_gone: &AtomicBool) {
    let mut polls = 0u32;
    loop {
        match Q::try_push(tx, ev) {
            Ok(()) => return,
            Err(back) => ev = back,
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(LIVENESS_POLLS) && consumer_gone.load(Ordering::Acquire) {
            panic!("{}: the consumer left while the queue was full", Q::NAME);
        }
        spin_loop();
    }
}

#[inline(always)]
fn pop_spin<Q: Queue>(rx: &mut Q::Rx, producer_gone: &AtomicBool) -> Event {
    let mut polls = 0u32;
    loop {
        if let Some(ev) = Q::try_pop(rx) {
            return ev;
        }
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(LIVENESS_POLLS) && producer_gone.load(Ordering::Acquire) {
            // The producer's last push happened before its departure flag was raised, so one
            // more poll sees any event it did send.
            return Q::try_pop(rx).unwrap_or_else(|| {
                panic!("{}: the producer left before sending every event", Q::NAME)
            });
        }
        spin_loop();
    }
}

/// The first two cores this process may use, or `None` where it has only one.
fn two_cores() -> Option<(usize, usize)> {
    match common::cores() {
        [a, b, ..] => Some((a.id, b.id)),
        _ => None,
    }
}

/// Runs `remote` on core `cores.1` and `local` on core `cores.0`, starting `local` only once
/// `remote` is pinned and polling. Each side gets the flag the other raises when it leaves.
fn two_threads<L, R: Send>(
    queue: &str,
    cores: (usize, usize),
    local: impl FnOnce(&AtomicBool) -> L,
    remote: impl FnOnce(&AtomicBool) -> R + Send,
) -> (L, R) {
    let ready = AtomicBool::new(false);
    let local_gone = AtomicBool::new(false);
    let remote_gone = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            let _leaving = Departure(&remote_gone);
            pin(cores.1);
            ready.store(true, Ordering::Release);
            remote(&local_gone)
        });
        let local_result = {
            let _leaving = Departure(&local_gone);
            pin(cores.0);
            while !ready.load(Ordering::Acquire) {
                assert!(
                    !remote_gone.load(Ordering::Acquire),
                    "{queue}: the thread on core {} failed before starting",
                    cores.1
                );
                spin_loop();
            }
            local(&remote_gone)
        };
        (local_result, handle.join().expect("remote thread"))
    })
}

fn cross_thread_run<Q: Queue>(cores: (usize, usize), iters: u64) -> Duration {
    let (mut tx, mut rx) = Q::bounded(CAPACITY);
    let (start, end) = two_threads(
        Q::NAME,
        cores,
        |consumer_gone| {
            let start = Instant::now();
            for seq in 0..iters {
                push_spin::<Q>(&mut tx, event(seq), consumer_gone);
            }
            start
        },
        move |producer_gone| {
            for expected in 0..iters {
                let ev = pop_spin::<Q>(&mut rx, producer_gone);
                check(Q::NAME, expected, &ev);
                black_box(ev);
            }
            Instant::now()
        },
    );
    // Up to the consumer's last receipt, not the producer's last push: the events still in
    // the queue when the producer finishes are part of the delivery being measured.
    end - start
}

fn round_trip_run<Q: Queue>(cores: (usize, usize), iters: u64) -> Duration {
    let (mut ping_tx, mut ping_rx) = Q::bounded(CAPACITY);
    let (mut pong_tx, mut pong_rx) = Q::bounded(CAPACITY);
    let (elapsed, ()) = two_threads(
        Q::NAME,
        cores,
        |echo_gone| {
            let start = Instant::now();
            for seq in 0..iters {
                push_spin::<Q>(&mut ping_tx, event(seq), echo_gone);
                let ev = pop_spin::<Q>(&mut pong_rx, echo_gone);
                check(Q::NAME, seq, &ev);
            }
            start.elapsed()
        },
        move |sender_gone| {
            for expected in 0..iters {
                let ev = pop_spin::<Q>(&mut ping_rx, sender_gone);
                check(Q::NAME, expected, &ev);
                push_spin::<Q>(&mut pong_tx, ev, sender_gone);
            }
        },
    );
    elapsed
}

fn same_thread_case<Q: Queue>(group: &mut BenchmarkGroup<'_, WallTime>) {
    let (mut tx, mut rx) = Q::bounded(CAPACITY);
    let mut seq = 0u64;
    group.bench_function(Q::NAME, |b| {
        b.iter(|| {
            if Q::try_push(&mut tx, event(seq)).is_err() {
                panic!("{}: full with nothing queued", Q::NAME);
            }
            let ev = Q::try_pop(&mut rx).unwrap_or_else(|| panic!("{}: lost the event", Q::NAME));
            check(Q::NAME, seq, &ev);
            seq += 1;
            ev
        })
    });
}

fn same_thread(c: &mut Criterion) {
    // Read the allowed cores before anything pins this thread (see `common::cores`).
    let cores = common::cores();
    let mut group = c.benchmark_group("queue_hop/same_thread");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    // A migration in the middle of a sample would show up as noise, not as queue cost.
    if let Some(first) = cores.first() {
        pin(first.id);
    }
    same_thread_case::<Rtrb>(&mut group);
    same_thread_case::<CrossbeamArrayQueue>(&mut group);
    same_thread_case::<StdSyncChannel>(&mut group);
    group.finish();
}

/// One two-thread case: given the two cores, the time `iters` iterations took.
type Run = fn((usize, usize), u64) -> Duration;

fn two_core_group(c: &mut Criterion, name: &str, runs: [(&str, Run); 3]) {
    let Some(cores) = two_cores() else {
        println!(
            "SKIPPED: {name} needs two cores, this process may use {}",
            common::cores().len()
        );
        return;
    };
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (queue, run) in runs {
        group.bench_function(queue, |b| b.iter_custom(|iters| run(cores, iters)));
    }
    group.finish();
}

fn cross_thread(c: &mut Criterion) {
    two_core_group(
        c,
        "queue_hop/cross_thread",
        [
            (Rtrb::NAME, cross_thread_run::<Rtrb>),
            (
                CrossbeamArrayQueue::NAME,
                cross_thread_run::<CrossbeamArrayQueue>,
            ),
            (StdSyncChannel::NAME, cross_thread_run::<StdSyncChannel>),
        ],
    );
}

fn round_trip(c: &mut Criterion) {
    two_core_group(
        c,
        "queue_hop/round_trip",
        [
            (Rtrb::NAME, round_trip_run::<Rtrb>),
            (
                CrossbeamArrayQueue::NAME,
                round_trip_run::<CrossbeamArrayQueue>,
            ),
            (StdSyncChannel::NAME, round_trip_run::<StdSyncChannel>),
        ],
    );
}

criterion_group!(benches, same_thread, cross_thread, round_trip);
criterion_main!(benches);
