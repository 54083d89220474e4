/*
 * console.c — the interactive console's loop: ncursesw on a libuv loop.
 *
 * The console is a pure view: everything it shows comes from the hub's
 * control socket through the asynchronous client (tui/client.h) into the
 * model (tui/console_model.h), and every key that acts sends the same
 * request as the matching CLI subcommand (proto/control.h; the keys are in
 * tui/keys.h, the screen in tui/panes.h). It never blocks: stdin is a
 * uv_poll, the hub a client callback, signals uv_signal handles, and the
 * screen is redrawn from the model's dirty flag at most once per loop pass
 * (and at most every CONSOLE_FRAME_MS), never per message.
 */
#include "tui/console.h"

#include "proto/control.h"
#include "tui/client.h"
#include "tui/console_model.h"
#include "tui/draw.h"
#include "tui/fleet.h"
#include "tui/keys.h"
#include "tui/panes.h"

#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <math.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define CONSOLE_RETRY_MS      500    /* reconnect period while the hub is away */
#define CONSOLE_STOP_WAIT_MS  5000   /* how long `stop` may take to be confirmed */
#define CONSOLE_FRAME_MS      20     /* at most one redraw per this */
#define CONSOLE_KEYS_PER_POLL 512
#define CONSOLE_FLEET_RETRY_MS 1000  /* a fleet's first retry of a host; doubled up to 30 s (client.c) */
#define CONSOLE_LOCAL         "local" /* the local hub's name in a fleet (as in monit --headless --host) */
/* A fleet merges the hosts' states at most this often: with 16 hosts at 1 Hz a
 * merge (and redraw) per state would be 16 a second, each over every host's workers. */
#define CONSOLE_FLEET_MERGE_MS 250

struct console;

/*
 * One hub of a fleet console: its client, its latest snapshot (workers
 * tagged with the host and keys made unique across hosts), and whether it
 * answers. The console merges the snapshots into the model's (one list,
 * apps with fleet totals, a line per host).
 */
typedef struct {
    struct console *c;
    client         *cl;
    char            name[SSHLINK_SPEC_MAX];
    json_int_t      key_base;   /* added to the hub's row keys: unique across hosts */
    json_t         *snap;       /* the latest state message or subscribe reply, tagged; NULL before */
    console_conn    conn;
    char            why[300];   /* why it is down (ssh's reason) */
    long            sub_req;
    bool            fresh;      /* a state came since the last merge: its workers get a history point */
} console_host;

typedef struct console {
    const console_options *o;
    uv_loop_t    loop;
    uv_poll_t    in;
    uv_signal_t  sig_winch, sig_hup, sig_term, sig_int;
    uv_prepare_t prep;
    uv_timer_t   frame, logs_timer, stop_timer, merge_timer;
    bool         handles_open;
    client      *cl;
    console_host *hosts;      /* a fleet: one per hub (NULL: one hub, cl) */
    size_t       nhosts;
    int          infd;        /* our own open of the terminal, polled for keys */
    int          infd_flags;  /* its flags before libuv made it non-blocking (when shared) */
    bool         infd_shared; /* a dup of fd 0 (same open file description): restore flags */
    FILE        *inf;         /* infd as ncurses reads it */
    SCREEN      *scr;

    console_model m;
    keys_state   k;
    draw_ctx     d;

    /* quitting */
    long         stop_req;
    bool         quitting;
    bool         quiet;             /* hangup / SIGTERM: no message */
    char         exit_msg[400];

    /* drawing */
    bool         resized;
    uint64_t     last_draw_ns;
    unsigned     idle_wakeups;

    /* DROVER_CONSOLE_STATS */
    unsigned long redraws;
    double       draw_sum_ms, draw_max_ms;
    double       build_max_ms;    /* the part before refresh(): model to curses, no output */
} console;

/* ---- the hub ------------------------------------------------------------------- */

/* The selection rested (or the subscribe reply arrived): ask the hub for the log pane's lines. */
static console_host *console_fleet_log_host(console *c);

static void console_on_logs_timer(uv_timer_t *t)
{
    console *c = t->data;
    if (c->hosts) {
        console_host *h = console_fleet_log_host(c);
        if (h && client_connected(h->cl))
            c->m.logs_req = client_send(h->cl, console_model_logs_request(&c->m));
        return;
    }
    if (client_connected(c->cl))
        c->m.logs_req = client_send(c->cl, console_model_logs_request(&c->m));
}

/* Asks for the log pane's lines after ms (a later call restarts the wait); ms < 0: nothing to ask. */
static void console_logs_after(console *c, int ms)
{
    if (ms >= 0)
        uv_timer_start(&c->logs_timer, console_on_logs_timer, (uint64_t)ms, 0);
}

