/*
 * listen.c — the shared listening socket.
 */
#include "hub/listen.h"

#include <errno.h>
#include <fcntl.h>
#include <systemd/sd-daemon.h>
#include <netdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Opens a Unix stream socket at path, replacing a stale socket file. */
static int listen_unix(const char *path, char *err, size_t errcap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errcap, "--listen unix:%s: path too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errcap, "cannot create a socket: %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* Only a socket nobody answers on is stale; never steal a live one. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
            close(probe);
            close(fd);
            snprintf(err, errcap, "cannot listen on unix:%s: another process is serving it", path);
            return -1;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, SOMAXCONN) != 0) {
        snprintf(err, errcap, "cannot listen on unix:%s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/*
 * Splits a TCP spec into host ("" = every interface; brackets of "[V6]"
 * removed) and port. Returns 0, or -1 with a usage message in err.
 */
static int listen_split(const char *spec, char *host, size_t hcap, const char **port, char *err, size_t errcap)
{
    host[0] = '\0';
    *port = spec;
    const char *colon = strrchr(spec, ':');
    if (colon) {
        size_t hl = (size_t)(colon - spec);
        if (hl >= hcap) {
            snprintf(err, errcap, "--listen %s: host too long", spec);
            return -1;
        }
        memcpy(host, spec, hl);
        host[hl] = '\0';
        *port = colon + 1;
        /* "[::1]:8080" */
        if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
            memmove(host, host + 1, hl - 2);
            host[hl - 2] = '\0';
        }
    }
    char *end;
    long p = strtol(*port, &end, 10);
    if (**port < '0' || **port > '9' || *end || p < 0 || p > 65535) {
        snprintf(err, errcap, "--listen takes [HOST:]PORT or unix:PATH, not '%s'", spec);
        return -1;
    }
    return 0;
}

/*
 * Checks an "fd:N" / "fd:NAME" spec: N a descriptor from 3 on, NAME a
 * LISTEN_FDNAMES name (1-255 printable bytes, no ':'). Returns 0, or -1
 * with a usage message.
 */
static int listen_check_fd(const char *spec, char *err, size_t errcap)
{
    const char *v = spec + 3;
    size_t n = strlen(v);
    if (v[0] >= '0' && v[0] <= '9') {
        char *end;
        errno = 0;
        long fd = strtol(v, &end, 10);
        if (!*end && !errno && fd >= SD_LISTEN_FDS_START && fd <= 65535)
            return 0;
    } else if (n >= 1 && n <= 255 && !strchr(v, ':')) {
        bool ok = true;
        for (size_t i = 0; i < n && ok; i++)
            ok = (unsigned char)v[i] > ' ' && (unsigned char)v[i] < 0x7f;
        if (ok)
            return 0;
    }
    snprintf(err, errcap, "--listen fd:N takes an inherited descriptor N >= 3 or a LISTEN_FDNAMES name, not '%s'",
             spec);
    return -1;
}

/* What systemd (or systemd-socket-activate) passed: LISTEN_FDS descriptors
 * from SD_LISTEN_FDS_START and their LISTEN_FDNAMES; read once, and the
 * variables removed so workers never see them. */
static int inherited_n = -1;
static char **inherited_names;

static int listen_inherited_count(void)
{
    if (inherited_n < 0) {
        inherited_n = sd_listen_fds_with_names(1, &inherited_names);
        if (inherited_n < 0)
            inherited_n = 0;
        /* Ours for the hub's life (never closed: an app removed and added
         * back gets it again), and no worker's: close-on-exec. */
        for (int i = 0; i < inherited_n; i++)
            fcntl(SD_LISTEN_FDS_START + i, F_SETFD, FD_CLOEXEC);
    }
    return inherited_n;
}

/* A close-on-exec duplicate of an inherited descriptor: the caller owns and
 * may close it; the inherited one stays open. -1 with err on failure. */
static int listen_dup(int fd, const char *spec, char *err, size_t errcap)
{
    int d = fcntl(fd, F_DUPFD_CLOEXEC, SD_LISTEN_FDS_START);
    if (d < 0)
        snprintf(err, errcap, "--listen %s: cannot duplicate descriptor %d: %s", spec, fd, strerror(errno));
    return d;
}

/*
 * The descriptor spec ("fd:N" / "fd:NAME") names among those inherited. It
 * must be a listening stream socket. Returns a duplicate of it (see
 * listen_dup), or -1 with err.
 */
static int listen_inherited(const char *spec, char *err, size_t errcap)
{
    int n = listen_inherited_count();
    const char *v = spec + 3;
    int fd = -1;
    if (v[0] >= '0' && v[0] <= '9') {
        long want = strtol(v, NULL, 10);
        if (want < SD_LISTEN_FDS_START + n)
            fd = (int)want;
    } else {
        for (int i = 0; i < n && fd < 0; i++)
            if (inherited_names && inherited_names[i] && strcmp(inherited_names[i], v) == 0)
                fd = SD_LISTEN_FDS_START + i;
    }
    if (fd < 0) {
        snprintf(err, errcap, "--listen %s: no such inherited socket (%d passed in LISTEN_FDS%s)", spec, n,
                 n ? ", named in LISTEN_FDNAMES" : "; is the hub started by systemd or systemd-socket-activate?");
        return -1;
    }
    if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
        snprintf(err, errcap, "--listen %s: descriptor %d is not a listening stream socket", spec, fd);
        return -1;
    }
    return listen_dup(fd, spec, err, errcap);
}

