//! The health page: one small, fixed-size snapshot that one writer republishes and any number of
//! read-only processes copy, plus a kill-switch word they can read with a single load.
//!
//! The engine's health monitor publishes its rollup here at a steady cadence; the trading process
//! and `tickpipe health --page` read it. The payload is an opaque array of `u64` words whose
//! meaning belongs to the pipeline crate; this module only guarantees that a reader gets one
//! whole payload, never a mix of two.
//!
//! Like [`crate::ring`], this module is safe code over a [`Region`], so the same protocol runs over
//! a file mapping ([`create_page`], [`try_attach_page`]) and over a heap region under loom.
//!
//! # Layout
//!
//! ```text
//! page file (little-endian u64 words; byte offsets, word index in brackets)
//!
//! 0      ┌──────────────────────────── header (384 bytes, 3 lines of 128) ───────────────────────┐
//!        │ line 0  (0..128)    static, written once before `layout_version`                      │
//!        │   +0 [0]  magic "TICKPAGE"                                                            │
//!        │   +8 [1]  layout_version (written LAST at creation, Release)                          │
//!        │  +16 [2]  header_len (= 384, where the payload starts)                                │
//!        │  +24 [3]  payload_words                                                               │
//!        │  +32 [4]  writer_pid          +40 [5] writer_start_ns (unix ns)                       │
//! 128    │ line 1  (128..256)  seqlock, written by every publish                                 │
//!        │  +128 [16] seq (odd while a publish is in progress; 0 = nothing published yet)        │
//!        │  +136 [17] publishes (inside the seqlock: consistent with the payload)                │
//!        │  +144 [18] heartbeat_ns (unix ns; stamped by every publish and by `heartbeat`)        │
//! 256    │ line 2  (256..384)  kill switch, outside the seqlock                                  │
//!        │  +256 [32] kill (0 = released, anything else = engaged)                               │
//! 384    ├──────────────────────── payload (payload_words words, padded to 128) ─────────────────┤
//!        │  +384 [48] word 0, word 1, …  (opaque; defined by the pipeline crate)                 │
//!        └───────────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! The kill word has a line of its own: a trading process polling it in its hot loop keeps that
//! line in its cache, and the rollup republished every 100 ms never invalidates it. The payload
//! starts on a fresh line so the header lines and the payload lines are never false-shared.
//!
//! # Protocol (a seqlock)
//!
//! The single writer publishes a payload by storing `seq + 1` (odd), a Release fence, the payload
//! words and the publish count (Relaxed), then `seq + 2` (even) with Release.
//!
//! A reader loads `seq` with Acquire; if it is odd a publish is in progress and it tries again.
//! Otherwise it copies the payload with Relaxed loads, issues an Acquire fence and loads `seq`
//! again: if it is unchanged, the copy is one whole payload (any word from a later publish would
//! make the second load see that publish's odd `seq`, through the fence pair). Every load and
//! store is atomic, so concurrent access stays defined behaviour; on x86 they are plain moves.
//!
//! A reader tries a bounded number of times ([`READ_TRIES`] by default) and then returns
//! [`PageError::Busy`]; it never waits on the writer. A writer that died in the middle of a
//! publish leaves `seq` odd forever: every later read is `Busy`, quickly, and the reader does not
//! hang. Tell a dead writer from a busy one by its heartbeat and its pid.
//!
//! # Reading from a trading process
//!
//! Attach once ([`attach_page_wait`] or [`try_attach_page`]; the mapping is read-only). Then:
//! - the kill switch is [`PageReader::kill`]: one Acquire load of one word, cheap enough to
//!   check before every order. Seeing it engaged also shows everything the writer published
//!   before engaging it.
//! - the rollup is [`PageReader::read`]: a seqlock copy of `payload_words` words into the caller's
//!   buffer, no allocation, no syscall; a few tens of nanoseconds for a rollup of tens of words.
//! - liveness is [`PageReader::heartbeat_ns`] and [`PageReader::writer_pid`]: a writer that
//!   restarts creates a new page at the same path (readers attached to the old, now unlinked,
//!   file see its heartbeat stop), so a stale heartbeat means: re-attach, and treat the rollup as
//!   unknown meanwhile.
//!
//! The header fields a reader relies on are read and bounds-checked once, when it attaches; a
//! hostile or corrupt page can make attaching or reading fail, never panic.

