/*
 * state.c — the hub's model of every worker.
 *
 * Workers live in a growable array; a small open-addressing index maps the
 * pid of every worker that is not gone to its slot, so applying a report is
 * O(1) with hundreds of workers. The index is rebuilt whenever a worker is
 * added, marked gone or removed — events that happen at most a few times
 * per interval, while reports arrive many times per interval.
 */
#include "hub/state.h"

#include <jansson.h>
#include "hub/rate.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* How far back a sequence number may arrive late before it means a restart. */
#define STATE_SEQ_REORDER 64

enum { SERIES_N = STATE_SERIES_N };
#define SERIES_CPU STATE_CPU
#define SERIES_RSS STATE_RSS
#define SERIES_RPS STATE_RPS
#define SERIES_LAG STATE_LAG

typedef struct {
    float    v[STATE_HISTORY];
    uint32_t head;      /* next slot to write */
    uint32_t len;
} ring;

/* A tree member's CPU clock at the last sample, for its own delta at the next. */
typedef struct {
    uint64_t cpu_ns, cpu_ticks;
    bool     has_cpu_ns;
} tree_clock;

typedef struct {
    uint32_t key;               /* stable handle for the supervisor */
    pid_t    pid;               /* 0: no process (a supervised slot waiting or stopped) */
    worker_state ws;
    double   gone_at;           /* monotonic s when marked gone */

    /* identity given by the supervisor or attach (overrides the agent's) */
    bool     supervised;        /* drover started it: the supervisor owns ws and exits */
    char     app[REPORT_NAME_MAX];
    int64_t  id;                /* -1: none given */
    int64_t  restarts;          /* -1: unknown (not supervised) */
    int      last_status;       /* waitpid status of the last exit; valid if has_exit */
    bool     has_exit;
    bool     spoke;             /* any datagram from the current process */

    /* from the agent */
    bool     has_report;        /* at least one hello/report seen */
    uint32_t report_v;          /* the wire version of its last report */
    bool     saw_hello;         /* this hub saw the process's hello: its counts start at 0 */
    double   last_report_at;    /* monotonic s */
    char     name[REPORT_NAME_MAX];
    int64_t  wid;
    uint64_t last_seq;
    bool     has_seq;
    bool     has_last;          /* a `report` came from this process */
    uint32_t last_has;          /* REPORT_HAS_* of the latest report */
    uint64_t req, err, inflight;/* from the latest report */
    uint32_t nmetrics;
    report_metric metrics[REPORT_METRICS_MAX];
    int      ready;             /* -1 unknown */
    unsigned ready_by;          /* STATE_READY_* bits: which signals said ready */

    /* the current interval (state_tick() closes it) */
    uint32_t iv_reports;        /* reports applied in it */
    uint64_t iv_lat_max, iv_lag_max;      /* µs, max over its reports */
    bool     iv_has_lat_max, iv_has_lag_max;
    uint64_t iv_lat_p50, iv_lat_p99, iv_lag_p99;  /* v1 senders: latest p50, largest p99s */
    bool     iv_has_v1_lat, iv_has_v1_lag;
    uint64_t req_now, ts_now;   /* latest report with req and ts */
    uint64_t req_base, ts_base; /* the same at the previous boundary */
    bool     has_req_now, has_req_base;
    state_hist lat_cur, lag_cur;    /* latest cumulative histograms */
    state_hist lat_base, lag_base;  /* the same at the previous boundary */
    bool     has_lat_base, has_lag_base;

    /* the last completed interval: what views show */
    double   req_per_s, lat_p50_ms, lat_p99_ms, lat_max_ms, lag_p99_ms, lag_max_ms;
    state_hist lat_iv, lag_iv;      /* its samples (cur - base) */
    bool     has_lat_iv, has_lag_iv;

    /* from /proc */
    bool     sampled;
    uint64_t start_ticks;
    uint64_t cpu_ticks;
    uint64_t cpu_ns;
    bool     has_cpu_ns;
    double   sampled_at;
    double   cpu_pct;
    int      cpu_decimals;
    int64_t  rss_bytes;         /* the tree's sum */
    int64_t  pss_bytes;         /* the tree's sum; -1 unless every member's is known */
    double   elapsed_s;
    char     comm[32];
    /* the tree: the worker's process first, then its descendants; each
     * member's CPU clock at the last sample, for its own delta */
    uint32_t ntree, tree_cap;   /* tree_cap grows to the members seen, at most STATE_TREE_MAX */
    tree_member *tree;
    tree_clock *tree_clk;

    ring     hist[SERIES_N];
} worker;

struct state {
    worker  **w;        /* array of pointers: a worker's address is stable */
    size_t    n, cap;
    uint32_t *index;    /* slot+1 per bucket, 0 = empty */
    size_t    index_cap;/* power of two, ≥ 2 × live workers */
    hub_counters c;
    uint32_t  next_key;
    state_ready_fn on_ready;
    void     *on_ready_ctx;
    /* Supervised processes that exited lately: a datagram they sent before
     * dying, applied after their exit, must not bring them back as a worker
     * of their own (STATE_DEAD_PIDS, oldest overwritten). */
    pid_t     dead[STATE_DEAD_PIDS];
    uint32_t  dead_next;
    /* the hub's own samples, oldest first once full: CPU % over the window */
    proc_sample hub_win[STATE_HUB_CPU_WINDOW];
    double    hub_win_at[STATE_HUB_CPU_WINDOW];
    uint32_t  hub_win_head, hub_win_len;
    host_sample host_prev;      /* the last host sample (ok false: none) */
};

const char *state_name(worker_state ws)
{
    static const char *names[] = {"starting", "online", "stopping", "stopped",
                                  "backoff", "errored", "gone"};
    return (unsigned)ws < sizeof names / sizeof names[0] ? names[ws] : "unknown";
}

