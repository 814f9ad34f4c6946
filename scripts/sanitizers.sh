#!/usr/bin/env bash
# ThreadSanitizer and AddressSanitizer runs of the shm crate's concurrency and cross-process
# tests. Low cadence (before a release, or after touching the ring, the page or the mapping
# code); not part of CI.
#
#   scripts/sanitizers.sh [thread|address|all]     (default: all)
#
# Uses the stable toolchain with RUSTC_BOOTSTRAP=1 for `-Zsanitizer`, an explicit
# `--target x86_64-unknown-linux-gnu` (so build scripts and proc macros stay uninstrumented) and
# its own target directory ($SANITIZER_TARGET_DIR, default $CARGO_TARGET_DIR/sanitizers, else
# target/sanitizers), so it never invalidates the ordinary build.
#
# thread:  shm/tests/tsan.rs (a `harness = false` binary): ring writer and reader threads over
#          heap and file-mapped regions, a reader the writer keeps lapping, a writer in another
#          process, the health page seqlock. Only that binary: libtest hands each result to its
#          main thread over a std channel, which the uninstrumented std hides from TSan, and every
#          libtest binary then reports a (false) race on the result (seen with `--test page`).
# address: the shm crate's unit tests, the page tests and the same tsan binary, with
#          LeakSanitizer. scripts/lsan.supp suppresses one deliberate leak: the SIGBUS guard's
#          per-mapping message (sigbus.rs), never freed because the handler may read it at any
#          time. It grows by about 250 bytes per mapping made, which matters only to a process
#          that maps and unmaps rings without end.
#
# What ThreadSanitizer can and cannot say here:
# - Every shared word of the ring and the page is an AtomicU64, so the protocol's own accesses
#   never race in the sanitizer's model, fences or not. TSan does not model
#   `atomic::fence`; it would report false races only on non-atomic data published through a
#   fence, and the ring and page publish none (payloads are copied out through atomic loads).
#   No `--cfg tsan` accommodation is needed. The flip side: TSan cannot check that the fences
#   make the seqlock validation sound. The loom model (tests/loom.rs) checks that; the tsan
#   binary checks its outcome on real hardware (no torn payload, exact loss accounting).
# - The standard library is not rebuilt with the sanitizer (no `-Zbuild-std`, which needs a
#   nightly rust-src). Its internals are not instrumented: a race inside std would go unseen,
#   and synchronisation std does with its own atomics and futexes (Mutex, channels, `Arc`'s
#   fence on drop, `thread::scope`'s end) is invisible, which can produce false reports on data
#   handed over that way. The tsan binary therefore hands data between threads only through
#   `spawn` and an explicit `join` (pthread_create/pthread_join, which TSan intercepts), and the
#   main thread drops the last reference to each shared region after the joins (a last `Arc`
#   drop on a worker frees after an Acquire fence: a false report, seen and avoided).
# - Shared memory between processes: each process is checked on its own; accesses from the
#   other process are invisible to it.
# - The SPSC links between pipeline stages are rtrb rings in the pipeline crate, not in shm, so
#   they are not covered here.
set -euo pipefail

MODE="${1:-all}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET=x86_64-unknown-linux-gnu
if [[ -n "${SANITIZER_TARGET_DIR:-}" ]]; then
    TARGET_DIR="$SANITIZER_TARGET_DIR"
elif [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    TARGET_DIR="$CARGO_TARGET_DIR/sanitizers"
else
    TARGET_DIR="$ROOT/target/sanitizers"
fi
export RUSTC_BOOTSTRAP=1

run() {
    local san="$1"
    shift
    local started=$SECONDS
    echo "== $san: $*"
    RUSTFLAGS="-Zsanitizer=$san -Cunsafe-allow-abi-mismatch=sanitizer -Cdebug-assertions" \
    RUSTDOCFLAGS="-Zsanitizer=$san -Cunsafe-allow-abi-mismatch=sanitizer" \
        cargo test --target "$TARGET" --target-dir "$TARGET_DIR/$san" -p tickpipe-shm "$@"
    echo "== $san: passed in $((SECONDS - started)) s"
}

case "$MODE" in
thread | all)
    # halt_on_error: the first report fails the run, with its exit status.
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
    run thread --test tsan
    ;;&
address | all)
    export ASAN_OPTIONS="detect_leaks=1 ${ASAN_OPTIONS:-}"
    export LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp ${LSAN_OPTIONS:-}"
    run address --lib --test tsan --test page
    ;;
thread) ;;
*)
    echo "usage: $0 [thread|address|all]" >&2
    exit 2
    ;;
esac
