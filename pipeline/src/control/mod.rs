//! The HTTP/1.1 control plane: health, metrics, model promotion and the kill switch, served on a
//! thread of its own.
//!
//! The server never touches a stage. It runs one `mio` poll loop over non-blocking sockets and
//! calls a [`ControlApi`] supplied by the embedding code, which answers from snapshots prepared
//! elsewhere and sends commands through non-blocking handles. A stuck or hostile client costs a
//! bounded buffer and a connection slot until its deadline, never the loop: the poll timeout is
//! the nearest deadline, so deadlines are enforced without traffic.
//!
//! # Routes
//!
//! | method | path | answer |
//! |---|---|---|
//! | `GET` | `/health` | [`ControlApi::health`]: 200 when healthy, 503 when not; JSON |
//! | `GET` | `/metrics` | [`ControlApi::metrics`] followed by the server's own counters (`tickpipe_control_*`); `text/plain; version=0.0.4` |
//! | `POST` | `/models/{name}/promote` | [`ControlApi::promote`]; the body, when not empty, must be JSON and is passed through |
//! | `POST` | `/models/{name}/shadow` | [`ControlApi::shadow`]: start or stop a candidate's shadow run; body as for promote |
//! | `GET` | `/models/shadow` | [`ControlApi::shadow_report`]: the running candidate's measurements; JSON |
//! | `POST` | `/kill-switch` | [`ControlApi::kill_switch`]; body `{"action":"engage"\|"release","reason":"..."}` |
//!
//! A model name is 1 to 128 characters of `A-Z a-z 0-9 . _ -`. The query string is ignored.
//! Successful answers carry what the API returned (JSON, except `/metrics`); every error is a
//! JSON body `{"error":"..."}`.
//!
//! # Status codes
//!
//! | code | when |
//! |---|---|
//! | 400 | malformed or non-UTF-8 request line, bad header, bad `Content-Length`, duplicate `X-API-Key`, bad JSON, bad model name, [`ControlError::BadRequest`] |
//! | 401 | `POST` without `X-API-Key` |
//! | 403 | `POST` with a key that matches none (or no keys are configured) |
//! | 404 | unknown path, [`ControlError::NotFound`] |
//! | 405 | known path, wrong method (with `Allow`) |
//! | 408 | request not complete within [`ControlConfig::read_timeout`] (the connection is closed) |
//! | 409 / 422 | [`ControlError::Conflict`] / [`ControlError::Unprocessable`] |
//! | 411 | `POST` without `Content-Length` |
//! | 413 | `Content-Length` above [`ControlConfig::max_body_bytes`] |
//! | 429 | the client's address is rate-limited after failed authentications (with `Retry-After`) |
//! | 431 | request head above [`ControlConfig::max_header_bytes`], or more than 64 header fields |
//! | 500 | [`ControlError::Internal`], or the API panicked |
//! | 501 | `Transfer-Encoding` (chunked bodies are not accepted: send `Content-Length`) |
//!
//! Refusals of the request head, which leave the connection's framing unknown (a malformed
//! head's 400, 408, 411, 413, 431, 501), close the connection after the answer; so does
//! `Connection: close` (and HTTP/1.0 without `Connection: keep-alive`). Otherwise the
//! connection is kept alive until [`ControlConfig::idle_timeout`].
//!
//! # Authentication
//!
//! Every `POST` needs an `X-API-Key` header. Keys come from a file
//! ([`ControlConfig::api_keys_file`]: one key per line, blank lines and lines starting with `#`
//! ignored) and from an environment variable ([`ControlConfig::api_keys_env`], comma
//! separated), never from the command line. A key is 16 to 256 printable ASCII characters
//! without spaces. A candidate is compared with every key in constant time (every byte of every
//! key, lengths included, no early exit).
//!
//! Failed attempts (missing or wrong key) drain a token bucket per client IP address
//! ([`ControlConfig::auth_failures`] per [`ControlConfig::auth_window`]). While a bucket is empty,
//! every `POST` from that address gets 429 with `Retry-After`, before its key is even looked at.
//! The table of addresses is capped ([`ControlConfig::auth_table_size`]): refilled buckets go
//! first, then the least recently touched.
//!
//! # Limits
//!
//! Each is a field of [`ControlConfig`]: request head size (8 KiB), body size (64 KiB), concurrent
//! connections (64; connections above the cap are closed as soon as they are accepted, and
//! counted), time to receive a whole request from its first byte, or from the accept for a
//! connection's first request (2 s), keep-alive idle time (10 s), time to send an answer (2 s).
//! Each connection has one read buffer, grown up to head plus body limit and reused for every
//! request, and one reused write buffer.
//!
//! # Configuration
//!
//! ```toml
//! bind = "127.0.0.1:9464"          # loopback only, unless allow_remote = true
//! allow_remote = false
//! api_keys_file = "/etc/tickpipe/api-keys"
//! api_keys_env = "TICKPIPE_API_KEYS" # "" to read no variable
//! max_header_bytes = 8192
//! max_body_bytes = 65536
//! max_connections = 64
//! read_timeout = "2s"
//! idle_timeout = "10s"
//! write_timeout = "2s"
//! auth_failures = 5
//! auth_window = "10s"
//! auth_table_size = 1024
//! ```

