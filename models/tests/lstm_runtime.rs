//! Finding and fetching the ONNX Runtime library: every way it can fail gives a clear error that
//! names what was tried, and nothing hangs.
//!
//! `locate` is tested in-process with explicit configurations (it does not touch `ort`). The
//! environment-driven path through `LstmModel::load` initialises `ort` once per process, so those
//! cases re-run this test binary as a child process with the variables set (`child_probe`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tickpipe_models::lstm::runtime::{self, LIB_NAME, RuntimeConfig, RuntimeError};
use tickpipe_models::lstm::{LstmError, LstmModel};

fn scratch(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lstm-runtime-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn config(cache_root: &Path) -> RuntimeConfig {
    RuntimeConfig {
        ort_lib: None,
        cache_root: Some(cache_root.to_path_buf()),
        offline: false,
        python: OsString::from("/nonexistent/python3"),
        fetch_timeout: Duration::from_secs(30),
    }
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn fake_elf(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"\x7fELF\x02\x01\x01\0rest of a library").unwrap();
}

#[test]
fn cache_path_follows_the_documented_layout() {
    let c = config(Path::new("/var/cache/tp"));
    assert_eq!(
        c.cache_path().unwrap(),
        Path::new("/var/cache/tp/onnxruntime-1.31.1/libonnxruntime.so.1.31.1")
    );
}

#[test]
fn explicit_library_that_is_missing_is_an_error_not_a_fallback() {
    let dir = scratch("env-missing");
    // Even with a valid cache entry, a wrong explicit path must not be silently replaced.
    let mut c = config(&dir);
    fake_elf(&c.cache_path().unwrap());
    c.ort_lib = Some(dir.join("nope").join(LIB_NAME));
    let err = runtime::locate(&c).unwrap_err();
    assert!(matches!(err, RuntimeError::EnvLibMissing { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("TICKPIPE_ORT_LIB") && msg.contains("nope"),
        "{msg}"
    );
}

#[test]
fn explicit_library_that_is_not_elf_is_refused() {
    let dir = scratch("env-not-elf");
    let lib = dir.join("libonnxruntime.so");
    std::fs::write(&lib, b"#!/bin/sh\necho not a library\n").unwrap();
    let mut c = config(&dir);
    c.ort_lib = Some(lib.clone());
    let err = runtime::locate(&c).unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::InvalidLibrary {
                source_name: "TICKPIPE_ORT_LIB",
                ..
            }
        ),
        "{err}"
    );
    std::fs::write(&lib, b"").unwrap();
    let err = runtime::locate(&c).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}

#[test]
fn explicit_library_is_used_as_given() {
    let dir = scratch("env-ok");
    let lib = dir.join("custom.so");
    fake_elf(&lib);
    let mut c = config(&dir);
    c.ort_lib = Some(lib.clone());
    assert_eq!(
        runtime::locate(&c).unwrap(),
        std::fs::canonicalize(&lib).unwrap()
    );
}

#[test]
fn cache_hit_does_not_fetch() {
    let dir = scratch("cache-hit");
    let c = config(&dir); // the python is unusable: a fetch would fail
    fake_elf(&c.cache_path().unwrap());
    assert_eq!(runtime::locate(&c).unwrap(), c.cache_path().unwrap());
}

#[test]
fn corrupt_cache_entry_is_reported() {
    let dir = scratch("cache-bad");
    let c = config(&dir);
    let p = c.cache_path().unwrap();
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"<html>proxy error</html>").unwrap();
    let err = runtime::locate(&c).unwrap_err();
    assert!(
        matches!(
            &err,
            RuntimeError::InvalidLibrary {
                source_name: "the cache",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn offline_without_cache_tells_how_to_provide_the_library() {
    let dir = scratch("offline");
    let mut c = config(&dir);
    c.offline = true;
    let err = runtime::locate(&c).unwrap_err();
    assert!(matches!(err, RuntimeError::Offline { .. }), "{err}");
    let msg = err.to_string();
    for needle in [
        "TICKPIPE_ORT_LIB",
        "TICKPIPE_ORT_OFFLINE",
        "onnxruntime==1.31.1",
        "onnxruntime-1.31.1/libonnxruntime.so.1.31.1",
    ] {
        assert!(msg.contains(needle), "missing {needle:?} in: {msg}");
    }
}

#[test]
fn no_cache_folder_is_reported() {
    let mut c = config(Path::new("/unused"));
    c.cache_root = None;
    assert_eq!(runtime::locate(&c).unwrap_err(), RuntimeError::NoCacheDir);
}

#[test]
fn python_that_cannot_start_is_a_fetch_error_naming_the_command() {
    let dir = scratch("no-python");
    let err = runtime::locate(&config(&dir)).unwrap_err();
    match &err {
        RuntimeError::Fetch {
            command, outcome, ..
        } => {
            assert!(
                command.starts_with(
                    "/nonexistent/python3 -m pip download --no-deps --only-binary=:all:"
                ),
                "{command}"
            );
            assert!(command.contains("onnxruntime==1.31.1"), "{command}");
            assert!(outcome.contains("could not be started"), "{outcome}");
        }
        e => panic!("{e}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("TICKPIPE_ORT_LIB is not set") && msg.contains(LIB_NAME),
        "{msg}"
    );
    // The scratch download folder is cleaned up; no library appears.
    let cache_dir = config(&dir)
        .cache_path()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 0);
}

#[test]
fn failing_pip_reports_its_stderr_tail() {
    let dir = scratch("pip-fails");
    let mut c = config(&dir);
    c.python = write_script(
        &dir,
        "fake-python",
        "echo 'Collecting onnxruntime==1.31.1' >&2\necho 'ERROR: No matching distribution found for onnxruntime==1.31.1' >&2\nexit 1",
    )
    .into_os_string();
    let err = runtime::locate(&c).unwrap_err();
    match &err {
        RuntimeError::Fetch {
            outcome,
            stderr_tail,
            ..
        } => {
            assert!(outcome.contains("failed"), "{outcome}");
            assert!(
                stderr_tail.ends_with("No matching distribution found for onnxruntime==1.31.1"),
                "{stderr_tail}"
            );
        }
        e => panic!("{e}"),
    }
    assert!(!c.cache_path().unwrap().exists());
}

#[test]
fn pip_that_leaves_no_wheel_is_reported() {
    let dir = scratch("pip-no-wheel");
    let mut c = config(&dir);
    c.python = write_script(&dir, "fake-python", "exit 0").into_os_string();
    let err = runtime::locate(&c).unwrap_err();
    assert!(
        matches!(&err, RuntimeError::Fetch { outcome, .. } if outcome.contains("no onnxruntime wheel")),
        "{err}"
    );
}

#[test]
fn hanging_fetch_is_killed_at_the_timeout() {
    let dir = scratch("pip-hangs");
    let mut c = config(&dir);
    c.python = write_script(
        &dir,
        "fake-python",
        "echo 'Downloading...' >&2\nexec sleep 600",
    )
    .into_os_string();
    c.fetch_timeout = Duration::from_secs(1);
    let start = Instant::now();
    let err = runtime::locate(&c).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "returned after {:?}",
        start.elapsed()
    );
    match &err {
        RuntimeError::Fetch {
            outcome,
            stderr_tail,
            ..
        } => {
            assert!(outcome.contains("timed out after 1 s"), "{outcome}");
            assert_eq!(stderr_tail, "Downloading...");
        }
        e => panic!("{e}"),
    }
}

/// The real fetch from PyPI, twice at once into one empty cache: both racers succeed, and the
/// installed file is a complete ELF library (tens of MB, no leftovers). Needs PyPI; skipped
/// with a note when `TICKPIPE_ORT_OFFLINE` is set.
#[test]
fn racing_real_fetches_install_one_complete_library() {
    if std::env::var_os("TICKPIPE_ORT_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0") {
        println!("skipped: TICKPIPE_ORT_OFFLINE is set, no PyPI fetch");
        return;
    }
    let dir = scratch("real-fetch");
    let mut c = config(&dir);
    c.python = std::env::var_os("TICKPIPE_PYTHON").unwrap_or_else(|| OsString::from("python3"));
    c.fetch_timeout = Duration::from_secs(300);
    let racers: Vec<_> = (0..2)
        .map(|_| {
            let c = c.clone();
            std::thread::spawn(move || runtime::locate(&c))
        })
        .collect();
    for r in racers {
        let path = r.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(path, c.cache_path().unwrap());
    }
    let bytes = std::fs::read(c.cache_path().unwrap()).unwrap();
    assert_eq!(&bytes[..4], b"\x7fELF");
    // The wheel's member is about 29 MB; a truncated install would be far smaller.
    assert!(bytes.len() > 10_000_000, "{} bytes", bytes.len());
    // Only the library is left: no scratch downloads, no temporary files.
    let names: Vec<String> = std::fs::read_dir(c.cache_path().unwrap().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [LIB_NAME]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_environment_values_are_refused() {
    // Parsing only: run in a child so the variable never leaks into this process.
    let out = child("invalid-env", &[("TICKPIPE_ORT_OFFLINE", "maybe")]);
    assert!(
        out.contains("TICKPIPE_ORT_OFFLINE=\"maybe\" is not understood"),
        "{out}"
    );
    let out = child("invalid-env", &[("TICKPIPE_ORT_FETCH_TIMEOUT_S", "0")]);
    assert!(
        out.contains("TICKPIPE_ORT_FETCH_TIMEOUT_S=\"0\" is not understood"),
        "{out}"
    );
}

#[test]
fn load_with_a_bad_tickpipe_ort_lib_gives_the_clear_error() {
    let out = child(
        "load-error",
        &[(
            "TICKPIPE_ORT_LIB",
            "/nonexistent/dir/libonnxruntime.so.1.31.1",
        )],
    );
    assert!(
        out.contains("TICKPIPE_ORT_LIB is set to `/nonexistent/dir/libonnxruntime.so.1.31.1`, but no file is there"),
        "{out}"
    );
}

#[test]
fn load_with_an_elf_that_is_not_onnx_runtime_is_refused() {
    // This test executable is an ELF file but not ONNX Runtime: `ort` must refuse it cleanly.
    let exe = std::env::current_exe().unwrap();
    let out = child("load-error", &[("TICKPIPE_ORT_LIB", exe.to_str().unwrap())]);
    assert!(out.contains("loading ONNX Runtime from"), "{out}");
}

#[test]
fn load_offline_with_empty_cache_gives_the_offline_error() {
    let dir = scratch("child-offline");
    let out = child(
        "load-error",
        &[
            ("TICKPIPE_ORT_OFFLINE", "1"),
            ("TICKPIPE_CACHE", dir.to_str().unwrap()),
        ],
    );
    assert!(
        out.contains("TICKPIPE_ORT_OFFLINE forbids fetching it"),
        "{out}"
    );
}

/// Re-runs this binary's `child_probe` test with `vars` set; returns its output, which must
/// hold the line the child prints. The parent's own `TICKPIPE_*` variables are removed first.
fn child(mode: &str, vars: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["child_probe", "--exact", "--nocapture", "--test-threads=1"]);
    for (k, _) in std::env::vars() {
        if k.starts_with("TICKPIPE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("TICKPIPE_LSTM_CHILD", mode);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed: {text}");
    assert!(
        text.contains("CHILD-ERROR: "),
        "child printed no error: {text}"
    );
    text
}

/// Does nothing unless started by `child`: then performs the requested operation, which must
/// fail, and prints its error.
#[test]
fn child_probe() {
    let Ok(mode) = std::env::var("TICKPIPE_LSTM_CHILD") else {
        return;
    };
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/lstm/lstm_h32.onnx");
    let err: String = match mode.as_str() {
        "invalid-env" => RuntimeConfig::from_env().unwrap_err().to_string(),
        "load-error" => match LstmModel::load(&model) {
            Err(e @ LstmError::Runtime(_)) => {
                // The outcome is kept: a second attempt gives the same error, without retrying.
                let again = LstmModel::load(&model).unwrap_err().to_string();
                assert_eq!(again, e.to_string());
                assert_eq!(
                    runtime::ensure_runtime().unwrap_err().to_string(),
                    e.to_string()
                );
                e.to_string()
            }
            Err(e) => panic!("expected a runtime error, got: {e}"),
            Ok(_) => panic!("loaded despite the bad runtime configuration"),
        },
        m => panic!("unknown child mode {m}"),
    };
    println!("CHILD-ERROR: {err}");
}
