//! `tickpipe models`: fit a regime model from exported features or bars, and score CSV rows
//! offline with any supported model, so that users can check parity with their training code.
//!
//! CSV input: a header row of column names, then one row per line, comma-separated numbers;
//! an empty cell (or `nan`) is a missing value. Quoted fields are refused.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tickpipe_models::lstm::LstmModel;
use tickpipe_models::sjm::{SjmFitConfig, SjmModel};
use tickpipe_models::xgb::XgbModel;

/// Default regime features (when `--columns` is not given for a features file): spread, book
/// pressure, order flow, volatility, return and activity.
pub const DEFAULT_REGIME_FEATURES: [&str; 6] = [
    "spread_bps",
    "depth_imbalance_l1",
    "ofi_1s",
    "rv_10s",
    "log_return_10s",
    "event_rate_1s",
];

/// Features derived from OHLCV bars for `fit-sjm --bars` (per bar, from the bar and the one
/// before it).
pub const BAR_REGIME_FEATURES: [&str; 3] = ["bar_log_return", "bar_log_range", "bar_log_volume"];

/// A CSV table of numbers.
#[derive(Debug, Clone)]
pub struct Table {
    /// Column names.
    pub columns: Vec<String>,
    /// Row-major values (NaN where missing).
    pub values: Vec<f64>,
}

impl Table {
    /// Rows in the table.
    pub fn rows(&self) -> usize {
        if self.columns.is_empty() {
            0
        } else {
            self.values.len() / self.columns.len()
        }
    }

    /// Index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        let n = self.columns.len();
        &self.values[i * n..(i + 1) * n]
    }
}

/// Reads a numeric CSV file.
///
/// # Errors
/// An unreadable file, an empty or duplicate header, a row of the wrong width, a quoted field
/// or a cell that is not a number (named by line and column).
pub fn read_table(path: &Path) -> Result<Table> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut lines = BufReader::new(f).lines();
    let header = match lines.next() {
        Some(h) => h.with_context(|| format!("{}: cannot read the header", path.display()))?,
        None => bail!("{}: empty file (expected a header row)", path.display()),
    };
    let columns: Vec<String> = header
        .trim_end_matches('\r')
        .split(',')
        .map(|c| c.trim().to_string())
        .collect();
    if columns.iter().any(|c| c.is_empty()) {
        bail!("{}: line 1: an empty column name", path.display());
    }
    if columns.iter().any(|c| c.contains('"')) {
        bail!(
            "{}: line 1: quoted fields are not supported",
            path.display()
        );
    }
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            bail!("{}: line 1: column {c:?} appears twice", path.display());
        }
    }
    let mut values = Vec::new();
    for (k, line) in lines.enumerate() {
        let lineno = k + 2;
        let line = line.with_context(|| format!("{}: line {lineno}", path.display()))?;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let mut n = 0;
        for (j, cell) in line.split(',').enumerate() {
            let cell = cell.trim();
            let Some(name) = columns.get(j) else {
                bail!(
                    "{}: line {lineno}: more than the header's {} columns",
                    path.display(),
                    columns.len()
                );
            };
            let v = if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
                f64::NAN
            } else {
                cell.parse::<f64>().map_err(|_| {
                    anyhow::anyhow!(
                        "{}: line {lineno}, column {name:?}: {cell:?} is not a number",
                        path.display()
                    )
                })?
            };
            values.push(v);
            n += 1;
        }
        if n != columns.len() {
            bail!(
                "{}: line {lineno}: {n} columns, the header has {}",
                path.display(),
                columns.len()
            );
        }
    }
    Ok(Table { columns, values })
}

/// The per-bar regime features ([`BAR_REGIME_FEATURES`]) of an OHLCV table with columns
/// `open, high, low, close, volume`: ln(close / previous close), ln(high / low),
/// ln(1 + volume). The first bar (no previous close) is skipped.
///
/// # Errors
/// A missing column.
pub fn bar_features(t: &Table) -> Result<Vec<f64>> {
    let col = |n: &str| {
        t.column(n)
            .with_context(|| format!("bars need a {n:?} column (have {:?})", t.columns))
    };
    let (h, l, c, v) = (col("high")?, col("low")?, col("close")?, col("volume")?);
    col("open")?;
    let mut out = Vec::with_capacity(t.rows() * 3);
    for i in 1..t.rows() {
        let (prev, r) = (t.row(i - 1), t.row(i));
        out.push((r[c] / prev[c]).ln());
        out.push((r[h] / r[l]).ln());
        out.push(r[v].ln_1p());
    }
    Ok(out)
}

