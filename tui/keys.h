/*
 * keys.h — the console's keys, as one table (keys.c): each entry declares
 * its key(s), the context it applies in (a mode, and in the normal mode the
 * focused pane), its handler, its footer hint (with a priority for narrow
 * terminals) and its line in the `?` overlay. The key handler, the footer
 * and the overlay are all generated from it, so a key is declared once.
 * The command keys (kill, restart, reload, scale) come from the protocol's
 * command table (proto/control.h): their keys, names and help are its own.
 *
 * A key changes the model and the screen state below, and leaves what only
 * the console can do (send a request, time the logs request, quit) in the
 * effects for it to carry out.
 */
#ifndef DROVER_TUI_KEYS_H
#define DROVER_TUI_KEYS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "proto/control.h"
#include "tui/console_model.h"

typedef enum {
    KEYS_MODE_NORMAL,
    KEYS_MODE_FILTER,     /* typing the filter (the list focused) */
    KEYS_MODE_SEARCH,     /* typing the log search (the logs focused) */
    KEYS_MODE_CONFIRM,    /* asking y/n before a command */
    KEYS_MODE_QUIT,       /* asking whether to stop the hub on quit */
    KEYS_MODE_HELP,       /* the `?` overlay */
    KEYS_MODE_STOPPING,   /* waiting for the hub to stop */
} keys_mode;

typedef enum { KEYS_FOCUS_LIST, KEYS_FOCUS_LOGS } keys_focus;

/* What a key asks of the console about quitting. */
typedef enum {
    KEYS_QUIT_NONE,
    KEYS_QUIT_KEY,        /* q: quit as the console was told to (ask, leave, or stop) */
    KEYS_QUIT_STOP_HUB,   /* yes, stop the workers and the hub */
    KEYS_QUIT_LEAVE,      /* no, leave the hub running */
    KEYS_QUIT_GIVE_UP,    /* stop waiting for the hub to stop */
} keys_quit;

/*
 * Where the panes were drawn at the last redraw (panes_draw fills it), so a
 * mouse click can be mapped to a row, a column title or a pane. All zero
 * before the first redraw (nothing is hit).
 */
typedef struct {
    int list_y, list_h;          /* the list's title row, and the rows below it */
    int list_x, list_w;
    int ncols;                   /* the list's columns, left to right */
    int col_x[32], col_w[32], col_index[32];   /* screen x, cells, index into columns_table */
    int logs_y, logs_h;          /* the log pane, title row included */
} keys_geom;

/* The last mouse event (the console reads it for a KEY_MOUSE key). */
typedef struct {
    int           y, x;
    unsigned long bstate;        /* ncurses' mmask_t bits */
} keys_mouse_ev;

/* The screen state the keys change (and the panes show), and the effects of the last key. */
typedef struct {
    console_model     *m;
    keys_mode          mode;
    keys_focus         focus;
    const ctl_command *confirm_cmd;       /* KEYS_MODE_CONFIRM: the command asked about */
    char               confirm_target[80];
    char               confirm_text[160];
    keys_geom          geom;              /* set by the panes */
    keys_mouse_ev      mouse;             /* set by the console before a KEY_MOUSE */

    /* effects of the last key (keys_handle resets them) */
    json_t   *send;         /* a request to send (the console takes it), or NULL */
    int       logs_in_ms;   /* send console_model_logs_request after this many ms; -1: no */
    keys_quit quit;
    bool      repaint;      /* repaint every cell */
} keys_state;

/* Sets k to the normal mode, the list focused, over model m. */
void keys_init(keys_state *k, console_model *m);

/*
 * Handles one key read from the terminal (fkey: a KEY_* code) in k's current
 * context. KEY_MOUSE is a key of the table too: it acts on k->mouse (a click
 * selects a worker or sorts by a column title, the wheel moves the selection
 * or scrolls the logs).
 */
void keys_handle(keys_state *k, int key, bool fkey);

/* One footer hint: the key and what it does (static strings), and its priority (1 first). */
typedef struct {
    const char *key, *text;
    int         prio;
} keys_hint;

/*
 * The normal mode's footer hints for the focused pane, most important first
 * (a narrow footer shows a prefix): with the logs focused, j/k say they
 * scroll the logs. Returns how many were written to out (at most cap).
 */
int keys_hints(const keys_state *k, bool utf8, keys_hint *out, int cap);

/*
 * The `?` overlay's lines, "KEYS\ttext", into lines (cap lines of len
 * bytes). Returns how many.
 */
int keys_help(const keys_state *k, bool utf8, char (*lines)[200], int cap);

#endif
