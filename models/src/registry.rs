//! A model registry: versioned model artifacts with manifests, validation before use, and an
//! atomically switched active version with one step of rollback.
//!
//! # Layout
//!
//! ```text
//! <registry>/
//!   <name>/                      one model line, e.g. `score`
//!     active.json                the active version and the one before it
//!     <version>/                 one immutable version, e.g. `v1`
//!       manifest.json            what the version is and how to check it
//!       <artifact>               the model: a file (XGBoost JSON/UBJSON, ONNX) or a
//!                                directory (a jump model's `model.json`)
//!       goldens.json             golden inputs and the outputs recorded for them
//! ```
//!
//! Names and versions are plain path components (ASCII letters, digits, `.`, `_`, `-`; not
//! starting with `.`).
//!
//! `manifest.json` ([`Manifest`]) carries `"format": "tickpipe.model-manifest"` and
//! `"version": 1`, the model's name, [`ModelKind`], version string, the artifact's path relative
//! to the version directory, the feature schema it was trained against (name and version) and
//! its feature names in model order, the SHA-256 of every other file in the version directory,
//! the creation time (RFC 3339), the training data range and metrics (free-form), the goldens
//! file name, the absolute tolerance and the latency budget in microseconds per golden row.
//!
//! `active.json` ([`ActiveRecord`]) names the active version and the previous one. It is only
//! ever replaced whole: written to a temporary file in the same directory, flushed to disk
//! (`fsync`), renamed over the old file, and the directory is synced; a reader sees the old
//! record or the new one, never a mix.
//!
//! # Goldens
//!
//! `goldens.json` ([`Goldens`]) holds `inputs`, rows in model feature order (`null` is a missing
//! value, NaN), and `outputs`, one row per input row:
//! - XGBoost: the model outputs (`n_outputs` values) of each row on its own;
//! - jump model: `[label, confidence]` of the online filter fed the rows as one stream from a
//!   fresh state (label 255 before the first valid row, confidence 0 for a refused row);
//! - ONNX LSTM: the forecast (`n_outputs` values) of each step, the rows being one stream from a
//!   zero state. LSTM inputs must be finite.
//!
//! # Validation rules
//!
//! [`Registry::validate`] checks a version in this order and stops at the first failure, which
//! names its [`Rule`]:
//! 1. [`Rule::Manifest`]: `manifest.json` parses, has the right format and version, every field
//!    is present and sane (names match the directories, relative paths stay inside the version
//!    directory, tolerance and budget are finite and non-negative, the artifact and goldens are
//!    listed among the files).
//! 2. [`Rule::Checksum`]: every file of the version directory (but the manifest) is listed and its
//!    SHA-256 matches; no listed file is missing.
//! 3. [`Rule::Schema`]: the manifest's schema name and version are the expected ones, every
//!    manifest feature is in the expected schema (once), and, after loading, the model's own
//!    feature names are the manifest's and bind to the schema.
//! 4. [`Rule::Load`]: the artifact loads with the crate's loader for its kind.
//! 5. [`Rule::Goldens`]: the goldens file parses, its shape fits the model, its recorded outputs
//!    are finite, and the model's outputs match them within the tolerance (labels exactly).
//! 6. [`Rule::NonFinite`]: the model's outputs on the golden inputs are finite (checked per row
//!    before the comparison; an LSTM step refused for a non-finite value lands here too).
//! 7. [`Rule::Latency`]: the mean time per golden row of a second, timed pass over the goldens
//!    is strictly below the budget (so a budget of 0 never passes).
//!
//! A validated version comes back loaded ([`Validated`]), ready to be swapped into an engine.
//! [`Registry::promote`] and [`Registry::rollback`] validate the target first and leave
//! `active.json` untouched when it fails.
//!
//! # Concurrency
//! Each write of `active.json` is atomic, but a promotion reads the record, validates, then
//! writes: two promotions of the same model racing each other (threads or processes) do not
//! corrupt the file, yet the later writer's `previous` may not name the earlier one's version.
//! There is no lock; run promotions of one model one at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::lstm::LstmModel;
use crate::sjm::SjmModel;
use crate::xgb::XgbModel;

/// `format` of a manifest.
pub const MANIFEST_FORMAT: &str = "tickpipe.model-manifest";
/// Manifest format version this crate reads and writes.
pub const MANIFEST_VERSION: u32 = 1;
/// `format` of a goldens file.
pub const GOLDENS_FORMAT: &str = "tickpipe.model-goldens";
/// Goldens format version this crate reads and writes.
pub const GOLDENS_VERSION: u32 = 1;
/// `format` of an `active.json`.
pub const ACTIVE_FORMAT: &str = "tickpipe.model-active";
/// Active-record format version this crate reads and writes.
pub const ACTIVE_VERSION: u32 = 1;
/// File name of a version's manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of a model line's active record.
pub const ACTIVE_FILE: &str = "active.json";
/// Default goldens file name written by [`register`].
pub const GOLDENS_FILE: &str = "goldens.json";

/// The validation rule a version failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The manifest is missing, unparsable or incomplete.
    Manifest,
    /// A file's SHA-256 differs from the manifest, or a file is missing or unlisted.
    Checksum,
    /// The feature schema (name, version or a feature) does not match.
    Schema,
    /// The artifact does not load.
    Load,
    /// The goldens are malformed or the outputs differ from them beyond the tolerance.
    Goldens,
    /// The model produced a non-finite output on a golden input.
    NonFinite,
    /// The mean time per golden row is not below the budget.
    Latency,
}

