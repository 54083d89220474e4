#!/usr/bin/env python3
"""
procstat.py — how the benchmarks read a process's CPU and memory, in one place.

    procstat.py cpu_ns PID...      total CPU time of the processes, ns
    procstat.py ticks PID...       utime+stime of the processes, clock ticks
    procstat.py rss_kib PID...     total VmRSS, KiB

CPU comes from each process's CPU clock (clock_gettime on the clock id
that clock_getcpuclockid(3) would return: the scheduler's run time of every
thread, dead ones included, in ns) — the clock the hub itself uses. Where
it cannot be read, /proc/PID/stat's utime+stime in clock ticks (10 ms at
HZ=100) is the fallback; stat is parsed after the last ')', since a process
name may hold spaces or parentheses ("PM2 v7.0.4: God Daemon").

Standard library only; imported by the Python benchmarks, run by the shell ones.
"""
import os
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_clock(pid):
    """The Linux process CPU clock id of pid: MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)."""
    return ((~pid) << 3) | 2


def stat_fields(pid):
    """Fields of /proc/PID/stat after the name: [0] is the state (field 3)."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def ticks(pid):
    """utime + stime in clock ticks; 0 when the process is gone."""
    try:
        f = stat_fields(pid)
    except (OSError, ValueError):
        return 0
    return int(f[11]) + int(f[12])


def cpu_ns(pid):
    """CPU time of every thread of pid, ns (ticks × 10 ms if the clock cannot be read); 0 when gone."""
    try:
        return time.clock_gettime_ns(_cpu_clock(pid))
    except (OSError, OverflowError):
        return ticks(pid) * 1_000_000_000 // CLK_TCK


def status_kib(pid, key):
    """A kB field of /proc/PID/status (VmRSS, VmHWM…); 0 when absent or gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid):
    return status_kib(pid, "VmRSS")


def rss_split_kib(pid):
    """(anonymous, file-backed) resident KiB from /proc/PID/smaps_rollup: the process's own
    memory, and pages of its binary and shared libraries (shared with other processes)."""
    anon = file_ = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    anon = int(line.split()[1])
                elif line.startswith("Rss:"):
                    file_ = int(line.split()[1])
    except OSError:
        return 0, 0
    return anon, max(0, file_ - anon)


def descendants(pid):
    """pid's descendants (children, grandchildren…) now, from /proc/*/stat's ppid."""
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(stat_fields(int(d))[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for k in kids.get(p, []):
            out.append(k)
            todo.append(k)
    return out


def main(argv):
    if len(argv) < 3 or argv[1] not in ("cpu_ns", "ticks", "rss_kib"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    fn = {"cpu_ns": cpu_ns, "ticks": ticks, "rss_kib": rss_kib}[argv[1]]
    print(sum(fn(int(p)) for p in argv[2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
