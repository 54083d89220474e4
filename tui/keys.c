/*
 * keys.c — the console's one key table, and the key handler, footer hints
 * and help overlay generated from it (see keys.h).
 */
#include "tui/keys.h"

#include "tui/columns.h"

#include <ctype.h>
#include <limits.h>
#include <curses.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

/* Where an entry applies: a mode, and in the normal mode the focused pane (bits). */
enum {
    KEYS_IN_LIST     = 1 << 0,   /* normal mode, the worker list focused */
    KEYS_IN_LOGS     = 1 << 1,   /* normal mode, the logs focused */
    KEYS_IN_FILTER   = 1 << 2,
    KEYS_IN_CONFIRM  = 1 << 3,
    KEYS_IN_QUIT     = 1 << 4,
    KEYS_IN_HELP     = 1 << 5,
    KEYS_IN_STOPPING = 1 << 6,
    KEYS_IN_SEARCH   = 1 << 7,
    KEYS_IN_NORMAL   = KEYS_IN_LIST | KEYS_IN_LOGS,
    KEYS_IN_EDIT     = KEYS_IN_FILTER | KEYS_IN_SEARCH,   /* typing a line of text */
    KEYS_IN_ANY      = (1 << 8) - 1,
};

typedef struct keys_entry keys_entry;

/* Handles key (the one that matched e) in k. */
typedef void (*keys_fn)(keys_state *k, const keys_entry *e, int key);

/* The help (hint false) or footer (hint true) text of e in the current state; NULL: the static one. */
typedef const char *(*keys_text_fn)(const keys_state *k, const keys_entry *e, bool hint, char *buf, size_t cap);

struct keys_entry {
    unsigned     in;            /* KEYS_IN_*: where it applies */
    const char  *keys;          /* the keys, space-separated names (keys_name_is) */
    keys_fn      fn;
    long         arg;           /* for fn: a direction */
    const char  *label;         /* the overlay's key column; NULL: keys */
    const char  *label_ascii;   /* the same without UTF-8; NULL: label */
    const char  *help;          /* the overlay's text; NULL: no line */
    int          prio;          /* footer: 0 no hint; else its place, the highest dropped first */
    const char  *hint_key;      /* the footer's key; NULL: label */
    const char  *hint_key_ascii;
    const char  *hint;          /* the footer's text */
    keys_text_fn text;          /* state-dependent help or hint */
    const ctl_command *cmd;     /* a command entry's command */
    bool         commands;      /* stands for one entry per command of ctl_commands with keys */
};

/* ---- handlers: the normal mode ------------------------------------------------- */

/* The screen needs a redraw (the terminal was resized). */
static void keys_redraw(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    k->m->dirty = true;
}

/* Ctrl-L: repaint every cell. */
static void keys_repaint(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    k->repaint = true;
    k->m->dirty = true;
}

/* Changes to the mode e->arg (the help overlay, typing the filter, back to normal). */
static void keys_set_mode(keys_state *k, const keys_entry *e, int key)
{
    (void)key;
    k->mode = (keys_mode)e->arg;
    k->m->dirty = true;
}

/* Asks the console to quit in the way e->arg says (a keys_quit). */
static void keys_quit_as(keys_state *k, const keys_entry *e, int key)
{
    (void)key;
    k->quit = (keys_quit)e->arg;
}

/* Moves the selection by e->arg workers; the log pane follows once it rests. */
static void keys_select(keys_state *k, const keys_entry *e, int key)
{
    (void)key;
    if (console_model_select_move(k->m, (int)e->arg))
        k->logs_in_ms = console_model_logs_retarget(k->m, false);
}

/* Scrolls the logs by e->arg lines (positive: older). */
static void keys_scroll(keys_state *k, const keys_entry *e, int key)
{
    (void)key;
    console_model_log_scroll(k->m, e->arg);
}

