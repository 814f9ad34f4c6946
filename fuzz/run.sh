#!/usr/bin/env bash
# Time-boxed fuzzing of every parser of untrusted bytes: builds the cargo-fuzz targets and runs
# each for SECONDS (default 60), one after the other.
#
#   fuzz/run.sh [SECONDS]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); nightly flags come from the stable
# toolchain with RUSTC_BOOTSTRAP=1. Environment:
#   FUZZ_TARGET_DIR  build directory (default $CARGO_TARGET_DIR/fuzz, else fuzz/target)
#   SANITIZER        address (default) or none
#   TARGETS          space-separated subset of the targets (default: every one `cargo fuzz list`
#                    names)
#
# The committed seeds (fuzz/seeds/<target>/, written by the `seeds` example: see
# fuzz/examples/seeds.rs) are copied into the working corpus fuzz/corpus/<target>/,
# which grows between runs and is not committed. Crashing inputs land in
# fuzz/artifacts/<target>/. Prints per target the executions and any crash, and writes the
# summary table fuzz/last-run.md. Exits non-zero when a target crashed.
set -euo pipefail

SECS="${1:-60}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
cd "$ROOT"

export RUSTC_BOOTSTRAP=1
SANITIZER="${SANITIZER:-address}"
if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
    TARGET_DIR="$FUZZ_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    TARGET_DIR="$CARGO_TARGET_DIR/fuzz"
else
    TARGET_DIR="$HERE/target"
fi

if [[ -z "${TARGETS:-}" ]]; then
    TARGETS="$(cargo fuzz list --fuzz-dir fuzz | tr '\n' ' ')"
fi
if [[ ! -d fuzz/seeds ]]; then
    echo "fuzz/seeds is missing: the targets start from an empty corpus" >&2
fi

echo "building: $TARGETS (sanitizer: $SANITIZER)"
cargo fuzz build --fuzz-dir fuzz --target-dir "$TARGET_DIR" -s "$SANITIZER"
BIN_DIR="$TARGET_DIR/x86_64-unknown-linux-gnu/release"

SUMMARY="fuzz/last-run.md"
ROWS=()
FAILED=0
for t in $TARGETS; do
    corpus="fuzz/corpus/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    if [[ -d "fuzz/seeds/$t" ]]; then
        cp -n "fuzz/seeds/$t"/* "$corpus"/ 2>/dev/null || true
    fi
    before="$(ls "$artifacts" | wc -l)"
    log="$(mktemp)"
    echo "== $t: ${SECS}s"
    set +e
    "$BIN_DIR/$t" "$corpus" \
        -max_total_time="$SECS" \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    set -e
    execs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 \
        | awk '{print $2}' || true)"
    if [[ -z "$execs" ]]; then
        # No final stats (killed): the last progress line carries the count.
        execs="$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#' || true)"
    fi
    execs="${execs:-0}"
    size="$(ls "$corpus" | wc -l)"
    new=$(( $(ls "$artifacts" | wc -l) - before ))
    crash="none"
    if [[ $rc -ne 0 || $new -gt 0 ]]; then
        FAILED=1
        # The panic message (the line after "panicked at"), else the sanitizer's summary.
        crash="$(grep -m1 -A1 'panicked at' "$log" | tail -1 | cut -c1-160 || true)"
        if [[ -z "$crash" ]]; then
            crash="$(grep -m1 -E '^(==[0-9]+==ERROR|SUMMARY:)' "$log" | cut -c1-160 || true)"
        fi
        crash="${crash:-exit $rc}; $(ls -t "$artifacts" | head -1)"
        echo "   CRASH: $crash"
        echo "   log kept at $log"
    else
        rm -f "$log"
    fi
    echo "   executions: $execs, corpus: $size files"
    ROWS+=("| $t | $SECS | $execs | $size | ${crash//|/\\|} |")
done

{
    echo "# Last fuzz run"
    echo
    echo "\`fuzz/run.sh $SECS\` on $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, sanitizer: $SANITIZER."
    echo
    echo "| target | seconds | executions | corpus files | crashes |"
    echo "|---|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
} >"$SUMMARY"
echo "summary written to $SUMMARY"
exit "$FAILED"
