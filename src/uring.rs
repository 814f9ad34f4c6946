//! File sink that writes through io_uring where the kernel allows it, and through ordinary
//! buffered `write(2)` otherwise.
//!
//! Recording should never fail just because io_uring is unavailable: container seccomp
//! profiles and the `kernel.io_uring_disabled` sysctl routinely block it. So [`FileSink`]
//! tries io_uring when asked, falls back to [`BufWriter`] on setup failure, and remembers
//! why, so the caller can log the reason once instead of guessing. The io_uring machinery
//! itself (which needs `unsafe`) lives in [`tickpipe_shm::uring`]; this crate stays safe.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use tickpipe_shm::uring::UringFileWriter;

/// Buffer size for the std fallback: matches the io_uring writer's per-buffer size so the
/// two backends make syscalls of similar size.
const STD_BUFFER_SIZE: usize = tickpipe_shm::uring::DEFAULT_BUFFER_SIZE;

/// Which I/O path a [`FileSink`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Buffers are written through io_uring, overlapping disk writes with filling.
    IoUring,
    /// Buffered `write(2)` calls through [`BufWriter`].
    Std,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::IoUring => "io_uring",
            Self::Std => "std",
        })
    }
}

#[derive(Debug)]
enum Inner {
    // Boxed because the writer (ring handle plus bookkeeping) is far larger than a BufWriter.
    Uring(Box<UringFileWriter>),
    Std(BufWriter<File>),
}

/// A buffered, write-only file that uses io_uring when available and std I/O otherwise.
///
/// Dropping it without [`finish`](Self::finish) still writes buffered bytes on a
/// best-effort basis, but errors are lost and nothing is synced to stable storage.
#[derive(Debug)]
pub struct FileSink {
    inner: Inner,
    fallback_reason: Option<String>,
    bytes_written: u64,
}

impl FileSink {
    /// Creates (or truncates) `path`. With `prefer_uring`, tries io_uring first and falls
    /// back to std I/O if it cannot be set up; [`fallback_reason`](Self::fallback_reason)
    /// then says why.
    ///
    /// # Errors
    ///
    /// Fails if the file cannot be created (missing directory, permissions, a directory at
    /// `path`, ...). io_uring being unavailable is not an error.
    pub fn create(path: impl AsRef<Path>, prefer_uring: bool) -> io::Result<Self> {
        let file = File::create(path)?;
        if !prefer_uring {
            return Ok(Self::with_std(file, None));
        }
        match UringFileWriter::new(file) {
            Ok(writer) => Ok(Self {
                inner: Inner::Uring(Box::new(writer)),
                fallback_reason: None,
                bytes_written: 0,
            }),
            Err(e) => {
                let reason = e.to_string();
                let (_, file) = e.into_parts();
                Ok(Self::with_std(file, Some(reason)))
            }
        }
    }

    fn with_std(file: File, fallback_reason: Option<String>) -> Self {
        Self {
            inner: Inner::Std(BufWriter::with_capacity(STD_BUFFER_SIZE, file)),
            fallback_reason,
            bytes_written: 0,
        }
    }

    /// The I/O path in use.
    #[must_use]
    pub fn backend(&self) -> Backend {
        match self.inner {
            Inner::Uring(_) => Backend::IoUring,
            Inner::Std(_) => Backend::Std,
        }
    }

