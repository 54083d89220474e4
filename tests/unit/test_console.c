/*
 * test_console.c — the console's model and key table, without a terminal:
 * hub messages applied, the selection kept across snapshots, the filter,
 * the log ring, and keys turned into the same requests as the CLI's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <curses.h>
#include <math.h>
#include <string.h>

#include "proto/control.h"
#include "tui/console_model.h"
#include "proto/buckets.h"
#include "tui/columns.h"
#include "tui/human.h"
#include "tui/keys.h"

/* A state message with workers web:0 (pid 100) and web:1 (pid 101), keys 10 and 11. */
static json_t *state_msg(void)
{
    return json_pack("{s:s, s:[{s:I, s:s, s:i, s:i, s:s}, {s:I, s:s, s:i, s:i, s:s}],"
                     " s:[{s:s, s:i, s:i}]}",
                     "type", "state",
                     "workers", "key", (json_int_t)10, "app", "web", "id", 0, "pid", 100, "state", "online",
                     "key", (json_int_t)11, "app", "web", "id", 1, "pid", 101, "state", "online",
                     "apps", "app", "web", "workers", 2, "online", 2);
}

/* A model connected to a hub, with the two workers of state_msg; the keys over it. */
typedef struct {
    console_model m;
    keys_state    k;
} fixture;

static int setup(void **st)
{
    fixture *f = calloc(1, sizeof *f);
    console_model_init(&f->m);
    keys_init(&f->k, &f->m);
    json_t *hello = json_pack("{s:s, s:s, s:s, s:i}", "type", "hello", "ns", "default", "mode", "run",
                              "hub_pid", 42);
    console_model_hello(&f->m, hello);
    json_decref(hello);
    json_t *s = state_msg();
    console_model_apply(&f->m, s);
    json_decref(s);
    *st = f;
    return 0;
}

static int teardown(void **st)
{
    fixture *f = *st;
    json_decref(f->k.send);
    console_model_free(&f->m);
    free(f);
    return 0;
}

/* Presses one character key. */
static void press(fixture *f, int key)
{
    json_decref(f->k.send);
    f->k.send = NULL;
    keys_handle(&f->k, key, false);
}

