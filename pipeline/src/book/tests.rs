//! Unit tests for each action, and property tests against a naive reference book.

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

const LAST: u8 = 0x80;
const INSTRUMENT: u32 = 7;

fn books(max_orders: usize, max_levels: usize) -> Books {
    Books::new(&BookConfig {
        max_instruments: 4,
        max_orders,
        max_levels,
    })
    .unwrap()
}

fn mbo(action: u8, side: u8, id: u64, price: i64, size: u32) -> Event {
    Event {
        rtype: rtype::MBO,
        instrument_id: INSTRUMENT,
        publisher_id: 1,
        action,
        side,
        order_id: id,
        price,
        size,
        flags: LAST,
        ..Event::default()
    }
}

fn apply(b: &mut Books, ev: Event) -> &Book {
    let slot = b.apply(&ev).expect("a book event");
    b.book(slot)
}

fn levels(book: &Book, side: Side) -> Vec<(i64, u64, u32)> {
    (0..book.levels(side))
        .map(|i| {
            let l = book.level(side, i).unwrap();
            (l.price, l.size, l.count)
        })
        .collect()
}

fn queue(book: &Book, side: Side, i: usize) -> Vec<u64> {
    book.level_orders(side, i).map(|(id, _)| id).collect()
}

#[test]
fn add_keeps_levels_best_first_and_orders_fifo() {
    let mut b = books(16, 16);
    apply(&mut b, mbo(b'A', b'B', 1, 100, 5));
    apply(&mut b, mbo(b'A', b'B', 2, 101, 3));
    apply(&mut b, mbo(b'A', b'B', 3, 100, 2));
    apply(&mut b, mbo(b'A', b'A', 4, 103, 7));
    let book = apply(&mut b, mbo(b'A', b'A', 5, 102, 1));
    assert_eq!(levels(book, Side::Bid), [(101, 3, 1), (100, 7, 2)]);
    assert_eq!(levels(book, Side::Ask), [(102, 1, 1), (103, 7, 1)]);
    assert_eq!(queue(book, Side::Bid, 1), [1, 3]);
    assert_eq!(
        book.order(3),
        Some(Order {
            price: 100,
            size: 2,
            side: Side::Bid
        })
    );
    assert_eq!(book.orders(), 5);
    assert_eq!(book.best_bid().unwrap().price, 101);
    assert_eq!(book.best_ask().unwrap().price, 102);
    assert_eq!(book.instrument_id(), INSTRUMENT);
    assert_eq!(book.source(), BookSource::Mbo { publisher_id: 1 });
    let mut d = Depth::default();
    book.depth(&mut d);
    assert_eq!((d.bid_levels, d.ask_levels), (2, 2));
    assert_eq!(d.bids[0].price, 101);
    assert_eq!(
        d.asks[1],
        Level {
            price: 103,
            size: 7,
            count: 1
        }
    );
    assert_eq!(d.bids[2], Level::default());
    assert_eq!(book.level(Side::Bid, usize::MAX), None);
    assert_eq!(book.level_orders(Side::Bid, usize::MAX).count(), 0);
    assert_eq!(book.level_orders(Side::Bid, 2).count(), 0);
    assert_eq!(book.counts().applied, 5);
    assert_eq!(book.counts().errors(), 0);
}

#[test]
fn cancel_reduces_removes_and_clamps() {
    let mut b = books(16, 16);
    apply(&mut b, mbo(b'A', b'B', 1, 100, 5));
    apply(&mut b, mbo(b'A', b'B', 2, 100, 4));
    let book = apply(&mut b, mbo(b'C', b'B', 1, 100, 2));
    assert_eq!(levels(book, Side::Bid), [(100, 7, 2)]);
    assert_eq!(book.order(1).unwrap().size, 3);
    let book = apply(&mut b, mbo(b'C', b'B', 1, 100, 3));
    assert_eq!(levels(book, Side::Bid), [(100, 4, 1)]);
    assert_eq!(book.order(1), None);
    // Larger than the resting size: the order goes, and it is counted.
    let book = apply(&mut b, mbo(b'C', b'B', 2, 100, 10));
    assert_eq!(book.levels(Side::Bid), 0);
    assert_eq!(book.orders(), 0);
    assert_eq!(book.counts().negative_size, 1);
    let book = apply(&mut b, mbo(b'C', b'B', 99, 100, 1));
    assert_eq!(book.counts().unknown_order, 1);
    // The id is authoritative; a cancel naming the other side is an error.
    apply(&mut b, mbo(b'A', b'A', 3, 105, 1));
    let book = apply(&mut b, mbo(b'C', b'B', 3, 105, 1));
    assert_eq!(book.counts().side_change, 1);
    assert_eq!(book.order(3).unwrap().size, 1);
}

