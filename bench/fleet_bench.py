#!/usr/bin/env python3
"""
Many hosts over ssh (issue 12): what `--host` costs.

    fleet_bench.py BUILD_DIR

Stands up 3 "hosts" on this machine: each a real OpenSSH sshd on a loopback
port (its own host key; a client key made here) whose sessions get their own
XDG_RUNTIME_DIR, so `drover bridge` there finds that host's hub, a
`drover run -i 16` of examples/worker (agent reporting at 1 Hz). Then prints:

1. The merged headless stream, `drover monit --headless --no-local --host …`,
   with 1 and with 3 hosts, over FLEET_S (default 20) s: CPU of the monit
   process (its CPU clock, every thread: procstat.py) and of its ssh children,
   monit's RSS; and the bytes per second each host's bridge wrote into its ssh
   session (/proc/PID/io wchar of the remote `drover bridge`: counted where
   they are written, not estimated).
2. The console: from `r` on web:0 to its new pid shown online, locally and
   over ssh (`monit --no-local --host`), in tmux, median of 3.
3. Command latency, the CLI's wall time, median of 5: `drover ls` and
   `drover restart web:0` locally (--socket-dir) and over ssh (--host), and
   `drover reload` of a 2-worker app, median of 3.
4. The merged console (`monit --no-local --host A --host B …`, in tmux) with
   each count of hosts in FLEET_CONSOLE_HOSTS (default "1 4 16"; 1 is the
   one-host console, the reference) of 16 workers each: the console's CPU and
   its ssh children's over FLEET_S, its RSS; and with the most hosts, `r` on
   the selected worker to its new pid on screen (median of 3).
   FLEET_PART=console runs only this part.

Targets beside: monit ≤ 0.5 % of a core and ≤ 8 MB RSS at 3 hosts × 16
workers; the bytes per host ≤ 1.25 × the NDJSON the hub prints (the stream
message wraps it in JSON: quotes escaped); a command over ssh costs no more
than ssh itself (`ssh -T HOST true`, measured alongside) + 0.1 s — the rest is
ssh's handshake (ControlMaster in $DROVER_SSH shares one connection). Every process started is stopped by pid
at exit. Needs openssh-server. Standard library only.
"""
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstat  # noqa: E402  (beside this file)
from ports import free_port  # noqa: E402  (beside this file: below the ephemeral range)

B = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
DROVER = os.path.join(B, "drover")
WORKER = os.path.join(B, "examples", "worker")
SSHD = "/usr/sbin/sshd"
FLEET_S = int(os.environ.get("FLEET_S", "20"))
started = []


def kill_all():
    for p in reversed(started):
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=10)
            except Exception:
                p.kill()


