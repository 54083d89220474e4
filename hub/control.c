/*
 * control.c — the control socket server.
 *
 * Each client is a libuv pipe with a line buffer. Requests are parsed with
 * jansson; answers and pushed messages are one JSON object per line.
 *
 * Memory is bounded three ways, since a client that stops reading makes the
 * hub queue what it sends: what each client's output costs, its chunks
 * counted as allocated (see control.h; CONTROL_QUEUE_MAX: past it the
 * client is dropped), the same for all clients together
 * (CONTROL_TOTAL_MAX: past it the client furthest behind is dropped first),
 * and the number of clients (CONTROL_CLIENTS_MAX: a new one takes the place
 * of the listening client furthest behind, or of the oldest; a client
 * waiting for a reply is never dropped for room). Once the queues that grew
 * past 1 MiB have drained to a quarter, the freed memory is given back to
 * the system (malloc_trim, at most once an interval), so a burst of slow
 * clients does not leave the hub large.
 *
 * Time is bounded too: a log tail costs milliseconds (up to a million lines
 * serialized), and a crowd of clients asking for one at once would make the
 * loop turn that reads them all long, and `drover ls` wait behind it. Costly
 * requests get CONTROL_TURN_BUDGET_MS of a loop turn; past it, a client's
 * costly request (and whatever it sent after) waits for a later turn, its
 * reading paused, in arrival order. Cheap requests never wait.
 */
#include "hub/control.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct client {
    control    *c;
    uv_pipe_t   pipe;
    struct client *next;
    ctl_framer  fr;             /* partial request line */
    bool        hello;          /* said a good hello */
    bool        subscribed;
    bool        lean;           /* subscribed with "lean": state without what repeats (control_lean) */
    bool        streaming;      /* wants the headless output each interval */
    ctl_format  format;
    bool        following;      /* wants log lines */
    char        follow_app[CTL_APP_MAX]; /* "" = every app */
    int         follow_id;      /* -1 = every worker */
    bool        closing;
    size_t      queued;         /* what its output costs: its chunks, pending and in libuv, as allocated */
    bool        deferred;       /* in the deferred queue, not reading */
    char       *stash;          /* the request line put off (deferred) */
    char       *held;           /* it and the bytes read after it, to feed later */
    size_t      held_len;
    struct client *dnext;       /* in the deferred queue */
    struct chunk *phead, *ptail; /* lines of this turn, written at its end */
    size_t      pend_cost;      /* their share of queued */
} client;

struct control {
    uv_loop_t  *loop;
    uv_pipe_t   server;
    control_hooks hooks;
    unsigned    kind;           /* CTL_HUB_* of this hub */
    json_t     *hello;
    client     *clients;
    size_t      nclients;
    size_t      queued;         /* bytes queued for every client together */
    size_t      peak;           /* the most queued since memory was last handed back */
    char        path[108];
    ino_t       ino;
    uv_prepare_t turn;          /* each loop turn: a new budget, deferred requests first */
    uv_idle_t   wake;           /* active while requests wait: the loop must not block */
    uv_check_t  polled;         /* after each poll: gathered lines are written */
    uint64_t    spent_ns;       /* costly requests' time in this turn */
    client     *dq, **dq_tail;  /* clients whose costly request waits for a turn */
    int         handles;        /* open handles; c is freed when the last one closes */
};

/* ---- writing ------------------------------------------------------------ */

/*
 * One block of a client's output with the write request that carries it:
 * one allocation of a fixed size (CONTROL_CHUNK_SMALL for a turn's first
 * short line, else CONTROL_CHUNK_BIG), freed as soon as libuv has written
 * it, so a client that reads gives memory back as it reads, and freed
 * blocks of the same sizes are reused rather than fragmenting the heap.
 */
typedef struct chunk {
    uv_write_t    req;
    struct client *cl;
    struct chunk *next;         /* in the client's pending list */
    size_t        cost;         /* what malloc holds for it: usable size and header */
    size_t        len, cap;
    char          data[];
} chunk;

