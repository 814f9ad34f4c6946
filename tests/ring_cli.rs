//! The data path in, end to end through the `tickpipe` binary: replay and record as separate
//! processes sharing a real mapped ring, on real and generated captures, with laps, a killed
//! writer and bad input.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A generated capture replayed at 1x (about two seconds) into `name.ring` while a `record`
/// process (with `record_args` added) drains it into `name.dbn[.zst]`; returns once the recorder
/// is attached.
struct PacedPair {
    synth: PathBuf,
    ring: PathBuf,
    out: PathBuf,
    replay: std::process::Child,
    recorder: std::process::Child,
}

/// Checks a recording stopped mid-stream holds a non-empty, strict prefix of the capture.
fn assert_strict_prefix(synth: &Path, out: &Path) {
    let got = records(&[out]);
    let expected = records(&[synth]);
    assert!(
        !got.is_empty() && got.len() < expected.len(),
        "stopped mid-stream: {} records",
        got.len()
    );
    assert!(
        got[..] == expected[..got.len()],
        "a recorded record differs from the capture"
    );
}

fn paced_pair(dir: &Path, name: &str, replay_args: &[&str], record_args: &[&str]) -> PacedPair {
    let synth = generated(dir, 100_000, 7);
    let ring = dir.join(format!("{name}.ring"));
    let out = dir.join(format!("{name}.dbn.zst"));
    let mut args = vec![
        "replay",
        s(&synth),
        "--ring",
        s(&ring),
        "--speed",
        "1",
        "--quiet",
    ];
    args.extend(replay_args);
    let replay = spawn(&args);
    let mut args = vec![
        "record",
        "--ring",
        s(&ring),
        "--out",
        s(&out),
        "--wait",
        "30",
    ];
    args.extend(record_args);
    let recorder = spawn(&args);
    assert!(
        wait_until(Duration::from_secs(20), || ring.exists()
            && has_reader(&ring)),
        "recorder never attached"
    );
    PacedPair {
        synth,
        ring,
        out,
        replay,
        recorder,
    }
}

/// Replays `captures` into a fresh ring while a separate `record` process drains it, and checks
/// the recording holds exactly the same records, byte for byte.
fn round_trip(dir: &Path, captures: &[&Path], extra: &[&str]) -> (String, String) {
    let ring = dir.join("md.ring");
    let out = dir.join("out.dbn.zst");
    let _ = std::fs::remove_file(&ring);
    let recorder = spawn(&[
        "record",
        "--ring",
        s(&ring),
        "--out",
        s(&out),
        "--wait",
        "30",
    ]);
    let mut args = vec!["replay"];
    args.extend(captures.iter().map(|p| s(p)));
    args.extend(["--ring", s(&ring), "--quiet"]);
    args.extend(extra);
    let replay = run(&args);
    assert!(
        replay.status.success(),
        "replay failed: {}",
        text(&replay.stderr)
    );
    let rec = wait_output(recorder, Duration::from_secs(60));
    assert!(
        rec.status.success(),
        "record failed: {}{}",
        text(&rec.stdout),
        text(&rec.stderr)
    );
    let expected = records(captures);
    let got = records(&[&out]);
    assert_eq!(got.len(), expected.len(), "record count");
    assert!(got == expected, "recorded records differ from the captures");
    (text(&replay.stdout), text(&rec.stdout))
}