/*
 * Sends subscribe over cl, lean (PROTOCOL.md §4.4: nothing the panes do not
 * draw, a third less to parse) unless the hub refused that; returns its id.
 */
static long console_subscribe(client *cl, bool lean)
{
    ctl_request r = ctl_request_make(CTL_SUBSCRIBE, NULL);
    r.lean = lean;
    return client_send(cl, ctl_request_json(&r));
}

/*
 * True when msg is the hub's refusal of our lean subscribe (id sub_req): a
 * hub from before "lean" refuses the argument; the caller subscribes again
 * without it.
 */
static bool console_lean_refused(const json_t *msg, long sub_req)
{
    return sub_req >= 0 && strcmp(console_model_str(msg, "type", ""), "reply") == 0 &&
           console_model_int(msg, "id", -2) == sub_req && !json_is_true(json_object_get(msg, "ok")) &&
           strstr(console_model_str(msg, "error", ""), "\"lean\"") != NULL;
}

/* Connected (again): note the hub, subscribe; logs are asked once the snapshot is in. */
static void console_cb_hello(void *ctx, const json_t *hello)
{
    console *c = ctx;
    console_model_hello(&c->m, hello);
    c->m.sub_req = console_subscribe(c->cl, true);
}

/* The reply to our `stop`: say how it went, and quit (from the prepare callback). */
static void console_on_stop_reply(console *c, const json_t *msg)
{
    if (json_is_true(json_object_get(msg, "ok")))
        snprintf(c->exit_msg, sizeof c->exit_msg, "drover: %s",
                 console_model_str(msg, "msg", "stopping the hub"));
    else
        snprintf(c->exit_msg, sizeof c->exit_msg, "drover: the hub refused to stop: %s",
                 console_model_str(msg, "error", "?"));
    c->quitting = true;
    c->m.dirty = true;
}

/* Every message after the hello: our stop's reply here, the rest to the model. */
static void console_cb_message(void *ctx, const json_t *msg)
{
    console *c = ctx;
    if (console_lean_refused(msg, c->m.sub_req)) {
        c->m.sub_req = console_subscribe(c->cl, false);
        return;
    }
    if (c->k.mode == KEYS_MODE_STOPPING && strcmp(console_model_str(msg, "type", ""), "reply") == 0 &&
        console_model_int(msg, "id", -2) == c->stop_req) {
        console_on_stop_reply(c, msg);
        return;
    }
    console_logs_after(c, console_model_apply(&c->m, msg));
}

/* The hub went away: say so and keep the last figures (dimmed); the client retries. */
static void console_cb_disconnect(void *ctx, const char *why)
{
    console *c = ctx;
    console_model_disconnected(&c->m);
    if (c->k.mode == KEYS_MODE_STOPPING) {
        /* the hub exits once it has stopped: its going away is the answer */
        if (!c->exit_msg[0])
            snprintf(c->exit_msg, sizeof c->exit_msg, "drover: the hub stopped");
        c->quitting = true;
    } else {
        console_model_status(&c->m, true, "disconnected, retrying (%s)", why ? why : "the hub went away");
    }
}

/* ---- a fleet: several hubs in one view ---------------------------------------------- */

/* The host named name, or NULL. */
static console_host *console_fleet_find(console *c, const char *name)
{
    for (size_t i = 0; i < c->nhosts; i++)
        if (strcmp(c->hosts[i].name, name) == 0)
            return &c->hosts[i];
    return NULL;
}

/* The host the log pane asks (the selection's when the pane was pointed at it), else the first. */
static console_host *console_fleet_log_host(console *c)
{
    console_host *h = console_fleet_find(c, c->m.log_host);
    return h ? h : &c->hosts[0];
}

/* The host of the selected worker: every key acts there. The first host when nothing is selected. */
static console_host *console_fleet_sel_host(console *c)
{
    const console_worker *w = console_model_selected(&c->m);
    console_host *h = console_fleet_find(c, w && w->host ? w->host : c->m.sel_host);
    return h ? h : &c->hosts[0];
}

/* Puts the host on each worker of msg and makes its key unique across hosts. */
static void console_fleet_tag(const console_host *h, json_t *msg)
{
    json_t *ws = json_object_get(msg, "workers");
    for (size_t i = 0; i < json_array_size(ws); i++) {
        json_t *w = json_array_get(ws, i);
        json_t *k = json_object_get(w, "key");
        if (json_is_integer(k) && json_integer_value(k) >= 0 && json_integer_value(k) <= UINT32_MAX)
            json_object_set_new(w, "key", json_integer(h->key_base + json_integer_value(k)));
        else
            json_object_del(w, "key");   /* not the protocol's: the model numbers it */
        json_object_set_new(w, "host", json_string(h->name));
    }
}