/* ---- sparse histograms -------------------------------------------------- */

/* Frees h's storage and empties it. */
static void sh_free(state_hist *h)
{
    free(h->idx);
    free(h->count);
    *h = (state_hist){0};
}

/*
 * Makes room for n buckets (n <= HIST_NBUCKETS). Returns 0, or -1 when out
 * of memory (h is then unchanged).
 */
static int sh_reserve(state_hist *h, uint32_t n)
{
    if (n <= h->cap)
        return 0;
    uint32_t cap = h->cap ? h->cap : 16;
    while (cap < n)
        cap *= 2;
    if (cap > HIST_NBUCKETS)
        cap = HIST_NBUCKETS;
    uint16_t *ni = realloc(h->idx, cap * sizeof *ni);
    if (!ni)
        return -1;
    h->idx = ni;
    uint64_t *nc = realloc(h->count, cap * sizeof *nc);
    if (!nc)
        return -1;
    h->count = nc;
    h->cap = cap;
    return 0;
}

/* Copies n buckets into h. Returns 0, or -1 when out of memory (h is then empty). */
static int sh_set(state_hist *h, const uint16_t *idx, const uint64_t *count, uint32_t n)
{
    if (sh_reserve(h, n) != 0) {
        h->n = 0;
        return -1;
    }
    if (n) {
        memcpy(h->idx, idx, n * sizeof *idx);
        memcpy(h->count, count, n * sizeof *count);
    }
    h->n = n;
    return 0;
}

/*
 * Sets d to cur - base, bucket by bucket (both rising). A bucket of base that
 * cur lacks or holds fewer samples in means the counts started again (a new
 * agent in the same pid): d is then all of cur. Returns 0 or -1 (out of
 * memory, d empty).
 */
static int sh_delta(state_hist *d, const state_hist *cur, const state_hist *base)
{
    if (sh_reserve(d, cur->n) != 0) {
        d->n = 0;
        return -1;
    }
    uint32_t j = 0, k = 0;
    for (uint32_t i = 0; i < cur->n; i++) {
        uint64_t b = 0;
        if (j < base->n && base->idx[j] < cur->idx[i])
            return sh_set(d, cur->idx, cur->count, cur->n);   /* a base bucket cur lacks */
        if (j < base->n && base->idx[j] == cur->idx[i])
            b = base->count[j++];
        if (b > cur->count[i])
            return sh_set(d, cur->idx, cur->count, cur->n);   /* fewer than before */
        if (cur->count[i] > b) {
            d->idx[k] = cur->idx[i];
            d->count[k] = cur->count[i] - b;
            k++;
        }
    }
    if (j < base->n)
        return sh_set(d, cur->idx, cur->count, cur->n);       /* base buckets past cur's */
    d->n = k;
    return 0;
}

state *state_new(void)
{
    state *s = calloc(1, sizeof(state));
    if (s)
        s->c.host = (host_figures){.cpu_pct = NAN, .mem_total_bytes = -1, .mem_used_bytes = -1,
                                   .load = {NAN, NAN, NAN}, .ncpu = -1};
    return s;
}

/* Frees a worker and its histograms. */
static void worker_free(worker *w)
{
    sh_free(&w->lat_cur);
    sh_free(&w->lag_cur);
    sh_free(&w->lat_base);
    sh_free(&w->lag_base);
    sh_free(&w->lat_iv);
    sh_free(&w->lag_iv);
    free(w->tree);
    free(w->tree_clk);
    free(w);
}

void state_free(state *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        worker_free(s->w[i]);
    free(s->w);
    free(s->index);
    free(s);
}

/* ---- pid index ---------------------------------------------------------- */

static size_t state_hash(pid_t pid, size_t cap)
{
    return ((uint32_t)pid * 2654435761u) & (cap - 1);
}

/* Rebuilds the pid index over every worker that is not gone. */
static void state_reindex(state *s)
{
    size_t want = 16;
    while (want < s->n * 2)
        want <<= 1;
    if (want != s->index_cap) {
        uint32_t *ni = calloc(want, sizeof *ni);
        if (!ni)
            return; /* keep the old index; lookups fall back to a scan */
        free(s->index);
        s->index = ni;
        s->index_cap = want;
    } else {
        memset(s->index, 0, s->index_cap * sizeof *s->index);
    }
    for (size_t i = 0; i < s->n; i++) {
        if (s->w[i]->ws == WS_GONE || s->w[i]->pid <= 0)
            continue;
        size_t h = state_hash(s->w[i]->pid, s->index_cap);
        while (s->index[h])
            h = (h + 1) & (s->index_cap - 1);
        s->index[h] = (uint32_t)i + 1;
    }
}

/* Returns the live (not gone) worker with this pid, or NULL. */
static worker *state_find(const state *s, pid_t pid)
{
    if (s->index_cap >= s->n * 2 && s->index) {
        size_t h = state_hash(pid, s->index_cap);
        while (s->index[h]) {
            worker *w = s->w[s->index[h] - 1];
            if (w->pid == pid)
                return w;
            h = (h + 1) & (s->index_cap - 1);
        }
        return NULL;
    }
    for (size_t i = 0; i < s->n; i++)
        if (s->w[i]->pid == pid && s->w[i]->ws != WS_GONE && pid > 0)
            return s->w[i];
    return NULL;
}

/* Ends the current interval's accumulation (its figures were taken or are dropped). */
static void state_iv_clear(worker *w)
{
    w->iv_reports = 0;
    w->iv_has_lat_max = w->iv_has_lag_max = false;
    w->iv_has_v1_lat = w->iv_has_v1_lag = false;
    w->iv_lat_max = w->iv_lag_max = 0;
}

