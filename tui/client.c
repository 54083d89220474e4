/*
 * client.c — the view side of the control protocol.
 */
#include "tui/client.h"
#include "hub/paths.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CLIENT_LINE_MAX (64 * 1024 * 1024)  /* a snapshot of thousands of workers fits */

int client_ctl_path(const char *socket_dir, const char *ns, char *out, size_t cap,
                    char *err, size_t errcap)
{
    char dir[PATHS_MAX];
    if (paths_dir(socket_dir, ns, false, dir, sizeof dir, err, errcap) != 0)
        return -1;
    if (paths_join(dir, "ctl.sock", out, cap) != 0) {
        snprintf(err, errcap, "socket path too long");
        return -1;
    }
    return 0;
}

/* ---- blocking ----------------------------------------------------------- */

#define CLIENT_PENDING_MAX 4096   /* pushed messages kept while waiting for a reply */
#define CLIENT_SSH_HELLO_MS 20000 /* ssh's own connect and login come before the hub's hello */

struct client_sync {
    int        fd;
    sshlink   *link;     /* the ssh child behind fd, or NULL for the unix socket */
    ctl_framer fr;
    json_t    *queue;    /* messages read and not yet returned, oldest first */
    long       next_id;
};

static client_sync *client_sync_start(int fd, sshlink *link, const char *where, int version, json_t **hello,
                                      char *err, size_t errcap);

static long client_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes all of buf; returns 0 or -1. */
static int client_write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Sends obj (released) as one line. */
static int client_sync_send(client_sync *c, json_t *obj)
{
    size_t n;
    char *line = ctl_line(obj, &n);
    int rc = line ? client_write_all(c->fd, line, n) : -1;
    free(line);
    return rc;
}

/* Framer callback: queues each line that parses as JSON. */
static bool client_sync_on_line(void *ctx, char *line, size_t len)
{
    client_sync *c = ctx;
    json_t *m = json_loadb(line, len, 0, NULL);
    if (m)
        json_array_append_new(c->queue, m);
    return true;
}

json_t *client_sync_next(client_sync *c, int timeout_ms)
{
    long deadline = timeout_ms < 0 ? -1 : client_ms() + timeout_ms;
    for (;;) {
        if (json_array_size(c->queue) > 0) {
            json_t *m = json_incref(json_array_get(c->queue, 0));
            json_array_remove(c->queue, 0);
            return m;
        }
        int wait = -1;
        if (deadline >= 0) {
            wait = (int)(deadline - client_ms());
            if (wait <= 0)
                return NULL;
        }
        /* ssh's stderr is drained as it comes, so ssh never blocks on it */
        struct pollfd pf[2] = {{.fd = c->fd, .events = POLLIN},
                               {.fd = c->link ? sshlink_err_fd(c->link) : -1, .events = POLLIN}};
        int pr = poll(pf, 2, wait);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return NULL;
        if (pf[1].revents)
            sshlink_read_err(c->link);
        if (!pf[0].revents)
            continue;
        char buf[65536];
        ssize_t r = read(c->fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || ctl_framer_feed(&c->fr, buf, (size_t)r, client_sync_on_line, c) < 0)
            return NULL;
    }
}

int client_unix_connect(const char *path, char *err, size_t errcap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errcap, "socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (e == ENOENT || e == ECONNREFUSED)
            snprintf(err, errcap, "no hub is running here (%s); start one with 'drover run' or 'drover monit'", path);
        else
            snprintf(err, errcap, "cannot connect to %s: %s", path, strerror(e));
        return -1;
    }
    return fd;
}

client_sync *client_sync_open(const char *path, int version, json_t **hello, char *err, size_t errcap)
{
    int fd = client_unix_connect(path, err, errcap);
    if (fd < 0)
        return NULL;
    return client_sync_start(fd, NULL, path, version, hello, err, errcap);
}

