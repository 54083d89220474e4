"""
Many hosts over ssh (issue 12): `drover bridge` relays the control protocol
between stdin/stdout and a hub's ctl.sock; the CLI's `--host` reaches a hub
through `ssh … drover bridge`; `monit --headless --host` merges several hosts'
NDJSON; `monit --no-local --host` is the console on one host, and `monit --host …` the
console merging the local hub and the hosts (both in tmux). The hosts are real: each is a real OpenSSH
`sshd` on its own loopback port, started here with a host key and a client key
generated here, and the "host's" hub is a real `drover run` whose socket lives
where that sshd's sessions look for it ($XDG_RUNTIME_DIR set by the sshd's own
SetEnv), as on two machines.
"""
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import types
import uuid

import pytest

from conftest import (DROVER, RunHub, descendants, free_port, kill_survivors, listening, online, run_argv,
                      wait_until)

SSHD = "/usr/sbin/sshd"


def require_sshd():
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        pytest.fail("openssh-server and openssh-client are needed (tools/install-deps.sh installs them)",
                    pytrace=False)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)   # sshd's privilege separation dir, as root


@pytest.fixture(scope="module")
def keys():
    """A host key and a client key (ed25519, no passphrase), made once for the module."""
    require_sshd()
    d = tempfile.mkdtemp(prefix="drv-ssh-", dir="/tmp")
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, name)], check=True)
    yield d
    shutil.rmtree(d, ignore_errors=True)


class Host:
    """One stand-in host: an sshd on 127.0.0.1:port whose sessions get XDG_RUNTIME_DIR=self.xdg,
    so `drover bridge` there finds the hub whose socket dir is self.sockdir."""

    def __init__(self, procs, keys, root, name):
        self.procs, self.keys = procs, keys
        self.xdg = os.path.join(root, name)
        self.sockdir = os.path.join(self.xdg, "drover", "default")
        os.makedirs(self.sockdir, mode=0o700)
        os.chmod(self.xdg, 0o700)
        self.port = free_port()
        self.spec = f"127.0.0.1:{self.port}"
        self.cfg = os.path.join(root, f"{name}.sshd_config")
        with open(self.cfg, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {keys}/host\n"
                    f"AuthorizedKeysFile {keys}/client.pub\nStrictModes no\nUsePAM no\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
                    "PermitRootLogin prohibit-password\nPidFile none\nLogLevel ERROR\n"
                    f"SetEnv XDG_RUNTIME_DIR={self.xdg}\n")
        self.sshd = None
        self.start_sshd()

    def start_sshd(self):
        self.sshd = self.procs.spawn([SSHD, "-D", "-e", "-f", self.cfg], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.port), 10, what=f"sshd on port {self.port}")

    def stop_sshd(self):
        """The host goes down: sshd and every session it forked (their ssh clients see the connection end)."""
        sessions = descendants(self.sshd.pid)
        self.sshd.terminate()
        self.sshd.wait(timeout=10)
        for p in sessions:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def fleet(procs, keys):
    """A factory of hosts; the environment the CLI needs to reach them ($DROVER_SSH, $DROVER_REMOTE)."""
    root = tempfile.mkdtemp(prefix="drv-fl-", dir="/tmp")
    made = []

    def make():
        h = Host(procs, keys, root, f"h{len(made) + 1}")
        made.append(h)
        return h
    yield make
    shutil.rmtree(root, ignore_errors=True)


def fleet_env(keys):
    env = dict(os.environ)
    env["DROVER_SSH"] = (f"ssh -F /dev/null -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no "
                         f"-o LogLevel=ERROR -i {keys}/client")
    env["DROVER_REMOTE"] = DROVER   # the build's drover: the "remote" is this machine
    return env