#[test]
fn modify_follows_priority_rules() {
    let mut b = books(16, 16);
    for id in 1..=3 {
        apply(&mut b, mbo(b'A', b'A', id, 200, 10));
    }
    // Smaller: keeps its place.
    let book = apply(&mut b, mbo(b'M', b'A', 1, 200, 4));
    assert_eq!(queue(book, Side::Ask, 0), [1, 2, 3]);
    assert_eq!(levels(book, Side::Ask), [(200, 24, 3)]);
    // Larger: to the back.
    let book = apply(&mut b, mbo(b'M', b'A', 1, 200, 11));
    assert_eq!(queue(book, Side::Ask, 0), [2, 3, 1]);
    assert_eq!(levels(book, Side::Ask), [(200, 31, 3)]);
    // New price: to the back of the new level; the old level shrinks.
    apply(&mut b, mbo(b'A', b'A', 4, 199, 1));
    let book = apply(&mut b, mbo(b'M', b'A', 2, 199, 10));
    assert_eq!(queue(book, Side::Ask, 0), [4, 2]);
    assert_eq!(levels(book, Side::Ask), [(199, 11, 2), (200, 21, 2)]);
    // Unknown id: an add.
    let book = apply(&mut b, mbo(b'M', b'A', 9, 201, 1));
    assert_eq!(book.order(9).unwrap().price, 201);
    assert_eq!(book.counts().unknown_modify, 1);
    // Side change: ignored.
    let book = apply(&mut b, mbo(b'M', b'B', 9, 150, 1));
    assert_eq!(book.counts().side_change, 1);
    assert_eq!(book.order(9).unwrap().side, Side::Ask);
    // Size 0: gone, and its emptied level with it.
    let book = apply(&mut b, mbo(b'M', b'A', 9, 201, 0));
    assert_eq!(book.order(9), None);
    assert_eq!(book.levels(Side::Ask), 2);
    let book = apply(&mut b, mbo(b'M', b'A', 4, 198, 1));
    assert_eq!(
        levels(book, Side::Ask),
        [(198, 1, 1), (199, 10, 1), (200, 21, 2)]
    );
    // Moving the last order of a level removes the level.
    let book = apply(&mut b, mbo(b'M', b'A', 2, 198, 10));
    assert_eq!(levels(book, Side::Ask), [(198, 11, 2), (200, 21, 2)]);
    assert_eq!(queue(book, Side::Ask, 0), [4, 2]);
    assert_eq!(book.counts().errors(), 1);
}

#[test]
fn clear_empties_and_a_snapshot_rebuilds() {
    // A small index is wiped whole; a large one has its few ids removed one by one.
    for max_orders in [16, 1024] {
        clear_then_snapshot(max_orders);
    }
}

fn clear_then_snapshot(max_orders: usize) {
    let mut b = books(max_orders, 16);
    for id in 0..10 {
        apply(
            &mut b,
            mbo(
                b'A',
                if id % 2 == 0 { b'B' } else { b'A' },
                id,
                100 + id as i64,
                1,
            ),
        );
    }
    let book = apply(&mut b, mbo(b'R', b'N', 0, UNDEF_PRICE, 0));
    assert_eq!(
        (
            book.levels(Side::Bid),
            book.levels(Side::Ask),
            book.orders()
        ),
        (0, 0, 0)
    );
    assert_eq!(book.counts().clears, 1);
    for id in 0..10 {
        assert_eq!(book.order(id), None);
    }
    let mut snap = mbo(b'A', b'B', 3, 90, 2);
    snap.flags = 0x20;
    apply(&mut b, snap);
    let book = apply(&mut b, mbo(b'A', b'B', 4, 90, 1));
    assert_eq!(levels(book, Side::Bid), [(90, 3, 2)]);
    assert_eq!(book.counts().errors(), 0);
}

#[test]
fn trades_fills_and_none_leave_the_book_alone() {
    let mut b = books(16, 16);
    apply(&mut b, mbo(b'A', b'B', 1, 100, 5));
    for action in [b'T', b'F', b'N'] {
        let book = apply(&mut b, mbo(action, b'A', 1, 100, 5));
        assert_eq!(levels(book, Side::Bid), [(100, 5, 1)]);
    }
    assert_eq!(b.counts().applied, 4);
}