#define CONTROL_CHUNK_SMALL 4096
#define CONTROL_CHUNK_BIG   (64 * 1024)
#define CONTROL_MALLOC_HDR  16   /* glibc's chunk header, 64-bit */

/* At most what a chunk of cap bytes costs (malloc rounds up to 16). */
static size_t control_chunk_bound(size_t cap)
{
    return sizeof(chunk) + cap + CONTROL_MALLOC_HDR + 15;
}

/*
 * Called once per chunk written or cancelled (before the client's close
 * callback). A closing client's bytes already left the total when it was
 * closed (control_close_client).
 */
static void control_on_written(uv_write_t *w, int status)
{
    (void)status;   /* a failed write surfaces as a read error / EOF */
    chunk *ch = (chunk *)w;
    if (!ch->cl->closing)
        ch->cl->c->queued -= ch->cost;
    ch->cl->queued -= ch->cost;
    free(ch);
}

/*
 * True when cl may be dropped to make room: it only listens (subscribed,
 * following, streaming) or has not said hello yet. A client that said hello
 * and waits for the reply to its request (`drover ls`) is never dropped.
 */
static bool control_evictable(const client *cl)
{
    return !cl->closing && (cl->subscribed || cl->following || cl->streaming || !cl->hello);
}

/*
 * The evictable client furthest behind (most bytes queued; among equals the
 * oldest, which is last in the list), other than spare; NULL when none.
 */
static client *control_slowest(control *c, const client *spare)
{
    /* listeners first; a client that has not said hello yet only when none is left */
    for (int pass = 0; pass < 2; pass++) {
        client *worst = NULL;
        for (client *cl = c->clients; cl; cl = cl->next)
            if (cl != spare && control_evictable(cl) && (cl->hello || pass == 1) &&
                (!worst || cl->queued >= worst->queued))
                worst = cl;
        if (worst)
            return worst;
    }
    return NULL;
}

static void control_close_client(client *cl);

/* True when n more bytes would take the total queued for all clients past its cap. */
static bool c_total_over(const control *c, size_t n)
{
    return c->queued > 0 && c->queued + n > CONTROL_TOTAL_MAX;
}

static void control_send_line(client *cl, const char *line, size_t n);

/* Sends obj as one line to cl and releases obj. */
static void control_send(client *cl, json_t *obj)
{
    if (cl->closing) {
        json_decref(obj);
        return;
    }
    size_t n;
    char *line = ctl_line(obj, &n);
    if (line)
        control_send_line(cl, line, n);
    free(line);
}

/* Sends one message, serialized once, to every client want() accepts. */
static void control_send_all(control *c, json_t *obj, bool (*want)(const client *cl, const void *arg),
                             const void *arg)
{
    char *line = NULL;
    size_t n = 0;
    for (client *cl = c->clients, *next; cl; cl = next) {
        next = cl->next;
        if (cl->closing || !want(cl, arg))
            continue;
        if (!line && !(line = ctl_line(json_incref(obj), &n)))
            break;
        control_send_line(cl, line, n);
    }
    free(line);
    json_decref(obj);
}

/*
 * Queues a copy of line (n bytes) for cl, within the per-client and total
 * caps. Lines of one loop turn are gathered in chunks and written at the
 * turn's end (control_flush): a busy log followed by a hundred clients is a
 * hundred writes a turn, not a hundred per line. What is counted is what the
 * chunks cost, as allocated, not the bytes sent.
 */
