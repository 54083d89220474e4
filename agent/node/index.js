'use strict';
/*
 * drover Node.js agent — entry point.
 *
 * Load it before the application, with no code change:
 *     node --require /path/to/drover/agent/node app.js      (or NODE_OPTIONS=--require=...)
 * `drover run` does this itself for `node` commands. It may also be required
 * by the application (`require('drover-agent')`), which returns the same
 * small API (see the bottom of this file and README.md).
 *
 * What it does, once per process (main thread only):
 *   - starts the C agent (drover_agent.node): pid, CPU, RSS, counters, sent to
 *     the hub every DROVER_INTERVAL_MS by the agent's own thread;
 *   - counts HTTP requests, 5xx errors and latency from the http server's
 *     diagnostics_channel events (http.js);
 *   - measures event-loop lag once per turn of the loop (no timer: an idle
 *     worker costs nothing), and heap and active handles (lag.js);
 *   - under `drover run --listen`, serves the app's listen() on the drover
 *     port from the inherited socket at fd 3, and reports readiness when a
 *     server listens (listen.js);
 *   - on SIGTERM, unless the app handles SIGTERM itself, drains the app's
 *     servers and then lets the process end (http.js).
 *
 * It is a guest: every entry from the application or from Node into agent
 * code is wrapped so that nothing is ever thrown into the app, it never
 * prints (unless DROVER_DEBUG=1), its timers are unref'd, and it stays
 * silent when no hub is running.
 */

const GLOBAL_KEY = Symbol.for('drover.agent');

/* Environment variable names the agent reads (documented in README.md). */
const ENV = {
  agent: 'DROVER_AGENT',
  debug: 'DROVER_DEBUG',
  interval: 'DROVER_INTERVAL_MS',
  drain: 'DROVER_DRAIN',
  drainTimeout: 'DROVER_DRAIN_TIMEOUT_MS',
  readyFallback: 'DROVER_READY_FALLBACK_MS',
};

/* Returns an API object whose calls do nothing: used where the agent does not run. */
function inactiveApi(reason) {
  return Object.freeze({
    active: false,
    reason,
    version: null,
    ready() {},
    metric() { return false; },
    log() {},
    stop() {},
  });
}

/* True when DROVER_AGENT asks for the agent to be off (as the C agent reads it). */
function disabledByEnv(env) {
  const v = env[ENV.agent];
  return typeof v === 'string' && /^(0|false|no|off)$/i.test(v.trim());
}

/* Reads an integer environment variable in [min, max]; returns def when unset or invalid. */
function envInt(env, name, def, min, max) {
  const v = env[name];
  if (typeof v !== 'string' || !/^\d+$/.test(v.trim())) return def;
  const n = Number(v.trim());
  return n >= min && n <= max ? n : def;
}

/* Returns a debug printer (one line to stderr per call) when DROVER_DEBUG is on, else a no-op. */
function makeDebug(env) {
  const v = env[ENV.debug];
  if (!v || /^(0|false|no|off)$/i.test(v)) return () => {};
  return (msg) => {
    try {
      process.stderr.write(`drover-agent[${process.pid}]: ${msg}\n`);
    } catch (_) { /* never throw into the app */ }
  };
}

/*
 * Loads drover_agent.node: beside this file (build/node/, an installed copy,
 * or an npm install), else from the build tree of the checkout this file
 * lives in (agent/node/ → ../../build/node/). Returns the addon, or throws.
 */
function loadAddon() {
  const path = require('path');
  const candidates = [
    path.join(__dirname, 'drover_agent.node'),
    path.join(__dirname, '..', '..', 'build', 'node', 'drover_agent.node'),
  ];
  let first = null;
  for (const file of candidates) {
    try {
      return require(file);
    } catch (e) {
      if (!first) first = e;
    }
  }
  throw first;
}

/*
 * Starts the agent in this process and returns its API. Called once per
 * process; any failure leaves the application untouched and returns an
 * inactive API.
 */
