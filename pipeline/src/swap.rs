//! Hot swap of the inference stage's models, with nothing lost and nothing allocated or freed on
//! the hot path.
//!
//! A [`ModelControl`] (taken from the running engine with `Engine::model_control`) prepares a
//! model on the caller's thread: it binds the model to the feature schema, checks it fits the
//! signal, and builds everything the stage will need (for a regime model: a fresh online state
//! and stability filter per instrument slot). The prepared update travels to the inference stage
//! as one `Box` over an SPSC command ring. The stage applies at most one update per duty cycle,
//! before taking the next batch, so the switch falls between two vectors: every vector is scored
//! by exactly one version, and each signal names the versions that made it
//! (`scoring_version`, `regime_version`). What the update replaced goes back over a second ring
//! and is dropped by the control side ([`ModelControl::collect`]): a pinned thread never frees.
//! When that return ring is full the stage leaves the update queued until it has room.
//!
//! A new regime model starts from fresh per-instrument state (its labels mean something else
//! than the old model's): the raw and stable regimes are unset until the new model's first
//! accepted label.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tickpipe_models::registry::{LoadedModel, Validated};
use tickpipe_models::sjm::{SjmModel, SjmOnline, SjmStep};
use tickpipe_models::stability::{StabilityConfig, StabilityFilter, Stable};
use tickpipe_models::xgb::XgbModel;

use crate::PipelineError;
use crate::inference::{MAX_REGIME_FEATURES, schema_names};
use crate::msg::MAX_SCORES;

/// Updates that may wait in the command ring.
pub const COMMAND_SLOTS: usize = 8;

/// A bound scoring model and its version.
#[derive(Debug)]
pub struct ScoringModel {
    /// The model.
    pub model: XgbModel,
    /// Column of each model feature in the feature vector.
    pub cols: Vec<usize>,
    /// Version carried by the signals it scores.
    pub version: u32,
}

/// A bound regime model with fresh per-instrument state, and its version.
#[derive(Debug)]
pub struct RegimeModel {
    /// The model.
    pub model: SjmModel,
    /// Column of each model feature in the feature vector.
    pub cols: Vec<usize>,
    /// Online state per instrument slot.
    pub online: Vec<SjmOnline>,
    /// Stability filter per instrument slot.
    pub filters: Vec<StabilityFilter>,
    /// Version carried by the signals it labels.
    pub version: u32,
}

impl RegimeModel {
    /// One feature vector through the model and the stability filter of instrument slot
    /// `slot` at time `ts`: the model's columns of `values` are gathered into `x` (scratch of
    /// at least `cols.len()`), the online state steps, the filter updates. No allocation.
    #[inline]
    pub fn label(
        &mut self,
        slot: usize,
        values: &[f64],
        ts: u64,
        x: &mut [f64],
    ) -> (SjmStep, Stable) {
        let x = &mut x[..self.cols.len()];
        for (xi, &c) in x.iter_mut().zip(self.cols.iter()) {
            *xi = values[c];
        }
        let step = self.model.step(&mut self.online[slot], x);
        let stable = self.filters[slot].update(ts, &step, x);
        (step, stable)
    }
}

/// One prepared change (or, on the way back, what it replaced).
#[derive(Debug)]
pub enum ModelUpdate {
    /// Replace (or, with `None`, remove) the scoring model.
    Scoring(Option<ScoringModel>),
    /// Replace (or remove) the regime model.
    Regime(Option<RegimeModel>),
}

/// Binds `model` for the engine's feature schema.
///
/// # Errors
/// A feature the schema lacks, or more outputs than a signal carries.
pub fn bind_scoring(model: XgbModel, version: u32) -> Result<ScoringModel, PipelineError> {
    let cols = model
        .bind(&schema_names())
        .map_err(|e| PipelineError::config("models.xgboost", e.to_string()))?;
    if model.n_outputs() > MAX_SCORES {
        return Err(PipelineError::config(
            "models.xgboost",
            format!(
                "{} outputs per row (signals carry at most {MAX_SCORES})",
                model.n_outputs()
            ),
        ));
    }
    Ok(ScoringModel {
        model,
        cols,
        version,
    })
}

