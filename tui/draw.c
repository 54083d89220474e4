/*
 * draw.c — the console's drawing primitives (see draw.h).
 */
#include "tui/draw.h"

#include "proto/utf8.h"
#include "tui/human.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#define DRAW_CELLS_MAX 600   /* wide characters one draw_put writes at most */
#define DRAW_SPARK_MAX 256   /* points one sparkline shows at most */

/* See draw.h. */
void draw_setup(draw_ctx *d)
{
    const char *term = getenv("TERM");
    const char *nc = getenv("NO_COLOR");
    d->colors = has_colors() && !(nc && *nc) && !(term && strstr(term, "-mono"));
    if (d->colors && start_color() == OK) {
        use_default_colors();
        init_pair(1, COLOR_WHITE, COLOR_BLUE);   /* header, boxes */
        init_pair(2, COLOR_GREEN, -1);
        init_pair(3, COLOR_YELLOW, -1);
        init_pair(4, COLOR_RED, -1);
        init_pair(5, COLOR_BLACK, COLOR_CYAN);   /* pane titles */
        init_pair(6, COLOR_BLACK, COLOR_GREEN);  /* focused pane title */
        init_pair(7, COLOR_CYAN, -1);
        init_pair(8, COLOR_BLACK, COLOR_WHITE);  /* selected row */
        d->a_header = COLOR_PAIR(1);
        d->a_ok = COLOR_PAIR(2);
        d->a_warn = COLOR_PAIR(3);
        d->a_err = COLOR_PAIR(4);
        d->a_bar = COLOR_PAIR(5);
        d->a_bar_focus = COLOR_PAIR(6) | A_BOLD;
        d->a_spark = COLOR_PAIR(7);
        d->a_sel = COLOR_PAIR(8) | A_BOLD;
        d->a_dim = A_DIM;
        d->a_stderr = COLOR_PAIR(4);
        d->a_key = COLOR_PAIR(5);
        d->a_app = COLOR_PAIR(7) | A_BOLD;
    } else {
        d->colors = false;
        /* readable with attributes alone */
        d->a_header = A_REVERSE;
        d->a_ok = A_NORMAL;
        d->a_warn = A_BOLD;
        d->a_err = A_BOLD;
        d->a_bar = A_REVERSE;
        d->a_bar_focus = A_REVERSE | A_BOLD;
        d->a_spark = A_NORMAL;
        d->a_sel = A_REVERSE | A_BOLD;
        d->a_dim = A_DIM;
        d->a_stderr = A_BOLD;
        d->a_key = A_REVERSE;
        d->a_app = A_BOLD | A_UNDERLINE;
    }
}


/* An ASCII stand-in for a few characters our own texts use, or NULL. */
static const char *draw_ascii_for(uint32_t cp)
{
    switch (cp) {
    case 0x2014: case 0x2013: case 0x2500: return "-";
    case 0x2026: return "...";
    case 0x00B1: return "+-";
    case 0x00B7: case 0x2022: case 0x25CF: return "*";
    case 0x2192: return "->";
    case 0x2191: return "^";
    case 0x2193: case 0x25BC: return "v";
    case 0x25B2: return "^";
    case 0x2502: return "|";
    default: return NULL;
    }
}

/*
 * Converts s into the wide characters draw_put shows in at most w columns
 * (sanitized as draw.h says), into buf (room for cap); returns how many and
 * the columns they take in *cols.
 */
static int draw_cells(const draw_ctx *d, const char *s, int w, wchar_t *buf, int cap, int *cols)
{
    int n = 0;
    *cols = 0;
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);
    while (left && *cols < w && n < cap - 4) {
        uint32_t cp;
        size_t len = utf8_decode(p, left, &cp);
        if (len == 0) {
            cp = '?';
            len = 1;
        }
        p += len;
        left -= len;
        if (cp == '\t')
            cp = ' ';
        else if (cp < 0x20 || (cp >= 0x7F && cp < 0xA0))
            cp = '?';
        if (cp >= 0x80 && !d->utf8) {
            const char *alt = draw_ascii_for(cp);
            if (!alt)
                alt = "?";
            for (; *alt && *cols < w; alt++, (*cols)++)
                buf[n++] = (wchar_t)*alt;
            continue;
        }
        int cw = cp < 0x80 ? 1 : wcwidth((wchar_t)cp);
        if (cw < 0) {
            cp = '?';
            cw = 1;
        }
        if (cw == 0 && n == 0)
            continue;   /* a combining mark with nothing to combine with */
        if (*cols + cw > w)
            break;
        buf[n++] = (wchar_t)cp;
        *cols += cw;
    }
    return n;
}