impl Rule {
    /// The rule's lower-case name, as printed in errors.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Manifest => "manifest",
            Rule::Checksum => "checksum",
            Rule::Schema => "schema",
            Rule::Load => "load",
            Rule::Goldens => "goldens",
            Rule::NonFinite => "non-finite",
            Rule::Latency => "latency",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Registry errors. Validation failures are [`RegistryError::Invalid`] and name their [`Rule`].
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A version failed a validation rule.
    #[error("{name} {version}: rule {rule} failed: {detail}")]
    Invalid {
        /// The rule that failed.
        rule: Rule,
        /// Model name.
        name: String,
        /// Model version.
        version: String,
        /// What exactly was wrong.
        detail: String,
    },
    /// The registry directory does not exist or is not a directory.
    #[error("no registry at {0}")]
    NoRegistry(PathBuf),
    /// No model of that name.
    #[error("no model named {0:?} in the registry")]
    UnknownModel(String),
    /// The model has no such version.
    #[error("model {name:?} has no version {version:?}")]
    UnknownVersion {
        /// Model name.
        name: String,
        /// The missing version.
        version: String,
    },
    /// A name or version that is not a plain path component.
    #[error("{what} {value:?} is not a valid name (letters, digits, '.', '_', '-')")]
    BadName {
        /// `"name"` or `"version"`.
        what: &'static str,
        /// The offending value.
        value: String,
    },
    /// The model has no active version yet.
    #[error("model {0:?} has no active version")]
    NoActive(String),
    /// Rollback asked for, but there is no previous version.
    #[error("model {0:?} has no previous version to roll back to")]
    NoPrevious(String),
    /// `active.json` is unreadable or malformed.
    #[error("active record {path}: {detail}")]
    Active {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// Registering a version failed before anything was written, or the version exists.
    #[error("register {name} {version}: {detail}")]
    Register {
        /// Model name.
        name: String,
        /// Model version.
        version: String,
        /// What was wrong.
        detail: String,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl RegistryError {
    /// The failed rule, for [`RegistryError::Invalid`].
    pub fn rule(&self) -> Option<Rule> {
        match self {
            RegistryError::Invalid { rule, .. } => Some(*rule),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The kind of model an artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModelKind {
    /// An XGBoost model file (JSON or UBJSON), [`XgbModel`].
    #[serde(rename = "xgboost")]
    Xgboost,
    /// A jump-model directory, [`SjmModel`].
    #[serde(rename = "sjm")]
    Sjm,
    /// A streaming LSTM step exported to ONNX, [`LstmModel`].
    #[serde(rename = "onnx-lstm")]
    OnnxLstm,
}

impl ModelKind {
    /// The manifest spelling: `xgboost`, `sjm` or `onnx-lstm`.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Xgboost => "xgboost",
            ModelKind::Sjm => "sjm",
            ModelKind::OnnxLstm => "onnx-lstm",
        }
    }

    /// Parses the manifest spelling.
    pub fn parse(s: &str) -> Option<ModelKind> {
        match s {
            "xgboost" => Some(ModelKind::Xgboost),
            "sjm" => Some(ModelKind::Sjm),
            "onnx-lstm" => Some(ModelKind::OnnxLstm),
            _ => None,
        }
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A feature schema reference: name and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRef {
    /// Schema name, e.g. `tickpipe.features` or `tickpipe.bars`.
    pub name: String,
    /// Schema version.
    pub version: u32,
}

/// The training data a version was fitted on (free-form descriptions).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRange {
    /// Where the training data starts (a date, timestamp or description).
    pub start: String,
    /// Where it ends.
    pub end: String,
}

/// One version's manifest (`manifest.json`). Every field is required.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Always [`MANIFEST_VERSION`].
    pub version: u32,
    /// Model name (the parent directory's name).
    pub name: String,
    /// Model kind.
    pub kind: ModelKind,
    /// Model version (the version directory's name).
    pub model_version: String,
    /// Artifact path relative to the version directory (a file, or a directory for `sjm`).
    pub artifact: String,
    /// The feature schema the model reads.
    pub schema: SchemaRef,
    /// The model's feature names, in model input order.
    pub features: Vec<String>,
    /// SHA-256 (lower-case hex) of every file in the version directory but the manifest, keyed
    /// by path relative to the version directory with `/` separators.
    pub files: BTreeMap<String, String>,
    /// Creation time, RFC 3339 (e.g. `2026-11-21T21:00:00Z`).
    pub created: String,
    /// The training data range.
    pub training: TrainingRange,
    /// Offline metrics (free-form names).
    pub metrics: BTreeMap<String, f64>,
    /// Goldens file name, relative to the version directory.
    pub goldens: String,
    /// Absolute tolerance of the golden comparison.
    pub tolerance: f64,
    /// Latency budget: the mean time per golden row must stay below this, in microseconds.
    pub latency_budget_us: f64,
}

/// A goldens file: inputs in model feature order and the outputs recorded for them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goldens {
    /// Always [`GOLDENS_FORMAT`].
    pub format: String,
    /// Always [`GOLDENS_VERSION`].
    pub version: u32,
    /// Column names of `inputs` (the model's features, in order).
    pub features: Vec<String>,
    /// Input rows; `None` (JSON `null`) is a missing value.
    pub inputs: Vec<Vec<Option<f64>>>,
    /// Expected outputs, one row per input row (see the module docs); `None` is NaN and
    /// always fails the [`Rule::Goldens`] check.
    pub outputs: Vec<Vec<Option<f64>>>,
}

/// The active record of a model line (`active.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActiveRecord {
    /// Always [`ACTIVE_FORMAT`].
    pub format: String,
    /// Always [`ACTIVE_VERSION`].
    pub version: u32,
    /// The active version.
    pub active: String,
    /// The version active before it, the rollback target.
    pub previous: Option<String>,
}

/// What a version is validated against: the caller's feature schema.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// Schema name, e.g. `tickpipe.features`.
    pub schema_name: &'a str,
    /// Schema version.
    pub schema_version: u32,
    /// The caller's column names, in row order.
    pub schema: &'a [&'a str],
}

