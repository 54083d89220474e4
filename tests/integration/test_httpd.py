"""
examples/httpd: the example HTTP/1.1 server that `drover run --listen` supervises.

Real processes on 127.0.0.1, every wait bounded, everything started killed by
pid at teardown (the `procs` fixture of conftest.py). Needs no hub:

    DROVER_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration/test_httpd.py

What is checked: keep-alive on its own port, serving from a listening socket
inherited at fd 3 (socket activation) by several processes, the graceful drain
on SIGTERM (idle keep-alive connections are not cut, in-flight requests finish,
the other processes sharing the socket take new connections), and the
zero-downtime property under wrk load while a worker is replaced.
"""
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import (HTTPD, holds_socket, listening, parse_wrk, require_binary, require_wrk,
                      server_conns, server_read_all, wait_until)

HOST = "127.0.0.1"
IO_TIMEOUT = 5.0


def require_httpd():
    require_binary(HTTPD)


# ---- processes -----------------------------------------------------------------

class Httpd:
    """One httpd process; stderr goes to a file where the banner is awaited."""

    def __init__(self, popen, errfile, outfile):
        self.proc = popen
        self.pid = popen.pid
        self.errfile = errfile
        self.outfile = outfile
        self.port = None

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode("utf-8", "replace")

    def stdout(self):
        self.outfile.seek(0)
        return self.outfile.read().decode("utf-8", "replace")

    def wait_banner(self, timeout=5.0):
        """Waits for the 'serving on' line; sets .port when it bound its own socket."""
        def banner():
            err = self.stderr()
            m = re.search(r"^httpd: pid (\d+) serving on (\S+)", err, re.M)
            if not m and self.proc.poll() is not None:
                pytest.fail(f"httpd exited with {self.proc.returncode} before serving; "
                            f"stderr={err!r}", pytrace=False)
            return m and (m, err)
        m, err = wait_until(banner, timeout, interval=0.02, what="httpd's banner",
                            diag=lambda: f"httpd printed no banner within {timeout}s; stderr={self.stderr()!r}")
        assert int(m.group(1)) == self.pid, err
        where = m.group(2)
        pm = re.search(r":(\d+)$", where)
        if pm:
            self.port = int(pm.group(1))
        return err

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"httpd pid {self.pid} still running after {timeout}s; "
                        f"stderr={self.stderr()!r}", pytrace=False)

    def alive(self):
        return self.proc.poll() is None


def httpd_env():
    """A clean environment: no inherited socket activation, the agent pointed nowhere."""
    env = dict(os.environ)
    for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "DROVER_NAME",
              "DROVER_WORKER_ID", "DROVER_AGENT", "DROVER_INTERVAL_MS"):
        env.pop(k, None)
    # No hub listens here: the agent runs and its reports are dropped.
    env["DROVER_SOCKET"] = "/nonexistent/drover-test/agent.sock"
    return env


def start_httpd(procs, *args, listen_fd=None, listen_pid_ok=True, wait=True):
    """
    Starts httpd with args. With listen_fd, the socket is passed as fd 3 with
    LISTEN_FDS=1 and LISTEN_PID set to the child's own pid by a shell wrapper
    (bash, because dash cannot redirect fds above 9): `exec` keeps the pid.
    """
    require_httpd()
    errfile = tempfile.TemporaryFile()
    outfile = tempfile.TemporaryFile()
    argv = [HTTPD, *map(str, args)]
    kw = dict(stdout=outfile, stderr=errfile, env=httpd_env())
    if listen_fd is not None:
        pid_expr = "$$" if listen_pid_ok else "1"
        script = ('if [ "$0" != 3 ]; then exec 3<&"$0" || exit 97; eval "exec $0<&-"; fi; '
                  f'LISTEN_PID={pid_expr} LISTEN_FDS=1 LISTEN_FDNAMES=http exec "$@"')
        argv = ["bash", "-c", script, str(listen_fd), *argv]
        kw["pass_fds"] = (listen_fd,)
    h = Httpd(procs.spawn(argv, **kw), errfile, outfile)
    if wait:
        h.wait_banner()
    return h


