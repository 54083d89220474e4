/*
 * columns.h — one table of worker columns (htop's habit) that drives both
 * `drover ls` and the console's worker list: name, title, width, alignment
 * and a formatter from a protocol worker object (PROTOCOL.md §4.4).
 */
#ifndef DROVER_TUI_COLUMNS_H
#define DROVER_TUI_COLUMNS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *name;     /* "cpu", for --sort and the console's sort key */
    const char *title;    /* "CPU%" */
    int         width;    /* characters */
    bool        right;    /* right-aligned (numbers) */
    /* Writes the cell text (at most width characters; "-" when unknown). */
    void      (*format)(const json_t *w, char *out, size_t cap);
    /* Sort key: larger first for numbers; NAN when unknown (sorted last). */
    double    (*sort_key)(const json_t *w);
    /* Larger keys first shows the smallest values first (ids and pids: the key is negated). */
    bool        ascending;
    /* Only in a view of several hosts (the console's HOST): `drover ls` and a
     * one-host console leave it out. */
    bool        fleet;
} column;

/* The table, ended by an entry whose name is NULL. */
extern const column columns_table[];

/* The column named name, or NULL. */
const column *columns_find(const char *name);

/* Formats a byte count as "12.3M", "950K"; "-" when negative (human_format, HUMAN_BYTES). */
void columns_bytes(double v, char *out, size_t cap);

/*
 * True when sorting by col (reversed or not) shows the smallest values
 * first: the marker a view draws beside its title (up for ascending).
 */
bool columns_sort_ascending(const column *col, bool reversed);

/*
 * Formats an app object's spread of requests over its online workers:
 * "spread 1.3x (21-28%)" (largest share over smallest, then both), "spread
 * inf (0-52%)" when a worker gets none, "spread -" without traffic.
 */
void columns_spread(const json_t *app, char *out, size_t cap);

/* Formats seconds as "45s", "12m", "3h", "2d"; "-" when unknown. */
void columns_duration(double s, char *out, size_t cap);

#endif
