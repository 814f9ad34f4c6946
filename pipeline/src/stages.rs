//! The engine's stages. Inference passes feature vectors through unchanged until its models
//! exist; the runtime around it (links, batching, stamps, latency, shutdown) is the real one.
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
use crate::feature_engine::{FeatureEngine, FeatureEngineCounts};
use crate::latency::LatencyRecorder;
use crate::link::{Message, Receiver, Sender};
use crate::msg::{Event, MAX_PARTS, Tick};
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
    /// Events decoded but not yet sent (the tail of a batch whose MBP-10 records expanded to
    /// more events than the link had room for); sent before any new frame is read.
    carry: usize,
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
            // One record can expand to MAX_PARTS events (MBP-10).
            buf: vec![Event::default(); batch.max(1) * MAX_PARTS],
            carry: 0,
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

    /// Sends held events (as many as `free` allows) ahead of any new frame, stamped now.
    fn send_carry(&mut self, free: usize) -> usize {
        let now = self.carry.min(free);
        if now == 0 {
            self.out.note_stall();
            return 0;
        }
        let t = self.clock.raw();
        self.out.send(&mut self.buf[..now], t);
        self.buf.copy_within(now..self.carry, 0);
        self.carry -= now;
        now
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
        let free = self.out.free();
        if self.carry > 0 {
            // Decoded already: delivered even when stopping, so no record leaves half-sent.
            return self.send_carry(free);
        }
        // Relaxed: the flag carries no data; ingest only needs to see it eventually.
        if self.stop.load(Ordering::Relaxed) {
            self.finish();
            return 0;
        }
        let room = free.min(self.buf.len() / MAX_PARTS);
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
        let result = self
            .reader
            .read_batch(
                &mut self.scratch,
                room,
                |info, payload| match Event::decode_parts(
                    payload,
                    info.seq,
                    info.publish_ticks,
                    &mut buf[n..],
                ) {
                    Ok(parts) => {
                        buf[n].missed_before = (*pending).min(u64::from(u32::MAX)) as u32;
                        *pending = 0;
                        n += parts;
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
                let now = n.min(free);
                self.out.send(&mut self.buf[..now], t1);
                if now < n {
                    self.buf.copy_within(now..n, 0);
                    self.carry = n - now;
                }
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

/// The feature stage's counters: events and vectors while running (atomics), everything once
/// the stage has finished.
#[derive(Debug, Default)]
pub struct FeatureStats {
    events: AtomicU64,
    vectors: AtomicU64,
    last: Mutex<Option<FeatureEngineCounts>>,
}

impl FeatureStats {
    /// Events seen and vectors emitted so far (at most ~100 ms old).
    pub fn progress(&self) -> (u64, u64) {
        // Relaxed: counters.
        (
            self.events.load(Ordering::Relaxed),
            self.vectors.load(Ordering::Relaxed),
        )
    }

    /// The full counters, once the stage has finished.
    pub fn last(&self) -> Option<FeatureEngineCounts> {
        self.last.lock().ok().and_then(|c| *c)
    }
}

/// Order books and features: turns events into a feature vector ([`Tick`]) at every consistent
/// book state (see [`crate::feature_engine`]).
pub struct FeatureStage {
    input: Receiver<Event>,
    out: Sender<Tick>,
    engine: FeatureEngine,
    buf: Vec<Event>,
    ticks: Vec<Tick>,
    clock: quanta::Clock,
    rec: LatencyRecorder,
    stats: Arc<FeatureStats>,
    publish_every_ticks: u64,
    last_publish_ticks: u64,
    done: bool,
}

impl std::fmt::Debug for FeatureStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureStage").finish_non_exhaustive()
    }
}

impl FeatureStage {
    /// A feature stage running `engine`.
    pub fn new(
        input: Receiver<Event>,
        out: Sender<Tick>,
        engine: FeatureEngine,
        batch: usize,
        clock: quanta::Clock,
        rec: LatencyRecorder,
        stats: Arc<FeatureStats>,
    ) -> Self {
        let publish_every_ticks = clock_ticks_per_ms(&clock) * 100;
        Self {
            input,
            out,
            engine,
            buf: vec![Event::default(); batch.max(1)],
            ticks: vec![Tick::default(); batch.max(1)],
            clock,
            rec,
            stats,
            publish_every_ticks,
            last_publish_ticks: 0,
            done: false,
        }
    }

    fn publish_progress(&self) {
        let c = self.engine.counts();
        // Relaxed: counters.
        self.stats.events.store(c.events, Ordering::Relaxed);
        self.stats.vectors.store(c.vectors, Ordering::Relaxed);
    }

    fn finish(&mut self) {
        self.done = true;
        self.engine.flush_bars(&mut |_, _| {});
        self.out.close();
        self.rec.finish();
        self.publish_progress();
        if let Ok(mut c) = self.stats.last.lock() {
            *c = Some(self.engine.counts());
        }
    }
}

impl Stage for FeatureStage {
    fn on_close(&mut self) {
        if !self.done {
            self.finish();
        }
    }

    fn role_name(&self) -> &str {
        "features"
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.buf.fill(Event::default());
        self.ticks.fill(Tick::default());
        Ok(())
    }

    #[inline]
    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        let available = self.input.available();
        if available == 0 {
            if self.input.is_finished() {
                self.finish();
            }
            return 0;
        }
        // At most one vector per event: room for the batch downstream bounds the batch.
        let room = self.out.free().min(self.buf.len());
        if room == 0 {
            self.out.note_stall();
            return 0;
        }
        let t0 = self.clock.raw();
        let n = self.input.recv(&mut self.buf[..room.min(available)]);
        let mut k = 0;
        for ev in &self.buf[..n] {
            self.rec.queue(t0.saturating_sub(ev.enqueue_ticks));
            if self.engine.on_event(ev, &mut self.ticks[k], &mut |_, _| {}) {
                k += 1;
            }
        }
        let t1 = self.clock.raw();
        self.rec.service(t1.saturating_sub(t0), n);
        self.out.send(&mut self.ticks[..k], t1);
        if t1.wrapping_sub(self.last_publish_ticks) >= self.publish_every_ticks {
            self.last_publish_ticks = t1;
            self.publish_progress();
        }
        self.rec.maybe_ship(t1);
        n
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// A stage that passes messages through (inference until its models exist), optionally copying
/// them onto a slow lane that never holds the main path up.
pub struct PassStage<M: Message> {
    name: &'static str,
    input: Receiver<M>,
    out: Sender<M>,
    lane: Option<Sender<M>>,
    buf: Vec<M>,
    clock: quanta::Clock,
    rec: LatencyRecorder,
    done: bool,
}

impl<M: Message> std::fmt::Debug for PassStage<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassStage")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<M: Message> PassStage<M> {
    /// A pass-through stage.
    pub fn new(
        name: &'static str,
        input: Receiver<M>,
        out: Sender<M>,
        lane: Option<Sender<M>>,
        batch: usize,
        clock: quanta::Clock,
        rec: LatencyRecorder,
    ) -> Self {
        Self {
            name,
            input,
            out,
            lane,
            buf: vec![M::default(); batch.max(1)],
            clock,
            rec,
            done: false,
        }
    }
}

impl<M: Message> Stage for PassStage<M> {
    fn role_name(&self) -> &str {
        self.name
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.buf.fill(M::default());
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
    input: Receiver<Tick>,
    writer: RingWriter<W>,
    buf: Vec<Tick>,
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
        input: Receiver<Tick>,
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
            buf: vec![Tick::default(); batch.max(1)],
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

    /// The signal for one book state: its identity and the mid price (scores, regime and
    /// alerts are filled by the stages that compute them).
    #[inline]
    fn signal(t: &Tick) -> Signal {
        let mid = t.values[crate::features::MID];
        Signal {
            publisher_id: t.publisher_id,
            instrument_id: t.instrument_id,
            ts_event: t.ts_event,
            input_seq: t.seq,
            ts_recv: t.ts_recv,
            price: if mid.is_finite() {
                (mid * 1e9).round() as i64
            } else {
                crate::depth::UNDEF_PRICE
            },
            flags: t.flags,
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
        self.buf.fill(Tick::default());
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
pub struct SlowLaneStage<M: Message> {
    input: Receiver<M>,
    buf: Vec<M>,
    clock: quanta::Clock,
    work_ticks: u64,
    rec: LatencyRecorder,
    processed: Arc<AtomicU64>,
    count: u64,
    done: bool,
}

impl<M: Message> std::fmt::Debug for SlowLaneStage<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlowLaneStage").finish_non_exhaustive()
    }
}

impl<M: Message> SlowLaneStage<M> {
    /// A lane that spends `work_ns` per message.
    pub fn new(
        input: Receiver<M>,
        batch: usize,
        clock: quanta::Clock,
        work_ns: u64,
        rec: LatencyRecorder,
        processed: Arc<AtomicU64>,
    ) -> Self {
        let work_ticks = (clock_ticks_per_ms(&clock) as u128 * work_ns as u128 / 1_000_000) as u64;
        Self {
            input,
            buf: vec![M::default(); batch.max(1)],
            clock,
            work_ticks,
            rec,
            processed,
            count: 0,
            done: false,
        }
    }
}

impl<M: Message> Stage for SlowLaneStage<M> {
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
        self.rec
            .queue(t0.saturating_sub(self.buf[0].enqueue_ticks()));
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
