"""
The report path end to end: agent (or any msgpack sender) → datagram → hub →
NDJSON / Prometheus text on stdout: the datagrams and sockets of
proto/PROTOCOL.md §1-3, the lines of README.md "Headless output"; issue 2.

Every interval here is 200 ms (workers report every 200 ms ± 10 %). Timing
assertions count printed intervals or use windows several times wider than
the nominal figure, so they hold on a loaded 2-core machine.
"""
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time

import msgpack
import pytest

from conftest import (DROVER, hub_asan, INTERVAL, INTERVAL_MS, WORKER, WRAP, Sender, check_line_keys,
                      require_binary, worker_env)


def packb(o):
    return msgpack.packb(o, use_bin_type=True)


# ---- 1. three example workers ------------------------------------------------

def test_three_workers_report_live(hub, start_worker):
    rate, latency = 100, 20
    procs = [start_worker(hub.sock, "shop", i, rate=rate, latency=latency) for i in range(3)]
    pids = [p.pid for p in procs]

    # The first reports may lack some figures (the agent sends one at once when
    # readiness changes, before any lag sample): wait until all are known.
    def all_reporting(iv):
        ws = [iv.worker(p) for p in pids]
        return all(w and w["ready"] is True and None not in (
            w["req_per_s"], w["cpu_pct"], w["lat_p50_ms"], w["lag_p99_ms"]) for w in ws)

    first = hub.wait_for(all_reporting, timeout=10, what="3 workers reporting with /proc figures")
    ivs = [first] + hub.intervals(12)          # ~2.5 s of intervals
    check_line_keys(hub.history)

    for iv in ivs:
        ws = {w["pid"]: w for w in iv.workers}
        assert set(ws) == set(pids), f"expected exactly the 3 workers: {iv.summary()}"
        assert len({l["ts"] for l in iv.lines}) == 1, "one ts per interval"
        for i, pid in enumerate(pids):
            w = ws[pid]
            assert w["app"] == "shop" and w["id"] == i, w
            assert w["state"] == "online" and w["agent"] is True and w["ready"] is True, w
            assert w["cpu_pct"] is not None and w["cpu_pct"] >= 0, w
            assert w["rss_bytes"] is not None and w["rss_bytes"] > 100_000, w
            assert w["uptime_s"] is not None and w["uptime_s"] >= 0, w
            assert w["req_total"] is not None and w["err_total"] is not None, w
            assert w["inflight"] is not None and w["inflight"] >= 0, w
            assert w["lag_p99_ms"] is not None and w["lag_max_ms"] is not None, w
            assert isinstance(w["metrics"], dict), w
        app = iv.app("shop")
        assert app is not None, iv.summary()
        assert app["workers"] == 3 and app["online"] == 3, app
        sum_rps = sum(ws[p]["req_per_s"] for p in pids)
        assert app["req_per_s"] == pytest.approx(sum_rps, abs=0.05), (app, sum_rps)
        assert app["rss_bytes"] == sum(ws[p]["rss_bytes"] for p in pids), app
        assert app["cpu_pct"] is not None, app
        h = iv.hub
        assert h["workers"] == 3, h
        assert h["bad_total"] == 0 and h["spoofed_total"] == 0 and h["dropped_total"] == 0, h
        assert h["cpu_pct"] is not None and h["rss_bytes"] > 0, h
    assert len({w["pid"] for w in ivs[-1].workers}) == 3
    assert ivs[-1].hub["reports_total"] > ivs[0].hub["reports_total"]

    for pid in pids:
        series = [iv.worker(pid) for iv in ivs]
        totals = [w["req_total"] for w in series]
        assert all(b >= a for a, b in zip(totals, totals[1:])), f"req_total went down: {totals}"
        assert totals[-1] > totals[0], f"req_total did not rise: {totals}"
        # The rate as the hub prints it, and as the cumulative counter implies.
        med = statistics.median(w["req_per_s"] for w in series)
        assert 0.6 * rate <= med <= 1.4 * rate, f"pid {pid}: median req_per_s {med} for --rate {rate}"
        implied = (totals[-1] - totals[0]) / (ivs[-1].ts - ivs[0].ts)
        assert 0.6 * rate <= implied <= 1.4 * rate, f"pid {pid}: Δreq/Δt {implied:.1f} for --rate {rate}"
        p50 = statistics.median(w["lat_p50_ms"] for w in series if w["lat_p50_ms"] is not None)
        assert 0.5 * latency <= p50 <= 3 * latency, f"pid {pid}: lat_p50_ms {p50} for --latency {latency}"
        w = series[-1]
        assert w["lat_p99_ms"] is not None and w["lat_p99_ms"] >= w["lat_p50_ms"], w