/* Adds a's figures into the fleet's object of the same app (sums; absent when no host has one). */
static void console_fleet_add_app(json_t *apps, const json_t *a)
{
    static const char *const sums[] = {"workers", "online", "req_per_s", "cpu_pct", "rss_bytes"};
    const char *name = console_model_str(a, "app", NULL);
    if (!name)
        return;
    json_t *f = NULL;
    for (size_t i = 0; i < json_array_size(apps) && !f; i++)
        if (strcmp(console_model_str(json_array_get(apps, i), "app", ""), name) == 0)
            f = json_array_get(apps, i);
    if (!f) {
        f = json_pack("{s:s}", "app", name);
        if (!f || json_array_append_new(apps, f) != 0)
            return;
    }
    for (size_t i = 0; i < sizeof sums / sizeof sums[0]; i++) {
        double v = console_model_num(a, sums[i]);
        if (isnan(v))
            continue;
        double have = console_model_num(f, sums[i]);
        json_object_set_new(f, sums[i], json_real((isnan(have) ? 0 : have) + v));
    }
}

/*
 * Merges every host's snapshot into one for the model: the workers (a
 * host's last ones stay, marked stale, while it is down), the apps with
 * fleet totals (workers, online, req/s, CPU, memory, and latency and lag
 * quantiles from the hosts' histograms added up: console_model_fleet_latency),
 * and "hosts" for the header lines. with_history, names, n: see
 * console_model_apply_fleet.
 */
static void console_fleet_publish(console *c, bool with_history, const char *const *names, size_t n)
{
    json_t *ws = json_array(), *apps = json_array(), *hosts = json_array();
    json_t *merged = json_pack("{s:s, s:o, s:o, s:o}", "type", "state", "workers", ws, "apps", apps,
                               "hosts", hosts);
    if (!merged)
        return;
    bool any_up = false, any_down = false;
    for (size_t i = 0; i < c->nhosts; i++) {
        console_host *h = &c->hosts[i];
        const char *state = h->conn == CONSOLE_UP ? "up" : h->conn == CONSOLE_DOWN ? "down" : "connecting";
        any_up |= h->conn == CONSOLE_UP;
        any_down |= h->conn == CONSOLE_DOWN;
        json_t *hl = json_pack("{s:s, s:s, s:s}", "host", h->name, "state", state, "why", h->why);
        if (hl && h->snap) {
            json_object_set(hl, "apps", json_object_get(h->snap, "apps"));
            json_object_set(hl, "machine", json_object_get(h->snap, "host"));
        }
        if (hl)
            json_array_append_new(hosts, hl);
        json_t *hw = json_object_get(h->snap, "workers");
        for (size_t j = 0; j < json_array_size(hw); j++) {
            json_t *w = json_array_get(hw, j);
            json_object_set_new(w, "stale", json_boolean(h->conn != CONSOLE_UP));
            json_array_append(ws, w);
        }
        json_t *ha = json_object_get(h->snap, "apps");
        for (size_t j = 0; j < json_array_size(ha); j++)
            console_fleet_add_app(apps, json_array_get(ha, j));
    }
    /* latency and lag: from the hosts' histograms added up (hosts that answer now) */
    const json_t *up[FLEET_HOSTS_MAX + 1];
    size_t nup = 0;
    for (size_t i = 0; i < c->nhosts && nup < sizeof up / sizeof up[0]; i++)
        if (c->hosts[i].conn == CONSOLE_UP && c->hosts[i].snap)
            up[nup++] = json_object_get(c->hosts[i].snap, "apps");
    for (size_t i = 0; i < json_array_size(apps); i++)
        console_model_fleet_latency(json_array_get(apps, i), up, nup);
    c->m.conn = any_up ? CONSOLE_UP : any_down ? CONSOLE_DOWN : CONSOLE_CONNECTING;
    console_model_apply_fleet(&c->m, merged, with_history, names, n);
    json_decref(merged);
}

/* The merge timer: the hosts whose state came since the last merge get their point of history. */
static void console_fleet_on_merge(uv_timer_t *t)
{
    console *c = t->data;
    const char *names[FLEET_HOSTS_MAX + 1];
    size_t n = 0;
    for (size_t i = 0; i < c->nhosts && n < sizeof names / sizeof names[0]; i++)
        if (c->hosts[i].fresh) {
            c->hosts[i].fresh = false;
            names[n++] = c->hosts[i].name;
        }
    console_fleet_publish(c, false, names, n);
}

