/*
 * httpd.c — an HTTP/1.1 keep-alive server on libuv, the example app that
 * `drover run --listen` supervises in a cluster (README, "Running a cluster").
 *
 *   httpd --port 8080                    # binds 127.0.0.1:8080 itself
 *   drover run -i 4 --listen 8080 -- httpd   # 4 workers sharing the hub's socket at fd 3
 *
 * What it shows:
 *   - systemd socket activation: LISTEN_PID/LISTEN_FDS hand it an already
 *     listening socket at fd 3, shared by every worker, each accepting on it;
 *   - the agent (drover.h): request counts, latency, errors, inflight,
 *     event-loop lag (drover_uv.h) and readiness;
 *   - a graceful drain on SIGTERM that loses no request: the listening handle
 *     is closed (only this process's copy of a shared socket; the hub and the
 *     other workers keep accepting on it), every in-flight request finishes,
 *     and every keep-alive connection ends after a response that says
 *     `Connection: close` — an idle connection is never cut under a client
 *     that may be writing a request on it right now.
 *
 * One process, one loop; on an inherited socket, one acceptor thread that
 * hands the loop the connections it accepts fairly (see "Fair accepting"
 * below; the agent runs a thread of its own too). Memory
 * per connection is fixed: one struct conn holding an 8 KiB request buffer
 * and a small response buffer; request bodies are read and discarded.
 *
 * Connection life (struct conn .state):
 *
 *   HEAD ──head parsed──▶ BODY ──body read──▶ WAIT ──timer──▶ WRITE ──written──▶ HEAD
 *    │  (no body: straight to WAIT, or to WRITE when there is no delay)  │
 *    │                                                                   └─ close_after ─▶ LINGER
 *    └─ EOF / error / drain timeout ─────────────────────────────────────────▶ CLOSING ◀──┘
 *
 * The socket is read only in HEAD, BODY and LINGER: while a request is being
 * answered the connection is not read (TCP flow control holds a pipelining
 * client back), which bounds memory and keeps responses in request order.
 * LINGER is the graceful close: shutdown(SHUT_WR) after the last response,
 * then read and discard until the client closes (or 2 s pass), so unread
 * bytes in our receive queue never turn our close into a RST that could
 * destroy the response before the client reads it.
 */
#include "agent/drover.h"
#include "agent/drover_uv.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <uv.h>

/* ------------------------------------------------------------------------ */
/* Limits and options                                                       */
/* ------------------------------------------------------------------------ */

#define HEAD_MAX        8192u              /* request line + headers; more → 431 */
#define WBUF_MAX        512u               /* one response: headers + small body */
#define REQLINE_MAX     200u               /* request line kept for --log-requests */
#define BODY_MAX        (1024ull << 20)    /* Content-Length above this → 413 */
#define MS_MAX          3600000ul          /* any duration option or ?ms= value */
#define LINGER_MS       2000u              /* graceful close: wait this long for the client's FIN */
#define LISTEN_BACKLOG  511
#define LAG_PERIOD_MS   10u
#define ACCEPT_BATCH_DEFAULT 4             /* --accept-batch: connections per wakeup on fd 3 */

static struct {
    const char   *host;          /* --host (default 127.0.0.1) */
    long          port;          /* --port, -1 when not given */
    unsigned long delay_ms;      /* --delay: added to every request */
    unsigned long drain_ms;      /* --drain-timeout */
    unsigned long ready_ms;      /* --ready-delay */
    unsigned long crash_ms;      /* --crash-after, 0 = never */
    bool          crash;         /* --crash-after given */
    bool          never_ready;
    bool          ignore_term;
    bool          log_requests;
    unsigned long accept_batch;  /* --accept-batch: 0 = libuv's uv_listen */
} opt = {.host = "127.0.0.1", .port = -1, .drain_ms = 10000, .accept_batch = ACCEPT_BATCH_DEFAULT};

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

enum conn_state {
    ST_HEAD,      /* reading a request head (idle when nothing is buffered) */
    ST_BODY,      /* reading and discarding a Content-Length body */
    ST_WAIT,      /* request complete; its delay timer runs */
    ST_WRITE,     /* the response is being written */
    ST_LINGER,    /* last response sent, write side shut: waiting for the client's EOF */
    ST_CLOSING,   /* uv_close() called on both handles */
};

enum route { R_NONE, R_ROOT, R_SLOW, R_BLOCK, R_FAIL, R_PID, R_GREETING, R_NOT_FOUND };

struct conn {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t    tcp;
        uv_pipe_t   pipe;
    } h;
    uv_timer_t      timer;       /* the request's delay, then the linger deadline */
    uv_write_t      wreq;        /* the response */
    uv_write_t      creq;        /* an interim "100 Continue" */
    uv_shutdown_t   sreq;
    struct conn    *prev, *next; /* all connections, for the drain */
    enum conn_state state;
    int             open_handles;
    bool            reading;
    bool            handed;      /* accepted by the acceptor thread: counted in `held` */

    /* The current request, decided when its head is parsed. */
    bool            in_request;  /* drover_request_begin() called, done not yet */
    uint64_t        t0_us;
    uint64_t        body_left;
    enum route      route;
    unsigned long   ms;          /* ?ms= of /slow and /block */
    int             status;      /* an error found while parsing (400, 431…), else 0 */
    bool            head_only;   /* HEAD: no body in the response */
    bool            keepalive;   /* what the request asked for */
    bool            close_after; /* close once this response is written */
    bool            allow_hdr;   /* 405: add an Allow header */
    int             resp_status;
    size_t          resp_body;
    char            reqline[REQLINE_MAX];

    size_t          len;         /* bytes in buf */
    char            buf[HEAD_MAX];
    char            wbuf[WBUF_MAX];
};

static uv_loop_t   *loop;
static union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t    tcp;
    uv_pipe_t   pipe;
} listener;
static bool         listener_is_pipe;
static bool         listener_open;
static uv_timer_t   ready_timer, crash_timer, drain_timer, lag_timer;
static uv_signal_t  sig_term, sig_int;
static bool         sig_term_on;
static struct conn *conns;           /* list head */
static size_t       n_conns;
static atomic_size_t held;           /* accepted by the acceptor thread and not closed yet */
static bool         draining;        /* SIGTERM/SIGINT seen */
static bool         drain_expired;   /* --drain-timeout passed */
static bool         finished;
static pid_t        my_pid;

