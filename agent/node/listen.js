'use strict';
/*
 * listen.js — serving the hub's socket, and readiness.
 *
 * What is intercepted, exactly (README.md, "What the agent changes"):
 * `net.Server.prototype.listen` (so also http/https servers) is wrapped. The
 * wrapper changes a call only when ALL of these hold:
 *   1. LISTEN_PID equals this process's pid and LISTEN_FDS >= 1 (the
 *      systemd socket-activation variables `drover run --listen` sets for
 *      the process it starts — not for its children, whose pid differs);
 *   2. fd 3 is a listening stream socket (checked with getsockname and
 *      SO_ACCEPTCONN; in a cluster worker, fd 3 is the IPC pipe: no match);
 *   3. the call asks for a TCP port equal to that socket's port (and to the
 *      port of DROVER_LISTEN when the hub sets it) — listen(port),
 *      listen(port, host), listen({port, host}) with or without backlog and
 *      callback, the host being ignored — or, for `--listen unix:PATH`, for
 *      that same path;
 *   4. no earlier call was changed (only the first matching listen is).
 * Then the call becomes listen({fd: 3}) with the same backlog, signal and
 * callback: the server accepts on the socket the hub opened, which every
 * worker shares, and server.address() reports that socket's address. Right
 * after, LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES are deleted from
 * process.env and fd 3 is marked close-on-exec, so programs the worker
 * starts inherit neither. Every other call is passed through untouched.
 *
 * Readiness (the `ready` key): under `drover run --listen` (conditions 1-2
 * hold), the worker is ready while a server of this process listens on the
 * hub's socket; otherwise while any server listens. A process that has not
 * called listen() at all DROVER_READY_FALLBACK_MS (default 3000, 0 = never)
 * after start, with no hub socket to serve, is taken to be a worker without
 * a server and reported ready. While draining, it is not ready.
 */

const net = require('net');

const LISTEN_FD = 3;

/*
 * Parses a --listen spec as DROVER_LISTEN carries it ("18080",
 * "127.0.0.1:18080", "[::1]:18080", "unix:/path"). Returns {port} or
 * {path}, or null when it cannot be read.
 */
function parseSpec(spec) {
  if (typeof spec !== 'string' || spec === '') return null;
  if (spec.startsWith('unix:')) return spec.length > 5 ? { path: spec.slice(5) } : null;
  const m = /^(?:.*:)?(\d{1,5})$/.exec(spec);
  if (!m) return null;
  const port = Number(m[1]);
  return port > 0 && port < 65536 ? { port } : null;
}

/* Returns a port number for a listen() port argument (number or decimal string), else null. */
function portOf(v) {
  if (typeof v === 'number' && Number.isInteger(v)) return v;
  if (typeof v === 'string' && /^\s*\d{1,5}\s*$/.test(v)) return Number(v);
  return null;
}

/*
 * Reads what a listen() call asks for, following Node's argument rules
 * (net.Server.listen). Returns {port, backlog, signal} or {path, backlog,
 * signal}, or null for anything else (a handle, an fd, no port, …).
 */
function requested(args) {
  const a0 = args[0];
  if (a0 !== null && typeof a0 === 'object') {
    if (a0.fd !== undefined || a0.handle !== undefined || a0._handle !== undefined) return null;
    const backlog = typeof a0.backlog === 'number' ? a0.backlog : undefined;
    if (typeof a0.path === 'string' && a0.path !== '') return { path: a0.path, backlog, signal: a0.signal };
    const port = portOf(a0.port);
    return port === null ? null : { port, backlog, signal: a0.signal };
  }
  if (typeof a0 === 'string' && portOf(a0) === null) {
    return a0 === '' ? null : { path: a0, backlog: typeof args[1] === 'number' ? args[1] : undefined };
  }
  const port = portOf(a0);
  if (port === null) return null;
  // (port, backlog) or (port, host, backlog)
  const backlog = typeof args[1] === 'number' ? args[1] : typeof args[2] === 'number' ? args[2] : undefined;
  return { port, backlog };
}

/*
 * Works out the socket to serve: fd 3 when conditions 1-2 of the header
 * hold, with its address from getsockname. Returns {port} or {path} plus
 * {fd}, or null. DROVER_LISTEN, when set, must agree with the socket.
 */
