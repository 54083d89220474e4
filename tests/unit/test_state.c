/*
 * test_state.c — the hub's model: creation, rates, gaps, exits, pid reuse.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "hub/state.h"

static report mk(uint32_t pid, uint64_t seq, uint64_t ts, uint64_t req)
{
    report r;
    memset(&r, 0, sizeof r);
    r.type = REPORT_T_REPORT;
    r.pid = pid;
    r.seq = seq;
    r.ts = ts;
    r.req = req;
    r.has = REPORT_HAS_TS | REPORT_HAS_REQ | REPORT_HAS_NAME | REPORT_HAS_WID;
    strcpy(r.name, "web");
    r.wid = pid % 10;
    return r;
}

static proc_sample alive(pid_t pid, uint64_t start, uint64_t ticks)
{
    proc_sample ps = {.pid = pid, .alive = true, .start_ticks = start, .cpu_ticks = ticks,
                      .rss_bytes = 1 << 20, .elapsed_s = 5};
    strcpy(ps.comm, "worker");
    return ps;
}

static void test_state_report_creates_worker_with_rate(void **st)
{
    (void)st;
    state *s = state_new();
    report r = mk(101, 0, 10000, 0);
    state_apply_report(s, &r, 1.0);
    r = mk(101, 1, 11000, 250);
    state_apply_report(s, &r, 2.0);

    worker_view v[4];
    assert_int_equal(state_snapshot(s, v, 4, 2.0, 1.0), 1);
    assert_string_equal(v[0].app, "web");
    assert_int_equal(v[0].pid, 101);
    assert_int_equal(v[0].id, 1);
    assert_int_equal(v[0].state, WS_ONLINE);
    assert_true(v[0].agent);
    assert_int_equal(v[0].req_total, 250);
    assert_float_equal(v[0].req_per_s, 250.0, 1e-9);
    assert_true(isnan(v[0].cpu_pct));     /* never sampled */
    assert_int_equal(v[0].rss_bytes, -1);
    assert_int_equal(state_counters(s).reports_total, 2);
    state_free(s);
}

/* An agent restart inside the same process resets its counter: no negative rate. */
static void test_state_counter_reset(void **st)
{
    (void)st;
    state *s = state_new();
    report r = mk(7, 0, 1000, 900);
    state_apply_report(s, &r, 1.0);
    r = mk(7, 0, 2000, 40);       /* seq back to 0: agent restarted, not a gap */
    state_apply_report(s, &r, 2.0);
    worker_view v[1];
    state_snapshot(s, v, 1, 2.0, 1.0);
    assert_float_equal(v[0].req_per_s, 40.0, 1e-9);
    assert_int_equal(state_counters(s).dropped_total, 0);
    state_free(s);
}

static void test_state_seq_gap_counted(void **st)
{
    (void)st;
    state *s = state_new();
    report r = mk(9, 3, 1000, 0);
    state_apply_report(s, &r, 1.0);
    r = mk(9, 7, 2000, 0);        /* 4, 5, 6 missing */
    state_apply_report(s, &r, 2.0);
    assert_int_equal(state_counters(s).dropped_total, 3);
    state_free(s);
}

/* A datagram overtaken by a later one is neither a gap nor a restart. */
static void test_state_seq_reorder(void **st)
{
    (void)st;
    state *s = state_new();
    report r = mk(9, 10, 1000, 0);
    state_apply_report(s, &r, 1.0);
    r = mk(9, 12, 2000, 0);       /* 11 still on its way: one gap for now */
    state_apply_report(s, &r, 2.0);
    r = mk(9, 11, 2000, 0);       /* late */
    state_apply_report(s, &r, 2.0);
    r = mk(9, 13, 3000, 0);       /* no new gap */
    state_apply_report(s, &r, 3.0);
    assert_int_equal(state_counters(s).dropped_total, 1);
    state_free(s);
}

static void test_state_cpu_and_exit(void **st)
{
    (void)st;
    state *s = state_new();
    report r = mk(55, 0, 1000, 0);
    state_apply_report(s, &r, 0.0);
    proc_sample ps = alive(55, 1234, 100);
    state_apply_sample(s, &ps, 1.0);
    ps = alive(55, 1234, 150);    /* 50 ticks in 1 s */
    state_apply_sample(s, &ps, 2.0);
    worker_view v[1];
    state_snapshot(s, v, 1, 2.0, 1.0);
    double hz = 100.0;  /* sysconf(_SC_CLK_TCK) is 100 on Linux */
    assert_float_equal(v[0].cpu_pct, 50.0 / hz * 100.0, 1e-6);
    assert_int_equal(v[0].rss_bytes, 1 << 20);

    ps.alive = false;
    state_apply_sample(s, &ps, 3.0);
    state_snapshot(s, v, 1, 3.0, 1.0);
    assert_int_equal(v[0].state, WS_GONE);
    assert_false(v[0].agent);

    /* shown for a few intervals, then dropped */
    state_tick(s, 4.0, 1.0);
    assert_int_equal(state_count(s), 1);
    state_tick(s, 6.0, 1.0);
    assert_int_equal(state_count(s), 0);
    state_free(s);
}

