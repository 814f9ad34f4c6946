//! Links between stages: bounded, preallocated `rtrb` SPSC rings of plain `Copy` messages, each
//! with an explicit policy for a consumer that is slower than its producer.
//!
//! - [`Policy::Backpressure`] (the main path): nothing is dropped. A producer asks for
//!   [`Sender::free`] room before it takes input, so a full link stops it consuming, its own input
//!   fills, and the pressure travels back to ingest (which then risks being lapped by the
//!   market-data writer: that loss is counted there).
//! - [`Policy::ConflateLatest`] (slow lanes): the producer never waits. Messages that do not fit
//!   are kept in a fixed table, latest per key (instrument); an overwritten one is counted as
//!   conflated. The table drains into the ring, oldest key first, as room appears.
//! - [`Policy::DropOldest`] (slow lanes): the producer never waits. Messages that do not fit wait
//!   in a fixed overflow queue; when that is full its oldest message is dropped and counted.
//!   (The producer cannot take back what is already in the ring: the oldest messages it still
//!   holds are the ones dropped.)
//!
//! Every message pushed, conflated or dropped is counted in the link's [`LinkStats`], readable
//! from any thread while the engine runs.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::PipelineError;

/// A message that can travel on a link.
pub trait Message: Copy + Default + Send + 'static {
    /// The conflation key (the instrument).
    fn key(&self) -> u32;
    /// Raw ticks when the message was made visible to the consumer.
    fn enqueue_ticks(&self) -> u64;
    /// Stamps the raw ticks at which the message is made visible.
    fn set_enqueue_ticks(&mut self, ticks: u64);
}

/// What a link does when its consumer is slower than its producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// The producer stops taking input until there is room: nothing is lost.
    Backpressure,
    /// Keep the latest message per key; count the ones overwritten.
    ConflateLatest,
    /// Keep the newest messages; count the oldest dropped.
    DropOldest,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "backpressure" => Ok(Policy::Backpressure),
            "conflate" | "conflate-latest" => Ok(Policy::ConflateLatest),
            "drop-oldest" => Ok(Policy::DropOldest),
            _ => Err(format!(
                "unknown link policy {s:?} (backpressure, conflate, drop-oldest)"
            )),
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Backpressure => "backpressure",
            Policy::ConflateLatest => "conflate",
            Policy::DropOldest => "drop-oldest",
        })
    }
}

/// A link's counters. Each is written by one side only (a plain store of the side's own count),
/// so no read-modify-write is needed on the hot path.
#[derive(Debug)]
pub struct LinkStats {
    name: String,
    capacity: usize,
    policy: Policy,
    pushed: AtomicU64,
    popped: AtomicU64,
    conflated: AtomicU64,
    dropped: AtomicU64,
    stalls: AtomicU64,
    closed: AtomicBool,
}

/// A copy of a link's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCounts {
    /// `producer->consumer`.
    pub name: String,
    /// Ring slots.
    pub capacity: usize,
    /// Policy.
    pub policy: Policy,
    /// Messages made visible to the consumer.
    pub pushed: u64,
    /// Messages the consumer took.
    pub popped: u64,
    /// Messages overwritten by a newer one for the same key before they were sent.
    pub conflated: u64,
    /// Messages dropped (overflow, or a conflation table with no free slot).
    pub dropped: u64,
    /// Times the producer had input but no room (back-pressure).
    pub stalls: u64,
}

/// A link's counters without its name: a copy that never allocates, for a monitor that samples
/// them on a timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTotals {
    /// Ring slots.
    pub capacity: usize,
    /// Policy.
    pub policy: Policy,
    /// Messages made visible to the consumer.
    pub pushed: u64,
    /// Messages the consumer took.
    pub popped: u64,
    /// Messages overwritten by a newer one for the same key before they were sent.
    pub conflated: u64,
    /// Messages dropped.
    pub dropped: u64,
    /// Times the producer had input but no room.
    pub stalls: u64,
}

impl LinkStats {
    /// A copy of the counters.
    pub fn counts(&self) -> LinkCounts {
        let t = self.totals();
        LinkCounts {
            name: self.name.clone(),
            capacity: t.capacity,
            policy: t.policy,
            pushed: t.pushed,
            popped: t.popped,
            conflated: t.conflated,
            dropped: t.dropped,
            stalls: t.stalls,
        }
    }

    /// A copy of the counters without the name (no allocation).
    pub fn totals(&self) -> LinkTotals {
        // Relaxed: monitoring values, each monotonic on its own; no data hangs on them.
        LinkTotals {
            capacity: self.capacity,
            policy: self.policy,
            pushed: self.pushed.load(Ordering::Relaxed),
            popped: self.popped.load(Ordering::Relaxed),
            conflated: self.conflated.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            stalls: self.stalls.load(Ordering::Relaxed),
        }
    }
}

