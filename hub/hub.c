/*
 * hub.c — the hub process: one libuv loop tying ingest, state, sampler,
 * supervisor or attach, logs and the headless printers together.
 *
 * Each interval: flush the ingest queue, sample every known pid on the thread
 * pool, then (back on the loop) apply the samples, flush again, let the
 * supervisor check limits, end the interval in the model and print it.
 */
#include "hub/hub.h"
#include "hub/apply.h"
#include "hub/attach.h"
#include "hub/commands.h"
#include "hub/control.h"
#include "hub/ingest.h"
#include "hub/lgroup.h"
#include "hub/listen.h"
#include "hub/logs.h"
#include "hub/metrics.h"
#include "hub/paths.h"
#include "hub/prom.h"
#include "hub/agentlog.h"
#include "hub/sampler.h"
#include "hub/service.h"
#include "hub/spawn.h"
#include "hub/state.h"
#include "hub/supervise.h"
#include "hub/upgrade.h"
#include "proto/notify.h"
#include "proto/report.h"
#include "proto/text.h"

#include <errno.h>
#include <pwd.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/prctl.h>
#include <math.h>
#include <time.h>
#include <unistd.h>
#include <linux/close_range.h>
#include <uv.h>

#ifndef DROVER_LIBDIR
#define DROVER_LIBDIR "/usr/local/lib/drover"
#endif

#define HUB_NSIGNALS 8
#define HUB_PSS_EVERY_MS 5000u  /* PSS (smaps_rollup) read at most this often per process */

typedef struct {
    const hub_options *o;
    uv_loop_t   loop;
    uv_timer_t  timer;
    uv_signal_t sig[HUB_NSIGNALS];
    ingest     *in;
    supervise  *sv;
    attach     *at;
    logs       *lg;
    control    *ctl;
    metrics    *mx;             /* --metrics: the HTTP endpoint, or NULL */
    service    *svc;            /* systemd's notify socket and watchdog, or NULL */
    bool        textfile_failed; /* --metrics-textfile: its failure was said once */
    char        logdir[4096];   /* run: where worker logs (and a background hub's own) go */
    int         listen_fd;
    lgroup     *group;          /* --balance reuseport: the per-slot sockets, or NULL */
    bool        draining;       /* stopping every worker before exit */
    bool        drained;        /* ... and the last one is gone */
    sampler    *sm;
    state      *st;
    hub_commands cmds;          /* the control protocol's commands, acting on the above */
    pid_t      *pids;
    size_t      pids_cap;
    long        printed;
    int         exit_code;
    bool        stopping;
    int         lock_fd;
    hub_apply   ap;             /* drover up: the config file applied */
    char        node_agent[4096];

    /* drover upgrade */
    char        exe[4096];      /* the binary at our path, read at start */
    json_t     *resume;         /* the blob this image was started with, during setup */
    int         upgrades;       /* upgrades this hub went through (carried along) */
    int         upgrade_failures;
    char        upgrade_error[512]; /* why the last one failed (empty: none did) */
    uv_timer_t  upgrade_timer;  /* the exec, a turn after the command's reply */
    bool        upgrade_due;
} hub;

/* The hub's own command line, which an upgrade executes again. */
static char **hub_argv;

void hub_set_argv(char **argv)
{
    hub_argv = argv;
}

/* ---- namespace lock ----------------------------------------------------- */

/*
 * Takes the namespace's lock file (hub.lock, holding our pid) so that exactly
 * one hub serves a namespace; the kernel releases it when we die, so a crashed
 * hub never blocks the next one. Returns the fd, or -1 with a message in err.
 */
static int hub_lock(const char *dir, const char *sock_path, char *err, size_t errcap)
{
    char path[PATHS_MAX + 16];
    if (paths_join(dir, "hub.lock", path, sizeof path) != 0) {
        snprintf(err, errcap, "path too long: %s/hub.lock", dir);
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errcap, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char buf[32] = "";
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        long other = n > 0 ? strtol(buf, NULL, 10) : 0;
        close(fd);
        if (other > 0)
            snprintf(err, errcap, "cannot bind %s: another hub is running (pid %ld); use -L NAME for a second one",
                     sock_path, other);
        else
            snprintf(err, errcap, "cannot bind %s: another hub is running; use -L NAME for a second one", sock_path);
        return -1;
    }
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)len, 0) != len) {
        /* The pid is only for the error message of a second hub; not fatal. */
    }
    return fd;
}

/* ---- datagrams ---------------------------------------------------------- */

