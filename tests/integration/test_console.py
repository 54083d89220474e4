"""
The console (`drover monit`), driven for real in tmux: a private tmux server
per test (`tmux -L <unique> -f /dev/null`), a fixed window size, keys sent with
`send-keys`, the screen read with `capture-pane -p`. The hub is a real
`drover run --headless` with real workers; what the console claims is checked
against the hub itself through the control socket (`drover ls --json`).

Every wait polls until a predicate holds, bounded (10 s unless said); every
process is killed by pid at teardown (the `procs` fixture), and every tmux
server is killed.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from conftest import (DROVER, MASTER, CtlSession, WORKER, RunHub, alive, descendants, kill_survivors, require_binary,
                      run_argv, wait_until)

TMUX = shutil.which("tmux")
STATES = "starting|online|stopping|stopped|backoff|errored|gone"
# A worker row: selection marker, id, pid, state (columns of tui/columns.c).
ROW = re.compile(r"^[> ] +(\d+) +(\d+|-) +(" + STATES + r")\b")

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")


# ---- the hub, seen through its control socket ---------------------------------

def ctl(sockdir, req, timeout=5.0):
    """One request on ctl.sock (hello first); returns the reply object."""
    with CtlSession(sockdir, timeout) as c:
        return c.ask(dict(req, id=7))


def ls_json(sockdir):
    """The hub's workers as `drover ls --json` prints them."""
    out = subprocess.run([DROVER, "ls", "--json", "--socket-dir", sockdir], capture_output=True,
                         timeout=10, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr.decode()
    return json.loads(out.stdout)["workers"]


def drover_logs(sockdir, target, n=100):
    """What `drover logs TARGET -n N` prints."""
    out = subprocess.run([DROVER, "logs", target, "-n", str(n), "--socket-dir", sockdir],
                         capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    return out.stdout.decode("utf-8", "replace")


def pids_by_id(sockdir, app="web"):
    return {w["id"]: w["pid"] for w in ls_json(sockdir) if w["app"] == app}


@pytest.fixture
def hub(procs, sockdir, logdir):
    """Factory: hub(n, app="web", cmd=None) -> RunHub of `drover run --headless`, n online."""
    def start(n=3, app="web", cmd=None):
        require_binary(WORKER)
        cmd = cmd or [WORKER, "--rate", "50"]
        h = RunHub(procs, sockdir, run_argv(sockdir, logdir, "-i", n, "-n", app, "--", *cmd))
        wait_until(lambda: os.path.exists(os.path.join(sockdir, "ctl.sock")) and
                   sum(1 for w in safe_ls(sockdir) if w["app"] == app and w["state"] == "online") == n,
                   interval=0.1, what=f"{n} online workers", diag=h.stderr)
        return h
    return start


def hub_pid(sockdir):
    """The pid a hub gives in its hello, or None when none answers."""
    try:
        with CtlSession(sockdir, 3) as c:
            return c.hello.get("hub_pid")
    except (OSError, ValueError, AssertionError):
        return None


@pytest.fixture
def background_hubs(sockdir):
    """Hubs a console started in the background (not our children): killed by pid at teardown."""
    pids = []
    yield pids
    for p in pids:
        if alive(p):
            kids = descendants(p)
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
            kill_survivors([p] + kids, 5)


def safe_ls(sockdir):
    try:
        return ls_json(sockdir)
    except (AssertionError, ValueError, OSError, subprocess.TimeoutExpired):
        return []


# ---- tmux ------------------------------------------------------------------------

class Console:
    """A console in a pane of a private tmux server."""

    def __init__(self, argv, width=120, height=40, env=None):
        self.name = "drvt-" + uuid.uuid4().hex[:10]
        self.base = [TMUX, "-L", self.name, "-f", "/dev/null"]
        # tmux 3.3 sets the pane's TERM from its default-terminal (tmux-256color), whatever -e
        # says: a test that needs another TERM runs the console under `env TERM=...`
        penv = {"LANG": "C.UTF-8", "TERM": "xterm-256color"}
        penv.update(env or {})
        senv = dict(os.environ)
        senv["LANG"] = "C.UTF-8"       # the tmux server reads the pane as UTF-8
        senv.pop("TMUX", None)
        senv.pop("LC_ALL", None)
        self.senv = senv
        # The shell around the console reports how it ended, for diagnostics and the quit tests.
        cmd = " ".join(shlex_quote(a) for a in argv) + '; echo "[console exited rc=$?]"; sleep 60'
        args = ["new-session", "-d", "-x", str(width), "-y", str(height)]
        for k, v in penv.items():
            args += ["-e", f"{k}={v}"]
        # unset what the pane should not inherit from this process
        for k in ("LC_ALL", "NO_COLOR", "LC_CTYPE"):
            if k not in penv:
                args += ["-e", f"{k}="]
        subprocess.run(self.base + args + [cmd], env=senv, check=True, timeout=10)
        self.pane_pid = int(self.tmux("display-message", "-p", "#{pane_pid}").strip())

    def tmux(self, *args, check=True):
        r = subprocess.run(self.base + list(args), env=self.senv, capture_output=True, timeout=10)
        if check and r.returncode != 0:
            raise AssertionError(f"tmux {args}: {r.stderr.decode()}")
        return r.stdout.decode("utf-8", "replace")

    def raw_capture(self):
        r = subprocess.run(self.base + ["capture-pane", "-p"], env=self.senv, capture_output=True, timeout=10)
        return r.stdout

    def screen(self):
        return self.raw_capture().decode("utf-8", "replace")

    def keys(self, *keys):
        self.tmux("send-keys", *keys)

    def wait(self, pred, timeout=10.0, what="screen condition"):
        """Polls the screen until pred(screen) is truthy; returns its value."""
        last = [""]

        def probe():
            last[0] = self.screen()
            return pred(last[0])
        return wait_until(probe, timeout, interval=0.1, what=what, diag=lambda: "screen:\n" + last[0])

    def wait_text(self, text, timeout=10.0):
        """Waits for text on screen; returns the screen."""
        return self.wait(lambda s: text in s and s, timeout, f"{text!r} on screen")

    def rows(self, screen=None):
        """Worker rows on screen (the current one by default): [(id, pid or None, state)]."""
        return screen_rows(screen if screen is not None else self.screen())

    def console_pids(self):
        return descendants(self.pane_pid)

    def kill(self):
        pids = [self.pane_pid] + descendants(self.pane_pid)
        subprocess.run(self.base + ["kill-server"], env=self.senv, capture_output=True, timeout=10)
        kill_survivors(pids, 3)
        # kill-server leaves the socket file behind: remove ours (tmux -L NAME's path)
        tmpdir = self.senv.get("TMUX_TMPDIR") or "/tmp"
        try:
            os.unlink(os.path.join(tmpdir, f"tmux-{os.getuid()}", self.name))
        except OSError:
            pass


def screen_rows(screen):
    """Worker rows of a captured screen: [(id, pid or None, state)]."""
    out = []
    for line in screen.splitlines():
        m = ROW.match(line)
        if m:
            out.append((int(m.group(1)), None if m.group(2) == "-" else int(m.group(2)), m.group(3)))
    return out


def shlex_quote(s):
    import shlex
    return shlex.quote(str(s))


def console_argv(sockdir):
    return [DROVER, "monit", "--socket-dir", sockdir]


@pytest.fixture
def consoles():
    made = []

    def open_console(sockdir, width=120, height=40, env=None, argv=None):
        c = Console(argv or console_argv(sockdir), width, height, env)
        made.append(c)
        return c
    yield open_console
    for c in made:
        c.kill()


def rows_with_pids(pids):
    """Predicate: every pid of the dict {id: pid} shows on a row with its id."""
    def pred(screen):
        got = {i: p for i, p, _ in screen_rows(screen)}
        return all(got.get(i) == p for i, p in pids.items())
    return pred


# ---- tests -----------------------------------------------------------------------

def test_rows_show_live_pids_and_changing_values(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    first = con.wait(lambda s: rows_with_pids(pids)(s) and s, what="the three workers' pids")
    assert "3/3 online" in first
    # live: something in the worker rows (uptime, req/s, CPU...) changes between captures
    def row_lines(s):
        return [l for l in s.splitlines() if ROW.match(l)]
    before = row_lines(first)
    con.wait(lambda s: row_lines(s) and row_lines(s) != before, timeout=5, what="row values to change")
    # the detail pane describes the selected (first) worker with its sparklines
    s = con.screen()
    assert f"web:0  pid {pids[0]}" in s
    assert any(ch in s for ch in "▁▂▃▄▅▆▇█"), s


def test_restart_key_gives_the_worker_a_new_pid(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    con.keys("r")   # the first worker (web:0) is selected at start
    new = wait_until(lambda: (p := pids_by_id(sockdir).get(0)) not in (None, pids[0]) and p,
                     what="web:0 restarted (drover ls)")
    con.wait(rows_with_pids({0: new, 1: pids[1], 2: pids[2]}), what=f"web:0 with pid {new} on screen")
    assert "restart" in con.screen()


def test_reload_key_replaces_every_pid(hub, consoles, sockdir):
    hub(3)
    old = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(old), what="workers on screen")
    con.keys("R")

    def replaced():
        now = {w["id"]: w["pid"] for w in safe_ls(sockdir) if w["app"] == "web" and w["state"] == "online"}
        return len(now) == 3 and not (set(now.values()) & set(old.values())) and now
    new = wait_until(replaced, what="every worker replaced")
    con.wait(rows_with_pids(new), what="the new pids on screen")
    con.wait_text("reload web")   # progress/outcome events in the status line


def test_kill_key_asks_then_stops_the_worker(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    con.keys("j")                       # select web:1
    con.wait_text(f"web:1  pid {pids[1]}")
    con.keys("x")
    con.wait_text(f"kill web:1 (pid {pids[1]})? [y/n]")
    con.keys("n")                       # anything but y cancels
    con.wait_text("kill cancelled")
    assert pids_by_id(sockdir)[1] == pids[1]
    con.keys("F9")                      # F9 is bound to kill too
    con.wait_text("[y/n]")
    con.keys("y")
    wait_until(lambda: any(w["id"] == 1 and w["state"] == "stopped" for w in safe_ls(sockdir)),
               what="web:1 stopped (drover ls)")
    con.wait(lambda s: any(i == 1 and st == "stopped" for i, _, st in con.rows(s)), what="web:1 stopped on screen")
    assert not alive(pids[1])
    assert pids_by_id(sockdir)[0] == pids[0] and pids_by_id(sockdir)[2] == pids[2]


def test_scale_keys_add_and_remove_a_worker(hub, consoles, sockdir):
    hub(2)
    con = consoles(sockdir)
    con.wait(lambda s: len(con.rows(s)) == 2, what="two rows")
    con.keys("+")
    con.wait(lambda s: len([r for r in con.rows(s) if r[2] == "online"]) == 3, what="a third worker")
    con.keys("-")
    wait_until(lambda: len([w for w in safe_ls(sockdir) if w["state"] == "online"]) == 2, what="back to two")
    con.wait(lambda s: len([r for r in con.rows(s) if r[2] == "online"]) == 2, what="two online rows")


def test_filter_narrows_the_list(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    con.keys("/")
    con.wait_text("filter:")
    con.keys(*"web:2")
    con.wait(lambda s: [r[0] for r in con.rows(s)] == [2], what="only web:2 listed")
    con.keys("Enter")                   # the filter stays
    con.wait(lambda s: "Enter keeps it" not in s, what="the filter prompt closed")
    time.sleep(0.5)                     # and still holds a moment later
    assert [r[0] for r in con.rows()] == [2]
    assert "filter: web:2" in con.screen()
    # by pid
    con.keys("/", "C-u", *str(pids[1]), "Enter")
    con.wait(lambda s: [r[1] for r in con.rows(s)] == [pids[1]], what="only the pid's row")
    # Esc clears it
    con.keys("/")
    con.keys("Escape")
    con.wait(lambda s: len(con.rows(s)) == 3, what="every row again")


def screen_is_consistent(s, width, height, pids):
    """One coherent frame: header, one column-title row, rows, one logs title, footer; nothing left over."""
    lines = s.split("\n")
    if lines and lines[-1] == "":
        lines = lines[:-1]
    problems = []
    if len(lines) != height:
        problems.append(f"{len(lines)} lines, not {height}")
    if any(len(l) > width for l in lines):
        problems.append("a line wider than the window")
    if not lines or not lines[0].startswith(" drover"):
        problems.append("no header on the first line")
    if sum(1 for l in lines if "PID STATE" in l) != 1:
        problems.append("not exactly one column-title row")
    if sum(1 for l in lines if l.startswith(" drover")) != 1:
        problems.append("not exactly one header")
    if sum(1 for l in lines if re.match(r"^[ >] logs ", l)) != 1:
        problems.append("not exactly one logs title")
    if not lines[-1].startswith("? help"):
        problems.append("the footer is not on the last line")
    for pid in pids:
        if sum(l.count(str(pid)) for l in lines if ROW.match(l)) != 1:
            problems.append(f"pid {pid} not on exactly one row")
    return problems


def test_resize_redraws_without_garbage(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir, 120, 40)
    con.wait(rows_with_pids(pids), what="workers on screen")
    assert not screen_is_consistent(con.screen(), 120, 40, pids.values())
    assert "CPU" in [l for l in con.screen().splitlines() if "PID STATE" in l][0]   # the CPU bar column
    for w, h in ((80, 24), (160, 50), (100, 30), (120, 40)):
        con.tmux("resize-window", "-x", str(w), "-y", str(h))
        con.wait(lambda s: not screen_is_consistent(s, w, h, pids.values()), timeout=5,
                 what=f"a consistent {w}x{h} frame")
    con.tmux("resize-window", "-x", "80", "-y", "24")
    s = con.wait(lambda s: not screen_is_consistent(s, 80, 24, pids.values()) and s, timeout=5,
                 what="a consistent 80x24 frame")
    # narrow: the list drops the bar, the header keeps the totals
    title = [l for l in s.splitlines() if "PID STATE" in l][0]
    assert title.rstrip().endswith("LAG99ms") or "ERR" not in title, title
    assert "3/3 online" in s.splitlines()[0]


def test_log_pane_shows_lines_printed_before_the_console(hub, consoles, sockdir):
    script = f'echo "before-console out $DROVER_WORKER_ID"; echo "before-console err $DROVER_WORKER_ID" >&2; exec {WORKER} --rate 20'
    hub(2, cmd=["/bin/sh", "-c", script])
    # every line is in the hub's log rings before the console starts
    wait_until(lambda: all(f"before-console {k} {i}" in drover_logs(sockdir, "web")
                           for k in ("out", "err") for i in (0, 1)),
               what="the workers' first lines in `drover logs`", diag=lambda: drover_logs(sockdir, "web"))
    con = consoles(sockdir)
    con.wait_text("before-console out 0")
    s = con.wait_text("before-console err 0")
    assert "before-console out 1" not in s          # the selected worker's lines only
    con.keys("a")                                   # the whole app's
    s = con.wait(lambda s: "before-console out 1" in s and s, what="the app's lines")
    assert "[web:1!] before-console err 1" in s      # stderr marked even without colours
    assert "logs web (app)" in s
    con.keys("a")
    con.wait(lambda s: "logs web:0 (worker)" in s and "before-console out 1" not in s, what="back to web:0")


def test_log_scrollback_and_follow(hub, consoles, sockdir):
    script = f'i=0; while [ $i -lt 300 ]; do echo "line $i"; i=$((i+1)); done; exec {WORKER} --rate 20'
    hub(1, cmd=["/bin/sh", "-c", script])
    con = consoles(sockdir, 100, 30)
    con.wait_text("line 299")
    con.keys("PageUp")
    s = con.wait(lambda s: "paused" in s and "line 299" not in s and s, what="scrolled back")
    con.keys("Home")
    con.wait(lambda s: re.search(r" line 0$", s, re.M), what="the oldest line")
    con.keys("End")
    con.wait(lambda s: "line 299" in s and "following" in s, what="following again")
    con.keys("f")
    con.wait_text("paused")
    con.keys("f")
    con.wait_text("following")


def test_second_console_shows_the_same_workers(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    a = consoles(sockdir)
    b = consoles(sockdir, 100, 30)
    a.wait(rows_with_pids(pids), what="workers in the first console")
    b.wait(rows_with_pids(pids), what="workers in the second console")
    # an action in one shows in the other
    a.keys("r")
    new = wait_until(lambda: (p := pids_by_id(sockdir).get(0)) not in (None, pids[0]) and p, what="restart")
    b.wait(rows_with_pids({0: new}), what="the new pid in the second console")


def test_closing_the_pane_leaves_the_hub_running(hub, consoles, sockdir):
    h = hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    inside = con.console_pids()
    assert inside, "no console process under the pane"
    con.tmux("kill-session")                  # the terminal goes away: SIGHUP
    wait_until(lambda: not any(alive(p) for p in inside), timeout=5, what="the console to end")
    time.sleep(1.0)
    assert h.proc.poll() is None, "the hub ended with its console"
    assert pids_by_id(sockdir) == pids, "workers were restarted or stopped"
    assert all(alive(p) for p in pids.values())


def test_quit_key_leaves_an_attached_hub_running(hub, consoles, sockdir):
    h = hub(2)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    con.keys("q")
    con.wait_text("[console exited rc=0]", timeout=5)
    assert h.proc.poll() is None
    assert pids_by_id(sockdir) == pids


def test_ascii_mode_without_utf8_locale(hub, consoles, sockdir):
    hub(2)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir, env={"LANG": "C", "LC_ALL": "C", "TERM": "xterm-mono"})
    con.wait(rows_with_pids(pids), what="workers on screen")
    con.wait(lambda s: re.search(r"CPU +[_.=#-]+ ", s), what="some history in the CPU sparkline")
    raw = con.raw_capture()
    text = raw.decode("ascii")   # raises on any non-ASCII byte
    assert "drover - default" in text
    assert "+-50%" in text       # the worker's banner (latency 20ms±50%), transliterated
    assert re.search(r"CPU +[_.=#-]+ ", text), text
    con.keys("?")
    con.wait_text("keys")
    con.raw_capture().decode("ascii")


def test_help_lists_every_key(hub, consoles, sockdir):
    hub(1)
    con = consoles(sockdir, 130, 40)
    con.wait(lambda s: len(con.rows(s)) == 1, what="a row")
    con.keys("?")
    s = con.wait_text("this help")
    for k in ("Tab", "PgUp/PgDn", "Home/End", "x F9", "kill:", "restart:", "reload:", "+ -", "scale:",
              "(asks y/n)", "quit"):
        assert k in s, f"{k!r} missing from the help:\n{s}"
    con.keys("Escape")
    con.wait(lambda s: "this help" not in s, what="help closed")


def test_hub_going_away_shows_disconnected_and_a_new_hub_is_picked_up(hub, consoles, sockdir, procs):
    h = hub(2)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    os.kill(h.pid, signal.SIGTERM)
    h.proc.wait(timeout=10)
    con.wait_text("disconnected")
    h2 = hub(3, app="api")
    new = pids_by_id(sockdir, "api")
    con.wait(lambda s: rows_with_pids(new)(s) and "disconnected" not in s.splitlines()[0],
             timeout=10, what="the new hub's workers")
    assert "api" in con.screen()
    assert h2.proc.poll() is None


def test_console_refuses_a_non_terminal(hub, sockdir):
    hub(1)
    r = subprocess.run(console_argv(sockdir), stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    assert r.returncode != 0
    err = r.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "terminal" in err[0], err


def run_in_terminal(consoles, sockdir, logdir, background_hubs, n=2):
    """`drover run` in a terminal: a background hub and the console that asks on quit."""
    require_binary(WORKER)
    con = consoles(sockdir, argv=[DROVER, "run", "--socket-dir", sockdir, "--log-dir", logdir, "-i", str(n),
                                  "-n", "web", "--", WORKER, "--rate", "50"])
    pid = wait_until(lambda: hub_pid(sockdir), what="the background hub", diag=con.screen)
    background_hubs.append(pid)
    con.wait(lambda s: len([r for r in con.rows(s) if r[2] == "online"]) == n, what=f"{n} online rows")
    return con, pid


def test_run_in_a_terminal_asks_and_n_leaves_the_hub_running(consoles, sockdir, logdir, background_hubs):
    con, pid = run_in_terminal(consoles, sockdir, logdir, background_hubs)
    pids = pids_by_id(sockdir)
    con.keys("q")
    con.wait_text("Stop the workers and the hub?")
    con.wait_text("[y]es / [n]o, leave it running / [c]ancel")
    con.keys("c")                                    # cancel: still the console
    con.wait(lambda s: "Stop the workers" not in s, what="the prompt gone")
    con.keys("q")
    con.wait_text("[n]o, leave it running")
    con.keys("n")
    s = con.wait_text("[console exited rc=0]")
    flat = " ".join(s.split())
    assert "the hub keeps running in the background" in flat, s
    assert f"'drover monit --socket-dir {sockdir}' attaches again" in flat, s
    assert alive(pid) and pids_by_id(sockdir) == pids


def test_run_in_a_terminal_asks_and_y_stops_everything(consoles, sockdir, logdir, background_hubs):
    con, pid = run_in_terminal(consoles, sockdir, logdir, background_hubs)
    workers = list(pids_by_id(sockdir).values())
    con.keys("q")
    con.wait_text("[y]es")
    con.keys("y")
    con.wait_text("[console exited rc=0]")
    wait_until(lambda: not alive(pid), what="the hub to exit")
    wait_until(lambda: not any(alive(p) for p in workers), timeout=5, what="the workers to stop")


def test_monit_without_a_hub_stops_its_own_on_quit(consoles, sockdir, background_hubs):
    con = consoles(sockdir)
    pid = wait_until(lambda: hub_pid(sockdir), what="the monitor-only hub", diag=con.screen)
    background_hubs.append(pid)
    con.wait(lambda s: "connected" in s.splitlines()[0] and "(no workers)" in s, what="an empty console")
    con.keys("r")                                    # nothing selected: said, not sent
    con.wait_text("select a worker first")
    con.keys("q")
    con.wait_text("[console exited rc=0]")
    wait_until(lambda: not alive(pid), what="its own hub to exit")


# ---- the console, polished (issue 17) ---------------------------------------------

def x10_click(con, x, y, button=0):
    """A mouse press and release at (x, y), 0-based, as the terminal reports them to the
    console in the mode it asked for (xterm X10 encoding: ESC [ M, button, x, y, each + 32,
    coordinates 1-based)."""
    for b in (button, 3):   # 3: release
        con.tmux("send-keys", "-l", "\x1b[M" + chr(32 + b) + chr(33 + x) + chr(33 + y))


def row_line(screen, wid):
    """The screen line (0-based) of the worker row with id wid, or None."""
    for i, line in enumerate(screen.splitlines()):
        m = ROW.match(line)
        if m and int(m.group(1)) == wid:
            return i
    return None


def test_custom_metric_is_humanized(start_hub, start_py_sender, consoles, sockdir):
    h = start_hub()
    h.wait_socket()
    start_py_sender(h.sock, name="rep", metrics={"cache_bytes": 6266880, "hit_ratio": 0.899}, period=0.2)
    con = consoles(sockdir)
    s = con.wait(lambda s: "cache_bytes" in s and s, what="the custom metric in the detail pane")
    assert re.search(r"cache_bytes 6\.27?M\b", s), s
    assert "hit_ratio 0.899" in s, s
    assert "e+" not in s, s


def test_header_shows_the_host(hub, consoles, sockdir):
    hub(2)
    con = consoles(sockdir, 160, 40)
    head = con.wait(lambda s: "load" in s.splitlines()[0] and s.splitlines()[0], what="the host in the header")
    assert re.search(r"\bload \d+\.\d\d \d+\.\d\d \d+\.\d\d\b", head), head
    assert re.search(r"\bhost mem \d[\d.]*[KMGT]/\d[\d.]*[KMGT]\b", head), head
    assert re.search(r"\bhost cpu (\d[\d.]*%|-)", head), head
    # the hub sends it: the snapshot carries it (the console reads nothing itself)
    host = ctl(sockdir, {"cmd": "ls"})["host"]
    assert host["mem_total_bytes"] > host["mem_used_bytes"] > 0 and len(host["load"]) == 3


def test_sort_twice_on_the_same_column_reverses(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    con.keys("s")
    s = con.wait(lambda s: "sorted by PID, ascending" in s and s, what="sorted by PID")
    up = [p for _, p, _ in con.rows(s)]
    assert up == sorted(pids.values()), s
    assert "▲PID" in s, s
    con.keys("s")                                    # the same column again: reversed
    s = con.wait(lambda s: "sorted by PID, descending" in s and s, what="PID reversed")
    s = con.wait(lambda s: [p for _, p, _ in con.rows(s)] == sorted(pids.values(), reverse=True) and s,
                 what="pids in the other order")
    assert "▼PID" in s, s
    # a title that fills its width still shows the marker (UPTIME)
    con.keys("s")
    s = con.wait(lambda s: "sorted by UPTIME" in s and s, what="sorted by UPTIME")
    title = [l for l in s.splitlines() if "PID STATE" in l][0]
    assert re.search(r"[▲▼]UPTIME", title), title


def test_reload_done_is_never_ahead_of_the_list(hub, consoles, sockdir):
    hub(4, cmd=[WORKER, "--rate", "200"])
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    con.keys("R")
    screens = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        s = con.screen()
        screens.append(s)
        lines = s.splitlines()
        status = lines[-2] if len(lines) >= 2 else ""
        if "done" in status:
            if len(screens) > 3 and all(st == "online" for _, _, st in con.rows(s)):
                break
        time.sleep(0.03)
    done = [s for s in screens if "done" in s.splitlines()[-2]]
    assert done, "the reload never said done:\n" + screens[-1]
    for s in done:
        assert not any(st == "starting" for _, _, st in con.rows(s)), "status says done, a row starting:\n" + s


def test_80x24_footer_and_detail_end_on_whole_words(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir, 80, 24)
    s = con.wait(lambda s: rows_with_pids(pids)(s) and s, what="workers on screen")
    lines = s.splitlines()
    footer = lines[-1].rstrip()
    hints = ("help", "quit", "select", "kill", "restart", "reload", "scale", "filter", "sort", "app logs",
             "follow", "pane")
    assert len(footer) <= 80 and footer.endswith(hints), footer
    detail = next(l for l in lines if l.startswith(" web:0  pid")).rstrip()
    assert re.search(r"(ready|agent) (yes|no)$|restarts \d+$|up \S+$|last exit: (-|status \d+|signal \w+)$",
                     detail), detail
    # with the logs focused, the footer says what j/k do
    con.keys("Tab")
    con.wait(lambda s: "scroll logs" in s.splitlines()[-1], what="j/k scroll the logs, says the footer")


def test_click_selects_a_worker_and_sorts_by_a_title(hub, consoles, sockdir):
    hub(3)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    s = con.wait(lambda s: rows_with_pids(pids)(s) and s, what="workers on screen")
    assert f"web:0  pid {pids[0]}" in s
    # in tmux's own TERM ncurses asks for button reports in the X10 encoding, not SGR
    assert con.tmux("display-message", "-p", "#{mouse_standard_flag} #{mouse_sgr_flag}").split() == ["1", "0"]
    x10_click(con, 10, row_line(s, 1))
    con.wait_text(f"web:1  pid {pids[1]}")
    title_y = next(i for i, l in enumerate(s.splitlines()) if "PID STATE" in l)
    title_x = s.splitlines()[title_y].index("PID") + 1
    x10_click(con, title_x, title_y)
    con.wait_text("sorted by PID, ascending")
    x10_click(con, title_x, title_y)
    con.wait_text("sorted by PID, descending")


def sgr_mouse(con, x, y, button=0, release=True):
    """A mouse event at (x, y), 0-based, as a terminal sends it in the SGR mode (1006) that
    ncurses asks for with TERM=xterm-256color: ESC [ < button ; x ; y M for a press (1-based
    coordinates), m for the release; the wheel is button 64 (up) or 65 (down), a press alone."""
    seq = f"\x1b[<{button};{x + 1};{y + 1}M"
    if release:
        seq += f"\x1b[<{button};{x + 1};{y + 1}m"
    con.tmux("send-keys", "-l", seq)


def log_lines(screen):
    """The log pane's lines below its title (up to the status line), right blanks dropped."""
    lines = screen.splitlines()
    top = next(i for i, l in enumerate(lines) if re.match(r"^[ >] logs ", l))
    return [l.rstrip() for l in lines[top + 1:len(lines) - 2]]


def bytes_of(text):
    """A humanized byte count ("3.9M", "950K") back to bytes (tui/human.c, base 1024)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT])", text)
    assert m, text
    return float(m.group(1)) * 1024 ** ("KMGT".index(m.group(2)) + 1)


def test_mouse_in_sgr_mode_wheel_click_and_the_lag_sort_marker(hub, consoles, sockdir):
    """What a real terminal sends through tmux: the console asks for SGR mouse reports, the
    wheel moves the selection over the list (3 workers a notch) and scrolls the logs over
    them (3 lines a notch), a click selects a worker, a click on LAG99ms (a title as wide as
    its column) sorts by it with the marker shown; the detail's sparklines show their
    min-max, which brackets the worker's RSS read from /proc."""
    script = f'i=0; while [ $i -lt 60 ]; do echo "line $i"; i=$((i+1)); done; exec {WORKER} --rate 50'
    hub(5, cmd=["/bin/sh", "-c", script])
    pids = pids_by_id(sockdir)
    # tmux gives its panes TERM=tmux-256color (kmous=\E[M, no XM: ncurses asks for X10
    # reports, as test_click_selects_a_worker_and_sorts_by_a_title sends); xterm, GNOME
    # Terminal and the like run with xterm-256color, whose XM makes ncurses ask for SGR
    con = consoles(sockdir, 120, 40, argv=["env", "TERM=xterm-256color"] + console_argv(sockdir))
    s = con.wait(lambda s: rows_with_pids(pids)(s) and f"web:0  pid {pids[0]}" in s and "line 59" in s and s,
                 what="workers and web:0's logs on screen")
    # ncurses negotiated button reports (1000) in SGR encoding (1006): tmux encodes real clicks so
    assert con.tmux("display-message", "-p", "#{mouse_standard_flag} #{mouse_sgr_flag}").split() == ["1", "1"]

    # the wheel over the list: a notch down moves the selection 3 workers, a notch up back
    sgr_mouse(con, 10, row_line(s, 1), 65, release=False)
    con.wait(lambda s: f"web:3  pid {pids[3]}" in s and s.splitlines()[row_line(s, 3)].startswith(">"),
             what="web:3 selected by the wheel")
    sgr_mouse(con, 10, row_line(s, 1), 64, release=False)
    s = con.wait(lambda s: f"web:0  pid {pids[0]}" in s and "line 59" in s and "following" in s and s,
                 what="web:0 selected again, its logs followed")

    # the wheel over the logs: a notch up scrolls them 3 lines back, a notch down follows again
    before = log_lines(s)
    assert before[-1].endswith("line 59") or "worker" in before[-1], before
    log_y = next(i for i, l in enumerate(s.splitlines()) if re.match(r"^[ >] logs ", l)) + 2
    sgr_mouse(con, 20, log_y, 64, release=False)
    s = con.wait(lambda s: "paused, 3 lines up" in s and s, what="the logs scrolled 3 lines")
    assert log_lines(s)[-1] == before[-4], (before, log_lines(s))
    assert f"web:0  pid {pids[0]}" in s                 # the selection did not move
    sgr_mouse(con, 20, log_y, 65, release=False)
    s = con.wait(lambda s: "following" in s and s, what="the logs following again")
    assert log_lines(s)[-1] == before[-1]

    # a click (press and release) on the second worker selects it
    sgr_mouse(con, 10, row_line(s, 1))
    s = con.wait(lambda s: f"web:1  pid {pids[1]}" in s and s, what="web:1 selected by a click")
    assert s.splitlines()[row_line(s, 1)].startswith(">"), s

    # the sparklines' min-max beside each spark; MEM's brackets what /proc says of web:1
    m = re.search(r"MEM .*? (\d[\d.]*[KMGT])\s+(\d[\d.]*[KMGT])\u2013(\d[\d.]*[KMGT])", s)
    assert m, s
    with open(f"/proc/{pids[1]}/status") as f:
        rss = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))
    lo, hi = bytes_of(m.group(2)), bytes_of(m.group(3))
    assert lo <= bytes_of(m.group(1)) <= hi and lo * 0.8 <= rss <= hi * 1.25, (m.group(0), rss)
    assert re.search(r"CPU .*? \S+%\s+\S+\u2013\S+", s), s

    # a click on the LAG99ms title sorts by it, the marker beside a title that fills its width
    title_y = next(i for i, l in enumerate(s.splitlines()) if "PID STATE" in l)
    title_x = s.splitlines()[title_y].index("LAG99ms") + 3
    sgr_mouse(con, title_x, title_y)
    s = con.wait_text("sorted by LAG99ms, descending")
    title = s.splitlines()[title_y]
    assert "P99ms\u25bcLAG99ms" in title, title
    sgr_mouse(con, title_x, title_y)
    s = con.wait_text("sorted by LAG99ms, ascending")
    assert "P99ms\u25b2LAG99ms" in s.splitlines()[title_y], s

    # 50x12: the app's line and the logs title keep whole fields (none cut to a figure that reads as another)
    con.tmux("resize-window", "-x", "50", "-y", "12")
    app_field = re.compile(r"web|\d+/\d+ online|\S+ req/s|spread (-|inf|\d+\.\dx) \(\d+-\d+%\)|cpu \S+%|"
                           r"mem \d[\d.]*[KMGT]|p50 \S+ p99 \S+ ms|lag99 \S+ max \S+ ms")
    log_field = re.compile(r"logs web:1 \(worker\)|following|\(a: whole app, f: pause\)")

    def fields(line):
        return re.split(r" {2,}", line.strip())
    s = con.wait(lambda s: len(s.splitlines()) == 12 and re.search(r"^web +5/5 online", s, re.M) and s, timeout=5,
                 what="a 50x12 frame")
    lines = s.splitlines()
    assert all(len(l) <= 50 for l in lines), s
    app = next(l for l in lines if l.startswith("web "))
    assert all(app_field.fullmatch(f) for f in fields(app)), app
    logs = next(l for l in lines if re.match(r"^[ >] logs ", l))
    assert all(log_field.fullmatch(f) for f in fields(logs)), logs


def test_no_mouse_leaves_clicks_alone(hub, consoles, sockdir):
    hub(2)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir, argv=console_argv(sockdir) + ["--no-mouse"])
    s = con.wait(lambda s: rows_with_pids(pids)(s) and s, what="workers on screen")
    x10_click(con, 10, row_line(s, 1))
    time.sleep(1.0)
    assert f"web:0  pid {pids[0]}" in con.screen()
    r = subprocess.run([DROVER, "monit", "--help"], capture_output=True, text=True, timeout=10)
    assert "--no-mouse" in r.stdout


def test_search_in_the_log_pane_highlights_a_line(hub, consoles, sockdir):
    script = f'echo "alpha line"; echo "needle-17 here"; echo "omega line"; exec {WORKER} --rate 20'
    hub(1, cmd=["/bin/sh", "-c", script])
    con = consoles(sockdir)
    con.wait_text("needle-17 here")
    con.keys("Tab", "/")
    con.wait_text("search logs:")
    con.keys(*"needle")
    con.keys("Enter")
    con.wait_text("search 'needle': 1 matching")
    raw = con.tmux("capture-pane", "-p", "-e")
    line = next(l for l in raw.splitlines() if "here" in l and "needle" in l)
    # the match is drawn in reverse video (SGR 7), the line bold
    assert re.search(r"\x1b\[[0-9;]*\b7m(\x1b\[[0-9;]*m)*needle", line), repr(line)
    other = next(l for l in raw.splitlines() if "alpha line" in l)
    assert not re.search(r"\x1b\[[0-9;]*\b7m", other), repr(other)
    con.keys("n")
    con.wait_text("no older line matches 'needle'")


def test_quitting_an_attach_console_asks(procs, consoles, sockdir, background_hubs):
    master = procs.spawn([sys.executable, "-c", MASTER])
    con = consoles(sockdir, argv=[DROVER, "attach", str(master.pid), "--socket-dir", sockdir, "-n", "cluster"])
    pid = wait_until(lambda: hub_pid(sockdir), what="the background attach hub", diag=con.screen)
    background_hubs.append(pid)
    con.wait(lambda s: len([r for r in con.rows(s) if r[2] == "online"]) == 3, what="3 children")
    con.keys("q")
    con.wait_text("Stop the hub? (the master and its workers keep running)")
    con.keys("y")
    con.wait_text("[console exited rc=0]")
    wait_until(lambda: not alive(pid), what="the attach hub to exit")
    assert master.poll() is None, "the master was stopped"


def test_apps_from_a_file_grouped_with_totals_and_R_reloads_the_selected_app(procs, consoles, sockdir, logdir,
                                                                               tmp_path):
    conf = tmp_path / "drover.conf"
    conf.write_text("[app alpha]\ncommand = sleep 1000\n\n[app beta]\ncommand = sleep 1001\ninstances = 2\n")
    RunHub(procs, sockdir, [DROVER, "up", "--headless", "-f", str(conf), "--socket-dir", sockdir,
                            "--log-dir", logdir])

    def by_app():
        out = {}
        for w in safe_ls(sockdir):
            if w["state"] == "online":
                out.setdefault(w["app"], set()).add(w["pid"])
        return out
    before = wait_until(lambda: (a := by_app()) and len(a.get("alpha", ())) == 1 and len(a.get("beta", ())) == 2
                        and a, what="alpha 1 and beta 2 online")
    con = consoles(sockdir)
    s = con.wait(lambda s: "apps 2/2 online" in s and "3/3 online" in s and s, what="the header's apps and workers")
    # one group per app, each with its own totals
    assert re.search(r"alpha +1/1 online", s) and re.search(r"beta +2/2 online", s), s
    con.keys("R")   # the first worker (alpha:0) is selected: its app is reloaded, not beta
    after = wait_until(lambda: (a := by_app()) and len(a.get("alpha", ())) == 1 and a["alpha"] != before["alpha"]
                       and a, what="alpha replaced")
    assert after.get("beta") == before["beta"], "R reloaded another app than the selected one"
    con.wait_text("reload alpha")
    # i: the selected worker's app described, values of its environment never shown
    con.keys("i")
    s = con.wait(lambda s: "alpha (any key closes)" in s and "(the last, newest first)" in s and s, what="the describe overlay")
    assert "sleep 1000" in s and re.search(r"reload +reload alpha: done", s), s
    con.keys("x")   # any key closes it (and does nothing else)
    con.wait(lambda s: "any key closes" not in s, what="the overlay closed")
    assert by_app().get("alpha") == after["alpha"]


def test_console_reconnects_by_itself_across_an_upgrade(hub, consoles, sockdir):
    """`drover upgrade` closes every connection at the exec: the console shows the same
    workers again on its own, and its keys act on the upgraded hub."""
    h = hub(2)
    pids = pids_by_id(sockdir)
    con = consoles(sockdir)
    con.wait(rows_with_pids(pids), what="workers on screen")
    up = subprocess.run([DROVER, "upgrade", "--socket-dir", sockdir], capture_output=True, text=True, timeout=40)
    assert up.returncode == 0, up.stdout + up.stderr
    assert h.proc.poll() is None and pids_by_id(sockdir) == pids
    con.wait(lambda s: rows_with_pids(pids)(s) and "disconnected" not in s, timeout=10,
             what="the same workers, connected again")
    con.keys("+")
    wait_until(lambda: len(pids_by_id(sockdir)) == 3, timeout=10, what="a third worker from the + key")


def test_detail_pane_lists_the_worker_process_tree(hub, consoles, sockdir):
    """A worker that forks (a shell with two children): the detail pane lists its
    three processes, pids as /proc has them, the shell first."""
    hub(1, app="wrap", cmd=["sh", "-c", "sleep 120 & sleep 120 & wait"])
    pid = pids_by_id(sockdir, "wrap")[0]
    kids = wait_until(lambda: len(d := descendants(pid)) == 2 and d, what="the shell's two children")
    con = consoles(sockdir, width=160, height=40)
    s = con.wait(lambda s: "processes 3" in s and all(re.search(rf"\b{k}\b.*sleep", s) for k in kids) and s,
                 what="the tree in the detail pane")
    assert re.search(rf"\b{pid}\b.*\bsh\b", s), s


def test_a_process_drover_did_not_start_is_addressable_in_the_console(start_hub, start_worker, consoles, sockdir):
    """An agent reporting to a monitor-only hub without an id: its row and detail show
    `-` and its APP:pid:PID target (never nan or napp:-1), the log pane explains why it
    has no output and shows the agent's drover_log line, `r` says why it cannot, and
    `x` asks y/n, then stops it by pid."""
    h = start_hub()
    h.wait_socket()
    p = start_worker(h.sock, name="napp")
    h.wait_for(lambda iv: iv.worker(p.pid) is not None, what="the reporting worker")
    con = consoles(sockdir, width=160, height=40)
    target = f"napp:pid:{p.pid}"
    s = con.wait(lambda s: f"{target}  pid {p.pid}" in s and "does not capture its output" in s and
                 "[info] worker started" in s and s, what="the worker's detail and log pane")
    assert "nan" not in s and "napp:-1" not in s, s
    assert "restarts -" in s, s
    con.keys("r")
    con.wait_text("not supervised: drover cannot start it again")
    assert p.poll() is None
    con.keys("x")
    con.wait_text(f"kill {target} (pid {p.pid})? [y/n]")
    con.keys("n")
    con.wait_text("kill cancelled")
    assert p.poll() is None
    con.keys("x")
    con.wait_text("[y/n]")
    con.keys("y")
    assert p.wait(timeout=5) == 0, "the worker ends on the SIGTERM drover sent it"
    con.wait_text(f"sent SIGTERM to {target}")
    assert "bad target" not in con.screen()


# ---- a hub from before the lean subscription ------------------------------------

def test_console_subscribes_lean_and_falls_back_when_the_hub_refuses_it(consoles, sockdir):
    """The console asks for lean state (PROTOCOL.md §4.4). A hub from before "lean"
    refuses the argument (as any hub refuses one a command does not take): this stand-in
    hub on ctl.sock does, then answers a plain subscribe with one worker. The console
    must subscribe again without "lean" and show that worker, not "subscribe failed"."""
    import threading
    path = os.path.join(sockdir, "ctl.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(8)
    seen = []
    stop = threading.Event()
    worker = {"type": "worker", "app": "old", "id": 0, "pid": 4242, "state": "online", "key": 1, "owned": True,
              "cpu_pct": 1.5, "rss_bytes": 1 << 20}
    snap = {"workers": [worker], "apps": [{"type": "app", "app": "old", "workers": 1, "online": 1}],
            "hub": {"type": "hub", "workers": 1}, "host": {}}

    def serve(conn):
        f = conn.makefile("rwb")
        try:
            if not f.readline():
                return
            f.write(json.dumps({"type": "hello", "version": 2, "hub_pid": 1, "ns": "default",
                                "mode": "monit", "interval_ms": 200}).encode() + b"\n")
            f.flush()
            subscribed = False
            conn.settimeout(0.2)
            while not stop.is_set():
                try:
                    line = f.readline()
                except (socket.timeout, TimeoutError):
                    line = None
                if line == b"":
                    return
                if line:
                    req = json.loads(line)
                    if req["cmd"] == "subscribe":
                        seen.append(req)
                        if "lean" in req:
                            rep = {"type": "reply", "id": req.get("id"), "ok": False,
                                   "error": 'subscribe takes no "lean"'}
                        else:
                            rep = {"type": "reply", "id": req.get("id"), "ok": True, **snap}
                            subscribed = True
                    else:
                        rep = {"type": "reply", "id": req.get("id"), "ok": True, "lines": []}
                    f.write(json.dumps(rep).encode() + b"\n")
                    f.flush()
                elif subscribed:
                    f.write(json.dumps({"type": "state", **snap}).encode() + b"\n")
                    f.flush()
        except OSError:
            pass
        finally:
            conn.close()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        con = consoles(sockdir)
        s = con.wait(lambda s: rows_with_pids({0: 4242})(s) and s, what="the old hub's worker")
        assert "subscribe failed" not in s, s
        assert [r.get("lean") for r in seen[:2]] == [True, None], seen
    finally:
        stop.set()
        srv.close()
        t.join(timeout=5)
