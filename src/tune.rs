//! `tickpipe tune check`: inspects the host and says, check by check, what it found, whether it
//! suits the selected profile, why it matters and how to change it.
//!
//! Everything is read through [`HostFs`], a view of `/proc` and `/sys` under a configurable root,
//! so the same code runs on the real host and on a fake tree in a test. Each check ends as
//! [`Status::Ok`], [`Status::Change`] (the host is not tuned for the profile: it blocks) or
//! [`Status::NotAvailable`] (the file is missing, as on many virtual machines; it does not
//! block, since there is nothing to change).
//!
//! Which cores matter: those that run a spinning thread (idle `busy-spin` or `no-op`) in the
//! profile, the main-path stages and `profile`'s feeder; threads that back off or sleep (the
//! forecast lane, the reporter) can share the housekeeping cores. `--cores N` stands for a
//! profile that spins on N cores: the N online CPUs after the first.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tickpipe_pipeline::EngineConfig;
use tickpipe_pipeline::IdleStrategy;
use tickpipe_pipeline::config::STAGES;
use tickpipe_pipeline::host::{
    CAP_IPC_LOCK, CAP_SYS_NICE, HostSettings, Want, bracketed, bytes, has_capability,
};

/// `CAP_SYS_ADMIN`: perf events past `perf_event_paranoid` (with `CAP_PERFMON`).
const CAP_SYS_ADMIN: u32 = 21;
/// `CAP_PERFMON`.
const CAP_PERFMON: u32 = 38;
/// The market-data ring size assumed when the profile names none: `tickpipe replay`'s default.
const DEFAULT_MD_RING: u64 = 64 << 20;
/// Checks without which no verdict can be given: when one of them cannot be inspected, the
/// host is not reported as tuned. Any other check that cannot be inspected does not block.
pub const ESSENTIAL: [&str; 4] = ["cpus", "isolcpus", "nohz_full", "rcu_nocbs"];
/// Cores beyond this in a CPU list are ignored (bad input must not make a huge set).
const MAX_CPUS: usize = 1 << 14;

/// A read-only view of `/proc` and `/sys` under `root` (`/` on a real host).
#[derive(Debug, Clone)]
pub struct HostFs {
    root: PathBuf,
}

impl Default for HostFs {
    fn default() -> Self {
        Self::new("/")
    }
}

impl HostFs {
    /// A view rooted at `root`: `/proc/cmdline` is read from `<root>/proc/cmdline`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The real path of an absolute host path.
    pub fn path(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }

    /// A file's text, trimmed; `None` if it cannot be read.
    pub fn read(&self, abs: &str) -> Option<String> {
        std::fs::read_to_string(self.path(abs))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// The names in a directory, sorted; empty if it cannot be read.
    pub fn list(&self, abs: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(abs))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn exists(&self, abs: &str) -> bool {
        self.path(abs).exists()
    }
}

/// Parses a kernel CPU list (`0-3,8,10-11`); words that are not CPU ranges (the `domain`,
/// `managed_irq` flags of `isolcpus`) are skipped.
pub fn parse_cpu_list(text: &str) -> BTreeSet<usize> {
    let mut set = BTreeSet::new();
    for part in text.trim().split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<usize>(), b.parse::<usize>()),
            None => (part.parse(), part.parse()),
        };
        if let (Ok(a), Ok(b)) = (a, b)
            && a <= b
            && b < MAX_CPUS
        {
            set.extend(a..=b);
        }
    }
    set
}

/// Formats a CPU set as a kernel CPU list.
pub fn cpu_list(set: &BTreeSet<usize>) -> String {
    let mut out = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(",")
    }
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Suits the profile.
    #[serde(rename = "OK")]
    Ok,
    /// Needs a change for the profile: blocks a tuned verdict.
    #[serde(rename = "CHANGE")]
    Change,
    /// Cannot be inspected here (the file is missing, as on many virtual machines).
    #[serde(rename = "N/A")]
    NotAvailable,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Change => "CHANGE",
            Status::NotAvailable => "N/A",
        }
    }
}

/// One inspected setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Short name (`isolcpus`, `governor`).
    pub name: &'static str,
    /// Verdict.
    pub status: Status,
    /// What the host has.
    pub found: String,
    /// Why it matters, or why it could not be inspected.
    pub why: String,
    /// How to change it (empty when nothing is to be done).
    pub fix: String,
}

fn check(name: &'static str, status: Status, found: impl Into<String>) -> Check {
    Check {
        name,
        status,
        found: found.into(),
        why: String::new(),
        fix: String::new(),
    }
}

impl Check {
    fn why(mut self, why: impl Into<String>) -> Self {
        self.why = why.into();
        self
    }
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = fix.into();
        self
    }
}

/// What the host is checked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Where it came from (a profile path, `--cores N`).
    pub source: String,
    /// Cores that run a spinning thread, with the threads on each.
    pub hot_cores: BTreeMap<usize, Vec<String>>,
    /// Bytes of the rings the engine maps (market-data ring and signal ring).
    pub ring_bytes: u64,
    /// Lock memory.
    #[serde(serialize_with = "as_text")]
    pub mlockall: Want,
    /// Huge pages for the rings.
    #[serde(serialize_with = "as_text")]
    pub hugepages: Want,
    /// `SCHED_FIFO` for pinned stages.
    #[serde(serialize_with = "as_text")]
    pub realtime: Want,
    /// Its priority.
    pub realtime_priority: i32,
}

fn as_text<S: serde::Serializer>(w: &Want, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&w.to_string())
}

fn spins(idle: IdleStrategy) -> bool {
    matches!(idle, IdleStrategy::BusySpin | IdleStrategy::NoOp)
}

impl Target {
    /// The cores and settings of a profile.
    pub fn from_config(cfg: &EngineConfig, source: &str) -> Self {
        let mut hot: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for (name, p) in STAGES.iter().zip(&cfg.stages) {
            if let (Some(core), true) = (p.core, spins(p.idle)) {
                hot.entry(core).or_default().push((*name).to_string());
            }
        }
        if let (Some(core), true) = (cfg.feeder.core, spins(cfg.feeder.idle)) {
            hot.entry(core).or_default().push("feeder".into());
        }
        let md = cfg
            .md_ring
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(DEFAULT_MD_RING, |m| m.len());
        Self::with(source, hot, md + cfg.signal_capacity as u64, &cfg.host)
    }

