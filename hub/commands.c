/*
 * commands.c — the hub's side of the control protocol: targets resolved the
 * same way on every kind of hub, commands dispatched to the supervisor or to
 * attach, snapshots and log tails for views.
 */
#include "hub/commands.h"
#include "hub/prom.h"

#include "hub/headless.h"
#include "hub/sampler.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

ssize_t hub_commands_views(hub_commands *hc, double now)
{
    size_t n = state_count(hc->st);
    if (n > hc->views_cap) {
        worker_view *nv = realloc(hc->views, n * sizeof *nv);
        if (!nv)
            return -1;
        hc->views = nv;
        hc->views_cap = n;
    }
    return (ssize_t)state_snapshot(hc->st, hc->views, n, now, hc->interval_s);
}

void hub_commands_free(hub_commands *hc)
{
    prom_free(hc->prom);
    hc->prom = NULL;
    free(hc->views);
    hc->views = NULL;
    hc->views_cap = 0;
    agentlog_free(hc->al);
    hc->al = NULL;
}

static double commands_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- snapshot ------------------------------------------------------------ */

static json_t *commands_snapshot(void *ctx, bool with_history)
{
    hub_commands *hc = ctx;
    ssize_t n = hub_commands_views(hc, sampler_now());
    if (n < 0)
        n = 0;
    hub_counters c = state_counters(hc->st);
    json_t *snap = headless_snapshot(hc->views, (size_t)n, &c, commands_wall());
    if (!snap)
        return json_object();
    if (hc->sv) {
        /* how each app's workers show readiness (pinned, or learned) */
        size_t i;
        json_t *a;
        json_array_foreach(json_object_get(snap, "apps"), i, a) {
            bool learned = false;
            const char *mode = supervise_app_ready(hc->sv, json_string_value(json_object_get(a, "app")), &learned);
            if (mode) {
                json_object_set_new(a, "ready_mode", json_string(mode));
                json_object_set_new(a, "ready_learned", json_boolean(learned));
            }
        }
    }
    if (!with_history)
        return snap;
    static const char *names[STATE_SERIES_N] = {"cpu_pct", "rss_bytes", "req_per_s", "lag_p99_ms"};
    double pts[STATE_HISTORY];
    json_t *ws = json_object_get(snap, "workers");
    for (ssize_t i = 0; i < n; i++) {
        json_t *hist = json_object();
        for (int k = 0; k < STATE_SERIES_N; k++) {
            size_t np = state_history(hc->st, hc->views[i].key, (state_series)k, pts, STATE_HISTORY);
            json_t *arr = json_array();
            for (size_t j = 0; j < np; j++)
                json_array_append_new(arr, isnan(pts[j]) ? json_null() : json_real(pts[j]));
            json_object_set_new(hist, names[k], arr);
        }
        json_object_set_new(json_array_get(ws, (size_t)i), "history", hist);
    }
    return snap;
}

/* ---- targets ------------------------------------------------------------- */

/* True when the hub has an app named name (it may have no worker right now). */
static bool commands_has_app(hub_commands *hc, const char *name, ssize_t nviews)
{
    if (hc->sv)
        return supervise_has_app(hc->sv, name);
    if (hc->at)
        return strcmp(attach_app(hc->at), name) == 0;
    for (ssize_t i = 0; i < nviews; i++)
        if (strcmp(hc->views[i].app, name) == 0)
            return true;
    return false;
}

/* The live worker of hc->views (n of them) that target t names by pid, or NULL. */
static const worker_view *commands_by_pid(const hub_commands *hc, const ctl_target *t, ssize_t n)
{
    for (ssize_t i = 0; i < n; i++) {
        const worker_view *v = &hc->views[i];
        if (v->pid == t->pid && v->state != WS_GONE && strcmp(v->app, t->app) == 0)
            return v;
    }
    return NULL;
}

/*
 * One rule for every kind of hub: the app must exist, and a worker id must
 * be one of its workers now (a run hub's slot, an attached master's child,
 * a monitored process's reported id).
 */
