/*
 * test_state.c — the hub's model: creation, rates, gaps, exits, pid reuse,
 * interval figures from cumulative histograms, app quantiles merged.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub/headless.h"
#include "hub/state.h"
#include "proto/buckets.h"

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
                      .rss_bytes = 1 << 20, .elapsed_s = 5, .pss_bytes = -1};
    strcpy(ps.comm, "worker");
    return ps;
}

static void test_state_report_creates_worker_with_rate(void **st)
{
    (void)st;
    state *s = state_new();
    report r = mk(101, 0, 10000, 0);
    state_apply_report(s, &r, 1.0);
    state_tick(s, 1.5, 1.0);
    r = mk(101, 1, 11000, 250);
    state_apply_report(s, &r, 2.0);
    state_tick(s, 2.0, 1.0);

    worker_view v[4];
    assert_int_equal(state_snapshot(s, v, 4, 2.0, 1.0), 1);
    assert_string_equal(v[0].app, "web");
    assert_int_equal(v[0].pid, 101);
    assert_int_equal(v[0].id, 1);
    assert_int_equal(v[0].state, WS_ONLINE);
    assert_true(v[0].agent);
    assert_int_equal(v[0].req_total, 250);
    assert_false(isnan(v[0].req_per_s));
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
    state_tick(s, 1.5, 1.0);
    r = mk(7, 0, 2000, 40);       /* seq back to 0: agent restarted, not a gap */
    state_apply_report(s, &r, 2.0);
    state_tick(s, 2.5, 1.0);
    worker_view v[1];
    state_snapshot(s, v, 1, 2.0, 1.0);
    assert_false(isnan(v[0].req_per_s));
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
    state_apply_sample(s, &ps, NULL, 0, 1.0);
    ps = alive(55, 1234, 150);    /* 50 ticks in 1 s */
    state_apply_sample(s, &ps, NULL, 0, 2.0);
    worker_view v[1];
    state_snapshot(s, v, 1, 2.0, 1.0);
    double hz = 100.0;  /* sysconf(_SC_CLK_TCK) is 100 on Linux */
    assert_false(isnan(v[0].cpu_pct));
    assert_float_equal(v[0].cpu_pct, 50.0 / hz * 100.0, 1e-6);
    assert_int_equal(v[0].cpu_decimals, 0);     /* one tick in 1 s is 1 % */
    assert_int_equal(v[0].rss_bytes, 1 << 20);

    ps.alive = false;
    state_apply_sample(s, &ps, NULL, 0, 3.0);
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

/*
 * A tree's CPU is the sum of its members' own deltas: a member that leaves
 * takes its ticks with it (no negative figure), a member born within the
 * interval counts from its start, one that existed before joining (a pid
 * reused, or reparented) counts nothing for its first interval, and a member
 * whose pid is the same but whose start time differs is a new member.
 */
