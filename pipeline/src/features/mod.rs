//! Incremental microstructure features for one instrument, the named and versioned vector the
//! models read (schema [`SCHEMA_NAME`] version [`SCHEMA_VERSION`]), and OHLCV time bars.
//!
//! [`FeatureState`] is fed every record of its instrument ([`FeatureState::on_event`]), every
//! trade ([`FeatureState::on_trade`]) and every consistent book state
//! ([`FeatureState::on_book`], which writes the vector). Each call is O(1) amortised: windows
//! are fixed-capacity rings with running sums, never rescanned. [`naive::NaiveFeatures`]
//! computes the same vector from the full history (slow; for tests and offline checks).
//! Prices are DBN fixed point (1e-9) everywhere else in the pipeline and turn into `f64` here.
//!
//! # Schema
//!
//! | # | name | unit | definition (notation below) |
//! |---|------|------|-----------------------------|
//! | 0 | `mid` | price | `(b + a) / 2` |
//! | 1 | `spread_ticks` | ticks | `(a - b) / tick`; NaN without a positive tick size |
//! | 2 | `spread_bps` | bps | `1e4 * (a - b) / mid`; NaN if `mid <= 0` |
//! | 3 | `microprice` | price | `(b * qa + a * qb) / (qb + qa)`; NaN if `qb + qa = 0` |
//! | 4–8 | `depth_imbalance_l1` … `_l5` | ratio in [-1, 1] | `(B_k - A_k) / (B_k + A_k)`, `B_k`, `A_k` the sizes summed over levels 1..=k of each side (levels a side lacks count 0); NaN if `B_k + A_k = 0` |
//! | 9 | `ofi_100ev` | size | sum of `e_n` over the last 100 book states (this one included) |
//! | 10 | `ofi_1s` | size | sum of `e_n` over book states stamped in `(t - 1 s, t]` |
//! | 11 | `ofi_10s` | size | the same over `(t - 10 s, t]` |
//! | 12 | `last_trade_sign` | sign | sign (+1, 0, -1) of the latest trade; NaN if none |
//! | 13 | `signed_volume_1s` | size | sum of `sign * size` over trades stamped in `(t - 1 s, t]`; 0 if none |
//! | 14 | `signed_volume_10s` | size | the same over `(t - 10 s, t]` |
//! | 15 | `rv_1s` | (log return)² | sum of `r_j²` over mid returns stamped in `(t - 1 s, t]`; 0 if none |
//! | 16 | `rv_10s` | (log return)² | the same over `(t - 10 s, t]` |
//! | 17 | `rv_60s` | (log return)² | the same over `(t - 60 s, t]` |
//! | 18 | `log_return_1s` | log return | `ln(m_t / m_base)`, `m_base` the last recorded mid stamped at or before `t - 1 s`; NaN if there is none, or if this state's mid is not recorded |
//! | 19 | `log_return_10s` | log return | the same with `t - 10 s` |
//! | 20 | `log_return_60s` | log return | the same with `t - 60 s` |
//! | 21 | `vwap_dev_60s_bps` | bps | `1e4 * (mid - vwap) / vwap`, `vwap = Σ p·q / Σ q` over trades stamped in `(t - 60 s, t]`; NaN if `Σ q = 0` or `vwap <= 0` |
//! | 22 | `event_rate_1s` | 1/s | [`FeatureState::on_event`] calls stamped in `(t - 1 s, t]`, divided by 1 s |
//! | 23 | `trade_rate_1s` | 1/s | [`FeatureState::on_trade`] calls stamped in `(t - 1 s, t]`, divided by 1 s |
//!
//! Every feature that reads the book (0–8, 18–21) is NaN when the book is one-sided (either
//! side has no level). Apart from `last_trade_sign` before the first trade, nothing else is
//! ever NaN: sums over an empty window are 0.
//!
//! # Definitions
//!
//! - **Clock.** Every call takes a timestamp (`ts_recv` or `ts_event`, see [`TimeSource`]).
//!   The clock `t` is the largest timestamp seen since the last [`FeatureState::reset`]; a call
//!   with a smaller one counts a `time_regression` and is stamped `t` instead, so windows only
//!   move forward. Everything recorded by a call is stamped with the clock after that call.
//! - **Windows.** A window of width `W` evaluated at `t` holds what is stamped in the half-open
//!   interval `(t - W, t]`: an item stamped exactly `t - W` has left it. Before `t >= W` the
//!   window holds everything since the reset.
//! - **Book.** `b`, `a`: best bid and ask prices (converted from 1e-9 fixed point); `qb`, `qa`:
//!   their sizes; `mid = (b + a) / 2`. Only the first `bid_levels` / `ask_levels` (at most 5)
//!   levels of a [`Depth`] are read. A crossed or locked book is used as it is (the spread is
//!   then negative or zero).
//! - **Events.** An event is one [`FeatureState::on_event`] call (the caller makes one per
//!   record of the instrument, trades and book records alike). A trade is one
//!   [`FeatureState::on_trade`] call; a book state one [`FeatureState::on_book`] call.
//! - **Order flow imbalance** (Cont, Kukanov and Stoikov, 2014) between consecutive book states
//!   `n - 1` and `n`, on best prices `B`, `A` and sizes `qB`, `qA`:
//!   `e_n = qB_n·[B_n >= B_{n-1}] - qB_{n-1}·[B_n <= B_{n-1}] - qA_n·[A_n <= A_{n-1}]
//!   + qA_{n-1}·[A_n >= A_{n-1}]`. An empty bid side counts as price -∞ with size 0 and an
//!   empty ask side as +∞ with size 0, so a side appearing adds its size and a side vanishing
//!   removes it. The first book state after a reset has `e = 0`.
//! - **Trade sign.** DBN side `B` (buyer aggressor) is +1, `A` is -1. Any other side (`N`) uses
//!   the tick rule against the current mid, the mid of the latest book state: +1 above it, -1
//!   below, 0 at it, and 0 when there is no two-sided book state yet (or the latest is
//!   one-sided).
//! - **Recorded mids and returns.** A book state's mid is recorded when the book is two-sided
//!   and `b + a > 0`. The mid return `r_j = ln(m_j / m_{j-1})` is taken between consecutive
//!   recorded mids (one-sided states in between are skipped) and stamped with the later one;
//!   the first recorded mid after a reset has no return. `m_t` in the log returns is this
//!   state's mid, and the return horizon is covered once some recorded mid is stamped at or
//!   before `t - h`. Returns are computed as `ln_1p((s_j - s_{j-1}) / s_{j-1})` with
//!   `s = bid + ask` in exact fixed point, so that a one-tick move keeps its precision.
//! - **VWAP deviation** is computed as `1e4 * (s·Σq - 2·Σp·q) / (2·Σp·q)` with the numerator in
//!   exact integers, so a mid equal to the VWAP gives exactly 0.
//! - Integer sizes are assumed below 2^63 and prices and their sums inside `i64`; beyond that
//!   the integer sums wrap instead of panicking. The depth imbalance sums of one side are exact
//!   in `f64` below 2^53.
//!
//! # Exactness, capacity and cost
//!
//! Integer features (OFI, signed volume, counts, the VWAP sums) are exact running sums in
//! wrapping integers. Realized variance uses a two-stacks sliding-window sum (no subtraction,
//! so no drift; an empty window reads exactly 0). Every value matches the recompute of
//! [`naive::NaiveFeatures`] to 1e-9 relative as long as no window ring overflows.
//!
//! Each family of time windows keeps its entries in one ring of
//! [`FeatureConfig::window_capacity`] entries: records (same-stamp records share an entry),
//! trades (same stamp, price and side share one), OFI (only `e_n != 0`, same-stamp values
//! share one) and recorded mids (one per change). When a ring is full its oldest entry is
//! dropped before it leaves the window and [`FeatureCounts::window_overflow`] counts it; from
//! then until the dropped entry would have left its window anyway, the affected sums, rates,
//! realized variance and the 60 s return base are not exact (a dropped base makes that return
//! NaN). An OFI value of magnitude 2^31 or more takes two slots, and a gap of more than 4.3 s
//! while entries are still inside the 10 s window takes a filler slot per 4.3 s (dropping a
//! filler early loses nothing and is not counted).
//!
//! All memory is allocated, and written, in [`FeatureState::new`], so that no page faults in
//! later on the hot path; [`FeatureState::reset`] only moves indices. The rings hold
//! `window_capacity` rounded up to a power of two slots each, 88 bytes per slot in all
//! ([`FeatureState::ring_bytes`]): 8 for records (a stamp delta and a count in one word),
//! 24 for trades, 8 for OFI (a stamp delta and the value in one word) and 48 for mids (stamp
//! and mid, squared return, and a suffix sum per horizon, in separate arrays), so 5.5 MiB per
//! instrument at the default 65,536.
//!
//! Per call the work is a handful of comparisons and stores besides what changed: each window
//! knows when its first entry leaves (usually nothing does), values that depend on the top of
//! the book, the mid or the trade window are kept with their inputs and recomputed only when
//! those change, and no `i128` arithmetic or conversion runs unless a value leaves `i64`.
//!
//! ```
//! use tickpipe_pipeline::depth::{Depth, Level};
//! use tickpipe_pipeline::features::{FeatureConfig, FeatureState, MID, N_FEATURES};
//!
//! let mut st = FeatureState::new(&FeatureConfig::default());
//! let mut depth = Depth::default();
//! depth.bids[0] = Level { price: 100_000_000_000, size: 10, count: 1 };
//! depth.asks[0] = Level { price: 100_500_000_000, size: 30, count: 1 };
//! depth.bid_levels = 1;
//! depth.ask_levels = 1;
//! let mut out = [0.0; N_FEATURES];
//! st.on_event(1_000);
//! st.on_book(1_000, &depth, Some(250_000_000), &mut out);
//! assert_eq!(out[MID], 100.25);
//! ```

