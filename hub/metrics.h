/*
 * metrics.h — the hub's Prometheus endpoint (--metrics [HOST:]PORT) and
 * text-file route (--metrics-textfile PATH).
 *
 * An HTTP server run by libmicrohttpd inside the hub's libuv loop (its epoll
 * descriptor polled by uv_poll, its timeouts by a uv_timer): GET /metrics
 * answers the last interval's exposition, gzip'd when the client accepts
 * it; GET /healthz answers "ok"; other paths 404, other methods 405. The
 * body is rendered once per interval and shared by every scrape, so
 * scrapers cost the hub a bounded number of connections (METRICS_CONN_MAX,
 * each with a bounded buffer and an idle timeout), not a copy each. Each
 * connection also has absolute deadlines, whatever bytes it trickles: its
 * request whole within METRICS_REQUEST_S of its start (or of its previous
 * response's end), the response sent within METRICS_SEND_S; past one it is
 * cut, so slow clients cannot hold every connection for long.
 */
#ifndef DROVER_HUB_METRICS_H
#define DROVER_HUB_METRICS_H

#include <stddef.h>
#include <uv.h>

#define METRICS_CONN_MAX     64        /* connections at once; more wait in the backlog */
#define METRICS_CONN_MEM     (32 * 1024) /* per connection: request headers must fit */
#define METRICS_IDLE_S       10        /* a connection idle this long is closed */
#define METRICS_REQUEST_S    5         /* a request must arrive whole within this (slowloris) */
#define METRICS_SEND_S       10        /* and its response be sent within this (slow readers) */

typedef struct metrics metrics;

/*
 * Parses "[HOST:]PORT" (a bare port binds 127.0.0.1; HOST is an IPv4
 * address, or [IPv6]) into a socket address. Returns 0, or -1 with a
 * message in err.
 */
int metrics_parse_addr(const char *spec, struct sockaddr_storage *out, char *err, size_t errcap);

/*
 * Starts serving on spec in loop. Until the first metrics_publish, /metrics
 * answers 503. Returns the server, or NULL with a message in err.
 */
metrics *metrics_start(uv_loop_t *loop, const char *spec, char *err, size_t errcap);

/* Makes text (len bytes, copied) the body of /metrics from now on. */
void metrics_publish(metrics *m, const char *text, size_t len);

/* Stops serving and frees m once its handles are closed (NULL: nothing). */
void metrics_stop(metrics *m);

/*
 * Writes text to path atomically for node_exporter's textfile collector: a
 * temporary file in the same directory (created, never followed), then
 * rename. Returns 0, or -1 with a message in err.
 */
int metrics_textfile(const char *path, const char *text, size_t len, char *err, size_t errcap);

#endif
