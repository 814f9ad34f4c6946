//! Statistical Jump Model (SJM): fit, batch decoding and online inference.
//!
//! The discrete jump model of Nystrup et al. assigns every row `x_t` of a feature sequence to one
//! of `K` states by minimising
//!
//! ```text
//!     Σ_t ½‖z_t − μ_{s_t}‖²  +  λ · #{t : s_t ≠ s_{t−1}}
//! ```
//!
//! over the centres `μ_1..μ_K` and the state path `s`, where `z_t` is the row z-scored with the
//! scaler fitted on the training rows. The reference implementation is the Python package
//! `jumpmodels` 0.1.1 (`JumpModel(cont=False)`); this module follows it step for step so that,
//! given the same starting centres, it finds the same labels and centres (see
//! `models/tests/sjm_parity.rs` and the goldens in `models/fixtures/sjm/`).
//!
//! # Fit ([`SjmModel::fit`])
//!
//! 1. Rows with a non-finite value are **skipped and counted** ([`SjmFitReport::n_skipped`]);
//!    the remaining rows are treated as one consecutive sequence.
//! 2. Each feature is z-scored with its mean and population standard deviation (as
//!    scikit-learn's `StandardScaler`, the same sums in the same order); a feature that is
//!    constant over the rows (by scikit-learn's test) is an error. The scaler is stored with the
//!    model and applied to every input.
//! 3. `n_init` starts are drawn by greedy k-means++ (`2 + ⌊ln K⌋` local trials per centre, as
//!    scikit-learn's `kmeans_plusplus`) from a seeded xoshiro256** generator. The stream is not
//!    scikit-learn's; [`SjmModel::fit_with_starts`] takes the starts explicitly instead.
//! 4. From each start, coordinate descent: an exact dynamic-programming (Viterbi) E-step, then a
//!    mean M-step, repeated while **all** of these hold (the package's loop): fewer than
//!    `max_iter` iterations so far, the new labels are not the previous labels up to a
//!    relabelling, and the objective fell by more than `tol`. The centres kept are those that
//!    produced the last labels. A centre whose state lost all its rows becomes unreachable.
//! 5. Best of the starts: a start replaces the best so far when its labels are not the same
//!    clustering as the best's and its objective is strictly lower (first start wins ties).
//! 6. States are ordered by **decreasing frequency** in the fitted labels (the package's order
//!    when no return series is given), ties kept in the order of the starting centres. A fit
//!    whose best solution leaves a state without rows is an error ([`SjmError::EmptyState`]).
//! 7. Per-state diagonal covariances are estimated from the fitted labels for the stability
//!    filter ([`SjmModel::regime_variances`]).
//!
//! # Online inference ([`SjmModel::step`])
//!
//! The forward recursion of the same dynamic program, one row at a time, with `V_{t−1}` kept in
//! a fixed-size [`SjmOnline`] per instrument and renormalised every step (its minimum is
//! subtracted, so it never grows):
//!
//! ```text
//!     V_0(k) = ℓ_0(k),   V_t(k) = ℓ_t(k) + min(V_{t−1}(k), min_j V_{t−1}(j) + λ),   label_t = argmin_k V_t(k)
//! ```
//!
//! with `ℓ_t(k) = ½‖z_t − μ_k‖²`. With the minimum of `V_{t−1}` at zero, the inner minimum is
//! `min(V_{t−1}(k), λ)`, so one step costs O(K·F) for the losses and O(K) for the recursion (the
//! general O(K²) form collapses because every switch costs the same λ). The labels are those of
//! the package's `predict_online` (each label uses only the rows up to and including its own).
//!
//! The step evaluates `ℓ_t(k) − ½‖z_t‖² = ½‖μ_k‖² − Σ_j (x_j − m_j)·μ_kj/s_j` (scaler mean
//! `m`, std `s`): the dropped term is the same for every state and cancels in the
//! normalisation, which leaves one multiply-add per feature and state. Its values therefore
//! agree with the reference's recursion to rounding rather than bit for bit; a label can differ
//! from the reference's only where two states tie to within that rounding (no row of the parity
//! goldens does).
//!
//! **Confidence.** `confidence = 1 / Σ_k exp(−(V_t(k) − min_j V_t(j)))`, the largest entry of
//! `softmax(−V_t)`. `V_t(k)` is the negative log of the best path ending in `k` under unit-variance
//! Gaussian emissions around the centres and a switch weight `e^{−λ}`, so this is the max-product
//! posterior of the chosen state. It lies in `[1/K, 1]`: exactly `1/K` when all states tie, and
//! it tends to 1 as the runner-up falls behind (it is exactly 1.0 once every other state is more
//! than 37 behind). It is a decreasing function of each gap to the other states and does not
//! depend on the normalisation constant. The exponential is an inlined polynomial within a few
//! ulps of the correctly rounded value, identical on every platform; terms of gaps of 38 or
//! more are skipped, which cannot change the sum (it starts at 1 and each is below half an
//! ulp of it).
//!
//! **Invalid inputs.** A row with a NaN or infinity, of the wrong length, or so extreme that the
//! new values would overflow, leaves the state untouched (no NaN or infinity ever enters `V`)
//! and returns `valid = false`, `confidence = 0.0` and the last label (or
//! [`SjmStep::NO_LABEL`] before the first valid row). The check is one test on the sum of the
//! new values, made before they are stored.
//!
//! # Model directory ([`SjmModel::save`], [`SjmModel::load`])
//!
//! One file, `model.json`, versioned (`"format": "tickpipe.sjm"`, `"version": 1`), with `K`, `λ`,
//! the feature names, the scaler, the centres (z-scored space), the per-state variances and, for
//! fitted models, the fit metadata. Numbers are written in shortest round-trip form, so a loaded
//! model is bit-identical to the saved one.
//!
//! # Binding
//!
//! Models are matched to inputs by feature name: [`SjmModel::bind`] maps each model feature to
//! its column in the caller's row. [`SjmModel::step`] and [`SjmModel::predict`] take rows in model
//! feature order.

