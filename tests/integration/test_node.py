"""
The Node.js agent (agent/node/): real node, real sockets, real load on 127.0.0.1.

    DROVER_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration/test_node.py

Needs /usr/bin/node (v16.17+; v20 here), wrk, and `make` to have built
$DROVER_BUILD/node/ (drover_agent.node and the JavaScript beside it).

Every test sets NODE_OPTIONS=--require <build>/node/index.js itself, so it
passes whether or not `drover run` also preloads the agent (it does for node
commands unless --no-agent: the same file is then required twice, and the
agent starts once). Every wait is bounded; everything started is killed by
pid at teardown (the `procs` fixture of conftest.py).
"""
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import msgpack
from conftest import (BUILD, DROVER, INTERVAL_MS, RunHub, alive, free_port, http_get, parse_response,
                      parse_wrk, require_wrk, run_argv, server_read_all, tcp_sockets, wait_until,
                      wrk_during_reload)

NODE = shutil.which("node") or "/usr/bin/node"
AGENT_DIR = os.path.join(BUILD, "node")
AGENT = os.path.join(AGENT_DIR, "index.js")
HOST = "127.0.0.1"

# An unmodified Node http app: it knows nothing of drover.
APP = r"""
const http = require('http');
const port = Number(process.argv[2]);
const server = http.createServer((req, res) => {
  if (req.url === '/block') { const t = Date.now(); while (Date.now() - t < 250) {} }
  if (req.url === '/slow') { setTimeout(() => res.end('slow ' + process.pid + '\n'), 600); return; }
  if (req.url === '/fail') res.statusCode = 503;
  res.end('hello ' + process.pid + '\n');
});
server.listen(port, () => console.log('listening on ' + port));
"""

# The same, run by its own cluster master with 2 workers; a dead worker is replaced.
CLUSTER_APP = r"""
const cluster = require('cluster');
const http = require('http');
const port = Number(process.argv[2]);
if (cluster.isPrimary) {
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('exit', () => setTimeout(() => cluster.fork(), 50));
} else {
  http.createServer((req, res) => res.end('hello ' + process.pid + '\n')).listen(port);
}
"""


def require_node():
    if not os.access(NODE, os.X_OK):
        pytest.fail("node is not installed (Debian: apt-get install nodejs)", pytrace=False)
    if not os.path.exists(os.path.join(AGENT_DIR, "drover_agent.node")):
        pytest.fail(f"{AGENT_DIR}/drover_agent.node is missing: build it (make; needs "
                    f"/usr/include/node/node_api.h), or set DROVER_BUILD", pytrace=False)


def node_env(**extra):
    """The test's environment with the agent preloaded and no inherited drover variables."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith(("DROVER_", "LISTEN_")) or k in ("NOTIFY_SOCKET", "NODE_OPTIONS"):
            del env[k]
    env["NODE_OPTIONS"] = f"--require {AGENT}"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


class Conn:
    """A keep-alive HTTP/1.1 client connection, one request at a time."""

    def __init__(self, port):
        self.s = socket.create_connection((HOST, port), timeout=5)
        self.buf = b""

    def send(self, path="/"):
        self.s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    def response(self, timeout=5.0):
        """Reads one response (Content-Length or chunked); returns (status, headers, body)."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status, headers, _ = parse_response(head + b"\r\n\r\n")
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(rest) < n:
                self.buf = head + b"\r\n\r\n" + rest
                self._fill(deadline)
                head, _, rest = self.buf.partition(b"\r\n\r\n")
            body, self.buf = rest[:n], rest[n:]
        else:   # chunked
            while not re.search(rb"(^|\r\n)0\r\n\r\n", rest):
                self.buf = head + b"\r\n\r\n" + rest
                self._fill(deadline)
                head, _, rest = self.buf.partition(b"\r\n\r\n")
            end = re.search(rb"(^|\r\n)0\r\n\r\n", rest).end()
            body = b"".join(re.findall(rb"[0-9a-fA-F]+\r\n(.*?)\r\n", rest[:end], re.S))
            self.buf = rest[end:]
        return status, headers, body.decode()

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([self.s], [], [], left)[0]:
            raise TimeoutError("no response")
        b = self.s.recv(65536)
        if not b:
            raise ConnectionError("closed by the server")
        self.buf += b

    def at_eof(self, timeout=5.0):
        """True when the server closes the connection within timeout (no byte before)."""
        if not select.select([self.s], [], [], timeout)[0]:
            return False
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return False

    def close(self):
        self.s.close()


