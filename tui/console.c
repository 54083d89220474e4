/*
 * console.c — the interactive console: ncursesw on a libuv loop.
 *
 * The console is a pure view: everything it shows comes from the hub's
 * control socket through the asynchronous client (tui/client.h), and every
 * key that acts sends the same request as the matching CLI subcommand
 * (proto/control.h). It never blocks: stdin is a uv_poll, the hub
 * a client callback, signals uv_signal handles, and the screen is redrawn
 * from a dirty flag at most once per loop pass (and at most every
 * CONSOLE_FRAME_MS), never per message.
 *
 * Model: the latest snapshot (a jansson object we keep a reference to), one
 * console_worker per worker row keyed by the hub's "key", each with bounded
 * history rings for the sparklines; a bounded ring of log lines.
 * View: an index of display rows (app headers and workers), filtered and
 * sorted once per state message or key, never per frame; only the rows that
 * fit on screen are formatted.
 */
#include "console.h"

#include "proto/control.h"
#include "tui/client.h"
#include "tui/columns.h"

#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <langinfo.h>
#include <locale.h>
#include <malloc.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#define CONSOLE_HIST          120    /* points per series: the hub's STATE_HISTORY */
#define CONSOLE_LOG_MAX       2000   /* lines kept in the log pane */
#define CONSOLE_LOG_REQ       1000   /* lines asked from the hub on (re)targeting */
#define CONSOLE_LOG_LINE_MAX  1024   /* bytes kept of one log line */
#define CONSOLE_RETRY_MS      500    /* reconnect period while the hub is away */
#define CONSOLE_STOP_WAIT_MS  5000   /* how long `stop` may take to be confirmed */
#define CONSOLE_FRAME_MS      20     /* at most one redraw per this */
#define CONSOLE_LOGS_DELAY_MS 120    /* selection must rest this long before re-asking logs */
#define CONSOLE_FILTER_MAX    64
#define CONSOLE_KEYS_PER_POLL 512
#define CONSOLE_DETAIL_W      56     /* width of the side detail pane in the wide layout */
#define CONSOLE_WIDE_W        150    /* from this width the detail pane goes beside the list */

/* ------------------------------------------------------------------------ */
/* Model                                                                    */
/* ------------------------------------------------------------------------ */

enum { SER_CPU, SER_MEM, SER_RPS, SER_LAG, SER_N };
static const char *const console_series_key[SER_N] = {"cpu_pct", "rss_bytes", "req_per_s", "lag_p99_ms"};

/* A worker's sparkline history: SER_N rings of CONSOLE_HIST points (NAN = unknown). */
typedef struct {
    float    v[SER_N][CONSOLE_HIST];
    unsigned head;   /* next slot written */
    unsigned n;      /* points held */
} console_hist;

/* One worker row of the latest snapshot. */
typedef struct {
    json_int_t    key;
    const json_t *obj;    /* borrowed from console.snap */
    const char   *app;    /* borrowed from obj */
    const char   *state;  /* borrowed from obj */
    int           id;
    long          pid;
    double        sortv;  /* the sort column's key, computed at rebuild */
    console_hist *h;      /* owned */
} console_worker;

/* One display row of the list: an app header (w NULL) or a worker. */
typedef struct {
    console_worker *w;
    const char     *app;
    const json_t   *appobj;   /* the app's aggregate from the snapshot, or NULL */
} console_row;

/* One captured output line. */
typedef struct {
    double ts;
    char  *text;          /* owned */
    char   label[72];     /* "web:0" */
    bool   err;
} console_logline;

typedef enum { CONN_CONNECTING, CONN_UP, CONN_DOWN } console_conn;
typedef enum { MODE_NORMAL, MODE_FILTER, MODE_CONFIRM, MODE_QUIT, MODE_HELP, MODE_STOPPING } console_mode;
typedef enum { FOCUS_LIST, FOCUS_LOGS } console_focus;

typedef struct console {
    const console_options *o;
    uv_loop_t    loop;
    uv_poll_t    in;
    uv_signal_t  sig_winch, sig_hup, sig_term, sig_int;
    uv_prepare_t prep;
    uv_timer_t   frame, logs_timer, stop_timer;
    bool         handles_open;
    client      *cl;
    int          infd;        /* our own open of the terminal, polled for keys */
    int          infd_flags;  /* its flags before libuv made it non-blocking (when shared) */
    bool         infd_shared; /* a dup of fd 0 (same open file description): restore flags */

    /* connection */
    console_conn conn;
    char         ns[64], hub_mode[16];
    long         hub_pid;
    long         sub_req, logs_req, stop_req;

    /* model */
    json_t         *snap;     /* the latest state message or subscribe reply */
    console_worker *w;        /* sorted by key */
    size_t          nw;
    console_row    *rows;
    size_t          nrows;
    size_t          nrows_cap;
    console_worker **view;    /* scratch for sorting */

    /* selection and list view */
    long         sel;             /* row index, -1 = none */
    json_int_t   sel_key;
    char         sel_app[64];
    int          sel_id;
    long         list_top;
    int          sort_col;        /* index into columns_table */
    char         filter[CONSOLE_FILTER_MAX];
    char         filter_saved[CONSOLE_FILTER_MAX];
    console_focus focus;
    console_mode mode;
    const ctl_command *confirm_cmd;
    char         confirm_target[80];
    char         confirm_text[160];

    /* logs */
    console_logline log[CONSOLE_LOG_MAX];
    size_t       log_head, log_n;   /* ring: oldest at log_head */
    size_t       log_scroll;        /* lines above the bottom */
    int          log_rows;          /* lines the pane showed at the last redraw */
    bool         follow;
    bool         log_app;           /* the a-toggle: the whole app's logs */
    char         log_target[80];    /* what the pane shows / asked for ("" = all) */
    bool         logs_ready;        /* the reply for log_target arrived */

    /* status line */
    char         status[320];
    bool         status_err;
    time_t       status_at;

    /* quitting */
    bool         quitting;
    bool         quiet;             /* hangup / SIGTERM: no message */
    char         exit_msg[400];

    /* drawing */
    bool         dirty;
    bool         utf8, colors;
    bool         resized;
    uint64_t     last_draw_ns;
    unsigned     idle_wakeups;
    attr_t       a_header, a_bar, a_bar_focus, a_sel, a_ok, a_warn, a_err, a_dim,
                 a_stderr, a_spark, a_key, a_app;

    /* DROVER_CONSOLE_STATS */
    unsigned long redraws;
    double       draw_sum_ms, draw_max_ms;
    double       build_max_ms;    /* the part before refresh(): model to curses, no output */
} console;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* A number from obj[key], NAN when absent or null. */
static double console_num(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* An integer from obj[key], or dflt when absent, null or not a finite number. */
static long console_int(const json_t *obj, const char *key, long dflt)
{
    double v = console_num(obj, key);
    return isfinite(v) && fabs(v) < 1e15 ? (long)v : dflt;
}

/* A string from obj[key], or dflt. */
static const char *console_str(const json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : dflt;
}

/* Sets the status line (printf-style); err marks it as a failure. */
__attribute__((format(printf, 3, 4)))
static void console_status(console *c, bool err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->status, sizeof c->status, fmt, ap);
    va_end(ap);
    c->status_err = err;
    c->status_at = time(NULL);
    c->dirty = true;
}

/* The selected worker, or NULL. */
static console_worker *console_selected(const console *c)
{
    if (c->sel < 0 || (size_t)c->sel >= c->nrows)
        return NULL;
    return c->rows[c->sel].w;
}

/* ------------------------------------------------------------------------ */
/* History rings                                                            */
/* ------------------------------------------------------------------------ */

/* Appends one point per series from a worker object. */
static void console_hist_push(console_hist *h, const json_t *obj)
{
    for (int s = 0; s < SER_N; s++)
        h->v[s][h->head] = (float)console_num(obj, console_series_key[s]);
    h->head = (h->head + 1) % CONSOLE_HIST;
    if (h->n < CONSOLE_HIST)
        h->n++;
}

/* Replaces h with the "history" object of a subscribe reply (oldest first). */
static void console_hist_load(console_hist *h, const json_t *hist)
{
    memset(h, 0, sizeof *h);
    size_t n = 0;
    for (int s = 0; s < SER_N; s++) {
        size_t k = json_array_size(json_object_get(hist, console_series_key[s]));
        if (k > n)
            n = k;
    }
    if (n > CONSOLE_HIST)
        n = CONSOLE_HIST;
    for (size_t i = 0; i < n; i++) {
        for (int s = 0; s < SER_N; s++) {
            json_t *arr = json_object_get(hist, console_series_key[s]);
            size_t k = json_array_size(arr);
            /* align every series on its newest point */
            json_t *v = (i + k >= n) ? json_array_get(arr, i + k - n) : NULL;
            h->v[s][i] = json_is_number(v) ? (float)json_number_value(v) : NAN;
        }
    }
    h->n = (unsigned)n;
    h->head = (unsigned)(n % CONSOLE_HIST);
}

/* The i-th of the last k points of series s (0 = oldest of those). */
static float console_hist_at(const console_hist *h, int s, unsigned k, unsigned i)
{
    unsigned idx = (h->head + CONSOLE_HIST * 2 - k + i) % CONSOLE_HIST;
    return h->v[s][idx];
}

/* ------------------------------------------------------------------------ */
/* Logs                                                                     */
/* ------------------------------------------------------------------------ */

/* Drops every line of the log pane. */
static void console_log_clear(console *c)
{
    for (size_t i = 0; i < c->log_n; i++) {
        console_logline *l = &c->log[(c->log_head + i) % CONSOLE_LOG_MAX];
        free(l->text);
        l->text = NULL;
    }
    c->log_head = c->log_n = 0;
    c->log_scroll = 0;
    c->dirty = true;
}

