//! The poll loop: accepting, reading, routing, answering, deadlines.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Deserialize;

use crate::PipelineError;

use super::auth::{ApiKeys, FailureLimiter};
use super::http::{self, HeadLimits, Method, PROMETHEUS, Reply, RequestHead};
use super::{ControlApi, ControlConfig, ControlError};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Requests one connection may have answered per turn before the others get theirs.
const REQUESTS_PER_TURN: usize = 16;
/// Longest wait in `poll` when no deadline is nearer.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);
/// How often the loop calls [`ControlApi::tick`].
pub const TICK: Duration = Duration::from_millis(500);
/// Longest time a closing connection is read and discarded after its answer (so the client
/// gets the answer rather than a reset), and most bytes discarded.
const MAX_LINGER: Duration = Duration::from_secs(1);
const MAX_LINGER_BYTES: usize = 1 << 20;
/// First size of a connection's read buffer; it grows up to head plus body limit.
const INITIAL_READ_BUFFER: usize = 1024;
/// What a `/kill-switch` body must look like, for the 400 answer.
const KILL_SWITCH_SHAPE: &str = r#"body must be {"action":"engage"|"release","reason":"..."}"#;
/// Longest model name in `/models/{name}/promote`.
const MAX_MODEL_NAME: usize = 128;

/// The server's own counters, updated by the control thread only.
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    auth_failures: AtomicU64,
    rate_limited: AtomicU64,
    timeouts: AtomicU64,
    accepted_connections: AtomicU64,
    rejected_connections: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A snapshot of the control plane's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// Answers sent (every request answered, including refusals and 408s).
    pub requests: u64,
    /// Answers with a 4xx status.
    pub client_errors: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
    /// `POST`s with a missing or wrong key.
    pub auth_failures: u64,
    /// `POST`s answered 429.
    pub rate_limited: u64,
    /// Connections closed for a deadline (request, keep-alive idle, or answer).
    pub timeouts: u64,
    /// Connections accepted and served.
    pub accepted_connections: u64,
    /// Connections closed on accept because `max_connections` were open.
    pub rejected_connections: u64,
}

impl Counters {
    fn snapshot(&self) -> ControlStats {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ControlStats {
            requests: r(&self.requests),
            client_errors: r(&self.client_errors),
            server_errors: r(&self.server_errors),
            auth_failures: r(&self.auth_failures),
            rate_limited: r(&self.rate_limited),
            timeouts: r(&self.timeouts),
            accepted_connections: r(&self.accepted_connections),
            rejected_connections: r(&self.rejected_connections),
        }
    }
}

impl ControlStats {
    /// The counters in Prometheus' text format, `tickpipe_control_*`.
    pub fn to_prometheus(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            ("requests_total", "Requests answered.", self.requests),
            (
                "client_errors_total",
                "Answers with a 4xx status.",
                self.client_errors,
            ),
            (
                "server_errors_total",
                "Answers with a 5xx status.",
                self.server_errors,
            ),
            (
                "auth_failures_total",
                "POSTs with a missing or wrong API key.",
                self.auth_failures,
            ),
            (
                "rate_limited_total",
                "POSTs refused with 429.",
                self.rate_limited,
            ),
            (
                "timeouts_total",
                "Connections closed for a deadline.",
                self.timeouts,
            ),
            (
                "connections_accepted_total",
                "Connections accepted.",
                self.accepted_connections,
            ),
            (
                "connections_rejected_total",
                "Connections closed on accept at the connection cap.",
                self.rejected_connections,
            ),
        ] {
            out.push_str(&format!(
                "# HELP tickpipe_control_{name} {help}\n# TYPE tickpipe_control_{name} counter\n\
                 tickpipe_control_{name} {value}\n"
            ));
        }
        out
    }
}

/// Starts the control plane.
#[derive(Debug)]
pub struct ControlServer {
    _private: (),
}

impl ControlServer {
    /// Validates `config`, loads the API keys it names ([`ApiKeys::load`]), binds and starts the
    /// control thread.
    ///
    /// # Errors
    /// As [`ControlServer::start_with_keys`], and [`PipelineError::Config`] for unreadable or bad
    /// keys.
    pub fn start<A: ControlApi>(
        config: &ControlConfig,
        api: A,
    ) -> Result<ControlHandle, PipelineError> {
        config.validate()?;
        let keys = ApiKeys::load(config)?;
        Self::start_with_keys(config, keys, api)
    }

