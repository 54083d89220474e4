/*
 * slot.c — one worker slot's state machine (see slot.h for the table).
 */
#include "hub/slot.h"
#include "hub/supervise.h"

slot_fsm slot_fsm_new(void)
{
    return (slot_fsm){.state = SLOT_STOPPED, .repl = REPL_NONE};
}

uint64_t slot_backoff_ms(unsigned fails)
{
    unsigned shift = fails <= 1 ? 0 : fails - 1 < 9 ? fails - 1 : 9;
    uint64_t delay = (uint64_t)SUPERVISE_BACKOFF_MIN_MS << shift;
    return delay > SUPERVISE_BACKOFF_MAX_MS ? SUPERVISE_BACKOFF_MAX_MS : delay;
}

bool slot_replaceable(const slot_fsm *s)
{
    return (s->state == SLOT_STARTING || s->state == SLOT_ONLINE) && s->repl == REPL_NONE;
}

bool slot_in_service(const slot_fsm *s)
{
    switch (s->state) {
    case SLOT_STARTING:
    case SLOT_ONLINE:
    case SLOT_RESTARTING:
        return true;
    case SLOT_BACKOFF:
    case SLOT_ERRORED:
    case SLOT_STOPPING:
    case SLOT_STOPPED:
    case SLOT_REMOVING:
    case SLOT_GONE:
        return false;
    }
    return false;
}

worker_state slot_worker_state(slot_state st)
{
    switch (st) {
    case SLOT_STARTING:   return WS_STARTING;
    case SLOT_ONLINE:     return WS_ONLINE;
    case SLOT_BACKOFF:    return WS_BACKOFF;
    case SLOT_ERRORED:    return WS_ERRORED;
    case SLOT_STOPPING:
    case SLOT_RESTARTING:
    case SLOT_REMOVING:   return WS_STOPPING;
    case SLOT_STOPPED:    return WS_STOPPED;
    case SLOT_GONE:       return WS_GONE;
    }
    return WS_STOPPED;
}

/*
 * The current process ended on its own (or could not be started) after
 * lived_ms: count a restart, then back off, or give up (errored) after
 * SUPERVISE_MAX_FAILS quick failures in a row. A run of at least
 * SUPERVISE_STABLE_MS forgives the earlier failures.
 */
static void slot_failed(slot_decision *d, uint64_t lived_ms)
{
    slot_fsm *n = &d->next;
    if (lived_ms >= SUPERVISE_STABLE_MS)
        n->fails = 0;
    n->fails++;
    n->restarts++;
    if (n->fails >= SUPERVISE_MAX_FAILS) {
        n->state = SLOT_ERRORED;
        d->act = SLOT_DO_ERRORED;
        return;
    }
    n->state = SLOT_BACKOFF;
    d->act = SLOT_DO_BACKOFF;
    d->delay_ms = slot_backoff_ms(n->fails);
}

/* The current process exited: what the slot was waiting for decides. */
static void slot_exited(const slot_fsm *s, const slot_input *in, slot_decision *d)
{
    switch (s->state) {
    case SLOT_STARTING:
    case SLOT_ONLINE:
        if (in->stopping_all) {
            d->next.state = SLOT_STOPPED;
        } else if (in->no_restart) {
            d->next.state = SLOT_STOPPED;
            d->act = SLOT_DO_EXITED;
        } else {
            slot_failed(d, in->lived_ms);
        }
        break;
    case SLOT_STOPPING:
        d->next.state = SLOT_STOPPED;
        break;
    case SLOT_RESTARTING:
        if (in->stopping_all) {
            d->next.state = SLOT_STOPPED;
            break;
        }
        d->next.restarts++;
        d->next.state = SLOT_STARTING;
        d->act = SLOT_DO_SPAWN;
        break;
    case SLOT_REMOVING:
        /* gone once no process is left; a stopping replacement may remain */
        if (s->repl == REPL_NONE)
            d->next.state = SLOT_GONE;
        break;
    case SLOT_BACKOFF:
    case SLOT_ERRORED:
    case SLOT_STOPPED:
    case SLOT_GONE:
        break;                          /* no current process */
    }
}

/* Stops whatever runs in the slot: the replacement too. */
static void slot_stop(slot_decision *d, slot_state next)
{
    d->next.state = next;
    if (d->next.repl == REPL_STARTING)
        d->next.repl = REPL_STOPPING;
    d->act = SLOT_DO_STOP;
}

