#!/usr/bin/env bash
# Instructions per record through the ring (publish + read of an MBO record, one thread), counted
# by callgrind: exact and repeatable on noisy machines, so usable as a regression check.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example ring_ops
bin=target/release/examples/ring_ops
n=100000
count() { valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$@" 2>&1 | sed -n 's/.*Collected : //p'; }
base=$(count 0)
for mode in single batch; do
    total=$(count "$n" "$mode")
    echo "ring publish + $([ "$mode" = batch ] && echo 'read_batch(256)' || echo try_read): $(( (total - base) / n )) instructions per record ($total - $base over $n records)"
done
