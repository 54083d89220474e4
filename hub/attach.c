/*
 * attach.c — monitoring and commanding a master drover did not start.
 *
 * One operation runs at a time, with one timer holding its single deadline:
 * a restart (terminate a child, wait for it to go, wait for a new child to
 * appear — and, when the children report readiness, for it to be ready),
 * a reload that is a sequence of restarts (ONE), a reload the master does
 * itself on one signal (MASTER, the attach_mr_* machine), or a scale (one
 * signal to the master per worker, paced on the count of children).
 * Which signals: the master's profile, a row of attach_profile_table.
 */
#include "hub/attach.h"

#include <errno.h>
#include <limits.h>
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

/*
 * One row per server family: what its master and children take. nginx: HUP
 * to the master starts new workers and QUITs the old ones gracefully; QUIT
 * to a worker is its graceful stop (TERM is the fast one). gunicorn: HUP
 * likewise, TTIN/TTOU one worker more/less. uWSGI: HUP is its graceful
 * reload. Anything else: TERM to a child, children replaced one by one.
 */
static const attach_profile attach_profile_table[] = {
    {"default",  SIGTERM, ATTACH_RELOAD_ONE,    SIGTERM, 0, 0},
    {"nginx",    SIGQUIT, ATTACH_RELOAD_MASTER, SIGHUP,  0, 0},
    {"gunicorn", SIGTERM, ATTACH_RELOAD_MASTER, SIGHUP,  SIGTTIN, SIGTTOU},
    {"uwsgi",    SIGTERM, ATTACH_RELOAD_MASTER, SIGHUP,  0, 0},
};
#define ATTACH_PROFILES (sizeof attach_profile_table / sizeof attach_profile_table[0])

/* The operation running: one restart (three phases), a master reload, a scale. */
typedef enum { OP_NONE, OP_WAIT_EXIT, OP_WAIT_NEW, OP_WAIT_READY, OP_MASTER_RELOAD, OP_SCALE } op_phase;

struct attach {
    uv_loop_t *loop;
    state     *st;
    pid_t      master;
    char       app[REPORT_NAME_MAX];
    char       master_name[64];
    attach_profile prof;
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
    int        op_signal;       /* the signal it was sent */
    pid_t      op_old, op_new;
    int        reload_done, reload_total;
    int        reload_ids[ATTACH_MAX];

    /* OP_MASTER_RELOAD: the machine, and the children when the signal went */
    attach_mr_state mr;
    pid_t      mr_old[ATTACH_MAX];
    size_t     mr_nold;
    size_t     mr_seen_left, mr_seen_fresh;   /* last reported, for progress events */

    /* OP_SCALE: the count wanted, the count when the last signal went, signals sent */
    size_t     scale_target, scale_base;
    int        scale_sent;
    uv_timer_t timer;
};

/* The abbreviation of a signal ("TERM"), or its number. */
static const char *attach_signame(int sig, char *buf, size_t cap)
{
    const char *n = sig > 0 ? sigabbrev_np(sig) : NULL;
    if (n)
        return n;
    snprintf(buf, cap, "%d", sig);
    return buf;
}

const attach_profile *attach_profiles(size_t *n)
{
    *n = ATTACH_PROFILES;
    return attach_profile_table;
}

/* True when comm is name, or name followed by a byte no process name
 * continues with ("gunicorn: master [app]" as set by setproctitle). */
static bool attach_name_matches(const char *comm, const char *name)
{
    size_t n = strlen(name);
    if (!comm || strncmp(comm, name, n) != 0)
        return false;
    return comm[n] == '\0' || comm[n] == ':' || comm[n] == ' ';
}

const attach_profile *attach_profile_find(const char *comm, const char *exe)
{
    for (size_t i = 1; i < ATTACH_PROFILES; i++)
        if (attach_name_matches(comm, attach_profile_table[i].name) ||
            (exe && strcmp(exe, attach_profile_table[i].name) == 0))
            return &attach_profile_table[i];
    return &attach_profile_table[0];
}

void attach_profile_text(const attach_profile *p, char *out, size_t cap)
{
    char b1[16], b2[16], b3[16], b4[16];
    const char *up = attach_signame(p->scale_up, b3, sizeof b3), *down = attach_signame(p->scale_down, b4, sizeof b4);
    char scale[40];
    if (p->scale_up && p->scale_down)
        snprintf(scale, sizeof scale, "%s/%s", up, down);
    else
        snprintf(scale, sizeof scale, "-");
    snprintf(out, cap, "kill %s, reload %s %s, scale %s", attach_signame(p->kill_signal, b1, sizeof b1),
             p->reload == ATTACH_RELOAD_MASTER ? "MASTER" : "ONE", attach_signame(p->reload_signal, b2, sizeof b2),
             scale);
}

