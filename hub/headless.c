/*
 * headless.c — the headless printers.
 *
 * NDJSON goes through jansson (no hand-written escaping). Unknown values are
 * JSON null, never omitted. Prometheus text has no null: an unknown value is
 * simply not exported for that series.
 */
#include "hub/headless.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Aggregates of one app over its workers. */
typedef struct {
    const char *app;
    int64_t workers, online;
    double  req_per_s, cpu_pct;  /* NAN when no worker has the figure */
    int64_t rss_bytes;           /* -1 when none */
    double  share_min, share_max; /* online workers' smallest and largest share of req_per_s, %; NAN: no traffic */
} app_sum;

/* Adds b to a sum that starts unknown (NAN); unknown addends are skipped. */
static double headless_addf(double a, double b)
{
    if (isnan(b))
        return a;
    return isnan(a) ? b : a + b;
}

/* Folds sorted views into per-app sums; returns the number of apps in out (cap ≥ n). */
static size_t headless_apps(const worker_view *v, size_t n, app_sum *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || strcmp(out[k - 1].app, v[i].app) != 0)
            out[k++] = (app_sum){.app = v[i].app, .req_per_s = NAN, .cpu_pct = NAN, .rss_bytes = -1};
        app_sum *a = &out[k - 1];
        if (v[i].state == WS_GONE)
            continue;
        a->workers++;
        a->online += v[i].state == WS_ONLINE;
        a->req_per_s = headless_addf(a->req_per_s, v[i].req_per_s);
        a->cpu_pct = headless_addf(a->cpu_pct, v[i].cpu_pct);
        if (v[i].rss_bytes >= 0)
            a->rss_bytes = (a->rss_bytes < 0 ? 0 : a->rss_bytes) + v[i].rss_bytes;
    }
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
                     " s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "type", "worker",
                     "ts", jreal(ts, 3),
                     "app", jstr(w->app),
                     "id", jint(w->id),
                     "pid", w->pid > 0 ? json_integer(w->pid) : json_null(),   /* none: backoff, stopped */
                     "state", state_name(w->state),
                     "agent", w->agent,
                     "restarts", jint(w->restarts),
                     "uptime_s", jreal(w->uptime_s, 2),
                     "cpu_pct", jreal(w->cpu_pct, 2),
                     "rss_bytes", jint(w->rss_bytes),
                     "req_total", jint(w->req_total),
                     "req_per_s", jreal(w->req_per_s, 2),
                     "err_total", jint(w->err_total),
                     "inflight", jint(w->inflight),
                     "lat_p50_ms", jreal(w->lat_p50_ms, 3),
                     "lat_p99_ms", jreal(w->lat_p99_ms, 3),
                     "lag_p99_ms", jreal(w->lag_p99_ms, 3),
                     "lag_max_ms", jreal(w->lag_max_ms, 3),
                     "ready", w->ready < 0 ? json_null() : json_boolean(w->ready),
                     "metrics", m);
    if (o)
        json_object_set_new(o, "req_share_pct", jreal(share, 1));
    return o;
}

static json_t *headless_app_json(const app_sum *a, double ts)
{
    /* the spread: largest share over smallest (null with no traffic or an idle worker) */
    double spread = a->share_min > 0 ? a->share_max / a->share_min : NAN;
    return json_pack("{s:s, s:o, s:o, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o}",
                     "type", "app", "ts", jreal(ts, 3), "app", jstr(a->app),
                     "workers", (json_int_t)a->workers,
                     "online", (json_int_t)a->online,
                     "req_per_s", jreal(a->req_per_s, 2),
                     "cpu_pct", jreal(a->cpu_pct, 2),
                     "rss_bytes", jint(a->rss_bytes),
                     "req_share_min_pct", jreal(a->share_min, 1),
                     "req_share_max_pct", jreal(a->share_max, 1),
                     "req_spread", jreal(spread, 2));
}

