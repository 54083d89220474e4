"""
`drover upgrade` (issue 11): the hub re-executes the drover binary now at its
path, in place — same pid, same workers, same sockets, logs continuous — and
refuses (changing nothing) when it is busy or the new binary does not answer.

Each hub runs from a copy of the build's drover in a temporary directory, so
that a test can rename another binary over it as a package manager would.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import (DROVER, HTTPD, RunHub, free_port, http_get, online, parse_wrk, require_binary,
                      require_wrk, run_argv, wait_until)


@pytest.fixture
def bindir():
    d = tempfile.mkdtemp(prefix="drv-bin-", dir="/tmp")
    shutil.copy2(DROVER, os.path.join(d, "drover"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def install(bindir, src):
    """Puts src at bindir/drover the way a package manager does: a new file renamed over the old."""
    tmp = os.path.join(bindir, ".drover.new")
    shutil.copy2(src, tmp)
    os.rename(tmp, os.path.join(bindir, "drover"))


@pytest.fixture
def run_hub(procs, sockdir, logdir, bindir):
    """Factory: run_hub(run_args, cmd) -> RunHub for `BINDIR/drover run RUN_ARGS -- CMD`."""
    def start(run_args, cmd):
        argv = run_argv(sockdir, logdir, *run_args, "--", *cmd)
        argv[0] = os.path.join(bindir, "drover")
        return RunHub(procs, sockdir, argv)
    return start


def drover(sockdir, *args, timeout=40):
    return subprocess.run([DROVER, *args, "--socket-dir", sockdir], capture_output=True, text=True,
                          timeout=timeout)


def ls_json(sockdir):
    out = drover(sockdir, "ls", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def worker_pids(sockdir, app):
    return sorted(w["pid"] for w in ls_json(sockdir)["workers"] if w["app"] == app)


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# A worker that writes numbered lines forever, each in two writes (so the hub
# often holds half a line), to stdout and stderr alternately.
COUNTER = r"""
import os, sys, time
i = 0
while True:
    fd = 1 if i % 2 == 0 else 2
    os.write(fd, b"line %d of pid " % i)
    time.sleep(0.0005)
    os.write(fd, b"%d\n" % os.getpid())
    i += 1
    time.sleep(0.001)