@pytest.fixture
def node_run(procs, sockdir, tmp_path):
    """Factory: node_run(n, port, app=APP) -> RunHub for `drover run -i n --listen 127.0.0.1:port -- node app.js port`."""
    require_node()

    def start(n, port, app=APP, name="web", extra=()):
        script = write(tmp_path, "app.js", app)
        argv = run_argv(sockdir, tmp_path, "-i", n, "-n", name, "--listen", f"{HOST}:{port}",
                        *extra, "--", NODE, script, port)
        # DROVER_LISTEN is the hub's to set; the agent reads fd 3 itself when it is not.
        return RunHub(procs, sockdir, argv, node_env(DROVER_LISTEN=f"{HOST}:{port}"))
    return start


def all_online(h, app, n, pred=lambda w: True, timeout=15.0, what=None):
    """Waits for an interval with n online workers of app, each satisfying pred; returns it."""
    def ok(iv):
        ws = h.workers(iv, app)
        return len(ws) == n and all(w["state"] == "online" and pred(w) for w in ws)
    return h.wait_for(ok, timeout=timeout, what=what or f"{n} online workers of {app}")


# ---- drover run: an unmodified app ---------------------------------------------

def test_unmodified_app_reports_requests_lag_heap_per_worker(node_run):
    wrk = require_wrk()
    port = free_port()
    h = node_run(2, port)
    all_online(h, "web", 2, lambda w: w["agent"] and w["ready"], what="2 ready workers with the agent")
    w = subprocess.Popen([wrk, "-t2", "-c8", "-d3s", f"http://{HOST}:{port}/"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        iv = all_online(h, "web", 2, lambda w: (w["req_per_s"] or 0) > 0, timeout=10,
                        what="req_per_s > 0 on both workers under wrk")
    finally:
        out, _ = w.communicate(timeout=20)
    total, errs, non2xx = parse_wrk(out)
    assert total > 100 and errs == 0 and non2xx == 0, out
    for wk in h.workers(iv, "web"):
        assert wk["agent"] is True and wk["ready"] is True, wk
        assert wk["req_total"] > 0 and wk["inflight"] is not None, wk
        assert wk["lat_p50_ms"] is not None and wk["lat_p99_ms"] is not None, wk
        assert wk["lag_p99_ms"] is not None and 0 <= wk["lag_max_ms"] < 1000, wk
        m = wk["metrics"]
        assert m and m["heap_used_bytes"] > 1e6 and m["heap_total_bytes"] >= m["heap_used_bytes"], wk
        assert m["active_handles"] >= 1, wk
    # both processes served the shared socket
    assert all(wk["req_total"] > 0 for wk in h.workers(iv, "web"))
    # 5xx responses are errors
    pid = int(http_get(port, "/fail")[2].split()[1])
    h.wait_for(lambda iv: any(wk["pid"] == pid and (wk["err_total"] or 0) >= 1 for wk in h.workers(iv, "web")),
               timeout=5, what="err_total >= 1 after a 503")


def test_request_blocking_the_loop_shows_as_lag(node_run):
    port = free_port()
    h = node_run(2, port)
    all_online(h, "web", 2, lambda w: w["agent"] and w["ready"])
    status, _, body = http_get(port, "/block")
    assert status == 200
    pid = int(body.split()[1])
    # The next report of that worker carries the stall: the agent hands a lag
    # window over within 50 ms + 2 timer periods and reports every 200 ms, so
    # allow the next 3 printed intervals; the request's own latency shows too.
    seen, lag_ok, lat_ok = [], False, False
    for _ in range(3):
        iv = h.next_interval()
        wk = next((w for w in h.workers(iv, "web") if w["pid"] == pid), None)
        if not wk:
            continue
        seen.append((wk["lag_max_ms"], wk["lat_p99_ms"]))
        lag_ok |= 150 <= (wk["lag_max_ms"] or 0) < 1000
        lat_ok |= 200 <= (wk["lat_p99_ms"] or 0) < 1000
        if lag_ok and lat_ok:
            break
    assert lag_ok, f"no lag_max_ms >= 150 for pid {pid} in 3 intervals (lag, lat): {seen}"
    assert lat_ok, f"no lat_p99_ms >= 200 for pid {pid} in 3 intervals (lag, lat): {seen}"


@pytest.mark.parametrize("balance", ["reuseport", "shared"])
def test_rolling_reload_under_wrk_loses_nothing(node_run, balance):
    """An unmodified Node server reading LISTEN_FDS through the agent, in both --balance
    modes: a socket of its own per slot, or one for all."""
    port = free_port()
    h = node_run(2, port, extra=["--no-echo", "--balance", balance])
    iv = all_online(h, "web", 2, lambda w: w["ready"])
    before = {w["pid"] for w in h.workers(iv, "web")}
    listening = sum(1 for st, lp, _, _ in tcp_sockets() if st == "LISTEN" and lp == port)
    assert listening == (2 if balance == "reuseport" else 1), listening
    out, total, errs, non2xx = wrk_during_reload(h, port, 7, 1.5, r"reload web: done, 2/2 replaced",
                                                 timeout_s="3s")
    assert total > 1000, out
    assert errs == 0, out
    assert non2xx == 0, out
    h.drain()
    iv = all_online(h, "web", 2, lambda w: w["ready"] and w["agent"], what="2 new workers ready")
    after = {w["pid"] for w in h.workers(iv, "web")}
    assert not (before & after), f"not every pid was replaced: {before} -> {after}"
    # the old workers drained and ended
    wait_until(lambda: not any(alive(pid) for pid in before), 5, what="the old workers to end",
               diag=lambda: f"old workers still running: {[p for p in before if alive(p)]}")
    assert not any(alive(pid) for pid in before), f"old workers still running: {before}"


# ---- SIGTERM: the drain, without a hub -------------------------------------------

def start_app(procs, tmp_path, port, app=APP, **env):
    """Starts APP on its own port with the agent preloaded (no hub); waits until it listens."""
    require_node()
    script = write(tmp_path, "app.js", app)
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    env.setdefault("DROVER_SOCKET", os.path.join(str(tmp_path), "no-hub", "agent.sock"))
    p = procs.spawn([NODE, script, str(port)], env=node_env(**env), stdout=out, stderr=err)

    def up_or_ended():
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return True
        except OSError:
            return p.poll() is not None
    wait_until(up_or_ended, 10, interval=0.02, what=f"the app to listen on port {port}",
               diag=lambda: f"stdout={read(out)!r} stderr={read(err)!r}")
    p.out, p.err = out, err
    return p


def read(f):
    f.seek(0)
    return f.read().decode("utf-8", "replace")


def wait_in_flight(port, conn):
    """Waits until the app has read the request sent on conn (it is then in flight)."""
    wait_until(lambda: server_read_all(port, conn.s), 10, interval=0.01,
               what="the app to read the request")


def refused(port):
    """True when a connection to port is refused; a connection made is closed at once."""
    try:
        socket.create_connection((HOST, port), timeout=1).close()
        return False
    except ConnectionRefusedError:
        return True


def test_sigterm_drains_in_flight_and_keepalive_without_cutting(procs, tmp_path):
    port = free_port()
    p = start_app(procs, tmp_path, port)
    idle = Conn(port)
    idle.send("/")
    assert idle.response()[0] == 200               # now idle, kept alive
    busy = Conn(port)
    busy.send("/slow")                              # 600 ms in flight
    wait_in_flight(port, busy)
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGTERM)
    # stops accepting at once
    wait_until(lambda: refused(port), 2, interval=0.02, what="the app to stop accepting "
               "(still accepting 2 s after SIGTERM)")
    # the idle keep-alive connection was not cut: its next request is answered, with Connection: close
    idle.send("/")
    status, headers, body = idle.response()
    assert status == 200 and headers.get("connection") == "close", headers
    assert idle.at_eof(), "the connection stays open after Connection: close"
    # the request in flight finishes, also told to close
    status, headers, body = busy.response()
    assert status == 200 and body.startswith("slow"), body
    assert headers.get("connection") == "close", headers
    assert busy.at_eof()
    # then the process ends as SIGTERM would have ended it
    assert p.wait(timeout=5) == -signal.SIGTERM
    assert time.monotonic() - t0 < 3
    assert read(p.err) == "", "the agent printed something"
    assert read(p.out) == f"listening on {port}\n"


def test_drain_timeout_closes_idle_connections(procs, tmp_path):
    port = free_port()
    p = start_app(procs, tmp_path, port, DROVER_DRAIN_TIMEOUT_MS=700)
    idle = Conn(port)
    idle.send("/")
    assert idle.response()[0] == 200
    t0 = time.monotonic()
    os.kill(p.pid, signal.SIGTERM)
    assert idle.at_eof(timeout=5), "an idle connection was not closed at the drain timeout"
    took = time.monotonic() - t0
    assert 0.6 <= took < 3, f"closed after {took:.2f} s, drain timeout 0.7 s"
    assert p.wait(timeout=5) == -signal.SIGTERM


def test_second_sigterm_ends_the_drain_at_once(procs, tmp_path):
    port = free_port()
    p = start_app(procs, tmp_path, port)
    busy = Conn(port)
    busy.send("/slow")
    wait_in_flight(port, busy)
    os.kill(p.pid, signal.SIGTERM)
    wait_until(lambda: refused(port), 5, interval=0.02, what="the first SIGTERM taken (listener closed)")
    time.sleep(0.1)                           # and the process stays
    assert p.poll() is None, "the first SIGTERM must wait for the request in flight"
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=2) == -signal.SIGTERM
    assert read(p.err) == ""


