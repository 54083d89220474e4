/*
 * console_model.h — what the console knows, kept apart from how it is drawn
 * (no ncurses here, no libuv): the hub's latest snapshot with one history
 * ring per worker for the sparklines, the display rows (filtered, sorted,
 * grouped by app) and the selection, the ring of log lines, the connection
 * and the status line.
 *
 * Hub messages are applied here as they arrive (console_model_hello,
 * console_model_apply, console_model_disconnected). The model never sends:
 * it builds the requests (console_model_logs_request) and tells the caller
 * when to send them (the delays returned by console_model_logs_retarget).
 */
#ifndef DROVER_TUI_CONSOLE_MODEL_H
#define DROVER_TUI_CONSOLE_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define CONSOLE_HIST          120    /* points per series: the hub's STATE_HISTORY */
#define CONSOLE_LOG_MAX       2000   /* lines kept in the log pane */
#define CONSOLE_LOG_REQ       1000   /* lines asked from the hub on (re)targeting */
#define CONSOLE_LOG_LINE_MAX  1024   /* bytes kept of one log line */
#define CONSOLE_LOGS_DELAY_MS 120    /* selection must rest this long before re-asking logs */
#define CONSOLE_FILTER_MAX    64
#define CONSOLE_DONE_WAIT     10     /* snapshots an outcome waits quietly for the list to agree */

/* The series of the sparklines, in the order the detail pane shows them. */
enum { CONSOLE_SER_CPU, CONSOLE_SER_MEM, CONSOLE_SER_RPS, CONSOLE_SER_LAG, CONSOLE_SER_N };

/* The worker object's key for each series ("cpu_pct"…). */
extern const char *const console_model_series_key[CONSOLE_SER_N];

/* A worker's sparkline history: CONSOLE_SER_N rings of CONSOLE_HIST points (NAN = unknown). */
typedef struct {
    float    v[CONSOLE_SER_N][CONSOLE_HIST];
    unsigned head;   /* next slot written */
    unsigned n;      /* points held */
} console_hist;