mod fit;
mod io;
mod online;
mod rng;

use std::path::PathBuf;

pub use online::SjmOnline;

/// Largest number of states a model may have (labels are `u8`; online state is fixed-size).
pub const MAX_STATES: usize = 8;
/// Largest number of features a model may have (the online step's scratch is fixed-size).
pub const MAX_FEATURES: usize = 32;
/// The `format` string of a model file.
pub const FORMAT: &str = "tickpipe.sjm";
/// The model file version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The file name of the model inside a model directory.
pub const MODEL_FILE: &str = "model.json";

/// Errors of fitting, loading, saving and binding a jump model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SjmError {
    /// A fit configuration value is out of range.
    #[error("invalid fit configuration: {field} {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An array does not have the length its shape requires.
    #[error("shape mismatch in {what}: expected {expected}, found {found}")]
    Shape {
        /// What was measured.
        what: String,
        /// The length required.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// More states than [`MAX_STATES`], or fewer than two.
    #[error("{n} states: a model has between 2 and {max} states")]
    StateCount {
        /// The number of states requested or found.
        n: usize,
        /// [`MAX_STATES`].
        max: usize,
    },
    /// More features than [`MAX_FEATURES`], or none.
    #[error("{n} features: a model has between 1 and {max} features")]
    FeatureCount {
        /// The number of features requested or found.
        n: usize,
        /// [`MAX_FEATURES`].
        max: usize,
    },
    /// The feature names are unusable (empty or repeated).
    #[error("feature name '{name}' {reason}")]
    FeatureName {
        /// The name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A model feature is missing from the schema given to [`SjmModel::bind`].
    #[error("model feature '{name}' is not in the input schema")]
    UnknownFeature {
        /// The model feature's name.
        name: String,
    },
    /// A model feature appears more than once in the schema given to [`SjmModel::bind`].
    #[error("model feature '{name}' appears more than once in the input schema")]
    AmbiguousFeature {
        /// The model feature's name.
        name: String,
    },
    /// A model parameter is NaN or infinite (`null` in a model file).
    #[error("model parameter {field}[{index}] is not a finite number")]
    NonFinite {
        /// The parameter array, e.g. `centres[1]` or `scaler.std`.
        field: String,
        /// The index inside it.
        index: usize,
    },
    /// A scaler standard deviation is zero or negative.
    #[error("scaler std of feature '{feature}' is {value}: it must be positive")]
    BadStd {
        /// The feature's name.
        feature: String,
        /// The value found.
        value: f64,
    },
    /// A per-state variance is negative.
    #[error("regime variance [{state}][{feature}] is {value}: it must be non-negative")]
    BadVariance {
        /// The state.
        state: usize,
        /// The feature index.
        feature: usize,
        /// The value found.
        value: f64,
    },
    /// The jump penalty is negative.
    #[error("jump penalty {value}: it must be non-negative")]
    BadPenalty {
        /// The value found.
        value: f64,
    },
    /// A feature is constant over the fit rows and cannot be z-scored.
    #[error("feature '{name}' is constant over the {n_rows} usable rows and cannot be z-scored")]
    ConstantFeature {
        /// The feature's name.
        name: String,
        /// Rows used.
        n_rows: usize,
    },
    /// Too few rows with finite values to fit.
    #[error("{usable} usable rows ({skipped} skipped as non-finite); at least {needed} are needed")]
    TooFewRows {
        /// Rows with finite values.
        usable: usize,
        /// Rows skipped.
        skipped: usize,
        /// Rows needed.
        needed: usize,
    },
    /// A row passed to [`SjmModel::predict`] has a non-finite value, or one so far from the
    /// scaler's mean (over 1e150 standard deviations) that its distances would overflow.
    #[error("row {row} has a non-finite or overflowing value")]
    NonFiniteRow {
        /// Row index.
        row: usize,
    },
    /// The best solution leaves states without rows.
    #[error(
        "the best fit leaves {empty} of {n_states} states without rows; lower the jump penalty or the number of states"
    )]
    EmptyState {
        /// Number of empty states.
        empty: usize,
        /// Number of states asked for.
        n_states: usize,
    },
    /// The model file does not exist.
    #[error("model file {} not found", path.display())]
    MissingFile {
        /// The path looked for.
        path: PathBuf,
    },
    /// Reading or writing the model file failed.
    #[error("model file {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The model file is not valid JSON (corrupt or truncated).
    #[error("model file {}: corrupt or truncated JSON: {source}", path.display())]
    Json {
        /// The path.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The model file is JSON but misses a field, has an unknown one or a wrong type.
    #[error("model file {}: {source}", path.display())]
    Schema {
        /// The path.
        path: PathBuf,
        /// The deserialiser's error.
        source: serde_json::Error,
    },
    /// The model file is not a jump model.
    #[error("model file {}: format {found:?} is not \"{FORMAT}\"", path.display())]
    WrongFormat {
        /// The path.
        path: PathBuf,
        /// The `format` found (empty when absent).
        found: String,
    },
    /// The model file has a version this build does not read.
    #[error("model file {}: version {found} is not supported (this build reads version {FORMAT_VERSION})", path.display())]
    UnsupportedVersion {
        /// The path.
        path: PathBuf,
        /// The version found (`-1` when absent or not an integer).
        found: i64,
    },
}

