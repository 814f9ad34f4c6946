//! Regime stability filter: turns the jump model's raw online labels into a stable regime that
//! changes only when the evidence is good and not too often.
//!
//! One [`StabilityFilter`] per instrument, fed every online step with the step's event
//! timestamp and the same raw row the model saw ([`StabilityFilter::update`]). Fixed size: the
//! transition window is an inline ring and the per-regime tables are shared (`Arc`) between
//! clones, so an update never allocates.
//!
//! # Rules, in the order they are applied
//!
//! 1. **Invalid input** ([`Stable::INVALID_INPUT`]): the step is not valid, its label is not a
//!    state of the model, or `x` has the wrong length or a NaN or infinity. The regime is held
//!    and nothing else is evaluated.
//! 2. **Unreliable input** ([`Stable::UNRELIABLE_INPUT`]): more than `feature_zero_threshold` of
//!    the features are exactly zero (`0.0` or `-0.0`; a dead feed or an uninitialised window
//!    looks like this). The regime is held.
//! 3. If the raw label equals the stable regime, nothing changes (flags empty).
//! 4. Otherwise the label is a **candidate**. It becomes the stable regime only if every check
//!    passes; each failing check sets its flag (all are evaluated, so the flags say every reason
//!    the change was held):
//!    - [`Stable::LOW_CONFIDENCE`]: `step.confidence < min_confidence`;
//!    - [`Stable::RATE_LIMITED`]: `max_transitions_per_hour` stable transitions already happened
//!      in the sliding hour `(ts_ns − 1 h, ts_ns]`, by event timestamp. A timestamp earlier than
//!      the oldest transition in the window counts as inside it (a clock going backwards never
//!      frees budget). The first regime accepted is not a transition and is never rate-limited;
//!    - [`Stable::OFF_REGIME`]: the row is implausible under the candidate regime's Gaussian:
//!      with `z` the row z-scored by the model's scaler, `μ_k` the candidate's centre and
//!      `σ²_kf` its per-feature variances estimated at fit time
//!      ([`SjmModel::regime_variances`]), the RMS standardised distance
//!      `sqrt((1/F) Σ_f (z_f − μ_kf)² / (σ²_kf + ρ))` exceeds `max_regime_distance`, where the
//!      ridge `ρ = covariance_regularization` is added to every variance. The covariance is
//!      diagonal, as the jump model itself treats features as independent; the ridge keeps a
//!      regime in which a feature barely varied from rejecting every row that moves it.
//!
//! [`Stable::changed`] is true when the stable regime changed in this update (including the
//! first acceptance).

use std::sync::Arc;

use crate::sjm::{MAX_FEATURES, MAX_STATES, SjmModel, SjmStep};

/// One hour in nanoseconds: the length of the transition window.
pub const HOUR_NS: u64 = 3_600_000_000_000;
/// Largest `max_transitions_per_hour` (the window is a fixed ring of this many timestamps).
pub const MAX_TRANSITIONS_PER_HOUR: u32 = 64;

/// Errors of configuring a stability filter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StabilityError {
    /// A knob is out of its range.
    #[error("stability config: {field} = {value} is out of range: {expected}")]
    InvalidConfig {
        /// The knob.
        field: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        expected: &'static str,
    },
}

/// The filter's knobs. `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StabilityConfig {
    /// A change is accepted only with `confidence ≥ min_confidence`, in `[0, 1]`
    /// (default 0.70).
    pub min_confidence: f64,
    /// Most stable transitions in any sliding hour, 1 to [`MAX_TRANSITIONS_PER_HOUR`]
    /// (default 10).
    pub max_transitions_per_hour: u32,
    /// Input is unreliable when the fraction of exactly-zero features is greater than this,
    /// in `[0, 1]` (default 0.5; 1 disables the check).
    pub feature_zero_threshold: f64,
    /// Ridge `ρ` added to every per-regime variance before the regime distance is taken,
    /// finite and `> 0` (default 1e-4).
    pub covariance_regularization: f64,
    /// Largest RMS standardised distance of a row to a candidate regime, `> 0`, may be infinite
    /// to disable the check (default 6.0).
    pub max_regime_distance: f64,
}

impl Default for StabilityConfig {
    fn default() -> Self {
        Self {
            min_confidence: 0.70,
            max_transitions_per_hour: 10,
            feature_zero_threshold: 0.5,
            covariance_regularization: 1e-4,
            max_regime_distance: 6.0,
        }
    }
}

fn bad(field: &'static str, value: impl ToString, expected: &'static str) -> StabilityError {
    StabilityError::InvalidConfig {
        field,
        value: value.to_string(),
        expected,
    }
}

