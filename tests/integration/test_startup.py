"""`drover startup`: the systemd units of a config file, checked by systemd's own
`systemd-analyze verify` (offline: no systemd runs as PID 1 here), installed into a
directory of the test's own, and run for real: the service's ExecStart= under
systemd-socket-activate with the .socket unit's ListenStream= address, and under a
socket holder of the test's own that stays while the hub restarts (what systemd does
with a .socket unit), so a connection made while no hub runs is served by the next."""
import os
import shlex
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import DROVER, HTTPD, free_port, http_get, parse_response, tcp_sockets, wait_until

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/systemd-analyze"),
                                reason="needs systemd-analyze (Debian package systemd)")


def write_conf(tmp_path, port=None, extra="", ns="st"):
    """A config file: app web (2 httpd workers, on 127.0.0.1:port when port) and app bg (no socket)."""
    logs = tmp_path / "logs"
    text = f"[hub]\nnamespace = {ns}\nlog_dir = {logs}\ninterval = 200ms\n\n[app web]\ncommand = {HTTPD}\ninstances = 2\n"
    if port:
        text += f"listen = 127.0.0.1:{port}\n"
    text += "kill_timeout = 7s\n\n[app bg]\ncommand = /bin/sleep 1000\n" + extra
    p = tmp_path / "drover.conf"
    p.write_text(text)
    return p


def startup(*args, env=None):
    return subprocess.run([DROVER, "startup", *args], capture_output=True, text=True, timeout=20, env=env)


def verify(*paths, user=False, tmp=None):
    """systemd-analyze verify: exit 0 and not one warning on stderr."""
    argv = ["systemd-analyze"] + (["--user"] if user else []) + ["verify", "--man=no", *map(str, paths)]
    env = dict(os.environ)
    if user:   # a user manager needs a runtime directory, even offline
        env["XDG_RUNTIME_DIR"] = str(tmp)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0 and r.stderr.strip() == "", f"systemd-analyze verify: {r.returncode}\n{r.stderr}"


def keys(text, key):
    return [l.split("=", 1)[1] for l in text.splitlines() if l.startswith(key + "=")]


def test_units_printed_and_installed_pass_systemd_analyze_verify(tmp_path):
    port = free_port()
    conf = write_conf(tmp_path, port)
    r = startup("-f", str(conf))
    assert r.returncode == 0, r.stderr
    d = tmp_path / "units"
    i = startup("-f", str(conf), "--install", "--dir", str(d))
    assert i.returncode == 0, i.stderr
    svc, sock = d / "drover-st.service", d / "drover-st.socket"
    assert i.stdout.splitlines() == [f"wrote {svc}", f"wrote {sock}",
                                     "next: systemctl daemon-reload && systemctl enable --now drover-st.socket "
                                     "drover-st.service"]
    # what is printed is what is installed: the service, an empty line, the socket
    assert r.stdout == svc.read_text() + "\n" + sock.read_text()
    s = svc.read_text()
    assert keys(s, "ExecStart") == [f"{os.path.realpath(DROVER)} up --headless -f {conf} -L st"]
    for k, v in [("Type", "notify"), ("NotifyAccess", "main"), ("ExecReload", "/bin/kill -HUP $MAINPID"),
                 ("KillMode", "mixed"), ("TimeoutStopSec", "12"), ("WatchdogSec", "30"),
                 ("Restart", "on-failure"), ("WantedBy", "multi-user.target")]:
        assert keys(s, k) == [v], (k, s)
    k = sock.read_text()
    assert keys(k, "ListenStream") == [f"127.0.0.1:{port}"] and keys(k, "Service") == ["drover-st.service"]
    verify(svc, sock)
    # the same for systemctl --user
    u = tmp_path / "user"
    assert startup("-f", str(conf), "--user", "--install", "--dir", str(u)).returncode == 0
    assert keys((u / "drover-st.service").read_text(), "WantedBy") == ["default.target"]
    verify(u / "drover-st.service", u / "drover-st.socket", user=True, tmp=tmp_path)
    # without --dir: where systemd --user reads units, $XDG_CONFIG_HOME/systemd/user, else ~/.config/...
    env = {k: v for k, v in os.environ.items() if k != "XDG_CONFIG_HOME"}
    env["HOME"] = str(tmp_path / "home")
    r = startup("-f", str(conf), "--user", "--install", env=env)
    assert r.returncode == 0 and f"wrote {tmp_path}/home/.config/systemd/user/drover-st.service" in r.stdout, r
    assert r.stdout.splitlines()[-1] == ("next: systemctl --user daemon-reload && systemctl --user enable --now "
                                         "drover-st.socket drover-st.service")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    r = startup("-f", str(conf), "--user", "--install", env=env)
    assert r.returncode == 0 and os.path.exists(tmp_path / "xdg/systemd/user/drover-st.socket"), r


