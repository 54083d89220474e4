/*
 * test_hist.c — the agent's lock-free histogram (agent/hist.h).
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

    hist_summary s;
    hist_take(&h, &s);
    assert_int_equal(s.count, 1000);
    assert_int_equal(s.sum, 500500);
    assert_true(s.mean > 500.49 && s.mean < 500.51);
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
    hist_summary s;
    hist_take(&h, &s);
    assert_int_equal(s.count, 1);
    assert_int_equal(s.sum, 12345);
    assert_int_equal(s.p50, 12345);
    assert_int_equal(s.p99, 12345);
    assert_int_equal(s.max, 12345);
    assert_true(s.mean == 12345.0);
}

/* Nothing recorded: an all-zero summary. A static histogram starts empty. */
static void test_empty(void **state)
{
    (void)state;
    static hist h; /* zero-filled, not hist_init()ed on purpose */
    hist_summary s;
    hist_take(&h, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(s.sum, 0);
    assert_int_equal(s.p50, 0);
    assert_int_equal(s.p99, 0);
    assert_int_equal(s.max, 0);
    assert_true(s.mean == 0.0);
}

/* Zero is a valid sample (a timer that fired on time). */
static void test_zero_sample(void **state)
{
    (void)state;
    static hist h;
    for (int i = 0; i < 10; i++)
        hist_record(&h, 0);
    hist_summary s;
    hist_take(&h, &s);
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
    hist_summary s;
    hist_take(&h, &s);
    assert_int_equal(s.count, 1002);
    assert_int_equal(s.max, HIST_VALUE_MAX);
    assert_int_equal(s.p50, HIST_VALUE_MAX);
    assert_int_equal(s.p99, HIST_VALUE_MAX);
    assert_int_equal(s.sum, 1001 * HIST_VALUE_MAX + 5);
    assert_int_equal(hist_bucket_of(UINT64_MAX), HIST_NBUCKETS - 1);
    assert_int_equal(hist_bucket_upper(HIST_NBUCKETS - 1), HIST_VALUE_MAX);
}

/* A take drains: the next take sees only what was recorded after it. */
static void test_take_drains(void **state)
{
    (void)state;
    static hist h;
    for (uint64_t v = 100; v < 200; v++)
        hist_record(&h, v);
    hist_summary s;
    hist_take(&h, &s);
    assert_int_equal(s.count, 100);
    hist_take(&h, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(s.max, 0);
    hist_record(&h, 7);
    hist_take(&h, &s);
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
    uint64_t *tot = arg; /* [0] count, [1] sum, [2] max */
    while (!atomic_load(&mt_done)) {
        hist_summary s;
        hist_take(&mt_hist, &s);
        tot[0] += s.count;
        tot[1] += s.sum;
        if (s.max > tot[2])
            tot[2] = s.max;
    }
    return NULL;
}

/* 4 recording threads and a concurrent taker: totals over all takes are exact. */
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

    hist_summary s;
    hist_take(&mt_hist, &s);
    tot[0] += s.count;
    tot[1] += s.sum;
    if (s.max > tot[2])
        tot[2] = s.max;

    uint64_t want_sum = 0;
    for (uint64_t t = 0; t < MT_THREADS; t++)
        for (uint64_t i = 0; i < MT_PER; i++)
            want_sum += t * 1000 + i % 1000;
    assert_int_equal(tot[0], (uint64_t)MT_THREADS * MT_PER);
    assert_int_equal(tot[1], want_sum);
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
    hist_summary s;
    hist_take(&mt_hist, &s);
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
