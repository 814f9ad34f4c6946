//! `tickpipe demo`: the quick-start job. Generates a synthetic capture (once, cached), replays
//! it into a shared-memory ring while a separate `tickpipe record` process drains the ring into a
//! DBN file, then checks the recording holds exactly the replayed records and prints both sides'
//! summaries and the ring's state.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};

use crate::capture::{Capture, MAX_DBN_RECORD};
use crate::replay::{self, ReplayOptions, Speed};
use crate::synth::{self, SynthConfig};
use tickpipe_shm::mapped::CreateOptions;

/// What the demo runs on.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Working folder for the capture, ring and recording.
    pub dir: PathBuf,
    /// Generated events.
    pub events: u64,
    /// Replay speed.
    pub speed: Speed,
}

fn checksum(path: &Path) -> Result<(u64, u64)> {
    let mut capture = Capture::open(path)?;
    // FNV-1a over every record's bytes: equal sums and counts mean equal streams here.
    let (mut n, mut h) = (0u64, 0xcbf2_9ce4_8422_2325u64);
    let flow = capture.visit(|rec| {
        n += 1;
        for &b in rec.as_ref() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        ControlFlow::Continue(())
    })?;
    ensure!(flow.is_continue(), "checksum stopped early");
    Ok((n, h))
}

/// Runs the demo.
///
/// # Errors
/// Any step failing, or a recording that differs from the replayed capture.
pub fn run(opts: &DemoOptions, stop: &Arc<AtomicBool>) -> Result<()> {
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let capture = opts.dir.join(format!("synth-{}.dbn.zst", opts.events));
    if !capture.exists() {
        let cfg = SynthConfig {
            events: opts.events,
            ..SynthConfig::default()
        };
        let stats = synth::write_capture(&cfg, &capture)?;
        println!(
            "gen: {} synthetic MBO records ({} instruments) -> {}",
            stats.records,
            cfg.instruments,
            capture.display()
        );
    }
    let ring = crate::engine_cmd::default_ring_path("demo");
    let recording = opts.dir.join("recorded.dbn.zst");
    let exe = std::env::current_exe().context("locating the tickpipe binary")?;
    let recorder = Command::new(exe)
        .args(["record", "--ring"])
        .arg(&ring)
        .arg("--out")
        .arg(&recording)
        .args(["--wait", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the recorder process")?;
    let replay_opts = ReplayOptions {
        captures: vec![capture.clone()],
        ring: ring.clone(),
        udp: None,
        speed: opts.speed,
        loops: 1,
        max_gap: Some(Duration::from_millis(10)),
        ring_options: CreateOptions {
            capacity: 256 << 20,
            max_payload: MAX_DBN_RECORD,
            ..CreateOptions::default()
        },
        progress: true,
    };
    let summary = replay::run(&replay_opts, stop);
    let recorded = recorder
        .wait_with_output()
        .context("waiting for the recorder")?;
    let summary = summary?;
    summary.print(&mut std::io::stdout().lock(), &replay_opts)?;
    print!("{}", String::from_utf8_lossy(&recorded.stdout));
    print!("{}", crate::ringstat::report(&ring)?);
    let _ = std::fs::remove_file(&ring);
    if !recorded.status.success() {
        bail!("the recorder failed ({})", recorded.status);
    }
    let (a, b) = (checksum(&capture)?, checksum(&recording)?);
    ensure!(a == b, "recording differs from the capture: {a:?} vs {b:?}");
    println!(
        "round trip: {} records, recording identical to the capture (FNV-1a {:#018x})",
        a.0, a.1
    );
    Ok(())
}