/// Fit settings. `Default` gives the package's defaults: 2 states, λ = 0, 10 starts, at most
/// 1000 iterations, tolerance 1e-8, seed 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SjmFitConfig {
    /// Number of states `K`, 2 to [`MAX_STATES`].
    pub n_states: usize,
    /// Jump penalty λ ≥ 0, in units of the loss (half squared z-scored distance).
    pub jump_penalty: f64,
    /// Number of k-means++ starts, at least 1 (ignored by [`SjmModel::fit_with_starts`]).
    pub n_init: usize,
    /// Most coordinate-descent iterations per start (0 keeps the starting centres).
    pub max_iter: usize,
    /// Stop when the objective falls by no more than this (≥ 0).
    pub tol: f64,
    /// Seed of the k-means++ generator.
    pub seed: u64,
}

impl Default for SjmFitConfig {
    fn default() -> Self {
        Self {
            n_states: 2,
            jump_penalty: 0.0,
            n_init: 10,
            max_iter: 1000,
            tol: 1e-8,
            seed: 0,
        }
    }
}

impl SjmFitConfig {
    /// Checks every field's range.
    ///
    /// # Errors
    /// [`SjmError::StateCount`] or [`SjmError::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<(), SjmError> {
        if !(2..=MAX_STATES).contains(&self.n_states) {
            return Err(SjmError::StateCount {
                n: self.n_states,
                max: MAX_STATES,
            });
        }
        if !self.jump_penalty.is_finite() || self.jump_penalty < 0.0 {
            return Err(SjmError::InvalidConfig {
                field: "jump_penalty",
                reason: format!(
                    "is {}; it must be finite and non-negative",
                    self.jump_penalty
                ),
            });
        }
        if self.n_init == 0 {
            return Err(SjmError::InvalidConfig {
                field: "n_init",
                reason: "is 0; at least one start is needed".into(),
            });
        }
        if !self.tol.is_finite() || self.tol < 0.0 {
            return Err(SjmError::InvalidConfig {
                field: "tol",
                reason: format!("is {}; it must be finite and non-negative", self.tol),
            });
        }
        Ok(())
    }
}

