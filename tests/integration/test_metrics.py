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
import urllib.request

import pytest

from conftest import DROVER, HTTPD, WORKER, WRAP, hub_asan, INTERVAL_MS as IV_MS, RunHub, online, wait_until

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONTRIB = os.path.join(REPO, "contrib")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
