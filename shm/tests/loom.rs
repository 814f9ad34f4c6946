//! Model-checks the ring protocol with loom: every interleaving (within the preemption bound) of
//! one writer and one reader over a tiny ring, where the writer laps the reader.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p tickpipe-shm --release --test loom`
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use tickpipe_shm::ring::{
    HeaderState, HeapRegion, ReadError, Region, RingGeometry, RingReader, RingWriter, StartAt,
    WriterIdentity, read_header,
};

/// Payload of frame `seq`. Frame 0 is empty (24 bytes) and the others carry one word (32 bytes),
/// so in a 64-byte area frame 2 needs an 8-byte padding frame and wraps over frames 0 and 1.
/// The payload word and the publish stamp both derive from `seq`, so a copy mixing two frames
/// is visible.
fn payload(seq: u64) -> Vec<u8> {
    if seq == 0 {
        Vec::new()
    } else {
        (seq * 3 + 1).to_le_bytes().to_vec()
    }
}

fn run(frames: u64, reads: usize, batch: bool) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(move || {
        let geometry = RingGeometry::new(64, 8, 0).unwrap();
        let region = Arc::new(HeapRegion::zeroed(geometry.total_len()));
        let mut writer =
            RingWriter::init(region.clone(), geometry, &[], WriterIdentity::default(), 0).unwrap();
        let HeaderState::Ready(info) = read_header(region.words()).unwrap() else {
            panic!("header not ready after init");
        };
        let mut reader = RingReader::new(region, info, StartAt::Oldest);

        let producer = thread::spawn(move || {
            for seq in 0..frames {
                writer.publish(&payload(seq), seq).unwrap();
            }
            writer.finish();
        });

        let mut buf = [0u8; 8];
        let mut delivered = 0u64;
        let mut last = None;
        // Every frame handed out, by either read path, goes through the same checks.
        let mut check = |seq: u64, ticks: u64, bytes: &[u8], delivered: &mut u64| {
            assert_eq!(bytes, &payload(seq)[..], "torn frame {seq}");
            assert_eq!(ticks, seq);
            assert!(last.is_none_or(|l| seq > l), "sequence went backwards");
            last = Some(seq);
            *delivered += 1;
        };
        let mut take = |reader: &mut RingReader<Arc<HeapRegion>>, delivered: &mut u64| {
            let result = if batch {
                let mut scratch = [0u8; 96];
                reader.read_batch(&mut scratch, 3, |f, p| {
                    check(f.seq, f.publish_ticks, p, delivered)
                })
            } else {
                reader
                    .try_read(&mut buf)
                    .map(|f| check(f.seq, f.publish_ticks, &buf[..f.len], delivered))
                    .map(|()| 1)
            };
            match result {
                Ok(_) | Err(ReadError::Lapped { .. }) => true,
                Err(ReadError::Empty) => false,
                Err(e) => panic!("unexpected {e}"),
            }
        };
        for _ in 0..reads {
            if !take(&mut reader, &mut delivered) {
                thread::yield_now();
            }
        }
        producer.join().unwrap();
        while take(&mut reader, &mut delivered) {}
        assert!(reader.is_finished());
        assert_eq!(
            delivered + reader.missed(),
            frames,
            "a frame was neither delivered nor counted"
        );
    });
}

#[test]
fn concurrent_reads_never_torn() {
    run(2, 2, false);
}

#[test]
fn lapped_reader_counts_exactly() {
    run(3, 1, false);
}

#[test]
fn batch_reads_never_torn() {
    run(2, 2, true);
}

#[test]
fn batch_reader_lapped_counts_exactly() {
    run(3, 1, true);
}
