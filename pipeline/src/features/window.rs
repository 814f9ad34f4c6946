//! Fixed-capacity sliding windows over time-stamped entries, the building blocks of the
//! incremental features.
//!
//! Every family of entries (records, trades, OFI, recorded mids) lives in one ring: a
//! power-of-two array addressed by a monotone sequence number, one slot per entry, so that an
//! entry is written once and read once per window, in order. Each time window over a ring
//! keeps the sequence number of its first entry and the clock value at which that entry
//! leaves, so the common call, where nothing leaves, costs one comparison per ring. Entries
//! arrive with non-decreasing stamps (the feature clock never goes back), so a window's first
//! entry only moves forward and each entry is passed once per window: O(1) amortised per entry.
//!
//! What dominates the cost is memory: a window's head reads entries written one window width
//! ago, long out of cache. So the densest rings are packed into one `u64` per entry (the
//! stamp's distance to the previous entry and a 32-bit value), and the mids keep the parts that
//! different work reads in separate arrays.
//!
//! - [`EventCounts`], [`TradeWindows`] and [`OfiWindows`] keep exact integer sums per window:
//!   added when an entry is pushed, subtracted when it leaves. Wrapping arithmetic makes a sum
//!   exact whenever its true value fits the type, whatever happened before, and nothing can
//!   panic.
//! - [`MidHistory`] keeps the recorded mids for the log-return horizons and the sums of
//!   squared returns for realized variance. Float sums cannot subtract an evicted value without
//!   drift, so each window is a two-stacks sliding aggregation laid over the shared ring: a
//!   front part holding suffix sums (rebuilt when it runs out) and a back part with a plain
//!   running sum. An empty window reads exactly `0.0`.
//!
//! All ring memory is written when a ring is built: a zeroed allocation would map its pages on
//! first touch, on the hot path. Clearing only moves indices.

/// A ring entry: anything with a stamp.
pub(crate) trait Stamped: Copy {
    /// The entry's stamp (the feature clock when it was recorded).
    fn ts(&self) -> u64;
    /// What unused slots hold. It is never read as an entry; it only has to be written.
    const FILL: Self;
}

/// Physical ring size for a logical capacity: the next power of two (at least 1).
pub(crate) fn ring_size(capacity: usize) -> usize {
    capacity.max(1).next_power_of_two()
}

/// A FIFO of at most `cap` entries in a ring of `mask + 1` slots, from `start` (the oldest
/// entry held) to `end` (one past the newest), both sequence numbers.
pub(crate) struct Ring<T> {
    slots: Box<[T]>,
    mask: u64,
    cap: u64,
    start: u64,
    end: u64,
}

impl<T: Stamped> Ring<T> {
    /// Bytes per slot.
    pub(crate) const SLOT_BYTES: usize = size_of::<T>();

    /// A ring holding at most `capacity` entries (at least 1), every slot written.
    pub(crate) fn new(capacity: usize) -> Self {
        let size = ring_size(capacity);
        // A non-zero fill cannot be turned into a zeroed (lazily mapped) allocation, so every
        // page is faulted in here rather than on the first pass over the ring.
        let slots = vec![T::FILL; size].into_boxed_slice();
        Self {
            slots,
            mask: size as u64 - 1,
            cap: capacity.max(1) as u64,
            start: 0,
            end: 0,
        }
    }

    /// Forgets every entry (no allocation, no write to the slots).
    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    #[inline]
    fn index(&self, seq: u64) -> usize {
        (seq & self.mask) as usize
    }

    #[inline]
    pub(crate) fn get(&self, seq: u64) -> &T {
        &self.slots[self.index(seq)]
    }

    /// The newest entry, if any.
    #[inline]
    pub(crate) fn newest_mut(&mut self) -> Option<&mut T> {
        if self.end > self.start {
            let i = self.index(self.end - 1);
            Some(&mut self.slots[i])
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn is_full(&self) -> bool {
        self.end - self.start >= self.cap
    }

    /// Appends `v` (the caller has made room).
    #[inline]
    pub(crate) fn push(&mut self, v: T) {
        let i = self.index(self.end);
        self.slots[i] = v;
        self.end += 1;
    }

    /// Moves `w` past the entries stamped at or before `now - w.width`, handing each to `leave`.
    /// Only call when [`Window::due_in`].
    #[inline]
    pub(crate) fn expire(&self, w: &mut Window, now: u64, mut leave: impl FnMut(&T)) {
        // `next` is a stamp plus the width (or the maximum), so `now >= next` keeps this positive.
        let cut = now - w.width;
        let mut head = w.head;
        let mut next = u64::MAX;
        while head < self.end {
            let e = self.get(head);
            let ts = e.ts();
            if ts > cut {
                next = ts.saturating_add(w.width);
                break;
            }
            leave(e);
            head += 1;
        }
        w.head = head;
        w.next = next;
    }
}

/// One time window `(now - width, now]` over a ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    width: u64,
    /// First entry inside the window.
    head: u64,
    /// The first entry leaves when the clock reaches this (`u64::MAX`: nothing can leave, or
    /// the window was empty when this was last set; see [`Window::due_in`]).
    next: u64,
}

impl Window {
    pub(crate) const fn new(width: u64) -> Self {
        Self {
            width,
            head: 0,
            next: u64::MAX,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.head = 0;
        self.next = u64::MAX;
    }

    /// Whether an entry of `ring` may have left by `now`, for a window whose `next` is not
    /// updated on push (pushes only lower the ring's own bound): a window found empty the last
    /// time gets its bound from its first entry now.
    #[inline]
    pub(crate) fn due_in<T: Stamped>(&mut self, now: u64, ring: &Ring<T>) -> bool {
        if self.next == u64::MAX && self.head < ring.end {
            self.next = ring.get(self.head).ts().saturating_add(self.width);
        }
        now >= self.next
    }
}

/// The number of records stamped in one window. Records with the same stamp share an entry.
///
/// This is the densest ring (one entry per distinct stamp of every record), so an entry is one
/// `u64`: the stamp's distance to the previous entry's stamp in the high half and the count in
/// the low half. The window is narrower than the largest distance (about 4.3 s), so a longer
/// gap means every entry held has left and the ring starts over from the new stamp.
pub(crate) struct EventCounts {
    slots: Box<[u64]>,
    mask: u64,
    cap: u64,
    /// Oldest entry held, which is also the window's first entry.
    start: u64,
    end: u64,
    /// Stamp of the entry before `start` (the base `start`'s distance is taken from).
    before_start: u64,
    /// Stamp of the newest entry.
    newest: u64,
    width: u64,
    /// The first entry leaves when the clock reaches this (`u64::MAX`: none held).
    next: u64,
    in_window: u64,
}

const LOW: u64 = u32::MAX as u64;

impl EventCounts {
    /// Bytes per slot.
    pub(crate) const SLOT_BYTES: usize = size_of::<u64>();

