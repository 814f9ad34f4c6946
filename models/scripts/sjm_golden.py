#!/usr/bin/env python3
"""Golden files for the Statistical Jump Model parity tests (models/tests/sjm_parity.rs).

Run from the repository root, with the pinned reference libraries (models/scripts/requirements.txt):

    python3 -m venv .venv && .venv/bin/pip install -r models/scripts/requirements.txt
    .venv/bin/python models/scripts/sjm_golden.py [--data ../shared/data]

It writes, with fixed seeds (the output is the same on every run):

- models/fixtures/sjm/synthetic.json: a small generated regime-switching series (the rows are
  in the file) and several fits of `jumpmodels.JumpModel` 0.1.1 from recorded starting centres:
  a normal fit, one stopped by max_iter, one stopped by tol, k-means (lambda = 0), one whose best solution leaves a
  state empty, and, for the normal fit, the reference's `predict` and `predict_online` labels on
  the fit rows followed by unseen rows.
- models/fixtures/sjm/btc_1m.json: the same for features derived from the BTC perpetual
  one-minute bars in the shared data folder (`bars/btc-perp-20211231-20220201_1m.csv`). The rows
  are *not* stored: the Rust test derives the same features from the file in place (the
  derivation below uses only +, -, *, / and sqrt, which are correctly rounded, so both sides get
  the same bits).

Every fit records the starting centres the reference used (its k-means++ with random_state=0)
and then fits from exactly those, so the Rust side can start from the same centres. States are
ordered by the reference's default (decreasing frequency, as no return series is given).
"""

import argparse
import contextlib
import importlib.metadata
import io
import json
import math
import os
import re
import sys

import numpy as np
from sklearn.preprocessing import StandardScaler

from jumpmodels.jump import JumpModel

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.normpath(os.path.join(HERE, "..", "fixtures", "sjm"))
BTC = "bars/btc-perp-20211231-20220201_1m.csv"
BTC_FEATURES = ["ret_1", "rv_15", "ret_15", "range"]
BTC_FIRST = 15  # first bar with a full 15-bar window
BTC_FIT_ROWS = 3000
BTC_ONLINE_ROWS = 4000


def btc_features(path):
    """Rows (t = 15, 16, ...) of ret_1 = c_t / c_{t-1} - 1, rv_15 = sqrt(sum of the last 15
    ret_1 squared, oldest first, / 15), ret_15 = c_t / c_{t-15} - 1, range = (h_t - l_t) / c_t."""
    high, low, close = [], [], []
    with open(path) as fh:
        header = fh.readline().strip().split(",")
        ih, il, ic = header.index("high"), header.index("low"), header.index("close")
        for line in fh:
            parts = line.strip().split(",")
            if len(parts) < len(header):
                continue
            high.append(float(parts[ih]))
            low.append(float(parts[il]))
            close.append(float(parts[ic]))
    ret = [math.nan] + [close[t] / close[t - 1] - 1.0 for t in range(1, len(close))]
    rows = []
    for t in range(BTC_FIRST, len(close)):
        s = 0.0
        for i in range(t - 14, t + 1):
            s += ret[i] * ret[i]
        rows.append([ret[t], math.sqrt(s / 15.0), close[t] / close[t - 15] - 1.0, (high[t] - low[t]) / close[t]])
    return np.array(rows, dtype=np.float64)


def synthetic_rows():
    """600 rows, 3 features, 3 persistent regimes; values rounded to 6 decimals (the rounded
    values are the data)."""
    rng = np.random.default_rng(20240601)
    means = np.array([[0.0, 0.0, 0.0], [1.5, -1.0, 0.5], [-1.0, 2.0, -1.5]])
    scales = np.array([0.6, 0.9, 0.7])
    state, rows = 0, []
    for _ in range(600):
        if rng.random() < 0.03:
            state = (state + 1 + int(rng.integers(0, 2))) % 3
        rows.append(means[state] + scales[state] * rng.standard_normal(3))
    return np.round(np.array(rows), 6)


def labels_str(labels):
    return "".join(str(int(v)) for v in labels)