mod bars;
pub mod naive;
mod window;

#[cfg(test)]
mod tests;

pub use bars::{Bar, BarBuilder};

use crate::depth::{Depth, FEATURE_LEVELS, Trade};
use window::{
    EventCounts, MID_WINDOWS, MidHistory, OFI_WINDOWS, OfiWindows, Ring, TRADE_WINDOWS, TradeEntry,
    TradeWindows, ring_size,
};

/// Name of the feature schema (stored with exported vectors and model manifests).
pub const SCHEMA_NAME: &str = "tickpipe.features";
/// Version of the feature schema; bumped on any change of names, order or definitions.
pub const SCHEMA_VERSION: u32 = 1;
/// Number of features in the vector.
pub const N_FEATURES: usize = 24;

/// Index of `mid`.
pub const MID: usize = 0;
/// Index of `spread_ticks`.
pub const SPREAD_TICKS: usize = 1;
/// Index of `spread_bps`.
pub const SPREAD_BPS: usize = 2;
/// Index of `microprice`.
pub const MICROPRICE: usize = 3;
/// Index of `depth_imbalance_l1`; `depth_imbalance_lk` is at `DEPTH_IMBALANCE_L1 + k - 1`.
pub const DEPTH_IMBALANCE_L1: usize = 4;
/// Index of `ofi_100ev`.
pub const OFI_100EV: usize = 9;
/// Index of `ofi_1s`.
pub const OFI_1S: usize = 10;
/// Index of `ofi_10s`.
pub const OFI_10S: usize = 11;
/// Index of `last_trade_sign`.
pub const LAST_TRADE_SIGN: usize = 12;
/// Index of `signed_volume_1s`.
pub const SIGNED_VOLUME_1S: usize = 13;
/// Index of `signed_volume_10s`.
pub const SIGNED_VOLUME_10S: usize = 14;
/// Index of `rv_1s`; `rv_10s` and `rv_60s` follow.
pub const RV_1S: usize = 15;
/// Index of `rv_10s`.
pub const RV_10S: usize = 16;
/// Index of `rv_60s`.
pub const RV_60S: usize = 17;
/// Index of `log_return_1s`; `log_return_10s` and `log_return_60s` follow.
pub const LOG_RETURN_1S: usize = 18;
/// Index of `log_return_10s`.
pub const LOG_RETURN_10S: usize = 19;
/// Index of `log_return_60s`.
pub const LOG_RETURN_60S: usize = 20;
/// Index of `vwap_dev_60s_bps`.
pub const VWAP_DEV_60S_BPS: usize = 21;
/// Index of `event_rate_1s`.
pub const EVENT_RATE_1S: usize = 22;
/// Index of `trade_rate_1s`.
pub const TRADE_RATE_1S: usize = 23;

