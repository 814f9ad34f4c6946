#!/usr/bin/env python3
"""Regenerate the XGBoost parity fixtures in models/fixtures/xgb/.

Run from the repository root with the pinned reference libraries
(models/scripts/requirements.txt, xgboost 3.2.0):

    python3 -m venv .venv && .venv/bin/pip install -r models/scripts/requirements.txt
    .venv/bin/python models/scripts/xgb_golden.py

Deterministic: fixed seeds, single-threaded training, exact-tree method. Every model is
trained by XGBoost, saved as JSON and UBJSON (XGBoost's own writers), loaded back, and the
expected outputs are XGBoost's own predictions from the loaded model (`predict` on a
DMatrix with missing=NaN, output_margin false and true; the script asserts that
`inplace_predict` gives the same bits). Expected outputs are stored as the hex of the
float32 bits, inputs as Python `repr` strings of float64 ("nan" for missing), so no value
is rounded on the way to the Rust tests.

Files written, per model NAME:
  NAME.json, NAME.ubj      the model in both formats
  NAME.cases.json          {"model", "columns", "rows", "margin", "output"}
The 100-tree depth-6 benchmark model is stored only as bench_d6_t100.ubj.gz (its training
statistics, which prediction never reads, are zeroed to keep the file small).
Refusal fixtures (categorical, dart, gblinear) are JSON only and have no cases.
"""

import gzip
import json
import os
import sys

import numpy as np
import xgboost as xgb

assert xgb.__version__ == "3.2.0", f"expected xgboost 3.2.0, got {xgb.__version__}"

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "xgb")

# The pipeline's feature vector schema (tickpipe.features v1), in column order.
SCHEMA = [
    "mid", "spread_ticks", "spread_bps", "microprice",
    "depth_imbalance_l1", "depth_imbalance_l2", "depth_imbalance_l3",
    "depth_imbalance_l4", "depth_imbalance_l5",
    "ofi_100ev", "ofi_1s", "ofi_10s", "last_trade_sign",
    "signed_volume_1s", "signed_volume_10s", "rv_1s", "rv_10s", "rv_60s",
    "log_return_1s", "log_return_10s", "log_return_60s",
    "vwap_dev_60s_bps", "event_rate_1s", "trade_rate_1s",
]

# Model feature order deliberately differs from the schema order, so binding is exercised.
SMALL_FEATURES = [
    "ofi_1s", "spread_bps", "rv_10s", "depth_imbalance_l1",
    "last_trade_sign", "log_return_10s", "vwap_dev_60s_bps", "event_rate_1s",
]
BENCH_FEATURES = [
    "trade_rate_1s", "spread_ticks", "spread_bps", "depth_imbalance_l1",
    "depth_imbalance_l2", "depth_imbalance_l3", "ofi_100ev", "ofi_1s", "ofi_10s",
    "last_trade_sign", "signed_volume_1s", "rv_1s", "rv_10s",
    "log_return_1s", "log_return_10s", "vwap_dev_60s_bps",
]


def make_data(rng, n, nf):
    """Synthetic features with missing cells and exact zeros, plus a latent signal."""
    x = rng.normal(size=(n, nf))
    x[:, 1] = np.abs(x[:, 1]) * 3.0  # spread-like, positive
    x[:, 4 % nf] = np.sign(rng.normal(size=n))  # trade sign in {-1, 1}
    zero = rng.random(size=(n, nf)) < 0.08
    x[zero] = 0.0
    sig = 1.2 * x[:, 0] - 0.8 * x[:, 2] + np.sin(2.0 * x[:, 3]) + 0.5 * x[:, 4 % nf] * x[:, 5 % nf]
    sig = sig + 0.4 * rng.normal(size=n)
    miss = rng.random(size=(n, nf)) < 0.1
    # Make missingness informative so both default directions get learned.
    miss[:, 0] |= (sig > 1.5) & (rng.random(size=n) < 0.5)
    x[miss] = np.nan
    return x.astype(np.float32), sig.astype(np.float32)


def fmt_f64(v):
    v = float(v)
    return "nan" if np.isnan(v) else repr(v)


