/*
 * control.c — the control protocol's one definition: the command table, the
 * target and request parsers, the line framing and the events.
 */
#include "proto/control.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- commands ------------------------------------------------------------ */

const ctl_command ctl_commands[CTL_CMD_N] = {
    [CTL_LS] = {CTL_LS, "ls", CTL_TARGET_NONE, 0, CTL_HUB_ANY, false, false, false,
                "ls [--json] [--sort COL]", "list the workers of the running hub", ""},
    [CTL_SUBSCRIBE] = {CTL_SUBSCRIBE, "subscribe", CTL_TARGET_NONE, CTL_ARG_LEAN, CTL_HUB_ANY, false, false, false,
                       "", "the state now (with history) and every interval, and events; lean: without what repeats",
                       ""},
    [CTL_UNSUBSCRIBE] = {CTL_UNSUBSCRIBE, "unsubscribe", CTL_TARGET_NONE, 0, CTL_HUB_ANY, false, false,
                         false, "", "stop pushing state, events and log lines", ""},
    [CTL_LOGS] = {CTL_LOGS, "logs", CTL_TARGET_OPTIONAL, CTL_ARG_LINES | CTL_ARG_FOLLOW, CTL_HUB_ANY,
                  true, false, false, "logs [APP[:ID|:pid:PID]] [-n LINES] [-f]",
                  "print captured output (-n lines, default 20); -f follows", ""},
    [CTL_STREAM] = {CTL_STREAM, "stream", CTL_TARGET_NONE, CTL_ARG_FORMAT, CTL_HUB_ANY, false, false, false,
                    "", "every interval, the headless output (ndjson or prom) as the hub prints it", ""},
    [CTL_KILL] = {CTL_KILL, "kill", CTL_TARGET_REQUIRED, 0, CTL_HUB_RUN | CTL_HUB_ATTACH, true, true, true,
                  "kill APP[:ID|:pid:PID]", "stop a worker (or an app's) for good: SIGTERM, SIGKILL after --kill-timeout; "
                  "a process drover did not start (APP:pid:PID): SIGTERM, once",
                  "x F9"},
    [CTL_RESTART] = {CTL_RESTART, "restart", CTL_TARGET_REQUIRED, 0, CTL_HUB_RUN | CTL_HUB_ATTACH, true, true,
                     false, "restart APP[:ID|:pid:PID]", "stop and start again a worker (or every worker of an app)", "r"},
    [CTL_RELOAD] = {CTL_RELOAD, "reload", CTL_TARGET_OPTIONAL, 0, CTL_HUB_RUN | CTL_HUB_ATTACH, true, true,
                    false, "reload [APP]",
                    "replace an app's workers one at a time, each once its replacement is ready; "
                    "waits and prints the progress (exit 1 if aborted)", "R"},
    [CTL_STOP] = {CTL_STOP, "stop", CTL_TARGET_OPTIONAL, 0, CTL_HUB_ANY, true, true, false,
                  "stop [APP[:ID|:pid:PID]]", "without a target: stop every worker, then the hub; with one: as kill", ""},
    [CTL_SCALE] = {CTL_SCALE, "scale", CTL_TARGET_APP, CTL_ARG_N | CTL_ARG_DELTA, CTL_HUB_RUN | CTL_HUB_ATTACH,
                   true, true, false, "scale APP N",
                   "run N workers of APP (0..1024; attached: by the master's scale signals)", "+ -"},
    [CTL_APPLY] = {CTL_APPLY, "apply", CTL_TARGET_NONE, CTL_ARG_FILE, CTL_HUB_RUN, false, true, false,
                   "up [-f FILE]", "apply a config file to the running hub: start, stop, reload, scale apps", ""},
    [CTL_DESCRIBE] = {CTL_DESCRIBE, "describe", CTL_TARGET_APP, CTL_ARG_ENV, CTL_HUB_RUN | CTL_HUB_ATTACH, true,
                      false, false,
                      "describe APP [--env]",
                      "an app's settings, readiness, env keys (values with --env) and last events", "i"},
    [CTL_UPGRADE] = {CTL_UPGRADE, "upgrade", CTL_TARGET_NONE, 0, CTL_HUB_ANY, true, false, false, "upgrade",
                     "re-execute the hub from the drover binary now at its path, in place: same pid, "
                     "workers, sockets and logs kept; waits for the new hub (exit 1 if refused or rolled back)",
                     ""},
};