static void control_send_line(client *cl, const char *line, size_t n)
{
    /* what the chunks this line needs beyond the last one's room will cost */
    size_t room = cl->ptail ? cl->ptail->cap - cl->ptail->len : 0, more = 0;
    if (n > room) {
        if (!cl->ptail && n <= CONTROL_CHUNK_SMALL)
            more = control_chunk_bound(CONTROL_CHUNK_SMALL);
        else
            more = (n - room + CONTROL_CHUNK_BIG - 1) / CONTROL_CHUNK_BIG * control_chunk_bound(CONTROL_CHUNK_BIG);
    }
    /* A client with nothing in libuv's hands took all it was sent: it is not
     * behind, and one turn's output (a subscribe reply for 1024 workers with
     * their history is ~3.6 MB, more with custom metrics) is no reason to
     * drop it. The total cap still holds. */
    bool behind = cl->queued > cl->pend_cost;
    if (behind && cl->queued + more > CONTROL_QUEUE_MAX) {
        control_close_client(cl);   /* it stopped reading: do not buffer forever */
        return;
    }
    while (c_total_over(cl->c, more)) {
        client *worst = control_slowest(cl->c, NULL);
        if (!worst)
            worst = cl;   /* nobody else to drop: this message does not fit */
        bool self = worst == cl;
        control_close_client(worst);   /* the furthest behind goes first */
        if (self)
            return;
    }
    while (n > 0) {
        chunk *t = cl->ptail;
        if (!t || t->len == t->cap) {
            size_t cap = !t && n <= CONTROL_CHUNK_SMALL ? CONTROL_CHUNK_SMALL : CONTROL_CHUNK_BIG;
            if (!(t = malloc(sizeof *t + cap))) {
                control_close_client(cl);
                return;
            }
            t->cl = cl;
            t->next = NULL;
            t->len = 0;
            t->cap = cap;
            t->cost = malloc_usable_size(t) + CONTROL_MALLOC_HDR;
            if (cl->ptail)
                cl->ptail->next = t;
            else
                cl->phead = t;
            cl->ptail = t;
            cl->pend_cost += t->cost;
            cl->queued += t->cost;
            cl->c->queued += t->cost;
            if (cl->c->queued > cl->c->peak)
                cl->c->peak = cl->c->queued;
        }
        size_t k = n < t->cap - t->len ? n : t->cap - t->len;
        memcpy(t->data + t->len, line, k);
        t->len += k;
        line += k;
        n -= k;
    }
}

/* Frees the chunks from ch on that libuv never got, taking them out of the counts. */
static void control_drop_chunks(client *cl, chunk *ch)
{
    for (chunk *next; ch; ch = next) {
        next = ch->next;
        cl->queued -= ch->cost;
        if (!cl->closing)
            cl->c->queued -= ch->cost;
        free(ch);
    }
}

/* Writes what cl gathered this turn: one write per chunk. */
static void control_flush(client *cl)
{
    chunk *ch = cl->phead;
    cl->phead = cl->ptail = NULL;
    cl->pend_cost = 0;
    for (chunk *next; ch; ch = next) {
        next = ch->next;
        uv_buf_t b = uv_buf_init(ch->data, (unsigned)ch->len);
        if (uv_write(&ch->req, (uv_stream_t *)&cl->pipe, &b, 1, control_on_written) != 0) {
            control_drop_chunks(cl, ch);
            control_close_client(cl);
            return;
        }
    }
}

/* Writes every client's gathered lines (before the loop polls, and after). */
static void control_flush_all(control *c)
{
    for (client *cl = c->clients, *next; cl; cl = next) {
        next = cl->next;
        control_flush(cl);
    }
}

/* Replies to request id with an error line. */
static void control_reply_error(client *cl, json_t *id, const char *msg)
{
    control_send(cl, json_pack("{s:s, s:O?, s:b, s:s}", "type", "reply", "id", id, "ok", 0, "error", msg));
}

/* ---- clients ------------------------------------------------------------ */

static void control_on_client_closed(uv_handle_t *h)
{
    client *cl = h->data;
    ctl_framer_free(&cl->fr);
    free(cl->stash);
    free(cl->held);
    control_drop_chunks(cl, cl->phead);   /* none: a closing client's were written */
    free(cl);
}

