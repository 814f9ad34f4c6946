//! `tickpipe record`: drains a market-data ring into a DBN file.
//!
//! The file is the ring's DBN metadata followed by every record read, byte for byte, so the
//! output is exactly what the writer published, compressed with zstd when the name ends in
//! `.zst`. Writes go through io_uring where the kernel allows it (see [`crate::uring`]).
//! Lost records are never silent: every lap is reported with the exact count, and a recording
//! with losses exits non-zero unless the caller allows loss.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tickpipe_shm::mapped::{self, AttachOptions};
use tickpipe_shm::ring::{WriterState, content};
use tickpipe_shm::{ReadError, StartAt};

use crate::uring::{Backend, FileSink};

/// What to record and how.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The ring to drain.
    pub ring: PathBuf,
    /// The output file (`.dbn` or `.dbn.zst`).
    pub out: PathBuf,
    /// How long to wait for the ring to appear.
    pub wait: Duration,
    /// Start with the oldest record still in the ring, or only new ones.
    pub start: StartAt,
    /// A writer whose heartbeat is older than this and whose process is gone is dead.
    pub stale_after: Duration,
    /// Try io_uring for file writes.
    pub prefer_uring: bool,
}

/// Why a recording ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The writer finished and everything was drained.
    WriterFinished,
    /// SIGINT or SIGTERM.
    Signal,
    /// The writer's heartbeat went stale and its process is gone.
    WriterDead {
        /// Heartbeat age when noticed.
        heartbeat_age_ms: u64,
    },
}

/// What a recording did.
#[derive(Debug)]
pub struct RecordSummary {
    /// Records written.
    pub records: u64,
    /// Record bytes written (excluding metadata).
    pub bytes: u64,
    /// Records lost to laps.
    pub missed: u64,
    /// Times lapped.
    pub laps: u64,
    /// Why it stopped.
    pub end: EndReason,
    /// The file backend used, and why io_uring was not, if it was not.
    pub backend: (Backend, Option<String>),
    /// Wall time.
    pub elapsed: Duration,
}

/// The output file, compressed or not; `finish` surfaces the errors a drop would swallow.
enum Out {
    Plain(FileSink),
    Zstd(zstd::Encoder<'static, FileSink>),
}

impl Out {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Plain(sink) => sink.write_all(bytes),
            Out::Zstd(encoder) => encoder.write_all(bytes),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        match self {
            Out::Plain(sink) => sink.finish(),
            Out::Zstd(encoder) => encoder.finish()?.finish(),
        }
    }
}

/// Records until the writer finishes, `stop` is set, or the writer dies.
///
/// # Errors
/// A ring that never becomes ready or is not a DBN ring, a frame that is not a DBN record, a
/// corrupt ring, or a failing write.
pub fn run(opts: &RecordOptions, stop: &Arc<AtomicBool>) -> Result<RecordSummary> {
    let started = Instant::now();
    let mut reader = mapped::attach_wait(
        &opts.ring,
        AttachOptions {
            start: opts.start,
            read_only: false,
        },
        opts.wait,
    )?;
    let info = *reader.info();
    if info.writer.content_tag != content::DBN {
        bail!(
            "{}: the ring does not carry DBN records (content tag {:#x})",
            opts.ring.display(),
            info.writer.content_tag
        );
    }
    let meta = reader.metadata();
    if !meta.starts_with(b"DBN") {
        bail!(
            "{}: the ring's metadata area does not hold DBN metadata",
            opts.ring.display()
        );
    }
    let sink = FileSink::create(&opts.out, opts.prefer_uring)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let backend = (sink.backend(), sink.fallback_reason().map(str::to_owned));
    let compress = opts.out.extension().is_some_and(|e| e == "zst");
    let mut out = if compress {
        Out::Zstd(zstd::Encoder::new(sink, 3).context("starting zstd")?)
    } else {
        Out::Plain(sink)
    };
    out.write_all(&meta)
        .with_context(|| format!("writing {}", opts.out.display()))?;

    // Drained in batches: one validation per batch, and a batch of small records is written
    // to the file as they come.
    let mut scratch = vec![0u8; 256 << 10];
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut idle_spins = 0u32;
    let mut last_check = Instant::now();
    let mut failure: Option<anyhow::Error> = None;
    let end = loop {
        let batch = reader.read_batch(&mut scratch, usize::MAX, |frame, rec| {
            if failure.is_some() {
                return;
            }
            if rec.len() < 16 || usize::from(rec[0]) * 4 != rec.len() {
                failure = Some(anyhow::anyhow!(
                    "{}: frame {} is not a DBN record ({} bytes, length byte {})",
                    opts.ring.display(),
                    frame.seq,
                    rec.len(),
                    rec.first().copied().unwrap_or(0)
                ));
            } else if let Err(e) = out.write_all(rec) {
                failure =
                    Some(anyhow::Error::new(e).context(format!("writing {}", opts.out.display())));
            } else {
                records += 1;
                bytes += rec.len() as u64;
            }
        });
        if let Some(e) = failure.take() {
            return Err(e);
        }
        match batch {
            Ok(_) => idle_spins = 0,
            Err(ReadError::Lapped { missed }) => {
                eprintln!(
                    "tickpipe record: WARNING: lapped by the writer, {missed} records missed ({} so far)",
                    reader.missed()
                );
            }
            Err(ReadError::Empty) => {
                if reader.is_finished() {
                    break EndReason::WriterFinished;
                }
                if stop.load(Ordering::Relaxed) {
                    break EndReason::Signal;
                }
                // Recording is not latency-critical: back off so a shared core goes to the writer.
                idle_spins = idle_spins.saturating_add(1);
                if idle_spins < 64 {
                    std::hint::spin_loop();
                } else if idle_spins < 128 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(50));
                }
                if last_check.elapsed() >= Duration::from_millis(100) {
                    last_check = Instant::now();
                    let status = reader.writer_status();
                    let age_ns = mapped::unix_now_ns().saturating_sub(status.heartbeat_ns);
                    if status.state == WriterState::Running
                        && age_ns > opts.stale_after.as_nanos() as u64
                        && !mapped::pid_alive(info.writer.pid)
                    {
                        break EndReason::WriterDead {
                            heartbeat_age_ms: age_ns / 1_000_000,
                        };
                    }
                }
            }
            Err(ReadError::BufferTooSmall { needed }) => {
                bail!(
                    "{}: a frame of {needed} bytes is larger than any DBN record",
                    opts.ring.display()
                );
            }
            Err(e @ ReadError::Corrupt(_)) => bail!("{}: {e}", opts.ring.display()),
        }
    };
    out.finish()
        .with_context(|| format!("finishing {}", opts.out.display()))?;
    Ok(RecordSummary {
        records,
        bytes,
        missed: reader.missed(),
        laps: reader.laps(),
        end,
        backend,
        elapsed: started.elapsed(),
    })
}
