/*
 * supervise.c — the supervisor.
 *
 * Data: an app has slots (worker ids 0…N-1, stable across restarts); a slot
 * has at most a current process and, during a replacement, a second one.
 * A slot's state is its machine (hub/slot.h): slot_next decides, and
 * sup_slot_step sets the new state (sup_slot_set, which mirrors it into the
 * model) and performs the one action decided.
 * Processes being stopped for good (replaced, scaled away) move to the
 * app's retiring list until they are reaped. Every process and every model
 * row is referred to by the state key of its row.
 *
 * Timers: a process has one deadline at a time — the grace period after
 * spawn, then the ready-timeout, or the kill-timeout once stopping. A slot
 * has its backoff timer. Handles are freed in their uv_close callbacks.
 */
#include "hub/supervise.h"
#include "hub/slot.h"
#include "hub/spawn.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct app app;
typedef struct slot slot;

typedef enum { PR_STARTING, PR_ONLINE, PR_STOPPING } proc_phase;

typedef struct proc {
    app        *a;
    slot       *sl;            /* NULL once retiring */
    pid_t       pid;
    uint32_t    key;           /* its row in the model */
    proc_phase  phase;
    bool        grace_done;    /* the grace timer fired once */
    bool        killed;        /* SIGKILL already sent */
    uint64_t    started_ms;
    uv_timer_t  timer;
    struct proc *next;         /* in the retiring list */
} proc;

struct slot {
    app        *a;
    int         id;
    uint32_t    key;           /* row of the current generation */
    proc       *cur;
    proc       *repl;          /* replacement being started (or stopped) */
    slot_fsm    fsm;           /* its state: set by sup_slot_set only */
    uint64_t    mem_quiet_until; /* no memory-triggered replacement before this (ms) */
    uv_timer_t  backoff;
    logs_stream *ls;
    int         lsock;         /* its socket in a->group (reuseport), or -1 */
    bool        leaving;       /* scaled away: its socket drains, then it is removed */
};

typedef struct {
    bool        active;
    bool        one_slot;      /* a single replacement (restart by memory), not a reload */
    int         next_index;    /* slots[] index to replace next */
    int         replaced, total;
    uint64_t    started_ms;
} reload_state;

#define SUP_NOTES 16            /* last events kept per app, for describe */
#define SUP_RESTARTS 8          /* last restarts kept per app, apart from the events (describe) */

/* One event of an app, kept for describe. */
typedef struct {
    double      ts;            /* wall clock, Unix seconds */
    ctl_event_kind kind;
    char        reason[24];
    const char *cause;         /* a worker ended or was replaced: crash, exit, max-memory, reload, manual; else NULL */
    bool        command;       /* a command's note (kill, restart), not an event */
    char        text[232];
} sup_note;

/* One restart of an app (what ended or replaced workers, and why), kept for
 * describe in a ring of its own: a burst of other events (a scale, a
 * stream of readiness) must not push the last restart and its cause out. */
typedef struct {
    double      ts;            /* wall clock, Unix seconds */
    const char *cause;         /* crash, exit, max-memory, reload, manual */
    int         id;            /* the worker's id; -1: the app (a reload, a command on every worker) */
    long        pid;           /* 0: none */
    int         status;        /* exit status; -1: none (killed by a signal, or not an exit) */
    int         signal;        /* the signal that ended it; 0: none */
    char        reason[24];    /* the event's reason (backoff, stopped, errored, aborted…) */
    char        text[232];     /* sizes as sup_note's: copied from it */
} sup_restart;

struct app {
    supervise  *sv;
    char        name[REPORT_NAME_MAX];
    char        path[4096];
    char      **argv;
    char      **env;           /* base environment, DROVER_WORKER_ID added per spawn */
    size_t      nenv;
    int         listen_fd;
    lgroup     *group;         /* reuseport: a socket per slot, else NULL */
    char        listen_name[64];
    unsigned    kill_timeout_ms, ready_timeout_ms;
    uint64_t    max_memory;
    logs       *lg;
    slot      **slots;
    int         nslots;
    proc       *retiring;
    reload_state rl;
    bool        rl_again;      /* a SIGHUP came during rl: one more reload after it */
    int         want;          /* workers wanted; above sup_live while growing */
    int         grow_from;     /* live count when the current growth began */
    bool        growing;       /* slots are still to be added (sup_grow_turn) */
    bool        announce;      /* growth by a command: send scale events */
    uint64_t    grow_said_ms;  /* when its last progress event was sent */
    app        *next;

    /* settings from a config file (NULL/0/false for `drover run`) */
    char       *cwd;
    char       *user;
    char       *listen_spec;
    bool        set_ids;
    uid_t       uid;
    gid_t       gid;
    gid_t      *groups;
    size_t      ngroups;
    supervise_restart_policy restart;
    supervise_ready_mode ready_mode;
    bool        ready_learned; /* a worker of the app has signalled readiness */
    int         stop_signal;
    bool        own_listen;    /* listen_fd is the app's to close */
    bool        removing;      /* supervise_remove_app: freed once no process is left */
    bool        log_set;       /* its streams are formatted as below (logs_stream_format) */
    bool        log_timestamps, log_json;
    uint64_t    log_max_size;
    unsigned    log_keep;
    sup_note    notes[SUP_NOTES];
    unsigned    nnotes;        /* notes recorded ever; the last SUP_NOTES are kept */
    sup_restart restarts[SUP_RESTARTS];
    unsigned    nrestarts;     /* restarts recorded ever; the last SUP_RESTARTS are kept */
};

struct supervise {
    uv_loop_t  *loop;
    state      *st;
    supervise_event_fn ev;
    void       *ev_ctx;
    app        *apps;
    bool        stopping_all;
    uv_idle_t  *grow;          /* runs sup_grow_turn while an app is growing */
    uv_timer_t *sweep;         /* while stopping: ends the descendants we adopted */
    uint64_t    stop_ms;       /* when stop_all began */
    pid_t       termed[SUPERVISE_ADOPTED_MAX]; /* adopted pids already sent SIGTERM */
    size_t      ntermed;
    void      (*stop_done)(void *);
    void       *stop_ctx;
    json_t     *resume;        /* an upgrade's apps, until each is added again */
};

/* What ended a process, for the events of the slot's next step. */
typedef struct {
    const char *status;        /* "exit 1", "signal 9 (Killed)" */
    int         wstatus;       /* the same, as waitpid gave it */
    pid_t       pid;           /* 0: it could not be started */
    uint64_t    lived_ms;
    const char *why;           /* a replacement's end: why the reload is aborted */
    bool        no_restart;    /* the app's restart policy does not restart this exit */
} sup_cause;

static void sup_spawn(slot *sl, bool replacement);
static slot_action sup_slot_step(slot *sl, slot_input_kind kind, const sup_cause *c);
static void sup_slot_exit(slot *sl, int status, pid_t pid, uint64_t lived_ms);
static void sup_stop_proc(proc *p);
static void sup_reload_next(app *a);
static void sup_check_stopped_all(supervise *sv);
static void sup_grow_start(app *a, bool announce);
static void sup_reload_begin(app *a);
static void sup_grow_end(app *a, const char *why);
static void sup_app_gone_check(app *a);
static slot *sup_slot(app *a, int id);
static int sup_live(const app *a);

/* ---- helpers ------------------------------------------------------------ */

void supervise_emit(supervise_event_fn ev, void *ctx, ctl_event e, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    if (!ev)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    e.text = line;
    ev(ctx, &e);
}

static app *sup_app(supervise *sv, const char *name);

/* Keeps note n, a restart of worker id (pid; -1/0: the app, none), in app a's restarts ring. */
static void sup_restart_add(app *a, const sup_note *n, int id, long pid)
{
    sup_restart *r = &a->restarts[a->nrestarts++ % SUP_RESTARTS];
    *r = (sup_restart){.ts = n->ts, .cause = n->cause, .id = id, .pid = pid, .status = -1};
    memcpy(r->reason, n->reason, sizeof r->reason);   /* same sizes, both terminated */
    memcpy(r->text, n->text, sizeof r->text);
}

/* Keeps event e (its text formatted already) in its app's notes, for describe. */
static void sup_note_event(supervise *sv, const ctl_event *e)
{
    app *a = e->app ? sup_app(sv, e->app) : NULL;
    if (!a)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sup_note *n = &a->notes[a->nnotes++ % SUP_NOTES];
    n->ts = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    n->kind = e->kind;
    snprintf(n->reason, sizeof n->reason, "%s", e->reason ? e->reason : "");
    /* what ended or replaced a worker, for describe's restarts */
    n->cause = NULL;
    n->command = false;
    if (e->kind == CTL_EV_EXIT)
        n->cause = e->reason && strcmp(e->reason, "stopped") == 0 ? "exit" : "crash";
    else if (e->kind == CTL_EV_REPLACE && e->phase == CTL_PHASE_STARTED)
        n->cause = "max-memory";
    else if (e->kind == CTL_EV_RELOAD && (e->phase == CTL_PHASE_DONE || e->phase == CTL_PHASE_ABORTED))
        n->cause = "reload";

    snprintf(n->text, sizeof n->text, "%s", e->text ? e->text : "");
    if (n->cause)
        sup_restart_add(a, n, e->id, e->pid);
}

/* Adds the waitpid status of the exit app a's last restart records (noted just before). */
static void sup_restart_status(app *a, int wstatus)
{
    if (!a->nrestarts)
        return;
    sup_restart *r = &a->restarts[(a->nrestarts - 1) % SUP_RESTARTS];
    r->status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    r->signal = WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0;
}

/* Notes a command (kill, restart) on app a for describe, without an event (the reply says it). */
static void sup_note_manual(app *a, int id, const char *text)
{
    ctl_event e = ctl_event_make(CTL_EV_KILL, CTL_PHASE_NONE, a->name, id, 0);
    e.text = text;
    sup_note_event(a->sv, &e);
    sup_note *n = &a->notes[(a->nnotes - 1) % SUP_NOTES];
    n->cause = "manual";
    n->command = true;
    sup_restart_add(a, n, id, 0);
}

/* supervise_emit for the supervisor's own events: also noted in the app (describe). */
__attribute__((format(printf, 3, 4)))
static void sup_event_send(supervise *sv, ctl_event e, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    e.text = line;
    sup_note_event(sv, &e);
    if (sv->ev)
        sv->ev(sv->ev_ctx, &e);
}

