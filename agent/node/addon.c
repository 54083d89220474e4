/*
 * addon.c — the Node.js binding of the drover agent (agent/drover.h), as an
 * N-API addon: `drover_agent.node`, loaded by index.js beside it.
 *
 * It is a thin layer: every figure is counted, summarised and sent by the C
 * agent linked into this object (its own static copy, so the addon needs no
 * libdrover.so at run time). The JavaScript side decides what to count; this
 * file only converts arguments. Nothing here throws into JavaScript: a bad
 * argument makes a call a no-op (or returns -EINVAL), never an exception, so
 * a mistake in the agent cannot break the application it is a guest in.
 *
 * Exports (all synchronous, all cheap):
 *   start() -> int            drover_start(): reads DROVER_* from the environment
 *   stop()                    drover_stop(): sends `bye`
 *   requestBegin()            drover_request_begin()
 *   requestDone(us, failed)   drover_request_done()
 *   requests(begun, f64array, n)   a batch: begun × drover_request_begin(), then
 *                             drover_request_done() for each of n latencies
 *   lag(f64array, npairs)     drover_lag_observe() for (value µs, repeat) pairs
 *   lagStart() -> bool        measures event-loop lag on the loop itself (below)
 *   ready(bool)               drover_ready()
 *   metric(name, value) -> int drover_metric_set()
 *   log(lvl, msg)             drover_log()
 *   socketInfo(fd) -> object|null   what a (listening) socket fd is bound to
 *   cloexec(fd) -> int        sets FD_CLOEXEC on fd
 *
 * Built by agent/node/node.mk (make) or build.js (npm install) with gcc
 * against the installed node_api.h; N-API keeps it valid across Node
 * versions (NAPI_VERSION 8: Node >= 12.22).
 */
#define NAPI_VERSION 8

#include <node_api.h>
#include <uv.h>

#include "agent/drover.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The longest lag replay one call accepts: a window holds ~10-30 samples. */
#define ADDON_LAG_MAX_REPEAT 100000u
/* The most requests one batch may start (JavaScript flushes far more often). */
#define ADDON_BATCH_MAX 100000000u

/* ------------------------------------------------------------------------ */
/* Argument helpers                                                         */
/* ------------------------------------------------------------------------ */

/*
 * Reads up to *argc arguments of the current call into argv (missing ones
 * are `undefined`). Returns false when N-API fails, which the callers treat
 * as "do nothing".
 */
static bool addon_args(napi_env env, napi_callback_info info, size_t *argc, napi_value *argv)
{
    return napi_get_cb_info(env, info, argc, argv, NULL, NULL) == napi_ok;
}

/* Returns v as a double, or def when it is not a number. */
static double addon_double(napi_env env, napi_value v, double def)
{
    double d;
    return napi_get_value_double(env, v, &d) == napi_ok ? d : def;
}

/* Returns v as a bool when it is a boolean, else its truthiness as JS would see a number (0 → false). */
static bool addon_bool(napi_env env, napi_value v)
{
    bool b;
    if (napi_get_value_bool(env, v, &b) == napi_ok)
        return b;
    double d;
    return napi_get_value_double(env, v, &d) == napi_ok && d != 0;
}

/* Converts a non-negative finite double to uint64 (µs), clamping; NaN and negatives give 0. */
static uint64_t addon_u64(double d)
{
    if (!(d > 0))
        return 0;
    if (d >= 18446744073709549568.0)
        return UINT64_MAX;
    return (uint64_t)d;
}

/*
 * Copies string v into buf (cap bytes, NUL-terminated, truncated by N-API at
 * a character boundary). Returns its length in bytes, or -1 when v is not a
 * string. A return of cap-1 may mean the string was longer.
 */
static ssize_t addon_string(napi_env env, napi_value v, char *buf, size_t cap)
{
    size_t n = 0;
    if (napi_get_value_string_utf8(env, v, buf, cap, &n) != napi_ok)
        return -1;
    return (ssize_t)n;
}

/* Returns a JS number for i, or NULL (which N-API reads as `undefined`). */
static napi_value addon_int(napi_env env, int64_t i)
{
    napi_value r;
    return napi_create_int64(env, i, &r) == napi_ok ? r : NULL;
}

/* Sets obj[key] = number d, ignoring failures. */
static void addon_set_num(napi_env env, napi_value obj, const char *key, double d)
{
    napi_value v;
    if (napi_create_double(env, d, &v) == napi_ok)
        napi_set_named_property(env, obj, key, v);
}

