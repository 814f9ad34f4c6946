//! One side of a market-by-order book: price levels in a fixed-capacity sorted array.
//!
//! Levels are kept in ascending order of a side-normalised key with the best level last, so
//! the busiest inserts and removals (near the touch) shift few entries. The bid key is the
//! price; the ask key is the price with all bits flipped (`!price`, which orders prices in
//! reverse without the overflow of negation). Keys and per-level aggregates live in separate
//! arrays so that a search reads only keys.

use super::Side;
use super::orders::NIL;
use crate::depth::Level;

/// Aggregate state of one level, and its FIFO queue of orders (pool node indices).
#[derive(Debug, Clone, Copy)]
pub(super) struct Agg {
    /// Total size at the price (u64: many u32 orders never overflow it).
    pub(super) size: u64,
    /// Orders in the queue.
    pub(super) count: u32,
    /// Oldest order (first in priority), or [`NIL`].
    pub(super) head: u32,
    /// Newest order, or [`NIL`].
    pub(super) tail: u32,
}

impl Agg {
    pub(super) const EMPTY: Agg = Agg {
        size: 0,
        count: 0,
        head: NIL,
        tail: NIL,
    };
}

/// Entries searched linearly from the best end before falling back to a binary search: most
/// book events land within a few levels of the touch.
const NEAR_TOUCH: usize = 8;

#[derive(Debug)]
pub(super) struct Ladder {
    /// Reserved at `cap` up front; `insert` is only called below that, so it never reallocates.
    keys: Vec<i64>,
    aggs: Vec<Agg>,
    cap: usize,
    /// 0 for bids, all ones for asks: `key = price ^ flip`.
    flip: i64,
}

impl Ladder {
    pub(super) fn new(cap: usize, side: Side) -> Self {
        let mut keys = Vec::with_capacity(cap);
        let mut aggs = Vec::with_capacity(cap);
        // Written once here so that the event loop never takes a first-touch page fault.
        keys.resize(cap, 0);
        aggs.resize(cap, Agg::EMPTY);
        std::hint::black_box((&mut keys, &mut aggs));
        keys.clear();
        aggs.clear();
        Self {
            keys,
            aggs,
            cap,
            flip: match side {
                Side::Bid => 0,
                Side::Ask => -1,
            },
        }
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    #[inline]
    pub(super) fn is_full(&self) -> bool {
        self.keys.len() >= self.cap
    }

    /// Position of `price` (`Ok`), or where it would be inserted (`Err`). Position 0 is the
    /// worst level, `len - 1` the best.
    #[inline]
    pub(super) fn locate(&self, price: i64) -> Result<usize, usize> {
        let key = price ^ self.flip;
        let keys = &self.keys[..];
        let stop = keys.len().saturating_sub(NEAR_TOUCH);
        let mut i = keys.len();
        while i > stop {
            let k = keys[i - 1];
            if k == key {
                return Ok(i - 1);
            }
            if k < key {
                return Err(i);
            }
            i -= 1;
        }
        keys[..stop].binary_search(&key)
    }

    #[cfg(test)]
    pub(super) fn price_at(&self, pos: usize) -> i64 {
        self.keys[pos] ^ self.flip
    }

    #[inline]
    pub(super) fn agg(&self, pos: usize) -> &Agg {
        &self.aggs[pos]
    }

    #[inline]
    pub(super) fn agg_mut(&mut self, pos: usize) -> &mut Agg {
        &mut self.aggs[pos]
    }

    /// Inserts an empty level at `pos` (from [`Ladder::locate`]). The caller has checked that
    /// the ladder is not full.
    #[inline]
    pub(super) fn insert(&mut self, pos: usize, price: i64, agg: Agg) {
        debug_assert!(!self.is_full());
        self.keys.insert(pos, price ^ self.flip);
        self.aggs.insert(pos, agg);
    }

    #[inline]
    pub(super) fn remove(&mut self, pos: usize) {
        self.keys.remove(pos);
        self.aggs.remove(pos);
    }

    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.aggs.clear();
    }

    /// The position of level `i` counted from the best (0).
    #[inline]
    pub(super) fn position(&self, i: usize) -> Option<usize> {
        self.keys.len().checked_sub(i)?.checked_sub(1)
    }

    /// Level `i` counted from the best (0).
    #[inline]
    pub(super) fn level(&self, i: usize) -> Option<Level> {
        let pos = self.position(i)?;
        let agg = &self.aggs[pos];
        Some(Level {
            price: self.keys[pos] ^ self.flip,
            size: agg.size,
            count: agg.count,
        })
    }

    /// Writes the best `out.len()` levels (at most) to `out`, best first, and gives how many.
    #[inline]
    pub(super) fn top(&self, out: &mut [Level]) -> usize {
        let n = self.keys.len().min(out.len());
        let from = self.keys.len() - n;
        let flip = self.flip;
        for ((slot, &key), agg) in out
            .iter_mut()
            .zip(self.keys[from..].iter().rev())
            .zip(self.aggs[from..].iter().rev())
        {
            *slot = Level {
                price: key ^ flip,
                size: agg.size,
                count: agg.count,
            };
        }
        n
    }

    #[cfg(test)]
    pub(super) fn keys(&self) -> &[i64] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder(side: Side, prices: &[i64]) -> Ladder {
        let mut l = Ladder::new(16, side);
        for &p in prices {
            if let Err(pos) = l.locate(p) {
                l.insert(pos, p, Agg::EMPTY);
            }
        }
        l
    }

    #[test]
    fn best_first_on_both_sides() {
        let prices = [
            5,
            -3,
            100,
            7,
            i64::MIN,
            i64::MAX - 1,
            0,
            6,
            8,
            9,
            10,
            11,
            12,
            13,
        ];
        let bids = ladder(Side::Bid, &prices);
        let asks = ladder(Side::Ask, &prices);
        let mut sorted = prices.to_vec();
        sorted.sort_unstable();
        let from_bids: Vec<i64> = (0..bids.len())
            .map(|i| bids.level(i).unwrap().price)
            .collect();
        let from_asks: Vec<i64> = (0..asks.len())
            .map(|i| asks.level(i).unwrap().price)
            .collect();
        let mut desc = sorted.clone();
        desc.reverse();
        assert_eq!(from_bids, desc);
        assert_eq!(from_asks, sorted);
        for &p in &prices {
            let pos = bids.locate(p).unwrap();
            assert_eq!(bids.price_at(pos), p);
            let pos = asks.locate(p).unwrap();
            assert_eq!(asks.price_at(pos), p);
        }
        assert!(bids.keys().windows(2).all(|w| w[0] < w[1]));
        assert_eq!(bids.level(usize::MAX), None);
        assert_eq!(bids.level(bids.len()), None);
    }
}
