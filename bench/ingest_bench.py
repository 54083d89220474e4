#!/usr/bin/env python3
"""
Ingest and hub-footprint benchmarks for drover (run by bench/run.sh, `make bench`).

    ingest_bench.py BUILD_DIR

Prints markdown tables:

1. Ingest, flat out, default sysctls: 1, 8 and 64 sender processes
   ($B/bench/ingest_sender, agent-format reports built with report_encode)
   send as fast as they can with MSG_DONTWAIT for a fixed time; each counts
   its own EAGAIN drops. The hub's NDJSON `hub` line gives what it accepted
   (reports_total) and what it saw missing (dropped_total: sequence gaps and
   its own queue overflow).
2. Ingest at a realistic load: 64 senders x 1 Hz for 10 s; the target is 0
   dropped with default sysctls.
3. net.unix.max_dgram_qlen raised to 512 (root only; the original value is
   restored in a finally): 64 senders flat out, and 64 / 256 senders at 1 Hz
   all firing at the same instant (bursts), each beside the default.
4. Footprint of a monitor-only hub: RSS and CPU % of `drover monit
   --headless` (it supervises nothing; bench/supervisor_bench.py measures a
   supervising `drover run` hub) serving 64 example workers reporting at 1 Hz
   (DROVER_INTERVAL_MS=1000, --rate 5) over 20 s; CPU from the process CPU
   clock (ns, procstat.py), RSS from /proc/PID/status.

Only the standard library is used, so any python3 runs it. Every process it
starts is killed by pid on exit (also on SIGINT/SIGTERM). Exit status: 0 when
every benchmark ran (a missed target is reported in the last table, not in the
status), 1 when one could not run.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import procstat  # noqa: E402  (beside this file)

QLEN_PATH = "/proc/sys/net/unix/max_dgram_qlen"
CLK_TCK = os.sysconf("SC_CLK_TCK")
FLAT_SECONDS = 3
HZ_SECONDS = 10
ALIGNED_SECONDS = 4
FOOTPRINT_SECONDS = 20
FOOTPRINT_WORKERS = 64

started = []          # every Popen we started, killed by pid at exit


class Interrupted(Exception):
    pass


def on_signal(signum, frame):
    raise Interrupted(f"signal {signum}")


def kill_all():
    for p in started:
        if p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 3
    for p in started:
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
    started.clear()


def spawn(argv, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.Popen(argv, **kw)
    started.append(p)
    return p


class Hub:
    """A headless hub in its own socket dir; a thread keeps its latest `hub` line."""

    def __init__(self, build, interval_ms=500):
        self.dir = tempfile.mkdtemp(prefix="drv-bench-", dir="/tmp")
        os.chmod(self.dir, 0o700)
        self.sock = os.path.join(self.dir, "agent.sock")
        self.interval = interval_ms / 1000.0
        self.proc = spawn([os.path.join(build, "drover"), "monit", "--headless",
                           "--interval", str(interval_ms), "--socket-dir", self.dir],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.proc.pid
        self.lines = 0
        self.last = None
        self.last_workers = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_lines(1, timeout=10)

    def _read(self):
        workers = []
        for raw in self.proc.stdout:
            try:
                o = json.loads(raw)
            except ValueError:
                continue
            if o.get("type") == "worker":
                workers.append(o)
            elif o.get("type") == "hub":
                with self.cv:
                    self.last, self.last_workers, workers = o, workers, []
                    self.lines += 1
                    self.cv.notify_all()
        with self.cv:
            self.lines = -1
            self.cv.notify_all()

    def wait_lines(self, n, timeout=10):
        """Waits until n hub lines have been printed; returns the last one."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while 0 <= self.lines < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            if self.lines < n:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                raise RuntimeError(f"hub printed {self.lines} intervals, wanted {n}: {err.strip()}")
            return self.last

    def settle(self):
        """Waits for two more intervals so everything sent so far is counted."""
        return self.wait_lines(self.lines + 2, timeout=10)

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        shutil.rmtree(self.dir, ignore_errors=True)


