/*
 * commands.c — the command table shared by the CLI and the console.
 */
#include "commands.h"

#include <string.h>

const command_entry commands_table[] = {
    {"kill", CMD_ARG_TARGET, "kill TARGET",
     "stop a worker (or an app's) for good: SIGTERM, SIGKILL after --kill-timeout", "x F9", true},
    {"restart", CMD_ARG_TARGET, "restart TARGET",
     "stop and start again a worker (or every worker of an app)", "r", false},
    {"reload", CMD_ARG_TARGET_OPT, "reload [APP]",
     "replace an app's workers one at a time, each once its replacement is ready", "R", false},
    {"stop", CMD_ARG_TARGET_OPT, "stop [TARGET]",
     "without a target: stop every worker and the hub; with one: as kill", "", false},
    {"scale", CMD_ARG_TARGET_N, "scale APP N", "run N workers of APP", "+ -", false},
    {NULL, CMD_ARG_NONE, NULL, NULL, NULL, false},
};

const command_entry *commands_find(const char *name)
{
    for (const command_entry *c = commands_table; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

json_t *commands_request(const command_entry *c, const char *target, long n)
{
    json_t *req = json_pack("{s:s}", "cmd", c->name);
    if (target && *target)
        json_object_set_new(req, "target", json_string(target));
    if (n >= 0)
        json_object_set_new(req, "n", json_integer(n));
    return req;
}

json_t *commands_scale_by(const char *app, int delta)
{
    return json_pack("{s:s, s:s, s:i}", "cmd", "scale", "target", app, "delta", delta);
}