/// Table of the latest message per key, fixed size, plus the order keys became pending.
struct Conflator<T> {
    keys: Vec<u32>,
    used: Vec<bool>,
    pending: Vec<bool>,
    values: Vec<T>,
    order: VecDeque<usize>,
    mask: usize,
}

impl<T: Message> Conflator<T> {
    fn new(slots: usize) -> Self {
        let slots = slots.next_power_of_two();
        Self {
            keys: vec![0; slots],
            used: vec![false; slots],
            pending: vec![false; slots],
            values: vec![T::default(); slots],
            order: VecDeque::with_capacity(slots),
            mask: slots - 1,
        }
    }

    /// Stores `msg` as its key's latest. Returns (conflated, dropped).
    fn put(&mut self, msg: T) -> (bool, bool) {
        let key = msg.key();
        // Fibonacci hashing spreads dense instrument ids across the table.
        let mut i = (key.wrapping_mul(0x9E37_79B9) as usize) & self.mask;
        for _ in 0..=self.mask {
            if !self.used[i] {
                self.used[i] = true;
                self.keys[i] = key;
            }
            if self.keys[i] == key {
                self.values[i] = msg;
                if self.pending[i] {
                    return (true, false);
                }
                self.pending[i] = true;
                self.order.push_back(i);
                return (false, false);
            }
            i = (i + 1) & self.mask;
        }
        (false, true)
    }

    fn pop(&mut self) -> Option<T> {
        let i = self.order.pop_front()?;
        self.pending[i] = false;
        Some(self.values[i])
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

enum Overflow<T> {
    None,
    Conflate(Box<Conflator<T>>),
    DropOldest(VecDeque<T>, usize),
}

/// The producer end of a link.
pub struct Sender<T: Message> {
    ring: rtrb::Producer<T>,
    overflow: Overflow<T>,
    stats: Arc<LinkStats>,
    pushed: u64,
    conflated: u64,
    dropped: u64,
    stalls: u64,
}

impl<T: Message> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("link", &self.stats.name)
            .finish()
    }
}

/// The consumer end of a link.
pub struct Receiver<T: Message> {
    ring: rtrb::Consumer<T>,
    stats: Arc<LinkStats>,
    popped: u64,
}

impl<T: Message> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("link", &self.stats.name)
            .finish()
    }
}

/// Both ends of a link and its counters.
pub type Link<T> = (Sender<T>, Receiver<T>, Arc<LinkStats>);

/// Makes a link: every slot, table and queue is allocated here, none later.
///
/// `overflow` sizes the conflation table (keys) or the drop-oldest queue (messages); it is
/// ignored for back-pressure.
///
/// # Errors
/// [`PipelineError::Config`] for a capacity below 2 or a zero overflow size on a lossy policy.
pub fn link<T: Message>(
    name: &str,
    capacity: usize,
    policy: Policy,
    overflow: usize,
) -> Result<Link<T>, PipelineError> {
    if capacity < 2 {
        return Err(PipelineError::config(
            format!("links.{name}.capacity"),
            format!("must be at least 2, got {capacity}"),
        ));
    }
    if policy != Policy::Backpressure && overflow == 0 {
        return Err(PipelineError::config(
            format!("links.{name}.overflow"),
            "must be at least 1 for a lossy policy".to_string(),
        ));
    }
    let (producer, consumer) = rtrb::RingBuffer::new(capacity);
    let stats = Arc::new(LinkStats {
        name: name.to_string(),
        capacity,
        policy,
        pushed: AtomicU64::new(0),
        popped: AtomicU64::new(0),
        conflated: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        stalls: AtomicU64::new(0),
        closed: AtomicBool::new(false),
    });
    let overflow = match policy {
        Policy::Backpressure => Overflow::None,
        Policy::ConflateLatest => Overflow::Conflate(Box::new(Conflator::new(overflow))),
        Policy::DropOldest => Overflow::DropOldest(VecDeque::with_capacity(overflow), overflow),
    };
    Ok((
        Sender {
            ring: producer,
            overflow,
            stats: stats.clone(),
            pushed: 0,
            conflated: 0,
            dropped: 0,
            stalls: 0,
        },
        Receiver {
            ring: consumer,
            stats: stats.clone(),
            popped: 0,
        },
        stats,
    ))
}

impl<T: Message> Sender<T> {
    /// Free ring slots: with back-pressure, the most messages a producer may take input for.
    #[inline]
    pub fn free(&self) -> usize {
        self.ring.slots()
    }

    /// Counts one back-pressure stall (input waiting, no room).
    #[inline]
    pub fn note_stall(&mut self) {
        self.stalls += 1;
        // Relaxed: a counter; see `LinkStats`.
        self.stats.stalls.store(self.stalls, Ordering::Relaxed);
    }