/* The request the last key left to send, as compact JSON (static buffer). */
static const char *sent(const fixture *f)
{
    static char buf[256];
    char *s = f->k.send ? json_dumps(f->k.send, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    snprintf(buf, sizeof buf, "%s", s ? s : "(none)");
    free(s);
    return buf;
}

static void test_snapshot_selects_the_first_worker(void **st)
{
    fixture *f = *st;
    assert_int_equal(f->m.nw, 2);
    assert_int_equal(f->m.nrows, 3);   /* the app's header and two workers */
    console_worker *w = console_model_selected(&f->m);
    assert_non_null(w);
    assert_int_equal(w->id, 0);
    assert_int_equal(w->pid, 100);
    assert_true(console_model_connected(&f->m));
    assert_string_equal(f->m.status, "connected to the hub (pid 42, run mode)");
}

static void test_selection_follows_app_id_across_snapshots(void **st)
{
    fixture *f = *st;
    assert_true(console_model_select_move(&f->m, 1));
    assert_int_equal(console_model_selected(&f->m)->id, 1);
    /* a reload replaces web:1 by a row with a new key: the selection stays on web:1 */
    json_t *s = state_msg();
    json_t *w1 = json_array_get(json_object_get(s, "workers"), 1);
    json_object_set_new(w1, "key", json_integer(12));
    json_object_set_new(w1, "pid", json_integer(200));
    console_model_apply(&f->m, s);
    json_decref(s);
    assert_int_equal(console_model_selected(&f->m)->pid, 200);
    /* at the end of the list the selection stays */
    assert_true(console_model_select_move(&f->m, 1));
    assert_int_equal(console_model_selected(&f->m)->pid, 200);
}

static void test_history_grows_one_point_per_state(void **st)
{
    fixture *f = *st;
    json_t *s = state_msg();
    console_model_apply(&f->m, s);
    json_decref(s);
    float pts[CONSOLE_HIST];
    assert_int_equal(console_model_hist_last(console_model_selected(&f->m)->h, CONSOLE_SER_CPU, 10, pts), 2);
    assert_int_equal(console_model_hist_last(NULL, CONSOLE_SER_CPU, 10, pts), 0);
}

static void test_events_show_their_text(void **st)
{
    fixture *f = *st;
    ctl_event e = ctl_event_make(CTL_EV_RELOAD, CTL_PHASE_PROGRESS, "web", -1, 0);
    e.done = 1;
    e.total = 2;
    e.text = "reload web: 1/2 replaced";
    json_t *msg = ctl_event_json(&e);
    assert_int_equal(console_model_apply(&f->m, msg), -1);
    json_decref(msg);
    assert_string_equal(f->m.status, "reload web: 1/2 replaced");
    assert_false(f->m.status_err);
}

static void test_logs_reply_then_pushed_lines(void **st)
{
    fixture *f = *st;
    assert_int_equal(console_model_logs_retarget(&f->m, true), 0);
    assert_string_equal(f->m.log_target, "web:0");
    json_t *req = console_model_logs_request(&f->m);
    char *s = json_dumps(req, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"cmd\":\"logs\",\"follow\":true,\"lines\":1000,\"target\":\"web:0\"}");
    free(s);
    json_decref(req);
    f->m.logs_req = 5;
    json_t *reply = json_pack("{s:s, s:i, s:b, s:[{s:s, s:i, s:s, s:s}]}", "type", "reply", "id", 5, "ok", 1,
                              "lines", "app", "web", "id", 0, "stream", "err", "text", "boom");
    console_model_apply(&f->m, reply);
    json_decref(reply);
    assert_true(f->m.logs_ready);
    assert_int_equal(f->m.log_n, 1);
    assert_true(f->m.log[0].err);
    assert_string_equal(f->m.log[0].label, "web:0");
    /* a line of another worker is not this pane's */
    json_t *other = json_pack("{s:s, s:s, s:i, s:s}", "type", "log", "app", "web", "id", 1, "text", "x");
    json_t *mine = json_pack("{s:s, s:s, s:i, s:s}", "type", "log", "app", "web", "id", 0, "text", "y");
    console_model_apply(&f->m, other);
    console_model_apply(&f->m, mine);
    json_decref(other);
    json_decref(mine);
    assert_int_equal(f->m.log_n, 2);
    assert_string_equal(f->m.log[1].text, "y");
}

static void test_keys_send_the_cli_requests(void **st)
{
    fixture *f = *st;
    press(f, 'r');
    assert_string_equal(sent(f), "{\"cmd\":\"restart\",\"target\":\"web:0\"}");
    assert_string_equal(f->m.status, "restart web:0 ...");
    press(f, 'R');
    assert_string_equal(sent(f), "{\"cmd\":\"reload\",\"target\":\"web\"}");
    press(f, '+');
    assert_string_equal(sent(f), "{\"cmd\":\"scale\",\"delta\":1,\"target\":\"web\"}");
    press(f, '-');
    assert_string_equal(sent(f), "{\"cmd\":\"scale\",\"delta\":-1,\"target\":\"web\"}");
    press(f, 'j');
    assert_int_equal(f->k.logs_in_ms, CONSOLE_LOGS_DELAY_MS);   /* the logs follow once it rests */
    press(f, 'r');
    assert_string_equal(sent(f), "{\"cmd\":\"restart\",\"target\":\"web:1\"}");
}

static void test_kill_asks_first(void **st)
{
    fixture *f = *st;
    press(f, 'x');
    assert_int_equal(f->k.mode, KEYS_MODE_CONFIRM);
    assert_string_equal(f->k.confirm_text, "kill web:0 (pid 100)? [y/n]");
    assert_null(f->k.send);
    press(f, 'n');
    assert_int_equal(f->k.mode, KEYS_MODE_NORMAL);
    assert_string_equal(f->m.status, "kill cancelled");
    assert_null(f->k.send);
    keys_handle(&f->k, KEY_F(9), true);
    assert_int_equal(f->k.mode, KEYS_MODE_CONFIRM);
    press(f, 'y');
    assert_string_equal(sent(f), "{\"cmd\":\"kill\",\"target\":\"web:0\"}");
}

static void test_keys_without_a_hub_send_nothing(void **st)
{
    fixture *f = *st;
    console_model_disconnected(&f->m);
    press(f, 'r');
    assert_null(f->k.send);
    assert_string_equal(f->m.status, "not connected to the hub: restart not sent");
    assert_true(f->m.status_err);
}

static void test_filter_narrows_and_esc_clears(void **st)
{
    fixture *f = *st;
    press(f, '/');
    assert_int_equal(f->k.mode, KEYS_MODE_FILTER);
    for (const char *p = "web:1"; *p; p++)
        press(f, *p);
    assert_int_equal(f->m.nrows, 2);
    assert_int_equal(console_model_selected(&f->m)->id, 1);
    press(f, 127);   /* backspace */
    assert_string_equal(f->m.filter, "web:");
    assert_int_equal(f->m.nrows, 3);
    press(f, 27);
    assert_int_equal(f->k.mode, KEYS_MODE_NORMAL);
    assert_string_equal(f->m.filter, "");
}

/*
 * A fleet's merged snapshot (as tui/console.c builds it): web:0 on "local"
 * (pid 100) and on "h1" (pid local_key's pid + 100), keys made unique per
 * host; h1 stale when h1_down.
 */
static json_t *fleet_msg(json_int_t local_key, long h1_pid, bool h1_down)
{
    return json_pack("{s:s, s:[{s:I, s:s, s:i, s:i, s:s, s:s, s:b}, {s:I, s:s, s:i, s:i, s:s, s:s, s:b}],"
                     " s:[{s:s, s:i, s:i}], s:[{s:s, s:s}, {s:s, s:s}]}",
                     "type", "state",
                     "workers", "key", ((json_int_t)1 << 32) + local_key, "app", "web", "id", 0, "pid", 100,
                     "state", "online", "host", "local", "stale", 0,
                     "key", ((json_int_t)2 << 32) + 10, "app", "web", "id", 0, "pid", (int)h1_pid,
                     "state", "online", "host", "h1", "stale", h1_down,
                     "apps", "app", "web", "workers", 2, "online", 2,
                     "hosts", "host", "local", "state", "up", "host", "h1", "state", h1_down ? "down" : "up");
}

static void test_fleet_rows_filter_selection_and_keys(void **st)
{
    fixture *f = *st;
    f->m.fleet = true;
    json_t *s = fleet_msg(10, 200, false);
    console_model_apply_fleet(&f->m, s, false, NULL, 0);
    json_decref(s);
    /* one app group across the hosts: its header, then web:0 host by host */
    assert_int_equal(f->m.nrows, 3);
    assert_string_equal(f->m.rows[1].w->host, "h1");
    assert_string_equal(f->m.rows[2].w->host, "local");
    /* the local web:0 selected; a reload gives it a new key: the selection stays on that host */
    while (strcmp(console_model_selected(&f->m)->host, "local") != 0)
        assert_true(console_model_select_move(&f->m, 1));
    s = fleet_msg(11, 200, false);
    static const char *const local[] = {"local"};
    console_model_apply_fleet(&f->m, s, false, local, 1);
    json_decref(s);
    assert_string_equal(console_model_selected(&f->m)->host, "local");
    /* a point of history only for the host whose state came */
    float pts[CONSOLE_HIST];
    assert_int_equal(console_model_hist_last(f->m.rows[1].w->h, CONSOLE_SER_CPU, 10, pts), 0);
    assert_int_equal(console_model_hist_last(console_model_selected(&f->m)->h, CONSOLE_SER_CPU, 10, pts), 1);
    /* r names the host; the console sends it there */
    press(f, 'r');
    assert_string_equal(sent(f), "{\"cmd\":\"restart\",\"target\":\"web:0\"}");
    assert_string_equal(f->m.status, "restart web:0 on local ...");
    /* the filter matches the host name */
    press(f, '/');
    press(f, 'h');
    press(f, '1');
    assert_int_equal(f->m.nrows, 2);
    assert_string_equal(console_model_selected(&f->m)->host, "h1");
    press(f, 27);
    /* a worker of a host that is down: nothing is sent */
    s = fleet_msg(11, 200, true);
    console_model_apply_fleet(&f->m, s, false, NULL, 0);
    json_decref(s);
    while (strcmp(console_model_selected(&f->m)->host, "h1") != 0)
        assert_true(console_model_select_move(&f->m, -1));
    press(f, 'r');
    assert_null(f->k.send);
    assert_string_equal(f->m.status, "h1 is unreachable: restart not sent");
}

static void test_quit_keys(void **st)
{
    fixture *f = *st;
    press(f, 'q');
    assert_int_equal(f->k.quit, KEYS_QUIT_KEY);
    f->k.mode = KEYS_MODE_QUIT;
    press(f, 'n');
    assert_int_equal(f->k.quit, KEYS_QUIT_LEAVE);
    press(f, 'c');
    assert_int_equal(f->k.quit, KEYS_QUIT_NONE);
    assert_int_equal(f->k.mode, KEYS_MODE_NORMAL);
    press(f, '?');
    assert_int_equal(f->k.mode, KEYS_MODE_HELP);
    keys_handle(&f->k, KEY_F(1), true);   /* any key closes the help */
    assert_int_equal(f->k.mode, KEYS_MODE_NORMAL);
}

static void test_help_and_hints_come_from_the_table(void **st)
{
    fixture *f = *st;
    char lines[40][200];
    int n = keys_help(&f->k, false, lines, 40);
    assert_true(n > 10);
    assert_string_equal(lines[0], "Up/Down j/k\tselect a worker (logs pane focused: scroll a line)");
    bool kill = false, sort = false;
    for (int i = 0; i < n; i++) {
        kill |= strncmp(lines[i], "x F9\tkill: ", 11) == 0 && strstr(lines[i], "(asks y/n)");
        sort |= strcmp(lines[i], "s\tsort: this column reversed, then the next (now ID ascending)") == 0;
    }
    assert_true(kill);
    assert_true(sort);

    keys_hint h[32];
    n = keys_hints(&f->k, false, h, 32);
    const char *want[][2] = {{"?", "help"}, {"q", "quit"}, {"j/k", "select"}, {"x F9", "kill"},
                             {"r", "restart"}, {"R", "reload"}, {"+ -", "scale"}, {"i", "describe"}, {"/", "filter"},
                             {"s", "sort"}, {"a", "app logs"}, {"f", "follow"}, {"Tab", "pane"}};
    assert_int_equal(n, sizeof want / sizeof want[0]);
    for (int i = 0; i < n; i++) {
        assert_string_equal(h[i].key, want[i][0]);
        assert_string_equal(h[i].text, want[i][1]);
    }
    press(f, 'a');
    keys_hints(&f->k, true, h, 32);
    assert_string_equal(h[2].key, "\u2191\u2193");
    assert_string_equal(h[10].text, "worker logs");
}

/* i: a describe reply opens the overlay; any key closes it and does nothing else. */
static void test_describe_reply_opens_the_overlay(void **st)
{
    fixture *f = *st;
    json_t *reply = json_pack("{s:s, s:i, s:b, s:{s:s, s:[s], s:[]}}", "type", "reply", "id", 42, "ok", 1, "app",
                              "app", "web", "command", "httpd", "events");
    console_model_apply(&f->m, reply);
    json_decref(reply);
    assert_non_null(f->m.describe);
    press(f, 's');                       /* closes it; does not sort */
    assert_null(f->m.describe);
    assert_int_equal(f->k.mode, KEYS_MODE_NORMAL);
}

/* s offers each column twice: the second time reversed (pids in the other order). */
static void test_sort_same_column_again_reverses(void **st)
{
    fixture *f = *st;
    assert_string_equal(console_model_sort_next(&f->m), "PID");
    assert_false(f->m.sort_rev);
    assert_int_equal(f->m.rows[1].w->pid, 100);   /* row 0 is the app header */
    assert_int_equal(f->m.rows[2].w->pid, 101);
    press(f, 's');
    assert_true(f->m.sort_rev);
    assert_int_equal(f->m.rows[1].w->pid, 101);
    assert_int_equal(f->m.rows[2].w->pid, 100);
    assert_non_null(strstr(f->m.status, "PID, descending"));
    press(f, 's');                                /* then the next column, in its own order */
    assert_false(f->m.sort_rev);
    assert_string_not_equal(columns_table[f->m.sort_col].name, "pid");
    /* a column chosen directly (a click on its title): again reverses */
    int pid_col = (int)(columns_find("pid") - columns_table);
    assert_true(console_model_sort_by(&f->m, pid_col));
    assert_false(f->m.sort_rev);
    assert_true(console_model_sort_by(&f->m, pid_col));
    assert_true(f->m.sort_rev);
    assert_false(console_model_sort_by(&f->m, 0));   /* APP has no sort key */
}

/* "done" shows only once the list shows it: held while a worker of the app is starting. */
static void test_done_waits_for_the_list(void **st)
{
    fixture *f = *st;
    json_t *starting = json_pack("{s:s, s:[{s:I, s:s, s:i, s:i, s:s}], s:[]}", "type", "state", "workers",
                                 "key", (json_int_t)12, "app", "web", "id", 0, "pid", 102, "state", "starting",
                                 "apps");
    console_model_apply(&f->m, starting);
    ctl_event e = ctl_event_make(CTL_EV_RELOAD, CTL_PHASE_DONE, "web", -1, 0);
    e.text = "reload web: done, 2/2 replaced";
    json_t *msg = ctl_event_json(&e);
    console_model_apply(&f->m, msg);
    json_decref(msg);
    assert_null(strstr(f->m.status, "done"));
    console_model_apply(&f->m, starting);      /* the list still says starting */
    assert_null(strstr(f->m.status, "done"));
    json_decref(starting);
    json_t *online = state_msg();
    console_model_apply(&f->m, online);        /* now it agrees */
    json_decref(online);
    assert_string_equal(f->m.status, "reload web: done, 2/2 replaced");
}

/*
 * A worker that stays starting long after the outcome: past the quiet wait
 * the status says what was replaced and which worker still starts, never
 * "done", for as long as the list shows it starting; then "done".
 */
static void test_done_never_while_a_row_starts(void **st)
{
    fixture *f = *st;
    json_t *starting = json_pack("{s:s, s:[{s:I, s:s, s:i, s:i, s:s}, {s:I, s:s, s:i, s:i, s:s}], s:[]}",
                                 "type", "state", "workers",
                                 "key", (json_int_t)12, "app", "web", "id", 0, "pid", 102, "state", "online",
                                 "key", (json_int_t)13, "app", "web", "id", 1, "pid", 103, "state", "starting",
                                 "apps");
    console_model_apply(&f->m, starting);
    ctl_event e = ctl_event_make(CTL_EV_RELOAD, CTL_PHASE_DONE, "web", -1, 0);
    e.text = "reload web: done, 2/2 replaced in 1.20 s";
    e.done = 2;
    e.total = 2;
    json_t *msg = ctl_event_json(&e);
    console_model_apply(&f->m, msg);
    json_decref(msg);
    for (int i = 0; i < 3 * CONSOLE_DONE_WAIT; i++) {
        console_model_apply(&f->m, starting);
        assert_null(strstr(f->m.status, "done"));
        if (i >= CONSOLE_DONE_WAIT - 1)
            assert_string_equal(f->m.status, "reload web: 2/2 replaced, web:1 still starting");
    }
    /* another status meanwhile (a key's outcome) is not said over while nothing changes */
    console_model_status(&f->m, false, "sorted by PID, ascending");
    console_model_apply(&f->m, starting);
    assert_string_equal(f->m.status, "sorted by PID, ascending");
    json_decref(starting);
    json_t *online = state_msg();
    console_model_apply(&f->m, online);        /* the list agrees at last */
    json_decref(online);
    assert_string_equal(f->m.status, "reload web: done, 2/2 replaced in 1.20 s");
    assert_int_equal(f->m.done_phase, CONSOLE_DONE_NONE);

    /* a new reload makes a held outcome stale: it is never shown */
    msg = ctl_event_json(&e);
    console_model_apply(&f->m, msg);
    json_decref(msg);
    ctl_event s = ctl_event_make(CTL_EV_RELOAD, CTL_PHASE_STARTED, "web", -1, 0);
    s.text = "reload web: started";
    msg = ctl_event_json(&s);
    console_model_apply(&f->m, msg);
    json_decref(msg);
    online = state_msg();
    console_model_apply(&f->m, online);
    json_decref(online);
    assert_string_equal(f->m.status, "reload web: started");
}

/* How the last exit reads, and what j/k say with the logs focused. */
static void test_exit_text_and_log_focus_hint(void **st)
{
    fixture *f = *st;
    char b[48];
    console_model_exit_text("exit 0", b, sizeof b);
    assert_string_equal(b, "status 0");
    console_model_exit_text("signal 9", b, sizeof b);
    assert_string_equal(b, "signal KILL");
    console_model_exit_text(NULL, b, sizeof b);
    assert_string_equal(b, "-");
    keys_hint h[32];
    int n = keys_hints(&f->k, false, h, 32);
    bool sel = false, scroll = false;
    for (int i = 0; i < n; i++) {
        sel |= strcmp(h[i].text, "select") == 0;
        scroll |= strcmp(h[i].text, "scroll logs") == 0;
    }
    assert_true(sel && !scroll);
    press(f, '\t');
    n = keys_hints(&f->k, false, h, 32);
    sel = scroll = false;
    for (int i = 0; i < n; i++) {
        sel |= strcmp(h[i].text, "select") == 0;
        scroll |= strcmp(h[i].text, "scroll logs") == 0;
    }
    assert_true(scroll && !sel);
}

/* / with the logs focused searches them; n and N step through the matches. */
static void test_search_in_logs(void **st)
{
    fixture *f = *st;
    console_model_logs_retarget(&f->m, true);
    f->m.logs_req = 5;
    json_t *reply = json_pack("{s:s, s:i, s:b, s:[{s:s}, {s:s}, {s:s}, {s:s}]}", "type", "reply", "id", 5, "ok", 1,
                              "lines", "text", "alpha one", "text", "beta", "text", "Alpha two", "text", "gamma");
    console_model_apply(&f->m, reply);
    json_decref(reply);
    f->m.log_rows = 2;
    press(f, '\t');
    press(f, '/');
    assert_int_equal(f->k.mode, KEYS_MODE_SEARCH);
    for (const char *c = "alpha"; *c; c++)
        press(f, *c);
    assert_int_equal(f->m.search_line, 2);        /* the newest match, case-insensitive */
    assert_int_equal(console_model_search_count(&f->m), 2);
    press(f, '\r');
    assert_int_equal(f->k.mode, KEYS_MODE_NORMAL);
    press(f, 'n');
    assert_int_equal(f->m.search_line, 0);        /* older */
    assert_true(f->m.log_scroll >= 2);            /* scrolled to show it, paused */
    assert_false(f->m.follow);
    press(f, 'n');
    assert_non_null(strstr(f->m.status, "no older line"));
    press(f, 'N');
    assert_int_equal(f->m.search_line, 2);
    assert_string_equal(f->m.filter, "");         /* the list's filter untouched */
    press(f, '/');
    press(f, 27);                                 /* Esc clears the search */
    assert_string_equal(f->m.search, "");
}

/* human_format of v on scale, as a string to compare. */
static const char *human(double v, human_scale sc)
{
    static char buf[32];
    human_format(v, sc, buf, sizeof buf);
    return buf;
}

/* Figures a person reads at a glance: three digits and a suffix, never an exponent. */
static void test_human_format(void **st)
{
    (void)st;
    assert_string_equal(human(6266880, HUMAN_SI), "6.27M");
    assert_string_equal(human(0.899, HUMAN_SI), "0.899");
    assert_string_equal(human(1200, HUMAN_SI), "1.2k");
    assert_string_equal(human(12, HUMAN_SI), "12");
    assert_string_equal(human(12.34, HUMAN_SI), "12.3");
    assert_string_equal(human(999.4, HUMAN_SI), "999");
    assert_string_equal(human(999.6, HUMAN_SI), "1k");
    assert_string_equal(human(0, HUMAN_SI), "0");
    assert_string_equal(human(-2500, HUMAN_SI), "-2.5k");
    assert_string_equal(human(0.00012, HUMAN_SI), "120u");
    assert_string_equal(human(3.2e12, HUMAN_SI), "3.2T");
    assert_null(strchr(human(1e300, HUMAN_SI), 'e'));
    assert_null(strchr(human(6.26688e+06, HUMAN_SI), 'e'));
    assert_string_equal(human(NAN, HUMAN_SI), "-");
    /* bytes: the memory column's ladder */
    assert_string_equal(human(950 * 1024.0, HUMAN_BYTES), "950K");
    assert_string_equal(human(12.3 * 1024 * 1024, HUMAN_BYTES), "12.3M");
    assert_string_equal(human(1.5 * 1024 * 1024 * 1024, HUMAN_BYTES), "1.5G");
    assert_string_equal(human(-1, HUMAN_BYTES), "-");
    char b[32];
    human_format_unit(45.26, HUMAN_SI, "%", b, sizeof b);
    assert_string_equal(b, "45.3%");
    human_format_unit(NAN, HUMAN_SI, "ms", b, sizeof b);
    assert_string_equal(b, "-");
    /* never longer than 7 characters */
    for (double v = 1e-12; v < 1e300; v *= 1.7) {
        assert_true(strlen(human(v, HUMAN_SI)) <= 7);
        assert_true(strlen(human(-v, HUMAN_SI)) <= 7);
        assert_true(strlen(human(v, HUMAN_BYTES)) <= 7);
    }
}

/* Sparklines scale quantities from zero and report the series' range. */
static void test_spark_levels_scale_from_zero(void **st)
{
    (void)st;
    float v[] = {1.8e6f, 1.9e6f, NAN, 2.0e6f};
    int lv[4];
    double lo, hi;
    assert_int_equal(human_spark_levels(v, 4, 1.0, 8, lv, &lo, &hi), 3);
    assert_int_equal(lv[2], -1);
    assert_int_equal(lv[3], 7);
    assert_true(lv[0] >= 6);          /* 1.8M of 2.0M: nearly full, not the bottom */
    assert_true(lo > 1.79e6 && lo < 1.81e6);
    assert_true(hi > 1.99e6 && hi < 2.01e6);
    /* a quiet series under the floor stays low */
    float q[] = {0.1f, 0.2f};
    human_spark_levels(q, 2, 100.0, 8, lv, &lo, &hi);
    assert_int_equal(lv[0], 0);
    assert_int_equal(lv[1], 0);
    /* nothing known */
    float u[] = {NAN};
    assert_int_equal(human_spark_levels(u, 1, 1.0, 8, lv, &lo, &hi), 0);
    assert_true(isnan(lo) && isnan(hi));
}

/* One host's app object with n samples of v µs in its lat_hist (and the max). */
static json_t *fleet_app(const char *name, uint64_t v, json_int_t n)
{
    return json_pack("{s:s, s:f, s:{s:[i], s:[I]}}", "app", name, "lat_max_ms", (double)v / 1000.0, "lat_hist",
                     "idx", (int)hist_bucket_of(v), "count", n);
}

/* A fleet's p50/p99 come from the hosts' histograms added up, not from their quantiles. */
static void test_fleet_latency_merges_histograms(void **state)
{
    (void)state;
    json_t *a = json_pack("[o, o]", fleet_app("web", 2000, 100), fleet_app("db", 900, 5));
    json_t *b = json_pack("[o]", fleet_app("web", 50000, 100));
    const json_t *hosts[] = {a, b};
    json_t *f = json_pack("{s:s}", "app", "web");
    console_model_fleet_latency(f, hosts, 2);
    /* every host's own p99 alone would say 2 ms and 50 ms (their mean 26 ms); the
     * fleet's 200 samples put p50 in the 2 ms bucket and p99 in the 50 ms one */
    uint64_t dense[HIST_NBUCKETS] = {0};
    dense[hist_bucket_of(2000)] = 100;
    dense[hist_bucket_of(50000)] = 100;
    assert_true(fabs(console_model_num(f, "lat_p50_ms") - (double)hist_quantile(dense, 5000, 50000) / 1000.0) < 1e-9);
    assert_true(fabs(console_model_num(f, "lat_p99_ms") - (double)hist_quantile(dense, 9900, 50000) / 1000.0) < 1e-9);
    assert_true(console_model_num(f, "lat_p50_ms") < 2.2 && console_model_num(f, "lat_p99_ms") > 45.0);
    assert_true(console_model_num(f, "lat_max_ms") == 50.0);
    assert_true(isnan(console_model_num(f, "lag_p99_ms")));   /* no host sent a lag histogram */
    /* an app no host has: nothing set */
    json_t *g = json_pack("{s:s}", "app", "cache");
    console_model_fleet_latency(g, hosts, 2);
    assert_true(isnan(console_model_num(g, "lat_p50_ms")));
    json_decref(f);
    json_decref(g);
    json_decref(a);
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_snapshot_selects_the_first_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_selection_follows_app_id_across_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_history_grows_one_point_per_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_show_their_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_logs_reply_then_pushed_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_send_the_cli_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_asks_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys_without_a_hub_send_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filter_narrows_and_esc_clears, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quit_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fleet_rows_filter_selection_and_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_describe_reply_opens_the_overlay, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help_and_hints_come_from_the_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sort_same_column_again_reverses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_waits_for_the_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_never_while_a_row_starts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_text_and_log_focus_hint, setup, teardown),
        cmocka_unit_test_setup_teardown(test_search_in_logs, setup, teardown),
        cmocka_unit_test(test_human_format),
        cmocka_unit_test(test_spark_levels_scale_from_zero),
        cmocka_unit_test(test_fleet_latency_merges_histograms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