/* Sends one typed event, with its formatted text, to the hub. */
#define sup_event(sv, e, ...) sup_event_send((sv), e, __VA_ARGS__)

/* The event of a's reload (or single replacement) at phase, with its counts. */
static ctl_event sup_reload_event(const app *a, ctl_phase phase, const char *reason)
{
    ctl_event e = ctl_event_make(a->rl.one_slot ? CTL_EV_REPLACE : CTL_EV_RELOAD, phase, a->name, -1, 0);
    e.done = a->rl.replaced;
    e.total = a->rl.total;
    e.reason = reason;
    return e;
}

/* The event of a worker's exit; reason says what follows ("backoff", "errored"). */
static ctl_event sup_exit_event(const app *a, int id, pid_t pid, const char *reason)
{
    ctl_event e = ctl_event_make(CTL_EV_EXIT, CTL_PHASE_NONE, a->name, id, pid);
    e.reason = reason;
    return e;
}

/* Describes a waitpid status: "exit 1", "signal 9 (Killed)". */
static void sup_status(int status, char *out, size_t cap)
{
    if (WIFEXITED(status))
        snprintf(out, cap, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, cap, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(out, cap, "status %d", status);
}

static uint64_t sup_now_ms(supervise *sv)
{
    uv_update_time(sv->loop);
    return uv_now(sv->loop);
}

/* Close callback of a handle that is its own allocation. */
static void sup_free_handle_cb(uv_handle_t *h)
{
    free(h);
}

static void sup_free_proc_cb(uv_handle_t *h)
{
    free(h->data);
}

/* Releases a process record (its timer closes first). */
static void sup_free_proc(proc *p)
{
    uv_timer_stop(&p->timer);
    p->timer.data = p;
    uv_close((uv_handle_t *)&p->timer, sup_free_proc_cb);
}

/* Arms the process's one deadline. */
static void sup_deadline(proc *p, uint64_t ms, uv_timer_cb cb)
{
    uv_timer_stop(&p->timer);
    uv_timer_start(&p->timer, cb, ms, 0);
}

/* ---- starting ----------------------------------------------------------- */

/*
 * Process p is ready (or passed its grace period silently): its slot goes
 * online, or, if p is the slot's replacement, p takes over the slot and
 * the reload moves on.
 */
static void sup_mark_online(proc *p)
{
    supervise *sv = p->a->sv;
    if (p->phase != PR_STARTING)
        return;
    p->phase = PR_ONLINE;
    uv_timer_stop(&p->timer);
    slot *sl = p->sl;
    if (sl->repl != p) {
        sup_slot_step(sl, SLOT_IN_READY, NULL);
        return;
    }
    app *a = p->a;
    pid_t old_pid = sl->cur ? sl->cur->pid : 0;
    if (sup_slot_step(sl, SLOT_IN_REPL_READY, NULL) != SLOT_DO_PROMOTE || !a->rl.active)
        return;
    a->rl.replaced++;
    if (a->rl.one_slot) {
        a->rl.active = false;
        sup_event(sv, ctl_event_make(CTL_EV_REPLACE, CTL_PHASE_DONE, a->name, sl->id, p->pid),
                  "replaced %s:%d: new pid %d is ready, old pid %d stopping",
                  a->name, sl->id, p->pid, old_pid);
    } else {
        sup_event(sv, sup_reload_event(a, CTL_PHASE_PROGRESS, NULL), "reload %s: %d/%d replaced (%s:%d is pid %d)", a->name,
                  a->rl.replaced, a->rl.total, a->name, sl->id, p->pid);
        a->rl.next_index++;
        sup_reload_next(a);
    }
}

/* Ends a reload of app a without replacing any more workers. */
static void sup_reload_abort(app *a, const char *why)
{
    if (!a->rl.active)
        return;
    a->rl.active = false;
    if (a->rl.one_slot)
        sup_event(a->sv, sup_reload_event(a, CTL_PHASE_ABORTED, why),
                  "replacement aborted: %s; the old worker keeps serving", why);
    else
        sup_event(a->sv, sup_reload_event(a, CTL_PHASE_ABORTED, why),
                  "reload %s aborted after %d/%d replaced: %s; the old workers keep serving",
                  a->name, a->rl.replaced, a->rl.total, why);
    if (a->rl_again) {
        a->rl_again = false;
        sup_event(a->sv, ctl_event_make(CTL_EV_RELOAD, CTL_PHASE_NONE, a->name, -1, 0),
                  "reload %s: the reload asked for (SIGHUP) during the aborted one is not started", a->name);
    }
}

/* Deadline of a starting process: grace (silent → online), then ready-timeout. */
static void sup_on_start_deadline(uv_timer_t *t)
{
    proc *p = t->data;
    app *a = p->a;
    supervise *sv = a->sv;
    if (p->phase != PR_STARTING)
        return;
    if (!p->grace_done) {
        p->grace_done = true;
        /* A worker that speaks neither the agent protocol nor sd_notify cannot
         * say it is ready: running through the grace period has to do —
         * unless its app is known to signal readiness (learned, or pinned). */
        bool must_signal = a->ready_mode == SUPERVISE_READY_NOTIFY || a->ready_mode == SUPERVISE_READY_AGENT ||
                           (a->ready_mode == SUPERVISE_READY_AUTO && a->ready_learned);
        if (a->ready_mode == SUPERVISE_READY_NONE || (!must_signal && !state_sup_spoke(sv->st, p->key))) {
            sup_mark_online(p);
            return;
        }
        unsigned rest = a->ready_timeout_ms > SUPERVISE_GRACE_MS ? a->ready_timeout_ms - SUPERVISE_GRACE_MS : 0;
        sup_deadline(p, rest, sup_on_start_deadline);
        return;
    }
    if (p->sl->repl == p) {
        char why[256];
        snprintf(why, sizeof why, "%s:%d's replacement (pid %d) was not ready within %u ms",
                 a->name, p->sl->id, p->pid, a->ready_timeout_ms);
        sup_slot_step(p->sl, SLOT_IN_REPL_TIMEOUT, &(sup_cause){.why = why});
        return;
    }
    sup_event(sv, ctl_event_make(CTL_EV_READY, CTL_PHASE_ABORTED, a->name, p->sl->id, p->pid),
              "%s:%d (pid %d) is running but not ready after %u ms", a->name,
              p->sl->id, p->pid, a->ready_timeout_ms);
}

/* Builds "KEY=VALUE" in a fresh string. */
static char *sup_kv(const char *k, const char *v)
{
    size_t n = strlen(k) + strlen(v) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s=%s", k, v);
    return s;
}

/*
 * Slot sl's process (or replacement) could not be started: says why, then
 * tells the slot's machine as if it had exited at once.
 */
static void sup_spawn_failed(slot *sl, bool replacement, const char *err)
{
    app *a = sl->a;
    sup_event(a->sv, ctl_event_make(CTL_EV_ERROR, CTL_PHASE_NONE, a->name, sl->id, 0), "%s:%d: %s",
              a->name, sl->id, err);
    if (replacement)
        sup_slot_step(sl, SLOT_IN_REPL_EXITED, &(sup_cause){.why = err});
    else
        sup_slot_exit(sl, 127 << 8, 0, 0);   /* as if it crashed at once */
}

/*
 * Starts a process for slot sl: its current one, or a replacement beside
 * it. The slot's machine already says so (STARTING, or replacement
 * STARTING); a failure to start is fed back to it as an exit.
 */
static void sup_spawn(slot *sl, bool replacement)
{
    app *a = sl->a;
    supervise *sv = a->sv;
    char err[512], idbuf[32];
    int outp[2] = {-1, -1}, errp[2] = {-1, -1};

    snprintf(idbuf, sizeof idbuf, "DROVER_WORKER_ID=%d", sl->id);
    a->env[a->nenv] = idbuf;
    a->env[a->nenv + 1] = NULL;
    if (a->lg && sl->ls && (pipe2(outp, O_CLOEXEC) != 0 || pipe2(errp, O_CLOEXEC) != 0)) {
        sup_event(sv, ctl_event_make(CTL_EV_ERROR, CTL_PHASE_NONE, a->name, sl->id, 0),
                  "%s:%d: cannot create pipes: %s", a->name, sl->id, strerror(errno));
        if (outp[0] >= 0) {
            close(outp[0]);
            close(outp[1]);
        }
        outp[0] = outp[1] = -1;
    }
    spawn_spec spec = {
        .path = a->path, .argv = a->argv, .envp = a->env,
        .listen_fd = sl->lsock >= 0 ? lgroup_fd(a->group, sl->lsock) : a->listen_fd,
        .listen_name = a->listen_name,
        .out_fd = outp[1], .err_fd = errp[1],
        .cwd = a->cwd, .set_ids = a->set_ids, .uid = a->uid, .gid = a->gid,
        .groups = a->groups, .ngroups = a->ngroups,
    };
    pid_t pid = spawn_start(&spec, err, sizeof err);
    a->env[a->nenv] = NULL;
    if (outp[1] >= 0) {
        close(outp[1]);
        close(errp[1]);
    }
    if (pid < 0) {
        if (outp[0] >= 0) {
            close(outp[0]);
            close(errp[0]);
        }
        sup_spawn_failed(sl, replacement, err);
        return;
    }
    spawn_guard_add(pid);
    if (outp[0] >= 0 && logs_stream_attach(sl->ls, outp[0], errp[0]) != 0)
        sup_event(sv, ctl_event_make(CTL_EV_ERROR, CTL_PHASE_NONE, a->name, sl->id, pid),
                  "%s:%d: output of pid %d not captured (too many open pipes?)",
                  a->name, sl->id, pid);
    if (sl->ls)
        logs_stream_set_pid(sl->ls, pid);

    proc *p = calloc(1, sizeof *p);
    if (!p) {
        kill(-pid, SIGKILL);
        sup_spawn_failed(sl, replacement, "out of memory");
        return;
    }
    p->a = a;
    p->sl = sl;
    p->pid = pid;
    p->phase = PR_STARTING;
    p->started_ms = sup_now_ms(sv);
    uv_timer_init(sv->loop, &p->timer);
    p->timer.data = p;
    if (replacement) {
        p->key = state_sup_add(sv->st, a->name, sl->id);
        state_sup_restarts(sv->st, p->key, sl->fsm.restarts);
        sl->repl = p;
    } else {
        p->key = sl->key;
        sl->cur = p;
    }
    state_sup_spawned(sv->st, p->key, pid);
    sup_deadline(p, SUPERVISE_GRACE_MS, sup_on_start_deadline);
    /* A worker that reported ready before we got here (impossible today, as
     * datagrams are applied on this thread) would still be caught here. */
    if (state_sup_ready(sv->st, p->key) == 1)
        sup_mark_online(p);
}

/* ---- stopping ----------------------------------------------------------- */

static void sup_on_kill_deadline(uv_timer_t *t)
{
    proc *p = t->data;
    if (p->phase != PR_STOPPING || p->killed)
        return;
    p->killed = true;
    sup_event(p->a->sv, ctl_event_make(CTL_EV_KILL, CTL_PHASE_NONE, p->a->name, p->sl ? p->sl->id : -1, p->pid),
              "%s: pid %d did not stop within %u ms of SIGTERM: SIGKILL",
              p->a->name, p->pid, p->a->kill_timeout_ms);
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
}

/* Asks a process to stop: SIGTERM now, SIGKILL to its group after kill-timeout. */
static void sup_stop_proc(proc *p)
{
    if (p->phase == PR_STOPPING)
        return;
    p->phase = PR_STOPPING;
    /* A slot's current process shares the slot's row, which sup_slot_set
     * keeps; a replacement or a retiring process has a row of its own. */
    if (!p->sl || p->sl->cur != p)
        state_sup_set(p->a->sv->st, p->key, WS_STOPPING);
    kill(p->pid, p->a->stop_signal ? p->a->stop_signal : SIGTERM);
    sup_deadline(p, p->a->kill_timeout_ms, sup_on_kill_deadline);
}

/* ---- the slot's machine ------------------------------------------------- */

/* True when a slot in state st has a process, or one to come soon: its socket is in rotation. */
static bool sup_slot_serves(slot_state st)
{
    return st == SLOT_STARTING || st == SLOT_ONLINE || st == SLOT_RESTARTING;
}

/*
 * Sets slot sl's machine to next: the one place a slot's state changes.
 * Mirrors the state and the restart count into the slot's model row; GONE
 * removes the row.
 */
static void sup_slot_set(slot *sl, const slot_fsm *next)
{
    state *st = sl->a->sv->st;
    sl->fsm = *next;
    if (sl->lsock >= 0)   /* only a slot with a process to come gets new connections */
        lgroup_serve(sl->a->group, sl->lsock, sup_slot_serves(next->state));
    if (next->state == SLOT_GONE) {
        state_sup_remove(st, sl->key);
        return;
    }
    state_sup_set(st, sl->key, slot_worker_state(next->state));
    state_sup_restarts(st, sl->key, next->restarts);
}

static void sup_slot_free_cb(uv_handle_t *h)
{
    free(h->data);
}

/* Unlinks slot sl (GONE: its row is removed already) and frees it once its timer closed. */
static void sup_slot_remove(slot *sl)
{
    app *a = sl->a;
    for (int i = 0; i < a->nslots; i++) {
        if (a->slots[i] == sl) {
            memmove(&a->slots[i], &a->slots[i + 1], (size_t)(a->nslots - i - 1) * sizeof *a->slots);
            a->nslots--;
            break;
        }
    }
    if (sl->lsock >= 0)   /* its processes are gone: the socket leaves the group */
        lgroup_close(a->group, sl->lsock);
    uv_timer_stop(&sl->backoff);
    sl->backoff.data = sl;
    uv_close((uv_handle_t *)&sl->backoff, sup_slot_free_cb);
}

/* Moves process p (no longer any slot's) to its app's retiring list and stops it. */
static void sup_retire(proc *p)
{
    app *a = p->a;
    p->sl = NULL;
    p->next = a->retiring;
    a->retiring = p;
    sup_stop_proc(p);
}

/*
 * The replacement becomes slot sl's current process and the slot's row
 * becomes the replacement's; the old process, if any, retires. Runs before
 * the new state is set, so that it lands on the new row.
 */
static void sup_promote(slot *sl)
{
    proc *old = sl->cur;
    sl->cur = sl->repl;
    sl->repl = NULL;
    uv_timer_stop(&sl->backoff);
    if (old)
        sup_retire(old);
    else
        state_sup_remove(sl->a->sv->st, sl->key);   /* the old process had died: its row goes */
    sl->key = sl->cur->key;
}

/* Backoff timer: tell the slot it may start again. */
static void sup_on_backoff(uv_timer_t *t)
{
    sup_slot_step(t->data, SLOT_IN_BACKOFF_DONE, NULL);
}

/*
 * Feeds input kind to slot sl's machine, sets the state decided
 * (sup_slot_set) and performs the action decided; c describes the end of
 * a process for the events (EXITED, REPL_EXITED, REPL_TIMEOUT; else NULL).
 * Returns the action; sl is freed when the slot is GONE.
 */
static slot_action sup_slot_step(slot *sl, slot_input_kind kind, const sup_cause *c)
{
    app *a = sl->a;
    supervise *sv = a->sv;
    slot_input in = {.kind = kind, .lived_ms = c ? c->lived_ms : 0,
                     .stopping_all = sv->stopping_all, .has_cur = sl->cur != NULL,
                     .no_restart = c && c->no_restart};
    slot_decision d = slot_next(&sl->fsm, &in);
    if (d.act == SLOT_DO_PROMOTE)
        sup_promote(sl);
    sup_slot_set(sl, &d.next);
    switch (d.act) {
    case SLOT_DO_NOTHING:
    case SLOT_DO_PROMOTE:                    /* done above */
        break;
    case SLOT_DO_SPAWN:
        uv_timer_stop(&sl->backoff);
        sup_spawn(sl, false);
        break;
    case SLOT_DO_BACKOFF:
        sup_event(sv, sup_exit_event(a, sl->id, c->pid, "backoff"),
                  "%s:%d (pid %d) ended with %s after %.1f s; restart %lld in %llu ms",
                  a->name, sl->id, c->pid, c->status, c->lived_ms / 1000.0,
                  (long long)d.next.restarts, (unsigned long long)d.delay_ms);
        sup_restart_status(a, c->wstatus);
        uv_timer_start(&sl->backoff, sup_on_backoff, d.delay_ms, 0);
        break;
    case SLOT_DO_EXITED:
        sup_event(sv, sup_exit_event(a, sl->id, c->pid, "stopped"),
                  "%s:%d (pid %d) ended with %s after %.1f s; not restarted (restart = %s)",
                  a->name, sl->id, c->pid, c->status, c->lived_ms / 1000.0,
                  a->restart == SUPERVISE_RESTART_NEVER ? "never" : "on-failure");
        sup_restart_status(a, c->wstatus);
        break;
    case SLOT_DO_ERRORED:
        sup_event(sv, sup_exit_event(a, sl->id, c->pid, "errored"),
                  "%s:%d (pid %d) ended with %s; %u quick failures in a row: errored, not restarting",
                  a->name, sl->id, c->pid, c->status, d.next.fails);
        sup_restart_status(a, c->wstatus);
        break;
    case SLOT_DO_STOP:
        uv_timer_stop(&sl->backoff);
        if (sl->repl)
            sup_stop_proc(sl->repl);
        if (sl->cur)
            sup_stop_proc(sl->cur);
        break;
    case SLOT_DO_STOP_CUR:
        uv_timer_stop(&sl->backoff);
        if (sl->cur)
            sup_stop_proc(sl->cur);
        break;
    case SLOT_DO_REPLACE:
        sup_spawn(sl, true);
        break;
    case SLOT_DO_RETIRE_REPL: {
        proc *p = sl->repl;
        sl->repl = NULL;
        sup_retire(p);
        sup_reload_abort(a, c->why);
        break;
    }
    case SLOT_DO_ABORT_RELOAD:
        sup_reload_abort(a, c->why);
        break;
    }
    if (d.next.state == SLOT_GONE)
        sup_slot_remove(sl);
    return d.act;
}

/*
 * Slot sl's current process pid ended with waitpid status after lived_ms
 * (pid 0: it could not be started): the model records the exit, then the
 * slot's machine decides what follows.
 */
static void sup_slot_exit(slot *sl, int status, pid_t pid, uint64_t lived_ms)
{
    char st[64];
    sup_status(status, st, sizeof st);
    state_sup_exited(sl->a->sv->st, sl->key, status, slot_worker_state(sl->fsm.state));
    supervise_restart_policy r = sl->a->restart;
    bool clean = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
    bool no_restart = r == SUPERVISE_RESTART_NEVER || (r == SUPERVISE_RESTART_ON_FAILURE && clean);
    sup_slot_step(sl, SLOT_IN_EXITED, &(sup_cause){.status = st, .wstatus = status, .pid = pid, .lived_ms = lived_ms,
                                                    .no_restart = no_restart});
}

/* ---- exits -------------------------------------------------------------- */

/* What a process is to its app. */
typedef enum { PROC_CURRENT, PROC_REPLACEMENT, PROC_RETIRING } proc_role;

static proc_role sup_role(const proc *p)
{
    if (!p->sl)
        return PROC_RETIRING;
    return p->sl->repl == p ? PROC_REPLACEMENT : PROC_CURRENT;
}

/* Acts on the exit of process p with waitpid status, then frees p. */
static void sup_exited(proc *p, int status)
{
    app *a = p->a;
    supervise *sv = a->sv;
    slot *sl = p->sl;

    /* Whatever the worker left behind in its group goes with it. */
    kill(-p->pid, SIGKILL);
    spawn_guard_del(p->pid);

    switch (sup_role(p)) {
    case PROC_RETIRING:
        for (proc **pp = &a->retiring; *pp; pp = &(*pp)->next)
            if (*pp == p) {
                *pp = p->next;
                break;
            }
        state_sup_remove(sv->st, p->key);
        break;
    case PROC_REPLACEMENT: {                  /* died before it was ready */
        char st[64], why[256];
        sup_status(status, st, sizeof st);
        snprintf(why, sizeof why, "%s:%d's replacement (pid %d) ended with %s before it was ready",
                 a->name, sl->id, p->pid, st);
        sl->repl = NULL;
        state_sup_remove(sv->st, p->key);
        sup_slot_step(sl, SLOT_IN_REPL_EXITED, &(sup_cause){.why = why});
        break;
    }
    case PROC_CURRENT:
        sl->cur = NULL;
        sup_slot_exit(sl, status, p->pid, sup_now_ms(sv) - p->started_ms);
        break;
    }
    sup_free_proc(p);
    if (a->removing)
        sup_app_gone_check(a);
    sup_check_stopped_all(sv);
}

/* Finds the process record for pid. */
static proc *sup_find_pid(supervise *sv, pid_t pid)
{
    for (app *a = sv->apps; a; a = a->next) {
        for (int i = 0; i < a->nslots; i++) {
            slot *sl = a->slots[i];
            if (sl->cur && sl->cur->pid == pid)
                return sl->cur;
            if (sl->repl && sl->repl->pid == pid)
                return sl->repl;
        }
        for (proc *p = a->retiring; p; p = p->next)
            if (p->pid == pid)
                return p;
    }
    return NULL;
}

void supervise_reap(supervise *sv)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        proc *p = sup_find_pid(sv, pid);
        if (p)
            sup_exited(p, status);
        /* else: an orphan of a worker (we are its subreaper), or the guard */
    }
}