const ctl_command *ctl_command_find(const char *name)
{
    if (!name)
        return NULL;
    for (int i = 0; i < CTL_CMD_N; i++)
        if (strcmp(ctl_commands[i].name, name) == 0)
            return &ctl_commands[i];
    return NULL;
}

static const char *const ctl_hub_names[] = {"monit", "run", "attach"};

unsigned ctl_hub_kind(const char *mode)
{
    for (unsigned i = 0; mode && i < 3; i++)
        if (strcmp(mode, ctl_hub_names[i]) == 0)
            return 1u << i;
    return 0;
}

const char *ctl_hub_name(unsigned kind)
{
    for (unsigned i = 0; i < 3; i++)
        if (kind == 1u << i)
            return ctl_hub_names[i];
    return "?";
}

static const char *const ctl_format_names[] = {[CTL_FORMAT_NDJSON] = "ndjson", [CTL_FORMAT_PROM] = "prom"};

const char *ctl_format_name(ctl_format f)
{
    return ctl_format_names[f == CTL_FORMAT_PROM];
}

int ctl_format_parse(const char *name, ctl_format *out)
{
    for (int i = 0; name && i < 2; i++)
        if (strcmp(ctl_format_names[i], name) == 0) {
            *out = (ctl_format)i;
            return 0;
        }
    return -1;
}

/* ---- targets ------------------------------------------------------------- */

int ctl_target_parse(const char *s, ctl_target *t, char *err, size_t errcap)
{
    t->app[0] = '\0';
    t->id = -1;
    t->pid = 0;
    const char *colon = strrchr(s, ':');
    size_t n = colon ? (size_t)(colon - s) : strlen(s);
    if (colon) {
        char *end;
        errno = 0;
        long v = strtol(colon + 1, &end, 10);
        bool by_pid = n >= 4 && memcmp(colon - 4, ":pid", 4) == 0;
        if (colon[1] < '0' || colon[1] > '9' || *end || errno || v < 0 ||
            v > (by_pid ? CTL_PID_MAX : CTL_ID_MAX) || (by_pid && v == 0))
            goto bad;
        if (by_pid) {
            t->pid = (int)v;
            n -= 4;
        } else {
            t->id = (int)v;
        }
    }
    if (n == 0 || n >= sizeof t->app)
        goto bad;
    memcpy(t->app, s, n);
    t->app[n] = '\0';
    return 0;
bad:
    snprintf(err, errcap, "bad target '%.100s': use APP, APP:ID or APP:pid:PID", s);
    t->app[0] = '\0';
    t->id = -1;
    t->pid = 0;
    return -1;
}

const char *ctl_target_format(const char *app, long long id, long long pid, char *out, size_t cap)
{
    if (id >= 0)
        snprintf(out, cap, "%s:%lld", app, id);
    else if (pid > 0)
        snprintf(out, cap, "%s:pid:%lld", app, pid);
    else
        snprintf(out, cap, "%s", app);
    return out;
}

/* ---- app names ------------------------------------------------------------- */

/* True for a byte an app name may hold anywhere. */
static bool ctl_name_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

bool ctl_app_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n >= CTL_APP_MAX || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!ctl_name_byte(name[i]))
            return false;
    return true;
}

void ctl_app_name_make(const char *from, char *out, size_t cap)
{
    size_t n = 0;
    if (cap == 0)
        return;
    for (const char *p = from ? from : ""; *p && n + 1 < cap && n + 1 < CTL_APP_MAX; p++) {
        if (n == 0 && (*p == '.' || *p == '-'))
            continue;
        out[n++] = ctl_name_byte(*p) ? *p : '_';
    }
    out[n] = '\0';
    if (n == 0)
        snprintf(out, cap, "app");
}

/* ---- requests ------------------------------------------------------------ */

