/*
 * fuzz_control.c — libFuzzer harness for the control protocol's parsers
 * (proto/control.c) and the terminal-safe text (proto/text.c).
 *
 * The input is a byte stream as a client would send it: it is framed into
 * lines (ctl_framer, at most CTL_LINE_MAX each, as the hub does), each line
 * is parsed as JSON and, when it is an object, validated as a request
 * (ctl_request_parse) and read as an event (ctl_event_parse). A request that
 * validates must survive the round trip: ctl_request_json of it must
 * validate again to the very same request. Each line is also made safe for
 * a terminal, which must never overflow and never leave a control byte, and
 * turned into an app name, which must follow the rule. Any violation aborts.
 *
 *   make fuzz FUZZ_SECONDS=60
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/control.h"
#include "proto/text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts unless a and b are the same request. */
static void fuzz_same_request(const ctl_request *a, const ctl_request *b)
{
    if (a->cmd != b->cmd || strcmp(a->target.app, b->target.app) != 0 || a->target.id != b->target.id ||
        a->follow != b->follow || a->has_n != b->has_n || a->has_delta != b->has_delta ||
        (a->has_n && a->n != b->n) || (a->has_delta && a->delta != b->delta) ||
        ((a->cmd->args & CTL_ARG_LINES) && a->lines != b->lines) ||
        ((a->cmd->args & CTL_ARG_FORMAT) && a->format != b->format))
        abort();
}

/* Checks one line's text paths: the terminal-safe form and the app name made of it. */
static void fuzz_text(const char *line, size_t len)
{
    static char safe[TEXT_SAFE_MAX(CTL_LINE_MAX) + 1];
    size_t n = text_escape_into(line, len, safe, sizeof safe - 1);
    if (n > sizeof safe - 1)
        abort();
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)safe[i];
        if (c < 0x20 || c == 0x7f)
            abort();   /* a C0 control reached the terminal */
    }
    char name[CTL_APP_MAX];
    ctl_app_name_make(line, name, sizeof name);
    if (!ctl_app_name_ok(name))
        abort();
    ctl_target t;
    char err[256];
    if (ctl_target_parse(line, &t, err, sizeof err) == 0 && (strlen(t.app) >= CTL_APP_MAX || t.id < -1))
        abort();
}

/* Framer callback: one line. */
static bool fuzz_line(void *ctx, char *line, size_t len)
{
    (void)ctx;
    fuzz_text(line, len);
    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        return true;
    }
    ctl_event ev;
    (void)ctl_event_parse(req, &ev);
    ctl_request r, again;
    char err[512];
    if (ctl_request_parse(req, &r, err, sizeof err) == 0) {
        json_t *back = ctl_request_json(&r);
        if (!back || ctl_request_parse(back, &again, err, sizeof err) != 0)
            abort();   /* a valid request must serialize to a valid request */
        fuzz_same_request(&r, &again);
        json_decref(back);
    } else if (!err[0]) {
        abort();   /* a refusal always says why */
    }
    json_decref(req);
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctl_framer fr = {.max = CTL_LINE_MAX};
    (void)ctl_framer_feed(&fr, (const char *)data, size, fuzz_line, NULL);
    if (fr.used > size)
        abort();
    ctl_framer_free(&fr);
    return 0;
}
