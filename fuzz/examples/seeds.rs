//! Writes the seed inputs of every fuzz target into `fuzz/seeds/<target>/`, from the project's
//! own writers and shipped files: a small ring and health page, DBN records and captures from
//! the synthetic generator, signal records, the shipped models, manifests and profiles, and a
//! few HTTP requests.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds` (run.sh does it when a seed
//! directory is missing).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use tickpipe::synth::{SynthConfig, write_capture};
use tickpipe_pipeline::health::HealthSnapshot;
use tickpipe_pipeline::health::page as health_page;
use tickpipe_pipeline::signal::{SIGNAL_META, Signal};
use tickpipe_shm::layout::HEADER_LEN;
use tickpipe_shm::page::heap_page;
use tickpipe_shm::{Region, heap_ring};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn put(target: &str, name: &str, bytes: &[u8]) -> Result<()> {
    let dir = root().join("seeds").join(target);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(name), bytes)?;
    Ok(())
}

fn region_bytes(words: &[std::sync::atomic::AtomicU64]) -> Vec<u8> {
    words
        .iter()
        .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
        .collect()
}

/// The compact form `ring_reader` reads: the header words a reader looks at, then everything
/// from the metadata on.
fn compact(image: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&image[..88]);
    out.extend_from_slice(&image[128..160]);
    out.extend_from_slice(&image[256..272]);
    out.extend_from_slice(&image[HEADER_LEN..]);
    out
}

fn ring_seeds() -> Result<()> {
    // 256 bytes of data area and odd payload sizes: the ring wraps and pads.
    let (mut writer, _) = heap_ring(256, 40, b"", 7)?;
    for seq in 0..11u64 {
        let len = (seq as usize * 7) % 41;
        let payload: Vec<u8> = (0..len)
            .map(|i| (seq as u8).wrapping_mul(31) ^ i as u8)
            .collect();
        writer.publish(&payload, seq * 1000)?;
    }
    let image = region_bytes(writer.region().words());
    let small = compact(&image);
    // Control bytes: flags, buffer size, max_frames (see the target's docs).
    for (name, flags, buf, max) in [
        ("compact-oldest-try", 1u8, 64u8, 0u8),
        ("compact-oldest-batch", 5, 255, 4),
        ("compact-tail-try", 3, 8, 0),
    ] {
        put(
            "ring_reader",
            name,
            &[&[flags, buf, max][..], &small].concat(),
        )?;
    }
    put(
        "ring_reader",
        "raw-oldest-try",
        &[&[0u8, 64, 0][..], &image].concat(),
    )?;
    // With metadata: the data area moves a page further.
    let (mut writer, _) = heap_ring(64, 8, b"meta", 7)?;
    writer.publish(b"12345678", 9)?;
    let image = region_bytes(writer.region().words());
    put(
        "ring_reader",
        "compact-with-meta",
        &[&[1u8, 8, 0][..], &compact(&image)].concat(),
    )?;
    // A ring that was never wrapped, and a lapped one (many more frames than fit).
    let (mut writer, _) = heap_ring(128, 16, b"", 0)?;
    writer.publish(b"abc", 1)?;
    let image = region_bytes(writer.region().words());
    put(
        "ring_reader",
        "compact-one-frame",
        &[&[1u8, 16, 1][..], &compact(&image)].concat(),
    )?;
    for seq in 0..40u64 {
        writer.publish(&seq.to_le_bytes(), seq)?;
    }
    let image = region_bytes(writer.region().words());
    put(
        "ring_reader",
        "compact-lapped",
        &[&[1u8, 16, 0][..], &compact(&image)].concat(),
    )?;

    let mut page = heap_page(health_page::PAGE_WORDS)?;
    let mut words = vec![0u64; health_page::PAGE_WORDS];
    health_page::encode(&HealthSnapshot::default(), &mut words)?;
    page.publish_at(&words, 1)?;
    let image = region_bytes(page.region().words());
    put(
        "ring_reader",
        "raw-health-page",
        &[&[8u8, 0, 0][..], &image].concat(),
    )?;
    Ok(())
}

