//! Feature stage cost: order books alone (the baseline) against books + features (the feature
//! stage's whole per-event work, `FeatureEngine::on_event`), on one core, over
//!
//! - a generated MBO stream (`tickpipe::synth`, 4 instruments; 10 M events under `cargo bench`,
//!   100 k under `cargo test --benches`), and
//! - the ES day `../shared/data/dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst` (68,792 records;
//!   skipped with a message when the data is absent; `TICKPIPE_DATA` overrides the folder).
//!
//! Criterion reports throughput (events/s). A second pass times every event with the TSC and
//! prints HDR percentiles per event next to the same loop timing nothing (the cost of reading
//! the clock twice), so the per-event tail can be read against its floor.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use tickpipe::capture::Capture;
use tickpipe::pipeline::book::Books;
use tickpipe::pipeline::config::FeatureSettings;
use tickpipe::pipeline::feature_engine::FeatureEngine;
use tickpipe::pipeline::msg::{Event, MAX_PARTS, Tick};
use tickpipe::synth::{Generator, SynthConfig};

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Room for every entry of the 60 s windows of the generated stream (50 k events/s), so that
/// the vectors are exact (no window overflow) and the cost is that of exact vectors.
fn settings() -> FeatureSettings {
    FeatureSettings {
        max_instruments: 8,
        window_capacity: 1 << 19,
        ..FeatureSettings::default()
    }
}

fn synthetic(n: u64) -> Vec<Event> {
    let mut g = Generator::new(&SynthConfig {
        events: n,
        ..SynthConfig::default()
    })
    .expect("generator");
    let mut out = Vec::with_capacity(n as usize);
    let mut parts = [Event::default(); MAX_PARTS];
    let mut seq = 0;
    while let Some(rec) = g.next_record() {
        let k = Event::decode_parts(rec.as_ref(), seq, 0, &mut parts).expect("MBO record");
        out.extend_from_slice(&parts[..k]);
        seq += 1;
    }
    out
}

fn data_dir() -> PathBuf {
    std::env::var_os("TICKPIPE_DATA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"),
        PathBuf::from,
    )
}

fn es_day() -> Option<Vec<Event>> {
    let path = data_dir().join("dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst");
    if !path.exists() {
        eprintln!(
            "features bench: skipped the ES day: {} not found",
            path.display()
        );
        return None;
    }
    let mut capture = Capture::open(&path).expect("ES capture");
    let mut out = Vec::new();
    let mut parts = [Event::default(); MAX_PARTS];
    let mut seq = 0;
    let _ = capture
        .visit(|rec| {
            if let Ok(k) = Event::decode_parts(rec.as_ref(), seq, 0, &mut parts) {
                out.extend_from_slice(&parts[..k]);
            }
            seq += 1;
            std::ops::ControlFlow::Continue(())
        })
        .expect("ES capture reads");
    Some(out)
}

/// Runs `events` through a fresh engine `iters` times, timing the passes only.
fn features_pass(events: &[Event], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    let mut tick = Tick::default();
    for _ in 0..iters {
        let mut engine = FeatureEngine::new(&settings().engine_config()).expect("engine");
        let start = Instant::now();
        for ev in events {
            black_box(engine.on_event(ev, &mut tick, &mut |_, b| {
                black_box(b);
            }));
        }
        total += start.elapsed();
        black_box(&tick);
    }
    total
}

fn books_pass(events: &[Event], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut books = Books::new(&settings().engine_config().book).expect("books");
        let start = Instant::now();
        for ev in events {
            black_box(books.apply(ev));
        }
        total += start.elapsed();
    }
    total
}

fn group(c: &mut Criterion, name: &str, events: &[Event]) {
    let mut g = c.benchmark_group(format!("features/{name}"));
    g.throughput(Throughput::Elements(events.len() as u64));
    if bench_mode() {
        g.sample_size(10).measurement_time(Duration::from_secs(20));
    }
    g.bench_function("books_only", |b| {
        b.iter_custom(|iters| books_pass(events, iters))
    });
    g.bench_function("books_and_features", |b| {
        b.iter_custom(|iters| features_pass(events, iters))
    });
    g.finish();
}

/// Per-event HDR percentiles of `on_event`, beside the cost of the timing itself.
fn per_event_tails(name: &str, events: &[Event]) {
    let clock = quanta::Clock::new();
    let mut engine = FeatureEngine::new(&settings().engine_config()).expect("engine");
    let mut tick = Tick::default();
    let mut work = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram");
    let mut floor = work.clone();
    for ev in events {
        let t0 = clock.raw();
        black_box(engine.on_event(ev, &mut tick, &mut |_, b| {
            black_box(b);
        }));
        let t1 = clock.raw();
        work.saturating_record(clock.delta_as_nanos(t0, t1).max(1));
        let t0 = clock.raw();
        black_box(ev);
        let t1 = clock.raw();
        floor.saturating_record(clock.delta_as_nanos(t0, t1).max(1));
    }
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
    println!(
        "features/{name}/per_event ({} events): on_event p50 {} ns p99 {} ns p99.9 {} ns max {} ns | \
         timing floor p50 {} ns p99 {} ns p99.9 {} ns",
        events.len(),
        q(&work, 0.5),
        q(&work, 0.99),
        q(&work, 0.999),
        work.max(),
        q(&floor, 0.5),
        q(&floor, 0.99),
        q(&floor, 0.999),
    );
    let c = engine.counts();
    println!(
        "features/{name}: {} vectors, {} trades, {} bars, book errors {}, window overflow {}",
        c.vectors,
        c.trades,
        c.bars,
        c.book.errors(),
        c.features.window_overflow
    );
}

fn benches(c: &mut Criterion) {
    let n = if bench_mode() { 10_000_000 } else { 100_000 };
    let synth = synthetic(n);
    group(c, "synthetic", &synth);
    per_event_tails("synthetic", &synth);
    drop(synth);
    if let Some(es) = es_day() {
        group(c, "es_day", &es);
        per_event_tails("es_day", &es);
    }
}

criterion_group!(features, benches);
criterion_main!(features);
