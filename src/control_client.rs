//! The command line's side of a running engine's control plane: `tickpipe models promote
//! --control`, `tickpipe models shadow --control`. One HTTP/1.1 request per call, over a plain
//! TCP connection with time limits; the API key comes from an environment variable, never the
//! command line (it would show in `ps`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The variable the key is read from unless `--key-env` names another.
pub const DEFAULT_KEY_ENV: &str = "TICKPIPE_API_KEY";

/// Time to connect, to send the request, and to read the whole answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read (the control plane's are small JSON documents).
const MAX_ANSWER: u64 = 1 << 20;

/// A running engine's control plane.
#[derive(Debug, Clone)]
pub struct ControlClient {
    addr: SocketAddr,
    key_env: String,
    key: Option<String>,
}

impl ControlClient {
    /// A client for `addr`, with the API key from `$key_env` (needed for POSTs only).
    pub fn new(addr: SocketAddr, key_env: &str) -> Self {
        Self {
            addr,
            key_env: key_env.to_string(),
            key: std::env::var(key_env).ok().filter(|k| !k.is_empty()),
        }
    }

    /// `GET path`; the JSON body of a 2xx answer.
    ///
    /// # Errors
    /// No connection, a time-out, an answer that is not HTTP, or a non-2xx status (the error
    /// carries the server's message).
    pub fn get(&self, path: &str) -> Result<String> {
        self.request("GET", path, None)
    }

    /// `POST path` with a JSON body and the API key; the JSON body of a 2xx answer.
    ///
    /// # Errors
    /// As [`Self::get`], and no key in the environment.
    pub fn post(&self, path: &str, body: &str) -> Result<String> {
        if self.key.is_none() {
            bail!(
                "no API key: set {} to one of the engine's keys",
                self.key_env
            );
        }
        self.request("POST", path, Some(body))
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<String> {
        let mut s = TcpStream::connect_timeout(&self.addr, TIMEOUT)
            .with_context(|| format!("cannot reach the control plane at {}", self.addr))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(k) = &self.key
            && method == "POST"
        {
            req.push_str(&format!("X-API-Key: {k}\r\n"));
        }
        let body = body.unwrap_or("");
        if method == "POST" {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body);
        s.write_all(req.as_bytes())
            .with_context(|| format!("sending to {}", self.addr))?;
        let mut raw = Vec::new();
        s.take(MAX_ANSWER)
            .read_to_end(&mut raw)
            .with_context(|| format!("reading the answer from {}", self.addr))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .with_context(|| format!("{} answered something that is not HTTP", self.addr))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("{} answered without a status code", self.addr))?;
        if !(200..300).contains(&status) {
            let msg = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|j| j["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| body.trim().to_string());
            bail!("{method} {path}: HTTP {status}: {msg}");
        }
        Ok(body.to_string())
    }
}
