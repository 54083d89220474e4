/*
 * headless.c — the headless printers.
 *
 * NDJSON goes through jansson (no hand-written escaping). Unknown values are
 * JSON null, never omitted. Prometheus text is hub/prom.c's.
 */
#include "hub/headless.h"
#include "hub/prom.h"
#include "proto/text.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>


/* The histograms being summed for the app being folded. */
typedef struct {
    uint64_t lat[HIST_NBUCKETS], lag[HIST_NBUCKETS];
    bool     has_lat, has_lag;
} app_hists;

/* Adds b to a sum that starts unknown (NAN); unknown addends are skipped. */
static double headless_addf(double a, double b)
{
    if (isnan(b))
        return a;
    return isnan(a) ? b : a + b;
}

/* Returns the larger of a and b, where NAN is unknown. */
static double headless_maxf(double a, double b)
{
    if (isnan(b))
        return a;
    return isnan(a) || b > a ? b : a;
}

/* Adds a worker's sparse histogram of the interval into the app's dense sum. */
static void headless_hist_add(uint64_t *sum, const state_hist *h)
{
    for (uint32_t i = 0; i < h->n; i++)
        if (h->idx[i] < HIST_NBUCKETS)
            sum[h->idx[i]] = h->count[i] > UINT64_MAX - sum[h->idx[i]] ? UINT64_MAX
                                                                        : sum[h->idx[i]] + h->count[i];
}

/* Converts a max in ms (NAN: unknown) to the µs clamp hist_quantile() takes (0: none). */
static uint64_t headless_clamp_us(double max_ms)
{
    return isnan(max_ms) ? 0 : (uint64_t)llround(max_ms * 1000.0);
}

/* Sets the app's quantiles from the summed histograms and empties them for the next app. */
static void headless_app_close(app_sum *a, app_hists *h, bool lat_clamp, bool lag_clamp)
{
    if (h->has_lat) {
        uint64_t clamp = lat_clamp ? headless_clamp_us(a->lat_max_ms) : 0;
        a->lat_p50_ms = (double)hist_quantile(h->lat, 5000, clamp) / 1000.0;
        a->lat_p99_ms = (double)hist_quantile(h->lat, 9900, clamp) / 1000.0;
        memset(h->lat, 0, sizeof h->lat);
    }
    if (h->has_lag) {
        a->lag_p99_ms = (double)hist_quantile(h->lag, 9900, lag_clamp ? headless_clamp_us(a->lag_max_ms) : 0)
                        / 1000.0;
        memset(h->lag, 0, sizeof h->lag);
    }
    h->has_lat = h->has_lag = false;
}

/*
 * Folds sorted views into per-app sums; returns the number of apps in out
 * (cap ≥ n). Quantiles come from the sum of the workers' histograms of the
 * interval: 8 KiB of counts, summed for one app at a time. A max clamps the
 * app's quantiles only when every worker with samples also sent its max.
 */
size_t headless_app_sums(const worker_view *v, size_t n, app_sum *out)
{
    static app_hists h;     /* printers run on the loop thread only */
    bool lat_clamp = true, lag_clamp = true;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || strcmp(out[k - 1].app, v[i].app) != 0) {
            if (k > 0)
                headless_app_close(&out[k - 1], &h, lat_clamp, lag_clamp);
            lat_clamp = lag_clamp = true;
            out[k++] = (app_sum){.app = v[i].app, .req_per_s = NAN, .cpu_pct = NAN, .cpu_decimals = 2,
                                 .rss_bytes = -1, .lat_p50_ms = NAN, .lat_p99_ms = NAN,
                                 .lag_p99_ms = NAN, .lat_max_ms = NAN, .lag_max_ms = NAN};
        }
        app_sum *a = &out[k - 1];
        if (v[i].state == WS_GONE)
            continue;
        a->workers++;
        a->online += v[i].state == WS_ONLINE;
        a->req_per_s = headless_addf(a->req_per_s, v[i].req_per_s);
        a->cpu_pct = headless_addf(a->cpu_pct, v[i].cpu_pct);
        if (!isnan(v[i].cpu_pct) && v[i].cpu_decimals < a->cpu_decimals)
            a->cpu_decimals = v[i].cpu_decimals;
        if (v[i].rss_bytes >= 0)
            a->rss_bytes = (a->rss_bytes < 0 ? 0 : a->rss_bytes) + v[i].rss_bytes;
        a->lat_max_ms = headless_maxf(a->lat_max_ms, v[i].lat_max_ms);
        a->lag_max_ms = headless_maxf(a->lag_max_ms, v[i].lag_max_ms);
        if (v[i].lat_h) {
            headless_hist_add(h.lat, v[i].lat_h);
            h.has_lat = true;
            lat_clamp &= !isnan(v[i].lat_max_ms);
        }
        if (v[i].lag_h) {
            headless_hist_add(h.lag, v[i].lag_h);
            h.has_lag = true;
            lag_clamp &= !isnan(v[i].lag_max_ms);
        }
    }
    if (k > 0)
        headless_app_close(&out[k - 1], &h, lat_clamp, lag_clamp);
    /* second pass: every online worker's share of its app's requests */
    for (size_t j = 0, i = 0; j < k; j++) {
        app_sum *a = &out[j];
        a->share_min = a->share_max = NAN;
        for (; i < n && strcmp(v[i].app, a->app) == 0; i++) {
            if (v[i].state != WS_ONLINE || !(a->req_per_s > 0))
                continue;
            double sh = isnan(v[i].req_per_s) ? 0 : 100.0 * v[i].req_per_s / a->req_per_s;
            a->share_min = isnan(a->share_min) || sh < a->share_min ? sh : a->share_min;
            a->share_max = isnan(a->share_max) || sh > a->share_max ? sh : a->share_max;
        }
    }
    return k;
}

