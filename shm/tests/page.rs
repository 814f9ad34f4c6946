//! The health page over real file mappings: creation and attach states, corrupt and truncated
//! files, concurrent readers against a hammering writer, a writer in another process, and no
//! allocation on the publish and read paths.
#![cfg(not(loom))]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tickpipe_shm::mapped::{self, Attach, CreateOptions, MappedRegion, ShmError, pid_alive};
use tickpipe_shm::page::{
    self, PAGE_HEADER_LEN, PAGE_LAYOUT_VERSION, PAGE_MAGIC, PageError, PageOptions, PageReader,
    attach_page_wait, create_page, page_len, try_attach_page,
};

/// Counts allocations made by threads that armed it, so a test can show a path allocates
/// nothing while the test harness's own threads allocate freely.
struct CountingAlloc;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}
static ARMED_ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged;
// counting touches only a const-initialised thread-local and an atomic, neither of which
// allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            ARMED_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, that is from System, with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temporary directory")
}

fn attach(path: &Path) -> PageReader<MappedRegion> {
    attach_page_wait(path, Duration::from_secs(5)).expect("page attaches")
}

fn page_error(result: Result<Attach<PageReader<MappedRegion>>, ShmError>) -> PageError {
    match result {
        Err(ShmError::Page { source, .. }) => source,
        Err(e) => panic!("expected a page error, got {e}"),
        Ok(state) => panic!("expected a page error, got {state:?}"),
    }
}

/// Writes a file holding exactly these header words (and zeros up to `len` bytes).
fn write_words(path: &Path, words: &[(usize, u64)], len: usize) {
    let mut bytes = vec![0u8; len];
    for &(index, value) in words {
        bytes[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn mapped_round_trip() {
    let dir = scratch();
    let path = dir.path().join("health.page");
    let mut writer = create_page(&path, 12, &PageOptions::default()).unwrap();
    let reader = attach(&path);
    assert_eq!(reader.payload_words(), 12);
    assert_eq!(reader.writer_pid(), u64::from(std::process::id()));
    assert!(!reader.region().writable(), "readers map read-only");
    let mut out = [0u64; 12];
    assert_eq!(reader.read(&mut out), Err(PageError::Empty));
    assert!(!reader.killed());
    for k in 1..=100u64 {
        let payload: Vec<u64> = (0..12).map(|i| k << 8 | i).collect();
        writer.publish(&payload).unwrap();
        let read = reader.read(&mut out).unwrap();
        assert_eq!((read.seq, read.publishes), (2 * k, k));
        assert_eq!(&out[..], &payload[..]);
    }
    writer.set_kill(0xDEAD);
    assert_eq!(reader.kill(), 0xDEAD);
    writer.set_kill(0);
    assert!(!reader.killed());

    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), page_len(12).unwrap() as u64);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "health.page")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn initial_kill_is_in_place_when_the_page_appears() {
    let dir = scratch();
    let path = dir.path().join("killed.page");
    let options = PageOptions {
        initial_kill: 1,
        ..PageOptions::default()
    };
    let _writer = create_page(&path, 1, &options).unwrap();
    assert_eq!(attach(&path).kill(), 1);
}

#[test]
fn a_recreated_page_leaves_old_readers_on_the_old_file() {
    let dir = scratch();
    let path = dir.path().join("health.page");
    let mut first = create_page(&path, 2, &PageOptions::default()).unwrap();
    first.publish(&[1, 1]).unwrap();
    let old = attach(&path);
    let mut second = create_page(&path, 2, &PageOptions::default()).unwrap();
    second.publish(&[2, 2]).unwrap();
    second.publish(&[2, 2]).unwrap();
    let new = attach(&path);
    let mut out = [0u64; 2];
    assert_eq!(old.read(&mut out).unwrap().publishes, 1);
    assert_eq!(out, [1, 1]);
    assert_eq!(new.read(&mut out).unwrap().publishes, 2);
    assert_eq!(out, [2, 2]);
}

#[test]
fn not_ready_states() {
    let dir = scratch();
    let path = dir.path().join("health.page");
    assert!(matches!(try_attach_page(&path), Ok(Attach::NoFile)));
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        try_attach_page(&path),
        Ok(Attach::NotMapped { len: 0 })
    ));
    std::fs::write(&path, vec![0u8; PAGE_HEADER_LEN - 8]).unwrap();
    assert!(matches!(
        try_attach_page(&path),
        Ok(Attach::NotMapped { len }) if len == PAGE_HEADER_LEN as u64 - 8
    ));
    // Full size, header still zero: the writer is initialising.
    write_words(&path, &[], page_len(4).unwrap());
    assert!(matches!(
        try_attach_page(&path),
        Ok(Attach::VersionNotWritten)
    ));
    // Magic written, version not yet.
    write_words(&path, &[(0, PAGE_MAGIC), (3, 4)], page_len(4).unwrap());
    assert!(matches!(
        try_attach_page(&path),
        Ok(Attach::VersionNotWritten)
    ));
    let started = Instant::now();
    let err = attach_page_wait(&path, Duration::from_millis(30)).unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(30));
    assert!(
        matches!(
            err,
            ShmError::NotReady {
                state: "header version not written yet",
                ..
            }
        ),
        "{err}"
    );
    // The writer finishes its header: the same wait now succeeds.
    write_words(
        &path,
        &[
            (0, PAGE_MAGIC),
            (1, PAGE_LAYOUT_VERSION),
            (2, PAGE_HEADER_LEN as u64),
            (3, 4),
        ],
        page_len(4).unwrap(),
    );
    let reader = attach_page_wait(&path, Duration::from_millis(30)).unwrap();
    assert_eq!(reader.read(&mut [0; 4]), Err(PageError::Empty));
}

