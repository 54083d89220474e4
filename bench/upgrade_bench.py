#!/usr/bin/env python3
"""
upgrade_bench.py — `drover upgrade` (issue 11): how long the hub takes to
re-execute itself in place, what it costs the clients, and the gap it leaves
in the hub's own output.

For 4 and 64 workers of examples/httpd (`drover run -i N --listen`, reuseport):
wrk -t2 -c32 keep-alive for 6 s against 127.0.0.1, and ROUNDS upgrades during
it (the hub runs from a copy of drover that a fresh copy is renamed over before
each). Per round: the wall time from `drover upgrade` being started to the new
hub answering (the command exits then), and the longest gap between two lines
of the hub's NDJSON on stdout around it (interval 200 ms, so 200 ms is no gap
at all). wrk's requests and errors are for the whole run.

    python3 bench/upgrade_bench.py [BUILD_DIR [ROUNDS]]     (default: $DROVER_BUILD or build, 3)

Targets: 0 wrk errors and 0 non-2xx; upgrade wall time ≤ 250 ms (4 workers),
≤ 1 s (64); longest NDJSON gap ≤ 2 intervals + the wall time. Compare within
one run: the box is shared and noisy.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from ports import free_port  # noqa: E402  (beside this file: below the ephemeral range)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.path.abspath((sys.argv[1] if len(sys.argv) > 1 else None) or os.environ.get("DROVER_BUILD")
                        or os.path.join(REPO, "build"))
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
DROVER = os.path.join(BUILD, "drover")
HTTPD = os.path.join(BUILD, "examples", "httpd")
WRK = shutil.which("wrk")


def parse_wrk(out):
    m = re.search(r"(\d+) requests in", out)
    total = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total, errs, int(m.group(1)) if m else 0


def bench(n):
    d = tempfile.mkdtemp(prefix="drv-upb-", dir="/tmp")
    exe = os.path.join(d, "drover")
    shutil.copy2(DROVER, exe)
    port = free_port()
    hub = subprocess.Popen([exe, "run", "--headless", "--interval", "200", "--socket-dir", d, "--log-dir", d,
                            "--no-echo", "-i", str(n), "-n", "web", "--listen", f"127.0.0.1:{port}", "--", HTTPD],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stamps = []

    def read():
        for _ in hub.stdout:
            stamps.append(time.monotonic())
    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ls = subprocess.run([DROVER, "ls", "--socket-dir", d], capture_output=True, text=True)
            if f"web: {n}/{n} online" in ls.stdout:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"{n} workers not online")
        w = subprocess.Popen([WRK, "-t2", "-c32", "-d6s", "--timeout", "2s", f"http://127.0.0.1:{port}/"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)
        walls, gaps, ok = [], [], True
        for _ in range(ROUNDS):
            tmp = os.path.join(d, ".new")
            shutil.copy2(DROVER, tmp)
            os.rename(tmp, exe)
            t0 = time.monotonic()
            up = subprocess.run([DROVER, "upgrade", "--socket-dir", d], capture_output=True, text=True, timeout=60)
            t1 = time.monotonic()
            ok &= up.returncode == 0
            walls.append(t1 - t0)
            time.sleep(0.8)
            around = [t for t in stamps if t0 - 0.5 <= t <= t1 + 0.8]
            gaps.append(max((b - a for a, b in zip(around, around[1:])), default=0.0))
            time.sleep(0.3)
        out, _ = w.communicate(timeout=30)
        total, errs, non2xx = parse_wrk(out)
        return {"n": n, "ok": ok, "wall_ms": [x * 1000 for x in walls], "gap_ms": [x * 1000 for x in gaps],
                "requests": total, "errors": errs, "non2xx": non2xx}
    finally:
        hub.send_signal(signal.SIGTERM)
        try:
            hub.wait(timeout=30)
        except subprocess.TimeoutExpired:
            hub.kill()
        shutil.rmtree(d, ignore_errors=True)


def main():
    if not WRK:
        print("upgrade_bench: wrk is missing (apt-get install wrk)")
        return 1
    rows = [bench(4), bench(64)]
    print(f"drover upgrade under wrk -c32 keep-alive (reuseport, {ROUNDS} upgrades per run, interval 200 ms)")
    print("| workers | upgrade wall time (median / max) | target | longest NDJSON gap (max) | requests | errors | non-2xx |")
    print("|---|---|---|---|---|---|---|")
    missed = []
    for r in rows:
        w = sorted(r["wall_ms"])
        target = 250 if r["n"] == 4 else 1000
        mark = "✓" if w[-1] <= target else "✗"
        if w[-1] > target or r["errors"] or r["non2xx"] or not r["ok"]:
            missed.append(r["n"])
        print(f"| {r['n']} | {w[len(w) // 2]:.0f} ms / {w[-1]:.0f} ms | ≤ {target} ms {mark} | "
              f"{max(r['gap_ms']):.0f} ms | {r['requests']} | {r['errors']} | {r['non2xx']} |")
    if missed:
        print(f"targets missed for {missed} workers (or an upgrade failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
