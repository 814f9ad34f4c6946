//! Concurrency exercise for the sanitizers (`scripts/sanitizers.sh`): ring writer and reader
//! threads over heap and file-mapped regions, a reader the writer keeps lapping, a reader in
//! another process, and the health page's seqlock under concurrent readers. Every reader checks
//! what it got (payload bytes derived from the sequence number, sequence numbers only growing,
//! every frame delivered or counted missed; page payloads whose words all agree), so the binary
//! also fails without a sanitizer when the protocol breaks.
//!
//! A plain `main` (`harness = false`): no test-harness threads or channels between the checks,
//! and every thread is joined explicitly, so each happens-before edge is one ThreadSanitizer
//! sees (a `pthread_join`) even though the standard library itself is not instrumented. For the
//! same reason the main thread keeps a reference to every shared region until the joins: the
//! last `Arc` drop frees after an Acquire fence, which ThreadSanitizer does not model.
#![cfg(not(loom))]

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tickpipe_shm::mapped::{self, AttachOptions, CreateOptions};
use tickpipe_shm::page::heap_page;
use tickpipe_shm::{HeapRegion, ReadError, Region, RingReader, RingWriter, StartAt, heap_ring};

/// Set in the child process: the path of the ring it writes.
const CHILD_ENV: &str = "TICKPIPE_TSAN_CHILD_RING";

fn payload(seq: u64, out: &mut Vec<u8>) {
    let len = (seq % 57) as usize;
    out.clear();
    out.extend((0..len).map(|i| (seq as u8).wrapping_mul(13) ^ (i as u8).wrapping_mul(7)));
}

fn write_frames<R: Region>(writer: &mut RingWriter<R>, frames: u64, every_yield: u64) {
    let mut buf = Vec::with_capacity(64);
    for seq in 0..frames {
        payload(seq, &mut buf);
        let got = writer.publish(&buf, seq).expect("payload fits");
        assert_eq!(got, seq);
        if every_yield > 0 && seq % every_yield == 0 {
            std::thread::yield_now();
        }
    }
    writer.finish();
}

