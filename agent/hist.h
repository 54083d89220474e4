/*
 * hist.h — a lock-free log-linear histogram for latency and lag samples (µs).
 *
 * Internal to the agent (not part of drover.h). Any number of threads may call
 * hist_record() at once; one thread at a time calls hist_take(), which drains
 * what was recorded since the previous take and summarises it.
 *
 * Buckets: values below 32 have a bucket each (exact). Above, every power of
 * two [2^e, 2^(e+1)) is split into HIST_SUB = 16 equal sub-buckets, so a
 * bucket's width is at most 1/16 of its lower edge. Values are clamped to
 * HIST_VALUE_MAX (2^36 - 1 µs, about 19 hours), which also keeps the running
 * sum from overflowing (it would take 2^28 clamped samples in one interval).
 *
 * Error bound: a percentile is reported as the upper edge of the bucket that
 * holds its rank, clamped to the observed maximum. For a true value t the
 * reported value r satisfies  t <= r < t * (1 + 1/16),  i.e. it is never low
 * and at most 6.25 % high; below 32 µs it is exact. count, sum, mean and max
 * are exact when no hist_record() runs concurrently with hist_take(); a sample
 * recorded during a take may have its count in one take and its sum or max in
 * the next (nothing is ever lost or counted twice).
 */
#ifndef DROVER_AGENT_HIST_H
#define DROVER_AGENT_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#define HIST_SUB_BITS  4
#define HIST_SUB       (1u << HIST_SUB_BITS)          /* sub-buckets per power of two */
#define HIST_MAX_EXP   36
#define HIST_VALUE_MAX ((UINT64_C(1) << HIST_MAX_EXP) - 1)
#define HIST_NBUCKETS  ((HIST_MAX_EXP - HIST_SUB_BITS + 1) * HIST_SUB)   /* 528 */

/*
 * The histogram. A zero-filled object (e.g. one with static storage) is an
 * empty histogram; hist_init() makes one anywhere else.
 */
typedef struct {
    _Atomic uint64_t sum;
    _Atomic uint64_t max;
    _Atomic uint64_t bucket[HIST_NBUCKETS];
} hist;

/* What hist_take() returns: all zero when nothing was recorded. */
typedef struct {
    uint64_t count;
    uint64_t sum;
    double   mean;
    uint64_t p50, p99;   /* upper bucket edge, clamped to max; see the error bound above */
    uint64_t max;
} hist_summary;

/* Makes *h an empty histogram. Not safe against concurrent hist_record(). */
void hist_init(hist *h);

/*
 * Records one sample v (µs; clamped to HIST_VALUE_MAX). Lock-free, relaxed
 * atomics only, safe from any thread and from signal handlers.
 */
void hist_record(hist *h, uint64_t v);

/*
 * Drains *h into *out: every bucket, the sum and the max are taken with an
 * atomic exchange, so samples recorded meanwhile land in this take or the
 * next one, never in both nor in neither. Call from one thread at a time.
 */
void hist_take(hist *h, hist_summary *out);

/* Returns the index of the bucket that holds v (v clamped to HIST_VALUE_MAX). */
unsigned hist_bucket_of(uint64_t v);

/* Returns the largest value that falls in bucket i (i < HIST_NBUCKETS). */
uint64_t hist_bucket_upper(unsigned i);

#endif
