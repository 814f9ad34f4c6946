#!/usr/bin/env bash
# Rebuilds the example model registry in models/registry/ from the shipped model fixtures.
#
# Run from the repository root, with the feature rows the scoring model was trained on:
#
#     cargo run --release -- features \
#         ../shared/data/dbn/es-mbo/esh4-glbx-mdp3-20231224.mbo.dbn.zst \
#         ../shared/data/dbn/es-mbo/esh4-glbx-mdp3-20231225.mbo.dbn.zst --out /tmp/es_features.csv
#     FEATURES_CSV=/tmp/es_features.csv models/registry/build.sh
#
# Deterministic apart from the `created` times: the golden inputs are fixed rows of the feature
# file (every 1400th row for `score`; data rows 0..7 then 282..321 as one stream for `regime`,
# which starts on a row with a missing value and crosses two regime switches) and the first 32
# steps of instrument 0 in models/fixtures/lstm/lstm_h32_golden.csv for `forecast`; the
# recorded outputs are the crate's own outputs on them (the parity tests of each model kind tie
# those to the reference libraries). Existing versions are removed first.
set -euo pipefail
FEATURES_CSV=${FEATURES_CSV:-/tmp/es_features.csv}
REG=models/registry
BIN=${TICKPIPE:-target/release/tickpipe}
[ -x "$BIN" ] || cargo build --release --bin tickpipe
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# score / regime inputs: header + selected rows of the feature file.
awk -F, 'NR == 1 || (NR > 1 && (NR - 2) % 1400 == 0 && NR <= 2 + 1400 * 31)' "$FEATURES_CSV" \
    > "$tmp/score.csv"
awk -F, 'NR == 1 || (NR >= 2 && NR < 10) || (NR >= 284 && NR < 324)' "$FEATURES_CSV" \
    > "$tmp/regime.csv"
# forecast inputs: instrument 0, steps 0..31 of the LSTM parity goldens.
{
    echo "bar_log_return,bar_log_range,bar_log_volume,bar_log_trades"
    awk -F, '!/^#/ && $1 == 0 && $2 < 32 { print $3 "," $4 "," $5 "," $6 }' \
        models/fixtures/lstm/lstm_h32_golden.csv
} > "$tmp/forecast.csv"

rm -rf "$REG/score" "$REG/regime" "$REG/forecast"
"$BIN" models register --registry "$REG" --name score --version v1 --kind xgboost \
    --artifact models/fixtures/pipeline/score.json --goldens-input "$tmp/score.csv" \
    --train-start "ES MBO 2023-12-24" --train-end "ES MBO 2023-12-25" \
    --tolerance 1e-6 --latency-budget-us 1000
"$BIN" models register --registry "$REG" --name score --version v2 --kind xgboost \
    --artifact models/fixtures/xgb/binary_logistic_v2.json --goldens-input "$tmp/score.csv" \
    --train-start "synthetic, models/scripts/xgb_golden.py" --train-end "synthetic" \
    --tolerance 1e-6 --latency-budget-us 1000
"$BIN" models register --registry "$REG" --name regime --version v1 --kind sjm \
    --artifact models/fixtures/pipeline/sjm --goldens-input "$tmp/regime.csv" \
    --train-start "ES MBO 2023-12-24" --train-end "ES MBO 2023-12-25" \
    --tolerance 1e-9 --latency-budget-us 1000
"$BIN" models register --registry "$REG" --name forecast --version v1 --kind onnx-lstm \
    --artifact models/fixtures/lstm/lstm_h32.onnx --goldens-input "$tmp/forecast.csv" \
    --train-start "see models/scripts/lstm_golden.py" --train-end "see models/scripts/lstm_golden.py" \
    --tolerance 1e-5 --latency-budget-us 20000
"$BIN" models promote --registry "$REG" score v1
"$BIN" models promote --registry "$REG" score v2
"$BIN" models promote --registry "$REG" regime v1
"$BIN" models promote --registry "$REG" forecast v1
"$BIN" models list --registry "$REG"