/// Book states summed by `ofi_100ev`.
pub const OFI_UPDATES: usize = 100;

const NS_PER_S: u64 = 1_000_000_000;
/// Windows of the OFI sums (`ofi_1s`, `ofi_10s`).
const OFI_WIDTHS: [u64; OFI_WINDOWS] = [NS_PER_S, 10 * NS_PER_S];
/// Windows of the trade sums: 1 s (signed volume, trade rate), 10 s (signed volume), 60 s (VWAP).
const TRADE_WIDTHS: [u64; TRADE_WINDOWS] = [NS_PER_S, 10 * NS_PER_S, 60 * NS_PER_S];
/// Window of the event rate.
const EVENT_WIDTH: u64 = NS_PER_S;
/// Horizons of realized variance and log returns.
const MID_WIDTHS: [u64; MID_WINDOWS] = [NS_PER_S, 10 * NS_PER_S, 60 * NS_PER_S];
/// Fixed point scale of DBN prices.
const PRICE_SCALE: f64 = 1e-9;

/// One feature of the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FeatureSpec {
    /// Column name; carries the window where there is one.
    pub name: &'static str,
    /// Unit of the value.
    pub unit: &'static str,
    /// Exact definition (the module documentation has the common notation).
    pub description: &'static str,
}

const fn spec(name: &'static str, unit: &'static str, description: &'static str) -> FeatureSpec {
    FeatureSpec {
        name,
        unit,
        description,
    }
}

