#!/bin/sh
# Starts the example cluster: a headless hub (namespace "demo") and 3 example
# workers that report to it, printing NDJSON until Ctrl-C, which stops them all.
# Usage: examples/demo.sh [BUILD_DIR]   (default: build)
set -u
B=${1:-build}
DROVER="$B/drover"
WORKER="$B/examples/worker"
[ -x "$DROVER" ] && [ -x "$WORKER" ] || { echo "demo: build first (make)" >&2; exit 1; }

pids=""
cleanup() {
    trap - INT TERM EXIT
    for p in $pids; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
}
trap cleanup INT TERM EXIT

"$DROVER" monit --headless -L demo &
hub=$!
pids="$hub"
sleep 0.3
kill -0 "$hub" 2>/dev/null || exit 1

# The hub's socket, by the same rule the hub uses (PROTOCOL.md §3).
if [ -n "${XDG_RUNTIME_DIR:-}" ]; then sock="$XDG_RUNTIME_DIR/drover/demo/agent.sock"
else sock="/tmp/drover-$(id -u)/demo/agent.sock"; fi

for i in 0 1 2; do
    DROVER_SOCKET="$sock" DROVER_NAME=demo DROVER_WORKER_ID=$i \
        "$WORKER" --rate $((40 + 30 * i)) --latency $((10 + 10 * i)) 2>/dev/null &
    pids="$pids $!"
done
wait "$hub"
