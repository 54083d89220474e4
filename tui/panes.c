/*
 * panes.c — the console's panes and their layout (see panes.h).
 */
#include "tui/panes.h"

#include "tui/columns.h"
#include "tui/console_model.h"
#include "tui/human.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define PANES_DETAIL_W  56    /* width of the side detail pane in the wide layout */
#define PANES_WIDE_W    150   /* from this width the detail pane goes beside the list */
#define PANES_COLS_MAX  32    /* list columns considered */
#define PANES_FIELDS_MAX 40   /* fields of one line fitted by priority */
#define FLEET_HOSTS_LINES 128 /* hosts a fleet's header considers (tui/fleet.h allows 64 and the local one) */

/* What every pane draws from. */
typedef struct {
    keys_state     *k;
    console_model  *m;
    const draw_ctx *d;
} panes_ctx;

/* ---- helpers ------------------------------------------------------------------------ */

/* Formats a figure humanized (tui/human.h) with a unit, or "-" when unknown. */
static void panes_fmt(double v, const char *unit, char *out, size_t cap)
{
    human_format_unit(v, HUMAN_SI, unit, out, cap);
}

/* The attribute for a worker state. */
static attr_t panes_state_attr(const draw_ctx *d, const char *st)
{
    if (!strcmp(st, "online"))
        return d->a_ok;
    if (!strcmp(st, "starting") || !strcmp(st, "stopping"))
        return d->a_warn;
    if (!strcmp(st, "errored") || !strcmp(st, "backoff"))
        return d->a_err;
    return d->a_dim;
}

/* ---- header ---------------------------------------------------------------------------- */

/* One figure of the header: its text, and its priority (1 is kept longest on a narrow terminal). */
typedef struct {
    char text[80];
    int  prio;
} panes_seg;

