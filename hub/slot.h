/*
 * slot.h — one worker slot's state machine, without side effects.
 *
 * The supervisor (supervise.c) owns the processes, timers and events; this
 * module only says, for a slot's state and one input, what the slot's next
 * state is and which single action the supervisor must perform. Nothing
 * here forks, signals, arms a timer or touches the model, so every
 * transition can be unit-tested (tests/unit/test_slot.c).
 *
 * A slot has at most a current process (the one serving, whose life the
 * state describes) and, during a reload or a memory replacement, a
 * replacement starting beside it. The replacement is a separate field, not
 * a state: the current process keeps living its own life (it can become
 * ready, crash, be killed) while the replacement starts, so folding both
 * into one enum would need a "replacing" copy of every state.
 *
 *  state       input            next        action
 *  STARTING    READY            ONLINE      -
 *  STARTING,   EXITED           BACKOFF     BACKOFF (delay: slot_backoff_ms)
 *   ONLINE                      ERRORED     ERRORED (after SUPERVISE_MAX_FAILS quick failures)
 *                               STOPPED     -       (while stopping everything)
 *                               STOPPED     EXITED  (the app's restart policy says no)
 *  BACKOFF     BACKOFF_DONE     STARTING    SPAWN   (not while stopping everything)
 *  STOPPING    EXITED           STOPPED     -
 *  RESTARTING  EXITED           STARTING    SPAWN   (STOPPED while stopping everything)
 *  REMOVING    EXITED           GONE        -       (REMOVING while a replacement remains)
 *  any live    KILL             STOPPING    STOP    (STOPPED if no process; REMOVING stays)
 *  any live    RESTART          RESTARTING  STOP_CUR (STARTING + SPAWN if no process; not REMOVING)
 *  any live    REMOVE           REMOVING    STOP    (GONE if no process left)
 *  STARTING,   REPLACE          same        REPLACE (replacement: NONE -> STARTING)
 *   ONLINE
 *  any         REPL_READY       ONLINE      PROMOTE (replacement starting; not STOPPING,
 *                                                    STOPPED, REMOVING)
 *  any         REPL_EXITED      same        ABORT_RELOAD (REMOVING with no process: GONE)
 *  any         REPL_TIMEOUT     same        RETIRE_REPL
 * "any live" is every state but GONE; REPL_* and REPLACE change the
 * replacement field. A new slot is STOPPED: RESTART starts it. Any other
 * pair leaves the slot as it is, with no action.
 */
#ifndef DROVER_HUB_SLOT_H
#define DROVER_HUB_SLOT_H

#include <stdbool.h>
#include <stdint.h>

#include "hub/state.h"

typedef enum {
    SLOT_STARTING,      /* current process started, not ready yet */
    SLOT_ONLINE,        /* current process ready */
    SLOT_BACKOFF,       /* no process: it failed; the backoff timer will start one */
    SLOT_ERRORED,       /* no process: too many quick failures, not restarted */
    SLOT_STOPPING,      /* current process stopping for good (kill, shutdown) */
    SLOT_RESTARTING,    /* current process stopping; a new one starts once it exited */
    SLOT_STOPPED,       /* no process, on purpose (killed): not restarted */
    SLOT_REMOVING,      /* scaled away: its processes stop, then the slot goes */
    SLOT_GONE,          /* removed: terminal */
} slot_state;

typedef enum {
    REPL_NONE,          /* no replacement */
    REPL_STARTING,      /* replacement started, not ready yet */
    REPL_STOPPING,      /* replacement being stopped (kill, scale-down, shutdown) */
} slot_repl;

/* A slot's machine: its state, its replacement and its counters. */
typedef struct {
    slot_state state;
    slot_repl  repl;
    unsigned   fails;       /* consecutive quick failures */
    int64_t    restarts;    /* restarts counted for the model */
} slot_fsm;

typedef enum {
    SLOT_IN_READY,          /* the current process became ready (or passed its grace period silently) */
    SLOT_IN_EXITED,         /* the current process exited, or could not be started */
    SLOT_IN_BACKOFF_DONE,   /* the backoff timer fired */
    SLOT_IN_KILL,           /* kill command, or stopping everything: stop, do not restart */
    SLOT_IN_RESTART,        /* restart command */
    SLOT_IN_REMOVE,         /* scaled away */
    SLOT_IN_REPLACE,        /* start a replacement (reload step, memory limit) */
    SLOT_IN_REPL_READY,     /* the replacement became ready */
    SLOT_IN_REPL_EXITED,    /* the replacement exited, or could not be started */
    SLOT_IN_REPL_TIMEOUT,   /* the replacement was not ready within the ready-timeout */
} slot_input_kind;

/* One input, with the facts the machine needs that only the supervisor knows. */
typedef struct {
    slot_input_kind kind;
    uint64_t lived_ms;      /* EXITED: how long the process ran (0: could not be started) */
    bool     stopping_all;  /* the supervisor is stopping every worker */
    bool     has_cur;       /* REPL_EXITED: the slot still has a current process */
    bool     no_restart;    /* EXITED: the app's restart policy does not restart this exit */
} slot_input;

typedef enum {
    SLOT_DO_NOTHING,
    SLOT_DO_SPAWN,          /* cancel the backoff timer, start a current process */
    SLOT_DO_BACKOFF,        /* report the exit, arm the backoff timer for delay_ms */
    SLOT_DO_ERRORED,        /* report the exit: errored, not restarting */
    SLOT_DO_EXITED,         /* report the exit: not restarted, by the restart policy */
    SLOT_DO_STOP,           /* cancel the backoff timer, stop the replacement and the current process */
    SLOT_DO_STOP_CUR,       /* cancel the backoff timer, stop the current process only */
    SLOT_DO_REPLACE,        /* start a replacement beside the current process */
    SLOT_DO_PROMOTE,        /* the replacement becomes current; the old one retires and stops */
    SLOT_DO_RETIRE_REPL,    /* the replacement retires and stops; the reload is aborted */
    SLOT_DO_ABORT_RELOAD,   /* the replacement is gone; the reload is aborted */
} slot_action;

typedef struct {
    slot_fsm    next;       /* the slot after the input */
    slot_action act;
    uint64_t    delay_ms;   /* SLOT_DO_BACKOFF: restart after this long */
} slot_decision;

/* A new slot's machine: stopped (no process yet), no failures, no restarts. */
slot_fsm slot_fsm_new(void);

/*
 * The transition of machine s on input in (see the table above). Pure:
 * reads only its arguments. An input that does not apply to s's state
 * returns s unchanged with SLOT_DO_NOTHING.
 */
slot_decision slot_next(const slot_fsm *s, const slot_input *in);

/*
 * Restart delay after `fails` consecutive quick failures (fails >= 1):
 * SUPERVISE_BACKOFF_MIN_MS doubled per failure, at most SUPERVISE_BACKOFF_MAX_MS.
 */
uint64_t slot_backoff_ms(unsigned fails);

/* True if a replacement can start: a current process not being stopped, no replacement yet. */
bool slot_replaceable(const slot_fsm *s);

/* True if a reload counts the slot: it has a process not being stopped for good. */
bool slot_in_service(const slot_fsm *s);

/* The model's state for a slot state (WS_STOPPING for every stopping kind). */
worker_state slot_worker_state(slot_state st);

#endif
