/*
 * client.c — the view side of the control protocol.
 */
#include "client.h"
#include "paths.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
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

struct client_sync {
    int    fd;
    char  *buf;
    size_t len, cap;
    long   next_id;
};

static long client_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes all of s plus a newline; returns 0 or -1. */
static int client_write_line(int fd, const char *s)
{
    size_t n = strlen(s);
    struct iovec iov[2] = {{(void *)s, n}, {"\n", 1}};
    size_t total = n + 1, done = 0;
    while (done < total) {
        ssize_t w = writev(fd, iov, 2);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)w;
        /* advance the iovecs */
        size_t k = (size_t)w;
        for (int i = 0; i < 2; i++) {
            size_t take = k < iov[i].iov_len ? k : iov[i].iov_len;
            iov[i].iov_base = (char *)iov[i].iov_base + take;
            iov[i].iov_len -= take;
            k -= take;
        }
    }
    return 0;
}

json_t *client_sync_next(client_sync *c, int timeout_ms)
{
    long deadline = timeout_ms < 0 ? -1 : client_ms() + timeout_ms;
    for (;;) {
        char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
        if (nl) {
            *nl = '\0';
            json_t *msg = json_loads(c->buf, 0, NULL);
            size_t used = (size_t)(nl - c->buf) + 1;
            memmove(c->buf, nl + 1, c->len - used);
            c->len -= used;
            if (msg)
                return msg;
            continue;
        }
        if (c->len + 65536 > c->cap) {
            if (c->cap >= CLIENT_LINE_MAX)
                return NULL;
            size_t nc = c->cap ? c->cap * 2 : 65536;
            char *nb = realloc(c->buf, nc);
            if (!nb)
                return NULL;
            c->buf = nb;
            c->cap = nc;
        }
        int wait = -1;
        if (deadline >= 0) {
            wait = (int)(deadline - client_ms());
            if (wait <= 0)
                return NULL;
        }
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pf, 1, wait);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return NULL;
        ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return NULL;
        c->len += (size_t)r;
    }
}

