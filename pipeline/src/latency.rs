//! Per-stage latency recording without allocation or locks, and the reporter that collects it.
//!
//! Every stage owns a [`LatencyRecorder`]: fixed-bounds HDR histograms of raw clock ticks
//! (queue wait, service time, and for the last stage end to end). At an interval the stage
//! swaps its histogram set for a cleared spare and hands the full one to the [`Reporter`] over
//! an SPSC ring; the reporter merges it and returns it cleared over a second ring. The sets
//! travel as `Box`es (a pointer move), all allocated before the stage starts, so the hot path
//! never allocates, locks or waits: when no spare is back yet, the stage keeps recording into
//! the set it has. Ticks become nanoseconds only when reported.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use crate::PipelineError;
use crate::stage::Stage;

/// Largest value a histogram tracks, in ticks (about 30 s at 3 GHz). Larger values are
/// recorded as this value and counted in [`Hists::overflows`].
pub const HIGHEST_TICKS: u64 = 100_000_000_000;
const SIGFIG: u8 = 3;
/// Histogram sets per stage: one recording, two in flight or spare.
const SETS_PER_STAGE: usize = 3;

/// One stage's histograms (raw ticks).
#[derive(Debug, Clone)]
pub struct Hists {
    /// Time a message waited on the stage's input before the stage took it.
    pub queue: Histogram<u64>,
    /// Time the stage spent on the batch that held the message.
    pub service: Histogram<u64>,
    /// Ring publish to signal published (the last stage only).
    pub e2e: Histogram<u64>,
    /// Values above [`HIGHEST_TICKS`], recorded clamped.
    pub overflows: u64,
    /// Messages the stage handled.
    pub events: u64,
    /// The stage's final set.
    pub last: bool,
}

impl Hists {
    /// Empty histograms with fixed bounds.
    ///
    /// # Errors
    /// Never in practice (the bounds are constants); reported rather than unwrapped.
    pub fn new() -> Result<Self, PipelineError> {
        let h = || {
            Histogram::new_with_bounds(1, HIGHEST_TICKS, SIGFIG)
                .map_err(|e| PipelineError::Internal(format!("latency histogram: {e}")))
        };
        Ok(Self {
            queue: h()?,
            service: h()?,
            e2e: h()?,
            overflows: 0,
            events: 0,
            last: false,
        })
    }

    fn clear(&mut self) {
        self.queue.reset();
        self.service.reset();
        self.e2e.reset();
        self.overflows = 0;
        self.events = 0;
        self.last = false;
    }

    fn merge(&mut self, other: &Hists) -> Result<(), PipelineError> {
        let add = |a: &mut Histogram<u64>, b: &Histogram<u64>| {
            a.add(b)
                .map_err(|e| PipelineError::Internal(format!("merging histograms: {e}")))
        };
        add(&mut self.queue, &other.queue)?;
        add(&mut self.service, &other.service)?;
        add(&mut self.e2e, &other.e2e)?;
        self.overflows += other.overflows;
        self.events += other.events;
        Ok(())
    }
}

/// The stage side: records into fixed histograms and ships them at an interval. After
/// [`LatencyRecorder::finish`] recording is a no-op.
pub struct LatencyRecorder {
    current: Option<Box<Hists>>,
    full: rtrb::Producer<Box<Hists>>,
    spares: rtrb::Consumer<Box<Hists>>,
    interval_ticks: u64,
    last_ship_ticks: u64,
}

impl std::fmt::Debug for LatencyRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyRecorder").finish_non_exhaustive()
    }
}

impl LatencyRecorder {
    /// Records one message's queue wait.
    #[inline]
    pub fn queue(&mut self, ticks: u64) {
        if let Some(s) = self.current.as_deref_mut() {
            let v = clamp(s, ticks);
            s.queue.saturating_record(v);
            s.events += 1;
        }
    }

    /// Records the service time of a batch of `n` messages (once per message).
    #[inline]
    pub fn service(&mut self, ticks: u64, n: usize) {
        if let Some(s) = self.current.as_deref_mut() {
            let v = clamp(s, ticks);
            s.service.saturating_record_n(v, n as u64);
        }
    }

