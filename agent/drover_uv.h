/*
 * drover_uv.h — event-loop lag for libuv loops (header-only; libdrover itself
 * does not depend on libuv, the application already links it).
 *
 *     static uv_timer_t lag_timer;
 *     drover_lag_uv_start(loop, &lag_timer, 10);   // after drover_start()
 *     ...
 *     drover_lag_uv_stop(&lag_timer);               // then uv_close() it if you free it
 *
 * A repeating timer fires every period_ms; each firing records how late it
 * came (µs) with drover_lag_observe(), which is what Node's
 * monitorEventLoopDelay measures. The timer is unref'd, so it never keeps the
 * loop alive. libuv timers have millisecond resolution: an idle loop shows
 * 0-1 ms of lag, a loop blocked for 50 ms shows about 50 ms.
 *
 * The helper owns timer->data: it holds the time (µs, CLOCK_MONOTONIC via
 * uv_hrtime) the next firing is due, stored in the pointer itself so no
 * memory is needed. On 32-bit platforms the value wraps every 71 minutes,
 * which the signed difference below absorbs for lateness under 35 minutes.
 */
#ifndef DROVER_UV_H
#define DROVER_UV_H

#include <stdint.h>
#include <uv.h>

#include "drover.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Timer callback: records lateness against the due time, then sets the next one. */
static inline void drover__lag_uv_cb(uv_timer_t *timer)
{
    uintptr_t now_us = (uintptr_t)(uv_hrtime() / 1000u);
    uintptr_t due_us = (uintptr_t)timer->data;
    intptr_t late = (intptr_t)(now_us - due_us);
    drover_lag_observe(late > 0 ? (uint64_t)late : 0);
    /*
     * libuv re-arms a repeating timer at "loop time + repeat" before calling
     * us, so the next firing is due one period after now (not after due_us):
     * a 50 ms stall is one 50 ms sample, not a backlog of catch-up samples.
     */
    timer->data = (void *)(now_us + (uintptr_t)uv_timer_get_repeat(timer) * 1000u);
}

/*
 * Starts lag sampling on loop: initialises the caller's timer (which must not
 * be an open handle) and fires it every period_ms (0 = 10 ms). Returns 0 or a
 * libuv error code.
 */
static inline int drover_lag_uv_start(uv_loop_t *loop, uv_timer_t *timer, unsigned period_ms)
{
    int rc;
    if (period_ms == 0)
        period_ms = 10;
    if ((rc = uv_timer_init(loop, timer)) != 0)
        return rc;
    timer->data = (void *)((uintptr_t)(uv_hrtime() / 1000u) + (uintptr_t)period_ms * 1000u);
    if ((rc = uv_timer_start(timer, drover__lag_uv_cb, period_ms, period_ms)) != 0)
        return rc;
    uv_unref((uv_handle_t *)timer);
    return 0;
}

/*
 * Stops lag sampling. The handle stays open: uv_close() it before freeing its
 * memory or passing it to drover_lag_uv_start() again.
 */
static inline void drover_lag_uv_stop(uv_timer_t *timer)
{
    uv_timer_stop(timer);
}

#ifdef __cplusplus
}
#endif
#endif
