//! Process-wide memory and scheduling controls: locking memory, resource limits, real-time
//! scheduling of the calling thread, and what backs a file's pages.
//!
//! Each function is a safe wrapper over one libc call and returns the kernel's answer as an
//! [`io::Error`] (its errno), so a caller can report why a setting was refused instead of
//! failing silently. [`errno_name`] turns that answer into the symbolic name (`EPERM`) for
//! start-up reports.
#![allow(unsafe_code)] // mlockall, getrlimit, statfs, sysconf and pthread scheduling: plain libc calls.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `statfs` magic of hugetlbfs (linux/magic.h).
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// A resource limit: `None` is unlimited (`RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The soft limit, the one the kernel enforces.
    pub soft: Option<u64>,
    /// The hard limit, the most an unprivileged process may raise the soft limit to.
    pub hard: Option<u64>,
}

fn rlimit(resource: libc::__rlimit_resource_t) -> io::Result<Limit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call; getrlimit only writes it.
    let rc = unsafe { libc::getrlimit(resource, &mut lim) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let value = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    Ok(Limit {
        soft: value(lim.rlim_cur),
        hard: value(lim.rlim_max),
    })
}

/// `RLIMIT_MEMLOCK` in bytes: how much memory this process may lock without `CAP_IPC_LOCK`.
///
/// # Errors
/// The kernel's answer to `getrlimit`.
pub fn memlock_limit() -> io::Result<Limit> {
    rlimit(libc::RLIMIT_MEMLOCK)
}

/// `RLIMIT_RTPRIO`: the highest real-time priority this process may set without `CAP_SYS_NICE`.
///
/// # Errors
/// The kernel's answer to `getrlimit`.
pub fn rtprio_limit() -> io::Result<Limit> {
    rlimit(libc::RLIMIT_RTPRIO)
}

/// Locks every page the process maps now and will map later (`mlockall(MCL_CURRENT |
/// MCL_FUTURE)`): no page of the process is swapped out, and later mappings are faulted in
/// when they are made.
///
/// With a finite `RLIMIT_MEMLOCK` and no `CAP_IPC_LOCK`, every later mapping that would pass
/// the limit fails, so callers check [`memlock_limit`] first.
///
/// # Errors
/// `EPERM` (no privilege), `ENOMEM` (the limit is below what is mapped now), as the kernel says.
pub fn lock_all_memory() -> io::Result<()> {
    // SAFETY: mlockall takes flags only and touches no memory of ours.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Undoes [`lock_all_memory`] (`munlockall`).
///
/// # Errors
/// As the kernel says.
pub fn unlock_all_memory() -> io::Result<()> {
    // SAFETY: munlockall takes no arguments and touches no memory of ours.
    let rc = unsafe { libc::munlockall() };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The smallest and largest `SCHED_FIFO` priority.
///
/// # Errors
/// As the kernel says.
pub fn fifo_priority_range() -> io::Result<(i32, i32)> {
    // SAFETY: both calls take a policy constant and touch no memory of ours.
    let min = unsafe { libc::sched_get_priority_min(libc::SCHED_FIFO) };
    // SAFETY: as above.
    let max = unsafe { libc::sched_get_priority_max(libc::SCHED_FIFO) };
    if min < 0 || max < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((min, max))
}

/// A thread's scheduling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedPolicy {
    /// `SCHED_OTHER`, the default time-sharing policy.
    Other,
    /// `SCHED_FIFO` at this priority.
    Fifo(i32),
    /// `SCHED_RR` at this priority.
    RoundRobin(i32),
    /// Another policy (`SCHED_BATCH`, `SCHED_IDLE`, ...), by number.
    Unknown(i32),
}

fn this_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions and always succeeds.
    unsafe { libc::pthread_self() }
}

