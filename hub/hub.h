/*
 * hub.h — the hub process: one libuv loop tying ingest, state, sampler,
 * supervisor (drover run) or attach (drover attach), logs and the headless
 * printers together.
 */
#ifndef DROVER_HUB_HUB_H
#define DROVER_HUB_HUB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "hub/headless.h"

typedef enum { HUB_MONIT, HUB_RUN, HUB_ATTACH } hub_mode;

/* --balance: how a TCP --listen address is spread over the workers. */
typedef enum {
    HUB_BALANCE_DEFAULT,        /* not given: reuseport for TCP, shared otherwise */
    HUB_BALANCE_SHARED,         /* one socket, fd 3 of every worker */
    HUB_BALANCE_REUSEPORT,      /* a SO_REUSEPORT socket per slot (hub/lgroup.h) */
} hub_balance;

typedef struct {
    hub_mode    mode;
    const char *ns;             /* namespace name (-L), default "default" */
    const char *socket_dir;     /* --socket-dir, or NULL for the default rule */
    unsigned    interval_ms;    /* --interval */
    long        count;          /* --count: exit after this many intervals; 0 = forever */
    headless_format format;     /* --format */
    bool        quiet;          /* print nothing on stdout (a hub serving a console) */
    bool        background;     /* once set up, send stdout/stderr to hub.log (run) or /dev/null */
    bool        no_mouse;       /* --no-mouse: for the console that goes with the hub (the hub ignores it) */
    const char *metrics;        /* --metrics [HOST:]PORT, or NULL */
    const char *metrics_textfile; /* --metrics-textfile PATH, or NULL */

    /* drover run */
    const char *app;            /* -n, or derived from the command */
    char *const *argv;          /* the command */
    int         instances;      /* -i */
    const char *listen;         /* --listen spec, or NULL */
    hub_balance balance;        /* --balance */
    unsigned    kill_timeout_ms;
    unsigned    ready_timeout_ms;
    uint64_t    max_memory;     /* bytes, 0 = none */
    const char *log_dir;        /* --log-dir, or NULL for the default */
    bool        echo_logs;      /* copy worker output to stderr, prefixed */
    bool        no_agent;       /* --no-agent: do not preload the Node agent */
    const char *config_file;    /* drover up: the apps come from this file (absolute), not argv */
    const struct config_app *run_app; /* drover run's file-like options (--env, --cwd…), completed; NULL: none given */

    /* drover attach: the master, and options over its profile (hub/attach.h) */
    pid_t       master;
    int         kill_signal;    /* --kill-signal; 0: the profile's */
    int         reload_mode;    /* --reload: an attach_reload_mode; -1: the profile's */
    int         reload_signal;  /* --reload-signal; 0: the profile's */
    int         scale_up;       /* --scale-up; 0: the profile's */
    int         scale_down;     /* --scale-down; 0: the profile's */
} hub_options;

/*
 * Runs a hub in the given mode until SIGINT/SIGTERM (run: after stopping
 * every worker gracefully), --count intervals, or stdout closing. Prints
 * errors as one line on stderr. Returns the process exit status.
 */
int hub_run(const hub_options *o);

/* The command line the process was started with (main's argv, kept): what `drover upgrade` executes again. */
void hub_set_argv(char **argv);

/* True if cmd runs Node.js (its program is node or nodejs). */
bool hub_is_node(const char *cmd);

/*
 * Fills out with the default log directory for namespace ns:
 * $LOGS_DIRECTORY/NS (systemd's LogsDirectory=), else
 * $XDG_STATE_HOME/drover/NS/logs, else ~/.local/state/drover/NS/logs (home
 * from $HOME or the password database), else /tmp/drover-UID/NS/logs.
 */
void hub_default_log_dir(const char *ns, char *out, size_t cap);

#endif
