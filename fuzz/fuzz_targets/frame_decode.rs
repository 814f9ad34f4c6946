//! What the pipeline does with a ring payload: `Event::decode_parts` (the ingest stage's decoder
//! of DBN records), the events fed on through the feature engine (books, windows, bars), and the
//! signal ring's record and metadata decoders.
//!
//! Input: a stream of frames, each a little-endian `u16` length followed by that many
//! payload bytes (the last
//! frame takes what is left). Every frame is decoded as a market-data record and as a signal;
//! the first frame is also checked as signal-ring metadata.
//!
//! Properties: no panic; `decode_parts` writes between 1 and `MAX_PARTS` events and they carry
//! the frame's stamps; a decoded signal re-encodes to bytes
//! that decode to the same signal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickpipe_pipeline::book::BookConfig;
use tickpipe_pipeline::feature_engine::{FeatureEngine, FeatureEngineConfig};
use tickpipe_pipeline::features::FeatureConfig;
use tickpipe_pipeline::msg::{Event, MAX_PARTS, Tick};
use tickpipe_pipeline::signal::{self, Signal};

/// An engine small enough to build per input (the defaults reserve megabytes).
fn engine() -> FeatureEngine {
    let cfg = FeatureEngineConfig {
        book: BookConfig {
            max_instruments: 4,
            max_orders: 64,
            max_levels: 16,
        },
        features: FeatureConfig {
            window_capacity: 64,
            ..FeatureConfig::default()
        },
    };
    match FeatureEngine::new(&cfg) {
        Ok(e) => e,
        Err(e) => panic!("small feature engine refused: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut engine = engine();
    let mut tick = Tick::default();
    let mut parts = [Event::default(); MAX_PARTS];
    let mut rest = data;
    let mut seq = 0u64;
    while let [lo, hi, tail @ ..] = rest {
        let n = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (frame, next) = tail.split_at(n);
        rest = next;
        if seq == 0 {
            let _ = signal::check_meta(frame);
        }
        if let Ok(s) = Signal::decode(frame) {
            let bytes = s.encode();
            match Signal::decode(&bytes) {
                Ok(again) => assert_eq!(again.encode(), bytes, "signal does not round-trip"),
                Err(e) => panic!("an encoded signal does not decode: {e}"),
            }
        }
        let publish_ticks = seq.wrapping_mul(0x9E37_79B9);
        if let Ok(n) = Event::decode_parts(frame, seq, publish_ticks, &mut parts) {
            assert!((1..=MAX_PARTS).contains(&n), "{n} parts");
            for ev in &parts[..n] {
                assert_eq!((ev.seq, ev.publish_ticks), (seq, publish_ticks));
                engine.on_event(ev, &mut tick, &mut |_, _| {});
            }
        }
        seq += 1;
    }
    engine.flush_bars(&mut |_, _| {});
    let _ = engine.counts();
});
