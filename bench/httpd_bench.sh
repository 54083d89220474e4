#!/bin/sh
# bench/httpd_bench.sh [BUILD_DIR] — the agent's overhead on a real server.
#
# Runs `wrk -t2 -c32 -d5s --latency` against one examples/httpd (GET /, keep-alive)
# three times and prints a markdown table of req/s, p50 and p99:
#   agent off        DROVER_AGENT=0: the agent is compiled in but disabled
#   agent, no hub    the agent counts and reports; nobody listens, datagrams are dropped
#   agent + hub      a headless hub (`drover monit --headless`) receives the reports
# wrk, httpd and the hub share this machine's CPUs, so read the differences
# between rows, not the absolute figures. Takes about 20 s.
# Exits 1 if a run failed or wrk reported socket errors or non-2xx responses.
set -u
B=${1:-build}
HTTPD="$B/examples/httpd"
DROVER="$B/drover"
DURATION=${HTTPD_BENCH_SECONDS:-5}
[ -x "$HTTPD" ] || { echo "httpd_bench: $HTTPD is missing: build first (make)" >&2; exit 1; }
command -v wrk >/dev/null 2>&1 || { echo "httpd_bench: wrk is not installed (Debian: apt-get install wrk)" >&2; exit 1; }

tmp=$(mktemp -d /tmp/drover-httpd-bench.XXXXXX) || exit 1
chmod 700 "$tmp"
httpd_pid=
hub_pid=

# Stops what this script started, by pid: the server, and the hub with "all".
stop() {
    pids=$httpd_pid
    [ "${1:-}" = all ] && pids="$pids $hub_pid"
    for p in $pids; do
        kill -TERM "$p" 2>/dev/null
    done
    for p in $pids; do
        wait "$p" 2>/dev/null
    done
    httpd_pid=
    [ "${1:-}" = all ] && hub_pid=
}
cleanup() {
    stop all
    rm -rf "$tmp"
}
trap 'cleanup; exit 130' INT TERM
trap cleanup EXIT

# Waits (≤ 5 s) for httpd's banner in $tmp/httpd.err and prints the port.
httpd_port() {
    i=0
    while [ $i -lt 100 ]; do
        port=$(sed -n 's/^httpd: pid [0-9]* serving on .*:\([0-9][0-9]*\)$/\1/p' "$tmp/httpd.err")
        if [ -n "$port" ]; then
            echo "$port"
            return 0
        fi
        kill -0 "$httpd_pid" 2>/dev/null || break
        sleep 0.05
        i=$((i + 1))
    done
    echo "httpd_bench: httpd did not start: $(cat "$tmp/httpd.err")" >&2
    return 1
}

# wrk's "50%" / "99%" latency as milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f", n }'
}

status=0
# run LABEL ENV-ASSIGNMENTS... : one row of the table.
run() {
    label=$1
    shift
    env "$@" DROVER_INTERVAL_MS=1000 "$HTTPD" --port 0 >/dev/null 2>"$tmp/httpd.err" &
    httpd_pid=$!
    if ! port=$(httpd_port); then
        status=1
        stop
        return
    fi
    wrk -t2 -c32 -d"${DURATION}s" --latency "http://127.0.0.1:$port/" >"$tmp/wrk.out" 2>&1
    rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$tmp/wrk.out")
    p50=$(awk '$1 == "50%" { print $2 }' "$tmp/wrk.out")
    p99=$(awk '$1 == "99%" { print $2 }' "$tmp/wrk.out")
    errs=$(grep -E 'Socket errors|Non-2xx' "$tmp/wrk.out" | tr '\n' ' ')
    if [ -z "$rps" ] || [ -n "$errs" ]; then
        echo "httpd_bench: $label: wrk failed or saw errors: ${errs:-$(cat "$tmp/wrk.out")}" >&2
        status=1
    fi
    printf '| %-14s | %9s | %8s | %8s |\n' "$label" "${rps:-?}" \
        "$([ -n "$p50" ] && to_ms "$p50" || echo ?)" "$([ -n "$p99" ] && to_ms "$p99" || echo ?)"
    stop
}

echo "## examples/httpd under wrk -t2 -c32 -d${DURATION}s (GET /, keep-alive; $(nproc) CPUs)"
echo
echo "| setup          |     req/s | p50 (ms) | p99 (ms) |"
echo "|----------------|----------:|---------:|---------:|"
run "agent off" DROVER_AGENT=0 DROVER_SOCKET="$tmp/none.sock"
run "agent, no hub" DROVER_SOCKET="$tmp/none.sock"
if [ -x "$DROVER" ]; then
    "$DROVER" monit --headless --interval 1000 --socket-dir "$tmp" >/dev/null 2>"$tmp/hub.err" &
    hub_pid=$!
    i=0
    while [ ! -S "$tmp/agent.sock" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    if [ -S "$tmp/agent.sock" ]; then
        run "agent + hub" DROVER_SOCKET="$tmp/agent.sock"
    else
        echo "httpd_bench: the hub did not start: $(cat "$tmp/hub.err")" >&2
        status=1
    fi
    stop all
else
    echo "| agent + hub    | (no $DROVER) | | |"
fi
exit $status
