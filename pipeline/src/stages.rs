//! The engine's stages. Features and inference pass events through unchanged for now; the
//! runtime around them (links, batching, stamps, latency, shutdown) is the real one.
//!
//! Every stage follows one duty cycle: take as many input messages as the output has room for
//! (at most a batch), stamp `t0`, process, stamp `t1`, record queue wait (`t0 - enqueue`) per
//! message and the batch's service time (`t1 - t0`) once per message, then make the batch
//! visible downstream at once, stamped `t1`. A message leaves a stage no later than `t1`, so the
//! recorded times are upper bounds, never flattering averages.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tickpipe_shm::{ReadError, Region, RingReader, RingWriter};

use crate::PipelineError;
use crate::latency::LatencyRecorder;
use crate::link::{Message, Receiver, Sender};
use crate::msg::Event;
use crate::signal::Signal;
use crate::stage::Stage;

/// The ingest stage's counters (readable while running).
#[derive(Debug, Default)]
pub struct IngestStats {
    frames: AtomicU64,
    laps: AtomicU64,
    missed: AtomicU64,
    undecodable: AtomicU64,
    fatal: Mutex<Option<String>>,
}

/// A copy of the ingest counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestCounts {
    /// Frames read from the market-data ring.
    pub frames: u64,
    /// Times the writer lapped the engine.
    pub laps: u64,
    /// Frames lost to those laps (exact).
    pub missed: u64,
    /// Frames that were not readable records (skipped, counted).
    pub undecodable: u64,
    /// Why ingest stopped early, if it did (a corrupt ring).
    pub fatal: Option<String>,
}

impl IngestStats {
    /// A copy of the counters.
    pub fn counts(&self) -> IngestCounts {
        // Relaxed: counters, each written by the ingest thread only.
        IngestCounts {
            frames: self.frames.load(Ordering::Relaxed),
            laps: self.laps.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            undecodable: self.undecodable.load(Ordering::Relaxed),
            fatal: self.fatal.lock().map(|f| f.clone()).unwrap_or_default(),
        }
    }
}

/// Reads the market-data ring (busy-poll) and turns frames into [`Event`]s.
pub struct IngestStage<R: Region> {
    reader: RingReader<R>,
    scratch: Vec<u8>,
    buf: Vec<Event>,
    out: Sender<Event>,
    clock: quanta::Clock,
    rec: LatencyRecorder,
    stop: Arc<AtomicBool>,
    stats: Arc<IngestStats>,
    frames: u64,
    laps: u64,
    missed: u64,
    undecodable: u64,
    pending_missed: u64,
    done: bool,
}

impl<R: Region> std::fmt::Debug for IngestStage<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestStage").finish_non_exhaustive()
    }
}

impl<R: Region + Send> IngestStage<R> {
    /// A stage reading `reader` into `out`, at most `batch` frames per cycle, until `stop` is set
    /// or the ring's writer finishes.
    pub fn new(
        reader: RingReader<R>,
        out: Sender<Event>,
        batch: usize,
        clock: quanta::Clock,
        rec: LatencyRecorder,
        stop: Arc<AtomicBool>,
        stats: Arc<IngestStats>,
    ) -> Self {
        // Room for a full batch of the largest frames the ring can hold, as they lie in the ring.
        let max_frame = tickpipe_shm::layout::frame_len(reader.info().geometry.max_payload);
        Self {
            reader,
            scratch: vec![0u8; max_frame * batch.max(1)],
            buf: vec![Event::default(); batch.max(1)],
            out,
            clock,
            rec,
            stop,
            stats,
            frames: 0,
            laps: 0,
            missed: 0,
            undecodable: 0,
            pending_missed: 0,
            done: false,
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.out.close();
        self.rec.finish();
    }

    fn publish_counts(&self) {
        // Relaxed: counters; see `IngestStats`.
        self.stats.frames.store(self.frames, Ordering::Relaxed);
        self.stats.laps.store(self.laps, Ordering::Relaxed);
        self.stats.missed.store(self.missed, Ordering::Relaxed);
        self.stats
            .undecodable
            .store(self.undecodable, Ordering::Relaxed);
    }
}

impl<R: Region + Send> Stage for IngestStage<R> {
    fn role_name(&self) -> &str {
        "ingest"
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        // First touch on the stage's own core.
        self.scratch.fill(0);
        self.buf.fill(Event::default());
        Ok(())
    }

