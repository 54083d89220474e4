/*
 * test_slot.c — a worker slot's state machine, driven without processes:
 * crashes and backoff, errored, restarts, reload replacements, kill,
 * scale-down, shutdown.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hub/slot.h"
#include "hub/supervise.h"

/* Feeds one input (lived_ms for exits) to *s, moves *s on, returns the decision. */
static slot_decision feed(slot_fsm *s, slot_input_kind kind, uint64_t lived_ms)
{
    slot_input in = {.kind = kind, .lived_ms = lived_ms};
    slot_decision d = slot_next(s, &in);
    *s = d.next;
    return d;
}

/* Like feed, with the supervisor's facts given. */
static slot_decision feed_in(slot_fsm *s, slot_input in)
{
    slot_decision d = slot_next(s, &in);
    *s = d.next;
    return d;
}

/* A slot started and ready. */
static slot_fsm online(void)
{
    slot_fsm s = slot_fsm_new();
    assert_int_equal(feed(&s, SLOT_IN_RESTART, 0).act, SLOT_DO_SPAWN);
    assert_int_equal(s.state, SLOT_STARTING);
    feed(&s, SLOT_IN_READY, 0);
    assert_int_equal(s.state, SLOT_ONLINE);
    return s;
}

static void test_slot_new_is_stopped(void **st)
{
    (void)st;
    slot_fsm s = slot_fsm_new();
    assert_int_equal(s.state, SLOT_STOPPED);
    assert_int_equal(s.repl, REPL_NONE);
    assert_int_equal(s.fails, 0);
    assert_int_equal(s.restarts, 0);
    /* nothing but a start (restart) or removal moves it */
    assert_int_equal(feed(&s, SLOT_IN_BACKOFF_DONE, 0).act, SLOT_DO_NOTHING);
    assert_int_equal(feed(&s, SLOT_IN_READY, 0).act, SLOT_DO_NOTHING);
    assert_int_equal(feed(&s, SLOT_IN_REPLACE, 0).act, SLOT_DO_NOTHING);
    assert_int_equal(s.state, SLOT_STOPPED);
}

static void test_slot_crash_backs_off_then_starts(void **st)
{
    (void)st;
    slot_fsm s = online();
    slot_decision d = feed(&s, SLOT_IN_EXITED, 500);
    assert_int_equal(d.act, SLOT_DO_BACKOFF);
    assert_int_equal(d.delay_ms, SUPERVISE_BACKOFF_MIN_MS);
    assert_int_equal(s.state, SLOT_BACKOFF);
    assert_int_equal(s.fails, 1);
    assert_int_equal(s.restarts, 1);

    d = feed(&s, SLOT_IN_BACKOFF_DONE, 0);
    assert_int_equal(d.act, SLOT_DO_SPAWN);
    assert_int_equal(s.state, SLOT_STARTING);

    /* crashes again before it is ready: twice the delay */
    d = feed(&s, SLOT_IN_EXITED, 20);
    assert_int_equal(d.act, SLOT_DO_BACKOFF);
    assert_int_equal(d.delay_ms, 2 * SUPERVISE_BACKOFF_MIN_MS);
    assert_int_equal(s.restarts, 2);
}

/* A start that fails (lived 0) counts like a crash. */
static void test_slot_start_failure_backs_off(void **st)
{
    (void)st;
    slot_fsm s = slot_fsm_new();
    feed(&s, SLOT_IN_RESTART, 0);
    slot_decision d = feed(&s, SLOT_IN_EXITED, 0);
    assert_int_equal(d.act, SLOT_DO_BACKOFF);
    assert_int_equal(s.state, SLOT_BACKOFF);
    assert_int_equal(s.fails, 1);
}

static void test_slot_backoff_doubles_up_to_the_cap(void **st)
{
    (void)st;
    assert_int_equal(slot_backoff_ms(1), 100);
    assert_int_equal(slot_backoff_ms(2), 200);
    assert_int_equal(slot_backoff_ms(3), 400);
    assert_int_equal(slot_backoff_ms(9), 25600);
    assert_int_equal(slot_backoff_ms(10), SUPERVISE_BACKOFF_MAX_MS);
    assert_int_equal(slot_backoff_ms(15), SUPERVISE_BACKOFF_MAX_MS);
    assert_int_equal(slot_backoff_ms(1000), SUPERVISE_BACKOFF_MAX_MS);
}

