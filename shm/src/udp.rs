//! UDP receive through io_uring, and the socket options std lacks.
//!
//! [`UringUdpRecv`] keeps receives queued in the kernel so that a busy-polling reader finds
//! datagrams already copied into its buffers: checking for one is a load from the completion
//! ring, not a syscall. Two modes, chosen at set-up:
//!
//! - **multishot** (Linux 6.0+): one `RECV_MULTISHOT` operation stays armed on the socket and the
//!   kernel picks a buffer for each datagram from a *provided buffer ring* that we refill by
//!   writing entries and publishing a new tail. In steady state receiving makes no syscall at
//!   all; one is made only to re-arm the operation when the kernel ends it (it ran out of
//!   buffers, say).
//! - **single-shot**: exactly one `RECV` in flight at a time. When it completes, the next one is
//!   queued into the other of two buffers while the reader looks at the first, and handed to the
//!   kernel in one `io_uring_enter` when the reader finds nothing to read. That syscall is the
//!   receive itself. One at a time is what keeps datagrams in order: overlapping receives on one
//!   socket carry no ordering guarantee, and with a receive queued per buffer their completions
//!   did come out of order under a bursty feed (`uring_udp_single_shot_keeps_order`); the
//!   reader would see a sequence gap followed by a stale datagram.
//!
//! [`UringUdpRecv::mode`] says which is in use and why.
//!
//! # Ownership invariant
//!
//! Every receive buffer is either *held* (the one datagram the reader is looking at, returned by
//! [`UringUdpRecv::current`]) or *kernel-owned* (queued in a receive operation or in the
//! provided-buffer ring, where the kernel may write it at any moment). Slices are only ever
//! formed over the held buffer, and only between two calls of [`UringUdpRecv::advance`] (which
//! takes `&mut self`, so no slice survives it). A buffer becomes kernel-owned again only in
//! `advance`, after the reader is done with it. `Drop` cancels every operation and waits for the
//! kernel to complete them before the buffers are unmapped; if it cannot, it leaks the memory
//! rather than free what the kernel may still write.
#![allow(unsafe_code)] // io_uring receives and the provided-buffer ring hand the kernel our memory; setsockopt takes pointers.

use std::fmt;
use std::io;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::{IoUring, cqueue, opcode, types};
use memmap2::{MmapMut, MmapRaw};

/// Binds a UDP socket to `addr` with `SO_REUSEADDR` set before the bind, so that several
/// receivers on one host (the engine, a recorder, a second engine) can bind the same multicast
/// group and port and each get every datagram. Close-on-exec, blocking (as `UdpSocket::bind`).
///
/// # Errors
/// The `socket`, `setsockopt` or `bind` call failing.
pub fn bind_reuse_addr(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created and owned by no one else; the OwnedFd closes it on
    // every error path below.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_option(owned.as_fd(), libc::SO_REUSEADDR, 1)?;
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: the address pointer and length describe `sa`, a live sockaddr_in on this
            // stack frame; the fd is open.
            unsafe {
                libc::bind(
                    owned.as_raw_fd(),
                    (&raw const sa).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sa = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for a sockaddr_in6.
            unsafe {
                libc::bind(
                    owned.as_raw_fd(),
                    (&raw const sa).cast(),
                    size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UdpSocket::from(owned))
}

/// Sets the socket's receive buffer (`SO_RCVBUF`) and returns the size the kernel granted
/// (which it doubles for bookkeeping and caps at `net.core.rmem_max`).
///
/// # Errors
/// The `setsockopt` or `getsockopt` call failing.
pub fn set_recv_buffer(sock: BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int_option(sock, libc::SO_RCVBUF, v)?;
    recv_buffer(sock)
}

/// Sets the `SOL_SOCKET` option `name` to the integer `v`.
fn set_int_option(sock: BorrowedFd<'_>, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: the value pointer and length describe `v`, a live c_int on this stack frame; the
    // fd is borrowed, so it is open for the duration of the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw const v).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The socket's receive buffer size (`SO_RCVBUF`) as the kernel reports it.
///
/// # Errors
/// The `getsockopt` call failing.
pub fn recv_buffer(sock: BorrowedFd<'_>) -> io::Result<usize> {
    let mut v: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the value and length pointers describe `v` and `len`, live locals sized as the
    // call expects; the fd is borrowed, so it is open for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(v).unwrap_or(0))
}

/// Which receive path an [`UringUdpRecv`] uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecvMode {
    /// One multishot receive over a provided-buffer ring: no syscall per datagram.
    Multishot,
    /// One single-shot receive in flight at a time, alternating between two buffers.
    SingleShot {
        /// Why multishot is not in use.
        why: String,
    },
}

impl fmt::Display for RecvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvMode::Multishot => write!(f, "io_uring multishot recv with a provided buffer ring"),
            RecvMode::SingleShot { why } => write!(f, "io_uring single-shot recv ({why})"),
        }
    }
}