/// A loaded model of any registered kind.
#[derive(Debug)]
pub enum LoadedModel {
    /// An XGBoost model.
    Xgboost(XgbModel),
    /// A jump model.
    Sjm(SjmModel),
    /// A streaming LSTM.
    Lstm(LstmModel),
}

impl LoadedModel {
    /// The model's kind.
    pub fn kind(&self) -> ModelKind {
        match self {
            LoadedModel::Xgboost(_) => ModelKind::Xgboost,
            LoadedModel::Sjm(_) => ModelKind::Sjm,
            LoadedModel::Lstm(_) => ModelKind::OnnxLstm,
        }
    }

    /// The model's feature names, in model input order.
    pub fn feature_names(&self) -> &[String] {
        match self {
            LoadedModel::Xgboost(m) => m.feature_names(),
            LoadedModel::Sjm(m) => m.feature_names(),
            LoadedModel::Lstm(m) => m.feature_names(),
        }
    }

    /// Outputs per golden row: XGBoost and LSTM outputs, or 2 (label, confidence) for a jump
    /// model.
    pub fn n_outputs(&self) -> usize {
        match self {
            LoadedModel::Xgboost(m) => m.n_outputs(),
            LoadedModel::Sjm(_) => 2,
            LoadedModel::Lstm(m) => m.n_outputs(),
        }
    }
}

/// Measurements of a successful validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationReport {
    /// Golden rows checked.
    pub rows: usize,
    /// Largest absolute difference from the recorded outputs.
    pub max_abs_diff: f64,
    /// Mean time per golden row of the timed pass, in microseconds.
    pub mean_us: f64,
}

/// A version that passed every rule, loaded and bound to the expected schema.
#[derive(Debug)]
pub struct Validated {
    /// Its manifest.
    pub manifest: Manifest,
    /// The loaded model.
    pub model: LoadedModel,
    /// `binding[i]` is the schema column of model feature `i`.
    pub binding: Vec<usize>,
    /// What validation measured.
    pub report: ValidationReport,
}

/// One model line as [`Registry::list`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelEntry {
    /// Model name.
    pub name: String,
    /// Version directories, sorted.
    pub versions: Vec<String>,
    /// The active version, if any.
    pub active: Option<String>,
    /// The previous active version, if any.
    pub previous: Option<String>,
}

/// One model line in detail, for [`Registry::show`].
#[derive(Debug)]
pub struct ModelDetails {
    /// Name, versions and active record.
    pub entry: ModelEntry,
    /// Each version's manifest, or why it could not be read.
    pub manifests: Vec<(String, Result<Manifest, RegistryError>)>,
}

/// A registry rooted at a directory.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