/* Appends a protocol log object to the ring, evicting the oldest line when full. */
static void console_log_add(console *c, const json_t *m)
{
    json_t *jt = json_object_get(m, "text");
    const char *text = json_string_value(jt);
    if (!text)
        return;
    size_t len = json_string_length(jt);
    if (len > CONSOLE_LOG_LINE_MAX) {
        len = CONSOLE_LOG_LINE_MAX;
        while (len > 0 && ((unsigned char)text[len] & 0xC0) == 0x80)
            len--;   /* cut on a UTF-8 character boundary */
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return;
    memcpy(copy, text, len);
    copy[len] = '\0';
    console_logline *l;
    if (c->log_n == CONSOLE_LOG_MAX) {
        l = &c->log[c->log_head];
        free(l->text);
        c->log_head = (c->log_head + 1) % CONSOLE_LOG_MAX;
    } else {
        l = &c->log[(c->log_head + c->log_n) % CONSOLE_LOG_MAX];
        c->log_n++;
    }
    /* paused: the view counts from the bottom, so keep it on the same lines */
    if (!c->follow)
        c->log_scroll++;
    l->text = copy;
    l->ts = console_num(m, "ts");
    snprintf(l->label, sizeof l->label, "%.60s:%ld", console_str(m, "app", "?"), console_int(m, "id", -1));
    l->err = strcmp(console_str(m, "stream", "out"), "err") == 0;
    c->dirty = true;
}

/* The log target for the current selection: "app:id", "app", or "" (all). */
static void console_log_target(const console *c, char *out, size_t cap)
{
    const console_worker *w = console_selected(c);
    if (w)
        snprintf(out, cap, c->log_app ? "%.60s" : "%.60s:%d", w->app, w->id);
    else if (c->sel_app[0])
        snprintf(out, cap, c->log_app ? "%.60s" : "%.60s:%d", c->sel_app, c->sel_id);
    else
        snprintf(out, cap, "%s", "");
}

/* Sends the logs request for c->log_target now (follow, with history). */
static void console_logs_request(console *c)
{
    if (!client_connected(c->cl))
        return;
    ctl_request r = ctl_request_make(CTL_LOGS, c->log_target);
    r.lines = CONSOLE_LOG_REQ;
    r.follow = true;
    c->logs_req = client_send(c->cl, ctl_request_json(&r));
    c->logs_ready = false;
}

/* The selection rested: ask the hub for the new target's logs. */
static void console_on_logs_timer(uv_timer_t *t)
{
    console_logs_request(t->data);
}

/*
 * Points the log pane at the current selection. When the target changed (or
 * force), the pane is emptied at once and the request is sent once the
 * selection has rested CONSOLE_LOGS_DELAY_MS, so holding j does not send one
 * request per row. A new `logs` request replaces the hub's follow target.
 */
static void console_logs_retarget(console *c, bool force)
{
    char t[80];
    console_log_target(c, t, sizeof t);
    if (!force && strcmp(t, c->log_target) == 0)
        return;
    snprintf(c->log_target, sizeof c->log_target, "%s", t);
    console_log_clear(c);
    c->logs_ready = false;
    c->logs_req = -1;
    c->follow = true;
    uv_timer_start(&c->logs_timer, console_on_logs_timer, force ? 0 : CONSOLE_LOGS_DELAY_MS, 0);
}

/* True when a pushed log line belongs to what the pane shows. */
static bool console_log_matches(const console *c, const json_t *m)
{
    if (!c->log_target[0])
        return true;
    char t[80];
    const char *app = console_str(m, "app", "");
    if (strchr(c->log_target, ':'))
        snprintf(t, sizeof t, "%.60s:%ld", app, console_int(m, "id", -1));
    else
        snprintf(t, sizeof t, "%.60s", app);
    return strcmp(t, c->log_target) == 0;
}

/* ------------------------------------------------------------------------ */
/* Sorting, filtering, selection                                            */
/* ------------------------------------------------------------------------ */

/* Orders workers by app, then the sort key (larger first, unknown last), then id. */
static int console_cmp_view(const void *a, const void *b)
{
    const console_worker *x = *(console_worker *const *)a, *y = *(console_worker *const *)b;
    int r = strcmp(x->app, y->app);
    if (r)
        return r;
    bool xn = isnan(x->sortv), yn = isnan(y->sortv);
    if (xn != yn)
        return xn ? 1 : -1;
    if (!xn && x->sortv != y->sortv)
        return x->sortv > y->sortv ? -1 : 1;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return (x->key > y->key) - (x->key < y->key);
}

/* Orders workers by key (for lookups across snapshots). */
static int console_cmp_key(const void *a, const void *b)
{
    const console_worker *x = a, *y = b;
    return (x->key > y->key) - (x->key < y->key);
}

/* True when w passes the filter: a case-insensitive substring of app:id, pid or state. */
static bool console_match(const console *c, const console_worker *w)
{
    if (!c->filter[0])
        return true;
    char buf[96];
    snprintf(buf, sizeof buf, "%.60s:%d", w->app, w->id);
    if (strcasestr(buf, c->filter))
        return true;
    if (w->pid > 0) {
        snprintf(buf, sizeof buf, "%ld", w->pid);
        if (strstr(buf, c->filter))
            return true;
    }
    return strcasestr(w->state, c->filter) != NULL;
}

/* The aggregate object of app in the snapshot, or NULL. */
static const json_t *console_app_obj(const console *c, const char *app)
{
    json_t *apps = json_object_get(c->snap, "apps");
    for (size_t i = 0; i < json_array_size(apps); i++) {
        json_t *a = json_array_get(apps, i);
        if (strcmp(console_str(a, "app", ""), app) == 0)
            return a;
    }
    return NULL;
}

/* Records the selected row's identity, so it survives rebuilds. */
static void console_sel_remember(console *c)
{
    const console_worker *w = console_selected(c);
    if (!w)
        return;
    c->sel_key = w->key;
    snprintf(c->sel_app, sizeof c->sel_app, "%s", w->app);
    c->sel_id = w->id;
}

/*
 * Rebuilds the display rows (filter, sort, group by app) from the workers,
 * then finds the selection again: the same key, else the same app:id (a
 * reload replaces a row by a new key), else the nearest row. Runs once per
 * snapshot or sort/filter change, never per frame.
 */
static void console_rebuild(console *c)
{
    long old_sel = c->sel;
    const column *col = &columns_table[c->sort_col];
    size_t nv = 0;
    for (size_t i = 0; i < c->nw; i++) {
        console_worker *w = &c->w[i];
        if (!console_match(c, w))
            continue;
        w->sortv = col->sort_key ? col->sort_key(w->obj) : NAN;
        c->view[nv++] = w;
    }
    qsort(c->view, nv, sizeof *c->view, console_cmp_view);

    /* at most one header per worker plus the workers */
    size_t need = nv * 2 + 1;
    if (need > c->nrows_cap) {
        console_row *nr = realloc(c->rows, need * sizeof *nr);
        if (!nr) {
            c->nrows = 0;
            c->sel = -1;
            return;
        }
        c->rows = nr;
        c->nrows_cap = need;
    }
    size_t n = 0;
    const char *cur = NULL;
    for (size_t i = 0; i < nv; i++) {
        console_worker *w = c->view[i];
        if (!cur || strcmp(cur, w->app) != 0) {
            cur = w->app;
            c->rows[n++] = (console_row){NULL, cur, console_app_obj(c, cur)};
        }
        c->rows[n++] = (console_row){w, w->app, NULL};
    }
    c->nrows = n;

    long found = -1;
    for (size_t i = 0; i < n && found < 0; i++)
        if (c->rows[i].w && c->rows[i].w->key == c->sel_key)
            found = (long)i;
    for (size_t i = 0; i < n && found < 0; i++)
        if (c->rows[i].w && c->rows[i].w->id == c->sel_id && strcmp(c->rows[i].w->app, c->sel_app) == 0)
            found = (long)i;
    if (found < 0 && n > 0) {
        long want = old_sel < 0 ? 0 : old_sel;
        if (want >= (long)n)
            want = (long)n - 1;
        for (long d = 0; d < (long)n && found < 0; d++) {
            if (want + d < (long)n && c->rows[want + d].w)
                found = want + d;
            else if (want - d >= 0 && c->rows[want - d].w)
                found = want - d;
        }
    }
    c->sel = found;
    console_sel_remember(c);
    c->dirty = true;
}

/* Moves the selection by delta worker rows (skipping app headers). */
static void console_select_move(console *c, int delta)
{
    if (c->nrows == 0)
        return;
    long i = c->sel < 0 ? 0 : c->sel;
    int step = delta < 0 ? -1 : 1;
    for (int left = abs(delta); left > 0; left--) {
        long j = i + step;
        while (j >= 0 && j < (long)c->nrows && !c->rows[j].w)
            j += step;
        if (j < 0 || j >= (long)c->nrows)
            break;
        i = j;
    }
    if (!c->rows[i].w)
        return;
    c->sel = i;
    console_sel_remember(c);
    console_logs_retarget(c, false);
    c->dirty = true;
}

/* ------------------------------------------------------------------------ */
/* Applying hub messages                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Replaces the model with a snapshot (a state message, or the subscribe
 * reply whose workers carry "history"). Histories follow their worker by key;
 * a state message appends one point to each.
 */
static void console_apply_snapshot(console *c, const json_t *msg, bool with_history)
{
    json_t *ws = json_object_get(msg, "workers");
    size_t m = json_array_size(ws);
    console_worker *nw = calloc(m ? m : 1, sizeof *nw);
    console_worker **nview = calloc(m ? m : 1, sizeof *nview);
    if (!nw || !nview) {
        free(nw);
        free(nview);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        json_t *obj = json_array_get(ws, i);
        if (!json_is_object(obj))
            continue;
        console_worker *w = &nw[k];
        json_t *jk = json_object_get(obj, "key");
        w->key = json_is_integer(jk) ? json_integer_value(jk) : -(json_int_t)i - 1;
        w->obj = obj;
        w->app = console_str(obj, "app", "?");
        w->state = console_str(obj, "state", "-");
        w->id = (int)console_int(obj, "id", -1);
        w->pid = console_int(obj, "pid", 0);
        console_worker probe = {.key = w->key};
        console_worker *old = c->nw ? bsearch(&probe, c->w, c->nw, sizeof *c->w, console_cmp_key) : NULL;
        if (old && old->h) {
            w->h = old->h;      /* the history moves to the new row */
            old->h = NULL;
        } else {
            w->h = calloc(1, sizeof *w->h);
            if (!w->h)
                continue;
        }
        if (with_history)
            console_hist_load(w->h, json_object_get(obj, "history"));
        else
            console_hist_push(w->h, obj);
        k++;
    }
    for (size_t i = 0; i < c->nw; i++)
        free(c->w[i].h);
    free(c->w);
    free(c->view);
    qsort(nw, k, sizeof *nw, console_cmp_key);
    c->w = nw;
    c->nw = k;
    c->view = nview;
    json_t *keep = json_incref((json_t *)msg);
    json_decref(c->snap);
    c->snap = keep;
    console_rebuild(c);
}

/* Handles the subscribe reply: the first snapshot, with history. */
static void console_on_subscribed(console *c, const json_t *msg)
{
    console_apply_snapshot(c, msg, true);
    /* The histories are in the rings now: drop them from the kept snapshot
     * and hand the freed heap back, since a reply for 1000 workers holds
     * ~500k JSON numbers. */
    json_t *ws = json_object_get(msg, "workers");
    for (size_t i = 0; i < json_array_size(ws); i++)
        json_object_del(json_array_get(ws, i), "history");
    malloc_trim(0);
    console_logs_retarget(c, true);
}

/* Handles a reply to one of our requests. */
static void console_on_reply(console *c, const json_t *msg)
{
    long id = console_int(msg, "id", -2);   /* -1 is "not sent" */
    bool ok = json_is_true(json_object_get(msg, "ok"));
    if (id == c->sub_req) {
        if (ok)
            console_on_subscribed(c, msg);
        else
            console_status(c, true, "subscribe failed: %s", console_str(msg, "error", "?"));
        return;
    }
    if (id == c->logs_req) {
        if (!ok) {
            console_status(c, true, "logs: %s", console_str(msg, "error", "?"));
            return;
        }
        console_log_clear(c);
        json_t *lines = json_object_get(msg, "lines");
        for (size_t i = 0; i < json_array_size(lines); i++)
            console_log_add(c, json_array_get(lines, i));
        c->logs_ready = true;
        c->log_scroll = 0;
        c->follow = true;
        c->dirty = true;
        return;
    }
    if (id == c->stop_req && c->mode == MODE_STOPPING) {
        if (ok)
            snprintf(c->exit_msg, sizeof c->exit_msg, "drover: %s", console_str(msg, "msg", "stopping the hub"));
        else
            snprintf(c->exit_msg, sizeof c->exit_msg, "drover: the hub refused to stop: %s",
                     console_str(msg, "error", "?"));
        c->quitting = true;   /* console_finish runs from the prepare callback */
        c->dirty = true;
        return;
    }
    if (ok) {
        const char *s = console_str(msg, "msg", "");
        if (*s)
            console_status(c, false, "%s", s);
    } else {
        console_status(c, true, "%s", console_str(msg, "error", "the hub refused the command"));
    }
}

/* Connected (again): note the hub, subscribe; logs are asked once the snapshot is in. */
static void console_cb_hello(void *ctx, const json_t *hello)
{
    console *c = ctx;
    c->conn = CONN_UP;
    snprintf(c->ns, sizeof c->ns, "%s", console_str(hello, "ns", "default"));
    snprintf(c->hub_mode, sizeof c->hub_mode, "%s", console_str(hello, "mode", "?"));
    c->hub_pid = console_int(hello, "hub_pid", 0);
    console_status(c, false, "connected to the hub (pid %ld, %s mode)", c->hub_pid, c->hub_mode);
    ctl_request r = ctl_request_make(CTL_SUBSCRIBE, NULL);
    c->sub_req = client_send(c->cl, ctl_request_json(&r));
    c->logs_req = -1;
    c->logs_ready = false;
}

/* Every message after the hello: state, log, reply, event, error. */
static void console_cb_message(void *ctx, const json_t *msg)
{
    console *c = ctx;
    const char *type = console_str(msg, "type", "");
    if (strcmp(type, "state") == 0) {
        console_apply_snapshot(c, msg, false);
    } else if (strcmp(type, "log") == 0) {
        /* lines pushed before the reply to our latest logs request are for
         * the previous target; the reply carries the new one's history */
        if (c->logs_ready && console_log_matches(c, msg))
            console_log_add(c, msg);
    } else if (strcmp(type, "reply") == 0) {
        console_on_reply(c, msg);
    } else if (strcmp(type, "event") == 0) {
        /* views match events on their fields, never on the text; the text is
         * the status line's (an event this version does not know included) */
        ctl_event e;
        console_status(c, false, "%s", ctl_event_parse(msg, &e) == 0 ? e.text : console_str(msg, "text", ""));
    } else if (strcmp(type, "error") == 0) {
        console_status(c, true, "hub: %s", console_str(msg, "error", "?"));
    }
}

/* The hub went away: say so and keep the last figures (dimmed); the client retries. */
static void console_cb_disconnect(void *ctx, const char *why)
{
    console *c = ctx;
    c->conn = CONN_DOWN;
    c->logs_ready = false;
    if (c->mode == MODE_STOPPING) {
        /* the hub exits once it has stopped: its going away is the answer */
        if (!c->exit_msg[0])
            snprintf(c->exit_msg, sizeof c->exit_msg, "drover: the hub stopped");
        c->quitting = true;
    } else {
        console_status(c, true, "disconnected, retrying (%s)", why ? why : "the hub went away");
    }
    c->dirty = true;
}

/* ------------------------------------------------------------------------ */
/* Drawing primitives                                                       */
/* ------------------------------------------------------------------------ */

/* Decodes one UTF-8 character from s (n bytes left); returns its length, 0 if invalid. */
static size_t console_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t len = s[0] >= 0xF0 && s[0] < 0xF5 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 && s[0] < 0xE0 ? 2 : 0;
    if (len == 0 || len > n)
        return 0;
    uint32_t v = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && v < 0x800) || (len == 4 && (v < 0x10000 || v > 0x10FFFF)) || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* An ASCII stand-in for a few characters our own texts use, or NULL. */
