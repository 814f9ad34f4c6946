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

fn run(frames: u64, reads: usize) {
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
        let mut take = |reader: &mut RingReader<Arc<HeapRegion>>, delivered: &mut u64| match reader
            .try_read(&mut buf)
        {
            Ok(f) => {
                assert_eq!(&buf[..f.len], &payload(f.seq)[..], "torn frame {}", f.seq);
                assert_eq!(f.publish_ticks, f.seq);
                assert!(last.is_none_or(|l| f.seq > l), "sequence went backwards");
                last = Some(f.seq);
                *delivered += 1;
                true
            }
            Err(ReadError::Empty) => false,
            Err(ReadError::Lapped { .. }) => true,
            Err(e) => panic!("unexpected {e}"),
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
    run(2, 2);
}

#[test]
fn lapped_reader_counts_exactly() {
    run(3, 1);
}
