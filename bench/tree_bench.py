#!/usr/bin/env python3
"""
Process-tree sampling cost (README "Process trees"; `make bench` runs it as `tree`).

    tree_bench.py BUILD_DIR [BASE_BUILD_DIR]

A supervising hub (`drover run -i 64`) of idle example httpd workers reporting
at 1 Hz, three ways: each worker a single process, and each worker the root of
a tree of 3 (the worker and two idle children: `sh -c 'sleep & sleep & exec
httpd'`), both with this build; and, when BASE_BUILD_DIR is given (a build of
the commit before trees, the "today" of the target), 64 single-process workers
under that build. Hub CPU from its CPU clock (ns, every thread) over
FOOTPRINT_S (default 20) s, RSS at its peak. The tree walk reads every
process of the host once per interval, so the host's process count is
printed beside the figures.

Target: the tree case within today's 64-worker figures + 20 % (CPU and RSS);
without a base build, against this build's single-process row. Standard
library only; every process started is stopped by pid.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstat  # noqa: E402  (beside this file)
from ports import free_port  # noqa: E402  (beside this file: below the ephemeral range)

N = 64
SECONDS = int(os.environ.get("FOOTPRINT_S", "20"))
started = []


def ls(drover, sockdir):
    r = subprocess.run([drover, "ls", "--json", "--socket-dir", sockdir], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_online(drover, sockdir, n, procs, timeout=60.0):
    """Waits for n online workers (each with procs processes, when the build reports procs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = ls(drover, sockdir)
        if d and sum(1 for w in d["workers"] if w["state"] == "online" and w.get("procs", procs) == procs) == n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{n} workers of {procs} processes not online within {timeout}s")


def host_procs():
    return sum(1 for d in os.listdir("/proc") if d.isdigit())


def row(build, tree):
    """(hub CPU %, hub peak RSS KiB, host processes) for 64 workers, single or trees of 3."""
    drover, httpd = os.path.join(build, "drover"), os.path.join(build, "examples", "httpd")
    d = tempfile.mkdtemp(prefix="drv-bench-", dir="/tmp")
    cmd = ["sh", "-c", f"sleep 100000 & sleep 100000 & exec {httpd}"] if tree else [httpd]
    argv = [drover, "run", "--headless", "--no-echo", "-i", str(N), "-n", "web", "--socket-dir", d,
            "--log-dir", d, "--listen", f"127.0.0.1:{free_port()}", "--", *cmd]
    hub = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    started.append(hub)
    try:
        wait_online(drover, d, N, 3 if tree else 1)
        time.sleep(3)
        t0, c0 = time.monotonic(), procstat.cpu_ns(hub.pid)
        peak = 0
        while time.monotonic() - t0 < SECONDS:
            peak = max(peak, procstat.status_kib(hub.pid, "VmRSS"))
            time.sleep(1)
        pct = (procstat.cpu_ns(hub.pid) - c0) / 1e9 / (time.monotonic() - t0) * 100
        nproc = host_procs()
    finally:
        stop(hub)
        shutil.rmtree(d, ignore_errors=True)
    return pct, peak, nproc


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=5)


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    base = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else None
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(1))
    missed = []
    try:
        rows = []
        if base:
            rows.append(("today (base build), 64 single-process workers", row(base, False)))
        rows.append(("this build, 64 single-process workers", row(build, False)))
        rows.append(("this build, 64 workers × 3 processes", row(build, True)))
    finally:
        for p in started:
            if p.poll() is None:
                stop(p)
    ref_cpu, ref_rss, _ = rows[0][1]
    print(f"## Process trees: a supervising hub of {N} idle httpd workers, over {SECONDS} s\n")
    print("| workers | hub CPU, % of a core | hub peak RSS | host processes | target |")
    print("|---|---:|---:|---:|---|")
    for i, (label, (pct, rss, nproc)) in enumerate(rows):
        target = ""
        if i == len(rows) - 1:
            target = f"≤ {ref_cpu * 1.2:.2f} %, ≤ {ref_rss * 1.2 / 1024:.1f} MiB (first row + 20 %)"
            if pct > ref_cpu * 1.2:
                missed.append(f"hub CPU {pct:.2f} % > {ref_cpu * 1.2:.2f} %")
            if rss > ref_rss * 1.2:
                missed.append(f"hub RSS {rss / 1024:.1f} MiB > {ref_rss * 1.2 / 1024:.1f} MiB")
        print(f"| {label} | {pct:.2f} % | {rss / 1024:.1f} MiB | {nproc} | {target} |")
    print()
    print("Tree targets: " + ("all met." if not missed else "missed: " + "; ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