static const char *console_ascii_for(uint32_t cp)
{
    switch (cp) {
    case 0x2014: case 0x2013: case 0x2500: return "-";
    case 0x2026: return "...";
    case 0x00B1: return "+-";
    case 0x00B7: case 0x2022: case 0x25CF: return "*";
    case 0x2192: return "->";
    case 0x2191: return "^";
    case 0x2193: return "v";
    case 0x2502: return "|";
    default: return NULL;
    }
}

/*
 * Draws s at (y, x) in at most w columns with attribute a; returns the
 * columns used. Nothing a worker prints can disturb the screen: control
 * characters become '?' (tabs a space), invalid UTF-8 '?', and without a
 * UTF-8 locale every non-ASCII character becomes '?' (or an ASCII stand-in),
 * so a C locale never shows mojibake.
 */
static int console_put(console *c, int y, int x, int w, const char *s, attr_t a)
{
    if (y < 0 || y >= LINES || x < 0 || x >= COLS || w <= 0)
        return 0;
    if (w > COLS - x)
        w = COLS - x;
    wchar_t buf[600];
    int n = 0, cols = 0;
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    while (left && cols < w && n < (int)(sizeof buf / sizeof buf[0]) - 4) {
        uint32_t cp;
        size_t len = console_utf8(p, left, &cp);
        if (len == 0) {
            cp = '?';
            len = 1;
        }
        p += len;
        left -= len;
        if (cp == '\t')
            cp = ' ';
        else if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0))
            cp = '?';
        if (cp >= 0x80 && !c->utf8) {
            const char *alt = console_ascii_for(cp);
            if (!alt)
                alt = "?";
            for (; *alt && cols < w; alt++, cols++)
                buf[n++] = (wchar_t)*alt;
            continue;
        }
        int cw = cp < 0x80 ? 1 : wcwidth((wchar_t)cp);
        if (cw < 0) {
            cp = '?';
            cw = 1;
        }
        if (cw == 0 && n == 0)
            continue;   /* a combining mark with nothing to combine with */
        if (cols + cw > w)
            break;
        buf[n++] = (wchar_t)cp;
        cols += cw;
    }
    if (n == 0)
        return 0;
    attrset(a);
    mvaddnwstr(y, x, buf, n);
    attrset(A_NORMAL);
    return cols;
}

/* Fills w cells of row y from x with blanks in attribute a (for bars). */
static void console_fill(int y, int x, int w, attr_t a)
{
    if (y < 0 || y >= LINES || x >= COLS || w <= 0)
        return;
    if (w > COLS - x)
        w = COLS - x;
    mvhline(y, x, ' ' | a, w);
}

/*
 * Draws a sparkline of the last w points of series s, newest at the right,
 * scaled from 0 to the window's maximum (at least floor_max), or with
 * relative from the window's minimum, for memory: a steady RSS would
 * otherwise be a wall of full blocks that hides a slow leak.
 */
