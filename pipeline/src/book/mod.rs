//! Order books built from decoded DBN events, one per instrument, in memory reserved up front.
//!
//! # Sources
//! A book follows one source, fixed by the first book record seen for its instrument: market by
//! order (MBO, `rtype 0xA0`) or one market-by-price record type (MBP-1, MBP-10, BBO, CMBP-1,
//! CBBO, TCBBO) from one publisher. A record of another type or publisher for the same
//! instrument is ignored and counted in [`BookCounts::mixed_source`]: mixing an MBO book with
//! sampled quotes, or two venues' books, would silently corrupt both.
//!
//! # MBO semantics (Databento's)
//! - `A`dd inserts the order at the back of its level's queue.
//! - `C`ancel removes the event's size from the resting order and removes the order at zero.
//!   A cancel larger than the resting size removes the order and is counted
//!   ([`BookCounts::negative_size`]).
//! - `M`odify of an unknown id is an add ([`BookCounts::unknown_modify`]); a price change or a
//!   size increase sends the order to the back of the queue of its (new) level; a size decrease
//!   keeps its place; a modify to size 0 removes the order.
//! - A cancel or modify whose side is not the resting order's is ignored and counted
//!   ([`BookCounts::side_change`]): the id and the side disagree, and neither can be trusted.
//! - cle`R` empties the instrument's book (a snapshot of adds follows it).
//! - `T`rade, `F`ill and `N`one leave the book alone: every fill is followed by the cancel or
//!   modify that updates the resting order.
//! - `A`/`C`/`M` with side `N`, an undefined price or (for adds) size 0 are ignored and counted.
//! - Records flagged `F_TOB` (0x40) come from venues that publish only their top of book (for
//!   example IEX and NYSE National in Databento's equities datasets): such an add replaces all
//!   levels of its side with one level without orders (count 0), and an undefined price empties
//!   the side, as in Databento's own book example. A top-of-book cancel or modify with a price
//!   has no documented meaning and is ignored and counted ([`BookCounts::bad_action`]).
//!
//! Per-order priority is kept: each level holds a FIFO queue of its orders
//! ([`Book::level_orders`]), alongside the aggregate size and count the features read.
//!
//! # MBP semantics
//! Each event carries one level (`level`) of both sides of its record: level `level` of the
//! book becomes that level (`UNDEF_PRICE` or size 0: empty). An MBP-10 book is exactly the
//! record's ten levels; deeper ones are unknown. A book's levels are the leading non-empty
//! levels of the record; a non-empty level after an empty one is counted
//! ([`BookCounts::bad_level`]) and not shown.
//!
//! # Consistent states
//! Crossed and locked books are judged only where the venue's event is complete: after an MBO
//! event flagged `F_LAST`, and after the last event of an MBP record
//! ([`Event::completes_record`]). Other states may be transient halves of one venue event.
//!
//! # Capacity
//! Everything is allocated by [`Books::new`]: the instrument table, and per instrument an order
//! pool of `max_orders` nodes, an order-id index of a power of two at least twice that many
//! slots (linear probing, backward-shift deletion: it never degrades), and a sorted array of
//! `max_levels` levels per side. Nothing grows afterwards. When a capacity is reached:
//! - no free order node: the add is dropped ([`BookCounts::order_overflow`]);
//! - no free level on a side: when the new price ranks better than the worst level held, the
//!   worst level and its orders are evicted to make room (the top of the book, which features
//!   read, stays right); otherwise the order is dropped. Both count in
//!   [`BookCounts::level_overflow`];
//! - no free instrument slot: the event is dropped ([`BookCounts::instrument_overflow`]).
//!
//! An overflow marks the book degraded ([`Book::is_degraded`]) until its next clear.
//!
//! Books are keyed by instrument id alone (Databento's own example keys them by instrument and
//! publisher), so a dataset whose instrument ids repeat across publishers (OPRA's per-exchange
//! quotes, consolidated equities) needs one [`Books`] per publisher; otherwise the first
//! publisher seen owns the instrument and the others count as mixed sources.

mod ladder;
mod orders;
#[cfg(test)]
mod tests;

use crate::PipelineError;
use crate::depth::{Depth, FEATURE_LEVELS, Level, UNDEF_PRICE};
use crate::msg::{Event, rtype};
use ladder::{Agg, Ladder};
use orders::{NIL, Node, OrderIndex, Pool};

/// DBN `F_TOB`: a top-of-book record, not an individual order.
const F_TOB: u8 = 0x40;

