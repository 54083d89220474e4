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

/*
 * Prints one interval: a `worker` line per view (views sorted by app), an
 * `app` line per app, then the `hub` line, each one JSON object per line for
 * NDJSON; or one complete Prometheus text exposition followed by an empty
 * line for prom. ts is wall-clock Unix seconds. Flushes out. Returns 0, or -1
 * if writing failed (e.g. the reader went away).
 */
int headless_print(FILE *out, headless_format fmt, const worker_view *v, size_t n,
                   const hub_counters *c, double ts);

/*
 * The same figures as one JSON object for the control socket:
 * {"workers":[…],"apps":[…],"hub":{…},"host":{…}} with the headless objects
 * and the host's CPU, memory and load (PROTOCOL.md §4.4), each worker
 * also carrying "key" (the model's handle) and "last_exit" ("exit 1",
 * "signal 9" or null). New reference, or NULL when out of memory.
 */
json_t *headless_snapshot(const worker_view *v, size_t n, const hub_counters *c, double ts);

#endif