/* A spare handle to accept-and-close a connection when calloc fails. */
static union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t    tcp;
    uv_pipe_t   pipe;
} reject;
static bool reject_busy;

static void conn_process(struct conn *c);
static void maybe_finish(void);

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/*
 * Parses a decimal unsigned integer ≤ max, the whole string (no sign, no
 * spaces). Returns true and stores it in *out, else false.
 */
static bool parse_ulong(const char *s, size_t n, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

/* The reason phrase of every status this server sends. */
static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}

/* The Date header's value (RFC 9110 IMF-fixdate), formatted once per second. */
static const char *http_date(void)
{
    static char buf[40];
    static time_t cached = (time_t)-1;
    time_t now = time(NULL);
    if (now != cached) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached = now;
    }
    return buf;
}

/* RFC 9110 tchar: the characters of a method or a header name. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* True when [s, s+n) equals the NUL-terminated lit, ignoring ASCII case. */
static bool eq_nocase(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Trims spaces and tabs (OWS) at both ends of [*s, *s+*n). */
static void trim_ows(const char **s, size_t *n)
{
    while (*n && (**s == ' ' || **s == '\t')) {
        (*s)++;
        (*n)--;
    }
    while (*n && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* ------------------------------------------------------------------------ */
/* Request parsing                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Finds the next line in [p, end): returns its length without the line end
 * (LF, or CRLF) and sets *next past it; returns -1 when no LF is buffered yet.
 */
static long next_line(const char *p, const char *end, const char **next)
{
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (!lf)
        return -1;
    *next = lf + 1;
    size_t n = (size_t)(lf - p);
    if (n && p[n - 1] == '\r')
        n--;
    return (long)n;
}

/* Reads the ms= parameter of a query string into *ms; false if missing or bad. */
static bool query_ms(const char *q, size_t n, unsigned long *ms)
{
    while (n) {
        const char *amp = memchr(q, '&', n);
        size_t k = amp ? (size_t)(amp - q) : n;
        if (k > 3 && memcmp(q, "ms=", 3) == 0)
            return parse_ulong(q + 3, k - 3, MS_MAX, ms);
        if (!amp)
            break;
        n -= k + 1;
        q = amp + 1;
    }
    return false;
}

/* Sets c->route (and c->ms) from the method and the request target. */
static void route_request(struct conn *c, const char *method, size_t mlen, const char *t, size_t tlen)
{
    /* absolute-form (a proxy-style request): skip scheme and authority */
    size_t scheme = tlen >= 7 && strncasecmp(t, "http://", 7) == 0    ? 7
                    : tlen >= 8 && strncasecmp(t, "https://", 8) == 0 ? 8
                                                                      : 0;
    if (scheme) {
        const char *slash = memchr(t + scheme, '/', tlen - scheme);
        if (slash) {
            tlen -= (size_t)(slash - t);
            t = slash;
        } else {
            t = "/";
            tlen = 1;
        }
    }
    const char *qm = memchr(t, '?', tlen);
    size_t plen = qm ? (size_t)(qm - t) : tlen;
    const char *q = qm ? qm + 1 : "";
    size_t qlen = qm ? tlen - plen - 1 : 0;

    if (plen == 1 && t[0] == '/')
        c->route = R_ROOT;
    else if (plen == 5 && memcmp(t, "/slow", 5) == 0)
        c->route = R_SLOW;
    else if (plen == 6 && memcmp(t, "/block", 6) == 0)
        c->route = R_BLOCK;
    else if (plen == 5 && memcmp(t, "/fail", 5) == 0)
        c->route = R_FAIL;
    else if (plen == 4 && memcmp(t, "/pid", 4) == 0)
        c->route = R_PID;
    else if (plen == 9 && memcmp(t, "/greeting", 9) == 0)
        c->route = R_GREETING;
    else {
        c->route = R_NOT_FOUND;
        return;
    }
    bool get = mlen == 3 && memcmp(method, "GET", 3) == 0;
    c->head_only = mlen == 4 && memcmp(method, "HEAD", 4) == 0;
    if (!get && !c->head_only) {
        c->status = 405;
        c->allow_hdr = true;
        return;
    }
    if ((c->route == R_SLOW || c->route == R_BLOCK) && !query_ms(q, qlen, &c->ms))
        c->status = 400;
}

/*
 * Handles one header field of the current request. Returns 0, or an error
 * status (the connection is closed after answering it).
 */
static int parse_header(struct conn *c, const char *line, size_t n, bool *has_cl, bool *has_te,
                        bool *te_chunked, bool *expect_continue, bool *conn_close, bool *conn_ka)
{
    const char *colon = memchr(line, ':', n);
    if (!colon || colon == line)
        return 400;
    size_t nlen = (size_t)(colon - line);
    for (size_t i = 0; i < nlen; i++)
        if (!is_tchar((unsigned char)line[i]))
            return 400;       /* includes whitespace before the colon (RFC 9112 §5.1) */
    const char *v = colon + 1;
    size_t vlen = n - nlen - 1;
    for (size_t i = 0; i < vlen; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
            return 400;
    }
    trim_ows(&v, &vlen);

    if (eq_nocase(line, nlen, "content-length")) {
        unsigned long long cl = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return 400;
            if (cl > BODY_MAX)
                break;
            cl = cl * 10 + (unsigned)(v[i] - '0');
        }
        if (vlen == 0)
            return 400;
        if (cl > BODY_MAX)
            return 413;
        if (*has_cl && cl != c->body_left)
            return 400;           /* conflicting lengths: request smuggling territory */
        *has_cl = true;
        c->body_left = cl;
    } else if (eq_nocase(line, nlen, "transfer-encoding")) {
        *has_te = true;
        /* the last coding decides how the body ends */
        const char *comma = v + vlen;
        while (comma > v && comma[-1] != ',')
            comma--;
        const char *last = comma;
        size_t llen = (size_t)(v + vlen - comma);
        trim_ows(&last, &llen);
        *te_chunked = eq_nocase(last, llen, "chunked");
    } else if (eq_nocase(line, nlen, "connection")) {
        while (vlen) {
            const char *comma = memchr(v, ',', vlen);
            size_t k = comma ? (size_t)(comma - v) : vlen;
            const char *tok = v;
            size_t tlen = k;
            trim_ows(&tok, &tlen);
            if (eq_nocase(tok, tlen, "close"))
                *conn_close = true;
            else if (eq_nocase(tok, tlen, "keep-alive"))
                *conn_ka = true;
            if (!comma)
                break;
            vlen -= k + 1;
            v = comma + 1;
        }
    } else if (eq_nocase(line, nlen, "expect")) {
        if (eq_nocase(v, vlen, "100-continue"))
            *expect_continue = true;
    }
    return 0;
}

/* Result of parse_head(). */
enum { PARSE_MORE = 0, PARSE_DONE = 1 };

/*
 * Parses the request head at the start of c->buf. Returns PARSE_MORE when it
 * is not complete yet, or PARSE_DONE with *used set to the head's length and
 * the request's fields set in c (c->status != 0 for a request to refuse, with
 * c->close_after set). Leading empty lines are skipped (RFC 9112 §2.2).
 */
static int parse_head(struct conn *c, size_t *used, bool *expect_continue)
{
    const char *p = c->buf, *end = c->buf + c->len, *next;
    long n;

    while ((n = next_line(p, end, &next)) == 0)
        p = next;                     /* empty lines before the request line */
    if (n < 0)
        return PARSE_MORE;
    const char *line = p;
    size_t llen = (size_t)n;
    p = next;

    /* The head must be complete before anything is decided. */
    const char *hp = p;
    for (;;) {
        long k = next_line(hp, end, &next);
        if (k < 0)
            return PARSE_MORE;
        hp = next;
        if (k == 0)
            break;
    }
    *used = (size_t)(hp - c->buf);

    /* Reset the request's fields. */
    c->body_left = 0;
    c->route = R_NONE;
    c->ms = 0;
    c->status = 0;
    c->head_only = false;
    c->keepalive = false;
    c->close_after = false;
    c->allow_hdr = false;
    size_t keep = llen < sizeof c->reqline - 1 ? llen : sizeof c->reqline - 1;
    for (size_t i = 0; i < keep; i++)
        c->reqline[i] = (line[i] >= 0x20 && line[i] < 0x7f) ? line[i] : '?';
    c->reqline[keep] = '\0';

    /* Request line: method SP request-target SP HTTP-version */
    const char *sp1 = memchr(line, ' ', llen);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', llen - (size_t)(sp1 + 1 - line)) : NULL;
    if (!sp1 || !sp2 || sp1 == line || sp2 == sp1 + 1) {
        c->status = 400;
        c->close_after = true;
        return PARSE_DONE;
    }
    const char *method = line, *target = sp1 + 1, *ver = sp2 + 1;
    size_t mlen = (size_t)(sp1 - line), tlen = (size_t)(sp2 - target);
    size_t vlen = llen - (size_t)(ver - line);
    bool bad = false;
    for (size_t i = 0; i < mlen; i++)
        bad |= !is_tchar((unsigned char)method[i]);
    for (size_t i = 0; i < tlen; i++)
        bad |= (unsigned char)target[i] <= 0x20 || (unsigned char)target[i] >= 0x7f;
    bad |= vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[6] != '.' ||
           ver[5] < '0' || ver[5] > '9' || ver[7] < '0' || ver[7] > '9';
    if (bad) {
        c->status = 400;
        c->close_after = true;
        return PARSE_DONE;
    }
    if (ver[5] != '1') {
        c->status = 505;
        c->close_after = true;
        return PARSE_DONE;
    }
    bool http10 = ver[7] == '0';

    /* Header fields. */
    bool has_cl = false, has_te = false, te_chunked = false;
    bool conn_close = false, conn_ka = false;
    *expect_continue = false;
    while ((n = next_line(p, end, &next)) > 0) {
        if (*p == ' ' || *p == '\t') {
            c->status = 400;          /* obsolete line folding */
            break;
        }
        int st = parse_header(c, p, (size_t)n, &has_cl, &has_te, &te_chunked, expect_continue,
                              &conn_close, &conn_ka);
        if (st) {
            c->status = st;
            break;
        }
        p = next;
    }
    if (!c->status && has_te)
        c->status = te_chunked ? 411 : 501;   /* no chunked request bodies here */
    if (c->status) {
        c->close_after = true;        /* the body's framing is unknown: the stream is lost */
        c->body_left = 0;
        return PARSE_DONE;
    }
    c->keepalive = http10 ? (conn_ka && !conn_close) : !conn_close;
    if (http10)
        *expect_continue = false;
    route_request(c, method, mlen, target, tlen);
    return PARSE_DONE;
}

/* ------------------------------------------------------------------------ */
/* Connection plumbing                                                      */
/* ------------------------------------------------------------------------ */

/* Drops the first n bytes of c->buf. */
static void conn_consume(struct conn *c, size_t n)
{
    if (n >= c->len) {
        c->len = 0;
        return;
    }
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* The agent's view of the current request ends (response written, or connection lost). */
static void request_end(struct conn *c, bool written)
{
    if (!c->in_request)
        return;
    c->in_request = false;
    uint64_t lat = drover_now_us() - c->t0_us;
    drover_request_done(lat, c->resp_status >= 500);
    if (opt.log_requests)
        printf("httpd[%ld]: \"%s\" %d %zu %.3fms%s\n", (long)my_pid, c->reqline,
               c->resp_status, c->resp_body, (double)lat / 1000.0, written ? "" : " (aborted)");
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->handed)
        atomic_fetch_sub(&held, 1);
    free(c);
    n_conns--;
    drover_metric_set("connections", (double)n_conns);
    maybe_finish();
}

/* Closes the connection now (pending writes and the shutdown are cancelled). */
static void conn_close(struct conn *c)
{
    if (c->state == ST_CLOSING)
        return;
    request_end(c, false);
    c->state = ST_CLOSING;
    c->reading = false;
    uv_close((uv_handle_t *)&c->timer, on_conn_closed);
    uv_close(&c->h.handle, on_conn_closed);
}

/* Starts or stops reading; false when the connection had to be closed. */
static bool conn_read(struct conn *c, bool on);

static void on_linger_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state == ST_CLOSING)
        return;
    if (status < 0 || drain_expired) {
        conn_close(c);
        return;
    }
    c->len = 0;
    uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
    conn_read(c, true);
}

