/*
 * attach.h — monitoring a cluster master that drover did not start
 * (`drover attach PID`): its children are the workers, found by PPID each
 * interval so that the master's replacements appear; commands act by signals,
 * the ones the master's family understands (a profile: one row per server
 * family, chosen by the master's process name, overridable by options).
 */
#ifndef DROVER_HUB_ATTACH_H
#define DROVER_HUB_ATTACH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>
#include <uv.h>

#include "hub/state.h"
#include "hub/supervise.h"

typedef struct attach attach;

/* How a reload replaces the children (--reload). */
typedef enum {
    ATTACH_RELOAD_ONE,      /* drover stops one child at a time, the master forks each replacement */
    ATTACH_RELOAD_MASTER,   /* one signal to the master, which replaces its children itself */
} attach_reload_mode;

/* How to speak to one family of masters: a row of the profile table. */
typedef struct {
    const char        *name;           /* the master's process name it matches; "default" for any other */
    int                kill_signal;    /* to a child: kill, stop, restart (SIGKILL after --kill-timeout) */
    attach_reload_mode reload;
    int                reload_signal;  /* MASTER: to the master; ONE: to each child in turn */
    int                scale_up;       /* to the master, once per worker more; 0: cannot scale */
    int                scale_down;     /* to the master, once per worker fewer; 0: cannot scale */
} attach_profile;

/*
 * The profile of a master whose process name is comm or whose executable's
 * basename is exe (either may be NULL): its family's row (a comm that
 * starts with the family's name and a non-name byte, "gunicorn: master",
 * matches too), else the default row. Never NULL.
 */
const attach_profile *attach_profile_find(const char *comm, const char *exe);

/* Every row of the profile table, for the README's and tests' sake; n gets the count. */
const attach_profile *attach_profiles(size_t *n);

/* Writes "kill QUIT, reload MASTER HUP, scale TTIN/TTOU" (scale "-" when it cannot). */
void attach_profile_text(const attach_profile *p, char *out, size_t cap);

/*
 * The master-driven reload, as a pure machine: the master got the reload
 * signal; it is done when every old child is gone and new ones are present
 * (as many as the master now runs; once children report readiness, every
 * new one ready); aborted when the deadline (--ready-timeout) comes first.
 */
typedef enum { ATTACH_MR_IDLE, ATTACH_MR_SIGNALLED, ATTACH_MR_REPLACING, ATTACH_MR_DONE, ATTACH_MR_ABORTED } attach_mr_state;
typedef enum { ATTACH_MR_START, ATTACH_MR_CHILDREN, ATTACH_MR_DEADLINE } attach_mr_event;
typedef struct {
    attach_mr_event ev;
    size_t old_total;     /* children when the signal was sent */
    size_t old_left;      /* of those, still alive */
    size_t fresh;         /* children that appeared since */
    size_t fresh_ready;   /* of those, ready */
    bool   gate_ready;    /* the children report readiness: wait for it */
} attach_mr_input;

/* The next state of the machine in state s on input in (no side effects). */
attach_mr_state attach_mr_next(attach_mr_state s, const attach_mr_input *in);

/* The name of a master-reload state ("signalled"…), for events and tests. */
const char *attach_mr_name(attach_mr_state s);

/*
 * Watches master's children as workers of app (ids 0…N-1 in order of
 * appearance; a replacement takes the lowest free id), speaking profile p
 * (copied, options already applied). master_name is the master's process
 * name, for describe. Events go to ev.
 */
attach *attach_new(uv_loop_t *loop, state *st, pid_t master, const char *master_name, const char *app,
                   const attach_profile *p,
                   unsigned kill_timeout_ms, unsigned ready_timeout_ms,
                   supervise_event_fn ev, void *ctx);

/*
 * Feeds one round's list of live children (from the sampler) and the same
 * round's per-process samples (nsamples may be 0): a child the samples
 * found dead is gone even if the children scan, read a moment earlier,
 * still listed it, so that attach and the model agree within the round.
 */
void attach_on_children(attach *at, const pid_t *children, size_t n, const proc_sample *samples,
                        size_t nsamples);

/* A process said it is ready (from the state's ready hook). */
void attach_on_ready(attach *at, pid_t pid);

/*
 * Commands by signal. kill: the profile's kill signal (SIGKILL after
 * kill-timeout). restart: the same, then wait for the master to fork a
 * replacement (reported if none comes within ready-timeout). reload, ONE:
 * restart each child in turn, waiting for its replacement (and for its
 * readiness when the children report it) before the next; MASTER: the
 * reload signal to the master, then the master-reload machine above.
 * scale: n workers (or the current count + delta when has_delta), one
 * scale signal to the master at a time, each sent once the previous one
 * changed the count (signals of one kind sent together would merge), each
 * within ready-timeout. id -1 means every child. One operation at a time.
 * Return 0 when accepted, -1 otherwise; msg says what happened or why not.
 */
int attach_kill(attach *at, int id, char *msg, size_t cap);
int attach_restart(attach *at, int id, char *msg, size_t cap);
int attach_reload(attach *at, char *msg, size_t cap);
int attach_scale(attach *at, long n, bool has_delta, long delta, char *msg, size_t cap);

/*
 * The describe answer for the attached app: master pid and name, the
 * profile and its signals, timeouts, the current children. A new reference.
 */
json_t *attach_describe(const attach *at);

/* The app name its children are shown as. */
const char *attach_app(const attach *at);

/* True when a current child has worker id id. */
bool attach_has_id(const attach *at, int id);

/* Frees it (closes its timer; run the loop afterwards). */
void attach_free(attach *at);

/* True while a restart or reload of the master's children runs (`drover upgrade` waits for its end). */
bool attach_busy(const attach *at);

#endif