impl StabilityConfig {
    /// Checks every knob's range.
    ///
    /// # Errors
    /// [`StabilityError::InvalidConfig`] naming the first knob out of range.
    pub fn validate(&self) -> Result<(), StabilityError> {
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(bad("min_confidence", self.min_confidence, "0 to 1"));
        }
        if !(1..=MAX_TRANSITIONS_PER_HOUR).contains(&self.max_transitions_per_hour) {
            return Err(bad(
                "max_transitions_per_hour",
                self.max_transitions_per_hour,
                "1 to 64",
            ));
        }
        if !(0.0..=1.0).contains(&self.feature_zero_threshold) {
            return Err(bad(
                "feature_zero_threshold",
                self.feature_zero_threshold,
                "0 to 1",
            ));
        }
        if !(self.covariance_regularization.is_finite() && self.covariance_regularization > 0.0) {
            return Err(bad(
                "covariance_regularization",
                self.covariance_regularization,
                "finite and > 0",
            ));
        }
        if self.max_regime_distance.is_nan() || self.max_regime_distance <= 0.0 {
            return Err(bad(
                "max_regime_distance",
                self.max_regime_distance,
                "> 0 (infinity disables the check)",
            ));
        }
        Ok(())
    }
}

/// The outcome of one update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stable {
    /// The stable regime, or [`Stable::NO_REGIME`] before the first accepted label.
    pub regime: u8,
    /// The stable regime changed in this update.
    pub changed: bool,
    /// Why a change was held, or why the input was not used: a set of the flag constants.
    pub flags: u8,
}

impl Stable {
    /// `regime` before any label was accepted.
    pub const NO_REGIME: u8 = u8::MAX;
    /// The candidate's confidence was below `min_confidence`.
    pub const LOW_CONFIDENCE: u8 = 1 << 0;
    /// The transition budget of the sliding hour was spent.
    pub const RATE_LIMITED: u8 = 1 << 1;
    /// Too many features were exactly zero; the input was not used.
    pub const UNRELIABLE_INPUT: u8 = 1 << 2;
    /// The step was invalid or the row non-finite or wrongly sized; the input was not used.
    pub const INVALID_INPUT: u8 = 1 << 3;
    /// The row was too far from the candidate regime's Gaussian.
    pub const OFF_REGIME: u8 = 1 << 4;

    /// The regime as an option.
    pub fn regime(&self) -> Option<u8> {
        (self.regime != Self::NO_REGIME).then_some(self.regime)
    }

    /// Whether flag `flag` (one of the constants) is set.
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// Per-model tables the filter reads, shared between clones.
#[derive(Debug)]
struct RegimeTable {
    k: usize,
    f: usize,
    mean: [f64; MAX_FEATURES],
    std: [f64; MAX_FEATURES],
    /// `K × F`, z-scored space.
    centres: Vec<f64>,
    /// `1 / (σ²_kf + ρ)`, `K × F`.
    inv_var: Vec<f64>,
    /// `F · max_regime_distance²`, compared with the squared distance.
    max_d2: f64,
}

impl RegimeTable {
    fn distance2(&self, k: usize, x: &[f64]) -> f64 {
        let f = self.f;
        let centre = &self.centres[k * f..(k + 1) * f];
        let inv = &self.inv_var[k * f..(k + 1) * f];
        let mut d2 = 0.0;
        for ((((&xj, &m), &s), &c), &w) in
            x.iter().zip(&self.mean).zip(&self.std).zip(centre).zip(inv)
        {
            let e = (xj - m) / s - c;
            d2 += e * e * w;
        }
        d2
    }
}

/// Per-instrument stability filter (see the module docs for the rules). Build one with
/// [`StabilityFilter::new`] and clone it for each further instrument: clones share the
/// per-regime tables.
#[derive(Debug, Clone)]
pub struct StabilityFilter {
    table: Arc<RegimeTable>,
    min_confidence: f64,
    max_per_hour: usize,
    /// The most exactly-zero features a reliable row may have: the largest `z` with
    /// `z / F ≤ feature_zero_threshold` (computed as that division, so the rule is exactly
    /// "fraction greater than the threshold").
    max_zeros: usize,
    regime: u8,
    /// Timestamps of the last `max_per_hour` transitions; `head` is the oldest once full.
    ring: [u64; MAX_TRANSITIONS_PER_HOUR as usize],
    head: usize,
    len: usize,
    transitions: u64,
}

impl StabilityFilter {
    /// A filter for rows and steps of `model`, configured by `cfg`. The ridge is applied here:
    /// the filter keeps `1 / (σ²_kf + covariance_regularization)`.
    ///
    /// # Errors
    /// [`StabilityError::InvalidConfig`] when `cfg` does not validate.
    pub fn new(cfg: &StabilityConfig, model: &SjmModel) -> Result<Self, StabilityError> {
        cfg.validate()?;
        let (k, f) = (model.n_states(), model.n_features());
        let mut mean = [0.0; MAX_FEATURES];
        let mut std = [1.0; MAX_FEATURES];
        mean[..f].copy_from_slice(model.scaler_mean());
        std[..f].copy_from_slice(model.scaler_std());
        let mut centres = Vec::with_capacity(k * f);
        let mut inv_var = Vec::with_capacity(k * f);
        for s in 0..k {
            centres.extend_from_slice(model.centre(s));
            inv_var.extend(
                model
                    .regime_variances(s)
                    .iter()
                    .map(|&v| 1.0 / (v + cfg.covariance_regularization)),
            );
        }
        debug_assert!(k <= MAX_STATES);
        Ok(Self {
            table: Arc::new(RegimeTable {
                k,
                f,
                mean,
                std,
                centres,
                inv_var,
                max_d2: f as f64 * cfg.max_regime_distance * cfg.max_regime_distance,
            }),
            min_confidence: cfg.min_confidence,
            max_per_hour: cfg.max_transitions_per_hour as usize,
            max_zeros: (0..=f)
                .filter(|&z| z as f64 / f as f64 <= cfg.feature_zero_threshold)
                .max()
                .unwrap_or(0),
            regime: Stable::NO_REGIME,
            ring: [0; MAX_TRANSITIONS_PER_HOUR as usize],
            head: 0,
            len: 0,
            transitions: 0,
        })
    }

