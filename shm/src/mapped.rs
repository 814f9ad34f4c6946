//! Rings in memory-mapped files: creating one for a writer, attaching readers, inspecting one.
//! The file plumbing (atomic create, open and map, attach states, waiting) is shared with the
//! health page ([`crate::page`]).
#![allow(unsafe_code)] // Viewing a file mapping as atomic words, and asking the kernel whether a pid lives.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memmap2::{MmapOptions, MmapRaw};

use crate::layout::HEADER_LEN;
use crate::page::PageError;
use crate::ring::{
    GeometryError, HeaderError, HeaderState, Region, RingGeometry, RingInfo, RingReader,
    RingWriter, StartAt, WriterIdentity, claim_slot, read_header, reader_slots, release_slot,
};
use crate::sigbus;
use crate::sync::AtomicU64;

/// Errors setting up or inspecting a mapped ring or page. Each names the file.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    /// An operating-system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file is not a ring this build can read.
    #[error("{path}: {source}")]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong with its header.
        source: HeaderError,
    },
    /// The file is not a health page this build can read, or a page cannot have that shape.
    #[error("{path}: {source}")]
    Page {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: PageError,
    },
    /// The requested shape cannot make a ring.
    #[error(transparent)]
    Geometry(#[from] GeometryError),
    /// The ring or page did not become ready in time.
    #[error("{path}: not ready after {waited:?}: {state}")]
    NotReady {
        /// The file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
        /// The last state seen.
        state: &'static str,
    },
    /// A configured group does not exist.
    #[error("group {0:?} not found in /etc/group")]
    UnknownGroup(String),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ShmError + 'a {
    move |source| ShmError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A file mapping viewed as atomic words. Registered with the SIGBUS guard for its lifetime.
#[derive(Debug)]
pub struct MappedRegion {
    map: MmapRaw,
    words: usize,
    writable: bool,
    path: PathBuf,
    _guard: sigbus::Registration,
}

impl MappedRegion {
    pub(crate) fn new(
        file: &File,
        path: &Path,
        len: usize,
        writable: bool,
    ) -> Result<Self, ShmError> {
        Self::map(file, path, len, writable, writable)
    }

    fn map(
        file: &File,
        path: &Path,
        len: usize,
        writable: bool,
        populate: bool,
    ) -> Result<Self, ShmError> {
        let mut options = MmapOptions::new();
        options.len(len);
        if populate {
            options.populate();
        }
        let map = if writable {
            options.map_raw(file)
        } else {
            options.map_raw_read_only(file)
        }
        .map_err(io_err("mmap", path))?;
        let guard = sigbus::register(map.as_ptr() as usize, len, path);
        Ok(Self {
            map,
            words: len / 8,
            writable,
            path: path.to_path_buf(),
            _guard: guard,
        })
    }

    /// The mapped file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this mapping may be written.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The mapping's length in bytes.
    pub fn len_bytes(&self) -> usize {
        self.words * 8
    }

    /// Faults every page of the mapping in now, by loading one word per page, so that the first
    /// touch on a hot path finds the page mapped. Returns the number of pages touched.
    ///
    /// Loads work on read-only mappings too; on a shared file mapping a load maps the file's
    /// page, which is the one the writer fills.
    pub fn prefault(&self) -> usize {
        let step = (crate::host::page_size() / 8).max(1);
        let words = self.words();
        let mut sum = 0u64;
        for w in words.iter().step_by(step) {
            // Relaxed: only the fault matters, not the value.
            sum = sum.wrapping_add(w.load(std::sync::atomic::Ordering::Relaxed));
        }
        std::hint::black_box(sum);
        words.len().div_ceil(step)
    }

    /// Asks the kernel to back this mapping with transparent huge pages
    /// (`madvise(MADV_HUGEPAGE)`). For a file in tmpfs (`/dev/shm`) it takes effect when
    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled` is `advise`, `within_size` or
    /// `always`; pages already faulted in are collapsed later by khugepaged, if at all.
    ///
    /// # Errors
    /// The kernel's answer (`EINVAL` on kernels without transparent huge pages).
    pub fn advise_huge_pages(&self) -> io::Result<()> {
        self.map.advise(memmap2::Advice::HugePage)
    }
}

impl Region for MappedRegion {
    #[inline(always)]
    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned (so 8-aligned) and `words * 8` bytes long, and it
        // lives as long as `self`, which the returned slice borrows. AtomicU64 has the size,
        // alignment and bit validity of u64, and every bit pattern is a valid u64. Every party
        // (this process and others) touches the words only through atomic operations, which is
        // what makes shared access sound; a read-only mapping is only ever loaded from (readers
        // without a slot never store). The file being truncated underneath is a SIGBUS, which
        // the guard registered in `new` turns into a clear exit instead of a crash.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), self.words) }
    }
}

/// Nanoseconds since the UNIX epoch, from the system clock.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Whether a process with this pid exists (a pid we may not signal still exists).
pub fn pid_alive(pid: u64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only checks that the pid exists and that we
    // may signal it. It has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// How to create a ring file.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Data area bytes (power of two).
    pub capacity: usize,
    /// Largest payload.
    pub max_payload: usize,
    /// What the payloads are ([`crate::ring::content`]).
    pub content_tag: u64,
    /// A group that may read the ring (mode 0640 and that group); otherwise mode 0600.
    pub group: Option<String>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        Self {
            capacity: 64 << 20,
            max_payload: 64 << 10,
            content_tag: crate::ring::content::DBN,
            group: None,
        }
    }
}

fn lookup_group(name: &str) -> Result<u32, ShmError> {
    let groups =
        std::fs::read_to_string("/etc/group").map_err(io_err("read", Path::new("/etc/group")))?;
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let (n, _, gid) = (fields.next()?, fields.next()?, fields.next()?);
            (n == name).then(|| gid.parse().ok()).flatten()
        })
        .next()
        .or_else(|| name.parse().ok())
        .ok_or_else(|| ShmError::UnknownGroup(name.to_string()))
}

/// Creates a ring file at `path` and returns its writer.
///
/// The ring is built in a temporary file beside `path` and renamed into place once its header is
/// complete, so a reader never maps a half-sized file; a reader still attached to an older ring
/// at the same path keeps its own (now unlinked) file.
///
/// # Errors
/// Invalid geometry, an unknown group, or a failing file operation.
pub fn create(
    path: &Path,
    options: &CreateOptions,
    meta: &[u8],
) -> Result<RingWriter<MappedRegion>, ShmError> {
    create_with_pages(path, options, meta, false).map(|(writer, _)| writer)
}

/// Creates a `len`-byte file at `path` atomically: the file is built in a temporary file beside
/// `path`, mapped read-write and handed to `init` (with the temporary path, for errors), and
/// renamed into place only once `init` succeeded. On any failure the temporary file is removed.
/// `group` may read the file (mode 0640 and that group); otherwise the mode is 0600.
pub(crate) fn create_file<T>(
    path: &Path,
    len: usize,
    group: Option<&str>,
    init: impl FnOnce(MappedRegion, &Path) -> Result<T, ShmError>,
) -> Result<T, ShmError> {
    create_file_with(path, len, group, false, init).map(|(made, _)| made)
}

/// What backs the pages of a ring file created with [`create_with_pages`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageBacking {
    /// Base pages only (huge pages not asked for, and not on hugetlbfs).
    Base,
    /// The file lives on hugetlbfs: every page is a huge page of this many bytes (the file is
    /// rounded up to a whole number of them).
    HugeTlbFs {
        /// Huge page size in bytes.
        page_size: u64,
    },
    /// Transparent huge pages were asked for with `madvise(MADV_HUGEPAGE)` before the pages
    /// were faulted in; whether the kernel grants them depends on `shmem_enabled`.
    TransparentAdvised,
    /// Huge pages were asked for and refused: the kernel's answer.
    Refused(String),
}

/// Like [`create`], and says what backs the ring's pages. A path on hugetlbfs gets huge pages
/// by construction, with or without `huge_pages` (the file is rounded up to whole huge pages, as
/// hugetlbfs requires, here and in [`create`]); with `huge_pages`, any other path is advised
/// towards transparent huge pages before its pages are faulted in (which they all are before
/// this returns, as with [`create`]).
///
/// # Errors
/// As [`create`].
pub fn create_with_pages(
    path: &Path,
    options: &CreateOptions,
    meta: &[u8],
    huge_pages: bool,
) -> Result<(RingWriter<MappedRegion>, PageBacking), ShmError> {
    let geometry = RingGeometry::new(options.capacity, options.max_payload, meta.len())?;
    create_file_with(
        path,
        geometry.total_len(),
        options.group.as_deref(),
        huge_pages,
        |region, tmp| {
            let now = unix_now_ns();
            let identity = WriterIdentity {
                content_tag: options.content_tag,
                pid: u64::from(std::process::id()),
                start_ns: now,
            };
            RingWriter::init(region, geometry, meta, identity, now).map_err(|source| {
                ShmError::Header {
                    path: tmp.to_path_buf(),
                    source,
                }
            })
        },
    )
}

fn create_file_with<T>(
    path: &Path,
    len: usize,
    group: Option<&str>,
    huge_pages: bool,
    init: impl FnOnce(MappedRegion, &Path) -> Result<T, ShmError>,
) -> Result<(T, PageBacking), ShmError> {
    let gid = group.map(lookup_group).transpose()?;
    let name = path.file_name().ok_or_else(|| ShmError::Io {
        op: "create",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let mode = if let Some(gid) = gid {
            std::os::unix::fs::fchown(&file, None, Some(gid)).map_err(io_err("chown", &tmp))?;
            0o640
        } else {
            0o600
        };
        // Explicit, so the umask cannot widen or narrow what was asked for.
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &tmp))?;
        // A file on hugetlbfs is on huge pages whatever was asked, and can only be sized and
        // mapped in whole huge pages.
        let hugetlbfs = crate::host::hugetlbfs_page_size(&tmp)
            .map_err(io_err("statfs", &tmp))?
            .filter(|p| *p > 0);
        let len = match hugetlbfs {
            Some(p) => (len as u64).div_ceil(p).saturating_mul(p),
            None => len as u64,
        };
        file.set_len(len).map_err(io_err("resize", &tmp))?;
        let len = usize::try_from(len).map_err(|_| {
            io_err("map", &tmp)(io::Error::new(
                io::ErrorKind::InvalidData,
                "file larger than the address space",
            ))
        })?;
        let (region, backing) = match (huge_pages, hugetlbfs) {
            (false, None) => (
                MappedRegion::new(&file, &tmp, len, true)?,
                PageBacking::Base,
            ),
            (_, Some(page_size)) => (
                MappedRegion::new(&file, &tmp, len, true)?,
                PageBacking::HugeTlbFs { page_size },
            ),
            (true, None) => {
                // Advise first, fault in after: the advice only shapes pages not yet faulted.
                let region = MappedRegion::map(&file, &tmp, len, true, false)?;
                let backing = match region.advise_huge_pages() {
                    Ok(()) => PageBacking::TransparentAdvised,
                    Err(e) => PageBacking::Refused(crate::host::errno_name(&e)),
                };
                region.prefault();
                (region, backing)
            }
        };
        let made = init(region, &tmp)?;
        std::fs::rename(&tmp, path).map_err(io_err("rename", path))?;
        Ok((made, backing))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What a reader finds at a path: a ring reader by default, a page reader for
/// [`crate::page::try_attach_page`].
#[derive(Debug)]
pub enum Attach<T = RingReader<MappedRegion>> {
    /// No file yet.
    NoFile,
    /// The file exists but is shorter than a header: not sized/mapped by its writer yet.
    NotMapped {
        /// Current length.
        len: u64,
    },
    /// The header is being written.
    VersionNotWritten,
    /// Attached.
    Ready(T),
}

impl<T> Attach<T> {
    fn describe(&self) -> &'static str {
        match self {
            Attach::NoFile => "no file yet",
            Attach::NotMapped { .. } => "file exists but is not sized yet",
            Attach::VersionNotWritten => "header version not written yet",
            Attach::Ready(_) => "ready",
        }
    }
}

/// What opening a ring or page file found.
pub(crate) enum Opened {
    /// No file at the path.
    Missing,
    /// A file shorter than the caller's minimum, a header (its length).
    Short(u64),
    /// The whole file, mapped.
    Mapped(MappedRegion),
}

/// Opens and maps a ring or page file, read-write when `prefer_write` and permitted, else
/// read-only. A file shorter than `min_len` bytes is not mapped.
pub(crate) fn open_region(
    path: &Path,
    prefer_write: bool,
    min_len: usize,
) -> Result<Opened, ShmError> {
    let open = |write: bool| OpenOptions::new().read(true).write(write).open(path);
    let (file, writable) = match open(prefer_write) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && prefer_write => {
            (open(false), false)
        }
        other => (other, prefer_write),
    };
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Opened::Missing),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    if len < min_len as u64 {
        return Ok(Opened::Short(len));
    }
    let len = usize::try_from(len).map_err(|_| {
        io_err("map", path)(io::Error::new(
            io::ErrorKind::InvalidData,
            "file larger than the address space",
        ))
    })?;
    Ok(Opened::Mapped(MappedRegion::new(
        &file,
        path,
        len & !7,
        writable,
    )?))
}

/// Options for attaching a reader.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    /// Where to start reading.
    pub start: StartAt,
    /// Map read-only and take no reader slot (the reader is then not listed by `ring stat`).
    pub read_only: bool,
}

/// Tries once to attach a reader to the ring at `path`.
///
/// # Errors
/// A file that exists but is not a valid ring (wrong magic, wrong version, too small, bad
/// fields), or a failing file operation. A ring that is not ready yet is an [`Attach`] state.
pub fn try_attach(path: &Path, options: AttachOptions) -> Result<Attach, ShmError> {
    let region = match open_region(path, !options.read_only, HEADER_LEN)? {
        Opened::Missing => return Ok(Attach::NoFile),
        Opened::Short(len) => return Ok(Attach::NotMapped { len }),
        Opened::Mapped(region) => region,
    };
    let header = read_header(region.words()).map_err(|source| ShmError::Header {
        path: path.to_path_buf(),
        source,
    })?;
    let info = match header {
        HeaderState::Ready(info) => info,
        HeaderState::TooShortForHeader => return Ok(Attach::NotMapped { len: 0 }),
        HeaderState::VersionNotWritten => return Ok(Attach::VersionNotWritten),
    };
    let slot = if region.writable() {
        for slot in reader_slots(region.words()) {
            if !pid_alive(slot.pid) {
                release_slot(region.words(), slot.index, slot.pid);
            }
        }
        let pid = u64::from(std::process::id());
        claim_slot(region.words(), pid, unix_now_ns()).map(|index| (index, pid))
    } else {
        None
    };
    let mut reader = RingReader::new(region, info, options.start);
    if let Some((index, pid)) = slot {
        reader.set_slot(index, pid);
    }
    Ok(Attach::Ready(reader))
}

/// Attaches, polling every millisecond until the ring is ready or `timeout` passes.
///
/// # Errors
/// As [`try_attach`], plus [`ShmError::NotReady`] naming the last state seen.
pub fn attach_wait(
    path: &Path,
    options: AttachOptions,
    timeout: Duration,
) -> Result<RingReader<MappedRegion>, ShmError> {
    wait_ready(path, timeout, || try_attach(path, options))
}

/// Calls `attempt` every millisecond until it finds [`Attach::Ready`] or `timeout` passes.
pub(crate) fn wait_ready<T>(
    path: &Path,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<Attach<T>, ShmError>,
) -> Result<T, ShmError> {
    let started = Instant::now();
    loop {
        let state = attempt()?;
        if let Attach::Ready(ready) = state {
            return Ok(ready);
        }
        if started.elapsed() >= timeout {
            return Err(ShmError::NotReady {
                path: path.to_path_buf(),
                waited: started.elapsed(),
                state: state.describe(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Maps a ring read-only for inspection (`ring stat`): no slot, no reader.
///
/// # Errors
/// As [`try_attach`]; a ring that is not ready is [`ShmError::NotReady`].
pub fn inspect(path: &Path) -> Result<(MappedRegion, RingInfo), ShmError> {
    let not_ready = |state| ShmError::NotReady {
        path: path.to_path_buf(),
        waited: Duration::ZERO,
        state,
    };
    let region = match open_region(path, false, HEADER_LEN)? {
        Opened::Missing => return Err(not_ready("no file")),
        Opened::Short(_) => return Err(not_ready("file exists but is not sized yet")),
        Opened::Mapped(region) => region,
    };
    match read_header(region.words()).map_err(|source| ShmError::Header {
        path: path.to_path_buf(),
        source,
    })? {
        HeaderState::Ready(info) => Ok((region, info)),
        HeaderState::TooShortForHeader => Err(not_ready("file exists but is not sized yet")),
        HeaderState::VersionNotWritten => Err(not_ready("header version not written yet")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_rings_work_like_any_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.ring");
        let options = CreateOptions {
            capacity: 1 << 16,
            max_payload: 256,
            ..CreateOptions::default()
        };
        let (mut writer, backing) = create_with_pages(&path, &options, b"meta", true).unwrap();
        // A temp dir is never hugetlbfs: the mapping was advised, or the kernel said why not.
        assert!(
            matches!(
                backing,
                PageBacking::TransparentAdvised | PageBacking::Refused(_)
            ),
            "{backing:?}"
        );
        writer.publish(b"hello", 1).unwrap();
        let mut reader = attach_wait(
            &path,
            AttachOptions {
                start: StartAt::Oldest,
                read_only: true,
            },
            Duration::from_secs(1),
        )
        .unwrap();
        let mut buf = [0u8; 16];
        let frame = reader.try_read(&mut buf).unwrap();
        assert_eq!(&buf[..frame.len], b"hello");
        let region = reader.region();
        let page = crate::host::page_size();
        assert_eq!(region.prefault(), region.len_bytes().div_ceil(page));
        let (_, plain) =
            create_with_pages(&dir.path().join("plain.ring"), &options, b"", false).unwrap();
        assert_eq!(plain, PageBacking::Base);
    }
}
