//! The control plane over real sockets: routes, refusals, authentication and its rate limit,
//! limits and deadlines, with a fake API that records what it was asked.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tickpipe_pipeline::control::{
    ApiKeys, ControlApi, ControlConfig, ControlError, ControlHandle, ControlServer,
};

const KEY: &str = "test-key-0123456789abcdef";
const OTHER_KEY: &str = "second-key-0123456789abc";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Promote { model: String, body: String },
    KillSwitch { engage: bool, reason: String },
}

#[derive(Debug, Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    unhealthy: Arc<AtomicBool>,
    /// Bytes of padding added to the metrics text.
    metrics_pad: Arc<AtomicUsize>,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
}

struct FakeApi(Recorder);

impl ControlApi for FakeApi {
    fn health(&self) -> (u16, String) {
        if self.0.unhealthy.load(Ordering::SeqCst) {
            (503, r#"{"status":"degraded"}"#.to_string())
        } else {
            (200, r#"{"status":"ok"}"#.to_string())
        }
    }

    fn metrics(&self) -> String {
        let pad = self.0.metrics_pad.load(Ordering::SeqCst);
        let mut text =
            "# TYPE tickpipe_signals_total counter\ntickpipe_signals_total 42\n".to_string();
        if pad > 0 {
            text.push_str(&format!("# {}\n", "p".repeat(pad)));
        }
        text
    }

    fn promote(&mut self, model: &str, body: &[u8]) -> Result<String, ControlError> {
        self.0.calls.lock().expect("lock").push(Call::Promote {
            model: model.to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
        });
        match model {
            "missing" => Err(ControlError::NotFound("no model named missing".into())),
            "busy" => Err(ControlError::Conflict("a swap is in flight".into())),
            "invalid" => Err(ControlError::Unprocessable("fails validation".into())),
            "panic" => panic!("the fake API panics on request"),
            _ => Ok(format!(r#"{{"promoted":"{model}"}}"#)),
        }
    }

    fn kill_switch(&mut self, engage: bool, reason: &str) -> Result<String, ControlError> {
        self.0.calls.lock().expect("lock").push(Call::KillSwitch {
            engage,
            reason: reason.to_string(),
        });
        Ok(format!(r#"{{"engaged":{engage}}}"#))
    }
}

struct Fixture {
    handle: ControlHandle,
    rec: Recorder,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// A final check that the server still answers.
    fn assert_alive(&self) {
        let r = get(self.addr(), "/health");
        assert_eq!(r.status, 200, "{r:?}");
    }
}

fn start_with(tweak: impl FnOnce(&mut ControlConfig)) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("api-keys");
    std::fs::write(&keys, format!("# test keys\n{KEY}\n\n{OTHER_KEY}\n")).expect("write keys");
    let mut config = ControlConfig {
        api_keys_file: Some(keys),
        api_keys_env: None,
        read_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        write_timeout: Duration::from_secs(1),
        ..ControlConfig::default()
    };
    tweak(&mut config);
    let rec = Recorder::default();
    let handle = ControlServer::start(&config, FakeApi(rec.clone())).expect("server starts");
    Fixture {
        handle,
        rec,
        _dir: dir,
    }
}

fn start() -> Fixture {
    start_with(|_| {})
}

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.body).expect("JSON error body");
        v["error"].as_str().expect("error field").to_string()
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// Reads one response (head, then `Content-Length` bytes of body) and nothing beyond it, so
/// pipelined answers can be read one after the other.
fn read_response(s: &mut TcpStream) -> Response {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read response head");
        assert!(n > 0, "connection closed before a response: {buf:?}");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status: u16 = status_line[9..12].parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header");
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().expect("length"));
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("read body");
    Response {
        status,
        headers,
        body: String::from_utf8(body).expect("UTF-8 body"),
    }
}

fn exchange(addr: SocketAddr, raw: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(raw).expect("send");
    read_response(&mut s)
}

fn get(addr: SocketAddr, path: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn post(addr: SocketAddr, path: &str, key: Option<&str>, body: &str) -> Response {
    let key = key.map_or(String::new(), |k| format!("X-API-Key: {k}\r\n"));
    exchange(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{key}Content-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

/// Whether the server closed `s` within `within` (EOF or reset).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut rest = Vec::new();
    match s.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
    }
}

#[test]
fn health_follows_the_api() {
    let f = start();
    let r = get(f.addr(), "/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, r#"{"status":"ok"}"#);
    assert_eq!(r.header("connection"), Some("close"));
    f.rec.unhealthy.store(true, Ordering::SeqCst);
    let r = get(f.addr(), "/health?probe=1");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, r#"{"status":"degraded"}"#);
    f.rec.unhealthy.store(false, Ordering::SeqCst);
    f.assert_alive();
}

#[test]
fn metrics_carry_the_api_text_and_the_server_counters() {
    let f = start();
    get(f.addr(), "/nope");
    let r = get(f.addr(), "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain; version=0.0.4"));
    assert!(
        r.body
            .starts_with("# TYPE tickpipe_signals_total counter\n"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("\ntickpipe_signals_total 42\n"),
        "{}",
        r.body
    );
    // The 404 was answered before this request; this one is counted after its answer.
    assert!(
        r.body.contains("\ntickpipe_control_requests_total 1\n"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains("\ntickpipe_control_client_errors_total 1\n"),
        "{}",
        r.body
    );
    let stats = f.handle.stats();
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.client_errors, 1);
    f.assert_alive();
}

#[test]
fn promote_with_the_right_key_calls_the_api_exactly_once() {
    let f = start();
    let body = r#"{"version":3,"path":"models/score-v3.json"}"#;
    let r = post(f.addr(), "/models/score-v3/promote", Some(KEY), body);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, r#"{"promoted":"score-v3"}"#);
    assert_eq!(
        f.rec.calls(),
        vec![Call::Promote {
            model: "score-v3".into(),
            body: body.into()
        }]
    );
    // Either configured key works; an empty body is passed through.
    let r = post(f.addr(), "/models/regime/promote", Some(OTHER_KEY), "");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(f.rec.calls().len(), 2);
    f.assert_alive();
}

#[test]
fn api_errors_map_to_their_status_codes() {
    let f = start();
    for (model, status, msg) in [
        ("missing", 404, "no model named missing"),
        ("busy", 409, "a swap is in flight"),
        ("invalid", 422, "fails validation"),
    ] {
        let r = post(
            f.addr(),
            &format!("/models/{model}/promote"),
            Some(KEY),
            "{}",
        );
        assert_eq!(r.status, status, "{r:?}");
        assert_eq!(r.error(), msg);
    }
    // Refused before the API: a bad model name and a body that is not JSON.
    let r = post(f.addr(), "/models/a%2Fb/promote", Some(KEY), "{}");
    assert_eq!(r.status, 400, "{r:?}");
    let r = post(f.addr(), "/models/x/promote", Some(KEY), "{not json");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(r.error().contains("JSON"), "{r:?}");
    assert_eq!(f.rec.calls().len(), 3);
    assert_eq!(f.handle.stats().server_errors, 0);
    // A panicking API is a 500, and the server goes on.
    let r = post(f.addr(), "/models/panic/promote", Some(KEY), "{}");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(f.handle.stats().server_errors, 1);
    f.assert_alive();
}

#[test]
fn kill_switch_engages_and_releases() {
    let f = start();
    let r = post(
        f.addr(),
        "/kill-switch",
        Some(KEY),
        r#"{"action":"engage","reason":"drawdown limit"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, r#"{"engaged":true}"#);
    let r = post(
        f.addr(),
        "/kill-switch",
        Some(KEY),
        r#"{"action":"release","reason":"reviewed"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        f.rec.calls(),
        vec![
            Call::KillSwitch {
                engage: true,
                reason: "drawdown limit".into()
            },
            Call::KillSwitch {
                engage: false,
                reason: "reviewed".into()
            },
        ]
    );
    f.assert_alive();
}

#[test]
fn kill_switch_bad_json_is_400_and_never_reaches_the_api() {
    let f = start();
    for body in [
        "{\"action\":\"engage\"",
        r#"{"action":"explode","reason":"x"}"#,
        r#"{"action":"engage"}"#,
        r#"{"action":"engage","reason":"x","extra":1}"#,
        "",
        "\u{0}\u{1}",
    ] {
        let r = post(f.addr(), "/kill-switch", Some(KEY), body);
        assert_eq!(r.status, 400, "{body:?}: {r:?}");
        assert!(!r.error().is_empty());
    }
    assert!(f.rec.calls().is_empty());
    f.assert_alive();
}

#[test]
fn unknown_path_is_404_and_wrong_method_405_with_allow() {
    let f = start();
    let r = get(f.addr(), "/admin");
    assert_eq!(r.status, 404);
    assert_eq!(r.error(), "no such path");
    let r = get(f.addr(), "/health/");
    assert_eq!(r.status, 404);
    let r = post(f.addr(), "/health", Some(KEY), "");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET"));
    let r = get(f.addr(), "/kill-switch");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert!(!r.error().is_empty());
    let r = exchange(
        f.addr(),
        b"DELETE /models/x/promote HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));
    assert!(f.rec.calls().is_empty());
    f.assert_alive();
}

#[test]
fn malformed_request_lines_are_400_and_closed() {
    let f = start();
    for raw in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /health\xff\xfe HTTP/1.1\r\n\r\n",
        b"GET /health HTTP/7.1\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b"GET http://example.com/health HTTP/1.1\r\n\r\n",
    ] {
        let mut s = connect(f.addr());
        s.write_all(raw).expect("send");
        let r = read_response(&mut s);
        assert_eq!(r.status, 400, "{raw:?}: {r:?}");
        assert_eq!(r.header("connection"), Some("close"));
        assert!(closed_within(&mut s, Duration::from_secs(2)), "{raw:?}");
    }
    f.assert_alive();
}

#[test]
fn oversized_head_is_431() {
    let f = start_with(|c| c.max_header_bytes = 1024);
    let raw = format!(
        "GET /health HTTP/1.1\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(4096)
    );
    let r = exchange(f.addr(), raw.as_bytes());
    assert_eq!(r.status, 431, "{r:?}");
    // Too many fields, within the byte limit.
    let fields: String = (0..80).map(|i| format!("H{i}: v\r\n")).collect();
    let r = exchange(
        f.addr(),
        format!("GET /health HTTP/1.1\r\n{fields}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431, "{r:?}");
    f.assert_alive();
}

#[test]
fn oversized_body_is_413_before_it_is_read() {
    let f = start_with(|c| c.max_body_bytes = 1024);
    let body = format!(r#"{{"pad":"{}"}}"#, "x".repeat(100_000));
    let r = post(f.addr(), "/models/x/promote", Some(KEY), &body);
    assert_eq!(r.status, 413, "{r:?}");
    // Exactly at the limit is accepted.
    let body = format!(r#"{{"p":"{}"}}"#, "x".repeat(1024 - 8));
    assert_eq!(body.len(), 1024);
    let r = post(f.addr(), "/models/x/promote", Some(KEY), &body);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(f.rec.calls().len(), 1);
    f.assert_alive();
}

#[test]
fn post_without_content_length_is_411_and_chunked_is_501() {
    let f = start();
    let r = exchange(
        f.addr(),
        format!("POST /kill-switch HTTP/1.1\r\nX-API-Key: {KEY}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 411, "{r:?}");
    let r = exchange(
        f.addr(),
        format!(
            "POST /kill-switch HTTP/1.1\r\nX-API-Key: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n0\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 501, "{r:?}");
    assert!(f.rec.calls().is_empty());
    f.assert_alive();
}

#[test]
fn missing_key_is_401_and_wrong_key_403() {
    let f = start();
    let body = r#"{"action":"engage","reason":"x"}"#;
    let r = post(f.addr(), "/kill-switch", None, body);
    assert_eq!(r.status, 401, "{r:?}");
    let r = post(
        f.addr(),
        "/kill-switch",
        Some("test-key-0123456789abcdeX"),
        body,
    );
    assert_eq!(r.status, 403, "{r:?}");
    // A prefix of a valid key, and a valid key with a suffix, are wrong too.
    let r = post(f.addr(), "/kill-switch", Some(&KEY[..KEY.len() - 1]), body);
    assert_eq!(r.status, 403, "{r:?}");
    let r = post(f.addr(), "/kill-switch", Some(&format!("{KEY}0")), body);
    assert_eq!(r.status, 403, "{r:?}");
    assert!(f.rec.calls().is_empty());
    let stats = f.handle.stats();
    assert_eq!(stats.auth_failures, 4);
    assert_eq!(stats.rate_limited, 0);
    f.assert_alive();
}

#[test]
fn repeated_wrong_keys_are_rate_limited_even_for_the_right_key() {
    let f = start_with(|c| {
        c.auth_failures = 5;
        c.auth_window = Duration::from_secs(10);
    });
    let body = r#"{"action":"engage","reason":"x"}"#;
    for i in 0..5 {
        let r = post(
            f.addr(),
            "/kill-switch",
            Some("wrong-key-0123456789abcdef"),
            body,
        );
        assert_eq!(r.status, 403, "attempt {i}: {r:?}");
    }
    let r = post(
        f.addr(),
        "/kill-switch",
        Some("wrong-key-0123456789abcdef"),
        body,
    );
    assert_eq!(r.status, 429, "{r:?}");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=10).contains(&retry), "{retry}");
    let r = post(f.addr(), "/kill-switch", Some(KEY), body);
    assert_eq!(
        r.status, 429,
        "the right key is refused while limited: {r:?}"
    );
    let r = post(f.addr(), "/models/x/promote", None, "{}");
    assert_eq!(r.status, 429, "{r:?}");
    assert!(f.rec.calls().is_empty());
    let stats = f.handle.stats();
    assert_eq!(stats.auth_failures, 5);
    assert_eq!(stats.rate_limited, 3);
    // Reads are not limited.
    f.assert_alive();
}

#[test]
fn slowloris_gets_408_while_others_are_served() {
    let timeout = Duration::from_millis(400);
    let f = start_with(|c| c.read_timeout = timeout);
    let t0 = Instant::now();
    let mut stuck = connect(f.addr());
    stuck
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        .expect("half a request");
    // A second one trickles a byte at a time: the deadline runs from its first byte.
    let mut trickle = connect(f.addr());
    let addr = f.addr();
    let trickler = std::thread::spawn(move || {
        let started = Instant::now();
        // One byte every 40 ms, until the server answers (the peek's timeout is the pause).
        trickle
            .set_read_timeout(Some(Duration::from_millis(40)))
            .expect("timeout");
        let mut peeked = [0u8; 1];
        for b in b"POST /kill-switch HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if trickle.write_all(&[*b]).is_err() || trickle.peek(&mut peeked).is_ok() {
                break;
            }
        }
        trickle
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let r = read_response(&mut trickle);
        (
            r.status,
            started.elapsed(),
            closed_within(&mut trickle, Duration::from_secs(2)),
        )
    });

    let served = get(addr, "/health");
    let served_after = t0.elapsed();
    assert_eq!(served.status, 200);

    let r = read_response(&mut stuck);
    let stuck_after = t0.elapsed();
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_within(&mut stuck, Duration::from_secs(2)));
    assert!(
        served_after < stuck_after,
        "{served_after:?} vs {stuck_after:?}"
    );
    assert!(
        stuck_after >= timeout - Duration::from_millis(50),
        "{stuck_after:?}"
    );
    assert!(
        stuck_after < timeout + Duration::from_millis(1500),
        "{stuck_after:?}"
    );

    let (status, elapsed, closed) = trickler.join().expect("trickler");
    assert_eq!(status, 408);
    assert!(
        elapsed < timeout + Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert!(closed);
    assert!(f.handle.stats().timeouts >= 2);
    f.assert_alive();
}

#[test]
fn silent_connection_times_out_too() {
    let f = start_with(|c| c.read_timeout = Duration::from_millis(300));
    let mut silent = connect(f.addr());
    let t0 = Instant::now();
    let r = read_response(&mut silent);
    assert_eq!(r.status, 408);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    f.assert_alive();
}

#[test]
fn a_client_that_does_not_read_its_answer_is_closed_at_the_write_deadline() {
    let f = start_with(|c| c.write_timeout = Duration::from_millis(300));
    // Far more than the socket buffers hold.
    f.rec.metrics_pad.store(32 << 20, Ordering::SeqCst);
    let mut reader = connect(f.addr());
    let sent = Instant::now();
    reader
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    std::thread::sleep(Duration::from_millis(50));
    f.rec.metrics_pad.store(0, Ordering::SeqCst);
    // Served while the big answer is stuck.
    f.assert_alive();
    let deadline = Instant::now() + Duration::from_secs(3);
    while f.handle.stats().timeouts == 0 {
        assert!(Instant::now() < deadline, "stuck writer never timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        sent.elapsed() >= Duration::from_millis(300),
        "{:?}",
        sent.elapsed()
    );
    drop(reader);
    f.assert_alive();
}

#[test]
fn connections_above_the_cap_are_closed_and_counted() {
    let f = start_with(|c| {
        c.max_connections = 2;
        c.read_timeout = Duration::from_secs(10);
    });
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect(f.addr())).collect();
    // Make sure both are accepted before the excess ones arrive.
    for s in &mut held {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("send");
        assert_eq!(read_response(s).status, 200);
    }
    for _ in 0..3 {
        let mut excess = connect(f.addr());
        assert!(
            closed_within(&mut excess, Duration::from_secs(2)),
            "excess connection left open"
        );
    }
    assert_eq!(f.handle.stats().rejected_connections, 3);
    assert_eq!(f.handle.stats().accepted_connections, 2);
    // The held connections are still served.
    held[0]
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut held[0]).status, 200);
    drop(held);
    // Once they are gone the server takes new connections again.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut s = connect(f.addr());
        let answered = s
            .write_all(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            .is_ok()
            && {
                let mut b = [0u8; 12];
                s.read_exact(&mut b).is_ok() && &b[..] == b"HTTP/1.1 200"
            };
        if answered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server does not take connections again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    f.assert_alive();
}

#[test]
fn keep_alive_pipelining_and_connection_close() {
    let f = start();
    let mut s = connect(f.addr());
    s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    let r = read_response(&mut s);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), None);
    // Two requests in one write, answered in order.
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut s).status, 200);
    assert_eq!(read_response(&mut s).status, 404);
    // A POST body on a kept-alive connection, then close.
    let body = r#"{"action":"engage","reason":"k"}"#;
    s.write_all(
        format!(
            "POST /kill-switch HTTP/1.1\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\n\r\n{body}\
             GET /health HTTP/1.1\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .expect("send");
    assert_eq!(read_response(&mut s).status, 200);
    let r = read_response(&mut s);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed_within(&mut s, Duration::from_secs(2)));
    assert_eq!(f.rec.calls().len(), 1);
    f.assert_alive();
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let f = start_with(|c| c.idle_timeout = Duration::from_millis(200));
    let mut s = connect(f.addr());
    s.write_all(b"GET /health HTTP/1.1\r\n\r\n").expect("send");
    assert_eq!(read_response(&mut s).status, 200);
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(3)));
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    assert_eq!(f.handle.stats().timeouts, 1);
    f.assert_alive();
}

#[test]
fn expect_continue_gets_an_interim_answer() {
    let f = start();
    let body = r#"{"action":"release","reason":"continue"}"#;
    let mut s = connect(f.addr());
    s.write_all(
        format!(
            "POST /kill-switch HTTP/1.1\r\nX-API-Key: {KEY}\r\nExpect: 100-continue\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .expect("send head");
    let r = read_response(&mut s);
    assert_eq!(r.status, 100);
    s.write_all(body.as_bytes()).expect("send body");
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(f.rec.calls().len(), 1);
    f.assert_alive();
}

#[test]
fn stop_returns_promptly_with_clients_connected() {
    let f = start();
    let mut idle = connect(f.addr());
    idle.write_all(b"GET /health HTTP/1.1\r\n\r\n")
        .expect("send");
    assert_eq!(read_response(&mut idle).status, 200);
    let mut half = connect(f.addr());
    half.write_all(b"GET /heal").expect("send");
    std::thread::sleep(Duration::from_millis(50));
    let addr = f.addr();
    let t0 = Instant::now();
    assert!(f.handle.is_running());
    f.handle.stop().expect("stops cleanly");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    assert!(closed_within(&mut idle, Duration::from_secs(1)));
    assert!(closed_within(&mut half, Duration::from_secs(1)));
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after stop"
    );
}

#[test]
fn drop_stops_the_server() {
    let f = start();
    let addr = f.addr();
    drop(f);
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after drop"
    );
}

#[test]
fn non_loopback_bind_needs_allow_remote() {
    let config = ControlConfig {
        bind: "0.0.0.0:0".parse().expect("addr"),
        api_keys_env: None,
        ..ControlConfig::default()
    };
    let err = ControlServer::start(&config, FakeApi(Recorder::default()))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("allow_remote"), "{err}");
}

#[test]
fn no_keys_refuses_every_post() {
    let config = ControlConfig {
        api_keys_env: None,
        ..ControlConfig::default()
    };
    let rec = Recorder::default();
    let handle = ControlServer::start_with_keys(&config, ApiKeys::none(), FakeApi(rec.clone()))
        .expect("starts");
    let r = post(handle.local_addr(), "/models/x/promote", Some(KEY), "{}");
    assert_eq!(r.status, 403, "{r:?}");
    assert!(rec.calls().is_empty());
    assert_eq!(get(handle.local_addr(), "/health").status, 200);
}

#[test]
fn unreadable_key_file_is_a_start_error() {
    let config = ControlConfig {
        api_keys_file: Some("/nonexistent/tickpipe-keys".into()),
        api_keys_env: None,
        ..ControlConfig::default()
    };
    let err = ControlServer::start(&config, FakeApi(Recorder::default()))
        .expect_err("refused")
        .to_string();
    assert!(err.contains("api_keys_file"), "{err}");
}