/// Levels per side an MBP book holds (MBP-10).
pub const MBP_DEPTH: usize = crate::msg::MAX_PARTS;

/// Capacities of [`Books`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookConfig {
    /// Instruments (books).
    pub max_instruments: usize,
    /// Resting orders per instrument (MBO).
    pub max_orders: usize,
    /// Price levels per side per instrument (MBO).
    pub max_levels: usize,
}

impl Default for BookConfig {
    fn default() -> Self {
        Self {
            max_instruments: 64,
            max_orders: 1 << 16,
            max_levels: 4096,
        }
    }
}

impl BookConfig {
    /// Largest accepted `max_instruments`.
    pub const MAX_INSTRUMENTS: usize = 1 << 16;
    /// Largest accepted `max_orders` (node indices are `u32`).
    pub const MAX_ORDERS: usize = 1 << 24;
    /// Largest accepted `max_levels`.
    pub const MAX_LEVELS: usize = 1 << 20;
    /// Largest accepted total reservation ([`BookConfig::reserved_bytes`]).
    pub const MAX_BYTES: usize = 16 << 30;

    /// Memory reserved for these capacities. [`Books::new`] writes all of it, so that the
    /// event loop takes no first-touch page faults: it is resident from the start.
    pub fn reserved_bytes(&self) -> usize {
        let index = self
            .max_orders
            .saturating_mul(2)
            .checked_next_power_of_two()
            .unwrap_or(usize::MAX)
            .saturating_mul(8);
        let pool = self.max_orders.saturating_mul(std::mem::size_of::<Node>());
        let levels = self
            .max_levels
            .saturating_mul(2 * (8 + std::mem::size_of::<Agg>()));
        let per_book = index
            .saturating_add(pool)
            .saturating_add(levels)
            .saturating_add(std::mem::size_of::<Book>());
        let table = self.max_instruments.saturating_mul(16);
        self.max_instruments
            .saturating_mul(per_book)
            .saturating_add(table)
    }

    /// Checks the capacities.
    ///
    /// # Errors
    /// [`PipelineError::Config`] naming the field when a capacity is zero or above its limit
    /// (`MAX_*`), or when all of them together would reserve more than
    /// [`BookConfig::MAX_BYTES`].
    pub fn validate(&self) -> Result<(), PipelineError> {
        for (field, value, max) in [
            (
                "book.max_instruments",
                self.max_instruments,
                Self::MAX_INSTRUMENTS,
            ),
            ("book.max_orders", self.max_orders, Self::MAX_ORDERS),
            ("book.max_levels", self.max_levels, Self::MAX_LEVELS),
        ] {
            if value == 0 || value > max {
                return Err(PipelineError::config(
                    field,
                    format!("{value} is not between 1 and {max}"),
                ));
            }
        }
        let bytes = self.reserved_bytes();
        if bytes > Self::MAX_BYTES {
            return Err(PipelineError::config(
                "book",
                format!(
                    "{} instruments x {} orders x {} levels would reserve {} MiB (limit {} MiB)",
                    self.max_instruments,
                    self.max_orders,
                    self.max_levels,
                    bytes >> 20,
                    Self::MAX_BYTES >> 20
                ),
            ));
        }
        Ok(())
    }
}

/// A side of the book.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Buy orders.
    Bid,
    /// Sell orders.
    Ask,
}

impl Side {
    /// The side DBN writes as `B` or `A`; `None` for anything else (`N`).
    #[inline]
    pub fn from_dbn(c: u8) -> Option<Side> {
        match c {
            b'B' => Some(Side::Bid),
            b'A' => Some(Side::Ask),
            _ => None,
        }
    }

    /// DBN's character for the side.
    #[inline]
    pub fn to_dbn(self) -> u8 {
        match self {
            Side::Bid => b'B',
            Side::Ask => b'A',
        }
    }

    #[inline]
    fn idx(self) -> usize {
        self as usize
    }
}

/// A resting order of an MBO book.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Order {
    /// Price, DBN fixed point (1e-9).
    pub price: i64,
    /// Remaining size.
    pub size: u32,
    /// Side.
    pub side: Side,
}

/// What a book is built from (fixed by its first book record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BookSource {
    /// No book record yet.
    #[default]
    None,
    /// Market by order.
    Mbo {
        /// The publisher.
        publisher_id: u16,
    },
    /// Market by price: one record type ([`crate::msg::rtype`]).
    Mbp {
        /// The record type.
        rtype: u8,
        /// The publisher.
        publisher_id: u16,
    },
}