/* A copy of msg for the status line with its text fields prefixed by the host ("h1: reload web: done"). */
static json_t *console_fleet_named(const console_host *h, const json_t *msg)
{
    json_t *copy = json_copy((json_t *)msg);
    if (!copy)
        return NULL;
    json_object_del(copy, "id");   /* ids are per connection: never our subscribe's or logs' */
    static const char *const fields[] = {"msg", "error", "text"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        const char *v = json_string_value(json_object_get(copy, fields[i]));
        if (v && *v) {
            char buf[SSHLINK_SPEC_MAX + 1024];
            snprintf(buf, sizeof buf, "%s: %.1000s", h->name, v);
            json_object_set_new(copy, fields[i], json_string(buf));
        }
    }
    return copy;
}

/* A host said hello: subscribe there. */
static void console_fleet_cb_hello(void *ctx, const json_t *hello)
{
    console_host *h = ctx;
    console *c = h->c;
    h->conn = CONSOLE_UP;
    h->why[0] = '\0';
    if (!c->m.ns[0])
        snprintf(c->m.ns, sizeof c->m.ns, "%s", console_model_str(hello, "ns", "default"));
    console_model_status(&c->m, false, "%s: connected (hub pid %ld)", h->name, console_model_int(hello, "hub_pid", 0));
    h->sub_req = console_subscribe(h->cl, true);
}

/* A host's message: its snapshots merged, its logs when the pane shows its worker, the rest to the status line. */
static void console_fleet_cb_message(void *ctx, const json_t *msg)
{
    console_host *h = ctx;
    console *c = h->c;
    const char *type = console_model_str(msg, "type", "");
    bool log_host = console_fleet_log_host(c) == h;
    long id = console_model_int(msg, "id", -2);
    if (console_lean_refused(msg, h->sub_req)) {
        h->sub_req = console_subscribe(h->cl, false);   /* a hub from before "lean" */
        return;
    }
    if (!strcmp(type, "state") || (!strcmp(type, "reply") && id == h->sub_req &&
                                   json_is_true(json_object_get(msg, "ok")))) {
        bool first = strcmp(type, "reply") == 0;
        json_decref(h->snap);
        h->snap = json_incref((json_t *)msg);
        console_fleet_tag(h, h->snap);
        if (!first) {
            /* merged with the others' within CONSOLE_FLEET_MERGE_MS */
            h->fresh = true;
            if (!uv_is_active((uv_handle_t *)&c->merge_timer))
                uv_timer_start(&c->merge_timer, console_fleet_on_merge, CONSOLE_FLEET_MERGE_MS, 0);
        } else {
            const char *name = h->name;
            console_fleet_publish(c, true, &name, 1);
            /* the rings have the history now: the kept snapshot need not */
            json_t *ws = json_object_get(h->snap, "workers");
            for (size_t i = 0; i < json_array_size(ws); i++)
                json_object_del(json_array_get(ws, i), "history");
            /* the pane's host came back: ask again; else follow the selection */
            console_logs_after(c, console_model_logs_retarget(&c->m, log_host));
        }
    } else if (!strcmp(type, "log")) {
        if (log_host)   /* lines of the pane's host only */
            console_logs_after(c, console_model_apply(&c->m, msg));
    } else if (!strcmp(type, "reply") && log_host && id == c->m.logs_req) {
        console_logs_after(c, console_model_apply(&c->m, msg));   /* (ids are per host: checked with it) */
    } else {
        json_t *named = console_fleet_named(h, msg);
        if (named)
            console_logs_after(c, console_model_apply(&c->m, named));
        json_decref(named);
    }
}

/* A host went away or cannot be reached: its line says why, its rows stay dimmed; its client retries. */
static void console_fleet_cb_disconnect(void *ctx, const char *why)
{
    console_host *h = ctx;
    console *c = h->c;
    h->conn = CONSOLE_DOWN;
    snprintf(h->why, sizeof h->why, "%s", why ? why : "the hub went away");
    if (console_fleet_log_host(c) == h)
        c->m.logs_ready = false;
    console_model_status(&c->m, true, "%s: unreachable, retrying (%s)", h->name, h->why);
    console_fleet_publish(c, false, NULL, 0);
}