    /// Records one message's end-to-end latency.
    #[inline]
    pub fn e2e(&mut self, ticks: u64) {
        if let Some(s) = self.current.as_deref_mut() {
            let v = clamp(s, ticks);
            s.e2e.saturating_record(v);
        }
    }

    /// Ships the current set if the interval has passed and a cleared spare is back.
    #[inline]
    pub fn maybe_ship(&mut self, now_ticks: u64) {
        if now_ticks.wrapping_sub(self.last_ship_ticks) < self.interval_ticks {
            return;
        }
        self.last_ship_ticks = now_ticks;
        if let Ok(spare) = self.spares.pop()
            && let Some(full) = self.current.replace(spare)
        {
            // Cannot fail: the ring holds every set this stage has.
            let _ = self.full.push(full);
        }
    }

    /// Ships the final set (marked `last`). Nothing records afterwards.
    pub fn finish(&mut self) {
        if let Some(mut set) = self.current.take() {
            set.last = true;
            let _ = self.full.push(set);
        }
    }
}

#[inline]
fn clamp(set: &mut Hists, ticks: u64) -> u64 {
    if ticks > HIGHEST_TICKS {
        set.overflows += 1;
        HIGHEST_TICKS
    } else {
        ticks
    }
}

impl Drop for LatencyRecorder {
    fn drop(&mut self) {
        // A stage dropped without closing still ends its series, so the reporter can finish.
        self.finish();
    }
}

struct Channel {
    name: String,
    full: rtrb::Consumer<Box<Hists>>,
    spares: rtrb::Producer<Box<Hists>>,
    total: Box<Hists>,
    done: bool,
}

/// Totals per stage, in raw ticks.
#[derive(Debug, Clone)]
pub struct StageLatency {
    /// Stage name.
    pub name: String,
    /// Merged histograms.
    pub hists: Hists,
}

/// The p99 of each stage's latest shipped set (one report interval), for the health monitor.
#[derive(Debug)]
pub struct IntervalP99 {
    /// p99 service time per stage, raw ticks ([`crate::config::STAGES`] order).
    pub service: [AtomicU64; crate::config::STAGES.len()],
    /// p99 end to end (the last stage's sets), raw ticks.
    pub e2e: AtomicU64,
    /// Sets merged per stage (a change means a new interval).
    pub sets: [AtomicU64; crate::config::STAGES.len()],
}

