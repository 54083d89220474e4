/*
 * attach.c — monitoring and commanding a master drover did not start.
 *
 * One operation runs at a time (a restart, or a reload that is a sequence
 * of restarts): terminate a child, wait for it to go, wait for a new child
 * to appear — and, when the children report readiness, for it to be ready —
 * then move on. One timer holds the operation's single deadline.
 */
#include "hub/attach.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATTACH_MAX 1024

typedef struct {
    pid_t pid;
    int   id;
    bool  ready;     /* said ready at least once */
} child;

typedef enum { OP_NONE, OP_WAIT_EXIT, OP_WAIT_NEW, OP_WAIT_READY } op_phase;

struct attach {
    uv_loop_t *loop;
    state     *st;
    pid_t      master;
    char       app[REPORT_NAME_MAX];
    unsigned   kill_timeout_ms, ready_timeout_ms;
    supervise_event_fn ev;
    void      *ev_ctx;
    child      kids[ATTACH_MAX];
    size_t     nkids;
    bool       seen_ready;      /* some child reported readiness: gate on it */

    /* the running operation */
    op_phase   phase;
    bool       reload;          /* part of a reload: continue with the next id */
    int        op_id;           /* id being restarted */
    pid_t      op_old, op_new;
    int        reload_done, reload_total;
    int        reload_ids[ATTACH_MAX];
    uv_timer_t timer;
};

/* Sends one typed event, with its formatted text, to the hub. */
#define attach_event(at, e, ...) supervise_emit((at)->ev, (at)->ev_ctx, e, __VA_ARGS__)

/*
 * The event of the running operation at phase: a step of the reload when
 * the operation belongs to one, else the replacement of one worker.
 */
static ctl_event attach_op_event(const attach *at, ctl_phase phase, const char *reason)
{
    ctl_event e = ctl_event_make(at->reload ? CTL_EV_RELOAD : CTL_EV_REPLACE, phase, at->app,
                                 at->reload ? -1 : at->op_id, at->reload ? 0 : at->op_new);
    if (at->reload) {
        e.done = at->reload_done;
        e.total = at->reload_total;
    }
    e.reason = reason;
    return e;
}

attach *attach_new(uv_loop_t *loop, state *st, pid_t master, const char *app,
                   unsigned kill_timeout_ms, unsigned ready_timeout_ms,
                   supervise_event_fn ev, void *ctx)
{
    attach *at = calloc(1, sizeof *at);
    if (!at)
        return NULL;
    at->loop = loop;
    at->st = st;
    at->master = master;
    snprintf(at->app, sizeof at->app, "%s", app);
    at->kill_timeout_ms = kill_timeout_ms;
    at->ready_timeout_ms = ready_timeout_ms;
    at->ev = ev;
    at->ev_ctx = ctx;
    uv_timer_init(loop, &at->timer);
    at->timer.data = at;
    return at;
}

static child *attach_by_pid(attach *at, pid_t pid)
{
    for (size_t i = 0; i < at->nkids; i++)
        if (at->kids[i].pid == pid)
            return &at->kids[i];
    return NULL;
}

static child *attach_by_id(attach *at, int id)
{
    for (size_t i = 0; i < at->nkids; i++)
        if (at->kids[i].id == id)
            return &at->kids[i];
    return NULL;
}

/* The lowest id no current child has. */
static int attach_free_id(attach *at)
{
    for (int id = 0;; id++)
        if (!attach_by_id(at, id))
            return id;
}

static void attach_step(attach *at);

/* Ends the running operation (and a reload it belongs to). */
static void attach_op_end(attach *at)
{
    at->phase = OP_NONE;
    at->reload = false;
    uv_timer_stop(&at->timer);
}

static void attach_on_deadline(uv_timer_t *t)
{
    attach *at = t->data;
    switch (at->phase) {
    case OP_WAIT_EXIT:
        attach_event(at, ctl_event_make(CTL_EV_KILL, CTL_PHASE_NONE, at->app, at->op_id, at->op_old),
                     "%s:%d (pid %d) did not stop within %u ms of SIGTERM: SIGKILL",
                     at->app, at->op_id, at->op_old, at->kill_timeout_ms);
        kill(at->op_old, SIGKILL);
        uv_timer_start(&at->timer, attach_on_deadline, at->ready_timeout_ms, 0);
        break;
    case OP_WAIT_NEW:
        attach_event(at, attach_op_event(at, CTL_PHASE_ABORTED, "no replacement forked"),
                     "%s%s:%d: the master (pid %d) forked no replacement for pid %d within %u ms%s",
                     at->reload ? "reload aborted: " : "", at->app, at->op_id, at->master, at->op_old,
                     at->ready_timeout_ms, at->reload ? "; the other workers keep serving" : "");
        attach_op_end(at);
        break;
    case OP_WAIT_READY:
        attach_event(at, attach_op_event(at, CTL_PHASE_ABORTED, "replacement not ready"),
                     "%s%s:%d: replacement pid %d not ready within %u ms", at->reload ? "reload aborted: " : "",
                     at->app, at->op_id, at->op_new, at->ready_timeout_ms);
        attach_op_end(at);
        break;
    case OP_NONE:
        break;
    }
}

/* The replacement is in place (and ready if readiness is reported). */
static void attach_op_done(attach *at)
{
    uv_timer_stop(&at->timer);
    at->phase = OP_NONE;
    if (at->reload) {
        at->reload_done++;
        attach_event(at, attach_op_event(at, CTL_PHASE_PROGRESS, NULL), "reload %s: %d/%d replaced (%s:%d: pid %d -> %d)",
                     at->app, at->reload_done, at->reload_total, at->app, at->op_id, at->op_old, at->op_new);
        attach_step(at);
    } else {
        attach_event(at, attach_op_event(at, CTL_PHASE_DONE, NULL), "%s:%d replaced: pid %d -> %d", at->app,
                     at->op_id, at->op_old, at->op_new);
    }
}