def test_drover_agent_0_leaves_the_process_alone(procs, tmp_path):
    port = free_port()
    p = start_app(procs, tmp_path, port, DROVER_AGENT=0)
    busy = Conn(port)
    busy.send("/slow")
    wait_in_flight(port, busy)
    os.kill(p.pid, signal.SIGTERM)            # no drain: the default action, at once
    assert p.wait(timeout=2) == -signal.SIGTERM
    with pytest.raises((ConnectionError, OSError)):
        busy.response(timeout=2)


def test_worker_without_a_server_becomes_ready_and_reloads(procs, sockdir, tmp_path):
    require_node()
    script = write(tmp_path, "queue.js", "setInterval(() => {}, 1000);\n")
    argv = [DROVER, "run", "--headless", "--interval", str(INTERVAL_MS), "--socket-dir", sockdir,
            "--log-dir", str(tmp_path), "-i", "1", "-n", "q", "--", NODE, script]
    h = RunHub(procs, sockdir, argv, node_env(DROVER_READY_FALLBACK_MS=500))
    iv = all_online(h, "q", 1, lambda w: w["agent"] and w["ready"], what="a ready worker without a server")
    old = h.workers(iv, "q")[0]["pid"]
    os.kill(h.pid, signal.SIGHUP)
    h.wait_stderr(r"reload q: done, 1/1 replaced", timeout=10)
    # no server to drain: SIGTERM ends it at once
    wait_until(lambda: not alive(old), 3, what=f"the old worker (pid {old}) to end")
    assert not alive(old)


