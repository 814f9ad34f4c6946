//! The model registry on a copy of the example registry (`models/registry/`): every shipped
//! version validates, promote and rollback move `active.json` as documented, and each broken
//! version is refused with the rule that catches it while `active.json` stays byte-identical.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tickpipe_models::registry::{
    self, ActiveRecord, Expected, LoadedModel, ModelKind, RegisterSpec, Registry, RegistryError,
    Rule, SchemaRef, TrainingRange,
};

/// The pipeline's `tickpipe.features` v1 names, in order (the models crate cannot see the
/// pipeline crate; the CLI tests use the pipeline's own list).
const FEATURES: [&str; 24] = [
    "mid",
    "spread_ticks",
    "spread_bps",
    "microprice",
    "depth_imbalance_l1",
    "depth_imbalance_l2",
    "depth_imbalance_l3",
    "depth_imbalance_l4",
    "depth_imbalance_l5",
    "ofi_100ev",
    "ofi_1s",
    "ofi_10s",
    "last_trade_sign",
    "signed_volume_1s",
    "signed_volume_10s",
    "rv_1s",
    "rv_10s",
    "rv_60s",
    "log_return_1s",
    "log_return_10s",
    "log_return_60s",
    "vwap_dev_60s_bps",
    "event_rate_1s",
    "trade_rate_1s",
];
const BARS: [&str; 4] = [
    "bar_log_return",
    "bar_log_range",
    "bar_log_volume",
    "bar_log_trades",
];

fn features() -> Expected<'static> {
    Expected {
        schema_name: "tickpipe.features",
        schema_version: 1,
        schema: &FEATURES,
    }
}

fn bars() -> Expected<'static> {
    Expected {
        schema_name: "tickpipe.bars",
        schema_version: 1,
        schema: &BARS,
    }
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// A scratch copy of the example registry.
fn scratch() -> (tempfile::TempDir, Registry) {
    let t = tempfile::tempdir().unwrap();
    copy_dir(&repo("registry"), t.path());
    let r = Registry::open(t.path()).unwrap();
    (t, r)
}

fn active_bytes(r: &Registry, name: &str) -> Vec<u8> {
    fs::read(r.root().join(name).join("active.json")).unwrap()
}

fn active_json(r: &Registry, name: &str) -> Value {
    serde_json::from_slice(&active_bytes(r, name)).unwrap()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap()
}

fn write_json(p: &Path, v: &Value) {
    fs::write(p, serde_json::to_vec_pretty(v).unwrap()).unwrap()
}

/// Edits a version's manifest.
fn edit_manifest(r: &Registry, name: &str, version: &str, f: impl FnOnce(&mut Value)) {
    let p = r.version_dir(name, version).join("manifest.json");
    let mut m = read_json(&p);
    f(&mut m);
    write_json(&p, &m);
}

/// Recomputes every checksum in a version's manifest after a deliberate edit, so that a later
/// rule is the one under test.
fn reseal(r: &Registry, name: &str, version: &str) {
    let dir = r.version_dir(name, version);
    edit_manifest(r, name, version, |m| {
        let files = m["files"].as_object_mut().unwrap();
        for (k, v) in files.iter_mut() {
            *v = Value::String(registry::sha256_hex(&fs::read(dir.join(k)).unwrap()));
        }
    });
}

/// Edits a version's goldens and reseals it.
fn edit_goldens(r: &Registry, name: &str, version: &str, f: impl FnOnce(&mut Value)) {
    let p = r.version_dir(name, version).join("goldens.json");
    let mut g = read_json(&p);
    f(&mut g);
    write_json(&p, &g);
    reseal(r, name, version);
}

/// Asserts that promoting `version` fails with `rule` and leaves `active.json` untouched.
fn refused(r: &Registry, name: &str, version: &str, expected: &Expected<'_>, rule: Rule) -> String {
    let before = active_bytes(r, name);
    let err = r.promote(name, version, expected).unwrap_err();
    assert_eq!(err.rule(), Some(rule), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("rule {rule}")), "{msg}");
    assert_eq!(active_bytes(r, name), before, "active.json changed");
    msg
}

