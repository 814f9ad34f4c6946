//! Acting on signals inside the program: a consumer that turns every signal into buy, sell or
//! flat and counts them.
//!
//! The program embeds the engine with [`EngineBuilder`], running the shipped regime model
//! (Statistical Jump Model) and scoring model (XGBoost), and hands every published [`Signal`]
//! to a [`SignalConsumer`]. The consumer is where a strategy would send orders: here it reads
//! the first score (the shipped model's probability that the mid is higher 100 book states
//! later), buys above 0.5 plus a dead band, sells below 0.5 minus it and stays flat inside it,
//! and stays flat whenever the kill switch is engaged or no score is there. It
//! counts the decisions per instrument, the stable-regime changes the models flagged, and prints
//! a summary once the engine has drained.
//!
//! By default the consumer runs on a thread of its own, fed over a back-pressure SPSC link
//! ([`Delivery::Thread`]): the strategy's cost stays out of the pipeline's latency, and a
//! strategy that falls behind slows the pipeline down (counted as stalls on the
//! `health->strategy` link) instead of missing signals. `--inline` calls it on the publish
//! stage's thread instead ([`Delivery::Inline`]): no hop, for a few nanoseconds of work.
//!
//! Market data comes from the synthetic MBO generator (`tickpipe::synth`) published into an
//! in-process heap ring; no signal ring is created (signals go to the consumer only).
//!
//! ```text
//! cargo run --example signal_consumer [EVENTS] [--inline]      # default 200000 events
//! ```

use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result};
use tickpipe::pipeline::IdleStrategy;
use tickpipe::pipeline::config::ModelSettings;
use tickpipe::pipeline::signal::{MF_REGIME_CHANGED, Signal};
use tickpipe::shm::ring::content;
use tickpipe::shm::{RingReader, StartAt, heap_ring};
use tickpipe::synth::{Generator, SynthConfig};
use tickpipe::{Delivery, EngineBuilder, EngineConfig, SignalConsumer};

/// Probabilities within this of 0.5 mean "no edge": stay flat.
const DEAD_BAND: f32 = 0.05;
/// Most instrument ids tracked (the generator numbers them from 1).
const MAX_ID: usize = 64;

/// Decisions of one instrument: buy, sell, flat.
type Counts = [u64; 3];

/// What the strategy did, handed back when it closes.
#[derive(Debug, Default)]
struct Summary {
    per_instrument: Vec<(usize, Counts)>,
    regime_changes: u64,
    killed: u64,
    signals: u64,
    thread: String,
}

/// The consumer: fixed tables, filled on every signal without allocating.
struct Strategy {
    counts: [Counts; MAX_ID],
    regime_changes: u64,
    killed: u64,
    signals: u64,
    done: mpsc::Sender<Summary>,
}

impl Strategy {
    fn decide(s: &Signal) -> usize {
        if s.kill != 0 || s.n_scores == 0 || !s.scores[0].is_finite() {
            return 2;
        }
        match s.scores[0] - 0.5 {
            edge if edge > DEAD_BAND => 0,
            edge if edge < -DEAD_BAND => 1,
            _ => 2,
        }
    }
}

impl SignalConsumer for Strategy {
    fn on_signal(&mut self, s: &Signal) {
        self.signals += 1;
        if s.kill != 0 {
            self.killed += 1;
        }
        if s.model_flags & MF_REGIME_CHANGED != 0 {
            self.regime_changes += 1;
        }
        if let Some(c) = self.counts.get_mut(s.instrument_id as usize) {
            c[Self::decide(s)] += 1;
        }
    }

    fn on_close(&mut self) {
        let _ = self.done.send(Summary {
            per_instrument: (0..MAX_ID)
                .filter(|&id| self.counts[id].iter().sum::<u64>() > 0)
                .map(|id| (id, self.counts[id]))
                .collect(),
            regime_changes: self.regime_changes,
            killed: self.killed,
            signals: self.signals,
            thread: std::thread::current()
                .name()
                .unwrap_or("unnamed")
                .to_string(),
        });
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let inline = args.iter().any(|a| a == "--inline");
    let events: u64 = match args.iter().find(|a| !a.starts_with("--")) {
        Some(a) => a.parse().context("EVENTS must be a number")?,
        None => 200_000,
    };
    let mut generator = Generator::new(&SynthConfig {
        events,
        ..SynthConfig::default()
    })?;
    let meta = tickpipe::capture::encode_metadata(&generator.metadata())?;
    let capacity = (events as usize * 128).next_power_of_two().max(1 << 20);
    let (mut md, info) = heap_ring(capacity, 1024, &meta, content::DBN)?;
    let reader = RingReader::new(md.region().clone(), info, StartAt::Oldest);

    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/pipeline");
    let mut cfg = EngineConfig {
        models: ModelSettings {
            sjm: Some(models.join("sjm")),
            xgboost: Some(models.join("score.json")),
            ..ModelSettings::default()
        },
        ..EngineConfig::default()
    };
    cfg.features.tick_size = Some(250_000_000);
    // Friendly to a laptop: production profiles pin busy-spinning stages to isolated cores.
    for p in &mut cfg.stages {
        p.idle = IdleStrategy::Yielding;
    }
    // The whole stream is published at once, far ahead of the engine: the health monitor would
    // rightly call the data it is working through old.
    cfg.health.enabled = false;
    let (done_tx, done_rx) = mpsc::channel();
    let strategy = Strategy {
        counts: [[0; 3]; MAX_ID],
        regime_changes: 0,
        killed: 0,
        signals: 0,
        done: done_tx,
    };
    let delivery = if inline {
        Delivery::Inline
    } else {
        Delivery::default()
    };
    let engine = EngineBuilder::new()
        .config(cfg)
        .market_data_reader(reader)
        .signal_consumer("strategy", delivery, strategy)
        .start()?;

    let clock = quanta::Clock::new();
    while let Some(record) = generator.next_record() {
        md.publish(record.as_ref(), clock.raw())?;
    }
    md.finish();
    let report = engine.join()?;
    let summary = done_rx
        .recv()
        .context("the strategy closed without a summary")?;

    println!(
        "{} events -> {} signals in {:.2} s; the strategy ({:?}, on thread {:?}) saw {}:",
        report.ingest.frames,
        report.signals,
        report.elapsed.as_secs_f64(),
        delivery,
        summary.thread,
        summary.signals
    );
    println!(
        "{:>10} {:>10} {:>10} {:>10}",
        "instrument", "buy", "sell", "flat"
    );
    let mut total = [0u64; 3];
    for (id, c) in &summary.per_instrument {
        println!("{id:>10} {:>10} {:>10} {:>10}", c[0], c[1], c[2]);
        for k in 0..3 {
            total[k] += c[k];
        }
    }
    println!(
        "{:>10} {:>10} {:>10} {:>10}",
        "total", total[0], total[1], total[2]
    );
    println!(
        "stable-regime changes: {}; signals under the kill switch: {}",
        summary.regime_changes, summary.killed
    );
    if let Some(link) = report.links.iter().find(|l| l.name == "health->strategy") {
        println!(
            "link health->strategy: pushed {} popped {} stalls {}",
            link.pushed, link.popped, link.stalls
        );
    }
    Ok(())
}
