/*
 * sampler.h — reads processes from /proc with libproc2, off the loop thread.
 */
#ifndef DROVER_HUB_SAMPLER_H
#define DROVER_HUB_SAMPLER_H

#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "state.h"

typedef struct sampler sampler;

/*
 * Called on the loop thread when a sample round ends: one entry per requested
 * pid, in request order (alive=false for pids that no longer exist), plus the
 * hub's own process. at is the monotonic time (s) the round was read.
 */
typedef void (*sampler_done_cb)(void *ctx, const proc_sample *s, size_t n,
                                const proc_sample *self, double at);

/* Returns a sampler bound to loop, or NULL with a message in err. */
sampler *sampler_new(uv_loop_t *loop, char *err, size_t errcap);

/*
 * Starts one round for n pids on libuv's thread pool. Returns 0, or -EBUSY if
 * the previous round has not finished (the caller skips this interval).
 */
int sampler_start(sampler *sm, const pid_t *pids, size_t n, sampler_done_cb cb, void *ctx);

/*
 * Reads n pids synchronously into out (n entries) with the given libproc2
 * context; used by the worker thread and by tests. Returns 0 or -1.
 */
int sampler_read(sampler *sm, const pid_t *pids, size_t n, proc_sample *out);

/* Frees the sampler; if a round is in flight it is freed when that round ends. */
void sampler_free(sampler *sm);

/* Monotonic time in seconds. */
double sampler_now(void);

#endif