#[test]
fn every_example_version_validates_and_loads_its_kind() {
    let (_t, r) = scratch();
    for (name, version, exp, kind) in [
        ("score", "v1", features(), ModelKind::Xgboost),
        ("score", "v2", features(), ModelKind::Xgboost),
        ("regime", "v1", features(), ModelKind::Sjm),
        ("forecast", "v1", bars(), ModelKind::OnnxLstm),
    ] {
        let v = r.validate(name, version, &exp).unwrap();
        assert_eq!(v.model.kind(), kind);
        assert_eq!(v.manifest.kind, kind);
        assert!(v.report.rows >= 32);
        assert!(v.report.max_abs_diff <= v.manifest.tolerance);
        // The binding maps each model feature to its schema column by name.
        for (i, &c) in v.binding.iter().enumerate() {
            assert_eq!(exp.schema[c], v.model.feature_names()[i]);
        }
        match (&v.model, kind) {
            (LoadedModel::Xgboost(m), ModelKind::Xgboost) => assert_eq!(m.n_outputs(), 1),
            (LoadedModel::Sjm(m), ModelKind::Sjm) => assert_eq!(m.n_states(), 3),
            (LoadedModel::Lstm(m), ModelKind::OnnxLstm) => assert_eq!(m.n_features(), 4),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn list_and_show() {
    let (_t, r) = scratch();
    let l = r.list().unwrap();
    let names: Vec<_> = l.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["forecast", "regime", "score"]);
    let score = &l[2];
    assert_eq!(score.versions, ["v1", "v2"]);
    assert_eq!(score.active.as_deref(), Some("v2"));
    assert_eq!(score.previous.as_deref(), Some("v1"));
    let d = r.show("score").unwrap();
    assert_eq!(d.manifests.len(), 2);
    let m1 = d.manifests[0].1.as_ref().unwrap();
    assert_eq!(m1.artifact, "score.json");
    assert_eq!(m1.schema.name, "tickpipe.features");
    assert!(matches!(
        r.show("nope").unwrap_err(),
        RegistryError::UnknownModel(_)
    ));
    assert!(matches!(
        r.validate("score", "v7", &features()).unwrap_err(),
        RegistryError::UnknownVersion { .. }
    ));
    assert!(matches!(
        r.validate("../score", "v1", &features()).unwrap_err(),
        RegistryError::BadName { .. }
    ));
}

#[test]
fn promote_and_rollback_round_trip() {
    let (_t, r) = scratch();
    fs::remove_file(r.root().join("score/active.json")).unwrap();
    assert_eq!(r.active("score").unwrap(), None);
    assert!(matches!(
        r.rollback("score", &features()).unwrap_err(),
        RegistryError::NoActive(_)
    ));

    r.promote("score", "v1", &features()).unwrap();
    let a = active_json(&r, "score");
    assert_eq!(a["format"], "tickpipe.model-active");
    assert_eq!(a["active"], "v1");
    assert_eq!(a["previous"], Value::Null);
    assert!(matches!(
        r.rollback("score", &features()).unwrap_err(),
        RegistryError::NoPrevious(_)
    ));

    let v = r.promote("score", "v2", &features()).unwrap();
    assert_eq!(v.manifest.model_version, "v2");
    let a = active_json(&r, "score");
    assert_eq!(
        (a["active"].as_str(), a["previous"].as_str()),
        (Some("v2"), Some("v1"))
    );

    // Re-promoting the active version changes nothing.
    let before = active_bytes(&r, "score");
    r.promote("score", "v2", &features()).unwrap();
    assert_eq!(active_bytes(&r, "score"), before);

    let v = r.rollback("score", &features()).unwrap();
    assert_eq!(v.manifest.model_version, "v1");
    let a = active_json(&r, "score");
    assert_eq!(
        (a["active"].as_str(), a["previous"].as_str()),
        (Some("v1"), Some("v2"))
    );
    assert_eq!(
        r.active("score").unwrap(),
        Some(ActiveRecord {
            format: "tickpipe.model-active".into(),
            version: 1,
            active: "v1".into(),
            previous: Some("v2".into()),
        })
    );

    // A second rollback undoes the first.
    r.rollback("score", &features()).unwrap();
    let a = active_json(&r, "score");
    assert_eq!(
        (a["active"].as_str(), a["previous"].as_str()),
        (Some("v2"), Some("v1"))
    );

    // No temporary file is left behind.
    let leftovers: Vec<_> = fs::read_dir(r.root().join("score"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn rollback_to_a_broken_version_is_refused() {
    let (_t, r) = scratch();
    let p = r.version_dir("score", "v1").join("score.json");
    let mut b = fs::read(&p).unwrap();
    b[100] ^= 0x01;
    fs::write(&p, b).unwrap();
    let before = active_bytes(&r, "score");
    let err = r.rollback("score", &features()).unwrap_err();
    assert_eq!(err.rule(), Some(Rule::Checksum), "{err}");
    assert_eq!(active_bytes(&r, "score"), before);
}

#[test]
fn corrupt_artifact_is_a_checksum_failure() {
    let (_t, r) = scratch();
    let p = r.version_dir("score", "v1").join("score.json");
    let mut b = fs::read(&p).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x20;
    fs::write(&p, b).unwrap();
    let msg = refused(&r, "score", "v1", &features(), Rule::Checksum);
    assert!(msg.contains("score.json"), "{msg}");
}

#[test]
fn corrupt_sjm_file_in_artifact_directory_is_a_checksum_failure() {
    let (_t, r) = scratch();
    let p = r.version_dir("regime", "v1").join("sjm/model.json");
    let text = fs::read_to_string(&p).unwrap().replace("50.0", "51.0");
    fs::write(&p, text).unwrap();
    fs::remove_file(r.root().join("regime/active.json")).unwrap();
    let err = r.promote("regime", "v1", &features()).unwrap_err();
    assert_eq!(err.rule(), Some(Rule::Checksum), "{err}");
    assert!(!r.root().join("regime/active.json").exists());
}

#[test]
fn wrong_checksum_in_manifest_is_a_checksum_failure() {
    let (_t, r) = scratch();
    edit_manifest(&r, "score", "v1", |m| {
        m["files"]["goldens.json"] = Value::String("0".repeat(64));
    });
    let msg = refused(&r, "score", "v1", &features(), Rule::Checksum);
    assert!(msg.contains("goldens.json"), "{msg}");
}

#[test]
fn unlisted_or_missing_files_are_checksum_failures() {
    let (_t, r) = scratch();
    fs::write(r.version_dir("score", "v1").join("extra.bin"), b"x").unwrap();
    let msg = refused(&r, "score", "v1", &features(), Rule::Checksum);
    assert!(msg.contains("extra.bin"), "{msg}");

    let (_t, r) = scratch();
    edit_manifest(&r, "score", "v1", |m| {
        m["files"]["ghost.bin"] = Value::String("a".repeat(64));
    });
    let msg = refused(&r, "score", "v1", &features(), Rule::Checksum);
    assert!(msg.contains("ghost.bin"), "{msg}");
}

#[test]
fn schema_mismatches_are_schema_failures() {
    // Wrong schema version expected by the caller.
    let (_t, r) = scratch();
    let v2 = Expected {
        schema_version: 2,
        ..features()
    };
    refused(&r, "score", "v1", &v2, Rule::Schema);

    // Wrong schema name in the manifest (the manifest is not among the checksummed files).
    edit_manifest(&r, "score", "v1", |m| {
        m["schema"]["name"] = "tickpipe.bars".into()
    });
    refused(&r, "score", "v1", &features(), Rule::Schema);

    // A model feature the caller's schema lacks.
    let (_t, r) = scratch();
    let short: Vec<&str> = FEATURES
        .iter()
        .copied()
        .filter(|n| *n != "ofi_1s")
        .collect();
    let exp = Expected {
        schema: &short,
        ..features()
    };
    let msg = refused(&r, "score", "v1", &exp, Rule::Schema);
    assert!(msg.contains("ofi_1s"), "{msg}");

    // The LSTM against the feature schema.
    refused(&r, "forecast", "v1", &features(), Rule::Schema);

    // A manifest whose feature list is not the model's.
    let (_t, r) = scratch();
    edit_manifest(&r, "score", "v1", |m| m["features"][0] = "mid".into());
    let msg = refused(&r, "score", "v1", &features(), Rule::Schema);
    assert!(msg.contains("differ"), "{msg}");
}

#[test]
fn manifest_defects_are_manifest_failures() {
    let (_t, r) = scratch();
    let p = r.version_dir("score", "v1").join("manifest.json");
    let full = fs::read(&p).unwrap();
    fs::write(&p, &full[..full.len() / 2]).unwrap();
    refused(&r, "score", "v1", &features(), Rule::Manifest);
    fs::remove_file(&p).unwrap();
    refused(&r, "score", "v1", &features(), Rule::Manifest);

    type Edit = fn(&mut Value);
    let edits: [(&str, Edit); 9] = [
        ("missing field", |m| {
            m.as_object_mut().unwrap().remove("latency_budget_us");
        }),
        ("unknown field", |m| m["extra"] = 1.into()),
        ("format version", |m| m["version"] = 2.into()),
        ("format", |m| m["format"] = "other".into()),
        ("name", |m| m["name"] = "regime".into()),
        ("artifact outside", |m| {
            m["artifact"] = "../v2/binary_logistic_v2.json".into()
        }),
        ("kind", |m| m["kind"] = "lightgbm".into()),
        ("created", |m| m["created"] = "yesterday".into()),
        ("tolerance", |m| m["tolerance"] = (-1.0).into()),
    ];
    for (what, edit) in edits {
        let (_t, r) = scratch();
        edit_manifest(&r, "score", "v1", edit);
        let err = r.promote("score", "v1", &features()).unwrap_err();
        assert_eq!(err.rule(), Some(Rule::Manifest), "{what}: {err}");
    }
}

#[test]
fn golden_defects_are_goldens_failures() {
    // A NaN (null) among the recorded outputs.
    let (_t, r) = scratch();
    edit_goldens(&r, "score", "v1", |g| g["outputs"][3][0] = Value::Null);
    let msg = refused(&r, "score", "v1", &features(), Rule::Goldens);
    assert!(msg.contains("row 3"), "{msg}");

    // A recorded output off by more than the tolerance (1e-6), per kind.
    let (_t, r) = scratch();
    edit_goldens(&r, "score", "v1", |g| {
        let x = g["outputs"][5][0].as_f64().unwrap();
        g["outputs"][5][0] = (x + 1e-4).into();
    });
    let msg = refused(&r, "score", "v1", &features(), Rule::Goldens);
    assert!(msg.contains("row 5"), "{msg}");

    let (_t, r) = scratch();
    edit_goldens(&r, "forecast", "v1", |g| {
        let x = g["outputs"][10][0].as_f64().unwrap();
        g["outputs"][10][0] = (x + 1e-3).into();
    });
    refused(&r, "forecast", "v1", &bars(), Rule::Goldens);

    // A jump-model label must match exactly.
    let (_t, r) = scratch();
    edit_goldens(&r, "regime", "v1", |g| {
        let l = g["outputs"][20][0].as_f64().unwrap();
        g["outputs"][20][0] = ((l + 1.0) % 3.0).into();
    });
    refused(&r, "regime", "v1", &features(), Rule::Goldens);

    // Inputs that no longer give the recorded outputs (the model is what is being checked).
    let (_t, r) = scratch();
    edit_goldens(&r, "score", "v2", |g| {
        for row in g["inputs"].as_array_mut().unwrap() {
            row[0] = 1e6.into();
            row[2] = (-1e6).into();
        }
    });
    refused(&r, "score", "v2", &features(), Rule::Goldens);

    // A missing LSTM input (the LSTM refuses non-finite steps, so its goldens must not hold
    // any).
    let (_t, r) = scratch();
    edit_goldens(&r, "forecast", "v1", |g| g["inputs"][4][1] = Value::Null);
    let msg = refused(&r, "forecast", "v1", &bars(), Rule::Goldens);
    assert!(msg.contains("row 4"), "{msg}");

    // Shape: golden columns not the model's features, or a short output row.
    let (_t, r) = scratch();
    edit_goldens(&r, "score", "v1", |g| g["features"][0] = "mid".into());
    refused(&r, "score", "v1", &features(), Rule::Goldens);
    let (_t, r) = scratch();
    edit_goldens(&r, "score", "v1", |g| {
        g["outputs"][0] = Value::Array(vec![]);
    });
    refused(&r, "score", "v1", &features(), Rule::Goldens);
}

#[test]
fn artifact_that_does_not_load_is_a_load_failure() {
    let (_t, r) = scratch();
    let p = r.version_dir("score", "v1").join("score.json");
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..b.len() / 3]).unwrap();
    reseal(&r, "score", "v1");
    refused(&r, "score", "v1", &features(), Rule::Load);

    let (_t, r) = scratch();
    let p = r.version_dir("forecast", "v1").join("lstm_h32.onnx");
    fs::write(&p, b"not an onnx model").unwrap();
    reseal(&r, "forecast", "v1");
    refused(&r, "forecast", "v1", &bars(), Rule::Load);
}

#[test]
fn zero_latency_budget_is_a_latency_failure() {
    let (_t, r) = scratch();
    edit_manifest(&r, "score", "v1", |m| m["latency_budget_us"] = 0.0.into());
    let msg = refused(&r, "score", "v1", &features(), Rule::Latency);
    assert!(msg.contains("budget 0"), "{msg}");
    let (_t, r) = scratch();
    edit_manifest(&r, "forecast", "v1", |m| {
        m["latency_budget_us"] = 0.0.into()
    });
    refused(&r, "forecast", "v1", &bars(), Rule::Latency);
}

fn golden_rows(n: usize) -> (Vec<String>, Vec<Vec<f64>>) {
    // Columns in an order unlike the model's, plus one the model ignores.
    let cols: Vec<String> = FEATURES.iter().rev().map(|s| s.to_string()).collect();
    let rows = (0..n)
        .map(|i| {
            (0..cols.len())
                .map(|c| ((i * 31 + c * 7) % 17) as f64 / 8.0 - 1.0)
                .collect()
        })
        .collect();
    (cols, rows)
}

fn spec<'a>(
    version: &'a str,
    artifact: &'a Path,
    cols: &'a [String],
    rows: &'a [Vec<f64>],
) -> RegisterSpec<'a> {
    RegisterSpec {
        name: "scratch",
        version,
        kind: ModelKind::Xgboost,
        artifact,
        schema: SchemaRef {
            name: "tickpipe.features".into(),
            version: 1,
        },
        golden_columns: cols,
        golden_rows: rows,
        training: TrainingRange {
            start: "synthetic".into(),
            end: "synthetic".into(),
        },
        metrics: [("auc".to_string(), 0.5)].into_iter().collect(),
        created: registry::now_rfc3339(),
        tolerance: 1e-6,
        latency_budget_us: 1e6,
    }
}

#[test]
fn register_then_promote_and_refusals() {
    let t = tempfile::tempdir().unwrap();
    let artifact = repo("fixtures/xgb/reg_squarederror.json");
    let (cols, rows) = golden_rows(20);
    let m = registry::register(t.path(), &spec("v1", &artifact, &cols, &rows)).unwrap();
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.metrics["auc"], 0.5);
    let r = Registry::open(t.path()).unwrap();
    let v = r.promote("scratch", "v1", &features()).unwrap();
    assert_eq!(v.report.rows, 20);
    assert_eq!(v.report.max_abs_diff, 0.0);

    // The recorded goldens are the model's outputs on the rows in model order, picked by name.
    let g: Value = read_json(&r.version_dir("scratch", "v1").join("goldens.json"));
    let xgb = tickpipe_models::xgb::XgbModel::load(&artifact).unwrap();
    let names: Vec<&str> = cols.iter().map(String::as_str).collect();
    let bind = xgb.bind(&names).unwrap();
    let mut y = [0.0f32];
    xgb.predict_row(&rows[7], &bind, &mut y);
    assert_eq!(g["outputs"][7][0].as_f64().unwrap(), f64::from(y[0]));

    // Existing version, missing golden column, unloadable artifact: nothing is written.
    let err = registry::register(t.path(), &spec("v1", &artifact, &cols, &rows)).unwrap_err();
    assert!(matches!(err, RegistryError::Register { .. }), "{err}");
    let short: Vec<String> = cols.iter().filter(|c| *c != "ofi_1s").cloned().collect();
    let err = registry::register(t.path(), &spec("v2", &artifact, &short, &rows)).unwrap_err();
    assert!(err.to_string().contains("ofi_1s"), "{err}");
    assert!(!r.version_dir("scratch", "v2").exists());
    let bad = repo("fixtures/xgb/refuse_dart.json");
    registry::register(t.path(), &spec("v3", &bad, &cols, &rows)).unwrap_err();
    assert!(!r.version_dir("scratch", "v3").exists());
}