/* True for the first byte of a msgpack map (fixmap, map16, map32). */
static bool hub_is_map(unsigned char b)
{
    return (b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf;
}

static double hub_wall(void);

/*
 * An agent's log line (drover_log) joins its worker's captured output, so
 * files, console and `drover logs` show it: "[lvl] msg", on stderr for
 * warn/error levels. A process drover did not start has no captured output:
 * its lines are kept in the agent log ring (hub/agentlog.h) and pushed to
 * the views that follow its app.
 */
static void hub_agent_log(hub *h, const report *r)
{
    const char *app;
    int64_t id;
    char line[REPORT_LVL_MAX + REPORT_MSG_MAX + 4];
    const char *lvl = r->lvl[0] ? r->lvl : "info";
    int n = snprintf(line, sizeof line, "[%s] %s", lvl, r->msg);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    bool loud = strncmp(lvl, "warn", 4) == 0 || strncmp(lvl, "err", 3) == 0 ||
                strcmp(lvl, "fatal") == 0 || strcmp(lvl, "crit") == 0;
    if (state_pid_slot(h->st, (pid_t)r->pid, &app, &id)) {
        logs_stream *st = h->lg ? logs_stream_find(h->lg, app, (int)id) : NULL;
        if (st)
            logs_stream_line(st, loud ? LOGS_ERR : LOGS_OUT, line, len);
        return;
    }
    if (!state_pid_label(h->st, (pid_t)r->pid, &app, &id))
        return;
    double ts = hub_wall();
    agentlog_add(h->cmds.al, app, (int)id, (pid_t)r->pid, ts, loud ? LOGS_ERR : LOGS_OUT, line, len);
    logs_line l = {.ts = ts, .stream = loud ? LOGS_ERR : LOGS_OUT, .text = line,
                   .len = len < AGENTLOG_TEXT ? len : AGENTLOG_TEXT, .app = app, .id = (int)id, .pid = (pid_t)r->pid};
    if (h->ctl)
        control_publish_log(h->ctl, app, (int)id, &l);
}

/* Classifies, verifies and applies one datagram (on the loop thread). */
static void hub_on_datagram(void *ctx, const void *buf, size_t len, pid_t pid, int truncated)
{
    hub *h = ctx;
    double now = sampler_now();
    static report r;   /* 27 KiB (two histograms): static, the loop is single-threaded */

    if (truncated || len == 0) {
        state_count_bad(h->st);
        return;
    }
    if (hub_is_map(*(const unsigned char *)buf)) {
        if (report_decode(buf, len, &r) != REPORT_OK) {
            state_count_bad(h->st);
            return;
        }
        /* The pid key is the sender's claim; the kernel's credentials are the truth. */
        if (pid <= 0 || (pid_t)r.pid != pid) {
            state_count_spoofed(h->st);
            return;
        }
        state_apply_report(h->st, &r, now);
        if (r.type == REPORT_T_LOG)
            hub_agent_log(h, &r);
        return;
    }
    notify_msg m;
    if (pid > 0 && notify_parse(buf, len, &m))
        state_apply_notify(h->st, pid, &m, now);
    else
        state_count_bad(h->st);
}

/* ---- interval ----------------------------------------------------------- */

static void hub_stop(hub *h, int code);
static void hub_on_drained(void *ctx);

static double hub_wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Renders the interval as Prometheus text once for the HTTP endpoint and
 * the text file (not at all when neither is asked for).
 */
static void hub_publish_metrics(hub *h, size_t n, const hub_counters *c)
{
    if (!h->mx && !h->o->metrics_textfile)
        return;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f)
        return;
    int rc = headless_print(f, HEADLESS_PROM, h->cmds.views, n, c, hub_wall(), h->cmds.prom);
    if (fclose(f) != 0 || rc != 0 || !text) {
        free(text);
        return;
    }
    while (len > 1 && text[len - 1] == '\n' && text[len - 2] == '\n')
        len--;   /* the empty line that separates expositions on stdout */
    metrics_publish(h->mx, text, len);
    char err[512];
    if (h->o->metrics_textfile) {
        if (metrics_textfile(h->o->metrics_textfile, text, len, err, sizeof err) != 0) {
            if (!h->textfile_failed)
                fprintf(stderr, "drover: %s (said once; retried every interval)\n", err);
            h->textfile_failed = true;
        } else {
            h->textfile_failed = false;
        }
    }
    free(text);
}

/* The status line systemd shows: "2/2 online, 310 req/s". */
static void hub_service_line(hub *h, size_t n, char *out, size_t cap)
{
    int online = 0, total = 0;
    double rps = 0;
    for (size_t i = 0; i < n; i++) {
        const worker_view *w = &h->cmds.views[i];
        if (w->state == WS_GONE)
            continue;
        total++;
        online += w->state == WS_ONLINE;
        if (!isnan(w->req_per_s))
            rps += w->req_per_s;
    }
    snprintf(out, cap, "%d/%d online, %.0f req/s", online, total, rps);
}

/*
 * Each interval under systemd: READY=1 once the initial workers are all
 * online (a supervising hub whose worker gave up before that exits 1, so
 * the unit fails rather than waits), then the status line.
 */
static void hub_service_interval(hub *h, size_t n)
{
    if (!h->svc)
        return;
    char line[128];
    hub_service_line(h, n, line, sizeof line);
    if (!service_was_ready(h->svc) && h->sv) {
        int online, wanted, errored;
        supervise_count(h->sv, &online, &wanted, &errored);
        if (errored > 0) {
            fprintf(stderr, "drover: the initial start failed: a worker gave up (errored) before every worker was online\n");
            hub_stop(h, 1);
            return;
        }
        if (online >= wanted)
            service_ready(h->svc, line);
        return;
    }
    service_status(h->svc, line);
}

/* Prints the interval that the last sample round completed, and publishes it. */
static void hub_print(hub *h)
{
    ssize_t n = hub_commands_views(&h->cmds, sampler_now());
    if (n < 0) {
        fprintf(stderr, "drover: out of memory\n");
        hub_stop(h, 1);
        return;
    }
    hub_counters c = state_counters(h->st);
    if (prom_fold(h->cmds.prom, h->cmds.views, (size_t)n) != 0)
        fprintf(stderr, "drover: out of memory: this interval is left out of the Prometheus counters\n");
    if (h->ctl)
        control_publish_state(h->ctl);
    hub_publish_metrics(h, (size_t)n, &c);
    hub_service_interval(h, (size_t)n);
    if (!h->o->quiet && headless_print(stdout, h->o->format, h->cmds.views, (size_t)n, &c, hub_wall(), h->cmds.prom) != 0) {
        hub_stop(h, 0);   /* the reader went away (| head): a normal end */
        return;
    }
    if (h->o->count > 0 && ++h->printed >= h->o->count)
        hub_stop(h, 0);
}

/* ---- control socket ---------------------------------------------------- */

static void hub_on_stop_timer(uv_timer_t *t)
{
    hub *h = t->data;
    hub_stop(h, 0);
}

/* `drover stop`: stop once the reply has been queued, from the next loop turn. */
static void hub_stop_soon(void *ctx)
{
    hub *h = ctx;
    uv_timer_start(&h->timer, hub_on_stop_timer, 0, 0);
}

static void hub_on_log_line(void *ctx, const char *app, int id, const logs_line *line)
{
    hub *h = ctx;
    if (h->ctl)
        control_publish_log(h->ctl, app, id, line);
}

static int hub_on_apply(void *ctx, const char *file, json_t *reply, char *msg, size_t cap);
static int hub_on_upgrade(void *ctx, json_t *reply, char *msg, size_t cap);