    #[inline]
    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        // Relaxed: the flag carries no data; ingest only needs to see it eventually.
        if self.stop.load(Ordering::Relaxed) {
            self.finish();
            return 0;
        }
        let room = self.out.free().min(self.buf.len());
        if room == 0 {
            self.out.note_stall();
            return 0;
        }
        let t0 = self.clock.raw();
        let mut n = 0usize;
        let (buf, undecodable, pending) = (
            &mut self.buf,
            &mut self.undecodable,
            &mut self.pending_missed,
        );
        let result =
            self.reader.read_batch(
                &mut self.scratch,
                room,
                |info, payload| match Event::decode(payload, info.seq, info.publish_ticks) {
                    Ok(mut ev) => {
                        ev.missed_before = (*pending).min(u64::from(u32::MAX)) as u32;
                        *pending = 0;
                        buf[n] = ev;
                        n += 1;
                    }
                    Err(_) => *undecodable += 1,
                },
            );
        match result {
            Ok(frames) => {
                let t1 = self.clock.raw();
                self.frames += frames as u64;
                for ev in &self.buf[..n] {
                    self.rec.queue(t0.saturating_sub(ev.publish_ticks));
                }
                self.rec.service(t1.saturating_sub(t0), n);
                self.out.send(&mut self.buf[..n], t1);
                self.rec.maybe_ship(t1);
                self.publish_counts();
                frames
            }
            Err(ReadError::Empty) => {
                if self.reader.is_finished() {
                    // The writer finished and everything it wrote has been read.
                    self.finish();
                } else {
                    self.rec.maybe_ship(t0);
                }
                0
            }
            Err(ReadError::Lapped { missed }) => {
                self.laps += 1;
                self.missed += missed;
                self.pending_missed += missed;
                self.publish_counts();
                1
            }
            Err(e @ (ReadError::Corrupt(_) | ReadError::BufferTooSmall { .. })) => {
                if let Ok(mut f) = self.stats.fatal.lock() {
                    *f = Some(format!("market-data ring: {e}"));
                }
                self.finish();
                0
            }
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }

    fn on_close(&mut self) {
        self.publish_counts();
        if !self.done {
            self.finish();
        }
    }
}

/// A stage that passes events through (features and inference until their models exist),
/// optionally copying them onto a slow lane that never holds the main path up.
pub struct PassStage {
    name: &'static str,
    input: Receiver<Event>,
    out: Sender<Event>,
    lane: Option<Sender<Event>>,
    buf: Vec<Event>,
    clock: quanta::Clock,
    rec: LatencyRecorder,
    done: bool,
}

impl std::fmt::Debug for PassStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassStage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PassStage {
    /// A pass-through stage.
    pub fn new(
        name: &'static str,
        input: Receiver<Event>,
        out: Sender<Event>,
        lane: Option<Sender<Event>>,
        batch: usize,
        clock: quanta::Clock,
        rec: LatencyRecorder,
    ) -> Self {
        Self {
            name,
            input,
            out,
            lane,
            buf: vec![Event::default(); batch.max(1)],
            clock,
            rec,
            done: false,
        }
    }
}

impl Stage for PassStage {
    fn role_name(&self) -> &str {
        self.name
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.buf.fill(Event::default());
        Ok(())
    }

    #[inline]
    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        let mut work = 0;
        if let Some(lane) = &mut self.lane
            && lane.has_overflow()
        {
            work += lane.flush(self.clock.raw());
        }
        let available = self.input.available();
        if available == 0 {
            // Finished upstream: close once the lane's held messages are out too.
            if self.input.is_finished() && !self.lane.as_ref().is_some_and(|l| l.has_overflow()) {
                self.done = true;
                self.out.close();
                if let Some(lane) = &self.lane {
                    lane.close();
                }
                self.rec.finish();
            }
            return work;
        }
        let room = self.out.free().min(self.buf.len());
        if room == 0 {
            self.out.note_stall();
            return work;
        }
        let t0 = self.clock.raw();
        let n = self.input.recv(&mut self.buf[..room.min(available)]);
        for ev in &self.buf[..n] {
            self.rec.queue(t0.saturating_sub(ev.enqueue_ticks()));
        }
        let t1 = self.clock.raw();
        self.rec.service(t1.saturating_sub(t0), n);
        self.out.send(&mut self.buf[..n], t1);
        if let Some(lane) = &mut self.lane {
            lane.send(&mut self.buf[..n], t1);
        }
        self.rec.maybe_ship(t1);
        work + n
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// The last stage: publishes a [`Signal`] per event into the signal ring and records end to end
/// latency (market-data publish to signal published).
pub struct PublishStage<W: Region> {
    input: Receiver<Event>,
    writer: RingWriter<W>,
    buf: Vec<Event>,
    clock: quanta::Clock,
    rec: LatencyRecorder,
    published: Arc<AtomicU64>,
    count: u64,
    heartbeat_base: (u64, u64),
    last_heartbeat_ticks: u64,
    heartbeat_ticks: u64,
    done: bool,
}

impl<W: Region> std::fmt::Debug for PublishStage<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishStage").finish_non_exhaustive()
    }
}

impl<W: Region + Send> PublishStage<W> {
    /// A stage publishing into `writer`.
    pub fn new(
        input: Receiver<Event>,
        writer: RingWriter<W>,
        batch: usize,
        clock: quanta::Clock,
        rec: LatencyRecorder,
        published: Arc<AtomicU64>,
    ) -> Self {
        let heartbeat_ticks = clock_ticks_per_ms(&clock) * 50;
        let base = (clock.raw(), tickpipe_shm::mapped::unix_now_ns());
        Self {
            input,
            writer,
            buf: vec![Event::default(); batch.max(1)],
            clock,
            rec,
            published,
            count: 0,
            heartbeat_base: base,
            last_heartbeat_ticks: base.0,
            heartbeat_ticks,
            done: false,
        }
    }