static void control_close_client(client *cl)
{
    if (cl->closing)
        return;
    control_flush(cl);   /* a last error line goes out before the close, as it did unbatched */
    if (cl->closing)
        return;
    cl->closing = true;
    control *c = cl->c;
    c->nclients--;
    /* Its queue leaves the total now, not when libuv cancels the writes on a
     * later turn: a caller making room must see the room it made. */
    c->queued -= cl->queued;
    for (client **pp = &c->clients; *pp; pp = &(*pp)->next)
        if (*pp == cl) {
            *pp = cl->next;
            break;
        }
    if (cl->deferred) {
        for (client **pp = &c->dq; *pp; pp = &(*pp)->dnext)
            if (*pp == cl) {
                *pp = cl->dnext;
                if (!*pp)
                    c->dq_tail = pp;
                break;
            }
        cl->deferred = false;
    }
    uv_close((uv_handle_t *)&cl->pipe, control_on_client_closed);
}

/* Answers a hello: the hub's own hello when the version matches. */
static void control_hello(client *cl, const json_t *req)
{
    json_t *v = json_object_get(req, "version");
    if (!json_is_string(json_object_get(req, "hello")) || !json_is_integer(v)) {
        char msg[128];
        snprintf(msg, sizeof msg, "say hello first: {\"hello\":\"drover\",\"version\":%d}", CTL_VERSION);
        control_send(cl, json_pack("{s:s, s:s}", "type", "error", "error", msg));
        control_close_client(cl);
    } else if (json_integer_value(v) != CTL_VERSION) {
        char msg[160];
        snprintf(msg, sizeof msg, "protocol version %lld is not supported: this hub speaks version %d",
                 (long long)json_integer_value(v), CTL_VERSION);
        control_send(cl, json_pack("{s:s, s:s, s:i}", "type", "error", "error", msg, "version", CTL_VERSION));
        control_close_client(cl);
    } else {
        cl->hello = true;
        json_t *h = json_deep_copy(cl->c->hello);
        json_object_set_new(h, "type", json_string("hello"));
        json_object_set_new(h, "version", json_integer(CTL_VERSION));
        control_send(cl, h);
    }
}

/* Why this kind of hub refuses cmd (which the table does not allow on it). */
static void control_refusal(unsigned kind, const ctl_command *cmd, char *msg, size_t cap)
{
    if (kind == CTL_HUB_MONIT)
        snprintf(msg, cap, "this hub only monitors (drover monit): it has no workers of its own to %s", cmd->name);
    else
        snprintf(msg, cap, "a %s hub does not take '%s'", ctl_hub_name(kind), cmd->name);
}

/*
 * Makes a snapshot lean (subscribe's "lean", PROTOCOL.md §4.4), in place:
 * each worker object loses what repeats or says nothing — "type" (every one
 * is a worker), "ts" (the hub object has it), a "tree" that is the worker's
 * own process alone (its pid and figures are the worker's), every key
 * whose value is null (absent reads as unknown) and an empty "metrics" (no
 * custom metric to show). A console parses every state of a thousand
 * workers each second: this is about 40 % of the bytes it would read and of
 * the values it would build and free (an empty object costs jansson as
 * much as a dozen numbers).
 */
static void control_lean(json_t *snap)
{
    size_t i;
    json_t *w, *v;
    const char *k;
    void *tmp;
    json_array_foreach(json_object_get(snap, "workers"), i, w) {
        json_object_del(w, "type");
        json_object_del(w, "ts");
        if (json_array_size(json_object_get(w, "tree")) <= 1)
            json_object_del(w, "tree");
        json_t *m = json_object_get(w, "metrics");
        if (json_is_object(m) && json_object_size(m) == 0)
            json_object_del(w, "metrics");
        json_object_foreach_safe(w, tmp, k, v) {
            if (json_is_null(v))
                json_object_del(w, k);
        }
    }
}

/*
 * Handles one request line from cl. Returns true when it was put off (a
 * costly request past this turn's budget): the caller keeps the line.
 */