/* Sets every figure of the last completed interval to unknown. */
static void state_figures_unknown(worker *w)
{
    w->req_per_s = w->lat_p50_ms = w->lat_p99_ms = w->lat_max_ms = NAN;
    w->lag_p99_ms = w->lag_max_ms = NAN;
    w->has_lat_iv = w->has_lag_iv = false;
}

/* Forgets everything learnt from the previous process of a worker (keeps histogram storage). */
static void state_reset_process(worker *w)
{
    w->spoke = false;
    w->has_report = false;
    w->saw_hello = false;
    w->name[0] = '\0';
    w->wid = -1;
    w->has_seq = false;
    w->has_last = false;
    w->last_has = 0;
    w->nmetrics = 0;
    state_iv_clear(w);
    state_figures_unknown(w);
    w->has_req_now = w->has_req_base = false;
    w->lat_cur.n = w->lag_cur.n = 0;
    w->has_lat_base = w->has_lag_base = false;
    w->ready = -1;
    w->ready_by = 0;
    w->sampled = false;
    w->cpu_pct = NAN;
    w->cpu_decimals = 2;
    w->rss_bytes = -1;
    w->pss_bytes = -1;
    w->ntree = 0;
    w->elapsed_s = NAN;
    w->comm[0] = '\0';
}

/* Adds a worker for pid in state online; returns it, or NULL when out of memory. */
static worker *state_add(state *s, pid_t pid)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        worker **nw = realloc(s->w, nc * sizeof *nw);
        if (!nw)
            return NULL;
        s->w = nw;
        s->cap = nc;
    }
    worker *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->key = ++s->next_key;
    w->pid = pid;
    w->ws = WS_ONLINE;
    w->id = -1;
    w->restarts = -1;
    state_reset_process(w);
    s->w[s->n++] = w;
    state_reindex(s);
    return w;
}

static worker *state_find_or_add(state *s, pid_t pid)
{
    worker *w = state_find(s, pid);
    return w ? w : state_add(s, pid);
}

static void state_mark_gone(state *s, worker *w, double now)
{
    w->ws = WS_GONE;
    w->gone_at = now;
    state_reindex(s);
}

/* ---- ingest ------------------------------------------------------------- */

/*
 * Takes the cumulative histogram h of a report into cur; the first one from
 * a process also sets the base it is differenced against: empty when this
 * hub saw the process's hello (its counts started at zero under our eyes),
 * else the histogram itself (a hub that joined late shows what comes next,
 * not everything since the agent started).
 */
static void state_take_hist(worker *w, const report_hist *h, state_hist *cur, state_hist *base,
                            bool *has_base)
{
    if (!*has_base) {
        if (w->saw_hello)
            base->n = 0;
        else
            sh_set(base, h->idx, h->count, h->n);
        *has_base = true;
    }
    sh_set(cur, h->idx, h->count, h->n);
}

/*
 * Applies the figures of a `report` or `bye`: counters and metrics as the
 * latest values; the interval's maxima over every report; v1 quantiles; the
 * cumulative histograms and request count that state_tick() differences.
 */
static void state_apply_figures(worker *w, const report *r)
{
    w->has_last = true;
    w->last_has = r->has;
    w->req = r->req;
    w->err = r->err;
    w->inflight = r->inflight;
    w->nmetrics = r->nmetrics <= REPORT_METRICS_MAX ? r->nmetrics : 0;
    if (w->nmetrics)
        memcpy(w->metrics, r->metrics, w->nmetrics * sizeof r->metrics[0]);
    w->iv_reports++;

    if (r->has & REPORT_HAS_LAT_MAX) {
        if (!w->iv_has_lat_max || r->lat_max > w->iv_lat_max)
            w->iv_lat_max = r->lat_max;
        w->iv_has_lat_max = true;
    }
    if (r->has & REPORT_HAS_LAG_MAX) {
        if (!w->iv_has_lag_max || r->lag_max > w->iv_lag_max)
            w->iv_lag_max = r->lag_max;
        w->iv_has_lag_max = true;
    }
    if (r->has & REPORT_HAS_LAT) {
        w->iv_lat_p50 = r->lat_p50;
        if (!w->iv_has_v1_lat || r->lat_p99 > w->iv_lat_p99)
            w->iv_lat_p99 = r->lat_p99;
        w->iv_has_v1_lat = true;
    }
    if (r->has & REPORT_HAS_LAG) {
        if (!w->iv_has_v1_lag || r->lag_p99 > w->iv_lag_p99)
            w->iv_lag_p99 = r->lag_p99;
        w->iv_has_v1_lag = true;
    }
    if (r->has & REPORT_HAS_LAT_H)
        state_take_hist(w, &r->lat_h, &w->lat_cur, &w->lat_base, &w->has_lat_base);
    if (r->has & REPORT_HAS_LAG_H)
        state_take_hist(w, &r->lag_h, &w->lag_cur, &w->lag_base, &w->has_lag_base);

    if ((r->has & REPORT_HAS_REQ) && (r->has & REPORT_HAS_TS)) {
        w->req_now = r->req;
        w->ts_now = r->ts;
        w->has_req_now = true;
        if (!w->has_req_base) {
            w->req_base = r->req;
            w->ts_base = r->ts;
            w->has_req_base = true;
        }
    }
}

/* Sets readiness and tells the hook when a process becomes ready. */
static void state_set_ready(state *s, worker *w, bool ready, unsigned by)
{
    int was = w->ready;
    unsigned had = w->ready_by;
    w->ready = ready;
    if (ready)
        w->ready_by |= by;
    /* again when another kind of signal says it (a pinned readiness mode waits for its own) */
    if (ready && (was != 1 || !(had & by)) && s->on_ready)
        s->on_ready(s->on_ready_ctx, w->key, w->pid);
}