static void console_spark(console *c, int y, int x, int w, const console_hist *h, int s, double floor_max,
                          bool relative)
{
    static const char *const blocks[] = {"\u2581", "\u2582", "\u2583", "\u2584",
                                         "\u2585", "\u2586", "\u2587", "\u2588"};
    static const char ascii[] = "_.-=#";
    if (w <= 0 || !h)
        return;
    unsigned k = h->n < (unsigned)w ? h->n : (unsigned)w;
    double mx = floor_max, mn = INFINITY;
    for (unsigned i = 0; i < k; i++) {
        float v = console_hist_at(h, s, k, i);
        if (!isnan(v) && v > mx)
            mx = v;
        if (!isnan(v) && v < mn)
            mn = v;
    }
    if (!relative || mn == INFINITY)
        mn = 0;
    int levels = c->utf8 ? 8 : 5;
    char buf[CONSOLE_HIST * 3 + 1];
    size_t o = 0;
    for (unsigned i = 0; i < k; i++) {
        float v = console_hist_at(h, s, k, i);
        if (isnan(v)) {
            buf[o++] = ' ';
            continue;
        }
        int lv;
        if (relative && mx - mn < mx * 0.01)
            lv = levels / 2;   /* flat */
        else
            lv = (int)lround((v < mn ? 0 : v - mn) / (mx - mn) * (levels - 1));
        if (lv >= levels)
            lv = levels - 1;
        if (c->utf8) {
            memcpy(buf + o, blocks[lv], 3);
            o += 3;
        } else {
            buf[o++] = ascii[lv];
        }
    }
    buf[o] = '\0';
    console_put(c, y, x + (w - (int)k), (int)k, buf, c->a_spark);
}

/* Draws a CPU% bar of w cells (including brackets in ASCII mode). */
static void console_bar(console *c, int y, int x, int w, double pct)
{
    if (w < 3)
        return;
    if (isnan(pct))
        pct = 0;
    if (pct > 100)
        pct = 100;
    attr_t a = pct >= 80 ? c->a_err : pct >= 50 ? c->a_warn : c->a_ok;
    if (!c->utf8) {
        int inner = w - 2;
        int fill = (int)lround(pct / 100.0 * inner);
        char buf[128];
        int n = 0;
        buf[n++] = '[';
        for (int i = 0; i < inner && n < 120; i++)
            buf[n++] = i < fill ? '|' : ' ';
        buf[n++] = ']';
        buf[n] = '\0';
        console_put(c, y, x, w, buf, a);
        return;
    }
    static const char *const part[] = {"", "\u258F", "\u258E", "\u258D", "\u258C", "\u258B", "\u258A", "\u2589"};
    int eighths = (int)lround(pct / 100.0 * w * 8);
    char buf[512];
    size_t o = 0;
    int cells = 0;
    for (; cells < eighths / 8 && o < sizeof buf - 8; cells++) {
        memcpy(buf + o, "\u2588", 3);
        o += 3;
    }
    if (eighths % 8 && cells < w) {
        size_t l = strlen(part[eighths % 8]);
        memcpy(buf + o, part[eighths % 8], l);
        o += l;
        cells++;
    }
    buf[o] = '\0';
    console_fill(y, x, w, c->a_dim);
    console_put(c, y, x, w, buf, a);
}

/* The attribute for a worker state. */
static attr_t console_state_attr(const console *c, const char *st)
{
    if (!strcmp(st, "online"))
        return c->a_ok;
    if (!strcmp(st, "starting") || !strcmp(st, "stopping"))
        return c->a_warn;
    if (!strcmp(st, "errored") || !strcmp(st, "backoff"))
        return c->a_err;
    return c->a_dim;
}

/* ------------------------------------------------------------------------ */
/* Panes                                                                    */
/* ------------------------------------------------------------------------ */

/* Formats a number with decimals, or "-" when unknown. */
static void console_fmt(double v, int decimals, const char *unit, char *out, size_t cap)
{
    if (isnan(v))
        snprintf(out, cap, "-");
    else
        snprintf(out, cap, "%.*f%s", decimals, v, unit);
}

/* The header: title, hub totals, connection state. */
static void console_draw_header(console *c, int y, int w)
{
    console_fill(y, 0, w, c->a_header);
    char title[128];
    if (c->o->title)
        snprintf(title, sizeof title, "%s", c->o->title);
    else
        snprintf(title, sizeof title, "drover \u2014 %s", c->ns[0] ? c->ns : "default");

    const char *conn = c->conn == CONN_UP ? (c->snap ? "connected" : "connected, loading...")
                     : c->conn == CONN_DOWN ? "disconnected, retrying" : "connecting...";
    attr_t conn_a = c->conn == CONN_UP ? c->a_header : (c->a_header | A_BOLD | A_BLINK);
    int right = w - 1 - (int)strlen(conn);
    if (right < 0)
        right = 0;

    char seg[6][48];   /* hub totals, in order of importance */
    int nseg = 0;
    if (c->snap) {
        json_t *apps = json_object_get(c->snap, "apps");
        double online = 0, total = 0, rps = NAN, cpu = NAN, mem = NAN;
        for (size_t i = 0; i < json_array_size(apps); i++) {
            json_t *a = json_array_get(apps, i);
            double v;
            online += isnan(v = console_num(a, "online")) ? 0 : v;
            total += isnan(v = console_num(a, "workers")) ? 0 : v;
            if (!isnan(v = console_num(a, "req_per_s")))
                rps = (isnan(rps) ? 0 : rps) + v;
            if (!isnan(v = console_num(a, "cpu_pct")))
                cpu = (isnan(cpu) ? 0 : cpu) + v;
            if (!isnan(v = console_num(a, "rss_bytes")))
                mem = (isnan(mem) ? 0 : mem) + v;
        }
        char b[32];
        snprintf(seg[nseg++], sizeof seg[0], "%.0f/%.0f online", online, total);
        console_fmt(rps, 1, "", b, sizeof b);
        snprintf(seg[nseg++], sizeof seg[0], "%s req/s", b);
        console_fmt(cpu, 1, "%", b, sizeof b);
        snprintf(seg[nseg++], sizeof seg[0], "cpu %s", b);
        columns_bytes(mem, b, sizeof b);
        snprintf(seg[nseg++], sizeof seg[0], "mem %s", b);
        console_fmt(console_num(json_object_get(c->snap, "hub"), "dropped_total"), 0, "", b, sizeof b);
        snprintf(seg[nseg++], sizeof seg[0], "%s dropped", b);
    }
    /* "connected" is the normal case: it gives way to the figures on a
     * narrow terminal, while any other state takes precedence over them */
    bool up = c->conn == CONN_UP && c->snap;
    int limit = up ? w - 1 : right - 1;
    int x = 1;
    x += console_put(c, y, x, limit - x, title, c->a_header | A_BOLD);
    for (int i = 0; i < nseg; i++) {
        int len = (int)strlen(seg[i]);
        if (x + 2 + len > limit)
            break;   /* the rest does not fit: drop it whole rather than cut a figure */
        x += 2;
        x += console_put(c, y, x, len, seg[i], c->a_header);
    }
    if (!up || x + 2 <= right)
        console_put(c, y, right, w - right, conn, conn_a);
}

/* Column names dropped first when the list is narrow (the app is in the group header). */
static const char *const console_drop_order[] = {"errors", "restarts", "lag", "uptime", "rps", "mem", NULL};

/* Chooses the list columns that fit in w cells; returns how many (indices in out). */
static int console_list_columns(int w, int *out, int *used)
{
    bool drop[32] = {false};
    for (int d = -1;; d++) {
        if (d >= 0) {
            if (!console_drop_order[d])
                break;
            for (int i = 0; columns_table[i].name && i < 32; i++)
                if (!strcmp(columns_table[i].name, console_drop_order[d]))
                    drop[i] = true;
        }
        int n = 0, width = 2;
        for (int i = 0; columns_table[i].name && i < 32; i++) {
            if (drop[i] || !strcmp(columns_table[i].name, "app"))
                continue;
            out[n++] = i;
            width += columns_table[i].width + 1;
        }
        *used = width;
        if (width <= w)
            return n;
    }
    int n = 0;
    for (int i = 0; columns_table[i].name && i < 32; i++)
        if (!drop[i] && strcmp(columns_table[i].name, "app"))
            out[n++] = i;
    return n;
}

/* Writes one cell padded to the column's width and alignment into a line buffer. */
static int console_cell(char *line, size_t cap, int at, const column *col, const char *text)
{
    int len = (int)strlen(text);
    if (len > col->width)
        len = col->width;   /* cells are ASCII: formatter output */
    int pad = col->width - len;
    if (at + col->width + 2 >= (int)cap)
        return at;
    if (col->right) {
        memset(line + at, ' ', (size_t)pad);
        memcpy(line + at + pad, text, (size_t)len);
    } else {
        memcpy(line + at, text, (size_t)len);
        memset(line + at + len, ' ', (size_t)pad);
    }
    at += col->width;
    line[at++] = ' ';
    line[at] = '\0';
    return at;
}

