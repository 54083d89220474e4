/*
 * bridge.h — `drover bridge`: relays stdin and stdout to the namespace's
 * ctl.sock, byte for byte, so the control protocol reaches a hub over any
 * byte stream (ssh runs it on the remote host for `--host`). It listens on
 * nothing and adds nothing: the hub checks the bridge's credentials as for
 * any local client, so the remote user's rights are what apply.
 */
#ifndef DROVER_TUI_BRIDGE_H
#define DROVER_TUI_BRIDGE_H

extern const char bridge_usage[], bridge_help[];

/*
 * Runs `drover bridge ARGS…` (argv[0] is "bridge"). Returns the exit
 * status: 0 when either side closed, 1 when the hub cannot be reached or a
 * read or write failed, 2 on a usage error.
 */
int bridge_main(int argc, char **argv);

#endif