# ---- 2. a worker killed ---------------------------------------------------------

def test_killed_worker_is_gone_then_dropped(hub, start_worker):
    procs = [start_worker(hub.sock, "victims", i, rate=50) for i in range(2)]
    keep, victim = procs

    def both_online(iv):
        a = iv.app("victims")
        return a is not None and a["online"] == 2 and all(
            iv.worker(p.pid) and iv.worker(p.pid)["agent"] for p in procs)

    hub.wait_for(both_online, timeout=10, what="2 workers online")
    t_kill = time.time()
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=5)

    after = []          # intervals printed after the kill
    deadline = time.monotonic() + 15
    while len(after) < 10 and time.monotonic() < deadline:
        iv = hub.next_interval()
        if iv.ts > t_kill:
            after.append(iv)
    check_line_keys(after)
    states = [(iv.worker(victim.pid) or {}).get("state", "absent") for iv in after]
    assert "gone" in states, f"victim never shown gone: {states}"
    k = states.index("gone")
    assert k <= 1, f"victim shown gone only in interval {k + 1} after the kill (want ≤ 2): {states}"
    assert all(s == "online" for s in states[:k]), states
    assert "absent" in states[k:], f"gone worker never dropped: {states}"
    j = states.index("absent", k)
    assert 1 <= j - k <= 6, f"gone worker shown for {j - k} intervals: {states}"
    assert all(s == "absent" for s in states[j:]), f"victim came back: {states}"

    gone_line = after[k].worker(victim.pid)
    assert gone_line["agent"] is False, gone_line
    for iv in after[k:]:
        a = iv.app("victims")
        assert a["online"] == 1 and a["workers"] == 1, a
        assert iv.worker(keep.pid)["state"] == "online", iv.summary()
    assert after[-1].hub["workers"] == 1, after[-1].hub


# ---- 3. a sender in another language (Python + msgpack) ----------------------------

def test_python_msgpack_sender_is_accepted(hub, start_py_sender):
    metrics = {"queue_depth": 3, "temp_c": 21.5}
    p = start_py_sender(hub.sock, name="pysender", wid=7, rate=50, metrics=metrics, period=0.1)

    iv = hub.wait_for(lambda iv: iv.worker(p.pid) and iv.worker(p.pid)["req_per_s"] is not None
                      and iv.worker(p.pid)["cpu_pct"] is not None,
                      timeout=10, what="the Python sender's figures")
    ivs = [iv] + hub.intervals(5)
    check_line_keys(ivs)
    for iv in ivs:
        w = iv.worker(p.pid)
        assert w["app"] == "pysender" and w["id"] == 7 and w["state"] == "online", w
        assert w["agent"] is True and w["ready"] is True, w
        assert w["metrics"] == metrics, w
        assert w["err_total"] == 0 and w["inflight"] == 1, w
        assert w["lat_p50_ms"] == pytest.approx(2.0) and w["lat_p99_ms"] == pytest.approx(9.0), w
        assert w["lag_p99_ms"] == pytest.approx(0.8) and w["lag_max_ms"] == pytest.approx(1.5), w
        assert 40 <= w["req_per_s"] <= 60, f"req_per_s {w['req_per_s']} for a sender at 50/s"
        assert iv.hub["bad_total"] == 0 and iv.hub["spoofed_total"] == 0, iv.hub
    totals = [iv.worker(p.pid)["req_total"] for iv in ivs]
    assert totals[-1] > totals[0] and totals == sorted(totals), totals


