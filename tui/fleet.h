/*
 * fleet.h — `drover monit --headless --host …`: the headless NDJSON of
 * several hubs (the local one and others over ssh) merged into one stream,
 * each line with a "host" key, and a line of type "host" whenever a host
 * comes up or becomes unreachable (each host is retried with backoff; a
 * dead or slow host never holds up the others).
 */
#ifndef DROVER_TUI_FLEET_H
#define DROVER_TUI_FLEET_H

#include <stddef.h>

#include "tui/sshlink.h"

#define FLEET_HOSTS_MAX 64
#define FLEET_LOCAL     "local"   /* the local hub's "host" */

typedef struct {
    const char           *ns, *socket_dir;   /* the namespace on every host */
    const char           *remote;            /* --remote-cmd, NULL for the default */
    const char           *local_ctl;         /* the local hub's ctl.sock, NULL: --no-local */
    const sshlink_target *hosts;
    size_t                nhosts;
    long                  count;             /* stop after this many intervals in all; 0: never */
} fleet_options;

/*
 * Reads a hosts file: one [USER@]HOST[:PORT] a line; blank lines and lines
 * starting with '#' are skipped. Appends to hosts (n in use, at most
 * FLEET_HOSTS_MAX). Returns 0, or -1 with "FILE:LINE: …" in err.
 */
int fleet_hosts_file(const char *file, sshlink_target *hosts, size_t *n, char *err, size_t errcap);

/*
 * Streams until count intervals were printed or stdout closes (exit status
 * 0); runs on its own libuv loop. Returns 1 when the loop cannot start.
 */
int fleet_stream(const fleet_options *o);

#endif