client_sync *client_sync_open_ssh(const sshlink_target *t, const char *remote, const char *ns,
                                  const char *socket_dir, int version, json_t **hello, char *err, size_t errcap)
{
    sshlink *l = sshlink_start(t, remote, ns, socket_dir, err, errcap);
    if (!l)
        return NULL;
    return client_sync_start(sshlink_fd(l), l, t->spec, version, hello, err, errcap);
}

/*
 * The common half of the two opens: fd is a connected stream (the socket,
 * or the ssh child's end of its socketpair, then owned by link), where names
 * it in messages. Says hello and checks the answer. Takes fd and link.
 */
static client_sync *client_sync_start(int fd, sshlink *link, const char *where, int version, json_t **hello,
                                      char *err, size_t errcap)
{
    client_sync *c = calloc(1, sizeof *c);
    json_t *q = json_array();
    if (!c || !q) {
        if (link)
            sshlink_free(link);
        else
            close(fd);
        free(c);
        json_decref(q);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    c->fd = fd;
    c->link = link;
    c->queue = q;
    c->fr.max = CLIENT_LINE_MAX;
    json_t *h = NULL;
    if (client_sync_send(c, json_pack("{s:s, s:i}", "hello", "drover", "version", version)) != 0 ||
        !(h = client_sync_next(c, link ? CLIENT_SSH_HELLO_MS : 5000))) {
        if (!link || sshlink_error(link, err, errcap) != 0)
            snprintf(err, errcap, "the hub at %s did not answer", where);
        client_sync_close(c);
        return NULL;
    }
    const char *type = json_string_value(json_object_get(h, "type"));
    if (!type || strcmp(type, "hello") != 0) {
        const char *e = json_string_value(json_object_get(h, "error"));
        snprintf(err, errcap, "%s", e ? e : "the hub refused the connection");
        json_decref(h);
        client_sync_close(c);
        return NULL;
    }
    if (hello)
        *hello = h;
    else
        json_decref(h);
    return c;
}

json_t *client_sync_call(client_sync *c, json_t *req, int timeout_ms, char *err, size_t errcap)
{
    long id = ++c->next_id;
    json_object_set_new(req, "id", json_integer(id));
    if (client_sync_send(c, json_incref(req)) != 0) {
        snprintf(err, errcap, "lost the connection to the hub");
        return NULL;
    }
    /* Messages pushed before the reply (an event the command caused, a log
     * line) are kept, in order, for client_sync_next. */
    json_t *held = json_array();
    json_t *res = NULL;
    long deadline = client_ms() + timeout_ms;
    for (;;) {
        long left = deadline - client_ms();
        json_t *m = left > 0 ? client_sync_next(c, (int)left) : NULL;
        if (!m) {
            if (!c->link || sshlink_error(c->link, err, errcap) != 0)
                snprintf(err, errcap, "no reply from the hub within %d ms", timeout_ms);
            break;
        }
        const char *type = json_string_value(json_object_get(m, "type"));
        if (type && strcmp(type, "reply") == 0 && json_integer_value(json_object_get(m, "id")) == id) {
            res = m;
            break;
        }
        if (type && strcmp(type, "error") == 0) {
            snprintf(err, errcap, "%s", json_string_value(json_object_get(m, "error")));
            json_decref(m);
            break;
        }
        if (json_array_size(held) < CLIENT_PENDING_MAX)
            json_array_append(held, m);
        json_decref(m);
    }
    json_array_extend(held, c->queue);
    json_decref(c->queue);
    c->queue = held;
    return res;
}

void client_sync_close(client_sync *c)
{
    if (!c)
        return;
    if (c->link)
        sshlink_free(c->link);   /* closes fd too */
    else
        close(c->fd);
    ctl_framer_free(&c->fr);
    json_decref(c->queue);
    free(c);
}

/* ---- asynchronous --------------------------------------------------------- */

/* Over ssh, each attempt is one ssh child; its state: */
typedef enum {
    CLIENT_SSH_IDLE,      /* no child: waiting to retry (or never started) */
    CLIENT_SSH_RUNNING,   /* the child runs; the stream is open */
    CLIENT_SSH_ENDING,    /* the attempt is over: its handles close, then why is reported */
} client_ssh_state;

#define CLIENT_SSH_BACKOFF_MAX_MS 30000

struct client {
    uv_loop_t  *loop;
    char        path[108];
    unsigned    retry_ms;
    /* over ssh (tui/sshlink.h) instead of path */
    bool        ssh;
    sshlink_target target;
    char        remote[512], ns[64], sockdir[PATHS_MAX];   /* remote/sockdir "" = default */
    client_ssh_state sstate;
    uv_process_t proc;
    uv_pipe_t   errpipe;
    int         attempt;       /* handles of the current ssh attempt not yet closed */
    bool        proc_alive;    /* exit_cb not called yet */
    int64_t     exit_status;
    int         term_signal;
    char        why[320];      /* the reason when the attempt was ended from here ("" = ask ssh) */
    char        errtail[SSHLINK_ERR_KEEP];   /* the last bytes of ssh's stderr */
    size_t      errlen;
    unsigned    backoff_ms;    /* next retry delay: doubles per failed attempt, up to the max */
    client_callbacks cb;
    void       *ctx;
    uv_pipe_t   pipe;
    uv_connect_t conn;
    uv_timer_t  retry;
    bool        pipe_open;     /* pipe handle initialised and not closed */
    bool        connected;     /* hello done */
    bool        freeing;
    int         closing;       /* handles still closing before free */
    ctl_framer  fr;
    long        next_id;
};

static void client_connect(client *c);

static void client_on_retry(uv_timer_t *t)
{
    client_connect(t->data);
}

static void client_maybe_free(client *c)
{
    if (c->freeing && c->closing == 0 && c->attempt == 0) {
        ctl_framer_free(&c->fr);
        free(c);
    }
}

static void client_on_pipe_closed(uv_handle_t *h)
{
    client *c = h->data;
    c->closing--;
    if (c->freeing) {
        client_maybe_free(c);
        return;
    }
    uv_timer_start(&c->retry, client_on_retry, c->retry_ms, 0);
}

static void client_ssh_end(client *c, const char *why);

/* Drops the connection (reporting why) and schedules a retry. */
static void client_drop(client *c, const char *why)
{
    if (c->ssh) {
        c->connected = false;
        ctl_framer_free(&c->fr);
        client_ssh_end(c, why);
        return;
    }
    bool was = c->connected;
    c->connected = false;
    ctl_framer_free(&c->fr);
    if (c->pipe_open) {
        c->pipe_open = false;
        c->closing++;
        uv_close((uv_handle_t *)&c->pipe, client_on_pipe_closed);
    }
    if (c->cb.on_disconnect && (was || why))
        c->cb.on_disconnect(c->ctx, why ? why : "disconnected");
}

typedef struct {
    uv_write_t req;
    char      *data;
} client_wreq;

static void client_on_written(uv_write_t *w, int status)
{
    (void)status;
    client_wreq *r = (client_wreq *)w;
    free(r->data);
    free(r);
}

/* Queues obj (released) as one line. */
static int client_write(client *c, json_t *obj)
{
    size_t n;
    char *line = ctl_line(obj, &n);
    if (!line)
        return -1;
    client_wreq *r = malloc(sizeof *r);
    if (!r) {
        free(line);
        return -1;
    }
    r->data = line;
    uv_buf_t b = uv_buf_init(line, (unsigned)n);
    if (uv_write(&r->req, (uv_stream_t *)&c->pipe, &b, 1, client_on_written) != 0) {
        free(line);
        free(r);
        return -1;
    }
    return 0;
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char slab[65536];   /* one loop thread; the framer copies out at once */
    *buf = uv_buf_init(slab, sizeof slab);
}

/* Framer callback: the hello first, then every message to on_message. */
static bool client_on_line(void *ctx, char *line, size_t len)
{
    client *c = ctx;
    json_t *m = json_loadb(line, len, 0, NULL);
    if (!m)
        return true;
    const char *type = json_string_value(json_object_get(m, "type"));
    if (!c->connected) {
        if (type && strcmp(type, "hello") == 0) {
            c->connected = true;
            if (c->ssh) {
                uv_timer_stop(&c->retry);   /* the hello deadline */
                c->backoff_ms = c->retry_ms;
            }
            if (c->cb.on_hello)
                c->cb.on_hello(c->ctx, m);
        } else {
            const char *e = json_string_value(json_object_get(m, "error"));
            char why[300];
            snprintf(why, sizeof why, "%s", e ? e : "the hub refused the connection");
            json_decref(m);
            client_drop(c, why);
            return false;
        }
    } else if (c->cb.on_message) {
        c->cb.on_message(c->ctx, m);
    }
    json_decref(m);
    return c->pipe_open;
}

static void client_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    client *c = s->data;
    if (nread < 0) {
        if (c->ssh)   /* EOF, or a reset when ssh ended with our hello unread: ssh's exit and stderr say why */
            client_drop(c, NULL);
        else
            client_drop(c, nread == UV_EOF ? "the hub closed the connection" : uv_strerror((int)nread));
        return;
    }
    if (ctl_framer_feed(&c->fr, buf->base, (size_t)nread, client_on_line, c) < 0)
        client_drop(c, "a message from the hub was too long");
}