"""


def numbered(path):
    """The numbers of the 'line N of pid P' lines in a log file, by pid; fails on a torn line."""
    by_pid = {}
    with open(path, "rb") as f:
        for raw in f:
            m = re.fullmatch(rb"line (\d+) of pid (\d+)\n", raw)
            assert m, f"{path}: torn or foreign line {raw!r}"
            by_pid.setdefault(int(m.group(2)), []).append(int(m.group(1)))
    return by_pid


def test_upgrade_under_load_keeps_pid_workers_sockets_and_logs(run_hub, sockdir, logdir, bindir):
    """Under wrk -c32 keep-alive, with a new binary renamed over the hub's: 0 socket errors,
    0 non-2xx, the hub's pid and workers unchanged, /proc/PID/exe the new file, every
    numbered log line present once and whole, ls working, the counters carried on."""
    require_binary(HTTPD)
    wrk = require_wrk()
    port = free_port()
    h = run_hub(["-i", 4, "-n", "web", "--listen", f"127.0.0.1:{port}", "--no-echo"], [HTTPD])
    online(h, 4, "web")
    before = worker_pids(sockdir, "web")
    exe_before = os.stat(f"/proc/{h.pid}/exe")
    w = subprocess.Popen([wrk, "-t2", "-c32", "-d3s", "--timeout", "2s", f"http://127.0.0.1:{port}/"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        install(bindir, DROVER)
        t0 = time.monotonic()
        up = drover(sockdir, "upgrade")
        took = time.monotonic() - t0
        out, _ = w.communicate(timeout=20)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert up.returncode == 0, up.stdout + up.stderr
    assert "upgraded: the hub (pid %d)" % h.pid in up.stdout, up.stdout
    total, errs, non2xx = parse_wrk(out)
    assert total > 1000, out
    assert errs == 0 and non2xx == 0, out
    # the same process, now running the new file (the old one was renamed over)
    assert h.proc.poll() is None
    exe = os.readlink(f"/proc/{h.pid}/exe")
    assert exe == os.path.join(bindir, "drover"), exe
    assert os.stat(f"/proc/{h.pid}/exe").st_ino != exe_before.st_ino
    assert worker_pids(sockdir, "web") == before
    # the NDJSON goes on from the same process; the counters continue
    h.wait_for(lambda iv: sum(x["req_total"] or 0 for x in h.workers(iv, "web")) >= total * 0.9,
               timeout=5, what="the agents' request totals, carried on")
    assert "upgraded:" in h.stderr()
    assert took < 10, took


def test_upgrade_keeps_every_log_line_whole(procs, sockdir, logdir, bindir, tmp_path):
    """A worker writing numbered half-lines every millisecond: across three upgrades each
    file has every number once, in order, no line torn, and the ring goes on."""
    script = tmp_path / "counter.py"
    script.write_text(COUNTER)
    argv = run_argv(sockdir, logdir, "-i", 1, "-n", "count", "--no-echo", "--", "/usr/bin/python3", str(script))
    argv[0] = os.path.join(bindir, "drover")
    h = RunHub(procs, sockdir, argv)
    online(h, 1, "count")
    [pid] = worker_pids(sockdir, "count")
    for _ in range(3):
        time.sleep(0.3)
        up = drover(sockdir, "upgrade")
        assert up.returncode == 0, up.stdout + up.stderr
    time.sleep(0.3)
    assert worker_pids(sockdir, "count") == [pid]
    os.kill(pid, signal.SIGSTOP)        # a still file to read
    try:
        time.sleep(0.3)
        out = numbered(os.path.join(logdir, "count-0.out.log"))[pid]
        err = numbered(os.path.join(logdir, "count-0.err.log"))[pid]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert len(out) > 500 and len(err) > 500
    assert out == list(range(0, 2 * len(out), 2)), "stdout lines lost or repeated"
    assert err == list(range(1, 2 * len(err), 2)), "stderr lines lost or repeated"
    # the ring (drover logs) crossed the upgrades too: its lines are whole
    logs = drover(sockdir, "logs", "count", "-n", "50")
    assert logs.returncode == 0, logs.stderr
    lines = [l for l in logs.stdout.splitlines() if "line " in l]
    assert len(lines) >= 40
    assert all(re.search(r"line \d+ of pid %d$" % pid, l) for l in lines), lines[:5]


def test_upgrade_to_a_binary_that_exits_at_once_is_refused(run_hub, sockdir, bindir, tmp_path):
    """A 'new binary' that exits 0 at once: the upgrade is refused with exit 1 and the
    reason; the hub, its binary and its workers are untouched; a real one then works."""
    require_binary(HTTPD)
    port = free_port()
    h = run_hub(["-i", 2, "-n", "web", "--listen", f"127.0.0.1:{port}", "--no-echo"], [HTTPD])
    online(h, 2, "web")
    before = worker_pids(sockdir, "web")
    bad = tmp_path / "bad"
    bad.write_text("#!/bin/sh\nexit 0\n")
    bad.chmod(0o755)
    install(bindir, str(bad))
    up = drover(sockdir, "upgrade")
    assert up.returncode == 1, up.stdout + up.stderr
    assert "upgrade refused" in up.stderr and "exited with status 0 without a word" in up.stderr, up.stderr
    assert "nothing changed" in up.stderr
    assert h.proc.poll() is None
    assert worker_pids(sockdir, "web") == before
    assert http_get(port)[0] == 200
    assert os.readlink(f"/proc/{h.pid}/exe").endswith("(deleted)")   # still the old file
    install(bindir, DROVER)
    up = drover(sockdir, "upgrade")
    assert up.returncode == 0, up.stdout + up.stderr
    assert worker_pids(sockdir, "web") == before


def test_upgrade_during_a_reload_is_refused(run_hub, sockdir):
    """While a rolling reload runs (each replacement takes ~1.5 s to be ready) the upgrade
    is refused, saying which reload; once the reload ended it goes through."""
    require_binary(HTTPD)
    port = free_port()
    h = run_hub(["-i", 2, "-n", "web", "--listen", f"127.0.0.1:{port}", "--no-echo"],
                ["/bin/sh", "-c", f"sleep 1.5; exec {HTTPD}"])
    online(h, 2, "web", timeout=15)
    os.kill(h.pid, signal.SIGHUP)
    h.wait_stderr(r"reload web", timeout=10)
    up = drover(sockdir, "upgrade")
    assert up.returncode == 1, up.stdout + up.stderr
    assert re.search(r"upgrade refused: a reload of web is in progress \(\d/2 replaced\)", up.stderr), up.stderr
    h.wait_stderr(r"reload web: done|reload web.*2/2", timeout=20)
    wait_until(lambda: drover(sockdir, "upgrade").returncode == 0, timeout=15, interval=0.5,
               what="the upgrade after the reload")


def test_twenty_upgrades_leave_rss_and_fds_flat(run_hub, sockdir):
    """20 upgrades in a row (SIGUSR2 for half of them): the hub's fd count is the same
    after the 2nd and the 20th, its RSS within 15 %; workers unchanged."""
    require_binary(HTTPD)
    port = free_port()
    h = run_hub(["-i", 4, "-n", "web", "--listen", f"127.0.0.1:{port}", "--no-echo"], [HTTPD])
    online(h, 4, "web")
    before = worker_pids(sockdir, "web")
    fd_after, rss_after = [], []
    for i in range(20):
        if i % 2:
            n = h.stderr().count("upgraded:")
            os.kill(h.pid, signal.SIGUSR2)
            wait_until(lambda: h.stderr().count("upgraded:") > n, timeout=10, what="upgrade by SIGUSR2")
            wait_until(lambda: drover(sockdir, "ls").returncode == 0, timeout=10, what="ls after SIGUSR2")
        else:
            up = drover(sockdir, "upgrade")
            assert up.returncode == 0, up.stdout + up.stderr
        online(h, 4, "web")
        fd_after.append(fds(h.pid))
        rss_after.append(h.rss_kib())
    assert worker_pids(sockdir, "web") == before
    assert fd_after[-1] == fd_after[1], fd_after
    assert rss_after[-1] <= rss_after[1] * 1.15, rss_after
    assert h.stderr().count("upgraded:") == 20
    assert http_get(port)[0] == 200


def test_upgrade_of_a_monitor_keeps_its_agents_reporting(start_hub, start_worker, sockdir):
    """A monitor-only hub (drover monit): after an upgrade the same agents go on reporting
    on the same socket, nothing for them to do; the pid is the same."""
    h = start_hub()
    h.wait_socket()
    w = start_worker(h.sock, name="napp", wid=0)
    h.wait_for(lambda iv: iv.worker(w.pid) is not None, timeout=10, what="the agent's first report")
    up = drover(sockdir, "upgrade")
    assert up.returncode == 0, up.stdout + up.stderr
    assert h.proc.poll() is None
    h.drain()
    first = h.wait_for(lambda iv: iv.worker(w.pid) is not None, timeout=10, what="reports after the upgrade")
    later = h.wait_for(lambda iv: (iv.worker(w.pid) or {}).get("req_total", 0) >
                       (first.worker(w.pid)["req_total"] or 0), timeout=10, what="a growing req_total")
    assert later.hub["reports_total"] > 0


def subscribed(sockdir):
    """The reply to `subscribe`: workers with their history, and the hub's counters."""
    from conftest import CtlSession
    with CtlSession(sockdir) as c:
        return c.ask({"cmd": "subscribe"})