    /// A profile spinning on `n` cores: the `n` online CPUs after the first (the first stays
    /// with the kernel), every host setting on.
    pub fn from_cores(n: usize, fs: &HostFs) -> Self {
        let online = fs
            .read("/sys/devices/system/cpu/online")
            .map(|t| parse_cpu_list(&t))
            .unwrap_or_default();
        // Cores the host lacks are named past its last one, so the cpus check can say so.
        let mut cores: Vec<usize> = online.iter().copied().skip(1).take(n).collect();
        let mut next = online.iter().last().map_or(1, |c| c + 1);
        while cores.len() < n {
            cores.push(next);
            next += 1;
        }
        let hot = cores
            .into_iter()
            .enumerate()
            .map(|(i, c)| (c, vec![format!("spinning thread {}", i + 1)]))
            .collect();
        let all_on = HostSettings {
            mlockall: Want::On,
            prefault: Want::On,
            hugepages: Want::On,
            realtime: Want::On,
            realtime_priority: 50,
        };
        Self::with(
            &format!("--cores {n}"),
            hot,
            DEFAULT_MD_RING + EngineConfig::default().signal_capacity as u64,
            &all_on,
        )
    }

    fn with(source: &str, hot: BTreeMap<usize, Vec<String>>, ring: u64, h: &HostSettings) -> Self {
        Self {
            source: source.to_string(),
            hot_cores: hot,
            ring_bytes: ring,
            mlockall: h.mlockall,
            hugepages: h.hugepages,
            realtime: h.realtime,
            realtime_priority: h.realtime_priority,
        }
    }

    fn cores(&self) -> BTreeSet<usize> {
        self.hot_cores.keys().copied().collect()
    }

