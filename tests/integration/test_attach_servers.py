"""
`drover attach` speaking real servers' language (Debian's nginx, gunicorn, uWSGI):
the profile chosen by the master's name, a reload the master does itself on
one signal (MASTER) under wrk with 0 socket errors (wrk's own counts), graceful
stops with nginx's QUIT, gunicorn scaled by TTIN, and `attach 1` inside a PID
namespace. Children are counted by the test from /proc, never from drover.
"""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import (DROVER, INTERVAL_MS, WRAP, CtlSession, RunHub, alive, free_port, http_get, parse_wrk,
                      require_wrk, wait_until)

APP_PY = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\\n"]
'''


def children(pid):
    """The live children of pid, read from /proc (every thread's list)."""
    out = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out.update(int(c) for c in f.read().split())
        except OSError:
            pass
    return {c for c in out if alive(c)}


def need(name):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not path:
        pytest.fail(f"{name} is not installed (Debian: apt-get install {name}, or make deps)", pytrace=False)
    return path


def cli(sockdir, *args, timeout=30):
    return subprocess.run([DROVER, *args, "--socket-dir", sockdir], capture_output=True, text=True,
                          timeout=timeout)


def reload_under_wrk(sockdir, port, timeout_s="2s"):
    """`drover reload` one second into `wrk -t2 -c32 -d3s --timeout timeout_s`; returns (reload
    result, wrk output, requests, socket errors, non-2xx)."""
    wrk = require_wrk()
    w = subprocess.Popen([wrk, "-t2", "-c32", "-d3s", "--timeout", timeout_s, f"http://127.0.0.1:{port}/"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)   # load first: the reload happens under it
        r = cli(sockdir, "reload")
        out, _ = w.communicate(timeout=20)
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()
    return (r, out, *parse_wrk(out))


@pytest.fixture
def nginx(procs):
    """An nginx master (worker_processes 2, daemon off) on a free loopback port with its
    prefix, pid file and error log in a private directory: (master Popen, port, error log,
    config file)."""
    binary = need("nginx")
    d = tempfile.mkdtemp(prefix="drv-nginx-")
    port = free_port()
    conf = os.path.join(d, "nginx.conf")
    log = os.path.join(d, "error.log")
    with open(conf, "w") as f:
        # keepalive_timeout 0: see the README's nginx section (old workers close idle keep-alive
        # connections when they leave; a client reusing one at that instant sees a failed read)
        f.write(f"""worker_processes 2;
daemon off;
pid {d}/nginx.pid;
error_log {log} notice;
events {{ worker_connections 512; }}
http {{
  access_log off;
  keepalive_timeout 0;
  client_body_temp_path {d}/body;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }}
}}
""")
    m = procs.spawn([binary, "-p", d, "-c", conf, "-e", log], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    wait_until(lambda: len(children(m.pid)) == 2, what="nginx's 2 workers")
    yield m, port, log, conf
    if m.poll() is None:
        m.send_signal(signal.SIGQUIT)   # graceful
        try:
            m.wait(timeout=5)
        except subprocess.TimeoutExpired:
            m.kill()
    shutil.rmtree(d, ignore_errors=True)


def gunicorn_argv(port, d, workers=2):
    return [need("gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}", "--chdir", d, "app:app"]


@pytest.fixture
def appdir():
    d = tempfile.mkdtemp(prefix="drv-gunicorn-")
    with open(os.path.join(d, "app.py"), "w") as f:
        f.write(APP_PY)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def attach_hub(procs, sockdir, pid, *opts):
    return RunHub(procs, sockdir, [DROVER, "attach", str(pid), "--headless", "--interval", str(INTERVAL_MS),
                                   "--socket-dir", sockdir, *opts])


def test_attach_nginx_reload_master_under_wrk_and_graceful_stop(procs, sockdir, nginx):
    master, port, log, _ = nginx
    h = attach_hub(procs, sockdir, master.pid)
    h.wait_stderr(r"attached to nginx \(pid \d+\): profile nginx: kill QUIT, reload MASTER HUP, scale -")
    h.wait_for(lambda iv: len(h.workers(iv, "nginx")) == 2, what="nginx's 2 workers")
    d = cli(sockdir, "describe", "nginx", "--json")
    assert d.returncode == 0, d.stderr
    assert '"profile":"nginx"' in d.stdout and '"reload":"MASTER"' in d.stdout

    old = children(master.pid)
    assert len(old) == 2
    r, out, total, errs, non2xx = reload_under_wrk(sockdir, port)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "done, the master" in r.stdout, r.stdout
    assert total > 0, out
    assert errs == 0 and non2xx == 0, out
    new = children(master.pid)
    assert len(new) == 2 and not (new & old), (old, new)   # both old workers replaced
    # drover's rows follow: the new pids, ids 0 and 1 again
    iv = h.wait_for(lambda iv: {w["pid"] for w in h.workers(iv, "nginx") if w["state"] != "gone"} == new,
                    what="the new workers as rows")
    assert sorted(w["id"] for w in h.workers(iv, "nginx") if w["state"] != "gone") == [0, 1], \
        [(w["id"], w["pid"], w["state"]) for w in h.workers(iv, "nginx")] + [h.stderr()]

    # stop: QUIT to each worker, which nginx takes as its graceful shutdown
    s = cli(sockdir, "stop", "nginx")
    assert s.returncode == 0, s.stderr
    assert "sent SIGQUIT to 2 workers of nginx" in s.stdout
    text = lambda: open(log).read()  # noqa: E731
    for pid in new:
        wait_until(lambda: re.search(rf"{pid}#\d+: gracefully shutting down", text()) and
                   re.search(rf"worker process {pid} exited with code 0", text()),
                   what=f"worker {pid} shutting down gracefully", diag=text)
    assert master.poll() is None   # the master lives on (and forks new workers)


def test_attach_nginx_reload_refused_by_the_master_is_aborted(procs, sockdir, nginx):
    master, port, log, conf = nginx
    h = attach_hub(procs, sockdir, master.pid, "--ready-timeout", "1500")
    h.wait_for(lambda iv: len(h.workers(iv, "nginx")) == 2, what="nginx's 2 workers")
    old = children(master.pid)
    with open(conf, "a") as f:
        f.write("this is not nginx;\n")   # the master refuses the new config, keeps its workers
    r = cli(sockdir, "reload")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "reload aborted: nginx" in r.stdout and "old workers still running" in r.stdout, r.stdout
    assert children(master.pid) == old   # still serving, untouched
    assert http_get(port)[0] == 200


def test_attach_gunicorn_scale_by_ttin_and_reload_master_under_wrk(procs, sockdir, appdir):
    port = free_port()
    master = procs.spawn(gunicorn_argv(port, appdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(children(master.pid)) == 2, what="gunicorn's 2 workers")
    h = attach_hub(procs, sockdir, master.pid)
    h.wait_stderr(r"profile gunicorn: kill TERM, reload MASTER HUP, scale TTIN/TTOU")
    h.wait_for(lambda iv: len(h.workers(iv, "gunicorn")) == 2, what="2 workers seen")

    s = cli(sockdir, "scale", "gunicorn", "4")
    assert s.returncode == 0, s.stderr
    assert "2 SIGTTIN to the master" in s.stdout, s.stdout
    wait_until(lambda: len(children(master.pid)) == 4, timeout=15, what="4 gunicorn workers in /proc")
    h.wait_stderr(r"scale gunicorn: done, 4 workers \(2 signals to the master\)", timeout=15)

    old = children(master.pid)
    r, out, total, errs, non2xx = reload_under_wrk(sockdir, port)
    assert r.returncode == 0, r.stdout + r.stderr
    assert total > 0, out
    assert errs == 0 and non2xx == 0, out
    # gunicorn's HUP rereads its settings: back to -w 2, all of them new
    new = wait_until(lambda: (lambda c: c if len(c) == 2 else None)(children(master.pid)),
                     what="gunicorn's 2 new workers")
    assert not (new & old), (old, new)

    # scale down by one: one TTOU
    s = cli(sockdir, "scale", "gunicorn", "1")
    assert s.returncode == 0, s.stderr
    wait_until(lambda: len(children(master.pid)) == 1, timeout=15, what="1 gunicorn worker in /proc")
    h.wait_stderr(r"scale gunicorn: done, 1 worker \(1 signal to the master\)", timeout=15)
    # TTIN to the hub: one worker more, through the master's TTIN
    os.kill(h.pid, signal.SIGTTIN)
    wait_until(lambda: len(children(master.pid)) == 2, timeout=15, what="2 gunicorn workers after TTIN to the hub")
    h.wait_stderr(r"scale gunicorn: done, 2 workers \(1 signal to the master\)", timeout=15)
    # the console's '-' key: scale with delta -1, the scale events pushed to a subscriber
    with CtlSession(sockdir) as c:
        assert c.ask({"cmd": "subscribe", "id": 1})["ok"]
        rep = c.ask({"cmd": "scale", "target": "gunicorn", "delta": -1, "id": 2})
        assert rep["ok"], rep
        ev = None
        while not (ev and ev.get("event") == "scale" and ev.get("phase") in ("done", "aborted")):
            ev = c.next()
        assert ev["phase"] == "done" and ev["app"] == "gunicorn", ev
    assert len(children(master.pid)) == 1


def test_attach_uwsgi_reload_master_under_wrk(procs, sockdir, appdir):
    port = free_port()
    # --add-header "Connection: close": uWSGI's plain --http-socket closes each connection after
    # its response without saying so, which wrk would count as a read error even without a reload
    master = procs.spawn([need("uwsgi"), "--master", "--processes", "2", "--http-socket", f"127.0.0.1:{port}",
                          "--add-header", "Connection: close", "--plugin", "python3",
                          "--wsgi-file", os.path.join(appdir, "app.py"), "--callable", "app",
                          "--die-on-term", "--disable-logging"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(children(master.pid)) == 2, what="uWSGI's 2 workers")
    h = attach_hub(procs, sockdir, master.pid)
    h.wait_stderr(r"attached to uwsgi \(pid \d+\): profile uwsgi: kill TERM, reload MASTER HUP, scale -")
    h.wait_for(lambda iv: len(h.workers(iv, "uwsgi")) == 2, what="2 workers seen")
    old = children(master.pid)
    # uWSGI's HUP stops accepting while its master re-executes and reloads Python (about a
    # second here, more on a busy machine): connections wait in the listen backlog, so wrk
    # is given 10 s before it counts one as a timeout
    r, out, total, errs, non2xx = reload_under_wrk(sockdir, port, timeout_s="10s")
    assert r.returncode == 0, r.stdout + r.stderr
    assert total > 0, out
    # uWSGI itself sometimes drops one connection in such a reload (README, uWSGI: about one
    # reload in six, with or without --lazy-apps or --thunder-lock); a wrong signal would cost
    # every connection in flight (TERM to the master) or fail the reload
    assert errs <= 2 and non2xx == 0, out
    new = wait_until(lambda: (lambda c: c if len(c) == 2 else None)(children(master.pid)),
                     what="uWSGI's 2 new workers")
    assert not (new & old), (old, new)
    master.send_signal(signal.SIGINT)   # uWSGI's quick stop (with --die-on-term, TERM would do too)


def test_attach_options_override_the_profile_and_scale_needs_signals(procs, sockdir, appdir):
    port = free_port()
    master = procs.spawn(gunicorn_argv(port, appdir, 1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(children(master.pid)) == 1, what="gunicorn's worker")
    h = attach_hub(procs, sockdir, master.pid, "--reload", "one", "--kill-signal", "INT")
    h.wait_stderr(r"profile gunicorn with options: kill INT, reload ONE INT, scale TTIN/TTOU")
    bad = subprocess.run([DROVER, "attach", str(master.pid), "--reload", "sideways", "--socket-dir", sockdir],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "--reload is ONE or MASTER, not 'sideways'" in bad.stderr
    bad = subprocess.run([DROVER, "attach", str(master.pid), "--scale-up", "NOPE", "--socket-dir", sockdir],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "--scale-up takes a signal name" in bad.stderr


def test_attach_default_profile_cannot_scale(procs, sockdir):
    master = procs.spawn(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    wait_until(lambda: len(children(master.pid)) == 2, what="the shell's 2 children")
    h = attach_hub(procs, sockdir, master.pid, "-n", "shell")
    h.wait_stderr(r"profile default: kill TERM, reload ONE TERM, scale -")
    h.wait_for(lambda iv: len(h.workers(iv, "shell")) == 2, what="2 workers seen")
    s = cli(sockdir, "scale", "shell", "3")
    assert s.returncode == 1
    assert "has no scale signals" in s.stderr, s.stderr
    assert len(children(master.pid)) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --pid and nsenter need root")
def test_attach_1_inside_a_pid_namespace(procs, sockdir, appdir):
    port = free_port()
    ns = procs.spawn(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", *gunicorn_argv(port, appdir)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    master = wait_until(lambda: next(iter(children(ns.pid)), None), what="the namespace's PID 1")
    with open(f"/proc/{master}/status") as f:
        assert re.search(r"^NSpid:\s+\d+\s+1$", f.read(), re.M)   # PID 1 in its namespace
    kids = wait_until(lambda: (lambda c: c if len(c) == 2 else None)(children(master)), what="2 workers")
    inner = set()
    for k in kids:
        with open(f"/proc/{k}/status") as f:
            inner.add(int(re.search(r"^NSpid:.*\s(\d+)$", f.read(), re.M).group(1)))
    # the hub runs inside the same PID (and /proc) namespace
    argv = ["nsenter", "--target", str(master), "--pid", "--mount",
            *WRAP, DROVER, "attach", "1", "--headless", "--interval", str(INTERVAL_MS), "--socket-dir", sockdir]
    h = RunHub(procs, sockdir, argv)
    h.proc.wrapped = bool(WRAP)
    h.wait_stderr(r"attached to gunicorn \(pid 1\): profile gunicorn")
    h.wait_for(lambda iv: {w["pid"] for w in h.workers(iv, "gunicorn")} == inner,
               what=f"the children of PID 1 {sorted(inner)} as workers")
    s = cli(sockdir, "stop")
    assert s.returncode == 0, s.stderr
    assert h.proc.wait(timeout=30 if WRAP else 10) == 0
    assert alive(master)   # stopping an attach hub leaves the master running
    os.kill(master, signal.SIGTERM)   # gunicorn's graceful stop ends the namespace, and unshare
    ns.wait(timeout=10)