void state_apply_report(state *s, const report *r, double now)
{
    /* A `bye` can arrive after its sender was reaped and its row removed:
     * it must not bring the row back as a new worker. */
    worker *w = state_find(s, (pid_t)r->pid);
    if (!w && r->type != REPORT_T_BYE) {
        for (uint32_t i = 0; i < STATE_DEAD_PIDS; i++)
            if (s->dead[i] == (pid_t)r->pid) {
                s->c.reports_total++;   /* a late word from a reaped worker */
                return;
            }
        w = state_find_or_add(s, (pid_t)r->pid);
    }
    if (!w && r->type == REPORT_T_BYE) {
        s->c.reports_total++;
        return;
    }
    if (!w)
        return;
    s->c.reports_total++;

    /* Above the last sequence number: any numbers skipped were lost. Far
     * below it, or 0: the agent restarted in this pid (exec), so count
     * afresh. Just below it: a datagram overtaken by a later one (the agent
     * sends logs and reports from different threads), neither. */
    if (!w->has_seq || r->seq > w->last_seq) {
        if (w->has_seq && r->seq > w->last_seq + 1)
            s->c.dropped_total += r->seq - w->last_seq - 1;
        w->last_seq = r->seq;
    } else if (r->seq == 0 || r->seq + STATE_SEQ_REORDER < w->last_seq) {
        w->last_seq = r->seq;
    }
    w->has_seq = true;

    w->spoke = true;
    w->has_report = true;
    w->report_v = r->v;
    w->last_report_at = now;
    if (r->has & REPORT_HAS_NAME)
        memcpy(w->name, r->name, sizeof w->name);
    if (r->has & REPORT_HAS_WID)
        w->wid = (int64_t)r->wid;
    if (r->has & REPORT_HAS_READY)
        state_set_ready(s, w, r->ready, STATE_READY_AGENT);

    if (r->type == REPORT_T_HELLO && r->seq == 0)
        w->saw_hello = true;            /* counts from here start at zero */
    if (r->type != REPORT_T_REPORT && r->type != REPORT_T_BYE)
        return;
    state_apply_figures(w, r);
}

void state_apply_notify(state *s, pid_t pid, const notify_msg *m, double now)
{
    worker *w = state_find_or_add(s, pid);
    if (!w)
        return;
    (void)now;
    s->c.reports_total++;
    w->spoke = true;
    if (m->ready)
        state_set_ready(s, w, true, STATE_READY_NOTIFY);
    if (m->stopping && !w->supervised && w->ws != WS_GONE)
        w->ws = WS_STOPPING;
}

void state_count_bad(state *s)      { s->c.bad_total++; }
void state_count_spoofed(state *s)  { s->c.spoofed_total++; }

/* ---- sampler ------------------------------------------------------------ */

size_t state_pids(const state *s, pid_t *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n && k < cap; i++)
        if (s->w[i]->ws != WS_GONE && s->w[i]->pid > 0)
            out[k++] = s->w[i]->pid;
    return k;
}

/*
 * CPU % of one core between two samples of the same process: from the
 * process CPU clock (ns, every thread) when both samples have it, else from
 * /proc/PID/stat's clock ticks. *decimals gets the decimals the source's
 * resolution allows over this span: 2 for the ns clock, else the digits of
 * one tick (1/HZ s) as a percentage of the span (at HZ=100 and 1 s: 1 % →
 * 0 decimals; 10 s: 0.1 % → 1).
 */
static double state_cpu_pct(const proc_sample *prev, const proc_sample *cur, double prev_at, double now,
                            int *decimals)
{
    static long hz;
    if (!hz)
        hz = sysconf(_SC_CLK_TCK);
    *decimals = 2;
    if (now <= prev_at)
        return NAN;
    double span = now - prev_at;
    if (prev->has_cpu_ns && cur->has_cpu_ns && cur->cpu_ns >= prev->cpu_ns)
        return (double)(cur->cpu_ns - prev->cpu_ns) / 1e9 / span * 100.0;
    if (cur->cpu_ticks < prev->cpu_ticks || hz <= 0)
        return NAN;
    double tick_pct = 100.0 / (double)hz / span;     /* one tick, in % */
    int d = 0;
    while (d < 2 && tick_pct < 1.0 / pow(10, d) - 1e-12)
        d++;
    *decimals = d;
    return (double)(cur->cpu_ticks - prev->cpu_ticks) / (double)hz / span * 100.0;
}

/*
 * CPU seconds one tree member used since the previous sample, or NAN when
 * unknown. prev: the same member (pid and start time) at the previous
 * sample, or NULL when it was not in the tree then: a member that started
 * within the span counts all of its time (it was born in the interval), any
 * other newcomer (one the tree gained by reparenting, or past the cap) none.
 * *decimals is lowered to what a tick-based figure allows (state_cpu_pct).
 */
static double state_member_cpu_s(const worker *w, int prev, const proc_sample *cur, double span,
                                 int *decimals)
{
    proc_sample p = {0};
    if (prev >= 0) {
        p.cpu_ns = w->tree_clk[prev].cpu_ns;
        p.cpu_ticks = w->tree_clk[prev].cpu_ticks;
        p.has_cpu_ns = w->tree_clk[prev].has_cpu_ns;
    } else if (!(cur->elapsed_s >= 0 && cur->elapsed_s <= span)) {
        return 0;
    } else {
        p.has_cpu_ns = cur->has_cpu_ns;
    }
    int d = 2;
    double pct = state_cpu_pct(&p, cur, 0, span, &d);
    if (d < *decimals)
        *decimals = d;
    return pct * span / 100.0;
}

