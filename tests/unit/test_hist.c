/*
 * test_hist.c — the agent's lock-free cumulative histogram (agent/hist.h)
 * and the shared bucket layout and quantiles (proto/buckets.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "agent/hist.h"
#include "proto/buckets.h"

/* What the tests read from one span between two snapshots (as the hub does). */
typedef struct {
    uint64_t count, p50, p99, max;
} summ;

/*
 * Takes a snapshot of h and summarises the samples since the previous one,
 * whose dense counts are in prev (updated): the hub's difference of two
 * cumulative histograms, quantiles clamped to the span's max.
 */
static void take(hist *h, uint64_t *prev, summ *s)
{
    static report_hist snap;
    uint64_t d[HIST_NBUCKETS] = {0}, max;
    hist_snapshot(h, &snap, &max);
    s->count = 0;
    for (uint32_t i = 0; i < snap.n; i++) {
        d[snap.idx[i]] = snap.count[i] - prev[snap.idx[i]];
        prev[snap.idx[i]] = snap.count[i];
        s->count += d[snap.idx[i]];
    }
    /* The max since the last take, even when its sample's count was not yet
     * visible to this snapshot (the recorder's two relaxed updates): it is
     * taken once, so dropping it here would lose it. */
    s->max = max;
    s->p50 = hist_quantile(d, 5000, s->max);
    s->p99 = hist_quantile(d, 9900, s->max);
}

/* The bound documented in hist.h: t <= reported < t * (1 + 1/16). */
static void assert_within_bound(uint64_t reported, uint64_t truth)
{
    assert_true(reported >= truth);
    assert_true((double)reported < (double)truth * (1.0 + 1.0 / HIST_SUB));
}

/* 1..1000 µs once each: exact count, mean and max; percentiles within the bound. */
static void test_uniform_1_to_1000(void **state)
{
    (void)state;
    static hist h;
    hist_init(&h);
    for (uint64_t v = 1; v <= 1000; v++)
        hist_record(&h, v);

    static uint64_t prev[HIST_NBUCKETS];
    summ s;
    take(&h, prev, &s);
    assert_int_equal(s.count, 1000);
    assert_int_equal(s.max, 1000);
    assert_within_bound(s.p50, 500);
    assert_within_bound(s.p99, 990);
    /* The exact bucket edges: 500 lies in [496, 511], 990 in [960, 991]. */
    assert_int_equal(s.p50, 511);
    assert_int_equal(s.p99, 991);
}

/* One sample: every statistic is that sample (percentiles clamp to max). */
static void test_single_sample(void **state)
{
    (void)state;
    static hist h;
    hist_init(&h);
    hist_record(&h, 12345);
    static uint64_t prev[HIST_NBUCKETS];
    summ s;
    take(&h, prev, &s);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.p50, 12345);
    assert_int_equal(s.p99, 12345);
    assert_int_equal(s.max, 12345);
}

/* Nothing recorded: an empty snapshot. A static histogram starts empty. */
static void test_empty(void **state)
{
    (void)state;
    static hist h; /* zero-filled, not hist_init()ed on purpose */
    static uint64_t prev[HIST_NBUCKETS];
    summ s;
    take(&h, prev, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(s.p50, 0);
    assert_int_equal(s.p99, 0);
    assert_int_equal(s.max, 0);
}

/* Zero is a valid sample (a timer that fired on time). */
static void test_zero_sample(void **state)
{
    (void)state;
    static hist h;
    for (int i = 0; i < 10; i++)
        hist_record(&h, 0);
    static uint64_t prev[HIST_NBUCKETS];
    summ s;
    take(&h, prev, &s);
    assert_int_equal(s.count, 10);
    assert_int_equal(s.max, 0);
    assert_int_equal(s.p99, 0);
}

/* Values past HIST_VALUE_MAX clamp: no overflow of the sum, max is the clamp. */
static void test_huge_values(void **state)
{
    (void)state;
    static hist h;
    for (int i = 0; i < 1000; i++)
        hist_record(&h, UINT64_MAX);
    hist_record(&h, HIST_VALUE_MAX);
    hist_record(&h, 5);
    static uint64_t prev[HIST_NBUCKETS];
    summ s;
    take(&h, prev, &s);
    assert_int_equal(s.count, 1002);
    assert_int_equal(s.max, HIST_VALUE_MAX);
    assert_int_equal(s.p50, HIST_VALUE_MAX);
    assert_int_equal(s.p99, HIST_VALUE_MAX);
    assert_int_equal(hist_bucket_of(UINT64_MAX), HIST_NBUCKETS - 1);
    assert_int_equal(hist_bucket_upper(HIST_NBUCKETS - 1), HIST_VALUE_MAX);
}

/* Counts are cumulative: the difference of two snapshots is what came between them. */
static void test_take_drains(void **state)
{
    (void)state;
    static hist h;
    for (uint64_t v = 100; v < 200; v++)
        hist_record(&h, v);
    static uint64_t prev[HIST_NBUCKETS];
    summ s;
    take(&h, prev, &s);
    assert_int_equal(s.count, 100);
    take(&h, prev, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(s.max, 0);
    hist_record(&h, 7);
    take(&h, prev, &s);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.max, 7);
    assert_int_equal(s.p50, 7);
}

/*
 * The bucket layout: indices are monotonic and contiguous, each value lies
 * within its bucket's edges, and the upper edge is within the relative bound.
 */
static void test_bucket_layout(void **state)
{
    (void)state;
    /* Exhaustive over the low range, where every bucket is visited. */
    unsigned prev = 0;
    for (uint64_t v = 0; v < (1u << 20); v++) {
        unsigned b = hist_bucket_of(v);
        assert_true(b == prev || b == prev + 1);
        assert_true(hist_bucket_upper(b) >= v);
        if (b > 0)
            assert_true(hist_bucket_upper(b - 1) < v);
        if (v < 2 * HIST_SUB)
            assert_int_equal(hist_bucket_upper(b), v);
        else
            assert_true((double)(hist_bucket_upper(b) - v) < (double)v / HIST_SUB);
        prev = b;
    }
    /* Every power of two and its neighbours up to the clamp. */
    for (unsigned e = 1; e < HIST_MAX_EXP; e++) {
        uint64_t p = UINT64_C(1) << e;
        uint64_t vs[3] = { p - 1, p, p + 1 };
        for (int i = 0; i < 3; i++) {
            unsigned b = hist_bucket_of(vs[i]);
            assert_true(b < HIST_NBUCKETS);
            assert_true(hist_bucket_upper(b) >= vs[i]);
            if (b > 0)
                assert_true(hist_bucket_upper(b - 1) < vs[i]);
        }
    }
    /* Pseudo-random values across the whole range: the documented error bound. */
    uint64_t x = 88172645463325252u;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        uint64_t v = x >> (x % 60 + 4); /* spread over many magnitudes */
        if (v > HIST_VALUE_MAX)
            continue;
        uint64_t up = hist_bucket_upper(hist_bucket_of(v));
        assert_true(up >= v);
        assert_true(v < 2 * HIST_SUB ? up == v : (double)(up - v) < (double)v / HIST_SUB);
    }
}

