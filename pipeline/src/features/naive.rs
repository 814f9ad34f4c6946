//! A reference implementation of the feature vector: it keeps the history since the last reset
//! and recomputes every feature from scratch at each book state, straight from the definitions
//! in the [module docs](super). Slow (O(retained history) per book state) and allocating; for
//! tests and offline checks of [`FeatureState`](super::FeatureState).
//!
//! History that can no longer enter any window is dropped (the clock never goes back): events
//! older than 1 s, trades older than 60 s (the latest trade is kept for its sign), the OFI of
//! book states older than 10 s beyond the last 100, and recorded mids before the latest one at or
//! before `now - 60 s` (the base of the 60 s return and of the oldest return in the 60 s
//! variance). The sums still run over exactly the entries in each window, oldest first.

use super::{
    DEPTH_IMBALANCE_L1, EVENT_RATE_1S, FeatureConfig, FeatureCounts, LAST_TRADE_SIGN,
    LOG_RETURN_1S, MICROPRICE, MID, N_FEATURES, OFI_1S, OFI_100EV, OFI_UPDATES, RV_1S,
    SIGNED_VOLUME_1S, SIGNED_VOLUME_10S, SPREAD_BPS, SPREAD_TICKS, TRADE_RATE_1S, VWAP_DEV_60S_BPS,
};
use crate::depth::{Depth, FEATURE_LEVELS, Level, Trade};

const SECOND: i128 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct TradeRecord {
    ts: u64,
    price: i64,
    size: u32,
    sign: i64,
}

/// The same API as [`FeatureState`](super::FeatureState), computed from the full history.
#[derive(Debug, Clone)]
pub struct NaiveFeatures {
    default_tick_size: Option<i64>,
    now: u64,
    counts: FeatureCounts,
    events: Vec<u64>,
    trades: Vec<TradeRecord>,
    /// The latest book state (the previous one for OFI, the quote for the tick rule).
    last_book: Option<Depth>,
    /// OFI of every retained book state (0 for the first since the reset).
    flows: Vec<(u64, i128)>,
    /// `bid + ask` of every retained recorded mid.
    mids: Vec<(u64, i128)>,
}

/// The levels of one side that the features read.
fn side(levels: &[Level; FEATURE_LEVELS], n: u8) -> &[Level] {
    &levels[..usize::from(n).min(FEATURE_LEVELS)]
}

fn best(levels: &[Level; FEATURE_LEVELS], n: u8) -> Option<Level> {
    side(levels, n).first().copied()
}

/// `Some((bid, ask))` if both sides have a level.
fn quote(d: &Depth) -> Option<(Level, Level)> {
    Some((best(&d.bids, d.bid_levels)?, best(&d.asks, d.ask_levels)?))
}

/// `bid + ask` of a state whose mid is recorded (two-sided, positive).
fn recorded_mid(d: &Depth) -> Option<i128> {
    let (b, a) = quote(d)?;
    let s = i128::from(b.price) + i128::from(a.price);
    (s > 0).then_some(s)
}

/// Order flow imbalance between two states, case by case.
fn ofi(prev: &Depth, cur: &Depth) -> i128 {
    // Empty sides: bid -inf, ask +inf, size 0.
    let bid = |d: &Depth| {
        best(&d.bids, d.bid_levels).map_or((i128::MIN, 0), |l| {
            (i128::from(l.price), i128::from(l.size))
        })
    };
    let ask = |d: &Depth| {
        best(&d.asks, d.ask_levels).map_or((i128::MAX, 0), |l| {
            (i128::from(l.price), i128::from(l.size))
        })
    };
    let ((pb0, qb0), (pb1, qb1)) = (bid(prev), bid(cur));
    let ((pa0, qa0), (pa1, qa1)) = (ask(prev), ask(cur));
    let bid_flow = if pb1 > pb0 {
        qb1
    } else if pb1 == pb0 {
        qb1 - qb0
    } else {
        -qb0
    };
    let ask_flow = if pa1 < pa0 {
        qa1
    } else if pa1 == pa0 {
        qa1 - qa0
    } else {
        -qa0
    };
    bid_flow - ask_flow
}

