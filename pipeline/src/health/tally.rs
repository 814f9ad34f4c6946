//! Hot-path counting: what the health stage does per feature vector.
//!
//! [`FeatureTally`] lives on the health stage's thread. Per vector it adds, for every feature,
//! whether the value is zero, whether it is non-finite, the length of the current run of zeros
//! and whether the value sits in a run longer than [`LONG_RUN`]: branch-free adds into plain
//! arrays.
//! Once per batch it stores the running totals into [`HealthCounters`] with relaxed atomic
//! stores (one writer; the monitor reads them at 10 Hz and only ever takes differences).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::features::N_FEATURES;

/// A run of zeros longer than this many consecutive values costs a feature 30 points.
pub const LONG_RUN: u32 = 10;

/// The health stage's running totals (thread-local, no atomics). Per vector it only touches
/// `u32` lanes (branch-free loops the compiler vectorises); [`FeatureTally::publish`] folds them
/// into `u64` totals once a millisecond, far below `u32` overflow.
#[derive(Debug, Clone)]
pub struct FeatureTally {
    vectors: u64,
    zeros: [u64; N_FEATURES],
    nonfinite: [u64; N_FEATURES],
    long_runs: [u64; N_FEATURES],
    pending: u32,
    p_zeros: [u32; N_FEATURES],
    p_nonfinite: [u32; N_FEATURES],
    p_long: [u32; N_FEATURES],
    runs: [u32; N_FEATURES],
    finite: [u32; N_FEATURES],
    newest_publish_ticks: u64,
}

impl Default for FeatureTally {
    fn default() -> Self {
        Self {
            vectors: 0,
            zeros: [0; N_FEATURES],
            nonfinite: [0; N_FEATURES],
            long_runs: [0; N_FEATURES],
            pending: 0,
            p_zeros: [0; N_FEATURES],
            p_nonfinite: [0; N_FEATURES],
            p_long: [0; N_FEATURES],
            runs: [0; N_FEATURES],
            finite: [0; N_FEATURES],
            newest_publish_ticks: 0,
        }
    }
}

impl FeatureTally {
    /// Counts one feature vector; `publish_ticks` is when the market-data writer published the
    /// event behind it (the freshness of the data).
    #[inline]
    pub fn count(&mut self, values: &[f64; N_FEATURES], publish_ticks: u64) {
        self.pending += 1;
        self.newest_publish_ticks = self.newest_publish_ticks.max(publish_ticks);
        for (i, &v) in values.iter().enumerate() {
            let zero = u32::from(v == 0.0);
            // Exponent all ones: NaN or infinite (the bit test vectorises; `is_finite` may not).
            let nonfinite = u32::from(v.to_bits() & 0x7FF0_0000_0000_0000 == 0x7FF0_0000_0000_0000);
            self.p_zeros[i] += zero;
            self.p_nonfinite[i] += nonfinite;
            self.finite[i] |= nonfinite ^ 1;
            let run = (self.runs[i] + 1) * zero;
            self.runs[i] = run;
            self.p_long[i] += u32::from(run > LONG_RUN);
        }
    }

    /// Folds the per-vector lanes into the totals and stores them where the monitor reads them.
    #[inline]
    pub fn publish(&mut self, to: &HealthCounters) {
        self.vectors += u64::from(self.pending);
        self.pending = 0;
        let mut finite_seen = 0u32;
        for i in 0..N_FEATURES {
            self.zeros[i] += u64::from(std::mem::take(&mut self.p_zeros[i]));
            self.nonfinite[i] += u64::from(std::mem::take(&mut self.p_nonfinite[i]));
            self.long_runs[i] += u64::from(std::mem::take(&mut self.p_long[i]));
            finite_seen |= (self.finite[i] & 1) << i;
        }
        // Relaxed throughout: each value is a monitoring counter with one writer; the monitor
        // takes differences between its own samples and no other data hangs on them.
        for i in 0..N_FEATURES {
            to.zeros[i].store(self.zeros[i], Ordering::Relaxed);
            to.nonfinite[i].store(self.nonfinite[i], Ordering::Relaxed);
            to.long_runs[i].store(self.long_runs[i], Ordering::Relaxed);
            to.runs[i].store(self.runs[i], Ordering::Relaxed);
        }
        to.newest_publish_ticks
            .store(self.newest_publish_ticks, Ordering::Relaxed);
        to.finite_seen.store(finite_seen, Ordering::Relaxed);
        to.vectors.store(self.vectors, Ordering::Relaxed);
    }

    /// Vectors counted.
    pub fn vectors(&self) -> u64 {
        self.vectors + u64::from(self.pending)
    }
}