/// The feature vector's layout: names, units and definitions in vector order.
pub const SCHEMA: [FeatureSpec; N_FEATURES] = [
    spec(
        "mid",
        "price",
        "(best bid + best ask) / 2; NaN if one-sided",
    ),
    spec(
        "spread_ticks",
        "ticks",
        "(best ask - best bid) / tick size; NaN if one-sided or no positive tick size",
    ),
    spec(
        "spread_bps",
        "bps",
        "1e4 * (best ask - best bid) / mid; NaN if one-sided or mid <= 0",
    ),
    spec(
        "microprice",
        "price",
        "(bid * ask_size + ask * bid_size) / (bid_size + ask_size) at the best levels; \
         NaN if one-sided or both sizes 0",
    ),
    spec(
        "depth_imbalance_l1",
        "ratio",
        "(B - A) / (B + A), B and A the sizes of level 1 of each side; NaN if one-sided or B + A = 0",
    ),
    spec(
        "depth_imbalance_l2",
        "ratio",
        "(B - A) / (B + A), B and A the sizes of levels 1..=2 of each side; NaN if one-sided or B + A = 0",
    ),
    spec(
        "depth_imbalance_l3",
        "ratio",
        "(B - A) / (B + A), B and A the sizes of levels 1..=3 of each side; NaN if one-sided or B + A = 0",
    ),
    spec(
        "depth_imbalance_l4",
        "ratio",
        "(B - A) / (B + A), B and A the sizes of levels 1..=4 of each side; NaN if one-sided or B + A = 0",
    ),
    spec(
        "depth_imbalance_l5",
        "ratio",
        "(B - A) / (B + A), B and A the sizes of levels 1..=5 of each side; NaN if one-sided or B + A = 0",
    ),
    spec(
        "ofi_100ev",
        "size",
        "sum of the Cont-Kukanov-Stoikov order flow imbalance e_n over the last 100 book states",
    ),
    spec(
        "ofi_1s",
        "size",
        "sum of e_n over book states stamped in (t - 1 s, t]",
    ),
    spec(
        "ofi_10s",
        "size",
        "sum of e_n over book states stamped in (t - 10 s, t]",
    ),
    spec(
        "last_trade_sign",
        "sign",
        "+1 / -1 / 0 sign of the latest trade (side B, A, else tick rule against the mid); \
         NaN if no trade",
    ),
    spec(
        "signed_volume_1s",
        "size",
        "sum of sign * size over trades stamped in (t - 1 s, t]",
    ),
    spec(
        "signed_volume_10s",
        "size",
        "sum of sign * size over trades stamped in (t - 10 s, t]",
    ),
    spec(
        "rv_1s",
        "log return^2",
        "sum of squared log returns between consecutive recorded mids, stamped in (t - 1 s, t]",
    ),
    spec(
        "rv_10s",
        "log return^2",
        "sum of squared log returns between consecutive recorded mids, stamped in (t - 10 s, t]",
    ),
    spec(
        "rv_60s",
        "log return^2",
        "sum of squared log returns between consecutive recorded mids, stamped in (t - 60 s, t]",
    ),
    spec(
        "log_return_1s",
        "log return",
        "ln(mid / last recorded mid stamped at or before t - 1 s); NaN if none or one-sided",
    ),
    spec(
        "log_return_10s",
        "log return",
        "ln(mid / last recorded mid stamped at or before t - 10 s); NaN if none or one-sided",
    ),
    spec(
        "log_return_60s",
        "log return",
        "ln(mid / last recorded mid stamped at or before t - 60 s); NaN if none or one-sided",
    ),
    spec(
        "vwap_dev_60s_bps",
        "bps",
        "1e4 * (mid - vwap) / vwap, vwap over trades stamped in (t - 60 s, t]; \
         NaN if one-sided, no traded size or vwap <= 0",
    ),
    spec(
        "event_rate_1s",
        "1/s",
        "records stamped in (t - 1 s, t], per second",
    ),
    spec(
        "trade_rate_1s",
        "1/s",
        "trades stamped in (t - 1 s, t], per second",
    ),
];

/// Why a model's feature list does not match [`SCHEMA`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaMismatch {
    /// The schema version differs.
    #[error("feature schema {SCHEMA_NAME} version {found} where version {expected} is served")]
    Version {
        /// Served version ([`SCHEMA_VERSION`]).
        expected: u32,
        /// Version the model was built for.
        found: u32,
    },
    /// A name differs from the served one at its position.
    #[error("feature {position}: the model expects {found:?} where {expected:?} is served")]
    Name {
        /// Zero-based position.
        position: usize,
        /// Served name.
        expected: &'static str,
        /// The model's name.
        found: String,
    },
    /// The model's list ends before the schema does.
    #[error("feature {position}: {expected:?} is served but missing from the model's list")]
    Missing {
        /// Zero-based position of the first missing name.
        position: usize,
        /// Served name at that position.
        expected: &'static str,
    },
    /// The model's list goes on after the schema ends.
    #[error("feature {position}: the model expects {found:?}, which is not served")]
    Extra {
        /// Zero-based position of the first extra name.
        position: usize,
        /// The model's name.
        found: String,
    },
}

/// Checks that a model built for feature `names` (in input order) of schema `version` can read
/// the served vectors: the same version and exactly the names of [`SCHEMA`], in order.
///
/// # Errors
/// The first difference found: the version, then the first position whose name differs, then
/// a missing or an extra name.
pub fn check_schema(names: &[&str], version: u32) -> Result<(), SchemaMismatch> {
    if version != SCHEMA_VERSION {
        return Err(SchemaMismatch::Version {
            expected: SCHEMA_VERSION,
            found: version,
        });
    }
    for (position, spec) in SCHEMA.iter().enumerate() {
        match names.get(position) {
            None => {
                return Err(SchemaMismatch::Missing {
                    position,
                    expected: spec.name,
                });
            }
            Some(&found) if found != spec.name => {
                return Err(SchemaMismatch::Name {
                    position,
                    expected: spec.name,
                    found: found.to_string(),
                });
            }
            Some(_) => {}
        }
    }
    match names.get(N_FEATURES) {
        Some(&found) => Err(SchemaMismatch::Extra {
            position: N_FEATURES,
            found: found.to_string(),
        }),
        None => Ok(()),
    }
}

/// Position of feature `name` in the vector.
pub fn index_of(name: &str) -> Option<usize> {
    SCHEMA.iter().position(|s| s.name == name)
}

