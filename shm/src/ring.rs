//! The ring protocol: one writer, any number of lossy readers, over a region of atomic words.
//!
//! This module is safe code. It sees memory only as `&[AtomicU64]` through [`Region`], so the
//! same protocol runs over a file mapping in production and over a heap region under loom.
//!
//! # Protocol
//!
//! The writer never waits. To publish a frame at position `t` it:
//! 1. stores `tail_intent = t + len` (the furthest byte it is about to overwrite), then a Release
//!    fence;
//! 2. writes the frame's words (and a padding word when the frame would straddle the end);
//! 3. stores `latest = frame start` and `tail = t + len` with Release (the commit).
//!
//! A reader at `cursor` loads `tail` (Acquire). Equal means empty; more than a capacity ahead
//! means it was lapped. Otherwise it copies the frame with Relaxed loads, issues an Acquire fence
//! and loads `tail_intent`: if `tail_intent - cursor > capacity` the writer may have been writing
//! over the frame while it was copied, and the copy is discarded. This is a seqlock in which the
//! sequence is the byte position itself: if any word the reader copied came from a later frame,
//! the writer's Release fence synchronises with the reader's Acquire fence, so the reader must see
//! the intent that covers that write. A reader therefore never hands out a torn frame.
//!
//! When lapped, a reader jumps to `latest` (the start of the newest frame), reads its sequence
//! number and reports exactly `seq - expected` missed frames.

use crate::layout::{
    FRAME_HEADER_LEN, HEADER_LEN, KIND_DATA, KIND_PAD, LAYOUT_VERSION, MAGIC, MAX_CAPACITY,
    MIN_CAPACITY, OFF_CAPACITY, OFF_CONTENT_TAG, OFF_DATA_OFFSET, OFF_HEADER_LEN, OFF_HEARTBEAT_NS,
    OFF_LATEST, OFF_MAGIC, OFF_MAX_PAYLOAD, OFF_META_LEN, OFF_META_OFFSET, OFF_NEXT_SEQ, OFF_TAIL,
    OFF_TAIL_INTENT, OFF_VERSION, OFF_WRITER_PID, OFF_WRITER_START_NS, OFF_WRITER_STATE,
    READER_SLOTS, SLOT_ATTACH_NS, SLOT_CURSOR, SLOT_LAPS, SLOT_MISSED, SLOT_NEXT_SEQ, SLOT_PID,
    SLOTS_OFFSET, STATE_FINISHED, STATE_INIT, STATE_RUNNING, frame_len, pack_word0, page_align,
    unpack_word0, w,
};
use crate::sync::{AtomicU64, Ordering, fence};

/// Memory that holds a ring: a slice of 64-bit atomic words.
pub trait Region {
    /// The whole region as words. Must return the same slice on every call.
    fn words(&self) -> &[AtomicU64];
}

impl<R: Region + ?Sized> Region for &R {
    #[inline(always)]
    fn words(&self) -> &[AtomicU64] {
        (**self).words()
    }
}

impl<R: Region + ?Sized> Region for std::sync::Arc<R> {
    #[inline(always)]
    fn words(&self) -> &[AtomicU64] {
        (**self).words()
    }
}

/// A ring region on the heap: for tests, model checking and in-process use.
#[derive(Debug)]
pub struct HeapRegion {
    words: Box<[AtomicU64]>,
}

impl HeapRegion {
    /// A zeroed region of `len_bytes` (rounded up to a word).
    pub fn zeroed(len_bytes: usize) -> Self {
        let words = (0..len_bytes.div_ceil(8))
            .map(|_| AtomicU64::new(0))
            .collect();
        Self { words }
    }
}

impl Region for HeapRegion {
    #[inline(always)]
    fn words(&self) -> &[AtomicU64] {
        &self.words
    }
}

/// An in-process ring on the heap: its writer, and the header values readers attach with
/// (`RingReader::new(writer.region().clone(), info, start)`). For embedding the engine without
/// shared memory, and for tests.
///
/// # Errors
/// Invalid geometry.
pub fn heap_ring(
    capacity: usize,
    max_payload: usize,
    meta: &[u8],
    content_tag: u64,
) -> Result<(RingWriter<std::sync::Arc<HeapRegion>>, RingInfo), GeometryError> {
    let geometry = RingGeometry::new(capacity, max_payload, meta.len())?;
    let region = std::sync::Arc::new(HeapRegion::zeroed(geometry.total_len()));
    let identity = WriterIdentity {
        content_tag,
        pid: u64::from(std::process::id()),
        start_ns: 0,
    };
    // Cannot fail: the region was sized from the geometry and `meta` is its length.
    let writer =
        RingWriter::init(region, geometry, meta, identity, 0).map_err(|_| GeometryError {
            field: "meta_len",
            value: meta.len() as u64,
            reason: "header initialisation failed",
        })?;
    Ok((
        writer,
        RingInfo {
            geometry,
            writer: identity,
        },
    ))
}

/// Shape of a ring, validated by [`RingGeometry::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingGeometry {
    /// Bytes of the data area (a power of two).
    pub capacity: usize,
    /// Largest payload a frame may carry.
    pub max_payload: usize,
    /// Bytes of opaque metadata stored after the header.
    pub meta_len: usize,
}

/// A geometry value that cannot make a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid ring geometry: {field} = {value}: {reason}")]
pub struct GeometryError {
    /// The offending field.
    pub field: &'static str,
    /// Its value.
    pub value: u64,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl RingGeometry {
    /// Validates a geometry.
    ///
    /// # Errors
    /// A capacity that is not a power of two in `[64 B, 1 TiB]`, or a `max_payload` whose frame
    /// would not fit in a quarter of the data area (so a lapped reader can always resync).
    pub fn new(
        capacity: usize,
        max_payload: usize,
        meta_len: usize,
    ) -> Result<Self, GeometryError> {
        if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
            return Err(GeometryError {
                field: "capacity",
                value: capacity as u64,
                reason: "must be a power of two between 64 bytes and 1 TiB",
            });
        }
        if max_payload == 0
            || max_payload > u32::MAX as usize
            || frame_len(max_payload) > capacity / 2
        {
            return Err(GeometryError {
                field: "max_payload",
                value: max_payload as u64,
                reason: "must be non-zero and its frame at most half the capacity",
            });
        }
        if meta_len > MAX_CAPACITY {
            return Err(GeometryError {
                field: "meta_len",
                value: meta_len as u64,
                reason: "metadata larger than 1 TiB",
            });
        }
        Ok(Self {
            capacity,
            max_payload,
            meta_len,
        })
    }

