//! Order books built from real market data, checked against independent ground truth:
//!
//! 1. LOBSTER message files against LOBSTER's own book after every message (Nasdaq AAPL, ten
//!    levels, 999 messages; Nasdaq AMZN, one level, a whole day).
//! 2. CME ES market-by-order captures (a self-contained day that opens with its own snapshot,
//!    a clear-then-snapshot capture, and a snapshot-only capture) against a map-based reference
//!    book after every `F_LAST` event, with no unknown order ids and crossed books only during
//!    the pre-open auction.
//! 3. MBP-1 / MBP-10 / BBO / CBBO / CMBP-1 / TBBO captures: after every record the book is the
//!    record's levels, read here through the `dbn` crate's own record types.
//!
//! The data is read in place from `$TICKPIPE_DATA`, else `<workspace>/../shared/data`; without
//! it each test prints a `skipped:` line and passes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use dbn::decode::{DecodeRecordRef, DynDecoder};
use dbn::{BboMsg, CbboMsg, Cmbp1Msg, Mbp1Msg, Mbp10Msg, RecordRef, VersionUpgradePolicy};
use tickpipe_pipeline::book::{BookConfig, BookSource, Books, Side};
use tickpipe_pipeline::depth::{Depth, Level, UNDEF_PRICE};
use tickpipe_pipeline::msg::{Event, MAX_PARTS, rtype};
use tickpipe_shm::hotpath::{self, CountingAlloc};

const F_LAST: u8 = 0x80;

/// Counts the allocations of armed threads (this test arms only its own), to check that
/// applying events allocates nothing.
#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc::new();

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TICKPIPE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: data directory {} not found (set TICKPIPE_DATA)",
            dir.display()
        );
        None
    }
}

/// A file under the data directory, or a `skipped:` line.
fn data_file(dir: &Path, rel: &str) -> Option<PathBuf> {
    let path = dir.join(rel);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipped: {} not found", path.display());
        None
    }
}

/// Files in `dir` whose names satisfy `pick`, sorted.
fn files_in(dir: &Path, pick: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        eprintln!("skipped: {} not found", dir.display());
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pick))
        .collect();
    files.sort();
    files
}