/// Which DBN timestamp drives the time windows.
///
/// Written `"ts_recv"` or `"ts_event"` in TOML and on the command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TimeSource {
    /// `ts_recv`, the capture server's receive time: one clock for the whole feed, so it is
    /// the default.
    #[default]
    #[serde(rename = "ts_recv")]
    Recv,
    /// `ts_event`, the venue's matching-engine time (may go back across channels).
    #[serde(rename = "ts_event")]
    Event,
}

impl TimeSource {
    /// The timestamp this source selects.
    #[inline]
    pub fn pick(self, ts_recv: u64, ts_event: u64) -> u64 {
        match self {
            TimeSource::Recv => ts_recv,
            TimeSource::Event => ts_event,
        }
    }
}

impl std::str::FromStr for TimeSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ts_recv" => Ok(TimeSource::Recv),
            "ts_event" => Ok(TimeSource::Event),
            _ => Err(format!("unknown time source {s:?} (ts_recv, ts_event)")),
        }
    }
}

impl std::fmt::Display for TimeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeSource::Recv => "ts_recv",
            TimeSource::Event => "ts_event",
        })
    }
}

/// Settings of a [`FeatureState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureConfig {
    /// Which timestamp the caller passes (the state itself takes whatever it is given).
    pub time_source: TimeSource,
    /// Most entries per window ring (at least 1; see the module docs on overflow).
    pub window_capacity: usize,
    /// Tick size (1e-9 fixed point) used when [`FeatureState::on_book`] gets none.
    pub default_tick_size: Option<i64>,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            time_source: TimeSource::Recv,
            window_capacity: 1 << 16,
            default_tick_size: None,
        }
    }
}

/// What a [`FeatureState`] counted since it was built ([`FeatureState::reset`] keeps them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeatureCounts {
    /// Window entries dropped early because a ring was full (the vector was not exact).
    pub window_overflow: u64,
    /// Calls whose timestamp was below the clock (stamped at the clock instead).
    pub time_regressions: u64,
    /// [`FeatureState::on_event`] calls.
    pub events: u64,
    /// [`FeatureState::on_trade`] calls.
    pub trades: u64,
    /// [`FeatureState::on_book`] calls.
    pub books: u64,
    /// [`FeatureState::reset`] calls.
    pub resets: u64,
}

impl FeatureCounts {
    /// Adds `other` (for totals over instruments).
    pub fn add(&mut self, other: &FeatureCounts) {
        self.window_overflow = self.window_overflow.wrapping_add(other.window_overflow);
        self.time_regressions = self.time_regressions.wrapping_add(other.time_regressions);
        self.events = self.events.wrapping_add(other.events);
        self.trades = self.trades.wrapping_add(other.trades);
        self.books = self.books.wrapping_add(other.books);
        self.resets = self.resets.wrapping_add(other.resets);
    }
}

/// Best prices and sizes for OFI; an empty side is -∞ / +∞ with size 0.
#[derive(Debug, Clone, Copy)]
struct Top {
    bid: i64,
    bid_size: i64,
    ask: i64,
    ask_size: i64,
}

impl Top {
    const EMPTY: Top = Top {
        bid: i64::MIN,
        bid_size: 0,
        ask: i64::MAX,
        ask_size: 0,
    };

    #[inline]
    fn of(depth: &Depth, has_bid: bool, has_ask: bool) -> Top {
        let (bid, bid_size) = if has_bid {
            (depth.bids[0].price, depth.bids[0].size as i64)
        } else {
            (i64::MIN, 0)
        };
        let (ask, ask_size) = if has_ask {
            (depth.asks[0].price, depth.asks[0].size as i64)
        } else {
            (i64::MAX, 0)
        };
        Top {
            bid,
            bid_size,
            ask,
            ask_size,
        }
    }

    /// Cont–Kukanov–Stoikov `e_n` from `prev` to `self`, and whether the top changed at all.
    #[inline]
    fn ofi_from(&self, prev: &Top) -> (i64, bool) {
        let (bid_up, bid_down) = (self.bid >= prev.bid, self.bid <= prev.bid);
        let (ask_down, ask_up) = (self.ask <= prev.ask, self.ask >= prev.ask);
        let mut e = 0i64;
        if bid_up {
            e = e.wrapping_add(self.bid_size);
        }
        if bid_down {
            e = e.wrapping_sub(prev.bid_size);
        }
        if ask_down {
            e = e.wrapping_sub(self.ask_size);
        }
        if ask_up {
            e = e.wrapping_add(prev.ask_size);
        }
        let same = bid_up
            && bid_down
            && ask_down
            && ask_up
            && self.bid_size == prev.bid_size
            && self.ask_size == prev.ask_size;
        (e, !same)
    }
}

/// `mid`, `spread_ticks`, `spread_bps` and `microprice` of a two-sided top.
#[inline]
fn quote_features(bid: i64, ask: i64, top: &Top, tick: Option<i64>) -> [f64; 4] {
    let nan = f64::NAN;
    let s = bid.wrapping_add(ask);
    let spread = ask.wrapping_sub(bid) as f64;
    let sf = s as f64;
    let (qb, qa) = (top.bid_size as f64, top.ask_size as f64);
    let q = qb + qa;
    [
        sf * (0.5 * PRICE_SCALE),
        match tick {
            Some(tick) if tick > 0 => spread / tick as f64,
            _ => nan,
        },
        if s > 0 { 2e4 * spread / sf } else { nan },
        if q > 0.0 {
            (bid as f64 * qa + ask as f64 * qb) / q * PRICE_SCALE
        } else {
            nan
        },
    ]
}

