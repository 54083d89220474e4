/*
 * hist.h — a lock-free cumulative histogram for latency and lag samples (µs).
 *
 * Internal to the agent (not part of drover.h). Any number of threads may call
 * hist_record() at once; one thread at a time calls hist_snapshot(), which
 * copies the counts (cumulative since the histogram was initialised, never
 * drained) and takes the largest value recorded since the previous snapshot.
 *
 * The bucket layout and its error bound (never low, at most 6.25 % high,
 * exact below 32 µs) are the wire's: proto/buckets.h. Because the counts are
 * cumulative, the hub gets every sample even when a report is lost or several
 * land in one of its intervals: the difference of two snapshots is exactly the
 * samples recorded between them. A sample recorded during a snapshot is in
 * this snapshot or the next one, never lost; its max may show one report late.
 */
#ifndef DROVER_AGENT_HIST_H
#define DROVER_AGENT_HIST_H

#include <stdatomic.h>
#include <stdint.h>

#include "proto/buckets.h"
#include "proto/report.h"

/*
 * The histogram. A zero-filled object (e.g. one with static storage) is an
 * empty histogram; hist_init() makes one anywhere else.
 */
typedef struct {
    _Atomic uint64_t max;               /* largest since the last snapshot; 0 after it */
    _Atomic uint64_t bucket[HIST_NBUCKETS];
} hist;

/* Makes *h an empty histogram. Not safe against concurrent hist_record(). */
void hist_init(hist *h);

/*
 * Records one sample v (µs; clamped to HIST_VALUE_MAX). Lock-free, relaxed
 * atomics only (one add, and a CAS only while v exceeds the max), safe from
 * any thread and from signal handlers.
 */
void hist_record(hist *h, uint64_t v);

/*
 * Copies the non-zero cumulative counts into *out (sparse, indices rising)
 * and stores in *max the largest sample since the previous snapshot (0 when
 * none; exchanged, so each max is taken once). Returns the total count.
 * Call from one thread at a time.
 */
uint64_t hist_snapshot(hist *h, report_hist *out, uint64_t *max);

#endif