/* A pid that now belongs to another process (different start time) is a new worker. */
static void test_state_pid_reuse(void **st)
{
    (void)st;
    state *s = state_new();
    report r = mk(77, 0, 1000, 10);
    state_apply_report(s, &r, 0.0);
    proc_sample ps = alive(77, 500, 1);
    state_apply_sample(s, &ps, 1.0);
    ps = alive(77, 900, 1);
    state_apply_sample(s, &ps, 2.0);
    r = mk(77, 0, 3000, 1);
    state_apply_report(s, &r, 3.0);
    worker_view v[2];
    assert_int_equal(state_snapshot(s, v, 2, 3.0, 1.0), 2);
    int gone = v[0].state == WS_GONE ? 0 : 1;
    assert_int_equal(v[gone].state, WS_GONE);
    assert_int_equal(v[1 - gone].state, WS_ONLINE);
    assert_int_equal(v[1 - gone].req_total, 1);
    state_free(s);
}

static void test_state_notify_ready(void **st)
{
    (void)st;
    state *s = state_new();
    notify_msg m = {.ready = true};
    state_apply_notify(s, 42, &m, 1.0);
    proc_sample ps = alive(42, 1, 1);
    state_apply_sample(s, &ps, 1.0);
    worker_view v[1];
    assert_int_equal(state_snapshot(s, v, 1, 1.0, 1.0), 1);
    assert_int_equal(v[0].ready, 1);
    assert_string_equal(v[0].app, "worker");   /* no agent name: process name */
    assert_int_equal(v[0].id, -1);
    assert_false(v[0].has_metrics);
    state_free(s);
}

static void test_state_snapshot_sorted(void **st)
{
    (void)st;
    state *s = state_new();
    uint32_t pids[] = {13, 11, 12, 25};
    for (int i = 0; i < 4; i++) {
        report r = mk(pids[i], 0, 1000, 0);
        if (pids[i] == 25)
            strcpy(r.name, "api");
        state_apply_report(s, &r, 1.0);
    }
    worker_view v[4];
    assert_int_equal(state_snapshot(s, v, 4, 1.0, 1.0), 4);
    assert_string_equal(v[0].app, "api");
    assert_int_equal(v[1].pid, 11);
    assert_int_equal(v[2].pid, 12);
    assert_int_equal(v[3].pid, 13);
    state_free(s);
}

/* Many workers: the pid index finds each one (no duplicates created). */
static void test_state_many_workers(void **st)
{
    (void)st;
    state *s = state_new();
    for (int round = 0; round < 3; round++)
        for (uint32_t p = 1000; p < 1500; p++) {
            report r = mk(p, (uint64_t)round, 1000 + (uint64_t)round * 1000, 0);
            state_apply_report(s, &r, 1.0 + round);
        }
    assert_int_equal(state_count(s), 500);
    assert_int_equal(state_counters(s).dropped_total, 0);
    state_free(s);
}

/* The host's figures: CPU % of every core from the ticks between two samples, memory and load as read. */
static void test_state_host_sample(void **st)
{
    (void)st;
    state *s = state_new();
    hub_counters c = state_counters(s);
    assert_true(isnan(c.host.cpu_pct));
    assert_int_equal(c.host.mem_total_bytes, -1);
    host_sample h = {.ok = true, .cpu_total_ticks = 1000, .cpu_idle_ticks = 800, .mem_total_bytes = 4096,
                     .mem_used_bytes = 1024, .load = {0.52, 0.40, 0.33}, .ncpu = 2};
    state_apply_host_sample(s, &h);
    c = state_counters(s);
    assert_true(isnan(c.host.cpu_pct));          /* one sample: no interval yet */
    assert_int_equal(c.host.mem_used_bytes, 1024);
    assert_true(fabs(c.host.load[0] - 0.52) < 1e-9);
    h.cpu_total_ticks = 1200;                    /* 200 ticks, 50 of them idle: 75 % */
    h.cpu_idle_ticks = 850;
    state_apply_host_sample(s, &h);
    c = state_counters(s);
    assert_true(fabs(c.host.cpu_pct - 75.0) < 1e-9);
    h.ok = false;                                /* a failed read: unknown, not stale */
    state_apply_host_sample(s, &h);
    c = state_counters(s);
    assert_true(isnan(c.host.cpu_pct) && c.host.mem_total_bytes == -1 && isnan(c.host.load[2]));
    state_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_report_creates_worker_with_rate),
        cmocka_unit_test(test_state_counter_reset),
        cmocka_unit_test(test_state_seq_gap_counted),
        cmocka_unit_test(test_state_seq_reorder),
        cmocka_unit_test(test_state_cpu_and_exit),
        cmocka_unit_test(test_state_pid_reuse),
        cmocka_unit_test(test_state_notify_ready),
        cmocka_unit_test(test_state_snapshot_sorted),
        cmocka_unit_test(test_state_many_workers),
        cmocka_unit_test(test_state_host_sample),
    };
    return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
