//! Applies a profile's `[host]` settings around start-up (`run` and `profile`) and prints what
//! became of each: memory locking first, huge pages as the rings are created, prefaulting once
//! both rings are mapped, real-time scheduling as the stage threads start (in the engine).
//!
//! Every setting that is on gets a line on standard error; a `required` one that is not in
//! effect stops start-up with that line as the error.

use std::path::Path;

use anyhow::{Context, Result};
use tickpipe_pipeline::host::{self, HostReport, HostSettings, SettingOutcome, Want};
use tickpipe_pipeline::signal::{SIGNAL_LEN, SIGNAL_META};
use tickpipe_shm::mapped::{self, CreateOptions, MappedRegion, PageBacking};
use tickpipe_shm::ring::content;
use tickpipe_shm::{RingReader, RingWriter};

/// Where sysfs is (the transparent-huge-page policy of tmpfs is read from it).
const SYS: &str = "/sys";

/// Process-wide settings, before any ring is mapped: `mlockall`.
///
/// # Errors
/// A required setting not in effect.
pub fn before_rings(settings: &HostSettings) -> Result<HostReport> {
    let report = HostReport {
        outcomes: vec![host::lock_memory(settings.mlockall)],
    };
    report.check_required()?;
    Ok(report)
}

/// The outcome of huge pages for a ring this process created.
pub fn created_ring_pages(want: Want, ring: &str, backing: &PageBacking) -> SettingOutcome {
    let policy = host::shmem_thp_policy(Path::new(SYS));
    host::huge_pages_outcome(want, ring, backing, policy.as_deref())
}

/// Creates the signal ring, on huge pages when the profile asks for them.
///
/// # Errors
/// The ring cannot be created.
pub fn create_signal_ring(
    path: &Path,
    capacity: usize,
    huge_pages: Want,
) -> Result<(RingWriter<MappedRegion>, SettingOutcome)> {
    let (writer, backing) = mapped::create_with_pages(
        path,
        &CreateOptions {
            capacity,
            max_payload: SIGNAL_LEN,
            content_tag: content::SIGNALS,
            group: None,
        },
        &SIGNAL_META,
        huge_pages != Want::Off,
    )
    .with_context(|| format!("creating signal ring {}", path.display()))?;
    Ok((
        writer,
        created_ring_pages(huge_pages, "signal ring", &backing),
    ))
}

/// Settings on the mapped rings: huge pages for an attached market-data ring (`md_attached`:
/// its path; `None` when this process created it) and prefaulting both rings.
pub fn on_rings(
    settings: &HostSettings,
    md: Option<&RingReader<MappedRegion>>,
    md_attached: Option<&Path>,
    signals: &RingWriter<MappedRegion>,
) -> Vec<SettingOutcome> {
    let mut out = Vec::new();
    if let (Some(path), Some(md)) = (md_attached, md) {
        let policy = host::shmem_thp_policy(Path::new(SYS));
        out.push(host::huge_pages_attached(
            settings.hugepages,
            "market-data ring",
            path,
            md.region(),
            policy.as_deref(),
        ));
    }
    let mut rings = Vec::with_capacity(2);
    if let Some(md) = md {
        rings.push(("market-data ring", md.region()));
    }
    rings.push(("signal ring", signals.region()));
    out.push(host::prefault(settings.prefault, &rings));
    out
}

/// Prints the report, one line per setting, under `prefix` (`tickpipe run`, `profile`).
pub fn print(prefix: &str, report: &HostReport) {
    eprint!("{prefix}: host settings\n{report}");
}
