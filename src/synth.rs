//! Seeded synthetic MBO capture generator.
//!
//! Tests and benchmarks need Databento MBO captures of arbitrary size without shipping or
//! downloading market data. This module makes them from a seed: a plausible limit order book
//! per instrument, driven by a small regime-switching model, written as a DBN version 3 file
//! (plain or zstd) through dbn's own encoder so that every consumer reads it exactly as it
//! would read a real capture.
//!
//! What the stream guarantees, so that consumers can rely on it in tests:
//!
//! - exactly [`SynthConfig::events`] records, every one an [`MboMsg`];
//! - each instrument starts with a snapshot: a clear (`R`) and adds, all flagged
//!   [`dbn::flags::SNAPSHOT`], the last one also [`dbn::flags::LAST`];
//! - every event batch (one instrument, one matching-engine event) ends with a record flagged
//!   [`dbn::flags::LAST`], and batches are never cut short, even by the record budget;
//! - every `C`, `M` and `F` names an order that is resting at that point, cancels never take
//!   more than the resting size, and the book is never crossed;
//! - a trade is a `T` per price level (aggressor side, no book effect), each followed by the
//!   `F` records of the resting orders it hit, then one `C` (fully filled) or `M` (partially
//!   filled, keeping queue priority) per hit order: the records that actually move the book;
//! - order ids are unique and increase with each add; `sequence`, `ts_event` and `ts_recv`
//!   are shared by the records of a batch and strictly increase from batch to batch;
//!   `ts_recv >= ts_event`, and `ts_event` gaps between batches are exponential with mean
//!   [`SynthConfig::mean_gap_ns`] (at least 1 ns);
//! - the same config gives a byte-identical file. The PRNG and the logarithm it needs are
//!   implemented here from integer and IEEE-exact float operations, so neither a dependency
//!   upgrade nor a platform's libm can change the output (checked on x86-64 Linux only).
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::c_char;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use dbn::encode::EncodeRecord;
use dbn::encode::dbn::Encoder;
use dbn::{
    FlagSet, MappingInterval, MboMsg, Metadata, Publisher, RecordHeader, SType, Schema,
    SymbolMapping, rtype,
};

/// Dataset code written into every synthetic capture's metadata. It fits the 16-byte
/// (15 characters and a NUL) dataset field of DBN version 3.
pub const DATASET: &str = "TICKPIPE.SYNTH";

/// The most instruments one capture may hold. Each instrument carries a book and a symbol
/// mapping, so this caps the generator's memory and the metadata's size.
pub const MAX_INSTRUMENTS: u32 = 10_000;

/// The most records one capture may hold. Sequence numbers are `u32` and advance once per
/// event batch; this cap keeps them from wrapping.
pub const MAX_EVENTS: u64 = 1_000_000_000;

/// Price increment of every synthetic instrument, in DBN fixed point (1e-9): 0.25.
pub const TICK_SIZE: i64 = 250_000_000;

/// Publisher id stamped on every record. The instruments mimic CME equity-index futures
/// (prices near 4,500.00 on a 0.25 grid), and a known publisher id keeps consumers that map
/// ids to venues from rejecting the file.
pub const PUBLISHER_ID: u16 = Publisher::GlbxMdp3Glbx as u16;

/// Default [`SynthConfig::start_ts`]: 2024-01-02T14:30:00Z, a US cash-session open.
pub const DEFAULT_START_TS: u64 = 1_704_205_800_000_000_000;

/// Default [`SynthConfig::mean_gap_ns`]: 20 µs, about 50,000 events a second.
pub const DEFAULT_MEAN_GAP_NS: u64 = 20_000;

/// Parameters of a synthetic capture.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SynthConfig {
    /// PRNG seed; the same config always gives the same bytes.
    pub seed: u64,
    /// Number of MBO records to emit, exactly (1 to [`MAX_EVENTS`]).
    pub events: u64,
    /// Number of instruments (1 to [`MAX_INSTRUMENTS`]), with ids `1..=instruments` and raw
    /// symbols `SYN0..`.
    pub instruments: u32,
    /// `ts_event` of the first record, in nanoseconds since the UNIX epoch.
    pub start_ts: u64,
    /// Mean gap between event batches, in nanoseconds (at least 1).
    pub mean_gap_ns: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 0x7469_636b_7069_7065,
            events: 1_000_000,
            instruments: 4,
            start_ts: DEFAULT_START_TS,
            mean_gap_ns: DEFAULT_MEAN_GAP_NS,
        }
    }
}

/// Counts of what a generator has emitted so far, by record action.
///
/// Fill-driven `C` and `M` records count as cancels and modifies, and snapshot adds count as
/// adds, because consumers see them as exactly those actions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SynthStats {
    /// Records emitted, of every action.
    pub records: u64,
    /// `A` records.
    pub adds: u64,
    /// `C` records.
    pub cancels: u64,
    /// `M` records.
    pub modifies: u64,
    /// `T` records.
    pub trades: u64,
    /// `F` records.
    pub fills: u64,
    /// Regime changes (calm to stressed or back) across all instruments, counted when they
    /// happen, which can be up to one event batch before that batch's records are returned.
    pub regime_switches: u64,
}

/// Why a synthetic capture could not be made.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// `events` was zero.
    #[error("invalid synth config: events must be at least 1")]
    ZeroEvents,
    /// `events` was above [`MAX_EVENTS`].
    #[error("invalid synth config: {requested} events exceeds the maximum of {max}")]
    TooManyEvents {
        /// The configured count.
        requested: u64,
        /// The limit.
        max: u64,
    },
    /// `instruments` was zero.
    #[error("invalid synth config: instruments must be at least 1")]
    ZeroInstruments,
    /// `instruments` was above [`MAX_INSTRUMENTS`].
    #[error("invalid synth config: {requested} instruments exceeds the maximum of {max}")]
    TooManyInstruments {
        /// The configured count.
        requested: u32,
        /// The limit.
        max: u32,
    },
    /// `mean_gap_ns` was zero, which would stall the clock.
    #[error("invalid synth config: mean_gap_ns must be at least 1")]
    ZeroMeanGap,
    /// The capture's timestamps would not fit in `u64` nanoseconds.
    #[error(
        "invalid synth config: {events} events from start_ts {start_ts} with mean gap \
         {mean_gap_ns} ns run past the largest representable timestamp"
    )]
    TimestampOverflow {
        /// The configured start.
        start_ts: u64,
        /// The configured mean gap.
        mean_gap_ns: u64,
        /// The configured record count.
        events: u64,
    },
    /// The output path ends in neither `.dbn` nor `.dbn.zst`.
    #[error("unsupported output file name {}: expected a .dbn or .dbn.zst extension", path.display())]
    UnsupportedExtension {
        /// The path given.
        path: PathBuf,
    },
    /// Creating or writing the output file failed.
    #[error("{context} {}", path.display())]
    Io {
        /// What was being done.
        context: &'static str,
        /// The output path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// dbn's encoder failed.
    #[error("encoding DBN to {}", path.display())]
    Encode {
        /// The output path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: dbn::Error,
    },
}