/* The worker list: column titles, then app headers and worker rows that fit. */
static void console_draw_list(console *c, int y, int x, int w, int h)
{
    if (h < 2 || w < 10)
        return;
    int cols[32], used = 0;
    int ncol = console_list_columns(w, cols, &used);
    bool bar = w - used >= 12;
    int bar_w = bar ? (w - used - 1 > 22 ? 22 : w - used - 1) : 0;

    /* title row */
    attr_t ta = c->focus == FOCUS_LIST ? c->a_bar_focus : c->a_bar;
    console_fill(y, x, w, ta);
    char line[512] = "  ";
    int at = 2;
    for (int i = 0; i < ncol; i++)
        at = console_cell(line, sizeof line, at, &columns_table[cols[i]], columns_table[cols[i]].title);
    console_put(c, y, x, w, line, ta);
    /* mark the sort column */
    at = x + 2;
    for (int i = 0; i < ncol; i++) {
        const column *col = &columns_table[cols[i]];
        if (cols[i] == c->sort_col) {
            int tl = (int)strlen(col->title);
            int tx = col->right ? at + col->width - tl : at;
            console_put(c, y, tx, tl, col->title, ta | A_UNDERLINE | A_BOLD);
            if (tl < col->width)
                console_put(c, y, col->right ? tx - 1 : tx + tl, 1, c->utf8 ? "\u25BC" : "v", ta | A_BOLD);
        }
        at += col->width + 1;
    }
    if (bar)
        console_put(c, y, x + used, bar_w, "CPU", ta);
    if (c->filter[0] || c->mode == MODE_FILTER) {
        char f[96];
        snprintf(f, sizeof f, " filter: %s ", c->filter);
        int fl = (int)strlen(f);
        if (fl < w / 2)
            console_put(c, y, x + w - fl, fl, f, ta | A_BOLD);
    }

    int rows_h = h - 1;
    if (c->nrows == 0) {
        console_put(c, y + 1, x + 2, w - 2,
                    c->conn != CONN_UP ? "(waiting for the hub)"
                    : c->filter[0] ? "(no worker matches the filter)" : "(no workers)", c->a_dim);
        return;
    }
    /* keep the selection visible, with its app header when it is the first of its group */
    if (c->sel >= 0) {
        long want_top = c->sel > 0 && !c->rows[c->sel - 1].w ? c->sel - 1 : c->sel;
        if (want_top < c->list_top)
            c->list_top = want_top;
        if (c->sel >= c->list_top + rows_h)
            c->list_top = c->sel - rows_h + 1;
    }
    if (c->list_top > (long)c->nrows - rows_h)
        c->list_top = (long)c->nrows - rows_h;
    if (c->list_top < 0)
        c->list_top = 0;

    for (int r = 0; r < rows_h && c->list_top + r < (long)c->nrows; r++) {
        long ri = c->list_top + r;
        const console_row *row = &c->rows[ri];
        int yy = y + 1 + r;
        if (!row->w) {
            char hd[256], b1[32], b2[32], b3[32];
            const json_t *a = row->appobj;
            console_fmt(console_num(a, "req_per_s"), 1, "", b1, sizeof b1);
            console_fmt(console_num(a, "cpu_pct"), 1, "%", b2, sizeof b2);
            columns_bytes(console_num(a, "rss_bytes"), b3, sizeof b3);
            snprintf(hd, sizeof hd, "%.60s   %.0f/%.0f online   %s req/s   cpu %s   mem %s", row->app,
                     console_num(a, "online"), console_num(a, "workers"), b1, b2, b3);
            console_put(c, yy, x, w, hd, c->a_app);
            continue;
        }
        const console_worker *wk = row->w;
        bool selected = ri == c->sel;
        at = 2;
        line[0] = selected ? '>' : ' ';
        line[1] = ' ';
        line[2] = '\0';
        int state_at = -1, state_w = 0;
        for (int i = 0; i < ncol; i++) {
            const column *col = &columns_table[cols[i]];
            char cell[64];
            col->format(wk->obj, cell, sizeof cell);
            if (!strcmp(col->name, "state")) {
                state_at = at;
                state_w = col->width;
            }
            at = console_cell(line, sizeof line, at, col, cell);
        }
        /* figures from a hub we lost are stale: dim them until it answers again */
        attr_t base = selected ? c->a_sel : c->conn == CONN_UP ? A_NORMAL : c->a_dim;
        if (selected)
            console_fill(yy, x, w, c->a_sel);
        console_put(c, yy, x, w, line, base);
        if (!selected && state_at >= 0)
            console_put(c, yy, x + state_at, state_w, wk->state, console_state_attr(c, wk->state));
        if (bar)
            console_bar(c, yy, x + used, bar_w, console_num(wk->obj, "cpu_pct"));
    }
}

/* One sparkline with its label and current value, in w cells. */
static void console_draw_series(console *c, int y, int x, int w, const console_worker *wk, int s)
{
    static const char *const label[SER_N] = {"CPU", "MEM", "REQ/S", "LAG99"};
    static const double floor_max[SER_N] = {1.0, 1024.0 * 1024, 1.0, 1.0};
    char val[32];
    double v = console_num(wk->obj, console_series_key[s]);
    if (s == SER_MEM)
        columns_bytes(v, val, sizeof val);
    else
        console_fmt(v, 1, s == SER_CPU ? "%" : s == SER_LAG ? "ms" : "", val, sizeof val);
    console_put(c, y, x, 6, label[s], A_BOLD);
    int vw = 8;
    int sw = w - 6 - vw - 1;
    if (sw > CONSOLE_HIST)
        sw = CONSOLE_HIST;
    console_spark(c, y, x + 6, sw, wk->h, s, floor_max[s], s == SER_MEM);
    console_put(c, y, x + 6 + sw + 1, vw, val, A_NORMAL);
}

/* Writes "k v  k v" of the worker's custom metrics into out. */
static void console_metrics_text(const console_worker *wk, char *out, size_t cap)
{
    const char *k;
    json_t *v;
    size_t o = 0;
    out[0] = '\0';
    json_object_foreach(json_object_get(wk->obj, "metrics"), k, v) {
        if (o + 8 >= cap)
            break;
        int n = json_is_number(v) ? snprintf(out + o, cap - o, "%s%s %g", o ? "  " : "", k, json_number_value(v))
                                  : snprintf(out + o, cap - o, "%s%s -", o ? "  " : "", k);
        if (n < 0 || (size_t)n >= cap - o)
            break;
        o += (size_t)n;
    }
}

/* The detail pane of the selected worker: identity, sparklines, latency, metrics. */
static void console_draw_detail(console *c, int y, int x, int w, int h)
{
    if (h <= 0 || w < 20)
        return;
    const console_worker *wk = console_selected(c);
    console_fill(y, x, w, c->a_bar);
    if (!wk) {
        console_put(c, y, x + 1, w - 1, "no worker selected", c->a_bar);
        return;
    }
    char t[256], up[16];
    columns_duration(console_num(wk->obj, "uptime_s"), up, sizeof up);
    const char *le = console_str(wk->obj, "last_exit", "-");
    char pid[24] = "-";
    if (wk->pid > 0)
        snprintf(pid, sizeof pid, "%ld", wk->pid);
    char more[160];
    snprintf(more, sizeof more, "up %s  restarts %.0f  last exit %s  agent %s  ready %s", up,
             console_num(wk->obj, "restarts"), le, json_is_true(json_object_get(wk->obj, "agent")) ? "yes" : "no",
             json_is_true(json_object_get(wk->obj, "ready")) ? "yes" : "no");
    bool tall = h >= 8;
    snprintf(t, sizeof t, "%.60s:%d  pid %s  %s%s%s", wk->app, wk->id, pid, wk->state, tall ? "" : "  ",
             tall ? "" : more);
    console_put(c, y, x + 1, w - 1, t, c->a_bar | A_BOLD);

    char lat[256], b1[24], b2[24], b3[24], b4[24];
    console_fmt(console_num(wk->obj, "lat_p50_ms"), 1, "ms", b1, sizeof b1);
    console_fmt(console_num(wk->obj, "lat_p99_ms"), 1, "ms", b2, sizeof b2);
    console_fmt(console_num(wk->obj, "inflight"), 0, "", b3, sizeof b3);
    console_fmt(console_num(wk->obj, "err_total"), 0, "", b4, sizeof b4);
    snprintf(lat, sizeof lat, "latency p50 %s p99 %s  inflight %s  errors %s", b1, b2, b3, b4);
    char met[512];
    console_metrics_text(wk, met, sizeof met);

    if (tall) {
        /* tall: the rest of the identity, one series per line, latency, metrics */
        console_put(c, y + 1, x + 1, w - 2, more, A_NORMAL);
        int yy = y + 2;
        for (int s = 0; s < SER_N && yy < y + h; s++, yy++)
            console_draw_series(c, yy, x + 1, w - 2, wk, s);
        if (yy < y + h)
            console_put(c, yy++, x + 1, w - 2, lat, A_NORMAL);
        /* metrics one per line when there is room */
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(wk->obj, "metrics"), k, v) {
            if (yy >= y + h)
                break;
            char mline[160];
            if (json_is_number(v))
                snprintf(mline, sizeof mline, "%-20.60s %g", k, json_number_value(v));
            else
                snprintf(mline, sizeof mline, "%-20.60s -", k);
            console_put(c, yy++, x + 1, w - 2, mline, A_NORMAL);
        }
        return;
    }
    /* compact: two series per line */
    int half = (w - 2) / 2;
    if (h >= 2) {
        console_draw_series(c, y + 1, x + 1, half - 1, wk, SER_CPU);
        console_draw_series(c, y + 1, x + 1 + half, half - 1, wk, SER_MEM);
    }
    if (h >= 3) {
        console_draw_series(c, y + 2, x + 1, half - 1, wk, SER_RPS);
        console_draw_series(c, y + 2, x + 1 + half, half - 1, wk, SER_LAG);
    }
    if (h >= 4) {
        char both[800];
        snprintf(both, sizeof both, "%s%s%s", lat, met[0] ? "   metrics: " : "", met);
        console_put(c, y + 3, x + 1, w - 2, both, A_NORMAL);
    }
}

