//! Native evaluator for XGBoost gradient-boosted tree models, bit-exact with XGBoost 3.x.
//!
//! # What it reads
//!
//! Models saved by XGBoost 2.x and 3.x with `Booster.save_model`: JSON (`.json`) and UBJSON
//! (`.ubj`, XGBoost's default binary format). Both go through strict readers written for
//! this module — the UBJSON crates on crates.io are unmaintained 0.1 releases or
//! serialisation-only, and a JSON reader of our own parses numbers straight to `f32` as
//! XGBoost does: lengths are checked against the input before anything is allocated, nesting
//! is capped, and malformed input is an [`XgbError`], never a panic.
//!
//! Supported: the `gbtree` booster with numerical splits, any `num_parallel_tree`, and the
//! objectives of [`Objective`]. Refused with an error naming what is unsupported: categorical
//! features or splits, the `dart` and `gblinear` boosters, multi-target models and vector
//! leaves, and every other objective.
//!
//! # Semantics (what "bit-exact" means here)
//!
//! The arithmetic is XGBoost 3.2's CPU predictor, step for step:
//!
//! - **Inputs**: each `f64` cell is cast to `f32` (`as f32`, round to nearest even, the same
//!   as numpy's `astype(np.float32)` and XGBoost's own cast of a float64 array). NaN is
//!   missing; **0.0 is a value, not missing** (dense input, XGBoost's default
//!   `missing = NaN`). ±∞ are compared as values (XGBoost refuses them in a `DMatrix`).
//! - **Splits**: `x < split_condition` in `f32` goes to the left child; a missing value goes
//!   to the default child (`default_left`).
//! - **Margin**: per output group, start from the group's base margin and add each tree's leaf
//!   value in `f32`, one tree at a time in the model's tree order. The base margin is
//!   `base_score` as saved, turned into a margin by the objective: `-logf(1/p - 1)` (after
//!   clamping `p` to `[1e-6, 1 - 1e-6]`) for `reg:logistic` and `binary:logistic`, unchanged
//!   for the others. A scalar `base_score` (2.x files, and 3.x binary models) is broadcast to
//!   every group.
//! - **Transforms**: sigmoid `1 / (expf(min(-x, 88.7)) + 1 + 1e-16)`; softmax with `fmaxf`
//!   for the maximum, the `expf` values summed in `f64` and each divided by that sum narrowed
//!   to `f32`; `multi:softmax` returns the index of the first largest margin, as an `f32`.
//!
//! Margins are therefore exact on every platform. The transformed outputs also depend on
//! `expf`/`logf`, which Rust takes from the platform's C library as XGBoost does; the parity
//! tests compare against XGBoost on the same machine (glibc), bit for bit, with `to_bits()`.
//!
//! # Binding features
//!
//! Rows are the caller's feature vectors (for the pipeline, the `tickpipe.features` schema),
//! so the model's features are found *by name* once, at set-up: [`XgbModel::bind`] maps
//! model feature `i` to a column of the caller's row. A model saved without feature names
//! binds positionally: model feature `i` reads column `i`, and the schema only has to be at
//! least that wide.
//!
//! # Speed and allocation
//!
//! Trees are flattened at load time into plain arrays (see the `forest` module). For models
//! of depth ≤ 8 and at most 128 features — the fast path — every tree is padded to a complete
//! binary tree in heap order, so a row walks exactly `depth` splits per tree with no pointer
//! chasing, no leaf test and no branch (missing values are resolved by reading one of two
//! pre-substituted copies of each feature), and 16 trees are walked in lockstep so that their
//! chains of dependent loads overlap. Deeper or wider models use a linked node array. The
//! prediction methods never allocate: a row's features are gathered once into a stack buffer
//! (rows of more than 128 model features are read in place instead), and
//! [`XgbModel::predict_batch`] gathers blocks of 32 rows and runs each tree over 16 rows at a
//! time, so a tree's nodes are fetched once per block.
//!
//! # Why not the `xgboost` crate
//!
//! The `xgboost-rs` bindings bundle XGBoost 1.6.2, which predates the 3.x model format: it
//! silently ignores a 3.x model's bracketed `base_score` (every prediction is off by a
//! constant), treats 0.0 as missing in its dense matrix path, and needs a five-minute C++
//! build. This module has no native dependency.