fn check_component(what: &'static str, value: &str) -> Result<(), RegistryError> {
    let ok = !value.is_empty()
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

/// True when `rel` is a non-empty relative path that stays inside its base directory.
fn is_inner_relative(rel: &str) -> bool {
    let p = Path::new(rel);
    !rel.is_empty()
        && !rel.contains('\\')
        && p.components().all(|c| matches!(c, Component::Normal(_)))
}

impl Registry {
    /// Opens the registry at `dir` (which must exist).
    ///
    /// # Errors
    /// [`RegistryError::NoRegistry`] when `dir` is not a directory.
    pub fn open(dir: &Path) -> Result<Registry, RegistryError> {
        if !dir.is_dir() {
            return Err(RegistryError::NoRegistry(dir.to_path_buf()));
        }
        Ok(Registry {
            root: dir.to_path_buf(),
        })
    }

    /// The registry's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one version.
    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.root.join(name).join(version)
    }

    fn model_dir(&self, name: &str) -> Result<PathBuf, RegistryError> {
        check_component("name", name)?;
        let dir = self.root.join(name);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(RegistryError::UnknownModel(name.to_string()))
        }
    }

    /// Every model line, sorted by name.
    ///
    /// # Errors
    /// [`RegistryError::Io`] on a directory read failure; [`RegistryError::Active`] for a
    /// malformed `active.json`.
    pub fn list(&self) -> Result<Vec<ModelEntry>, RegistryError> {
        let mut names = Vec::new();
        for e in fs::read_dir(&self.root).map_err(io_err(&self.root))? {
            let e = e.map_err(io_err(&self.root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && check_component("name", &name).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        names.iter().map(|n| self.entry(n)).collect()
    }

    /// One model line: its versions and active record.
    ///
    /// # Errors
    /// [`RegistryError::UnknownModel`], [`RegistryError::Io`], [`RegistryError::Active`].
    pub fn entry(&self, name: &str) -> Result<ModelEntry, RegistryError> {
        let dir = self.model_dir(name)?;
        let mut versions = Vec::new();
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let v = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && check_component("version", &v).is_ok() {
                versions.push(v);
            }
        }
        versions.sort();
        let active = self.active(name)?;
        Ok(ModelEntry {
            name: name.to_string(),
            versions,
            active: active.as_ref().map(|a| a.active.clone()),
            previous: active.and_then(|a| a.previous),
        })
    }

    /// A model line with every version's manifest.
    ///
    /// # Errors
    /// As [`entry`](Self::entry).
    pub fn show(&self, name: &str) -> Result<ModelDetails, RegistryError> {
        let entry = self.entry(name)?;
        let manifests = entry
            .versions
            .iter()
            .map(|v| (v.clone(), self.manifest(name, v)))
            .collect();
        Ok(ModelDetails { entry, manifests })
    }

    /// The active record of `name`, `None` before the first promotion.
    ///
    /// # Errors
    /// [`RegistryError::UnknownModel`]; [`RegistryError::Active`] when the file is unreadable or
    /// malformed.
    pub fn active(&self, name: &str) -> Result<Option<ActiveRecord>, RegistryError> {
        let path = self.model_dir(name)?.join(ACTIVE_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let bad = |detail: String| RegistryError::Active {
            path: path.clone(),
            detail,
        };
        let rec: ActiveRecord = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if rec.format != ACTIVE_FORMAT || rec.version != ACTIVE_VERSION {
            return Err(bad(format!(
                "format {:?} version {} (expected {ACTIVE_FORMAT:?} version {ACTIVE_VERSION})",
                rec.format, rec.version
            )));
        }
        check_component("version", &rec.active).map_err(|e| bad(e.to_string()))?;
        if let Some(p) = &rec.previous {
            check_component("version", p).map_err(|e| bad(e.to_string()))?;
        }
        Ok(Some(rec))
    }

    /// Reads and checks a version's manifest (rule 1 only).
    ///
    /// # Errors
    /// [`RegistryError::UnknownModel`], [`RegistryError::UnknownVersion`], or
    /// [`RegistryError::Invalid`] with [`Rule::Manifest`].
    pub fn manifest(&self, name: &str, version: &str) -> Result<Manifest, RegistryError> {
        let dir = self.model_dir(name)?;
        check_component("version", version)?;
        let vdir = dir.join(version);
        if !vdir.is_dir() {
            return Err(RegistryError::UnknownVersion {
                name: name.to_string(),
                version: version.to_string(),
            });
        }
        let fail = |detail: String| invalid(Rule::Manifest, name, version, detail);
        let path = vdir.join(MANIFEST_FILE);
        let bytes = fs::read(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
        check_manifest(&m, name, version).map_err(fail)?;
        Ok(m)
    }

    /// Runs every validation rule (module docs) on `name`/`version` and returns the loaded model.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] naming the first rule that failed; [`RegistryError::UnknownModel`]
    /// or [`RegistryError::UnknownVersion`].
    pub fn validate(
        &self,
        name: &str,
        version: &str,
        expected: &Expected<'_>,
    ) -> Result<Validated, RegistryError> {
        let manifest = self.manifest(name, version)?;
        let vdir = self.version_dir(name, version);
        let fail = |rule: Rule, detail: String| invalid(rule, name, version, detail);

        // 2. Checksums.
        check_checksums(&vdir, &manifest).map_err(|d| fail(Rule::Checksum, d))?;

        // 3. Schema, from the manifest.
        if manifest.schema.name != expected.schema_name
            || manifest.schema.version != expected.schema_version
        {
            return Err(fail(
                Rule::Schema,
                format!(
                    "model reads {} v{}, expected {} v{}",
                    manifest.schema.name,
                    manifest.schema.version,
                    expected.schema_name,
                    expected.schema_version
                ),
            ));
        }
        bind_names(&manifest.features, expected.schema).map_err(|d| fail(Rule::Schema, d))?;

        // 4. Load.
        let artifact = vdir.join(&manifest.artifact);
        let mut model = load_model(manifest.kind, &artifact).map_err(|d| fail(Rule::Load, d))?;

        // 3 (continued). The model's own names are the manifest's and bind.
        if model.feature_names() != manifest.features.as_slice() {
            return Err(fail(
                Rule::Schema,
                format!(
                    "model features {:?} differ from the manifest's {:?}",
                    model.feature_names(),
                    manifest.features
                ),
            ));
        }
        let binding = bind_names(model.feature_names(), expected.schema)
            .map_err(|d| fail(Rule::Schema, d))?;

        // 5, 6. Goldens and finiteness.
        let gpath = vdir.join(&manifest.goldens);
        let goldens = read_goldens(&gpath).map_err(|d| fail(Rule::Goldens, d))?;
        check_goldens_shape(&goldens, &model).map_err(|d| fail(Rule::Goldens, d))?;
        let inputs = goldens_inputs(&goldens);
        let outputs = run_goldens(&mut model, &inputs).map_err(|(r, d)| fail(r, d))?;
        let max_abs_diff =
            compare(&goldens, &outputs, &model, manifest.tolerance).map_err(|(r, d)| fail(r, d))?;

        // 7. Latency: a second, timed pass (the first warmed caches and the runtime).
        let rows = inputs.len();
        let t0 = Instant::now();
        run_goldens(&mut model, &inputs).map_err(|(r, d)| fail(r, d))?;
        let elapsed = t0.elapsed().as_secs_f64() * 1e6;
        let mean_us = if rows == 0 {
            0.0
        } else {
            elapsed / rows as f64
        };
        // The budget is finite (rule 1), so this is a plain comparison.
        if mean_us >= manifest.latency_budget_us {
            return Err(fail(
                Rule::Latency,
                format!(
                    "mean {mean_us:.3} µs per golden row, budget {} µs",
                    manifest.latency_budget_us
                ),
            ));
        }
        Ok(Validated {
            manifest,
            model,
            binding,
            report: ValidationReport {
                rows,
                max_abs_diff,
                mean_us,
            },
        })
    }

    /// Validates `version` and makes it active; the old active version becomes the rollback
    /// target. Promoting the active version again re-validates it and changes nothing.
    ///
    /// # Errors
    /// As [`validate`](Self::validate) (then `active.json` is unchanged), plus
    /// [`RegistryError::Active`] / [`RegistryError::Io`] for the record.
    pub fn promote(
        &self,
        name: &str,
        version: &str,
        expected: &Expected<'_>,
    ) -> Result<Validated, RegistryError> {
        let current = self.active(name)?;
        let validated = self.validate(name, version, expected)?;
        let (active, previous) = match current {
            Some(c) if c.active == version => (c.active, c.previous),
            Some(c) => (version.to_string(), Some(c.active)),
            None => (version.to_string(), None),
        };
        self.write_active(name, &active, previous.as_deref())?;
        Ok(validated)
    }

    /// Validates the previous version and makes it active again; the version rolled back from
    /// becomes the previous one (so a second rollback undoes the first).
    ///
    /// # Errors
    /// [`RegistryError::NoActive`], [`RegistryError::NoPrevious`], or as
    /// [`validate`](Self::validate) (then `active.json` is unchanged).
    pub fn rollback(
        &self,
        name: &str,
        expected: &Expected<'_>,
    ) -> Result<Validated, RegistryError> {
        let current = self
            .active(name)?
            .ok_or_else(|| RegistryError::NoActive(name.to_string()))?;
        let previous = current
            .previous
            .clone()
            .ok_or_else(|| RegistryError::NoPrevious(name.to_string()))?;
        let validated = self.validate(name, &previous, expected)?;
        self.write_active(name, &previous, Some(&current.active))?;
        Ok(validated)
    }

    /// Writes `active.json` atomically (temporary file, fsync, rename, directory sync).
    fn write_active(
        &self,
        name: &str,
        active: &str,
        previous: Option<&str>,
    ) -> Result<(), RegistryError> {
        let dir = self.model_dir(name)?;
        let rec = ActiveRecord {
            format: ACTIVE_FORMAT.to_string(),
            version: ACTIVE_VERSION,
            active: active.to_string(),
            previous: previous.map(str::to_string),
        };
        let mut text = serde_json::to_string_pretty(&rec).expect("an active record serialises");
        text.push('\n');
        write_atomic(&dir.join(ACTIVE_FILE), text.as_bytes())
    }
}

fn invalid(rule: Rule, name: &str, version: &str, detail: String) -> RegistryError {
    RegistryError::Invalid {
        rule,
        name: name.to_string(),
        version: version.to_string(),
        detail,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, `fsync`, rename
/// over `path`, then a sync of the directory (best effort where directories cannot be opened).
///
/// # Errors
/// [`RegistryError::Io`] naming the file that failed; the temporary file is removed on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.tmp{}.{seq}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn check_manifest(m: &Manifest, name: &str, version: &str) -> Result<(), String> {
    if m.format != MANIFEST_FORMAT || m.version != MANIFEST_VERSION {
        return Err(format!(
            "format {:?} version {} (expected {MANIFEST_FORMAT:?} version {MANIFEST_VERSION})",
            m.format, m.version
        ));
    }
    if m.name != name {
        return Err(format!("name {:?} in the directory {name:?}", m.name));
    }
    if m.model_version != version {
        return Err(format!(
            "model_version {:?} in the directory {version:?}",
            m.model_version
        ));
    }
    for (what, p) in [("artifact", &m.artifact), ("goldens", &m.goldens)] {
        if !is_inner_relative(p) {
            return Err(format!(
                "{what} {p:?} is not a relative path inside the version"
            ));
        }
    }
    if m.schema.name.is_empty() {
        return Err("empty schema name".into());
    }
    if m.features.is_empty() || m.features.iter().any(String::is_empty) {
        return Err("features must be non-empty names".into());
    }
    if m.files.is_empty() {
        return Err("no files listed".into());
    }
    for (p, h) in &m.files {
        if !is_inner_relative(p) || p == MANIFEST_FILE {
            return Err(format!(
                "file {p:?} is not a relative path inside the version"
            ));
        }
        if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("sha256 of {p:?} is not 64 hex digits"));
        }
    }
    let artifact_listed = m.files.contains_key(&m.artifact)
        || m.files
            .keys()
            .any(|k| k.starts_with(&format!("{}/", m.artifact)));
    if !artifact_listed {
        return Err(format!("artifact {:?} is not among the files", m.artifact));
    }
    if !m.files.contains_key(&m.goldens) {
        return Err(format!("goldens {:?} is not among the files", m.goldens));
    }
    if !looks_rfc3339(&m.created) {
        return Err(format!("created {:?} is not an RFC 3339 time", m.created));
    }
    if !(m.tolerance.is_finite() && m.tolerance >= 0.0) {
        return Err(format!("tolerance {} must be finite and >= 0", m.tolerance));
    }
    if !(m.latency_budget_us.is_finite() && m.latency_budget_us >= 0.0) {
        return Err(format!(
            "latency_budget_us {} must be finite and >= 0",
            m.latency_budget_us
        ));
    }
    if let Some((k, v)) = m.metrics.iter().find(|(_, v)| !v.is_finite()) {
        return Err(format!("metric {k:?} is {v}"));
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS` followed by optional fraction and `Z` or `±HH:MM`.
fn looks_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let head = digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && matches!(b[10], b'T' | b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    let rest = &b[i..];
    rest == b"Z"
        || rest == b"z"
        || (rest.len() == 6
            && matches!(rest[0], b'+' | b'-')
            && rest[1..3].iter().all(u8::is_ascii_digit)
            && rest[3] == b':'
            && rest[4..6].iter().all(u8::is_ascii_digit))
}

/// The current time as RFC 3339 UTC with second resolution, e.g. `2026-11-21T21:00:00Z`.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339_from_unix(secs)
}

/// Formats Unix seconds as RFC 3339 UTC (proleptic Gregorian calendar).
pub fn rfc3339_from_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Every file under `dir` (recursively) but the top-level manifest, as `/`-separated relative
/// paths, sorted.
fn version_files(dir: &Path) -> Result<Vec<String>, String> {
    fn walk(base: &Path, rel: &str, out: &mut Vec<String>) -> Result<(), String> {
        let dir = if rel.is_empty() {
            base.to_path_buf()
        } else {
            base.join(rel)
        };
        let rd = fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for e in rd {
            let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
            let n = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            let ft = e.file_type().map_err(|e| format!("{r}: {e}"))?;
            if ft.is_dir() {
                walk(base, &r, out)?;
            } else if r != MANIFEST_FILE {
                out.push(r);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort();
    Ok(out)
}

fn check_checksums(vdir: &Path, m: &Manifest) -> Result<(), String> {
    let present = version_files(vdir)?;
    if let Some(extra) = present.iter().find(|p| !m.files.contains_key(*p)) {
        return Err(format!("file {extra:?} is not listed in the manifest"));
    }
    for (p, want) in &m.files {
        let path = vdir.join(p);
        let bytes = fs::read(&path).map_err(|e| format!("listed file {p:?}: {e}"))?;
        let got = sha256_hex(&bytes);
        if !got.eq_ignore_ascii_case(want) {
            return Err(format!("{p:?} has sha256 {got}, manifest says {want}"));
        }
    }
    Ok(())
}

/// Maps each name to its unique column of `schema`.
fn bind_names(names: &[String], schema: &[&str]) -> Result<Vec<usize>, String> {
    names
        .iter()
        .map(|n| {
            let mut hits = schema.iter().enumerate().filter(|(_, s)| **s == n.as_str());
            match (hits.next(), hits.next()) {
                (Some((c, _)), None) => Ok(c),
                (None, _) => Err(format!("feature {n:?} is not in the schema")),
                (Some(_), Some(_)) => Err(format!("feature {n:?} appears twice in the schema")),
            }
        })
        .collect()
}

fn load_model(kind: ModelKind, artifact: &Path) -> Result<LoadedModel, String> {
    match kind {
        ModelKind::Xgboost => XgbModel::load(artifact)
            .map(LoadedModel::Xgboost)
            .map_err(|e| e.to_string()),
        ModelKind::Sjm => SjmModel::load(artifact)
            .map(LoadedModel::Sjm)
            .map_err(|e| e.to_string()),
        ModelKind::OnnxLstm => LstmModel::load(artifact)
            .map(LoadedModel::Lstm)
            .map_err(|e| e.to_string()),
    }
}

fn read_goldens(path: &Path) -> Result<Goldens, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let g: Goldens = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if g.format != GOLDENS_FORMAT || g.version != GOLDENS_VERSION {
        return Err(format!(
            "format {:?} version {} (expected {GOLDENS_FORMAT:?} version {GOLDENS_VERSION})",
            g.format, g.version
        ));
    }
    Ok(g)
}

fn check_goldens_shape(g: &Goldens, model: &LoadedModel) -> Result<(), String> {
    if g.features != model.feature_names() {
        return Err(format!(
            "golden columns {:?} are not the model's features {:?}",
            g.features,
            model.feature_names()
        ));
    }
    if g.inputs.is_empty() {
        return Err("no golden rows".into());
    }
    if g.inputs.len() != g.outputs.len() {
        return Err(format!(
            "{} input rows but {} output rows",
            g.inputs.len(),
            g.outputs.len()
        ));
    }
    let (nf, no) = (g.features.len(), model.n_outputs());
    let finite_inputs = matches!(model, LoadedModel::Lstm(_));
    for (r, (i, o)) in g.inputs.iter().zip(&g.outputs).enumerate() {
        if i.len() != nf || o.len() != no {
            return Err(format!(
                "row {r}: {} inputs and {} outputs, expected {nf} and {no}",
                i.len(),
                o.len()
            ));
        }
        if let Some(c) = o.iter().position(|v| !v.is_some_and(f64::is_finite)) {
            return Err(format!("row {r}: recorded output {c} is not finite"));
        }
        if finite_inputs && let Some(c) = i.iter().position(|v| !v.is_some_and(f64::is_finite)) {
            return Err(format!(
                "row {r}: input {c} is missing or not finite (LSTM inputs must be finite)"
            ));
        }
    }
    Ok(())
}

fn goldens_inputs(g: &Goldens) -> Vec<Vec<f64>> {
    g.inputs
        .iter()
        .map(|r| r.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
        .collect()
}

/// Runs the model over the rows (one stream for stateful kinds) and returns the outputs per row.
/// A non-finite output is [`Rule::NonFinite`].
fn run_goldens(
    model: &mut LoadedModel,
    rows: &[Vec<f64>],
) -> Result<Vec<Vec<f64>>, (Rule, String)> {
    let mut out = Vec::with_capacity(rows.len());
    match model {
        LoadedModel::Xgboost(m) => {
            let cols: Vec<usize> = (0..m.n_features()).collect();
            let mut y = vec![0.0f32; m.n_outputs()];
            for row in rows {
                m.predict_row(row, &cols, &mut y);
                out.push(y.iter().map(|&v| f64::from(v)).collect());
            }
        }
        LoadedModel::Sjm(m) => {
            let mut st = m.new_online();
            for row in rows {
                let s = m.step(&mut st, row);
                out.push(vec![f64::from(s.label), s.confidence]);
            }
        }
        LoadedModel::Lstm(m) => {
            let mut st = m.new_state();
            let mut x = vec![0.0f32; m.n_features()];
            let mut y = vec![0.0f32; m.n_outputs()];
            for (r, row) in rows.iter().enumerate() {
                for (d, &v) in x.iter_mut().zip(row) {
                    *d = v as f32;
                }
                m.step(&mut st, &x, &mut y).map_err(|e| {
                    use crate::lstm::LstmError as E;
                    let rule = match e {
                        E::NonFiniteInput { .. } | E::NonFiniteOutput { .. } => Rule::NonFinite,
                        _ => Rule::Goldens,
                    };
                    (rule, format!("golden step {r}: {e}"))
                })?;
                out.push(y.iter().map(|&v| f64::from(v)).collect());
            }
        }
    }
    for (r, o) in out.iter().enumerate() {
        if let Some(c) = o.iter().position(|v| !v.is_finite()) {
            return Err((
                Rule::NonFinite,
                format!("golden row {r}: output {c} is {}", o[c]),
            ));
        }
    }
    Ok(out)
}

/// Compares outputs with the recorded ones; returns the largest absolute difference.
fn compare(
    g: &Goldens,
    got: &[Vec<f64>],
    model: &LoadedModel,
    tol: f64,
) -> Result<f64, (Rule, String)> {
    let mut max = 0.0f64;
    for (r, (want, have)) in g.outputs.iter().zip(got).enumerate() {
        for (c, (w, h)) in want.iter().zip(have).enumerate() {
            let w = w.unwrap_or(f64::NAN);
            let exact = matches!(model, LoadedModel::Sjm(_)) && c == 0;
            let d = (w - h).abs();
            let ok = if exact { w == *h } else { d <= tol };
            if !ok {
                return Err((
                    Rule::Goldens,
                    format!(
                        "golden row {r} output {c}: got {h}, recorded {w} (|diff| {d:e} > tolerance {tol:e})"
                    ),
                ));
            }
            max = max.max(d);
        }
    }
    Ok(max)
}

/// What [`register`] needs to add a version.
#[derive(Debug, Clone)]
pub struct RegisterSpec<'a> {
    /// Model name.
    pub name: &'a str,
    /// Version to create (must not exist).
    pub version: &'a str,
    /// Model kind.
    pub kind: ModelKind,
    /// The artifact to copy in (a file, or a jump-model directory).
    pub artifact: &'a Path,
    /// Feature schema name and version the model reads.
    pub schema: SchemaRef,
    /// Golden input rows with their column names (any order; the model's features are picked
    /// by name, a missing cell is NaN).
    pub golden_columns: &'a [String],
    /// The golden rows, as named by `golden_columns`.
    pub golden_rows: &'a [Vec<f64>],
    /// Training data range.
    pub training: TrainingRange,
    /// Offline metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Creation time, RFC 3339 ([`now_rfc3339`] for now).
    pub created: String,
    /// Absolute tolerance of later golden comparisons.
    pub tolerance: f64,
    /// Latency budget, µs per golden row.
    pub latency_budget_us: f64,
}

/// Registers a new version: copies the artifact into `<registry>/<name>/<version>/`, runs the
/// model over the golden rows and records its outputs in `goldens.json`, computes the SHA-256 of
/// every file and writes `manifest.json` (atomically, last). Does not promote.
///
/// # Errors
/// [`RegistryError::Register`] when the version exists, the artifact does not load, a golden
/// column is missing or the outputs are not finite; [`RegistryError::BadName`];
/// [`RegistryError::Io`]. On error the partly written version directory is removed.
pub fn register(root: &Path, spec: &RegisterSpec<'_>) -> Result<Manifest, RegistryError> {
    check_component("name", spec.name)?;
    check_component("version", spec.version)?;
    let fail = |detail: String| RegistryError::Register {
        name: spec.name.to_string(),
        version: spec.version.to_string(),
        detail,
    };
    let vdir = root.join(spec.name).join(spec.version);
    if vdir.exists() {
        return Err(fail(format!("{} already exists", vdir.display())));
    }
    let artifact_name = spec
        .artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| {
            check_component("artifact", n).is_ok() && n != MANIFEST_FILE && n != GOLDENS_FILE
        })
        .ok_or_else(|| {
            fail(format!(
                "artifact {} has no usable file name",
                spec.artifact.display()
            ))
        })?;
    // Load from the source first, so nothing is written for an artifact that does not load.
    let mut model = load_model(spec.kind, spec.artifact).map_err(fail)?;
    let features = model.feature_names().to_vec();
    let cols = bind_names(
        &features,
        &spec
            .golden_columns
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .map_err(|d| fail(format!("golden inputs: {d}")))?;
    let inputs: Vec<Vec<f64>> = spec
        .golden_rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|&c| r.get(c).copied().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    if inputs.is_empty() {
        return Err(fail("no golden rows".into()));
    }
    let outputs = run_goldens(&mut model, &inputs).map_err(|(_, d)| fail(d))?;
    let goldens = Goldens {
        format: GOLDENS_FORMAT.to_string(),
        version: GOLDENS_VERSION,
        features: features.clone(),
        inputs: inputs
            .iter()
            .map(|r| r.iter().map(|v| v.is_finite().then_some(*v)).collect())
            .collect(),
        outputs: outputs
            .iter()
            .map(|r| r.iter().map(|v| Some(*v)).collect())
            .collect(),
    };

    let result = (|| {
        fs::create_dir_all(&vdir).map_err(io_err(&vdir))?;
        let dst = vdir.join(&artifact_name);
        copy_tree(spec.artifact, &dst)?;
        let mut g = serde_json::to_string(&goldens).expect("goldens serialise");
        g.push('\n');
        let gpath = vdir.join(GOLDENS_FILE);
        fs::write(&gpath, g).map_err(io_err(&gpath))?;
        let mut files = BTreeMap::new();
        for p in version_files(&vdir).map_err(fail)? {
            let path = vdir.join(&p);
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            files.insert(p, sha256_hex(&bytes));
        }
        let manifest = Manifest {
            format: MANIFEST_FORMAT.to_string(),
            version: MANIFEST_VERSION,
            name: spec.name.to_string(),
            kind: spec.kind,
            model_version: spec.version.to_string(),
            artifact: artifact_name.clone(),
            schema: spec.schema.clone(),
            features,
            files,
            created: spec.created.clone(),
            training: spec.training.clone(),
            metrics: spec.metrics.clone(),
            goldens: GOLDENS_FILE.to_string(),
            tolerance: spec.tolerance,
            latency_budget_us: spec.latency_budget_us,
        };
        check_manifest(&manifest, spec.name, spec.version).map_err(fail)?;
        let mut text = serde_json::to_string_pretty(&manifest).expect("a manifest serialises");
        text.push('\n');
        write_atomic(&vdir.join(MANIFEST_FILE), text.as_bytes())?;
        Ok(manifest)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&vdir);
    }
    result
}

fn copy_tree(src: &Path, dst: &Path) -> Result<(), RegistryError> {
    if src.is_dir() {
        fs::create_dir_all(dst).map_err(io_err(dst))?;
        for e in fs::read_dir(src).map_err(io_err(src))? {
            let e = e.map_err(io_err(src))?;
            copy_tree(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(())
    } else {
        fs::copy(src, dst).map(|_| ()).map_err(io_err(src))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formatting_and_check() {
        assert_eq!(rfc3339_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_from_unix(1_700_000_000), "2023-11-14T22:13:20Z");
        assert!(looks_rfc3339("2026-11-21T21:00:00Z"));
        assert!(looks_rfc3339("2026-11-21T21:00:00.5+01:00"));
        assert!(!looks_rfc3339("2026-11-21 21:00"));
        assert!(!looks_rfc3339("2026-11-21T21:00:00"));
        assert!(looks_rfc3339(&now_rfc3339()));
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn names_and_relative_paths() {
        assert!(check_component("name", "score").is_ok());
        assert!(check_component("name", "v1.2-rc_1").is_ok());
        for bad in ["", ".", "..", ".hidden", "a/b", "a b"] {
            assert!(check_component("name", bad).is_err(), "{bad:?}");
        }
        assert!(is_inner_relative("sjm/model.json"));
        for bad in ["", "/etc/passwd", "../x", "a/../b", "./a"] {
            assert!(!is_inner_relative(bad), "{bad:?}");
        }
    }
}
