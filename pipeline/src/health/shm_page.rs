//! The health rollup on a shared-memory page ([`tickpipe_shm::page`]): the monitor writes it,
//! other processes (the trading process, `tickpipe health --page`) read it.
//!
//! A trading process reads the kill switch with one load ([`HealthPageReader::kill`]) and the
//! whole rollup with a seqlock copy ([`HealthPageReader::read`]).

use std::path::Path;
use std::time::Duration;

use tickpipe_shm::mapped::MappedRegion;
use tickpipe_shm::page::{PageOptions, PageReader, PageWriter, attach_page_wait, create_page};

use super::HealthSnapshot;
use super::monitor::PageSink;
use super::page::{PAGE_WORDS, PageFormatError, decode};
use crate::PipelineError;

/// The monitor's side of a mapped health page.
#[derive(Debug)]
pub struct MappedPageSink {
    writer: PageWriter<MappedRegion>,
}

/// Creates the health page at `path` (replacing an older one atomically).
///
/// # Errors
/// The file cannot be created.
pub fn create(path: &Path) -> Result<MappedPageSink, PipelineError> {
    let writer = create_page(path, PAGE_WORDS, &PageOptions::default()).map_err(|e| {
        PipelineError::Config {
            field: "health.page".into(),
            msg: e.to_string(),
        }
    })?;
    Ok(MappedPageSink { writer })
}

impl PageSink for MappedPageSink {
    fn publish(&mut self, words: &[u64]) {
        // The length is PAGE_WORDS by construction; a mismatch would be refused, not written.
        let _ = self.writer.publish(words);
    }

    fn set_kill(&mut self, word: u64) {
        self.writer.set_kill(word);
    }
}

/// Why a health page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HealthPageError {
    /// Attaching or reading the page failed.
    #[error("{0}")]
    Shm(String),
    /// The payload is not a rollup this build reads.
    #[error(transparent)]
    Format(#[from] PageFormatError),
}

/// A reader of a mapped health page.
#[derive(Debug)]
pub struct HealthPageReader {
    reader: PageReader<MappedRegion>,
    words: Vec<u64>,
}

impl HealthPageReader {
    /// Attaches to the page at `path`, waiting up to `timeout` for it to be ready.
    ///
    /// # Errors
    /// No page, a page that is not a health page, or another payload size.
    pub fn attach(path: &Path, timeout: Duration) -> Result<Self, HealthPageError> {
        let reader =
            attach_page_wait(path, timeout).map_err(|e| HealthPageError::Shm(e.to_string()))?;
        if reader.payload_words() != PAGE_WORDS {
            return Err(PageFormatError::Length(reader.payload_words()).into());
        }
        Ok(Self {
            reader,
            words: vec![0; PAGE_WORDS],
        })
    }

    /// The kill-switch word: 0 released, otherwise the reason bits. One load.
    #[inline]
    pub fn kill(&self) -> u64 {
        self.reader.kill()
    }

    /// The latest rollup.
    ///
    /// # Errors
    /// The writer is mid-update for too long (it died in the middle), or the payload is bad.
    pub fn read(&mut self) -> Result<HealthSnapshot, HealthPageError> {
        self.reader
            .read(&mut self.words)
            .map_err(|e| HealthPageError::Shm(e.to_string()))?;
        Ok(decode(&self.words)?)
    }

    /// The raw payload words of the latest rollup (no decoding; for benchmarks and tools).
    ///
    /// # Errors
    /// As [`HealthPageReader::read`].
    pub fn read_words(&mut self) -> Result<&[u64], HealthPageError> {
        self.reader
            .read(&mut self.words)
            .map_err(|e| HealthPageError::Shm(e.to_string()))?;
        Ok(&self.words)
    }

    /// The writer's process id.
    pub fn writer_pid(&self) -> u64 {
        self.reader.writer_pid()
    }

    /// The writer's last heartbeat (ns since the UNIX epoch).
    pub fn heartbeat_ns(&self) -> u64 {
        self.reader.heartbeat_ns()
    }
}