/* Starts restarting child id. */
static int attach_begin(attach *at, int id)
{
    child *c = attach_by_id(at, id);
    if (!c)
        return -1;
    at->op_id = id;
    at->op_old = c->pid;
    at->op_new = 0;
    at->phase = OP_WAIT_EXIT;
    kill(c->pid, SIGTERM);
    uv_timer_start(&at->timer, attach_on_deadline, at->kill_timeout_ms, 0);
    return 0;
}

/* Continues a reload with its next id, or ends it. */
static void attach_step(attach *at)
{
    while (at->reload_done < at->reload_total) {
        if (attach_begin(at, at->reload_ids[at->reload_done]) == 0) {
            attach_event(at, attach_op_event(at, CTL_PHASE_PROGRESS, NULL), "reload %s: %d/%d replaced, restarting %s:%d",
                         at->app, at->reload_done, at->reload_total, at->app, at->op_id);
            return;
        }
        at->reload_done++;   /* that child is gone already */
    }
    attach_event(at, attach_op_event(at, CTL_PHASE_DONE, NULL), "reload %s: done, %d/%d replaced", at->app,
                 at->reload_done, at->reload_total);
    at->reload = false;
}

void attach_on_children(attach *at, const pid_t *pids, size_t n)
{
    /* Forget children that are gone (the model marks them gone itself). */
    for (size_t i = 0; i < at->nkids;) {
        bool alive = false;
        for (size_t j = 0; j < n && !alive; j++)
            alive = pids[j] == at->kids[i].pid;
        if (alive) {
            i++;
            continue;
        }
        if (at->phase == OP_WAIT_EXIT && at->kids[i].pid == at->op_old) {
            at->phase = OP_WAIT_NEW;
            uv_timer_start(&at->timer, attach_on_deadline, at->ready_timeout_ms, 0);
        }
        at->kids[i] = at->kids[--at->nkids];
    }
    /* Adopt new ones. */
    for (size_t j = 0; j < n && at->nkids < ATTACH_MAX; j++) {
        if (attach_by_pid(at, pids[j]))
            continue;
        int id = attach_free_id(at);
        child *c = &at->kids[at->nkids++];
        c->pid = pids[j];
        c->id = id;
        state_identify(at->st, c->pid, at->app, c->id);
        /* It may have said it is ready before this scan found it. */
        c->ready = state_pid_ready(at->st, c->pid) == 1;
        at->seen_ready |= c->ready;
        if (at->phase == OP_WAIT_NEW) {
            at->op_new = c->pid;
            if (c->ready) {
                attach_op_done(at);
            } else if (at->seen_ready) {
                at->phase = OP_WAIT_READY;
                uv_timer_start(&at->timer, attach_on_deadline, at->ready_timeout_ms, 0);
            } else {
                attach_op_done(at);
            }
        }
    }
}

void attach_on_ready(attach *at, pid_t pid)
{
    child *c = attach_by_pid(at, pid);
    if (!c)
        return;
    c->ready = true;
    at->seen_ready = true;
    if (at->phase == OP_WAIT_READY && pid == at->op_new)
        attach_op_done(at);
}

int attach_kill(attach *at, int id, char *msg, size_t cap)
{
    int n = 0;
    for (size_t i = 0; i < at->nkids; i++) {
        if (id >= 0 && at->kids[i].id != id)
            continue;
        kill(at->kids[i].pid, SIGTERM);
        n++;
    }
    if (!n) {
        snprintf(msg, cap, "%s has no worker %d", at->app, id);
        return -1;
    }
    snprintf(msg, cap, "sent SIGTERM to %d worker%s of %s", n, n == 1 ? "" : "s", at->app);
    return 0;
}

int attach_restart(attach *at, int id, char *msg, size_t cap)
{
    if (id < 0)
        return attach_reload(at, msg, cap);
    if (at->phase != OP_NONE) {
        snprintf(msg, cap, "another restart of %s is running", at->app);
        return -1;
    }
    if (attach_begin(at, id) != 0) {
        snprintf(msg, cap, "%s has no worker %d", at->app, id);
        return -1;
    }
    snprintf(msg, cap, "restarting %s:%d (pid %d)", at->app, id, at->op_old);
    return 0;
}

int attach_reload(attach *at, char *msg, size_t cap)
{
    if (at->phase != OP_NONE) {
        snprintf(msg, cap, "another restart of %s is running", at->app);
        return -1;
    }
    at->reload_total = 0;
    for (int id = 0; (size_t)at->reload_total < at->nkids && id < ATTACH_MAX; id++)
        if (attach_by_id(at, id))
            at->reload_ids[at->reload_total++] = id;
    at->reload_done = 0;
    at->reload = true;
    attach_event(at, attach_op_event(at, CTL_PHASE_STARTED, NULL), "reload %s: replacing %d workers one at a time",
                 at->app, at->reload_total);
    attach_step(at);
    snprintf(msg, cap, "reloading %s: %d workers one at a time", at->app, at->reload_total);
    return 0;
}

const char *attach_app(const attach *at)
{
    return at->app;
}

bool attach_has_id(const attach *at, int id)
{
    return attach_by_id((attach *)at, id) != NULL;
}

static void attach_free_cb(uv_handle_t *h)
{
    free(h->data);
}

void attach_free(attach *at)
{
    if (!at)
        return;
    uv_timer_stop(&at->timer);
    uv_close((uv_handle_t *)&at->timer, attach_free_cb);
}

bool attach_busy(const attach *at)
{
    return at->phase != OP_NONE;
}