static int commands_resolve(void *ctx, const ctl_target *t, char *msg, size_t cap)
{
    hub_commands *hc = ctx;
    ssize_t n = hub_commands_views(hc, sampler_now());
    if (n < 0)
        n = 0;
    if (!commands_has_app(hc, t->app, n)) {
        snprintf(msg, cap, "no app named '%s'", t->app);
        return -1;
    }
    if (t->pid > 0) {
        if (commands_by_pid(hc, t, n))
            return 0;
        snprintf(msg, cap, "%s has no process %d", t->app, t->pid);
        return -1;
    }
    if (t->id < 0)
        return 0;
    bool found = hc->at ? attach_has_id(hc->at, t->id) : false;
    for (ssize_t i = 0; i < n && !found; i++)
        found = strcmp(hc->views[i].app, t->app) == 0 && hc->views[i].id == t->id &&
                hc->views[i].state != WS_GONE;
    if (!found) {
        snprintf(msg, cap, "%s has no worker %d", t->app, t->id);
        return -1;
    }
    return 0;
}

/* ---- commands ------------------------------------------------------------ */

/* Names the apps a reload of every app covers, so a view can wait for each outcome. */
static void commands_reload_apps(hub_commands *hc, const ctl_request *r, json_t *reply)
{
    json_t *apps = json_array();
    if (r->target.app[0]) {
        json_array_append_new(apps, json_string(r->target.app));
    } else if (hc->sv) {
        size_t n = supervise_apps(hc->sv, NULL, 0);
        const char **names = calloc(n ? n : 1, sizeof *names);
        if (names) {
            supervise_apps(hc->sv, names, n);
            for (size_t i = 0; i < n; i++)
                json_array_append_new(apps, json_string(names[i]));
            free(names);
        }
    } else if (hc->at) {
        json_array_append_new(apps, json_string(attach_app(hc->at)));
    }
    json_object_set_new(reply, "apps", apps);
}

/*
 * The process trees of app's workers for describe: [{id, pid, procs,
 * cpu_pct, rss_bytes, pss_bytes, tree}] as in the worker object.
 */
static json_t *commands_app_trees(hub_commands *hc, const char *app)
{
    json_t *a = json_array();
    ssize_t n = hub_commands_views(hc, sampler_now());
    for (ssize_t i = 0; a && i < n; i++) {
        const worker_view *w = &hc->views[i];
        if (strcmp(w->app, app) != 0 || w->pid <= 0)
            continue;
        json_array_append_new(a, json_pack("{s:I, s:i, s:I, s:o, s:I, s:I, s:o}", "id", (json_int_t)w->id,
                                           "pid", (int)w->pid, "procs", (json_int_t)w->procs,
                                           "cpu_pct", isnan(w->cpu_pct) ? json_null() : json_real(w->cpu_pct),
                                           "rss_bytes", (json_int_t)w->rss_bytes,
                                           "pss_bytes", (json_int_t)w->pss_bytes,
                                           "tree", headless_tree_json(w)));
    }
    return a ? a : json_null();
}

/* On a run hub: each command is a supervisor call. */
static int commands_run(hub_commands *hc, const ctl_request *r, json_t *reply, char *msg, size_t cap)
{
    const char *app = r->target.app;
    int id = r->target.id;
    switch (r->cmd->cmd) {
    case CTL_KILL:
    case CTL_STOP:
        return supervise_kill(hc->sv, app, id, msg, cap);
    case CTL_RESTART:
        return supervise_restart(hc->sv, app, id, msg, cap);
    case CTL_RELOAD:
        if (id >= 0)
            return supervise_restart(hc->sv, app, id, msg, cap);
        commands_reload_apps(hc, r, reply);
        return supervise_reload(hc->sv, app[0] ? app : NULL, msg, cap);
    case CTL_SCALE:
        if (r->has_delta)
            return supervise_scale_by(hc->sv, app, (int)r->delta, msg, cap);
        return supervise_scale(hc->sv, app, (int)r->n, msg, cap);
    case CTL_APPLY:
        return hc->apply(hc->ctx, r->file, reply, msg, cap);
    case CTL_DESCRIBE: {
        json_t *d = supervise_describe(hc->sv, app, r->env);
        if (!d) {
            snprintf(msg, cap, "no app named '%s'", app);
            return -1;
        }
        json_object_set_new(d, "log_dir", hc->log_dir ? json_string(hc->log_dir) : json_null());
        json_object_set_new(d, "workers", commands_app_trees(hc, app));
        json_object_set_new(reply, "app", d);
        snprintf(msg, cap, "%s", app);
        return 0;
    }
    default:
        break;
    }
    snprintf(msg, cap, "'%s' does not act on workers", r->cmd->name);
    return -1;
}

