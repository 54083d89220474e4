/*
 * sampler.c — reads processes from /proc with libproc2, off the loop thread.
 *
 * libproc2 costs 20-30 µs per pid; with hundreds of workers a round takes
 * milliseconds, so it runs on libuv's thread pool and posts its result back.
 * A process that vanished between two reads is normal: it is reported as not
 * alive, never as an error.
 */
#include "hub/sampler.h"

#include <errno.h>
#include <libproc2/meminfo.h>
#include <libproc2/misc.h>
#include <libproc2/pids.h>
#include <libproc2/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* libproc2 accepts at most this many pids per procps_pids_select() call. */
#define SAMPLER_CHUNK 255

/* Items from /proc/PID/stat, and RSS from /proc/PID/statm: stat's RSS
 * reads up to 15 % low on small processes (the kernel's per-CPU counters
 * are not summed for it), while statm's resident count is VmRSS exactly,
 * without generating all of /proc/PID/status. CPU comes from the process CPU
 * clock (sampler_cpu_ns); the stat ticks are the fallback. */
enum { I_PID, I_STATE, I_BEGAN, I_TICS, I_RSS, I_ELAPSED, I_CMD };
static enum pids_item sampler_items[] = {
    PIDS_ID_PID, PIDS_STATE, PIDS_TICS_BEGAN, PIDS_TICS_ALL, PIDS_MEM_RES,
    PIDS_TIME_ELAPSED, PIDS_CMD,
};

enum { C_PID, C_PPID, C_STATE };
static enum pids_item sampler_child_items[] = {PIDS_ID_PID, PIDS_ID_PPID, PIDS_STATE};

struct sampler {
    uv_loop_t *loop;
    uv_work_t  work;
    struct pids_info *info;
    struct pids_info *all;      /* for listing children: every process, few items */
    struct stat_info *stat;     /* /proc/stat, opened at the first host read */
    struct meminfo_info *mem;   /* /proc/meminfo, likewise */
    host_sample host;
    pid_t      parent;          /* 0: none watched */
    pid_t     *children;
    size_t     nchildren, children_cap;
    bool       parent_alive;
    bool       busy;
    bool       freed;       /* sampler_free() called while busy */
    pid_t     *pids;        /* request: n pids, then the hub's own pid */
    proc_sample *out;
    size_t     n, cap;
    double     at;
    sampler_done_cb cb;
    void      *ctx;
};

double sampler_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

sampler *sampler_new(uv_loop_t *loop, char *err, size_t errcap)
{
    sampler *sm = calloc(1, sizeof *sm);
    if (!sm) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    int rc = procps_pids_new(&sm->info, sampler_items, sizeof sampler_items / sizeof sampler_items[0]);
    if (rc < 0) {
        snprintf(err, errcap, "cannot read /proc with libproc2: %s", strerror(-rc));
        free(sm);
        return NULL;
    }
    sm->loop = loop;
    sm->work.data = sm;
    return sm;
}

/*
 * Reads the CPU time of every thread of pid, in ns, from its process CPU
 * clock (clock_getcpuclockid: the scheduler's sum_exec_runtime summed over
 * the thread group, dead threads included — what /proc/PID/schedstat gives
 * for one thread only). Returns false when the clock cannot be read (the
 * process is gone, or a kernel without it); the caller falls back to ticks.
 */
static bool sampler_cpu_ns(pid_t pid, uint64_t *ns)
{
    clockid_t clk;
    struct timespec ts;
    if (clock_getcpuclockid(pid, &clk) != 0 || clock_gettime(clk, &ts) != 0 || ts.tv_sec < 0)
        return false;
    *ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    return true;
}

/* Fills one sample from a libproc2 result stack. */
static void sampler_fill(struct pids_stack *st, proc_sample *ps)
{
    char pstate = PIDS_VAL(I_STATE, s_ch, st, NULL);
    ps->alive = pstate != 'Z' && pstate != 'X';
    ps->start_ticks = PIDS_VAL(I_BEGAN, ull_int, st, NULL);
    ps->cpu_ticks = PIDS_VAL(I_TICS, ull_int, st, NULL);
    ps->has_cpu_ns = ps->alive && sampler_cpu_ns(ps->pid, &ps->cpu_ns);
    ps->rss_bytes = (uint64_t)PIDS_VAL(I_RSS, ul_int, st, NULL) * 1024u;  /* statm pages, as KiB */
    ps->elapsed_s = PIDS_VAL(I_ELAPSED, real, st, NULL);
    const char *cmd = PIDS_VAL(I_CMD, str, st, NULL);
    snprintf(ps->comm, sizeof ps->comm, "%s", cmd ? cmd : "");
}

int sampler_read(sampler *sm, const pid_t *pids, size_t n, proc_sample *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (proc_sample){.pid = pids[i]};
    for (size_t off = 0; off < n; off += SAMPLER_CHUNK) {
        unsigned chunk[SAMPLER_CHUNK];
        int k = (int)(n - off < SAMPLER_CHUNK ? n - off : SAMPLER_CHUNK);
        for (int i = 0; i < k; i++)
            chunk[i] = (unsigned)pids[off + (size_t)i];
        struct pids_fetch *f = procps_pids_select(sm->info, chunk, k, PIDS_SELECT_PID);
        if (!f)
            return -1;
        /* Results come back in /proc order, and vanished pids are missing. */
        for (int j = 0; j < f->counts->total; j++) {
            pid_t pid = PIDS_VAL(I_PID, s_int, f->stacks[j], NULL);
            for (int i = 0; i < k; i++) {
                if (out[off + (size_t)i].pid == pid) {
                    sampler_fill(f->stacks[j], &out[off + (size_t)i]);
                    break;
                }
            }
        }
    }
    return 0;
}