/// Decodes every record of a DBN file (any version, plain or zstd, records as stored) into
/// events as the engine does, handing each record and its events to `f`.
fn for_each_record(path: &Path, mut f: impl FnMut(RecordRef<'_>, &[Event])) -> u64 {
    let mut decoder = DynDecoder::from_file(path, VersionUpgradePolicy::AsIs)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut parts = [Event::default(); MAX_PARTS];
    let mut records = 0u64;
    while let Some(rec) = decoder
        .decode_record_ref()
        .unwrap_or_else(|e| panic!("{}: record {}: {e}", path.display(), records + 1))
    {
        let n = Event::decode_parts(rec.as_ref(), records, 0, &mut parts)
            .unwrap_or_else(|e| panic!("{}: record {}: {e:?}", path.display(), records + 1));
        records += 1;
        f(rec, &parts[..n]);
    }
    records
}

fn levels_of(books: &Books, slot: usize, side: Side, n: usize) -> Vec<(i64, u64)> {
    let book = books.book(slot);
    (0..book.levels(side).min(n))
        .map(|i| {
            let l = book.level(side, i).unwrap();
            (l.price, l.size)
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// 1. LOBSTER
//
// Message columns: time, type (1 add, 2 partial cancel, 3 delete, 4 visible execution,
// 5 hidden execution, 7 halt), order id, size, price x 1e4, direction (+1 buy, -1 sell: the
// resting order's side). The orderbook file holds (ask px, ask size, bid px, bid size) per
// level after each message; a missing level is (+/-9999999999, 0).
//
// Each message becomes one MBO event flagged F_LAST: type 1 an add; types 2, 3 and 4 a cancel
// of the message's size (an execution removes visible size exactly as a cancel does); type 5
// a trade (hidden liquidity was never in the book); type 7 a `N`one.
//
// What the messages cannot tell, and how it is handled:
// - Orders resting before the file starts are unknown. The book is seeded from the first
//   orderbook row minus the first message's own effect, as one synthetic order per level (ids
//   far above Nasdaq's). A message about an id the book does not hold is applied to the
//   synthetic order of its level, whose size stands for the level's unnamed orders.
// - LOBSTER writes messages only for the levels it shows (the requested depth): orders added,
//   cancelled or executed below the shown levels leave no message. Such a level comes into view
//   only when the levels above it go, at a price worse than the previous row's deepest level
//   (when that row showed its full depth on that side; a shorter row showed the whole side).
//   Its unseen history makes whatever the book holds there unreliable, even when the size
//   happens to agree, so the level is made anonymous: its real orders are retired (cancelled
//   from the book, later messages about them go to the synthetic order) and one synthetic
//   order holds the row's size. Likewise a level the book still holds below the previous
//   row's depth, where the row now shows another level, emptied unseen and is removed.
// - Every other difference between the book and a row would be the book's fault: each is
//   counted as unexplained (the test asserts there are none) and then settled the same way,
//   so that one fault is reported once rather than in every later row.
// The rows that differ before this settling are thus exactly the rows where a level came
// into view with a size the messages could not give, or a level vanished unseen; the tests
// assert their number.
// ------------------------------------------------------------------------------------------

/// LOBSTER prices are dollars x 1e4; DBN's are 1e-9.
const LOBSTER_TO_DBN: i64 = 100_000;
/// Synthetic order ids: above any Nasdaq order reference number in the files.
const SYNTHETIC: u64 = 1 << 62;

#[derive(Debug, Clone, Copy)]
struct Message {
    time_ns: u64,
    kind: u8,
    id: u64,
    size: u32,
    price: i64,
    side: Side,
}

/// One orderbook row: levels best first, (price, size), DBN prices.
#[derive(Debug, Clone, Default, PartialEq)]
struct Row {
    bids: Vec<(i64, u64)>,
    asks: Vec<(i64, u64)>,
}

impl Row {
    fn side(&self, side: Side) -> &[(i64, u64)] {
        match side {
            Side::Bid => &self.bids,
            Side::Ask => &self.asks,
        }
    }
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        // The AMZN copy has a header row.
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit() || c == '-'))
        .map(|l| l.split(',').map(|f| f.trim().to_string()).collect())
        .collect()
}

fn read_messages(path: &Path) -> Vec<Message> {
    read_csv(path)
        .into_iter()
        .map(|f| {
            assert_eq!(f.len(), 6, "{}: {f:?}", path.display());
            let secs: f64 = f[0].parse().unwrap();
            Message {
                time_ns: (secs * 1e9).round() as u64,
                kind: f[1].parse().unwrap(),
                id: f[2].parse().unwrap(),
                size: f[3].parse().unwrap(),
                price: f[4].parse::<i64>().unwrap() * LOBSTER_TO_DBN,
                side: if f[5].parse::<i32>().unwrap() > 0 {
                    Side::Bid
                } else {
                    Side::Ask
                },
            }
        })
        .collect()
}

fn read_rows(path: &Path, depth: usize) -> Vec<Row> {
    read_csv(path)
        .into_iter()
        .map(|f| {
            assert_eq!(f.len(), 4 * depth, "{}: {f:?}", path.display());
            let mut row = Row::default();
            for l in 0..depth {
                let v = |i: usize| f[4 * l + i].parse::<i64>().unwrap();
                let (ask_px, ask_sz, bid_px, bid_sz) = (v(0), v(1), v(2), v(3));
                if ask_sz > 0 && ask_px != 9_999_999_999 {
                    row.asks.push((ask_px * LOBSTER_TO_DBN, ask_sz as u64));
                }
                if bid_sz > 0 && bid_px != -9_999_999_999 {
                    row.bids.push((bid_px * LOBSTER_TO_DBN, bid_sz as u64));
                }
            }
            row
        })
        .collect()
}

/// Whether `a` ranks worse than `b` on `side`.
fn worse(side: Side, a: i64, b: i64) -> bool {
    match side {
        Side::Bid => a < b,
        Side::Ask => a > b,
    }
}

#[derive(Debug, Default)]
struct LobsterStats {
    messages: usize,
    rows_matched_directly: usize,
    revealed_levels: usize,
    revealed_levels_resized: usize,
    stale_levels_removed: usize,
    rows_with_unseen_changes: usize,
    unexplained_levels: usize,
    unexplained_rows: usize,
    unknown_id_messages: usize,
    unknown_id_without_synthetic: usize,
    retired_orders: usize,
    messages_on_retired: usize,
    halts: usize,
    hidden_executions: usize,
}

struct Lobster {
    books: Books,
    slot: usize,
    depth: usize,
    seq: u64,
    time_ns: u64,
    /// Real orders made anonymous at a revealed level.
    retired: HashSet<u64>,
}

impl Lobster {
    fn new(depth: usize) -> Self {
        let books = Books::new(&BookConfig {
            max_instruments: 1,
            ..BookConfig::default()
        })
        .unwrap();
        Self {
            books,
            slot: 0,
            depth,
            seq: 0,
            time_ns: 0,
            retired: HashSet::new(),
        }
    }

    fn send(&mut self, action: u8, side: Side, id: u64, price: i64, size: u32) {
        self.seq += 1;
        let ev = Event {
            seq: self.seq,
            ts_event: self.time_ns,
            ts_recv: self.time_ns,
            rtype: rtype::MBO,
            instrument_id: 1,
            action,
            side: side.to_dbn(),
            order_id: id,
            price,
            size,
            flags: F_LAST,
            ..Event::default()
        };
        self.slot = self.books.apply(&ev).expect("one instrument");
    }

    fn synthetic_id(side: Side, price: i64) -> u64 {
        SYNTHETIC | (u64::from(side == Side::Ask) << 61) | (price / LOBSTER_TO_DBN) as u64
    }

    fn row(&self) -> Row {
        Row {
            bids: levels_of(&self.books, self.slot, Side::Bid, self.depth),
            asks: levels_of(&self.books, self.slot, Side::Ask, self.depth),
        }
    }

    fn size_at(&self, side: Side, price: i64) -> (usize, u64) {
        let book = self.books.book(self.slot);
        (0..book.levels(side))
            .map(|i| (i, book.level(side, i).unwrap()))
            .find(|(_, l)| l.price == price)
            .map_or((usize::MAX, 0), |(i, l)| (i, l.size))
    }

    /// Makes the level at `price` anonymous: its real orders are retired and one synthetic
    /// order holds `target` (see above).
    fn set_level(&mut self, side: Side, price: i64, target: u64, stats: &mut LobsterStats) {
        let (index, _) = self.size_at(side, price);
        let syn = Self::synthetic_id(side, price);
        let real: Vec<(u64, u32)> = self
            .books
            .book(self.slot)
            .level_orders(side, index)
            .filter(|&(id, _)| id != syn)
            .map(|(id, o)| (id, o.size))
            .collect();
        for (id, size) in real {
            self.send(b'C', side, id, price, size);
            stats.retired_orders += 1;
            self.retired.insert(id);
        }
        let syn_size = self.books.book(self.slot).order(syn).map_or(0, |o| o.size);
        let target = u32::try_from(target).unwrap();
        match (syn_size, target) {
            (0, 0) => {}
            (0, n) => self.send(b'A', side, syn, price, n),
            (n, 0) => self.send(b'C', side, syn, price, n),
            (_, n) => self.send(b'M', side, syn, price, n),
        }
    }

    /// Applies one message; messages about unknown orders go to their level's synthetic order.
    fn apply(&mut self, m: &Message, stats: &mut LobsterStats) {
        self.time_ns = m.time_ns;
        match m.kind {
            1 => self.send(b'A', m.side, m.id, m.price, m.size),
            2..=4 => {
                let book = self.books.book(self.slot);
                let id = if book.order(m.id).is_some() {
                    m.id
                } else {
                    stats.unknown_id_messages += 1;
                    if self.retired.contains(&m.id) {
                        stats.messages_on_retired += 1;
                    }
                    let syn = Self::synthetic_id(m.side, m.price);
                    if book.order(syn).is_none() {
                        stats.unknown_id_without_synthetic += 1;
                    }
                    syn
                };
                self.send(b'C', m.side, id, m.price, m.size);
            }
            5 => {
                stats.hidden_executions += 1;
                self.send(b'T', m.side, 0, m.price, m.size);
            }
            7 => {
                stats.halts += 1;
                self.send(b'N', m.side, 0, m.price, m.size);
            }
            k => panic!("message type {k}"),
        }
    }

    /// Brings the book to `row` where the differences are explainable, counting the
    /// unexplained ones.
    fn reconcile(&mut self, row: &Row, prev: &Row, stats: &mut LobsterStats) {
        for side in [Side::Bid, Side::Ask] {
            let want = row.side(side);
            let prev_side = prev.side(side);
            let depth = self.depth;
            let hidden_before =
                |p: i64| prev_side.len() == depth && worse(side, p, prev_side[depth - 1].0);
            // Levels coming into view from below the previous row: their history was not
            // published, so whatever the book holds there is replaced by anonymous size.
            for &(p, target) in want {
                if !hidden_before(p) {
                    continue;
                }
                stats.revealed_levels += 1;
                let (index, size) = self.size_at(side, p);
                let syn = Self::synthetic_id(side, p);
                let anonymous = index == usize::MAX
                    || self
                        .books
                        .book(self.slot)
                        .level_orders(side, index)
                        .all(|(id, _)| id == syn);
                if size != target {
                    stats.revealed_levels_resized += 1;
                }
                if size != target || !anonymous {
                    self.set_level(side, p, target, stats);
                }
            }
            // Levels the book still holds where the row shows something else went unseen too;
            // removing one may uncover another.
            for _ in 0..=self.books.book(self.slot).levels(side) {
                let have = self.row();
                let have = have.side(side);
                if have == want {
                    break;
                }
                let row_full = want.len() == depth;
                let mut prices: Vec<i64> = want.iter().map(|l| l.0).collect();
                for &(p, _) in have {
                    let hidden_by_row = row_full && worse(side, p, want[depth - 1].0);
                    if !hidden_by_row && !prices.contains(&p) {
                        prices.push(p);
                    }
                }
                for p in prices {
                    let target = want.iter().find(|l| l.0 == p).map_or(0, |l| l.1);
                    let (_, size) = self.size_at(side, p);
                    if size == target {
                        continue;
                    }
                    if hidden_before(p) {
                        stats.stale_levels_removed += 1;
                    } else {
                        stats.unexplained_levels += 1;
                        eprintln!(
                            "unexplained: {side:?} {p} book {size} row {target} (row {want:?}, previous {prev_side:?})"
                        );
                    }
                    self.set_level(side, p, target, stats);
                }
            }
        }
    }
}

/// Replays a LOBSTER message file and checks the book against every orderbook row.
fn lobster_replay(messages: &[Message], rows: &[Row], depth: usize) -> LobsterStats {
    assert_eq!(messages.len(), rows.len());
    let mut stats = LobsterStats {
        messages: messages.len(),
        ..LobsterStats::default()
    };
    let mut lob = Lobster::new(depth);

    // The book before the first message: the first row minus that message's own effect.
    let first = &messages[0];
    let mut seed: [BTreeMap<i64, u64>; 2] = Default::default();
    for side in [Side::Bid, Side::Ask] {
        seed[side as usize] = rows[0].side(side).iter().copied().collect();
    }
    let level = seed[first.side as usize].entry(first.price).or_default();
    match first.kind {
        1 => *level -= u64::from(first.size),
        2..=4 => *level += u64::from(first.size),
        _ => {}
    }
    seed[first.side as usize].retain(|_, s| *s > 0);
    lob.time_ns = first.time_ns;
    for side in [Side::Bid, Side::Ask] {
        for (&price, &size) in &seed[side as usize] {
            let id = Lobster::synthetic_id(side, price);
            lob.send(b'A', side, id, price, u32::try_from(size).unwrap());
        }
    }
    let mut prev = lob.row();

    for (k, (m, row)) in messages.iter().zip(rows).enumerate() {
        lob.apply(m, &mut stats);
        let direct = lob.row() == *row;
        if direct {
            stats.rows_matched_directly += 1;
        }
        let (unexplained, unseen) = (
            stats.unexplained_levels,
            stats.revealed_levels_resized + stats.stale_levels_removed,
        );
        lob.reconcile(row, &prev, &mut stats);
        if !direct && stats.revealed_levels_resized + stats.stale_levels_removed > unseen {
            stats.rows_with_unseen_changes += 1;
        }
        if stats.unexplained_levels > unexplained {
            stats.unexplained_rows += 1;
            eprintln!("row {k}: message {m:?}");
        }
        assert_eq!(lob.row(), *row, "row {k} after reconciling, message {m:?}");
        assert!(!lob.books.book(lob.slot).is_crossed(), "row {k} crossed");
        prev = row.clone();
    }
    let counts = lob.books.counts();
    assert_eq!(counts.unknown_order, 0, "{counts:?}");
    assert_eq!(counts.duplicate_add, 0, "{counts:?}");
    assert_eq!(counts.negative_size, 0, "{counts:?}");
    assert_eq!(
        counts.order_overflow + counts.level_overflow,
        0,
        "{counts:?}"
    );
    assert_eq!(stats.unexplained_levels, 0, "{stats:?}");
    // Every row the messages did not give directly had a level appear or vanish unseen.
    assert_eq!(
        stats.rows_matched_directly + stats.rows_with_unseen_changes,
        stats.messages,
        "{stats:?}"
    );
    stats
}

#[test]
fn lobster_aapl_level_10_every_row() {
    let Some(dir) = data_dir() else { return };
    let (Some(msgs), Some(book)) = (
        data_file(
            &dir,
            "lobster/AAPL_2012-06-21_34200000_57600000_message_10.csv",
        ),
        data_file(
            &dir,
            "lobster/AAPL_2012-06-21_34200000_57600000_orderbook_10.csv",
        ),
    ) else {
        return;
    };
    let stats = lobster_replay(&read_messages(&msgs), &read_rows(&book, 10), 10);
    println!("LOBSTER AAPL level 10: {stats:?}");
    assert_eq!(stats.unexplained_rows, 0);
    assert_eq!(
        (stats.rows_matched_directly, stats.rows_with_unseen_changes),
        (985, 14)
    );
}

#[test]
fn lobster_amzn_level_1_whole_day() {
    let Some(dir) = data_dir() else { return };
    let (Some(msgs), Some(book)) = (
        data_file(
            &dir,
            "lobster/AMZN_2012-06-21_34200000_57600000_message_1.csv",
        ),
        data_file(
            &dir,
            "lobster/AMZN_2012-06-21_34200000_57600000_orderbook_1.csv",
        ),
    ) else {
        return;
    };
    let stats = lobster_replay(&read_messages(&msgs), &read_rows(&book, 1), 1);
    println!("LOBSTER AMZN level 1: {stats:?}");
    assert_eq!(stats.unexplained_rows, 0);
    assert_eq!(
        (stats.rows_matched_directly, stats.rows_with_unseen_changes),
        (49_348, 8_167)
    );
}

// ------------------------------------------------------------------------------------------
// 2. CME ES market by order
// ------------------------------------------------------------------------------------------

/// Databento's book rules on std maps, without capacities.
#[derive(Default)]
struct MapBook {
    orders: HashMap<u64, (Side, i64, u32)>,
    levels: [BTreeMap<i64, (u64, u32)>; 2],
}

impl MapBook {
    fn level_mut(&mut self, side: Side, price: i64) -> &mut (u64, u32) {
        self.levels[side as usize].entry(price).or_default()
    }

    fn take(&mut self, id: u64) -> Option<(Side, i64, u32)> {
        let (side, price, size) = self.orders.remove(&id)?;
        let level = self.level_mut(side, price);
        level.0 -= u64::from(size);
        level.1 -= 1;
        if level.1 == 0 {
            self.levels[side as usize].remove(&price);
        }
        Some((side, price, size))
    }

    fn put(&mut self, id: u64, side: Side, price: i64, size: u32) {
        self.orders.insert(id, (side, price, size));
        let level = self.level_mut(side, price);
        level.0 += u64::from(size);
        level.1 += 1;
    }

    fn apply(&mut self, ev: &Event) {
        let side = Side::from_dbn(ev.side);
        match (ev.action, side) {
            (b'R', _) => *self = MapBook::default(),
            (b'A', Some(side)) => self.put(ev.order_id, side, ev.price, ev.size),
            (b'C', Some(_)) => {
                let (side, price, size) = self.take(ev.order_id).expect("cancel of a known id");
                if ev.size < size {
                    self.put(ev.order_id, side, price, size - ev.size);
                }
            }
            (b'M', Some(side)) => {
                self.take(ev.order_id);
                if ev.size > 0 {
                    self.put(ev.order_id, side, ev.price, ev.size);
                }
            }
            _ => {}
        }
    }

    fn side(&self, side: Side) -> Vec<Level> {
        let level = |(&price, &(size, count)): (&i64, &(u64, u32))| Level { price, size, count };
        match side {
            Side::Bid => self.levels[0].iter().rev().map(level).collect(),
            Side::Ask => self.levels[1].iter().map(level).collect(),
        }
    }
}

#[derive(Debug, Default)]
struct MboStats {
    records: u64,
    instruments: usize,
    last_events: u64,
    crossed_by_hour: BTreeMap<u64, u64>,
    locked_by_hour: BTreeMap<u64, u64>,
    first_crossed: Option<String>,
    last_crossed: Option<String>,
    max_orders: usize,
    max_levels: usize,
}

/// `HH:MM:SS.nnnnnnnnn` UTC of a timestamp.
fn clock(ts: u64) -> String {
    let secs = ts / 1_000_000_000 % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:09}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ts % 1_000_000_000
    )
}