/// `ln(new / old)` for positive fixed-point sums, through the exact difference so that small
/// moves keep full precision.
#[inline]
fn log_ratio(new: i64, old: i64) -> f64 {
    (new.wrapping_sub(old) as f64 / old as f64).ln_1p()
}

/// Sign of a trade: side `B` +1, `A` -1, otherwise the tick rule against the best bid and ask
/// of the latest book state if it was two-sided (0 without one).
#[inline]
fn trade_sign(trade: &Trade, top: &Top, two_sided: bool) -> i8 {
    match trade.side {
        b'B' => 1,
        b'A' => -1,
        _ if two_sided => {
            // Compared in i128: `2 * price` and `bid + ask` may leave i64.
            let twice = 2 * i128::from(trade.price);
            let sum = i128::from(top.bid) + i128::from(top.ask);
            match twice.cmp(&sum) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            }
        }
        _ => 0,
    }
}

/// `1e4 * (s·volume - 2·notional) / (2·notional)`, the numerator exact. Both operands fit i64
/// on any real instrument, and converting an i64 is one instruction where an i128 is a library
/// call; the i128 path keeps the result exact beyond that.
#[inline]
fn vwap_dev_bps(s: i64, volume: u64, notional: i128) -> f64 {
    if let (Ok(v), Ok(n)) = (i64::try_from(volume), i64::try_from(notional))
        && let Some(twice) = n.checked_mul(2)
        && let Some(num) = s.checked_mul(v).and_then(|sv| sv.checked_sub(twice))
    {
        return 1e4 * num as f64 / twice as f64;
    }
    vwap_dev_bps_wide(s, volume, notional)
}

#[cold]
fn vwap_dev_bps_wide(s: i64, volume: u64, notional: i128) -> f64 {
    let twice = notional.wrapping_mul(2);
    let num = i128::from(s)
        .wrapping_mul(i128::from(volume))
        .wrapping_sub(twice);
    1e4 * num as f64 / twice as f64
}

/// `LEVELS_READ[n]`: how many of `n` levels the features read.
const LEVELS_READ: [u8; 256] = {
    let mut t = [FEATURE_LEVELS as u8; 256];
    let mut n = 0;
    while n < FEATURE_LEVELS {
        t[n] = n as u8;
        n += 1;
    }
    t
};

/// `LEVEL_MASK[n][k]` keeps level `k` of a side with `n` levels: all ones below `n`, else 0.
const LEVEL_MASK: [[u64; FEATURE_LEVELS]; FEATURE_LEVELS + 1] = {
    let mut m = [[0; FEATURE_LEVELS]; FEATURE_LEVELS + 1];
    let mut n = 0;
    while n <= FEATURE_LEVELS {
        let mut k = 0;
        while k < n {
            m[n][k] = u64::MAX;
            k += 1;
        }
        n += 1;
    }
    m
};

/// Depth imbalances of levels 1..=k into `out`. The running sums are exact integers and
/// convert exactly while below 2^53 (far above any real depth), so `(B - A) / (B + A)` in
/// floating point is the correctly rounded ratio; `0 / 0` gives the NaN of an empty book.
#[inline]
fn depth_imbalance(depth: &Depth, n_bid: usize, n_ask: usize, out: &mut [f64]) {
    let (mb, ma) = (&LEVEL_MASK[n_bid], &LEVEL_MASK[n_ask]);
    let (mut b, mut a) = (0i64, 0i64);
    for k in 0..FEATURE_LEVELS {
        b = b.wrapping_add((depth.bids[k].size & mb[k]) as i64);
        a = a.wrapping_add((depth.asks[k].size & ma[k]) as i64);
        // Signed conversions: one instruction each where the unsigned one is a sequence.
        let (bf, af) = (b as f64, a as f64);
        out[k] = (bf - af) / (bf + af);
    }
}

/// Values of the vector that only change with their inputs, kept with those inputs.
#[derive(Debug, Clone, Copy)]
struct Cached {
    /// `mid`, `spread_ticks`, `spread_bps`, `microprice` for `tick` and the top of the book
    /// (`top` of the state); stale after a one-sided state.
    quote: [f64; 4],
    tick: Option<i64>,
    quote_valid: bool,
    /// `vwap_dev_60s_bps` (NaN included) for `bid + ask` of a two-sided book and a version of
    /// the 60 s trade sums.
    vwap_s: i64,
    vwap_version: u64,
    vwap: f64,
    /// The log returns for mid `ret_s` and a version of the bases `ret_base` (0: none).
    ret_s: i64,
    ret_version: u64,
    ret_base: [i64; MID_WINDOWS],
    returns: [f64; MID_WINDOWS],
}

