/*
 * control.h — the control socket (ctl.sock): the one way views (the console,
 * the CLI) see the hub and act on it. Protocol in proto/PROTOCOL.md §4:
 * newline-delimited JSON over a Unix stream socket, a versioned hello, then
 * requests with replies, subscriptions to state and logs, and events.
 */
#ifndef DROVER_HUB_CONTROL_H
#define DROVER_HUB_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "hub/logs.h"
#include "proto/control.h"

/*
 * Memory for slow clients. A client's output is kept in chunks of a fixed
 * size (4 KiB for a turn's first short line, else 64 KiB), each one
 * allocation with its write request, freed as soon as it is written. A
 * client's cost is what its chunks hold, pending and in libuv's hands,
 * counted as allocated (usable size and malloc header), not the bytes sent.
 * (Its partial request line, at most CTL_LINE_MAX, is not counted here.)
 * A client with nothing in libuv's hands is not behind: one turn's output
 * for it (a subscribe reply for 1024 workers with history: ~3.6 MB) is
 * never a reason to drop it. Measured with one never-reading follower of a
 * worker writing flat out: the hub's RSS grew 2.9-3.2 MiB before it was
 * dropped (10 MiB with the former 16 MiB cap, which counted bytes sent).
 * The total is four clients' worth.
 */
#define CONTROL_QUEUE_MAX   (4 * 1024 * 1024)  /* what one client's output may cost: past it, it is dropped */
#define CONTROL_TOTAL_MAX   (16 * 1024 * 1024) /* for all clients: past it, the one furthest behind is dropped first */
#define CONTROL_CLIENTS_MAX 128                /* clients at once */
#define CONTROL_TURN_BUDGET_MS 5               /* log tails per loop turn; past it they wait a turn */

/* What the control server asks of the hub (hub/commands.c answers). */
typedef struct {
    void *ctx;
    /* {"workers":[…],"apps":[…],"hub":{…}}, with per-worker "history" when asked. New reference. */
    json_t *(*snapshot)(void *ctx, bool with_history);
    /*
     * Checks that target names an app (and worker) of this hub. Returns 0, or
     * -1 with "no app named X" / "APP has no worker N" in msg.
     */
    int (*resolve)(void *ctx, const ctl_target *t, char *msg, size_t cap);
    /*
     * Runs a command that acts on workers (kill, restart, reload, stop,
     * scale), already validated and resolved. May add fields to reply.
     * Returns 0 when accepted or -1; msg gets the line to show.
     */
    int (*command)(void *ctx, const ctl_request *r, json_t *reply, char *msg, size_t cap);
    /* The headless output of the current interval in fmt (malloc'd text), or NULL. */
    char *(*render)(void *ctx, ctl_format fmt);
    /* Appends up to n recent lines of target (app "" = all; id -1 = all) to arr as log objects. */
    void (*logs_tail)(void *ctx, const ctl_target *t, size_t n, json_t *arr);
} control_hooks;

typedef struct control control;

/*
 * Listens on path (a stale socket file is replaced: the caller holds the
 * namespace lock), or with fd >= 0 on that socket, bound at path and
 * handed over by `drover upgrade`. hub_kind is CTL_HUB_RUN, _ATTACH or _MONIT: commands the
 * table does not allow on it are refused. hello is what a client gets after
 * its hello (the hub's pid, mode…; stolen). Returns NULL with a one-line
 * message in err.
 */
control *control_start(uv_loop_t *loop, const char *path, int fd, unsigned hub_kind, json_t *hello,
                       const control_hooks *hooks, char *err, size_t errcap);

/* The listening socket (for `drover upgrade`), or -1. */
int control_listen_fd(const control *c);

/* Sends the current state to every subscribed client, and the headless
 * output to every streaming one (once per interval). */
void control_publish_state(control *c);

/* Sends an event (reload progress, restarts…) to every subscribed client. */
void control_publish_event(control *c, const ctl_event *e);

/* Sends a captured log line to every client following app:id. */
void control_publish_log(control *c, const char *app, int id, const logs_line *line);

/* JSON object for one log line, as sent to clients (new reference). */
json_t *control_log_json(const char *app, int id, const logs_line *line);

/* Closes every client and the socket, unlinks the file; frees once closed. */
void control_stop(control *c);

#endif
