/*
 * sampler.c — reads processes from /proc with libproc2, off the loop thread.
 *
 * libproc2 costs 20-30 µs per pid; with hundreds of workers a round takes
 * milliseconds, so it runs on libuv's thread pool and posts its result back.
 * A process that vanished between two reads is normal: it is reported as not
 * alive, never as an error.
 */
#include "hub/sampler.h"

#include <dirent.h>
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
enum { I_PID, I_STATE, I_BEGAN, I_TICS, I_RSS, I_ELAPSED, I_CMD, I_PPID, I_NLWP };
static enum pids_item sampler_items[] = {
    PIDS_ID_PID, PIDS_STATE, PIDS_TICS_BEGAN, PIDS_TICS_ALL, PIDS_MEM_RES,
    PIDS_TIME_ELAPSED, PIDS_CMD, PIDS_ID_PPID, PIDS_NLWP,
};

enum { C_PID, C_PPID, C_STATE };
static enum pids_item sampler_child_items[] = {PIDS_ID_PID, PIDS_ID_PPID, PIDS_STATE};

#define SAMPLER_DESC_MAX 65536   /* descendants read per round, all trees together */

/* A child listed by the tree walk, to be read: its tree and its parent there. */
typedef struct {
    uint32_t root;              /* index of the requested pid whose tree it would join */
    uint32_t parent;            /* index in sm->tmem, or UINT32_MAX: the requested pid itself */
} sampler_cand;

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
    size_t     n, pids_cap;
    proc_sample *out;       /* n samples, the hub's, then the descendants grouped by tree */
    size_t     out_cap;
    size_t     ndesc;
    uint32_t  *desc_off, *desc_len;     /* per requested pid: its descendants in out[n + 1 + off…] */
    size_t     off_cap;     /* of desc_off, desc_len */
    pid_t     *roots;       /* the requested pids, open addressing; 0: empty */
    size_t     roots_cap;   /* a power of two */
    /* the tree walk's working arrays (sampler_trees), kept between rounds */
    sampler_cand *cand;     /* one level's children still to read */
    pid_t     *cand_pid;
    proc_sample *cand_out;
    size_t     ncand, cand_cap, cand_pid_cap, cand_out_cap;
    proc_sample *tmem;      /* the members accepted, in walk order */
    uint32_t  *tmem_root;   /* the tree (requested pid index) of each */
    size_t     tmem_cap, tmem_root_cap;
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
    int nlwp = PIDS_VAL(I_NLWP, s_int, st, NULL);
    ps->threads = nlwp > 0 ? (uint32_t)nlwp : 1;
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

/* True when pid is one of the round's requested pids (sm->roots, open addressing). */
static bool sampler_is_root(const sampler *sm, pid_t pid)
{
    size_t mask = sm->roots_cap - 1;
    for (size_t h = ((size_t)(unsigned)pid * 2654435761u) & mask;; h = (h + 1) & mask) {
        if (sm->roots[h] == 0)
            return false;
        if (sm->roots[h] == pid)
            return true;
    }
}

/* Fills the set of requested pids; false when out of memory (no trees this round). */
static bool sampler_roots(sampler *sm)
{
    size_t cap = 64;
    while (cap < sm->n * 2 + 2)
        cap *= 2;
    if (cap > sm->roots_cap) {
        pid_t *nr = realloc(sm->roots, cap * sizeof *nr);
        if (!nr)
            return false;
        sm->roots = nr;
        sm->roots_cap = cap;
    }
    memset(sm->roots, 0, sm->roots_cap * sizeof *sm->roots);
    size_t mask = sm->roots_cap - 1;
    for (size_t i = 0; i < sm->n; i++) {
        pid_t pid = sm->pids[i];
        if (pid <= 0)
            continue;
        size_t h = ((size_t)(unsigned)pid * 2654435761u) & mask;
        while (sm->roots[h] != 0 && sm->roots[h] != pid)
            h = (h + 1) & mask;
        sm->roots[h] = pid;
    }
    return true;
}

