/*
 * test_agentlog.c — the ring of drover_log lines of processes drover did not
 * start (hub/agentlog.c), and the APP:pid:PID target form (proto/control.c)
 * that names those processes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "hub/agentlog.h"
#include "proto/control.h"

typedef struct {
    int  n;
    char last[64];
    int  last_pid;
    char first[64];
} seen;

static void collect(void *ctx, const logs_line *l)
{
    seen *s = ctx;
    snprintf(s->last, sizeof s->last, "%.*s", (int)l->len, l->text);
    if (s->n == 0)
        snprintf(s->first, sizeof s->first, "%.*s", (int)l->len, l->text);
    s->last_pid = l->pid;
    s->n++;
}

/* Full ring: the oldest lines go; foreach filters by app and pid and keeps the last n, oldest first. */
static void test_ring_keeps_the_last_lines(void **st)
{
    (void)st;
    agentlog *a = agentlog_new();
    assert_non_null(a);
    seen s = {0};
    agentlog_foreach(a, NULL, 0, 10, collect, &s);         /* nothing yet, nothing allocated */
    assert_int_equal(s.n, 0);
    char line[32];
    for (int i = 0; i < AGENTLOG_LINES + 10; i++) {
        int n = snprintf(line, sizeof line, "line %d", i);
        agentlog_add(a, i % 2 ? "odd" : "even", -1, 100 + i % 2, (double)i, LOGS_OUT, line, (size_t)n);
    }
    s = (seen){0};
    agentlog_foreach(a, NULL, 0, 1000, collect, &s);
    assert_int_equal(s.n, AGENTLOG_LINES);
    assert_string_equal(s.first, "line 10");
    assert_string_equal(s.last, "line 137");
    s = (seen){0};
    agentlog_foreach(a, "odd", 0, 3, collect, &s);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.first, "line 133");
    assert_string_equal(s.last, "line 137");
    assert_int_equal(s.last_pid, 101);
    s = (seen){0};
    agentlog_foreach(a, NULL, 100, 1000, collect, &s);
    assert_int_equal(s.n, AGENTLOG_LINES / 2);
    assert_string_equal(s.last, "line 136");
    agentlog_free(a);
}

/* A line longer than AGENTLOG_TEXT is cut, never overruns. */
static void test_long_line_is_cut(void **st)
{
    (void)st;
    agentlog *a = agentlog_new();
    char big[AGENTLOG_TEXT * 3];
    memset(big, 'x', sizeof big);
    agentlog_add(a, "app", 0, 7, 1.0, LOGS_ERR, big, sizeof big);
    seen s = {0};
    agentlog_foreach(a, "app", 7, 1, collect, &s);
    assert_int_equal(s.n, 1);
    agentlog_free(a);
}

/* APP:pid:PID parses; its bounds and neighbours are refused with one message; the form round-trips. */
static void test_pid_target(void **st)
{
    (void)st;
    ctl_target t;
    char err[160], out[96];
    assert_int_equal(ctl_target_parse("web:pid:1234", &t, err, sizeof err), 0);
    assert_string_equal(t.app, "web");
    assert_int_equal(t.id, -1);
    assert_int_equal(t.pid, 1234);
    assert_int_equal(ctl_target_parse("web:7", &t, err, sizeof err), 0);
    assert_int_equal(t.id, 7);
    assert_int_equal(t.pid, 0);
    assert_int_equal(ctl_target_parse("pid:5", &t, err, sizeof err), 0);    /* an app named pid */
    assert_string_equal(t.app, "pid");
    assert_int_equal(t.id, 5);
    const char *bad[] = {"web:pid:0", "web:pid:-3", "web:pid:4194305", "web:pid:", "web:pid:9x", ":pid:5",
                         "web:-1", "web:pid:99999999999999999999"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ctl_target_parse(bad[i], &t, err, sizeof err), -1);
        assert_non_null(strstr(err, "use APP, APP:ID or APP:pid:PID"));
    }
    assert_string_equal(ctl_target_format("web", -1, 1234, out, sizeof out), "web:pid:1234");
    assert_string_equal(ctl_target_format("web", 3, 1234, out, sizeof out), "web:3");
    assert_string_equal(ctl_target_format("web", -1, 0, out, sizeof out), "web");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_keeps_the_last_lines),
        cmocka_unit_test(test_long_line_is_cut),
        cmocka_unit_test(test_pid_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
