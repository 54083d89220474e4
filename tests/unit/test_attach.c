/*
 * test_attach.c — attach's tables and machine without processes: the
 * profile chosen by a master's name, its text, and the master-driven
 * reload's transitions (signalled → replacing → done, or aborted at the
 * deadline; readiness gating; a master that comes back to fewer workers).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <cmocka.h>

#include "hub/attach.h"

static void test_attach_profile_by_name(void **st)
{
    (void)st;
    const attach_profile *p = attach_profile_find("nginx", NULL);
    assert_string_equal(p->name, "nginx");
    assert_int_equal(p->kill_signal, SIGQUIT);
    assert_int_equal(p->reload, ATTACH_RELOAD_MASTER);
    assert_int_equal(p->reload_signal, SIGHUP);
    assert_int_equal(p->scale_up, 0);

    p = attach_profile_find("gunicorn", "python3.11");
    assert_string_equal(p->name, "gunicorn");
    assert_int_equal(p->scale_up, SIGTTIN);
    assert_int_equal(p->scale_down, SIGTTOU);
    assert_int_equal(p->kill_signal, SIGTERM);

    /* setproctitle's comm, and the executable's basename */
    assert_string_equal(attach_profile_find("gunicorn: maste", NULL)->name, "gunicorn");
    assert_string_equal(attach_profile_find("python3", "uwsgi")->name, "uwsgi");

    /* a longer name is another program; anything else is the default */
    assert_string_equal(attach_profile_find("nginxy", "nginxy")->name, "default");
    assert_string_equal(attach_profile_find("node", NULL)->name, "default");
    assert_string_equal(attach_profile_find(NULL, NULL)->name, "default");
    p = attach_profile_find("node", NULL);
    assert_int_equal(p->kill_signal, SIGTERM);
    assert_int_equal(p->reload, ATTACH_RELOAD_ONE);
}

static void test_attach_profile_table_and_text(void **st)
{
    (void)st;
    size_t n;
    const attach_profile *t = attach_profiles(&n);
    assert_true(n >= 4);
    assert_string_equal(t[0].name, "default");
    char buf[128];
    attach_profile_text(attach_profile_find("gunicorn", NULL), buf, sizeof buf);
    assert_string_equal(buf, "kill TERM, reload MASTER HUP, scale TTIN/TTOU");
    attach_profile_text(attach_profile_find("nginx", NULL), buf, sizeof buf);
    assert_string_equal(buf, "kill QUIT, reload MASTER HUP, scale -");
}

/* Feeds one input to *s and returns the new state. */
static attach_mr_state feed(attach_mr_state *s, attach_mr_event ev, size_t total, size_t left, size_t fresh,
                            size_t ready, bool gate)
{
    attach_mr_input in = {.ev = ev, .old_total = total, .old_left = left, .fresh = fresh,
                          .fresh_ready = ready, .gate_ready = gate};
    *s = attach_mr_next(*s, &in);
    return *s;
}

static void test_attach_mr_replaced_is_done(void **st)
{
    (void)st;
    attach_mr_state s = ATTACH_MR_IDLE;
    assert_int_equal(feed(&s, ATTACH_MR_START, 2, 2, 0, 0, false), ATTACH_MR_SIGNALLED);
    /* nothing changed yet */
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 2, 2, 0, 0, false), ATTACH_MR_SIGNALLED);
    /* nginx: the new workers first, the old ones still finishing */
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 2, 2, 2, 0, false), ATTACH_MR_REPLACING);
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 2, 1, 2, 0, false), ATTACH_MR_REPLACING);
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 2, 0, 2, 0, false), ATTACH_MR_DONE);
    /* a finished reload ignores late inputs; a new one starts again */
    assert_int_equal(feed(&s, ATTACH_MR_DEADLINE, 2, 0, 2, 0, false), ATTACH_MR_DONE);
    assert_int_equal(feed(&s, ATTACH_MR_START, 2, 2, 0, 0, false), ATTACH_MR_SIGNALLED);
    assert_string_equal(attach_mr_name(s), "signalled");
}

static void test_attach_mr_fewer_new_workers_is_done(void **st)
{
    (void)st;
    /* gunicorn scaled to 4 by TTIN, HUP brings it back to its -w 2 */
    attach_mr_state s = ATTACH_MR_SIGNALLED;
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 4, 4, 2, 0, false), ATTACH_MR_REPLACING);
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 4, 0, 2, 0, false), ATTACH_MR_DONE);
}

static void test_attach_mr_aborted_at_the_deadline(void **st)
{
    (void)st;
    /* the master refused the reload (a bad config): old ones keep serving */
    attach_mr_state s = ATTACH_MR_SIGNALLED;
    assert_int_equal(feed(&s, ATTACH_MR_DEADLINE, 2, 2, 0, 0, false), ATTACH_MR_ABORTED);
    assert_string_equal(attach_mr_name(s), "aborted");
    /* old ones never left */
    s = ATTACH_MR_REPLACING;
    assert_int_equal(feed(&s, ATTACH_MR_DEADLINE, 2, 1, 2, 0, false), ATTACH_MR_ABORTED);
    /* every old one gone, but no new one */
    s = ATTACH_MR_REPLACING;
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 2, 0, 0, 0, false), ATTACH_MR_REPLACING);
    assert_int_equal(feed(&s, ATTACH_MR_DEADLINE, 2, 0, 0, 0, false), ATTACH_MR_ABORTED);
}

static void test_attach_mr_waits_for_readiness_when_reported(void **st)
{
    (void)st;
    attach_mr_state s = ATTACH_MR_SIGNALLED;
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 2, 0, 2, 1, true), ATTACH_MR_REPLACING);
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 2, 0, 2, 2, true), ATTACH_MR_DONE);
    s = ATTACH_MR_REPLACING;
    assert_int_equal(feed(&s, ATTACH_MR_DEADLINE, 2, 0, 2, 1, true), ATTACH_MR_ABORTED);
    /* complete at the deadline itself: done */
    s = ATTACH_MR_REPLACING;
    assert_int_equal(feed(&s, ATTACH_MR_DEADLINE, 2, 0, 2, 2, true), ATTACH_MR_DONE);
}

static void test_attach_mr_one_at_a_time(void **st)
{
    (void)st;
    attach_mr_state s = ATTACH_MR_REPLACING;
    assert_int_equal(feed(&s, ATTACH_MR_START, 2, 2, 0, 0, false), ATTACH_MR_REPLACING);
    /* a master without children: done at the first look */
    s = ATTACH_MR_SIGNALLED;
    assert_int_equal(feed(&s, ATTACH_MR_CHILDREN, 0, 0, 0, 0, false), ATTACH_MR_DONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attach_profile_by_name),
        cmocka_unit_test(test_attach_profile_table_and_text),
        cmocka_unit_test(test_attach_mr_replaced_is_done),
        cmocka_unit_test(test_attach_mr_fewer_new_workers_is_done),
        cmocka_unit_test(test_attach_mr_aborted_at_the_deadline),
        cmocka_unit_test(test_attach_mr_waits_for_readiness_when_reported),
        cmocka_unit_test(test_attach_mr_one_at_a_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