/// `ln(s1 / s0)` the way the definitions prescribe (through the exact difference).
fn log_return(s1: i128, s0: i128) -> f64 {
    ((s1 - s0) as f64 / s0 as f64).ln_1p()
}

/// Whether `ts` is inside the window of `width` ending at `now`.
fn inside(ts: u64, now: u64, width: i128) -> bool {
    i128::from(ts) > i128::from(now) - width
}

impl NaiveFeatures {
    /// An empty history.
    pub fn new(cfg: &FeatureConfig) -> Self {
        Self {
            default_tick_size: cfg.default_tick_size,
            now: 0,
            counts: FeatureCounts::default(),
            events: Vec::new(),
            trades: Vec::new(),
            last_book: None,
            flows: Vec::new(),
            mids: Vec::new(),
        }
    }

    fn clock(&mut self, ts: u64) -> u64 {
        if ts < self.now {
            self.counts.time_regressions += 1;
        } else {
            self.now = ts;
        }
        self.now
    }

    /// One record of the instrument.
    pub fn on_event(&mut self, ts: u64) {
        let now = self.clock(ts);
        self.counts.events += 1;
        self.events.push(now);
    }

    /// A trade.
    pub fn on_trade(&mut self, ts: u64, trade: &Trade) {
        let now = self.clock(ts);
        self.counts.trades += 1;
        let sign = match trade.side {
            b'B' => 1,
            b'A' => -1,
            _ => match self.last_book.as_ref().and_then(quote) {
                // Tick rule: compare 2 * price with bid + ask, exactly.
                Some((b, a)) => {
                    let twice = 2 * i128::from(trade.price);
                    (twice - (i128::from(b.price) + i128::from(a.price))).signum() as i64
                }
                None => 0,
            },
        };
        self.trades.push(TradeRecord {
            ts: now,
            price: trade.price,
            size: trade.size,
            sign,
        });
    }

