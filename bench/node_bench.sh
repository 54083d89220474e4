#!/bin/bash
# bench/node_bench.sh [BUILD_DIR] — the Node.js agent and drover against PM2, as markdown tables.
#
#   1. agent overhead: req/s of one Node http app with and without the agent
#      (preloaded with --require, reporting to a running hub), under wrk,
#      several alternating runs, median and ratio (target >= 0.97); also the
#      app's CPU time per request. With 2+ CPUs node and wrk are pinned to
#      different CPUs (taskset) to cut noise.
#   2. drover vs PM2 on the same app with 4 workers: supervisor memory (PM2
#      daemon vs drover hub RSS), their CPU while idle (10 s), start time to
#      all 4 workers listening, a rolling reload under wrk -c32 (errors:
#      socket errors + non-2xx; wall time of `pm2 reload` vs SIGHUP to
#      drover until "reload … done"). PM2 is installed from npm into a
#      temporary directory (PM2_HOME there too; bounded time); without
#      network that part is skipped.
#
#   3. bench/idle_bench.py: the Node agent's idle cost per worker (with and
#      without it, one run), and the whole host idle (supervisor + workers),
#      drover vs PM2, 4 and 16 workers, 60 s windows (IDLE_S).
#
# CPU figures come from the processes' CPU clocks (ns; bench/procstat.py).
# Needs bash (it uses /dev/tcp and <<<), node, wrk, npm (parts 2, 3) and a
# build with the Node agent (make). Takes about 6 minutes; everything it
# starts is stopped by pid on exit. Exits 1 if a part could not run.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
B=$(cd "${1:-$HERE/../build}" && pwd) || { echo "node_bench: no build directory ${1:-}" >&2; exit 1; }
DROVER=$B/drover
AGENT=$B/node/index.js
NODE=$(command -v node || echo /usr/bin/node)
WRK=$(command -v wrk || true)
RUNS=${NODE_BENCH_RUNS:-5}           # alternating pairs in part 1
SECS=${NODE_BENCH_SECS:-3}           # wrk seconds per run in part 1

for f in "$DROVER" "$AGENT" "$B/node/drover_agent.node" "$NODE" "$WRK"; do
    [ -n "$f" ] && [ -e "$f" ] || { echo "node_bench: missing ${f:-wrk} (make; apt-get install nodejs wrk)" >&2; exit 1; }
done

TMP=$(mktemp -d /tmp/drover-node-bench.XXXXXX)
chmod 700 "$TMP"
PIDS=""                              # every process started here, stopped on exit
PM2=""
export PM2_HOME=$TMP/pm2home

