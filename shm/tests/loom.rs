//! Model-checks the ring protocol with loom: every interleaving (within the preemption bound) of
//! one writer and one reader over a tiny ring, where the writer laps the reader. Also the health
//! page's seqlock and kill word (`page_*` models).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p tickpipe-shm --release --test loom`
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use tickpipe_shm::page::{
    PageError, PageIdentity, PageReader, PageWriter, page_len, read_page_header,
};
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

/// A page of two words whose writer publishes `[1, 1]` then `[2, 2]` while a reader reads twice
/// and then attaches a second reader. Every read is `Empty` (before the first publish), `Busy`, or
/// one whole payload: both words equal, equal to its publish count, and never older than a
/// previous read.
#[test]
fn page_reads_are_whole_payloads() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let region = Arc::new(HeapRegion::zeroed(page_len(2).unwrap()));
        let mut writer = PageWriter::init(region.clone(), 2, PageIdentity::default(), 0).unwrap();
        let reader = PageReader::new(region).unwrap().with_max_tries(2);
        let producer = thread::spawn(move || {
            for k in 1..=2u64 {
                writer.publish(&[k, k]).unwrap();
            }
        });
        let mut last = 0;
        for _ in 0..2 {
            let mut out = [0u64; 2];
            match reader.read(&mut out) {
                Ok(read) => {
                    assert!(out[0] == out[1], "torn payload {out:?}");
                    assert!(out[0] == 1 || out[0] == 2, "never published: {out:?}");
                    assert_eq!(read.publishes, out[0]);
                    assert_eq!(read.seq, 2 * out[0]);
                    assert!(out[0] >= last, "went backwards");
                    last = out[0];
                }
                Err(PageError::Busy) => {}
                Err(PageError::Empty) => assert_eq!(last, 0, "empty after a publish was seen"),
                Err(e) => panic!("unexpected {e}"),
            }
        }
        producer.join().unwrap();
        let mut out = [0u64; 2];
        reader.read(&mut out).unwrap();
        assert_eq!(
            out,
            [2, 2],
            "the last publish is seen once the writer is done"
        );
    });
}

/// The kill word is engaged before a publish: a reader whose read returns that publish then
/// sees the kill word engaged, with a single load.
#[test]
fn page_kill_set_before_a_publish_is_seen_with_it() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let region = Arc::new(HeapRegion::zeroed(page_len(1).unwrap()));
        let mut writer = PageWriter::init(region.clone(), 1, PageIdentity::default(), 0).unwrap();
        let reader = PageReader::new(region).unwrap().with_max_tries(1);
        let producer = thread::spawn(move || {
            writer.publish(&[1]).unwrap();
            writer.set_kill(7);
            writer.publish(&[2]).unwrap();
        });
        let mut out = [0u64; 1];
        if let Ok(read) = reader.read(&mut out) {
            let kill = reader.kill();
            if read.publishes == 2 {
                assert_eq!(kill, 7, "saw publish 2 but not the kill set before it");
            }
        }
        producer.join().unwrap();
    });
}

/// The kill word is engaged after a publish: a reader that sees it engaged also sees that
/// publish (the rollup that explains why the switch was thrown).
#[test]
fn page_engaged_kill_shows_the_rollup_before_it() {
    loom::model(|| {
        let region = Arc::new(HeapRegion::zeroed(page_len(1).unwrap()));
        let mut writer = PageWriter::init(region.clone(), 1, PageIdentity::default(), 0).unwrap();
        let reader = PageReader::new(region).unwrap().with_max_tries(1);
        let producer = thread::spawn(move || {
            writer.publish(&[1]).unwrap();
            writer.set_kill(7);
        });
        if reader.kill() == 7 {
            let mut out = [0u64; 1];
            assert_eq!(reader.read(&mut out).map(|r| r.publishes), Ok(1));
            assert_eq!(out, [1]);
        }
        producer.join().unwrap();
    });
}

/// A reader attaching while the writer formats the page sees it not ready or complete, never a
/// half-written header.
#[test]
fn page_attach_during_init_sees_a_whole_header() {
    loom::model(|| {
        let region = Arc::new(HeapRegion::zeroed(page_len(3).unwrap()));
        let identity = PageIdentity {
            pid: 11,
            start_ns: 12,
        };
        let creator = {
            let region = region.clone();
            thread::spawn(move || {
                PageWriter::init(region, 3, identity, 5).unwrap();
            })
        };
        match read_page_header(region.words()) {
            Ok(info) => {
                assert_eq!((info.payload_words, info.writer), (3, identity));
                let reader = PageReader::new(region.clone()).unwrap();
                assert_eq!(reader.kill(), 5);
            }
            Err(PageError::VersionNotWritten) => {}
            Err(e) => panic!("half-written header: {e}"),
        }
        creator.join().unwrap();
    });
}