def hex32(a):
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    return [format(int(u), "08x") for u in a.reshape(-1).view(np.uint32)]


def thresholds(model_json):
    """(feature index, threshold) of every split in the saved model."""
    out = []
    for t in model_json["learner"]["gradient_booster"]["model"]["trees"]:
        for l, f, c in zip(t["left_children"], t["split_indices"], t["split_conditions"]):
            if l != -1:
                out.append((f, c))
    return out


def case_rows(rng, model_json, n_feat, n_random):
    """Rows in model feature order (float64): random, NaN, zeros, exact thresholds."""
    rows = []
    x, _ = make_data(rng, n_random, n_feat)
    # Four decimals keep the files short; such values are still not float32 values, so the
    # float64 -> float32 cast is exercised.
    rows.extend(np.round(x.astype(np.float64), 4))
    # Every cell missing, every cell zero.
    rows.append(np.full(n_feat, np.nan))
    rows.append(np.zeros(n_feat))
    # Random rows with a few NaN and 0.0 cells, and negative zero.
    for i in range(8):
        r = np.round(rng.normal(size=n_feat), 4)
        r[rng.random(size=n_feat) < 0.3] = np.nan
        r[rng.random(size=n_feat) < 0.3] = 0.0
        if i % 2:
            r[rng.integers(n_feat)] = -0.0
        rows.append(r)
    # Values exactly at split thresholds, one ulp (f32) either side, and float64 values that
    # only equal the threshold after the cast to float32.
    ths = thresholds(model_json)
    pick = rng.choice(len(ths), size=min(len(ths), 7), replace=False)
    for k in pick:
        f, c = ths[k]
        c32 = np.float32(c)
        base = np.round(rng.normal(size=n_feat), 4)
        for v in (
            float(c32),
            float(np.nextafter(c32, np.float32(-np.inf))),
            float(np.nextafter(c32, np.float32(np.inf))),
            float(c32) + abs(float(c32)) * 2.0**-30,
            float(c32) - abs(float(c32)) * 2.0**-30,
        ):
            r = base.copy()
            # Put the threshold value into every feature the tree splits on at this
            # threshold, so the comparison is exercised wherever it happens.
            r[f] = v
            rows.append(r)
    return np.array(rows, dtype=np.float64)


def to_schema(rows_model, names, rng):
    """Place model-order rows into the 24-column schema; other columns hold decoys."""
    out = np.empty((rows_model.shape[0], len(SCHEMA)), dtype=np.float64)
    out[:] = np.round(rng.normal(size=out.shape) * 1000.0)  # big decoys catch mis-binding
    for i, name in enumerate(names):
        out[:, SCHEMA.index(name)] = rows_model[:, i]
    return out


def save_cases(name, booster, rows_model, columns, rows_out):
    dm = xgb.DMatrix(rows_model, missing=np.nan, feature_names=booster.feature_names)
    margin = booster.predict(dm, output_margin=True)
    output = booster.predict(dm)
    # inplace_predict must agree bit for bit with the DMatrix path.
    if booster.feature_names is None:
        ip_m = booster.inplace_predict(rows_model, predict_type="margin", missing=np.nan)
        ip_o = booster.inplace_predict(rows_model, missing=np.nan)
    else:
        import pandas as pd

        df = pd.DataFrame(rows_model, columns=booster.feature_names)
        ip_m = booster.inplace_predict(df, predict_type="margin", missing=np.nan)
        ip_o = booster.inplace_predict(df, missing=np.nan)
    assert np.array_equal(np.asarray(ip_m, np.float32).view(np.uint32),
                          np.asarray(margin, np.float32).view(np.uint32)), name
    assert np.array_equal(np.asarray(ip_o, np.float32).view(np.uint32),
                          np.asarray(output, np.float32).view(np.uint32)), name
    n = rows_model.shape[0]
    margin = np.asarray(margin, np.float32).reshape(n, -1)
    output = np.asarray(output, np.float32).reshape(n, -1)
    doc = {
        "model": name,
        "xgboost": xgb.__version__,
        "columns": columns,
        "rows": [[fmt_f64(v) for v in r] for r in rows_out],
        "margin": [hex32(r) for r in margin],
        "output": [hex32(r) for r in output],
    }
    with open(os.path.join(OUT, f"{name}.cases.json"), "w") as fh:
        json.dump(doc, fh, separators=(",", ":"))
        fh.write("\n")