/* Starts a client per hub of the fleet. Returns 0, or -1 when out of memory. */
static int console_fleet_open(console *c)
{
    const console_options *o = c->o;
    size_t n = o->fleet_nhosts + (o->fleet_no_local ? 0 : 1);
    c->hosts = calloc(n, sizeof *c->hosts);
    if (!c->hosts)
        return -1;
    c->nhosts = n;
    c->m.fleet = true;
    client_callbacks cb = {console_fleet_cb_hello, console_fleet_cb_message, console_fleet_cb_disconnect};
    for (size_t i = 0; i < n; i++) {
        console_host *h = &c->hosts[i];
        const sshlink_target *t = o->fleet_no_local ? &o->fleet_hosts[i] : i ? &o->fleet_hosts[i - 1] : NULL;
        h->c = c;
        h->conn = CONSOLE_CONNECTING;
        h->sub_req = -1;
        h->key_base = (json_int_t)(i + 1) << 32;   /* hub keys are uint32_t */
        snprintf(h->name, sizeof h->name, "%s", t ? t->spec : CONSOLE_LOCAL);
        if (!t)   /* the local client retries quietly while no hub runs: say what it waits for */
            snprintf(h->why, sizeof h->why, "no hub answers at %.250s yet", o->ctl_path);
        h->cl = t ? client_new_ssh(&c->loop, t, o->host_remote, o->host_ns, o->host_socket_dir,
                                   CONSOLE_FLEET_RETRY_MS, &cb, h)
                  : client_new(&c->loop, o->ctl_path, CONSOLE_FLEET_RETRY_MS, &cb, h);
        if (!h->cl)
            return -1;
    }
    console_model_status(&c->m, false, "connecting to %zu hubs", n);
    console_fleet_publish(c, false, NULL, 0);
    return 0;
}

/* ---- drawing ----------------------------------------------------------------------- */

/* Redraws the whole screen from the model (ncurses sends only what changed); keeps the statistics. */
static void console_draw(console *c)
{
    uint64_t t0 = uv_hrtime();
    if (c->resized) {
        clearok(curscr, TRUE);   /* repaint every cell: no leftovers from the old layout */
        c->resized = false;
    }
    panes_draw(&c->k, &c->d, c->o->title);
    uint64_t t1 = uv_hrtime();
    refresh();
    double ms = (double)(uv_hrtime() - t0) / 1e6;
    double build_ms = (double)(t1 - t0) / 1e6;
    if (build_ms > c->build_max_ms)
        c->build_max_ms = build_ms;
    c->redraws++;
    c->draw_sum_ms += ms;
    if (ms > c->draw_max_ms)
        c->draw_max_ms = ms;
    c->last_draw_ns = uv_hrtime();
    c->m.dirty = false;
}

/* ---- quitting ---------------------------------------------------------------------- */

/* Handles are members of the console, freed with it after uv_run returns. */
static void console_on_closed(uv_handle_t *h)
{
    (void)h;
}

/* Closes every handle so uv_run returns; the caller restores the terminal. */
static void console_finish(console *c)
{
    c->quitting = true;
    if (!c->handles_open)
        return;
    c->handles_open = false;
    uv_handle_t *hs[] = {(uv_handle_t *)&c->in, (uv_handle_t *)&c->sig_winch, (uv_handle_t *)&c->sig_hup,
                         (uv_handle_t *)&c->sig_term, (uv_handle_t *)&c->sig_int, (uv_handle_t *)&c->prep,
                         (uv_handle_t *)&c->frame, (uv_handle_t *)&c->logs_timer, (uv_handle_t *)&c->stop_timer,
                         (uv_handle_t *)&c->merge_timer};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], console_on_closed);
    client_free(c->cl);
    c->cl = NULL;
    for (size_t i = 0; i < c->nhosts; i++) {
        client_free(c->hosts[i].cl);
        c->hosts[i].cl = NULL;
    }
}

/* `stop` was not confirmed in time: quit anyway, and say so. */
static void console_on_stop_timeout(uv_timer_t *t)
{
    console *c = t->data;
    snprintf(c->exit_msg, sizeof c->exit_msg,
             "drover: the hub did not confirm the stop within %d s; check with 'drover ls'",
             CONSOLE_STOP_WAIT_MS / 1000);
    console_finish(c);
}

/* Sends `stop` (no target: every worker and the hub) and waits, bounded, for the answer. */
static void console_stop_hub(console *c)
{
    if (!client_connected(c->cl)) {
        snprintf(c->exit_msg, sizeof c->exit_msg,
                 "drover: not connected to the hub, so it was not stopped; 'drover stop' ends it");
        console_finish(c);
        return;
    }
    ctl_request r = ctl_request_make(CTL_STOP, NULL);
    c->stop_req = client_send(c->cl, ctl_request_json(&r));
    c->k.mode = KEYS_MODE_STOPPING;
    console_model_status(&c->m, false, "stopping the hub and its workers...");
    uv_timer_start(&c->stop_timer, console_on_stop_timeout, CONSOLE_STOP_WAIT_MS, 0);
}

/*
 * The options to pass drover to find this hub again: "" for the default
 * namespace's, " -L NS" for another namespace's, " --socket-dir DIR" when its
 * socket is not where its namespace's would be.
 */