mod auth;
mod http;
mod server;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::PipelineError;

pub use auth::{ApiKeys, MAX_KEY_LEN, MIN_KEY_LEN, constant_time_eq};
pub use server::{ControlHandle, ControlServer, ControlStats, TICK, answer_statuses};

/// What the embedding engine exposes to the control plane.
///
/// Every method runs on the control thread and must not block: read a snapshot, push a command
/// through a non-blocking handle, answer.
pub trait ControlApi: Send + 'static {
    /// The status code (200 when healthy, 503 when not) and a JSON body.
    fn health(&self) -> (u16, String);

    /// Metrics in the Prometheus text exposition format (0.0.4).
    fn metrics(&self) -> String;

    /// Promotes `model` with the request's body (JSON, or empty). Returns a JSON body.
    ///
    /// # Errors
    /// Whatever the engine refuses, with the status code it maps to.
    fn promote(&mut self, model: &str, body: &[u8]) -> Result<String, ControlError>;

    /// Starts or stops shadowing `model` with the request's body (JSON, or empty). Returns a
    /// JSON body. By default: 404, no shadow lane.
    ///
    /// # Errors
    /// Whatever the engine refuses, with the status code it maps to.
    fn shadow(&mut self, model: &str, body: &[u8]) -> Result<String, ControlError> {
        let _ = (model, body);
        Err(ControlError::NotFound(
            "this engine has no shadow lane".into(),
        ))
    }

    /// The running shadow candidate's measurements, as JSON. By default: 404, no shadow lane.
    ///
    /// # Errors
    /// Whatever the engine refuses, with the status code it maps to.
    fn shadow_report(&mut self) -> Result<String, ControlError> {
        Err(ControlError::NotFound(
            "this engine has no shadow lane".into(),
        ))
    }

    /// Called by the server's loop about every [`TICK`] (500 ms), between requests:
    /// periodic work of the API's own (following a registry, say). Must not block. Default:
    /// nothing.
    fn tick(&mut self) {}

    /// Engages (`engage == true`) or releases the kill switch. Returns a JSON body.
    ///
    /// # Errors
    /// Whatever the engine refuses, with the status code it maps to.
    fn kill_switch(&mut self, engage: bool, reason: &str) -> Result<String, ControlError>;
}

/// A refusal from the [`ControlApi`], answered with its status code and `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// 400: the request is not acceptable as written.
    #[error("{0}")]
    BadRequest(String),
    /// 404: the named thing does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the engine's state.
    #[error("{0}")]
    Conflict(String),
    /// 422: well-formed but invalid (a model that fails validation, say).
    #[error("{0}")]
    Unprocessable(String),
    /// 500: the engine failed.
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// The HTTP status code this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            ControlError::BadRequest(_) => 400,
            ControlError::NotFound(_) => 404,
            ControlError::Conflict(_) => 409,
            ControlError::Unprocessable(_) => 422,
            ControlError::Internal(_) => 500,
        }
    }

    /// The message sent to the client.
    pub fn message(&self) -> &str {
        match self {
            ControlError::BadRequest(m)
            | ControlError::NotFound(m)
            | ControlError::Conflict(m)
            | ControlError::Unprocessable(m)
            | ControlError::Internal(m) => m,
        }
    }
}

