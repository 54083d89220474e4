"""
A worker's figures cover its whole process tree (README "Process trees"):
cpu_pct, rss_bytes, procs and pss_bytes are the sums over the worker and its
descendants, and `tree` lists each of them. Checked against the test's own
reads of /proc: the tree by parent pid, CPU ticks over the same intervals.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import (DROVER, RunHub, descendants, free_port, online, parse_wrk, require_binary,
                      require_wrk, run_argv, wait_until)

HZ = os.sysconf("SC_CLK_TCK")
HERE = os.path.dirname(os.path.abspath(__file__))


def ticks(pid):
    """utime + stime of pid (its own, not its reaped children's), or 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(st[11]) + int(st[12])


def ppid_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cli(sockdir, *args, timeout=30):
    return subprocess.run([DROVER, *map(str, args), "--socket-dir", sockdir],
                          capture_output=True, text=True, timeout=timeout)


def ls_workers(sockdir):
    """The workers of `drover ls --json` (the snapshot: with each one's `tree`)."""
    r = cli(sockdir, "ls", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["workers"]


def test_gunicorn_workers_cpu_is_their_tree_under_load(procs, sockdir, logdir):
    """`drover run -i 2 -- gunicorn -w 2`: each row is a gunicorn master whose two
    forked workers serve wrk's requests. The row's cpu_pct must match the ticks the
    test reads for master + workers over the same intervals, within 5 points."""
    gunicorn = shutil.which("gunicorn")
    if not gunicorn:
        pytest.fail("gunicorn is not installed (Debian: apt-get install gunicorn, or make deps)",
                    pytrace=False)
    wrk = require_wrk()
    port = free_port()
    interval_ms = 500
    argv = [DROVER, "run", "--headless", "--interval", str(interval_ms), "--socket-dir", sockdir,
            "--log-dir", logdir, "--no-echo", "-i", "2", "-n", "gu", "--listen", f"127.0.0.1:{port}",
            "--", gunicorn, "--chdir", HERE, "-w", "2", "tree_app:app"]
    h = RunHub(procs, sockdir, argv, interval_ms=interval_ms)
    iv = h.wait_for(lambda iv: len(h.workers(iv, "gu")) == 2 and
                    all(w["state"] == "online" and w["procs"] == 3 for w in h.workers(iv, "gu")),
                    timeout=30, what="2 gunicorn rows of 3 processes each")
    masters = sorted(w["pid"] for w in h.workers(iv, "gu"))
    trees = {m: [m] + descendants(m) for m in masters}
    assert all(len(t) == 3 for t in trees.values()), trees
    snap = {w["pid"]: w for w in ls_workers(sockdir)}
    for m, t in trees.items():
        w = snap[m]
        assert sorted(x["pid"] for x in w["tree"]) == sorted(t), (w["tree"], t)
        assert w["tree"][0]["pid"] == m and w["tree"][0]["comm"] == "gunicorn"
        assert all(x["ppid"] == ppid_of(x["pid"]) for x in w["tree"]), w["tree"]

    load = subprocess.Popen([wrk, "-t2", "-c8", "-d3s", f"http://127.0.0.1:{port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        h.next_interval(timeout=5)                     # load under way
        h.drain()
        h.next_interval(timeout=5)
        t0 = time.monotonic()
        k0 = {m: sum(ticks(p) for p in t) for m, t in trees.items()}
        ivs = h.intervals(4)
        t1 = time.monotonic()
        k1 = {m: sum(ticks(p) for p in t) for m, t in trees.items()}
    finally:
        out = load.communicate(timeout=15)[0]
    total, errors, _ = parse_wrk(out)
    assert total > 0, out
    busy = 0
    for m in masters:
        theirs = (k1[m] - k0[m]) / HZ / (t1 - t0) * 100
        ours = [iv.worker(m)["cpu_pct"] for iv in ivs]
        assert all(x is not None and x >= 0 for x in ours), ours
        assert all(iv.worker(m)["procs"] == 3 for iv in ivs)
        mean = sum(ours) / len(ours)
        assert abs(mean - theirs) <= 5, f"master {m}: drover {ours} (mean {mean:.1f}) vs /proc {theirs:.1f}"
        busy += mean
    assert busy > 10, "wrk's load did not show up in either tree"


def test_shell_wrapper_tree_procs_comm_and_ls_json(procs, sockdir, logdir, tmp_path):
    """`sh -c 'child & child & wait'`: procs = 3, the tree names both children with
    the shell as their parent, a child's name with an escape sequence comes out
    sanitized, and `drover ls --json` carries the same tree."""
    os.chmod(tmp_path, 0o700)
    evil = tmp_path / "ev\x1b[31mil"
    shutil.copy("/bin/sleep", evil)
    prom = tmp_path / "drover.prom"
    script = f"sleep 120 & '{evil}' 120 & wait"
    h = RunHub(procs, sockdir, run_argv(sockdir, logdir, "-n", "wrap", "--no-echo", "--metrics-textfile", prom,
                                        "--", "sh", "-c", script))
    h.wait_for(lambda iv: any(w["procs"] == 3 for w in h.workers(iv, "wrap")), timeout=10,
               what="the wrapper's tree of 3")
    w = [x for x in ls_workers(sockdir) if x["app"] == "wrap"][0]
    kids = descendants(w["pid"])
    assert len(kids) == 2
    tree = w["tree"]
    assert [x["pid"] for x in tree][0] == w["pid"]
    assert sorted(x["pid"] for x in tree[1:]) == sorted(kids)
    assert all(x["ppid"] == w["pid"] for x in tree[1:]), tree
    comms = sorted(x["comm"] for x in tree[1:])
    assert comms[1] == "sleep" and comms[0].startswith("ev") and comms[0].endswith("[31mil"), tree
    assert not any(c < " " or "\x7f" <= c <= "\x9f" for c in comms[0]), f"control character in {comms[0]!r}" 
    assert w["rss_bytes"] == sum(x["rss_bytes"] for x in tree) and w["procs"] == 3
    # describe: the same tree, one line per process, the worker's first
    r = cli(sockdir, "describe", "wrap")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.split("processes:\n", 1)[1].splitlines()[1:4]
    assert rows[0].split()[:3] == ["0", str(w["pid"]), str(ppid_of(w["pid"]))], rows
    assert sorted(int(x.split()[0]) for x in rows[1:]) == sorted(kids), rows
    assert all(x.split()[1] == str(w["pid"]) for x in rows[1:]) and "\x1b" not in r.stdout, rows
    # the Prometheus series of the tree
    wait_until(lambda: 'drover_worker_procs{app="wrap",worker="0"} 3\n' in prom.read_text(), 5,
               what="drover_worker_procs 3 in the text file", diag=lambda: prom.read_text())
    # PSS is read within a few seconds (rate-limited), and is at most RSS
    iv = h.wait_for(lambda iv: h.workers(iv, "wrap")[0]["pss_bytes"] is not None, timeout=10,
                    what="the tree's pss_bytes")
    w = h.workers(iv, "wrap")[0]
    assert 0 < w["pss_bytes"] <= w["rss_bytes"], w
    wait_until(lambda: 'drover_worker_pss_bytes{app="wrap",worker="0"} ' in prom.read_text(), 5,
               what="drover_worker_pss_bytes in the text file", diag=lambda: prom.read_text())


def test_children_that_come_and_go_never_make_cpu_negative(procs, sockdir, logdir):
    """A shell that keeps forking busy children of ~0.2 s each: members leave and
    join the tree every interval; a leaver's ticks leave with it, a newcomer counts
    from its start, and the figure never goes negative."""
    script = 'while :; do sh -c "i=0; while [ \\$i -lt 100000 ]; do i=\\$((i+1)); done"; done'
    h = RunHub(procs, sockdir, run_argv(sockdir, logdir, "-n", "churn", "--no-echo", "--", "sh", "-c", script))
    online(h, 1, "churn")
    ivs = h.intervals(10)
    cpus = [h.workers(iv, "churn")[0]["cpu_pct"] for iv in ivs]
    assert all(c is not None and c >= 0 for c in cpus), cpus
    assert sum(cpus) / len(cpus) > 10, f"the busy children's CPU does not show: {cpus}"
    assert max(cpus) <= 100 * os.cpu_count() + 5, cpus
