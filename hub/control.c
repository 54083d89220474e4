/*
 * control.c — the control socket server.
 *
 * Each client is a libuv pipe with a line buffer. Requests are parsed with
 * jansson; answers and pushed messages are one JSON object per line. A
 * client that does not read (its write queue grows past CONTROL_QUEUE_MAX)
 * is dropped rather than letting the hub's memory grow.
 */
#include "control.h"

#include <errno.h>
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
    char       *buf;            /* partial request line */
    size_t      len, cap;
    bool        hello;          /* said a good hello */
    bool        subscribed;
    bool        following;      /* wants log lines */
    char        follow_app[64]; /* "" = every app */
    int         follow_id;      /* -1 = every worker */
    bool        closing;
} client;

struct control {
    uv_loop_t  *loop;
    uv_pipe_t   server;
    control_hooks hooks;
    json_t     *hello;
    client     *clients;
    char        path[108];
    ino_t       ino;
};

/* ---- writing ------------------------------------------------------------ */

typedef struct {
    uv_write_t req;
    char      *data;
} wreq;

static void control_on_written(uv_write_t *w, int status)
{
    (void)status;   /* a failed write surfaces as a read error / EOF */
    wreq *r = (wreq *)w;
    free(r->data);
    free(r);
}

static void control_close_client(client *cl);

/* Sends obj as one line to cl and releases obj. */
static void control_send(client *cl, json_t *obj)
{
    if (!obj)
        return;
    if (cl->closing) {
        json_decref(obj);
        return;
    }
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(obj);
    if (!s)
        return;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&cl->pipe) > CONTROL_QUEUE_MAX) {
        free(s);
        control_close_client(cl);   /* it stopped reading: do not buffer forever */
        return;
    }
    size_t n = strlen(s);
    char *line = realloc(s, n + 1);
    if (!line) {
        free(s);
        return;
    }
    line[n] = '\n';
    wreq *r = malloc(sizeof *r);
    if (!r) {
        free(line);
        return;
    }
    r->data = line;
    uv_buf_t b = uv_buf_init(line, (unsigned)n + 1);
    if (uv_write(&r->req, (uv_stream_t *)&cl->pipe, &b, 1, control_on_written) != 0) {
        free(line);
        free(r);
        control_close_client(cl);
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
    free(cl->buf);
    free(cl);
}

static void control_close_client(client *cl)
{
    if (cl->closing)
        return;
    cl->closing = true;
    control *c = cl->c;
    for (client **pp = &c->clients; *pp; pp = &(*pp)->next)
        if (*pp == cl) {
            *pp = cl->next;
            break;
        }
    uv_close((uv_handle_t *)&cl->pipe, control_on_client_closed);
}

/* Parses "APP" or "APP:ID" into app/id (id -1 when absent). Returns 0 or -1. */
static int control_target(const char *t, char *app, size_t cap, int *id)
{
    const char *colon = strrchr(t, ':');
    *id = -1;
    if (colon) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || v < 0 || v > 1000000)
            return -1;
        *id = (int)v;
    }
    size_t n = colon ? (size_t)(colon - t) : strlen(t);
    if (n >= cap)
        return -1;
    memcpy(app, t, n);
    app[n] = '\0';
    return 0;
}

