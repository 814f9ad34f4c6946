#!/usr/bin/env python3
"""Soak: `tickpipe run` beside a real `tickpipe replay` writer at a steady high rate for a set
time, with scoring-model promotions through the control plane and a writer restart (SIGKILL,
then a fresh writer and engine) in the middle.

Every `--sample-every` seconds it records the engine's anonymous resident memory (RssAnon from
/proc: the rings and model files are shared or file-backed mappings and are not in it), the
health rollup (`GET /health`: status, kill switch, per-stage p99 of the last report interval,
losses in the health window) and the promotions done. At the end of each half the engine is
stopped and its final report parsed (per-stage p99.9, ingest laps and missed frames, link drops).

It fails (exit 1) when
  - resident memory grows by more than --rss-growth-mb between the first sample after warm-up
    and the last sample of a half;
  - a stage's interval p99 drifts: the median of the last quarter of a half's samples exceeds
    --drift times the median of its first quarter (plus --drift-floor-us, so sub-microsecond
    noise on a shared host does not count);
  - anything is lost: ingest laps or missed frames, link drops, or losses in the health window;
  - a promotion is refused, health is not OK after warm-up (outside the restart), or the
    SIGKILLed writer is not detected (kill switch engaged, `run` exits 4).

Usage: python3 scripts/soak.py [--duration 600] [--rate 500000] [--out target/soak]
The binary is built with `cargo build --release` first unless --bin is given. The run's samples
go to OUT/samples.csv and its verdict to OUT/summary.json.
"""

import argparse
import csv
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "soak-key-0123456789abcdef"
STAGES = ["ingest", "features", "inference", "health"]
# Events per second of exchange time in `tickpipe gen` captures at 1x, as measured: 200,000
# events span 2.96 s, and the recorded 10-minute soak, paced on a nominal 50,000, ran 208 M
# frames in 5 minutes (693 k/s for a 500 k/s setting), i.e. about 69,000 events/s.
SYNTH_RATE = 69_000


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rss_kib(pid, field="RssAnon"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def http(addr, method, path, body=None):
    req = urllib.request.Request(f"http://{addr}{path}", method=method, data=body)
    if body is not None:
        req.add_header("X-API-Key", KEY)
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def copy_registry(out):
    """A private copy of the example registry: promotions rewrite its active-version files,
    which must not touch the repository's."""
    registry = os.path.join(out, "registry")
    shutil.rmtree(registry, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "models", "registry"), registry)
    return registry


def write_config(out, page, models):
    cfg = os.path.join(out, "soak.toml")
    fixtures = os.path.join(ROOT, "models", "fixtures")
    # Two cores: the writer spins on one, the whole pipeline on the other.
    text = f"""mode = "shared"
batch = 256
report_interval = "1s"

[links]
capacity = 4096

[stages.ingest]
core = 1
idle = "busy-spin"
[stages.features]
core = 1
idle = "busy-spin"
[stages.inference]
core = 1
idle = "busy-spin"
[stages.health]
core = 1
idle = "busy-spin"
[stages.forecast]
idle = "backoff"
[reporter]
idle = "sleeping:10ms"

[health]
page = "{page}"

[control]
bind = "127.0.0.1:0"
api_keys_env = "SOAK_TICKPIPE_KEYS"
"""
    if models:
        text += f"""
[models]
sjm = "{fixtures}/pipeline/sjm"
xgboost = "{fixtures}/pipeline/score.json"
lstm = "{fixtures}/lstm/lstm_h32.onnx"
lstm_bars = "1s"
"""
    with open(cfg, "w") as f:
        f.write(text)
    return cfg