/* Reads key as an integer within [lo, hi] (64-bit, before narrowing). */
static int ctl_int_arg(const json_t *req, const char *key, long lo, long hi, long *out, char *err,
                       size_t errcap)
{
    json_t *v = json_object_get(req, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errcap, "\"%s\" must be an integer from %ld to %ld", key, lo, hi);
        return -1;
    }
    *out = (long)json_integer_value(v);
    return 0;
}

int ctl_request_parse(const json_t *req, ctl_request *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    out->target.id = -1;
    out->lines = 100;
    json_t *cmdv = json_object_get(req, "cmd");
    if (!json_is_string(cmdv)) {
        snprintf(err, errcap, "missing \"cmd\"");
        return -1;
    }
    const ctl_command *c = ctl_command_find(json_string_value(cmdv));
    if (!c) {
        snprintf(err, errcap, "unknown command '%.60s'", json_string_value(cmdv));
        return -1;
    }
    out->cmd = c;

    json_t *tv = json_object_get(req, "target");
    const char *t = json_string_value(tv);
    if (tv && !json_is_null(tv) && !json_is_string(tv)) {
        snprintf(err, errcap, "\"target\" must be a string");
        return -1;
    }
    if (t && *t) {
        if (c->target == CTL_TARGET_NONE) {
            snprintf(err, errcap, "%s takes no target", c->name);
            return -1;
        }
        if (ctl_target_parse(t, &out->target, err, errcap) != 0)
            return -1;
        if (c->target == CTL_TARGET_APP && (out->target.id >= 0 || out->target.pid > 0)) {
            snprintf(err, errcap, "%s takes an app, not a worker ('%.100s')", c->name, t);
            return -1;
        }
    } else if (c->target == CTL_TARGET_REQUIRED || c->target == CTL_TARGET_APP) {
        snprintf(err, errcap, "%s needs a target: %s", c->name, c->usage);
        return -1;
    }

    /* Arguments: each must be one this command takes, of its type and range. */
    static const struct { const char *key; unsigned bit; } known[] = {
        {"lines", CTL_ARG_LINES}, {"follow", CTL_ARG_FOLLOW}, {"n", CTL_ARG_N}, {"delta", CTL_ARG_DELTA},
        {"format", CTL_ARG_FORMAT}, {"file", CTL_ARG_FILE}, {"env", CTL_ARG_ENV},
        {"lean", CTL_ARG_LEAN},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        json_t *v = json_object_get(req, known[i].key);
        if (!v)
            continue;
        if (!(c->args & known[i].bit)) {
            snprintf(err, errcap, "%s takes no \"%s\"", c->name, known[i].key);
            return -1;
        }
        int rc = 0;
        switch (known[i].bit) {
        case CTL_ARG_LINES: rc = ctl_int_arg(req, "lines", 0, CTL_LINES_MAX, &out->lines, err, errcap); break;
        case CTL_ARG_N:
            rc = ctl_int_arg(req, "n", 0, CTL_SCALE_MAX, &out->n, err, errcap);
            out->has_n = rc == 0;
            break;
        case CTL_ARG_DELTA:
            rc = ctl_int_arg(req, "delta", -CTL_SCALE_MAX, CTL_SCALE_MAX, &out->delta, err, errcap);
            out->has_delta = rc == 0;
            break;
        case CTL_ARG_FORMAT:
            if (ctl_format_parse(json_string_value(v), &out->format) != 0) {
                snprintf(err, errcap, "\"format\" must be \"ndjson\" or \"prom\"");
                rc = -1;
            }
            break;
        case CTL_ARG_FILE: {
            const char *f = json_string_value(v);
            size_t n = f ? strlen(f) : 0;
            if (!f || f[0] != '/' || n >= CTL_FILE_MAX || n != json_string_length(v)) {
                snprintf(err, errcap, "\"file\" must be an absolute path shorter than %d bytes", CTL_FILE_MAX);
                rc = -1;
                break;
            }
            memcpy(out->file, f, n + 1);
            break;
        }
        case CTL_ARG_ENV:
            if (!json_is_boolean(v)) {
                snprintf(err, errcap, "\"env\" must be true or false");
                rc = -1;
            }
            out->env = json_is_true(v);
            break;
        case CTL_ARG_LEAN:
            if (!json_is_boolean(v)) {
                snprintf(err, errcap, "\"lean\" must be true or false");
                rc = -1;
            }
            out->lean = json_is_true(v);
            break;
        case CTL_ARG_FOLLOW:
            if (!json_is_boolean(v)) {
                snprintf(err, errcap, "\"follow\" must be true or false");
                rc = -1;
            }
            out->follow = json_is_true(v);
            break;
        }
        if (rc != 0)
            return -1;
    }
    if ((c->args & CTL_ARG_FILE) && !out->file[0]) {
        snprintf(err, errcap, "%s needs \"file\": the config file's absolute path", c->name);
        return -1;
    }
    if (c->cmd == CTL_SCALE && out->has_n == out->has_delta) {
        snprintf(err, errcap, "scale needs either \"n\" (workers) or \"delta\" (more or fewer)");
        return -1;
    }
    return 0;
}