/* Scrolls the logs by e->arg pages. */
static void keys_page(keys_state *k, const keys_entry *e, int key)
{
    (void)key;
    console_model_log_scroll(k->m, e->arg * console_model_log_page(k->m));
}

/* To the oldest log line (e->arg 1) or the newest, following again (-1). */
static void keys_ends(keys_state *k, const keys_entry *e, int key)
{
    (void)key;
    console_model_log_scroll(k->m, e->arg * (long)k->m->log_n);
}

/* Moves the focus between the worker list and the logs. */
static void keys_focus_swap(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    k->focus = k->focus == KEYS_FOCUS_LIST ? KEYS_FOCUS_LOGS : KEYS_FOCUS_LIST;
    k->m->dirty = true;
}

/* Follows the logs on/off; paused, the view stays on its lines while new ones arrive below. */
static void keys_follow(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    k->m->follow = !k->m->follow;
    if (k->m->follow)
        k->m->log_scroll = 0;
    k->m->dirty = true;
}

/* The logs of the whole app, or of the selected worker again. */
static void keys_app_logs(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    k->m->log_app = !k->m->log_app;
    k->logs_in_ms = console_model_logs_retarget(k->m, false);
}

/* The footer hint of a: what pressing it would show. */
static const char *keys_app_logs_text(const keys_state *k, const keys_entry *e, bool hint, char *buf, size_t cap)
{
    (void)e, (void)buf, (void)cap;
    return hint ? (k->m->log_app ? "worker logs" : "app logs") : NULL;
}

/* Says in the status line how the list is sorted now. */
static void keys_sort_said(keys_state *k)
{
    const column *col = &columns_table[k->m->sort_col];
    console_model_status(k->m, false, "sorted by %s, %s", col->title,
                         columns_sort_ascending(col, k->m->sort_rev) ? "ascending" : "descending");
}

/* The current column reversed, or the next column (each is offered twice). */
static void keys_sort(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    console_model_sort_next(k->m);
    keys_sort_said(k);
}

/* The help line of s: it names the column sorted by now. */
static const char *keys_sort_text(const keys_state *k, const keys_entry *e, bool hint, char *buf, size_t cap)
{
    (void)e;
    if (hint)
        return NULL;
    snprintf(buf, cap, "sort: this column reversed, then the next (now %s %s)",
             columns_table[k->m->sort_col].title,
             columns_sort_ascending(&columns_table[k->m->sort_col], k->m->sort_rev) ? "ascending" : "descending");
    return buf;
}

/* ---- handlers: the mouse ------------------------------------------------------------ */

/* Which part of the screen a mouse event hit. */
typedef enum { KEYS_HIT_NONE, KEYS_HIT_TITLE, KEYS_HIT_ROW, KEYS_HIT_LOGS } keys_hit;

/* Where (y, x) falls in the panes drawn last; *row gets the list row, *col the column's table index. */
static keys_hit keys_mouse_hit(const keys_state *k, int y, int x, long *row, int *col)
{
    const keys_geom *g = &k->geom;
    bool in_list = x >= g->list_x && x < g->list_x + g->list_w;
    if (in_list && g->list_h > 0 && y == g->list_y) {
        *col = -1;
        for (int i = 0; i < g->ncols; i++)
            /* the title's cells, and the blank before it (where its marker may be) */
            if (x >= g->col_x[i] - 1 && x < g->col_x[i] + g->col_w[i])
                *col = g->col_index[i];
        return KEYS_HIT_TITLE;
    }
    if (in_list && y > g->list_y && y < g->list_y + g->list_h) {
        *row = k->m->list_top + (y - g->list_y - 1);
        return KEYS_HIT_ROW;
    }
    if (g->logs_h > 0 && y >= g->logs_y && y < g->logs_y + g->logs_h)
        return KEYS_HIT_LOGS;
    return KEYS_HIT_NONE;
}

/*
 * A mouse event, as htop: a click on a worker selects it (and focuses the
 * list), on a column title sorts by it (again: reversed), in the logs
 * focuses them; the wheel moves the selection over the list and scrolls the
 * logs over them.
 */