def cli(keys, *args, timeout=60):
    return subprocess.run([DROVER, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=fleet_env(keys))


def sleepers(procs, host, logdir, n=2, app="web", flag=None, say=None):
    """`drover run -i n` on host of a silent worker (online after the 1 s grace); when flag
    exists, a new worker exits 7 at once, so a reload aborts; say: a line it prints first."""
    script = f'if [ -e {flag} ]; then exit 7; fi; exec sleep 120' if flag else "exec sleep 120"
    if say:
        script = f"echo {say}; {script}"
    logdir = os.path.join(logdir, str(host.port))   # each host its own log files
    os.makedirs(logdir, exist_ok=True)
    h = RunHub(procs, host.sockdir, run_argv(host.sockdir, logdir, "-i", n, "-n", app, "--no-echo", "--",
                                             "sh", "-c", script))
    online(h, n, app)
    return h


def child_pids(hub):
    """The hub's workers as /proc sees them: its children that run sleep (not the guard)."""
    out = set()
    for p in descendants(hub.pid):
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == "sleep":
                    out.add(p)
        except OSError:
            pass
    return out


# ---- drover bridge ---------------------------------------------------------------------

def test_bridge_as_a_pipe_speaks_the_protocol(procs, sockdir, logdir):
    h = RunHub(procs, sockdir, run_argv(sockdir, logdir, "-i", 2, "-n", "web", "--no-echo", "--",
                                        "sh", "-c", "exec sleep 120"))
    online(h, 2, "web")
    b = procs.spawn([DROVER, "bridge", "--socket-dir", sockdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    b.stdin.write(b'{"hello":"drover","version":2}\n')
    b.stdin.flush()
    hello = json.loads(b.stdout.readline())
    assert hello["type"] == "hello" and hello["hub_pid"] == h.pid and hello["mode"] == "run"
    b.stdin.write(b'{"cmd":"ls","id":7}\n')
    b.stdin.flush()
    rep = json.loads(b.stdout.readline())
    assert rep["type"] == "reply" and rep["id"] == 7 and rep["ok"] is True
    # the pids the hub names through the bridge are its children, as /proc has them
    assert {w["pid"] for w in rep["workers"]} == child_pids(h)
    # stdin closed: the bridge passes the end on and exits
    b.stdin.close()
    assert b.wait(timeout=10) == 0
    assert b.stderr.read() == b""


def test_bridge_exits_when_either_side_closes(procs, sockdir, logdir):
    h = RunHub(procs, sockdir, run_argv(sockdir, logdir, "-i", 1, "-n", "web", "--no-echo", "--",
                                        "sh", "-c", "exec sleep 120"))
    online(h, 1, "web")
    # a closed stdin
    r = subprocess.run([DROVER, "bridge", "--socket-dir", sockdir], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=10)
    assert r.returncode == 0 and r.stdout == b"", r
    # the hub going away (stopped through the bridge itself): the bridge ends too
    b = procs.spawn([DROVER, "bridge", "--socket-dir", sockdir], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    b.stdin.write(b'{"hello":"drover","version":2}\n{"cmd":"stop","id":1}\n')
    b.stdin.flush()
    lines = [json.loads(b.stdout.readline()) for _ in range(2)]
    assert lines[1]["ok"] is True, lines
    assert h.proc.wait(timeout=15) == 0
    assert b.wait(timeout=10) == 0
    b.stdin.close()
    # no hub at all: exit 1 with the reason
    r = subprocess.run([DROVER, "bridge", "--socket-dir", sockdir], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and r.stderr.startswith("drover: no hub is running here"), r.stderr
    r = subprocess.run([DROVER, "bridge", "--bogus"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "usage: drover bridge" in r.stderr


# ---- --host ----------------------------------------------------------------------------

def test_ls_and_restart_over_ssh_reach_the_right_host(procs, keys, fleet, logdir):
    h1, h2 = fleet(), fleet()
    hub1, hub2 = sleepers(procs, h1, logdir), sleepers(procs, h2, logdir)
    r = cli(keys, "ls", "--json", "--host", h1.spec, "--host", h2.spec)
    assert r.returncode == 0, r.stderr
    snaps = [json.loads(l) for l in r.stdout.splitlines()]
    assert [s["remote"] for s in snaps] == [h1.spec, h2.spec]
    # each host's pids are its own hub's children, read from /proc here
    for s, hub in zip(snaps, (hub1, hub2)):
        assert {w["pid"] for w in s["workers"]} == child_pids(hub)
    # the table names each host before its rows
    r = cli(keys, "ls", "--host", h1.spec, "--host", h2.spec)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"== {h1.spec} ==" and f"== {h2.spec} ==" in lines
    # restart one worker of the second host: that pid alone changes
    before1, before2 = child_pids(hub1), child_pids(hub2)
    web1 = next(w for w in snaps[1]["workers"] if w["id"] == 1)
    r = cli(keys, "restart", "web:1", "--host", h2.spec)
    assert r.returncode == 0 and r.stdout == f"{h2.spec}: restarting web:1\n", (r.stdout, r.stderr)
    wait_until(lambda: web1["pid"] not in child_pids(hub2) and len(child_pids(hub2)) == 2, 10,
               what="web:1 restarted on the second host")
    assert child_pids(hub2) - {web1["pid"]} >= before2 - {web1["pid"]}
    assert child_pids(hub1) == before1


def test_unreachable_host_and_bad_targets(procs, keys, fleet, logdir):
    h1 = fleet()
    sleepers(procs, h1, logdir, n=1)
    dead = free_port()
    r = cli(keys, "ls", "--host", f"127.0.0.1:{dead}", "--host", h1.spec)
    # a read-only command goes on to the next host, and fails at the end
    assert r.returncode == 1
    assert (f"drover: 127.0.0.1:{dead}: unreachable: ssh: connect to host 127.0.0.1 port {dead}: "
            "Connection refused") in r.stderr, r.stderr
    assert f"== {h1.spec} ==" in r.stdout
    # the remote side's own answer is named by host: no hub in that namespace there
    r = cli(keys, "ls", "-L", "nobody", "--host", h1.spec)
    assert r.returncode == 1 and r.stderr.startswith(f"drover: {h1.spec}: no hub is running"), r.stderr
    # the protocol version is checked per host, with the hub's own message
    fake = "echo '{\"type\":\"error\",\"error\":\"protocol version 2 is not supported: this hub speaks version 3\"}' #"
    r = cli(keys, "ls", "--host", h1.spec, "--remote-cmd", fake)
    assert r.returncode == 1
    assert r.stderr == f"drover: {h1.spec}: protocol version 2 is not supported: this hub speaks version 3\n"
    # a target ssh could read as an option is refused before anything runs
    for bad in ("-oProxyCommand=x", "a@-b", "h:0", "h:99999", "us er@h", "[::1"):
        r = cli(keys, "ls", "--host", bad)
        assert r.returncode == 2 and "bad host" in r.stderr, (bad, r.stderr)


def test_fleet_reload_rolls_host_by_host_and_stops_at_the_first_abort(procs, keys, fleet, logdir):
    h1, h2 = fleet(), fleet()
    flag = os.path.join(logdir, "h2-broken")
    hub1 = sleepers(procs, h1, logdir)
    hub2 = sleepers(procs, h2, logdir, flag=flag)
    before1, before2 = child_pids(hub1), child_pids(hub2)
    open(flag, "w").close()   # from now on, a new worker on the second host fails
    r = cli(keys, "reload", "web", "--host", h1.spec, "--host", h2.spec)
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = r.stdout.splitlines()
    assert f"{h1.spec}: reloading web" in out
    assert any(l.startswith(f"{h1.spec}: reload web: done, 2/2 replaced") for l in out), out
    assert any(l.startswith(f"{h2.spec}: reload web aborted") for l in out), out
    # the first host runs new workers; the second still serves on its old ones
    wait_until(lambda: len(child_pids(hub1)) == 2 and not (child_pids(hub1) & before1), 10,
               what="the first host's workers replaced")
    assert child_pids(hub2) == before2
    after1 = child_pids(hub1)
    # the other order: the abort on the first host listed leaves the next one untouched
    r = cli(keys, "reload", "web", "--host", h2.spec, "--host", h1.spec)
    assert r.returncode == 1
    assert f"drover: reload failed on {h2.spec}; not run on {h1.spec}" in r.stderr, r.stderr
    assert h1.spec not in r.stdout
    assert child_pids(hub1) == after1 and child_pids(hub2) == before2


# ---- monit --headless --host -------------------------------------------------------------

class Lines:
    """A process's NDJSON stdout, parsed by a thread into a queue."""

    def __init__(self, proc):
        self.q = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc):
        for raw in proc.stdout:
            self.q.put(json.loads(raw))

    def until(self, pred, timeout, what):
        """Reads lines until pred(line) holds; returns that line."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"timed out after {timeout}s waiting for {what}; last lines: {self.seen[-5:]}",
                            pytrace=False)
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if pred(line):
                return line


def test_headless_fleet_stream_merges_hosts_and_outlives_a_dead_one(procs, keys, fleet, logdir):
    h1, h2 = fleet(), fleet()
    hub1, hub2 = sleepers(procs, h1, logdir, n=2), sleepers(procs, h2, logdir, n=3)
    # the local hub: found by the console's own XDG_RUNTIME_DIR, as on the operator's machine
    xdg = os.path.join(os.path.dirname(h1.xdg), "local")
    local = types.SimpleNamespace(sockdir=os.path.join(xdg, "drover", "default"), port="local")
    os.makedirs(local.sockdir, mode=0o700)
    os.chmod(xdg, 0o700)
    hubl = sleepers(procs, local, logdir, n=1)
    env = fleet_env(keys)
    env["XDG_RUNTIME_DIR"] = xdg
    m = procs.spawn([DROVER, "monit", "--headless", "--host", h1.spec, "--host", h2.spec], env=env,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = Lines(m)
    hubs = {"local": hubl, h1.spec: hub1, h2.spec: hub2}

    # every host's interval, with its own hub's children (read from /proc here) as pids
    pending, agreed = {}, set()

    def interval(line):
        assert "host" in line, line
        host = line["host"]
        if line["type"] == "worker":
            pending.setdefault(host, set()).add(line["pid"])
        elif line["type"] == "hub":
            if pending.pop(host, set()) == child_pids(hubs[host]):
                agreed.add(host)
        return agreed == set(hubs)
    out.until(interval, 20, "an interval of each host with its hub's pids")

    # the second host goes down: named unreachable with ssh's reason, the others go on
    h2.stop_sshd()
    down = out.until(lambda l: l["type"] == "host" and l["host"] == h2.spec and l["state"] == "unreachable",
                     15, "the second host unreachable")
    assert down["error"].startswith("unreachable: "), down
    for host in ("local", h1.spec):
        n = [0]
        out.until(lambda l: l["host"] == host and l["type"] == "hub" and not n.__setitem__(0, n[0] + 1)
                  and n[0] >= 2, 10, f"{host} still streaming")
    # back when its sshd is: an "up" line, then its figures again
    h2.start_sshd()
    out.until(lambda l: l["type"] == "host" and l["host"] == h2.spec and l["state"] == "up", 20,
              "the second host back")
    out.until(lambda l: l["host"] == h2.spec and l["type"] == "hub", 10, "the second host's figures again")
    m.terminate()
    m.wait(timeout=10)
    assert b"127.0.0.1:%d: unreachable: " % h2.port in m.stderr.read()


def test_monit_host_options(keys):
    # several hosts make one console now: without a terminal it says so, as the console always does
    r = cli(keys, "monit", "--host", "h1")
    assert r.returncode == 2 and "the console needs a terminal" in r.stderr
    r = cli(keys, "monit", "--no-local", "--host", "h1", "--host", "h2")
    assert r.returncode == 2 and "the console needs a terminal" in r.stderr
    r = cli(keys, "monit", "--headless", "--host", "h1", "--format", "prom")
    assert r.returncode == 2 and "NDJSON only" in r.stderr
    r = cli(keys, "monit", "--headless", "--no-local")
    assert r.returncode == 2
    with tempfile.NamedTemporaryFile("w", suffix=".hosts") as f:
        f.write("# the fleet\nweb1\n\n  deploy@web2:2222  \n-oProxyCommand=x\n")
        f.flush()
        r = cli(keys, "monit", "--headless", "--hosts-file", f.name)
        assert r.returncode == 2 and r.stderr.startswith(f"drover: {f.name}:5: bad host '-oProxyCommand=x'")


# ---- the console on a host --------------------------------------------------------------

ROW = re.compile(r"^[> ] +(\d+) +(\d+|-) +(starting|online|stopping|stopped|backoff|errored|gone)\b")


class TmuxConsole:
    """`drover monit …` in a pane of a private tmux server (as test_console.py drives it)."""

    def __init__(self, argv, env):
        self.base = [shutil.which("tmux") or "tmux", "-L", "drvf-" + uuid.uuid4().hex[:10], "-f", "/dev/null"]
        self.senv = dict(os.environ, LANG="C.UTF-8")
        self.senv.pop("TMUX", None)
        args = ["new-session", "-d", "-x", "120", "-y", "40", "-e", "LANG=C.UTF-8", "-e", "TERM=xterm-256color"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        cmd = " ".join(shlex.quote(a) for a in argv) + '; echo "[console exited rc=$?]"; sleep 60'
        subprocess.run(self.base + args + [cmd], env=self.senv, check=True, timeout=10)
        self.pane_pid = int(self._tmux("display-message", "-p", "#{pane_pid}").strip())

    def _tmux(self, *args):
        return subprocess.run(self.base + list(args), env=self.senv, capture_output=True, timeout=10,
                              check=True).stdout.decode("utf-8", "replace")

    def screen(self):
        return self._tmux("capture-pane", "-p")

    def keys(self, *k):
        self._tmux("send-keys", *k)

    def pids(self):
        """{id: pid} of the worker rows on screen."""
        out = {}
        for line in self.screen().splitlines():
            m = ROW.match(line)
            if m and m.group(2) != "-":
                out[int(m.group(1))] = int(m.group(2))
        return out

    def wait(self, pred, what, timeout=15):
        return wait_until(pred, timeout, interval=0.1, what=what, diag=lambda: "screen:\n" + self.screen())

    def kill(self):
        pids = [self.pane_pid] + descendants(self.pane_pid)
        subprocess.run(self.base + ["kill-server"], env=self.senv, capture_output=True, timeout=10)
        kill_survivors(pids, 3)


@pytest.fixture
def tmux_consoles():
    if not shutil.which("tmux"):
        pytest.fail("tmux is needed (tools/install-deps.sh installs it)", pytrace=False)
    made = []

    def make(argv, env):
        c = TmuxConsole(argv, env)
        made.append(c)
        return c
    yield make
    for c in made:
        c.kill()


def test_console_on_one_host_over_ssh(procs, keys, fleet, logdir, tmux_consoles):
    h1 = fleet()
    hub1 = sleepers(procs, h1, logdir, n=3)
    env = {k: v for k, v in fleet_env(keys).items() if k in ("DROVER_SSH", "DROVER_REMOTE")}
    con = tmux_consoles([DROVER, "monit", "--no-local", "--host", h1.spec], env)

    def by_id():
        r = subprocess.run([DROVER, "ls", "--json", "--socket-dir", h1.sockdir], capture_output=True, text=True,
                           timeout=10)
        return {w["id"]: w["pid"] for w in json.loads(r.stdout)["workers"]} if r.returncode == 0 else {}
    before = by_id()
    assert set(before.values()) == child_pids(hub1)
    con.wait(lambda: con.pids() == before, "the host's workers and pids on screen")
    assert h1.spec in con.screen()   # the title names the host
    # r acts on that host: the selected worker (web:0) gets a new pid there, the others keep theirs
    con.keys("r")
    wait_until(lambda: by_id().get(0) not in (None, before[0]) and len(child_pids(hub1)) == 3, 10,
               what="web:0 restarted on the host")
    after = by_id()
    assert after[1] == before[1] and after[2] == before[2]
    con.wait(lambda: con.pids() == after, "the new pid on screen")
    # the host goes away: said, with ssh's reason; back when sshd is
    h1.stop_sshd()
    con.wait(lambda: "unreachable" in con.screen(), "the host unreachable on screen")
    h1.start_sshd()
    r = cli(keys, "restart", "web:1", "--host", h1.spec)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: by_id().get(1) not in (None, after[1]) and len(child_pids(hub1)) == 3, 10,
               what="web:1 restarted")
    final = by_id()
    con.wait(lambda: con.pids() == final, "the console reconnected and showing web:1's new pid", timeout=25)
    # q leaves the remote hub running
    con.keys("q")
    con.wait(lambda: "[console exited rc=0]" in con.screen(), "the console quit")
    assert hub1.proc.poll() is None


# ---- the merged console: the local hub and a host ------------------------------------------

# a fleet console's worker row: the HOST column before ID
FROW = re.compile(r"^[> ] +(\S+) +(\d+) +(\d+|-) +(starting|online|stopping|stopped|backoff|errored|gone)\b")


def fleet_rows(con):
    """{(host, id): pid} of the worker rows on screen."""
    out = {}
    for line in con.screen().splitlines():
        m = FROW.match(line)
        if m and m.group(3) != "-":
            out[(m.group(1), int(m.group(2)))] = int(m.group(3))
    return out


def host_line(con, name):
    """The header line of host name (it starts with the name), or ""."""
    for line in con.screen().splitlines()[1:6]:
        if line.strip().startswith(name + " "):
            return line
    return ""


def ls_pids(sockdir):
    """{id: pid} from that hub's own `drover ls --json` (the independent instrument)."""
    r = subprocess.run([DROVER, "ls", "--json", "--socket-dir", sockdir], capture_output=True, text=True, timeout=10)
    return {w["id"]: w["pid"] for w in json.loads(r.stdout)["workers"]} if r.returncode == 0 else {}


def test_merged_console_local_and_remote_host(procs, keys, fleet, logdir, tmux_consoles):
    h1 = fleet()
    remote = sleepers(procs, h1, logdir, n=2, say="remote-web-says-hi")
    # the local hub: in the default socket dir of an $XDG_RUNTIME_DIR of its own (the remote one
    # is found the same way by its sshd's sessions, so no --socket-dir is shared by both)
    xdg = tempfile.mkdtemp(prefix="drv-lx-", dir="/tmp")
    os.chmod(xdg, 0o700)
    lsock = os.path.join(xdg, "drover", "default")
    os.makedirs(lsock, mode=0o700)
    try:
        ldir = os.path.join(logdir, "local")
        os.makedirs(ldir)
        local = RunHub(procs, lsock, run_argv(lsock, ldir, "-i", 2, "-n", "web", "--no-echo", "--",
                                              "sh", "-c", "echo local-web-says-hi; exec sleep 120"))
        online(local, 2, "web")
        env = {k: v for k, v in fleet_env(keys).items() if k in ("DROVER_SSH", "DROVER_REMOTE")}
        env["XDG_RUNTIME_DIR"] = xdg
        con = tmux_consoles([DROVER, "monit", "--host", h1.spec], env)

        def expected():
            return {**{("local", i): p for i, p in ls_pids(lsock).items()},
                    **{(h1.spec, i): p for i, p in ls_pids(h1.sockdir).items()}}
        want = expected()
        assert len(want) == 4 and set(ls_pids(h1.sockdir).values()) == child_pids(remote)
        con.wait(lambda: fleet_rows(con) == want, "both hosts' workers with their pids on screen")
        s = con.screen()
        assert "HOST" in s and "2 hosts" in s   # the host column; the title counts the hosts
        con.wait(lambda: "2/2 online" in host_line(con, "local") and "2/2 online" in host_line(con, h1.spec),
                 "a header line per host")
        assert "2/2 hosts up" in con.screen().splitlines()[0]
        # the app is one group across the hosts, with the fleet's totals
        assert any(line.lstrip().startswith("web ") and "4/4 online" in line for line in s.splitlines()), s

        # the filter matches the host: only the remote's rows; r restarts web:0 there, not here
        # (the local hub has a web:0 too)
        con.keys("/")
        con.keys("-l", h1.spec)
        con.keys("Enter")
        con.wait(lambda: set(fleet_rows(con)) == {(h1.spec, 0), (h1.spec, 1)}, "only the host's rows listed")
        con.keys("Up", "Up")   # the first row: web:0 of the host
        con.wait(lambda: any(line.startswith(f"> {h1.spec} ") and FROW.match(line).group(2) == "0"
                             for line in con.screen().splitlines()), "the host's web:0 selected")
        # the log pane asks that host's hub: its worker's line, not the local web:0's
        con.wait(lambda: f"logs web:0 on {h1.spec}" in con.screen() and "remote-web-says-hi" in con.screen(),
                 "the host's web:0 logs in the pane")
        assert "local-web-says-hi" not in con.screen()
        lbefore, rbefore = ls_pids(lsock), ls_pids(h1.sockdir)
        con.keys("r")
        con.wait(lambda: ls_pids(h1.sockdir).get(0) not in (None, rbefore[0]) and len(child_pids(remote)) == 2,
                 "web:0 restarted on the remote hub", timeout=10)
        rafter = ls_pids(h1.sockdir)
        assert rafter[1] == rbefore[1]
        assert ls_pids(lsock) == lbefore   # the local web:0 (same app:id) untouched
        con.wait(lambda: fleet_rows(con).get((h1.spec, 0)) == rafter[0], "the remote's new pid on screen")
        # R with the host's worker selected reloads the app there: both its pids change, none here
        con.keys("R")
        con.wait(lambda: not set(ls_pids(h1.sockdir).values()) & set(rafter.values())
                 and len(ls_pids(h1.sockdir)) == 2 and len(child_pids(remote)) == 2,
                 "web reloaded on the remote hub", timeout=15)
        assert ls_pids(lsock) == lbefore
        rafter = ls_pids(h1.sockdir)
        con.wait(lambda: {i: p for (h, i), p in fleet_rows(con).items() if h == h1.spec} == rafter,
                 "the reloaded pids on screen")

        # the host goes down: its line says so, the local rows stay and keep updating
        con.keys("/", "Escape")
        con.wait(lambda: len(fleet_rows(con)) == 4, "every row again")
        h1.stop_sshd()
        con.wait(lambda: "unreachable, retrying" in host_line(con, h1.spec), "the host unreachable on screen")
        assert "unreachable" not in host_line(con, "local") and "2/2 online" in host_line(con, "local")
        assert "1/2 hosts up" in con.screen().splitlines()[0]
        lnow = ls_pids(lsock)
        assert {i: p for (h, i), p in fleet_rows(con).items() if h == "local"} == lnow
        subprocess.run([DROVER, "restart", "web:1", "--socket-dir", lsock], check=True, capture_output=True,
                       timeout=10)
        wait_until(lambda: ls_pids(lsock).get(1) not in (None, lnow[1]), 10, what="local web:1 restarted")
        con.wait(lambda: fleet_rows(con).get(("local", 1)) == ls_pids(lsock)[1],
                 "the local hub still updating while the host is down")
        # back: the host's line and rows return (its client retried with backoff)
        h1.start_sshd()
        con.wait(lambda: "2/2 online" in host_line(con, h1.spec), "the host back on screen", timeout=30)
        con.wait(lambda: fleet_rows(con) == expected(), "both hosts' rows again")
        con.keys("q")
        con.wait(lambda: "[console exited rc=0]" in con.screen(), "the console quit")
        assert remote.proc.poll() is None and local.proc.poll() is None   # q leaves every hub running
    finally:
        shutil.rmtree(xdg, ignore_errors=True)