def save_both(name, booster):
    booster.save_model(os.path.join(OUT, f"{name}.json"))
    booster.save_model(os.path.join(OUT, f"{name}.ubj"))
    # Expected outputs come from the saved file, loaded back by XGBoost.
    b_json = xgb.Booster(model_file=os.path.join(OUT, f"{name}.json"))
    b_ubj = xgb.Booster(model_file=os.path.join(OUT, f"{name}.ubj"))
    return b_json, b_ubj, json.loads(b_json.save_raw("json"))


def train(params, x, y, rounds, names):
    p = {"seed": 0, "nthread": 1, "tree_method": "exact"}
    p.update(params)
    dm = xgb.DMatrix(x, label=y, missing=np.nan, feature_names=names)
    return xgb.train(p, dm, rounds)


def fixture(name, params, label_fn, rounds, names, n_feat, seed, n_random=24):
    rng = np.random.default_rng(seed)
    x, sig = make_data(rng, 2000, n_feat)
    booster = train(params, x, label_fn(sig, rng), rounds, names)
    b_json, b_ubj, mj = save_both(name, booster)
    rows_model = case_rows(rng, mj, n_feat, n_random)
    if names is None:
        columns, rows_out = None, rows_model
    else:
        columns = SCHEMA
        rows_out = to_schema(rows_model, names, rng)
    save_cases(name, b_json, rows_model, columns, rows_out)
    # The UBJSON file must predict identically.
    dm = xgb.DMatrix(rows_model, missing=np.nan, feature_names=names)
    for om in (False, True):
        a = b_json.predict(dm, output_margin=om).view(np.uint32)
        b = b_ubj.predict(dm, output_margin=om).view(np.uint32)
        assert np.array_equal(a, b), name
    return booster, mj