static void keys_mouse(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    long row = -1;
    int col = -1;
    keys_hit hit = keys_mouse_hit(k, k->mouse.y, k->mouse.x, &row, &col);
    unsigned long b = k->mouse.bstate;
    bool click = b & (BUTTON1_PRESSED | BUTTON1_CLICKED);
    int wheel = (b & BUTTON4_PRESSED) ? -1 : (b & BUTTON5_PRESSED) ? 1 : 0;
    switch (hit) {
    case KEYS_HIT_TITLE:
        if (click && col >= 0 && console_model_sort_by(k->m, col))
            keys_sort_said(k);
        else if (wheel)
            keys_select(k, &(keys_entry){.arg = wheel}, 0);
        break;
    case KEYS_HIT_ROW:
        if (wheel) {
            keys_select(k, &(keys_entry){.arg = wheel * 3}, 0);
        } else if (click && row >= 0 && row < (long)k->m->nrows && k->m->rows[row].w) {
            k->focus = KEYS_FOCUS_LIST;
            k->m->sel = row;
            if (console_model_select_move(k->m, 0))   /* a move of 0: remembers the selection */
                k->logs_in_ms = console_model_logs_retarget(k->m, false);
        }
        break;
    case KEYS_HIT_LOGS:
        if (wheel)
            console_model_log_scroll(k->m, -3L * wheel);
        else if (click) {
            k->focus = KEYS_FOCUS_LOGS;
            k->m->dirty = true;
        }
        break;
    case KEYS_HIT_NONE:
        break;
    }
}

/* ---- handlers: commands ------------------------------------------------------------ */

/* Says that c was not sent, the hub being away. */
static void keys_not_sent(keys_state *k, const ctl_command *c)
{
    console_model_status(k->m, true, "not connected to the hub: %s not sent", c->name);
}

/* Leaves r for the console to send, and says so; target is how the status line names it. */
static void keys_send(keys_state *k, const ctl_request *r, const char *target)
{
    if (!console_model_connected(k->m)) {
        keys_not_sent(k, r->cmd);
        return;
    }
    json_decref(k->send);
    k->send = ctl_request_json(r);
    console_model_status(k->m, false, "%s %s ...", r->cmd->name, target);
}

/* Asks y/n before running c on target (the pid named when it is one worker's). */
static void keys_confirm_ask(keys_state *k, const ctl_command *c, const char *target, long pid)
{
    k->confirm_cmd = c;
    snprintf(k->confirm_target, sizeof k->confirm_target, "%s", target);
    if (strchr(target, ':') && pid > 0)
        snprintf(k->confirm_text, sizeof k->confirm_text, "%s %s (pid %ld)? [y/n]", c->name, target, pid);
    else
        snprintf(k->confirm_text, sizeof k->confirm_text, "%s %s? [y/n]", c->name, target);
    k->mode = KEYS_MODE_CONFIRM;
    k->m->dirty = true;
}

/*
 * Runs the command bound to the key on the selection: the worker for
 * commands that take APP:ID (kill, restart), its app for the others (reload,
 * scale, which takes + as one more worker and - as one fewer). Commands
 * marked confirm ask y/n first.
 */