/* ---- readiness and periodic checks -------------------------------------- */

void supervise_on_ready(supervise *sv, uint32_t key, pid_t pid)
{
    proc *p = sup_find_pid(sv, pid);
    if (p && p->key == key) {
        /* a pinned mode waits for its own signal */
        unsigned by = state_sup_ready_by(sv->st, key);
        if ((p->a->ready_mode == SUPERVISE_READY_NOTIFY && !(by & STATE_READY_NOTIFY)) ||
            (p->a->ready_mode == SUPERVISE_READY_AGENT && !(by & STATE_READY_AGENT)))
            return;
        if (!p->a->ready_learned && p->a->ready_mode == SUPERVISE_READY_AUTO) {
            p->a->ready_learned = true;
            sup_event(sv, ctl_event_make(CTL_EV_READY, CTL_PHASE_NONE, p->a->name, p->sl ? p->sl->id : -1, pid),
                      "%s: its workers signal readiness: every later worker must, within %u ms",
                      p->a->name, p->a->ready_timeout_ms);
        }
        sup_mark_online(p);
    }
}

/* Starts replacing slot sl (readiness-gated); 0 if a replacement is starting. */
static int sup_replace(slot *sl)
{
    if (sup_slot_step(sl, SLOT_IN_REPLACE, NULL) != SLOT_DO_REPLACE)
        return -1;
    return sl->repl ? 0 : -1;
}

