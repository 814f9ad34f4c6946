//! Capture decoding as `replay` does it: `Capture::open` on a file (plain or zstd, DBN 1 to 3,
//! or a metadata-less fragment), the stream's merged metadata encoded for the ring, then every
//! record visited, its index timestamp taken and its bytes decoded by the ingest decoder.
//!
//! Input: one byte choosing the file name (which decides how a file without the DBN prefix is
//! read), then the file's bytes.
//!
//! Properties: no panic; every record handed out is as long as its header says.
#![no_main]

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::OnceLock;

use dbn::Record;
use libfuzzer_sys::fuzz_target;
use tickpipe::capture::{self, Capture};
use tickpipe_pipeline::msg::{Event, MAX_PARTS};

/// File names a capture may have: plain, compressed and fragments of each DBN version.
const NAMES: [&str; 6] = [
    "capture.dbn",
    "capture.dbn.zst",
    "capture.dbn.frag",
    "capture.v1.dbn.frag",
    "capture.v2.dbn.frag",
    "capture.v3.dbn.frag",
];

fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match tempfile::tempdir() {
        Ok(d) => d.keep(),
        Err(e) => panic!("no temporary directory: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    let [which, bytes @ ..] = data else {
        return;
    };
    let path = scratch_dir().join(NAMES[usize::from(*which) % NAMES.len()]);
    if let Err(e) = std::fs::write(&path, bytes) {
        panic!("cannot write {}: {e}", path.display());
    }
    let Ok(mut capture) = Capture::open(&path) else {
        return;
    };
    if let Ok(meta) = capture::stream_metadata(std::slice::from_ref(&capture)) {
        let _ = capture::encode_metadata(&meta);
    }
    let mut parts = [Event::default(); MAX_PARTS];
    let mut n = 0u64;
    let _ = capture.visit(|rec| {
        assert_eq!(rec.as_ref().len(), rec.record_size());
        assert!(rec.record_size() <= capture::MAX_DBN_RECORD);
        let _ = rec.raw_index_ts();
        let _ = Event::decode_parts(rec.as_ref(), n, 0, &mut parts);
        n += 1;
        ControlFlow::Continue(())
    });
    assert_eq!(capture.records(), n);
});