#[test]
fn bad_input_is_counted_not_applied() {
    let mut b = books(16, 16);
    apply(&mut b, mbo(b'A', b'N', 1, 100, 5));
    apply(&mut b, mbo(b'C', b'N', 1, 100, 5));
    apply(&mut b, mbo(b'M', b'X', 1, 100, 5));
    apply(&mut b, mbo(b'Z', b'B', 1, 100, 5));
    apply(&mut b, mbo(0, b'B', 1, 100, 5));
    apply(&mut b, mbo(b'A', b'B', 1, UNDEF_PRICE, 5));
    apply(&mut b, mbo(b'A', b'B', 1, 100, 0));
    apply(&mut b, mbo(b'A', b'B', 1, -100, 5));
    apply(&mut b, mbo(b'A', b'B', 1, 0, 5));
    let book = apply(&mut b, mbo(b'A', b'A', 1, 7, 5));
    let c = book.counts();
    assert_eq!(
        (
            c.bad_side,
            c.bad_action,
            c.bad_price,
            c.zero_size,
            c.duplicate_add
        ),
        (3, 2, 1, 1, 2)
    );
    // Zero and negative prices are prices (spreads trade below zero).
    assert_eq!(levels(book, Side::Bid), [(-100, 5, 1)]);
    assert_eq!(c.applied, 1);
    let book = apply(&mut b, mbo(b'M', b'B', 1, UNDEF_PRICE, 5));
    assert_eq!(book.counts().bad_price, 2);
}

#[test]
fn level_sizes_do_not_overflow_u32() {
    let mut b = books(16, 16);
    for id in 0..3 {
        apply(&mut b, mbo(b'A', b'B', id, 100, u32::MAX));
    }
    let book = apply(&mut b, mbo(b'M', b'B', 0, 100, u32::MAX - 1));
    assert_eq!(
        levels(book, Side::Bid),
        [(100, 3 * u64::from(u32::MAX) - 1, 3)]
    );
    let book = apply(&mut b, mbo(b'C', b'B', 1, 100, u32::MAX));
    assert_eq!(
        levels(book, Side::Bid),
        [(100, 2 * u64::from(u32::MAX) - 1, 2)]
    );
}

#[test]
fn top_of_book_records_replace_their_side() {
    let mut b = books(16, 16);
    let tob = |action, side, price, size| {
        let mut ev = mbo(action, side, 0, price, size);
        ev.flags |= F_TOB;
        ev
    };
    apply(&mut b, tob(b'A', b'B', 100, 5));
    let book = apply(&mut b, tob(b'A', b'A', 102, 7));
    assert_eq!(levels(book, Side::Bid), [(100, 5, 0)]);
    assert_eq!(levels(book, Side::Ask), [(102, 7, 0)]);
    let book = apply(&mut b, tob(b'A', b'B', 101, 2));
    assert_eq!(levels(book, Side::Bid), [(101, 2, 0)]);
    assert_eq!(book.level_orders(Side::Bid, 0).count(), 0);
    let book = apply(&mut b, tob(b'A', b'B', UNDEF_PRICE, 0));
    assert_eq!(book.levels(Side::Bid), 0);
    let book = apply(&mut b, tob(b'C', b'A', 102, 7));
    assert_eq!(book.counts().bad_action, 1);
    assert_eq!(book.levels(Side::Ask), 1);
    let book = apply(&mut b, tob(b'C', b'A', UNDEF_PRICE, 0));
    assert_eq!(book.levels(Side::Ask), 0);
    // Orders by id on a side a top-of-book record replaces are forgotten with their levels.
    apply(&mut b, mbo(b'A', b'A', 5, 110, 1));
    apply(&mut b, mbo(b'A', b'B', 6, 90, 1));
    let book = apply(&mut b, tob(b'A', b'A', 111, 3));
    assert_eq!(book.order(5), None);
    assert_eq!(book.order(6).map(|o| o.size), Some(1));
    assert_eq!(book.orders(), 1);
    assert_eq!(levels(book, Side::Ask), [(111, 3, 0)]);
}