use crate::layout::LINE;
#[cfg(not(loom))]
use crate::ring::HeapRegion;
use crate::ring::Region;
use crate::sync::{AtomicU64, Ordering, fence};

#[cfg(not(loom))]
mod mapped;
#[cfg(not(loom))]
pub use mapped::{PageOptions, attach_page_wait, create_page, try_attach_page};

/// `"TICKPAGE"` as a little-endian u64.
pub const PAGE_MAGIC: u64 = u64::from_le_bytes(*b"TICKPAGE");
/// The page layout this build reads and writes.
pub const PAGE_LAYOUT_VERSION: u64 = 1;
/// Bytes of header before the payload.
pub const PAGE_HEADER_LEN: usize = 3 * LINE;
/// Largest payload accepted, in words (512 KiB); a larger value read from a header is corruption.
pub const MAX_PAYLOAD_WORDS: usize = 1 << 16;
/// How many times [`PageReader::read`] tries by default before reporting [`PageError::Busy`].
pub const READ_TRIES: usize = 64;
/// The kill word's value when the kill switch is released.
pub const KILL_RELEASED: u64 = 0;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_HEADER_LEN: usize = 16;
const OFF_PAYLOAD_WORDS: usize = 24;
const OFF_WRITER_PID: usize = 32;
const OFF_WRITER_START_NS: usize = 40;
const OFF_SEQ: usize = LINE;
const OFF_PUBLISHES: usize = LINE + 8;
const OFF_HEARTBEAT_NS: usize = LINE + 16;
const OFF_KILL: usize = 2 * LINE;
const OFF_PAYLOAD: usize = PAGE_HEADER_LEN;

// The diagram above is the contract; these keep the code honest to it.
const _: () = assert!(OFF_WRITER_START_NS + 8 <= LINE);
const _: () = assert!(OFF_SEQ.is_multiple_of(LINE) && OFF_HEARTBEAT_NS + 8 <= 2 * LINE);
const _: () = assert!(OFF_KILL.is_multiple_of(LINE) && OFF_KILL + 8 <= 3 * LINE);
const _: () = assert!(OFF_PAYLOAD.is_multiple_of(LINE) && OFF_PAYLOAD == PAGE_HEADER_LEN);
const _: () = assert!(PAGE_HEADER_LEN == 384 && OFF_PAYLOAD / 8 == 48);
const _: () = assert!(PAGE_MAGIC != crate::layout::MAGIC);

/// Word index of a byte offset.
#[inline(always)]
const fn w(byte_offset: usize) -> usize {
    byte_offset / 8
}

/// Why a page cannot be written or read. Small and `Copy`: [`PageError::Busy`] and
/// [`PageError::Empty`] come from the hot path, the others from setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The writer was in the middle of a publish on every try. Transient while the writer is
    /// alive; permanent if it died mid-publish (check the heartbeat and pid).
    #[error("page busy: a publish was in progress on every try")]
    Busy,
    /// Nothing has been published yet.
    #[error("page empty: nothing published yet")]
    Empty,
    /// A payload or buffer of the wrong number of words.
    #[error("payload of {len} words, the page holds {expected}")]
    WrongLength {
        /// Words given.
        len: usize,
        /// Words the page holds.
        expected: usize,
    },
    /// Magic or version still zero: the writer is initialising the header. Try again.
    #[error("page header version not written yet")]
    VersionNotWritten,
    /// Not a tickpipe health page.
    #[error("bad magic {found:#018x} (expected \"TICKPAGE\")")]
    WrongMagic {
        /// What the page holds.
        found: u64,
    },
    /// A layout this build does not speak.
    #[error("page layout version {found}, this build reads version {expected}")]
    WrongVersion {
        /// The page's version.
        found: u64,
        /// Ours.
        expected: u64,
    },
    /// The region is shorter than the header, or than the payload the header claims (a
    /// truncated file).
    #[error("page region is {len} bytes but needs {needed}")]
    TooSmall {
        /// Region length in bytes.
        len: usize,
        /// Length the page needs.
        needed: usize,
    },
    /// A header field (or a requested shape) is out of range.
    #[error("page field {field} = {value} is invalid")]
    BadField {
        /// Field name.
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

/// Bytes a page with `payload_words` words of payload needs: the header and the payload, padded
/// to a whole line.
///
/// # Errors
/// [`PageError::BadField`] unless `1 <= payload_words <= MAX_PAYLOAD_WORDS`.
pub fn page_len(payload_words: usize) -> Result<usize, PageError> {
    if payload_words == 0 || payload_words > MAX_PAYLOAD_WORDS {
        return Err(PageError::BadField {
            field: "payload_words",
            value: payload_words as u64,
        });
    }
    Ok(PAGE_HEADER_LEN + (payload_words * 8).next_multiple_of(LINE))
}

/// Who writes a page, stamped into its header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageIdentity {
    /// The writer's process id.
    pub pid: u64,
    /// When the writer started, ns since the UNIX epoch.
    pub start_ns: u64,
}

