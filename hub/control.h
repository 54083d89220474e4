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

#define CONTROL_VERSION   1
#define CONTROL_LINE_MAX  (1024 * 1024)     /* longest request line accepted */
#define CONTROL_QUEUE_MAX (16 * 1024 * 1024) /* a client further behind is dropped */

/* What the control server asks of the hub. */
typedef struct {
    void *ctx;
    /* {"workers":[…],"apps":[…],"hub":{…}}, with per-worker "history" when asked. New reference. */
    json_t *(*snapshot)(void *ctx, bool with_history);
    /*
     * Runs a command (kill, restart, reload, stop, scale) with the request's
     * arguments. Returns 0 when accepted or -1; msg gets the line to show.
     */
    int (*command)(void *ctx, const char *cmd, const json_t *req, char *msg, size_t cap);
    /* Appends up to n recent lines of app (NULL: all) / id (-1: all) to arr as log objects. */
    void (*logs_tail)(void *ctx, const char *app, int id, size_t n, json_t *arr);
} control_hooks;

typedef struct control control;

/*
 * Listens on path (a stale socket file is replaced: the caller holds the
 * namespace lock). hello is what a client gets after its hello (the hub's
 * pid, mode…; stolen). Returns NULL with a one-line message in err.
 */
control *control_start(uv_loop_t *loop, const char *path, json_t *hello,
                       const control_hooks *hooks, char *err, size_t errcap);

/* Sends the current state to every subscribed client (once per interval). */
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
