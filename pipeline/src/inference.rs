//! The inference stage's logic, without threads: the online regime model (Statistical Jump
//! Model) and its stability filter, the scoring model (XGBoost) per feature vector, and the
//! latest slow-lane forecast per instrument attached to every vector.
//!
//! Models come from [`tickpipe_models`] and are bound by feature name to the feature schema
//! ([`crate::features::SCHEMA`]) when the engine is built; a model that names a feature the
//! schema lacks is refused then, never at run time.
//!
//! Per instrument the engine keeps a fixed slot (the online state `V_{t-1}`, the stability
//! filter, the latest forecast), claimed on the instrument's first vector; all of it is
//! allocated in [`InferenceEngine::new`]. Per vector the work is a gather of the model's
//! columns, one online step (O(K² + K·F)), one filter update and one tree walk per tree: no
//! allocation, lock or syscall.

use std::path::{Path, PathBuf};

use tickpipe_models::sjm::SjmModel;
use tickpipe_models::stability::{StabilityConfig, Stable};
use tickpipe_models::xgb::XgbModel;

use crate::PipelineError;
use crate::features::{SCHEMA, TimeSource};
use crate::msg::{Forecast, NO_REGIME, Tick};
use crate::signal::{
    MF_CROSSED, MF_INVALID_INPUT, MF_LOW_CONFIDENCE, MF_NO_SLOT, MF_OFF_REGIME, MF_RATE_LIMITED,
    MF_REGIME_CHANGED, MF_UNRELIABLE_INPUT,
};
use crate::swap::{ModelUpdate, RegimeModel, ScoringModel, bind_regime, bind_scoring};

/// Most inputs a regime model may take here (the gather buffer is fixed).
pub const MAX_REGIME_FEATURES: usize = 32;

/// Instrument id -> dense slot, fixed capacity, open addressing.
#[derive(Debug, Clone)]
pub struct InstrumentSlots {
    /// `(slot + 1) << 32 | instrument_id`, 0 = empty.
    table: Vec<u64>,
    mask: usize,
    used: usize,
    capacity: usize,
}

impl InstrumentSlots {
    /// Room for `capacity` instruments.
    pub fn new(capacity: usize) -> Self {
        let size = (capacity.max(1) * 2).next_power_of_two();
        Self {
            table: vec![0; size],
            mask: size - 1,
            used: 0,
            capacity: capacity.max(1),
        }
    }

    /// The slot of `id`, claiming one on first sight; `None` when all are taken.
    #[inline]
    pub fn claim(&mut self, id: u32) -> Option<usize> {
        let mut i = (id.wrapping_mul(0x9E37_79B9) as usize) & self.mask;
        loop {
            let e = self.table[i];
            if e == 0 {
                if self.used == self.capacity {
                    return None;
                }
                self.used += 1;
                self.table[i] = ((self.used as u64) << 32) | u64::from(id);
                return Some(self.used - 1);
            }
            if e as u32 == id {
                return Some((e >> 32) as usize - 1);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Forgets every instrument (no allocation).
    pub fn clear(&mut self) {
        self.table.fill(0);
        self.used = 0;
    }

    /// Instruments with a slot.
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether no instrument has a slot.
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }
}

/// The models the inference stage runs (all optional: without one, its fields stay NaN/none).
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceSettings {
    /// Statistical Jump Model directory.
    pub sjm: Option<PathBuf>,
    /// XGBoost model file (JSON or UBJSON).
    pub xgboost: Option<PathBuf>,
    /// The regime stability filter's knobs.
    pub stability: StabilityConfig,
    /// Instruments with inference state.
    pub max_instruments: usize,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            sjm: None,
            xgboost: None,
            stability: StabilityConfig::default(),
            max_instruments: 16,
        }
    }
}

/// What the inference stage did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InferenceCounts {
    /// Feature vectors seen.
    pub ticks: u64,
    /// Vectors whose regime-model inputs were not all finite (state not advanced).
    pub invalid_input: u64,
    /// Vectors judged unreliable (too many exactly-zero inputs; stable regime held).
    pub unreliable_input: u64,
    /// Regime changes held for low confidence.
    pub held_low_confidence: u64,
    /// Regime changes held by the transitions-per-hour budget.
    pub held_rate_limited: u64,
    /// Regime changes held because the vector was too far from the candidate regime.
    pub held_off_regime: u64,
    /// Stable regime changes.
    pub regime_changes: u64,
    /// Vectors of instruments that found no free slot (models not run for them).
    pub no_slot: u64,
    /// Forecasts received from the slow lane.
    pub forecasts: u64,
    /// Vectors scored by the scoring model.
    pub scored: u64,
}

impl InferenceCounts {
    /// Adds another engine's counts.
    pub fn add(&mut self, o: &InferenceCounts) {
        self.ticks += o.ticks;
        self.invalid_input += o.invalid_input;
        self.unreliable_input += o.unreliable_input;
        self.held_low_confidence += o.held_low_confidence;
        self.held_rate_limited += o.held_rate_limited;
        self.held_off_regime += o.held_off_regime;
        self.regime_changes += o.regime_changes;
        self.no_slot += o.no_slot;
        self.forecasts += o.forecasts;
        self.scored += o.scored;
    }
}

