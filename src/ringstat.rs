//! `tickpipe ring stat`: a ring's header, positions, readers and writer liveness, read from a
//! read-only mapping (like AeronStat: a separate process that never disturbs the ring).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use tickpipe_shm::mapped::{self, pid_alive, unix_now_ns};
use tickpipe_shm::ring::{self, Region, WriterState, content};

fn content_name(tag: u64) -> String {
    match tag {
        content::DBN => "DBN records".into(),
        content::SIGNALS => "tickpipe signals".into(),
        other => format!("unknown ({other:#018x})"),
    }
}

fn age(now_ns: u64, then_ns: u64) -> String {
    let ns = now_ns.saturating_sub(then_ns);
    match ns {
        n if n < 1_000_000 => format!("{:.1} us", n as f64 / 1e3),
        n if n < 10_000_000_000 => format!("{:.1} ms", n as f64 / 1e6),
        n => format!("{:.1} s", n as f64 / 1e9),
    }
}

/// Renders the report for the ring at `path`.
///
/// # Errors
/// A missing file, or a file that is not a ready, valid ring.
pub fn report(path: &Path) -> Result<String> {
    let (region, info) = mapped::inspect(path)?;
    let words = region.words();
    let status = ring::writer_status(words);
    let now = unix_now_ns();
    let g = info.geometry;
    let alive = pid_alive(info.writer.pid);
    let mut s = String::new();
    writeln!(s, "ring {}", path.display())?;
    writeln!(
        s,
        "  layout version  {}",
        tickpipe_shm::layout::LAYOUT_VERSION
    )?;
    writeln!(
        s,
        "  content         {}",
        content_name(info.writer.content_tag)
    )?;
    writeln!(
        s,
        "  capacity        {} bytes (data area), max payload {} bytes, metadata {} bytes",
        g.capacity, g.max_payload, g.meta_len
    )?;
    writeln!(
        s,
        "  writer pid      {} ({})",
        info.writer.pid,
        if alive { "alive" } else { "not running" }
    )?;
    writeln!(
        s,
        "  writer started  {} ago",
        age(now, info.writer.start_ns)
    )?;
    let state = match status.state {
        WriterState::Init => "initialising".to_string(),
        WriterState::Running if !alive => "running, but its process is gone (crashed?)".to_string(),
        WriterState::Running => "running".to_string(),
        WriterState::Finished => "finished".to_string(),
        WriterState::Unknown(v) => format!("unknown state {v}"),
    };
    writeln!(s, "  writer state    {state}")?;
    writeln!(s, "  heartbeat age   {}", age(now, status.heartbeat_ns))?;
    writeln!(
        s,
        "  position        {} bytes ({} wraps)",
        status.tail,
        status.tail / g.capacity as u64
    )?;
    writeln!(s, "  published       {} records", status.published)?;
    let readers = ring::reader_slots(words);
    writeln!(s, "  readers         {}", readers.len())?;
    for r in readers {
        writeln!(
            s,
            "    slot {:>2} pid {} ({}): lag {} records / {} bytes, missed {}, laps {}, attached {} ago",
            r.index,
            r.pid,
            if pid_alive(r.pid) { "alive" } else { "gone" },
            status.published.saturating_sub(r.next_seq),
            status.tail.saturating_sub(r.cursor),
            r.missed,
            r.laps,
            age(now, r.attach_ns)
        )?;
    }
    Ok(s)
}
