//! Models: regime detection, scoring and forecasting, pure and deterministic.
#![forbid(unsafe_code)]

pub mod lstm;
pub mod registry;
pub mod sjm;
pub mod stability;
pub mod xgb;
