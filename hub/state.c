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
#include "hub/rate.h"

#include <math.h>
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
    double   last_report_at;    /* monotonic s */
    char     name[REPORT_NAME_MAX];
    int64_t  wid;
    uint64_t last_seq;
    bool     has_seq;
    report   last;              /* latest `report` datagram */
    bool     has_last;
    uint64_t prev_req, prev_ts; /* previous report carrying req and ts, for the rate */
    bool     has_prev_req;
    double   req_per_s;
    int      ready;             /* -1 unknown */
    unsigned ready_by;          /* STATE_READY_* bits: which signals said ready */

    /* from /proc */
    bool     sampled;
    uint64_t start_ticks;
    uint64_t cpu_ticks;
    double   sampled_at;
    double   cpu_pct;
    int64_t  rss_bytes;
    double   elapsed_s;
    char     comm[32];

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
    proc_sample hub_prev;
    double    hub_prev_at;
    bool      hub_sampled;
    host_sample host_prev;      /* the last host sample (ok false: none) */
};

const char *state_name(worker_state ws)
{
    static const char *names[] = {"starting", "online", "stopping", "stopped",
                                  "backoff", "errored", "gone"};
    return (unsigned)ws < sizeof names / sizeof names[0] ? names[ws] : "unknown";
}

state *state_new(void)
{
    state *s = calloc(1, sizeof(state));
    if (s)
        s->c.host = (host_figures){.cpu_pct = NAN, .mem_total_bytes = -1, .mem_used_bytes = -1,
                                   .load = {NAN, NAN, NAN}, .ncpu = -1};
    return s;
}

