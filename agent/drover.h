/*
 * drover.h — the drover agent: a worker reports itself to the drover hub.
 *
 * Link with -ldrover (pkg-config drover). Every call is safe from any thread,
 * never blocks, never allocates after drover_start(), never prints, and never
 * exits or aborts the process. When no hub is running the calls still work
 * and reports are dropped (counted in the next report's `drops`).
 *
 * Typical use:
 *     drover_start();                      // reads DROVER_* from the environment
 *     drover_ready(true);                  // once the worker can serve
 *     uint64_t t0 = drover_now_us();
 *     ... handle a request ...
 *     drover_request_done(drover_now_us() - t0, failed);
 *     drover_stop();                       // sends `bye`
 *
 * Environment read by drover_start():
 *     DROVER_SOCKET       path of the hub's agent.sock (default: PROTOCOL.md §3)
 *     DROVER_NAME         app name (default: none; the hub uses the process name)
 *     DROVER_WORKER_ID    worker index, a decimal integer
 *     DROVER_INTERVAL_MS  report interval, default 1000, 10..3600000; each
 *                         interval is jittered by ±10 % so fleets do not align
 *     DROVER_AGENT=0      disables the agent (drover_start() returns 0, all calls no-ops)
 */
#ifndef DROVER_H
#define DROVER_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DROVER_AGENT_VERSION "0.1.0"

/* Public symbols stay visible when the library is built with -fvisibility=hidden. */
#define DROVER_API __attribute__((visibility("default")))

/*
 * Starts the agent: reads the environment, opens a non-blocking datagram
 * socket, sends `hello` and starts the background reporter thread.
 * Idempotent. Returns 0 on success or a negative errno (e.g. -EINVAL for a
 * malformed DROVER_* variable); on failure every other call is a no-op.
 */
DROVER_API int drover_start(void);

/* Sends `bye` and stops the reporter thread. Safe to call when not started. */
DROVER_API void drover_stop(void);

/* Monotonic time in µs, for measuring request latency. */
DROVER_API uint64_t drover_now_us(void);

/* A request started: raises `inflight`. Pair with drover_request_done(). */
DROVER_API void drover_request_begin(void);

/*
 * A request finished after latency_us: counts it in `req` (and `err` if
 * failed), records its latency and lowers `inflight` if it was raised.
 */
DROVER_API void drover_request_done(uint64_t latency_us, bool failed);

/* Counts one request without latency or inflight tracking. */
DROVER_API void drover_count_request(void);

/* Counts one error not tied to a request. */
DROVER_API void drover_count_error(void);

/* Records a latency sample (µs) without counting a request. */
DROVER_API void drover_observe_latency(uint64_t latency_us);

/* Sets readiness; sent at once (not only at the next interval) when it changes. */
DROVER_API void drover_ready(bool ready);

/*
 * Sets custom metric `name` (≤ 47 bytes) to value. The first call for a name
 * takes one of 32 slots (copying the name; no allocation); later calls for the
 * same name are lock-free. Returns 0, -ENOSPC when all slots are taken, or
 * -EINVAL for a bad name.
 */
DROVER_API int drover_metric_set(const char *name, double value);

/*
 * Sends one log line at level lvl ("info", "warn", "error"…) at once as a
 * `log` datagram. Lines longer than 4095 bytes are truncated.
 */
DROVER_API void drover_log(const char *lvl, const char *msg);

/* Records one event-loop lag sample: how late (µs) a periodic timer fired. */
DROVER_API void drover_lag_observe(uint64_t late_us);

/*
 * Event-loop lag for epoll (or poll/select) loops: returns a non-blocking
 * timerfd that fires every period_ms (0 = 10 ms). Add it to your loop for
 * reading; when it is readable call drover_lag_timerfd_service(fd), which
 * reads it and records how late it fired. Returns the fd or a negative errno.
 */
DROVER_API int drover_lag_timerfd(unsigned period_ms);
DROVER_API void drover_lag_timerfd_service(int fd);

/* For libuv loops see drover_uv.h (header-only; libdrover does not need libuv). */

#ifdef __cplusplus
}
#endif
#endif
