//! Shared-memory rings and pages for tickpipe.
//!
//! This is the only crate of the workspace with `unsafe` code, and it keeps it small: the ring
//! protocol ([`ring`]) is safe code over a slice of atomic words; only turning a file mapping into
//! that slice ([`mapped`]), the SIGBUS guard ([`sigbus`]), the io_uring file writer, the io_uring
//! UDP receiver ([`udp`]) and the host memory and scheduling controls ([`host`]: `mlockall`,
//! `SCHED_FIFO`, limits) need `unsafe`, each module opting in with its reason.
//!
//! Shared memory is untrusted input: another process (or a bug in one) can write anything there,
//! truncate the file or die mid-write. Every length and offset read from it is bounds-checked,
//! and a reader never hands out a torn frame.
#![deny(unsafe_code)]

#[cfg(not(loom))]
pub mod host;
#[cfg(not(loom))]
pub mod hotpath;
pub mod layout;
#[cfg(not(loom))]
pub mod mapped;
pub mod page;
pub mod ring;
#[cfg(not(loom))]
pub mod sigbus;
pub mod sync;
#[cfg(not(loom))]
pub mod udp;
#[cfg(not(loom))]
pub mod uring;

pub use page::{PageError, PageRead, PageReader, PageWriter};
pub use ring::{
    FrameInfo, HeapRegion, ReadError, Region, RingGeometry, RingReader, RingWriter, StartAt,
    WriteError, heap_ring,
};
