//! Jump model costs, on one core:
//!
//! - `sjm_online/step_k3_f10`: the online step ([`SjmModel::step`]) over 50,000 rows, K = 3,
//!   F = 10 (throughput in rows/s), against `naive_k3_f10`, the textbook form of the same
//!   recursion (K × K minimum, values never renormalised, `exp` per state as the step does) as
//!   the baseline, and `step_filter_k3_f10`, the step followed by the stability filter.
//! - `sjm_fit/fit_50k_f10_k3_ninit10`: a full fit of the 50,000 × 10 rows, K = 3, λ = 20,
//!   10 k-means++ starts; `sjm_fit/predict_50k_f10_k3`: batch Viterbi over the same rows.
//!
//! The rows are a deterministic regime-switching series that
//! `benches/python/sjm_reference.py` generates identically (splitmix64 counters, sums of twelve
//! uniforms for the noise: integer and correctly rounded arithmetic only), so the Python
//! reference times the same problem. Under `cargo test --benches` the sizes shrink to 2,000
//! rows and 2 starts.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tickpipe_models::sjm::{SjmFitConfig, SjmModel};
use tickpipe_models::stability::{StabilityConfig, StabilityFilter};

const SEED: u64 = 20_240_601;
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
const F: usize = 10;
const K: usize = 3;
const LAMBDA: f64 = 20.0;
const SWITCH_P: f64 = 0.002;

fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Uniform in [0, 1) from the `i`-th splitmix64 output of `SEED`.
fn uniform(i: u64) -> f64 {
    let mut z = SEED.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// `n × F` rows, three persistent regimes (switch probability 0.002 per row) with their own
/// means and scales, noise the sum of twelve uniforms minus six.
fn rows(n: usize) -> Vec<f64> {
    let n64 = n as u64;
    let sigma = [0.5, 1.0, 2.0];
    let mut out = Vec::with_capacity(n * F);
    let mut state = 0usize;
    for t in 0..n {
        let t64 = t as u64;
        if uniform(t64) < SWITCH_P {
            state = (state + 1 + usize::from(uniform(n64 + t64) < 0.5)) % 3;
        }
        for j in 0..F {
            let base = 2 * n64 + (t64 * F as u64 + j as u64) * 12;
            let mut g = uniform(base);
            for i in 1..12 {
                g += uniform(base + i);
            }
            g -= 6.0;
            let mu = ((state * 7 + j * 3) % 5) as f64 * 0.5 - 1.0;
            out.push(mu + sigma[state] * g);
        }
    }
    out
}

fn names() -> Vec<String> {
    (0..F).map(|j| format!("f{j}")).collect()
}

/// The textbook forward recursion, as the reference's `dp` computes one row: K × K minimum over
/// unnormalised values.
struct Naive<'a> {
    model: &'a SjmModel,
    v: [f64; K],
    started: bool,
}

impl Naive<'_> {
    fn step(&mut self, x: &[f64]) -> (usize, f64) {
        let m = self.model;
        let mut loss = [0.0; K];
        for (s, l) in loss.iter_mut().enumerate() {
            let c = m.centre(s);
            let mut d = 0.0;
            for j in 0..F {
                let e = (x[j] - m.scaler_mean()[j]) / m.scaler_std()[j] - c[j];
                d += e * e;
            }
            *l = 0.5 * d;
        }
        let mut next = [0.0; K];
        for (k, nv) in next.iter_mut().enumerate() {
            let mut best = f64::INFINITY;
            if self.started {
                for (j, &v) in self.v.iter().enumerate() {
                    let w = v + if j == k { 0.0 } else { m.jump_penalty() };
                    best = best.min(w);
                }
            } else {
                best = 0.0;
            }
            *nv = loss[k] + best;
        }
        self.v = next;
        self.started = true;
        let mut arg = 0;
        for k in 1..K {
            if next[k] < next[arg] {
                arg = k;
            }
        }
        let sum: f64 = next.iter().map(|&v| (next[arg] - v).exp()).sum();
        (arg, 1.0 / sum)
    }
}

fn benches(c: &mut Criterion) {
    let full = bench_mode();
    let n = if full { 50_000 } else { 2_000 };
    let data = rows(n);
    let col_sums: Vec<f64> = (0..F)
        .map(|j| data.iter().skip(j).step_by(F).sum())
        .collect();
    eprintln!(
        "sjm bench data: {n} x {F}, x[0][0] = {:?}, x[{}][{}] = {:?}, column 0 sum = {:?}",
        data[0],
        n - 1,
        F - 1,
        data[n * F - 1],
        col_sums[0]
    );
    let cfg = SjmFitConfig {
        n_states: K,
        jump_penalty: LAMBDA,
        n_init: if full { 10 } else { 2 },
        ..SjmFitConfig::default()
    };
    let names = names();
    let (model, report) = SjmModel::fit(&data, F, &names, &cfg).expect("fit");
    eprintln!(
        "sjm bench fit: objective {:?}, best start {}, iterations per start {:?}, {} switches, frequencies {:?}",
        report.objective,
        report.best_init,
        report
            .inits
            .iter()
            .map(|i| i.iterations)
            .collect::<Vec<_>>(),
        report.n_switches,
        report.state_frequencies
    );

    let mut g = c.benchmark_group("sjm_online");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::from_parameter("step_k3_f10"), |b| {
        b.iter(|| {
            let mut st = model.new_online();
            let mut acc = 0u64;
            for x in data.chunks_exact(F) {
                let s = model.step(&mut st, black_box(x));
                acc += u64::from(s.label) + u64::from(s.confidence > 0.9);
            }
            black_box(acc)
        });
    });
    g.bench_function(BenchmarkId::from_parameter("naive_k3_f10"), |b| {
        b.iter(|| {
            let mut nv = Naive {
                model: &model,
                v: [0.0; K],
                started: false,
            };
            let mut acc = 0u64;
            for x in data.chunks_exact(F) {
                let (l, conf) = nv.step(black_box(x));
                acc += l as u64 + u64::from(conf > 0.9);
            }
            black_box(acc)
        });
    });
    let filter = StabilityFilter::new(&StabilityConfig::default(), &model).expect("filter");
    g.bench_function(BenchmarkId::from_parameter("step_filter_k3_f10"), |b| {
        b.iter(|| {
            let mut st = model.new_online();
            let mut fl = filter.clone();
            let mut acc = 0u64;
            for (t, x) in data.chunks_exact(F).enumerate() {
                let s = model.step(&mut st, black_box(x));
                let out = fl.update(t as u64 * 1_000_000_000, &s, x);
                acc += u64::from(out.regime) + u64::from(out.flags);
            }
            black_box(acc)
        });
    });
    g.finish();

    let mut g = c.benchmark_group("sjm_fit");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::from_parameter("fit_50k_f10_k3_ninit10"), |b| {
        b.iter(|| SjmModel::fit(black_box(&data), F, &names, &cfg).expect("fit"));
    });
    g.bench_function(BenchmarkId::from_parameter("predict_50k_f10_k3"), |b| {
        b.iter(|| model.predict(black_box(&data)).expect("predict"));
    });
    g.finish();
}

criterion_group!(sjm, benches);
criterion_main!(sjm);
