//! The atomics the ring protocol uses, from `std` normally and from `loom` under `--cfg loom`, so
//! the same protocol code is model-checked and shipped.

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
pub use std::sync::atomic::{AtomicU64, Ordering, fence};
