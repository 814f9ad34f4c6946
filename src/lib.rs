//! tickpipe: an embedded, lock-free stream-processing engine for co-located trading.
//!
//! This crate is the command-line tool and the embedding surface. The engine's parts live in
//! their own crates and are re-exported here: [`shm`] (shared-memory rings and pages),
//! [`pipeline`] (stages, runners, threading modes) and [`models`] (regime, scoring and
//! forecasting models).
#![forbid(unsafe_code)]

pub use tickpipe_models as models;
pub use tickpipe_pipeline as pipeline;
pub use tickpipe_shm as shm;

/// Embedding: build and start an engine inside a program of one's own (see
/// [`pipeline::builder`] and the `custom_stage` and `signal_consumer` examples).
pub use tickpipe_pipeline::builder::{
    BuildError, Delivery, EngineBuilder, Scorer, SignalConsumer, UserStage,
};
pub use tickpipe_pipeline::{Engine, EngineConfig, EngineReport};

pub mod capture;
pub mod control_api;
pub mod control_client;
pub mod demo;
pub mod engine_cmd;
pub mod features_cmd;
pub mod health_cmd;
pub mod host_setup;
pub mod models_cmd;
pub mod profile_report;
pub mod record;
pub mod registry_cmd;
pub mod replay;
pub mod ringstat;
pub mod shutdown;
pub mod startup;
pub mod synth;
pub mod tune;
pub mod udp_send;
pub mod uring;
