/*
 * agentlog.c — the drover_log lines of processes drover did not start: one
 * fixed ring (see agentlog.h).
 */
#include "hub/agentlog.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/report.h"

typedef struct {
    double  ts;
    logs_fd stream;
    pid_t   pid;
    int     id;
    size_t  len;
    char    app[REPORT_NAME_MAX];
    char    text[AGENTLOG_TEXT];
} agentlog_entry;

struct agentlog {
    agentlog_entry *e;      /* AGENTLOG_LINES, allocated at the first line */
    size_t head, len;       /* next to write; lines kept */
};

agentlog *agentlog_new(void)
{
    return calloc(1, sizeof(agentlog));
}

void agentlog_free(agentlog *a)
{
    if (!a)
        return;
    free(a->e);
    free(a);
}

void agentlog_add(agentlog *a, const char *app, int id, pid_t pid, double ts, logs_fd stream,
                  const char *text, size_t len)
{
    if (!a || (!a->e && !(a->e = calloc(AGENTLOG_LINES, sizeof *a->e))))
        return;
    agentlog_entry *x = &a->e[a->head];
    a->head = (a->head + 1) % AGENTLOG_LINES;
    if (a->len < AGENTLOG_LINES)
        a->len++;
    x->ts = ts;
    x->stream = stream;
    x->pid = pid;
    x->id = id;
    x->len = len < sizeof x->text ? len : sizeof x->text;
    memcpy(x->text, text, x->len);
    snprintf(x->app, sizeof x->app, "%s", app);
}

/* True when entry x is one of app's (NULL: any) and pid's (0: any). */
static bool agentlog_match(const agentlog_entry *x, const char *app, pid_t pid)
{
    return (!app || strcmp(x->app, app) == 0) && (pid <= 0 || x->pid == pid);
}

void agentlog_foreach(const agentlog *a, const char *app, pid_t pid, size_t n,
                      void (*fn)(void *ctx, const logs_line *l), void *ctx)
{
    if (!a || !a->e || n == 0)
        return;
    size_t oldest = (a->head + AGENTLOG_LINES - a->len) % AGENTLOG_LINES, matching = 0;
    for (size_t i = 0; i < a->len; i++)
        matching += agentlog_match(&a->e[(oldest + i) % AGENTLOG_LINES], app, pid);
    size_t skip = matching > n ? matching - n : 0;
    for (size_t i = 0; i < a->len; i++) {
        const agentlog_entry *x = &a->e[(oldest + i) % AGENTLOG_LINES];
        if (!agentlog_match(x, app, pid))
            continue;
        if (skip > 0) {
            skip--;
            continue;
        }
        logs_line l = {.ts = x->ts, .stream = x->stream, .text = x->text, .len = x->len, .app = x->app,
                       .id = x->id, .pid = x->pid};
        fn(ctx, &l);
    }
}