    /// The stable regime, `None` before the first accepted label.
    pub fn regime(&self) -> Option<u8> {
        (self.regime != Stable::NO_REGIME).then_some(self.regime)
    }

    /// Stable transitions since creation or the last reset (the first acceptance excluded).
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Forgets the regime and the transition window.
    pub fn reset(&mut self) {
        self.regime = Stable::NO_REGIME;
        self.head = 0;
        self.len = 0;
        self.transitions = 0;
    }

    fn budget_left(&self, ts_ns: u64) -> bool {
        if self.len < self.max_per_hour {
            return true;
        }
        let oldest = self.ring[self.head];
        ts_ns.saturating_sub(oldest) >= HOUR_NS
    }

    fn record(&mut self, ts_ns: u64) {
        if self.len < self.max_per_hour {
            self.ring[(self.head + self.len) % self.max_per_hour] = ts_ns;
            self.len += 1;
        } else {
            self.ring[self.head] = ts_ns;
            self.head = (self.head + 1) % self.max_per_hour;
        }
        self.transitions += 1;
    }

    fn hold(&self, flags: u8) -> Stable {
        Stable {
            regime: self.regime,
            changed: false,
            flags,
        }
    }

    /// Feeds one online step of the instrument: `ts_ns` is the event timestamp (ns since the
    /// epoch), `step` the model's output for the row `x` (raw values, model feature order).
    /// No allocation, no panics.
    pub fn update(&mut self, ts_ns: u64, step: &SjmStep, x: &[f64]) -> Stable {
        let table = &*self.table;
        if !step.valid || usize::from(step.label) >= table.k || x.len() != table.f {
            return self.hold(Stable::INVALID_INPUT);
        }
        // One pass for both input checks.
        let (mut finite, mut zeros) = (true, 0usize);
        for &v in x {
            finite &= v.is_finite();
            zeros += usize::from(v == 0.0);
        }
        if !finite {
            return self.hold(Stable::INVALID_INPUT);
        }
        if zeros > self.max_zeros {
            return self.hold(Stable::UNRELIABLE_INPUT);
        }
        if step.label == self.regime {
            return self.hold(0);
        }
        let first = self.regime == Stable::NO_REGIME;
        let mut flags = 0;
        // NaN confidence counts as low.
        let confident = step.confidence >= self.min_confidence;
        if !confident {
            flags |= Stable::LOW_CONFIDENCE;
        }
        if !first && !self.budget_left(ts_ns) {
            flags |= Stable::RATE_LIMITED;
        }
        if table.distance2(usize::from(step.label), x) > table.max_d2 {
            flags |= Stable::OFF_REGIME;
        }
        if flags != 0 {
            return self.hold(flags);
        }
        if !first {
            self.record(ts_ns);
        }
        self.regime = step.label;
        Stable {
            regime: self.regime,
            changed: true,
            flags: 0,
        }
    }
}