/* Appends one field (printf-style) with priority prio to seg[*n] when there is room (cap). */
__attribute__((format(printf, 5, 6)))
static void panes_field(panes_seg *seg, int *n, int cap, int prio, const char *fmt, ...)
{
    if (*n >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(seg[*n].text, sizeof seg[*n].text, fmt, ap);
    va_end(ap);
    seg[(*n)++].prio = prio;
}

/*
 * Writes the header's figures into seg in display order: the apps whose
 * every worker is online (of all apps), the workers' totals (online, req/s,
 * CPU, memory), then the host's (CPU of every core, memory
 * used/total, load average, from the snapshot's "host", which the hub reads),
 * then the reports dropped. Returns how many.
 */
static int panes_totals(const console_model *m, panes_seg *seg)
{
    if (!m->snap)
        return 0;
    json_t *apps = json_object_get(m->snap, "apps");
    double online = 0, total = 0, rps = NAN, cpu = NAN, mem = NAN;
    int apps_online = 0;   /* apps whose every worker is online */
    for (size_t i = 0; i < json_array_size(apps); i++) {
        json_t *a = json_array_get(apps, i);
        double v, w;
        online += isnan(v = console_model_num(a, "online")) ? 0 : v;
        total += isnan(w = console_model_num(a, "workers")) ? 0 : w;
        apps_online += !isnan(v) && !isnan(w) && w > 0 && v == w;
        if (!isnan(v = console_model_num(a, "req_per_s")))
            rps = (isnan(rps) ? 0 : rps) + v;
        if (!isnan(v = console_model_num(a, "cpu_pct")))
            cpu = (isnan(cpu) ? 0 : cpu) + v;
        if (!isnan(v = console_model_num(a, "rss_bytes")))
            mem = (isnan(mem) ? 0 : mem) + v;
    }
    const json_t *host = json_object_get(m->snap, "host");
    char b[32], b2[32];
    int n = 0;
    seg[n] = (panes_seg){.prio = 1};
    snprintf(seg[n++].text, sizeof seg[0].text, "apps %d/%zu online", apps_online, json_array_size(apps));
    seg[n] = (panes_seg){.prio = 1};
    snprintf(seg[n++].text, sizeof seg[0].text, "%.0f/%.0f online", online, total);
    seg[n] = (panes_seg){.prio = 5};
    panes_fmt(rps, "", b, sizeof b);
    snprintf(seg[n++].text, sizeof seg[0].text, "%s req/s", b);
    seg[n] = (panes_seg){.prio = 3};
    panes_fmt(cpu, "%", b, sizeof b);
    snprintf(seg[n++].text, sizeof seg[0].text, "cpu %s", b);
    seg[n] = (panes_seg){.prio = 6};
    columns_bytes(mem, b, sizeof b);
    snprintf(seg[n++].text, sizeof seg[0].text, "mem %s", b);
    if (json_is_object(host)) {
        seg[n] = (panes_seg){.prio = 2};
        panes_fmt(console_model_num(host, "cpu_pct"), "%", b, sizeof b);
        snprintf(seg[n++].text, sizeof seg[0].text, "host cpu %s", b);
        seg[n] = (panes_seg){.prio = 7};
        columns_bytes(console_model_num(host, "mem_used_bytes"), b, sizeof b);
        columns_bytes(console_model_num(host, "mem_total_bytes"), b2, sizeof b2);
        snprintf(seg[n++].text, sizeof seg[0].text, "host mem %s/%s", b, b2);
        json_t *load = json_object_get(host, "load");
        double l[3];
        for (int i = 0; i < 3; i++) {
            json_t *v = json_array_get(load, (size_t)i);
            l[i] = json_is_number(v) ? json_number_value(v) : NAN;
        }
        seg[n] = (panes_seg){.prio = 4};
        if (isnan(l[0]) || isnan(l[1]) || isnan(l[2]))
            snprintf(seg[n++].text, sizeof seg[0].text, "load -");
        else
            snprintf(seg[n++].text, sizeof seg[0].text, "load %.2f %.2f %.2f", l[0], l[1], l[2]);
    }
    seg[n] = (panes_seg){.prio = 8};
    panes_fmt(console_model_num(json_object_get(m->snap, "hub"), "dropped_total"), "", b, sizeof b);
    snprintf(seg[n++].text, sizeof seg[0].text, "%s dropped", b);
    return n;
}

/*
 * Marks in keep the fields shown in room cells (each takes its width plus
 * two blanks): the most important first; a field that does not fit is
 * dropped whole (never cut mid-word) and the next ones are still tried.
 */
static void panes_fit(const draw_ctx *d, const panes_seg *seg, int n, int room, bool *keep)
{
    int maxp = 0, len[PANES_FIELDS_MAX];
    if (n > PANES_FIELDS_MAX)
        n = PANES_FIELDS_MAX;
    for (int i = 0; i < n; i++) {
        keep[i] = false;
        len[i] = draw_width(d, seg[i].text);
        if (seg[i].prio > maxp)
            maxp = seg[i].prio;
    }
    for (int prio = 1; prio <= maxp; prio++)
        for (int i = 0; i < n; i++)
            if (seg[i].prio == prio && len[i] + 2 <= room) {
                keep[i] = true;
                room -= len[i] + 2;
            }
}

/*
 * Draws the fields of seg that fit in w cells from (y, x), chosen by
 * priority (panes_fit), in their own order, two blanks apart; returns the
 * columns used.
 */
static int panes_put_fields(const draw_ctx *d, int y, int x, int w, const panes_seg *seg, int n, attr_t a)
{
    bool keep[PANES_FIELDS_MAX];
    if (n > PANES_FIELDS_MAX)
        n = PANES_FIELDS_MAX;
    panes_fit(d, seg, n, w + 2, keep);
    int at = 0;
    for (int i = 0; i < n; i++) {
        if (!keep[i])
            continue;
        if (at)
            at += 2;
        at += draw_put(d, y, x + at, w - at, seg[i].text, a);
    }
    return at;
}

/*
 * panes_put_fields for a line whose first field names it (an app, the logs'
 * target): that one always shows, cut at the edge only when it alone is
 * wider than the line; the others are kept whole or dropped by priority.
 */
static void panes_put_named(const draw_ctx *d, int y, int x, int w, const panes_seg *seg, int n, attr_t a)
{
    if (n > 0 && draw_width(d, seg[0].text) > w)
        draw_put(d, y, x, w, seg[0].text, a);
    else
        panes_put_fields(d, y, x, w, seg, n, a);
}

/* The header: title, hub totals and the host's figures that fit, connection state. */
static void panes_header(const panes_ctx *p, const char *title, int y, int w)
{
    const console_model *m = p->m;
    const draw_ctx *d = p->d;
    draw_fill(y, 0, w, d->a_header);
    char t[128];
    if (title)
        snprintf(t, sizeof t, "%s", title);
    else
        snprintf(t, sizeof t, "drover \u2014 %s", m->ns[0] ? m->ns : "default");

    const char *conn = m->conn == CONSOLE_UP ? (m->snap ? "connected" : "connected, loading...")
                     : m->conn == CONSOLE_DOWN ? "disconnected, retrying" : "connecting...";
    char hosts_up[48];
    if (m->fleet) {
        /* a fleet: how many hubs answer (each has its own line below) */
        json_t *hs = json_object_get(m->snap, "hosts");
        size_t up = 0;
        for (size_t i = 0; i < json_array_size(hs); i++)
            up += strcmp(console_model_str(json_array_get(hs, i), "state", ""), "up") == 0;
        snprintf(hosts_up, sizeof hosts_up, "%zu/%zu hosts up", up, json_array_size(hs));
        conn = hosts_up;
    }
    attr_t conn_a = m->conn == CONSOLE_UP ? d->a_header : (d->a_header | A_BOLD | A_BLINK);
    int right = w - 1 - (int)strlen(conn);
    if (right < 0)
        right = 0;

    panes_seg seg[10];
    bool keep[10];
    int nseg = panes_totals(m, seg);
    /* "connected" is the normal case: it gives way to the figures on a
     * narrow terminal, while any other state takes precedence over them */
    bool up = m->conn == CONSOLE_UP && m->snap;
    int limit = up ? w - 1 : right - 1;
    int x = 1;
    x += draw_put(d, y, x, limit - x, t, d->a_header | A_BOLD);
    /* "connected" keeps its place unless a figure of the first four would be dropped for it */
    panes_fit(d, seg, nseg, right - 1 - x, keep);
    for (int i = 0; up && i < nseg; i++)
        if (!keep[i] && seg[i].prio <= 4) {
            panes_fit(d, seg, nseg, limit - x, keep);
            break;
        }
    for (int i = 0; i < nseg; i++) {
        if (!keep[i])
            continue;
        int len = (int)strlen(seg[i].text);
        x += 2;
        x += draw_put(d, y, x, len, seg[i].text, d->a_header);
    }
    if (!up || x + 2 <= right)
        draw_put(d, y, right, w - right, conn, conn_a);
}

/*
 * A fleet's line for one host (an object of the merged snapshot's "hosts":
 * name, state, why, and that hub's apps and host figures): its workers
 * online/total, req/s, CPU and memory, the machine's CPU and memory; or why
 * it is not there ("unreachable, retrying (…)").
 */
static void panes_host_line(const panes_ctx *p, const json_t *h, int y, int w)
{
    const draw_ctx *d = p->d;
    const char *state = console_model_str(h, "state", "connecting");
    char line[512], b[4][32];
    int x = 1 + draw_put(d, y, 1, w - 2, console_model_str(h, "host", "?"), d->a_app | A_BOLD);
    if (strcmp(state, "up") != 0) {
        const char *why = console_model_str(h, "why", "");
        if (!strncmp(why, "unreachable: ", 13))
            why += 13;   /* ssh's reason already says so: said once */
        if (!strcmp(state, "down"))
            snprintf(line, sizeof line, "unreachable, retrying (%.400s)", *why ? why : "?");
        else if (*why)
            snprintf(line, sizeof line, "connecting... (%.400s)", why);
        else
            snprintf(line, sizeof line, "connecting...");
        draw_put(d, y, x + 2, w - x - 3, line, d->a_err | A_BOLD);
        return;
    }
    json_t *apps = json_object_get(h, "apps");
    double online = 0, total = 0, rps = NAN, cpu = NAN, mem = NAN, v;
    for (size_t i = 0; i < json_array_size(apps); i++) {
        json_t *a = json_array_get(apps, i);
        online += isnan(v = console_model_num(a, "online")) ? 0 : v;
        total += isnan(v = console_model_num(a, "workers")) ? 0 : v;
        if (!isnan(v = console_model_num(a, "req_per_s")))
            rps = (isnan(rps) ? 0 : rps) + v;
        if (!isnan(v = console_model_num(a, "cpu_pct")))
            cpu = (isnan(cpu) ? 0 : cpu) + v;
        if (!isnan(v = console_model_num(a, "rss_bytes")))
            mem = (isnan(mem) ? 0 : mem) + v;
    }
    panes_seg seg[5];
    int n = 0;
    seg[n] = (panes_seg){.prio = 1};
    snprintf(seg[n++].text, sizeof seg[0].text, "%.0f/%.0f online", online, total);
    panes_fmt(rps, "", b[0], sizeof b[0]);
    seg[n] = (panes_seg){.prio = 2};
    snprintf(seg[n++].text, sizeof seg[0].text, "%s req/s", b[0]);
    panes_fmt(cpu, "%", b[1], sizeof b[1]);
    seg[n] = (panes_seg){.prio = 3};
    snprintf(seg[n++].text, sizeof seg[0].text, "cpu %s", b[1]);
    columns_bytes(mem, b[2], sizeof b[2]);
    seg[n] = (panes_seg){.prio = 4};
    snprintf(seg[n++].text, sizeof seg[0].text, "mem %s", b[2]);
    const json_t *host = json_object_get(h, "machine");
    if (json_is_object(host)) {
        panes_fmt(console_model_num(host, "cpu_pct"), "%", b[3], sizeof b[3]);
        seg[n] = (panes_seg){.prio = 5};
        snprintf(seg[n++].text, sizeof seg[0].text, "host cpu %s", b[3]);
    }
    panes_put_fields(d, y, x + 2, w - x - 3, seg, n, A_NORMAL);
}

/*
 * The fleet's host lines (at most max): returns how many were drawn. When
 * they do not all fit, the last line counts the others (how many answer),
 * the unreachable ones first so none is hidden while others are not.
 */
static int panes_hosts(const panes_ctx *p, int y, int w, int max)
{
    json_t *hosts = p->m->fleet ? json_object_get(p->m->snap, "hosts") : NULL;
    size_t total = json_array_size(hosts);
    if (max <= 0 || total == 0)
        return 0;
    size_t room = total <= (size_t)max ? total : (size_t)max - 1;
    int n = 0;
    /* in their order when all fit; else two passes: those not up, then the others */
    bool shown[FLEET_HOSTS_LINES] = {false};
    for (int pass = total <= (size_t)max ? 1 : 0; pass < 2; pass++)
        for (size_t i = 0; i < total && i < FLEET_HOSTS_LINES && (size_t)n < room; i++) {
            json_t *h = json_array_get(hosts, i);
            bool up = strcmp(console_model_str(h, "state", ""), "up") == 0;
            if (shown[i] || (pass == 0 && up))
                continue;
            shown[i] = true;
            panes_host_line(p, h, y + n++, w);
        }
    if ((size_t)n < total) {
        size_t more = total - (size_t)n, up = 0;
        for (size_t i = 0; i < total; i++)
            up += (i >= FLEET_HOSTS_LINES || !shown[i]) &&
                  strcmp(console_model_str(json_array_get(hosts, i), "state", ""), "up") == 0;
        char line[160];
        snprintf(line, sizeof line, "+%zu more hosts, %zu of them up (a taller terminal shows them; / filters by host)",
                 more, up);
        draw_put(p->d, y + n++, 1, w - 2, line, p->d->a_dim);
    }
    return n;
}

/* ---- worker list ----------------------------------------------------------------------- */

/* Column names dropped first when the list is narrow (the app is in the group header). */
static const char *const panes_drop_order[] = {"lagmax", "p50", "errors", "restarts", "p99", "lag", "uptime",
                                               "share", "rps", "mem", NULL};

/*
 * Chooses the list columns that fit in w cells; returns how many (indices in
 * out), their width in *used. fleet: with the columns only a view of several
 * hosts shows (HOST).
 */
static int panes_list_columns(int w, bool fleet, int *out, int *used)
{
    bool drop[PANES_COLS_MAX] = {false};
    for (int d = -1;; d++) {
        if (d >= 0) {
            if (!panes_drop_order[d])
                break;
            for (int i = 0; columns_table[i].name && i < PANES_COLS_MAX; i++)
                if (!strcmp(columns_table[i].name, panes_drop_order[d]))
                    drop[i] = true;
        }
        int n = 0, width = 2;
        for (int i = 0; columns_table[i].name && i < PANES_COLS_MAX; i++) {
            if (drop[i] || !strcmp(columns_table[i].name, "app") || (columns_table[i].fleet && !fleet))
                continue;
            out[n++] = i;
            width += columns_table[i].width + 1;
        }
        *used = width;
        if (width <= w)
            return n;
    }
    int n = 0;
    for (int i = 0; columns_table[i].name && i < PANES_COLS_MAX; i++)
        if (!drop[i] && strcmp(columns_table[i].name, "app") && (fleet || !columns_table[i].fleet))
            out[n++] = i;
    return n;
}

/* Writes one cell padded to the column's width and alignment into a line buffer; returns the new end. */
static int panes_cell(char *line, size_t cap, int at, const column *col, const char *text)
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

/* The layout of the list: its columns, and the CPU bar when there is room. */
typedef struct {
    int cols[PANES_COLS_MAX];
    int ncol, used;     /* columns, and the cells they take */
    int bar_w;          /* 0: no bar */
} panes_list_layout;

/* The list's title row: column titles (the sort column marked), the bar's, the filter. */
static void panes_list_title(const panes_ctx *p, const panes_list_layout *l, int y, int x, int w)
{
    const draw_ctx *d = p->d;
    attr_t ta = p->k->focus == KEYS_FOCUS_LIST ? d->a_bar_focus : d->a_bar;
    draw_fill(y, x, w, ta);
    char line[512] = "  ";
    int at = 2;
    for (int i = 0; i < l->ncol; i++)
        at = panes_cell(line, sizeof line, at, &columns_table[l->cols[i]], columns_table[l->cols[i]].title);
    draw_put(d, y, x, w, line, ta);
    at = x + 2;
    for (int i = 0; i < l->ncol; i++) {
        const column *col = &columns_table[l->cols[i]];
        if (l->cols[i] == p->m->sort_col) {
            /* the marker goes in the blank beside the title: inside the cell when
             * the title is shorter, else in the separator (UPTIME, LAG99ms) */
            int tl = (int)strlen(col->title);
            int tx = col->right ? at + col->width - tl : at;
            bool up = columns_sort_ascending(col, p->m->sort_rev);
            draw_put(d, y, tx, tl, col->title, ta | A_UNDERLINE | A_BOLD);
            draw_put(d, y, col->right ? tx - 1 : tx + tl, 1,
                     d->utf8 ? (up ? "\u25B2" : "\u25BC") : (up ? "^" : "v"), ta | A_BOLD);
        }
        at += col->width + 1;
    }
    if (l->bar_w)
        draw_put(d, y, x + l->used, l->bar_w, "CPU", ta);
    if (p->m->filter[0] || p->k->mode == KEYS_MODE_FILTER) {
        char f[96];
        snprintf(f, sizeof f, " filter: %s ", p->m->filter);
        int fl = (int)strlen(f);
        if (fl < w / 2)
            draw_put(d, y, x + w - fl, fl, f, ta | A_BOLD);
    }
}

/* Scrolls the list so the selection shows in rows_h rows, with its app header when it is the first of its group. */
static void panes_list_scroll(console_model *m, int rows_h)
{
    if (m->sel >= 0) {
        long want_top = m->sel > 0 && !m->rows[m->sel - 1].w ? m->sel - 1 : m->sel;
        if (want_top < m->list_top)
            m->list_top = want_top;
        if (m->sel >= m->list_top + rows_h)
            m->list_top = m->sel - rows_h + 1;
    }
    if (m->list_top > (long)m->nrows - rows_h)
        m->list_top = (long)m->nrows - rows_h;
    if (m->list_top < 0)
        m->list_top = 0;
}

/*
 * An app's group header: its name and totals, each kept whole or dropped by
 * priority when the line is narrow (a figure cut short would read as another:
 * "max 0.349" cut to "max 0.3").
 */
static void panes_list_app(const panes_ctx *p, const console_row *row, int y, int x, int w)
{
    char b[32], b2[32], l[4][16];
    const json_t *a = row->appobj;
    /* latency and lag of all the app's samples (merged histograms), from the column table */
    static const char *const lcols[4] = {"p50", "p99", "lag", "lagmax"};
    for (int i = 0; i < 4; i++) {
        const column *c = columns_find(lcols[i]);
        if (c)
            c->format(a, l[i], sizeof l[i]);
        else
            snprintf(l[i], sizeof l[i], "-");
    }
    panes_seg seg[8];
    int n = 0;
    panes_field(seg, &n, 8, 1, "%.60s ", row->app);   /* the name, a blank wider than the rest */
    panes_field(seg, &n, 8, 1, "%.0f/%.0f online", console_model_num(a, "online"), console_model_num(a, "workers"));
    panes_fmt(console_model_num(a, "req_per_s"), "", b, sizeof b);
    panes_field(seg, &n, 8, 3, "%s req/s", b);
    columns_spread(a, b2, sizeof b2);
    panes_field(seg, &n, 8, 5, "%s", b2);
    panes_fmt(console_model_num(a, "cpu_pct"), "%", b, sizeof b);
    panes_field(seg, &n, 8, 2, "cpu %s", b);
    columns_bytes(console_model_num(a, "rss_bytes"), b, sizeof b);
    panes_field(seg, &n, 8, 4, "mem %s", b);
    panes_field(seg, &n, 8, 6, "p50 %s p99 %s ms", l[0], l[1]);
    panes_field(seg, &n, 8, 7, "lag99 %s max %s ms", l[2], l[3]);
    panes_put_named(p->d, y, x, w, seg, n, p->d->a_app);
}

/* A worker's row: the selection marker, its cells, its state coloured, its CPU bar. */
static void panes_list_worker(const panes_ctx *p, const panes_list_layout *l, const console_worker *wk,
                              bool selected, int y, int x, int w)
{
    const draw_ctx *d = p->d;
    char line[512];
    int at = 2;
    line[0] = selected ? '>' : ' ';
    line[1] = ' ';
    line[2] = '\0';
    int state_at = -1, state_w = 0;
    for (int i = 0; i < l->ncol; i++) {
        const column *col = &columns_table[l->cols[i]];
        char cell[64];
        col->format(wk->obj, cell, sizeof cell);
        if (!strcmp(col->name, "state")) {
            state_at = at;
            state_w = col->width;
        }
        at = panes_cell(line, sizeof line, at, col, cell);
    }
    /* figures from a hub we lost are stale: dim them until it answers again */
    bool stale = p->m->conn != CONSOLE_UP || json_is_true(json_object_get(wk->obj, "stale"));   /* fleet: its host's */
    attr_t base = selected ? d->a_sel : stale ? d->a_dim : A_NORMAL;
    if (selected)
        draw_fill(y, x, w, d->a_sel);
    draw_put(d, y, x, w, line, base);
    if (!selected && state_at >= 0)
        draw_put(d, y, x + state_at, state_w, wk->state, panes_state_attr(d, wk->state));
    if (l->bar_w)
        draw_bar(d, y, x + l->used, l->bar_w, console_model_num(wk->obj, "cpu_pct"));
}

/* The worker list: column titles, then app headers and worker rows that fit. */
static void panes_list(const panes_ctx *p, int y, int x, int w, int h)
{
    if (h < 2 || w < 10)
        return;
    console_model *m = p->m;
    panes_list_layout l;
    l.ncol = panes_list_columns(w, m->fleet, l.cols, &l.used);
    l.bar_w = w - l.used >= 12 ? (w - l.used - 1 > 22 ? 22 : w - l.used - 1) : 0;
    panes_list_title(p, &l, y, x, w);
    /* where the list is, for the mouse */
    keys_geom *g = &p->k->geom;
    g->list_y = y;
    g->list_h = h;
    g->list_x = x;
    g->list_w = w;
    g->ncols = 0;
    for (int i = 0, at = x + 2; i < l.ncol && g->ncols < 32; i++) {
        g->col_x[g->ncols] = at;
        g->col_w[g->ncols] = columns_table[l.cols[i]].width;
        g->col_index[g->ncols++] = l.cols[i];
        at += columns_table[l.cols[i]].width + 1;
    }

    int rows_h = h - 1;
    if (m->nrows == 0) {
        draw_put(p->d, y + 1, x + 2, w - 2,
                 m->conn != CONSOLE_UP ? "(waiting for the hub)"
                 : m->filter[0] ? "(no worker matches the filter)" : "(no workers)", p->d->a_dim);
        return;
    }
    panes_list_scroll(m, rows_h);
    for (int r = 0; r < rows_h && m->list_top + r < (long)m->nrows; r++) {
        long ri = m->list_top + r;
        const console_row *row = &m->rows[ri];
        if (row->w)
            panes_list_worker(p, &l, row->w, ri == m->sel, y + 1 + r, x, w);
        else
            panes_list_app(p, row, y + 1 + r, x, w);
    }
}

/* ---- detail ----------------------------------------------------------------------------- */

/*
 * One sparkline in w cells: its label, the spark (scaled from zero), the
 * current value, and the min-max of the points shown when there is room.
 */
static void panes_series(const panes_ctx *p, int y, int x, int w, const console_worker *wk, int s)
{
    static const char *const label[CONSOLE_SER_N] = {"CPU", "MEM", "REQ/S", "LAG99"};
    static const char *const unit[CONSOLE_SER_N] = {"%", "", "", "ms"};
    static const double floor_max[CONSOLE_SER_N] = {1.0, 1024.0 * 1024, 1.0, 1.0};
    const human_scale scale = s == CONSOLE_SER_MEM ? HUMAN_BYTES : HUMAN_SI;
    const draw_ctx *d = p->d;
    char val[32];
    human_format_unit(console_model_num(wk->obj, console_model_series_key[s]), scale, unit[s], val, sizeof val);
    draw_put(d, y, x, 6, label[s], A_BOLD);
    enum { VW = 8, RW = 14 };   /* the value; the range "6.27M-6.31M" */
    bool range = w - 6 - VW - RW - 2 >= 8;
    int sw = w - 6 - VW - 1 - (range ? RW + 1 : 0);
    if (sw > CONSOLE_HIST)
        sw = CONSOLE_HIST;
    double lo = NAN, hi = NAN;
    if (sw > 0) {
        float pts[CONSOLE_HIST];
        unsigned n = console_model_hist_last(wk->h, s, (unsigned)sw, pts);
        draw_spark(d, y, x + 6, sw, pts, n, floor_max[s], &lo, &hi);
    }
    int vx = x + 6 + (sw > 0 ? sw : 0) + 1;
    draw_put(d, y, vx, VW, val, A_NORMAL);
    if (range && !isnan(lo)) {
        char a[16], b[16], r[40];
        human_format(lo, scale, a, sizeof a);
        human_format(hi, scale, b, sizeof b);
        snprintf(r, sizeof r, "%s\u2013%s", a, b);
        draw_put(d, y, vx + VW + 1, RW, r, d->a_dim);
    }
}

/* The fields of the detail pane's lines, each kept whole or dropped by priority on a narrow terminal. */
typedef struct {
    panes_seg ident[4];      /* app:id, pid, state */
    int       nident;
    panes_seg more[6];       /* up, restarts, last exit, agent, ready */
    int       nmore;
    panes_seg lat[PANES_FIELDS_MAX];   /* latency, errors, inflight, then each custom metric */
    int       nlat;
} panes_detail_text;

/* Fills t for worker wk: every figure humanized, the last exit as people read it. */
static void panes_detail_texts(const console_worker *wk, panes_detail_text *t)
{
    t->nident = t->nmore = t->nlat = 0;
    char tg[96];
    panes_field(t->ident, &t->nident, 4, 1, "%s%s%.40s", console_model_target(wk, tg, sizeof tg),
                wk->host ? " on " : "", wk->host ? wk->host : "");   /* a fleet names the host */
    if (wk->pid > 0)
        panes_field(t->ident, &t->nident, 4, 2, "pid %ld", wk->pid);
    else
        panes_field(t->ident, &t->nident, 4, 2, "pid -");
    panes_field(t->ident, &t->nident, 4, 1, "%.20s", wk->state);

    char up[16], ex[48], b[32];
    columns_duration(console_model_num(wk->obj, "uptime_s"), up, sizeof up);
    console_model_exit_text(console_model_str(wk->obj, "last_exit", NULL), ex, sizeof ex);
    panes_field(t->more, &t->nmore, 6, 4, "up %s", up);
    double restarts = console_model_num(wk->obj, "restarts");
    if (isnan(restarts))
        panes_field(t->more, &t->nmore, 6, 5, "restarts -");
    else
        panes_field(t->more, &t->nmore, 6, 5, "restarts %.0f", restarts);
    panes_field(t->more, &t->nmore, 6, 3, "last exit: %s", ex);
    panes_field(t->more, &t->nmore, 6, 7, "agent %s", json_is_true(json_object_get(wk->obj, "agent")) ? "yes" : "no");
    panes_field(t->more, &t->nmore, 6, 6, "ready %s", json_is_true(json_object_get(wk->obj, "ready")) ? "yes" : "no");

    char b2[32];
    panes_fmt(console_model_num(wk->obj, "lat_p50_ms"), "ms", b, sizeof b);
    panes_fmt(console_model_num(wk->obj, "lat_p99_ms"), "ms", b2, sizeof b2);
    panes_field(t->lat, &t->nlat, PANES_FIELDS_MAX, 1, "latency p50 %s p99 %s", b, b2);
    panes_fmt(console_model_num(wk->obj, "err_total"), "", b, sizeof b);
    panes_field(t->lat, &t->nlat, PANES_FIELDS_MAX, 2, "errors %s", b);
    panes_fmt(console_model_num(wk->obj, "inflight"), "", b, sizeof b);
    panes_field(t->lat, &t->nlat, PANES_FIELDS_MAX, 3, "inflight %s", b);
    const char *k;
    json_t *v;
    int i = 0;
    json_object_foreach(json_object_get(wk->obj, "metrics"), k, v) {
        human_format(json_is_number(v) ? json_number_value(v) : NAN, HUMAN_SI, b, sizeof b);
        panes_field(t->lat, &t->nlat, PANES_FIELDS_MAX, 4 + i, "%.60s %s", k, b);
        i++;
    }
}

/*
 * The worker's process tree, one process a line while h lines remain: pid,
 * CPU, RSS and name (descendants indented), the worker's own process first.
 * A tree of one process (the worker alone) is not repeated.
 */
static void panes_detail_tree(const panes_ctx *p, const console_worker *wk, int y, int x, int w, int h)
{
    const json_t *tree = json_object_get(wk->obj, "tree");
    size_t n = json_array_size(tree);
    if (n < 2 || h < 2)
        return;
    const draw_ctx *d = p->d;
    char head[48];
    snprintf(head, sizeof head, "processes %zu", n);
    draw_put(d, y, x + 1, w - 2, head, A_BOLD);
    for (size_t i = 0; i < n && (int)i + 1 < h; i++) {
        const json_t *t = json_array_get(tree, i);
        char cpu[16], rss[16], line[96];
        panes_fmt(console_model_num(t, "cpu_pct"), "%", cpu, sizeof cpu);
        columns_bytes(console_model_num(t, "rss_bytes"), rss, sizeof rss);
        snprintf(line, sizeof line, "%s%-7lld %7s %7s ", i ? "  " : "", (long long)json_integer_value(json_object_get(t, "pid")),
                 cpu, rss);
        int lw = (int)strlen(line);
        draw_put(d, y + 1 + (int)i, x + 1, w - 2, line, A_NORMAL);
        /* the name is the process's own: draw_put makes it terminal-safe */
        if (w - 2 - lw > 0)
            draw_put(d, y + 1 + (int)i, x + 1 + lw, w - 2 - lw, console_model_str(t, "comm", "?"), A_NORMAL);
    }
}

/* The tall detail below its title: the rest of the identity, one series per line, latency, metrics. */
static void panes_detail_tall(const panes_ctx *p, const console_worker *wk, const panes_detail_text *t,
                              int y, int x, int w, int h)
{
    const draw_ctx *d = p->d;
    panes_put_fields(d, y + 1, x + 1, w - 2, t->more, t->nmore, A_NORMAL);
    int yy = y + 2;
    for (int s = 0; s < CONSOLE_SER_N && yy < y + h; s++, yy++)
        panes_series(p, yy, x + 1, w - 2, wk, s);
    int nfixed = t->nlat < 3 ? t->nlat : 3;   /* latency, errors, inflight: one line */
    if (yy < y + h)
        panes_put_fields(d, yy++, x + 1, w - 2, t->lat, nfixed, A_NORMAL);
    /* metrics one per line when there is room: the value whole, the name cut if it must be */
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(wk->obj, "metrics"), k, v) {
        if (yy >= y + h)
            break;
        char num[32];
        human_format(json_is_number(v) ? json_number_value(v) : NAN, HUMAN_SI, num, sizeof num);
        int nw = (int)strlen(num), name_w = w - 2 - nw - 1;
        if (name_w > 20)
            name_w = 20;
        draw_put(d, yy, x + 1, name_w, k, A_NORMAL);
        draw_put(d, yy++, x + 1 + name_w + 1, nw, num, A_NORMAL);
    }
    panes_detail_tree(p, wk, yy, x, w, y + h - yy);
}