/// The control plane's configuration; every field has a default (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Address to listen on. Default `127.0.0.1:0` (loopback, a port chosen by the system:
    /// [`ControlHandle::local_addr`] tells which).
    pub bind: SocketAddr,
    /// Allow a non-loopback `bind`. Default false.
    pub allow_remote: bool,
    /// File of API keys, one per line, `#` comments. Default none.
    pub api_keys_file: Option<PathBuf>,
    /// Environment variable holding comma-separated API keys. Default `TICKPIPE_API_KEYS`;
    /// none or empty reads no variable.
    pub api_keys_env: Option<String>,
    /// Largest request head (request line and headers) in bytes; above: 431. Default 8192.
    pub max_header_bytes: usize,
    /// Largest request body in bytes; above: 413. Default 65536.
    pub max_body_bytes: usize,
    /// Most connections open at once; more are closed when accepted. Default 64.
    pub max_connections: usize,
    /// Time to receive a whole request; past it: 408 and close. Default 2 s.
    #[serde(deserialize_with = "de_duration")]
    pub read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request. Default 10 s.
    #[serde(deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// Time to send an answer to a client that does not read it. Default 2 s.
    #[serde(deserialize_with = "de_duration")]
    pub write_timeout: Duration,
    /// Failed authentications an address may make per `auth_window` (the bucket's size).
    /// Default 5.
    pub auth_failures: u32,
    /// Time in which an empty bucket refills completely. Default 10 s.
    #[serde(deserialize_with = "de_duration")]
    pub auth_window: Duration,
    /// Most addresses tracked by the rate limiter. Default 1024.
    pub auth_table_size: usize,
}

/// The environment variable read for API keys by default.
pub const DEFAULT_API_KEYS_ENV: &str = "TICKPIPE_API_KEYS";

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            allow_remote: false,
            api_keys_file: None,
            api_keys_env: Some(DEFAULT_API_KEYS_ENV.to_string()),
            max_header_bytes: 8 * 1024,
            max_body_bytes: 64 * 1024,
            max_connections: 64,
            read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(2),
            auth_failures: 5,
            auth_window: Duration::from_secs(10),
            auth_table_size: 1024,
        }
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    crate::config::parse_duration(&s).map_err(serde::de::Error::custom)
}