#define MT_THREADS 4
#define MT_PER     250000

static hist mt_hist;
static _Atomic bool mt_done;

/* Records MT_PER samples; thread t records values t*1000 + (i % 1000). */
static void *mt_recorder(void *arg)
{
    uint64_t t = (uint64_t)(uintptr_t)arg;
    for (uint64_t i = 0; i < MT_PER; i++)
        hist_record(&mt_hist, t * 1000 + i % 1000);
    return NULL;
}

/* Keeps taking while the recorders run, accumulating what it drained. */
static void *mt_taker(void *arg)
{
    uint64_t *tot = arg; /* [0] count, [1] unused, [2] max */
    static uint64_t prev[HIST_NBUCKETS];
    while (!atomic_load(&mt_done)) {
        summ s;
        take(&mt_hist, prev, &s);
        tot[0] += s.count;
        if (s.max > tot[2])
            tot[2] = s.max;
    }
    return NULL;
}

/* 4 recording threads and a concurrent snapshotter: the final counts and the max are exact. */
static void test_multithreaded_exact(void **state)
{
    (void)state;
    pthread_t rec[MT_THREADS], taker;
    uint64_t tot[3] = { 0, 0, 0 };

    hist_init(&mt_hist);
    atomic_store(&mt_done, false);
    assert_int_equal(pthread_create(&taker, NULL, mt_taker, tot), 0);
    for (uintptr_t t = 0; t < MT_THREADS; t++)
        assert_int_equal(pthread_create(&rec[t], NULL, mt_recorder, (void *)t), 0);
    for (int t = 0; t < MT_THREADS; t++)
        pthread_join(rec[t], NULL);
    atomic_store(&mt_done, true);
    pthread_join(taker, NULL);

    /* The last snapshot holds every sample (counts are cumulative). */
    static report_hist snap;
    uint64_t max, total = hist_snapshot(&mt_hist, &snap, &max);
    if (max > tot[2])
        tot[2] = max;
    assert_int_equal(total, (uint64_t)MT_THREADS * MT_PER);
    assert_true(tot[0] <= total);
    assert_int_equal(tot[2], (MT_THREADS - 1) * 1000 + 999);
}

/* Without a concurrent taker one take sees everything, percentiles included. */
static void test_multithreaded_single_take(void **state)
{
    (void)state;
    pthread_t rec[MT_THREADS];
    hist_init(&mt_hist);
    for (uintptr_t t = 0; t < MT_THREADS; t++)
        assert_int_equal(pthread_create(&rec[t], NULL, mt_recorder, (void *)t), 0);
    for (int t = 0; t < MT_THREADS; t++)
        pthread_join(rec[t], NULL);
    static uint64_t prev[HIST_NBUCKETS];
    summ s;
    take(&mt_hist, prev, &s);
    assert_int_equal(s.count, (uint64_t)MT_THREADS * MT_PER);
    assert_int_equal(s.max, 3999);
    /* Values are uniform over 0..3999: p50 = 1999.5 → rank value 1999. */
    assert_within_bound(s.p50, 1999);
    assert_within_bound(s.p99, 3959);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform_1_to_1000),
        cmocka_unit_test(test_single_sample),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_zero_sample),
        cmocka_unit_test(test_huge_values),
        cmocka_unit_test(test_take_drains),
        cmocka_unit_test(test_bucket_layout),
        cmocka_unit_test(test_multithreaded_exact),
        cmocka_unit_test(test_multithreaded_single_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