/* Sets obj[key] = string s, ignoring failures. */
static void addon_set_str(napi_env env, napi_value obj, const char *key, const char *s)
{
    napi_value v;
    if (napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v) == napi_ok)
        napi_set_named_property(env, obj, key, v);
}

/* Sets obj[key] = bool b, ignoring failures. */
static void addon_set_bool(napi_env env, napi_value obj, const char *key, bool b)
{
    napi_value v;
    if (napi_get_boolean(env, b, &v) == napi_ok)
        napi_set_named_property(env, obj, key, v);
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

/*
 * start() -> int: starts the agent (idempotent). Returns 0, also when
 * DROVER_AGENT=0 disabled it, or a negative errno for a malformed DROVER_*
 * variable (the agent then stays off and sends nothing).
 */
static napi_value addon_start(napi_env env, napi_callback_info info)
{
    (void)info;
    return addon_int(env, drover_start());
}

/* stop(): sends `bye` with the final counters and stops the reporter. Safe twice. */
static napi_value addon_stop(napi_env env, napi_callback_info info)
{
    (void)env;
    (void)info;
    drover_stop();
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Counting (hot path)                                                      */
/* ------------------------------------------------------------------------ */

/* requestBegin(): one more request in flight. */
static napi_value addon_request_begin(napi_env env, napi_callback_info info)
{
    (void)env;
    (void)info;
    drover_request_begin();
    return NULL;
}

/*
 * requestDone(latencyUs, failed): a request finished after latencyUs µs
 * (non-numbers count as 0), an error when failed is truthy; lowers inflight.
 */
static napi_value addon_request_done(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2];
    if (!addon_args(env, info, &argc, argv) || argc < 1)
        return NULL;
    uint64_t us = addon_u64(addon_double(env, argv[0], 0));
    bool failed = argc > 1 && addon_bool(env, argv[1]);
    drover_request_done(us, failed);
    return NULL;
}

/*
 * requests(begun, latencies, n): applies a batch of request events counted
 * by JavaScript since the previous batch, which saves two N-API calls per
 * request: `begun` requests started (drover_request_begin() each), then n
 * requests finished, latencies[i] being the latency in µs, stored negated
 * minus one (-(µs) - 1) for a failed request (drover_request_done() each).
 * Begins come first, so a request that began and ended within one batch
 * leaves inflight as it was. Invalid arguments make it a no-op.
 */
static napi_value addon_requests(napi_env env, napi_callback_info info)
{
    size_t argc = 3;
    napi_value argv[3];
    if (!addon_args(env, info, &argc, argv) || argc < 3)
        return NULL;
    uint64_t begun = addon_u64(addon_double(env, argv[0], 0));
    if (begun > ADDON_BATCH_MAX)
        begun = ADDON_BATCH_MAX;
    for (uint64_t i = 0; i < begun; i++)
        drover_request_begin();

    napi_typedarray_type type;
    size_t len;
    void *data;
    if (napi_get_typedarray_info(env, argv[1], &type, &len, &data, NULL, NULL) != napi_ok ||
        type != napi_float64_array || !data)
        return NULL;
    double want = addon_double(env, argv[2], 0);
    size_t n = len;
    if (want >= 0 && want < (double)len)
        n = (size_t)want;
    const double *v = data;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < 0)
            drover_request_done(addon_u64(-v[i] - 1), true);
        else
            drover_request_done(addon_u64(v[i]), false);
    }
    return NULL;
}

/*
 * lag(values, npairs): values is a Float64Array of (lag µs, repeat) pairs;
 * records each lag value `repeat` times (at most ADDON_LAG_MAX_REPEAT) with
 * drover_lag_observe(). Anything else is ignored.
 */
static napi_value addon_lag(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2];
    if (!addon_args(env, info, &argc, argv) || argc < 2)
        return NULL;
    napi_typedarray_type type;
    size_t len;
    void *data;
    if (napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok ||
        type != napi_float64_array || !data)
        return NULL;
    double want = addon_double(env, argv[1], 0);
    size_t pairs = len / 2;
    if (want >= 0 && want < (double)pairs)
        pairs = (size_t)want;
    const double *v = data;
    for (size_t i = 0; i < pairs; i++) {
        uint64_t us = addon_u64(v[2 * i]);
        uint64_t n = addon_u64(v[2 * i + 1]);
        if (n > ADDON_LAG_MAX_REPEAT)
            n = ADDON_LAG_MAX_REPEAT;
        for (uint64_t k = 0; k < n; k++)
            drover_lag_observe(us);
    }
    return NULL;
}