/* Handles one request line from cl. */
static void control_request(client *cl, const char *line)
{
    control *c = cl->c;
    json_error_t jerr;
    json_t *req = json_loads(line, 0, &jerr);
    if (!json_is_object(req)) {
        json_decref(req);
        char msg[256];
        snprintf(msg, sizeof msg, "not a JSON object: %s", jerr.text);
        control_reply_error(cl, NULL, msg);
        return;
    }
    if (!cl->hello) {
        json_t *v = json_object_get(req, "version");
        if (!json_is_string(json_object_get(req, "hello")) || !json_is_integer(v)) {
            control_send(cl, json_pack("{s:s, s:s}", "type", "error",
                                       "error", "say hello first: {\"hello\":\"drover\",\"version\":1}"));
            control_close_client(cl);
        } else if (json_integer_value(v) != CONTROL_VERSION) {
            char msg[160];
            snprintf(msg, sizeof msg, "protocol version %lld is not supported: this hub speaks version %d",
                     (long long)json_integer_value(v), CONTROL_VERSION);
            control_send(cl, json_pack("{s:s, s:s, s:i}", "type", "error", "error", msg,
                                       "version", CONTROL_VERSION));
            control_close_client(cl);
        } else {
            cl->hello = true;
            json_t *h = json_deep_copy(c->hello);
            json_object_set_new(h, "type", json_string("hello"));
            json_object_set_new(h, "version", json_integer(CONTROL_VERSION));
            control_send(cl, h);
        }
        json_decref(req);
        return;
    }

    json_t *id = json_object_get(req, "id");
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (!cmd) {
        control_reply_error(cl, id, "missing \"cmd\"");
    } else if (strcmp(cmd, "ls") == 0 || strcmp(cmd, "subscribe") == 0) {
        bool sub = cmd[0] == 's';
        json_t *snap = c->hooks.snapshot(c->hooks.ctx, sub);
        json_object_set_new(snap, "type", json_string("reply"));
        json_object_set(snap, "id", id ? id : json_null());
        json_object_set_new(snap, "ok", json_true());
        control_send(cl, snap);
        if (sub)
            cl->subscribed = true;
    } else if (strcmp(cmd, "unsubscribe") == 0) {
        cl->subscribed = false;
        cl->following = false;
        control_send(cl, json_pack("{s:s, s:O?, s:b}", "type", "reply", "id", id, "ok", 1));
    } else if (strcmp(cmd, "logs") == 0) {
        char app[64] = "";
        int wid = -1;
        const char *t = json_string_value(json_object_get(req, "target"));
        if (t && *t && control_target(t, app, sizeof app, &wid) != 0) {
            char msg[256];
            snprintf(msg, sizeof msg, "bad target '%.100s': use APP or APP:ID", t);
            control_reply_error(cl, id, msg);
        } else {
            json_t *n = json_object_get(req, "lines");
            json_int_t lines = json_is_integer(n) ? json_integer_value(n) : 100;
            if (lines < 0)
                lines = 0;
            json_t *arr = json_array();
            c->hooks.logs_tail(c->hooks.ctx, app[0] ? app : NULL, wid, (size_t)lines, arr);
            control_send(cl, json_pack("{s:s, s:O?, s:b, s:o}", "type", "reply", "id", id, "ok", 1,
                                       "lines", arr));
            if (json_is_true(json_object_get(req, "follow"))) {
                cl->following = true;
                snprintf(cl->follow_app, sizeof cl->follow_app, "%s", app);
                cl->follow_id = wid;
            }
        }
    } else {
        char msg[512] = "";
        int rc = c->hooks.command(c->hooks.ctx, cmd, req, msg, sizeof msg);
        if (rc == 0)
            control_send(cl, json_pack("{s:s, s:O?, s:b, s:s}", "type", "reply", "id", id, "ok", 1, "msg", msg));
        else
            control_send(cl, json_pack("{s:s, s:O?, s:b, s:s}", "type", "reply", "id", id, "ok", 0, "error", msg));
    }
    json_decref(req);
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
    for (ssize_t i = 0; i < nread && !cl->closing; i++) {
        char ch = buf->base[i];
        if (ch == '\n') {
            if (cl->len < cl->cap || (cl->buf = realloc(cl->buf, cl->cap = cl->cap ? cl->cap : 256))) {
                cl->buf[cl->len] = '\0';
                if (cl->len)
                    control_request(cl, cl->buf);
            }
            cl->len = 0;
            continue;
        }
        if (cl->len + 1 >= cl->cap) {
            if (cl->cap >= CONTROL_LINE_MAX) {
                control_send(cl, json_pack("{s:s, s:s}", "type", "error", "error", "request line too long"));
                control_close_client(cl);
                return;
            }
            size_t nc = cl->cap ? cl->cap * 2 : 256;
            char *nb = realloc(cl->buf, nc);
            if (!nb) {
                control_close_client(cl);
                return;
            }
            cl->buf = nb;
            cl->cap = nc;
        }
        cl->buf[cl->len++] = ch;
    }
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
    uv_pipe_init(c->loop, &cl->pipe, 0);
    cl->pipe.data = cl;
    if (uv_accept(server, (uv_stream_t *)&cl->pipe) != 0) {
        uv_close((uv_handle_t *)&cl->pipe, control_on_client_closed);
        return;
    }
    cl->next = c->clients;
    c->clients = cl;

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

void control_publish_state(control *c)
{
    json_t *snap = NULL;
    for (client *cl = c->clients, *next; cl; cl = next) {
        next = cl->next;
        if (!cl->subscribed)
            continue;
        if (!snap) {
            snap = c->hooks.snapshot(c->hooks.ctx, false);
            json_object_set_new(snap, "type", json_string("state"));
        }
        control_send(cl, json_incref(snap));
    }
    json_decref(snap);
}

void control_publish_event(control *c, const ctl_event *e)
{
    json_t *msg = NULL;
    for (client *cl = c->clients, *next; cl; cl = next) {
        next = cl->next;
        if (!cl->subscribed && !cl->following)
            continue;
        if (!msg)
            msg = ctl_event_json(e);
        control_send(cl, json_incref(msg));
    }
    json_decref(msg);
}

json_t *control_log_json(const char *app, int id, const logs_line *line)
{
    return json_pack("{s:s, s:f, s:s, s:i, s:s, s:s%}", "type", "log", "ts", line->ts, "app", app,
                     "id", id, "stream", line->stream == LOGS_ERR ? "err" : "out",
                     "text", line->text, line->len);
}

void control_publish_log(control *c, const char *app, int id, const logs_line *line)
{
    json_t *msg = NULL;
    for (client *cl = c->clients, *next; cl; cl = next) {
        next = cl->next;
        if (!cl->following || (cl->follow_app[0] && strcmp(cl->follow_app, app) != 0) ||
            (cl->follow_id >= 0 && cl->follow_id != id))
            continue;
        if (!msg)
            msg = control_log_json(app, id, line);
        control_send(cl, json_incref(msg));
    }
    json_decref(msg);
}

/* ---- life --------------------------------------------------------------- */

static void control_on_server_closed(uv_handle_t *h)
{
    control *c = h->data;
    json_decref(c->hello);
    free(c);
}

control *control_start(uv_loop_t *loop, const char *path, json_t *hello,
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
    c->hello = hello;
    snprintf(c->path, sizeof c->path, "%s", path);
    unlink(path);   /* stale: the caller holds the namespace lock */
    uv_pipe_init(loop, &c->server, 0);
    c->server.data = c;
    int rc = uv_pipe_bind(&c->server, path);
    if (rc == 0) {
        chmod(path, 0600);
        rc = uv_listen((uv_stream_t *)&c->server, 64, control_on_connection);
    }
    if (rc != 0) {
        snprintf(err, errcap, "cannot listen on %s: %s", path, uv_strerror(rc));
        uv_close((uv_handle_t *)&c->server, control_on_server_closed);  /* frees c */
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) == 0)
        c->ino = st.st_ino;
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
    uv_close((uv_handle_t *)&c->server, control_on_server_closed);
}