class Half:
    """One writer and one engine, from start to the end of the half."""

    def __init__(self, args, name, capture, cfg, registry):
        self.name = name
        self.ring = os.path.join(args.ring_dir, f"tickpipe-soak-md-{os.getpid()}.ring")
        self.sig = os.path.join(args.ring_dir, f"tickpipe-soak-sig-{os.getpid()}.ring")
        for p in (self.ring, self.sig):
            if os.path.exists(p):
                os.unlink(p)
        speed = args.rate / SYNTH_RATE
        loops = int(args.duration * args.rate / args.events) + 2
        self.replay = subprocess.Popen(
            [args.bin, "replay", capture, "--ring", self.ring, "--speed", f"{speed:g}",
             "--loop", str(loops), "--capacity", "256M", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        env = dict(os.environ, SOAK_TICKPIPE_KEYS=KEY)
        self.log_path = os.path.join(args.out, f"run-{name}.log")
        self.log = open(self.log_path, "w")
        self.engine = subprocess.Popen(
            [args.bin, "run", "--config", cfg, "--md-ring", self.ring, "--signals", self.sig,
             "--wait", "30", "--from-oldest", "--stale-after", "500ms", "--registry", registry],
            env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            text=True)
        self.addr = None
        deadline = time.time() + 60
        while time.time() < deadline and self.addr is None:
            if self.engine.poll() is not None:
                raise SystemExit(f"run exited at start: {open(self.log_path).read()}")
            m = re.search(r"control plane http://([0-9.:]+)", open(self.log_path).read())
            if m:
                self.addr = m.group(1)
            time.sleep(0.1)
        if self.addr is None:
            raise SystemExit("run never reported its control plane address")
        self.started = time.time()

    def report(self):
        return open(self.log_path).read()

    def stop_engine(self):
        self.engine.send_signal(signal.SIGINT)
        code = self.engine.wait(timeout=60)
        self.log.close()
        return code

    def kill_writer(self):
        self.replay.kill()
        self.replay.wait()


def parse_report(text):
    """Per-stage p99.9 (us) and the loss counters from `run`'s final report."""
    units = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}

    def us(v):
        m = re.fullmatch(r"([0-9.]+)(ns|us|ms|s)", v)
        return float(m.group(1)) * units[m.group(2)] if m else None

    p999 = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 10 and (cols[0].endswith(".service") or cols[0] == "end_to_end"):
            p999[cols[0]] = us(cols[5])
    m = re.search(r"ingest: (\d+) frames, (\d+) laps \((\d+) frames missed\), (\d+) undecodable", text)
    ingest = dict(zip(["frames", "laps", "missed", "undecodable"], map(int, m.groups()))) if m else None
    drops = sum(int(d) for d in re.findall(r"dropped (\d+) stalls", text.split("features->forecast")[0]))
    return p999, ingest, drops


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=600, help="seconds in all (two halves)")
    ap.add_argument("--rate", type=float, default=500_000, help="events per second")
    ap.add_argument("--events", type=int, default=4_000_000, help="events in the looped capture")
    ap.add_argument("--swap-every", type=float, default=10, help="seconds between promotions")
    ap.add_argument("--sample-every", type=float, default=2, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=15, help="seconds ignored at each half's start")
    ap.add_argument("--rss-growth-mb", type=float, default=4)
    ap.add_argument("--drift", type=float, default=3.0)
    ap.add_argument("--drift-floor-us", type=float, default=20.0)
    ap.add_argument("--no-models", action="store_true", help="run without models (no promotions)")
    ap.add_argument("--bin", help="tickpipe binary (default: build target/release/tickpipe)")
    ap.add_argument("--ring-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "soak"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.bin is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
        args.bin = os.path.join(target, "release", "tickpipe")
    capture = os.path.join(args.out, f"soak-{args.events}.dbn.zst")
    if not os.path.exists(capture):
        subprocess.run([args.bin, "gen", "--seed", "11", "--events", str(args.events),
                        "--out", capture], check=True, stdout=subprocess.DEVNULL)
    page = os.path.join(args.ring_dir, f"tickpipe-soak-{os.getpid()}.page")
    cfg = write_config(args.out, page, not args.no_models)
    registry = copy_registry(args.out)

    failures = []
    rows = []
    halves = {}
    promotions = {"ok": 0, "refused": 0}
    half_len = args.duration / 2
    for name in ("first", "second"):
        log(f"{name} half: writer at {args.rate:,.0f} events/s, engine {cfg}")
        h = Half(args, name, capture, cfg, registry)
        next_swap = time.time() + args.swap_every
        version = "v2"
        samples = []
        while time.time() - h.started < half_len:
            time.sleep(args.sample_every)
            if h.engine.poll() is not None:
                failures.append(f"{name}: run exited early ({h.engine.returncode})")
                break
            if h.replay.poll() is not None:
                failures.append(f"{name}: writer exited early: {h.replay.stderr.read()[-500:]}")
                break
            t = time.time() - h.started
            code, body = http(h.addr, "GET", "/health")
            hj = json.loads(body)
            row = {
                "half": name,
                "t_s": round(t, 1),
                "rss_anon_kib": rss_kib(h.engine.pid),
                "rss_shmem_kib": rss_kib(h.engine.pid, "RssShmem"),
                "rss_file_kib": rss_kib(h.engine.pid, "RssFile"),
                "status": hj["status"],
                "kill": hj["kill_switch"]["engaged"],
                "signals": hj["counters"]["signals"],
                "missed_in_window": hj["counters"]["missed_in_window"],
                "dropped_in_window": hj["counters"]["dropped_in_window"],
            }
            for s in STAGES:
                row[f"{s}_p99_us"] = hj["stages"][s]["p99_us"]
            row["e2e_p99_us"] = hj["end_to_end"]["p99_us"]
            samples.append(row)
            if not args.no_models and time.time() >= next_swap:
                code, body = http(h.addr, "POST", "/models/score/promote",
                                  json.dumps({"version": version}).encode())
                if code == 200:
                    promotions["ok"] += 1
                else:
                    promotions["refused"] += 1
                    failures.append(f"{name}: promote {version} -> {code} {body.strip()}")
                version = "v1" if version == "v2" else "v2"
                next_swap += args.swap_every
        rows.extend(samples)
        steady = [r for r in samples if r["t_s"] >= args.warmup]
        verdict = {"samples": len(samples), "steady_samples": len(steady)}
        if len(steady) >= 4:
            growth = (steady[-1]["rss_anon_kib"] - steady[0]["rss_anon_kib"]) / 1024
            verdict["rss_anon_mb_first"] = steady[0]["rss_anon_kib"] / 1024
            verdict["rss_anon_mb_last"] = steady[-1]["rss_anon_kib"] / 1024
            verdict["rss_anon_mb_peak"] = max(r["rss_anon_kib"] for r in samples) / 1024
            verdict["rss_growth_mb"] = growth
            if growth > args.rss_growth_mb:
                failures.append(f"{name}: RssAnon grew {growth:.1f} MB (bound {args.rss_growth_mb})")
            q = max(1, len(steady) // 4)
            for s in STAGES + ["e2e"]:
                first = statistics.median(r[f"{s}_p99_us"] for r in steady[:q])
                last = statistics.median(r[f"{s}_p99_us"] for r in steady[-q:])
                verdict[f"{s}_p99_us_first_quarter"] = first
                verdict[f"{s}_p99_us_last_quarter"] = last
                if last > args.drift * first + args.drift_floor_us:
                    failures.append(f"{name}: {s} p99 drifted {first:.1f} -> {last:.1f} us")
            bad = [r for r in steady if r["status"] != "OK" or r["kill"]]
            verdict["not_ok_samples"] = len(bad)
            if bad:
                failures.append(f"{name}: {len(bad)} samples not OK, first at {bad[0]['t_s']} s: {bad[0]['status']}")
            lost = [r for r in steady if r["missed_in_window"] or r["dropped_in_window"]]
            if lost:
                failures.append(f"{name}: losses in the health window at {lost[0]['t_s']} s")
        else:
            failures.append(f"{name}: too few steady samples ({len(steady)}); lengthen --duration")

        if name == "first":
            # The writer dies mid-stream: the engine must see it (kill switch) and exit 4.
            log("SIGKILL to the writer")
            killed_at = time.time()
            h.kill_writer()
            engaged = None
            while time.time() - killed_at < 5 and engaged is None:
                code, body = http(h.addr, "GET", "/health")
                if json.loads(body)["kill_switch"]["engaged"]:
                    engaged = time.time() - killed_at
                time.sleep(0.05)
            verdict["kill_engaged_after_s"] = engaged
            if engaged is None:
                failures.append("writer SIGKILL: kill switch not engaged within 5 s")
            try:
                code = h.engine.wait(timeout=10)
            except subprocess.TimeoutExpired:
                code = None
                h.engine.kill()
            h.log.close()
            verdict["run_exit_after_writer_kill"] = code
            if code != 4:
                failures.append(f"writer SIGKILL: run exited {code}, expected 4")
        else:
            code = h.stop_engine()
            verdict["run_exit"] = code
            if code != 0:
                failures.append(f"second half: run exited {code} on SIGINT")
            h.kill_writer()
        p999, ingest, drops = parse_report(h.report())
        verdict["p99.9_us"] = p999
        verdict["ingest"] = ingest
        verdict["link_drops"] = drops
        if ingest is None:
            failures.append(f"{name}: no final report from run")
        elif ingest["laps"] or ingest["missed"] or ingest["undecodable"] or drops:
            failures.append(f"{name}: loss: {ingest}, link drops {drops}")
        halves[name] = verdict
        log(f"{name} half: {json.dumps(verdict)}")

    with open(os.path.join(args.out, "samples.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    summary = {
        "duration_s": args.duration,
        "rate_events_per_s": args.rate,
        "promotions": promotions,
        "halves": halves,
        "failures": failures,
        "passed": not failures,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    for p in (page,):
        if os.path.exists(p):
            os.unlink(p)
    for fail in failures:
        log(f"FAIL {fail}")
    log("PASS" if not failures else f"{len(failures)} failure(s)")
    sys.exit(0 if not failures else 1)


if __name__ == "__main__":
    main()