void supervise_tick(supervise *sv)
{
    if (sv->stopping_all)
        return;
    uint64_t now = sup_now_ms(sv);
    for (app *a = sv->apps; a; a = a->next) {
        if (!a->max_memory || a->rl.active)
            continue;
        for (int i = 0; i < a->nslots; i++) {
            slot *sl = a->slots[i];
            if (sl->fsm.state != SLOT_ONLINE || !slot_replaceable(&sl->fsm) || now < sl->mem_quiet_until)
                continue;
            int64_t rss = state_sup_rss(sv->st, sl->key);
            if (rss < 0 || (uint64_t)rss <= a->max_memory)
                continue;
            sl->mem_quiet_until = now + 30000;
            sup_event(sv, ctl_event_make(CTL_EV_REPLACE, CTL_PHASE_STARTED, a->name, sl->id, sl->cur->pid),
                      "%s:%d (pid %d) uses %lld bytes, above --max-memory %llu: replacing it",
                      a->name, sl->id, sl->cur->pid, (long long)rss, (unsigned long long)a->max_memory);
            a->rl = (reload_state){.active = true, .one_slot = true, .total = 1, .started_ms = now};
            if (sup_replace(sl) != 0)
                a->rl.active = false;
            break;   /* one replacement at a time per app */
        }
    }
}

/* ---- apps --------------------------------------------------------------- */

/* True if an environment entry is one drover sets itself for workers. */
static bool sup_env_ours(const char *e)
{
    return strncmp(e, "DROVER_SOCKET=", 14) == 0 || strncmp(e, "DROVER_NAME=", 12) == 0 ||
           strncmp(e, "DROVER_WORKER_ID=", 17) == 0 || strncmp(e, "NOTIFY_SOCKET=", 14) == 0 ||
           strncmp(e, "LISTEN_", 7) == 0 || strncmp(e, "DROVER_LISTEN=", 14) == 0;
}

/*
 * NODE_OPTIONS with the agent preloaded: the user's own options (user, or
 * NULL) first, then
 * --require. Paths with spaces are quoted as Node's option parser expects.
 */
static char *sup_node_options(const char *agent, const char *user)
{
    size_t n = strlen(agent) + (user ? strlen(user) : 0) + 48;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "NODE_OPTIONS=%s%s--require \"%s\"", user ? user : "", user && *user ? " " : "", agent);
    return s;
}

/* Adds slot id to app a (not started). Returns it, or NULL. */
static slot *sup_slot_new(app *a, int id, int member)
{
    slot **ns = realloc(a->slots, (size_t)(a->nslots + 1) * sizeof *ns);
    if (!ns)
        return NULL;
    a->slots = ns;
    slot *sl = calloc(1, sizeof *sl);
    if (!sl)
        return NULL;
    sl->a = a;
    sl->id = id;
    sl->key = state_sup_add(a->sv->st, a->name, id);
    sl->fsm = slot_fsm_new();
    sl->lsock = -1;
    if (a->group && member >= 0) {
        sl->lsock = member;   /* an upgrade's: the socket it had */
    } else if (a->group) {
        char err[256];
        sl->lsock = lgroup_add(a->group, err, sizeof err);
        if (sl->lsock < 0) {
            sup_event(a->sv, ctl_event_make(CTL_EV_ERROR, CTL_PHASE_NONE, a->name, id, 0), "%s:%d: %s",
                      a->name, id, err);
            state_sup_remove(a->sv->st, sl->key);
            free(sl);
            return NULL;
        }
    }
    uv_timer_init(a->sv->loop, &sl->backoff);
    sl->backoff.data = sl;
    if (a->lg) {
        char err[256];
        sl->ls = logs_stream_get(a->lg, a->name, id, err, sizeof err);
        if (sl->ls && a->log_set &&
            logs_stream_format(sl->ls, a->log_timestamps, a->log_json, a->log_max_size, a->log_keep) != 0)
            sup_event(a->sv, ctl_event_make(CTL_EV_ERROR, CTL_PHASE_NONE, a->name, id, 0),
                      "%s:%d: log format not set: out of memory", a->name, id);
        if (!sl->ls)
            sup_event(a->sv, ctl_event_make(CTL_EV_ERROR, CTL_PHASE_NONE, a->name, id, 0),
                      "%s:%d: output not captured: %s", a->name, id, err);
    }
    /* keep slots ordered by id */
    int i = a->nslots;
    while (i > 0 && a->slots[i - 1]->id > id) {
        a->slots[i] = a->slots[i - 1];
        i--;
    }
    a->slots[i] = sl;
    a->nslots++;
    return sl;
}

supervise *supervise_new(uv_loop_t *loop, state *st, supervise_event_fn ev, void *ctx)
{
    supervise *sv = calloc(1, sizeof *sv);
    if (!sv)
        return NULL;
    sv->loop = loop;
    sv->st = st;
    sv->ev = ev;
    sv->ev_ctx = ctx;
    /* Its own allocation: it is freed by its close callback, after sv. */
    sv->grow = malloc(sizeof *sv->grow);
    if (!sv->grow) {
        free(sv);
        return NULL;
    }
    uv_idle_init(loop, sv->grow);
    sv->grow->data = sv;
    sv->sweep = malloc(sizeof *sv->sweep);
    if (!sv->sweep) {
        uv_close((uv_handle_t *)sv->grow, sup_free_handle_cb);
        free(sv);
        return NULL;
    }
    uv_timer_init(loop, sv->sweep);
    sv->sweep->data = sv;
    return sv;
}

/* Sets app a's log format and applies it to the streams of its slots. Returns 0, or -1 (out of memory). */
static int sup_app_logs_set(app *a, bool timestamps, bool json, uint64_t max_size, unsigned keep)
{
    a->log_set = true;
    a->log_timestamps = timestamps;
    a->log_json = json;
    a->log_max_size = max_size;
    a->log_keep = keep;
    int rc = 0;
    for (int i = 0; i < a->nslots; i++)
        if (a->slots[i]->ls && logs_stream_format(a->slots[i]->ls, timestamps, json, max_size, keep) != 0)
            rc = -1;
    return rc;
}

int supervise_app_logs(supervise *sv, const char *name, bool timestamps, bool json, uint64_t max_size,
                       unsigned keep, char *msg, size_t cap)
{
    app *a = sup_app(sv, name);
    if (!a) {
        snprintf(msg, cap, "no app named '%s'", name);
        return -1;
    }
    if (sup_app_logs_set(a, timestamps, json, max_size, keep) != 0) {
        snprintf(msg, cap, "out of memory for the log buffers");
        return -1;
    }
    snprintf(msg, cap, "log files now %s%s", json ? "json" : "text", timestamps ? " with timestamps" : "");
    return 0;
}

/* Frees a NULL-terminated vector of strings. */
static void sup_strv_free(char **v)
{
    if (!v)
        return;
    for (char **e = v; *e; e++)
        free(*e);
    free(v);
}

/* The value of key in a "K=V" vector, or NULL. */
static const char *sup_env_get(char *const *env, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; env && env[i]; i++)
        if (strncmp(env[i], key, kl) == 0 && env[i][kl] == '=')
            return env[i] + kl + 1;
    return NULL;
}

/* strdup of s, NULL for NULL; *fail set when out of memory. */
static char *sup_dup(const char *s, bool *fail)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *fail = true;
    return d;
}

/*
 * Gives app a the settings of spec (everything but its name, instances and
 * lg): built aside first, so that a failure (out of memory) leaves a as it
 * was. The worker environment is spec's base (or the hub's own) without the
 * variables drover sets, then drover's. Returns 0, or -1 with err set.
 */
