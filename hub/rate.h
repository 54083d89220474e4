/*
 * rate.h — per-second rates from cumulative counters.
 */
#ifndef DROVER_HUB_RATE_H
#define DROVER_HUB_RATE_H

#include <stdint.h>

/*
 * Returns the rate per second of a cumulative counter that went from prev (at
 * prev_ms) to cur (at cur_ms), timestamps in ms from the sender's clock.
 * A counter that went down was reset (the sender restarted its count): the
 * increase is then taken as cur, counted from zero. Returns NAN when the
 * interval is not positive (same or reordered timestamps).
 */
double rate_per_s(uint64_t prev, uint64_t cur, uint64_t prev_ms, uint64_t cur_ms);

#endif
