/*
 * agentlog.h — the drover_log lines of processes drover did not start.
 *
 * drover captures the stdout and stderr of the workers it starts (hub/logs.c);
 * a process that only reports to the hub through its agent (an unsupervised
 * worker, on a monitor-only hub or beside a run hub) has no captured output,
 * but its agent's `drover_log` lines arrive as datagrams. They are kept here:
 * the last AGENTLOG_LINES lines of every such process together, each cut at
 * AGENTLOG_TEXT bytes. The storage is allocated at the first line, so a hub
 * that never gets one pays nothing. Loop thread only.
 */
#ifndef DROVER_HUB_AGENTLOG_H
#define DROVER_HUB_AGENTLOG_H

#include <stddef.h>
#include <sys/types.h>

#include "hub/logs.h"

#define AGENTLOG_LINES 128
#define AGENTLOG_TEXT  512

typedef struct agentlog agentlog;

/* Returns an empty ring, or NULL when out of memory. */
agentlog *agentlog_new(void);

/* Frees the ring. NULL is allowed. */
void agentlog_free(agentlog *a);

/*
 * Keeps one line (len bytes of text, cut at AGENTLOG_TEXT) of process pid of
 * app, shown as worker id (-1: none), read at wall-clock ts; the oldest line
 * goes when the ring is full.
 */
void agentlog_add(agentlog *a, const char *app, int id, pid_t pid, double ts, logs_fd stream,
                  const char *text, size_t len);

/*
 * Calls fn with each of the last n lines of app (NULL: every app) and pid (0:
 * every process), oldest first. The line (with app, id and pid set) is valid
 * during the call only.
 */
void agentlog_foreach(const agentlog *a, const char *app, pid_t pid, size_t n,
                      void (*fn)(void *ctx, const logs_line *l), void *ctx);

#endif
