//! Fixed per-event workloads of the hot stages, for instruction counting with callgrind
//! (`benches/callgrind.sh`): `stage_ops WORKLOAD N` runs the first `N` items of a fixed
//! generated stream through one piece of the hot path on one thread.
//!
//! Every run prepares the same inputs whatever `N` is (the whole generated stream, its feature
//! vectors), so the difference between a run with `N` and one with `0` is exactly the cost of
//! `N` items of the workload.
//!
//! | workload | item | what runs per item |
//! |---|---|---|
//! | `books` | event | `Books::apply` (the order book alone) |
//! | `features` | event | `FeatureEngine::on_event` (book, windows, bars, the vector) |
//! | `inference` | vector | `InferenceEngine::on_tick` with the shipped jump model and XGBoost |
//! | `health` | vector | `FeatureTally::count`, folded into the shared totals every 4096 |
//! | `engine` | event | a feed handler's publish, then the whole engine in Invoker mode: ingest, features, inference, health, the signal ring |

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use tickpipe::pipeline::book::Books;
use tickpipe::pipeline::config::{FeatureSettings, ModelSettings};
use tickpipe::pipeline::feature_engine::FeatureEngine;
use tickpipe::pipeline::features::TimeSource;
use tickpipe::pipeline::health::{FeatureTally, HealthCounters};
use tickpipe::pipeline::inference::InferenceEngine;
use tickpipe::pipeline::msg::{Event, MAX_PARTS, Tick};
use tickpipe::pipeline::signal::{SIGNAL_LEN, SIGNAL_META};
use tickpipe::pipeline::{Engine, EngineConfig, ThreadHooks, ThreadingMode};
use tickpipe::shm::ring::{HeapRegion, content};
use tickpipe::shm::{RingReader, RingWriter, StartAt, heap_ring};
use tickpipe::synth::{Generator, SynthConfig};

/// Records in the fixed stream (the largest accepted `N` for the event workloads).
const RECORDS: u64 = 200_000;

fn settings() -> FeatureSettings {
    FeatureSettings {
        max_instruments: 4,
        max_orders: 4096,
        window_capacity: 1 << 17,
        ..FeatureSettings::default()
    }
}

fn models() -> ModelSettings {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/pipeline");
    ModelSettings {
        sjm: Some(dir.join("sjm")),
        xgboost: Some(dir.join("score.json")),
        ..ModelSettings::default()
    }
}

/// The generated stream: its raw records and its decoded events.
fn stream() -> (Vec<Vec<u8>>, Vec<Event>) {
    let mut g = Generator::new(&SynthConfig {
        events: RECORDS,
        ..SynthConfig::default()
    })
    .expect("generator");
    let (mut records, mut events) = (Vec::new(), Vec::new());
    let mut parts = [Event::default(); MAX_PARTS];
    let mut seq = 0;
    while let Some(rec) = g.next_record() {
        let k = Event::decode_parts(rec.as_ref(), seq, 0, &mut parts).expect("MBO record");
        events.extend_from_slice(&parts[..k]);
        records.push(rec.as_ref().to_vec());
        seq += 1;
    }
    (records, events)
}

/// The feature vectors of `events`.
fn vectors(events: &[Event]) -> Vec<Tick> {
    let mut engine = FeatureEngine::new(&settings().engine_config()).expect("feature engine");
    let mut tick = Tick::default();
    let mut out = Vec::new();
    for ev in events {
        if engine.on_event(ev, &mut tick, &mut |_, _| {}) {
            out.push(tick);
        }
    }
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(workload), Some(n)) = (args.next(), args.next().and_then(|a| a.parse().ok())) else {
        eprintln!("usage: stage_ops books|features|inference|health|engine N");
        std::process::exit(2);
    };
    let n: usize = n;
    let (records, events) = stream();
    let vectors = vectors(&events);
    let limit = match workload.as_str() {
        "books" | "features" => events.len(),
        "inference" | "health" => vectors.len(),
        "engine" => records.len(),
        other => {
            eprintln!("stage_ops: unknown workload {other:?}");
            std::process::exit(2);
        }
    };
    if n > limit {
        eprintln!("stage_ops: {workload} has {limit} items, asked for {n}");
        std::process::exit(2);
    }
    // Everything each workload needs is built before the measured loop, whatever `n` is.
    let mut books = Books::new(&settings().engine_config().book).expect("books");
    let mut features = FeatureEngine::new(&settings().engine_config()).expect("feature engine");
    let mut inference =
        InferenceEngine::new(&models().inference(4), TimeSource::Recv).expect("shipped models");
    let (mut tally, counters) = (FeatureTally::default(), HealthCounters::default());
    let mut engine = (workload == "engine").then(EngineRig::start);
    let sum = match workload.as_str() {
        "books" => measure_books(&mut books, &events[..n]),
        "features" => measure_features(&mut features, &events[..n]),
        "inference" => measure_inference(&mut inference, &vectors[..n]),
        "health" => measure_health(&mut tally, &counters, &vectors[..n]),
        _ => measure_engine(engine.as_mut().expect("engine rig"), &records[..n]),
    };
    println!("{workload} {n}: {sum}");
}