    /// Like [`ControlServer::start`] with the keys given (the config's key sources are not
    /// read).
    ///
    /// # Errors
    /// [`PipelineError::Config`] for a bad config or an address that cannot be bound (named
    /// `bind`), [`PipelineError::Thread`] if the poller or the thread cannot be created.
    pub fn start_with_keys<A: ControlApi>(
        config: &ControlConfig,
        keys: ApiKeys,
        api: A,
    ) -> Result<ControlHandle, PipelineError> {
        config.validate()?;
        let thread_err = |why: String| PipelineError::Thread {
            role: "control".into(),
            why,
        };
        let mut listener = TcpListener::bind(config.bind).map_err(|e| {
            PipelineError::config("bind", format!("cannot listen on {}: {e}", config.bind))
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| thread_err(format!("local address: {e}")))?;
        let poll = Poll::new().map_err(|e| thread_err(format!("poll: {e}")))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| thread_err(format!("register listener: {e}")))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER).map_err(|e| thread_err(format!("waker: {e}")))?,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut conns = Vec::with_capacity(config.max_connections);
        conns.resize_with(config.max_connections, || None);
        let server = Server {
            poll,
            listener,
            conns,
            free: (0..config.max_connections).rev().collect(),
            again: Vec::with_capacity(config.max_connections),
            retry_accept: false,
            router: Router::new(config, keys, api, Arc::clone(&counters)),
            limits: head_limits(config),
            read_timeout: config.read_timeout,
            idle_timeout: config.idle_timeout,
            write_timeout: config.write_timeout,
            counters: Arc::clone(&counters),
            stop: Arc::clone(&stop),
            next_tick: Instant::now() + TICK,
        };
        let join = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || server.run())
            .map_err(|e| thread_err(format!("spawn: {e}")))?;
        Ok(ControlHandle {
            local_addr,
            waker,
            stop,
            counters,
            join: Some(join),
        })
    }
}

/// The running control plane. Dropping it stops the server.
#[derive(Debug)]
pub struct ControlHandle {
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    join: Option<JoinHandle<()>>,
}

impl ControlHandle {
    /// The address the server listens on (with the actual port when `bind` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's own counters now.
    pub fn stats(&self) -> ControlStats {
        self.counters.snapshot()
    }

    /// Whether the control thread is still running.
    pub fn is_running(&self) -> bool {
        self.join.as_ref().is_some_and(|j| !j.is_finished())
    }

    /// Stops the server: wakes its poll loop, closes every connection and joins the thread.
    ///
    /// # Errors
    /// [`PipelineError::Thread`] if the control thread panicked.
    pub fn stop(mut self) -> Result<(), PipelineError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), PipelineError> {
        let Some(join) = self.join.take() else {
            return Ok(());
        };
        // Pairs with the Acquire load at the top of the poll loop.
        self.stop.store(true, Ordering::Release);
        // If the wake fails the loop still sees the flag within MAX_POLL_WAIT.
        let _ = self.waker.wake();
        join.join().map_err(|_| PipelineError::Thread {
            role: "control".into(),
            why: "the control thread panicked".into(),
        })
    }
}

impl Drop for ControlHandle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for, or reading, a request.
    Reading,
    /// Sending an answer.
    Writing,
    /// Answer sent on a closing connection: reading and discarding until the peer closes.
    Draining,
}

struct Conn {
    stream: TcpStream,
    ip: IpAddr,
    buf: Vec<u8>,
    filled: usize,
    head: Option<RequestHead>,
    out: Vec<u8>,
    sent: usize,
    phase: Phase,
    /// When the request being read started (its first byte, or the accept); `None` while a
    /// kept-alive connection waits idle.
    request_started: Option<Instant>,
    deadline: Instant,
    close_after: bool,
    peer_eof: bool,
    drained: usize,
}

enum Drive {
    /// Waiting for the socket.
    Blocked,
    /// Out of turn with work left: drive again before the next wait.
    Again,
    /// Close it.
    Close,
}

