/*
 * console_model.c — the console's model: hub messages applied, history
 * rings, the log ring, sort and filter (see console_model.h).
 *
 * The display rows are rebuilt once per state message or sort/filter change,
 * never per frame; the panes format only the rows that fit on screen.
 */
#include "tui/console_model.h"
#include "proto/buckets.h"

#include "proto/control.h"
#include "tui/columns.h"

#include <malloc.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const console_model_series_key[CONSOLE_SER_N] = {"cpu_pct", "rss_bytes", "req_per_s", "lag_p99_ms"};

/* ---- small helpers ------------------------------------------------------------ */

/* See console_model.h. */
double console_model_num(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* See console_model.h. */
long console_model_int(const json_t *obj, const char *key, long dflt)
{
    double v = console_model_num(obj, key);
    return isfinite(v) && fabs(v) < 1e15 ? (long)v : dflt;
}

/* See console_model.h. */
const char *console_model_str(const json_t *obj, const char *key, const char *dflt)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : dflt;
}

/* See console_model.h. */
void console_model_exit_text(const char *last_exit, char *out, size_t cap)
{
    int v;
    const char *abbrev;
    if (last_exit && sscanf(last_exit, "exit %d", &v) == 1)
        snprintf(out, cap, "status %d", v);
    else if (last_exit && sscanf(last_exit, "signal %d", &v) == 1 && v > 0 && v < 65 && (abbrev = sigabbrev_np(v)))
        snprintf(out, cap, "signal %s", abbrev);
    else if (last_exit && *last_exit)
        snprintf(out, cap, "%.40s", last_exit);
    else
        snprintf(out, cap, "-");
}

/* See console_model.h. */
void console_model_status(console_model *m, bool err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->status, sizeof m->status, fmt, ap);
    va_end(ap);
    m->status_err = err;
    m->status_at = time(NULL);
    m->dirty = true;
}

/* See console_model.h. */
bool console_model_connected(const console_model *m)
{
    return m->conn == CONSOLE_UP;
}

/* See console_model.h. */
console_worker *console_model_selected(const console_model *m)
{
    if (m->sel < 0 || (size_t)m->sel >= m->nrows)
        return NULL;
    return m->rows[m->sel].w;
}

/* See console_model.h. */
void console_model_init(console_model *m)
{
    memset(m, 0, sizeof *m);
    m->sel = -1;
    m->sel_id = -1;
    m->search_line = -1;
    m->sub_req = m->logs_req = -1;
    m->follow = true;
    m->dirty = true;
    m->sort_col = 0;
    for (int i = 0; columns_table[i].name; i++)
        if (!strcmp(columns_table[i].name, "id"))
            m->sort_col = i;
}

/* ---- history rings ------------------------------------------------------------ */

/* Appends one point per series from a worker object. */
static void console_model_hist_push(console_hist *h, const json_t *obj)
{
    for (int s = 0; s < CONSOLE_SER_N; s++)
        h->v[s][h->head] = (float)console_model_num(obj, console_model_series_key[s]);
    h->head = (h->head + 1) % CONSOLE_HIST;
    if (h->n < CONSOLE_HIST)
        h->n++;
}

/* Replaces h with the "history" object of a subscribe reply (oldest first). */
static void console_model_hist_load(console_hist *h, const json_t *hist)
{
    memset(h, 0, sizeof *h);
    size_t n = 0;
    for (int s = 0; s < CONSOLE_SER_N; s++) {
        size_t k = json_array_size(json_object_get(hist, console_model_series_key[s]));
        if (k > n)
            n = k;
    }
    if (n > CONSOLE_HIST)
        n = CONSOLE_HIST;
    for (size_t i = 0; i < n; i++) {
        for (int s = 0; s < CONSOLE_SER_N; s++) {
            json_t *arr = json_object_get(hist, console_model_series_key[s]);
            size_t k = json_array_size(arr);
            /* align every series on its newest point */
            json_t *v = (i + k >= n) ? json_array_get(arr, i + k - n) : NULL;
            h->v[s][i] = json_is_number(v) ? (float)json_number_value(v) : NAN;
        }
    }
    h->n = (unsigned)n;
    h->head = (unsigned)(n % CONSOLE_HIST);
}