/* The compact detail below its title: two series per line, then latency and metrics on one. */
static void panes_detail_compact(const panes_ctx *p, const console_worker *wk, const panes_detail_text *t,
                                 int y, int x, int w, int h)
{
    int half = (w - 2) / 2;
    if (h >= 2) {
        panes_series(p, y + 1, x + 1, half - 1, wk, CONSOLE_SER_CPU);
        panes_series(p, y + 1, x + 1 + half, half - 1, wk, CONSOLE_SER_MEM);
    }
    if (h >= 3) {
        panes_series(p, y + 2, x + 1, half - 1, wk, CONSOLE_SER_RPS);
        panes_series(p, y + 2, x + 1 + half, half - 1, wk, CONSOLE_SER_LAG);
    }
    if (h >= 4)
        panes_put_fields(p->d, y + 3, x + 1, w - 2, t->lat, t->nlat, A_NORMAL);
}

/* The detail pane of the selected worker: identity, sparklines, latency, metrics. */
static void panes_detail(const panes_ctx *p, int y, int x, int w, int h)
{
    if (h <= 0 || w < 20)
        return;
    const draw_ctx *d = p->d;
    const console_worker *wk = console_model_selected(p->m);
    draw_fill(y, x, w, d->a_bar);
    if (!wk) {
        draw_put(d, y, x + 1, w - 1, "no worker selected", d->a_bar);
        return;
    }
    panes_detail_text t;
    panes_detail_texts(wk, &t);
    bool tall = h >= 8;
    /* the title: the identity, and in the compact layout the rest after it */
    panes_seg title[10];
    int n = 0;
    for (int i = 0; i < t.nident; i++)
        title[n++] = t.ident[i];
    for (int i = 0; !tall && i < t.nmore; i++)
        title[n++] = t.more[i];
    panes_put_fields(d, y, x + 1, w - 2, title, n, d->a_bar | A_BOLD);
    if (tall)
        panes_detail_tall(p, wk, &t, y, x, w, h);
    else
        panes_detail_compact(p, wk, &t, y, x, w, h);
}