struct Server<A> {
    poll: Poll,
    listener: TcpListener,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    /// Connections out of turn with work left.
    again: Vec<usize>,
    retry_accept: bool,
    router: Router<A>,
    limits: HeadLimits,
    read_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    next_tick: Instant,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillSwitchBody {
    action: KillAction,
    reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum KillAction {
    Engage,
    Release,
}

fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MODEL_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != "."
        && name != ".."
}

/// The routes: `Some(allowed method)` for a known path.
enum Route<'a> {
    Health,
    Metrics,
    Promote(&'a str),
    Shadow(&'a str),
    ShadowReport,
    KillSwitch,
}

fn route(path: &str) -> Option<Route<'_>> {
    match path {
        "/health" => Some(Route::Health),
        "/metrics" => Some(Route::Metrics),
        "/kill-switch" => Some(Route::KillSwitch),
        "/models/shadow" => Some(Route::ShadowReport),
        _ => {
            let rest = path.strip_prefix("/models/")?;
            let (name, action) = rest.rsplit_once('/')?;
            if name.contains('/') {
                return None;
            }
            match action {
                "promote" => Some(Route::Promote(name)),
                "shadow" => Some(Route::Shadow(name)),
                _ => None,
            }
        }
    }
}

impl<A: ControlApi> Server<A> {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            // Pairs with the Release store in `ControlHandle::shutdown`.
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            let now = Instant::now();
            let wait = if self.again.is_empty() {
                self.next_wait(now)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if !interrupted(&e) {
                    // Not expected from epoll; avoid spinning on a persistent failure.
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            let mut pending = std::mem::take(&mut self.again);
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {}
                    Token(t) => pending.push(t - FIRST_CONN),
                }
            }
            if self.retry_accept {
                self.accept_all();
            }
            pending.sort_unstable();
            pending.dedup();
            for &idx in &pending {
                self.drive_slot(idx);
            }
            pending.clear();
            if self.again.is_empty() {
                self.again = pending;
            }
            let now = Instant::now();
            self.expire(now);
            if now >= self.next_tick {
                self.next_tick = now + TICK;
                // A panicking tick is the API's failure, not the server's.
                let _ = guarded(|| self.router.api.tick());
            }
        }
        for idx in 0..self.conns.len() {
            self.close(idx);
        }
    }

    fn next_wait(&self, now: Instant) -> Duration {
        let nearest = self
            .conns
            .iter()
            .flatten()
            .map(|c| c.deadline)
            .min()
            .map_or(MAX_POLL_WAIT, |d| d.saturating_duration_since(now));
        let wait = nearest
            .min(MAX_POLL_WAIT)
            .min(self.next_tick.saturating_duration_since(now));
        if self.retry_accept {
            wait.min(Duration::from_millis(10))
        } else {
            wait
        }
    }

    fn accept_all(&mut self) {
        self.retry_accept = false;
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                Err(_) => {
                    // Out of descriptors, say: the connection waits in the backlog; try again
                    // shortly rather than relying on another readiness edge.
                    self.retry_accept = true;
                    return;
                }
            };
            let Some(idx) = self.free.pop() else {
                bump(&self.counters.rejected_connections);
                drop(stream);
                continue;
            };
            if self
                .poll
                .registry()
                .register(
                    &mut stream,
                    Token(idx + FIRST_CONN),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                self.free.push(idx);
                continue;
            }
            let _ = stream.set_nodelay(true);
            let now = Instant::now();
            bump(&self.counters.accepted_connections);
            self.conns[idx] = Some(Conn {
                stream,
                ip: peer.ip(),
                buf: Vec::new(),
                filled: 0,
                head: None,
                out: Vec::new(),
                sent: 0,
                phase: Phase::Reading,
                request_started: Some(now),
                deadline: now + self.read_timeout,
                close_after: false,
                peer_eof: false,
                drained: 0,
            });
            // Data may have arrived with the connection; mio reports it as a readiness edge on
            // the new registration, so nothing to do here.
        }
    }

    fn drive_slot(&mut self, idx: usize) {
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        match self.drive(&mut conn) {
            Drive::Blocked => self.conns[idx] = Some(conn),
            Drive::Again => {
                self.conns[idx] = Some(conn);
                self.again.push(idx);
            }
            Drive::Close => {
                self.conns[idx] = Some(conn);
                self.close(idx);
            }
        }
    }

    fn close(&mut self, idx: usize) {
        if let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.again.retain(|&i| i != idx);
            self.free.push(idx);
        }
    }

    /// Moves a connection as far as its socket allows.
    fn drive(&mut self, conn: &mut Conn) -> Drive {
        let mut answered = 0;
        loop {
            match conn.phase {
                Phase::Reading => {
                    if let Some(reply) = self.next_request(conn) {
                        self.queue(conn, reply);
                        answered += 1;
                        continue;
                    }
                    if conn.peer_eof {
                        // The peer closed with no complete request left.
                        return Drive::Close;
                    }
                    if answered >= REQUESTS_PER_TURN {
                        return Drive::Again;
                    }
                    match self.read_more(conn) {
                        Ok(()) => {}
                        Err(e) if would_block(&e) => return Drive::Blocked,
                        Err(e) if interrupted(&e) => {}
                        Err(_) => return Drive::Close,
                    }
                }
                Phase::Writing => match conn.stream.write(&conn.out[conn.sent..]) {
                    Ok(0) => return Drive::Close,
                    Ok(n) => {
                        conn.sent += n;
                        if conn.sent < conn.out.len() {
                            continue;
                        }
                        if conn.close_after {
                            let _ = conn.stream.shutdown(Shutdown::Write);
                            conn.phase = Phase::Draining;
                            conn.deadline = Instant::now() + self.read_timeout.min(MAX_LINGER);
                        } else {
                            let now = Instant::now();
                            conn.phase = Phase::Reading;
                            if conn.filled > 0 {
                                conn.request_started = Some(now);
                                conn.deadline = now + self.read_timeout;
                            } else {
                                conn.request_started = None;
                                conn.deadline = now + self.idle_timeout;
                            }
                            if answered >= REQUESTS_PER_TURN {
                                return Drive::Again;
                            }
                        }
                    }
                    Err(e) if would_block(&e) => return Drive::Blocked,
                    Err(e) if interrupted(&e) => {}
                    Err(_) => return Drive::Close,
                },
                Phase::Draining => {
                    if conn.buf.is_empty() {
                        conn.buf.resize(INITIAL_READ_BUFFER, 0);
                    }
                    match conn.stream.read(&mut conn.buf) {
                        Ok(0) => return Drive::Close,
                        Ok(n) => {
                            conn.drained += n;
                            if conn.drained > MAX_LINGER_BYTES {
                                return Drive::Close;
                            }
                        }
                        Err(e) if would_block(&e) => return Drive::Blocked,
                        Err(e) if interrupted(&e) => {}
                        Err(_) => return Drive::Close,
                    }
                }
            }
        }
    }

    /// Reads what the socket has into the connection's buffer, growing it up to its bound.
    fn read_more(&self, conn: &mut Conn) -> io::Result<()> {
        let cap = self.limits.max_header_bytes + self.limits.max_body_bytes;
        if conn.filled == conn.buf.len() {
            // `next_request` answers before a full buffer (431 or a complete request), so the
            // bound is only a guard.
            let grown = (conn.buf.len() * 2).max(INITIAL_READ_BUFFER).min(cap);
            if grown <= conn.buf.len() {
                return Err(io::Error::other("read buffer full"));
            }
            conn.buf.resize(grown, 0);
        }
        let n = conn.stream.read(&mut conn.buf[conn.filled..])?;
        if n == 0 {
            conn.peer_eof = true;
            return Ok(());
        }
        if conn.filled == 0 && conn.request_started.is_none() {
            let now = Instant::now();
            conn.request_started = Some(now);
            conn.deadline = now + self.read_timeout;
        }
        conn.filled += n;
        Ok(())
    }

    /// The answer to the next complete request in the buffer, if there is one; the request's
    /// bytes are consumed.
    fn next_request(&mut self, conn: &mut Conn) -> Option<Reply> {
        if conn.filled == 0 {
            return None;
        }
        match frame(&conn.buf[..conn.filled], &mut conn.head, self.limits) {
            Framed::More { send_continue } => {
                if send_continue {
                    Self::send_continue(conn);
                }
                None
            }
            Framed::Refused(reply) => {
                conn.filled = 0;
                Some(reply)
            }
            Framed::Ready(head, end) => {
                let body = &conn.buf[head.head_len..end];
                let mut reply = self.router.respond(&head, body, conn.ip);
                reply.close |= !head.keep_alive || conn.peer_eof;
                conn.buf.copy_within(end..conn.filled, 0);
                conn.filled -= end;
                Some(reply)
            }
        }
    }

    /// Best effort `100 Continue`: a client that does not get it sends its body after its own
    /// delay anyway. A partial write would corrupt the stream, so it closes the connection.
    fn send_continue(conn: &mut Conn) {
        const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        match conn.stream.write(CONTINUE) {
            Ok(n) if n == CONTINUE.len() => {}
            Err(e) if would_block(&e) => {}
            _ => conn.close_after = true,
        }
    }

    fn queue(&self, conn: &mut Conn, mut reply: Reply) {
        reply.close |= conn.close_after;
        reply.write_to(&mut conn.out);
        conn.sent = 0;
        conn.close_after = reply.close;
        conn.phase = Phase::Writing;
        conn.deadline = Instant::now() + self.write_timeout;
        bump(&self.counters.requests);
        match reply.status {
            400..=499 => bump(&self.counters.client_errors),
            500..=599 => bump(&self.counters.server_errors),
            _ => {}
        }
    }

    fn expire(&mut self, now: Instant) {
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            if conn.deadline > now {
                continue;
            }
            match conn.phase {
                Phase::Reading if conn.request_started.is_some() => {
                    bump(&self.counters.timeouts);
                    let mut reply = Reply::error(408, "request not received in time");
                    reply.close = true;
                    conn.head = None;
                    conn.filled = 0;
                    let mut conn = self.conns[idx].take();
                    if let Some(c) = conn.as_mut() {
                        self.queue(c, reply);
                    }
                    self.conns[idx] = conn;
                    self.drive_slot(idx);
                }
                Phase::Reading | Phase::Writing => {
                    bump(&self.counters.timeouts);
                    self.close(idx);
                }
                Phase::Draining => self.close(idx),
            }
        }
    }
}

