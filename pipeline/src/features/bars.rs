//! OHLCV time bars from trades, in the manner of Databento's `ohlcv-1s` / `ohlcv-1m`.

use crate::depth::Trade;

/// One completed time bar: the trades stamped in `[ts_start, ts_start + interval_ns)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bar {
    /// Start of the interval, a multiple of `interval_ns` (ns since the UNIX epoch).
    pub ts_start: u64,
    /// Interval length.
    pub interval_ns: u64,
    /// First trade price (1e-9 fixed point).
    pub open: i64,
    /// Highest trade price.
    pub high: i64,
    /// Lowest trade price.
    pub low: i64,
    /// Last trade price.
    pub close: i64,
    /// Sum of trade sizes.
    pub volume: u64,
    /// Number of trades (saturating).
    pub trades: u32,
}

impl Bar {
    /// End of the interval (exclusive).
    #[inline]
    pub fn ts_end(&self) -> u64 {
        self.ts_start.saturating_add(self.interval_ns)
    }
}

/// Builds bars of one interval from a trade stream.
///
/// Intervals are `[k * I, (k + 1) * I)`. A bar is emitted when a call with a timestamp at or
/// after its end arrives ([`BarBuilder::on_trade`] or [`BarBuilder::on_time`]), or on
/// [`BarBuilder::flush`]; intervals without trades emit nothing. Timestamps follow the same
/// rule as the features: one below the largest seen so far is taken as that largest, so a
/// late trade joins the open bar.
#[derive(Debug, Clone)]
pub struct BarBuilder {
    interval_ns: u64,
    now: u64,
    /// End of the open bar (`u64::MAX` without one, where `take` finds nothing): every record
    /// checks it, so it is kept ready rather than recomputed from the bar.
    close_at: u64,
    open: Option<Bar>,
}

impl BarBuilder {
    /// A builder of `interval_ns` bars.
    ///
    /// # Panics
    /// If `interval_ns` is 0.
    pub fn new(interval_ns: u64) -> Self {
        assert!(interval_ns > 0, "bar interval must be positive");
        Self {
            interval_ns,
            now: 0,
            close_at: u64::MAX,
            open: None,
        }
    }

    /// The interval.
    pub fn interval_ns(&self) -> u64 {
        self.interval_ns
    }

    /// The bar being built, if any.
    pub fn current(&self) -> Option<&Bar> {
        self.open.as_ref()
    }

    #[inline]
    fn clock(&mut self, ts: u64) -> u64 {
        self.now = self.now.max(ts);
        self.now
    }

    /// Emits the open bar if `now` is at or past its end.
    #[inline]
    fn close_before(&mut self, now: u64) -> Option<Bar> {
        if now >= self.close_at {
            self.close_at = u64::MAX;
            self.open.take()
        } else {
            None
        }
    }

    /// Adds a trade; returns the previous bar if this trade is past its end.
    #[inline]
    pub fn on_trade(&mut self, ts: u64, trade: &Trade) -> Option<Bar> {
        let now = self.clock(ts);
        let done = self.close_before(now);
        match &mut self.open {
            Some(bar) => {
                bar.high = bar.high.max(trade.price);
                bar.low = bar.low.min(trade.price);
                bar.close = trade.price;
                bar.volume = bar.volume.saturating_add(u64::from(trade.size));
                bar.trades = bar.trades.saturating_add(1);
            }
            None => {
                let bar = Bar {
                    ts_start: now - now % self.interval_ns,
                    interval_ns: self.interval_ns,
                    open: trade.price,
                    high: trade.price,
                    low: trade.price,
                    close: trade.price,
                    volume: u64::from(trade.size),
                    trades: 1,
                };
                self.close_at = bar.ts_end();
                self.open = Some(bar);
            }
        }
        done
    }

    /// Time passes without a trade (any other record); returns the open bar if `ts` is at or
    /// past its end.
    #[inline]
    pub fn on_time(&mut self, ts: u64) -> Option<Bar> {
        let now = self.clock(ts);
        self.close_before(now)
    }