/// Replays MBO captures into one set of books, checking every instrument against the map
/// reference after every F_LAST event.
fn replay_mbo(files: &[PathBuf]) -> (Books, MboStats) {
    let mut books = Books::new(&BookConfig::default()).unwrap();
    let mut reference: HashMap<u32, MapBook> = HashMap::new();
    let mut stats = MboStats::default();
    for path in files {
        let records = for_each_record(path, |_, events| {
            for ev in events {
                let slot = books.apply(ev);
                if ev.rtype != rtype::MBO {
                    continue;
                }
                let slot = slot.expect("room for every instrument");
                let map = reference.entry(ev.instrument_id).or_default();
                map.apply(ev);
                if !ev.is_last() {
                    continue;
                }
                stats.last_events += 1;
                let book = books.book(slot);
                for side in [Side::Bid, Side::Ask] {
                    let got: Vec<Level> = (0..book.levels(side))
                        .map(|i| book.level(side, i).unwrap())
                        .collect();
                    assert_eq!(got, map.side(side), "{side:?} after {ev:?}");
                    stats.max_levels = stats.max_levels.max(got.len());
                }
                assert_eq!(book.orders(), map.orders.len());
                stats.max_orders = stats.max_orders.max(book.orders());
                // Exchange time: the auction ends at 23:00:00 on the matching engine's clock;
                // its last message reaches the capture server a few microseconds later.
                let hour = ev.ts_event / 3_600_000_000_000 % 24;
                if book.is_crossed() {
                    stats.first_crossed.get_or_insert(clock(ev.ts_event));
                    stats.last_crossed = Some(clock(ev.ts_event));
                    *stats.crossed_by_hour.entry(hour).or_default() += 1;
                }
                if book.is_locked() {
                    *stats.locked_by_hour.entry(hour).or_default() += 1;
                }
            }
        });
        stats.records += records;
    }
    stats.instruments = books.len();
    // Every order the reference holds is in the book at the same price and size.
    for (&instrument, map) in &reference {
        let book = books.book(books.slot(instrument).unwrap());
        for (&id, &(side, price, size)) in &map.orders {
            let o = book.order(id).unwrap();
            assert_eq!((o.side, o.price, o.size), (side, price, size));
        }
    }
    (books, stats)
}