static void test_slot_quick_failures_end_errored(void **st)
{
    (void)st;
    slot_fsm s = online();
    for (unsigned i = 1; i < SUPERVISE_MAX_FAILS; i++) {
        slot_decision d = feed(&s, SLOT_IN_EXITED, 50);
        assert_int_equal(d.act, SLOT_DO_BACKOFF);
        assert_int_equal(d.delay_ms, slot_backoff_ms(i));
        assert_int_equal(s.fails, i);
        assert_int_equal(feed(&s, SLOT_IN_BACKOFF_DONE, 0).act, SLOT_DO_SPAWN);
    }
    slot_decision d = feed(&s, SLOT_IN_EXITED, 50);
    assert_int_equal(d.act, SLOT_DO_ERRORED);
    assert_int_equal(s.state, SLOT_ERRORED);
    assert_int_equal(s.fails, SUPERVISE_MAX_FAILS);
    assert_int_equal(s.restarts, SUPERVISE_MAX_FAILS);
    assert_int_equal(slot_worker_state(s.state), WS_ERRORED);
    /* not restarted on its own */
    assert_int_equal(feed(&s, SLOT_IN_BACKOFF_DONE, 0).act, SLOT_DO_NOTHING);
    assert_int_equal(s.state, SLOT_ERRORED);
}

static void test_slot_stable_run_resets_the_backoff(void **st)
{
    (void)st;
    slot_fsm s = online();
    for (int i = 0; i < 5; i++) {
        feed(&s, SLOT_IN_EXITED, 10);
        feed(&s, SLOT_IN_BACKOFF_DONE, 0);
    }
    assert_int_equal(s.fails, 5);
    feed(&s, SLOT_IN_READY, 0);
    slot_decision d = feed(&s, SLOT_IN_EXITED, SUPERVISE_STABLE_MS);
    assert_int_equal(d.act, SLOT_DO_BACKOFF);
    assert_int_equal(d.delay_ms, SUPERVISE_BACKOFF_MIN_MS);
    assert_int_equal(s.fails, 1);
    assert_int_equal(s.restarts, 6);      /* restarts are never forgiven */
}

static void test_slot_restart_from_errored(void **st)
{
    (void)st;
    slot_fsm s = online();
    while (s.state != SLOT_ERRORED) {
        feed(&s, SLOT_IN_EXITED, 1);
        feed(&s, SLOT_IN_BACKOFF_DONE, 0);
    }
    slot_decision d = feed(&s, SLOT_IN_RESTART, 0);
    assert_int_equal(d.act, SLOT_DO_SPAWN);
    assert_int_equal(s.state, SLOT_STARTING);
    assert_int_equal(s.fails, 0);
    /* the failures are forgiven: the next crash backs off from the start */
    d = feed(&s, SLOT_IN_EXITED, 1);
    assert_int_equal(d.act, SLOT_DO_BACKOFF);
    assert_int_equal(d.delay_ms, SUPERVISE_BACKOFF_MIN_MS);
}

static void test_slot_restart_of_a_running_worker(void **st)
{
    (void)st;
    slot_fsm s = online();
    slot_decision d = feed(&s, SLOT_IN_RESTART, 0);
    assert_int_equal(d.act, SLOT_DO_STOP_CUR);
    assert_int_equal(s.state, SLOT_RESTARTING);
    assert_int_equal(slot_worker_state(s.state), WS_STOPPING);
    d = feed(&s, SLOT_IN_EXITED, 100000);
    assert_int_equal(d.act, SLOT_DO_SPAWN);
    assert_int_equal(s.state, SLOT_STARTING);
    assert_int_equal(s.restarts, 1);
    assert_int_equal(s.fails, 0);
}

static void test_slot_reload_replacement_takes_over(void **st)
{
    (void)st;
    slot_fsm s = online();
    slot_decision d = feed(&s, SLOT_IN_REPLACE, 0);
    assert_int_equal(d.act, SLOT_DO_REPLACE);
    assert_int_equal(s.state, SLOT_ONLINE);          /* the old one keeps serving */
    assert_int_equal(s.repl, REPL_STARTING);
    assert_false(slot_replaceable(&s));
    assert_int_equal(feed(&s, SLOT_IN_REPLACE, 0).act, SLOT_DO_NOTHING);   /* one at a time */

    d = feed(&s, SLOT_IN_REPL_READY, 0);
    assert_int_equal(d.act, SLOT_DO_PROMOTE);        /* new one current, old one stopped */
    assert_int_equal(s.state, SLOT_ONLINE);
    assert_int_equal(s.repl, REPL_NONE);
    assert_true(slot_replaceable(&s));
}

