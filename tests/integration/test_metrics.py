"""/metrics over HTTP (--metrics), the text-file route, the shipped Prometheus rules and
Grafana dashboard, and a real Prometheus server scraping a hub.

Each test names what it checks; the figures are checked against what the test itself
counted (requests it sent and saw answered), not against drover's own output.
"""
import gzip
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from conftest import free_port, DROVER, HTTPD, WORKER, WRAP, hub_asan, INTERVAL_MS as IV_MS, RunHub, online, wait_until

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONTRIB = os.path.join(REPO, "contrib")


def get(port, path, headers=None, method="GET", timeout=5):
    """(status, headers, body) of one HTTP request to 127.0.0.1:port."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def hub_with_metrics(procs, sockdir, logdir, port, *args, cmd=None, textfile=None):
    argv = [DROVER, "run", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
            "--log-dir", str(logdir), "--metrics", str(port)]
    if textfile:
        argv += ["--metrics-textfile", textfile]
    argv += [*map(str, args), "--", *(cmd or [WORKER, "--rate", "20"])]
    return RunHub(procs, sockdir, argv)


def scrape_ready(port):
    """The first 200 body of /metrics (the hub answers 503 before its first interval)."""
    return wait_until(lambda: (lambda r: r[2].decode() if r[0] == 200 else None)(get(port, "/metrics")), 10,
                      what="/metrics answering 200")


@pytest.fixture
def logdir_private(tmp_path):
    os.chmod(tmp_path, 0o700)
    return str(tmp_path)


# ---- the endpoint ---------------------------------------------------------------------

def test_metrics_endpoint_serves_prometheus_text_gzip_healthz_404_405(procs, sockdir, logdir_private):
    port = free_port()
    h = hub_with_metrics(procs, sockdir, logdir_private, port, "-i", "2", "-n", "web", "--no-echo")
    online(h, 2, "web")
    body = scrape_ready(port)
    st, hd, raw = get(port, "/metrics")
    assert st == 200 and hd["Content-Type"].startswith("text/plain; version=0.0.4"), hd
    assert re.search(r'^drover_worker_up\{app="web",worker="0"', body, re.M), body[:2000]
    # gzip when asked, the same exposition inside
    st, hd, gz = get(port, "/metrics", {"Accept-Encoding": "gzip"})
    assert st == 200 and hd["Content-Encoding"] == "gzip"
    assert gzip.decompress(gz).decode().startswith("# HELP")
    st, hd, _ = get(port, "/metrics", {"Accept-Encoding": "gzip;q=0, identity"})
    assert st == 200 and hd.get("Content-Encoding") is None
    st, _, body = get(port, "/healthz")
    assert (st, body) == (200, b"ok\n")
    assert get(port, "/nope")[0] == 404
    st, hd, _ = get(port, "/metrics", method="POST")
    assert st == 405 and "GET" in hd["Allow"]
    # promtool, Prometheus's own linter, finds nothing to say
    r = subprocess.run(["promtool", "check", "metrics"], input=raw, capture_output=True, timeout=30)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r


def test_bad_metrics_address_is_a_usage_error(sockdir):
    for bad in ("0", "65536", "x", "1.2.3:80", "[::1]", ":80"):
        r = subprocess.run([DROVER, "run", "--headless", "--socket-dir", sockdir, "--metrics", bad, "--", "true"],
                           capture_output=True, text=True, timeout=10)
        assert r.returncode == 2 and "--metrics takes [HOST:]PORT" in r.stderr, (bad, r)


def test_monit_beside_a_running_hub_refuses_metrics_it_would_not_serve(procs, sockdir, logdir_private):
    port, mine = free_port(), free_port()
    h = hub_with_metrics(procs, sockdir, logdir_private, port, "-n", "web", "--no-echo")
    online(h, 1, "web")
    for extra in (["--headless", "--count", "1"], []):   # the stream, and the console (no terminal here)
        for opt in (["--metrics", str(mine)], ["--metrics-textfile", os.path.join(logdir_private, "x.prom")]):
            r = subprocess.run([DROVER, "monit", *extra, *opt, "--socket-dir", sockdir], capture_output=True,
                               text=True, timeout=10, stdin=subprocess.DEVNULL)
            assert r.returncode == 2 and f"{opt[0]} belongs to the hub: a hub runs in namespace" in r.stderr \
                and not r.stdout, (extra, opt, r)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mine), timeout=2).close()
    assert not os.path.exists(os.path.join(logdir_private, "x.prom"))
    # with --host monit is only a client, whatever runs here: refused before any ssh
    r = subprocess.run([DROVER, "monit", "--headless", "--host", "nosuchhost.invalid", "--metrics", str(mine),
                        "--socket-dir", sockdir], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "with --host, monit is only a client" in r.stderr, r
    # without a hub, monit --headless is the hub: it serves
    h.kill(signal.SIGTERM)
    m = RunHub(procs, sockdir, [DROVER, "monit", "--headless", "--interval", str(IV_MS), "--socket-dir", sockdir,
                                "--metrics", str(mine)])
    m.wait_socket()
    assert "drover_hub_workers" in scrape_ready(mine)
    # and --help says so
    r = subprocess.run([DROVER, "monit", "--help"], capture_output=True, text=True, timeout=10)
    assert "monit and up refuse them beside a" in r.stdout, r.stdout


def test_metrics_port_in_use_is_a_clear_error(procs, sockdir, logdir_private):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([DROVER, "run", "--headless", "--socket-dir", sockdir, "--log-dir", logdir_private,
                            "--metrics", str(port), "--", "sleep", "5"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and f"cannot serve metrics on {port}" in r.stderr, r


def test_malformed_http_garbage_huge_header_slowloris_the_hub_serves_on(procs, sockdir, logdir_private):
    port = free_port()
    h = hub_with_metrics(procs, sockdir, logdir_private, port, "-n", "web", "--no-echo")
    online(h, 1, "web")
    scrape_ready(port)
    # garbage: whatever the hub answers (or not, until its idle timeout), others are served
    garbage = socket.create_connection(("127.0.0.1", port))
    garbage.sendall(b"\x00\xff\x16\x03\x01 garbage \r\n\r\n")
    assert get(port, "/metrics")[0] == 200
    garbage.close()
    # a 1 MB header: refused (431 or a close), memory per connection stays bounded
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(5)
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        except OSError:
            pass   # the hub closed on us mid-send: that is the refusal
        try:
            ans = s.recv(100)
        except OSError:
            ans = b""
        assert not ans.startswith(b"HTTP/1.1 200"), ans
    # slowloris: 40 connections that send a byte now and then never hold the server
    slow = []
    for _ in range(40):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        slow.append(c)
    try:
        t0 = time.monotonic()
        st, _, body = get(port, "/metrics")
        assert st == 200 and b"drover_worker_up" in body
        assert time.monotonic() - t0 < 2
    finally:
        for c in slow:
            c.close()
    assert h.proc.poll() is None


def test_70_trickling_clients_are_cut_at_the_request_deadline_and_a_scrape_gets_through(procs, sockdir,
                                                                                        logdir_private):
    """More slow clients than connection slots (64), each sending a byte every 2 s (never idle
    10 s): the 5 s request deadline cuts them, so a scrape waiting behind them gets through."""
    port = free_port()
    h = hub_with_metrics(procs, sockdir, logdir_private, port, "-n", "web", "--no-echo")
    online(h, 1, "web")
    scrape_ready(port)
    base = _rss_kib(h.pid)
    slow, cut = [], {}
    t0 = time.monotonic()   # before the first connect: no deadline can start earlier
    for _ in range(70):
        c = socket.create_connection(("127.0.0.1", port))
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        c.setblocking(False)
        slow.append(c)
    print(f"70 connections made in {time.monotonic() - t0:.2f} s")
    stop = threading.Event()

    def trickle():
        # a byte to each every 2 s; a connection the hub closed reads its end (b"")
        while not stop.wait(0.1):
            now = time.monotonic()
            for i, c in enumerate(slow):
                if i in cut:
                    continue
                try:
                    if c.recv(1) == b"":
                        cut[i] = now - t0
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    cut[i] = now - t0
                    continue
                if int((now - t0) / 2) != int((now - t0 - 0.1) / 2):
                    try:
                        c.send(b"X")
                    except OSError:
                        cut[i] = now - t0

    th = threading.Thread(target=trickle)
    th.start()
    try:
        try:
            st, _, body = get(port, "/metrics", timeout=12)
        except OSError as e:
            ss = subprocess.run(["ss", "-tn", f"sport = :{port} or dport = :{port}"], capture_output=True,
                                text=True).stdout
            pytest.fail(f"no scrape in 12 s behind 70 slow clients ({e}); {len(cut)} cut at "
                        f"{sorted(cut.values())}; sockets:\n{ss}")
        took = time.monotonic() - t0
        assert st == 200 and b"drover_worker_up" in body
        wait_until(lambda: len(cut) >= 64, 8, what="the hub closing the 64 slow connections it held",
                   diag=lambda: f"{len(cut)} closed: {sorted(cut.values())}")
        peak = _rss_kib(h.pid)
    finally:
        stop.set()
        th.join()
        for c in slow:
            c.close()
    first = sorted(cut.values())[:64]
    print(f"scrape behind 70 slow clients: {took:.2f} s; first 64 cut at {first[0]:.2f}-{first[-1]:.2f} s; "
          f"hub RSS {base} -> {peak} KiB")
    # cut at the 5 s deadline (not at the 10 s idle timeout, which the trickle never reaches)
    assert 4.5 <= first[0] and first[-1] < 8, first
    assert took < 9, took
    if not hub_asan(h.pid) and not WRAP:
        assert peak - base < 4 * 1024, (base, peak)
    assert h.proc.poll() is None


def _rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))


def test_50_concurrent_scrapers_for_10s_bounded_memory_no_dropped_reports(procs, sockdir, logdir_private):
    port = free_port()
    h = hub_with_metrics(procs, sockdir, logdir_private, port, "-i", "4", "-n", "web", "--no-echo")
    online(h, 4, "web")
    scrape_ready(port)
    base = _rss_kib(h.pid)
    stop = time.monotonic() + 10
    counts, errors = [0] * 50, []

    def scraper(i):
        while time.monotonic() < stop:
            try:
                st, _, body = get(port, "/metrics", {"Accept-Encoding": "gzip"} if i % 2 else None)
                if st == 200:
                    counts[i] += 1
            except OSError as e:   # a refused connection past the connection limit is allowed
                errors.append(e)

    threads = [threading.Thread(target=scraper, args=(i,)) for i in range(50)]
    peak = base
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, _rss_kib(h.pid))
        time.sleep(0.2)
    iv = h.next_interval()
    print(f"{sum(counts)} scrapes in 10 s by 50 clients, {len(errors)} refused; hub RSS {base} -> {peak} KiB")
    assert sum(counts) > 500
    if not hub_asan(h.pid) and not WRAP:
        assert peak - base < 16 * 1024, f"hub RSS grew {peak - base} KiB under 50 scrapers"
    assert iv.hub["dropped_total"] == 0, iv.hub


def test_metrics_textfile_is_replaced_whole_each_interval(procs, sockdir, logdir_private):
    path = os.path.join(logdir_private, "drover.prom")
    # a link planted at the temporary name is replaced, never written through
    target = os.path.join(logdir_private, "victim")
    open(target, "w").close()
    port = free_port()
    h = hub_with_metrics(procs, sockdir, logdir_private, port, "-n", "web", "--no-echo", textfile=path)
    os.symlink(target, f"{path}.tmp-{h.pid}")
    online(h, 1, "web")
    wait_until(lambda: os.path.exists(path), 10, what="the text file")
    seen = set()
    end = time.monotonic() + 2
    while time.monotonic() < end:
        with open(path) as f:
            text = f.read()
        assert text.startswith("# HELP") and text.rstrip().endswith(tuple("0123456789")), text[-200:]
        seen.add(os.stat(path).st_ino)
        time.sleep(0.02)
    assert len(seen) > 1, "the file was not replaced each interval"
    assert os.path.getsize(target) == 0, "the planted link was written through"
    r = subprocess.run(["promtool", "check", "metrics"], input=open(path, "rb").read(), capture_output=True)
    assert r.returncode == 0 and not r.stdout.strip(), r


# ---- rules and dashboard --------------------------------------------------------------

def test_shipped_rules_check_and_their_unit_tests_pass_in_promtool():
    d = os.path.join(CONTRIB, "prometheus")
    r = subprocess.run(["promtool", "check", "rules", "drover.rules.yml"], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["promtool", "test", "rules", "drover.rules.test.yml"], cwd=d, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_grafana_dashboard_queries_parse_in_promtool(tmp_path):
    with open(os.path.join(CONTRIB, "grafana", "drover.json")) as f:
        dash = json.load(f)
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 4
    rules = tmp_path / "dash.rules.yml"
    rules.write_text("groups:\n  - name: dashboard\n    rules:\n" +
                     "".join(f"      - record: dashboard:q{i}\n        expr: {json.dumps(e)}\n"
                             for i, e in enumerate(exprs)))
    r = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # its panels read the recording rules, so a query is as cheap as the rule
    recorded = {"app:drover_requests:rate1m", "app:drover_request_duration_seconds:p99_1m"}
    assert recorded <= set(exprs)


# ---- a real Prometheus ------------------------------------------------------------------

class Prometheus:
    """Debian's prometheus server on a loopback port, scraping targets every second."""

    def __init__(self, procs, tmp_path, targets):
        self.port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                       "scrape_configs:\n  - job_name: drover\n    static_configs:\n"
                       f"      - targets: [{', '.join(repr(t) for t in targets)}]\n")
        self.p = procs.spawn(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                              f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.value('up{job="drover"}') == 1, 30, interval=0.2, what="Prometheus scraping the hub")

    def query(self, expr):
        q = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/query?{q}", timeout=5) as r:
                d = json.load(r)
        except OSError:
            return None
        return d["data"]["result"] if d.get("status") == "success" else None

    def value(self, expr):
        """The single value expr gives now, or None."""
        r = self.query(expr)
        return float(r[0]["value"][1]) if r and len(r) == 1 else None