#[test]
fn es_two_days_round_trip_byte_for_byte() {
    let (Some(a), Some(b)) = (
        data_file("dbn/es-mbo/esh4-glbx-mdp3-20231224.mbo.dbn.zst"),
        data_file("dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (replay, record) = round_trip(dir.path(), &[&a, &b], &["--speed", "max"]);
    assert!(replay.contains("77517 records"), "{replay}");
    assert!(
        record.contains("77517 records") && record.contains("missed 0"),
        "{record}"
    );
    // The recording is a valid DBN file with the stream's metadata.
    let capture = tickpipe::capture::Capture::open(&dir.path().join("out.dbn.zst")).unwrap();
    let meta = capture.metadata().expect("metadata");
    assert_eq!((meta.version, meta.dataset.as_str()), (1, "GLBX.MDP3"));
}

#[test]
fn generated_capture_round_trips_with_loops_and_a_small_ring() {
    let dir = tempfile::tempdir().unwrap();
    let synth = generated(dir.path(), 20_000, 7);
    // A 1 MiB ring holds ~13k frames and wraps three times over the 40k published; paced at 1x
    // (~50k records/s) the recorder attaches long before the first wrap and then keeps up.
    let ring = dir.path().join("md.ring");
    let out = dir.path().join("out.dbn");
    let recorder = spawn(&["record", "--ring", s(&ring), "--out", s(&out)]);
    let replay = run(&[
        "replay",
        s(&synth),
        "--ring",
        s(&ring),
        "--loop",
        "2",
        "--speed",
        "1",
        "--capacity",
        "1M",
        "--quiet",
    ]);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    assert!(
        text(&replay.stdout).contains("40000 records"),
        "{}",
        text(&replay.stdout)
    );
    assert!(
        text(&replay.stdout).contains("pacing error"),
        "{}",
        text(&replay.stdout)
    );
    let rec = wait_output(recorder, Duration::from_secs(60));
    assert!(
        rec.status.success(),
        "{}{}",
        text(&rec.stdout),
        text(&rec.stderr)
    );
    let once = records(&[&synth]);
    let expected: Vec<_> = once.iter().chain(once.iter()).cloned().collect();
    assert!(records(&[&out]) == expected);
}

fn fixture_files() -> Option<Vec<PathBuf>> {
    let root = data_dir()?;
    let mut files = Vec::new();
    for sub in ["dbn/fixtures", "dbn/databento-python"] {
        let mut stack = vec![root.join(sub)];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).ok()? {
                let path = entry.ok()?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.to_string_lossy().contains(".dbn") {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    Some(files)
}

/// Every DBN fixture (all schemas, versions 1 to 3, zstd or not, fragments, odd metadata)
/// replays into a ring, and what a reader drains afterwards is the file's records exactly.
#[test]
fn every_fixture_replays_and_records_exactly() {
    let Some(files) = fixture_files() else {
        eprintln!("SKIPPED: ../shared/data/dbn fixtures not found");
        return;
    };
    assert!(
        files.len() > 100,
        "expected the full fixture set, found {}",
        files.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let ring = dir.path().join("fx.ring");
    for file in &files {
        let replay = run(&[
            "replay",
            s(file),
            "--ring",
            s(&ring),
            "--quiet",
            "--capacity",
            "1M",
        ]);
        assert!(
            replay.status.success(),
            "{}: {}",
            file.display(),
            text(&replay.stderr)
        );
        // The ring has not wrapped, so a late reader still gets everything from the start.
        let out = dir.path().join("fx.dbn");
        let rec = run(&[
            "record",
            "--ring",
            s(&ring),
            "--out",
            s(&out),
            "--wait",
            "1",
        ]);
        assert!(
            rec.status.success(),
            "{}: {}",
            file.display(),
            text(&rec.stderr)
        );
        assert!(
            records(&[&out]) == records(&[file]),
            "{}: records differ",
            file.display()
        );
    }
}

/// A reader stopped (SIGSTOP) while the writer runs is lapped; it reports exactly how many
/// records it missed, and what it did record is the stream with exactly those holes.
#[test]
fn lapped_reader_reports_exact_loss_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let p = paced_pair(dir.path(), "lap", &["--capacity", "64K"], &[]);
    std::thread::sleep(Duration::from_millis(100));
    signal(&p.recorder, "STOP");
    std::thread::sleep(Duration::from_millis(400));
    signal(&p.recorder, "CONT");
    let replay = wait_output(p.replay, Duration::from_secs(60));
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let rec = wait_output(p.recorder, Duration::from_secs(60));
    let stdout = text(&rec.stdout);
    assert_eq!(
        rec.status.code(),
        Some(3),
        "loss must fail the recording: {stdout}{}",
        text(&rec.stderr)
    );
    assert!(
        text(&rec.stderr).contains("lapped by the writer"),
        "{}",
        text(&rec.stderr)
    );
    let missed: usize = stdout
        .split("missed ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("missed count");
    let expected = records(&[&p.synth]);
    let got = records(&[&p.out]);
    assert!(
        missed > 0,
        "a 400 ms stop at 50k records/s must lap a 64 KiB ring"
    );
    assert_eq!(
        got.len() + missed,
        expected.len(),
        "delivered + missed = published"
    );
    // What was recorded is the stream in order with holes: match it as a subsequence.
    let mut it = expected.iter();
    assert!(
        got.iter().all(|r| it.any(|e| e == r)),
        "recorded records are not an in-order subsequence"
    );
}

/// A writer killed with SIGKILL mid-stream: the reader ends with a clear "writer died", exit 4,
/// everything it recorded is intact (no torn record), and the heartbeat shows the writer stale.
#[test]
fn killed_writer_never_yields_a_torn_record() {
    let dir = tempfile::tempdir().unwrap();
    let p = paced_pair(dir.path(), "kill", &[], &["--stale-after", "200ms"]);
    std::thread::sleep(Duration::from_millis(300));
    signal(&p.replay, "KILL");
    let _ = wait_output(p.replay, Duration::from_secs(10));
    let rec = wait_output(p.recorder, Duration::from_secs(30));
    assert_eq!(
        rec.status.code(),
        Some(4),
        "{}{}",
        text(&rec.stdout),
        text(&rec.stderr)
    );
    assert!(
        text(&rec.stderr).contains("writer died"),
        "{}",
        text(&rec.stderr)
    );
    assert_strict_prefix(&p.synth, &p.out);
    let stat = text(&run(&["ring", "stat", s(&p.ring)]).stdout);
    assert!(stat.contains("process is gone"), "{stat}");
    let age = stat
        .lines()
        .find(|l| l.contains("heartbeat age"))
        .expect("heartbeat line");
    assert!(
        age.ends_with(" ms") || age.ends_with(" s"),
        "heartbeat must be stale: {age}"
    );
}

#[test]
fn ring_files_are_private_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let synth = generated(dir.path(), 100, 7);
    let ring = dir.path().join("p.ring");
    assert!(
        run(&["replay", s(&synth), "--ring", s(&ring), "--quiet"])
            .status
            .success()
    );
    assert_eq!(
        std::fs::metadata(&ring).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let grouped = dir.path().join("g.ring");
    let res = run(&[
        "replay",
        s(&synth),
        "--ring",
        s(&grouped),
        "--group",
        "0",
        "--quiet",
    ]);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert_eq!(
        std::fs::metadata(&grouped).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let res = run(&[
        "replay",
        s(&synth),
        "--ring",
        s(&grouped),
        "--group",
        "no-such-group-xyz",
        "--quiet",
    ]);
    assert!(!res.status.success() && text(&res.stderr).contains("no-such-group-xyz"));
}

fn assert_fails(args: &[&str], needle: &str) {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} should fail");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(needle),
        "{args:?}: expected {needle:?} in: {stderr}"
    );
}

#[test]
fn bad_captures_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let synth = generated(dir.path(), 1000, 7);
    let ring = dir.path().join("bad.ring");
    let plain = dir.path().join("plain.dbn");
    assert!(
        run(&["gen", "--events", "10", "--out", s(&plain)])
            .status
            .success()
    );
    let bytes = std::fs::read(&plain).unwrap();
    let truncated = dir.path().join("truncated.dbn");
    std::fs::write(&truncated, &bytes[..bytes.len() - 13]).unwrap();
    assert_fails(
        &["replay", s(&truncated), "--ring", s(&ring)],
        "truncated after 9 records",
    );
    let zst = std::fs::read(&synth).unwrap();
    let truncated_zst = dir.path().join("truncated.dbn.zst");
    std::fs::write(&truncated_zst, &zst[..zst.len() / 2]).unwrap();
    assert_fails(
        &["replay", s(&truncated_zst), "--ring", s(&ring)],
        "truncated.dbn.zst",
    );
    let text_file = dir.path().join("readme.dbn");
    std::fs::write(&text_file, "not market data\n").unwrap();
    assert_fails(
        &["replay", s(&text_file), "--ring", s(&ring)],
        "not a DBN file",
    );
    assert_fails(
        &["replay", "/nonexistent/x.dbn", "--ring", s(&ring)],
        "No such file",
    );
    let mut future = bytes.clone();
    future[3] = 9;
    let future_path = dir.path().join("future.dbn");
    std::fs::write(&future_path, &future).unwrap();
    assert_fails(
        &["replay", s(&future_path), "--ring", s(&ring)],
        "future.dbn",
    );
    assert_fails(
        &["replay", s(&synth), "--ring", s(&ring), "--speed", "fast"],
        "speed must be",
    );
    assert_fails(
        &[
            "replay",
            s(&synth),
            "--ring",
            s(&ring),
            "--capacity",
            "1000",
        ],
        "capacity",
    );
    assert_fails(
        &[
            "gen",
            "--events",
            "0",
            "--out",
            s(&dir.path().join("z.dbn")),
        ],
        "events must be at least 1",
    );
}

/// Writes a ring file by hand with a header patched at `word` to `value`.
fn patched_ring(dir: &Path, name: &str, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let synth = generated(dir, 100, 7);
    let ring = dir.join(name);
    assert!(
        run(&["replay", s(&synth), "--ring", s(&ring), "--quiet"])
            .status
            .success()
    );
    let mut bytes = std::fs::read(&ring).unwrap();
    patch(&mut bytes);
    std::fs::write(&ring, &bytes).unwrap();
    ring
}

#[test]
fn bad_rings_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let magic = patched_ring(d, "magic.ring", |b| b[..8].copy_from_slice(b"NOTARING"));
    let version = patched_ring(d, "version.ring", |b| {
        b[8..16].copy_from_slice(&7u64.to_le_bytes())
    });
    let small = patched_ring(d, "small.ring", |b| b.truncate(8192));
    let out = d.join("o.dbn");
    for (ring, needle) in [
        (&magic, "bad magic"),
        (&version, "layout version 7"),
        (&small, "needs"),
    ] {
        assert_fails(
            &["record", "--ring", s(ring), "--out", s(&out), "--wait", "0"],
            needle,
        );
        assert_fails(&["ring", "stat", s(ring)], needle);
    }
    // A file shorter than a header is "not sized yet": waiting for it times out with that state.
    let stub = d.join("stub.ring");
    std::fs::write(&stub, b"x").unwrap();
    assert_fails(
        &[
            "record",
            "--ring",
            s(&stub),
            "--out",
            s(&out),
            "--wait",
            "0.05",
        ],
        "not sized yet",
    );
    assert_fails(
        &[
            "record",
            "--ring",
            s(&d.join("absent.ring")),
            "--out",
            s(&out),
            "--wait",
            "0.05",
        ],
        "no file yet",
    );
    // A header that is all zeros is a writer still initialising.
    let zeros = d.join("zeros.ring");
    std::fs::write(&zeros, vec![0u8; 8192]).unwrap();
    assert_fails(
        &[
            "record",
            "--ring",
            s(&zeros),
            "--out",
            s(&out),
            "--wait",
            "0.05",
        ],
        "version not written",
    );
}

/// A ring file truncated by another process while a reader has it mapped ends the reader with a
/// message naming the file and status 74, not a bare SIGBUS.
#[test]
fn ring_truncated_while_mapped_is_a_clear_exit() {
    let dir = tempfile::tempdir().unwrap();
    let p = paced_pair(dir.path(), "trunc", &[], &[]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p.ring)
        .unwrap()
        .set_len(0)
        .unwrap();
    let rec = wait_output(p.recorder, Duration::from_secs(30));
    let replay = wait_output(p.replay, Duration::from_secs(30));
    for (who, res) in [("record", &rec), ("replay", &replay)] {
        assert_eq!(res.status.code(), Some(74), "{who}: {}", text(&res.stderr));
        let stderr = text(&res.stderr);
        assert!(
            stderr.contains("was truncated or removed while mapped"),
            "{who}: {stderr}"
        );
    }
}

#[test]
fn gen_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.dbn");
    let b = dir.path().join("b.dbn");
    for p in [&a, &b] {
        assert!(
            run(&["gen", "--seed", "11", "--events", "5000", "--out", s(p)])
                .status
                .success()
        );
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

/// SIGTERM stops `record` cleanly (status 0, a valid file holding a prefix of the stream), and
/// SIGINT stops `replay` with its summary, status 130 and the ring marked finished.
#[test]
fn signals_stop_replay_and_record_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let p = paced_pair(dir.path(), "sig", &[], &[]);
    std::thread::sleep(Duration::from_millis(200));
    signal(&p.recorder, "TERM");
    let rec = wait_output(p.recorder, Duration::from_secs(10));
    assert!(
        rec.status.success(),
        "{}{}",
        text(&rec.stdout),
        text(&rec.stderr)
    );
    assert!(
        text(&rec.stdout).contains("stopped by signal"),
        "{}",
        text(&rec.stdout)
    );
    assert_strict_prefix(&p.synth, &p.out);
    signal(&p.replay, "INT");
    let rep = wait_output(p.replay, Duration::from_secs(10));
    assert_eq!(rep.status.code(), Some(130), "{}", text(&rep.stderr));
    assert!(
        text(&rep.stdout).contains("(interrupted)"),
        "{}",
        text(&rep.stdout)
    );
    let stat = text(&run(&["ring", "stat", s(&p.ring)]).stdout);
    assert!(stat.contains("writer state    finished"), "{stat}");
}
