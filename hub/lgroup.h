/*
 * lgroup.h — `--balance reuseport`: one SO_REUSEPORT listening socket per
 * worker slot, all in one group on the --listen address, so the kernel
 * spreads new connections over the slots by hash instead of waking the
 * busiest waiter of one shared queue.
 *
 * The group owns the sockets and their lives; the supervisor owns the slots
 * and tells the group what each slot is doing. The hub also holds an
 * anchor: a socket bound to the address (SO_REUSEPORT) that never listens,
 * so the port stays the hub's even while no slot has a socket.
 *
 * Steering. The kernel picks a listener by index in its group array
 * (reuse->socks[]: appended at listen(), a removed socket's place taken by
 * the last one). The group mirrors that array (lgroup_order_*) and attaches
 * a classic BPF program (SO_ATTACH_REUSEPORT_CBPF), rebuilt whenever the
 * set changes, that hashes the client's address and port over the indices
 * of the sockets in rotation only: a socket draining or parked gets no new
 * connection. The program's Fibonacci hash also spreads one client's
 * ports in a row (a proxy's connection pool, wrk) evenly, where the
 * kernel's own hash (used only if the program cannot be attached, or no
 * socket is in rotation) leaves random lumps. A socket leaves the kernel's group only by lgroup_close (shutdown
 * then close, by the hub, after its slot's processes are gone), so the
 * mirror is exact.
 *
 * A socket's life, one machine (lsock_next):
 *
 *  state     input    next      action
 *  OPEN      PARK     PARKED    STEER   (its slot has no process to come soon: backoff,
 *                                        killed, errored)
 *  PARKED    SERVE    OPEN      STEER   (its slot starts again)
 *  OPEN,     DRAIN    DRAINING  DRAIN   (scale-down: steer away, watch its accept queue)
 *   PARKED
 *  DRAINING  DRAINED  DRAINED   REPORT  (queue empty after the settle time, or the timeout)
 *  any but   CLOSE    CLOSED    CLOSE   (its slot is gone: shutdown, close, steer)
 *   CLOSED
 * Any other pair changes nothing (SERVE and PARK while draining: the slot's
 * process may restart during a drain; the socket stays out of rotation).
 */
#ifndef DROVER_HUB_LGROUP_H
#define DROVER_HUB_LGROUP_H

#include <linux/bpf.h>
#include <linux/filter.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>
#include <jansson.h>

#define LGROUP_SETTLE_MS 300   /* after steering away: handshakes begun before it complete */
#define LGROUP_POLL_MS   50    /* how often a draining socket's accept queue is read */
#define LGROUP_MAX       4096  /* sockets per group (the BPF program grows with them) */

typedef enum { LSOCK_OPEN, LSOCK_PARKED, LSOCK_DRAINING, LSOCK_DRAINED, LSOCK_CLOSED } lsock_state;
typedef enum { LSOCK_IN_SERVE, LSOCK_IN_PARK, LSOCK_IN_DRAIN, LSOCK_IN_DRAINED, LSOCK_IN_CLOSE } lsock_input;
typedef enum {
    LSOCK_DO_NOTHING,
    LSOCK_DO_STEER,     /* the set in rotation changed: attach (or detach) the program */
    LSOCK_DO_DRAIN,     /* steer, then watch the accept queue every LGROUP_POLL_MS */
    LSOCK_DO_REPORT,    /* stop watching; tell the owner the socket is drained */
    LSOCK_DO_CLOSE,     /* stop watching; shutdown and close; drop it from the mirror; steer */
} lsock_action;

typedef struct {
    lsock_state  next;
    lsock_action act;
} lsock_decision;

/* The transition of a socket in state s on input in (the table above). Pure. */
lsock_decision lsock_next(lsock_state s, lsock_input in);

/* The state's name ("open", "parked", "draining", "drained", "closed"). */
const char *lsock_name(lsock_state s);

/*
 * The kernel's group array after member m leaves it: m's place is taken by
 * the last entry (reuseport_detach_sock). order has *n entries; m absent:
 * no change. Pure.
 */
void lgroup_order_remove(int *order, size_t *n, int m);

/*
 * Builds the steering program into out (cap instructions): the client's
 * source address (IPv4, or an IPv6 address's last 32 bits) xor its source
 * port, Fibonacci-hashed (× 0x9E3779B1, >> 16), modulo nkeep, picks one of
 * the kernel indices keep[0..nkeep-1].
 * Returns the number of instructions, or 0 when nkeep is 0 or the program
 * does not fit. Pure.
 */
