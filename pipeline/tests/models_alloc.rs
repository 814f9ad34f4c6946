//! The models on the per-event path allocate nothing: the jump model's online step and the
//! stability filter (over valid, non-finite, all-zero and wrongly sized rows), the XGBoost
//! evaluator, and the inference stage's whole per-vector work with the shipped models, each run
//! on an armed thread under the counting allocator of `tickpipe_shm::hotpath`.

use std::path::Path;

use tickpipe_models::sjm::{SjmFitConfig, SjmModel};
use tickpipe_models::stability::{StabilityConfig, StabilityFilter};
use tickpipe_models::xgb::XgbModel;
use tickpipe_pipeline::config::ModelSettings;
use tickpipe_pipeline::features::{N_FEATURES, TimeSource};
use tickpipe_pipeline::inference::InferenceEngine;
use tickpipe_pipeline::msg::{Forecast, Tick};
use tickpipe_shm::hotpath::{self, CountingAlloc};

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc::new();

fn shipped() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/pipeline")
}

#[test]
fn step_filter_xgb_and_inference_do_not_allocate() {
    assert_eq!(
        hotpath::allocations_in(|| drop(std::hint::black_box(vec![1u8; 16]))),
        1,
        "the counter sees this thread's allocations"
    );

    // The jump model and its filter, over every kind of row.
    let f = 6;
    let mut rows = Vec::new();
    let mut state = 1u64;
    for t in 0..4000 {
        for j in 0..f {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            let u = (state >> 11) as f64 / (1u64 << 53) as f64;
            rows.push(((t / 500) % 3) as f64 * (j as f64 + 1.0) + u);
        }
    }
    let names: Vec<String> = (0..f).map(|j| format!("f{j}")).collect();
    let cfg = SjmFitConfig {
        n_states: 3,
        jump_penalty: 2.0,
        ..SjmFitConfig::default()
    };
    let (model, _) = SjmModel::fit(&rows, f, &names, &cfg).expect("fit");
    let mut filter = StabilityFilter::new(&StabilityConfig::default(), &model).expect("filter");
    let mut online = model.new_online();
    let nan_row = vec![f64::NAN; f];
    let zero_row = vec![0.0; f];
    let mut acc = 0u64;
    let n = hotpath::allocations_in(|| {
        for (t, x) in rows.chunks_exact(f).enumerate() {
            let x = match t % 97 {
                0 => &nan_row[..],
                1 => &zero_row[..],
                2 => &x[..f - 1],
                _ => x,
            };
            let step = model.step(&mut online, x);
            let out = filter.update(t as u64 * 1_000_000_000, &step, x);
            acc += u64::from(out.regime) + u64::from(out.flags) + u64::from(step.valid);
        }
    });
    assert!(acc > 0);
    assert_eq!(n, 0, "allocations in the jump model's step and filter");

    // The XGBoost evaluator, with missing values.
    let xgb = XgbModel::load(&shipped().join("score.json")).expect("shipped model");
    let cols: Vec<usize> = (0..xgb.n_features()).collect();
    let mut out = [0f32; 1];
    let mut sum = 0f32;
    let n = hotpath::allocations_in(|| {
        for (t, x) in rows.chunks_exact(f).enumerate() {
            let mut row = [f64::NAN; 16];
            for (j, v) in row.iter_mut().enumerate().skip(t % 3) {
                *v = x[j % f];
            }
            xgb.predict_row(&row, &cols, &mut out);
            sum += out[0];
        }
    });
    assert!(sum.is_finite() && sum > 0.0);
    assert_eq!(n, 0, "allocations in the XGBoost evaluator");

    // The inference stage's per-vector work with the shipped models, forecasts arriving.
    let settings = ModelSettings {
        sjm: Some(shipped().join("sjm")),
        xgboost: Some(shipped().join("score.json")),
        ..ModelSettings::default()
    };
    let mut engine =
        InferenceEngine::new(&settings.inference(4), TimeSource::Recv).expect("engine");
    let n = hotpath::allocations_in(|| {
        for (t, x) in rows.chunks_exact(f).enumerate() {
            let mut tick = Tick {
                instrument_id: (t % 5) as u32,
                ts_recv: t as u64 * 1_000_000,
                ..Tick::default()
            };
            for (j, v) in tick.values.iter_mut().enumerate().take(N_FEATURES) {
                *v = x[j % f] * (1.0 + j as f64);
            }
            engine.on_tick(&mut tick);
            if t % 50 == 0 {
                engine.on_forecast(&Forecast {
                    instrument_id: (t % 5) as u32,
                    ts_bar_end: t as u64,
                    ..Forecast::default()
                });
            }
        }
    });
    let c = engine.counts();
    assert_eq!(c.scored, 4000 - c.no_slot);
    assert!(c.no_slot > 0, "the fifth instrument found no slot: {c:?}");
    assert_eq!(n, 0, "allocations in the inference stage");
}
