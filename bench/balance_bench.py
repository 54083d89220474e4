#!/usr/bin/env python3
"""
balance_bench.py — how evenly `drover run --listen` spreads load over its
workers, per --balance mode (issue 16), with examples/httpd and wrk.

For each mode (shared, reuseport), keep-alive and connection-close load, and
4 and 8 workers: wrk -t2 -c32 for DURATION seconds against 127.0.0.1, then
each worker's requests from the agent (`drover ls --json`, req_total): the
smallest and largest share and the total rate. Then, per mode, the errors
wrk counts (connect + read + write + timeout) during a rolling reload
(wrk -c32 keep-alive) and during a scale 4 -> 2 (wrk -c64 Connection: close).

    python3 bench/balance_bench.py [BUILD_DIR [DURATION]]    (default: $DROVER_BUILD or build, 10 s)
    python3 bench/balance_bench.py --accept [BUILD_DIR [DURATION]]   (default 6 s)

--accept measures only the example server's accepting in shared mode (4
workers, keep-alive, three runs of libuv's uv_listen and three of the
default acceptor thread; target: every share 15-35 % with the default).

Targets: reuseport keep-alive shares 15-35 % with 4 workers (ideal 25 %);
0 errors during reload and scale-down in reuseport. On a shared 2-core box
the rates are noisy: compare within one run.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from ports import free_port  # noqa: E402  (beside this file: below the ephemeral range)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCEPT = "--accept" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--accept"]
BUILD = os.path.abspath((ARGS[0] if ARGS else None) or os.environ.get("DROVER_BUILD")
                        or os.path.join(REPO, "build"))
DROVER = os.path.join(BUILD, "drover")
HTTPD = os.path.join(BUILD, "examples", "httpd")


def wrk_errors(out):
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return sum(map(int, m.groups())) if m else 0


def wrk_rate(out):
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(m.group(1)) if m else 0.0


class Cluster:
    """A `drover run --headless` of httpd workers on a fresh port and socket directory."""

    def __init__(self, mode, n, httpd_args=()):
        self.dir = tempfile.mkdtemp(prefix="drv-bal-", dir="/tmp")
        self.port = free_port()
        self.err = open(os.path.join(self.dir, "hub.err"), "w+")
        self.p = subprocess.Popen([DROVER, "run", "--headless", "--interval", "200", "--socket-dir", self.dir,
                                   "--log-dir", self.dir, "-i", str(n), "-n", "web", "--balance", mode,
                                   "--listen", f"127.0.0.1:{self.port}", "--no-echo", "--", HTTPD, *httpd_args],
                                  stdout=subprocess.DEVNULL, stderr=self.err, start_new_session=True)
        self.wait(lambda: self.online() == n, "workers online")

    def ls(self):
        out = subprocess.run([DROVER, "ls", "--json", "--socket-dir", self.dir], capture_output=True,
                             text=True, timeout=10).stdout
        return json.loads(out) if out.strip() else {"workers": []}

    def online(self):
        try:
            return sum(1 for w in self.ls()["workers"] if w["state"] == "online")
        except (ValueError, subprocess.SubprocessError):
            return -1

    def counts(self):
        return {w["id"]: w["req_total"] or 0 for w in self.ls()["workers"] if w["state"] == "online"}

    def wait(self, pred, what, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}")

    def stderr(self):
        self.err.seek(0)
        return self.err.read()

    def ctl(self, *args):
        subprocess.run([DROVER, *args, "--socket-dir", self.dir], capture_output=True, timeout=10)

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wrk(port, conns, secs, close=False):
    args = ["wrk", "-t2", f"-c{conns}", f"-d{secs}s", "--timeout", "2s"]
    if close:
        args += ["-H", "Connection: close"]
    return subprocess.Popen(args + [f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def spread(mode, n, close, secs, httpd_args=()):
    c = Cluster(mode, n, httpd_args)
    try:
        time.sleep(0.5)
        before = c.counts()
        out, _ = wrk(c.port, 32, secs, close).communicate(timeout=secs + 30)
        time.sleep(0.6)   # the last reports (interval 200 ms)
        after = c.counts()
        per = [after.get(i, 0) - before.get(i, 0) for i in sorted(after)]
        total = sum(per) or 1
        shares = [100.0 * x / total for x in per]
        return min(shares), max(shares), wrk_rate(out), wrk_errors(out)
    finally:
        c.stop()


def during(mode, what, secs):
    c = Cluster(mode, 4)
    try:
        time.sleep(0.5)
        close = what == "scale 4->2"
        w = wrk(c.port, 64 if close else 32, secs, close)
        time.sleep(1.5)
        if what == "reload":
            os.kill(c.p.pid, signal.SIGHUP)
            c.wait(lambda: "reload web: done" in c.stderr(), "the reload", 30)
        elif what == "restart 1":
            c.ctl("restart", "web:1")
        else:
            c.ctl("scale", "web", "2")
        out, _ = w.communicate(timeout=secs + 30)
        return wrk_errors(out), wrk_rate(out)
    finally:
        c.stop()


def held(pid):
    """Connections a worker holds: its TCP sockets (from /proc) but fd 3 and the agent's."""
    n = 0
    for f in os.listdir(f"/proc/{pid}/fd"):
        try:
            n += os.readlink(f"/proc/{pid}/fd/{f}").startswith("socket:")
        except FileNotFoundError:
            pass
    return n - 2


