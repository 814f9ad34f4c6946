//! `tickpipe replay`: publishes captured DBN records into a shared-memory ring, or sends them
//! as UDP datagrams ([`crate::udp_send`]), paced by their receive timestamps or as fast as
//! possible.
//!
//! Pacing busy-waits on the TSC (quanta) rather than sleeping: a sleep wakes tens of
//! microseconds late, a spin wakes within nanoseconds. Each record's schedule is
//! `(ts_recv - first ts_recv) / speed` after the start; the pacing error is the time from that
//! instant to the publish, recorded in an HDR histogram for every record the pacer had to wait
//! for. Records already due when reached (a burst sharing one timestamp, such as a book
//! snapshot) cannot be early or on time; their lag is reported apart, as it measures the
//! writer's throughput, not the pacing. Gaps longer than `max_gap` are shortened
//! to it (a replay of a day need not sit through the night). Records whose timestamp is undefined
//! (`u64::MAX`) or earlier than their predecessor's are published right away.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use dbn::Record;
use hdrhistogram::Histogram;
use tickpipe_shm::mapped::{self, CreateOptions, MappedRegion};
use tickpipe_shm::{RingWriter, WriteError};

use crate::capture::{self, Capture};
use crate::udp_send::{SendStats, UdpSendOptions, UdpSender};

/// Replay speed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// As fast as the writer can go.
    Max,
    /// A multiple of real time (1.0 = as captured).
    Factor(f64),
}

impl std::str::FromStr for Speed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.trim_end_matches(['x', 'X']).parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "speed must be a positive number (1, 10, 0.5) or \"max\", got {s:?}"
            )),
        }
    }
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Captures, replayed in order as one stream.
    pub captures: Vec<PathBuf>,
    /// The ring file to create (unused when sending over UDP).
    pub ring: PathBuf,
    /// Send over UDP instead of publishing into a ring.
    pub udp: Option<UdpSendOptions>,
    /// Pacing.
    pub speed: Speed,
    /// How many times to replay the captures.
    pub loops: u64,
    /// Longest gap kept between records (schedule time); longer gaps are shortened to it.
    pub max_gap: Option<Duration>,
    /// Ring shape and permissions.
    pub ring_options: CreateOptions,
    /// Print a progress line on a terminal.
    pub progress: bool,
}

/// What a replay did.
#[derive(Debug)]
pub struct ReplaySummary {
    /// Records published.
    pub records: u64,
    /// Wall time from the first publish to the last.
    pub elapsed: Duration,
    /// Pacing error in ns of the records the pacer waited for: publish instant minus schedule,
    /// the precision of the spin-wait (paced runs only).
    pub pacing_error_ns: Option<Histogram<u64>>,
    /// Lag in ns of the records that were already due when reached (bursts of records with the
    /// same timestamp go out back to back, as fast as the writer can publish).
    pub burst_lag_ns: Option<Histogram<u64>>,
    /// The host's noise floor seen from inside the pacing spin: gaps of over 1 µs between two
    /// consecutive clock reads (the thread was interrupted or descheduled), and their total.
    pub spin_interruptions: (u64, Duration),
    /// Total time spent spinning for the schedule.
    pub spin_time: Duration,
    /// Stopped by a signal before the end.
    pub interrupted: bool,
    /// What the UDP sender did (UDP replays).
    pub udp: Option<SendStats>,
}

impl ReplaySummary {
    /// Prints the summary block.
    pub fn print(&self, out: &mut impl Write, opts: &ReplayOptions) -> std::io::Result<()> {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.records as f64 / secs
        } else {
            0.0
        };
        writeln!(
            out,
            "replay: {} records from {} capture(s) x{} {} in {:.3} s ({:.0} records/s){}",
            self.records,
            opts.captures.len(),
            opts.loops,
            match &opts.udp {
                Some(u) => format!("to udp {}", u.addr),
                None => format!("into {}", opts.ring.display()),
            },
            secs,
            rate,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        )?;
        if let (Some(u), Some(o)) = (&self.udp, &opts.udp) {
            writeln!(
                out,
                "udp: {} datagrams sent ({} bytes, up to {} records / {} bytes each), {} skipped on \
                 purpose ({} records), {} heartbeats, end of stream sent x{}",
                u.datagrams,
                u.bytes,
                o.records_per_datagram,
                o.max_datagram,
                u.dropped,
                u.dropped_records,
                u.heartbeats,
                o.end_repeats.max(1)
            )?;
        }
        let line = |h: &Histogram<u64>| {
            format!(
                "p50 {} ns  p99 {} ns  p99.9 {} ns  max {} ns  (n={})",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                h.len()
            )
        };
        match (&self.pacing_error_ns, &self.burst_lag_ns) {
            (Some(error), Some(lag)) => {
                writeln!(
                    out,
                    "pacing error (publish - schedule, records waited for): {}",
                    line(error)
                )?;
                writeln!(
                    out,
                    "burst lag (records already due when reached): {}",
                    line(lag)
                )?;
                let (count, lost) = self.spin_interruptions;
                let spin = self.spin_time.as_secs_f64();
                writeln!(
                    out,
                    "host noise while spinning: {count} interruptions > 1 us, {:.3}% of {spin:.3} s spin time lost",
                    if spin > 0.0 {
                        100.0 * lost.as_secs_f64() / spin
                    } else {
                        0.0
                    }
                )
            }
            _ => writeln!(out, "pacing: none (speed max)"),
        }
    }
}