#[test]
fn crossed_and_locked_are_judged_at_f_last_only() {
    let mut b = books(16, 16);
    apply(&mut b, mbo(b'A', b'B', 1, 100, 1));
    apply(&mut b, mbo(b'A', b'A', 2, 101, 1));
    // Two halves of one venue event: crossed in between, fine at the end.
    let mut half = mbo(b'A', b'B', 3, 102, 1);
    half.flags = 0;
    let book = apply(&mut b, half);
    assert!(book.is_crossed());
    let book = apply(&mut b, mbo(b'C', b'B', 3, 102, 1));
    assert!(!book.is_crossed() && !book.is_locked());
    let c = book.counts();
    assert_eq!((c.consistent, c.crossed, c.locked), (3, 0, 0));
    let book = apply(&mut b, mbo(b'A', b'B', 4, 101, 1));
    assert!(book.is_locked());
    let book = apply(&mut b, mbo(b'A', b'B', 5, 103, 1));
    assert!(book.is_crossed());
    let c = book.counts();
    assert_eq!((c.consistent, c.crossed, c.locked), (5, 1, 1));
}

#[test]
fn overflow_is_counted_and_bounded() {
    // Orders.
    let mut b = books(2, 16);
    apply(&mut b, mbo(b'A', b'B', 1, 100, 1));
    apply(&mut b, mbo(b'A', b'B', 2, 100, 1));
    let book = apply(&mut b, mbo(b'A', b'B', 3, 100, 1));
    assert_eq!((book.orders(), book.counts().order_overflow), (2, 1));
    assert!(book.is_degraded());
    let book = apply(&mut b, mbo(b'R', b'N', 0, 0, 0));
    assert!(!book.is_degraded());

    // Levels: a better price evicts the worst level, a worse one is dropped.
    let mut b = books(16, 2);
    apply(&mut b, mbo(b'A', b'A', 1, 100, 1));
    apply(&mut b, mbo(b'A', b'A', 2, 100, 1));
    apply(&mut b, mbo(b'A', b'A', 3, 101, 1));
    let book = apply(&mut b, mbo(b'A', b'A', 4, 102, 1));
    assert_eq!(levels(book, Side::Ask), [(100, 2, 2), (101, 1, 1)]);
    assert_eq!(book.order(4), None);
    // A modify to a level that does not fit drops the order.
    let book = apply(&mut b, mbo(b'M', b'A', 1, 105, 1));
    assert_eq!(levels(book, Side::Ask), [(100, 1, 1), (101, 1, 1)]);
    assert_eq!(book.order(1), None);
    let book = apply(&mut b, mbo(b'A', b'A', 5, 99, 1));
    assert_eq!(levels(book, Side::Ask), [(99, 1, 1), (100, 1, 1)]);
    assert_eq!(book.order(3), None);
    assert_eq!(book.orders(), 2);
    assert_eq!(book.counts().level_overflow, 3);
    assert_eq!(book.counts().applied, 4);

    // Instruments.
    let mut b = books(4, 4);
    for id in 0..4 {
        let mut ev = mbo(b'A', b'B', 1, 100, 1);
        ev.instrument_id = id;
        assert_eq!(b.apply(&ev), Some(id as usize));
    }
    let mut ev = mbo(b'A', b'B', 1, 100, 1);
    ev.instrument_id = 99;
    assert_eq!(b.apply(&ev), None);
    assert_eq!(b.counts().instrument_overflow, 1);
    assert_eq!(b.slot(99), None);
    assert_eq!(b.slot(2), Some(2));
    assert_eq!(b.len(), 4);
    assert_eq!(b.counts().applied, 4);
}

#[test]
fn records_without_book_content_and_definitions() {
    let mut b = books(4, 4);
    let trade = Event {
        rtype: rtype::MBP_0,
        instrument_id: 3,
        action: b'T',
        ..Event::default()
    };
    assert_eq!(b.apply(&trade), None);
    assert!(b.is_empty());
    assert_eq!(b.claim(9), Some(0));
    assert_eq!(b.claim(9), Some(0));
    assert_eq!(b.book(0).source(), BookSource::None);
    assert_eq!(b.book(0).levels(Side::Bid), 0);
    let def = Event {
        rtype: rtype::INSTRUMENT_DEF,
        instrument_id: 3,
        price: 250_000_000,
        ..Event::default()
    };
    let slot = b.apply(&def).unwrap();
    assert_eq!(slot, 1);
    assert_eq!(b.book(slot).tick_size(), Some(250_000_000));
    assert_eq!(b.book(slot).source(), BookSource::None);
    let undefined = Event {
        price: UNDEF_PRICE,
        ..def
    };
    b.apply(&undefined);
    assert_eq!(b.book(slot).tick_size(), None);
    assert_eq!(b.get(2).map(|_| ()), None);
    assert_eq!(
        b.iter().map(Book::instrument_id).collect::<Vec<_>>(),
        [9, 3]
    );
}

