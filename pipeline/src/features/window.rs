//! Fixed-capacity sliding windows over time-stamped values, the building blocks of the
//! incremental features.
//!
//! Both structures keep their entries in one ring of power-of-two size (so a slot is a mask, not
//! a division) and address them by a monotone sequence number. Entries arrive with
//! non-decreasing stamps (the feature clock never goes back), so every window's first entry only
//! moves forward and each entry is passed at most once per window: O(1) amortised per entry.
//!
//! - [`SumWindows`] keeps exact integer sums over several nested windows with one ring: one head
//!   per window, a running total of everything pushed and, per window, the total of what has
//!   left it; the window's sum is the difference. Integer sums use wrapping arithmetic, so a
//!   window's sum is exact whenever its true value fits the type, whatever happened before,
//!   and nothing can panic.
//! - [`MidHistory`] keeps the recorded mids for the log-return horizons and the sums of squared
//!   returns for realized variance. Float sums cannot subtract an evicted value without drift,
//!   so each window is a two-stacks sliding aggregation laid over the shared ring: a front part
//!   holding suffix sums (rebuilt when it runs out) and a back part with a plain running sum.
//!   An empty window reads exactly `0.0`.
//!
//! Both remember the earliest clock value at which any window can lose an entry, so the common
//! call, where nothing leaves, costs one comparison.

/// A value that [`SumWindows`] can sum exactly.
pub(crate) trait WindowValue: Copy + Default {
    /// `self += other`, exactly (wrapping).
    fn add(&mut self, other: &Self);
    /// `self -= other`, exactly (wrapping).
    fn sub(&mut self, other: &Self);
}

impl WindowValue for u64 {
    #[inline]
    fn add(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
    #[inline]
    fn sub(&mut self, other: &Self) {
        *self = self.wrapping_sub(*other);
    }
}

impl WindowValue for i64 {
    #[inline]
    fn add(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
    #[inline]
    fn sub(&mut self, other: &Self) {
        *self = self.wrapping_sub(*other);
    }
}

/// Physical ring size for a logical capacity: the next power of two (at least 1).
pub(crate) fn ring_size(capacity: usize) -> usize {
    capacity.max(1).next_power_of_two()
}

/// Exact sums of a stream of `(ts, value)` over `K` windows `(now - width[k], now]`, widths
/// ascending (the last window is the widest and owns the ring's oldest entry).
pub(crate) struct SumWindows<V, const K: usize> {
    ts: Box<[u64]>,
    val: Box<[V]>,
    mask: u64,
    /// Most entries held at once (the logical capacity, not the ring size).
    cap: u64,
    width: [u64; K],
    /// First entry of each window; `head[K - 1]` is the oldest entry held.
    head: [u64; K],
    end: u64,
    /// Sum of everything pushed.
    total: V,
    /// Sum of everything that has left each window.
    gone: [V; K],
    /// No window loses an entry before the clock reaches this (it may be early, never late).
    next_expiry: u64,
}

impl<V: WindowValue, const K: usize> SumWindows<V, K> {
    /// Bytes per ring slot.
    pub(crate) const SLOT_BYTES: usize = size_of::<u64>() + size_of::<V>();

    /// A ring holding at most `capacity` entries (at least 1); `width` ascending and non-zero.
    pub(crate) fn new(capacity: usize, width: [u64; K]) -> Self {
        debug_assert!(width.windows(2).all(|w| w[0] <= w[1]) && width[0] > 0);
        let size = ring_size(capacity);
        Self {
            ts: vec![0; size].into_boxed_slice(),
            val: vec![V::default(); size].into_boxed_slice(),
            mask: size as u64 - 1,
            cap: capacity.max(1) as u64,
            width,
            head: [0; K],
            end: 0,
            total: V::default(),
            gone: [V::default(); K],
            next_expiry: u64::MAX,
        }
    }

    /// Forgets every entry (no allocation).
    pub(crate) fn clear(&mut self) {
        self.head = [0; K];
        self.end = 0;
        self.total = V::default();
        self.gone = [V::default(); K];
        self.next_expiry = u64::MAX;
    }

    #[inline]
    fn slot(&self, seq: u64) -> usize {
        (seq & self.mask) as usize
    }

