/*
 * prom.c — the Prometheus text exposition, and the per-slot counters behind
 * it (see prom.h for the series and why they are labelled as they are).
 *
 * prom_fold merges the interval's views, sorted by (app, id, pid), with the
 * slots of the previous interval, sorted the same way: one pass, a new slot
 * array each interval, slots that left the views (scaled away, gone) left
 * behind.
 */
#include "hub/prom.h"
#include "proto/buckets.h"

#include <jansson.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PROM_PROCS 4   /* processes of one slot tracked at once (current, replacement, leaving) */

/* A process of a slot: its cumulative counters as last seen. */
typedef struct {
    pid_t   pid;
    int64_t req, err;   /* -1: not reported */
} prom_proc;

/* A worker slot: app and id (or, for a process drover does not supervise, its pid). */
typedef struct {
    char      app[REPORT_NAME_MAX];
    int64_t   id;                       /* -1: not supervised, keyed by upid */
    pid_t     upid;
    prom_proc procs[PROM_PROCS];
    uint32_t  nprocs;
    uint64_t  req, err;                 /* what its processes did, added up interval by interval */
    bool      has_req, has_err;
    uint64_t  lat[PROM_NLE + 1], lag[PROM_NLE + 1];   /* per bucket, [PROM_NLE]: above the last edge */
    bool      has_lat, has_lag;
    size_t    first, count;             /* its views in the last folded interval */
} prom_slot;

/* What the exposition keeps per app beyond the views. */
typedef struct {
    char     app[REPORT_NAME_MAX];
    uint64_t reloads_done, reloads_aborted;
    uint64_t max_memory;                /* 0: none */
} prom_app;

struct prom {
    prom_slot    *slots;
    size_t        nslots;
    prom_app     *apps;
    size_t        napps, apps_cap;
    unsigned char le_of[HIST_NBUCKETS]; /* agent bucket → prom bucket */
};

uint64_t prom_le_us(unsigned k)
{
    return UINT64_C(1) << (8 + k);
}

prom *prom_new(void)
{
    prom *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    /* Every agent bucket lies wholly below one edge: its largest value is
     * 2^e - 1 at most where the next edge is 2^e (buckets split powers of two). */
    for (unsigned i = 0; i < HIST_NBUCKETS; i++) {
        uint64_t top = hist_bucket_upper(i);
        unsigned k = 0;
        while (k < PROM_NLE && top >= prom_le_us(k))
            k++;
        p->le_of[i] = (unsigned char)k;
    }
    return p;
}

void prom_free(prom *p)
{
    if (!p)
        return;
    free(p->slots);
    free(p->apps);
    free(p);
}

/* ---- folding ------------------------------------------------------------- */

/* Orders slot keys as state_snapshot orders views: app, id, then pid. */
static int prom_cmp(const char *app_a, int64_t id_a, pid_t pid_a, const prom_slot *b)
{
    int c = strcmp(app_a, b->app);
    if (c)
        return c;
    if (id_a != b->id)
        return id_a < b->id ? -1 : 1;
    if (id_a >= 0 || pid_a == b->upid)
        return 0;
    return pid_a < b->upid ? -1 : 1;
}

/* True when view b belongs to the same slot as view a. */
static bool prom_same_slot(const worker_view *a, const worker_view *b)
{
    return strcmp(a->app, b->app) == 0 && a->id == b->id && (a->id >= 0 || a->pid == b->pid);
}

/* What a cumulative counter did since it was last seen at *last (-1: never); updates *last. */
static uint64_t prom_delta(int64_t now, int64_t *last)
{
    if (now < 0)
        return 0;
    uint64_t d = *last >= 0 && now >= *last ? (uint64_t)(now - *last) : (uint64_t)now;   /* lower: a reset */
    *last = now;
    return d;
}

