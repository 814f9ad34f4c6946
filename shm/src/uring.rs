//! Buffered file writer that hands full buffers to the kernel through io_uring.
//!
//! This module exists so that the rest of the workspace can write files through io_uring
//! without any `unsafe` of its own: the only unsafe operation io_uring needs for writing is
//! pushing a submission entry that points at user memory, and that is confined here behind
//! [`UringFileWriter`], whose safe API cannot violate the buffer-ownership invariant.
//!
//! # Ownership invariant
//!
//! Each buffer is in one of two states: *idle* (owned by us: it may be filled, read and
//! freed) or *in flight* (a `Write` entry pointing into it has been pushed and its
//! completion has not been reaped yet: the kernel may read it at any time, so we neither
//! write to it nor free it). A buffer only leaves the in-flight state when its completion
//! is reaped. `Drop` waits for every in-flight buffer and, if waiting itself fails, leaks
//! the buffers rather than freeing memory the kernel might still read.
#![allow(unsafe_code)] // io_uring submission pushes are unsafe; this module keeps them sound.

use std::fmt;
use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use io_uring::{IoUring, opcode, types};
use libc::{EAGAIN, EBUSY, EINTR};

/// Submission queue depth. It must be at least [`MAX_BUFFERS`] so that a push can never find
/// the queue full: there is never more than one queued entry per buffer.
const QUEUE_DEPTH: u32 = 8;
/// Most buffers a writer may own: each buffer has at most one queued entry, and all of them
/// must fit the submission queue at once.
pub const MAX_BUFFERS: usize = QUEUE_DEPTH as usize;
/// Default number of buffers: enough for one to fill while others are on their way to disk.
pub const DEFAULT_BUFFERS: usize = 4;
/// Default buffer size: large enough that the per-submission syscall is amortised.
pub const DEFAULT_BUFFER_SIZE: usize = 1 << 20;
/// Smallest buffer size accepted; smaller buffers would turn every few records into a syscall.
pub const MIN_BUFFER_SIZE: usize = 4096;
/// Largest buffer size accepted; a `Write` entry's length is a `u32` and the kernel caps a
/// single write near 2 GiB anyway.
pub const MAX_BUFFER_SIZE: usize = 1 << 30;
/// How many times one buffer may see `EINTR`/`EAGAIN` before we give up on it, so a kernel
/// that keeps refusing cannot make us spin forever.
const MAX_RETRIES: u8 = 64;
/// How many times waiting may fail with a transient error (`EAGAIN`/`EBUSY`) in a row before
/// we treat the ring as broken.
const MAX_TRANSIENT_WAIT_ERRORS: u32 = 10_000;

/// Checks whether io_uring can be used for file writes in this process.
///
/// It sets up a small ring, checks that the kernel supports the non-vectored `Write` opcode
/// (Linux 5.6+) and completes a `Nop` round trip, so seccomp filters that allow
/// `io_uring_setup` but block `io_uring_enter` are caught too.
///
/// # Errors
///
/// Returns the reason io_uring is unusable: typically `EPERM` (seccomp profile of a
/// container, or the `kernel.io_uring_disabled` sysctl), `ENOSYS` (kernel built without
/// io_uring) or `Unsupported` (kernel too old for `IORING_OP_WRITE`).
pub fn probe() -> io::Result<()> {
    let mut ring = setup_ring(2)?;
    check_ring(&mut ring)
}

fn setup_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::new(entries).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EPERM) => " (blocked by seccomp or the kernel.io_uring_disabled sysctl?)",
            Some(libc::ENOSYS) => " (kernel without io_uring, or blocked by seccomp?)",
            _ => "",
        };
        io::Error::new(e.kind(), format!("io_uring_setup failed: {e}{hint}"))
    })
}

