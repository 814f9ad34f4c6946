#!/usr/bin/env python3
"""Does a hostile control-plane client move the pipeline's latency? Side by side in one run.

`tickpipe run` beside a `tickpipe replay` writer (the soak's set-up: the writer spinning on one
core, the whole pipeline on the other), in alternating rounds:

  quiet    a monitor's load: one GET /health every 100 ms;
  hostile  the same probe, while --idle-connections connections stay open without a byte and
           --slow-clients clients dribble a request a byte at a time (slowloris);
  flood    GET /health back to back on new connections, as fast as one client can.

Each round runs a fresh writer and engine for --round seconds and ends with `run`'s final report.
Prints, per variant, the /health answer latency percentiles and the per-stage p99.9 from each
round's report, then each variant's ratio to quiet (medians across rounds). On a host where the
clients share the pipeline's cores, the flood measures CPU taken from the pipeline as much as
the server's behaviour. Exits 1 when a
round loses data or a request fails.

Usage: python3 scripts/control_ab.py [--rounds 2] [--round 20] [--rate 200000]
                                    [--idle-connections 32] [--slow-clients 8] [--bin PATH]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_latency  # noqa: E402
import soak  # noqa: E402


def measure(addr, variant, seconds, args):
    """Requests /health for `seconds`; returns (latencies in ns, failures)."""
    host, _, port = addr.rpartition(":")
    target = (host, int(port))
    stop = threading.Event()
    idle, slow = [], []
    if variant == "hostile":
        idle = [socket.create_connection(target, timeout=5) for _ in range(args.idle_connections)]
        slow = [threading.Thread(target=http_latency.dribble, args=(target, stop), daemon=True)
                for _ in range(args.slow_clients)]
        for t in slow:
            t.start()
    times, failed = [], 0
    end = time.time() + seconds
    try:
        while time.time() < end:
            try:
                took, head = http_latency.request(target, "/health")
                times.append(took)
                if not head.startswith(b"HTTP/1.1 "):
                    failed += 1
            except OSError:
                failed += 1
            if variant != "flood":
                time.sleep(0.1)
    finally:
        stop.set()
        for s in idle:
            s.close()
    return sorted(times), failed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2, help="rounds per variant")
    ap.add_argument("--round", type=float, default=20, help="seconds per round")
    ap.add_argument("--warmup", type=float, default=3, help="seconds before measuring")
    ap.add_argument("--rate", type=float, default=200_000, help="writer events per second")
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--idle-connections", type=int, default=32)
    ap.add_argument("--slow-clients", type=int, default=8)
    ap.add_argument("--bin", help="tickpipe binary (default: build target/release/tickpipe)")
    ap.add_argument("--ring-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
    ap.add_argument("--out", default=os.path.join(soak.ROOT, "target", "control-ab"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.bin is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=soak.ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(soak.ROOT, "target"))
        args.bin = os.path.join(target, "release", "tickpipe")
    args.duration = args.round
    capture = os.path.join(args.out, f"ab-{args.events}.dbn.zst")
    if not os.path.exists(capture):
        subprocess.run([args.bin, "gen", "--seed", "11", "--events", str(args.events),
                        "--out", capture], check=True, stdout=subprocess.DEVNULL)
    page = os.path.join(args.ring_dir, f"tickpipe-ab-{os.getpid()}.page")
    cfg = soak.write_config(args.out, page, True)
    registry = soak.copy_registry(args.out)

    variants = ("quiet", "hostile", "flood")
    results = {v: [] for v in variants}
    problems = []
    for i in range(args.rounds):
        for variant in variants:
            name = f"{variant}-{i + 1}"
            soak.log(f"round {name}: writer at {args.rate:,.0f} events/s")
            h = soak.Half(args, name, capture, cfg, registry)
            time.sleep(args.warmup)
            times, failed = measure(h.addr, variant, args.round - args.warmup, args)
            code = h.stop_engine()
            h.kill_writer()
            p999, ingest, drops = soak.parse_report(h.report())
            if failed:
                problems.append(f"{name}: {failed} /health requests failed")
            if ingest is None or ingest["laps"] or ingest["missed"] or drops:
                problems.append(f"{name}: loss: ingest {ingest}, link drops {drops}")
            if code != 0:
                problems.append(f"{name}: run exited {code}")
            results[variant].append((times, p999))
            pct = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1e3 if times else float("nan")
            soak.log(f"round {name}: {len(times)} requests, /health p50 {pct(0.5):.0f} us "
                     f"p99 {pct(0.99):.0f} us max {pct(1.0):.0f} us; stage p99.9 (us) "
                     + ", ".join(f"{k} {v:.1f}" for k, v in sorted(p999.items())))

    def median_of(variant, value):
        vals = [v for v in (value(t, p) for t, p in results[variant]) if v is not None]
        return statistics.median(vals) if vals else float("nan")

    def q_of(q):
        return lambda t, _p: t[min(len(t) - 1, int(q * len(t)))] / 1e3 if t else None

    print()
    print(f"{'series':<24}" + "".join(f"{v:>12}" for v in variants)
          + "".join(f"{v + '/quiet':>15}" for v in variants[1:]))
    rows = [(f"/health p{q * 100:g} (us)", q_of(q)) for q in (0.5, 0.99, 0.999)]
    series = sorted(set().union(*(p.keys() for v in variants for _, p in results[v])))
    rows += [(f"{s} p99.9 (us)", lambda _t, p, s=s: p.get(s)) for s in series]
    for label, value in rows:
        m = [median_of(v, value) for v in variants]
        print(f"{label:<24}" + "".join(f"{x:>12.1f}" for x in m)
              + "".join(f"{x / m[0]:>15.2f}" for x in m[1:]))
    for p in problems:
        print(f"FAIL {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
