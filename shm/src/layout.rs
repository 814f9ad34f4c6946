//! Byte layout of a ring file. Shared memory is read by other processes, so every offset here is
//! part of the wire contract and is pinned by `const` assertions below.
//!
//! ```text
//! ring file (all integers little-endian u64 words unless noted)
//!
//! 0      ┌──────────────────────────── header page (4096 bytes) ─────────────────────────────┐
//!        │ line 0  (0..128)    static, written once before `layout_version`                  │
//!        │   +0 magic "TICKRING"   +8 layout_version (written LAST, Release)                 │
//!        │  +16 header_len  +24 meta_offset  +32 meta_len  +40 data_offset  +48 capacity     │
//!        │  +56 max_payload +64 content_tag  +72 writer_pid  +80 writer_start_ns             │
//! 128    │ line 1  (128..256)  writer-hot: +128 tail_intent  +136 tail  +144 latest           │
//!        │                               +152 next_seq (= records published)                 │
//! 256    │ line 2  (256..384)  writer-cold: +256 heartbeat_ns  +264 writer_state             │
//! 384    │ line 3  (384..512)  reserved                                                      │
//! 512    │ reader slots: 28 × 128 bytes, one line each, written only by the reader that      │
//!        │   claimed it: +0 pid  +8 cursor  +16 next_seq  +24 missed  +32 laps  +40 attach_ns │
//! 4096   ├──────────────────────── metadata (meta_len bytes, page padded) ───────────────────┤
//!        │ opaque to the ring (for market data: the encoded DBN metadata of the stream)      │
//! data_  ├──────────────────────── data area (capacity bytes, a power of two) ───────────────┤
//! offset │ frames, 8-byte aligned, never straddling the end of the area:                     │
//!        │   +0  u32 payload_len | u16 kind (1 data, 2 padding) | u16 reserved               │
//!        │   +8  seq (u64, 0-based, +1 per data frame)                                        │
//!        │   +16 publish_ticks (u64, the writer's raw TSC via quanta)                        │
//!        │   +24 payload (payload_len bytes, zero-padded to 8)                               │
//!        │ a padding frame has only its first word; it fills the area up to its end          │
//!        └───────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Positions (`tail_intent`, `tail`, `latest`, reader cursors) are byte counts since the ring was
//! created and never wrap; the offset in the data area is `position & (capacity - 1)`. The
//! writer-hot line holds only fields the single writer stores, grouped so a polling reader pulls
//! one line per poll; it shares no line with the static header, the heartbeat, or any reader's
//! slot, so no reader ever writes a line the writer writes.

/// `"TICKRING"` as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TICKRING");
/// The layout this build reads and writes.
pub const LAYOUT_VERSION: u64 = 1;
/// Size of the header page.
pub const HEADER_LEN: usize = 4096;
/// Cache-line pair size used to separate fields written by different parties.
pub const LINE: usize = 128;
/// Bytes of frame header before the payload.
pub const FRAME_HEADER_LEN: usize = 24;
/// Smallest data area accepted.
pub const MIN_CAPACITY: usize = 64;
/// Largest data area accepted (1 TiB); a larger value read from a header is corruption.
pub const MAX_CAPACITY: usize = 1 << 40;
/// Number of reader slots in the header page.
pub const READER_SLOTS: usize = (HEADER_LEN - SLOTS_OFFSET) / LINE;

/// Frame kind of a data frame.
pub const KIND_DATA: u16 = 1;
/// Frame kind of a padding frame.
pub const KIND_PAD: u16 = 2;

/// Writer has not finished initialising.
pub const STATE_INIT: u64 = 0;
/// Writer is publishing.
pub const STATE_RUNNING: u64 = 1;
/// Writer closed the ring: no more frames will come.
pub const STATE_FINISHED: u64 = 2;

pub(crate) const OFF_MAGIC: usize = 0;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_HEADER_LEN: usize = 16;
pub(crate) const OFF_META_OFFSET: usize = 24;
pub(crate) const OFF_META_LEN: usize = 32;
pub(crate) const OFF_DATA_OFFSET: usize = 40;
pub(crate) const OFF_CAPACITY: usize = 48;
pub(crate) const OFF_MAX_PAYLOAD: usize = 56;
pub(crate) const OFF_CONTENT_TAG: usize = 64;
pub(crate) const OFF_WRITER_PID: usize = 72;
pub(crate) const OFF_WRITER_START_NS: usize = 80;
pub(crate) const OFF_TAIL_INTENT: usize = LINE;
pub(crate) const OFF_TAIL: usize = LINE + 8;
pub(crate) const OFF_LATEST: usize = LINE + 16;
pub(crate) const OFF_NEXT_SEQ: usize = LINE + 24;
pub(crate) const OFF_HEARTBEAT_NS: usize = 2 * LINE;
pub(crate) const OFF_WRITER_STATE: usize = 2 * LINE + 8;
pub(crate) const SLOTS_OFFSET: usize = 4 * LINE;

pub(crate) const SLOT_PID: usize = 0;
pub(crate) const SLOT_CURSOR: usize = 8;
pub(crate) const SLOT_NEXT_SEQ: usize = 16;
pub(crate) const SLOT_MISSED: usize = 24;
pub(crate) const SLOT_LAPS: usize = 32;
pub(crate) const SLOT_ATTACH_NS: usize = 40;

/// Word index of a byte offset.
#[inline(always)]
pub(crate) const fn w(byte_offset: usize) -> usize {
    byte_offset / 8
}

/// Rounds `n` up to a multiple of 8.
#[inline(always)]
pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Rounds `n` up to a multiple of 4096.
#[inline(always)]
pub const fn page_align(n: usize) -> usize {
    (n + 4095) & !4095
}

/// Length of a data frame carrying `payload_len` bytes.
#[inline(always)]
pub const fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + align8(payload_len)
}

#[inline(always)]
pub(crate) const fn pack_word0(payload_len: u32, kind: u16) -> u64 {
    payload_len as u64 | (kind as u64) << 32
}

#[inline(always)]
pub(crate) const fn unpack_word0(word: u64) -> (usize, u16) {
    ((word & 0xFFFF_FFFF) as usize, (word >> 32) as u16)
}

// The diagram above is the contract; these keep the code honest to it.
const _: () = assert!(OFF_WRITER_START_NS + 8 <= LINE);
const _: () = assert!(OFF_TAIL_INTENT.is_multiple_of(LINE) && OFF_NEXT_SEQ + 8 <= 2 * LINE);
const _: () = assert!(OFF_HEARTBEAT_NS.is_multiple_of(LINE) && OFF_WRITER_STATE + 8 <= 3 * LINE);
const _: () = assert!(SLOTS_OFFSET.is_multiple_of(LINE) && SLOT_ATTACH_NS + 8 <= LINE);
const _: () = assert!(READER_SLOTS == 28);
const _: () = assert!(SLOTS_OFFSET + READER_SLOTS * LINE == HEADER_LEN);
const _: () = assert!(FRAME_HEADER_LEN.is_multiple_of(8));
const _: () = assert!(frame_len(56) == 80, "an MBO record takes 80 bytes of ring");
const _: () = assert!(MIN_CAPACITY.is_power_of_two() && MIN_CAPACITY >= 2 * frame_len(8));