def test_upgrade_carries_histories_and_hub_counters(run_hub, sockdir):
    """The console's sparkline histories of supervised workers and the hub's report
    counters continue across an upgrade instead of starting again."""
    require_binary(HTTPD)
    port = free_port()
    h = run_hub(["-i", 2, "-n", "web", "--listen", f"127.0.0.1:{port}", "--no-echo"], [HTTPD])
    online(h, 2, "web")
    h.intervals(8)
    before = subscribed(sockdir)
    hist = {w["pid"]: len(w["history"]["rss_bytes"]) for w in before["workers"]}
    assert all(n >= 8 for n in hist.values()), hist
    up = drover(sockdir, "upgrade")
    assert up.returncode == 0, up.stdout + up.stderr
    after = subscribed(sockdir)
    got = {w["pid"]: len(w["history"]["rss_bytes"]) for w in after["workers"]}
    assert set(got) == set(hist)
    assert all(got[p] >= hist[p] for p in hist), (hist, got)
    assert after["hub"]["reports_total"] >= before["hub"]["reports_total"]


def prom_counter(port, name, app="web"):
    body = http_get(port, "/metrics")[2]
    total = 0.0
    for line in body.splitlines():
        m = re.match(r'%s\{app="%s",worker="\d+"\} (\S+)$' % (name, app), line)
        if m:
            total += float(m.group(1))
    return total