#[cfg(not(loom))]
impl PageIdentity {
    /// This process, starting now.
    pub fn current() -> Self {
        Self {
            pid: u64::from(std::process::id()),
            start_ns: crate::mapped::unix_now_ns(),
        }
    }
}

/// The static header values, read and validated once by [`read_page_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageInfo {
    /// Words of payload.
    pub payload_words: usize,
    /// The writer.
    pub writer: PageIdentity,
}

/// Reads and validates a page header.
///
/// # Errors
/// [`PageError::VersionNotWritten`] while the writer is initialising; [`PageError::TooSmall`]
/// for a region shorter than the header or than the payload it declares;
/// [`PageError::WrongMagic`], [`PageError::WrongVersion`] or [`PageError::BadField`] for a header
/// no writer of this layout produces.
pub fn read_page_header(words: &[AtomicU64]) -> Result<PageInfo, PageError> {
    let len = words.len() * 8;
    if len < PAGE_HEADER_LEN {
        return Err(PageError::TooSmall {
            len,
            needed: PAGE_HEADER_LEN,
        });
    }
    let load = |off: usize, order| words[w(off)].load(order);
    let magic = load(OFF_MAGIC, Ordering::Relaxed);
    if magic == 0 {
        return Err(PageError::VersionNotWritten);
    }
    if magic != PAGE_MAGIC {
        return Err(PageError::WrongMagic { found: magic });
    }
    // Acquire pairs with the writer's Release store of the version in `PageWriter::init`: every
    // static field below was written before it.
    let version = load(OFF_VERSION, Ordering::Acquire);
    if version == 0 {
        return Err(PageError::VersionNotWritten);
    }
    if version != PAGE_LAYOUT_VERSION {
        return Err(PageError::WrongVersion {
            found: version,
            expected: PAGE_LAYOUT_VERSION,
        });
    }
    let header_len = load(OFF_HEADER_LEN, Ordering::Relaxed);
    if header_len != PAGE_HEADER_LEN as u64 {
        return Err(PageError::BadField {
            field: "header_len",
            value: header_len,
        });
    }
    let raw_words = load(OFF_PAYLOAD_WORDS, Ordering::Relaxed);
    let payload_words = usize::try_from(raw_words).map_err(|_| PageError::BadField {
        field: "payload_words",
        value: raw_words,
    })?;
    let needed = page_len(payload_words)?;
    if len < needed {
        return Err(PageError::TooSmall { len, needed });
    }
    Ok(PageInfo {
        payload_words,
        writer: PageIdentity {
            pid: load(OFF_WRITER_PID, Ordering::Relaxed),
            start_ns: load(OFF_WRITER_START_NS, Ordering::Relaxed),
        },
    })
}

/// The single writer of a page.
#[derive(Debug)]
pub struct PageWriter<R: Region> {
    region: R,
    payload_words: usize,
    /// Writer-private copies of `seq` and `publishes`: the writer never reads shared memory.
    seq: u64,
    publishes: u64,
    /// Heartbeats come from the TSC, not the OS, so `publish` makes no syscall:
    /// `base_ns + clock.delta_as_nanos(base_ticks, now)`.
    clock: quanta::Clock,
    base_ticks: u64,
    base_ns: u64,
}