/// Binds `model` for the engine's feature schema with fresh state for `slots` instruments.
///
/// # Errors
/// A feature the schema lacks, too many features, or stability knobs out of range.
pub fn bind_regime(
    model: SjmModel,
    stability: &StabilityConfig,
    slots: usize,
    version: u32,
) -> Result<RegimeModel, PipelineError> {
    if model.n_features() > MAX_REGIME_FEATURES {
        return Err(PipelineError::config(
            "models.sjm",
            format!(
                "{} features (at most {MAX_REGIME_FEATURES})",
                model.n_features()
            ),
        ));
    }
    let cols = model
        .bind(&schema_names())
        .map_err(|e| PipelineError::config("models.sjm", e.to_string()))?;
    let filter = StabilityFilter::new(stability, &model)
        .map_err(|e| PipelineError::config("models.stability", e.to_string()))?;
    let n = slots.max(1);
    Ok(RegimeModel {
        online: vec![model.new_online(); n],
        filters: vec![filter; n],
        model,
        cols,
        version,
    })
}

/// A model bound for the engine: what a registry-validated scoring or regime model becomes.
#[derive(Debug)]
pub enum BoundModel {
    /// A scoring model.
    Scoring(ScoringModel),
    /// A regime model with fresh per-instrument state.
    Regime(RegimeModel),
}

impl BoundModel {
    /// The version its signals carry.
    pub fn version(&self) -> u32 {
        match self {
            BoundModel::Scoring(m) => m.version,
            BoundModel::Regime(m) => m.version,
        }
    }
}

/// Binds a model that passed the registry's validation, versioned by its registry version
/// (`v<N>` or `<N>`); `what` says what the forecaster is refused for ("hot-swapped",
/// "shadowed"): the slow lane's model is neither.
///
/// # Errors
/// A forecaster, a version that is not a number, or a model that does not fit.
pub fn bind_validated(
    v: Validated,
    stability: &StabilityConfig,
    slots: usize,
    what: &str,
) -> Result<BoundModel, PipelineError> {
    let version = numeric_version(&v.manifest.model_version).ok_or_else(|| {
        PipelineError::config(
            "models",
            format!(
                "{} version {:?}: signals carry a numeric version (v<N> or <N>)",
                v.manifest.name, v.manifest.model_version
            ),
        )
    })?;
    match v.model {
        LoadedModel::Xgboost(m) => Ok(BoundModel::Scoring(bind_scoring(m, version)?)),
        LoadedModel::Sjm(m) => Ok(BoundModel::Regime(bind_regime(
            m, stability, slots, version,
        )?)),
        LoadedModel::Lstm(_) => Err(PipelineError::config(
            "models.lstm",
            format!(
                "{}: the forecaster runs on the slow lane and is not {what}",
                v.manifest.name
            ),
        )),
    }
}

/// Why an update was not queued.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The model does not fit the engine (see the message).
    #[error("{0}")]
    Invalid(#[from] PipelineError),
    /// [`COMMAND_SLOTS`] updates are waiting already; the update is handed back.
    #[error("{COMMAND_SLOTS} model updates are already waiting for the inference stage")]
    Busy(Box<ModelUpdate>),
}

/// The stage's end of the command rings.
#[derive(Debug)]
pub struct SwapPort {
    pub(crate) commands: rtrb::Consumer<Box<ModelUpdate>>,
    pub(crate) garbage: rtrb::Producer<Box<ModelUpdate>>,
    pub(crate) applied: Arc<AtomicU64>,
}

/// The caller's end: prepares and queues model updates, and drops what they replaced.
#[derive(Debug)]
pub struct ModelControl {
    commands: rtrb::Producer<Box<ModelUpdate>>,
    garbage: rtrb::Consumer<Box<ModelUpdate>>,
    applied: Arc<AtomicU64>,
    queued: u64,
    stability: StabilityConfig,
    slots: usize,
}