/* The log pane: a title bar, then the newest lines that fit (or a scrolled-back page). */
static void console_draw_logs(console *c, int y, int x, int w, int h)
{
    if (h < 2)
        return;
    attr_t ta = c->focus == FOCUS_LOGS ? c->a_bar_focus : c->a_bar;
    console_fill(y, x, w, ta);
    int rows_h = h - 1;
    c->log_rows = rows_h;
    size_t max_scroll = c->log_n > (size_t)rows_h ? c->log_n - (size_t)rows_h : 0;
    if (c->log_scroll > max_scroll)
        c->log_scroll = max_scroll;
    char t[256];
    const char *what = c->log_target[0] ? c->log_target : "every app";
    const char *kind = !c->log_target[0] ? "" : c->log_app ? " (app)" : " (worker)";
    if (!c->logs_ready && c->conn == CONN_UP)
        snprintf(t, sizeof t, "%s logs %s%s   loading...", c->focus == FOCUS_LOGS ? ">" : " ", what, kind);
    else if (c->follow && c->log_scroll == 0)
        snprintf(t, sizeof t, "%s logs %s%s   following   (a: %s, f: pause)", c->focus == FOCUS_LOGS ? ">" : " ",
                 what, kind, c->log_app ? "this worker" : "whole app");
    else
        snprintf(t, sizeof t, "%s logs %s%s   paused, %zu lines up   (End: follow)", c->focus == FOCUS_LOGS ? ">" : " ",
                 what, kind, c->log_scroll);
    console_put(c, y, x, w, t, ta);

    size_t shown = c->log_n - c->log_scroll < (size_t)rows_h ? c->log_n - c->log_scroll : (size_t)rows_h;
    size_t first = c->log_n - c->log_scroll - shown;   /* index from the oldest */
    bool label = !c->log_target[0] || c->log_app;
    bool stamp = w >= 60;
    for (size_t i = 0; i < shown; i++) {
        const console_logline *l = &c->log[(c->log_head + first + i) % CONSOLE_LOG_MAX];
        int yy = y + 1 + (int)i;
        int xx = x;
        if (stamp) {
            char ts[16] = "--:--:--";
            if (!isnan(l->ts)) {
                time_t tt = (time_t)l->ts;
                struct tm tm;
                if (localtime_r(&tt, &tm))
                    strftime(ts, sizeof ts, "%H:%M:%S", &tm);
            }
            xx += console_put(c, yy, xx, 9, ts, c->a_dim) + 1;
        }
        if (label) {
            char lb[80];
            snprintf(lb, sizeof lb, "[%s%s]", l->label, l->err ? "!" : "");
            xx += console_put(c, yy, xx, x + w - xx, lb, c->a_dim) + 1;
        }
        console_put(c, yy, xx, x + w - xx, l->text, l->err ? c->a_stderr : A_NORMAL);
    }
}

/* The status line: the latest command outcome or event. */
static void console_draw_status(console *c, int y, int w)
{
    if (!c->status[0])
        return;
    char ts[16] = "";
    struct tm tm;
    if (localtime_r(&c->status_at, &tm))
        strftime(ts, sizeof ts, "%H:%M:%S", &tm);
    int x = console_put(c, y, 1, 9, ts, c->a_dim) + 2;
    console_put(c, y, x, w - x - 1, c->status, c->status_err ? c->a_err | A_BOLD : A_BOLD);
}

/* A key hint of the footer. */
typedef struct {
    const char *k, *l;
} console_hint;

/* The footer: key hints, or the prompt of the current mode. */
static void console_draw_footer(console *c, int y, int w)
{
    w -= 1;   /* never write the bottom-right cell: some terminals scroll */
    if (c->mode == MODE_FILTER) {
        char f[160];
        snprintf(f, sizeof f, "filter: %s_   (Enter keeps it, Esc clears it)", c->filter);
        console_put(c, y, 0, w, f, c->a_key);
        return;
    }
    if (c->mode == MODE_CONFIRM) {
        console_put(c, y, 0, w, c->confirm_text, c->a_key | A_BOLD);
        return;
    }
    if (c->mode == MODE_STOPPING) {
        console_put(c, y, 0, w, "stopping the hub and its workers... (q: stop waiting)", c->a_key | A_BOLD);
        return;
    }
    console_hint hints[24];
    int n = 0;
    hints[n++] = (console_hint){"?", "help"};
    hints[n++] = (console_hint){"q", "quit"};
    hints[n++] = (console_hint){c->utf8 ? "\u2191\u2193" : "j/k", "select"};
    for (int i = 0; i < CTL_CMD_N && n < 20; i++)
        if (ctl_commands[i].keys[0])
            hints[n++] = (console_hint){ctl_commands[i].keys, ctl_commands[i].name};
    hints[n++] = (console_hint){"/", "filter"};
    hints[n++] = (console_hint){"s", "sort"};
    hints[n++] = (console_hint){"a", c->log_app ? "worker logs" : "app logs"};
    hints[n++] = (console_hint){"f", "follow"};
    hints[n++] = (console_hint){"Tab", "pane"};
    int x = 0;
    for (int i = 0; i < n; i++) {
        int kl = (int)strlen(hints[i].k), ll = (int)strlen(hints[i].l);
        if (c->utf8 && !strcmp(hints[i].k, "\u2191\u2193"))
            kl = 2;
        if (x + kl + ll + 1 > w)
            break;
        x += console_put(c, y, x, kl, hints[i].k, c->a_key) + 1;
        x += console_put(c, y, x, ll, hints[i].l, A_NORMAL) + 2;
    }
}

/*
 * Draws a centered box of lines (the help overlay and the prompts). A tab in
 * a line splits it in a key column and a text column.
 */
static void console_draw_box(console *c, const char *title, const char *const *lines, int n)
{
    enum { KEYCOL = 13 };
    int bw = 0;
    for (int i = 0; i < n; i++) {
        const char *tab = strchr(lines[i], '\t');
        int l = tab ? KEYCOL + (int)strlen(tab + 1) : (int)strlen(lines[i]);   /* texts are ASCII */
        if (l > bw)
            bw = l;
    }
    bw += 4;
    if (bw > COLS - 2)
        bw = COLS - 2;
    int bh = n + 2;
    if (bh > LINES - 2)
        bh = LINES - 2;
    int bx = (COLS - bw) / 2, by = (LINES - bh) / 2;
    for (int r = 0; r < bh; r++)
        console_fill(by + r, bx, bw, c->a_header);
    attr_t a = c->a_header;
    if (c->utf8) {
        mvaddch(by, bx, ACS_ULCORNER | a);
        mvhline(by, bx + 1, ACS_HLINE | a, bw - 2);
        mvaddch(by, bx + bw - 1, ACS_URCORNER | a);
        mvaddch(by + bh - 1, bx, ACS_LLCORNER | a);
        mvhline(by + bh - 1, bx + 1, ACS_HLINE | a, bw - 2);
        mvaddch(by + bh - 1, bx + bw - 1, ACS_LRCORNER | a);
        mvvline(by + 1, bx, ACS_VLINE | a, bh - 2);
        mvvline(by + 1, bx + bw - 1, ACS_VLINE | a, bh - 2);
    } else {
        /* plain ASCII: ACS line drawing may not exist without a UTF-8 locale */
        mvhline(by, bx, '-' | a, bw);
        mvhline(by + bh - 1, bx, '-' | a, bw);
        mvvline(by + 1, bx, '|' | a, bh - 2);
        mvvline(by + 1, bx + bw - 1, '|' | a, bh - 2);
    }
    int tl = (int)strlen(title);
    console_put(c, by, bx + (bw - tl) / 2, bw - 2, title, c->a_header | A_BOLD);
    for (int i = 0; i < n && i < bh - 2; i++) {
        const char *tab = strchr(lines[i], '\t');
        if (!tab) {
            console_put(c, by + 1 + i, bx + 2, bw - 4, lines[i], c->a_header);
            continue;
        }
        char key[32];
        snprintf(key, sizeof key, "%.*s", (int)(tab - lines[i]), lines[i]);
        console_put(c, by + 1 + i, bx + 2, KEYCOL - 1, key, c->a_header | A_BOLD);
        console_put(c, by + 1 + i, bx + 2 + KEYCOL, bw - 4 - KEYCOL, tab + 1, c->a_header);
    }
}

/* The help overlay: every key, with the command keys and texts from ctl_commands. */
static void console_draw_help(console *c)
{
    static char buf[40][200];
    const char *lines[40];
    int n = 0;
    const char *updown = c->utf8 ? "\u2191/\u2193 j/k" : "Up/Down j/k";
    snprintf(buf[n++], sizeof buf[0], "%s\tselect a worker (logs pane focused: scroll a line)", updown);
    snprintf(buf[n++], sizeof buf[0], "%s\tmove the focus between the worker list and the logs", "Tab");
    snprintf(buf[n++], sizeof buf[0], "%s\tscroll the logs a page", "PgUp/PgDn");
    snprintf(buf[n++], sizeof buf[0], "%s\toldest log line / newest, following again", "Home/End");
    snprintf(buf[n++], sizeof buf[0], "%s\tfollow the logs on/off", "f");
    snprintf(buf[n++], sizeof buf[0], "%s\tlogs of the whole app / of the selected worker", "a");
    snprintf(buf[n++], sizeof buf[0], "%s\tfilter on app, app:id, pid or state (Enter keeps, Esc clears)", "/");
    snprintf(buf[n++], sizeof buf[0], "%s\tsort by the next column (now %s)", "s", columns_table[c->sort_col].title);
    for (int i = 0; i < CTL_CMD_N && n < 36; i++) {
        const ctl_command *e = &ctl_commands[i];
        if (!e->keys[0])
            continue;
        snprintf(buf[n++], sizeof buf[0], "%s\t%s: %s%s", e->keys, e->name, e->help,
                 e->confirm ? " (asks y/n)" : "");
    }
    snprintf(buf[n++], sizeof buf[0], "%s\tthis help (any key closes it)", "?");
    snprintf(buf[n++], sizeof buf[0], "%s\tquit", "q");
    for (int i = 0; i < n; i++)
        lines[i] = buf[i];
    console_draw_box(c, " keys ", lines, n);
}