/// Event counts of a book, or summed over [`Books`]. Every event a book is given counts once in
/// `applied` or in one of the reasons it was not (fully) applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BookCounts {
    /// Events taken (including trades and fills, which leave the book alone, clamped cancels
    /// and modifies applied as adds).
    pub applied: u64,
    /// Cancels of an id the book does not hold (ignored).
    pub unknown_order: u64,
    /// Modifies of an id the book does not hold, applied as adds (Databento's rule).
    pub unknown_modify: u64,
    /// Adds of an id the book already holds (ignored; the resting order stays).
    pub duplicate_add: u64,
    /// Cancels larger than the resting size (clamped: the order is removed).
    pub negative_size: u64,
    /// Consistent states judged (see the module docs).
    pub consistent: u64,
    /// Consistent states with best bid above best ask.
    pub crossed: u64,
    /// Consistent states with best bid equal to best ask.
    pub locked: u64,
    /// Adds dropped for want of an order node.
    pub order_overflow: u64,
    /// Levels that did not fit: a worse level evicted, or the order dropped.
    pub level_overflow: u64,
    /// Events dropped for want of an instrument slot ([`Books`] only).
    pub instrument_overflow: u64,
    /// Records of another type or publisher than the book's source (ignored).
    pub mixed_source: u64,
    /// Book clears (`R`).
    pub clears: u64,
    /// `A`/`C`/`M` with a side other than `B`/`A` (ignored).
    pub bad_side: u64,
    /// Actions that are not DBN's, or a top-of-book cancel/modify with a price (ignored).
    pub bad_action: u64,
    /// Adds or modifies at `UNDEF_PRICE` (ignored).
    pub bad_price: u64,
    /// Adds of size 0 (ignored).
    pub zero_size: u64,
    /// Cancels or modifies whose side is not the resting order's (ignored).
    pub side_change: u64,
    /// MBP events whose level lies outside their record, and MBP records with a non-empty
    /// level after an empty one.
    pub bad_level: u64,
}

impl BookCounts {
    /// Events that were ignored or only partly applied, and records with defects.
    pub fn errors(&self) -> u64 {
        self.unknown_order
            + self.duplicate_add
            + self.negative_size
            + self.order_overflow
            + self.level_overflow
            + self.instrument_overflow
            + self.mixed_source
            + self.bad_side
            + self.bad_action
            + self.bad_price
            + self.zero_size
            + self.side_change
            + self.bad_level
    }
}

impl std::ops::AddAssign for BookCounts {
    fn add_assign(&mut self, o: BookCounts) {
        self.applied += o.applied;
        self.unknown_order += o.unknown_order;
        self.unknown_modify += o.unknown_modify;
        self.duplicate_add += o.duplicate_add;
        self.negative_size += o.negative_size;
        self.consistent += o.consistent;
        self.crossed += o.crossed;
        self.locked += o.locked;
        self.order_overflow += o.order_overflow;
        self.level_overflow += o.level_overflow;
        self.instrument_overflow += o.instrument_overflow;
        self.mixed_source += o.mixed_source;
        self.clears += o.clears;
        self.bad_side += o.bad_side;
        self.bad_action += o.bad_action;
        self.bad_price += o.bad_price;
        self.zero_size += o.zero_size;
        self.side_change += o.side_change;
        self.bad_level += o.bad_level;
    }
}

/// The book of one instrument.
pub struct Book {
    instrument_id: u32,
    source: BookSource,
    tick_size: Option<i64>,
    /// MBO levels, indexed by [`Side`].
    sides: [Ladder; 2],
    pool: Pool,
    index: OrderIndex,
    /// MBP levels by position, indexed by [`Side`]; an empty level has size 0.
    mbp: [[Level; MBP_DEPTH]; 2],
    /// Leading non-empty MBP levels per side.
    mbp_len: [usize; 2],
    counts: BookCounts,
    degraded: bool,
}

impl std::fmt::Debug for Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Book")
            .field("instrument_id", &self.instrument_id)
            .field("source", &self.source)
            .field("bid_levels", &self.levels(Side::Bid))
            .field("ask_levels", &self.levels(Side::Ask))
            .field("orders", &self.orders())
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
}

impl Book {
    fn new(cfg: &BookConfig) -> Self {
        Self {
            instrument_id: 0,
            source: BookSource::None,
            tick_size: None,
            sides: [
                Ladder::new(cfg.max_levels, Side::Bid),
                Ladder::new(cfg.max_levels, Side::Ask),
            ],
            pool: Pool::new(cfg.max_orders),
            index: OrderIndex::new(cfg.max_orders),
            mbp: [[Level::default(); MBP_DEPTH]; 2],
            mbp_len: [0; 2],
            counts: BookCounts::default(),
            degraded: false,
        }
    }