/* The last response is written: shut our side and wait for the client to close. */
static void conn_finish(struct conn *c)
{
    c->state = ST_LINGER;
    c->sreq.data = c;
    if (!conn_read(c, false))
        return;
    if (uv_shutdown(&c->sreq, &c->h.stream, on_shutdown) != 0)
        conn_close(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    if (c->state == ST_LINGER)      /* discard: reuse the whole buffer */
        *buf = uv_buf_init(c->buf, sizeof c->buf);
    else
        *buf = uv_buf_init(c->buf + c->len, (unsigned)(sizeof c->buf - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    (void)buf;
    if (c->state == ST_CLOSING)
        return;
    if (c->state == ST_LINGER) {
        if (nread < 0)
            conn_close(c);          /* EOF: the client has read everything and closed */
        return;
    }
    if (nread > 0) {
        c->len += (size_t)nread;
        conn_process(c);
    } else if (nread < 0) {
        /* EOF or error (UV_ENOBUFS cannot happen: we only read with room left).
         * Everything complete in the buffer was answered before we read again,
         * so what is left is at most an incomplete request: nothing to answer. */
        conn_close(c);
    }
}

static bool conn_read(struct conn *c, bool on)
{
    if (c->state == ST_CLOSING)
        return false;
    if (on == c->reading)
        return true;
    if (on) {
        if (uv_read_start(&c->h.stream, on_alloc, on_read) != 0) {
            conn_close(c);
            return false;
        }
    } else {
        uv_read_stop(&c->h.stream);
    }
    c->reading = on;
    return true;
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state == ST_CLOSING)
        return;                     /* cancelled by conn_close() */
    request_end(c, status == 0);
    if (status < 0) {               /* EPIPE, ECONNRESET: the client went away */
        conn_close(c);
        return;
    }
    if (c->close_after) {
        conn_finish(c);
        return;
    }
    c->state = ST_HEAD;
    if (drain_expired && c->len == 0) {
        conn_close(c);
        return;
    }
    conn_process(c);
}

static void on_continue_written(uv_write_t *req, int status)
{
    (void)req;
    (void)status;                   /* a failure shows up on the next read or write */
}

/* Busy-waits ms milliseconds: the loop is blocked, which is the point of /block. */
static void busy_block(unsigned long ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
    while (uv_hrtime() < end) {
        /* spin */
    }
    uv_update_time(loop);
}

/* Composes and writes the response to the current request. */
static void respond(struct conn *c)
{
    char body[32];
    const char *b;
    int st = c->status;
    if (st == 0) {
        switch (c->route) {
        case R_ROOT:  st = 200; b = "ok\n"; break;
        case R_SLOW:  st = 200; b = "ok\n"; break;
        case R_BLOCK: busy_block(c->ms); st = 200; b = "ok\n"; break;
        case R_FAIL:  st = 500; b = "fail\n"; break;
        case R_PID:
            snprintf(body, sizeof body, "%ld\n", (long)my_pid);
            st = 200;
            b = body;
            break;
        case R_GREETING:   /* $GREETING (its first 30 bytes): which settings a worker runs */
            snprintf(body, sizeof body, "%.30s\n", getenv("GREETING") ? getenv("GREETING") : "");
            st = 200;
            b = body;
            break;
        default:      st = 404; b = "not found\n"; break;
        }
    } else {
        switch (st) {
        case 400: b = (c->route == R_SLOW || c->route == R_BLOCK) ? "bad request: ms=N required\n"
                                                                  : "bad request\n"; break;
        case 405: b = "method not allowed\n"; break;
        case 411: b = "chunked request bodies are not supported: send Content-Length\n"; break;
        case 413: b = "request body too large\n"; break;
        case 431: b = "request header too large\n"; break;
        case 501: b = "transfer coding not implemented\n"; break;
        case 505: b = "HTTP version not supported\n"; break;
        default:  b = "error\n"; break;
        }
    }
    /* Draining: this is the connection's last response. */
    c->close_after = c->close_after || !c->keepalive || draining;
    size_t blen = strlen(b);
    int n = snprintf(c->wbuf, sizeof c->wbuf,
                     "HTTP/1.1 %d %s\r\n"
                     "Server: drover-httpd\r\n"
                     "Date: %s\r\n"
                     "Content-Type: text/plain\r\n"
                     "Content-Length: %zu\r\n"
                     "%s"
                     "Connection: %s\r\n"
                     "\r\n",
                     st, reason(st), http_date(), blen,
                     c->allow_hdr ? "Allow: GET, HEAD\r\n" : "",
                     c->close_after ? "close" : "keep-alive");
    size_t len = (size_t)n;
    if (!c->head_only && len + blen <= sizeof c->wbuf) {
        memcpy(c->wbuf + len, b, blen);
        len += blen;
    }
    c->resp_status = st;
    c->resp_body = c->head_only ? 0 : blen;
    c->state = ST_WRITE;
    c->wreq.data = c;
    uv_buf_t wb = uv_buf_init(c->wbuf, (unsigned)len);
    if (uv_write(&c->wreq, &c->h.stream, &wb, 1, on_write) != 0)
        conn_close(c);
}

static void on_delay_done(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->state == ST_WAIT)
        respond(c);
}

/* The request is complete (head and body): answer it, after its delay if any. */
static void conn_dispatch(struct conn *c)
{
    if (!conn_read(c, false))
        return;
    uint64_t wait = 0;
    if (c->status == 0) {
        wait = opt.delay_ms;
        if (c->route == R_SLOW)
            wait += c->ms;
    }
    if (wait > 0) {
        c->state = ST_WAIT;
        uv_timer_start(&c->timer, on_delay_done, wait, 0);
        return;
    }
    respond(c);
}

/*
 * Makes progress on what is buffered: discards body bytes, parses the next
 * request head and dispatches it, or starts reading when more is needed.
 * Runs after every read and after every response written.
 */
static void conn_process(struct conn *c)
{
    if (c->state == ST_BODY) {
        size_t n = c->len < c->body_left ? c->len : (size_t)c->body_left;
        conn_consume(c, n);
        c->body_left -= n;
        if (c->body_left > 0) {
            conn_read(c, true);
            return;
        }
        conn_dispatch(c);
        return;
    }
    if (c->state != ST_HEAD)
        return;

    size_t used = 0;
    bool expect_continue = false;
    if (parse_head(c, &used, &expect_continue) == PARSE_MORE) {
        if (c->len < sizeof c->buf) {
            conn_read(c, true);
            return;
        }
        /* The buffer is full and still holds no complete head. */
        c->body_left = 0;
        c->route = R_NONE;
        c->status = 431;
        c->head_only = false;
        c->keepalive = false;
        c->close_after = true;
        c->allow_hdr = false;
        snprintf(c->reqline, sizeof c->reqline, "(request head over %u bytes)", HEAD_MAX);
        used = c->len;
    }
    c->in_request = true;
    c->t0_us = drover_now_us();
    c->resp_status = 0;
    drover_request_begin();
    conn_consume(c, used);
    if (c->body_left > 0) {
        c->state = ST_BODY;
        if (expect_continue && c->len == 0) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            uv_buf_t cb = uv_buf_init((char *)cont, sizeof cont - 1);
            c->creq.data = c;
            if (uv_write(&c->creq, &c->h.stream, &cb, 1, on_continue_written) != 0) {
                conn_close(c);
                return;
            }
        }
        conn_process(c);
        return;
    }
    conn_dispatch(c);
}

