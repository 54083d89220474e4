"""The hub under systemd, without a running systemd: systemd-socket-activate hands it
a listening socket (--listen fd:N / fd:NAME), and a datagram socket of the test's own
stands in for systemd's NOTIFY_SOCKET, recording READY/RELOADING/STOPPING/STATUS and
WATCHDOG messages with their arrival times."""
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import free_port, DROVER, HTTPD, WRAP, wait_until

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/systemd-socket-activate"),
                                reason="needs systemd-socket-activate (Debian package systemd)")


class NotifyReceiver:
    """A NOTIFY_SOCKET: every datagram, split into its KEY=VALUE lines, with the time it came."""

    def __init__(self, path):
        self.path = path
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.s.bind(path)
        self.s.settimeout(0.2)
        self.msgs = []      # (monotonic time, [lines])
        self.running = True
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while self.running:
            try:
                d = self.s.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.msgs.append((time.monotonic(), d.decode().splitlines()))

    def seen(self, line):
        return [t for t, lines in list(self.msgs) if line in lines]

    def wait(self, line, after=0.0, timeout=10):
        return wait_until(lambda: [t for t in self.seen(line) if t > after], timeout,
                          what=f"{line} on the notify socket",
                          diag=lambda: repr([l for _, l in self.msgs if l != ["WATCHDOG=1"]]))[0]

    def close(self):
        self.running = False
        self.s.close()


@pytest.fixture
def notify(tmp_path):
    r = NotifyReceiver(str(tmp_path / "notify.sock"))
    yield r
    r.close()


def activate(procs, sockdir, logdir, port, notify_path, listen="fd:3", extra_env=(), fdname=None):
    """systemd-socket-activate listening on 127.0.0.1:port, exec'ing a supervising hub
    (2 httpd workers) on the first connection; returns the process (the hub, once exec'd)."""
    argv = ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "-E", f"NOTIFY_SOCKET={notify_path}"]
    for e in extra_env:
        argv += ["-E", e]
    if fdname:
        argv += [f"--fdname={fdname}"]
    argv += [DROVER, "run", "--headless", "--interval", "200", "--socket-dir", sockdir, "--log-dir", str(logdir),
             "--listen", listen, "-i", "2", "-n", "web", "--no-echo", "--", HTTPD]
    return procs.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def get(port, path="/"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.read()


def test_socket_activation_first_connection_served_and_notify_ready_reloading_stopping(
        procs, sockdir, tmp_path, notify):
    port = free_port()
    p = activate(procs, sockdir, tmp_path, port, notify.path)
    time.sleep(0.3)
    # the first connection arrives before the hub exists: the kernel queues it
    assert get(port)[0] == 200
    t_ready = notify.wait("READY=1")
    status = [l for _, lines in notify.msgs for l in lines if l.startswith("STATUS=")]
    assert status and status[0].startswith("STATUS=2/2 online"), status
    os.kill(p.pid, signal.SIGHUP)
    t_rel = notify.wait("RELOADING=1", after=t_ready)
    assert any(l.startswith("MONOTONIC_USEC=") for t, lines in notify.msgs if t == t_rel for l in lines)
    notify.wait("READY=1", after=t_rel, timeout=20)
    assert get(port)[0] == 200
    os.kill(p.pid, signal.SIGTERM)
    notify.wait("STOPPING=1", after=t_rel)
    assert p.wait(timeout=30) == 0


def test_workers_get_the_hubs_agent_socket_not_systemds(procs, sockdir, tmp_path, notify):
    port = free_port()
    p = activate(procs, sockdir, tmp_path, port, notify.path)
    time.sleep(0.3)
    get(port)
    notify.wait("READY=1")
    kids = subprocess.run(["pgrep", "-P", str(p.pid), "-x", "httpd"], capture_output=True, text=True).stdout.split()
    assert kids
    for k in kids:
        with open(f"/proc/{k}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
        assert env[b"NOTIFY_SOCKET"] == os.path.join(sockdir, "agent.sock").encode(), env[b"NOTIFY_SOCKET"]
        assert env[b"LISTEN_FDS"] == b"1" and env[b"LISTEN_PID"] == k.encode()


def test_watchdog_keepalive_at_least_every_250ms(procs, sockdir, tmp_path, notify):
    port = free_port()
    activate(procs, sockdir, tmp_path, port, notify.path, extra_env=["WATCHDOG_USEC=500000"])
    time.sleep(0.3)
    get(port)
    notify.wait("READY=1")
    time.sleep(2)
    ts = notify.seen("WATCHDOG=1")
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert len(ts) >= 6, ts
    limit = 0.25 if not WRAP else 0.5
    assert max(gaps) <= limit, f"longest gap between WATCHDOG=1: {max(gaps) * 1000:.0f} ms"


def test_listen_fd_by_name_and_a_missing_fd_is_a_clear_error(procs, sockdir, tmp_path, notify):
    port = free_port()
    activate(procs, sockdir, tmp_path, port, notify.path, listen="fd:web-http", fdname="web-http")
    time.sleep(0.3)
    assert get(port)[0] == 200
    notify.wait("READY=1")
    # without systemd's variables, fd:3 names nothing: refused with the reason
    r = subprocess.run([DROVER, "run", "--headless", "--socket-dir", str(tmp_path / "s2"), "--listen", "fd:3",
                        "--", HTTPD], capture_output=True, text=True, timeout=10, env={
                            k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")})
    assert r.returncode != 0 and "no such inherited socket" in r.stderr, r
    r = subprocess.run([DROVER, "run", "--headless", "--listen", "fd:2", "--", HTTPD], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 2 and "fd:N takes an inherited descriptor N >= 3" in r.stderr, r


def test_upgrade_notifies_reloading_then_ready_and_keeps_the_activated_socket(procs, sockdir, tmp_path, notify):
    """`drover upgrade` of a socket-activated hub: RELOADING=1 (with MONOTONIC_USEC) before
    the exec, READY=1 from the new image, the same pid and workers, and the socket systemd
    handed over (fd:3) still served."""
    port = free_port()
    p = activate(procs, sockdir, tmp_path, port, notify.path)
    time.sleep(0.3)
    assert get(port)[0] == 200
    t_ready = notify.wait("READY=1")
    kids = sorted(subprocess.run(["pgrep", "-P", str(p.pid), "-x", "httpd"], capture_output=True,
                                 text=True).stdout.split())
    up = subprocess.run([DROVER, "upgrade", "--socket-dir", sockdir], capture_output=True, text=True, timeout=40)
    assert up.returncode == 0, up.stdout + up.stderr
    t_rel = notify.wait("RELOADING=1", after=t_ready)
    assert any(l.startswith("MONOTONIC_USEC=") for t, lines in notify.msgs if t == t_rel for l in lines)
    notify.wait("READY=1", after=t_rel)
    assert p.poll() is None
    assert sorted(subprocess.run(["pgrep", "-P", str(p.pid), "-x", "httpd"], capture_output=True,
                                 text=True).stdout.split()) == kids
    assert get(port)[0] == 200
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=30) == 0
