//! Faults of the peers around tickpipe, through the real binary and real processes: a full disk
//! under the recorder, a reader killed and restarted while the writer runs, and a writer killed
//! and restarted under a running engine. Rows of the fault matrix in `RELIABILITY.md`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A child process killed when dropped, so a failing test leaves no engine or writer behind.
struct Kid(Option<std::process::Child>);

impl Kid {
    fn get(&self) -> &std::process::Child {
        self.0.as_ref().unwrap()
    }
    fn take(mut self) -> std::process::Child {
        self.0.take().unwrap()
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn paced_replay(capture: &Path, ring: &Path, extra: &[&str]) -> Kid {
    let mut args = vec![
        "replay",
        s(capture),
        "--ring",
        s(ring),
        "--speed",
        "1",
        "--quiet",
    ];
    args.extend(extra);
    Kid(Some(spawn(&args)))
}

/// Disk full under the recorder (`/dev/full` fails every write with ENOSPC), with io_uring and
/// with plain writes: a clear error naming the file and the cause, a non-zero exit, no hang.
#[test]
fn recording_onto_a_full_disk_fails_loudly() {
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIPPED: /dev/full not present");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let capture = generated(dir.path(), 100_000, 5);
    for backend in [&[][..], &["--no-uring"][..]] {
        let ring = dir.path().join("full.ring");
        let _ = std::fs::remove_file(&ring);
        let replay = paced_replay(&capture, &ring, &[]);
        let mut args = vec!["record", "--ring", s(&ring), "--out", "/dev/full"];
        args.extend(backend);
        let rec = wait_output(spawn(&args), Duration::from_secs(60));
        let err = text(&rec.stderr);
        assert_eq!(rec.status.code(), Some(1), "{backend:?}: {err}");
        assert!(
            err.contains("/dev/full") && err.contains("No space left on device"),
            "{backend:?}: {err}"
        );
        signal(replay.get(), "INT");
        let _ = wait_output(replay.take(), Duration::from_secs(30));
    }
}

/// A reader killed with SIGKILL and started again while the writer runs: the new reader
/// resumes at the oldest record the ring still holds, says exactly how many records of the
/// stream it can no longer get (they were overwritten while it was down), and records the rest
/// contiguously through to the end, byte for byte, nothing torn or duplicated. The gap is loss
/// and is reported as such: exit 3, or 0 with `--allow-loss`.
#[test]
fn a_restarted_reader_resumes_at_the_oldest_record_held() {
    let dir = tempfile::tempdir().unwrap();
    let capture = generated(dir.path(), 100_000, 5);
    let ring = dir.path().join("restart.ring");
    // 2 MiB holds about 30,000 records (0.6 s of the stream): less than the capture, so the
    // restarted reader cannot see the start of the stream, yet enough that it is not lapped
    // while it starts.
    let replay = paced_replay(&capture, &ring, &["--capacity", "2M"]);
    let first_out = dir.path().join("first.dbn.zst");
    let first = Kid(Some(spawn(&[
        "record",
        "--ring",
        s(&ring),
        "--out",
        s(&first_out),
        "--wait",
        "30",
    ])));
    assert!(
        wait_until(Duration::from_secs(20), || ring.exists()
            && has_reader(&ring)),
        "first reader never attached"
    );
    std::thread::sleep(Duration::from_millis(400));
    signal(first.get(), "KILL");
    let _ = first.take().wait_with_output();
    std::thread::sleep(Duration::from_millis(600));
    let second_out = dir.path().join("second.dbn.zst");
    let second = Kid(Some(spawn(&[
        "record",
        "--ring",
        s(&ring),
        "--out",
        s(&second_out),
        "--wait",
        "30",
        "--allow-loss",
    ])));
    let replay = wait_output(replay.take(), Duration::from_secs(60));
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let rec = wait_output(second.take(), Duration::from_secs(60));
    let stdout = text(&rec.stdout);
    assert_eq!(rec.status.code(), Some(0), "{stdout}{}", text(&rec.stderr));
    let missed: usize = stdout
        .split("missed ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no missed count: {stdout}"));
    let expected = records(&[&capture]);
    let got = records(&[&second_out]);
    assert!(
        !got.is_empty() && got.len() < expected.len(),
        "the restarted reader saw {} of {} records",
        got.len(),
        expected.len()
    );
    assert_eq!(
        got.len() + missed,
        expected.len(),
        "recorded + missed = published"
    );
    assert!(
        got[..] == expected[missed..],
        "the restarted reader's records are not the rest of the stream"
    );
}

/// Starts `tickpipe run` with a health page on `ring`, returning the child once the page says OK.
fn healthy_engine(dir: &Path, ring: &Path, tag: &str) -> (Kid, PathBuf) {
    let page = dir.join(format!("{tag}.page"));
    let cfg = dir.join(format!("{tag}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "mode = \"shared\"\n[stages.ingest]\nidle = \"yielding\"\n[stages.features]\nidle = \"yielding\"\n\
             [stages.inference]\nidle = \"yielding\"\n[stages.health]\nidle = \"yielding\"\n\
             [health]\npage = \"{}\"\n",
            page.display()
        ),
    )
    .unwrap();
    let engine = Kid(Some(
        bin()
            .args(["run", "--config", s(&cfg), "--md-ring", s(ring)])
            .args(["--signals", s(&dir.join(format!("{tag}.sig")))])
            .args(["--from-oldest", "--wait", "30", "--stale-after", "300ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut last = String::new();
    let healthy = wait_until(Duration::from_secs(30), || {
        let out = run(&["health", "--page", s(&page), "--compact"]);
        last = text(&out.stdout);
        out.status.code() == Some(0)
    });
    assert!(healthy, "engine {tag} never reported OK: {last}");
    (engine, page)
}

/// A writer killed with SIGKILL under a running engine: the health page engages the kill switch
/// (reason `writer_dead`) within seconds (the exact tick is checked in
/// `pipeline/tests/health.rs`), `run` exits 4 naming the dead writer; a restarted
/// writer on the same path and a restarted engine are healthy again.
#[test]
fn a_killed_writer_engages_the_kill_switch_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let capture = generated(dir.path(), 400_000, 5);
    let ring = dir.path().join("md.ring");
    let replay = paced_replay(&capture, &ring, &[]);
    let (engine, page) = healthy_engine(dir.path(), &ring, "first");

    signal(replay.get(), "KILL");
    let _ = replay.take().wait_with_output();
    let killed = Instant::now();
    let mut reasons = serde_json::Value::Null;
    let engaged = wait_until(Duration::from_secs(5), || {
        let out = run(&["health", "--page", s(&page), "--compact"]);
        let j: serde_json::Value =
            serde_json::from_str(text(&out.stdout).trim()).unwrap_or_default();
        reasons = j["kill_switch"]["reasons"].clone();
        out.status.code() == Some(2) && j["kill_switch"]["engaged"] == true
    });
    assert!(engaged, "no kill switch after the writer died: {reasons}");
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "kill switch took {:?}",
        killed.elapsed()
    );
    assert!(
        reasons
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "writer_dead")),
        "{reasons}"
    );
    let out = wait_output(engine.take(), Duration::from_secs(30));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("market-data writer") && err.contains("is gone"),
        "{err}"
    );

    // Restart, as a supervisor would: engine and writer together, the engine first. It finds
    // the dead writer's ring, waits, and attaches once the new writer has replaced it.
    let (engine, page) = {
        let (d, r) = (dir.path().to_path_buf(), ring.clone());
        let engine = std::thread::spawn(move || healthy_engine(&d, &r, "second"));
        std::thread::sleep(Duration::from_millis(500));
        let replay = paced_replay(&capture, &ring, &[]);
        let (engine, page) = engine.join().unwrap();
        ((engine, replay), page)
    };
    let (engine, replay) = engine;
    let out = run(&["health", "--page", s(&page), "--compact"]);
    let j: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(j["kill_switch"]["engaged"], false, "{j}");
    signal(engine.get(), "INT");
    let out = wait_output(engine.take(), Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    signal(replay.get(), "INT");
    let _ = wait_output(replay.take(), Duration::from_secs(30));
}
