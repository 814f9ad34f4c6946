//! Bad models and bad steps give typed errors, never panics, and never touch the state.

use std::path::PathBuf;

use tickpipe_models::lstm::{LstmError, LstmModel, SignatureError};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/lstm")
        .join(name)
}

fn load_err(name: &str) -> LstmError {
    match LstmModel::load(&fixture(name)) {
        Ok(m) => panic!("{name} loaded: {m:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(name), "error names the file: {msg}");
            e
        }
    }
}

#[test]
fn missing_c_in_is_refused() {
    let err = load_err("bad_missing_c_in.onnx");
    assert!(
        matches!(
            &err,
            LstmError::Signature {
                problem: SignatureError::MissingInput { name: "c_in", .. },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn f64_input_is_refused() {
    let err = load_err("bad_f64_input.onnx");
    assert!(
        matches!(&err, LstmError::Signature { problem: SignatureError::ElementType { name, found }, .. } if name == "x" && found == "f64"),
        "{err}"
    );
}

#[test]
fn h_in_width_mismatch_is_refused() {
    let err = load_err("bad_h_in_width.onnx");
    assert!(
        matches!(
            &err,
            LstmError::Signature {
                problem: SignatureError::HiddenMismatch {
                    h_in: 6,
                    c_in: 8,
                    h_out: 8,
                    c_out: 8
                },
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn fixed_window_sequence_model_is_refused() {
    let err = load_err("bad_window_model.onnx");
    assert!(
        matches!(&err, LstmError::Signature { problem: SignatureError::SequenceModel { x_dims }, .. } if x_dims == &[1, 16, 4]),
        "{err}"
    );
    assert!(err.to_string().contains("streaming step model"), "{err}");
}

#[test]
fn feature_metadata_disagreeing_with_x_is_refused() {
    let err = load_err("bad_feature_count.onnx");
    assert!(matches!(&err, LstmError::FeatureMetadata { .. }), "{err}");
    assert!(err.to_string().contains("3 names"), "{err}");
}

#[test]
fn nan_weights_are_refused() {
    let err = load_err("bad_nan_weights.onnx");
    // The NaN sits in the recurrent weights R at [0, 5, 3] of a [1, 32, 8] tensor: element 43.
    assert!(
        matches!(&err, LstmError::NonFiniteModel { detail, .. } if detail == "initializer `R` element 43 is NaN"),
        "{err}"
    );
}

#[test]
fn truncated_file_is_refused() {
    let err = load_err("bad_truncated.onnx");
    assert!(matches!(&err, LstmError::Session { .. }), "{err}");
}

#[test]
fn garbage_and_empty_files_are_refused() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("lstm-refusals-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.onnx");
    std::fs::write(&garbage, b"\x08\x07this is not a protobuf model\xff\xfe").unwrap();
    let empty = dir.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    for p in [&garbage, &empty] {
        let err = LstmModel::load(p).unwrap_err();
        assert!(
            matches!(&err, LstmError::Session { .. }),
            "{}: {err}",
            p.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_is_an_io_error() {
    let err = LstmModel::load(&fixture("no_such_model.onnx")).unwrap_err();
    assert!(matches!(&err, LstmError::Io { .. }), "{err}");
}

#[test]
fn model_without_metadata_binds_positionally() {
    let model = LstmModel::load(&fixture("no_metadata_h8.onnx")).unwrap();
    assert!(model.feature_names().is_empty());
    assert_eq!(
        (model.n_features(), model.hidden(), model.n_outputs()),
        (4, 8, 1)
    );
    assert_eq!(
        model.bind(&["a", "b", "c", "d", "e"]).unwrap(),
        vec![0, 1, 2, 3]
    );
    let err = model.bind(&["a", "b", "c"]).unwrap_err();
    assert!(
        matches!(err, LstmError::SchemaTooShort { needed: 4, got: 3 }),
        "{err}"
    );
}

fn good_model() -> LstmModel {
    LstmModel::load(&fixture("lstm_h32.onnx")).unwrap()
}

#[test]
fn bind_names_every_missing_feature() {
    let model = good_model();
    let err = model
        .bind(&["bar_log_return", "mid", "bar_log_volume"])
        .unwrap_err();
    match err {
        LstmError::MissingFeatures { missing } => {
            assert_eq!(missing, ["bar_log_range", "bar_log_trades"])
        }
        e => panic!("{e}"),
    }
}

#[test]
fn non_finite_features_are_refused_and_leave_the_state_alone() {
    let mut model = good_model();
    let mut state = model.new_state();
    let mut out = [0.0_f32];
    model
        .step(&mut state, &[0.01, -7.5, 6.2, 4.8], &mut out)
        .unwrap();
    let before = state.clone();
    let out_before = out;
    for (i, bad) in [(0, f32::NAN), (2, f32::INFINITY), (3, f32::NEG_INFINITY)] {
        let mut x = [0.02, -7.0, 6.0, 4.5];
        x[i] = bad;
        let err = model.step(&mut state, &x, &mut out).unwrap_err();
        match &err {
            LstmError::NonFiniteInput { index, name, .. } => {
                assert_eq!(*index, i);
                assert_eq!(name, &model.feature_names()[i]);
            }
            e => panic!("{e}"),
        }
        assert_eq!(state, before);
        assert_eq!(out, out_before);
    }
    // Through a binding too.
    let binding = model
        .bind(&[
            "bar_log_return",
            "bar_log_range",
            "bar_log_volume",
            "bar_log_trades",
        ])
        .unwrap();
    let err = model
        .step_row(&mut state, &[0.0, f32::NAN, 6.0, 4.0], &binding, &mut out)
        .unwrap_err();
    assert!(
        matches!(err, LstmError::NonFiniteInput { index: 1, .. }),
        "{err}"
    );
    assert_eq!(state, before);
    // And the model still steps normally afterwards, from the untouched state.
    let mut fresh = before.clone();
    model
        .step(&mut state, &[0.02, -7.0, 6.0, 4.5], &mut out)
        .unwrap();
    let mut out2 = [0.0_f32];
    model
        .step(&mut fresh, &[0.02, -7.0, 6.0, 4.5], &mut out2)
        .unwrap();
    assert_eq!(out, out2);
    assert_eq!(state, fresh);
}

#[test]
fn wrong_lengths_are_refused() {
    let mut model = good_model();
    let mut state = model.new_state();
    let mut out = [0.0_f32];
    let err = model.step(&mut state, &[0.0; 3], &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            LstmError::Length {
                what: "x",
                got: 3,
                expected: 4
            }
        ),
        "{err}"
    );
    let err = model
        .step(&mut state, &[0.0; 4], &mut [0.0; 2])
        .unwrap_err();
    assert!(
        matches!(
            err,
            LstmError::Length {
                what: "out",
                got: 2,
                expected: 1
            }
        ),
        "{err}"
    );
    let mut other = tickpipe_models::lstm::LstmState::zeros(8);
    let err = model.step(&mut other, &[0.0; 4], &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            LstmError::Length {
                what: "state.h",
                got: 8,
                expected: 32
            }
        ),
        "{err}"
    );
    let err = model
        .step_row(&mut state, &[0.0; 4], &[0, 1, 2, 9], &mut out)
        .unwrap_err();
    assert!(
        matches!(err, LstmError::BindingOutOfRange { index: 9, len: 4 }),
        "{err}"
    );
    let err = model
        .step_row(&mut state, &[0.0; 4], &[0, 1], &mut out)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LstmError::Length {
                what: "x",
                got: 2,
                expected: 4
            }
        ),
        "{err}"
    );
    assert_eq!(state, model.new_state());
}