    /// A ring of at most `capacity` entries (at least 1) for a window `0 < width < 2^32` ns.
    pub(crate) fn new(capacity: usize, width: u64) -> Self {
        assert!(width > 0 && width < LOW, "event window out of range");
        let size = ring_size(capacity);
        Self {
            // Non-zero so that the pages are written (and faulted in) here.
            slots: vec![u64::MAX; size].into_boxed_slice(),
            mask: size as u64 - 1,
            cap: capacity.max(1) as u64,
            start: 0,
            end: 0,
            before_start: 0,
            newest: 0,
            width,
            next: u64::MAX,
            in_window: 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.before_start = 0;
        self.newest = 0;
        self.next = u64::MAX;
        self.in_window = 0;
    }

    #[inline]
    fn index(&self, seq: u64) -> usize {
        (seq & self.mask) as usize
    }

    #[inline]
    pub(crate) fn expire(&mut self, now: u64) {
        if now >= self.next {
            self.expire_slow(now);
        }
    }

    fn expire_slow(&mut self, now: u64) {
        // `next` is a stamp plus the width, so `now >= next` keeps this positive.
        let cut = now - self.width;
        let (mut seq, mut ts, mut gone) = (self.start, self.before_start, 0u64);
        self.next = u64::MAX;
        while seq < self.end {
            let e = self.slots[self.index(seq)];
            let t = ts + (e >> 32);
            if t > cut {
                self.next = t.saturating_add(self.width);
                break;
            }
            gone += e & LOW;
            ts = t;
            seq += 1;
        }
        self.start = seq;
        self.before_start = ts;
        self.in_window = self.in_window.wrapping_sub(gone);
    }

    /// Counts one record stamped `now` (not before the newest). Returns `true` when the ring
    /// was full and its oldest entry was dropped while still inside the window.
    #[inline]
    pub(crate) fn push(&mut self, now: u64) -> bool {
        self.in_window = self.in_window.wrapping_add(1);
        if self.end > self.start && now == self.newest {
            let i = self.index(self.end - 1);
            if self.slots[i] & LOW < LOW {
                self.slots[i] += 1;
                return false;
            }
        }
        let mut dropped = false;
        let mut gap = now.wrapping_sub(self.newest);
        if self.end == self.start || gap >= LOW || self.end - self.start >= self.cap {
            (dropped, gap) = self.make_room(now);
        }
        let i = self.index(self.end);
        self.slots[i] = (gap << 32) | 1;
        self.end += 1;
        self.newest = now;
        self.next = self.next.min(now.saturating_add(self.width));
        dropped
    }

    /// Makes room for an entry stamped `now` and returns whether an entry was dropped early and
    /// the new entry's distance.
    #[cold]
    fn make_room(&mut self, now: u64) -> (bool, u64) {
        self.expire(now);
        if self.end == self.start || now.wrapping_sub(self.newest) >= LOW {
            // Nothing held (a longer gap empties the window): start over from `now`.
            debug_assert!(self.end == self.start);
            self.before_start = now;
            self.newest = now;
            return (false, 0);
        }
        let mut dropped = false;
        if self.end - self.start >= self.cap {
            let e = self.slots[self.index(self.start)];
            self.in_window = self.in_window.wrapping_sub(e & LOW);
            self.before_start += e >> 32;
            self.start += 1;
            dropped = true;
            if self.start == self.end {
                self.before_start = now;
                self.newest = now;
                self.next = u64::MAX;
            }
        }
        (dropped, now - self.newest)
    }

    /// Records in the window (call [`Self::expire`] first).
    #[inline]
    pub(crate) fn sum(&self) -> u64 {
        self.in_window
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Trades with the same stamp, price and sign.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TradeEntry {
    ts: u64,
    price: i64,
    size: u32,
    trades: u16,
    sign: i8,
}

impl Stamped for TradeEntry {
    #[inline]
    fn ts(&self) -> u64 {
        self.ts
    }
    const FILL: Self = TradeEntry {
        ts: u64::MAX,
        price: 0,
        size: 0,
        trades: 0,
        sign: 0,
    };
}

impl TradeEntry {
    #[inline]
    fn signed_volume(&self) -> i64 {
        i64::from(self.sign) * i64::from(self.size)
    }

    #[inline]
    fn notional(&self) -> i128 {
        i128::from(self.price) * i128::from(self.size)
    }
}

/// Number of trade windows (1 s, 10 s and 60 s in the features).
pub(crate) const TRADE_WINDOWS: usize = 3;

/// Sums of the trade windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TradeSums {
    /// Signed volume over windows 0 and 1.
    pub(crate) signed_volume: [i64; 2],
    /// Trades in window 0.
    pub(crate) trades: u64,
    /// Volume in window 2.
    pub(crate) volume: u64,
    /// `Σ price · size` in window 2.
    pub(crate) notional: i128,
}

/// The trade sums of three nested windows (widths ascending).
pub(crate) struct TradeWindows {
    ring: Ring<TradeEntry>,
    /// The earliest `next` of the windows.
    next: u64,
    w: [Window; TRADE_WINDOWS],
    sums: TradeSums,
    /// Changes whenever the sums of the widest window may have changed.
    version: u64,
}

impl TradeWindows {
    pub(crate) fn new(capacity: usize, width: [u64; TRADE_WINDOWS]) -> Self {
        debug_assert!(width.windows(2).all(|w| w[0] <= w[1]) && width[0] > 0);
        Self {
            ring: Ring::new(capacity),
            next: u64::MAX,
            w: width.map(Window::new),
            sums: TradeSums::default(),
            version: 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.ring.clear();
        for w in &mut self.w {
            w.clear();
        }
        self.sums = TradeSums::default();
        self.next = u64::MAX;
        self.version += 1;
    }

    #[inline]
    pub(crate) fn expire(&mut self, now: u64) {
        if now >= self.next {
            self.expire_slow(now);
        }
    }

    fn expire_slow(&mut self, now: u64) {
        let s = &mut self.sums;
        if self.w[0].due_in(now, &self.ring) {
            let (mut sv, mut n) = (0i64, 0u64);
            self.ring.expire(&mut self.w[0], now, |e| {
                sv = sv.wrapping_add(e.signed_volume());
                n = n.wrapping_add(u64::from(e.trades));
            });
            s.signed_volume[0] = s.signed_volume[0].wrapping_sub(sv);
            s.trades = s.trades.wrapping_sub(n);
        }
        if self.w[1].due_in(now, &self.ring) {
            let mut sv = 0i64;
            self.ring.expire(&mut self.w[1], now, |e| {
                sv = sv.wrapping_add(e.signed_volume());
            });
            s.signed_volume[1] = s.signed_volume[1].wrapping_sub(sv);
        }
        if self.w[2].due_in(now, &self.ring) {
            let (mut v, mut q) = (0u64, 0i128);
            self.ring.expire(&mut self.w[2], now, |e| {
                v = v.wrapping_add(u64::from(e.size));
                q = q.wrapping_add(e.notional());
            });
            s.volume = s.volume.wrapping_sub(v);
            s.notional = s.notional.wrapping_sub(q);
            self.ring.start = self.w[2].head;
            self.version += 1;
        }
        self.next = self.w[0].next.min(self.w[1].next).min(self.w[2].next);
    }

    /// Adds a trade stamped `now` (not before the newest) with `sign` in {-1, 0, 1}. Returns
    /// `true` when the ring was full and its oldest entry was dropped while still inside a
    /// window.
    #[inline]
    pub(crate) fn push(&mut self, now: u64, price: i64, size: u32, sign: i8) -> bool {
        let e = TradeEntry {
            ts: now,
            price,
            size,
            trades: 1,
            sign,
        };
        let s = &mut self.sums;
        let sv = e.signed_volume();
        s.signed_volume[0] = s.signed_volume[0].wrapping_add(sv);
        s.signed_volume[1] = s.signed_volume[1].wrapping_add(sv);
        s.trades = s.trades.wrapping_add(1);
        s.volume = s.volume.wrapping_add(u64::from(size));
        s.notional = s.notional.wrapping_add(e.notional());
        self.version += 1;
        // An entry stamped `now` is inside every window, so merging into it changes no window
        // membership.
        if let Some(last) = self.ring.newest_mut()
            && last.ts == now
            && last.price == price
            && last.sign == sign
            && last.trades < u16::MAX
            && let Some(total) = last.size.checked_add(size)
        {
            last.size = total;
            last.trades += 1;
            return false;
        }
        let dropped = self.ring.is_full() && self.make_room(now);
        self.ring.push(e);
        // The narrowest window drops the new entry first.
        self.next = self.next.min(now.saturating_add(self.w[0].width));
        dropped
    }

    #[cold]
    fn make_room(&mut self, now: u64) -> bool {
        self.expire(now);
        if !self.ring.is_full() {
            return false;
        }
        let start = self.ring.start;
        let old = *self.ring.get(start);
        let s = &mut self.sums;
        // The widest window holds the oldest entry; narrower ones only if it is still inside.
        if self.w[0].head == start {
            s.signed_volume[0] = s.signed_volume[0].wrapping_sub(old.signed_volume());
            s.trades = s.trades.wrapping_sub(u64::from(old.trades));
            self.w[0].head += 1;
        }
        if self.w[1].head == start {
            s.signed_volume[1] = s.signed_volume[1].wrapping_sub(old.signed_volume());
            self.w[1].head += 1;
        }
        s.volume = s.volume.wrapping_sub(u64::from(old.size));
        s.notional = s.notional.wrapping_sub(old.notional());
        self.version += 1;
        self.w[2].head += 1;
        self.ring.start += 1;
        true
    }

    /// The sums (call [`Self::expire`] first).
    #[inline]
    pub(crate) fn sums(&self) -> &TradeSums {
        &self.sums
    }

    /// A number that changes whenever `volume` or `notional` may have changed.
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Entries held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.ring.end - self.ring.start
    }
}

/// Number of OFI windows.
pub(crate) const OFI_WINDOWS: usize = 2;

/// Distance of a filler entry: the largest a word holds.
const FILL_GAP: u64 = LOW;
/// Low half of a word whose value is in the next word.
const WIDE: u32 = i32::MIN as u32;

/// A window over the words of [`OfiWindows`].
#[derive(Debug, Clone, Copy)]
struct DeltaWindow {
    width: u64,
    /// First word of the first entry inside the window.
    head: u64,
    /// Stamp of the entry before `head`.
    before_head: u64,
    /// As [`Window::next`].
    next: u64,
}

/// Sums of order flow imbalance over two nested windows (widths ascending, the wider below
/// 2^32 ns times the capacity). Entries with the same stamp share a slot.
///
/// An entry is one `u64` word: the distance from the previous entry's stamp in the high half
/// and the value in the low half. A value that does not fit an `i32` takes a second word
/// (marked by `i32::MIN`), and a gap longer than a word holds is bridged by filler entries of
/// value 0. Both are rare (sizes beyond 2^31, quiet spells of more than 4.3 s with entries
/// still inside the wide window) and take a slot of the capacity each; dropping a filler early
/// loses nothing and is not counted.
pub(crate) struct OfiWindows {
    words: Box<[u64]>,
    mask: u64,
    cap: u64,
    /// First word of the oldest entry held.
    start: u64,
    end: u64,
    /// Stamp of the entry before `start`.
    before_start: u64,
    /// Stamp and first word of the newest entry.
    newest: u64,
    newest_seq: u64,
    /// The earliest `next` of the windows.
    next: u64,
    w: [DeltaWindow; OFI_WINDOWS],
    sums: [i64; OFI_WINDOWS],
}

impl OfiWindows {
    /// Bytes per slot.
    pub(crate) const SLOT_BYTES: usize = size_of::<u64>();

    /// Slots for `capacity` (a wide entry needs two).
    pub(crate) fn slots(capacity: usize) -> usize {
        ring_size(capacity.max(2))
    }

    pub(crate) fn new(capacity: usize, width: [u64; OFI_WINDOWS]) -> Self {
        debug_assert!(width[0] <= width[1] && width[0] > 0);
        let size = Self::slots(capacity);
        Self {
            // Non-zero so that the pages are written (and faulted in) here.
            words: vec![u64::MAX; size].into_boxed_slice(),
            mask: size as u64 - 1,
            cap: capacity.max(2) as u64,
            start: 0,
            end: 0,
            before_start: 0,
            newest: 0,
            newest_seq: 0,
            next: u64::MAX,
            w: width.map(|width| DeltaWindow {
                width,
                head: 0,
                before_head: 0,
                next: u64::MAX,
            }),
            sums: [0; OFI_WINDOWS],
        }
    }

    pub(crate) fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.before_start = 0;
        self.newest = 0;
        self.newest_seq = 0;
        self.next = u64::MAX;
        for w in &mut self.w {
            w.head = 0;
            w.before_head = 0;
            w.next = u64::MAX;
        }
        self.sums = [0; OFI_WINDOWS];
    }

    #[inline]
    fn word(&self, seq: u64) -> u64 {
        self.words[(seq & self.mask) as usize]
    }

    #[inline]
    fn put(&mut self, seq: u64, word: u64) {
        self.words[(seq & self.mask) as usize] = word;
    }

    /// Value and word count of the entry starting at `seq`.
    #[inline]
    fn value(&self, seq: u64, word: u64) -> (i64, u64) {
        if word as u32 == WIDE {
            (self.word(seq + 1) as i64, 2)
        } else {
            (i64::from(word as u32 as i32), 1)
        }
    }

    #[inline]
    pub(crate) fn expire(&mut self, now: u64) {
        if now >= self.next {
            self.expire_slow(now);
        }
    }

    fn expire_slow(&mut self, now: u64) {
        for k in 0..OFI_WINDOWS {
            let mut w = self.w[k];
            if w.next == u64::MAX && w.head < self.end {
                w.next = (w.before_head + (self.word(w.head) >> 32)).saturating_add(w.width);
            }
            if now < w.next {
                self.w[k] = w;
                continue;
            }
            // `next` is a stamp plus the width, so `now >= next` keeps this positive.
            let cut = now - w.width;
            let (mut seq, mut ts, mut gone) = (w.head, w.before_head, 0i64);
            w.next = u64::MAX;
            while seq < self.end {
                let word = self.word(seq);
                let t = ts + (word >> 32);
                if t > cut {
                    w.next = t.saturating_add(w.width);
                    break;
                }
                let (v, len) = self.value(seq, word);
                gone = gone.wrapping_add(v);
                ts = t;
                seq += len;
            }
            w.head = seq;
            w.before_head = ts;
            self.w[k] = w;
            self.sums[k] = self.sums[k].wrapping_sub(gone);
        }
        let widest = self.w[OFI_WINDOWS - 1];
        self.start = widest.head;
        self.before_start = widest.before_head;
        self.next = self.w[0].next.min(widest.next);
    }

    /// Adds `e` stamped `now` (not before the newest). Returns `true` when the ring was full and
    /// its oldest entry was dropped while still inside a window.
    #[inline]
    pub(crate) fn push(&mut self, now: u64, e: i64) -> bool {
        for s in &mut self.sums {
            *s = s.wrapping_add(e);
        }
        if now == self.newest && self.newest_seq >= self.start && self.newest_seq < self.end {
            let word = self.word(self.newest_seq);
            if word as u32 == WIDE {
                let seq = self.newest_seq + 1;
                let v = (self.word(seq) as i64).wrapping_add(e);
                self.put(seq, v as u64);
                return false;
            }
            if let Ok(v) = i32::try_from(i64::from(word as u32 as i32).wrapping_add(e))
                && v != i32::MIN
            {
                self.put(self.newest_seq, (word & !LOW) | u64::from(v as u32));
                return false;
            }
        }
        let narrow = i32::try_from(e).ok().filter(|v| *v != i32::MIN);
        let len = if narrow.is_some() { 1 } else { 2 };
        let mut dropped = false;
        let mut gap = now.wrapping_sub(self.newest);
        if self.end == self.start || gap >= FILL_GAP || self.end - self.start + len > self.cap {
            (dropped, gap) = self.make_room(now, len);
        }
        let seq = self.end;
        match narrow {
            Some(v) => self.put(seq, (gap << 32) | u64::from(v as u32)),
            None => {
                self.put(seq, (gap << 32) | u64::from(WIDE));
                self.put(seq + 1, e as u64);
            }
        }
        self.end = seq + len;
        self.newest = now;
        self.newest_seq = seq;
        self.next = self.next.min(now.saturating_add(self.w[0].width));
        dropped
    }

    /// Makes room for an entry of `len` words stamped `now`: returns whether an entry was
    /// dropped early and the new entry's distance.
    #[cold]
    fn make_room(&mut self, now: u64, len: u64) -> (bool, u64) {
        self.expire(now);
        let mut dropped = false;
        loop {
            if self.end == self.start {
                // Nothing held: start over from `now`.
                self.before_start = now;
                self.newest = now;
                for w in &mut self.w {
                    w.before_head = now;
                }
                return (dropped, 0);
            }
            let gap = now - self.newest;
            let need = if gap >= FILL_GAP { 1 } else { len };
            if self.end - self.start + need > self.cap {
                dropped |= self.drop_oldest();
            } else if gap >= FILL_GAP {
                self.put(self.end, FILL_GAP << 32);
                self.newest_seq = self.end;
                self.end += 1;
                self.newest += FILL_GAP;
            } else {
                return (dropped, gap);
            }
        }
    }

    /// Drops the oldest entry; returns whether it carried a value (was not a filler).
    fn drop_oldest(&mut self) -> bool {
        let word = self.word(self.start);
        let (v, len) = self.value(self.start, word);
        let t = self.before_start + (word >> 32);
        for k in 0..OFI_WINDOWS {
            if self.w[k].head == self.start {
                self.sums[k] = self.sums[k].wrapping_sub(v);
                self.w[k].head += len;
                self.w[k].before_head = t;
            }
        }
        self.start += len;
        self.before_start = t;
        word >> 32 != FILL_GAP
    }

    /// The sum over window `k`.
    #[inline]
    pub(crate) fn sum(&self, k: usize) -> i64 {
        self.sums[k]
    }

    /// Slots in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// Number of horizons of [`MidHistory`].
pub(crate) const MID_WINDOWS: usize = 3;

/// A recorded mid (as `bid + ask`, fixed point). Its squared log return from the previous one
/// and the per-horizon suffix sums live in arrays of their own: each is read by one part of
/// the work only (a horizon's rebuild, its head), so none of them drags the others through the
/// cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mid {
    ts: u64,
    s: i64,
}

impl Stamped for Mid {
    #[inline]
    fn ts(&self) -> u64 {
        self.ts
    }
    const FILL: Self = Mid { ts: u64::MAX, s: 0 };
}

/// A written `f64` array of `size` slots.
fn filled(size: usize) -> Box<[f64]> {
    // Non-zero so that the pages are written (and faulted in) here.
    vec![f64::MAX; size].into_boxed_slice()
}

/// Recorded mids with the squared log return from the previous recorded mid, over
/// [`MID_WINDOWS`] nested horizons `width` (ascending).
///
/// For horizon `k`, the window's head is the first entry stamped after `now - width[k]`: the
/// entries from there on form the realized-variance window, and the entry just before it (when
/// still held) is the last mid at or before `now - width[k]`, the base of the log return. The
/// ring's `start` is the widest horizon's base, or its first entry if it has none.
pub(crate) struct MidHistory {
    ring: Ring<Mid>,
    /// Squared return of each entry, by slot.
    rsq: Box<[f64]>,
    /// Per horizon, the suffix sums of its front part, by slot.
    agg: [Box<[f64]>; MID_WINDOWS],
    /// The earliest `next` of the windows.
    next: u64,
    w: [Window; MID_WINDOWS],
    /// `[head, split)` is the front part (sums in `agg`), `[split, end)` the back part.
    split: [u64; MID_WINDOWS],
    /// Sum of `rsq` over the back part; reset to exactly 0 at every rebuild.
    back: [f64; MID_WINDOWS],
    /// The suffix sum at the head while the front part is not empty, else exactly 0.
    front: [f64; MID_WINDOWS],
    /// The base's mid per horizon; 0 (never a recorded mid) when there is none.
    base: [i64; MID_WINDOWS],
    /// Changes whenever a base may have changed.
    version: u64,
}

impl MidHistory {
    /// Bytes per slot.
    pub(crate) const SLOT_BYTES: usize =
        size_of::<Mid>() + size_of::<f64>() + MID_WINDOWS * size_of::<f64>();