/// Routing, authentication and the API calls: everything the server does with a request once it
/// is framed.
struct Router<A> {
    api: A,
    keys: ApiKeys,
    limiter: FailureLimiter,
    counters: Arc<Counters>,
}

impl<A: ControlApi> Router<A> {
    fn new(config: &ControlConfig, keys: ApiKeys, api: A, counters: Arc<Counters>) -> Self {
        Router {
            api,
            keys,
            limiter: FailureLimiter::new(
                config.auth_failures,
                config.auth_window,
                config.auth_table_size,
            ),
            counters,
        }
    }

    fn respond(&mut self, head: &RequestHead, body: &[u8], ip: IpAddr) -> Reply {
        let now = Instant::now();
        if head.method == Method::Post
            && let Some(wait) = self.limiter.limited(ip, now)
        {
            bump(&self.counters.rate_limited);
            let mut reply = Reply::error(429, "too many failed authentications; retry later");
            reply.retry_after = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            return reply;
        }
        let Some(route) = route(&head.path) else {
            return Reply::error(404, "no such path");
        };
        let allowed = match route {
            Route::Health | Route::Metrics | Route::ShadowReport => Method::Get,
            Route::Promote(_) | Route::Shadow(_) | Route::KillSwitch => Method::Post,
        };
        if head.method != allowed {
            let allow = if allowed == Method::Get {
                "GET"
            } else {
                "POST"
            };
            let mut reply = Reply::error(405, &format!("method not allowed; use {allow}"));
            reply.allow = Some(allow);
            return reply;
        }
        if allowed == Method::Post
            && let Some(refusal) = self.authenticate(head, ip, now)
        {
            return refusal;
        }
        match route {
            Route::Health => match guarded(|| self.api.health()) {
                Ok((status, body)) => {
                    let status = if (200..=599).contains(&status) {
                        status
                    } else {
                        500
                    };
                    Reply::json(status, body)
                }
                Err(reply) => reply,
            },
            Route::Metrics => match guarded(|| self.api.metrics()) {
                Ok(mut text) => {
                    if !text.is_empty() && !text.ends_with('\n') {
                        text.push('\n');
                    }
                    text.push_str(&self.counters.snapshot().to_prometheus());
                    let mut reply = Reply::json(200, text);
                    reply.content_type = PROMETHEUS;
                    reply
                }
                Err(reply) => reply,
            },
            Route::Promote(name) | Route::Shadow(name) => {
                if !valid_model_name(name) {
                    return Reply::error(400, "bad model name (1 to 128 of A-Z a-z 0-9 . _ -)");
                }
                if !body.is_empty()
                    && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(body)
                {
                    return Reply::error(400, &format!("body is not JSON: {e}"));
                }
                if matches!(route, Route::Shadow(_)) {
                    api_reply(guarded(|| self.api.shadow(name, body)))
                } else {
                    api_reply(guarded(|| self.api.promote(name, body)))
                }
            }
            Route::ShadowReport => api_reply(guarded(|| self.api.shadow_report())),
            Route::KillSwitch => {
                let parsed: KillSwitchBody = match serde_json::from_slice(body) {
                    Ok(b) => b,
                    Err(e) => {
                        return Reply::error(400, &format!("{KILL_SWITCH_SHAPE}: {e}"));
                    }
                };
                let engage = matches!(parsed.action, KillAction::Engage);
                api_reply(guarded(|| self.api.kill_switch(engage, &parsed.reason)))
            }
        }
    }