/* Opens ctl.sock next to agent.sock. */
static int hub_setup_control(hub *h, const char *dir, char *err, size_t errcap)
{
    static const unsigned kinds[] = {CTL_HUB_MONIT, CTL_HUB_RUN, CTL_HUB_ATTACH};
    char path[PATHS_MAX + 16];
    if (paths_join(dir, "ctl.sock", path, sizeof path) != 0) {
        snprintf(err, errcap, "socket path too long");
        return -1;
    }
    json_t *hello = json_pack("{s:i, s:s, s:s, s:i, s:s, s:i, s:i, s:s?}", "hub_pid", (int)getpid(), "ns",
                              h->o->ns, "mode", ctl_hub_name(kinds[h->o->mode]), "interval_ms",
                              (int)h->o->interval_ms, "drover", DROVER_VERSION, "upgrades", h->upgrades,
                              "upgrade_failures", h->upgrade_failures, "upgrade_error",
                              h->upgrade_error[0] ? h->upgrade_error : NULL);
    h->cmds = (hub_commands){.st = h->st, .kind = kinds[h->o->mode], .interval_s = h->o->interval_ms / 1000.0,
                             .prom = prom_new(),
                             .stop_hub = hub_stop_soon, .apply = hub_on_apply, .upgrade = hub_on_upgrade,
                             .log_dir = h->logdir, .ctx = h, .al = agentlog_new()};
    if (!h->cmds.prom || !h->cmds.al) {
        json_decref(hello);
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    control_hooks hooks = hub_commands_hooks(&h->cmds);
    h->ctl = control_start(&h->loop, path, h->resume ? upgrade_fd(h->resume, "ctl") : -1, h->cmds.kind, hello,
                           &hooks, err, errcap);
    if (h->ctl && h->o->metrics && !(h->mx = metrics_start(&h->loop, h->o->metrics, err, errcap)))
        return -1;
    return h->ctl ? 0 : -1;
}

static void hub_on_sample(void *ctx, const sampler_result *r)
{
    hub *h = ctx;
    if (h->stopping)
        return;
    for (size_t i = 0; i < r->n; i++)
        state_apply_sample(h->st, &r->s[i], r->desc + r->desc_off[i], r->desc_len[i], r->at);
    state_apply_hub_sample(h->st, r->self, r->at);
    state_apply_host_sample(h->st, r->host);
    if (h->at) {
        if (!r->parent_alive) {
            fprintf(stderr, "drover: the master (pid %d) has exited\n", (int)h->o->master);
            hub_stop(h, 1);
            return;
        }
        attach_on_children(h->at, r->children, r->nchildren, r->s, r->n);
    }
    /* Datagrams lost to a full ingest queue are not added to dropped_total:
     * each shows up there anyway as a sequence gap of its sender. */
    ingest_flush(h->in);
    if (h->sv)
        supervise_tick(h->sv);
    state_tick(h->st, sampler_now(), h->o->interval_ms / 1000.0);
    hub_print(h);
}

/* Starts a sample round over every known pid. */
static void hub_sample(hub *h)
{
    size_t n = state_count(h->st);
    if (n > h->pids_cap) {
        pid_t *np = realloc(h->pids, n * sizeof *np);
        if (!np)
            return;
        h->pids = np;
        h->pids_cap = n;
    }
    n = state_pids(h->st, h->pids, n);
    ingest_flush(h->in);
    if (sampler_start(h->sm, h->pids, n, hub_on_sample, h) != 0) {
        /* The previous round is still running (a slow /proc): skip a beat
         * rather than queue rounds behind each other. */
    }
}

static void hub_on_timer(uv_timer_t *t)
{
    hub_sample(t->data);
}

/* A first round at start, so the first printed interval already has CPU %. */
static void hub_on_first_sample(void *ctx, const sampler_result *r)
{
    hub *h = ctx;
    state_apply_hub_sample(h->st, r->self, r->at);
    state_apply_host_sample(h->st, r->host);
    if (h->at && r->parent_alive)
        attach_on_children(h->at, r->children, r->nchildren, r->s, r->n);
}

/* ---- signals and shutdown ----------------------------------------------- */

static void hub_on_close(uv_handle_t *hd)
{
    (void)hd;
}

/* Ends the loop: closes every handle; uv_run returns once they are closed. */
static void hub_stop(hub *h, int code)
{
    if (h->stopping)
        return;
    if (!h->draining)
        service_stopping(h->svc);
    if (h->sv && !h->draining) {
        /* Workers first: the loop must keep running (SIGCHLD, timers, pipes)
         * until the last one is reaped; hub_on_drained comes back here. */
        h->draining = true;
        h->exit_code = code;
        supervise_stop_all(h->sv, hub_on_drained, h);
        return;
    }
    if (h->sv && !h->drained) {
        /* Asked again while workers are still stopping (a second Ctrl-C):
         * do not wait for the kill-timeout, but still reap them all first. */
        supervise_hurry(h->sv);
        return;
    }
    h->stopping = true;
    if (!h->draining)
        h->exit_code = code;
    uv_close((uv_handle_t *)&h->timer, hub_on_close);
    uv_close((uv_handle_t *)&h->upgrade_timer, hub_on_close);
    for (size_t i = 0; i < HUB_NSIGNALS; i++)
        uv_close((uv_handle_t *)&h->sig[i], hub_on_close);
    ingest_stop(h->in);
    h->in = NULL;
    if (h->ctl) {
        control_stop(h->ctl);
        h->ctl = NULL;
    }
    metrics_stop(h->mx);
    h->mx = NULL;
    service_stop(h->svc);
    h->svc = NULL;
    if (h->sv) {
        supervise_free(h->sv);
        h->sv = h->cmds.sv = NULL;
    }
    lgroup_free(h->group);   /* after the slots closed their sockets */
    h->group = NULL;
    apply_free(&h->ap);
    if (h->at) {
        attach_free(h->at);
        h->at = h->cmds.at = NULL;
    }
    if (h->lg) {
        logs_free(h->lg);
        h->lg = h->cmds.lg = NULL;
    }
}

static void hub_on_drained_timer(uv_timer_t *t)
{
    hub *h = t->data;
    hub_stop(h, h->exit_code);
}

/* The last worker is gone. We are deep inside the supervisor's reap loop
 * here, so finish on the next loop pass, when freeing it is safe. */
static void hub_on_drained(void *ctx)
{
    hub *h = ctx;
    h->drained = true;
    uv_timer_start(&h->timer, hub_on_drained_timer, 0, 0);
}

/* One line per supervisor/attach event: on stderr (journald, docker logs…)
 * and to every view. */
static void hub_on_event(void *ctx, const ctl_event *e)
{
    hub *h = ctx;
    fprintf(stderr, "drover: %s\n", e->text);
    if (e->kind == CTL_EV_RELOAD && e->app && (e->phase == CTL_PHASE_DONE || e->phase == CTL_PHASE_ABORTED))
        prom_count_reload(h->cmds.prom, e->app, e->phase == CTL_PHASE_DONE);
    if (h->svc && e->kind == CTL_EV_RELOAD && service_was_ready(h->svc)) {
        if (e->phase == CTL_PHASE_STARTED)
            service_reloading(h->svc);
        else if ((e->phase == CTL_PHASE_DONE || e->phase == CTL_PHASE_ABORTED) && h->sv && !supervise_reloading(h->sv))
            service_ready(h->svc, NULL);
    }
    if (h->ctl)
        control_publish_event(h->ctl, e);
}

/* An event that is only a line of text (a refused signal-driven command). */
static void hub_on_note(hub *h, ctl_event_kind kind, const char *app, const char *text)
{
    ctl_event e = ctl_event_make(kind, CTL_PHASE_NONE, app, -1, 0);
    e.text = text;
    hub_on_event(h, &e);
}

static void hub_on_ready(void *ctx, uint32_t key, pid_t pid)
{
    hub *h = ctx;
    if (h->sv)
        supervise_on_ready(h->sv, key, pid);
    if (h->at)
        attach_on_ready(h->at, pid);
}

/*
 * Applies file to the hub's apps: one line per app on stderr and to views
 * (as events), the summary in msg. reply (may be NULL) gets "changes" and
 * "reloading". Returns apply_file's result.
 */
static int hub_apply_file(hub *h, const char *file, json_t *reply, char *msg, size_t cap)
{
    json_t *changes = json_array(), *reloading = json_array();
    int rc = apply_file(&h->ap, file, changes, reloading, msg, cap);
    size_t i;
    json_t *c;
    json_array_foreach(changes, i, c) {
        char line[640];
        const char *app = json_string_value(json_object_get(c, "app"));
        const char *keys = json_string_value(json_object_get(c, "keys"));
        snprintf(line, sizeof line, "apply: %s: %s%s%s%s: %s", app, json_string_value(json_object_get(c, "action")),
                 keys ? " (" : "", keys ? keys : "", keys ? " changed)" : "",
                 json_string_value(json_object_get(c, "msg")));
        if (strcmp(json_string_value(json_object_get(c, "action")), "unchanged") != 0)
            hub_on_note(h, CTL_EV_APPLY, strcmp(app, "[hub]") == 0 ? NULL : app, line);
    }
    hub_on_note(h, rc < 0 ? CTL_EV_ERROR : CTL_EV_APPLY, NULL, msg);
    if (reply) {
        json_object_set_new(reply, "changes", changes);
        json_object_set_new(reply, "reloading", reloading);
        json_object_set_new(reply, "failed", json_boolean(rc != 0));
    } else {
        json_decref(changes);
        json_decref(reloading);
    }
    return rc;
}

/* The `apply` command (hub_commands): the file named in the request. */
static int hub_on_apply(void *ctx, const char *file, json_t *reply, char *msg, size_t cap)
{
    hub *h = ctx;
    if (!h->ap.have) {
        snprintf(msg, cap, "this hub was not started from a config file: start it with 'drover up'");
        return -1;
    }
    return hub_apply_file(h, file, reply, msg, cap) < 0 ? -1 : 0;
}

/* ---- drover upgrade ------------------------------------------------------ */

/*
 * The state that crosses the exec (upgrade.h), as a document. final: the
 * real one (descriptors kept across exec, pipes no longer read, agent is
 * the detached report socket); else a dry run for the new binary's check.
 * NULL with why in err.
 */
static json_t *hub_upgrade_doc(hub *h, bool final, int agent, char *err, size_t cap)
{
    json_t *(*fd)(int) = final ? upgrade_keep_fd : upgrade_fd_json;
    pid_t gpid = 0;
    int gfd = spawn_guard_save(&gpid);
    json_t *group = json_null();
    if (h->group && !(group = lgroup_save(h->group, final, err, cap)))
        return NULL;
    json_t *apps = h->sv ? supervise_save(h->sv, final, err, cap) : json_array();
    if (!apps) {
        json_decref(group);
        return NULL;
    }
    size_t i;
    json_t *a;
    json_array_foreach(apps, i, a) {
        json_t *lfd = json_object_get(a, "listen_fd");
        if (final && json_is_integer(lfd))
            upgrade_keep_fd((int)json_integer_value(lfd));
    }
    json_t *doc = json_pack("{s:s, s:i, s:s, s:i, s:i, s:o, s:o, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "format",
                            UPGRADE_FORMAT, "version", UPGRADE_VERSION, "from", DROVER_VERSION, "upgrades",
                            h->upgrades, "failures", h->upgrade_failures, "lock", fd(h->lock_fd), "guard",
                            gfd >= 0 ? fd(gfd) : json_null(), "guard_pid", (int)gpid, "agent", fd(agent), "ctl",
                            fd(control_listen_fd(h->ctl)), "group", group, "apps", apps, "logs",
                            h->lg ? logs_save(h->lg, final) : json_array(), "inherited", listen_save(final));
    if (doc) {
        json_object_set_new(doc, "state", state_save(h->st));
        if (h->cmds.prom)
            json_object_set_new(doc, "prom", prom_save(h->cmds.prom));
    }
    if (!doc)
        snprintf(err, cap, "out of memory");
    return doc;
}

/*
 * The exec, a loop turn after `upgrade` was answered: hand everything over
 * and become the new binary. If even the exec fails, the old binary is
 * executed again the same way (from the file we run, renamed over or not),
 * told why, so the hub goes on as it was.
 */
static void hub_upgrade_exec(uv_timer_t *t)
{
    hub *h = t->data;
    char err[512], err2[512];
    h->upgrade_due = false;
    if (h->at && attach_busy(h->at))
        snprintf(err, sizeof err, "a restart or reload of the master's workers began");
    if (h->stopping || h->draining || (h->sv && supervise_busy(h->sv, err, sizeof err)) ||
        (h->at && attach_busy(h->at))) {
        ctl_event e = ctl_event_make(CTL_EV_UPGRADE, CTL_PHASE_ABORTED, NULL, -1, 0);
        e.text = h->stopping || h->draining ? "upgrade not done: the hub is stopping" : err;
        hub_on_event(h, &e);
        return;
    }
    service_reloading(h->svc);
    /* Only what the blob names crosses the exec: libraries' descriptors
     * opened without O_CLOEXEC (libproc2's /proc/stat) would pile up, one
     * set per upgrade. The blob clears the flag on its own below. */
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    int agent = ingest_detach(h->in);
    h->in = NULL;
    json_t *doc = hub_upgrade_doc(h, true, agent, err, sizeof err);
    int bfd = doc ? upgrade_blob_write(doc, err, sizeof err) : -1;
    json_decref(doc);
    if (bfd < 0 || self < 0) {
        /* Nothing left to go on with in this image (ingest detached, pipes
         * stopped): the guard ends the workers with us. */
        fprintf(stderr, "drover: upgrade failed after the point of no return: %s\n",
                self < 0 ? "cannot open /proc/self/exe" : err);
        _exit(1);
    }
    fflush(stdout);
    fflush(stderr);
    upgrade_exec(h->exe, -1, self, hub_argv, bfd, NULL, err, sizeof err);
    upgrade_exec(h->exe, self, -1, hub_argv, bfd, err, err2, sizeof err2);
    fprintf(stderr, "drover: upgrade failed (%s) and going back failed too (%s)\n", err, err2);
    _exit(1);
}

/*
 * `drover upgrade` (and SIGUSR2): refuses while the supervisor is busy or
 * the new binary does not pass its check run on a dry-run blob; else
 * schedules the exec after this reply and says so. reply may be NULL.
 */
static int hub_on_upgrade(void *ctx, json_t *reply, char *msg, size_t cap)
{
    hub *h = ctx;
    char err[512], version[64];
    if (h->stopping || h->draining) {
        snprintf(msg, cap, "upgrade refused: the hub is stopping");
        return -1;
    }
    if (h->upgrade_due) {
        snprintf(msg, cap, "upgrade refused: an upgrade is already under way");
        return -1;
    }
    if (h->sv && supervise_busy(h->sv, err, sizeof err)) {
        snprintf(msg, cap, "upgrade refused: %s", err);
        return -1;
    }
    if (h->at && attach_busy(h->at)) {
        snprintf(msg, cap, "upgrade refused: a restart or reload of the master's workers is in progress; "
                 "upgrade once it ended");
        return -1;
    }
    if (!hub_argv || !h->exe[0]) {
        snprintf(msg, cap, "upgrade refused: this hub does not know its own binary");
        return -1;
    }
    json_t *doc = hub_upgrade_doc(h, false, ingest_fd(h->in), err, sizeof err);
    int bfd = doc ? upgrade_blob_write(doc, err, sizeof err) : -1;
    json_decref(doc);
    if (bfd < 0) {
        snprintf(msg, cap, "upgrade refused: %s", err);
        return -1;
    }
    int rc = upgrade_check(h->exe, bfd, version, sizeof version, err, sizeof err);
    close(bfd);
    if (rc != 0) {
        snprintf(msg, cap, "upgrade refused: %s; nothing changed, the running hub (drover %s) goes on",
                 err, DROVER_VERSION);
        return -1;
    }
    snprintf(msg, cap, "upgrading the hub (pid %d) from drover %s to drover %s (%s)", (int)getpid(),
             DROVER_VERSION, version, h->exe);
    if (reply)
        json_object_update_new(reply, json_pack("{s:s, s:s, s:s, s:i, s:i}", "from", DROVER_VERSION, "to",
                                                version, "exe", h->exe, "upgrades", h->upgrades,
                                                "upgrade_failures", h->upgrade_failures));
    ctl_event e = ctl_event_make(CTL_EV_UPGRADE, CTL_PHASE_STARTED, NULL, -1, 0);
    e.text = msg;
    hub_on_event(h, &e);
    h->upgrade_due = true;
    uv_timer_start(&h->upgrade_timer, hub_upgrade_exec, 20, 0);
    return 0;
}

static void hub_on_signal(uv_signal_t *s, int signum)
{
    hub *h = s->data;
    char msg[256];
    switch (signum) {
    case SIGCHLD:
        /* What the dead said before dying is applied before its exit. */
        ingest_flush(h->in);
        if (h->sv)
            supervise_reap(h->sv);
        return;
    case SIGHUP:
        /* A hub started from a file rereads and applies it. */
        if (h->ap.have) {
            hub_apply_file(h, h->ap.cur.file, NULL, msg, sizeof msg);
            return;
        }
        /* Rolling reload; a monitor has nothing to reload, and must never
         * die of a hangup either way. */
        if (h->sv && supervise_reload_soon(h->sv, msg, sizeof msg) != 0)
            hub_on_note(h, CTL_EV_ERROR, NULL, msg);
        if (h->at && attach_reload(h->at, msg, sizeof msg) != 0)
            hub_on_note(h, CTL_EV_ERROR, NULL, msg);
        return;
    case SIGUSR1:
        if (h->lg)
            logs_reopen(h->lg);
        return;
    case SIGUSR2:
        /* drover upgrade, from a signal: the outcome is an event (and the log) */
        if (hub_on_upgrade(h, NULL, msg, sizeof msg) != 0) {
            ctl_event e = ctl_event_make(CTL_EV_UPGRADE, CTL_PHASE_ABORTED, NULL, -1, 0);
            e.text = msg;
            hub_on_event(h, &e);
        }
        return;
    case SIGTTIN:
    case SIGTTOU:
        if (h->sv) {
            int rc = supervise_scale_by(h->sv, h->o->app, signum == SIGTTIN ? 1 : -1, msg, sizeof msg);
            hub_on_note(h, rc == 0 ? CTL_EV_SCALE : CTL_EV_ERROR, h->o->app, msg);
        }
        if (h->at && attach_scale(h->at, 0, true, signum == SIGTTIN ? 1 : -1, msg, sizeof msg) != 0)
            hub_on_note(h, CTL_EV_ERROR, attach_app(h->at), msg);
        return;
    default:
        hub_stop(h, 0);
    }
}

void hub_default_log_dir(const char *ns, char *out, size_t cap)
{
    const char *sysd = getenv("LOGS_DIRECTORY");   /* systemd's LogsDirectory= */
    const char *xdg = getenv("XDG_STATE_HOME");
    const char *home = getenv("HOME");
    if (!home || !*home) {
        /* systemd system services often run without HOME */
        struct passwd *pw = getpwuid(getuid());
        home = pw ? pw->pw_dir : NULL;
    }
    if (sysd && *sysd)
        snprintf(out, cap, "%s/%s", sysd, ns);
    else if (xdg && *xdg)
        snprintf(out, cap, "%s/drover/%s/logs", xdg, ns);
    else if (home && *home)
        snprintf(out, cap, "%s/.local/state/drover/%s/logs", home, ns);
    else
        snprintf(out, cap, "/tmp/drover-%u/%s/logs", (unsigned)getuid(), ns);
}


bool hub_is_node(const char *cmd)
{
    const char *base = strrchr(cmd, '/');
    base = base ? base + 1 : cmd;
    return strcmp(base, "node") == 0 || strcmp(base, "nodejs") == 0;
}

/*
 * Finds the Node agent: $DROVER_NODE_AGENT, else node/index.js beside the
 * drover binary (the build tree), else ../lib/drover/node/index.js from it
 * (an install under any PREFIX), else the copy under the configured PREFIX. Returns 0 with
 * the path in out, or -1 when there is none.
 */
static int hub_node_agent(char *out, size_t cap)
{
    const char *env = getenv("DROVER_NODE_AGENT");
    if (env && *env) {
        snprintf(out, cap, "%s", env);
        return access(out, R_OK);
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            if (snprintf(out, cap, "%s/node/index.js", exe) < (int)cap && access(out, R_OK) == 0)
                return 0;   /* the build tree */
            if (snprintf(out, cap, "%s/../lib/drover/node/index.js", exe) < (int)cap && access(out, R_OK) == 0)
                return 0;   /* installed under any PREFIX */
        }
    }
    snprintf(out, cap, "%s/node/index.js", DROVER_LIBDIR);
    return access(out, R_OK);
}