fn mbp(rtype: u8, levels: u8, level: u8, bid: (i64, u32, u32), ask: (i64, u32, u32)) -> Event {
    Event {
        rtype,
        instrument_id: INSTRUMENT,
        publisher_id: 1,
        action: b'A',
        side: b'B',
        flags: LAST,
        levels,
        level,
        bid_px: bid.0,
        bid_sz: bid.1,
        bid_ct: bid.2,
        ask_px: ask.0,
        ask_sz: ask.1,
        ask_ct: ask.2,
        ..Event::default()
    }
}

#[test]
fn mbp_books_are_the_records_levels() {
    let mut b = books(4, 4);
    let book = apply(&mut b, mbp(rtype::MBP_1, 1, 0, (100, 5, 2), (101, 6, 3)));
    assert_eq!(levels(book, Side::Bid), [(100, 5, 2)]);
    assert_eq!(levels(book, Side::Ask), [(101, 6, 3)]);
    let book = apply(
        &mut b,
        mbp(rtype::MBP_1, 1, 0, (UNDEF_PRICE, 0, 0), (101, 0, 0)),
    );
    assert_eq!((book.levels(Side::Bid), book.levels(Side::Ask)), (0, 0));
    let book = apply(&mut b, mbp(rtype::MBP_1, 1, 0, (102, 1, 1), (101, 1, 1)));
    assert!(book.is_crossed());
    assert_eq!(book.counts().crossed, 1);
    // Another record type for the same instrument is another source.
    let book = apply(&mut b, mbp(rtype::BBO_1S, 1, 0, (1, 1, 1), (2, 1, 1)));
    assert_eq!(book.counts().mixed_source, 1);
    let book = apply(&mut b, mbo(b'A', b'B', 1, 100, 1));
    assert_eq!(book.counts().mixed_source, 2);
    assert_eq!(book.best_bid().unwrap().price, 102);
    assert_eq!(book.orders(), 0);

    // MBP-10: ten events; the book is judged once the record is complete.
    let mut b = books(4, 4);
    let record = |depth: usize, crossed: bool| -> Vec<Event> {
        (0..10u8)
            .map(|i| {
                let j = i64::from(i);
                let full = usize::from(i) < depth;
                let top = if crossed { 110 } else { 100 };
                mbp(
                    rtype::MBP_10,
                    10,
                    i,
                    if full {
                        (top - j, 10 + u32::from(i), 1)
                    } else {
                        (UNDEF_PRICE, 0, 0)
                    },
                    if full {
                        (101 + j, 20 + u32::from(i), 2)
                    } else {
                        (UNDEF_PRICE, 0, 0)
                    },
                )
            })
            .collect()
    };
    for ev in record(10, false) {
        b.apply(&ev);
    }
    let book = b.book(0);
    assert_eq!(book.levels(Side::Bid), 10);
    assert_eq!(
        book.level(Side::Ask, 9).unwrap(),
        Level {
            price: 110,
            size: 29,
            count: 2
        }
    );
    assert_eq!(book.counts().consistent, 1);
    for ev in record(4, true) {
        b.apply(&ev);
        // Transiently crossed at level 0, judged only at level 9.
        assert_eq!(b.book(0).counts().crossed, 0, "level {}", ev.level);
        if ev.level == 8 {
            break;
        }
    }
    let last = record(4, true)[9];
    let book = apply(&mut b, last);
    assert_eq!((book.levels(Side::Bid), book.levels(Side::Ask)), (4, 4));
    assert_eq!(book.level(Side::Bid, 4), None);
    assert_eq!(book.counts().crossed, 1);
    let mut d = Depth::default();
    book.depth(&mut d);
    assert_eq!((d.bid_levels, d.ask_levels, d.bids[3].price), (4, 4, 107));
    // A hole in a record: the levels after it are not shown, and the record is counted.
    let mut rec = record(10, false);
    rec[3].bid_px = UNDEF_PRICE;
    for ev in rec {
        b.apply(&ev);
    }
    let book = b.book(0);
    assert_eq!((book.levels(Side::Bid), book.levels(Side::Ask)), (3, 10));
    assert_eq!(book.counts().bad_level, 1);
    let mut bad = record(10, false)[0];
    bad.level = 10;
    let book = apply(&mut b, bad);
    assert_eq!(book.counts().bad_level, 2);
}