/* Redraws the whole screen from the model (ncurses sends only what changed). */
static void console_draw(console *c)
{
    uint64_t t0 = uv_hrtime();
    if (c->resized) {
        clearok(curscr, TRUE);   /* repaint every cell: no leftovers from the old layout */
        c->resized = false;
    }
    erase();
    int H = LINES, W = COLS;
    if (H < 10 || W < 40) {
        console_put(c, 0, 0, W, "terminal too small", A_BOLD);
        console_put(c, 1, 0, W, "40x10 at least", A_NORMAL);
        console_put(c, 2, 0, W, "q quits", A_NORMAL);
    } else {
        console_draw_header(c, 0, W);
        int body_y = 1, body_h = H - 3;
        if (W >= CONSOLE_WIDE_W && body_h >= 18) {
            /* the top holds the list and the detail: as tall as either needs,
             * within 55 % of the body; the logs get the rest */
            const console_worker *sw = console_selected(c);
            int detail_need = 8 + (sw ? (int)json_object_size(json_object_get(sw->obj, "metrics")) : 0);
            int top = (int)c->nrows + 1 > detail_need ? (int)c->nrows + 1 : detail_need;
            if (top > body_h * 55 / 100)
                top = body_h * 55 / 100;
            int lw = W - CONSOLE_DETAIL_W - 1;
            console_draw_list(c, body_y, 0, lw, top);
            mvvline(body_y, lw, (c->utf8 ? ACS_VLINE : '|') | c->a_dim, top);
            console_draw_detail(c, body_y, lw + 1, CONSOLE_DETAIL_W, top);
            console_draw_logs(c, body_y + top, 0, W, body_h - top);
        } else {
            int detail_h = body_h >= 16 ? 4 : 3;
            int rest = body_h - detail_h;
            int list_h = (int)c->nrows + 1;
            int half = rest / 2;
            if (list_h > half)
                list_h = half;
            if (list_h < 3)
                list_h = 3;
            console_draw_list(c, body_y, 0, W, list_h);
            console_draw_detail(c, body_y + list_h, 0, W, detail_h);
            console_draw_logs(c, body_y + list_h + detail_h, 0, W, rest - list_h);
        }
        console_draw_status(c, H - 2, W);
        console_draw_footer(c, H - 1, W);
        if (c->mode == MODE_HELP) {
            console_draw_help(c);
        } else if (c->mode == MODE_QUIT) {
            const char *l[] = {"Stop the workers and the hub?", "",
                               "[y]es / [n]o, leave it running / [c]ancel"};
            console_draw_box(c, " quit ", l, 3);
        } else if (c->mode == MODE_CONFIRM) {
            const char *l[] = {c->confirm_text};
            console_draw_box(c, " confirm ", l, 1);
        }
    }
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
    c->dirty = false;
}

/* ------------------------------------------------------------------------ */
/* Quitting                                                                 */
/* ------------------------------------------------------------------------ */

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
                         (uv_handle_t *)&c->frame, (uv_handle_t *)&c->logs_timer, (uv_handle_t *)&c->stop_timer};
    for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++)
        if (!uv_is_closing(hs[i]))
            uv_close(hs[i], console_on_closed);
    client_free(c->cl);
    c->cl = NULL;
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
    c->mode = MODE_STOPPING;
    console_status(c, false, "stopping the hub and its workers...");
    uv_timer_start(&c->stop_timer, console_on_stop_timeout, CONSOLE_STOP_WAIT_MS, 0);
}

/* Quits leaving the hub running, with the one line that says how to come back. */
static void console_leave(console *c, bool say)
{
    if (say) {
        char opt[300] = "";
        char def[300], err[160];
        const char *ns = c->ns[0] ? c->ns : "default";
        /* name what the user must pass to find this hub again: its namespace,
         * or its socket directory when it is not the namespace's default */
        bool is_default = client_ctl_path(NULL, ns, def, sizeof def, err, sizeof err) == 0 &&
                          strcmp(def, c->o->ctl_path) == 0;
        if (!is_default) {
            char dir[300];
            snprintf(dir, sizeof dir, "%s", c->o->ctl_path);
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            snprintf(opt, sizeof opt, " --socket-dir %.280s", dir);
        } else if (strcmp(ns, "default") != 0) {
            snprintf(opt, sizeof opt, " -L %.60s", ns);
        }
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
        c->mode = MODE_QUIT;
        c->dirty = true;
        break;
    case CONSOLE_QUIT_LEAVE:
        console_leave(c, false);
        break;
    case CONSOLE_QUIT_STOP:
        console_stop_hub(c);
        break;
    }
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */
/* ------------------------------------------------------------------------ */

/* The command bound to a key in ctl_commands ("x F9", "+ -"), or NULL. */
static const ctl_command *console_command_for_key(int key, bool fkey)
{
    for (int i = 0; i < CTL_CMD_N; i++) {
        const ctl_command *e = &ctl_commands[i];
        const char *p = e->keys;
        while (p && *p) {
            while (*p == ' ')
                p++;
            const char *end = p;
            while (*end && *end != ' ')
                end++;
            size_t len = (size_t)(end - p);
            if (len == 1 && !fkey && key == (unsigned char)*p)
                return e;
            if (len >= 2 && p[0] == 'F' && fkey && key == KEY_F(atoi(p + 1)))
                return e;
            p = end;
        }
    }
    return NULL;
}

/*
 * Runs the command bound to a key on the selection: a worker target for
 * commands that take APP:ID (kill, restart), the app for the others (reload,
 * scale ±1). Commands marked confirm ask y/n on screen first.
 */
static void console_command(console *c, const ctl_command *e, int key)
{
    const console_worker *w = console_selected(c);
    if (!w) {
        console_status(c, true, "select a worker first");
        return;
    }
    if (!client_connected(c->cl)) {
        console_status(c, true, "not connected to the hub: %s not sent", e->name);
        return;
    }
    char target[80];
    if (e->target == CTL_TARGET_REQUIRED)
        snprintf(target, sizeof target, "%.60s:%d", w->app, w->id);
    else
        snprintf(target, sizeof target, "%.60s", w->app);
    if (e->confirm) {
        c->confirm_cmd = e;
        snprintf(c->confirm_target, sizeof c->confirm_target, "%s", target);
        if (strchr(target, ':') && w->pid > 0)
            snprintf(c->confirm_text, sizeof c->confirm_text, "%s %s (pid %ld)? [y/n]", e->name, target, w->pid);
        else
            snprintf(c->confirm_text, sizeof c->confirm_text, "%s %s? [y/n]", e->name, target);
        c->mode = MODE_CONFIRM;
        c->dirty = true;
        return;
    }
    ctl_request r = ctl_request_make(e->cmd, target);
    if (e->args & CTL_ARG_DELTA) {
        r.has_delta = true;
        r.delta = key == '-' ? -1 : 1;
    }
    client_send(c->cl, ctl_request_json(&r));
    console_status(c, false, "%s %s ...", e->name, target);
}

/* Scrolls the log pane by delta lines (positive: older). */
static void console_log_scroll(console *c, long delta)
{
    long s = (long)c->log_scroll + delta;
    if (s < 0)
        s = 0;
    if (s > (long)c->log_n)
        s = (long)c->log_n;
    c->log_scroll = (size_t)s;
    c->follow = c->log_scroll == 0;
    c->dirty = true;
}

/* A page of the log pane (its height at the last redraw, less one line of context). */
static int console_log_page(const console *c)
{
    return c->log_rows > 2 ? c->log_rows - 1 : 1;
}

/* Handles one key in the normal mode. */
static void console_key_normal(console *c, int key, bool fkey)
{
    if (fkey) {
        switch (key) {
        case KEY_UP:
            if (c->focus == FOCUS_LOGS)
                console_log_scroll(c, 1);
            else
                console_select_move(c, -1);
            return;
        case KEY_DOWN:
            if (c->focus == FOCUS_LOGS)
                console_log_scroll(c, -1);
            else
                console_select_move(c, 1);
            return;
        case KEY_PPAGE: console_log_scroll(c, console_log_page(c)); return;
        case KEY_NPAGE: console_log_scroll(c, -console_log_page(c)); return;
        case KEY_HOME:  console_log_scroll(c, (long)c->log_n); return;
        case KEY_END:   console_log_scroll(c, -(long)c->log_n); return;
        case KEY_BTAB:
            c->focus = c->focus == FOCUS_LIST ? FOCUS_LOGS : FOCUS_LIST;
            c->dirty = true;
            return;
        case KEY_RESIZE:
            c->dirty = true;
            return;
        default:
            break;
        }
        const ctl_command *e = console_command_for_key(key, true);
        if (e)
            console_command(c, e, key);
        return;
    }
    switch (key) {
    case 'j':
        if (c->focus == FOCUS_LOGS)
            console_log_scroll(c, -1);
        else
            console_select_move(c, 1);
        return;
    case 'k':
        if (c->focus == FOCUS_LOGS)
            console_log_scroll(c, 1);
        else
            console_select_move(c, -1);
        return;
    case '\t':
        c->focus = c->focus == FOCUS_LIST ? FOCUS_LOGS : FOCUS_LIST;
        c->dirty = true;
        return;
    case '/':
        snprintf(c->filter_saved, sizeof c->filter_saved, "%s", c->filter);
        c->mode = MODE_FILTER;
        c->dirty = true;
        return;
    case 's': {
        int i = c->sort_col;
        do {
            i = columns_table[i + 1].name ? i + 1 : 0;
        } while (!columns_table[i].sort_key && i != c->sort_col);
        c->sort_col = i;
        console_rebuild(c);
        console_status(c, false, "sorted by %s", columns_table[i].title);
        return;
    }
    case 'f':
        /* paused, the view stays on its lines while new ones arrive below */
        c->follow = !c->follow;
        if (c->follow)
            c->log_scroll = 0;
        c->dirty = true;
        return;
    case 'a':
        c->log_app = !c->log_app;
        console_logs_retarget(c, false);
        return;
    case '?':
        c->mode = MODE_HELP;
        c->dirty = true;
        return;
    case 'q':
        console_quit_key(c);
        return;
    case 12:   /* Ctrl-L: repaint */
        c->resized = true;
        c->dirty = true;
        return;
    default:
        break;
    }
    const ctl_command *e = console_command_for_key(key, false);
    if (e)
        console_command(c, e, key);
}

/* Handles one key read from the terminal, in the current mode. */
static void console_key(console *c, int key, bool fkey)
{
    if (fkey && key == KEY_RESIZE) {
        c->dirty = true;
        return;
    }
    switch (c->mode) {
    case MODE_HELP:
        c->mode = MODE_NORMAL;
        c->dirty = true;
        return;
    case MODE_QUIT:
        if (!fkey && (key == 'y' || key == 'Y')) {
            c->mode = MODE_NORMAL;
            console_stop_hub(c);
        } else if (!fkey && (key == 'n' || key == 'N')) {
            console_leave(c, true);
        } else if (!fkey && (key == 'c' || key == 'C' || key == 27 || key == 'q')) {
            c->mode = MODE_NORMAL;
            c->dirty = true;
        }
        return;
    case MODE_CONFIRM:
        c->mode = MODE_NORMAL;
        c->dirty = true;
        if (!fkey && (key == 'y' || key == 'Y') && c->confirm_cmd) {
            if (client_connected(c->cl)) {
                ctl_request r = ctl_request_make(c->confirm_cmd->cmd, c->confirm_target);
                client_send(c->cl, ctl_request_json(&r));
                console_status(c, false, "%s %s ...", c->confirm_cmd->name, c->confirm_target);
            } else {
                console_status(c, true, "not connected to the hub: %s not sent", c->confirm_cmd->name);
            }
        } else {
            console_status(c, false, "%s cancelled", c->confirm_cmd ? c->confirm_cmd->name : "command");
        }
        c->confirm_cmd = NULL;
        return;
    case MODE_STOPPING:
        if (!fkey && (key == 'q' || key == 27)) {
            snprintf(c->exit_msg, sizeof c->exit_msg,
                     "drover: stopped waiting for the hub; 'drover ls' shows whether it still runs");
            console_finish(c);
        }
        return;
    case MODE_FILTER: {
        size_t len = strlen(c->filter);
        if (!fkey && key == 27) {
            c->filter[0] = '\0';
            c->mode = MODE_NORMAL;
        } else if ((!fkey && (key == '\r' || key == '\n')) || (fkey && key == KEY_ENTER)) {
            c->mode = MODE_NORMAL;
        } else if ((fkey && key == KEY_BACKSPACE) || (!fkey && (key == 127 || key == 8))) {
            while (len > 0 && ((unsigned char)c->filter[len - 1] & 0xC0) == 0x80)
                len--;   /* a whole UTF-8 character */
            if (len > 0)
                len--;
            c->filter[len] = '\0';
        } else if (!fkey && key == 21) {   /* Ctrl-U */
            c->filter[0] = '\0';
        } else if (!fkey && key >= 0x20 && key != 0x7F) {
            char mb[8];
            mbstate_t st;
            memset(&st, 0, sizeof st);
            size_t k = key < 0x80 ? (mb[0] = (char)key, 1) : wcrtomb(mb, (wchar_t)key, &st);
            if (k != (size_t)-1 && len + k < sizeof c->filter) {
                memcpy(c->filter + len, mb, k);
                c->filter[len + k] = '\0';
            }
        } else {
            return;
        }
        /* narrow as you type; rows are cheap to rebuild */
        console_rebuild(c);
        console_logs_retarget(c, false);
        return;
    }
    case MODE_NORMAL:
        console_key_normal(c, key, fkey);
        return;
    }
}

/* ------------------------------------------------------------------------ */
/* Loop callbacks                                                           */
/* ------------------------------------------------------------------------ */

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
        c->dirty = true;
        break;
    }
    case SIGINT:
        /* Ctrl-C as q; a second one while asking leaves the hub running (the safe answer) */
        if (c->mode == MODE_QUIT)
            console_leave(c, true);
        else if (c->mode == MODE_STOPPING)
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
    if (!c->dirty)
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

