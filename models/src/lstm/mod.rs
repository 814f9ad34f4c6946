//! Streaming LSTM forecasts through ONNX Runtime.
//!
//! An LSTM is exported to ONNX as a single **step**: one bar of features and the previous hidden
//! and cell states in, the forecast and the next states out (see [`signature`] for the exact
//! tensors). ONNX Runtime keeps no state between runs, so tickpipe carries `h`/`c` itself, one
//! [`LstmState`] per instrument, and one [`LstmModel`] (one session) serves any number of
//! instruments.
//!
//! ```no_run
//! use tickpipe_models::lstm::LstmModel;
//! # fn main() -> Result<(), tickpipe_models::lstm::LstmError> {
//! let mut model = LstmModel::load("models/fixtures/lstm/lstm_h32.onnx".as_ref())?;
//! // The caller's columns, by name; the model reads four of them.
//! let schema = ["bar_log_return", "bar_log_range", "bar_log_volume", "bar_log_trades"];
//! let binding = model.bind(&schema)?;
//! let mut es = model.new_state();
//! let row = [0.01_f32, -7.5, 6.2, 4.8];
//! let mut y = [0.0_f32; 1];
//! model.step_row(&mut es, &row, &binding, &mut y)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Runtime
//! [`LstmModel::load`] first calls [`runtime::ensure_runtime`], which finds or fetches the pinned
//! ONNX Runtime 1.31.1 shared library and initialises `ort` once per process.
//!
//! # Session tuning
//! Sessions are built for the latency of one small step on the calling thread: one intra-op
//! thread and one inter-op thread (so no pool threads, nothing to wake), spinning disabled for
//! both (`session.intra_op.allow_spinning` = `session.inter_op.allow_spinning` = `0`),
//! sequential execution, and graph optimisation level "all".
//!
//! # Buffers and copies
//! The input tensors (`x`, `h_in`, `c_in`) are allocated once at load and owned by the model;
//! each step copies the features and the instrument's `h`/`c` into them (F + 2H floats) and hands
//! them to ONNX Runtime by reference, so `ort` does not copy them again. The output tensors
//! (`y`, `h_out`, `c_out`) are preallocated once and bound to the session's run options, so ONNX
//! Runtime writes into them instead of allocating outputs; the step copies them out to the
//! caller's `out` and to the state (O + 2H floats). Neither tickpipe nor `ort` allocates during
//! a step (the `ort` side keeps names and pointers on the stack); ONNX Runtime's C++ `Run` itself
//! still does, about 57 heap allocations per step for the fixture model with 1.31.1 (execution
//! frame and kernel scratch, counted with valgrind over 1000 vs 3000 steps). That, and a cost of
//! a few microseconds per step, is why the LSTM runs on the slow lane, never on a pinned
//! hot-path thread.
//!
//! # Threads
//! [`LstmModel`] is `Send` but not meant to be shared: it needs `&mut self` to step (ONNX
//! Runtime's `Run` is not safe to call concurrently on one session, and the step buffers are the
//! model's). Build it on the thread that will own it (the slow lane) and keep it there.
//!
//! # Non-finite values
//! A step whose features contain NaN or ±∞ is refused with [`LstmError::NonFiniteInput`], and a
//! step whose outputs come out non-finite with [`LstmError::NonFiniteOutput`]; in both cases the
//! state is left exactly as it was, so NaN never enters `h`/`c`. At load, every number stored in
//! the model is checked ([`weights`]), because a NaN weight does not reliably show in the
//! outputs (with 1.31.1, a NaN in the fixture's recurrent weights gives finite, wrong forecasts).
//! One probe step from zero features and zero state must also give finite outputs.

pub mod runtime;
pub mod signature;
pub mod weights;

use std::fmt;
use std::path::{Path, PathBuf};

use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::{Tensor, TensorElementType, ValueType};

pub use self::runtime::{RuntimeError, ensure_runtime};
use self::signature::{ElemType, TensorDesc};
pub use self::signature::{SignatureError, StepSignature};