/* See console_model.h. */
unsigned console_model_hist_last(const console_hist *h, int s, unsigned k, float *out)
{
    if (!h)
        return 0;
    if (k > h->n)
        k = h->n;
    for (unsigned i = 0; i < k; i++)
        out[i] = h->v[s][(h->head + CONSOLE_HIST * 2 - k + i) % CONSOLE_HIST];
    return k;
}

/* ---- logs ------------------------------------------------------------------------ */

/* Drops every line of the log pane. */
static void console_model_log_clear(console_model *m)
{
    for (size_t i = 0; i < m->log_n; i++) {
        console_logline *l = &m->log[(m->log_head + i) % CONSOLE_LOG_MAX];
        free(l->text);
        l->text = NULL;
    }
    m->log_head = m->log_n = 0;
    m->log_scroll = 0;
    m->search_line = -1;
    m->dirty = true;
}

/* Appends a protocol log object to the ring, evicting the oldest line when full. */
static void console_model_log_add(console_model *m, const json_t *msg)
{
    json_t *jt = json_object_get(msg, "text");
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
    if (m->log_n == CONSOLE_LOG_MAX) {
        l = &m->log[m->log_head];
        free(l->text);
        m->log_head = (m->log_head + 1) % CONSOLE_LOG_MAX;
        if (m->search_line >= 0)
            m->search_line--;   /* indices count from the oldest line, which just went */
    } else {
        l = &m->log[(m->log_head + m->log_n) % CONSOLE_LOG_MAX];
        m->log_n++;
    }
    /* paused: the view counts from the bottom, so keep it on the same lines */
    if (!m->follow)
        m->log_scroll++;
    l->text = copy;
    l->ts = console_model_num(msg, "ts");
    snprintf(l->label, sizeof l->label, "%.60s:%ld", console_model_str(msg, "app", "?"),
             console_model_int(msg, "id", -1));
    l->err = strcmp(console_model_str(msg, "stream", "out"), "err") == 0;
    m->dirty = true;
}

const char *console_model_target(const console_worker *w, char *out, size_t cap)
{
    bool by_pid = !w->owned && w->pid > 0;
    return ctl_target_format(w->app, by_pid ? -1 : w->id, by_pid ? w->pid : 0, out, cap);
}

/* The log target for the current selection: "app:id", "app:pid:PID", "app", or "" (all). */
static void console_model_log_target(const console_model *m, char *out, size_t cap)
{
    const console_worker *w = console_model_selected(m);
    if (w && m->log_app)
        snprintf(out, cap, "%.60s", w->app);
    else if (w)
        console_model_target(w, out, cap);
    else if (m->sel_app[0])
        snprintf(out, cap, m->log_app ? "%.60s" : "%.60s:%d", m->sel_app, m->sel_id);
    else
        snprintf(out, cap, "%s", "");
}

/* True when a pushed log line belongs to what the pane shows. */
static bool console_model_log_matches(const console_model *m, const json_t *msg)
{
    if (!m->log_target[0])
        return true;
    char t[80];
    const char *app = console_model_str(msg, "app", "");
    if (strstr(m->log_target, ":pid:"))
        ctl_target_format(app, -1, console_model_int(msg, "pid", 0), t, sizeof t);
    else if (strchr(m->log_target, ':'))
        snprintf(t, sizeof t, "%.60s:%ld", app, console_model_int(msg, "id", -1));
    else
        snprintf(t, sizeof t, "%.60s", app);
    return strcmp(t, m->log_target) == 0;
}

/* The host of the selection (fleet), "" for none. */
static const char *console_model_sel_host(const console_model *m)
{
    const console_worker *w = console_model_selected(m);
    return w && w->host ? w->host : m->sel_host;
}

/* See console_model.h. */
int console_model_logs_retarget(console_model *m, bool force)
{
    char t[80];
    console_model_log_target(m, t, sizeof t);
    const char *host = console_model_sel_host(m);
    if (!force && strcmp(t, m->log_target) == 0 && strcmp(host, m->log_host) == 0)
        return -1;
    snprintf(m->log_target, sizeof m->log_target, "%s", t);
    snprintf(m->log_host, sizeof m->log_host, "%s", host);
    console_model_log_clear(m);
    m->logs_ready = false;
    m->logs_req = -1;
    m->follow = true;
    return force ? 0 : CONSOLE_LOGS_DELAY_MS;
}

/* See console_model.h. */
json_t *console_model_logs_request(console_model *m)
{
    ctl_request r = ctl_request_make(CTL_LOGS, m->log_target);
    r.lines = CONSOLE_LOG_REQ;
    r.follow = true;
    m->logs_ready = false;
    return ctl_request_json(&r);
}

