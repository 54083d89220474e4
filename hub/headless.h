/*
 * headless.h — the headless printers: NDJSON and Prometheus text (DESIGN.md §3.4).
 */
#ifndef DROVER_HUB_HEADLESS_H
#define DROVER_HUB_HEADLESS_H

#include <stdio.h>

#include "state.h"

typedef enum { HEADLESS_NDJSON, HEADLESS_PROM } headless_format;

/*
 * Prints one interval: a `worker` line per view (views sorted by app), an
 * `app` line per app, then the `hub` line, each one JSON object per line for
 * NDJSON; or one complete Prometheus text exposition followed by an empty
 * line for prom. ts is wall-clock Unix seconds. Flushes out. Returns 0, or -1
 * if writing failed (e.g. the reader went away).
 */
int headless_print(FILE *out, headless_format fmt, const worker_view *v, size_t n,
                   const hub_counters *c, double ts);

#endif
