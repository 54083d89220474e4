/*
 * drover.h — the drover agent: a worker reports itself to the drover hub.
 *
 * Link with -ldrover (pkg-config drover). Every call is safe from any thread,
 * never blocks, never allocates after drover_start(), never prints, and never
 * exits or aborts the process. When no hub is running the calls still work
 * and reports are dropped (counted in the next report's `drops`). The
 * counting calls (drover_request_*, drover_count_*, drover_observe_latency,
 * drover_lag_observe) and drover_ready() are lock-free and also
 * async-signal-safe. They record even while the agent is stopped or
 * disabled; only sending depends on drover_start().
 *
 * fork(): a child forked while the agent runs reports as itself — its own
 * pid, seq from 0, counters and histograms from 0, a `hello` of its own and
 * its own reporter thread (started by a pthread_atfork child handler, which
 * is the one allocation after drover_start: the thread's stack). Readiness
 * and custom metrics are kept, like the rest of the child's memory.
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
 *     DROVER_SOCKET       path of the hub's agent.sock; default
 *                         $XDG_RUNTIME_DIR/drover/default/agent.sock, or
 *                         /tmp/drover-UID/default/agent.sock without XDG_RUNTIME_DIR
 *     DROVER_NAME         app name (default: none; the hub uses the process name)
 *     DROVER_WORKER_ID    worker index, a decimal integer
 *     DROVER_INTERVAL_MS  report interval, default 1000, 10..3600000; each
 *                         interval is shortened by a random 0-20 % so fleets do not
 *                         align and a hub with the same interval hears from
 *                         each worker in every one of its intervals
 *     DROVER_AGENT=0      disables the agent (also "false", "no", "off"):
 *                         drover_start() returns 0 and nothing is ever sent
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
 * socket, sends `hello` and starts the background reporter thread (all
 * signals blocked in it). Idempotent. Returns 0 on success (also when
 * disabled by DROVER_AGENT=0), or a negative errno: -EINVAL for a malformed
 * DROVER_INTERVAL_MS, DROVER_WORKER_ID (decimal, 0..2^32-1) or DROVER_NAME
 * (over 63 bytes), -ENAMETOOLONG for a socket path over 107 bytes; on failure
 * nothing is sent. After drover_stop() it may be called again; counters and
 * seq carry on, so the hub sees no reset.
 */
DROVER_API int drover_start(void);

/*
 * Sends `bye` (with the final counters) and stops the reporter thread,
 * waiting for it to exit. Safe to call when not started, and twice.
 */
DROVER_API void drover_stop(void);

/* Monotonic time in µs, for measuring request latency. */
DROVER_API uint64_t drover_now_us(void);

/* A request started: raises `inflight`. Pair with drover_request_done(). */
DROVER_API void drover_request_begin(void);

/*
 * A request finished after latency_us: counts it in `req` (and `err` if
 * failed), records its latency and lowers `inflight` unless it is already 0
 * (so it may be used without drover_request_begin()).
 */
DROVER_API void drover_request_done(uint64_t latency_us, bool failed);

/* Counts one request without latency or inflight tracking. */
DROVER_API void drover_count_request(void);

/* Counts one error not tied to a request. */
DROVER_API void drover_count_error(void);

/* Records a latency sample (µs) without counting a request. */
DROVER_API void drover_observe_latency(uint64_t latency_us);

/*
 * Sets readiness; when it changes the reporter is woken (sem_post) and sends
 * a report within milliseconds, not only at the next interval.
 */
DROVER_API void drover_ready(bool ready);

/*
 * Sets custom metric `name` (1..47 bytes) to value. The first call for a name
 * takes one of 32 slots (copying the name; no allocation); later calls for the
 * same name are lock-free. Names are never released. Returns 0, -ENOSPC when
 * all slots are taken, -EINVAL for a NULL, empty or too long name, or -EAGAIN
 * in the rare case another thread is setting the same new name at the same
 * instant and is descheduled in the middle (the value is not stored; retry).
 */
DROVER_API int drover_metric_set(const char *name, double value);

/*
 * Sends one log line at level lvl ("info", "warn", "error"…; NULL = "info")
 * at once as a `log` datagram. Lines longer than 4095 bytes (levels longer
 * than 15) are truncated at a UTF-8 character boundary. Uses one of 4 static
 * buffers: when more threads log at the same instant the line is dropped and
 * counted in `drops`. A no-op while the agent is not running.
 */
DROVER_API void drover_log(const char *lvl, const char *msg);

/* Records one event-loop lag sample: how late (µs) a periodic timer fired. */
DROVER_API void drover_lag_observe(uint64_t late_us);

/*
 * Event-loop lag for epoll (or poll/select) loops: returns a non-blocking
 * CLOCK_MONOTONIC timerfd that fires every period_ms (0 = 10 ms). Add it to
 * your loop for reading; when it is readable call
 * drover_lag_timerfd_service(fd), which reads it and records how late it was
 * serviced, (expirations-1)*period + (period - time to the next expiry).
 * Stateless: any number of such fds may exist. The caller closes the fd.
 * Returns the fd or a negative errno.
 */
DROVER_API int drover_lag_timerfd(unsigned period_ms);
DROVER_API void drover_lag_timerfd_service(int fd);

/* For libuv loops see drover_uv.h (header-only; libdrover does not need libuv). */

#ifdef __cplusplus
}
#endif
#endif
