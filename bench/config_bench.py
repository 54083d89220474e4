#!/usr/bin/env python3
"""
bench/config_bench.py BUILD_DIR — `drover up` with a 10-app file (2 example HTTP
workers each, each app on its own port): the hub's RSS and idle CPU (its CPU
clock in ns, bench/procstat.py), then an
apply where one app's env changed, under wrk on an unchanged app and on the
changed app at once: errors on each, and the apply's wall time (from `drover
up` until it printed every reload's outcome). Prints a markdown table; exits 1
if it could not run. Everything it starts is killed by pid.
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
import procstat  # noqa: E402  (beside this file: the hub's CPU clock, ns)
from ports import free_port  # noqa: E402  (beside this file: below the ephemeral range)

APPS, WORKERS = 10, 2


def write_conf(path, httpd, ports, changed_value):
    with open(path, "w") as f:
        for i, port in enumerate(ports):
            f.write(f"[app web{i}]\ncommand = {httpd}\ninstances = {WORKERS}\nlisten = 127.0.0.1:{port}\n"
                    f"env = GREETING={changed_value if i == 0 else 'same'}\nkill_timeout = 3s\n\n")


def ls(drover, sockdir):
    p = subprocess.run([drover, "ls", "--json", "--socket-dir", sockdir], capture_output=True, text=True, timeout=10)
    return json.loads(p.stdout)["workers"] if p.returncode == 0 else []


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wrk_errors(out):
    import re
    m = re.search(r"(\d+) requests in", out)
    total = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total, errs, int(m.group(1)) if m else 0


def main():
    build = os.path.abspath(sys.argv[1])
    drover, httpd = os.path.join(build, "drover"), os.path.join(build, "examples", "httpd")
    wrk = shutil.which("wrk")
    if not (os.access(drover, os.X_OK) and os.access(httpd, os.X_OK) and wrk):
        print("config_bench: needs drover, examples/httpd and wrk")
        return 1
    tmp = tempfile.mkdtemp(prefix="drv-cfgbench-", dir="/tmp")
    sockdir, logdir = os.path.join(tmp, "s"), os.path.join(tmp, "l")
    os.mkdir(sockdir, 0o700)
    conf = os.path.join(tmp, "drover.conf")
    ports = [free_port() for _ in range(APPS)]
    write_conf(conf, httpd, ports, "first")
    # the hub as `drover up -d` runs it (--background: no stdout, events to hub.log),
    # but as our child, so that it is measured and stopped by pid
    hub = subprocess.Popen([drover, "up", "--background", "-f", conf, "--socket-dir", sockdir,
                            "--log-dir", logdir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    procs = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(1 for w in ls(drover, sockdir) if w["state"] == "online") == APPS * WORKERS:
                break
            time.sleep(0.2)
        else:
            print("config_bench: the workers did not all come online")
            return 1
        time.sleep(3)   # settle
        t0, c0 = time.monotonic(), procstat.cpu_ns(hub.pid)
        time.sleep(20)
        idle_cpu = (procstat.cpu_ns(hub.pid) - c0) / 1e9 / (time.monotonic() - t0) * 100
        rss = rss_kib(hub.pid)

        # apply under wrk on the changed app (web0) and an unchanged one (web1)
        runs = [subprocess.Popen([wrk, "-t1", "-c16", "-d6s", "--timeout", "2s", f"http://127.0.0.1:{ports[i]}/"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
        procs.extend(runs)
        time.sleep(1.5)
        write_conf(conf, httpd, ports, "second")
        a0 = time.monotonic()
        ap = subprocess.run([drover, "up", "-f", conf, "--socket-dir", sockdir], capture_output=True, text=True,
                            timeout=60)
        apply_s = time.monotonic() - a0
        outs = [r.communicate(timeout=30)[0] for r in runs]
        changed, unchanged = wrk_errors(outs[0]), wrk_errors(outs[1])
        ok = ap.returncode == 0 and "reload web0: done" in ap.stdout and "web1: unchanged" in ap.stdout

        print(f"## drover up: {APPS} apps x {WORKERS} workers, one app's env changed (wrk -t1 -c16 -d6s on two apps)")
        print()
        print("| measure | value | target |")
        print("|---|---|---|")
        print(f"| apply exit status, report | {ap.returncode}, {'as expected' if ok else 'UNEXPECTED'} | 0 |")
        print(f"| changed app (web0): requests, socket errors, non-2xx | {changed[0]}, {changed[1]}, {changed[2]} | errors 0 |")
        print(f"| unchanged app (web1): requests, socket errors, non-2xx | {unchanged[0]}, {unchanged[1]}, {unchanged[2]} | errors 0 |")
        print(f"| apply wall time (until every reload ended) | {apply_s:.2f} s | - |")
        print(f"| hub RSS, {APPS} apps x {WORKERS} workers, as drover up -d | {rss / 1024:.1f} MB | <= 8 MB |")
        print(f"| hub idle CPU (20 s, interval 1 s, as drover up -d) | {idle_cpu:.2f} % of a core | <= 0.3 % |")
        missed = []
        if changed[1] or changed[2] or unchanged[1] or unchanged[2]:
            missed.append("errors under apply")
        if rss > 8 * 1024:
            missed.append("hub RSS")
        if idle_cpu > 0.3:
            missed.append("idle CPU")
        if not ok:
            missed.append("apply outcome")
        print()
        print("targets missed: " + (", ".join(missed) if missed else "none"))
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if hub.poll() is None:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(timeout=15)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