// The measured loops. `benches/callgrind.sh` counts instructions inside `measure_*` only
// (`--toggle-collect`), so set-up that varies between runs (clock calibration) stays out.

#[inline(never)]
fn measure_books(books: &mut Books, events: &[Event]) -> u64 {
    events
        .iter()
        .map(|ev| u64::from(black_box(books.apply(ev)).is_some()))
        .sum()
}

#[inline(never)]
fn measure_features(features: &mut FeatureEngine, events: &[Event]) -> u64 {
    let mut tick = Tick::default();
    events
        .iter()
        .map(|ev| {
            u64::from(features.on_event(ev, &mut tick, &mut |_, b| {
                black_box(b);
            }))
        })
        .sum()
}

#[inline(never)]
fn measure_inference(inference: &mut InferenceEngine, vectors: &[Tick]) -> u64 {
    let mut sum = 0u64;
    for t in vectors {
        let mut t = *t;
        inference.on_tick(&mut t);
        sum = sum.wrapping_add(black_box(&t).flags.into());
    }
    sum
}

#[inline(never)]
fn measure_health(tally: &mut FeatureTally, counters: &HealthCounters, vectors: &[Tick]) -> u64 {
    for (i, t) in vectors.iter().enumerate() {
        tally.count(black_box(&t.values), t.publish_ticks);
        if i % 4096 == 4095 {
            tally.publish(counters);
        }
    }
    tally.vectors()
}

#[inline(never)]
fn measure_engine(rig: &mut EngineRig, records: &[Vec<u8>]) -> u64 {
    rig.run(records)
}

/// The whole engine in Invoker mode on in-process rings, with the shipped models.
struct EngineRig {
    md: RingWriter<Arc<HeapRegion>>,
    engine: Engine,
    clock: quanta::Clock,
}

impl EngineRig {
    fn start() -> Self {
        let (md, info) = heap_ring(64 << 20, 1024, b"DBN", content::DBN).expect("market-data ring");
        let reader = RingReader::new(md.region().clone(), info, StartAt::Oldest);
        let mut cfg = EngineConfig {
            mode: ThreadingMode::Invoker,
            features: settings(),
            models: models(),
            ..EngineConfig::default()
        };
        // The monitor is a thread of its own that ticks by the clock: its instructions would
        // depend on how long the run takes. The health stage's per-vector work stays.
        // The reporter, a stage in Invoker mode, swaps histogram sets by the clock too: once
        // an hour is never within a run.
        cfg.health.enabled = false;
        cfg.report_interval = std::time::Duration::from_secs(3600);
        let clock = quanta::Clock::new();
        let (signals, _) = heap_ring(
            cfg.signal_capacity,
            SIGNAL_LEN,
            &SIGNAL_META,
            content::SIGNALS,
        )
        .expect("signal ring");
        let engine = Engine::start(&cfg, reader, signals, clock.clone(), ThreadHooks::default())
            .expect("engine");
        Self { md, engine, clock }
    }

    /// Publishes `records` a batch at a time and runs duty cycles until ingest has taken each
    /// batch; returns the signals published.
    fn run(&mut self, records: &[Vec<u8>]) -> u64 {
        let mut done = 0u64;
        for batch in records.chunks(4096) {
            for rec in batch {
                self.md
                    .publish(rec, self.clock.raw())
                    .expect("a record fits the ring");
            }
            done += batch.len() as u64;
            while self.engine.ingest().frames < done {
                assert!(self.engine.invoke() > 0, "the engine stopped moving");
            }
        }
        // Drain what is still between the stages.
        while self.engine.invoke() > 0 {}
        let ingest = self.engine.ingest();
        assert_eq!(
            (ingest.missed, ingest.undecodable),
            (0, 0),
            "ingest lost records: {ingest:?}"
        );
        self.engine.signals_published()
    }
}
