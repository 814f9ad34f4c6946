//! Instruments that prove a running stage stays off the allocator and out of the kernel.
//!
//! - [`CountingAlloc`] is a global allocator that counts the allocations made by threads that
//!   called [`arm`]. Arm a stage thread when it enters its duty loop and disarm it when it
//!   leaves, and [`armed_allocations`] is the number of allocations its hot path made.
//! - [`count_all_threads`] makes the same allocator also keep a tally per thread of the whole
//!   process (allocations, frees, bytes), keyed by kernel thread id: [`thread_tallies`] reads
//!   it without allocating, so a test can say which thread allocated over a window, and how
//!   often, when it cannot arm the threads itself (a reporter, a monitor, a library's own).
//! - [`forbid_syscalls_on_this_thread`] installs a seccomp filter on the calling thread that
//!   turns its next syscall into the death of the whole process by [`FORBIDDEN_SYSCALL_SIGNAL`],
//!   after a line on stderr naming the syscall. Futexes from a contended lock, `mmap`/`brk` from
//!   an allocation, `clock_gettime` falling out of the vDSO, `sched_yield`, `nanosleep`: all of
//!   them end the process, so the process surviving a run is the proof that none was made.
//!
//! The filter is one-way: the kernel offers no way to remove it, and the thread's own exit is
//! made of syscalls (unmapping its stack, waking a joiner). A filtered thread therefore never
//! returns: once its work is done it must spin forever, and the process must end through
//! `std::process::exit` on an unfiltered thread (its `exit_group` ends the filtered threads too).
//! It is meant for a test process, never for a production engine.
//!
//! The only syscall the filter lets through is `write` to a private duplicate of stderr, which
//! the reporting handler uses. A filtered thread that panics is reported as its first syscall
//! (often the `write` of the panic message to fd 2): run the same pipeline without the filter to
//! see the message.
#![allow(unsafe_code)] // A global allocator, a seccomp filter and the SIGSYS handler that reports it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

use libc::{c_int, c_uint, c_void};

thread_local! {
    // `const` and without a destructor, so reading it never allocates or registers anything:
    // safe inside the allocator itself, even while a thread is being torn down.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    // This thread's slot in the per-thread tally (`NO_SLOT` until its first tallied call);
    // `const` and destructor-free for the same reason.
    static TALLY_SLOT: Cell<usize> = const { Cell::new(NO_SLOT) };
}

/// Threads the per-thread tally can tell apart; later ones are counted in
/// [`untallied_allocations`].
pub const TALLY_THREADS: usize = 512;
const NO_SLOT: usize = usize::MAX;
const FULL: usize = usize::MAX - 1;

static TALLY_ON: AtomicBool = AtomicBool::new(false);
static TALLY_TID: [AtomicU64; TALLY_THREADS] = [const { AtomicU64::new(0) }; TALLY_THREADS];
static TALLY_ALLOCS: [AtomicU64; TALLY_THREADS] = [const { AtomicU64::new(0) }; TALLY_THREADS];
static TALLY_FREES: [AtomicU64; TALLY_THREADS] = [const { AtomicU64::new(0) }; TALLY_THREADS];
static TALLY_BYTES: [AtomicU64; TALLY_THREADS] = [const { AtomicU64::new(0) }; TALLY_THREADS];
static UNTALLIED: AtomicU64 = AtomicU64::new(0);

/// Starts (or stops) the per-thread tally of every thread's allocations through
/// [`CountingAlloc`]. A thread's first tallied call asks the kernel for its thread id (one
/// `gettid`), so turn it on before the threads under test enter code that must not make
/// syscalls; [`forbid_syscalls_on_this_thread`] and the tally do not mix.
pub fn count_all_threads(on: bool) {
    // Relaxed: a switch; counts taken while it flips are approximate by nature.
    TALLY_ON.store(on, Ordering::Relaxed);
}

/// The kernel's id of the calling thread (what `/proc/self/task/<tid>` names).
pub fn current_tid() -> u32 {
    // SAFETY: gettid(2) takes no arguments, touches no memory and cannot fail.
    let tid = unsafe { libc::gettid() };
    tid as u32
}