def test_a_binary_path_with_spaces_and_specials_is_quoted_as_systemd_reads_it(tmp_path):
    """verify checks that ExecStart='s executable exists: it only can when the quoting
    of ' ', '$' and '%' comes back to the real path."""
    odd = tmp_path / "my dir $HOME 100%"
    odd.mkdir()
    exe = odd / "drover"   # a copy: /proc/self/exe would resolve a symbolic link
    with open(os.path.realpath(DROVER), "rb") as src, open(exe, "wb") as dst:
        dst.write(src.read())
    os.chmod(exe, 0o755)
    conf = write_conf(tmp_path)
    d = tmp_path / "units"
    r = subprocess.run([str(exe), "startup", "-f", str(conf), "--install", "--dir", str(d)], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    s = (d / "drover-st.service").read_text()
    assert keys(s, "ExecStart")[0].startswith(f'"{tmp_path}/my dir $HOME 100%%/drover" up'), s
    verify(d / "drover-st.service")
    # a path systemd cannot take (a quote in the executable's name) is refused, nothing written
    bad = tmp_path / "it's"
    bad.mkdir()
    os.link(exe, bad / "drover")
    r = subprocess.run([str(bad / "drover"), "startup", "-f", str(conf), "--install", "--dir", str(tmp_path / "u2")],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "cannot be written in a unit" in r.stderr, r
    assert not (tmp_path / "u2").exists()


def test_install_is_idempotent_and_never_clobbers_without_force(tmp_path):
    conf = write_conf(tmp_path, free_port())
    d = tmp_path / "units"
    assert startup("-f", str(conf), "--install", "--dir", str(d)).returncode == 0
    svc, sock = d / "drover-st.service", d / "drover-st.socket"
    ino = (svc.stat().st_ino, sock.stat().st_ino)
    r = startup("-f", str(conf), "--install", "--dir", str(d))
    assert r.returncode == 0 and r.stdout.startswith(f"unchanged {svc}\nunchanged {sock}\n"), r
    assert (svc.stat().st_ino, sock.stat().st_ino) == ino          # not even rewritten

    # a different socket unit there: refused, and the (missing) service is not written either
    svc.unlink()
    sock.write_text("[Socket]\nListenStream=9\n")
    r = startup("-f", str(conf), "--install", "--dir", str(d))
    assert r.returncode == 1, r
    assert f"{sock} exists and is a different unit; nothing was written ('--force' replaces it)" in r.stderr
    assert not svc.exists() and sock.read_text() == "[Socket]\nListenStream=9\n"
    r = startup("-f", str(conf), "--install", "--dir", str(d), "--force")
    assert r.returncode == 0 and f"wrote {sock}" in r.stdout and f"wrote {svc}" in r.stdout, r
    assert "ListenStream=127.0.0.1:" in sock.read_text()

    # a link where the unit goes (a masked unit is one): refused; --force replaces the link, not its target
    target = tmp_path / "target"
    target.write_text("keep me\n")
    svc.unlink()
    os.symlink(target, svc)
    r = startup("-f", str(conf), "--install", "--dir", str(d))
    assert r.returncode == 1 and "is a symbolic link" in r.stderr, r
    assert startup("-f", str(conf), "--install", "--dir", str(d), "--force").returncode == 0
    assert not svc.is_symlink() and target.read_text() == "keep me\n"
    assert not [f for f in os.listdir(d) if f.startswith(".")]   # no temporary file left


def test_no_tcp_listen_no_socket_unit_and_clear_errors(tmp_path):
    conf = write_conf(tmp_path)            # no app listens
    r = startup("-f", str(conf))
    assert r.returncode == 0 and "[Socket]" not in r.stdout and "Requires=" not in r.stdout, r.stdout
    d = tmp_path / "units"
    i = startup("-f", str(conf), "--install", "--dir", str(d))
    assert i.returncode == 0 and sorted(os.listdir(d)) == ["drover-st.service"], i
    assert i.stdout.splitlines()[-1] == "next: systemctl daemon-reload && systemctl enable --now drover-st.service"
    verify(d / "drover-st.service")
    # a .socket unit from an earlier run, when no app listens on TCP any more: said, not removed
    (d / "drover-st.socket").write_text("[Socket]\nListenStream=9\n")
    i = startup("-f", str(conf), "--install", "--dir", str(d))
    assert i.returncode == 0 and f"note: {d}/drover-st.socket is from an earlier 'drover startup'" in i.stdout, i
    assert (d / "drover-st.socket").exists()
    # -L names the units and the hub's namespace; --socket-dir goes to the hub
    r = startup("-f", str(conf), "-L", "blue", "--socket-dir", "/run/my drover")
    assert keys(r.stdout, "ExecStart")[0].endswith(f'-f {conf} -L blue --socket-dir "/run/my drover"'), r.stdout

    # a missing file, a bad file, a socket the file cannot describe
    r = startup("-f", str(tmp_path / "nope.conf"))
    assert r.returncode == 1 and "nope.conf" in r.stderr and r.stdout == "", r
    r = subprocess.run([DROVER, "startup"], capture_output=True, text=True, timeout=20, cwd=tmp_path / "units")
    assert r.returncode == 1 and "drover.conf" in r.stderr, r
    (tmp_path / "bad.conf").write_text("[app a]\ncommand = /bin/true\ninstances = lots\n")
    r = startup("-f", str(tmp_path / "bad.conf"))
    assert r.returncode == 1 and "bad.conf:3:" in r.stderr, r
    (tmp_path / "fd.conf").write_text("[app a]\ncommand = /bin/true\nlisten = fd:web\n")
    r = startup("-f", str(tmp_path / "fd.conf"))
    assert r.returncode == 1 and "app a: listen = fd:web" in r.stderr, r
    # usage errors: exit 2 with the hint
    for args, msg in [(["--bogus"], "unknown option '--bogus' for startup"),
                      (["--force"], "--force goes with --install"),
                      (["--dir", "/tmp"], "--dir goes with --install"),
                      (["extra"], "unexpected argument 'extra'"),
                      (["-L", "a/b"], "invalid namespace name 'a/b'"),
                      (["--socket-dir", "rel"], "must be an absolute path"),
                      (["-f"], "option -f needs a value")]:
        r = startup(*args)
        assert r.returncode == 2 and msg in r.stderr and "Try 'drover startup --help'" in r.stderr, (args, r)
    h = startup("--help")
    assert h.returncode == 0 and "--install" in h.stdout and "--headless" not in h.stdout
    assert "startup [-f FILE]" in subprocess.run([DROVER, "--help"], capture_output=True, text=True).stdout


def generated(tmp_path, port, sockdir):
    """The units for a file whose app web listens on 127.0.0.1:port: (ExecStart argv, ListenStream values)."""
    conf = write_conf(tmp_path, port)
    r = startup("-f", str(conf), "--socket-dir", sockdir)
    assert r.returncode == 0, r.stderr
    return shlex.split(keys(r.stdout, "ExecStart")[0]), keys(r.stdout, "ListenStream")


def listeners(port):
    return [s for s in tcp_sockets() if s[0] == "LISTEN" and s[1] == port]


def test_service_takes_the_socket_units_socket_under_systemd_socket_activate(procs, sockdir, tmp_path):
    port = free_port()
    argv, streams = generated(tmp_path, port, sockdir)
    assert streams == [f"127.0.0.1:{port}"]
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    msgs = []

    def notified(line):
        try:
            while True:
                msgs.extend(notify.recv(4096).decode().splitlines())
        except BlockingIOError:
            pass
        return line in msgs

    err = tmp_path / "hub.err"
    p = procs.spawn(["systemd-socket-activate", "-l", streams[0], "-E", f"NOTIFY_SOCKET={tmp_path}/notify.sock",
                     *argv], stdout=subprocess.DEVNULL, stderr=open(err, "w"), start_new_session=True)
    wait_until(lambda: listeners(port), 5, what="systemd-socket-activate listening")
    # the first connection comes before the hub exists; the hub serves it on the inherited socket
    assert http_get(port, timeout=20)[0] == 200
    wait_until(lambda: notified("READY=1"), 20, what="READY=1", diag=lambda: err.read_text())
    # one listening socket on the port, systemd's: the hub bound none of its own, and says
    # that web (reuseport by default, for TCP) shares it
    assert len(listeners(port)) == 1
    assert (f"drover: web: 127.0.0.1:{port} is a socket systemd passed (LISTEN_FDS), which cannot be a "
            "reuseport group; every worker shares it") in err.read_text(), err.read_text()
    assert p.poll() is None
    os.kill(p.pid, signal.SIGHUP)          # ExecReload=: the file applied again, the socket kept
    wait_until(lambda: "drover: applied " in err.read_text(), 10, what="the file applied again")
    for _ in range(5):
        assert http_get(port, timeout=10)[0] == 200
    assert len(listeners(port)) == 1
    # drover upgrade: the inherited socket crosses the exec; then an apply still finds it
    up = subprocess.run([DROVER, "upgrade", "--socket-dir", sockdir], capture_output=True, text=True, timeout=40)
    assert up.returncode == 0, up.stdout + up.stderr
    assert http_get(port, timeout=10)[0] == 200
    assert len(listeners(port)) == 1
    os.kill(p.pid, signal.SIGHUP)
    wait_until(lambda: err.read_text().count("drover: applied ") >= 2, 10, what="the file applied after the upgrade")
    assert http_get(port, timeout=10)[0] == 200
    assert len(listeners(port)) == 1
    os.kill(p.pid, signal.SIGTERM)
    assert p.wait(timeout=20) == 0
    assert notified("STOPPING=1")
    notify.close()


def test_hub_restart_behind_a_held_socket_refuses_nothing(procs, sockdir, tmp_path):
    """What a .socket unit gives: systemd holds the listening socket while the service
    restarts. Here the test holds it, and starts each hub as systemd would (the socket
    as fd 3, LISTEN_FDS=1, LISTEN_PID its pid)."""
    port = free_port()
    argv, streams = generated(tmp_path, port, sockdir)
    host, _, p = streams[0].rpartition(":")
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    held.bind((host, int(p)))
    held.listen(128)
    fd = held.fileno()

    def start_hub():
        # bash: dash takes single-digit descriptors only
        return procs.spawn(["bash", "-c", f'exec 3<&{fd} {fd}<&-; LISTEN_FDS=1 LISTEN_PID=$$ exec "$@"', "bash",
                            *argv], pass_fds=(fd,), stdout=subprocess.DEVNULL,
                           stderr=open(tmp_path / "hub.err", "a"), start_new_session=True)

    hub = start_hub()
    # the port is held by the test: a hub that bound its own socket would fail, not serve
    assert http_get(port, timeout=20)[0] == 200

    # web removed by an apply, then added back: it gets the inherited socket again
    conf = tmp_path / "drover.conf"
    full = conf.read_text()
    err = tmp_path / "hub.err"

    def apply(text, n):
        conf.write_text(text)
        os.kill(hub.pid, signal.SIGHUP)
        wait_until(lambda: err.read_text().count("drover: applied ") >= n, 10, what=f"apply {n}",
                   diag=lambda: err.read_text())

    apply(full[:full.index("[app web]")] + full[full.index("[app bg]"):], 1)
    wait_until(lambda: "web: removed, every worker stopped" in err.read_text(), 15, what="web removed")
    apply(full, 2)
    assert "web: start: started: 2 workers" in err.read_text(), err.read_text()
    assert http_get(port, timeout=20)[0] == 200
    os.kill(hub.pid, signal.SIGTERM)
    assert hub.wait(timeout=20) == 0

    # no hub, no worker: the kernel queues the connection on the held socket
    result = {}

    def client():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as c:
                result["connected"] = time.monotonic()
                c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    data += b
                result["status"] = parse_response(data)[0]
        except OSError as e:
            result["error"] = repr(e)

    t = threading.Thread(target=client)
    t.start()
    wait_until(lambda: "connected" in result or "error" in result, 5, what="the client connected")
    assert "error" not in result, result
    started = time.monotonic()
    start_hub()
    t.join(timeout=30)
    assert result.get("status") == 200, result
    assert result["connected"] < started   # it was queued before the new hub existed
    held.close()