    /// Offset of the data area.
    pub fn data_offset(&self) -> usize {
        HEADER_LEN + page_align(self.meta_len)
    }

    /// Total bytes a region needs.
    pub fn total_len(&self) -> usize {
        self.data_offset() + self.capacity
    }
}

/// Identity stamped into the header by the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterIdentity {
    /// Opaque tag telling readers what the payloads are (see `content` constants).
    pub content_tag: u64,
    /// The writer's process id.
    pub pid: u64,
    /// When the writer started, ns since the UNIX epoch.
    pub start_ns: u64,
}

/// Payload content tags.
pub mod content {
    /// Databento DBN records, byte for byte; the metadata area holds the encoded DBN metadata.
    pub const DBN: u64 = u64::from_le_bytes(*b"DBN\0\0\0\0\0");
    /// tickpipe signal records.
    pub const SIGNALS: u64 = u64::from_le_bytes(*b"TPSIGNAL");
}

/// Why a publish did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The payload is larger than the ring's `max_payload`.
    #[error("payload of {len} bytes exceeds the ring's max_payload of {max}")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The ring's limit.
        max: usize,
    },
}

/// Why a read returned no frame. Small and `Copy`: this is the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Nothing new has been published.
    #[error("ring empty")]
    Empty,
    /// The writer overwrote frames this reader had not read: exactly `missed` frames are lost.
    /// The reader has resynced to the newest frame, which the next read returns.
    #[error("reader lapped: {missed} frames missed")]
    Lapped {
        /// Frames lost.
        missed: u64,
    },
    /// The caller's buffer cannot hold the next frame (which stays unread).
    #[error("buffer too small: frame needs {needed} bytes")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
    },
    /// The region holds something the protocol cannot produce: a foreign writer, a reset or a
    /// corrupt file. The reader cannot continue safely.
    #[error("ring corrupt: {0}")]
    Corrupt(&'static str),
}

/// A frame handed out by a reader. The payload is in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// The frame's sequence number (0-based, +1 per frame).
    pub seq: u64,
    /// The writer's raw clock reading when it published.
    pub publish_ticks: u64,
    /// Payload bytes.
    pub len: usize,
}

/// The header values a reader relies on, read once at attach and never re-read, so a later
/// scribble on the header cannot move the reader's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingInfo {
    /// Layout geometry.
    pub geometry: RingGeometry,
    /// Writer identity.
    pub writer: WriterIdentity,
}

/// Why a region is not (yet) a readable ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderState {
    /// Region shorter than a header: the writer has not sized it yet.
    TooShortForHeader,
    /// Magic or version still zero: the writer is initialising.
    VersionNotWritten,
    /// The header is complete and consistent.
    Ready(RingInfo),
}

/// A header that no correct writer produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Not a tickpipe ring.
    #[error("bad magic {found:#018x} (expected \"TICKRING\")")]
    WrongMagic {
        /// What the file holds.
        found: u64,
    },
    /// A layout this build does not speak.
    #[error("layout version {found}, this build reads version {expected}")]
    WrongVersion {
        /// The file's version.
        found: u64,
        /// Ours.
        expected: u64,
    },
    /// The header claims more bytes than the region has.
    #[error("region is {len} bytes but the header needs {needed}")]
    TooSmall {
        /// Region length.
        len: usize,
        /// Length the header implies.
        needed: usize,
    },
    /// A field is out of range.
    #[error("header field {field} = {value} is invalid")]
    BadField {
        /// Field name.
        field: &'static str,
        /// Its value.
        value: u64,
    },
}

#[inline(always)]
fn load(words: &[AtomicU64], off: usize, order: Ordering) -> u64 {
    words[w(off)].load(order)
}

#[inline(always)]
fn store(words: &[AtomicU64], off: usize, value: u64, order: Ordering) {
    words[w(off)].store(value, order)
}

/// Reads and validates a ring header.
///
/// # Errors
/// [`HeaderError`] when the header is complete but impossible.
pub fn read_header(words: &[AtomicU64]) -> Result<HeaderState, HeaderError> {
    let len = words.len() * 8;
    if len < HEADER_LEN {
        return Ok(HeaderState::TooShortForHeader);
    }
    let magic = load(words, OFF_MAGIC, Ordering::Relaxed);
    if magic == 0 {
        return Ok(HeaderState::VersionNotWritten);
    }
    if magic != MAGIC {
        return Err(HeaderError::WrongMagic { found: magic });
    }
    // Acquire pairs with the writer's Release store of the version in `init_header`: every static
    // field below was written before it.
    let version = load(words, OFF_VERSION, Ordering::Acquire);
    if version == 0 {
        return Ok(HeaderState::VersionNotWritten);
    }
    if version != LAYOUT_VERSION {
        return Err(HeaderError::WrongVersion {
            found: version,
            expected: LAYOUT_VERSION,
        });
    }
    let field = |off, name: &'static str| {
        let v = load(words, off, Ordering::Relaxed);
        usize::try_from(v).map_err(|_| HeaderError::BadField {
            field: name,
            value: v,
        })
    };
    let expect = |off, name: &'static str, want: usize| match field(off, name)? {
        v if v == want => Ok(()),
        v => Err(HeaderError::BadField {
            field: name,
            value: v as u64,
        }),
    };
    expect(OFF_HEADER_LEN, "header_len", HEADER_LEN)?;
    let capacity = field(OFF_CAPACITY, "capacity")?;
    let max_payload = field(OFF_MAX_PAYLOAD, "max_payload")?;
    let meta_len = field(OFF_META_LEN, "meta_len")?;
    let geometry =
        RingGeometry::new(capacity, max_payload, meta_len).map_err(|e| HeaderError::BadField {
            field: e.field,
            value: e.value,
        })?;
    expect(OFF_META_OFFSET, "meta_offset", HEADER_LEN)?;
    expect(OFF_DATA_OFFSET, "data_offset", geometry.data_offset())?;
    if geometry.total_len() > len {
        return Err(HeaderError::TooSmall {
            len,
            needed: geometry.total_len(),
        });
    }
    let writer = WriterIdentity {
        content_tag: load(words, OFF_CONTENT_TAG, Ordering::Relaxed),
        pid: load(words, OFF_WRITER_PID, Ordering::Relaxed),
        start_ns: load(words, OFF_WRITER_START_NS, Ordering::Relaxed),
    };
    Ok(HeaderState::Ready(RingInfo { geometry, writer }))
}

