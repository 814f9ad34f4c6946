#!/usr/bin/env bash
# The model benchmarks side by side with their Python references, with ratios.
#
#   bash benches/python/compare_models.sh [PYTHON]
#
# Runs the criterion benches of the jump model, the XGBoost evaluator and the LSTM step, then the
# reference scripts (jumpmodels 0.1.1, XGBoost 3.2, onnxruntime 1.31.1) on the same models and
# data; each script reads criterion's estimates and prints Rust / Python ratios. PYTHON defaults
# to .venv/bin/python (make it with: python3 -m venv .venv && .venv/bin/pip install -r
# models/scripts/requirements.txt). A script whose library is missing prints a skip line.
set -euo pipefail
cd "$(dirname "$0")/../.."
py="${1:-.venv/bin/python}"
for m in sjm xgb lstm; do
    printf '\n=== %s: criterion\n' "$m"
    cargo bench -p tickpipe-models --bench "$m" 2>&1 | grep -Ev '^(Benchmarking|Gnuplot|Found [0-9]+ outliers| +[0-9]+ \(|change:| +(time|thrpt): +\[[-+−])|^$' || true
    printf '\n=== %s: Python reference\n' "$m"
    "$py" "benches/python/${m}_reference.py"
done