#[test]
fn attach_wait_sees_a_page_created_later() {
    let dir = scratch();
    let path = dir.path().join("later.page");
    let creator = {
        let path = path.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            let mut writer = create_page(&path, 3, &PageOptions::default()).unwrap();
            writer.publish(&[4, 4, 4]).unwrap();
            writer
        })
    };
    let reader = attach_page_wait(&path, Duration::from_secs(10)).unwrap();
    let _writer = creator.join().unwrap();
    let mut out = [0u64; 3];
    // Attached before or after the publish: either way the next read sees it.
    assert_eq!(reader.read(&mut out).unwrap().publishes, 1);
    assert_eq!(out, [4; 3]);
}

#[test]
fn truncated_file_is_an_error() {
    let dir = scratch();
    let path = dir.path().join("health.page");
    drop(create_page(&path, 64, &PageOptions::default()).unwrap());
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len((PAGE_HEADER_LEN + 8) as u64).unwrap();
    assert_eq!(
        page_error(try_attach_page(&path)),
        PageError::TooSmall {
            len: PAGE_HEADER_LEN + 8,
            needed: page_len(64).unwrap()
        }
    );
    let err = attach_page_wait(&path, Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("health.page"), "{err}");
}

#[test]
fn wrong_magic_and_version_are_errors() {
    let dir = scratch();
    let path = dir.path().join("health.page");
    let len = page_len(4).unwrap();
    write_words(
        &path,
        &[(0, 0x1234), (1, PAGE_LAYOUT_VERSION), (2, 384), (3, 4)],
        len,
    );
    assert_eq!(
        page_error(try_attach_page(&path)),
        PageError::WrongMagic { found: 0x1234 }
    );
    write_words(
        &path,
        &[
            (0, PAGE_MAGIC),
            (1, PAGE_LAYOUT_VERSION + 1),
            (2, 384),
            (3, 4),
        ],
        len,
    );
    assert_eq!(
        page_error(try_attach_page(&path)),
        PageError::WrongVersion {
            found: PAGE_LAYOUT_VERSION + 1,
            expected: PAGE_LAYOUT_VERSION
        }
    );

    // A market-data ring is not a page.
    let ring_path = dir.path().join("md.ring");
    let options = CreateOptions {
        capacity: 4096,
        max_payload: 64,
        ..CreateOptions::default()
    };
    let _ring = mapped::create(&ring_path, &options, &[]).unwrap();
    assert!(matches!(
        page_error(try_attach_page(&ring_path)),
        PageError::WrongMagic { .. }
    ));
}

