//! The feature stage's core, shared by the engine and the offline `features` export: order
//! books for every instrument, a [`FeatureState`] and time bars per instrument, and the rule for
//! when a feature vector is emitted. The engine and the export run this same code on the same
//! records, so models are trained on the numbers that serve.
//!
//! A vector is emitted at every consistent book state: an MBO record with `F_LAST`, or the last
//! part of an MBP / BBO record with `F_LAST` (venues set it on the last record of an event). A
//! trade (action `T` of MBO, MBP-0, MBP-1 or MBP-10 records; `F` fills are the resting side of
//! the same trade and are not counted twice) feeds the trade features; every book or trade
//! record counts as one event for the event rate, except snapshot records (`F_SNAPSHOT`), which
//! restate the book rather than report activity. Instrument definitions set the tick size.

use crate::PipelineError;
use crate::book::{BookConfig, BookCounts, Books};
use crate::depth::{Depth, Trade};
use crate::features::{Bar, BarBuilder, FeatureConfig, FeatureCounts, FeatureState, TimeSource};
use crate::msg::{Event, Tick, rtype};

/// Bar intervals the feature stage builds (1 s and 1 min).
pub const BAR_INTERVALS_NS: [u64; 2] = [1_000_000_000, 60_000_000_000];

/// Sizes and choices of the feature stage.
#[derive(Debug, Clone, Default)]
pub struct FeatureEngineConfig {
    /// Order book capacities.
    pub book: BookConfig,
    /// Feature windows and time source.
    pub features: FeatureConfig,
}

/// What the feature stage counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureEngineCounts {
    /// Events seen.
    pub events: u64,
    /// Feature vectors emitted.
    pub vectors: u64,
    /// Trades fed to the trade features.
    pub trades: u64,
    /// Bars completed.
    pub bars: u64,
    /// Records of instruments without a slot (see the book's `instrument_overflow`).
    pub unslotted: u64,
    /// Book counters summed over instruments.
    pub book: BookCounts,
    /// Feature counters summed over instruments.
    pub features: FeatureCounts,
}

/// Books, feature state and bars for every instrument.
pub struct FeatureEngine {
    books: Books,
    states: Vec<FeatureState>,
    bars: Vec<[BarBuilder; 2]>,
    time_source: TimeSource,
    depth: Depth,
    events: u64,
    vectors: u64,
    trades: u64,
    bar_count: u64,
    unslotted: u64,
}

impl std::fmt::Debug for FeatureEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureEngine")
            .field("events", &self.events)
            .field("vectors", &self.vectors)
            .finish_non_exhaustive()
    }
}

impl FeatureEngine {
    /// Allocates every book, window and bar builder up front.
    ///
    /// # Errors
    /// Invalid capacities.
    pub fn new(cfg: &FeatureEngineConfig) -> Result<Self, PipelineError> {
        let books = Books::new(&cfg.book)?;
        let n = cfg.book.max_instruments;
        Ok(Self {
            books,
            states: (0..n).map(|_| FeatureState::new(&cfg.features)).collect(),
            bars: (0..n)
                .map(|_| BAR_INTERVALS_NS.map(BarBuilder::new))
                .collect(),
            time_source: cfg.features.time_source,
            depth: Depth::default(),
            events: 0,
            vectors: 0,
            trades: 0,
            bar_count: 0,
            unslotted: 0,
        })
    }

    /// Applies one event. Returns `true` when it completed a consistent book state, in which case
    /// `out` holds the new vector (and the event's identity and stamps). Completed bars are
    /// handed to `on_bar` with the instrument id.
    #[inline]
    pub fn on_event(
        &mut self,
        ev: &Event,
        out: &mut Tick,
        on_bar: &mut impl FnMut(u32, Bar),
    ) -> bool {
        self.events += 1;
        let is_book = ev.rtype == rtype::MBO || ev.levels > 0;
        let is_trade_record = is_book || ev.rtype == rtype::MBP_0;
        let slot = match self.books.apply(ev) {
            Some(slot) => slot,
            // Trades-only records feed the trade features of an instrument that has a book.
            None if ev.rtype == rtype::MBP_0 => match self.books.claim(ev.instrument_id) {
                Some(slot) => slot,
                None => {
                    self.unslotted += 1;
                    return false;
                }
            },
            None => {
                if is_book {
                    self.unslotted += 1;
                }
                return false;
            }
        };
        if !is_trade_record || !ev.completes_record() {
            return false;
        }
        let ts = self.time_source.pick(ev.ts_recv, ev.ts_event);
        let state = &mut self.states[slot];
        // Snapshot records restate the book; they are not market activity.
        if !ev.is_snapshot() {
            state.on_event(ts);
        }
        let bars = &mut self.bars[slot];
        if ev.action == b'T' {
            let trade = Trade {
                price: ev.price,
                size: ev.size,
                side: ev.side,
            };
            self.trades += 1;
            state.on_trade(ts, &trade);
            for b in bars.iter_mut() {
                if let Some(bar) = b.on_trade(ts, &trade) {
                    self.bar_count += 1;
                    on_bar(ev.instrument_id, bar);
                }
            }
        } else {
            for b in bars.iter_mut() {
                if let Some(bar) = b.on_time(ts) {
                    self.bar_count += 1;
                    on_bar(ev.instrument_id, bar);
                }
            }
        }
        if !is_book || !ev.is_last() {
            return false;
        }
        let book = self.books.book(slot);
        book.depth(&mut self.depth);
        state.on_book(ts, &self.depth, book.tick_size(), &mut out.values);
        out.seq = ev.seq;
        out.publish_ticks = ev.publish_ticks;
        out.ts_event = ev.ts_event;
        out.ts_recv = ev.ts_recv;
        out.instrument_id = ev.instrument_id;
        out.publisher_id = ev.publisher_id;
        out.flags = ev.flags;
        out.missed_before = ev.missed_before;
        out.crossed = book.is_crossed();
        self.vectors += 1;
        true
    }

