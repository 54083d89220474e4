/*
 * draw.h — the console's drawing primitives on ncursesw: text cells that
 * nothing a worker prints can disturb, bars, sparklines, boxes, and the
 * attributes (colours, or plain attributes without them). Without a UTF-8
 * locale every primitive draws ASCII only.
 */
#ifndef DROVER_TUI_DRAW_H
#define DROVER_TUI_DRAW_H

#include <curses.h>
#include <stdbool.h>

/* How to draw: the locale's abilities and the attribute of each role. */
typedef struct {
    bool   utf8;     /* the locale is UTF-8: block characters, arrows, box lines */
    bool   colors;
    attr_t a_header, a_bar, a_bar_focus, a_sel, a_ok, a_warn, a_err, a_dim,
           a_stderr, a_spark, a_key, a_app;
} draw_ctx;

/*
 * Chooses the attributes once ncurses runs: colours when the terminal has
 * them, NO_COLOR is unset and TERM is not a -mono one; else attributes alone.
 */
void draw_setup(draw_ctx *d);

/*
 * Draws s at (y, x) in at most w columns with attribute a; returns the
 * columns used. Control characters become '?' (tabs a space), invalid UTF-8
 * '?', and without UTF-8 every non-ASCII character becomes '?' (or an ASCII
 * stand-in), so a C locale never shows mojibake.
 */
int draw_put(const draw_ctx *d, int y, int x, int w, const char *s, attr_t a);

/* The columns draw_put would use for s with no limit. */
int draw_width(const draw_ctx *d, const char *s);

/* Fills w cells of row y from x with blanks in attribute a. */
void draw_fill(int y, int x, int w, attr_t a);

/* A vertical separator of h cells from (y, x), dimmed. */
void draw_vline(const draw_ctx *d, int y, int x, int h);

/*
 * Draws a sparkline of the n points v (oldest first, NAN unknown) right-
 * aligned in w cells, scaled from 0 to their maximum (at least floor_max):
 * quantities are drawn honestly, a series moving from 1.8M to 2.0M is not a
 * full-height swing (human_spark_levels). *lo and *hi get the minimum and
 * maximum of the points drawn (NAN when none is known), for the caller to
 * print beside the spark.
 */
void draw_spark(const draw_ctx *d, int y, int x, int w, const float *v, unsigned n, double floor_max,
                double *lo, double *hi);

/* Draws a percentage bar of w cells (brackets included without UTF-8), coloured by level. */
void draw_bar(const draw_ctx *d, int y, int x, int w, double pct);

/*
 * Draws a centred box with a title over the screen. A tab in a line splits it
 * in a key column (bold) and a text column.
 */
void draw_box(const draw_ctx *d, const char *title, const char *const *lines, int n);

#endif