/* Lists the live children of sm->parent into sm->children (bounded by its capacity). */
static void sampler_children(sampler *sm)
{
    sm->nchildren = 0;
    sm->parent_alive = true;
    if (sm->parent <= 0)
        return;
    if (!sm->all && procps_pids_new(&sm->all, sampler_child_items,
                                    sizeof sampler_child_items / sizeof sampler_child_items[0]) < 0)
        return;
    struct pids_fetch *f = procps_pids_reap(sm->all, PIDS_FETCH_TASKS_ONLY);
    if (!f)
        return;
    sm->parent_alive = false;
    for (int j = 0; j < f->counts->total; j++) {
        pid_t pid = PIDS_VAL(C_PID, s_int, f->stacks[j], NULL);
        char st = PIDS_VAL(C_STATE, s_ch, f->stacks[j], NULL);
        if (pid == sm->parent)
            sm->parent_alive = st != 'Z' && st != 'X';
        else if (PIDS_VAL(C_PPID, s_int, f->stacks[j], NULL) == sm->parent && st != 'Z' &&
                 sm->nchildren < sm->children_cap)
            sm->children[sm->nchildren++] = pid;
    }
}

/*
 * See sampler.h. The select calls read their file every time (the _get
 * calls would serve a value up to a second old).
 */
void sampler_read_host(sampler *sm, host_sample *out)
{
    static enum stat_item stat_items[] = {STAT_TIC_SUM_TOTAL, STAT_TIC_SUM_IDLE};
    static enum meminfo_item mem_items[] = {MEMINFO_MEM_TOTAL, MEMINFO_MEM_USED};
    memset(out, 0, sizeof *out);
    if ((!sm->stat && procps_stat_new(&sm->stat) < 0) || (!sm->mem && procps_meminfo_new(&sm->mem) < 0))
        return;
    struct stat_stack *st = procps_stat_select(sm->stat, stat_items, 2);
    struct meminfo_stack *ms = procps_meminfo_select(sm->mem, mem_items, 2);
    if (!st || !ms || procps_loadavg(&out->load[0], &out->load[1], &out->load[2]) < 0)
        return;
    out->cpu_total_ticks = STAT_VAL(0, ull_int, st, sm->stat);
    out->cpu_idle_ticks = STAT_VAL(1, ull_int, st, sm->stat);
    out->mem_total_bytes = (uint64_t)MEMINFO_VAL(0, ul_int, ms, sm->mem) * 1024;   /* KiB */
    out->mem_used_bytes = (uint64_t)MEMINFO_VAL(1, ul_int, ms, sm->mem) * 1024;
    out->ncpu = procps_cpu_count();
    out->ok = out->mem_total_bytes > 0;
}

static void sampler_work(uv_work_t *w)
{
    sampler *sm = w->data;
    sm->at = sampler_now();
    sampler_read_host(sm, &sm->host);
    sampler_children(sm);
    if (sampler_read(sm, sm->pids, sm->n + 1, sm->out) != 0)
        for (size_t i = 0; i <= sm->n; i++)
            sm->out[i].alive = true;  /* a failed read says nothing about exits */
}

void sampler_watch(sampler *sm, pid_t parent)
{
    if (!sm->children) {
        sm->children_cap = 4096;
        sm->children = calloc(sm->children_cap, sizeof *sm->children);
        if (!sm->children) {
            sm->children_cap = 0;
            return;
        }
    }
    sm->parent = parent;
}

static void sampler_free_now(sampler *sm)
{
    procps_pids_unref(&sm->info);
    if (sm->all)
        procps_pids_unref(&sm->all);
    if (sm->stat)
        procps_stat_unref(&sm->stat);
    if (sm->mem)
        procps_meminfo_unref(&sm->mem);
    free(sm->children);
    free(sm->pids);
    free(sm->out);
    free(sm);
}

static void sampler_after(uv_work_t *w, int status)
{
    sampler *sm = w->data;
    sm->busy = false;
    if (sm->freed) {
        sampler_free_now(sm);
        return;
    }
    if (status == 0) {
        sampler_result r = {
            .s = sm->out, .n = sm->n, .self = &sm->out[sm->n], .at = sm->at,
            .children = sm->children, .nchildren = sm->nchildren, .parent_alive = sm->parent_alive,
            .host = &sm->host,
        };
        sm->cb(sm->ctx, &r);
    }
}

int sampler_start(sampler *sm, const pid_t *pids, size_t n, sampler_done_cb cb, void *ctx)
{
    if (sm->busy)
        return -EBUSY;
    if (n + 1 > sm->cap) {
        size_t nc = (n + 1) * 2;
        pid_t *np = realloc(sm->pids, nc * sizeof *np);
        if (np)
            sm->pids = np;
        proc_sample *no = realloc(sm->out, nc * sizeof *no);
        if (no)
            sm->out = no;
        if (!np || !no)
            return -ENOMEM;
        sm->cap = nc;
    }
    if (n)
        memcpy(sm->pids, pids, n * sizeof *pids);
    sm->pids[n] = getpid();
    sm->n = n;
    sm->cb = cb;
    sm->ctx = ctx;
    int rc = uv_queue_work(sm->loop, &sm->work, sampler_work, sampler_after);
    if (rc != 0)
        return rc;
    sm->busy = true;
    return 0;
}

void sampler_free(sampler *sm)
{
    if (!sm)
        return;
    if (sm->busy) {
        sm->freed = true;
        return;
    }
    sampler_free_now(sm);
}