static void keys_command(keys_state *k, const keys_entry *e, int key)
{
    const ctl_command *c = e->cmd;
    const console_worker *w = console_model_selected(k->m);
    if (!w) {
        console_model_status(k->m, true, "select a worker first");
        return;
    }
    if (!console_model_connected(k->m)) {
        keys_not_sent(k, c);
        return;
    }
    /* a fleet: the command goes to the selected worker's host (the console routes it) */
    if (w->host && json_is_true(json_object_get(w->obj, "stale"))) {
        console_model_status(k->m, true, "%.100s is unreachable: %s not sent", w->host, c->name);
        return;
    }
    char target[80], shown[200];
    if (c->target == CTL_TARGET_REQUIRED)
        console_model_target(w, target, sizeof target);
    else
        snprintf(target, sizeof target, "%.60s", w->app);
    snprintf(shown, sizeof shown, "%s%s%.100s", target, w->host ? " on " : "", w->host ? w->host : "");
    if (c->confirm) {
        keys_confirm_ask(k, c, target, w->pid);
        if (w->host) {
            char pidtxt[32] = "";
            if (c->target == CTL_TARGET_REQUIRED && w->pid > 0)
                snprintf(pidtxt, sizeof pidtxt, " (pid %ld)", w->pid);
            snprintf(k->confirm_text, sizeof k->confirm_text, "%.16s %.50s on %.40s%s? [y/n]", c->name, target,
                     w->host, pidtxt);
        }
        return;
    }
    ctl_request r = ctl_request_make(c->cmd, target);
    if (c->args & CTL_ARG_DELTA) {
        r.has_delta = true;
        r.delta = key == '-' ? -1 : 1;
    }
    keys_send(k, &r, shown);
}

/* A command's help line: "name: help", and "(asks y/n)" when it confirms. */
static const char *keys_command_text(const keys_state *k, const keys_entry *e, bool hint, char *buf, size_t cap)
{
    (void)k;
    if (hint)
        return NULL;
    snprintf(buf, cap, "%s: %s%s", e->cmd->name, e->cmd->help, e->cmd->confirm ? " (asks y/n)" : "");
    return buf;
}

/* ---- handlers: dialogs ------------------------------------------------------------- */

/* The confirmation's answer is no (any key but y): the command is not sent. */
static void keys_confirm_no(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    k->mode = KEYS_MODE_NORMAL;
    k->m->dirty = true;
    console_model_status(k->m, false, "%s cancelled", k->confirm_cmd ? k->confirm_cmd->name : "command");
    k->confirm_cmd = NULL;
}

/* y: the confirmed command is sent. */
static void keys_confirm_yes(keys_state *k, const keys_entry *e, int key)
{
    if (!k->confirm_cmd) {
        keys_confirm_no(k, e, key);
        return;
    }
    k->mode = KEYS_MODE_NORMAL;
    k->m->dirty = true;
    ctl_request r = ctl_request_make(k->confirm_cmd->cmd, k->confirm_target);
    keys_send(k, &r, k->confirm_target);
    k->confirm_cmd = NULL;
}

/* ---- handlers: typing the filter or the log search ------------------------------- */

/* The text being typed: the filter, or the log search. */
static char *keys_edit_buf(keys_state *k, size_t *cap)
{
    switch (k->mode) {
    case KEYS_MODE_SEARCH:
        *cap = sizeof k->m->search;
        return k->m->search;
    default:
        *cap = sizeof k->m->filter;
        return k->m->filter;
    }
}

/*
 * The text changed: the filter narrows the list as you type (rows are cheap
 * to rebuild; the logs follow the selection); the search moves to the newest
 * matching line.
 */
static void keys_edit_changed(keys_state *k)
{
    switch (k->mode) {
    case KEYS_MODE_SEARCH:
        k->m->search_line = -1;
        k->m->dirty = true;
        if (k->m->search[0] && !console_model_search_step(k->m, 0))
            console_model_status(k->m, false, "no log line matches '%s'", k->m->search);
        break;
    default:
        console_model_rebuild(k->m);
        k->logs_in_ms = console_model_logs_retarget(k->m, false);
        break;
    }
}

/* Esc: clear the text and stop typing. */
static void keys_filter_drop(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    size_t cap;
    keys_edit_buf(k, &cap)[0] = '\0';
    keys_edit_changed(k);
    k->mode = KEYS_MODE_NORMAL;
}

