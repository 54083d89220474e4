#!/bin/sh
# bench/run.sh BUILD_DIR — every drover benchmark, as markdown tables (`make bench`).
#
#   BUILD_DIR/bench/agent_bench   the agent's hot path and reporter (if built)
#   bench/ingest_bench.py         report-socket ingest and the hub's footprint
#                                 (uses BUILD_DIR/bench/ingest_sender, drover, examples/worker)
#   bench/supervisor_bench.py     rolling reload under wrk, start time, hub footprint
#   bench/metrics_bench.py        /metrics: scrape latency and size, a scraped hub's footprint
#   bench/httpd_bench.sh          the agent's overhead on the example HTTP server
#   bench/console_bench.sh        the console's CPU, memory and redraw time (vs pm2 monit)
#   bench/node_bench.sh           the Node agent's overhead; drover vs PM2 on a Node app;
#                                 bench/idle_bench.py: the agent's idle cost, the whole host idle
#   bench/balance_bench.py        --balance shared vs reuseport: shares, req/s, errors (~5 min)
#   bench/config_bench.py         drover up: 10 apps, an apply under wrk, hub RSS and idle CPU
#   bench/upgrade_bench.py        drover upgrade under wrk: wall time, errors, NDJSON gap (4, 64 workers)
#   bench/fleet_bench.py          many hosts over ssh (real sshds on loopback): the merged
#                                 headless stream's CPU, RSS and bytes per host; command latency
#   bench/tree_bench.py           process trees: a hub of 64 workers of 1 and of 3 processes
#                                 (TREE_BASE_BUILD=DIR also measures a build from before trees)
#
# BENCH_ONLY="ingest supervisor" runs a subset (names: agent ingest supervisor metrics httpd
# console node balance config upgrade fleet tree).
# Takes about 25 minutes (60 s idle windows; balance alone ~5). Raising net.unix.max_dgram_qlen needs root; the
# original value is restored. Exits 1 if a benchmark could not run; missed
# targets are listed in the output.
set -u
B=${1:?usage: bench/run.sh BUILD_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

child=
# Stop the running benchmark by its pid; it kills what it started itself.
cleanup() {
    if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

# Runs one benchmark in the background (so the trap can stop it) and waits.
run() {
    "$@" &
    child=$!
    wait "$child"
    rc=$?
    child=
    return $rc
}

status=0
echo "# drover benchmarks ($(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%dT%H:%MZ))"
echo
if [ -n "${BENCH_ONLY:-}" ] && ! case " $BENCH_ONLY " in *" agent "*) true;; *) false;; esac; then
    :
elif [ -x "$B/bench/agent_bench" ]; then
    run "$B/bench/agent_bench" || status=1
    echo
else
    echo "(agent_bench not built: $B/bench/agent_bench)"
    echo
fi
want() { [ -z "${BENCH_ONLY:-}" ] || case " $BENCH_ONLY " in *" $1 "*) return 0;; *) return 1;; esac; }
want ingest && { run "$PY" "$HERE/ingest_bench.py" "$B" || status=1; echo; }
want supervisor && { run "$PY" "$HERE/supervisor_bench.py" "$B" || status=1; echo; }
want metrics && { run "$PY" "$HERE/metrics_bench.py" "$B" || status=1; echo; }
# Each script by the shell it is written for (its #! line): node_bench.sh
# and console_bench.sh need bash (/dev/tcp, <<<), httpd_bench.sh is POSIX sh.
want httpd && [ -f "$HERE/httpd_bench.sh" ] && { run sh "$HERE/httpd_bench.sh" "$B" || status=1; echo; }
want console && [ -f "$HERE/console_bench.sh" ] && { run bash "$HERE/console_bench.sh" "$B" || status=1; echo; }
want node && [ -f "$HERE/node_bench.sh" ] && { run bash "$HERE/node_bench.sh" "$B" || status=1; echo; }
want balance && { run "$PY" "$HERE/balance_bench.py" "$B" || status=1; echo; }
want config && [ -f "$HERE/config_bench.py" ] && { run "$PY" "$HERE/config_bench.py" "$B" || status=1; echo; }
want upgrade && { run "$PY" "$HERE/upgrade_bench.py" "$B" || status=1; echo; }
want fleet && [ -x /usr/sbin/sshd ] && { run "$PY" "$HERE/fleet_bench.py" "$B" || status=1; echo; }
want tree && { run "$PY" "$HERE/tree_bench.py" "$B" ${TREE_BASE_BUILD:+"$TREE_BASE_BUILD"} || status=1; echo; }
exit $status