/* See console_model.h. */
void console_model_log_scroll(console_model *m, long delta)
{
    long s = (long)m->log_scroll + delta;
    if (s < 0)
        s = 0;
    if (s > (long)m->log_n)
        s = (long)m->log_n;
    m->log_scroll = (size_t)s;
    m->follow = m->log_scroll == 0;
    m->dirty = true;
}

/* See console_model.h. */
int console_model_log_page(const console_model *m)
{
    return m->log_rows > 2 ? m->log_rows - 1 : 1;
}

/* See console_model.h. */
bool console_model_search_hit(const console_model *m, const char *text)
{
    return m->search[0] && text && strcasestr(text, m->search) != NULL;
}

/* The text of the log line i lines from the oldest. */
static const char *console_model_log_text(const console_model *m, size_t i)
{
    return m->log[(m->log_head + i) % CONSOLE_LOG_MAX].text;
}

/* Scrolls the log pane so line i (from the oldest) shows, with a few lines of context below it. */
static void console_model_log_show(console_model *m, size_t i)
{
    long rows = m->log_rows > 0 ? m->log_rows : 1;
    long bottom = (long)m->log_n - (long)m->log_scroll;   /* one past the last line shown */
    long top = bottom - rows;
    if ((long)i < top || (long)i >= bottom) {
        long ctx = rows > 6 ? 3 : 0;
        long want_bottom = (long)i + 1 + ctx;
        if (want_bottom > (long)m->log_n)
            want_bottom = (long)m->log_n;
        m->log_scroll = (size_t)((long)m->log_n - want_bottom);
    }
    m->follow = m->log_scroll == 0;
    m->dirty = true;
}

/* See console_model.h. */
bool console_model_search_step(console_model *m, int dir)
{
    if (!m->search[0] || m->log_n == 0)
        return false;
    long from;
    if (dir == 0 || m->search_line < 0) {
        from = (long)m->log_n - (long)m->log_scroll - 1;   /* the bottom of the view, going up */
        dir = dir < 0 ? -1 : 1;
        if (dir < 0)
            return false;
    } else {
        from = m->search_line + (dir > 0 ? -1 : 1);
    }
    for (long i = from; i >= 0 && i < (long)m->log_n; i += dir > 0 ? -1 : 1) {
        if (console_model_search_hit(m, console_model_log_text(m, (size_t)i))) {
            m->search_line = i;
            console_model_log_show(m, (size_t)i);
            return true;
        }
    }
    m->dirty = true;
    return false;
}

/* See console_model.h. */
size_t console_model_search_count(const console_model *m)
{
    size_t n = 0;
    for (size_t i = 0; m->search[0] && i < m->log_n; i++)
        n += console_model_search_hit(m, console_model_log_text(m, i));
    return n;
}

/* ---- sorting, filtering, selection ---------------------------------------------- */

/* Orders workers by app, then the sort key (larger first, unknown last), then id. */
static int console_model_cmp_view(const void *a, const void *b)
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
    if (x->host && y->host && (r = strcmp(x->host, y->host)) != 0)
        return r;   /* a fleet: an app's workers host by host */
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return (x->key > y->key) - (x->key < y->key);
}

/* The same order with the sort key reversed (unknown values still last, ties still by id). */
static int console_model_cmp_view_rev(const void *a, const void *b)
{
    const console_worker *x = *(console_worker *const *)a, *y = *(console_worker *const *)b;
    int r = strcmp(x->app, y->app);
    if (r)
        return r;
    bool xn = isnan(x->sortv), yn = isnan(y->sortv);
    if (xn != yn)
        return xn ? 1 : -1;
    if (!xn && x->sortv != y->sortv)
        return x->sortv < y->sortv ? -1 : 1;
    return console_model_cmp_view(a, b);
}

/* True when host (NULL: none) is one of hosts[0..n). */
static bool console_model_in(const char *host, const char *const *hosts, size_t n)
{
    for (size_t i = 0; host && i < n; i++)
        if (strcmp(host, hosts[i]) == 0)
            return true;
    return false;
}

/* Orders workers by key (for lookups across snapshots). */
static int console_model_cmp_key(const void *a, const void *b)
{
    const console_worker *x = a, *y = b;
    return (x->key > y->key) - (x->key < y->key);
}