mod forest;
mod json;
mod load;
mod ubjson;
mod value;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use forest::{Direct, Features, Forest, ROW_SLOTS, slots};

/// Errors from loading, checking or binding a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XgbError {
    /// The model file could not be read.
    #[error("reading XGBoost model {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not a well-formed document (including truncated files).
    #[error("malformed {format} at byte {offset}: {msg}")]
    Parse {
        /// `"JSON"` or `"UBJSON"`.
        format: &'static str,
        /// Byte offset where reading stopped.
        offset: usize,
        /// What was wrong.
        msg: String,
    },
    /// The input is neither JSON nor UBJSON (for example a compressed file).
    #[error("not an XGBoost JSON or UBJSON model: {msg}")]
    UnknownFormat {
        /// What was found.
        msg: String,
    },
    /// A member is missing or has the wrong type.
    #[error("model field {path}: {msg}")]
    Schema {
        /// Path of the member in the document, like `/learner/objective/name`.
        path: String,
        /// What was wrong.
        msg: String,
    },
    /// The `version` field is missing, malformed, or not 2.x/3.x.
    #[error("unsupported XGBoost model version {found} (2.x and 3.x are read)")]
    UnsupportedVersion {
        /// The version found.
        found: String,
    },
    /// The objective is not one of [`Objective`].
    #[error(
        "unsupported objective \"{name}\" (supported: reg:squarederror, reg:logistic, \
         binary:logistic, binary:logitraw, multi:softprob, multi:softmax)"
    )]
    UnsupportedObjective {
        /// The objective's name.
        name: String,
    },
    /// The booster is not `gbtree`.
    #[error("unsupported booster \"{name}\": {why}")]
    UnsupportedBooster {
        /// The booster's name (`dart`, `gblinear`, …).
        name: String,
        /// Why it is refused.
        why: &'static str,
    },
    /// The model uses categorical features or splits.
    #[error("categorical splits are not supported: {detail}")]
    Categorical {
        /// Where they were found.
        detail: String,
    },
    /// Another model feature this evaluator does not implement.
    #[error("unsupported: {what}")]
    Unsupported {
        /// What it is.
        what: String,
    },
    /// A model-level inconsistency (counts, base score, feature names).
    #[error("invalid model: {msg}")]
    InvalidModel {
        /// What was wrong.
        msg: String,
    },
    /// A broken tree: child index out of range, cycle, non-finite value, bad feature index.
    #[error("invalid tree {tree}{}: {msg}", node.map(|n| format!(" node {n}")).unwrap_or_default())]
    InvalidTree {
        /// Tree index in the model's order.
        tree: usize,
        /// Node index in the tree, where one is at fault.
        node: Option<usize>,
        /// What was wrong.
        msg: String,
    },
    /// A model feature has no column of that name in the caller's schema.
    #[error("model feature \"{name}\" is not in the schema")]
    MissingFeature {
        /// The model feature's name.
        name: String,
    },
    /// A model feature's name appears more than once in the caller's schema.
    #[error("model feature \"{name}\" appears more than once in the schema")]
    AmbiguousFeature {
        /// The model feature's name.
        name: String,
    },
    /// A model without feature names needs more columns than the schema has.
    #[error("model without feature names needs {needed} columns, schema has {got}")]
    SchemaTooNarrow {
        /// The model's number of features.
        needed: usize,
        /// The schema's number of columns.
        got: usize,
    },
}

/// The learning objectives this evaluator implements, with their output transforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Objective {
    /// `reg:squarederror`: output = margin.
    SquaredError,
    /// `reg:logistic`: output = sigmoid(margin); `base_score` is a probability.
    RegLogistic,
    /// `binary:logistic`: output = sigmoid(margin); `base_score` is a probability.
    BinaryLogistic,
    /// `binary:logitraw`: output = margin; `base_score` is a margin.
    BinaryLogitRaw,
    /// `multi:softprob`: one probability per class (softmax of the class margins).
    MultiSoftprob,
    /// `multi:softmax`: the index of the most likely class, as an `f32`.
    MultiSoftmax,
}

impl Objective {
    /// XGBoost's name for the objective.
    pub fn name(self) -> &'static str {
        match self {
            Objective::SquaredError => "reg:squarederror",
            Objective::RegLogistic => "reg:logistic",
            Objective::BinaryLogistic => "binary:logistic",
            Objective::BinaryLogitRaw => "binary:logitraw",
            Objective::MultiSoftprob => "multi:softprob",
            Objective::MultiSoftmax => "multi:softmax",
        }
    }
}