/* Enter: keep the text and stop typing. */
static void keys_filter_keep(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    if (k->mode == KEYS_MODE_SEARCH && k->m->search[0])
        console_model_status(k->m, false, "search '%s': %zu matching log lines (n: older, N: newer)",
                             k->m->search, console_model_search_count(k->m));
    else
        keys_edit_changed(k);
    k->mode = KEYS_MODE_NORMAL;
    k->m->dirty = true;
}

/* Backspace: erase the last (UTF-8) character. */
static void keys_filter_erase(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    size_t cap;
    char *f = keys_edit_buf(k, &cap);
    size_t len = strlen(f);
    while (len > 0 && ((unsigned char)f[len - 1] & 0xC0) == 0x80)
        len--;   /* a whole UTF-8 character */
    if (len > 0)
        len--;
    f[len] = '\0';
    keys_edit_changed(k);
}

/* Ctrl-U: empty the text and keep typing. */
static void keys_filter_clear(keys_state *k, const keys_entry *e, int key)
{
    (void)e, (void)key;
    size_t cap;
    keys_edit_buf(k, &cap)[0] = '\0';
    keys_edit_changed(k);
}

/* A character typed (dropped when it does not fit). */
static void keys_filter_insert(keys_state *k, const keys_entry *e, int key)
{
    (void)e;
    size_t cap;
    char *f = keys_edit_buf(k, &cap);
    size_t len = strlen(f);
    char mb[MB_LEN_MAX];
    mbstate_t st;
    memset(&st, 0, sizeof st);
    size_t n = key < 0x80 ? (mb[0] = (char)key, 1) : wcrtomb(mb, (wchar_t)key, &st);
    if (n != (size_t)-1 && len + n < cap) {
        memcpy(f + len, mb, n);
        f[len + n] = '\0';
    }
    keys_edit_changed(k);
}

/* n / N: the next older (e->arg 1) or newer (-1) log line that matches the search. */
static void keys_search_step(keys_state *k, const keys_entry *e, int key)
{
    (void)key;
    if (!k->m->search[0])
        console_model_status(k->m, false, "no search: / in the logs pane searches them");
    else if (!console_model_search_step(k->m, (int)e->arg))
        console_model_status(k->m, false, "no %s line matches '%s'", e->arg > 0 ? "older" : "newer", k->m->search);
}

/* ---- the table ----------------------------------------------------------------------- */

/*
 * Every key of the console. The overlay lists the normal mode's entries in
 * this order; the footer shows the hints by prio. The first entry that
 * applies and binds the key handles it.
 */
