//! The streaming step signature and its validation, independent of ONNX Runtime.
//!
//! A streaming LSTM step model has exactly these tensors, all `f32`:
//!
//! | name    | role   | shape                      |
//! |---------|--------|----------------------------|
//! | `x`     | input  | `[1, 1, F]` or `[1, F]`    |
//! | `h_in`  | input  | `[1, 1, H]`                |
//! | `c_in`  | input  | `[1, 1, H]`                |
//! | `y`     | output | `[1, O]`                   |
//! | `h_out` | output | `[1, 1, H]`                |
//! | `c_out` | output | `[1, 1, H]`                |
//!
//! The leading (batch and sequence) dimensions may be 1 or dynamic; tickpipe feeds 1. `F`, `H`
//! and `O` must be fixed positive sizes, and `H` must agree across the four state tensors.
//! A model whose only input is `x` `[1, T, F]` is a fixed-window sequence model; it is recognised
//! and refused (tickpipe runs the recurrence one bar at a time, carrying `h`/`c` itself).

use std::fmt;

/// Element type of a model tensor, as far as validation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElemType {
    /// 32-bit float, the only accepted type.
    F32,
    /// Any other tensor element type, by name (`f64`, `i64`, ...).
    Other(String),
    /// Not a tensor at all (a sequence or a map).
    NotTensor,
}

/// One model input or output: name, element type, declared dimensions (`-1` = dynamic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorDesc {
    /// The name in the graph.
    pub name: String,
    /// The element type.
    pub elem: ElemType,
    /// The declared shape; `-1` marks a dynamic dimension.
    pub dims: Vec<i64>,
}

/// A validated step signature: sizes, and where each role sits among the model's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSignature {
    /// Number of input features `F`.
    pub n_features: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Number of outputs `O`.
    pub n_outputs: usize,
    /// Rank of `x` (2 or 3).
    pub x_rank: usize,
    /// Rank of `y` (2).
    pub y_rank: usize,
    /// Position of `x`, `h_in`, `c_in` among the model's inputs.
    pub input_slots: [usize; 3],
}

/// What is wrong with a model's signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// A required input is absent.
    #[error("missing input `{name}` (the model's inputs are {found:?}; expected x, h_in, c_in)")]
    MissingInput {
        /// The missing name.
        name: &'static str,
        /// The names the model has.
        found: Vec<String>,
    },
    /// A required output is absent.
    #[error(
        "missing output `{name}` (the model's outputs are {found:?}; expected y, h_out, c_out)"
    )]
    MissingOutput {
        /// The missing name.
        name: &'static str,
        /// The names the model has.
        found: Vec<String>,
    },
    /// An input that tickpipe would not know how to feed.
    #[error("unexpected input `{name}`: a step model takes exactly x, h_in, c_in")]
    UnexpectedInput {
        /// The extra name.
        name: String,
    },
    /// A tensor is not `f32`.
    #[error("`{name}` has element type {found}, expected f32")]
    ElementType {
        /// The tensor.
        name: String,
        /// Its element type.
        found: String,
    },
    /// A tensor has the wrong rank or a wrong fixed dimension.
    #[error("`{name}` has shape {}, expected {expected}", Dims(found))]
    Shape {
        /// The tensor.
        name: String,
        /// Its declared dimensions.
        found: Vec<i64>,
        /// The expected form.
        expected: &'static str,
    },
    /// A size tickpipe needs to preallocate (`F`, `H`, `O`) is dynamic or zero.
    #[error(
        "`{name}` has shape {}: its last dimension must be a fixed positive size",
        Dims(found)
    )]
    DynamicSize {
        /// The tensor.
        name: String,
        /// Its declared dimensions.
        found: Vec<i64>,
    },
    /// The four state tensors disagree on `H`.
    #[error("hidden sizes disagree: h_in {h_in}, c_in {c_in}, h_out {h_out}, c_out {c_out}")]
    HiddenMismatch {
        /// Last dimension of `h_in`.
        h_in: i64,
        /// Last dimension of `c_in`.
        c_in: i64,
        /// Last dimension of `h_out`.
        h_out: i64,
        /// Last dimension of `c_out`.
        c_out: i64,
    },
    /// A fixed-window sequence model (`x` `[1, T, F]`, no state inputs): not supported.
    #[error(
        "fixed-window sequence model (x {}, no h_in/c_in) is not supported: export the LSTM as a streaming step model (x [1,1,F], h_in/c_in [1,1,H] -> y, h_out, c_out)",
        Dims(x_dims)
    )]
    SequenceModel {
        /// The declared shape of `x`.
        x_dims: Vec<i64>,
    },
}

/// Formats dimensions as `[1, 1, 4]`, dynamic ones as `?`.
struct Dims<'a>(&'a [i64]);