json_t *ctl_request_json(const ctl_request *r)
{
    json_t *req = json_pack("{s:s}", "cmd", r->cmd->name);
    if (!req)
        return NULL;
    if (r->target.app[0]) {
        char t[CTL_APP_MAX + 32];
        json_object_set_new(req, "target",
                            json_string(ctl_target_format(r->target.app, r->target.id, r->target.pid, t, sizeof t)));
    }
    if (r->cmd->args & CTL_ARG_LINES)
        json_object_set_new(req, "lines", json_integer(r->lines));
    if (r->cmd->args & CTL_ARG_FOLLOW)
        json_object_set_new(req, "follow", json_boolean(r->follow));
    if (r->cmd->args & CTL_ARG_FORMAT)
        json_object_set_new(req, "format", json_string(ctl_format_name(r->format)));
    if ((r->cmd->args & CTL_ARG_FILE) && r->file[0])
        json_object_set_new(req, "file", json_string(r->file));
    if ((r->cmd->args & CTL_ARG_ENV) && r->env)
        json_object_set_new(req, "env", json_true());
    if ((r->cmd->args & CTL_ARG_LEAN) && r->lean)
        json_object_set_new(req, "lean", json_true());
    if (r->has_n)
        json_object_set_new(req, "n", json_integer(r->n));
    if (r->has_delta)
        json_object_set_new(req, "delta", json_integer(r->delta));
    return req;
}

ctl_request ctl_request_make(ctl_cmd cmd, const char *target)
{
    ctl_request r = {.cmd = &ctl_commands[cmd], .target = {.id = -1}, .lines = 100};
    if (target && *target) {
        char err[160];
        if (ctl_target_parse(target, &r.target, err, sizeof err) != 0) {
            /* Sent as given: the hub answers with the same "bad target" line. */
            snprintf(r.target.app, sizeof r.target.app, "%s", target);
        }
    }
    return r;
}

/* ---- line framing --------------------------------------------------------- */

int ctl_framer_feed(ctl_framer *f, const char *data, size_t n, ctl_line_fn fn, void *ctx)
{
    size_t max = f->max ? f->max : CTL_LINE_MAX;
    const char *start = data;
    f->used = 0;
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t take = nl ? (size_t)(nl - data) : n;
        if (f->len + take > max)
            return -1;
        if (f->len + take + 1 > f->cap) {
            size_t nc = f->cap ? f->cap : 256;
            while (nc < f->len + take + 1)
                nc *= 2;
            char *nb = realloc(f->buf, nc);
            if (!nb)
                return -1;
            f->buf = nb;
            f->cap = nc;
        }
        memcpy(f->buf + f->len, data, take);
        f->len += take;
        data += take;
        n -= take;
        if (!nl)
            break;
        data++;   /* the '\n' */
        n--;
        f->buf[f->len] = '\0';
        size_t len = f->len;
        f->len = 0;
        if (len && !fn(ctx, f->buf, len)) {
            f->used = (size_t)(data - start);
            return 1;
        }
    }
    f->used = (size_t)(data - start);
    return 0;
}

void ctl_framer_free(ctl_framer *f)
{
    free(f->buf);
    f->buf = NULL;
    f->len = f->cap = 0;
}

char *ctl_line(json_t *obj, size_t *len)
{
    if (!obj)
        return NULL;
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(obj);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return NULL;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    *len = n + 1;
    return line;
}

/* ---- events --------------------------------------------------------------- */