    /// The instrument.
    #[inline]
    pub fn instrument_id(&self) -> u32 {
        self.instrument_id
    }

    /// What the book is built from.
    #[inline]
    pub fn source(&self) -> BookSource {
        self.source
    }

    /// The minimum price increment from the instrument's definition, if one was seen (DBN
    /// fixed point).
    #[inline]
    pub fn tick_size(&self) -> Option<i64> {
        self.tick_size
    }

    /// The best bid level.
    #[inline]
    pub fn best_bid(&self) -> Option<Level> {
        self.level(Side::Bid, 0)
    }

    /// The best ask level.
    #[inline]
    pub fn best_ask(&self) -> Option<Level> {
        self.level(Side::Ask, 0)
    }

    /// Level `i` of `side`, best first (0).
    #[inline]
    pub fn level(&self, side: Side, i: usize) -> Option<Level> {
        let s = side.idx();
        if let BookSource::Mbp { .. } = self.source {
            (i < self.mbp_len[s]).then(|| self.mbp[s][i])
        } else {
            self.sides[s].level(i)
        }
    }

    /// Levels held on `side`.
    #[inline]
    pub fn levels(&self, side: Side) -> usize {
        let s = side.idx();
        if let BookSource::Mbp { .. } = self.source {
            self.mbp_len[s]
        } else {
            self.sides[s].len()
        }
    }

    /// Writes the top [`FEATURE_LEVELS`] levels of both sides to `out`.
    #[inline]
    pub fn depth(&self, out: &mut Depth) {
        out.bid_levels = self.fill(Side::Bid, &mut out.bids);
        out.ask_levels = self.fill(Side::Ask, &mut out.asks);
    }

    #[inline]
    fn fill(&self, side: Side, out: &mut [Level; FEATURE_LEVELS]) -> u8 {
        let s = side.idx();
        let n = if let BookSource::Mbp { .. } = self.source {
            let n = self.mbp_len[s].min(FEATURE_LEVELS);
            out[..n].copy_from_slice(&self.mbp[s][..n]);
            n
        } else {
            self.sides[s].top(out)
        };
        out[n..].fill(Level::default());
        // At most FEATURE_LEVELS.
        n as u8
    }

    /// The resting order `order_id` (MBO books).
    #[inline]
    pub fn order(&self, order_id: u64) -> Option<Order> {
        self.index.find(order_id, &self.pool).map(|(_, idx)| {
            let n = self.pool.get(idx);
            Order {
                price: n.price,
                size: n.size,
                side: n.side,
            }
        })
    }

    /// Resting orders (MBO books).
    #[inline]
    pub fn orders(&self) -> usize {
        self.pool.live()
    }

