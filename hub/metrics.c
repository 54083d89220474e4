/*
 * metrics.c — /metrics over HTTP with libmicrohttpd in the hub's loop, and
 * the text-file route.
 *
 * libmicrohttpd is loaded with dlopen when --metrics is given, not linked:
 * Debian builds it with HTTPS, and the GnuTLS stack it pulls in costs every
 * hub about 2 MiB of resident library pages whether or not it serves
 * metrics (measured at 64 workers: 9.4 → 7.3 MiB without it).
 *
 * libmicrohttpd runs without threads of its own (MHD_USE_EPOLL): its epoll
 * descriptor is one uv_poll in our loop, and its timeouts one uv_timer, so
 * every callback runs on the loop thread and needs no lock. Responses are
 * reference-counted by libmicrohttpd: each interval's body is one response
 * object (plus its gzip'd twin) queued on every scrape; a connection still
 * sending an older body keeps that one alive until it is done.
 *
 * Deadlines: libmicrohttpd's own timeout is on inactivity, so a client that
 * sends a byte every few seconds would keep its connection for ever, and
 * METRICS_CONN_MAX of them would keep every scrape in the backlog. Each
 * connection therefore gets a record (metrics_conn, told by libmicrohttpd's
 * connection and request-completed callbacks) with the time its current
 * step began; a timer armed for the earliest deadline shuts the socket
 * down (shutdown, not close: the descriptor stays libmicrohttpd's), and
 * libmicrohttpd then sees the end of the stream and closes the connection
 * itself.
 */
#include "hub/metrics.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* The libmicrohttpd functions the server calls, resolved by metrics_load. */
static struct {
    void *lib;
    __typeof__(MHD_start_daemon) *start_daemon;
    __typeof__(MHD_stop_daemon) *stop_daemon;
    __typeof__(MHD_get_daemon_info) *get_daemon_info;
    __typeof__(MHD_run) *run;
    __typeof__(MHD_get_timeout) *get_timeout;
    __typeof__(MHD_queue_response) *queue_response;
    __typeof__(MHD_create_response_from_buffer) *create_response_from_buffer;
    __typeof__(MHD_add_response_header) *add_response_header;
    __typeof__(MHD_destroy_response) *destroy_response;
    __typeof__(MHD_lookup_connection_value) *lookup_connection_value;
    __typeof__(MHD_get_connection_info) *get_connection_info;
} mhd;

#define MHD_SYM(f) {"MHD_" #f, offsetof(__typeof__(mhd), f)}
static const struct {
    const char *name;
    size_t      off;
} metrics_syms[] = {
    MHD_SYM(start_daemon), MHD_SYM(stop_daemon), MHD_SYM(get_daemon_info), MHD_SYM(run), MHD_SYM(get_timeout),
    MHD_SYM(queue_response), MHD_SYM(create_response_from_buffer), MHD_SYM(add_response_header),
    MHD_SYM(destroy_response), MHD_SYM(lookup_connection_value), MHD_SYM(get_connection_info),
};

/* Loads libmicrohttpd once. Returns 0, or -1 with the reason in err. */
static int metrics_load(char *err, size_t errcap)
{
    if (mhd.lib)
        return 0;
    void *lib = dlopen("libmicrohttpd.so.12", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(err, errcap, "--metrics needs libmicrohttpd (Debian: libmicrohttpd12): %s", dlerror());
        return -1;
    }
    for (size_t i = 0; i < sizeof metrics_syms / sizeof metrics_syms[0]; i++) {
        void *f = dlsym(lib, metrics_syms[i].name);
        if (!f) {
            snprintf(err, errcap, "--metrics: libmicrohttpd has no %s", metrics_syms[i].name);
            dlclose(lib);
            return -1;
        }
        memcpy((char *)&mhd + metrics_syms[i].off, &f, sizeof f);
    }
    mhd.lib = lib;
    return 0;
}

/* Where a connection is in its exchange, each step with its own deadline. */
typedef enum {
    METRICS_CONN_FREE,      /* no connection in this record */
    METRICS_CONN_WAITING,   /* connected, or its last response sent: the next request is due */
    METRICS_CONN_SENDING,   /* the request came and was answered: the response is being sent */
    METRICS_CONN_CUT,       /* a deadline passed: shut down, libmicrohttpd closes it */
} metrics_conn_state;

