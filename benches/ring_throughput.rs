//! Ring throughput for MBO-sized (56-byte) records, side by side with rtrb in the same run.
//!
//! - `same_thread`: publish one record and read it back on one thread: the full cost of the
//!   path through the ring with everything in cache.
//! - `cross_thread`: a writer thread streams records to a reader on another core. The ring never
//!   waits for readers, so the writer here checks the reader's published progress and stays at
//!   most half a ring ahead (as a feed handler's rate would); rtrb gets its natural
//!   back-pressure. Throughput is records delivered per second. The ring is read frame by frame
//!   (`try_read`) and in batches (`read_batch`: one validation per batch).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{MBO_LEN, payload, pin, ring};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickpipe::shm::ReadError;

const BATCH: u64 = 1 << 16;

fn same_thread(c: &mut Criterion) {
    common::cores();
    let mut group = c.benchmark_group("same_thread_mbo");
    group.throughput(Throughput::Elements(BATCH));
    let mut r = ring(1 << 20);
    let mut buf = [0u8; 1024];
    group.bench_function("tickpipe_ring", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                r.writer.publish(&payload(i), i).unwrap();
                let f = r.reader.try_read(&mut buf).unwrap();
                std::hint::black_box(f);
            }
        })
    });
    let (mut tx, mut rx) = rtrb::RingBuffer::<[u8; MBO_LEN]>::new(1 << 14);
    group.bench_function("rtrb", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                tx.push(payload(i)).unwrap();
                std::hint::black_box(rx.pop().unwrap());
            }
        })
    });
    group.finish();
}

fn ring_cross(iters: u64, batch: bool) -> Duration {
    let mut r = ring(1 << 20);
    let window = (1u64 << 20) / 2 / 80;
    let consumed = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicBool::new(false));
    let mut reader = r.reader;
    let (c2, ready2) = (consumed.clone(), ready.clone());
    let handle = std::thread::spawn(move || {
        pin(1);
        ready2.store(true, Ordering::Release);
        let mut buf = [0u8; 1024];
        let mut scratch = vec![0u8; 64 << 10];
        let mut n = 0u64;
        while n < iters {
            let got = if batch {
                reader.read_batch(&mut scratch, 256, |_, p| {
                    std::hint::black_box(p);
                })
            } else {
                reader.try_read(&mut buf).map(|_| 1)
            };
            match got {
                Ok(k) => {
                    let before = n;
                    n += k as u64;
                    if n / 64 != before / 64 {
                        c2.store(n, Ordering::Release);
                    }
                }
                Err(ReadError::Empty) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            }
        }
        c2.store(n, Ordering::Release);
    });
    pin(0);
    while !ready.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    for i in 0..iters {
        while i - consumed.load(Ordering::Acquire) >= window {
            std::hint::spin_loop();
        }
        r.writer.publish(&payload(i), i).unwrap();
    }
    handle.join().unwrap();
    start.elapsed()
}

fn rtrb_cross(iters: u64) -> Duration {
    let (mut tx, mut rx) = rtrb::RingBuffer::<[u8; MBO_LEN]>::new(8192);
    let ready = Arc::new(AtomicBool::new(false));
    let ready2 = ready.clone();
    let handle = std::thread::spawn(move || {
        pin(1);
        ready2.store(true, Ordering::Release);
        let mut n = 0u64;
        while n < iters {
            if let Ok(p) = rx.pop() {
                std::hint::black_box(p);
                n += 1;
            } else {
                std::hint::spin_loop();
            }
        }
    });
    pin(0);
    while !ready.load(Ordering::Acquire) {
        std::hint::spin_loop();
    }
    let start = Instant::now();
    for i in 0..iters {
        let mut p = payload(i);
        loop {
            match tx.push(p) {
                Ok(()) => break,
                Err(rtrb::PushError::Full(back)) => {
                    p = back;
                    std::hint::spin_loop();
                }
            }
        }
    }
    handle.join().unwrap();
    start.elapsed()
}

fn cross_thread(c: &mut Criterion) {
    if common::cores().len() < 2 {
        println!("SKIPPED: cross-thread throughput needs two cores");
        return;
    }
    let mut group = c.benchmark_group("cross_thread_mbo");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.bench_function("tickpipe_ring", |b| b.iter_custom(|n| ring_cross(n, false)));
    group.bench_function("tickpipe_ring_batch", |b| {
        b.iter_custom(|n| ring_cross(n, true))
    });
    group.bench_function("rtrb", |b| b.iter_custom(rtrb_cross));
    group.finish();
}

criterion_group!(benches, same_thread, cross_thread);
criterion_main!(benches);