/* True when w passes the filter: a case-insensitive substring of app:id, pid, state or host. */
static bool console_model_match(const console_model *m, const console_worker *w)
{
    if (!m->filter[0])
        return true;
    if (w->host && strcasestr(w->host, m->filter))
        return true;
    char buf[96];
    console_model_target(w, buf, sizeof buf);
    if (strcasestr(buf, m->filter))
        return true;
    if (w->pid > 0) {
        snprintf(buf, sizeof buf, "%ld", w->pid);
        if (strstr(buf, m->filter))
            return true;
    }
    return strcasestr(w->state, m->filter) != NULL;
}

/* The aggregate object of app in the snapshot, or NULL. */
static const json_t *console_model_app_obj(const console_model *m, const char *app)
{
    json_t *apps = json_object_get(m->snap, "apps");
    for (size_t i = 0; i < json_array_size(apps); i++) {
        json_t *a = json_array_get(apps, i);
        if (strcmp(console_model_str(a, "app", ""), app) == 0)
            return a;
    }
    return NULL;
}

/* Records the selected row's identity, so it survives rebuilds. */
static void console_model_sel_remember(console_model *m)
{
    const console_worker *w = console_model_selected(m);
    if (!w)
        return;
    m->sel_key = w->key;
    snprintf(m->sel_app, sizeof m->sel_app, "%s", w->app);
    m->sel_id = w->id;
    snprintf(m->sel_host, sizeof m->sel_host, "%s", w->host ? w->host : "");
}

/* True when w is on host (fleet); with one hub every worker is. */
static bool console_model_on_host(const console_worker *w, const char *host)
{
    return !w->host || strcmp(w->host, host) == 0;
}

/*
 * Fills m->rows from the first nv workers of m->view (sorted): an app header
 * before each app's first worker. Returns false when out of memory (no rows).
 */
static bool console_model_group(console_model *m, size_t nv)
{
    /* at most one header per worker plus the workers */
    size_t need = nv * 2 + 1;
    if (need > m->nrows_cap) {
        console_row *nr = realloc(m->rows, need * sizeof *nr);
        if (!nr) {
            m->nrows = 0;
            return false;
        }
        m->rows = nr;
        m->nrows_cap = need;
    }
    size_t n = 0;
    const char *cur = NULL;
    for (size_t i = 0; i < nv; i++) {
        console_worker *w = m->view[i];
        if (!cur || strcmp(cur, w->app) != 0) {
            cur = w->app;
            m->rows[n++] = (console_row){NULL, cur, console_model_app_obj(m, cur)};
        }
        m->rows[n++] = (console_row){w, w->app, NULL};
    }
    m->nrows = n;
    return true;
}

/*
 * The row of the selection after a rebuild: the same key, else the same
 * app:id (a reload replaces a row by a new key), else the worker row nearest
 * to the old index; -1 when there is none.
 */
static long console_model_find_sel(const console_model *m, long old_sel)
{
    size_t n = m->nrows;
    for (size_t i = 0; i < n; i++)
        if (m->rows[i].w && m->rows[i].w->key == m->sel_key)
            return (long)i;
    for (size_t i = 0; i < n; i++)
        if (m->rows[i].w && m->rows[i].w->id == m->sel_id && strcmp(m->rows[i].w->app, m->sel_app) == 0 &&
            console_model_on_host(m->rows[i].w, m->sel_host))
            return (long)i;
    if (n == 0)
        return -1;
    long want = old_sel < 0 ? 0 : old_sel;
    if (want >= (long)n)
        want = (long)n - 1;
    for (long d = 0; d < (long)n; d++) {
        if (want + d < (long)n && m->rows[want + d].w)
            return want + d;
        if (want - d >= 0 && m->rows[want - d].w)
            return want - d;
    }
    return -1;
}

/* See console_model.h. */
void console_model_rebuild(console_model *m)
{
    long old_sel = m->sel;
    const column *col = &columns_table[m->sort_col];
    size_t nv = 0;
    for (size_t i = 0; i < m->nw; i++) {
        console_worker *w = &m->w[i];
        if (!console_model_match(m, w))
            continue;
        w->sortv = col->sort_key ? col->sort_key(w->obj) : NAN;
        m->view[nv++] = w;
    }
    qsort(m->view, nv, sizeof *m->view, m->sort_rev ? console_model_cmp_view_rev : console_model_cmp_view);
    if (!console_model_group(m, nv)) {
        m->sel = -1;
        return;
    }
    m->sel = console_model_find_sel(m, old_sel);
    console_model_sel_remember(m);
    m->dirty = true;
}

