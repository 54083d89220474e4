#!/usr/bin/env python3
"""
Supervisor benchmarks (run by bench/run.sh, `make bench`).

    supervisor_bench.py BUILD_DIR

Prints markdown tables:

1. Rolling reload of 4 example HTTP workers (examples/httpd under
   `drover run -i 4 --listen`) under keep-alive load (wrk -t2 -c32 for 8 s,
   SIGHUP to the hub after 2 s): requests, socket errors, non-2xx, p99, and
   the reload's wall time as the hub reports it. Run 3 times.
2. Start time of 4 workers until all are ready: from the fork of
   `drover run -d` until `drover ls --json` shows 4 online workers (polled
   every 5 ms; includes the hub's own start). Median of 5.
3. Hub RSS and idle CPU % with 4 and 16 idle httpd workers (each reporting at
   1 Hz through its agent) over 20 s, from /proc/PID/stat and status.

Targets beside: 0 errors; reload ≤ 2 s; start ≤ 0.3 s; hub ≤ 6 MB and
≤ 0.15 % of a core idle at 16 workers. Every process started is stopped by
pid at exit. Standard library only.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

B = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
DROVER = os.path.join(B, "drover")
HTTPD = os.path.join(B, "examples", "httpd")
CLK_TCK = os.sysconf("SC_CLK_TCK")
started = []
missed = []


def kill_all():
    for p in started:
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)
            except Exception:
                p.kill()


def on_signal(signum, frame):
    kill_all()
    sys.exit(130)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ls(sockdir):
    r = subprocess.run([DROVER, "ls", "--json", "--socket-dir", sockdir], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else None


def wait_online(sockdir, n, timeout=10.0, poll=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = ls(sockdir)
        if d and sum(1 for w in d["workers"] if w["state"] == "online") == n:
            return d
        time.sleep(poll)
    raise RuntimeError(f"{n} workers not online within {timeout}s")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        st = f.read().rsplit(")", 1)[1].split()
    return int(st[11]) + int(st[12])


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def start_hub(sockdir, logdir, n, extra=(), cmd=None):
    argv = [DROVER, "run", "--headless", "--no-echo", "-i", str(n), "-n", "web", "--socket-dir", sockdir,
            "--log-dir", logdir, *extra, "--", *(cmd or [HTTPD])]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    started.append(p)
    return p


def stop_hub(p):
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    return err


def parse_wrk(out):
    total = int(re.search(r"(\d+) requests in", out).group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non2xx = int(m.group(1)) if m else 0
    m = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    return total, errs, non2xx, m.group(1) if m else "?"


def bench_reload(wrk):
    print("## Rolling reload of 4 workers under keep-alive load (wrk -t2 -c32 -d8s, SIGHUP at 2 s)\n")
    print("| run | requests | socket errors | non-2xx | p99 | reload wall time | pids replaced |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for run in range(1, 4):
        d = tempfile.mkdtemp(prefix="drv-bench-", dir="/tmp")
        port = free_port()
        hub = start_hub(d, d, 4, ["--listen", f"127.0.0.1:{port}"])
        before = {w["pid"] for w in wait_online(d, 4)["workers"]}
        w = subprocess.Popen([wrk, "-t2", "-c32", "-d8s", "--latency", "--timeout", "2s",
                              f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE, text=True)
        started.append(w)
        time.sleep(2)
        os.kill(hub.pid, signal.SIGHUP)
        out, _ = w.communicate(timeout=30)
        after = {x["pid"] for x in wait_online(d, 4)["workers"] if x["state"] == "online"}
        err = stop_hub(hub)
        m = re.search(r"reload web: done, 4/4 replaced in ([\d.]+) s", err)
        wall = float(m.group(1)) if m else float("nan")
        total, errs, non2xx, p99 = parse_wrk(out)
        replaced = "all" if not (before & after) else f"{len(before - after)}/4"
        print(f"| {run} | {total} | {errs} | {non2xx} | {p99} | {wall:.2f} s | {replaced} |")
        if errs or non2xx:
            missed.append(f"reload run {run}: {errs} socket errors, {non2xx} non-2xx (target 0)")
        if not wall <= 2.0:
            missed.append(f"reload run {run}: {wall} s (target ≤ 2 s)")
        shutil.rmtree(d, ignore_errors=True)
    print()


def bench_start():
    print("## Start of 4 workers until all are ready (fork of `drover run -d` → 4 online in `drover ls`)\n")
    times = []
    for _ in range(5):
        d = tempfile.mkdtemp(prefix="drv-bench-", dir="/tmp")
        port = free_port()
        t0 = time.monotonic()
        r = subprocess.run([DROVER, "run", "-d", "-i", "4", "-n", "web", "--listen", f"127.0.0.1:{port}",
                            "--socket-dir", d, "--log-dir", d, "--", HTTPD],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        wait_online(d, 4, poll=0.002)
        times.append(time.monotonic() - t0)
        subprocess.run([DROVER, "stop", "--socket-dir", d], capture_output=True)
        deadline = time.monotonic() + 10
        while os.path.exists(os.path.join(d, "ctl.sock")) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(d, ignore_errors=True)
    times.sort()
    med = times[len(times) // 2]
    print("| runs | median | min | max | target |")
    print("|---:|---:|---:|---:|---|")
    print(f"| {len(times)} | {med * 1000:.0f} ms | {times[0] * 1000:.0f} ms | {times[-1] * 1000:.0f} ms | ≤ 300 ms |")
    print()
    if med > 0.3:
        missed.append(f"start of 4 workers: {med * 1000:.0f} ms (target ≤ 300 ms)")


def bench_footprint(seconds=20):
    print(f"## Hub footprint with idle workers (agent reporting at 1 Hz), over {seconds} s\n")
    print("| workers | hub RSS | hub CPU, % of a core | target |")
    print("|---:|---:|---:|---|")
    for n in (4, 16):
        d = tempfile.mkdtemp(prefix="drv-bench-", dir="/tmp")
        port = free_port()
        hub = start_hub(d, d, n, ["--listen", f"127.0.0.1:{port}"])
        wait_online(d, n)
        time.sleep(2)
        t0, c0 = time.monotonic(), cpu_ticks(hub.pid)
        peak = 0
        while time.monotonic() - t0 < seconds:
            peak = max(peak, rss_bytes(hub.pid))
            time.sleep(0.5)
        pct = (cpu_ticks(hub.pid) - c0) / CLK_TCK / (time.monotonic() - t0) * 100
        stop_hub(hub)
        target = "≤ 6 MB, ≤ 0.15 %" if n == 16 else ""
        print(f"| {n} | {peak / 1e6:.2f} MB | {pct:.3f} % | {target} |")
        if n == 16 and (peak > 6e6 or pct > 0.15):
            missed.append(f"hub at 16 workers: {peak / 1e6:.2f} MB, {pct:.3f} % (target ≤ 6 MB, ≤ 0.15 %)")
        shutil.rmtree(d, ignore_errors=True)
    print()


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    wrk = shutil.which("wrk")
    if not wrk or not os.access(HTTPD, os.X_OK):
        print("supervisor bench: needs wrk and build/examples/httpd", file=sys.stderr)
        return 1
    try:
        bench_reload(wrk)
        bench_start()
        bench_footprint()
    finally:
        kill_all()
    print("Supervisor targets: " + ("all met." if not missed else "missed: " + "; ".join(missed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
