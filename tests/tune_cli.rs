//! `tune check` on this very host, and the `[host]` settings as `profile` reports them at start.
//! What this host permits is not known in advance: the tests assert the shape of the answer and
//! that it is one of the allowed ones, never a panic.

mod common;

use common::*;

fn code(out: &std::process::Output) -> i32 {
    out.status.code().expect("exited, not killed")
}

#[test]
fn tune_check_on_this_host() {
    let out = run(&["tune", "check"]);
    let stdout = text(&out.stdout);
    assert!(matches!(code(&out), 0 | 1), "{}", text(&out.stderr));
    assert!(stdout.starts_with("tickpipe tune check for "), "{stdout}");
    assert!(stdout.contains("CHECK "), "{stdout}");
    for name in ["isolcpus", "nohz_full", "governor", "thp", "nic_irqs", "tsc", "memlock"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(name)),
            "{name} missing: {stdout}"
        );
    }
    let last = stdout.lines().last().unwrap_or("");
    if code(&out) == 0 {
        assert!(last.starts_with("tuned for"), "{last}");
    } else {
        assert!(last.starts_with("not tuned for"), "{last}");
    }

    let out = run(&["tune", "check", "--cores", "1", "--json"]);
    assert!(matches!(code(&out), 0 | 1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 18);
    for c in checks {
        assert!(
            matches!(c["status"].as_str(), Some("OK" | "CHANGE" | "N/A")),
            "{c}"
        );
        assert!(c["name"].is_string() && c["found"].is_string(), "{c}");
    }
    assert_eq!(v["tuned"].as_bool(), Some(code(&out) == 0));
    assert_eq!(
        v["blocking"].as_array().map(Vec::is_empty),
        Some(code(&out) == 0)
    );
}

#[test]
fn tune_check_takes_the_shipped_profiles_and_refuses_bad_arguments() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/profiles");
    for p in ["two-core.toml", "four-core.toml", "dedicated-8.toml"] {
        let path = dir.join(p);
        let out = run(&["tune", "check", "--profile", path.to_str().unwrap()]);
        assert!(matches!(code(&out), 0 | 1), "{p}: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains(p), "{p}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[host]\nmlockall = \"always\"\n").unwrap();
    for args in [
        vec!["tune", "check", "--cores", "0"],
        vec!["tune", "check", "--profile", "/no/such/profile.toml"],
        vec!["tune", "check", "--profile", bad.to_str().unwrap()],
        vec!["tune", "check", "--cores", "2", "--profile", bad.to_str().unwrap()],
    ] {
        let out = run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = run(&["tune", "check", "--profile", bad.to_str().unwrap()]);
    assert!(text(&out.stderr).contains("host.mlockall"), "{}", text(&out.stderr));
}

#[test]
fn profile_reports_each_host_setting_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("host.toml");
    std::fs::write(
        &cfg,
        "[host]\nmlockall = \"on\"\nprefault = \"on\"\nhugepages = \"off\"\nrealtime = \"off\"\n",
    )
    .unwrap();
    let out_dir = tmp.path().join("out");
    let out = run(&[
        "profile",
        "--config",
        cfg.to_str().unwrap(),
        "--generate",
        "2000",
        "--no-models",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("profile: host settings"), "{stderr}");
    // This host may or may not permit locking: the line says which, never nothing.
    let mlock = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("mlockall: "))
        .unwrap_or_else(|| panic!("no mlockall line: {stderr}"));
    assert!(
        mlock.contains("mlockall: applied: MCL_CURRENT | MCL_FUTURE")
            || (mlock.contains("NOT PERMITTED") && mlock.contains("[warning")),
        "{mlock}"
    );
    let prefault = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("prefault: applied: "))
        .unwrap_or_else(|| panic!("no prefault line: {stderr}"));
    assert!(prefault.contains("market-data ring and signal ring"), "{prefault}");
    assert!(stderr.contains("hugepages[signal ring]: off"), "{stderr}");
    assert!(stderr.contains("realtime: off"), "{stderr}");

    // Required huge pages: either in effect, or start-up fails naming the setting.
    std::fs::write(&cfg, "[host]\nhugepages = \"required\"\n").unwrap();
    let out = run(&[
        "profile",
        "--config",
        cfg.to_str().unwrap(),
        "--generate",
        "1000",
        "--no-models",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    if out.status.success() {
        assert!(
            stderr.contains("hugepages[market-data ring]: applied"),
            "{stderr}"
        );
    } else {
        assert!(
            stderr.contains("tickpipe: error: host setting hugepages[")
                && stderr.contains("is required but"),
            "{stderr}"
        );
        assert!(stderr.contains("[required: start-up fails]"), "{stderr}");
    }
}