/* ---- logs ------------------------------------------------------------------------------------ */

/* The log pane's title: what it shows, and whether it follows. */
static void panes_logs_title(const panes_ctx *p, int y, int x, int w, attr_t ta)
{
    const console_model *m = p->m;
    const char *mark = p->k->focus == KEYS_FOCUS_LOGS ? ">" : " ";
    char whatb[256];
    /* a fleet: the logs come from one host's hub, named */
    snprintf(whatb, sizeof whatb, "%s%s%.150s", m->log_target[0] ? m->log_target : "every app",
             m->fleet && m->log_host[0] ? " on " : "", m->fleet ? m->log_host : "");
    const char *what = whatb;
    const char *kind = !m->log_target[0] ? "" : m->log_app ? " (app)" : " (worker)";
    /* what it shows, whether it follows, then the keys: each kept whole or
     * dropped, the least needed first, on a narrow terminal */
    panes_seg seg[4];
    int n = 0;
    bool following = m->follow && m->log_scroll == 0;
    panes_field(seg, &n, 4, 1, "%s logs %.60s%s ", mark, what, kind);
    if (m->search[0] && (m->logs_ready || m->conn != CONSOLE_UP)) {
        panes_field(seg, &n, 4, 3, "%s ", following ? "following" : "paused");
        panes_field(seg, &n, 4, 2, "search '%.40s': %zu matching (n/N)", m->search, console_model_search_count(m));
    } else if (!m->logs_ready && m->conn == CONSOLE_UP) {
        panes_field(seg, &n, 4, 2, "loading...");
    } else if (following) {
        panes_field(seg, &n, 4, 2, "following ");
        panes_field(seg, &n, 4, 3, "(a: %s, f: pause)", m->log_app ? "this worker" : "whole app");
    } else {
        panes_field(seg, &n, 4, 2, "paused, %zu lines up ", m->log_scroll);
        panes_field(seg, &n, 4, 3, "(End: follow)");
    }
    panes_put_named(p->d, y, x, w, seg, n, ta);
}