/// Writes a synthetic capture of `cfg` to `out` and returns what it holds.
///
/// The file name picks the encoding: `*.dbn.zst` is zstd-compressed DBN, `*.dbn` plain DBN.
/// Records stream from a [`Generator`] straight into the encoder, so memory stays bounded
/// whatever `cfg.events` is. On failure, a partly written file is removed.
///
/// # Errors
/// [`SynthError::UnsupportedExtension`] for any other file name (checked before anything is
/// created), the config errors of [`Generator::new`], [`SynthError::Io`] when the file cannot
/// be created or written, and [`SynthError::Encode`] when dbn's encoder fails.
pub fn write_capture(cfg: &SynthConfig, out: &Path) -> Result<SynthStats, SynthError> {
    let compression = Compression::from_path(out)?;
    let mut generator = Generator::new(cfg)?;
    let file = File::create(out).map_err(|source| SynthError::Io {
        context: "creating",
        path: out.to_path_buf(),
        source,
    })?;
    let result = encode_file(&mut generator, file, compression, out);
    if result.is_err() {
        // Best effort: a truncated capture left behind would decode as a valid but short
        // file, which is worse than no file.
        let _ = std::fs::remove_file(out);
    }
    result.map(|()| generator.stats().clone())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Zstd,
}

impl Compression {
    fn from_path(path: &Path) -> Result<Self, SynthError> {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        if name.ends_with(".dbn.zst") {
            Ok(Self::Zstd)
        } else if name.ends_with(".dbn") {
            Ok(Self::None)
        } else {
            Err(SynthError::UnsupportedExtension {
                path: path.to_path_buf(),
            })
        }
    }
}

fn encode_file(
    generator: &mut Generator,
    file: File,
    compression: Compression,
    path: &Path,
) -> Result<(), SynthError> {
    let encode_err = |source| SynthError::Encode {
        path: path.to_path_buf(),
        source,
    };
    let metadata = generator.metadata();
    let mut sink = ErrorLatch::new(BufWriter::with_capacity(1 << 20, file));
    match compression {
        Compression::None => {
            let mut encoder = Encoder::new(&mut sink, &metadata).map_err(encode_err)?;
            pump(generator, &mut encoder).map_err(encode_err)?;
        }
        Compression::Zstd => {
            // The zstd frame's epilogue is written when this encoder drops, and any error
            // there is swallowed; the latch below is what reports it.
            let mut encoder = Encoder::with_zstd(&mut sink, &metadata).map_err(encode_err)?;
            pump(generator, &mut encoder).map_err(encode_err)?;
        }
    }
    let io_err = |source| SynthError::Io {
        context: "writing",
        path: path.to_path_buf(),
        source,
    };
    if let Some(source) = sink.error.take() {
        return Err(io_err(source));
    }
    sink.inner.flush().map_err(io_err)
}

fn pump(generator: &mut Generator, encoder: &mut impl EncodeRecord) -> dbn::Result<()> {
    while let Some(record) = generator.next_record() {
        encoder.encode_record(&record)?;
    }
    encoder.flush()
}

/// A writer that remembers its first hard error, so failures inside a drop (where the
/// caller cannot see them) still surface.
struct ErrorLatch<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W> ErrorLatch<W> {
    fn new(inner: W) -> Self {
        Self { inner, error: None }
    }

    fn latch(&mut self, error: io::Error) -> io::Error {
        let copy = io::Error::new(error.kind(), error.to_string());
        // `Interrupted` is retried by the writer's callers, so it is not a failure yet.
        if self.error.is_none() && error.kind() != io::ErrorKind::Interrupted {
            self.error = Some(error);
        }
        copy
    }
}