impl ControlConfig {
    /// Parses and validates a TOML table (see the module docs for the fields).
    ///
    /// # Errors
    /// [`PipelineError::Config`] naming the bad field.
    pub fn from_toml(text: &str) -> Result<Self, PipelineError> {
        let config: ControlConfig =
            toml::from_str(text).map_err(|e| PipelineError::config("control", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads [`ControlConfig::from_toml`] from a file; a relative `api_keys_file` is taken
    /// relative to the file's directory.
    ///
    /// # Errors
    /// [`PipelineError::Config`] if the file cannot be read or a field is bad.
    pub fn load(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PipelineError::config("control", format!("cannot read {}: {e}", path.display()))
        })?;
        let mut config = Self::from_toml(&text)?;
        if let (Some(keys), Some(dir)) = (&config.api_keys_file, path.parent())
            && keys.is_relative()
        {
            config.api_keys_file = Some(dir.join(keys));
        }
        Ok(config)
    }

    /// Checks every limit is usable and the address is allowed.
    ///
    /// # Errors
    /// [`PipelineError::Config`] naming the bad field.
    pub fn validate(&self) -> Result<(), PipelineError> {
        if !self.allow_remote && !self.bind.ip().is_loopback() {
            return Err(PipelineError::config(
                "bind",
                format!(
                    "{} is not a loopback address; set allow_remote = true to listen on it",
                    self.bind
                ),
            ));
        }
        if self.max_header_bytes < 64 {
            return Err(PipelineError::config(
                "max_header_bytes",
                "must be at least 64",
            ));
        }
        if self.max_connections == 0 {
            return Err(PipelineError::config(
                "max_connections",
                "must be at least 1",
            ));
        }
        if self.auth_failures == 0 {
            return Err(PipelineError::config("auth_failures", "must be at least 1"));
        }
        if self.auth_table_size == 0 {
            return Err(PipelineError::config(
                "auth_table_size",
                "must be at least 1",
            ));
        }
        for (field, d) in [
            ("read_timeout", self.read_timeout),
            ("idle_timeout", self.idle_timeout),
            ("write_timeout", self.write_timeout),
            ("auth_window", self.auth_window),
        ] {
            if d.is_zero() {
                return Err(PipelineError::config(field, "must be above zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_valid() {
        let c = ControlConfig::default();
        assert!(c.bind.ip().is_loopback());
        assert_eq!(c.max_header_bytes, 8192);
        assert_eq!(c.max_body_bytes, 65536);
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn toml_overrides_and_durations() {
        let c = ControlConfig::from_toml(
            "bind = \"127.0.0.1:9464\"\nread_timeout = \"250ms\"\nmax_connections = 3\n\
             api_keys_file = \"keys\"\nauth_window = \"1m\"\n",
        );
        // "1m" is not a duration unit (minutes are not accepted): the field is named.
        let err = c.expect_err("1m is refused").to_string();
        assert!(err.contains("duration"), "{err}");

        let c = ControlConfig::from_toml(
            "bind = \"127.0.0.1:9464\"\nread_timeout = \"250ms\"\nmax_connections = 3\n\
             api_keys_file = \"keys\"\n",
        )
        .expect("valid");
        assert_eq!(c.bind.port(), 9464);
        assert_eq!(c.read_timeout, Duration::from_millis(250));
        assert_eq!(c.max_connections, 3);
        assert_eq!(c.api_keys_file.as_deref(), Some(Path::new("keys")));
        assert_eq!(c.idle_timeout, ControlConfig::default().idle_timeout);
    }

    #[test]
    fn non_loopback_needs_allow_remote() {
        let err = ControlConfig::from_toml("bind = \"0.0.0.0:9464\"\n").expect_err("refused");
        assert!(err.to_string().contains("allow_remote"), "{err}");
        ControlConfig::from_toml("bind = \"0.0.0.0:9464\"\nallow_remote = true\n")
            .expect("allowed");
        ControlConfig::from_toml("bind = \"[::1]:9464\"\n").expect("v6 loopback");
    }

    #[test]
    fn bad_fields_are_named() {
        for (text, field) in [
            ("max_connections = 0\n", "max_connections"),
            ("read_timeout = \"0s\"\n", "read_timeout"),
            ("auth_failures = 0\n", "auth_failures"),
        ] {
            let err = ControlConfig::from_toml(text).expect_err(text).to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        let err = ControlConfig::from_toml("port = 1\n").expect_err("unknown field");
        assert!(err.to_string().contains("port"), "{err}");
    }

    #[test]
    fn load_resolves_key_file_relative_to_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.toml");
        std::fs::write(&path, "api_keys_file = \"keys.txt\"\n").expect("write");
        let c = ControlConfig::load(&path).expect("load");
        assert_eq!(c.api_keys_file, Some(dir.path().join("keys.txt")));
    }

    #[test]
    fn control_error_statuses() {
        assert_eq!(ControlError::BadRequest("x".into()).status(), 400);
        assert_eq!(ControlError::NotFound("x".into()).status(), 404);
        assert_eq!(ControlError::Conflict("x".into()).status(), 409);
        assert_eq!(ControlError::Unprocessable("x".into()).status(), 422);
        assert_eq!(ControlError::Internal("boom".into()).status(), 500);
        assert_eq!(ControlError::Internal("boom".into()).message(), "boom");
    }
}