def test_app_with_its_own_sigterm_handler_is_left_alone(procs, tmp_path):
    port = free_port()
    app = APP + r"""
process.on('SIGTERM', () => { console.log('app handler'); setTimeout(() => process.exit(7), 300); });
"""
    p = start_app(procs, tmp_path, port, app=app)
    os.kill(p.pid, signal.SIGTERM)
    wait_until(lambda: "app handler" in read(p.out), 5, interval=0.01, what="the app's own handler to run")
    time.sleep(0.1)                           # time for the agent to act, were it to
    # the agent did not close the server: the app decides
    assert http_get(port)[0] == 200
    assert p.wait(timeout=5) == 7
    assert read(p.out) == f"listening on {port}\napp handler\n"
    assert read(p.err) == ""


def test_signal_exit_listeners_do_not_stop_the_drain(procs, tmp_path):
    # What the signal-exit package (v3) does: act only when its listeners are
    # the only ones on the signal, then re-raise it. Its hooks must still run.
    port = free_port()
    app = APP + r"""
process.__signal_exit_emitter__ = { count: 1 };
process.on('SIGTERM', function listener() {
  if (process.listeners('SIGTERM').length === process.__signal_exit_emitter__.count) {
    console.log('exit hooks');
    process.removeListener('SIGTERM', listener);
    process.kill(process.pid, 'SIGTERM');
  }
});
"""
    p = start_app(procs, tmp_path, port, app=app)
    busy = Conn(port)
    busy.send("/slow")
    wait_in_flight(port, busy)
    os.kill(p.pid, signal.SIGTERM)
    status, headers, body = busy.response()
    assert status == 200 and body.startswith("slow") and headers.get("connection") == "close"
    assert p.wait(timeout=5) == -signal.SIGTERM
    assert read(p.out) == f"listening on {port}\nexit hooks\n"
    assert read(p.err) == ""


