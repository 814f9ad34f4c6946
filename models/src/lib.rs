//! Models: regime detection, scoring and forecasting, pure and deterministic.
#![forbid(unsafe_code)]

pub mod sjm;
pub mod stability;