/* Adds an interval's sparse histogram into a slot's buckets. */
static void prom_hist_add(const prom *p, uint64_t *b, const state_hist *h)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (h->idx[i] < HIST_NBUCKETS)
            b[p->le_of[h->idx[i]]] += h->count[i];
}

/* Adds the views of one slot (v[0..k)) to s. */
static void prom_fold_slot(const prom *p, prom_slot *s, const worker_view *v, size_t k)
{
    prom_proc now[PROM_PROCS];
    uint32_t n = 0;
    for (size_t i = 0; i < k; i++) {
        const worker_view *w = &v[i];
        if (w->lat_h) {
            prom_hist_add(p, s->lat, w->lat_h);
            s->has_lat = true;
        }
        if (w->lag_h) {
            prom_hist_add(p, s->lag, w->lag_h);
            s->has_lag = true;
        }
        if (w->pid <= 0 || (w->req_total < 0 && w->err_total < 0))
            continue;
        prom_proc pr = {.pid = w->pid, .req = -1, .err = -1};
        for (uint32_t j = 0; j < s->nprocs; j++)
            if (s->procs[j].pid == w->pid)
                pr = s->procs[j];
        if (w->req_total >= 0) {
            s->req += prom_delta(w->req_total, &pr.req);
            s->has_req = true;
        }
        if (w->err_total >= 0) {
            s->err += prom_delta(w->err_total, &pr.err);
            s->has_err = true;
        }
        if (n < PROM_PROCS)
            now[n++] = pr;
    }
    memcpy(s->procs, now, n * sizeof *now);
    s->nprocs = n;
}

int prom_fold(prom *p, const worker_view *v, size_t n)
{
    prom_slot *next = n ? malloc(n * sizeof *next) : NULL;
    if (n && !next)
        return -1;
    size_t k = 0, j = 0;
    for (size_t i = 0; i < n;) {
        size_t e = i + 1;
        while (e < n && prom_same_slot(&v[i], &v[e]))
            e++;
        while (j < p->nslots && prom_cmp(v[i].app, v[i].id, v[i].pid, &p->slots[j]) > 0)
            j++;
        prom_slot *s = &next[k++];
        if (j < p->nslots && prom_cmp(v[i].app, v[i].id, v[i].pid, &p->slots[j]) == 0) {
            *s = p->slots[j++];
        } else {
            memset(s, 0, sizeof *s);
            snprintf(s->app, sizeof s->app, "%s", v[i].app);
            s->id = v[i].id;
            s->upid = v[i].pid;
        }
        s->first = i;
        s->count = e - i;
        prom_fold_slot(p, s, &v[i], e - i);
        i = e;
    }
    free(p->slots);
    p->slots = next;
    p->nslots = k;
    return 0;
}

/* The app's record, created if needed; NULL when out of memory. */
static prom_app *prom_app_get(prom *p, const char *app)
{
    for (size_t i = 0; i < p->napps; i++)
        if (strcmp(p->apps[i].app, app) == 0)
            return &p->apps[i];
    if (p->napps == p->apps_cap) {
        size_t nc = p->apps_cap ? p->apps_cap * 2 : 8;
        prom_app *na = realloc(p->apps, nc * sizeof *na);
        if (!na)
            return NULL;
        p->apps = na;
        p->apps_cap = nc;
    }
    prom_app *a = &p->apps[p->napps++];
    memset(a, 0, sizeof *a);
    snprintf(a->app, sizeof a->app, "%s", app);
    return a;
}

void prom_count_reload(prom *p, const char *app, bool done)
{
    prom_app *a = p && app ? prom_app_get(p, app) : NULL;
    if (a)
        *(done ? &a->reloads_done : &a->reloads_aborted) += 1;
}

void prom_add_app(prom *p, const char *app, uint64_t max_memory)
{
    prom_set_max_memory(p, app, max_memory);   /* the record is the counters, at 0 when new */
}

void prom_set_max_memory(prom *p, const char *app, uint64_t bytes)
{
    prom_app *a = p && app ? prom_app_get(p, app) : NULL;
    if (a)
        a->max_memory = bytes;
}