static const char *const attach_mr_names[] = {
    [ATTACH_MR_IDLE] = "idle", [ATTACH_MR_SIGNALLED] = "signalled", [ATTACH_MR_REPLACING] = "replacing",
    [ATTACH_MR_DONE] = "done", [ATTACH_MR_ABORTED] = "aborted",
};

const char *attach_mr_name(attach_mr_state s)
{
    return (unsigned)s <= ATTACH_MR_ABORTED ? attach_mr_names[s] : "?";
}

/*
 * Every old child gone and new ones there (every one ready if readiness is
 * reported). Not "as many as before": a master may come back to its
 * configured count (gunicorn's HUP forgets TTIN/TTOU). nginx and gunicorn
 * fork the new children before retiring the old, so when the last old one
 * is gone the new ones are all there.
 */
static bool attach_mr_complete(const attach_mr_input *in)
{
    return in->old_left == 0 && (in->fresh > 0 || in->old_total == 0) &&
           (!in->gate_ready || in->fresh_ready == in->fresh);
}

attach_mr_state attach_mr_next(attach_mr_state s, const attach_mr_input *in)
{
    switch (s) {
    case ATTACH_MR_IDLE:
    case ATTACH_MR_DONE:
    case ATTACH_MR_ABORTED:
        return in->ev == ATTACH_MR_START ? ATTACH_MR_SIGNALLED : s;
    case ATTACH_MR_SIGNALLED:
    case ATTACH_MR_REPLACING:
        switch (in->ev) {
        case ATTACH_MR_START:
            return s;   /* one reload at a time: the running one goes on */
        case ATTACH_MR_CHILDREN:
            if (attach_mr_complete(in))
                return ATTACH_MR_DONE;
            if (in->fresh > 0 || in->old_left < in->old_total)
                return ATTACH_MR_REPLACING;
            return s;
        case ATTACH_MR_DEADLINE:
            return attach_mr_complete(in) ? ATTACH_MR_DONE : ATTACH_MR_ABORTED;
        }
        break;
    }
    return s;
}

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