fn assert_clean_mbo(books: &Books) {
    let c = books.counts();
    assert_eq!(c.unknown_order, 0, "{c:?}");
    assert_eq!(c.unknown_modify, 0, "{c:?}");
    assert_eq!(c.errors(), 0, "{c:?}");
    for book in books.iter() {
        assert!(!book.is_degraded());
    }
}

#[test]
fn es_day_mbo() {
    let Some(dir) = data_dir() else { return };
    let Some(day) = data_file(&dir, "dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst") else {
        return;
    };
    let (books, stats) = replay_mbo(&[day]);
    let c = books.counts();
    println!("ES 2023-12-25: {stats:?}\n  counts {c:?}");
    assert_clean_mbo(&books);
    assert_eq!(stats.records, 68_792);
    // The day starts with its own snapshot: the book is never crossed before the pre-open
    // auction (22:00-23:00 UTC) and never after the open at 23:00.
    for (&hour, &n) in &stats.crossed_by_hour {
        assert_eq!(hour, 22, "{n} crossed states at {hour}:00 UTC");
    }
    assert!(c.crossed > 0, "the pre-open auction crosses the book");
    assert_eq!(c.crossed, stats.crossed_by_hour.values().sum::<u64>());
    assert_eq!(c.consistent, stats.last_events);
}