static void test_state_tree_deltas(void **st)
{
    (void)st;
    state *s = state_new();
    report r = mk(60, 0, 1000, 0);
    state_apply_report(s, &r, 0.0);
    proc_sample root = alive(60, 100, 10);
    proc_sample d[3] = {alive(61, 110, 1000), alive(62, 120, 500)};
    d[0].ppid = d[1].ppid = 60;
    state_apply_sample(s, &root, d, 2, 1.0);
    worker_view v[1];
    state_snapshot(s, v, 1, 1.0, 1.0);
    assert_int_equal(v[0].procs, 3);
    assert_int_equal(v[0].ntree, 3);
    assert_int_equal(v[0].rss_bytes, 3 << 20);
    assert_true(isnan(v[0].cpu_pct));           /* first sample: no span yet */

    /* 1 s later: root +10, 61 +40, 62 +20 ticks: 70 % */
    root.cpu_ticks = 20;
    d[0].cpu_ticks = 1040;
    d[1].cpu_ticks = 520;
    state_apply_sample(s, &root, d, 2, 2.0);
    state_snapshot(s, v, 1, 2.0, 1.0);
    assert_float_equal(v[0].cpu_pct, 70.0, 1e-6);
    assert_float_equal(v[0].tree[1].cpu_pct, 40.0, 1e-6);

    /* 61 exits (its 1040 ticks leave the sum); 63 born 0.5 s ago with 30
     * ticks; 62 +10; root +0: 40 %, not 40 - 1040 */
    d[0] = alive(63, 190, 30);
    d[0].elapsed_s = 0.5;
    d[1].cpu_ticks = 530;
    state_apply_sample(s, &root, d, 2, 3.0);
    state_snapshot(s, v, 1, 3.0, 1.0);
    assert_float_equal(v[0].cpu_pct, 40.0, 1e-6);
    assert_int_equal(v[0].procs, 3);

    /* 62's pid now belongs to a process started long ago (another start
     * time, 5 s old): a newcomer that counts nothing yet; 63 +20 */
    d[0].cpu_ticks = 50;
    d[1] = alive(62, 125, 9000);
    state_apply_sample(s, &root, d, 2, 4.0);
    state_snapshot(s, v, 1, 4.0, 1.0);
    assert_float_equal(v[0].cpu_pct, 20.0, 1e-6);
    assert_true(isnan(v[0].tree[2].cpu_pct));

    /* PSS: known only when every member's is; a round that did not read it
     * keeps each member's last reading */
    assert_int_equal(v[0].pss_bytes, -1);
    root.pss_bytes = 100;
    d[0].pss_bytes = 200;
    d[1].pss_bytes = 300;
    state_apply_sample(s, &root, d, 2, 5.0);
    root.pss_bytes = d[0].pss_bytes = d[1].pss_bytes = -1;
    state_apply_sample(s, &root, d, 2, 6.0);
    state_snapshot(s, v, 1, 6.0, 1.0);
    assert_int_equal(v[0].pss_bytes, 600);
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
    state_apply_sample(s, &ps, NULL, 0, 1.0);
    ps = alive(77, 900, 1);
    state_apply_sample(s, &ps, NULL, 0, 2.0);
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
    state_apply_sample(s, &ps, NULL, 0, 1.0);
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

/* ---- interval figures from cumulative histograms ------------------------ */

/* A hello (seq 0): the hub then counts the process's histograms from zero. */
static void hello(state *s, uint32_t pid, const char *app)
{
    report r;
    memset(&r, 0, sizeof r);
    r.v = REPORT_VERSION;
    r.type = REPORT_T_HELLO;
    r.pid = pid;
    r.has = REPORT_HAS_NAME;
    strcpy(r.name, app);
    state_apply_report(s, &r, 0.5);
}

/* Sets h to the one bucket of value us holding n samples (cumulative). */
static void hist1(report_hist *h, uint64_t us, uint64_t n)
{
    h->n = 1;
    h->idx[0] = (uint16_t)hist_bucket_of(us);
    h->count[0] = n;
}

/*
 * A v2 report: cumulative lag counts n1 at 1 ms, n200 at 200 ms, n50 at 50 ms
 * (zero counts left out), and the lag max since the previous report.
 */
static report lagrep(uint32_t pid, uint64_t seq, uint64_t ts, uint64_t n1, uint64_t n200, uint64_t n50,
                     uint64_t max)
{
    report r = mk(pid, seq, ts, seq * 10);
    r.v = REPORT_VERSION;
    r.has |= REPORT_HAS_LAG_H | REPORT_HAS_LAG_MAX;
    const uint64_t us[3] = { 1000, 50000, 200000 }, n[3] = { n1, n50, n200 };
    r.lag_h.n = 0;
    for (int i = 0; i < 3; i++) {
        if (!n[i])
            continue;
        r.lag_h.idx[r.lag_h.n] = (uint16_t)hist_bucket_of(us[i]);
        r.lag_h.count[r.lag_h.n++] = n[i];
    }
    r.lag_max = max;
    return r;
}

/*
 * Two reports in one interval, a 200 ms lag then a 1 ms one: the interval's
 * lag_max is the max over both (the first is not lost); the next interval,
 * with no report, shows null rates rather than the previous values.
 */
static void test_state_two_reports_one_interval(void **st)
{
    (void)st;
    static report r;
    state *s = state_new();
    hello(s, 300, "web");
    r = lagrep(300, 1, 1000, 10, 0, 0, 1000);
    state_apply_report(s, &r, 0.9);
    state_tick(s, 1.0, 1.0);
    r = lagrep(300, 2, 1400, 10, 1, 0, 200000);
    state_apply_report(s, &r, 1.4);
    r = lagrep(300, 3, 1500, 11, 1, 0, 1000);
    state_apply_report(s, &r, 1.5);
    state_tick(s, 2.0, 1.0);

    worker_view v[1];
    state_snapshot(s, v, 1, 2.0, 1.0);
    assert_true(v[0].lag_max_ms >= 200.0);
    /* 2 samples in the interval: p99 is the 200 ms one (clamped to the max). */
    assert_float_equal(v[0].lag_p99_ms, 200.0, 1e-9);
    assert_float_equal(v[0].req_per_s, 20.0 / 0.5, 1e-9);
    assert_non_null(v[0].lag_h);

    state_tick(s, 3.0, 1.0);            /* nothing arrived */
    state_snapshot(s, v, 1, 3.0, 1.0);
    assert_true(isnan(v[0].req_per_s));
    assert_true(isnan(v[0].lag_max_ms));
    assert_true(isnan(v[0].lag_p99_ms));
    assert_null(v[0].lag_h);
    assert_int_equal(v[0].req_total, 30);   /* a total is not a rate: still shown */

    /* A lost report loses nothing: the next one's counts hold its samples. */
    r = lagrep(300, 5, 3500, 11, 1, 8, 50000);  /* seq 4, sent at 3.2 s, was lost */
    state_apply_report(s, &r, 3.5);
    state_tick(s, 4.0, 1.0);
    state_snapshot(s, v, 1, 4.0, 1.0);
    assert_non_null(v[0].lag_h);
    assert_int_equal(v[0].lag_h->n, 1);
    assert_int_equal(v[0].lag_h->count[0], 8);
    assert_float_equal(v[0].lag_p99_ms, 50.0, 1e-9);

    /* A max that does not cover the interval's highest sample (its report was
     * lost) is replaced by that bucket's upper edge: never low. */
    r = lagrep(300, 7, 4500, 11, 2, 8, 1000);    /* seq 6 with the 200 ms sample lost */
    state_apply_report(s, &r, 4.5);
    state_tick(s, 5.0, 1.0);
    state_snapshot(s, v, 1, 5.0, 1.0);
    assert_true(v[0].lag_max_ms >= 200.0 && v[0].lag_max_ms < 200.0 * (1 + 1.0 / HIST_SUB));
    assert_true(v[0].lag_p99_ms >= 200.0);
    state_free(s);
}

/* Counts that go down (a new agent in the same pid) restart the difference, never wrap. */
static void test_state_histogram_reset(void **st)
{
    (void)st;
    static report r;
    state *s = state_new();
    hello(s, 301, "web");
    r = lagrep(301, 1, 1000, 0, 100, 0, 200000);
    state_apply_report(s, &r, 0.9);
    state_tick(s, 1.0, 1.0);
    r = lagrep(301, 0, 1900, 3, 0, 0, 995);
    state_apply_report(s, &r, 1.9);
    state_tick(s, 2.0, 1.0);
    worker_view v[1];
    state_snapshot(s, v, 1, 2.0, 1.0);
    assert_non_null(v[0].lag_h);
    assert_int_equal(v[0].lag_h->count[0], 3);
    assert_float_equal(v[0].lag_p99_ms, 0.995, 1e-9);   /* clamped to the exact max */
    state_free(s);
}

/* Reads the `app` line for app from NDJSON text; returns a new reference or NULL. */
static json_t *app_line(const char *text, const char *app)
{
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        json_t *o = json_loadb(p, len, 0, NULL);
        if (o && !strcmp(json_string_value(json_object_get(o, "type")), "app") &&
            !strcmp(json_string_value(json_object_get(o, "app")), app))
            return o;
        json_decref(o);
        p = nl ? nl + 1 : NULL;
    }
    return NULL;
}

