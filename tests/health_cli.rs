//! `tickpipe run` with its health page and control plane, next to a real replay process:
//! dependency-ordered start-up with a report, `tickpipe health --page` exit codes, the kill
//! switch over authenticated HTTP, and what a bad request or key gets.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{bin, http, run, signal, text, wait_output};

const KEY: &str = "test-key-0123456789abcdef";

fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    let key = key
        .map(|k| format!("X-API-Key: {k}\r\n"))
        .unwrap_or_default();
    http(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{key}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
}

fn health_cli(page: &str) -> (Option<i32>, serde_json::Value) {
    let out = run(&["health", "--page", page, "--compact"]);
    let json = serde_json::from_str(text(&out.stdout).trim())
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    (out.status.code(), json)
}

#[test]
fn run_serves_health_and_an_authenticated_kill_switch() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = common::generated(tmp.path(), 2_000_000, 1);
    let (md, sig, page) = (
        tmp.path().join("md.ring"),
        tmp.path().join("sig.ring"),
        tmp.path().join("health.page"),
    );
    let cfg = tmp.path().join("engine.toml");
    std::fs::write(
        &cfg,
        format!(
            "mode = \"shared\"\n[stages.ingest]\nidle = \"yielding\"\n[stages.features]\nidle = \"yielding\"\n\
             [stages.inference]\nidle = \"yielding\"\n[stages.health]\nidle = \"yielding\"\n\
             [health]\npage = \"{}\"\n[control]\nbind = \"127.0.0.1:0\"\napi_keys_env = \"TEST_TICKPIPE_KEYS\"\n",
            page.display()
        ),
    )
    .unwrap();
    // A replay at the capture's own pace keeps the feed alive for the whole test.
    let mut replay = common::spawn_paced_replay(&capture, &md);
    let mut engine = bin()
        .args(["run", "--config", cfg.to_str().unwrap()])
        .args([
            "--md-ring",
            md.to_str().unwrap(),
            "--signals",
            sig.to_str().unwrap(),
        ])
        .args(["--from-oldest", "--wait", "30"])
        .env("TEST_TICKPIPE_KEYS", KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The start-up report, then the line naming the control plane's address.
    let mut err = BufReader::new(engine.stderr.take().unwrap());
    let mut log = String::new();
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "run ended: {log}");
        log.push_str(&line);
        if let Some(a) = line.split("control plane http://").nth(1) {
            break a.split(',').next().unwrap().trim().parse().unwrap();
        }
    };
    for component in ["md-ring", "signal-ring", "engine", "control"] {
        assert!(
            log.lines()
                .any(|l| l.starts_with(component) && l.contains("running")),
            "{log}"
        );
    }
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("first event processed"), "{line}");
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });

    // Healthy: 200, and the CLI exits 0.
    assert!(common::wait_until(Duration::from_secs(10), || health_cli(
        page.to_str().unwrap()
    )
    .0 == Some(
        0
    )));
    // A feature is scored over the vectors folded in since the monitor's last tick: on a
    // loaded host a tick can see none yet (DISABLED), so wait for a tick that scores the mid.
    let mut last = String::new();
    let healthy = common::wait_until(Duration::from_secs(10), || {
        let (code, body) = http(addr, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert_eq!(code, 200, "{body}");
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["status"], "OK", "{body}");
        last = body;
        j["features"]["mid"]["status"] == "HEALTHY"
    });
    assert!(healthy, "the mid feature never scored HEALTHY: {last}");
    let (code, metrics) = http(addr, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("tickpipe_kill_switch_engaged 0"),
        "{metrics}"
    );

    // Bad requests and keys change nothing.
    let engage = r#"{"action":"engage","reason":"test"}"#;
    assert_eq!(post(addr, "/kill-switch", None, engage).0, 401);
    assert_eq!(
        post(addr, "/kill-switch", Some("wrong-key-0123456789"), engage).0,
        403
    );
    assert_eq!(post(addr, "/kill-switch", Some(KEY), "{not json").0, 400);
    assert_eq!(
        http(addr, "GET /nope HTTP/1.1\r\nConnection: close\r\n\r\n").0,
        404
    );
    assert_eq!(
        health_cli(page.to_str().unwrap()).1["kill_switch"]["engaged"],
        false
    );

    // Engage: CRITICAL at once, on the page and over HTTP.
    let (code, body) = post(addr, "/kill-switch", Some(KEY), engage);
    assert_eq!(code, 200, "{body}");
    let (code, j) = health_cli(page.to_str().unwrap());
    assert_eq!(code, Some(2), "{j}");
    assert_eq!(j["kill_switch"]["engaged"], true);
    assert_eq!(j["kill_switch"]["reasons"], serde_json::json!(["manual"]));
    assert_eq!(
        http(addr, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").0,
        503
    );
    // Release: OK again.
    let release = r#"{"action":"release","reason":"test"}"#;
    assert_eq!(post(addr, "/kill-switch", Some(KEY), release).0, 200);
    assert_eq!(health_cli(page.to_str().unwrap()).0, Some(0));

    signal(&engine, "INT");
    let out = wait_output(engine, Duration::from_secs(30));
    let log = rest.join().unwrap();
    assert!(
        log.contains("kill switch engaged over the control plane"),
        "{log}"
    );
    assert!(log.contains("shutdown"), "{log}");
    assert_eq!(out.status.code(), Some(0), "a drained stop: {log}");
    let _ = replay.kill();
    let _ = replay.wait();
    // The engine is gone: the page is still there but nobody updates it.
    std::thread::sleep(tickpipe::health_cmd::PAGE_STALE + Duration::from_millis(200));
    let (code, j) = health_cli(page.to_str().unwrap());
    assert_eq!(code, Some(3), "{j}");
    assert!(j["error"].as_str().unwrap().contains("gone"), "{j}");
}

#[test]
fn health_without_a_page_is_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.page");
    let (code, j) = health_cli(missing.to_str().unwrap());
    assert_eq!(code, Some(3));
    assert_eq!(j["status"], "UNKNOWN");
    // Not a page: a file of garbage.
    let junk = tmp.path().join("junk.page");
    std::fs::write(&junk, vec![7u8; 4096]).unwrap();
    let (code, j) = health_cli(junk.to_str().unwrap());
    assert_eq!(code, Some(3), "{j}");
    assert!(j["error"].as_str().unwrap().contains("magic"), "{j}");
}
