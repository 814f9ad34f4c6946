//! The ring reader over arbitrary shared memory: header validation, attach, then `try_read` or
//! `read_batch` until the ring is empty or the reader reports an error. The health page reader
//! gets the same treatment.
//!
//! Input: three control bytes, then the region.
//! - byte 0: bit 0 selects the compact image (else the raw image), bit 1 attaches at the tail
//!   (else the oldest frame), bit 2 reads with `read_batch` (else `try_read`), bit 3 reads the
//!   region as a health page instead of a ring.
//! - byte 1: the caller's buffer size in bytes (grown when the reader says it is too small).
//! - byte 2: `max_frames` for `read_batch`.
//!
//! A raw image is the region byte for byte. A compact image holds only the header words a reader
//! looks at, so the mutator spends no effort on the reader-slot area: 88 bytes of static header
//! (placed at 0), 32 bytes of writer-hot line (at 128), 16 bytes of writer-cold line (at 256),
//! and everything after that is placed from byte 4096 on (metadata, then the data area).
//!
//! Properties: no panic; every call returns; the reader's position never moves backwards; the
//! loop ends within a bound set by the region's size; every frame handed out lies inside the data
//! area and its payload is the bytes the region holds there.
#![no_main]

use std::sync::atomic::Ordering;

use libfuzzer_sys::fuzz_target;
use tickpipe_shm::layout::{FRAME_HEADER_LEN, HEADER_LEN, frame_len};
use tickpipe_shm::page::PageReader;
use tickpipe_shm::ring::{self, HeaderState, ReadError, RingInfo, RingReader, StartAt};
use tickpipe_shm::{HeapRegion, Region};

/// Largest region built from one input: larger inputs are truncated.
const MAX_REGION: usize = 1 << 20;

fn region_from(compact: bool, image: &[u8]) -> HeapRegion {
    let bytes: Vec<u8> = if compact {
        let mut b = vec![0u8; HEADER_LEN];
        let (line0, rest) = image.split_at(image.len().min(88));
        b[..line0.len()].copy_from_slice(line0);
        let (line1, rest) = rest.split_at(rest.len().min(32));
        b[128..128 + line1.len()].copy_from_slice(line1);
        let (line2, rest) = rest.split_at(rest.len().min(16));
        b[256..256 + line2.len()].copy_from_slice(line2);
        b.extend_from_slice(&rest[..rest.len().min(MAX_REGION - HEADER_LEN)]);
        b
    } else {
        image[..image.len().min(MAX_REGION)].to_vec()
    };
    let region = HeapRegion::zeroed(bytes.len());
    for (word, chunk) in region.words().iter().zip(bytes.chunks(8)) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        word.store(u64::from_le_bytes(w), Ordering::Relaxed);
    }
    region
}

/// The payload bytes the region holds for a data frame starting at ring position `start`.
fn ring_bytes(region: &HeapRegion, info: &RingInfo, start: u64, len: usize) -> Vec<u8> {
    let capacity = info.geometry.capacity as u64;
    let off = (start & (capacity - 1)) as usize;
    assert!(
        off + frame_len(len) <= info.geometry.capacity,
        "frame at offset {off} of {len} bytes straddles the end of the data area"
    );
    let first = info.geometry.data_offset() + off + FRAME_HEADER_LEN;
    (first..first + len)
        .map(|b| region.words()[b / 8].load(Ordering::Relaxed).to_le_bytes()[b % 8])
        .collect()
}

fn read_ring(region: &HeapRegion, info: RingInfo, flags: u8, buf_len: usize, max_frames: usize) {
    let start = if flags & 2 != 0 {
        StartAt::Tail
    } else {
        StartAt::Oldest
    };
    let mut reader = RingReader::new(region, info, start);
    let _ = reader.metadata();
    let _ = reader.writer_status();
    let _ = ring::reader_slots(region.words());
    let max_payload = info.geometry.max_payload;
    let mut buf = vec![0u8; buf_len];
    // Every successful read moves at least one frame header forward inside a window of at most
    // two capacities (before and after one resync); laps and buffer growth add a few more calls.
    let bound = 4 * (info.geometry.capacity / FRAME_HEADER_LEN) + 64;
    let mut idle_laps = 0;
    for _ in 0..bound {
        let before = reader.position();
        let result = if flags & 4 != 0 {
            let mut seen = 0usize;
            reader
                .read_batch(&mut buf, max_frames, |f, payload| {
                    assert!(f.len <= max_payload, "frame of {} bytes", f.len);
                    assert_eq!(payload.len(), f.len);
                    seen += 1;
                })
                .map(|n| {
                    assert!(n == seen && n >= 1 && n <= max_frames.max(1));
                })
        } else {
            reader.try_read(&mut buf).map(|f| {
                assert!(f.len <= max_payload && f.len <= buf.len());
                let start = reader.position() - frame_len(f.len) as u64;
                assert!(start >= before, "frame starts before the reader's cursor");
                assert_eq!(
                    &buf[..f.len],
                    &ring_bytes(region, &info, start, f.len)[..],
                    "payload differs from the region's bytes"
                );
            })
        };
        assert!(
            reader.position() >= before,
            "position moved backwards: {before} -> {}",
            reader.position()
        );
        match result {
            Ok(()) => idle_laps = 0,
            Err(ReadError::Empty | ReadError::Corrupt(_)) => return,
            // A writer that keeps lapping the newest frame: on a static image it always will.
            Err(ReadError::Lapped { missed: 0 }) => {
                idle_laps += 1;
                if idle_laps > 2 {
                    return;
                }
            }
            Err(ReadError::Lapped { .. }) => idle_laps = 0,
            Err(ReadError::BufferTooSmall { needed }) => {
                assert!(
                    needed > 0 && needed <= frame_len(max_payload),
                    "asks for {needed} bytes with max_payload {max_payload}"
                );
                assert!(needed > buf.len() || flags & 4 != 0);
                buf.resize(needed.max(buf.len() + 1), 0);
            }
        }
    }
    let _ = reader.is_finished();
    panic!("reader still reading after {bound} calls over a static ring");
}

fn read_page(region: &HeapRegion) {
    let Ok(reader) = PageReader::new(region) else {
        return;
    };
    let reader = reader.with_max_tries(4);
    let mut out = vec![0u64; reader.payload_words()];
    if reader.read(&mut out).is_ok() {
        let _ = tickpipe_pipeline::health::page::decode(&out);
    }
    let _ = (reader.kill(), reader.killed(), reader.heartbeat_ns());
    let _ = (reader.writer_pid(), reader.writer_started_ns());
}

fuzz_target!(|data: &[u8]| {
    let [flags, buf_len, max_frames, image @ ..] = data else {
        return;
    };
    let region = region_from(flags & 1 != 0, image);
    if flags & 8 != 0 {
        read_page(&region);
        return;
    }
    if let Ok(HeaderState::Ready(info)) = ring::read_header(region.words()) {
        read_ring(
            &region,
            info,
            *flags,
            usize::from(*buf_len),
            usize::from(*max_frames),
        );
    }
});