/* ------------------------------------------------------------------------ */
/* Listening                                                                */
/* ------------------------------------------------------------------------ */

static void on_reject_closed(uv_handle_t *h)
{
    (void)h;
    reject_busy = false;
}

/*
 * A new connection record (handle and timer initialized, linked, counted);
 * its socket is attached by the caller (uv_accept or uv_*_open). NULL when
 * out of memory.
 */
static struct conn *conn_new(void)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (listener_is_pipe)
        uv_pipe_init(loop, &c->h.pipe, 0);
    else
        uv_tcp_init(loop, &c->h.tcp);
    uv_timer_init(loop, &c->timer);
    c->h.handle.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->state = ST_HEAD;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    n_conns++;
    drover_metric_set("connections", (double)n_conns);
    return c;
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;                     /* e.g. EMFILE: libuv keeps listening */
    struct conn *c = conn_new();
    if (!c) {
        /* Out of memory: accept and close, or libuv stops polling the listener. */
        if (reject_busy)
            return;
        if (listener_is_pipe)
            uv_pipe_init(loop, &reject.pipe, 0);
        else
            uv_tcp_init(loop, &reject.tcp);
        reject_busy = true;
        uv_accept(server, &reject.stream);
        uv_close(&reject.handle, on_reject_closed);
        return;
    }
    if (uv_accept(server, &c->h.stream) != 0) {
        conn_close(c);
        return;
    }
    if (!listener_is_pipe)
        uv_tcp_nodelay(&c->h.tcp, 1);
    conn_read(c, true);
}