static const keys_entry keys_base[] = {
    {.in = KEYS_IN_ANY, .keys = "Resize", .fn = keys_redraw},

    {.in = KEYS_IN_LIST, .keys = "Up k", .fn = keys_select, .arg = -1,
     .label = "\u2191/\u2193 j/k", .label_ascii = "Up/Down j/k",
     .help = "select a worker (logs pane focused: scroll a line)",
     .prio = 3, .hint_key = "\u2191\u2193", .hint_key_ascii = "j/k", .hint = "select"},
    {.in = KEYS_IN_LIST, .keys = "Down j", .fn = keys_select, .arg = 1},
    {.in = KEYS_IN_LOGS, .keys = "Up k", .fn = keys_scroll, .arg = 1,
     .prio = 3, .hint_key = "\u2191\u2193", .hint_key_ascii = "j/k", .hint = "scroll logs"},
    {.in = KEYS_IN_LOGS, .keys = "Down j", .fn = keys_scroll, .arg = -1},
    {.in = KEYS_IN_NORMAL, .keys = "Tab BTab", .fn = keys_focus_swap, .label = "Tab",
     .help = "move the focus between the worker list and the logs", .prio = 9, .hint = "pane"},
    {.in = KEYS_IN_NORMAL, .keys = "PgUp", .fn = keys_page, .arg = 1, .label = "PgUp/PgDn",
     .help = "scroll the logs a page"},
    {.in = KEYS_IN_NORMAL, .keys = "PgDn", .fn = keys_page, .arg = -1},
    {.in = KEYS_IN_NORMAL, .keys = "Home", .fn = keys_ends, .arg = 1, .label = "Home/End",
     .help = "oldest log line / newest, following again"},
    {.in = KEYS_IN_NORMAL, .keys = "End", .fn = keys_ends, .arg = -1},
    {.in = KEYS_IN_NORMAL, .keys = "f", .fn = keys_follow, .help = "follow the logs on/off",
     .prio = 8, .hint = "follow"},
    {.in = KEYS_IN_NORMAL, .keys = "a", .fn = keys_app_logs,
     .help = "logs of the whole app / of the selected worker", .prio = 7, .text = keys_app_logs_text},
    {.in = KEYS_IN_LIST, .keys = "/", .fn = keys_set_mode, .arg = KEYS_MODE_FILTER,
     .help = "list: filter by app:id, pid, state or host (Enter keeps, Esc clears)", .prio = 5, .hint = "filter"},
    {.in = KEYS_IN_LOGS, .keys = "/", .fn = keys_set_mode, .arg = KEYS_MODE_SEARCH, .label = "/ (logs)",
     .help = "logs: search and highlight (Enter keeps, Esc clears)", .prio = 5, .hint_key = "/",
     .hint = "search"},
    {.in = KEYS_IN_LOGS, .keys = "n", .fn = keys_search_step, .arg = 1, .label = "n/N",
     .help = "logs: the next older / newer match of the search", .prio = 6, .hint_key = "n/N",
     .hint = "next"},
    {.in = KEYS_IN_LOGS, .keys = "N", .fn = keys_search_step, .arg = -1},
    {.in = KEYS_IN_NORMAL, .keys = "s", .fn = keys_sort, .text = keys_sort_text, .prio = 6, .hint = "sort"},
    {.in = KEYS_IN_NORMAL, .commands = true, .prio = 4},
    {.in = KEYS_IN_NORMAL, .keys = "?", .fn = keys_set_mode, .arg = KEYS_MODE_HELP, .help = "this help (any key closes it)",
     .prio = 1, .hint = "help"},
    {.in = KEYS_IN_NORMAL, .keys = "q", .fn = keys_quit_as, .arg = KEYS_QUIT_KEY, .help = "quit", .prio = 2, .hint = "quit"},
    {.in = KEYS_IN_NORMAL, .keys = "C-l", .fn = keys_repaint},
    {.in = KEYS_IN_NORMAL, .keys = "Mouse", .fn = keys_mouse, .label = "mouse",
     .help = "click a worker, a column title (sorts) or the logs; wheel scrolls; --no-mouse: off"},

    {.in = KEYS_IN_HELP, .keys = "Any", .fn = keys_set_mode, .arg = KEYS_MODE_NORMAL},
    {.in = KEYS_IN_CONFIRM, .keys = "y Y", .fn = keys_confirm_yes},
    {.in = KEYS_IN_CONFIRM, .keys = "Any", .fn = keys_confirm_no},
    {.in = KEYS_IN_QUIT, .keys = "y Y", .fn = keys_quit_as, .arg = KEYS_QUIT_STOP_HUB},
    {.in = KEYS_IN_QUIT, .keys = "n N", .fn = keys_quit_as, .arg = KEYS_QUIT_LEAVE},
    {.in = KEYS_IN_QUIT, .keys = "c C Esc q", .fn = keys_set_mode, .arg = KEYS_MODE_NORMAL},
    {.in = KEYS_IN_STOPPING, .keys = "q Esc", .fn = keys_quit_as, .arg = KEYS_QUIT_GIVE_UP},

    {.in = KEYS_IN_EDIT, .keys = "Esc", .fn = keys_filter_drop},
    {.in = KEYS_IN_EDIT, .keys = "Enter", .fn = keys_filter_keep},
    {.in = KEYS_IN_EDIT, .keys = "Backspace", .fn = keys_filter_erase},
    {.in = KEYS_IN_EDIT, .keys = "C-u", .fn = keys_filter_clear},
    {.in = KEYS_IN_EDIT, .keys = "Text", .fn = keys_filter_insert},
};