/// Why coordinate descent stopped for one start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SjmStop {
    /// The E-step reproduced the previous labels (up to a relabelling).
    SameLabels,
    /// The objective fell by no more than `tol`.
    Tolerance,
    /// `max_iter` iterations were done.
    MaxIter,
}

/// The outcome of one start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SjmInitReport {
    /// Final objective of this start.
    pub objective: f64,
    /// M-steps done.
    pub iterations: usize,
    /// Why it stopped.
    pub stop: SjmStop,
}

/// What a fit did, returned with the model.
#[derive(Debug, Clone, PartialEq)]
pub struct SjmFitReport {
    /// Rows used (all values finite).
    pub n_rows: usize,
    /// Rows skipped because a value was NaN or infinite.
    pub n_skipped: usize,
    /// Objective of the chosen solution (`Σ ½‖z_t − μ_{s_t}‖² + λ·switches`, z-scored units).
    pub objective: f64,
    /// Index of the chosen start.
    pub best_init: usize,
    /// One entry per start, in order.
    pub inits: Vec<SjmInitReport>,
    /// Fitted label of every used row (after state ordering), in row order.
    pub labels: Vec<u8>,
    /// Rows per state (decreasing, by the ordering rule).
    pub state_frequencies: Vec<usize>,
    /// Number of state switches in `labels`.
    pub n_switches: usize,
}

/// Fit metadata stored with a fitted model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SjmFitInfo {
    /// Objective of the chosen solution.
    pub objective: f64,
    /// M-steps done by the chosen start.
    pub iterations: usize,
    /// Index of the chosen start.
    pub best_init: usize,
    /// Number of starts.
    pub n_init: usize,
    /// How the starts were made: `"k-means++"` or `"given"`.
    pub init: String,
    /// Seed of the k-means++ generator.
    pub seed: u64,
    /// `max_iter` of the fit.
    pub max_iter: usize,
    /// `tol` of the fit.
    pub tol: f64,
    /// Rows used.
    pub n_rows: usize,
    /// Rows skipped as non-finite.
    pub n_skipped: usize,
    /// Rows per state.
    pub state_frequencies: Vec<usize>,
}