/// The records of a small synthetic capture, as the ring carries them.
fn synth_records(events: u64) -> Result<Vec<Vec<u8>>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("s.dbn");
    write_capture(
        &SynthConfig {
            events,
            instruments: 2,
            ..SynthConfig::default()
        },
        &path,
    )?;
    let bytes = std::fs::read(&path)?;
    let meta_len = 8 + u32::from_le_bytes(bytes[4..8].try_into()?) as usize;
    let mut out = Vec::new();
    let mut rest = &bytes[meta_len..];
    while let [len, ..] = rest {
        let n = usize::from(*len) * 4;
        if n == 0 || n > rest.len() {
            break;
        }
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    Ok(out)
}

fn frame_seeds() -> Result<()> {
    let mbo = synth_records(24)?;
    let mut stream = Vec::new();
    for r in &mbo {
        stream.extend_from_slice(&(r.len() as u16).to_le_bytes());
        stream.extend_from_slice(r);
    }
    put("frame_decode", "mbo-stream", &stream)?;
    // MBP-1 (rtype 0x01, 80 bytes) and MBP-10 (rtype 0x0A, 368 bytes): a header, the top fields
    // and levels of plausible prices and sizes.
    for (name, rtype, levels) in [("mbp1", 0x01u8, 1usize), ("mbp10", 0x0A, 10)] {
        let len = 48 + 32 * levels;
        let mut r = vec![0u8; len];
        r[0] = (len / 4) as u8;
        r[1] = rtype;
        r[4..8].copy_from_slice(&1u32.to_le_bytes());
        r[8..16].copy_from_slice(&1_700_000_000_000_000_000u64.to_le_bytes());
        r[16..24].copy_from_slice(&4_500_250_000_000i64.to_le_bytes());
        r[24..28].copy_from_slice(&3u32.to_le_bytes());
        r[28] = b'A';
        r[29] = b'B';
        r[30] = 0x80;
        for l in 0..levels {
            let at = 48 + 32 * l;
            let tick = 250_000_000i64 * l as i64;
            r[at..at + 8].copy_from_slice(&(4_500_000_000_000 - tick).to_le_bytes());
            r[at + 8..at + 16].copy_from_slice(&(4_500_250_000_000 + tick).to_le_bytes());
            r[at + 16..at + 20].copy_from_slice(&(10 + l as u32).to_le_bytes());
            r[at + 20..at + 24].copy_from_slice(&(12 + l as u32).to_le_bytes());
        }
        put(
            "frame_decode",
            name,
            &[&(r.len() as u16).to_le_bytes()[..], &r].concat(),
        )?;
    }
    let signal = Signal {
        instrument_id: 1,
        ts_event: 1_700_000_000_000_000_000,
        price: 4_500_125_000_000,
        n_scores: 1,
        ..Signal::default()
    }
    .encode();
    let mut s = (SIGNAL_META.len() as u16).to_le_bytes().to_vec();
    s.extend_from_slice(&SIGNAL_META);
    s.extend_from_slice(&(signal.len() as u16).to_le_bytes());
    s.extend_from_slice(&signal);
    put("frame_decode", "signal", &s)?;
    Ok(())
}

fn capture_seeds() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = SynthConfig {
        events: 8,
        instruments: 2,
        ..SynthConfig::default()
    };
    for (name, which) in [("s.dbn", 0u8), ("s.dbn.zst", 1)] {
        let path = dir.path().join(name);
        write_capture(&cfg, &path)?;
        put(
            "dbn_capture",
            name,
            &[&[which][..], &std::fs::read(&path)?].concat(),
        )?;
    }
    // A fragment: the records alone, read as the current DBN version.
    let fragment: Vec<u8> = synth_records(8)?.concat();
    put(
        "dbn_capture",
        "s.dbn.frag",
        &[&[2u8][..], &fragment].concat(),
    )?;
    Ok(())
}

fn copy_seeds(target: &str, files: &[(&str, &str)], prefix: Option<u8>) -> Result<()> {
    let repo = root().join("..");
    for (name, rel) in files {
        let bytes = std::fs::read(repo.join(rel))?;
        match prefix {
            Some(p) => put(target, name, &[&[p][..], &bytes].concat())?,
            None => put(target, name, &bytes)?,
        }
    }
    Ok(())
}

