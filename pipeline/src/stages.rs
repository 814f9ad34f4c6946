//! The engine's stages: ingest, features (with the bar lane), inference, health/publish, and
//! the slow forecast lane.
//!
//! Every stage follows one duty cycle: take as many input messages as the output has room for
//! (at most a batch), stamp `t0`, process, stamp `t1`, record queue wait (`t0 - enqueue`) per
//! message and the batch's service time (`t1 - t0`) once per message, then make the batch
//! visible downstream at once, stamped `t1`. A message leaves a stage no later than `t1`, so the
//! recorded times are upper bounds, never flattering averages.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tickpipe_shm::{ReadError, Region, RingWriter};

use crate::PipelineError;
use crate::feature_engine::{FeatureEngine, FeatureEngineCounts};
use crate::features::Bar;
use crate::forecast::{ForecastCounts, ForecastEngine};
use crate::health::{FeatureTally, HealthCounters};
use crate::inference::{InferenceCounts, InferenceEngine};
use crate::latency::LatencyRecorder;
use crate::link::{Message, Receiver, Sender};
use crate::msg::{BarMsg, Event, Forecast, MAX_PARTS, Tick};
use crate::signal::Signal;
use crate::source::MdSource;
use crate::stage::Stage;
use crate::swap::SwapPort;

/// The ingest stage's counters (readable while running).
#[derive(Debug, Default)]
pub struct IngestStats {
    frames: AtomicU64,
    laps: AtomicU64,
    missed: AtomicU64,
    undecodable: AtomicU64,
    writer_heartbeat_ns: AtomicU64,
    writer_state: AtomicU64,
    fatal: Mutex<Option<String>>,
}

/// The market-data writer as ingest last saw it in the ring header (for the health monitor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterSeen {
    /// Its last heartbeat (ns since the UNIX epoch; 0: it has not sent one).
    pub heartbeat_ns: u64,
    /// It has closed the ring.
    pub finished: bool,
}

/// A copy of the ingest counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestCounts {
    /// Records read from the market-data source (ring frames, or records out of datagrams).
    pub frames: u64,
    /// Losses the source reported: times the ring's writer lapped the engine, or gaps in the
    /// datagram sequence of a UDP feed.
    pub laps: u64,
    /// Records lost to those laps or gaps (exact).
    pub missed: u64,
    /// Frames that were not readable records (skipped, counted).
    pub undecodable: u64,
    /// Why ingest stopped early, if it did (a corrupt ring, a failed socket).
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

    /// The writer as ingest last saw it (refreshed every few thousand polls).
    pub fn writer(&self) -> WriterSeen {
        // Relaxed: monitoring values copied from the ring header by the ingest thread.
        WriterSeen {
            heartbeat_ns: self.writer_heartbeat_ns.load(Ordering::Relaxed),
            finished: self.writer_state.load(Ordering::Relaxed) == 1,
        }
    }
}

/// Reads a market-data source (busy-poll: the shared-memory ring or a UDP feed, see
/// [`crate::source`]) and turns its records into [`Event`]s.
pub struct IngestStage<S: MdSource> {
    reader: S,
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
    polls: u64,
    done: bool,
}

/// Ingest copies the writer's heartbeat into its stats once per this many polls.
const WRITER_POLL_EVERY: u64 = 1024;

impl<S: MdSource> std::fmt::Debug for IngestStage<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestStage").finish_non_exhaustive()
    }
}

impl<S: MdSource> IngestStage<S> {
    /// A stage reading `reader` into `out`, at most `batch` records per cycle, until `stop` is
    /// set or the source's stream ends.
    pub fn new(
        reader: S,
        out: Sender<Event>,
        batch: usize,
        clock: quanta::Clock,
        rec: LatencyRecorder,
        stop: Arc<AtomicBool>,
        stats: Arc<IngestStats>,
    ) -> Self {
        Self {
            scratch: vec![0u8; reader.scratch_len(batch)],
            reader,
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
            polls: 0,
            done: false,
        }
    }