    /// A ring holding at most `capacity` entries (at least 1); `width` ascending and non-zero.
    pub(crate) fn new(capacity: usize, width: [u64; MID_WINDOWS]) -> Self {
        debug_assert!(width.windows(2).all(|w| w[0] <= w[1]) && width[0] > 0);
        let size = ring_size(capacity);
        Self {
            ring: Ring::new(capacity),
            rsq: filled(size),
            agg: [filled(size), filled(size), filled(size)],
            next: u64::MAX,
            w: width.map(Window::new),
            split: [0; MID_WINDOWS],
            back: [0.0; MID_WINDOWS],
            front: [0.0; MID_WINDOWS],
            base: [0; MID_WINDOWS],
            version: 0,
        }
    }

    /// Forgets every entry (no allocation).
    pub(crate) fn clear(&mut self) {
        self.ring.clear();
        for w in &mut self.w {
            w.clear();
        }
        self.split = [0; MID_WINDOWS];
        self.back = [0.0; MID_WINDOWS];
        self.front = [0.0; MID_WINDOWS];
        self.base = [0; MID_WINDOWS];
        self.next = u64::MAX;
        self.version += 1;
    }

    /// Turns window `k`'s back part into its front part (suffix sums, newest to oldest).
    #[cold]
    fn rebuild(&mut self, k: usize) {
        let mut acc = 0.0;
        let mut seq = self.ring.end;
        let agg = &mut self.agg[k];
        while seq > self.w[k].head {
            seq -= 1;
            let i = self.ring.index(seq);
            acc += self.rsq[i];
            agg[i] = acc;
        }
        self.split[k] = self.ring.end;
        self.back[k] = 0.0;
    }

