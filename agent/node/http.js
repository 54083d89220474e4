'use strict';
/*
 * http.js — HTTP request accounting and the SIGTERM drain.
 *
 * Accounting uses the http server's diagnostics_channel events (Node >= 18.7
 * and 16.17), not patching: `http.server.request.start` (a request's head was
 * parsed; counted in flight) and `http.server.response.finish` (its response
 * was handed to the OS; counted as a request, an error when the status is
 * 5xx, latency = the time between the two). A request whose connection is
 * lost before the response finishes gets no finish event: a sweep every
 * window (index.js's timer) counts it as done (not an error) once its
 * response is destroyed, so `inflight` does not leak. Upgrade requests
 * (WebSocket) are not announced by Node on these channels and are not
 * counted.
 *
 * Drain, on SIGTERM, unless the application has a SIGTERM listener of its
 * own (then the application decides, and the agent does nothing; listeners
 * of the signal-exit package do not count, see appHandlesSigterm):
 *   1. readiness goes false;
 *   2. every server that listened stops accepting (its listening socket is
 *      closed — under drover only this process's descriptor of the shared
 *      socket: the hub and the other workers keep accepting on it). For
 *      http servers this is net.Server's close: Node's http close() would
 *      also destroy every idle keep-alive connection at once, which cuts a
 *      request a client is sending on one at that very moment;
 *   3. requests in flight finish; each response not yet started, and the
 *      response to any request arriving later on a kept-alive connection,
 *      says `Connection: close`, and Node closes the connection after it;
 *   4. connections still idle DROVER_DRAIN_TIMEOUT_MS (default 10000) after
 *      SIGTERM are closed (Node's closeIdleConnections), and from then on the
 *      agent waits only for the HTTP requests in flight (connections of
 *      plain net servers are not waited for past this point);
 *   5. when every server has closed (or, after the timeout, no request is
 *      in flight), the agent sends `bye`, removes its SIGTERM listener and
 *      sends SIGTERM to its process again: the process ends as it would
 *      have without the agent (killed by SIGTERM, signal-exit hooks run),
 *      only later and with nothing cut. process.exit() is never called.
 * A second SIGTERM during the drain ends the process at once the same way.
 */

const { performance } = require('perf_hooks');

const kStart = Symbol('drover.requestStart');

/* Latencies buffered between flushes; a full buffer is flushed at once. */
const BATCH = 1024;

/*
 * True when SIGTERM listeners other than ours (self) belong to the app.
 * Listeners of signal-exit (v3 and v4, a dependency of many packages) do not
 * count: each of them acts only when the listeners on the signal are all
 * signal-exit's (its emitters' `count`), and otherwise does nothing — so if
 * they counted, the agent and signal-exit would each leave SIGTERM to the
 * other and the process would ignore it.
 */
function appHandlesSigterm(self) {
  let passive = 0;
  try {
    const v3 = process.__signal_exit_emitter__;
    if (v3 && typeof v3.count === 'number') passive += v3.count;
    const v4 = globalThis[Symbol.for('signal-exit emitter')];
    if (v4 && v4 !== v3 && typeof v4.count === 'number') passive += v4.count;
  } catch (_) { /* not there */ }
  const others = process.listeners('SIGTERM').filter((l) => l !== self).length;
  return others > passive;
}

/*
 * Subscribes to the http server channels. Returns the part's handle:
 * { tick() (every window: releases requests whose connection died and hands
 * the counts to the C agent), flush(), installDrain(), inflight }.
 *
 * The hot path stays in JavaScript: each event only bumps a counter or
 * stores a latency in a Float64Array, and one addon call per window
 * (requests()) applies the batch — two N-API calls per request saved.
 * Counters therefore reach the C agent up to one window (<= 250 ms) late,
 * or one report interval after an idle spell (index.js's timer).
 */