def run_senders(build, hub, procs, seconds, hz, aligned=False):
    """Runs ingest_sender against hub; returns (sender tally, hub line after it)."""
    p = spawn([os.path.join(build, "bench", "ingest_sender"), hub.sock, str(procs),
               str(seconds), str(hz)] + (["aligned"] if aligned else []),
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=seconds + 60)
    if p.returncode != 0:
        raise RuntimeError(f"ingest_sender failed ({p.returncode}): {err.decode().strip()}")
    tally = json.loads(out)
    return tally, hub.settle()


def ingest_row(build, procs, seconds, hz, aligned=False):
    hub = Hub(build)
    try:
        base = hub.last
        t, h = run_senders(build, hub, procs, seconds, hz, aligned)
    finally:
        hub.stop()
    accepted = h["reports_total"] - base["reports_total"]
    dropped = h["dropped_total"] - base["dropped_total"]
    att = t["attempted"]
    return {
        "procs": procs, "seconds": seconds, "hz": hz,
        "sent_s": att / seconds,
        "accepted_s": accepted / seconds,
        "eagain_pct": 100.0 * t["eagain"] / att if att else 0.0,
        "eagain": t["eagain"],
        "errors": t["errors"],
        "hub_dropped": dropped,
        "hub_dropped_pct": 100.0 * dropped / att if att else 0.0,
        "lost_in_hub": t["sent"] - accepted,
        "accepted": accepted, "attempted": att,
    }


def fmt_int(x):
    return f"{x:,.0f}"


def print_ingest_table(rows, qlen):
    print("| senders | sent/s | accepted/s | sender EAGAIN % | hub dropped (gaps) | hub dropped % | "
          "sent but not accepted |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['procs']} | {fmt_int(r['sent_s'])} | {fmt_int(r['accepted_s'])} | "
              f"{r['eagain_pct']:.1f} % | {fmt_int(r['hub_dropped'])} | {r['hub_dropped_pct']:.1f} % | "
              f"{fmt_int(r['lost_in_hub'])} |")
    print()
    print(f"Each row: a fresh hub, then {rows[0]['seconds']} s of flat-out sending (net.unix.max_dgram_qlen = {qlen}). "
          "sent/s counts send() calls; the sender-side EAGAIN % is what the kernel refused; "
          "the hub's dropped_total is what it inferred from sequence gaps (≤ EAGAIN: drops before a sender's "
          "first or after its last accepted report leave no gap); "
          "'sent but not accepted' is what reached the socket but was lost inside the hub (its queue overflowing).")
    print()


def read_qlen():
    with open(QLEN_PATH) as f:
        return int(f.read())


def write_qlen(v):
    with open(QLEN_PATH, "w") as f:
        f.write(f"{v}\n")


# ---- footprint --------------------------------------------------------------

def proc_cpu_ticks(pid):
    """CPU time of pid in ns (procstat.py: the process CPU clock)."""
    return procstat.cpu_ns(pid)


def proc_status_kib(pid, key):
    return procstat.status_kib(pid, key)