/// Metadata key under which a model lists its input feature names, comma-separated, in input
/// order (ONNX `metadata_props`).
pub const FEATURES_METADATA_KEY: &str = "tickpipe.features";

/// Output names, in the order the run options select them.
const OUTPUT_NAMES: [&str; 3] = ["y", "h_out", "c_out"];

/// Errors from loading and stepping an LSTM model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LstmError {
    /// ONNX Runtime could not be found, fetched or loaded.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The model file could not be read.
    #[error("cannot read LSTM model `{}`: {source}", path.display())]
    Io {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// ONNX Runtime refused the model or the session options (corrupt or truncated file,
    /// unsupported operator or opset, ...).
    #[error("ONNX Runtime cannot load LSTM model `{}`: {message}", path.display())]
    Session {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The model is not a streaming step model.
    #[error("LSTM model `{}` has the wrong signature: {problem}", path.display())]
    Signature {
        /// The model file.
        path: PathBuf,
        /// The mismatch.
        problem: SignatureError,
    },
    /// The `tickpipe.features` metadata is malformed or disagrees with `x`.
    #[error("LSTM model `{}`: bad `{FEATURES_METADATA_KEY}` metadata: {problem}", path.display())]
    FeatureMetadata {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The model stores a NaN or infinite number (weights, constants, float attributes), or the
    /// load-time probe step (zero features, zero state) gave a non-finite output.
    #[error("LSTM model `{}` has non-finite weights: {detail}", path.display())]
    NonFiniteModel {
        /// The model file.
        path: PathBuf,
        /// Where: the tensor or attribute and element, or the probe's output.
        detail: String,
    },
    /// Features the model needs are not among the caller's columns.
    #[error("the caller's schema lacks feature(s) {missing:?} that the model reads")]
    MissingFeatures {
        /// The absent names, in model order.
        missing: Vec<String>,
    },
    /// The model has no feature names and the caller's schema is shorter than its input.
    #[error(
        "the model has no feature names, so its {needed} inputs bind positionally, but the schema has only {got} columns"
    )]
    SchemaTooShort {
        /// Number of model inputs `F`.
        needed: usize,
        /// Number of columns offered.
        got: usize,
    },
    /// A slice passed to a step has the wrong length.
    #[error("{what} has length {got}, expected {expected}")]
    Length {
        /// Which argument.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length the model needs.
        expected: usize,
    },
    /// A binding index points outside the row.
    #[error("binding index {index} is out of range for a row of {len} columns")]
    BindingOutOfRange {
        /// The index.
        index: usize,
        /// The row length.
        len: usize,
    },
    /// A feature is NaN or infinite: the step is refused and the state left unchanged.
    #[error("feature {index} (`{name}`) is {value}: step refused, state unchanged")]
    NonFiniteInput {
        /// Position in model input order.
        index: usize,
        /// The feature's name, or `x[index]` without metadata.
        name: String,
        /// The value.
        value: f32,
    },
    /// ONNX Runtime's run failed.
    #[error("ONNX Runtime step failed: {0}")]
    Run(String),
    /// The step gave a non-finite output: refused, state unchanged.
    #[error("the step produced a non-finite `{output}`: refused, state unchanged")]
    NonFiniteOutput {
        /// The first non-finite output.
        output: &'static str,
    },
}

/// The recurrent state of one instrument: `h` and `c`, `H` floats each.
#[derive(Debug, Clone, PartialEq)]
pub struct LstmState {
    h: Vec<f32>,
    c: Vec<f32>,
    steps: u64,
}

impl LstmState {
    /// A zero state for a model of hidden size `hidden` (what [`LstmModel::new_state`] returns).
    #[must_use]
    pub fn zeros(hidden: usize) -> Self {
        Self {
            h: vec![0.0; hidden],
            c: vec![0.0; hidden],
            steps: 0,
        }
    }

    /// The hidden state `h`.
    #[must_use]
    pub fn h(&self) -> &[f32] {
        &self.h
    }

