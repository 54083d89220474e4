/*
 * hist.c — lock-free cumulative histogram (see hist.h; layout in proto/buckets.h).
 */
#include "agent/hist.h"

#include <string.h>

/* Makes *h empty. Plain initialisation: no other thread may use *h yet. */
void hist_init(hist *h)
{
    atomic_init(&h->max, 0);
    for (unsigned i = 0; i < HIST_NBUCKETS; i++)
        atomic_init(&h->bucket[i], 0);
}

/*
 * Records v: one relaxed add on its bucket and, only while v exceeds the
 * maximum seen since the last snapshot, a CAS loop on max. Relaxed ordering
 * is enough: each word is read on its own by hist_snapshot().
 */
void hist_record(hist *h, uint64_t v)
{
    if (v > HIST_VALUE_MAX)
        v = HIST_VALUE_MAX;
    atomic_fetch_add_explicit(&h->bucket[hist_bucket_of(v)], 1, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
    while (v > m && !atomic_compare_exchange_weak_explicit(&h->max, &m, v, memory_order_relaxed,
                                                           memory_order_relaxed)) {
        /* m was reloaded by the failed CAS; retry while v is still larger. */
    }
}

/*
 * Reads every bucket with a relaxed load (about one cache miss per 8
 * buckets, no locked instruction) and exchanges max with 0. A sample whose
 * bucket was read before its add lands in the next snapshot.
 */
uint64_t hist_snapshot(hist *h, report_hist *out, uint64_t *max)
{
    uint64_t total = 0;
    uint32_t n = 0;
    for (unsigned i = 0; i < HIST_NBUCKETS; i++) {
        uint64_t c = atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        if (!c)
            continue;
        out->idx[n] = (uint16_t)i;
        out->count[n] = c;
        n++;
        total += c;
    }
    out->n = n;
    *max = atomic_exchange_explicit(&h->max, 0, memory_order_relaxed);
    return total;
}