/* See console_model.h. */
bool console_model_select_move(console_model *m, int delta)
{
    if (m->nrows == 0)
        return false;
    long i = m->sel < 0 ? 0 : m->sel;
    int step = delta < 0 ? -1 : 1;
    for (int left = abs(delta); left > 0; left--) {
        long j = i + step;
        while (j >= 0 && j < (long)m->nrows && !m->rows[j].w)
            j += step;
        if (j < 0 || j >= (long)m->nrows)
            break;
        i = j;
    }
    if (!m->rows[i].w)
        return false;
    m->sel = i;
    console_model_sel_remember(m);
    m->dirty = true;
    return true;
}

/* See console_model.h. */
const char *console_model_sort_next(console_model *m)
{
    if (m->sort_picked && !m->sort_rev) {
        m->sort_rev = true;
    } else {
        int i = m->sort_col;
        do {
            i = columns_table[i + 1].name ? i + 1 : 0;
        } while (!columns_table[i].sort_key && i != m->sort_col);
        m->sort_col = i;
        m->sort_rev = false;
    }
    m->sort_picked = true;
    console_model_rebuild(m);
    return columns_table[m->sort_col].title;
}

/* See console_model.h. */
bool console_model_sort_by(console_model *m, int col)
{
    int n = 0;
    while (columns_table[n].name)
        n++;
    if (col < 0 || col >= n || !columns_table[col].sort_key)
        return false;
    m->sort_rev = col == m->sort_col ? !m->sort_rev : false;
    m->sort_col = col;
    m->sort_picked = true;
    console_model_rebuild(m);
    return true;
}

/* ---- applying hub messages -------------------------------------------------------- */

/*
 * Reads the workers of a snapshot into a new array sorted by key, moving each
 * history from the old row of the same key; the history is loaded
 * (with_history) or gets one point, for every worker when hosts is NULL,
 * else only for workers on one of hosts[0..nhosts) (a fleet). Returns the
 * array (NULL when out of memory) with its length in *count.
 */
static console_worker *console_model_read_workers(console_model *m, const json_t *msg, bool with_history,
                                                  const char *const *hosts, size_t nhosts, size_t *count)
{
    json_t *ws = json_object_get(msg, "workers");
    size_t n = json_array_size(ws);
    console_worker *nw = calloc(n ? n : 1, sizeof *nw);
    if (!nw)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *obj = json_array_get(ws, i);
        if (!json_is_object(obj))
            continue;
        console_worker *w = &nw[k];
        json_t *jk = json_object_get(obj, "key");
        w->key = json_is_integer(jk) ? json_integer_value(jk) : -(json_int_t)i - 1;
        w->obj = obj;
        w->app = console_model_str(obj, "app", "?");
        w->state = console_model_str(obj, "state", "-");
        w->host = json_string_value(json_object_get(obj, "host"));
        w->id = (int)console_model_int(obj, "id", -1);
        w->pid = console_model_int(obj, "pid", 0);
        json_t *ow = json_object_get(obj, "owned");
        w->owned = json_is_boolean(ow) ? json_is_true(ow) : w->id >= 0;   /* an older hub: ids are drover's */
        console_worker probe = {.key = w->key};
        console_worker *old = m->nw ? bsearch(&probe, m->w, m->nw, sizeof *m->w, console_model_cmp_key) : NULL;
        if (old && old->h) {
            w->h = old->h;      /* the history moves to the new row */
            old->h = NULL;
        } else {
            w->h = calloc(1, sizeof *w->h);
            if (!w->h)
                continue;
        }
        /* a fleet: another host's worker keeps its ring as it is */
        bool mine = !hosts || console_model_in(w->host, hosts, nhosts);
        if (mine && with_history)
            console_model_hist_load(w->h, json_object_get(obj, "history"));
        else if (mine)
            console_model_hist_push(w->h, obj);
        k++;
    }
    qsort(nw, k, sizeof *nw, console_model_cmp_key);
    *count = k;
    return nw;
}

/* Frees the workers (and their histories) of the current snapshot. */
static void console_model_free_workers(console_model *m)
{
    for (size_t i = 0; i < m->nw; i++)
        free(m->w[i].h);
    free(m->w);
    free(m->view);
}