static bool control_request(client *cl, const char *line, size_t len)
{
    control *c = cl->c;
    json_error_t jerr;
    json_t *req = json_loadb(line, len, 0, &jerr);
    if (!json_is_object(req)) {
        char msg[256];
        snprintf(msg, sizeof msg, "not a JSON object: %s", req ? "another JSON value" : jerr.text);
        json_decref(req);
        control_reply_error(cl, NULL, msg);
        if (!cl->hello)
            control_close_client(cl);   /* a peer that cannot say hello is not a client */
        return false;
    }
    if (!cl->hello) {
        control_hello(cl, req);
        json_decref(req);
        return false;
    }

    json_t *id = json_object_get(req, "id");
    char msg[512] = "";
    ctl_request r;
    if (ctl_request_parse(req, &r, msg, sizeof msg) != 0 ||
        (r.target.app[0] && c->hooks.resolve(c->hooks.ctx, &r.target, msg, sizeof msg) != 0)) {
        control_reply_error(cl, id, msg);
        json_decref(req);
        return false;
    }
    /* A worker named by pid may be a process drover did not start, on any
     * kind of hub: commands.c says what can be done to it. */
    if (r.target.pid <= 0 &&
        (!(r.cmd->hubs & c->kind) || (c->kind == CTL_HUB_MONIT && r.cmd->cmd == CTL_STOP && r.target.app[0]))) {
        control_refusal(c->kind, r.cmd, msg, sizeof msg);
        control_reply_error(cl, id, msg);
        json_decref(req);
        return false;
    }
    json_t *reply = json_pack("{s:s, s:O?, s:b}", "type", "reply", "id", id, "ok", 1);
    switch (r.cmd->cmd) {
    case CTL_LS:
    case CTL_SUBSCRIBE: {
        json_t *snap = c->hooks.snapshot(c->hooks.ctx, r.cmd->cmd == CTL_SUBSCRIBE);
        if (r.lean)
            control_lean(snap);
        json_object_update(reply, snap);
        json_decref(snap);
        control_send(cl, reply);
        if (r.cmd->cmd == CTL_SUBSCRIBE) {
            cl->subscribed = true;
            cl->lean = r.lean;   /* the latest subscribe says which form */
        }
        break;
    }
    case CTL_STREAM:
        cl->streaming = true;
        cl->format = r.format;
        control_send(cl, reply);
        break;
    case CTL_UNSUBSCRIBE:
        cl->subscribed = false;
        cl->following = false;
        cl->streaming = false;
        control_send(cl, reply);
        break;
    case CTL_LOGS: {
        if (r.lines > 0 && c->spent_ns >= CONTROL_TURN_BUDGET_MS * 1000000ull) {
            json_decref(reply);
            json_decref(req);
            return true;
        }
        uint64_t t0 = uv_hrtime();
        json_t *arr = json_array();
        c->hooks.logs_tail(c->hooks.ctx, &r.target, (size_t)r.lines, arr);
        json_object_set_new(reply, "lines", arr);
        control_send(cl, reply);
        c->spent_ns += uv_hrtime() - t0;
        if (r.follow) {
            cl->following = true;
            snprintf(cl->follow_app, sizeof cl->follow_app, "%s", r.target.app);
            cl->follow_id = r.target.id;
        }
        break;
    }
    case CTL_KILL:
    case CTL_RESTART:
    case CTL_RELOAD:
    case CTL_STOP:
    case CTL_SCALE:
    case CTL_APPLY:
    case CTL_DESCRIBE:
    case CTL_UPGRADE:
    case CTL_CMD_N:
        if (c->hooks.command(c->hooks.ctx, &r, reply, msg, sizeof msg) == 0) {
            json_object_set_new(reply, "msg", json_string(msg));
            control_send(cl, reply);
        } else {
            json_decref(reply);
            control_reply_error(cl, id, msg);
        }
        break;
    }
    json_decref(req);
    return false;
}