static void console_reach_options(const console *c, char *opt, size_t cap)
{
    char def[300], err[160];
    const char *ns = c->m.ns[0] ? c->m.ns : "default";
    bool is_default = client_ctl_path(NULL, ns, def, sizeof def, err, sizeof err) == 0 &&
                      strcmp(def, c->o->ctl_path) == 0;
    opt[0] = '\0';
    if (!is_default) {
        char dir[300];
        snprintf(dir, sizeof dir, "%s", c->o->ctl_path);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        snprintf(opt, cap, " --socket-dir %.280s", dir);
    } else if (strcmp(ns, "default") != 0) {
        snprintf(opt, cap, " -L %.60s", ns);
    }
}

/* Quits leaving the hub running; say: with the one line that says how to come back. */
static void console_leave(console *c, bool say)
{
    if (say) {
        char opt[300];
        console_reach_options(c, opt, sizeof opt);
        snprintf(c->exit_msg, sizeof c->exit_msg,
                 "drover: the hub keeps running in the background; 'drover monit%s' attaches again, "
                 "'drover stop%s' ends it", opt, opt);
    }
    console_finish(c);
}

/* q (or Ctrl-C): quit as o->on_quit says. */
static void console_quit_key(console *c)
{
    switch (c->o->on_quit) {
    case CONSOLE_QUIT_ASK:
        c->k.mode = KEYS_MODE_QUIT;
        c->m.dirty = true;
        break;
    case CONSOLE_QUIT_LEAVE:
        console_leave(c, false);
        break;
    case CONSOLE_QUIT_STOP:
        console_stop_hub(c);
        break;
    }
}

/* ---- keys and signals ----------------------------------------------------------------- */

/* Handles one key (tui/keys.h), then carries out what it asks: a request, the logs, a repaint, quitting. */
static void console_key(console *c, int key, bool fkey)
{
    keys_handle(&c->k, key, fkey);
    if (c->k.send) {
        if (c->hosts)
            client_send(console_fleet_sel_host(c)->cl, c->k.send);   /* the selected worker's hub */
        else if (c->cl)
            client_send(c->cl, c->k.send);
        else
            json_decref(c->k.send);
        c->k.send = NULL;
    }
    console_logs_after(c, c->k.logs_in_ms);
    if (c->k.repaint)
        c->resized = true;
    switch (c->k.quit) {
    case KEYS_QUIT_NONE:
        break;
    case KEYS_QUIT_KEY:
        console_quit_key(c);
        break;
    case KEYS_QUIT_STOP_HUB:
        c->k.mode = KEYS_MODE_NORMAL;
        console_stop_hub(c);
        break;
    case KEYS_QUIT_LEAVE:
        console_leave(c, true);
        break;
    case KEYS_QUIT_GIVE_UP:
        snprintf(c->exit_msg, sizeof c->exit_msg,
                 "drover: stopped waiting for the hub; 'drover ls' shows whether it still runs");
        console_finish(c);
        break;
    }
}

/* The terminal went away (hangup) or we were told to end: quit without a word. */
static void console_end_quietly(console *c)
{
    c->quiet = true;
    c->exit_msg[0] = '\0';
    console_finish(c);
}

/* The terminal is readable: handle every key waiting (bounded), or notice a hangup. */
static void console_on_input(uv_poll_t *p, int status, int events)
{
    console *c = p->data;
    (void)events;
    if (status < 0) {
        console_end_quietly(c);
        return;
    }
    int n = 0;
    wint_t ch;
    int r;
    while (n < CONSOLE_KEYS_PER_POLL && !c->quitting && (r = get_wch(&ch)) != ERR) {
        n++;
        if (r == KEY_CODE_YES && ch == KEY_MOUSE) {
            MEVENT ev;
            if (getmouse(&ev) != OK)
                continue;   /* a sequence ncurses could not read: nothing to do */
            c->k.mouse = (keys_mouse_ev){.y = ev.y, .x = ev.x, .bstate = (unsigned long)ev.bstate};
        }
        console_key(c, (int)ch, r == KEY_CODE_YES);
    }
    if (n > 0) {
        c->idle_wakeups = 0;
        return;
    }
    /* Readable but no key: a hung-up terminal reads as EOF forever. */
    struct pollfd pf = {.fd = c->infd, .events = POLLIN};
    if ((poll(&pf, 1, 0) == 1 && (pf.revents & (POLLHUP | POLLERR | POLLNVAL))) || ++c->idle_wakeups > 100)
        console_end_quietly(c);
}