void prom_remove_app(prom *p, const char *app)
{
    for (size_t i = 0; p && app && i < p->napps; i++)
        if (strcmp(p->apps[i].app, app) == 0) {
            memmove(&p->apps[i], &p->apps[i + 1], (--p->napps - i) * sizeof *p->apps);
            return;
        }
}

/* ---- text ---------------------------------------------------------------- */

/* Writes s as a label value: backslash, double quote and newline escaped. */
static void prom_label(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(out, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", out);
        else
            fputc(*s, out);
    }
}

/* Writes a sample value; Prometheus spells the non-finite ones NaN, +Inf, -Inf. */
static void prom_value(FILE *out, double x)
{
    if (isnan(x))
        fputs(" NaN\n", out);
    else if (isinf(x))
        fputs(x > 0 ? " +Inf\n" : " -Inf\n", out);
    else
        fprintf(out, " %.17g\n", x);
}

static void prom_family(FILE *out, const char *name, const char *type, const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* `{app="…",worker="…"` (not closed): the id, or pid-N for a process drover does not supervise. */
static void prom_slot_labels(FILE *out, const prom_slot *s)
{
    fputs("{app=\"", out);
    prom_label(out, s->app);
    if (s->id >= 0)
        fprintf(out, "\",worker=\"%lld\"", (long long)s->id);
    else
        fprintf(out, "\",worker=\"pid-%d\"", (int)s->upid);
}

/* The view that speaks for a slot: an online one (the current process during a reload), else the first live one. */
static const worker_view *prom_primary(const prom_slot *s, const worker_view *v)
{
    /* (callers check s->count > 0) */
    const worker_view *first = &v[s->first], *live = NULL;
    for (size_t i = 0; i < s->count; i++) {
        const worker_view *w = &first[i];
        if (w->state == WS_ONLINE)
            return w;
        if (!live && w->state != WS_GONE)
            live = w;
    }
    return live ? live : first;
}

/* A slot figure: from its views (primary, or all of them summed or maxed), or its counters. */
typedef double (*prom_get)(const prom_slot *s, const worker_view *v);

/* Sums f over the slot's processes (NAN when none has it). */
static double prom_sum(const prom_slot *s, const worker_view *v, double (*f)(const worker_view *w))
{
    double t = NAN;
    for (size_t i = 0; i < s->count; i++) {
        double x = f(&v[s->first + i]);
        if (!isnan(x))
            t = isnan(t) ? x : t + x;
    }
    return t;
}

/* The largest f over the slot's processes (NAN when none has it). */
static double prom_max(const prom_slot *s, const worker_view *v, double (*f)(const worker_view *w))
{
    double t = NAN;
    for (size_t i = 0; i < s->count; i++) {
        double x = f(&v[s->first + i]);
        if (!isnan(x) && (isnan(t) || x > t))
            t = x;
    }
    return t;
}

static double w_cpu(const worker_view *w)      { return w->cpu_pct / 100.0; }
static double w_rss(const worker_view *w)      { return w->rss_bytes < 0 ? NAN : (double)w->rss_bytes; }
static double w_pss(const worker_view *w)      { return w->pss_bytes < 0 ? NAN : (double)w->pss_bytes; }
static double w_procs(const worker_view *w)    { return w->procs < 0 ? NAN : (double)w->procs; }
static double w_rps(const worker_view *w)      { return w->req_per_s; }
static double w_inflight(const worker_view *w) { return w->inflight < 0 ? NAN : (double)w->inflight; }
static double w_latmax(const worker_view *w)   { return w->lat_max_ms / 1000.0; }
static double w_lagmax(const worker_view *w)   { return w->lag_max_ms / 1000.0; }
static double w_agent(const worker_view *w)    { return w->agent; }
static double w_up(const worker_view *w)       { return w->state == WS_ONLINE; }
static double w_restarts(const worker_view *w) { return w->restarts < 0 ? NAN : (double)w->restarts; }

static double g_up(const prom_slot *s, const worker_view *v)       { return prom_max(s, v, w_up); }
static double g_agent(const prom_slot *s, const worker_view *v)    { return prom_max(s, v, w_agent); }
static double g_restarts(const prom_slot *s, const worker_view *v) { return prom_max(s, v, w_restarts); }
static double g_uptime(const prom_slot *s, const worker_view *v)   { return prom_primary(s, v)->uptime_s; }
static double g_cpu(const prom_slot *s, const worker_view *v)      { return prom_sum(s, v, w_cpu); }
static double g_rss(const prom_slot *s, const worker_view *v)      { return prom_sum(s, v, w_rss); }
static double g_pss(const prom_slot *s, const worker_view *v)      { return prom_sum(s, v, w_pss); }
static double g_procs(const prom_slot *s, const worker_view *v)    { return prom_sum(s, v, w_procs); }
static double g_req(const prom_slot *s, const worker_view *v)      { (void)v; return s->has_req ? (double)s->req : NAN; }
static double g_err(const prom_slot *s, const worker_view *v)      { (void)v; return s->has_err ? (double)s->err : NAN; }
static double g_rps(const prom_slot *s, const worker_view *v)      { return prom_sum(s, v, w_rps); }
static double g_inflight(const prom_slot *s, const worker_view *v) { return prom_sum(s, v, w_inflight); }
static double g_latmax(const prom_slot *s, const worker_view *v)   { return prom_max(s, v, w_latmax); }
static double g_lagmax(const prom_slot *s, const worker_view *v)   { return prom_max(s, v, w_lagmax); }
static double g_ready(const prom_slot *s, const worker_view *v)
{
    const worker_view *w = prom_primary(s, v);
    return w->ready < 0 ? NAN : (double)w->ready;
}

/* The worker series: one per slot, whatever processes it had in the interval. */
static const struct {
    const char *name, *type, *help;
    prom_get get;
} prom_worker_table[] = {
    {"drover_worker_up", "gauge", "1 if the worker is online", g_up},
    {"drover_worker_agent_reporting", "gauge", "1 if the worker's agent reported in the last 3 intervals", g_agent},
    {"drover_worker_restarts_total", "counter", "Restarts of this worker slot by drover", g_restarts},
    {"drover_worker_uptime_seconds", "gauge", "Seconds since the worker's current process started", g_uptime},
    {"drover_worker_cpu_ratio", "gauge", "CPU used over the last interval by the worker's process trees, in cores (1 = one full core)", g_cpu},
    {"drover_worker_resident_memory_bytes", "gauge", "Resident memory (VmRSS) summed over the worker's process trees (shared pages counted once per process)", g_rss},
    {"drover_worker_pss_bytes", "gauge", "PSS summed over the worker's process trees (shared pages split between their sharers); read every few seconds", g_pss},
    {"drover_worker_procs", "gauge", "Processes in the worker's trees (the worker and its descendants)", g_procs},
    {"drover_worker_requests_total", "counter", "Requests handled by the worker slot's processes, as their agents reported", g_req},
    {"drover_worker_request_rate", "gauge", "Requests per second over the last interval", g_rps},
    {"drover_worker_errors_total", "counter", "Errors of the worker slot's processes, as their agents reported", g_err},
    {"drover_worker_inflight_requests", "gauge", "Requests in progress", g_inflight},
    {"drover_worker_latency_max_seconds", "gauge", "Largest request latency over the last interval", g_latmax},
    {"drover_worker_event_loop_lag_max_seconds", "gauge", "Largest event-loop lag over the last interval", g_lagmax},
    {"drover_worker_ready", "gauge", "1 if the worker said it is ready to serve", g_ready},
};

/* One histogram family over every slot that has one (which: 0 latency, 1 lag). */
static void prom_histogram(const prom *p, FILE *out, int which, const char *name, const char *help)
{
    prom_family(out, name, "histogram", help);
    for (size_t i = 0; i < p->nslots; i++) {
        const prom_slot *s = &p->slots[i];
        if (!(which ? s->has_lag : s->has_lat))
            continue;
        const uint64_t *b = which ? s->lag : s->lat;
        uint64_t cum = 0;
        for (unsigned k = 0; k <= PROM_NLE; k++) {
            cum += b[k];
            fprintf(out, "%s_bucket", name);
            prom_slot_labels(out, s);
            if (k < PROM_NLE)
                fprintf(out, ",le=\"%.6f\"} %llu\n", (double)prom_le_us(k) / 1e6, (unsigned long long)cum);
            else
                fprintf(out, ",le=\"+Inf\"} %llu\n", (unsigned long long)cum);
        }
        fprintf(out, "%s_count", name);
        prom_slot_labels(out, s);
        fprintf(out, "} %llu\n", (unsigned long long)cum);
    }
}

typedef double (*prom_app_fn)(const app_sum *a);
static double ga_workers(const app_sum *a) { return (double)a->workers; }
static double ga_online(const app_sum *a)  { return (double)a->online; }
static double ga_rps(const app_sum *a)     { return a->req_per_s; }
static double ga_cpu(const app_sum *a)     { return a->cpu_pct / 100.0; }
static double ga_rss(const app_sum *a)     { return a->rss_bytes < 0 ? NAN : (double)a->rss_bytes; }
static double ga_lat50(const app_sum *a)   { return a->lat_p50_ms / 1000.0; }
static double ga_lat99(const app_sum *a)   { return a->lat_p99_ms / 1000.0; }
static double ga_lag99(const app_sum *a)   { return a->lag_p99_ms / 1000.0; }
static double ga_lagmax(const app_sum *a)  { return a->lag_max_ms / 1000.0; }

static const struct {
    const char *name, *help;
    prom_app_fn get;
} prom_app_table[] = {
    {"drover_app_workers", "Workers of the app", ga_workers},
    {"drover_app_online_workers", "Workers of the app that are online", ga_online},
    {"drover_app_request_rate", "Requests per second, all workers", ga_rps},
    {"drover_app_cpu_ratio", "CPU of all workers, in cores", ga_cpu},
    {"drover_app_resident_memory_bytes", "Resident memory of all workers", ga_rss},
    {"drover_app_latency_p50_seconds", "Median request latency over the last interval, from all workers' samples", ga_lat50},
    {"drover_app_latency_p99_seconds", "99th percentile request latency over the last interval, from all workers' samples", ga_lat99},
    {"drover_app_event_loop_lag_p99_seconds", "99th percentile event-loop lag over the last interval, from all workers' samples", ga_lag99},
    {"drover_app_event_loop_lag_max_seconds", "Largest event-loop lag of any worker over the last interval", ga_lagmax},
};

/* Every worker family, histograms and info included. */
static void prom_print_workers(const prom *p, FILE *out, const worker_view *v)
{
    prom_family(out, "drover_worker_info", "gauge",
                "1 for each process of a worker: its pid and the report protocol version its agent speaks");
    for (size_t i = 0; i < p->nslots; i++) {
        const prom_slot *s = &p->slots[i];
        for (size_t k = 0; k < s->count; k++) {
            const worker_view *w = &v[s->first + k];
            if (w->pid <= 0 || w->state == WS_GONE)
                continue;
            fputs("drover_worker_info", out);
            prom_slot_labels(out, s);
            if (w->agent_v > 0)
                fprintf(out, ",pid=\"%d\",agent_version=\"%d\"} 1\n", (int)w->pid, w->agent_v);
            else
                fprintf(out, ",pid=\"%d\",agent_version=\"\"} 1\n", (int)w->pid);
        }
    }
    prom_family(out, "drover_worker_state", "gauge", "1 for the worker's current state, 0 for the others");
    for (size_t i = 0; i < p->nslots; i++) {
        const prom_slot *s = &p->slots[i];
        if (!s->count)
            continue;
        worker_state now = prom_primary(s, v)->state;
        for (int st = 0; st < WS_N; st++) {
            fputs("drover_worker_state", out);
            prom_slot_labels(out, s);
            fprintf(out, ",state=\"%s\"} %d\n", state_name((worker_state)st), st == (int)now);
        }
    }
    for (size_t f = 0; f < sizeof prom_worker_table / sizeof prom_worker_table[0]; f++) {
        prom_family(out, prom_worker_table[f].name, prom_worker_table[f].type, prom_worker_table[f].help);
        for (size_t i = 0; i < p->nslots; i++) {
            bool counter = prom_worker_table[f].get == g_req || prom_worker_table[f].get == g_err;
            if (!p->slots[i].count && !counter)
                continue;
            double x = prom_worker_table[f].get(&p->slots[i], v);
            if (isnan(x))
                continue;
            fputs(prom_worker_table[f].name, out);
            prom_slot_labels(out, &p->slots[i]);
            fprintf(out, "} %.17g\n", x);
        }
    }
    prom_histogram(p, out, 0, "drover_worker_request_duration_seconds",
                   "Request latency, cumulative over the worker slot's processes (no _sum: agents send bucket counts)");
    prom_histogram(p, out, 1, "drover_worker_event_loop_lag_seconds",
                   "Event-loop lag, cumulative over the worker slot's processes (no _sum: agents send bucket counts)");
    prom_family(out, "drover_worker_metric", "gauge", "Custom metrics set by the worker's agent");
    for (size_t i = 0; i < p->nslots; i++) {
        if (!p->slots[i].count)
            continue;
        const worker_view *w = prom_primary(&p->slots[i], v);
        for (uint32_t k = 0; k < w->nmetrics; k++) {
            fputs("drover_worker_metric", out);
            prom_slot_labels(out, &p->slots[i]);
            fputs(",name=\"", out);
            prom_label(out, w->metrics[k].key);
            fputs("\"}", out);
            prom_value(out, w->metrics[k].value);
        }
    }
}

/* Every app family: gauges from the interval's sums, reload counters, limits. */
static void prom_print_apps(const prom *p, FILE *out, const app_sum *apps, size_t napps)
{
    for (size_t f = 0; f < sizeof prom_app_table / sizeof prom_app_table[0]; f++) {
        prom_family(out, prom_app_table[f].name, "gauge", prom_app_table[f].help);
        for (size_t i = 0; i < napps; i++) {
            double x = prom_app_table[f].get(&apps[i]);
            if (isnan(x))
                continue;
            fprintf(out, "%s{app=\"", prom_app_table[f].name);
            prom_label(out, apps[i].app);
            fprintf(out, "\"} %.17g\n", x);
        }
    }
    prom_family(out, "drover_app_reloads_total", "counter", "Rolling reloads of the app that ended, by outcome");
    for (size_t i = 0; i < p->napps; i++) {
        const prom_app *a = &p->apps[i];
        static const char *const outcome[2] = {"done", "aborted"};
        const uint64_t n[2] = {a->reloads_done, a->reloads_aborted};
        for (int k = 0; k < 2; k++) {
            fputs("drover_app_reloads_total{app=\"", out);
            prom_label(out, a->app);
            fprintf(out, "\",outcome=\"%s\"} %llu\n", outcome[k], (unsigned long long)n[k]);
        }
    }
    prom_family(out, "drover_app_max_memory_bytes", "gauge",
                "A worker whose resident memory exceeds this is replaced (--max-memory)");
    for (size_t i = 0; i < p->napps; i++) {
        if (!p->apps[i].max_memory)
            continue;
        fputs("drover_app_max_memory_bytes{app=\"", out);
        prom_label(out, p->apps[i].app);
        fprintf(out, "\"} %llu\n", (unsigned long long)p->apps[i].max_memory);
    }
}

/*
 * Finds each slot's views in v (the views printed may be a newer snapshot
 * than the one folded): a merge of the two sorted lists. A slot without
 * views keeps its counters and shows no gauge.
 */
static void prom_match(prom *p, const worker_view *v, size_t n)
{
    size_t i = 0;
    for (size_t k = 0; k < p->nslots; k++) {
        prom_slot *s = &p->slots[k];
        while (i < n && prom_cmp(v[i].app, v[i].id, v[i].pid, s) < 0)
            i++;
        s->first = i;
        s->count = 0;
        while (i + s->count < n && prom_cmp(v[i + s->count].app, v[i + s->count].id, v[i + s->count].pid, s) == 0)
            s->count++;
        i += s->count;
    }
}

void prom_print(prom *p, FILE *out, const worker_view *v, size_t n, const app_sum *apps, size_t napps,
                const hub_counters *c)
{
    prom_match(p, v, n);
    prom_print_workers(p, out, v);
    prom_print_apps(p, out, apps, napps);

    prom_family(out, "drover_hub_workers", "gauge", "Workers known to the hub");
    fprintf(out, "drover_hub_workers %llu\n", (unsigned long long)c->workers);
    prom_family(out, "drover_hub_reports_total", "counter", "Valid datagrams applied");
    fprintf(out, "drover_hub_reports_total %llu\n", (unsigned long long)c->reports_total);
    prom_family(out, "drover_hub_dropped_reports_total", "counter", "Reports missed (sequence gaps, queue overflow)");
    fprintf(out, "drover_hub_dropped_reports_total %llu\n", (unsigned long long)c->dropped_total);
    prom_family(out, "drover_hub_bad_datagrams_total", "counter", "Datagrams refused as malformed");
    fprintf(out, "drover_hub_bad_datagrams_total %llu\n", (unsigned long long)c->bad_total);
    prom_family(out, "drover_hub_spoofed_datagrams_total", "counter", "Datagrams whose pid differed from the sender's");
    fprintf(out, "drover_hub_spoofed_datagrams_total %llu\n", (unsigned long long)c->spoofed_total);
    prom_family(out, "drover_hub_cpu_ratio", "gauge", "CPU of the hub process, in cores, averaged over its last samples");
    if (!isnan(c->cpu_pct))
        fprintf(out, "drover_hub_cpu_ratio %.17g\n", c->cpu_pct / 100.0);
    prom_family(out, "drover_hub_resident_memory_bytes", "gauge", "Resident memory of the hub process");
    if (c->rss_bytes >= 0)
        fprintf(out, "drover_hub_resident_memory_bytes %lld\n", (long long)c->rss_bytes);
    prom_family(out, "drover_build_info", "gauge", "1, labelled with the version of drover running the hub");
    fputs("drover_build_info{version=\"", out);
    prom_label(out, DROVER_VERSION);
    fputs("\"} 1\n", out);
}

/* ---- upgrade ------------------------------------------------------------ */

/* A bucket array as JSON. */
static json_t *prom_buckets_json(const uint64_t *b)
{
    json_t *a = json_array();
    for (unsigned k = 0; k <= PROM_NLE; k++)
        json_array_append_new(a, json_integer((json_int_t)b[k]));
    return a;
}

/* Reads a bucket array; false (b untouched past what was read) when malformed. */
static bool prom_buckets_read(const json_t *a, uint64_t *b)
{
    if (json_array_size(a) != PROM_NLE + 1)
        return false;
    for (unsigned k = 0; k <= PROM_NLE; k++) {
        json_t *v = json_array_get(a, k);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return false;
        b[k] = (uint64_t)json_integer_value(v);
    }
    return true;
}

json_t *prom_save(const prom *p)
{
    json_t *slots = json_array(), *apps = json_array();
    for (size_t i = 0; i < p->nslots; i++) {
        const prom_slot *sl = &p->slots[i];
        json_t *procs = json_array();
        for (uint32_t j = 0; j < sl->nprocs; j++)
            json_array_append_new(procs, json_pack("[i, I, I]", (int)sl->procs[j].pid,
                                                   (json_int_t)sl->procs[j].req, (json_int_t)sl->procs[j].err));
        json_array_append_new(slots, json_pack("{s:s, s:I, s:i, s:o, s:I, s:I, s:b, s:b, s:o, s:o, s:b, s:b}",
                                               "app", sl->app, "id", (json_int_t)sl->id, "upid", (int)sl->upid,
                                               "procs", procs, "req", (json_int_t)sl->req, "err",
                                               (json_int_t)sl->err, "has_req", sl->has_req, "has_err",
                                               sl->has_err, "lat", prom_buckets_json(sl->lat), "lag",
                                               prom_buckets_json(sl->lag), "has_lat", sl->has_lat, "has_lag",
                                               sl->has_lag));
    }
    for (size_t i = 0; i < p->napps; i++)
        json_array_append_new(apps, json_pack("{s:s, s:I, s:I}", "app", p->apps[i].app, "done",
                                              (json_int_t)p->apps[i].reloads_done, "aborted",
                                              (json_int_t)p->apps[i].reloads_aborted));
    return json_pack("{s:o, s:o}", "slots", slots, "apps", apps);
}

int prom_restore(prom *p, const json_t *saved)
{
    json_t *slots = json_object_get(saved, "slots"), *v;
    size_t n = json_array_size(slots), i;
    prom_slot *ns = n ? calloc(n, sizeof *ns) : NULL;
    if (n && !ns)
        return -1;
    size_t k = 0;
    json_array_foreach(slots, i, v) {
        prom_slot *sl = &ns[k];
        const char *app = json_string_value(json_object_get(v, "app"));
        json_t *id = json_object_get(v, "id"), *procs = json_object_get(v, "procs"), *pr;
        if (!app || strlen(app) >= sizeof sl->app || !json_is_integer(id) || json_array_size(procs) > PROM_PROCS ||
            !prom_buckets_read(json_object_get(v, "lat"), sl->lat) ||
            !prom_buckets_read(json_object_get(v, "lag"), sl->lag))
            continue;
        snprintf(sl->app, sizeof sl->app, "%s", app);
        sl->id = json_integer_value(id);
        sl->upid = (pid_t)json_integer_value(json_object_get(v, "upid"));
        size_t j;
        json_array_foreach(procs, j, pr) {
            sl->procs[j] = (prom_proc){(pid_t)json_integer_value(json_array_get(pr, 0)),
                                       json_integer_value(json_array_get(pr, 1)),
                                       json_integer_value(json_array_get(pr, 2))};
        }
        sl->nprocs = (uint32_t)json_array_size(procs);
        sl->req = (uint64_t)json_integer_value(json_object_get(v, "req"));
        sl->err = (uint64_t)json_integer_value(json_object_get(v, "err"));
        sl->has_req = json_is_true(json_object_get(v, "has_req"));
        sl->has_err = json_is_true(json_object_get(v, "has_err"));
        sl->has_lat = json_is_true(json_object_get(v, "has_lat"));
        sl->has_lag = json_is_true(json_object_get(v, "has_lag"));
        k++;
    }
    free(p->slots);
    p->slots = ns;
    p->nslots = k;
    json_array_foreach(json_object_get(saved, "apps"), i, v) {
        const char *app = json_string_value(json_object_get(v, "app"));
        prom_app *a = app && strlen(app) < REPORT_NAME_MAX ? prom_app_get(p, app) : NULL;
        if (a) {
            a->reloads_done += (uint64_t)json_integer_value(json_object_get(v, "done"));
            a->reloads_aborted += (uint64_t)json_integer_value(json_object_get(v, "aborted"));
        }
    }
    return 0;
}

