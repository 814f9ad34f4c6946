//! Health costs, side by side in one run:
//!
//! - `count/signal_encode`: encoding the signal the health stage publishes per vector (the
//!   baseline: work the stage does anyway), and `count/tally`: the health counting added per
//!   vector (24 features: zero, non-finite, run of zeros, finite-seen bits);
//! - `page/kill`: the trading process's kill-switch read (one load) next to `page/atomic_load`
//!   (a plain atomic load, the floor), and `page/read`: a seqlock copy of the whole rollup, and
//!   `page/read_decode`: the copy decoded into a `HealthSnapshot`;
//! - `rollup`: one 10 Hz monitor tick (off the hot path), for scale.
//!
//! The vectors are generated feature values (a mix of ordinary values, zeros and NaN).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickpipe::pipeline::features::N_FEATURES;
use tickpipe::pipeline::health::page::{PAGE_WORDS, decode, encode};
use tickpipe::pipeline::health::{
    FeatureTally, HealthConfig, HealthCounters, HealthInputs, HealthMonitor,
};
use tickpipe::pipeline::signal::Signal;
use tickpipe::shm::page::{PageReader, heap_page};

fn vectors(n: usize) -> Vec<[f64; N_FEATURES]> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            std::array::from_fn(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 16 {
                    0 => 0.0,
                    1 => f64::NAN,
                    k => k as f64 * 0.25,
                }
            })
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let vs = vectors(4096);
    let mut g = c.benchmark_group("count");
    g.throughput(Throughput::Elements(vs.len() as u64));
    g.bench_function("signal_encode", |b| {
        let mut s = Signal::default();
        b.iter(|| {
            for (i, v) in vs.iter().enumerate() {
                s.ts_event = i as u64;
                s.price = v[0] as i64;
                black_box(s.encode());
            }
        })
    });
    g.bench_function("tally", |b| {
        // Counting per vector, and the fold into the shared totals once per 4096 vectors (the
        // stage folds once a millisecond).
        let mut t = FeatureTally::default();
        let counters = HealthCounters::default();
        b.iter(|| {
            for (i, v) in vs.iter().enumerate() {
                t.count(black_box(v), i as u64);
            }
            t.publish(&counters);
            black_box(t.vectors());
        })
    });
    g.finish();

    let mut g = c.benchmark_group("page");
    let mut writer = heap_page(PAGE_WORDS).expect("page");
    let region = writer.region().clone();
    let mut mon = HealthMonitor::new(HealthConfig::default());
    mon.tick(&HealthInputs::default());
    let mut words = vec![0u64; PAGE_WORDS];
    encode(mon.snapshot(), &mut words).expect("encode");
    writer.publish(&words).expect("publish");
    let reader = PageReader::new(region).expect("reader");
    let plain = AtomicU64::new(0);
    g.bench_function("atomic_load", |b| {
        b.iter(|| black_box(plain.load(Ordering::Acquire)))
    });
    g.bench_function("kill", |b| b.iter(|| black_box(reader.kill())));
    let mut out = vec![0u64; PAGE_WORDS];
    g.bench_function("read", |b| {
        b.iter(|| {
            reader.read(&mut out).expect("read");
            black_box(out[1]);
        })
    });
    g.bench_function("read_decode", |b| {
        b.iter(|| {
            reader.read(&mut out).expect("read");
            black_box(decode(&out).expect("decode").tick);
        })
    });
    g.finish();

    c.bench_function("rollup", |b| {
        let counters = HealthCounters::default();
        let mut t = FeatureTally::default();
        let mut mon = HealthMonitor::new(HealthConfig::default());
        let mut inp = HealthInputs::default();
        let mut k = 0;
        b.iter(|| {
            for v in &vs[..100] {
                t.count(v, 1);
            }
            t.publish(&counters);
            k += 100_000_000;
            inp.now_ns = k;
            inp.features = counters.feature_totals();
            black_box(mon.tick(&inp).len());
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
