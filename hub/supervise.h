/*
 * supervise.h — the supervisor: runs N workers per app, restarts them when
 * they die, and replaces them one by one behind the shared listening socket.
 *
 * A small state machine per process (s6's habit): every process has one
 * deadline at a time (grace, ready-timeout or kill-timeout), readiness is a
 * separate signal from "running", and a crash-looping slot backs off
 * exponentially so it never becomes a fork storm. Commands are the internal
 * API that the signals and the control socket (console keys, CLI) call.
 */
#ifndef DROVER_HUB_SUPERVISE_H
#define DROVER_HUB_SUPERVISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <sys/types.h>
#include <uv.h>

#include "hub/lgroup.h"
#include "hub/logs.h"
#include "hub/state.h"
#include "proto/control.h"

#define SUPERVISE_GRACE_MS      1000   /* a worker that says nothing is online after this */
#define SUPERVISE_BACKOFF_MIN_MS 100   /* first restart delay; doubles per quick failure */
#define SUPERVISE_BACKOFF_MAX_MS 30000
#define SUPERVISE_STABLE_MS     10000  /* a process that lived this long resets the backoff */
#define SUPERVISE_MAX_WORKERS   CTL_SCALE_MAX /* per app */
#define SUPERVISE_GROW_BUDGET_MS 10    /* spawning per loop turn, so the loop answers meanwhile */
#define SUPERVISE_ADOPTED_MAX   256    /* adopted descendants handled per sweep */
#define SUPERVISE_SWEEP_MS      100    /* while stopping: how often they are looked for */
#define SUPERVISE_PROGRESS_MS   250    /* at most one scale progress event this often */
#define SUPERVISE_MAX_FAILS     16     /* consecutive quick failures before `errored` */

/* When a worker that ended is started again. */
typedef enum { SUPERVISE_RESTART_ALWAYS, SUPERVISE_RESTART_ON_FAILURE, SUPERVISE_RESTART_NEVER } supervise_restart_policy;

/*
 * How a new worker shows it is ready. AUTO: learned — once any worker of the
 * app signalled readiness (agent or sd_notify READY=1), every later worker
 * must, within ready_timeout; until then a silent worker is online after
 * SUPERVISE_GRACE_MS. NOTIFY: it must send sd_notify READY=1; AGENT: its
 * agent must say ready (another signal is not enough). NONE: online after
 * the grace, whatever it says.
 */
typedef enum { SUPERVISE_READY_AUTO, SUPERVISE_READY_NOTIFY, SUPERVISE_READY_AGENT, SUPERVISE_READY_NONE } supervise_ready_mode;

typedef struct {
    const char  *app;            /* app name */
    const char  *path;           /* resolved executable */
    char *const *argv;           /* command and arguments */
    int          instances;      /* workers to run */
    int          listen_fd;      /* shared listening socket, or -1 */
    lgroup      *group;          /* --balance reuseport: a socket of this group per slot
                                    (instead of listen_fd), or NULL */
    const char  *listen_name;    /* LISTEN_FDNAMES */
    const char  *listen_spec;    /* the --listen value, given to workers as DROVER_LISTEN */
    const char  *node_agent;     /* path of the Node agent to preload into node commands, or NULL */
    unsigned     kill_timeout_ms;
    unsigned     ready_timeout_ms;
    uint64_t     max_memory;     /* bytes; 0 = no limit */
    const char  *agent_socket;   /* DROVER_SOCKET and NOTIFY_SOCKET for the workers */
    unsigned     interval_ms;    /* DROVER_INTERVAL_MS for the workers (unless set already) */
    logs        *lg;             /* where output goes; NULL = /dev/null */

    /* From a config file (hub/config.h); zeroed for `drover run`. */
    char *const *env;            /* base environment; NULL = the hub's own (environ) */
    const char  *cwd;            /* NULL = the hub's */
    bool         set_ids;        /* run as uid/gid with groups (root hubs only) */
    uid_t        uid;
    gid_t        gid;
    const gid_t *groups;
    size_t       ngroups;
    const char  *user;           /* as configured, for describe; NULL = none */
    supervise_restart_policy restart;
    supervise_ready_mode ready;
    int          stop_signal;    /* 0 = SIGTERM */
    bool         own_listen;     /* the app closes listen_fd, and frees group, when it no longer
                                    needs them (a file app's; the run path's are the hub's) */
    bool         log_set;        /* the files of its workers are written as below (else as lg's) */
    bool         log_timestamps, log_json;
    uint64_t     log_max_size;   /* 0: lg's */
    unsigned     log_keep;       /* 0: lg's */
} supervise_app_spec;

typedef struct supervise supervise;

/* Receives each notable event (restart, reload progress…), typed (proto/control.h). */
typedef void (*supervise_event_fn)(void *ctx, const ctl_event *e);

/*
 * Formats e's human-readable text from fmt and passes e to ev (if set);
 * shared with attach. e's strings need only live for the call.
 */
__attribute__((format(printf, 4, 5)))
void supervise_emit(supervise_event_fn ev, void *ctx, ctl_event e, const char *fmt, ...);

/* Returns a supervisor that drives st, or NULL when out of memory. */
supervise *supervise_new(uv_loop_t *loop, state *st, supervise_event_fn ev, void *ctx);

/* Adds an app and starts its workers. Returns 0, or -1 with a message in err. */
int supervise_add_app(supervise *sv, const supervise_app_spec *spec, char *err, size_t errcap);