#[test]
fn bad_shapes_create_nothing() {
    let dir = scratch();
    let path = dir.path().join("health.page");
    for words in [0, page::MAX_PAYLOAD_WORDS + 1] {
        let err = create_page(&path, words, &PageOptions::default()).unwrap_err();
        assert!(
            matches!(
                err,
                ShmError::Page {
                    source: PageError::BadField { .. },
                    ..
                }
            ),
            "{err}"
        );
    }
    let groupless = PageOptions {
        group: Some("no-such-group-tickpipe".into()),
        ..PageOptions::default()
    };
    assert!(matches!(
        create_page(&path, 1, &groupless),
        Err(ShmError::UnknownGroup(_))
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn publish_and_read_do_not_allocate() {
    let dir = scratch();
    let path = dir.path().join("health.page");
    let mut writer = create_page(&path, 32, &PageOptions::default()).unwrap();
    let reader = attach(&path);
    let payload = [3u64; 32];
    let mut out = [0u64; 32];
    // Warm up anything lazily initialised (the clock's calibration) before arming.
    writer.publish(&payload).unwrap();
    let before = ARMED_ALLOCS.load(Ordering::Relaxed);
    ARMED.with(|a| a.set(true));
    let mut ok = 0;
    for _ in 0..1000 {
        writer.publish(&payload).unwrap();
        writer.heartbeat(1);
        ok += usize::from(reader.read(&mut out).is_ok());
        ok += usize::from(reader.kill() == 0);
    }
    // The control: an allocation on an armed thread is counted.
    let control = std::hint::black_box(vec![1u8; 16]);
    ARMED.with(|a| a.set(false));
    drop(control);
    let allocs = ARMED_ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(ok, 2000);
    assert_eq!(
        allocs, 1,
        "publish/heartbeat/read/kill allocated (the 1 is the control)"
    );
}

/// A writer thread publishes as fast as it can while reader threads check every snapshot they
/// get is one whole payload (all words equal to its publish count) and that snapshots never go
/// backwards.
#[test]
fn concurrent_readers_never_see_a_torn_payload() {
    const WORDS: usize = 32;
    const READERS: usize = 3;
    const READS_EACH: usize = 34_000;
    let dir = scratch();
    let path = dir.path().join("health.page");
    let mut writer = create_page(&path, WORDS, &PageOptions::default()).unwrap();
    writer.publish(&[1; WORDS]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut k = 1u64;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                writer.publish(&[k; WORDS]).unwrap();
                // Back-to-back publishes leave `seq` odd nearly all the time; a short, varying
                // gap gives readers whole payloads to copy while still racing many publishes.
                for _ in 0..k % 97 {
                    std::hint::spin_loop();
                }
            }
            k
        })
    };
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let reader = attach(&path);
            std::thread::spawn(move || {
                let (mut ok, mut busy, mut last, mut distinct) = (0usize, 0usize, 0u64, 0usize);
                let mut out = [0u64; WORDS];
                for _ in 0..READS_EACH {
                    match reader.read(&mut out) {
                        Ok(read) => {
                            let k = read.publishes;
                            assert!(out.iter().all(|&v| v == k), "torn payload {out:?} at {k}");
                            assert_eq!(read.seq, 2 * k);
                            assert!(k >= last, "snapshot went backwards: {k} after {last}");
                            distinct += usize::from(k != last);
                            last = k;
                            ok += 1;
                        }
                        Err(PageError::Busy) => busy += 1,
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
                (ok, busy, distinct)
            })
        })
        .collect();
    let results: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    stop.store(true, Ordering::Relaxed);
    let published = producer.join().unwrap();
    let ok: usize = results.iter().map(|r| r.0).sum();
    let busy: usize = results.iter().map(|r| r.1).sum();
    let distinct: usize = results.iter().map(|r| r.2).sum();
    println!(
        "page hammer: {published} publishes, {ok} consistent reads, {busy} busy, \
         {distinct} distinct snapshots"
    );
    assert_eq!(ok + busy, READERS * READS_EACH);
    // Availability depends on scheduling on a loaded host; correctness is asserted per read.
    assert!(ok >= 1000, "too few consistent reads to mean anything");
    assert!(distinct >= 2 * READERS, "readers saw the payload change");
}