    /// Takes window `k`'s first entry out of it.
    #[inline]
    fn pop_front(&mut self, k: usize) {
        if self.w[k].head == self.split[k] {
            self.rebuild(k);
        }
        self.w[k].head += 1;
    }

    /// Refreshes the cached front sum and base of horizon `k` after its head moved.
    #[inline]
    fn moved(&mut self, k: usize) {
        self.version += 1;
        let head = self.w[k].head;
        self.front[k] = if head < self.split[k] {
            self.agg[k][self.ring.index(head)]
        } else {
            0.0
        };
        self.base[k] = if head > self.ring.start {
            self.ring.get(head - 1).s
        } else {
            0
        };
    }

    /// Moves every horizon to `now`.
    #[inline]
    pub(crate) fn expire(&mut self, now: u64) {
        if now >= self.next {
            self.expire_slow(now);
        }
    }

    fn expire_slow(&mut self, now: u64) {
        self.next = u64::MAX;
        for k in 0..MID_WINDOWS {
            if !self.w[k].due_in(now, &self.ring) {
                continue;
            }
            // Counts first (a rebuild may happen in the middle), then the pops.
            let mut w = self.w[k];
            self.ring.expire(&mut w, now, |_| {});
            let target = w.head;
            while self.w[k].head < target {
                self.pop_front(k);
            }
            self.w[k].next = w.next;
        }
        for w in &self.w {
            self.next = self.next.min(w.next);
        }
        // Keep the widest horizon's base; everything before it is no longer needed.
        let widest = self.w[MID_WINDOWS - 1].head;
        if widest > self.ring.start + 1 {
            self.ring.start = widest - 1;
        }
        for k in 0..MID_WINDOWS {
            self.moved(k);
        }
    }

