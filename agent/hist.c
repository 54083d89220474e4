/*
 * hist.c — lock-free log-linear histogram (see hist.h for the bucket layout
 * and the error bound).
 */
#include "agent/hist.h"

#include <string.h>

/* Makes *h empty. Plain initialisation: no other thread may use *h yet. */
void hist_init(hist *h)
{
    atomic_init(&h->sum, 0);
    atomic_init(&h->max, 0);
    for (unsigned i = 0; i < HIST_NBUCKETS; i++)
        atomic_init(&h->bucket[i], 0);
}

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

/*
 * Records v. Three relaxed read-modify-writes at most: the bucket, the sum and
 * (only while v exceeds the maximum seen) a CAS loop on max. Relaxed ordering
 * is enough because hist_take() only needs each word to be drained exactly once.
 */
void hist_record(hist *h, uint64_t v)
{
    if (v > HIST_VALUE_MAX)
        v = HIST_VALUE_MAX;
    atomic_fetch_add_explicit(&h->bucket[hist_bucket_of(v)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, v, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (v > m && !atomic_compare_exchange_weak_explicit(&h->max, &m, v, memory_order_relaxed,
                                                           memory_order_relaxed)) {
        /* m was reloaded by the failed CAS; retry while v is still larger. */
    }
}

/*
 * Returns the value reported for the 1-based rank among counts[]: the upper
 * edge of the bucket where the running total reaches rank, clamped to max.
 */
static uint64_t hist_rank_value(const uint64_t *counts, uint64_t rank, uint64_t max)
{
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_NBUCKETS; i++) {
        seen += counts[i];
        if (seen >= rank) {
            uint64_t up = hist_bucket_upper(i);
            return up < max ? up : max;
        }
    }
    return max; /* unreachable while rank <= the total of counts[] */
}

/*
 * Drains *h into *out. A bucket that reads zero is skipped without an
 * exchange: a sample landing there right after the read simply stays for the
 * next take, so the skip loses nothing and keeps a take at about one cache
 * miss per 8 buckets instead of 528 locked instructions.
 */
void hist_take(hist *h, hist_summary *out)
{
    uint64_t counts[HIST_NBUCKETS];
    uint64_t n = 0;

    for (unsigned i = 0; i < HIST_NBUCKETS; i++) {
        uint64_t c = atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (c)
            c = atomic_exchange_explicit(&h->bucket[i], 0, memory_order_relaxed);
        counts[i] = c;
        n += c;
    }
    uint64_t sum = atomic_exchange_explicit(&h->sum, 0, memory_order_relaxed);
    uint64_t max = atomic_exchange_explicit(&h->max, 0, memory_order_relaxed);

    memset(out, 0, sizeof *out);
    if (n == 0) {
        /*
         * Only a racing hist_record() can leave sum/max set with no count
         * drained; put them back so its sample stays whole in the next take.
         */
        if (sum)
            atomic_fetch_add_explicit(&h->sum, sum, memory_order_relaxed);
        if (max) {
            uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
            while (max > m && !atomic_compare_exchange_weak_explicit(
                                  &h->max, &m, max, memory_order_relaxed, memory_order_relaxed)) {
            }
        }
        return;
    }
    out->count = n;
    out->sum = sum;
    out->mean = (double)sum / (double)n;
    out->max = max;
    /* Ranks are ceil(q*n), written without q*n so no value of n can overflow. */
    out->p50 = hist_rank_value(counts, n - n / 2, max);
    out->p99 = hist_rank_value(counts, n - n / 100, max);
}
