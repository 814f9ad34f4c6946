#!/usr/bin/env python3
"""Does a change of configuration move the per-event path's latency? Two variants side by side.

Runs `tickpipe profile` with the arguments of variant A and of variant B in alternating rounds
(A B B A A B ...: each variant runs as often first as second, so slow drift of the host does not
favour one), each on the same generated input at the same paced rate, and reads each run's
summary.json. Prints, per latency series, the median across rounds of p50 and p99.9 for each
variant, their spread (min..max), and B / A of the medians. One profile run's p99.9 on a shared
host moves by more than the effects this is meant to show; the median of several interleaved
rounds is what the ratio is taken of.

Typical pairs:

  the LSTM lane      --a="--no-lstm"  --b=""
  scoring swaps      --a="--no-lstm"  --b="--no-lstm --swap-every 10ms"
  a shadow candidate --a="--no-lstm"  --b="--no-lstm --shadow models/fixtures/xgb/binary_logistic.json"

(write --a=ARGS with the "=": ARGS start with "--").

Exits 1 when a run fails or loses events on the main path (profile's own exit code).

Usage: python3 scripts/profile_ab.py --a=ARGS --b=ARGS [--rounds 6] [--events 2000000]
                                    [--rate 1000000] [--bin target/release/tickpipe]
                                    [--extra="--config tuning/profiles/two-core.toml"]
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

SERIES = [
    "ingest.service",
    "features.service",
    "inference.service",
    "health.service",
    "end_to_end",
]


def run(args, variant_args, out):
    cmd = ([args.bin, "profile", "--generate", str(args.events), "--rate", str(args.rate),
            "--out", out] + shlex.split(args.extra) + shlex.split(variant_args))
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-3000:])
        raise SystemExit(f"profile_ab: {' '.join(cmd)} exited {p.returncode}")
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)["series"]


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f}ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f}us"
    return f"{ns:.0f}ns"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="profile arguments of variant A (the baseline)")
    ap.add_argument("--b", required=True, help="profile arguments of variant B")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--rate", type=int, default=1_000_000)
    ap.add_argument("--extra", default="", help="arguments given to both variants")
    ap.add_argument("--bin", default="target/release/tickpipe")
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")

    results = {"A": [], "B": []}
    with tempfile.TemporaryDirectory(prefix="profile-ab-") as tmp:
        for r in range(args.rounds):
            order = ("A", "B") if r % 4 in (0, 3) else ("B", "A")
            for v in order:
                out = os.path.join(tmp, f"{v}{r}")
                series = run(args, args.a if v == "A" else args.b, out)
                results[v].append(series)
                e2e = series["end_to_end"]
                print(f"round {r + 1} {v}: end_to_end p50 {fmt(e2e['p50'])} "
                      f"p99.9 {fmt(e2e['p99_9'])}", flush=True)

    print(f"\nA = {args.a or '(defaults)'}\nB = {args.b or '(defaults)'}")
    print(f"{args.rounds} rounds each, {args.events} events at {args.rate}/s; medians across "
          f"rounds (min..max)\n")
    print(f"{'series':<18} {'A p50':>8} {'B p50':>8} {'B/A':>5}   "
          f"{'A p99.9':>24} {'B p99.9':>24} {'B/A':>5}")
    for name in SERIES:
        def col(v, q):
            return [s[name][q] for s in results[v] if name in s]
        a50, b50 = col("A", "p50"), col("B", "p50")
        a999, b999 = col("A", "p99_9"), col("B", "p99_9")
        if not a999 or not b999:
            continue
        ma50, mb50 = statistics.median(a50), statistics.median(b50)
        ma, mb = statistics.median(a999), statistics.median(b999)

        def spread(m, xs):
            return f"{fmt(m)} ({fmt(min(xs))}..{fmt(max(xs))})"
        print(f"{name:<18} {fmt(ma50):>8} {fmt(mb50):>8} {mb50 / ma50:>5.2f}   "
              f"{spread(ma, a999):>24} {spread(mb, b999):>24} {mb / ma:>5.2f}")


if __name__ == "__main__":
    main()
