//! Host memory and scheduling settings (the `[host]` table of a profile) and what start-up made
//! of each: applied, not permitted (with the kernel's reason), not available, or off.
//!
//! ```toml
//! [host]
//! mlockall = "on"            # off | on | required: mlockall(MCL_CURRENT | MCL_FUTURE)
//! prefault = "on"            # touch every page of the rings before the first event
//! hugepages = "on"           # rings on huge pages (hugetlbfs path, or THP advice on tmpfs)
//! realtime = "off"           # SCHED_FIFO for pinned stage threads
//! realtime_priority = 50     # 1..=99
//! ```
//!
//! `on` tries and warns when the host refuses; `required` makes a refusal a start-up error;
//! `true` and `false` are accepted for `on` and `off`. Nothing here fails silently: every
//! setting has a [`SettingOutcome`] that `run` and `profile` print at start.
//!
//! The system calls live in `tickpipe_shm::host` (the one crate with `unsafe`); this module
//! decides when to make them and how to report them.

use std::fmt;
use std::path::Path;

use tickpipe_shm::host;
use tickpipe_shm::mapped::{MappedRegion, PageBacking};

use crate::PipelineError;

/// How much a setting is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Want {
    /// Not asked for.
    #[default]
    Off,
    /// Try; a refusal is a warning.
    On,
    /// Try; a refusal fails start-up.
    Required,
}

impl std::str::FromStr for Want {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "false" => Ok(Want::Off),
            "on" | "true" => Ok(Want::On),
            "required" => Ok(Want::Required),
            _ => Err(format!("unknown setting {s:?} (off, on, required)")),
        }
    }
}

impl fmt::Display for Want {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Want::Off => "off",
            Want::On => "on",
            Want::Required => "required",
        })
    }
}

/// The `[host]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostSettings {
    /// Lock all current and future memory.
    pub mlockall: Want,
    /// Fault in every page of the rings at start.
    pub prefault: Want,
    /// Back the rings with huge pages.
    pub hugepages: Want,
    /// `SCHED_FIFO` for pinned stage threads.
    pub realtime: Want,
    /// The `SCHED_FIFO` priority (1..=99).
    pub realtime_priority: i32,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            mlockall: Want::Off,
            prefault: Want::Off,
            hugepages: Want::Off,
            realtime: Want::Off,
            realtime_priority: 50,
        }
    }
}

/// What start-up made of a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In effect; what was done.
    Applied(String),
    /// The kernel or a limit refused it; why, and what would permit it.
    NotPermitted(String),
    /// This host cannot do it (a missing feature or file); why.
    Unavailable(String),
    /// Not asked for.
    Off,
}

/// One setting's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingOutcome {
    /// The setting (`mlockall`, `hugepages[signal ring]`, `realtime[ingest@3]`).
    pub setting: String,
    /// How much it was wanted.
    pub want: Want,
    /// What happened.
    pub outcome: Outcome,
}

impl SettingOutcome {
    fn new(setting: impl Into<String>, want: Want, outcome: Outcome) -> Self {
        Self {
            setting: setting.into(),
            want,
            outcome: if want == Want::Off {
                Outcome::Off
            } else {
                outcome
            },
        }
    }

    /// Wanted and not in effect.
    pub fn failed(&self) -> bool {
        self.want != Want::Off && !matches!(self.outcome, Outcome::Applied(_))
    }

    /// Required and not in effect: start-up must fail.
    pub fn blocks(&self) -> bool {
        self.want == Want::Required && self.failed()
    }
}

impl fmt::Display for SettingOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, why) = match &self.outcome {
            Outcome::Applied(d) => ("applied", d.as_str()),
            Outcome::NotPermitted(d) => ("NOT PERMITTED", d.as_str()),
            Outcome::Unavailable(d) => ("not available", d.as_str()),
            Outcome::Off => ("off", ""),
        };
        write!(f, "{}: {word}", self.setting)?;
        if !why.is_empty() {
            write!(f, ": {why}")?;
        }
        if self.failed() {
            write!(
                f,
                " [{}]",
                if self.blocks() {
                    "required: start-up fails"
                } else {
                    "warning: running without it"
                }
            )?;
        }
        Ok(())
    }
}

/// Every setting's outcome, in the order they were applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostReport {
    /// The outcomes.
    pub outcomes: Vec<SettingOutcome>,
}

impl HostReport {
    /// Adds outcomes.
    pub fn extend(&mut self, more: impl IntoIterator<Item = SettingOutcome>) {
        self.outcomes.extend(more);
    }

