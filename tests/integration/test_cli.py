"""
The CLI over the control socket (proto/PROTOCOL.md §4): ls, logs, kill, restart,
reload, stop, scale against a real hub, and the protocol's version check.
"""
import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import DROVER, WORKER, RunHub, online, require_binary, run_argv, wait_until


def cli(sockdir, *args, timeout=30):
    return subprocess.run([DROVER, *map(str, args), "--socket-dir", sockdir],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def hub3(procs, sockdir, tmp_path):
    """`drover run -i 3` of a shell worker that prints known lines, then sleeps."""
    script = 'echo "hello from $DROVER_WORKER_ID"; echo "oops $DROVER_WORKER_ID" >&2; exec sleep 120'
    h = RunHub(procs, sockdir, run_argv(sockdir, tmp_path, "-i", 3, "-n", "sh3", "--no-echo", "--",
                                        "sh", "-c", script))
    online(h, 3, "sh3")
    return h


def ls_json(sockdir):
    r = cli(sockdir, "ls", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_workers(sockdir, pred, what, timeout=10.0):
    """Polls `drover ls --json` until pred(workers) holds; returns those workers."""
    last = [None]

    def probe():
        last[0] = ls_json(sockdir)["workers"]
        return pred(last[0]) and last[0]
    return wait_until(probe, timeout, interval=0.1, what=what, diag=lambda: f"last workers: {last[0]}")


def test_ls_json_matches_the_hub(hub3, sockdir):
    d = ls_json(sockdir)
    ws = sorted(d["workers"], key=lambda w: w["id"])
    assert [w["id"] for w in ws] == [0, 1, 2]
    assert all(w["app"] == "sh3" and w["state"] == "online" and w["pid"] > 0 for w in ws)
    assert d["apps"][0]["app"] == "sh3" and d["apps"][0]["workers"] == 3
    assert d["hub"]["workers"] == 3
    # the same pids as the headless stream shows
    iv = hub3.next_interval()
    assert {w["pid"] for w in hub3.workers(iv, "sh3")} == {w["pid"] for w in ws}


def test_ls_table(hub3, sockdir):
    r = cli(sockdir, "ls")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["APP", "ID", "PID", "STATE"]
    rows = [l.split() for l in lines[1:4]]
    assert [row[1] for row in rows] == ["0", "1", "2"]
    assert all(row[0] == "sh3" and row[3] == "online" for row in rows)
    app = lines[4].split()                  # the app's row: the same columns, all its workers
    assert app[:4] == ["sh3", "*", "-", "3/3"], lines[4]
    assert lines[5] == "sh3: 3/3 online, spread -"      # no requests: no spread
    assert re.match(r"3 workers, \d+ reports, 0 dropped", lines[6])


def test_logs_n_shows_known_output(hub3, sockdir):
    last = []

    def logs():
        last[:] = [cli(sockdir, "logs", "sh3:1", "-n", 10)]
        return "[sh3:1!] oops 1" in last[0].stdout and last[0]
    r = wait_until(logs, 5, interval=0.1, what="sh3:1's stderr line in `drover logs`",
                   diag=lambda: f"stdout={last[0].stdout!r} stderr={last[0].stderr!r}")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == ["[sh3:1!] oops 1", "[sh3:1] hello from 1"]
    r = cli(sockdir, "logs", "sh3", "-n", 100)
    assert sorted(l for l in r.stdout.splitlines() if "hello" in l) == [
        "[sh3:0] hello from 0", "[sh3:1] hello from 1", "[sh3:2] hello from 2"]
    r = cli(sockdir, "logs", "-n", 1)
    assert len(r.stdout.splitlines()) == 1


def test_logs_follow_streams_new_lines(procs, sockdir, tmp_path):
    script = 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.1; done'
    h = RunHub(procs, sockdir, run_argv(sockdir, tmp_path, "-n", "tick", "--no-echo", "--",
                                        "sh", "-c", script))
    online(h, 1, "tick")
    p = procs.spawn([DROVER, "logs", "tick", "-n", "0", "-f", "--socket-dir", sockdir],
                    stdout=subprocess.PIPE, text=True)
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 5 and time.monotonic() < deadline:
        got.append(p.stdout.readline().strip())
    nums = [int(l.split()[-1]) for l in got]
    assert all(l.startswith("[tick:0] tick ") for l in got), got
    assert nums == list(range(nums[0], nums[0] + 5)), got


def test_restart_kill_scale_stop(hub3, sockdir):
    before = {w["id"]: w["pid"] for w in ls_json(sockdir)["workers"]}
    r = cli(sockdir, "restart", "sh3:2")
    assert r.returncode == 0 and r.stdout.strip() == "restarting sh3:2", (r.stdout, r.stderr)
    ws = wait_workers(sockdir, lambda ws: any(w["id"] == 2 and w["pid"] not in (0, None, before[2])
                                              and w["state"] == "online" for w in ws),
                      "sh3:2 restarted and online")
    now = {w["id"]: (w["pid"], w["state"]) for w in ws}
    assert now[2][0] != before[2] and now[0][0] == before[0]

    r = cli(sockdir, "kill", "sh3:0")
    assert r.returncode == 0, r.stderr
    ws = wait_workers(sockdir, lambda ws: [w for w in ws if w["id"] == 0][0]["state"] == "stopped",
                      "sh3:0 stopped")
    w0 = [w for w in ws if w["id"] == 0][0]
    assert w0["state"] == "stopped" and w0["pid"] in (0, None)

    # A stopped worker still counts as one of the app's N: scaling to 4 adds id 3.
    r = cli(sockdir, "scale", "sh3", 4)
    assert r.returncode == 0 and "from 3 to 4 workers" in r.stdout, r.stdout
    ws = wait_workers(sockdir, lambda ws: sorted(w["id"] for w in ws if w["state"] == "online") == [1, 2, 3],
                      "sh3:1-3 online")
    online_ids = sorted(w["id"] for w in ws if w["state"] == "online")
    assert online_ids == [1, 2, 3]
    assert sorted(w["id"] for w in ws) == [0, 1, 2, 3]
    r = cli(sockdir, "scale", "sh3", 2)
    assert r.returncode == 0
    ws = wait_workers(sockdir, lambda ws: sorted(w["id"] for w in ws) == [0, 1], "sh3 down to ids 0 and 1")
    ids = sorted(w["id"] for w in ws)
    assert ids == [0, 1]

    for bad in (["kill", "sh3:9"], ["restart", "nope"], ["scale", "sh3", "x"]):
        r = cli(sockdir, *bad)
        assert r.returncode in (1, 2) and r.stderr.startswith("drover: "), (bad, r.stderr)

    r = cli(sockdir, "stop")
    assert r.returncode == 0 and "stopping the hub" in r.stdout
    assert hub3.proc.wait(timeout=10) == 0


def test_reload_command_waits_and_prints_progress(procs, sockdir, tmp_path):
    require_binary(WORKER)
    h = RunHub(procs, sockdir, run_argv(sockdir, tmp_path, "-i", 2, "-n", "web", "--no-echo", "--",
                                        WORKER, "--rate", 10))
    online(h, 2, "web")
    r = cli(sockdir, "reload", "web")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "reloading web"
    assert re.match(r"reload web: done, 2/2 replaced in [\d.]+ s", lines[-1]), lines


def test_no_hub_and_protocol_mismatch(sockdir, hub3):
    r = subprocess.run([DROVER, "ls", "-L", "nobody-here"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "no hub is running" in r.stderr
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(sockdir, "ctl.sock"))
    s.sendall(b'{"hello":"drover","version":99}\n')
    f = s.makefile()
    msg = json.loads(f.readline())
    assert msg["type"] == "error"
    assert msg["error"] == "protocol version 99 is not supported: this hub speaks version 2"
    assert f.readline() == ""   # then closed
    s.close()
    # a request before the hello is refused the same way
    s = socket.socket(socket.AF_UNIX)
    s.connect(os.path.join(sockdir, "ctl.sock"))
    s.sendall(b'{"cmd":"ls"}\n')
    f = s.makefile()
    assert "say hello first" in json.loads(f.readline())["error"]
    s.close()


def test_monitor_only_hub_refuses_commands(start_hub, sockdir):
    h = start_hub()
    h.wait_socket()
    r = cli(sockdir, "kill", "x:1")
    assert r.returncode == 1
    assert "no app named 'x'" in r.stderr


def test_detach_runs_in_background_and_stop_ends_it(sockdir, tmp_path):
    r = subprocess.run([DROVER, "run", "-d", "-n", "bg", "--socket-dir", sockdir, "--log-dir", str(tmp_path),
                        "--", "sleep", "60"], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    try:
        assert r.returncode == 0, r.stderr
        assert "runs in the background" in r.stdout
        d = ls_json(sockdir)
        assert [w["app"] for w in d["workers"]] == ["bg"]
        pid = d["workers"][0]["pid"]
    finally:
        s = cli(sockdir, "stop")
    assert s.returncode == 0
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10, interval=0.1,
               what=f"the background worker (pid {pid}) to end")
    assert not os.path.exists(f"/proc/{pid}")