/// Rows per block of the batch path (gathered on the stack: 32 KiB).
const BLOCK_ROWS: usize = 32;

/// XGBoost's sigmoid guard, a `double` literal narrowed to `float` as in `common::Sigmoid`.
const SIGMOID_EPS: f32 = 1e-16_f64 as f32;

/// XGBoost's `common::Sigmoid` for `float`.
#[inline]
fn sigmoid(x: f32) -> f32 {
    // std::min(-x, 88.7f) is `88.7f < -x ? 88.7f : -x`.
    let t = if 88.7f32 < -x { 88.7f32 } else { -x };
    1.0f32 / (t.exp() + 1.0f32 + SIGMOID_EPS)
}

/// XGBoost's `common::Softmax`, in place.
#[inline]
fn softmax(v: &mut [f32]) {
    let mut wmax = v[0];
    for &x in &v[1..] {
        wmax = x.max(wmax); // fmaxf
    }
    let mut wsum = 0.0f64;
    for x in v.iter_mut() {
        *x = (*x - wmax).exp();
        wsum += f64::from(*x);
    }
    let s = wsum as f32;
    for x in v.iter_mut() {
        *x /= s;
    }
}

/// A loaded, checked XGBoost tree model. Immutable; share it by reference across threads.
#[derive(Debug, Clone, PartialEq)]
pub struct XgbModel {
    forest: Forest,
    /// Per output group, the margin every row starts from.
    base_margin: Vec<f32>,
    objective: Objective,
    n_features: usize,
    feature_names: Vec<String>,
    version: (u32, u32, u32),
}

