/*
 * cli.h — the CLI subcommands that talk to a running hub (ls, logs and every
 * command of the protocol's table with a subcommand of its own), and the
 * headless stream of a hub that already runs.
 */
#ifndef DROVER_TUI_CLI_H
#define DROVER_TUI_CLI_H

#include <stdbool.h>

#include "proto/control.h"

/*
 * Runs `drover NAME ARGS…` for a command of the table (argv[0] is NAME).
 * Returns the exit status: 0 ok, 1 failed (refused, aborted, no hub), 2
 * usage error.
 */
int cli_main(const ctl_command *cmd, int argc, char **argv);

/*
 * Streams the running hub's headless output (fmt) to stdout, interval by
 * interval, until the hub goes away, stdout closes, or count intervals (0:
 * no limit) have been printed. Returns the exit status.
 */
int cli_stream(const char *ctl_path, ctl_format fmt, long count);

/*
 * `drover up` beside a running hub: asks it to apply file (an absolute
 * path), prints what changed app by app, and waits for the outcome of each
 * reload it started. Returns 0 when all of it succeeded, 1 otherwise.
 */
int cli_apply(const char *ns, const char *socket_dir, const char *file);

/* Parses a decimal integer in [lo, hi] (what every numeric option takes); false if s is not one. */
bool cli_long(const char *s, long lo, long hi, long *out);

/* The options every hub-talking subcommand takes, for help texts. */
extern const char cli_ns_options[];

/* The options of cmd beyond cli_ns_options ("" for none), for help texts. */
const char *cli_options_help(const ctl_command *cmd);

#endif