    /// `None` if the request carries a valid key; otherwise the refusal, counted against `ip`.
    fn authenticate(&mut self, head: &RequestHead, ip: IpAddr, now: Instant) -> Option<Reply> {
        let refusal = match &head.api_key {
            None => Reply::error(401, "missing X-API-Key header"),
            Some(key) if self.keys.verify(key) => return None,
            Some(_) => Reply::error(403, "invalid API key"),
        };
        bump(&self.counters.auth_failures);
        self.limiter.record_failure(ip, now);
        Some(refusal)
    }
}

fn head_limits(config: &ControlConfig) -> HeadLimits {
    HeadLimits {
        max_header_bytes: config.max_header_bytes,
        max_body_bytes: config.max_body_bytes,
    }
}

/// One step of reading requests out of a connection's buffer.
enum Framed {
    /// More bytes are needed; `send_continue` when the head just read asks for `100 Continue`.
    More { send_continue: bool },
    /// The head is refused: answer and close.
    Refused(Reply),
    /// A whole request: its head, and where its body ends in the buffer.
    Ready(RequestHead, usize),
}

/// Frames the next request at the start of `buf`; `pending` keeps a head already parsed while
/// its body arrives.
fn frame(buf: &[u8], pending: &mut Option<RequestHead>, limits: HeadLimits) -> Framed {
    if pending.is_none() {
        match http::parse_head(buf, limits) {
            Ok(None) => {
                return Framed::More {
                    send_continue: false,
                };
            }
            Ok(Some(head)) => {
                let send_continue =
                    head.expect_continue && buf.len() < head.head_len + head.content_length;
                *pending = Some(head);
                if send_continue {
                    return Framed::More { send_continue };
                }
            }
            Err(e) => {
                let mut reply = Reply::error(e.status, &e.message);
                reply.close = true;
                return Framed::Refused(reply);
            }
        }
    }
    match pending.take() {
        Some(head) if buf.len() >= head.head_len + head.content_length => {
            let end = head.head_len + head.content_length;
            Framed::Ready(head, end)
        }
        head => {
            *pending = head;
            Framed::More {
                send_continue: false,
            }
        }
    }
}