/* Index of the member (pid, start) in w's tree at the previous sample, or -1. */
static int state_tree_find(const worker *w, pid_t pid, uint64_t start)
{
    for (uint32_t i = 0; i < w->ntree; i++)
        if (w->tree[i].pid == pid && w->tree[i].start_ticks == start)
            return (int)i;
    return -1;
}

void state_apply_sample(state *s, const proc_sample *ps, const proc_sample *desc, size_t ndesc, double now)
{
    worker *w = state_find(s, ps->pid);
    if (!w)
        return;
    if (!ps->alive || (w->sampled && ps->start_ticks != w->start_ticks)) {
        /* The supervisor learns of its own children's exits from waitpid,
         * which also gives the exit status; a zombie waiting to be reaped is
         * not news here. */
        if (!w->supervised)
            state_mark_gone(s, w, now);
        return;
    }
    if (ndesc > STATE_TREE_MAX - 1)
        ndesc = STATE_TREE_MAX - 1;
    /* The new tree, built beside the old one: each member's CPU is its own
     * delta against itself (matched by pid and start time), so members
     * leaving or joining never make the sum jump or go negative. */
    tree_member nt[STATE_TREE_MAX];
    uint32_t nn = 0;
    double span = w->sampled ? now - w->sampled_at : 0;
    double cpu_s = 0;
    int decimals = 2;
    bool cpu_known = w->sampled && span > 0;
    int64_t rss = 0, pss = 0;
    bool pss_known = true;
    tree_clock clk[STATE_TREE_MAX];
    for (size_t i = 0; i <= ndesc; i++) {
        const proc_sample *m = i == 0 ? ps : &desc[i - 1];
        if (i > 0 && !m->alive)
            continue;       /* exited between the tree walk and its read */
        int prev = w->sampled ? state_tree_find(w, m->pid, m->start_ticks) : -1;
        tree_member *t = &nt[nn];
        *t = (tree_member){.pid = m->pid, .ppid = m->ppid, .start_ticks = m->start_ticks,
                           .cpu_pct = NAN, .rss_bytes = m->rss_bytes <= INT64_MAX ? (int64_t)m->rss_bytes : INT64_MAX,
                           .pss_bytes = m->pss_bytes};
        memcpy(t->comm, m->comm, sizeof t->comm);
        t->comm[sizeof t->comm - 1] = '\0';
        if (t->pss_bytes < 0 && prev >= 0)
            t->pss_bytes = w->tree[prev].pss_bytes;     /* not re-read this round: the last reading */
        if (cpu_known) {
            int d = 2;
            double c = state_member_cpu_s(w, prev, m, span, &d);
            if (isnan(c)) {
                cpu_known = false;
            } else {
                cpu_s += c;
                t->cpu_pct = prev >= 0 || (m->elapsed_s >= 0 && m->elapsed_s <= span) ? c / span * 100.0 : NAN;
                if (d < decimals)
                    decimals = d;
            }
        }
        clk[nn].cpu_ns = m->cpu_ns;
        clk[nn].cpu_ticks = m->cpu_ticks;
        clk[nn].has_cpu_ns = m->has_cpu_ns;
        rss += t->rss_bytes;
        if (t->pss_bytes < 0)
            pss_known = false;
        else
            pss += t->pss_bytes;
        nn++;
    }
    if (w->sampled) {
        w->cpu_pct = cpu_known ? cpu_s / span * 100.0 : NAN;
        w->cpu_decimals = decimals;
    }
    if (nn > w->tree_cap) {
        /* Grown to what the tree needs: most workers are one process. */
        tree_member *t = realloc(w->tree, nn * sizeof *t);
        if (t)
            w->tree = t;
        tree_clock *c = t ? realloc(w->tree_clk, nn * sizeof *c) : NULL;
        if (c)
            w->tree_clk = c;
        if (t && c)
            w->tree_cap = nn;
        else
            nn = w->tree_cap;   /* out of memory: the members that fit (the sums above keep them all) */
    }
    if (nn) {
        memcpy(w->tree, nt, nn * sizeof nt[0]);
        memcpy(w->tree_clk, clk, nn * sizeof clk[0]);
    }
    w->ntree = nn;
    w->sampled = true;
    w->start_ticks = ps->start_ticks;
    w->cpu_ticks = ps->cpu_ticks;
    w->cpu_ns = ps->cpu_ns;
    w->has_cpu_ns = ps->has_cpu_ns;
    w->sampled_at = now;
    w->rss_bytes = rss;
    w->pss_bytes = pss_known ? pss : -1;
    w->elapsed_s = ps->elapsed_s;
    memcpy(w->comm, ps->comm, sizeof w->comm);
    w->comm[sizeof w->comm - 1] = '\0';
}

/*
 * Keeps the hub's last STATE_HUB_CPU_WINDOW samples; its CPU % is taken
 * between the oldest and the newest, so one interval's few hundred µs are
 * not printed as 0 or one whole tick.
 */
void state_apply_hub_sample(state *s, const proc_sample *ps, double now)
{
    uint32_t cap = STATE_HUB_CPU_WINDOW;
    uint32_t oldest = (s->hub_win_head + cap - s->hub_win_len) % cap;
    if (s->hub_win_len == cap) {
        s->hub_win_len--;                       /* the oldest slot is overwritten below */
        oldest = (oldest + 1) % cap;
    }
    s->hub_win[s->hub_win_head] = *ps;
    s->hub_win_at[s->hub_win_head] = now;
    s->hub_win_head = (s->hub_win_head + 1) % cap;
    s->hub_win_len++;
    int dec;
    if (s->hub_win_len >= 2) {
        s->c.cpu_pct = state_cpu_pct(&s->hub_win[oldest], ps, s->hub_win_at[oldest], now, &dec);
        s->c.cpu_window_s = now - s->hub_win_at[oldest];
    } else {
        s->c.cpu_pct = NAN;
        s->c.cpu_window_s = NAN;
    }
    s->c.rss_bytes = (int64_t)ps->rss_bytes;
}