static void client_on_connect(uv_connect_t *req, int status)
{
    client *c = req->data;
    if (status < 0) {
        client_drop(c, NULL);   /* not running (yet): retry quietly */
        return;
    }
    if (client_write(c, json_pack("{s:s, s:i}", "hello", "drover", "version", CTL_VERSION)) != 0) {
        client_drop(c, "cannot write to the hub");
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, client_alloc, client_on_read);
}

/* ---- the ssh transport ----------------------------------------------------- */

#define CLIENT_SSH_HELLO_WAIT_MS 20000   /* ssh's connect and login, then the hub's hello */

/* One handle of the ssh attempt closed; when the last one has, the attempt is over. */
static void client_ssh_closed(uv_handle_t *h)
{
    client *c = h->data;
    if (--c->attempt > 0)
        return;
    c->sstate = CLIENT_SSH_IDLE;
    if (c->freeing) {
        client_maybe_free(c);
        return;
    }
    /* why: ours, else from ssh's stderr and exit (W_EXITCODE: as waitpid would have it) */
    char why[SSHLINK_ERR_KEEP + 400];
    if (c->why[0])
        snprintf(why, sizeof why, "%s", c->why);
    else if (c->errlen == 0 && c->exit_status == 0 && c->term_signal == 0)
        snprintf(why, sizeof why, "the hub closed the connection");   /* the remote bridge ended cleanly */
    else
        sshlink_why(c->errtail, c->errlen, true, W_EXITCODE((int)c->exit_status & 0xff, c->term_signal), why,
                    sizeof why);
    if (c->cb.on_disconnect)
        c->cb.on_disconnect(c->ctx, why);
    uv_timer_start(&c->retry, client_on_retry, c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > CLIENT_SSH_BACKOFF_MAX_MS ? CLIENT_SSH_BACKOFF_MAX_MS : c->backoff_ms * 2;
}

static void client_ssh_on_exit(uv_process_t *p, int64_t status, int sig)
{
    client *c = p->data;
    c->proc_alive = false;
    c->exit_status = status;
    c->term_signal = sig;
    /* the stream is not closed here: what ssh passed on before it ended is
     * still to be read, and its EOF ends the attempt */
    uv_close((uv_handle_t *)p, client_ssh_closed);
}

static void client_ssh_err_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    static char slab[SSHLINK_ERR_KEEP / 2];
    *buf = uv_buf_init(slab, sizeof slab);
}

