"""
The integration tests' one harness: real hubs, real workers, real sockets.
Shared helpers live here and nowhere else (test files import from conftest,
never from each other).

Run with Debian's interpreter (it has python3-pytest and python3-msgpack):

    DROVER_BUILD=$PWD/build /usr/bin/python3 -m pytest -q tests/integration

DROVER_BUILD is the build directory holding `drover` and `examples/worker`
(default: ./build next to the repository root).

Every process a test starts is registered with the `procs` fixture and killed
by pid at teardown; every wait here is bounded: poll with wait_until(), never a
fixed sleep that assumes something has happened by then.
"""
import json
import os
import queue
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import shutil

import pytest

# The pyenv/venv python on PATH may lack Debian's python3-msgpack: fall back to
# the system dist-packages (pure-python fallback inside msgpack if the C
# extension does not match).
try:
    import msgpack  # noqa: F401
except ImportError:  # pragma: no cover - depends on the interpreter
    for _d in ("/usr/lib/python3/dist-packages",):
        if os.path.isdir(os.path.join(_d, "msgpack")) and _d not in sys.path:
            sys.path.append(_d)
    import msgpack  # noqa: F401,E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("DROVER_BUILD") or os.path.join(REPO, "build"))
DROVER = os.path.join(BUILD, "drover")
WORKER = os.path.join(BUILD, "examples", "worker")
HTTPD = os.path.join(BUILD, "examples", "httpd")
INTERVAL_MS = 200
INTERVAL = INTERVAL_MS / 1000.0
# Where msgpack lives, so helper subprocesses of this interpreter find it too.
MSGPACK_PATH = os.path.dirname(os.path.dirname(os.path.abspath(msgpack.__file__)))

# Every key of a headless NDJSON line, per line type (README.md, "Headless output").
WORKER_KEYS = {"type", "ts", "app", "id", "pid", "state", "agent", "restarts", "uptime_s",
               "cpu_pct", "rss_bytes", "req_total", "req_per_s", "err_total", "inflight",
               "lat_p50_ms", "lat_p99_ms", "lat_max_ms", "lag_p99_ms", "lag_max_ms", "ready", "metrics",
               "procs", "pss_bytes"}
APP_KEYS = {"type", "ts", "app", "workers", "online", "req_per_s", "cpu_pct", "rss_bytes",
            "lat_p50_ms", "lat_p99_ms", "lat_max_ms", "lag_p99_ms", "lag_max_ms"}
HUB_KEYS = {"type", "ts", "workers", "reports_total", "dropped_total", "bad_total",
            "spoofed_total", "cpu_pct", "cpu_window_s", "rss_bytes"}
KEYS = {"worker": WORKER_KEYS, "app": APP_KEYS, "hub": HUB_KEYS}
STATES = {"starting", "online", "stopping", "stopped", "backoff", "errored", "gone"}


# `make test-valgrind` sets DROVER_WRAP to a valgrind command line: every hub a
# test starts runs under it, and a hub that ends with valgrind's error code
# (leak or memory error) fails the test at teardown.
WRAP = os.environ.get("DROVER_WRAP", "").split()
VALGRIND_ERROR = 99


def hub_asan(pid):
    """True when the hub runs under AddressSanitizer (its RSS is then shadow memory)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return "asan" in f.read()
    except OSError:
        return False


def wrap(argv):
    """argv of a hub, under DROVER_WRAP when set."""
    return WRAP + list(argv) if argv and argv[0] == DROVER else list(argv)


_ports_given = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral
    range: a port the kernel picked for bind(0) lies inside it, where any outgoing
    connection of the machine (wrk's, ssh's, Prometheus's scrapes) may take it as its
    local port before the test binds it ("Address already in use", seen once in CI).
    Never the same port twice in one run."""
    hi = min(_ephemeral_low(), 32768)
    for _ in range(1000):
        port = random.randrange(10000, hi)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise RuntimeError("no free TCP port below the ephemeral range")