attach *attach_new(uv_loop_t *loop, state *st, pid_t master, const char *master_name, const char *app,
                   const attach_profile *p, unsigned kill_timeout_ms, unsigned ready_timeout_ms,
                   supervise_event_fn ev, void *ctx)
{
    attach *at = calloc(1, sizeof *at);
    if (!at)
        return NULL;
    at->loop = loop;
    at->st = st;
    at->master = master;
    snprintf(at->master_name, sizeof at->master_name, "%s", master_name ? master_name : "");
    snprintf(at->app, sizeof at->app, "%s", app);
    at->prof = *p;
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
static void attach_on_deadline(uv_timer_t *t);

/* Ends the running operation (and a reload it belongs to). */
static void attach_op_end(attach *at)
{
    at->phase = OP_NONE;
    at->reload = false;
    uv_timer_stop(&at->timer);
}

/*
 * Numbers the children 0…N-1 again, keeping their order: after a master
 * reload the new ones took the ids above the old ones, which are gone now.
 */
static void attach_renumber(attach *at)
{
    for (size_t i = 1; i < at->nkids; i++)
        for (size_t j = i; j > 0 && at->kids[j - 1].id > at->kids[j].id; j--) {
            child t = at->kids[j];
            at->kids[j] = at->kids[j - 1];
            at->kids[j - 1] = t;
        }
    for (size_t i = 0; i < at->nkids; i++) {
        at->kids[i].id = (int)i;
        state_identify(at->st, at->kids[i].pid, at->app, at->kids[i].id);
    }
}

/* True when pid was a child when the master-reload signal was sent. */
static bool attach_mr_is_old(const attach *at, pid_t pid)
{
    for (size_t i = 0; i < at->mr_nold; i++)
        if (at->mr_old[i] == pid)
            return true;
    return false;
}

/*
 * Feeds the master-reload machine one input computed from the children now,
 * and performs what its new state means: a progress event when the count
 * of old or new children changed, the outcome (event, operation ended)
 * when it is done or aborted.
 */
static void attach_mr_feed(attach *at, attach_mr_event ev)
{
    attach_mr_input in = {.ev = ev, .old_total = at->mr_nold, .gate_ready = at->seen_ready};
    for (size_t i = 0; i < at->nkids; i++) {
        if (attach_mr_is_old(at, at->kids[i].pid)) {
            in.old_left++;
        } else {
            in.fresh++;
            in.fresh_ready += at->kids[i].ready;
        }
    }
    attach_mr_state next = attach_mr_next(at->mr, &in);
    at->reload_done = (int)(in.old_total - in.old_left);
    at->reload_total = (int)in.old_total;
    char sb[16];
    const char *sig = attach_signame(at->prof.reload_signal, sb, sizeof sb);
    switch (next) {
    case ATTACH_MR_IDLE:
    case ATTACH_MR_SIGNALLED:
        break;
    case ATTACH_MR_REPLACING:
        if (in.old_left != at->mr_seen_left || in.fresh != at->mr_seen_fresh)
            attach_event(at, attach_op_event(at, CTL_PHASE_PROGRESS, NULL),
                         "reload %s: %zu new worker%s%s, %zu of %zu old gone", at->app, in.fresh,
                         in.fresh == 1 ? "" : "s", in.gate_ready ? (in.fresh_ready == in.fresh ? " (ready)" : " (not all ready)") : "",
                         in.old_total - in.old_left, in.old_total);
        break;
    case ATTACH_MR_DONE:
        attach_renumber(at);
        attach_event(at, attach_op_event(at, CTL_PHASE_DONE, NULL),
                     "reload %s: done, the master (pid %d) replaced its %zu workers with %zu after SIG%s",
                     at->app, at->master, in.old_total, in.fresh, sig);
        attach_op_end(at);
        break;
    case ATTACH_MR_ABORTED: {
        const char *why = in.old_left ? "old workers still running"
                          : in.fresh == 0 ? "no new workers" : "new workers not ready";
        attach_event(at, attach_op_event(at, CTL_PHASE_ABORTED, why),
                     "reload aborted: %s: %u ms after SIG%s to the master (pid %d): %s (%zu new%s, %zu of %zu old left)",
                     at->app, at->ready_timeout_ms, sig, at->master, why, in.fresh,
                     in.gate_ready ? (in.fresh_ready == in.fresh ? ", ready" : ", not all ready") : "", in.old_left,
                     in.old_total);
        attach_op_end(at);
        break;
    }
    }
    at->mr = next;
    at->mr_seen_left = in.old_left;
    at->mr_seen_fresh = in.fresh;
}

/* Starts a master-driven reload: the reload signal to the master. */
static int attach_master_reload(attach *at, char *msg, size_t cap)
{
    char sb[16];
    const char *sig = attach_signame(at->prof.reload_signal, sb, sizeof sb);
    if (kill(at->master, at->prof.reload_signal) != 0) {
        snprintf(msg, cap, "cannot signal the master (pid %d): %s", at->master, strerror(errno));
        return -1;
    }
    at->mr_nold = 0;
    for (size_t i = 0; i < at->nkids; i++)
        at->mr_old[at->mr_nold++] = at->kids[i].pid;
    at->mr_seen_left = at->mr_nold;
    at->mr_seen_fresh = 0;
    at->phase = OP_MASTER_RELOAD;
    at->reload = true;
    at->reload_done = 0;
    at->reload_total = (int)at->mr_nold;
    attach_mr_input in = {.ev = ATTACH_MR_START};
    at->mr = attach_mr_next(at->mr, &in);
    uv_timer_start(&at->timer, attach_on_deadline, at->ready_timeout_ms, 0);
    attach_event(at, attach_op_event(at, CTL_PHASE_STARTED, NULL),
                 "reload %s: SIG%s to the master (pid %d), waiting for it to replace its %zu workers", at->app, sig,
                 at->master, at->mr_nold);
    snprintf(msg, cap, "reloading %s: SIG%s to the master (pid %d), which replaces its %zu workers", at->app, sig,
             at->master, at->mr_nold);
    return 0;
}

/* Sends the next scale signal, or ends the scale when the count is reached. */
static void attach_scale_step(attach *at)
{
    char sb[16];
    if (at->nkids == at->scale_target) {
        ctl_event e = ctl_event_make(CTL_EV_SCALE, CTL_PHASE_DONE, at->app, -1, 0);
        attach_event(at, e, "scale %s: done, %zu worker%s (%d signal%s to the master)", at->app, at->nkids,
                     at->nkids == 1 ? "" : "s", at->scale_sent, at->scale_sent == 1 ? "" : "s");
        attach_op_end(at);
        return;
    }
    int sig = at->scale_target > at->nkids ? at->prof.scale_up : at->prof.scale_down;
    at->scale_base = at->nkids;
    if (kill(at->master, sig) != 0) {
        ctl_event e = ctl_event_make(CTL_EV_SCALE, CTL_PHASE_ABORTED, at->app, -1, 0);
        e.reason = "cannot signal the master";
        attach_event(at, e, "scale %s aborted: SIG%s to the master (pid %d): %s", at->app,
                     attach_signame(sig, sb, sizeof sb), at->master, strerror(errno));
        attach_op_end(at);
        return;
    }
    at->scale_sent++;
    uv_timer_start(&at->timer, attach_on_deadline, at->ready_timeout_ms, 0);
}

static void attach_on_deadline(uv_timer_t *t)
{
    attach *at = t->data;
    switch (at->phase) {
    case OP_WAIT_EXIT: {
        char sb[16];
        attach_event(at, ctl_event_make(CTL_EV_KILL, CTL_PHASE_NONE, at->app, at->op_id, at->op_old),
                     "%s:%d (pid %d) did not stop within %u ms of SIG%s: SIGKILL", at->app, at->op_id,
                     at->op_old, at->kill_timeout_ms, attach_signame(at->op_signal, sb, sizeof sb));
        kill(at->op_old, SIGKILL);
        uv_timer_start(&at->timer, attach_on_deadline, at->ready_timeout_ms, 0);
        break;
    }
    case OP_MASTER_RELOAD:
        attach_mr_feed(at, ATTACH_MR_DEADLINE);
        break;
    case OP_SCALE: {
        char sb[16];
        ctl_event e = ctl_event_make(CTL_EV_SCALE, CTL_PHASE_ABORTED, at->app, -1, 0);
        e.reason = "the master did not change its number of workers";
        attach_event(at, e, "scale %s aborted: %zu workers, not %zu, %u ms after SIG%s to the master (pid %d)",
                     at->app, at->nkids, at->scale_target, at->ready_timeout_ms,
                     attach_signame(at->scale_target > at->scale_base ? at->prof.scale_up : at->prof.scale_down,
                                    sb, sizeof sb), at->master);
        attach_op_end(at);
        break;
    }
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

/* Starts restarting child id with signal sig. */
static int attach_begin(attach *at, int id, int sig)
{
    child *c = attach_by_id(at, id);
    if (!c)
        return -1;
    at->op_id = id;
    at->op_old = c->pid;
    at->op_new = 0;
    at->op_signal = sig;
    at->phase = OP_WAIT_EXIT;
    kill(c->pid, sig);
    uv_timer_start(&at->timer, attach_on_deadline, at->kill_timeout_ms, 0);
    return 0;
}

/* Continues a reload with its next id, or ends it. */
static void attach_step(attach *at)
{
    while (at->reload_done < at->reload_total) {
        if (attach_begin(at, at->reload_ids[at->reload_done], at->prof.reload_signal) == 0) {
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

/* True when this round's samples found pid dead (exited, or a zombie). */
static bool attach_sampled_dead(const proc_sample *samples, size_t nsamples, pid_t pid)
{
    for (size_t i = 0; i < nsamples; i++)
        if (samples[i].pid == pid)
            return !samples[i].alive;
    return false;
}

void attach_on_children(attach *at, const pid_t *pids, size_t n, const proc_sample *samples, size_t nsamples)
{
    /* Forget children that are gone (the model marks them gone itself). */
    for (size_t i = 0; i < at->nkids;) {
        bool alive = false;
        for (size_t j = 0; j < n && !alive; j++)
            alive = pids[j] == at->kids[i].pid;
        /* the children scan ran before the per-process reads: one that died
         * in between is gone for the model already, and so for us */
        alive = alive && !attach_sampled_dead(samples, nsamples, at->kids[i].pid);
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
        if (attach_by_pid(at, pids[j]) || attach_sampled_dead(samples, nsamples, pids[j]))
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
    switch (at->phase) {
    case OP_MASTER_RELOAD:
        attach_mr_feed(at, ATTACH_MR_CHILDREN);
        break;
    case OP_SCALE:
        /* the count moved the way the last signal asked: the next one */
        if ((at->scale_target > at->scale_base && at->nkids > at->scale_base) ||
            (at->scale_target < at->scale_base && at->nkids < at->scale_base))
            attach_scale_step(at);
        break;
    case OP_NONE:
    case OP_WAIT_EXIT:
    case OP_WAIT_NEW:
    case OP_WAIT_READY:
        break;
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
    else if (at->phase == OP_MASTER_RELOAD)
        attach_mr_feed(at, ATTACH_MR_CHILDREN);
}

int attach_kill(attach *at, int id, char *msg, size_t cap)
{
    int n = 0;
    for (size_t i = 0; i < at->nkids; i++) {
        if (id >= 0 && at->kids[i].id != id)
            continue;
        kill(at->kids[i].pid, at->prof.kill_signal);
        n++;
    }
    if (!n) {
        snprintf(msg, cap, "%s has no worker %d", at->app, id);
        return -1;
    }
    char sb[16];
    snprintf(msg, cap, "sent SIG%s to %d worker%s of %s", attach_signame(at->prof.kill_signal, sb, sizeof sb), n,
             n == 1 ? "" : "s", at->app);
    return 0;
}

int attach_restart(attach *at, int id, char *msg, size_t cap)
{
    if (id < 0)
        return attach_reload(at, msg, cap);
    if (at->phase != OP_NONE) {
        snprintf(msg, cap, "another restart, reload or scale of %s is running", at->app);
        return -1;
    }
    if (attach_begin(at, id, at->prof.kill_signal) != 0) {
        snprintf(msg, cap, "%s has no worker %d", at->app, id);
        return -1;
    }
    snprintf(msg, cap, "restarting %s:%d (pid %d)", at->app, id, at->op_old);
    return 0;
}

int attach_reload(attach *at, char *msg, size_t cap)
{
    if (at->phase != OP_NONE) {
        snprintf(msg, cap, "another restart, reload or scale of %s is running", at->app);
        return -1;
    }
    if (at->prof.reload == ATTACH_RELOAD_MASTER)
        return attach_master_reload(at, msg, cap);
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

int attach_scale(attach *at, long n, bool has_delta, long delta, char *msg, size_t cap)
{
    if (!at->prof.scale_up || !at->prof.scale_down) {
        snprintf(msg, cap, "%s's master (profile %s) has no scale signals: attach with --scale-up SIG "
                 "--scale-down SIG, or scale it yourself", at->app, at->prof.name);
        return -1;
    }
    if (at->phase != OP_NONE) {
        snprintf(msg, cap, "another restart, reload or scale of %s is running", at->app);
        return -1;
    }
    /* validated before narrowing: the count stays within 0..ATTACH_MAX */
    long want = has_delta ? (long)at->nkids + delta : n;
    if (want < 0 || want > ATTACH_MAX) {
        snprintf(msg, cap, "%s: %ld workers is out of range (0..%d)", at->app, want, ATTACH_MAX);
        return -1;
    }
    at->scale_target = (size_t)want;
    at->scale_sent = 0;
    char sb[16];
    size_t diff = at->scale_target > at->nkids ? at->scale_target - at->nkids : at->nkids - at->scale_target;
    int sig = at->scale_target > at->nkids ? at->prof.scale_up : at->prof.scale_down;
    snprintf(msg, cap, "scaling %s from %zu to %zu workers: %zu SIG%s to the master (pid %d), one at a time", at->app,
             at->nkids, at->scale_target, diff, attach_signame(sig, sb, sizeof sb), at->master);
    if (diff) {
        ctl_event e = ctl_event_make(CTL_EV_SCALE, CTL_PHASE_STARTED, at->app, -1, 0);
        attach_event(at, e, "%s", msg);
    }
    at->phase = OP_SCALE;
    attach_scale_step(at);
    return 0;
}

json_t *attach_describe(const attach *at)
{
    char b1[16], b2[16], b3[16], b4[16];
    json_t *kids = json_array();
    for (size_t i = 0; i < at->nkids; i++)
        json_array_append_new(kids, json_pack("{s:i, s:i, s:b}", "id", at->kids[i].id, "pid", (int)at->kids[i].pid,
                                              "ready", at->kids[i].ready));
    return json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:s?, s:s?, s:I, s:I, s:i, s:o}",
                     "app", at->app, "master", (int)at->master, "master_name", at->master_name,
                     "profile", at->prof.name,
                     "kill_signal", attach_signame(at->prof.kill_signal, b1, sizeof b1),
                     "reload", at->prof.reload == ATTACH_RELOAD_MASTER ? "MASTER" : "ONE",
                     "reload_signal", attach_signame(at->prof.reload_signal, b2, sizeof b2),
                     "scale_up", at->prof.scale_up ? attach_signame(at->prof.scale_up, b3, sizeof b3) : NULL,
                     "scale_down", at->prof.scale_down ? attach_signame(at->prof.scale_down, b4, sizeof b4) : NULL,
                     "kill_timeout_ms", (json_int_t)at->kill_timeout_ms,
                     "ready_timeout_ms", (json_int_t)at->ready_timeout_ms,
                     "instances", (int)at->nkids, "workers", kids);
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
