/*
 * rate.c — per-second rates from cumulative counters.
 */
#include "hub/rate.h"

#include <math.h>

double rate_per_s(uint64_t prev, uint64_t cur, uint64_t prev_ms, uint64_t cur_ms)
{
    if (cur_ms <= prev_ms)
        return NAN;
    uint64_t inc = cur >= prev ? cur - prev : cur;
    return (double)inc * 1000.0 / (double)(cur_ms - prev_ms);
}