    /// Drops entries stamped at or before `now - width[k]` from window `k`.
    #[inline]
    pub(crate) fn expire(&mut self, now: u64) {
        if now >= self.next_expiry {
            self.expire_slow(now);
        }
    }

    fn expire_slow(&mut self, now: u64) {
        let mut next = u64::MAX;
        for k in 0..K {
            let cut = now.checked_sub(self.width[k]);
            while self.head[k] < self.end {
                let i = self.slot(self.head[k]);
                if cut.is_none_or(|cut| self.ts[i] > cut) {
                    next = next.min(self.ts[i].saturating_add(self.width[k]));
                    break;
                }
                let v = self.val[i];
                self.gone[k].add(&v);
                self.head[k] += 1;
            }
        }
        self.next_expiry = next;
    }

    /// Adds `v` stamped `now` (not before the newest entry; call [`Self::expire`] first).
    /// Returns `true` when the ring was full and its oldest entry was dropped early.
    #[inline]
    pub(crate) fn push(&mut self, now: u64, v: V) -> bool {
        let oldest = self.head[K - 1];
        if self.end > oldest {
            // Same stamp as the newest entry: merge. That entry is inside every window (its
            // stamp is `now` and widths are non-zero), so every sum already counts it.
            let last = self.slot(self.end - 1);
            if self.ts[last] == now {
                self.val[last].add(&v);
                self.total.add(&v);
                return false;
            }
        }
        let mut overflow = false;
        if self.end - oldest >= self.cap {
            let i = self.slot(oldest);
            let old = self.val[i];
            for k in 0..K {
                if self.head[k] == oldest {
                    self.gone[k].add(&old);
                    self.head[k] += 1;
                }
            }
            overflow = true;
        }
        let i = self.slot(self.end);
        self.ts[i] = now;
        self.val[i] = v;
        self.end += 1;
        self.total.add(&v);
        // The narrowest window drops the new entry first.
        self.next_expiry = self.next_expiry.min(now.saturating_add(self.width[0]));
        overflow
    }

    /// The sum over window `k`.
    #[inline]
    pub(crate) fn sum(&self, k: usize) -> V {
        let mut s = self.total;
        s.sub(&self.gone[k]);
        s
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.end - self.head[K - 1]
    }
}

/// Number of horizons of [`MidHistory`].
pub(crate) const MID_WINDOWS: usize = 3;

/// Recorded mids (as `bid + ask`, fixed point) with the squared log return from the previous
/// recorded mid, over [`MID_WINDOWS`] nested horizons `width` (ascending).
///
/// For horizon `k`, `head[k]` is the first entry stamped after `now - width[k]`: the entries
/// from there on form the realized-variance window, and the entry just before it (when still
/// held) is the last mid at or before `now - width[k]`, the base of the log return.
pub(crate) struct MidHistory {
    ts: Box<[u64]>,
    s: Box<[i64]>,
    rsq: Box<[f64]>,
    /// Suffix sums of `rsq` of each window's front part.
    agg: Box<[[f64; MID_WINDOWS]]>,
    mask: u64,
    cap: u64,
    width: [u64; MID_WINDOWS],
    /// Oldest entry held: the base of the widest horizon, or its first entry if it has none.
    start: u64,
    end: u64,
    head: [u64; MID_WINDOWS],
    /// `[head, split)` is the front part (sums in `agg`), `[split, end)` the back part.
    split: [u64; MID_WINDOWS],
    /// Sum of `rsq` over the back part; reset to exactly 0 at every rebuild.
    back: [f64; MID_WINDOWS],
    /// No horizon moves before the clock reaches this (it may be early, never late).
    next_expiry: u64,
}

impl MidHistory {
    /// Bytes per ring slot.
    pub(crate) const SLOT_BYTES: usize =
        size_of::<u64>() + size_of::<i64>() + size_of::<f64>() + size_of::<[f64; MID_WINDOWS]>();