/// The two ends of a new pair of command rings.
pub fn swap_channel(stability: StabilityConfig, slots: usize) -> (ModelControl, SwapPort) {
    let (ctx, crx) = rtrb::RingBuffer::new(COMMAND_SLOTS);
    // Room for everything the command ring can deliver, so a full return ring is rare.
    let (gtx, grx) = rtrb::RingBuffer::new(2 * COMMAND_SLOTS);
    let applied = Arc::new(AtomicU64::new(0));
    (
        ModelControl {
            commands: ctx,
            garbage: grx,
            applied: applied.clone(),
            queued: 0,
            stability,
            slots,
        },
        SwapPort {
            commands: crx,
            garbage: gtx,
            applied,
        },
    )
}

impl ModelControl {
    /// Queues a prepared update (drops what earlier updates replaced first).
    ///
    /// # Errors
    /// [`SwapError::Busy`] when the command ring is full.
    pub fn send(&mut self, update: ModelUpdate) -> Result<(), SwapError> {
        self.collect();
        match self.commands.push(Box::new(update)) {
            Ok(()) => {
                self.queued += 1;
                Ok(())
            }
            Err(rtrb::PushError::Full(u)) => Err(SwapError::Busy(u)),
        }
    }

    /// Binds and queues a new scoring model.
    ///
    /// # Errors
    /// A model that does not fit, or a full command ring.
    pub fn swap_scoring(&mut self, model: XgbModel, version: u32) -> Result<(), SwapError> {
        let m = bind_scoring(model, version)?;
        self.send(ModelUpdate::Scoring(Some(m)))
    }

    /// Binds and queues a new regime model (fresh state for every instrument).
    ///
    /// # Errors
    /// A model that does not fit, or a full command ring.
    pub fn swap_regime(&mut self, model: SjmModel, version: u32) -> Result<(), SwapError> {
        let m = bind_regime(model, &self.stability, self.slots, version)?;
        self.send(ModelUpdate::Regime(Some(m)))
    }

    /// Queues a model that passed the registry's validation ([`tickpipe_models::registry`]):
    /// a scoring or regime model, versioned by its registry version (`v<N>` or `<N>`).
    ///
    /// # Errors
    /// A forecaster (the slow lane's model is not swapped here), a version that is not a
    /// number, a model that does not fit, or a full command ring.
    pub fn swap_validated(&mut self, v: Validated) -> Result<(), SwapError> {
        let update = match bind_validated(
            v,
            &self.stability,
            self.slots,
            "hot-swapped (restart with the new version)",
        )? {
            BoundModel::Scoring(m) => ModelUpdate::Scoring(Some(m)),
            BoundModel::Regime(m) => ModelUpdate::Regime(Some(m)),
        };
        self.send(update)
    }

    /// Drops what applied updates replaced; returns how many.
    pub fn collect(&mut self) -> usize {
        let mut n = 0;
        while let Ok(old) = self.garbage.pop() {
            drop(old);
            n += 1;
        }
        n
    }

    /// Updates the stage has applied so far.
    pub fn applied(&self) -> u64 {
        // Acquire pairs with the stage's Release: an update counted as applied is in effect
        // for every vector the stage takes after it.
        self.applied.load(Ordering::Acquire)
    }

    /// Updates queued and not yet applied.
    pub fn pending(&self) -> u64 {
        self.queued - self.applied()
    }
}

/// `v12` or `12` as 12.
fn numeric_version(v: &str) -> Option<u32> {
    v.strip_prefix('v').unwrap_or(v).parse().ok()
}

impl SwapPort {
    /// The next update, if one is waiting and the return ring has room for what it replaces.
    #[inline]
    pub(crate) fn next(&mut self) -> Option<Box<ModelUpdate>> {
        if self.garbage.is_full() {
            return None;
        }
        self.commands.pop().ok()
    }

    /// Hands what an update replaced back for dropping, and counts the update.
    #[inline]
    pub(crate) fn retire(&mut self, old: Box<ModelUpdate>) {
        // Cannot fail: `next` checked for room, and this stage is the ring's only producer.
        let _ = self.garbage.push(old);
        // Release: see `ModelControl::applied`.
        self.applied.fetch_add(1, Ordering::Release);
    }
}