def accept_run(httpd_args, secs):
    """Shared mode, 4 workers, wrk -c32 keep-alive: (connections per worker 2 s in, min, max share, req/s)."""
    c = Cluster("shared", 4, httpd_args)
    try:
        time.sleep(0.5)
        pids = {w["id"]: w["pid"] for w in c.ls()["workers"]}
        before = c.counts()
        w = wrk(c.port, 32, secs)
        time.sleep(2)
        conns = [held(pids[i]) for i in sorted(pids)]
        out, _ = w.communicate(timeout=secs + 30)
        time.sleep(0.6)   # the last reports (interval 200 ms)
        after = c.counts()
        per = [after.get(i, 0) - before.get(i, 0) for i in sorted(after)]
        total = sum(per) or 1
        shares = [100.0 * x / total for x in per]
        return conns, min(shares), max(shares), wrk_rate(out)
    finally:
        c.stop()


def accept_main(secs):
    """`--accept`: the example server's accepting in shared mode, libuv's uv_listen against the default."""
    print(f"Shared mode, 4 workers, wrk -t2 -c32 {secs}s keep-alive, three runs each")
    print("(connections per worker 2 s in; min-max share of requests; req/s)\n")
    print("| httpd | run 1 | run 2 | run 3 |")
    print("|---|---|---|---|")
    for label, args in (("--accept-batch 0 (uv_listen)", ("--accept-batch", "0")), ("default", ())):
        cells = []
        for _ in range(3):
            conns, lo, hi, rate = accept_run(args, secs)
            cells.append(f"{'/'.join(map(str, conns))}; {lo:.1f}-{hi:.1f} %; {rate:.0f}")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


def main():
    if ACCEPT:
        accept_main(int(ARGS[1]) if len(ARGS) > 1 else 6)
        return
    secs = int(ARGS[1]) if len(ARGS) > 1 else 10
    modes = ("shared", "reuseport")
    print(f"Per-worker share of requests, wrk -t2 -c32 {secs}s against 127.0.0.1, examples/httpd")
    print("(target: reuseport keep-alive 4 workers, every share 15-35 %)\n")
    print("| mode | load | workers | min share | max share | max/min | req/s | wrk errors |")
    print("|---|---|---|---|---|---|---|---|")
    for n in (4, 8):
        for close in (False, True):
            for mode in modes:
                lo, hi, rate, errs = spread(mode, n, close, secs)
                ratio = f"{hi / lo:.1f}" if lo > 0 else "inf"
                print(f"| {mode} | {'close' if close else 'keep-alive'} | {n} | {lo:.1f} % | {hi:.1f} % | "
                      f"{ratio} | {rate:.0f} | {errs} |", flush=True)
    print(f"\nErrors during changes, wrk {secs}s (target: 0 in reuseport)\n")
    print("| mode | change | load | wrk errors | req/s |")
    print("|---|---|---|---|---|")
    for what in ("reload", "restart 1", "scale 4->2"):
        for mode in modes:
            errs, rate = during(mode, what, secs)
            load = "-c64 close" if what == "scale 4->2" else "-c32 keep-alive"
            print(f"| {mode} | {what} | {load} | {errs} | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