fn check_ring(ring: &mut IoUring) -> io::Result<()> {
    let mut kernel_probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut kernel_probe)
        .map_err(|e| io::Error::new(e.kind(), format!("io_uring opcode probe failed: {e}")))?;
    if !kernel_probe.is_supported(opcode::Write::CODE) {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring: kernel lacks IORING_OP_WRITE (needs Linux 5.6+)",
        ));
    }
    let nop = opcode::Nop::new().build().user_data(u64::MAX);
    // SAFETY: a Nop entry references no user memory, so there is nothing whose lifetime the
    // kernel could outlive.
    let pushed = unsafe { ring.submission().push(&nop) };
    pushed.map_err(|_| io::Error::other("io_uring: fresh submission queue is full"))?;
    wait_for(ring, 1)
        .map_err(|e| io::Error::new(e.kind(), format!("io_uring_enter failed: {e}")))?;
    let cqe = ring
        .completion()
        .next()
        .ok_or_else(|| io::Error::other("io_uring: Nop completed without a completion entry"))?;
    if cqe.result() < 0 {
        let e = io::Error::from_raw_os_error(-cqe.result());
        return Err(io::Error::new(
            e.kind(),
            format!("io_uring Nop failed: {e}"),
        ));
    }
    Ok(())
}

/// Submits queued entries and waits for `want` completions, retrying the errors that only
/// mean "try again" so callers see real failures only.
fn wait_for(ring: &IoUring, want: usize) -> io::Result<()> {
    let mut transient = 0u32;
    loop {
        match ring.submit_and_wait(want) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(e.raw_os_error(), Some(code) if code == EAGAIN || code == EBUSY)
                    && transient < MAX_TRANSIENT_WAIT_ERRORS =>
            {
                transient += 1;
                std::thread::yield_now();
            }
            Err(e) => return Err(e),
        }
    }
}

/// What to do with a buffer after one of its completions.
#[derive(Debug)]
enum Outcome {
    /// All bytes reached the file; the buffer is idle again.
    Done,
    /// Part of the buffer is still unwritten (short write or retryable error); resubmit
    /// `buf[done..len]` at `file_offset + done`.
    Resubmit,
    /// The write failed; the buffer is idle again but its bytes were not written.
    Failed(io::Error),
}