impl Default for IntervalP99 {
    fn default() -> Self {
        Self {
            service: std::array::from_fn(|_| AtomicU64::new(0)),
            e2e: AtomicU64::new(0),
            sets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The collecting side: a stage of its own (on a thread of its own, or invoked).
pub struct Reporter {
    interval: Arc<IntervalP99>,
    channels: Vec<Channel>,
    result: Arc<Mutex<Option<Vec<StageLatency>>>>,
    error: Option<PipelineError>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

/// Where the reporter leaves its totals when it closes.
pub type LatencySink = Arc<Mutex<Option<Vec<StageLatency>>>>;

impl Reporter {
    /// An empty reporter; stages register with [`Reporter::recorder`].
    pub fn new() -> (Self, LatencySink) {
        let result: LatencySink = Arc::default();
        (
            Self {
                interval: Arc::default(),
                channels: Vec::new(),
                result: result.clone(),
                error: None,
            },
            result,
        )
    }

    /// Where the reporter leaves each stage's latest interval p99.
    pub fn interval_p99(&self) -> Arc<IntervalP99> {
        self.interval.clone()
    }

    /// A recorder for stage `name`, shipping every `interval_ticks`.
    ///
    /// # Errors
    /// Histogram creation failing.
    pub fn recorder(
        &mut self,
        name: &str,
        interval_ticks: u64,
    ) -> Result<LatencyRecorder, PipelineError> {
        let (full_tx, full_rx) = rtrb::RingBuffer::new(SETS_PER_STAGE);
        let (mut spare_tx, spare_rx) = rtrb::RingBuffer::new(SETS_PER_STAGE);
        for _ in 1..SETS_PER_STAGE {
            let _ = spare_tx.push(Box::new(Hists::new()?));
        }
        self.channels.push(Channel {
            name: name.to_string(),
            full: full_rx,
            spares: spare_tx,
            total: Box::new(Hists::new()?),
            done: false,
        });
        Ok(LatencyRecorder {
            current: Some(Box::new(Hists::new()?)),
            full: full_tx,
            spares: spare_rx,
            interval_ticks,
            last_ship_ticks: 0,
        })
    }
}

impl Stage for Reporter {
    fn role_name(&self) -> &str {
        "reporter"
    }

    fn do_work(&mut self) -> usize {
        let mut work = 0;
        for ch in &mut self.channels {
            while let Ok(mut set) = ch.full.pop() {
                work += 1;
                if let Some(i) = crate::config::STAGES.iter().position(|n| *n == ch.name)
                    && set.events > 0
                {
                    // Relaxed: monitoring values; `sets` tells the monitor a new one is there.
                    let iv = &self.interval;
                    iv.service[i].store(set.service.value_at_quantile(0.99), Ordering::Relaxed);
                    if !set.e2e.is_empty() {
                        iv.e2e
                            .store(set.e2e.value_at_quantile(0.99), Ordering::Relaxed);
                    }
                    iv.sets[i].fetch_add(1, Ordering::Relaxed);
                }
                if let Err(e) = ch.total.merge(&set) {
                    self.error.get_or_insert(e);
                }
                if set.last {
                    ch.done = true;
                }
                set.clear();
                let _ = ch.spares.push(set);
            }
        }
        work
    }

    fn is_done(&self) -> bool {
        self.channels.iter().all(|c| c.done)
    }

    fn on_close(&mut self) {
        self.do_work();
        let totals = self
            .channels
            .iter()
            .map(|c| StageLatency {
                name: c.name.clone(),
                hists: (*c.total).clone(),
            })
            .collect();
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some(totals);
        }
    }
}

/// Converts a histogram of raw ticks into nanoseconds with `clock`'s calibration.
///
/// # Errors
/// Histogram creation failing.
pub fn ticks_to_ns(
    hist: &Histogram<u64>,
    clock: &quanta::Clock,
) -> Result<Histogram<u64>, PipelineError> {
    let mut out =
        Histogram::new_with_bounds(1, clock.delta_as_nanos(0, HIGHEST_TICKS).max(2), SIGFIG)
            .map_err(|e| PipelineError::Internal(format!("latency histogram: {e}")))?;
    for v in hist.iter_recorded() {
        let ns = clock.delta_as_nanos(0, v.value_iterated_to());
        out.saturating_record_n(ns, v.count_at_value());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_cycle_between_stage_and_reporter_and_totals_add_up() {
        let (mut rep, sink) = Reporter::new();
        let mut rec = rep.recorder("s", 10).unwrap();
        let mut shipped_values = 0;
        for t in 0..100u64 {
            rec.queue(t + 1);
            rec.service(5, 2);
            shipped_values += 1;
            rec.maybe_ship(t * 3);
            if t % 7 == 0 {
                rep.do_work();
            }
        }
        rec.e2e(HIGHEST_TICKS * 2);
        rec.finish();
        assert!(!rep.is_done() || rep.channels[0].full.slots() == 0);
        while !rep.is_done() {
            rep.do_work();
        }
        rep.on_close();
        let totals = sink.lock().unwrap().take().unwrap();
        let h = &totals[0].hists;
        assert_eq!(h.queue.len(), shipped_values);
        assert_eq!(h.events, shipped_values);
        assert_eq!(h.service.len(), 200);
        assert_eq!(h.queue.max(), 100);
        assert_eq!(h.overflows, 1);
        assert_eq!(h.e2e.len(), 1);
    }

    #[test]
    fn conversion_keeps_counts() {
        let (clock, _mock) = quanta::Clock::mock();
        let mut h = Histogram::new_with_bounds(1, HIGHEST_TICKS, SIGFIG).unwrap();
        h.record_n(1_000, 5).unwrap();
        h.record(20_000).unwrap();
        let ns = ticks_to_ns(&h, &clock).unwrap();
        assert_eq!(ns.len(), 6);
        assert_eq!(ns.value_at_quantile(0.5), h.value_at_quantile(0.5));
    }
}