/*
 * Fair accepting on the shared fd 3 (--accept-batch N > 0).
 *
 * libuv's uv_listen accepts until EAGAIN on every wakeup, and the kernel
 * wakes every worker waiting on the shared socket, so when a burst of
 * connections arrives (wrk opening 32 at once) whichever worker runs first
 * takes them all and keeps them for their whole keep-alive life.
 *
 * EPOLLEXCLUSIVE fixes the wakeup only for a task that waits in epoll_wait on
 * that very epoll instance: the kernel (fs/eventpoll.c, ep_poll_callback)
 * counts an exclusive wakeup as delivered, and stops waking the next
 * instance, only when the instance has a waiter. An instance nested in
 * libuv's own epoll has none, so every worker's would be woken. Hence a
 * thread: the acceptor blocks in epoll_wait on an epoll of its own holding
 * fd 3 with EPOLLEXCLUSIVE, so each new connection wakes one idle acceptor
 * (a busy one is not waiting and is skipped); it accepts at most N, hands
 * them to the loop through a bounded queue and a uv_async, and the loop
 * serves them as if uv_listen had accepted them. A waiter leaves the wait
 * queue when woken, so a burst is spread over the acceptors idle at the time.
 *
 * Two more rules, each measured (bench/balance_results.md), not guessed:
 *   - the kernel wakes the first idle waiter in the order the waiters were
 *     added, so under light load one worker would win every connection
 *     (measured: 0-100 %). After each handover the acceptor takes fd 3 out
 *     of its epoll and adds it again, which puts it at the back of the wait
 *     queue: the idle acceptors are woken in turn (round-robin);
 *   - the acceptor that runs takes whatever is queued, and on 2 busy cores
 *     the others, woken, may wait milliseconds for a CPU; so after each
 *     handover it rests ACCEPT_REST_US per connection its worker holds (at
 *     most ACCEPT_REST_MAX_US) before waiting again: a worker holding many
 *     leaves the next ones to the workers holding few. Nothing is lost
 *     meanwhile: connections wait in the shared queue (level-triggered) for
 *     another acceptor or its return. The cost: a new connection may wait up
 *     to ACCEPT_REST_MAX_US when every acceptor rests.
 *
 * Threads: the acceptor only calls accept4 and touches the queue (mutex);
 * the loop owns every connection. On the drain the loop stops it (flag under
 * the mutex, plus an eventfd in its epoll to end the wait), joins it, serves
 * what was handed over, and closes the epoll before closing fd 3.
 */
#define HANDOFF_MAX        64u             /* accepted connections not yet taken by the loop */
#define ACCEPT_REST_US     100u            /* rest after a handover, per connection held */
#define ACCEPT_REST_MAX_US 2000u

static struct {
    pthread_t       thread;
    pthread_mutex_t mu;
    pthread_cond_t  room;               /* the loop took fds from a full queue, or stop */
    int             fds[HANDOFF_MAX];   /* ring: count fds from head */
    unsigned        head, count;
    bool            stop;
    int             epfd, stopfd;       /* the acceptor's epoll: fd 3 (exclusive) and stopfd */
    uv_async_t      async;
    bool            running;            /* thread started, not yet joined */
} acc = {.mu = PTHREAD_MUTEX_INITIALIZER, .room = PTHREAD_COND_INITIALIZER, .epfd = -1, .stopfd = -1};

/*
 * The acceptor thread (signals blocked). Loops: wait for fd 3 (exclusive),
 * wait for room in the queue, accept at most min(batch, room), hand over,
 * rest in proportion to the connections held. Returns when stop is set.
 */