/// Applies one completion result to a buffer's progress. Kept free of ring state so the
/// short-write and error paths can be tested without a kernel that produces them.
fn classify(result: i32, done: &mut usize, len: usize, retries: &mut u8) -> Outcome {
    match usize::try_from(result) {
        Ok(0) => Outcome::Failed(io::Error::new(
            io::ErrorKind::WriteZero,
            "io_uring write completed with 0 bytes",
        )),
        Ok(n) if n > len - *done => Outcome::Failed(io::Error::other(format!(
            "io_uring write reported {n} bytes for a {}-byte request",
            len - *done
        ))),
        Ok(n) => {
            *done += n;
            if *done == len {
                Outcome::Done
            } else {
                Outcome::Resubmit
            }
        }
        Err(_) => {
            let errno = result.checked_neg().unwrap_or(i32::MAX);
            if (errno == EINTR || errno == EAGAIN) && *retries < MAX_RETRIES {
                *retries += 1;
                Outcome::Resubmit
            } else {
                Outcome::Failed(io::Error::from_raw_os_error(errno))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum SlotState {
    /// Owned by us.
    Idle,
    /// The kernel may be reading `buf[done..len]`; see the module's ownership invariant.
    InFlight {
        file_offset: u64,
        done: usize,
        retries: u8,
    },
}

#[derive(Debug)]
struct Slot {
    buf: Box<[u8]>,
    /// Bytes of `buf` holding data (being filled while idle, being written while in flight).
    len: usize,
    state: SlotState,
}

/// A sticky error: once a write fails the file has a hole, so every later call must fail too.
#[derive(Debug, Clone)]
struct StickyError {
    kind: io::ErrorKind,
    raw: Option<i32>,
    message: String,
}

impl StickyError {
    fn new(e: &io::Error) -> Self {
        Self {
            kind: e.kind(),
            raw: e.raw_os_error(),
            message: e.to_string(),
        }
    }

    fn to_io(&self) -> io::Error {
        match self.raw {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(self.kind, self.message.clone()),
        }
    }
}

/// The ring and the buffers it may be reading. Split from the file so `finish` can move the
/// file out while this part's `Drop` still guarantees no buffer is freed while in flight.
struct Engine {
    ring: IoUring,
    /// Raw fd of the owning writer's file, which outlives this engine (field order in
    /// [`UringFileWriter`] and the explicit drop in `finish`), so it never names a reused fd.
    fd: RawFd,
    slots: Vec<Slot>,
    /// Slot currently being filled, if any.
    current: Option<usize>,
    /// File offset the next submitted buffer will be written at.
    next_offset: u64,
    /// Bytes accepted through `write`.
    accepted: u64,
    /// Bytes the kernel has confirmed written.
    completed: u64,
    in_flight: usize,
    failed: Option<StickyError>,
}

impl Engine {
    fn check_failed(&self) -> io::Result<()> {
        self.failed.as_ref().map_or(Ok(()), |e| Err(e.to_io()))
    }

    fn fail(&mut self, e: io::Error) -> io::Error {
        if self.failed.is_none() {
            self.failed = Some(StickyError::new(&e));
        }
        e
    }

    /// Queues `buf[done..len]` of an in-flight slot. The slot must already be marked in
    /// flight so a failure here can restore it to idle consistently.
    fn push_write(&mut self, idx: usize) -> io::Result<()> {
        let slot = &self.slots[idx];
        let SlotState::InFlight {
            file_offset, done, ..
        } = slot.state
        else {
            unreachable!("push_write on an idle slot");
        };
        let remaining = &slot.buf[done..slot.len];
        let len = u32::try_from(remaining.len()).expect("buffer size is capped below u32::MAX");
        let entry = opcode::Write::new(types::Fd(self.fd), remaining.as_ptr(), len)
            .offset(file_offset + done as u64)
            .build()
            .user_data(idx as u64);
        // SAFETY: the entry points at `slot.buf[done..len]`, a heap buffer owned by this
        // engine whose slot is marked in flight; in-flight buffers are neither written nor
        // freed until their completion is reaped (`Drop` waits for them or leaks them), so
        // the memory stays valid and unchanged for as long as the kernel may read it. The
        // fd stays open for the engine's whole life (see `Engine::fd`).
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // Cannot happen while QUEUE_DEPTH >= MAX_BUFFERS, but if it did the kernel
            // never saw the entry, so the buffer is ours again.
            self.slots[idx].state = SlotState::Idle;
            self.slots[idx].len = 0;
            self.in_flight -= 1;
            return Err(self.fail(io::Error::other("io_uring submission queue full")));
        }
        // Start the write now so it overlaps filling the next buffer. A transient enter
        // error leaves the entry queued; the next enter submits it, so it is not fatal.
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || matches!(e.raw_os_error(), Some(c) if c == EAGAIN || c == EBUSY) =>
            {
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Hands a filled slot to the kernel at the next file offset.
    fn submit_slot(&mut self, idx: usize) -> io::Result<()> {
        if self.current == Some(idx) {
            self.current = None;
        }
        let slot = &mut self.slots[idx];
        debug_assert!(matches!(slot.state, SlotState::Idle) && slot.len > 0);
        slot.state = SlotState::InFlight {
            file_offset: self.next_offset,
            done: 0,
            retries: 0,
        };
        self.next_offset += slot.len as u64;
        self.in_flight += 1;
        self.push_write(idx)
    }

    /// Processes every completion already posted, without blocking.
    fn reap(&mut self) {
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                return;
            };
            let Ok(idx) = usize::try_from(cqe.user_data()) else {
                continue;
            };
            let Some(slot) = self.slots.get_mut(idx) else {
                continue;
            };
            let SlotState::InFlight {
                file_offset,
                mut done,
                mut retries,
            } = slot.state
            else {
                continue;
            };
            let outcome = classify(cqe.result(), &mut done, slot.len, &mut retries);
            match outcome {
                Outcome::Done => {
                    self.completed += slot.len as u64;
                    slot.len = 0;
                    slot.state = SlotState::Idle;
                    self.in_flight -= 1;
                }
                Outcome::Resubmit => {
                    slot.state = SlotState::InFlight {
                        file_offset,
                        done,
                        retries,
                    };
                    // A failure is recorded as sticky inside push_write.
                    let _ = self.push_write(idx);
                }
                Outcome::Failed(e) => {
                    slot.len = 0;
                    slot.state = SlotState::Idle;
                    self.in_flight -= 1;
                    self.fail(e);
                }
            }
        }
    }

    /// Blocks until at least one completion has been processed.
    fn wait_one(&mut self) -> io::Result<()> {
        if let Err(e) = wait_for(&self.ring, 1) {
            return Err(self.fail(e));
        }
        self.reap();
        Ok(())
    }

    fn wait_all(&mut self) -> io::Result<()> {
        self.reap();
        while self.in_flight > 0 {
            self.wait_one()?;
        }
        Ok(())
    }

    /// Returns the slot to fill, waiting for the kernel to release one if all are in flight.
    fn acquire(&mut self) -> io::Result<usize> {
        if let Some(idx) = self.current {
            return Ok(idx);
        }
        loop {
            self.reap();
            self.check_failed()?;
            if let Some(idx) = self
                .slots
                .iter()
                .position(|s| matches!(s.state, SlotState::Idle))
            {
                self.current = Some(idx);
                return Ok(idx);
            }
            self.wait_one()?;
        }
    }

    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_failed()?;
        let mut copied = 0;
        while copied < data.len() {
            let idx = match self.acquire() {
                Ok(idx) => idx,
                Err(_) if copied > 0 => break,
                Err(e) => return Err(e),
            };
            let slot = &mut self.slots[idx];
            let n = (slot.buf.len() - slot.len).min(data.len() - copied);
            slot.buf[slot.len..slot.len + n].copy_from_slice(&data[copied..copied + n]);
            slot.len += n;
            copied += n;
            if slot.len == slot.buf.len() {
                // The bytes are accepted either way; a failure is sticky and reported by
                // the next call.
                if self.submit_slot(idx).is_err() {
                    break;
                }
            }
        }
        self.accepted += copied as u64;
        Ok(copied)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.check_failed()?;
        if let Some(idx) = self.current
            && self.slots[idx].len > 0
        {
            self.submit_slot(idx)?;
        }
        self.wait_all()?;
        self.check_failed()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Like BufWriter, push out buffered bytes on a best-effort basis.
        if self.failed.is_none()
            && let Some(idx) = self.current
            && self.slots[idx].len > 0
        {
            let _ = self.submit_slot(idx);
        }
        self.reap();
        while self.in_flight > 0 {
            if wait_for(&self.ring, 1).is_err() {
                // We can no longer learn when the kernel is done with the in-flight buffers,
                // so freeing them could hand memory the kernel still reads to a new owner.
                // Leaking is the only sound choice.
                for slot in std::mem::take(&mut self.slots) {
                    if matches!(slot.state, SlotState::InFlight { .. }) {
                        Box::leak(slot.buf);
                    }
                }
                return;
            }
            self.reap();
        }
    }
}

/// Error from setting up a [`UringFileWriter`]; gives the file back so the caller can fall
/// back to ordinary I/O on it.
#[derive(Debug)]
pub struct SetupError {
    error: io::Error,
    file: File,
}

impl SetupError {
    /// Why io_uring could not be used.
    #[must_use]
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// Splits into the reason and the untouched file.
    #[must_use]
    pub fn into_parts(self) -> (io::Error, File) {
        (self.error, self.file)
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "io_uring unavailable: {}", self.error)
    }
}

impl std::error::Error for SetupError {}

impl From<SetupError> for io::Error {
    fn from(e: SetupError) -> Self {
        io::Error::new(e.error.kind(), e.to_string())
    }
}

/// Sequential file writer that copies into a few large buffers and writes each full buffer
/// through io_uring at the file's running offset, so disk writes overlap filling the next
/// buffer.
///
/// Write errors reported by the kernel are sticky: the first one is returned by the next
/// `write`/`flush`/`finish` and every later call fails too, because the file now has a hole.
///
/// Dropping the writer submits buffered bytes on a best-effort basis and waits for all
/// in-flight writes, ignoring errors; call [`flush`](Write::flush) or
/// [`finish`](Self::finish) to observe them.
pub struct UringFileWriter {
    // Declared before `file` so that it drops first: its Drop may still submit writes to
    // and wait on `file`'s fd.
    engine: Engine,
    file: File,
}

impl fmt::Debug for UringFileWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringFileWriter")
            .field("file", &self.file)
            .field("buffers", &self.engine.slots.len())
            .field("in_flight", &self.engine.in_flight)
            .field("bytes_written", &self.engine.accepted)
            .field("bytes_completed", &self.engine.completed)
            .field("failed", &self.engine.failed)
            .finish_non_exhaustive()
    }
}

