//! Bad, damaged and unsupported models are refused with a typed error that says what is
//! wrong — never a panic. Damaged models are made by editing a good fixture (a model XGBoost
//! wrote), so each test changes exactly one thing.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tickpipe_models::xgb::{XgbError, XgbModel};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/xgb")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap()
}

fn good() -> Value {
    serde_json::from_slice(&read("reg_squarederror.json")).unwrap()
}

/// A placeholder that serialises as a plain number and is then swapped for a token JSON
/// (and serde_json) cannot hold, like `NaN`.
const MARK: f64 = 123_456.75;

fn load(doc: &Value) -> Result<XgbModel, XgbError> {
    XgbModel::from_json(doc.to_string().as_bytes())
}

fn load_with_token(doc: &Value, token: &str) -> Result<XgbModel, XgbError> {
    let text = doc.to_string().replace("123456.75", token);
    XgbModel::from_json(text.as_bytes())
}

fn tree0(doc: &mut Value) -> &mut Value {
    &mut doc["learner"]["gradient_booster"]["model"]["trees"][0]
}

/// First leaf and first internal node of tree 0 below the root.
fn leaf_and_inner(doc: &Value) -> (usize, usize) {
    let left = doc["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"]
        .as_array()
        .unwrap();
    let leaf = left.iter().position(|v| v == -1).unwrap();
    let inner = (1..left.len()).find(|&i| left[i] != -1).unwrap();
    (leaf, inner)
}