def http_get(port, path="/", timeout=5.0):
    """One request on a new connection to 127.0.0.1:port; returns (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    return parse_response(data)


def parse_response(data):
    """(status, {lower-case header: value}, body) of one whole HTTP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return int(lines[0].split()[1]), headers, body.decode()


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(pred, timeout=10.0, interval=0.05, what="condition", diag=None, fail=True):
    """Calls pred() every `interval` seconds until it returns something truthy, and
    returns that. After `timeout` seconds: fails the test, naming `what` and adding
    diag()'s text; with fail=False, returns pred()'s last (falsy) value instead."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            if not fail:
                return v
            pytest.fail(f"timed out after {timeout}s waiting for {what}" + (f"\n{diag()}" if diag else ""),
                        pytrace=False)
        time.sleep(interval)


def descendants(pid):
    """Every process below pid, from /proc (children of children...)."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def kill_survivors(pids, timeout):
    """Gives pids up to timeout seconds to end, then SIGKILLs those still alive."""
    wait_until(lambda: not any(alive(p) for p in pids), timeout, fail=False)
    for p in pids:
        if alive(p):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---- TCP, as the kernel sees it (/proc/net/tcp*) ------------------------------------

TCP_STATES = {"01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
              "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
              "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING"}


def tcp_sockets():
    """Every TCP socket of this network namespace: [(state, local port, remote port, rx queue)]."""
    out = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            out.append((TCP_STATES.get(f[3], f[3]), int(f[1].rsplit(":", 1)[1], 16),
                        int(f[2].rsplit(":", 1)[1], 16), int(f[4].split(":")[1], 16)))
    return out


def listening(port):
    """True while some socket listens on TCP port."""
    return any(st == "LISTEN" and lp == port for st, lp, _, _ in tcp_sockets())


def server_conns(port):
    """The server side of every connection to port that its server has not closed yet."""
    return [(st, rp, rx) for st, lp, rp, rx in tcp_sockets()
            if lp == port and st in ("SYN_RECV", "ESTABLISHED", "CLOSE_WAIT")]


def server_read_all(port, client):
    """True once the server on port has read every byte sent on the connected socket client."""
    me = client.getsockname()[1]
    ends = [rx for st, rp, rx in server_conns(port) if rp == me]
    return bool(ends) and all(rx == 0 for rx in ends)


def holds_socket(pid, sock):
    """True while process pid has a descriptor open on sock (a socket object of ours)."""
    want = f"socket:[{os.fstat(sock.fileno()).st_ino}]"
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == want:
                return True
        except OSError:
            pass
    return False


def parse_wrk(out):
    """(requests, socket errors, non-2xx) from wrk's output."""
    m = re.search(r"(\d+) requests in", out)
    total = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errs = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return total, errs, int(m.group(1)) if m else 0


def require_wrk():
    """wrk's path; fails the test when it is not installed."""
    wrk = shutil.which("wrk")
    if not wrk:
        pytest.fail("wrk is not installed (Debian: apt-get install wrk, or make deps)", pytrace=False)
    return wrk