impl UringFileWriter {
    /// Creates (or truncates) `path` and wraps it with the default buffering
    /// ([`DEFAULT_BUFFERS`] × [`DEFAULT_BUFFER_SIZE`]).
    ///
    /// # Errors
    ///
    /// Fails if the file cannot be created or io_uring is unavailable (see [`probe`]).
    pub fn create(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = File::create(path)?;
        Ok(Self::new(file)?)
    }

    /// Wraps an open, writable, seekable file with the default buffering. Writing starts at
    /// the file's current position.
    ///
    /// # Errors
    ///
    /// See [`with_buffers`](Self::with_buffers); the file is handed back in the error.
    pub fn new(file: File) -> Result<Self, SetupError> {
        Self::with_buffers(file, DEFAULT_BUFFERS, DEFAULT_BUFFER_SIZE)
    }

    /// Wraps an open, writable, seekable file with `count` buffers of `size` bytes each.
    /// Writing starts at the file's current position.
    ///
    /// # Errors
    ///
    /// Returns a [`SetupError`] carrying the file back if `count` is not in
    /// `1..=MAX_BUFFERS`, `size` is not in `MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE`, the file was
    /// opened with `O_APPEND` (the kernel would ignore our offsets and concurrent buffers
    /// could land out of order), the file is not seekable, or io_uring is unavailable.
    pub fn with_buffers(file: File, count: usize, size: usize) -> Result<Self, SetupError> {
        match Self::setup(&file, count, size) {
            Ok(engine) => Ok(Self { engine, file }),
            Err(error) => Err(SetupError { error, file }),
        }
    }