const HEARTBEAT_EVERY_NS: u64 = 50_000_000;

/// Where a replay publishes.
enum Out {
    Ring(RingWriter<MappedRegion>),
    Udp(UdpSender),
}

impl Out {
    fn heartbeat(&mut self) {
        match self {
            Out::Ring(w) => w.heartbeat(mapped::unix_now_ns()),
            // A lost heartbeat is harmless; a broken socket shows at the next record.
            Out::Udp(u) => {
                let _ = u.heartbeat();
            }
        }
    }

    /// Sends what a UDP sender holds before the pacer waits: records due together share a
    /// datagram, and none waits for a later one.
    fn before_wait(&mut self) -> Result<()> {
        match self {
            Out::Ring(_) => Ok(()),
            Out::Udp(u) => u.flush(),
        }
    }
}
const PROGRESS_EVERY_NS: u64 = 250_000_000;

struct Pacer {
    clock: quanta::Clock,
    start_ticks: u64,
    speed: Option<f64>,
    max_gap_ns: Option<u64>,
    last_ts: Option<u64>,
    schedule_ns: u64,
    errors: Histogram<u64>,
    lag: Histogram<u64>,
    interruptions: u64,
    interrupted_ns: u64,
    spin_ns: u64,
    last_heartbeat_ns: u64,
    last_progress_ns: u64,
}

impl Pacer {
    fn elapsed_ns(&self) -> u64 {
        self.clock
            .delta_as_nanos(self.start_ticks, self.clock.raw())
    }

    /// Advances the schedule to the record stamped `ts` and spins until it is due.
    /// Returns the schedule instant, or `None` when the record goes out unpaced.
    fn wait_for(&mut self, ts: u64, writer: &mut Out, stop: &AtomicBool) -> Result<Option<u64>> {
        let Some(speed) = self.speed else {
            return Ok(None);
        };
        if ts == dbn::UNDEF_TIMESTAMP {
            return Ok(None);
        }
        if let Some(last) = self.last_ts {
            let mut gap = ts.saturating_sub(last);
            if let Some(max) = self.max_gap_ns {
                gap = gap.min(max);
            }
            self.schedule_ns += (gap as f64 / speed) as u64;
        }
        self.last_ts = Some(self.last_ts.map_or(ts, |l| l.max(ts)));
        let now = self.elapsed_ns();
        if now >= self.schedule_ns {
            let _ = self.lag.record((now - self.schedule_ns).max(1));
            return Ok(None);
        }
        writer.before_wait()?;
        let first = now;
        let mut spins = 0u32;
        let mut prev = now;
        loop {
            let now = self.elapsed_ns();
            // A long gap between two reads of a spinning loop is time the host took away.
            let gap = now - prev;
            if gap > 1_000 {
                self.interruptions += 1;
                self.interrupted_ns += gap;
            }
            prev = now;
            if now >= self.schedule_ns {
                self.spin_ns += now - first;
                return Ok(Some(self.schedule_ns));
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                if stop.load(Ordering::Relaxed) {
                    self.spin_ns += now - first;
                    return Ok(None);
                }
                self.housekeeping(now, writer, None);
            }
            std::hint::spin_loop();
        }
    }

    fn housekeeping(&mut self, now: u64, writer: &mut Out, progress: Option<u64>) {
        if now - self.last_heartbeat_ns >= HEARTBEAT_EVERY_NS {
            writer.heartbeat();
            self.last_heartbeat_ns = now;
        }
        if let Some(records) = progress
            && now - self.last_progress_ns >= PROGRESS_EVERY_NS
        {
            self.last_progress_ns = now;
            let secs = now as f64 / 1e9;
            let lag_us = now.saturating_sub(self.schedule_ns) as f64 / 1e3;
            eprint!(
                "\r{records} records  {:.0} records/s  lag {}  ",
                records as f64 / secs.max(1e-9),
                if self.speed.is_some() {
                    format!("{lag_us:.1} us")
                } else {
                    "-".into()
                }
            );
        }
    }
}