/// Shape of an [`UringUdpRecv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UringRecvOptions {
    /// Receive buffers (a power of two, 2 to 32 768): how many datagrams the kernel can hold
    /// for the reader in multishot mode (single-shot mode uses two of them).
    pub buffers: u16,
    /// Bytes per buffer: the largest datagram received whole (a longer one is truncated to it).
    pub buffer_len: usize,
    /// Use single-shot receives even where multishot is available.
    pub single_shot: bool,
}

impl Default for UringRecvOptions {
    fn default() -> Self {
        Self {
            buffers: 256,
            buffer_len: 9216,
            single_shot: false,
        }
    }
}

/// `user_data` of the multishot receive (single-shot receives carry their buffer index).
const MULTI: u64 = u64::MAX;
/// `user_data` of cancellations.
const CANCEL: u64 = u64::MAX - 1;
/// Buffer group id of the provided-buffer ring.
const GROUP: u16 = 1;
/// Bytes of one provided-buffer ring entry (`struct io_uring_buf`: addr u64, len u32, bid u16,
/// resv u16; the ring's tail overlays `resv` of entry 0).
const ENTRY_LEN: usize = 16;
const TAIL_AT: usize = 14;
/// How many rounds of waiting `Drop` allows the kernel to complete cancelled receives.
const DROP_WAIT_ROUNDS: u32 = 1000;

/// A UDP socket whose datagrams arrive through io_uring into buffers owned by this receiver
/// (see the module docs for the modes and the ownership invariant).
pub struct UringUdpRecv {
    // Field order matters for drop: the ring (and with it any operation `Drop` could not
    // cancel) goes before the socket and the memory the kernel may write.
    ring: IoUring,
    socket: UdpSocket,
    /// `buffers * buffer_len` bytes of receive buffers, only accessed through raw pointers;
    /// unmapped by `Drop` only once no receive can write it.
    mem: ManuallyDrop<MmapRaw>,
    /// The provided-buffer ring (multishot mode).
    bufring: Option<MmapRaw>,
    buffers: u16,
    buffer_len: usize,
    /// Our copy of the provided-buffer ring's tail.
    tail: u16,
    mode: RecvMode,
    /// The held buffer and the datagram's length in it.
    current: Option<(u16, usize)>,
    /// Kernel-owned single-shot buffers (single-shot mode), or whether the multishot receive is
    /// armed (index 0, multishot mode).
    in_kernel: Vec<bool>,
    /// Entries pushed but not yet submitted.
    unsubmitted: bool,
    rearms: u64,
}

impl fmt::Debug for UringUdpRecv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringUdpRecv")
            .field("mode", &self.mode)
            .field("buffers", &self.buffers)
            .field("buffer_len", &self.buffer_len)
            .finish_non_exhaustive()
    }
}

fn setup_error(what: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EPERM) => " (blocked by seccomp or the kernel.io_uring_disabled sysctl?)",
        Some(libc::ENOSYS) => " (kernel without io_uring, or blocked by seccomp?)",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what}: {e}{hint}"))
}

fn anon(len: usize) -> io::Result<MmapRaw> {
    Ok(MmapRaw::from(MmapMut::map_anon(len)?))
}

