//! Market-data sources: what the ingest stage polls for records.
//!
//! The engine reads DBN records from one source, busy-polled by the ingest stage without
//! blocking. [`MdSource`] is the small contract between them: hand out a batch of records (each
//! with its sequence number and the publisher's raw clock reading), say when a loss happened and
//! how many records it cost, say how the publisher is doing, and say when the stream has ended.
//! Two sources implement it:
//!
//! - [`RingReader`]: the shared-memory market-data ring (losses are laps);
//! - [`crate::udp::UdpSource`]: datagrams on a UDP socket, received through `mio` or io_uring
//!   (losses are gaps in the datagrams' sequence numbers).
//!
//! A further receive stack (a kernel-bypass NIC queue, say) is one more implementation.
//!
//! The contract mirrors the ring's read protocol, so the ring path compiles to exactly what it
//! was before sources were generic: [`MdSource::read_batch`] on a ring is
//! [`RingReader::read_batch`].

use tickpipe_shm::ring::WriterState;
use tickpipe_shm::{FrameInfo, ReadError, Region, RingReader};

use crate::stages::WriterSeen;

/// A market-data source the ingest stage can busy-poll.
///
/// Every method is called from the ingest stage's duty cycle: none may block, allocate or make a
/// syscall beyond receiving data itself.
pub trait MdSource: Send {
    /// Bytes of scratch the ingest stage lends to [`MdSource::read_batch`] for batches of up to
    /// `batch` records (0 for a source that keeps its own buffers). Called once, at set-up.
    fn scratch_len(&self, batch: usize) -> usize;

    /// Hands up to `max_records` records to `on_record` in order, each with its sequence number
    /// and the publisher's raw clock reading; returns how many were handed out.
    ///
    /// # Errors
    /// - [`ReadError::Empty`]: nothing new;
    /// - [`ReadError::Lapped`]: records were lost (exactly `missed` of them where the source
    ///   knows); the next call returns what follows the loss;
    /// - [`ReadError::Corrupt`] / [`ReadError::BufferTooSmall`]: the source cannot continue.
    fn read_batch(
        &mut self,
        scratch: &mut [u8],
        max_records: usize,
        on_record: impl FnMut(FrameInfo, &[u8]),
    ) -> Result<usize, ReadError>;

    /// The publisher's liveness as last seen (called once every few thousand polls).
    fn writer(&self) -> WriterSeen;

    /// True when the stream has ended and everything in it has been handed out.
    fn is_finished(&self) -> bool;

    /// The publisher's process id where it is known (0: unknown, assumed alive).
    fn writer_pid(&self) -> u64 {
        0
    }

    /// A line for a fatal read error, naming the source.
    fn describe_error(&self, e: ReadError) -> String;
}

impl<R: Region + Send> MdSource for RingReader<R> {
    fn scratch_len(&self, batch: usize) -> usize {
        // Room for a full batch of the largest frames the ring can hold, as they lie in it.
        tickpipe_shm::layout::frame_len(self.info().geometry.max_payload) * batch.max(1)
    }

    #[inline]
    fn read_batch(
        &mut self,
        scratch: &mut [u8],
        max_records: usize,
        on_record: impl FnMut(FrameInfo, &[u8]),
    ) -> Result<usize, ReadError> {
        RingReader::read_batch(self, scratch, max_records, on_record)
    }

    fn writer(&self) -> WriterSeen {
        let w = self.writer_status();
        WriterSeen {
            heartbeat_ns: w.heartbeat_ns,
            finished: matches!(w.state, WriterState::Finished),
        }
    }

    #[inline]
    fn is_finished(&self) -> bool {
        RingReader::is_finished(self)
    }

    fn writer_pid(&self) -> u64 {
        self.info().writer.pid
    }

    fn describe_error(&self, e: ReadError) -> String {
        format!("market-data ring: {e}")
    }
}