    /// The orders of level `i` of `side` (best first) in priority order, as `(order id,
    /// order)`. Empty for MBP books and top-of-book levels.
    pub fn level_orders(&self, side: Side, i: usize) -> LevelOrders<'_> {
        let ladder = &self.sides[side.idx()];
        let next = match (self.source, ladder.position(i)) {
            (BookSource::Mbo { .. }, Some(pos)) => ladder.agg(pos).head,
            _ => NIL,
        };
        LevelOrders {
            pool: &self.pool,
            next,
        }
    }

    /// Whether the best bid is above the best ask now.
    #[inline]
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.price > a.price)
    }

    /// Whether the best bid equals the best ask now.
    #[inline]
    pub fn is_locked(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some(b), Some(a)) if b.price == a.price)
    }

    /// Whether an order or level was dropped for want of capacity since the last clear: the
    /// book may then differ from the venue's.
    #[inline]
    pub fn is_degraded(&self) -> bool {
        self.degraded
    }

    /// This book's event counts.
    #[inline]
    pub fn counts(&self) -> BookCounts {
        self.counts
    }

    fn reset(&mut self, instrument_id: u32) {
        self.clear();
        self.instrument_id = instrument_id;
        self.source = BookSource::None;
        self.tick_size = None;
        self.counts = BookCounts::default();
    }

    fn apply_definition(&mut self, ev: &Event) {
        self.tick_size = (ev.price > 0 && ev.price != UNDEF_PRICE).then_some(ev.price);
    }

    /// Judges a consistent state.
    #[inline]
    fn judge(&mut self) {
        self.counts.consistent += 1;
        if let (Some(b), Some(a)) = (self.best_bid(), self.best_ask()) {
            if b.price > a.price {
                self.counts.crossed += 1;
            } else if b.price == a.price {
                self.counts.locked += 1;
            }
        }
    }

    // ---- MBO ----

    #[inline]
    fn apply_mbo(&mut self, ev: &Event) {
        match self.source {
            BookSource::Mbo { publisher_id } if publisher_id == ev.publisher_id => {}
            BookSource::None => {
                self.source = BookSource::Mbo {
                    publisher_id: ev.publisher_id,
                }
            }
            _ => {
                self.counts.mixed_source += 1;
                return;
            }
        }
        self.mbo_event(ev);
        if ev.is_last() {
            self.judge();
        }
    }

    #[inline]
    fn mbo_event(&mut self, ev: &Event) {
        match ev.action {
            b'T' | b'F' | b'N' => {
                self.counts.applied += 1;
                return;
            }
            b'R' => {
                self.clear();
                self.counts.clears += 1;
                self.counts.applied += 1;
                return;
            }
            b'A' | b'C' | b'M' => {}
            _ => {
                self.counts.bad_action += 1;
                return;
            }
        }
        let Some(side) = Side::from_dbn(ev.side) else {
            self.counts.bad_side += 1;
            return;
        };
        if ev.flags & F_TOB != 0 {
            self.top_of_book(ev, side);
            return;
        }
        match ev.action {
            b'A' => self.add(ev.order_id, side, ev.price, ev.size),
            b'C' => self.cancel(ev.order_id, side, ev.size),
            _ => self.modify(ev.order_id, side, ev.price, ev.size),
        }
    }

    fn add(&mut self, id: u64, side: Side, price: i64, size: u32) {
        if price == UNDEF_PRICE {
            self.counts.bad_price += 1;
            return;
        }
        if size == 0 {
            self.counts.zero_size += 1;
            return;
        }
        let vacant = match self.index.find_or_vacant(id, &self.pool) {
            Ok(_) => {
                self.counts.duplicate_add += 1;
                return;
            }
            Err(vacant) => vacant,
        };
        let node = Node {
            id,
            price,
            size,
            side,
            prev: NIL,
            next: NIL,
        };
        let Some(idx) = self.pool.alloc(node) else {
            self.counts.order_overflow += 1;
            self.degraded = true;
            return;
        };
        let evictions = self.counts.level_overflow;
        let Some(pos) = self.level_for(side, price) else {
            self.pool.release(idx);
            return;
        };
        self.link_tail(side.idx(), pos, idx);
        if self.counts.level_overflow == evictions {
            self.index.insert_at(vacant, id, idx);
        } else {
            // An eviction removed index entries, which may have moved the vacant slot.
            self.index.insert(id, idx);
        }
        self.counts.applied += 1;
    }

    fn cancel(&mut self, id: u64, side: Side, size: u32) {
        let Some((slot, idx)) = self.index.find(id, &self.pool) else {
            self.counts.unknown_order += 1;
            return;
        };
        let node = *self.pool.get(idx);
        if node.side != side {
            self.counts.side_change += 1;
            return;
        }
        let s = side.idx();
        let Ok(pos) = self.sides[s].locate(node.price) else {
            return self.lost(slot, idx);
        };
        if size >= node.size {
            if size > node.size {
                self.counts.negative_size += 1;
            }
            self.remove_order(s, pos, idx, slot);
        } else {
            self.pool.get_mut(idx).size -= size;
            let agg = self.sides[s].agg_mut(pos);
            agg.size = agg.size.saturating_sub(u64::from(size));
        }
        self.counts.applied += 1;
    }

    fn modify(&mut self, id: u64, side: Side, price: i64, size: u32) {
        let Some((slot, idx)) = self.index.find(id, &self.pool) else {
            self.counts.unknown_modify += 1;
            return self.add(id, side, price, size);
        };
        let node = *self.pool.get(idx);
        if node.side != side {
            self.counts.side_change += 1;
            return;
        }
        if price == UNDEF_PRICE {
            self.counts.bad_price += 1;
            return;
        }
        let s = side.idx();
        let Ok(pos) = self.sides[s].locate(node.price) else {
            return self.lost(slot, idx);
        };
        if size == 0 {
            self.remove_order(s, pos, idx, slot);
        } else if price != node.price {
            // A new price loses priority: to the back of the new level's queue.
            self.unlink(s, pos, idx);
            self.drop_if_empty(s, pos);
            let n = self.pool.get_mut(idx);
            n.price = price;
            n.size = size;
            match self.level_for(side, price) {
                Some(pos) => self.link_tail(s, pos, idx),
                None => {
                    // Eviction may have moved index entries: look the id up again.
                    self.index.remove(id, &self.pool);
                    self.pool.release(idx);
                    return;
                }
            }
        } else if size > node.size {
            // More size loses priority too.
            self.unlink(s, pos, idx);
            self.pool.get_mut(idx).size = size;
            self.link_tail(s, pos, idx);
        } else {
            self.pool.get_mut(idx).size = size;
            let agg = self.sides[s].agg_mut(pos);
            agg.size = agg.size.saturating_sub(u64::from(node.size - size));
        }
        self.counts.applied += 1;
    }

    /// An order whose level is missing: cannot happen while the book's invariants hold; the
    /// order is forgotten rather than left half-linked.
    #[cold]
    fn lost(&mut self, slot: usize, idx: u32) {
        self.index.remove_at(slot);
        self.pool.release(idx);
    }

    fn top_of_book(&mut self, ev: &Event, side: Side) {
        if ev.price != UNDEF_PRICE && ev.action != b'A' {
            self.counts.bad_action += 1;
            return;
        }
        let s = side.idx();
        self.clear_side(s);
        if ev.price != UNDEF_PRICE && ev.size > 0 {
            let agg = Agg {
                size: u64::from(ev.size),
                ..Agg::EMPTY
            };
            self.sides[s].insert(0, ev.price, agg);
        }
        self.counts.applied += 1;
    }

    /// The position of the level at `price`, inserting it when absent. When the side is full,
    /// evicts the worst level if `price` ranks better, else gives `None`; both count as a
    /// level overflow.
    #[inline]
    fn level_for(&mut self, side: Side, price: i64) -> Option<usize> {
        let s = side.idx();
        match self.sides[s].locate(price) {
            Ok(pos) => Some(pos),
            Err(pos) if !self.sides[s].is_full() => {
                self.sides[s].insert(pos, price, Agg::EMPTY);
                Some(pos)
            }
            Err(pos) => {
                self.counts.level_overflow += 1;
                self.degraded = true;
                // Position 0 is below the worst level held.
                if pos == 0 {
                    return None;
                }
                self.forget_level_orders(s, 0);
                self.sides[s].remove(0);
                self.sides[s].insert(pos - 1, price, Agg::EMPTY);
                Some(pos - 1)
            }
        }
    }

    /// Appends node `idx` (detached, with its final size) to the queue of level `pos`.
    #[inline]
    fn link_tail(&mut self, s: usize, pos: usize, idx: u32) {
        let agg = self.sides[s].agg_mut(pos);
        let tail = agg.tail;
        let node = self.pool.get_mut(idx);
        node.prev = tail;
        node.next = NIL;
        agg.size += u64::from(node.size);
        agg.count += 1;
        agg.tail = idx;
        if tail == NIL {
            agg.head = idx;
        } else {
            self.pool.get_mut(tail).next = idx;
        }
    }

    /// Takes node `idx` out of the queue of level `pos` (the level stays, maybe empty).
    #[inline]
    fn unlink(&mut self, s: usize, pos: usize, idx: u32) {
        let node = *self.pool.get(idx);
        let agg = self.sides[s].agg_mut(pos);
        agg.size = agg.size.saturating_sub(u64::from(node.size));
        agg.count = agg.count.saturating_sub(1);
        if node.prev == NIL {
            agg.head = node.next;
        } else {
            self.pool.get_mut(node.prev).next = node.next;
        }
        if node.next == NIL {
            agg.tail = node.prev;
        } else {
            self.pool.get_mut(node.next).prev = node.prev;
        }
    }

    #[inline]
    fn drop_if_empty(&mut self, s: usize, pos: usize) {
        let agg = self.sides[s].agg(pos);
        if agg.head == NIL && agg.size == 0 {
            self.sides[s].remove(pos);
        }
    }

    #[inline]
    fn remove_order(&mut self, s: usize, pos: usize, idx: u32, slot: usize) {
        self.unlink(s, pos, idx);
        self.drop_if_empty(s, pos);
        self.index.remove_at(slot);
        self.pool.release(idx);
    }

    /// Forgets the orders queued at level `pos` (the level itself stays).
    fn forget_level_orders(&mut self, s: usize, pos: usize) {
        let mut n = self.sides[s].agg(pos).head;
        while n != NIL {
            let node = *self.pool.get(n);
            self.index.remove(node.id, &self.pool);
            self.pool.release(n);
            n = node.next;
        }
    }

    fn clear_side(&mut self, s: usize) {
        if self.pool.live() > 0 {
            for pos in 0..self.sides[s].len() {
                self.forget_level_orders(s, pos);
            }
        }
        self.sides[s].clear();
    }

    fn clear(&mut self) {
        let live = self.pool.live();
        if live > 0 {
            if live.saturating_mul(8) >= self.index.capacity() {
                self.index.clear();
            } else {
                for s in 0..2 {
                    for pos in 0..self.sides[s].len() {
                        self.forget_level_orders(s, pos);
                    }
                }
            }
        }
        self.pool.reset();
        for ladder in &mut self.sides {
            ladder.clear();
        }
        self.mbp = [[Level::default(); MBP_DEPTH]; 2];
        self.mbp_len = [0; 2];
        self.degraded = false;
    }

    // ---- MBP ----

    #[inline]
    fn apply_mbp(&mut self, ev: &Event) {
        match self.source {
            BookSource::Mbp {
                rtype,
                publisher_id,
            } if rtype == ev.rtype && publisher_id == ev.publisher_id => {}
            BookSource::None => {
                self.source = BookSource::Mbp {
                    rtype: ev.rtype,
                    publisher_id: ev.publisher_id,
                }
            }
            _ => {
                self.counts.mixed_source += 1;
                return;
            }
        }
        let depth = usize::from(ev.levels).min(MBP_DEPTH);
        let i = usize::from(ev.level);
        if i >= depth {
            self.counts.bad_level += 1;
            return;
        }
        self.set_mbp(Side::Bid.idx(), i, ev.bid_px, ev.bid_sz, ev.bid_ct);
        self.set_mbp(Side::Ask.idx(), i, ev.ask_px, ev.ask_sz, ev.ask_ct);
        if i == 0 && ev.action == b'R' {
            self.counts.clears += 1;
        }
        self.counts.applied += 1;
        if ev.completes_record() {
            for s in 0..2 {
                let len = self.mbp_len[s];
                if len < depth && self.mbp[s][len..depth].iter().any(|l| l.size > 0) {
                    self.counts.bad_level += 1;
                }
            }
            self.judge();
        }
    }

    #[inline]
    fn set_mbp(&mut self, s: usize, i: usize, price: i64, size: u32, count: u32) {
        let levels = &mut self.mbp[s];
        if price == UNDEF_PRICE || size == 0 {
            levels[i] = Level::default();
            if i < self.mbp_len[s] {
                self.mbp_len[s] = i;
            }
        } else {
            levels[i] = Level {
                price,
                size: u64::from(size),
                count,
            };
            if i == self.mbp_len[s] {
                let mut n = i + 1;
                while n < MBP_DEPTH && levels[n].size > 0 {
                    n += 1;
                }
                self.mbp_len[s] = n;
            }
        }
    }
}