size_t lgroup_prog(const unsigned *keep, size_t nkeep, struct sock_filter *out, size_t cap);

/*
 * Builds the round-robin program (eBPF, BPF_PROG_TYPE_SK_REUSEPORT) into
 * out: each new connection takes the next turn of the one-entry array
 * ctr_map (an atomic fetch-add) modulo nkeep, and selects that entry of
 * the REUSEPORT_SOCKARRAY socks_map, which holds the sockets in rotation.
 * Returns the number of instructions, or 0 (nkeep 0, cap too small). Pure.
 */
size_t lgroup_rr_prog(int ctr_map, int socks_map, unsigned nkeep, struct bpf_insn *out, size_t cap);

typedef struct lgroup lgroup;

/* Called once per lgroup_drain, when the member is drained; left = connections still queued (timed out). */
typedef void (*lgroup_drained_fn)(void *ctx, int member, unsigned left);

/*
 * True when spec can be balanced by reuseport: a TCP "[HOST:]PORT" (not
 * "unix:", whose listeners stay shared, nor "fd:" of socket activation).
 */
bool lgroup_applies(const char *spec);

/*
 * Binds the anchor for TCP spec (listen_check'ed) with SO_REUSEPORT: the
 * address is taken (a port in use fails here, with the usual message, even
 * when another hub's group listens on it: a probe binds without
 * SO_REUSEPORT first) but nothing listens yet. A group handed over for
 * spec (lgroup_hand_over) is returned instead, as it was. Returns the
 * group, or NULL with a message in err.
 */
lgroup *lgroup_open(uv_loop_t *loop, const char *spec, char *err, size_t errcap);

/*
 * `drover upgrade`, new image: g (lgroup_restore'd) was opened for spec;
 * the next lgroup_open(spec) returns it. Returns 0, or -1 (out of memory:
 * the caller frees g). lgroup_hand_over_end frees those no lgroup_open
 * took (an app that is gone).
 */
int lgroup_hand_over(const char *spec, lgroup *g);
void lgroup_hand_over_end(void);

/* True when a group was handed over for spec and no lgroup_open took it yet. */
bool lgroup_handed_for(const char *spec);

/*
 * Adds a listening socket to the group (OPEN, in rotation) bound to the
 * anchor's address. Returns its member number (≥ 0), or -1 with err.
 */
int lgroup_add(lgroup *g, char *err, size_t errcap);

/* Member m's socket (close-on-exec; the spawner hands it over as fd 3), or -1. */
int lgroup_fd(const lgroup *g, int m);

/* Member m's state (LSOCK_CLOSED for an unknown member). */
lsock_state lgroup_state(const lgroup *g, int m);

/* Its slot serves (true: SERVE) or has no process for good (false: PARK). */
void lgroup_serve(lgroup *g, int m, bool serving);

/*
 * Steers new connections away from member m and calls done once its
 * accept queue is empty LGROUP_SETTLE_MS after that (or after timeout_ms,
 * with what is left). Its worker must keep accepting meanwhile.
 * Returns 0, or -1 if m cannot drain (not OPEN or PARKED).
 */
int lgroup_drain(lgroup *g, int m, unsigned timeout_ms, lgroup_drained_fn done, void *ctx);

/* Closes member m (any state; again: nothing): shutdown, close, steer. Its number may be reused. */
void lgroup_close(lgroup *g, int m);

/* Connections waiting in member m's accept queue (TCP_INFO), or -1. */
int lgroup_queued(const lgroup *g, int m);

/* Closes every socket and the anchor; frees the group once its timers closed (run the loop). */
void lgroup_free(lgroup *g);

/*
 * `drover upgrade`, old image: the group as it crosses the exec (new
 * reference; when final its descriptors, BPF maps included, are kept
 * across exec; else a dry run for the new binary's check), or
 * NULL with why in err (a socket draining: a scale-down in flight).
 */
json_t *lgroup_save(const lgroup *g, bool final, char *err, size_t errcap);

/*
 * `drover upgrade`, new image: the group of an lgroup_save (validated by
 * upgrade_validate), members under the same numbers, the steering program
 * still attached in the kernel. Returns it, or NULL with why in err.
 */
lgroup *lgroup_restore(uv_loop_t *loop, const json_t *saved, char *err, size_t errcap);

#endif