#define KEYS_BASE_N (sizeof keys_base / sizeof keys_base[0])

/*
 * The table with the command entry expanded into one entry per command of
 * ctl_commands that has console keys, in that table's order. Built once;
 * *n gets its length.
 */
static const keys_entry *keys_table(size_t *n)
{
    static keys_entry all[KEYS_BASE_N + CTL_CMD_N];
    static size_t count;
    if (!count) {
        for (size_t i = 0; i < KEYS_BASE_N; i++) {
            if (!keys_base[i].commands) {
                all[count++] = keys_base[i];
                continue;
            }
            for (int c = 0; c < CTL_CMD_N; c++)
                if (ctl_commands[c].keys[0])
                    all[count++] = (keys_entry){.in = keys_base[i].in, .keys = ctl_commands[c].keys,
                                                .fn = keys_command, .prio = keys_base[i].prio,
                                                .hint = ctl_commands[c].name, .text = keys_command_text,
                                                .cmd = &ctl_commands[c]};
        }
    }
    *n = count;
    return all;
}

/* ---- matching -------------------------------------------------------------------------- */

/*
 * True when the key name p (len bytes) names key: one character ("x"), Ctrl
 * and a letter ("C-l"), a function key ("F9"), a named key ("Up", "PgDn",
 * "Tab", "Enter", "Esc", "Backspace", "Resize"…), "Text" (any character
 * that can be typed) or "Any".
 */
static bool keys_name_is(const char *p, size_t len, int key, bool fkey)
{
    static const struct {
        const char *name;
        int         code;
        bool        fkey;
    } named[] = {
        {"Up", KEY_UP, true}, {"Down", KEY_DOWN, true}, {"PgUp", KEY_PPAGE, true}, {"PgDn", KEY_NPAGE, true},
        {"Home", KEY_HOME, true}, {"End", KEY_END, true}, {"BTab", KEY_BTAB, true},
        {"Resize", KEY_RESIZE, true}, {"Mouse", KEY_MOUSE, true}, {"Enter", KEY_ENTER, true}, {"Enter", '\r', false},
        {"Enter", '\n', false}, {"Backspace", KEY_BACKSPACE, true}, {"Backspace", 127, false},
        {"Backspace", 8, false}, {"Tab", '\t', false}, {"Esc", 27, false},
    };
    if (len == 1)
        return !fkey && key == (unsigned char)*p;
    if (len == 3 && !strncmp(p, "Any", 3))
        return true;
    if (len == 4 && !strncmp(p, "Text", 4))
        return !fkey && key >= 0x20 && key != 0x7F;
    if (len == 3 && p[0] == 'C' && p[1] == '-')
        return !fkey && key == (p[2] & 0x1F);
    if (p[0] == 'F' && isdigit((unsigned char)p[1]))
        return fkey && key == KEY_F(atoi(p + 1));
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        if (strlen(named[i].name) == len && !strncmp(named[i].name, p, len) && named[i].fkey == fkey &&
            named[i].code == key)
            return true;
    return false;
}

/* True when one of the space-separated key names in names names key. */
static bool keys_binds(const char *names, int key, bool fkey)
{
    const char *p = names;
    while (p && *p) {
        while (*p == ' ')
            p++;
        const char *end = p;
        while (*end && *end != ' ')
            end++;
        if (end > p && keys_name_is(p, (size_t)(end - p), key, fkey))
            return true;
        p = end;
    }
    return false;
}