    /// Returns the open bar, if any, incomplete (end of the stream).
    pub fn flush(&mut self) -> Option<Bar> {
        self.close_at = u64::MAX;
        self.open.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn trade(price: i64, size: u32) -> Trade {
        Trade {
            price,
            size,
            side: b'N',
        }
    }

    #[test]
    fn one_interval_collects_ohlcv() {
        let mut b = BarBuilder::new(S);
        assert_eq!(b.on_trade(10 * S + 5, &trade(100, 2)), None);
        assert_eq!(b.on_trade(10 * S + 6, &trade(103, 1)), None);
        assert_eq!(b.on_trade(10 * S + 7, &trade(99, 4)), None);
        assert_eq!(b.on_trade(11 * S - 1, &trade(101, 3)), None);
        let bar = b.on_time(11 * S).expect("end of interval reached");
        assert_eq!(
            bar,
            Bar {
                ts_start: 10 * S,
                interval_ns: S,
                open: 100,
                high: 103,
                low: 99,
                close: 101,
                volume: 10,
                trades: 4,
            }
        );
        assert_eq!(bar.ts_end(), 11 * S);
        assert_eq!(b.flush(), None);
    }

    #[test]
    fn boundary_trade_starts_the_next_bar() {
        let mut b = BarBuilder::new(S);
        b.on_trade(S - 1, &trade(5, 1));
        let bar = b.on_trade(S, &trade(6, 1)).expect("previous bar closes");
        assert_eq!((bar.ts_start, bar.close, bar.trades), (0, 5, 1));
        let open = b.current().expect("new bar open");
        assert_eq!((open.ts_start, open.open), (S, 6));
    }

    #[test]
    fn empty_intervals_emit_nothing() {
        let mut b = BarBuilder::new(S);
        assert_eq!(b.on_time(3 * S), None);
        b.on_trade(3 * S + 1, &trade(7, 1));
        // Five empty seconds later: one bar (the one with the trade), none for the gap.
        let bar = b.on_trade(9 * S + 2, &trade(8, 2)).expect("bar");
        assert_eq!(bar.ts_start, 3 * S);
        assert_eq!(b.on_time(9 * S + 3), None);
        assert_eq!(
            b.on_time(20 * S),
            Some(Bar {
                ts_start: 9 * S,
                interval_ns: S,
                open: 8,
                high: 8,
                low: 8,
                close: 8,
                volume: 2,
                trades: 1,
            })
        );
        assert_eq!(b.on_time(30 * S), None);
    }

    #[test]
    fn flush_returns_the_open_bar_once() {
        let mut b = BarBuilder::new(60 * S);
        b.on_trade(61 * S, &trade(1, 1));
        b.on_trade(62 * S, &trade(2, 1));
        let bar = b.flush().expect("open bar");
        assert_eq!(
            (bar.ts_start, bar.interval_ns, bar.volume),
            (60 * S, 60 * S, 2)
        );
        assert_eq!(b.flush(), None);
    }

    #[test]
    fn last_interval_closes_at_the_end_of_time() {
        let mut b = BarBuilder::new(S);
        assert_eq!(b.on_time(u64::MAX - 2), None);
        b.on_trade(u64::MAX - 1, &trade(3, 1));
        assert_eq!(b.on_time(u64::MAX - 1), None);
        let bar = b.on_time(u64::MAX).expect("the saturated end is reached");
        assert_eq!((bar.ts_end(), bar.close), (u64::MAX, 3));
        assert_eq!(b.on_time(u64::MAX), None);
        // After a flush the next trade opens a fresh bar that closes on time.
        let mut b = BarBuilder::new(S);
        b.on_trade(S, &trade(1, 1));
        assert!(b.flush().is_some());
        b.on_trade(3 * S, &trade(2, 1));
        assert_eq!(b.on_time(4 * S - 1), None);
        assert_eq!(b.on_time(4 * S).map(|bar| bar.open), Some(2));
    }

    #[test]
    fn late_trade_joins_the_open_bar() {
        let mut b = BarBuilder::new(S);
        b.on_trade(5 * S + 10, &trade(1, 1));
        assert_eq!(b.on_trade(4 * S, &trade(2, 1)), None);
        let bar = b.flush().expect("bar");
        assert_eq!((bar.ts_start, bar.trades, bar.close), (5 * S, 2, 2));
    }
}
