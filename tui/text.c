/*
 * text.c — escaping what workers wrote before a terminal sees it.
 */
#include "tui/text.h"

#include <stdint.h>
#include <string.h>

size_t text_printable(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x20 || c == 0x7f)
        return 0;
    if (c < 0x80)
        return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    /* overlong forms, surrogates, beyond U+10FFFF, and the C1 controls */
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
        return 0;
    return len;
}

/* Writes the escape of the byte c ("^[" for controls, "\x9b" otherwise) into e; returns its length. */
static size_t text_escape(unsigned char c, char e[5])
{
    static const char hex[] = "0123456789abcdef";
    if (c < 0x20 || c == 0x7f) {
        e[0] = '^';
        e[1] = (char)(c ^ 0x40);
        return 2;
    }
    e[0] = '\\';
    e[1] = 'x';
    e[2] = hex[c >> 4];
    e[3] = hex[c & 15];
    return 4;
}

void text_print_safe(FILE *out, const char *s, size_t len)
{
    if (!s)
        return;
    if (len == SIZE_MAX)
        len = strlen(s);
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t k = text_printable(p + i, len - i);
        if (k) {
            fwrite(p + i, 1, k, out);
            i += k;
            continue;
        }
        char e[5];
        fwrite(e, 1, text_escape(p[i], e), out);
        i++;
    }
}

void text_sanitize(const char *s, char *out, size_t cap)
{
    if (cap == 0)
        return;
    size_t o = 0, len = s ? strlen(s) : 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        char e[5];
        size_t k = text_printable(p + i, len - i);
        const char *from = k ? (const char *)p + i : e;
        size_t w = k ? k : text_escape(p[i], e);
        if (o + w + 1 > cap)
            break;
        memcpy(out + o, from, w);
        o += w;
        i += k ? k : 1;
    }
    out[o] = '\0';
}