/*
 * Replaces the workers with a snapshot's (a state message, or the subscribe
 * reply whose workers carry "history"). Histories follow their worker by key;
 * a state message appends one point to each (in a fleet: to those on
 * hosts[0..nhosts) only; hosts NULL: every worker).
 */
static void console_model_apply_snapshot(console_model *m, const json_t *msg, bool with_history,
                                         const char *const *hosts, size_t nhosts)
{
    size_t n = json_array_size(json_object_get(msg, "workers"));
    console_worker **nview = calloc(n ? n : 1, sizeof *nview);
    if (!nview)
        return;
    size_t k;
    console_worker *nw = console_model_read_workers(m, msg, with_history, hosts, nhosts, &k);
    if (!nw) {
        free(nview);
        return;
    }
    console_model_free_workers(m);
    m->w = nw;
    m->nw = k;
    m->view = nview;
    json_t *keep = json_incref((json_t *)msg);
    json_decref(m->snap);
    m->snap = keep;
    console_model_rebuild(m);
}

/* The subscribe reply: the first snapshot, with history. Returns the logs delay (0). */
static int console_model_on_subscribed(console_model *m, const json_t *msg)
{
    console_model_apply_snapshot(m, msg, true, NULL, 0);
    /* The histories are in the rings now: drop them from the kept snapshot
     * and hand the freed heap back, since a reply for 1000 workers holds
     * ~500k JSON numbers. */
    json_t *ws = json_object_get(msg, "workers");
    for (size_t i = 0; i < json_array_size(ws); i++)
        json_object_del(json_array_get(ws, i), "history");
    malloc_trim(0);
    return console_model_logs_retarget(m, true);
}

/* The reply to our logs request: the target's recent lines replace the pane's. */
static void console_model_on_logs(console_model *m, const json_t *msg)
{
    console_model_log_clear(m);
    json_t *lines = json_object_get(msg, "lines");
    for (size_t i = 0; i < json_array_size(lines); i++)
        console_model_log_add(m, json_array_get(lines, i));
    m->logs_ready = true;
    m->log_scroll = 0;
    m->follow = true;
    m->dirty = true;
}

/* A reply: to our subscribe, to our logs request, or a command's outcome. Returns the logs delay or -1. */
static int console_model_on_reply(console_model *m, const json_t *msg)
{
    long id = console_model_int(msg, "id", -2);   /* -1 is "not sent" */
    bool ok = json_is_true(json_object_get(msg, "ok"));
    if (id == m->sub_req) {
        if (ok)
            return console_model_on_subscribed(m, msg);
        console_model_status(m, true, "subscribe failed: %s", console_model_str(msg, "error", "?"));
    } else if (id == m->logs_req) {
        if (ok)
            console_model_on_logs(m, msg);
        else
            console_model_status(m, true, "logs: %s", console_model_str(msg, "error", "?"));
    } else if (ok) {
        json_t *app = json_object_get(msg, "app");
        if (json_is_object(app) && json_is_array(json_object_get(app, "command"))) {
            /* a describe reply: the overlay shows it until a key closes it */
            json_decref(m->describe);
            m->describe = json_incref(app);
            m->dirty = true;
            return -1;
        }
        const char *s = console_model_str(msg, "msg", "");
        if (*s)
            console_model_status(m, false, "%s", s);
    } else {
        console_model_status(m, true, "%s", console_model_str(msg, "error", "the hub refused the command"));
    }
    return -1;
}

/*
 * The workers of app (every app when "") that show starting in the latest
 * snapshot, named as targets ("web:2, web:3", then "+N more") into out;
 * returns how many.
 */
static size_t console_model_app_starting(const console_model *m, const char *app, char *out, size_t cap)
{
    size_t n = 0, len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < m->nw; i++) {
        if ((app[0] && strcmp(m->w[i].app, app) != 0) || strcmp(m->w[i].state, "starting") != 0)
            continue;
        if (++n <= 3 && len < cap) {
            char t[80];
            int r = snprintf(out + len, cap - len, "%s%s", n > 1 ? ", " : "", console_model_target(&m->w[i], t, sizeof t));
            len += r > 0 ? (size_t)r : 0;
        }
    }
    if (n > 3 && len < cap)
        snprintf(out + len, cap - len, " +%zu more", n - 3);
    return n;
}

