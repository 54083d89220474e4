/*
 * buckets.c — the log-linear histogram layout (see buckets.h for the bucket
 * layout and the error bound).
 */
#include "proto/buckets.h"


/*
 * Returns the bucket index of v. Below 2*HIST_SUB the index is v itself;
 * above, with e = floor(log2 v) and shift = e - HIST_SUB_BITS, the top
 * HIST_SUB_BITS+1 bits of v (a number in [HIST_SUB, 2*HIST_SUB)) select the
 * sub-bucket and shift selects the power of two: index = shift*HIST_SUB + (v >> shift).
 */
unsigned hist_bucket_of(uint64_t v)
{
    if (v > HIST_VALUE_MAX)
        v = HIST_VALUE_MAX;
    if (v < 2 * HIST_SUB)
        return (unsigned)v;
    unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - HIST_SUB_BITS;
    return shift * HIST_SUB + (unsigned)(v >> shift);
}

/* Returns the largest value mapped to bucket i: the inverse of hist_bucket_of(). */
uint64_t hist_bucket_upper(unsigned i)
{
    if (i < 2 * HIST_SUB)
        return i;
    unsigned shift = i / HIST_SUB - 1;
    uint64_t mant = i - shift * HIST_SUB;          /* in [HIST_SUB, 2*HIST_SUB) */
    return ((mant + 1) << shift) - 1;
}

/* Adds b to a, saturating at UINT64_MAX instead of wrapping. */
static uint64_t hist_add_sat(uint64_t a, uint64_t b)
{
    return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

/*
 * Returns the 1-based rank of quantile q / HIST_Q_ONE among total samples:
 * ceil(total * q / ONE) = total - floor(total * (ONE - q) / ONE), the product
 * split so that it cannot overflow; q is clamped to 1..HIST_Q_ONE.
 */
static uint64_t hist_rank(uint64_t total, uint32_t q)
{
    if (q < 1)
        q = 1;
    if (q > HIST_Q_ONE)
        q = HIST_Q_ONE;
    uint64_t rest = HIST_Q_ONE - q;
    return total - ((total / HIST_Q_ONE) * rest + (total % HIST_Q_ONE) * rest / HIST_Q_ONE);
}

/* Returns bucket i's upper edge, clamped to max when max is not 0. */
static uint64_t hist_edge(unsigned i, uint64_t max)
{
    uint64_t up = hist_bucket_upper(i);
    return max && up > max ? max : up;
}

/* Two passes over the dense counts: the total, then the bucket reaching the rank. */
uint64_t hist_quantile(const uint64_t *counts, uint32_t q, uint64_t max)
{
    uint64_t total = 0;
    for (unsigned i = 0; i < HIST_NBUCKETS; i++)
        total = hist_add_sat(total, counts[i]);
    if (total == 0)
        return 0;
    uint64_t rank = hist_rank(total, q), seen = 0;
    for (unsigned i = 0; i < HIST_NBUCKETS; i++) {
        seen = hist_add_sat(seen, counts[i]);
        if (seen >= rank)
            return hist_edge(i, max);
    }
    return max; /* unreachable: seen reaches total */
}

/* Two passes over the sparse buckets, as hist_quantile(). */
uint64_t hist_quantile_sparse(const uint16_t *idx, const uint64_t *count, uint32_t n, uint32_t q,
                              uint64_t max)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++)
        total = hist_add_sat(total, count[i]);
    if (total == 0)
        return 0;
    uint64_t rank = hist_rank(total, q), seen = 0;
    for (uint32_t i = 0; i < n; i++) {
        seen = hist_add_sat(seen, count[i]);
        if (seen >= rank)
            return hist_edge(idx[i] < HIST_NBUCKETS ? idx[i] : HIST_NBUCKETS - 1, max);
    }
    return max; /* unreachable: seen reaches total */
}
