"""
`drover run` and `drover attach`: the supervisor with real processes, real
signals and real load on 127.0.0.1. Every wait is bounded; everything started
is killed by pid at teardown (the `procs` fixture of conftest.py).
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import (MASTER, DROVER, HTTPD, INTERVAL_MS, WORKER, RunHub, alive, descendants, free_port,
                      http_get, online, require_binary, run_argv, wait_until, wrk_during_reload)


@pytest.fixture
def run_hub(procs, sockdir, logdir):
    """Factory: run_hub(run_args, cmd) -> RunHub for `drover run RUN_ARGS -- CMD`."""
    def start(run_args, cmd):
        return RunHub(procs, sockdir, run_argv(sockdir, logdir, *run_args, "--", *cmd))
    return start


# ---- starting and restarting ---------------------------------------------------

def test_run_starts_n_workers_with_stable_ids_and_distinct_pids(run_hub):
    require_binary(WORKER)
    h = run_hub(["-i", 3, "-n", "web"], [WORKER, "--rate", 50])
    iv = online(h, 3, "web")
    ws = sorted(h.workers(iv, "web"), key=lambda w: w["id"])
    assert [w["id"] for w in ws] == [0, 1, 2]
    assert len({w["pid"] for w in ws}) == 3
    assert all(w["restarts"] == 0 for w in ws)
    # the agent inside each worker reports to the hub that started it
    iv = h.wait_for(lambda iv: all(w["agent"] and w["req_total"] for w in h.workers(iv, "web"))
                    and len(h.workers(iv, "web")) == 3, what="agent reports from all 3")


def test_worker_environment_and_fd3(run_hub, logdir):
    port = free_port()
    out = os.path.join(logdir, "env")
    script = f'env > {out}.$DROVER_WORKER_ID.$$; readlink /proc/self/fd/3 > {out}.fd.$DROVER_WORKER_ID; exec sleep 60'
    h = run_hub(["-i", 2, "-n", "envapp", "--listen", f"127.0.0.1:{port}"], ["sh", "-c", script])
    iv = online(h, 2, "envapp")
    for w in h.workers(iv, "envapp"):
        path = f"{out}.{w['id']}.{w['pid']}"
        wait_until(lambda: os.path.exists(path), 5, what=f"{path} written by worker {w['id']}")
        env = dict(l.split("=", 1) for l in open(path).read().splitlines() if "=" in l)
        assert env["DROVER_NAME"] == "envapp"
        assert env["DROVER_WORKER_ID"] == str(w["id"])
        assert env["DROVER_SOCKET"] == h.sock
        assert env["NOTIFY_SOCKET"] == h.sock
        assert env["LISTEN_FDS"] == "1"
        assert env["LISTEN_PID"] == str(w["pid"]), "LISTEN_PID must be the worker's own pid"
        assert env["LISTEN_FDNAMES"] == "envapp"
        assert open(f"{out}.fd.{w['id']}").read().startswith("socket:")


def test_sigkill_from_outside_is_replaced_with_restarts_1(run_hub):
    require_binary(WORKER)
    h = run_hub(["-i", 2, "-n", "web"], [WORKER, "--rate", 20])
    iv = online(h, 2, "web")
    victim = next(w for w in h.workers(iv, "web") if w["id"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    iv = h.wait_for(lambda iv: any(w["id"] == 1 and w["pid"] not in (0, victim["pid"], None)
                                   and w["state"] == "online" for w in h.workers(iv, "web")),
                    what="worker 1 replaced")
    w1 = next(w for w in h.workers(iv, "web") if w["id"] == 1)
    w0 = next(w for w in h.workers(iv, "web") if w["id"] == 0)
    assert w1["restarts"] == 1
    assert w0["restarts"] == 0
    h.wait_stderr(r"web:1 \(pid %d\) ended with signal 9" % victim["pid"])


def test_crash_loop_is_bounded_and_shows_backoff(run_hub, logdir):
    starts = os.path.join(logdir, "starts")
    h = run_hub(["-i", 1, "-n", "crash", "--no-echo"], ["sh", "-c", f"echo $$ >> {starts}; exit 3"])
    seen = set()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        iv = h.next_interval()
        for w in h.workers(iv, "crash"):
            seen.add(w["state"])
    n = len(open(starts).read().split())
    # 100 ms doubling: 0, .1, .3, .7, 1.5, 3.1, 6.3 s -> about 7 starts in 10 s, never a storm
    assert 4 <= n <= 10, f"{n} starts in 10 s"
    assert "backoff" in seen
    iv = h.next_interval()
    w = h.workers(iv, "crash")[0]
    assert w["restarts"] >= n - 1
    h.wait_stderr(r"crash:0 \(pid \d+\) ended with exit 3")


def test_worker_ignoring_sigterm_is_killed_after_kill_timeout(run_hub):
    require_binary(HTTPD)
    port = free_port()
    h = run_hub(["-i", 1, "-n", "stubborn", "--listen", f"127.0.0.1:{port}", "--kill-timeout", 700],
                [HTTPD, "--ignore-term"])
    iv = online(h, 1, "stubborn")
    pid = h.workers(iv, "stubborn")[0]["pid"]
    t0 = time.monotonic()
    os.kill(h.pid, signal.SIGTERM)
    h.proc.wait(timeout=10)
    took = time.monotonic() - t0
    assert h.proc.returncode == 0
    assert not alive(pid)
    assert 0.6 <= took <= 5, f"hub took {took:.2f}s to stop a worker that ignores SIGTERM"
    assert "did not stop within 700 ms of SIGTERM: SIGKILL" in h.stderr()


def test_log_burst_100k_lines_all_in_file_in_order(run_hub, logdir):
    h = run_hub(["-i", 1, "-n", "burst", "--no-echo"], ["sh", "-c", "seq 1 100000; exec sleep 60"])
    online(h, 1, "burst")
    path = os.path.join(logdir, "burst-0.out.log")

    def all_lines():
        with open(path) as f:
            lines = f.read().split("\n")
        return lines if len(lines) > 100000 else None
    lines = wait_until(all_lines, 20, interval=0.1, what=f"100000 lines in {path}",
                       diag=lambda: f"{open(path).read().count(chr(10))} lines so far")
    assert lines[-1] == ""
    assert lines[:-1] == [str(i) for i in range(1, 100001)]


def test_stderr_echo_and_partial_last_line(run_hub, logdir):
    h = run_hub(["-i", 1, "-n", "talk"], ["sh", "-c", "echo to-out; echo to-err >&2; printf partial; exec sleep 60"])
    h.wait_stderr(r"^\[talk:0\] to-out$")
    h.wait_stderr(r"^\[talk:0!\] to-err$")
    os.kill(h.pid, signal.SIGTERM)
    h.proc.wait(timeout=10)
    assert open(os.path.join(logdir, "talk-0.out.log")).read() == "to-out\npartial\n"
    assert open(os.path.join(logdir, "talk-0.err.log")).read() == "to-err\n"


# ---- no orphans ---------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_worker_or_grandchild_survives_the_hub(run_hub, sig):
    h = run_hub(["-i", 2, "-n", "tree", "--kill-timeout", 1000], ["sh", "-c", "sleep 300 & sleep 300 & wait"])
    online(h, 2, "tree")

    def tree():
        below = descendants(h.pid)
        sleeps = [p for p in below if open(f"/proc/{p}/cmdline").read().startswith("sleep")]
        return (below, sleeps) if len(sleeps) >= 4 else None
    below, sleeps = wait_until(tree, 5, what="2 workers x 2 grandchildren",
                               diag=lambda: f"below the hub: {descendants(h.pid)}")
    assert len(sleeps) >= 4, f"expected 2 workers x 2 grandchildren: {below}"
    os.kill(h.pid, sig)
    wait_until(lambda: not any(alive(p) for p in below), 5, what="every process below the hub to end",
               diag=lambda: f"left behind after {sig.name}: {[p for p in below if alive(p)]}")
    left = [p for p in below if alive(p)]
    assert not left, f"left behind after {sig.name}: {left}"
    if sig != signal.SIGKILL:
        assert h.proc.wait(timeout=5) == 0


# ---- scaling and memory ------------------------------------------------------------

def test_ttin_ttou_scale_one_up_one_down(run_hub):
    require_binary(WORKER)
    h = run_hub(["-i", 2, "-n", "sc"], [WORKER, "--rate", 10])
    online(h, 2, "sc")
    os.kill(h.pid, signal.SIGTTIN)
    iv = online(h, 3, "sc")
    assert sorted(w["id"] for w in h.workers(iv, "sc")) == [0, 1, 2]
    os.kill(h.pid, signal.SIGTTOU)
    iv = h.wait_for(lambda iv: sorted(w["id"] for w in h.workers(iv, "sc")) == [0, 1]
                    and all(w["state"] == "online" for w in h.workers(iv, "sc")), what="back to 2")


def test_max_memory_replaces_the_worker(run_hub):
    code = "x = bytearray(40 * 1024 * 1024); x[::4096] = b'x' * len(x[::4096]); import time; time.sleep(60)"
    h = run_hub(["-i", 1, "-n", "fat", "--max-memory", "20M", "--ready-timeout", 3000],
                [sys.executable, "-c", code])
    iv = online(h, 1, "fat")
    first = h.workers(iv, "fat")[0]["pid"]
    h.wait_stderr(r"fat:0 \(pid %d\) uses \d+ bytes, above --max-memory" % first)
    iv = h.wait_for(lambda iv: any(w["pid"] not in (first, 0, None) and w["state"] == "online"
                                   for w in h.workers(iv, "fat")), what="a replacement")
    h.wait_stderr(r"replaced fat:0: new pid \d+ is ready, old pid %d stopping" % first)


# ---- reloads -------------------------------------------------------------------



def test_rolling_reload_under_wrk_loses_nothing(run_hub):
    require_binary(HTTPD)
    port = free_port()
    h = run_hub(["-i", 4, "-n", "web", "--listen", f"127.0.0.1:{port}", "--no-echo"], [HTTPD])
    iv = online(h, 4, "web")
    before = {w["pid"] for w in h.workers(iv, "web")}
    out, total, errs, non2xx = wrk_during_reload(h, port, 4, 1.0, r"reload web: done, 4/4 replaced")
    assert total > 1000, out
    assert errs == 0, out
    assert non2xx == 0, out
    h.drain()
    iv = h.wait_for(lambda iv: len(h.workers(iv, "web")) == 4
                    and all(w["state"] == "online" for w in h.workers(iv, "web")), what="4 online after reload")
    after = {w["pid"] for w in h.workers(iv, "web")}
    assert not (before & after), f"not every pid was replaced: {before} -> {after}"
    assert sorted(w["id"] for w in h.workers(iv, "web")) == [0, 1, 2, 3]


def test_reload_with_unready_replacement_aborts_and_keeps_old_workers(run_hub, logdir):
    require_binary(HTTPD)
    port = free_port()
    flag = os.path.join(logdir, "broken")
    cmd = ["sh", "-c", f'if [ -e {flag} ]; then exec {HTTPD} --never-ready; else exec {HTTPD}; fi']
    h = run_hub(["-i", 3, "-n", "web", "--listen", f"127.0.0.1:{port}", "--ready-timeout", 1500, "--no-echo"], cmd)
    iv = online(h, 3, "web")
    before = sorted(w["pid"] for w in h.workers(iv, "web"))
    open(flag, "w").close()
    os.kill(h.pid, signal.SIGHUP)
    h.wait_stderr(r"reload web aborted after 0/3 replaced: web:0's replacement \(pid \d+\) was not ready within 1500 ms")
    iv = h.wait_for(lambda iv: len(h.workers(iv, "web")) == 3, what="the replacement gone")
    assert sorted(w["pid"] for w in h.workers(iv, "web")) == before
    assert all(w["state"] == "online" for w in h.workers(iv, "web"))
    for _ in range(20):
        assert http_get(port)[0] == 200


def test_reload_whose_replacement_crashes_aborts(run_hub, logdir):
    require_binary(HTTPD)
    port = free_port()
    flag = os.path.join(logdir, "broken")
    cmd = ["sh", "-c", f'if [ -e {flag} ]; then exit 7; else exec {HTTPD}; fi']
    h = run_hub(["-i", 2, "-n", "web", "--listen", f"127.0.0.1:{port}", "--no-echo"], cmd)
    iv = online(h, 2, "web")
    before = sorted(w["pid"] for w in h.workers(iv, "web"))
    open(flag, "w").close()
    os.kill(h.pid, signal.SIGHUP)
    h.wait_stderr(r"reload web aborted after 0/2 replaced: web:0's replacement \(pid \d+\) ended with exit 7")
    iv = h.next_interval()
    assert sorted(w["pid"] for w in h.workers(iv, "web")) == before
    assert http_get(port)[0] == 200


# ---- attach --------------------------------------------------------------------




def test_attach_shows_children_and_the_masters_replacement(procs, sockdir):
    master = procs.spawn([sys.executable, "-c", MASTER])
    argv = [DROVER, "attach", str(master.pid), "--headless", "--interval", str(INTERVAL_MS),
            "--socket-dir", sockdir, "-n", "cluster"]
    h = RunHub(procs, sockdir, argv)
    iv = h.wait_for(lambda iv: len(h.workers(iv, "cluster")) == 3
                    and all(w["rss_bytes"] for w in h.workers(iv, "cluster")), what="3 sampled children")
    ws = h.workers(iv, "cluster")
    assert sorted(w["id"] for w in ws) == [0, 1, 2]
    assert all(w["state"] == "online" for w in ws)
    assert master.pid not in {w["pid"] for w in ws}
    victim = next(w for w in ws if w["id"] == 1)
    os.kill(victim["pid"], signal.SIGKILL)
    iv = h.wait_for(lambda iv: any(w["id"] == 1 and w["pid"] != victim["pid"] and w["state"] == "online"
                                   for w in h.workers(iv, "cluster")), what="the master's replacement")
    # SIGHUP: every child restarted one by one through the master
    old = {w["pid"] for w in h.workers(iv, "cluster") if w["state"] == "online"}
    os.kill(h.pid, signal.SIGHUP)
    h.wait_stderr(r"reload cluster: done, 3/3 replaced", timeout=15)
    iv = h.wait_for(lambda iv: len([w for w in h.workers(iv, "cluster") if w["state"] == "online"]) == 3
                    and not (old & {w["pid"] for w in h.workers(iv, "cluster") if w["state"] == "online"}),
                    what="3 new children")


def test_attach_to_missing_pid_fails_clearly(sockdir):
    r = subprocess.run([DROVER, "attach", "12abc", "--headless", "--socket-dir", sockdir],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2, r.stderr
    assert "attach takes a pid, not '12abc'" in r.stderr
    r = subprocess.run([DROVER, "attach", "4194303", "--headless", "--socket-dir", sockdir],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "no process with pid 4194303" in r.stderr


def test_run_usage_errors(sockdir):
    for args in (["run"], ["run", "-i", "0", "--", "true"], ["run", "--max-memory", "lots", "--", "true"],
                 ["attach"], ["monit", "-i", "2", "--headless"]):
        r = subprocess.run([DROVER, *args], capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("drover: "), r.stderr
    r = subprocess.run([DROVER, "run", "--socket-dir", sockdir, "--", "no-such-command-xyz"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1
    assert "no-such-command-xyz: command not found" in r.stderr


def test_usr1_reopens_log_files(run_hub, logdir):
    script = 'i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.05; done'
    h = run_hub(["-i", 1, "-n", "rot", "--no-echo"], ["sh", "-c", script])
    online(h, 1, "rot")
    path = os.path.join(logdir, "rot-0.out.log")

    def lines_in(p):
        return open(p).read().count("\n") if os.path.exists(p) else 0
    # some lines before the rename, and some more into the renamed file (the hub's
    # descriptor still points there) before SIGUSR1
    wait_until(lambda: lines_in(path) >= 10, 10, what=f"10 lines in {path}")
    os.rename(path, path + ".moved")          # what logrotate does
    n = lines_in(path + ".moved")
    wait_until(lambda: lines_in(path + ".moved") >= n + 6, 10, what="lines written to the renamed file")
    os.kill(h.pid, signal.SIGUSR1)
    wait_until(lambda: os.path.exists(path) and os.path.getsize(path) > 0, 5,
               what="a new file after SIGUSR1")
    assert os.path.getsize(path) > 0, "no new file after SIGUSR1"
    old = open(path + ".moved").read().split("\n")[:-1]
    new = open(path).read().split("\n")[:-1]
    nums = [int(l.split()[1]) for l in old + new]
    assert nums == list(range(nums[0], nums[0] + len(nums))), "a line was lost or torn across the reopen"


def test_second_sigterm_while_stopping_kills_at_once_and_reaps(run_hub):
    require_binary(HTTPD)
    port = free_port()
    h = run_hub(["-i", 2, "-n", "stubborn", "--listen", f"127.0.0.1:{port}", "--kill-timeout", 30000],
                [HTTPD, "--ignore-term"])
    iv = online(h, 2, "stubborn")
    pids = [w["pid"] for w in h.workers(iv, "stubborn")]
    os.kill(h.pid, signal.SIGTERM)
    # the first SIGTERM taken: both workers stopping; then the hub must not end for a while
    h.wait_for(lambda iv: [w["state"] for w in h.workers(iv, "stubborn")] == ["stopping"] * 2,
               timeout=10, what="both workers stopping after the first SIGTERM")
    time.sleep(0.5)
    assert h.proc.poll() is None, "the hub must wait for its workers (kill-timeout 30 s)"
    t0 = time.monotonic()
    os.kill(h.pid, signal.SIGTERM)            # impatient operator: second Ctrl-C
    assert h.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    assert not [p for p in pids if alive(p)]


def test_agent_log_lines_join_the_workers_output(run_hub, logdir):
    require_binary(WORKER)
    h = run_hub(["-i", 1, "-n", "talker", "--no-echo"], [WORKER, "--rate", 5])
    online(h, 1, "talker")
    path = os.path.join(logdir, "talker-0.out.log")

    def logged():
        text = open(path).read() if os.path.exists(path) else ""
        return text if "[info] " in text else None
    text = wait_until(logged, 5, what=f"an [info] line in {path}",
                      diag=lambda: open(path).read() if os.path.exists(path) else "(no file)")
    # worker.c sends one drover_log("info", …) line at start
    assert re.search(r"^\[info\] \S.*$", text, re.M), text
    r = subprocess.run([DROVER, "logs", "talker:0", "-n", "50", "--socket-dir", h.sockdir],
                       capture_output=True, text=True, timeout=10)
    assert re.search(r"^\[talker:0\] \[info\] ", r.stdout, re.M), r.stdout


@pytest.mark.parametrize("n", [1, 8])
def test_workers_that_exit_before_the_hub_is_ready_are_still_restarted(run_hub, n):
    # Workers that die at once may exit before the hub's SIGCHLD handler
    # exists (seen under ASan, where the hub starts slower): their zombies
    # must still be reaped and the workers restarted.
    h = run_hub(["-i", n, "-n", "early", "--no-echo"], ["sh", "-c", "exit 3"])
    iv = h.wait_for(lambda iv: len(h.workers(iv, "early")) == n
                    and all((w["restarts"] or 0) >= 1 for w in h.workers(iv, "early")),
                    timeout=10, what="every early-exiting worker restarted at least once")
    assert all(w["state"] in ("backoff", "starting", "online") for w in h.workers(iv, "early"))