# ---- 4. spoofed pid -----------------------------------------------------------------

def test_spoofed_pid_is_counted_and_dropped(hub, sender):
    victims = [hub.pid, os.getppid(), 1]
    for i, pid in enumerate(victims):
        sender.pack(Sender.report(seq=i + 1, pid=pid, name="spoof", req=1000, ready=True))
    iv = hub.wait_for(lambda iv: iv.hub["spoofed_total"] >= 3, timeout=5, what="spoofed_total 3")
    for iv in [iv] + hub.intervals(3):
        assert iv.hub["spoofed_total"] == 3, iv.hub
        assert iv.hub["reports_total"] == 0 and iv.hub["bad_total"] == 0, iv.hub
        assert iv.workers == [], f"a spoofed datagram created a worker: {iv.summary()}"
        assert iv.apps == [], iv.summary()

    # Control: the same datagram with our real pid is accepted.
    sender.pack(Sender.report(seq=10, name="honest", req=5))
    iv = hub.wait_for(lambda iv: iv.worker(os.getpid()) is not None, timeout=5,
                      what="the honest report")
    w = iv.worker(os.getpid())
    assert w["app"] == "honest" and w["req_total"] == 5, w
    assert iv.hub["spoofed_total"] == 3, iv.hub
    assert all(iv.worker(v) is None for v in victims), iv.summary()


# ---- 5. garbage datagrams ---------------------------------------------------------------

