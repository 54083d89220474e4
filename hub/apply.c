/*
 * apply.c — a config file made real on a run hub: first start, then each
 * later version applied app by app (see apply.h).
 */
#include "hub/apply.h"
#include "hub/hub.h"
#include "hub/lgroup.h"
#include "hub/listen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void apply_app_settings(const config_app *a, supervise_app_spec *spec)
{
    static const supervise_restart_policy restart[] = {
        [CONFIG_RESTART_ALWAYS] = SUPERVISE_RESTART_ALWAYS, [CONFIG_RESTART_ON_FAILURE] = SUPERVISE_RESTART_ON_FAILURE,
        [CONFIG_RESTART_NEVER] = SUPERVISE_RESTART_NEVER};
    static const supervise_ready_mode ready[] = {
        [CONFIG_READY_AUTO] = SUPERVISE_READY_AUTO, [CONFIG_READY_NOTIFY] = SUPERVISE_READY_NOTIFY,
        [CONFIG_READY_AGENT] = SUPERVISE_READY_AGENT, [CONFIG_READY_NONE] = SUPERVISE_READY_NONE};
    spec->cwd = a->cwd;
    spec->set_ids = a->set_ids;
    spec->uid = a->uid;
    spec->gid = a->gid;
    spec->groups = a->groups;
    spec->ngroups = a->ngroups;
    spec->user = a->user;
    spec->restart = restart[a->restart];
    spec->ready = ready[a->ready];
    spec->stop_signal = a->stop_signal;
}

/* True when app a's listen is a reuseport group: a TCP address of its own in that mode. */
static bool apply_grouped(const config_app *a)
{
    return a->listen && config_app_balance(a) == CONFIG_BALANCE_REUSEPORT && lgroup_applies(a->listen) &&
           !listen_inherited_for(a->listen);
}

/*
 * Opens app a's listen: a reuseport group into *group, or one shared
 * socket into *fd (the other -1 / NULL; both when a has no listen).
 * balance = reuseport where no group can be made is said on stderr, as
 * `drover run --balance reuseport` does. Returns 0, or -1 with err.
 */
static int apply_open(const hub_apply *ap, const config_app *a, int *fd, lgroup **group, char *err, size_t cap)
{
    *fd = -1;
    *group = NULL;
    if (!a->listen)
        return 0;
    bool grouped = apply_grouped(a);
    /* After `drover upgrade`, the app keeps the kind of socket it had (a
     * binary of before balance = was all shared; the file may have changed):
     * the other kind could not be bound beside it. */
    if (grouped ? listen_handed_for(a->listen) : lgroup_handed_for(a->listen)) {
        fprintf(stderr, "drover: %s: keeps the %s it had before the upgrade on %s; balance = %s takes effect "
                "when its listen changes or it is started again\n", a->name,
                grouped ? "shared socket" : "reuseport group", a->listen, grouped ? "reuseport" : "shared");
        grouped = !grouped;
    } else if (!grouped && config_app_balance(a) == CONFIG_BALANCE_REUSEPORT) {
        if (!lgroup_applies(a->listen))
            fprintf(stderr, "drover: %s: balance = reuseport is for TCP addresses; every worker shares %s\n",
                    a->name, a->listen);
        else
            fprintf(stderr, "drover: %s: %s is a socket systemd passed (LISTEN_FDS), which cannot be a reuseport "
                    "group; every worker shares it\n", a->name, a->listen);
    }
    if (grouped) {
        *group = lgroup_open(ap->loop, a->listen, err, cap);
        return *group ? 0 : -1;
    }
    *fd = listen_open(a->listen, err, cap);
    return *fd >= 0 ? 0 : -1;
}

/* Closes what apply_open opened (not taken by the supervisor). */
static void apply_close(int fd, lgroup *group)
{
    if (fd >= 0)
        close(fd);
    lgroup_free(group);
}

/* The supervisor's settings for app a of cfg; env (config_env), listen_fd and group given. */
static supervise_app_spec apply_spec(const hub_apply *ap, const config *cfg, const config_app *a, char **env,
                                     int listen_fd, lgroup *group)
{
    config_logs lo = config_app_logs(cfg, a);
    supervise_app_spec spec = {
        .app = a->name, .path = a->path, .argv = a->argv, .instances = a->instances,
        .listen_fd = listen_fd, .group = group, .listen_name = a->name, .listen_spec = a->listen,
        .node_agent = ap->node_agent && hub_is_node(a->argv[0]) ? ap->node_agent : NULL,
        .kill_timeout_ms = a->kill_timeout_ms, .ready_timeout_ms = a->ready_timeout_ms,
        .max_memory = a->max_memory, .agent_socket = ap->agent_socket, .interval_ms = ap->interval_ms,
        .lg = ap->lg, .env = env, .own_listen = true,
        .log_set = true, .log_timestamps = lo.timestamps, .log_json = lo.json, .log_max_size = lo.max_size,
        .log_keep = lo.keep,
    };
    apply_app_settings(a, &spec);
    return spec;
}