/* The events a connection's record sees. */
typedef enum {
    METRICS_EV_REQUEST,     /* a whole request reached metrics_on_request */
    METRICS_EV_COMPLETED,   /* its response was sent, or the request ended otherwise */
    METRICS_EV_EXPIRED,     /* the timer found the step's deadline passed */
} metrics_conn_event;

typedef struct {
    metrics_conn_state state;
    int                fd;      /* libmicrohttpd's: shut down at a deadline, never closed here */
    uint64_t           since;   /* uv_now when the current step began */
} metrics_conn;

struct metrics {
    struct MHD_Daemon   *d;
    uv_poll_t            poll;
    uv_timer_t           timer;
    uv_timer_t           deadline;    /* the earliest connection deadline */
    uv_loop_t           *loop;
    metrics_conn         conns[METRICS_CONN_MAX];   /* libmicrohttpd admits no more than this */
    int                  handles;     /* open uv handles; m is freed when 0 after stop */
    bool                 closed;      /* a connection closed in this run (metrics_run) */
    struct MHD_Response *plain, *gz;  /* the last interval's body; NULL before the first */
    struct MHD_Response *health, *notfound, *notallowed, *notyet;
    char                 lasterr[256];
};

/* ---- addresses ---------------------------------------------------------- */

int metrics_parse_addr(const char *spec, struct sockaddr_storage *out, char *err, size_t errcap)
{
    char host[64] = "127.0.0.1";
    const char *port = spec;
    const char *colon = strrchr(spec, ':');
    memset(out, 0, sizeof *out);
    if (colon) {
        size_t n = (size_t)(colon - spec);
        const char *h = spec;
        if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {   /* [IPv6]:PORT */
            h++;
            n -= 2;
        }
        if (n == 0 || n >= sizeof host)
            goto bad;
        memcpy(host, h, n);
        host[n] = '\0';
        port = colon + 1;
    }
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (port[0] < '0' || port[0] > '9' || *end || errno || p < 1 || p > 65535)
        goto bad;
    struct sockaddr_in *v4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)p);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)p);
        return 0;
    }
bad:
    snprintf(err, errcap, "--metrics takes [HOST:]PORT (HOST an IPv4 address or [IPv6], PORT 1-65535), not '%s'",
             spec);
    return -1;
}

/* ---- requests ----------------------------------------------------------- */

/*
 * True if an Accept-Encoding value accepts gzip: a "gzip" (or "x-gzip")
 * coding whose q is not 0. "*" is not taken as gzip (it is optional).
 */
static bool metrics_accepts_gzip(const char *v)
{
    while (v && *v) {
        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        const char *tok = v;
        while (*v && *v != ',' && *v != ';' && *v != ' ' && *v != '\t')
            v++;
        size_t n = (size_t)(v - tok);
        bool gzip = (n == 4 && strncasecmp(tok, "gzip", 4) == 0) || (n == 6 && strncasecmp(tok, "x-gzip", 6) == 0);
        double q = 1.0;
        while (*v && *v != ',') {
            if (*v == ';') {
                v++;
                while (*v == ' ' || *v == '\t')
                    v++;
                if ((v[0] == 'q' || v[0] == 'Q') && v[1] == '=')
                    q = strtod(v + 2, NULL);
            } else {
                v++;
            }
        }
        if (gzip && q > 0)
            return true;
    }
    return false;
}

/* ---- deadlines ---------------------------------------------------------- */

/* The seconds a connection may spend in state s (0: no deadline). */
static unsigned metrics_conn_limit(metrics_conn_state s)
{
    switch (s) {
    case METRICS_CONN_WAITING:
        return METRICS_REQUEST_S;
    case METRICS_CONN_SENDING:
        return METRICS_SEND_S;
    case METRICS_CONN_FREE:
    case METRICS_CONN_CUT:
        break;
    }
    return 0;
}

/* The state after event e in state s (pure). A cut connection stays cut until it is closed. */
static metrics_conn_state metrics_conn_next(metrics_conn_state s, metrics_conn_event e)
{
    switch (s) {
    case METRICS_CONN_WAITING:
    case METRICS_CONN_SENDING:
        switch (e) {
        case METRICS_EV_REQUEST:
            return METRICS_CONN_SENDING;
        case METRICS_EV_COMPLETED:
            return METRICS_CONN_WAITING;
        case METRICS_EV_EXPIRED:
            return METRICS_CONN_CUT;
        }
        break;
    case METRICS_CONN_FREE:
    case METRICS_CONN_CUT:
        break;
    }
    return s;
}