/* Appends the pids of one children file (space-separated) to kids[*n], up to cap. */
static void sampler_kids_file(const char *path, pid_t *kids, size_t *n, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    char buf[4096];
    size_t len = 0;
    ssize_t k;
    /* A number cut by the buffer's end is carried over to the next read. */
    while ((k = read(fd, buf + len, sizeof buf - 1 - len)) > 0) {
        len += (size_t)k;
        buf[len] = '\0';
        char *p = buf, *end;
        for (;;) {
            while (*p == ' ')
                p++;
            long v = strtol(p, &end, 10);
            if (end == p || *end == '\0')
                break;      /* no number, or one that may go on in the next read */
            if (v > 0 && v <= INT32_MAX && *n < cap)
                kids[(*n)++] = (pid_t)v;
            p = end;
        }
        len = strlen(p);
        memmove(buf, p, len);
        if (len == sizeof buf - 1)
            break;          /* not a pid list */
    }
    if (len > 0) {
        buf[len] = '\0';
        char *end;
        long v = strtol(buf, &end, 10);
        if (end != buf && v > 0 && v <= INT32_MAX && *n < cap)
            kids[(*n)++] = (pid_t)v;
    }
    close(fd);
}

/*
 * The children of process pid (with threads threads) into kids (at most cap),
 * from the kernel's own lists: /proc/PID/task/TID/children holds the children
 * each thread forked, so a one-thread process costs one small read. Reading
 * every process of the host to find parent links costs ~12 µs a process
 * (/proc/PID/stat is generated in full), whatever the trees' size; these
 * files ~4 µs per member thread (bench/tree_bench.py).
 */
static size_t sampler_kids(pid_t pid, uint32_t threads, pid_t *kids, size_t cap)
{
    char path[64];
    size_t n = 0;
    if (threads <= 1) {
        snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)pid, (int)pid);
        sampler_kids_file(path, kids, &n, cap);
        return n;
    }
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof path, "/proc/%d/task/%.11s/children", (int)pid, e->d_name);
        sampler_kids_file(path, kids, &n, cap);
    }
    closedir(d);
    return n;
}

/* Grows *arr (elements of size sz, capacity *cap) to hold at least want; false when out of memory. */
static bool sampler_grow(void **arr, size_t *cap, size_t want, size_t sz)
{
    if (want <= *cap)
        return true;
    size_t nc = *cap ? *cap : 256;
    while (nc < want)
        nc *= 2;
    void *na = realloc(*arr, nc * sz);
    if (!na)
        return false;
    *arr = na;
    *cap = nc;
    return true;
}

/* Queues the children of the process par (of tree root, member index parent or
 * UINT32_MAX for the root itself) as candidates for the next level. */
static void sampler_queue_kids(sampler *sm, const proc_sample *par, uint32_t root, uint32_t parent)
{
    pid_t kids[STATE_TREE_MAX];
    size_t nk = sampler_kids(par->pid, par->threads, kids, STATE_TREE_MAX - 1);
    for (size_t k = 0; k < nk && sm->ncand < SAMPLER_DESC_MAX; k++) {
        if (sampler_is_root(sm, kids[k]))
            continue;       /* a worker of its own */
        if (!sampler_grow((void **)&sm->cand, &sm->cand_cap, sm->ncand + 1, sizeof *sm->cand) ||
            !sampler_grow((void **)&sm->cand_pid, &sm->cand_pid_cap, sm->ncand + 1, sizeof *sm->cand_pid))
            return;
        sm->cand[sm->ncand] = (sampler_cand){.root = root, .parent = parent};
        sm->cand_pid[sm->ncand++] = kids[k];
    }
}

/*
 * Reads each requested pid's descendants (at most STATE_TREE_MAX - 1 a tree,
 * breadth first), one level of every tree at a time so each level is one
 * batched libproc2 read (a read of one pid costs ~100 µs of setup, of 64
 * ~25 µs a pid), and leaves them after the hub's own sample in sm->out,
 * grouped by tree. A child joins a tree only if it is alive, still the child
 * of its parent when read, and started no earlier than that parent: a pid
 * reused between listing and reading cannot pass (the kernel gives a new pid
 * to every fork, so a real child always starts after its parent). A process
 * that is itself a requested pid is a worker of its own and is not followed.
 */