/// Copies `bytes` into consecutive words starting at word `first`, zero-padding the last word.
#[inline(always)]
fn put_bytes(words: &[AtomicU64], first: usize, bytes: &[u8]) {
    // Indexed rather than zipped over a sub-slice: 258 vs 275 instructions per publish + read
    // of an MBO record under callgrind.
    let mut chunks = bytes.chunks_exact(8);
    let mut i = first;
    for chunk in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        words[i].store(u64::from_le_bytes(b), Ordering::Relaxed);
        i += 1;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        b[..rest.len()].copy_from_slice(rest);
        words[i].store(u64::from_le_bytes(b), Ordering::Relaxed);
    }
}

/// Copies `out.len()` bytes of words starting at word `first` into `out`.
#[inline(always)]
fn get_bytes(words: &[AtomicU64], first: usize, out: &mut [u8]) {
    let mut chunks = out.chunks_exact_mut(8);
    let mut i = first;
    for chunk in &mut chunks {
        chunk.copy_from_slice(&words[i].load(Ordering::Relaxed).to_le_bytes());
        i += 1;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let n = rest.len();
        rest.copy_from_slice(&words[i].load(Ordering::Relaxed).to_le_bytes()[..n]);
    }
}

/// The single writer of a ring.
#[derive(Debug)]
pub struct RingWriter<R: Region> {
    region: R,
    data_start: usize,
    capacity: u64,
    mask: u64,
    max_payload: usize,
    /// Writer-private copies of `tail` and `next_seq`: the writer never reads shared memory.
    tail: u64,
    seq: u64,
    finished: bool,
}

impl<R: Region> RingWriter<R> {
    /// Formats `region` as an empty ring and returns its writer. The version is written last, so
    /// a reader attaching meanwhile sees [`HeaderState::VersionNotWritten`].
    ///
    /// # Errors
    /// [`HeaderError::TooSmall`] when the region is shorter than `geometry.total_len()`.
    pub fn init(
        region: R,
        geometry: RingGeometry,
        meta: &[u8],
        identity: WriterIdentity,
        now_ns: u64,
    ) -> Result<Self, HeaderError> {
        let words = region.words();
        let len = words.len() * 8;
        if len < geometry.total_len() {
            return Err(HeaderError::TooSmall {
                len,
                needed: geometry.total_len(),
            });
        }
        if meta.len() != geometry.meta_len {
            return Err(HeaderError::BadField {
                field: "meta_len",
                value: meta.len() as u64,
            });
        }
        store(words, OFF_VERSION, 0, Ordering::Relaxed);
        store(words, OFF_MAGIC, MAGIC, Ordering::Relaxed);
        store(words, OFF_HEADER_LEN, HEADER_LEN as u64, Ordering::Relaxed);
        store(words, OFF_META_OFFSET, HEADER_LEN as u64, Ordering::Relaxed);
        store(words, OFF_META_LEN, meta.len() as u64, Ordering::Relaxed);
        store(
            words,
            OFF_DATA_OFFSET,
            geometry.data_offset() as u64,
            Ordering::Relaxed,
        );
        store(
            words,
            OFF_CAPACITY,
            geometry.capacity as u64,
            Ordering::Relaxed,
        );
        store(
            words,
            OFF_MAX_PAYLOAD,
            geometry.max_payload as u64,
            Ordering::Relaxed,
        );
        store(
            words,
            OFF_CONTENT_TAG,
            identity.content_tag,
            Ordering::Relaxed,
        );
        store(words, OFF_WRITER_PID, identity.pid, Ordering::Relaxed);
        store(
            words,
            OFF_WRITER_START_NS,
            identity.start_ns,
            Ordering::Relaxed,
        );
        for off in [OFF_TAIL_INTENT, OFF_TAIL, OFF_LATEST, OFF_NEXT_SEQ] {
            store(words, off, 0, Ordering::Relaxed);
        }
        store(words, OFF_HEARTBEAT_NS, now_ns, Ordering::Relaxed);
        put_bytes(words, w(HEADER_LEN), meta);
        store(words, OFF_WRITER_STATE, STATE_RUNNING, Ordering::Relaxed);
        // Release pairs with the Acquire load of the version in `read_header`: a reader that sees
        // the version sees every field above.
        store(words, OFF_VERSION, LAYOUT_VERSION, Ordering::Release);
        let data_start = w(geometry.data_offset());
        Ok(Self {
            region,
            data_start,
            capacity: geometry.capacity as u64,
            mask: geometry.capacity as u64 - 1,
            max_payload: geometry.max_payload,
            tail: 0,
            seq: 0,
            finished: false,
        })
    }

