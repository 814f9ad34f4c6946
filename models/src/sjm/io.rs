//! The model directory: `model.json`, versioned, validated on load.
//!
//! ```json
//! {
//!   "format": "tickpipe.sjm",
//!   "version": 1,
//!   "n_states": 3,
//!   "n_features": 2,
//!   "jump_penalty": 25.0,
//!   "feature_names": ["rv_60s", "log_return_60s"],
//!   "scaler": { "mean": [0.001, 0.0], "std": [0.0004, 0.0007] },
//!   "centres": [[-0.4, 0.1], [1.2, -0.3], [3.0, 0.2]],
//!   "regime_variances": [[0.2, 0.9], [0.5, 1.1], [2.0, 3.0]],
//!   "fit": { "objective": 1234.5, "iterations": 7, "best_init": 2, "n_init": 10,
//!            "init": "k-means++", "seed": 0, "max_iter": 1000, "tol": 1e-8,
//!            "n_rows": 5000, "n_skipped": 0, "state_frequencies": [3000, 1500, 500] }
//! }
//! ```
//!
//! `centres` and `regime_variances` are in z-scored space, one row per state in state order.
//! `fit` is `null` for a model built from its parameters. NaN and infinities cannot be written
//! in JSON; a `null` where a number belongs is reported as a non-finite parameter.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{
    FORMAT, FORMAT_VERSION, MAX_FEATURES, MAX_STATES, MODEL_FILE, SjmError, SjmFitInfo, SjmModel,
    SjmParts,
};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScalerFile {
    mean: Vec<Option<f64>>,
    std: Vec<Option<f64>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    format: String,
    version: u32,
    n_states: usize,
    n_features: usize,
    jump_penalty: Option<f64>,
    feature_names: Vec<String>,
    scaler: ScalerFile,
    centres: Vec<Vec<Option<f64>>>,
    regime_variances: Vec<Vec<Option<f64>>>,
    fit: Option<SjmFitInfo>,
}

fn finite(field: &str, v: &[Option<f64>]) -> Result<Vec<f64>, SjmError> {
    v.iter()
        .enumerate()
        .map(|(index, x)| match x {
            Some(x) if x.is_finite() => Ok(*x),
            _ => Err(SjmError::NonFinite {
                field: field.to_string(),
                index,
            }),
        })
        .collect()
}

fn matrix(field: &str, m: &[Vec<Option<f64>>], k: usize, f: usize) -> Result<Vec<f64>, SjmError> {
    if m.len() != k {
        return Err(SjmError::Shape {
            what: format!("{field} (rows = n_states)"),
            expected: k,
            found: m.len(),
        });
    }
    let mut out = Vec::with_capacity(k * f);
    for (s, row) in m.iter().enumerate() {
        if row.len() != f {
            return Err(SjmError::Shape {
                what: format!("{field}[{s}] (n_features values)"),
                expected: f,
                found: row.len(),
            });
        }
        out.extend(finite(&format!("{field}[{s}]"), row)?);
    }
    Ok(out)
}