def wrk_during_reload(hub, port, duration_s, sighup_after_s, done_pattern, timeout_s="2s"):
    """Runs wrk -t2 -c32 against 127.0.0.1:port, SIGHUPs the hub after
    sighup_after_s, waits for done_pattern on its stderr and for wrk;
    returns (wrk output, requests, socket errors, non-2xx)."""
    wrk = require_wrk()
    w = subprocess.Popen([wrk, "-t2", "-c32", f"-d{duration_s}s", "--timeout", timeout_s,
                          f"http://127.0.0.1:{port}/"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(sighup_after_s)
        os.kill(hub.pid, signal.SIGHUP)
        hub.wait_stderr(done_pattern, timeout=15)
        out, _ = w.communicate(timeout=20)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    return (out, *parse_wrk(out))


def require_binary(path):
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is missing: build it first (make), or set DROVER_BUILD", pytrace=False)


# ---- processes -------------------------------------------------------------

class Procs:
    """Registry of every process a test started; teardown kills them by pid."""

    def __init__(self):
        self.procs = []

    def add(self, p):
        self.procs.append(p)
        return p

    def spawn(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(wrap(argv), **kw)
        p.wrapped = bool(WRAP) and argv[0] == DROVER
        return self.add(p)

    def check_wrapped(self):
        """Under DROVER_WRAP: no hub may have ended with valgrind's error code."""
        bad = [p.args for p in self.procs if getattr(p, "wrapped", False)
               and p.returncode == VALGRIND_ERROR]
        assert not bad, f"valgrind found errors or leaks in: {bad} (see its output above)"

    def kill_all(self):
        # Hubs first get SIGTERM so they unlink their socket; anything left is SIGKILLed.
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + (20 if WRAP else 3)
        for p in self.procs:
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        for p in self.procs:
            for f in (p.stdout, p.stderr):
                if f:
                    try:
                        f.close()
                    except OSError:
                        pass


@pytest.fixture
def procs():
    r = Procs()
    yield r
    r.kill_all()
    r.check_wrapped()


@pytest.fixture
def sockdir():
    """A fresh socket directory (mode 0700), short enough for sun_path."""
    d = tempfile.mkdtemp(prefix="drv-it-", dir="/tmp")
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- the hub and its NDJSON --------------------------------------------------

class Interval:
    """One printed interval: the worker and app lines, closed by the hub line."""

    def __init__(self, lines, received, index):
        self.lines = lines
        self.received = received            # time.monotonic() at the hub line
        self.index = index                  # 1 = first interval this hub printed
        self.hub = lines[-1]
        self.ts = self.hub["ts"]
        self.workers = [l for l in lines if l["type"] == "worker"]
        self.apps = [l for l in lines if l["type"] == "app"]

    def worker(self, pid):
        for w in self.workers:
            if w["pid"] == pid:
                return w
        return None

    def app(self, name):
        for a in self.apps:
            if a["app"] == name:
                return a
        return None

    def summary(self):
        ws = ", ".join(f"{w['app']}/{w['id']}/pid {w['pid']} {w['state']} req={w['req_total']}"
                       f" rps={w['req_per_s']} agent={w['agent']} ready={w['ready']}"
                       for w in self.workers)
        h = {k: self.hub[k] for k in sorted(HUB_KEYS - {"type", "ts"})}
        return f"interval #{self.index}: workers [{ws}] hub {h}"


class Hub:
    """A running `drover monit --headless` whose stdout a thread parses into intervals."""

    def __init__(self, procs, sockdir, args=(), interval_ms=INTERVAL_MS):
        self._start(procs, sockdir, [DROVER, "monit", "--headless", "--interval", str(interval_ms),
                                     "--socket-dir", sockdir, *args], interval_ms)

    def _start(self, procs, sockdir, argv, interval_ms, **spawn_kw):
        require_binary(DROVER)
        self.sockdir = sockdir
        self.sock = os.path.join(sockdir, "agent.sock")
        self.interval = interval_ms / 1000.0
        self.argv = argv
        self.errfile = tempfile.TemporaryFile()
        self.started = time.monotonic()
        self.proc = procs.spawn(argv, stdout=subprocess.PIPE, stderr=self.errfile, **spawn_kw)
        self.pid = self.proc.pid
        self.q = queue.Queue()
        self.history = []           # every Interval received, in order
        self.raw = []               # every stdout line, for diagnostics
        self.parse_errors = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        pending, n = [], 0
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.raw.append(line)
            try:
                obj = json.loads(line)
            except ValueError as e:
                self.parse_errors.append(f"{line!r}: {e}")
                continue
            pending.append(obj)
            if obj.get("type") == "hub":
                n += 1
                iv = Interval(pending, time.monotonic(), n)
                pending = []
                self.history.append(iv)
                self.q.put(iv)
        self.q.put(None)            # EOF

    def stderr(self):
        self.errfile.seek(0)
        return self.errfile.read().decode("utf-8", "replace")

    def wait_stderr(self, pattern, timeout=10.0):
        """The first match of pattern (multi-line) in the hub's stderr; fails after timeout."""
        return wait_until(lambda: re.search(pattern, self.stderr(), re.M), timeout,
                          what=f"a stderr line matching {pattern!r}",
                          diag=lambda: f"stderr:\n{self.stderr()}")

    def _diag(self):
        rc = self.proc.poll()
        last = self.history[-1].summary() if self.history else "no interval printed"
        return f"hub rc={rc}, stderr={self.stderr()!r}; last {last}"

    def next_interval(self, timeout=5.0):
        """The next interval printed, or fail after timeout seconds."""
        try:
            iv = self.q.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no interval from the hub within {timeout}s; {self._diag()}", pytrace=False)
        if iv is None:
            self.q.put(None)
            pytest.fail(f"the hub's stdout ended; {self._diag()}", pytrace=False)
        return iv

    def wait_for(self, pred, timeout=10.0, what="condition"):
        """Returns the first new interval for which pred(interval) is true; fails after timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {timeout}s waiting for {what}; "
                            f"last {last.summary() if last else 'none'}; {self._diag()}",
                            pytrace=False)
            iv = self.next_interval(timeout=left)
            last = iv
            if pred(iv):
                return iv

    def intervals(self, n, timeout=None):
        """The next n intervals."""
        timeout = timeout or max(5.0, n * self.interval * 4)
        deadline = time.monotonic() + timeout
        return [self.next_interval(timeout=max(0.1, deadline - time.monotonic())) for _ in range(n)]

    def drain(self):
        """Discards intervals already queued (so waits see only fresh ones)."""
        while True:
            try:
                iv = self.q.get_nowait()
            except queue.Empty:
                return
            if iv is None:
                self.q.put(None)
                return

    def wait_socket(self, timeout=5.0):
        """Waits until the hub has bound agent.sock (a first interval proves it)."""
        self.wait_for(lambda iv: True, timeout=timeout, what="the hub's first interval")

    def kill(self, sig=signal.SIGKILL):
        os.kill(self.pid, sig)
        self.proc.wait(timeout=5)

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None


class RunHub(Hub):
    """A `drover run|attach ... --headless` (argv given whole, in a session of its own)
    whose NDJSON is parsed into intervals like a monitor's."""

    def __init__(self, procs, sockdir, argv, env=None, interval_ms=INTERVAL_MS):
        self._start(procs, sockdir, argv, interval_ms, env=env, start_new_session=True)

    def workers(self, iv, app=None):
        return [w for w in iv.workers if app is None or w["app"] == app]


def run_argv(sockdir, logdir, *args):
    """argv of `drover run --headless` at INTERVAL_MS on sockdir and logdir; args are
    the rest (options, "--", the command)."""
    return [DROVER, "run", "--headless", "--interval", str(INTERVAL_MS), "--socket-dir", sockdir,
            "--log-dir", str(logdir), *map(str, args)]


def online(hub, n, app=None, timeout=10.0):
    """Waits for an interval with n online workers (of app); returns it."""
    return hub.wait_for(lambda iv: sum(1 for w in hub.workers(iv, app) if w["state"] == "online") == n,
                        timeout=timeout, what=f"{n} online workers")


@pytest.fixture
def logdir():
    """A fresh directory for `drover run --log-dir`."""
    d = tempfile.mkdtemp(prefix="drv-logs-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start_hub(procs, sockdir):
    """Factory: start_hub(*extra_args, sockdir=...) -> Hub."""
    def start(*args, sockdir=sockdir, interval_ms=INTERVAL_MS):
        return Hub(procs, sockdir, args, interval_ms)
    return start


@pytest.fixture
def hub(start_hub):
    h = start_hub()
    h.wait_socket()
    return h


# ---- workers and senders -----------------------------------------------------

def worker_env(sock, name=None, wid=None, interval_ms=INTERVAL_MS, **extra):
    env = dict(os.environ)
    for k in ("DROVER_NAME", "DROVER_WORKER_ID", "NOTIFY_SOCKET", "DROVER_AGENT"):
        env.pop(k, None)
    env["DROVER_SOCKET"] = sock
    env["DROVER_INTERVAL_MS"] = str(interval_ms)
    if name is not None:
        env["DROVER_NAME"] = name
    if wid is not None:
        env["DROVER_WORKER_ID"] = str(wid)
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def start_worker(procs):
    """Factory: start_worker(sock, name, wid, rate=.., latency=.., args=[...]) -> Popen."""
    def start(sock, name=None, wid=None, rate=100, latency=5, args=(), interval_ms=INTERVAL_MS,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
        require_binary(WORKER)
        argv = [WORKER, "--rate", str(rate), "--latency", str(latency), *map(str, args)]
        if name is not None:
            argv += ["--name", name]
        return procs.spawn(argv, env=worker_env(sock, name, wid, interval_ms),
                           stdout=stdout, stderr=stderr)
    return start


# A report sender in Python (msgpack), run as its own process so the hub sees
# (and samples) a distinct pid. argv[1] is a JSON config.
PY_SENDER = r'''
import json, os, socket, sys, time
import msgpack
cfg = json.loads(sys.argv[1])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(d):
    try:
        s.sendto(msgpack.packb(d, use_bin_type=True), cfg["sock"])
    except OSError:
        pass
if cfg.get("notify"):
    for _ in range(cfg.get("repeat", 1)):
        try:
            s.sendto(cfg["notify"].encode(), cfg["sock"])
        except OSError:
            pass
        time.sleep(cfg.get("period", 0.2))
    time.sleep(600)
    sys.exit(0)
t0 = time.time()
seq = 0
base = {"v": 1, "pid": os.getpid()}
if cfg.get("name"): base["name"] = cfg["name"]
if cfg.get("wid") is not None: base["wid"] = cfg["wid"]
seq += 1
send(dict(base, t="hello", seq=seq, ts=int(time.time() * 1000)))
end = time.time() + cfg.get("duration", 600)
while time.time() < end:
    time.sleep(cfg.get("period", 0.2))
    seq += 1
    now = time.time()
    d = dict(base, t="report", seq=seq, ts=int(now * 1000),
             req=int(cfg.get("rate", 50) * (now - t0)), err=0, inflight=1,
             lat_p50=2000, lat_p99=9000, lat_max=12000,
             lag_mean=100, lag_p99=800, lag_max=1500, ready=True, drops=0,
             rss=12345678, cpu_us=1000, future_key={"nested": [1, 2, 3]})
    if cfg.get("metrics"): d["m"] = cfg["metrics"]
    send(d)
'''


@pytest.fixture
def start_py_sender(procs):
    """Factory: start_py_sender(sock, **cfg) -> Popen of the Python msgpack sender."""
    def start(sock, **cfg):
        cfg["sock"] = sock
        env = dict(os.environ)
        env["PYTHONPATH"] = MSGPACK_PATH + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return procs.spawn([sys.executable, "-c", PY_SENDER, json.dumps(cfg)], env=env,
                           stdout=subprocess.DEVNULL)
    return start


class Sender:
    """Datagrams from this (pytest) process to the hub's report socket."""

    def __init__(self, sock):
        self.path = sock
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    def raw(self, data):
        self.s.sendto(data, self.path)

    def pack(self, d):
        self.raw(msgpack.packb(d, use_bin_type=True))

    @staticmethod
    def report(seq, pid=None, **kw):
        d = {"v": 1, "t": "report", "pid": os.getpid() if pid is None else pid, "seq": seq,
             "ts": int(time.time() * 1000)}
        d.update(kw)
        return d

    def close(self):
        self.s.close()


@pytest.fixture
def sender(sockdir):
    s = Sender(os.path.join(sockdir, "agent.sock"))
    yield s
    s.close()


def check_line_keys(iv_list):
    """Asserts every line of every interval has every key of its type (WORKER_KEYS...)."""
    for iv in iv_list:
        for line in iv.lines:
            t = line.get("type")
            assert t in KEYS, f"unknown line type: {line}"
            missing = KEYS[t] - set(line)
            assert not missing, f"{t} line misses keys {sorted(missing)}: {line}"
            assert isinstance(line["ts"], (int, float)) and line["ts"] > 1.6e9, line
            if t == "worker":
                assert line["state"] in STATES, line


# A cluster master for attach tests: 3 children, each replaced when it exits.
MASTER = r'''
import ctypes, os, signal, sys, time
kids = set()
def fork():
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        ctypes.CDLL(None).prctl(1, 9)      # PR_SET_PDEATHSIG, SIGKILL: never outlive the master
        while True:
            time.sleep(1)
    kids.add(pid)
def on_term(sig, frame):
    for k in kids:
        os.kill(k, signal.SIGKILL)
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
for _ in range(3):
    fork()
while True:
    try:
        pid, _ = os.wait()
    except ChildProcessError:
        time.sleep(0.1)
        continue
    kids.discard(pid)
    time.sleep(0.1)
    fork()
'''


# ---- the control socket, raw ---------------------------------------------------------------

CTL_VERSION = 2   # proto/control.h CTL_VERSION


class CtlSession:
    """A raw connection to a hub's ctl.sock (PROTOCOL.md §4), past the hello."""

    def __init__(self, sockdir, timeout=5.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        try:
            self.s.connect(os.path.join(sockdir, "ctl.sock"))
            self.f = self.s.makefile("rwb")
            self.send({"hello": "drover", "version": CTL_VERSION})
            self.hello = json.loads(self.f.readline())
        except BaseException:
            self.s.close()
            raise
        assert self.hello.get("type") == "hello", self.hello

    def send(self, obj):
        self.f.write(json.dumps(obj).encode() + b"\n")
        self.f.flush()

    def next(self):
        """The next message; fails when the hub closed the connection."""
        line = self.f.readline()
        if not line:
            raise AssertionError("the hub closed the connection")
        return json.loads(line)

    def ask(self, req):
        """Sends req and returns the next reply (pushed messages before it are skipped)."""
        self.send(req)
        while True:
            m = self.next()
            if m.get("type") == "reply":
                return m

    def close(self):
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