/* The KEYS_IN_* bit of k's current mode and focus. */
static unsigned keys_context(const keys_state *k)
{
    switch (k->mode) {
    case KEYS_MODE_NORMAL:   return k->focus == KEYS_FOCUS_LOGS ? KEYS_IN_LOGS : KEYS_IN_LIST;
    case KEYS_MODE_FILTER:   return KEYS_IN_FILTER;
    case KEYS_MODE_SEARCH:   return KEYS_IN_SEARCH;
    case KEYS_MODE_CONFIRM:  return KEYS_IN_CONFIRM;
    case KEYS_MODE_QUIT:     return KEYS_IN_QUIT;
    case KEYS_MODE_HELP:     return KEYS_IN_HELP;
    case KEYS_MODE_STOPPING: return KEYS_IN_STOPPING;
    }
    return 0;
}

/* See keys.h. */
void keys_init(keys_state *k, console_model *m)
{
    memset(k, 0, sizeof *k);
    k->m = m;
    k->mode = KEYS_MODE_NORMAL;
    k->focus = KEYS_FOCUS_LIST;
    k->logs_in_ms = -1;
}

/* See keys.h. */
void keys_handle(keys_state *k, int key, bool fkey)
{
    k->logs_in_ms = -1;
    k->quit = KEYS_QUIT_NONE;
    k->repaint = false;
    if (k->m->describe && key != KEY_RESIZE) {   /* any key closes the describe overlay */
        json_decref(k->m->describe);
        k->m->describe = NULL;
        k->m->dirty = true;
        return;
    }
    unsigned in = keys_context(k);
    size_t n;
    const keys_entry *t = keys_table(&n);
    for (size_t i = 0; i < n; i++) {
        if ((t[i].in & in) && keys_binds(t[i].keys, key, fkey)) {
            t[i].fn(k, &t[i], key);
            return;
        }
    }
}

/* ---- the footer and the overlay ------------------------------------------------------- */

/* e's key as the overlay (hint false) or the footer (hint true) shows it. */
static const char *keys_label(const keys_entry *e, bool utf8, bool hint)
{
    if (hint && e->hint_key)
        return !utf8 && e->hint_key_ascii ? e->hint_key_ascii : e->hint_key;
    if (e->label)
        return !utf8 && e->label_ascii ? e->label_ascii : e->label;
    return e->keys;
}

/* e's overlay (hint false) or footer (hint true) text in k's state, or NULL; buf may hold it. */
static const char *keys_text(const keys_state *k, const keys_entry *e, bool hint, char *buf, size_t cap)
{
    const char *t = e->text ? e->text(k, e, hint, buf, cap) : NULL;
    return t ? t : hint ? e->hint : e->help;
}

/* See keys.h. Only the entries of the current context (the focused pane) give hints. */
int keys_hints(const keys_state *k, bool utf8, keys_hint *out, int cap)
{
    size_t n;
    const keys_entry *t = keys_table(&n);
    unsigned in = keys_context(k);
    if (in & KEYS_IN_NORMAL)
        in = k->focus == KEYS_FOCUS_LOGS ? KEYS_IN_LOGS : KEYS_IN_LIST;
    int count = 0;
    for (size_t i = 0; i < n && count < cap; i++) {
        if (!t[i].prio || !(t[i].in & in))
            continue;
        /* by prio, in table order among equals (an insertion sort: a few entries) */
        int at = count;
        while (at > 0 && t[i].prio < out[at - 1].prio) {
            out[at] = out[at - 1];
            at--;
        }
        out[at] = (keys_hint){keys_label(&t[i], utf8, true), keys_text(k, &t[i], true, NULL, 0), t[i].prio};
        count++;
    }
    return count;
}

/* See keys.h. */
int keys_help(const keys_state *k, bool utf8, char (*lines)[200], int cap)
{
    size_t n;
    const keys_entry *t = keys_table(&n);
    int count = 0;
    for (size_t i = 0; i < n && count < cap; i++) {
        char buf[200];
        const char *text = (t[i].in & KEYS_IN_NORMAL) ? keys_text(k, &t[i], false, buf, sizeof buf) : NULL;
        if (text)
            snprintf(lines[count++], sizeof lines[0], "%s\t%s", keys_label(&t[i], utf8, false), text);
    }
    return count;
}
