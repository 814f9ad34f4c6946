//! Market data over UDP end to end: the engine fed over loopback UDP publishes the same signals
//! as the engine fed through the shared-memory ring, on every receive backend; a datagram the
//! sender skips is detected and counted exactly; and `run --udp` beside `replay --udp` as a user
//! runs them.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use tickpipe::pipeline::signal::{SIGNAL_LEN, SIGNAL_META};
use tickpipe::pipeline::udp::{UdpBackend, UdpConfig, UdpError, UdpSource};
use tickpipe::pipeline::{Engine, EngineConfig, EngineReport, ThreadHooks, ThreadingMode};
use tickpipe::shm::ring::{HeapRegion, content};
use tickpipe::shm::{ReadError, RingReader, RingWriter, StartAt, heap_ring};
use tickpipe::udp_send::{UdpSendOptions, UdpSender};

type Ring = RingWriter<Arc<HeapRegion>>;

/// The records of a generated capture.
fn generated(events: u64) -> Vec<Vec<u8>> {
    let mut g = tickpipe::synth::Generator::new(&tickpipe::synth::SynthConfig {
        events,
        seed: 11,
        ..Default::default()
    })
    .unwrap();
    let mut out = Vec::new();
    while let Some(r) = g.next_record() {
        out.push(AsRef::<[u8]>::as_ref(&r).to_vec());
    }
    out
}

fn config() -> EngineConfig {
    let mut cfg = EngineConfig {
        mode: ThreadingMode::Invoker,
        batch: 32,
        link_capacity: 64,
        ..EngineConfig::default()
    };
    // The monitor's alert level is stamped on signals and depends on wall time.
    cfg.health.enabled = false;
    cfg
}

fn signal_ring() -> (Ring, RingReader<Arc<HeapRegion>>) {
    let (sig, info) = heap_ring(16 << 20, SIGNAL_LEN, &SIGNAL_META, content::SIGNALS).unwrap();
    let reader = RingReader::new(sig.region().clone(), info, StartAt::Oldest);
    (sig, reader)
}

fn read_all(reader: &mut RingReader<Arc<HeapRegion>>) -> Vec<[u8; SIGNAL_LEN]> {
    let mut out = Vec::new();
    let mut buf = [0u8; SIGNAL_LEN];
    loop {
        match reader.try_read(&mut buf) {
            Ok(_) => out.push(buf),
            Err(ReadError::Empty) => return out,
            Err(e) => panic!("signal ring: {e}"),
        }
    }
}

/// The records through the shared-memory ring (Invoker mode).
fn via_ring(records: &[Vec<u8>]) -> (Vec<[u8; SIGNAL_LEN]>, EngineReport) {
    let (mut md, md_info) = heap_ring(32 << 20, 1024, b"DBN", content::DBN).unwrap();
    let reader = RingReader::new(md.region().clone(), md_info, StartAt::Oldest);
    let (sig, mut sig_reader) = signal_ring();
    let clock = quanta::Clock::new();
    let engine = Engine::start(
        &config(),
        reader,
        sig,
        clock.clone(),
        ThreadHooks::default(),
    )
    .unwrap();
    for r in records {
        md.publish(r, clock.raw()).unwrap();
    }
    md.finish();
    let report = engine.join().unwrap();
    (read_all(&mut sig_reader), report)
}

