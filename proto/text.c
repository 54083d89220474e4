/*
 * text.c — escaping what workers wrote before a terminal sees it.
 */
#include "proto/text.h"

#include "proto/utf8.h"

#include <stdint.h>
#include <string.h>

size_t text_printable(const unsigned char *s, size_t n)
{
    uint32_t cp;
    size_t len = utf8_decode(s, n, &cp);
    /* C0 controls, DEL and the C1 controls move cursors and retitle windows */
    if (len == 0 || cp < 0x20 || (cp >= 0x7f && cp <= 0x9f))
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

size_t text_escape_into(const char *s, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        char e[5];
        size_t k = text_printable(p + i, len - i);
        const char *from = k ? (const char *)p + i : e;
        size_t w = k ? k : text_escape(p[i], e);
        if (o + w > cap)
            break;
        memcpy(out + o, from, w);
        o += w;
        i += k ? k : 1;
    }
    return o;
}

void text_sanitize(const char *s, char *out, size_t cap)
{
    if (cap == 0)
        return;
    size_t n = text_escape_into(s ? s : "", s ? strlen(s) : 0, out, cap - 1);
    out[n] = '\0';
}