/// Answers the requests in `bytes` as the control thread answers a connection that sent exactly
/// those bytes, without a socket: the same framing, limits, routing, authentication (as a
/// client at 127.0.0.1) and calls into `api`. Returns the status of each answer in order.
/// Answering stops after an answer that closes the connection; an incomplete request at the end
/// gets no answer here (the server would answer it 408 at its deadline).
///
/// # Errors
/// [`PipelineError::Config`] when `config` is invalid.
pub fn answer_statuses<A: ControlApi>(
    config: &ControlConfig,
    keys: ApiKeys,
    api: A,
    bytes: &[u8],
) -> Result<Vec<u16>, PipelineError> {
    config.validate()?;
    let mut router = Router::new(config, keys, api, Arc::new(Counters::default()));
    let limits = head_limits(config);
    let ip = IpAddr::from([127, 0, 0, 1]);
    let (mut rest, mut pending, mut statuses) = (bytes, None, Vec::new());
    while !rest.is_empty() {
        match frame(rest, &mut pending, limits) {
            Framed::More { .. } => break,
            Framed::Refused(reply) => {
                statuses.push(reply.status);
                break;
            }
            Framed::Ready(head, end) => {
                let reply = router.respond(&head, &rest[head.head_len..end], ip);
                statuses.push(reply.status);
                if reply.close || !head.keep_alive {
                    break;
                }
                rest = &rest[end..];
            }
        }
    }
    Ok(statuses)
}