/* SIGWINCH resizes, SIGINT acts as q, SIGHUP and SIGTERM end the console quietly. */
static void console_on_signal(uv_signal_t *s, int signum)
{
    console *c = s->data;
    switch (signum) {
    case SIGWINCH: {
        struct winsize ws;
        /* ncurses cannot see SIGWINCH under libuv's handler: resize it ourselves */
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0)
            resizeterm(ws.ws_row, ws.ws_col);
        c->resized = true;
        c->m.dirty = true;
        break;
    }
    case SIGINT:
        /* Ctrl-C as q; a second one while asking leaves the hub running (the safe answer) */
        if (c->k.mode == KEYS_MODE_QUIT)
            console_leave(c, true);
        else if (c->k.mode == KEYS_MODE_STOPPING)
            console_finish(c);
        else
            console_quit_key(c);
        break;
    default:   /* SIGHUP, SIGTERM: the console ends, the hub keeps running (§3.5) */
        console_end_quietly(c);
        break;
    }
}

/* The frame timer: wakes the loop so a deferred redraw happens. */
static void console_on_frame(uv_timer_t *t)
{
    (void)t;   /* the prepare callback draws */
}

/*
 * Runs once per loop pass, before the loop sleeps: redraws when something
 * changed, but not more often than every CONSOLE_FRAME_MS (a burst of log
 * lines costs one redraw, not one per line).
 */
static void console_on_prepare(uv_prepare_t *p)
{
    console *c = p->data;
    if (c->quitting) {
        console_finish(c);
        return;
    }
    if (!c->m.dirty)
        return;
    uint64_t now = uv_hrtime();
    uint64_t since = (now - c->last_draw_ns) / 1000000;
    if (c->last_draw_ns && since < CONSOLE_FRAME_MS) {
        if (!uv_is_active((uv_handle_t *)&c->frame))
            uv_timer_start(&c->frame, console_on_frame, CONSOLE_FRAME_MS - since, 0);
        return;
    }
    console_draw(c);
}

/* ---- setup ---------------------------------------------------------------------------- */

/*
 * Opens the terminal for input as a file description of our own: libuv's
 * uv_poll makes the fd non-blocking, and fd 0 usually shares its description
 * with fd 1 and with the shell, which must not inherit O_NONBLOCK.
 */
static int console_open_input(console *c)
{
    const char *name = ttyname(STDIN_FILENO);
    int fd = name ? open(name, O_RDONLY | O_NOCTTY | O_CLOEXEC) : -1;
    if (fd >= 0)
        return fd;
    fd = fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
    if (fd >= 0) {
        c->infd_shared = true;
        c->infd_flags = fcntl(fd, F_GETFL);
    }
    return fd;
}

/*
 * Takes the terminal: the locale, our own input description, ncurses in
 * cbreak mode with keypad and no delay, the attributes. Returns 0, or 1
 * with one line on stderr (nothing left open).
 */
static int console_term_open(console *c)
{
    /* Wide characters need the user's locale; numbers stay in C's format. */
    setlocale(LC_ALL, "");
    setlocale(LC_NUMERIC, "C");
    c->d.utf8 = MB_CUR_MAX > 1 && strcmp(nl_langinfo(CODESET), "UTF-8") == 0;

    c->infd = console_open_input(c);
    c->inf = c->infd >= 0 ? fdopen(c->infd, "r") : NULL;
    if (!c->inf) {
        fprintf(stderr, "drover: cannot open the terminal for input: %s\n", strerror(errno));
        if (c->infd >= 0)
            close(c->infd);
        return 1;
    }
    /* newterm, not initscr: initscr exits the process when TERM is unusable */
    c->scr = newterm(NULL, stdout, c->inf);
    if (!c->scr) {
        const char *t = getenv("TERM");
        fprintf(stderr, "drover: cannot drive terminal type '%s'; set TERM (e.g. xterm-256color)\n",
                t ? t : "(unset)");
        fclose(c->inf);
        return 1;
    }
    set_term(c->scr);
    cbreak();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);   /* Esc must feel immediate; sequences arrive in one read anyway */
    curs_set(0);
    if (!c->o->no_mouse) {
        /* as htop: clicks and the wheel; presses at once (no click resolution delay) */
        mousemask(BUTTON1_PRESSED | BUTTON1_CLICKED | BUTTON4_PRESSED | BUTTON5_PRESSED, NULL);
        mouseinterval(0);
    }
    draw_setup(&c->d);
    return 0;
}

/* Gives the terminal back (after a hangup there is none, and endwin fails harmlessly). */
static void console_term_close(console *c)
{
    endwin();
    delscreen(c->scr);
    fclose(c->inf);   /* closes c->infd */
    if (c->infd_shared)
        fcntl(STDIN_FILENO, F_SETFL, c->infd_flags);
}

