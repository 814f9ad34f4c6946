//! Streaming LSTM step (H=32, F=4, O=1) through ONNX Runtime 1.31.1.
//!
//! `cargo bench -p tickpipe-models --bench lstm`
//!
//! Group `lstm`:
//! - `step_h32_ort`: [`LstmModel::step`], the production path (preallocated input and output
//!   tensors, one intra-op thread, no spinning);
//! - `step_h32_ort_alloc`: the same session options, but new input tensors and ONNX
//!   Runtime-allocated outputs on every step (the straightforward `ort` usage): what the
//!   preallocation saves;
//! - `step_h32_plain_rust`: the same LSTM arithmetic (random weights) in plain Rust loops, no
//!   runtime at all: the floor that the session overhead sits on.
//!
//! Under `cargo bench`, a per-step latency distribution of `step_h32_ort` follows (each step
//! timed on its own with `Instant`, whose own cost, ~20-30 ns, is included): p50/p90/p99/p99.9.
//! The Python side (`benches/python/lstm_reference.py`) times onnxruntime's own per-step run on
//! the same model and prints ratios against these estimates.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use criterion::Criterion;
use ort::value::TensorRef;
use tickpipe_models::lstm::{self, LstmModel};

const F: usize = 4;
const H: usize = 32;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/lstm/lstm_h32.onnx")
}

/// A few hundred bars of plausible features, cycled through by every benchmark.
fn inputs() -> Vec<[f32; F]> {
    let mut s: u32 = 0x2545_f491;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s as f32 / u32::MAX as f32) - 0.5
    };
    (0..512)
        .map(|_| [next() * 0.2, -8.0 + next(), 6.0 + next(), 4.5 + next()])
        .collect()
}

/// The LSTM step written out in plain loops (ONNX gate order i, o, f, c).
struct PlainLstm {
    w: Vec<f32>,
    r: Vec<f32>,
    b: Vec<f32>,
    wy: Vec<f32>,
    gates: Vec<f32>,
}

impl PlainLstm {
    fn new() -> Self {
        let mut s: u32 = 7;
        let mut next = move || {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.35
        };
        Self {
            w: (0..4 * H * F).map(|_| next()).collect(),
            r: (0..4 * H * H).map(|_| next()).collect(),
            b: (0..4 * H).map(|_| next()).collect(),
            wy: (0..H).map(|_| next()).collect(),
            gates: vec![0.0; 4 * H],
        }
    }

    fn step(&mut self, x: &[f32; F], h: &mut [f32; H], c: &mut [f32; H]) -> f32 {
        for (g, ((w, r), b)) in self.gates.iter_mut().zip(
            self.w
                .chunks_exact(F)
                .zip(self.r.chunks_exact(H))
                .zip(&self.b),
        ) {
            let mut acc = *b;
            for (wi, xi) in w.iter().zip(x) {
                acc += wi * xi;
            }
            for (ri, hi) in r.iter().zip(h.iter()) {
                acc += ri * hi;
            }
            *g = acc;
        }
        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        let mut y = 0.0;
        for k in 0..H {
            let (i, o, f, cc) = (
                sig(self.gates[k]),
                sig(self.gates[H + k]),
                sig(self.gates[2 * H + k]),
                self.gates[3 * H + k].tanh(),
            );
            c[k] = f * c[k] + i * cc;
            h[k] = o * c[k].tanh();
            y += self.wy[k] * h[k];
        }
        y
    }
}

fn bench(c: &mut Criterion) {
    let xs = inputs();
    let mut model = LstmModel::load(&fixture()).unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("lstm");

    let mut state = model.new_state();
    let mut out = [0.0_f32];
    let mut i = 0usize;
    group.bench_function("step_h32_ort", |b| {
        b.iter(|| {
            i = (i + 1) % xs.len();
            model.step(&mut state, black_box(&xs[i]), &mut out).unwrap();
            black_box(out[0])
        })
    });

    let mut builder = lstm::step_session_builder().unwrap_or_else(|e| panic!("{e}"));
    let mut session = builder
        .commit_from_file(fixture())
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut h, mut cst) = (vec![0.0_f32; H], vec![0.0_f32; H]);
    group.bench_function("step_h32_ort_alloc", |b| {
        b.iter(|| {
            i = (i + 1) % xs.len();
            let x = TensorRef::from_array_view(([1usize, 1, F], &xs[i][..])).unwrap();
            let ht = TensorRef::from_array_view(([1usize, 1, H], &h[..])).unwrap();
            let ct = TensorRef::from_array_view(([1usize, 1, H], &cst[..])).unwrap();
            let outs = session.run(ort::inputs![x, ht, ct]).unwrap();
            let y = outs["y"].try_extract_tensor::<f32>().unwrap().1[0];
            let h_new = outs["h_out"]
                .try_extract_tensor::<f32>()
                .unwrap()
                .1
                .to_vec();
            let c_new = outs["c_out"]
                .try_extract_tensor::<f32>()
                .unwrap()
                .1
                .to_vec();
            drop(outs);
            h = h_new;
            cst = c_new;
            black_box(y)
        })
    });

    let mut plain = PlainLstm::new();
    let (mut ph, mut pc) = ([0.0_f32; H], [0.0_f32; H]);
    group.bench_function("step_h32_plain_rust", |b| {
        b.iter(|| {
            i = (i + 1) % xs.len();
            black_box(plain.step(black_box(&xs[i]), &mut ph, &mut pc))
        })
    });
    group.finish();
}

/// Each step timed alone, to show the tail that a mean or median hides.
fn percentiles() {
    const N: usize = 200_000;
    let xs = inputs();
    let mut model = LstmModel::load(&fixture()).unwrap_or_else(|e| panic!("{e}"));
    let mut state = model.new_state();
    let mut out = [0.0_f32];
    let mut ns = Vec::with_capacity(N);
    for _ in 0..10_000 {
        model.step(&mut state, &xs[0], &mut out).unwrap();
    }
    for k in 0..N {
        let t = Instant::now();
        model
            .step(&mut state, black_box(&xs[k % xs.len()]), &mut out)
            .unwrap();
        ns.push(t.elapsed().as_nanos() as u64);
    }
    ns.sort_unstable();
    let q = |p: f64| ns[((N as f64 * p) as usize).min(N - 1)] as f64 / 1000.0;
    println!(
        "lstm/step_h32_ort per-step latency over {N} steps (us): p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        q(0.50),
        q(0.90),
        q(0.99),
        q(0.999),
        ns[N - 1] as f64 / 1000.0
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    if std::env::args().any(|a| a == "--bench") {
        percentiles();
    }
}
