/*
 * human.c — humanized figures and sparkline scaling (see human.h).
 */
#include "tui/human.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Drops the zeros after a decimal point at the end of s ("1.20" -> "1.2", "2.00" -> "2"). */
static void human_trim(char *s)
{
    if (!strchr(s, '.'))
        return;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '0')
        s[--n] = '\0';
    if (n > 0 && s[n - 1] == '.')
        s[--n] = '\0';
}

/* Writes m (0 <= m < 1000 after rounding) with three significant digits, trimmed, into out. */
static void human_digits(double m, char *out, size_t cap)
{
    int decimals = m >= 99.95 ? 0 : m >= 9.995 ? 1 : m >= 0.9995 ? 2 : 3;
    snprintf(out, cap, "%.*f", decimals, m);
    human_trim(out);
}

/* See human.h. */
void human_format(double v, human_scale scale, char *out, size_t cap)
{
    if (cap == 0)
        return;
    if (isnan(v) || (scale == HUMAN_BYTES && v < 0)) {
        snprintf(out, cap, "-");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, "%sinf", v < 0 ? "-" : "");
        return;
    }
    static const char *const si[] = {"", "k", "M", "G", "T", "P", "E"};
    static const char *const bytes[] = {"K", "M", "G", "T", "P", "E"};
    const char *sign = v < 0 ? "-" : "";
    double m = fabs(v);
    char digits[32];
    if (scale == HUMAN_BYTES) {
        double base = 1024.0;
        m /= base;   /* bytes show from K up */
        size_t i = 0;
        /* 3 digits at most: from 999.5 on, the next suffix */
        while (m >= 999.5 && i + 1 < sizeof bytes / sizeof bytes[0]) {
            m /= base;
            i++;
        }
        if (m >= 999.5)
            snprintf(digits, sizeof digits, ">999");   /* past the last suffix */
        else if (i == 0)
            snprintf(digits, sizeof digits, "%.0f", m);   /* "950K", not "950.4K" */
        else
            human_digits(m, digits, sizeof digits);
        snprintf(out, cap, "%s%s%s", sign, digits, bytes[i]);
        return;
    }
    if (m == 0) {
        snprintf(out, cap, "0");
        return;
    }
    if (m < 0.0009995) {
        /* below a thousandth: milli would need four digits, so micro and nano */
        const char *suffix = "u";
        m *= 1e6;
        if (m < 0.9995) {
            m *= 1e3;
            suffix = "n";
        }
        if (m < 0.0009995) {
            snprintf(out, cap, "%s0", sign);
            return;
        }
        human_digits(m, digits, sizeof digits);
        snprintf(out, cap, "%s%s%s", sign, digits, suffix);
        return;
    }
    size_t i = 0;
    while (m >= 999.5 && i + 1 < sizeof si / sizeof si[0]) {
        m /= 1000.0;
        i++;
    }
    if (m >= 999.5)
        snprintf(digits, sizeof digits, ">999");   /* past the last suffix */
    else
        human_digits(m, digits, sizeof digits);
    snprintf(out, cap, "%s%s%s", sign, digits, si[i]);
}

/* See human.h. */
void human_format_unit(double v, human_scale scale, const char *unit, char *out, size_t cap)
{
    char b[32];
    human_format(v, scale, b, sizeof b);
    if (isnan(v) || !unit)
        unit = "";
    snprintf(out, cap, "%s%s", b, strcmp(b, "-") == 0 ? "" : unit);
}

/* See human.h. */
unsigned human_spark_levels(const float *v, unsigned n, double floor_max, int levels, int *lv, double *lo,
                            double *hi)
{
    double mx = -INFINITY, mn = INFINITY;
    unsigned known = 0;
    for (unsigned i = 0; i < n; i++) {
        if (isnan(v[i]))
            continue;
        known++;
        if (v[i] > mx)
            mx = v[i];
        if (v[i] < mn)
            mn = v[i];
    }
    *lo = known ? mn : NAN;
    *hi = known ? mx : NAN;
    double top = known && mx > floor_max ? mx : floor_max;
    if (!(top > 0))
        top = 1;
    for (unsigned i = 0; i < n; i++) {
        if (isnan(v[i])) {
            lv[i] = -1;
            continue;
        }
        double x = v[i] < 0 ? 0 : v[i];
        long l = lround(x / top * (levels - 1));
        lv[i] = (int)(l < 0 ? 0 : l >= levels ? levels - 1 : l);
    }
    return known;
}