    fn finish(&mut self) {
        self.done = true;
        self.copy_writer();
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

    /// Copies the writer's heartbeat and state from the source (the ring header) into the stats,
    /// one poll in [`WRITER_POLL_EVERY`] (a few loads of a header line the writer also writes).
    #[inline]
    fn note_writer(&mut self) {
        self.polls = self.polls.wrapping_add(1);
        if self.polls.is_multiple_of(WRITER_POLL_EVERY) {
            self.copy_writer();
        }
    }

    fn copy_writer(&self) {
        let w = self.reader.writer();
        // Relaxed: see `IngestStats::writer`.
        self.stats
            .writer_heartbeat_ns
            .store(w.heartbeat_ns, Ordering::Relaxed);
        self.stats
            .writer_state
            .store(u64::from(w.finished), Ordering::Relaxed);
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

impl<S: MdSource> Stage for IngestStage<S> {
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
                self.note_writer();
                frames
            }
            Err(ReadError::Empty) => {
                self.note_writer();
                if self.reader.is_finished() {
                    // The stream ended and everything in it has been read.
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
                    *f = Some(self.reader.describe_error(e));
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
    /// The bar lane to the forecaster and the bar interval it takes.
    lane: Option<(Sender<BarMsg>, u64)>,
    lane_closed: bool,
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
    /// A feature stage running `engine`; completed bars of `lane.1` ns go onto `lane.0` (a lossy
    /// link: the main path never waits for it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: Receiver<Event>,
        out: Sender<Tick>,
        lane: Option<(Sender<BarMsg>, u64)>,
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
            lane_closed: lane.is_none(),
            lane,
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

    /// Hands a bar to the lane if it takes bars of this interval.
    #[inline]
    fn offer_bar(lane: &mut Option<(Sender<BarMsg>, u64)>, id: u32, bar: Bar, ticks: u64) {
        if let Some((tx, interval)) = lane
            && bar.interval_ns == *interval
        {
            tx.send(
                &mut [BarMsg {
                    instrument_id: id,
                    enqueue_ticks: 0,
                    bar,
                }],
                ticks,
            );
        }
    }

    /// Flushes the lane's held bars; closes it once they are out (after the main path ended).
    fn drain_lane(&mut self) -> usize {
        let Some((tx, _)) = &mut self.lane else {
            return 0;
        };
        let moved = if tx.has_overflow() {
            tx.flush(self.clock.raw())
        } else {
            0
        };
        if self.done && !tx.has_overflow() && !self.lane_closed {
            tx.close();
            self.lane_closed = true;
        }
        moved
    }

    fn finish(&mut self) {
        self.done = true;
        let t = self.clock.raw();
        let lane = &mut self.lane;
        self.engine
            .flush_bars(&mut |id, bar| Self::offer_bar(lane, id, bar, t));
        self.drain_lane();
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
            return self.drain_lane();
        }
        let mut work = 0;
        if self.lane.as_ref().is_some_and(|(tx, _)| tx.has_overflow()) {
            work += self.drain_lane();
        }
        let available = self.input.available();
        if available == 0 {
            if self.input.is_finished() {
                self.finish();
            }
            return work;
        }
        // At most one vector per event: room for the batch downstream bounds the batch.
        let room = self.out.free().min(self.buf.len());
        if room == 0 {
            self.out.note_stall();
            return work;
        }
        let t0 = self.clock.raw();
        let n = self.input.recv(&mut self.buf[..room.min(available)]);
        let mut k = 0;
        let lane = &mut self.lane;
        for ev in &self.buf[..n] {
            self.rec.queue(t0.saturating_sub(ev.enqueue_ticks));
            if self
                .engine
                .on_event(ev, &mut self.ticks[k], &mut |id, bar| {
                    Self::offer_bar(lane, id, bar, t0)
                })
            {
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
        work + n
    }

    fn is_done(&self) -> bool {
        self.done && self.lane_closed
    }
}

/// Counters of a stage that runs a model engine, handed over once it has finished (the duty
/// cycle itself never takes the lock).
#[derive(Debug, Default)]
pub struct ModelStats<C> {
    last: Mutex<Option<C>>,
}

impl<C: Copy> ModelStats<C> {
    /// The counters, once the stage has finished.
    pub fn last(&self) -> Option<C> {
        self.last.lock().ok().and_then(|c| *c)
    }

    pub(crate) fn set(&self, c: C) {
        // Taken once, when the stage finishes.
        if let Ok(mut l) = self.last.lock() {
            *l = Some(c);
        }
    }
}

/// Inference: runs the regime model, its stability filter and the scoring model on every
/// feature vector, attaches the latest slow-lane forecast, and passes the vector on.
pub struct InferenceStage {
    input: Receiver<Tick>,
    out: Sender<Tick>,
    forecasts: Option<Receiver<Forecast>>,
    swaps: Option<SwapPort>,
    engine: InferenceEngine,
    buf: Vec<Tick>,
    fbuf: Vec<Forecast>,
    clock: quanta::Clock,
    rec: LatencyRecorder,
    stats: Arc<ModelStats<InferenceCounts>>,
    shadow: Option<crate::shadow::ShadowTap>,
    main_closed: bool,
    done: bool,
}

impl std::fmt::Debug for InferenceStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceStage").finish_non_exhaustive()
    }
}

impl InferenceStage {
    /// An inference stage running `engine`, taking forecasts from `forecasts` and model updates
    /// from `swaps`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: Receiver<Tick>,
        out: Sender<Tick>,
        forecasts: Option<Receiver<Forecast>>,
        swaps: Option<SwapPort>,
        engine: InferenceEngine,
        batch: usize,
        clock: quanta::Clock,
        rec: LatencyRecorder,
        stats: Arc<ModelStats<InferenceCounts>>,
    ) -> Self {
        Self {
            input,
            out,
            forecasts,
            swaps,
            engine,
            buf: vec![Tick::default(); batch.max(1)],
            fbuf: vec![Forecast::default(); 64],
            clock,
            rec,
            stats,
            shadow: None,
            main_closed: false,
            done: false,
        }
    }

    /// Copies every scored batch onto `tap`'s lossy link while a shadow candidate is set.
    pub fn with_shadow(mut self, tap: Option<crate::shadow::ShadowTap>) -> Self {
        self.shadow = tap;
        self
    }
}

impl Stage for InferenceStage {
    fn role_name(&self) -> &str {
        "inference"
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        self.buf.fill(Tick::default());
        self.fbuf.fill(Forecast::default());
        Ok(())
    }

    #[inline]
    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        let mut work = 0;
        // At most one model update per cycle, between two batches: every vector is handled by
        // exactly one version.
        if let Some(port) = &mut self.swaps
            && let Some(mut update) = port.next()
        {
            self.engine.apply(&mut update);
            port.retire(update);
            work += 1;
        }
        if let Some(rx) = &mut self.forecasts {
            let n = rx.recv(&mut self.fbuf);
            for f in &self.fbuf[..n] {
                self.engine.on_forecast(f);
            }
            work += n;
        }
        if let Some(tap) = &mut self.shadow
            && tap.tx.has_overflow()
        {
            work += tap.tx.flush(self.clock.raw());
        }
        let available = self.input.available();
        if available == 0 {
            if self.input.is_finished() {
                if !self.main_closed {
                    self.main_closed = true;
                    self.out.close();
                    self.rec.finish();
                    self.stats.set(self.engine.counts());
                }
                // The shadow's link closes once what it holds back has gone in (the shadow
                // stage drains it; nothing is dropped here without being counted).
                match &self.shadow {
                    Some(tap) if tap.tx.has_overflow() => return work,
                    Some(tap) => tap.tx.close(),
                    None => {}
                }
                self.done = true;
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
        for t in &mut self.buf[..n] {
            self.rec.queue(t0.saturating_sub(t.enqueue_ticks));
            self.engine.on_tick(t);
        }
        let t1 = self.clock.raw();
        self.rec.service(t1.saturating_sub(t0), n);
        // Relaxed: the control side sets the flag; which batch is copied first does not matter.
        if let Some(tap) = &mut self.shadow
            && tap.active.load(std::sync::atomic::Ordering::Relaxed)
        {
            tap.tx.send(&mut self.buf[..n], t1);
        }
        self.out.send(&mut self.buf[..n], t1);
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
    tally: FeatureTally,
    health: Arc<HealthCounters>,
    tally_ticks: u64,
    last_tally_ticks: u64,
    buf: Vec<Tick>,
    clock: quanta::Clock,
    rec: LatencyRecorder,
    published: Arc<AtomicU64>,
    count: u64,
    heartbeat_base: (u64, u64),
    last_heartbeat_ticks: u64,
    heartbeat_ticks: u64,
    /// In-process consumers of what is published (see [`crate::builder`]).
    taps: crate::builder::Taps,
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
        health: Arc<HealthCounters>,
    ) -> Self {
        let heartbeat_ticks = clock_ticks_per_ms(&clock) * 50;
        let base = (clock.raw(), tickpipe_shm::mapped::unix_now_ns());
        Self {
            input,
            writer,
            tally: FeatureTally::default(),
            health,
            tally_ticks: clock_ticks_per_ms(&clock),
            last_tally_ticks: 0,
            buf: vec![Tick::default(); batch.max(1)],
            clock,
            rec,
            published,
            count: 0,
            heartbeat_base: base,
            last_heartbeat_ticks: base.0,
            heartbeat_ticks,
            taps: crate::builder::Taps::default(),
            done: false,
        }
    }

    /// Hands every published tick or signal to `taps` as well.
    pub(crate) fn with_taps(mut self, taps: crate::builder::Taps) -> Self {
        self.taps = taps;
        self
    }

    /// The signal for one book state: its identity, the mid price, the models' outputs and the
    /// health state (`alert`, `kill`) current for this batch.
    #[inline]
    fn signal(t: &Tick, alert: u8, kill: u8) -> Signal {
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
            scores: t.scores,
            forecast: t.forecast,
            confidence: t.confidence,
            forecast_age_ns: t.forecast_age_ns,
            regime: t.regime,
            stable_regime: t.stable_regime,
            n_scores: t.n_scores,
            scoring_version: t.scoring_version,
            regime_version: t.regime_version,
            alert,
            flags: t.flags,
            model_flags: t.model_flags,
            kill,
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
        self.taps.on_start()
    }

    #[inline]
    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        // In-process taps take back-pressure: no more input than every tap has room for.
        let room = self.taps.room().min(self.buf.len());
        if room == 0 {
            self.taps.note_stall();
            return 0;
        }
        let n = self.input.recv(&mut self.buf[..room]);
        if n == 0 {
            if self.input.is_finished() {
                self.done = true;
                self.tally.publish(&self.health);
                self.writer.finish();
                self.taps.close();
                self.rec.finish();
            }
            return 0;
        }
        let t0 = self.clock.raw();
        // Relaxed: health state sampled once per batch (see `health::monitor`).
        let kill = self.health.kill.load(Ordering::Relaxed);
        let alert = self.health.alert.load(Ordering::Relaxed);
        for (i, ev) in self.buf[..n].iter().enumerate() {
            self.tally.count(&ev.values, ev.publish_ticks);
            let signal = Self::signal(ev, alert, kill);
            // Signals are fixed-size and far below the ring's max payload: publish cannot fail.
            let _ = self.writer.publish(&signal.encode(), t0);
            self.taps.on_signal(i, &signal);
        }
        let t1 = self.clock.raw();
        if t1.wrapping_sub(self.last_tally_ticks) >= self.tally_ticks {
            // The monitor samples at 10 Hz: totals at most a millisecond old are plenty.
            self.last_tally_ticks = t1;
            self.tally.publish(&self.health);
        }
        self.count += n as u64;
        // Relaxed: a counter.
        self.published.store(self.count, Ordering::Relaxed);
        self.rec.service(t1.saturating_sub(t0), n);
        for ev in &self.buf[..n] {
            self.rec.queue(t0.saturating_sub(ev.enqueue_ticks));
            self.rec.e2e(t1.saturating_sub(ev.publish_ticks));
        }
        self.taps.send(&mut self.buf[..n], t1);
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

/// The slow lane: takes the bars its conflating or dropping link delivers, runs the forecaster
/// (if a model is configured; it is loaded in `on_start`, on the lane's own thread) and sends
/// each forecast back to inference over a lossy link. `work_ns` of artificial busy time per bar
/// stands in for a model in tests and profiling.
pub struct ForecastStage {
    input: Receiver<BarMsg>,
    out: Option<Sender<Forecast>>,
    model: Option<(std::path::PathBuf, usize)>,
    engine: Option<ForecastEngine>,
    buf: Vec<BarMsg>,
    clock: quanta::Clock,
    work_ticks: u64,
    rec: LatencyRecorder,
    processed: Arc<AtomicU64>,
    stats: Arc<ModelStats<ForecastCounts>>,
    count: u64,
    done: bool,
}

impl std::fmt::Debug for ForecastStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForecastStage").finish_non_exhaustive()
    }
}

impl ForecastStage {
    /// A lane running the model at `model.0` with `model.1` instrument states (if any), plus
    /// `work_ns` of busy time per bar.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        input: Receiver<BarMsg>,
        out: Option<Sender<Forecast>>,
        model: Option<(std::path::PathBuf, usize)>,
        clock: quanta::Clock,
        work_ns: u64,
        rec: LatencyRecorder,
        processed: Arc<AtomicU64>,
        stats: Arc<ModelStats<ForecastCounts>>,
    ) -> Self {
        let work_ticks = (clock_ticks_per_ms(&clock) as u128 * work_ns as u128 / 1_000_000) as u64;
        Self {
            input,
            out,
            model,
            engine: None,
            buf: vec![BarMsg::default(); 1],
            clock,
            work_ticks,
            rec,
            processed,
            stats,
            count: 0,
            done: false,
        }
    }
}

impl Stage for ForecastStage {
    fn role_name(&self) -> &str {
        "forecast"
    }