/// The orders of one level in priority order; see [`Book::level_orders`].
#[derive(Debug, Clone)]
pub struct LevelOrders<'a> {
    pool: &'a Pool,
    next: u32,
}

impl Iterator for LevelOrders<'_> {
    type Item = (u64, Order);

    fn next(&mut self) -> Option<(u64, Order)> {
        if self.next == NIL {
            return None;
        }
        let n = self.pool.get(self.next);
        self.next = n.next;
        Some((
            n.id,
            Order {
                price: n.price,
                size: n.size,
                side: n.side,
            },
        ))
    }
}

/// What a record type contributes to a book.
enum Kind {
    Mbo,
    Mbp,
    Definition,
}

/// The books of all instruments, in fixed capacity.
pub struct Books {
    /// All `max_instruments` books, built up front; the first `used` are assigned.
    books: Vec<Book>,
    used: usize,
    /// Instrument id -> slot: `(slot + 1) << 32 | instrument_id`, 0 = empty. Twice as many
    /// entries as books, so probes always end.
    table: Vec<u64>,
    mask: usize,
    shift: u32,
    /// The last instrument looked up and its slot (`usize::MAX`: none): consecutive events
    /// are mostly for the same instrument.
    last: (u32, usize),
    instrument_overflow: u64,
}