#[track_caller]
fn expect_tree_error(r: Result<XgbModel, XgbError>, tree: usize, node: Option<usize>, words: &str) {
    match r {
        Err(e @ XgbError::InvalidTree { .. }) => {
            let XgbError::InvalidTree {
                tree: t, node: n, ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!((*t, *n), (tree, node), "{e}");
            assert!(e.to_string().contains(words), "{e}");
        }
        other => panic!("expected InvalidTree, got {other:?}"),
    }
}

#[test]
fn the_unedited_fixture_loads() {
    load(&good()).unwrap();
}

#[test]
fn truncated_json_is_a_parse_error() {
    let bytes = read("reg_squarederror.json");
    let mut n = 0;
    for cut in (0..bytes.len()).step_by(97).chain([1, bytes.len() - 1]) {
        match XgbModel::from_json(&bytes[..cut]) {
            Err(XgbError::Parse { format: "JSON", .. }) => n += 1,
            other => panic!("prefix of {cut} bytes: {other:?}"),
        }
    }
    assert!(n > 100);
    // Through the sniffing entry point too.
    assert!(matches!(
        XgbModel::from_bytes(&bytes[..bytes.len() / 2]),
        Err(XgbError::Parse { format: "JSON", .. })
    ));
}

#[test]
fn truncated_ubjson_is_a_parse_error() {
    let bytes = read("reg_squarederror.ubj");
    let mut n = 0;
    let cuts: Vec<usize> = (1..bytes.len())
        .step_by(5)
        .chain(bytes.len() - 64..bytes.len())
        .collect();
    for &cut in &cuts {
        match XgbModel::from_ubjson(&bytes[..cut]) {
            Err(XgbError::Parse {
                format: "UBJSON", ..
            }) => n += 1,
            other => panic!("prefix of {cut} bytes: {other:?}"),
        }
    }
    assert_eq!(n, cuts.len());
    let e = XgbModel::from_bytes(&bytes[..bytes.len() / 3]).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn corrupted_ubjson_never_panics() {
    let bytes = read("binary_logistic.ubj");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..3000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut b = bytes.clone();
        for k in 0..4 {
            let i = ((x >> (k * 16)) as usize) % b.len();
            b[i] = (x >> (k * 8 + 3)) as u8;
        }
        // Any outcome but a panic is fine; most are errors, some still load.
        let _ = XgbModel::from_ubjson(&b);
    }
}

#[test]
fn unknown_objective() {
    for name in ["reg:pseudohubererror", "count:poisson", "rank:ndcg", ""] {
        let mut doc = good();
        doc["learner"]["objective"]["name"] = json!(name);
        match load(&doc) {
            Err(e @ XgbError::UnsupportedObjective { .. }) => {
                assert!(e.to_string().contains(&format!("\"{name}\"")), "{e}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let mut doc = good();
    doc["learner"]["objective"]["name"] = json!(3);
    assert!(matches!(load(&doc), Err(XgbError::Schema { .. })));
}

#[test]
fn objective_and_class_count_must_agree() {
    let mut doc = good();
    doc["learner"]["learner_model_param"]["num_class"] = json!("3");
    assert!(matches!(load(&doc), Err(XgbError::InvalidModel { .. })));
    let mut doc: Value = serde_json::from_slice(&read("multi_softprob.json")).unwrap();
    doc["learner"]["learner_model_param"]["num_class"] = json!("0");
    assert!(matches!(load(&doc), Err(XgbError::InvalidModel { .. })));
}

#[test]
fn nan_and_infinite_values() {
    let (leaf, inner) = leaf_and_inner(&good());
    for token in ["NaN", "Infinity", "-Infinity"] {
        // Split threshold at the root.
        let mut doc = good();
        tree0(&mut doc)["split_conditions"][0] = json!(MARK);
        expect_tree_error(load_with_token(&doc, token), 0, Some(0), "split condition");
        // A deeper threshold.
        let mut doc = good();
        tree0(&mut doc)["split_conditions"][inner] = json!(MARK);
        expect_tree_error(
            load_with_token(&doc, token),
            0,
            Some(inner),
            "split condition",
        );
        // A leaf value.
        let mut doc = good();
        tree0(&mut doc)["split_conditions"][leaf] = json!(MARK);
        expect_tree_error(load_with_token(&doc, token), 0, Some(leaf), "leaf value");
    }
    // base_score.
    for bad in ["[NaN]", "[inf]", "[1E39]", "[]", "[a]", "[1,2]"] {
        let mut doc = good();
        doc["learner"]["learner_model_param"]["base_score"] = json!(bad);
        match load(&doc) {
            Err(e @ XgbError::InvalidModel { .. }) => {
                assert!(e.to_string().contains("base_score"), "{e}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // A probability base_score outside [0, 1] for a logistic objective.
    let mut doc: Value = serde_json::from_slice(&read("binary_logistic.json")).unwrap();
    doc["learner"]["learner_model_param"]["base_score"] = json!("[1.5E0]");
    assert!(matches!(load(&doc), Err(XgbError::InvalidModel { .. })));
}

#[test]
fn children_out_of_range_shared_or_cyclic() {
    let (leaf, inner) = leaf_and_inner(&good());
    let n = good()["learner"]["gradient_booster"]["model"]["trees"][0]["left_children"]
        .as_array()
        .unwrap()
        .len();
    let cases: Vec<(&str, usize, i64, &str, usize)> = vec![
        ("left_children", 0, n as i64, "outside", 0),
        ("right_children", 0, 100_000, "outside", 0),
        ("left_children", 0, -5, "outside", 0),
        ("right_children", 0, -1, "outside", 0),
        // Both children of the root are the same node.
        ("right_children", 0, 1, "reached twice", 0),
        // A child pointing back at the root: a cycle.
        ("left_children", inner, 0, "reached twice", inner),
        // A leaf with a right child only.
        ("right_children", leaf, 1, "leaf with a right child", leaf),
    ];
    for (key, node, value, words, at) in cases {
        let mut doc = good();
        tree0(&mut doc)[key][node] = json!(value);
        expect_tree_error(load(&doc), 0, Some(at), words);
    }
}

#[test]
fn array_lengths_must_match_num_nodes() {
    for key in [
        "left_children",
        "right_children",
        "split_indices",
        "split_conditions",
        "default_left",
    ] {
        let mut doc = good();
        tree0(&mut doc)[key].as_array_mut().unwrap().pop();
        expect_tree_error(load(&doc), 0, None, key);
    }
    let mut doc = good();
    tree0(&mut doc)["tree_param"]["num_nodes"] = json!("0");
    expect_tree_error(load(&doc), 0, None, "num_nodes");
    let mut doc = good();
    tree0(&mut doc)["default_left"][0] = json!(2);
    expect_tree_error(load(&doc), 0, Some(0), "default_left");
}

#[test]
fn split_features_must_lie_below_num_feature() {
    // A split index equal to num_feature (8).
    let mut doc = good();
    tree0(&mut doc)["split_indices"][0] = json!(8);
    expect_tree_error(load(&doc), 0, Some(0), "num_feature");
    // num_feature lowered below the features the trees use (and the names dropped so that
    // they do not disagree first).
    let mut doc = good();
    doc["learner"]["learner_model_param"]["num_feature"] = json!("2");
    doc["learner"]["feature_names"] = json!([]);
    for t in doc["learner"]["gradient_booster"]["model"]["trees"]
        .as_array_mut()
        .unwrap()
    {
        t["tree_param"]["num_feature"] = json!("2");
    }
    match load(&doc) {
        Err(e @ XgbError::InvalidTree { .. }) => assert!(e.to_string().contains("num_feature")),
        other => panic!("{other:?}"),
    }
    // The tree's and the learner's num_feature disagree.
    let mut doc = good();
    tree0(&mut doc)["tree_param"]["num_feature"] = json!("9");
    expect_tree_error(load(&doc), 0, None, "num_feature");
    // Feature names for a different number of features, and repeated names.
    let mut doc = good();
    doc["learner"]["feature_names"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert!(matches!(load(&doc), Err(XgbError::InvalidModel { .. })));
    let mut doc = good();
    doc["learner"]["feature_names"][1] = doc["learner"]["feature_names"][0].clone();
    assert!(matches!(load(&doc), Err(XgbError::InvalidModel { .. })));
    for bad in ["0", "-1", "x", "99999999999"] {
        let mut doc = good();
        doc["learner"]["learner_model_param"]["num_feature"] = json!(bad);
        assert!(load(&doc).is_err(), "{bad}");
    }
}

#[test]
fn wrong_version_fields() {
    for v in [
        json!([1, 7, 6]),
        json!([4, 0, 0]),
        json!([3, 2]),
        json!([3, 2, 0, 1]),
        json!(["3", "2", "0"]),
        json!([3, -1, 0]),
    ] {
        let mut doc = good();
        doc["version"] = v.clone();
        match load(&doc) {
            Err(e @ XgbError::UnsupportedVersion { .. }) => {
                assert!(e.to_string().contains("version"), "{e}")
            }
            other => panic!("{v}: {other:?}"),
        }
    }
    let mut doc = good();
    doc["version"] = json!("3.2.0");
    assert!(matches!(load(&doc), Err(XgbError::Schema { .. })));
    let mut doc = good();
    doc.as_object_mut().unwrap().remove("version");
    match load(&doc) {
        Err(XgbError::Schema { path, .. }) => assert_eq!(path, "/version"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn trees_and_groups_must_be_consistent() {
    let mut doc = good();
    doc["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"] = json!("11");
    assert!(matches!(load(&doc), Err(XgbError::InvalidModel { .. })));
    let mut doc = good();
    doc["learner"]["gradient_booster"]["model"]["tree_info"]
        .as_array_mut()
        .unwrap()
        .pop();
    assert!(matches!(load(&doc), Err(XgbError::InvalidModel { .. })));
    let mut doc = good();
    doc["learner"]["gradient_booster"]["model"]["tree_info"][3] = json!(1);
    expect_tree_error(load(&doc), 3, None, "output group");
    let mut doc = good();
    doc["learner"]["gradient_booster"]["model"]
        .as_object_mut()
        .unwrap()
        .remove("trees");
    match load(&doc) {
        Err(e @ XgbError::Schema { .. }) => {
            assert!(
                e.to_string()
                    .contains("/learner/gradient_booster/model/trees"),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn categorical_dart_and_gblinear_are_refused_by_name() {
    let e = XgbModel::load(&dir().join("refuse_categorical.json")).unwrap_err();
    assert!(matches!(e, XgbError::Categorical { .. }), "{e:?}");
    assert!(e.to_string().contains("categorical"), "{e}");
    let e = XgbModel::load(&dir().join("refuse_dart.json")).unwrap_err();
    assert!(
        matches!(&e, XgbError::UnsupportedBooster { name, .. } if name == "dart"),
        "{e:?}"
    );
    assert!(e.to_string().contains("dart"), "{e}");
    let e = XgbModel::load(&dir().join("refuse_gblinear.json")).unwrap_err();
    assert!(matches!(&e, XgbError::UnsupportedBooster { name, .. } if name == "gblinear"));
    assert!(e.to_string().contains("gblinear"), "{e}");

    // A categorical split in an otherwise numerical model.
    let mut doc = good();
    tree0(&mut doc)["split_type"][0] = json!(1);
    match load(&doc) {
        Err(e @ XgbError::Categorical { .. }) => {
            assert!(e.to_string().contains("tree 0 node 0"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // A categorical feature type.
    let mut doc = good();
    let n = doc["learner"]["feature_names"].as_array().unwrap().len();
    let mut types = vec![json!("float"); n];
    types[2] = json!("c");
    doc["learner"]["feature_types"] = json!(types);
    assert!(matches!(load(&doc), Err(XgbError::Categorical { .. })));
}

#[test]
fn multi_target_and_vector_leaves_are_refused() {
    let mut doc = good();
    doc["learner"]["learner_model_param"]["num_target"] = json!("2");
    match load(&doc) {
        Err(e @ XgbError::Unsupported { .. }) => assert!(e.to_string().contains("num_target")),
        other => panic!("{other:?}"),
    }
    let mut doc = good();
    tree0(&mut doc)["tree_param"]["size_leaf_vector"] = json!("3");
    assert!(matches!(load(&doc), Err(XgbError::Unsupported { .. })));
}

#[test]
fn format_detection_and_io() {
    let e = XgbModel::from_bytes(&[0x1f, 0x8b, 8, 0]).unwrap_err();
    assert!(matches!(e, XgbError::UnknownFormat { .. }), "{e:?}");
    assert!(e.to_string().contains("gzip"));
    assert!(matches!(
        XgbModel::from_bytes(&[]),
        Err(XgbError::UnknownFormat { .. })
    ));
    assert!(matches!(
        XgbModel::load(&dir().join("no_such_model.json")),
        Err(XgbError::Io { .. })
    ));
    // JSON bytes given to the UBJSON reader and the other way round.
    assert!(matches!(
        XgbModel::from_ubjson(&read("reg_squarederror.json")),
        Err(XgbError::Parse { .. })
    ));
    assert!(matches!(
        XgbModel::from_json(&read("reg_squarederror.ubj")),
        Err(XgbError::Parse { .. })
    ));
}

#[test]
fn bind_errors() {
    let m = XgbModel::load(&dir().join("reg_squarederror.json")).unwrap();
    let names: Vec<String> = m.feature_names().to_vec();
    let mut schema: Vec<&str> = names.iter().map(String::as_str).collect();
    schema.reverse();
    let cols = m.bind(&schema).unwrap();
    for (i, &c) in cols.iter().enumerate() {
        assert_eq!(schema[c], names[i]);
    }
    let missing: Vec<&str> = schema[1..].to_vec();
    match m.bind(&missing) {
        Err(XgbError::MissingFeature { name }) => assert_eq!(name, schema[0]),
        other => panic!("{other:?}"),
    }
    let mut twice = schema.clone();
    twice.push(schema[3]);
    match m.bind(&twice) {
        Err(XgbError::AmbiguousFeature { name }) => assert_eq!(name, schema[3]),
        other => panic!("{other:?}"),
    }
    // Without names: positional, and the schema must be wide enough.
    let m = XgbModel::load(&dir().join("reg_noname.json")).unwrap();
    assert!(m.feature_names().is_empty());
    assert_eq!(m.bind(&["a"; 9]).unwrap(), (0..6).collect::<Vec<_>>());
    assert!(matches!(
        m.bind(&["a"; 5]),
        Err(XgbError::SchemaTooNarrow { needed: 6, got: 5 })
    ));
}