    fn on_start(&mut self) -> Result<(), PipelineError> {
        if let Some((path, n)) = &self.model {
            self.engine = Some(ForecastEngine::load(path, *n)?);
        }
        Ok(())
    }

    fn do_work(&mut self) -> usize {
        if self.done {
            return 0;
        }
        let mut work = 0;
        if let Some(out) = &mut self.out
            && out.has_overflow()
        {
            work += out.flush(self.clock.raw());
        }
        // One bar at a time: a slow consumer takes only what it can work on, so its link (not a
        // private batch) is where the backlog is conflated.
        let n = self.input.recv(&mut self.buf[..1]);
        if n == 0 {
            if self.input.is_finished() && !self.out.as_ref().is_some_and(|o| o.has_overflow()) {
                self.done = true;
                if let Some(out) = &self.out {
                    out.close();
                }
                self.rec.finish();
                if let Some(e) = &self.engine {
                    self.stats.set(e.counts());
                }
            }
            return work;
        }
        let t0 = self.clock.raw();
        self.rec
            .queue(t0.saturating_sub(self.buf[0].enqueue_ticks()));
        if let Some(engine) = &mut self.engine
            && let Some(f) = engine.on_bar(&self.buf[0])
            && let Some(out) = &mut self.out
        {
            out.send(&mut [f], self.clock.raw());
        }
        while self.clock.raw().wrapping_sub(t0) < self.work_ticks {
            std::hint::spin_loop();
        }
        let t1 = self.clock.raw();
        self.rec.service(t1.saturating_sub(t0), 1);
        self.count += 1;
        // Relaxed: a counter.
        self.processed.store(self.count, Ordering::Relaxed);
        self.rec.maybe_ship(t1);
        work + 1
    }

    fn is_done(&self) -> bool {
        self.done
    }
}