#[test]
fn es_day_applies_without_allocating() {
    let Some(dir) = data_dir() else { return };
    let Some(day) = data_file(&dir, "dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst") else {
        return;
    };
    let mut events = Vec::new();
    for_each_record(&day, |_, parts| events.extend_from_slice(parts));
    let mut books = Books::new(&BookConfig::default()).unwrap();
    let mut depth = Depth::default();
    assert_eq!(
        hotpath::allocations_in(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(16)))),
        1,
        "the counter sees this thread's allocations"
    );
    let n = hotpath::allocations_in(|| {
        for ev in &events {
            if let Some(slot) = books.apply(ev)
                && ev.is_last()
            {
                books.book(slot).depth(&mut depth);
            }
        }
    });
    assert_eq!(n, 0, "allocations while applying the day");
    assert_eq!(books.counts().applied, events.len() as u64);
}

#[test]
fn es_snapshots_mbo() {
    let Some(dir) = data_dir() else { return };
    let mut files = files_in(&dir.join("dbn/esm4-mbo-snapshot"), |n| {
        n.starts_with("orderbooks_mbo_")
    });
    files.extend(data_file(
        &dir,
        "dbn/es-mbo/esh4-glbx-mdp3-20231224.mbo.dbn.zst",
    ));
    if files.is_empty() {
        return;
    }
    for file in &files {
        let (books, stats) = replay_mbo(std::slice::from_ref(file));
        let c = books.counts();
        println!(
            "{}: {stats:?}\n  counts {c:?}",
            file.file_name().unwrap().to_string_lossy()
        );
        assert_clean_mbo(&books);
        assert!(stats.max_orders > 1000, "{stats:?}");
        assert_eq!(c.crossed, 0);
    }
    // The ESM4 definition gives the tick size the books report.
    if let Some(def) = data_file(&dir, "dbn/esm4-mbo-snapshot/orderbooks_definition.dbn.zst") {
        let mut books = Books::new(&BookConfig::default()).unwrap();
        for_each_record(&def, |_, events| {
            let slot = books.apply(&events[0]).unwrap();
            assert_eq!(books.book(slot).tick_size(), Some(250_000_000));
        });
        assert_eq!(books.len(), 1);
    }
}