/* Starts app a of a config on the supervisor with listen_fd or group (taken). Returns 0, or -1 with err. */
static int apply_add(hub_apply *ap, const config *cfg, const config_app *a, int listen_fd, lgroup *group,
                     char *err, size_t errcap)
{
    char **env = config_env(a);
    if (!env) {
        snprintf(err, errcap, "%s: out of memory", a->name);
        apply_close(listen_fd, group);
        return -1;
    }
    supervise_app_spec spec = apply_spec(ap, cfg, a, env, listen_fd, group);
    int rc = supervise_add_app(ap->sv, &spec, err, errcap);
    config_env_free(env);
    if (rc != 0)
        apply_close(listen_fd, group);
    if (rc == 0)   /* its reload counters at 0 from now on, and its max_memory */
        prom_add_app(ap->prom, a->name, a->max_memory);
    return rc;
}

int apply_start(hub_apply *ap, config *cfg, char *err, size_t errcap)
{
    ap->cur = *cfg;
    ap->have = true;
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < ap->cur.napps; i++) {
        const config_app *a = &ap->cur.apps[i];
        int fd;
        lgroup *group;
        if (apply_open(ap, a, &fd, &group, err, errcap) != 0)
            return -1;
        if (apply_add(ap, &ap->cur, a, fd, group, err, errcap) != 0)
            return -1;
    }
    return 0;
}

/* Appends one change to changes (when not NULL). */
static void apply_note(json_t *changes, const char *app, const char *action, const char *keys, const char *msg)
{
    if (changes)
        json_array_append_new(changes, json_pack("{s:s, s:s, s:s?, s:s}", "app", app, "action", action, "keys",
                                                 keys && *keys ? keys : NULL, "msg", msg));
}