impl XgbModel {
    /// Loads a model file, JSON or UBJSON, told apart by content (a UBJSON model starts
    /// with `{` followed by a length marker; JSON with `{` and whitespace or a quote).
    ///
    /// # Errors
    ///
    /// [`XgbError::Io`] if the file cannot be read; otherwise as [`XgbModel::from_bytes`].
    pub fn load(path: &Path) -> Result<XgbModel, XgbError> {
        let bytes = std::fs::read(path).map_err(|source| XgbError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Parses a model from bytes, JSON or UBJSON, told apart by content.
    ///
    /// # Errors
    ///
    /// [`XgbError::UnknownFormat`] for compressed or empty input; otherwise as
    /// [`XgbModel::from_json`] or [`XgbModel::from_ubjson`].
    pub fn from_bytes(bytes: &[u8]) -> Result<XgbModel, XgbError> {
        if bytes.starts_with(&[0x1f, 0x8b]) {
            return Err(XgbError::UnknownFormat {
                msg: "gzip-compressed data; decompress it first".to_string(),
            });
        }
        if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            return Err(XgbError::UnknownFormat {
                msg: "zstd-compressed data; decompress it first".to_string(),
            });
        }
        if bytes.is_empty() {
            return Err(XgbError::UnknownFormat {
                msg: "empty input".to_string(),
            });
        }
        let ubj = bytes[0] == b'{'
            && matches!(
                bytes.get(1),
                Some(b'i' | b'U' | b'I' | b'l' | b'L' | b'#' | b'$')
            );
        if ubj {
            Self::from_ubjson(bytes)
        } else {
            Self::from_json(bytes)
        }
    }

    /// Parses a model saved as JSON.
    ///
    /// # Errors
    ///
    /// [`XgbError::Parse`] for malformed or truncated JSON; [`XgbError::Schema`],
    /// [`XgbError::InvalidModel`] or [`XgbError::InvalidTree`] for a document that is not a
    /// sound XGBoost model; [`XgbError::UnsupportedVersion`],
    /// [`XgbError::UnsupportedObjective`], [`XgbError::UnsupportedBooster`],
    /// [`XgbError::Categorical`] or [`XgbError::Unsupported`] for models this evaluator does
    /// not implement.
    pub fn from_json(bytes: &[u8]) -> Result<XgbModel, XgbError> {
        load::build(&json::parse(bytes)?)
    }

    /// Parses a model saved as UBJSON.
    ///
    /// # Errors
    ///
    /// As [`XgbModel::from_json`], with [`XgbError::Parse`] for malformed or truncated
    /// UBJSON.
    pub fn from_ubjson(bytes: &[u8]) -> Result<XgbModel, XgbError> {
        load::build(&ubjson::parse(bytes)?)
    }

    /// The model's feature names in model order; empty if it was saved without names.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// Number of input features (`num_feature`); `cols` passed to the prediction methods
    /// has this length.
    pub fn n_features(&self) -> usize {
        self.n_features
    }

    /// Number of values [`XgbModel::predict_row`] writes per row: `num_class` for
    /// `multi:softprob`, otherwise 1 (`multi:softmax` writes the class index).
    pub fn n_outputs(&self) -> usize {
        match self.objective {
            Objective::MultiSoftprob => self.forest.n_groups(),
            _ => 1,
        }
    }

    /// Number of margins [`XgbModel::predict_margin_row`] writes per row: `num_class` for
    /// both multi-class objectives, otherwise 1.
    pub fn n_margins(&self) -> usize {
        self.forest.n_groups()
    }

    /// The model's objective.
    pub fn objective(&self) -> Objective {
        self.objective
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.forest.n_trees()
    }

    /// The XGBoost version that saved the model, `(major, minor, patch)`.
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// Maps each model feature to its column in `schema` (the caller's row layout): the
    /// result has [`n_features`](XgbModel::n_features) entries, entry `i` the column of model
    /// feature `i`. Names must match exactly. A model without feature names binds
    /// positionally (`0, 1, …`). Call once at set-up and keep the result.
    ///
    /// # Errors
    ///
    /// [`XgbError::MissingFeature`] if a model feature is not in `schema`,
    /// [`XgbError::AmbiguousFeature`] if it is there twice, [`XgbError::SchemaTooNarrow`]
    /// if a model without names has more features than `schema` has columns.
    pub fn bind(&self, schema: &[&str]) -> Result<Vec<usize>, XgbError> {
        if self.feature_names.is_empty() {
            if schema.len() < self.n_features {
                return Err(XgbError::SchemaTooNarrow {
                    needed: self.n_features,
                    got: schema.len(),
                });
            }
            return Ok((0..self.n_features).collect());
        }
        let mut index: HashMap<&str, Option<usize>> = HashMap::with_capacity(schema.len());
        for (i, &name) in schema.iter().enumerate() {
            index
                .entry(name)
                .and_modify(|e| *e = None)
                .or_insert(Some(i));
        }
        self.feature_names
            .iter()
            .map(|name| match index.get(name.as_str()) {
                Some(Some(i)) => Ok(*i),
                Some(None) => Err(XgbError::AmbiguousFeature { name: name.clone() }),
                None => Err(XgbError::MissingFeature { name: name.clone() }),
            })
            .collect()
    }

    /// Predicts one row: the objective's transformed output (probabilities for the logistic
    /// and `multi:softprob` objectives, the class index for `multi:softmax`).
    ///
    /// `row` is the caller's feature vector, `cols` the map from [`XgbModel::bind`]; each
    /// cell is cast to `f32` (`as f32`, like numpy's `astype(np.float32)`), NaN meaning
    /// missing and 0.0 a value. Never allocates.
    ///
    /// # Panics
    ///
    /// If `cols.len() != self.n_features()`, if an entry of `cols` is out of bounds for
    /// `row`, or if `out.len() != self.n_outputs()`.
    pub fn predict_row(&self, row: &[f64], cols: &[usize], out: &mut [f32]) {
        assert_eq!(out.len(), self.n_outputs(), "output length");
        self.row_impl(row, cols, out, false);
    }

    /// Predicts one row's raw margins (XGBoost's `output_margin=True`), one per output group.
    ///
    /// # Panics
    ///
    /// If `cols.len() != self.n_features()`, if an entry of `cols` is out of bounds for
    /// `row`, or if `out.len() != self.n_margins()`.
    pub fn predict_margin_row(&self, row: &[f64], cols: &[usize], out: &mut [f32]) {
        assert_eq!(out.len(), self.n_margins(), "output length");
        self.row_impl(row, cols, out, true);
    }

    /// Predicts several rows at once (several instruments, or a replay), with the same
    /// results as [`XgbModel::predict_row`] on each: `rows` holds `rows.len() / n_cols` rows
    /// of `n_cols` cells each, row-major; `out` receives
    /// [`n_outputs`](XgbModel::n_outputs) values per row, row-major. Never allocates.
    ///
    /// # Panics
    ///
    /// If `n_cols` is 0 or does not divide `rows.len()`, if `cols.len() != self.n_features()`
    /// or an entry of `cols` is `>= n_cols`, or if `out` does not have room for exactly one
    /// output set per row.
    pub fn predict_batch(&self, rows: &[f64], n_cols: usize, cols: &[usize], out: &mut [f32]) {
        self.batch_impl(rows, n_cols, cols, out, false);
    }

    /// As [`XgbModel::predict_batch`], writing [`n_margins`](XgbModel::n_margins) raw
    /// margins per row.
    ///
    /// # Panics
    ///
    /// As [`XgbModel::predict_batch`].
    pub fn predict_margin_batch(
        &self,
        rows: &[f64],
        n_cols: usize,
        cols: &[usize],
        out: &mut [f32],
    ) {
        self.batch_impl(rows, n_cols, cols, out, true);
    }

    fn row_impl(&self, row: &[f64], cols: &[usize], out: &mut [f32], margin: bool) {
        assert_eq!(cols.len(), self.n_features, "bind map length");
        if 2 * self.n_features <= ROW_SLOTS {
            let mut buf = [0f32; ROW_SLOTS];
            for (b, &c) in buf.as_chunks_mut::<2>().0.iter_mut().zip(cols) {
                *b = slots(row[c]);
            }
            self.finish(&buf, out, margin);
        } else {
            self.finish(&Direct { row, cols }, out, margin);
        }
    }

    /// Margins of one row into `out` and, unless `margin`, the objective's transform.
    #[inline]
    fn finish<F: Features + ?Sized>(&self, x: &F, out: &mut [f32], margin: bool) {
        let f = &self.forest;
        if !margin && self.objective == Objective::MultiSoftmax {
            // XGBoost's FindMaxIndex: the first index whose margin is strictly greatest.
            let mut best = f.margin(0, self.base_margin[0], x);
            let mut best_i = 0usize;
            for g in 1..f.n_groups() {
                let m = f.margin(g, self.base_margin[g], x);
                if m > best {
                    best = m;
                    best_i = g;
                }
            }
            out[0] = best_i as f32;
            return;
        }
        for (g, (o, &b)) in out.iter_mut().zip(&self.base_margin).enumerate() {
            *o = f.margin(g, b, x);
        }
        if !margin {
            self.transform(out);
        }
    }

    /// The objective's transform of one row's margins, in place (not `multi:softmax`).
    #[inline]
    fn transform(&self, out: &mut [f32]) {
        match self.objective {
            Objective::SquaredError | Objective::BinaryLogitRaw | Objective::MultiSoftmax => {}
            Objective::RegLogistic | Objective::BinaryLogistic => out[0] = sigmoid(out[0]),
            Objective::MultiSoftprob => softmax(out),
        }
    }

    fn batch_impl(
        &self,
        rows: &[f64],
        n_cols: usize,
        cols: &[usize],
        out: &mut [f32],
        margin: bool,
    ) {
        assert!(n_cols > 0, "n_cols must be positive");
        assert_eq!(
            rows.len() % n_cols,
            0,
            "rows.len() must be a multiple of n_cols"
        );
        assert_eq!(cols.len(), self.n_features, "bind map length");
        assert!(
            cols.iter().all(|&c| c < n_cols),
            "bind map column out of range"
        );
        let n_rows = rows.len() / n_cols;
        let n_out = if margin {
            self.n_margins()
        } else {
            self.n_outputs()
        };
        assert_eq!(out.len(), n_rows * n_out, "output length");
        if 2 * self.n_features > ROW_SLOTS {
            for (row, o) in rows.chunks_exact(n_cols).zip(out.chunks_exact_mut(n_out)) {
                self.finish(&Direct { row, cols }, o, margin);
            }
            return;
        }
        let mut buf = [[0f32; ROW_SLOTS]; BLOCK_ROWS];
        let mut acc = [0f32; BLOCK_ROWS];
        let mut best = [0f32; BLOCK_ROWS];
        let mut best_i = [0u32; BLOCK_ROWS];
        let argmax = !margin && self.objective == Objective::MultiSoftmax;
        for (rblock, oblock) in rows
            .chunks(BLOCK_ROWS * n_cols)
            .zip(out.chunks_mut(BLOCK_ROWS * n_out))
        {
            let b = rblock.len() / n_cols;
            for (dst, row) in buf.iter_mut().zip(rblock.chunks_exact(n_cols)) {
                for (d, &c) in dst.as_chunks_mut::<2>().0.iter_mut().zip(cols) {
                    *d = slots(row[c]);
                }
            }
            for g in 0..self.forest.n_groups() {
                let acc = &mut acc[..b];
                acc.fill(self.base_margin[g]);
                self.forest.margin_block(g, &buf[..b], acc);
                if argmax {
                    for r in 0..b {
                        if g == 0 || acc[r] > best[r] {
                            best[r] = acc[r];
                            best_i[r] = g as u32;
                        }
                    }
                } else {
                    for (o, &a) in oblock.chunks_exact_mut(n_out).zip(acc.iter()) {
                        o[g] = a;
                    }
                }
            }
            if argmax {
                for (o, &i) in oblock.iter_mut().zip(&best_i[..b]) {
                    *o = i as f32;
                }
            } else if !margin {
                for o in oblock.chunks_exact_mut(n_out) {
                    self.transform(o);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every fixture model through the linked layout (the complete one is what the parity
    /// tests exercise): bit-identical to XGBoost's outputs as well.
    #[test]
    fn linked_layout_matches_the_goldens() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/xgb");
        let mut checked = 0;
        for name in [
            "reg_squarederror",
            "reg_logistic",
            "reg_logistic_base03",
            "binary_logistic",
            "binary_logitraw",
            "multi_softprob",
            "multi_softmax",
            "reg_noname",
            "binary_logistic_v2",
        ] {
            let bytes = std::fs::read(dir.join(format!("{name}.json"))).unwrap();
            let model = load::build_with(&json::parse(&bytes).unwrap(), 0).unwrap();
            assert!(matches!(model.forest.layout_name(), "linked"), "{name}");
            let text = std::fs::read_to_string(dir.join(format!("{name}.cases.json"))).unwrap();
            let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
            let rows: Vec<Vec<f64>> = doc["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().parse().unwrap())
                        .collect()
                })
                .collect();
            let cols = match doc["columns"].as_array() {
                Some(c) => {
                    let names: Vec<&str> = c.iter().map(|v| v.as_str().unwrap()).collect();
                    model.bind(&names).unwrap()
                }
                None => (0..model.n_features()).collect(),
            };
            let n_cols = rows[0].len();
            let flat: Vec<f64> = rows.iter().flatten().copied().collect();
            let mut batch = vec![0f32; rows.len() * model.n_outputs()];
            model.predict_batch(&flat, n_cols, &cols, &mut batch);
            for (i, row) in rows.iter().enumerate() {
                let mut out = vec![0f32; model.n_outputs()];
                let mut m = vec![0f32; model.n_margins()];
                model.predict_row(row, &cols, &mut out);
                model.predict_margin_row(row, &cols, &mut m);
                let hex = |key: &str| -> Vec<u32> {
                    doc[key][i]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|h| u32::from_str_radix(h.as_str().unwrap(), 16).unwrap())
                        .collect()
                };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&out), hex("output"), "{name} row {i}");
                assert_eq!(bits(&m), hex("margin"), "{name} row {i}");
                let n = model.n_outputs();
                assert_eq!(
                    bits(&batch[i * n..(i + 1) * n]),
                    hex("output"),
                    "{name} row {i}"
                );
                checked += 1;
            }
        }
        assert!(checked > 400);
    }

    #[test]
    fn sigmoid_matches_the_definition() {
        assert_eq!(sigmoid(0.0), 0.5);
        // The clamp: exp(88.7) is finite in f32, exp(89) is not.
        assert!(sigmoid(-1000.0) > 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(SIGMOID_EPS, 1e-16f32);
    }

    #[test]
    fn softmax_sums_in_f64() {
        let mut v = [1.0f32, 2.0, 3.0];
        softmax(&mut v);
        let e = [(-2.0f32).exp(), (-1.0f32).exp(), 1.0];
        let s = (f64::from(e[0]) + f64::from(e[1]) + f64::from(e[2])) as f32;
        assert_eq!(v, [e[0] / s, e[1] / s, e[2] / s]);
    }
}
