//! `tickpipe health --page`: the engine's health rollup from its shared-memory page, as JSON, with
//! an exit status monitoring scripts can use (the Nagios convention).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use tickpipe_pipeline::health::Status;
use tickpipe_pipeline::health::page::to_json;
use tickpipe_pipeline::health::shm_page::HealthPageReader;
use tickpipe_shm::mapped::{pid_alive, unix_now_ns};

/// Exit status: OK.
pub const EXIT_OK: u8 = 0;
/// Exit status: DEGRADED.
pub const EXIT_DEGRADED: u8 = 1;
/// Exit status: CRITICAL.
pub const EXIT_CRITICAL: u8 = 2;
/// Exit status: unknown (no page, unreadable, or the engine behind it is gone).
pub const EXIT_UNKNOWN: u8 = 3;

/// A page not refreshed for this long is not a live engine's (the monitor ticks at 10 Hz).
pub const PAGE_STALE: Duration = Duration::from_secs(5);

/// Prints the rollup at `page` to `out` and returns the exit status.
pub fn health(page: &Path, wait: Duration, compact: bool, out: &mut impl Write) -> u8 {
    let unknown = |out: &mut dyn Write, why: String| {
        let _ = writeln!(
            out,
            "{}",
            serde_json::json!({ "status": "UNKNOWN", "error": why })
        );
        eprintln!("tickpipe health: {why}");
        EXIT_UNKNOWN
    };
    let mut reader = match HealthPageReader::attach(page, wait) {
        Ok(r) => r,
        Err(e) => return unknown(out, e.to_string()),
    };
    let snapshot = match reader.read() {
        Ok(s) => s,
        Err(e) => return unknown(out, format!("{}: {e}", page.display())),
    };
    let age = Duration::from_nanos(unix_now_ns().saturating_sub(reader.heartbeat_ns()));
    if age > PAGE_STALE {
        let pid = reader.writer_pid();
        let why = if pid_alive(pid) {
            format!("the page was last updated {age:?} ago (engine pid {pid} is not monitoring)")
        } else {
            format!("the engine that wrote the page (pid {pid}) is gone; last update {age:?} ago")
        };
        return unknown(out, format!("{}: {why}", page.display()));
    }
    let mut json = to_json(&snapshot);
    json["page_age_ms"] = serde_json::json!(age.as_secs_f64() * 1e3);
    let text = if compact {
        json.to_string()
    } else {
        serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string())
    };
    if writeln!(out, "{text}").is_err() {
        return EXIT_UNKNOWN;
    }
    match snapshot.status {
        Status::Ok => EXIT_OK,
        Status::Degraded => EXIT_DEGRADED,
        Status::Critical => EXIT_CRITICAL,
    }
}