/*
 * Worker w's share of its app's requests per second, in % (apps from
 * headless_apps over the same views); NAN when the app has no traffic or
 * w is not alive.
 */
static double headless_share(const worker_view *w, const app_sum *apps, size_t napps)
{
    if (w->state == WS_GONE)
        return NAN;
    for (size_t i = 0; i < napps; i++)
        if (strcmp(apps[i].app, w->app) == 0)
            return apps[i].req_per_s > 0 ? 100.0 * (isnan(w->req_per_s) ? 0 : w->req_per_s) / apps[i].req_per_s
                                         : NAN;
    return NAN;
}

/* ---- NDJSON ------------------------------------------------------------- */

/* Rounds to the given number of decimals, so output is short and stable. */
static double headless_round(double x, int decimals)
{
    double p = pow(10, decimals);
    return round(x * p) / p;
}

static json_t *jreal(double x, int decimals)
{
    return isnan(x) || isinf(x) ? json_null() : json_real(headless_round(x, decimals));
}

static json_t *jint(int64_t x)
{
    return x < 0 ? json_null() : json_integer(x);
}

static json_t *jstr(const char *s)
{
    return s[0] ? json_string(s) : json_null();
}

/* Writes obj as one compact line and frees it. */
static int headless_emit(FILE *out, json_t *obj)
{
    int rc = obj ? json_dumpf(obj, out, JSON_COMPACT | JSON_REAL_PRECISION(15)) : -1;
    json_decref(obj);
    if (rc != 0 || fputc('\n', out) == EOF)
        return -1;
    return 0;
}

/* See headless.h. comm is sanitized here: it is whatever the process named
 * itself (prctl, the file it runs). */
json_t *headless_tree_json(const worker_view *w)
{
    json_t *a = json_array();
    for (uint32_t i = 0; a && i < w->ntree; i++) {
        const tree_member *t = &w->tree[i];
        char comm[TEXT_SAFE_MAX(sizeof t->comm)];
        text_sanitize(t->comm, comm, sizeof comm);
        json_array_append_new(a, json_pack("{s:i, s:i, s:s, s:o, s:o, s:o}", "pid", (int)t->pid,
                                           "ppid", (int)t->ppid, "comm", comm,
                                           "cpu_pct", jreal(t->cpu_pct, w->cpu_decimals),
                                           "rss_bytes", jint(t->rss_bytes), "pss_bytes", jint(t->pss_bytes)));
    }
    return a ? a : json_null();
}

