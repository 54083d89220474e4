/*
 * test_rate.c — rates from cumulative counters, including counter resets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <math.h>

#include "hub/rate.h"

static void test_rate_steady(void **st)
{
    (void)st;
    assert_float_equal(rate_per_s(100, 200, 1000, 2000), 100.0, 1e-9);
    assert_float_equal(rate_per_s(0, 50, 0, 500), 100.0, 1e-9);
    assert_float_equal(rate_per_s(7, 7, 1000, 3000), 0.0, 1e-9);
}

/* A counter that goes down was reset: the increase counts from zero. */
static void test_rate_counter_reset(void **st)
{
    (void)st;
    assert_float_equal(rate_per_s(5000, 30, 1000, 2000), 30.0, 1e-9);
    assert_float_equal(rate_per_s(5000, 0, 1000, 1500), 0.0, 1e-9);
}

/* Same or reordered timestamps give no rate rather than infinity. */
static void test_rate_bad_interval(void **st)
{
    (void)st;
    assert_true(isnan(rate_per_s(1, 2, 1000, 1000)));
    assert_true(isnan(rate_per_s(1, 2, 2000, 1000)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_steady),
        cmocka_unit_test(test_rate_counter_reset),
        cmocka_unit_test(test_rate_bad_interval),
    };
    return cmocka_run_group_tests_name("rate", tests, NULL, NULL);
}