/* On an attach hub: signals to the master's children. */
static int commands_attach(hub_commands *hc, const ctl_request *r, json_t *reply, char *msg, size_t cap)
{
    int id = r->target.id;
    switch (r->cmd->cmd) {
    case CTL_KILL:
    case CTL_STOP:
        return attach_kill(hc->at, id, msg, cap);
    case CTL_RESTART:
        return attach_restart(hc->at, id, msg, cap);
    case CTL_RELOAD:
        if (id >= 0)
            return attach_restart(hc->at, id, msg, cap);
        commands_reload_apps(hc, r, reply);
        return attach_reload(hc->at, msg, cap);
    case CTL_SCALE:
        return attach_scale(hc->at, (long)r->n, r->has_delta, (long)r->delta, msg, cap);
    case CTL_DESCRIBE: {
        json_t *d = attach_describe(hc->at);
        if (!d) {
            snprintf(msg, cap, "out of memory");
            return -1;
        }
        json_object_set_new(reply, "app", d);
        snprintf(msg, cap, "%s", attach_app(hc->at));
        return 0;
    }
    default:
        break;
    }
    snprintf(msg, cap, "'%s' does not act on an attached master's workers", r->cmd->name);
    return -1;
}

/*
 * A command on a process drover did not start (an agent reporting to this
 * hub on its own; named APP:pid:PID): kill and stop send it SIGTERM, once,
 * and only if the pid is still the process the model knows (same start
 * time, checked through a pidfd so the pid cannot be reused between the
 * check and the signal); restart and reload cannot be done.
 */
static int commands_unowned(const ctl_request *r, const worker_view *v, char *msg, size_t cap)
{
    char tg[CTL_APP_MAX + 32];
    ctl_target_format(v->app, -1, v->pid, tg, sizeof tg);
    switch (r->cmd->cmd) {
    case CTL_KILL:
    case CTL_STOP: {
        /* Without pidfds (a kernel before 5.3, or valgrind, which does not
         * know the call) the signal goes by pid right after the check. */
        int fd = (int)syscall(SYS_pidfd_open, v->pid, 0);
        bool nopidfd = fd < 0 && errno == ENOSYS;
        uint64_t start = 0;
        if ((fd < 0 && !nopidfd) || v->start_ticks == 0 || sampler_started(v->pid, &start) != 0 ||
            start != v->start_ticks) {
            if (fd >= 0)
                close(fd);
            snprintf(msg, cap, "%s has exited (or is not the process drover saw)", tg);
            return -1;
        }
        int rc = nopidfd ? kill(v->pid, SIGTERM) : (int)syscall(SYS_pidfd_send_signal, fd, SIGTERM, NULL, 0);
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (rc != 0) {
            snprintf(msg, cap, "cannot signal %s: %s", tg, strerror(e));
            return -1;
        }
        snprintf(msg, cap, "sent SIGTERM to %s (not supervised: drover will not start it again)", tg);
        return 0;
    }
    case CTL_RESTART:
    case CTL_RELOAD:
        snprintf(msg, cap, "%s is not supervised: drover cannot start it again (stop it with 'drover stop %s')",
                 tg, tg);
        return -1;
    default:
        break;
    }
    snprintf(msg, cap, "'%s' does not act on %s", r->cmd->name, tg);
    return -1;
}

static int commands_command(void *ctx, const ctl_request *r, json_t *reply, char *msg, size_t cap)
{
    hub_commands *hc = ctx;
    if (r->target.pid > 0) {
        ssize_t n = hub_commands_views(hc, sampler_now());
        const worker_view *v = commands_by_pid(hc, &r->target, n < 0 ? 0 : n);
        if (!v) {
            snprintf(msg, cap, "%s has no process %d", r->target.app, r->target.pid);
            return -1;
        }
        if (!v->owned)
            return commands_unowned(r, v, msg, cap);
        /* A worker drover owns: the same as naming it by its id. */
        ctl_request byid = *r;
        byid.target.id = (int)v->id;
        byid.target.pid = 0;
        return commands_command(ctx, &byid, reply, msg, cap);
    }
    if (r->cmd->cmd == CTL_STOP && !r->target.app[0]) {
        snprintf(msg, cap, "stopping the hub%s", hc->sv ? " and every worker" : "");
        hc->stop_hub(hc->ctx);   /* deferred by the hub until this reply is queued */
        return 0;
    }
    if (r->cmd->cmd == CTL_UPGRADE)
        return hc->upgrade(hc->ctx, reply, msg, cap);   /* the exec is deferred past this reply too */
    if (hc->sv)
        return commands_run(hc, r, reply, msg, cap);
    if (hc->at)
        return commands_attach(hc, r, reply, msg, cap);
    snprintf(msg, cap, "this hub only monitors (drover monit): it has no workers of its own to %s",
             r->cmd->name);
    return -1;
}

