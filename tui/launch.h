/*
 * launch.h — the background hub behind a console: `drover run`, `attach`
 * and `monit` in a terminal start themselves again as a hub in their own
 * session, then open the console on its control socket.
 */
#ifndef DROVER_TUI_LAUNCH_H
#define DROVER_TUI_LAUNCH_H

#include <stdbool.h>

/* True when the control socket at path accepts a connection. */
bool launch_ctl_alive(const char *path);

/*
 * Starts this very command (argv[0] is the subcommand) again as a background
 * hub with --background added, in its own session so that a terminal hangup
 * never reaches it, and waits up to 10 s until its control socket at
 * ctl_path answers. Startup errors reach the terminal. Returns 0, or the
 * exit status to return.
 */
int launch_background_hub(int argc, char **argv, const char *ctl_path);

/* True when stdin and stdout are a terminal (the console can run). */
bool launch_is_terminal(void);

#endif