/* See draw.h. */
int draw_put(const draw_ctx *d, int y, int x, int w, const char *s, attr_t a)
{
    if (y < 0 || y >= LINES || x < 0 || x >= COLS || w <= 0)
        return 0;
    if (w > COLS - x)
        w = COLS - x;
    wchar_t buf[DRAW_CELLS_MAX];
    int cols;
    int n = draw_cells(d, s, w, buf, DRAW_CELLS_MAX, &cols);
    if (n == 0)
        return 0;
    attrset(a);
    mvaddnwstr(y, x, buf, n);
    attrset(A_NORMAL);
    return cols;
}

/* See draw.h. */
int draw_width(const draw_ctx *d, const char *s)
{
    wchar_t buf[DRAW_CELLS_MAX];
    int cols;
    draw_cells(d, s, DRAW_CELLS_MAX, buf, DRAW_CELLS_MAX, &cols);
    return cols;
}

/* See draw.h. */
void draw_fill(int y, int x, int w, attr_t a)
{
    if (y < 0 || y >= LINES || x >= COLS || w <= 0)
        return;
    if (w > COLS - x)
        w = COLS - x;
    mvhline(y, x, ' ' | a, w);
}

/* See draw.h. */
void draw_vline(const draw_ctx *d, int y, int x, int h)
{
    mvvline(y, x, (d->utf8 ? ACS_VLINE : '|') | d->a_dim, h);
}

/* See draw.h. */
void draw_spark(const draw_ctx *d, int y, int x, int w, const float *v, unsigned n, double floor_max,
                double *lo, double *hi)
{
    static const char *const blocks[] = {"\u2581", "\u2582", "\u2583", "\u2584",
                                         "\u2585", "\u2586", "\u2587", "\u2588"};
    static const char ascii[] = "_.-=#";
    *lo = *hi = NAN;
    if (w <= 0)
        return;
    unsigned k = n < (unsigned)w ? n : (unsigned)w;
    if (k > DRAW_SPARK_MAX)
        k = DRAW_SPARK_MAX;
    v += n - k;   /* the newest k */
    int levels = d->utf8 ? 8 : 5;
    int lv[DRAW_SPARK_MAX];
    human_spark_levels(v, k, floor_max, levels, lv, lo, hi);
    char buf[DRAW_SPARK_MAX * 3 + 1];
    size_t o = 0;
    for (unsigned i = 0; i < k; i++) {
        if (lv[i] < 0) {
            buf[o++] = ' ';
        } else if (d->utf8) {
            memcpy(buf + o, blocks[lv[i]], 3);
            o += 3;
        } else {
            buf[o++] = ascii[lv[i]];
        }
    }
    buf[o] = '\0';
    draw_put(d, y, x + (w - (int)k), (int)k, buf, d->a_spark);
}

/* See draw.h. */
void draw_bar(const draw_ctx *d, int y, int x, int w, double pct)
{
    if (w < 3)
        return;
    if (isnan(pct))
        pct = 0;
    if (pct > 100)
        pct = 100;
    attr_t a = pct >= 80 ? d->a_err : pct >= 50 ? d->a_warn : d->a_ok;
    if (!d->utf8) {
        int inner = w - 2;
        int fill = (int)lround(pct / 100.0 * inner);
        char buf[128];
        int n = 0;
        buf[n++] = '[';
        for (int i = 0; i < inner && n < 120; i++)
            buf[n++] = i < fill ? '|' : ' ';
        buf[n++] = ']';
        buf[n] = '\0';
        draw_put(d, y, x, w, buf, a);
        return;
    }
    static const char *const part[] = {"", "\u258F", "\u258E", "\u258D", "\u258C", "\u258B", "\u258A", "\u2589"};
    int eighths = (int)lround(pct / 100.0 * w * 8);
    char buf[512];
    size_t o = 0;
    int cells = 0;
    for (; cells < eighths / 8 && o < sizeof buf - 8; cells++) {
        memcpy(buf + o, "\u2588", 3);
        o += 3;
    }
    if (eighths % 8 && cells < w) {
        size_t l = strlen(part[eighths % 8]);
        memcpy(buf + o, part[eighths % 8], l);
        o += l;
        cells++;
    }
    buf[o] = '\0';
    draw_fill(y, x, w, d->a_dim);
    draw_put(d, y, x, w, buf, a);
}

/* Draws the frame of a box of bw x bh cells at (by, bx): line drawing with UTF-8, else ASCII. */
static void draw_frame(const draw_ctx *d, int by, int bx, int bw, int bh)
{
    attr_t a = d->a_header;
    if (d->utf8) {
        mvaddch(by, bx, ACS_ULCORNER | a);
        mvhline(by, bx + 1, ACS_HLINE | a, bw - 2);
        mvaddch(by, bx + bw - 1, ACS_URCORNER | a);
        mvaddch(by + bh - 1, bx, ACS_LLCORNER | a);
        mvhline(by + bh - 1, bx + 1, ACS_HLINE | a, bw - 2);
        mvaddch(by + bh - 1, bx + bw - 1, ACS_LRCORNER | a);
        mvvline(by + 1, bx, ACS_VLINE | a, bh - 2);
        mvvline(by + 1, bx + bw - 1, ACS_VLINE | a, bh - 2);
    } else {
        /* plain ASCII: ACS line drawing may not exist without a UTF-8 locale */
        mvhline(by, bx, '-' | a, bw);
        mvhline(by + bh - 1, bx, '-' | a, bw);
        mvvline(by + 1, bx, '|' | a, bh - 2);
        mvvline(by + 1, bx + bw - 1, '|' | a, bh - 2);
    }
}