/* The worker object (PROTOCOL.md §4.4); share: its share of the app's requests (headless_share). */
static json_t *headless_worker_json(const worker_view *w, double ts, double share)
{
    json_t *m = json_null();
    if (w->has_metrics) {
        m = json_object();
        for (uint32_t i = 0; i < w->nmetrics; i++)
            json_object_set_new(m, w->metrics[i].key, jreal(w->metrics[i].value, 6));
    }
    json_t *o = json_pack("{s:s, s:o, s:o, s:o, s:o, s:s, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o,"
                     " s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "type", "worker",
                     "ts", jreal(ts, 3),
                     "app", jstr(w->app),
                     "id", jint(w->id),
                     "pid", w->pid > 0 ? json_integer(w->pid) : json_null(),   /* none: backoff, stopped */
                     "state", state_name(w->state),
                     "agent", w->agent,
                     "restarts", jint(w->restarts),
                     "uptime_s", jreal(w->uptime_s, 2),
                     "cpu_pct", jreal(w->cpu_pct, w->cpu_decimals),
                     "rss_bytes", jint(w->rss_bytes),
                     "req_total", jint(w->req_total),
                     "req_per_s", jreal(w->req_per_s, 2),
                     "err_total", jint(w->err_total),
                     "inflight", jint(w->inflight),
                     "lat_p50_ms", jreal(w->lat_p50_ms, 3),
                     "lat_p99_ms", jreal(w->lat_p99_ms, 3),
                     "lat_max_ms", jreal(w->lat_max_ms, 3),
                     "lag_p99_ms", jreal(w->lag_p99_ms, 3),
                     "lag_max_ms", jreal(w->lag_max_ms, 3),
                     "ready", w->ready < 0 ? json_null() : json_boolean(w->ready),
                     "metrics", m);
    if (o) {
        json_object_set_new(o, "req_share_pct", jreal(share, 1));
        json_object_set_new(o, "procs", jint(w->procs));
        json_object_set_new(o, "pss_bytes", jint(w->pss_bytes));
    }
    return o;
}

static json_t *headless_app_json(const app_sum *a, double ts)
{
    /* the spread: largest share over smallest (null with no traffic or an idle worker) */
    double spread = a->share_min > 0 ? a->share_max / a->share_min : NAN;
    return json_pack("{s:s, s:o, s:o, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "type", "app", "ts", jreal(ts, 3), "app", jstr(a->app),
                     "workers", (json_int_t)a->workers,
                     "online", (json_int_t)a->online,
                     "req_per_s", jreal(a->req_per_s, 2),
                     "cpu_pct", jreal(a->cpu_pct, a->cpu_decimals),
                     "rss_bytes", jint(a->rss_bytes),
                     "lat_p50_ms", jreal(a->lat_p50_ms, 3),
                     "lat_p99_ms", jreal(a->lat_p99_ms, 3),
                     "lat_max_ms", jreal(a->lat_max_ms, 3),
                     "lag_p99_ms", jreal(a->lag_p99_ms, 3),
                     "lag_max_ms", jreal(a->lag_max_ms, 3),
                     "req_share_min_pct", jreal(a->share_min, 1),
                     "req_share_max_pct", jreal(a->share_max, 1),
                     "req_spread", jreal(spread, 2));
}

static json_t *headless_hub_json(const hub_counters *c, double ts)
{
    return json_pack("{s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:o, s:o, s:o}",
                     "type", "hub", "ts", jreal(ts, 3),
                     "workers", (json_int_t)c->workers,
                     "reports_total", (json_int_t)c->reports_total,
                     "dropped_total", (json_int_t)c->dropped_total,
                     "bad_total", (json_int_t)c->bad_total,
                     "spoofed_total", (json_int_t)c->spoofed_total,
                     "cpu_pct", jreal(c->cpu_pct, 2),
                     "cpu_window_s", jreal(c->cpu_window_s, 1),
                     "rss_bytes", jint(c->rss_bytes));
}

static int headless_ndjson(FILE *out, const worker_view *v, size_t n, const app_sum *apps,
                           size_t napps, const hub_counters *c, double ts)
{
    for (size_t i = 0; i < n; i++)
        if (headless_emit(out, headless_worker_json(&v[i], ts, headless_share(&v[i], apps, napps))) != 0)
            return -1;
    for (size_t i = 0; i < napps; i++)
        if (headless_emit(out, headless_app_json(&apps[i], ts)) != 0)
            return -1;
    return headless_emit(out, headless_hub_json(c, ts));
}

/*
 * The host object of a snapshot (views only; the headless lines do not
 * carry it): {"cpu_pct","mem_used_bytes","mem_total_bytes","load":[1,5,15],"cpus"}.
 */
static json_t *headless_host_json(const host_figures *h)
{
    json_t *load = json_array();
    for (int i = 0; i < 3; i++)
        json_array_append_new(load, jreal(h->load[i], 2));
    return json_pack("{s:o, s:o, s:o, s:o, s:o}", "cpu_pct", jreal(h->cpu_pct, 2),
                     "mem_used_bytes", jint(h->mem_used_bytes), "mem_total_bytes", jint(h->mem_total_bytes),
                     "load", load, "cpus", jint(h->ncpu));
}

