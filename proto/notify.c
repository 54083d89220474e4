/*
 * notify.c — parse systemd notify text datagrams (sd_notify(3)), PROTOCOL.md §2.
 *
 * A datagram is newline-separated KEY=VALUE lines. We recognise READY=1,
 * STOPPING=1, RELOADING=1, WATCHDOG=1 and STATUS=…, ignore other well-formed
 * assignments (MAINPID=, ERRNO=, …), and refuse anything that is not text so
 * that binary garbage is counted as bad rather than read as an empty message.
 */
#include "proto/notify.h"

#include <string.h>

/* True for a byte allowed in a KEY: A-Z, 0-9, '_'. */
static bool notify_key_byte(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* True for a byte allowed in a VALUE: printable ASCII or any byte ≥ 0x80 (UTF-8). */
static bool notify_value_byte(unsigned char c)
{
    return c >= 0x20 && c != 0x7f;
}

/* True when the n bytes at p equal the C string lit. */
static bool notify_is(const unsigned char *p, size_t n, const char *lit)
{
    return n == strlen(lit) && memcmp(p, lit, n) == 0;
}

/*
 * Copies a STATUS value of n bytes into out->status, truncated to
 * NOTIFY_STATUS_MAX-1 bytes. Truncation backs off to a UTF-8 character
 * boundary so a view never prints half a character.
 */
static void notify_set_status(notify_msg *out, const unsigned char *p, size_t n)
{
    if (n > NOTIFY_STATUS_MAX - 1) {
        n = NOTIFY_STATUS_MAX - 1;
        /* p[n] is the first byte cut off: if it continues a sequence, drop its lead too. */
        while (n > 0 && (p[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(out->status, p, n);
    out->status[n] = '\0';
    out->has_status = true;
}

/*
 * Parses len bytes at buf as notify text into *out (always zeroed first).
 * Returns true when the datagram holds at least one assignment and every
 * non-empty line is KEY=VALUE with KEY in [A-Z0-9_]+ and VALUE printable
 * (bytes ≥ 0x80 allowed); a final newline and empty lines are accepted.
 * Returns false otherwise, with *out zeroed.
 */
bool notify_parse(const void *buf, size_t len, notify_msg *out)
{
    memset(out, 0, sizeof *out);
    if (!buf)
        return false;

    const unsigned char *p = buf;
    const unsigned char *end = p + len;
    bool any = false;

    while (p < end) {
        const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
        const unsigned char *eol = nl ? nl : end;

        if (eol > p) {
            const unsigned char *k = p;
            while (k < eol && notify_key_byte(*k))
                k++;
            if (k == p || k == eol || *k != '=')
                goto bad; /* empty key, no '=', or a byte not allowed in a key */
            size_t klen = (size_t)(k - p);
            const unsigned char *v = k + 1;
            size_t vlen = (size_t)(eol - v);
            for (size_t i = 0; i < vlen; i++)
                if (!notify_value_byte(v[i]))
                    goto bad;

            bool one = notify_is(v, vlen, "1");
            if (notify_is(p, klen, "READY"))
                out->ready = out->ready || one;
            else if (notify_is(p, klen, "STOPPING"))
                out->stopping = out->stopping || one;
            else if (notify_is(p, klen, "RELOADING"))
                out->reloading = out->reloading || one;
            else if (notify_is(p, klen, "WATCHDOG"))
                out->watchdog = out->watchdog || one;
            else if (notify_is(p, klen, "STATUS"))
                notify_set_status(out, v, vlen); /* last one wins */
            any = true;
        }
        p = nl ? nl + 1 : end;
    }
    if (any)
        return true;
bad:
    memset(out, 0, sizeof *out);
    return false;
}
