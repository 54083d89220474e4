/*
 * commands.h — the hub's side of the control protocol's command table
 * (proto/control.h): what each command does on this hub, how a target is
 * resolved, the snapshot views see, and the merged log tail. hub/control.c
 * does the talking; this module does the acting.
 */
#ifndef DROVER_HUB_COMMANDS_H
#define DROVER_HUB_COMMANDS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "hub/agentlog.h"
#include "hub/attach.h"
#include "hub/control.h"
#include "hub/headless.h"
#include "hub/logs.h"
#include "hub/state.h"
#include "hub/supervise.h"

/*
 * What the commands act on. The hub sets sv/at/lg as it creates them and
 * clears them as it frees them; views is scratch space the module owns.
 */
typedef struct {
    state       *st;
    supervise   *sv;           /* drover run */
    attach      *at;           /* drover attach */
    logs        *lg;           /* captured output (run) */
    unsigned     kind;         /* CTL_HUB_* */
    const char  *log_dir;      /* where worker output files go (run), or NULL */
    double       interval_s;
    void       (*stop_hub)(void *ctx);   /* `stop` with no target: ends the hub after the reply */
    /* `apply FILE`: 0 when applied (reply gets "changes", "reloading",
     * "failed"), -1 when nothing changed; msg says what. */
    int        (*apply)(void *ctx, const char *file, json_t *reply, char *msg, size_t cap);
    /* `upgrade`: 0 when the new binary passed its check and the hub
     * re-executes after this reply (reply gets "from", "to", "exe",
     * "upgrades"), -1 when refused (nothing changed); msg says what. */
    int        (*upgrade)(void *ctx, json_t *reply, char *msg, size_t cap);
    void        *ctx;
    worker_view *views;
    size_t       views_cap;
    prom        *prom;         /* the Prometheus exposition's counters (hub/prom.h) */
    agentlog    *al;           /* drover_log lines of processes drover did not start (owned here) */
} hub_commands;

/* The control hooks that act on hc (which must outlive the control server). */
control_hooks hub_commands_hooks(hub_commands *hc);

/*
 * Refreshes hc->views from the model; returns how many, or -1 when out of
 * memory. The headless printers use the same views.
 */
ssize_t hub_commands_views(hub_commands *hc, double now);

/* Frees the scratch views. */
void hub_commands_free(hub_commands *hc);

#endif