/*
 * One log line at row y: its time when wide enough, its worker when several
 * are shown, its text, with the search's matches reversed (current: the
 * line n/N moved to).
 */
static void panes_log_line(const panes_ctx *p, const console_logline *l, int y, int x, int w, bool stamp,
                           bool label, bool current)
{
    const draw_ctx *d = p->d;
    int xx = x;
    if (stamp) {
        char ts[16] = "--:--:--";
        if (!isnan(l->ts)) {
            time_t tt = (time_t)l->ts;
            struct tm tm;
            if (localtime_r(&tt, &tm))
                strftime(ts, sizeof ts, "%H:%M:%S", &tm);
        }
        xx += draw_put(d, y, xx, 9, ts, d->a_dim) + 1;
    }
    if (label) {
        char lb[80];
        snprintf(lb, sizeof lb, "[%s%s]", l->label, l->err ? "!" : "");
        xx += draw_put(d, y, xx, x + w - xx, lb, d->a_dim) + 1;
    }
    attr_t a = l->err ? d->a_stderr : A_NORMAL;
    const char *hit = p->m->search[0] ? strcasestr(l->text, p->m->search) : NULL;
    if (!hit) {
        draw_put(d, y, xx, x + w - xx, l->text, a);
        return;
    }
    /* a matching line: the whole line bold (the current match underlined too), each match reversed */
    a |= A_BOLD | (current ? A_UNDERLINE : 0);
    const char *s = l->text;
    size_t ql = strlen(p->m->search);
    char part[CONSOLE_LOG_LINE_MAX + 1];
    while (xx < x + w) {
        size_t pre = hit ? (size_t)(hit - s) : strlen(s);
        snprintf(part, sizeof part, "%.*s", (int)pre, s);
        xx += draw_put(d, y, xx, x + w - xx, part, a);
        if (!hit)
            break;
        snprintf(part, sizeof part, "%.*s", (int)ql, hit);
        xx += draw_put(d, y, xx, x + w - xx, part, a | A_REVERSE);
        s = hit + ql;
        hit = strcasestr(s, p->m->search);
    }
}