impl UringUdpRecv {
    /// Takes over `socket` (bound, joined to its group if multicast) and queues receives on it.
    ///
    /// # Errors
    /// io_uring unavailable (the message says why: seccomp, sysctl, an old kernel), options out
    /// of range, or the buffers cannot be mapped.
    pub fn new(socket: UdpSocket, opts: UringRecvOptions) -> io::Result<Self> {
        if !opts.buffers.is_power_of_two() || !(2..=32_768).contains(&opts.buffers) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "io_uring receive buffers must be a power of two from 2 to 32768, not {}",
                    opts.buffers
                ),
            ));
        }
        if !(64..=1 << 20).contains(&opts.buffer_len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "io_uring receive buffer length must be 64 B to 1 MiB, not {}",
                    opts.buffer_len
                ),
            ));
        }
        let ring = IoUring::new(u32::from(opts.buffers))
            .map_err(|e| setup_error("io_uring_setup failed", e))?;
        let mut kernel_probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut kernel_probe)
            .map_err(|e| setup_error("io_uring opcode probe failed", e))?;
        if !kernel_probe.is_supported(opcode::Recv::CODE) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "io_uring: kernel lacks IORING_OP_RECV (needs Linux 5.6+)",
            ));
        }
        let mem = anon(usize::from(opts.buffers) * opts.buffer_len)?;
        let mut rx = UringUdpRecv {
            ring,
            socket,
            mem: ManuallyDrop::new(mem),
            bufring: None,
            buffers: opts.buffers,
            buffer_len: opts.buffer_len,
            tail: 0,
            mode: RecvMode::SingleShot {
                why: "requested".into(),
            },
            current: None,
            in_kernel: vec![false; usize::from(opts.buffers)],
            unsubmitted: false,
            rearms: 0,
        };
        if !opts.single_shot {
            match rx.start_multishot() {
                Ok(()) => {
                    rx.mode = RecvMode::Multishot;
                    return Ok(rx);
                }
                Err(why) => rx.mode = RecvMode::SingleShot { why },
            }
        }
        // Queued, not submitted: the first `advance`, on the reading thread, submits it (the
        // kernel cancels a task's receives when the task exits, and set-up may run on a
        // short-lived thread). One receive only: see the module docs on ordering.
        rx.queue_single(0)?;
        Ok(rx)
    }

    /// Registers the provided-buffer ring, fills it and arms the multishot receive; on failure
    /// says why and leaves nothing registered or queued.
    fn start_multishot(&mut self) -> Result<(), String> {
        let n = usize::from(self.buffers);
        let ring_mem =
            anon((n * ENTRY_LEN).max(4096)).map_err(|e| format!("mapping the buffer ring: {e}"))?;
        let addr = ring_mem.as_ptr() as u64;
        // SAFETY: `ring_mem` is a page-aligned mapping of `buffers` 16-byte entries, kept in
        // `self.bufring` until the ring is dropped (the registration ends with the ring).
        let reg = unsafe {
            self.ring
                .submitter()
                .register_buf_ring_with_flags(addr, self.buffers, GROUP, 0)
        };
        if let Err(e) = reg {
            return Err(format!("provided buffer rings need Linux 5.19+: {e}"));
        }
        self.bufring = Some(ring_mem);
        for bid in 0..self.buffers {
            self.provide(bid);
        }
        self.publish_tail();
        self.arm();
        if let Err(e) = self.ring.submit() {
            return Err(format!("submitting the multishot recv: {e}"));
        }
        // A kernel that does not know the multishot flag fails the entry at once.
        let first = self.ring.completion().next();
        if let Some(cqe) = first
            && cqe.user_data() == MULTI
            && cqe.result() < 0
        {
            self.in_kernel[0] = false;
            let e = io::Error::from_raw_os_error(-cqe.result());
            let _ = self.ring.submitter().unregister_buf_ring(GROUP);
            self.bufring = None;
            return Err(format!("multishot recv needs Linux 6.0+: {e}"));
        }
        // Supported. Cancel this probe and queue the receive again without submitting it: the
        // first `advance`, on the reading thread, submits it (see `new`).
        self.cancel_all()
            .map_err(|e| format!("cancelling the multishot probe: {e}"))?;
        self.arm();
        Ok(())
    }

    /// Queues the multishot receive.
    fn arm(&mut self) {
        let entry = opcode::RecvMulti::new(types::Fd(self.socket.as_raw_fd()), GROUP)
            .build()
            .user_data(MULTI);
        // SAFETY: the entry names no memory of ours but the buffer group, whose ring and
        // buffers (`bufring`, `mem`) live until `Drop` has seen the receive end; the socket
        // is owned by `self` and outlives the ring's operations likewise.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        // The queue holds `buffers` entries and multishot mode queues one at a time.
        if pushed.is_ok() {
            self.in_kernel[0] = true;
            self.unsubmitted = true;
        }
    }

    /// Queues a single-shot receive into buffer `bid` (which must not be held).
    fn queue_single(&mut self, bid: u16) -> io::Result<()> {
        let at = usize::from(bid) * self.buffer_len;
        let ptr = self.mem.as_mut_ptr().wrapping_add(at);
        let len = u32::try_from(self.buffer_len).unwrap_or(u32::MAX);
        let entry = opcode::Recv::new(types::Fd(self.socket.as_raw_fd()), ptr, len)
            .build()
            .user_data(u64::from(bid));
        // SAFETY: the entry points at buffer `bid` of `mem` (in bounds: bid < buffers), which is
        // not held and is marked kernel-owned below; no slice over it is formed until its
        // completion is reaped, and `Drop` waits for (or leaks) it. The socket is owned by self.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            return Err(io::Error::other("io_uring submission queue full"));
        }
        self.in_kernel[usize::from(bid)] = true;
        self.unsubmitted = true;
        Ok(())
    }

    /// Writes provided-buffer ring entry `tail` for buffer `bid` (the tail is published apart).
    fn provide(&mut self, bid: u16) {
        let Some(ring) = &self.bufring else { return };
        let slot = usize::from(self.tail & (self.buffers - 1));
        let entry = ring.as_mut_ptr().wrapping_add(slot * ENTRY_LEN);
        let addr = self
            .mem
            .as_ptr()
            .wrapping_add(usize::from(bid) * self.buffer_len) as u64;
        // SAFETY: `entry` is in bounds of the ring mapping (slot < buffers) and 16-byte aligned
        // (page-aligned base); this slot is free: at most `buffers` buffers exist, so the kernel
        // has consumed whatever entry was here. The kernel only reads entries.
        unsafe { entry.cast::<u64>().write(addr) };
        // SAFETY: as above, bytes 8..12 of the entry (u32-aligned).
        unsafe {
            entry
                .wrapping_add(8)
                .cast::<u32>()
                .write(self.buffer_len as u32)
        };
        // SAFETY: as above, bytes 12..14 of the entry (u16-aligned); bytes 14..16 of entry 0
        // are the tail and are left alone.
        unsafe { entry.wrapping_add(12).cast::<u16>().write(bid) };
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries written so far visible to the kernel.
    fn publish_tail(&self) {
        let Some(ring) = &self.bufring else { return };
        let tail = ring.as_mut_ptr().wrapping_add(TAIL_AT).cast::<u16>();
        // SAFETY: the tail is the u16 at bytes 14..16 of the page-aligned ring mapping (aligned,
        // in bounds, alive as long as `self`), shared with the kernel and only accessed
        // atomically by us.
        let tail = unsafe { AtomicU16::from_ptr(tail) };
        // Release pairs with the kernel's acquire load of the tail: the entries written before
        // are complete when it sees the new tail.
        tail.store(self.tail, Ordering::Release);
    }

    fn submit(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => {
                self.unsubmitted = false;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Gives the held buffer back to the kernel and makes the next received datagram the held
    /// one. Returns `false` when none has arrived. Never blocks.
    ///
    /// # Errors
    /// A receive failing for a reason other than a retryable one (the socket closed, say).
    pub fn advance(&mut self) -> io::Result<bool> {
        if let Some((bid, _)) = self.current.take()
            && self.bufring.is_some()
        {
            self.provide(bid);
            self.publish_tail();
        }
        // Single-shot: the held buffer is simply free again; the receive in flight (queued when
        // it completed) goes into the other one.
        let mut submitted = false;
        loop {
            let next = self.ring.completion().next();
            let Some(cqe) = next else {
                if self.unsubmitted && !submitted {
                    // Queued receives (or a re-armed multishot) go to the kernel now.
                    self.submit()?;
                    submitted = true;
                    continue;
                }
                return Ok(false);
            };
            let (user, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            if user == MULTI {
                if !cqueue::more(flags) {
                    // The kernel ended the multishot receive (out of buffers, say): re-arm.
                    self.in_kernel[0] = false;
                    self.rearms += 1;
                    self.arm();
                }
                match (res, cqueue::buffer_select(flags)) {
                    (n, Some(bid)) if n >= 0 && bid < self.buffers => {
                        self.current = Some((bid, (n as usize).min(self.buffer_len)));
                        return Ok(true);
                    }
                    (n, _) if n >= 0 || n == -libc::ENOBUFS => continue,
                    // ECANCELED: the thread that submitted it exited (re-armed above).
                    (n, _) if n == -libc::EINTR || n == -libc::EAGAIN || n == -libc::ECANCELED => {
                        continue;
                    }
                    (n, _) => return Err(io::Error::from_raw_os_error(-n)),
                }
            }
            let Ok(bid) = u16::try_from(user) else {
                continue;
            };
            if bid >= self.buffers || !self.in_kernel[usize::from(bid)] {
                continue;
            }
            self.in_kernel[usize::from(bid)] = false;
            if res >= 0 {
                self.current = Some((bid, (res as usize).min(self.buffer_len)));
                // The next receive goes into the other buffer (buffers is a power of two of at
                // least 2, so `bid ^ 1` is in range), so that exactly one is in flight.
                self.queue_single(bid ^ 1)?;
                return Ok(true);
            }
            if res == -libc::EINTR || res == -libc::EAGAIN || res == -libc::ECANCELED {
                // ECANCELED: the thread that submitted it exited; queue it again from this one.
                self.queue_single(bid)?;
                continue;
            }
            return Err(io::Error::from_raw_os_error(-res));
        }
    }

    /// The held datagram (empty before the first [`UringUdpRecv::advance`] that returned true).
    pub fn current(&self) -> &[u8] {
        let Some((bid, len)) = self.current else {
            return &[];
        };
        let ptr = self
            .mem
            .as_ptr()
            .wrapping_add(usize::from(bid) * self.buffer_len);
        // SAFETY: buffer `bid` is in bounds (bid < buffers, len <= buffer_len) and held: the
        // kernel completed its receive and it is queued again only in `advance`, which takes
        // `&mut self` and so outlives no slice returned here.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }

    /// The receive path in use, and why.
    pub fn mode(&self) -> &RecvMode {
        &self.mode
    }

    /// Times the kernel ended the multishot receive and it was re-armed.
    pub fn rearms(&self) -> u64 {
        self.rearms
    }

    /// The socket.
    pub fn socket(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Cancels every queued receive and waits until the kernel has completed them all.
    fn cancel_all(&mut self) -> io::Result<()> {
        let targets: Vec<u64> = if self.bufring.is_some() {
            if self.in_kernel[0] {
                vec![MULTI]
            } else {
                vec![]
            }
        } else {
            (0..self.buffers)
                .filter(|&b| self.in_kernel[usize::from(b)])
                .map(u64::from)
                .collect()
        };
        for &t in &targets {
            let entry = opcode::AsyncCancel::new(t).build().user_data(CANCEL);
            // SAFETY: a cancellation names no memory, only the `user_data` of the operation.
            let pushed = unsafe { self.ring.submission().push(&entry) };
            if pushed.is_err() {
                self.ring.submit()?;
                // SAFETY: as above.
                let again = unsafe { self.ring.submission().push(&entry) };
                again.map_err(|_| io::Error::other("io_uring submission queue full"))?;
            }
        }
        for _ in 0..DROP_WAIT_ROUNDS {
            let live = if self.bufring.is_some() {
                self.in_kernel[0]
            } else {
                self.in_kernel.iter().any(|&k| k)
            };
            if !live {
                return Ok(());
            }
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            while let Some(cqe) = self.ring.completion().next() {
                let user = cqe.user_data();
                if user == MULTI {
                    if !cqueue::more(cqe.flags()) {
                        self.in_kernel[0] = false;
                    }
                } else if let Ok(b) = u16::try_from(user)
                    && b < self.buffers
                {
                    self.in_kernel[usize::from(b)] = false;
                }
            }
        }
        Err(io::Error::other("receives still queued after cancelling"))
    }
}

impl Drop for UringUdpRecv {
    fn drop(&mut self) {
        if self.cancel_all().is_ok() {
            // SAFETY: every receive has completed, so the kernel no longer writes the buffers,
            // and `mem` is not touched again.
            unsafe { ManuallyDrop::drop(&mut self.mem) };
        } else if let Some(r) = self.bufring.take() {
            // The kernel may still use the buffers: leave them mapped (`mem` is not dropped).
            std::mem::forget(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn receiver(single: bool) -> Option<(UringUdpRecv, std::net::SocketAddr)> {
        receiver_with(single, 8)
    }

    fn receiver_with(single: bool, buffers: u16) -> Option<(UringUdpRecv, std::net::SocketAddr)> {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        match UringUdpRecv::new(
            sock,
            UringRecvOptions {
                buffers,
                buffer_len: 256,
                single_shot: single,
            },
        ) {
            Ok(r) => Some((r, addr)),
            Err(e) => {
                println!("SKIPPED: io_uring unavailable: {e}");
                None
            }
        }
    }

    fn recv_one(rx: &mut UringUdpRecv) -> Vec<u8> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if rx.advance().unwrap() {
                return rx.current().to_vec();
            }
            std::hint::spin_loop();
        }
        panic!("no datagram within 5 s");
    }

    fn round_trip(single: bool) {
        let Some((mut rx, addr)) = receiver(single) else {
            return;
        };
        println!("mode: {}", rx.mode());
        assert_eq!(single, matches!(rx.mode(), RecvMode::SingleShot { .. }));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // More datagrams than buffers, in rounds, so every buffer is reused; and one longer than
        // a buffer, which arrives truncated to it.
        for round in 0..5u8 {
            for i in 0..6u8 {
                tx.send_to(&[round, i, 42], addr).unwrap();
            }
            for i in 0..6u8 {
                assert_eq!(recv_one(&mut rx), vec![round, i, 42]);
            }
        }
        tx.send_to(&[7u8; 300], addr).unwrap();
        assert_eq!(recv_one(&mut rx).len(), 256);
        assert!(!rx.advance().unwrap());
        assert!(rx.current().is_empty());
    }

    #[test]
    fn uring_udp_multishot_round_trip() {
        round_trip(false);
    }

    #[test]
    fn uring_udp_single_shot_round_trip() {
        round_trip(true);
    }

    /// Datagrams sent from another thread while the reader busy-polls are handed out in the
    /// order they were sent, in both modes, with as many buffers as the engine's default.
    /// (Single-shot mode used to keep a receive in flight per buffer; this test then saw, for
    /// example, datagram 4884 handed out after 4885.)
    fn keeps_order(single: bool) {
        let Some((mut rx, addr)) = receiver_with(single, 256) else {
            return;
        };
        set_recv_buffer(rx.socket(), 4 << 20).unwrap();
        const N: u32 = 100_000;
        const BURST: u32 = 40;
        let taken = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen_by_sender = taken.clone();
        let sender = std::thread::spawn(move || {
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            // Bursts, each sent once the reader has taken most of the one before, so that the
            // reader both drains a queue and waits for data with its receives armed.
            for i in 0..N {
                tx.send_to(&i.to_le_bytes(), addr).unwrap();
                if i % BURST == BURST - 1 {
                    let start = Instant::now();
                    while seen_by_sender.load(std::sync::atomic::Ordering::Relaxed) + BURST / 2 < i
                        && start.elapsed() < Duration::from_millis(50)
                    {
                        std::thread::yield_now();
                    }
                }
            }
        });
        let mut last: Option<u32> = None;
        let mut got = 0u32;
        let start = Instant::now();
        let mut seen = Instant::now();
        while last != Some(N - 1) && start.elapsed() < Duration::from_secs(20) {
            if !rx.advance().unwrap() {
                std::thread::yield_now();
                // The last datagrams may have overflowed the buffer: stop once the sender is done
                // and nothing more comes.
                if sender.is_finished() && seen.elapsed() > Duration::from_millis(200) {
                    break;
                }
                continue;
            }
            seen = Instant::now();
            let seq = u32::from_le_bytes(rx.current().try_into().unwrap());
            assert!(
                last.is_none_or(|l| seq > l),
                "{}: datagram {seq} after {last:?}",
                rx.mode()
            );
            last = Some(seq);
            got += 1;
            taken.store(seq, std::sync::atomic::Ordering::Relaxed);
        }
        sender.join().unwrap();
        // Loopback drops only what overflows the receive buffer; most must arrive.
        assert!(got > N / 2, "{}: {got} of {N} datagrams", rx.mode());
        println!("{}: {got} of {N} datagrams, in order", rx.mode());
    }

    #[test]
    fn uring_udp_multishot_keeps_order() {
        keeps_order(false);
    }

    #[test]
    fn uring_udp_single_shot_keeps_order() {
        keeps_order(true);
    }

    #[test]
    fn uring_udp_rearms_after_running_out_of_buffers() {
        let Some((mut rx, addr)) = receiver(false) else {
            return;
        };
        if *rx.mode() != RecvMode::Multishot {
            println!("SKIPPED: multishot unavailable: {}", rx.mode());
            return;
        }
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // 8 buffers, 20 datagrams sent before any is read: the kernel runs out and ends the
        // multishot receive; the rest wait in the socket until it is re-armed.
        for i in 0..20u8 {
            tx.send_to(&[i], addr).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        for i in 0..20u8 {
            assert_eq!(recv_one(&mut rx), vec![i]);
        }
        assert!(rx.rearms() >= 1);
    }

    #[test]
    fn uring_udp_receives_after_the_setup_thread_exits() {
        // The engine sets sources up on a start-up thread that then ends; the kernel cancels a
        // task's requests when it exits, so nothing may stay submitted from there.
        for single in [false, true] {
            let made = std::thread::spawn(move || receiver(single)).join().unwrap();
            let Some((mut rx, addr)) = made else {
                return;
            };
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            for i in 0..3u8 {
                tx.send_to(&[i], addr).unwrap();
                assert_eq!(recv_one(&mut rx), vec![i], "{}", rx.mode());
            }
            assert_eq!(rx.rearms(), 0, "{}", rx.mode());
        }
    }

    #[test]
    fn uring_udp_rejects_bad_options() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = UringUdpRecv::new(
            sock,
            UringRecvOptions {
                buffers: 6,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
    }

    #[test]
    fn reuse_addr_lets_two_receivers_bind_one_port() {
        let a = bind_reuse_addr("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = a.local_addr().unwrap().port();
        let b = bind_reuse_addr(format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
        assert_eq!(b.local_addr().unwrap().port(), port);
        // Without the option the second bind is refused: the test is not vacuous.
        let e = UdpSocket::bind(format!("127.0.0.1:{port}")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        let v6 = bind_reuse_addr("[::1]:0".parse().unwrap());
        if let Ok(s) = v6 {
            assert!(s.local_addr().unwrap().is_ipv6());
        }
    }

    #[test]
    fn recv_buffer_is_set() {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let got = set_recv_buffer(sock.as_fd(), 1 << 20).unwrap();
        assert!(got >= 4096, "{got}");
        assert_eq!(recv_buffer(sock.as_fd()).unwrap(), got);
    }
}
