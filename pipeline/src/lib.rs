//! The tickpipe engine's runtime: stages, idle strategies, runners and threading modes, the
//! links between stages, per-stage latency recording, and the engine that puts them together.
//!
//! The hot path (a running stage's duty cycle) does not allocate, lock or make syscalls with a
//! busy-spin or no-op idle strategy: every buffer, ring and histogram is allocated when the
//! engine is built or in a stage's `on_start`, and the clock is read from the TSC.
#![forbid(unsafe_code)]

pub mod book;
pub mod builder;
pub mod config;
pub mod control;
pub mod depth;
pub mod engine;
pub mod feature_engine;
pub mod features;
pub mod forecast;
pub mod health;
pub mod host;
pub mod idle;
pub mod inference;
pub mod latency;
pub mod link;
pub mod msg;
pub mod orchestrator;
pub mod sample;
pub mod shadow;
pub mod signal;
pub mod source;
pub mod stage;
pub mod stages;
pub mod swap;
pub mod udp;

pub use builder::{BuildError, Delivery, EngineBuilder, Scorer, SignalConsumer, UserStage};
pub use config::{EngineConfig, ThreadingMode};
pub use engine::{Engine, EngineReport};
pub use idle::IdleStrategy;
pub use link::Policy;
pub use stage::{CompositeStage, Invoker, Stage, StageRunner, ThreadHooks};

/// Set-up and I/O errors of the pipeline (the hot path uses small `Copy` enums instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// A configuration value is invalid.
    #[error("config: {field}: {msg}")]
    Config {
        /// The field, as written in the TOML profile.
        field: String,
        /// What is wrong.
        msg: String,
    },
    /// A thread could not be pinned.
    #[error("cannot pin {role} to core {core}: {why}")]
    Pin {
        /// The stage.
        role: String,
        /// The core.
        core: usize,
        /// Why.
        why: String,
    },
    /// A thread could not be started or failed.
    #[error("thread {role}: {why}")]
    Thread {
        /// The stage.
        role: String,
        /// Why.
        why: String,
    },
    /// A host setting marked `required` is not in effect.
    #[error("host setting {setting} is required but {why}")]
    Host {
        /// The setting.
        setting: String,
        /// What the host answered.
        why: String,
    },
    /// Should not happen; reported rather than panicking.
    #[error("internal: {0}")]
    Internal(String),
}

impl PipelineError {
    /// A configuration error for `field`.
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        PipelineError::Config {
            field: field.into(),
            msg: msg.into(),
        }
    }
}