    /// Why io_uring was requested but not used; `None` if it is in use or was not requested.
    #[must_use]
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback_reason.as_deref()
    }

    /// Bytes accepted so far (some may still be buffered until [`finish`](Self::finish)).
    #[must_use]
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Writes out all buffered bytes and `fsync`s the file, so a recording is complete and
    /// durable once this returns.
    ///
    /// # Errors
    ///
    /// Returns the first write error (io_uring write errors are sticky, so an earlier
    /// failure is reported here too) or the `fsync` error.
    pub fn finish(self) -> io::Result<()> {
        match self.inner {
            Inner::Uring(writer) => writer.finish().map(drop),
            Inner::Std(writer) => writer
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .sync_all(),
        }
    }
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.inner {
            Inner::Uring(w) => w.write(buf)?,
            Inner::Std(w) => w.write(buf)?,
        };
        self.bytes_written += n as u64;
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        // Forwarded so a BufWriter can use its own write_all fast path; counting assumes
        // success because on failure the file is unusable anyway.
        match &mut self.inner {
            Inner::Uring(w) => w.write_all(buf)?,
            Inner::Std(w) => w.write_all(buf)?,
        }
        self.bytes_written += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Uring(w) => w.flush(),
            Inner::Std(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(131) ^ (i >> 9)) as u8)
            .collect()
    }

    /// Writes `data` in odd-sized chunks, finishes, and checks the file matches.
    fn round_trip(sink: FileSink, path: &Path, data: &[u8]) {
        let mut sink = sink;
        let sizes = [3usize, 1021, 77_777, 1 << 20, 5, 262_139];
        let mut pos = 0;
        for k in 0.. {
            if pos == data.len() {
                break;
            }
            let n = sizes[k % sizes.len()].min(data.len() - pos);
            sink.write_all(&data[pos..pos + n]).unwrap();
            pos += n;
        }
        assert_eq!(sink.bytes_written(), data.len() as u64);
        sink.finish().unwrap();
        let back = std::fs::read(path).unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data, "file contents differ");
    }

    #[test]
    fn uring_probe_result() {
        match tickpipe_shm::uring::probe() {
            Ok(()) => println!("io_uring probe: ok"),
            Err(e) => println!("io_uring probe: unavailable: {e}"),
        }
    }

    #[test]
    fn uring_backend_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uring.dbn");
        let data = pattern(4 * (1 << 20) + 4_321);
        let sink = FileSink::create(&path, true).unwrap();
        match tickpipe_shm::uring::probe() {
            Ok(()) => {
                assert_eq!(sink.backend(), Backend::IoUring);
                assert_eq!(sink.fallback_reason(), None);
            }
            Err(e) => {
                println!("skipped: io_uring unavailable: {e}");
                // The sink must still work, on the fallback, and say why.
                assert_eq!(sink.backend(), Backend::Std);
                assert!(sink.fallback_reason().is_some());
                println!("fallback reason: {}", sink.fallback_reason().unwrap_or(""));
            }
        }
        round_trip(sink, &path, &data);
    }

    #[test]
    fn uring_std_backend_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("std.dbn");
        let data = pattern(3 * (1 << 20) + 999);
        let sink = FileSink::create(&path, false).unwrap();
        assert_eq!(sink.backend(), Backend::Std);
        assert_eq!(sink.fallback_reason(), None);
        round_trip(sink, &path, &data);
    }

    #[test]
    fn uring_create_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.dbn");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        for prefer in [true, false] {
            let mut sink = FileSink::create(&path, prefer).unwrap();
            sink.write_all(b"abc").unwrap();
            sink.finish().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"abc");
        }
    }

    #[test]
    fn uring_bad_paths_error_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let bad = [
            dir.path().join("missing-dir").join("out.dbn"),
            // A directory cannot be opened for writing, even by root.
            dir.path().to_path_buf(),
            // A path "under" a regular file is ENOTDIR.
            plain.join("out.dbn"),
        ];
        // A read-only file only refuses writes to non-root users (root bypasses file modes).
        let read_only = dir.path().join("read-only.dbn");
        std::fs::write(&read_only, b"x").unwrap();
        let mut perms = std::fs::metadata(&read_only).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&read_only, perms).unwrap();
        if std::fs::OpenOptions::new()
            .write(true)
            .open(&read_only)
            .is_err()
        {
            for prefer in [true, false] {
                assert!(FileSink::create(&read_only, prefer).is_err());
            }
        } else {
            println!("read-only file case skipped: running with permission override (root)");
        }
        for path in &bad {
            for prefer in [true, false] {
                let err = FileSink::create(path, prefer).expect_err("bad path must fail");
                println!("{} (prefer_uring={prefer}): {err}", path.display());
            }
        }
    }

    #[test]
    fn uring_backend_display() {
        assert_eq!(Backend::IoUring.to_string(), "io_uring");
        assert_eq!(Backend::Std.to_string(), "std");
    }
}