// ------------------------------------------------------------------------------------------
// 3. Market by price
// ------------------------------------------------------------------------------------------

/// The record's levels as `dbn` reads them: ((bid px, size, count), (ask px, size, count)).
type Pair = ((i64, u32, u32), (i64, u32, u32));

fn record_levels(rec: &RecordRef<'_>) -> Option<Vec<Pair>> {
    let full = |l: &dbn::BidAskPair| {
        (
            (l.bid_px, l.bid_sz, l.bid_ct),
            (l.ask_px, l.ask_sz, l.ask_ct),
        )
    };
    let consolidated =
        |l: &dbn::ConsolidatedBidAskPair| ((l.bid_px, l.bid_sz, 0), (l.ask_px, l.ask_sz, 0));
    let rtype = rec.header().rtype;
    Some(match rtype {
        rtype::MBP_1 => rec.get::<Mbp1Msg>()?.levels.iter().map(full).collect(),
        rtype::MBP_10 => rec.get::<Mbp10Msg>()?.levels.iter().map(full).collect(),
        rtype::BBO_1S | rtype::BBO_1M => rec.get::<BboMsg>()?.levels.iter().map(full).collect(),
        rtype::CMBP_1 | rtype::TCBBO => rec
            .get::<Cmbp1Msg>()?
            .levels
            .iter()
            .map(consolidated)
            .collect(),
        rtype::CBBO_1S | rtype::CBBO_1M => rec
            .get::<CbboMsg>()?
            .levels
            .iter()
            .map(consolidated)
            .collect(),
        _ => return None,
    })
}