static int sup_app_configure(app *a, const supervise_app_spec *spec, char *err, size_t errcap)
{
    char *const *base = spec->env ? spec->env : environ;
    size_t argc = 0, nbase = 0;
    while (spec->argv[argc])
        argc++;
    while (base[nbase])
        nbase++;
    bool fail = false;
    char **argv = calloc(argc + 1, sizeof *argv);
    char **env = calloc(nbase + 10, sizeof *env);
    gid_t *groups = spec->ngroups ? calloc(spec->ngroups, sizeof *groups) : NULL;
    fail = !argv || !env || (spec->ngroups && !groups);
    for (size_t i = 0; !fail && i < argc; i++)
        fail = !(argv[i] = strdup(spec->argv[i]));
    size_t nenv = 0;
    for (size_t i = 0; !fail && i < nbase; i++) {
        if (sup_env_ours(base[i]) || (spec->node_agent && strncmp(base[i], "NODE_OPTIONS=", 13) == 0))
            continue;
        fail = !(env[nenv++] = strdup(base[i]));
    }
    if (!fail) {
        env[nenv++] = sup_kv("DROVER_SOCKET", spec->agent_socket);
        env[nenv++] = sup_kv("NOTIFY_SOCKET", spec->agent_socket);
        env[nenv++] = sup_kv("DROVER_NAME", spec->app);
        if (spec->listen_spec)
            env[nenv++] = sup_kv("DROVER_LISTEN", spec->listen_spec);
        if (!sup_env_get(base, "DROVER_DRAIN_TIMEOUT_MS")) {
            /* An agent that drains on SIGTERM should give up on idle connections
             * before the hub's SIGKILL comes. */
            char dt[32];
            unsigned k = spec->kill_timeout_ms;
            snprintf(dt, sizeof dt, "%u", k > 1000 ? k - 500 : k * 9 / 10);
            env[nenv++] = sup_kv("DROVER_DRAIN_TIMEOUT_MS", dt);
        }
        if (spec->node_agent)
            env[nenv++] = sup_node_options(spec->node_agent, sup_env_get(base, "NODE_OPTIONS"));
        if (!sup_env_get(base, "DROVER_INTERVAL_MS")) {
            char iv[32];
            snprintf(iv, sizeof iv, "%u", spec->interval_ms);
            env[nenv++] = sup_kv("DROVER_INTERVAL_MS", iv);
        }
        /* two spare entries: DROVER_WORKER_ID and the terminating NULL */
        for (size_t i = 0; i < nenv; i++)
            fail |= !env[i];
    }
    char *cwd = sup_dup(spec->cwd, &fail), *user = sup_dup(spec->user, &fail);
    char *lspec = sup_dup(spec->listen_spec, &fail);
    if (fail) {
        snprintf(err, errcap, "out of memory");
        sup_strv_free(argv);
        sup_strv_free(env);
        free(groups);
        free(cwd);
        free(user);
        free(lspec);
        return -1;
    }
    if (spec->ngroups)
        memcpy(groups, spec->groups, spec->ngroups * sizeof *groups);

    /* swap */
    sup_strv_free(a->argv);
    sup_strv_free(a->env);
    free(a->groups);
    free(a->cwd);
    free(a->user);
    free(a->listen_spec);
    if (a->own_listen && a->listen_fd >= 0 && a->listen_fd != spec->listen_fd)
        close(a->listen_fd);
    a->argv = argv;
    a->env = env;
    a->nenv = nenv;
    a->groups = groups;
    a->ngroups = spec->ngroups;
    a->cwd = cwd;
    a->user = user;
    a->listen_spec = lspec;
    snprintf(a->path, sizeof a->path, "%s", spec->path);
    snprintf(a->listen_name, sizeof a->listen_name, "%s", spec->listen_name ? spec->listen_name : spec->app);
    a->listen_fd = spec->listen_fd;
    a->own_listen = spec->own_listen;
    a->kill_timeout_ms = spec->kill_timeout_ms;
    a->ready_timeout_ms = spec->ready_timeout_ms;
    a->max_memory = spec->max_memory;
    a->set_ids = spec->set_ids;
    a->uid = spec->uid;
    a->gid = spec->gid;
    a->restart = spec->restart;
    if (a->ready_mode != spec->ready)
        a->ready_learned = false;
    a->ready_mode = spec->ready;
    a->stop_signal = spec->stop_signal ? spec->stop_signal : SIGTERM;
    if (spec->log_set)
        sup_app_logs_set(a, spec->log_timestamps, spec->log_json, spec->log_max_size, spec->log_keep);
    return 0;
}

/* ---- upgrade ------------------------------------------------------------ */

static const char *const sup_saved_states[] = {[SLOT_ONLINE] = "online", [SLOT_STOPPED] = "stopped",
                                               [SLOT_ERRORED] = "errored", [SLOT_BACKOFF] = "backoff"};

bool supervise_busy(const supervise *sv, char *msg, size_t cap)
{
    if (sv->stopping_all) {
        snprintf(msg, cap, "the hub is stopping");
        return true;
    }
    for (const app *a = sv->apps; a; a = a->next) {
        if (a->rl.active) {
            snprintf(msg, cap, "%s of %s is in progress (%d/%d replaced); upgrade once it ended",
                     a->rl.one_slot ? "a replacement" : "a reload", a->name, a->rl.replaced, a->rl.total);
            return true;
        }
        if (a->growing || a->removing || a->retiring) {
            snprintf(msg, cap, "%s is %s; upgrade once it ended", a->name,
                     a->growing ? "starting workers (scale)" : a->removing ? "being removed" : "stopping old workers");
            return true;
        }
        for (int i = 0; i < a->nslots; i++) {
            const slot *sl = a->slots[i];
            slot_state st = sl->fsm.state;
            bool steady = sl->fsm.repl == REPL_NONE && !sl->repl && !sl->leaving &&
                          (st == SLOT_ONLINE || st == SLOT_STOPPED || st == SLOT_ERRORED || st == SLOT_BACKOFF);
            if (!steady) {
                snprintf(msg, cap, "%s:%d is %s; upgrade once it is online", a->name, sl->id,
                         state_name(slot_worker_state(st)));
                return true;
            }
        }
    }
    return false;
}

json_t *supervise_save(const supervise *sv, bool final, char *err, size_t errcap)
{
    json_t *apps = json_array();
    uint64_t now = sup_now_ms((supervise *)sv);
    for (const app *a = sv->apps; a; a = a->next) {
        json_t *slots = json_array();
        for (int i = 0; i < a->nslots; i++) {
            const slot *sl = a->slots[i];
            pid_t pid = sl->fsm.state == SLOT_ONLINE && sl->cur ? sl->cur->pid : 0;
            json_array_append_new(slots, json_pack("{s:i, s:s, s:i, s:I, s:i, s:i, s:I}", "id", sl->id,
                                                   "state", pid ? "online" : sup_saved_states[sl->fsm.state],
                                                   "pid", (int)pid, "restarts", (json_int_t)sl->fsm.restarts,
                                                   "fails", (int)sl->fsm.fails, "lsock", sl->lsock,
                                                   "age_ms", (json_int_t)(pid ? now - sl->cur->started_ms : 0)));
        }
        /* its own group (a file app's) crosses with it; the run path's is the hub's */
        json_t *group = a->own_listen && a->group ? lgroup_save(a->group, final, err, errcap) : json_null();
        if (!group) {
            json_decref(slots);
            json_decref(apps);
            return NULL;
        }
        json_array_append_new(apps, json_pack("{s:s, s:i, s:b, s:o, s:o, s:o, s:o}", "name", a->name, "want",
                                              sup_live(a), "ready_learned", a->ready_learned, "listen_fd",
                                              a->listen_fd >= 0 ? json_integer(a->listen_fd) : json_null(),
                                              "listen_spec", a->listen_spec ? json_string(a->listen_spec)
                                                                            : json_null(),
                                              "group", group, "slots", slots));
    }
    return apps;
}

void supervise_resume(supervise *sv, json_t *apps)
{
    json_decref(sv->resume);
    sv->resume = json_incref(apps);
}

/*
 * If the upgrade that started this image ran app a, a takes its workers
 * back as they were (same pids, ids, sockets, restart counts) instead of
 * starting new ones. Returns true when it did.
 */
static bool sup_resume_app(app *a)
{
    supervise *sv = a->sv;
    size_t i, j;
    json_t *ra, *s;
    json_array_foreach(sv->resume, i, ra) {
        if (strcmp(json_string_value(json_object_get(ra, "name")), a->name) != 0)
            continue;
        a->want = (int)json_integer_value(json_object_get(ra, "want"));
        a->ready_learned = json_is_true(json_object_get(ra, "ready_learned"));
        uint64_t now = sup_now_ms(sv);
        json_array_foreach(json_object_get(ra, "slots"), j, s) {
            const char *st = json_string_value(json_object_get(s, "state"));
            int id = (int)json_integer_value(json_object_get(s, "id"));
            pid_t pid = (pid_t)json_integer_value(json_object_get(s, "pid"));
            int member = a->group ? (int)json_integer_value(json_object_get(s, "lsock")) : -1;
            slot *sl = sup_slot(a, id) ? NULL : sup_slot_new(a, id, member);
            if (!sl) {
                if (pid > 0)
                    kill(-pid, a->stop_signal ? a->stop_signal : SIGTERM);
                continue;
            }
            slot_fsm f = slot_fsm_new();
            f.restarts = json_integer_value(json_object_get(s, "restarts"));
            f.fails = (unsigned)json_integer_value(json_object_get(s, "fails"));
            if (strcmp(st, "online") == 0) {
                proc *p = calloc(1, sizeof *p);
                if (!p) {
                    kill(-pid, SIGKILL);
                    continue;
                }
                uint64_t age = (uint64_t)json_integer_value(json_object_get(s, "age_ms"));
                *p = (proc){.a = a, .sl = sl, .pid = pid, .key = sl->key, .phase = PR_ONLINE, .grace_done = true,
                            .started_ms = now > age ? now - age : 0};
                uv_timer_init(sv->loop, &p->timer);
                p->timer.data = p;
                sl->cur = p;
                state_sup_spawned(sv->st, sl->key, pid);
                if (sl->ls)
                    logs_stream_set_pid(sl->ls, pid);
                f.state = SLOT_ONLINE;
                sup_slot_set(sl, &f);
            } else if (strcmp(st, "backoff") == 0) {
                sup_slot_set(sl, &f);   /* stopped: start it again now */
                sup_slot_step(sl, SLOT_IN_RESTART, NULL);
            } else {
                f.state = strcmp(st, "errored") == 0 ? SLOT_ERRORED : SLOT_STOPPED;
                sup_slot_set(sl, &f);
            }
        }
        json_array_remove(sv->resume, i);
        return true;
    }
    return false;
}

void supervise_resume_end(supervise *sv)
{
    size_t i, j;
    json_t *ra, *s;
    /* An app the upgrade ran that this image does not (its file changed):
     * its workers are still our children; they stop. */
    json_array_foreach(sv->resume, i, ra) {
        json_array_foreach(json_object_get(ra, "slots"), j, s) {
            pid_t pid = (pid_t)json_integer_value(json_object_get(s, "pid"));
            if (pid > 0)
                kill(-pid, SIGTERM);
        }
        sup_event(sv, ctl_event_make(CTL_EV_ERROR, CTL_PHASE_NONE, json_string_value(json_object_get(ra, "name")),
                                     -1, 0),
                  "%s: not in this hub's settings after the upgrade: its workers were stopped",
                  json_string_value(json_object_get(ra, "name")));
    }
    json_decref(sv->resume);
    sv->resume = NULL;
}