/// Runs a replay until the captures are exhausted or `stop` is set.
///
/// # Errors
/// An unreadable or invalid capture, captures that cannot form one stream, a ring (or socket)
/// that cannot be created, a record larger than the ring's `max_payload`, or a failed send.
pub fn run(opts: &ReplayOptions, stop: &Arc<AtomicBool>) -> Result<ReplaySummary> {
    if opts.captures.is_empty() {
        bail!("no capture given");
    }
    if opts.loops == 0 {
        bail!("--loop must be at least 1");
    }
    // Open every capture up front: a bad file fails before the ring exists.
    let captures = opts
        .captures
        .iter()
        .map(|p| Capture::open(p))
        .collect::<Result<Vec<_>, _>>()?;
    let metadata = capture::stream_metadata(&captures)?;
    let meta = capture::encode_metadata(&metadata).context("encoding the stream's DBN metadata")?;
    let clock = quanta::Clock::new();
    let mut writer = match &opts.udp {
        Some(u) => Out::Udp(UdpSender::new(u.clone(), clock.clone())?),
        None => Out::Ring(
            mapped::create(&opts.ring, &opts.ring_options, &meta)
                .with_context(|| format!("creating ring {}", opts.ring.display()))?,
        ),
    };
    let mut pacer = Pacer {
        start_ticks: clock.raw(),
        clock,
        speed: match opts.speed {
            Speed::Max => None,
            Speed::Factor(f) => Some(f),
        },
        max_gap_ns: opts.max_gap.map(|d| d.as_nanos() as u64),
        last_ts: None,
        schedule_ns: 0,
        errors: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).context("pacing histogram")?,
        lag: Histogram::new_with_bounds(1, 3_600_000_000_000, 3).context("lag histogram")?,
        interruptions: 0,
        interrupted_ns: 0,
        spin_ns: 0,
        last_heartbeat_ns: 0,
        last_progress_ns: 0,
    };
    let show_progress = opts.progress && std::io::stderr().is_terminal();
    let mut records = 0u64;
    let mut failure: Option<anyhow::Error> = None;
    let mut interrupted = false;
    let mut first = Some(captures);
    'outer: for _ in 0..opts.loops {
        // Each pass starts its own timestamp baseline: the schedule carries on from where the
        // previous pass ended instead of treating the rewound timestamps as one burst.
        pacer.last_ts = None;
        let captures = match first.take() {
            Some(c) => c,
            None => opts
                .captures
                .iter()
                .map(|p| Capture::open(p))
                .collect::<Result<Vec<_>, _>>()?,
        };
        for mut capture in captures {
            let path = capture.path().to_path_buf();
            let flow = capture.visit(|rec| {
                let scheduled = match pacer.wait_for(rec.raw_index_ts(), &mut writer, stop) {
                    Ok(s) => s,
                    Err(e) => {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                };
                if stop.load(Ordering::Relaxed) {
                    interrupted = true;
                    return ControlFlow::Break(());
                }
                let stamp = pacer.clock.raw();
                match &mut writer {
                    Out::Ring(w) => {
                        if let Err(WriteError::TooLarge { len, max }) = w.publish(rec.as_ref(), stamp)
                        {
                            failure = Some(anyhow::anyhow!(
                                "{}: record {} of {len} bytes exceeds the ring's max payload of {max}",
                                path.display(),
                                records + 1
                            ));
                            return ControlFlow::Break(());
                        }
                    }
                    Out::Udp(u) => {
                        if let Err(e) = u.push(rec.as_ref()) {
                            failure = Some(e.context(path.display().to_string()));
                            return ControlFlow::Break(());
                        }
                    }
                }
                records += 1;
                if let Some(due) = scheduled {
                    // The error is taken at the stamp the frame carries: the publish instant a
                    // reader sees, without a second clock read.
                    let published = pacer.clock.delta_as_nanos(pacer.start_ticks, stamp);
                    let _ = pacer.errors.record(published.saturating_sub(due).max(1));
                }
                if records.is_multiple_of(1024) {
                    let now = pacer.elapsed_ns();
                    pacer.housekeeping(now, &mut writer, show_progress.then_some(records));
                }
                ControlFlow::Continue(())
            })?;
            if let Some(e) = failure.take() {
                return Err(e);
            }
            if flow.is_break() {
                break 'outer;
            }
        }
    }
    let elapsed = Duration::from_nanos(pacer.elapsed_ns());
    writer.heartbeat();
    let udp = match &mut writer {
        Out::Ring(w) => {
            w.finish();
            None
        }
        Out::Udp(u) => Some(u.finish()?),
    };
    if show_progress {
        eprintln!();
    }
    Ok(ReplaySummary {
        records,
        elapsed,
        pacing_error_ns: pacer.speed.map(|_| pacer.errors),
        burst_lag_ns: pacer.speed.map(|_| pacer.lag),
        spin_interruptions: (
            pacer.interruptions,
            Duration::from_nanos(pacer.interrupted_ns),
        ),
        spin_time: Duration::from_nanos(pacer.spin_ns),
        interrupted,
        udp,
    })
}