function findTarget(addon, env, debug) {
  const pid = Number(env.LISTEN_PID);
  const fds = Number(env.LISTEN_FDS);
  if (!(pid === process.pid && fds >= 1)) return null;
  const info = addon.socketInfo(LISTEN_FD);
  if (!info || !info.listening) {
    debug(`LISTEN_FDS set but fd ${LISTEN_FD} is not a listening socket: listen() left alone`);
    return null;
  }
  const target = info.family === 'unix' ? { path: info.path } : { port: info.port };
  if (target.path === '') return null;
  const spec = parseSpec(env.DROVER_LISTEN);
  if (spec && (spec.port !== target.port || spec.path !== target.path)) {
    debug(`DROVER_LISTEN=${env.DROVER_LISTEN} does not match fd ${LISTEN_FD} (${target.port || target.path}): listen() left alone`);
    return null;
  }
  return target;
}

/* True when listen() request req names the target socket. */
function matches(req, target) {
  if (!req || !target) return false;
  if (target.port !== undefined) return req.port === target.port;
  return req.path === target.path;
}

/*
 * True when server srv (listening) is bound where target is — for a server
 * the app itself put on fd 3 (listen({fd: 3})). A unix socket served from an
 * fd has no address in Node (address() is null), hence also `claimed`.
 */
function serves(srv, target) {
  let a;
  try {
    a = srv.address();
  } catch (_) {
    return false;
  }
  if (!a) return false;
  if (typeof a === 'string') return target.path !== undefined && a === target.path;
  return target.port !== undefined && a.port === target.port;
}

/*
 * Installs the listen() wrapper and readiness tracking. Returns the part's
 * handle: { servers (Set of servers that listened and are not closed),
 * update() (recomputes readiness) }.
 */
function install(state) {
  const { addon, cfg, debug } = state;
  const env = process.env;
  const target = findTarget(addon, env, debug);
  if (target) debug(`will serve listen(${target.port !== undefined ? target.port : target.path}) from fd ${LISTEN_FD}`);

  const servers = new Set();       // listening (or about to), not yet closed
  let claimed = null;              // the server whose listen() took fd 3
  let listenCalled = false;
  let fallbackReady = false;
  let lastReady = null;

  const part = { servers, target, update };

  /* Recomputes readiness and tells the agent when it changed. */
  function update() {
    try {
      if (state.manualReady && !state.draining) return;
      let ready;
      if (state.draining) {
        ready = false;
      } else if (target) {
        ready = false;
        for (const s of servers) if (s.listening && (s === claimed || serves(s, target))) { ready = true; break; }
      } else {
        ready = fallbackReady;
        for (const s of servers) if (s.listening) { ready = true; break; }
      }
      if (ready !== lastReady) {
        lastReady = ready;
        addon.ready(ready);
      }
    } catch (_) { /* never throw into the app */ }
  }

  /* Starts tracking srv: readiness follows its 'listening' and 'close' events. */
  function track(srv) {
    if (servers.has(srv)) return;
    servers.add(srv);
    srv.once('listening', update);
    srv.once('close', () => {
      servers.delete(srv);
      update();
    });
  }

  /* Called for each listen(): decides, without throwing, whether to serve fd 3 instead. */
  function rewrite(srv, args) {
    try {
      listenCalled = true;
      track(srv);
      if (claimed || !target) return null;
      const req = requested(args);
      if (!matches(req, target)) return null;
      claimed = srv;
      delete env.LISTEN_PID;
      delete env.LISTEN_FDS;
      delete env.LISTEN_FDNAMES;
      addon.cloexec(LISTEN_FD);
      const opts = { fd: LISTEN_FD };
      if (req.backlog !== undefined) opts.backlog = req.backlog;
      if (req.signal !== undefined) opts.signal = req.signal;
      const last = args[args.length - 1];
      debug(`listen(${req.port !== undefined ? req.port : req.path}) served from fd ${LISTEN_FD}`);
      return typeof last === 'function' ? [opts, last] : [opts];
    } catch (e) {
      debug(`listen() left alone: ${e && e.message}`);
      return null;
    }
  }

  const original = net.Server.prototype.listen;
  /* net.Server.prototype.listen, wrapped: see the header for what it changes. */
  function listen(...args) {
    const changed = rewrite(this, args);
    return original.apply(this, changed || args);
  }
  Object.defineProperty(listen, 'name', { value: 'listen' });
  Object.defineProperty(listen, 'length', { value: original.length });
  net.Server.prototype.listen = listen;

  if (!target && cfg.readyFallbackMs > 0) {
    const t = setTimeout(() => {
      if (!listenCalled) {
        fallbackReady = true;
        debug(`no listen() within ${cfg.readyFallbackMs} ms: ready (a worker without a server)`);
        update();
      }
    }, cfg.readyFallbackMs);
    t.unref();
  }
  update();
  return part;
}

module.exports = { install, parseSpec, requested };