@pytest.fixture
def shared_socket():
    """A listening TCP socket owned by the test (as the hub owns it), kept open throughout."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, 0))
    s.listen(1024)
    yield s
    s.close()


# ---- a minimal HTTP/1.1 client that sees exactly what the server sends ---------

class Conn:
    """One TCP connection; request() sends one request and parses one response."""

    def __init__(self, port):
        self.s = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def request(self, path="/", method="GET", headers=(), version="HTTP/1.1"):
        lines = [f"{method} {path} {version}", f"Host: {HOST}", *headers]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.response()

    def _fill(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError("connection closed by the server")
        self.buf += d

    def response(self):
        """(status, {lower-case header: value}, body) of the next response."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body

    def response_head_only(self):
        """For a HEAD request: the head, no body whatever Content-Length says."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head.decode("latin-1")

    def at_eof(self, timeout=IO_TIMEOUT):
        """True when the server closes (FIN or RST) within timeout with nothing more sent."""
        self.s.settimeout(timeout)
        try:
            d = self.s.recv(1)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        finally:
            self.s.settimeout(IO_TIMEOUT)
        return d == b""

    def quiet_for(self, seconds):
        """True when nothing arrives and the connection stays open for `seconds`."""
        r, _, _ = select.select([self.s], [], [], seconds)
        return not r

    def close(self):
        self.s.close()


def get_pid_on_new_conn(port):
    c = Conn(port)
    try:
        st, h, body = c.request("/pid", headers=["Connection: close"])
        assert st == 200, (st, h, body)
        return int(body)
    finally:
        c.close()


def conn_to(port, pid, tries=400):
    """A keep-alive connection accepted by process pid (found by asking /pid)."""
    for _ in range(tries):
        c = Conn(port)
        st, h, body = c.request("/pid")
        assert st == 200 and h.get("connection") == "keep-alive", (st, h)
        if int(body) == pid:
            return c
        c.close()
    pytest.fail(f"no connection landed on pid {pid} in {tries} tries", pytrace=False)


# ---- command line --------------------------------------------------------------

def run_httpd(*args, timeout=5, env=None):
    require_httpd()
    return subprocess.run([HTTPD, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, env=env or httpd_env())


def test_help_exits_0_and_usage_errors_exit_2():
    r = run_httpd("--help")
    assert r.returncode == 0, r
    out = r.stdout.decode()
    for word in ("--port", "--host", "--delay", "--drain-timeout", "--never-ready", "--ready-delay",
                 "--ignore-term", "--crash-after", "--log-requests", "LISTEN_FDS", "/slow?ms=N",
                 "/block?ms=N", "/fail", "/pid"):
        assert word in out, f"--help does not mention {word}"
    for bad in (["--bogus"], ["--port"], ["--port", "x"], ["--port", "70000"], ["--delay", "-1"],
                ["--port", "0", "extra"], []):
        r = run_httpd(*bad)
        assert r.returncode == 2, (bad, r)
        assert r.stderr.decode().startswith("httpd: "), (bad, r.stderr)
        assert r.stdout == b"", (bad, r.stdout)


def test_listen_pid_of_another_process_is_not_taken(procs, shared_socket):
    """LISTEN_PID names someone else: fd 3 is not ours, and without --port that is a usage error."""
    h = start_httpd(procs, listen_fd=shared_socket.fileno(), listen_pid_ok=False, wait=False)
    assert h.wait_exit(5) == 2, h.stderr()
    assert "no socket to serve on" in h.stderr()


# ---- own port ------------------------------------------------------------------

def test_own_port_keepalive_100_requests_on_one_connection(procs):
    h = start_httpd(procs, "--port", 0)
    assert h.port, h.stderr()
    assert f"serving on 127.0.0.1:{h.port}" in h.stderr()
    c = Conn(h.port)
    local = c.s.getsockname()
    for i in range(100):
        st, hdrs, body = c.request("/")
        assert (st, body) == (200, b"ok\n"), (i, st, hdrs, body)
        assert hdrs["connection"] == "keep-alive" and hdrs["content-length"] == "3", hdrs
    assert c.s.getsockname() == local          # still the same connection
    assert c.quiet_for(0.2)                    # and the server keeps it open
    st, _, body = c.request("/pid")
    assert (st, int(body)) == (200, h.pid)
    c.close()
    # stderr carries the banner only
    assert h.stderr().strip().count("\n") == 0, h.stderr()


def test_routes_and_http_parsing(procs):
    h = start_httpd(procs, "--port", 0, "--log-requests")
    c = Conn(h.port)
    assert c.request("/fail")[0] == 500
    assert c.request("/nope")[0] == 404
    assert c.request("/?x=1")[0] == 200
    assert c.request("/slow")[0] == 400          # ms=N required
    t0 = time.monotonic()
    st, _, _ = c.request("/slow?ms=300")
    assert st == 200 and 0.28 <= time.monotonic() - t0 < 3
    t0 = time.monotonic()
    st, _, _ = c.request("/block?ms=200")
    assert st == 200 and 0.18 <= time.monotonic() - t0 < 3
    st, hdrs, _ = c.request("/", method="DELETE")
    assert st == 405 and hdrs["allow"] == "GET, HEAD"
    c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = c.response_head_only()
    assert head.startswith("HTTP/1.1 200") and "Content-Length: 3" in head
    # a Content-Length body is read and discarded; the connection stays usable
    c.send(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    assert c.response()[0] == 404
    # pipelined requests in one segment, answered in order
    c.send(b"GET /pid HTTP/1.1\r\n\r\nGET /fail HTTP/1.1\r\n\r\n"
           b"GET /slow?ms=50 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    got = [c.response() for _ in range(4)]
    assert [g[0] for g in got] == [200, 500, 200, 200], got
    assert int(got[0][2]) == h.pid
    assert got[3][1]["connection"] == "close"
    assert c.at_eof(), "Connection: close was not honoured"
    c.close()

    # HTTP/1.0 without keep-alive closes; with keep-alive stays open
    c = Conn(h.port)
    st, hdrs, _ = c.request("/", version="HTTP/1.0")
    assert st == 200 and hdrs["connection"] == "close" and c.at_eof()
    c.close()
    c = Conn(h.port)
    st, hdrs, _ = c.request("/", version="HTTP/1.0", headers=["Connection: keep-alive"])
    assert st == 200 and hdrs["connection"] == "keep-alive" and c.quiet_for(0.2)
    c.close()

    # refused requests: answered, then closed
    for req, want in ((b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
                      (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 411),
                      (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
                      (b"NOT A REQUEST\r\n\r\n", 400),
                      (b"GET / HTTP/2.0\r\n\r\n", 505)):
        c = Conn(h.port)
        c.send(req)
        st, hdrs, _ = c.response()
        assert (st, hdrs["connection"]) == (want, "close"), (req[:40], st, hdrs)
        assert c.at_eof()
        c.close()

    # clients that vanish mid-request or mid-response do not hurt it
    for i in range(20):
        s = socket.create_connection((HOST, h.port))
        if i % 3 == 0:
            s.sendall(b"GET / HTTP/1.1\r\nHo")
        elif i % 3 == 1:
            s.sendall(b"GET /slow?ms=100 HTTP/1.1\r\n\r\n" * 20)
        else:
            s.sendall(b"GET / HTTP/1.1\r\n\r\n" * 200)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    # every one of those connections handled and closed by the server
    wait_until(lambda: not server_conns(h.port), 30, what="httpd to close the abandoned connections",
               diag=lambda: f"still open (state, client port, unread): {server_conns(h.port)}")
    c = Conn(h.port)
    assert c.request("/")[0] == 200
    c.close()
    assert h.alive()
    log = h.stdout()
    assert '"GET /fail HTTP/1.1" 500' in log and '"GET /pid HTTP/1.1" 200' in log, log


# ---- fd 3 ----------------------------------------------------------------------

def test_two_processes_share_inherited_fd3(procs, shared_socket):
    port = shared_socket.getsockname()[1]
    a = start_httpd(procs, listen_fd=shared_socket.fileno())
    b = start_httpd(procs, listen_fd=shared_socket.fileno())
    for h in (a, b):
        assert f"httpd: pid {h.pid} serving on fd 3" in h.stderr()
    seen = set()

    def both_served():
        # several connections pending at once, so both processes get to accept
        batch = [Conn(port) for _ in range(8)]
        for c in batch:
            st, _, body = c.request("/pid", headers=["Connection: close"])
            assert st == 200
            seen.add(int(body))
            c.close()
        return seen == {a.pid, b.pid}
    wait_until(both_served, 15, interval=0, fail=False)
    assert seen == {a.pid, b.pid}, f"served by {seen}, expected both {a.pid} and {b.pid}"


# ---- drain ---------------------------------------------------------------------

def test_drain_keeps_idle_connections_and_finishes_in_flight(procs, shared_socket):
    port = shared_socket.getsockname()[1]
    a = start_httpd(procs, listen_fd=shared_socket.fileno())
    b = start_httpd(procs, listen_fd=shared_socket.fileno())

    idle = conn_to(port, a.pid)               # keep-alive, idle at SIGTERM
    slow = conn_to(port, a.pid)               # a request in flight at SIGTERM
    slow.send(f"GET /slow?ms=1500 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
    wait_until(lambda: server_read_all(port, slow.s), 10, interval=0.01,
               what="a to read the slow request")
    os.kill(a.pid, signal.SIGTERM)
    # a closes its copy of the listening socket: the drain has begun
    wait_until(lambda: not holds_socket(a.pid, shared_socket), 10, interval=0.01,
               what="a to close its copy of the listening socket after SIGTERM")

    # the idle connection is not cut
    assert idle.quiet_for(0.3), "the idle keep-alive connection was closed at SIGTERM"
    assert a.alive()

    # new connections go to the other process: none refused, none to the draining one
    for _ in range(50):
        assert get_pid_on_new_conn(port) == b.pid

    # the slow request completes, says Connection: close, then EOF
    st, hdrs, body = slow.response()
    assert (st, body, hdrs["connection"]) == (200, b"ok\n", "close"), (st, hdrs, body)
    assert slow.at_eof()
    slow.close()

    # the idle one is still open and a remains until it is done with
    time.sleep(0.2)
    assert a.alive(), "exited with an idle keep-alive connection still open"
    assert idle.quiet_for(0.1)
    st, hdrs, body = idle.request("/pid")
    assert (st, int(body), hdrs["connection"]) == (200, a.pid, "close"), (st, hdrs, body)
    assert idle.at_eof()
    idle.close()

    assert a.wait_exit(5) == 0, a.stderr()
    assert b.alive()
    assert get_pid_on_new_conn(port) == b.pid


def test_drain_timeout_closes_idle_and_second_sigterm_changes_nothing(procs):
    h = start_httpd(procs, "--port", 0, "--drain-timeout", 1500)
    idle = Conn(h.port)
    assert idle.request("/")[0] == 200
    busy = Conn(h.port)
    assert busy.request("/")[0] == 200
    t0 = time.monotonic()
    os.kill(h.pid, signal.SIGTERM)
    # the drain has begun when the listening socket is gone
    wait_until(lambda: not listening(h.port), 10, interval=0.01,
               what="httpd to close its listening socket after SIGTERM")
    os.kill(h.pid, signal.SIGTERM)            # a second one: no change
    os.kill(h.pid, signal.SIGINT)
    assert busy.quiet_for(0.2) and idle.quiet_for(0.01)
    # the listening socket is closed: new connections are refused
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((HOST, h.port), timeout=2)
    st, hdrs, _ = busy.request("/")
    assert (st, hdrs["connection"]) == (200, "close")
    assert busy.at_eof()
    busy.close()
    # the idle one is closed at --drain-timeout, then the process exits 0
    assert idle.at_eof(timeout=5)
    elapsed = time.monotonic() - t0
    assert 1.3 <= elapsed < 4, elapsed
    idle.close()
    assert h.wait_exit(5) == 0


def test_sigterm_without_connections_exits_0(procs):
    h = start_httpd(procs, "--port", 0)
    os.kill(h.pid, signal.SIGTERM)
    assert h.wait_exit(3) == 0


def test_test_modes(procs):
    # --crash-after: exit 1 on schedule
    h = start_httpd(procs, "--port", 0, "--crash-after", 300)
    assert h.wait_exit(5) == 1
    # --ignore-term: SIGTERM changes nothing; SIGINT still drains
    h = start_httpd(procs, "--port", 0, "--ignore-term", "--never-ready", "--ready-delay", 100)
    os.kill(h.pid, signal.SIGTERM)
    time.sleep(0.3)
    assert h.alive()
    c = Conn(h.port)
    st, hdrs, _ = c.request("/")
    assert (st, hdrs["connection"]) == (200, "keep-alive")
    c.close()
    os.kill(h.pid, signal.SIGINT)
    assert h.wait_exit(5) == 0


# ---- zero downtime under load ---------------------------------------------------

def test_wrk_replacing_a_worker_loses_nothing(procs, shared_socket):
    wrk = require_wrk()
    port = shared_socket.getsockname()[1]
    a = start_httpd(procs, listen_fd=shared_socket.fileno())
    b = start_httpd(procs, listen_fd=shared_socket.fileno())
    w = subprocess.Popen([wrk, "-t2", "-c32", "-d3s", "--timeout", "2s", f"http://{HOST}:{port}/"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.2)
        os.kill(a.pid, signal.SIGTERM)        # a rolling reload: a goes, c comes
        c = start_httpd(procs, listen_fd=shared_socket.fileno())
        # a's keep-alive connections end under load, while wrk still runs
        try:
            a_rc = a.proc.wait(timeout=1.2)
        except subprocess.TimeoutExpired:
            a_rc = None
        assert w.poll() is None, "wrk ended before the drain could be checked"
        out, _ = w.communicate(timeout=20)
    finally:
        if w.poll() is None:
            os.kill(w.pid, signal.SIGKILL)
            w.wait(timeout=5)
    out = out.decode("utf-8", "replace")
    total, errs, non2xx = parse_wrk(out)      # errs: connect + read + write + timeout
    assert w.returncode == 0, out
    assert total > 1000, out
    assert errs == 0, out
    assert non2xx == 0, out
    assert a_rc == 0, f"the drained worker did not exit 0 during the run (rc={a_rc}); {a.stderr()!r}"
    assert b.alive() and c.alive()
    pids = {get_pid_on_new_conn(port) for _ in range(40)}
    assert a.pid not in pids and pids <= {b.pid, c.pid}, pids