/// One thread's allocations through [`CountingAlloc`] since the tally was turned on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadTally {
    /// The kernel's thread id (a thread that ended may have handed it to a new one, whose
    /// counts then add up with its own).
    pub tid: u32,
    /// Allocations, zeroed allocations and reallocations.
    pub allocations: u64,
    /// Deallocations.
    pub deallocations: u64,
    /// Bytes asked for by those allocations (a reallocation counts its new size).
    pub bytes: u64,
}

/// Copies the tally of every thread seen so far into `out` without allocating; returns how many
/// were written (at most `out.len()`).
pub fn thread_tallies(out: &mut [ThreadTally]) -> usize {
    let mut n = 0;
    for i in 0..TALLY_THREADS {
        if n == out.len() {
            break;
        }
        // Relaxed: counters; a tally taken while threads run is a snapshot of each counter.
        let tid = TALLY_TID[i].load(Ordering::Relaxed);
        if tid == 0 {
            continue;
        }
        out[n] = ThreadTally {
            tid: tid as u32,
            allocations: TALLY_ALLOCS[i].load(Ordering::Relaxed),
            deallocations: TALLY_FREES[i].load(Ordering::Relaxed),
            bytes: TALLY_BYTES[i].load(Ordering::Relaxed),
        };
        n += 1;
    }
    n
}

/// Allocations of threads beyond the first [`TALLY_THREADS`] the tally saw.
pub fn untallied_allocations() -> u64 {
    // Relaxed: a counter.
    UNTALLIED.load(Ordering::Relaxed)
}

/// The calling thread's tally slot, claimed on its first call.
#[inline]
fn tally_slot() -> usize {
    let slot = TALLY_SLOT.get();
    if slot != NO_SLOT {
        return slot;
    }
    let tid = u64::from(current_tid());
    let start = (tid as usize).wrapping_mul(0x9E37_79B9) % TALLY_THREADS;
    let mut found = FULL;
    for k in 0..TALLY_THREADS {
        let i = (start + k) % TALLY_THREADS;
        // Relaxed: the slot's counters are plain counters; the id only has to be claimed once.
        match TALLY_TID[i].compare_exchange(0, tid, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => {
                found = i;
                break;
            }
            Err(t) if t == tid => {
                found = i;
                break;
            }
            Err(_) => {}
        }
    }
    TALLY_SLOT.set(found);
    found
}

#[inline]
fn tally(alloc: bool, size: usize) {
    // Relaxed: a switch and counters.
    if !TALLY_ON.load(Ordering::Relaxed) {
        return;
    }
    let slot = tally_slot();
    if slot == FULL {
        if alloc {
            UNTALLIED.fetch_add(1, Ordering::Relaxed);
        }
        return;
    }
    if alloc {
        TALLY_ALLOCS[slot].fetch_add(1, Ordering::Relaxed);
        TALLY_BYTES[slot].fetch_add(size as u64, Ordering::Relaxed);
    } else {
        TALLY_FREES[slot].fetch_add(1, Ordering::Relaxed);
    }
}

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);
// 0 means none yet: a global allocator is never asked for zero bytes.
static FIRST_SIZE: AtomicUsize = AtomicUsize::new(0);

/// Starts counting the calling thread's allocations (see [`CountingAlloc`]).
pub fn arm() {
    ARMED.set(true);
}

/// Stops counting the calling thread's allocations.
pub fn disarm() {
    ARMED.set(false);
}

/// Whether the calling thread is armed.
pub fn is_armed() -> bool {
    ARMED.get()
}