/* The log pane: a title bar, then the newest lines that fit (or a scrolled-back page). */
static void panes_logs(const panes_ctx *p, int y, int x, int w, int h)
{
    if (h < 2)
        return;
    console_model *m = p->m;
    attr_t ta = p->k->focus == KEYS_FOCUS_LOGS ? p->d->a_bar_focus : p->d->a_bar;
    draw_fill(y, x, w, ta);
    p->k->geom.logs_y = y;
    p->k->geom.logs_h = h;
    int rows_h = h - 1;
    m->log_rows = rows_h;
    size_t max_scroll = m->log_n > (size_t)rows_h ? m->log_n - (size_t)rows_h : 0;
    if (m->log_scroll > max_scroll)
        m->log_scroll = max_scroll;
    panes_logs_title(p, y, x, w, ta);

    size_t shown = m->log_n - m->log_scroll < (size_t)rows_h ? m->log_n - m->log_scroll : (size_t)rows_h;
    size_t first = m->log_n - m->log_scroll - shown;   /* index from the oldest */
    bool label = !m->log_target[0] || m->log_app;
    bool stamp = w >= 60;
    for (size_t i = 0; i < shown; i++)
        panes_log_line(p, &m->log[(m->log_head + first + i) % CONSOLE_LOG_MAX], y + 1 + (int)i, x, w, stamp,
                       label, (long)(first + i) == m->search_line);
    /* A process drover did not start: say why its pane has (almost) nothing. */
    const console_worker *sw = console_model_selected(m);
    if (sw && !sw->owned && !m->log_app && m->logs_ready && (int)shown + 1 < rows_h) {
        char note[200];
        snprintf(note, sizeof note, "drover did not start pid %ld, so it does not capture its output; "
                 "only lines its agent sends with drover_log show here", sw->pid);
        draw_put(p->d, y + 1 + (int)shown, x + 1, w - 2, note, p->d->a_dim);
    }
}

