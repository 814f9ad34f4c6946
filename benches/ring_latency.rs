//! One-way latency across cores: the tickpipe ring, rtrb, and a plain cache-line transfer (one
//! `AtomicU64` store seen by a spinning load on the other core) as the floor, measured the same
//! way in the same run.
//!
//! The writer (pinned to core 0) stamps the TSC (quanta raw ticks) into each message; the reader
//! (pinned to core 1) spins, and on receipt records `now - stamp` in an HDR histogram, then bumps
//! an acknowledgement counter on its own cache line. The writer waits for that acknowledgement
//! and `GAP_NS` before the next message, so messages never queue and none can be missed. Both cores read the same invariant TSC,
//! so the difference is the one-way latency. `cargo bench --bench ring_latency` runs 1 M messages
//! per transport; under `cargo test --benches` it runs a short smoke pass.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{MBO_LEN, is_bench, payload, pin, ring};
use hdrhistogram::Histogram;
use tickpipe::shm::ReadError;

const GAP_NS: u64 = 2_000;

#[repr(align(128))]
struct Line(AtomicU64);

/// Waits until the reader acknowledged message `i` and `GAP_NS` passed since `from`.
fn pace(clock: &quanta::Clock, ack: &Line, i: u64, from: u64) {
    while ack.0.load(Ordering::Acquire) <= i || clock.delta_as_nanos(from, clock.raw()) < GAP_NS {
        std::hint::spin_loop();
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds")
}

/// Runs `reader` on core 1 and `writer` on core 0, returning the reader's histogram. Both get the
/// acknowledgement line.
fn two_threads(
    writer: impl FnOnce(&Line) + Send,
    reader: impl FnOnce(&Line) -> Histogram<u64> + Send,
) -> Histogram<u64> {
    let ack = Line(AtomicU64::new(0));
    let ack = &ack;
    std::thread::scope(|s| {
        let ready = Arc::new(AtomicBool::new(false));
        let r2 = ready.clone();
        let h = s.spawn(move || {
            pin(1);
            r2.store(true, Ordering::Release);
            reader(ack)
        });
        pin(0);
        while !ready.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
        writer(ack);
        h.join().expect("reader thread")
    })
}

fn cache_line(clock: &quanta::Clock, n: u64) -> Histogram<u64> {
    let line = Line(AtomicU64::new(0));
    two_threads(
        |ack| {
            for i in 0..n {
                let t = clock.raw();
                line.0.store(t, Ordering::Release);
                pace(clock, ack, i, t);
            }
        },
        |ack| {
            let mut h = histogram();
            let mut last = 0;
            for i in 0..n {
                let t = loop {
                    let v = line.0.load(Ordering::Acquire);
                    if v != last {
                        break v;
                    }
                    std::hint::spin_loop();
                };
                h.saturating_record(clock.delta_as_nanos(t, clock.raw()).max(1));
                ack.0.store(i + 1, Ordering::Release);
                last = t;
            }
            h
        },
    )
}

fn tickpipe_ring(clock: &quanta::Clock, n: u64) -> Histogram<u64> {
    let r = ring(1 << 20);
    let (mut writer, mut reader) = (r.writer, r.reader);
    two_threads(
        move |ack| {
            for i in 0..n {
                let t = clock.raw();
                writer.publish(&payload(i), t).expect("publish");
                pace(clock, ack, i, t);
            }
        },
        move |ack| {
            let mut h = histogram();
            let mut buf = [0u8; 1024];
            let mut got = 0;
            while got < n {
                match reader.try_read(&mut buf) {
                    Ok(f) => {
                        h.saturating_record(
                            clock.delta_as_nanos(f.publish_ticks, clock.raw()).max(1),
                        );
                        got += 1;
                        ack.0.store(got, Ordering::Release);
                    }
                    Err(ReadError::Empty) => std::hint::spin_loop(),
                    Err(e) => panic!("{e}"),
                }
            }
            h
        },
    )
}

fn rtrb_queue(clock: &quanta::Clock, n: u64) -> Histogram<u64> {
    let (mut tx, mut rx) = rtrb::RingBuffer::<(u64, [u8; MBO_LEN])>::new(8192);
    two_threads(
        move |ack| {
            for i in 0..n {
                let t = clock.raw();
                tx.push((t, payload(i)))
                    .expect("rtrb never fills at this pace");
                pace(clock, ack, i, t);
            }
        },
        move |ack| {
            let mut h = histogram();
            let mut got = 0;
            while got < n {
                if let Ok((t, p)) = rx.pop() {
                    h.saturating_record(clock.delta_as_nanos(t, clock.raw()).max(1));
                    std::hint::black_box(p);
                    got += 1;
                    ack.0.store(got, Ordering::Release);
                } else {
                    std::hint::spin_loop();
                }
            }
            h
        },
    )
}

/// A transport's measurement: `n` messages, one-way latency histogram.
type Transport = fn(&quanta::Clock, u64) -> Histogram<u64>;

fn main() {
    let n = if is_bench() { 1_000_000 } else { 20_000 };
    // Interleaved in rounds so that all three see the same host conditions: on a shared VM the
    // placement of the two vCPUs changes over seconds, and sequential phases would compare
    // different machines.
    let rounds: u64 = 20;
    let cores = common::cores().len();
    if cores < 2 {
        println!("SKIPPED: one-way latency needs two cores, this process may use {cores}");
        return;
    }
    let clock = quanta::Clock::new();
    println!(
        "one-way latency, writer on core 0, reader on core 1 ({cores} cores online), {n} messages per transport in {rounds} interleaved rounds, one every {GAP_NS} ns"
    );
    println!(
        "{:<16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>9}",
        "transport", "p50", "p90", "p99", "p99.9", "p99.99", "max", "p50/floor"
    );
    let transports: [(&str, Transport); 3] = [
        ("cache line", cache_line),
        ("tickpipe ring", tickpipe_ring),
        ("rtrb", rtrb_queue),
    ];
    let mut merged: Vec<Histogram<u64>> = transports.iter().map(|_| histogram()).collect();
    for round in 0..rounds {
        for k in 0..transports.len() {
            // Rotate the order each round so none always runs first.
            let i = (k + round as usize) % transports.len();
            let h = (transports[i].1)(&clock, n / rounds);
            merged[i].add(&h).expect("same histogram bounds");
        }
    }
    let floor = merged[0].value_at_quantile(0.5) as f64;
    for ((name, _), h) in transports.iter().zip(&merged) {
        println!(
            "{:<16} {:>8} {:>8} {:>8} {:>8} {:>9} {:>10} {:>9.2}",
            name,
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.value_at_quantile(0.9999),
            h.max(),
            h.value_at_quantile(0.5) as f64 / floor
        );
        assert_eq!(
            h.len(),
            n / rounds * rounds,
            "{name}: every message measured"
        );
    }
    println!(
        "(ns; quanta TSC stamps; the p50/floor column is the ratio to the cache-line transfer)"
    );
}