/// Allocations (including zeroed allocations and reallocations) made by armed threads through
/// [`CountingAlloc`] since the last [`reset_armed_counts`].
pub fn armed_allocations() -> u64 {
    // Relaxed: a counter; callers read it after joining the threads that update it.
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Deallocations made by armed threads since the last [`reset_armed_counts`]: memory freed on a
/// hot path was allocated by someone, and freeing can enter the kernel.
pub fn armed_deallocations() -> u64 {
    // Relaxed: as in `armed_allocations`.
    DEALLOCATIONS.load(Ordering::Relaxed)
}

/// The size in bytes of the first allocation an armed thread made, if any.
pub fn first_armed_size() -> Option<usize> {
    // Relaxed: as in `armed_allocations`.
    match FIRST_SIZE.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// Runs `f` with the calling thread armed and returns the allocations it made (exact when no
/// other thread is armed meanwhile).
pub fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = armed_allocations();
    arm();
    f();
    disarm();
    armed_allocations() - before
}

/// Zeroes the counters (for instance after a control run that allocated on purpose).
pub fn reset_armed_counts() {
    // Relaxed: called while no armed thread runs.
    ALLOCATIONS.store(0, Ordering::Relaxed);
    DEALLOCATIONS.store(0, Ordering::Relaxed);
    FIRST_SIZE.store(0, Ordering::Relaxed);
}

#[inline]
fn note_allocation(size: usize) {
    tally(true, size);
    if ARMED.get() {
        // Relaxed: counters only; no data is published through them.
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        let _ = FIRST_SIZE.compare_exchange(0, size, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// A [`GlobalAlloc`] over [`System`] that counts what armed threads allocate (and, with
/// [`count_all_threads`], what every thread allocates). Install it in a
/// test binary with
///
/// ```no_run
/// use tickpipe_shm::hotpath::CountingAlloc;
///
/// #[global_allocator]
/// static ALLOC: CountingAlloc = CountingAlloc::new();
/// # fn main() {}
/// ```
///
/// An unarmed thread pays one thread-local read per call (and, with the per-thread tally on,
/// a few relaxed atomic additions).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

impl CountingAlloc {
    /// The allocator (a `const fn`, for a `static`).
    pub const fn new() -> Self {
        Self
    }
}

// SAFETY: every method passes its arguments unchanged to `System`, whose guarantees therefore
// hold; the counting touches only atomics and const thread-locals (plus one `gettid` per thread
// with the per-thread tally on), and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller's `GlobalAlloc::alloc` contract, passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: the caller's `GlobalAlloc::alloc_zeroed` contract, passed on unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: the caller's `GlobalAlloc::realloc` contract, passed on unchanged; `ptr` came
        // from `System` because every allocation of this allocator does.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        tally(false, layout.size());
        if ARMED.get() {
            // Relaxed: a counter.
            DEALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's `GlobalAlloc::dealloc` contract, passed on unchanged; `ptr` came
        // from `System` because every allocation of this allocator does.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The signal that ends a process when a thread under [`forbid_syscalls_on_this_thread`] makes a
/// syscall.
pub const FORBIDDEN_SYSCALL_SIGNAL: c_int = libc::SIGSYS;

// AUDIT_ARCH_* from linux/audit.h: the ELF machine | 64-bit | little-endian. A syscall made
// through another ABI (32-bit `int 0x80` on x86_64) carries another value and is refused too.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E);
#[cfg(all(target_arch = "aarch64", target_endian = "little"))]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7);
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_endian = "little")
)))]
const AUDIT_ARCH: Option<u32> = None;

// prctl and syscall are variadic and the kernel reads their arguments as unsigned longs: pass
// full-width values, not `int`s whose upper halves are unspecified.
const ZERO: libc::c_ulong = 0;
const ONE: libc::c_ulong = 1;

// `si_code` of a SIGSYS raised by SECCOMP_RET_TRAP (linux/signal.h).
const SYS_SECCOMP: c_int = 1;

// The descriptor the SIGSYS handler reports on: the only one a filtered thread may write to.
static REPORT_FD: AtomicI32 = AtomicI32::new(-1);
// The report descriptor, or the errno of the set-up that failed.
static SETUP: OnceLock<Result<c_int, i32>> = OnceLock::new();