/*
 * After a snapshot, the held outcome's machine (console_done_phase in
 * console_model.h): "done" is shown only by a snapshot with no worker of its
 * app starting; after CONSOLE_DONE_WAIT snapshots that still show one, the
 * status says what was replaced and which still start, without "done".
 */
static void console_model_done_check(console_model *m)
{
    char starting[200], said[sizeof m->done_said];
    size_t n;
    switch (m->done_phase) {
    case CONSOLE_DONE_NONE:
        return;
    case CONSOLE_DONE_HELD:
    case CONSOLE_DONE_PENDING:
        n = console_model_app_starting(m, m->done_app, starting, sizeof starting);
        if (n == 0) {
            m->done_phase = CONSOLE_DONE_NONE;
            console_model_status(m, false, "%s", m->done_text);
            return;
        }
        if (m->done_phase == CONSOLE_DONE_HELD && --m->done_wait > 0)
            return;
        m->done_phase = CONSOLE_DONE_PENDING;
        snprintf(said, sizeof said, "%s, %s still starting", m->done_what, starting);
        if (strcmp(said, m->done_said) != 0) {   /* said again only when it changed */
            snprintf(m->done_said, sizeof m->done_said, "%s", said);
            console_model_status(m, false, "%s", said);
        }
        return;
    }
}

/*
 * An event: its human line goes to the status line. The fields (kind, phase,
 * app…) are what a view matches on; an event this version does not know
 * still has its line shown. An outcome that says done is held until the
 * list shows it (the state message that does follows the event).
 */
static void console_model_on_event(console_model *m, const json_t *msg)
{
    ctl_event e;
    bool known = ctl_event_parse(msg, &e) == 0;
    const char *text = known ? e.text : console_model_str(msg, "text", "");
    if (known && e.phase == CTL_PHASE_DONE && (e.kind == CTL_EV_RELOAD || e.kind == CTL_EV_REPLACE)) {
        const char *app = e.app ? e.app : "";
        snprintf(m->done_text, sizeof m->done_text, "%s", text);
        snprintf(m->done_app, sizeof m->done_app, "%s", app);
        /* the same outcome without the word: what the status says while the list disagrees */
        if (e.kind == CTL_EV_REPLACE && e.id >= 0)
            snprintf(m->done_what, sizeof m->done_what, "%.60s:%d replaced", app, e.id);
        else if (e.kind == CTL_EV_REPLACE)
            snprintf(m->done_what, sizeof m->done_what, "%.60s: a worker replaced", app);
        else if (e.done >= 0 && e.total >= 0)
            snprintf(m->done_what, sizeof m->done_what, "reload %.60s: %d/%d replaced", app, e.done, e.total);
        else
            snprintf(m->done_what, sizeof m->done_what, "reload %.60s: every worker replaced", app);
        m->done_said[0] = '\0';
        m->done_wait = CONSOLE_DONE_WAIT;
        m->done_phase = CONSOLE_DONE_HELD;   /* shown by the next snapshot that agrees */
        return;
    }
    if (known && e.kind == CTL_EV_RELOAD && e.phase == CTL_PHASE_STARTED)
        m->done_phase = CONSOLE_DONE_NONE;   /* a new reload: the held outcome is stale */
    console_model_status(m, false, "%s", text);
}

/* See console_model.h. */
int console_model_apply(console_model *m, const json_t *msg)
{
    const char *type = console_model_str(msg, "type", "");
    if (strcmp(type, "state") == 0) {
        console_model_apply_snapshot(m, msg, false, NULL, 0);
        console_model_done_check(m);
    } else if (strcmp(type, "log") == 0) {
        /* lines pushed before the reply to our latest logs request are for
         * the previous target; the reply carries the new one's history */
        if (m->logs_ready && console_model_log_matches(m, msg))
            console_model_log_add(m, msg);
    } else if (strcmp(type, "reply") == 0) {
        return console_model_on_reply(m, msg);
    } else if (strcmp(type, "event") == 0) {
        console_model_on_event(m, msg);
    } else if (strcmp(type, "error") == 0) {
        console_model_status(m, true, "hub: %s", console_model_str(msg, "error", "?"));
    }
    return -1;
}

/* See console_model.h. */
void console_model_apply_fleet(console_model *m, const json_t *msg, bool with_history, const char *const *hosts,
                               size_t nhosts)
{
    static const char *const none[1] = {NULL};
    console_model_apply_snapshot(m, msg, with_history, hosts ? hosts : none, hosts ? nhosts : 0);
    if (!with_history && nhosts)
        console_model_done_check(m);
}

