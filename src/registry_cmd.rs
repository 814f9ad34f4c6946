//! `tickpipe models list|show|validate|promote|rollback|register`: the model registry
//! ([`tickpipe_models::registry`]) from the command line.
//!
//! Versions are validated against the pipeline's schemas: jump models and XGBoost models against
//! the feature vector ([`crate::pipeline::inference::schema_names`], `tickpipe.features` at
//! [`crate::pipeline::features::SCHEMA_VERSION`]), LSTMs against the bar inputs
//! ([`crate::pipeline::forecast::BAR_SCHEMA`], `tickpipe.bars` v1). A failed rule is an error whose
//! one-line message names the rule.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tickpipe_models::registry::{
    self, Expected, ModelKind, RegisterSpec, Registry, SchemaRef, TrainingRange, Validated,
};

/// Default registry directory, relative to the working directory.
pub const DEFAULT_REGISTRY: &str = "models/registry";
/// Schema name of the pipeline's feature vector.
pub const FEATURES_SCHEMA: &str = "tickpipe.features";
/// Schema name of the LSTM's per-bar inputs.
pub const BARS_SCHEMA: &str = "tickpipe.bars";
/// Version of the per-bar input schema.
pub const BARS_SCHEMA_VERSION: u32 = 1;

/// The schema a model of `kind` is validated against: name, version and column names.
pub fn schema_for(kind: ModelKind) -> (&'static str, u32, Vec<&'static str>) {
    match kind {
        ModelKind::Xgboost | ModelKind::Sjm => (
            FEATURES_SCHEMA,
            crate::pipeline::features::SCHEMA_VERSION,
            crate::pipeline::inference::schema_names(),
        ),
        ModelKind::OnnxLstm => (
            BARS_SCHEMA,
            BARS_SCHEMA_VERSION,
            crate::pipeline::forecast::BAR_SCHEMA.to_vec(),
        ),
    }
}

/// The registry directory: `dir` or [`DEFAULT_REGISTRY`].
pub fn registry_dir(dir: Option<&Path>) -> PathBuf {
    dir.map_or_else(|| PathBuf::from(DEFAULT_REGISTRY), Path::to_path_buf)
}