/// `fit-sjm` options.
#[derive(Debug, Clone)]
pub struct FitSjmOptions {
    /// Feature rows (CSV from `tickpipe features`, or any CSV with named columns).
    pub features: Option<PathBuf>,
    /// OHLCV bars (CSV) instead of features.
    pub bars: Option<PathBuf>,
    /// Columns to fit on (features only).
    pub columns: Option<Vec<String>>,
    /// Fit configuration.
    pub fit: SjmFitConfig,
    /// Output directory.
    pub out: PathBuf,
}

/// What `fit-sjm` did.
#[derive(Debug, Clone)]
pub struct FitSjmSummary {
    /// Rows read.
    pub rows: usize,
    /// Rows used (all values finite).
    pub used: usize,
    /// Features fitted on.
    pub features: Vec<String>,
    /// The fit's report, printed.
    pub report: String,
}

/// Fits a Statistical Jump Model and writes its directory.
///
/// # Errors
/// Unreadable input, unknown columns, too few usable rows, a failed fit or write.
pub fn fit_sjm(o: &FitSjmOptions) -> Result<FitSjmSummary> {
    let (names, rows_in, data): (Vec<String>, usize, Vec<f64>) = match (&o.features, &o.bars) {
        (Some(path), None) => {
            let t = read_table(path)?;
            let names: Vec<String> = match &o.columns {
                Some(c) => c.clone(),
                None => DEFAULT_REGIME_FEATURES
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
            };
            let idx = names
                .iter()
                .map(|n| {
                    t.column(n).with_context(|| {
                        format!("{}: no column {n:?} (pick with --columns)", path.display())
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut data = Vec::with_capacity(t.rows() * idx.len());
            for i in 0..t.rows() {
                let r = t.row(i);
                data.extend(idx.iter().map(|&j| r[j]));
            }
            (names, t.rows(), data)
        }
        (None, Some(path)) => {
            if o.columns.is_some() {
                bail!("--columns applies to --features; bars give {BAR_REGIME_FEATURES:?}");
            }
            let t = read_table(path)?;
            let data = bar_features(&t).with_context(|| path.display().to_string())?;
            (
                BAR_REGIME_FEATURES.iter().map(|s| s.to_string()).collect(),
                t.rows(),
                data,
            )
        }
        _ => bail!("give exactly one of --features or --bars"),
    };
    let f = names.len();
    let mut clean = Vec::with_capacity(data.len());
    for r in data.chunks_exact(f) {
        if r.iter().all(|v| v.is_finite()) {
            clean.extend_from_slice(r);
        }
    }
    let used = clean.len() / f;
    if used < o.fit.n_states.max(2) * 2 {
        bail!(
            "only {used} of {rows_in} rows have every feature finite: too few to fit {} states",
            o.fit.n_states
        );
    }
    let (model, report) =
        SjmModel::fit(&clean, f, &names, &o.fit).map_err(|e| anyhow::anyhow!("fit: {e}"))?;
    model
        .save(&o.out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", o.out.display()))?;
    Ok(FitSjmSummary {
        rows: rows_in,
        used,
        features: names,
        report: format!(
            "objective {} (best of {} starts: #{}), {} switches, rows per state {:?}",
            report.objective,
            report.inits.len(),
            report.best_init,
            report.n_switches,
            report.state_frequencies
        ),
    })
}

/// What kind of model a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A Statistical Jump Model directory.
    Sjm,
    /// An XGBoost JSON or UBJSON file.
    Xgboost,
    /// An ONNX file (LSTM).
    Onnx,
}

impl ModelKind {
    /// Judges by the path: a directory is a jump model, `.onnx` is ONNX, anything else XGBoost.
    pub fn of(path: &Path) -> ModelKind {
        if path.is_dir() {
            ModelKind::Sjm
        } else if path.extension().is_some_and(|e| e == "onnx") {
            ModelKind::Onnx
        } else {
            ModelKind::Xgboost
        }
    }
}

/// The index of `key`'s state in `states`, made with `new` on first sight.
fn stream_state<S>(states: &mut Vec<(u64, S)>, key: u64, new: impl FnOnce() -> S) -> usize {
    match states.iter().position(|(k, _)| *k == key) {
        Some(s) => s,
        None => {
            states.push((key, new()));
            states.len() - 1
        }
    }
}

fn bind_columns(t: &Table) -> Vec<&str> {
    t.columns.iter().map(String::as_str).collect()
}

/// Scores `input` with the model at `model`, writing one output row per input row to `out`.
/// Returns the rows written.
///
/// - XGBoost: columns `row, score` (or `score_0..` for several outputs); every row on its own.
/// - Jump model: `row[, instrument_id], label, confidence, valid`: the online recursion over the
///   rows in order, one state per `instrument_id` if that column exists.
/// - ONNX LSTM: `row[, instrument_id], y_0..`: streamed in order, one state per instrument.
///
/// Numbers are printed in full precision (shortest round-trip decimals).
///
/// # Errors
/// An unreadable or invalid model, input columns that do not cover the model's features, an
/// unwritable output.
pub fn predict(model: &Path, input: &Path, out: &Path) -> Result<usize> {
    let t = read_table(input)?;
    let schema = bind_columns(&t);
    let inst_col = t.column("instrument_id");
    let tmp = out.with_extension("partial");
    let mut w = BufWriter::new(
        File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?,
    );
    let m_err = |e: &dyn std::fmt::Display| anyhow::anyhow!("{}: {e}", model.display());
    let inst_header = if inst_col.is_some() {
        ",instrument_id"
    } else {
        ""
    };
    let instrument = |i: usize| inst_col.map(|c| t.row(i)[c]);
    match ModelKind::of(model) {
        ModelKind::Xgboost => {
            let m = XgbModel::load(model).map_err(|e| m_err(&e))?;
            let cols = m.bind(&schema).map_err(|e| m_err(&e))?;
            let k = m.n_outputs();
            let mut outs = vec![0f32; k];
            if k == 1 {
                writeln!(w, "row,score")?;
            } else {
                let names: Vec<String> = (0..k).map(|j| format!("score_{j}")).collect();
                writeln!(w, "row,{}", names.join(","))?;
            }
            for i in 0..t.rows() {
                m.predict_row(t.row(i), &cols, &mut outs);
                write!(w, "{i}")?;
                for v in &outs {
                    write!(w, ",{v}")?;
                }
                writeln!(w)?;
            }
        }
        ModelKind::Sjm => {
            let m = SjmModel::load(model).map_err(|e| m_err(&e))?;
            let cols = m.bind(&schema).map_err(|e| m_err(&e))?;
            let mut states: Vec<(u64, _)> = Vec::new();
            let mut x = vec![0f64; cols.len()];
            writeln!(w, "row{inst_header},label,confidence,valid")?;
            for i in 0..t.rows() {
                let key = instrument(i).map_or(0, |v| v as u64);
                let s = stream_state(&mut states, key, || m.new_online());
                for (xi, &c) in x.iter_mut().zip(&cols) {
                    *xi = t.row(i)[c];
                }
                let step = m.step(&mut states[s].1, &x);
                write!(w, "{i}")?;
                if inst_col.is_some() {
                    write!(w, ",{key}")?;
                }
                writeln!(w, ",{},{},{}", step.label, step.confidence, step.valid)?;
            }
        }
        ModelKind::Onnx => {
            let mut m = LstmModel::load(model).map_err(|e| m_err(&e))?;
            let cols = m.bind(&schema).map_err(|e| m_err(&e))?;
            let k = m.n_outputs();
            let mut states: Vec<(u64, _)> = Vec::new();
            let mut x = vec![0f32; cols.len()];
            let mut y = vec![0f32; k];
            let names: Vec<String> = (0..k).map(|j| format!("y_{j}")).collect();
            writeln!(w, "row{inst_header},{}", names.join(","))?;
            for i in 0..t.rows() {
                let key = instrument(i).map_or(0, |v| v as u64);
                let s = stream_state(&mut states, key, || m.new_state());
                for (xi, &c) in x.iter_mut().zip(&cols) {
                    *xi = t.row(i)[c] as f32;
                }
                m.step(&mut states[s].1, &x, &mut y)
                    .map_err(|e| anyhow::anyhow!("{}: row {i}: {e}", input.display()))?;
                write!(w, "{i}")?;
                if inst_col.is_some() {
                    write!(w, ",{key}")?;
                }
                for v in &y {
                    write!(w, ",{v}")?;
                }
                writeln!(w)?;
            }
        }
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, out)
        .with_context(|| format!("cannot move {} to {}", tmp.display(), out.display()))?;
    Ok(t.rows())
}
