#!/bin/bash
# bench/console_bench.sh BUILD_DIR — the console's footprint, as a markdown table.
#
#   1. `drover monit` attached to `drover run -i 16 --headless` (examples/worker),
#      in a detached tmux session (120x40): CPU % and RSS over MEASURE_S seconds.
#   2. The same against `drover monit --headless` fed by 1000 simulated reporters
#      at 1 Hz (BUILD_DIR/bench/ingest_sender SOCK 1000 SECONDS 1), with keys sent
#      meanwhile (sort, select, Ctrl-L repaint); redraw times from
#      DROVER_CONSOLE_STATS (written by the console when it quits).
#   3. `pm2 monit` for 16 instances of a trivial node app, side by side: pm2 is
#      installed from npm into a temporary directory (PM2_HOME there too), then
#      `pm2 kill`. Skipped with a note when npm or node is missing or the
#      install fails.
#
# Targets printed beside: console <= 1/10 of pm2 monit's CPU and memory; a
# full redraw of 1000 workers <= 5 ms. Takes about 1-2 minutes (bounded under
# 3). Everything started is killed by pid (tmux servers by their own socket).
# Exit status: 0, or 1 when a measurement could not be made.
set -u
B=$(cd "${1:?usage: bench/console_bench.sh BUILD_DIR}" && pwd)
DROVER=$B/drover
WORKER=$B/examples/worker
SENDER=$B/bench/ingest_sender
MEASURE_S=${MEASURE_S:-10}
TMUX_BIN=$(command -v tmux || true)
TMP=$(mktemp -d /tmp/drv-cbench-XXXXXX)
TMUX_SOCKS=()
PIDS=()
PM2=
CLK=$(getconf CLK_TCK)
status=0

for f in "$DROVER" "$WORKER" "$SENDER"; do
    [ -x "$f" ] || { echo "console_bench: $f is missing; run 'make' and 'make $B/bench/ingest_sender'" >&2; exit 1; }
done
[ -n "$TMUX_BIN" ] || { echo "console_bench: tmux is missing (apt-get install tmux)" >&2; exit 1; }

# Kills everything this script started: tmux servers, then processes by pid.
cleanup() {
    for s in "${TMUX_SOCKS[@]}"; do
        "$TMUX_BIN" -S "$TMP/tmux-$s" kill-server 2>/dev/null
        rm -f "$TMP/tmux-$s"
    done
    if [ -n "$PM2" ]; then
        PM2_HOME=$TMP/pm2home timeout 20 "$PM2" kill >/dev/null 2>&1
        if [ -f "$TMP/pm2home/pm2.pid" ]; then
            kill -9 "$(cat "$TMP/pm2home/pm2.pid")" 2>/dev/null
        fi
    fi
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    for _ in $(seq 50); do
        alive=0
        for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    PIDS=()
    TMUX_SOCKS=()
    PM2=
}
trap 'cleanup; rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM

PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
# cpu_ns PID: CPU time so far, ns, from the process CPU clock (procstat.py).
cpu_ns() { "$PY" "$(dirname "$0")/procstat.py" cpu_ns "$1" 2>/dev/null; }
# rss_kib PID
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null; }

# measure PID SECONDS [KEYS_FN]: prints "CPU% RSS_MiB" over SECONDS; calls KEYS_FN every second.
measure() {
    local pid=$1 secs=$2 fn=${3:-} t0 t1 c0 c1
    c0=$(cpu_ns "$pid"); t0=$(date +%s.%N)
    for _ in $(seq "$secs"); do
        sleep 1
        [ -n "$fn" ] && $fn
    done
    c1=$(cpu_ns "$pid"); t1=$(date +%s.%N)
    if [ -z "$c0" ] || [ -z "$c1" ]; then echo "- -"; return 1; fi
    awk -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" -v rss="$(rss_kib "$pid")" \
        'BEGIN { printf "%.2f %.1f\n", (c1 - c0) / 1e9 / (t1 - t0) * 100, rss / 1024 }'
}

# tmux_open NAME CMD [VAR=VALUE...]: a detached 120x40 session running CMD (exec'd); prints the pane pid.
# Runs in $(...): the caller records NAME in TMUX_SOCKS first, so cleanup finds the server.
tmux_open() {
    local name=$1 cmd=$2; shift 2
    local envs=(-e LANG=C.UTF-8 -e TERM=xterm-256color)
    for kv in "$@"; do envs+=(-e "$kv"); done
    LANG=C.UTF-8 "$TMUX_BIN" -S "$TMP/tmux-$name" -f /dev/null new-session -d -x 120 -y 40 "${envs[@]}" "exec $cmd" || return 1
    "$TMUX_BIN" -S "$TMP/tmux-$name" display-message -p '#{pane_pid}'
}