static void metrics_on_deadline(uv_timer_t *t);

/* Arms the deadline timer for the earliest deadline of any connection (or stops it). */
static void metrics_arm(metrics *m)
{
    uint64_t now = uv_now(m->loop), first = UINT64_MAX;
    for (size_t i = 0; i < METRICS_CONN_MAX; i++) {
        unsigned lim = metrics_conn_limit(m->conns[i].state);
        if (lim && m->conns[i].since + lim * UINT64_C(1000) < first)
            first = m->conns[i].since + lim * UINT64_C(1000);
    }
    if (first == UINT64_MAX)
        uv_timer_stop(&m->deadline);
    else
        uv_timer_start(&m->deadline, metrics_on_deadline, first > now ? first - now : 0, 0);
}

/* Feeds event e to connection k's machine (NULL: a connection without a record); a new step restarts its clock. */
static void metrics_conn_on(metrics *m, metrics_conn *k, metrics_conn_event e)
{
    if (!k)
        return;
    metrics_conn_state next = metrics_conn_next(k->state, e);
    bool step = next != k->state || (e == METRICS_EV_COMPLETED && next == METRICS_CONN_WAITING);
    if (!step)
        return;
    if (next == METRICS_CONN_CUT)
        shutdown(k->fd, SHUT_RDWR);   /* libmicrohttpd reads the end and closes it */
    k->state = next;
    k->since = uv_now(m->loop);
    metrics_arm(m);
}

/* Cuts every connection past its step's deadline. */
static void metrics_on_deadline(uv_timer_t *t)
{
    metrics *m = t->data;
    uint64_t now = uv_now(m->loop);
    for (size_t i = 0; i < METRICS_CONN_MAX; i++) {
        metrics_conn *k = &m->conns[i];
        unsigned lim = metrics_conn_limit(k->state);
        if (lim && now >= k->since + lim * UINT64_C(1000))
            metrics_conn_on(m, k, METRICS_EV_EXPIRED);
    }
    metrics_arm(m);
}

/* libmicrohttpd's connection callback: a record per connection, from its start to its close. */
static void metrics_on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                                  enum MHD_ConnectionNotificationCode toe)
{
    metrics *m = cls;
    metrics_conn *k = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        if (k)
            *k = (metrics_conn){.state = METRICS_CONN_FREE, .fd = -1};
        *socket_context = NULL;
        m->closed = true;
        metrics_arm(m);
        return;
    }
    const union MHD_ConnectionInfo *ci = mhd.get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    for (size_t i = 0; ci && i < METRICS_CONN_MAX; i++)
        if (m->conns[i].state == METRICS_CONN_FREE) {
            m->conns[i] = (metrics_conn){.state = METRICS_CONN_WAITING, .fd = ci->connect_fd,
                                         .since = uv_now(m->loop)};
            *socket_context = &m->conns[i];
            metrics_arm(m);
            return;
        }
    /* No record (libmicrohttpd admits METRICS_CONN_MAX at most): nothing to time, so refuse it. */
    if (ci)
        shutdown(ci->connect_fd, SHUT_RDWR);
}

/* libmicrohttpd's request-completed callback: the response was sent (or the request failed). */
static void metrics_on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                                 enum MHD_RequestTerminationCode toe)
{
    (void)con_cls;
    (void)toe;
    const union MHD_ConnectionInfo *ci = mhd.get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    metrics_conn_on(cls, ci ? ci->socket_context : NULL, METRICS_EV_COMPLETED);
}

/* ---- requests, continued -------------------------------------------------- */