/* Sets up what `drover up` adds: the file's logs settings, supervisor, every app. */
static int hub_setup_config(hub *h, const char *sock, char *err, size_t errcap)
{
    const hub_options *o = h->o;
    config cfg;
    char logdir[4096];
    if (config_load(o->config_file, &cfg, err, errcap) != 0)
        return -1;
    if (o->log_dir)   /* the command line wins over the file */
        snprintf(logdir, sizeof logdir, "%s", o->log_dir);
    else if (cfg.log_dir)
        snprintf(logdir, sizeof logdir, "%s", cfg.log_dir);
    else
        hub_default_log_dir(o->ns, logdir, sizeof logdir);
    if (paths_mkdirs(logdir) != 0) {
        snprintf(err, errcap, "cannot create the log directory %.300s: %s", logdir, strerror(errno));
        config_free(&cfg);
        return -1;
    }
    snprintf(h->logdir, sizeof h->logdir, "%s", logdir);
    logs_config lc = {.dir = logdir, .echo = o->echo_logs && !o->background, .max_bytes = cfg.log_max_size,
                      .keep = cfg.log_keep, .timestamps = cfg.log_timestamps,
                      .json = cfg.log_format == CONFIG_LOG_JSON};
    h->lg = logs_new(&h->loop, &lc, err, errcap);
    if (h->lg && h->resume)
        logs_restore(h->lg, json_object_get(h->resume, "logs"), err, errcap);
    h->sv = h->lg ? supervise_new(&h->loop, h->st, hub_on_event, h) : NULL;
    if (h->sv && h->resume)
        supervise_resume(h->sv, json_object_get(h->resume, "apps"));
    if (!h->sv) {
        if (h->lg)
            snprintf(err, errcap, "out of memory");
        config_free(&cfg);
        return -1;
    }
    logs_on_line(h->lg, hub_on_log_line, h);
    h->cmds.lg = h->lg;
    h->cmds.sv = h->sv;
    h->ap = (hub_apply){.loop = &h->loop, .sv = h->sv, .lg = h->lg, .agent_socket = sock, .interval_ms = o->interval_ms,
                        .prom = h->cmds.prom,
                        .node_agent = !o->no_agent && hub_node_agent(h->node_agent, sizeof h->node_agent) == 0
                                          ? h->node_agent : NULL};
    return apply_start(&h->ap, &cfg, err, errcap);
}