# wait_screen NAME TEXT SECONDS: polls capture-pane until TEXT shows.
wait_screen() {
    for _ in $(seq $(( $3 * 10 ))); do
        "$TMUX_BIN" -S "$TMP/tmux-$1" capture-pane -p 2>/dev/null | grep -qF -- "$2" && return 0
        sleep 0.1
    done
    return 1
}

# wait_file PATH SECONDS
wait_file() {
    for _ in $(seq $(( $2 * 10 ))); do [ -s "$1" ] && return 0; sleep 0.1; done
    return 1
}

# ms_per_run N CMD...: mean wall time of N runs of CMD, in ms
ms_per_run() {
    local n=$1; shift
    local t0 t1
    t0=$(date +%s%N)
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1; done
    t1=$(date +%s%N)
    awk -v a="$t0" -v b="$t1" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / n / 1e6 }'
}

# ---- 1. 16 workers -----------------------------------------------------------
D1=$TMP/s16; mkdir -m 700 "$D1"
"$DROVER" run --headless --socket-dir "$D1" --log-dir "$TMP/logs16" -i 16 -n web -- "$WORKER" --rate 50 \
    >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$D1/ctl.sock" ] && break; sleep 0.1; done
sleep 1
TMUX_SOCKS+=(cb16)
C16=$(tmux_open cb16 "$DROVER monit --socket-dir $D1" DROVER_CONSOLE_STATS="$TMP/stats16")
if [ -n "$C16" ] && wait_screen cb16 "16/16 online" 15; then
    sleep 1
    read -r cpu16 rss16 < <(measure "$C16" "$MEASURE_S")
    "$TMUX_BIN" -S "$TMP/tmux-cb16" send-keys q
    wait_file "$TMP/stats16" 5
    ls16=$(ms_per_run 20 "$DROVER" ls --socket-dir "$D1")
    lsjson16=$(ms_per_run 20 "$DROVER" ls --json --socket-dir "$D1")
else
    echo "console_bench: the console did not show 16 online workers" >&2
    cpu16=-; rss16=-; status=1
fi
cleanup

# ---- 2. 1000 simulated reporters at 1 Hz -----------------------------------------
D2=$TMP/s1000; mkdir -m 700 "$D2"
SEND_S=$(( MEASURE_S + 40 ))
"$DROVER" monit --headless --socket-dir "$D2" >/dev/null 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$D2/agent.sock" ] && [ -S "$D2/ctl.sock" ] && break; sleep 0.1; done
"$SENDER" "$D2/agent.sock" 1000 "$SEND_S" 1 >/dev/null 2>&1 &
PIDS+=($!)
# every reporter is seen after a report or two
workers_seen() { "$DROVER" ls --json --socket-dir "$D2" 2>/dev/null | grep -o '"type":"worker"' | wc -l; }
for _ in $(seq 200); do [ "$(workers_seen)" -ge 1000 ] && break; sleep 0.1; done
n1000=$(workers_seen)
TMUX_SOCKS+=(cb1k)
C1K=$(tmux_open cb1k "$DROVER monit --socket-dir $D2" DROVER_CONSOLE_STATS="$TMP/stats1k")
keys_1k() {
    "$TMUX_BIN" -S "$TMP/tmux-cb1k" send-keys s j j j C-l 2>/dev/null
}
if [ -n "$C1K" ] && wait_screen cb1k "bench" 20; then
    sleep 2
    read -r cpu1k rss1k < <(measure "$C1K" "$MEASURE_S" keys_1k)
    "$TMUX_BIN" -S "$TMP/tmux-cb1k" send-keys q
    wait_file "$TMP/stats1k" 5
else
    echo "console_bench: the console did not show the 1000 reporters" >&2
    cpu1k=-; rss1k=-; status=1
fi
cleanup

# stat_field FILE KEY: the value of KEY in the console's "key=value ..." stats line
stat_field() { awk -v k="$2" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }' "$1" 2>/dev/null; }
redraws=$(stat_field "$TMP/stats1k" redraws)
mean1k=$(stat_field "$TMP/stats1k" mean_ms)
max1k=$(stat_field "$TMP/stats1k" max_ms)
statw=$(stat_field "$TMP/stats1k" workers)
build1k=$(stat_field "$TMP/stats1k" build_max_ms)
build16=$(stat_field "$TMP/stats16" build_max_ms)
mean16=$(stat_field "$TMP/stats16" mean_ms)
max16=$(stat_field "$TMP/stats16" max_ms)

