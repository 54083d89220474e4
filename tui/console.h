/*
 * console.h — the interactive console (ncurses, in the style of `pm2 monit`).
 *
 * The console is a view: it talks to a hub only through the control socket
 * (tui/client.h, PROTOCOL.md §4), so attaching to a hub started elsewhere is
 * the same code path as the console of `drover run`.
 */
#ifndef DROVER_TUI_CONSOLE_H
#define DROVER_TUI_CONSOLE_H

#include <stdbool.h>

typedef enum {
    CONSOLE_QUIT_ASK,      /* `drover run` or `drover attach` in a terminal: ask whether to stop the hub */
    CONSOLE_QUIT_LEAVE,    /* `drover monit` attached to a running hub: leave it running */
    CONSOLE_QUIT_STOP,     /* `drover monit` that started its own monitor-only hub: stop it */
} console_quit;

#include "tui/sshlink.h"

typedef struct {
    const char  *ctl_path;   /* the hub's ctl.sock (with host: the host, for messages) */
    /* a hub on another host instead, over ssh (tui/sshlink.h): NULL for ctl_path's */
    const sshlink_target *host;
    const char  *host_ns, *host_socket_dir, *host_remote;   /* -L, --socket-dir there, --remote-cmd */
    /* a fleet instead (monit with several hubs): the local hub (ctl_path, named
     * "local") unless fleet_no_local, and each of fleet_hosts over ssh (with
     * host_ns, host_socket_dir, host_remote), merged into one view */
    const sshlink_target *fleet_hosts;
    size_t       fleet_nhosts;       /* 0: not a fleet */
    bool         fleet_no_local;
    console_quit on_quit;
    const char  *title;      /* e.g. "drover — default"; NULL for a default */
    bool         no_mouse;   /* --no-mouse: leave the mouse to the terminal (no clicks, no wheel) */
} console_options;

/*
 * Runs the console on the terminal until the user quits (q) or the terminal
 * hangs up (SIGHUP: the console ends, the hub keeps running). Returns the
 * process exit status: 0, or 1 when the terminal cannot be used.
 */
int console_run(const console_options *o);

#endif
