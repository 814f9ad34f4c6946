//! The jump model loader: `SjmModel::load` on a directory whose `model.json` is the input, then
//! the loaded model stepped online and run in batch over a few rows (missing values, zeros,
//! extremes), and its parts round-tripped through `to_parts` / `from_parts`.
//!
//! Input: the `model.json` bytes. Properties: no panic; a loaded model rebuilds from its parts.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tickpipe_models::sjm::{MODEL_FILE, SjmModel};

fn scratch_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match tempfile::tempdir() {
        Ok(d) => d.keep(),
        Err(e) => panic!("no temporary directory: {e}"),
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch_dir();
    if let Err(e) = std::fs::write(dir.join(MODEL_FILE), data) {
        panic!("cannot write the model: {e}");
    }
    let Ok(model) = SjmModel::load(dir) else {
        return;
    };
    let f = model.n_features();
    let names: Vec<&str> = model.feature_names().iter().map(String::as_str).collect();
    let cols = match model.bind(&names) {
        Ok(c) => c,
        Err(e) => panic!("a loaded model does not bind to its own names: {e}"),
    };
    assert_eq!(cols.len(), f);
    for k in 0..model.n_states() {
        assert_eq!(model.centre(k).len(), f);
        let _ = model.regime_variances(k);
    }
    let fills = [0.0, f64::NAN, -3.0, 1e300, f64::NEG_INFINITY];
    let rows: Vec<f64> = fills
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, f))
        .collect();
    let mut online = model.new_online();
    for row in rows.chunks(f) {
        let _ = model.step(&mut online, row);
    }
    let _ = online.label();
    let finite: Vec<f64> = rows.iter().copied().filter(|v| v.is_finite()).collect();
    // Values that overflow once scaled are refused, not labelled.
    if let Ok(labels) = model.predict(&finite) {
        assert_eq!(labels.len(), finite.len() / f);
        assert!(labels.iter().all(|&l| l < model.n_states()));
    }
    if let Err(e) = SjmModel::from_parts(model.to_parts()) {
        panic!("a loaded model's parts are refused: {e}");
    }
});
