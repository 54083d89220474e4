/*
 * sampler.h — reads processes from /proc with libproc2, off the loop thread
 * (each requested one with its descendants, found through the kernel's child
 * lists), and the host beside them (libproc2's system readers: /proc/stat,
 * /proc/meminfo, /proc/loadavg).
 */
#ifndef DROVER_HUB_SAMPLER_H
#define DROVER_HUB_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "hub/state.h"

typedef struct sampler sampler;

/* What one sample round read. */
typedef struct {
    const proc_sample *s;       /* one per requested pid, in request order
                                   (alive=false for pids that no longer exist) */
    size_t       n;
    const proc_sample *self;    /* the hub's own process */
    double       at;            /* monotonic time (s) of the read */
    const pid_t *children;      /* live children of the watched parent (sampler_watch) */
    size_t       nchildren;
    bool         parent_alive;  /* the watched parent exists (true when none is watched) */
    const host_sample *host;    /* the machine: CPU ticks, memory, load (host->ok false: unread) */
    /* The descendants of s[i] (its process tree, breadth first, at most
     * STATE_TREE_MAX - 1) are desc[desc_off[i]] … desc[desc_off[i] + desc_len[i] - 1]. */
    const proc_sample *desc;
    const uint32_t *desc_off, *desc_len;
} sampler_result;

/* Called on the loop thread when a sample round ends. */
typedef void (*sampler_done_cb)(void *ctx, const sampler_result *r);

/* Returns a sampler bound to loop, or NULL with a message in err. */
sampler *sampler_new(uv_loop_t *loop, char *err, size_t errcap);

/*
 * Starts one round for n pids on libuv's thread pool: each pid, its process
 * tree (sampler_result.desc), the hub itself and the host. Returns 0, or
 * -EBUSY if the previous round has not finished (the caller skips this
 * interval).
 */
int sampler_start(sampler *sm, const pid_t *pids, size_t n, sampler_done_cb cb, void *ctx);

/*
 * Reads n pids synchronously into out (n entries) with the given libproc2
 * context; used by the worker thread and by tests. Returns 0 or -1.
 */
int sampler_read(sampler *sm, const pid_t *pids, size_t n, proc_sample *out);

/*
 * From the next round on, also lists the children of parent (by PPID, over
 * every process in /proc), so `drover attach` sees a master's replacements.
 */
void sampler_watch(sampler *sm, pid_t parent);

/*
 * From the next round on, reads every tree member's PSS (/proc/PID/smaps_rollup)
 * once every `rounds` rounds (0: never); other rounds report pss_bytes -1.
 */
void sampler_pss_every(sampler *sm, uint32_t rounds);

/* Reads the host's CPU ticks, memory and load into out (out->ok false when a read failed). */
void sampler_read_host(sampler *sm, host_sample *out);

/* Frees the sampler; if a round is in flight it is freed when that round ends. */
void sampler_free(sampler *sm);

/*
 * Reads the start time (clock ticks since boot, as proc_sample.start_ticks)
 * of pid, synchronously, with a libproc2 context of its own (safe beside a
 * round in flight). Returns 0, or -1 when pid does not exist or is a zombie.
 */
int sampler_started(pid_t pid, uint64_t *start);

/* Monotonic time in seconds. */
double sampler_now(void);

#endif