/* ssh's stderr: its last SSHLINK_ERR_KEEP bytes are kept; at EOF the handle closes. */
static void client_ssh_on_err(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    client *c = s->data;
    if (nread < 0) {
        uv_close((uv_handle_t *)s, client_ssh_closed);
        return;
    }
    size_t n = (size_t)nread;   /* ≤ the slab, half of errtail */
    if (c->errlen + n > sizeof c->errtail) {
        size_t drop = c->errlen + n - sizeof c->errtail;
        memmove(c->errtail, c->errtail + drop, c->errlen - drop);
        c->errlen -= drop;
    }
    memcpy(c->errtail + c->errlen, buf->base, n);
    c->errlen += n;
}

#define CLIENT_SSH_GRACE_MS 2000   /* after the stream's EOF, ssh's time to exit on its own */

static void client_ssh_on_grace(uv_timer_t *t)
{
    client *c = t->data;
    if (c->proc_alive)
        uv_process_kill(&c->proc, SIGTERM);
}

/*
 * Ends the current ssh attempt: closes the stream; ssh's stderr is read to
 * EOF and its exit collected, then client_ssh_closed reports and retries.
 * why: our reason (ssh is told to end at once: SIGTERM), or NULL when the
 * stream ended by itself (ssh gets CLIENT_SSH_GRACE_MS to exit on its own,
 * so its exit status and last words say why).
 */