/// Runs `f` with the [`Expected`] schema for the kind in `name`/`version`'s manifest.
pub fn with_expected<T>(
    reg: &Registry,
    name: &str,
    version: &str,
    f: impl FnOnce(&Expected<'_>) -> Result<T, registry::RegistryError>,
) -> Result<T> {
    let kind = reg.manifest(name, version)?.kind;
    let (schema_name, schema_version, names) = schema_for(kind);
    let expected = Expected {
        schema_name,
        schema_version,
        schema: &names,
    };
    Ok(f(&expected)?)
}

fn summary(v: &Validated) -> String {
    format!(
        "{} {} ({}): {} golden rows, max |diff| {:e} (tolerance {:e}), {:.2} µs/row (budget {} µs)",
        v.manifest.name,
        v.manifest.model_version,
        v.manifest.kind,
        v.report.rows,
        v.report.max_abs_diff,
        v.manifest.tolerance,
        v.report.mean_us,
        v.manifest.latency_budget_us
    )
}

/// `models list`: one line per model: name, active version, previous and all versions.
///
/// # Errors
/// A missing registry or a malformed `active.json`.
pub fn list(dir: &Path) -> Result<String> {
    let reg = Registry::open(dir)?;
    let mut s = String::new();
    for e in reg.list()? {
        writeln!(
            s,
            "{}  active={}  previous={}  versions={}",
            e.name,
            e.active.as_deref().unwrap_or("-"),
            e.previous.as_deref().unwrap_or("-"),
            e.versions.join(",")
        )?;
    }
    Ok(s)
}

/// `models show NAME`: the active record and each version's manifest summary.
///
/// # Errors
/// A missing registry or model, or a malformed `active.json`.
pub fn show(dir: &Path, name: &str) -> Result<String> {
    let reg = Registry::open(dir)?;
    let d = reg.show(name)?;
    let mut s = String::new();
    writeln!(
        s,
        "{}: active {}, previous {}",
        d.entry.name,
        d.entry.active.as_deref().unwrap_or("-"),
        d.entry.previous.as_deref().unwrap_or("-")
    )?;
    for (v, m) in &d.manifests {
        match m {
            Ok(m) => {
                writeln!(
                    s,
                    "  {v}: {} artifact {} schema {} v{} features {} created {} training {}..{} \
                     tolerance {:e} budget {} µs/row",
                    m.kind,
                    m.artifact,
                    m.schema.name,
                    m.schema.version,
                    m.features.len(),
                    m.created,
                    m.training.start,
                    m.training.end,
                    m.tolerance,
                    m.latency_budget_us
                )?;
                for (k, x) in &m.metrics {
                    writeln!(s, "      {k} = {x}")?;
                }
            }
            Err(e) => writeln!(s, "  {v}: {e}")?,
        }
    }
    Ok(s)
}

/// `models validate NAME [VERSION]` (default: the active version).
///
/// # Errors
/// The failed rule, or no such model/version, or no active version when none is given.
pub fn validate(dir: &Path, name: &str, version: Option<&str>) -> Result<String> {
    let reg = Registry::open(dir)?;
    let version = match version {
        Some(v) => v.to_string(),
        None => {
            reg.active(name)?
                .ok_or_else(|| registry::RegistryError::NoActive(name.to_string()))?
                .active
        }
    };
    let v = with_expected(&reg, name, &version, |e| reg.validate(name, &version, e))?;
    Ok(format!("valid: {}", summary(&v)))
}

/// `models promote NAME VERSION`.
///
/// # Errors
/// The failed rule (the active version is then unchanged), or no such model/version.
pub fn promote(dir: &Path, name: &str, version: &str) -> Result<String> {
    let reg = Registry::open(dir)?;
    let v = with_expected(&reg, name, version, |e| reg.promote(name, version, e))?;
    Ok(format!("promoted: {}", summary(&v)))
}

/// `models rollback NAME`.
///
/// # Errors
/// No previous version, or the previous version fails a rule (the active version is then
/// unchanged).
pub fn rollback(dir: &Path, name: &str) -> Result<String> {
    let reg = Registry::open(dir)?;
    let previous = reg
        .active(name)?
        .ok_or_else(|| registry::RegistryError::NoActive(name.to_string()))?
        .previous
        .ok_or_else(|| registry::RegistryError::NoPrevious(name.to_string()))?;
    let v = with_expected(&reg, name, &previous, |e| reg.rollback(name, e))?;
    Ok(format!("rolled back to: {}", summary(&v)))
}

/// Options of `models register`.
#[derive(Debug, Clone)]
pub struct RegisterOptions {
    /// Registry directory (created if missing).
    pub registry: PathBuf,
    /// Model name.
    pub name: String,
    /// New version.
    pub version: String,
    /// Kind: `xgboost`, `sjm` or `onnx-lstm`.
    pub kind: String,
    /// Artifact file or jump-model directory.
    pub artifact: PathBuf,
    /// CSV of golden input rows (header = column names, empty cell = missing).
    pub goldens_input: PathBuf,
    /// Training data start (free-form).
    pub train_start: String,
    /// Training data end (free-form).
    pub train_end: String,
    /// Metrics as `name=value`.
    pub metrics: Vec<String>,
    /// Absolute golden tolerance.
    pub tolerance: f64,
    /// Latency budget, µs per golden row.
    pub latency_budget_us: f64,
}

/// `models register`: adds a version (not promoted) and returns a one-line summary.
///
/// # Errors
/// An unknown kind, a bad metric, an unreadable CSV, or the registry's refusal.
pub fn register(o: &RegisterOptions) -> Result<String> {
    let kind = ModelKind::parse(&o.kind)
        .with_context(|| format!("unknown kind {:?} (xgboost, sjm or onnx-lstm)", o.kind))?;
    let mut metrics = BTreeMap::new();
    for m in &o.metrics {
        let (k, v) = m
            .split_once('=')
            .with_context(|| format!("metric {m:?} is not name=value"))?;
        let x: f64 = v
            .trim()
            .parse()
            .with_context(|| format!("metric {m:?}: {v:?} is not a number"))?;
        metrics.insert(k.trim().to_string(), x);
    }
    let table = crate::models_cmd::read_table(&o.goldens_input)?;
    let rows: Vec<Vec<f64>> = (0..table.rows()).map(|i| table.row(i).to_vec()).collect();
    let (schema_name, schema_version, _) = schema_for(kind);
    std::fs::create_dir_all(&o.registry)
        .with_context(|| format!("cannot create {}", o.registry.display()))?;
    let m = registry::register(
        &o.registry,
        &RegisterSpec {
            name: &o.name,
            version: &o.version,
            kind,
            artifact: &o.artifact,
            schema: SchemaRef {
                name: schema_name.to_string(),
                version: schema_version,
            },
            golden_columns: &table.columns,
            golden_rows: &rows,
            training: TrainingRange {
                start: o.train_start.clone(),
                end: o.train_end.clone(),
            },
            metrics,
            created: registry::now_rfc3339(),
            tolerance: o.tolerance,
            latency_budget_us: o.latency_budget_us,
        },
    )?;
    Ok(format!(
        "registered {} {} ({}), {} files, {} golden rows",
        m.name,
        m.model_version,
        m.kind,
        m.files.len(),
        rows.len()
    ))
}
