/*
 * apply.c — a config file made real on a run hub: first start, then each
 * later version applied app by app (see apply.h).
 */
#include "hub/apply.h"
#include "hub/hub.h"
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

/* The supervisor's settings for app a of cfg; env (config_env) and listen_fd given. */
static supervise_app_spec apply_spec(const hub_apply *ap, const config *cfg, const config_app *a, char **env,
                                     int listen_fd)
{
    config_logs lo = config_app_logs(cfg, a);
    supervise_app_spec spec = {
        .app = a->name, .path = a->path, .argv = a->argv, .instances = a->instances,
        .listen_fd = listen_fd, .listen_name = a->name, .listen_spec = a->listen,
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

/* Starts app a of a config on the supervisor with listen_fd (taken). Returns 0, or -1 with err. */
static int apply_add(hub_apply *ap, const config *cfg, const config_app *a, int listen_fd, char *err, size_t errcap)
{
    char **env = config_env(a);
    if (!env) {
        snprintf(err, errcap, "%s: out of memory", a->name);
        if (listen_fd >= 0)
            close(listen_fd);
        return -1;
    }
    supervise_app_spec spec = apply_spec(ap, cfg, a, env, listen_fd);
    int rc = supervise_add_app(ap->sv, &spec, err, errcap);
    config_env_free(env);
    if (rc != 0 && listen_fd >= 0)
        close(listen_fd);
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
        int fd = -1;
        if (a->listen && (fd = listen_open(a->listen, err, errcap)) < 0)
            return -1;
        if (apply_add(ap, &ap->cur, a, fd, err, errcap) != 0)
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
     * app, or a changed listen, gets a new one; an unchanged listen keeps
     * the app's (-2 here: the supervisor's fd is kept). */
    int *fds = calloc(nc.napps ? nc.napps : 1, sizeof *fds);
    if (!fds) {
        config_free(&nc);
        snprintf(msg, cap, "out of memory; nothing was changed");
        return -1;
    }
    size_t opened = 0;
    for (; opened < nc.napps; opened++) {
        const config_app *a = &nc.apps[opened];
        const config_app *old = ap->have ? config_find(&ap->cur, a->name) : NULL;
        fds[opened] = -1;
        if (old && ((!old->listen && !a->listen) || (old->listen && a->listen && strcmp(old->listen, a->listen) == 0)))
            fds[opened] = -2;
        else if (a->listen && (fds[opened] = listen_open(a->listen, err, sizeof err)) < 0)
            break;
    }
    if (opened < nc.napps) {
        for (size_t i = 0; i < opened; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        free(fds);
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
            if (fds[i] == -2) {   /* "its socket, unchanged": it has none yet */
                fds[i] = -1;
                if (a->listen && (fds[i] = listen_open(a->listen, err, sizeof err)) < 0)
                    fds[i] = -3;
            }
        }
        if (!old) {
            int rc = fds[i] == -3 ? -1 : apply_add(ap, &nc, a, fds[i], err, sizeof err);
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
            if (fd == -2)   /* the running app's socket, unchanged */
                fd = supervise_listen_fd(ap->sv, a->name);
            supervise_app_spec spec = apply_spec(ap, &nc, a, env, fd);
            int rc = env ? supervise_update_app(ap->sv, &spec, line, sizeof line) : -1;
            if (!env)
                snprintf(line, sizeof line, "out of memory");
            config_env_free(env);
            if (rc != 0 && fds[i] >= 0)
                close(fds[i]);
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
