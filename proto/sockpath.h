/*
 * sockpath.h — where a hub namespace's sockets live by default (PROTOCOL.md
 * §1): $XDG_RUNTIME_DIR/drover/NS, else /tmp/drover-UID/NS. One definition
 * for the hub (hub/paths.c) and the agent (agent/agent.c), header-only and
 * without stdio or allocation, so the agent can call it anywhere.
 */
#ifndef DROVER_PROTO_SOCKPATH_H
#define DROVER_PROTO_SOCKPATH_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Appends s to out (length *n, capacity cap); returns 0, or -1 when it does not fit. */
static inline int sockpath_add(char *out, size_t cap, size_t *n, const char *s)
{
    size_t k = strlen(s);
    if (*n + k + 1 > cap)
        return -1;
    memcpy(out + *n, s, k + 1);
    *n += k;
    return 0;
}

/*
 * Writes the default parent of every namespace directory into out:
 * $XDG_RUNTIME_DIR/drover, else /tmp/drover-UID. Returns its length, or 0
 * when it does not fit in cap.
 */
static inline size_t sockpath_parent(char *out, size_t cap)
{
    size_t n = 0;
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && *xdg)
        return sockpath_add(out, cap, &n, xdg) == 0 && sockpath_add(out, cap, &n, "/drover") == 0 ? n : 0;
    char uid[24];
    size_t u = sizeof uid - 1;
    unsigned long id = (unsigned long)getuid();
    uid[u] = '\0';
    do {
        uid[--u] = (char)('0' + id % 10);
        id /= 10;
    } while (id && u > 0);
    return sockpath_add(out, cap, &n, "/tmp/drover-") == 0 && sockpath_add(out, cap, &n, uid + u) == 0 ? n : 0;
}

/*
 * Writes the default path of file (e.g. "agent.sock") in namespace ns into
 * out. Returns its length, or 0 when it does not fit in cap.
 */
static inline size_t sockpath_default(char *out, size_t cap, const char *ns, const char *file)
{
    size_t n = sockpath_parent(out, cap);
    if (n == 0 || sockpath_add(out, cap, &n, "/") != 0 || sockpath_add(out, cap, &n, ns) != 0 ||
        sockpath_add(out, cap, &n, "/") != 0 || sockpath_add(out, cap, &n, file) != 0)
        return 0;
    return n;
}

#endif