    fn describe(&self, cores: &BTreeSet<usize>) -> String {
        cores
            .iter()
            .map(|c| match self.hot_cores.get(c) {
                Some(roles) => format!("{c} ({})", roles.join("+")),
                None => c.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Everything found, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    /// What the host was checked for.
    pub target: Target,
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
    /// No check blocks.
    pub tuned: bool,
    /// The checks that block: those asking for a change, and the [`ESSENTIAL`] ones that could
    /// not be inspected.
    pub blocking: Vec<&'static str>,
}

impl Inspection {
    /// 0 tuned, 1 not tuned.
    pub fn exit_code(&self) -> u8 {
        u8::from(!self.tuned)
    }
}

/// Runs every check.
pub fn inspect(fs: &HostFs, target: &Target) -> Inspection {
    let proc_status = fs.read("/proc/self/status").unwrap_or_default();
    let cmdline = fs.read("/proc/cmdline");
    let checks = vec![
        cpus(fs, target),
        smt(fs, target),
        numa(fs, target),
        isolation(
            "isolcpus",
            cmdline.as_deref(),
            target,
            "the scheduler may put any task on them; isolated cores run only what is pinned there",
        ),
        isolation(
            "nohz_full",
            cmdline.as_deref(),
            target,
            "the scheduler tick interrupts a spinning thread up to 1000 times a second",
        ),
        isolation(
            "rcu_nocbs",
            cmdline.as_deref(),
            target,
            "RCU callbacks run on every core unless offloaded to housekeeping cores",
        ),
        governor(fs, target),
        turbo(fs),
        cstates(fs, target, cmdline.as_deref()),
        thp(fs),
        hugepages(fs, target),
        irqbalance(fs),
        nic_irqs(fs, target),
        tsc(fs),
        clocksource(fs),
        perf_paranoid(fs, &proc_status),
        memlock(fs, target, &proc_status),
        realtime(fs, target, &proc_status),
    ];
    let blocking: Vec<&'static str> = checks
        .iter()
        .filter(|c| {
            c.status == Status::Change
                || (c.status == Status::NotAvailable && ESSENTIAL.contains(&c.name))
        })
        .map(|c| c.name)
        .collect();
    Inspection {
        target: target.clone(),
        tuned: blocking.is_empty(),
        blocking,
        checks,
    }
}

fn online(fs: &HostFs) -> Option<BTreeSet<usize>> {
    fs.read("/sys/devices/system/cpu/online")
        .map(|t| parse_cpu_list(&t))
        .filter(|s| !s.is_empty())
}

fn cpus(fs: &HostFs, t: &Target) -> Check {
    let Some(online) = online(fs) else {
        return check("cpus", Status::NotAvailable, "unknown")
            .why("/sys/devices/system/cpu/online is missing");
    };
    let found = format!("{} online ({})", cpu_list(&online), online.len());
    let hot = t.cores();
    let missing: BTreeSet<usize> = hot.difference(&online).copied().collect();
    if !missing.is_empty() {
        return check("cpus", Status::Change, found)
            .why(format!(
                "{} pins spinning threads on cores this host does not have online: {}",
                t.source,
                t.describe(&missing)
            ))
            .fix("use a profile written for this host (tuning/profiles/), or a bigger host");
    }
    if hot.is_empty() {
        return check("cpus", Status::Change, found)
            .why(format!(
                "{} pins no spinning thread: the scheduler moves the hot path between cores",
                t.source
            ))
            .fix("pin each hot stage to a core of its own ([stages.*] core, tuning/profiles/)");
    }
    if online.iter().all(|c| hot.contains(c)) {
        return check("cpus", Status::Change, found)
            .why(
                "every online CPU runs a spinning thread: the kernel, interrupts and housekeeping \
                 have to preempt one",
            )
            .fix("leave at least one core (usually CPU 0) free of spinning threads");
    }
    check("cpus", Status::Ok, found).why(format!("spinning on {}", t.describe(&hot)))
}

fn smt(fs: &HostFs, t: &Target) -> Check {
    let hot = t.cores();
    let mut shared = Vec::new();
    let mut seen_any = false;
    let isolated = fs
        .read("/proc/cmdline")
        .and_then(|c| param(&c, "isolcpus"))
        .map(|v| parse_cpu_list(&v))
        .unwrap_or_default();
    for &core in &hot {
        let Some(list) = fs.read(&format!(
            "/sys/devices/system/cpu/cpu{core}/topology/thread_siblings_list"
        )) else {
            continue;
        };
        seen_any = true;
        for sib in parse_cpu_list(&list) {
            if sib == core {
                continue;
            }
            if hot.contains(&sib) {
                shared.push(format!("{core} and {sib} both spin"));
            } else if !isolated.contains(&sib) {
                shared.push(format!("{core}'s sibling {sib} is not isolated"));
            }
        }
    }
    if !seen_any {
        return check("smt", Status::NotAvailable, "unknown").why(if hot.is_empty() {
            "no pinned core to inspect".to_string()
        } else {
            "thread_siblings_list is missing for the pinned cores".to_string()
        });
    }
    if shared.is_empty() {
        return check("smt", Status::Ok, "pinned cores have no busy SMT sibling").why(
            "a hyperthread sibling shares the core's execution units and caches with the hot thread",
        );
    }
    check("smt", Status::Change, shared.join("; "))
        .why("a hyperthread sibling shares the core's execution units and caches with the hot thread")
        .fix(
            "keep each pinned core's sibling idle (isolate it, pin nothing there), or turn SMT \
             off (nosmt on the kernel command line, or echo off > /sys/devices/system/cpu/smt/control)",
        )
}

fn numa(fs: &HostFs, t: &Target) -> Check {
    let nodes: Vec<(usize, BTreeSet<usize>)> = fs
        .list("/sys/devices/system/node")
        .iter()
        .filter_map(|n| {
            let id = n.strip_prefix("node")?.parse().ok()?;
            let cpus = fs.read(&format!("/sys/devices/system/node/{n}/cpulist"))?;
            Some((id, parse_cpu_list(&cpus)))
        })
        .collect();
    if nodes.is_empty() {
        return check("numa", Status::NotAvailable, "unknown")
            .why("/sys/devices/system/node is missing (kernel without NUMA)");
    }
    let node_of = |core: usize| nodes.iter().find(|(_, c)| c.contains(&core)).map(|n| n.0);
    let used: BTreeSet<usize> = t.cores().into_iter().filter_map(node_of).collect();
    let nics: Vec<(String, i64)> = fs
        .list("/sys/class/net")
        .into_iter()
        .filter_map(|n| {
            let node = fs
                .read(&format!("/sys/class/net/{n}/device/numa_node"))?
                .parse()
                .ok()?;
            Some((n, node))
        })
        .collect();
    let found = format!(
        "{} node(s); pinned cores on node(s) {}; NICs {}",
        nodes.len(),
        cpu_list(&used),
        if nics.is_empty() {
            "without a NUMA node".to_string()
        } else {
            nics.iter()
                .map(|(n, node)| format!("{n}@{node}"))
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    if nodes.len() == 1 {
        return check("numa", Status::Ok, found).why("one NUMA node: every access is local");
    }
    if used.len() > 1 {
        return check("numa", Status::Change, found)
            .why("the hot path crosses NUMA nodes: every hand-over between stages is a remote access")
            .fix("pin every hot stage on one node (lscpu -e shows each CPU's node)");
    }
    let far: Vec<&str> = nics
        .iter()
        .filter(|(_, node)| *node >= 0 && !used.contains(&(*node as usize)))
        .map(|(n, _)| n.as_str())
        .collect();
    if !far.is_empty() {
        return check("numa", Status::Change, found)
            .why(format!(
                "NIC(s) {} sit on another node than the pinned cores: market data crosses the \
                 interconnect",
                far.join(", ")
            ))
            .fix("pin the hot stages on the NIC's node (/sys/class/net/<nic>/device/numa_node)");
    }
    check("numa", Status::Ok, found).why("the pinned cores share one node")
}

/// The value of `name=` on a kernel command line (the last one wins, as for the kernel).
pub fn param(cmdline: &str, name: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .next_back()
}

fn isolation(name: &'static str, cmdline: Option<&str>, t: &Target, why: &str) -> Check {
    let Some(cmdline) = cmdline else {
        return check(name, Status::NotAvailable, "unknown").why("/proc/cmdline is missing");
    };
    let set = param(cmdline, name)
        .map(|v| parse_cpu_list(&v))
        .unwrap_or_default();
    let hot = t.cores();
    let found = if set.is_empty() {
        "not set".to_string()
    } else {
        cpu_list(&set)
    };
    let missing: BTreeSet<usize> = hot.difference(&set).copied().collect();
    let fix = format!(
        "add {name}={} to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, \
         then update-grub and reboot)",
        cpu_list(&hot.union(&set).copied().collect())
    );
    if hot.is_empty() {
        return check(name, Status::Change, found)
            .why("no pinned core: nothing can be isolated")
            .fix("pin the hot stages first (tuning/profiles/)");
    }
    if missing.is_empty() {
        return check(name, Status::Ok, found).why(format!("covers every pinned core; {why}"));
    }
    check(name, Status::Change, found)
        .why(format!(
            "pinned cores {} are not in it: {why}",
            t.describe(&missing)
        ))
        .fix(fix)
}

fn governor(fs: &HostFs, t: &Target) -> Check {
    let cores: BTreeSet<usize> = if t.cores().is_empty() {
        online(fs).unwrap_or_default()
    } else {
        t.cores()
    };
    let mut found = BTreeMap::<String, Vec<usize>>::new();
    for c in &cores {
        if let Some(g) = fs.read(&format!(
            "/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"
        )) {
            found.entry(g).or_default().push(*c);
        }
    }
    if found.is_empty() {
        return check("governor", Status::NotAvailable, "no cpufreq")
            .why("no scaling_governor for the pinned cores (a VM, or a fixed-frequency host)");
    }
    let text = found
        .iter()
        .map(|(g, cs)| format!("{g} on {}", cpu_list(&cs.iter().copied().collect())))
        .collect::<Vec<_>>()
        .join("; ");
    if found.keys().all(|g| g == "performance") {
        return check("governor", Status::Ok, text)
            .why("performance keeps the pinned cores at their top frequency");
    }
    check("governor", Status::Change, text)
        .why("other governors lower the frequency when a core looks idle and take time to raise it")
        .fix(
            "cpupower frequency-set -g performance (or tuning/scripts/apply.sh), for every pinned core",
        )
}

fn turbo(fs: &HostFs) -> Check {
    let (on, found) = if let Some(v) = fs.read("/sys/devices/system/cpu/intel_pstate/no_turbo") {
        (v == "0", format!("intel_pstate no_turbo={v}"))
    } else if let Some(v) = fs.read("/sys/devices/system/cpu/cpufreq/boost") {
        (v == "1", format!("cpufreq boost={v}"))
    } else {
        return check("turbo", Status::NotAvailable, "no control").why(
            "neither intel_pstate/no_turbo nor cpufreq/boost exists (a VM, or no boost control)",
        );
    };
    if on {
        check("turbo", Status::Change, found)
            .why(
                "turbo frequency follows load and temperature: the same code runs at varying speed",
            )
            .fix(
                "echo 1 > /sys/devices/system/cpu/intel_pstate/no_turbo (or 0 > cpufreq/boost); \
                 or keep it on knowingly and record it with the results",
            )
    } else {
        check("turbo", Status::Ok, found).why("a steady frequency: run-to-run comparable latency")
    }
}

fn cstates(fs: &HostFs, t: &Target, cmdline: Option<&str>) -> Check {
    let driver = fs.read("/sys/devices/system/cpu/cpuidle/current_driver");
    let max_param = fs.read("/sys/module/intel_idle/parameters/max_cstate");
    let cmd = cmdline.unwrap_or("");
    let max = param(cmd, "intel_idle.max_cstate")
        .or_else(|| param(cmd, "processor.max_cstate"))
        .or(max_param);
    let idle_poll = param(cmd, "idle").is_some_and(|v| v == "poll");
    if driver.is_none() && max.is_none() && cmdline.is_none() {
        return check("cstates", Status::NotAvailable, "unknown")
            .why("no cpuidle driver and no kernel command line to inspect");
    }
    // Idle states still enabled on the pinned cores with an exit latency over 2 us.
    let mut inspected = false;
    let mut deep = BTreeSet::new();
    let on_host: BTreeSet<usize> = match online(fs) {
        Some(o) if !t.cores().is_disjoint(&o) => t.cores().intersection(&o).copied().collect(),
        Some(o) => o,
        None => t.cores(),
    };
    for c in on_host {
        let dir = format!("/sys/devices/system/cpu/cpu{c}/cpuidle");
        for s in fs.list(&dir) {
            let Some(latency) = fs
                .read(&format!("{dir}/{s}/latency"))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            inspected = true;
            let disabled = fs
                .read(&format!("{dir}/{s}/disable"))
                .is_some_and(|v| v == "1");
            if latency > 2 && !disabled {
                let name = fs.read(&format!("{dir}/{s}/name")).unwrap_or(s);
                deep.insert(format!("{name} ({latency} us)"));
            }
        }
    }
    let found = format!(
        "driver {}, max_cstate {}{}{}",
        driver.as_deref().unwrap_or("none"),
        max.as_deref().unwrap_or("default"),
        if idle_poll { ", idle=poll" } else { "" },
        if deep.is_empty() {
            String::new()
        } else {
            format!(
                ", enabled: {}",
                deep.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    );
    let why = "waking from a deep C-state takes tens to hundreds of microseconds, and a sleeping \
               SMT sibling or housekeeping core wakes the same way";
    let limited = idle_poll
        || max
            .as_deref()
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|m| m <= 1);
    let no_driver = driver.as_deref().is_none_or(|d| d == "none");
    let ok = limited || (inspected && deep.is_empty()) || (!inspected && no_driver);
    if ok {
        return check("cstates", Status::Ok, found).why(why);
    }
    check("cstates", Status::Change, found).why(why).fix(
        "intel_idle.max_cstate=1 processor.max_cstate=1 on the kernel command line, or disable \
         the deep states of the pinned cores (cpupower -c <cores> idle-set -D 2)",
    )
}

fn thp(fs: &HostFs) -> Check {
    let base = "/sys/kernel/mm/transparent_hugepage";
    let (Some(enabled), Some(defrag)) = (
        fs.read(&format!("{base}/enabled")),
        fs.read(&format!("{base}/defrag")),
    ) else {
        return check("thp", Status::NotAvailable, "unknown")
            .why("transparent_hugepage/enabled or defrag is missing (kernel without THP)");
    };
    let e = bracketed(&enabled).unwrap_or("?").to_string();
    let d = bracketed(&defrag).unwrap_or("?").to_string();
    let found = format!("enabled {e}, defrag {d}");
    if e == "always" || d == "always" {
        return check("thp", Status::Change, found)
            .why(
                "with always, any allocation may stall in compaction, and khugepaged rewrites the \
                 page tables of running threads",
            )
            .fix(
                "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled and \
                 echo defer+madvise > .../defrag (tickpipe asks for huge pages where it wants them)",
            );
    }
    check("thp", Status::Ok, found)
        .why("huge pages only where asked for (madvise), no stalls elsewhere")
}

fn meminfo(fs: &HostFs, key: &str) -> Option<u64> {
    fs.read("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn hugepages(fs: &HostFs, t: &Target) -> Check {
    let nr = fs.read("/proc/sys/vm/nr_hugepages");
    let free = meminfo(fs, "HugePages_Free");
    let size_kb = meminfo(fs, "Hugepagesize");
    let shmem = fs
        .read("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .and_then(|s| bracketed(&s).map(str::to_string));
    let mounted = fs.read("/proc/mounts").is_some_and(|m| {
        m.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
    });
    if nr.is_none() && free.is_none() && shmem.is_none() {
        return check("hugepages", Status::NotAvailable, "unknown")
            .why("no nr_hugepages, HugePages_Free or shmem_enabled (kernel without huge pages)");
    }
    let free_bytes = free.unwrap_or(0) * size_kb.unwrap_or(0) * 1024;
    let found = format!(
        "nr_hugepages {}, {} free of {} kB, hugetlbfs {}, tmpfs THP {}",
        nr.as_deref().unwrap_or("?"),
        free.map_or("?".into(), |f| f.to_string()),
        size_kb.map_or("?".into(), |s| s.to_string()),
        if mounted { "mounted" } else { "not mounted" },
        shmem.as_deref().unwrap_or("?")
    );
    let why = format!(
        "the rings ({}) on huge pages need far fewer TLB entries: fewer misses on every record",
        bytes(t.ring_bytes)
    );
    if t.hugepages == Want::Off {
        return check("hugepages", Status::Ok, found).why(format!(
            "{} does not ask for huge pages ([host] hugepages)",
            t.source
        ));
    }
    let reserved = mounted && free_bytes >= t.ring_bytes;
    let thp_tmpfs = shmem
        .as_deref()
        .is_some_and(|s| matches!(s, "advise" | "within_size" | "always" | "force"));
    if reserved || thp_tmpfs {
        return check("hugepages", Status::Ok, found).why(why);
    }
    let pages = size_kb
        .filter(|s| *s > 0)
        .map_or(0, |s| t.ring_bytes.div_ceil(s * 1024));
    check("hugepages", Status::Change, found)
        .why(why)
        .fix(format!(
            "reserve them: sysctl vm.nr_hugepages={pages} (more if other rings share it), mount \
         hugetlbfs (mount -t hugetlbfs none /dev/hugepages) and put the rings there; or let tmpfs \
         use THP: echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled"
        ))
}

fn irqbalance(fs: &HostFs) -> Check {
    let procs = fs.list("/proc");
    if procs.is_empty() {
        return check("irqbalance", Status::NotAvailable, "unknown").why("/proc is missing");
    }
    let running = procs
        .iter()
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .any(|p| fs.read(&format!("/proc/{p}/comm")).as_deref() == Some("irqbalance"));
    if running {
        check("irqbalance", Status::Change, "running")
            .why("it moves interrupts every 10 s and may move them onto the pinned cores")
            .fix(
                "systemctl disable --now irqbalance and set IRQ affinity once \
                 (tuning/scripts/apply.sh), or ban the pinned cores: IRQBALANCE_BANNED_CPULIST in \
                 /etc/default/irqbalance",
            )
    } else {
        check("irqbalance", Status::Ok, "not running")
            .why("interrupt affinity stays where it is set")
    }
}

/// Interrupt lines of network devices in `/proc/interrupts`: (irq, name).
fn nic_interrupts(fs: &HostFs) -> Option<Vec<(u32, String)>> {
    let text = fs.read("/proc/interrupts")?;
    let nics: Vec<String> = fs
        .list("/sys/class/net")
        .into_iter()
        .filter(|n| fs.exists(&format!("/sys/class/net/{n}/device")))
        .collect();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let Some((irq, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(irq) = irq.parse::<u32>() else {
            continue;
        };
        let name = rest.split_whitespace().last().unwrap_or("").to_string();
        let is_nic = nics.iter().any(|n| name.contains(n.as_str()))
            || name.contains("-TxRx-")
            || name.starts_with("mlx")
            || (name.starts_with("virtio") && (name.contains("input") || name.contains("output")));
        if is_nic {
            out.push((irq, name));
        }
    }
    Some(out)
}

fn nic_irqs(fs: &HostFs, t: &Target) -> Check {
    let Some(irqs) = nic_interrupts(fs) else {
        return check("nic_irqs", Status::NotAvailable, "unknown")
            .why("/proc/interrupts is missing");
    };
    if irqs.is_empty() {
        return check("nic_irqs", Status::Ok, "no NIC interrupt lines")
            .why("nothing from a network device interrupts the pinned cores");
    }
    let hot = t.cores();
    let mut on_hot = Vec::new();
    let mut unreadable = 0;
    for (irq, name) in &irqs {
        match fs.read(&format!("/proc/irq/{irq}/smp_affinity_list")) {
            Some(list) => {
                let aff = parse_cpu_list(&list);
                if !aff.is_disjoint(&hot) {
                    on_hot.push(format!("{irq} ({name}) -> {}", cpu_list(&aff)));
                }
            }
            None => unreadable += 1,
        }
    }
    if unreadable == irqs.len() {
        return check(
            "nic_irqs",
            Status::NotAvailable,
            format!("{} NIC IRQs", irqs.len()),
        )
        .why("their smp_affinity_list files are missing");
    }
    if on_hot.is_empty() {
        return check(
            "nic_irqs",
            Status::Ok,
            format!("{} NIC IRQs, none on the pinned cores", irqs.len()),
        )
        .why("an interrupt on a pinned core stops the hot thread for its handler");
    }
    let housekeeping = online(fs)
        .map(|o| cpu_list(&o.difference(&hot).copied().collect()))
        .unwrap_or_else(|| "0".into());
    check("nic_irqs", Status::Change, on_hot.join("; "))
        .why("an interrupt on a pinned core stops the hot thread for its handler")
        .fix(format!(
            "echo {housekeeping} > /proc/irq/<n>/smp_affinity_list for each (tuning/scripts/apply.sh \
             does it), with irqbalance stopped"
        ))
}

fn tsc(fs: &HostFs) -> Check {
    let Some(info) = fs.read("/proc/cpuinfo") else {
        return check("tsc", Status::NotAvailable, "unknown").why("/proc/cpuinfo is missing");
    };
    let flags: BTreeSet<&str> = info
        .lines()
        .find(|l| l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, f)| f.split_whitespace().collect())
        .unwrap_or_default();
    let missing: Vec<&str> = ["constant_tsc", "nonstop_tsc"]
        .into_iter()
        .filter(|f| !flags.contains(f))
        .collect();
    if flags.is_empty() {
        return check("tsc", Status::NotAvailable, "no flags line")
            .why("/proc/cpuinfo has no flags (not an x86 host)");
    }
    if missing.is_empty() {
        return check("tsc", Status::Ok, "constant_tsc nonstop_tsc").why(
            "an invariant TSC ticks at one rate on every core: stamps from different cores and \
             processes compare",
        );
    }
    check(
        "tsc",
        Status::Change,
        format!("missing {}", missing.join(" ")),
    )
    .why(
        "without an invariant TSC, raw stamps taken on different cores or across C-states do \
             not compare, and the latency figures are wrong",
    )
    .fix("run on a CPU (or VM type) with an invariant TSC; nothing in software replaces it")
}

fn clocksource(fs: &HostFs) -> Check {
    let base = "/sys/devices/system/clocksource/clocksource0";
    let Some(cur) = fs.read(&format!("{base}/current_clocksource")) else {
        return check("clocksource", Status::NotAvailable, "unknown")
            .why("current_clocksource is missing");
    };
    let available = fs
        .read(&format!("{base}/available_clocksource"))
        .unwrap_or_default();
    if cur == "tsc" {
        return check("clocksource", Status::Ok, cur)
            .why("clock_gettime reads the TSC in user space (no syscall)");
    }
    check(
        "clocksource",
        Status::Change,
        format!(
            "{cur} (available: {})",
            if available.is_empty() {
                "?"
            } else {
                &available
            }
        ),
    )
    .why(format!(
        "{cur} makes wall-clock reads (heartbeats, the monitor) slower, and on some hosts a \
         syscall"
    ))
    .fix(if available.split_whitespace().any(|c| c == "tsc") {
        "echo tsc > /sys/devices/system/clocksource/clocksource0/current_clocksource, or \
         clocksource=tsc tsc=reliable on the kernel command line"
            .to_string()
    } else {
        "the kernel does not offer tsc here (it judged it unstable): a host with an invariant TSC"
            .to_string()
    })
}

fn perf_paranoid(fs: &HostFs, status: &str) -> Check {
    let Some(v) = fs.read("/proc/sys/kernel/perf_event_paranoid") else {
        return check("perf_event_paranoid", Status::NotAvailable, "unknown")
            .why("/proc/sys/kernel/perf_event_paranoid is missing (kernel without perf events)");
    };
    let level: i64 = v.parse().unwrap_or(i64::MAX);
    let privileged = has_capability(status, CAP_SYS_ADMIN) || has_capability(status, CAP_PERFMON);
    let why = "perf stat / perf record of the running engine need level 1 or less (or CAP_PERFMON)";
    if level <= 1 || privileged {
        return check("perf_event_paranoid", Status::Ok, v).why(if privileged && level > 1 {
            "this process is privileged (CAP_PERFMON or CAP_SYS_ADMIN)"
        } else {
            why
        });
    }
    check("perf_event_paranoid", Status::Change, v)
        .why(why)
        .fix("sysctl kernel.perf_event_paranoid=1")
}

/// The soft limit of a `/proc/<pid>/limits` line: `Ok(None)` unlimited.
fn proc_limit(fs: &HostFs, name: &str) -> Option<Option<u64>> {
    let text = fs.read("/proc/self/limits")?;
    let line = text.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(None)
    } else {
        soft.parse().ok().map(Some)
    }
}

fn memlock(fs: &HostFs, t: &Target, status: &str) -> Check {
    let Some(limit) = proc_limit(fs, "Max locked memory") else {
        return check("memlock", Status::NotAvailable, "unknown")
            .why("/proc/self/limits has no Max locked memory line");
    };
    let cap = has_capability(status, CAP_IPC_LOCK);
    let found = format!(
        "RLIMIT_MEMLOCK {}{}",
        limit.map_or("unlimited".into(), bytes),
        if cap { ", CAP_IPC_LOCK" } else { "" }
    );
    if t.mlockall == Want::Off {
        return check("memlock", Status::Ok, found).why(format!(
            "{} does not lock memory ([host] mlockall)",
            t.source
        ));
    }
    if limit.is_none() || cap {
        return check("memlock", Status::Ok, found).why(format!(
            "mlockall can lock the whole engine: rings ({}) and heap",
            bytes(t.ring_bytes)
        ));
    }
    check("memlock", Status::Change, found)
        .why(format!(
            "mlockall(MCL_FUTURE) locks every later allocation too: the rings alone are {}, and \
             under a finite limit the engine refuses to lock rather than fail mid-run (this is \
             the limit of the shell that ran tune check)",
            bytes(t.ring_bytes)
        ))
        .fix("ulimit -l unlimited (or LimitMEMLOCK=infinity in the systemd unit, memlock in /etc/security/limits.conf)")
}

fn realtime(fs: &HostFs, t: &Target, status: &str) -> Check {
    let Some(rtprio) = proc_limit(fs, "Max realtime priority") else {
        return check("realtime", Status::NotAvailable, "unknown")
            .why("/proc/self/limits has no Max realtime priority line");
    };
    let cap = has_capability(status, CAP_SYS_NICE);
    let throttle = fs.read("/proc/sys/kernel/sched_rt_runtime_us");
    let found = format!(
        "RLIMIT_RTPRIO {}{}{}",
        rtprio.map_or("unlimited".into(), |v| v.to_string()),
        if cap { ", CAP_SYS_NICE" } else { "" },
        throttle
            .as_deref()
            .map(|v| format!(", sched_rt_runtime_us {v}"))
            .unwrap_or_default()
    );
    if t.realtime == Want::Off {
        return check("realtime", Status::Ok, found).why(format!(
            "{} does not ask for SCHED_FIFO ([host] realtime)",
            t.source
        ));
    }
    let prio = u64::try_from(t.realtime_priority).unwrap_or(0);
    if cap || rtprio.is_none_or(|r| r >= prio) {
        return check("realtime", Status::Ok, found).why(format!(
            "SCHED_FIFO priority {prio} is permitted; keep sched_rt_runtime_us at its default so \
             a runaway spinning thread cannot lock up its core for good"
        ));
    }
    check("realtime", Status::Change, found)
        .why(format!(
            "SCHED_FIFO priority {prio} needs CAP_SYS_NICE or RLIMIT_RTPRIO >= {prio} (this is the \
             limit of the shell that ran tune check)"
        ))
        .fix(format!(
            "LimitRTPRIO={prio} in the systemd unit (or rtprio in /etc/security/limits.conf), or \
             AmbientCapabilities=CAP_SYS_NICE"
        ))
}

/// The human table.
pub fn render(ins: &Inspection) -> String {
    let mut out = String::new();
    let hot = ins.target.cores();
    let _ = writeln!(
        out,
        "tickpipe tune check for {}: spinning threads on {}; rings {}; host settings mlockall {}, \
         hugepages {}, realtime {}",
        ins.target.source,
        if hot.is_empty() {
            "no pinned core".to_string()
        } else {
            ins.target.describe(&hot)
        },
        bytes(ins.target.ring_bytes),
        ins.target.mlockall,
        ins.target.hugepages,
        ins.target.realtime
    );
    let _ = writeln!(out, "{:<20} {:<7} FOUND", "CHECK", "STATUS");
    for c in &ins.checks {
        let _ = writeln!(out, "{:<20} {:<7} {}", c.name, c.status.word(), c.found);
        if c.status != Status::Ok {
            if !c.why.is_empty() {
                let _ = writeln!(out, "{:<28} why: {}", "", c.why);
            }
            if !c.fix.is_empty() {
                let _ = writeln!(out, "{:<28} fix: {}", "", c.fix);
            }
        }
    }
    if ins.tuned {
        let _ = writeln!(out, "tuned for {}", ins.target.source);
    } else {
        let _ = writeln!(
            out,
            "not tuned for {}: {} blocking ({})",
            ins.target.source,
            ins.blocking.len(),
            ins.blocking.join(", ")
        );
    }
    out
}

/// What to check the host for.
#[derive(Debug, Clone)]
pub enum Selection {
    /// A profile.
    Profile(PathBuf),
    /// A profile spinning on this many cores.
    Cores(usize),
    /// Neither given: spinning on every online CPU but the first.
    Default,
}

/// Errors that make `tune check` exit 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuneError {
    /// The profile cannot be read or is invalid.
    #[error("{0}")]
    Profile(String),
    /// `--cores 0`.
    #[error("--cores must be at least 1")]
    NoCores,
    /// More cores than any host has.
    #[error("--cores {0} is more than any host has")]
    TooManyCores(usize),
}

/// Builds the target for a selection.
///
/// # Errors
/// An unreadable or invalid profile, or `--cores 0`.
pub fn target(fs: &HostFs, sel: &Selection) -> Result<Target, TuneError> {
    match sel {
        Selection::Profile(p) => {
            let cfg = EngineConfig::load_for_another_host(p)
                .map_err(|e| TuneError::Profile(e.to_string()))?;
            Ok(Target::from_config(&cfg, &p.display().to_string()))
        }
        Selection::Cores(0) => Err(TuneError::NoCores),
        Selection::Cores(n) if *n > MAX_CPUS => Err(TuneError::TooManyCores(*n)),
        Selection::Cores(n) => Ok(Target::from_cores(*n, fs)),
        Selection::Default => {
            let n = online(fs).map_or(1, |o| o.len().saturating_sub(1).max(1));
            let mut t = Target::from_cores(n, fs);
            t.source = format!("the default ({n} spinning core(s); give --profile or --cores)");
            Ok(t)
        }
    }
}

/// `tickpipe tune check`: prints the table (or JSON) and returns the exit status: 0 tuned,
/// 1 not tuned, 2 bad arguments or profile.
pub fn check_command(
    root: &Path,
    sel: &Selection,
    json: bool,
    out: &mut impl std::io::Write,
) -> u8 {
    let fs = HostFs::new(root);
    let target = match target(&fs, sel) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tickpipe tune check: error: {e}");
            return 2;
        }
    };
    let ins = inspect(&fs, &target);
    let text = if json {
        match serde_json::to_string_pretty(&ins) {
            Ok(s) => s + "\n",
            Err(e) => {
                eprintln!("tickpipe tune check: error: {e}");
                return 2;
            }
        }
    } else {
        render(&ins)
    };
    if out.write_all(text.as_bytes()).is_err() {
        return 2;
    }
    ins.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake host: files under a temp dir, by absolute host path.
    struct Fake(tempfile::TempDir);

    impl Fake {
        fn new() -> Self {
            Fake(tempfile::tempdir().unwrap())
        }
        fn put(&self, abs: &str, text: &str) -> &Self {
            let p = self.0.path().join(abs.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, format!("{text}\n")).unwrap();
            self
        }
        fn remove(&self, abs: &str) {
            let p = self.0.path().join(abs.trim_start_matches('/'));
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
        }
        fn fs(&self) -> HostFs {
            HostFs::new(self.0.path())
        }
    }

    const LIMITS_OPEN: &str = "Limit                     Soft Limit           Hard Limit           Units\n\
        Max locked memory         unlimited            unlimited            bytes\n\
        Max realtime priority     99                   99";
    const LIMITS_TIGHT: &str = "Limit                     Soft Limit           Hard Limit           Units\n\
        Max locked memory         65536                65536                bytes\n\
        Max realtime priority     0                    0";

    /// Eight CPUs, 1-7 isolated, every knob set for low latency.
    fn tuned() -> Fake {
        let f = Fake::new();
        f.put("/sys/devices/system/cpu/online", "0-7")
            .put("/sys/devices/system/node/node0/cpulist", "0-7")
            .put(
                "/proc/cmdline",
                "BOOT_IMAGE=/vmlinuz isolcpus=domain,managed_irq,1-7 nohz_full=1-7 rcu_nocbs=1-7 \
                 intel_idle.max_cstate=1 quiet",
            )
            .put("/sys/devices/system/cpu/intel_pstate/no_turbo", "1")
            .put("/sys/devices/system/cpu/cpuidle/current_driver", "intel_idle")
            .put(
                "/sys/kernel/mm/transparent_hugepage/enabled",
                "always [madvise] never",
            )
            .put(
                "/sys/kernel/mm/transparent_hugepage/defrag",
                "always defer defer+madvise [madvise] never",
            )
            .put(
                "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
                "always within_size [advise] never deny force",
            )
            .put("/proc/sys/vm/nr_hugepages", "512")
            .put(
                "/proc/meminfo",
                "MemTotal: 1000 kB\nHugePages_Total: 512\nHugePages_Free: 512\nHugepagesize: 2048 kB",
            )
            .put(
                "/proc/mounts",
                "hugetlbfs /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0",
            )
            .put("/proc/1/comm", "systemd")
            .put(
                "/proc/interrupts",
                "           CPU0       CPU1\n 40:  10  0  PCI-MSI 1-edge  eth0-TxRx-0\n 41:  5  0  IO-APIC 4-edge  ttyS0",
            )
            .put("/proc/irq/40/smp_affinity_list", "0")
            .put("/sys/class/net/eth0/device/numa_node", "0")
            .put("/proc/cpuinfo", "processor : 0\nflags : fpu tsc constant_tsc nonstop_tsc rdtscp")
            .put(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                "tsc",
            )
            .put("/proc/sys/kernel/perf_event_paranoid", "1")
            .put("/proc/self/limits", LIMITS_OPEN)
            .put("/proc/self/status", "Name: tickpipe\nCapEff: 0000000000000000");
        for c in 0..8 {
            f.put(
                &format!("/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list"),
                &c.to_string(),
            )
            .put(
                &format!("/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"),
                "performance",
            )
            .put(
                &format!("/sys/devices/system/cpu/cpu{c}/cpuidle/state0/latency"),
                "0",
            )
            .put(
                &format!("/sys/devices/system/cpu/cpu{c}/cpuidle/state1/latency"),
                "2",
            );
        }
        f
    }

    /// The same host with every knob left where a distribution leaves it.
    fn untuned() -> Fake {
        let f = tuned();
        f.put("/proc/cmdline", "BOOT_IMAGE=/vmlinuz quiet")
            .put("/sys/devices/system/node/node0/cpulist", "0-3")
            .put("/sys/devices/system/node/node1/cpulist", "4-7")
            .put("/sys/class/net/eth0/device/numa_node", "1")
            .put(
                "/sys/devices/system/cpu/cpu1/topology/thread_siblings_list",
                "1,5",
            )
            .put(
                "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor",
                "powersave",
            )
            .put("/sys/devices/system/cpu/intel_pstate/no_turbo", "0")
            .put("/sys/devices/system/cpu/cpu1/cpuidle/state2/latency", "100")
            .put("/sys/devices/system/cpu/cpu1/cpuidle/state2/name", "C6")
            .put("/sys/devices/system/cpu/cpu1/cpuidle/state2/disable", "0")
            .put(
                "/sys/kernel/mm/transparent_hugepage/enabled",
                "[always] madvise never",
            )
            .put(
                "/sys/kernel/mm/transparent_hugepage/shmem_enabled",
                "always within_size advise [never] deny force",
            )
            .put("/proc/sys/vm/nr_hugepages", "0")
            .put("/proc/meminfo", "HugePages_Free: 0\nHugepagesize: 2048 kB")
            .put("/proc/mounts", "tmpfs /dev/shm tmpfs rw 0 0")
            .put("/proc/977/comm", "irqbalance")
            .put("/proc/irq/40/smp_affinity_list", "0-7")
            .put("/proc/cpuinfo", "flags : fpu tsc constant_tsc")
            .put(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
                "kvm-clock",
            )
            .put(
                "/sys/devices/system/clocksource/clocksource0/available_clocksource",
                "kvm-clock tsc hpet",
            )
            .put("/proc/sys/kernel/perf_event_paranoid", "2")
            .put("/proc/self/limits", LIMITS_TIGHT);
        f
    }

    fn status_of(ins: &Inspection, name: &str) -> Status {
        ins.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name}"))
            .status
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("domain,managed_irq,2-4,7"),
            BTreeSet::from([2, 3, 4, 7])
        );
        assert_eq!(parse_cpu_list("garbage,5-3,99999999"), BTreeSet::new());
        assert_eq!(cpu_list(&BTreeSet::from([0, 1, 2, 5, 7, 8])), "0-2,5,7-8");
        assert_eq!(
            param("a=1 isolcpus=2-3 b", "isolcpus").as_deref(),
            Some("2-3")
        );
        assert_eq!(param("a=1", "isolcpus"), None);
    }

    #[test]
    fn tuned_host_passes_every_check() {
        let f = tuned();
        let t = Target::from_cores(4, &f.fs());
        assert_eq!(t.cores(), BTreeSet::from([1, 2, 3, 4]));
        let ins = inspect(&f.fs(), &t);
        for c in &ins.checks {
            assert_eq!(c.status, Status::Ok, "{c:?}");
        }
        assert!(ins.tuned && ins.blocking.is_empty());
        assert_eq!(ins.exit_code(), 0);
        let table = render(&ins);
        assert!(table.contains("tuned for --cores 4"), "{table}");
    }

    #[test]
    fn untuned_host_lists_every_change() {
        let f = untuned();
        let ins = inspect(&f.fs(), &Target::from_cores(4, &f.fs()));
        for name in [
            "smt",
            "numa",
            "isolcpus",
            "nohz_full",
            "rcu_nocbs",
            "governor",
            "turbo",
            "cstates",
            "thp",
            "hugepages",
            "irqbalance",
            "nic_irqs",
            "tsc",
            "clocksource",
            "perf_event_paranoid",
            "memlock",
            "realtime",
        ] {
            assert_eq!(status_of(&ins, name), Status::Change, "{name}");
            assert!(ins.blocking.contains(&name), "{name}");
        }
        assert_eq!(status_of(&ins, "cpus"), Status::Ok);
        assert_eq!(ins.exit_code(), 1);
        let c = ins.checks.iter().find(|c| c.name == "isolcpus").unwrap();
        assert_eq!(c.found, "not set");
        assert!(c.fix.contains("isolcpus=1-4"), "{}", c.fix);
        let c = ins.checks.iter().find(|c| c.name == "nic_irqs").unwrap();
        assert!(c.found.contains("40 (eth0-TxRx-0) -> 0-7"), "{}", c.found);
        assert!(c.fix.contains("echo 0,5-7 >"), "{}", c.fix);
        let table = render(&ins);
        assert!(table.contains("not tuned for --cores 4"), "{table}");
        assert!(table.contains("fix: "), "{table}");
        // Capabilities lift the limits.
        f.put("/proc/self/status", "CapEff: 0000000000804000");
        let ins = inspect(&f.fs(), &Target::from_cores(4, &f.fs()));
        assert_eq!(status_of(&ins, "memlock"), Status::Ok);
        assert_eq!(status_of(&ins, "realtime"), Status::Ok);
    }

    #[test]
    fn profile_settings_and_cores_decide() {
        let f = tuned();
        let fs = f.fs();
        // Asking for nothing: tight limits do not matter.
        f.put("/proc/self/limits", LIMITS_TIGHT);
        let mut t = Target::from_cores(2, &fs);
        t.mlockall = Want::Off;
        t.realtime = Want::Off;
        let ins = inspect(&fs, &t);
        assert_eq!(status_of(&ins, "memlock"), Status::Ok);
        assert_eq!(status_of(&ins, "realtime"), Status::Ok);
        // A realtime priority above RLIMIT_RTPRIO is refused.
        f.put(
            "/proc/self/limits",
            "Max locked memory         unlimited            unlimited            bytes\n\
             Max realtime priority     10                   10",
        );
        t.realtime = Want::On;
        t.realtime_priority = 50;
        assert_eq!(status_of(&inspect(&fs, &t), "realtime"), Status::Change);
        t.realtime_priority = 10;
        assert_eq!(status_of(&inspect(&fs, &t), "realtime"), Status::Ok);
        // Cores the host lacks, and a host with no core left over.
        let ins = inspect(&fs, &Target::from_cores(9, &fs));
        let c = ins.checks.iter().find(|c| c.name == "cpus").unwrap();
        assert_eq!(c.status, Status::Change);
        assert!(c.why.contains("8 (") && c.why.contains("9 ("), "{}", c.why);
        let ins = inspect(&fs, &Target::from_cores(7, &fs));
        assert_eq!(status_of(&ins, "cpus"), Status::Ok);
        // A pinned core outside isolcpus.
        f.put("/proc/self/limits", LIMITS_OPEN);
        f.put(
            "/proc/cmdline",
            "isolcpus=2-7 nohz_full=1-7 rcu_nocbs=1-7 intel_idle.max_cstate=1",
        );
        let ins = inspect(&fs, &Target::from_cores(2, &fs));
        let c = ins.checks.iter().find(|c| c.name == "isolcpus").unwrap();
        assert_eq!(c.status, Status::Change);
        assert!(c.why.contains("1 (spinning thread 1)"), "{}", c.why);
        assert_eq!(ins.blocking, ["isolcpus"]);
    }

    #[test]
    fn profiles_select_their_spinning_cores() {
        let cfg = EngineConfig::load_for_another_host(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tuning/profiles/dedicated-8.toml"),
        )
        .unwrap();
        let t = Target::from_config(&cfg, "dedicated-8");
        // The forecast lane backs off and the reporter sleeps: only spinning threads count.
        assert_eq!(t.cores(), BTreeSet::from([2, 3, 4, 5, 6]));
        assert_eq!(t.hot_cores[&3], ["ingest"]);
        assert_eq!(t.hot_cores[&2], ["feeder"]);
        assert_eq!((t.mlockall, t.realtime), (Want::Required, Want::On));
        let f = tuned();
        assert!(inspect(&f.fs(), &t).tuned);
        let sel = Selection::Profile(PathBuf::from("/no/such/profile.toml"));
        assert!(matches!(target(&f.fs(), &sel), Err(TuneError::Profile(_))));
        assert!(matches!(
            target(&f.fs(), &Selection::Cores(0)),
            Err(TuneError::NoCores)
        ));
        let d = target(&f.fs(), &Selection::Default).unwrap();
        assert_eq!(d.cores(), (1..8).collect());
    }

    #[test]
    fn missing_files_are_not_available_and_never_panic() {
        let f = Fake::new();
        let ins = inspect(&f.fs(), &Target::from_cores(2, &f.fs()));
        for c in &ins.checks {
            assert_eq!(c.status, Status::NotAvailable, "{c:?}");
            assert!(!c.why.is_empty(), "{c:?}");
        }
        // Without online CPUs or the command line no verdict is possible.
        assert_eq!(ins.blocking, ESSENTIAL);
        assert_eq!(ins.exit_code(), 1);
        // A VM: no cpufreq, no turbo control, no cpuidle; the rest tuned. Not blocking.
        let f = tuned();
        for c in 0..8 {
            f.remove(&format!("/sys/devices/system/cpu/cpu{c}/cpufreq"));
        }
        f.remove("/sys/devices/system/cpu/intel_pstate");
        let ins = inspect(&f.fs(), &Target::from_cores(2, &f.fs()));
        assert_eq!(status_of(&ins, "governor"), Status::NotAvailable);
        assert_eq!(status_of(&ins, "turbo"), Status::NotAvailable);
        assert_eq!(ins.exit_code(), 0);
        // Garbage in every file: verdicts, no panic.
        let g = tuned();
        for p in [
            "/proc/cmdline",
            "/proc/interrupts",
            "/proc/meminfo",
            "/proc/self/limits",
            "/proc/cpuinfo",
            "/sys/devices/system/cpu/online",
            "/proc/sys/kernel/perf_event_paranoid",
        ] {
            g.put(p, "\u{0}:-: ]] [ 99999999999999999999999 -1-");
        }
        let ins = inspect(&g.fs(), &Target::from_cores(2, &g.fs()));
        assert_eq!(ins.exit_code(), 1);
    }

    #[test]
    fn command_exit_codes_and_json() {
        let f = tuned();
        let mut out = Vec::new();
        assert_eq!(
            check_command(f.0.path(), &Selection::Cores(3), true, &mut out),
            0
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["tuned"], true);
        assert_eq!(v["checks"].as_array().unwrap().len(), 18);
        assert_eq!(v["checks"][0]["status"], "OK");
        let u = untuned();
        let mut out = Vec::new();
        assert_eq!(
            check_command(u.0.path(), &Selection::Cores(3), true, &mut out),
            1
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(
            v["blocking"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b == "isolcpus")
        );
        let mut out = Vec::new();
        let bad = Selection::Profile(f.0.path().join("missing.toml"));
        assert_eq!(check_command(f.0.path(), &bad, false, &mut out), 2);
        assert!(out.is_empty());
    }
}
