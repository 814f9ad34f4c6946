//! Shadow mode through `tickpipe run`'s control plane, beside a real replay process: a
//! registry candidate shadows the live scoring model, its measurements are served, and the
//! promotion gate refuses and then admits a promotion, naming the rule it applies. Then the
//! retraining flow end to end: features exported from a captured day, a jump model fitted on
//! them and registered as a new version, shadowed beside the live one and promoted.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{bin, http, run, signal, text, wait_output};

const KEY: &str = "shadow-key-0123456789abcdef";

fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (code, body) = http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-Key: {KEY}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    (code, json(&body))
}

fn get_shadow(addr: SocketAddr) -> serde_json::Value {
    let (code, body) = http(
        addr,
        "GET /models/shadow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 200, "{body}");
    json(&body)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Waits until the running candidate has compared at least `n` vectors; returns its report.
fn compared_at_least(addr: SocketAddr, n: u64) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = common::wait_until(Duration::from_secs(30), || {
        last = get_shadow(addr);
        last["shadow"]["compared"].as_u64().unwrap_or(0) >= n
    });
    assert!(ok, "the candidate never compared {n} vectors: {last}");
    last
}

/// The retraining flow's offline half: a captured day (generated here; a few seconds of
/// exchange time), its feature vectors exported, a jump model fitted on short-window columns
/// (the new version reads other inputs than v1: the engine binds each by name) and registered
/// as `regime` v2.
fn retrain_regime(dir: &Path, registry: &Path) {
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let day = common::generated(dir, 200_000, 7);
    let features = dir.join("day.csv");
    ok(run(&[
        "features",
        day.to_str().unwrap(),
        "--out",
        features.to_str().unwrap(),
    ]));
    let fitted = dir.join("sjm-v2");
    let fit = ok(run(&[
        "models",
        "fit-sjm",
        "--features",
        features.to_str().unwrap(),
        "--columns",
        "spread_bps,depth_imbalance_l1,ofi_1s,rv_1s,log_return_1s,event_rate_1s",
        "--states",
        "3",
        "--lambda",
        "10",
        "--n-init",
        "2",
        "--out",
        fitted.to_str().unwrap(),
    ]));
    assert!(fit.contains("rows used"), "{fit}");
    // Golden inputs: 32 rows of the same day, past the one-second windows' warm-up.
    let csv = std::fs::read_to_string(&features).unwrap();
    let mut lines = csv.lines();
    let mut goldens = format!("{}\n", lines.next().unwrap());
    for l in lines.skip(100_000).take(32) {
        goldens.push_str(l);
        goldens.push('\n');
    }
    let goldens_csv = dir.join("goldens.csv");
    std::fs::write(&goldens_csv, goldens).unwrap();
    ok(run(&[
        "models",
        "register",
        "--registry",
        registry.to_str().unwrap(),
        "--name",
        "regime",
        "--version",
        "v2",
        "--kind",
        "sjm",
        "--artifact",
        fitted.to_str().unwrap(),
        "--goldens-input",
        goldens_csv.to_str().unwrap(),
    ]));
    let v = ok(run(&[
        "models",
        "validate",
        "regime",
        "v2",
        "--registry",
        registry.to_str().unwrap(),
    ]));
    assert!(v.contains("regime v2"), "{v}");
}

/// A temporary folder with a private copy of the example registry (promotions rewrite its
/// active-version files) and a generated capture that a replay at its own pace turns into a
/// feed lasting the whole test.
struct Setup {
    tmp: tempfile::TempDir,
    registry: PathBuf,
    capture: PathBuf,
}

/// The stage idle strategies and control plane every engine here runs with.
const BASE: &str = "mode = \"shared\"\n[stages.ingest]\nidle = \"yielding\"\n\
    [stages.features]\nidle = \"yielding\"\n[stages.inference]\nidle = \"yielding\"\n\
    [stages.health]\nidle = \"yielding\"\n\
    [control]\nbind = \"127.0.0.1:0\"\napi_keys_env = \"TEST_TICKPIPE_KEYS\"\n";

/// A running `tickpipe run` beside its replay: its control plane, its standard error line by
/// line, and what it printed so far.
struct Running {
    replay: std::process::Child,
    engine: std::process::Child,
    addr: SocketAddr,
    rx: std::sync::mpsc::Receiver<String>,
    log: String,
}

impl Setup {
    fn new() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let tmp = tempfile::tempdir().unwrap();
        let registry = tmp.path().join("registry");
        copy_dir(&root.join("models/registry"), &registry);
        let capture = common::generated(tmp.path(), 2_000_000, 1);
        Self {
            tmp,
            registry,
            capture,
        }
    }

    fn active(&self, name: &str) -> String {
        let path = self.registry.join(name).join("active.json");
        json(&std::fs::read_to_string(path).unwrap())["active"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Writes `engine.toml`: [`BASE`] and `tables`.
    fn config(&self, tables: &str) -> PathBuf {
        let cfg = self.tmp.path().join("engine.toml");
        std::fs::write(&cfg, format!("{BASE}{tables}")).unwrap();
        cfg
    }

    /// Starts the replay and `tickpipe run --config cfg` with `extra` arguments; returns once
    /// the control plane listens.
    fn start(&self, cfg: &Path, extra: &[&str]) -> Running {
        let (md, sig) = (
            self.tmp.path().join("md.ring"),
            self.tmp.path().join("sig.ring"),
        );
        let replay = common::spawn_paced_replay(&self.capture, &md);
        let mut engine = bin()
            .args(["run", "--config", cfg.to_str().unwrap(), "--md-ring"])
            .arg(&md)
            .arg("--signals")
            .arg(&sig)
            .args(["--from-oldest", "--wait", "30", "--registry"])
            .arg(&self.registry)
            .args(extra)
            .env("TEST_TICKPIPE_KEYS", KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = lines(engine.stderr.take().unwrap());
        let mut log = String::new();
        let line = wait_for(&rx, "control plane http://", &mut log);
        let addr = line
            .split("control plane http://")
            .nth(1)
            .and_then(|a| a.split(',').next())
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Running {
            replay,
            engine,
            addr,
            rx,
            log,
        }
    }
}

impl Running {
    fn wait_for(&mut self, want: &str) -> String {
        wait_for(&self.rx, want, &mut self.log)
    }

    /// SIGINT, a drained stop with exit 0; returns everything it printed to standard error and
    /// its standard output.
    fn stop(mut self) -> (String, String) {
        signal(&self.engine, "INT");
        let out = wait_output(self.engine, Duration::from_secs(30));
        while let Ok(line) = self.rx.recv_timeout(Duration::from_secs(5)) {
            self.log.push_str(&line);
            self.log.push('\n');
        }
        assert_eq!(out.status.code(), Some(0), "a drained stop: {}", self.log);
        let _ = self.replay.kill();
        let _ = self.replay.wait();
        (self.log, text(&out.stdout))
    }
}

#[test]
fn shadow_then_promote_through_the_gate() {
    let setup = Setup::new();
    let registry = &setup.registry;
    assert_eq!(setup.active("score"), "v2");
    retrain_regime(setup.tmp.path(), registry);
    // The live scoring model is the registry's v1 artifact, the regime model its v1.
    let cfg = setup.config(&format!(
        "[models]\nxgboost = \"{}\"\nsjm = \"{}\"\n\
         [shadow]\nenabled = true\nmin_vectors = 2000\nmax_score_diff = 1e-6\n",
        registry.join("score/v1/score.json").display(),
        registry.join("regime/v1/sjm").display()
    ));
    let engine = setup.start(&cfg, &[]);
    let addr = engine.addr;
    let active = || setup.active("score");

    // Nothing shadowing yet: the gate refuses any promotion, and the registry is untouched.
    let j = get_shadow(addr);
    assert!(j["shadow"].is_null(), "{j}");
    assert_eq!(j["gate"]["min_vectors"], 2000, "{j}");
    let (code, j) = post(addr, "/models/score/promote", r#"{"version":"v1"}"#);
    assert_eq!(code, 409, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("shadow.required"),
        "{j}"
    );
    assert_eq!(active(), "v2");

    // Bad shadow requests name what is wrong and change nothing.
    for (path, body, want) in [
        ("/models/score/shadow", r#"{"version":"v9"}"#, 404),
        ("/models/nosuch/shadow", r#"{"version":"v1"}"#, 404),
        ("/models/score/shadow", r#"{"action":"dance"}"#, 400),
        ("/models/score/shadow", r#"{"colour":"red"}"#, 400),
        ("/models/forecast/shadow", r#"{"version":"v1"}"#, 422),
        ("/models/score/shadow", r#"{"action":"stop"}"#, 409),
    ] {
        let (code, j) = post(addr, path, body);
        assert_eq!(code, want, "{path} {body}: {j}");
        assert!(j["error"].is_string(), "{j}");
    }
    assert!(get_shadow(addr)["shadow"].is_null());

    // The command line speaks to the same control plane; without the right key it is refused.
    let a = addr.to_string();
    let cli = |args: &[&str], key: Option<&str>| {
        let mut c = bin();
        c.args(args).env_remove("TICKPIPE_API_KEY");
        if let Some(k) = key {
            c.env("TICKPIPE_API_KEY", k);
        }
        c.output().unwrap()
    };
    let o = cli(&["models", "shadow", "score", "v2", "--control", &a], None);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("TICKPIPE_API_KEY"),
        "{}",
        text(&o.stderr)
    );
    let o = cli(
        &["models", "shadow", "score", "v2", "--control", &a],
        Some("wrong-key-0123456789abcdef"),
    );
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("HTTP 403"), "{}", text(&o.stderr));
    let o = cli(&["models", "shadow", "--control", "127.0.0.1:1"], None);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("cannot reach the control plane"),
        "{}",
        text(&o.stderr)
    );

    // v2 is another model: it shadows, differs, and the gate names the rule it fails.
    let o = cli(
        &["models", "shadow", "score", "v2", "--control", &a],
        Some(KEY),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(json(&text(&o.stdout))["shadowing"], "score");
    let j = compared_at_least(addr, 2000);
    let o = cli(&["models", "shadow", "--control", &a], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(json(&text(&o.stdout))["shadow"]["version"], "v2");
    let s = &j["shadow"];
    assert_eq!(
        (s["name"].as_str(), s["version"].as_str()),
        (Some("score"), Some("v2"))
    );
    assert_eq!(s["kind"], "scoring");
    assert!(s["score_diff"]["p99"].as_f64().unwrap() > 1e-6, "{j}");
    assert!(
        s["promotable"]
            .as_str()
            .unwrap()
            .starts_with("shadow.max_score_diff"),
        "{j}"
    );
    assert!(s["latency_ns"]["p50"].as_u64().unwrap() > 0, "{j}");
    let o = cli(
        &["models", "promote", "score", "v2", "--control", &a],
        Some(KEY),
    );
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(
        e.contains("HTTP 409") && e.contains("shadow.max_score_diff"),
        "{e}"
    );
    // The gate checks the version that shadowed, not another.
    let (code, j) = post(addr, "/models/score/promote", r#"{"version":"v1"}"#);
    assert_eq!(code, 409, "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("shadow.required"),
        "{j}"
    );
    assert_eq!(
        active(),
        "v2",
        "refused promotions leave the registry alone"
    );

    // v1 is the live model's own artifact: it agrees exactly, passes, and is promoted.
    let (code, j) = post(addr, "/models/score/shadow", r#"{"version":"v1"}"#);
    assert_eq!(code, 200, "{j}");
    let j = compared_at_least(addr, 2000);
    let s = &j["shadow"];
    assert_eq!(s["version"], "v1", "{j}");
    assert_eq!(s["score_diff"]["max"], 0.0, "{j}");
    assert_eq!(s["promotable"], true, "{j}");
    let o = cli(
        &["models", "promote", "score", "v1", "--control", &a],
        Some(KEY),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let j = json(&text(&o.stdout));
    assert_eq!(j["promoted"], "score");
    assert!(j["shadow"]["compared"].as_u64().unwrap() >= 2000, "{j}");
    assert_eq!(active(), "v1");
    // Promoted, it is live: the shadow run ended.
    assert!(get_shadow(addr)["shadow"].is_null());

    // The retrained regime model shadows the live one label by label, and goes live.
    let (code, j) = post(addr, "/models/regime/shadow", r#"{"version":"v2"}"#);
    assert_eq!(code, 200, "{j}");
    let j = compared_at_least(addr, 2000);
    let s = &j["shadow"];
    assert_eq!(
        (s["kind"].as_str(), s["version"].as_str()),
        (Some("regime"), Some("v2")),
        "{j}"
    );
    let agreement = s["agreement"].as_f64().expect("an agreement share");
    assert!((0.0..=1.0).contains(&agreement), "{j}");
    assert_eq!(
        s["promotable"], true,
        "the score rule does not apply to labels: {j}"
    );
    let (code, j) = post(addr, "/models/regime/promote", r#"{"version":"v2"}"#);
    assert_eq!(code, 200, "{j}");
    assert_eq!(setup.active("regime"), "v2");

    let (log, report) = engine.stop();
    assert!(log.contains("shadowing score v2"), "{log}");
    assert!(log.contains("promoted score v1"), "{log}");
    assert!(log.contains("promoted regime v2"), "{log}");
    assert!(
        report.contains("link inference->shadow"),
        "the shadow link is in the report: {report}"
    );
}

/// Lines of a child's standard error, as they come.
fn lines(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `want`; returns it (panics with what came before).
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, want: &str, log: &mut String) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains(want) {
                    return line;
                }
            }
            Err(_) => panic!("no line with {want:?} within 30 s:\n{log}"),
        }
    }
}

#[test]
fn run_follows_the_registry_behind_the_gate() {
    let setup = Setup::new();
    let reg = setup.registry.to_str().unwrap();
    // Without a control plane there is no thread to follow with: refused before start.
    let bare = setup.tmp.path().join("bare.toml");
    std::fs::write(&bare, "mode = \"shared\"\n").unwrap();
    let o = run(&[
        "run",
        "--config",
        bare.to_str().unwrap(),
        "--follow-registry",
        "--registry",
        reg,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("--follow-registry needs the control plane"));

    let cfg = setup.config(&format!(
        "[models]\nxgboost = \"{}\"\n[shadow]\nenabled = true\nmin_vectors = 1000\n",
        setup.registry.join("score/v1/score.json").display()
    ));
    let mut engine = setup.start(&cfg, &["--follow-registry"]);
    let addr = engine.addr;
    assert!(
        engine
            .log
            .contains(&format!("following {reg} for score v1")),
        "{}",
        engine.log
    );
    // The copied registry names v2 active: the engine serves v1, so it tries v2 at once, and
    // the gate refuses it (nothing has shadowed).
    let line = engine.wait_for("not following it");
    assert!(
        line.contains("score v2") && line.contains("shadow.required"),
        "{line}"
    );
    // Shadowed long enough, v2 passes the gate and the follower swaps it in.
    let (code, j) = post(addr, "/models/score/shadow", r#"{"version":"v2"}"#);
    assert_eq!(code, 200, "{j}");
    let line = engine.wait_for("following the registry: score v2 (was v1)");
    assert!(line.contains("golden rows"), "{line}");
    assert!(
        get_shadow(addr)["shadow"].is_null(),
        "taking the candidate ended its shadow run"
    );
    // A rollback in the registry is a version change like any other: behind the gate too.
    let o = run(&["models", "rollback", "score", "--registry", reg]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let line = engine.wait_for("not following it");
    assert!(
        line.contains("score v1") && line.contains("shadow.required"),
        "{line}"
    );
    engine.stop();
}