/* One worker of the latest snapshot. */
typedef struct {
    json_int_t    key;
    const json_t *obj;    /* borrowed from the model's snap */
    const char   *app;    /* borrowed from obj */
    const char   *state;  /* borrowed from obj */
    const char   *host;   /* borrowed from obj: the host a fleet console put there; NULL with one hub */
    int           id;
    long          pid;
    bool          owned;  /* drover started or adopted it; false: addressed as APP:pid:PID */
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

typedef enum { CONSOLE_CONNECTING, CONSOLE_UP, CONSOLE_DOWN } console_conn;

/*
 * A reload's (or replacement's) "done" against the list, so the status line
 * never says done while a row of the app shows starting:
 *   NONE    nothing held;
 *   HELD    the outcome came, a worker of the app still shows starting: the
 *           status keeps what it said (progress) for CONSOLE_DONE_WAIT snapshots;
 *   PENDING waited that long: the status says what is replaced and which
 *           workers still start ("reload web: 4/4 replaced, web:2 still
 *           starting"), no "done", until a snapshot shows none starting.
 * HELD or PENDING -> (a snapshot with none starting) "done" shown, NONE;
 * a new reload of any app -> NONE (the held outcome is stale).
 */
typedef enum { CONSOLE_DONE_NONE, CONSOLE_DONE_HELD, CONSOLE_DONE_PENDING } console_done_phase;

typedef struct {
    /* connection */
    console_conn conn;
    char         ns[64], hub_mode[16];
    long         hub_pid;
    long         sub_req, logs_req;   /* ids of our subscribe and latest logs requests; -1 none */

    /* the latest snapshot */
    json_t          *snap;    /* the latest state message or subscribe reply */
    json_t          *describe; /* the app a describe reply described (the `i` overlay), or NULL */
    console_worker  *w;       /* sorted by key */
    size_t           nw;
    console_row     *rows;
    size_t           nrows, nrows_cap;
    console_worker **view;    /* scratch for sorting */

    /* selection, sort, filter */
    long       sel;             /* row index, -1 = none */
    json_int_t sel_key;
    char       sel_app[64];
    int        sel_id;
    char       sel_host[128];   /* fleet: the selection's host ("" none) */
    long       list_top;        /* first row shown (the list pane keeps the selection visible) */
    int        sort_col;        /* index into columns_table */
    bool       sort_rev;        /* the column's order reversed (it was selected again) */
    bool       sort_picked;     /* the user chose sort_col (the default ID is left by the first s) */
    char       filter[CONSOLE_FILTER_MAX];

    /* logs */
    console_logline log[CONSOLE_LOG_MAX];
    size_t     log_head, log_n;   /* ring: oldest at log_head */
    size_t     log_scroll;        /* lines above the bottom */
    int        log_rows;          /* lines the pane showed at the last redraw */
    bool       follow;
    bool       log_app;           /* the a-toggle: the whole app's logs */
    char       log_target[80];    /* what the pane shows / asked for ("" = all) */
    char       log_host[128];     /* fleet: the host whose hub the logs are asked of ("" = the first) */
    char       search[CONSOLE_FILTER_MAX];   /* the log pane's search ("" = none): lines highlighted */
    long       search_line;       /* the current match, index from the oldest line; -1 none */
    bool       logs_ready;        /* the reply for log_target arrived */

    /* status line */
    char       status[320];
    bool       status_err;
    time_t     status_at;
    /* an outcome ("reload web: done") held until the list shows it: until a
     * snapshot has no worker of the app starting (console_model_done_check) */
    console_done_phase done_phase;
    char       done_text[320];
    char       done_app[64];
    char       done_what[96];     /* the outcome without "done": "reload web: 4/4 replaced" */
    char       done_said[320];    /* PENDING: the status it last set */
    int        done_wait;         /* HELD: snapshots left to wait quietly */

    bool       dirty;             /* something shown changed: the screen needs a redraw */

    /* a fleet console (several hubs merged by tui/console.c): the snapshot is
     * the merged one, its "hosts" array the per-host header lines, and the
     * list has a HOST column */
    bool       fleet;
} console_model;

/* Sets m to an empty model: nothing selected, sorted by id, following the logs, dirty. */
void console_model_init(console_model *m);

/* Frees what m holds (the snapshot, the rows, the histories, the log lines). */
void console_model_free(console_model *m);

/* A number from obj[key]; NAN when absent or null. */
double console_model_num(const json_t *obj, const char *key);

/* An integer from obj[key]; dflt when absent, null or not a finite number. */
long console_model_int(const json_t *obj, const char *key, long dflt);

/* A string from obj[key] (borrowed); dflt when absent. */
const char *console_model_str(const json_t *obj, const char *key, const char *dflt);

/*
 * How a worker's last exit reads for people, from the protocol's last_exit
 * ("exit 0", "signal 9", null): "status 0", "signal KILL", "-" for none.
 */
void console_model_exit_text(const char *last_exit, char *out, size_t cap);

/* Sets the status line (printf-style) and its time; err marks it as a failure. */
__attribute__((format(printf, 3, 4)))
void console_model_status(console_model *m, bool err, const char *fmt, ...);

/* True while connected to a hub and past its hello. */
bool console_model_connected(const console_model *m);

/* The selected worker, or NULL. */
console_worker *console_model_selected(const console_model *m);

/*
 * The target naming worker w in commands and logs: "APP:ID" for a worker
 * drover owns, "APP:pid:PID" for a process drover did not start (it may have
 * no id, or one only its agent gave).
 */
const char *console_model_target(const console_worker *w, char *out, size_t cap);

/*
 * Copies the last k (at most) points of series s of h, oldest first, into
 * out (room for k); returns how many. h NULL: none.
 */
unsigned console_model_hist_last(const console_hist *h, int s, unsigned k, float *out);

/* ---- hub messages --------------------------------------------------------- */

/* The hub said hello: note its namespace, mode and pid; the caller subscribes. */
void console_model_hello(console_model *m, const json_t *hello);

/* The connection ended: keep the last figures (the panes dim them); the caller says why. */
void console_model_disconnected(console_model *m);

/*
 * Applies one message after the hello: a state snapshot, a log line, a reply
 * to our subscribe or logs request (or to a command: its outcome goes to the
 * status line), an event (its text to the status line) or an error. Returns
 * the delay in ms after which the caller should send console_model_logs_request
 * (the subscribe reply points the log pane at the selection), or -1.
 */
int console_model_apply(console_model *m, const json_t *msg);

/*
 * A fleet console's merged snapshot (tui/console.c builds it: every host's
 * workers with "host" set and keys made unique, "apps" with fleet totals,
 * "hosts" with one object per host). Workers of the hosts named in
 * hosts[0..nhosts) take their history from "history" when with_history
 * (that host's subscribe reply), else one point from the snapshot (those
 * hosts sent a state message since the last merge); other hosts' workers
 * keep their rings as they are (hosts NULL: none). Borrows msg.
 */
void console_model_apply_fleet(console_model *m, const json_t *msg, bool with_history, const char *const *hosts,
                               size_t nhosts);

/* ---- selection, sort, filter ------------------------------------------------ */

/*
 * Rebuilds the display rows (filter, sort, group by app) from the workers,
 * then finds the selection again. Once per snapshot or sort/filter change.
 */
void console_model_rebuild(console_model *m);

/*
 * Moves the selection by delta worker rows (skipping app headers), stopping
 * at either end; false when there is no worker to select.
 */
bool console_model_select_move(console_model *m, int delta);

/*
 * The s key: sorts by the current column reversed when the user chose it
 * and it is not reversed yet, else by the next column that has a sort key
 * (in its own order). Each column is
 * thus selected twice in a row, the second time reversed. Returns the
 * column's title.
 */
const char *console_model_sort_next(console_model *m);

/*
 * Sorts by column col (an index into columns_table with a sort key; else
 * nothing changes): selected again, its order reverses. Returns false when
 * col cannot sort.
 */
bool console_model_sort_by(console_model *m, int col);

/* ---- logs --------------------------------------------------------------------- */

/*
 * Points the log pane at the selection ("app:id", the app when log_app, ""
 * when nothing was ever selected; in a fleet, on the selection's host:
 * log_host). When the target changed (or force) the
 * pane is emptied at once and the delay is returned after which the caller
 * should ask the hub for the new target's lines: 0 when forced, else
 * CONSOLE_LOGS_DELAY_MS, so holding j does not send one request per row.
 * Returns -1 when nothing changed.
 */
int console_model_logs_retarget(console_model *m, bool force);

/*
 * The logs request for the pane's target (follow, with CONSOLE_LOG_REQ lines
 * of history; a new one replaces the hub's follow target). New reference;
 * the caller sends it and stores its id in logs_req.
 */
json_t *console_model_logs_request(console_model *m);

/* Scrolls the log pane by delta lines (positive: older); at the bottom it follows again. */
void console_model_log_scroll(console_model *m, long delta);

/* A page of the log pane: its height at the last redraw, less one line of context. */
int console_model_log_page(const console_model *m);

/* True when text matches the log search (case-insensitive substring); false with no search. */
bool console_model_search_hit(const console_model *m, const char *text);

/*
 * Moves to a line that matches the search and scrolls the pane to show it:
 * dir 0 the newest match at or above the bottom of the view (the search
 * text changed), 1 the next older one (n), -1 the next newer one (N).
 * Returns false, leaving the view, when there is none that way.
 */
bool console_model_search_step(console_model *m, int dir);

/* Counts the lines of the pane that match the search. */
size_t console_model_search_count(const console_model *m);

/*
 * A fleet's latency: sets app object f's lat_p50_ms, lat_p99_ms and
 * lag_p99_ms from the interval histograms ("lat_hist", "lag_hist") of the
 * app of the same name in each of the hosts' "apps" arrays apps[0..n),
 * added up bucket by bucket (quantiles do not add up; counts do), clamped
 * by the largest lat_max_ms / lag_max_ms a host saw, which it also sets.
 * A figure no host sent a histogram for is left as f has it.
 */
void console_model_fleet_latency(json_t *f, const json_t *const *apps, size_t n);

#endif