/* ------------------------------------------------------------------------ */
/* Setup                                                                    */
/* ------------------------------------------------------------------------ */

/* Chooses the attributes: colours when the terminal has them and NO_COLOR is unset. */
static void console_setup_attrs(console *c)
{
    const char *term = getenv("TERM");
    const char *nc = getenv("NO_COLOR");
    c->colors = has_colors() && !(nc && *nc) && !(term && strstr(term, "-mono"));
    if (c->colors && start_color() == OK) {
        use_default_colors();
        init_pair(1, COLOR_WHITE, COLOR_BLUE);   /* header, boxes */
        init_pair(2, COLOR_GREEN, -1);
        init_pair(3, COLOR_YELLOW, -1);
        init_pair(4, COLOR_RED, -1);
        init_pair(5, COLOR_BLACK, COLOR_CYAN);   /* pane titles */
        init_pair(6, COLOR_BLACK, COLOR_GREEN);  /* focused pane title */
        init_pair(7, COLOR_CYAN, -1);
        init_pair(8, COLOR_BLACK, COLOR_WHITE);  /* selected row */
        c->a_header = COLOR_PAIR(1);
        c->a_ok = COLOR_PAIR(2);
        c->a_warn = COLOR_PAIR(3);
        c->a_err = COLOR_PAIR(4);
        c->a_bar = COLOR_PAIR(5);
        c->a_bar_focus = COLOR_PAIR(6) | A_BOLD;
        c->a_spark = COLOR_PAIR(7);
        c->a_sel = COLOR_PAIR(8) | A_BOLD;
        c->a_dim = A_DIM;
        c->a_stderr = COLOR_PAIR(4);
        c->a_key = COLOR_PAIR(5);
        c->a_app = COLOR_PAIR(7) | A_BOLD;
    } else {
        c->colors = false;
        /* readable with attributes alone */
        c->a_header = A_REVERSE;
        c->a_ok = A_NORMAL;
        c->a_warn = A_BOLD;
        c->a_err = A_BOLD;
        c->a_bar = A_REVERSE;
        c->a_bar_focus = A_REVERSE | A_BOLD;
        c->a_spark = A_NORMAL;
        c->a_sel = A_REVERSE | A_BOLD;
        c->a_dim = A_DIM;
        c->a_stderr = A_BOLD;
        c->a_key = A_REVERSE;
        c->a_app = A_BOLD | A_UNDERLINE;
    }
}

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
            c->redraws ? c->draw_sum_ms / (double)c->redraws : 0.0, c->draw_max_ms, c->nw, c->build_max_ms);
    fclose(f);
}

/* Frees the model. */
static void console_free_model(console *c)
{
    console_log_clear(c);
    for (size_t i = 0; i < c->nw; i++)
        free(c->w[i].h);
    free(c->w);
    free(c->view);
    free(c->rows);
    json_decref(c->snap);
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
    c->sel = -1;
    c->sel_id = -1;
    c->sub_req = c->logs_req = c->stop_req = -1;
    c->follow = true;
    c->dirty = true;
    c->sort_col = 0;
    for (int i = 0; columns_table[i].name; i++)
        if (!strcmp(columns_table[i].name, "id"))
            c->sort_col = i;

    /* Wide characters need the user's locale; numbers stay in C's format. */
    setlocale(LC_ALL, "");
    setlocale(LC_NUMERIC, "C");
    c->utf8 = MB_CUR_MAX > 1 && strcmp(nl_langinfo(CODESET), "UTF-8") == 0;

    c->infd = console_open_input(c);
    FILE *in = c->infd >= 0 ? fdopen(c->infd, "r") : NULL;
    if (!in) {
        fprintf(stderr, "drover: cannot open the terminal for input: %s\n", strerror(errno));
        if (c->infd >= 0)
            close(c->infd);
        free(c);
        return 1;
    }
    /* newterm, not initscr: initscr exits the process when TERM is unusable */
    SCREEN *scr = newterm(NULL, stdout, in);
    if (!scr) {
        const char *t = getenv("TERM");
        fprintf(stderr, "drover: cannot drive terminal type '%s'; set TERM (e.g. xterm-256color)\n",
                t ? t : "(unset)");
        fclose(in);
        free(c);
        return 1;
    }
    set_term(scr);
    cbreak();
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    set_escdelay(25);   /* Esc must feel immediate; sequences arrive in one read anyway */
    curs_set(0);
    console_setup_attrs(c);

    /* a write to a hub that just went away must be an error, not a death */
    struct sigaction old_pipe, ign = {.sa_handler = SIG_IGN};
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old_pipe);

    int rc = 0;
    uv_loop_init(&c->loop);
    if (uv_poll_init(&c->loop, &c->in, c->infd) != 0) {
        endwin();
        delscreen(scr);
        fclose(in);
        uv_loop_close(&c->loop);
        fprintf(stderr, "drover: the console cannot watch this terminal for keys\n");
        sigaction(SIGPIPE, &old_pipe, NULL);
        free(c);
        return 1;
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
    c->frame.data = c->logs_timer.data = c->stop_timer.data = c;
    c->handles_open = true;

    client_callbacks cb = {console_cb_hello, console_cb_message, console_cb_disconnect};
    c->cl = client_new(&c->loop, o->ctl_path, CONSOLE_RETRY_MS, &cb, c);
    if (!c->cl) {
        snprintf(c->exit_msg, sizeof c->exit_msg, "drover: out of memory");
        rc = 1;
        console_finish(c);
    } else {
        console_status(c, false, "connecting to %s", o->ctl_path);
    }

    uv_run(&c->loop, UV_RUN_DEFAULT);

    /* restore the terminal; after a hangup there is none, and endwin fails harmlessly */
    endwin();
    delscreen(scr);
    fclose(in);   /* closes c->infd */
    if (c->infd_shared)
        fcntl(STDIN_FILENO, F_SETFL, c->infd_flags);
    uv_loop_close(&c->loop);
    sigaction(SIGPIPE, &old_pipe, NULL);
    if (!c->quiet && c->exit_msg[0])
        fprintf(stderr, "%s\n", c->exit_msg);
    console_write_stats(c);
    console_free_model(c);
    free(c);
    return rc;
}