/* libmicrohttpd's request callback: one answer per request, on its first call. */
static enum MHD_Result metrics_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                         const char *method, const char *version, const char *upload,
                                         size_t *upload_size, void **con_cls)
{
    metrics *m = cls;
    (void)version;
    (void)upload;
    (void)upload_size;
    (void)con_cls;
    const union MHD_ConnectionInfo *ci = mhd.get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    metrics_conn_on(m, ci ? ci->socket_context : NULL, METRICS_EV_REQUEST);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return mhd.queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, m->notallowed);
    if (strcmp(url, "/healthz") == 0)
        return mhd.queue_response(c, MHD_HTTP_OK, m->health);
    if (strcmp(url, "/metrics") != 0)
        return mhd.queue_response(c, MHD_HTTP_NOT_FOUND, m->notfound);
    if (!m->plain)
        return mhd.queue_response(c, MHD_HTTP_SERVICE_UNAVAILABLE, m->notyet);
    const char *ae = mhd.lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    bool gz = m->gz && metrics_accepts_gzip(ae);
    return mhd.queue_response(c, MHD_HTTP_OK, gz ? m->gz : m->plain);
}

/* ---- the loop ----------------------------------------------------------- */

static void metrics_on_timer(uv_timer_t *t);

/* Lets libmicrohttpd do what is ready, then arms the timer for its next timeout. */
static void metrics_run(metrics *m)
{
    /* At its connection limit libmicrohttpd takes its listening socket out
     * of its epoll set, and puts it back only at the start of a run: when
     * connections closed in this run, run once more, or a connection
     * waiting in the backlog would wake nobody. */
    m->closed = false;
    mhd.run(m->d);
    if (m->closed)
        mhd.run(m->d);
    MHD_UNSIGNED_LONG_LONG ms;
    if (mhd.get_timeout(m->d, &ms) == MHD_YES)
        uv_timer_start(&m->timer, metrics_on_timer, ms, 0);
    else
        uv_timer_stop(&m->timer);
}

static void metrics_on_timer(uv_timer_t *t)
{
    metrics_run(t->data);
}

static void metrics_on_poll(uv_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    metrics_run(p->data);
}

/* libmicrohttpd's error messages: the last one is kept for metrics_start's err. */
static void metrics_log(void *cls, const char *fmt, va_list ap)
{
    metrics *m = cls;
    vsnprintf(m->lasterr, sizeof m->lasterr, fmt, ap);
    size_t n = strlen(m->lasterr);
    while (n && (m->lasterr[n - 1] == '\n' || m->lasterr[n - 1] == '.'))
        m->lasterr[--n] = '\0';
}

/* A small response that lives as long as the server. */
static struct MHD_Response *metrics_fixed(const char *text, const char *allow)
{
    struct MHD_Response *r = mhd.create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    if (r) {
        mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
        if (allow)
            mhd.add_response_header(r, MHD_HTTP_HEADER_ALLOW, allow);
    }
    return r;
}

/* Releases the responses m holds (connections still sending one keep it). */
static void metrics_drop_responses(metrics *m)
{
    struct MHD_Response **rs[] = {&m->plain, &m->gz, &m->health, &m->notfound, &m->notallowed, &m->notyet};
    for (size_t i = 0; i < sizeof rs / sizeof *rs; i++)
        if (*rs[i]) {
            mhd.destroy_response(*rs[i]);
            *rs[i] = NULL;
        }
}

static void metrics_on_closed(uv_handle_t *h)
{
    metrics *m = h->data;
    if (--m->handles == 0)
        free(m);
}

metrics *metrics_start(uv_loop_t *loop, const char *spec, char *err, size_t errcap)
{
    struct sockaddr_storage sa;
    if (metrics_parse_addr(spec, &sa, err, errcap) != 0)
        return NULL;
    if (metrics_load(err, errcap) != 0)
        return NULL;
    metrics *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    m->loop = loop;
    for (size_t i = 0; i < METRICS_CONN_MAX; i++)
        m->conns[i].fd = -1;
    uv_timer_init(loop, &m->deadline);   /* armed by the connection callbacks, from the first */
    m->deadline.data = m;
    m->health = metrics_fixed("ok\n", NULL);
    m->notfound = metrics_fixed("not found: try /metrics or /healthz\n", NULL);
    m->notallowed = metrics_fixed("method not allowed: GET or HEAD\n", "GET, HEAD");
    m->notyet = metrics_fixed("no interval yet: try again in a moment\n", NULL);
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_USE_SUPPRESS_DATE_NO_CLOCK;
    if (sa.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    m->d = mhd.start_daemon(flags, 0, NULL, NULL, metrics_on_request, m,
                            MHD_OPTION_EXTERNAL_LOGGER, metrics_log, m,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)METRICS_CONN_MAX,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)METRICS_CONN_MEM,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)METRICS_IDLE_S,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)METRICS_CONN_MAX,
                            MHD_OPTION_NOTIFY_CONNECTION, metrics_on_connection, m,
                            MHD_OPTION_NOTIFY_COMPLETED, metrics_on_completed, m,
                            MHD_OPTION_END);
    const union MHD_DaemonInfo *info = m->d ? mhd.get_daemon_info(m->d, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!m->health || !m->notfound || !m->notallowed || !m->notyet || !info ||
        uv_poll_init(loop, &m->poll, info->epoll_fd) != 0) {
        snprintf(err, errcap, "cannot serve metrics on %s: %s", spec, m->lasterr[0] ? m->lasterr : strerror(errno));
        if (m->d)
            mhd.stop_daemon(m->d);
        metrics_drop_responses(m);
        m->handles = 1;
        uv_close((uv_handle_t *)&m->deadline, metrics_on_closed);
        return NULL;
    }
    uv_timer_init(loop, &m->timer);
    m->poll.data = m->timer.data = m;
    m->handles = 3;
    uv_poll_start(&m->poll, UV_READABLE, metrics_on_poll);
    metrics_run(m);
    return m;
}