/* Describes a waitpid status for views: "exit 1", "signal 9". */
static json_t *headless_exit_json(const worker_view *w)
{
    char buf[32];
    if (!w->has_exit)
        return json_null();
    if (WIFEXITED(w->last_status))
        snprintf(buf, sizeof buf, "exit %d", WEXITSTATUS(w->last_status));
    else if (WIFSIGNALED(w->last_status))
        snprintf(buf, sizeof buf, "signal %d", WTERMSIG(w->last_status));
    else
        return json_null();
    return json_string(buf);
}

/*
 * The interval's histogram of an app (the sum of its workers' in v[from..to),
 * lat or lag) as {"idx":[…],"count":[…]}, sparse, indices rising; null when
 * no worker sent one. Only in snapshots: a view that shows several hubs adds
 * them up to get the fleet's quantiles (quantiles themselves do not add).
 */
static json_t *headless_app_hist_json(const worker_view *v, size_t from, size_t to, bool lag)
{
    static uint64_t sum[HIST_NBUCKETS];   /* the loop thread only */
    bool any = false;
    memset(sum, 0, sizeof sum);
    for (size_t i = from; i < to; i++) {
        const state_hist *h = lag ? v[i].lag_h : v[i].lat_h;
        if (!h || v[i].state == WS_GONE)
            continue;
        headless_hist_add(sum, h);
        any = true;
    }
    if (!any)
        return json_null();
    json_t *idx = json_array(), *count = json_array();
    for (unsigned k = 0; k < HIST_NBUCKETS; k++)
        if (sum[k]) {
            json_array_append_new(idx, json_integer(k));
            json_array_append_new(count, json_integer(sum[k] > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX
                                                                                           : (json_int_t)sum[k]));
        }
    return json_pack("{s:o, s:o}", "idx", idx, "count", count);
}

json_t *headless_snapshot(const worker_view *v, size_t n, const hub_counters *c, double ts)
{
    app_sum stack_apps[64];
    app_sum *apps = n <= 64 ? stack_apps : malloc(n * sizeof *apps);
    if (!apps)
        return NULL;
    size_t napps = headless_app_sums(v, n, apps);
    json_t *ws = json_array(), *as = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *w = headless_worker_json(&v[i], ts, headless_share(&v[i], apps, napps));
        json_object_set_new(w, "key", json_integer(v[i].key));
        json_object_set_new(w, "last_exit", headless_exit_json(&v[i]));
        json_object_set_new(w, "owned", json_boolean(v[i].owned));
        /* The tree only here: an NDJSON line of a worker of 64 processes
         * would grow by kilobytes every interval. */
        json_object_set_new(w, "tree", headless_tree_json(&v[i]));
        json_array_append_new(ws, w);
    }
    /* the views are sorted by app, as apps[] is */
    for (size_t i = 0, from = 0; i < napps; i++) {
        size_t to = from;
        while (to < n && strcmp(v[to].app, apps[i].app) == 0)
            to++;
        json_t *a = headless_app_json(&apps[i], ts);
        json_object_set_new(a, "lat_hist", headless_app_hist_json(v, from, to, false));
        json_object_set_new(a, "lag_hist", headless_app_hist_json(v, from, to, true));
        json_array_append_new(as, a);
        from = to;
    }
    if (apps != stack_apps)
        free(apps);
    return json_pack("{s:o, s:o, s:o, s:o}", "workers", ws, "apps", as, "hub", headless_hub_json(c, ts),
                     "host", headless_host_json(&c->host));
}

int headless_print(FILE *out, headless_format fmt, const worker_view *v, size_t n,
                   const hub_counters *c, double ts, prom *p)
{
    app_sum stack_apps[64];
    app_sum *apps = n <= 64 ? stack_apps : malloc(n * sizeof *apps);
    if (!apps)
        return -1;
    size_t napps = headless_app_sums(v, n, apps);
    int rc = 0;
    if (fmt == HEADLESS_NDJSON)
        rc = headless_ndjson(out, v, n, apps, napps, c, ts);
    else if (p) {
        prom_print(p, out, v, n, apps, napps, c);
        fputc('\n', out);   /* expositions on a stream are separated by an empty line */
    } else {
        rc = -1;
    }
    if (apps != stack_apps)
        free(apps);
    if (fflush(out) != 0 || ferror(out))
        rc = -1;
    return rc;
}