impl std::fmt::Debug for Books {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Books")
            .field("instruments", &self.used)
            .field("capacity", &self.books.len())
            .field("counts", &self.counts())
            .finish_non_exhaustive()
    }
}

impl Books {
    /// Reserves books for `cfg.max_instruments` instruments.
    ///
    /// # Errors
    /// [`PipelineError::Config`] for capacities [`BookConfig::validate`] rejects.
    pub fn new(cfg: &BookConfig) -> Result<Books, PipelineError> {
        cfg.validate()?;
        let cap = (cfg.max_instruments * 2).next_power_of_two();
        Ok(Books {
            books: (0..cfg.max_instruments).map(|_| Book::new(cfg)).collect(),
            used: 0,
            table: vec![0; cap],
            mask: cap - 1,
            shift: 64 - cap.trailing_zeros(),
            last: (0, usize::MAX),
            instrument_overflow: 0,
        })
    }

    /// Applies one event to its instrument's book and returns the book's slot. `None` for
    /// record types without book content (trades, statistics, status, ...), and when no slot
    /// is left for a new instrument (counted in [`BookCounts::instrument_overflow`]).
    /// Instrument definitions set [`Book::tick_size`].
    #[inline]
    pub fn apply(&mut self, ev: &Event) -> Option<usize> {
        let kind = match ev.rtype {
            rtype::MBO => Kind::Mbo,
            rtype::MBP_1
            | rtype::MBP_10
            | rtype::BBO_1S
            | rtype::BBO_1M
            | rtype::CMBP_1
            | rtype::CBBO_1S
            | rtype::CBBO_1M
            | rtype::TCBBO => Kind::Mbp,
            rtype::INSTRUMENT_DEF => Kind::Definition,
            _ => return None,
        };
        let slot = self.slot_or_insert(ev.instrument_id)?;
        let book = &mut self.books[slot];
        match kind {
            Kind::Mbo => book.apply_mbo(ev),
            Kind::Mbp => book.apply_mbp(ev),
            Kind::Definition => book.apply_definition(ev),
        }
        Some(slot)
    }

