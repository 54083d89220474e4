/*
 * bridge.c — `drover bridge`: one poll loop between stdin/stdout and
 * ctl.sock, with one bounded buffer per direction (a side that does not
 * read stops the other side being read: back-pressure, never growth).
 */
#include "tui/bridge.h"

#include "hub/paths.h"
#include "tui/cli.h"
#include "tui/client.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BRIDGE_BUF (64 * 1024)   /* per direction */

const char bridge_usage[] = "bridge [-L NAME] [--socket-dir DIR]";
const char bridge_help[] =
    "relay stdin and stdout to the namespace's hub (its control socket), for\n"
    "'--host' over ssh; exits when either side closes";

/* One direction of the relay: bytes read from `from`, not yet written to `to`. */
typedef struct {
    int    from, to;
    bool   eof;          /* `from` ended; once drained, `to` is told (shutdown) */
    size_t len;
    char   buf[BRIDGE_BUF];
} bridge_dir;

/* Prints a usage error; returns 2. */
static int bridge_usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "drover: %s%s%s\nusage: drover %s\nTry 'drover bridge --help'.\n", what, arg ? " " : "",
            arg ? arg : "", bridge_usage);
    return 2;
}

/* Reads what fits into d. Returns 0, or -1 on an error (errno set). */
static int bridge_fill(bridge_dir *d)
{
    ssize_t r = read(d->from, d->buf + d->len, sizeof d->buf - d->len);
    if (r < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    if (r == 0)
        d->eof = true;
    d->len += (size_t)r;
    return 0;
}

/* Writes what it can of d's bytes. Returns 0, or -1 on an error (errno set; EPIPE: the reader left). */
static int bridge_drain(bridge_dir *d)
{
    /* send() on the socket would avoid SIGPIPE; stdout may be a pipe: SIGPIPE is ignored instead */
    ssize_t w = write(d->to, d->buf, d->len);
    if (w < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -1;
    memmove(d->buf, d->buf + w, d->len - (size_t)w);
    d->len -= (size_t)w;
    return 0;
}

static int bridge_relay(int sock);

int bridge_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"socket-dir", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    const char *ns = "default", *socket_dir = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":L:h", opts, NULL)) != -1) {
        switch (c) {
        case 'L':
            if (!paths_valid_name(optarg))
                return bridge_usage_error("invalid namespace name", optarg);
            ns = optarg;
            break;
        case 'S': socket_dir = optarg; break;
        case 'h':
            printf("usage: drover %s\n\n%s.\n\noptions:\n%s", bridge_usage, bridge_help, cli_ns_options);
            return 0;
        case ':': return bridge_usage_error("option needs a value:", argv[optind - 1]);
        default: return bridge_usage_error("unknown option for bridge:", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bridge_usage_error("unexpected argument for bridge:", argv[optind]);

    char path[PATHS_MAX + 16], err[512];
    if (paths_ctl(socket_dir, ns, false, path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "drover: no hub is running in namespace '%s' (%s)\n", ns, err);
        return 1;
    }
    int sock = client_unix_connect(path, err, sizeof err);
    if (sock < 0) {
        fprintf(stderr, "drover: %s\n", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);   /* a reader gone is EPIPE: an end, not a death */
    /* stdin and stdout may be shared with others (a terminal): their flags are put back */
    int flags[2];
    for (int fd = 0; fd < 2; fd++) {
        flags[fd] = fcntl(fd, F_GETFL);
        if (flags[fd] >= 0)
            fcntl(fd, F_SETFL, flags[fd] | O_NONBLOCK);
    }
    fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
    int rc = bridge_relay(sock);
    for (int fd = 0; fd < 2; fd++)
        if (flags[fd] >= 0)
            fcntl(fd, F_SETFL, flags[fd]);
    close(sock);
    return rc;
}

/* The relay itself, until either side closes. Returns the exit status. */
static int bridge_relay(int sock)
{
    static bridge_dir up, down;   /* stdin → hub, hub → stdout (static: 128 KiB off the stack) */
    up = (bridge_dir){.from = 0, .to = sock};
    down = (bridge_dir){.from = sock, .to = 1};
    bool up_shut = false;
    for (;;) {
        /* the hub answered its last bytes and closed: done once stdout has them all */
        if (down.eof && down.len == 0)
            return 0;
        /* stdin ended: pass on what is left, then tell the hub (it closes, and so do we) */
        if (up.eof && up.len == 0 && !up_shut) {
            shutdown(sock, SHUT_WR);
            up_shut = true;
        }
        struct pollfd pf[4] = {
            {.fd = !up.eof && up.len < sizeof up.buf ? 0 : -1, .events = POLLIN},
            {.fd = up.len ? sock : -1, .events = POLLOUT},
            {.fd = !down.eof && down.len < sizeof down.buf ? sock : -1, .events = POLLIN},
            {.fd = down.len ? 1 : -1, .events = POLLOUT},
        };
        if (poll(pf, 4, -1) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "drover: bridge: poll: %s\n", strerror(errno));
            return 1;
        }
        if (pf[0].revents && bridge_fill(&up) != 0)
            up.eof = true;   /* stdin failed: as closed */
        if (pf[1].revents && bridge_drain(&up) != 0) {
            if (errno == EPIPE || errno == ECONNRESET)
                return 0;   /* the hub went away */
            fprintf(stderr, "drover: bridge: writing to the hub: %s\n", strerror(errno));
            return 1;
        }
        if (pf[2].revents && bridge_fill(&down) != 0) {
            if (errno == ECONNRESET)
                down.eof = true;
            else {
                fprintf(stderr, "drover: bridge: reading from the hub: %s\n", strerror(errno));
                return 1;
            }
        }
        if (pf[3].revents && bridge_drain(&down) != 0)
            return 0;   /* stdout's reader went away: the other side closed */
    }
}