const CHILD_ENV: &str = "TICKPIPE_PAGE_CHILD";
const CHILD_WORDS: usize = 16;
const KILL_AT: u64 = 1000;
const KILL_VALUE: u64 = 0xDEAD_BEEF;

/// The writer half of `cross_process_writer`: runs only in the child, which this binary re-runs
/// with `TICKPIPE_PAGE_CHILD` naming the page. It publishes `[k; 16]` for k = 1, 2, … engaging
/// the kill switch just before publish `KILL_AT`, until the parent creates `<page>.stop`.
#[test]
fn child_writer() {
    let Some(path) = std::env::var_os(CHILD_ENV).map(PathBuf::from) else {
        return;
    };
    let stop = path.with_extension("stop");
    let mut writer = create_page(&path, CHILD_WORDS, &PageOptions::default()).unwrap();
    let started = Instant::now();
    let mut k = 0u64;
    loop {
        k += 1;
        if k == KILL_AT {
            writer.set_kill(KILL_VALUE);
        }
        writer.publish(&[k; CHILD_WORDS]).unwrap();
        if k.is_multiple_of(256) && (stop.exists() || started.elapsed() > Duration::from_secs(60)) {
            break;
        }
    }
    println!("CHILD-FINAL {k}");
}

/// A child process writes; this process reads consistent snapshots and the kill word, and after
/// the child exits still reads its last payload.
#[test]
fn cross_process_writer() {
    let dir = scratch();
    let path = dir.path().join("health.page");
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["child_writer", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let child_pid = u64::from(child.id());
    let reader = attach_page_wait(&path, Duration::from_secs(30)).unwrap();
    assert_eq!(reader.writer_pid(), child_pid);
    let mut out = [0u64; CHILD_WORDS];
    let (mut last, mut after_kill, mut reads, mut busy) = (0u64, 0usize, 0usize, 0usize);
    let started = Instant::now();
    while after_kill < 50 && started.elapsed() < Duration::from_secs(30) {
        // Kill first: engaged before publish KILL_AT, so once seen it stays seen.
        let kill_before = reader.kill();
        match reader.read(&mut out) {
            Ok(read) => {
                let k = read.publishes;
                assert!(out.iter().all(|&v| v == k), "torn payload {out:?} at {k}");
                assert!(k >= last, "snapshot went backwards");
                if k >= KILL_AT {
                    // The kill word was set before this publish: a reader that saw the publish
                    // sees the kill word.
                    assert_eq!(
                        reader.kill(),
                        KILL_VALUE,
                        "publish {k} seen without its kill"
                    );
                    after_kill += usize::from(k != last);
                } else {
                    assert!(kill_before == 0 || kill_before == KILL_VALUE);
                }
                last = k;
                reads += 1;
            }
            Err(PageError::Busy) | Err(PageError::Empty) => busy += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    std::fs::write(path.with_extension("stop"), b"").unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    assert!(
        after_kill >= 50,
        "saw only {after_kill} snapshots after the kill ({reads} reads, {busy} busy)"
    );
    let final_k: u64 = stdout
        .lines()
        .find_map(|l| l.split("CHILD-FINAL ").nth(1))
        .and_then(|k| k.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("child printed no final count: {stdout}"));
    // The writer is gone; its mapping is not.
    assert!(!pid_alive(child_pid));
    let read = reader.read(&mut out).unwrap();
    assert_eq!(read.publishes, final_k);
    assert_eq!(out, [final_k; CHILD_WORDS]);
    assert_eq!(reader.kill(), KILL_VALUE);
    println!("page cross-process: {reads} reads, {busy} busy, final publish {final_k}");
}