static json_t *headless_hub_json(const hub_counters *c, double ts)
{
    return json_pack("{s:s, s:o, s:I, s:I, s:I, s:I, s:I, s:o, s:o}",
                     "type", "hub", "ts", jreal(ts, 3),
                     "workers", (json_int_t)c->workers,
                     "reports_total", (json_int_t)c->reports_total,
                     "dropped_total", (json_int_t)c->dropped_total,
                     "bad_total", (json_int_t)c->bad_total,
                     "spoofed_total", (json_int_t)c->spoofed_total,
                     "cpu_pct", jreal(c->cpu_pct, 2),
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

json_t *headless_snapshot(const worker_view *v, size_t n, const hub_counters *c, double ts)
{
    app_sum stack_apps[64];
    app_sum *apps = n <= 64 ? stack_apps : malloc(n * sizeof *apps);
    if (!apps)
        return NULL;
    size_t napps = headless_apps(v, n, apps);
    json_t *ws = json_array(), *as = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *w = headless_worker_json(&v[i], ts, headless_share(&v[i], apps, napps));
        json_object_set_new(w, "key", json_integer(v[i].key));
        json_object_set_new(w, "last_exit", headless_exit_json(&v[i]));
        json_array_append_new(ws, w);
    }
    for (size_t i = 0; i < napps; i++)
        json_array_append_new(as, headless_app_json(&apps[i], ts));
    if (apps != stack_apps)
        free(apps);
    return json_pack("{s:o, s:o, s:o, s:o}", "workers", ws, "apps", as, "hub", headless_hub_json(c, ts),
                     "host", headless_host_json(&c->host));
}

/* ---- Prometheus text ---------------------------------------------------- */

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

/* Worker labels: app, worker (id, "" when unknown), pid. */
static void prom_worker_labels(FILE *out, const worker_view *w)
{
    fputs("{app=\"", out);
    prom_label(out, w->app);
    if (w->id >= 0)
        fprintf(out, "\",worker=\"%lld\",pid=\"%d\"", (long long)w->id, (int)w->pid);
    else
        fprintf(out, "\",worker=\"\",pid=\"%d\"", (int)w->pid);
}

/* One gauge/counter family over all workers; get returns NAN for "no sample". */
typedef double (*prom_get)(const worker_view *w);

static void prom_worker_family(FILE *out, const worker_view *v, size_t n, const char *name,
                               const char *type, const char *help, prom_get get)
{
    prom_family(out, name, type, help);
    for (size_t i = 0; i < n; i++) {
        double x = get(&v[i]);
        if (isnan(x))
            continue;
        fputs(name, out);
        prom_worker_labels(out, &v[i]);
        fprintf(out, "} %.17g\n", x);
    }
}

static double g_up(const worker_view *w)       { return w->state == WS_ONLINE; }
static double g_agent(const worker_view *w)    { return w->agent; }
static double g_restarts(const worker_view *w) { return w->restarts < 0 ? NAN : (double)w->restarts; }
static double g_uptime(const worker_view *w)   { return w->uptime_s; }
static double g_cpu(const worker_view *w)      { return w->cpu_pct / 100.0; }
static double g_rss(const worker_view *w)      { return w->rss_bytes < 0 ? NAN : (double)w->rss_bytes; }
static double g_req(const worker_view *w)      { return w->req_total < 0 ? NAN : (double)w->req_total; }
static double g_rps(const worker_view *w)      { return w->req_per_s; }
static double g_err(const worker_view *w)      { return w->err_total < 0 ? NAN : (double)w->err_total; }
static double g_inflight(const worker_view *w) { return w->inflight < 0 ? NAN : (double)w->inflight; }
static double g_lat50(const worker_view *w)    { return w->lat_p50_ms / 1000.0; }
static double g_lat99(const worker_view *w)    { return w->lat_p99_ms / 1000.0; }
static double g_lag99(const worker_view *w)    { return w->lag_p99_ms / 1000.0; }
static double g_lagmax(const worker_view *w)   { return w->lag_max_ms / 1000.0; }
static double g_ready(const worker_view *w)    { return w->ready < 0 ? NAN : (double)w->ready; }

static const struct {
    const char *name, *type, *help;
    prom_get get;
} prom_worker_table[] = {
    {"drover_worker_up", "gauge", "1 if the worker is online", g_up},
    {"drover_worker_agent_reporting", "gauge", "1 if the worker's agent reported in the last 3 intervals", g_agent},
    {"drover_worker_restarts_total", "counter", "Restarts of this worker slot by drover", g_restarts},
    {"drover_worker_uptime_seconds", "gauge", "Seconds since the worker process started", g_uptime},
    {"drover_worker_cpu_ratio", "gauge", "CPU used over the last interval, in cores (1 = one full core)", g_cpu},
    {"drover_worker_resident_memory_bytes", "gauge", "Resident memory of the worker process", g_rss},
    {"drover_worker_requests_total", "counter", "Requests handled, as reported by the agent", g_req},
    {"drover_worker_request_rate", "gauge", "Requests per second over the last report interval", g_rps},
    {"drover_worker_errors_total", "counter", "Errors, as reported by the agent", g_err},
    {"drover_worker_inflight_requests", "gauge", "Requests in progress", g_inflight},
    {"drover_worker_latency_p50_seconds", "gauge", "Median request latency over the last interval", g_lat50},
    {"drover_worker_latency_p99_seconds", "gauge", "99th percentile request latency over the last interval", g_lat99},
    {"drover_worker_event_loop_lag_p99_seconds", "gauge", "99th percentile event-loop lag over the last interval", g_lag99},
    {"drover_worker_event_loop_lag_max_seconds", "gauge", "Largest event-loop lag over the last interval", g_lagmax},
    {"drover_worker_ready", "gauge", "1 if the worker said it is ready to serve", g_ready},
};

static void prom_app_gauge(FILE *out, const app_sum *apps, size_t napps, const char *name,
                           const char *help, int which)
{
    prom_family(out, name, "gauge", help);
    for (size_t i = 0; i < napps; i++) {
        const app_sum *a = &apps[i];
        double x = which == 0 ? (double)a->workers : which == 1 ? (double)a->online
                 : which == 2 ? a->req_per_s : which == 3 ? a->cpu_pct / 100.0
                 : a->rss_bytes < 0 ? NAN : (double)a->rss_bytes;
        if (isnan(x))
            continue;
        fprintf(out, "%s{app=\"", name);
        prom_label(out, a->app);
        fprintf(out, "\"} %.17g\n", x);
    }
}

static void headless_prom(FILE *out, const worker_view *v, size_t n, const app_sum *apps,
                          size_t napps, const hub_counters *c)
{
    for (size_t f = 0; f < sizeof prom_worker_table / sizeof prom_worker_table[0]; f++)
        prom_worker_family(out, v, n, prom_worker_table[f].name, prom_worker_table[f].type,
                           prom_worker_table[f].help, prom_worker_table[f].get);

    prom_family(out, "drover_worker_metric", "gauge", "Custom metrics set by the worker's agent");
    for (size_t i = 0; i < n; i++) {
        for (uint32_t k = 0; k < v[i].nmetrics; k++) {
            fputs("drover_worker_metric", out);
            prom_worker_labels(out, &v[i]);
            fputs(",name=\"", out);
            prom_label(out, v[i].metrics[k].key);
            fputs("\"}", out);
            prom_value(out, v[i].metrics[k].value);
        }
    }

    prom_app_gauge(out, apps, napps, "drover_app_workers", "Workers of the app", 0);
    prom_app_gauge(out, apps, napps, "drover_app_online_workers", "Workers of the app that are online", 1);
    prom_app_gauge(out, apps, napps, "drover_app_request_rate", "Requests per second, all workers", 2);
    prom_app_gauge(out, apps, napps, "drover_app_cpu_ratio", "CPU of all workers, in cores", 3);
    prom_app_gauge(out, apps, napps, "drover_app_resident_memory_bytes", "Resident memory of all workers", 4);

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
    prom_family(out, "drover_hub_cpu_ratio", "gauge", "CPU of the hub process, in cores");
    if (!isnan(c->cpu_pct))
        fprintf(out, "drover_hub_cpu_ratio %.17g\n", c->cpu_pct / 100.0);
    prom_family(out, "drover_hub_resident_memory_bytes", "gauge", "Resident memory of the hub process");
    if (c->rss_bytes >= 0)
        fprintf(out, "drover_hub_resident_memory_bytes %lld\n", (long long)c->rss_bytes);
    fputc('\n', out);
}

int headless_print(FILE *out, headless_format fmt, const worker_view *v, size_t n,
                   const hub_counters *c, double ts)
{
    app_sum stack_apps[64];
    app_sum *apps = n <= 64 ? stack_apps : malloc(n * sizeof *apps);
    if (!apps)
        return -1;
    size_t napps = headless_apps(v, n, apps);
    int rc = 0;
    if (fmt == HEADLESS_NDJSON)
        rc = headless_ndjson(out, v, n, apps, napps, c, ts);
    else
        headless_prom(out, v, n, apps, napps, c);
    if (apps != stack_apps)
        free(apps);
    if (fflush(out) != 0 || ferror(out))
        rc = -1;
    return rc;
}