void state_free(state *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        free(s->w[i]);
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

/* Forgets everything learnt from the previous process of a worker. */
static void state_reset_process(worker *w)
{
    w->spoke = false;
    w->has_report = false;
    w->name[0] = '\0';
    w->wid = -1;
    w->has_seq = false;
    w->has_last = false;
    w->has_prev_req = false;
    w->req_per_s = NAN;
    w->ready = -1;
    w->ready_by = 0;
    w->sampled = false;
    w->cpu_pct = NAN;
    w->rss_bytes = -1;
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
    worker *w = r->type == REPORT_T_BYE ? state_find(s, (pid_t)r->pid)
                                        : state_find_or_add(s, (pid_t)r->pid);
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
    w->last_report_at = now;
    if (r->has & REPORT_HAS_NAME)
        memcpy(w->name, r->name, sizeof w->name);
    if (r->has & REPORT_HAS_WID)
        w->wid = (int64_t)r->wid;
    if (r->has & REPORT_HAS_READY)
        state_set_ready(s, w, r->ready, STATE_READY_AGENT);

    if (r->type != REPORT_T_REPORT)
        return;
    if ((r->has & REPORT_HAS_REQ) && (r->has & REPORT_HAS_TS)) {
        if (w->has_prev_req) {
            double rate = rate_per_s(w->prev_req, r->req, w->prev_ts, r->ts);
            if (!isnan(rate))
                w->req_per_s = rate;
        }
        w->prev_req = r->req;
        w->prev_ts = r->ts;
        w->has_prev_req = true;
    }
    w->last = *r;
    w->has_last = true;
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

/* CPU % of one core between two samples of the same process. */
static double state_cpu_pct(uint64_t prev_ticks, uint64_t ticks, double prev_at, double now)
{
    static long hz;
    if (!hz)
        hz = sysconf(_SC_CLK_TCK);
    if (now <= prev_at || ticks < prev_ticks || hz <= 0)
        return NAN;
    return (double)(ticks - prev_ticks) / (double)hz / (now - prev_at) * 100.0;
}

void state_apply_sample(state *s, const proc_sample *ps, double now)
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
    if (w->sampled)
        w->cpu_pct = state_cpu_pct(w->cpu_ticks, ps->cpu_ticks, w->sampled_at, now);
    w->sampled = true;
    w->start_ticks = ps->start_ticks;
    w->cpu_ticks = ps->cpu_ticks;
    w->sampled_at = now;
    w->rss_bytes = (int64_t)ps->rss_bytes;
    w->elapsed_s = ps->elapsed_s;
    memcpy(w->comm, ps->comm, sizeof w->comm);
    w->comm[sizeof w->comm - 1] = '\0';
}

void state_apply_hub_sample(state *s, const proc_sample *ps, double now)
{
    s->c.cpu_pct = s->hub_sampled
        ? state_cpu_pct(s->hub_prev.cpu_ticks, ps->cpu_ticks, s->hub_prev_at, now) : NAN;
    s->c.rss_bytes = (int64_t)ps->rss_bytes;
    s->hub_prev = *ps;
    s->hub_prev_at = now;
    s->hub_sampled = true;
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

void state_tick(state *s, double now, double interval_s)
{
    size_t k = 0;
    bool removed = false;
    for (size_t i = 0; i < s->n; i++) {
        worker *w = s->w[i];
        /* "+ 0.5" so a worker gone just before a tick is still shown on the
         * STATE_GONE_INTERVALS-th tick after it, whatever the phase. */
        if (w->ws == WS_GONE && now - w->gone_at > (STATE_GONE_INTERVALS - 0.5) * interval_s) {
            free(w);
            removed = true;
            continue;
        }
        if (w->ws != WS_GONE) {
            ring_push(&w->hist[SERIES_CPU], w->cpu_pct);
            ring_push(&w->hist[SERIES_RSS], (double)w->rss_bytes);
            ring_push(&w->hist[SERIES_RPS], w->req_per_s);
            ring_push(&w->hist[SERIES_LAG], w->has_last && (w->last.has & REPORT_HAS_LAG)
                      ? (double)w->last.lag_p99 / 1000.0 : NAN);
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
    v->id = w->id >= 0 ? w->id : w->wid;
    v->pid = w->pid;
    v->state = w->ws;
    v->agent = w->has_report && w->ws != WS_GONE && w->pid > 0 &&
               now - w->last_report_at <= STATE_AGENT_INTERVALS * interval_s;
    v->restarts = w->restarts;
    v->has_exit = w->has_exit;
    v->last_status = w->last_status;
    bool running = w->ws != WS_GONE && w->pid > 0;
    v->uptime_s = running ? w->elapsed_s : NAN;
    v->cpu_pct = running ? w->cpu_pct : NAN;
    v->rss_bytes = running ? w->rss_bytes : -1;
    v->ready = w->ready;
    v->req_total = v->err_total = v->inflight = -1;
    v->req_per_s = v->lat_p50_ms = v->lat_p99_ms = v->lag_p99_ms = v->lag_max_ms = NAN;
    if (!w->has_last || !running)
        return;
    const report *r = &w->last;
    if (r->has & REPORT_HAS_REQ) {
        v->req_total = (int64_t)r->req;
        v->req_per_s = w->req_per_s;
    }
    if (r->has & REPORT_HAS_ERR)
        v->err_total = (int64_t)r->err;
    if (r->has & REPORT_HAS_INFLIGHT)
        v->inflight = (int64_t)r->inflight;
    if (r->has & REPORT_HAS_LAT) {
        v->lat_p50_ms = (double)r->lat_p50 / 1000.0;
        v->lat_p99_ms = (double)r->lat_p99 / 1000.0;
    }
    if (r->has & REPORT_HAS_LAG) {
        v->lag_p99_ms = (double)r->lag_p99 / 1000.0;
        v->lag_max_ms = (double)r->lag_max / 1000.0;
    }
    v->has_metrics = true;
    v->nmetrics = r->nmetrics;
    memcpy(v->metrics, r->metrics, r->nmetrics * sizeof r->metrics[0]);
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
            free(s->w[i]);
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