    fn setup(file: &File, count: usize, size: usize) -> io::Result<Engine> {
        if !(1..=MAX_BUFFERS).contains(&count) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer count {count} outside 1..={MAX_BUFFERS}"),
            ));
        }
        if !(MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("buffer size {size} outside {MIN_BUFFER_SIZE}..={MAX_BUFFER_SIZE}"),
            ));
        }
        let fd = file.as_raw_fd();
        // SAFETY: F_GETFL takes no pointer argument and only reads the status flags of `fd`,
        // which is open because it is borrowed from `file` for this call.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_APPEND != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "io_uring writer needs explicit offsets; file is opened with O_APPEND",
            ));
        }
        let next_offset = (&*file).stream_position()?;
        let mut ring = setup_ring(QUEUE_DEPTH)?;
        check_ring(&mut ring)?;
        let slots = (0..count)
            .map(|_| Slot {
                buf: vec![0u8; size].into_boxed_slice(),
                len: 0,
                state: SlotState::Idle,
            })
            .collect();
        Ok(Engine {
            ring,
            fd,
            slots,
            current: None,
            next_offset,
            accepted: 0,
            completed: 0,
            in_flight: 0,
            failed: None,
        })
    }

    /// Bytes accepted by `write` so far (buffered, in flight or on disk).
    #[must_use]
    pub fn bytes_written(&self) -> u64 {
        self.engine.accepted
    }

    /// Bytes the kernel has confirmed written to the file so far.
    #[must_use]
    pub fn bytes_completed(&self) -> u64 {
        self.engine.completed
    }

    /// The underlying file. Its cursor is not advanced by queued writes until
    /// [`finish`](Self::finish) or [`into_file`](Self::into_file).
    #[must_use]
    pub fn get_ref(&self) -> &File {
        &self.file
    }

    /// Flushes and waits for every write, then returns the file positioned after the last
    /// byte written, without syncing it to stable storage.
    ///
    /// # Errors
    ///
    /// Returns the first write error, or the seek error. Buffers are always released
    /// safely, even on error.
    pub fn into_file(mut self) -> io::Result<File> {
        self.engine.flush()?;
        let end = self.engine.next_offset;
        let Self { engine, mut file } = self;
        drop(engine);
        file.seek(SeekFrom::Start(end))?;
        Ok(file)
    }

    /// Flushes, waits for every write, `fsync`s the file and returns it positioned after the
    /// last byte written.
    ///
    /// # Errors
    ///
    /// Returns the first write error, or the `fsync`/seek error.
    pub fn finish(self) -> io::Result<File> {
        let file = self.into_file()?;
        file.sync_all()?;
        Ok(file)
    }
}