impl<R: Region> PageWriter<R> {
    /// Formats `region` as a page of `payload_words` words for this process, kill switch
    /// released, and returns its writer.
    ///
    /// # Errors
    /// As [`PageWriter::init`].
    #[cfg(not(loom))]
    pub fn new(region: R, payload_words: usize) -> Result<Self, PageError> {
        Self::init(
            region,
            payload_words,
            PageIdentity::current(),
            KILL_RELEASED,
        )
    }

    /// Formats `region` as a page with nothing published, the kill word set to `kill`, and
    /// returns its writer. The version is written last, so a reader attaching meanwhile sees
    /// [`PageError::VersionNotWritten`], never a half-written header. Heartbeats count from
    /// `identity.start_ns`.
    ///
    /// # Errors
    /// [`PageError::BadField`] for a payload of zero or more than [`MAX_PAYLOAD_WORDS`] words;
    /// [`PageError::TooSmall`] when the region cannot hold the page.
    pub fn init(
        region: R,
        payload_words: usize,
        identity: PageIdentity,
        kill: u64,
    ) -> Result<Self, PageError> {
        let needed = page_len(payload_words)?;
        let words = region.words();
        let len = words.len() * 8;
        if len < needed {
            return Err(PageError::TooSmall { len, needed });
        }
        let store = |off: usize, value: u64| words[w(off)].store(value, Ordering::Relaxed);
        store(OFF_VERSION, 0);
        store(OFF_MAGIC, PAGE_MAGIC);
        store(OFF_HEADER_LEN, PAGE_HEADER_LEN as u64);
        store(OFF_PAYLOAD_WORDS, payload_words as u64);
        store(OFF_WRITER_PID, identity.pid);
        store(OFF_WRITER_START_NS, identity.start_ns);
        store(OFF_SEQ, 0);
        store(OFF_PUBLISHES, 0);
        store(OFF_HEARTBEAT_NS, identity.start_ns);
        store(OFF_KILL, kill);
        for word in &words[w(OFF_PAYLOAD)..w(OFF_PAYLOAD) + payload_words] {
            word.store(0, Ordering::Relaxed);
        }
        // Release pairs with the Acquire load of the version in `read_page_header`: a reader that
        // sees the version sees every field above.
        words[w(OFF_VERSION)].store(PAGE_LAYOUT_VERSION, Ordering::Release);
        let clock = quanta::Clock::new();
        let base_ticks = clock.raw();
        Ok(Self {
            region,
            payload_words,
            seq: 0,
            publishes: 0,
            clock,
            base_ticks,
            base_ns: identity.start_ns,
        })
    }

    /// Publishes `words` as the new payload and stamps the heartbeat from the writer's clock.
    /// Returns the number of publishes so far. Never waits, allocates or makes a syscall.
    ///
    /// # Errors
    /// [`PageError::WrongLength`] unless `words` has exactly `payload_words` words; nothing is
    /// written then.
    #[inline]
    pub fn publish(&mut self, words: &[u64]) -> Result<u64, PageError> {
        let now_ns = self
            .base_ns
            .wrapping_add(self.clock.delta_as_nanos(self.base_ticks, self.clock.raw()));
        self.publish_at(words, now_ns)
    }

    /// As [`PageWriter::publish`], stamping the heartbeat with `now_ns` (ns since the UNIX
    /// epoch) from the caller's clock.
    ///
    /// # Errors
    /// As [`PageWriter::publish`].
    #[inline]
    pub fn publish_at(&mut self, words: &[u64], now_ns: u64) -> Result<u64, PageError> {
        if words.len() != self.payload_words {
            return Err(PageError::WrongLength {
                len: words.len(),
                expected: self.payload_words,
            });
        }
        let region = self.region.words();
        let payload = &region[w(OFF_PAYLOAD)..w(OFF_PAYLOAD) + self.payload_words];
        let seq = self.seq;
        let publishes = self.publishes + 1;
        region[w(OFF_SEQ)].store(seq.wrapping_add(1), Ordering::Relaxed);
        // Release fence pairs with the reader's Acquire fence before its second load of `seq`: a
        // reader whose copy holds any word stored below sees this odd `seq` (or a later one) and
        // discards the copy.
        fence(Ordering::Release);
        for (dst, &value) in payload.iter().zip(words) {
            dst.store(value, Ordering::Relaxed);
        }
        region[w(OFF_PUBLISHES)].store(publishes, Ordering::Relaxed);
        // The commit. Release pairs with the reader's Acquire load of `seq` before it copies: a
        // reader that sees this even `seq` sees every word above, and everything this thread
        // did before publishing (a kill word set earlier included).
        region[w(OFF_SEQ)].store(seq.wrapping_add(2), Ordering::Release);
        region[w(OFF_HEARTBEAT_NS)].store(now_ns, Ordering::Relaxed);
        self.seq = seq.wrapping_add(2);
        self.publishes = publishes;
        Ok(publishes)
    }