    /// The signal for one event (a pass-through of its identity and price for now).
    #[inline]
    fn signal(ev: &Event) -> Signal {
        Signal {
            publisher_id: ev.publisher_id,
            instrument_id: ev.instrument_id,
            ts_event: ev.ts_event,
            input_seq: ev.seq,
            ts_recv: ev.ts_recv,
            price: ev.price,
            size: ev.size,
            side: ev.side,
            flags: ev.flags,
            ..Signal::default()
        }
    }
}

/// Raw ticks in a millisecond for `clock` (calibrated once at construction of a stage).
pub fn clock_ticks_per_ms(clock: &quanta::Clock) -> u64 {
    // delta_as_nanos is linear in its argument: invert it on a large span for precision.
    let span = 1u64 << 40;
    let ns = clock.delta_as_nanos(0, span).max(1);
    ((span as u128 * 1_000_000) / ns as u128).max(1) as u64
}

impl<W: Region + Send> Stage for PublishStage<W> {
    fn role_name(&self) -> &str {
        "health"
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.buf.fill(Event::default());
        Ok(())
    }

    #[inline]
    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        let n = self.input.recv(&mut self.buf);
        if n == 0 {
            if self.input.is_finished() {
                self.done = true;
                self.writer.finish();
                self.rec.finish();
            }
            return 0;
        }
        let t0 = self.clock.raw();
        for ev in &self.buf[..n] {
            // Signals are fixed-size and far below the ring's max payload: publish cannot fail.
            let _ = self.writer.publish(&Self::signal(ev).encode(), t0);
        }
        let t1 = self.clock.raw();
        self.count += n as u64;
        // Relaxed: a counter.
        self.published.store(self.count, Ordering::Relaxed);
        self.rec.service(t1.saturating_sub(t0), n);
        for ev in &self.buf[..n] {
            self.rec.queue(t0.saturating_sub(ev.enqueue_ticks));
            self.rec.e2e(t1.saturating_sub(ev.publish_ticks));
        }
        if t1.wrapping_sub(self.last_heartbeat_ticks) >= self.heartbeat_ticks {
            // Wall time derived from the clock, not read from the OS: no syscall here.
            self.last_heartbeat_ticks = t1;
            let (base_ticks, base_ns) = self.heartbeat_base;
            self.writer
                .heartbeat(base_ns + self.clock.delta_as_nanos(base_ticks, t1));
        }
        self.rec.maybe_ship(t1);
        n
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// A slow lane (the place of the LSTM forecast): takes what its conflating or dropping link
/// delivers and spends `work_ns` of busy time on each message.
pub struct SlowLaneStage {
    input: Receiver<Event>,
    buf: Vec<Event>,
    clock: quanta::Clock,
    work_ticks: u64,
    rec: LatencyRecorder,
    processed: Arc<AtomicU64>,
    count: u64,
    done: bool,
}

impl std::fmt::Debug for SlowLaneStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowLaneStage").finish_non_exhaustive()
    }
}

impl SlowLaneStage {
    /// A lane that spends `work_ns` per message.
    pub fn new(
        input: Receiver<Event>,
        batch: usize,
        clock: quanta::Clock,
        work_ns: u64,
        rec: LatencyRecorder,
        processed: Arc<AtomicU64>,
    ) -> Self {
        let work_ticks = (clock_ticks_per_ms(&clock) as u128 * work_ns as u128 / 1_000_000) as u64;
        Self {
            input,
            buf: vec![Event::default(); batch.max(1)],
            clock,
            work_ticks,
            rec,
            processed,
            count: 0,
            done: false,
        }
    }
}

impl Stage for SlowLaneStage {
    fn role_name(&self) -> &str {
        "forecast"
    }

    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        // One message at a time: a slow consumer takes only what it can work on, so its link
        // (not a private batch) is where the backlog is conflated.
        let n = self.input.recv(&mut self.buf[..1]);
        if n == 0 {
            if self.input.is_finished() {
                self.done = true;
                self.rec.finish();
            }
            return 0;
        }
        let t0 = self.clock.raw();
        self.rec.queue(t0.saturating_sub(self.buf[0].enqueue_ticks));
        while self.clock.raw().wrapping_sub(t0) < self.work_ticks {
            std::hint::spin_loop();
        }
        let t1 = self.clock.raw();
        self.rec.service(t1.saturating_sub(t0), 1);
        self.count += 1;
        // Relaxed: a counter.
        self.processed.store(self.count, Ordering::Relaxed);
        self.rec.maybe_ship(t1);
        1
    }

    fn is_done(&self) -> bool {
        self.done
    }
}