    /// Stamps every message with `ticks` and makes them visible at once.
    ///
    /// With back-pressure the caller has checked [`Sender::free`]; messages beyond the room
    /// are not sent, and the number sent is returned. A lossy link takes them all: what does not
    /// fit goes to its overflow (conflated or dropping the oldest, counted).
    #[inline]
    pub fn send(&mut self, msgs: &mut [T], ticks: u64) -> usize {
        for m in msgs.iter_mut() {
            m.set_enqueue_ticks(ticks);
        }
        let sent = match self.overflow {
            Overflow::None => self.push_now(msgs),
            _ => {
                self.flush(ticks);
                let direct = if self.overflow_is_empty() {
                    self.push_now(msgs)
                } else {
                    0
                };
                for &m in &msgs[direct..] {
                    self.spill(m);
                }
                msgs.len()
            }
        };
        self.publish_counts();
        sent
    }

    /// Moves held overflow into the ring while there is room. Returns messages moved.
    #[inline]
    pub fn flush(&mut self, ticks: u64) -> usize {
        let mut moved = 0;
        while !self.ring.is_full() {
            let next = match &mut self.overflow {
                Overflow::None => None,
                Overflow::Conflate(c) => c.pop(),
                Overflow::DropOldest(q, _) => q.pop_front(),
            };
            let Some(mut m) = next else { break };
            m.set_enqueue_ticks(ticks);
            // Cannot fail: the ring was not full and this is its only producer.
            let _ = self.ring.push(m);
            moved += 1;
        }
        if moved > 0 {
            self.pushed += moved as u64;
            self.publish_counts();
        }
        moved
    }

    /// Whether messages are held back in the overflow.
    #[inline]
    pub fn has_overflow(&self) -> bool {
        !self.overflow_is_empty()
    }

    /// Marks the link closed: after the messages already sent, no more will come. Call it once
    /// the overflow is flushed.
    pub fn close(&self) {
        // Release pairs with the Acquire in `Receiver::is_finished`: a consumer that sees the
        // flag also sees every push made before it.
        self.stats.closed.store(true, Ordering::Release);
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    fn overflow_is_empty(&self) -> bool {
        match &self.overflow {
            Overflow::None => true,
            Overflow::Conflate(c) => c.is_empty(),
            Overflow::DropOldest(q, _) => q.is_empty(),
        }
    }

    #[inline]
    fn push_now(&mut self, msgs: &[T]) -> usize {
        let n = msgs.len().min(self.ring.slots());
        if n == 0 {
            return 0;
        }
        // Cannot fail: `n` slots are free and this is the only producer.
        if let Ok(mut chunk) = self.ring.write_chunk(n) {
            let (a, b) = chunk.as_mut_slices();
            a.copy_from_slice(&msgs[..a.len()]);
            b.copy_from_slice(&msgs[a.len()..n]);
            chunk.commit_all();
        }
        self.pushed += n as u64;
        n
    }

    fn spill(&mut self, m: T) {
        match &mut self.overflow {
            Overflow::None => {}
            Overflow::Conflate(c) => match c.put(m) {
                (true, _) => self.conflated += 1,
                (_, true) => self.dropped += 1,
                _ => {}
            },
            Overflow::DropOldest(q, limit) => {
                if q.len() == *limit {
                    q.pop_front();
                    self.dropped += 1;
                }
                q.push_back(m);
            }
        }
    }

    #[inline]
    fn publish_counts(&self) {
        // Relaxed: counters; see `LinkStats`.
        self.stats.pushed.store(self.pushed, Ordering::Relaxed);
        self.stats
            .conflated
            .store(self.conflated, Ordering::Relaxed);
        self.stats.dropped.store(self.dropped, Ordering::Relaxed);
    }
}

impl<T: Message> Receiver<T> {
    /// Messages ready.
    #[inline]
    pub fn available(&self) -> usize {
        self.ring.slots()
    }

    /// Copies up to `out.len()` messages into `out`; returns how many.
    #[inline]
    pub fn recv(&mut self, out: &mut [T]) -> usize {
        let n = out.len().min(self.ring.slots());
        if n == 0 {
            return 0;
        }
        if let Ok(chunk) = self.ring.read_chunk(n) {
            let (a, b) = chunk.as_slices();
            out[..a.len()].copy_from_slice(a);
            out[a.len()..n].copy_from_slice(b);
            chunk.commit_all();
        }
        self.popped += n as u64;
        // Relaxed: a counter; see `LinkStats`.
        self.stats.popped.store(self.popped, Ordering::Relaxed);
        n
    }

