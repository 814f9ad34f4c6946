#!/usr/bin/env python3
"""Latency of the control plane's answers, as a monitor sees them.

    python3 scripts/http_latency.py 127.0.0.1:8080 [--path /health] [--count 2000]
                                    [--idle-connections 0] [--slow-clients 0]

Sends `count` requests one after another, each on a new connection (as a probe does), and
prints percentiles of the time from connect to the last byte of the answer. While it measures,
`--idle-connections` connections stay open without sending anything and `--slow-clients`
threads each keep one connection dribbling a request a byte at a time: the hostile load a
control plane must shrug off. Prints how many answers had each status (a /health answer of
503 is a correct answer from an unhealthy engine); exits 1 when a request fails or an answer is
not HTTP.
"""
import argparse
import socket
import sys
import threading
import time


def request(addr, path):
    start = time.perf_counter_ns()
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    took = time.perf_counter_ns() - start
    head = b"".join(chunks).split(b"\r\n", 1)[0]
    return took, head


def dribble(addr, stop):
    while not stop.is_set():
        try:
            with socket.create_connection(addr, timeout=5) as s:
                for c in b"GET /health HTTP/1.1\r\nHost: x\r\n":
                    if stop.is_set():
                        return
                    s.send(bytes([c]))
                    time.sleep(0.05)
        except OSError:
            time.sleep(0.05)


def pct(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("--path", default="/health")
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--idle-connections", type=int, default=0)
    ap.add_argument("--slow-clients", type=int, default=0)
    a = ap.parse_args()
    host, _, port = a.addr.rpartition(":")
    addr = (host, int(port))
    idle = [socket.create_connection(addr, timeout=5) for _ in range(a.idle_connections)]
    stop = threading.Event()
    slow = [threading.Thread(target=dribble, args=(addr, stop), daemon=True) for _ in range(a.slow_clients)]
    for t in slow:
        t.start()
    times, statuses, bad = [], {}, 0
    try:
        for _ in range(a.count):
            try:
                took, head = request(addr, a.path)
            except OSError as e:
                bad += 1
                if bad <= 3:
                    print(f"request failed: {e}", file=sys.stderr)
                continue
            times.append(took)
            parts = head.split(b" ")
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                bad += 1
                continue
            code = parts[1].decode(errors="replace")
            statuses[code] = statuses.get(code, 0) + 1
    finally:
        stop.set()
        for s in idle:
            s.close()
    if not times:
        print("no answers", file=sys.stderr)
        return 1
    times.sort()
    us = lambda ns: f"{ns / 1000:.0f} us" if ns < 10_000_000 else f"{ns / 1e6:.1f} ms"
    print(
        f"GET {a.path}: {len(times)} requests ({a.idle_connections} idle connections, "
        f"{a.slow_clients} slow clients): p50 {us(pct(times, 0.5))} p90 {us(pct(times, 0.9))} "
        f"p99 {us(pct(times, 0.99))} p99.9 {us(pct(times, 0.999))} max {us(times[-1])}; "
        f"statuses {statuses}, {bad} failed"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
