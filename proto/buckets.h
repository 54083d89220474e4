/*
 * buckets.h — the log-linear histogram layout shared by the agent, the wire
 * (PROTOCOL.md §1.3, `lat_h`/`lag_h`) and the hub.
 *
 * Values are µs. Values below 32 have a bucket each (exact). Above, every
 * power of two [2^e, 2^(e+1)) is split into HIST_SUB = 16 equal sub-buckets,
 * so a bucket's width is at most 1/16 of its lower edge. Values are clamped
 * to HIST_VALUE_MAX (2^36 - 1 µs, about 19 hours): HIST_NBUCKETS = 528.
 *
 * Error bound: a quantile is reported as the upper edge of the bucket that
 * holds its rank, clamped to the true maximum when that is known. For a true
 * value t the reported value r satisfies  t <= r < t * (1 + 1/16): never low,
 * at most 6.25 % high; below 32 µs exact. Summing histograms (an app's
 * workers) keeps the bound, because buckets add exactly.
 *
 * No allocation, no state: pure functions over counts.
 */
#ifndef DROVER_PROTO_BUCKETS_H
#define DROVER_PROTO_BUCKETS_H

#include <stdint.h>

#define HIST_SUB_BITS  4
#define HIST_SUB       (1u << HIST_SUB_BITS)          /* sub-buckets per power of two */
#define HIST_MAX_EXP   36
#define HIST_VALUE_MAX ((UINT64_C(1) << HIST_MAX_EXP) - 1)
#define HIST_NBUCKETS  ((HIST_MAX_EXP - HIST_SUB_BITS + 1) * HIST_SUB)   /* 528 */

/* Returns the index of the bucket that holds v (v clamped to HIST_VALUE_MAX). */
unsigned hist_bucket_of(uint64_t v);

/* Returns the largest value that falls in bucket i (i < HIST_NBUCKETS). */
uint64_t hist_bucket_upper(unsigned i);

#define HIST_Q_ONE 10000u   /* quantiles in parts per ten thousand: p99 = 9900 */

/*
 * Returns the quantile q / HIST_Q_ONE (1 <= q <= HIST_Q_ONE) of the dense
 * counts[HIST_NBUCKETS]: the upper edge of the bucket holding rank
 * ceil(total * q / HIST_Q_ONE), clamped to max when max is not 0. Returns 0
 * when the counts are all zero. Integer arithmetic only; the total saturates
 * at UINT64_MAX instead of wrapping.
 */
uint64_t hist_quantile(const uint64_t *counts, uint32_t q, uint64_t max);

/*
 * The same over a sparse histogram: n buckets idx[i] (rising, each below
 * HIST_NBUCKETS) holding count[i] samples.
 */
uint64_t hist_quantile_sparse(const uint16_t *idx, const uint64_t *count, uint32_t n, uint32_t q,
                              uint64_t max);

#endif