/// The leading non-empty levels of one side of a record.
fn expected(levels: &[Pair], side: Side) -> Vec<Level> {
    levels
        .iter()
        .map(|&(b, a)| if side == Side::Bid { b } else { a })
        .take_while(|&(px, sz, _)| px != UNDEF_PRICE && sz > 0)
        .map(|(price, size, count)| Level {
            price,
            size: u64::from(size),
            count,
        })
        .collect()
}

#[test]
fn mbp_books_follow_their_records() {
    let Some(dir) = data_dir() else { return };
    let is_mbp = |n: &str| {
        !n.contains(".frag")
            && [
                "mbp-1.", "mbp-10.", "bbo-1s.", "bbo-1m.", "tbbo.", "cbbo-1s.", "cbbo-1m.",
                "cmbp-1.",
            ]
            .iter()
            .any(|s| n.contains(s))
    };
    let mut files = files_in(&dir.join("dbn/fixtures"), is_mbp);
    files.extend(files_in(&dir.join("dbn/esu4"), |n| {
        n.starts_with("futures_mbp-1")
    }));
    for dataset in files_in(&dir.join("dbn/databento-python"), |_| true) {
        files.extend(files_in(&dataset, is_mbp));
    }
    if files.is_empty() {
        return;
    }
    let (mut total_records, mut total_levels, mut total_other) = (0u64, 0u64, 0u64);
    for file in &files {
        let name = file
            .strip_prefix(&dir)
            .unwrap_or(file)
            .display()
            .to_string();
        let mut books = Books::new(&BookConfig::default()).unwrap();
        let (mut checked, mut other_publisher) = (0u64, 0u64);
        let records = for_each_record(file, |rec, events| {
            let mut slot = None;
            for ev in events {
                slot = books.apply(ev);
            }
            let Some(levels) = record_levels(&rec) else {
                return;
            };
            let book = books.book(slot.expect("a book record"));
            // Books are per instrument: a venue's quotes for an instrument another venue's
            // quotes built first are refused (OPRA's per-exchange BBOs), and counted.
            if !matches!(book.source(), BookSource::Mbp { publisher_id, .. } if publisher_id == events[0].publisher_id)
            {
                other_publisher += events.len() as u64;
                return;
            }
            for side in [Side::Bid, Side::Ask] {
                let want = expected(&levels, side);
                let got: Vec<Level> = (0..book.levels(side))
                    .map(|i| book.level(side, i).unwrap())
                    .collect();
                assert_eq!(got, want, "{name}: {side:?} after {:?}", events[0]);
                total_levels += want.len() as u64;
            }
            checked += 1;
        });
        let c = books.counts();
        println!(
            "{name}: {records} records, {checked} checked, {other_publisher} from another publisher, {} instruments",
            books.len()
        );
        assert!(checked > 0, "{name}: no MBP records");
        assert_eq!(c.mixed_source, other_publisher, "{name}: {c:?}");
        assert_eq!(c.errors(), c.mixed_source, "{name}: {c:?}");
        total_records += checked;
        total_other += other_publisher;
    }
    println!(
        "MBP: {} files, {total_records} records and {total_levels} levels compared, {total_other} events from another publisher",
        files.len()
    );
}