    /// Engages (`value != 0`) or releases (`0`) the kill switch. Readers see it with one load,
    /// independently of the rollup's seqlock.
    #[inline]
    pub fn set_kill(&self, value: u64) {
        // Release pairs with the Acquire load in `PageReader::kill`: a reader that sees this value
        // also sees everything published before it (the rollup that explains why).
        self.region.words()[w(OFF_KILL)].store(value, Ordering::Release);
    }

    /// Records that the writer is alive at `unix_ns` (ns since the UNIX epoch), between
    /// publishes.
    #[inline]
    pub fn heartbeat(&self, unix_ns: u64) {
        self.region.words()[w(OFF_HEARTBEAT_NS)].store(unix_ns, Ordering::Relaxed);
    }

    /// Publishes so far.
    pub fn publishes(&self) -> u64 {
        self.publishes
    }

    /// Words of payload.
    pub fn payload_words(&self) -> usize {
        self.payload_words
    }

    /// The region.
    pub fn region(&self) -> &R {
        &self.region
    }
}

/// A page on the heap, and its writer: for embedding the engine without shared memory, and for
/// tests. Readers attach with `PageReader::new(writer.region().clone())`.
///
/// # Errors
/// As [`PageWriter::init`].
#[cfg(not(loom))]
pub fn heap_page(
    payload_words: usize,
) -> Result<PageWriter<std::sync::Arc<HeapRegion>>, PageError> {
    let region = std::sync::Arc::new(HeapRegion::zeroed(page_len(payload_words)?));
    PageWriter::new(region, payload_words)
}

/// What a successful [`PageReader::read`] copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRead {
    /// The seqlock sequence of the copy (even, `2 × publishes` for a page written by one
    /// writer).
    pub seq: u64,
    /// Publishes up to and including the one copied.
    pub publishes: u64,
}

/// A reader of a page. It never writes: a read-only mapping is enough.
#[derive(Debug)]
pub struct PageReader<R: Region> {
    region: R,
    info: PageInfo,
    max_tries: usize,
}

impl<R: Region> PageReader<R> {
    /// Validates the page's header and attaches.
    ///
    /// # Errors
    /// As [`read_page_header`].
    pub fn new(region: R) -> Result<Self, PageError> {
        let info = read_page_header(region.words())?;
        Ok(Self {
            region,
            info,
            max_tries: READ_TRIES,
        })
    }

    /// Sets how many times [`PageReader::read`] tries before reporting [`PageError::Busy`]
    /// (at least once).
    pub fn with_max_tries(mut self, tries: usize) -> Self {
        self.max_tries = tries.max(1);
        self
    }

