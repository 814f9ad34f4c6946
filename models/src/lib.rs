//! Models: regime detection, scoring and forecasting, pure and deterministic. Empty so far.
#![forbid(unsafe_code)]

pub mod lstm;
