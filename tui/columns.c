/*
 * columns.c — the worker columns shared by `drover ls` and the console.
 * Each formatter reads only keys that worker and app objects share where
 * they can (cpu_pct, rss_bytes, req_per_s, lat_*, lag_*), so `drover ls`
 * prints its app rows from the same table.
 */
#include "tui/columns.h"

#include "tui/human.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* A number from the object, NAN when absent or null. */
static double col_num(const json_t *w, const char *key)
{
    json_t *v = json_object_get(w, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

void columns_bytes(double v, char *out, size_t cap)
{
    human_format(v, HUMAN_BYTES, out, cap);
}

void columns_duration(double s, char *out, size_t cap)
{
    if (isnan(s) || s < 0)
        snprintf(out, cap, "-");
    else if (s < 60)
        snprintf(out, cap, "%.0fs", s);
    else if (s < 3600)
        snprintf(out, cap, "%.0fm", s / 60);
    else if (s < 86400)
        snprintf(out, cap, "%.0fh", s / 3600);
    else
        snprintf(out, cap, "%.0fd", s / 86400);
}

/* Writes a count or id v as a whole number, or "-" when unknown. */
static void col_fmt_int(double v, char *out, size_t cap)
{
    if (isnan(v))
        snprintf(out, cap, "-");
    else
        snprintf(out, cap, "%.0f", v);
}

/* Writes a measured figure humanized ("12.5", "1.2k"), or "-" when unknown. */
static void col_fmt_human(double v, char *out, size_t cap)
{
    human_format(v, HUMAN_SI, out, cap);
}

static void f_app(const json_t *w, char *o, size_t c)
{
    const char *s = json_string_value(json_object_get(w, "app"));
    snprintf(o, c, "%s", s ? s : "-");
}
/* the host a fleet view put on the worker (tui/console.c); the target as the user wrote it */
static void f_host(const json_t *w, char *o, size_t c)
{
    const char *h = json_string_value(json_object_get(w, "host"));
    snprintf(o, c, "%s", h ? h : "-");
}
static void f_id(const json_t *w, char *o, size_t c)      { col_fmt_int(col_num(w, "id"), o, c); }
static void f_pid(const json_t *w, char *o, size_t c)
{
    double p = col_num(w, "pid");
    col_fmt_int(p > 0 ? p : NAN, o, c);
}
static void f_state(const json_t *w, char *o, size_t c)
{
    const char *s = json_string_value(json_object_get(w, "state"));
    snprintf(o, c, "%s", s ? s : "-");
}
static void f_uptime(const json_t *w, char *o, size_t c)  { columns_duration(col_num(w, "uptime_s"), o, c); }
static void f_restarts(const json_t *w, char *o, size_t c) { col_fmt_int(col_num(w, "restarts"), o, c); }
static void f_cpu(const json_t *w, char *o, size_t c)     { col_fmt_human(col_num(w, "cpu_pct"), o, c); }
static void f_mem(const json_t *w, char *o, size_t c)     { columns_bytes(col_num(w, "rss_bytes"), o, c); }
static void f_rps(const json_t *w, char *o, size_t c)     { col_fmt_human(col_num(w, "req_per_s"), o, c); }
static void f_share(const json_t *w, char *o, size_t c)
{
    double v = col_num(w, "req_share_pct");
    if (isnan(v))
        snprintf(o, c, "-");
    else
        snprintf(o, c, "%.0f%%", v);
}
static void f_err(const json_t *w, char *o, size_t c)     { col_fmt_human(col_num(w, "err_total"), o, c); }
static void f_lag(const json_t *w, char *o, size_t c)     { col_fmt_human(col_num(w, "lag_p99_ms"), o, c); }
static void f_lagmax(const json_t *w, char *o, size_t c)  { col_fmt_human(col_num(w, "lag_max_ms"), o, c); }
static void f_p50(const json_t *w, char *o, size_t c)     { col_fmt_human(col_num(w, "lat_p50_ms"), o, c); }
static void f_p99(const json_t *w, char *o, size_t c)     { col_fmt_human(col_num(w, "lat_p99_ms"), o, c); }

static double k_id(const json_t *w)       { return -col_num(w, "id"); }
static double k_pid(const json_t *w)      { return -col_num(w, "pid"); }
static double k_uptime(const json_t *w)   { return col_num(w, "uptime_s"); }
static double k_restarts(const json_t *w) { return col_num(w, "restarts"); }
static double k_cpu(const json_t *w)      { return col_num(w, "cpu_pct"); }
static double k_mem(const json_t *w)      { return col_num(w, "rss_bytes"); }
static double k_rps(const json_t *w)      { return col_num(w, "req_per_s"); }
static double k_share(const json_t *w)    { return col_num(w, "req_share_pct"); }
static double k_err(const json_t *w)      { return col_num(w, "err_total"); }
static double k_lag(const json_t *w)      { return col_num(w, "lag_p99_ms"); }
static double k_lagmax(const json_t *w)   { return col_num(w, "lag_max_ms"); }
static double k_p50(const json_t *w)      { return col_num(w, "lat_p50_ms"); }
static double k_p99(const json_t *w)      { return col_num(w, "lat_p99_ms"); }

const column columns_table[] = {
    {"app",      "APP",      14, false, f_app,      NULL, false, false},
    {"host",     "HOST",     16, false, f_host,     NULL, false, true},
    {"id",       "ID",        3, true,  f_id,       k_id, true, false},
    {"pid",      "PID",       8, true,  f_pid,      k_pid, true, false},
    {"state",    "STATE",     8, false, f_state,    NULL, false, false},
    {"uptime",   "UPTIME",    6, true,  f_uptime,   k_uptime, false, false},
    {"restarts", "RST",       4, true,  f_restarts, k_restarts, false, false},
    {"cpu",      "CPU%",      6, true,  f_cpu,      k_cpu, false, false},
    {"mem",      "MEM",       7, true,  f_mem,      k_mem, false, false},
    {"rps",      "REQ/S",     8, true,  f_rps,      k_rps, false, false},
    {"share",    "SHARE",     5, true,  f_share,    k_share, false, false},
    {"errors",   "ERR",       6, true,  f_err,      k_err, false, false},
    {"p50",      "P50ms",     7, true,  f_p50,      k_p50, false, false},
    {"p99",      "P99ms",     7, true,  f_p99,      k_p99, false, false},
    {"lag",      "LAG99ms",   7, true,  f_lag,      k_lag, false, false},
    {"lagmax",   "LAGMAXms",  8, true,  f_lagmax,   k_lagmax, false, false},
    {NULL, NULL, 0, false, NULL, NULL, false, false},
};

void columns_spread(const json_t *app, char *out, size_t cap)
{
    double lo = col_num(app, "req_share_min_pct"), hi = col_num(app, "req_share_max_pct");
    if (isnan(lo) || isnan(hi))
        snprintf(out, cap, "spread -");
    else if (lo <= 0)
        snprintf(out, cap, "spread inf (%.0f-%.0f%%)", lo, hi);
    else
        snprintf(out, cap, "spread %.1fx (%.0f-%.0f%%)", hi / lo, lo, hi);
}

/* See columns.h. */
bool columns_sort_ascending(const column *col, bool reversed)
{
    return col->ascending != reversed;
}

const column *columns_find(const char *name)
{
    for (const column *c = columns_table; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}