/* Sets up what `drover run` adds: listening socket, logs, supervisor, workers. */
static int hub_setup_run(hub *h, const char *sock, char *err, size_t errcap)
{
    const hub_options *o = h->o;
    char path[4096], logdir[4096];
    if (o->config_file)
        return hub_setup_config(h, sock, err, errcap);
    if (spawn_resolve(o->argv[0], path, sizeof path) != 0) {
        snprintf(err, errcap, "%s: %s", o->argv[0],
                 errno == ENOENT ? "command not found" : strerror(errno));
        return -1;
    }
    if (h->group) {
        /* an upgrade's: the group as it was */
    } else if (o->listen && o->balance != HUB_BALANCE_SHARED && lgroup_applies(o->listen)) {
        h->group = lgroup_open(&h->loop, o->listen, err, errcap);
        if (!h->group)
            return -1;
    } else if (o->listen) {
        if (o->balance == HUB_BALANCE_REUSEPORT)
            fprintf(stderr, "drover: --balance reuseport is for TCP addresses; every worker shares %s\n", o->listen);
        h->listen_fd = listen_open(o->listen, err, errcap);
        if (h->listen_fd < 0)
            return -1;
    }
    if (o->log_dir)
        snprintf(logdir, sizeof logdir, "%s", o->log_dir);
    else
        hub_default_log_dir(o->ns, logdir, sizeof logdir);
    if (paths_mkdirs(logdir) != 0) {
        snprintf(err, errcap, "cannot create the log directory %.300s: %s", logdir, strerror(errno));
        return -1;
    }
    snprintf(h->logdir, sizeof h->logdir, "%s", logdir);
    logs_config lc = {.dir = logdir, .echo = o->echo_logs && !o->background};
    if (o->run_app) {   /* --log-timestamps, --log-format…: one app, so they are the manager's (0: its default) */
        lc.timestamps = o->run_app->log_timestamps;
        lc.json = o->run_app->log_format == CONFIG_LOG_JSON;
        lc.max_bytes = o->run_app->log_max_size;
        lc.keep = o->run_app->log_keep;
    }
    h->lg = logs_new(&h->loop, &lc, err, errcap);
    if (!h->lg)
        return -1;
    if (h->resume)
        logs_restore(h->lg, json_object_get(h->resume, "logs"), err, errcap);
    logs_on_line(h->lg, hub_on_log_line, h);
    h->cmds.lg = h->lg;
    h->sv = h->cmds.sv = supervise_new(&h->loop, h->st, hub_on_event, h);
    if (!h->sv) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    if (h->resume)
        supervise_resume(h->sv, json_object_get(h->resume, "apps"));
    char node_agent[4096];
    bool preload = !o->no_agent && hub_is_node(o->argv[0]) &&
                   hub_node_agent(node_agent, sizeof node_agent) == 0;
    supervise_app_spec spec = {
        .listen_spec = o->listen, .node_agent = preload ? node_agent : NULL,
        .app = o->app, .path = path, .argv = o->argv, .instances = o->instances,
        .listen_fd = h->listen_fd, .group = h->group, .listen_name = o->app,
        .kill_timeout_ms = o->kill_timeout_ms, .ready_timeout_ms = o->ready_timeout_ms,
        .max_memory = o->max_memory, .agent_socket = sock, .interval_ms = o->interval_ms,
        .lg = h->lg,
    };
    prom_add_app(h->cmds.prom, o->app, o->max_memory);
    if (!o->run_app)
        return supervise_add_app(h->sv, &spec, err, errcap);
    /* --env, --cwd, --user…: the same settings as a file's keys */
    char **env = config_env(o->run_app);
    if (!env) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    apply_app_settings(o->run_app, &spec);
    spec.env = env;
    int rc = supervise_add_app(h->sv, &spec, err, errcap);
    config_env_free(env);
    return rc;
}