/* See state.h: a failed read makes every figure unknown, not stale. */
void state_apply_host_sample(state *s, const host_sample *hs)
{
    host_figures *h = &s->c.host;
    if (!hs->ok) {
        *h = (host_figures){.cpu_pct = NAN, .mem_total_bytes = -1, .mem_used_bytes = -1,
                            .load = {NAN, NAN, NAN}, .ncpu = -1};
        s->host_prev.ok = false;
        return;
    }
    const host_sample *p = &s->host_prev;
    uint64_t dt = hs->cpu_total_ticks - p->cpu_total_ticks, di = hs->cpu_idle_ticks - p->cpu_idle_ticks;
    h->cpu_pct = p->ok && hs->cpu_total_ticks > p->cpu_total_ticks && di <= dt
        ? 100.0 * (double)(dt - di) / (double)dt : NAN;
    h->mem_total_bytes = (int64_t)hs->mem_total_bytes;
    h->mem_used_bytes = (int64_t)hs->mem_used_bytes;
    for (int i = 0; i < 3; i++)
        h->load[i] = hs->load[i];
    h->ncpu = hs->ncpu > 0 ? hs->ncpu : -1;
    s->host_prev = *hs;
}

/* ---- interval ----------------------------------------------------------- */

static void ring_push(ring *r, double v)
{
    r->v[r->head] = (float)v;
    r->head = (r->head + 1) % STATE_HISTORY;
    if (r->len < STATE_HISTORY)
        r->len++;
}

/*
 * The interval's quantiles of one histogram: iv = cur - base, then base =
 * cur. p50/p99 (µs → ms, p50 may be NULL) are NAN when no sample came.
 * *max (µs, *has_max) is the max over the interval's reports; it clamps the
 * upper bucket edges when it covers the highest sample. When it does not (a
 * report, and its max, was lost, or none was sent) it is replaced by the
 * upper edge of the highest bucket: never low, < 6.25 % high, like the
 * quantiles.
 */
static bool state_close_hist(state_hist *cur, state_hist *base, state_hist *iv, bool *has_max,
                             uint64_t *max, double *p50, double *p99)
{
    int rc = sh_delta(iv, cur, base);
    sh_set(base, cur->idx, cur->count, cur->n);
    if (rc != 0 || iv->n == 0)
        return false;
    unsigned top = iv->idx[iv->n - 1];
    uint64_t lo = top ? hist_bucket_upper(top - 1) + 1 : 0;
    if (!*has_max || *max < lo || *max > hist_bucket_upper(top)) {
        *max = hist_bucket_upper(top);
        *has_max = true;
    }
    if (p50)
        *p50 = (double)hist_quantile_sparse(iv->idx, iv->count, iv->n, 5000, *max) / 1000.0;
    *p99 = (double)hist_quantile_sparse(iv->idx, iv->count, iv->n, 9900, *max) / 1000.0;
    return true;
}

/*
 * Closes a worker's interval: its figures from what arrived in it (all NAN
 * when no report came), then the bases move to the latest values.
 */
static void state_close_interval(worker *w)
{
    state_figures_unknown(w);
    if (w->iv_reports == 0)
        return;
    if (w->has_req_now && w->has_req_base) {
        w->req_per_s = rate_per_s(w->req_base, w->req_now, w->ts_base, w->ts_now);
        w->req_base = w->req_now;
        w->ts_base = w->ts_now;
    }
    if (w->has_lat_base)
        w->has_lat_iv = state_close_hist(&w->lat_cur, &w->lat_base, &w->lat_iv, &w->iv_has_lat_max,
                                         &w->iv_lat_max, &w->lat_p50_ms, &w->lat_p99_ms);
    else if (w->iv_has_v1_lat) {
        w->lat_p50_ms = (double)w->iv_lat_p50 / 1000.0;
        w->lat_p99_ms = (double)w->iv_lat_p99 / 1000.0;
    }
    if (w->has_lag_base)
        w->has_lag_iv = state_close_hist(&w->lag_cur, &w->lag_base, &w->lag_iv, &w->iv_has_lag_max,
                                         &w->iv_lag_max, NULL, &w->lag_p99_ms);
    else if (w->iv_has_v1_lag)
        w->lag_p99_ms = (double)w->iv_lag_p99 / 1000.0;
    if (w->iv_has_lat_max)
        w->lat_max_ms = (double)w->iv_lat_max / 1000.0;
    if (w->iv_has_lag_max)
        w->lag_max_ms = (double)w->iv_lag_max / 1000.0;
    state_iv_clear(w);
}

void state_tick(state *s, double now, double interval_s)
{
    size_t k = 0;
    bool removed = false;
    for (size_t i = 0; i < s->n; i++) {
        worker *w = s->w[i];
        /* "+ 0.5" so a worker gone just before a tick is still shown on the
         * STATE_GONE_INTERVALS-th tick after it, whatever the phase. */
        if (w->ws == WS_GONE && now - w->gone_at > (STATE_GONE_INTERVALS - 0.5) * interval_s) {
            worker_free(w);
            removed = true;
            continue;
        }
        if (w->ws != WS_GONE) {
            state_close_interval(w);
            ring_push(&w->hist[SERIES_CPU], w->cpu_pct);
            ring_push(&w->hist[SERIES_RSS], (double)w->rss_bytes);
            ring_push(&w->hist[SERIES_RPS], w->req_per_s);
            ring_push(&w->hist[SERIES_LAG], w->lag_p99_ms);
        }
        s->w[k++] = w;
    }
    s->n = k;
    if (removed)
        state_reindex(s);
}