    /// Copies the newest payload into `out` (exactly `payload_words` words). Tries at most the
    /// configured number of times ([`READ_TRIES`] by default) and never waits for the writer, so
    /// a writer that died mid-publish makes this return [`PageError::Busy`] rather than hang.
    /// Never allocates or makes a syscall.
    ///
    /// On an error `out` holds no payload (it may hold a discarded, torn copy).
    ///
    /// # Errors
    /// [`PageError::WrongLength`] for a buffer of the wrong size; [`PageError::Empty`] before the
    /// first publish; [`PageError::Busy`] when every try overlapped a publish.
    #[inline]
    pub fn read(&self, out: &mut [u64]) -> Result<PageRead, PageError> {
        let n = self.info.payload_words;
        if out.len() != n {
            return Err(PageError::WrongLength {
                len: out.len(),
                expected: n,
            });
        }
        // In bounds: `read_page_header` checked the region holds header and payload, and a
        // `Region` returns the same slice on every call.
        let words = self.region.words();
        let seq = &words[w(OFF_SEQ)];
        let publishes = &words[w(OFF_PUBLISHES)];
        let payload = &words[w(OFF_PAYLOAD)..w(OFF_PAYLOAD) + n];
        for _ in 0..self.max_tries {
            // Acquire pairs with the writer's Release store of the even `seq` that ends a
            // publish: the copy below sees at least every word of that publish.
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                relax();
                continue;
            }
            if before == 0 {
                return Err(PageError::Empty);
            }
            for (dst, src) in out.iter_mut().zip(payload) {
                *dst = src.load(Ordering::Relaxed);
            }
            let count = publishes.load(Ordering::Relaxed);
            // Acquire fence pairs with the writer's Release fence after it makes `seq` odd: if the
            // copy holds any word of a later publish, the load below sees that publish's `seq`.
            fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return Ok(PageRead {
                    seq: before,
                    publishes: count,
                });
            }
            relax();
        }
        Err(PageError::Busy)
    }

    /// The kill word: [`KILL_RELEASED`] (0) or engaged (anything else). One Acquire load.
    #[inline]
    pub fn kill(&self) -> u64 {
        // Acquire pairs with the Release store in `PageWriter::set_kill`.
        self.region.words()[w(OFF_KILL)].load(Ordering::Acquire)
    }

    /// Whether the kill switch is engaged.
    #[inline]
    pub fn killed(&self) -> bool {
        self.kill() != KILL_RELEASED
    }

    /// The writer's last heartbeat, ns since the UNIX epoch.
    #[inline]
    pub fn heartbeat_ns(&self) -> u64 {
        self.region.words()[w(OFF_HEARTBEAT_NS)].load(Ordering::Relaxed)
    }

    /// The writer's process id, as read at attach.
    pub fn writer_pid(&self) -> u64 {
        self.info.writer.pid
    }

    /// When the writer started (ns since the UNIX epoch), as read at attach.
    pub fn writer_started_ns(&self) -> u64 {
        self.info.writer.start_ns
    }

    /// Words of payload.
    pub fn payload_words(&self) -> usize {
        self.info.payload_words
    }

    /// The header values read at attach.
    pub fn info(&self) -> &PageInfo {
        &self.info
    }

    /// The region.
    pub fn region(&self) -> &R {
        &self.region
    }
}