/* True if sa (len bytes) is the same family, address and port as ai's. */
static bool listen_same_addr(const struct sockaddr_storage *sa, socklen_t len, const struct addrinfo *ai)
{
    if (sa->ss_family != ai->ai_family)
        return false;
    if (sa->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *a = (const void *)sa, *b = (const void *)ai->ai_addr;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    if (sa->ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *a = (const void *)sa, *b = (const void *)ai->ai_addr;
        return a->sin6_port == b->sin6_port && memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0 &&
               a->sin6_scope_id == b->sin6_scope_id;
    }
    return false;
}

int listen_resolve(const char *spec, struct addrinfo **res, char *err, size_t errcap)
{
    char host[256];
    const char *port;
    if (listen_split(spec, host, sizeof host, &port, err, errcap) != 0)
        return -1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, res);
    if (rc != 0) {
        snprintf(err, errcap, "--listen %s: %s", spec, gai_strerror(rc));
        return -1;
    }
    return 0;
}

/*
 * Socket activation for a TCP address: an inherited listening stream
 * socket bound to one of the addresses spec resolves to (exactly what the
 * hub would bind itself: same family, address and port). Returns a
 * duplicate of it, -1 when none matches (err untouched), or -2 with err.
 */
static int listen_inherited_tcp(const char *spec, char *err, size_t errcap)
{
    int n = listen_inherited_count();
    if (n == 0)
        return -1;
    struct addrinfo *res;
    if (listen_resolve(spec, &res, err, errcap) != 0)
        return -2;
    int found = -1;
    for (int i = 0; i < n && found < 0; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 || getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
            continue;
        for (struct addrinfo *ai = res; ai && found < 0; ai = ai->ai_next)
            if (listen_same_addr(&sa, len, ai))
                found = fd;
    }
    freeaddrinfo(res);
    if (found < 0)
        return -1;
    int d = listen_dup(found, spec, err, errcap);
    return d < 0 ? -2 : d;
}

bool listen_inherited_for(const char *spec)
{
    if (strncmp(spec, "fd:", 3) == 0)
        return true;
    if (strncmp(spec, "unix:", 5) == 0)
        return false;
    char err[256];
    int fd = listen_inherited_tcp(spec, err, sizeof err);
    if (fd >= 0)
        close(fd);
    return fd != -1;   /* -2: one matched but could not be duplicated: it is still systemd's */
}