/* Idle callback: nothing to do; while it is active the loop polls without blocking. */
static void control_on_wake(uv_idle_t *h)
{
    (void)h;
}

static void control_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void control_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Framer callback: one request line; a line put off is stashed and stops the feed. */
static bool control_on_line(void *ctx, char *line, size_t len)
{
    client *cl = ctx;
    if (control_request(cl, line, len)) {
        cl->stash = strndup(line, len);
        if (!cl->stash)
            control_close_client(cl);
        return false;
    }
    return !cl->closing;
}

/*
 * Feeds n bytes of cl's to the framer. When a request is put off, the client
 * stops reading and joins the deferred queue, holding that line and the
 * bytes after it (at most one read's worth) for a later turn.
 */
static void control_feed(client *cl, const char *data, size_t n)
{
    control *c = cl->c;
    int rc = ctl_framer_feed(&cl->fr, data, n, control_on_line, cl);
    if (rc < 0) {
        control_send(cl, json_pack("{s:s, s:s}", "type", "error", "error", "request line too long"));
        control_close_client(cl);
        return;
    }
    if (rc == 0 || !cl->stash || cl->closing)
        return;
    size_t line = strlen(cl->stash), rest = n - cl->fr.used;
    char *held = malloc(line + 1 + rest);
    if (!held) {
        control_close_client(cl);
        return;
    }
    memcpy(held, cl->stash, line);
    held[line] = '\n';
    memcpy(held + line + 1, data + cl->fr.used, rest);
    free(cl->stash);
    cl->stash = NULL;
    free(cl->held);   /* data may point into it: copied above */
    cl->held = held;
    cl->held_len = line + 1 + rest;
    uv_read_stop((uv_stream_t *)&cl->pipe);
    cl->deferred = true;
    cl->dnext = NULL;
    *c->dq_tail = cl;
    c->dq_tail = &cl->dnext;
    uv_idle_start(&c->wake, control_on_wake);
}

static void control_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char slab[64 * 1024];   /* the loop is single-threaded; data is copied out at once */
    *buf = uv_buf_init(slab, sizeof slab);
}

static void control_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    client *cl = s->data;
    if (nread < 0) {
        control_close_client(cl);
        return;
    }
    control_feed(cl, buf->base, (size_t)nread);
}

/*
 * Each loop turn, before polling: a new budget, spent first on the clients
 * whose requests were put off, in order (the first always runs).
 */
static void control_on_turn(uv_prepare_t *h)
{
    control *c = h->data;
    c->spent_ns = 0;
    while (c->dq && (c->spent_ns == 0 || c->spent_ns < CONTROL_TURN_BUDGET_MS * 1000000ull)) {
        client *cl = c->dq;
        c->dq = cl->dnext;
        if (!c->dq)
            c->dq_tail = &c->dq;
        cl->deferred = false;
        char *held = cl->held;
        size_t n = cl->held_len;
        cl->held = NULL;
        control_feed(cl, held, n);
        free(held);
        if (!cl->deferred && !cl->closing)
            uv_read_start((uv_stream_t *)&cl->pipe, control_alloc, control_on_read);
    }
    if (!c->dq)
        uv_idle_stop(&c->wake);
    control_flush_all(c);
}

/* After the loop polled: what its callbacks sent goes out this turn. */
static void control_on_polled(uv_check_t *h)
{
    control_flush_all(h->data);
}

