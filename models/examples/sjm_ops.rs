//! One jump-model online step per row over a fixed synthetic stream (K = 3, F = 10), for
//! instruction counts: `valgrind --tool=callgrind --toggle-collect='*measure_steps*'
//! target/release/examples/sjm_ops [ROWS]` (minus a run with 0 rows).

use tickpipe_models::sjm::{SjmModel, SjmParts};

const F: usize = 10;
const K: usize = 3;

fn model() -> SjmModel {
    let centres = (0..K * F)
        .map(|i| ((i * 7) % 5) as f64 * 0.5 - 1.0)
        .collect();
    SjmModel::from_parts(SjmParts {
        feature_names: (0..F).map(|j| format!("f{j}")).collect(),
        jump_penalty: 20.0,
        scaler_mean: vec![0.1; F],
        scaler_std: vec![1.5; F],
        centres,
        regime_variances: vec![1.0; K * F],
    })
    .expect("model")
}

/// `n × F` rows: three regimes of 500 rows in turn, uniform noise.
fn rows(n: usize) -> Vec<f64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::with_capacity(n * F);
    for t in 0..n {
        let regime = (t / 500) % K;
        for j in 0..F {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            out.push(((regime * 7 + j * 3) % 5) as f64 * 0.5 - 1.0 + noise * 3.0);
        }
    }
    out
}

#[inline(never)]
fn measure_steps(m: &SjmModel, data: &[f64]) -> u64 {
    let mut st = m.new_online();
    let mut acc = 0u64;
    for x in data.chunks_exact(F) {
        let s = m.step(&mut st, std::hint::black_box(x));
        acc += u64::from(s.label) + u64::from(s.confidence > 0.9);
    }
    acc
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |s| s.parse().expect("rows"));
    let m = model();
    let data = rows(n);
    println!("{}", measure_steps(&m, &data));
}
