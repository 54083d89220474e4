/*
 * columns.c — the worker columns shared by `drover ls` and the console.
 * Each formatter reads only keys that worker and app objects share where
 * they can (cpu_pct, rss_bytes, req_per_s, lat_*, lag_*), so `drover ls`
 * prints its app rows from the same table.
 */
#include "tui/columns.h"

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
    if (isnan(v) || v < 0)
        snprintf(out, cap, "-");
    else if (v >= 1024.0 * 1024 * 1024)
        snprintf(out, cap, "%.1fG", v / (1024.0 * 1024 * 1024));
    else if (v >= 1024.0 * 1024)
        snprintf(out, cap, "%.1fM", v / (1024.0 * 1024));
    else
        snprintf(out, cap, "%.0fK", v / 1024.0);
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

/* Writes v with the given decimals, or "-" when unknown. */
static void col_fmt_num(double v, int decimals, char *out, size_t cap)
{
    if (isnan(v))
        snprintf(out, cap, "-");
    else
        snprintf(out, cap, "%.*f", decimals, v);
}

static void f_app(const json_t *w, char *o, size_t c)
{
    const char *s = json_string_value(json_object_get(w, "app"));
    snprintf(o, c, "%s", s ? s : "-");
}
static void f_id(const json_t *w, char *o, size_t c)      { col_fmt_num(col_num(w, "id"), 0, o, c); }
static void f_pid(const json_t *w, char *o, size_t c)
{
    double p = col_num(w, "pid");
    col_fmt_num(p > 0 ? p : NAN, 0, o, c);
}
static void f_state(const json_t *w, char *o, size_t c)
{
    const char *s = json_string_value(json_object_get(w, "state"));
    snprintf(o, c, "%s", s ? s : "-");
}
static void f_uptime(const json_t *w, char *o, size_t c)  { columns_duration(col_num(w, "uptime_s"), o, c); }
static void f_restarts(const json_t *w, char *o, size_t c) { col_fmt_num(col_num(w, "restarts"), 0, o, c); }
static void f_cpu(const json_t *w, char *o, size_t c)     { col_fmt_num(col_num(w, "cpu_pct"), 1, o, c); }
static void f_mem(const json_t *w, char *o, size_t c)     { columns_bytes(col_num(w, "rss_bytes"), o, c); }
static void f_rps(const json_t *w, char *o, size_t c)     { col_fmt_num(col_num(w, "req_per_s"), 1, o, c); }
static void f_err(const json_t *w, char *o, size_t c)     { col_fmt_num(col_num(w, "err_total"), 0, o, c); }
static void f_lag(const json_t *w, char *o, size_t c)     { col_fmt_num(col_num(w, "lag_p99_ms"), 1, o, c); }
static void f_lagmax(const json_t *w, char *o, size_t c)  { col_fmt_num(col_num(w, "lag_max_ms"), 1, o, c); }
static void f_p50(const json_t *w, char *o, size_t c)     { col_fmt_num(col_num(w, "lat_p50_ms"), 1, o, c); }
static void f_p99(const json_t *w, char *o, size_t c)     { col_fmt_num(col_num(w, "lat_p99_ms"), 1, o, c); }

static double k_id(const json_t *w)       { return -col_num(w, "id"); }
static double k_pid(const json_t *w)      { return -col_num(w, "pid"); }
static double k_uptime(const json_t *w)   { return col_num(w, "uptime_s"); }
static double k_restarts(const json_t *w) { return col_num(w, "restarts"); }
static double k_cpu(const json_t *w)      { return col_num(w, "cpu_pct"); }
static double k_mem(const json_t *w)      { return col_num(w, "rss_bytes"); }
static double k_rps(const json_t *w)      { return col_num(w, "req_per_s"); }
static double k_err(const json_t *w)      { return col_num(w, "err_total"); }
static double k_lag(const json_t *w)      { return col_num(w, "lag_p99_ms"); }
static double k_lagmax(const json_t *w)   { return col_num(w, "lag_max_ms"); }
static double k_p50(const json_t *w)      { return col_num(w, "lat_p50_ms"); }
static double k_p99(const json_t *w)      { return col_num(w, "lat_p99_ms"); }

const column columns_table[] = {
    {"app",      "APP",      14, false, f_app,      NULL},
    {"id",       "ID",        3, true,  f_id,       k_id},
    {"pid",      "PID",       8, true,  f_pid,      k_pid},
    {"state",    "STATE",     8, false, f_state,    NULL},
    {"uptime",   "UPTIME",    6, true,  f_uptime,   k_uptime},
    {"restarts", "RST",       4, true,  f_restarts, k_restarts},
    {"cpu",      "CPU%",      6, true,  f_cpu,      k_cpu},
    {"mem",      "MEM",       7, true,  f_mem,      k_mem},
    {"rps",      "REQ/S",     8, true,  f_rps,      k_rps},
    {"errors",   "ERR",       6, true,  f_err,      k_err},
    {"p50",      "P50ms",     7, true,  f_p50,      k_p50},
    {"p99",      "P99ms",     7, true,  f_p99,      k_p99},
    {"lag",      "LAG99ms",   7, true,  f_lag,      k_lag},
    {"lagmax",   "LAGMAXms",  8, true,  f_lagmax,   k_lagmax},
    {NULL, NULL, 0, false, NULL, NULL},
};

const column *columns_find(const char *name)
{
    for (const column *c = columns_table; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}