static void client_ssh_end(client *c, const char *why)
{
    if (c->sstate != CLIENT_SSH_RUNNING)
        return;
    c->sstate = CLIENT_SSH_ENDING;
    if (why && !c->why[0])
        snprintf(c->why, sizeof c->why, "%s", why);
    if (c->pipe_open) {
        c->pipe_open = false;
        uv_close((uv_handle_t *)&c->pipe, client_ssh_closed);
    }
    if (!c->proc_alive)
        return;
    if (why)
        uv_process_kill(&c->proc, SIGTERM);
    else
        uv_timer_start(&c->retry, client_ssh_on_grace, CLIENT_SSH_GRACE_MS, 0);
}

static void client_ssh_on_hello_timeout(uv_timer_t *t)
{
    client *c = t->data;
    if (!c->connected)
        client_drop(c, "unreachable: no answer within 20 s");
}

/* Starts one ssh attempt: the child on a socketpair, its stderr on a pipe, our hello written at once. */
static void client_ssh_connect(client *c)
{
    static sshlink_cmdline cl;   /* one loop thread; uv_spawn copies what it needs */
    char err[320];
    c->why[0] = '\0';
    c->errlen = 0;
    c->exit_status = 0;
    c->term_signal = 0;
    int sv[2] = {-1, -1};
    bool bad = sshlink_argv(&c->target, c->remote[0] ? c->remote : NULL, c->ns, c->sockdir[0] ? c->sockdir : NULL,
                            &cl, err, sizeof err) != 0;
    if (!bad && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(err, sizeof err, "cannot start ssh: %s", strerror(errno));
        bad = true;
    }
    if (bad) {
        /* nothing runs: reported (and retried) through an attempt of one handle */
        snprintf(c->why, sizeof c->why, "%s", err);
        c->sstate = CLIENT_SSH_ENDING;
        c->attempt = 1;
        uv_pipe_init(c->loop, &c->errpipe, 0);
        c->errpipe.data = c;
        uv_close((uv_handle_t *)&c->errpipe, client_ssh_closed);
        return;
    }
    uv_pipe_init(c->loop, &c->pipe, 0);
    c->pipe.data = c;
    uv_pipe_open(&c->pipe, sv[0]);
    c->pipe_open = true;
    uv_pipe_init(c->loop, &c->errpipe, 0);
    c->errpipe.data = c;
    c->attempt = 2;
    uv_stdio_container_t st[3] = {
        {.flags = UV_INHERIT_FD, .data.fd = sv[1]},
        {.flags = UV_INHERIT_FD, .data.fd = sv[1]},
        {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&c->errpipe},
    };
    uv_process_options_t o = {.exit_cb = client_ssh_on_exit, .file = cl.argv[0], .args = cl.argv,
                              .stdio_count = 3, .stdio = st};
    c->proc.data = c;
    int rc = uv_spawn(c->loop, &c->proc, &o);
    close(sv[1]);
    c->attempt++;   /* the process handle, closed after its exit (or at once if it never ran) */
    c->sstate = CLIENT_SSH_RUNNING;
    if (rc != 0) {
        snprintf(c->why, sizeof c->why, "cannot start %s: %s", cl.argv[0], uv_strerror(rc));
        uv_close((uv_handle_t *)&c->proc, client_ssh_closed);
        uv_close((uv_handle_t *)&c->errpipe, client_ssh_closed);
        client_ssh_end(c, NULL);
        return;
    }
    c->proc_alive = true;
    uv_read_start((uv_stream_t *)&c->errpipe, client_ssh_err_alloc, client_ssh_on_err);
    if (client_write(c, json_pack("{s:s, s:i}", "hello", "drover", "version", CTL_VERSION)) != 0) {
        client_drop(c, "cannot write to ssh");
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, client_alloc, client_on_read);
    uv_timer_start(&c->retry, client_ssh_on_hello_timeout, CLIENT_SSH_HELLO_WAIT_MS, 0);
}