    /// A ring holding at most `capacity` entries (at least 1); `width` ascending and non-zero.
    pub(crate) fn new(capacity: usize, width: [u64; MID_WINDOWS]) -> Self {
        debug_assert!(width.windows(2).all(|w| w[0] <= w[1]) && width[0] > 0);
        let size = ring_size(capacity);
        Self {
            ts: vec![0; size].into_boxed_slice(),
            s: vec![0; size].into_boxed_slice(),
            rsq: vec![0.0; size].into_boxed_slice(),
            agg: vec![[0.0; MID_WINDOWS]; size].into_boxed_slice(),
            mask: size as u64 - 1,
            cap: capacity.max(1) as u64,
            width,
            start: 0,
            end: 0,
            head: [0; MID_WINDOWS],
            split: [0; MID_WINDOWS],
            back: [0.0; MID_WINDOWS],
            next_expiry: u64::MAX,
        }
    }

    /// Forgets every entry (no allocation).
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.head = [0; MID_WINDOWS];
        self.split = [0; MID_WINDOWS];
        self.back = [0.0; MID_WINDOWS];
        self.next_expiry = u64::MAX;
    }

    #[inline]
    fn slot(&self, seq: u64) -> usize {
        (seq & self.mask) as usize
    }

    /// Takes window `k`'s first entry out of it.
    #[inline]
    fn pop_front(&mut self, k: usize) {
        if self.head[k] == self.split[k] {
            self.rebuild(k);
        }
        self.head[k] += 1;
    }

    /// Turns window `k`'s back part into its front part (suffix sums, newest to oldest).
    #[cold]
    fn rebuild(&mut self, k: usize) {
        let mut acc = 0.0;
        let mut seq = self.end;
        while seq > self.head[k] {
            seq -= 1;
            let i = self.slot(seq);
            acc += self.rsq[i];
            self.agg[i][k] = acc;
        }
        self.split[k] = self.end;
        self.back[k] = 0.0;
    }

    /// Moves every horizon to `now`.
    #[inline]
    pub(crate) fn expire(&mut self, now: u64) {
        if now >= self.next_expiry {
            self.expire_slow(now);
        }
    }

    fn expire_slow(&mut self, now: u64) {
        let mut next = u64::MAX;
        for k in 0..MID_WINDOWS {
            let cut = now.checked_sub(self.width[k]);
            while self.head[k] < self.end {
                let ts = self.ts[self.slot(self.head[k])];
                if cut.is_none_or(|cut| ts > cut) {
                    next = next.min(ts.saturating_add(self.width[k]));
                    break;
                }
                self.pop_front(k);
            }
        }
        self.next_expiry = next;
        // Keep the widest horizon's base; everything before it is no longer needed.
        let widest = self.head[MID_WINDOWS - 1];
        if widest > self.start + 1 {
            self.start = widest - 1;
        }
    }

    /// Records mid `s` stamped `now` with squared return `rsq` (call [`Self::expire`] first).
    /// Returns `true` when the ring was full and its oldest entry was dropped early.
    #[inline]
    pub(crate) fn push(&mut self, now: u64, s: i64, rsq: f64) -> bool {
        let mut overflow = false;
        if self.end - self.start >= self.cap {
            for k in 0..MID_WINDOWS {
                if self.head[k] == self.start {
                    self.pop_front(k);
                }
            }
            self.start += 1;
            overflow = true;
        }
        let i = self.slot(self.end);
        self.ts[i] = now;
        self.s[i] = s;
        self.rsq[i] = rsq;
        self.end += 1;
        for b in &mut self.back {
            *b += rsq;
        }
        self.next_expiry = self.next_expiry.min(now.saturating_add(self.width[0]));
        overflow
    }

    /// Sum of squared returns stamped inside horizon `k`.
    #[inline]
    pub(crate) fn rv(&self, k: usize) -> f64 {
        let front = if self.head[k] < self.split[k] {
            self.agg[self.slot(self.head[k])][k]
        } else {
            0.0
        };
        front + self.back[k]
    }

