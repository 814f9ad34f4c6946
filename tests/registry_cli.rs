//! `tickpipe models list|show|validate|promote|rollback|register` on a scratch copy of the
//! example registry: the default registry is `models/registry` under the working directory,
//! promote and rollback rewrite `active.json`, and a refused version exits 1 with one line that
//! names the failed rule while `active.json` stays as it was.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A working directory holding a copy of the example registry at `models/registry`.
fn workdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    copy_dir(&repo("models/registry"), &t.path().join("models/registry"));
    t
}

fn tickpipe(cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tickpipe"))
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("spawn tickpipe");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{out:?}"
    );
    out
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = tickpipe(cwd, args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr, checked to be one line.
fn fails(cwd: &Path, args: &[&str]) -> String {
    let out = tickpipe(cwd, args);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

fn active(cwd: &Path, name: &str) -> (String, Option<String>) {
    let p = cwd.join("models/registry").join(name).join("active.json");
    let v: serde_json::Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
    (
        v["active"].as_str().unwrap().to_string(),
        v["previous"].as_str().map(str::to_string),
    )
}

fn active_bytes(cwd: &Path, name: &str) -> Vec<u8> {
    fs::read(cwd.join("models/registry").join(name).join("active.json")).unwrap()
}

#[test]
fn list_show_and_validate_the_example_registry() {
    let t = workdir();
    let w = t.path();
    let list = ok(w, &["models", "list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0].starts_with("forecast  active=v1"), "{list}");
    assert!(lines[1].starts_with("regime  active=v1"), "{list}");
    assert!(
        lines[2].starts_with("score  active=v2  previous=v1  versions=v1,v2"),
        "{list}"
    );

    let show = ok(w, &["models", "show", "score"]);
    assert!(
        show.contains("v1: xgboost artifact score.json schema tickpipe.features v1"),
        "{show}"
    );

    // Each model validates against the pipeline's own schemas (default: the active version).
    for name in ["score", "regime", "forecast"] {
        let s = ok(w, &["models", "validate", name]);
        assert!(s.starts_with("valid: "), "{s}");
    }
    let s = ok(w, &["models", "validate", "score", "v1"]);
    assert!(s.contains("score v1 (xgboost)"), "{s}");

    // --registry overrides the default.
    let other = tempfile::tempdir().unwrap();
    let reg = w.join("models/registry");
    let s = ok(
        other.path(),
        &["models", "list", "--registry", reg.to_str().unwrap()],
    );
    assert_eq!(s, list);
    let err = fails(other.path(), &["models", "list"]);
    assert!(err.contains("no registry"), "{err}");
}

#[test]
fn promote_and_rollback_round_trip() {
    let t = workdir();
    let w = t.path();
    assert_eq!(active(w, "score"), ("v2".into(), Some("v1".into())));
    let s = ok(w, &["models", "rollback", "score"]);
    assert!(s.starts_with("rolled back to: score v1"), "{s}");
    assert_eq!(active(w, "score"), ("v1".into(), Some("v2".into())));
    let s = ok(w, &["models", "promote", "score", "v2"]);
    assert!(s.starts_with("promoted: score v2"), "{s}");
    assert_eq!(active(w, "score"), ("v2".into(), Some("v1".into())));
    let err = fails(w, &["models", "rollback", "regime"]);
    assert!(err.contains("no previous version"), "{err}");
}

#[test]
fn refusals_name_the_rule_and_leave_active_unchanged() {
    // Corrupt artifact.
    let t = workdir();
    let w = t.path();
    let p = w.join("models/registry/score/v1/score.json");
    let mut b = fs::read(&p).unwrap();
    b[1000] ^= 0x04;
    fs::write(&p, b).unwrap();
    let before = active_bytes(w, "score");
    let err = fails(w, &["models", "promote", "score", "v1"]);
    assert!(err.contains("rule checksum failed"), "{err}");
    let err = fails(w, &["models", "rollback", "score"]);
    assert!(err.contains("rule checksum failed"), "{err}");
    assert_eq!(active_bytes(w, "score"), before);

    // Truncated manifest.
    let t = workdir();
    let w = t.path();
    let p = w.join("models/registry/regime/v1/manifest.json");
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..b.len() - 10]).unwrap();
    let before = active_bytes(w, "regime");
    let err = fails(w, &["models", "promote", "regime", "v1"]);
    assert!(err.contains("rule manifest failed"), "{err}");
    let err = fails(w, &["models", "validate", "regime"]);
    assert!(err.contains("rule manifest failed"), "{err}");
    assert_eq!(active_bytes(w, "regime"), before);

    // Latency budget 0.
    let t = workdir();
    let w = t.path();
    let p = w.join("models/registry/forecast/v1/manifest.json");
    let text = fs::read_to_string(&p).unwrap();
    let edited = text.replace(
        "\"latency_budget_us\": 20000.0",
        "\"latency_budget_us\": 0.0",
    );
    assert_ne!(text, edited);
    fs::write(&p, edited).unwrap();
    let err = fails(w, &["models", "validate", "forecast", "v1"]);
    assert!(err.contains("rule latency failed"), "{err}");

    // Schema: a manifest claiming version 2 of the feature schema.
    let t = workdir();
    let w = t.path();
    let p = w.join("models/registry/score/v1/manifest.json");
    let text = fs::read_to_string(&p).unwrap();
    let edited = text.replace("\"version\": 1\n  },", "\"version\": 2\n  },");
    assert_ne!(text, edited);
    fs::write(&p, edited).unwrap();
    let err = fails(w, &["models", "promote", "score", "v1"]);
    assert!(err.contains("rule schema failed"), "{err}");

    // Unknown names.
    let err = fails(w, &["models", "promote", "score", "v9"]);
    assert!(err.contains("no version"), "{err}");
    let err = fails(w, &["models", "show", "nope"]);
    assert!(err.contains("no model named"), "{err}");
}

#[test]
fn register_records_goldens_and_the_version_promotes() {
    let t = tempfile::tempdir().unwrap();
    let w = t.path();
    let mut csv = String::from("bar_log_trades,bar_log_volume,bar_log_range,bar_log_return\n");
    for i in 0..12 {
        let x = f64::from(i);
        csv.push_str(&format!(
            "{},{},{},{}\n",
            4.0 + x * 0.1,
            6.0 - x * 0.05,
            -7.5 + x * 0.02,
            0.001 * (x - 6.0)
        ));
    }
    fs::write(w.join("bars.csv"), csv).unwrap();
    let onnx = repo("models/fixtures/lstm/lstm_h32.onnx");
    let s = ok(
        w,
        &[
            "models",
            "register",
            "--registry",
            "reg",
            "--name",
            "fc",
            "--version",
            "v1",
            "--kind",
            "onnx-lstm",
            "--artifact",
            onnx.to_str().unwrap(),
            "--goldens-input",
            "bars.csv",
            "--metric",
            "rmse=0.02",
            "--tolerance",
            "1e-5",
        ],
    );
    assert!(
        s.contains("registered fc v1 (onnx-lstm), 2 files, 12 golden rows"),
        "{s}"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(w.join("reg/fc/v1/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["schema"]["name"], "tickpipe.bars");
    assert_eq!(m["metrics"]["rmse"], 0.02);
    // Goldens are stored in model input order, not the CSV's.
    let g: serde_json::Value =
        serde_json::from_slice(&fs::read(w.join("reg/fc/v1/goldens.json")).unwrap()).unwrap();
    assert_eq!(g["features"][0], "bar_log_return");
    assert_eq!(g["inputs"][0][0], -0.006);
    ok(w, &["models", "promote", "fc", "v1", "--registry", "reg"]);
    let err = fails(
        w,
        &[
            "models",
            "register",
            "--registry",
            "reg",
            "--name",
            "fc",
            "--version",
            "v1",
            "--kind",
            "sjm",
            "--artifact",
            "x",
            "--goldens-input",
            "bars.csv",
        ],
    );
    assert!(err.contains("register fc v1"), "{err}");
}
