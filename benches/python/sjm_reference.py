#!/usr/bin/env python3
"""The Python reference (jumpmodels 0.1.1) on the problem of models/benches/sjm.rs, and the
Rust / Python ratios.

Run from the repository root, after the Rust bench (so that criterion's estimates exist):

    cargo bench -p tickpipe-models --bench sjm
    .venv/bin/python benches/python/sjm_reference.py        # venv: models/scripts/requirements.txt

It generates the same 50,000 x 10 rows as the Rust bench (splitmix64 counters, noise the sum of
twelve uniforms minus six: integer and correctly rounded arithmetic only, so the bits are the
same; the script prints the checksums the bench prints), then times, single-threaded:

- fit: StandardScaler + JumpModel(n_components=3, jump_penalty=20, n_init=10, random_state=0)
  .fit, the whole fit as the Rust bench times it (the Rust fit also z-scores inside);
- online: JumpModel.predict_online over the 50,000 rows (the reference's online labels; one
  call over the whole array, which favours Python over a row-at-a-time loop).

It then reads criterion's estimates (target/criterion/<group>/<id>/new/estimates.json under
$CARGO_TARGET_DIR, else ./target) and prints the ratios. Without jumpmodels it prints a skip
line; without the estimates it prints the Python numbers only.
"""

import json
import os
import sys
import time

SEED = 20240601
GAMMA = 0x9E3779B97F4A7C15
N, F, K = 50_000, 10, 3
LAMBDA = 20.0
SWITCH_P = 0.002


def uniforms(np, counters):
    """Uniform in [0, 1) from splitmix64 output number `counters` of SEED (vectorised)."""
    with np.errstate(over="ignore"):
        z = np.uint64(SEED) + (counters.astype(np.uint64) + np.uint64(1)) * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / float(1 << 53))


def rows(np, n=N):
    """The bench's rows: three persistent regimes, noise = sum of 12 uniforms - 6."""
    switch = uniforms(np, np.arange(n))
    pick = uniforms(np, n + np.arange(n))
    state, states = 0, np.empty(n, dtype=np.int64)
    for t in range(n):
        if switch[t] < SWITCH_P:
            state = (state + 1 + (1 if pick[t] < 0.5 else 0)) % 3
        states[t] = state
    base = 2 * n + (np.arange(n * F, dtype=np.int64) * 12)
    g = uniforms(np, base)
    for i in range(1, 12):  # in order, as the Rust loop adds them
        g = g + uniforms(np, base + i)
    g = (g - 6.0).reshape(n, F)
    j = np.arange(F)
    mu = ((states[:, None] * 7 + j[None, :] * 3) % 5).astype(np.float64) * 0.5 - 1.0
    sigma = np.array([0.5, 1.0, 2.0])[states][:, None]
    return mu + sigma * g


def estimate_ns(target, group, ident):
    path = os.path.join(target, "criterion", group, ident, "new", "estimates.json")
    try:
        with open(path) as fh:
            return json.load(fh)["mean"]["point_estimate"], path
    except (OSError, KeyError, ValueError):
        return None, path


def main():
    try:
        import numpy as np
        from sklearn.preprocessing import StandardScaler
        from jumpmodels.jump import JumpModel
    except ImportError as e:
        print(f"SKIPPED: the Python reference is not installed ({e}); "
              "pip install -r models/scripts/requirements.txt")
        return 0

    X = rows(np)
    col0 = 0.0
    for v in X[:, 0]:
        col0 += float(v)
    print(f"data: {N} x {F}, x[0][0] = {float(X[0, 0])!r}, x[{N - 1}][{F - 1}] = {float(X[-1, -1])!r}, "
          f"column 0 sum = {col0!r}")

    t0 = time.perf_counter()
    scaler = StandardScaler().fit(X)
    Xs = scaler.transform(X)
    jm = JumpModel(n_components=K, jump_penalty=LAMBDA, n_init=10, random_state=0)
    jm.fit(Xs)
    fit_s = time.perf_counter() - t0
    freq = np.bincount(np.asarray(jm.labels_, dtype=int), minlength=K)
    print(f"python fit: {fit_s:.3f} s (objective {float(jm.val_)!r}, frequencies {freq.tolist()})")

    reps = 3
    t0 = time.perf_counter()
    for _ in range(reps):
        online = jm.predict_online(Xs)
    online_s = (time.perf_counter() - t0) / reps
    print(f"python predict_online: {online_s * 1e3:.1f} ms for {N} rows = "
          f"{N / online_s / 1e6:.3f} M rows/s ({len(set(np.asarray(online).tolist()))} states used)")

    target = os.environ.get("CARGO_TARGET_DIR", "target")
    fit_ns, fit_path = estimate_ns(target, "sjm_fit", "fit_50k_f10_k3_ninit10")
    step_ns, step_path = estimate_ns(target, "sjm_online", "step_k3_f10")
    if fit_ns is None:
        print(f"no criterion estimate at {fit_path}: run `cargo bench -p tickpipe-models --bench sjm` first")
    else:
        rust_fit_s = fit_ns * 1e-9
        print(f"rust fit: {rust_fit_s * 1e3:.1f} ms -> python / rust = {fit_s / rust_fit_s:.0f}x")
    if step_ns is None:
        print(f"no criterion estimate at {step_path}")
    else:
        rust_rows_s = N / (step_ns * 1e-9)
        print(f"rust online step: {step_ns * 1e-6:.3f} ms for {N} rows = {rust_rows_s / 1e6:.2f} M rows/s "
              f"-> rust / python = {rust_rows_s / (N / online_s):.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