/* ---- logs ---------------------------------------------------------------- */

/* One captured line, collected for a merged tail. */
typedef struct {
    char      app[CTL_APP_MAX];
    int       id;
    logs_line line;
    char     *text;
} commands_tail_line;

typedef struct {
    commands_tail_line *v;
    size_t n, cap;
} commands_tail;

static void commands_tail_collect(void *ctx, const logs_line *l)
{
    commands_tail *t = ctx;
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 256;
        commands_tail_line *nv = realloc(t->v, nc * sizeof *nv);
        if (!nv)
            return;
        t->v = nv;
        t->cap = nc;
    }
    commands_tail_line *x = &t->v[t->n];
    x->text = malloc(l->len ? l->len : 1);
    if (!x->text)
        return;
    memcpy(x->text, l->text, l->len);
    x->line = *l;
    snprintf(x->app, sizeof x->app, "%s", l->app ? l->app : "");
    x->id = l->id;
    t->n++;
}

/* The last n lines of each matching stream, merged by time, newest n overall. */
static void commands_logs_tail(void *ctx, const ctl_target *tg, size_t n, json_t *arr)
{
    hub_commands *hc = ctx;
    if (n == 0)
        return;
    int id = tg->id;
    bool captured = true, agent = id < 0;   /* which lines: captured output, unowned agents' drover_log */
    if (tg->pid > 0) {
        /* A worker drover owns, by its id; of a process drover did not start
         * no output was captured: only its agent's drover_log lines. */
        ssize_t nv = hub_commands_views(hc, sampler_now());
        const worker_view *v = commands_by_pid(hc, tg, nv < 0 ? 0 : nv);
        if (!v)
            return;
        captured = v->owned;
        agent = !v->owned;
        id = (int)v->id;
    }
    const char *app = tg->app[0] ? tg->app : NULL;
    commands_tail t = {0};
    if (captured && hc->lg)
        logs_foreach(hc->lg, app, id, n, commands_tail_collect, &t);
    if (agent)
        agentlog_foreach(hc->al, app, tg->pid > 0 ? tg->pid : 0, n, commands_tail_collect, &t);
    /* stable insertion merge by time: lines of one stream are already in order */
    for (size_t i = 1; i < t.n; i++) {
        commands_tail_line x = t.v[i];
        size_t j = i;
        while (j > 0 && t.v[j - 1].line.ts > x.line.ts) {
            t.v[j] = t.v[j - 1];
            j--;
        }
        t.v[j] = x;
    }
    size_t from = t.n > n ? t.n - n : 0;
    for (size_t i = 0; i < t.n; i++) {
        if (i >= from) {
            logs_line l = t.v[i].line;
            l.text = t.v[i].text;
            json_array_append_new(arr, control_log_json(t.v[i].app, t.v[i].id, &l));
        }
        free(t.v[i].text);
    }
    free(t.v);
}

/* The interval's headless output, exactly as the hub would print it. */
static char *commands_render(void *ctx, ctl_format fmt)
{
    hub_commands *hc = ctx;
    ssize_t n = hub_commands_views(hc, sampler_now());
    if (n < 0)
        return NULL;
    hub_counters c = state_counters(hc->st);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return NULL;
    int rc = headless_print(f, fmt == CTL_FORMAT_PROM ? HEADLESS_PROM : HEADLESS_NDJSON, hc->views, (size_t)n, &c,
                            commands_wall(), hc->prom);
    if (fclose(f) != 0 || rc != 0) {
        free(text);
        return NULL;
    }
    return text;
}

control_hooks hub_commands_hooks(hub_commands *hc)
{
    return (control_hooks){.ctx = hc, .snapshot = commands_snapshot, .resolve = commands_resolve,
                           .command = commands_command, .render = commands_render,
                           .logs_tail = commands_logs_tail};
}