size_t state_count(const state *s)
{
    return s->n;
}

/* Fills one view from a worker. */
static void state_view(const worker *w, worker_view *v, double now, double interval_s)
{
    memset(v, 0, sizeof *v);
    const char *app = w->app[0] ? w->app : w->name[0] ? w->name : w->comm;
    snprintf(v->app, sizeof v->app, "%s", app);
    v->key = w->key;
    v->owned = w->supervised || w->id >= 0;
    v->start_ticks = w->sampled ? w->start_ticks : 0;
    v->id = w->id >= 0 ? w->id : w->wid;
    v->pid = w->pid;
    v->state = w->ws;
    v->agent_v = w->has_report ? (int)w->report_v : 0;
    v->agent = w->has_report && w->ws != WS_GONE && w->pid > 0 &&
               now - w->last_report_at <= STATE_AGENT_INTERVALS * interval_s;
    v->restarts = w->restarts;
    v->has_exit = w->has_exit;
    v->last_status = w->last_status;
    bool running = w->ws != WS_GONE && w->pid > 0;
    v->uptime_s = running ? w->elapsed_s : NAN;
    v->cpu_pct = running ? w->cpu_pct : NAN;
    v->rss_bytes = running ? w->rss_bytes : -1;
    v->pss_bytes = running ? w->pss_bytes : -1;
    v->procs = running && w->sampled ? (int64_t)w->ntree : -1;
    v->ntree = running ? w->ntree : 0;
    v->tree = v->ntree ? w->tree : NULL;
    v->cpu_decimals = w->cpu_decimals;
    v->ready = w->ready;
    v->req_total = v->err_total = v->inflight = -1;
    v->req_per_s = v->lat_p50_ms = v->lat_p99_ms = v->lat_max_ms = NAN;
    v->lag_p99_ms = v->lag_max_ms = NAN;
    if (!w->has_last || !running)
        return;
    if (w->last_has & REPORT_HAS_REQ)
        v->req_total = (int64_t)(w->req <= INT64_MAX ? w->req : INT64_MAX);
    if (w->last_has & REPORT_HAS_ERR)
        v->err_total = (int64_t)(w->err <= INT64_MAX ? w->err : INT64_MAX);
    if (w->last_has & REPORT_HAS_INFLIGHT)
        v->inflight = (int64_t)(w->inflight <= INT64_MAX ? w->inflight : INT64_MAX);
    v->req_per_s = w->req_per_s;
    v->lat_p50_ms = w->lat_p50_ms;
    v->lat_p99_ms = w->lat_p99_ms;
    v->lat_max_ms = w->lat_max_ms;
    v->lag_p99_ms = w->lag_p99_ms;
    v->lag_max_ms = w->lag_max_ms;
    v->lat_h = w->has_lat_iv ? &w->lat_iv : NULL;
    v->lag_h = w->has_lag_iv ? &w->lag_iv : NULL;
    v->has_metrics = true;
    v->nmetrics = w->nmetrics;
    memcpy(v->metrics, w->metrics, w->nmetrics * sizeof w->metrics[0]);
}

/* Orders views by app, then id (unknown last), then pid. */
static int state_view_cmp(const void *a, const void *b)
{
    const worker_view *x = a, *y = b;
    int c = strcmp(x->app, y->app);
    if (c)
        return c;
    if (x->id != y->id) {
        if (x->id < 0 || y->id < 0)
            return x->id < 0 ? 1 : -1;
        return x->id < y->id ? -1 : 1;
    }
    return (x->pid > y->pid) - (x->pid < y->pid);
}

size_t state_snapshot(const state *s, worker_view *out, size_t cap, double now, double interval_s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->n && k < cap; i++)
        state_view(s->w[i], &out[k++], now, interval_s);
    if (k > 1)
        qsort(out, k, sizeof *out, state_view_cmp);
    return k;
}

hub_counters state_counters(const state *s)
{
    hub_counters c = s->c;
    c.workers = 0;
    for (size_t i = 0; i < s->n; i++)
        c.workers += s->w[i]->ws != WS_GONE;
    return c;
}

/* ---- supervised and attached workers ------------------------------------ */

void state_set_ready_hook(state *s, state_ready_fn fn, void *ctx)
{
    s->on_ready = fn;
    s->on_ready_ctx = ctx;
}

/* Returns the worker with this key, or NULL. */
static worker *state_by_key(const state *s, uint32_t key)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->w[i]->key == key)
            return s->w[i];
    return NULL;
}

uint32_t state_sup_add(state *s, const char *app, int64_t id)
{
    worker *w = state_add(s, 0);
    if (!w)
        return 0;
    w->supervised = true;
    w->ws = WS_STOPPED;
    snprintf(w->app, sizeof w->app, "%s", app);
    w->id = id;
    w->restarts = 0;
    return w->key;
}

void state_sup_spawned(state *s, uint32_t key, pid_t pid)
{
    worker *w = state_by_key(s, key);
    if (!w)
        return;
    /* No report from pid can have been applied yet: datagrams are applied on
     * the loop thread, which is here, and the pid did not exist before fork. */
    state_reset_process(w);
    w->supervised = true;
    w->pid = pid;
    w->ws = WS_STARTING;
    state_reindex(s);
}

void state_sup_set(state *s, uint32_t key, worker_state ws)
{
    worker *w = state_by_key(s, key);
    if (w)
        w->ws = ws;
}