impl fmt::Display for Dims<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if *d < 0 {
                f.write_str("?")?;
            } else {
                write!(f, "{d}")?;
            }
        }
        f.write_str("]")
    }
}

fn find<'a>(list: &'a [TensorDesc], name: &str) -> Option<(usize, &'a TensorDesc)> {
    list.iter().enumerate().find(|(_, d)| d.name == name)
}

fn check_f32(d: &TensorDesc) -> Result<(), SignatureError> {
    match &d.elem {
        ElemType::F32 => Ok(()),
        ElemType::Other(t) => Err(SignatureError::ElementType {
            name: d.name.clone(),
            found: t.clone(),
        }),
        ElemType::NotTensor => Err(SignatureError::ElementType {
            name: d.name.clone(),
            found: "a non-tensor value".into(),
        }),
    }
}

/// Checks rank and that every leading dimension is 1 or dynamic; returns the last dimension,
/// which must be fixed and positive.
fn check_dims(
    d: &TensorDesc,
    ranks: &[usize],
    expected: &'static str,
) -> Result<usize, SignatureError> {
    let shape_err = || SignatureError::Shape {
        name: d.name.clone(),
        found: d.dims.clone(),
        expected,
    };
    if !ranks.contains(&d.dims.len()) {
        return Err(shape_err());
    }
    let (last, leading) = d.dims.split_last().ok_or_else(shape_err)?;
    if leading.iter().any(|&v| v != 1 && v >= 0) {
        return Err(shape_err());
    }
    match usize::try_from(*last) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(SignatureError::DynamicSize {
            name: d.name.clone(),
            found: d.dims.clone(),
        }),
    }
}

