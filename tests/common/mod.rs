//! Helpers shared by the integration tests.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The shared real-data folder: `$TICKPIPE_DATA`, else `../shared/data` from the repository.
pub fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TICKPIPE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    dir.is_dir().then_some(dir)
}

/// A file under the data folder, or `None` with a skip line naming what is missing.
pub fn data_file(rel: &str) -> Option<PathBuf> {
    match data_dir().map(|d| d.join(rel)) {
        Some(p) if p.exists() => Some(p),
        _ => {
            eprintln!(
                "SKIPPED: real data {rel} not found (set TICKPIPE_DATA or place ../shared/data)"
            );
            None
        }
    }
}

/// The built `tickpipe` binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tickpipe"))
}

/// Runs `tickpipe args...` to completion.
pub fn run(args: &[&str]) -> Output {
    let out = bin()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn tickpipe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "tickpipe panicked: {stderr}");
    out
}

/// Spawns `tickpipe args...` with piped output.
pub fn spawn(args: &[&str]) -> Child {
    bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tickpipe")
}

/// Waits for a child with a deadline, killing it (and failing) if it hangs.
pub fn wait_output(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "tickpipe panicked: {stderr}");
            return out;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "tickpipe hung for {limit:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Polls `cond` every 2 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    cond()
}

/// Every record of the captures, in order, as bytes.
pub fn records(paths: &[&Path]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for path in paths {
        let mut capture = tickpipe::capture::Capture::open(path).unwrap_or_else(|e| panic!("{e}"));
        let flow = capture
            .visit(|rec| {
                out.push(rec.as_ref().to_vec());
                ControlFlow::Continue(())
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(flow.is_continue());
    }
    out
}

/// Text of an output stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Sends a signal to a child.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} failed");
}

/// Whether `tickpipe ring stat` lists at least one reader on `ring`.
pub fn has_reader(ring: &Path) -> bool {
    let out = run(&["ring", "stat", ring.to_str().unwrap()]);
    out.status.success() && !text(&out.stdout).contains("readers         0")
}

/// A seeded generated capture of `events` records on 3 instruments at ~20 µs per event (a 1x
/// replay of 100k events takes about two seconds).
pub fn generated(dir: &Path, events: u64, seed: u64) -> PathBuf {
    let out = dir.join(format!("synth-{seed}-{events}.dbn.zst"));
    let res = run(&[
        "gen",
        "--seed",
        &seed.to_string(),
        "--events",
        &events.to_string(),
        "--instruments",
        "3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{}", text(&res.stderr));
    out
}

/// One HTTP/1.1 request; returns the status code and the body.
pub fn http(addr: std::net::SocketAddr, req: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut resp);
    let code = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"));
    let body = resp
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (code, body)
}

/// `tickpipe replay CAPTURE --ring RING --speed 1 --quiet`, output discarded: a feed at the
/// capture's own pace.
pub fn spawn_paced_replay(capture: &Path, ring: &Path) -> Child {
    bin()
        .arg("replay")
        .arg(capture)
        .arg("--ring")
        .arg(ring)
        .args(["--speed", "1", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn replay")
}