/* ---- status line, footer, overlays ---------------------------------------------------------- */

/* The status line: the latest command outcome or event, with its time. */
static void panes_status(const panes_ctx *p, int y, int w)
{
    const console_model *m = p->m;
    const draw_ctx *d = p->d;
    if (!m->status[0])
        return;
    char ts[16] = "";
    struct tm tm;
    if (localtime_r(&m->status_at, &tm))
        strftime(ts, sizeof ts, "%H:%M:%S", &tm);
    int x = draw_put(d, y, 1, 9, ts, d->a_dim) + 2;
    int room = w - x - 1;
    char msg[sizeof m->status + 4];
    snprintf(msg, sizeof msg, "%s", m->status);
    if (draw_width(d, msg) > room) {
        /* too long: cut at a word and say so, never mid-word */
        const char *ell = d->utf8 ? "\u2026" : "...";
        while (draw_width(d, msg) + draw_width(d, ell) > room) {
            char *sp = strrchr(msg, ' ');
            if (!sp)
                break;
            *sp = '\0';
        }
        size_t l = strlen(msg);
        snprintf(msg + l, sizeof msg - l, "%s", ell);
    }
    draw_put(d, y, x, room, msg, m->status_err ? d->a_err | A_BOLD : A_BOLD);
}

/* The footer: the prompt of the current mode, or the key hints that fit, most important first. */
static void panes_footer(const panes_ctx *p, int y, int w)
{
    const draw_ctx *d = p->d;
    w -= 1;   /* never write the bottom-right cell: some terminals scroll */
    if (p->k->mode == KEYS_MODE_FILTER || p->k->mode == KEYS_MODE_SEARCH) {
        char f[200];
        bool search = p->k->mode == KEYS_MODE_SEARCH;
        snprintf(f, sizeof f, "%s: %s_   (Enter keeps it, Esc clears it%s)", search ? "search logs" : "filter",
                 search ? p->m->search : p->m->filter, search ? "; then n/N" : "");
        draw_put(d, y, 0, w, f, d->a_key);
        return;
    }
    if (p->k->mode == KEYS_MODE_CONFIRM) {
        draw_put(d, y, 0, w, p->k->confirm_text, d->a_key | A_BOLD);
        return;
    }
    if (p->k->mode == KEYS_MODE_STOPPING) {
        draw_put(d, y, 0, w, "stopping the hub and its workers... (q: stop waiting)", d->a_key | A_BOLD);
        return;
    }
    keys_hint hints[32];
    int n = keys_hints(p->k, d->utf8, hints, 32);
    int x = 0;
    for (int i = 0; i < n; i++) {
        int kl = draw_width(d, hints[i].key), ll = (int)strlen(hints[i].text);
        if (x + kl + ll + 1 > w)
            continue;   /* dropped whole; a later, shorter hint may still fit (? lists them all) */
        x += draw_put(d, y, x, kl, hints[i].key, d->a_key) + 1;
        x += draw_put(d, y, x, ll, hints[i].text, A_NORMAL) + 2;
    }
}

/* The help overlay: every key of the normal mode, from the key table. */
static void panes_help(const panes_ctx *p)
{
    char buf[40][200];
    const char *lines[40];
    int n = keys_help(p->k, p->d->utf8, buf, 40);
    for (int i = 0; i < n; i++)
        lines[i] = buf[i];
    draw_box(p->d, " keys ", lines, n);
}

/*
 * The describe overlay (key i): the selected worker's app as the hub
 * describes it — settings, readiness, env keys (never values), the last
 * restarts and their causes.
 */
