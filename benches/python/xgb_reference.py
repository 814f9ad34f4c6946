#!/usr/bin/env python3
"""XGBoost's own prediction cost on the benchmark model of the native evaluator.

Times XGBoost (the Python package, one thread) on the same model and the same rows as
`models/benches/xgb.rs`: the committed `models/fixtures/xgb/bench_d6_t100.ubj.gz`
(binary:logistic, 100 trees of depth 6, 16 features) and its golden rows tiled to 4096.

- one row: `inplace_predict` on a (1, 16) float64 array, each call timed; p50 and p99;
- a batch: `inplace_predict` on (4096, 16), and `predict` on a prebuilt DMatrix (a fresh
  one per call, construction not timed); best of 15, rows/s.

If the criterion results of `cargo bench -p tickpipe-models --bench xgb` exist
(`$CARGO_TARGET_DIR/criterion/xgb/<id>/new/estimates.json`, else `target/criterion/...`), it
prints the native evaluator's medians next to XGBoost's and the ratios.

Run from the repository root, with the pinned reference libraries
(models/scripts/requirements.txt):

    cargo bench -p tickpipe-models --bench xgb
    .venv/bin/python benches/python/xgb_reference.py

Without xgboost installed it prints a skip line and exits 0.
"""

import gzip
import json
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FIX = os.path.join(ROOT, "models", "fixtures", "xgb")
BATCH = 4096

try:
    import numpy as np
    import xgboost as xgb
except ImportError as e:  # pragma: no cover
    print(f"skip: xgboost reference not installed ({e})")
    sys.exit(0)


def criterion(bench_id):
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    path = os.path.join(target, "criterion", "xgb", bench_id, "new", "estimates.json")
    if not os.path.exists(path):
        return None
    with open(path) as fh:
        return json.load(fh)["median"]["point_estimate"]  # ns per iteration


def main():
    with open(os.path.join(FIX, "bench_d6_t100.ubj.gz"), "rb") as fh:
        booster = xgb.Booster(model_file=bytearray(gzip.decompress(fh.read())))
    booster.set_param({"nthread": 1})
    with open(os.path.join(FIX, "bench_d6_t100.cases.json")) as fh:
        cases = json.load(fh)
    rows = np.array([[float(v) for v in r] for r in cases["rows"]], dtype=np.float64)
    cols = [cases["columns"].index(n) for n in booster.feature_names]
    x = rows[:, cols]
    x = np.resize(x, (BATCH, x.shape[1]))  # tile to BATCH rows
    names = booster.feature_names
    booster.feature_names = None  # plain arrays, no name check per call

    # One row at a time.
    n = 3000
    single = [np.ascontiguousarray(x[i % len(x)][None, :]) for i in range(n)]
    for r in single[:200]:
        booster.inplace_predict(r, missing=np.nan)
    times = np.empty(n)
    for i, r in enumerate(single):
        t0 = time.perf_counter_ns()
        booster.inplace_predict(r, missing=np.nan)
        times[i] = time.perf_counter_ns() - t0
    p50, p99 = np.percentile(times, [50, 99])

    # Batches.
    def best_of(fn, reps=15):
        fn()
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            fn()
            best = min(best, time.perf_counter_ns() - t0)
        return best

    inplace_ns = best_of(lambda: booster.inplace_predict(x, missing=np.nan))
    # A fresh DMatrix per call: XGBoost caches predictions per DMatrix object, so predicting
    # the same one twice would time a cache lookup. Construction is not timed.
    reps = 15
    mats = [xgb.DMatrix(x, missing=np.nan, nthread=1) for _ in range(reps + 1)]
    dmatrix_ns = best_of(lambda: booster.predict(mats.pop()), reps)
    booster.feature_names = names

    print(f"xgboost {xgb.__version__}, nthread=1, model bench_d6_t100 (100 trees, depth 6)")
    print(f"  one row, inplace_predict:     p50 {p50 / 1e3:8.2f} us   p99 {p99 / 1e3:8.2f} us")
    print(f"  {BATCH} rows, inplace_predict: {inplace_ns / 1e6:8.3f} ms  "
          f"({BATCH / inplace_ns * 1e9 / 1e6:6.3f} M rows/s)")
    print(f"  {BATCH} rows, DMatrix predict: {dmatrix_ns / 1e6:8.3f} ms  "
          f"({BATCH / dmatrix_ns * 1e9 / 1e6:6.3f} M rows/s)")

    row = criterion("predict_row")
    batch = criterion(f"predict_batch_{BATCH}")
    if row is None and batch is None:
        print("native results not found: run `cargo bench -p tickpipe-models --bench xgb` first")
        return 0
    print("native evaluator (criterion medians):")
    if row is not None:
        print(f"  one row, predict_row:         {row / 1e3:8.3f} us   "
              f"xgboost p50 / native = {p50 / row:6.1f}x")
    if batch is not None:
        print(f"  {BATCH} rows, predict_batch:   {batch / 1e6:8.3f} ms  "
              f"({BATCH / batch * 1e9 / 1e6:6.3f} M rows/s)   "
              f"xgboost inplace / native = {inplace_ns / batch:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