    /// Publishes one frame and returns its sequence number. Never waits.
    ///
    /// # Errors
    /// [`WriteError::TooLarge`] when `payload` exceeds `max_payload`; nothing is written.
    #[inline]
    pub fn publish(&mut self, payload: &[u8], publish_ticks: u64) -> Result<u64, WriteError> {
        if payload.len() > self.max_payload {
            return Err(WriteError::TooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        let words = self.region.words();
        let flen = frame_len(payload.len()) as u64;
        let off = self.tail & self.mask;
        let to_end = self.capacity - off;
        let (frame_pos, new_tail) = if flen > to_end {
            (self.tail + to_end, self.tail + to_end + flen)
        } else {
            (self.tail, self.tail + flen)
        };
        store(
            words,
            crate::layout::OFF_TAIL_INTENT,
            new_tail,
            Ordering::Relaxed,
        );
        // Release fence pairs with the reader's Acquire fence before it loads `tail_intent`: a
        // reader that copies any word written below is guaranteed to see this intent.
        fence(Ordering::Release);
        if frame_pos != self.tail {
            words[self.data_start + w(off as usize)]
                .store(pack_word0(to_end as u32, KIND_PAD), Ordering::Relaxed);
        }
        let base = self.data_start + w((frame_pos & self.mask) as usize);
        let seq = self.seq;
        words[base].store(
            pack_word0(payload.len() as u32, KIND_DATA),
            Ordering::Relaxed,
        );
        words[base + 1].store(seq, Ordering::Relaxed);
        words[base + 2].store(publish_ticks, Ordering::Relaxed);
        put_bytes(words, base + 3, payload);
        // Release pairs with the Acquire load of `latest` in a lapped reader's resync.
        store(words, OFF_LATEST, frame_pos, Ordering::Release);
        store(words, OFF_NEXT_SEQ, seq + 1, Ordering::Relaxed);
        // The commit. Release pairs with the reader's Acquire load of `tail`.
        store(words, OFF_TAIL, new_tail, Ordering::Release);
        self.tail = new_tail;
        self.seq = seq + 1;
        Ok(seq)
    }

    /// Records that the writer is alive at `now_ns` (ns since the UNIX epoch). Call it from the
    /// writer's loop at a steady cadence, including when idle; readers judge staleness by it.
    #[inline]
    pub fn heartbeat(&self, now_ns: u64) {
        store(
            self.region.words(),
            OFF_HEARTBEAT_NS,
            now_ns,
            Ordering::Relaxed,
        );
    }

    /// Marks the stream finished: readers drain what is left and then see the end.
    pub fn finish(&mut self) {
        if !self.finished {
            // Release pairs with the Acquire load in `RingReader::writer_state`: a reader that
            // sees FINISHED also sees the final `tail`.
            store(
                self.region.words(),
                OFF_WRITER_STATE,
                STATE_FINISHED,
                Ordering::Release,
            );
            self.finished = true;
        }
    }

    /// Frames published so far.
    pub fn published(&self) -> u64 {
        self.seq
    }

    /// Byte position of the next frame.
    pub fn position(&self) -> u64 {
        self.tail
    }

    /// The region.
    pub fn region(&self) -> &R {
        &self.region
    }
}

impl<R: Region> Drop for RingWriter<R> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAt {
    /// The oldest frame still in the ring when that is knowable (the ring has not wrapped yet);
    /// otherwise the newest, counting everything before it as missed.
    #[default]
    Oldest,
    /// Only frames published after attaching.
    Tail,
}

/// Writer liveness as published in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterState {
    /// Initialising.
    Init,
    /// Publishing.
    Running,
    /// Closed the ring: the stream ends at the current tail.
    Finished,
    /// A value no writer stores.
    Unknown(u64),
}

/// Header counters as a reader sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterStatus {
    /// Next byte position the writer will publish at.
    pub tail: u64,
    /// Frames published.
    pub published: u64,
    /// Last heartbeat, ns since the UNIX epoch.
    pub heartbeat_ns: u64,
    /// Liveness.
    pub state: WriterState,
}

/// A reader's slot in the header page, as seen by `ring stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderSlot {
    /// Slot index.
    pub index: usize,
    /// The reader's pid.
    pub pid: u64,
    /// Its byte position.
    pub cursor: u64,
    /// The sequence number it expects next.
    pub next_seq: u64,
    /// Frames it lost to laps.
    pub missed: u64,
    /// Times it was lapped.
    pub laps: u64,
    /// When it attached, ns since the UNIX epoch.
    pub attach_ns: u64,
}

fn slot_off(index: usize, field: usize) -> usize {
    SLOTS_OFFSET + index * crate::layout::LINE + field
}

/// Reads the writer's counters.
pub fn writer_status(words: &[AtomicU64]) -> WriterStatus {
    // Acquire pairs with the Release in `RingWriter::finish`.
    let state = match load(words, OFF_WRITER_STATE, Ordering::Acquire) {
        STATE_INIT => WriterState::Init,
        STATE_RUNNING => WriterState::Running,
        STATE_FINISHED => WriterState::Finished,
        other => WriterState::Unknown(other),
    };
    WriterStatus {
        // Acquire pairs with the commit store in `publish`.
        tail: load(words, OFF_TAIL, Ordering::Acquire),
        published: load(words, OFF_NEXT_SEQ, Ordering::Relaxed),
        heartbeat_ns: load(words, OFF_HEARTBEAT_NS, Ordering::Relaxed),
        state,
    }
}

/// The claimed reader slots (pid non-zero).
pub fn reader_slots(words: &[AtomicU64]) -> Vec<ReaderSlot> {
    (0..READER_SLOTS)
        .filter_map(|index| {
            let get = |field| load(words, slot_off(index, field), Ordering::Relaxed);
            let pid = get(SLOT_PID);
            (pid != 0).then(|| ReaderSlot {
                index,
                pid,
                cursor: get(SLOT_CURSOR),
                next_seq: get(SLOT_NEXT_SEQ),
                missed: get(SLOT_MISSED),
                laps: get(SLOT_LAPS),
                attach_ns: get(SLOT_ATTACH_NS),
            })
        })
        .collect()
}

/// Frees a slot whose owner is gone (for `ring stat --reap` and slot reuse).
pub fn release_slot(words: &[AtomicU64], index: usize, pid: u64) -> bool {
    index < READER_SLOTS
        && words[w(slot_off(index, SLOT_PID))]
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
}

/// Claims a free reader slot for `pid`. Slots are advisory (they feed `ring stat`), so a full
/// table is not an error: the reader just runs unlisted.
pub fn claim_slot(words: &[AtomicU64], pid: u64, now_ns: u64) -> Option<usize> {
    (0..READER_SLOTS).find(|&index| {
        // AcqRel: the claim orders after any previous owner's release of the slot.
        let claimed = words[w(slot_off(index, SLOT_PID))]
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if claimed {
            for f in [SLOT_CURSOR, SLOT_NEXT_SEQ, SLOT_MISSED, SLOT_LAPS] {
                store(words, slot_off(index, f), 0, Ordering::Relaxed);
            }
            store(
                words,
                slot_off(index, SLOT_ATTACH_NS),
                now_ns,
                Ordering::Relaxed,
            );
        }
        claimed
    })
}

/// A reader of a ring. Readers never write the writer's lines; each may own one slot line.
#[derive(Debug)]
pub struct RingReader<R: Region> {
    region: R,
    info: RingInfo,
    data_start: usize,
    capacity: u64,
    mask: u64,
    cursor: u64,
    next_seq: u64,
    missed: u64,
    laps: u64,
    slot: Option<(usize, u64)>,
}

/// The first word of a frame, decoded and bounds-checked.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Word index of the frame in the region.
    base: usize,
    payload_len: usize,
    kind: u16,
    flen: u64,
    /// Bytes from the frame to the end of the data area.
    room: u64,
    in_bounds: bool,
}

