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
#include <fcntl.h>
#include <inttypes.h>
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
enum { I_PID, I_STATE, I_BEGAN, I_TICS, I_RSS, I_ELAPSED, I_CMD, I_PPID };
static enum pids_item sampler_items[] = {
    PIDS_ID_PID, PIDS_STATE, PIDS_TICS_BEGAN, PIDS_TICS_ALL, PIDS_MEM_RES,
    PIDS_TIME_ELAPSED, PIDS_CMD, PIDS_ID_PPID,
};

/* The pass over every process (one /proc/PID/stat each): who is whose
 * parent, and since when. */
enum { C_PID, C_PPID, C_STATE, C_BEGAN };
static enum pids_item sampler_child_items[] = {PIDS_ID_PID, PIDS_ID_PPID, PIDS_STATE, PIDS_TICS_BEGAN};

#define SAMPLER_DESC_MAX 65536   /* descendants read per round, all trees together */

/* One process of the pass, linked to its children (indices into the pass; -1: none). */
typedef struct {
    pid_t    pid, ppid;
    uint64_t began;
    int      first_child, next_sibling;
    bool     live;              /* not a zombie */
    bool     root;              /* a worker of its own: its tree is not another's */
} sampler_node;

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
    pid_t     *pids;        /* request: n pids, the hub's own pid, then the descendants */
    proc_sample *out;
    size_t     n, cap;
    size_t     ndesc;       /* descendants after the hub's pid, grouped by root */
    uint32_t  *desc_off, *desc_len;     /* per requested pid: its descendants in out[n + 1 + off…] */
    size_t     desc_cap;    /* of pids/out beyond n + 1 */
    size_t     off_cap;     /* of desc_off, desc_len */
    sampler_node *nodes;    /* the pass over every process */
    size_t     nodes_cap;
    int       *hash;        /* pid -> node index + 1, open addressing; 0: empty */
    size_t     hash_cap;
    uint32_t   round;
    uint32_t   pss_every;   /* read PSS every this many rounds (0: never) */
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
    ps->ppid = PIDS_VAL(I_PPID, s_int, st, NULL);
    const char *cmd = PIDS_VAL(I_CMD, str, st, NULL);
    snprintf(ps->comm, sizeof ps->comm, "%s", cmd ? cmd : "");
}