    /// Records mid `s` stamped `now` with squared return `rsq` (call [`Self::expire`] first).
    /// Returns `true` when the ring was full and its oldest entry was dropped early.
    #[inline]
    pub(crate) fn push(&mut self, now: u64, s: i64, rsq: f64) -> bool {
        debug_assert!(s != 0, "0 marks a missing base");
        let mut overflow = false;
        if self.ring.is_full() {
            self.drop_oldest();
            overflow = true;
        }
        self.rsq[self.ring.index(self.ring.end)] = rsq;
        self.ring.push(Mid { ts: now, s });
        for b in &mut self.back {
            *b += rsq;
        }
        self.next = self.next.min(now.saturating_add(self.w[0].width));
        overflow
    }

    #[cold]
    fn drop_oldest(&mut self) {
        let start = self.ring.start;
        for k in 0..MID_WINDOWS {
            if self.w[k].head == start {
                self.pop_front(k);
            }
        }
        self.ring.start += 1;
        for k in 0..MID_WINDOWS {
            self.moved(k);
        }
    }

    /// Sum of squared returns stamped inside horizon `k`.
    #[inline]
    pub(crate) fn rv(&self, k: usize) -> f64 {
        self.front[k] + self.back[k]
    }

    /// The last recorded mid stamped at or before `now - width[k]`, if still held.
    #[cfg(test)]
    pub(crate) fn base(&self, k: usize) -> Option<i64> {
        (self.base[k] != 0).then_some(self.base[k])
    }

