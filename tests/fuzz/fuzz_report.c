/*
 * fuzz_report.c — libFuzzer harness for the report socket's parsers.
 *
 * Feeds each input to report_decode() and notify_parse(). When the report
 * decodes, it must re-encode, and the re-encoded bytes must decode to the very
 * same struct (compared bytewise: the decoder zeroes every unused byte), and
 * re-encoding that must give the same bytes: the codec is a fixed point after
 * one pass. Any difference aborts.
 *
 *   make fuzz FUZZ_SECONDS=60
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/notify.h"
#include "proto/report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Checks the decode → encode → decode round trip of one input; aborts on a mismatch. */
static void fuzz_report_roundtrip(const uint8_t *data, size_t size)
{
    static report first, second;
    static unsigned char enc[REPORT_MAX_BYTES], enc2[REPORT_MAX_BYTES];

    if (report_decode(data, size, &first) != REPORT_OK)
        return;
    /* The encoder writes the current version whatever was decoded (a v1
     * datagram's keys all exist in v2 with the same meaning). */
    first.v = REPORT_VERSION;

    /* A decoded report always fits the limits, so it must encode. */
    size_t n = report_encode(&first, enc, sizeof enc);
    if (n == 0)
        abort();
    if (report_decode(enc, n, &second) != REPORT_OK)
        abort();
    if (memcmp(&first, &second, sizeof first) != 0)
        abort();

    size_t n2 = report_encode(&second, enc2, sizeof enc2);
    if (n2 != n || memcmp(enc, enc2, n) != 0)
        abort();
}

/* libFuzzer entry point: one input, both parsers. Always returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_report_roundtrip(data, size);

    notify_msg nm;
    if (notify_parse(data, size, &nm)) {
        /* The status must be a NUL-terminated string inside its field. */
        if (nm.has_status && memchr(nm.status, '\0', sizeof nm.status) == NULL)
            abort();
    }
    return 0;
}