/* Prints the model's NDJSON into a new string (free it). */
static char *print_ndjson(state *s, double now)
{
    worker_view v[8];
    size_t n = state_snapshot(s, v, 8, now, 1.0);
    hub_counters c = state_counters(s);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    assert_int_equal(headless_print(f, HEADLESS_NDJSON, v, n, &c, 1.0, NULL), 0);
    fclose(f);
    return text;
}

/*
 * Merged, never averaged: worker A's requests take 10 ms, B's 100 ms, 9:1 by
 * count. The app's p50 is 10 ms and its p99 100 ms, within the histogram's
 * bound (never low, < 6.25 % high); an average of the workers' p99s (55 ms)
 * or of their p50s would be wrong.
 */
static void test_app_percentiles_merged(void **st)
{
    (void)st;
    static report r;
    state *s = state_new();
    hello(s, 401, "api");
    hello(s, 402, "api");
    r = mk(401, 1, 1000, 900);
    strcpy(r.name, "api");
    r.v = REPORT_VERSION;
    r.has |= REPORT_HAS_LAT_H | REPORT_HAS_LAT_MAX;
    hist1(&r.lat_h, 10000, 900);
    r.lat_max = 10000;
    state_apply_report(s, &r, 0.9);
    r = mk(402, 1, 1000, 100);
    strcpy(r.name, "api");
    r.v = REPORT_VERSION;
    r.has |= REPORT_HAS_LAT_H | REPORT_HAS_LAT_MAX;
    hist1(&r.lat_h, 100000, 100);
    r.lat_max = 100000;
    state_apply_report(s, &r, 0.9);
    state_tick(s, 1.0, 1.0);

    char *text = print_ndjson(s, 1.0);
    json_t *a = app_line(text, "api");
    assert_non_null(a);
    double p50 = json_number_value(json_object_get(a, "lat_p50_ms"));
    double p99 = json_number_value(json_object_get(a, "lat_p99_ms"));
    assert_true(p50 >= 10.0 && p50 < 10.0 * (1 + 1.0 / HIST_SUB));
    assert_true(p99 >= 100.0 && p99 < 100.0 * (1 + 1.0 / HIST_SUB));
    assert_true(json_is_null(json_object_get(a, "lag_p99_ms")));
    json_decref(a);
    free(text);
    state_free(s);
}