def garbage_datagrams():
    pid = os.getpid()
    good = {"v": 1, "t": "report", "pid": pid, "seq": 1, "ts": int(time.time() * 1000), "req": 3}
    full = packb(good)
    rnd = random.Random(20240601)
    g = {}
    for i, n in enumerate((1, 7, 64, 500, 4000)):
        g[f"random {n} bytes"] = bytes(rnd.getrandbits(8) for _ in range(n))
        # the same, but starting like a msgpack map so the decoder must refuse it
        g[f"random {n} bytes as map"] = bytes([0x80 | (i + 1)]) + bytes(rnd.getrandbits(8) for _ in range(n))
    g["array32 of 16M (dd 01 00 00 00)"] = b"\xdd\x01\x00\x00\x00"
    g["array32 of 4G (dd ff ff ff ff)"] = b"\xdd\xff\xff\xff\xff"
    g["map32 of 4G"] = b"\xdf\xff\xff\xff\xff"
    g["map with str32 of 4G"] = b"\x81\xa1x\xdb\xff\xff\xff\xff"
    g["truncated by 1"] = full[:-1]
    g["truncated in half"] = full[:len(full) // 2]
    g["truncated to 1 byte"] = full[:1]
    g["9000-byte datagram"] = packb(dict(good, pad="x" * 8950))
    g["trailing byte"] = full + b"\x00"
    g["two maps"] = full + full
    g["empty"] = b""
    g["array"] = packb([1, 2, 3])
    g["int"] = packb(42)
    g["nil"] = packb(None)
    g["str READY=1 as msgpack"] = packb("READY=1")
    g["5000 nested arrays"] = (b"\x85" + packb("v") + packb(1) + packb("t") + packb("report")
                               + packb("pid") + packb(pid) + packb("seq") + packb(1)
                               + packb("x") + b"\x91" * 5000 + b"\xc0")
    for k in ("v", "t", "pid", "seq"):
        g[f"missing {k}"] = packb({kk: vv for kk, vv in good.items() if kk != k})
    wrong = {"v": "1", "t": 5, "pid": str(pid), "seq": "1", "ts": "now", "req": -1,
             "err": 1.5, "wid": -3, "name": 5, "ready": 1, "m": [1, 2], "lvl": 3,
             "inflight": True, "lat_p50": "fast", "rss": None}
    for k, v in wrong.items():
        g[f"wrong type {k}={v!r}"] = packb(dict(good, **{k: v}))
    g["pid 0"] = packb(dict(good, pid=0))
    g["t unknown"] = packb(dict(good, t="bogus"))
    g["name too long"] = packb(dict(good, name="n" * 200))
    g["metric value str"] = packb(dict(good, m={"k": "str"}))
    g["33 metrics"] = packb(dict(good, m={f"k{i}": i for i in range(33)}))
    g["int key"] = packb({**good, 1: 2})
    g["version 3"] = packb(dict(good, v=3))      # 1 and 2 are accepted
    g["text no ="] = b"hello world"
    g["notify with bad line"] = b"READY=1\nnot an assignment"
    g["notify lowercase key"] = b"ready=1"
    return g


def test_garbage_datagrams_are_counted_and_survived(hub, sender):
    rss0 = hub.rss_kib()
    g = garbage_datagrams()
    for name, data in g.items():
        sender.raw(data)
        time.sleep(0.002)     # the sender's socket is blocking; this only spreads them out
    n = len(g)
    iv = hub.wait_for(lambda iv: iv.hub["bad_total"] >= n, timeout=5, what=f"bad_total {n}")
    ivs = [iv] + hub.intervals(4)             # and the hub keeps printing
    for iv in ivs:
        assert iv.hub["bad_total"] == n, f"bad_total {iv.hub['bad_total']}, sent {n} bad datagrams"
        assert iv.hub["reports_total"] == 0 and iv.hub["spoofed_total"] == 0, iv.hub
        assert iv.workers == [], f"garbage created a worker: {iv.summary()}"
    assert hub.proc.poll() is None, hub.stderr()

    rss1 = hub.rss_kib()
    assert rss1 - rss0 < 20 * 1024, f"hub RSS grew from {rss0} to {rss1} KiB"
    if not hub_asan(hub.pid) and not WRAP:    # ASan's and valgrind's own memory
        assert rss1 < 20 * 1024, f"hub RSS {rss1} KiB after garbage"
        assert ivs[-1].hub["rss_bytes"] < 20 * 1024 * 1024, ivs[-1].hub

    # Still alive and still accepting good reports.
    sender.pack(Sender.report(seq=1, name="after-garbage", req=9))
    iv = hub.wait_for(lambda iv: iv.worker(os.getpid()) is not None, timeout=5,
                      what="a good report after the garbage")
    assert iv.worker(os.getpid())["req_total"] == 9
    assert iv.hub["bad_total"] == n and iv.hub["reports_total"] == 1, iv.hub


# ---- 6. sd_notify --------------------------------------------------------------------

def test_sd_notify_ready_without_agent(hub, start_py_sender):
    p = start_py_sender(hub.sock, notify="READY=1\nSTATUS=serving")
    iv = hub.wait_for(lambda iv: iv.worker(p.pid) is not None and iv.worker(p.pid)["ready"] is True,
                      timeout=5, what="the notify sender as a ready worker")
    check_line_keys([iv])
    w = iv.worker(p.pid)
    assert w["state"] == "online" and w["agent"] is False, w
    assert w["app"], w                       # the process name
    assert w["req_total"] is None and w["metrics"] is None, w
    assert iv.hub["bad_total"] == 0 and iv.hub["reports_total"] >= 1, iv.hub
    iv = hub.wait_for(lambda iv: iv.worker(p.pid)["cpu_pct"] is not None, timeout=5,
                      what="/proc figures for the notify sender")
    assert iv.worker(p.pid)["rss_bytes"] > 0


# ---- 7. sequence gaps -----------------------------------------------------------------

def test_sequence_gaps_are_counted_exactly(hub, sender):
    seqs = [1, 2, 3, 7, 8, 20]      # gaps: 4..6 (3) and 9..19 (11)
    for i, s in enumerate(seqs):
        sender.pack(Sender.report(seq=s, req=i + 1))
    expected = 14
    last_req = len(seqs)
    iv = hub.wait_for(lambda iv: iv.worker(os.getpid()) is not None
                      and iv.worker(os.getpid())["req_total"] == last_req,
                      timeout=5, what="the last report of the sequence")
    for iv in [iv] + hub.intervals(2):
        assert iv.hub["dropped_total"] == expected, iv.hub
        assert iv.hub["reports_total"] == len(seqs), iv.hub

    # A datagram overtaken by a later one (seq just below the last) is neither a gap
    # nor a restart.
    sender.pack(Sender.report(seq=19, req=50))
    iv = hub.wait_for(lambda iv: iv.worker(os.getpid())["req_total"] == 50, timeout=5,
                      what="the late datagram")
    assert iv.hub["dropped_total"] == expected, iv.hub
    # A sequence that starts again at 0 (agent restarted) is not a gap; +1 steps are not either.
    for i, s in enumerate([0, 1, 2]):
        sender.pack(Sender.report(seq=s, req=100 + i))
    iv = hub.wait_for(lambda iv: iv.worker(os.getpid())["req_total"] == 102, timeout=5,
                      what="the restarted sequence")
    for iv in [iv] + hub.intervals(2):
        assert iv.hub["dropped_total"] == expected, iv.hub
    # One more gap of exactly 5 (3..7).
    sender.pack(Sender.report(seq=8, req=200))
    iv = hub.wait_for(lambda iv: iv.worker(os.getpid())["req_total"] == 200, timeout=5,
                      what="the report after a gap of 5")
    assert iv.hub["dropped_total"] == expected + 5, iv.hub


# ---- 8. the hub killed and restarted ---------------------------------------------------

def test_hub_restart_workers_reappear_and_never_stalled(sockdir, start_hub, start_worker):
    rate = 100
    h1 = start_hub()
    h1.wait_socket()
    procs = [start_worker(h1.sock, "survivor", i, rate=rate) for i in range(2)]
    pids = [p.pid for p in procs]
    h1.wait_for(lambda iv: all(iv.worker(p) and iv.worker(p)["req_per_s"] is not None
                               for p in pids), timeout=10, what="2 workers reporting")
    before = h1.intervals(3)[-1]
    req_before = {p: before.worker(p)["req_total"] for p in pids}

    h1.kill(signal.SIGKILL)
    assert os.path.exists(h1.sock), "a SIGKILLed hub cannot remove its socket"
    time.sleep(3.0)                          # the outage
    assert all(p.poll() is None for p in procs), "a worker died while the hub was away"

    h2 = start_hub()
    first = h2.wait_for(lambda iv: all(iv.worker(p) for p in pids), timeout=10,
                        what="both workers in the new hub")
    assert first.index <= 2, (f"workers reappeared only in the new hub's interval {first.index} "
                              f"(want ≤ 2): {[iv.summary() for iv in h2.history]}")
    after = h2.wait_for(lambda iv: all(iv.worker(p) and iv.worker(p)["req_total"] is not None
                                       for p in pids), timeout=5, what="request counts")
    for p in pids:
        w = after.worker(p)
        assert w["app"] == "survivor" and w["state"] == "online" and w["agent"] is True, w
        assert w["req_total"] > req_before[p], (w, req_before[p])
        outage_rate = (w["req_total"] - req_before[p]) / (after.ts - before.ts)
        assert outage_rate >= 0.8 * rate, (
            f"pid {p}: {outage_rate:.1f} req/s across the hub outage, configured {rate}: the worker stalled")


# ---- 9. no hub at all -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["missing", "stale", "frozen"])
def test_worker_runs_normally_without_hub(kind, sockdir):
    """missing: no file; stale: a socket file nobody has open; frozen: a bound
    socket that is never read, so its queue fills (EAGAIN) — the agent must not block."""
    require_binary(WORKER)
    path = os.path.join(sockdir, "agent.sock")
    holder = None
    if kind in ("stale", "frozen"):
        holder = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        holder.bind(path)
        if kind == "stale":
            holder.close()
            holder = None
    p = None
    try:
        t0 = time.monotonic()
        p = subprocess.Popen([WORKER, "--rate", "200", "--latency", "2", "--duration", "2",
                              "--name", "lonely"], env=worker_env(path, "lonely", 0),
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            out = None
        if out is None:
            pytest.fail(f"worker with a {kind} hub socket did not finish a 2 s run within 10 s "
                        "(the agent blocked?)", pytrace=False)
        elapsed = time.monotonic() - t0
    finally:
        if p and p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
        if holder:
            holder.close()
    assert p.returncode == 0, (p.returncode, err)
    assert 1.8 <= elapsed <= 6.0, f"a --duration 2 run took {elapsed:.2f} s"
    assert out == b"", f"worker printed on stdout: {out[:200]!r}"
    lines = err.decode(errors="replace").splitlines()
    assert len(lines) <= 1, f"worker printed more than its banner on stderr: {lines[:5]}"


# ---- 10. one hub per namespace; stale socket replaced ------------------------------------

def test_second_hub_refused_and_stale_socket_replaced(sockdir, start_hub, sender):
    h1 = start_hub()
    h1.wait_socket()
    # (`monit --headless` beside a hub streams it as a client: test_protocol.py; a second
    # hub of its own, as `run` would start, is refused)
    r = subprocess.run([DROVER, "run", "--headless", "--count", "1", "--interval", "200",
                        "--socket-dir", sockdir, "--", "sleep", "5"], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=10)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 1, (r.returncode, err)
    assert r.stdout == b"", r.stdout[:200]
    assert len(err.splitlines()) == 1, f"want a one-line message: {err!r}"
    assert f"another hub is running (pid {h1.pid})" in err, err

    # The refused hub must not have touched the running one's socket.
    sender.pack(Sender.report(seq=1, name="first", req=1))
    h1.wait_for(lambda iv: iv.worker(os.getpid()) is not None, timeout=5,
                what="a report reaching the first hub after the refusal")

    h1.kill(signal.SIGKILL)
    assert os.path.exists(h1.sock), "a SIGKILLed hub cannot remove its socket"
    with pytest.raises(ConnectionRefusedError):  # it is stale: nobody reads it
        sender.pack(Sender.report(seq=2, name="nobody", req=2))
    h3 = start_hub()
    h3.wait_socket()
    # (inode numbers are reused by the filesystem, so only a delivery proves the replacement)
    sender.pack(Sender.report(seq=3, name="third", req=3))
    iv = h3.wait_for(lambda iv: iv.worker(os.getpid()) is not None, timeout=5,
                     what="a report reaching the hub that replaced the stale socket")
    assert iv.worker(os.getpid())["app"] == "third"
    assert h3.stderr() == "", h3.stderr()


# ---- 11. command line ------------------------------------------------------------------------

def run_drover(*args, timeout=10):
    require_binary(DROVER)
    return subprocess.run([DROVER, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout)


def assert_usage_error(r, mention):
    err = r.stderr.decode(errors="replace")
    lines = err.splitlines()
    assert r.returncode == 2, (r.returncode, err)
    assert r.stdout == b"", r.stdout[:200]
    assert lines and lines[0].startswith("drover: ") and mention in lines[0], err
    # One message line; at most a pointer to --help after it.
    assert len(lines) == 1 or (len(lines) == 2 and "--help" in lines[1]), err


def test_cli_help_version_and_usage_errors():
    r = run_drover("--help")
    assert r.returncode == 0 and b"usage" in r.stdout and b"monit" in r.stdout, r
    r = run_drover("--version")
    assert r.returncode == 0, r
    assert re.fullmatch(rb"drover \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout
    assert_usage_error(run_drover("monit", "--bogus"), "--bogus")
    assert_usage_error(run_drover("nope"), "nope")
    assert_usage_error(run_drover("monit", "--headless", "--interval", "10"), "10")
    assert_usage_error(run_drover("monit", "--headless", "--format", "xml"), "xml")
    assert_usage_error(run_drover("monit", "--headless", "--count", "0"), "0")
    assert_usage_error(run_drover(), "command")


def test_count_exits_after_exactly_n_intervals(sockdir):
    t0 = time.monotonic()
    r = run_drover("monit", "--headless", "--count", "2", "--interval", str(INTERVAL_MS),
                   "--socket-dir", sockdir)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.decode().splitlines()]
    assert sum(1 for l in lines if l["type"] == "hub") == 2, lines
    assert lines[-1]["type"] == "hub", lines
    assert elapsed < 5, f"--count 2 at 200 ms took {elapsed:.1f} s"
    assert not os.path.exists(os.path.join(sockdir, "agent.sock")), "hub left its socket behind"


def test_prom_format_passes_promtool(sockdir, procs, start_py_sender):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool not found: install the Debian package 'prometheus' "
                    "(apt-get install prometheus); this test must not be skipped", pytrace=False)
    require_binary(DROVER)
    sock = os.path.join(sockdir, "agent.sock")
    hubp = procs.spawn([DROVER, "monit", "--headless", "--format", "prom", "--count", "2",
                        "--interval", "1000", "--socket-dir", sockdir],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Senders with a name that needs escaping, custom metrics, and a notify-only process.
    start_py_sender(sock, name='we"ird\\app', wid=0, rate=20, period=0.1,
                    metrics={"queue_depth": 3, "ratio": 0.25})
    start_py_sender(sock, notify="READY=1", repeat=20, period=0.1)
    out, err = hubp.communicate(timeout=15)
    assert hubp.returncode == 0, err
    text = out.decode()
    assert text.endswith("\n\n"), "each exposition is followed by an empty line"
    blocks = [b for b in text.split("\n\n") if b.strip()]
    assert len(blocks) == 2, f"--count 2 printed {len(blocks)} expositions"
    for i, b in enumerate(blocks):
        r = subprocess.run([promtool, "check", "metrics"], input=(b + "\n").encode(),
                           capture_output=True, timeout=15)
        assert r.returncode == 0, (f"promtool check metrics failed on exposition {i + 1}:\n"
                                   f"{r.stdout.decode()}{r.stderr.decode()}\n---\n{b}")
    last = blocks[-1]
    assert re.search(r'^drover_worker_requests_total\{app="we\\"ird\\\\app",worker="0"\} \d',
                     last, re.M), last
    # the pid is in the info series only, so a restart continues the same series
    assert re.search(r'^drover_worker_info\{app="we\\"ird\\\\app",worker="0",pid="\d+",agent_version="\d"\} 1$',
                     last, re.M), last
    assert re.search(r'^drover_worker_info\{app="[^"]*",worker="pid-\d+",pid="\d+",agent_version=""\} 1$',
                     last, re.M), last   # the notify-only process: no id, no agent report
    assert re.search(r'^drover_worker_metric\{.*name="queue_depth"\} 3$', last, re.M), last
    assert re.search(r'^drover_worker_ready\{.*\} 1$', last, re.M), last
    assert re.search(r'^drover_hub_reports_total \d+$', last, re.M), last


# ---- 12. stdout closed early --------------------------------------------------------------------

def test_hub_exits_when_stdout_closes(sockdir, procs):
    require_binary(DROVER)
    hubp = procs.spawn([DROVER, "monit", "--headless", "--interval", str(INTERVAL_MS),
                        "--socket-dir", sockdir], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = procs.spawn(["head", "-1"], stdin=hubp.stdout, stdout=subprocess.PIPE)
    hubp.stdout.close()                      # only head holds the read end now
    out, _ = head.communicate(timeout=10)
    assert out.count(b"\n") == 1, out
    t0 = time.monotonic()
    try:
        hubp.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("the hub kept running 10 s after its stdout reader went away")
    elapsed = time.monotonic() - t0
    assert elapsed <= 2 * INTERVAL + 1.0, f"the hub took {elapsed:.2f} s to notice its reader left"
    assert hubp.returncode == 0, (hubp.returncode, hubp.stderr.read())
    assert not os.path.exists(os.path.join(sockdir, "agent.sock")), "hub left its socket behind"