/* See console_model.h. */
void console_model_hello(console_model *m, const json_t *hello)
{
    m->conn = CONSOLE_UP;
    snprintf(m->ns, sizeof m->ns, "%s", console_model_str(hello, "ns", "default"));
    snprintf(m->hub_mode, sizeof m->hub_mode, "%s", console_model_str(hello, "mode", "?"));
    m->hub_pid = console_model_int(hello, "hub_pid", 0);
    console_model_status(m, false, "connected to the hub (pid %ld, %s mode)", m->hub_pid, m->hub_mode);
    m->logs_req = -1;
    m->logs_ready = false;
}

/* See console_model.h. */
void console_model_disconnected(console_model *m)
{
    m->conn = CONSOLE_DOWN;
    m->logs_ready = false;
    m->dirty = true;
}

/* See console_model.h. */
void console_model_free(console_model *m)
{
    console_model_log_clear(m);
    console_model_free_workers(m);
    free(m->rows);
    json_decref(m->snap);
    json_decref(m->describe);
    m->describe = NULL;
    m->w = NULL;
    m->view = NULL;
    m->rows = NULL;
    m->snap = NULL;
    m->nw = m->nrows = m->nrows_cap = 0;
}

/* ---- a fleet's latency ----------------------------------------------------- */

/* Adds a snapshot's sparse histogram ({"idx":[…],"count":[…]}, PROTOCOL.md §4.4) into sum; false when there is none. */
static bool console_model_hist_add(uint64_t *sum, const json_t *h)
{
    json_t *idx = json_object_get(h, "idx"), *count = json_object_get(h, "count");
    size_t n = json_array_size(idx);
    if (!n || n != json_array_size(count))
        return false;
    for (size_t i = 0; i < n; i++) {
        json_int_t k = json_integer_value(json_array_get(idx, i)), c = json_integer_value(json_array_get(count, i));
        if (k < 0 || k >= HIST_NBUCKETS || c <= 0)
            continue;
        sum[k] = (uint64_t)c > UINT64_MAX - sum[k] ? UINT64_MAX : sum[k] + (uint64_t)c;
    }
    return true;
}

/* The larger of a and b, where NAN is unknown. */
static double console_model_maxf(double a, double b)
{
    return isnan(b) ? a : isnan(a) || b > a ? b : a;
}

void console_model_fleet_latency(json_t *f, const json_t *const *apps, size_t n)
{
    static uint64_t lat[HIST_NBUCKETS], lag[HIST_NBUCKETS];   /* the console's thread only */
    const char *name = console_model_str(f, "app", "");
    bool has_lat = false, has_lag = false;
    double lat_max = NAN, lag_max = NAN;
    memset(lat, 0, sizeof lat);
    memset(lag, 0, sizeof lag);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < json_array_size(apps[i]); j++) {
            const json_t *a = json_array_get(apps[i], j);
            if (strcmp(console_model_str(a, "app", ""), name) != 0)
                continue;
            has_lat |= console_model_hist_add(lat, json_object_get(a, "lat_hist"));
            has_lag |= console_model_hist_add(lag, json_object_get(a, "lag_hist"));
            lat_max = console_model_maxf(lat_max, console_model_num(a, "lat_max_ms"));
            lag_max = console_model_maxf(lag_max, console_model_num(a, "lag_max_ms"));
        }
    /* clamped by the largest max a host saw, as a hub clamps by its workers' */
    uint64_t lat_clamp = isnan(lat_max) ? 0 : (uint64_t)llround(lat_max * 1000.0);
    uint64_t lag_clamp = isnan(lag_max) ? 0 : (uint64_t)llround(lag_max * 1000.0);
    if (has_lat) {
        json_object_set_new(f, "lat_p50_ms", json_real((double)hist_quantile(lat, 5000, lat_clamp) / 1000.0));
        json_object_set_new(f, "lat_p99_ms", json_real((double)hist_quantile(lat, 9900, lat_clamp) / 1000.0));
    }
    if (has_lag)
        json_object_set_new(f, "lag_p99_ms", json_real((double)hist_quantile(lag, 9900, lag_clamp) / 1000.0));
    if (!isnan(lat_max))
        json_object_set_new(f, "lat_max_ms", json_real(lat_max));
    if (!isnan(lag_max))
        json_object_set_new(f, "lag_max_ms", json_real(lag_max));
}

