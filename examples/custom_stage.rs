//! A stage of one's own inside the pipeline: a per-instrument spread and VWAP monitor.
//!
//! The program embeds the engine with [`EngineBuilder`] and adds a [`UserStage`]. The engine
//! feeds the stage every feature vector it publishes (a [`Tick`]: the book state's identity, the
//! 24 features of [`tickpipe::pipeline::features::SCHEMA`] and the models' outputs), in order,
//! over a back-pressure SPSC link, on a thread of the stage's own. The stage keeps, per
//! instrument, the spread in ticks (mean, widest, and how often it was wider than two ticks) and
//! the latest deviation of the mid from the 60-second VWAP, and prints a table when the engine
//! has drained.
//!
//! Market data comes from the synthetic MBO generator (`tickpipe::synth`, four instruments near
//! 4,500.00 on a 0.25 grid) published into an in-process heap ring: no file is needed.
//!
//! ```text
//! cargo run --example custom_stage [EVENTS]      # default 200000
//! ```

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tickpipe::pipeline::IdleStrategy;
use tickpipe::pipeline::features::{MID, SPREAD_TICKS, VWAP_DEV_60S_BPS};
use tickpipe::pipeline::msg::Tick;
use tickpipe::shm::ring::content;
use tickpipe::shm::{RingReader, StartAt, heap_ring};
use tickpipe::synth::{Generator, SynthConfig};
use tickpipe::{EngineBuilder, EngineConfig, UserStage};

/// Most instrument ids the monitor tracks (the generator numbers them from 1).
const MAX_ID: usize = 64;

/// What the monitor knows of one instrument.
#[derive(Debug, Clone, Copy, Default)]
struct InstrumentStats {
    ticks: u64,
    spread_sum: f64,
    spread_n: u64,
    widest: f64,
    wide: u64,
    mid: f64,
    vwap_dev_bps: f64,
}

/// The user stage: per-instrument spread and VWAP deviation. Its table is fixed-size and
/// allocated when it is built, so `on_tick` never allocates.
struct SpreadMonitor {
    wide_ticks: f64,
    stats: [InstrumentStats; MAX_ID],
    /// Where the table goes when the stage closes (read by `main` after the join).
    out: Arc<Mutex<Vec<(usize, InstrumentStats)>>>,
}

impl UserStage for SpreadMonitor {
    fn name(&self) -> &str {
        "spread-monitor"
    }

    fn on_tick(&mut self, tick: &Tick) {
        let Some(s) = self.stats.get_mut(tick.instrument_id as usize) else {
            return;
        };
        s.ticks += 1;
        let spread = tick.values[SPREAD_TICKS];
        // NaN while one side of the book is empty.
        if spread.is_finite() {
            s.spread_sum += spread;
            s.spread_n += 1;
            s.widest = s.widest.max(spread);
            if spread > self.wide_ticks {
                s.wide += 1;
            }
        }
        if tick.values[MID].is_finite() {
            s.mid = tick.values[MID];
        }
        if tick.values[VWAP_DEV_60S_BPS].is_finite() {
            s.vwap_dev_bps = tick.values[VWAP_DEV_60S_BPS];
        }
    }

    fn on_close(&mut self) {
        if let Ok(mut out) = self.out.lock() {
            out.extend(
                self.stats
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.ticks > 0)
                    .map(|(id, s)| (id, *s)),
            );
        }
    }
}

fn main() -> Result<()> {
    let events: u64 = match std::env::args().nth(1) {
        Some(a) => a.parse().context("EVENTS must be a number")?,
        None => 200_000,
    };
    let mut generator = Generator::new(&SynthConfig {
        events,
        ..SynthConfig::default()
    })?;
    let meta = tickpipe::capture::encode_metadata(&generator.metadata())?;
    // Room for the whole stream (an MBO record is 56 bytes, framed 64 and more), so a feeder
    // faster than the engine cannot lap it.
    let capacity = (events as usize * 128).next_power_of_two().max(1 << 20);
    let (mut md, info) = heap_ring(capacity, 1024, &meta, content::DBN)?;
    let reader = RingReader::new(md.region().clone(), info, StartAt::Oldest);

    let mut cfg = EngineConfig::default();
    // The generator's instruments trade on a 0.25 grid and send no definitions.
    cfg.features.tick_size = Some(250_000_000);
    // Friendly to a laptop: production profiles pin busy-spinning stages to isolated cores.
    for p in &mut cfg.stages {
        p.idle = IdleStrategy::Yielding;
    }
    // The whole stream is published at once, far ahead of the engine: the health monitor would
    // rightly call the data it is working through old.
    cfg.health.enabled = false;
    let table = Arc::new(Mutex::new(Vec::new()));
    let engine = EngineBuilder::new()
        .config(cfg)
        .market_data_reader(reader)
        .user_stage(
            SpreadMonitor {
                wide_ticks: 2.0,
                stats: [InstrumentStats::default(); MAX_ID],
                out: table.clone(),
            },
            None,
        )
        .start()?;

    let clock = quanta::Clock::new();
    while let Some(record) = generator.next_record() {
        md.publish(record.as_ref(), clock.raw())?;
    }
    md.finish();
    let report = engine.join()?;

    println!(
        "{} events -> {} feature vectors in {:.2} s; the spread monitor saw:",
        report.ingest.frames,
        report.signals,
        report.elapsed.as_secs_f64()
    );
    println!(
        "{:>10} {:>10} {:>12} {:>10} {:>12} {:>12} {:>14}",
        "instrument", "ticks", "mean spread", "widest", "> 2 ticks", "last mid", "vwap dev bps"
    );
    let table = table.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut seen = 0;
    for (id, s) in table.iter() {
        seen += s.ticks;
        println!(
            "{id:>10} {:>10} {:>12.3} {:>10.0} {:>12} {:>12.2} {:>14.3}",
            s.ticks,
            s.spread_sum / s.spread_n.max(1) as f64,
            s.widest,
            s.wide,
            s.mid,
            s.vwap_dev_bps
        );
    }
    println!(
        "total {seen} ticks (every published vector: {})",
        seen == report.signals
    );
    Ok(())
}
