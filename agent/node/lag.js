'use strict';
/*
 * lag.js — event-loop lag, heap and handles, sampled on unref'd timers.
 *
 * Lag comes from perf_hooks.monitorEventLoopDelay (resolution R = 10 ms): a
 * libuv timer inside Node that records, every R ms, the time since it last
 * fired. That time includes R itself, so R is subtracted from every value
 * (as Node's documentation explains for `resolution`): an idle loop shows
 * ~0.1 ms, a loop blocked 250 ms shows ~250 ms — "how late a periodic timer
 * fired", the meaning of the report's lag_* keys (proto/PROTOCOL.md).
 *
 * Per-window figures need the histogram emptied after each read, and
 * Histogram.reset() also forgets the span in progress (the next span is not
 * recorded: a 250 ms stall just after a reset would never show). So two
 * monitors take turns: every window W ms the idle one is reset and enabled,
 * and the busy one is read and disabled only after the new one has recorded
 * its first span (2R + 2 ms later). Every span is recorded by at least one
 * monitor; the windows overlap by about 2R, so a stall at that instant may
 * show in two consecutive reports, never in none.
 *
 * Each window is replayed into the C agent's lag histogram
 * (drover_lag_observe) as one value per sample, read back from the monitor
 * rank by rank (replay()); the agent's reporter then sends lag_mean /
 * lag_p99 / lag_max for exactly its own report interval (values up to
 * 6.25 % high, its histogram's bound). W = DROVER_INTERVAL_MS / 4, within
 * 50..250 ms (index.js).
 *
 * Custom metrics (the report's `m` map), refreshed once per report interval:
 *   heap_used_bytes, heap_total_bytes   v8.getHeapStatistics()
 *   active_handles                      process._getActiveHandles().length:
 *                                       handles keeping the loop alive
 *                                       (servers, sockets, ref'd timers…)
 */

const RESOLUTION_MS = 10;
const MAX_PAIRS = 256;

/*
 * Fills buf with (lag µs, repeat) pairs that stand for the samples of
 * histogram h (values in ns, R not yet subtracted); returns the number of
 * pairs (at most MAX_PAIRS). The monitor keeps no raw samples, but its
 * percentile(q) is the k-th smallest sample for q = 100·k/count (HDR, to 3
 * significant digits): one pair per rank, or, past MAX_PAIRS samples, one
 * per group of ranks valued at its middle rank; the top one is the
 * monitor's max. R is subtracted from each sample, which is clamped at 0
 * (a timer is never early by this measure). A window holds about W/R
 * samples (5..27): as many percentile() calls, of a few µs each.
 */
function replay(h, buf) {
  const count = h.count;
  if (!(count > 0)) return 0;
  const r = RESOLUTION_MS * 1e6;
  const us = (ns) => Math.max(0, ns - r) / 1000;
  const rest = count - 1;           // every sample but the top one
  const n = Math.min(rest, MAX_PAIRS - 1);
  let done = 0;
  for (let i = 0; i < n; i++) {
    const upto = Math.round((rest * (i + 1)) / n);
    const k = upto - done;
    const mid = Math.max(1, Math.round((done + 1 + upto) / 2));
    const v = us(h.percentile((100 * mid) / count));
    buf[2 * i] = v;
    buf[2 * i + 1] = k;
    done = upto;
  }
  buf[2 * n] = us(h.max);
  buf[2 * n + 1] = 1;
  return n + 1;
}

/*
 * Starts lag sampling. Returns the part's handle: { tick() }, which
 * index.js calls every window (state.cfg.windowMs).
 */
function install(state) {
  const { addon } = state;
  const { monitorEventLoopDelay } = require('perf_hooks');
  const v8 = require('v8');
  const mons = [
    monitorEventLoopDelay({ resolution: RESOLUTION_MS }),
    monitorEventLoopDelay({ resolution: RESOLUTION_MS }),
  ];
  const buf = new Float64Array(2 * MAX_PAIRS);
  let cur = 0;
  let switching = false;
  let checks = 0;
  mons[cur].enable();

  /* Reads and disables the busy monitor once the new one has recorded a span. */
  function handover() {
    try {
      const next = mons[cur ^ 1];
      if (next.count === 0 && ++checks < 50) {
        setTimeout(handover, RESOLUTION_MS).unref();
        return;
      }
      const old = mons[cur];
      old.disable();
      const n = replay(old, buf);
      if (n > 0) addon.lag(buf, n);
      old.reset();
      cur ^= 1;
    } catch (_) { /* never throw into the app */ }
    switching = false;
  }

  /* Refreshes the custom metrics. */
  function metrics() {
    const hs = v8.getHeapStatistics();
    addon.metric('heap_used_bytes', hs.used_heap_size);
    addon.metric('heap_total_bytes', hs.total_heap_size);
    const handles = typeof process._getActiveHandles === 'function'
      ? process._getActiveHandles().length
      : process.getActiveResourcesInfo().length;
    addon.metric('active_handles', handles);
  }

  // metrics once per report interval (process._getActiveHandles() builds an array)
  const ticksPerMetrics = Math.max(1, Math.round(state.cfg.intervalMs / state.cfg.windowMs));
  let ticks = 0;

  /* Every window (index.js's timer): start the handover; every interval, refresh the metrics. */
  function tick() {
    if (!switching) {
      switching = true;
      checks = 0;
      const next = mons[cur ^ 1];
      next.reset();
      next.enable();
      setTimeout(handover, 2 * RESOLUTION_MS + 2).unref();
    }
    if (++ticks >= ticksPerMetrics) {
      ticks = 0;
      metrics();
    }
  }

  metrics();
  return { tick };
}

module.exports = { install, replay };
