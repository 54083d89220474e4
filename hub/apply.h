/*
 * apply.h — a config file (hub/config.h) made real on a run hub: every app
 * started at first, then each later version of the file applied to the
 * running apps (`drover up` beside a running hub, SIGHUP to a hub started
 * from a file).
 *
 * Applying compares app by app with the version applied last: a new app
 * starts; a removed app stops gracefully; an app whose worker-affecting
 * keys changed (config_app_diff, env_file by its contents) gets its new
 * settings and a readiness-gated rolling reload (its listening socket kept
 * when listen is unchanged, a new one opened when it changed); an app whose
 * instances alone changed is scaled; an unchanged app is not touched. A file
 * that does not load, or a listening socket that cannot be opened, changes
 * nothing.
 *
 * Sockets: an app's listen is one socket shared by its workers, or, with
 * balance = reuseport (the default for a TCP address), a reuseport group
 * (hub/lgroup.h) of a socket per slot. Either is opened here and then owned
 * by the supervisor's app (own_listen), which closes it once the app is
 * removed and its last slot is gone, or once a changed listen replaced it
 * (the workers still running keep theirs as fd 3). A TCP address systemd
 * passed (LISTEN_FDS), and unix:/fd:, cannot form a group: they are shared,
 * and the hub says so on stderr when balance asked for reuseport. balance
 * changing while listen stays is refused (both cannot hold the address at
 * once): nothing changes.
 */
#ifndef DROVER_HUB_APPLY_H
#define DROVER_HUB_APPLY_H

#include <jansson.h>
#include <stdbool.h>
#include <uv.h>

#include "hub/config.h"
#include "hub/logs.h"
#include "hub/prom.h"
#include "hub/supervise.h"

typedef struct {
    uv_loop_t  *loop;            /* for the apps' reuseport groups */
    supervise  *sv;
    logs       *lg;
    const char *agent_socket;    /* DROVER_SOCKET / NOTIFY_SOCKET for the workers */
    unsigned    interval_ms;
    const char *node_agent;      /* preloaded into node commands; NULL = none */
    prom       *prom;            /* told each app started, changed or removed (its series); NULL = none */
    config      cur;             /* the version applied last */
    bool        have;            /* cur holds a file */
} hub_apply;

/*
 * Starts every app of cfg (taken over: ap->cur owns it afterwards, also on
 * failure). Returns 0, or -1 with a message in err (a listening socket that
 * cannot be opened, an app the supervisor refuses).
 */
int apply_start(hub_apply *ap, config *cfg, char *err, size_t errcap);

/*
 * Loads file and applies it. Returns 0 when every part was done, 1 when
 * some part failed (the rest was applied; an app whose new settings the
 * supervisor refused keeps its old ones as the applied version, so applying
 * the same file again retries it), -1 when nothing was changed (the
 * file is bad, a socket cannot be opened); msg gets one line either way.
 * changes (may be NULL) gets one object per app: {"app", "action":
 * "start"|"stop"|"reload"|"logs"|"scale"|"unchanged" (an app may have
 * "logs" and "scale" both), "keys": the changed keys,
 * "msg"}, and {"app": "[hub]", "action": "later"} when [hub] keys changed
 * (they take effect when the hub starts); reloading (may be NULL) gets the names of apps being reloaded,
 * whose outcome comes as reload events.
 */
int apply_file(hub_apply *ap, const char *file, json_t *changes, json_t *reloading, char *msg, size_t cap);

/*
 * Sets in spec what app a says beyond `drover run`'s own options: cwd,
 * credentials, restart policy, readiness mode, stop signal, user (env is
 * the caller's: config_env). Pointers borrow from a.
 */
void apply_app_settings(const config_app *a, supervise_app_spec *spec);

/* Frees the applied config (the supervisor's apps are the hub's to stop). */
void apply_free(hub_apply *ap);

#endif