impl Cached {
    const EMPTY: Cached = Cached {
        quote: [f64::NAN; 4],
        tick: None,
        quote_valid: false,
        // Versions are above 0 once there is anything to compute, so the first use computes.
        vwap_s: 0,
        vwap_version: 0,
        vwap: f64::NAN,
        ret_s: 0,
        ret_version: 0,
        ret_base: [0; MID_WINDOWS],
        returns: [f64::NAN; MID_WINDOWS],
    };
}

/// Incremental features of one instrument. All memory is allocated, and written, in
/// [`FeatureState::new`].
pub struct FeatureState {
    now: u64,
    counts: FeatureCounts,
    events: EventCounts,
    ofi_sum: i64,
    ofi_pos: usize,
    /// The latest book state's top, valid once `have_top`.
    top: Top,
    have_top: bool,
    /// Whether the latest book state was two-sided (the tick rule needs its `top`).
    two_sided: bool,
    /// `bid + ask` of the latest recorded mid; 0 (never recorded) before the first.
    last_s: i64,
    /// Sign of the latest trade; NaN before the first.
    last_sign: f64,
    default_tick_size: Option<i64>,
    ofi: OfiWindows,
    trades: TradeWindows,
    mids: MidHistory,
    cached: Cached,
    ofi_last: [i64; OFI_UPDATES],
}

