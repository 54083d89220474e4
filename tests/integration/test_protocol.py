"""The control protocol (proto/control.h, PROTOCOL.md §4) as every kind of hub speaks it.

Each test is named for the behaviour it checks; the first two are the bugs that a
protocol with one definition fixed: an attach hub that killed every child for an
unknown app, and a `drover reload` against an attach hub that never ended.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import (CTL_VERSION, DROVER, BUILD, INTERVAL_MS as IV_MS, MASTER, CtlSession, RunHub, alive,
                      descendants, require_binary, wait_until)

WORKER = os.path.join(BUILD, "examples", "worker")

# A master that forks 2 children and never replaces one that exits.
LAZY_MASTER = r'''
import ctypes, os, signal, time
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ctypes.CDLL(None).prctl(1, 9)      # PR_SET_PDEATHSIG, SIGKILL
        while True:
            time.sleep(1)
    kids.append(pid)
def on_term(sig, frame):
    for k in kids:
        try:
            os.kill(k, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
while True:
    try:
        os.wait()
    except ChildProcessError:
        pass
    time.sleep(0.1)
'''


def cli(sockdir, *args, timeout=30):
    return subprocess.run([DROVER, *args, "--socket-dir", sockdir], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def attach_hub(procs, sockdir, script, n, *extra):
    master = procs.spawn([sys.executable, "-c", script])
    argv = [DROVER, "attach", str(master.pid), "--headless", "--interval", str(IV_MS),
            "--socket-dir", sockdir, "-n", "m", *extra]
    h = RunHub(procs, sockdir, argv)
    iv = h.wait_for(lambda iv: len(h.workers(iv, "m")) == n, what=f"{n} children of the master")
    return master, h, sorted(w["pid"] for w in h.workers(iv, "m"))


def run_hub(procs, sockdir, tmp_path, n=2, *extra):
    require_binary(WORKER)
    argv = [DROVER, "run", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", str(tmp_path), "-i", str(n), "-n", "web", "--no-echo", *extra, "--",
            WORKER, "--rate", "10"]
    h = RunHub(procs, sockdir, argv)
    h.wait_for(lambda iv: len([w for w in h.workers(iv, "web") if w["state"] == "online"]) == n,
               what=f"{n} online workers")
    return h


# ---- the two bugs ------------------------------------------------------------------------

def test_kill_unknown_app_on_attach_hub_is_refused_and_kills_nothing(procs, sockdir):
    master, h, pids = attach_hub(procs, sockdir, MASTER, 3)
    r = cli(sockdir, "kill", "no-such-app")
    assert r.returncode == 1, r.stdout
    assert "no app named 'no-such-app'" in r.stderr
    assert r.stdout == ""
    time.sleep(0.5)   # a SIGTERM would have landed by now
    assert all(alive(p) for p in pids), "a child of the master was killed"
    # and the app's own name still works
    r = cli(sockdir, "kill", "m:7")
    assert r.returncode == 1 and "m has no worker 7" in r.stderr


def test_reload_on_attach_hub_ends_when_the_master_forks_no_replacement(procs, sockdir):
    master, h, pids = attach_hub(procs, sockdir, LAZY_MASTER, 2, "--ready-timeout", "1000",
                                 "--kill-timeout", "1000")
    t0 = time.monotonic()
    r = cli(sockdir, "reload", "m", timeout=20)
    took = time.monotonic() - t0
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "reload aborted" in r.stdout, r.stdout
    # kill-timeout + ready-timeout, plus a margin for the sampler's interval
    assert took < 6, f"reload took {took:.1f} s"
    assert alive(pids[1]), "the second child was touched after the abort"


def test_reload_on_attach_hub_that_replaces_ends_done(procs, sockdir):
    master, h, pids = attach_hub(procs, sockdir, MASTER, 3)
    r = cli(sockdir, "reload", "m", timeout=30)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout.splitlines()[-1].startswith("reload m: done, 3/3 replaced"), r.stdout


# ---- one target rule on every kind of hub -------------------------------------------------

@pytest.mark.parametrize("cmd", [["kill", "nosuch"], ["restart", "nosuch"], ["reload", "nosuch"],
                                 ["logs", "nosuch"], ["stop", "nosuch:1"], ["scale", "nosuch", "2"]])
def test_unknown_app_refused_on_a_run_hub(procs, sockdir, tmp_path, cmd):
    run_hub(procs, sockdir, tmp_path)
    r = cli(sockdir, *cmd)
    assert r.returncode == 1, r.stdout
    assert "no app named 'nosuch'" in r.stderr, r.stderr


@pytest.mark.parametrize("cmd", [["kill", "nosuch"], ["restart", "nosuch:0"], ["reload", "nosuch"],
                                 ["logs", "nosuch"]])
def test_unknown_app_refused_on_an_attach_hub(procs, sockdir, cmd):
    attach_hub(procs, sockdir, MASTER, 3)
    r = cli(sockdir, *cmd)
    assert r.returncode == 1, r.stdout
    assert "no app named 'nosuch'" in r.stderr, r.stderr


def test_unknown_app_refused_on_a_monitor_hub_and_known_app_told_it_only_monitors(
        start_hub, start_worker, sockdir):
    h = start_hub()
    h.wait_socket()
    start_worker(h.sock, name="napp", wid=0)
    h.wait_for(lambda iv: iv.app("napp") is not None, what="the reporting worker")
    for cmd in (["kill", "nosuch"], ["logs", "nosuch"], ["reload", "nosuch"]):
        r = cli(sockdir, *cmd)
        assert r.returncode == 1 and "no app named 'nosuch'" in r.stderr, (cmd, r.stderr)
    r = cli(sockdir, "kill", "napp:0")
    assert r.returncode == 1 and "only monitors" in r.stderr, r.stderr
    r = cli(sockdir, "logs", "napp:5")
    assert r.returncode == 1 and "napp has no worker 5" in r.stderr, r.stderr


def test_logs_of_unknown_worker_id_is_an_error(procs, sockdir, tmp_path):
    run_hub(procs, sockdir, tmp_path)
    r = cli(sockdir, "logs", "web:9")
    assert r.returncode == 1 and "web has no worker 9" in r.stderr, r.stderr
    r = cli(sockdir, "logs", "web:1")
    assert r.returncode == 0, r.stderr


def test_reload_ends_with_failure_when_the_hub_goes_away(procs, sockdir, tmp_path):
    # `sleep` speaks no readiness: each replacement waits out the 1 s grace, so
    # a reload of 3 is in flight long enough to kill the hub under it.
    argv = [DROVER, "run", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", str(tmp_path), "-i", "3", "-n", "slow", "--no-echo", "--", "sleep", "60"]
    h = RunHub(procs, sockdir, argv)
    h.wait_for(lambda iv: len([w for w in h.workers(iv, "slow") if w["state"] == "online"]) == 3,
               what="3 online workers", timeout=15)
    p = subprocess.Popen([DROVER, "reload", "slow", "--socket-dir", sockdir], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    procs.add(p)
    h.wait_stderr(r"reload slow: replacing 3 workers")
    os.kill(h.pid, signal.SIGKILL)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 1, (out, err)
    assert "the hub went away before the reload ended" in err


# ---- requests are validated against the table --------------------------------------------

@pytest.mark.parametrize("req,error", [
    ({"cmd": "scale", "target": "web", "delta": 2147483647}, '"delta" must be an integer from -1024 to 1024'),
    ({"cmd": "scale", "target": "web", "n": 2 ** 32 + 1}, '"n" must be an integer from 0 to 1024'),
    ({"cmd": "scale", "target": "web", "n": "3"}, '"n" must be an integer from 0 to 1024'),
    ({"cmd": "scale", "target": "web"}, 'scale needs either "n"'),
    ({"cmd": "scale", "target": "web:1", "n": 1}, "scale takes an app, not a worker"),
    ({"cmd": "kill"}, "kill needs a target"),
    ({"cmd": "kill", "target": "web:x"}, "bad target 'web:x'"),
    ({"cmd": "kill", "target": "web:-1"}, "bad target 'web:-1'"),
    ({"cmd": "ls", "target": "web"}, "ls takes no target"),
    ({"cmd": "logs", "lines": -1}, '"lines" must be an integer'),
    ({"cmd": "kill", "target": "web", "n": 1}, 'kill takes no "n"'),
    ({"cmd": "subscribe", "lean": 1}, '"lean" must be true or false'),
    ({"cmd": "ls", "lean": True}, 'ls takes no "lean"'),
    ({"cmd": "frobnicate"}, "unknown command 'frobnicate'"),
    ({"cmd": 7}, 'missing "cmd"'),
])
def test_bad_requests_are_refused_and_change_nothing(procs, sockdir, tmp_path, req, error):
    run_hub(procs, sockdir, tmp_path)
    with CtlSession(sockdir) as c:
        rep = c.ask({**req, "id": 1})
        assert rep["ok"] is False and error in rep["error"], rep
        assert rep["id"] == 1
        ls = c.ask({"cmd": "ls", "id": 2})
        assert len([w for w in ls["workers"] if w["state"] == "online"]) == 2


def test_a_non_object_first_line_is_refused_and_the_client_closed(procs, sockdir, tmp_path):
    run_hub(procs, sockdir, tmp_path)
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(os.path.join(sockdir, "ctl.sock"))
    f = s.makefile("rwb")
    f.write(b'[1,2]\n')
    f.flush()
    m = json.loads(f.readline())
    assert m["ok"] is False and "not a JSON object" in m["error"] and m["error"] != ""
    assert f.readline() == b""
    s.close()


def test_events_are_structured(procs, sockdir, tmp_path):
    run_hub(procs, sockdir, tmp_path)
    c = CtlSession(sockdir, timeout=20)
    c.ask({"cmd": "subscribe", "id": 1})
    c.send({"cmd": "reload", "target": "web", "id": 2})
    phases = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = c.next()
        if m["type"] == "event" and m["event"] == "reload":
            assert m["app"] == "web" and isinstance(m["text"], str) and m["text"]
            assert m["total"] == 2
            phases.append(m["phase"])
            if m["phase"] in ("done", "aborted"):
                break
    assert phases[0] == "started" and phases[-1] == "done" and "progress" in phases, phases
    c.close()


def test_a_lean_subscription_leaves_out_only_what_repeats(procs, sockdir, tmp_path, start_py_sender):
    """Two subscribers at once, one lean (PROTOCOL.md §4.4): web:0 has a child (a
    sleep), web:1 is alone, and a Python sender (app py) reports no custom metric. In
    the same interval's state, the lean workers lack exactly type, ts, the keys that are
    null in the full form, an empty metrics (py's) and a tree of one process (web:1's,
    py's); web:0's tree is kept, its pids those the test reads in /proc; every value
    kept is the full form's."""
    require_binary(WORKER)
    script = f'if [ "$DROVER_WORKER_ID" = 0 ]; then sleep 600 & fi; exec {WORKER} --rate 10'
    argv = [DROVER, "run", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", str(tmp_path), "-i", "2", "-n", "web", "--no-echo", "--", "sh", "-c", script]
    h = RunHub(procs, sockdir, argv)
    start_py_sender(os.path.join(sockdir, "agent.sock"), name="py", wid=0)
    iv = h.wait_for(lambda iv: sorted((w["id"], w["procs"]) for w in h.workers(iv, "web")
                                      if w["state"] == "online") == [(0, 2), (1, 1)] and
                    [w["metrics"] for w in h.workers(iv, "py")] == [{}],
                    what="web:0 of 2 processes, web:1 of 1, py reporting", timeout=15)
    pid0 = next(w["pid"] for w in h.workers(iv, "web") if w["id"] == 0)
    kids = descendants(pid0)
    assert len(kids) == 1, kids
    with CtlSession(sockdir) as full, CtlSession(sockdir) as lean:
        rf = full.ask({"cmd": "subscribe", "id": 1})
        rl = lean.ask({"cmd": "subscribe", "id": 1, "lean": True})
        assert rl["ok"] is True and rf["ok"] is True
        for w in rl["workers"]:
            assert "history" in w and "type" not in w and "ts" not in w, w
            assert all(v is not None for v in w.values()), w
        for w in rf["workers"]:
            assert w["type"] == "worker" and "ts" in w and len(w["tree"]) == w["procs"], w

        def states(c):
            """The next few state messages, by the hub's ts."""
            out = {}
            while len(out) < 3:
                m = c.next()
                if m["type"] == "state":
                    out[m["hub"]["ts"]] = m
            return out
        sf_all, sl_all = states(full), states(lean)
        same = sorted(set(sf_all) & set(sl_all))
        assert same, (sorted(sf_all), sorted(sl_all))   # both saw one interval's state
        sf, sl = sf_all[same[-1]], sl_all[same[-1]]
        assert sl["apps"] == sf["apps"] and sl["host"] == sf["host"]
        by_f = {(w["app"], w["id"]): w for w in sf["workers"]}
        by_l = {(w["app"], w["id"]): w for w in sl["workers"]}
        assert sorted(by_l) == sorted(by_f) == [("py", 0), ("web", 0), ("web", 1)]
        for key, gone in ((("web", 0), set()), (("web", 1), {"tree"}), (("py", 0), {"tree", "metrics"})):
            f, l = by_f[key], by_l[key]
            nulls = {k for k, v in f.items() if v is None}
            assert set(f) - set(l) == {"type", "ts"} | nulls | gone, (f, l)
            assert all(l[k] == f[k] for k in l), (f, l)
        assert by_f[("py", 0)]["metrics"] == {} and by_l[("web", 0)]["metrics"]
        assert sorted(p["pid"] for p in by_l[("web", 0)]["tree"]) == sorted([pid0] + kids)
        assert [p["pid"] for p in by_f[("web", 1)]["tree"]] == [by_f[("web", 1)]["pid"]]


# ---- the CLI tells the truth -----------------------------------------------------------

def test_monit_headless_beside_a_running_hub_streams_it(procs, sockdir, tmp_path):
    run_hub(procs, sockdir, tmp_path)
    r = subprocess.run([DROVER, "monit", "--headless", "--count", "2", "--socket-dir", sockdir],
                       capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l["type"] for l in lines].count("hub") == 2
    assert {l["app"] for l in lines if l["type"] == "worker"} == {"web"}
    r = subprocess.run([DROVER, "monit", "--headless", "--count", "1", "--format", "prom",
                        "--socket-dir", sockdir], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert 'drover_worker_up{app="web",worker="0"' in r.stdout


def test_run_detach_hint_names_how_to_reach_the_hub(sockdir, tmp_path):
    r = subprocess.run([DROVER, "run", "-d", "-L", "hinted", "-n", "bg", "--socket-dir", sockdir,
                        "--log-dir", str(tmp_path), "--", "sleep", "60"], capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    try:
        assert r.returncode == 0, r.stderr
        assert f"'drover monit -L hinted --socket-dir {sockdir}'" in r.stdout, r.stdout
        assert f"'drover stop -L hinted --socket-dir {sockdir}'" in r.stdout, r.stdout
    finally:
        s = cli(sockdir, "stop", "-L", "hinted")
    assert s.returncode == 0, s.stderr


@pytest.mark.parametrize("spec", ["nope", "127.0.0.1:99999", "unix:", "127.0.0.1:", ":x"])
def test_bad_listen_is_a_usage_error(sockdir, tmp_path, spec):
    r = subprocess.run([DROVER, "run", "--headless", "--listen", spec, "--socket-dir", sockdir,
                        "--log-dir", str(tmp_path), "--", "sleep", "1"], capture_output=True, text=True,
                       timeout=10, stdin=subprocess.DEVNULL)
    assert r.returncode == 2, r.stderr
    assert "--listen" in r.stderr
    assert not os.path.exists(os.path.join(sockdir, "hub.lock"))


def test_a_worker_in_backoff_has_a_null_pid(procs, sockdir, tmp_path):
    argv = [DROVER, "run", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", str(tmp_path), "-n", "crash", "--no-echo", "--", "sh", "-c", "exit 3"]
    h = RunHub(procs, sockdir, argv)
    iv = h.wait_for(lambda iv: any(w["state"] in ("backoff", "errored") for w in h.workers(iv, "crash")),
                    what="a worker in backoff")
    w = h.workers(iv, "crash")[0]
    assert w["pid"] is None, w
    d = json.loads(cli(sockdir, "ls", "--json").stdout)
    assert all(x["pid"] is None or x["pid"] > 0 for x in d["workers"])


@pytest.mark.parametrize("sub,own,other", [
    ("run", "--max-memory", "attach PID"),
    ("attach", "the master's process name", "--max-memory"),
    ("ls", "--sort COL", "--max-memory"),
    ("logs", "--follow", "--sort"),
    ("scale", "usage: drover scale APP N", "--max-memory"),
])
def test_each_subcommand_help_is_its_own(sub, own, other):
    r = subprocess.run([DROVER, sub, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert own in r.stdout and other not in r.stdout, r.stdout
    assert r.stdout.startswith(f"usage: drover {sub}")


def test_global_help_lists_every_command_of_the_table():
    r = subprocess.run([DROVER, "--help"], capture_output=True, text=True, timeout=10)
    for name in ("run", "attach", "monit", "ls", "logs", "kill", "restart", "reload", "stop", "scale"):
        assert f"\n  {name}" in r.stdout, name
    assert "subscribe" not in r.stdout   # protocol-only commands are not subcommands


def test_cli_survives_a_hub_that_closes_early(sockdir):
    # a fake hub that says hello, then closes while the CLI writes its request
    path = os.path.join(sockdir, "ctl.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    p = subprocess.Popen([DROVER, "ls", "--socket-dir", sockdir], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        c, _ = srv.accept()
        c.recv(4096)
        c.sendall(b'{"type":"hello","version":%d,"hub_pid":1,"mode":"monit"}\n' % CTL_VERSION)
        c.close()
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
        srv.close()
    assert p.returncode == 1, (p.returncode, err)
    assert err.startswith("drover: "), err


# ---- processes drover did not start: APP:pid:PID -------------------------------------

def test_a_process_drover_did_not_start_is_addressed_by_pid(start_hub, start_worker, sockdir):
    """An agent reporting to a monitor-only hub, without an id: `ls` shows it with
    `-`, its target is napp:pid:PID; logs say what they can (its drover_log line),
    restart explains why not, stop sends SIGTERM (the worker exits 0 on it)."""
    h = start_hub()
    h.wait_socket()
    p = start_worker(h.sock, name="napp")
    h.wait_for(lambda iv: iv.worker(p.pid) is not None, what="the reporting worker")
    r = cli(sockdir, "ls")
    row = [l.split() for l in r.stdout.splitlines() if l.split()[:1] == ["napp"] and str(p.pid) in l.split()][0]
    assert row[1] == "-" and row[5] == "-" and "nan" not in r.stdout, r.stdout   # ID, RST
    for t in ("napp:-1", "napp:pid:0", "napp:pid:x", "napp:pid:4194305"):
        r = cli(sockdir, "kill", t)
        assert r.returncode == 2 and f"bad target '{t}'" in r.stderr and "APP:pid:PID" in r.stderr, (t, r.stderr)
    r = cli(sockdir, "kill", f"napp:pid:{os.getpid()}")
    assert r.returncode == 1 and f"napp has no process {os.getpid()}" in r.stderr, r.stderr
    # its agent's drover_log line ("worker started: ...") is all drover has of its output
    last = []
    wait_until(lambda: (last.__setitem__(slice(None), [cli(sockdir, "logs", f"napp:pid:{p.pid}")]) or
                        "[info] worker started" in last[0].stdout), 5,
               what="the agent's drover_log line", diag=lambda: last[0].stdout + last[0].stderr)
    r = cli(sockdir, "restart", f"napp:pid:{p.pid}")
    assert r.returncode == 1 and "not supervised: drover cannot start it again" in r.stderr, r.stderr
    assert p.poll() is None
    r = cli(sockdir, "stop", f"napp:pid:{p.pid}")
    assert r.returncode == 0 and f"sent SIGTERM to napp:pid:{p.pid}" in r.stdout, (r.stdout, r.stderr)
    assert p.wait(timeout=5) == 0      # the example worker exits 0 on SIGTERM
    # the worker is gone: its pid names nothing any more
    h.wait_for(lambda iv: iv.worker(p.pid) is None or iv.worker(p.pid)["state"] == "gone", what="gone")
    r = cli(sockdir, "kill", f"napp:pid:{p.pid}")
    assert r.returncode == 1, r.stderr


def test_pid_target_of_a_supervised_worker_is_its_id(procs, sockdir, tmp_path):
    """On a run hub, APP:pid:PID of a worker drover started acts as APP:ID."""
    run_hub(procs, sockdir, tmp_path)
    ws = wait_until(lambda: (d := json.loads(cli(sockdir, "ls", "--json").stdout)["workers"]) and
                    all(w["pid"] for w in d) and d, what="workers")
    w = [x for x in ws if x["app"] == "web"][0]
    r = cli(sockdir, "restart", f"web:pid:{w['pid']}")
    assert r.returncode == 0, r.stderr
    wait_until(lambda: any(x["id"] == w["id"] and x["pid"] not in (None, w["pid"])
                           for x in json.loads(cli(sockdir, "ls", "--json").stdout)["workers"]),
               what=f"web:{w['id']} restarted")
