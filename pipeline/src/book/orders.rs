//! Order storage for market-by-order books: a fixed pool of order nodes, linked into one FIFO
//! queue per price level, and an open-addressing index from order id to node.
//!
//! Both are sized once. The pool hands out node indices (`u32`), so a level's queue survives
//! the level moving inside its ladder; the index maps ids to those indices with linear probing
//! and backward-shift deletion, so a long day of adds and cancels never leaves tombstones that
//! slow lookups down.

use super::Side;

/// "No node": the end of a queue, or an empty free list.
pub(super) const NIL: u32 = u32::MAX;

/// One resting order, and its neighbours in its level's queue (older: `prev`, newer: `next`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Node {
    pub(super) id: u64,
    pub(super) price: i64,
    pub(super) size: u32,
    pub(super) side: Side,
    pub(super) prev: u32,
    pub(super) next: u32,
}

impl Node {
    const VACANT: Node = Node {
        id: 0,
        price: 0,
        size: 0,
        side: Side::Bid,
        prev: NIL,
        next: NIL,
    };
}

/// A fixed-capacity pool of nodes. Free nodes form a list through `next`.
#[derive(Debug)]
pub(super) struct Pool {
    /// Reserved at `cap` up front; grows by `push` only while below that, so it never
    /// reallocates.
    nodes: Vec<Node>,
    cap: usize,
    free: u32,
    live: usize,
}

impl Pool {
    pub(super) fn new(cap: usize) -> Self {
        let mut nodes = Vec::with_capacity(cap);
        // Written once here so that the event loop never takes a first-touch page fault.
        nodes.resize(cap, Node::VACANT);
        std::hint::black_box(&mut nodes);
        nodes.clear();
        Self {
            nodes,
            cap,
            free: NIL,
            live: 0,
        }
    }

    #[cfg(test)]
    pub(super) fn is_full(&self) -> bool {
        self.live >= self.cap
    }

    #[inline]
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// Stores `node`; `None` when the pool is full.
    #[inline]
    pub(super) fn alloc(&mut self, node: Node) -> Option<u32> {
        let idx = if self.free != NIL {
            let idx = self.free;
            let slot = &mut self.nodes[idx as usize];
            self.free = slot.next;
            *slot = node;
            idx
        } else if self.nodes.len() < self.cap {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        } else {
            return None;
        };
        self.live += 1;
        Some(idx)
    }

    #[inline]
    pub(super) fn release(&mut self, idx: u32) {
        self.nodes[idx as usize].next = self.free;
        self.free = idx;
        self.live -= 1;
    }

    pub(super) fn reset(&mut self) {
        self.nodes.clear();
        self.free = NIL;
        self.live = 0;
    }

    #[inline]
    pub(super) fn get(&self, idx: u32) -> &Node {
        &self.nodes[idx as usize]
    }

    #[inline]
    pub(super) fn get_mut(&mut self, idx: u32) -> &mut Node {
        &mut self.nodes[idx as usize]
    }
}

/// Fibonacci hashing: spreads ids evenly over the table.
const FIB: u64 = 0x9E37_79B9_7F4A_7C15;

/// Ids that differ only in their low bits (`GROUP` ids) share one 64-byte line of slots.
const GROUP_BITS: u32 = 3;
const GROUP: u64 = 1 << GROUP_BITS;

/// An id's 32-bit hash; its home slot is the low bits.
///
/// Venue order ids are mostly sequential, so hashing every id to a random slot costs each add
/// a cold cache line. Here an id's low bits pick the slot within its group's line and only the
/// group is hashed: consecutive adds share a line, while groups still scatter evenly, which
/// keeps probe runs as short as with a full hash.
#[inline]
fn tag(id: u64) -> u64 {
    let group = ((id >> GROUP_BITS).wrapping_mul(FIB) >> 32) & !(GROUP - 1);
    group | (id & (GROUP - 1))
}
/// Order id -> node index, open addressing with linear probing.
///
/// A slot is 8 bytes, `tag << 32 | node + 1` (0: empty), so a table twice the size of the
/// pool stays small enough to live mostly in cache. The tag is the id's 32-bit hash: it gives
/// the home slot without touching the node (for backward-shift deletion) and rules out almost
/// every other id before the node's id is compared.
///
/// Its capacity is a power of two at least twice the pool's, and an id is only inserted once
/// its node is allocated, so the table is never more than half full and every probe ends at
/// an empty slot.
#[derive(Debug)]
pub(super) struct OrderIndex {
    /// 0: empty.
    slots: Vec<u64>,
    mask: usize,
}

impl OrderIndex {
    /// `max_orders` is at most 2^24 (checked by the book's configuration), so the capacity is
    /// at most 2^25 and a tag has enough bits for the home slot.
    pub(super) fn new(max_orders: usize) -> Self {
        let cap = max_orders.saturating_mul(2).next_power_of_two().max(2);
        let mut slots = vec![0; cap];
        // Zeroed allocations are mapped lazily; writing them here keeps first-touch page
        // faults out of the event loop (the opaque borrow stops the write being elided).
        std::hint::black_box(&mut slots).fill(0);
        Self {
            slots,
            mask: cap - 1,
        }
    }

