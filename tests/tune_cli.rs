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
    for name in [
        "isolcpus",
        "nohz_full",
        "governor",
        "thp",
        "nic_irqs",
        "tsc",
        "memlock",
    ] {
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
        vec![
            "tune",
            "check",
            "--cores",
            "2",
            "--profile",
            bad.to_str().unwrap(),
        ],
    ] {
        let out = run(&args);
        assert_eq!(code(&out), 2, "{args:?}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = run(&["tune", "check", "--profile", bad.to_str().unwrap()]);
    assert!(
        text(&out.stderr).contains("host.mlockall"),
        "{}",
        text(&out.stderr)
    );
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
    assert!(
        prefault.contains("market-data ring and signal ring"),
        "{prefault}"
    );
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

/// A small host tree for the scripts: four CPUs, every file apply.sh writes.
fn script_host(root: &std::path::Path) {
    let put = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{text}\n")).unwrap();
    };
    put("sys/devices/system/cpu/online", "0-3");
    for c in 0..4 {
        put(
            &format!("sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"),
            "powersave",
        );
        put(
            &format!("sys/devices/system/cpu/cpu{c}/cpuidle/state0/latency"),
            "0",
        );
        put(
            &format!("sys/devices/system/cpu/cpu{c}/cpuidle/state1/latency"),
            "80",
        );
        put(
            &format!("sys/devices/system/cpu/cpu{c}/cpuidle/state1/disable"),
            "0",
        );
    }
    put("sys/devices/system/cpu/intel_pstate/no_turbo", "0");
    put(
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never",
    );
    put(
        "sys/kernel/mm/transparent_hugepage/defrag",
        "[always] defer defer+madvise madvise never",
    );
    put(
        "sys/kernel/mm/transparent_hugepage/shmem_enabled",
        "always within_size advise [never] deny force",
    );
    put("proc/sys/vm/nr_hugepages", "0");
    put("proc/sys/kernel/perf_event_paranoid", "2");
    put("proc/irq/9/smp_affinity_list", "0-3");
}

fn script(name: &str, args: &[&str]) -> std::process::Output {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tuning/scripts")
        .join(name);
    std::process::Command::new("bash")
        .arg(path)
        .args(args)
        .output()
        .expect("bash")
}

#[test]
fn apply_and_revert_scripts_round_trip_on_a_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("host");
    script_host(&root);
    let state = tmp.path().join("tune.state");
    let (r, s) = (root.to_str().unwrap(), state.to_str().unwrap());
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel))
            .unwrap()
            .trim()
            .to_string()
    };
    let gov = "sys/devices/system/cpu/cpu2/cpufreq/scaling_governor";
    let base = [
        "--root",
        r,
        "--cores",
        "2-3",
        "--hugepages",
        "64",
        "--state",
        s,
    ];

    // Dry run by default: says what it would do, writes nothing.
    let out = script("apply.sh", &base);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("dry run") && said.contains("powersave -> performance"),
        "{said}"
    );
    assert!(said.contains("isolcpus=domain,managed_irq,2-3"), "{said}");
    assert_eq!(read(gov), "powersave");
    assert!(!state.exists());

    // Applied: previous values saved first, then written.
    let out = script("apply.sh", &[&base[..], &["--apply"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read(gov), "performance");
    assert_eq!(
        read("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "powersave"
    );
    assert_eq!(
        read("sys/devices/system/cpu/cpu3/cpuidle/state1/disable"),
        "1"
    );
    assert_eq!(
        read("sys/devices/system/cpu/cpu0/cpuidle/state1/disable"),
        "0"
    );
    assert_eq!(read("proc/irq/9/smp_affinity_list"), "0-1");
    assert_eq!(read("proc/sys/vm/nr_hugepages"), "64");
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(
        saved.contains(&format!("{}\tpowersave", root.join(gov).display())),
        "{saved}"
    );
    assert!(
        saved.contains("transparent_hugepage/enabled\talways"),
        "{saved}"
    );

    // A second apply would record tuned values as the originals: refused.
    let out = script("apply.sh", &[&base[..], &["--apply"]].concat());
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );

    // Revert: dry run first, then back to every recorded value.
    let out = script("revert.sh", &["--state", s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read(gov), "performance");
    let out = script("revert.sh", &["--state", s, "--apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(read(gov), "powersave");
    assert_eq!(read("proc/irq/9/smp_affinity_list"), "0-3");
    assert_eq!(
        read("sys/kernel/mm/transparent_hugepage/shmem_enabled"),
        "never"
    );
    assert!(!state.exists());
    let out = script("revert.sh", &["--state", s]);
    assert_eq!(out.status.code(), Some(3));

    // Missing files: refused before anything is written, naming the step to skip.
    std::fs::remove_dir_all(root.join("sys/devices/system/cpu/intel_pstate")).unwrap();
    let out = script("apply.sh", &[&base[..], &["--apply"]].concat());
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("turbo: "),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(read(gov), "powersave");
    assert!(!state.exists());
    let out = script(
        "apply.sh",
        &[&base[..], &["--skip", "turbo,irqbalance"]].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Bad arguments.
    for args in [
        vec!["--root", r],
        vec!["--root", r, "--cores", "0-3"],
        vec!["--root", r, "--cores", "7"],
        vec!["--root", r, "--cores", "x"],
    ] {
        let out = script("apply.sh", &args);
        assert!(matches!(out.status.code(), Some(2 | 3)), "{args:?}");
    }
}