/* Kill command, or stopping everything: stop for good. */
static void slot_kill(const slot_fsm *s, slot_decision *d)
{
    switch (s->state) {
    case SLOT_STARTING:
    case SLOT_ONLINE:
    case SLOT_STOPPING:
    case SLOT_RESTARTING:
        slot_stop(d, SLOT_STOPPING);
        break;
    case SLOT_BACKOFF:
    case SLOT_ERRORED:
    case SLOT_STOPPED:
        slot_stop(d, SLOT_STOPPED);
        break;
    case SLOT_REMOVING:
        slot_stop(d, SLOT_REMOVING);    /* still going away */
        break;
    case SLOT_GONE:
        break;
    }
}

/* Restart command: a fresh process, with the failure count forgiven. */
static void slot_restart(const slot_fsm *s, slot_decision *d)
{
    switch (s->state) {
    case SLOT_STARTING:
    case SLOT_ONLINE:
    case SLOT_STOPPING:
    case SLOT_RESTARTING:
        d->next.fails = 0;
        d->next.state = SLOT_RESTARTING;
        d->act = SLOT_DO_STOP_CUR;      /* a replacement in flight carries on */
        break;
    case SLOT_BACKOFF:
    case SLOT_ERRORED:
    case SLOT_STOPPED:
        d->next.fails = 0;
        d->next.state = SLOT_STARTING;
        d->act = SLOT_DO_SPAWN;
        break;
    case SLOT_REMOVING:
    case SLOT_GONE:
        break;
    }
}

/* Scaled away: stop everything, gone once no process is left. */
static void slot_remove(const slot_fsm *s, slot_decision *d)
{
    switch (s->state) {
    case SLOT_STARTING:
    case SLOT_ONLINE:
    case SLOT_STOPPING:
    case SLOT_RESTARTING:
        slot_stop(d, SLOT_REMOVING);
        break;
    case SLOT_BACKOFF:
    case SLOT_ERRORED:
    case SLOT_STOPPED:
        if (s->repl != REPL_NONE)
            slot_stop(d, SLOT_REMOVING);
        else
            d->next.state = SLOT_GONE;
        break;
    case SLOT_REMOVING:
    case SLOT_GONE:
        break;
    }
}

/* The replacement is ready: it takes over unless the slot is being stopped. */
static void slot_repl_ready(const slot_fsm *s, slot_decision *d)
{
    if (s->repl != REPL_STARTING)
        return;
    switch (s->state) {
    case SLOT_STARTING:
    case SLOT_ONLINE:
    case SLOT_RESTARTING:               /* the replacement is the restart */
    case SLOT_BACKOFF:                  /* the old process died meanwhile */
    case SLOT_ERRORED:
        d->next.state = SLOT_ONLINE;
        d->next.repl = REPL_NONE;
        d->act = SLOT_DO_PROMOTE;
        break;
    case SLOT_STOPPING:
    case SLOT_STOPPED:
    case SLOT_REMOVING:
    case SLOT_GONE:
        break;
    }
}

slot_decision slot_next(const slot_fsm *s, const slot_input *in)
{
    slot_decision d = {.next = *s, .act = SLOT_DO_NOTHING};
    switch (in->kind) {
    case SLOT_IN_READY:
        if (s->state == SLOT_STARTING)
            d.next.state = SLOT_ONLINE;
        break;
    case SLOT_IN_EXITED:
        slot_exited(s, in, &d);
        break;
    case SLOT_IN_BACKOFF_DONE:
        if (s->state == SLOT_BACKOFF && !in->stopping_all) {
            d.next.state = SLOT_STARTING;
            d.act = SLOT_DO_SPAWN;
        }
        break;
    case SLOT_IN_KILL:
        slot_kill(s, &d);
        break;
    case SLOT_IN_RESTART:
        slot_restart(s, &d);
        break;
    case SLOT_IN_REMOVE:
        slot_remove(s, &d);
        break;
    case SLOT_IN_REPLACE:
        if (slot_replaceable(s)) {
            d.next.repl = REPL_STARTING;
            d.act = SLOT_DO_REPLACE;
        }
        break;
    case SLOT_IN_REPL_READY:
        slot_repl_ready(s, &d);
        break;
    case SLOT_IN_REPL_EXITED:
        if (s->repl == REPL_NONE)
            break;
        d.next.repl = REPL_NONE;
        d.act = SLOT_DO_ABORT_RELOAD;
        if (s->state == SLOT_REMOVING && !in->has_cur)
            d.next.state = SLOT_GONE;
        break;
    case SLOT_IN_REPL_TIMEOUT:
        if (s->repl == REPL_STARTING) {
            d.next.repl = REPL_NONE;
            d.act = SLOT_DO_RETIRE_REPL;
        }
        break;
    }
    return d;
}
