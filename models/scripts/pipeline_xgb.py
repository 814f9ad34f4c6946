"""Trains the scoring model the engine ships with (models/fixtures/pipeline/score.json).

Input: feature rows exported by the engine itself, so that the model sees the numbers that serve:

    cargo run --release -- features \
        ../shared/data/dbn/es-mbo/esh4-glbx-mdp3-20231224.mbo.dbn.zst \
        ../shared/data/dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst --out /tmp/es_features.csv
    python models/scripts/pipeline_xgb.py /tmp/es_features.csv models/fixtures/pipeline/score.json

Target: whether the mid 100 vectors later is above the mid now (binary:logistic), from 16 of the
schema's features (price levels left out). Deterministic: one thread, fixed seed.
Requires the pins in models/scripts/requirements.txt.
"""

import sys

import numpy as np
import pandas as pd
import xgboost as xgb

FEATURES = [
    "spread_bps",
    "depth_imbalance_l1",
    "depth_imbalance_l2",
    "depth_imbalance_l3",
    "ofi_100ev",
    "ofi_1s",
    "ofi_10s",
    "last_trade_sign",
    "signed_volume_1s",
    "signed_volume_10s",
    "rv_1s",
    "rv_10s",
    "log_return_1s",
    "log_return_10s",
    "event_rate_1s",
    "trade_rate_1s",
]
HORIZON = 100


def main() -> None:
    src, out = sys.argv[1], sys.argv[2]
    df = pd.read_csv(src)
    mid = df["mid"].to_numpy()
    future = np.roll(mid, -HORIZON)
    ok = np.isfinite(mid) & np.isfinite(future)
    ok[-HORIZON:] = False
    x = df.loc[ok, FEATURES].astype(np.float32)
    y = (future[ok] > mid[ok]).astype(np.float32)
    dtrain = xgb.DMatrix(x, label=y, feature_names=FEATURES, missing=np.nan)
    params = {
        "objective": "binary:logistic",
        "max_depth": 4,
        "eta": 0.1,
        "subsample": 1.0,
        "nthread": 1,
        "seed": 7,
        "tree_method": "hist",
    }
    booster = xgb.train(params, dtrain, num_boost_round=50)
    booster.save_model(out)
    print(f"{out}: {len(y)} rows, positive rate {y.mean():.3f}, xgboost {xgb.__version__}")


if __name__ == "__main__":
    main()