int listen_check(const char *spec, char *err, size_t errcap)
{
    if (strncmp(spec, "fd:", 3) == 0)
        return listen_check_fd(spec, err, errcap);
    if (strncmp(spec, "unix:", 5) == 0) {
        size_t n = strlen(spec + 5);
        if (n == 0 || n >= sizeof ((struct sockaddr_un *)0)->sun_path) {
            snprintf(err, errcap, "--listen unix:PATH needs a path of 1-%zu bytes, not '%s'",
                     sizeof ((struct sockaddr_un *)0)->sun_path - 1, spec);
            return -1;
        }
        return 0;
    }
    char host[256];
    const char *port;
    return listen_split(spec, host, sizeof host, &port, err, errcap);
}

int listen_tcp(const char *spec, bool reuseport, bool bind_only, char *err, size_t errcap)
{
    struct addrinfo *res;
    if (listen_resolve(spec, &res, err, errcap) != 0)
        return -1;
    int fd = -1, last_errno = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if ((!reuseport || setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) == 0) &&
            bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && (bind_only || listen(fd, SOMAXCONN) == 0))
            break;
        last_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errcap, "cannot listen on %s: %s", spec, strerror(last_errno));
    return fd;
}

/* Sockets an upgrade handed over, by the spec they were opened for. */
#define LISTEN_HANDED_MAX 256
static struct {
    char *spec;
    int   fd;
} listen_handed[LISTEN_HANDED_MAX];

int listen_hand_over(const char *spec, int fd)
{
    for (size_t i = 0; i < LISTEN_HANDED_MAX; i++)
        if (!listen_handed[i].spec) {
            if (!(listen_handed[i].spec = strdup(spec)))
                return -1;
            listen_handed[i].fd = fd;
            return 0;
        }
    return -1;
}

bool listen_handed_for(const char *spec)
{
    for (size_t i = 0; i < LISTEN_HANDED_MAX; i++)
        if (listen_handed[i].spec && strcmp(listen_handed[i].spec, spec) == 0)
            return true;
    return false;
}

void listen_hand_over_end(void)
{
    for (size_t i = 0; i < LISTEN_HANDED_MAX; i++)
        if (listen_handed[i].spec) {
            close(listen_handed[i].fd);
            free(listen_handed[i].spec);
            listen_handed[i].spec = NULL;
        }
}

int listen_open(const char *spec, char *err, size_t errcap)
{
    for (size_t i = 0; i < LISTEN_HANDED_MAX; i++)
        if (listen_handed[i].spec && strcmp(listen_handed[i].spec, spec) == 0) {
            free(listen_handed[i].spec);
            listen_handed[i].spec = NULL;
            return listen_handed[i].fd;
        }
    if (listen_check(spec, err, errcap) != 0)
        return -1;
    if (strncmp(spec, "fd:", 3) == 0)
        return listen_inherited(spec, err, errcap);
    if (strncmp(spec, "unix:", 5) == 0)
        return listen_unix(spec + 5, err, errcap);
    int fd = listen_inherited_tcp(spec, err, errcap);
    if (fd != -1)
        return fd < 0 ? -1 : fd;
    return listen_tcp(spec, false, false, err, errcap);
}

json_t *listen_save(bool final)
{
    int n = listen_inherited_count();
    json_t *names = json_array();
    for (int i = 0; i < n; i++) {
        if (final) {   /* the same numbers from SD_LISTEN_FDS_START on, across the exec */
            int fl = fcntl(SD_LISTEN_FDS_START + i, F_GETFD);
            if (fl >= 0)
                fcntl(SD_LISTEN_FDS_START + i, F_SETFD, fl & ~FD_CLOEXEC);
        }
        json_array_append_new(names, inherited_names && inherited_names[i] ? json_string(inherited_names[i])
                                                                           : json_null());
    }
    return names;
}

void listen_restore(const json_t *names)
{
    size_t n = json_array_size(names);
    if (!n)
        return;
    inherited_names = calloc(n + 1, sizeof *inherited_names);
    for (size_t i = 0; i < n; i++) {
        const char *v = json_string_value(json_array_get(names, i));
        if (inherited_names && v)
            inherited_names[i] = strdup(v);
        fcntl(SD_LISTEN_FDS_START + (int)i, F_SETFD, FD_CLOEXEC);
    }
    inherited_n = (int)n;
}