/// Totals shared between the health stage (writer) and the monitor (reader), plus the
/// kill-switch and alert state the monitor hands back for the stage to stamp on signals.
#[derive(Debug)]
pub struct HealthCounters {
    /// Feature vectors counted.
    pub vectors: AtomicU64,
    /// Zero values per feature.
    pub zeros: [AtomicU64; N_FEATURES],
    /// NaN or infinite values per feature.
    pub nonfinite: [AtomicU64; N_FEATURES],
    /// Zeros that sit past the first [`LONG_RUN`] of a run, per feature.
    pub long_runs: [AtomicU64; N_FEATURES],
    /// Current run of zeros per feature.
    pub runs: [AtomicU32; N_FEATURES],
    /// Writer publish time (raw clock ticks) of the newest event seen.
    pub newest_publish_ticks: AtomicU64,
    /// Bit `i` set once feature `i` has had a finite value.
    pub finite_seen: AtomicU32,
    /// Kill switch as stamped on signals: 0 released, 1 engaged.
    pub kill: AtomicU8,
    /// Alert level as stamped on signals ([`crate::health::AlertLevel`] as a byte).
    pub alert: AtomicU8,
}

impl Default for HealthCounters {
    fn default() -> Self {
        Self {
            vectors: AtomicU64::new(0),
            zeros: std::array::from_fn(|_| AtomicU64::new(0)),
            nonfinite: std::array::from_fn(|_| AtomicU64::new(0)),
            long_runs: std::array::from_fn(|_| AtomicU64::new(0)),
            runs: std::array::from_fn(|_| AtomicU32::new(0)),
            newest_publish_ticks: AtomicU64::new(0),
            finite_seen: AtomicU32::new(0),
            kill: AtomicU8::new(0),
            alert: AtomicU8::new(0),
        }
    }
}

/// A copy of [`HealthCounters`]' feature totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureTotals {
    /// Feature vectors counted.
    pub vectors: u64,
    /// Zero values per feature.
    pub zeros: [u64; N_FEATURES],
    /// Non-finite values per feature.
    pub nonfinite: [u64; N_FEATURES],
    /// Zeros past the first [`LONG_RUN`] of a run, per feature.
    pub long_runs: [u64; N_FEATURES],
    /// Current run of zeros per feature.
    pub runs: [u32; N_FEATURES],
    /// Bit `i` set once feature `i` has had a finite value.
    pub finite_seen: u32,
}

impl Default for FeatureTotals {
    fn default() -> Self {
        Self {
            vectors: 0,
            zeros: [0; N_FEATURES],
            nonfinite: [0; N_FEATURES],
            long_runs: [0; N_FEATURES],
            runs: [0; N_FEATURES],
            finite_seen: 0,
        }
    }
}

impl HealthCounters {
    /// The feature totals, now. The vector count is read first, so every per-feature total is
    /// at least as new as it (totals only grow).
    pub fn feature_totals(&self) -> FeatureTotals {
        // Relaxed: see `FeatureTally::publish`.
        let vectors = self.vectors.load(Ordering::Relaxed);
        FeatureTotals {
            vectors,
            zeros: std::array::from_fn(|i| self.zeros[i].load(Ordering::Relaxed)),
            nonfinite: std::array::from_fn(|i| self.nonfinite[i].load(Ordering::Relaxed)),
            long_runs: std::array::from_fn(|i| self.long_runs[i].load(Ordering::Relaxed)),
            runs: std::array::from_fn(|i| self.runs[i].load(Ordering::Relaxed)),
            finite_seen: self.finite_seen.load(Ordering::Relaxed),
        }
    }

    /// Whether the kill switch is engaged (as stamped on signals).
    #[inline]
    pub fn kill_engaged(&self) -> bool {
        // Relaxed: a flag sampled once per batch; signals carry whatever was current.
        self.kill.load(Ordering::Relaxed) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_zeros_nonfinite_and_long_runs() {
        let mut t = FeatureTally::default();
        let mut v = [1.0; N_FEATURES];
        v[5] = f64::NEG_INFINITY;
        v[0] = 0.0;
        v[1] = f64::NAN;
        v[2] = f64::INFINITY;
        for i in 0..25 {
            v[3] = if i == 12 { 1.0 } else { 0.0 };
            t.count(&v, i);
        }
        let c = HealthCounters::default();
        t.publish(&c);
        let s = c.feature_totals();
        assert_eq!(s.vectors, 25);
        assert_eq!(s.zeros[0], 25);
        assert_eq!(s.runs[0], 25);
        assert_eq!(s.long_runs[0], 15);
        assert_eq!(s.nonfinite[1], 25);
        assert_eq!(s.nonfinite[2], 25);
        assert_eq!(s.zeros[1], 0);
        // Two runs of feature 3: 12 zeros, then 12 zeros: two values of each past the 10th.
        assert_eq!(s.zeros[3], 24);
        assert_eq!(s.long_runs[3], 4);
        assert_eq!(s.runs[3], 12);
        assert_eq!(s.zeros[4], 0);
        assert_eq!(s.finite_seen, ((1u32 << N_FEATURES) - 1) & !0b10_0110);
        assert_eq!(s.nonfinite[5], 25);
        // Totals keep growing across publishes.
        t.count(&v, 3);
        t.publish(&c);
        let s = c.feature_totals();
        assert_eq!(
            (s.vectors, s.zeros[0], s.nonfinite[1], s.runs[0]),
            (26, 26, 26, 26)
        );
        assert_eq!(c.newest_publish_ticks.load(Ordering::Relaxed), 24);
    }
}