int supervise_add_app(supervise *sv, const supervise_app_spec *spec, char *err, size_t errcap)
{
    app *old = sup_app(sv, spec->app);
    if (old) {
        snprintf(err, errcap, old->removing ? "app %s is still stopping" : "app %s exists already", spec->app);
        return -1;
    }
    app *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    a->sv = sv;
    a->listen_fd = -1;
    snprintf(a->name, sizeof a->name, "%s", spec->app);
    a->group = spec->group;   /* reuseport: the app's socket per slot (not changed by an apply) */
    a->lg = spec->lg;
    if (sup_app_configure(a, spec, err, errcap) != 0) {
        free(a);
        return -1;
    }
    a->next = sv->apps;
    sv->apps = a;
    if (sup_resume_app(a))
        return 0;
    /* Its workers start from the loop's first turns, a batch at a time. */
    a->want = spec->instances;
    if (a->want > 0)
        sup_grow_start(a, false);
    return 0;
}

/* ---- commands ----------------------------------------------------------- */

static app *sup_app(supervise *sv, const char *name)
{
    for (app *a = sv->apps; a; a = a->next)
        if (!name || strcmp(a->name, name) == 0)
            return a;
    return NULL;
}

static slot *sup_slot(app *a, int id)
{
    for (int i = 0; i < a->nslots; i++)
        if (a->slots[i]->id == id)
            return a->slots[i];
    return NULL;
}

/* Resolves app/id for a command; returns the app or NULL with msg set. */
static app *sup_target(supervise *sv, const char *name, int id, slot **sl, char *msg, size_t cap)
{
    app *a = sup_app(sv, name);
    if (!a) {
        snprintf(msg, cap, "no app named '%s'", name ? name : "");
        return NULL;
    }
    *sl = NULL;
    if (id >= 0 && !(*sl = sup_slot(a, id))) {
        snprintf(msg, cap, "app %s has no worker %d", a->name, id);
        return NULL;
    }
    return a;
}

int supervise_kill(supervise *sv, const char *name, int id, char *msg, size_t cap)
{
    slot *one;
    app *a = sup_target(sv, name, id, &one, msg, cap);
    if (!a)
        return -1;
    int n = 0;
    for (int i = 0; i < a->nslots; i++) {
        slot *sl = a->slots[i];
        if (one && sl != one)
            continue;
        n += sl->cur != NULL;
        sup_slot_step(sl, SLOT_IN_KILL, NULL);
    }
    if (a->rl.active)
        sup_reload_abort(a, "workers were killed");
    if (!one)
        sup_grow_end(a, "workers were killed");
    if (one)
        snprintf(msg, cap, "killing %s:%d", a->name, id);
    else
        snprintf(msg, cap, "killing %d workers of %s", n, a->name);
    sup_note_manual(a, id, msg);
    return 0;
}

int supervise_restart(supervise *sv, const char *name, int id, char *msg, size_t cap)
{
    slot *one;
    app *a = sup_target(sv, name, id, &one, msg, cap);
    if (!a)
        return -1;
    for (int i = 0; i < a->nslots; i++)
        if (!one || a->slots[i] == one)
            sup_slot_step(a->slots[i], SLOT_IN_RESTART, NULL);
    if (one)
        snprintf(msg, cap, "restarting %s:%d", a->name, id);
    else
        snprintf(msg, cap, "restarting every worker of %s", a->name);
    sup_note_manual(a, id, msg);
    return 0;
}

/* Starts the next replacement of a reload, or ends it when none is left. */
static void sup_reload_next(app *a)
{
    while (a->rl.next_index < a->nslots) {
        slot *sl = a->slots[a->rl.next_index];
        if (slot_replaceable(&sl->fsm)) {
            if (sup_replace(sl) != 0)
                sup_reload_abort(a, "a replacement could not be started");
            else
                sup_event(a->sv, sup_reload_event(a, CTL_PHASE_PROGRESS, NULL),
                          "reload %s: %d/%d replaced, waiting for %s:%d (pid %d) to be ready",
                          a->name, a->rl.replaced, a->rl.total, a->name, sl->id, sl->repl->pid);
            return;
        }
        a->rl.next_index++;
    }
    a->rl.active = false;
    sup_event(a->sv, sup_reload_event(a, CTL_PHASE_DONE, NULL), "reload %s: done, %d/%d replaced in %.2f s", a->name, a->rl.replaced,
              a->rl.total, (sup_now_ms(a->sv) - a->rl.started_ms) / 1000.0);
    if (a->rl_again && !a->sv->stopping_all) {
        a->rl_again = false;
        sup_event(a->sv, ctl_event_make(CTL_EV_RELOAD, CTL_PHASE_NONE, a->name, -1, 0),
                  "reload %s: once more, as asked (SIGHUP) during the last one", a->name);
        sup_reload_begin(a);
    }
}

/* Starts a reload of app a (none running): its in-service workers, one at a time. */
static void sup_reload_begin(app *a)
{
    int total = 0;
    for (int i = 0; i < a->nslots; i++)
        total += slot_in_service(&a->slots[i]->fsm);
    a->rl = (reload_state){.active = true, .total = total, .started_ms = sup_now_ms(a->sv)};
    sup_event(a->sv, sup_reload_event(a, CTL_PHASE_STARTED, NULL), "reload %s: replacing %d workers one at a time",
              a->name, total);
    sup_reload_next(a);
}

int supervise_reload(supervise *sv, const char *name, char *msg, size_t cap)
{
    if (sv->stopping_all) {
        snprintf(msg, cap, "drover is stopping");
        return -1;
    }
    int found = 0;
    for (app *a = sv->apps; a; a = a->next) {
        if (name && strcmp(a->name, name) != 0)
            continue;
        found++;
        if (a->rl.active) {
            snprintf(msg, cap, "a reload of %s is already running", a->name);
            return -1;
        }
    }
    if (!found) {
        snprintf(msg, cap, "no app named '%s'", name ? name : "");
        return -1;
    }
    for (app *a = sv->apps; a; a = a->next)
        if (!name || strcmp(a->name, name) == 0)
            sup_reload_begin(a);
    snprintf(msg, cap, "reloading %s", name ? name : "every app");
    return 0;
}

int supervise_reload_soon(supervise *sv, char *msg, size_t cap)
{
    if (sv->stopping_all) {
        snprintf(msg, cap, "drover is stopping");
        return -1;
    }
    int queued = 0;
    for (app *a = sv->apps; a; a = a->next) {
        if (a->rl.active) {
            queued += !a->rl_again;
            a->rl_again = true;
        } else {
            sup_reload_begin(a);
        }
    }
    if (queued)
        snprintf(msg, cap, "a reload is running: one more reload follows it");
    else
        snprintf(msg, cap, "reloading every app");
    return 0;
}

/* Number of app a's slots not being scaled away. */
static int sup_live(const app *a)
{
    int live = 0;
    for (int i = 0; i < a->nslots; i++)
        live += a->slots[i]->fsm.state != SLOT_REMOVING && !a->slots[i]->leaving;
    return live;
}

/*
 * A leaving slot's socket is drained (left: connections still queued when
 * the drain timed out): now its processes stop and the slot goes.
 */
static void sup_on_drained(void *ctx, int member, unsigned left)
{
    slot *sl = ctx;
    app *a = sl->a;
    (void)member;
    if (left)
        sup_event(a->sv, ctl_event_make(CTL_EV_SCALE, CTL_PHASE_PROGRESS, a->name, sl->id, 0),
                  "scale %s: %s:%d's socket still had %u connections queued after %u ms; closing it",
                  a->name, a->name, sl->id, left, a->kill_timeout_ms);
    sup_slot_step(sl, SLOT_IN_REMOVE, NULL);
}

/*
 * Scales slot sl away. With a socket of its own (reuseport) and a process
 * to accept what is queued on it, new connections are steered away from
 * it first and the slot is removed once the queue is empty
 * (sup_on_drained); otherwise it is removed at once.
 */
static void sup_slot_leave(slot *sl)
{
    app *a = sl->a;
    sl->leaving = true;
    if (sl->lsock >= 0 && sl->cur && (sl->fsm.state == SLOT_ONLINE || sl->fsm.state == SLOT_STARTING) &&
        lgroup_drain(a->group, sl->lsock, a->kill_timeout_ms, sup_on_drained, sl) == 0)
        return;
    sup_slot_step(sl, SLOT_IN_REMOVE, NULL);
}

/* ---- growing, a bounded batch per loop turn ----------------------------- */

/* The scale event of app a at phase: done = workers now, total = wanted. */
static ctl_event sup_scale_event(const app *a, ctl_phase phase, const char *reason)
{
    ctl_event e = ctl_event_make(CTL_EV_SCALE, phase, a->name, -1, 0);
    e.done = sup_live(a);
    e.total = a->want;
    e.reason = reason;
    return e;
}

/* Ends app a's growth; why NULL: it reached its count, else it was cut short. */
static void sup_grow_end(app *a, const char *why)
{
    if (!a->growing)
        return;
    a->growing = false;
    if (why)
        a->want = sup_live(a);
    if (!a->announce)
        return;
    if (why)
        sup_event(a->sv, sup_scale_event(a, CTL_PHASE_ABORTED, why), "scale %s: stopped at %d workers: %s",
                  a->name, a->want, why);
    else
        sup_event(a->sv, sup_scale_event(a, CTL_PHASE_DONE, NULL), "scale %s: done, %d workers (from %d)",
                  a->name, a->want, a->grow_from);
}

/*
 * Adds and starts app a's next missing slot (the lowest free id, so ids stay
 * 0…N-1). Returns 0, or -1 when no slot could be made (out of memory).
 */
static int sup_grow_one(app *a)
{
    int id = 0;
    while (sup_slot(a, id))
        id++;
    slot *sl = sup_slot_new(a, id, -1);
    if (!sl)
        return -1;
    sup_slot_step(sl, SLOT_IN_RESTART, NULL);   /* a new slot is stopped: start it */
    return 0;
}