int sampler_read(sampler *sm, const pid_t *pids, size_t n, proc_sample *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (proc_sample){.pid = pids[i], .pss_bytes = -1};
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

/* The node index of pid in the pass, or -1. */
static int sampler_node_of(const sampler *sm, pid_t pid)
{
    size_t mask = sm->hash_cap - 1;
    for (size_t h = ((size_t)pid * 2654435761u) & mask;; h = (h + 1) & mask) {
        int v = sm->hash[h];
        if (v == 0)
            return -1;
        if (sm->nodes[v - 1].pid == pid)
            return v - 1;
    }
}

/*
 * One pass over every process: the parent links of the whole host (a node
 * per process, children linked from their parent, a pid hash), and the live
 * children of sm->parent for attach. Returns the number of nodes, or -1 when
 * /proc could not be read (then nothing is known about trees or children).
 */
static long sampler_pass(sampler *sm)
{
    sm->nchildren = 0;
    sm->parent_alive = true;
    if (!sm->all && procps_pids_new(&sm->all, sampler_child_items,
                                    sizeof sampler_child_items / sizeof sampler_child_items[0]) < 0)
        return -1;
    struct pids_fetch *f = procps_pids_reap(sm->all, PIDS_FETCH_TASKS_ONLY);
    if (!f || f->counts->total < 0)
        return -1;
    size_t total = (size_t)f->counts->total;
    if (total > sm->nodes_cap) {
        sampler_node *nn = realloc(sm->nodes, total * 2 * sizeof *nn);
        if (!nn)
            return -1;
        sm->nodes = nn;
        sm->nodes_cap = total * 2;
    }
    size_t hc = 64;
    while (hc < total * 2)
        hc *= 2;
    if (hc > sm->hash_cap) {
        int *nh = realloc(sm->hash, hc * sizeof *nh);
        if (!nh)
            return -1;
        sm->hash = nh;
        sm->hash_cap = hc;
    }
    memset(sm->hash, 0, sm->hash_cap * sizeof *sm->hash);
    if (sm->parent > 0)
        sm->parent_alive = false;
    size_t mask = sm->hash_cap - 1;
    for (size_t j = 0; j < total; j++) {
        sampler_node *nd = &sm->nodes[j];
        char st = PIDS_VAL(C_STATE, s_ch, f->stacks[j], NULL);
        *nd = (sampler_node){.pid = PIDS_VAL(C_PID, s_int, f->stacks[j], NULL),
                             .ppid = PIDS_VAL(C_PPID, s_int, f->stacks[j], NULL),
                             .began = PIDS_VAL(C_BEGAN, ull_int, f->stacks[j], NULL),
                             .first_child = -1, .next_sibling = -1, .live = st != 'Z' && st != 'X'};
        size_t h = ((size_t)nd->pid * 2654435761u) & mask;
        while (sm->hash[h])
            h = (h + 1) & mask;
        sm->hash[h] = (int)j + 1;
        if (sm->parent > 0) {
            if (nd->pid == sm->parent)
                sm->parent_alive = nd->live;
            else if (nd->ppid == sm->parent && nd->live && sm->nchildren < sm->children_cap)
                sm->children[sm->nchildren++] = nd->pid;
        }
    }
    for (size_t j = 0; j < total; j++) {
        int p = sm->nodes[j].ppid > 0 ? sampler_node_of(sm, sm->nodes[j].ppid) : -1;
        if (p >= 0 && (size_t)p != j) {
            sm->nodes[j].next_sibling = sm->nodes[p].first_child;
            sm->nodes[p].first_child = (int)j;
        }
    }
    return (long)total;
}

/* Appends pid to the round's descendants, growing the arrays; false when full. */
static bool sampler_desc_add(sampler *sm, pid_t pid)
{
    if (sm->ndesc >= SAMPLER_DESC_MAX)
        return false;
    if (sm->ndesc == sm->desc_cap) {
        size_t nc = sm->desc_cap ? sm->desc_cap * 2 : 256;
        size_t total = sm->n + 1 + nc;
        pid_t *np = realloc(sm->pids, total * sizeof *np);
        if (np)
            sm->pids = np;
        proc_sample *no = realloc(sm->out, total * sizeof *no);
        if (no)
            sm->out = no;
        if (!np || !no)
            return false;
        sm->desc_cap = nc;
        sm->cap = total;
    }
    sm->pids[sm->n + 1 + sm->ndesc++] = pid;
    return true;
}

/*
 * Collects each requested pid's descendants (at most STATE_TREE_MAX - 1,
 * breadth first) after the hub's pid in sm->pids. A process joins a tree only
 * if it started no earlier than its parent: a pid reused by a process older
 * than its supposed parent cannot be its child (the kernel gives a new pid
 * to every fork, so a real child always starts after its parent). A process
 * that is itself a requested pid is a worker of its own and is not followed.
 */
static void sampler_trees(sampler *sm, bool pass_ok)
{
    sm->ndesc = 0;
    for (size_t i = 0; i < sm->n; i++)
        sm->desc_off[i] = sm->desc_len[i] = 0;
    if (!pass_ok)
        return;
    for (size_t i = 0; i < sm->n; i++) {
        int r = sampler_node_of(sm, sm->pids[i]);
        if (r >= 0)
            sm->nodes[r].root = true;
    }
    for (size_t i = 0; i < sm->n; i++) {
        int r = sampler_node_of(sm, sm->pids[i]);
        sm->desc_off[i] = (uint32_t)sm->ndesc;
        if (r < 0 || !sm->nodes[r].live)
            continue;
        /* Breadth first over the pids appended so far for this root. */
        size_t head = sm->ndesc, added = 0;
        int cur = r;
        for (;;) {
            for (int c = sm->nodes[cur].first_child; c >= 0; c = sm->nodes[c].next_sibling) {
                const sampler_node *cn = &sm->nodes[c];
                if (!cn->live || cn->root || cn->began < sm->nodes[cur].began)
                    continue;
                if (added >= STATE_TREE_MAX - 1 || !sampler_desc_add(sm, cn->pid))
                    break;
                added++;
            }
            if (head >= sm->ndesc)
                break;
            cur = sampler_node_of(sm, sm->pids[sm->n + 1 + head++]);
            if (cur < 0)
                break;
        }
        sm->desc_len[i] = (uint32_t)added;
    }
}

/*
 * Pss of pid from /proc/PID/smaps_rollup, in bytes, or -1 when it cannot be
 * read (another user's process, a kernel thread, gone). The kernel walks
 * every mapping of the process for this file, so it is read only every
 * pss_every rounds.
 */
static int64_t sampler_pss(pid_t pid)
{
    char path[48], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    ssize_t k = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (k <= 0)
        return -1;
    buf[k] = '\0';
    const char *p = strstr(buf, "\nPss:");
    unsigned long long kb;
    if (!p || sscanf(p + 5, "%llu", &kb) != 1 || kb > INT64_MAX / 1024)
        return -1;
    return (int64_t)kb * 1024;
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
    /* The pass is needed for trees (any worker) and for attach's children. */
    long total = sm->n || sm->parent > 0 ? sampler_pass(sm) : -1;
    sampler_trees(sm, total >= 0);
    size_t all = sm->n + 1 + sm->ndesc;
    if (sampler_read(sm, sm->pids, all, sm->out) != 0)
        for (size_t i = 0; i < all; i++)
            sm->out[i].alive = i <= sm->n;  /* a failed read says nothing about exits */
    bool pss = sm->pss_every && sm->round++ % sm->pss_every == 0;
    for (size_t i = 0; i < all; i++)
        sm->out[i].pss_bytes = pss && i != sm->n && sm->out[i].alive ? sampler_pss(sm->out[i].pid) : -1;
}

void sampler_pss_every(sampler *sm, uint32_t rounds)
{
    sm->pss_every = rounds;
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
    free(sm->nodes);
    free(sm->hash);
    free(sm->desc_off);
    free(sm->desc_len);
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
            .desc = &sm->out[sm->n + 1], .desc_off = sm->desc_off, .desc_len = sm->desc_len,
        };
        sm->cb(sm->ctx, &r);
    }
}

int sampler_start(sampler *sm, const pid_t *pids, size_t n, sampler_done_cb cb, void *ctx)
{
    if (sm->busy)
        return -EBUSY;
    if (n + 1 + sm->desc_cap > sm->cap) {
        size_t nc = (n + 1) * 2 + sm->desc_cap;
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
    /* What is past n + 1 holds this round's descendants. */
    sm->desc_cap = sm->cap - n - 1;
    if (n > sm->off_cap || !sm->desc_off) {
        size_t nc = n * 2 + 16;
        uint32_t *o1 = realloc(sm->desc_off, nc * sizeof *o1);
        if (o1)
            sm->desc_off = o1;
        uint32_t *o2 = realloc(sm->desc_len, nc * sizeof *o2);
        if (o2)
            sm->desc_len = o2;
        if (!o1 || !o2)
            return -ENOMEM;
        sm->off_cap = nc;
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