#[test]
fn config_is_validated() {
    assert!(Books::new(&BookConfig::default()).is_ok());
    for cfg in [
        BookConfig {
            max_instruments: 0,
            ..BookConfig::default()
        },
        BookConfig {
            max_orders: 0,
            ..BookConfig::default()
        },
        BookConfig {
            max_levels: 0,
            ..BookConfig::default()
        },
        BookConfig {
            max_orders: usize::MAX,
            ..BookConfig::default()
        },
        BookConfig {
            max_instruments: 1 << 16,
            max_orders: 1 << 20,
            max_levels: 1 << 10,
        },
    ] {
        let err = Books::new(&cfg).unwrap_err();
        assert!(matches!(err, PipelineError::Config { .. }), "{err}");
    }
    let default = BookConfig::default().reserved_bytes();
    assert!(default < 512 << 20, "{default}");
}

// ---- the naive reference ----

/// A book as plain maps: price -> queue of order ids per side, id -> (side, price, size), with
/// the same capacity rules.
struct Reference {
    levels: [BTreeMap<i64, Vec<u64>>; 2],
    orders: HashMap<u64, (Side, i64, u32)>,
    max_orders: usize,
    max_levels: usize,
    counts: BookCounts,
}

impl Reference {
    fn new(max_orders: usize, max_levels: usize) -> Self {
        Self {
            levels: [BTreeMap::new(), BTreeMap::new()],
            orders: HashMap::new(),
            max_orders,
            max_levels,
            counts: BookCounts::default(),
        }
    }

    fn apply(&mut self, ev: &Event) {
        self.event(ev);
        if ev.is_last() {
            self.counts.consistent += 1;
            match (self.best(Side::Bid), self.best(Side::Ask)) {
                (Some(b), Some(a)) if b > a => self.counts.crossed += 1,
                (Some(b), Some(a)) if b == a => self.counts.locked += 1,
                _ => {}
            }
        }
    }

    fn best(&self, side: Side) -> Option<i64> {
        let l = &self.levels[side.idx()];
        match side {
            Side::Bid => l.keys().next_back().copied(),
            Side::Ask => l.keys().next().copied(),
        }
    }