static void *acceptor_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct epoll_event ev[2];
        if (epoll_wait(acc.epfd, ev, 2, -1) < 0 && errno != EINTR)
            break;                      /* EBADF/EINVAL: cannot happen while we run */
        pthread_mutex_lock(&acc.mu);
        while (!acc.stop && acc.count == HANDOFF_MAX)
            pthread_cond_wait(&acc.room, &acc.mu);   /* the loop is behind: accept nothing */
        bool stop = acc.stop;
        unsigned room = HANDOFF_MAX - acc.count;
        pthread_mutex_unlock(&acc.mu);
        if (stop)
            break;

        int got[HANDOFF_MAX];
        unsigned n = 0, want = opt.accept_batch < room ? (unsigned)opt.accept_batch : room;
        bool pause = false;
        while (n < want) {
            int fd = accept4(3, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd >= 0) {
                atomic_fetch_add(&held, 1);
                got[n++] = fd;
                continue;
            }
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            /* EAGAIN: another worker took it. EMFILE, ENFILE, ENOBUFS, ENOMEM:
             * the queue would stay readable, so pause instead of spinning. */
            pause = errno != EAGAIN && errno != EWOULDBLOCK;
            break;
        }
        if (n > 0) {
            pthread_mutex_lock(&acc.mu);
            for (unsigned i = 0; i < n; i++)
                acc.fds[(acc.head + acc.count++) % HANDOFF_MAX] = got[i];
            pthread_mutex_unlock(&acc.mu);
            uv_async_send(&acc.async);
            /* To the back of fd 3's wait queue: the next connection wakes
             * another idle acceptor first (round-robin among the idle). */
            struct epoll_event ev3 = {.events = EPOLLIN | EPOLLEXCLUSIVE};
            if (epoll_ctl(acc.epfd, EPOLL_CTL_DEL, 3, NULL) != 0 ||
                epoll_ctl(acc.epfd, EPOLL_CTL_ADD, 3, &ev3) != 0) {
                /* ENOMEM: this worker stops accepting, the others go on */
                fprintf(stderr, "httpd: pid %ld stops accepting: epoll_ctl: %s\n", (long)my_pid,
                        strerror(errno));
                break;
            }
        }
        unsigned long rest_us = 0;
        if (pause) {
            rest_us = 50000;            /* out of descriptors or memory: let connections close */
        } else if (n > 0) {
            size_t h = atomic_load(&held);
            rest_us = h < ACCEPT_REST_MAX_US / ACCEPT_REST_US ? h * ACCEPT_REST_US : ACCEPT_REST_MAX_US;
        }
        if (rest_us > 0) {
            struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)rest_us * 1000};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
    }
    return NULL;
}

/* Loop side: serves every connection the acceptor handed over. */
static void on_handoff(uv_async_t *a)
{
    (void)a;
    int fds[HANDOFF_MAX];
    unsigned n = 0;
    pthread_mutex_lock(&acc.mu);
    while (acc.count > 0) {
        fds[n++] = acc.fds[acc.head];
        acc.head = (acc.head + 1) % HANDOFF_MAX;
        acc.count--;
    }
    pthread_cond_signal(&acc.room);
    pthread_mutex_unlock(&acc.mu);
    for (unsigned i = 0; i < n; i++) {
        struct conn *c = conn_new();
        if (!c) {
            close(fds[i]);              /* out of memory: refuse this one */
            atomic_fetch_sub(&held, 1);
            continue;
        }
        c->handed = true;
        int rc = listener_is_pipe ? uv_pipe_open(&c->h.pipe, fds[i]) : uv_tcp_open(&c->h.tcp, fds[i]);
        if (rc != 0) {
            close(fds[i]);
            conn_close(c);
            continue;
        }
        if (!listener_is_pipe)
            uv_tcp_nodelay(&c->h.tcp, 1);
        conn_read(c, true);
    }
}

/*
 * Starts fair accepting on fd 3 (listening already, non-blocking since
 * uv_*_open): the epoll, the stop eventfd, the async and the acceptor thread
 * (with every signal blocked, so libuv's signal handling stays on the loop).
 * Returns 0 or a negative errno / libuv error.
 */
static int accept_fair_start(void)
{
    acc.epfd = epoll_create1(EPOLL_CLOEXEC);
    acc.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (acc.epfd < 0 || acc.stopfd < 0)
        return -errno;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE};
    if (epoll_ctl(acc.epfd, EPOLL_CTL_ADD, 3, &ev) != 0)
        return -errno;
    ev.events = EPOLLIN;
    if (epoll_ctl(acc.epfd, EPOLL_CTL_ADD, acc.stopfd, &ev) != 0)
        return -errno;
    int rc = uv_async_init(loop, &acc.async, on_handoff);
    if (rc != 0)
        return rc;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&acc.thread, NULL, acceptor_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return -rc;
    acc.running = true;
    return 0;
}

/*
 * The drain: stops and joins the acceptor, serves what it handed over, and
 * closes its epoll and eventfd. No-op when fair accepting is not running.
 */
static void accept_fair_stop(void)
{
    if (!acc.running)
        return;
    acc.running = false;
    pthread_mutex_lock(&acc.mu);
    acc.stop = true;
    pthread_cond_signal(&acc.room);
    pthread_mutex_unlock(&acc.mu);
    uint64_t one = 1;
    if (write(acc.stopfd, &one, sizeof one) < 0) {
        /* cannot fail: the counter is far from its maximum */
    }
    pthread_join(acc.thread, NULL);
    on_handoff(&acc.async);             /* handed over: served, with Connection: close */
    uv_close((uv_handle_t *)&acc.async, NULL);
    close(acc.epfd);
    close(acc.stopfd);
    acc.epfd = acc.stopfd = -1;
}

/*
 * Takes the socket-activation fds (sd_listen_fds(3) convention): returns how
 * many were passed to this process (0 when LISTEN_PID is not our pid), marks
 * them close-on-exec and unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES so
 * that children do not take them for theirs.
 */
static int take_listen_fds(void)
{
    const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
    unsigned long pid = 0, nfds = 0;
    int n = 0;
    if (pid_s && fds_s && parse_ulong(pid_s, strlen(pid_s), ULONG_MAX, &pid) &&
        pid == (unsigned long)getpid() && parse_ulong(fds_s, strlen(fds_s), 1024, &nfds))
        n = (int)nfds;
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    for (int fd = 3; fd < 3 + n; fd++) {
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0)
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    return n;
}