impl<W: Write> Write for ErrorLatch<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => Ok(n),
            Err(error) => Err(self.latch(error)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.inner.flush() {
            Ok(()) => Ok(()),
            Err(error) => Err(self.latch(error)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// PRNG
// ---------------------------------------------------------------------------------------

/// SplitMix64, used only to spread a 64-bit seed over a xoshiro state: consecutive outputs
/// are distinct, so the state can never be all zeros.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// xoshiro256++ (Blackman and Vigna): fast, small, and fully specified, so the output never
/// changes with a dependency upgrade.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn from_splitmix(seeder: &mut SplitMix64) -> Self {
        Self {
            s: [seeder.next(), seeder.next(), seeder.next(), seeder.next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, n)`, or 0 when `n` is 0. Lemire's multiply-shift: the bias is below
    /// 2^-40 for the small ranges used here, and it needs no rejection loop.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Failures before the first success of a `p` coin, at most `cap`.
    fn geometric(&mut self, p: f64, cap: u64) -> u64 {
        let mut k = 0;
        while k < cap && !self.chance(p) {
            k += 1;
        }
        k
    }

    /// Standard exponential variate, at most about 36.7 (the 53-bit uniform never gets
    /// closer to zero than 2^-53).
    fn exponential(&mut self) -> f64 {
        let u = ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        -ln(u)
    }
}

/// Natural logarithm of a positive normal `x`, from IEEE-exact operations only: `f64::ln`
/// calls the platform's libm, whose last bits differ between targets, and that would make
/// the same seed give different files on different machines.
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if mantissa > std::f64::consts::SQRT_2 {
        mantissa *= 0.5;
        exponent += 1;
    }
    // ln(m) = 2 atanh(s), s = (m-1)/(m+1); |s| <= 0.172, so 12 odd terms reach f64 precision.
    let s = (mantissa - 1.0) / (mantissa + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    for k in 0..12 {
        sum += term / f64::from(2 * k + 1);
        term *= s2;
    }
    exponent as f64 * std::f64::consts::LN_2 + 2.0 * sum
}

// ---------------------------------------------------------------------------------------
// Model parameters
// ---------------------------------------------------------------------------------------

/// 4,500.00 on the 0.25 grid.
const BASE_TICKS: i64 = 18_000;
/// Instruments start within ±50.00 of the base so that they are told apart in a dump.
const START_SPREAD_TICKS: u64 = 200;
/// The reference price reflects off these bounds, so prices stay positive and fixed-point
/// arithmetic cannot overflow however long the walk runs.
const MIN_REF_TICKS: i64 = 400;
const MAX_REF_TICKS: i64 = 4_000_000;
/// Resting orders an instrument drifts toward: cancel intensity scales with the book size
/// over this, which keeps books near it without a hard wall.
const TARGET_ORDERS: f64 = 40.0;
/// Hard cap per side, which bounds memory whatever the dice do.
const SIDE_CAP: usize = 128;
/// The most orders resting on one generated instrument at any time (both sides).
pub const MAX_RESTING_ORDERS: usize = 2 * SIDE_CAP;
/// Below this many orders a side counts as thin and draws most adds.
const THIN_SIDE: usize = 4;
const MAX_DEPTH_TICKS: u64 = 15;
/// How far a side's best may sit from its fair price before adds rush to re-quote at fair.
const QUOTE_SLACK_TICKS: i64 = 2;
const SNAPSHOT_LEVELS: i64 = 5;
const MAX_ORDER_SIZE: u32 = 500;
const MAX_AGGRESSOR_QTY: u64 = 400;
const MAX_SWEEP_LEVELS: usize = 4;
const MAX_FILLS: usize = 24;
/// Matching engine to gateway send, then gateway to capture: bounds of the two delays.
const ENGINE_DELAY_NS: (u64, u64) = (100, 1_000);
const NETWORK_DELAY_NS: (u64, u64) = (2_000, 10_000);
/// Largest possible `ts_recv - ts_event`.
const MAX_LATENCY_NS: u64 = ENGINE_DELAY_NS.1 + NETWORK_DELAY_NS.1;
const DAY_NS: u64 = 86_400_000_000_000;
const ACTION_ADD: c_char = b'A' as c_char;
const ACTION_CANCEL: c_char = b'C' as c_char;
const ACTION_MODIFY: c_char = b'M' as c_char;
const ACTION_TRADE: c_char = b'T' as c_char;
const ACTION_FILL: c_char = b'F' as c_char;
const ACTION_CLEAR: c_char = b'R' as c_char;
const SIDE_NONE: c_char = b'N' as c_char;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Regime {
    Calm,
    Stressed,
}

/// How an instrument behaves in one regime.
#[derive(Debug)]
struct RegimeParams {
    /// Chance per own event that the reference price moves.
    p_move: f64,
    /// Chance that a move goes the regime's bias direction.
    p_trend: f64,
    /// Largest move, in ticks.
    max_step: u64,
    /// Chance per own event of leaving this regime.
    p_switch: f64,
    /// Chance an instrument in this regime takes an event offered to it; the others pass,
    /// so stressed books get more of the traffic.
    activity: f64,
    w_add: f64,
    w_cancel: f64,
    w_modify: f64,
    w_trade: f64,
    /// Geometric parameter of an add's distance from the fair price: lower is deeper.
    p_depth: f64,
    /// Geometric parameter of order sizes: lower is larger.
    p_size: f64,
    /// Geometric parameter of aggressor quantities: lower sweeps more.
    p_qty: f64,
    /// Chance a cancel takes the touch (liquidity withdrawal) rather than a random order.
    p_cancel_touch: f64,
    /// Chance a cancel takes the most misplaced order (stale inside fair, or deepest).
    p_cancel_stale: f64,
    /// Chance an add rests on the bias side (bids when buying).
    p_add_bias: f64,
    /// Chance an aggressor trades with the bias (buys when buying).
    p_aggr_bias: f64,
}

const CALM: RegimeParams = RegimeParams {
    p_move: 0.03,
    p_trend: 0.5,
    max_step: 1,
    p_switch: 1.0 / 1_500.0,
    activity: 1.0 / 3.0,
    w_add: 0.46,
    w_cancel: 0.34,
    w_modify: 0.12,
    w_trade: 0.08,
    p_depth: 0.45,
    p_size: 0.35,
    p_qty: 0.45,
    p_cancel_touch: 0.0,
    p_cancel_stale: 0.2,
    p_add_bias: 0.5,
    p_aggr_bias: 0.5,
};

const STRESSED: RegimeParams = RegimeParams {
    p_move: 0.1,
    p_trend: 0.7,
    max_step: 2,
    p_switch: 1.0 / 400.0,
    activity: 1.0,
    w_add: 0.34,
    w_cancel: 0.30,
    w_modify: 0.12,
    w_trade: 0.24,
    p_depth: 0.35,
    p_size: 0.2,
    p_qty: 0.15,
    p_cancel_touch: 0.25,
    p_cancel_stale: 0.15,
    p_add_bias: 0.6,
    p_aggr_bias: 0.8,
};

impl Regime {
    fn params(self) -> &'static RegimeParams {
        match self {
            Self::Calm => &CALM,
            Self::Stressed => &STRESSED,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Book
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BookSide {
    Bid,
    Ask,
}

impl BookSide {
    fn opposite(self) -> Self {
        match self {
            Self::Bid => Self::Ask,
            Self::Ask => Self::Bid,
        }
    }

    fn as_c_char(self) -> c_char {
        match self {
            Self::Bid => b'B' as c_char,
            Self::Ask => b'A' as c_char,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Resting {
    side: BookSide,
    px: i64,
    size: u32,
    /// Index in [`Book::live`], for O(1) uniform picks and removal.
    slot: usize,
}

/// One instrument's resting orders with price-time priority. The hash map is only ever
/// looked up, never iterated, so its random iteration order cannot leak into the output.
#[derive(Debug, Default)]
struct Book {
    bids: BTreeMap<i64, VecDeque<u64>>,
    asks: BTreeMap<i64, VecDeque<u64>>,
    orders: HashMap<u64, Resting>,
    live: Vec<u64>,
    bid_count: usize,
    ask_count: usize,
}

impl Book {
    fn levels(&self, side: BookSide) -> &BTreeMap<i64, VecDeque<u64>> {
        match side {
            BookSide::Bid => &self.bids,
            BookSide::Ask => &self.asks,
        }
    }

    fn levels_mut(&mut self, side: BookSide) -> &mut BTreeMap<i64, VecDeque<u64>> {
        match side {
            BookSide::Bid => &mut self.bids,
            BookSide::Ask => &mut self.asks,
        }
    }

    fn count(&self, side: BookSide) -> usize {
        match side {
            BookSide::Bid => self.bid_count,
            BookSide::Ask => self.ask_count,
        }
    }

    fn count_mut(&mut self, side: BookSide) -> &mut usize {
        match side {
            BookSide::Bid => &mut self.bid_count,
            BookSide::Ask => &mut self.ask_count,
        }
    }

    fn len(&self) -> usize {
        self.live.len()
    }

    fn best(&self, side: BookSide) -> Option<i64> {
        match side {
            BookSide::Bid => self.bids.last_key_value().map(|(px, _)| *px),
            BookSide::Ask => self.asks.first_key_value().map(|(px, _)| *px),
        }
    }

    fn deepest(&self, side: BookSide) -> Option<i64> {
        match side {
            BookSide::Bid => self.bids.first_key_value().map(|(px, _)| *px),
            BookSide::Ask => self.asks.last_key_value().map(|(px, _)| *px),
        }
    }

    /// Newest order at `px`: the one a trader pulling the level would cancel first.
    fn newest_at(&self, side: BookSide, px: i64) -> Option<u64> {
        self.levels(side).get(&px).and_then(|q| q.back().copied())
    }

    /// Price band where `side` may rest without crossing the other side.
    fn allowed(&self, side: BookSide, px: i64) -> i64 {
        let px = px.max(1);
        match side {
            BookSide::Bid => self
                .asks
                .first_key_value()
                .map_or(px, |(a, _)| px.min(a - 1)),
            BookSide::Ask => self
                .bids
                .last_key_value()
                .map_or(px, |(b, _)| px.max(b + 1)),
        }
    }

    fn get(&self, id: u64) -> Option<Resting> {
        self.orders.get(&id).copied()
    }

    fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.orders.clear();
        self.live.clear();
        self.bid_count = 0;
        self.ask_count = 0;
    }

    fn insert(&mut self, id: u64, side: BookSide, px: i64, size: u32) {
        self.levels_mut(side).entry(px).or_default().push_back(id);
        let slot = self.live.len();
        self.live.push(id);
        self.orders.insert(
            id,
            Resting {
                side,
                px,
                size,
                slot,
            },
        );
        *self.count_mut(side) += 1;
    }

    fn unlink(&mut self, side: BookSide, px: i64, id: u64) {
        let levels = self.levels_mut(side);
        if let Some(queue) = levels.get_mut(&px) {
            if let Some(i) = queue.iter().position(|&o| o == id) {
                queue.remove(i);
            }
            if queue.is_empty() {
                levels.remove(&px);
            }
        }
    }

    fn remove(&mut self, id: u64) -> Option<Resting> {
        let resting = self.orders.remove(&id)?;
        if resting.slot < self.live.len() {
            self.live.swap_remove(resting.slot);
            if let Some(&moved) = self.live.get(resting.slot)
                && let Some(order) = self.orders.get_mut(&moved)
            {
                order.slot = resting.slot;
            }
        }
        self.unlink(resting.side, resting.px, id);
        let count = self.count_mut(resting.side);
        *count = count.saturating_sub(1);
        Some(resting)
    }

    /// A size decrease at the same price keeps queue priority.
    fn shrink(&mut self, id: u64, size: u32) {
        if let Some(order) = self.orders.get_mut(&id) {
            order.size = size;
        }
    }

    /// A price change or size increase sends the order to the back of its new level.
    fn requeue(&mut self, id: u64, px: i64, size: u32) {
        let Some(order) = self.orders.get(&id).copied() else {
            return;
        };
        self.unlink(order.side, order.px, id);
        self.levels_mut(order.side)
            .entry(px)
            .or_default()
            .push_back(id);
        if let Some(order) = self.orders.get_mut(&id) {
            order.px = px;
            order.size = size;
        }
    }
}

#[derive(Debug)]
struct Instrument {
    id: u32,
    book: Book,
    /// Fair bid in ticks; the fair ask is `ref_px + spread`.
    ref_px: i64,
    spread: i64,
    regime: Regime,
    /// +1 when stressed flow is buying, -1 when selling.
    bias: i64,
}

impl Instrument {
    fn fair(&self, side: BookSide) -> i64 {
        match side {
            BookSide::Bid => self.ref_px,
            BookSide::Ask => self.ref_px + self.spread,
        }
    }

    fn with_bias(&self) -> BookSide {
        if self.bias > 0 {
            BookSide::Bid
        } else {
            BookSide::Ask
        }
    }
}

/// One resting order hit by an aggressor.
#[derive(Debug, Clone, Copy)]
struct Fill {
    id: u64,
    side: BookSide,
    px: i64,
    before: u32,
    qty: u32,
}

/// Fields shared by every record of one event batch.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    instrument_id: u32,
    ts_event: u64,
    ts_recv: u64,
    ts_in_delta: i32,
    sequence: u32,
}

// ---------------------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------------------

/// Streaming synthetic MBO source: yields the records of a capture one at a time, holding
/// only the books and the current event batch in memory.
///
/// [`write_capture`] is this generator plus dbn's encoder; use the generator directly to
/// feed records into a pipeline without a file.
pub struct Generator {
    events: u64,
    mean_gap_ns: u64,
    rng: Rng,
    /// Timestamps come from their own stream so that [`Generator::new`] can replay it to
    /// bound the capture's end before any record exists.
    clock: Rng,
    metadata: Metadata,
    instruments: Vec<Instrument>,
    pending: VecDeque<MboMsg>,
    fills: Vec<Fill>,
    /// Records put in `pending` so far, emitted or not.
    generated: u64,
    next_order_id: u64,
    sequence: u32,
    next_ts_event: u64,
    last_ts_recv: u64,
    snapshots_done: usize,
    stats: SynthStats,
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("events", &self.events)
            .field("instruments", &self.instruments.len())
            .field("generated", &self.generated)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Generator {
    /// Validates `cfg` and prepares a generator positioned before the first record.
    ///
    /// Bounding the capture's end timestamp for the metadata replays the clock's random
    /// stream once, which costs a few nanoseconds per configured event.
    ///
    /// # Errors
    /// [`SynthError::ZeroEvents`], [`SynthError::TooManyEvents`],
    /// [`SynthError::ZeroInstruments`], [`SynthError::TooManyInstruments`] or
    /// [`SynthError::ZeroMeanGap`] for an out-of-range field, and
    /// [`SynthError::TimestampOverflow`] when the capture would run past `u64` nanoseconds.
    pub fn new(cfg: &SynthConfig) -> Result<Self, SynthError> {
        if cfg.events == 0 {
            return Err(SynthError::ZeroEvents);
        }
        if cfg.events > MAX_EVENTS {
            return Err(SynthError::TooManyEvents {
                requested: cfg.events,
                max: MAX_EVENTS,
            });
        }
        if cfg.instruments == 0 {
            return Err(SynthError::ZeroInstruments);
        }
        if cfg.instruments > MAX_INSTRUMENTS {
            return Err(SynthError::TooManyInstruments {
                requested: cfg.instruments,
                max: MAX_INSTRUMENTS,
            });
        }
        if cfg.mean_gap_ns == 0 {
            return Err(SynthError::ZeroMeanGap);
        }

        let mut seeder = SplitMix64(cfg.seed);
        let mut rng = Rng::from_splitmix(&mut seeder);
        let clock = Rng::from_splitmix(&mut seeder);

        let overflow = SynthError::TimestampOverflow {
            start_ts: cfg.start_ts,
            mean_gap_ns: cfg.mean_gap_ns,
            events: cfg.events,
        };
        // At most `events` batches, so the sum of `events` gaps bounds the last ts_event.
        let mut replay = clock.clone();
        let mut last_ts_event = cfg.start_ts;
        for _ in 0..cfg.events {
            last_ts_event = match last_ts_event.checked_add(gap(&mut replay, cfg.mean_gap_ns)) {
                Some(ts) => ts,
                None => return Err(overflow),
            };
        }
        let end = last_ts_event
            .checked_add(MAX_LATENCY_NS + 1)
            .filter(|&end| end < dbn::UNDEF_TIMESTAMP)
            .and_then(NonZeroU64::new);
        let Some(end) = end else {
            return Err(overflow);
        };

        let metadata = build_metadata(cfg.start_ts, end, cfg.instruments);
        let instruments = (1..=cfg.instruments)
            .map(|id| Instrument {
                id,
                book: Book::default(),
                ref_px: BASE_TICKS + rng.below(2 * START_SPREAD_TICKS + 1) as i64
                    - START_SPREAD_TICKS as i64,
                spread: 1,
                regime: Regime::Calm,
                bias: 1,
            })
            .collect();

        Ok(Self {
            events: cfg.events,
            mean_gap_ns: cfg.mean_gap_ns,
            rng,
            clock,
            metadata,
            instruments,
            pending: VecDeque::new(),
            fills: Vec::with_capacity(MAX_FILLS),
            generated: 0,
            next_order_id: 1,
            sequence: 0,
            next_ts_event: cfg.start_ts,
            last_ts_recv: 0,
            snapshots_done: 0,
            stats: SynthStats::default(),
        })
    }

    /// The next record, or `None` once [`SynthConfig::events`] records have been returned.
    pub fn next_record(&mut self) -> Option<MboMsg> {
        if self.pending.is_empty() && self.generated < self.events {
            self.step();
        }
        let record = self.pending.pop_front()?;
        let stats = &mut self.stats;
        stats.records += 1;
        match record.action {
            ACTION_ADD => stats.adds += 1,
            ACTION_CANCEL => stats.cancels += 1,
            ACTION_MODIFY => stats.modifies += 1,
            ACTION_TRADE => stats.trades += 1,
            ACTION_FILL => stats.fills += 1,
            _ => {}
        }
        Some(record)
    }

    /// The capture's metadata: DBN version 3, dataset [`DATASET`], schema MBO, raw symbols
    /// `SYN0..` mapped to instrument ids `1..` over every date the capture covers.
    ///
    /// `end` is the query-style end of the capture, an upper bound on every `ts_recv`
    /// rather than the last record's timestamp, because the metadata precedes the records.
    pub fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    /// What has been returned by [`Generator::next_record`] so far.
    pub fn stats(&self) -> &SynthStats {
        &self.stats
    }

    /// Generates one complete event batch into `pending`, never more records than remain.
    fn step(&mut self) {
        let budget = self.events.saturating_sub(self.generated);
        if budget == 0 {
            return;
        }
        if self.snapshots_done < self.instruments.len() {
            let idx = self.snapshots_done;
            self.snapshots_done += 1;
            let stamp = self.open_batch(idx);
            self.snapshot(idx, budget, stamp);
        } else {
            let idx = self.pick_instrument();
            let stamp = self.open_batch(idx);
            self.event(idx, budget, stamp);
        }
        if let Some(last) = self.pending.back_mut() {
            last.flags.set_last();
        }
        self.generated = self.generated.saturating_add(self.pending.len() as u64);
        self.next_ts_event = self
            .next_ts_event
            .saturating_add(gap(&mut self.clock, self.mean_gap_ns));
    }

    fn open_batch(&mut self, idx: usize) -> Stamp {
        let ts_event = self.next_ts_event;
        let engine = ENGINE_DELAY_NS.0 + self.rng.below(ENGINE_DELAY_NS.1 - ENGINE_DELAY_NS.0 + 1);
        let network =
            NETWORK_DELAY_NS.0 + self.rng.below(NETWORK_DELAY_NS.1 - NETWORK_DELAY_NS.0 + 1);
        // A slow packet cannot overtake its successor at the capture point, so ts_recv is
        // held strictly increasing; the delay it soaks up shows in ts_in_delta.
        let ts_recv = ts_event
            .saturating_add(engine + network)
            .max(self.last_ts_recv.saturating_add(1));
        self.last_ts_recv = ts_recv;
        let sent = ts_event.saturating_add(engine);
        let ts_in_delta = i32::try_from(ts_recv.saturating_sub(sent)).unwrap_or(i32::MAX);
        self.sequence = self.sequence.saturating_add(1);
        Stamp {
            instrument_id: self.instruments.get(idx).map_or(0, |inst| inst.id),
            ts_event,
            ts_recv,
            ts_in_delta,
            sequence: self.sequence,
        }
    }

    /// Stressed instruments take more of the traffic: each draw is kept with the drawn
    /// instrument's activity, so selection costs O(1) whatever the instrument count.
    fn pick_instrument(&mut self) -> usize {
        let n = self.instruments.len() as u64;
        let mut idx = 0;
        for _ in 0..16 {
            idx = self.rng.below(n) as usize;
            let activity = self
                .instruments
                .get(idx)
                .map_or(1.0, |inst| inst.regime.params().activity);
            if n == 1 || self.rng.chance(activity) {
                break;
            }
        }
        idx
    }

    fn snapshot(&mut self, idx: usize, budget: u64, stamp: Stamp) {
        let Self {
            rng,
            instruments,
            pending,
            next_order_id,
            ..
        } = self;
        let Some(inst) = instruments.get_mut(idx) else {
            return;
        };
        inst.book.clear();
        let snap = FlagSet::empty().set_snapshot();
        pending.push_back(record(&stamp, ACTION_CLEAR, SIDE_NONE, 0, None, 0, snap));
        let mut left = budget.saturating_sub(1);
        'levels: for level in 0..SNAPSHOT_LEVELS {
            for side in [BookSide::Bid, BookSide::Ask] {
                let px = match side {
                    BookSide::Bid => inst.fair(side) - level,
                    BookSide::Ask => inst.fair(side) + level,
                };
                for _ in 0..=rng.below(3) {
                    if left == 0 {
                        break 'levels;
                    }
                    left -= 1;
                    let id = *next_order_id;
                    *next_order_id += 1;
                    let size = order_size(rng, CALM.p_size);
                    inst.book.insert(id, side, px, size);
                    pending.push_back(record(
                        &stamp,
                        ACTION_ADD,
                        side.as_c_char(),
                        id,
                        Some(px),
                        size,
                        snap,
                    ));
                }
            }
        }
    }

    fn event(&mut self, idx: usize, budget: u64, stamp: Stamp) {
        let Self {
            rng,
            instruments,
            pending,
            fills,
            next_order_id,
            stats,
            ..
        } = self;
        let Some(inst) = instruments.get_mut(idx) else {
            return;
        };

        let p = inst.regime.params();
        if rng.chance(p.p_switch) {
            stats.regime_switches += 1;
            match inst.regime {
                Regime::Calm => {
                    inst.regime = Regime::Stressed;
                    inst.bias = if rng.chance(0.5) { 1 } else { -1 };
                    inst.spread = 2 + rng.below(3) as i64;
                }
                Regime::Stressed => {
                    inst.regime = Regime::Calm;
                    inst.spread = 1;
                }
            }
        }
        let p = inst.regime.params();
        walk(rng, inst, p);

        let n = inst.book.len();
        // Adds pick up as the book thins, cancels as it fills: the book hovers near
        // TARGET_ORDERS instead of draining under sweeps or piling up.
        let fullness = n as f64 / TARGET_ORDERS;
        let w_add = p.w_add * (1.0 + 3.0 * (1.0 - fullness).max(0.0));
        let w_cancel = if n == 0 { 0.0 } else { p.w_cancel * fullness };
        let w_modify = if n == 0 { 0.0 } else { p.w_modify };
        let w_trade = if budget >= 3 && n > 0 { p.w_trade } else { 0.0 };
        let total = w_add + w_cancel + w_modify + w_trade;
        let mut u = rng.unit() * total;

        let mut ctx = EventCtx {
            rng,
            inst,
            pending,
            next_order_id,
            stamp,
        };
        let done = if u < w_trade {
            ctx.trade(fills, budget)
        } else {
            u -= w_trade;
            if u < w_cancel {
                ctx.cancel()
            } else if u - w_cancel < w_modify {
                ctx.modify()
            } else {
                ctx.add(None)
            }
        };
        // Every path above can decline (an empty or full side); an add on whichever side has
        // room, else a cancel, always succeeds, so a batch is never empty.
        if !done && !ctx.add(None) && !ctx.cancel() {
            ctx.add(Some(BookSide::Bid));
        }
    }
}

/// Moves the fair price: a symmetric walk when calm, a trend in the bias direction when
/// stressed.
fn walk(rng: &mut Rng, inst: &mut Instrument, p: &RegimeParams) {
    if !rng.chance(p.p_move) {
        return;
    }
    let step = 1 + rng.below(p.max_step) as i64;
    let up = if inst.regime == Regime::Stressed {
        rng.chance(p.p_trend) == (inst.bias > 0)
    } else {
        rng.chance(0.5)
    };
    let mut next = if up {
        inst.ref_px + step
    } else {
        inst.ref_px - step
    };
    if !(MIN_REF_TICKS..=MAX_REF_TICKS).contains(&next) {
        next = if up {
            inst.ref_px - step
        } else {
            inst.ref_px + step
        };
    }
    inst.ref_px = next;
}

fn gap(clock: &mut Rng, mean_gap_ns: u64) -> u64 {
    // `as` saturates on the float-to-int conversion, so a huge mean cannot wrap.
    ((mean_gap_ns as f64 * clock.exponential()) + 0.5).max(1.0) as u64
}

fn order_size(rng: &mut Rng, p_size: f64) -> u32 {
    1 + rng.geometric(p_size, u64::from(MAX_ORDER_SIZE - 1)) as u32
}

fn record(
    stamp: &Stamp,
    action: c_char,
    side: c_char,
    order_id: u64,
    px_ticks: Option<i64>,
    size: u32,
    flags: FlagSet,
) -> MboMsg {
    MboMsg {
        hd: RecordHeader::new::<MboMsg>(
            rtype::MBO,
            PUBLISHER_ID,
            stamp.instrument_id,
            stamp.ts_event,
        ),
        order_id,
        price: px_ticks.map_or(dbn::UNDEF_PRICE, |px| px.saturating_mul(TICK_SIZE)),
        size,
        flags,
        channel_id: 0,
        action,
        side,
        ts_recv: stamp.ts_recv,
        ts_in_delta: stamp.ts_in_delta,
        sequence: stamp.sequence,
    }
}

/// Borrowed pieces of a [`Generator`] needed to build one instrument's event.
struct EventCtx<'a> {
    rng: &'a mut Rng,
    inst: &'a mut Instrument,
    pending: &'a mut VecDeque<MboMsg>,
    next_order_id: &'a mut u64,
    stamp: Stamp,
}

impl EventCtx<'_> {
    fn push(&mut self, action: c_char, side: BookSide, id: u64, px: i64, size: u32) {
        self.pending.push_back(record(
            &self.stamp,
            action,
            side.as_c_char(),
            id,
            Some(px),
            size,
            FlagSet::empty(),
        ));
    }

    /// A new order near the touch, on `side` or on a side picked by the regime. Returns
    /// false when that side is full.
    fn add(&mut self, side: Option<BookSide>) -> bool {
        let p = self.inst.regime.params();
        let side = side.unwrap_or_else(|| {
            let with = self.inst.with_bias();
            match (
                self.needs_quotes(BookSide::Bid),
                self.needs_quotes(BookSide::Ask),
            ) {
                // Market makers refill a side that a sweep, a wave of cancels or a fast move
                // left thin or far from fair; without this the spread wanders off.
                (true, false) if self.rng.chance(0.8) => BookSide::Bid,
                (false, true) if self.rng.chance(0.8) => BookSide::Ask,
                _ if self.rng.chance(p.p_add_bias) => with,
                _ => with.opposite(),
            }
        });
        let side = if self.inst.book.count(side) < SIDE_CAP {
            side
        } else if self.inst.book.count(side.opposite()) < SIDE_CAP {
            side.opposite()
        } else {
            return false;
        };
        // The best quote to improve is the fair price itself.
        let offset = if self.far_from_fair(side) && self.rng.chance(0.6) {
            0
        } else {
            self.rng.geometric(p.p_depth, MAX_DEPTH_TICKS) as i64
        };
        let px = match side {
            BookSide::Bid => self.inst.fair(side) - offset,
            BookSide::Ask => self.inst.fair(side) + offset,
        };
        let px = self.inst.book.allowed(side, px);
        let size = order_size(self.rng, p.p_size);
        let id = *self.next_order_id;
        *self.next_order_id += 1;
        self.inst.book.insert(id, side, px, size);
        self.push(ACTION_ADD, side, id, px, size);
        true
    }

    fn far_from_fair(&self, side: BookSide) -> bool {
        let fair = self.inst.fair(side);
        self.inst
            .book
            .best(side)
            .is_none_or(|best| (best - fair).abs() > QUOTE_SLACK_TICKS)
    }

    fn needs_quotes(&self, side: BookSide) -> bool {
        self.inst.book.count(side) < THIN_SIDE || self.far_from_fair(side)
    }

    /// Cancels all or part of a resting order. Returns false on an empty book.
    fn cancel(&mut self) -> bool {
        let p = self.inst.regime.params();
        let u = self.rng.unit();
        let targeted = if u < p.p_cancel_touch {
            let side = if self.rng.chance(0.5) {
                BookSide::Bid
            } else {
                BookSide::Ask
            };
            self.inst
                .book
                .best(side)
                .and_then(|px| self.inst.book.newest_at(side, px))
        } else if u < p.p_cancel_touch + p.p_cancel_stale {
            self.most_misplaced()
        } else {
            None
        };
        let Some(id) = targeted.or_else(|| self.random_order()) else {
            return false;
        };
        let Some(order) = self.inst.book.get(id) else {
            return false;
        };
        let qty = if order.size > 1 && self.rng.chance(0.25) {
            1 + self.rng.below(u64::from(order.size - 1)) as u32
        } else {
            order.size
        };
        if qty == order.size {
            self.inst.book.remove(id);
        } else {
            self.inst.book.shrink(id, order.size - qty);
        }
        self.push(ACTION_CANCEL, order.side, id, order.px, qty);
        true
    }

    /// An order resting inside the fair price (left behind by a move), else the deepest.
    fn most_misplaced(&self) -> Option<u64> {
        let book = &self.inst.book;
        let bid_fair = self.inst.fair(BookSide::Bid);
        let ask_fair = self.inst.fair(BookSide::Ask);
        if let Some(px) = book.best(BookSide::Bid).filter(|&px| px > bid_fair) {
            return book.newest_at(BookSide::Bid, px);
        }
        if let Some(px) = book.best(BookSide::Ask).filter(|&px| px < ask_fair) {
            return book.newest_at(BookSide::Ask, px);
        }
        let bid_depth = book.deepest(BookSide::Bid).map(|px| (bid_fair - px, px));
        let ask_depth = book.deepest(BookSide::Ask).map(|px| (px - ask_fair, px));
        match (bid_depth, ask_depth) {
            (Some((db, pb)), Some((da, _))) if db >= da => book.newest_at(BookSide::Bid, pb),
            (_, Some((_, pa))) => book.newest_at(BookSide::Ask, pa),
            (Some((_, pb)), None) => book.newest_at(BookSide::Bid, pb),
            (None, None) => None,
        }
    }

    fn random_order(&mut self) -> Option<u64> {
        let live = &self.inst.book.live;
        let i = self.rng.below(live.len() as u64) as usize;
        live.get(i).copied()
    }

    /// Changes the size and/or price of a resting order, never across the other side.
    /// Returns false on an empty book.
    fn modify(&mut self) -> bool {
        // Re-quoting: when a move leaves a side's best far from fair, its owner moves it
        // back; that is what makes quotes follow the price rather than only trades.
        if self.rng.chance(0.6)
            && let Some(id) = self.stranded_touch()
        {
            return self.requote(id);
        }
        let Some(id) = self.random_order() else {
            return false;
        };
        let Some(order) = self.inst.book.get(id) else {
            return false;
        };
        let u = self.rng.unit();
        let change_size = u < 0.75;
        let change_px = u >= 0.5;
        let mut size = order.size;
        if change_size {
            size = if order.size > 1 && self.rng.chance(0.5) {
                1 + self.rng.below(u64::from(order.size - 1)) as u32
            } else {
                let step = 1 + self.rng.below(u64::from(order.size.min(20))) as u32;
                order.size.saturating_add(step).min(MAX_ORDER_SIZE)
            };
        }
        let mut px = order.px;
        if change_px {
            let step = 1 + self.rng.below(2) as i64;
            px = if self.rng.chance(0.5) {
                px + step
            } else {
                px - step
            };
            // The order's own side never constrains it, so clamping against the other side
            // is enough to stay uncrossed.
            px = self.inst.book.allowed(order.side, px);
        }
        self.apply_modify(id, order, px, size)
    }

    /// The newest order at the best level that sits farthest from fair, if beyond the slack.
    fn stranded_touch(&self) -> Option<u64> {
        let book = &self.inst.book;
        [BookSide::Bid, BookSide::Ask]
            .into_iter()
            .filter_map(|side| {
                let best = book.best(side)?;
                let distance = (best - self.inst.fair(side)).abs();
                (distance > QUOTE_SLACK_TICKS).then_some((distance, side, best))
            })
            .max_by_key(|&(distance, ..)| distance)
            .and_then(|(_, side, best)| book.newest_at(side, best))
    }

    /// Moves an order back next to its side's fair price.
    fn requote(&mut self, id: u64) -> bool {
        let Some(order) = self.inst.book.get(id) else {
            return false;
        };
        let p = self.inst.regime.params();
        let offset = self.rng.geometric(p.p_depth, QUOTE_SLACK_TICKS as u64) as i64;
        let px = match order.side {
            BookSide::Bid => self.inst.fair(order.side) - offset,
            BookSide::Ask => self.inst.fair(order.side) + offset,
        };
        let px = self.inst.book.allowed(order.side, px);
        self.apply_modify(id, order, px, order.size)
    }

    /// Books and records a modify; a no-op change becomes a one-lot size change, since a
    /// venue would not publish it.
    fn apply_modify(&mut self, id: u64, order: Resting, px: i64, mut size: u32) -> bool {
        if px == order.px && size == order.size {
            size = if order.size < MAX_ORDER_SIZE {
                order.size + 1
            } else {
                order.size - 1
            };
        }
        if px == order.px && size < order.size {
            self.inst.book.shrink(id, size);
        } else {
            self.inst.book.requeue(id, px, size);
        }
        self.push(ACTION_MODIFY, order.side, id, px, size);
        true
    }

    /// An aggressor sweeps the other side: per level a `T` then its `F`s, then a `C` or `M`
    /// per order hit. Fits the batch into `budget` records. Returns false when no side has
    /// liquidity to hit.
    fn trade(&mut self, fills: &mut Vec<Fill>, budget: u64) -> bool {
        let p = self.inst.regime.params();
        let book = &self.inst.book;
        let stale_buy = book
            .best(BookSide::Ask)
            .is_some_and(|px| px <= self.inst.fair(BookSide::Bid));
        let stale_sell = book
            .best(BookSide::Bid)
            .is_some_and(|px| px >= self.inst.fair(BookSide::Ask));
        // Resting orders left on the wrong side of a move are what arbitrageurs take first.
        let p_buy = match (stale_buy, stale_sell) {
            (true, false) => 0.9,
            (false, true) => 0.1,
            _ if self.inst.regime == Regime::Stressed => {
                if self.inst.bias > 0 {
                    p.p_aggr_bias
                } else {
                    1.0 - p.p_aggr_bias
                }
            }
            _ => 0.5,
        };
        let mut aggressor = if self.rng.chance(p_buy) {
            BookSide::Bid
        } else {
            BookSide::Ask
        };
        if book.count(aggressor.opposite()) == 0 {
            aggressor = aggressor.opposite();
        }
        let resting_side = aggressor.opposite();
        if book.count(resting_side) == 0 {
            return false;
        }

        let want = 1 + self.rng.geometric(p.p_qty, MAX_AGGRESSOR_QTY - 1);
        // Best price first: ascending asks, descending bids.
        match resting_side {
            BookSide::Ask => plan_sweep(book.asks.iter(), book, resting_side, want, budget, fills),
            BookSide::Bid => {
                plan_sweep(
                    book.bids.iter().rev(),
                    book,
                    resting_side,
                    want,
                    budget,
                    fills,
                );
            }
        }
        if fills.is_empty() {
            return false;
        }

        let mut i = 0;
        while let Some(first) = fills.get(i) {
            let px = first.px;
            let level_qty: u32 = fills[i..]
                .iter()
                .take_while(|f| f.px == px)
                .map(|f| f.qty)
                .sum();
            self.push(ACTION_TRADE, aggressor, 0, px, level_qty);
            while let Some(fill) = fills.get(i).filter(|f| f.px == px).copied() {
                self.push(ACTION_FILL, fill.side, fill.id, fill.px, fill.qty);
                i += 1;
            }
        }
        for fill in fills.iter().copied() {
            if fill.qty == fill.before {
                self.inst.book.remove(fill.id);
                self.push(ACTION_CANCEL, fill.side, fill.id, fill.px, fill.before);
            } else {
                let left = fill.before - fill.qty;
                self.inst.book.shrink(fill.id, left);
                self.push(ACTION_MODIFY, fill.side, fill.id, fill.px, left);
            }
        }
        true
    }
}

/// Walks resting orders in priority order until the aggressor's quantity, the level or fill
/// limits, or the record budget (a level costs its `T`, each fill its `F` and `C`/`M`) run out.
fn plan_sweep<'b>(
    levels: impl Iterator<Item = (&'b i64, &'b VecDeque<u64>)>,
    book: &Book,
    side: BookSide,
    mut want: u64,
    budget: u64,
    fills: &mut Vec<Fill>,
) {
    fills.clear();
    let mut cost = 0u64;
    for (&px, queue) in levels.take(MAX_SWEEP_LEVELS) {
        let mut extra = 3;
        for &id in queue {
            if want == 0 || fills.len() == MAX_FILLS || cost + extra > budget {
                return;
            }
            let Some(order) = book.orders.get(&id) else {
                continue;
            };
            let qty = u64::from(order.size).min(want) as u32;
            want -= u64::from(qty);
            cost += extra;
            extra = 2;
            fills.push(Fill {
                id,
                side,
                px,
                before: order.size,
                qty,
            });
        }
    }
}

fn build_metadata(start: u64, end: NonZeroU64, instruments: u32) -> Metadata {
    let mut metadata = Metadata::builder()
        .dataset(DATASET)
        .schema(Some(Schema::Mbo))
        .start(start)
        .end(Some(end))
        .stype_in(Some(SType::RawSymbol))
        .stype_out(SType::InstrumentId)
        .build();
    // Mapping intervals run from the first covered date to the day after the last one
    // (exclusive); an end exactly at midnight covers nothing of that day.
    let start_date = metadata.start().date();
    let end_date = metadata.end().map_or(start_date, |end| end.date());
    let end_date = if end.get().is_multiple_of(DAY_NS) {
        end_date
    } else {
        end_date.next_day().unwrap_or(end_date)
    };
    let symbols: Vec<String> = (0..instruments).map(|i| format!("SYN{i}")).collect();
    metadata.mappings = symbols
        .iter()
        .zip(1..=instruments)
        .map(|(raw_symbol, id)| SymbolMapping {
            raw_symbol: raw_symbol.clone(),
            intervals: vec![MappingInterval {
                start_date,
                end_date,
                symbol: id.to_string(),
            }],
        })
        .collect();
    metadata.symbols = symbols;
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(seed: u64, events: u64, instruments: u32) -> SynthConfig {
        SynthConfig {
            seed,
            events,
            instruments,
            ..SynthConfig::default()
        }
    }

    fn drain(cfg: &SynthConfig) -> (Vec<MboMsg>, SynthStats) {
        let mut generator = Generator::new(cfg).expect("valid config");
        let mut records = Vec::new();
        while let Some(record) = generator.next_record() {
            records.push(record);
        }
        (records, generator.stats().clone())
    }

    #[test]
    fn splitmix64_matches_reference_vector() {
        // First outputs for seed 1234567 from Vigna's reference splitmix64.c.
        let mut sm = SplitMix64(1_234_567);
        assert_eq!(sm.next(), 6_457_827_717_110_365_317);
        assert_eq!(sm.next(), 3_203_168_211_198_807_973);
        assert_eq!(sm.next(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn xoshiro256pp_matches_reference_vector() {
        // State {1, 2, 3, 4}; expected outputs from the reference xoshiro256plusplus.c.
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                41_943_041,
                58_720_359,
                3_588_806_011_781_223,
                3_591_011_842_654_386
            ]
        );
    }

    #[test]
    fn ln_matches_std_closely() {
        let mut rng = Rng::from_splitmix(&mut SplitMix64(9));
        for _ in 0..10_000 {
            let x = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
            let err = (ln(x) - x.ln()).abs();
            assert!(err <= 1e-14 * x.ln().abs().max(1.0), "ln({x}) off by {err}");
        }
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Rng::from_splitmix(&mut SplitMix64(3));
        assert_eq!(rng.below(0), 0);
        for n in 1..200 {
            assert!(rng.below(n) < n);
        }
    }

    #[test]
    fn emits_exactly_the_requested_count_with_complete_batches() {
        for events in [1, 2, 3, 4, 5, 7, 11, 30, 31, 97, 500] {
            for instruments in [1, 3] {
                let (records, stats) = drain(&cfg(events * 31 + 7, events, instruments));
                assert_eq!(records.len() as u64, events, "events={events}");
                assert_eq!(stats.records, events);
                let last = records.last().expect("at least one record");
                assert!(last.flags.is_last(), "final batch cut short at {events}");
            }
        }
    }

    #[test]
    fn first_batches_are_snapshots_then_none() {
        let (records, _) = drain(&cfg(5, 2_000, 3));
        let mut batches = records.split_inclusive(|r| r.flags.is_last());
        for instrument in 1..=3 {
            let batch = batches.next().expect("snapshot batch");
            assert_eq!(batch[0].action, ACTION_CLEAR);
            assert!(batch.len() > 1);
            assert!(batch[1..].iter().all(|r| r.action == ACTION_ADD));
            assert!(batch.iter().all(|r| r.flags.is_snapshot()));
            assert!(batch.iter().all(|r| r.hd.instrument_id == instrument));
        }
        assert!(batches.flatten().all(|r| !r.flags.is_snapshot()));
    }

    #[test]
    fn stats_match_records_and_switches_happen() {
        let (records, stats) = drain(&cfg(11, 30_000, 2));
        let count = |a: c_char| records.iter().filter(|r| r.action == a).count() as u64;
        assert_eq!(stats.adds, count(ACTION_ADD));
        assert_eq!(stats.cancels, count(ACTION_CANCEL));
        assert_eq!(stats.modifies, count(ACTION_MODIFY));
        assert_eq!(stats.trades, count(ACTION_TRADE));
        assert_eq!(stats.fills, count(ACTION_FILL));
        assert!(stats.regime_switches > 0, "{stats:?}");
        assert!(stats.trades > 0 && stats.fills >= stats.trades, "{stats:?}");
    }

    #[test]
    fn internal_book_stays_uncrossed_and_bounded() {
        let mut generator = Generator::new(&cfg(21, 40_000, 3)).expect("valid config");
        while generator.next_record().is_some() {
            for inst in &generator.instruments {
                let book = &inst.book;
                if let (Some(b), Some(a)) = (book.best(BookSide::Bid), book.best(BookSide::Ask)) {
                    assert!(b < a, "crossed: {b} >= {a}");
                }
                assert!(book.count(BookSide::Bid) <= SIDE_CAP);
                assert!(book.count(BookSide::Ask) <= SIDE_CAP);
                assert_eq!(book.bid_count + book.ask_count, book.len());
                assert_eq!(book.orders.len(), book.len());
            }
            assert!(generator.pending.len() <= 2 * MAX_FILLS + MAX_SWEEP_LEVELS + 64);
        }
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = [
            (cfg(1, 0, 1), "ZeroEvents"),
            (cfg(1, MAX_EVENTS + 1, 1), "TooManyEvents"),
            (cfg(1, 10, 0), "ZeroInstruments"),
            (cfg(1, 10, MAX_INSTRUMENTS + 1), "TooManyInstruments"),
            (
                SynthConfig {
                    mean_gap_ns: 0,
                    ..cfg(1, 10, 1)
                },
                "ZeroMeanGap",
            ),
            (
                SynthConfig {
                    start_ts: u64::MAX - 5,
                    ..cfg(1, 10, 1)
                },
                "TimestampOverflow",
            ),
            (
                SynthConfig {
                    mean_gap_ns: u64::MAX / 2,
                    ..cfg(1, 10, 1)
                },
                "TimestampOverflow",
            ),
        ];
        for (config, want) in bad {
            let err = Generator::new(&config).expect_err(want);
            assert!(format!("{err:?}").starts_with(want), "{want}: got {err:?}");
        }
        assert!(Generator::new(&cfg(1, 1, MAX_INSTRUMENTS)).is_ok());
    }

    #[test]
    fn extension_picks_compression() {
        assert_eq!(
            Compression::from_path(Path::new("a/b.dbn.zst")).ok(),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_path(Path::new("b.dbn")).ok(),
            Some(Compression::None)
        );
        for bad in ["b.zst", "b.dbn.gz", "b", "b.DBN", "/", ".."] {
            assert!(Compression::from_path(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_covers_the_capture() {
        let generator = Generator::new(&cfg(2, 1_000, 5)).expect("valid config");
        let md = generator.metadata();
        assert_eq!(md.version, dbn::DBN_VERSION);
        assert_eq!(md.dataset, DATASET);
        assert_eq!(md.start, DEFAULT_START_TS);
        assert_eq!(md.mappings.len(), 5);
        assert_eq!(md.mappings[4].raw_symbol, "SYN4");
        assert_eq!(md.mappings[4].intervals[0].symbol, "5");
        let end = md.end.expect("end set").get();
        let (records, _) = drain(&cfg(2, 1_000, 5));
        assert!(records.iter().all(|r| r.ts_recv < end));
    }
}