static void client_connect(client *c)
{
    if (c->ssh) {
        if (!c->freeing && c->sstate == CLIENT_SSH_IDLE)
            client_ssh_connect(c);
        return;
    }
    if (c->freeing || c->pipe_open)
        return;
    uv_pipe_init(c->loop, &c->pipe, 0);
    c->pipe.data = c;
    c->pipe_open = true;
    c->conn.data = c;
    uv_pipe_connect(&c->conn, &c->pipe, c->path, client_on_connect);
}

client *client_new(uv_loop_t *loop, const char *path, unsigned retry_ms,
                   const client_callbacks *cb, void *ctx)
{
    client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    snprintf(c->path, sizeof c->path, "%s", path);
    c->retry_ms = retry_ms ? retry_ms : 1000;
    c->fr.max = CLIENT_LINE_MAX;
    c->cb = *cb;
    c->ctx = ctx;
    uv_timer_init(loop, &c->retry);
    c->retry.data = c;
    client_connect(c);
    return c;
}

client *client_new_ssh(uv_loop_t *loop, const sshlink_target *t, const char *remote, const char *ns,
                       const char *socket_dir, unsigned retry_ms, const client_callbacks *cb, void *ctx)
{
    client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = loop;
    c->ssh = true;
    c->target = *t;
    snprintf(c->remote, sizeof c->remote, "%s", remote ? remote : "");
    snprintf(c->ns, sizeof c->ns, "%s", ns);
    snprintf(c->sockdir, sizeof c->sockdir, "%s", socket_dir ? socket_dir : "");
    c->retry_ms = c->backoff_ms = retry_ms ? retry_ms : 1000;
    c->fr.max = CLIENT_LINE_MAX;
    c->cb = *cb;
    c->ctx = ctx;
    uv_timer_init(loop, &c->retry);
    c->retry.data = c;
    client_connect(c);
    return c;
}

bool client_connected(const client *c)
{
    return c->connected;
}

long client_send(client *c, json_t *req)
{
    if (!c->connected) {
        json_decref(req);
        return -1;
    }
    long id = ++c->next_id;
    json_object_set_new(req, "id", json_integer(id));
    return client_write(c, req) == 0 ? id : -1;
}

static void client_on_timer_closed(uv_handle_t *h)
{
    client *c = h->data;
    c->closing--;
    client_maybe_free(c);
}

void client_free(client *c)
{
    if (!c)
        return;
    c->freeing = true;
    c->connected = false;
    if (c->ssh) {
        /* ssh is asked to end; the attempt's handles close, then c is freed */
        client_ssh_end(c, "closed");
        if (c->sstate == CLIENT_SSH_ENDING && !uv_is_closing((uv_handle_t *)&c->errpipe)) {
            uv_read_stop((uv_stream_t *)&c->errpipe);
            uv_close((uv_handle_t *)&c->errpipe, client_ssh_closed);
        }
    }
    if (c->pipe_open) {
        c->pipe_open = false;
        c->closing++;
        uv_close((uv_handle_t *)&c->pipe, client_on_pipe_closed);
    }
    c->closing++;
    uv_timer_stop(&c->retry);
    uv_close((uv_handle_t *)&c->retry, client_on_timer_closed);
}
