//! The XGBoost model loaders: `XgbModel::from_bytes` (format told by content), and the JSON and
//! UBJSON parsers directly. A model that loads is bound and evaluated on a few rows (missing
//! values, zeros, extremes) through both the row and the batch paths.
//!
//! Input: the model file's bytes. Properties: no panic, and the row and batch paths agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickpipe_models::xgb::XgbModel;

/// Widest model evaluated: the loader accepts 2^24 features, which is a lot of row to allocate
/// per input for no extra coverage.
const MAX_EVAL_FEATURES: usize = 4096;

fn exercise(model: &XgbModel) {
    let n = model.n_features();
    let _ = (model.objective(), model.n_trees(), model.version());
    if n == 0 || n > MAX_EVAL_FEATURES {
        return;
    }
    let names: Vec<String> = (0..n).map(|i| format!("f{i}")).collect();
    let schema: Vec<&str> = names.iter().map(String::as_str).collect();
    let cols = match model.bind(&schema) {
        Ok(c) => c,
        // Named models bind to their own names.
        Err(_) => {
            let own: Vec<&str> = model.feature_names().iter().map(String::as_str).collect();
            match model.bind(&own) {
                Ok(c) => c,
                Err(_) => return,
            }
        }
    };
    let width = cols.iter().max().map_or(0, |&c| c + 1);
    let fills = [f64::NAN, 0.0, -1.5, 1e30, f64::INFINITY];
    let rows: Vec<f64> = fills
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, width))
        .collect();
    let (outs, margins) = (model.n_outputs(), model.n_margins());
    let mut batch = vec![0f32; outs * fills.len()];
    model.predict_batch(&rows, width, &cols, &mut batch);
    let mut batch_margin = vec![0f32; margins * fills.len()];
    model.predict_margin_batch(&rows, width, &cols, &mut batch_margin);
    let mut one = vec![0f32; outs];
    let mut one_margin = vec![0f32; margins];
    for (r, row) in rows.chunks(width).enumerate() {
        model.predict_row(row, &cols, &mut one);
        model.predict_margin_row(row, &cols, &mut one_margin);
        let same = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
        };
        assert!(
            same(&one, &batch[r * outs..(r + 1) * outs]),
            "row and batch differ"
        );
        assert!(
            same(&one_margin, &batch_margin[r * margins..(r + 1) * margins]),
            "row and batch margins differ"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = XgbModel::from_bytes(data) {
        exercise(&m);
    }
    let _ = XgbModel::from_json(data);
    let _ = XgbModel::from_ubjson(data);
});