static void sampler_trees(sampler *sm)
{
    sm->ndesc = 0;
    for (size_t i = 0; i < sm->n; i++)
        sm->desc_off[i] = sm->desc_len[i] = 0;
    if (!sampler_roots(sm))
        return;
    size_t nmem = 0;
    sm->ncand = 0;
    for (size_t i = 0; i < sm->n; i++)
        if (sm->out[i].alive)
            sampler_queue_kids(sm, &sm->out[i], (uint32_t)i, UINT32_MAX);
    while (sm->ncand > 0) {
        if (!sampler_grow((void **)&sm->cand_out, &sm->cand_out_cap, sm->ncand, sizeof *sm->cand_out) ||
            sampler_read(sm, sm->cand_pid, sm->ncand, sm->cand_out) != 0)
            break;
        size_t level = nmem;
        for (size_t c = 0; c < sm->ncand; c++) {
            const sampler_cand *cd = &sm->cand[c];
            const proc_sample *ps = &sm->cand_out[c];
            const proc_sample *par = cd->parent == UINT32_MAX ? &sm->out[cd->root] : &sm->tmem[cd->parent];
            if (!ps->alive || ps->ppid != par->pid || ps->start_ticks < par->start_ticks ||
                sm->desc_len[cd->root] >= STATE_TREE_MAX - 1)
                continue;
            if (!sampler_grow((void **)&sm->tmem, &sm->tmem_cap, nmem + 1, sizeof *sm->tmem) ||
                !sampler_grow((void **)&sm->tmem_root, &sm->tmem_root_cap, nmem + 1, sizeof *sm->tmem_root))
                break;
            sm->tmem[nmem] = *ps;
            sm->tmem_root[nmem++] = cd->root;
            sm->desc_len[cd->root]++;
        }
        sm->ncand = 0;
        for (size_t m = level; m < nmem; m++)
            sampler_queue_kids(sm, &sm->tmem[m], sm->tmem_root[m], (uint32_t)m);
    }
    /* Into sm->out after the hub's sample, grouped by tree, each tree breadth first. */
    size_t total = sm->n + 1 + nmem;
    if (!sampler_grow((void **)&sm->out, &sm->out_cap, total, sizeof *sm->out)) {
        for (size_t i = 0; i < sm->n; i++)
            sm->desc_len[i] = 0;
        return;
    }
    size_t off = 0;
    for (size_t i = 0; i < sm->n; i++) {
        sm->desc_off[i] = (uint32_t)off;
        off += sm->desc_len[i];
        sm->desc_len[i] = 0;
    }
    for (size_t m = 0; m < nmem; m++) {
        uint32_t r = sm->tmem_root[m];
        sm->out[sm->n + 1 + sm->desc_off[r] + sm->desc_len[r]++] = sm->tmem[m];
    }
    sm->ndesc = nmem;
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
    sampler_children(sm);
    if (sampler_read(sm, sm->pids, sm->n + 1, sm->out) != 0)
        for (size_t i = 0; i <= sm->n; i++)
            sm->out[i].alive = true;  /* a failed read says nothing about exits */
    sampler_trees(sm);
    size_t all = sm->n + 1 + sm->ndesc;
    bool pss = sm->pss_every && sm->round++ % sm->pss_every == 0;
    for (size_t i = 0; i < all; i++)
        sm->out[i].pss_bytes = pss && i != sm->n && sm->out[i].alive ? sampler_pss(sm->out[i].pid) : -1;
}

int sampler_started(pid_t pid, uint64_t *start)
{
    enum pids_item items[] = {PIDS_STATE, PIDS_TICS_BEGAN};
    struct pids_info *info = NULL;
    if (pid <= 0 || procps_pids_new(&info, items, 2) < 0)
        return -1;
    unsigned p = (unsigned)pid;
    struct pids_fetch *f = procps_pids_select(info, &p, 1, PIDS_SELECT_PID);
    int rc = -1;
    if (f && f->counts->total == 1) {
        char st = PIDS_VAL(0, s_ch, f->stacks[0], info);
        *start = PIDS_VAL(1, ull_int, f->stacks[0], info);
        rc = st != 'Z' && st != 'X' ? 0 : -1;
    }
    procps_pids_unref(&info);
    return rc;
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
    free(sm->roots);
    free(sm->cand);
    free(sm->cand_pid);
    free(sm->cand_out);
    free(sm->tmem);
    free(sm->tmem_root);
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
    if (!sampler_grow((void **)&sm->pids, &sm->pids_cap, n + 1, sizeof *sm->pids) ||
        !sampler_grow((void **)&sm->out, &sm->out_cap, n + 1, sizeof *sm->out))
        return -ENOMEM;
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