/*
 * Cuts the text s to at most w columns at a word: into out (cap bytes), and
 * *rest points at what is left (NULL when all of it fits). A word longer
 * than w is cut where it must be.
 */
static void draw_word_cut(const draw_ctx *d, const char *s, int w, char *out, size_t cap, const char **rest)
{
    snprintf(out, cap, "%s", s);
    *rest = NULL;
    if (draw_width(d, out) <= w)
        return;
    size_t keep = 0;
    for (size_t i = 0; out[i]; i++) {
        if (out[i] != ' ')
            continue;
        char save = out[i];
        out[i] = '\0';
        bool fits = draw_width(d, out) <= w;
        out[i] = save;
        if (!fits)
            break;
        keep = i;
    }
    if (keep == 0) {
        /* one long word: cut by columns (draw_put does) */
        *rest = NULL;
        return;
    }
    out[keep] = '\0';
    *rest = s + keep + 1;
}

/* One row of a box as shown: its key (bold) and text, or a text alone. */
typedef struct {
    bool tabbed;        /* in the key column layout */
    char key[32];
    char text[256];
} draw_box_row;

/*
 * Lays the n lines out in rows of text_w columns: a text too wide wraps at a
 * word under its key when wrap, else ends at a word with an ellipsis. Returns
 * how many rows were written to out (at most cap).
 */
static int draw_box_layout(const draw_ctx *d, const char *const *lines, int n, int text_w, int keycol, bool wrap,
                           draw_box_row *out, int cap)
{
    int rows = 0;
    for (int i = 0; i < n && rows < cap; i++) {
        const char *tab = strchr(lines[i], '\t');
        const char *rest = tab ? tab + 1 : lines[i];
        int tw = tab ? text_w - keycol : text_w;
        for (bool first = true; rest && rows < cap; first = false) {
            draw_box_row *r = &out[rows++];
            r->tabbed = tab != NULL;
            snprintf(r->key, sizeof r->key, "%.*s", tab && first ? (int)(tab - lines[i]) : 0, lines[i]);
            const char *next;
            draw_word_cut(d, rest, tw, r->text, sizeof r->text, &next);
            if (next && !wrap) {
                const char *ell = d->utf8 ? "\u2026" : "...";
                draw_word_cut(d, rest, tw - draw_width(d, ell), r->text, sizeof r->text, &next);
                size_t l = strlen(r->text);
                snprintf(r->text + l, sizeof r->text - l, "%s", ell);
                next = NULL;
            }
            rest = next;
        }
    }
    return rows;
}

/* See draw.h. */
void draw_box(const draw_ctx *d, const char *title, const char *const *lines, int n)
{
    enum { KEYCOL = 13, ROWS_MAX = 80 };
    int bw = 0;
    for (int i = 0; i < n; i++) {
        const char *tab = strchr(lines[i], '\t');
        int l = tab ? KEYCOL + draw_width(d, tab + 1) : draw_width(d, lines[i]);
        if (l > bw)
            bw = l;
    }
    bw += 4;
    if (bw > COLS - 2)
        bw = COLS - 2;
    draw_box_row rows[ROWS_MAX];
    /* wrapped when the box has the rows for it, else one row per line */
    int nr = draw_box_layout(d, lines, n, bw - 4, KEYCOL, true, rows, ROWS_MAX);
    if (nr + 2 > LINES - 2)
        nr = draw_box_layout(d, lines, n, bw - 4, KEYCOL, false, rows, ROWS_MAX);
    int bh = nr + 2;
    if (bh > LINES - 2)
        bh = LINES - 2;
    int bx = (COLS - bw) / 2, by = (LINES - bh) / 2;
    for (int r = 0; r < bh; r++)
        draw_fill(by + r, bx, bw, d->a_header);
    draw_frame(d, by, bx, bw, bh);
    int tl = draw_width(d, title);
    draw_put(d, by, bx + (bw - tl) / 2, bw - 2, title, d->a_header | A_BOLD);
    for (int i = 0; i < nr && i < bh - 2; i++) {
        if (!rows[i].tabbed) {
            draw_put(d, by + 1 + i, bx + 2, bw - 4, rows[i].text, d->a_header);
            continue;
        }
        draw_put(d, by + 1 + i, bx + 2, KEYCOL - 1, rows[i].key, d->a_header | A_BOLD);
        draw_put(d, by + 1 + i, bx + 2 + KEYCOL, bw - 4 - KEYCOL, rows[i].text, d->a_header);
    }
}