/* Sets up the loop's handles: the terminal's input, the signals, the redraw, the timers. Returns 0 or -1. */
static int console_loop_open(console *c)
{
    uv_loop_init(&c->loop);
    if (uv_poll_init(&c->loop, &c->in, c->infd) != 0) {
        uv_loop_close(&c->loop);
        return -1;
    }
    c->in.data = c;
    uv_poll_start(&c->in, UV_READABLE, console_on_input);
    uv_signal_t *sigs[] = {&c->sig_winch, &c->sig_hup, &c->sig_term, &c->sig_int};
    int signums[] = {SIGWINCH, SIGHUP, SIGTERM, SIGINT};
    for (int i = 0; i < 4; i++) {
        uv_signal_init(&c->loop, sigs[i]);
        sigs[i]->data = c;
        uv_signal_start(sigs[i], console_on_signal, signums[i]);
    }
    uv_prepare_init(&c->loop, &c->prep);
    c->prep.data = c;
    uv_prepare_start(&c->prep, console_on_prepare);
    uv_timer_init(&c->loop, &c->frame);
    uv_timer_init(&c->loop, &c->logs_timer);
    uv_timer_init(&c->loop, &c->stop_timer);
    uv_timer_init(&c->loop, &c->merge_timer);
    c->frame.data = c->logs_timer.data = c->stop_timer.data = c->merge_timer.data = c;
    c->handles_open = true;
    return 0;
}

/* Writes the redraw statistics for bench/console_bench.sh. */
static void console_write_stats(const console *c)
{
    const char *path = getenv("DROVER_CONSOLE_STATS");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "redraws=%lu mean_ms=%.3f max_ms=%.3f workers=%zu build_max_ms=%.3f\n", c->redraws,
            c->redraws ? c->draw_sum_ms / (double)c->redraws : 0.0, c->draw_max_ms, c->m.nw, c->build_max_ms);
    fclose(f);
}

/* Connects the client and runs the loop until the console quits; returns the exit status. */
static int console_loop_run(console *c)
{
    int rc = 0;
    client_callbacks cb = {console_cb_hello, console_cb_message, console_cb_disconnect};
    if (c->o->fleet_nhosts) {
        if (console_fleet_open(c) != 0) {
            snprintf(c->exit_msg, sizeof c->exit_msg, "drover: out of memory");
            rc = 1;
            console_finish(c);
        }
        uv_run(&c->loop, UV_RUN_DEFAULT);
        uv_loop_close(&c->loop);
        return rc;
    }
    c->cl = c->o->host ? client_new_ssh(&c->loop, c->o->host, c->o->host_remote, c->o->host_ns,
                                        c->o->host_socket_dir, CONSOLE_RETRY_MS, &cb, c)
                       : client_new(&c->loop, c->o->ctl_path, CONSOLE_RETRY_MS, &cb, c);
    if (!c->cl) {
        snprintf(c->exit_msg, sizeof c->exit_msg, "drover: out of memory");
        rc = 1;
        console_finish(c);
    } else {
        console_model_status(&c->m, false, "connecting to %s", c->o->ctl_path);
    }
    uv_run(&c->loop, UV_RUN_DEFAULT);
    uv_loop_close(&c->loop);
    return rc;
}

/*
 * See console.h. Needs stdin and stdout on a terminal (else one line on
 * stderr and 1); sets up ncurses and the loop, runs until q, a hangup or
 * SIGTERM, then restores the terminal and prints at most one line (how to
 * reach a hub left running, or why a stop was not confirmed).
 */
int console_run(const console_options *o)
{
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "drover: the console needs a terminal (stdin and stdout are not a tty); "
                        "use 'drover ls', 'drover logs' or --headless in scripts\n");
        return 1;
    }
    console *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "drover: out of memory\n");
        return 1;
    }
    c->o = o;
    c->stop_req = -1;
    console_model_init(&c->m);
    keys_init(&c->k, &c->m);
    if (console_term_open(c) != 0) {
        free(c);
        return 1;
    }
    /* a write to a hub that just went away must be an error, not a death */
    struct sigaction old_pipe, ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old_pipe);

    int rc;
    if (console_loop_open(c) != 0) {
        snprintf(c->exit_msg, sizeof c->exit_msg, "drover: the console cannot watch this terminal for keys");
        rc = 1;
    } else {
        rc = console_loop_run(c);
    }
    console_term_close(c);
    sigaction(SIGPIPE, &old_pipe, NULL);
    if (!c->quiet && c->exit_msg[0])
        fprintf(stderr, "%s\n", c->exit_msg);
    console_write_stats(c);
    console_model_free(&c->m);
    for (size_t i = 0; i < c->nhosts; i++)
        json_decref(c->hosts[i].snap);
    free(c->hosts);
    free(c);
    return rc;
}