/*
 * One loop turn of growth: starts workers of growing apps until
 * SUPERVISE_GROW_BUDGET_MS have passed (at least one), then yields to the
 * loop, so that control requests and signals are answered between batches
 * however slow each fork/exec is on a busy host.
 */
static void sup_grow_turn(uv_idle_t *h)
{
    supervise *sv = h->data;
    uint64_t t0 = uv_hrtime();
    bool more = false;
    for (app *a = sv->apps; a; a = a->next) {
        if (!a->growing)
            continue;
        if (sv->stopping_all) {
            sup_grow_end(a, "the hub is stopping");
            continue;
        }
        while (sup_live(a) < a->want && uv_hrtime() - t0 < SUPERVISE_GROW_BUDGET_MS * 1000000ull) {
            if (sup_grow_one(a) != 0) {
                sup_grow_end(a, "a worker's slot could not be made");
                break;
            }
        }
        if (!a->growing)
            continue;
        if (sup_live(a) >= a->want) {
            sup_grow_end(a, NULL);
            continue;
        }
        more = true;
        uint64_t now = sup_now_ms(sv);
        if (a->announce && now - a->grow_said_ms >= SUPERVISE_PROGRESS_MS) {
            a->grow_said_ms = now;
            sup_event(sv, sup_scale_event(a, CTL_PHASE_PROGRESS, NULL), "scale %s: %d/%d workers started",
                      a->name, sup_live(a), a->want);
        }
    }
    if (!more)
        uv_idle_stop(h);
}

/* Makes app a grow to a->want from the next loop turn on. */
static void sup_grow_start(app *a, bool announce)
{
    supervise *sv = a->sv;
    if (!a->growing) {
        a->growing = true;
        a->grow_from = sup_live(a);
        a->grow_said_ms = sup_now_ms(sv);
    }
    a->announce = announce;
    if (sv->grow && !uv_is_active((uv_handle_t *)sv->grow))
        uv_idle_start(sv->grow, sup_grow_turn);
}

/* The number of workers app a is heading for: while growing, its target. */
static int sup_wanted(const app *a)
{
    return a->growing ? a->want : sup_live(a);
}

int supervise_scale(supervise *sv, const char *name, int n, char *msg, size_t cap)
{
    slot *unused;
    app *a = sup_target(sv, name, -1, &unused, msg, cap);
    if (!a)
        return -1;
    if (n < 0 || n > SUPERVISE_MAX_WORKERS) {
        snprintf(msg, cap, "cannot scale to %d workers (0..%d)", n, SUPERVISE_MAX_WORKERS);
        return -1;
    }
    if (sv->stopping_all) {
        snprintf(msg, cap, "drover is stopping");
        return -1;
    }
    int live = sup_live(a);
    int from = sup_wanted(a);
    a->want = n;
    /* Shrink at once (a SIGTERM each, highest ids first); grow a batch per
     * loop turn. */
    for (int i = a->nslots - 1; i >= 0 && live > n; i--) {
        slot *sl = a->slots[i];
        if (sl->fsm.state == SLOT_REMOVING || sl->leaving)
            continue;
        live--;
        sup_slot_leave(sl);
    }
    if (live < n) {
        sup_grow_start(a, true);
        sup_event(sv, sup_scale_event(a, CTL_PHASE_STARTED, NULL), "scale %s: starting %d workers (%d wanted)",
                  a->name, n - live, n);
    } else {
        a->growing = false;
    }
    snprintf(msg, cap, "scaling %s from %d to %d workers", a->name, from, n);
    return 0;
}

int supervise_scale_by(supervise *sv, const char *name, int delta, char *msg, size_t cap)
{
    app *a = sup_app(sv, name);
    if (!a) {
        snprintf(msg, cap, "no app named '%s'", name ? name : "");
        return -1;
    }
    int to = sup_wanted(a) + delta;
    return supervise_scale(sv, a->name, to < 0 ? 0 : to > SUPERVISE_MAX_WORKERS ? SUPERVISE_MAX_WORKERS : to, msg, cap);
}

size_t supervise_alive(const supervise *sv)
{
    size_t n = 0;
    for (app *a = sv->apps; a; a = a->next) {
        for (int i = 0; i < a->nslots; i++)
            n += (a->slots[i]->cur != NULL) + (a->slots[i]->repl != NULL);
        for (proc *p = a->retiring; p; p = p->next)
            n++;
    }
    return n;
}

/*
 * Lists the hub's children that are neither workers nor the guard: the
 * descendants of workers that the hub adopted as their subreaper (a
 * worker's child that called setsid() and outlived it). Read from
 * /proc/self/task/TID/children, the kernel's own list of each thread's
 * children (libproc2 would scan every process of the host for the same).
 * Returns how many pids were put in out (at most cap).
 */
static size_t sup_adopted(supervise *sv, pid_t *out, size_t cap)
{
    size_t n = 0;
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < cap) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%.20s/children", e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        long pid;
        while (n < cap && fscanf(f, "%ld", &pid) == 1) {
            if (pid <= 0 || pid > INT32_MAX || (pid_t)pid == spawn_guard_pid() || sup_find_pid(sv, (pid_t)pid))
                continue;
            out[n++] = (pid_t)pid;
        }
        fclose(f);
    }
    closedir(d);
    return n;
}

/* The longest kill timeout of any app: how long adopted descendants get too. */
static uint64_t sup_kill_timeout_ms(const supervise *sv)
{
    uint64_t ms = 0;
    for (const app *a = sv->apps; a; a = a->next)
        if (a->kill_timeout_ms > ms)
            ms = a->kill_timeout_ms;
    return ms;
}

/*
 * One sweep while stopping: SIGTERM to each adopted descendant (once), and
 * SIGKILL once the kill timeout since the stop began has passed. Returns
 * how many were found alive (reaping is supervise_reap's, as for workers).
 */
static size_t sup_sweep_adopted(supervise *sv)
{
    pid_t pids[SUPERVISE_ADOPTED_MAX];
    size_t n = sup_adopted(sv, pids, SUPERVISE_ADOPTED_MAX);
    bool late = sup_now_ms(sv) - sv->stop_ms >= sup_kill_timeout_ms(sv);
    for (size_t i = 0; i < n; i++) {
        bool termed = false;
        for (size_t k = 0; k < sv->ntermed && !termed; k++)
            termed = sv->termed[k] == pids[i];
        if (late) {
            kill(pids[i], SIGKILL);
        } else if (!termed) {
            kill(pids[i], SIGTERM);
            if (sv->ntermed < SUPERVISE_ADOPTED_MAX)
                sv->termed[sv->ntermed++] = pids[i];
        }
    }
    return n;
}

static void sup_on_sweep(uv_timer_t *t)
{
    sup_check_stopped_all(t->data);
}

/*
 * Ends stop_all once every worker is reaped and no adopted descendant is
 * left; until then, sweeps the adopted ones every SUPERVISE_SWEEP_MS (more
 * appear as workers die and their children are reparented to the hub).
 */
void supervise_count(const supervise *sv, int *online, int *wanted, int *errored)
{
    *online = *wanted = *errored = 0;
    for (const app *a = sv->apps; a; a = a->next) {
        *wanted += sup_wanted(a);
        for (int i = 0; i < a->nslots; i++) {
            *online += a->slots[i]->fsm.state == SLOT_ONLINE;
            *errored += a->slots[i]->fsm.state == SLOT_ERRORED;
        }
    }
}

bool supervise_reloading(const supervise *sv)
{
    for (const app *a = sv->apps; a; a = a->next)
        if (a->rl.active && !a->rl.one_slot)
            return true;
    return false;
}

static void sup_check_stopped_all(supervise *sv)
{
    if (!sv->stopping_all || !sv->stop_done)
        return;
    size_t adopted = sup_sweep_adopted(sv);
    if (supervise_alive(sv) == 0 && adopted == 0) {
        uv_timer_stop(sv->sweep);
        void (*done)(void *) = sv->stop_done;
        sv->stop_done = NULL;
        done(sv->stop_ctx);
    } else if (!uv_is_active((uv_handle_t *)sv->sweep)) {
        uv_timer_start(sv->sweep, sup_on_sweep, SUPERVISE_SWEEP_MS, SUPERVISE_SWEEP_MS);
    }
}

void supervise_stop_all(supervise *sv, void (*done)(void *ctx), void *ctx)
{
    sv->stopping_all = true;
    sv->stop_done = done;
    sv->stop_ctx = ctx;
    sv->stop_ms = sup_now_ms(sv);
    for (app *a = sv->apps; a; a = a->next) {
        a->rl.active = false;
        a->rl_again = false;
        sup_grow_end(a, "the hub is stopping");
        for (int i = 0; i < a->nslots; i++)
            sup_slot_step(a->slots[i], SLOT_IN_KILL, NULL);
        for (proc *p = a->retiring; p; p = p->next)
            sup_stop_proc(p);
    }
    sup_check_stopped_all(sv);
}

void supervise_hurry(supervise *sv)
{
    sv->stop_ms = 0;   /* adopted descendants get SIGKILL at the next sweep too */
    for (app *a = sv->apps; a; a = a->next) {
        for (int i = 0; i < a->nslots; i++) {
            proc *ps[2] = {a->slots[i]->cur, a->slots[i]->repl};
            for (int k = 0; k < 2; k++)
                if (ps[k] && ps[k]->phase == PR_STOPPING)
                    sup_on_kill_deadline(&ps[k]->timer);
        }
        for (proc *p = a->retiring; p; p = p->next)
            if (p->phase == PR_STOPPING)
                sup_on_kill_deadline(&p->timer);
    }
}

/* Frees app a's memory (its slots' handles are closed or closing). */
static void sup_app_free(app *a)
{
    free(a->slots);
    sup_strv_free(a->env);
    sup_strv_free(a->argv);
    free(a->groups);
    free(a->cwd);
    free(a->user);
    free(a->listen_spec);
    if (a->own_listen && a->listen_fd >= 0)
        close(a->listen_fd);
    if (a->own_listen)   /* its slots closed their sockets: the anchor and the maps go */
        lgroup_free(a->group);
    free(a);
}

void supervise_free(supervise *sv)
{
    if (!sv)
        return;
    app *a = sv->apps;
    while (a) {
        app *next = a->next;
        for (int i = 0; i < a->nslots; i++) {
            slot *sl = a->slots[i];
            /* stop_all has run: no process is left, only handles to close */
            if (sl->lsock >= 0)
                lgroup_close(a->group, sl->lsock);
            uv_timer_stop(&sl->backoff);
            sl->backoff.data = sl;
            uv_close((uv_handle_t *)&sl->backoff, sup_slot_free_cb);
        }
        sup_app_free(a);
        a = next;
    }
    uv_idle_stop(sv->grow);
    uv_close((uv_handle_t *)sv->grow, sup_free_handle_cb);
    uv_timer_stop(sv->sweep);
    uv_close((uv_handle_t *)sv->sweep, sup_free_handle_cb);
    json_decref(sv->resume);
    free(sv);
}