impl SjmModel {
    /// Writes `dir/model.json`, creating `dir` if needed. The file is written next to its final
    /// name and renamed into place, so a reader never sees half a model.
    ///
    /// # Errors
    /// [`SjmError::Io`] when the directory or file cannot be written.
    pub fn save(&self, dir: &Path) -> Result<(), SjmError> {
        let path = dir.join(MODEL_FILE);
        let io = |source| SjmError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let f = self.n_features;
        let rows = |v: &[f64]| -> Vec<Vec<Option<f64>>> {
            v.chunks_exact(f)
                .map(|r| r.iter().copied().map(Some).collect())
                .collect()
        };
        let file = ModelFile {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            n_states: self.n_states,
            n_features: f,
            jump_penalty: Some(self.jump_penalty),
            feature_names: self.feature_names.clone(),
            scaler: ScalerFile {
                mean: self.mean.iter().copied().map(Some).collect(),
                std: self.std.iter().copied().map(Some).collect(),
            },
            centres: rows(&self.centres),
            regime_variances: rows(&self.regime_var),
            fit: self.fit.clone(),
        };
        let mut text = serde_json::to_string_pretty(&file).map_err(|e| SjmError::Io {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push('\n');
        let tmp = dir.join(format!("{MODEL_FILE}.tmp"));
        fs::write(&tmp, text).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }

    /// Reads and validates `dir/model.json`.
    ///
    /// # Errors
    /// [`SjmError::MissingFile`]; [`SjmError::Io`]; [`SjmError::Json`] for corrupt or truncated
    /// JSON; [`SjmError::WrongFormat`] / [`SjmError::UnsupportedVersion`] (checked before
    /// anything else in the file); [`SjmError::Schema`] for missing, unknown or mistyped fields;
    /// [`SjmError::StateCount`] / [`SjmError::FeatureCount`] beyond the caps;
    /// [`SjmError::Shape`] when an array does not match `n_states` / `n_features`;
    /// [`SjmError::NonFinite`], [`SjmError::BadStd`], [`SjmError::BadVariance`],
    /// [`SjmError::BadPenalty`], [`SjmError::FeatureName`] for bad parameters.
    pub fn load(dir: &Path) -> Result<SjmModel, SjmError> {
        let path = dir.join(MODEL_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SjmError::MissingFile { path });
            }
            Err(source) => return Err(SjmError::Io { path, source }),
        };
        let value: serde_json::Value = match serde_json::from_slice(&text) {
            Ok(v) => v,
            Err(source) => return Err(SjmError::Json { path, source }),
        };
        let format = value.get("format").and_then(|v| v.as_str()).unwrap_or("");
        if format != FORMAT {
            return Err(SjmError::WrongFormat {
                path,
                found: format.to_string(),
            });
        }
        let version = value.get("version").and_then(|v| v.as_i64()).unwrap_or(-1);
        if version != i64::from(FORMAT_VERSION) {
            return Err(SjmError::UnsupportedVersion {
                path,
                found: version,
            });
        }
        let file: ModelFile = match serde_json::from_value(value) {
            Ok(f) => f,
            Err(source) => return Err(SjmError::Schema { path, source }),
        };
        let (k, f) = (file.n_states, file.n_features);
        if !(2..=MAX_STATES).contains(&k) {
            return Err(SjmError::StateCount {
                n: k,
                max: MAX_STATES,
            });
        }
        if !(1..=MAX_FEATURES).contains(&f) {
            return Err(SjmError::FeatureCount {
                n: f,
                max: MAX_FEATURES,
            });
        }
        if file.feature_names.len() != f {
            return Err(SjmError::Shape {
                what: "feature_names (n_features names)".into(),
                expected: f,
                found: file.feature_names.len(),
            });
        }
        for (what, v) in [
            ("scaler.mean", &file.scaler.mean),
            ("scaler.std", &file.scaler.std),
        ] {
            if v.len() != f {
                return Err(SjmError::Shape {
                    what: what.into(),
                    expected: f,
                    found: v.len(),
                });
            }
        }
        let jump_penalty = finite("jump_penalty", &[file.jump_penalty])?[0];
        let parts = SjmParts {
            feature_names: file.feature_names,
            jump_penalty,
            scaler_mean: finite("scaler.mean", &file.scaler.mean)?,
            scaler_std: finite("scaler.std", &file.scaler.std)?,
            centres: matrix("centres", &file.centres, k, f)?,
            regime_variances: matrix("regime_variances", &file.regime_variances, k, f)?,
        };
        if let Some(info) = &file.fit {
            if info.state_frequencies.len() != k {
                return Err(SjmError::Shape {
                    what: "fit.state_frequencies (n_states counts)".into(),
                    expected: k,
                    found: info.state_frequencies.len(),
                });
            }
            if !info.objective.is_finite() {
                return Err(SjmError::NonFinite {
                    field: "fit.objective".into(),
                    index: 0,
                });
            }
        }
        SjmModel::from_parts_with_info(parts, file.fit)
    }
}
