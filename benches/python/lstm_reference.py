#!/usr/bin/env python3
"""Python onnxruntime's per-step cost on tickpipe's LSTM step model, against the Rust bench.

Run from the repository root, after `cargo bench -p tickpipe-models --bench lstm`:

    python3 -m venv .venv && .venv/bin/pip install -r models/scripts/requirements.txt
    .venv/bin/python benches/python/lstm_reference.py [--steps 200000]

Times one streaming step (x [1,1,4], h/c [1,1,32] in; y, h_out, c_out out) of
models/fixtures/lstm/lstm_h32.onnx with onnxruntime 1.31.1 on the CPU, configured like tickpipe's
sessions: one intra-op and one inter-op thread, no spinning, sequential, all graph optimisations.
Two ways of calling it:

  run        sess.run(...) with numpy feeds, h/c carried by reassigning the returned arrays
             (the ordinary Python usage);
  iobinding  inputs and outputs bound once to preallocated OrtValues, the features and state
             copied in place, sess.run_with_iobinding(...) per step (Python's fastest path).

Each step is timed on its own with perf_counter_ns (its own cost, ~0.1 us, is included), after a
warm-up. Then the Rust medians are read from criterion's estimates
(`${CARGO_TARGET_DIR:-target}/criterion/lstm/<id>/new/estimates.json`), if present, and the
ratios printed (Python time / Rust time: above 1 means the Rust step is faster).
"""

import argparse
import json
import os
import time

import numpy as np
import onnxruntime as ort

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
MODEL = os.path.join(ROOT, "models", "fixtures", "lstm", "lstm_h32.onnx")
RUST_IDS = ["step_h32_ort", "step_h32_ort_alloc", "step_h32_plain_rust"]


def session():
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])


def features(n):
    rng = np.random.default_rng(7)
    x = np.empty((n, 1, 1, 4), dtype=np.float32)
    x[:, 0, 0, 0] = rng.normal(0, 0.1, n)
    x[:, 0, 0, 1] = rng.normal(-8, 0.5, n)
    x[:, 0, 0, 2] = rng.normal(6, 0.5, n)
    x[:, 0, 0, 3] = rng.normal(4.5, 0.5, n)
    return x


def time_run(sess, xs, steps, warmup):
    h = np.zeros((1, 1, 32), dtype=np.float32)
    c = np.zeros((1, 1, 32), dtype=np.float32)
    names = ["y", "h_out", "c_out"]
    ns = np.empty(steps, dtype=np.int64)
    n = len(xs)
    for k in range(warmup + steps):
        t = time.perf_counter_ns()
        _y, h, c = sess.run(names, {"x": xs[k % n], "h_in": h, "c_in": c})
        if k >= warmup:
            ns[k - warmup] = time.perf_counter_ns() - t
    return ns


def time_iobinding(sess, xs, steps, warmup):
    x = np.zeros((1, 1, 4), dtype=np.float32)
    h = np.zeros((1, 1, 32), dtype=np.float32)
    c = np.zeros((1, 1, 32), dtype=np.float32)
    y_out = np.zeros((1, 1), dtype=np.float32)
    h_out = np.zeros((1, 1, 32), dtype=np.float32)
    c_out = np.zeros((1, 1, 32), dtype=np.float32)
    b = sess.io_binding()
    for name, arr in (("x", x), ("h_in", h), ("c_in", c)):
        b.bind_input(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
    for name, arr in (("y", y_out), ("h_out", h_out), ("c_out", c_out)):
        b.bind_output(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
    ns = np.empty(steps, dtype=np.int64)
    n = len(xs)
    for k in range(warmup + steps):
        t = time.perf_counter_ns()
        x[...] = xs[k % n]
        sess.run_with_iobinding(b)
        h[...] = h_out
        c[...] = c_out
        if k >= warmup:
            ns[k - warmup] = time.perf_counter_ns() - t
    return ns


def check_iobinding_matches_run(sess, xs):
    """The two paths must compute the same thing, or the timing comparison is meaningless."""
    h = np.zeros((1, 1, 32), dtype=np.float32)
    c = np.zeros((1, 1, 32), dtype=np.float32)
    ys = []
    for k in range(20):
        y, h, c = sess.run(["y", "h_out", "c_out"], {"x": xs[k], "h_in": h, "c_in": c})
        ys.append(float(y.ravel()[0]))
    x = np.zeros((1, 1, 4), dtype=np.float32)
    h = np.zeros((1, 1, 32), dtype=np.float32)
    c = np.zeros((1, 1, 32), dtype=np.float32)
    outs = [np.zeros((1, 1), np.float32), np.zeros((1, 1, 32), np.float32), np.zeros((1, 1, 32), np.float32)]
    b = sess.io_binding()
    for name, arr in (("x", x), ("h_in", h), ("c_in", c)):
        b.bind_input(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
    for name, arr in zip(("y", "h_out", "c_out"), outs):
        b.bind_output(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)
    for k in range(20):
        x[...] = xs[k]
        sess.run_with_iobinding(b)
        h[...] = outs[1]
        c[...] = outs[2]
        assert abs(float(outs[0].ravel()[0]) - ys[k]) <= 1e-6, (k, outs[0], ys[k])


def summary(ns):
    us = ns / 1000.0
    return {
        "p50": float(np.percentile(us, 50)),
        "p90": float(np.percentile(us, 90)),
        "p99": float(np.percentile(us, 99)),
        "p99.9": float(np.percentile(us, 99.9)),
        "mean": float(us.mean()),
    }


def rust_medians():
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target")
    found = {}
    for rid in RUST_IDS:
        p = os.path.join(target, "criterion", "lstm", rid, "new", "estimates.json")
        if os.path.exists(p):
            with open(p) as fh:
                found[rid] = json.load(fh)["median"]["point_estimate"] / 1000.0
    return target, found


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--warmup", type=int, default=10_000)
    args = ap.parse_args()
    sess = session()
    xs = features(4096)
    check_iobinding_matches_run(sess, xs)
    print(f"onnxruntime {ort.__version__}, model {os.path.relpath(MODEL, ROOT)}, {args.steps} steps each")
    results = {
        "run": summary(time_run(sess, xs, args.steps, args.warmup)),
        "iobinding": summary(time_iobinding(sess, xs, args.steps, args.warmup)),
    }
    for name, s in results.items():
        print(
            f"python {name:<10} per step (us): p50 {s['p50']:.2f}  p90 {s['p90']:.2f}  "
            f"p99 {s['p99']:.2f}  p99.9 {s['p99.9']:.2f}  mean {s['mean']:.2f}"
        )
    target, rust = rust_medians()
    if not rust:
        print(f"no criterion estimates under {target}/criterion/lstm: run `cargo bench -p tickpipe-models --bench lstm` first")
        return
    for rid, med in rust.items():
        print(f"rust   {rid:<20} criterion median {med:.2f} us")
    if "step_h32_ort" in rust:
        med = rust["step_h32_ort"]
        for name, s in results.items():
            print(f"ratio python {name} p50 / rust step_h32_ort median: {s['p50'] / med:.2f}x")


if __name__ == "__main__":
    main()