/// The parameters of a model, to build one without fitting ([`SjmModel::from_parts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SjmParts {
    /// Feature names, in the order of the model's inputs.
    pub feature_names: Vec<String>,
    /// Jump penalty λ ≥ 0.
    pub jump_penalty: f64,
    /// Scaler means, one per feature.
    pub scaler_mean: Vec<f64>,
    /// Scaler standard deviations (> 0), one per feature.
    pub scaler_std: Vec<f64>,
    /// Centres in z-scored space, `K × F` row-major; `K` is inferred.
    pub centres: Vec<f64>,
    /// Per-state per-feature variances in z-scored space (≥ 0), `K × F` row-major.
    pub regime_variances: Vec<f64>,
}

/// One online inference result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SjmStep {
    /// The state `argmin_k V_t(k)` (ties to the lowest index); after an invalid row, the last
    /// valid label, or [`SjmStep::NO_LABEL`] before the first valid row.
    pub label: u8,
    /// Max-product posterior of `label` in `[1/K, 1]` (see the module docs); 0 when invalid.
    pub confidence: f64,
    /// False when the row was rejected (non-finite, overflowing or wrongly sized) and the state
    /// was left as it was.
    pub valid: bool,
}

impl SjmStep {
    /// The label reported before any valid row has been seen.
    pub const NO_LABEL: u8 = u8::MAX;
}

/// A fitted or loaded jump model. Immutable; share it between instruments and keep one
/// [`SjmOnline`] per instrument.
#[derive(Debug, Clone, PartialEq)]
pub struct SjmModel {
    n_states: usize,
    n_features: usize,
    jump_penalty: f64,
    feature_names: Vec<String>,
    mean: Vec<f64>,
    std: Vec<f64>,
    /// `K × F` row-major, z-scored space.
    centres: Vec<f64>,
    /// Per feature `j`, for the online step: `[m_j, a_j0, …, a_j(K−1), 0, …]` with the scaler
    /// mean `m_j` and `a_jk = μ_kj / std_j`.
    online_rows: Vec<[f64; MAX_STATES + 1]>,
    /// `b_k = ½‖c_k‖²`, for the online step.
    online_b: [f64; MAX_STATES],
    /// `K × F` row-major, z-scored space.
    regime_var: Vec<f64>,
    fit: Option<SjmFitInfo>,
}

fn check_finite(field: &str, values: &[f64]) -> Result<(), SjmError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(SjmError::NonFinite {
            field: field.to_string(),
            index,
        }),
        None => Ok(()),
    }
}

pub(crate) fn check_names<S: AsRef<str>>(names: &[S]) -> Result<(), SjmError> {
    if names.is_empty() || names.len() > MAX_FEATURES {
        return Err(SjmError::FeatureCount {
            n: names.len(),
            max: MAX_FEATURES,
        });
    }
    for (i, name) in names.iter().enumerate() {
        let name = name.as_ref();
        if name.is_empty() {
            return Err(SjmError::FeatureName {
                name: String::new(),
                reason: "is empty",
            });
        }
        if names[..i].iter().any(|other| other.as_ref() == name) {
            return Err(SjmError::FeatureName {
                name: name.to_string(),
                reason: "appears more than once",
            });
        }
    }
    Ok(())
}

impl SjmModel {
    /// Builds a model from its parameters, with every check [`SjmModel::load`] makes.
    ///
    /// # Errors
    /// [`SjmError::FeatureCount`], [`SjmError::FeatureName`], [`SjmError::Shape`],
    /// [`SjmError::StateCount`], [`SjmError::NonFinite`], [`SjmError::BadStd`],
    /// [`SjmError::BadVariance`] or [`SjmError::BadPenalty`].
    pub fn from_parts(parts: SjmParts) -> Result<Self, SjmError> {
        Self::from_parts_with_info(parts, None)
    }