    #[inline]
    fn home(&self, tag: u64) -> usize {
        tag as usize & self.mask
    }

    #[inline]
    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot and node of `id`, whose nodes live in `pool`.
    #[inline]
    pub(super) fn find(&self, id: u64, pool: &Pool) -> Option<(usize, u32)> {
        self.find_or_vacant(id, pool).ok()
    }

    /// The slot and node of `id` (`Ok`), or the empty slot where it would be inserted (`Err`):
    /// an add probes once for both.
    #[inline]
    pub(super) fn find_or_vacant(&self, id: u64, pool: &Pool) -> Result<(usize, u32), usize> {
        let tag = tag(id);
        let mut i = self.home(tag);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return Err(i);
            }
            if slot >> 32 == tag {
                let node = (slot as u32).wrapping_sub(1);
                if pool.get(node).id == id {
                    return Ok((i, node));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Stores `id` in `vacant`, the empty slot [`OrderIndex::find_or_vacant`] gave for it with
    /// no change to the table since.
    #[inline]
    pub(super) fn insert_at(&mut self, vacant: usize, id: u64, node: u32) {
        debug_assert_eq!(self.slots[vacant], 0);
        self.slots[vacant] = (tag(id) << 32) | u64::from(node + 1);
    }

    /// Inserts an id the caller knows to be absent.
    #[inline]
    pub(super) fn insert(&mut self, id: u64, node: u32) {
        let tag = tag(id);
        let mut i = self.home(tag);
        while self.slots[i] != 0 {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = (tag << 32) | u64::from(node + 1);
    }

    /// Empties `slot` (from [`OrderIndex::find`], with no change to the table since), pulling
    /// back the entries of the probe run behind it so that no lookup ever crosses a hole.
    #[inline]
    pub(super) fn remove_at(&mut self, slot: usize) {
        let mut hole = slot;
        let mut j = slot;
        loop {
            j = (j + 1) & self.mask;
            let entry = self.slots[j];
            if entry == 0 {
                break;
            }
            // The entry at `j` may fill the hole when the hole lies between its home and `j`
            // (cyclically): then it is still found by a probe starting at its home.
            let home = self.home(entry >> 32);
            if j.wrapping_sub(home) & self.mask >= j.wrapping_sub(hole) & self.mask {
                self.slots[hole] = entry;
                hole = j;
            }
        }
        self.slots[hole] = 0;
    }

    /// Removes `id` if present.
    #[inline]
    pub(super) fn remove(&mut self, id: u64, pool: &Pool) {
        if let Some((slot, _)) = self.find(id, pool) {
            self.remove_at(slot);
        }
    }

    /// Empties the whole table (cheaper than removing ids one by one when most are live).
    pub(super) fn clear(&mut self) {
        self.slots.fill(0);
    }

    /// Entries in the table (tests only: a full scan).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.iter().filter(|&&s| s != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn node(id: u64) -> Node {
        Node {
            id,
            price: 0,
            size: 1,
            side: Side::Bid,
            prev: NIL,
            next: NIL,
        }
    }

    proptest! {
        /// The index against std's map over random inserts and removes, with ids that share
        /// home slots and tags (long probe runs, tag matches of other ids).
        #[test]
        fn index_matches_hashmap(ops in proptest::collection::vec((any::<bool>(), 0u64..48), 1..400)) {
            // Groups whose ids all have home slots 0..8 (long probe runs); `raw << 40` only
            // differ above the low bits.
            let groups: Vec<u64> = (0u64..).filter(|g| tag(g << GROUP_BITS) & 63 == 0).take(6).collect();
            let mut pool = Pool::new(32);
            let mut index = OrderIndex::new(32);
            assert_eq!(index.capacity(), 64);
            let mut reference: HashMap<u64, u32> = HashMap::new();
            let id_of = |raw: u64| if raw.is_multiple_of(2) {
                (groups[(raw / 2 % 6) as usize] << GROUP_BITS) | (raw / 12 % GROUP)
            } else {
                raw << 40
            };
            for (insert, raw) in ops {
                let id = id_of(raw);
                if insert && !reference.contains_key(&id) && reference.len() < 32 {
                    let n = pool.alloc(node(id)).unwrap();
                    index.insert(id, n);
                    reference.insert(id, n);
                } else if !insert
                    && let Some(n) = reference.remove(&id)
                {
                    index.remove(id, &pool);
                    pool.release(n);
                }
                prop_assert_eq!(index.len(), reference.len());
                for probe in 0..48u64 {
                    let id = id_of(probe);
                    prop_assert_eq!(index.find(id, &pool).map(|(_, v)| v), reference.get(&id).copied());
                }
            }
        }
    }

    #[test]
    fn pool_reuses_and_refuses_when_full() {
        let node = node(1);
        let mut pool = Pool::new(2);
        let a = pool.alloc(node).unwrap();
        let b = pool.alloc(node).unwrap();
        assert!(pool.is_full());
        assert_eq!(pool.alloc(node), None);
        pool.release(a);
        assert_eq!(pool.alloc(node), Some(a));
        assert_ne!(a, b);
        pool.reset();
        assert_eq!(pool.live(), 0);
    }
}