/// Validates a model's inputs and outputs against the streaming step signature.
///
/// # Errors
/// The first [`SignatureError`] found, inputs before outputs; element types before shapes.
pub fn validate(
    inputs: &[TensorDesc],
    outputs: &[TensorDesc],
) -> Result<StepSignature, SignatureError> {
    let names = |list: &[TensorDesc]| list.iter().map(|d| d.name.clone()).collect::<Vec<_>>();
    let has_state = inputs.iter().any(|d| d.name == "h_in" || d.name == "c_in");
    if !has_state
        && let Some((_, x)) = find(inputs, "x")
        && x.dims.len() == 3
        && x.dims[1] != 1
    {
        return Err(SignatureError::SequenceModel {
            x_dims: x.dims.clone(),
        });
    }
    let mut slots = [0usize; 3];
    let mut descs = Vec::with_capacity(3);
    for (slot, name) in ["x", "h_in", "c_in"].into_iter().enumerate() {
        let (i, d) = find(inputs, name).ok_or_else(|| SignatureError::MissingInput {
            name,
            found: names(inputs),
        })?;
        slots[slot] = i;
        descs.push(d);
    }
    if let Some(extra) = inputs
        .iter()
        .find(|d| !["x", "h_in", "c_in"].contains(&d.name.as_str()))
    {
        return Err(SignatureError::UnexpectedInput {
            name: extra.name.clone(),
        });
    }
    let mut out_descs = Vec::with_capacity(3);
    for name in ["y", "h_out", "c_out"] {
        let (_, d) = find(outputs, name).ok_or_else(|| SignatureError::MissingOutput {
            name,
            found: names(outputs),
        })?;
        out_descs.push(d);
    }
    for d in descs.iter().chain(out_descs.iter()) {
        check_f32(d)?;
    }
    let x = descs[0];
    if x.dims.len() == 3 && x.dims[1] > 1 {
        return Err(SignatureError::SequenceModel {
            x_dims: x.dims.clone(),
        });
    }
    let n_features = check_dims(x, &[2, 3], "[1, 1, F] or [1, F]")?;
    let h_in = check_dims(descs[1], &[3], "[1, 1, H]")?;
    let c_in = check_dims(descs[2], &[3], "[1, 1, H]")?;
    let n_outputs = check_dims(out_descs[0], &[2], "[1, O]")?;
    let h_out = check_dims(out_descs[1], &[3], "[1, 1, H]")?;
    let c_out = check_dims(out_descs[2], &[3], "[1, 1, H]")?;
    if h_in != c_in || h_in != h_out || h_in != c_out {
        let w = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        return Err(SignatureError::HiddenMismatch {
            h_in: w(h_in),
            c_in: w(c_in),
            h_out: w(h_out),
            c_out: w(c_out),
        });
    }
    Ok(StepSignature {
        n_features,
        hidden: h_in,
        n_outputs,
        x_rank: x.dims.len(),
        y_rank: out_descs[0].dims.len(),
        input_slots: slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dims: &[i64]) -> TensorDesc {
        TensorDesc {
            name: name.into(),
            elem: ElemType::F32,
            dims: dims.to_vec(),
        }
    }

    fn good_inputs() -> Vec<TensorDesc> {
        vec![
            t("x", &[1, 1, 4]),
            t("h_in", &[1, 1, 32]),
            t("c_in", &[1, 1, 32]),
        ]
    }

    fn good_outputs() -> Vec<TensorDesc> {
        vec![
            t("y", &[1, 1]),
            t("h_out", &[1, 1, 32]),
            t("c_out", &[1, 1, 32]),
        ]
    }

    #[test]
    fn accepts_the_step_signature_in_any_order() {
        let sig = validate(&good_inputs(), &good_outputs()).unwrap();
        assert_eq!((sig.n_features, sig.hidden, sig.n_outputs), (4, 32, 1));
        assert_eq!(sig.input_slots, [0, 1, 2]);
        let mut ins = good_inputs();
        ins.reverse();
        let mut outs = good_outputs();
        outs.rotate_left(1);
        let sig = validate(&ins, &outs).unwrap();
        assert_eq!(sig.input_slots, [2, 1, 0]);
    }

    #[test]
    fn accepts_rank_two_x_and_dynamic_leading_dims() {
        let mut ins = good_inputs();
        ins[0] = t("x", &[-1, 4]);
        ins[1] = t("h_in", &[1, -1, 32]);
        let sig = validate(&ins, &good_outputs()).unwrap();
        assert_eq!((sig.n_features, sig.x_rank), (4, 2));
    }

    #[test]
    fn refuses_missing_state_input() {
        let ins = &good_inputs()[..2];
        let err = validate(ins, &good_outputs()).unwrap_err();
        assert!(
            matches!(err, SignatureError::MissingInput { name: "c_in", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("c_in"));
    }

    #[test]
    fn refuses_missing_output_and_extra_input() {
        let err = validate(&good_inputs(), &good_outputs()[1..]).unwrap_err();
        assert!(
            matches!(err, SignatureError::MissingOutput { name: "y", .. }),
            "{err}"
        );
        let mut ins = good_inputs();
        ins.push(t("mask", &[1]));
        let err = validate(&ins, &good_outputs()).unwrap_err();
        assert_eq!(
            err,
            SignatureError::UnexpectedInput {
                name: "mask".into()
            }
        );
    }

    #[test]
    fn refuses_non_f32() {
        let mut ins = good_inputs();
        ins[0].elem = ElemType::Other("f64".into());
        let err = validate(&ins, &good_outputs()).unwrap_err();
        assert_eq!(err.to_string(), "`x` has element type f64, expected f32");
        let mut outs = good_outputs();
        outs[0].elem = ElemType::NotTensor;
        assert!(matches!(
            validate(&good_inputs(), &outs),
            Err(SignatureError::ElementType { .. })
        ));
    }

    #[test]
    fn refuses_bad_shapes() {
        let cases: [(usize, TensorDesc); 4] = [
            (0, t("x", &[2, 1, 4])),
            (0, t("x", &[4])),
            (1, t("h_in", &[1, 32])),
            (0, t("x", &[1, 1, -1])),
        ];
        for (i, d) in cases {
            let mut ins = good_inputs();
            ins[i] = d.clone();
            let err = validate(&ins, &good_outputs()).unwrap_err();
            assert!(
                matches!(
                    err,
                    SignatureError::Shape { .. } | SignatureError::DynamicSize { .. }
                ),
                "{d:?}: {err}"
            );
        }
        let mut outs = good_outputs();
        outs[0] = t("y", &[1, 1, 1]);
        let err = validate(&good_inputs(), &outs).unwrap_err();
        assert_eq!(err.to_string(), "`y` has shape [1, 1, 1], expected [1, O]");
    }

    #[test]
    fn refuses_hidden_mismatch() {
        let mut ins = good_inputs();
        ins[1] = t("h_in", &[1, 1, 16]);
        let err = validate(&ins, &good_outputs()).unwrap_err();
        assert_eq!(
            err,
            SignatureError::HiddenMismatch {
                h_in: 16,
                c_in: 32,
                h_out: 32,
                c_out: 32
            }
        );
    }

    #[test]
    fn recognises_sequence_models() {
        let ins = vec![t("x", &[1, 16, 4])];
        let outs = vec![t("y", &[1, 1])];
        let err = validate(&ins, &outs).unwrap_err();
        assert!(matches!(err, SignatureError::SequenceModel { .. }), "{err}");
        assert!(err.to_string().contains("x [1, 16, 4]"), "{err}");
        // With a dynamic window it is still a sequence model when there is no state.
        let ins = vec![t("x", &[1, -1, 4])];
        assert!(matches!(
            validate(&ins, &outs),
            Err(SignatureError::SequenceModel { .. })
        ));
        // A window with state inputs is refused too: tickpipe feeds one bar per step.
        let mut ins = good_inputs();
        ins[0] = t("x", &[1, 8, 4]);
        assert!(matches!(
            validate(&ins, &good_outputs()),
            Err(SignatureError::SequenceModel { .. })
        ));
    }
}