    /// The cell state `c`.
    #[must_use]
    pub fn c(&self) -> &[f32] {
        &self.c
    }

    /// The hidden size `H`.
    #[must_use]
    pub fn hidden(&self) -> usize {
        self.h.len()
    }

    /// Number of steps accepted since creation or the last [`reset`](Self::reset).
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Back to zeros (e.g. after a data gap or a session boundary), without reallocating.
    pub fn reset(&mut self) {
        self.h.fill(0.0);
        self.c.fill(0.0);
        self.steps = 0;
    }
}

/// A loaded streaming LSTM step model: one ONNX Runtime session and its preallocated buffers.
///
/// See the [module docs](self) for the signature, the tuning, the copies and the threading rule.
pub struct LstmModel {
    path: PathBuf,
    session: Session,
    run_options: RunOptions<HasSelectedOutputs>,
    /// Input tensors in the model's own input order; `slots` says which is which.
    inputs: [Tensor<f32>; 3],
    /// Positions of `x`, `h_in`, `c_in` in `inputs`.
    slots: [usize; 3],
    features: Vec<String>,
    sig: StepSignature,
}

impl fmt::Debug for LstmModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LstmModel")
            .field("path", &self.path)
            .field("features", &self.features)
            .field("n_features", &self.sig.n_features)
            .field("hidden", &self.sig.hidden)
            .field("n_outputs", &self.sig.n_outputs)
            .finish_non_exhaustive()
    }
}

fn describe(name: &str, ty: &ValueType) -> TensorDesc {
    match ty {
        ValueType::Tensor { ty, shape, .. } => TensorDesc {
            name: name.to_string(),
            elem: if *ty == TensorElementType::Float32 {
                ElemType::F32
            } else {
                ElemType::Other(ty.to_string())
            },
            dims: shape.to_vec(),
        },
        _ => TensorDesc {
            name: name.to_string(),
            elem: ElemType::NotTensor,
            dims: Vec::new(),
        },
    }
}

/// A session builder with the options [`LstmModel`] uses (see [Session tuning](self#session-tuning)),
/// after [`ensure_runtime`]; for callers that build their own sessions the same way.
///
/// # Errors
/// [`LstmError::Runtime`] if ONNX Runtime is unavailable; [`LstmError::Session`] (with an empty
/// path) if it refuses an option.
pub fn step_session_builder() -> Result<SessionBuilder, LstmError> {
    let env = runtime::environment()?;
    let err = |e: &dyn fmt::Display| LstmError::Session {
        path: PathBuf::new(),
        message: format!("session options: {e}"),
    };
    let b = Session::builder(env).map_err(|e| err(&e))?;
    let b = b.with_intra_threads(1).map_err(|e| err(&e))?;
    let b = b.with_inter_threads(1).map_err(|e| err(&e))?;
    let b = b.with_parallel_execution(false).map_err(|e| err(&e))?;
    let b = b.with_intra_op_spinning(false).map_err(|e| err(&e))?;
    let b = b.with_inter_op_spinning(false).map_err(|e| err(&e))?;
    b.with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| err(&e))
}

/// Parses `tickpipe.features`: comma-separated, trimmed, non-empty, unique, exactly `n` names.
fn parse_features(raw: &str, n: usize) -> Result<Vec<String>, String> {
    let names: Vec<String> = raw.split(',').map(|s| s.trim().to_string()).collect();
    if let Some(i) = names.iter().position(String::is_empty) {
        return Err(format!("name {i} is empty in {raw:?}"));
    }
    for (i, a) in names.iter().enumerate() {
        if names[..i].contains(a) {
            return Err(format!("`{a}` appears twice"));
        }
    }
    if names.len() != n {
        return Err(format!(
            "{} names ({raw:?}) for an input x of {n} features",
            names.len()
        ));
    }
    Ok(names)
}

