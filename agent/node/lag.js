'use strict';
/*
 * lag.js — event-loop lag, heap and handles.
 *
 * Lag is measured by the addon on the loop itself (addon.c, lagStart): once
 * per turn of the event loop, the time the turn spent running callbacks
 * rather than waiting in the poll is one sample for the C agent's lag
 * histogram — the longest a timer or I/O event due at the start of the turn
 * waited. A 200 ms block is one 200 ms sample; an idle loop takes no turns
 * and costs nothing. (Earlier versions used perf_hooks.monitorEventLoopDelay,
 * whose 10 ms timer woke every idle worker 100 times a second: ~0.9 % of a
 * core per idle worker.) The C agent's reporter sends the histogram
 * cumulatively with the max since the previous report (PROTOCOL.md §1).
 *
 * Custom metrics (the report's `m` map), refreshed at most once per report
 * interval from index.js's timer (every 10 s while the app is idle):
 *   heap_used_bytes, heap_total_bytes   v8.getHeapStatistics()
 *   active_handles                      process._getActiveHandles().length:
 *                                       handles keeping the loop alive
 *                                       (servers, sockets, ref'd timers…)
 */

/*
 * Starts lag sampling. Returns the part's handle: { tick() }, which
 * index.js calls from its timer (every window while busy, every interval
 * while idle).
 */
function install(state) {
  const { addon } = state;
  const v8 = require('v8');
  if (!addon.lagStart()) state.debug('lag not measured: no libuv loop for the prepare handle');

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

  // process._getActiveHandles() builds an array: at most once per report interval
  let last = Date.now();
  function tick() {
    const now = Date.now();
    if (now - last >= state.cfg.intervalMs * 0.9) {
      last = now;
      metrics();
    }
  }

  metrics();
  return { tick };
}

module.exports = { install };
