/*
 * notify.h — the systemd notify text protocol (sd_notify(3)) accepted on the
 * report socket beside msgpack reports. PROTOCOL.md §2.
 */
#ifndef DROVER_PROTO_NOTIFY_H
#define DROVER_PROTO_NOTIFY_H

#include <stdbool.h>
#include <stddef.h>

#define NOTIFY_STATUS_MAX 128

typedef struct {
    bool ready;        /* READY=1 */
    bool stopping;     /* STOPPING=1 */
    bool reloading;    /* RELOADING=1 */
    bool watchdog;     /* WATCHDOG=1 */
    bool has_status;   /* STATUS=... seen */
    char status[NOTIFY_STATUS_MAX];  /* truncated to fit, NUL-terminated */
} notify_msg;

/*
 * Parses a notify datagram: newline-separated KEY=VALUE assignments, KEY made
 * of A-Z, 0-9 and '_', VALUE printable text. Unknown keys are ignored.
 * Empty lines and a final newline are allowed; at least one assignment is
 * required. Returns true and fills *out when every line is well formed, false
 * otherwise, with *out zeroed (the datagram is then not notify text and
 * counts as bad).
 */
bool notify_parse(const void *buf, size_t len, notify_msg *out);

#endif