/// Runs an API call; a panic becomes a 500 rather than the end of the control thread.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, Reply> {
    catch_unwind(AssertUnwindSafe(f))
        .map_err(|_| Reply::error(500, "internal error in the control API"))
}

fn api_reply(result: Result<Result<String, ControlError>, Reply>) -> Reply {
    match result {
        Ok(Ok(body)) => Reply::json(200, body),
        Ok(Err(e)) => Reply::error(e.status(), e.message()),
        Err(reply) => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_model_names() {
        assert!(matches!(route("/health"), Some(Route::Health)));
        assert!(matches!(route("/metrics"), Some(Route::Metrics)));
        assert!(matches!(route("/kill-switch"), Some(Route::KillSwitch)));
        assert!(matches!(
            route("/models/xgb-v2/promote"),
            Some(Route::Promote("xgb-v2"))
        ));
        assert!(route("/models/a/b/promote").is_none());
        assert!(matches!(
            route("/models/score/shadow"),
            Some(Route::Shadow("score"))
        ));
        assert!(matches!(route("/models/shadow"), Some(Route::ShadowReport)));
        assert!(route("/models/score/demote").is_none());
        assert!(route("/models/a/b/shadow").is_none());
        assert!(route("/health/").is_none());
        assert!(route("/models/x").is_none());
        assert!(valid_model_name("score_v1.2-rc"));
        assert!(!valid_model_name(""));
        assert!(!valid_model_name(".."));
        assert!(!valid_model_name("a%2Fb"));
        assert!(!valid_model_name(&"a".repeat(MAX_MODEL_NAME + 1)));
    }

    struct Stub;

    impl ControlApi for Stub {
        fn health(&self) -> (u16, String) {
            (503, "{}".into())
        }
        fn metrics(&self) -> String {
            String::new()
        }
        fn promote(&mut self, _: &str, _: &[u8]) -> Result<String, ControlError> {
            Err(ControlError::Conflict("busy".into()))
        }
        fn kill_switch(&mut self, _: bool, _: &str) -> Result<String, ControlError> {
            Ok("{}".into())
        }
    }

    /// The socket-free path answers as the server does: pipelined requests in order, refusals
    /// of the head end the stream, an incomplete request gets no answer.
    #[test]
    fn answers_request_bytes_without_a_socket() {
        let key = "k".repeat(16);
        let answer = |bytes: &[u8]| {
            let keys = ApiKeys::from_keys([key.as_str()]).expect("key");
            answer_statuses(&ControlConfig::default(), keys, Stub, bytes).expect("config")
        };
        let body = r#"{"action":"engage","reason":"x"}"#;
        let kill = format!(
            "POST /kill-switch HTTP/1.1\r\nX-API-Key: {key}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let stream = format!(
            "GET /health HTTP/1.1\r\n\r\nPOST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n\
             {kill}POST /models/m/promote HTTP/1.1\r\nX-API-Key: {key}\r\n\
             Content-Length: 0\r\n\r\nGET /nowhere HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n"
        );
        assert_eq!(answer(stream.as_bytes()), [503, 405, 200, 409, 404]);
        assert_eq!(
            answer(b"POST /kill-switch HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\n\r\n"),
            [411]
        );
        assert_eq!(
            answer(b"GET /health HTTP/1.0\r\n\r\nGET /health HTTP/1.1\r\n\r\n"),
            [503]
        );
        assert_eq!(
            answer(b"POST /kill-switch HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
            [401]
        );
        assert!(answer(b"GET /hea").is_empty());
        let bad = ControlConfig {
            max_connections: 0,
            ..ControlConfig::default()
        };
        assert!(answer_statuses(&bad, ApiKeys::none(), Stub, b"").is_err());
    }

    #[test]
    fn stats_in_prometheus_text() {
        let s = ControlStats {
            requests: 7,
            rate_limited: 2,
            ..ControlStats::default()
        };
        let text = s.to_prometheus();
        assert!(
            text.contains("\ntickpipe_control_requests_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("\ntickpipe_control_rate_limited_total 2\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tickpipe_control_timeouts_total counter\n"),
            "{text}"
        );
    }
}