/*
 * The gzip form of text as a response, or NULL (then only plain is
 * served). zlib's deflate with a gzip header (windowBits 15 + 16).
 */
static struct MHD_Response *metrics_gzip(const char *text, size_t len)
{
    z_stream z = {0};
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return NULL;
    uLong cap = deflateBound(&z, (uLong)len);
    unsigned char *out = malloc(cap);
    struct MHD_Response *r = NULL;
    if (out) {
        z.next_in = (Bytef *)text;
        z.avail_in = (uInt)len;
        z.next_out = out;
        z.avail_out = (uInt)cap;
        if (deflate(&z, Z_FINISH) == Z_STREAM_END)
            r = mhd.create_response_from_buffer(z.total_out, out, MHD_RESPMEM_MUST_FREE);
        if (!r)
            free(out);
    }
    deflateEnd(&z);
    if (r) {
        mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
        mhd.add_response_header(r, MHD_HTTP_HEADER_CONTENT_ENCODING, "gzip");
        mhd.add_response_header(r, MHD_HTTP_HEADER_VARY, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    }
    return r;
}

void metrics_publish(metrics *m, const char *text, size_t len)
{
    if (!m || len > UINT32_MAX)
        return;
    struct MHD_Response *plain = mhd.create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);
    if (!plain)
        return;   /* out of memory: the last body stays */
    mhd.add_response_header(plain, MHD_HTTP_HEADER_CONTENT_TYPE, METRICS_CONTENT_TYPE);
    mhd.add_response_header(plain, MHD_HTTP_HEADER_VARY, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    struct MHD_Response *gz = metrics_gzip(text, len);
    if (m->plain)
        mhd.destroy_response(m->plain);
    if (m->gz)
        mhd.destroy_response(m->gz);
    m->plain = plain;
    m->gz = gz;
}

void metrics_stop(metrics *m)
{
    if (!m)
        return;
    /* libuv lets go of the epoll descriptor before libmicrohttpd closes it. */
    uv_poll_stop(&m->poll);
    uv_timer_stop(&m->timer);
    uv_close((uv_handle_t *)&m->poll, metrics_on_closed);
    uv_close((uv_handle_t *)&m->timer, metrics_on_closed);
    mhd.stop_daemon(m->d);   /* (tells every connection's close: their records are freed) */
    uv_timer_stop(&m->deadline);
    uv_close((uv_handle_t *)&m->deadline, metrics_on_closed);
    m->d = NULL;
    metrics_drop_responses(m);
}

/* ---- the text-file route ----------------------------------------------- */

int metrics_textfile(const char *path, const char *text, size_t len, char *err, size_t errcap)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        snprintf(err, errcap, "metrics text file path too long: %s", path);
        return -1;
    }
    /* O_EXCL|O_NOFOLLOW: a file or link planted at the temporary name is
     * removed (unlink acts on the link itself), never written through. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST && unlink(tmp) == 0)
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errcap, "cannot write %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errcap, "cannot write %s: %s", tmp, w < 0 ? strerror(errno) : "short write");
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errcap, "cannot replace %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}