def test_real_prometheus_counts_exactly_merges_p99_and_keeps_series_across_a_restart(procs, sockdir,
                                                                                      logdir_private, tmp_path):
    import http.client
    import urllib.parse  # noqa: F401  (Prometheus.query)
    web, mport = free_port(), free_port()
    h = hub_with_metrics(procs, sockdir, logdir_private, mport, "-i", "2", "--listen", f"127.0.0.1:{web}",
                         "-n", "web", "--no-echo", cmd=[HTTPD])
    online(h, 2, "web")
    prom = Prometheus(procs, tmp_path, [f"127.0.0.1:{mport}"])
    total = 'sum(drover_worker_requests_total{app="web"})'
    wait_until(lambda: prom.value(f'count(drover_worker_requests_total{{app="web"}})') == 2, 20,
               what="both workers' request counters in Prometheus")

    def settled():
        a = prom.value(total)
        time.sleep(1.5)
        return (a,) if a is not None and a == prom.value(total) else None
    base = wait_until(settled, 20, interval=0, what="a settled request total")[0]
    # the client counts its own 200s and times them: 90 at 10 ms, 10 at 100 ms (9:1, on both workers)
    lat, ok = [], 0
    for i in range(100):
        c = http.client.HTTPConnection("127.0.0.1", web, timeout=10)
        t0 = time.monotonic()
        c.request("GET", "/slow?ms=100" if i % 10 == 9 else "/slow?ms=10")
        r = c.getresponse()
        r.read()
        lat.append(time.monotonic() - t0)
        ok += r.status == 200
        c.close()
    assert ok == 100
    wait_until(lambda: prom.value(total) == base + ok, 20,
               what=f"Prometheus's total to rise by exactly {ok}", diag=lambda: f"{base} -> {prom.value(total)}")
    q = 'histogram_quantile({}, sum by (le) (increase(drover_worker_request_duration_seconds_bucket{{app="web"}}[1m])))'
    p99, p50 = prom.value(q.format(0.99)), prom.value(q.format(0.5))
    lat.sort()
    print(f"client p50 {lat[49] * 1000:.1f} ms p99 {lat[98] * 1000:.1f} ms; Prometheus p50 {p50 * 1000:.1f} ms "
          f"p99 {p99 * 1000:.1f} ms")
    # merged, never averaged: the p99 is in the bucket of the 100 ms requests (2^16..2^17 µs), the
    # p50 in the 10 ms one (2^13..2^14 µs), as the client measured them
    assert 0.065536 <= lat[98] <= 0.131072 and 0.065536 <= p99 <= 0.131072, (lat[98], p99)
    assert 0.008192 <= lat[49] <= 0.016384 and 0.008192 <= p50 <= 0.016384, (lat[49], p50)
    # a worker killed: its restarts counter rises, and its series stays the same one
    w0 = [w for w in h.next_interval().workers if w["app"] == "web" and w["id"] == 0][0]
    os.kill(w0["pid"], signal.SIGKILL)
    wait_until(lambda: prom.value('drover_worker_restarts_total{app="web",worker="0"}') == 1, 20,
               what="worker 0's restart in Prometheus")
    online(h, 2, "web")
    # a rolling reload, counted done; the aborted series is there, at 0
    r = subprocess.run([DROVER, "reload", "web", "--socket-dir", sockdir], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0 and "done" in r.stdout, r
    wait_until(lambda: prom.value('drover_app_reloads_total{app="web",outcome="done"}') == 1, 20,
               what="the reload counted done in Prometheus")
    assert prom.value('drover_app_reloads_total{app="web",outcome="aborted"}') == 0
    # each worker in exactly one state, online
    wait_until(lambda: prom.value('sum(drover_worker_state{app="web",state="online"})') == 2, 20,
               what="both workers online in drover_worker_state")
    assert prom.value('count(drover_worker_state{app="web"} == 1)') == 2
    b = prom.query("drover_build_info")
    assert len(b) == 1 and b[0]["metric"]["version"] and float(b[0]["value"][1]) == 1, b
    ver = subprocess.run([DROVER, "--version"], capture_output=True, text=True).stdout.split()[-1]
    assert b[0]["metric"]["version"] == ver, (b, ver)
    # every series seen in the last minute, stale ones included: the request counters stayed the
    # same 2 through a restart and a reload, while the pids (drover_worker_info, which carries
    # them) churned: 2 first, 1 restarted, 2 reloaded
    seen = 'count(count_over_time({}{{app="web"}}[1m]))'
    assert prom.value(seen.format("drover_worker_requests_total")) == 2
    assert prom.value(seen.format("drover_worker_info")) == 5, prom.query(
        'count_over_time(drover_worker_info{app="web"}[1m])')


def metric(body, name, **labels):
    """The value of the one sample of name with exactly labels in an exposition, or None."""
    want = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    for line in body.splitlines():
        if line.startswith(name + want + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def samples(body, *names):
    """Every sample line (name{labels}, value) of the families names."""
    out = []
    for line in body.splitlines():
        m = re.match(r"([a-z_]+)(\{.*\})? (\S+)$", line)
        if m and m.group(1) in names:
            out.append((m.group(1) + (m.group(2) or ""), float(m.group(3))))
    return out


def test_config_file_hub_serves_its_memory_limit_and_reload_counters_from_the_start(procs, sockdir, logdir_private,
                                                                               tmp_path):
    port = free_port()
    conf = tmp_path / "drover.conf"
    app = f"[app web]\ncommand = {WORKER} --rate 20\ninstances = 2\n"
    conf.write_text(f"[hub]\nmetrics = {port}\ninterval = {IV_MS}ms\n\n{app}max_memory = 200M\n")
    h = RunHub(procs, sockdir, [DROVER, "up", "--headless", "-f", str(conf), "--socket-dir", sockdir,
                                "--log-dir", logdir_private])
    online(h, 2, "web")
    body = scrape_ready(port)
    assert 'drover_worker_up{app="web",worker="1"} 1' in body, body[:1500]
    # the file's max_memory is the limit DroverMemoryNearLimit divides by
    assert metric(body, "drover_app_max_memory_bytes", app="web") == 200 * 1024 * 1024, body[-3000:]
    # both outcomes exist at 0 before any reload: increase() sees the first aborted one
    assert metric(body, "drover_app_reloads_total", app="web", outcome="aborted") == 0, body[-3000:]
    assert metric(body, "drover_app_reloads_total", app="web", outcome="done") == 0, body[-3000:]
    real = body
    conf.write_text(f"[hub]\nmetrics = {port}\ninterval = {IV_MS}ms\n\n{app}max_memory = 300M\n")
    # `up --metrics` beside the running hub would serve nothing: refused, and nothing applied
    r = subprocess.run([DROVER, "up", "-f", str(conf), "--socket-dir", sockdir, "--metrics", str(free_port())],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "--metrics belongs to the hub: a hub runs in namespace" in r.stderr, r
    body = get(port, "/metrics")[2].decode()
    assert metric(body, "drover_app_max_memory_bytes", app="web") == 200 * 1024 * 1024
    # the new max_memory, applied by SIGHUP: a rolling reload, then the new limit and one reload done
    os.kill(h.pid, signal.SIGHUP)
    body = wait_until(lambda: (lambda b: b if metric(b, "drover_app_reloads_total", app="web", outcome="done") == 1
                               else None)(get(port, "/metrics")[2].decode()), 20, what="the reload counted done")
    assert metric(body, "drover_app_max_memory_bytes", app="web") == 300 * 1024 * 1024
    assert metric(body, "drover_app_reloads_total", app="web", outcome="aborted") == 0
    # an app removed from the file: its app series end with it
    conf.write_text(f"[hub]\nmetrics = {port}\ninterval = {IV_MS}ms\n\n[app other]\ncommand = {WORKER}\n")
    os.kill(h.pid, signal.SIGHUP)
    body = wait_until(lambda: (lambda b: b if metric(b, "drover_app_max_memory_bytes", app="web") is None
                               and metric(b, "drover_app_reloads_total", app="other", outcome="done") == 0
                               else None)(get(port, "/metrics")[2].decode()), 20, what="web's app series gone")
    assert metric(body, "drover_app_reloads_total", app="web", outcome="done") is None
    rules_fire_on_real_series(tmp_path, real)
    # a bad address in the file is refused with its line, before anything starts
    conf.write_text("[hub]\nmetrics = 70000\n\n[app web]\ncommand = true\n")
    r = subprocess.run([DROVER, "up", "--check", "-f", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and ":2: metrics:" in r.stderr, r


def rules_fire_on_real_series(tmp_path, body):
    """promtool test rules on the series of a real scrape (names and labels as the hub
    prints them), as two hosts (instance h1, h2) with the same app: worker 0 of h1 near
    its max_memory and one aborted reload on h1 fire the alerts, for h1 only."""
    series = []
    for name, v in samples(body, "drover_worker_resident_memory_bytes", "drover_app_max_memory_bytes",
                           "drover_app_reloads_total"):
        for inst in ("h1", "h2"):
            lab = name.replace("{", f'{{instance="{inst}",', 1)
            vals = f"{v:.0f}+0x10"
            if inst == "h1" and 'worker="0"' in name and name.startswith("drover_worker_resident"):
                vals = f"{metric(body, 'drover_app_max_memory_bytes', app='web') * 0.95:.0f}+0x10"
            if inst == "h1" and 'outcome="aborted"' in name:
                vals = f"{v:.0f} {v:.0f} {v + 1:.0f}+0x8"
            series.append(f"      - series: '{lab}'\n        values: '{vals}'\n")
    assert len(series) == 2 * (2 + 1 + 2), series
    summary = "web:0 uses over 90% of its max_memory (it will be replaced above it)"
    test = tmp_path / "real.test.yml"
    test.write_text(
        f"rule_files:\n  - {os.path.join(CONTRIB, 'prometheus', 'drover.rules.yml')}\n"
        "evaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n" + "".join(series) +
        "    alert_rule_test:\n"
        "      - eval_time: 3m\n        alertname: DroverReloadAborted\n        exp_alerts:\n"
        "          - exp_labels: {severity: warning, instance: h1, app: web, outcome: aborted}\n"
        "            exp_annotations:\n"
        "              summary: \"a reload of web was aborted; the old workers kept serving\"\n"
        "      - eval_time: 10m\n        alertname: DroverMemoryNearLimit\n        exp_alerts:\n"
        "          - exp_labels: {severity: warning, instance: h1, app: web, worker: \"0\"}\n"
        f"            exp_annotations:\n              summary: \"{summary}\"\n")
    r = subprocess.run(["promtool", "test", "rules", str(test)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr + test.read_text()


def test_attach_hub_exports_reload_counters_at_zero(procs, sockdir):
    from conftest import MASTER
    port = free_port()
    master = procs.spawn([sys.executable, "-c", MASTER])
    h = RunHub(procs, sockdir, [DROVER, "attach", str(master.pid), "--headless", "--interval", str(IV_MS),
                                "--socket-dir", sockdir, "-n", "cluster", "--metrics", str(port)])
    h.wait_for(lambda iv: len(h.workers(iv, "cluster")) == 3, what="the master's 3 children")
    body = scrape_ready(port)
    assert metric(body, "drover_app_reloads_total", app="cluster", outcome="aborted") == 0, body[-2000:]
    assert metric(body, "drover_app_reloads_total", app="cluster", outcome="done") == 0, body[-2000:]