# Stops everything this script started, by pid: hubs get SIGTERM (they stop
# their workers), the PM2 daemon `pm2 kill` then SIGKILL by its pid file.
cleanup() {
    for p in $PIDS; do kill -TERM "$p" 2>/dev/null; done
    if [ -n "$PM2" ]; then
        timeout 20 "$PM2" kill >/dev/null 2>&1
        [ -s "$PM2_HOME/pm2.pid" ] && kill -KILL "$(cat "$PM2_HOME/pm2.pid")" 2>/dev/null
    fi
    for p in $PIDS; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.3; done
        kill -KILL "$p" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    PIN_APP="taskset -c 0"; PIN_WRK="taskset -c 1"
else
    PIN_APP=""; PIN_WRK=""
fi

# The app: plain http, unmodified apart from one line that records each
# worker's pid in $READY_FILE once it listens (to time "all listening").
cat > "$TMP/app.js" <<'EOF'
const http = require('http');
const port = Number(process.argv[2]);
const server = http.createServer((req, res) => res.end('hello world\n'));
server.listen(port, () => {
  if (process.env.READY_FILE) require('fs').appendFileSync(process.env.READY_FILE, process.pid + '\n');
});
EOF

free_port() { "$NODE" -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
now() { date +%s.%N; }
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
# CPU time of a process in ns, from its CPU clock (procstat.py); 0 when it is gone.
cpu_ns() { "$PY" "$HERE/procstat.py" cpu_ns "$1" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
median() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print "nan"}else if(NR%2){print a[(NR+1)/2]}else{print (a[NR/2]+a[NR/2+1])/2}}'; }
# wrk output -> "total errors non2xx"
wrk_sum() {
    awk '/requests in/{t=$1} /Socket errors/{gsub(/,/,""); e=$4+$6+$8+$10} /Non-2xx/{n=$NF} END{print t+0, e+0, n+0}' "$1"
}
# Waits (max $2 s) until file $1 has $3 lines; prints the seconds waited, or "timeout".
wait_lines() {
    local t0 dl
    t0=$(now); dl=$(awk -v t="$t0" -v s="$2" 'BEGIN{print t+s}')
    while :; do
        [ -f "$1" ] && [ "$(wc -l < "$1")" -ge "$3" ] && { awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; return 0; }
        awk -v d="$dl" -v n="$(now)" 'BEGIN{exit !(n>d)}' && { echo timeout; return 1; }
        sleep 0.02
    done
}
# Waits (max $2 s) until port $1 accepts.
wait_port() {
    local i
    for i in $(seq 1 $(( $2 * 50 ))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.02
    done
    return 1
}

status=0
echo "# Node.js agent and drover vs PM2 ($(uname -r), $(nproc) CPUs, node $("$NODE" --version), $(date -u +%Y-%m-%dT%H:%MZ))"
echo

# ---- 1. agent overhead ------------------------------------------------------------
SD=$TMP/hub1; mkdir -m 700 "$SD"
"$DROVER" monit --headless --socket-dir "$SD" > /dev/null 2>&1 &
MON=$!; PIDS="$PIDS $MON"
PORT=$(free_port)
: > "$TMP/plain"; : > "$TMP/agent"; : > "$TMP/plain.cpu"; : > "$TMP/agent.cpu"
echo "## 1. Agent overhead: one Node http app under wrk -t1 -c16 -d${SECS}s, $RUNS alternating runs"
echo
echo "| run | without agent (req/s) | with agent (req/s) | without: CPU µs/req | with: CPU µs/req |"
echo "|---|---:|---:|---:|---:|"
for r in $(seq 1 "$RUNS"); do
    line="| $r"
    cpus=""
    for mode in plain agent; do
        if [ $mode = agent ]; then opts="--require $AGENT"; else opts=""; fi
        env -u NODE_OPTIONS DROVER_SOCKET="$SD/agent.sock" NODE_OPTIONS="$opts" $PIN_APP "$NODE" "$TMP/app.js" "$PORT" &
        APP=$!; PIDS="$PIDS $APP"
        if ! wait_port "$PORT" 10; then echo "node_bench: the app did not listen" >&2; status=1; kill "$APP"; break 2; fi
        $PIN_WRK "$WRK" -t1 -c16 -d1s "http://127.0.0.1:$PORT/" > /dev/null 2>&1     # warm-up (JIT)
        c0=$(cpu_ns "$APP")
        $PIN_WRK "$WRK" -t1 -c16 -d"${SECS}s" "http://127.0.0.1:$PORT/" > "$TMP/wrk.out" 2>&1
        c1=$(cpu_ns "$APP")
        kill -TERM "$APP"; wait "$APP" 2>/dev/null
        rps=$(awk '/Requests\/sec/{print $2}' "$TMP/wrk.out")
        n=$(wrk_sum "$TMP/wrk.out" | cut -d' ' -f1)
        us=$(awk -v a="$c0" -v b="$c1" -v n="$n" 'BEGIN{ if (n>0) printf "%.2f", (b-a)/1e3/n; else print "nan" }')
        echo "$rps" >> "$TMP/$mode"; echo "$us" >> "$TMP/$mode.cpu"
        line="$line | ${rps:-?}"
        cpus="$cpus | $us"
    done
    echo "$line$cpus |"
done
mp=$(median < "$TMP/plain"); ma=$(median < "$TMP/agent")
cp_=$(median < "$TMP/plain.cpu"); ca=$(median < "$TMP/agent.cpu")
ratio=$(awk -v a="$ma" -v p="$mp" 'BEGIN{ if (p>0) printf "%.3f", a/p; else print "nan" }')
cratio=$(awk -v a="$ca" -v p="$cp_" 'BEGIN{ if (a>0) printf "%.3f", p/a; else print "nan" }')
echo "| **median** | **$mp** | **$ma** | **$cp_** | **$ca** |"
echo
echo "Throughput ratio with/without agent: **$ratio** (target >= 0.97); by CPU time per request: **$cratio**."
awk -v r="$ratio" 'BEGIN{exit !(r+0 < 0.97)}' && echo "MISSED: throughput ratio $ratio < 0.97 (on a shared or small machine, check the CPU-time ratio and rerun)"
kill -TERM "$MON"; wait "$MON" 2>/dev/null
echo

# ---- 2. drover vs PM2 -------------------------------------------------------------
echo "## 2. drover vs PM2: the same app, 4 workers"
echo
if ! command -v npm > /dev/null; then
    echo "(skipped: npm is not installed)"; exit 1
fi
echo "installing pm2 from npm into $TMP/pm2 ..." >&2
if ! timeout 150 npm install --prefix "$TMP/pm2" --no-audit --no-fund --loglevel=error pm2 > "$TMP/npm.log" 2>&1; then
    echo "(PM2 part skipped: npm install pm2 failed or timed out; see the log below)"
    tail -5 "$TMP/npm.log"
    exit 1
fi
PM2=$TMP/pm2/node_modules/.bin/pm2
PM2_VERSION=$("$PM2" --version 2>/dev/null | tail -1)

# -- start to all listening
DPORT=$(free_port); PPORT=$(free_port)
SD=$TMP/hub2; mkdir -m 700 "$SD"
t0=$(now)
env -u NODE_OPTIONS READY_FILE="$TMP/ready.drover" NODE_OPTIONS="--require $AGENT" \
    "$DROVER" run -i 4 -n web --listen "127.0.0.1:$DPORT" --headless --interval 1000 --socket-dir "$SD" \
    --log-dir "$TMP" --no-echo -- "$NODE" "$TMP/app.js" "$DPORT" > "$TMP/drover.ndjson" 2> "$TMP/drover.err" &
HUB=$!; PIDS="$PIDS $HUB"
d_start=$(wait_lines "$TMP/ready.drover" 30 4) || status=1

READY_FILE="$TMP/ready.pm2" timeout 60 "$PM2" start "$TMP/app.js" -i 4 --name web -- "$PPORT" > "$TMP/pm2.start" 2>&1 &
PS=$!
p_start=$(wait_lines "$TMP/ready.pm2" 60 4) || status=1
wait "$PS"
# The daemon is the workers' parent (PM2's cluster mode makes it the cluster master).
PM2D=$(cat "$PM2_HOME/pm2.pid" 2>/dev/null)
w1=$(head -1 "$TMP/ready.pm2" 2>/dev/null)
if [ -n "$w1" ]; then
    parent=$(sed 's/.*) //' "/proc/$w1/stat" 2>/dev/null | awk '{print $2}')
    [ -n "$parent" ] && [ "$parent" != "$PM2D" ] && { echo "node_bench: pm2.pid says $PM2D, the workers' parent is $parent: using the parent" >&2; PM2D=$parent; }
fi
[ -n "$PM2D" ] || { echo "node_bench: cannot find the PM2 daemon" >&2; status=1; }

# -- idle: memory and CPU of the two supervisors over the same 10 s
sleep 2
h0=$(cpu_ns "$HUB"); p0=$(cpu_ns "${PM2D:-0}"); t0=$(now)
sleep 10
h1=$(cpu_ns "$HUB"); p1=$(cpu_ns "${PM2D:-0}"); t1=$(now)
d_cpu=$(awk -v a="$h0" -v b="$h1" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.2f", (b-a)/1e9/(e-s)*100}')
p_cpu=$(awk -v a="$p0" -v b="$p1" -v s="$t0" -v e="$t1" 'BEGIN{printf "%.2f", (b-a)/1e9/(e-s)*100}')
d_rss=$(awk -v k="$(rss_kib "$HUB")" 'BEGIN{printf "%.1f", k/1024}')
p_rss=$(awk -v k="$(rss_kib "${PM2D:-0}")" 'BEGIN{printf "%.1f", k/1024}')

# -- rolling reload under wrk -c32 (keep-alive), one reload each
"$WRK" -t2 -c32 -d8s --timeout 3s "http://127.0.0.1:$DPORT/" > "$TMP/wrk.drover" 2>&1 &
W=$!
sleep 1.5
n0=$(grep -c "reload web: done" "$TMP/drover.err")
t0=$(now)
kill -HUP "$HUB"
d_reload=timeout
for _ in $(seq 1 1500); do
    if [ "$(grep -c "reload web: done" "$TMP/drover.err")" -gt "$n0" ]; then
        d_reload=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'); break
    fi
    sleep 0.02
done
wait "$W"
read -r d_total d_err d_non <<< "$(wrk_sum "$TMP/wrk.drover")"

"$WRK" -t2 -c32 -d8s --timeout 3s "http://127.0.0.1:$PPORT/" > "$TMP/wrk.pm2" 2>&1 &
W=$!
sleep 1.5
t0=$(now)
timeout 60 "$PM2" reload web > "$TMP/pm2.reload" 2>&1 && \
    p_reload=$(awk -v a="$t0" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}') || p_reload=failed
wait "$W"
read -r p_total p_err p_non <<< "$(wrk_sum "$TMP/wrk.pm2")"

echo "PM2 $PM2_VERSION (from npm, daemon pid $PM2D) vs drover hub (pid $HUB); node workers are the same app."
echo
echo "| | drover | PM2 |"
echo "|---|---:|---:|"
echo "| supervisor memory (RSS, MiB) | $d_rss | $p_rss |"
echo "| supervisor CPU while idle, 10 s (% of one core) | $d_cpu | $p_cpu |"
echo "| start: command to 4 workers listening (s) | $d_start | $p_start |"
echo "| reload: wall time (s; SIGHUP to \"reload done\" / \`pm2 reload\`) | $d_reload | $p_reload |"
echo "| reload under wrk -t2 -c32 -d8s: socket errors | $d_err | $p_err |"
echo "| reload under wrk -t2 -c32 -d8s: non-2xx responses | $d_non | $p_non |"
echo "| requests served during that wrk run | $d_total | $p_total |"
echo
awk -v d="$d_rss" -v p="$p_rss" 'BEGIN{ if (p>0) printf "drover hub memory is 1/%.0f of the PM2 daemon'"'"'s (target: at most 1/10).\n", p/d }'
awk -v d="$d_rss" -v p="$p_rss" 'BEGIN{exit !(d*10 > p)}' && echo "MISSED: drover hub RSS above 1/10 of PM2's"
[ "$d_err" = 0 ] && [ "$d_non" = 0 ] || echo "MISSED: drover reload lost requests"
echo

# Stop part 2's supervisors before the idle windows: only what they measure should run.
kill -TERM "$HUB" 2>/dev/null; wait "$HUB" 2>/dev/null
timeout 30 "$PM2" delete web > /dev/null 2>&1

# ---- 3. idle: the agent's cost, and the whole host, drover vs PM2 -------------------
"$PY" "$HERE/idle_bench.py" "$B" "$PM2" || status=1
exit $status