/// Forbids every syscall to the calling thread, for good: its next syscall kills the whole
/// process with [`FORBIDDEN_SYSCALL_SIGNAL`], after a line on stderr that names the syscall.
/// Other threads are not affected (the filter is installed without `SECCOMP_FILTER_FLAG_TSYNC`),
/// but threads the calling thread spawns later inherit it.
///
/// The first call also installs a process-wide SIGSYS handler (which does the reporting) and
/// duplicates stderr for it; nothing else in the process may rely on SIGSYS.
///
/// The calling thread can never exit or be joined afterwards (see the module documentation).
///
/// # Errors
/// The target is neither x86_64 nor little-endian aarch64, stderr cannot be duplicated, or the
/// kernel refuses (no seccomp support, or a sandbox that forbids installing filters). The thread
/// is then unfiltered.
pub fn forbid_syscalls_on_this_thread() -> io::Result<()> {
    let Some(arch) = AUDIT_ARCH else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "syscall filtering is implemented for x86_64 and aarch64 only",
        ));
    };
    let fd = (*SETUP.get_or_init(set_up_reporting)).map_err(io::Error::from_raw_os_error)?;
    let mut program = filter(arch, fd as u32);
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // Without no_new_privs an unprivileged thread may not install a filter.
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, ONE, ZERO, ZERO, ZERO) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // Flags 0: no TSYNC, so only the calling thread gets the filter.
    // SAFETY: `prog` points to `program`, `len` valid BPF instructions that outlive the call (the
    // kernel copies them).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::c_ulong::from(libc::SECCOMP_SET_MODE_FILTER),
            ZERO,
            &raw const prog,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the process non-dumpable, so that dying by [`FORBIDDEN_SYSCALL_SIGNAL`] (whose default
/// action dumps core) leaves no core file behind, whatever `core_pattern` says. For a child
/// process that is expected to die that way. It also keeps unprivileged debuggers from attaching
/// later; one that started the process still sees the signal at the offending syscall.
///
/// # Errors
/// The kernel refuses the `prctl`.
pub fn disable_core_dumps() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, ZERO, ZERO, ZERO, ZERO) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EINVAL)
}

fn set_up_reporting() -> Result<c_int, i32> {
    // A private copy of stderr, close-on-exec, that the filter can tell apart from fd 2: a stage
    // writing to stderr is a syscall like any other.
    // SAFETY: F_DUPFD_CLOEXEC takes integer arguments only and touches no memory.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(errno());
    }
    // Relaxed: the handler only runs after a filter was installed, which happens after this
    // store on the same thread or after `SETUP` published it.
    REPORT_FD.store(fd, Ordering::Relaxed);
    // SAFETY: an all-zero sigaction is a valid starting value (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigsys as *const () as usize;
    // No SA_NODEFER: SIGSYS stays blocked inside the handler, which is what ends the process
    // (see `on_sigsys`).
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: `action` is fully initialised and its handler only performs async-signal-safe work;
    // a null old-action pointer is allowed.
    let rc = unsafe { libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(errno());
    }
    Ok(fd)
}

/// The filter: `write` to `report_fd` passes, every other syscall (and any syscall of a foreign
/// ABI) traps with SIGSYS.
fn filter(arch: u32, report_fd: u32) -> [libc::sock_filter; 8] {
    const LOAD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    const ARCH: u32 = std::mem::offset_of!(libc::seccomp_data, arch) as u32;
    const NR: u32 = std::mem::offset_of!(libc::seccomp_data, nr) as u32;
    // The low half of the first argument; the kernel reads a descriptor as 32 bits.
    const ARG0: u32 = std::mem::offset_of!(libc::seccomp_data, args) as u32
        + if cfg!(target_endian = "big") { 4 } else { 0 };
    let op = |code, k, jt, jf| libc::sock_filter { code, jt, jf, k };
    [
        op(LOAD, ARCH, 0, 0),
        op(JEQ, arch, 0, 5),
        op(LOAD, NR, 0, 0),
        op(JEQ, libc::SYS_write as u32, 0, 3),
        op(LOAD, ARG0, 0, 0),
        op(JEQ, report_fd, 0, 1),
        op(RET, libc::SECCOMP_RET_ALLOW, 0, 0),
        op(RET, libc::SECCOMP_RET_TRAP, 0, 0),
    ]
}