/* ---- apps from a config file ------------------------------------------- */

/* A removed app with no process left is unlinked and freed. */
static void sup_app_gone_check(app *a)
{
    if (!a->removing || a->nslots > 0 || a->retiring)
        return;
    supervise *sv = a->sv;
    for (app **pp = &sv->apps; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    sup_event(sv, ctl_event_make(CTL_EV_SCALE, CTL_PHASE_DONE, a->name, -1, 0), "%s: removed, every worker stopped",
              a->name);
    sup_app_free(a);
}

int supervise_remove_app(supervise *sv, const char *name, char *msg, size_t cap)
{
    app *a = sup_app(sv, name);
    if (!a || a->removing) {
        snprintf(msg, cap, a ? "app %s is stopping already" : "no app named '%s'", name);
        return -1;
    }
    a->removing = true;
    if (a->rl.active)
        sup_reload_abort(a, "the app is being removed");
    sup_grow_end(a, "the app is being removed");
    a->want = 0;
    int n = 0;
    for (int i = a->nslots - 1; i >= 0; i--) {
        n += a->slots[i]->cur != NULL;
        sup_slot_step(a->slots[i], SLOT_IN_REMOVE, NULL);   /* may free the slot */
    }
    for (proc *p = a->retiring; p; p = p->next)
        sup_stop_proc(p);
    snprintf(msg, cap, "removing %s: stopping %d workers", name, n);
    sup_event(sv, ctl_event_make(CTL_EV_SCALE, CTL_PHASE_STARTED, name, -1, 0), "%s", msg);
    sup_app_gone_check(a);
    return 0;
}

/*
 * App a's listening sockets move to group g (NULL: a->listen_fd, shared):
 * each slot takes a socket of g, which its next processes get; the
 * running ones keep the socket they have as fd 3, so the hub lets go of
 * the old group (old, freed when owned) at once, as of an old shared
 * socket: its sockets close when the last worker holding them is gone.
 */
static void sup_regroup(app *a, lgroup *g, lgroup *old, bool owned)
{
    a->group = g;
    for (int i = 0; i < a->nslots; i++) {
        slot *sl = a->slots[i];
        char err[256];
        sl->lsock = g ? lgroup_add(g, err, sizeof err) : -1;
        if (g && sl->lsock < 0)
            sup_event(a->sv, ctl_event_make(CTL_EV_ERROR, CTL_PHASE_NONE, a->name, sl->id, 0), "%s:%d: %s",
                      a->name, sl->id, err);
        else if (sl->lsock >= 0)
            lgroup_serve(g, sl->lsock, sup_slot_serves(sl->fsm.state));
    }
    if (owned)
        lgroup_free(old);
}

int supervise_update_app(supervise *sv, const supervise_app_spec *spec, char *msg, size_t cap)
{
    app *a = sup_app(sv, spec->app);
    if (!a || a->removing) {
        snprintf(msg, cap, a ? "app %s is being removed" : "no app named '%s'", spec->app);
        return -1;
    }
    if (sv->stopping_all) {
        snprintf(msg, cap, "drover is stopping");
        return -1;
    }
    bool regroup = spec->group != a->group;
    for (int i = 0; regroup && i < a->nslots; i++)
        if (a->slots[i]->leaving) {
            /* its drain reports to the group that is about to go */
            snprintf(msg, cap, "a scale-down of %s is draining a socket; apply again once it ended", a->name);
            return -1;
        }
    if (a->rl.active)
        sup_reload_abort(a, "new settings arrived");
    lgroup *old_group = a->group;
    bool owned = a->own_listen;
    if (sup_app_configure(a, spec, msg, cap) != 0)
        return -1;
    if (regroup)
        sup_regroup(a, spec->group, old_group, owned);
    char sm[160] = "";
    if (spec->instances != sup_wanted(a))
        supervise_scale(sv, a->name, spec->instances, sm, sizeof sm);
    /* Workers being started by the scale already run the new settings; the
     * reload replaces the others. */
    /* The settings are the app's now (and its socket with them): whatever
     * the reload answers, the update itself is done. */
    char rm[160];
    supervise_reload(sv, a->name, rm, sizeof rm);
    snprintf(msg, cap, "%s%s%s", rm, sm[0] ? "; " : "", sm);
    return 0;
}

/* The name of signal sig ("TERM"), or its number. */
static const char *sup_signame(int sig, char *buf, size_t cap)
{
    const char *n = sigabbrev_np(sig);
    if (n)
        return n;
    snprintf(buf, cap, "%d", sig);
    return buf;
}

/* Wire names of supervise_ready_mode. */
static const char *const sup_ready_names[] = {"auto", "notify", "agent", "none"};

json_t *supervise_describe(const supervise *sv, const char *name, bool with_values)
{
    static const char *const restart_names[] = {"always", "on-failure", "never"};
    const app *a = NULL;
    for (const app *x = sv->apps; x; x = x->next)
        if (strcmp(x->name, name) == 0)
            a = x;
    if (!a)
        return NULL;
    json_t *o = json_object();
    json_t *argv = json_array();
    for (char **v = a->argv; *v; v++)
        json_array_append_new(argv, json_string(*v));
    char sb[16];
    json_object_set_new(o, "app", json_string(a->name));
    json_object_set_new(o, "command", argv);
    json_object_set_new(o, "path", json_string(a->path));
    json_object_set_new(o, "cwd", a->cwd ? json_string(a->cwd) : json_null());
    json_object_set_new(o, "user", a->user ? json_string(a->user) : json_null());
    json_object_set_new(o, "uid", a->set_ids ? json_integer(a->uid) : json_null());
    json_object_set_new(o, "gid", a->set_ids ? json_integer(a->gid) : json_null());
    json_object_set_new(o, "listen", a->listen_spec ? json_string(a->listen_spec) : json_null());
    json_object_set_new(o, "instances", json_integer(sup_wanted(a)));
    json_object_set_new(o, "ready", json_string(sup_ready_names[a->ready_mode]));
    json_object_set_new(o, "ready_learned", json_boolean(a->ready_learned));
    json_object_set_new(o, "ready_timeout_ms", json_integer(a->ready_timeout_ms));
    json_object_set_new(o, "kill_timeout_ms", json_integer(a->kill_timeout_ms));
    json_object_set_new(o, "max_memory", a->max_memory ? json_integer((json_int_t)a->max_memory) : json_null());
    json_object_set_new(o, "restart", json_string(restart_names[a->restart]));
    json_object_set_new(o, "stop_signal", json_string(sup_signame(a->stop_signal, sb, sizeof sb)));
    json_object_set_new(o, "removing", json_boolean(a->removing));
    json_object_set_new(o, "reloading", json_boolean(a->rl.active));
    /* Environment keys (values only when asked); drover's own per-worker id last. */
    json_t *env = with_values ? json_object() : json_array();
    for (size_t i = 0; i < a->nenv; i++) {
        const char *eq = strchr(a->env[i], '=');
        if (!eq)
            continue;
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)(eq - a->env[i]), a->env[i]);
        if (with_values)
            json_object_set_new(env, key, json_string(eq + 1));
        else
            json_array_append_new(env, json_string(key));
    }
    json_object_set_new(o, "env", env);
    json_t *notes = json_array();
    unsigned from = a->nnotes > SUP_NOTES ? a->nnotes - SUP_NOTES : 0;
    for (unsigned i = from; i < a->nnotes; i++) {
        const sup_note *n = &a->notes[i % SUP_NOTES];
        json_array_append_new(notes, json_pack("{s:f, s:s, s:s?, s:s?, s:s}", "ts", n->ts, "event",
                                               n->command ? "command" : ctl_event_kind_name(n->kind), "reason", n->reason[0] ? n->reason : NULL,
                                               "cause", n->cause, "text", n->text));
    }
    json_object_set_new(o, "events", notes);
    json_t *rs = json_array();
    char sigb[16];
    from = a->nrestarts > SUP_RESTARTS ? a->nrestarts - SUP_RESTARTS : 0;
    for (unsigned i = from; i < a->nrestarts; i++) {
        const sup_restart *r = &a->restarts[i % SUP_RESTARTS];
        json_t *ro = json_pack("{s:f, s:s, s:s?, s:s}", "ts", r->ts, "cause", r->cause, "reason",
                               r->reason[0] ? r->reason : NULL, "text", r->text);
        json_object_set_new(ro, "id", r->id >= 0 ? json_integer(r->id) : json_null());
        json_object_set_new(ro, "pid", r->pid > 0 ? json_integer(r->pid) : json_null());
        json_object_set_new(ro, "status", r->status >= 0 ? json_integer(r->status) : json_null());
        json_object_set_new(ro, "signal", r->signal ? json_string(sup_signame(r->signal, sigb, sizeof sigb)) : json_null());
        json_array_append_new(rs, ro);
    }
    json_object_set_new(o, "restarts", rs);
    return o;
}

size_t supervise_apps(const supervise *sv, const char **names, size_t cap)
{
    size_t n = 0;
    for (const app *a = sv->apps; a; a = a->next, n++)
        if (n < cap)
            names[n] = a->name;
    return n;
}

const char *supervise_app_ready(const supervise *sv, const char *name, bool *learned)
{
    for (const app *a = sv->apps; a; a = a->next)
        if (strcmp(a->name, name) == 0) {
            *learned = a->ready_learned;
            return sup_ready_names[a->ready_mode];
        }
    return NULL;
}

int supervise_listen_fd(const supervise *sv, const char *name)
{
    for (const app *a = sv->apps; a; a = a->next)
        if (strcmp(a->name, name) == 0)
            return a->listen_fd;
    return -1;
}

lgroup *supervise_listen_group(const supervise *sv, const char *name)
{
    for (const app *a = sv->apps; a; a = a->next)
        if (strcmp(a->name, name) == 0)
            return a->group;
    return NULL;
}

bool supervise_has_app(const supervise *sv, const char *name)
{
    for (const app *a = sv->apps; a; a = a->next)
        if (strcmp(a->name, name) == 0)
            return true;
    return false;
}