/* Serves on the inherited listening socket at fd 3. Exits 1 if it cannot. */
static void listen_inherited(void)
{
    int domain = 0, type = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(3, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
        fprintf(stderr, "httpd: LISTEN_FDS is set but fd 3 is not a socket (%s)\n", strerror(errno));
        exit(1);
    }
    len = sizeof type;
    if (getsockopt(3, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
        fprintf(stderr, "httpd: fd 3 is not a stream socket; socket activation needs a listening TCP or Unix stream socket\n");
        exit(1);
    }
    int rc;
    if (domain == AF_UNIX) {
        listener_is_pipe = true;
        uv_pipe_init(loop, &listener.pipe, 0);
        rc = uv_pipe_open(&listener.pipe, 3);
    } else if (domain == AF_INET || domain == AF_INET6) {
        uv_tcp_init(loop, &listener.tcp);
        rc = uv_tcp_open(&listener.tcp, 3);
    } else {
        fprintf(stderr, "httpd: fd 3 is a socket of family %d; expected TCP or Unix\n", domain);
        exit(1);
    }
    listener_open = true;
    /* listen() again on a listening socket only adjusts its backlog. */
    if (rc == 0)
        rc = opt.accept_batch ? accept_fair_start() : uv_listen(&listener.stream, LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
        fprintf(stderr, "httpd: cannot serve on fd 3: %s\n", uv_strerror(rc));
        exit(1);
    }
    fprintf(stderr, "httpd: pid %ld serving on fd 3\n", (long)my_pid);
}

/* Binds and listens on --host:--port. Exits 1 if it cannot. */
static void listen_own(void)
{
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%ld", opt.port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int grc = getaddrinfo(opt.host, port_s, &hints, &res);
    if (grc != 0) {
        fprintf(stderr, "httpd: cannot resolve --host %s: %s\n", opt.host, gai_strerror(grc));
        exit(1);
    }
    uv_tcp_init(loop, &listener.tcp);
    listener_open = true;
    int rc = uv_tcp_bind(&listener.tcp, res->ai_addr, 0);
    freeaddrinfo(res);
    if (rc == 0)
        rc = uv_listen(&listener.stream, LISTEN_BACKLOG, on_connection);
    if (rc != 0) {
        fprintf(stderr, "httpd: cannot listen on %s:%ld: %s\n", opt.host, opt.port, uv_strerror(rc));
        exit(1);
    }
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    char addr[INET6_ADDRSTRLEN] = "?";
    int port = (int)opt.port;
    if (uv_tcp_getsockname(&listener.tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(s6, addr, sizeof addr);
            port = ntohs(s6->sin6_port);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            uv_ip4_name(s4, addr, sizeof addr);
            port = ntohs(s4->sin_port);
        }
    }
    if (ss.ss_family == AF_INET6)
        fprintf(stderr, "httpd: pid %ld serving on [%s]:%d\n", (long)my_pid, addr, port);
    else
        fprintf(stderr, "httpd: pid %ld serving on %s:%d\n", (long)my_pid, addr, port);
}

/* ------------------------------------------------------------------------ */
/* Lifecycle: readiness, drain, exit                                        */
/* ------------------------------------------------------------------------ */

static void on_ready_timer(uv_timer_t *t)
{
    (void)t;
    if (!draining)
        drover_ready(true);
}

static void on_crash_timer(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "httpd: pid %ld exiting with status 1 (--crash-after)\n", (long)my_pid);
    _exit(1);
}

static void close_if_open(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Once draining and the last connection is gone: stop the agent and let the loop end. */
static void maybe_finish(void)
{
    if (!draining || n_conns > 0 || finished)
        return;
    finished = true;
    drover_stop();
    close_if_open((uv_handle_t *)&drain_timer);
    close_if_open((uv_handle_t *)&ready_timer);
    close_if_open((uv_handle_t *)&crash_timer);
    drover_lag_uv_stop(&lag_timer);
    close_if_open((uv_handle_t *)&lag_timer);
    if (sig_term_on)
        close_if_open((uv_handle_t *)&sig_term);
    close_if_open((uv_handle_t *)&sig_int);
}

/* --drain-timeout passed: close every connection that waits on its client. */
static void on_drain_timeout(uv_timer_t *t)
{
    (void)t;
    drain_expired = true;
    for (struct conn *c = conns; c; c = c->next)
        if (c->state == ST_HEAD || c->state == ST_BODY || c->state == ST_LINGER)
            conn_close(c);
}

/*
 * SIGTERM/SIGINT: stop accepting, report not ready, and let every connection
 * end after its next response (which says `Connection: close`). Idle
 * keep-alive connections are left open until --drain-timeout. Repeated
 * signals change nothing.
 */
static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    (void)signum;
    if (draining)
        return;
    draining = true;
    drover_ready(false);
    uv_timer_stop(&ready_timer);
    accept_fair_stop();                 /* before fd 3 is closed: the acceptor uses it */
    if (listener_open) {
        listener_open = false;
        uv_close(&listener.handle, NULL);   /* our copy of fd 3 only */
    }
    uv_timer_start(&drain_timer, on_drain_timeout, opt.drain_ms, 0);
    maybe_finish();
}

/* ------------------------------------------------------------------------ */
/* Command line                                                             */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
"usage: httpd [--port N [--host H]] [options]\n"
"\n"
"An HTTP/1.1 keep-alive server (libuv) reporting to drover through its agent.\n"
"\n"
"Socket: when LISTEN_PID is this process's pid and LISTEN_FDS >= 1 (systemd\n"
"socket activation, as `drover run --listen` starts workers), it serves on the\n"
"listening socket inherited at fd 3 (TCP or Unix), which other processes may\n"
"share; --port and --host are then ignored. Otherwise it binds its own socket.\n"
"\n"
"  -p, --port N           listen on port N (0: any free port, printed in the banner)\n"
"      --host H           address or name to bind with --port (default 127.0.0.1)\n"
"      --delay MS         delay the response to every valid request by MS ms on a\n"
"                         timer (simulated work)\n"
"      --drain-timeout MS on SIGTERM, close connections still waiting for their\n"
"                         client after MS ms (default 10000)\n"
"      --log-requests     print one line per request on stdout\n"
"      --accept-batch N   on an inherited socket, accept in a thread of its own\n"
"                         waiting in epoll with EPOLLEXCLUSIVE (one idle worker\n"
"                         woken per connection, in turn), at most N connections\n"
"                         per wakeup, resting 0.1 ms per connection held after\n"
"                         each (at most 2 ms), so that workers sharing the socket\n"
"                         get even shares (default %d; 0: libuv's uv_listen,\n"
"                         which accepts until EAGAIN on the loop)\n"
"  -h, --help             print this help and exit\n"
"\n"
"Test modes (for the supervisor's tests):\n"
"      --never-ready      never report ready to drover\n"
"      --ready-delay MS   report ready MS ms after listening (default 0)\n"
"      --ignore-term      ignore SIGTERM (SIGINT still drains)\n"
"      --crash-after MS   exit with status 1 after MS ms\n"
"\n"
"Routes (GET or HEAD; other methods get 405):\n"
"  /              200 \"ok\"\n"
"  /slow?ms=N     200 after N ms on a timer; the loop keeps serving meanwhile\n"
"  /block?ms=N    busy-blocks the event loop N ms, then 200 (event-loop lag)\n"
"  /fail          500\n"
"  /pid           200 with this process's pid\n"
"  /greeting      200 with $GREETING (its first 30 bytes)\n"
"  anything else  404\n"
"Request heads are limited to %u bytes (431); Content-Length bodies are read and\n"
"discarded; Transfer-Encoding is refused (411 for chunked, else 501).\n"
"\n"
"SIGTERM or SIGINT drains: stop accepting, report not ready, finish in-flight\n"
"requests, answer each connection's next request with `Connection: close` and\n"
"close it; exit 0 when no connection is left. A second signal changes nothing.\n"
"\n"
"The agent reads DROVER_SOCKET, DROVER_NAME, DROVER_WORKER_ID, DROVER_INTERVAL_MS\n"
"and DROVER_AGENT=0 (see drover.h); without a hub it does nothing.\n"
"Exit status: 0 after a drain, 1 on a failure, 2 on a usage error.\n",
            ACCEPT_BATCH_DEFAULT, HEAD_MAX);
}