// The head of a SIGSYS siginfo on 64-bit Linux: the union after the three ints is
// pointer-aligned, and for SIGSYS it holds `_sigsys { _call_addr, _syscall, _arch }`.
#[repr(C)]
struct SigsysInfo {
    signo: c_int,
    errno: c_int,
    code: c_int,
    call_addr: *mut c_void,
    syscall: c_int,
    arch: c_uint,
}

extern "C" fn on_sigsys(_sig: c_int, info: *mut libc::siginfo_t, _ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo_t (128 bytes, 8-aligned) to an SA_SIGINFO
    // handler, live for the duration of the handler; `SigsysInfo` is a prefix of its layout.
    let info = unsafe { &*info.cast::<SigsysInfo>() };
    if info.code == SYS_SECCOMP {
        let mut line = Line::default();
        describe(&mut line, info.syscall, info.arch);
        let bytes = line.bytes();
        // SAFETY: write(2) is async-signal-safe; `bytes` is a live stack buffer.
        let _ = unsafe {
            libc::write(
                REPORT_FD.load(Ordering::Relaxed),
                bytes.as_ptr().cast(),
                bytes.len(),
            )
        };
    }
    // On a filtered thread the next syscall traps again while SIGSYS is blocked (we are in its
    // handler), and the kernel then resets SIGSYS to its default action and kills the process
    // with it. On any other thread the two calls below do the same by hand.
    // SAFETY: signal(2) with SIG_DFL is async-signal-safe and has no memory preconditions.
    unsafe { libc::signal(libc::SIGSYS, libc::SIG_DFL) };
    // SAFETY: raise is async-signal-safe; the signal stays pending until the handler returns
    // and then takes its default action.
    unsafe { libc::raise(libc::SIGSYS) };
}

