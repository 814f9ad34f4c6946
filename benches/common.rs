//! Shared set-up for the ring benchmarks.
#![allow(dead_code)] // Each bench binary uses a subset.

use std::path::PathBuf;

use tickpipe::shm::mapped::{self, CreateOptions, MappedRegion};
use tickpipe::shm::{RingReader, RingWriter};

/// Size of a DBN MBO record.
pub const MBO_LEN: usize = 56;

/// A mapped ring in /dev/shm (or the temp dir) with one reader, removed on drop.
pub struct BenchRing {
    pub writer: RingWriter<MappedRegion>,
    pub reader: RingReader<MappedRegion>,
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn ring(capacity: usize) -> BenchRing {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let path = dir.path().join("bench.ring");
    let options = CreateOptions {
        capacity,
        max_payload: 1024,
        ..CreateOptions::default()
    };
    let writer = mapped::create(&path, &options, &[]).expect("create ring");
    let reader = match mapped::try_attach(&path, Default::default()).expect("attach") {
        mapped::Attach::Ready(r) => r,
        other => panic!("not ready: {other:?}"),
    };
    BenchRing {
        writer,
        reader,
        _dir: dir,
        path,
    }
}

/// The cores this process may run on, read once: `get_core_ids` reports the calling thread's
/// affinity, so asking again after a thread pinned itself would see only that one core.
pub fn cores() -> &'static [core_affinity::CoreId] {
    static CORES: std::sync::OnceLock<Vec<core_affinity::CoreId>> = std::sync::OnceLock::new();
    CORES.get_or_init(|| core_affinity::get_core_ids().unwrap_or_default())
}

/// Pins the current thread to `core`, panicking when that is impossible: a latency number from
/// threads sharing a core would be meaningless.
pub fn pin(core: usize) {
    let id = cores().iter().find(|c| c.id == core).copied();
    let pinned = id.is_some_and(core_affinity::set_for_current);
    assert!(pinned, "cannot pin to core {core} (cores: {:?})", cores());
}

/// Whether this run is a real benchmark run (`cargo bench`) rather than a smoke test.
pub fn is_bench() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// An MBO-sized payload.
pub fn payload(i: u64) -> [u8; MBO_LEN] {
    let mut p = [0u8; MBO_LEN];
    p[0] = (MBO_LEN / 4) as u8;
    p[8..16].copy_from_slice(&i.to_le_bytes());
    p
}
