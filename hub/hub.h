/*
 * hub.h — the hub process: one libuv loop tying ingest, state, sampler and
 * the headless printers together.
 */
#ifndef DROVER_HUB_HUB_H
#define DROVER_HUB_HUB_H

#include <stdbool.h>

#include "headless.h"

typedef struct {
    const char *ns;             /* namespace name (-L), default "default" */
    const char *socket_dir;     /* --socket-dir, or NULL for the default rule */
    unsigned    interval_ms;    /* --interval */
    long        count;          /* --count: exit after this many intervals; 0 = forever */
    headless_format format;     /* --format */
} hub_options;

/*
 * Runs a monitor-only headless hub until SIGINT/SIGTERM, --count intervals,
 * or stdout closing. Prints errors as one line on stderr. Returns the process
 * exit status (0 ok, 1 failed).
 */
int hub_run_headless(const hub_options *o);

#endif