impl LstmModel {
    /// Loads a streaming step model: ensures the runtime, builds the session (tuned as in the
    /// [module docs](self#session-tuning)), validates the signature and the feature metadata,
    /// preallocates the step buffers and runs one probe step.
    ///
    /// # Errors
    /// [`LstmError::Runtime`] if ONNX Runtime is unavailable; [`LstmError::Io`] if the file cannot
    /// be read; [`LstmError::Session`] if ONNX Runtime refuses it (truncated or corrupt file);
    /// [`LstmError::Signature`], [`LstmError::FeatureMetadata`] for a model of the wrong shape;
    /// [`LstmError::NonFiniteModel`] if the probe step is not finite.
    pub fn load(path: &Path) -> Result<LstmModel, LstmError> {
        let bytes = std::fs::read(path).map_err(|source| LstmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let session_err = |message: String| LstmError::Session {
            path: path.to_path_buf(),
            message,
        };
        let session = step_session_builder()?
            .commit_from_memory(&bytes)
            .map_err(|e| session_err(e.to_string()))?;

        // After ONNX Runtime accepted the bytes, so a corrupt file gets its message.
        match weights::first_non_finite(&bytes) {
            Ok(None) => {}
            Ok(Some(found)) => {
                return Err(LstmError::NonFiniteModel {
                    path: path.to_path_buf(),
                    detail: found.to_string(),
                });
            }
            Err(e) => return Err(session_err(format!("cannot scan the stored weights: {e}"))),
        }

        let ins: Vec<TensorDesc> = session
            .inputs()
            .iter()
            .map(|o| describe(o.name(), o.dtype()))
            .collect();
        let outs: Vec<TensorDesc> = session
            .outputs()
            .iter()
            .map(|o| describe(o.name(), o.dtype()))
            .collect();
        let sig = signature::validate(&ins, &outs).map_err(|problem| LstmError::Signature {
            path: path.to_path_buf(),
            problem,
        })?;

        let raw_features = session
            .metadata()
            .map_err(|e| session_err(e.to_string()))?
            .custom(FEATURES_METADATA_KEY);
        let features = match raw_features {
            None => Vec::new(),
            Some(raw) => parse_features(&raw, sig.n_features).map_err(|problem| {
                LstmError::FeatureMetadata {
                    path: path.to_path_buf(),
                    problem,
                }
            })?,
        };

        let (f, h, o) = (sig.n_features, sig.hidden, sig.n_outputs);
        let x_shape: Vec<usize> = if sig.x_rank == 3 {
            vec![1, 1, f]
        } else {
            vec![1, f]
        };
        let state_shape = vec![1usize, 1, h];
        let y_shape: Vec<usize> = vec![1, o];
        let tensor = |shape: &[usize], len: usize| {
            Tensor::<f32>::from_array((shape.to_vec(), vec![0.0_f32; len]))
                .map_err(|e| session_err(e.to_string()))
        };
        // Inputs laid out in the model's input order, since `run` feeds them positionally.
        let mut by_slot = [None, None, None];
        by_slot[sig.input_slots[0]] = Some((0usize, tensor(&x_shape, f)?));
        by_slot[sig.input_slots[1]] = Some((1, tensor(&state_shape, h)?));
        by_slot[sig.input_slots[2]] = Some((2, tensor(&state_shape, h)?));
        let mut slots = [0usize; 3];
        let mut tensors = Vec::with_capacity(3);
        for (pos, entry) in by_slot.into_iter().enumerate() {
            let (role, t) =
                entry.ok_or_else(|| session_err("input slots are not a permutation".into()))?;
            slots[role] = pos;
            tensors.push(t);
        }
        let inputs: [Tensor<f32>; 3] = tensors
            .try_into()
            .map_err(|_| session_err("expected three input tensors".into()))?;

        let selector = OutputSelector::no_default()
            .with(OUTPUT_NAMES[0])
            .with(OUTPUT_NAMES[1])
            .with(OUTPUT_NAMES[2])
            .preallocate(OUTPUT_NAMES[0], tensor(&y_shape, o)?)
            .preallocate(OUTPUT_NAMES[1], tensor(&state_shape, h)?)
            .preallocate(OUTPUT_NAMES[2], tensor(&state_shape, h)?);
        let run_options = RunOptions::new()
            .map_err(|e| session_err(e.to_string()))?
            .with_outputs(selector);

        let mut model = LstmModel {
            path: path.to_path_buf(),
            session,
            run_options,
            inputs,
            slots,
            features,
            sig,
        };
        // The probe doubles as a warm-up: ONNX Runtime sizes its arena on the first run.
        let mut probe = model.new_state();
        let mut out = vec![0.0_f32; o];
        let zeros = vec![0.0_f32; f];
        match model.step(&mut probe, &zeros, &mut out) {
            Ok(()) => Ok(model),
            Err(LstmError::NonFiniteOutput { output }) => Err(LstmError::NonFiniteModel {
                path: path.to_path_buf(),
                detail: format!(
                    "a probe step from zero input and zero state gives a non-finite `{output}`"
                ),
            }),
            Err(LstmError::Run(message)) => Err(session_err(message)),
            Err(e) => Err(e),
        }
    }

    /// The model file this was loaded from.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The input feature names from the `tickpipe.features` metadata, in model input order;
    /// empty when the model has none (it then binds positionally, see [`bind`](Self::bind)).
    #[must_use]
    pub fn feature_names(&self) -> &[String] {
        &self.features
    }

    /// Number of input features `F`.
    #[must_use]
    pub fn n_features(&self) -> usize {
        self.sig.n_features
    }

    /// Hidden size `H`.
    #[must_use]
    pub fn hidden(&self) -> usize {
        self.sig.hidden
    }

    /// Number of outputs `O` (the length of `out` in a step).
    #[must_use]
    pub fn n_outputs(&self) -> usize {
        self.sig.n_outputs
    }

    /// Maps model input `i` to a column of the caller's rows: `result[i]` is the index in
    /// `schema` of the feature the model reads at position `i`. Matching is by exact name.
    ///
    /// A model without `tickpipe.features` metadata binds **positionally**: model input `i`
    /// reads column `i`, so the schema must have at least `F` columns, in the order the model
    /// was trained on.
    ///
    /// # Errors
    /// [`LstmError::MissingFeatures`] listing every model feature absent from `schema`;
    /// [`LstmError::SchemaTooShort`] for a positional model and a short schema.
    pub fn bind(&self, schema: &[&str]) -> Result<Vec<usize>, LstmError> {
        if self.features.is_empty() {
            if schema.len() < self.sig.n_features {
                return Err(LstmError::SchemaTooShort {
                    needed: self.sig.n_features,
                    got: schema.len(),
                });
            }
            return Ok((0..self.sig.n_features).collect());
        }
        let mut binding = Vec::with_capacity(self.features.len());
        let mut missing = Vec::new();
        for name in &self.features {
            match schema.iter().position(|s| s == name) {
                Some(i) => binding.push(i),
                None => missing.push(name.clone()),
            }
        }
        if missing.is_empty() {
            Ok(binding)
        } else {
            Err(LstmError::MissingFeatures { missing })
        }
    }

    /// A zero state for one instrument.
    #[must_use]
    pub fn new_state(&self) -> LstmState {
        LstmState::zeros(self.sig.hidden)
    }

    /// One step: `x` holds the `F` features in model input order; on success the forecast is
    /// written to `out` (`O` values) and `state` advances. Allocates nothing on tickpipe's side.
    ///
    /// # Errors
    /// [`LstmError::Length`] for a wrong `x`, `out` or state size; [`LstmError::NonFiniteInput`]
    /// for a NaN/∞ feature; [`LstmError::Run`] if ONNX Runtime fails;
    /// [`LstmError::NonFiniteOutput`]. On every error `state` and `out` are unchanged.
    pub fn step(
        &mut self,
        state: &mut LstmState,
        x: &[f32],
        out: &mut [f32],
    ) -> Result<(), LstmError> {
        self.check_lengths(state, x.len(), out.len())?;
        let xt = self.inputs[self.slots[0]].extract_tensor_mut().1;
        for (i, (dst, &v)) in xt.iter_mut().zip(x).enumerate() {
            if !v.is_finite() {
                return Err(self.non_finite_input(i, v));
            }
            *dst = v;
        }
        self.run(state, out)
    }

    /// One step reading the features straight from a caller row through a [`bind`](Self::bind)
    /// result: model input `i` is `row[binding[i]]`. Same contract as [`step`](Self::step).
    ///
    /// # Errors
    /// As [`step`](Self::step), plus [`LstmError::Length`] for a binding of the wrong length and
    /// [`LstmError::BindingOutOfRange`].
    pub fn step_row(
        &mut self,
        state: &mut LstmState,
        row: &[f32],
        binding: &[usize],
        out: &mut [f32],
    ) -> Result<(), LstmError> {
        self.check_lengths(state, binding.len(), out.len())?;
        let xt = self.inputs[self.slots[0]].extract_tensor_mut().1;
        for (i, (dst, &col)) in xt.iter_mut().zip(binding).enumerate() {
            let v = *row.get(col).ok_or(LstmError::BindingOutOfRange {
                index: col,
                len: row.len(),
            })?;
            if !v.is_finite() {
                return Err(self.non_finite_input(i, v));
            }
            *dst = v;
        }
        self.run(state, out)
    }

    fn check_lengths(
        &self,
        state: &LstmState,
        x_len: usize,
        out_len: usize,
    ) -> Result<(), LstmError> {
        let check = |what, got, expected| {
            if got == expected {
                Ok(())
            } else {
                Err(LstmError::Length {
                    what,
                    got,
                    expected,
                })
            }
        };
        check("x", x_len, self.sig.n_features)?;
        check("out", out_len, self.sig.n_outputs)?;
        check("state.h", state.h.len(), self.sig.hidden)?;
        check("state.c", state.c.len(), self.sig.hidden)
    }

    #[cold]
    fn non_finite_input(&self, index: usize, value: f32) -> LstmError {
        LstmError::NonFiniteInput {
            index,
            name: self
                .features
                .get(index)
                .cloned()
                .unwrap_or_else(|| format!("x[{index}]")),
            value,
        }
    }

    /// Copies the state in, runs, checks the outputs and only then commits them.
    fn run(&mut self, state: &mut LstmState, out: &mut [f32]) -> Result<(), LstmError> {
        self.inputs[self.slots[1]]
            .extract_tensor_mut()
            .1
            .copy_from_slice(&state.h);
        self.inputs[self.slots[2]]
            .extract_tensor_mut()
            .1
            .copy_from_slice(&state.c);
        let [a, b, c] = &self.inputs;
        let outputs = self
            .session
            .run_with_options(ort::inputs![a, b, c], &self.run_options)
            .map_err(|e| LstmError::Run(e.to_string()))?;
        if outputs.len() != OUTPUT_NAMES.len() {
            return Err(LstmError::Run(format!(
                "{} outputs returned, expected 3",
                outputs.len()
            )));
        }
        let mut views: [&[f32]; 3] = [&[], &[], &[]];
        for (i, (view, name)) in views.iter_mut().zip(OUTPUT_NAMES).enumerate() {
            let data = outputs[i]
                .try_extract_tensor::<f32>()
                .map_err(|e| LstmError::Run(e.to_string()))?
                .1;
            if data.iter().any(|v| !v.is_finite()) {
                return Err(LstmError::NonFiniteOutput { output: name });
            }
            *view = data;
        }
        let [y, h, c] = views;
        if y.len() != out.len() || h.len() != state.h.len() || c.len() != state.c.len() {
            return Err(LstmError::Run(format!(
                "output sizes y {}, h_out {}, c_out {} differ from the signature",
                y.len(),
                h.len(),
                c.len()
            )));
        }
        out.copy_from_slice(y);
        state.h.copy_from_slice(h);
        state.c.copy_from_slice(c);
        state.steps += 1;
        Ok(())
    }
}