/// The feature schema's names, for binding models.
pub fn schema_names() -> Vec<&'static str> {
    SCHEMA.iter().map(|s| s.name).collect()
}

fn model_error(field: &str, path: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::config(field, format!("{}: {e}", path.display()))
}

/// Puts the model's path in front of a binding error.
fn at_path(e: PipelineError, path: &Path) -> PipelineError {
    match e {
        PipelineError::Config { field, msg } => PipelineError::Config {
            field,
            msg: format!("{}: {msg}", path.display()),
        },
        other => other,
    }
}

/// Per-vector inference for every instrument.
#[derive(Debug)]
pub struct InferenceEngine {
    regime: Option<RegimeModel>,
    scoring: Option<ScoringModel>,
    slots: InstrumentSlots,
    /// Latest forecast per slot: value and the end of its bar.
    forecasts: Vec<(f32, u64)>,
    x: [f64; MAX_REGIME_FEATURES],
    time_source: TimeSource,
    counts: InferenceCounts,
    /// A scoring model of the embedding program's own, after the built-in one.
    user: Option<Box<dyn crate::builder::Scorer>>,
    user_out: [f32; crate::msg::MAX_SCORES],
}

impl InferenceEngine {
    /// Loads and binds the configured models (version 1 each, as signals report it).
    ///
    /// # Errors
    /// A model that cannot be read, is invalid, names a feature the schema lacks, or is too
    /// large for the fixed buffers; stability knobs out of range.
    pub fn new(cfg: &InferenceSettings, time_source: TimeSource) -> Result<Self, PipelineError> {
        cfg.stability
            .validate()
            .map_err(|e| PipelineError::config("models.stability", e.to_string()))?;
        let n = cfg.max_instruments.max(1);
        let regime = match &cfg.sjm {
            Some(p) => {
                let m = SjmModel::load(p).map_err(|e| model_error("models.sjm", p, e))?;
                Some(bind_regime(m, &cfg.stability, n, 1).map_err(|e| at_path(e, p))?)
            }
            None => None,
        };
        let scoring = match &cfg.xgboost {
            Some(p) => {
                let m = XgbModel::load(p).map_err(|e| model_error("models.xgboost", p, e))?;
                Some(bind_scoring(m, 1).map_err(|e| at_path(e, p))?)
            }
            None => None,
        };
        Ok(Self {
            regime,
            scoring,
            slots: InstrumentSlots::new(n),
            forecasts: vec![(f32::NAN, u64::MAX); n],
            x: [0.0; MAX_REGIME_FEATURES],
            time_source,
            counts: InferenceCounts::default(),
            user: None,
            user_out: [f32::NAN; crate::msg::MAX_SCORES],
        })
    }

    /// Adds a scoring model of the embedding program's own ([`crate::builder::Scorer`]): it
    /// runs on every vector after the built-in scoring model and fills the scores after that
    /// model's (in its place when none is configured).
    ///
    /// # Errors
    /// The two models together have more outputs than a signal carries.
    pub fn with_user_scorer(
        mut self,
        scorer: Option<Box<dyn crate::builder::Scorer>>,
    ) -> Result<Self, PipelineError> {
        if let Some(s) = &scorer {
            let builtin = self.scoring.as_ref().map_or(0, |m| m.model.n_outputs());
            let total = builtin + s.outputs();
            if s.outputs() == 0 || total > crate::msg::MAX_SCORES {
                return Err(PipelineError::config(
                    "models.user",
                    format!(
                        "{}: {} outputs after the built-in model's {builtin} (a signal carries 1 \
                         to {} scores)",
                        s.name(),
                        s.outputs(),
                        crate::msg::MAX_SCORES
                    ),
                ));
            }
        }
        self.user = scorer;
        Ok(self)
    }

    /// Applies a prepared update between two vectors, handing back what it replaced in the same
    /// box (nothing is allocated or freed here).
    #[inline]
    pub fn apply(&mut self, update: &mut ModelUpdate) {
        match update {
            ModelUpdate::Scoring(m) => std::mem::swap(&mut self.scoring, m),
            ModelUpdate::Regime(m) => std::mem::swap(&mut self.regime, m),
        }
    }

    /// Versions of the scoring and regime models in use (0: none).
    pub fn versions(&self) -> (u32, u32) {
        (
            self.scoring.as_ref().map_or(0, |m| m.version),
            self.regime.as_ref().map_or(0, |m| m.version),
        )
    }

    /// Whether any model is configured.
    pub fn has_models(&self) -> bool {
        self.regime.is_some() || self.scoring.is_some()
    }

