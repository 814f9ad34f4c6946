//! Inference stage cost per feature vector (`InferenceEngine::on_tick`), side by side in one run:
//!
//! - `pass` (no model: the slot lookup and forecast attachment alone, the baseline),
//! - `sjm` (the shipped jump model's online step and the stability filter),
//! - `xgb` (the shipped XGBoost model, 50 trees of depth 4),
//! - `sjm+xgb` (what the engine runs on every vector).
//!
//! The vectors are the feature stage's own output over a generated MBO stream (4 instruments;
//! 200 k events under `cargo bench`, 20 k under `cargo test --benches`). Criterion reports
//! vectors/s; a second pass prints HDR percentiles per vector against a loop that times nothing.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use tickpipe::pipeline::config::{FeatureSettings, ModelSettings};
use tickpipe::pipeline::feature_engine::FeatureEngine;
use tickpipe::pipeline::features::TimeSource;
use tickpipe::pipeline::inference::InferenceEngine;
use tickpipe::pipeline::msg::{Event, MAX_PARTS, Tick};
use tickpipe::synth::{Generator, SynthConfig};

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn vectors(n: u64) -> Vec<Tick> {
    let mut g = Generator::new(&SynthConfig {
        events: n,
        ..SynthConfig::default()
    })
    .expect("generator");
    let settings = FeatureSettings {
        max_instruments: 8,
        window_capacity: 1 << 19,
        ..FeatureSettings::default()
    };
    let mut engine = FeatureEngine::new(&settings.engine_config()).expect("feature engine");
    let mut parts = [Event::default(); MAX_PARTS];
    let mut tick = Tick::default();
    let mut out = Vec::new();
    let mut seq = 0;
    while let Some(rec) = g.next_record() {
        let k = Event::decode_parts(rec.as_ref(), seq, 0, &mut parts).expect("MBO record");
        for ev in &parts[..k] {
            if engine.on_event(ev, &mut tick, &mut |_, _| {}) {
                out.push(tick);
            }
        }
        seq += 1;
    }
    out
}

fn engines() -> Vec<(&'static str, InferenceEngine)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/pipeline");
    let make = |sjm: bool, xgb: bool| {
        let m = ModelSettings {
            sjm: sjm.then(|| dir.join("sjm")),
            xgboost: xgb.then(|| dir.join("score.json")),
            ..ModelSettings::default()
        };
        InferenceEngine::new(&m.inference(8), TimeSource::Recv).expect("shipped models")
    };
    vec![
        ("pass", make(false, false)),
        ("sjm", make(true, false)),
        ("xgb", make(false, true)),
        ("sjm+xgb", make(true, true)),
    ]
}

fn throughput(c: &mut Criterion) {
    let n = if bench_mode() { 200_000 } else { 20_000 };
    let ticks = vectors(n);
    let mut g = c.benchmark_group("inference");
    g.throughput(Throughput::Elements(ticks.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(if bench_mode() { 5 } else { 1 }));
    for (name, mut engine) in engines() {
        g.bench_function(name, |b| {
            b.iter(|| {
                for t in &ticks {
                    let mut t = *t;
                    engine.on_tick(&mut t);
                    black_box(&t);
                }
            })
        });
    }
    g.finish();

    // Per-vector tails, each next to the clock-only floor of the same pass.
    let clock = quanta::Clock::new();
    let hist = || Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("histogram");
    let mut floor = hist();
    for t in &ticks {
        let t0 = clock.raw();
        black_box(t);
        let t1 = clock.raw();
        let _ = floor.record(clock.delta_as_nanos(t0, t1).max(1));
    }
    println!(
        "inference per vector ({} vectors): clock-only floor p50 {} ns, p99 {} ns, p99.9 {} ns",
        ticks.len(),
        floor.value_at_quantile(0.5),
        floor.value_at_quantile(0.99),
        floor.value_at_quantile(0.999)
    );
    for (name, mut engine) in engines() {
        let mut h = hist();
        for t in &ticks {
            let mut t = *t;
            let t0 = clock.raw();
            engine.on_tick(&mut t);
            let t1 = clock.raw();
            black_box(&t);
            let _ = h.record(clock.delta_as_nanos(t0, t1).max(1));
        }
        println!(
            "inference per vector {name:>8}: p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}

criterion_group!(benches, throughput);
criterion_main!(benches);
