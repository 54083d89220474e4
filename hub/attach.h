/*
 * attach.h — monitoring a cluster master that drover did not start
 * (`drover attach PID`): its children are the workers, found by PPID each
 * interval so that the master's replacements appear; commands act by signals.
 */
#ifndef DROVER_HUB_ATTACH_H
#define DROVER_HUB_ATTACH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "hub/state.h"
#include "hub/supervise.h"

typedef struct attach attach;

/*
 * Watches master's children as workers of app (ids 0…N-1 in order of
 * appearance; a replacement takes the lowest free id). Events go to ev.
 */
attach *attach_new(uv_loop_t *loop, state *st, pid_t master, const char *app,
                   unsigned kill_timeout_ms, unsigned ready_timeout_ms,
                   supervise_event_fn ev, void *ctx);

/* Feeds one round's list of live children (from the sampler). */
void attach_on_children(attach *at, const pid_t *children, size_t n);

/* A process said it is ready (from the state's ready hook). */
void attach_on_ready(attach *at, pid_t pid);

/*
 * Commands by signal. kill: SIGTERM (SIGKILL after kill-timeout). restart:
 * the same, then wait for the master to fork a replacement (reported if
 * none comes within ready-timeout). reload: restart each child in turn,
 * waiting for its replacement (and for its readiness when the children
 * report it) before the next. id -1 means every child. Return 0 when
 * accepted, -1 otherwise; msg says what happened or why not.
 */
int attach_kill(attach *at, int id, char *msg, size_t cap);
int attach_restart(attach *at, int id, char *msg, size_t cap);
int attach_reload(attach *at, char *msg, size_t cap);

/* The app name its children are shown as. */
const char *attach_app(const attach *at);

/* True when a current child has worker id id. */
bool attach_has_id(const attach *at, int id);

/* Frees it (closes its timer; run the loop afterwards). */
void attach_free(attach *at);

/* True while a restart or reload of the master's children runs (`drover upgrade` waits for its end). */
bool attach_busy(const attach *at);

#endif