/* The basename of pid's executable into out ("" when unreadable): readlink
 * reads the link itself, it follows nothing. */
static void hub_exe_base(pid_t pid, char *out, size_t cap)
{
    char link[64], target[4096];
    out[0] = '\0';
    snprintf(link, sizeof link, "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0)
        return;
    target[n] = '\0';
    const char *base = strrchr(target, '/');
    base = base ? base + 1 : target;
    size_t len = strlen(base);
    if (len < cap)
        memcpy(out, base, len + 1);   /* a longer name matches no profile anyway */
}

/* Sets up what `drover attach` adds: the master's children as workers,
 * spoken to in its family's profile (options override each signal). */
static int hub_setup_attach(hub *h, char *err, size_t errcap)
{
    const hub_options *o = h->o;
    proc_sample m;
    pid_t pid = o->master;
    if (sampler_read(h->sm, &pid, 1, &m) != 0 || !m.alive) {
        snprintf(err, errcap, "no process with pid %d", (int)pid);
        return -1;
    }
    char exe[256], text[160];
    hub_exe_base(pid, exe, sizeof exe);
    attach_profile p = *attach_profile_find(m.comm, exe);
    bool over = o->kill_signal || o->reload_mode >= 0 || o->reload_signal || o->scale_up || o->scale_down;
    if (o->kill_signal)
        p.kill_signal = o->kill_signal;
    if (o->reload_mode >= 0 && (attach_reload_mode)o->reload_mode != p.reload) {
        p.reload = (attach_reload_mode)o->reload_mode;
        /* the other mode's signal: HUP to a master, the kill signal to a child */
        p.reload_signal = p.reload == ATTACH_RELOAD_MASTER ? SIGHUP : p.kill_signal;
    } else if (p.reload == ATTACH_RELOAD_ONE && o->kill_signal) {
        p.reload_signal = p.kill_signal;   /* ONE stops each child as kill does */
    }
    if (o->reload_signal)
        p.reload_signal = o->reload_signal;
    if (o->scale_up)
        p.scale_up = o->scale_up;
    if (o->scale_down)
        p.scale_down = o->scale_down;
    attach_profile_text(&p, text, sizeof text);
    char comm[sizeof m.comm * 4];
    text_sanitize(m.comm, comm, sizeof comm);
    fprintf(stderr, "drover: attached to %s (pid %d): profile %s%s: %s\n", comm, (int)pid, p.name,
            over ? " with options" : "", text);
    h->at = h->cmds.at = attach_new(&h->loop, h->st, pid, m.comm, o->app ? o->app : m.comm, &p,
                       o->kill_timeout_ms, o->ready_timeout_ms, hub_on_event, h);
    if (!h->at) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    prom_add_app(h->cmds.prom, o->app ? o->app : m.comm, 0);   /* its reload counters, at 0 */
    sampler_watch(h->sm, pid);
    return 0;
}

/*
 * A hub started by `drover upgrade` (UPGRADE_ENV set): reads and checks the
 * blob into h->resume and takes the counts along. A blob this binary
 * refuses sends the process back to the binary it came from (never
 * returns then); with nothing to go back to, returns -1.
 */
static int hub_resume_begin(hub *h)
{
    char failed[512], err[512], why[700];
    int rollback = -1;
    int bfd = upgrade_inherited(&rollback, failed, sizeof failed);
    if (bfd < 0)
        return 0;
    h->resume = upgrade_blob_read(bfd, err, sizeof err);
    if (!h->resume) {
        if (rollback >= 0 && !failed[0]) {
            snprintf(why, sizeof why, "the new binary refused the hub's state: %s", err);
            upgrade_exec(NULL, rollback, -1, hub_argv, bfd, why, err, sizeof err);
        }
        fprintf(stderr, "drover: cannot resume the hub after an upgrade: %s\n", err);
        return -1;
    }
    close(bfd);
    h->upgrades = (int)json_integer_value(json_object_get(h->resume, "upgrades"));
    h->upgrade_failures = (int)json_integer_value(json_object_get(h->resume, "failures"));
    if (failed[0]) {
        h->upgrade_failures++;
        snprintf(h->upgrade_error, sizeof h->upgrade_error, "%s", failed);
    } else {
        h->upgrades++;
    }
    if (rollback >= 0)
        close(rollback);
    listen_restore(json_object_get(h->resume, "inherited"));
    /* The listening sockets, by the spec each was opened for: the setup's
     * listen_open calls take them back. */
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(h->resume, "apps"), i, a) {
        int fd = upgrade_fd(a, "listen_fd");
        const char *spec = json_string_value(json_object_get(a, "listen_spec"));
        if (fd >= 0 && (!spec || listen_hand_over(spec, fd) != 0))
            close(fd);
        /* a file app's own reuseport group: the setup's lgroup_open takes it back */
        json_t *ag = json_object_get(a, "group");
        if (!ag || json_is_null(ag))
            continue;
        lgroup *g = lgroup_restore(&h->loop, ag, err, sizeof err);
        if (!g) {
            fprintf(stderr, "drover: cannot resume the hub after an upgrade: %s\n", err);
            return -1;
        }
        if (!spec || lgroup_hand_over(spec, g) != 0)
            lgroup_free(g);
    }
    json_t *g = json_object_get(h->resume, "group");
    if (g && !json_is_null(g) && !(h->group = lgroup_restore(&h->loop, g, err, sizeof err))) {
        fprintf(stderr, "drover: cannot resume the hub after an upgrade: %s\n", err);
        return -1;
    }
    return 0;
}