    /// The producer has closed (or gone) and everything it sent has been taken.
    #[inline]
    pub fn is_finished(&self) -> bool {
        // Acquire pairs with the Release in `Sender::close`; the emptiness check comes after it
        // so a message pushed before the close is never missed.
        let closed = self.stats.closed.load(Ordering::Acquire) || self.ring.is_abandoned();
        closed && self.ring.is_empty()
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    struct M {
        key: u32,
        v: u64,
        t: u64,
    }

    impl Message for M {
        fn key(&self) -> u32 {
            self.key
        }
        fn enqueue_ticks(&self) -> u64 {
            self.t
        }
        fn set_enqueue_ticks(&mut self, ticks: u64) {
            self.t = ticks;
        }
    }

    fn msgs(keys: &[u32], start: u64) -> Vec<M> {
        keys.iter()
            .enumerate()
            .map(|(i, &key)| M {
                key,
                v: start + i as u64,
                t: 0,
            })
            .collect()
    }

    fn drain(rx: &mut Receiver<M>) -> Vec<M> {
        let mut out = vec![M::default(); 64];
        let n = rx.recv(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn backpressure_sends_only_what_fits_and_stamps() {
        let (mut tx, mut rx, stats) = link::<M>("a->b", 4, Policy::Backpressure, 0).unwrap();
        let mut batch = msgs(&[1, 2, 3, 4, 5, 6], 0);
        assert_eq!(tx.free(), 4);
        assert_eq!(tx.send(&mut batch, 77), 4);
        let got = drain(&mut rx);
        assert_eq!(got.iter().map(|m| m.v).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert!(got.iter().all(|m| m.enqueue_ticks() == 77));
        tx.note_stall();
        let c = stats.counts();
        assert_eq!((c.pushed, c.popped, c.stalls, c.dropped), (4, 4, 1, 0));
    }

    #[test]
    fn conflation_keeps_latest_per_key_in_first_pending_order() {
        let (mut tx, mut rx, stats) = link::<M>("x->slow", 2, Policy::ConflateLatest, 8).unwrap();
        // Two fit; of the rest, key 7 is overwritten twice and key 9 once.
        let mut batch = msgs(&[1, 2, 7, 9, 7, 9, 7], 0);
        assert_eq!(tx.send(&mut batch, 1), 7);
        assert!(tx.has_overflow());
        assert_eq!(
            drain(&mut rx).iter().map(|m| m.v).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(tx.flush(2), 2);
        let got = drain(&mut rx);
        assert_eq!(
            got.iter().map(|m| (m.key, m.v)).collect::<Vec<_>>(),
            [(7, 6), (9, 5)]
        );
        assert!(!tx.has_overflow());
        let c = stats.counts();
        assert_eq!((c.pushed, c.conflated, c.dropped), (4, 3, 0));
        // Every message is accounted for: delivered + conflated + dropped = sent.
        assert_eq!(c.pushed + c.conflated + c.dropped, 7);
    }

    #[test]
    fn conflation_table_full_drops_and_counts() {
        let (mut tx, _rx, stats) = link::<M>("x->slow", 2, Policy::ConflateLatest, 2).unwrap();
        let mut batch = msgs(&[1, 2, 3, 4, 5], 0);
        tx.send(&mut batch, 0);
        let c = stats.counts();
        assert_eq!((c.pushed, c.conflated, c.dropped), (2, 0, 1));
    }

    #[test]
    fn drop_oldest_keeps_newest() {
        let (mut tx, mut rx, stats) = link::<M>("x->slow", 2, Policy::DropOldest, 3).unwrap();
        let mut batch = msgs(&[1; 8], 0);
        tx.send(&mut batch, 0);
        assert_eq!(
            drain(&mut rx).iter().map(|m| m.v).collect::<Vec<_>>(),
            [0, 1]
        );
        tx.flush(0);
        tx.flush(0);
        let mut got = drain(&mut rx);
        tx.flush(0);
        got.extend(drain(&mut rx));
        assert_eq!(got.iter().map(|m| m.v).collect::<Vec<_>>(), [5, 6, 7]);
        assert_eq!(stats.counts().dropped, 3);
    }

    #[test]
    fn finished_only_after_close_and_drain() {
        let (mut tx, mut rx, _) = link::<M>("a->b", 4, Policy::Backpressure, 0).unwrap();
        tx.send(&mut msgs(&[1], 0), 0);
        assert!(!rx.is_finished());
        tx.close();
        assert!(!rx.is_finished());
        drain(&mut rx);
        assert!(rx.is_finished());
    }

    #[test]
    fn bad_sizes_name_the_field() {
        let e = link::<M>("ingest->features", 0, Policy::Backpressure, 0).unwrap_err();
        assert!(
            e.to_string().contains("links.ingest->features.capacity"),
            "{e}"
        );
        let e = link::<M>("inference->forecast", 8, Policy::DropOldest, 0).unwrap_err();
        assert!(e.to_string().contains("overflow"), "{e}");
    }
}