/// Reads until the writer finished and everything is read; returns (delivered, missed).
fn drain<R: Region>(reader: &mut RingReader<R>, batch: bool, slow: bool) -> (u64, u64) {
    let mut buf = [0u8; 64];
    let mut scratch = vec![0u8; 1024];
    let mut expect = Vec::with_capacity(64);
    let (mut delivered, mut last) = (0u64, None::<u64>);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "reader made no end");
        let mut check = |seq: u64, got: &[u8]| {
            payload(seq, &mut expect);
            assert_eq!(got, &expect[..], "torn or wrong payload at seq {seq}");
            assert!(last.is_none_or(|l| seq > l), "seq {seq} after {last:?}");
            last = Some(seq);
            delivered += 1;
        };
        let result = if batch {
            reader
                .read_batch(&mut scratch, 8, |f, p| check(f.seq, p))
                .map(|_| ())
        } else {
            reader
                .try_read(&mut buf)
                .map(|f| check(f.seq, &buf[..f.len]))
        };
        match result {
            Ok(()) => {
                if slow && delivered.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            Err(ReadError::Lapped { .. }) => {}
            Err(ReadError::Empty) => {
                if reader.is_finished() {
                    return (delivered, reader.missed());
                }
                std::hint::spin_loop();
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

fn ring_threads_heap() {
    const FRAMES: u64 = 100_000;
    let (mut writer, info) = heap_ring(4096, 64, b"m", 0).expect("ring");
    let region = Arc::clone(writer.region());
    let readers: Vec<_> = [false, true]
        .into_iter()
        .map(|batch| {
            let mut r = RingReader::new(Arc::clone(&region), info, StartAt::Oldest);
            std::thread::spawn(move || drain(&mut r, batch, false))
        })
        .collect();
    let w = std::thread::spawn(move || write_frames(&mut writer, FRAMES, 0));
    w.join().expect("writer");
    for r in readers {
        let (delivered, missed) = r.join().expect("reader");
        assert_eq!(
            delivered + missed,
            FRAMES,
            "every frame delivered or counted"
        );
    }
}

fn lapped_reader() {
    const FRAMES: u64 = 20_000;
    // 256 bytes hold a handful of frames: a reader that sleeps is lapped again and again.
    let (mut writer, info) = heap_ring(256, 64, b"", 0).expect("ring");
    // The last reference is dropped here, after the joins: `Arc`'s drop orders the free with an
    // Acquire fence, which ThreadSanitizer does not model (it would report the free as a race).
    let _keep = Arc::clone(writer.region());
    let mut reader = RingReader::new(Arc::clone(writer.region()), info, StartAt::Oldest);
    let r = std::thread::spawn(move || drain(&mut reader, false, true));
    let w = std::thread::spawn(move || write_frames(&mut writer, FRAMES, 0));
    w.join().expect("writer");
    let (delivered, missed) = r.join().expect("reader");
    assert_eq!(delivered + missed, FRAMES);
    assert!(missed > 0, "the slow reader was never lapped");
}

fn mapped_ring_threads(dir: &Path) {
    const FRAMES: u64 = 50_000;
    let path = dir.join("threads.ring");
    let options = CreateOptions {
        capacity: 1 << 14,
        max_payload: 64,
        ..CreateOptions::default()
    };
    let mut writer = mapped::create(&path, &options, b"meta").expect("create");
    let attach = AttachOptions::default();
    let mut readers = Vec::new();
    for batch in [false, true] {
        let mut r = mapped::attach_wait(&path, attach, Duration::from_secs(5)).expect("attach");
        readers.push(std::thread::spawn(move || drain(&mut r, batch, false)));
    }
    let w = std::thread::spawn(move || write_frames(&mut writer, FRAMES, 0));
    w.join().expect("writer");
    for r in readers {
        let (delivered, missed) = r.join().expect("reader");
        assert_eq!(delivered + missed, FRAMES);
    }
}

fn cross_process(dir: &Path) {
    const FRAMES: u64 = 20_000;
    let path = dir.join("child.ring");
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env(CHILD_ENV, &path)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn the writer");
    let mut reader = mapped::attach_wait(&path, AttachOptions::default(), Duration::from_secs(30))
        .expect("attach to the child's ring");
    let (delivered, missed) = drain(&mut reader, true, false);
    assert!(
        child.wait().expect("child").success(),
        "child writer failed"
    );
    assert_eq!(delivered + missed, FRAMES);
}

fn child_writer(path: &Path) {
    let options = CreateOptions {
        capacity: 1 << 14,
        max_payload: 64,
        ..CreateOptions::default()
    };
    let mut writer = mapped::create(path, &options, b"").expect("create");
    write_frames(&mut writer, 20_000, 256);
}

fn page_seqlock() {
    const WORDS: usize = 56;
    const PUBLISHES: u64 = 20_000;
    let mut writer = heap_page(WORDS).expect("page");
    let region: Arc<HeapRegion> = Arc::clone(writer.region());
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let region = Arc::clone(&region);
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let reader = tickpipe_shm::PageReader::new(region).expect("attach");
                let mut out = vec![0u64; WORDS];
                let (mut ok, mut last) = (0u64, 0u64);
                loop {
                    // Pairs with the writer thread's Release store once it is done: the read
                    // after seeing it sees the last publish.
                    let finished = done.load(Ordering::Acquire);
                    match reader.read(&mut out) {
                        Ok(read) => {
                            assert!(out.iter().all(|&w| w == out[0]), "torn page: {out:?}");
                            assert_eq!(out[0], read.publishes, "payload is not its publish");
                            assert!(read.publishes >= last, "publishes went backwards");
                            last = read.publishes;
                            ok += 1;
                        }
                        Err(tickpipe_shm::PageError::Empty | tickpipe_shm::PageError::Busy) => {}
                        Err(e) => panic!("page read failed: {e}"),
                    }
                    // The kill word is set after publish 1000 with Release: a reader that
                    // sees it sees that publish or a later one.
                    if reader.killed()
                        && let Ok(read) = reader.read(&mut out)
                    {
                        assert!(read.publishes >= 1000, "kill seen before its rollup");
                    }
                    if finished {
                        assert_eq!(last, PUBLISHES, "the last publish was not seen");
                        break;
                    }
                }
                ok
            })
        })
        .collect();
    let done_w = Arc::clone(&done);
    let w = std::thread::spawn(move || {
        let mut words = vec![0u64; WORDS];
        for n in 1..=PUBLISHES {
            words.fill(n);
            writer.publish_at(&words, n).expect("publish");
            if n == 1000 {
                writer.set_kill(1);
            }
        }
        // Pairs with the readers' Acquire loads of `done`.
        done_w.store(true, Ordering::Release);
    });
    w.join().expect("writer");
    for r in readers {
        let reads = r.join().expect("reader");
        assert!(reads > 0, "a reader never read the page");
    }
}

fn main() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child_writer(Path::new(&path));
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let started = Instant::now();
    let checks: [(&str, &dyn Fn()); 5] = [
        ("ring writer and readers, heap", &ring_threads_heap),
        ("lapped reader", &lapped_reader),
        ("ring writer and readers, file mapping", &|| {
            mapped_ring_threads(dir.path())
        }),
        ("writer in another process", &|| cross_process(dir.path())),
        ("health page seqlock", &page_seqlock),
    ];
    for (name, check) in checks {
        let t = Instant::now();
        check();
        println!("ok   {name} ({:.2?})", t.elapsed());
    }
    println!("all checks passed in {:.2?}", started.elapsed());
}