/*
 * Gives app spec->app new settings (everything in spec but lg; instances
 * too) and replaces its workers one at a time, each once its replacement
 * is ready, like a reload: replacements run the new settings. The old
 * listening socket, when spec's is another and the app owned it, is closed
 * once the settings are swapped (running workers hold their own copy);
 * likewise a group: when spec's group is another, each slot takes a socket
 * of the new one (or none: listen_fd) for its next processes, and the old
 * group, when owned, is freed (its sockets live on in the workers that
 * have them as fd 3, until they end). Refused while a slot's socket
 * drains (a scale-down) and the group changes.
 * Returns 0 with what it started in msg (spec's listen_fd and group are
 * then the app's), or -1 with why not (nothing changed: the caller keeps
 * the fd and the group).
 */
int supervise_update_app(supervise *sv, const supervise_app_spec *spec, char *msg, size_t cap);

/*
 * Changes how app name's log files are written (logs_stream_format), for
 * every worker, from the next line on; no worker is touched. Returns 0, or
 * -1 with why not in msg.
 */
int supervise_app_logs(supervise *sv, const char *name, bool timestamps, bool json, uint64_t max_size,
                       unsigned keep, char *msg, size_t cap);

/*
 * Stops app name's workers gracefully (stop_signal, SIGKILL after its
 * kill_timeout) and removes the app once the last one is reaped. Returns 0,
 * or -1 with why not in msg.
 */
int supervise_remove_app(supervise *sv, const char *name, char *msg, size_t cap);

/*
 * What `drover describe` shows of app name as a JSON object (new
 * reference): command, cwd, user, listen, readiness (mode and learned),
 * limits, restart policy, stop signal, env keys (values too when
 * with_values), and its last events. NULL when there is no such app.
 */
json_t *supervise_describe(const supervise *sv, const char *name, bool with_values);

/* Reaps exited children (call on SIGCHLD) and acts on each exit. */
void supervise_reap(supervise *sv);

/* A worker's process said it is ready (hooked to state_set_ready_hook). */
void supervise_on_ready(supervise *sv, uint32_t key, pid_t pid);

/* Periodic checks, once per interval (e.g. --max-memory). */
void supervise_tick(supervise *sv);

/*
 * Commands. Each returns 0 when accepted, or -1; either way msg gets one
 * line saying what happened or why not. app NULL means every app; id -1
 * means every worker of the app.
 */
int supervise_kill(supervise *sv, const char *app, int id, char *msg, size_t cap);
int supervise_restart(supervise *sv, const char *app, int id, char *msg, size_t cap);
int supervise_reload(supervise *sv, const char *app, char *msg, size_t cap);

/*
 * A reload of every app for SIGHUP: an app whose reload (or replacement)
 * is running gets one more reload once it is done, however many SIGHUPs
 * came meanwhile (dropped if it is aborted). Returns 0 with a note in msg,
 * or -1 while stopping.
 */
int supervise_reload_soon(supervise *sv, char *msg, size_t cap);
int supervise_scale(supervise *sv, const char *app, int n, char *msg, size_t cap);
int supervise_scale_by(supervise *sv, const char *app, int delta, char *msg, size_t cap);

/*
 * Stops every worker gracefully (SIGTERM, SIGKILL after kill-timeout) and
 * calls done once none is left. Workers are not restarted afterwards.
 */
void supervise_stop_all(supervise *sv, void (*done)(void *ctx), void *ctx);

/* During stop_all: SIGKILL every process still stopping, now. */
void supervise_hurry(supervise *sv);

/* Fills names (up to cap) with the apps' names, in order; returns how many apps there are. */
size_t supervise_apps(const supervise *sv, const char **names, size_t cap);

/*
 * App name's readiness mode ("auto", "notify", "agent", "none") and, for
 * auto, whether it learned that its workers signal readiness; NULL when
 * there is no such app.
 */
const char *supervise_app_ready(const supervise *sv, const char *name, bool *learned);

/* The listening socket app name's workers get, or -1 (none, or no such app). */
int supervise_listen_fd(const supervise *sv, const char *name);

/* App name's reuseport group (a socket per slot), or NULL (none, or no such app). */
lgroup *supervise_listen_group(const supervise *sv, const char *name);

/* True when the supervisor runs an app named name (it may have no worker now). */
bool supervise_has_app(const supervise *sv, const char *name);

/* Number of worker processes alive (started and not yet reaped). */
size_t supervise_alive(const supervise *sv);

/* Workers online, wanted (every app's target) and errored, over every app. */
void supervise_count(const supervise *sv, int *online, int *wanted, int *errored);

/* True while a rolling reload of some app runs (not a single replacement). */
bool supervise_reloading(const supervise *sv);

/* Frees the supervisor; call after stop_all completed, then run the loop once. */
void supervise_free(supervise *sv);

/*
 * `drover upgrade`: true (with why in msg) while something is in flight
 * that lives only in this image's timers and callbacks: a reload or
 * replacement, a growth, a removal, a slot starting or stopping.
 */
bool supervise_busy(const supervise *sv, char *msg, size_t cap);

/*
 * `drover upgrade`, old image (not busy): every app's slots as they cross
 * the exec (new reference): id, state (online, stopped, errored, backoff),
 * pid, restarts, quick failures, reuseport member, age of the process; and
 * the app's own group (lgroup_save; final as there). NULL with why in err.
 */
json_t *supervise_save(const supervise *sv, bool final, char *err, size_t errcap);

/*
 * `drover upgrade`, new image: before the apps are added, the saved apps
 * (validated); supervise_add_app of a saved app takes its workers back
 * (same pids, ids, sockets, counts; online) instead of starting new ones.
 * supervise_resume_end after the last app was added stops the workers of
 * saved apps that were not added again.
 */
void supervise_resume(supervise *sv, json_t *apps);
void supervise_resume_end(supervise *sv);

#endif