    pub(crate) fn from_parts_with_info(
        parts: SjmParts,
        fit: Option<SjmFitInfo>,
    ) -> Result<Self, SjmError> {
        check_names(&parts.feature_names)?;
        let f = parts.feature_names.len();
        for (what, v) in [
            ("scaler mean", &parts.scaler_mean),
            ("scaler std", &parts.scaler_std),
        ] {
            if v.len() != f {
                return Err(SjmError::Shape {
                    what: what.to_string(),
                    expected: f,
                    found: v.len(),
                });
            }
        }
        if parts.centres.is_empty() || !parts.centres.len().is_multiple_of(f) {
            return Err(SjmError::Shape {
                what: "centres (K × F values)".to_string(),
                expected: f * (parts.centres.len() / f).max(2),
                found: parts.centres.len(),
            });
        }
        let k = parts.centres.len() / f;
        if !(2..=MAX_STATES).contains(&k) {
            return Err(SjmError::StateCount {
                n: k,
                max: MAX_STATES,
            });
        }
        if parts.regime_variances.len() != k * f {
            return Err(SjmError::Shape {
                what: "regime variances (K × F values)".to_string(),
                expected: k * f,
                found: parts.regime_variances.len(),
            });
        }
        if !parts.jump_penalty.is_finite() {
            return Err(SjmError::NonFinite {
                field: "jump_penalty".into(),
                index: 0,
            });
        }
        if parts.jump_penalty < 0.0 {
            return Err(SjmError::BadPenalty {
                value: parts.jump_penalty,
            });
        }
        check_finite("scaler.mean", &parts.scaler_mean)?;
        check_finite("scaler.std", &parts.scaler_std)?;
        for (i, &s) in parts.scaler_std.iter().enumerate() {
            if s <= 0.0 {
                return Err(SjmError::BadStd {
                    feature: parts.feature_names[i].clone(),
                    value: s,
                });
            }
        }
        for s in 0..k {
            check_finite(&format!("centres[{s}]"), &parts.centres[s * f..(s + 1) * f])?;
        }
        for s in 0..k {
            let row = &parts.regime_variances[s * f..(s + 1) * f];
            check_finite(&format!("regime_variances[{s}]"), row)?;
            if let Some(j) = row.iter().position(|&v| v < 0.0) {
                return Err(SjmError::BadVariance {
                    state: s,
                    feature: j,
                    value: row[j],
                });
            }
        }
        let mut online_rows = vec![[0.0; MAX_STATES + 1]; f];
        let mut online_b = [0.0; MAX_STATES];
        for (j, row) in online_rows.iter_mut().enumerate() {
            row[0] = parts.scaler_mean[j];
        }
        for s in 0..k {
            let c = &parts.centres[s * f..(s + 1) * f];
            for (j, &cj) in c.iter().enumerate() {
                online_rows[j][1 + s] = cj / parts.scaler_std[j];
            }
            online_b[s] = 0.5 * c.iter().map(|cj| cj * cj).sum::<f64>();
        }
        Ok(Self {
            online_rows,
            online_b,
            n_states: k,
            n_features: f,
            jump_penalty: parts.jump_penalty,
            feature_names: parts.feature_names,
            mean: parts.scaler_mean,
            std: parts.scaler_std,
            centres: parts.centres,
            regime_var: parts.regime_variances,
            fit,
        })
    }

    /// The model's parameters (the inverse of [`SjmModel::from_parts`]).
    pub fn to_parts(&self) -> SjmParts {
        SjmParts {
            feature_names: self.feature_names.clone(),
            jump_penalty: self.jump_penalty,
            scaler_mean: self.mean.clone(),
            scaler_std: self.std.clone(),
            centres: self.centres.clone(),
            regime_variances: self.regime_var.clone(),
        }
    }

    /// Number of states `K`.
    pub fn n_states(&self) -> usize {
        self.n_states
    }

    /// Number of features `F`.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Feature names in model order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Jump penalty λ.
    pub fn jump_penalty(&self) -> f64 {
        self.jump_penalty
    }