/* The upgrade is through: what was not taken back closes; one event says how it went. */
static void hub_resume_end(hub *h)
{
    if (!h->resume)
        return;
    if (h->sv)
        supervise_resume_end(h->sv);
    listen_hand_over_end();
    lgroup_hand_over_end();
    state_restore(h->st, json_object_get(h->resume, "state"));
    if (h->cmds.prom && json_is_object(json_object_get(h->resume, "prom")))
        prom_restore(h->cmds.prom, json_object_get(h->resume, "prom"));
    char text[900];
    ctl_event e;
    if (h->upgrade_error[0]) {
        e = ctl_event_make(CTL_EV_UPGRADE, CTL_PHASE_ABORTED, NULL, -1, 0);
        snprintf(text, sizeof text, "upgrade failed, the hub went back to drover %s: %s", DROVER_VERSION,
                 h->upgrade_error);
    } else {
        e = ctl_event_make(CTL_EV_UPGRADE, CTL_PHASE_DONE, NULL, -1, 0);
        snprintf(text, sizeof text, "upgraded: the hub (pid %d) runs drover %s (was %s), upgrade %d",
                 (int)getpid(), DROVER_VERSION, json_string_value(json_object_get(h->resume, "from")),
                 h->upgrades);
    }
    e.text = text;
    hub_on_event(h, &e);
    json_decref(h->resume);
    h->resume = NULL;
}