def footprint(build, misses):
    worker = os.path.join(build, "examples", "worker")
    print(f"## Footprint of a monitor-only hub (`drover monit`): {FOOTPRINT_WORKERS} example workers reporting at 1 Hz")
    print()
    if not os.access(worker, os.X_OK):
        print(f"not run: {worker} is not built (run `make`).")
        print()
        misses.append("hub footprint not measured (no example worker)")
        return
    hub = Hub(build, interval_ms=1000)
    workers = []
    try:
        env = dict(os.environ, DROVER_SOCKET=hub.sock, DROVER_INTERVAL_MS="1000", DROVER_NAME="fleet")
        for i in range(FOOTPRINT_WORKERS):
            env["DROVER_WORKER_ID"] = str(i)
            workers.append(spawn([worker, "--rate", "5", "--latency", "5", "--name", "fleet"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # Warm up: every worker seen reporting (agent true), then one more interval.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            hub.wait_lines(hub.lines + 1, timeout=5)
            if sum(1 for w in hub.last_workers if w.get("agent")) >= FOOTPRINT_WORKERS:
                break
        seen = sum(1 for w in hub.last_workers if w.get("agent"))
        base = hub.wait_lines(hub.lines + 1, timeout=5)
        t0 = time.monotonic()
        c0 = proc_cpu_ticks(hub.pid)
        w0 = sum(proc_cpu_ticks(w.pid) for w in workers)
        rss_max = 0
        while time.monotonic() - t0 < FOOTPRINT_SECONDS:
            time.sleep(1)
            rss_max = max(rss_max, proc_status_kib(hub.pid, "VmRSS"))
        c1 = proc_cpu_ticks(hub.pid)
        w1 = sum(proc_cpu_ticks(w.pid) for w in workers)
        wall = time.monotonic() - t0
        hwm = proc_status_kib(hub.pid, "VmHWM")
        end = hub.settle()
        alive = sum(1 for w in workers if w.poll() is None)
    finally:
        for w in workers:
            if w.poll() is None:
                os.kill(w.pid, signal.SIGTERM)
        for w in workers:
            try:
                w.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(w.pid, signal.SIGKILL)
                w.wait(timeout=5)
        hub.stop()

    hub_cpu = 100.0 * (c1 - c0) / 1e9 / wall
    workers_cpu = 100.0 * (w1 - w0) / 1e9 / wall
    rss_mb = rss_max / 1024.0                       # MiB
    accepted = end["reports_total"] - base["reports_total"]
    dropped = end["dropped_total"] - base["dropped_total"]
    ok_rss, ok_cpu = rss_max * 1024 <= 6e6, hub_cpu <= 0.5
    print("| figure | measured | target |")
    print("|---|---:|---:|")
    print(f"| workers reporting (agent true) | {seen} of {FOOTPRINT_WORKERS} | {FOOTPRINT_WORKERS} |")
    print(f"| hub RSS, max over {wall:.0f} s (VmRSS) | {rss_mb:.1f} MiB | ≤ 6 MB {'✓' if ok_rss else '✗'} |")
    print(f"| hub peak RSS (VmHWM) | {hwm / 1024.0:.1f} MiB | |")
    print(f"| hub CPU, % of one core | {hub_cpu:.2f} % | ≤ 0.5 % {'✓' if ok_cpu else '✗'} |")
    print(f"| the {FOOTPRINT_WORKERS} workers' total CPU, % of one core | {workers_cpu:.1f} % | (context) |")
    print(f"| reports accepted / dropped during the window | {fmt_int(accepted)} / {fmt_int(dropped)} | "
          f"≈ {FOOTPRINT_WORKERS * FOOTPRINT_SECONDS} / 0 |")
    print()
    print(f"CPU from the processes' CPU clocks (ns; procstat.py); "
          f"hub at --interval 1000, workers at DROVER_INTERVAL_MS=1000 --rate 5; {alive} workers still alive at the end.")
    print()
    if seen != FOOTPRINT_WORKERS:
        misses.append(f"only {seen} of {FOOTPRINT_WORKERS} workers seen reporting")
    if not ok_rss:
        misses.append(f"monitor-only hub RSS {rss_max * 1024 / 1e6:.1f} MB > 6 MB at {FOOTPRINT_WORKERS} workers")
    if not ok_cpu:
        misses.append(f"monitor-only hub CPU {hub_cpu:.2f} % > 0.5 % of a core at {FOOTPRINT_WORKERS} workers × 1 Hz")
    if dropped:
        misses.append(f"{dropped} reports dropped at {FOOTPRINT_WORKERS} example workers × 1 Hz")


def main():
    if len(sys.argv) != 2:
        print("usage: ingest_bench.py BUILD_DIR", file=sys.stderr)
        return 2
    build = os.path.abspath(sys.argv[1])
    for f in ("drover", "bench/ingest_sender"):
        if not os.access(os.path.join(build, f), os.X_OK):
            print(f"ingest_bench: {build}/{f} is missing; run `make bench`", file=sys.stderr)
            return 1
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ok = True
    misses = []
    qlen0 = read_qlen()
    changed = False
    try:
        print(f"## Ingest: flat out, default sysctls ({os.cpu_count()} CPUs)")
        print()
        base_rows = [ingest_row(build, n, FLAT_SECONDS, 0) for n in (1, 8, 64)]
        print_ingest_table(base_rows, qlen0)

        print(f"## Ingest: realistic load, 64 senders × 1 Hz for {HZ_SECONDS} s (net.unix.max_dgram_qlen = {qlen0})")
        print()
        r = ingest_row(build, 64, HZ_SECONDS, 1)
        zero = r["eagain"] == 0 and r["hub_dropped"] == 0 and r["lost_in_hub"] == 0 and r["errors"] == 0
        if not zero:
            misses.append("reports dropped at 64 senders × 1 Hz with default sysctls")
        print("| senders | reports sent | accepted | sender EAGAIN | hub dropped | target |")
        print("|---:|---:|---:|---:|---:|---|")
        print(f"| 64 × 1 Hz | {fmt_int(r['attempted'])} | {fmt_int(r['accepted'])} | {fmt_int(r['eagain'])} | "
              f"{fmt_int(r['hub_dropped'])} | 0 dropped {'✓' if zero else '✗'} |")
        print()

        qlen = 512
        print(f"## Ingest: what raising net.unix.max_dgram_qlen ({qlen0} → {qlen}) buys")
        print()
        try:
            write_qlen(qlen)
            changed = True
        except OSError as e:
            print(f"not run: cannot write {QLEN_PATH} ({e.strerror}; needs root).")
            print()
        if changed:
            loads = [("64 senders flat out", 64, FLAT_SECONDS, 0, False),
                     ("64 senders × 1 Hz, aligned", 64, ALIGNED_SECONDS, 1, True),
                     ("256 senders × 1 Hz, aligned", 256, ALIGNED_SECONDS, 1, True)]
            raised = [ingest_row(build, n, sec, hz, al) for _, n, sec, hz, al in loads]
            write_qlen(qlen0)
            changed = False
            default = [base_rows[-1]] + [ingest_row(build, n, sec, hz, al) for _, n, sec, hz, al in loads[1:]]
            print("| load | qlen | sent | accepted | sender EAGAIN % | hub dropped |")
            print("|---|---:|---:|---:|---:|---:|")
            for (name, *_), d, r in zip(loads, default, raised):
                for q, x in ((qlen0, d), (qlen, r)):
                    print(f"| {name} | {q} | {fmt_int(x['attempted'])} | {fmt_int(x['accepted'])} | "
                          f"{x['eagain_pct']:.1f} % | {fmt_int(x['hub_dropped'])} |")
            print()
            print(f"'aligned': every sender fires at the same instant each second (agents shorten each interval by a random 0-20 %, "
                  f"so this is the worst case: a fleet's burst arriving faster than the hub's ingest thread "
                  f"is scheduled). The queue length is read when a socket is created, so each row starts "
                  f"a fresh hub; the original value ({qlen0}) was restored.")
            print()

        footprint(build, misses)
        print("## Targets")
        print()
        print("all met" if not misses else "missed: " + "; ".join(misses))
        print()
    except Interrupted as e:
        print(f"interrupted ({e})", file=sys.stderr)
        ok = False
    finally:
        if changed:
            write_qlen(qlen0)
        kill_all()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