impl std::fmt::Debug for FeatureState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureState")
            .field("now", &self.now)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl FeatureState {
    /// A state with every window ring allocated and written (`cfg.window_capacity` entries
    /// each, at least 1), so that no page of it faults in later, on the hot path. Build it on
    /// the thread that will use it (first-touch memory placement).
    pub fn new(cfg: &FeatureConfig) -> Self {
        let cap = cfg.window_capacity;
        Self {
            now: 0,
            counts: FeatureCounts::default(),
            events: EventCounts::new(cap, EVENT_WIDTH),
            ofi_sum: 0,
            ofi_pos: 0,
            top: Top::EMPTY,
            have_top: false,
            two_sided: false,
            last_s: 0,
            last_sign: f64::NAN,
            default_tick_size: cfg.default_tick_size,
            ofi: OfiWindows::new(cap, OFI_WIDTHS),
            trades: TradeWindows::new(cap, TRADE_WIDTHS),
            mids: MidHistory::new(cap, MID_WIDTHS),
            cached: Cached::EMPTY,
            ofi_last: [0; OFI_UPDATES],
        }
    }

    /// Bytes of window rings held by a state built with `window_capacity` (nearly all of its
    /// memory; the rest is under 2 KiB): 88 bytes per slot of capacity rounded up to a power
    /// of two, 5.5 MiB at the default 65,536 (see the module docs).
    pub fn ring_bytes(window_capacity: usize) -> usize {
        let slot =
            EventCounts::SLOT_BYTES + Ring::<TradeEntry>::SLOT_BYTES + MidHistory::SLOT_BYTES;
        ring_size(window_capacity) * slot
            + OfiWindows::slots(window_capacity) * OfiWindows::SLOT_BYTES
    }

    /// Advances the clock to `ts` (never backwards) and returns it.
    #[inline]
    fn clock(&mut self, ts: u64) -> u64 {
        self.counts.time_regressions += u64::from(ts < self.now);
        self.now = self.now.max(ts);
        self.now
    }

    #[inline]
    fn overflowed(&mut self, dropped: bool) {
        self.counts.window_overflow += u64::from(dropped);
    }

    /// One record of the instrument (book or trade): counts towards `event_rate_1s`.
    #[inline]
    pub fn on_event(&mut self, ts: u64) {
        let now = self.clock(ts);
        self.counts.events += 1;
        let dropped = self.events.push(now);
        self.overflowed(dropped);
    }

    /// A trade (call [`Self::on_event`] for its record too). Its sign uses the latest book
    /// state passed to [`Self::on_book`].
    #[inline]
    pub fn on_trade(&mut self, ts: u64, trade: &Trade) {
        let now = self.clock(ts);
        self.counts.trades += 1;
        let sign = trade_sign(trade, &self.top, self.two_sided);
        self.last_sign = f64::from(sign);
        let dropped = self.trades.push(now, trade.price, trade.size, sign);
        self.overflowed(dropped);
    }

    /// A consistent book state: updates the book-driven windows and writes the whole vector,
    /// in [`SCHEMA`] order, to `out`. `tick_size` (1e-9 fixed point) overrides the configured
    /// default.
    #[inline]
    pub fn on_book(
        &mut self,
        ts: u64,
        depth: &Depth,
        tick_size: Option<i64>,
        out: &mut [f64; N_FEATURES],
    ) {
        let now = self.clock(ts);
        self.counts.books += 1;
        // Each count read as the byte it is: the caller has just stored them one byte at a
        // time, and a wider load would wait for both stores instead of taking them forwarded.
        let n_bid = usize::from(LEVELS_READ[usize::from(depth.bid_levels)]);
        let n_ask = usize::from(LEVELS_READ[usize::from(depth.ask_levels)]);
        let two_sided = n_bid > 0 && n_ask > 0;
        let top = Top::of(depth, n_bid > 0, n_ask > 0);
        let (e, top_moved) = if self.have_top {
            top.ofi_from(&self.top)
        } else {
            (0, true)
        };
        let (bid, ask) = (depth.bids[0].price, depth.asks[0].price);
        let s = bid.wrapping_add(ask);
        let nan = f64::NAN;

        // The book-only values first: their divisions then overlap the window work below.
        let c = &mut self.cached;
        if two_sided {
            let tick = tick_size.or(self.default_tick_size);
            // Written from registers, not read back from the cache just stored to.
            let quote = if top_moved || !c.quote_valid || c.tick != tick {
                let q = quote_features(bid, ask, &top, tick);
                c.quote = q;
                c.tick = tick;
                c.quote_valid = true;
                q
            } else {
                c.quote
            };
            out[MID..DEPTH_IMBALANCE_L1].copy_from_slice(&quote);
            depth_imbalance(depth, n_bid, n_ask, &mut out[DEPTH_IMBALANCE_L1..OFI_100EV]);
        } else {
            c.quote_valid = false;
            out[MID..OFI_100EV].fill(nan);
        }

        self.top = top;
        self.have_top = true;
        self.two_sided = two_sided;
        self.ofi_sum = self
            .ofi_sum
            .wrapping_sub(self.ofi_last[self.ofi_pos])
            .wrapping_add(e);
        self.ofi_last[self.ofi_pos] = e;
        self.ofi_pos = if self.ofi_pos + 1 == OFI_UPDATES {
            0
        } else {
            self.ofi_pos + 1
        };
        self.ofi.expire(now);
        if e != 0 {
            let dropped = self.ofi.push(now, e);
            self.overflowed(dropped);
        }
        self.mids.expire(now);
        let recorded = two_sided && s > 0;
        // Only changes of the recorded mid are stored: a repeated mid adds a zero return.
        if recorded && s != self.last_s {
            self.record_mid(now, s);
        }
        self.events.expire(now);
        self.trades.expire(now);

        out[OFI_100EV] = self.ofi_sum as f64;
        out[OFI_1S] = self.ofi.sum(0) as f64;
        out[OFI_10S] = self.ofi.sum(1) as f64;
        out[LAST_TRADE_SIGN] = self.last_sign;
        let t = self.trades.sums();
        out[SIGNED_VOLUME_1S] = t.signed_volume[0] as f64;
        out[SIGNED_VOLUME_10S] = t.signed_volume[1] as f64;
        for k in 0..MID_WINDOWS {
            out[RV_1S + k] = self.mids.rv(k);
        }
        let c = &mut self.cached;
        if recorded {
            let returns = if s != c.ret_s || self.mids.version() != c.ret_version {
                let base = self.mids.bases();
                let mut r = c.returns;
                for k in 0..MID_WINDOWS {
                    if base[k] == 0 {
                        r[k] = nan;
                    } else if base[k] != c.ret_base[k] || s != c.ret_s {
                        r[k] = log_ratio(s, base[k]);
                    }
                }
                c.returns = r;
                c.ret_s = s;
                c.ret_base = *base;
                c.ret_version = self.mids.version();
                r
            } else {
                c.returns
            };
            out[LOG_RETURN_1S..VWAP_DEV_60S_BPS].copy_from_slice(&returns);
        } else {
            out[LOG_RETURN_1S..VWAP_DEV_60S_BPS].fill(nan);
        }
        out[VWAP_DEV_60S_BPS] = if two_sided {
            if s != c.vwap_s || self.trades.version() != c.vwap_version {
                c.vwap_s = s;
                c.vwap_version = self.trades.version();
                c.vwap = if t.volume > 0 && t.notional > 0 {
                    vwap_dev_bps(s, t.volume, t.notional)
                } else {
                    nan
                };
            }
            c.vwap
        } else {
            nan
        };
        // The window is 1 s wide, so the count is the rate per second. Counts stay far below
        // 2^63, where the signed conversion is exact.
        out[EVENT_RATE_1S] = self.events.sum() as i64 as f64;
        out[TRADE_RATE_1S] = t.trades as i64 as f64;
    }

    /// Records mid `s` (positive, different from the last one) with its squared return. Out of
    /// line: the mid moves on a few per cent of book states, and `on_book` stays smaller.
    #[inline(never)]
    fn record_mid(&mut self, now: u64, s: i64) {
        let rsq = if self.last_s != 0 {
            let r = log_ratio(s, self.last_s);
            r * r
        } else {
            0.0
        };
        let dropped = self.mids.push(now, s, rsq);
        self.overflowed(dropped);
        self.last_s = s;
    }

    /// What was counted since the state was built.
    pub fn counts(&self) -> FeatureCounts {
        self.counts
    }

    /// Forgets all history (windows, previous book state, last trade, the clock), e.g. after a
    /// gap in the feed. Counters are kept. Allocates nothing.
    pub fn reset(&mut self) {
        self.now = 0;
        self.counts.resets += 1;
        self.events.clear();
        self.trades.clear();
        self.ofi.clear();
        self.mids.clear();
        self.ofi_last = [0; OFI_UPDATES];
        self.ofi_pos = 0;
        self.ofi_sum = 0;
        self.have_top = false;
        self.two_sided = false;
        self.last_s = 0;
        self.last_sign = f64::NAN;
        self.cached = Cached::EMPTY;
    }
}
