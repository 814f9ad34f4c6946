//! API keys (loading, constant-time check) and the per-address limiter of failed attempts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::PipelineError;

use super::ControlConfig;

/// Shortest accepted API key, in bytes.
pub const MIN_KEY_LEN: usize = 16;
/// Longest accepted API key, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// Compares two byte strings in time that depends only on their lengths: every byte up to the
/// longer length is compared, and the lengths are part of the difference, with no early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    // A length difference alone makes the strings differ, even when one is a prefix.
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    // Keeps the optimiser from turning the fold into a comparison that stops at the first
    // difference.
    std::hint::black_box(diff) == 0
}

/// The accepted API keys. Its `Debug` shows how many there are, never the keys.
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("count", &self.keys.len())
            .finish()
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.len() < MIN_KEY_LEN || key.len() > MAX_KEY_LEN {
        return Err(format!(
            "a key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} characters, this one has {}",
            key.len()
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a key must be printable ASCII without spaces".to_string());
    }
    Ok(())
}

impl ApiKeys {
    /// No keys: every `POST` is refused.
    pub fn none() -> Self {
        ApiKeys::default()
    }

    /// Keys given by the embedding code.
    ///
    /// # Errors
    /// [`PipelineError::Config`] (field `api_keys`) for a key of the wrong length or with
    /// spaces or non-ASCII characters (the key itself is not repeated).
    pub fn from_keys<I, S>(keys: I) -> Result<Self, PipelineError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = ApiKeys::none();
        for (i, key) in keys.into_iter().enumerate() {
            check_key(key.as_ref())
                .map_err(|e| PipelineError::config("api_keys", format!("key {}: {e}", i + 1)))?;
            out.add(key.as_ref());
        }
        Ok(out)
    }

    /// Parses a key file's text: one key per line, surrounding spaces trimmed, blank lines and
    /// lines starting with `#` ignored.
    ///
    /// # Errors
    /// [`PipelineError::Config`] (field `api_keys_file`) naming the line of a bad key.
    pub fn parse_file(text: &str) -> Result<Self, PipelineError> {
        let mut out = ApiKeys::none();
        for (i, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            check_key(key).map_err(|e| {
                PipelineError::config("api_keys_file", format!("line {}: {e}", i + 1))
            })?;
            out.add(key);
        }
        Ok(out)
    }

    /// Reads [`ApiKeys::parse_file`] from `path`.
    ///
    /// # Errors
    /// [`PipelineError::Config`] (field `api_keys_file`) if the file cannot be read, is not
    /// UTF-8, holds a bad key, or holds no key at all.
    pub fn from_file(path: &Path) -> Result<Self, PipelineError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            PipelineError::config("api_keys_file", format!("{}: {e}", path.display()))
        })?;
        let keys = Self::parse_file(&text)?;
        if keys.is_empty() {
            return Err(PipelineError::config(
                "api_keys_file",
                format!("{}: no key in the file", path.display()),
            ));
        }
        Ok(keys)
    }

    /// Parses an environment variable's value: keys separated by commas, surrounding spaces
    /// trimmed, empty entries ignored.
    ///
    /// # Errors
    /// [`PipelineError::Config`] (field `api_keys_env`) naming the entry of a bad key.
    pub fn parse_env_value(value: &str) -> Result<Self, PipelineError> {
        let mut out = ApiKeys::none();
        for (i, key) in value.split(',').map(str::trim).enumerate() {
            if key.is_empty() {
                continue;
            }
            check_key(key).map_err(|e| {
                PipelineError::config("api_keys_env", format!("entry {}: {e}", i + 1))
            })?;
            out.add(key);
        }
        Ok(out)
    }

    /// The keys named by `config`: those of `api_keys_file` (when set) and of the variable
    /// `api_keys_env` (when set, non-empty and present in the environment).
    ///
    /// # Errors
    /// As [`ApiKeys::from_file`] and [`ApiKeys::parse_env_value`]; a variable that is not UTF-8
    /// is an error too.
    pub fn load(config: &ControlConfig) -> Result<Self, PipelineError> {
        let mut out = match &config.api_keys_file {
            Some(path) => Self::from_file(path)?,
            None => ApiKeys::none(),
        };
        if let Some(name) = config.api_keys_env.as_deref().filter(|n| !n.is_empty())
            && let Some(value) = std::env::var_os(name)
        {
            let value = value.into_string().map_err(|_| {
                PipelineError::config("api_keys_env", format!("${name} is not UTF-8"))
            })?;
            for key in Self::parse_env_value(&value)?.keys {
                out.keys.push(key);
            }
        }
        Ok(out)
    }

    fn add(&mut self, key: &str) {
        self.keys.push(key.as_bytes().to_vec());
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key (every `POST` is then refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `candidate` is one of the keys. Every key is compared in full, whatever matches.
    pub fn verify(&self, candidate: &[u8]) -> bool {
        let mut found = false;
        for key in &self.keys {
            found |= constant_time_eq(key, candidate);
        }
        found
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets of failed authentications per client address, in a table of bounded size.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    burst: f64,
    per_sec: f64,
    cap: usize,
    table: HashMap<IpAddr, Bucket>,
}

impl FailureLimiter {
    /// `burst` failures per `window`, at most `cap` addresses remembered.
    pub(crate) fn new(burst: u32, window: Duration, cap: usize) -> Self {
        let burst = f64::from(burst.max(1));
        let window = window.as_secs_f64().max(1e-6);
        let cap = cap.max(1);
        FailureLimiter {
            burst,
            per_sec: burst / window,
            cap,
            table: HashMap::with_capacity(cap),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_sec).min(self.burst)
    }

    /// When `ip` may try again, if it is limited now.
    pub(crate) fn limited(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let b = *self.table.get(&ip)?;
        let tokens = self.refilled(b, now);
        (tokens < 1.0).then(|| Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
    }

    /// Takes one token from `ip`'s bucket.
    pub(crate) fn record_failure(&mut self, ip: IpAddr, now: Instant) {
        if let Some(b) = self.table.get(&ip).copied() {
            let tokens = (self.refilled(b, now) - 1.0).max(0.0);
            self.table.insert(ip, Bucket { tokens, at: now });
            return;
        }
        if self.table.len() >= self.cap {
            self.evict(now);
        }
        self.table.insert(
            ip,
            Bucket {
                tokens: self.burst - 1.0,
                at: now,
            },
        );
    }

    /// Makes room for one address: refilled buckets are forgotten, and if none was, the least
    /// recently touched one.
    fn evict(&mut self, now: Instant) {
        let burst = self.burst;
        let per_sec = self.per_sec;
        self.table.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens + elapsed * per_sec < burst
        });
        if self.table.len() < self.cap {
            return;
        }
        let oldest = self
            .table
            .iter()
            .min_by_key(|(_, b)| b.at)
            .map(|(ip, _)| *ip);
        if let Some(ip) = oldest {
            self.table.remove(&ip);
        }
    }

    /// Addresses remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const K1: &str = "k1-0123456789abcdef";
    const K2: &str = "k2-fedcba9876543210";

    #[test]
    fn constant_time_eq_answers() {
        assert!(constant_time_eq(b"secret-key", b"secret-key"));
        assert!(constant_time_eq(b"", b""));
        // Prefixes either way, differing last byte, empty against non-empty.
        assert!(!constant_time_eq(b"secret", b"secret-key"));
        assert!(!constant_time_eq(b"secret-key", b"secret"));
        assert!(!constant_time_eq(b"secret-key-longer", b"secret-key"));
        assert!(!constant_time_eq(b"secret-kez", b"secret-key"));
        assert!(!constant_time_eq(b"", b"secret-key"));
        assert!(!constant_time_eq(b"secret-key", b""));
        // A candidate padded with the zero bytes used past the shorter length is still wrong.
        assert!(!constant_time_eq(b"abc\0", b"abc"));
    }

    #[test]
    fn key_file_parsing() {
        let text = format!("# operators\n\n  {K1}  \n#{K2}\n{K2}\n");
        let keys = ApiKeys::parse_file(&text).expect("parses");
        assert_eq!(keys.len(), 2);
        assert!(keys.verify(K1.as_bytes()));
        assert!(keys.verify(K2.as_bytes()));
        assert!(!keys.verify(b"k1-0123456789abcde"));
        assert!(!keys.verify(b""));
        assert!(
            !format!("{keys:?}").contains("k1-"),
            "Debug must not show keys"
        );
    }

    #[test]
    fn key_file_errors_name_the_line_not_the_key() {
        let err = ApiKeys::parse_file(&format!("{K1}\nshort\n"))
            .expect_err("short key")
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("short\""), "{err}");
        let err = ApiKeys::parse_file("has a space in the key\n")
            .expect_err("spaces")
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn key_file_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("{K1}\n")).expect("write");
        assert_eq!(ApiKeys::from_file(&path).expect("reads").len(), 1);
        std::fs::write(&path, "# nothing here\n").expect("write");
        let err = ApiKeys::from_file(&path).expect_err("empty").to_string();
        assert!(err.contains("no key"), "{err}");
        let err = ApiKeys::from_file(&dir.path().join("missing"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("api_keys_file"), "{err}");
    }

    #[test]
    fn env_value_parsing() {
        let keys = ApiKeys::parse_env_value(&format!(" {K1} ,,{K2},")).expect("parses");
        assert_eq!(keys.len(), 2);
        assert!(keys.verify(K2.as_bytes()));
        assert!(ApiKeys::parse_env_value("").expect("empty").is_empty());
        let err = ApiKeys::parse_env_value(&format!("{K1},tiny"))
            .expect_err("bad entry")
            .to_string();
        assert!(err.contains("entry 2"), "{err}");
    }

    #[test]
    fn load_combines_file_and_absent_variable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("{K1}\n")).expect("write");
        let config = ControlConfig {
            api_keys_file: Some(path),
            api_keys_env: Some("TICKPIPE_TEST_SURELY_UNSET_VARIABLE".into()),
            ..ControlConfig::default()
        };
        let keys = ApiKeys::load(&config).expect("loads");
        assert_eq!(keys.len(), 1);
        let none = ControlConfig {
            api_keys_env: None,
            ..ControlConfig::default()
        };
        assert!(ApiKeys::load(&none).expect("loads").is_empty());
    }

    #[test]
    fn limiter_limits_after_burst_and_refills() {
        let ip = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let other = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(5, Duration::from_secs(10), 16);
        for _ in 0..5 {
            assert_eq!(l.limited(ip, t0), None);
            l.record_failure(ip, t0);
        }
        let wait = l.limited(ip, t0).expect("limited after 5 failures");
        // One token comes back after window / burst = 2 s.
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(l.limited(other, t0), None);
        assert!(l.limited(ip, t0 + Duration::from_millis(1900)).is_some());
        assert_eq!(l.limited(ip, t0 + Duration::from_millis(2001)), None);
    }

    #[test]
    fn limiter_table_is_bounded() {
        let t0 = Instant::now();
        let mut l = FailureLimiter::new(2, Duration::from_secs(10), 4);
        let ip = |i: u8| IpAddr::V4(Ipv4Addr::new(10, 0, 0, i));
        for i in 0..4 {
            l.record_failure(ip(i), t0 + Duration::from_millis(u64::from(i)));
            l.record_failure(ip(i), t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(l.len(), 4);
        l.record_failure(ip(9), t0 + Duration::from_millis(10));
        assert_eq!(l.len(), 4);
        // The least recently touched address (10.0.0.0) went; the others are still limited.
        assert_eq!(l.limited(ip(0), t0 + Duration::from_millis(10)), None);
        for i in 1..4 {
            assert!(l.limited(ip(i), t0 + Duration::from_millis(10)).is_some());
        }
        // Refilled buckets are dropped before any limited one.
        let later = t0 + Duration::from_secs(60);
        l.record_failure(ip(20), later);
        l.record_failure(ip(21), later);
        assert_eq!(l.len(), 2);
    }
}
