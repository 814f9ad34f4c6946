//! An engine on in-process rings, as several tests drive it: a market-data ring the test
//! publishes into, and the signal ring's reader.
#![allow(dead_code)] // each test binary uses its own part

use std::sync::Arc;

use tickpipe_pipeline::signal::{SIGNAL_LEN, SIGNAL_META, Signal};
use tickpipe_pipeline::{Engine, EngineConfig, ThreadHooks};
use tickpipe_shm::ring::{HeapRegion, content};
use tickpipe_shm::{ReadError, RingReader, RingWriter, StartAt, heap_ring};

/// A started engine and the two ends the test holds.
pub struct Rig {
    /// Market data in.
    pub md: RingWriter<Arc<HeapRegion>>,
    /// Signals out.
    pub signals: RingReader<Arc<HeapRegion>>,
    /// The engine.
    pub engine: Engine,
    /// The clock the engine stamps with (publish with `clock.raw()`).
    pub clock: quanta::Clock,
}

/// Starts `cfg` on a market-data ring of `md_bytes` and a signal ring of `signal_bytes`.
pub fn start(cfg: &EngineConfig, md_bytes: usize, signal_bytes: usize) -> Rig {
    let (md, md_info) = heap_ring(md_bytes, 1024, b"DBN", content::DBN).unwrap();
    let (sig, sig_info) =
        heap_ring(signal_bytes, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).unwrap();
    let signals = RingReader::new(sig.region().clone(), sig_info, StartAt::Oldest);
    let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
    let clock = quanta::Clock::new();
    let engine = Engine::start(cfg, reader, sig, clock.clone(), ThreadHooks::default()).unwrap();
    Rig {
        md,
        signals,
        engine,
        clock,
    }
}

/// Appends every signal record waiting in `r` to `out`, raw.
pub fn drain_raw(r: &mut RingReader<Arc<HeapRegion>>, out: &mut Vec<[u8; SIGNAL_LEN]>) {
    let mut buf = [0u8; SIGNAL_LEN];
    loop {
        match r.try_read(&mut buf) {
            Ok(_) => out.push(buf),
            Err(ReadError::Empty) => return,
            Err(e) => panic!("signal ring: {e}"),
        }
    }
}

/// Appends every signal waiting in `r` to `out`, decoded.
pub fn drain(r: &mut RingReader<Arc<HeapRegion>>, out: &mut Vec<Signal>) {
    let mut raw = Vec::new();
    drain_raw(r, &mut raw);
    out.extend(raw.iter().map(|b| Signal::decode(b).unwrap()));
}