/// The records as datagrams over loopback (Invoker mode; the engine is driven between bursts
/// so the socket buffer never overflows). `None` when the backend is unavailable here.
fn via_udp(
    records: &[Vec<u8>],
    backend: UdpBackend,
    send: impl FnOnce(std::net::SocketAddr) -> UdpSendOptions,
) -> Option<(
    Vec<[u8; SIGNAL_LEN]>,
    EngineReport,
    tickpipe::pipeline::udp::UdpCounts,
)> {
    let mut cfg = UdpConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.backend = backend;
    cfg.from_start = true;
    let clock = quanta::Clock::new();
    let source = match UdpSource::bind(&cfg, clock.clone()) {
        Ok(s) => s,
        Err(e @ UdpError::Uring { .. }) => {
            eprintln!("SKIPPED: {backend} backend: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    eprintln!("{backend}: {}", source.stats().backend);
    let stats = source.stats();
    let to = source.local_addr().unwrap();
    let (sig, mut sig_reader) = signal_ring();
    let mut engine = Engine::start(
        &config(),
        source,
        sig,
        clock.clone(),
        ThreadHooks::default(),
    )
    .unwrap();
    let mut sender = UdpSender::new(send(to), clock).unwrap();
    for (i, r) in records.iter().enumerate() {
        sender.push(r).unwrap();
        if i % 500 == 499 {
            sender.flush().unwrap();
            let s = sender.stats();
            let want = s.records - s.dropped_records;
            let start = Instant::now();
            while stats.counts().records < want {
                engine.invoke();
                assert!(start.elapsed() < Duration::from_secs(10), "datagrams lost");
            }
        }
    }
    sender.finish().unwrap();
    let report = engine.join().unwrap();
    Some((read_all(&mut sig_reader), report, stats.counts()))
}

const BACKENDS: [UdpBackend; 3] = [
    UdpBackend::Mio,
    UdpBackend::Uring,
    UdpBackend::UringSingleShot,
];

#[test]
fn udp_gives_the_same_signals_as_the_ring() {
    let records = generated(20_000);
    let (ring_signals, ring_report) = via_ring(&records);
    assert!(ring_signals.len() > 1_000, "{}", ring_signals.len());
    assert_eq!(ring_report.ingest.frames, records.len() as u64);
    for backend in BACKENDS {
        let Some((signals, report, udp)) = via_udp(&records, backend, |to| UdpSendOptions {
            records_per_datagram: 17,
            ..UdpSendOptions::new(to)
        }) else {
            continue;
        };
        assert_eq!(report.ingest.frames, records.len() as u64, "{backend}");
        assert_eq!(report.ingest.missed, 0, "{backend}");
        assert_eq!(udp.records, records.len() as u64, "{backend}");
        assert_eq!(udp.gaps + udp.stale + udp.undecodable, 0, "{backend}");
        assert!(udp.end, "{backend}");
        // Signals carry the record's identity, exchange stamps, book and model outputs: none
        // of it may depend on how the records travelled. Byte for byte.
        assert_eq!(signals.len(), ring_signals.len(), "{backend}");
        for (i, (a, b)) in signals.iter().zip(&ring_signals).enumerate() {
            assert_eq!(a, b, "{backend}: signal {i} differs");
        }
    }
}

#[test]
fn a_skipped_datagram_is_counted_exactly() {
    let records = generated(5_000);
    for backend in BACKENDS {
        // 10 records per datagram: datagrams 3 and 40 hold records 30..40 and 400..410.
        let Some((signals, report, udp)) = via_udp(&records, backend, |to| UdpSendOptions {
            records_per_datagram: 10,
            drop_seqs: BTreeSet::from([3, 40]),
            ..UdpSendOptions::new(to)
        }) else {
            continue;
        };
        assert_eq!(udp.gaps, 2, "{backend}");
        assert_eq!(udp.datagrams_missed, 2, "{backend}");
        assert_eq!(udp.records_missed, 20, "{backend}");
        assert_eq!(udp.records, records.len() as u64 - 20, "{backend}");
        // The losses reach the engine as ring laps do.
        assert_eq!(report.ingest.laps, 2, "{backend}");
        assert_eq!(report.ingest.missed, 20, "{backend}");
        assert_eq!(report.ingest.frames, records.len() as u64 - 20, "{backend}");
        assert_eq!(report.main_path_loss(), 20, "{backend}");
        // No signal comes from a skipped record.
        let seqs: Vec<u64> = signals
            .iter()
            .map(|s| {
                tickpipe::pipeline::signal::Signal::decode(s)
                    .unwrap()
                    .input_seq
            })
            .collect();
        assert!(
            seqs.iter()
                .all(|s| !(30..40).contains(s) && !(400..410).contains(s)),
            "{backend}"
        );
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{backend}: in order");
    }
}

/// Every record `source` hands out until its end of stream (or 10 s), in order; panics on a
/// gap.
fn drain_source(source: &mut UdpSource) -> Vec<Vec<u8>> {
    use tickpipe::pipeline::source::MdSource;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !source.is_finished() && Instant::now() < deadline {
        match source.read_batch(&mut [], 256, |_, rec| out.push(rec.to_vec())) {
            Ok(_) | Err(ReadError::Empty) => {}
            Err(e) => panic!("receiver: {e}"),
        }
    }
    out
}

#[test]
fn two_receivers_share_a_multicast_group() {
    // A group joined on loopback, so that the test needs no network of the host's.
    let lo = std::net::Ipv4Addr::LOCALHOST;
    let mut cfg = UdpConfig::new("239.255.77.12:0".parse().unwrap());
    cfg.interface = Some(lo);
    cfg.from_start = true;
    let clock = quanta::Clock::new();
    let mut a = match UdpSource::bind(&cfg, clock.clone()) {
        Ok(s) => s,
        Err(e @ UdpError::Join { .. }) => {
            println!("SKIPPED: multicast on loopback unavailable here: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let group = a.local_addr().expect("bound");
    // The second receiver binds the same group and port: a shared group is bound with
    // SO_REUSEADDR, as a recorder beside the engine would bind it.
    cfg.addr = group;
    let mut b = UdpSource::bind(&cfg, clock.clone()).expect("a second receiver of the group");
    let records = generated(20_000);
    let mut tx = UdpSender::new(
        UdpSendOptions {
            interface: Some(lo.into()),
            ..UdpSendOptions::new(group)
        },
        clock,
    )
    .unwrap();
    let (rx_a, rx_b) = std::thread::scope(|s| {
        let ra = s.spawn(|| drain_source(&mut a));
        let rb = s.spawn(|| drain_source(&mut b));
        for (i, r) in records.iter().enumerate() {
            tx.push(r).unwrap();
            if i % 1000 == 999 {
                tx.flush().unwrap();
                // Loopback drops what the receive buffers cannot hold.
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        tx.finish().unwrap();
        (ra.join().unwrap(), rb.join().unwrap())
    });
    assert_eq!(
        rx_a.len(),
        records.len(),
        "the first receiver got every record"
    );
    assert!(rx_a == records, "in order, byte for byte");
    assert!(rx_b == records, "and so did the second");
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Starts `tickpipe run --udp 127.0.0.1:0 ...`, waits for it to say where it listens, and
/// returns the child, the address and a channel with the rest of its standard error.
fn start_run(args: &[&str]) -> (std::process::Child, String, mpsc::Receiver<String>) {
    let mut child = spawn(args);
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = String::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("run never said where it listens: {seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if let Some(rest) = line.split(" on udp ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    (child, addr, rx)
}

#[test]
fn run_udp_beside_replay_udp() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("in.dbn.zst");
    let out = run(&[
        "gen",
        "--events",
        "8000",
        "--seed",
        "3",
        "--out",
        capture.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cfg = write(
        tmp.path(),
        "engine.toml",
        "mode = \"shared\"\n[stages.ingest]\nidle = \"yielding\"\n",
    );
    let sig = tmp.path().join("sig.ring");
    let expected = records(&[&capture]);
    let lasts = |skip: &dyn Fn(usize) -> bool| {
        expected
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                !skip(*i)
                    && tickpipe::pipeline::msg::Event::decode(r, 0, 0)
                        .unwrap()
                        .is_last()
            })
            .count()
    };
    for (backend, drop) in [("mio", None), ("uring", Some("5"))] {
        let (engine, addr, stderr) = start_run(&[
            "run",
            "--config",
            &cfg,
            "--udp",
            "127.0.0.1:0",
            "--udp-backend",
            backend,
            "--from-oldest",
            "--signals",
            sig.to_str().unwrap(),
        ]);
        let mut args = vec![
            "replay",
            capture.to_str().unwrap(),
            "--udp",
            &addr,
            "--records-per-datagram",
            "8",
            "--quiet",
        ];
        if let Some(d) = drop {
            args.extend(["--drop-seq", d]);
        }
        let replay = run(&args);
        assert!(replay.status.success(), "{}", text(&replay.stderr));
        let sent = text(&replay.stdout);
        assert!(
            sent.contains(&format!("replay: {} records", expected.len())),
            "{sent}"
        );
        let engine = wait_output(engine, Duration::from_secs(60));
        let errors: Vec<String> = stderr.try_iter().collect();
        let report = text(&engine.stdout);
        if backend == "uring"
            && errors
                .iter()
                .any(|l| l.contains("io_uring receive unavailable"))
        {
            eprintln!("SKIPPED: the uring backend: {errors:?}");
            continue;
        }
        match drop {
            None => {
                assert!(engine.status.success(), "{report}\n{errors:?}");
                assert!(
                    report.contains(&format!(
                        "{} records, 0 gaps (0 datagrams, 0 records missed), 0 stale, 0 undecodable",
                        expected.len()
                    )),
                    "{report}"
                );
                assert!(report.contains("ended by the sender"), "{report}");
                assert!(
                    report.contains(&format!("signals published: {}", lasts(&|_| false))),
                    "{report}"
                );
            }
            Some(_) => {
                // Datagram 5 held records 40..48: detected, counted, and the exit says data was
                // lost.
                assert_eq!(engine.status.code(), Some(3), "{report}\n{errors:?}");
                assert!(
                    report.contains(&format!(
                        "{} records, 1 gaps (1 datagrams, 8 records missed)",
                        expected.len() - 8
                    )),
                    "{report}"
                );
                assert!(report.contains("1 laps (8 frames missed)"), "{report}");
                assert!(
                    report.contains(&format!(
                        "signals published: {}",
                        lasts(&|i| (40..48).contains(&i))
                    )),
                    "{report}"
                );
                assert!(
                    errors
                        .iter()
                        .any(|l| l.contains("8 records were lost (gaps in the UDP feed)")),
                    "{errors:?}"
                );
            }
        }
    }
}

#[test]
fn profile_over_udp_matches_profile_over_the_ring() {
    // The same generated input through the ring and over loopback UDP (every backend this
    // kernel has): every event arrives, and the engine publishes the same signals. At full
    // speed the datagrams go out full (25 records each): the input, 160 datagrams, fits even a
    // default-sized socket receive buffer, so a slow engine loses nothing either.
    let tmp = tempfile::tempdir().unwrap();
    let profile = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let o = run(&[
            &[
                "profile",
                "--generate",
                "4000",
                "--out",
                out.to_str().unwrap(),
            ],
            extra,
        ]
        .concat());
        (o, out)
    };
    let (o, ring_out) = profile("ring", &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let ring = tickpipe::profile_report::load_summary(&ring_out).unwrap();
    for backend in ["mio", "uring", "uring-single"] {
        let (o, out) = profile(backend, &["--udp", backend]);
        let err = text(&o.stderr);
        if err.contains("io_uring") && !o.status.success() {
            eprintln!("SKIPPED: profile --udp {backend}: {err}");
            continue;
        }
        assert!(o.status.success(), "profile --udp {backend}: {err}");
        assert!(err.contains("market data over loopback UDP"), "{err}");
        let stdout = text(&o.stdout);
        assert!(
            stdout.contains("ingest: 4000 frames, 0 laps (0 frames missed)"),
            "{stdout}"
        );
        let udp = tickpipe::profile_report::load_summary(&out).unwrap();
        assert_eq!(udp.run["signals"], ring.run["signals"], "{backend}");
        assert_eq!(udp.run["events"], "4000");
    }
}