# ---- 3. pm2 monit, 16 instances ------------------------------------------------
pm2cpu=-; pm2rss=-; pm2note=
if command -v npm >/dev/null && command -v node >/dev/null; then
    if timeout 120 npm install --prefix "$TMP/pm2" --no-audit --no-fund --loglevel=error pm2 >/dev/null 2>&1 &&
       [ -x "$TMP/pm2/node_modules/.bin/pm2" ]; then
        PM2=$TMP/pm2/node_modules/.bin/pm2
        export PM2_HOME=$TMP/pm2home
        cat >"$TMP/app.js" <<'EOF'
const http = require('http');
http.createServer((req, res) => res.end('ok\n')).listen(0);
setInterval(() => {}, 1000);
EOF
        if timeout 60 "$PM2" start "$TMP/app.js" -i 16 --name app >/dev/null 2>&1; then
            sleep 3
            TMUX_SOCKS+=(cbpm2)
            PMON=$(tmux_open cbpm2 "$PM2 monit" PM2_HOME="$PM2_HOME")
            if [ -n "$PMON" ] && wait_screen cbpm2 "app" 20; then
                sleep 2
                read -r pm2cpu pm2rss < <(measure "$PMON" "$MEASURE_S")
                jlist16=$(ms_per_run 5 "$PM2" jlist)
            else
                pm2note="pm2 monit did not start"
            fi
        else
            pm2note="pm2 start failed"
        fi
        cleanup
        unset PM2_HOME
        pm2ver=$(node -p "require('$TMP/pm2/node_modules/pm2/package.json').version" 2>/dev/null)
    else
        pm2note="npm install pm2 failed"
    fi
else
    pm2note="node/npm not installed"
fi

# ---- table ---------------------------------------------------------------------
# verdict VALUE LIMIT: "ok" when VALUE <= LIMIT, "MISSED" otherwise, "-" when unknown
verdict() {
    awk -v v="${1#<}" -v l="$2" 'BEGIN { if (v == "-" || v == "" || l == "-" || l == "") print "-";
                                     else if (v + 0 <= l + 0) print "ok"; else print "MISSED" }'
}
tenth() { awk -v v="$1" 'BEGIN { if (v == "-" || v == "") print "-"; else printf "%.2f", v / 10 }'; }

echo "## Console footprint ($(nproc) CPUs, ${MEASURE_S} s windows, 120x40 tmux)"
echo
echo "| what | CPU % of a core | RSS MiB | target | verdict |"
echo "|---|---:|---:|---|---|"
echo "| drover console, 16 workers | $cpu16 | $rss16 | <= 1/10 of pm2 monit: CPU <= $(tenth "$pm2cpu"), RSS <= $(tenth "$pm2rss") | CPU $(verdict "$cpu16" "$(tenth "$pm2cpu")"), RSS $(verdict "$rss16" "$(tenth "$pm2rss")") |"
echo "| drover console, ${n1000:-?} reporters at 1 Hz | $cpu1k | $rss1k | - | - |"
echo "| pm2 monit${pm2ver:+ $pm2ver}, 16 instances | $pm2cpu | $pm2rss | reference | ${pm2note:-measured} |"
echo
echo "| full redraw (model to screen + refresh) | redraws | mean ms | max ms | max ms before refresh | target | verdict |"
echo "|---|---:|---:|---:|---:|---|---|"
echo "| 16 workers | $(stat_field "$TMP/stats16" redraws) | ${mean16:--} | ${max16:--} | ${build16:--} | - | - |"
echo "| ${statw:-?} workers, keys (s, j, Ctrl-L repaint) every second | ${redraws:--} | ${mean1k:--} | ${max1k:--} | ${build1k:--} | <= 5 ms | $(verdict "${max1k:--}" 5) |"

echo
echo "| listing 16 workers | mean ms per run | target |"
echo "|---|---:|---|"
echo "| drover ls | ${ls16:--} | <= 10 ms |"
echo "| drover ls --json | ${lsjson16:--} | <= 10 ms |"
echo "| pm2 jlist${pm2ver:+ $pm2ver} | ${jlist16:--} | reference |"
exit $status