function install(state) {
  const { addon, debug } = state;
  const dc = require('diagnostics_channel');
  const inflight = new Set();           // ServerResponse objects counted in flight
  const done = new Float64Array(BATCH); // finished: latency µs, or -(µs)-1 when 5xx
  let ndone = 0;
  let begun = 0;                        // started since the last flush
  let busySince = false;                // requests came in the window before the last tick
  let onIdle = null;                    // drain: called when inflight empties

  /* Hands the buffered request events to the C agent. */
  function flush() {
    try {
      if (begun === 0 && ndone === 0) return;
      const b = begun;
      const n = ndone;
      begun = 0;
      ndone = 0;
      addon.requests(b, done, n);
    } catch (_) { /* never throw into the app */ }
  }

  /* Records one finished request (latency in ms) in the batch. */
  function record(ms, failed) {
    const us = ms > 0 ? ms * 1000 : 0;
    done[ndone++] = failed ? -us - 1 : us;
    if (ndone === BATCH) flush();
  }

  /* Channel `http.server.request.start`: one more request in flight. */
  function onStart(msg) {
    try {
      if (begun === 0 && ndone === 0 && inflight.size === 0) state.kick();
      const res = msg.response;
      res[kStart] = performance.now();
      inflight.add(res);
      begun++;
      if (state.draining) res.shouldKeepAlive = false;
    } catch (_) { /* never throw into the app */ }
  }

  /* Channel `http.server.response.finish`: the request is done; 5xx is an error. */
  function onFinish(msg) {
    try {
      const res = msg.response;
      const t0 = res[kStart];
      if (t0 === undefined) return;
      res[kStart] = undefined;
      inflight.delete(res);
      record(performance.now() - t0, res.statusCode >= 500);
      if (onIdle && inflight.size === 0) onIdle();
    } catch (_) { /* never throw into the app */ }
  }

  /* Releases requests whose response was destroyed before it finished (client gone). */
  function sweep() {
    try {
      if (inflight.size === 0) return;
      const now = performance.now();
      for (const res of inflight) {
        if (!res.destroyed) continue;
        const t0 = res[kStart];
        res[kStart] = undefined;
        inflight.delete(res);
        record(t0 === undefined ? 0 : now - t0, false);
      }
      if (onIdle && inflight.size === 0) onIdle();
    } catch (_) { /* never throw into the app */ }
  }

  if (typeof dc.subscribe === 'function') {
    dc.subscribe('http.server.request.start', onStart);
    dc.subscribe('http.server.response.finish', onFinish);
  } else {
    dc.channel('http.server.request.start').subscribe(onStart);
    dc.channel('http.server.response.finish').subscribe(onFinish);
  }

  /*
   * Stops srv accepting without touching its connections: for an http
   * server, its own close() (which also stops its header-timeout checks)
   * with closeIdleConnections shadowed for the call, since that would cut
   * idle keep-alive connections (see the header).
   */
  function stopAccepting(srv) {
    if (typeof srv.closeIdleConnections !== 'function') {
      srv.close();
      return;
    }
    const own = Object.prototype.hasOwnProperty.call(srv, 'closeIdleConnections');
    const saved = srv.closeIdleConnections;
    srv.closeIdleConnections = function closeIdleConnections() {};
    try {
      srv.close();
    } finally {
      if (own) srv.closeIdleConnections = saved;
      else delete srv.closeIdleConnections;
    }
  }

  /* Installs the SIGTERM listener that drains (see the header). */
  function installDrain() {
    const listen = state.listen;
    let finished = false;
    let timer = null;

    /*
     * Ends the drain: bye, then SIGTERM again once our listener is gone —
     * with no other listener the default action ends the process; a
     * signal-exit listener (see appHandlesSigterm) now finds itself alone,
     * runs its exit hooks and re-raises SIGTERM itself.
     */
    function finish(why) {
      if (finished) return;
      finished = true;
      try {
        if (timer) clearTimeout(timer);
        debug(`drain done (${why}): exiting by SIGTERM`);
        state.stopAgent();
      } catch (_) { /* keep going: the process must still end */ }
      try {
        process.removeListener('SIGTERM', onSigterm);
        process.kill(process.pid, 'SIGTERM');
      } catch (_) { /* never throw into the app */ }
    }

    /* The drain timeout: close idle connections, then wait only for requests in flight. */
    function onTimeout() {
      try {
        const servers = listen ? listen.servers : new Set();
        for (const srv of servers) {
          if (typeof srv.closeIdleConnections === 'function') srv.closeIdleConnections();
        }
        debug(`drain timeout: idle connections closed, ${inflight.size} request(s) in flight`);
        sweep();
        if (inflight.size === 0) finish('timeout');
        else onIdle = () => finish('timeout, requests done');
      } catch (_) {
        finish('error');
      }
    }

    /* SIGTERM: drain unless the app listens for SIGTERM itself. */
    function onSigterm() {
      if (appHandlesSigterm(onSigterm)) return;              // the app decides
      if (state.draining) {
        finish('second SIGTERM');
        return;
      }
      try {
        state.draining = true;
        if (listen) listen.update();
        else addon.ready(false);
        const servers = listen ? [...listen.servers] : [];
        debug(`SIGTERM: draining ${servers.length} server(s), ${inflight.size} request(s) in flight`);
        for (const res of inflight) {
          if (!res.headersSent) res.shouldKeepAlive = false;
        }
        let open = 0;
        for (const srv of servers) {
          open++;
          srv.once('close', () => {
            if (--open === 0) finish('servers closed');
          });
          try {
            stopAccepting(srv);
          } catch (e) {
            debug(`close failed: ${e && e.message}`);
          }
        }
        if (open === 0) {
          setImmediate(() => finish('no server'));
          return;
        }
        timer = setTimeout(onTimeout, state.cfg.drainTimeoutMs);
        timer.unref();
      } catch (e) {
        debug(`drain failed: ${e && e.message}`);
        finish('error');
      }
    }

    process.on('SIGTERM', onSigterm);
    return null;
  }

  /* Every window (index.js's timer): release dead requests, hand the batch over. */
  function tick() {
    busySince = begun > 0 || ndone > 0;
    sweep();
    flush();
  }

  /* True when requests came since the last tick or are in flight: index.js ticks every window then. */
  function busy() {
    return busySince || inflight.size > 0;
  }

  return { tick, flush, installDrain, inflight, busy };
}

module.exports = { install };
