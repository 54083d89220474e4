/*
 * utf8.h — the one UTF-8 decoder: the hub (log lines for JSON views), the
 * CLI (terminal-safe text) and the console (cells) all decide the same way
 * what is valid UTF-8. Header-only: RFC 3629, no allocation, no locale.
 */
#ifndef DROVER_PROTO_UTF8_H
#define DROVER_PROTO_UTF8_H

#include <stddef.h>
#include <stdint.h>

/*
 * Decodes the sequence at s (n > 0 bytes available) into *cp. Returns its
 * length (1-4), or 0 when s does not start a valid sequence: a stray or
 * truncated byte, an overlong form, a surrogate, or beyond U+10FFFF.
 */
static inline size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    unsigned char lo = 0x80, hi = 0xbf;   /* the range of the second byte */
    size_t len;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0;                    /* overlong */
        else if (c == 0xed)
            hi = 0x9f;                    /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90;                    /* overlong */
        else if (c == 0xf4)
            hi = 0x8f;                    /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    uint32_t v = c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    *cp = v;
    return len;
}

#endif