int hub_run(const hub_options *o)
{
    hub h = {.o = o, .lock_fd = -1, .listen_fd = -1};
    char dir[PATHS_MAX], sock[PATHS_MAX], err[512];

    /* The binary at our path now: what an upgrade executes (after a rename
     * over it, /proc/self/exe names the old file, "(deleted)"). */
    ssize_t xl = readlink("/proc/self/exe", h.exe, sizeof h.exe - 1);
    h.exe[xl > 0 ? xl : 0] = '\0';
    uv_loop_init(&h.loop);
    if (hub_resume_begin(&h) != 0) {
        uv_loop_close(&h.loop);
        return 1;
    }

    if (paths_dir(o->socket_dir, o->ns, true, dir, sizeof dir, err, sizeof err) != 0 ||
        paths_join(dir, "agent.sock", sock, sizeof sock) != 0) {
        fprintf(stderr, "drover: %s\n", err);
        uv_loop_close(&h.loop);
        return 1;
    }
    h.lock_fd = h.resume ? upgrade_fd(h.resume, "lock") : hub_lock(dir, sock, err, sizeof err);
    if (h.lock_fd < 0) {
        fprintf(stderr, "drover: %s\n", err);
        uv_loop_close(&h.loop);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (o->mode == HUB_RUN) {
        /* The guard must be forked before any thread exists; orphans of
         * workers are reparented to us (subreaper) so that we reap them. */
        if (h.resume) {
            spawn_guard_adopt(upgrade_fd(h.resume, "guard"),
                              (pid_t)json_integer_value(json_object_get(h.resume, "guard_pid")));
        } else if (spawn_guard_start(err, sizeof err) != 0) {
            fprintf(stderr, "drover: %s\n", err);
            close(h.lock_fd);
            uv_loop_close(&h.loop);
            return 1;
        }
        prctl(PR_SET_CHILD_SUBREAPER, 1);
    }
    /* The thread pool only runs the sampler, one round at a time. One thread
     * is enough, and each pool thread costs a stack plus ~260 KiB of buffers
     * that libproc2 keeps per thread. */
    setenv("UV_THREADPOOL_SIZE", "1", 0);
    h.st = state_new();
    h.sm = h.st ? sampler_new(&h.loop, err, sizeof err) : NULL;
    /* PSS makes the kernel walk every mapping of a process: at most once
     * every HUB_PSS_EVERY_MS per process, whatever the interval. */
    if (h.sm)
        sampler_pss_every(h.sm, (uint32_t)((HUB_PSS_EVERY_MS + o->interval_ms - 1) / o->interval_ms));
    h.in = h.sm ? ingest_adopt(&h.loop, sock, h.resume ? upgrade_fd(h.resume, "agent") : -1, hub_on_datagram, &h,
                               err, sizeof err) : NULL;
    if (h.in)
        state_set_ready_hook(h.st, hub_on_ready, &h);
    if (!h.in || hub_setup_control(&h, dir, err, sizeof err) != 0 || (o->mode == HUB_RUN && hub_setup_run(&h, sock, err, sizeof err) != 0) ||
        (o->mode == HUB_ATTACH && hub_setup_attach(&h, err, sizeof err) != 0)) {
        fprintf(stderr, "drover: %s\n", h.st ? err : "out of memory");
        /* Workers started before the failure die with the guard's pipe
         * (spawn_guard_stop below). */
        if (h.in)
            ingest_stop(h.in);
        if (h.ctl)
            control_stop(h.ctl);
        metrics_stop(h.mx);
        if (h.sv)
            supervise_free(h.sv);
        lgroup_free(h.group);
        apply_free(&h.ap);
        if (h.lg)
            logs_free(h.lg);
        sampler_free(h.sm);
        uv_run(&h.loop, UV_RUN_DEFAULT);
        hub_commands_free(&h.cmds);
        state_free(h.st);
        uv_loop_close(&h.loop);
        spawn_guard_stop();
        if (h.listen_fd >= 0)
            close(h.listen_fd);
        close(h.lock_fd);
        return 1;
    }

    h.svc = service_start(&h.loop);
    if (o->mode != HUB_RUN || h.resume)   /* resumed: every worker kept is online */
        service_ready(h.svc, o->mode == HUB_ATTACH ? "attached" : o->mode == HUB_RUN ? "upgraded" : "monitoring");
    hub_resume_end(&h);

    if (o->background) {
        /* Set up without error: from now on nobody watches our terminal
         * output (a console may be drawing on it). */
        char path[4200];
        int fd = -1;
        if (h.logdir[0] && snprintf(path, sizeof path, "%s/hub.log", h.logdir) < (int)sizeof path)
            fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0640);
        if (fd < 0)
            fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
    }

    static const int sigs[HUB_NSIGNALS] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU, SIGCHLD};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        uv_signal_init(&h.loop, &h.sig[i]);
        h.sig[i].data = &h;
        uv_signal_start(&h.sig[i], hub_on_signal, sigs[i]);
    }
    /* A worker that exited before the SIGCHLD handler existed left only a
     * zombie and no signal to act on: reap now what is already there. */
    if (h.sv)
        supervise_reap(h.sv);
    uv_timer_init(&h.loop, &h.timer);
    h.timer.data = &h;
    uv_timer_init(&h.loop, &h.upgrade_timer);
    h.upgrade_timer.data = &h;
    uv_timer_start(&h.timer, hub_on_timer, o->interval_ms, o->interval_ms);
    sampler_start(h.sm, NULL, 0, hub_on_first_sample, &h);

    uv_run(&h.loop, UV_RUN_DEFAULT);

    sampler_free(h.sm);
    uv_run(&h.loop, UV_RUN_DEFAULT);   /* lets an in-flight sample round finish */
    if (uv_loop_close(&h.loop) != 0)
        fprintf(stderr, "drover: warning: event loop closed with handles open\n");
    state_free(h.st);
    hub_commands_free(&h.cmds);
    free(h.pids);
    spawn_guard_stop();
    if (h.listen_fd >= 0)
        close(h.listen_fd);
    close(h.lock_fd);
    return h.exit_code;
}