/*
 * A v1 sender (no histograms) is still shown: its worker line has the
 * quantiles it sent; the app line's merged quantiles are null (there is
 * nothing to merge), its lag_max_ms is the max over the workers.
 */
static void test_app_v1_sender(void **st)
{
    (void)st;
    static report r;
    state *s = state_new();
    r = mk(501, 1, 1000, 10);
    r.v = 1;
    r.has |= REPORT_HAS_LAT | REPORT_HAS_LAT_MAX | REPORT_HAS_LAG | REPORT_HAS_LAG_MAX;
    r.lat_p50 = 2000; r.lat_p99 = 9000; r.lat_max = 12000;
    r.lag_p99 = 3000; r.lag_max = 4000;
    state_apply_report(s, &r, 0.9);
    state_tick(s, 1.0, 1.0);
    worker_view v[1];
    state_snapshot(s, v, 1, 1.0, 1.0);
    assert_float_equal(v[0].lat_p50_ms, 2.0, 1e-9);
    assert_float_equal(v[0].lat_p99_ms, 9.0, 1e-9);
    assert_float_equal(v[0].lag_max_ms, 4.0, 1e-9);
    assert_null(v[0].lat_h);

    char *text = print_ndjson(s, 1.0);
    json_t *a = app_line(text, "web");
    assert_non_null(a);
    assert_true(json_is_null(json_object_get(a, "lat_p50_ms")));
    assert_true(json_is_null(json_object_get(a, "lat_p99_ms")));
    assert_true(json_is_null(json_object_get(a, "lag_p99_ms")));
    assert_float_equal(json_number_value(json_object_get(a, "lag_max_ms")), 4.0, 1e-9);
    json_decref(a);
    free(text);
    state_free(s);
}

/* The hub's own CPU is averaged over a window of samples, which it states. */
static void test_hub_cpu_window(void **st)
{
    (void)st;
    state *s = state_new();
    for (int i = 0; i <= 12; i++) {
        proc_sample ps = {.pid = 1, .alive = true, .cpu_ns = (uint64_t)i * 3000000u, .has_cpu_ns = true};
        state_apply_hub_sample(s, &ps, (double)i);
    }
    hub_counters c = state_counters(s);
    assert_float_equal(c.cpu_pct, 0.3, 1e-9);          /* 3 ms per second */
    assert_float_equal(c.cpu_window_s, STATE_HUB_CPU_WINDOW - 1, 1e-9);
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
        cmocka_unit_test(test_state_two_reports_one_interval),
        cmocka_unit_test(test_state_histogram_reset),
        cmocka_unit_test(test_app_percentiles_merged),
        cmocka_unit_test(test_app_v1_sender),
        cmocka_unit_test(test_hub_cpu_window),
        cmocka_unit_test(test_state_tree_deltas),
    };
    return cmocka_run_group_tests_name("state", tests, NULL, NULL);
}