static void control_on_connection(uv_stream_t *server, int status)
{
    control *c = server->data;
    if (status < 0)
        return;
    client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return;
    cl->c = c;
    cl->follow_id = -1;
    cl->fr.max = CTL_LINE_MAX;
    uv_pipe_init(c->loop, &cl->pipe, 0);
    cl->pipe.data = cl;
    if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0) {
        uv_close((uv_handle_t *)&cl->pipe, control_on_client_closed);
        return;
    }
    cl->next = c->clients;
    c->clients = cl;
    c->nclients++;
    if (c->nclients > CONTROL_CLIENTS_MAX) {
        /* full: the client furthest behind (or the oldest) makes room, so a
         * crowd of clients that never read cannot lock out `drover ls` */
        client *worst = control_slowest(c, cl);
        if (worst) {
            control_close_client(worst);
        } else {
            char msg[96];
            snprintf(msg, sizeof msg, "too many control clients (%d): try again later", CONTROL_CLIENTS_MAX);
            control_send(cl, json_pack("{s:s, s:s}", "type", "error", "error", msg));
            control_close_client(cl);
            return;
        }
    }

    /* Only the hub's own user and root may drive it. */
    uv_os_fd_t fd;
    struct ucred uc;
    socklen_t len = sizeof uc;
    if (uv_fileno((uv_handle_t *)&cl->pipe, &fd) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) != 0 ||
        (uc.uid != getuid() && uc.uid != 0)) {
        control_send(cl, json_pack("{s:s, s:s}", "type", "error", "error",
                                   "permission denied: only the hub's owner and root may connect"));
        control_close_client(cl);
        return;
    }
    uv_read_start((uv_stream_t *)&cl->pipe, control_alloc, control_on_read);
}

/* ---- publishing --------------------------------------------------------- */

/* Filters for control_send_all. arg: a bool, the lean form (NULL: either). */
static bool control_wants_state(const client *cl, const void *arg)
{
    return cl->subscribed && (!arg || cl->lean == *(const bool *)arg);
}

static bool control_wants_output(const client *cl, const void *arg)
{
    return cl->streaming && cl->format == *(const ctl_format *)arg;
}

static bool control_wants_event(const client *cl, const void *arg)
{
    (void)arg;
    return cl->subscribed || cl->following;
}

typedef struct {
    const char *app;
    int id;
} control_log_target;

static bool control_wants_log(const client *cl, const void *arg)
{
    const control_log_target *t = arg;
    return cl->following && (!cl->follow_app[0] || strcmp(cl->follow_app, t->app) == 0) &&
           (cl->follow_id < 0 || cl->follow_id == t->id);
}

/* True when some open client passes want (so nothing is built for nobody). */
static bool control_any(const control *c, bool (*want)(const client *cl, const void *arg), const void *arg)
{
    for (const client *cl = c->clients; cl; cl = cl->next)
        if (!cl->closing && want(cl, arg))
            return true;
    return false;
}

void control_publish_state(control *c)
{
    /* Queues that grew large and drained (clients dropped or caught up) left
     * the heap large: glibc keeps freed pages until asked to give them back. */
    if (c->peak > 1024 * 1024 && c->queued < c->peak / 4) {
        malloc_trim(0);
        c->peak = c->queued;
    }
    for (ctl_format f = CTL_FORMAT_NDJSON; f <= CTL_FORMAT_PROM; f++) {
        if (!control_any(c, control_wants_output, &f))
            continue;
        char *text = c->hooks.render(c->hooks.ctx, f);
        json_t *o = json_pack("{s:s, s:s, s:s?}", "type", "output", "format", ctl_format_name(f), "text", text);
        free(text);
        control_send_all(c, o, control_wants_output, &f);
    }
    if (!control_any(c, control_wants_state, NULL))
        return;
    json_t *snap = c->hooks.snapshot(c->hooks.ctx, false);
    json_object_set_new(snap, "type", json_string("state"));
    /* built once: the full form first, then the same object made lean */
    static const bool full = false, lean = true;
    if (control_any(c, control_wants_state, &full))
        control_send_all(c, json_incref(snap), control_wants_state, &full);
    if (control_any(c, control_wants_state, &lean)) {
        control_lean(snap);
        control_send_all(c, json_incref(snap), control_wants_state, &lean);
    }
    json_decref(snap);
}

void control_publish_event(control *c, const ctl_event *e)
{
    if (control_any(c, control_wants_event, NULL))
        control_send_all(c, ctl_event_json(e), control_wants_event, NULL);
}