static void panes_describe(const panes_ctx *p)
{
    enum { N = 24 };
    static char buf[N][200];
    const char *lines[N];
    int n = 0;
    const json_t *d = p->m->describe;
    size_t i;
    json_t *v;
    if (json_object_get(d, "master")) {   /* an attached master: its profile */
        snprintf(buf[n++], 200, "master\tpid %.0f, %.60s", console_model_num(d, "master"),
                 console_model_str(d, "master_name", "?"));
        snprintf(buf[n++], 200, "profile\t%.40s", console_model_str(d, "profile", "?"));
        snprintf(buf[n++], 200, "kill\tSIG%.20s", console_model_str(d, "kill_signal", "?"));
        snprintf(buf[n++], 200, "reload\t%.10s, SIG%.20s", console_model_str(d, "reload", "?"),
                 console_model_str(d, "reload_signal", "?"));
        snprintf(buf[n++], 200, "scale\t%.20s / %.20s", console_model_str(d, "scale_up", "-"),
                 console_model_str(d, "scale_down", "-"));
        snprintf(buf[n++], 200, "timeouts\tready %.0f ms, kill %.0f ms", console_model_num(d, "ready_timeout_ms"),
                 console_model_num(d, "kill_timeout_ms"));
        snprintf(buf[n++], 200, "instances\t%.0f", console_model_num(d, "instances"));
        for (int j = 0; j < n; j++)
            lines[j] = buf[j];
        char atitle[CTL_APP_MAX + 16];
        snprintf(atitle, sizeof atitle, " %s (any key closes) ", console_model_str(d, "app", "?"));
        draw_box(p->d, atitle, lines, n);
        return;
    }
    char cmd[160] = "";
    json_array_foreach(json_object_get(d, "command"), i, v)
        snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), "%s%s", i ? " " : "", json_string_value(v));
    const char *ready = console_model_str(d, "ready", "?");
    bool learned = json_is_true(json_object_get(d, "ready_learned"));
    snprintf(buf[n++], 200, "command\t%.150s", cmd);
    snprintf(buf[n++], 200, "cwd\t%.150s", console_model_str(d, "cwd", "(the hub's)"));
    snprintf(buf[n++], 200, "user\t%.60s", console_model_str(d, "user", "(the hub's)"));
    snprintf(buf[n++], 200, "listen\t%.100s", console_model_str(d, "listen", "-"));
    snprintf(buf[n++], 200, "instances\t%.0f", console_model_num(d, "instances"));
    snprintf(buf[n++], 200, "ready\t%s%s", ready,
             strcmp(ready, "auto") ? "" : learned ? " (learned: new workers must signal it)" : " (a silent worker: 1 s grace)");
    snprintf(buf[n++], 200, "timeouts\tready %.0f ms, kill %.0f ms", console_model_num(d, "ready_timeout_ms"),
             console_model_num(d, "kill_timeout_ms"));
    snprintf(buf[n++], 200, "restart\t%s, stop with SIG%s", console_model_str(d, "restart", "?"),
             console_model_str(d, "stop_signal", "?"));
    char env[150] = "";
    json_array_foreach(json_object_get(d, "env"), i, v)
        if (strlen(env) + strlen(json_string_value(v)) + 2 < sizeof env && strncmp(json_string_value(v), "DROVER_", 7) &&
            strcmp(json_string_value(v), "NOTIFY_SOCKET"))
            snprintf(env + strlen(env), sizeof env - strlen(env), "%s%s", env[0] ? " " : "", json_string_value(v));
    snprintf(buf[n++], 200, "env keys\t%s", env);
    snprintf(buf[n++], 200, "%s", "");
    snprintf(buf[n++], 200, "restarts\t(the last, newest first)");
    json_t *evs = json_object_get(d, "events");
    int shown = 0;
    for (size_t k = json_array_size(evs); k-- > 0 && n < N - 1 && shown < 8;) {
        json_t *e = json_array_get(evs, k);
        const char *cause = console_model_str(e, "cause", NULL);
        if (!cause)
            continue;
        snprintf(buf[n++], 200, "%.12s\t%.150s", cause, console_model_str(e, "text", ""));
        shown++;
    }
    if (!shown)
        snprintf(buf[n++], 200, "\tnone");
    for (int j = 0; j < n; j++)
        lines[j] = buf[j];
    char title[CTL_APP_MAX + 16];
    snprintf(title, sizeof title, " %s (any key closes) ", console_model_str(d, "app", "?"));
    draw_box(p->d, title, lines, n);
}

/* Over the panes: the help overlay, the quit question or the confirmation, by mode. */
static void panes_overlay(const panes_ctx *p)
{
    if (p->m->describe) {
        panes_describe(p);
    } else if (p->k->mode == KEYS_MODE_HELP) {
        panes_help(p);
    } else if (p->k->mode == KEYS_MODE_QUIT) {
        /* an attach hub stops alone: the master it watches keeps its workers */
        bool attach = strcmp(p->m->hub_mode, "attach") == 0;
        const char *l[] = {attach ? "Stop the hub? (the master and its workers keep running)"
                                  : "Stop the workers and the hub?",
                           "", "[y]es / [n]o, leave it running / [c]ancel"};
        draw_box(p->d, " quit ", l, 3);
    } else if (p->k->mode == KEYS_MODE_CONFIRM) {
        const char *l[] = {p->k->confirm_text};
        draw_box(p->d, " confirm ", l, 1);
    }
}

/* ---- layout ----------------------------------------------------------------------------------- */

/*
 * The wide layout: the list and the detail side by side on top, as tall as
 * either needs within 55 % of the body; the logs get the rest.
 */
static void panes_body_wide(const panes_ctx *p, int y, int h, int W)
{
    const console_worker *sw = console_model_selected(p->m);
    size_t ntree = sw ? json_array_size(json_object_get(sw->obj, "tree")) : 0;
    int detail_need = 8 + (sw ? (int)json_object_size(json_object_get(sw->obj, "metrics")) : 0) +
                      (ntree > 1 ? (int)ntree + 1 : 0);
    int top = (int)p->m->nrows + 1 > detail_need ? (int)p->m->nrows + 1 : detail_need;
    if (top > h * 55 / 100)
        top = h * 55 / 100;
    int lw = W - PANES_DETAIL_W - 1;
    panes_list(p, y, 0, lw, top);
    draw_vline(p->d, y, lw, top);
    panes_detail(p, y, lw + 1, PANES_DETAIL_W, top);
    panes_logs(p, y + top, 0, W, h - top);
}

/* The narrow layout: list, detail and logs stacked; the list takes at most half of what the detail leaves. */
static void panes_body_stacked(const panes_ctx *p, int y, int h, int W)
{
    int detail_h = h >= 16 ? 4 : 3;
    int rest = h - detail_h;
    int list_h = (int)p->m->nrows + 1;
    int half = rest / 2;
    if (list_h > half)
        list_h = half;
    if (list_h < 3)
        list_h = 3;
    panes_list(p, y, 0, W, list_h);
    panes_detail(p, y + list_h, 0, W, detail_h);
    panes_logs(p, y + list_h + detail_h, 0, W, rest - list_h);
}

/* See panes.h. */
void panes_draw(keys_state *k, const draw_ctx *d, const char *title)
{
    panes_ctx p = {k, k->m, d};
    erase();
    memset(&k->geom, 0, sizeof k->geom);   /* a pane not drawn is not hit */
    int H = LINES, W = COLS;
    if (H < 10 || W < 40) {
        draw_put(d, 0, 0, W, "terminal too small", A_BOLD);
        draw_put(d, 1, 0, W, "40x10 at least", A_NORMAL);
        draw_put(d, 2, 0, W, "q quits", A_NORMAL);
        return;
    }
    panes_header(&p, title, 0, W);
    int nh = panes_hosts(&p, 1, W, (H - 10) / 2);   /* a fleet: a line per host, the body keeps 8 lines */
    int body_h = H - 3 - nh;
    if (W >= PANES_WIDE_W && body_h >= 18)
        panes_body_wide(&p, 1 + nh, body_h, W);
    else
        panes_body_stacked(&p, 1 + nh, body_h, W);
    panes_status(&p, H - 2, W);
    panes_footer(&p, H - 1, W);
    panes_overlay(&p);
}