def on_signal(signum, frame):
    kill_all()
    sys.exit(130)


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def children(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def wchar(pid):
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Host:
    def __init__(self, root, keys, name, workers):
        self.xdg = os.path.join(root, name)
        self.sockdir = os.path.join(self.xdg, "drover", "default")
        os.makedirs(self.sockdir, mode=0o700)
        os.chmod(self.xdg, 0o700)
        self.port = free_port()
        self.spec = f"127.0.0.1:{self.port}"
        cfg = os.path.join(root, f"{name}.sshd_config")
        with open(cfg, "w") as f:
            f.write(f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {keys}/host\n"
                    f"AuthorizedKeysFile {keys}/client.pub\nStrictModes no\nUsePAM no\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPidFile none\nLogLevel ERROR\n"
                    f"SetEnv XDG_RUNTIME_DIR={self.xdg}\n")
        self.sshd = subprocess.Popen([SSHD, "-D", "-e", "-f", cfg], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        started.append(self.sshd)
        logdir = os.path.join(root, name + "-logs")
        os.makedirs(logdir)
        self.hub = subprocess.Popen([DROVER, "run", "--headless", "--no-echo", "-i", str(workers), "-n", "web",
                                     "--socket-dir", self.sockdir, "--log-dir", logdir, "--", WORKER, "--rate", "20"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        started.append(self.hub)

    def online(self):
        r = subprocess.run([DROVER, "ls", "--json", "--socket-dir", self.sockdir], capture_output=True, text=True)
        if r.returncode:
            return 0
        return sum(1 for w in json.loads(r.stdout)["workers"] if w["state"] == "online")

    def bridges(self):
        return [p for p in children(self.sshd.pid) if comm(p) == "drover"]


def stream_row(hosts, env):
    argv = [DROVER, "monit", "--headless", "--no-local"]
    for h in hosts:
        argv += ["--host", h.spec]
    m = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    started.append(m)
    wait_for(lambda: all(h.bridges() for h in hosts), 20, "every host's bridge")
    time.sleep(2)   # past the connection's start: the steady state is measured
    bridges = [h.bridges()[0] for h in hosts]
    sshs = [p for p in children(m.pid) if comm(p) == "ssh"]
    c0, s0, w0, t0 = procstat.cpu_ns(m.pid), sum(procstat.cpu_ns(p) for p in sshs), \
        [wchar(b) for b in bridges], time.monotonic()
    time.sleep(FLEET_S)
    c1, s1, w1, t1 = procstat.cpu_ns(m.pid), sum(procstat.cpu_ns(p) for p in sshs), \
        [wchar(b) for b in bridges], time.monotonic()
    rss = procstat.status_kib(m.pid, "VmRSS")
    m.send_signal(signal.SIGTERM)
    m.wait(timeout=10)
    dt = t1 - t0
    bps = [(b - a) / dt for a, b in zip(w0, w1)]
    return (c1 - c0) / 1e9 / dt * 100, (s1 - s0) / 1e9 / dt * 100, rss / 1024, max(bps)


ROW = re.compile(r"^[> ] +(\d+) +(\d+|-) +(starting|online|stopping|stopped|backoff|errored|gone)\b")


class Tmux:
    """A console in a private tmux server, its screen read with capture-pane."""
    made = 0

    def __init__(self, argv, env):
        Tmux.made += 1   # a server of its own each time (a killed one may linger a moment)
        self.base = ["tmux", "-L", f"drvfb-{os.getpid()}-{Tmux.made}", "-f", "/dev/null"]
        args = ["new-session", "-d", "-x", "120", "-y", "40", "-e", "LANG=C.UTF-8", "-e", "TERM=xterm-256color"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        subprocess.run(self.base + args + [" ".join(shlex.quote(a) for a in argv)], check=True, timeout=10,
                       env=dict(os.environ, LANG="C.UTF-8"))

    def pid_of(self, wid):
        out = subprocess.run(self.base + ["capture-pane", "-p"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            m = ROW.match(line)
            if m and int(m.group(1)) == wid and m.group(3) == "online":
                return int(m.group(2))
        return None

    def kill(self):
        subprocess.run(self.base + ["kill-server"], capture_output=True, timeout=10)


def keypress_row(argv, env, runs=3):
    """Median seconds from `r` on web:0 to its new pid shown online, in a console started with argv."""
    t = Tmux(argv, env)
    try:
        out = []
        for _ in range(runs):
            old = wait_for(lambda: t.pid_of(0), 30, "web:0 on screen")
            t0 = time.monotonic()
            subprocess.run(t.base + ["send-keys", "r"], check=True, timeout=10)
            wait_for(lambda: t.pid_of(0) not in (None, old), 30, "web:0's new pid on screen")
            out.append(time.monotonic() - t0)
        return statistics.median(out)
    finally:
        t.kill()


FROW = re.compile(r"^([> ]) +(\S+) +(\d+) +(\d+|-) +(starting|online|stopping|stopped|backoff|errored|gone)\b")


def fleet_screen(t):
    """{(host, id): (pid, selected)} of the online rows of a fleet console in tmux t."""
    out = subprocess.run(t.base + ["capture-pane", "-p"], capture_output=True, text=True, timeout=10).stdout
    rows = {}
    for line in out.splitlines():
        m = FROW.match(line)
        if m and m.group(4) != "-" and m.group(5) == "online":
            rows[(m.group(2), int(m.group(3)))] = (int(m.group(4)), m.group(1) == ">")
    return rows


def console_rows(hosts, env, keypress):
    """The merged console over hosts: (console CPU %, ssh CPU %, RSS MB, keypress s or None)."""
    argv = [DROVER, "monit", "--no-local"]
    for h in hosts:
        argv += ["--host", h.spec]
    t = Tmux(argv, env)
    try:
        pane = int(subprocess.run(t.base + ["display-message", "-p", "#{pane_pid}"], capture_output=True,
                                  text=True, timeout=10).stdout.strip())
        want = 16 * len(hosts)
        wait_for(lambda: f"{want}/{want} online" in subprocess.run(
            t.base + ["capture-pane", "-p"], capture_output=True, text=True, timeout=10).stdout.splitlines()[0],
                 60, "every host's workers online in the title's totals")
        con = wait_for(lambda: [p for p in [pane] + children(pane) if comm(p) == "drover"], 10, "the console")[0]
        time.sleep(2)   # past the connections' start
        sshs = [p for p in children(con) if comm(p) == "ssh"]
        c0, s0, t0 = procstat.cpu_ns(con), sum(procstat.cpu_ns(p) for p in sshs), time.monotonic()
        time.sleep(FLEET_S)
        c1, s1, t1 = procstat.cpu_ns(con), sum(procstat.cpu_ns(p) for p in sshs), time.monotonic()
        rss = procstat.status_kib(con, "VmRSS") / 1024
        dt = t1 - t0
        key = None
        if keypress:
            out = []
            for _ in range(3):
                sel = wait_for(lambda: [k for k, v in fleet_screen(t).items() if v[1]], 30, "a selected row")[0]
                old = fleet_screen(t)[sel][0]
                t0 = time.monotonic()
                subprocess.run(t.base + ["send-keys", "r"], check=True, timeout=10)
                wait_for(lambda: fleet_screen(t).get(sel, (old,))[0] != old, 30, f"{sel}'s new pid on screen")
                out.append(time.monotonic() - t0)
            key = statistics.median(out)
        return (c1 - c0) / 1e9 / dt * 100, (s1 - s0) / 1e9 / dt * 100, rss, key
    finally:
        t.kill()


def console_part(root, keys, env, hosts):
    counts = [int(x) for x in os.environ.get("FLEET_CONSOLE_HOSTS", "1 4 16").split()]
    while len(hosts) < max(counts):
        hosts.append(Host(root, keys, f"h{len(hosts)}", 16))
    for h in hosts:
        wait_for(lambda: h.online() == 16, 60, f"16 workers on {h.spec}")
    tenv = {"DROVER_SSH": env["DROVER_SSH"], "DROVER_REMOTE": DROVER}
    print(f"\n### The merged console over ssh, 16 workers a host, 1 Hz, {FLEET_S} s\n")
    print("| hosts | console CPU % of a core | ssh children CPU % | console RSS MB | `r` to the new pid on screen, s"
          " (median of 3) | target |")
    print("|---|---|---|---|---|---|")
    for n in counts:
        cpu, sshcpu, rss, key = console_rows(hosts[:n], tenv, n == max(counts))
        print(f"| {n}{' (one-host console)' if n == 1 else ''} | {cpu:.3f} | {sshcpu:.3f} | {rss:.1f} | "
              f"{'-' if key is None else f'{key:.3f}'} | console ≤ 1 % of a core and ≤ 16 MB at 16 hosts; "
              f"`r` ≤ 1 interval + 0.5 s = 1.5 |")


def timed(argv, env):
    t = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    dt = time.monotonic() - t
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
    return dt


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not os.path.exists(SSHD):
        print("fleet_bench: /usr/sbin/sshd is missing (tools/install-deps.sh installs openssh-server)")
        return 1
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    root = tempfile.mkdtemp(prefix="drv-fb-", dir="/tmp")
    keys = os.path.join(root, "keys")
    os.makedirs(keys)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(keys, name)], check=True)
    env = dict(os.environ)
    env["DROVER_SSH"] = (f"ssh -F /dev/null -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no "
                         f"-o LogLevel=ERROR -i {keys}/client")
    env["DROVER_REMOTE"] = DROVER
    try:
        if os.environ.get("FLEET_PART") == "console":
            console_part(root, keys, env, [])
            return 0
        hosts = [Host(root, keys, f"h{i}", 16) for i in range(3)]
        for h in hosts:
            wait_for(lambda: h.online() == 16, 30, f"16 workers on {h.spec}")
        print(f"### Many hosts over ssh: the merged headless stream, 16 workers a host, 1 Hz, {FLEET_S} s\n")
        print("| hosts | monit CPU % of a core | ssh children CPU % | monit RSS MB | bytes/s per host (bridge wchar) |"
              " target |")
        print("|---|---|---|---|---|---|")
        # the reference for the bytes: what the hub itself prints per interval (NDJSON, 16 workers)
        r = subprocess.run([DROVER, "monit", "--headless", "--count", "4", "--socket-dir", hosts[0].sockdir],
                           capture_output=True, env=env, timeout=30)
        ndjson = len(r.stdout) / 4
        for n in (1, 3):
            cpu, sshcpu, rss, bps = stream_row(hosts[:n], env)
            print(f"| {n} | {cpu:.3f} | {sshcpu:.3f} | {rss:.1f} | {bps:.0f} (the hub's NDJSON: {ndjson:.0f} B a"
                  f" second) | monit ≤ 0.5 %, ≤ 8 MB at 3; ≤ 1.25 × the NDJSON |")
        print("\n### The console, keypress to the remote worker's restart being visible (16 workers, 1 Hz)\n")
        print("| console | `r` to web:0's new pid on screen, s (median of 3) | target |")
        print("|---|---|---|")
        tenv = {"DROVER_SSH": env["DROVER_SSH"], "DROVER_REMOTE": DROVER}
        lo = keypress_row([DROVER, "monit", "--socket-dir", hosts[0].sockdir], tenv)
        re_ = keypress_row([DROVER, "monit", "--no-local", "--host", hosts[0].spec], tenv)
        print(f"| local | {lo:.3f} | ≤ 1 interval + 0.5 s = 1.5 |")
        print(f"| over ssh | {re_:.3f} | ≤ local + 0.1 = {lo + 0.1:.3f} (the connection is open: no handshake) |")
        small = Host(root, keys, "small", 2)
        wait_for(lambda: small.online() == 2, 30, "2 workers")
        local = ["--socket-dir", small.sockdir]
        remote = ["--host", small.spec]
        print("\n### Command latency, local vs over ssh (loopback), wall time of the CLI\n")
        # the reference: ssh alone, the same options, running `true` there
        bare = statistics.median(timed([*env["DROVER_SSH"].split(), "-T", "-o", "BatchMode=yes", "-p",
                                        str(small.port), "127.0.0.1", "true"], env) for _ in range(5))
        print(f"(`ssh -T HOST true` alone, the same options: {bare:.3f} s, median of 5)\n")
        print("| command | local s | over ssh s | ssh adds s | target |")
        print("|---|---|---|---|---|")
        for name, argv, n in (("ls", ["ls", "--json"], 5), ("restart web:0", ["restart", "web:0"], 5),
                              ("reload web (2 workers)", ["reload", "web"], 3)):
            lo, re_ = [], []
            for _ in range(n):
                lo.append(timed([DROVER, *argv, *local], env))
                wait_for(lambda: small.online() == 2, 30, "2 workers again")
                re_.append(timed([DROVER, *argv, *remote], env))
                wait_for(lambda: small.online() == 2, 30, "2 workers again")
            a, b = statistics.median(lo), statistics.median(re_)
            print(f"| {name} | {a:.3f} | {b:.3f} | {b - a:.3f} | ≤ ssh alone + 0.1 = {bare + 0.1:.3f} |")
        console_part(root, keys, env, hosts)
        return 0
    finally:
        kill_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