#[test]
fn model_with_non_finite_outputs_is_a_non_finite_failure() {
    let t = tempfile::tempdir().unwrap();
    let artifact = repo("fixtures/xgb/reg_squarederror.json");
    let (cols, rows) = golden_rows(8);
    registry::register(t.path(), &spec("v1", &artifact, &cols, &rows)).unwrap();
    let r = Registry::open(t.path()).unwrap();
    r.promote("scratch", "v1", &features()).unwrap();

    // Every leaf becomes 3e38 (finite, so the model loads); eight trees overflow f32 to +inf.
    let p = r.version_dir("scratch", "v1").join("reg_squarederror.json");
    let mut model = read_json(&p);
    for tree in model["learner"]["gradient_booster"]["model"]["trees"]
        .as_array_mut()
        .unwrap()
    {
        let left = tree["left_children"].clone();
        for (i, l) in left.as_array().unwrap().iter().enumerate() {
            if l.as_i64() == Some(-1) {
                tree["split_conditions"][i] = 3e38.into();
                tree["base_weights"][i] = 3e38.into();
            }
        }
    }
    write_json(&p, &model);
    reseal(&r, "scratch", "v1");
    let msg = refused(&r, "scratch", "v1", &features(), Rule::NonFinite);
    assert!(msg.contains("inf"), "{msg}");
}

#[test]
fn forecast_goldens_agree_with_onnxruntime_python() {
    // The forecast goldens are the first 32 steps of instrument 0 of the LSTM parity file, whose
    // `y` column onnxruntime (Python) produced.
    let (_t, r) = scratch();
    let g = read_json(&r.version_dir("forecast", "v1").join("goldens.json"));
    let text = fs::read_to_string(repo("fixtures/lstm/lstm_h32_golden.csv")).unwrap();
    let reference: Vec<Vec<f64>> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .filter(|v: &Vec<f64>| v[0] == 0.0)
        .take(32)
        .collect();
    let outputs = g["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), reference.len());
    for (o, want) in outputs.iter().zip(&reference) {
        let y = o[0].as_f64().unwrap();
        assert!((y - want[6]).abs() <= 1e-5, "{y} vs {}", want[6]);
    }
}