    /// Runs the models on one vector and writes their outputs into it.
    #[inline]
    pub fn on_tick(&mut self, t: &mut Tick) {
        self.counts.ticks += 1;
        let mut flags = if t.crossed { MF_CROSSED } else { 0 };
        let Some(slot) = self.slots.claim(t.instrument_id) else {
            self.counts.no_slot += 1;
            t.model_flags = flags | MF_NO_SLOT;
            return;
        };
        if let Some(r) = &mut self.regime {
            t.regime_version = r.version;
            let ts = self.time_source.pick(t.ts_recv, t.ts_event);
            let (step, stable) = r.label(slot, &t.values, ts, &mut self.x);
            t.regime = if step.valid { step.label } else { NO_REGIME };
            t.confidence = if step.valid {
                step.confidence as f32
            } else {
                f32::NAN
            };
            t.stable_regime = stable.regime;
            if stable.has(Stable::LOW_CONFIDENCE) {
                flags |= MF_LOW_CONFIDENCE;
                self.counts.held_low_confidence += 1;
            }
            if stable.has(Stable::RATE_LIMITED) {
                flags |= MF_RATE_LIMITED;
                self.counts.held_rate_limited += 1;
            }
            if stable.has(Stable::OFF_REGIME) {
                flags |= MF_OFF_REGIME;
                self.counts.held_off_regime += 1;
            }
            if stable.has(Stable::UNRELIABLE_INPUT) {
                flags |= MF_UNRELIABLE_INPUT;
                self.counts.unreliable_input += 1;
            }
            if stable.has(Stable::INVALID_INPUT) || !step.valid {
                flags |= MF_INVALID_INPUT;
                self.counts.invalid_input += 1;
            }
            if stable.changed {
                flags |= MF_REGIME_CHANGED;
                self.counts.regime_changes += 1;
            }
        }
        if let Some(m) = &self.scoring {
            let k = m.model.n_outputs();
            m.model.predict_row(&t.values, &m.cols, &mut t.scores[..k]);
            t.n_scores = k as u8;
            t.scoring_version = m.version;
            self.counts.scored += 1;
        }
        if let Some(u) = &mut self.user {
            // A hot swap may have brought a built-in model with more outputs: the user's
            // scores take what room is left.
            let k = usize::from(t.n_scores);
            let end = (k + u.outputs()).min(t.scores.len());
            if end > k {
                u.score(t, &mut self.user_out[..end - k]);
                t.scores[k..end].copy_from_slice(&self.user_out[..end - k]);
                t.n_scores = end as u8;
            }
        }
        let (value, bar_end) = self.forecasts[slot];
        if bar_end != u64::MAX {
            t.forecast = value;
            let now = self.time_source.pick(t.ts_recv, t.ts_event);
            t.forecast_age_ns = now.saturating_sub(bar_end);
        }
        t.model_flags = flags;
    }

    /// Takes a forecast from the slow lane: attached to the instrument's later vectors.
    #[inline]
    pub fn on_forecast(&mut self, f: &Forecast) {
        self.counts.forecasts += 1;
        if let Some(slot) = self.slots.claim(f.instrument_id) {
            self.forecasts[slot] = (f.values[0], f.ts_bar_end);
        }
    }

    /// What the engine did so far.
    pub fn counts(&self) -> InferenceCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_dense_stable_and_bounded() {
        let mut s = InstrumentSlots::new(3);
        assert_eq!(s.claim(42), Some(0));
        assert_eq!(s.claim(7), Some(1));
        assert_eq!(s.claim(42), Some(0));
        assert_eq!(s.claim(u32::MAX), Some(2));
        assert_eq!(s.claim(9), None, "full");
        assert_eq!(s.claim(7), Some(1), "known ids still resolve when full");
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn without_models_vectors_pass_with_forecast_attached() {
        let mut e = InferenceEngine::new(&InferenceSettings::default(), TimeSource::Recv).unwrap();
        assert!(!e.has_models());
        let mut t = Tick {
            instrument_id: 5,
            ts_recv: 2_000,
            crossed: true,
            ..Tick::default()
        };
        e.on_tick(&mut t);
        assert!(t.forecast.is_nan());
        assert_eq!(t.forecast_age_ns, u64::MAX);
        assert_eq!(t.model_flags, MF_CROSSED);
        assert_eq!(
            (t.regime, t.stable_regime, t.n_scores),
            (NO_REGIME, NO_REGIME, 0)
        );
        e.on_forecast(&Forecast {
            instrument_id: 5,
            ts_bar_end: 1_500,
            values: [0.25, 0.0, 0.0, 0.0],
            ..Forecast::default()
        });
        let mut t2 = Tick {
            instrument_id: 5,
            ts_recv: 2_600,
            ..Tick::default()
        };
        e.on_tick(&mut t2);
        assert_eq!(t2.forecast, 0.25);
        assert_eq!(t2.forecast_age_ns, 1_100);
        let mut other = Tick {
            instrument_id: 6,
            ..Tick::default()
        };
        e.on_tick(&mut other);
        assert!(other.forecast.is_nan(), "forecasts are per instrument");
        assert_eq!(e.counts().ticks, 3);
        assert_eq!(e.counts().forecasts, 1);
    }
}
