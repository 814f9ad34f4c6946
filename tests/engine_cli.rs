//! The engine commands as a user runs them: `profile` (report files, compare, every mode, its
//! control plane),
//! `run` beside a separate `replay` process with `signals tail` reading its output, shutdown by
//! signal, and configuration errors.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn summary(dir: &Path) -> tickpipe::profile_report::Summary {
    tickpipe::profile_report::load_summary(dir).unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn profile_writes_reports_and_compares() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let out = run(&[
        "profile",
        "--generate",
        "20000",
        "--max",
        "--out",
        a.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for stage in ["ingest", "features", "inference", "health"] {
        assert!(stdout.contains(&format!("{stage}.service")), "{stdout}");
    }
    let s = summary(&a);
    let e2e = &s.series["end_to_end"];
    // One vector (and signal) per consistent book state: per record flagged F_LAST.
    let mut g = tickpipe::synth::Generator::new(&tickpipe::synth::SynthConfig {
        events: 20_000,
        ..Default::default()
    })
    .unwrap();
    let mut last = 0;
    while let Some(r) = g.next_record() {
        last += u64::from(r.flags.is_last());
    }
    assert!(last > 1_000 && last < 20_000, "{last}");
    assert_eq!(e2e.count, last);
    assert_eq!(s.run["signals"], last.to_string());
    assert_eq!(e2e.drops, 0);
    assert!(e2e.p50 > 0 && e2e.p50 <= e2e.p99 && e2e.p99 <= e2e.max);
    assert_eq!(s.run["mode"], "shared");
    assert!(a.join("end_to_end.hgrm").is_file());
    assert!(a.join("ingest.queue.hgrm").is_file());
    assert!(
        std::fs::read_to_string(a.join("percentiles.svg"))
            .unwrap()
            .starts_with("<svg")
    );

    // A paced run in invoker mode: latency from the schedule.
    let out = run(&[
        "profile",
        "--generate",
        "5000",
        "--rate",
        "200000",
        "--mode",
        "invoker",
        "--out",
        b.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = summary(&b);
    assert_eq!(s.run["mode"], "invoker");
    assert_eq!(
        s.series["end_to_end"].count.to_string(),
        s.run["signals"],
        "a latency sample per signal"
    );
    assert!(s.series["end_to_end"].count > 1_000);
    assert!(s.run["coordinated_omission"].contains("scheduled"));

    let out = run(&[
        "profile",
        "--compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cmp = text(&out.stdout);
    assert!(cmp.contains("end_to_end") && cmp.contains('x'), "{cmp}");

    let out = run(&[
        "profile",
        "--compare",
        a.to_str().unwrap(),
        tmp.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("summary.json"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn profile_runs_every_mode_on_a_capture() {
    let Some(es) = data_file("dbn/es-mbo") else {
        return;
    };
    let capture = std::fs::read_dir(&es)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".dbn"))
        .min()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mut counts = Vec::new();
    for mode in ["dedicated", "shared", "invoker"] {
        let dir = tmp.path().join(mode);
        let out = run(&[
            "profile",
            "--input",
            capture.to_str().unwrap(),
            "--max",
            "--mode",
            mode,
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{mode}: {}", text(&out.stderr));
        counts.push(summary(&dir).series["end_to_end"].count);
    }
    assert!(
        counts[0] > 0 && counts.iter().all(|&c| c == counts[0]),
        "{counts:?}"
    );
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn bad_configs_fail_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown.toml",
            "[stages.risk]\ncore = 0\n",
            "stages.risk: unknown stage",
        ),
        (
            "core.toml",
            "[stages.ingest]\ncore = 4096\n",
            "stages.ingest.core: core 4096",
        ),
        (
            "zero.toml",
            "[links]\ncapacity = 0\n",
            "links.capacity: must be at least 2",
        ),
        ("malformed.toml", "mode = \"shared\"\n[links\n", "line 2"),
        (
            "field.toml",
            "[stages.ingest]\ncpu = 1\n",
            "unknown field `cpu`",
        ),
    ];
    for (name, body, want) in cases {
        let cfg = write(tmp.path(), name, body);
        for args in [
            vec!["profile", "--config", &cfg, "--generate", "10"],
            vec![
                "run",
                "--config",
                &cfg,
                "--md-ring",
                "/nonexistent/ring",
                "--wait",
                "0",
            ],
        ] {
            let out = run(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            let err = text(&out.stderr);
            assert!(err.contains(want) && err.contains(name), "{args:?}: {err}");
            // The config is read first: nothing else (the ring) was touched.
            assert!(!err.contains("/nonexistent/ring"), "{err}");
        }
    }
    let out = run(&["run", "--config", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read the config"));
    let out = run(&["profile", "--generate", "10", "--rate", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--rate"));
}

#[test]
fn run_beside_replay_and_signals_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("in.dbn.zst");
    let out = run(&[
        "gen",
        "--events",
        "30000",
        "--seed",
        "5",
        "--out",
        capture.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = tmp.path().join("md.ring");
    let sig = tmp.path().join("sig.ring");
    let cfg = write(
        tmp.path(),
        "engine.toml",
        "mode = \"dedicated\"\n[stages.ingest]\nidle = \"yielding\"\n[stages.features]\nidle = \"yielding\"\n[stages.inference]\nidle = \"yielding\"\n[stages.health]\nidle = \"yielding\"\n",
    );
    let engine = spawn(&[
        "run",
        "--config",
        &cfg,
        "--md-ring",
        md.to_str().unwrap(),
        "--signals",
        sig.to_str().unwrap(),
        "--from-oldest",
        "--wait",
        "30",
    ]);
    // To a file: 30 000 lines would fill a pipe nobody reads until the end.
    let tail_out = tmp.path().join("tail.txt");
    let tail = bin()
        .args([
            "signals",
            "tail",
            "--ring",
            sig.to_str().unwrap(),
            "--from-start",
            "--wait",
            "30",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&tail_out).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let replay = run(&[
        "replay",
        capture.to_str().unwrap(),
        "--ring",
        md.to_str().unwrap(),
        "--speed",
        "max",
        "--capacity",
        "16M",
        "--quiet",
    ]);
    assert!(replay.status.success(), "{}", text(&replay.stderr));
    let engine = wait_output(engine, Duration::from_secs(60));
    assert!(engine.status.success(), "{}", text(&engine.stderr));
    let report = text(&engine.stdout);
    // A signal per consistent book state: the records flagged F_LAST, by their input seq.
    let expected: Vec<usize> = records(&[&capture])
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            tickpipe::pipeline::msg::Event::decode(r, 0, 0)
                .unwrap()
                .is_last()
        })
        .map(|(i, _)| i)
        .collect();
    assert!(
        report.contains(&format!("signals published: {}", expected.len())),
        "{report}"
    );
    assert!(report.contains("0 laps"), "{report}");
    let tail = wait_output(tail, Duration::from_secs(60));
    assert!(tail.status.success(), "{}", text(&tail.stderr));
    let lines: Vec<String> = std::fs::read_to_string(&tail_out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(lines.len(), expected.len());
    // In input order, one per completed book state.
    for (line, i) in lines.iter().zip(&expected).step_by(997) {
        assert!(line.contains(&format!(" input_seq={i} ")), "{line}");
    }
    // The same ring read with a count, and a ring that is not a signal ring.
    let out = run(&[
        "signals",
        "tail",
        "--ring",
        sig.to_str().unwrap(),
        "--from-start",
        "--count",
        "3",
    ]);
    assert_eq!(text(&out.stdout).lines().count(), 3);
    let out = run(&[
        "signals",
        "tail",
        "--ring",
        md.to_str().unwrap(),
        "--wait",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a signal ring"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn run_stops_cleanly_on_sigint() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("in.dbn.zst");
    let out = run(&[
        "gen",
        "--events",
        "200000",
        "--out",
        capture.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let md = tmp.path().join("md.ring");
    let sig = tmp.path().join("sig.ring");
    let cfg = write(
        tmp.path(),
        "engine.toml",
        "[stages.ingest]\nidle = \"backoff\"\n",
    );
    // A slow replay that outlives the test.
    let replay = spawn(&[
        "replay",
        capture.to_str().unwrap(),
        "--ring",
        md.to_str().unwrap(),
        "--speed",
        "1",
        "--quiet",
    ]);
    let engine = spawn(&[
        "run",
        "--config",
        &cfg,
        "--md-ring",
        md.to_str().unwrap(),
        "--signals",
        sig.to_str().unwrap(),
        "--wait",
        "30",
    ]);
    assert!(wait_until(Duration::from_secs(30), || sig.exists()));
    std::thread::sleep(Duration::from_millis(300));
    signal(&engine, "INT");
    let out = wait_output(engine, Duration::from_secs(30));
    signal(&replay, "TERM");
    let _ = wait_output(replay, Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("end_to_end") && report.contains("signals published"),
        "{report}"
    );
}

#[test]
fn profile_swaps_the_scoring_model_while_it_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&[
        "profile",
        "--generate",
        "200000",
        "--rate",
        "1000000",
        "--no-lstm",
        "--swap-every",
        "5ms",
        "--out",
        tmp.path().join("p").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let swaps: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("swaps: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no swap count in {stderr}"));
    assert!(swaps >= 5, "{stderr}");
    // Invoker mode has no thread to swap from; a profile without a scoring model has nothing
    // to swap.
    for (args, want) in [
        (vec!["--mode", "invoker"], "threaded mode"),
        (vec!["--no-models"], "scoring model"),
    ] {
        let mut all = vec!["profile", "--generate", "1000", "--swap-every", "1ms"];
        all.extend(args);
        let out = run(&all);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(want), "{}", text(&out.stderr));
    }
}

#[test]
fn profile_serves_the_control_plane_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let mut child = bin()
        .args(["profile", "--generate", "1000000", "--rate", "500000"])
        .args(["--control", "127.0.0.1:0", "--rss-interval", "1s", "--out"])
        .arg(&out)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr: std::net::SocketAddr = loop {
        let mut line = String::new();
        let n = std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(n > 0, "profile ended before serving: {log}");
        log.push_str(&line);
        if let Some(a) = line.strip_prefix("profile: control plane http://") {
            break a.trim().parse().unwrap();
        }
    };
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    // While events flow: the rollup, the metrics, and a refusal for bad input.
    let (code, body) = http(addr, "GET /health HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert!(code == 200 || code == 503, "{code} {body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(j["status"].is_string(), "{body}");
    let (code, metrics) = http(addr, "GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("tickpipe_kill_switch_engaged"),
        "{metrics}"
    );
    let (code, body) = http(addr, "NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(code, 400, "{body}");
    let (code, _) = http(
        addr,
        "POST /kill-switch HTTP/1.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(code, 401, "a POST without a key");
    let output = wait_output(child, Duration::from_secs(60));
    let stderr = rest.join().unwrap();
    assert!(output.status.success(), "{log}{stderr}");
    assert_eq!(summary(&out).run["events"], "1000000");
    // The server stopped with the replay.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
