/*
 * fleet.c — the merged headless stream of several hubs, on one libuv loop
 * with one asynchronous client per host (tui/client.h).
 */
#include "tui/fleet.h"

#include "proto/control.h"
#include "tui/client.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define FLEET_RETRY_MS 1000   /* first retry of a host; doubled per failure up to 30 s (client.c) */

typedef struct fleet fleet;

typedef struct {
    fleet  *f;
    client *cl;
    char    name[SSHLINK_SPEC_MAX];
    char   *prefix;     /* "{\"host\":\"NAME\"," — JSON-escaped once */
    bool    up;
} fleet_host;

struct fleet {
    uv_loop_t   loop;
    fleet_host *h;
    size_t      n;
    long        count, printed;
    bool        done;
};

int fleet_hosts_file(const char *file, sshlink_target *hosts, size_t *n, char *err, size_t errcap)
{
    FILE *fp = fopen(file, "r");
    if (!fp) {
        snprintf(err, errcap, "%s: %s", file, strerror(errno));
        return -1;
    }
    char line[1024], e[300];
    int rc = 0;
    for (long no = 1; fgets(line, sizeof line, fp); no++) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(err, errcap, "%s:%ld: line too long", file, no);
            rc = -1;
            break;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        len = strlen(p);
        while (len && (p[len - 1] == '\n' || p[len - 1] == '\r' || p[len - 1] == ' ' || p[len - 1] == '\t'))
            p[--len] = '\0';
        if (!*p || *p == '#')
            continue;
        if (*n == FLEET_HOSTS_MAX) {
            snprintf(err, errcap, "%s:%ld: more than %d hosts", file, no, FLEET_HOSTS_MAX);
            rc = -1;
            break;
        }
        if (sshlink_parse(p, &hosts[*n], e, sizeof e) != 0) {
            snprintf(err, errcap, "%s:%ld: %s", file, no, e);
            rc = -1;
            break;
        }
        (*n)++;
    }
    fclose(fp);
    return rc;
}

static double fleet_now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

/* Writes s to stdout; on a closed stdout the stream is over. */
static void fleet_out(fleet *f, const char *s, size_t n)
{
    if (f->done)
        return;
    if (fwrite(s, 1, n, stdout) != n || fflush(stdout) != 0) {
        f->done = true;   /* the reader went away (| head): a normal end */
        uv_stop(&f->loop);
    }
}

/* Prints a "host" line: the host came up, or is unreachable and retried (error: why). */
static void fleet_host_line(fleet_host *h, const char *state, const char *error)
{
    json_t *o = json_pack("{s:s, s:f, s:s, s:s, s:s?}", "type", "host", "ts", fleet_now(), "host", h->name,
                          "state", state, "error", error);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(13)) : NULL;
    if (s) {
        fleet_out(h->f, s, strlen(s));
        fleet_out(h->f, "\n", 1);
    }
    free(s);
    json_decref(o);
}

static void fleet_on_hello(void *ctx, const json_t *hello)
{
    (void)hello;
    fleet_host *h = ctx;
    ctl_request r = ctl_request_make(CTL_STREAM, NULL);
    r.format = CTL_FORMAT_NDJSON;
    client_send(h->cl, ctl_request_json(&r));
    h->up = true;
    fleet_host_line(h, "up", NULL);
}

/* An output message: each NDJSON line again, with the host's key first. */
static void fleet_on_message(void *ctx, const json_t *msg)
{
    fleet_host *h = ctx;
    fleet *f = h->f;
    const char *type = json_string_value(json_object_get(msg, "type"));
    json_t *text = json_object_get(msg, "text");
    if (!type || strcmp(type, "output") != 0 || !json_is_string(text))
        return;
    const char *p = json_string_value(text), *end = p + json_string_length(text);
    size_t plen = strlen(h->prefix);
    while (p < end && !f->done) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        /* a line is one JSON object: "{…}" becomes "{"host":…,…}" ("{}" has no key to follow) */
        if (le - p >= 2 && p[0] == '{' && p[1] != '}') {
            fleet_out(f, h->prefix, plen);
            fleet_out(f, p + 1, (size_t)(le - p - 1));
            fleet_out(f, "\n", 1);
        }
        p = nl ? nl + 1 : end;
    }
    if (f->count > 0 && ++f->printed >= f->count) {
        f->done = true;
        uv_stop(&f->loop);
    }
}

static void fleet_on_disconnect(void *ctx, const char *why)
{
    fleet_host *h = ctx;
    h->up = false;
    fleet_host_line(h, "unreachable", why);
    fprintf(stderr, "drover: %s: %s; retrying\n", h->name, why);
}

/* Frees the hosts' clients and runs the loop until their handles are closed. */
static void fleet_close(fleet *f)
{
    for (size_t i = 0; i < f->n; i++) {
        client_free(f->h[i].cl);
        f->h[i].cl = NULL;
    }
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_loop_close(&f->loop);
    for (size_t i = 0; i < f->n; i++)
        free(f->h[i].prefix);
    free(f->h);
}

int fleet_stream(const fleet_options *o)
{
    static const client_callbacks cb = {fleet_on_hello, fleet_on_message, fleet_on_disconnect};
    fleet f = {.count = o->count};
    signal(SIGPIPE, SIG_IGN);   /* stdout closed is an end; ssh children get the default back */
    if (uv_loop_init(&f.loop) != 0) {
        fprintf(stderr, "drover: cannot start an event loop\n");
        return 1;
    }
    f.h = calloc(o->nhosts + 1, sizeof *f.h);
    if (!f.h) {
        uv_loop_close(&f.loop);
        fprintf(stderr, "drover: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < o->nhosts + 1; i++) {
        bool local = i == o->nhosts;
        if (local && !o->local_ctl)
            break;
        fleet_host *h = &f.h[f.n++];
        h->f = &f;
        snprintf(h->name, sizeof h->name, "%s", local ? FLEET_LOCAL : o->hosts[i].spec);
        json_t *js = json_string(h->name);
        char *q = js ? json_dumps(js, JSON_ENCODE_ANY) : NULL;
        json_decref(js);
        size_t need = q ? strlen(q) + 10 : 0;
        h->prefix = q ? malloc(need) : NULL;
        if (h->prefix)
            snprintf(h->prefix, need, "{\"host\":%s,", q);
        free(q);
        h->cl = !h->prefix ? NULL
                : local ? client_new(&f.loop, o->local_ctl, FLEET_RETRY_MS, &cb, h)
                        : client_new_ssh(&f.loop, &o->hosts[i], o->remote, o->ns, o->socket_dir, FLEET_RETRY_MS,
                                         &cb, h);
        if (!h->cl) {
            fprintf(stderr, "drover: out of memory\n");
            fleet_close(&f);
            return 1;
        }
    }
    uv_run(&f.loop, UV_RUN_DEFAULT);
    fleet_close(&f);
    return 0;
}