json_t *control_log_json(const char *app, int id, const logs_line *line)
{
    /* JSON carries UTF-8 only: an invalid byte is shown as U+FFFD (the file keeps it) */
    static char text[LOGS_UTF8_CAP(LOGS_LINE_MAX)];   /* the loop is single-threaded */
    size_t n = logs_line_utf8(line->text, line->len, text, sizeof text);
    json_t *o = json_pack("{s:s, s:f, s:s, s:i, s:s, s:s%}", "type", "log", "ts", line->ts, "app", app,
                          "id", id, "stream", line->stream == LOGS_ERR ? "err" : "out", "text", text, n);
    if (o && line->pid > 0)
        json_object_set_new(o, "pid", json_integer(line->pid));   /* a process drover did not start */
    return o;
}

void control_publish_log(control *c, const char *app, int id, const logs_line *line)
{
    control_log_target t = {app, id};
    if (control_any(c, control_wants_log, &t))
        control_send_all(c, control_log_json(app, id, line), control_wants_log, &t);
}

/* ---- life --------------------------------------------------------------- */

/* Close callback of the server and the turn handles: the last one frees c. */
static void control_on_server_closed(uv_handle_t *h)
{
    control *c = h->data;
    if (--c->handles > 0)
        return;
    json_decref(c->hello);
    free(c);
}

control *control_start(uv_loop_t *loop, const char *path, int fd, unsigned hub_kind, json_t *hello,
                       const control_hooks *hooks, char *err, size_t errcap)
{
    control *c = calloc(1, sizeof *c);
    if (!c || strlen(path) >= sizeof c->path) {
        snprintf(err, errcap, "cannot set up the control socket %s", path);
        free(c);
        json_decref(hello);
        return NULL;
    }
    c->loop = loop;
    c->hooks = *hooks;
    c->kind = hub_kind;
    c->hello = hello;
    snprintf(c->path, sizeof c->path, "%s", path);
    uv_pipe_init(loop, &c->server, 0);
    c->server.data = c;
    c->handles = 1;
    int rc;
    if (fd >= 0) {
        /* an upgrade's: bound and listening; clients queued meanwhile wait in its backlog */
        rc = uv_pipe_open(&c->server, fd);
    } else {
        unlink(path);   /* stale: the caller holds the namespace lock */
        rc = uv_pipe_bind(&c->server, path);
        if (rc == 0)
            chmod(path, 0600);
    }
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&c->server, CONTROL_CLIENTS_MAX, control_on_connection);
    if (rc != 0) {
        snprintf(err, errcap, "cannot listen on %s: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)&c->server, control_on_server_closed);  /* frees c */
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) == 0)
        c->ino = st.st_ino;
    c->dq_tail = &c->dq;
    uv_prepare_init(loop, &c->turn);
    uv_idle_init(loop, &c->wake);
    uv_check_init(loop, &c->polled);
    c->turn.data = c->wake.data = c->polled.data = c;
    c->handles += 3;
    uv_prepare_start(&c->turn, control_on_turn);
    uv_check_start(&c->polled, control_on_polled);
    return c;
}

void control_stop(control *c)
{
    if (!c)
        return;
    while (c->clients)
        control_close_client(c->clients);
    struct stat st;
    if (stat(c->path, &st) == 0 && st.st_ino == c->ino)
        unlink(c->path);
    uv_close((uv_handle_t *)&c->turn, control_on_server_closed);
    uv_close((uv_handle_t *)&c->wake, control_on_server_closed);
    uv_close((uv_handle_t *)&c->polled, control_on_server_closed);
    uv_close((uv_handle_t *)&c->server, control_on_server_closed);
}

int control_listen_fd(const control *c)
{
    uv_os_fd_t fd;
    return uv_fileno((const uv_handle_t *)&c->server, &fd) == 0 ? fd : -1;
}