static void test_slot_reload_replacement_exits_before_ready(void **st)
{
    (void)st;
    slot_fsm s = online();
    feed(&s, SLOT_IN_REPLACE, 0);
    slot_decision d = feed_in(&s, (slot_input){.kind = SLOT_IN_REPL_EXITED, .has_cur = true});
    assert_int_equal(d.act, SLOT_DO_ABORT_RELOAD);
    assert_int_equal(s.state, SLOT_ONLINE);          /* the old one keeps serving */
    assert_int_equal(s.repl, REPL_NONE);
    assert_int_equal(s.restarts, 0);
    assert_int_equal(s.fails, 0);

    /* not ready in time: the replacement is retired, the reload aborted */
    feed(&s, SLOT_IN_REPLACE, 0);
    d = feed(&s, SLOT_IN_REPL_TIMEOUT, 0);
    assert_int_equal(d.act, SLOT_DO_RETIRE_REPL);
    assert_int_equal(s.state, SLOT_ONLINE);
    assert_int_equal(s.repl, REPL_NONE);
}

/* The old process crashes while its replacement starts: the replacement still takes over. */
static void test_slot_replacement_outlives_a_crash(void **st)
{
    (void)st;
    slot_fsm s = online();
    feed(&s, SLOT_IN_REPLACE, 0);
    assert_int_equal(feed(&s, SLOT_IN_EXITED, 50).act, SLOT_DO_BACKOFF);
    assert_int_equal(s.repl, REPL_STARTING);
    assert_int_equal(feed(&s, SLOT_IN_REPL_READY, 0).act, SLOT_DO_PROMOTE);
    assert_int_equal(s.state, SLOT_ONLINE);
}

static void test_slot_kill_stops_and_does_not_restart(void **st)
{
    (void)st;
    slot_fsm s = online();
    feed(&s, SLOT_IN_REPLACE, 0);
    slot_decision d = feed(&s, SLOT_IN_KILL, 0);
    assert_int_equal(d.act, SLOT_DO_STOP);
    assert_int_equal(s.state, SLOT_STOPPING);
    assert_int_equal(s.repl, REPL_STOPPING);
    /* a replacement being stopped does not take over */
    assert_int_equal(feed(&s, SLOT_IN_REPL_READY, 0).act, SLOT_DO_NOTHING);

    d = feed(&s, SLOT_IN_EXITED, 5);
    assert_int_equal(d.act, SLOT_DO_NOTHING);
    assert_int_equal(s.state, SLOT_STOPPED);
    assert_int_equal(s.restarts, 0);
    assert_int_equal(s.fails, 0);
    assert_int_equal(slot_worker_state(s.state), WS_STOPPED);
    assert_int_equal(feed(&s, SLOT_IN_BACKOFF_DONE, 0).act, SLOT_DO_NOTHING);
    assert_int_equal(s.state, SLOT_STOPPED);

    /* killing a slot in backoff cancels its restart */
    s = online();
    feed(&s, SLOT_IN_EXITED, 5);
    d = feed(&s, SLOT_IN_KILL, 0);
    assert_int_equal(d.act, SLOT_DO_STOP);
    assert_int_equal(s.state, SLOT_STOPPED);
    assert_int_equal(feed(&s, SLOT_IN_BACKOFF_DONE, 0).act, SLOT_DO_NOTHING);

    /* a restart after a kill, before the process exited, starts it again once it did */
    s = online();
    feed(&s, SLOT_IN_KILL, 0);
    feed(&s, SLOT_IN_RESTART, 0);
    assert_int_equal(s.state, SLOT_RESTARTING);
    assert_int_equal(feed(&s, SLOT_IN_EXITED, 5).act, SLOT_DO_SPAWN);
    assert_int_equal(s.state, SLOT_STARTING);
}

