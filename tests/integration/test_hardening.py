"""
Hardening of the hub's log capture against what another user, a full disk or
a worker's own bytes can do to it. Every wait is bounded; everything started
is killed by pid at teardown (the `procs` fixture of conftest.py); every
tmpfs mounted here is unmounted in a finally.
"""
import json
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time

import pytest

from conftest import DROVER, require_binary, alive  # noqa: F401
from test_supervisor import RunHub, IV_MS, online


def start(procs, sockdir, logdir, run_args, cmd):
    argv = [DROVER, "run", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", logdir, *map(str, run_args), "--", *map(str, cmd)]
    return RunHub(procs, sockdir, argv)


def cli(sockdir, *args, timeout=10):
    return subprocess.run([DROVER, *map(str, args), "--socket-dir", sockdir],
                          capture_output=True, text=True, timeout=timeout)


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)


@pytest.fixture
def private_dir():
    d = tempfile.mkdtemp(prefix="drv-hard-", dir="/tmp")
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


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
    d = os.path.join(private_dir, "logs")
    os.mkdir(d, 0o700)
    target = os.path.join(private_dir, "precious")
    with open(target, "w") as f:
        f.write("untouched\n")
    os.symlink(target, os.path.join(d, "w-0.out.log"))
    h = start(procs, sockdir, d, ["-i", 1, "-n", "w", "--no-echo"], ["sh", "-c", "echo secret-line; exec sleep 60"])
    online(h, 1, "w")
    path = os.path.join(d, "w-0.out.log")
    wait_until(lambda: os.path.isfile(path) and not os.path.islink(path) and "secret-line" in open(path).read(),
               10, "the line in a fresh regular w-0.out.log")
    assert open(target).read() == "untouched\n"
    aside = [n for n in os.listdir(d) if n.startswith("w-0.out.log.unsafe-")]
    assert len(aside) == 1 and os.readlink(os.path.join(d, aside[0])) == target
    assert "moved it aside" in h.stderr() and path in h.stderr()


def test_symlink_planted_before_rotation_or_reopen_is_not_followed(procs, sockdir, private_dir):
    """SIGUSR1 (logrotate's reopen) finds a symlink where the file was."""
    d = os.path.join(private_dir, "logs")
    os.mkdir(d, 0o700)
    target = os.path.join(private_dir, "precious")
    with open(target, "w") as f:
        f.write("untouched\n")
    script = 'i=0; while true; do echo "line $i"; i=$((i+1)); sleep 0.02; done'
    h = start(procs, sockdir, d, ["-i", 1, "-n", "w", "--no-echo"], ["sh", "-c", script])
    online(h, 1, "w")
    path = os.path.join(d, "w-0.out.log")
    os.rename(path, path + ".moved")
    os.symlink(target, path)
    os.kill(h.pid, signal.SIGUSR1)
    wait_until(lambda: os.path.isfile(path) and not os.path.islink(path) and os.path.getsize(path) > 0,
               10, "a fresh regular w-0.out.log after SIGUSR1")
    assert open(target).read() == "untouched\n"


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
                   10, "`drover ls` to answer")
    except subprocess.TimeoutExpired:
        pytest.fail("`drover ls` hung: the hub is blocked", pytrace=False)
    online(h, 1, "w")
    # The FIFO was moved aside and the lines go to a fresh regular file.
    wait_until(lambda: os.path.isfile(fifo) and "through-fifo" in open(fifo).read(), 10, "the line in a fresh file")
    aside = [n for n in os.listdir(d) if n.startswith("w-0.out.log.unsafe-")]
    assert len(aside) == 1 and stat.S_ISFIFO(os.lstat(os.path.join(d, aside[0])).st_mode)