/// Backs off between tries; under loom, lets the writer run.
#[inline(always)]
fn relax() {
    #[cfg(loom)]
    loom::hint::spin_loop();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn page(payload_words: usize) -> (PageWriter<Arc<HeapRegion>>, PageReader<Arc<HeapRegion>>) {
        let writer = heap_page(payload_words).unwrap();
        let reader = PageReader::new(writer.region().clone()).unwrap();
        (writer, reader)
    }

    fn word(region: &HeapRegion, off: usize) -> &AtomicU64 {
        &region.words()[w(off)]
    }

    #[test]
    fn round_trip_counts_and_identity() {
        let (mut writer, reader) = page(5);
        let mut out = [0u64; 5];
        assert_eq!(reader.read(&mut out), Err(PageError::Empty));
        for k in 1..=20u64 {
            let payload: Vec<u64> = (0..5).map(|i| k * 100 + i).collect();
            assert_eq!(writer.publish(&payload).unwrap(), k);
            let read = reader.read(&mut out).unwrap();
            assert_eq!(out.to_vec(), payload);
            assert_eq!(
                read,
                PageRead {
                    seq: 2 * k,
                    publishes: k
                }
            );
        }
        assert_eq!(writer.publishes(), 20);
        assert_eq!(reader.writer_pid(), u64::from(std::process::id()));
        assert_eq!(reader.payload_words(), 5);
        let started = reader.writer_started_ns();
        assert!(started > 1_600_000_000_000_000_000, "start time is unix ns");
        assert!(reader.heartbeat_ns() >= started);
    }

    #[test]
    fn page_len_pads_the_payload_to_a_line() {
        assert_eq!(page_len(1), Ok(PAGE_HEADER_LEN + LINE));
        assert_eq!(page_len(16), Ok(PAGE_HEADER_LEN + LINE));
        assert_eq!(page_len(17), Ok(PAGE_HEADER_LEN + 2 * LINE));
        assert!(matches!(page_len(0), Err(PageError::BadField { .. })));
        assert!(matches!(
            page_len(MAX_PAYLOAD_WORDS + 1),
            Err(PageError::BadField { .. })
        ));
    }

    #[test]
    fn wrong_lengths_are_errors_and_write_nothing() {
        let (mut writer, reader) = page(4);
        writer.publish(&[7; 4]).unwrap();
        assert_eq!(
            writer.publish(&[1; 3]),
            Err(PageError::WrongLength {
                len: 3,
                expected: 4
            })
        );
        assert_eq!(
            writer.publish(&[1; 5]),
            Err(PageError::WrongLength {
                len: 5,
                expected: 4
            })
        );
        let mut out = [0u64; 4];
        assert_eq!(
            reader.read(&mut [0u64; 8]),
            Err(PageError::WrongLength {
                len: 8,
                expected: 4
            })
        );
        assert_eq!(reader.read(&mut out).unwrap().publishes, 1);
        assert_eq!(out, [7; 4]);
    }

    #[test]
    fn heartbeat_is_stamped_by_publish_and_by_heartbeat() {
        let (mut writer, reader) = page(1);
        writer.publish_at(&[1], 1_000).unwrap();
        assert_eq!(reader.heartbeat_ns(), 1_000);
        writer.heartbeat(2_000);
        assert_eq!(reader.heartbeat_ns(), 2_000);
        let before = crate::mapped::unix_now_ns();
        writer.publish(&[2]).unwrap();
        let stamped = reader.heartbeat_ns();
        // The TSC-derived stamp tracks the system clock closely; allow for calibration drift.
        assert!(
            stamped + 50_000_000 >= before && stamped <= crate::mapped::unix_now_ns() + 50_000_000,
            "heartbeat {stamped} vs now {before}"
        );
    }

    #[test]
    fn kill_word_is_independent_of_the_payload() {
        let region = Arc::new(HeapRegion::zeroed(page_len(2).unwrap()));
        let writer = PageWriter::init(region.clone(), 2, PageIdentity::default(), 9).unwrap();
        let reader = PageReader::new(region).unwrap();
        assert_eq!(
            reader.kill(),
            9,
            "initial kill value is in place before the version"
        );
        assert!(reader.killed());
        writer.set_kill(KILL_RELEASED);
        assert!(!reader.killed());
        writer.set_kill(3);
        assert_eq!(reader.kill(), 3);
        assert_eq!(reader.read(&mut [0; 2]), Err(PageError::Empty));
    }

    #[test]
    fn stuck_writer_gives_busy_quickly() {
        let (mut writer, reader) = page(8);
        writer.publish(&[5; 8]).unwrap();
        // A writer that died mid-publish: seq left odd.
        let seq = word(writer.region(), OFF_SEQ);
        seq.store(seq.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let mut out = [0u64; 8];
        let started = Instant::now();
        for _ in 0..1000 {
            assert_eq!(reader.read(&mut out), Err(PageError::Busy));
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "1000 busy reads took {took:?}"
        );
        let one_try = PageReader::new(writer.region().clone())
            .unwrap()
            .with_max_tries(0);
        assert_eq!(one_try.read(&mut out), Err(PageError::Busy));
    }

    #[test]
    fn header_validation() {
        let len = page_len(4).unwrap();
        let region = HeapRegion::zeroed(len);
        assert_eq!(
            PageReader::new(&region).err(),
            Some(PageError::VersionNotWritten)
        );
        assert_eq!(
            read_page_header(&region.words()[..10]),
            Err(PageError::TooSmall {
                len: 80,
                needed: PAGE_HEADER_LEN
            })
        );
        drop(
            PageWriter::init(
                &region,
                4,
                PageIdentity {
                    pid: 7,
                    start_ns: 8,
                },
                0,
            )
            .unwrap(),
        );
        let info = read_page_header(region.words()).unwrap();
        assert_eq!(info.payload_words, 4);
        assert_eq!(
            info.writer,
            PageIdentity {
                pid: 7,
                start_ns: 8
            }
        );
        // Truncated: header fine, payload cut off.
        assert_eq!(
            read_page_header(&region.words()[..w(PAGE_HEADER_LEN) + 2]),
            Err(PageError::TooSmall {
                len: PAGE_HEADER_LEN + 16,
                needed: len
            })
        );
        let set = |off: usize, v: u64| word(&region, off).store(v, Ordering::Relaxed);
        set(OFF_VERSION, 0);
        assert_eq!(
            read_page_header(region.words()),
            Err(PageError::VersionNotWritten)
        );
        set(OFF_VERSION, 2);
        assert_eq!(
            read_page_header(region.words()),
            Err(PageError::WrongVersion {
                found: 2,
                expected: PAGE_LAYOUT_VERSION
            })
        );
        set(OFF_VERSION, PAGE_LAYOUT_VERSION);
        set(OFF_PAYLOAD_WORDS, 1 << 40);
        assert!(matches!(
            read_page_header(region.words()),
            Err(PageError::BadField {
                field: "payload_words",
                ..
            })
        ));
        set(OFF_PAYLOAD_WORDS, 17);
        assert!(matches!(
            read_page_header(region.words()),
            Err(PageError::TooSmall { .. })
        ));
        set(OFF_PAYLOAD_WORDS, 4);
        set(OFF_HEADER_LEN, 4096);
        assert!(matches!(
            read_page_header(region.words()),
            Err(PageError::BadField {
                field: "header_len",
                ..
            })
        ));
        set(OFF_HEADER_LEN, PAGE_HEADER_LEN as u64);
        set(OFF_MAGIC, crate::layout::MAGIC);
        assert_eq!(
            read_page_header(region.words()),
            Err(PageError::WrongMagic {
                found: crate::layout::MAGIC
            })
        );
    }

    #[test]
    fn writer_refuses_a_region_too_small() {
        let region = HeapRegion::zeroed(page_len(16).unwrap());
        assert_eq!(
            PageWriter::init(&region, 17, PageIdentity::default(), 0).err(),
            Some(PageError::TooSmall {
                len: page_len(16).unwrap(),
                needed: page_len(17).unwrap()
            })
        );
        assert!(matches!(
            PageWriter::init(&region, 0, PageIdentity::default(), 0).err(),
            Some(PageError::BadField { .. })
        ));
    }

    /// Random header and seqlock words: attaching and reading may fail, never panic, and a
    /// successful read copies exactly the declared payload.
    #[test]
    fn hostile_pages_never_panic() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut attached = 0;
        for round in 0..5000 {
            let len = page_len(1 + (next() % 40) as usize).unwrap();
            let region = HeapRegion::zeroed(len);
            let words = region.words();
            let pick = |r: u64, choices: &[u64]| choices[(r % choices.len() as u64) as usize];
            let plausible = round % 2 == 0;
            let fields = [
                (OFF_MAGIC, [PAGE_MAGIC, 0, crate::layout::MAGIC]),
                (OFF_VERSION, [PAGE_LAYOUT_VERSION, 0, 2]),
                (OFF_HEADER_LEN, [PAGE_HEADER_LEN as u64, 0, 4096]),
                (OFF_PAYLOAD_WORDS, [next() % 48, u64::MAX, 1 << 33]),
                (OFF_SEQ, [next() % 16, u64::MAX, 1]),
            ];
            for (off, choices) in fields {
                let v = if plausible && next() % 4 != 0 {
                    choices[0]
                } else if next() % 2 == 0 {
                    pick(next(), &choices)
                } else {
                    next()
                };
                words[w(off)].store(v, Ordering::Relaxed);
            }
            if let Ok(reader) = PageReader::new(&region) {
                attached += 1;
                let n = reader.payload_words();
                assert!(page_len(n).unwrap() <= len);
                let mut out = vec![0u64; n];
                let _ = reader.read(&mut out);
                let _ = reader.kill();
                let _ = reader.heartbeat_ns();
            }
        }
        assert!(
            attached > 100,
            "the generator must also make valid pages ({attached})"
        );
    }
}