fn model_seeds() -> Result<()> {
    copy_seeds(
        "xgb_model",
        &[
            (
                "binary_logistic.json",
                "models/fixtures/xgb/binary_logistic.json",
            ),
            (
                "binary_logistic.ubj",
                "models/fixtures/xgb/binary_logistic.ubj",
            ),
            (
                "multi_softprob.ubj",
                "models/fixtures/xgb/multi_softprob.ubj",
            ),
            ("reg_noname.json", "models/fixtures/xgb/reg_noname.json"),
            ("refuse_dart.json", "models/fixtures/xgb/refuse_dart.json"),
        ],
        None,
    )?;
    copy_seeds(
        "sjm_model",
        &[
            ("synthetic.json", "models/fixtures/sjm/synthetic.json"),
            (
                "registry-regime.json",
                "models/registry/regime/v1/sjm/model.json",
            ),
        ],
        None,
    )?;
    // The selector byte picks line and file: 2 * line + (0 manifest, 1 active record).
    for (i, line) in ["score", "regime", "forecast"].into_iter().enumerate() {
        let i = i as u8;
        copy_seeds(
            "manifest",
            &[(
                &format!("{line}-manifest.json"),
                &format!("models/registry/{line}/v1/manifest.json"),
            )],
            Some(2 * i),
        )?;
        copy_seeds(
            "manifest",
            &[(
                &format!("{line}-active.json"),
                &format!("models/registry/{line}/active.json"),
            )],
            Some(2 * i + 1),
        )?;
    }
    Ok(())
}

fn config_seeds() -> Result<()> {
    copy_seeds(
        "config",
        &[
            ("two-core.toml", "tuning/profiles/two-core.toml"),
            ("dedicated-8.toml", "tuning/profiles/dedicated-8.toml"),
        ],
        None,
    )?;
    put(
        "config",
        "control.toml",
        b"mode = \"invoker\"\n\n[control]\nbind = \"127.0.0.1:9464\"\nread_timeout = \"250ms\"\n\
          max_connections = 3\nauth_window = \"10s\"\n",
    )?;
    Ok(())
}

fn http_seeds() -> Result<()> {
    let key = "fuzz-key-0123456789abcdef";
    let kill = r#"{"action":"engage","reason":"test"}"#;
    for (name, options, text) in [
        (
            "get-health",
            0u8,
            "GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
        ),
        (
            "pipelined",
            0,
            "GET /metrics?x=1 HTTP/1.1\r\n\r\nGET /health HTTP/1.1\r\nConnection: close\r\n\r\n"
                .to_string(),
        ),
        (
            "promote",
            0,
            format!(
                "POST /models/score/promote HTTP/1.1\r\nX-API-Key: {key}\r\n\
                 Content-Length: 17\r\n\r\n{{\"version\":\"v2\"}}"
            ),
        ),
        (
            "kill-switch",
            0,
            format!(
                "POST /kill-switch HTTP/1.1\r\nX-API-Key: {key}\r\nContent-Length: {}\r\n\
                 Expect: 100-continue\r\n\r\n{kill}",
                kill.len()
            ),
        ),
        (
            "no-key-small-limits",
            1,
            "POST /kill-switch HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}".to_string(),
        ),
    ] {
        put(
            "http_request",
            name,
            &[&[options][..], text.as_bytes()].concat(),
        )?;
    }
    Ok(())
}

fn udp_seeds() -> Result<()> {
    // Until the datagram format lands, its seeds are the market-data records themselves.
    for (i, r) in synth_records(3)?.iter().enumerate() {
        put("udp_datagram", &format!("mbo-{i}"), r)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    ring_seeds()?;
    frame_seeds()?;
    capture_seeds()?;
    model_seeds()?;
    config_seeds()?;
    http_seeds()?;
    udp_seeds()?;
    println!("seeds written to {}", root().join("seeds").display());
    Ok(())
}