static const char *const ctl_event_names[CTL_EV_N] = {
    [CTL_EV_RELOAD] = "reload", [CTL_EV_REPLACE] = "replace", [CTL_EV_EXIT] = "exit",
    [CTL_EV_KILL] = "kill", [CTL_EV_SCALE] = "scale", [CTL_EV_READY] = "ready",
    [CTL_EV_ERROR] = "error", [CTL_EV_APPLY] = "apply", [CTL_EV_UPGRADE] = "upgrade",
};

static const char *const ctl_phase_names[CTL_PHASE_N] = {
    [CTL_PHASE_NONE] = "none", [CTL_PHASE_STARTED] = "started", [CTL_PHASE_PROGRESS] = "progress",
    [CTL_PHASE_DONE] = "done", [CTL_PHASE_ABORTED] = "aborted",
};

const char *ctl_event_kind_name(ctl_event_kind kind)
{
    return (unsigned)kind < CTL_EV_N ? ctl_event_names[kind] : "?";
}

ctl_event ctl_event_make(ctl_event_kind kind, ctl_phase phase, const char *app, int id, long pid)
{
    return (ctl_event){.kind = kind, .phase = phase, .app = app, .id = id, .pid = pid,
                       .done = -1, .total = -1};
}

json_t *ctl_event_json(const ctl_event *e)
{
    json_t *o = json_pack("{s:s, s:s, s:s}", "type", "event", "event", ctl_event_names[e->kind],
                          "phase", ctl_phase_names[e->phase]);
    if (!o)
        return NULL;
    json_object_set_new(o, "app", e->app ? json_string(e->app) : json_null());
    json_object_set_new(o, "id", e->id >= 0 ? json_integer(e->id) : json_null());
    json_object_set_new(o, "pid", e->pid > 0 ? json_integer(e->pid) : json_null());
    if (e->done >= 0)
        json_object_set_new(o, "done", json_integer(e->done));
    if (e->total >= 0)
        json_object_set_new(o, "total", json_integer(e->total));
    json_object_set_new(o, "reason", e->reason ? json_string(e->reason) : json_null());
    json_object_set_new(o, "text", json_string(e->text ? e->text : ""));
    return o;
}

/* Index of s in names[0..n), or -1. */
static int ctl_lookup(const char *const *names, int n, const char *s)
{
    for (int i = 0; s && i < n; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return -1;
}

int ctl_event_parse(const json_t *msg, ctl_event *e)
{
    int kind = ctl_lookup(ctl_event_names, CTL_EV_N, json_string_value(json_object_get(msg, "event")));
    int phase = ctl_lookup(ctl_phase_names, CTL_PHASE_N, json_string_value(json_object_get(msg, "phase")));
    if (kind < 0 || phase < 0)
        return -1;
    json_t *id = json_object_get(msg, "id"), *pid = json_object_get(msg, "pid");
    json_t *done = json_object_get(msg, "done"), *total = json_object_get(msg, "total");
    *e = ctl_event_make((ctl_event_kind)kind, (ctl_phase)phase, json_string_value(json_object_get(msg, "app")),
                        json_is_integer(id) && json_integer_value(id) >= 0 && json_integer_value(id) <= CTL_ID_MAX
                            ? (int)json_integer_value(id) : -1,
                        json_is_integer(pid) && json_integer_value(pid) > 0 && json_integer_value(pid) < INT32_MAX
                            ? (long)json_integer_value(pid) : 0);
    if (json_is_integer(done) && json_integer_value(done) >= 0 && json_integer_value(done) <= CTL_ID_MAX)
        e->done = (int)json_integer_value(done);
    if (json_is_integer(total) && json_integer_value(total) >= 0 && json_integer_value(total) <= CTL_ID_MAX)
        e->total = (int)json_integer_value(total);
    e->reason = json_string_value(json_object_get(msg, "reason"));
    e->text = json_string_value(json_object_get(msg, "text"));
    if (!e->text)
        e->text = "";
    return 0;
}

bool ctl_event_ends_reload(const ctl_event *e)
{
    return e->kind == CTL_EV_RELOAD && (e->phase == CTL_PHASE_DONE || e->phase == CTL_PHASE_ABORTED);
}