    /// Completes the bars still open (end of a stream), handing them to `on_bar`.
    pub fn flush_bars(&mut self, on_bar: &mut impl FnMut(u32, Bar)) {
        for slot in 0..self.books.len() {
            let id = self.books.book(slot).instrument_id();
            for b in self.bars[slot].iter_mut() {
                if let Some(bar) = b.flush() {
                    self.bar_count += 1;
                    on_bar(id, bar);
                }
            }
        }
    }

    /// The books.
    pub fn books(&self) -> &Books {
        &self.books
    }

    /// Counters.
    pub fn counts(&self) -> FeatureEngineCounts {
        let mut features = FeatureCounts::default();
        for s in &self.states {
            features.add(&s.counts());
        }
        FeatureEngineCounts {
            events: self.events,
            vectors: self.vectors,
            trades: self.trades,
            bars: self.bar_count,
            unslotted: self.unslotted,
            book: self.books.counts(),
            features,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{EVENT_RATE_1S, MID, SPREAD_TICKS, TRADE_RATE_1S};

    fn mbo(action: u8, side: u8, id: u64, price: i64, size: u32, flags: u8, ts: u64) -> Event {
        Event {
            rtype: rtype::MBO,
            instrument_id: 7,
            action,
            side,
            order_id: id,
            price,
            size,
            flags,
            ts_recv: ts,
            ts_event: ts,
            ..Event::default()
        }
    }

    const LAST: u8 = 0x80;
    const SNAP: u8 = 0x20;
    const PX: i64 = 100_000_000_000;

    #[test]
    fn emits_at_consistent_states_only() {
        let mut e = FeatureEngine::new(&FeatureEngineConfig::default()).unwrap();
        let mut t = Tick::default();
        let mut bars = 0;
        let mut on_bar = |_: u32, _: Bar| bars += 1;
        // A snapshot: restates the book, is not activity.
        assert!(!e.on_event(&mbo(b'A', b'B', 1, PX, 5, SNAP, 10), &mut t, &mut on_bar));
        assert!(e.on_event(
            &mbo(b'A', b'A', 2, PX + 250_000_000, 5, SNAP | LAST, 10),
            &mut t,
            &mut on_bar
        ));
        assert_eq!(t.values[EVENT_RATE_1S], 0.0);
        assert!(t.values[SPREAD_TICKS].is_nan(), "no tick size yet");
        // A definition gives the tick size.
        let def = Event {
            rtype: rtype::INSTRUMENT_DEF,
            instrument_id: 7,
            price: 250_000_000,
            ..Event::default()
        };
        assert!(!e.on_event(&def, &mut t, &mut on_bar));
        // Without F_LAST nothing is emitted; with it, the vector reflects both records.
        assert!(!e.on_event(
            &mbo(b'T', b'B', 0, PX + 250_000_000, 1, 0, 20),
            &mut t,
            &mut on_bar
        ));
        assert!(e.on_event(
            &mbo(b'C', b'A', 2, PX + 250_000_000, 1, LAST, 20),
            &mut t,
            &mut on_bar
        ));
        assert_eq!(t.values[MID], 100.125);
        assert_eq!(t.values[SPREAD_TICKS], 1.0);
        assert_eq!(
            (t.values[EVENT_RATE_1S], t.values[TRADE_RATE_1S]),
            (2.0, 1.0)
        );
        assert_eq!((t.ts_recv, t.instrument_id), (20, 7));
        // MBP-10: ten parts, one vector at the last (with F_LAST).
        let mut part = Event {
            rtype: rtype::MBP_10,
            instrument_id: 8,
            levels: 10,
            flags: LAST,
            action: b'A',
            bid_px: PX,
            ask_px: PX + 250_000_000,
            bid_sz: 3,
            ask_sz: 4,
            ts_recv: 30,
            ..Event::default()
        };
        for level in 0..10u8 {
            part.level = level;
            let emitted = e.on_event(&part, &mut t, &mut on_bar);
            assert_eq!(emitted, level == 9, "part {level}");
        }
        assert_eq!(t.instrument_id, 8);
        let c = e.counts();
        assert_eq!((c.vectors, c.trades, c.unslotted), (3, 1, 0));
        // A trades-only record of a new instrument gets a slot for its trade features.
        let trade = Event {
            rtype: rtype::MBP_0,
            instrument_id: 9,
            action: b'T',
            side: b'A',
            price: PX,
            size: 2,
            ts_recv: 2_000_000_000,
            ..Event::default()
        };
        assert!(!e.on_event(&trade, &mut t, &mut on_bar));
        assert_eq!(e.counts().trades, 2);
        assert!(e.books().slot(9).is_some());
        let _ = on_bar;
        e.flush_bars(&mut |_, _| bars += 1);
        // Each traded instrument closes a 1 s and a 1 min bar.
        assert_eq!(bars, 4);
    }
}
