"""
Hardening of the hub's log capture against what another user, a full disk or
a worker's own bytes can do to it. Every wait is bounded; everything started
is killed by pid at teardown (the `procs` fixture of conftest.py); every
tmpfs mounted here is unmounted in a finally.
"""
import json
import os
import re
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import time

import pytest

from conftest import CTL_VERSION, DROVER, WRAP, hub_asan, INTERVAL_MS as IV_MS, CtlSession, RunHub, Sender, online, wait_until


def start(procs, sockdir, logdir, run_args, cmd):
    argv = [DROVER, "run", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", logdir, *map(str, run_args), "--", *map(str, cmd)]
    return RunHub(procs, sockdir, argv)


def cli(sockdir, *args, timeout=10):
    return subprocess.run([DROVER, *map(str, args), "--socket-dir", sockdir],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def private_dir(tmp_path):
    """A 0700 directory of the test's own (pytest removes it)."""
    os.chmod(tmp_path, 0o700)
    return str(tmp_path)


def logs_and_target(private_dir):
    """A proper 0700 log directory and, beside it, a file an attacker wants written."""
    d = os.path.join(private_dir, "logs")
    os.mkdir(d, 0o700)
    target = os.path.join(private_dir, "precious")
    with open(target, "w") as f:
        f.write("untouched\n")
    return d, target


# ---- item 1: the log directory and what is planted in it ------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="the attack is on a root hub")
def test_world_writable_log_dir_is_refused(procs, sockdir, private_dir):
    d = os.path.join(private_dir, "open")
    os.mkdir(d)
    os.chmod(d, 0o777)
    h = start(procs, sockdir, d, ["-i", 1, "-n", "w", "--no-echo"], ["sh", "-c", "echo hi; exec sleep 60"])
    rc = h.proc.wait(timeout=10)
    assert rc == 1
    err = h.stderr()
    assert d in err and "0777" in err and "other users" in err, err
    assert os.listdir(d) == [], "nothing may be created in a refused directory"


@pytest.mark.skipif(os.geteuid() != 0, reason="the attack is on a root hub")
def test_log_dir_owned_by_another_user_is_refused(procs, sockdir, private_dir):
    d = os.path.join(private_dir, "theirs")
    os.mkdir(d, 0o700)
    os.chown(d, 65534, 65534)
    h = start(procs, sockdir, d, ["-i", 1, "-n", "w", "--no-echo"], ["sh", "-c", "echo hi; exec sleep 60"])
    assert h.proc.wait(timeout=10) == 1
    assert d in h.stderr() and "owned by uid 65534" in h.stderr(), h.stderr()


def test_symlink_planted_as_log_file_is_not_followed(procs, sockdir, private_dir):
    d, target = logs_and_target(private_dir)
    os.symlink(target, os.path.join(d, "w-0.out.log"))
    h = start(procs, sockdir, d, ["-i", 1, "-n", "w", "--no-echo"], ["sh", "-c", "echo secret-line; exec sleep 60"])
    online(h, 1, "w")
    path = os.path.join(d, "w-0.out.log")
    wait_until(lambda: os.path.isfile(path) and not os.path.islink(path) and "secret-line" in open(path).read(),
               10, what="the line in a fresh regular w-0.out.log")
    assert open(target).read() == "untouched\n"
    aside = [n for n in os.listdir(d) if n.startswith("w-0.out.log.unsafe-")]
    assert len(aside) == 1 and os.readlink(os.path.join(d, aside[0])) == target
    assert "moved it aside" in h.stderr() and path in h.stderr()


def test_symlink_planted_before_rotation_or_reopen_is_not_followed(procs, sockdir, private_dir):
    """SIGUSR1 (logrotate's reopen) finds a symlink where the file was."""
    d, target = logs_and_target(private_dir)
    script = 'i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.02; done'
    h = start(procs, sockdir, d, ["-i", 1, "-n", "w", "--no-echo"], ["sh", "-c", script])
    online(h, 1, "w")
    path = os.path.join(d, "w-0.out.log")
    os.rename(path, path + ".moved")
    os.symlink(target, path)
    os.kill(h.pid, signal.SIGUSR1)
    wait_until(lambda: os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > 0,
               10, what="a fresh regular w-0.out.log after SIGUSR1")
    assert open(target).read() == "untouched\n"


def test_symlink_planted_as_the_next_rotation_target_is_not_followed(procs, sockdir, private_dir):
    """Size rotation renames w-0.out.log to w-0.out.log.1: a link planted there is moved
    along the rotated names (renameat acts on the entry), never written through."""
    d, target = logs_and_target(private_dir)
    link = os.path.join(d, "w-0.out.log.1")
    os.symlink(target, link)
    script = os.path.join(private_dir, "say.sh")
    with open(script, "w") as f:   # ~100-byte lines: a 4 KiB file rotates every ~0.4 s
        f.write('i=0; while :; do echo "line $i $(printf %090d 0)"; i=$((i+1)); sleep 0.01; done\n')
    conf = os.path.join(private_dir, "drover.conf")
    with open(conf, "w") as f:
        f.write(f"[hub]\nlog_max_size = 4K\nlog_keep = 9\n[app w]\ncommand = /bin/sh {script}\n")
    argv = [DROVER, "up", "--headless", "-f", conf, "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", d, "--no-echo"]
    RunHub(procs, sockdir, argv)
    wait_until(lambda: os.path.isfile(link) and not os.path.islink(link) and "line " in open(link).read(),
               10, interval=0.02, what="the first rotation: w-0.out.log.1 a regular file of lines")
    links = [n for n in os.listdir(d) if os.path.islink(os.path.join(d, n))]
    # moved along to .2 by the first rotation (and on by the next ones, ~0.4 s apart: 8 to go before .9)
    assert len(links) == 1 and re.fullmatch(r"w-0\.out\.log\.[2-9]", links[0]), links
    assert os.readlink(os.path.join(d, links[0])) == target
    assert open(target).read() == "untouched\n"
    for n in os.listdir(d):   # every file the hub wrote is a regular file of its own
        st = os.lstat(os.path.join(d, n))
        assert stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1), n


# ---- item 2: a FIFO planted as a log file -----------------------------------------

def test_fifo_planted_as_log_file_does_not_hang_the_hub(procs, sockdir, private_dir):
    d = os.path.join(private_dir, "logs")
    os.mkdir(d, 0o700)
    fifo = os.path.join(d, "w-0.out.log")
    os.mkfifo(fifo, 0o600)
    h = start(procs, sockdir, d, ["-i", 1, "-n", "w", "--no-echo"], ["sh", "-c", "echo through-fifo; exec sleep 60"])
    # Bounded: the hub must answer, not sit in open() forever.
    try:
        wait_until(lambda: os.path.exists(h.sock) and cli(sockdir, "ls", "--json", timeout=5).returncode == 0,
                   10, what="`drover ls` to answer")
    except subprocess.TimeoutExpired:
        pytest.fail("`drover ls` hung: the hub is blocked", pytrace=False)
    online(h, 1, "w")
    # The FIFO was moved aside and the lines go to a fresh regular file.
    wait_until(lambda: os.path.isfile(fifo) and "through-fifo" in open(fifo).read(), 10, what="the line in a fresh file")
    aside = [n for n in os.listdir(d) if n.startswith("w-0.out.log.unsafe-")]
    assert len(aside) == 1 and stat.S_ISFIFO(os.lstat(os.path.join(d, aside[0])).st_mode)


# ---- item 11: descriptors of scaled-away workers ----------------------------------

def log_fds(pid, d):
    """The log files (in d) the hub holds open, by name."""
    names = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if t.startswith(d + "/"):
            names.append(os.path.basename(t))
    return sorted(names)


def test_scaled_away_workers_log_files_are_closed(procs, sockdir, private_dir):
    d = os.path.join(private_dir, "logs")
    os.mkdir(d, 0o700)
    # Workers take a moment to stop, so a quick scale back up uses new ids.
    script = 'trap "sleep 0.5; exit 0" TERM; echo up; while :; do sleep 0.1; done'
    h = start(procs, sockdir, d, ["-i", 4, "-n", "sc", "--no-echo"], ["sh", "-c", script])
    online(h, 4, "sc")
    base = len(os.listdir(f"/proc/{h.pid}/fd"))
    for rnd in range(3):
        assert cli(sockdir, "scale", "sc", 1).returncode == 0
        time.sleep(0.1)
        assert cli(sockdir, "scale", "sc", 4).returncode == 0
        h.wait_for(lambda iv: len(h.workers(iv, "sc")) == 4 and
                   all(w["state"] == "online" for w in h.workers(iv, "sc")), what=f"round {rnd}: 4 online")
        # 4 workers: 8 log files at most, whatever ids they have now
        wait_until(lambda: len(log_fds(h.pid, d)) <= 8, 5, what=f"round {rnd}: at most 8 log fds, "
                   f"have {log_fds(h.pid, d)}")
    assert cli(sockdir, "scale", "sc", 1).returncode == 0
    h.wait_for(lambda iv: len(h.workers(iv, "sc")) == 1, what="1 worker")
    only = wait_until(lambda: (lambda f: f if len(f) == 2 else None)(log_fds(h.pid, d)), 5,
                      what=f"only the last worker's 2 log files open, have {log_fds(h.pid, d)}")
    assert only == ["sc-0.err.log", "sc-0.out.log"]
    assert len(os.listdir(f"/proc/{h.pid}/fd")) <= base, "descriptors grew over the rounds"


def test_sighup_storm_during_a_reload_is_one_more_reload(procs, sockdir, private_dir):
    h = start(procs, sockdir, private_dir, ["-i", "2", "-n", "hup", "--no-echo"], ["sleep", "60"])
    online(h, 2, "hup")
    for _ in range(50):   # 50 in half a second, the first starts a reload
        os.kill(h.pid, signal.SIGHUP)
        time.sleep(0.01)
    h.wait_stderr(r"once more, as asked", timeout=15)
    wait_until(lambda: h.stderr().count("reload hup: done") == 2, 20, what="the second reload done",
               diag=h.stderr)
    time.sleep(0.5)
    err = h.stderr()
    assert err.count("reload hup: replacing") == 2, err
    assert "already running" not in err, err


def test_sockets_have_mode_0600_under_umask_000(procs, sockdir, private_dir):
    argv = ["sh", "-c", 'umask 000; exec "$@"', "sh", DROVER, "run", "--headless", "--interval", str(IV_MS),
            "--socket-dir", sockdir, "--log-dir", private_dir, "-n", "um", "--no-echo", "--", "sleep", "60"]
    h = RunHub(procs, sockdir, argv)
    online(h, 1, "um")
    for name in ("agent.sock", "ctl.sock"):
        mode = stat.S_IMODE(os.stat(os.path.join(sockdir, name)).st_mode)
        assert mode == 0o600, f"{name} has mode {mode:o}"


def test_missing_socket_directory_is_reported_as_missing():
    r = subprocess.run([DROVER, "ls"], capture_output=True, text=True, timeout=10,
                       env={**os.environ, "XDG_RUNTIME_DIR": "/nonexistent-drover-test"})
    assert r.returncode != 0 and "No such file or directory" in r.stderr, r
    assert "not a directory owned by you" not in r.stderr, r


def test_max_memory_with_a_leading_space_or_plus_sign_is_refused(procs, sockdir, private_dir):
    logs = os.path.join(private_dir, "logs")
    os.mkdir(logs, 0o700)
    for bad in (" 5M", "+5M"):
        r = subprocess.run([DROVER, "run", "--headless", "--socket-dir", sockdir, "--log-dir", logs,
                            "--max-memory", bad, "-n", "mm", "--", "sh", "-c", "echo started"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2, r
        assert f"--max-memory takes a size like 200M or 1G, not '{bad}'" in r.stderr, r.stderr
        assert "started" not in r.stdout + r.stderr
        assert os.listdir(sockdir) == [] and os.listdir(logs) == [], "nothing may be started"


# ---- item 6: a full disk ------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_full_log_disk_pauses_workers_and_loses_no_line(procs, sockdir, private_dir):
    d = os.path.join(private_dir, "tmpfs")
    os.mkdir(d, 0o700)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", d],
                       capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    h = None
    try:
        filler = os.path.join(d, "filler")
        with open(filler, "wb") as f:
            f.write(b"x" * (900 * 1024))
        n = 50000   # "line-000001" + newline: 12 bytes each, 600 KB in all
        script = f'i=1; while [ $i -le {n} ]; do printf "line-%06d\\n" $i; i=$((i+1)); done; exec sleep 60'
        h = start(procs, sockdir, d, ["-i", 1, "-n", "full", "--no-echo"], ["sh", "-c", script])
        h.wait_stderr(r"log disk full: .*full-0\.out\.log.*worker output paused until space frees", timeout=30)
        # the worker is paused (its pipe is not read), not dropping: let it sit a little
        time.sleep(0.5)
        os.unlink(filler)
        h.wait_stderr(r"log disk has space again .*worker output resumed", timeout=10)
        path = os.path.join(d, "full-0.out.log")
        want = [f"line-{i:06d}" for i in range(1, n + 1)]

        def lines():
            names = sorted((x for x in os.listdir(d) if x.startswith("full-0.out.log")),
                           key=lambda x: -int(x.rsplit(".", 1)[1]) if x[-1].isdigit() else 0)
            text = "".join(open(os.path.join(d, x)).read() for x in names)
            return text.split("\n")
        wait_until(lambda: len(lines()) > n, 60, what=f"{n} lines in {path}")
        got = lines()
        assert got[-1] == ""
        assert got[:-1] == want, "a line was lost, torn or reordered"
        assert len(re.findall(r"log disk full", h.stderr())) == 1, "warned once per episode"
    finally:
        if h is not None:
            os.kill(h.pid, signal.SIGKILL)
            h.proc.wait(timeout=10)
        subprocess.run(["umount", "-l", d], timeout=10)


# ---- 3. slow control clients -------------------------------------------------------------

def _hub_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _ls_ms(sockdir):
    """Milliseconds `drover ls` takes, connecting as it does: a blocking connect, which waits
    for room while the hub's accept backlog is full (bounded here by SO_SNDTIMEO; a
    CtlSession's connect with a timeout fails at once with EAGAIN instead)."""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 5, 0))
        s.connect(os.path.join(sockdir, "ctl.sock"))
        s.settimeout(5)
        f = s.makefile("rwb")
        f.write(b'{"hello":"drover","version":%d}\n{"cmd":"ls","id":1}\n' % CTL_VERSION)
        f.flush()
        while True:
            line = f.readline()
            assert line, "the hub closed the connection"
            rep = json.loads(line)
            if rep.get("type") == "reply":
                break
    finally:
        s.close()
    assert rep["ok"], rep
    return (time.monotonic() - t0) * 1000


# The figure is 30 s of followers; CI runs 15 (HARDEN_FOLLOW_S=30 for the full run).
FOLLOW_S = float(os.environ.get("HARDEN_FOLLOW_S", "15"))
# a worker writing 300-byte lines as fast as it can
LOUD = [sys.executable, "-c", "import sys\nwhile True: sys.stdout.write('x' * 300 + '\\n')"]
CLIENT_CAP_MIB = 4   # hub/control.h CONTROL_QUEUE_MAX
CLIENT_MARGIN_MIB = 2   # jansson's and libuv's transient blocks, the heap's own slack


def test_300_never_reading_log_followers_cannot_grow_the_hub(procs, sockdir, tmp_path):
    # one worker writing as fast as it can; 300 clients follow its logs and never read
    argv = [DROVER, "run", "--headless", "--interval", "200", "--socket-dir", sockdir,
            "--log-dir", str(tmp_path), "-n", "loud", "--no-echo", "--", *LOUD]
    h = RunHub(procs, sockdir, argv)
    h.wait_for(lambda iv: any(w["state"] == "online" for w in h.workers(iv, "loud")), what="the loud worker")
    socks = []
    try:
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            socks.append(s)
            try:   # past 128 clients the hub drops the furthest behind: a reset is its answer
                s.connect(os.path.join(sockdir, "ctl.sock"))
                s.sendall(b'{"hello":"drover","version":%d}\n{"cmd":"logs","follow":true,"lines":1000}\n' % CTL_VERSION)
            except OSError:
                pass
        peak, slowest, series = 0, 0.0, []
        deadline = time.monotonic() + FOLLOW_S
        while time.monotonic() < deadline:
            peak = max(peak, _hub_rss_kib(h.pid))
            lat = _ls_ms(sockdir); series.append(round(lat)); slowest = max(slowest, lat)
            time.sleep(0.2)
        print(f"{FOLLOW_S:g} s: hub RSS peak {peak / 1024:.1f} MiB, slowest ls {slowest:.0f} ms; ls ms: {series}")
        # under ASan (quarantine, shadow) or valgrind the RSS is theirs, not the hub's
        measurable = not hub_asan(h.pid) and not WRAP
        assert peak <= 64 * 1024 or not measurable, f"hub RSS reached {peak / 1024:.1f} MiB"
        limit = 100 if measurable else 2000   # the bound; ASan and valgrind slow the hub 2-4x
        # One answer in ~75 may be late by a scheduling hiccup on a shared 2-core machine (the
        # hub, the writer and this test all run): the bound holds for every other one, and the
        # late one stays under 2.5x it.
        ranked = sorted(series)
        assert ranked[-2] < limit, f"ls took {ranked[-2]:.0f} ms (and {ranked[-1]:.0f})"
        assert slowest < 2.5 * limit, f"ls took {slowest:.0f} ms"
    finally:
        for s in socks:
            s.close()
    if measurable:
        wait_until(lambda: _hub_rss_kib(h.pid) < 16 * 1024, 20, what="hub RSS back under 16 MiB")
        print(f"hub RSS after the followers are gone: {_hub_rss_kib(h.pid) / 1024:.1f} MiB")


def test_one_never_reading_log_follower_costs_at_most_the_per_client_cap(procs, sockdir, tmp_path):
    # the worker of the 300-followers test; one client follows its logs and never reads
    argv = [DROVER, "run", "--headless", "--interval", "200", "--socket-dir", sockdir,
            "--log-dir", str(tmp_path), "-n", "loud", "--no-echo", "--", *LOUD]
    h = RunHub(procs, sockdir, argv)
    h.wait_for(lambda iv: any(w["state"] == "online" for w in h.workers(iv, "loud")), what="the loud worker")
    assert _ls_ms(sockdir) >= 0
    base, end = 0, time.monotonic() + 0.5   # the hub at work (ring full, files rotating), no follower
    while time.monotonic() < end:
        base = max(base, _hub_rss_kib(h.pid))
        time.sleep(0.01)
    s = socket.socket(socket.AF_UNIX)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        s.connect(os.path.join(sockdir, "ctl.sock"))
        s.sendall(b'{"hello":"drover","version":%d}\n{"cmd":"logs","follow":true,"lines":1000}\n' % CTL_VERSION)
        peak = base

        def dropped():
            nonlocal peak
            peak = max(peak, _hub_rss_kib(h.pid))
            try:
                s.send(b"\n")   # an empty line: skipped by a hub that still has us
            except (BrokenPipeError, ConnectionResetError):
                return True
            return False
        wait_until(dropped, 20, interval=0.005, what="the never-reading follower to be dropped")
    finally:
        s.close()
    growth = (peak - base) / 1024
    print(f"hub RSS {base / 1024:.1f} MiB before the follower, peak {peak / 1024:.1f} MiB: "
          f"+{growth:.1f} MiB (cap {CLIENT_CAP_MIB} MiB + {CLIENT_MARGIN_MIB} MiB margin)")
    assert _ls_ms(sockdir) < 2000   # the hub still answers
    if not hub_asan(h.pid) and not WRAP:   # under ASan or valgrind the RSS is theirs
        assert growth <= CLIENT_CAP_MIB + CLIENT_MARGIN_MIB, f"one client cost the hub {growth:.1f} MiB"
        wait_until(lambda: _hub_rss_kib(h.pid) < base + 1024, 10, what="the client's memory handed back")


# ---- 5. scaling does not block the loop -------------------------------------------------

def _procs_with_cmdline(argv):
    """Pids of processes whose command line is exactly argv (read from /proc)."""
    want = "\0".join(argv).encode() + b"\0"
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if f.read() == want:
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def _next_event(session, pred, timeout):
    """Reads session until an event pred accepts; returns it with its arrival time."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = session.next()
        if m.get("type") == "event" and pred(m):
            return m, time.monotonic()
    raise AssertionError("no such event in time")


def _scale_1024(procs, sockdir, private_dir, cmd):
    """A hub of one worker running cmd, a subscribed session, and `scale big 1024`
    asked: returns (hub, the session, the scale's reply)."""
    h = start(procs, sockdir, private_dir, ["-i", "1", "-n", "big", "--no-echo"], cmd)
    online(h, 1, "big")
    sub = CtlSession(sockdir, timeout=10)
    try:
        assert sub.ask({"cmd": "subscribe"})["ok"]
        with CtlSession(sockdir) as c:
            return h, sub, c.ask({"cmd": "scale", "target": "big", "n": 1024})
    except BaseException:
        sub.close()
        raise


def test_scale_1024_answers_meanwhile_and_sigterm_stops_the_scale(procs, sockdir, private_dir):
    cmd = ["sleep", "613"]   # an argv of its own, to count its processes in /proc
    h, sub, rep = _scale_1024(procs, sockdir, private_dir, cmd)
    try:
        assert rep["ok"] and "from 1 to 1024" in rep["msg"], rep
        series = []
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            series.append(_ls_ms(sockdir))
            time.sleep(0.05)
        prog, _ = _next_event(sub, lambda e: e["event"] == "scale" and e["phase"] == "progress", 10)
        assert prog["app"] == "big" and 1 <= prog["done"] < 1024 and prog["total"] == 1024, prog
        # the hub closes its clients as it stops: its stderr says when the scale stopped
        t0 = time.monotonic()
        os.kill(h.pid, signal.SIGTERM)
        m = wait_until(lambda: re.search(r"scale big: stopped at (\d+) workers: the hub is stopping", h.stderr()),
                       10, interval=0.002, what="the scale to stop")
        t1 = time.monotonic()
        print(f"ls during the scale: {[round(x) for x in series]} ms; the scale stopped at "
              f"{m.group(1)} workers, {1000 * (t1 - t0):.0f} ms after SIGTERM")
        assert int(m.group(1)) < 1024
        limit = 100 if not hub_asan(h.pid) and not WRAP else 2000   # ASan and valgrind slow the hub 2-4x
        ranked = sorted(series)   # one late answer allowed, as in the 300-followers test
        assert ranked[-2] < limit and ranked[-1] < 2.5 * limit, f"ls took {ranked[-2:]} ms during the scale"
        # 100 ms asked; measured 26-40 ms, this also counts the 2 ms polling of the hub's stderr
        assert (t1 - t0) * 1000 < 1.5 * limit, "SIGTERM was not answered in time"
    except BaseException:
        print(h.stderr()[-3000:])
        raise
    finally:
        sub.close()
    h.proc.wait(timeout=60)
    wait_until(lambda: not _procs_with_cmdline(cmd), 10, what="every worker gone")


def test_stop_app_during_scale_1024_ends_the_scale(procs, sockdir, private_dir):
    cmd = ["sleep", "619"]   # an argv of its own, to count its processes in /proc
    h, sub, rep = _scale_1024(procs, sockdir, private_dir, cmd)
    try:
        assert rep["ok"], rep
        _next_event(sub, lambda e: e["event"] == "scale" and e["phase"] == "progress", 10)
        r = cli(sockdir, "stop", "big")
        assert r.returncode == 0, r
        ab, _ = _next_event(sub, lambda e: e["event"] == "scale" and e["phase"] != "progress", 10)
        assert ab["phase"] == "aborted" and "killed" in ab["text"] and ab["done"] < 1024, ab
    finally:
        sub.close()
    # every worker stops, and none is started after: the count stays 0 for a few intervals
    wait_until(lambda: not _procs_with_cmdline(cmd), 15, what="every worker stopped")
    rows = len(json.loads(cli(sockdir, "ls", "--json").stdout)["workers"])
    end = time.monotonic() + 3 * IV_MS / 1000
    while time.monotonic() < end:
        assert not _procs_with_cmdline(cmd), "a worker was started after the stop"
        time.sleep(0.05)
    t0 = time.monotonic()
    d = json.loads(cli(sockdir, "ls", "--json").stdout)
    assert time.monotonic() - t0 < 5 and len(d["workers"]) == rows, "the hub answers, with no new worker"
    assert all(w["state"] == "stopped" for w in d["workers"] if w["app"] == "big"), d["workers"]


# ---- 9. app names that cannot be file names ---------------------------------------------

def test_app_name_starting_with_a_dot_is_refused_or_derived_to_one_that_keeps_output(procs, sockdir, private_dir):
    r = subprocess.run([DROVER, "run", "--headless", "--socket-dir", sockdir, "--log-dir", private_dir,
                        "-n", ".hidden", "--", "true"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "app name of 1-63 letters" in r.stderr, r
    script = os.path.join(private_dir, ".run.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho from-the-dot-script\nexec sleep 60\n")
    os.chmod(script, 0o755)
    h = start(procs, sockdir, private_dir, ["--no-echo"], [script])
    online(h, 1, "run")   # derived from ./.run.sh: "run", a name whose files can be written
    r = wait_until(lambda: (lambda r: r if "from-the-dot-script" in r.stdout else None)(cli(sockdir, "logs", "run")),
                   10, what="the script's line in drover logs")
    assert "not captured" not in h.stderr()
    assert os.path.exists(os.path.join(private_dir, "run-0.out.log"))


# ---- 10. descendants that left the worker's process group ---------------------------------

def test_setsid_grandchild_ignoring_sigterm_does_not_survive_stop(procs, sockdir, private_dir):
    orphan = ["sleep", "617"]
    # the worker starts a grandchild in a session of its own that ignores SIGTERM
    worker = "setsid sh -c 'trap \"\" TERM; exec sleep 617' & exec sleep 60"
    h = start(procs, sockdir, private_dir, ["-n", "gc", "--no-echo", "--kill-timeout", "500"], ["sh", "-c", worker])
    online(h, 1, "gc")
    pids = wait_until(lambda: _procs_with_cmdline(orphan), 10, what="the grandchild")
    assert cli(sockdir, "stop").returncode == 0
    h.proc.wait(timeout=15)
    left = [p for p in pids if os.path.exists(f"/proc/{p}") and
            open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not left, f"{left} outlived drover stop"


# ---- 4. integers are validated before narrowing ------------------------------------------

def test_scale_by_int_max_is_refused_not_wrapped(procs, sockdir, private_dir):
    h = start(procs, sockdir, private_dir, ["-i", "2", "-n", "w", "--no-echo"], ["sleep", "60"])
    wait_until(lambda: len([w for w in h.workers(h.next_interval(), "w") if w["state"] == "online"]) == 2,
               10, what="2 workers")
    for req, err in (({"delta": 2147483647}, '"delta" must be an integer'), ({"n": 2 ** 32 + 1}, '"n" must be')):
        with CtlSession(sockdir) as c:
            rep = c.ask({"cmd": "scale", "target": "w", **req})
        assert rep["ok"] is False and err in rep["error"], rep
    d = json.loads(cli(sockdir, "ls", "--json").stdout)
    assert len([w for w in d["workers"] if w["state"] == "online"]) == 2


# ---- 7. lines that are not UTF-8 ----------------------------------------------------------

def test_invalid_utf8_line_reaches_every_view(procs, sockdir, private_dir):
    trigger = os.path.join(private_dir, "now")
    script = ("import os, sys, time\nsys.stdout.buffer.write(b'bad \\xff\\xfe byte\\n'); sys.stdout.flush()\n"
              f"while not os.path.exists({trigger!r}): time.sleep(0.01)\n"
              "sys.stdout.buffer.write(b'late \\xff\\xfe byte\\n'); sys.stdout.flush()\ntime.sleep(60)")
    start(procs, sockdir, private_dir, ["-n", "u8", "--no-echo"], [sys.executable, "-c", script])
    r = wait_until(lambda: (lambda r: r if "bad" in r.stdout else None)(cli(sockdir, "logs", "u8")), 10,
                   what="the line in drover logs")
    assert "bad \ufffd\ufffd byte" in r.stdout, r.stdout
    # drover logs -f: the tail, then a line written while it follows (the pushed path)
    f = procs.spawn([DROVER, "logs", "-f", "u8", "--socket-dir", sockdir], stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL)
    out, end = b"", time.monotonic() + 10
    while b"late" not in out and time.monotonic() < end:
        if b"bad" in out and not os.path.exists(trigger):
            open(trigger, "w").close()   # following now: the next line is pushed
        if select.select([f.stdout], [], [], 0.1)[0]:
            out += os.read(f.stdout.fileno(), 65536)
    f.kill()
    text = out.decode()
    assert "bad \ufffd\ufffd byte" in text and "late \ufffd\ufffd byte" in text, repr(text)
    with open(os.path.join(private_dir, "u8-0.out.log"), "rb") as fh:
        assert b"bad \xff\xfe byte\nlate \xff\xfe byte\n" in fh.read()   # the file keeps the raw bytes


# ---- 8. terminal escapes from workers -----------------------------------------------------

def test_escape_sequences_in_names_and_lines_never_reach_the_terminal(procs, sockdir, private_dir, sender):
    script = ("import sys, time\nsys.stdout.write('\\x1b]0;PWNED\\x07 title\\n'); sys.stdout.flush()\n"
              "time.sleep(60)")
    start(procs, sockdir, private_dir, ["-n", "esc", "--no-echo"], [sys.executable, "-c", script])
    r = wait_until(lambda: (lambda r: r if "title" in r.stdout else None)(cli(sockdir, "logs", "esc")), 10,
                   what="the line in drover logs")
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout, repr(r.stdout)
    assert "^[]0;PWNED^G title" in r.stdout, repr(r.stdout)
    # a reporter whose name carries ESC and a newline: ls prints one row, escaped
    sender.pack(Sender.report(seq=1, name="ev\x1b[2Jil\nrow", req=1))
    out = wait_until(lambda: (lambda r: r.stdout if "ev^[" in r.stdout else None)(cli(sockdir, "ls")), 10,
                     what="the reporter in drover ls")
    assert "\x1b" not in out, repr(out)
    assert "ev^[[2Jil^Jrow"[:10] in out


def test_headless_echo_to_a_terminal_shows_escapes_and_a_pipe_gets_the_bytes(procs, sockdir, private_dir):
    import pty
    import select
    script = ("import sys, time\nsys.stdout.write('\\x1b]0;PWNED\\x07 title\\n'); sys.stdout.flush()\n"
              "time.sleep(60)")
    master, slave = pty.openpty()
    argv = [DROVER, "run", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", private_dir, "-n", "tty", "--", sys.executable, "-c", script]
    procs.spawn(argv, stdout=subprocess.DEVNULL, stderr=slave, start_new_session=True)
    os.close(slave)
    data, end = b"", time.monotonic() + 10
    try:
        while b"title" not in data and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                data += os.read(master, 65536)
    finally:
        os.close(master)
    assert b"title" in data, data
    assert b"\x1b]0;PWNED" not in data and b"\x07" not in data, data
    assert b"[tty:0] ^[]0;PWNED^G title" in data, data
    # the same echo into a pipe or file (journald, a log collector) keeps the exact bytes
    other = os.path.join(private_dir, "sock2")
    os.mkdir(other, 0o700)
    h = start(procs, other, private_dir, ["-n", "raw"], [sys.executable, "-c", script])
    h.wait_stderr(r"\[raw:0\] \x1b\]0;PWNED\x07 title")