    /// Scaler means, one per feature.
    pub fn scaler_mean(&self) -> &[f64] {
        &self.mean
    }

    /// Scaler standard deviations, one per feature.
    pub fn scaler_std(&self) -> &[f64] {
        &self.std
    }

    /// Centre of state `k` in z-scored space.
    ///
    /// # Panics
    /// If `k >= n_states()`.
    pub fn centre(&self, k: usize) -> &[f64] {
        &self.centres[k * self.n_features..(k + 1) * self.n_features]
    }

    /// Per-feature variances of state `k` in z-scored space: the diagonal of the state's
    /// covariance, estimated at fit time as `σ²_kf = (1/N_k) Σ_{t: s_t = k} (z_tf − μ_kf)²` over
    /// the fitted labels (around the state's centre). The stability filter adds its ridge to
    /// these.
    ///
    /// # Panics
    /// If `k >= n_states()`.
    pub fn regime_variances(&self, k: usize) -> &[f64] {
        &self.regime_var[k * self.n_features..(k + 1) * self.n_features]
    }

    /// Fit metadata; `None` for a model built with [`SjmModel::from_parts`].
    pub fn fit_info(&self) -> Option<&SjmFitInfo> {
        self.fit.as_ref()
    }

    /// Maps each model feature to its column in a caller's row whose columns are named by
    /// `schema`: `bind(schema)[i]` is the column of model feature `i`.
    ///
    /// # Errors
    /// [`SjmError::UnknownFeature`] naming the first model feature absent from `schema`;
    /// [`SjmError::AmbiguousFeature`] when one appears twice.
    pub fn bind(&self, schema: &[&str]) -> Result<Vec<usize>, SjmError> {
        self.feature_names
            .iter()
            .map(|name| {
                let mut found = schema.iter().enumerate().filter(|(_, s)| **s == name);
                match (found.next(), found.next()) {
                    (Some((col, _)), None) => Ok(col),
                    (None, _) => Err(SjmError::UnknownFeature { name: name.clone() }),
                    (Some(_), Some(_)) => Err(SjmError::AmbiguousFeature { name: name.clone() }),
                }
            })
            .collect()
    }

    /// Offline decoding: the exact minimiser of the jump objective over the whole sequence
    /// (Viterbi, ties to the lowest state as in the reference). `rows` is row-major, raw
    /// (unscaled) values in model feature order.
    ///
    /// # Errors
    /// [`SjmError::Shape`] when `rows.len()` is not a multiple of `n_features()`;
    /// [`SjmError::NonFiniteRow`] for the first row with a NaN or infinity.
    pub fn predict(&self, rows: &[f64]) -> Result<Vec<usize>, SjmError> {
        let f = self.n_features;
        if !rows.len().is_multiple_of(f) {
            return Err(SjmError::Shape {
                what: "rows (a multiple of the feature count)".into(),
                expected: rows.len() / f * f,
                found: rows.len(),
            });
        }
        let n = rows.len() / f;
        if let Some(row) = rows
            .chunks_exact(f)
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(SjmError::NonFiniteRow { row });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let z = fit::scale_columns(rows, n, f, &self.mean, &self.std);
        // Beyond this a squared distance can overflow and poison the whole recursion.
        const LIMIT: f64 = 1e150;
        if let Some(pos) = z.iter().position(|v| v.is_nan() || v.abs() >= LIMIT) {
            return Err(SjmError::NonFiniteRow { row: pos % n });
        }
        let mut values = vec![0.0; n * self.n_states];
        let mut labels = vec![0u8; n];
        let present = [true; MAX_STATES];
        fit::e_step(
            &z,
            n,
            f,
            self.n_states,
            &self.centres,
            &present[..self.n_states],
            self.jump_penalty,
            &mut values,
            &mut labels,
        );
        Ok(labels.into_iter().map(usize::from).collect())
    }
}