    fn event(&mut self, ev: &Event) {
        match ev.action {
            b'T' | b'F' | b'N' => {
                self.counts.applied += 1;
                return;
            }
            b'R' => {
                self.levels = [BTreeMap::new(), BTreeMap::new()];
                self.orders.clear();
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
        match ev.action {
            b'A' => self.add(ev.order_id, side, ev.price, ev.size),
            b'C' => self.cancel(ev.order_id, side, ev.size),
            _ => self.modify(ev.order_id, side, ev.price, ev.size),
        }
    }

    fn add(&mut self, id: u64, side: Side, price: i64, size: u32) {
        if price == UNDEF_PRICE {
            self.counts.bad_price += 1;
        } else if size == 0 {
            self.counts.zero_size += 1;
        } else if self.orders.contains_key(&id) {
            self.counts.duplicate_add += 1;
        } else if self.orders.len() >= self.max_orders {
            self.counts.order_overflow += 1;
        } else if self.place(side, price, id) {
            self.orders.insert(id, (side, price, size));
            self.counts.applied += 1;
        }
    }

    /// Queues `id` at `price`; with the side full, evicts the worst level for a better price.
    fn place(&mut self, side: Side, price: i64, id: u64) -> bool {
        let levels = &mut self.levels[side.idx()];
        if let Some(q) = levels.get_mut(&price) {
            q.push(id);
            return true;
        }
        if levels.len() < self.max_levels {
            levels.insert(price, vec![id]);
            return true;
        }
        self.counts.level_overflow += 1;
        let (worst, better) = match side {
            Side::Bid => {
                let w = *levels.keys().next().unwrap();
                (w, price > w)
            }
            Side::Ask => {
                let w = *levels.keys().next_back().unwrap();
                (w, price < w)
            }
        };
        if !better {
            return false;
        }
        for gone in levels.remove(&worst).unwrap() {
            self.orders.remove(&gone);
        }
        levels.insert(price, vec![id]);
        true
    }

    fn unqueue(&mut self, side: Side, price: i64, id: u64) {
        let levels = &mut self.levels[side.idx()];
        let q = levels.get_mut(&price).unwrap();
        q.retain(|&o| o != id);
        if q.is_empty() {
            levels.remove(&price);
        }
    }

    fn cancel(&mut self, id: u64, side: Side, size: u32) {
        let Some(&(s, price, resting)) = self.orders.get(&id) else {
            self.counts.unknown_order += 1;
            return;
        };
        if s != side {
            self.counts.side_change += 1;
            return;
        }
        if size >= resting {
            if size > resting {
                self.counts.negative_size += 1;
            }
            self.orders.remove(&id);
            self.unqueue(side, price, id);
        } else {
            self.orders.get_mut(&id).unwrap().2 -= size;
        }
        self.counts.applied += 1;
    }

    fn modify(&mut self, id: u64, side: Side, price: i64, size: u32) {
        let Some(&(s, old_price, resting)) = self.orders.get(&id) else {
            self.counts.unknown_modify += 1;
            return self.add(id, side, price, size);
        };
        if s != side {
            self.counts.side_change += 1;
            return;
        }
        if price == UNDEF_PRICE {
            self.counts.bad_price += 1;
            return;
        }
        if size == 0 {
            self.orders.remove(&id);
            self.unqueue(side, old_price, id);
        } else if price != old_price {
            self.unqueue(side, old_price, id);
            if !self.place(side, price, id) {
                self.orders.remove(&id);
                return;
            }
            self.orders.insert(id, (side, price, size));
        } else {
            if size > resting {
                let q = self.levels[side.idx()].get_mut(&price).unwrap();
                q.retain(|&o| o != id);
                q.push(id);
            }
            self.orders.insert(id, (side, price, size));
        }
        self.counts.applied += 1;
    }

    /// `(price, size, count, queue)` best first.
    fn side(&self, side: Side) -> Vec<(i64, u64, u32, Vec<u64>)> {
        let row = |(&p, q): (&i64, &Vec<u64>)| {
            let size = q.iter().map(|id| u64::from(self.orders[id].2)).sum();
            (p, size, q.len() as u32, q.clone())
        };
        match side {
            Side::Bid => self.levels[0].iter().rev().map(row).collect(),
            Side::Ask => self.levels[1].iter().map(row).collect(),
        }
    }
}

fn book_side(book: &Book, side: Side) -> Vec<(i64, u64, u32, Vec<u64>)> {
    (0..book.levels(side))
        .map(|i| {
            let l = book.level(side, i).unwrap();
            (l.price, l.size, l.count, queue(book, side, i))
        })
        .collect()
}

const IDS: u64 = 40;

fn mbo_event() -> impl Strategy<Value = Event> {
    (
        prop_oneof![
            8 => Just(b'A'),
            5 => Just(b'C'),
            5 => Just(b'M'),
            1 => Just(b'R'),
            1 => Just(b'T'),
            1 => Just(b'F'),
            1 => any::<u8>(),
        ],
        prop_oneof![10 => Just(b'B'), 10 => Just(b'A'), 1 => Just(b'N')],
        0..IDS,
        prop_oneof![
            30 => (0i64..14).prop_map(|t| 1_000 + 25 * t),
            1 => Just(UNDEF_PRICE),
            1 => any::<i64>(),
        ],
        prop_oneof![12 => 0u32..30, 1 => Just(u32::MAX), 1 => any::<u32>()],
        prop_oneof![3 => Just(LAST), 1 => Just(0u8)],
    )
        .prop_map(|(action, side, id, price, size, flags)| Event {
            flags,
            ..mbo(action, side, id, price, size)
        })
}

fn check_against_reference(
    events: &[Event],
    max_orders: usize,
    max_levels: usize,
) -> Result<(), TestCaseError> {
    let mut books = books(max_orders, max_levels);
    let mut reference = Reference::new(max_orders, max_levels);
    for (n, ev) in events.iter().enumerate() {
        let slot = books.apply(ev).unwrap();
        reference.apply(ev);
        let book = books.book(slot);
        for side in [Side::Bid, Side::Ask] {
            prop_assert_eq!(
                book_side(book, side),
                reference.side(side),
                "event {} {:?}",
                n,
                ev
            );
        }
        prop_assert_eq!(book.orders(), reference.orders.len());
        for id in 0..IDS {
            let want =
                reference
                    .orders
                    .get(&id)
                    .map(|&(side, price, size)| Order { price, size, side });
            prop_assert_eq!(book.order(id), want, "order {} after event {}", id, n);
        }
        prop_assert_eq!(book.counts(), reference.counts);
        prop_assert_eq!(
            book.is_crossed(),
            matches!((reference.best(Side::Bid), reference.best(Side::Ask)), (Some(b), Some(a)) if b > a)
        );
        book.check();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// With room to spare: every action, unknown ids, over-cancels, bad sides and prices.
    #[test]
    fn matches_reference(events in proptest::collection::vec(mbo_event(), 1..300)) {
        check_against_reference(&events, 1024, 64)?;
    }

    /// Near capacity: order and level overflow, eviction of the worst level.
    #[test]
    fn matches_reference_at_capacity(events in proptest::collection::vec(mbo_event(), 1..300)) {
        check_against_reference(&events, 12, 4)?;
    }

    /// Arbitrary events of every record type never panic and keep the book's invariants.
    #[test]
    fn arbitrary_events_keep_invariants(events in proptest::collection::vec(arbitrary_event(), 1..300)) {
        let mut books = Books::new(&BookConfig { max_instruments: 3, max_orders: 16, max_levels: 4 }).unwrap();
        let mut d = Depth::default();
        for ev in &events {
            if let Some(slot) = books.apply(ev) {
                let book = books.book(slot);
                book.check();
                book.depth(&mut d);
                prop_assert!(usize::from(d.bid_levels) <= book.levels(Side::Bid));
            }
        }
        prop_assert!(books.len() <= 3);
    }
}

fn arbitrary_event() -> impl Strategy<Value = Event> {
    (
        prop_oneof![
            4 => Just(rtype::MBO),
            2 => Just(rtype::MBP_1),
            2 => Just(rtype::MBP_10),
            1 => Just(rtype::BBO_1S),
            1 => Just(rtype::INSTRUMENT_DEF),
            1 => any::<u8>(),
        ],
        0u32..5,
        prop_oneof![3 => proptest::sample::select(b"ACMRTFN".to_vec()), 1 => any::<u8>()],
        prop_oneof![3 => proptest::sample::select(b"ABN".to_vec()), 1 => any::<u8>()],
        0u64..24,
        prop_oneof![
            (0i64..8).prop_map(|t| 100 + t),
            any::<i64>(),
            Just(UNDEF_PRICE)
        ],
        any::<u32>(),
        (any::<u8>(), 0u8..12, 0u8..12),
        (
            prop_oneof![(90i64..110), Just(UNDEF_PRICE), any::<i64>()],
            any::<u32>(),
            any::<u32>(),
        ),
        (
            prop_oneof![(90i64..110), Just(UNDEF_PRICE), any::<i64>()],
            any::<u32>(),
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                rtype,
                instrument_id,
                action,
                side,
                order_id,
                price,
                size,
                (flags, level, levels),
                bid,
                ask,
            )| Event {
                rtype,
                instrument_id,
                action,
                side,
                order_id,
                price,
                size,
                flags,
                level,
                levels,
                bid_px: bid.0,
                bid_sz: bid.1,
                bid_ct: bid.2,
                ask_px: ask.0,
                ask_sz: ask.1,
                ask_ct: ask.2,
                ..Event::default()
            },
        )
}

impl Book {
    /// Asserts the book's internal invariants.
    fn check(&self) {
        let mut queued = 0;
        for (s, ladder) in self.sides.iter().enumerate() {
            assert!(
                ladder.keys().windows(2).all(|w| w[0] < w[1]),
                "levels out of order"
            );
            for pos in 0..ladder.len() {
                let agg = ladder.agg(pos);
                let price = ladder.price_at(pos);
                let (mut n, mut sum, mut prev, mut idx) = (0u32, 0u64, NIL, agg.head);
                while idx != NIL {
                    let node = self.pool.get(idx);
                    assert_eq!((node.price, node.side.idx(), node.prev), (price, s, prev));
                    assert_eq!(
                        self.index.find(node.id, &self.pool).map(|(_, v)| v),
                        Some(idx)
                    );
                    assert!(node.size > 0);
                    n += 1;
                    sum += u64::from(node.size);
                    prev = idx;
                    idx = node.next;
                }
                assert_eq!(agg.tail, prev);
                assert_eq!(agg.count, n);
                // Top-of-book levels carry size without orders.
                assert!(
                    agg.size >= sum && agg.size > 0,
                    "level {price}: {agg:?}, queued {sum}"
                );
                queued += n as usize;
            }
        }
        assert_eq!(queued, self.pool.live());
        assert_eq!(self.index.len(), self.pool.live());
        for s in 0..2 {
            let leading = self.mbp[s].iter().take_while(|l| l.size > 0).count();
            assert_eq!(self.mbp_len[s], leading);
        }
    }
}