/// Moves the calling thread to `SCHED_FIFO` at `priority` (`pthread_setschedparam` on
/// `pthread_self`). Only this thread changes; threads it spawns later inherit the policy.
///
/// # Errors
/// `EPERM` without `CAP_SYS_NICE` and with `RLIMIT_RTPRIO` below `priority`; `EINVAL` for a
/// priority outside [`fifo_priority_range`].
pub fn set_current_thread_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `this_thread()` names the calling thread, which is alive during the call, and
    // `param` is a valid sched_param that outlives the call, which only reads it.
    let rc = unsafe { libc::pthread_setschedparam(this_thread(), libc::SCHED_FIFO, &param) };
    // pthread functions return the error number instead of setting errno.
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Returns the calling thread to `SCHED_OTHER` (nice 0).
///
/// # Errors
/// As the kernel says.
pub fn set_current_thread_other() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: as in `set_current_thread_fifo`.
    let rc = unsafe { libc::pthread_setschedparam(this_thread(), libc::SCHED_OTHER, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// The calling thread's scheduling policy and priority.
///
/// # Errors
/// As the kernel says.
pub fn current_thread_policy() -> io::Result<SchedPolicy> {
    let mut policy: libc::c_int = 0;
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `this_thread()` names the calling thread, which is alive during the call;
    // `policy` and `param` are valid, writable and outlive the call, which only writes them.
    let rc = unsafe { libc::pthread_getschedparam(this_thread(), &mut policy, &mut param) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(match policy {
        libc::SCHED_OTHER => SchedPolicy::Other,
        libc::SCHED_FIFO => SchedPolicy::Fifo(param.sched_priority),
        libc::SCHED_RR => SchedPolicy::RoundRobin(param.sched_priority),
        other => SchedPolicy::Unknown(other),
    })
}

/// The base page size in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf takes a name constant and touches no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(4096)
}

/// If `path` (a directory or file) lives on hugetlbfs, the huge page size of that mount in
/// bytes; `None` for any other file system.
///
/// # Errors
/// A path with a NUL byte, or `statfs` failing (the path does not exist, ...).
pub fn hugetlbfs_page_size(path: &Path) -> io::Result<Option<u64>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statfs is plain old data; all-zero bytes are a valid value of it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `st` is valid and writable; both outlive the call,
    // which reads the path and writes `st` only.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets.
    let magic = st.f_type as i64;
    Ok((magic == HUGETLBFS_MAGIC).then(|| u64::try_from(st.f_bsize).unwrap_or(0)))
}

/// The symbolic name of an OS error (`EPERM`, `ENOMEM`, ...), or `errno N` for others, so that
/// a start-up report says exactly what the kernel answered.
pub fn errno_name(e: &io::Error) -> String {
    let Some(n) = e.raw_os_error() else {
        return e.to_string();
    };
    let name = match n {
        libc::EPERM => "EPERM",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        libc::EINVAL => "EINVAL",
        libc::EACCES => "EACCES",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::ENOSYS => "ENOSYS",
        libc::EBUSY => "EBUSY",
        _ => return format!("errno {n} ({e})"),
    };
    format!(
        "{name} ({})",
        io::Error::from_raw_os_error(n).kind_message()
    )
}

/// The kernel's message for an error, without the "(os error N)" suffix.
trait KindMessage {
    fn kind_message(&self) -> String;
}

impl KindMessage for io::Error {
    fn kind_message(&self) -> String {
        let s = self.to_string();
        match s.find(" (os error") {
            Some(i) => s[..i].to_string(),
            None => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_readable() {
        let m = memlock_limit().unwrap();
        if let (Some(s), Some(h)) = (m.soft, m.hard) {
            assert!(s <= h);
        }
        rtprio_limit().unwrap();
        let (min, max) = fifo_priority_range().unwrap();
        assert!(1 <= min && min < max, "{min}..{max}");
        assert!(page_size().is_power_of_two());
    }

    #[test]
    fn errno_names() {
        let e = io::Error::from_raw_os_error(libc::EPERM);
        assert!(errno_name(&e).starts_with("EPERM ("), "{}", errno_name(&e));
        assert!(errno_name(&io::Error::from_raw_os_error(1234)).starts_with("errno 1234"));
    }

    #[test]
    fn fifo_outcome_matches_the_kernel() {
        // On a thread of its own: whatever happens, the test thread keeps its policy.
        let (set, after) = std::thread::spawn(|| {
            let set = set_current_thread_fifo(1);
            let after = current_thread_policy().unwrap();
            let _ = set_current_thread_other();
            (set, after)
        })
        .join()
        .unwrap();
        match set {
            Ok(()) => assert_eq!(after, SchedPolicy::Fifo(1)),
            Err(e) => {
                assert_eq!(after, SchedPolicy::Other);
                assert!(matches!(e.raw_os_error(), Some(libc::EPERM)), "{e}");
            }
        }
        // A priority outside the range is refused whatever the privileges.
        let e = std::thread::spawn(|| set_current_thread_fifo(1000))
            .join()
            .unwrap()
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn hugetlbfs_detection() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(hugetlbfs_page_size(dir.path()).unwrap(), None);
        assert!(hugetlbfs_page_size(&dir.path().join("missing")).is_err());
    }
}