def main():
    os.makedirs(OUT, exist_ok=True)
    nf = len(SMALL_FEATURES)
    reg = lambda s, r: s
    prob = lambda s, r: (1.0 / (1.0 + np.exp(-s))).astype(np.float32)
    binary = lambda s, r: (s + 0.3 * r.normal(size=s.shape) > 0.2).astype(np.float32)
    three = lambda s, r: np.digitize(s, [-0.7, 0.6]).astype(np.float32)
    small = {"max_depth": 4, "eta": 0.3}

    fixture("reg_squarederror", {"objective": "reg:squarederror", **small}, reg, 8,
            SMALL_FEATURES, nf, 1)
    fixture("reg_logistic", {"objective": "reg:logistic", **small}, prob, 8,
            SMALL_FEATURES, nf, 2)
    # A user-given base_score (boost_from_average is then off).
    fixture("reg_logistic_base03", {"objective": "reg:logistic", "base_score": 0.3, **small},
            prob, 6, SMALL_FEATURES, nf, 3)
    fixture("binary_logistic", {"objective": "binary:logistic", **small}, binary, 8,
            SMALL_FEATURES, nf, 4)
    fixture("binary_logitraw", {"objective": "binary:logitraw", **small}, binary, 8,
            SMALL_FEATURES, nf, 5)
    multi = {"num_class": 3, "max_depth": 3, "eta": 0.3}
    fixture("multi_softprob", {"objective": "multi:softprob", **multi}, three, 4,
            SMALL_FEATURES, nf, 6)
    fixture("multi_softmax", {"objective": "multi:softmax", **multi}, three, 4,
            SMALL_FEATURES, nf, 7)
    # No feature names: binds positionally.
    fixture("reg_noname", {"objective": "reg:squarederror", "max_depth": 3, "eta": 0.3}, reg, 6,
            None, 6, 8)

    # XGBoost 2.x layout: scalar base_score string, no categorical encoder, version 2.1.4.
    # Written from a 3.2 model and loaded back by 3.2 (which reads the 2.x layout) for the
    # expected outputs.
    rng = np.random.default_rng(9)
    x, sig = make_data(rng, 2000, nf)
    b = train({"objective": "binary:logistic", **small}, x, binary(sig, rng), 6, SMALL_FEATURES)
    mj = json.loads(b.save_raw("json"))
    learner = mj["learner"]
    bs = learner["learner_model_param"]["base_score"]
    learner["learner_model_param"]["base_score"] = bs.strip("[]")
    del learner["gradient_booster"]["model"]["cats"]
    mj["version"] = [2, 1, 4]
    name = "binary_logistic_v2"
    with open(os.path.join(OUT, f"{name}.json"), "w") as fh:
        json.dump(mj, fh, separators=(",", ":"))
    b2 = xgb.Booster(model_file=os.path.join(OUT, f"{name}.json"))
    rows_model = case_rows(rng, mj, nf, 16)
    save_cases(name, b2, rows_model, SCHEMA, to_schema(rows_model, SMALL_FEATURES, rng))

    # Benchmark model: 100 trees of depth 6 over 16 of the 24 schema features.
    rng = np.random.default_rng(10)
    x, sig = make_data(rng, 20000, len(BENCH_FEATURES))
    b = train({"objective": "binary:logistic", "max_depth": 6, "eta": 0.1}, x, binary(sig, rng),
              100, BENCH_FEATURES)
    mj = json.loads(b.save_raw("json"))
    for t in mj["learner"]["gradient_booster"]["model"]["trees"]:
        n = len(t["loss_changes"])
        for k in ("loss_changes", "sum_hessian", "base_weights"):
            t[k] = [0.0] * n
    b = xgb.Booster(model_file=bytearray(json.dumps(mj).encode()))
    raw = bytes(b.save_raw("ubj"))
    with open(os.path.join(OUT, "bench_d6_t100.ubj.gz"), "wb") as fh:
        # mtime=0 keeps the file byte-identical across runs.
        fh.write(gzip.compress(raw, compresslevel=9, mtime=0))
    b = xgb.Booster(model_file=bytearray(raw))
    mj = json.loads(b.save_raw("json"))
    rows_model = case_rows(rng, mj, len(BENCH_FEATURES), 32)
    save_cases("bench_d6_t100", b, rows_model, SCHEMA,
               to_schema(rows_model, BENCH_FEATURES, rng))

    # Refusals: categorical split, dart booster, gblinear booster.
    import pandas as pd

    rng = np.random.default_rng(11)
    cat = rng.integers(0, 5, size=1000)
    df = pd.DataFrame({"last_trade_sign": pd.Categorical(cat), "ofi_1s": rng.normal(size=1000)})
    y = (np.isin(cat, [1, 3])).astype(np.float32) * 2.0 + 0.1 * df["ofi_1s"].to_numpy()
    dm = xgb.DMatrix(df, label=y, enable_categorical=True)
    b = xgb.train({"seed": 0, "nthread": 1, "max_depth": 2, "max_cat_to_onehot": 1}, dm, 2)
    mj = json.loads(b.save_raw("json"))
    assert any(1 in t["split_type"] for t in mj["learner"]["gradient_booster"]["model"]["trees"])
    b.save_model(os.path.join(OUT, "refuse_categorical.json"))
    x, sig = make_data(rng, 500, 6)
    dm = xgb.DMatrix(x[:, :3], label=sig, feature_names=["mid", "ofi_1s", "rv_1s"])
    b = xgb.train({"seed": 0, "nthread": 1, "booster": "dart", "max_depth": 2}, dm, 2)
    b.save_model(os.path.join(OUT, "refuse_dart.json"))
    b = xgb.train({"seed": 0, "nthread": 1, "booster": "gblinear"}, dm, 2)
    b.save_model(os.path.join(OUT, "refuse_gblinear.json"))

    total = 0
    for f in sorted(os.listdir(OUT)):
        size = os.path.getsize(os.path.join(OUT, f))
        total += size
        print(f"{size:8d}  {f}")
    print(f"{total:8d}  total")
    return 0


if __name__ == "__main__":
    sys.exit(main())