def fit_case(name, Xs, n_states, jump_penalty, n_init, max_iter, tol):
    """Fits the reference from its own k-means++ starts (recorded), returns the case record."""
    jm = JumpModel(n_components=n_states, jump_penalty=jump_penalty, n_init=n_init,
                   max_iter=max_iter, tol=tol, random_state=0, verbose=1)
    starts = jm.init_centers(Xs)
    jm.init_centers = lambda X, s=starts: s.copy()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        jm.fit(Xs)
    init_vals = [float(v) for v in re.findall(r"-th init\. val: (\S+)", buf.getvalue())]
    best = re.search(r"(\d+)-th init has the best value", buf.getvalue())
    centres = jm.centers_
    empty = bool(np.isnan(centres).any())
    freq = np.bincount(np.asarray(jm.labels_, dtype=int), minlength=n_states)
    if not empty and len(set(freq.tolist())) != n_states:
        print(f"warning: {name}: tied state frequencies {freq.tolist()}", file=sys.stderr)
    case = {
        "name": name,
        "n_states": n_states,
        "jump_penalty": jump_penalty,
        "max_iter": max_iter,
        "tol": tol,
        "starts": [[list(map(float, c)) for c in s] for s in starts],
        "init_objectives": init_vals,
        "best_init": int(best.group(1)) if best else None,
        "empty_state": empty,
    }
    if not empty:
        case.update({
            "objective": float(jm.val_),
            "centres": [list(map(float, c)) for c in centres],
            "labels": labels_str(jm.labels_),
        })
    return jm, case


def scaler_record(scaler):
    return {"mean": list(map(float, scaler.mean_)), "std": list(map(float, scaler.scale_))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("TICKPIPE_DATA", os.path.join(HERE, "..", "..", "..", "shared", "data")))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    meta = {"reference": f"jumpmodels {importlib.metadata.version('jumpmodels')}",
            "numpy": np.__version__, "scikit-learn": importlib.metadata.version("scikit-learn"),
            "generator": "models/scripts/sjm_golden.py"}

    # --- synthetic
    X = synthetic_rows()
    n_fit = 400
    scaler = StandardScaler().fit(X[:n_fit])
    Xs_fit = scaler.transform(X[:n_fit])
    Xs_all = scaler.transform(X)
    cases = []
    jm, main_case = fit_case("k3_lambda8", Xs_fit, 3, 8.0, 4, 1000, 1e-8)
    main_case["predict"] = labels_str(jm.predict(Xs_all))
    main_case["predict_online"] = labels_str(jm.predict_online(Xs_all))
    cases.append(main_case)
    cases.append(fit_case("k3_lambda8_max_iter_1", Xs_fit, 3, 8.0, 4, 1, 1e-8)[1])
    cases.append(fit_case("k5_lambda0.5_tol_0.5", Xs_fit, 5, 0.5, 4, 1000, 0.5)[1])
    cases.append(fit_case("k2_lambda0", Xs_fit, 2, 0.0, 3, 1000, 1e-8)[1])
    cases.append(fit_case("k3_lambda_huge_empty", Xs_fit, 3, 1e6, 2, 1000, 1e-8)[1])
    doc = {
        **meta,
        "feature_names": ["a", "b", "c"],
        "n_fit_rows": n_fit,
        "rows": [list(map(float, r)) for r in X],
        "scaler": scaler_record(scaler),
        "cases": cases,
    }
    with open(os.path.join(OUT, "synthetic.json"), "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")

    # --- real data
    path = os.path.join(args.data, BTC)
    if not os.path.exists(path):
        print(f"skipped btc_1m.json: {path} not found (pass --data)", file=sys.stderr)
        return
    F = btc_features(path)[:BTC_ONLINE_ROWS]
    scaler = StandardScaler().fit(F[:BTC_FIT_ROWS])
    Fs_fit = scaler.transform(F[:BTC_FIT_ROWS])
    Fs_all = scaler.transform(F)
    jm, case = fit_case("k3_lambda20", Fs_fit, 3, 20.0, 10, 1000, 1e-8)
    case["predict"] = labels_str(jm.predict(Fs_all))
    case["predict_online"] = labels_str(jm.predict_online(Fs_all))
    doc = {
        **meta,
        "data": BTC,
        "features": "ret_1 = c_t/c_{t-1} - 1; rv_15 = sqrt(sum_{i=t-14..t} ret_1(i)^2 / 15); "
                    "ret_15 = c_t/c_{t-15} - 1; range = (h_t - l_t)/c_t; rows from bar 15 on",
        "feature_names": BTC_FEATURES,
        "first_bar": BTC_FIRST,
        "n_fit_rows": BTC_FIT_ROWS,
        "n_rows": BTC_ONLINE_ROWS,
        "row_checksums": {"sum": [float(v) for v in F.sum(axis=0)], "first": list(map(float, F[0])),
                          "last": list(map(float, F[-1]))},
        "scaler": scaler_record(scaler),
        "cases": [case],
    }
    with open(os.path.join(OUT, "btc_1m.json"), "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")


if __name__ == "__main__":
    main()