impl Write for UringFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.engine.write(buf)
    }

    /// Submits the partly filled buffer and waits until every queued write has completed.
    fn flush(&mut self) -> io::Result<()> {
        self.engine.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn pattern(len: usize) -> Vec<u8> {
        // A non-periodic-at-power-of-two pattern so misplaced buffers show up as mismatches.
        (0..len)
            .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
            .collect()
    }

    fn write_chunks(w: &mut impl Write, data: &[u8]) {
        let sizes = [1usize, 7, 4093, 65_537, 13, 1 << 20, 333_333];
        let mut pos = 0;
        let mut k = 0;
        while pos < data.len() {
            let n = sizes[k % sizes.len()].min(data.len() - pos);
            w.write_all(&data[pos..pos + n]).unwrap();
            pos += n;
            k += 1;
        }
    }

    fn uring_available() -> bool {
        match probe() {
            Ok(()) => {
                println!("io_uring probe: ok");
                true
            }
            Err(e) => {
                println!("skipped: io_uring unavailable: {e}");
                false
            }
        }
    }

    #[test]
    fn uring_writer_is_send() {
        // The recorder hands the writer to its own thread.
        fn assert_send<T: Send>() {}
        assert_send::<UringFileWriter>();
    }

    #[test]
    fn uring_probe_reports() {
        match probe() {
            Ok(()) => println!("io_uring probe: ok"),
            Err(e) => println!("io_uring probe: unavailable: {e}"),
        }
    }

    #[test]
    fn uring_round_trip_odd_chunks() {
        if !uring_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt.bin");
        let data = pattern(5 * (1 << 20) + 12_345);
        let mut w =
            UringFileWriter::with_buffers(File::create(&path).unwrap(), 3, 256 * 1024).unwrap();
        write_chunks(&mut w, &data);
        assert_eq!(w.bytes_written(), data.len() as u64);
        let mut file = w.finish().unwrap();
        assert_eq!(file.stream_position().unwrap(), data.len() as u64);
        let back = std::fs::read(&path).unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "contents differ");
        // The returned file is usable for ordinary appends at the right place.
        file.write_all(b"tail").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            data.len() as u64 + 4
        );
    }

    #[test]
    fn uring_flush_mid_stream_and_starting_offset() {
        if !uring_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mid.bin");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"header").unwrap();
        let mut w = UringFileWriter::with_buffers(file, 2, MIN_BUFFER_SIZE).unwrap();
        let data = pattern(100_000);
        for (i, chunk) in data.chunks(9_999).enumerate() {
            w.write_all(chunk).unwrap();
            if i % 3 == 0 {
                w.flush().unwrap();
                assert_eq!(w.bytes_completed(), w.bytes_written());
            }
        }
        w.finish().unwrap();
        let mut back = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(&back[..6], b"header");
        assert!(back[6..] == data[..], "contents differ");
    }

    #[test]
    fn uring_drop_without_finish_writes_everything() {
        if !uring_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("drop.bin");
        let data = pattern(3 * MIN_BUFFER_SIZE + 17);
        {
            let mut w =
                UringFileWriter::with_buffers(File::create(&path).unwrap(), 2, MIN_BUFFER_SIZE)
                    .unwrap();
            w.write_all(&data).unwrap();
        }
        assert!(std::fs::read(&path).unwrap() == data);
    }

    #[test]
    fn uring_kernel_error_is_sticky_not_panic() {
        if !uring_available() {
            return;
        }
        // /dev/full fails every write with ENOSPC, exercising the completion error path.
        let Ok(file) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            println!("skipped: /dev/full not available");
            return;
        };
        let mut w = UringFileWriter::with_buffers(file, 2, MIN_BUFFER_SIZE).unwrap();
        let data = pattern(10 * MIN_BUFFER_SIZE);
        let first = w.write_all(&data).and_then(|()| w.flush());
        let err = first.expect_err("writes to /dev/full must fail");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(w.write(b"x").is_err());
        assert!(w.flush().is_err());
        assert!(w.finish().is_err());
    }

    #[test]
    fn uring_read_only_file_errors() {
        if !uring_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro.bin");
        std::fs::write(&path, b"").unwrap();
        let file = File::open(&path).unwrap();
        let mut w = UringFileWriter::with_buffers(file, 2, MIN_BUFFER_SIZE).unwrap();
        w.write_all(b"hello").unwrap();
        let err = w.flush().expect_err("write to a read-only fd must fail");
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    }

    #[test]
    fn uring_rejects_append_and_bad_sizes_giving_file_back() {
        if !uring_available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let err = UringFileWriter::new(file).unwrap_err();
        assert_eq!(err.error().kind(), io::ErrorKind::InvalidInput);
        let (_, mut file) = err.into_parts();
        file.write_all(b"still usable").unwrap();

        let file = File::create(dir.path().join("b.bin")).unwrap();
        let err = UringFileWriter::with_buffers(file, 0, MIN_BUFFER_SIZE).unwrap_err();
        assert_eq!(err.error().kind(), io::ErrorKind::InvalidInput);
        let (_, file) = err.into_parts();
        let err = UringFileWriter::with_buffers(file, 2, 10).unwrap_err();
        assert_eq!(err.error().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn uring_classify_short_writes_and_errors() {
        let mut done = 0;
        let mut retries = 0;
        assert!(matches!(
            classify(100, &mut done, 1000, &mut retries),
            Outcome::Resubmit
        ));
        assert_eq!(done, 100);
        assert!(matches!(
            classify(-EINTR, &mut done, 1000, &mut retries),
            Outcome::Resubmit
        ));
        assert_eq!((done, retries), (100, 1));
        assert!(matches!(
            classify(900, &mut done, 1000, &mut retries),
            Outcome::Done
        ));
        assert_eq!(done, 1000);

        let mut done = 0;
        assert!(matches!(
            classify(0, &mut done, 10, &mut retries),
            Outcome::Failed(e) if e.kind() == io::ErrorKind::WriteZero
        ));
        assert!(matches!(
            classify(11, &mut done, 10, &mut retries),
            Outcome::Failed(_)
        ));
        assert!(matches!(
            classify(-libc::ENOSPC, &mut done, 10, &mut retries),
            Outcome::Failed(e) if e.raw_os_error() == Some(libc::ENOSPC)
        ));
        let mut retries = MAX_RETRIES;
        assert!(matches!(
            classify(-EAGAIN, &mut done, 10, &mut retries),
            Outcome::Failed(e) if e.raw_os_error() == Some(EAGAIN)
        ));
        assert!(matches!(
            classify(i32::MIN, &mut done, 10, &mut retries),
            Outcome::Failed(_)
        ));
    }
}