/// How many times a resync retries when the writer keeps lapping it before the newest frame can
/// be read; each try is bounded work, so a reader never spins unboundedly inside one call.
const RESYNC_TRIES: usize = 64;

impl<R: Region> RingReader<R> {
    /// Attaches to a ring whose header has been validated by [`read_header`].
    pub fn new(region: R, info: RingInfo, start: StartAt) -> Self {
        let words = region.words();
        let status = writer_status(words);
        let capacity = info.geometry.capacity as u64;
        let mut reader = Self {
            data_start: w(info.geometry.data_offset()),
            region,
            info,
            capacity,
            mask: capacity - 1,
            cursor: 0,
            next_seq: 0,
            missed: 0,
            laps: 0,
            slot: None,
        };
        match start {
            StartAt::Oldest if status.tail <= capacity => {}
            StartAt::Oldest => {
                // Frame boundaries before `latest` are unknowable once wrapped; the first read
                // resyncs and reports every earlier frame as missed.
                reader.cursor = status.tail.saturating_sub(capacity + 1);
            }
            StartAt::Tail => {
                reader.cursor = status.tail;
                reader.next_seq = status.published;
            }
        }
        reader
    }

    /// Publishes this reader's progress in slot `index` (claimed with [`claim_slot`] for `pid`).
    pub fn set_slot(&mut self, index: usize, pid: u64) {
        self.slot = Some((index, pid));
        self.update_slot(true);
    }