    /// Fails when a required setting is not in effect.
    ///
    /// # Errors
    /// [`PipelineError::Host`] naming the first such setting and why.
    pub fn check_required(&self) -> Result<(), PipelineError> {
        match self.outcomes.iter().find(|o| o.blocks()) {
            Some(o) => Err(PipelineError::Host {
                setting: o.setting.clone(),
                why: match &o.outcome {
                    Outcome::NotPermitted(w) => format!("not permitted: {w}"),
                    Outcome::Unavailable(w) => format!("not available: {w}"),
                    Outcome::Applied(_) | Outcome::Off => "not applied".into(),
                },
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.outcomes {
            writeln!(f, "  {o}")?;
        }
        Ok(())
    }
}

/// Human-readable bytes (KiB, MiB, GiB).
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n.is_multiple_of(1 << 30) => format!("{} GiB", n >> 30),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

/// Whether the process holds capability `bit` (`CAP_IPC_LOCK` = 14, `CAP_SYS_NICE` = 23),
/// from the `CapEff` line of a `/proc/<pid>/status` text.
pub fn has_capability(status: &str, bit: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| bit < 64 && caps & (1 << bit) != 0)
}

/// `CAP_IPC_LOCK`: lock memory past `RLIMIT_MEMLOCK`.
pub const CAP_IPC_LOCK: u32 = 14;
/// `CAP_SYS_NICE`: real-time scheduling past `RLIMIT_RTPRIO`.
pub const CAP_SYS_NICE: u32 = 23;

fn own_capability(bit: u32) -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| has_capability(&s, bit))
}

/// `mlockall(MCL_CURRENT | MCL_FUTURE)` when wanted.
///
/// With a finite `RLIMIT_MEMLOCK` and no `CAP_IPC_LOCK` it is not attempted: with
/// `MCL_FUTURE`, every allocation past the limit would fail later, mid-run, instead of now.
pub fn lock_memory(want: Want) -> SettingOutcome {
    const NAME: &str = "mlockall";
    if want == Want::Off {
        return SettingOutcome::new(NAME, want, Outcome::Off);
    }
    let cap = own_capability(CAP_IPC_LOCK);
    let limit = match host::memlock_limit() {
        Ok(l) => l.soft,
        Err(e) => {
            return SettingOutcome::new(
                NAME,
                want,
                Outcome::Unavailable(format!(
                    "cannot read RLIMIT_MEMLOCK: {}",
                    host::errno_name(&e)
                )),
            );
        }
    };
    if let (Some(limit), false) = (limit, cap) {
        return SettingOutcome::new(
            NAME,
            want,
            Outcome::NotPermitted(format!(
                "RLIMIT_MEMLOCK is {} and the process lacks CAP_IPC_LOCK: with MCL_FUTURE every \
                 allocation past the limit would fail mid-run (raise it: `ulimit -l unlimited`, \
                 or LimitMEMLOCK=infinity in the systemd unit)",
                bytes(limit)
            )),
        );
    }
    let why = if cap {
        "CAP_IPC_LOCK"
    } else {
        "RLIMIT_MEMLOCK unlimited"
    };
    let outcome = match host::lock_all_memory() {
        Ok(()) => Outcome::Applied(format!("MCL_CURRENT | MCL_FUTURE ({why})")),
        Err(e) => Outcome::NotPermitted(format!("mlockall: {}", host::errno_name(&e))),
    };
    SettingOutcome::new(NAME, want, outcome)
}

/// Touches every page of each named ring when wanted.
pub fn prefault(want: Want, rings: &[(&str, &MappedRegion)]) -> SettingOutcome {
    if want == Want::Off {
        return SettingOutcome::new("prefault", want, Outcome::Off);
    }
    let mut pages = 0;
    let mut bytes_total = 0u64;
    for (_, r) in rings {
        pages += r.prefault();
        bytes_total += r.len_bytes() as u64;
    }
    let names: Vec<&str> = rings.iter().map(|(n, _)| *n).collect();
    SettingOutcome::new(
        "prefault",
        want,
        Outcome::Applied(format!(
            "{pages} pages ({}) of {} touched",
            bytes(bytes_total),
            names.join(" and ")
        )),
    )
}

/// The kernel's transparent-huge-page policy for tmpfs (the bracketed word of
/// `shmem_enabled`), if the file exists.
pub fn shmem_thp_policy(sys_root: &Path) -> Option<String> {
    let text =
        std::fs::read_to_string(sys_root.join("kernel/mm/transparent_hugepage/shmem_enabled"))
            .ok()?;
    bracketed(&text).map(str::to_string)
}

/// The selected word of a sysfs choice list (`always [madvise] never` gives `madvise`).
pub fn bracketed(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(&text[start..end])
}

/// What a ring's page backing means for the `hugepages` setting. `shmem_policy` is
/// [`shmem_thp_policy`]'s answer: advice on a tmpfs file has no effect under `never` or `deny`.
pub fn huge_pages_outcome(
    want: Want,
    ring: &str,
    backing: &PageBacking,
    shmem_policy: Option<&str>,
) -> SettingOutcome {
    let name = format!("hugepages[{ring}]");
    let outcome = match backing {
        PageBacking::HugeTlbFs { page_size } => {
            Outcome::Applied(format!("hugetlbfs, {} pages", bytes(*page_size)))
        }
        PageBacking::Base => Outcome::Off,
        PageBacking::Refused(why) => Outcome::NotPermitted(format!("madvise: {why}")),
        PageBacking::TransparentAdvised => match shmem_policy {
            None => Outcome::Unavailable(
                "no transparent huge pages for tmpfs on this kernel (shmem_enabled missing); \
                 put the ring on a hugetlbfs mount"
                    .into(),
            ),
            Some(p @ ("never" | "deny")) => Outcome::Unavailable(format!(
                "shmem_enabled is {p}: tmpfs never gets huge pages (set it to advise, or put the \
                 ring on a hugetlbfs mount)"
            )),
            Some(p) => Outcome::Applied(format!("MADV_HUGEPAGE on tmpfs (shmem_enabled {p})")),
        },
    };
    SettingOutcome::new(name, want, outcome)
}

