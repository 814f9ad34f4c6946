#!/usr/bin/env bash
# Instructions per item on the hot path, counted by callgrind: exact and repeatable on noisy
# machines, so they serve as the regression check that wall times cannot be.
#
#   bash benches/callgrind.sh            print the counts
#   bash benches/callgrind.sh --check    also compare with benches/callgrind-baseline.txt and
#                                        exit 1 when a count is more than TOLERANCE_PCT above it
#   bash benches/callgrind.sh --update   rewrite the baseline from this run
#
# Workloads: `examples/ring_ops.rs` (publish + read of an MBO record on one thread, minus an
# empty run) and `examples/stage_ops.rs` (books, features, inference, health tally, and a feed
# handler's publish plus the whole engine in Invoker mode; only the `measure_*` functions are
# counted, minus a run with zero items) and `models/examples/sjm_ops.rs` (the jump model's online
# step, K = 3, F = 10, counted the same way).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
    "" | --check | --update) ;;
    *) echo "usage: $0 [--check | --update]" >&2; exit 2 ;;
esac
baseline=${CALLGRIND_BASELINE:-benches/callgrind-baseline.txt}
tolerance=${TOLERANCE_PCT:-3}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 2; }

cargo build --release --quiet --example ring_ops --example stage_ops
cargo build --release --quiet -p tickpipe-models --example sjm_ops
dir=${CARGO_TARGET_DIR:-target}/release/examples

collected() { sed -n 's/.*Collected : //p'; }
ring() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$dir/ring_ops" "$@" 2>&1 | collected; }
stage() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*measure_*' \
        "$dir/stage_ops" "$@" 2>&1 | collected
}
sjm() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='*measure_*' \
        "$dir/sjm_ops" "$@" 2>&1 | collected
}

results=()
report() { # name, total, empty, items
    local per=$(( ($2 - $3) / $4 ))
    [ "$per" -gt 0 ] || { echo "callgrind.sh: $1: no count ($2 - $3)" >&2; exit 2; }
    printf '%-34s %8d instructions per item (%d - %d over %d)\n' "$1" "$per" "$2" "$3" "$4"
    results+=("$1 $per")
}

n=100000
empty=$(ring 0)
report ring.publish+try_read "$(ring $n single)" "$empty" $n
report ring.publish+read_batch256 "$(ring $n batch)" "$empty" $n
for spec in books:100000 features:100000 inference:50000 health:50000 engine:20000; do
    w=${spec%%:*} k=${spec##*:}
    report "stage.$w" "$(stage "$w" "$k")" "$(stage "$w" 0)" "$k"
done
report models.sjm_step "$(sjm $n)" "$(sjm 0)" $n

if [ "$mode" = --update ]; then
    {
        echo "# Instructions per item, from: bash benches/callgrind.sh --update"
        echo "# rustc: $(rustc --version)"
        printf '%s\n' "${results[@]}"
    } > "$baseline"
    echo "wrote $baseline"
elif [ "$mode" = --check ]; then
    [ -f "$baseline" ] || { echo "callgrind.sh: no $baseline" >&2; exit 2; }
    failed=0
    for r in "${results[@]}"; do
        name=${r% *} now=${r##* }
        was=$(awk -v k="$name" '$1 == k { print $2 }' "$baseline")
        if [ -z "$was" ]; then
            echo "callgrind.sh: $name is not in $baseline (run --update)" >&2
            failed=1
            continue
        fi
        pct=$(awk -v a="$now" -v b="$was" 'BEGIN { printf "%+.1f", (a - b) * 100 / b }')
        if [ $(( now * 100 )) -gt $(( was * (100 + tolerance) )) ]; then
            echo "REGRESSION $name: $now instructions per item, baseline $was ($pct%, tolerance $tolerance%)"
            failed=1
        else
            echo "ok $name: $now (baseline $was, $pct%)"
        fi
    done
    exit "$failed"
fi