client_sync *client_sync_open(const char *path, int version, json_t **hello, char *err, size_t errcap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errcap, "socket path too long: %s", path);
        return NULL;
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
        return NULL;
    }
    client_sync *c = calloc(1, sizeof *c);
    if (!c) {
        close(fd);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    c->fd = fd;
    char line[64];
    snprintf(line, sizeof line, "{\"hello\":\"drover\",\"version\":%d}", version);
    json_t *h = NULL;
    if (client_write_line(fd, line) != 0 || !(h = client_sync_next(c, 5000))) {
        snprintf(err, errcap, "the hub at %s did not answer", path);
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
    char *s = json_dumps(req, JSON_COMPACT);
    if (!s || client_write_line(c->fd, s) != 0) {
        free(s);
        snprintf(err, errcap, "lost the connection to the hub");
        return NULL;
    }
    free(s);
    long deadline = client_ms() + timeout_ms;
    for (;;) {
        long left = deadline - client_ms();
        json_t *m = left > 0 ? client_sync_next(c, (int)left) : NULL;
        if (!m) {
            snprintf(err, errcap, "no reply from the hub within %d ms", timeout_ms);
            return NULL;
        }
        const char *type = json_string_value(json_object_get(m, "type"));
        if (type && strcmp(type, "reply") == 0 && json_integer_value(json_object_get(m, "id")) == id)
            return m;
        if (type && strcmp(type, "error") == 0) {
            snprintf(err, errcap, "%s", json_string_value(json_object_get(m, "error")));
            json_decref(m);
            return NULL;
        }
        json_decref(m);
    }
}

void client_sync_close(client_sync *c)
{
    if (!c)
        return;
    close(c->fd);
    free(c->buf);
    free(c);
}

/* ---- asynchronous --------------------------------------------------------- */

struct client {
    uv_loop_t  *loop;
    char        path[108];
    unsigned    retry_ms;
    client_callbacks cb;
    void       *ctx;
    uv_pipe_t   pipe;
    uv_connect_t conn;
    uv_timer_t  retry;
    bool        pipe_open;     /* pipe handle initialised and not closed */
    bool        connected;     /* hello done */
    bool        freeing;
    int         closing;       /* handles still closing before free */
    char       *buf;
    size_t      len, cap;
    long        next_id;
};

static void client_connect(client *c);

static void client_on_retry(uv_timer_t *t)
{
    client_connect(t->data);
}

static void client_maybe_free(client *c)
{
    if (c->freeing && c->closing == 0) {
        free(c->buf);
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

/* Drops the connection (reporting why) and schedules a retry. */
static void client_drop(client *c, const char *why)
{
    bool was = c->connected;
    c->connected = false;
    c->len = 0;
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

/* Queues one line (s is consumed). */
static int client_write(client *c, char *s)
{
    size_t n = strlen(s);
    char *line = realloc(s, n + 2);
    if (!line) {
        free(s);
        return -1;
    }
    line[n] = '\n';
    line[n + 1] = '\0';
    client_wreq *r = malloc(sizeof *r);
    if (!r) {
        free(line);
        return -1;
    }
    r->data = line;
    uv_buf_t b = uv_buf_init(line, (unsigned)n + 1);
    if (uv_write(&r->req, (uv_stream_t *)&c->pipe, &b, 1, client_on_written) != 0) {
        free(line);
        free(r);
        return -1;
    }
    return 0;
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    client *c = h->data;
    (void)suggested;
    if (c->cap - c->len < 65536) {
        size_t nc = c->cap ? c->cap * 2 : 131072;
        char *nb = nc <= CLIENT_LINE_MAX ? realloc(c->buf, nc) : NULL;
        if (nb) {
            c->buf = nb;
            c->cap = nc;
        }
    }
    *buf = uv_buf_init(c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void client_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    client *c = s->data;
    (void)buf;
    if (nread < 0) {
        client_drop(c, nread == UV_EOF ? "the hub closed the connection" : uv_strerror((int)nread));
        return;
    }
    c->len += (size_t)nread;
    char *start = c->buf, *nl;
    while (c->pipe_open && (nl = memchr(start, '\n', c->len - (size_t)(start - c->buf)))) {
        *nl = '\0';
        json_t *m = json_loads(start, 0, NULL);
        start = nl + 1;
        if (!m)
            continue;
        const char *type = json_string_value(json_object_get(m, "type"));
        if (!c->connected) {
            if (type && strcmp(type, "hello") == 0) {
                c->connected = true;
                if (c->cb.on_hello)
                    c->cb.on_hello(c->ctx, m);
            } else {
                const char *e = json_string_value(json_object_get(m, "error"));
                char why[300];
                snprintf(why, sizeof why, "%s", e ? e : "the hub refused the connection");
                json_decref(m);
                client_drop(c, why);
                return;
            }
        } else if (c->cb.on_message) {
            c->cb.on_message(c->ctx, m);
        }
        json_decref(m);
    }
    if (!c->pipe_open)
        return;
    size_t rest = c->len - (size_t)(start - c->buf);
    memmove(c->buf, start, rest);
    c->len = rest;
    if (c->len >= CLIENT_LINE_MAX - 65536)
        client_drop(c, "a message from the hub was too long");
}

static void client_on_connect(uv_connect_t *req, int status)
{
    client *c = req->data;
    if (status < 0) {
        client_drop(c, NULL);   /* not running (yet): retry quietly */
        return;
    }
    char hello[64];
    snprintf(hello, sizeof hello, "{\"hello\":\"drover\",\"version\":%d}", CLIENT_VERSION);
    if (client_write(c, strdup(hello)) != 0) {
        client_drop(c, "cannot write to the hub");
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, client_alloc, client_on_read);
}

static void client_connect(client *c)
{
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
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!s || client_write(c, s) != 0)
        return -1;
    return id;
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
    if (c->pipe_open) {
        c->pipe_open = false;
        c->closing++;
        uv_close((uv_handle_t *)&c->pipe, client_on_pipe_closed);
    }
    c->closing++;
    uv_timer_stop(&c->retry);
    uv_close((uv_handle_t *)&c->retry, client_on_timer_closed);
}