    /// A number that changes whenever a base may have changed.
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Per horizon, the last recorded mid stamped at or before `now - width[k]` if still held,
    /// else 0 (recorded mids are positive).
    #[inline]
    pub(crate) fn bases(&self) -> &[i64; MID_WINDOWS] {
        &self.base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn event_counts_follow_half_open_windows() {
        let mut w = EventCounts::new(16, 10);
        for ts in [0, 5, 10, 10, 12] {
            w.expire(ts);
            assert!(!w.push(ts));
        }
        w.expire(12);
        // (2, 12]
        assert_eq!(w.sum(), 4);
        assert_eq!(w.len(), 3, "same stamps share an entry");
        // (10, 20]: both entries stamped 10 have left.
        w.expire(20);
        assert_eq!(w.sum(), 1);
        w.expire(22);
        assert_eq!((w.sum(), w.len()), (0, 0));
    }

    #[test]
    fn full_ring_drops_oldest_and_reports() {
        let mut w = EventCounts::new(3, 1_000);
        let mut overflows = 0;
        for ts in 0..10 {
            overflows += u64::from(w.push(ts));
        }
        w.expire(9);
        assert_eq!(overflows, 7);
        assert_eq!(w.sum(), 3);
        assert_eq!(w.len(), 3);
        // A full ring whose oldest entry has left the window makes room without a drop.
        let mut w = EventCounts::new(2, 10);
        assert!(!w.push(0));
        assert!(!w.push(5));
        assert!(!w.push(10));
        w.expire(10);
        assert_eq!(w.sum(), 2);
    }

    #[test]
    fn trades_merge_by_stamp_price_and_sign() {
        let mut t = TradeWindows::new(16, [10, 20, 30]);
        assert!(!t.push(1, 100, 2, 1));
        assert!(!t.push(1, 100, 3, 1));
        assert!(!t.push(1, 101, 1, 1));
        assert!(!t.push(1, 101, 1, -1));
        assert_eq!(t.len(), 3);
        // Sizes that no longer fit a u32 start a new entry.
        assert!(!t.push(2, 100, u32::MAX, 1));
        assert!(!t.push(2, 100, 1, 1));
        assert_eq!(t.len(), 5);
        t.expire(2);
        let s = *t.sums();
        assert_eq!(s.trades, 6);
        assert_eq!(s.signed_volume, [5 + i64::from(u32::MAX) + 1; 2]);
        assert_eq!(s.volume, 8 + u64::from(u32::MAX));
        assert_eq!(s.notional, 100 * 5 + 202 + 100 * (i128::from(u32::MAX) + 1));
        // (1, 11]: the trades stamped 1 have left the 10 wide window only.
        t.expire(11);
        assert_eq!(t.sums().trades, 2);
        assert_eq!(t.sums().signed_volume[1], s.signed_volume[1]);
        t.expire(32);
        assert_eq!(*t.sums(), TradeSums::default());
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn trade_overflow_keeps_sums_of_what_is_held() {
        let mut t = TradeWindows::new(2, [5, 10, 100]);
        let mut dropped = 0;
        for ts in 0..6 {
            t.expire(ts);
            dropped += u32::from(t.push(ts, 10, 1, 1));
        }
        assert_eq!(dropped, 4);
        assert_eq!(t.len(), 2);
        let s = t.sums();
        assert_eq!((s.trades, s.volume, s.notional), (2, 2, 20));
        assert_eq!(s.signed_volume, [2, 2]);
    }

    #[test]
    fn ofi_sums_follow_half_open_windows() {
        let mut w = OfiWindows::new(16, [10, 100]);
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
        assert_eq!((w.sum(0), w.sum(1)), (0, 0));
    }

    #[test]
    fn ofi_bridges_long_gaps_and_wide_values() {
        const S: u64 = 1_000_000_000;
        let mut w = OfiWindows::new(16, [S, 10 * S]);
        assert!(!w.push(0, 3));
        // 6 s later the first entry is still inside the 10 s window: one filler bridges it.
        w.expire(6 * S);
        assert!(!w.push(6 * S, i64::from(i32::MAX) + 1));
        assert_eq!(w.len(), 1 + 1 + 2);
        assert_eq!((w.sum(0), w.sum(1)), (1 << 31, 3 + (1 << 31)));
        // Merging into a wide entry, and into a narrow one until it no longer fits.
        assert!(!w.push(6 * S, -1));
        assert!(!w.push(7 * S, i64::from(i32::MAX)));
        assert!(!w.push(7 * S, 1));
        assert_eq!(w.len(), 4 + 1 + 1);
        // (6 s, 7 s] holds the two entries stamped 7 s only.
        w.expire(7 * S);
        assert_eq!(w.sum(0), 1 << 31);
        w.expire(10 * S);
        assert_eq!((w.sum(0), w.sum(1)), (0, (1 << 32) - 1));
        // Everything gone: the ring starts over.
        w.expire(100 * S);
        assert_eq!((w.sum(0), w.sum(1), w.len()), (0, 0, 0));
        assert!(!w.push(100 * S, i64::MIN));
        w.expire(100 * S);
        assert_eq!((w.sum(0), w.sum(1)), (i64::MIN, i64::MIN));
    }

    #[test]
    fn ofi_overflow_drops_oldest_values_not_fillers() {
        const S: u64 = 1_000_000_000;
        // Capacity 2: the filler bridging 5 s and the new entry leave no room for the first.
        let mut w = OfiWindows::new(2, [S, 10 * S]);
        assert!(!w.push(0, 1));
        assert!(w.push(5 * S, 2));
        w.expire(5 * S);
        assert_eq!(w.sum(1), 2);
        let mut w = OfiWindows::new(3, [S, 10 * S]);
        assert!(!w.push(0, 1));
        assert!(!w.push(5 * S, 2));
        assert!(w.push(5 * S + 1, 4), "the oldest value is dropped early");
        assert!(!w.push(5 * S + 2, 8), "only a filler is dropped");
        w.expire(5 * S + 2);
        assert_eq!(w.sum(1), 2 + 4 + 8);
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

    #[test]
    fn rings_are_written_when_built() {
        let r = Ring::<Mid>::new(5);
        assert_eq!(r.slots.len(), 8);
        assert!(r.slots.iter().all(|m| m.ts == u64::MAX));
        let e = EventCounts::new(5, 10);
        assert!(e.slots.len() == 8 && e.slots.iter().all(|w| *w == u64::MAX));
        let o = OfiWindows::new(1, [10, 20]);
        assert!(o.words.len() == 2 && o.words.iter().all(|w| *w == u64::MAX));
        let m = MidHistory::new(5, [1, 2, 3]);
        assert!(
            m.rsq
                .iter()
                .chain(m.agg.iter().flatten())
                .all(|v| *v == f64::MAX)
        );
        assert_eq!(EventCounts::SLOT_BYTES, 8);
        assert_eq!(Ring::<TradeEntry>::SLOT_BYTES, 24);
        assert_eq!(OfiWindows::SLOT_BYTES, 8);
        assert_eq!(Ring::<Mid>::SLOT_BYTES, 16);
        assert_eq!(MidHistory::SLOT_BYTES, 48);
    }

    fn near(a: f64, b: f64) -> bool {
        a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    fn inside(ts: u64, now: u64, width: u64) -> bool {
        i128::from(ts) > i128::from(now) - i128::from(width)
    }

    proptest! {
        /// Ring vs `VecDeque` of everything in the window, with a capacity that never fills.
        #[test]
        fn sums_match_deque(
            steps in prop::collection::vec((0u64..40, -50i64..50, 0u8..3), 0..300),
        ) {
            let widths = [10u64, 35, 90];
            let mut ofi = OfiWindows::new(1024, [widths[0], widths[1]]);
            let mut trades = TradeWindows::new(1024, widths);
            let mut events = EventCounts::new(1024, widths[0]);
            let mut all: VecDeque<(u64, i64, i8)> = VecDeque::new();
            let mut now = 0;
            for (dt, v, side) in steps {
                now += dt;
                let sign = side as i8 - 1;
                let price = v.abs() + 1;
                ofi.expire(now);
                prop_assert!(!ofi.push(now, v));
                prop_assert!(!trades.push(now, price, v.unsigned_abs() as u32, sign));
                prop_assert!(!events.push(now));
                trades.expire(now);
                events.expire(now);
                all.push_back((now, v, sign));
                let within = |w: u64| all.iter().filter(move |(ts, _, _)| inside(*ts, now, w));
                for (k, width) in widths[..2].iter().enumerate() {
                    prop_assert_eq!(ofi.sum(k), within(*width).map(|(_, v, _)| v).sum::<i64>());
                    let sv: i64 = within(*width).map(|(_, v, s)| v.abs() * i64::from(*s)).sum();
                    prop_assert_eq!(trades.sums().signed_volume[k], sv);
                }
                prop_assert_eq!(events.sum(), within(widths[0]).count() as u64);
                prop_assert_eq!(trades.sums().trades, within(widths[0]).count() as u64);
                let vol: u64 = within(widths[2]).map(|(_, v, _)| v.unsigned_abs()).sum();
                let notional: i128 = within(widths[2])
                    .map(|(_, v, _)| i128::from(v.abs() + 1) * i128::from(v.abs()))
                    .sum();
                prop_assert_eq!(trades.sums().volume, vol);
                prop_assert_eq!(trades.sums().notional, notional);
            }
        }

        /// Same stamps, gaps around a word's reach and lazy expiry against a `VecDeque`.
        #[test]
        fn event_counts_match_deque(
            steps in prop::collection::vec(
                (
                    prop_oneof![
                        3 => Just(0u64),
                        3 => 0u64..2_000_000_000,
                        1 => (LOW - 2)..(LOW + 2),
                        1 => 4_000_000_000u64..6_000_000_000,
                    ],
                    any::<bool>(),
                ),
                0..300,
            ),
        ) {
            let width = 1_000_000_000u64;
            let mut w = EventCounts::new(4096, width);
            let mut all: Vec<u64> = Vec::new();
            let mut now = 1_700_000_000_000_000_000u64;
            for (dt, look) in steps {
                now += dt;
                prop_assert!(!w.push(now));
                all.push(now);
                if look {
                    w.expire(now);
                    let want = all.iter().filter(|ts| inside(**ts, now, width)).count();
                    prop_assert_eq!(w.sum(), want as u64);
                }
            }
        }

        /// Long gaps, wide values and merges against a `VecDeque`, at the feature widths.
        #[test]
        fn ofi_matches_deque(
            steps in prop::collection::vec(
                (
                    prop_oneof![
                        3 => Just(0u64),
                        3 => 0u64..2_000_000_000,
                        2 => 4_000_000_000u64..10_500_000_000,
                        1 => 10_000_000_000u64..20_000_000_000,
                    ],
                    prop_oneof![
                        4 => -1000i64..1000,
                        1 => (i64::from(i32::MIN) - 2)..(i64::from(i32::MIN) + 2),
                        1 => (i64::from(i32::MAX) - 2)..(i64::from(i32::MAX) + 2),
                        1 => any::<i64>(),
                    ],
                ),
                0..200,
            ),
        ) {
            let widths = [1_000_000_000u64, 10_000_000_000];
            let mut w = OfiWindows::new(4096, widths);
            let mut all: VecDeque<(u64, i64)> = VecDeque::new();
            let mut now = 1_700_000_000_000_000_000u64;
            for (dt, e) in steps {
                now += dt;
                w.expire(now);
                prop_assert!(!w.push(now, e));
                all.push_back((now, e));
                for (k, width) in widths.iter().enumerate() {
                    let want = all
                        .iter()
                        .filter(|(ts, _)| inside(*ts, now, *width))
                        .fold(0i64, |a, (_, e)| a.wrapping_add(*e));
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