function start() {
  const env = process.env;
  const debug = makeDebug(env);
  let addon;
  try {
    addon = loadAddon();
  } catch (e) {
    debug(`agent off: cannot load drover_agent.node (${e && e.message}); build it with make or npm install`);
    return inactiveApi('addon');
  }

  const intervalMs = envInt(env, ENV.interval, 1000, 10, 3600000);
  const cfg = {
    intervalMs,
    /* The window: request batches are handed to the C agent this often while busy. */
    windowMs: Math.min(250, Math.max(50, Math.floor(intervalMs / 4))),
    drain: !/^(0|false|no|off)$/i.test(env[ENV.drain] || ''),
    drainTimeoutMs: envInt(env, ENV.drainTimeout, 10000, 0, 3600000),
    readyFallbackMs: envInt(env, ENV.readyFallback, 3000, 0, 3600000),
  };

  const rc = addon.start();
  if (rc < 0) debug(`reporting off: drover_start() failed (errno ${-rc}); check DROVER_* variables`);

  const state = {
    addon,
    cfg,
    debug,
    manualReady: false,    // the app called ready(): automatic readiness is off
    draining: false,
    stopped: false,
    flushers: [],          // called before `bye` so the final counters are complete
    kick() {},             // set below: wakes the parts' timer when work starts
    /* Flushes what the parts buffered, then sends `bye` (once). */
    stopAgent() {
      if (state.stopped) return;
      state.stopped = true;
      for (const f of state.flushers) {
        try {
          f();
        } catch (_) { /* never throw into the app */ }
      }
      addon.stop();
    },
  };

  const parts = [];
  /* Each part is optional: one failing to set up does not stop the others. */
  const tryPart = (name, fn) => {
    try {
      const p = fn();
      if (p) parts.push(p);
      return p;
    } catch (e) {
      debug(`${name} not set up: ${e && e.message}`);
      return null;
    }
  };

  const listen = tryPart('listen', () => require('./listen').install(state));
  state.listen = listen;
  const http = tryPart('http', () => require('./http').install(state));
  if (http) state.flushers.push(http.flush);
  tryPart('lag', () => require('./lag').install(state));

  /*
   * One unref'd timer drives every part's periodic work: every window
   * (<= 250 ms) while requests come or are in flight; while the app is idle,
   * every IDLE_TICK_MS (10 intervals, at most 10 s), so an idle worker's
   * JavaScript wakes once in 10 s (each wake-up costs ~0.02 % of a core at
   * 1 Hz). The first request after an idle spell kicks the timer back to the
   * window (state.kick), so no count waits for the long tick; heap and
   * handle metrics are up to one idle tick old while nothing happens.
   */
  const idleTickMs = Math.max(cfg.intervalMs, Math.min(10000, 10 * cfg.intervalMs));
  let timer = null;
  let idleMode = false;
  let ticks = 0;
  const schedule = () => {
    let busy = ticks++ === 0;           // the first tick comes after one interval (metrics after start-up)
    for (const p of parts) {
      try {
        if (typeof p.busy === 'function' && p.busy()) busy = true;
      } catch (_) { /* never throw into the app */ }
    }
    idleMode = !busy;
    timer = setTimeout(onTimer, ticks === 1 ? cfg.intervalMs : busy ? cfg.windowMs : idleTickMs);
    timer.unref();
  };
  function onTimer() {
    for (const p of parts) {
      if (typeof p.tick !== 'function') continue;
      try {
        p.tick();
      } catch (_) { /* never throw into the app */ }
    }
    schedule();
  }
  /* Called by a part when work starts: back to the short window if the timer is on its idle tick. */
  state.kick = () => {
    if (!idleMode || !timer) return;
    idleMode = false;
    clearTimeout(timer);
    timer = setTimeout(onTimer, cfg.windowMs);
    timer.unref();
  };
  schedule();

  /* Exit: say bye with the final counters (the C agent never blocks doing it). */
  try {
    process.on('exit', () => {
      try {
        state.stopAgent();
      } catch (_) { /* never throw into the app */ }
    });
  } catch (_) { /* never throw into the app */ }

  if (cfg.drain && http) tryPart('drain', () => http.installDrain());

  return Object.freeze({
    active: rc >= 0,
    reason: rc >= 0 ? null : 'env',
    version: addon.version,
    /* Sets readiness by hand; from then on the agent no longer sets it from listening servers. */
    ready(flag) {
      try {
        state.manualReady = true;
        addon.ready(flag === undefined ? true : !!flag);
      } catch (_) { /* never throw into the app */ }
    },
    /* Sets custom metric name (1..47 bytes) to a number; returns true when stored. */
    metric(name, value) {
      try {
        return addon.metric(String(name), Number(value)) === 0;
      } catch (_) {
        return false;
      }
    },
    /* Sends one log line to the hub (level: "info", "warn", "error"…). */
    log(level, msg) {
      try {
        addon.log(String(level || 'info'), String(msg));
      } catch (_) { /* never throw into the app */ }
    },
    /* Sends `bye` and stops reporting (also done at exit). */
    stop() {
      try {
        state.stopAgent();
      } catch (_) { /* never throw into the app */ }
    },
  });
}

/*
 * Once per process: the first copy loaded (preloaded with --require, or
 * required by the app, from whatever path) starts the agent and publishes
 * its API on `process` under a global symbol; any later copy — a second
 * path, a nested preload, npm's and drover's copies together — returns that
 * same API. worker_threads never start it: the process reports once, from
 * its main thread.
 */
function main() {
  let isMainThread = true;
  try {
    isMainThread = require('worker_threads').isMainThread;
  } catch (_) { /* very old Node: no worker_threads */ }
  if (!isMainThread) return inactiveApi('worker_thread');
  if (process[GLOBAL_KEY]) return process[GLOBAL_KEY];
  let api;
  if (disabledByEnv(process.env)) {
    api = inactiveApi('disabled');
  } else {
    try {
      api = start();
    } catch (e) {
      makeDebug(process.env)(`agent off: ${e && e.stack}`);
      api = inactiveApi('error');
    }
  }
  try {
    Object.defineProperty(process, GLOBAL_KEY, { value: api, enumerable: false, configurable: false });
  } catch (_) { /* never throw into the app */ }
  return api;
}

module.exports = main();