/*
 * Event-loop lag without a timer. A prepare handle runs once per turn of the
 * loop, just before it polls; between two runs the loop either waited in
 * the poll (idle: libuv's UV_METRICS_IDLE_TIME counter, which Node keeps for
 * eventLoopUtilization) or ran callbacks. The busy part of each turn is one
 * lag sample: the longest any timer or I/O event that became due at the
 * start of the turn waited — a 200 ms block is one 200 ms sample. An idle
 * loop has no turns and so costs nothing: there is no timer to wake it
 * (monitorEventLoopDelay woke it every 10 ms, ~0.9 % of a core). The handle
 * is unref'd: it never keeps the process alive.
 */
static uv_prepare_t addon_lag_prep;
static bool         addon_lag_on;
static uint64_t     addon_lag_last_ns, addon_lag_last_idle;

/* Once per turn: records the busy time since the previous turn (µs). */
static void addon_lag_prepare_cb(uv_prepare_t *h)
{
    uint64_t now = uv_hrtime();
    uint64_t idle = uv_metrics_idle_time(h->loop);
    if (addon_lag_last_ns && now >= addon_lag_last_ns) {
        uint64_t wall = now - addon_lag_last_ns;
        uint64_t waited = idle >= addon_lag_last_idle ? idle - addon_lag_last_idle : 0;
        drover_lag_observe((wall > waited ? wall - waited : 0) / 1000u);
    }
    addon_lag_last_ns = now;
    addon_lag_last_idle = idle;
}

/* lagStart(): starts the prepare handle on this thread's loop, once. Returns true when running. */
static napi_value addon_lag_start(napi_env env, napi_callback_info info)
{
    (void)info;
    napi_value out;
    if (!addon_lag_on) {
        uv_loop_t *loop = NULL;
        if (napi_get_uv_event_loop(env, &loop) == napi_ok && loop &&
            uv_loop_configure(loop, UV_METRICS_IDLE_TIME) == 0 &&
            uv_prepare_init(loop, &addon_lag_prep) == 0) {
            if (uv_prepare_start(&addon_lag_prep, addon_lag_prepare_cb) == 0) {
                uv_unref((uv_handle_t *)&addon_lag_prep);
                addon_lag_on = true;
            }
        }
    }
    if (napi_get_boolean(env, addon_lag_on, &out) != napi_ok)
        return NULL;
    return out;
}

/* ready(flag): sets readiness; a change is reported within milliseconds. */
static napi_value addon_ready(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1];
    if (!addon_args(env, info, &argc, argv) || argc < 1)
        return NULL;
    drover_ready(addon_bool(env, argv[0]));
    return NULL;
}

/*
 * metric(name, value) -> int: sets custom metric name (1..47 bytes) in the
 * report's `m` map. Returns 0 or a negative errno (-EINVAL for a bad name or
 * a non-number value, -ENOSPC when the 32 slots are taken, -EAGAIN).
 */
static napi_value addon_metric(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2];
    char name[64];
    if (!addon_args(env, info, &argc, argv) || argc < 2)
        return addon_int(env, -EINVAL);
    ssize_t n = addon_string(env, argv[0], name, sizeof name);
    double value;
    if (n <= 0 || (size_t)n >= sizeof name - 1 || napi_get_value_double(env, argv[1], &value) != napi_ok)
        return addon_int(env, -EINVAL);
    return addon_int(env, drover_metric_set(name, value));
}

/*
 * log(lvl, msg): sends one log line to the hub (a no-op while the agent is
 * not running). Non-string arguments: lvl reads as "info", msg as "".
 */