static void test_slot_scale_down_removes(void **st)
{
    (void)st;
    slot_fsm s = online();
    slot_decision d = feed(&s, SLOT_IN_REMOVE, 0);
    assert_int_equal(d.act, SLOT_DO_STOP);
    assert_int_equal(s.state, SLOT_REMOVING);
    assert_int_equal(feed(&s, SLOT_IN_RESTART, 0).act, SLOT_DO_NOTHING);   /* going away */
    assert_int_equal(s.state, SLOT_REMOVING);
    d = feed(&s, SLOT_IN_EXITED, 5);
    assert_int_equal(s.state, SLOT_GONE);
    assert_int_equal(d.act, SLOT_DO_NOTHING);

    /* a slot with no process goes at once */
    s = online();
    feed(&s, SLOT_IN_EXITED, 5);
    feed(&s, SLOT_IN_REMOVE, 0);
    assert_int_equal(s.state, SLOT_GONE);

    /* with a replacement starting, the slot goes once both processes are gone */
    s = online();
    feed(&s, SLOT_IN_REPLACE, 0);
    d = feed(&s, SLOT_IN_REMOVE, 0);
    assert_int_equal(d.act, SLOT_DO_STOP);
    assert_int_equal(s.repl, REPL_STOPPING);
    feed(&s, SLOT_IN_EXITED, 5);
    assert_int_equal(s.state, SLOT_REMOVING);
    d = feed_in(&s, (slot_input){.kind = SLOT_IN_REPL_EXITED, .has_cur = false});
    assert_int_equal(d.act, SLOT_DO_ABORT_RELOAD);
    assert_int_equal(s.state, SLOT_GONE);
}

static void test_slot_stopping_all_restarts_nothing(void **st)
{
    (void)st;
    slot_fsm s = online();
    slot_decision d = feed_in(&s, (slot_input){.kind = SLOT_IN_EXITED, .lived_ms = 5, .stopping_all = true});
    assert_int_equal(d.act, SLOT_DO_NOTHING);
    assert_int_equal(s.state, SLOT_STOPPED);
    assert_int_equal(s.restarts, 0);

    s = online();
    feed(&s, SLOT_IN_RESTART, 0);
    feed_in(&s, (slot_input){.kind = SLOT_IN_EXITED, .stopping_all = true});
    assert_int_equal(s.state, SLOT_STOPPED);

    s = online();
    feed(&s, SLOT_IN_EXITED, 5);
    d = feed_in(&s, (slot_input){.kind = SLOT_IN_BACKOFF_DONE, .stopping_all = true});
    assert_int_equal(d.act, SLOT_DO_NOTHING);
    assert_int_equal(s.state, SLOT_BACKOFF);
}

static void test_slot_restart_policy_no(void **st)
{
    (void)st;
    slot_fsm s = online();
    slot_decision d = feed_in(&s, (slot_input){.kind = SLOT_IN_EXITED, .lived_ms = 50000, .no_restart = true});
    assert_int_equal(d.act, SLOT_DO_EXITED);
    assert_int_equal(s.state, SLOT_STOPPED);
    /* a restart command still starts it */
    d = feed(&s, SLOT_IN_RESTART, 0);
    assert_int_equal(d.act, SLOT_DO_SPAWN);
    assert_int_equal(s.state, SLOT_STARTING);
    /* a process stopped on purpose is not the policy's business */
    feed(&s, SLOT_IN_READY, 0);
    feed(&s, SLOT_IN_KILL, 0);
    d = feed_in(&s, (slot_input){.kind = SLOT_IN_EXITED, .no_restart = true});
    assert_int_equal(d.act, SLOT_DO_NOTHING);
    assert_int_equal(s.state, SLOT_STOPPED);
}

static void test_slot_gone_is_final(void **st)
{
    (void)st;
    slot_fsm s = slot_fsm_new();
    feed(&s, SLOT_IN_REMOVE, 0);
    assert_int_equal(s.state, SLOT_GONE);
    for (int k = SLOT_IN_READY; k <= SLOT_IN_REPL_TIMEOUT; k++) {
        assert_int_equal(feed(&s, (slot_input_kind)k, 0).act, SLOT_DO_NOTHING);
        assert_int_equal(s.state, SLOT_GONE);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slot_new_is_stopped),
        cmocka_unit_test(test_slot_crash_backs_off_then_starts),
        cmocka_unit_test(test_slot_start_failure_backs_off),
        cmocka_unit_test(test_slot_backoff_doubles_up_to_the_cap),
        cmocka_unit_test(test_slot_quick_failures_end_errored),
        cmocka_unit_test(test_slot_stable_run_resets_the_backoff),
        cmocka_unit_test(test_slot_restart_from_errored),
        cmocka_unit_test(test_slot_restart_of_a_running_worker),
        cmocka_unit_test(test_slot_reload_replacement_takes_over),
        cmocka_unit_test(test_slot_reload_replacement_exits_before_ready),
        cmocka_unit_test(test_slot_replacement_outlives_a_crash),
        cmocka_unit_test(test_slot_kill_stops_and_does_not_restart),
        cmocka_unit_test(test_slot_scale_down_removes),
        cmocka_unit_test(test_slot_stopping_all_restarts_nothing),
        cmocka_unit_test(test_slot_restart_policy_no),
        cmocka_unit_test(test_slot_gone_is_final),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