# ---- listen interception ---------------------------------------------------------

# Records what happened to each listen() call as one JSON line.
LISTEN_APP = r"""
const fs = require('fs');
const net = require('net');
const http = require('http');
const port = Number(process.argv[2]);
const out = {};
function done() { console.log(JSON.stringify(out)); process.exit(0); }
const a = http.createServer((q, r) => r.end('A ' + process.pid));
a.on('error', (e) => { out.a = e.code; done(); });
a.listen(port, '0.0.0.0', () => {
  out.a = a.address();
  out.env = Object.keys(process.env).filter((k) => k.startsWith('LISTEN_'));
  const flags = /flags:\s*(\d+)/.exec(fs.readFileSync('/proc/self/fdinfo/3', 'utf8'))[1];
  out.cloexec = (parseInt(flags, 8) & 0o2000000) !== 0;
  const b = net.createServer();          // same port again: only the first listen is served from fd 3
  b.on('error', (e) => { out.b = e.code; c(); });
  b.listen(port, () => { out.b = 'listening'; c(); });
});
function c() {
  const s = net.createServer();          // another port: untouched
  s.listen(0, '127.0.0.1', () => { out.c = s.address().port; setTimeout(done, 300); });
}
"""


def run_with_fd3(tmp_path, port, listen_pid="$$", timeout=10):
    """Runs LISTEN_APP with a listening socket of ours at fd 3; returns (rc, stdout, stderr, served)."""
    require_node()
    ls = socket.socket()
    ls.bind((HOST, port))
    ls.listen(64)
    script = write(tmp_path, "listen.js", LISTEN_APP)
    fd = ls.fileno()
    cmd = f'LISTEN_PID={listen_pid} LISTEN_FDS=1 LISTEN_FDNAMES=t exec "{NODE}" "{script}" {port} 3<&{fd}'
    env = node_env(DROVER_SOCKET=os.path.join(str(tmp_path), "none.sock"))
    p = subprocess.Popen(["bash", "-c", cmd], env=env, pass_fds=(fd,), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    served = [None]

    def served_or_ended():
        if p.poll() is not None:
            return True
        c = socket.create_connection((HOST, port), timeout=5)
        c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        c.settimeout(0.5)
        try:
            data = c.recv(65536)
            served[0] = data.split(b"\r\n\r\n", 1)[1].decode() if data else None
        except socket.timeout:
            pass                                    # not accepted by anybody (yet)
        c.close()
        return served[0] is not None
    try:
        # our socket is the only one bound to the port: a reply proves node accepts on it
        # (each try waits up to 0.5 s for the reply; a node that has ended ends the tries)
        wait_until(served_or_ended, timeout, interval=0, fail=False)
        out, err = p.communicate(timeout=timeout)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        ls.close()
    return p.returncode, out, err, served[0]


def test_listen_on_the_drover_port_is_served_from_fd3_once(tmp_path):
    port = free_port()
    rc, out, err, served = run_with_fd3(tmp_path, port)
    assert rc == 0, (out, err)
    r = json.loads(out)
    assert r["a"]["port"] == port, r                    # listen(port, '0.0.0.0') got the socket at fd 3
    assert r["a"]["address"] == HOST, r                 # ... with its address, not the one asked for
    assert served and served.startswith("A "), served
    assert r["env"] == [], "LISTEN_* must be deleted from process.env"
    assert r["cloexec"] is True
    assert r["b"] == "EADDRINUSE", r                    # a second listen on the port: untouched
    assert r["c"] != port                               # another port: untouched
    assert err == ""


def test_listen_pid_of_another_process_is_not_intercepted(tmp_path):
    port = free_port()
    rc, out, err, served = run_with_fd3(tmp_path, port, listen_pid=1, timeout=5)
    assert json.loads(out)["a"] == "EADDRINUSE", out
    assert err == ""


# ---- once per process ---------------------------------------------------------------

WT_APP = r"""
const { Worker } = require('worker_threads');
const path = process.argv[2];
const api = require(path);                   // a second copy, from another path
const w = new Worker(`
  const { parentPort } = require('worker_threads');
  const api = require(${JSON.stringify(path)});
  parentPort.postMessage(api.reason);
  setTimeout(() => {}, 1200);
`, { eval: true });
w.on('message', (m) => console.log('active=' + api.active + ' worker=' + m));
w.on('exit', () => setTimeout(() => {}, 100));
"""


def test_worker_threads_and_second_copies_do_not_report_again(tmp_path):
    require_node()
    # our own receiver instead of a hub: every datagram, decoded
    path = os.path.join(str(tmp_path), "agent.sock")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    copy = os.path.join(str(tmp_path), "copy")
    shutil.copytree(AGENT_DIR, copy, ignore=shutil.ignore_patterns("obj"))
    script = write(tmp_path, "wt.js", WT_APP)
    p = subprocess.Popen([NODE, script, copy], env=node_env(DROVER_SOCKET=path, DROVER_INTERVAL_MS=100),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    msgs = []
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if select.select([rx], [], [], 0.1)[0]:
                msgs.append(msgpack.unpackb(rx.recv(8192), raw=False))
            elif p.poll() is not None:
                break
        out, err = p.communicate(timeout=5)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        rx.close()
    assert p.returncode == 0, err
    assert out == "active=true worker=worker_thread\n", (out, err)
    assert err == ""
    assert {m["pid"] for m in msgs} == {p.pid}
    types = [m["t"] for m in msgs]
    assert types.count("hello") == 1, types
    assert types.count("bye") == 1 and types[-1] == "bye", types
    assert types.count("report") >= 5, types
    seqs = [m["seq"] for m in msgs]
    assert len(set(seqs)) == len(seqs), f"two streams from one pid: {seqs}"


def test_no_hub_the_app_runs_and_the_agent_prints_nothing(tmp_path):
    require_node()
    app = r"""
const http = require('http');
const s = http.createServer((q, r) => r.end('ok')).listen(0, '127.0.0.1', () => {
  http.get({ port: s.address().port, host: '127.0.0.1', path: '/' }, (res) => {
    res.setEncoding('utf8');
    res.on('data', (d) => console.log('app got ' + d));
    res.on('end', () => s.close());
  });
});
"""
    script = write(tmp_path, "nohub.js", app)
    xdg = os.path.join(str(tmp_path), "xdg")      # the default socket path: nobody there
    os.mkdir(xdg)
    env = node_env(XDG_RUNTIME_DIR=xdg)
    t0 = time.monotonic()
    r = subprocess.run([NODE, script], env=env, capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "app got ok\n"
    assert r.stderr == ""
    # unref'd timers: the process ended as soon as the app was done
    assert time.monotonic() - t0 < 3


# ---- own cluster master, attached ----------------------------------------------------

def test_own_cluster_master_attached_shows_workers_with_agent(procs, sockdir, tmp_path):
    require_node()
    wrk = require_wrk()
    port = free_port()
    script = write(tmp_path, "cluster.js", CLUSTER_APP)
    env = node_env(DROVER_SOCKET=os.path.join(sockdir, "agent.sock"), DROVER_INTERVAL_MS=INTERVAL_MS)
    master = procs.spawn([NODE, script, str(port)], env=env, stdout=subprocess.DEVNULL)
    argv = [DROVER, "attach", str(master.pid), "--headless", "--interval", str(INTERVAL_MS),
            "--socket-dir", sockdir, "-n", "cl"]
    h = RunHub(procs, sockdir, argv, node_env())
    iv = all_online(h, "cl", 2, lambda w: w["agent"] and w["ready"], what="2 cluster workers with the agent")
    pids = {w["pid"] for w in h.workers(iv, "cl")}
    assert master.pid not in pids
    # the master reports too, as itself
    assert any(w["pid"] == master.pid and w["agent"] for w in iv.workers), iv.summary()
    out = subprocess.run([wrk, "-t1", "-c4", "-d1s", f"http://{HOST}:{port}/"], capture_output=True,
                         text=True, timeout=20).stdout
    assert parse_wrk(out)[1:] == (0, 0), out
    iv = h.wait_for(lambda iv: sum(w["req_total"] or 0 for w in h.workers(iv, "cl")) > 100,
                    timeout=5, what="requests counted by the cluster workers")
    assert all(w["metrics"] and w["metrics"]["heap_used_bytes"] > 0 for w in h.workers(iv, "cl"))
    # restart one worker: SIGTERM (it drains and exits), the master forks a replacement
    victim = min(pids)
    os.kill(victim, signal.SIGTERM)
    iv = all_online(h, "cl", 2, lambda w: w["pid"] != victim and w["agent"] and w["ready"],
                    what="the master's replacement, reporting")
    assert len({w["pid"] for w in h.workers(iv, "cl")} - pids) == 1
