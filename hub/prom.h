/*
 * prom.h — the Prometheus text exposition (0.0.4): `--format prom`,
 * `--metrics` and `--metrics-textfile` all print it.
 *
 * Series a TSDB can keep: a worker's series are labelled `app` and `worker`
 * (its id; `pid-N` for a process drover does not supervise) only, so a
 * restart or a reload continues the same series. The pid is in
 * `drover_worker_info`. Counters of a worker slot (requests, errors, the
 * latency and lag histograms) are kept by this module across the slot's
 * processes: each interval adds what each process did in it, so they only
 * go up while the hub runs, through restarts and reloads (a replacement and
 * the worker it replaces are one series).
 *
 * Histograms: `drover_worker_request_duration_seconds` and
 * `drover_worker_event_loop_lag_seconds`, buckets `le` = 2^k µs for k = 8…25
 * (0.000256 s … 33.55 s) and +Inf: edges of the agents' log-linear buckets,
 * so every count is exact (a sample of exactly 2^k µs counts in the next
 * bucket, at the agents' 1 µs resolution). histogram_quantile over them is
 * within a factor of 2 of the true quantile (t/2 < r <= 2t from 256 µs to
 * 2^25 µs; README "Histograms" has the exact bound). There is no `_sum`: the agents
 * send bucket counts, not sums, and an estimate would not be honest.
 */
#ifndef DROVER_HUB_PROM_H
#define DROVER_HUB_PROM_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "hub/headless.h"
#include "hub/state.h"

#define PROM_NLE 18   /* finite `le` buckets: 2^8 … 2^25 µs */

/* Returns a new exposition state, or NULL when out of memory. */
prom *prom_new(void);

/* Frees p (NULL allowed). */
void prom_free(prom *p);

/*
 * Folds one interval's views (sorted by app, id, pid, as state_snapshot
 * gives them) into the slots' counters: call exactly once per interval,
 * before printing it. Returns 0, or -1 when out of memory (the interval is
 * then left out of the counters).
 */
int prom_fold(prom *p, const worker_view *v, size_t n);

/* Counts a reload of app that ended: done, or aborted. */
void prom_count_reload(prom *p, const char *app, bool done);

/*
 * Declares app as the hub starts supervising or watching it: from now on
 * its drover_app_reloads_total{outcome="done"|"aborted"} are exported, at 0
 * until a reload ends (so Prometheus's increase() sees the first one), and
 * its max_memory (0: none) as drover_app_max_memory_bytes. An app already
 * known keeps its counts and takes max_memory.
 */
void prom_add_app(prom *p, const char *app, uint64_t max_memory);

/* Sets app's max_memory (0: none), exported as drover_app_max_memory_bytes. */
void prom_set_max_memory(prom *p, const char *app, uint64_t bytes);

/* Forgets app (removed from the config file): its app series end. */
void prom_remove_app(prom *p, const char *app);

/*
 * Prints the exposition: the slots' counters as of the last fold, gauges
 * from the views v (matched to the slots by app, id, pid), apps (from
 * headless_app_sums), the hub (c) and the build.
 */
void prom_print(prom *p, FILE *out, const worker_view *v, size_t n, const app_sum *apps, size_t napps,
                const hub_counters *c);

/* The upper edge in µs of finite bucket k (k < PROM_NLE). */
uint64_t prom_le_us(unsigned k);

/*
 * `drover upgrade`: the per-slot sums behind the counters and histograms
 * (each slot's processes as last seen, so the next fold continues exactly)
 * and the apps' reload counts, as JSON (new reference); prom_restore, in
 * the new image, takes them back (malformed slots are skipped). Returns 0,
 * or -1 when out of memory.
 */
struct json_t;
struct json_t *prom_save(const prom *p);
int prom_restore(prom *p, const struct json_t *saved);

#endif