    /// A book state: recomputes the vector from the whole history.
    pub fn on_book(
        &mut self,
        ts: u64,
        depth: &Depth,
        tick_size: Option<i64>,
        out: &mut [f64; N_FEATURES],
    ) {
        let now = self.clock(ts);
        self.counts.books += 1;
        let e = self.last_book.as_ref().map_or(0, |prev| ofi(prev, depth));
        self.flows.push((now, e));
        self.last_book = Some(*depth);
        if let Some(s) = recorded_mid(depth) {
            self.mids.push((now, s));
        }
        self.prune(now);
        out.fill(f64::NAN);

        let q = quote(depth);
        if let Some((b, a)) = q {
            let (bid, ask) = (b.price as f64 * 1e-9, a.price as f64 * 1e-9);
            let mid = (bid + ask) / 2.0;
            out[MID] = mid;
            if let Some(tick) = tick_size.or(self.default_tick_size).filter(|t| *t > 0) {
                out[SPREAD_TICKS] = (a.price - b.price) as f64 / tick as f64;
            }
            if mid > 0.0 {
                out[SPREAD_BPS] = (ask - bid) / mid * 1e4;
            }
            let (qb, qa) = (b.size as f64, a.size as f64);
            if qb + qa > 0.0 {
                out[MICROPRICE] = (bid * qa + ask * qb) / (qb + qa);
            }
            for k in 1..=FEATURE_LEVELS {
                let total = |levels: &[Level; FEATURE_LEVELS], n: u8| -> i128 {
                    side(levels, n)
                        .iter()
                        .take(k)
                        .map(|l| i128::from(l.size))
                        .sum()
                };
                let bsum = total(&depth.bids, depth.bid_levels);
                let asum = total(&depth.asks, depth.ask_levels);
                if bsum + asum > 0 {
                    out[DEPTH_IMBALANCE_L1 + k - 1] = (bsum - asum) as f64 / (bsum + asum) as f64;
                }
            }
        }

        // OFI window sums.
        let flows = &self.flows;
        out[OFI_100EV] = flows
            .iter()
            .rev()
            .take(OFI_UPDATES)
            .map(|(_, e)| e)
            .sum::<i128>() as f64;
        for (k, width) in [SECOND, 10 * SECOND].into_iter().enumerate() {
            out[OFI_1S + k] = flows
                .iter()
                .filter(|(t, _)| inside(*t, now, width))
                .map(|(_, e)| e)
                .sum::<i128>() as f64;
        }

        // Trades.
        if let Some(last) = self.trades.last() {
            out[LAST_TRADE_SIGN] = last.sign as f64;
        }
        for (index, width) in [(SIGNED_VOLUME_1S, SECOND), (SIGNED_VOLUME_10S, 10 * SECOND)] {
            out[index] = self
                .trades
                .iter()
                .filter(|t| inside(t.ts, now, width))
                .map(|t| i128::from(t.sign) * i128::from(t.size))
                .sum::<i128>() as f64;
        }
        out[TRADE_RATE_1S] = self
            .trades
            .iter()
            .filter(|t| inside(t.ts, now, SECOND))
            .count() as f64;
        let (notional, volume) = self
            .trades
            .iter()
            .filter(|t| inside(t.ts, now, 60 * SECOND))
            .fold((0i128, 0i128), |(n, v), t| {
                (
                    n + i128::from(t.price) * i128::from(t.size),
                    v + i128::from(t.size),
                )
            });
        if let Some((b, a)) = q
            && volume > 0
            && notional > 0
        {
            // mid / vwap - 1 = (s * volume - 2 * notional) / (2 * notional), s = bid + ask.
            let s = i128::from(b.price) + i128::from(a.price);
            out[VWAP_DEV_60S_BPS] =
                (s * volume - 2 * notional) as f64 / (2 * notional) as f64 * 1e4;
        }

        // Recorded mids, their returns, realized variance and horizon returns.
        let mids = &self.mids;
        let current = recorded_mid(depth);
        for (k, h) in [SECOND, 10 * SECOND, 60 * SECOND].into_iter().enumerate() {
            out[RV_1S + k] = mids
                .windows(2)
                .filter(|w| inside(w[1].0, now, h))
                .map(|w| {
                    let r = log_return(w[1].1, w[0].1);
                    r * r
                })
                .sum();
            let base = mids
                .iter()
                .rev()
                .find(|(t, _)| i128::from(*t) <= i128::from(now) - h);
            if let (Some(s), Some((_, s0))) = (current, base) {
                out[LOG_RETURN_1S + k] = log_return(s, *s0);
            }
        }

        out[EVENT_RATE_1S] = self
            .events
            .iter()
            .filter(|t| inside(**t, now, SECOND))
            .count() as f64;
    }

    /// Counters (`window_overflow` is always 0: nothing is bounded here).
    pub fn counts(&self) -> FeatureCounts {
        self.counts
    }

    /// Forgets the history and the clock; counters are kept.
    pub fn reset(&mut self) {
        self.now = 0;
        self.counts.resets += 1;
        self.events.clear();
        self.trades.clear();
        self.last_book = None;
        self.flows.clear();
        self.mids.clear();
    }

    /// Drops what no window can reach again (see the module docs).
    fn prune(&mut self, now: u64) {
        let now = i128::from(now);
        let old = |ts: u64, width: i128| i128::from(ts) <= now - width;
        let n = self.events.iter().take_while(|t| old(**t, SECOND)).count();
        self.events.drain(..n);
        let n = self
            .trades
            .iter()
            .take_while(|t| old(t.ts, 60 * SECOND))
            .count()
            .min(self.trades.len().saturating_sub(1));
        self.trades.drain(..n);
        let n = self
            .flows
            .iter()
            .take_while(|(t, _)| old(*t, 10 * SECOND))
            .count()
            .min(self.flows.len().saturating_sub(OFI_UPDATES));
        self.flows.drain(..n);
        // Keep the latest mid at or before now - 60 s.
        let n = self
            .mids
            .iter()
            .take_while(|(t, _)| old(*t, 60 * SECOND))
            .count()
            .saturating_sub(1);
        self.mids.drain(..n);
    }
}
