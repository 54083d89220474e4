/*
 * human.h — numbers as a person reads them at a glance, shared by every
 * measured figure the views print (the `drover ls` columns, the console's
 * header, detail pane and sparklines): three significant digits and a unit
 * suffix, never an exponent. Counts, whole-percent shares, uptime and the
 * load average have their own forms (README, "The console"). Also the
 * scaling of a sparkline, kept apart from its drawing so it can be tested
 * without a terminal. No ncurses, no libuv.
 */
#ifndef DROVER_TUI_HUMAN_H
#define DROVER_TUI_HUMAN_H

#include <stddef.h>

/* The suffix ladder a figure climbs. */
typedef enum {
    HUMAN_SI,      /* plain quantities: 0.899, 950, 1.2k, 6.27M, 3.1G, 2T (and m, u below 1 milli) */
    HUMAN_BYTES,   /* byte counts, base 1024: 950K, 12.3M, 1.5G (never below K) */
} human_scale;

/*
 * Writes v into out (cap bytes, always terminated) with at most three
 * significant digits and the scale's suffix: "6.27M", "0.899", "1.2k", "12",
 * "950K". Trailing zeros after the point are dropped ("1.2k", not "1.20k").
 * NAN, and a negative byte count, print "-"; infinities "inf". The text is
 * ASCII and at most 7 characters (sign included) for any finite v.
 */
void human_format(double v, human_scale scale, char *out, size_t cap);

/*
 * The same followed by unit ("%", "ms", " req/s"; NULL or "" for none);
 * "-" alone when v is unknown.
 */
void human_format_unit(double v, human_scale scale, const char *unit, char *out, size_t cap);

/*
 * Scales the n points v (oldest first, NAN unknown) of a sparkline to levels
 * 0..levels-1 into lv (n entries; -1 where the point is unknown). Quantities
 * scale from zero to the series' maximum (at least floor_max), so a series
 * moving from 1.8M to 2.0M draws bars of nearly equal height rather than
 * the full range. *lo and *hi get the series' minimum and maximum (NAN when
 * every point is unknown). Returns how many points are known.
 */
unsigned human_spark_levels(const float *v, unsigned n, double floor_max, int levels, int *lv, double *lo,
                            double *hi);

#endif