    #[inline(always)]
    fn update_slot(&self, full: bool) {
        if let Some((index, _)) = self.slot {
            let words = self.region.words();
            store(
                words,
                slot_off(index, SLOT_CURSOR),
                self.cursor,
                Ordering::Relaxed,
            );
            store(
                words,
                slot_off(index, SLOT_NEXT_SEQ),
                self.next_seq,
                Ordering::Relaxed,
            );
            if full {
                store(
                    words,
                    slot_off(index, SLOT_MISSED),
                    self.missed,
                    Ordering::Relaxed,
                );
                store(
                    words,
                    slot_off(index, SLOT_LAPS),
                    self.laps,
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// Reads the next frame into `out` without waiting.
    ///
    /// # Errors
    /// [`ReadError::Empty`] when caught up; [`ReadError::Lapped`] once per lap with the exact
    /// number of frames lost (the next call returns the newest frame);
    /// [`ReadError::BufferTooSmall`] (the frame stays unread); [`ReadError::Corrupt`] when the
    /// region holds what no writer produces.
    #[inline]
    pub fn try_read(&mut self, out: &mut [u8]) -> Result<FrameInfo, ReadError> {
        let words = self.region.words();
        // Acquire pairs with the writer's commit (Release store of `tail`).
        let tail = load(words, OFF_TAIL, Ordering::Acquire);
        // A padding frame is followed by a data frame at offset 0: at most two steps.
        for _ in 0..2 {
            if self.cursor == tail {
                return Err(ReadError::Empty);
            }
            if tail < self.cursor {
                return Err(ReadError::Corrupt("writer position moved backwards"));
            }
            if tail - self.cursor > self.capacity {
                return Err(self.resync());
            }
            let Frame {
                base,
                payload_len,
                kind,
                flen,
                room,
                in_bounds,
            } = self.frame_at(words, self.cursor);
            let (mut seq, mut publish_ticks, mut copied) = (0, 0, false);
            if kind == KIND_DATA && in_bounds {
                // A data frame in bounds has its two header words and payload inside the area.
                seq = words[base + 1].load(Ordering::Relaxed);
                publish_ticks = words[base + 2].load(Ordering::Relaxed);
                if payload_len <= out.len() {
                    get_bytes(words, base + 3, &mut out[..payload_len]);
                    copied = true;
                }
            }
            // Acquire fence pairs with the writer's Release fence after its `tail_intent` store:
            // if anything above came from a newer frame, the load below sees the newer intent.
            fence(Ordering::Acquire);
            let intent = load(words, OFF_TAIL_INTENT, Ordering::Relaxed);
            if intent.wrapping_sub(self.cursor) > self.capacity {
                return Err(self.resync());
            }
            // Validated: everything read above is a frame the writer committed.
            if !in_bounds {
                return Err(ReadError::Corrupt("frame header out of bounds"));
            }
            // The commit that moved `tail` past the cursor covered this whole frame (a padding
            // frame: up to the end of the area).
            if (if kind == KIND_PAD { room } else { flen }) > tail - self.cursor {
                return Err(ReadError::Corrupt("frame extends past the committed tail"));
            }
            if kind == KIND_PAD {
                self.cursor += room;
                continue;
            }
            if !copied {
                return Err(ReadError::BufferTooSmall {
                    needed: payload_len,
                });
            }
            if seq != self.next_seq {
                return Err(ReadError::Corrupt("frame sequence out of order"));
            }
            let Some(next_seq) = seq.checked_add(1) else {
                return Err(ReadError::Corrupt("frame sequence number overflows"));
            };
            self.cursor += flen;
            self.next_seq = next_seq;
            self.update_slot(false);
            return Ok(FrameInfo {
                seq,
                publish_ticks,
                len: payload_len,
            });
        }
        Err(ReadError::Corrupt("padding frame not followed by data"))
    }

    /// Decodes the first word of the frame at `pos` and checks it against the area's bounds.
    #[inline(always)]
    fn frame_at(&self, words: &[AtomicU64], pos: u64) -> Frame {
        let off = pos & self.mask;
        let base = self.data_start + w(off as usize);
        let (payload_len, kind) = unpack_word0(words[base].load(Ordering::Relaxed));
        let room = self.capacity - off;
        let flen = frame_len(payload_len) as u64;
        // Every index a caller derives from an in-bounds frame stays inside the data area,
        // whatever the region holds.
        let in_bounds = match kind {
            KIND_DATA => payload_len <= self.info.geometry.max_payload && flen <= room,
            KIND_PAD => payload_len as u64 == room,
            _ => false,
        };
        Frame {
            base,
            payload_len,
            kind,
            flen,
            room,
            in_bounds,
        }
    }

    /// Reads up to `max_frames` frames with a single validation: the committed frames are copied
    /// (header and payload, as they lie in the ring) into `scratch`, validated once against the
    /// writer's intent, then handed to `on_frame` in order. Draining many frames this way costs
    /// one read of the writer's hot line per batch instead of per frame.
    ///
    /// Returns the number of frames handed out.
    ///
    /// # Errors
    /// As [`RingReader::try_read`]; [`ReadError::BufferTooSmall`] when not even the first frame
    /// fits in `scratch`. A lap discards the whole batch (none of it is handed out).
    #[inline]
    pub fn read_batch(
        &mut self,
        scratch: &mut [u8],
        max_frames: usize,
        mut on_frame: impl FnMut(FrameInfo, &[u8]),
    ) -> Result<usize, ReadError> {
        let words = self.region.words();
        // Acquire pairs with the writer's commit (Release store of `tail`).
        let tail = load(words, OFF_TAIL, Ordering::Acquire);
        // The same checks as in `try_read`, written out: a shared `&mut self` helper forces the
        // region to be re-borrowed and cost 11 instructions per record under callgrind.
        if self.cursor == tail {
            return Err(ReadError::Empty);
        }
        if tail < self.cursor {
            return Err(ReadError::Corrupt("writer position moved backwards"));
        }
        if tail - self.cursor > self.capacity {
            return Err(self.resync());
        }
        let (mut pos, mut used, mut frames) = (self.cursor, 0usize, 0usize);
        let mut stop: Option<ReadError> = None;
        while pos < tail && frames < max_frames {
            let f = self.frame_at(words, pos);
            if !f.in_bounds {
                stop = Some(ReadError::Corrupt("frame header out of bounds"));
                break;
            }
            // As in `try_read`: a committed frame ends at or before the committed tail.
            if (if f.kind == KIND_PAD { f.room } else { f.flen }) > tail - pos {
                stop = Some(ReadError::Corrupt("frame extends past the committed tail"));
                break;
            }
            if f.kind == KIND_PAD {
                pos += f.room;
                continue;
            }
            let flen = f.flen as usize;
            if used + flen > scratch.len() {
                stop = Some(ReadError::BufferTooSmall { needed: flen });
                break;
            }
            get_bytes(words, f.base, &mut scratch[used..used + flen]);
            used += flen;
            pos += f.flen;
            frames += 1;
        }
        // Same seqlock validation as `try_read`, once for the whole span [cursor, pos).
        fence(Ordering::Acquire);
        let intent = load(words, OFF_TAIL_INTENT, Ordering::Relaxed);
        if intent.wrapping_sub(self.cursor) > self.capacity {
            return Err(self.resync());
        }
        if frames == 0 {
            // Validated: what stopped the walk is real (or only padding was committed).
            self.cursor = pos;
            return stop.map_or(Err(ReadError::Empty), Err);
        }
        let mut at = 0;
        for _ in 0..frames {
            let word = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&scratch[at + 8 * i..at + 8 * i + 8]);
                u64::from_le_bytes(b)
            };
            let (len, _) = unpack_word0(word(0));
            let (seq, publish_ticks) = (word(1), word(2));
            if seq != self.next_seq {
                return Err(ReadError::Corrupt("frame sequence out of order"));
            }
            let Some(next_seq) = seq.checked_add(1) else {
                return Err(ReadError::Corrupt("frame sequence number overflows"));
            };
            let start = at + FRAME_HEADER_LEN;
            on_frame(
                FrameInfo {
                    seq,
                    publish_ticks,
                    len,
                },
                &scratch[start..start + len],
            );
            self.next_seq = next_seq;
            at += frame_len(len);
        }
        self.cursor = pos;
        self.update_slot(false);
        Ok(frames)
    }

    /// Jumps to the newest frame after a lap and counts what was lost.
    #[cold]
    fn resync(&mut self) -> ReadError {
        let words = self.region.words();
        for _ in 0..RESYNC_TRIES {
            // Acquire pairs with the writer's Release store of `latest`: the frame it names is
            // fully written.
            let latest = load(words, OFF_LATEST, Ordering::Acquire);
            if !latest.is_multiple_of(8)
                || (latest & self.mask) + FRAME_HEADER_LEN as u64 > self.capacity
            {
                return ReadError::Corrupt("newest-frame position out of bounds");
            }
            // The newest frame never starts before the reader's cursor: the cursor is behind the
            // tail the reader loaded, and `latest`, loaded after it, names a frame at or after
            // every frame boundary below that tail. (It may be the cursor's own frame, being
            // overwritten: the validation below then retries.) Jumping back would re-read or
            // loop.
            if latest < self.cursor {
                return ReadError::Corrupt("newest frame is behind the reader");
            }
            let base = self.data_start + w((latest & self.mask) as usize);
            let seq = words[base + 1].load(Ordering::Relaxed);
            // Same seqlock validation as `try_read`.
            fence(Ordering::Acquire);
            let intent = load(words, OFF_TAIL_INTENT, Ordering::Relaxed);
            if intent.wrapping_sub(latest) > self.capacity {
                continue;
            }
            if seq < self.next_seq {
                return ReadError::Corrupt("newest frame is older than the reader");
            }
            let missed = seq - self.next_seq;
            self.cursor = latest;
            self.next_seq = seq;
            self.missed += missed;
            self.laps += 1;
            self.update_slot(true);
            return ReadError::Lapped { missed };
        }
        // The writer lapped the newest frame every time we looked; report no loss yet and let the
        // caller try again (its next call resyncs again).
        ReadError::Lapped { missed: 0 }
    }

    /// Writer counters and liveness.
    pub fn writer_status(&self) -> WriterStatus {
        writer_status(self.region.words())
    }

    /// True when the writer finished and everything it published has been read.
    pub fn is_finished(&self) -> bool {
        let status = self.writer_status();
        status.state == WriterState::Finished && status.tail == self.cursor
    }

    /// The header values read at attach.
    pub fn info(&self) -> &RingInfo {
        &self.info
    }

    /// Copies the metadata area.
    pub fn metadata(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.info.geometry.meta_len];
        get_bytes(self.region.words(), w(HEADER_LEN), &mut out);
        out
    }

    /// Byte position of the next frame to read.
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// The sequence number this reader expects next.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Total frames lost to laps.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// Times lapped.
    pub fn laps(&self) -> u64 {
        self.laps
    }

    /// The region.
    pub fn region(&self) -> &R {
        &self.region
    }
}

impl<R: Region> Drop for RingReader<R> {
    fn drop(&mut self) {
        if let Some((index, pid)) = self.slot {
            self.update_slot(true);
            release_slot(self.region.words(), index, pid);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ring(
        capacity: usize,
        max_payload: usize,
    ) -> (RingWriter<Arc<HeapRegion>>, RingReader<Arc<HeapRegion>>) {
        let geometry = RingGeometry::new(capacity, max_payload, 3).unwrap();
        let region = Arc::new(HeapRegion::zeroed(geometry.total_len()));
        let writer = RingWriter::init(
            region.clone(),
            geometry,
            b"abc",
            WriterIdentity::default(),
            1,
        )
        .unwrap();
        let HeaderState::Ready(info) = read_header(region.words()).unwrap() else {
            panic!("not ready")
        };
        let reader = RingReader::new(region, info, StartAt::Oldest);
        (writer, reader)
    }

    fn payload(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    #[test]
    fn header_round_trip_and_metadata() {
        let (_w, r) = ring(4096, 64);
        assert_eq!(r.info().geometry.capacity, 4096);
        assert_eq!(r.metadata(), b"abc");
        assert_eq!(r.writer_status().state, WriterState::Running);
    }

    #[test]
    fn reads_in_order_with_wrap_and_odd_lengths() {
        let (mut w, mut r) = ring(256, 40);
        let mut buf = [0u8; 64];
        for seq in 0..1000u64 {
            let len = (seq % 41) as usize;
            let p = payload(seq, len);
            assert_eq!(w.publish(&p, seq * 10).unwrap(), seq);
            let f = r.try_read(&mut buf).unwrap();
            assert_eq!((f.seq, f.publish_ticks, f.len), (seq, seq * 10, len));
            assert_eq!(&buf[..len], &p[..]);
            assert_eq!(r.try_read(&mut buf), Err(ReadError::Empty));
        }
    }

    #[test]
    fn lapped_reader_reports_exact_loss() {
        let (mut w, mut r) = ring(256, 8);
        let mut buf = [0u8; 8];
        // Frames are 32 bytes: 8 fit; publish 20 unread.
        for seq in 0..20u64 {
            w.publish(&seq.to_le_bytes(), 0).unwrap();
        }
        assert_eq!(r.try_read(&mut buf), Err(ReadError::Lapped { missed: 19 }));
        let f = r.try_read(&mut buf).unwrap();
        assert_eq!(f.seq, 19);
        assert_eq!(u64::from_le_bytes(buf), 19);
        assert_eq!(r.try_read(&mut buf), Err(ReadError::Empty));
        assert_eq!((r.missed(), r.laps()), (19, 1));
    }

    #[test]
    fn oversized_and_small_buffer() {
        let (mut w, mut r) = ring(256, 16);
        assert_eq!(
            w.publish(&[0; 17], 0),
            Err(WriteError::TooLarge { len: 17, max: 16 })
        );
        w.publish(&[7; 16], 0).unwrap();
        let mut small = [0u8; 8];
        assert_eq!(
            r.try_read(&mut small),
            Err(ReadError::BufferTooSmall { needed: 16 })
        );
        let mut big = [0u8; 16];
        assert_eq!(r.try_read(&mut big).unwrap().len, 16);
    }

    #[test]
    fn finish_is_seen_after_drain() {
        let (mut w, mut r) = ring(256, 8);
        w.publish(&[1; 8], 0).unwrap();
        w.finish();
        assert!(!r.is_finished());
        let mut buf = [0u8; 8];
        r.try_read(&mut buf).unwrap();
        assert!(r.is_finished());
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let geometry = RingGeometry::new(256, 8, 0).unwrap();
        let region = HeapRegion::zeroed(geometry.total_len());
        assert_eq!(
            read_header(region.words()),
            Ok(HeaderState::VersionNotWritten)
        );
        assert_eq!(
            read_header(&region.words()[..10]),
            Ok(HeaderState::TooShortForHeader)
        );
        drop(RingWriter::init(&region, geometry, &[], WriterIdentity::default(), 0).unwrap());
        region.words()[w(OFF_VERSION)].store(9, Ordering::Relaxed);
        assert!(matches!(
            read_header(region.words()),
            Err(HeaderError::WrongVersion { found: 9, .. })
        ));
        region.words()[w(OFF_VERSION)].store(LAYOUT_VERSION, Ordering::Relaxed);
        region.words()[w(OFF_CAPACITY)].store(1 << 20, Ordering::Relaxed);
        assert!(matches!(
            read_header(region.words()),
            Err(HeaderError::TooSmall { .. })
        ));
        region.words()[w(OFF_CAPACITY)].store(100, Ordering::Relaxed);
        assert!(matches!(
            read_header(region.words()),
            Err(HeaderError::BadField {
                field: "capacity",
                ..
            })
        ));
        region.words()[w(OFF_MAGIC)].store(42, Ordering::Relaxed);
        assert!(matches!(
            read_header(region.words()),
            Err(HeaderError::WrongMagic { found: 42 })
        ));
    }

    #[test]
    fn corrupt_frame_lengths_are_reported() {
        let (mut w, mut r) = ring(256, 8);
        w.publish(&[1; 8], 0).unwrap();
        let data = w.region().words().len() - 256 / 8;
        w.region().words()[data].store(pack_word0(1 << 30, KIND_DATA), Ordering::Relaxed);
        let mut buf = [0u8; 8];
        assert_eq!(
            r.try_read(&mut buf),
            Err(ReadError::Corrupt("frame header out of bounds"))
        );
    }

    /// Found by the `ring_reader` fuzz target: a header whose tail is far ahead (the reader is
    /// lapped at once) while `latest` names position 0. Resyncing to it moved the reader back,
    /// and it would have re-read the ring from the start.
    #[test]
    fn resync_never_moves_the_reader_back() {
        let (_w, r) = ring(128, 16);
        let words = r.region().clone();
        drop(r);
        let tail = (1u64 << 39) + 32;
        for (off, v) in [(OFF_TAIL_INTENT, 32), (OFF_TAIL, tail), (OFF_LATEST, 0)] {
            words.words()[w(off)].store(v, Ordering::Relaxed);
        }
        let HeaderState::Ready(info) = read_header(words.words()).unwrap() else {
            panic!("not ready")
        };
        let mut buf = [0u8; 16];
        let mut r = RingReader::new(words.clone(), info, StartAt::Oldest);
        let before = r.position();
        assert_eq!(
            r.try_read(&mut buf),
            Err(ReadError::Corrupt("newest frame is behind the reader"))
        );
        assert_eq!(r.position(), before);
        let mut r = RingReader::new(words, info, StartAt::Oldest);
        let mut scratch = [0u8; 64];
        assert_eq!(
            r.read_batch(&mut scratch, 4, |_, _| panic!("no frame")),
            Err(ReadError::Corrupt("newest frame is behind the reader"))
        );
        assert_eq!(r.position(), before);
    }

    /// A frame header claiming more bytes than the writer committed: handing it out would give
    /// the reader bytes no publish wrote, and put its cursor past the tail.
    #[test]
    fn frame_past_the_committed_tail_is_corrupt() {
        let (mut w, r) = ring(256, 32);
        drop(r);
        w.publish(&[5; 8], 0).unwrap();
        let data = w.region().words().len() - 256 / 8;
        w.region().words()[data].store(pack_word0(16, KIND_DATA), Ordering::Relaxed);
        let region = w.region().clone();
        let HeaderState::Ready(info) = read_header(region.words()).unwrap() else {
            panic!("not ready")
        };
        let mut r = RingReader::new(region.clone(), info, StartAt::Oldest);
        let mut buf = [0u8; 32];
        assert_eq!(
            r.try_read(&mut buf),
            Err(ReadError::Corrupt("frame extends past the committed tail"))
        );
        assert_eq!(r.position(), 0);
        let mut r = RingReader::new(region, info, StartAt::Oldest);
        let mut scratch = [0u8; 128];
        assert_eq!(
            r.read_batch(&mut scratch, 4, |_, _| panic!("no frame")),
            Err(ReadError::Corrupt("frame extends past the committed tail"))
        );
    }

    /// A sequence number of `u64::MAX` cannot be followed: the reader says so instead of
    /// overflowing.
    #[test]
    fn last_sequence_number_is_corrupt() {
        let (mut writer, r) = ring(256, 8);
        drop(r);
        let words = writer.region().clone();
        words.words()[w(OFF_NEXT_SEQ)].store(u64::MAX, Ordering::Relaxed);
        let HeaderState::Ready(info) = read_header(words.words()).unwrap() else {
            panic!("not ready")
        };
        let mut tail_reader = RingReader::new(words.clone(), info, StartAt::Tail);
        let mut batch_reader = RingReader::new(words.clone(), info, StartAt::Tail);
        writer.publish(&[1; 8], 0).unwrap();
        let data = words.words().len() - 256 / 8;
        words.words()[data + 1].store(u64::MAX, Ordering::Relaxed);
        let mut buf = [0u8; 8];
        assert_eq!(
            tail_reader.try_read(&mut buf),
            Err(ReadError::Corrupt("frame sequence number overflows"))
        );
        let mut scratch = [0u8; 64];
        assert_eq!(
            batch_reader.read_batch(&mut scratch, 4, |_, _| panic!("no frame")),
            Err(ReadError::Corrupt("frame sequence number overflows"))
        );
    }

    #[test]
    fn slots_claim_and_release() {
        let (_w, mut r) = ring(256, 8);
        let words = r.region().clone();
        let idx = claim_slot(words.words(), 77, 5).unwrap();
        r.set_slot(idx, 77);
        assert_eq!(reader_slots(words.words())[0].pid, 77);
        drop(r);
        assert!(reader_slots(words.words()).is_empty());
    }

    /// Ring against a reference log under random publish/read interleavings: every frame the
    /// reader returns is the one published under that sequence number, sequence numbers only
    /// grow, a reader that keeps up is never lapped, and every frame is delivered or counted.
    #[test]
    fn matches_reference_log() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..50 {
            let (mut w, mut r) = ring(512, 48);
            let mut log: Vec<Vec<u8>> = Vec::new();
            let mut buf = [0u8; 48];
            let mut delivered = 0u64;
            let mut last_seq = None;
            // Odd rounds read more than they write, so the reader keeps up and must see no laps.
            let write_odds = if round % 2 == 0 { 3 } else { 2 };
            for _ in 0..2000 {
                if next() % write_odds != 0 && (round % 2 == 0 || w.position() - r.position() < 256)
                {
                    let len = (next() % 49) as usize;
                    let p = payload(log.len() as u64, len);
                    w.publish(&p, 0).unwrap();
                    log.push(p);
                } else if next() % 2 == 0 {
                    // Batch reads with a scratch buffer of 1 to ~4 frames and a random cap.
                    let mut scratch = vec![0u8; 72 + (next() % 220) as usize];
                    let max = 1 + (next() % 5) as usize;
                    let mut seen = Vec::new();
                    match r.read_batch(&mut scratch, max, |f, p| seen.push((f, p.to_vec()))) {
                        Ok(n) => {
                            assert!(n == seen.len() && n <= max);
                            for (f, p) in seen {
                                assert_eq!(p, log[f.seq as usize]);
                                assert!(last_seq.is_none_or(|s| f.seq > s));
                                last_seq = Some(f.seq);
                                delivered += 1;
                            }
                        }
                        Err(ReadError::Empty) => assert_eq!(r.next_seq(), log.len() as u64),
                        Err(ReadError::Lapped { .. }) => {
                            assert_eq!(round % 2, 0, "lapped while keeping up")
                        }
                        Err(ReadError::BufferTooSmall { needed }) => {
                            assert!(needed > scratch.len())
                        }
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    match r.try_read(&mut buf) {
                        Ok(f) => {
                            assert_eq!(&buf[..f.len], &log[f.seq as usize][..]);
                            assert!(last_seq.is_none_or(|s| f.seq > s));
                            last_seq = Some(f.seq);
                            delivered += 1;
                        }
                        Err(ReadError::Empty) => assert_eq!(r.next_seq(), log.len() as u64),
                        Err(ReadError::Lapped { .. }) => {
                            assert_eq!(round % 2, 0, "lapped while keeping up")
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            loop {
                match r.try_read(&mut buf) {
                    Ok(_) => delivered += 1,
                    Err(ReadError::Lapped { .. }) => {}
                    Err(ReadError::Empty) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(
                delivered + r.missed(),
                log.len() as u64,
                "every frame delivered or counted missed"
            );
        }
    }
}