/// A fixed buffer for the handler's message: nothing may allocate in a signal handler.
struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Self {
            buf: [0; 192],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_number(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[at..]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

fn describe(line: &mut Line, nr: c_int, arch: u32) {
    line.push(b"tickpipe: a thread that forbade itself syscalls made syscall ");
    line.push_number(u64::from(nr as u32));
    if Some(arch) == AUDIT_ARCH {
        line.push(b" (");
        line.push(syscall_name(nr).as_bytes());
        line.push(b")");
    } else {
        line.push(b" of a foreign ABI (audit arch ");
        line.push_number(u64::from(arch));
        line.push(b")");
    }
    line.push(b"; the process is killed with SIGSYS\n");
}

/// Names for the syscalls a hot path is most likely to make by accident.
fn syscall_name(nr: c_int) -> &'static str {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    const NAMES: &[(libc::c_long, &str)] = &[
        (libc::SYS_futex, "futex"),
        (libc::SYS_mmap, "mmap"),
        (libc::SYS_munmap, "munmap"),
        (libc::SYS_mremap, "mremap"),
        (libc::SYS_brk, "brk"),
        (libc::SYS_madvise, "madvise"),
        (libc::SYS_mprotect, "mprotect"),
        (libc::SYS_sched_yield, "sched_yield"),
        (libc::SYS_nanosleep, "nanosleep"),
        (libc::SYS_clock_nanosleep, "clock_nanosleep"),
        (libc::SYS_clock_gettime, "clock_gettime"),
        (libc::SYS_gettimeofday, "gettimeofday"),
        (libc::SYS_write, "write"),
        (libc::SYS_read, "read"),
        (libc::SYS_getrandom, "getrandom"),
        (libc::SYS_rt_sigprocmask, "rt_sigprocmask"),
        (libc::SYS_rt_sigaction, "rt_sigaction"),
        (libc::SYS_rt_sigreturn, "rt_sigreturn"),
        (libc::SYS_exit, "exit"),
        (libc::SYS_exit_group, "exit_group"),
        (libc::SYS_tgkill, "tgkill"),
        (libc::SYS_gettid, "gettid"),
        (libc::SYS_getpid, "getpid"),
        (libc::SYS_sched_getaffinity, "sched_getaffinity"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_openat, "openat"),
        (libc::SYS_close, "close"),
        (libc::SYS_membarrier, "membarrier"),
    ];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const NAMES: &[(libc::c_long, &str)] = &[];
    NAMES
        .iter()
        .find(|(n, _)| *n == libc::c_long::from(nr))
        .map_or("see the architecture's syscall table", |(_, name)| name)
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    #[test]
    fn only_armed_threads_are_counted() {
        // The counters are process-wide; this is the only test in the crate that moves them.
        reset_armed_counts();
        let a = CountingAlloc::new();
        let small = Layout::from_size_align(24, 8).unwrap();
        let big = Layout::from_size_align(48, 8).unwrap();
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { a.alloc(small) };
        assert!(!p.is_null());
        // SAFETY: `p` was allocated by `a` with `small`.
        unsafe { a.dealloc(p, small) };
        assert_eq!((armed_allocations(), armed_deallocations()), (0, 0));

        arm();
        assert!(is_armed());
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { a.alloc(small) };
        assert!(!p.is_null());
        // SAFETY: `p` was allocated by `a` with `small`; 48 is non-zero and fits an isize.
        let p = unsafe { a.realloc(p, small, 48) };
        assert!(!p.is_null());
        std::thread::spawn(|| assert!(!is_armed(), "arming is per thread"))
            .join()
            .unwrap();
        disarm();
        // SAFETY: `p` was reallocated by `a` to `big`'s size and alignment.
        unsafe { a.dealloc(p, big) };
        assert_eq!((armed_allocations(), armed_deallocations()), (2, 0));
        assert_eq!(first_armed_size(), Some(24));
        reset_armed_counts();
        assert_eq!((armed_allocations(), first_armed_size()), (0, None));
    }

    /// Runs a classic-BPF program of the three instruction kinds the filter uses.
    fn run(program: &[libc::sock_filter], nr: u32, arch: u32, arg0: u64) -> u32 {
        let mut data = [0u8; std::mem::size_of::<libc::seccomp_data>()];
        let mut put = |at: usize, bytes: &[u8]| data[at..at + bytes.len()].copy_from_slice(bytes);
        put(offset_of!(libc::seccomp_data, nr), &nr.to_ne_bytes());
        put(offset_of!(libc::seccomp_data, arch), &arch.to_ne_bytes());
        put(offset_of!(libc::seccomp_data, args), &arg0.to_ne_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = program[pc];
            match u32::from(ins.code) {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => {
                    let k = ins.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                    pc += 1;
                }
                c if c == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K => {
                    pc += 1 + usize::from(if acc == ins.k { ins.jt } else { ins.jf });
                }
                c if c == libc::BPF_RET | libc::BPF_K => return ins.k,
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn filter_passes_only_writes_to_the_report_descriptor() {
        let arch = 0xC000_003E;
        let program = filter(arch, 7);
        let write = libc::SYS_write as u32;
        let futex = libc::SYS_futex as u32;
        assert_eq!(run(&program, write, arch, 7), libc::SECCOMP_RET_ALLOW);
        assert_eq!(run(&program, write, arch, 2), libc::SECCOMP_RET_TRAP);
        assert_eq!(run(&program, futex, arch, 7), libc::SECCOMP_RET_TRAP);
        assert_eq!(run(&program, write, arch + 1, 7), libc::SECCOMP_RET_TRAP);
        // The x32 ABI numbers its syscalls from bit 30 up under the x86_64 arch value.
        assert_eq!(
            run(&program, write | 0x4000_0000, arch, 7),
            libc::SECCOMP_RET_TRAP
        );
    }

    #[test]
    fn report_names_the_syscall() {
        let mut line = Line::default();
        describe(&mut line, libc::SYS_futex as c_int, AUDIT_ARCH.unwrap_or(0));
        let text = String::from_utf8(line.bytes().to_vec()).unwrap();
        assert!(
            text.contains(&format!("syscall {} (futex)", libc::SYS_futex)),
            "{text}"
        );
        assert!(text.ends_with("SIGSYS\n"));
        let mut line = Line::default();
        describe(&mut line, 3, 0x4000_0003);
        let text = String::from_utf8(line.bytes().to_vec()).unwrap();
        assert!(text.contains("syscall 3 of a foreign ABI"), "{text}");
    }
}
