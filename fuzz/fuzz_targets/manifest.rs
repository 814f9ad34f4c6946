//! The model registry's files: a version's `manifest.json` and a line's `active.json`, read by
//! `Registry::manifest`, `Registry::active`, `Registry::show` and `Registry::list`, and a manifest
//! that passes is validated as `tickpipe models validate` does (checksums, schema binding, model
//! load, goldens). The registry is a copy of the shipped one in a temporary directory; the input
//! replaces one of its files.
//!
//! Input: one byte choosing the model line (`score`, `regime`, `forecast`) and the file
//! (manifest of `v1`, or the active record), then the file's bytes.
//!
//! Properties: no panic; a manifest that reads back names the directory it was read from; an
//! artifact or goldens path never leaves the version directory.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tickpipe::registry_cmd::with_expected;
use tickpipe_models::registry::{ModelKind, Registry};

const LINES: [&str; 3] = ["score", "regime", "forecast"];

/// The shipped registry copied into a temporary directory, and the original bytes of the files
/// an input may replace.
struct Scratch {
    root: PathBuf,
    originals: Vec<(PathBuf, Vec<u8>)>,
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

fn scratch() -> &'static Scratch {
    static S: OnceLock<Scratch> = OnceLock::new();
    S.get_or_init(|| {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/registry");
        let root = match tempfile::tempdir() {
            Ok(d) => d.keep().join("registry"),
            Err(e) => panic!("no temporary directory: {e}"),
        };
        if let Err(e) = copy_dir(&shipped, &root) {
            panic!("cannot copy {}: {e}", shipped.display());
        }
        let mut originals = Vec::new();
        for line in LINES {
            for file in ["v1/manifest.json", "active.json"] {
                let path = root.join(line).join(file);
                let bytes = std::fs::read(&path).unwrap_or_default();
                originals.push((path, bytes));
            }
        }
        Scratch { root, originals }
    })
}

fuzz_target!(|data: &[u8]| {
    let [which, bytes @ ..] = data else {
        return;
    };
    let s = scratch();
    for (path, original) in &s.originals {
        if let Err(e) = std::fs::write(path, original) {
            panic!("cannot restore {}: {e}", path.display());
        }
    }
    let which = usize::from(*which) % s.originals.len();
    let (path, _) = &s.originals[which];
    if let Err(e) = std::fs::write(path, bytes) {
        panic!("cannot write {}: {e}", path.display());
    }
    let name = LINES[which / 2];
    let Ok(reg) = Registry::open(&s.root) else {
        panic!("the registry copy does not open");
    };
    let _ = reg.active(name);
    let _ = reg.list();
    let _ = reg.show(name);
    let Ok(manifest) = reg.manifest(name, "v1") else {
        return;
    };
    assert_eq!(
        (manifest.name.as_str(), manifest.model_version.as_str()),
        (name, "v1")
    );
    let vdir = reg.version_dir(name, "v1");
    for rel in [&manifest.artifact, &manifest.goldens] {
        let joined = vdir.join(rel);
        assert!(
            joined.starts_with(&vdir) && !rel.split('/').any(|c| c == ".."),
            "{rel:?} leaves the version directory"
        );
    }
    // The LSTM loads ONNX Runtime, which fuzzing does not need to exercise.
    if manifest.kind != ModelKind::OnnxLstm {
        let _ = with_expected(&reg, name, "v1", |e| reg.validate(name, "v1", e));
    }
});