    /// The last recorded mid stamped at or before `now - width[k]`, if still held.
    #[inline]
    pub(crate) fn base(&self, k: usize) -> Option<i64> {
        (self.head[k] > self.start).then(|| self.s[self.slot(self.head[k] - 1)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn sums_follow_half_open_windows() {
        let mut w = SumWindows::<i64, 2>::new(16, [10, 100]);
        for (ts, v) in [(0, 1), (5, 2), (10, 4), (10, 8), (50, 16)] {
            w.expire(ts);
            assert!(!w.push(ts, v));
        }
        // (40, 50] and (-50, 50]
        assert_eq!(w.sum(0), 16);
        assert_eq!(w.sum(1), 31);
        // (0, 100]: the entry stamped 0 has left.
        w.expire(100);
        assert_eq!(w.sum(0), 0);
        assert_eq!(w.sum(1), 30);
        w.expire(110);
        assert_eq!(w.sum(1), 16);
        w.expire(150);
        assert_eq!((w.sum(0), w.sum(1), w.len()), (0, 0, 0));
    }

    #[test]
    fn full_ring_drops_oldest_and_reports() {
        let mut w = SumWindows::<u64, 1>::new(3, [1_000]);
        let mut overflows = 0;
        for ts in 0..10 {
            w.expire(ts);
            overflows += u64::from(w.push(ts, 1));
        }
        assert_eq!(overflows, 7);
        assert_eq!(w.sum(0), 3);
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn mid_history_bases_and_rv() {
        let mut h = MidHistory::new(8, [10, 20, 30]);
        for (ts, s, r) in [
            (0, 100, 0.0),
            (10, 101, 1.0),
            (15, 102, 2.0),
            (25, 103, 4.0),
        ] {
            h.expire(ts);
            assert!(!h.push(ts, s, r));
        }
        h.expire(25);
        // Horizon 10: cut 15 -> base 102, window (15, 25] = {4}.
        assert_eq!(h.base(0), Some(102));
        assert_eq!(h.rv(0), 4.0);
        // Horizon 20: cut 5 -> base 100, window {1, 2, 4}.
        assert_eq!(h.base(1), Some(100));
        assert_eq!(h.rv(1), 7.0);
        // Horizon 30: no cut yet -> no base, window everything.
        assert_eq!(h.base(2), None);
        assert_eq!(h.rv(2), 7.0);
        h.expire(1_000);
        for k in 0..MID_WINDOWS {
            assert_eq!(h.base(k), Some(103));
            assert_eq!(h.rv(k).to_bits(), 0.0f64.to_bits());
        }
    }

    fn near(a: f64, b: f64) -> bool {
        a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    proptest! {
        /// Ring vs `VecDeque` of everything in the window, with a capacity that never fills.
        #[test]
        fn sum_windows_match_deque(steps in prop::collection::vec((0u64..40, -50i64..50), 0..300)) {
            let widths = [10u64, 35, 90];
            let mut w = SumWindows::<i64, 3>::new(1024, widths);
            let mut all: VecDeque<(u64, i64)> = VecDeque::new();
            let mut now = 0;
            for (dt, v) in steps {
                now += dt;
                w.expire(now);
                prop_assert!(!w.push(now, v));
                all.push_back((now, v));
                for (k, width) in widths.iter().enumerate() {
                    let want: i64 = all
                        .iter()
                        .filter(|(ts, _)| i128::from(*ts) > i128::from(now) - i128::from(*width))
                        .map(|(_, v)| v)
                        .sum();
                    prop_assert_eq!(w.sum(k), want);
                }
            }
        }

        #[test]
        fn mid_history_matches_recompute(
            steps in prop::collection::vec((0u64..25, 1i64..1000, 0.0f64..4.0), 0..300),
        ) {
            let widths = [10u64, 30, 60];
            let mut h = MidHistory::new(1024, widths);
            let mut all: Vec<(u64, i64, f64)> = Vec::new();
            let mut now = 0;
            for (dt, s, r) in steps {
                now += dt;
                h.expire(now);
                prop_assert!(!h.push(now, s, r));
                all.push((now, s, r));
                for (k, width) in widths.iter().enumerate() {
                    let cut = i128::from(now) - i128::from(*width);
                    let want_rv: f64 = all
                        .iter()
                        .filter(|(ts, _, _)| i128::from(*ts) > cut)
                        .map(|(_, _, r)| r)
                        .sum();
                    let want_base = all
                        .iter()
                        .rev()
                        .find(|(ts, _, _)| i128::from(*ts) <= cut)
                        .map(|(_, s, _)| *s);
                    prop_assert!(near(h.rv(k), want_rv), "rv {} vs {}", h.rv(k), want_rv);
                    prop_assert_eq!(h.base(k), want_base);
                }
            }
        }
    }
}