def test_upgrade_keeps_prometheus_counters_going_up(procs, sockdir, logdir, bindir):
    """/metrics across an upgrade: drover_worker_requests_total, which adds up every
    process a slot had (here two, after a reload), never goes back: the per-slot sums
    cross the exec; and the endpoint answers again."""
    require_binary(HTTPD)
    port, mport = free_port(), free_port()
    argv = run_argv(sockdir, logdir, "-i", 2, "-n", "web", "--listen", f"127.0.0.1:{port}", "--no-echo",
                    "--metrics", str(mport), "--", HTTPD)
    argv[0] = os.path.join(bindir, "drover")
    h = RunHub(procs, sockdir, argv)
    online(h, 2, "web")
    for _ in range(300):
        http_get(port)
    wait_until(lambda: prom_counter(mport, "drover_worker_requests_total") >= 300, timeout=10,
               what="the requests counted in /metrics")
    # new processes in both slots: the counters now add up two processes each
    rl = drover(sockdir, "reload", "web")
    assert rl.returncode == 0, rl.stdout + rl.stderr
    for _ in range(50):
        http_get(port)
    wait_until(lambda: prom_counter(mport, "drover_worker_requests_total") >= 350, timeout=10,
               what="the requests of both processes counted")
    before = prom_counter(mport, "drover_worker_requests_total")
    up = drover(sockdir, "upgrade")
    assert up.returncode == 0, up.stdout + up.stderr
    h.intervals(3)
    after = wait_until(lambda: prom_counter(mport, "drover_worker_requests_total") or None, timeout=10,
                       what="/metrics after the upgrade")
    assert after >= before, (before, after)


def test_upgrade_of_an_attach_hub_keeps_watching_the_master(procs, sockdir):
    """An attach hub upgraded in place: the same master's children under the same ids,
    its profile and commands working (a restart through the master) afterwards."""
    import sys
    from conftest import INTERVAL_MS, MASTER
    master = procs.spawn([sys.executable, "-c", MASTER])
    h = RunHub(procs, sockdir, [DROVER, "attach", str(master.pid), "--headless", "--interval", str(INTERVAL_MS),
                                "--socket-dir", sockdir, "-n", "cluster"])
    iv = h.wait_for(lambda iv: len(h.workers(iv, "cluster")) == 3, what="3 children")
    kids = sorted((w["id"], w["pid"]) for w in h.workers(iv, "cluster"))
    up = drover(sockdir, "upgrade")
    assert up.returncode == 0, up.stdout + up.stderr
    assert h.proc.poll() is None and master.poll() is None
    iv = h.wait_for(lambda iv: len(h.workers(iv, "cluster")) == 3, what="3 children after the upgrade")
    assert sorted((w["id"], w["pid"]) for w in h.workers(iv, "cluster")) == kids
    rs = drover(sockdir, "restart", "cluster:1")
    assert rs.returncode == 0, rs.stdout + rs.stderr
    old = dict(kids)[1]
    h.wait_for(lambda iv: any(w["id"] == 1 and w["pid"] != old and w["state"] == "online"
                              for w in h.workers(iv, "cluster")), what="cluster:1 restarted through the master")
