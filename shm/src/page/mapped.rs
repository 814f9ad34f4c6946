//! Health pages in memory-mapped files, through the same file plumbing as mapped rings: an atomic
//! create for the writer, explicit attach states and a bounded wait for readers.

use std::path::Path;
use std::time::Duration;

use super::{
    KILL_RELEASED, PAGE_HEADER_LEN, PageError, PageIdentity, PageReader, PageWriter, page_len,
};
use crate::mapped::{Attach, MappedRegion, Opened, ShmError, create_file, open_region, wait_ready};

/// How to create a page file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageOptions {
    /// A group that may read the page (mode 0640 and that group); otherwise mode 0600.
    pub group: Option<String>,
    /// The kill word's value when the page appears (readers never see another value first).
    pub initial_kill: u64,
}

impl Default for PageOptions {
    fn default() -> Self {
        Self {
            group: None,
            initial_kill: KILL_RELEASED,
        }
    }
}

/// Creates a page of `payload_words` words at `path` (normally under `/dev/shm`) and returns its
/// writer.
///
/// The page is built in a temporary file beside `path` and renamed into place once its header is
/// complete, so a reader never maps a half-written page; a reader still attached to an older page
/// at the same path keeps its own (now unlinked) file.
///
/// # Errors
/// A payload of zero or more than [`super::MAX_PAYLOAD_WORDS`] words, an unknown group, or a
/// failing file operation.
pub fn create_page(
    path: &Path,
    payload_words: usize,
    options: &PageOptions,
) -> Result<PageWriter<MappedRegion>, ShmError> {
    let len = page_len(payload_words).map_err(|source| ShmError::Page {
        path: path.to_path_buf(),
        source,
    })?;
    create_file(path, len, options.group.as_deref(), |region, tmp| {
        PageWriter::init(
            region,
            payload_words,
            PageIdentity::current(),
            options.initial_kill,
        )
        .map_err(|source| ShmError::Page {
            path: tmp.to_path_buf(),
            source,
        })
    })
}

/// Tries once to attach a reader to the page at `path`. The file is mapped read-only.
///
/// # Errors
/// A file that exists but is not a valid page (wrong magic or version, bad fields, truncated),
/// or a failing file operation. A page that is not ready yet is an [`Attach`] state.
pub fn try_attach_page(path: &Path) -> Result<Attach<PageReader<MappedRegion>>, ShmError> {
    let region = match open_region(path, false, PAGE_HEADER_LEN)? {
        Opened::Missing => return Ok(Attach::NoFile),
        Opened::Short(len) => return Ok(Attach::NotMapped { len }),
        Opened::Mapped(region) => region,
    };
    match PageReader::new(region) {
        Ok(reader) => Ok(Attach::Ready(reader)),
        Err(PageError::VersionNotWritten) => Ok(Attach::VersionNotWritten),
        Err(source) => Err(ShmError::Page {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Attaches, polling every millisecond until the page is ready or `timeout` passes.
///
/// # Errors
/// As [`try_attach_page`], plus [`ShmError::NotReady`] naming the last state seen.
pub fn attach_page_wait(
    path: &Path,
    timeout: Duration,
) -> Result<PageReader<MappedRegion>, ShmError> {
    wait_ready(path, timeout, || try_attach_page(path))
}
