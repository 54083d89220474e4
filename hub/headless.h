/*
 * headless.h — the headless printers: NDJSON and Prometheus text (README
 * "Headless output"; the objects are PROTOCOL.md §4.4's).
 */
#ifndef DROVER_HUB_HEADLESS_H
#define DROVER_HUB_HEADLESS_H

#include <jansson.h>
#include <stdio.h>

#include "hub/state.h"

typedef enum { HEADLESS_NDJSON, HEADLESS_PROM } headless_format;

/* Aggregates of one app over its workers. */
typedef struct {
    const char *app;
    int64_t workers, online;
    double  req_per_s, cpu_pct;  /* NAN when no worker has the figure */
    int     cpu_decimals;        /* the coarsest of its workers' */
    int64_t rss_bytes;           /* -1 when none */
    /* From the sum of the workers' histograms of the last interval (never an
     * average of their quantiles); NAN when no worker sent one. */
    double  lat_p50_ms, lat_p99_ms, lag_p99_ms;
    double  lat_max_ms, lag_max_ms;  /* max over the workers */
    double  share_min, share_max; /* online workers' smallest and largest share of req_per_s, %; NAN: no traffic */
} app_sum;

/*
 * Folds views sorted by app into per-app sums; returns the number of apps
 * in out (cap >= n). Quantiles come from the sum of the workers' interval
 * histograms.
 */
size_t headless_app_sums(const worker_view *v, size_t n, app_sum *out);

typedef struct prom prom;   /* hub/prom.h */

/*
 * Prints one interval: a `worker` line per view (views sorted by app), an
 * `app` line per app, then the `hub` line, each one JSON object per line for
 * NDJSON; or, with p, one complete Prometheus text exposition (prom_print)
 * followed by an empty line. ts is wall-clock Unix seconds. Flushes out.
 * Returns 0, or -1 if writing failed (e.g. the reader went away).
 */
int headless_print(FILE *out, headless_format fmt, const worker_view *v, size_t n,
                   const hub_counters *c, double ts, prom *p);

/*
 * The same figures as one JSON object for the control socket:
 * {"workers":[…],"apps":[…],"hub":{…},"host":{…}} with the headless objects
 * and the host's CPU, memory and load (PROTOCOL.md §4.4), each worker
 * also carrying "key" (the model's handle), "owned" (drover started or
 * adopted it: its id is drover's; false: name it APP:pid:PID), "last_exit" ("exit 1",
 * "signal 9" or null) and "tree" (headless_tree_json). New reference, or NULL when out of memory.
 */
json_t *headless_snapshot(const worker_view *v, size_t n, const hub_counters *c, double ts);

/*
 * The worker's process tree as the worker object's `tree` carries it:
 * [{pid, ppid, comm, cpu_pct, rss_bytes, pss_bytes}], the worker's own
 * process first, comm sanitized (proto/text.h). New reference.
 */
json_t *headless_tree_json(const worker_view *w);

#endif