static _Noreturn void usage_error(const char *fmt_what, const char *arg)
{
    fprintf(stderr, "httpd: %s '%s'\n", fmt_what, arg);
    fprintf(stderr, "Try 'httpd --help'.\n");
    exit(2);
}

/* Parses a millisecond option value (0..MS_MAX) or exits 2. */
static unsigned long ms_arg(const char *name, const char *arg)
{
    unsigned long v;
    if (!parse_ulong(arg, strlen(arg), MS_MAX, &v)) {
        fprintf(stderr, "httpd: %s takes milliseconds (0..%lu), not '%s'\n", name, MS_MAX, arg);
        fprintf(stderr, "Try 'httpd --help'.\n");
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    enum { O_HOST = 256, O_DELAY, O_DRAIN, O_LOG, O_NEVER, O_READY, O_IGNORE, O_CRASH, O_BATCH };
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"host", required_argument, NULL, O_HOST},
        {"delay", required_argument, NULL, O_DELAY},
        {"drain-timeout", required_argument, NULL, O_DRAIN},
        {"log-requests", no_argument, NULL, O_LOG},
        {"accept-batch", required_argument, NULL, O_BATCH},
        {"never-ready", no_argument, NULL, O_NEVER},
        {"ready-delay", required_argument, NULL, O_READY},
        {"ignore-term", no_argument, NULL, O_IGNORE},
        {"crash-after", required_argument, NULL, O_CRASH},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    unsigned long v;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":p:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'p':
            if (!parse_ulong(optarg, strlen(optarg), 65535, &v))
                usage_error("--port takes a port number 0..65535, not", optarg);
            opt.port = (long)v;
            break;
        case O_HOST:
            if (!*optarg)
                usage_error("--host takes an address or a host name, not", optarg);
            opt.host = optarg;
            break;
        case O_DELAY:  opt.delay_ms = ms_arg("--delay", optarg); break;
        case O_DRAIN:  opt.drain_ms = ms_arg("--drain-timeout", optarg); break;
        case O_READY:  opt.ready_ms = ms_arg("--ready-delay", optarg); break;
        case O_CRASH:  opt.crash_ms = ms_arg("--crash-after", optarg); opt.crash = true; break;
        case O_LOG:    opt.log_requests = true; break;
        case O_BATCH:
            if (!parse_ulong(optarg, strlen(optarg), 1024, &v))
                usage_error("--accept-batch takes a number 0..1024, not", optarg);
            opt.accept_batch = v;
            break;
        case O_NEVER:  opt.never_ready = true; break;
        case O_IGNORE: opt.ignore_term = true; break;
        case 'h':
            usage(stdout);
            exit(0);
        case ':':
            usage_error("option needs a value:", argv[optind - 1]);
        default:
            usage_error("unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        usage_error("unexpected argument", argv[optind]);
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    my_pid = getpid();

    /* A client that vanishes mid-response is an EPIPE, not a death. */
    signal(SIGPIPE, SIG_IGN);
    if (opt.ignore_term)
        signal(SIGTERM, SIG_IGN);
    if (opt.log_requests)
        setvbuf(stdout, NULL, _IOLBF, 0);

    int nfds = take_listen_fds();
    if (nfds < 1 && opt.port < 0) {
        fprintf(stderr, "httpd: no socket to serve on: give --port N, or start it with an "
                        "inherited socket (LISTEN_FDS/LISTEN_PID, e.g. drover run --listen)\n"
                        "Try 'httpd --help'.\n");
        return 2;
    }

    loop = uv_default_loop();
    /* Signals first: a SIGTERM that comes while we set up is acted on (as a
     * drain) once the loop runs, rather than killing the process. */
    if (!opt.ignore_term) {
        uv_signal_init(loop, &sig_term);
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        sig_term_on = true;
    }
    uv_signal_init(loop, &sig_int);
    uv_signal_start(&sig_int, on_signal, SIGINT);

    if (nfds >= 1)
        listen_inherited();
    else
        listen_own();

    /* The agent starts once there is something to serve (a failed start exits
     * above without leaving a reporter thread behind). */
    int rc = drover_start();
    if (rc < 0)
        fprintf(stderr, "httpd: drover agent disabled: %s (check the DROVER_* variables)\n",
                strerror(-rc));
    uv_timer_init(loop, &ready_timer);
    uv_timer_init(loop, &crash_timer);
    uv_timer_init(loop, &drain_timer);
    drover_lag_uv_start(loop, &lag_timer, LAG_PERIOD_MS);

    if (!opt.never_ready) {
        if (opt.ready_ms > 0)
            uv_timer_start(&ready_timer, on_ready_timer, opt.ready_ms, 0);
        else
            drover_ready(true);
    }
    if (opt.crash) {
        uv_timer_start(&crash_timer, on_crash_timer, opt.crash_ms, 0);
        uv_unref((uv_handle_t *)&crash_timer);
    }

    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    uv_library_shutdown();
    return 0;
}