int apply_file(hub_apply *ap, const char *file, json_t *changes, json_t *reloading, char *msg, size_t cap)
{
    config nc;
    char err[1024];
    if (config_load(file, &nc, err, sizeof err) != 0) {
        snprintf(msg, cap, "%s; nothing was changed", err);
        return -1;
    }
    /* Every socket first: one that cannot be opened changes nothing. A new
     * app, or a changed listen, gets a new one (or group); an unchanged
     * listen keeps the app's (-2 here: the supervisor's fd or group is
     * kept). */
    int *fds = calloc(nc.napps ? nc.napps : 1, sizeof *fds);
    lgroup **groups = calloc(nc.napps ? nc.napps : 1, sizeof *groups);
    if (!fds || !groups) {
        free(fds);
        free(groups);
        config_free(&nc);
        snprintf(msg, cap, "out of memory; nothing was changed");
        return -1;
    }
    size_t opened = 0;
    for (; opened < nc.napps; opened++) {
        const config_app *a = &nc.apps[opened];
        const config_app *old = ap->have ? config_find(&ap->cur, a->name) : NULL;
        fds[opened] = -1;
        if (old && ((!old->listen && !a->listen) || (old->listen && a->listen && strcmp(old->listen, a->listen) == 0))) {
            fds[opened] = -2;
            bool running = supervise_listen_group(ap->sv, a->name) != NULL;
            if (!old->not_running && apply_grouped(old) != apply_grouped(a) && running != apply_grouped(a)) {
                /* the running app's socket(s) hold the address: a socket of
                 * the other kind could not be bound beside them (a file that
                 * asks for the kind the app has after an upgrade is fine) */
                snprintf(err, sizeof err, "app %s: balance cannot change from %s to %s while listen stays %s; "
                         "change listen with it, or remove the app, apply, and add it back", a->name,
                         running ? "reuseport" : "shared", apply_grouped(a) ? "reuseport" : "shared", a->listen);
                break;
            }
        } else if (apply_open(ap, a, &fds[opened], &groups[opened], err, sizeof err) != 0) {
            break;
        }
    }
    if (opened < nc.napps) {
        for (size_t i = 0; i < opened; i++)
            if (fds[i] != -2)
                apply_close(fds[i], groups[i]);
        free(fds);
        free(groups);
        snprintf(msg, cap, "%s:%d: %s; nothing was changed", nc.file, nc.apps[opened].line, err);
        config_free(&nc);
        return -1;
    }

    int failed = 0, started = 0, stopped = 0, reloaded = 0, scaled = 0, same = 0, logged = 0;
    char line[1100], keys[256];
    for (size_t i = 0; i < nc.napps; i++) {
        config_app *a = &nc.apps[i];
        const config_app *old = ap->have ? config_find(&ap->cur, a->name) : NULL;
        if (old && old->not_running) {
            old = NULL;   /* it could not be started last time: start it now */
            if (fds[i] == -2 && apply_open(ap, a, &fds[i], &groups[i], err, sizeof err) != 0)
                fds[i] = -3;   /* "its socket, unchanged": it has none yet */
        }
        if (!old) {
            int rc = fds[i] == -3 ? -1 : apply_add(ap, &nc, a, fds[i], groups[i], err, sizeof err);
            if (rc != 0) {
                snprintf(line, sizeof line, "%s", err);
                apply_note(changes, a->name, "start", NULL, line);
                a->not_running = true;
                failed++;
            } else {
                snprintf(line, sizeof line, "started: %d workers", a->instances);
                apply_note(changes, a->name, "start", NULL, line);
                started++;
            }
            continue;
        }
        if (config_app_diff(old, a, keys, sizeof keys) > 0) {
            char **env = config_env(a);
            int fd = fds[i];
            lgroup *group = groups[i];
            if (fd == -2) {   /* the running app's socket or group, unchanged */
                fd = supervise_listen_fd(ap->sv, a->name);
                group = supervise_listen_group(ap->sv, a->name);
            }
            supervise_app_spec spec = apply_spec(ap, &nc, a, env, fd, group);
            int rc = env ? supervise_update_app(ap->sv, &spec, line, sizeof line) : -1;
            if (!env)
                snprintf(line, sizeof line, "out of memory");
            config_env_free(env);
            if (rc != 0 && fds[i] != -2)
                apply_close(fds[i], groups[i]);
            if (rc != 0) {
                /* The supervisor kept the old settings: so does the record of
                 * what is applied, or the same file applied again would find
                 * the app "unchanged" and never retry. The failed version goes
                 * with the old config below. */
                config_app *kept = &ap->cur.apps[old - ap->cur.apps], t = *a;
                *a = *kept;
                *kept = t;
                size_t len = strlen(line);
                snprintf(line + len, sizeof line - len, "; its old settings are kept (applying the file again retries)");
            }
            apply_note(changes, a->name, "reload", keys, line);
            if (rc != 0) {
                failed++;
            } else {
                prom_set_max_memory(ap->prom, a->name, a->max_memory);
                reloaded++;
                if (reloading)
                    json_array_append_new(reloading, json_string(a->name));
            }
            continue;
        }
        config_logs lo = config_app_logs(&ap->cur, old), ln = config_app_logs(&nc, a);
        bool logs_changed = lo.timestamps != ln.timestamps || lo.json != ln.json || lo.max_size != ln.max_size ||
                            lo.keep != ln.keep;
        if (logs_changed) {
            int rc = supervise_app_logs(ap->sv, a->name, ln.timestamps, ln.json, ln.max_size, ln.keep, line,
                                        sizeof line);
            apply_note(changes, a->name, "logs", "log keys", line);
            rc ? failed++ : logged++;
        }
        if (old->instances != a->instances) {
            int rc = supervise_scale(ap->sv, a->name, a->instances, line, sizeof line);
            apply_note(changes, a->name, "scale", "instances", line);
            rc ? failed++ : scaled++;
            continue;
        }
        if (!logs_changed) {
            apply_note(changes, a->name, "unchanged", NULL, "unchanged");
            same++;
        }
    }
    for (size_t i = 0; ap->have && i < ap->cur.napps; i++) {
        const config_app *old = &ap->cur.apps[i];
        if (config_find(&nc, old->name) || old->not_running)
            continue;
        int rc = supervise_remove_app(ap->sv, old->name, line, sizeof line);
        if (rc == 0)
            prom_remove_app(ap->prom, old->name);
        apply_note(changes, old->name, "stop", NULL, line);
        rc ? failed++ : stopped++;
    }
    /* [hub] namespace, interval, log_dir and metrics shape the hub itself:
     * they take effect when it starts, which the report says (metrics is
     * not rebound live: the listener belongs to hub.c, and a port that
     * cannot be bound would then fail half-way). (Its other log keys are
     * every app's defaults: applied above, app by app.) */
    if (ap->have) {
        const config *o = &ap->cur;
        struct { const char *name; bool same; } hk[] = {
            {"namespace", strcmp(o->ns, nc.ns) == 0}, {"interval", o->interval_ms == nc.interval_ms},
            {"log_dir", (!o->log_dir && !nc.log_dir) || (o->log_dir && nc.log_dir && strcmp(o->log_dir, nc.log_dir) == 0)},
            {"metrics", (!o->metrics && !nc.metrics) || (o->metrics && nc.metrics && strcmp(o->metrics, nc.metrics) == 0)},
        };
        keys[0] = '\0';
        for (size_t i = 0; i < sizeof hk / sizeof hk[0]; i++)
            if (!hk[i].same)
                snprintf(keys + strlen(keys), sizeof keys - strlen(keys), "%s%s", keys[0] ? ", " : "", hk[i].name);
        if (keys[0])
            apply_note(changes, "[hub]", "later", keys, "[hub] keys take effect when the hub is started again");
    }
    free(fds);
    free(groups);
    config_free(&ap->cur);
    ap->cur = nc;
    ap->have = true;
    char extra[64] = "";
    if (logged)
        snprintf(extra, sizeof extra, ", %d with new log settings", logged);
    if (failed)
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), ", %d failed", failed);
    snprintf(msg, cap, "applied %s: %d started, %d stopped, %d reloading, %d scaled, %d unchanged%s", ap->cur.file,
             started, stopped, reloaded, scaled, same, extra);
    return failed ? 1 : 0;
}

void apply_free(hub_apply *ap)
{
    if (ap->have)
        config_free(&ap->cur);
    ap->have = false;
}