    #[inline]
    fn home(&self, instrument_id: u32) -> usize {
        (u64::from(instrument_id).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn slot_or_insert(&mut self, instrument_id: u32) -> Option<usize> {
        if self.last.0 == instrument_id && self.last.1 != usize::MAX {
            return Some(self.last.1);
        }
        let mut i = self.home(instrument_id);
        let slot = loop {
            let e = self.table[i];
            if e == 0 {
                if self.used == self.books.len() {
                    self.instrument_overflow += 1;
                    return None;
                }
                let slot = self.used;
                self.used += 1;
                self.books[slot].reset(instrument_id);
                self.table[i] = ((slot as u64 + 1) << 32) | u64::from(instrument_id);
                break slot;
            }
            if e as u32 == instrument_id {
                break (e >> 32) as usize - 1;
            }
            i = (i + 1) & self.mask;
        };
        self.last = (instrument_id, slot);
        Some(slot)
    }

    /// The slot of `instrument_id`, assigning it an empty book when it has none: for records
    /// that carry no book content but belong to an instrument (trades-only streams). `None`
    /// when no slot is left (counted in [`BookCounts::instrument_overflow`]).
    #[inline]
    pub fn claim(&mut self, instrument_id: u32) -> Option<usize> {
        self.slot_or_insert(instrument_id)
    }

    /// The slot of `instrument_id`, if it has a book.
    #[inline]
    pub fn slot(&self, instrument_id: u32) -> Option<usize> {
        let mut i = self.home(instrument_id);
        loop {
            let e = self.table[i];
            if e == 0 {
                return None;
            }
            if e as u32 == instrument_id {
                return Some((e >> 32) as usize - 1);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The book in `slot`.
    ///
    /// # Panics
    /// When `slot` is not a slot [`Books::apply`] or [`Books::slot`] returned.
    #[inline]
    pub fn book(&self, slot: usize) -> &Book {
        &self.books[..self.used][slot]
    }

    /// The book in `slot`, if there is one.
    #[inline]
    pub fn get(&self, slot: usize) -> Option<&Book> {
        self.books[..self.used].get(slot)
    }

    /// Instruments with a book.
    #[inline]
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether no instrument has a book yet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// The books in slot order.
    pub fn iter(&self) -> std::slice::Iter<'_, Book> {
        self.books[..self.used].iter()
    }

    /// Counts summed over all books, plus the events no slot was left for.
    pub fn counts(&self) -> BookCounts {
        let mut total = BookCounts {
            instrument_overflow: self.instrument_overflow,
            ..BookCounts::default()
        };
        for book in self.iter() {
            total += book.counts;
        }
        total
    }
}