/// Huge pages for a ring this process attached to (its writer faulted the pages in): a ring on
/// hugetlbfs has them; otherwise the mapping is advised, which lets khugepaged collapse it later.
pub fn huge_pages_attached(
    want: Want,
    ring: &str,
    path: &Path,
    region: &MappedRegion,
    shmem_policy: Option<&str>,
) -> SettingOutcome {
    if want == Want::Off {
        return SettingOutcome::new(format!("hugepages[{ring}]"), want, Outcome::Off);
    }
    let backing = match host::hugetlbfs_page_size(path) {
        Ok(Some(page_size)) if page_size > 0 => PageBacking::HugeTlbFs { page_size },
        _ => match region.advise_huge_pages() {
            Ok(()) => PageBacking::TransparentAdvised,
            Err(e) => PageBacking::Refused(host::errno_name(&e)),
        },
    };
    let mut o = huge_pages_outcome(want, ring, &backing, shmem_policy);
    if let (PageBacking::TransparentAdvised, Outcome::Applied(d)) = (&backing, &mut o.outcome) {
        d.push_str("; its writer faulted the pages in, so only khugepaged's collapse changes them");
    }
    o
}

/// Moves the calling (pinned stage) thread to `SCHED_FIFO` at `priority`.
pub fn realtime_current_thread(
    want: Want,
    thread: &str,
    core: usize,
    priority: i32,
) -> SettingOutcome {
    let name = format!("realtime[{thread}@core {core}]");
    if want == Want::Off {
        return SettingOutcome::new(name, want, Outcome::Off);
    }
    let outcome = match host::set_current_thread_fifo(priority) {
        Ok(()) => Outcome::Applied(format!("SCHED_FIFO priority {priority}")),
        Err(e) => Outcome::NotPermitted(format!(
            "SCHED_FIFO priority {priority}: {} (needs CAP_SYS_NICE or RLIMIT_RTPRIO >= \
             {priority}: LimitRTPRIO in the systemd unit, or `ulimit -r`)",
            host::errno_name(&e)
        )),
    };
    SettingOutcome::new(name, want, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wants_and_reports() {
        assert_eq!("required".parse::<Want>(), Ok(Want::Required));
        assert_eq!("true".parse::<Want>(), Ok(Want::On));
        assert!("maybe".parse::<Want>().is_err());
        let refused =
            SettingOutcome::new("mlockall", Want::On, Outcome::NotPermitted("EPERM".into()));
        assert!(refused.failed() && !refused.blocks());
        assert!(refused.to_string().contains("warning"), "{refused}");
        let mut report = HostReport::default();
        report.extend([refused.clone()]);
        report.check_required().unwrap();
        report.extend([SettingOutcome {
            want: Want::Required,
            ..refused
        }]);
        let e = report.check_required().unwrap_err().to_string();
        assert!(e.contains("mlockall") && e.contains("EPERM"), "{e}");
        // Off stays off whatever the outcome given.
        let off = SettingOutcome::new("prefault", Want::Off, Outcome::Applied("x".into()));
        assert_eq!(off.outcome, Outcome::Off);
        assert!(!off.failed());
    }

    #[test]
    fn capabilities_and_sysfs_words() {
        let status = "Name:\tx\nCapEff:\t0000000000004000\n";
        assert!(has_capability(status, CAP_IPC_LOCK));
        assert!(!has_capability(status, CAP_SYS_NICE));
        assert!(!has_capability("CapEff:\tzz\n", CAP_IPC_LOCK));
        assert_eq!(bracketed("always [madvise] never\n"), Some("madvise"));
        assert_eq!(bracketed("none"), None);
        assert_eq!(bytes(8 << 10), "8 KiB");
        assert_eq!(bytes(2 << 30), "2 GiB");
    }

    #[test]
    fn huge_page_verdicts() {
        let tp = PageBacking::TransparentAdvised;
        let o = huge_pages_outcome(Want::On, "signal ring", &tp, Some("never"));
        assert!(matches!(o.outcome, Outcome::Unavailable(_)), "{o}");
        let o = huge_pages_outcome(Want::On, "signal ring", &tp, Some("advise"));
        assert!(matches!(o.outcome, Outcome::Applied(_)), "{o}");
        let o = huge_pages_outcome(
            Want::Required,
            "signal ring",
            &PageBacking::HugeTlbFs { page_size: 2 << 20 },
            None,
        );
        assert!(!o.failed(), "{o}");
    }
}
