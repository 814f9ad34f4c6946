//! Turns a SIGBUS inside a ring mapping into a clear message and a clean exit.
//!
//! When another process truncates a mapped file, touching the vanished pages raises SIGBUS, which
//! would kill the reader with no explanation. Every ring mapping registers its address range
//! here; the handler checks the faulting address against the registered ranges and, on a match,
//! writes a message naming the file to stderr and exits with [`SIGBUS_EXIT_CODE`]. A SIGBUS
//! anywhere else restores the default action and re-faults, so unrelated bugs still crash loudly.
#![allow(unsafe_code)] // Installing a signal handler and reading siginfo inside it.

use std::path::Path;
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Exit status after a SIGBUS in a ring mapping (EX_IOERR).
pub const SIGBUS_EXIT_CODE: i32 = 74;

const SLOTS: usize = 256;

struct Range {
    start: AtomicUsize,
    len: AtomicUsize,
    message: AtomicPtr<u8>,
    message_len: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)] // Used only as an array initialiser.
const EMPTY: Range = Range {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    message: AtomicPtr::new(std::ptr::null_mut()),
    message_len: AtomicUsize::new(0),
};

static RANGES: [Range; SLOTS] = [EMPTY; SLOTS];
static INSTALL: Once = Once::new();

/// Keeps a mapping's range registered; dropping it unregisters.
#[derive(Debug)]
pub struct Registration {
    slot: Option<usize>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            // Release pairs with the handler's Acquire load of `len`: the range is gone before the
            // mapping is unmapped by the caller.
            RANGES[slot].len.store(0, Ordering::Release);
            // Frees the slot for `register`'s compare-exchange.
            RANGES[slot].start.store(0, Ordering::Release);
        }
    }
}

/// Registers `[start, start + len)` as a mapping of `path` and installs the handler once.
/// With every slot taken the mapping simply runs unguarded.
pub fn register(start: usize, len: usize, path: &Path) -> Registration {
    INSTALL.call_once(install);
    // The message is built now, because nothing may allocate inside a signal handler. It is leaked
    // on purpose: the handler may read it at any time, and mappings are few and long-lived.
    let message: &'static [u8] = format!(
        "tickpipe: SIGBUS: the shared-memory file {} was truncated or removed while mapped; \
         its contents are gone, exiting (status {SIGBUS_EXIT_CODE})\n",
        path.display()
    )
    .into_bytes()
    .leak();
    for (slot, range) in RANGES.iter().enumerate() {
        // Claim a free slot by moving `start` from 0; an in-use slot has a non-zero start.
        if range
            .start
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            range
                .message
                .store(message.as_ptr().cast_mut(), Ordering::Relaxed);
            range.message_len.store(message.len(), Ordering::Relaxed);
            // Release pairs with the handler's Acquire load of `len`: a visible range has its
            // message.
            range.len.store(len, Ordering::Release);
            return Registration { slot: Some(slot) };
        }
    }
    Registration { slot: None }
}

extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid, aligned siginfo_t for a handler installed with
    // SA_SIGINFO, live for the duration of the handler.
    let info = unsafe { &*info };
    // SAFETY: for SIGBUS the kernel fills the fault-address union member that si_addr reads.
    let addr = unsafe { info.si_addr() } as usize;
    for range in &RANGES {
        // Acquire pairs with the Release store of `len` in `register`.
        let len = range.len.load(Ordering::Acquire);
        let start = range.start.load(Ordering::Relaxed);
        if len != 0 && addr >= start && addr - start < len {
            let msg = range.message.load(Ordering::Relaxed);
            let msg_len = range.message_len.load(Ordering::Relaxed);
            // SAFETY: write(2) is async-signal-safe; `msg` points to a leaked, never-freed buffer
            // of `msg_len` bytes published before `len` became non-zero.
            let _ = unsafe { libc::write(2, msg.cast(), msg_len) };
            // SAFETY: _exit is async-signal-safe and does not return.
            unsafe { libc::_exit(SIGBUS_EXIT_CODE) };
        }
    }
    // Not ours: fall back to the default action; returning re-executes the faulting access.
    // SAFETY: signal(2) with SIG_DFL is async-signal-safe and has no memory preconditions.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
}

fn install() {
    // SAFETY: an all-zero sigaction is a valid starting value (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigbus as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
    // SAFETY: `action` is fully initialised and its handler only performs async-signal-safe work;
    // a null old-action pointer is allowed.
    let rc = unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
    // Failing to install leaves the default action (a crash with no message): worth a line.
    if rc != 0 {
        eprintln!(
            "tickpipe: warning: could not install the SIGBUS guard: {}",
            std::io::Error::last_os_error()
        );
    }
}
