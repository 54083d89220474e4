"""
`drover up`: many apps from a config file on one hub, and the file applied
to the running hub (issue 10), with real processes: a live apply under wrk
loses no request, a bad file changes nothing, readiness is learned, user
drops privileges, an env_file change alone reloads, SIGHUP rereads.
"""
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time

import pytest

from conftest import (DROVER, HTTPD, INTERVAL_MS, RunHub, free_port, http_get, parse_wrk,
                      require_wrk, tcp_sockets, wait_until)


def write(path, text):
    with open(path, "w") as f:
        f.write(textwrap.dedent(text).lstrip())


def up_argv(sockdir, conf, logdir, *extra):
    return [DROVER, "up", "--headless", "-f", conf, "--interval", str(INTERVAL_MS), "--socket-dir", sockdir,
            "--log-dir", logdir, *extra]


def drover(sockdir, *args, timeout=40):
    """Runs a drover subcommand against the test's hub; (rc, stdout, stderr)."""
    p = subprocess.run([DROVER, *args, "--socket-dir", sockdir], capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def rows(hub, iv, app):
    return [w for w in iv.workers if w["app"] == app]


def online_pids(hub, iv, app):
    return sorted(w["pid"] for w in rows(hub, iv, app) if w["state"] == "online")


def wait_online(hub, app, n, timeout=15):
    return hub.wait_for(lambda iv: len(online_pids(hub, iv, app)) == n and len(rows(hub, iv, app)) == n,
                        timeout=timeout, what=f"{n} online workers of {app}")


@pytest.fixture
def conf(tmp_path):
    return str(tmp_path / "drover.conf")


def two_apps(conf, port, greeting, extra=""):
    write(conf, textwrap.dedent(f"""
        ; two apps: an HTTP server (a reuseport socket per worker: TCP), and a plain sleep
        [app web]
        command = {HTTPD}
        instances = 2
        listen = 127.0.0.1:{port}
        env = GREETING={greeting}
        kill_timeout = 3s
        """) + extra)


def test_apply_under_wrk_replaces_removes_adds_without_a_dropped_request(procs, sockdir, logdir, conf):
    port = free_port()
    two_apps(conf, port, "first", "[app sleeper]\ncommand = sleep 1000\n")
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "web", 2)
    wait_online(hub, "sleeper", 1)
    old_web = online_pids(hub, iv, "web")
    status, _, body = http_get(port, "/greeting")
    assert status == 200 and body.strip() == "first", body

    wrk = require_wrk()
    w = subprocess.Popen([wrk, "-t2", "-c16", "-d4s", "--timeout", "2s", f"http://127.0.0.1:{port}/"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)
        two_apps(conf, port, "second", "[app extra]\ncommand = sleep 1001\ninstances = 2\n")
        rc, out, err = drover(sockdir, "up", "-f", conf)
        wout, _ = w.communicate(timeout=20)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    assert rc == 0, (out, err)
    assert "web: reload (env changed)" in out, out
    assert "extra: start" in out, out
    assert "sleeper: stop" in out, out
    assert "reload web: done, 2/2 replaced" in out, out
    assert "second" not in out + err, "an env value was printed"
    total, errs, non2xx = parse_wrk(wout)
    assert total > 100, wout
    assert errs == 0 and non2xx == 0, wout

    iv = hub.wait_for(lambda iv: len(online_pids(hub, iv, "web")) == 2 and not rows(hub, iv, "sleeper")
                      and len(online_pids(hub, iv, "extra")) == 2, timeout=15,
                      what="web replaced, sleeper gone, extra online")
    assert not set(online_pids(hub, iv, "web")) & set(old_web), "a web worker was not replaced"
    for _ in range(6):
        status, _, body = http_get(port, "/greeting")
        assert status == 200 and body.strip() == "second", body
    assert "second" not in hub.stderr(), "an env value was logged"


def test_bad_value_at_line_n_is_refused_and_changes_nothing(procs, sockdir, logdir, conf):
    write(conf, """
        [app a]
        command = sleep 1000
        instances = 2
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "a", 2)
    before = online_pids(hub, iv, "a")
    bad = conf + ".bad"
    write(bad, """
        [app a]
        command = sleep 1001
        instances = 3

        [app b]
        command = sleep 1000
        kill_timeout = soon
        """)
    rc, out, err = drover(sockdir, "up", "-f", bad)
    assert rc == 1, (out, err)
    assert f"{os.path.realpath(bad)}:7: kill_timeout" in err, err
    # and the hub itself refuses it the same way (a file changed behind the CLI's back)
    write(conf, open(bad).read())
    os.kill(hub.pid, signal.SIGHUP)
    hub.wait_stderr(r":7: kill_timeout takes a duration.*nothing was changed")
    iv = hub.intervals(3)[-1]
    assert online_pids(hub, iv, "a") == before
    assert not rows(hub, iv, "b")


def test_readiness_learned_aborts_a_reload_whose_replacement_never_signals(procs, sockdir, logdir, conf, tmp_path):
    # an HTTP server on the app's socket (fd 3) that answers its GEN; generation 1 says READY=1
    script = tmp_path / "gen.py"
    write(str(script), """
        import http.server, os, socket
        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = os.environ["GEN"].encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            def log_message(self, *a):
                pass
        srv = http.server.HTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
        srv.socket.close()
        srv.socket = socket.socket(fileno=3)
        if os.environ.get("GEN") == "1":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
        srv.serve_forever()
        """)
    port = free_port()
    app = f"""
        [app gen]
        command = /usr/bin/python3 {script}
        instances = 2
        listen = 127.0.0.1:{port}
        ready_timeout = 1500ms
        kill_timeout = 1s
        env = GEN={{}}
        """
    write(conf, app.format(1))
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "gen", 2)
    before = online_pids(hub, iv, "gen")
    status, _, body = http_get(port, "/")
    assert (status, body) == (200, "1"), (status, body)
    rc, out, err = drover(sockdir, "describe", "gen", "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["ready"] == "auto" and d["ready_learned"] is True, d
    rc, out, err = drover(sockdir, "ls", "--json")
    row = [a for a in json.loads(out)["apps"] if a["app"] == "gen"][0]
    assert row["ready_mode"] == "auto" and row["ready_learned"] is True, row

    write(conf, app.format(2))
    t0 = time.monotonic()
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 1, (out, err)
    assert "reload gen aborted" in out and "not ready within 1500 ms" in out, out
    assert "'drover reload gen' succeeds" in out, out
    assert time.monotonic() - t0 >= 1.4
    iv = hub.intervals(3)[-1]
    assert online_pids(hub, iv, "gen") == before, "the old workers must keep serving"
    # and they do serve: every answer is theirs (the replacement is gone)
    for _ in range(8):
        status, _, body = http_get(port, "/")
        assert (status, body) == (200, "1"), (status, body)


def test_silent_app_keeps_the_grace(procs, sockdir, logdir, conf):
    write(conf, """
        [app quiet]
        command = sleep 1000
        env = V=1
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    wait_online(hub, "quiet", 1)
    write(conf, """
        [app quiet]
        command = sleep 1000
        env = V=2
        """)
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 0, (out, err)
    assert "reload quiet: done, 1/1 replaced" in out
    rc, out, err = drover(sockdir, "describe", "quiet", "--json")
    assert json.loads(out)["ready_learned"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="user = needs a hub running as root")
def test_user_nobody_is_the_workers_real_uid(procs, sockdir, logdir, conf):
    nobody = pwd.getpwnam("nobody")
    write(conf, """
        [app low]
        command = sleep 1000
        user = nobody
        cwd = /
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "low", 1)
    pid = online_pids(hub, iv, "low")[0]
    with open(f"/proc/{pid}/status") as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    uids = st["Uid"].split()
    gids = st["Gid"].split()
    assert uids == [str(nobody.pw_uid)] * 4, uids
    assert gids[0] == str(nobody.pw_gid), gids
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    rc, out, err = drover(sockdir, "describe", "low")
    assert f"nobody (uid {nobody.pw_uid}" in out, out


def test_env_file_change_alone_reloads_and_values_stay_hidden(procs, sockdir, logdir, conf, tmp_path):
    envf = tmp_path / "app.env"
    write(str(envf), "SECRET_TOKEN=alpha-123\n")
    write(conf, """
        [app e]
        command = sleep 1000
        env_file = app.env
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "e", 1)
    pid = online_pids(hub, iv, "e")[0]
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert b"SECRET_TOKEN=alpha-123" in f.read().split(b"\0")
    rc, out, err = drover(sockdir, "describe", "e")
    assert rc == 0 and "SECRET_TOKEN" in out and "alpha-123" not in out, out
    rc, out, err = drover(sockdir, "describe", "e", "--env")
    assert "SECRET_TOKEN=alpha-123" in out, out

    rc, out, err = drover(sockdir, "up", "-f", conf)       # nothing changed
    assert rc == 0 and "e: unchanged" in out, out
    write(str(envf), "SECRET_TOKEN=beta-456\n")
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 0, (out, err)
    assert "e: reload (env_file changed)" in out, out
    iv = hub.wait_for(lambda iv: online_pids(hub, iv, "e") and online_pids(hub, iv, "e")[0] != pid,
                      timeout=10, what="e replaced")
    with open(f"/proc/{online_pids(hub, iv, 'e')[0]}/environ", "rb") as f:
        assert b"SECRET_TOKEN=beta-456" in f.read().split(b"\0")
    assert "alpha-123" not in hub.stderr() and "beta-456" not in hub.stderr()


def test_instances_alone_is_a_scale_and_sighup_rereads(procs, sockdir, logdir, conf):
    write(conf, """
        [app s]
        command = sleep 1000
        instances = 1
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "s", 1)
    first = online_pids(hub, iv, "s")
    write(conf, """
        [app s]
        command = sleep 1000
        instances = 3
        """)
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 0 and "s: scale (instances changed)" in out, out
    iv = wait_online(hub, "s", 3)
    assert set(first) <= set(online_pids(hub, iv, "s")), "a scale must not replace workers"
    write(conf, """
        [app s]
        command = sleep 1000
        instances = 2
        [app t]
        command = sleep 1002
        """)
    os.kill(hub.pid, signal.SIGHUP)
    hub.wait_stderr(r"applied .*: 1 started, 0 stopped, 0 reloading, 1 scaled")
    wait_online(hub, "s", 2)
    wait_online(hub, "t", 1)


def test_restart_policy_and_stop_signal(procs, sockdir, logdir, conf, tmp_path):
    marker = tmp_path / "got"
    write(conf, f"""
        [app once]
        command = /bin/sh -c "sleep 0.3; exit 0"
        restart = on-failure
        [app fails]
        command = /bin/sh -c "sleep 0.3; exit 3"
        restart = never
        [app trap]
        command = /bin/sh -c "trap 'echo int > {marker}; exit 0' INT; while :; do sleep 0.1; done"
        stop_signal = INT
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    hub.wait_stderr(r"once:0 \(pid \d+\) ended with exit 0 .*not restarted \(restart = on-failure\)")
    hub.wait_stderr(r"fails:0 \(pid \d+\) ended with exit 3 .*not restarted \(restart = never\)")
    wait_online(hub, "trap", 1)
    rc, out, err = drover(sockdir, "kill", "trap")
    assert rc == 0, err
    wait_until(lambda: marker.exists(), timeout=5, what="the trap app got SIGINT")
    rc, out, err = drover(sockdir, "describe", "trap", "--json")
    causes = [e.get("cause") for e in json.loads(out)["events"]]
    assert "manual" in causes, out
    rc, out, err = drover(sockdir, "describe", "fails")
    assert "last restarts:" in out and "exit " in out and "ended with exit 3" in out, out
    iv = hub.intervals(2)[-1]
    assert all(w["state"] == "stopped" for w in rows(hub, iv, "once") + rows(hub, iv, "fails")), iv.summary()


def test_up_usage_and_a_missing_file(tmp_path, sockdir):
    p = subprocess.run([DROVER, "up", "--bogus"], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2
    p = subprocess.run([DROVER, "up", "--socket-dir", sockdir], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 1 and "drover.conf" in p.stderr, p.stderr
    p = subprocess.run([DROVER, "up", "--keys"], capture_output=True, text=True)
    assert p.returncode == 0 and "ready_timeout" in p.stdout and "[app NAME]" in p.stdout


def test_example_config_checks_and_the_readme_lists_every_key():
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run([DROVER, "up", "--check", "-f", os.path.join(repo, "examples", "drover.conf")],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "2 apps: web consumer" in p.stdout, p.stderr
    keys = subprocess.run([DROVER, "up", "--keys"], capture_output=True, text=True).stdout
    names = [l.split()[0] for l in keys.splitlines() if l.startswith("  ")]
    readme = open(os.path.join(repo, "README.md")).read()
    for n in names:
        assert f"| `{n}` |" in readme, f"README's key table lacks {n}"


def read_lines(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")[:-1]


def test_json_logs_parse_with_jq(procs, sockdir, logdir, conf, tmp_path):
    script = tmp_path / "say.sh"
    write(str(script), r"""
        printf 'plain line\n'
        printf 'quote " and backslash \\ and tab\t end\n'
        printf 'bad utf8 \377 byte\n'
        printf 'to stderr\n' >&2
        exec sleep 1000
        """)
    write(conf, f"""
        [hub]
        log_format = json
        [app say]
        command = /bin/sh {script}
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "say", 1)
    pid = online_pids(hub, iv, "say")[0]
    out = os.path.join(logdir, "say-0.out.log")
    wait_until(lambda: os.path.exists(out) and len(read_lines(out)) >= 3, timeout=5, what="3 lines in the file")
    if not shutil.which("jq"):
        pytest.fail("jq is not installed (Debian: apt-get install jq, or make deps)", pytrace=False)
    with open(out, "rb") as f:
        jq = subprocess.run(["jq", "-c", "."], stdin=f, capture_output=True)
    assert jq.returncode == 0 and len(jq.stdout.splitlines()) == 3, jq.stderr
    objs = [json.loads(l) for l in read_lines(out)]
    assert [o["line"] for o in objs] == ["plain line", 'quote " and backslash \\ and tab\t end',
                                         "bad utf8 \ufffd byte"], objs
    for o in objs:
        assert set(o) == {"ts", "app", "id", "pid", "stream", "line"}
        assert o["app"] == "say" and o["id"] == 0 and o["pid"] == pid and o["stream"] == "out"
        assert o["ts"].endswith("Z") and "T" in o["ts"] and len(o["ts"]) == 24, o["ts"]
    err = os.path.join(logdir, "say-0.err.log")
    wait_until(lambda: os.path.exists(err) and read_lines(err), timeout=5, what="a line in the err file")
    assert json.loads(read_lines(err)[0])["stream"] == "err"


def test_timestamps_are_monotonic_per_file(procs, sockdir, logdir, conf):
    write(conf, """
        [hub]
        log_timestamps = true
        [app tick]
        command = /bin/sh -c "i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); done; exec sleep 1000"
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    wait_online(hub, "tick", 1)
    out = os.path.join(logdir, "tick-0.out.log")
    wait_until(lambda: os.path.exists(out) and len(read_lines(out)) >= 400, timeout=10, what="400 lines")
    lines = read_lines(out)
    stamps = [l.split(b" ", 1)[0].decode() for l in lines]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s) for s in stamps), stamps[:3]
    assert stamps == sorted(stamps), "timestamps went back"
    assert [l.split(b" ", 1)[1] for l in lines[:2]] == [b"line 0", b"line 1"]


def test_changed_listen_gets_a_new_socket_and_unchanged_keeps_it(procs, sockdir, logdir, conf):
    p1, p2 = free_port(), free_port()
    tmpl = "[app web]\ncommand = {httpd}\ninstances = 2\nlisten = 127.0.0.1:{port}\nenv = GREETING={g}\n"
    write(conf, tmpl.format(httpd=HTTPD, port=p1, g="a"))
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    wait_online(hub, "web", 2)
    write(conf, tmpl.format(httpd=HTTPD, port=p1, g="b"))      # env only: the same socket
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 0 and "web: reload (env changed)" in out, out
    assert http_get(p1, "/greeting")[2].strip() == "b"
    write(conf, tmpl.format(httpd=HTTPD, port=p2, g="b"))      # listen: a new socket
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 0 and "web: reload (listen changed)" in out, out
    assert http_get(p2, "/greeting")[2].strip() == "b"
    rc, out, err = drover(sockdir, "describe", "web", "--json")
    assert json.loads(out)["listen"] == f"127.0.0.1:{p2}"
    # the old port is closed once its workers are gone: the hub let go of it
    wait_until(lambda: not port_open(p1), timeout=10, what=f"port {p1} closed")


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_run_takes_the_same_settings_as_options(procs, sockdir, logdir, tmp_path):
    envf = tmp_path / "run.env"
    envf.write_text("FROM_FILE=1\n")
    argv = [DROVER, "run", "--headless", "--interval", str(INTERVAL_MS), "--socket-dir", sockdir, "--log-dir", logdir,
            "-n", "r", "--env", "FROM_LINE=2", "--env-file", str(envf), "--cwd", "/", "--restart", "never",
            "--stop-signal", "INT", "--ready", "none", "--log-format", "json", "--",
            "/bin/sh", "-c", "echo hello; exec sleep 1000"]
    hub = RunHub(procs, sockdir, argv)
    iv = wait_online(hub, "r", 1)
    pid = online_pids(hub, iv, "r")[0]
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = f.read().split(b"\0")
    assert b"FROM_FILE=1" in env and b"FROM_LINE=2" in env
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    rc, out, err = drover(sockdir, "describe", "r", "--json")
    d = json.loads(out)
    assert (d["restart"], d["stop_signal"], d["ready"], d["cwd"]) == ("never", "INT", "none", "/"), d
    out = os.path.join(logdir, "r-0.out.log")
    wait_until(lambda: os.path.exists(out) and read_lines(out), timeout=5, what="a line in r's file")
    o = json.loads(read_lines(out)[0])
    assert (o["line"], o["app"], o["pid"], o["stream"]) == ("hello", "r", pid, "out"), o

    # --log-timestamps, and --log-max-size/--log-keep: a 1 KiB file rotated, 2 old ones kept
    sd2, ld2 = tempfile.mkdtemp(prefix="drv-it-", dir="/tmp"), tempfile.mkdtemp(prefix="drv-logs-", dir="/tmp")
    try:
        os.chmod(sd2, 0o700)
        hub2 = RunHub(procs, sd2, [DROVER, "run", "--headless", "--interval", str(INTERVAL_MS), "--socket-dir", sd2,
                                   "--log-dir", ld2, "-n", "t", "--log-timestamps", "--log-max-size", "1K",
                                   "--log-keep", "2", "--", "/bin/sh", "-c",
                                   "i=0; while [ $i -lt 200 ]; do echo line $i; i=$((i+1)); done; exec sleep 1000"])
        wait_online(hub2, "t", 1)
        tf = os.path.join(ld2, "t-0.out.log")
        wait_until(lambda: os.path.exists(tf) and read_lines(tf)
                   and read_lines(tf)[-1].endswith(b" line 199"), timeout=10, what="line 199 in t's file")
        assert os.path.exists(tf + ".1") and os.path.exists(tf + ".2") and not os.path.exists(tf + ".3"), \
            sorted(os.listdir(ld2))
        for f in (tf, tf + ".1", tf + ".2"):
            assert os.path.getsize(f) <= 1024, (f, os.path.getsize(f))
            for line in read_lines(f):
                assert re.fullmatch(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z line \d+", line), line
    finally:
        shutil.rmtree(sd2, ignore_errors=True)
        shutil.rmtree(ld2, ignore_errors=True)
    p = subprocess.run([DROVER, "run", "--restart", "sometimes", "--", "true"], capture_output=True, text=True)
    assert p.returncode == 2 and "always, on-failure, never" in p.stderr
    p = subprocess.run([DROVER, "run", "--log-format", "xml", "--", "true"], capture_output=True, text=True)
    assert p.returncode == 2 and "--log-format: log_format is one of text, json" in p.stderr, p.stderr


def test_up_detached_then_apply_then_stop(sockdir, logdir, conf):
    write(conf, """
        [app bg]
        command = sleep 1000
        instances = 2
        """)
    p = subprocess.run([DROVER, "up", "-d", "-f", conf, "--socket-dir", sockdir, "--log-dir", logdir],
                       capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    hub_pid = None
    try:
        assert p.returncode == 0, p.stderr
        assert "1 apps from" in p.stdout and "run in the background" in p.stdout, p.stdout
        with open(os.path.join(sockdir, "hub.lock")) as f:
            hub_pid = int(f.read().strip())
        wait_until(lambda: sum(1 for w in json.loads(drover(sockdir, "ls", "--json")[1] or '{"workers":[]}')["workers"]
                               if w["state"] == "online") == 2, timeout=10, what="2 online")
        write(conf, """
            [app bg]
            command = sleep 1000
            instances = 1
            """)
        rc, out, err = drover(sockdir, "up", "-f", conf)
        assert rc == 0 and "bg: scale (instances changed)" in out, (out, err)
        rc, out, err = drover(sockdir, "stop")
        assert rc == 0, err
        wait_until(lambda: not os.path.exists(f"/proc/{hub_pid}") or
                   open(f"/proc/{hub_pid}/stat").read().split(") ")[1].startswith("Z"),
                   timeout=15, what="the background hub gone")
        hub_pid = None
    finally:
        if hub_pid:
            try:
                os.kill(hub_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_log_keys_per_app_and_changed_live(procs, sockdir, logdir, conf):
    text = """
        [hub]
        log_format = json
        [app j]
        command = /bin/sh -c "while :; do echo tick; sleep 0.1; done"
        [app t]
        command = /bin/sh -c "while :; do echo tock; sleep 0.1; done"
        log_format = text
        """
    write(conf, text)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "j", 1)
    jpid = online_pids(hub, iv, "j")[0]
    jf, tf = os.path.join(logdir, "j-0.out.log"), os.path.join(logdir, "t-0.out.log")
    wait_until(lambda: os.path.exists(jf) and os.path.exists(tf) and read_lines(jf) and read_lines(tf),
               timeout=5, what="lines in both files")
    assert json.loads(read_lines(jf)[0])["line"] == "tick"
    assert read_lines(tf)[0] == b"tock"
    # t switches to json, live: no worker replaced, the next lines are objects
    write(conf, text.replace("log_format = text", "log_format = json\n        log_timestamps = true"))
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 0 and "t: logs (log keys changed)" in out and "j: unchanged" in out, out
    n = len(read_lines(tf))
    wait_until(lambda: len(read_lines(tf)) > n + 2, timeout=5, what="new lines in t's file")
    assert json.loads(read_lines(tf)[-1])["line"] == "tock"
    iv = hub.intervals(2)[-1]
    assert online_pids(hub, iv, "j") == [jpid]


def test_pinned_readiness_waits_for_its_own_signal(procs, sockdir, logdir, conf, tmp_path):
    script = tmp_path / "notify.py"
    write(str(script), """
        import os, socket, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
        time.sleep(1000)
        """)
    write(conf, f"""
        [app n]
        command = /usr/bin/python3 {script}
        ready = notify
        [app a]
        command = /usr/bin/python3 {script}
        ready = agent
        ready_timeout = 1500ms
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    wait_online(hub, "n", 1)
    hub.wait_stderr(r"a:0 \(pid \d+\) is running but not ready after 1500 ms")
    iv = hub.intervals(2)[-1]
    assert [w["state"] for w in rows(hub, iv, "a")] == ["starting"], iv.summary()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_user_is_refused_clearly_when_the_hub_is_not_root(tmp_path):
    d = tempfile.mkdtemp(prefix="drv-nonroot-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        conf = os.path.join(d, "drover.conf")
        write(conf, """
            [app low]
            command = sleep 1000
            user = root
            """)
        os.chmod(conf, 0o644)
        nobody = pwd.getpwnam("nobody")
        p = subprocess.run(["setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                            DROVER, "up", "--check", "-f", conf], capture_output=True, text=True, timeout=10)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert f"{conf}:3: user: only a hub running as root can run workers as another user or group" in p.stderr, \
            p.stderr
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_an_app_that_could_not_start_is_started_by_the_next_apply(procs, sockdir, logdir, conf):
    stubborn = """
        [app keep]
        command = sleep 1000
        [app slow]
        command = /bin/sh -c "trap '' TERM; while :; do sleep 0.1; done"
        kill_timeout = 2s
        """
    write(conf, stubborn)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    wait_online(hub, "slow", 1)
    write(conf, "[app keep]\ncommand = sleep 1000\n")
    rc, out, err = drover(sockdir, "up", "-f", conf)          # slow: removed, 2 s to go
    assert rc == 0 and "slow: stop" in out, out
    write(conf, stubborn)
    rc, out, err = drover(sockdir, "up", "-f", conf)          # back while still stopping
    assert rc == 1 and "app slow is still stopping" in out, out
    hub.wait_stderr(r"slow: removed, every worker stopped")
    rc, out, err = drover(sockdir, "up", "-f", conf)          # the same file again: now it starts
    assert rc == 0 and "slow: start: started" in out, out
    wait_online(hub, "slow", 1)


def slot_socks(hub, iv, app):
    """{worker id: its fd 3 ("socket:[INODE]")} of app's online workers, read from /proc."""
    return {w["id"]: os.readlink(f"/proc/{w['pid']}/fd/3") for w in rows(hub, iv, app) if w["state"] == "online"}


def listeners(port):
    return sum(1 for st, lp, _, _ in tcp_sockets() if st == "LISTEN" and lp == port)


def test_upgrade_of_a_config_hub_keeps_every_app(procs, sockdir, logdir, conf):
    """`drover upgrade` of a hub started by `drover up -f`: every app keeps its workers
    (same pids) and its sockets — web's reuseport group (the same socket per slot, no
    other listener) and shared's one socket — then `apply` of a change still works and
    each slot's replacement gets the slot's socket from the group carried across."""
    port, port2 = free_port(), free_port()
    rest = (f"\n[app sleeper]\ncommand = /bin/sleep 1000\ninstances = 2\n"
            f"[app shared]\ncommand = {HTTPD}\ninstances = 2\nlisten = 127.0.0.1:{port2}\nbalance = shared\n")
    two_apps(conf, port, "one", extra=rest)
    h = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    wait_online(h, "web", 2)
    wait_online(h, "shared", 2)
    iv = wait_online(h, "sleeper", 2)
    web, sleeper = online_pids(h, iv, "web"), online_pids(h, iv, "sleeper")
    socks, socks2 = slot_socks(h, iv, "web"), slot_socks(h, iv, "shared")
    assert len(set(socks.values())) == 2 and len(set(socks2.values())) == 1
    rc, out, err = drover(sockdir, "upgrade")
    assert rc == 0, out + err
    iv = h.wait_for(lambda iv: "upgraded" in h.stderr(), timeout=10, what="the upgrade")
    wait_online(h, "shared", 2)
    iv = wait_online(h, "sleeper", 2)
    assert online_pids(h, iv, "web") == web and online_pids(h, iv, "sleeper") == sleeper
    assert slot_socks(h, iv, "web") == socks and slot_socks(h, iv, "shared") == socks2
    assert listeners(port) == 2 and listeners(port2) == 1
    assert http_get(port, "/greeting")[2].strip() == "one"
    two_apps(conf, port, "two", extra=rest)
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 0, out + err
    wait_until(lambda: http_get(port, "/greeting")[2].strip() == "two", timeout=15, what="the applied GREETING")
    h.drain()   # intervals printed before the reload ended
    iv = h.wait_for(lambda iv: len(online_pids(h, iv, "web")) == 2 and not set(online_pids(h, iv, "web")) & set(web),
                    timeout=15, what="web's workers replaced")
    assert not set(online_pids(h, iv, "web")) & set(web)
    assert slot_socks(h, iv, "web") == socks and listeners(port) == 2


def test_a_changed_hub_metrics_is_reported_for_the_next_start(procs, sockdir, logdir, conf):
    """[hub] metrics is bound when the hub starts: an apply that changes it says so
    (not silently ignored), and the endpoint stays where it was."""
    p1, p2 = free_port(), free_port()
    text = "[hub]\nmetrics = 127.0.0.1:{}\n[app m]\ncommand = sleep 1000\n"
    write(conf, text.format(p1))
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    wait_online(hub, "m", 1)
    wait_until(lambda: http_get(p1, "/healthz")[0] == 200, timeout=5, what="/healthz on the file's port")
    write(conf, text.format(p2))
    rc, out, err = drover(sockdir, "up", "-f", conf)
    assert rc == 0, (out, err)
    assert "[hub]: later (metrics changed): [hub] keys take effect when the hub is started again" in out, out
    assert "m: unchanged" in out, out
    assert http_get(p1, "/healthz")[0] == 200 and not port_open(p2)


def test_describe_keeps_the_last_restarts_apart_from_the_events(procs, sockdir, logdir, conf, tmp_path):
    """describe's restarts are a ring of their own: a worker that exits 3 by itself is a
    "crash" with status 3 even after a burst of other events pushed it out of the last 16
    events; a worker above max_memory is replaced with cause "max-memory"."""
    marker = tmp_path / "crashed"
    write(conf, f"""
        [app c]
        command = /bin/sh -c "if [ ! -e {marker} ]; then : > {marker}; exit 3; fi; exec sleep 1000"
        [app mem]
        command = /usr/bin/python3 -c "import time; b = b'x' * (100 << 20); time.sleep(1000)"
        max_memory = 20M
        kill_timeout = 1s
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    hub.wait_stderr(r"c:0 \(pid \d+\) ended with exit 3")
    wait_online(hub, "c", 1)
    # a burst of other events: 20 scales of one worker more, an event each (16 would do)
    for n in range(2, 22):
        rc, out, err = drover(sockdir, "scale", "c", str(n))
        assert rc == 0, err
    wait_online(hub, "c", 21)
    rc, out, err = drover(sockdir, "describe", "c", "--json")
    d = json.loads(out)
    assert len(d["events"]) == 16 and not any(e.get("cause") for e in d["events"]), d["events"]
    crash = [r for r in d["restarts"] if r["cause"] == "crash"]
    assert len(crash) == 1, d["restarts"]
    assert (crash[0]["status"], crash[0]["signal"], crash[0]["id"], crash[0]["reason"]) == (3, None, 0, "backoff"), crash
    rc, out, err = drover(sockdir, "describe", "c")
    restarts = out.split("last restarts:\n", 1)[1].split("last events:\n", 1)[0]
    assert re.search(r"crash +c:0 \(pid \d+\) ended with exit 3", restarts), out

    hub.wait_stderr(r"mem:0 \(pid \d+\) uses \d+ bytes, above --max-memory \d+: replacing it", timeout=15)
    rc, out, err = drover(sockdir, "describe", "mem", "--json")
    mm = [r for r in json.loads(out)["restarts"] if r["cause"] == "max-memory"]
    assert mm and mm[0]["id"] == 0 and mm[0]["pid"] and mm[0]["status"] is None, mm
    rc, out, err = drover(sockdir, "describe", "mem")
    assert re.search(r"max-memory +mem:0 \(pid \d+\) uses", out), out


def online_cpus():
    """The online CPUs, counted from /sys/devices/system/cpu/online ("0-3,6"): the
    kernel's own list, the count the hub takes from sysconf(_SC_NPROCESSORS_ONLN)."""
    with open("/sys/devices/system/cpu/online") as f:
        n = 0
        for part in f.read().strip().split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
    return n


def test_instances_max_starts_a_worker_per_online_cpu(procs, sockdir, logdir, conf):
    n = online_cpus()
    assert n == os.cpu_count()
    write(conf, """
        [app all]
        command = sleep 1000
        instances = max
        """)
    hub = RunHub(procs, sockdir, up_argv(sockdir, conf, logdir))
    iv = wait_online(hub, "all", n)
    assert sorted(w["id"] for w in rows(hub, iv, "all")) == list(range(n))
    rc, out, err = drover(sockdir, "describe", "all", "--json")
    assert json.loads(out)["instances"] == n, out
    iv = hub.intervals(2)[-1]
    assert len(rows(hub, iv, "all")) == n, "no worker more than the CPUs"