static napi_value addon_log(napi_env env, napi_callback_info info)
{
    size_t argc = 2;
    napi_value argv[2];
    char lvl[16], msg[4096];
    if (!addon_args(env, info, &argc, argv) || argc < 2)
        return NULL;
    if (addon_string(env, argv[0], lvl, sizeof lvl) < 0)
        strcpy(lvl, "info");
    if (addon_string(env, argv[1], msg, sizeof msg) < 0)
        msg[0] = '\0';
    drover_log(lvl, msg);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Sockets                                                                  */
/* ------------------------------------------------------------------------ */

/*
 * socketInfo(fd) -> object | null: describes the stream socket at fd, for
 * the listen interception (an inherited fd 3 must really be the hub's
 * listening socket before it is served). Returns null when fd is not an
 * open stream socket of family AF_INET, AF_INET6 or AF_UNIX; otherwise
 * { listening: bool, family: "IPv4"|"IPv6"|"unix", address, port } for TCP
 * or { listening, family: "unix", path } (path "" when unnamed or abstract).
 */
static napi_value addon_socket_info(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1];
    if (!addon_args(env, info, &argc, argv) || argc < 1)
        return NULL;
    double d = addon_double(env, argv[0], -1);
    if (!(d >= 0 && d <= 1048576))
        return NULL;
    int fd = (int)d;

    int type = 0, acc = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM)
        return NULL;
    len = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) != 0)
        acc = 0;

    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    memset(&ss, 0, sizeof ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return NULL;

    napi_value obj;
    if (napi_create_object(env, &obj) != napi_ok)
        return NULL;
    addon_set_bool(env, obj, "listening", acc != 0);
    char addr[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        if (!inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr))
            return NULL;
        addon_set_str(env, obj, "family", "IPv4");
        addon_set_str(env, obj, "address", addr);
        addon_set_num(env, obj, "port", ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        if (!inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr))
            return NULL;
        addon_set_str(env, obj, "family", "IPv6");
        addon_set_str(env, obj, "address", addr);
        addon_set_num(env, obj, "port", ntohs(in6->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
        char path[sizeof un->sun_path + 1];
        size_t plen = sl > offsetof(struct sockaddr_un, sun_path) ? sl - offsetof(struct sockaddr_un, sun_path) : 0;
        if (plen > sizeof un->sun_path)
            plen = sizeof un->sun_path;
        /* An abstract name starts with NUL: report it as unnamed rather than guess a spelling. */
        if (plen > 0 && un->sun_path[0] != '\0') {
            memcpy(path, un->sun_path, plen);
            path[plen] = '\0';
        } else {
            path[0] = '\0';
        }
        addon_set_str(env, obj, "family", "unix");
        addon_set_str(env, obj, "path", path);
    } else {
        return NULL;
    }
    return obj;
}

/*
 * cloexec(fd) -> int: sets FD_CLOEXEC on fd (only this process's descriptor
 * table entry; the socket itself is untouched), so programs the worker
 * spawns do not inherit the hub's listening socket. Returns 0 or -errno.
 */
static napi_value addon_cloexec(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1];
    if (!addon_args(env, info, &argc, argv) || argc < 1)
        return addon_int(env, -EINVAL);
    double d = addon_double(env, argv[0], -1);
    if (!(d >= 0 && d <= 1048576))
        return addon_int(env, -EBADF);
    int fd = (int)d;
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
        return addon_int(env, -errno);
    return addon_int(env, 0);
}

/* ------------------------------------------------------------------------ */
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Module initialiser (context-aware, so loading it in a worker_thread is
 * harmless; index.js only starts the agent on the main thread). Defines the
 * exports listed at the top of this file and returns exports.
 */
NAPI_MODULE_INIT()
{
    static const struct {
        const char *name;
        napi_callback fn;
    } fns[] = {
        {"start", addon_start},
        {"stop", addon_stop},
        {"requestBegin", addon_request_begin},
        {"requestDone", addon_request_done},
        {"requests", addon_requests},
        {"lag", addon_lag},
        {"lagStart", addon_lag_start},
        {"ready", addon_ready},
        {"metric", addon_metric},
        {"log", addon_log},
        {"socketInfo", addon_socket_info},
        {"cloexec", addon_cloexec},
    };
    napi_property_descriptor desc[sizeof fns / sizeof fns[0]];
    for (size_t i = 0; i < sizeof fns / sizeof fns[0]; i++) {
        memset(&desc[i], 0, sizeof desc[i]);
        desc[i].utf8name = fns[i].name;
        desc[i].method = fns[i].fn;
        desc[i].attributes = napi_enumerable;
    }
    napi_define_properties(env, exports, sizeof fns / sizeof fns[0], desc);
    napi_value version;
    if (napi_create_string_utf8(env, DROVER_AGENT_VERSION, NAPI_AUTO_LENGTH, &version) == napi_ok)
        napi_set_named_property(env, exports, "version", version);
    return exports;
}