void state_sup_exited(state *s, uint32_t key, int wstatus, worker_state ws)
{
    worker *w = state_by_key(s, key);
    if (!w)
        return;
    w->last_status = wstatus;
    w->has_exit = true;
    if (w->pid > 0) {
        s->dead[s->dead_next] = w->pid;
        s->dead_next = (s->dead_next + 1) % STATE_DEAD_PIDS;
    }
    w->pid = 0;
    w->ws = ws;
    w->ready = -1;
    w->ready_by = 0;
    state_reindex(s);
}

void state_sup_restarts(state *s, uint32_t key, int64_t restarts)
{
    worker *w = state_by_key(s, key);
    if (w)
        w->restarts = restarts;
}

void state_sup_remove(state *s, uint32_t key)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->w[i]->key == key) {
            worker_free(s->w[i]);
            memmove(&s->w[i], &s->w[i + 1], (s->n - i - 1) * sizeof s->w[0]);
            s->n--;
            state_reindex(s);
            return;
        }
    }
}

int state_sup_ready(const state *s, uint32_t key)
{
    worker *w = state_by_key(s, key);
    return w ? w->ready : -1;
}

unsigned state_sup_ready_by(const state *s, uint32_t key)
{
    worker *w = state_by_key(s, key);
    return w ? w->ready_by : 0;
}

bool state_sup_spoke(const state *s, uint32_t key)
{
    worker *w = state_by_key(s, key);
    return w && w->spoke;
}

int64_t state_sup_rss(const state *s, uint32_t key)
{
    worker *w = state_by_key(s, key);
    return w && w->pid > 0 ? w->rss_bytes : -1;
}

bool state_pid_slot(const state *s, pid_t pid, const char **app, int64_t *id)
{
    worker *w = state_find(s, pid);
    if (!w || !w->supervised)
        return false;
    *app = w->app;
    *id = w->id;
    return true;
}

bool state_pid_label(const state *s, pid_t pid, const char **app, int64_t *id)
{
    worker *w = state_find(s, pid);
    if (!w)
        return false;
    *app = w->app[0] ? w->app : w->name[0] ? w->name : w->comm;
    *id = w->id >= 0 ? w->id : w->wid;
    return true;
}

int state_pid_ready(const state *s, pid_t pid)
{
    worker *w = state_find(s, pid);
    return w ? w->ready : -1;
}

void state_identify(state *s, pid_t pid, const char *app, int64_t id)
{
    worker *w = state_find_or_add(s, pid);
    if (!w || w->supervised)
        return;
    snprintf(w->app, sizeof w->app, "%s", app);
    w->id = id;
}

size_t state_history(const state *s, uint32_t key, state_series series, double *out, size_t cap)
{
    worker *w = state_by_key(s, key);
    if (!w || (unsigned)series >= SERIES_N)
        return 0;
    const ring *r = &w->hist[series];
    size_t n = r->len < cap ? r->len : cap;
    /* the last n points, oldest first */
    for (size_t i = 0; i < n; i++) {
        size_t idx = (r->head + STATE_HISTORY - n + i) % STATE_HISTORY;
        out[i] = r->v[idx];
    }
    return n;
}

/* ---- upgrade ------------------------------------------------------------ */

json_t *state_save(const state *s)
{
    json_t *ws = json_array();
    for (size_t i = 0; i < s->n; i++) {
        const worker *w = s->w[i];
        if (w->pid <= 0 || w->ws == WS_GONE)
            continue;
        json_t *series = json_array();
        for (int k = 0; k < SERIES_N; k++) {
            const ring *r = &w->hist[k];
            json_t *pts = json_array();
            for (uint32_t j = 0; j < r->len; j++) {
                float v = r->v[(r->head + STATE_HISTORY - r->len + j) % STATE_HISTORY];
                json_array_append_new(pts, isfinite(v) ? json_real(v) : json_null());
            }
            json_array_append_new(series, pts);
        }
        json_array_append_new(ws, json_pack("{s:i, s:o}", "pid", (int)w->pid, "hist", series));
    }
    return json_pack("{s:I, s:I, s:I, s:I, s:o}", "reports_total", (json_int_t)s->c.reports_total,
                     "dropped_total", (json_int_t)s->c.dropped_total, "bad_total", (json_int_t)s->c.bad_total,
                     "spoofed_total", (json_int_t)s->c.spoofed_total, "workers", ws);
}

int state_restore(state *s, const json_t *saved)
{
    static const char *const keys[] = {"reports_total", "dropped_total", "bad_total", "spoofed_total"};
    uint64_t *dst[] = {&s->c.reports_total, &s->c.dropped_total, &s->c.bad_total, &s->c.spoofed_total};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(saved, keys[i]);
        if (json_is_integer(v) && json_integer_value(v) >= 0)
            *dst[i] += (uint64_t)json_integer_value(v);
    }
    size_t i;
    json_t *sw;
    int restored = 0;
    json_array_foreach(json_object_get(saved, "workers"), i, sw) {
        json_t *pid = json_object_get(sw, "pid"), *series = json_object_get(sw, "hist");
        if (!json_is_integer(pid) || json_integer_value(pid) <= 0 || json_integer_value(pid) > INT32_MAX ||
            !json_is_array(series) || json_array_size(series) != SERIES_N)
            continue;
        /* Only rows the new image has already (the supervisor's, adopted):
         * a monitor's rows come back with their next report, history anew. */
        worker *w = state_find(s, (pid_t)json_integer_value(pid));
        if (!w)
            continue;
        for (int k = 0; k < SERIES_N; k++) {
            json_t *pts = json_array_get(series, (size_t)k), *v;
            size_t j;
            ring *r = &w->hist[k];
            *r = (ring){0};
            json_array_foreach(pts, j, v) {
                if (j >= STATE_HISTORY)
                    break;
                ring_push(r, json_is_number(v) ? json_number_value(v) : NAN);
            }
        }
        restored++;
    }
    return restored;
}

