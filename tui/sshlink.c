/*
 * sshlink.c — the ssh child behind a remote host's control stream.
 */
#include "tui/sshlink.h"

#include "hub/paths.h"
#include "proto/text.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;


struct sshlink {
    pid_t  pid;          /* the ssh child, 0 once reaped */
    int    status;       /* its wait status once reaped */
    int    fd;           /* our end of the socketpair */
    int    err_fd;       /* ssh's stderr, -1 once at EOF */
    size_t err_len;
    char   err[SSHLINK_ERR_KEEP];
};

/* True for a byte a user or host name may hold. */
static bool sshlink_name_byte(char c, bool bracketed)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_' || (bracketed && c == ':');
}

int sshlink_parse(const char *spec, sshlink_target *t, char *err, size_t errcap)
{
    memset(t, 0, sizeof *t);
    size_t n = strlen(spec);
    if (n == 0 || n >= sizeof t->spec)
        goto bad;
    memcpy(t->spec, spec, n + 1);
    const char *at = strchr(spec, '@');
    const char *host = at ? at + 1 : spec;
    if (at) {
        if (at == spec || spec[0] == '-')
            goto bad;
        for (const char *p = spec; p < at; p++)
            if (!sshlink_name_byte(*p, false))
                goto bad;
    }
    const char *end, *port = NULL;
    if (host[0] == '[') {   /* [IPv6]:PORT */
        end = strchr(host, ']');
        if (!end || end == host + 1)
            goto bad;
        for (const char *p = host + 1; p < end; p++)
            if (!sshlink_name_byte(*p, true))
                goto bad;
        if (end[1] == ':')
            port = end + 2;
        else if (end[1])
            goto bad;
        /* ssh takes the address without brackets */
        size_t ulen = at ? (size_t)(host - spec) : 0;
        memcpy(t->dest, spec, ulen);
        memcpy(t->dest + ulen, host + 1, (size_t)(end - host - 1));
    } else {
        const char *colon = strchr(host, ':');
        end = colon ? colon : host + strlen(host);
        if (end == host || host[0] == '-')
            goto bad;
        for (const char *p = host; p < end; p++)
            if (!sshlink_name_byte(*p, false))
                goto bad;
        if (colon)
            port = colon + 1;
        memcpy(t->dest, spec, (size_t)(end - spec));
    }
    if (port) {
        char *pe;
        errno = 0;
        long v = strtol(port, &pe, 10);
        if (port[0] < '0' || port[0] > '9' || *pe || errno || v < 1 || v > 65535)
            goto bad;
        t->port = (int)v;
    }
    return 0;
bad:
    snprintf(err, errcap, "bad host '%.100s': use [USER@]HOST[:PORT]", spec);
    return -1;
}

const char *sshlink_remote(const char *remote)
{
    if (remote && *remote)
        return remote;
    const char *env = getenv("DROVER_REMOTE");
    return env && *env ? env : "drover";
}

/* Appends s to out (cap bytes) in single quotes for a POSIX shell; false if it does not fit. */
static bool sshlink_quote(char *out, size_t cap, const char *s)
{
    size_t n = strlen(out);
    if (n + 1 >= cap)
        return false;
    out[n++] = '\'';
    for (; *s; s++) {
        const char *piece = *s == '\'' ? "'\\''" : NULL;
        size_t len = piece ? 4 : 1;
        if (n + len + 2 >= cap)
            return false;
        if (piece)
            memcpy(out + n, piece, len);
        else
            out[n] = *s;
        n += len;
    }
    out[n++] = '\'';
    out[n] = '\0';
    return true;
}

int sshlink_argv(const sshlink_target *t, const char *remote, const char *ns, const char *socket_dir,
                 sshlink_cmdline *out, char *err, size_t errcap)
{
    /* The remote command line: the namespace is a checked name; the directory is quoted. */
    if (!paths_valid_name(ns)) {
        snprintf(err, errcap, "invalid namespace name '%s'", ns);
        return -1;
    }
    int w = snprintf(out->cmd, sizeof out->cmd, "%s bridge -L %s%s", sshlink_remote(remote), ns,
                     socket_dir ? " --socket-dir " : "");
    if (w < 0 || (size_t)w >= sizeof out->cmd || (socket_dir && !sshlink_quote(out->cmd, sizeof out->cmd, socket_dir))) {
        snprintf(err, errcap, "the remote command is too long");
        return -1;
    }

    /* argv: $DROVER_SSH's words, then ours. */
    const char *env = getenv("DROVER_SSH");
    if (env && strlen(env) >= sizeof out->words) {
        snprintf(err, errcap, "DROVER_SSH is too long (at most %zu bytes)", sizeof out->words - 1);
        return -1;
    }
    snprintf(out->words, sizeof out->words, "%s", env && *env ? env : "ssh");
    char *save = NULL;
    size_t argc = 0;
    for (char *tok = strtok_r(out->words, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
        if (argc == SSHLINK_WORDS_MAX) {
            snprintf(err, errcap, "DROVER_SSH has more than %d words", SSHLINK_WORDS_MAX);
            return -1;
        }
        out->argv[argc++] = tok;
    }
    if (argc == 0) {
        snprintf(err, errcap, "DROVER_SSH names no command");
        return -1;
    }
    out->argv[argc++] = "-T";
    out->argv[argc++] = "-o";
    out->argv[argc++] = "BatchMode=yes";   /* never a password prompt: the console owns the terminal */
    if (t->port) {
        snprintf(out->port, sizeof out->port, "%d", t->port);
        out->argv[argc++] = "-p";
        out->argv[argc++] = out->port;
    }
    out->argv[argc++] = "--";
    snprintf(out->dest, sizeof out->dest, "%s", t->dest);
    out->argv[argc++] = out->dest;
    out->argv[argc++] = out->cmd;
    out->argv[argc] = NULL;
    return 0;
}

void sshlink_why(const char *tail, size_t len, bool exited, int status, char *err, size_t errcap)
{
    /* the last non-empty line of stderr */
    char line[SSHLINK_ERR_KEEP + 1];
    if (len > SSHLINK_ERR_KEEP)
        len = SSHLINK_ERR_KEEP;
    size_t end = len;
    while (end > 0 && (tail[end - 1] == '\n' || tail[end - 1] == '\r'))
        end--;
    size_t start = end;
    while (start > 0 && tail[start - 1] != '\n')
        start--;
    memcpy(line, tail + start, end - start);
    line[end - start] = '\0';
    const char *say = line;
    if (strncmp(say, "drover: ", 8) == 0)
        say += 8;   /* the remote bridge's own message */
    char safe[SSHLINK_ERR_KEEP + 1];
    text_sanitize(say, safe, sizeof safe);   /* it came from another machine */
    int code = exited && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 255)   /* ssh's own failure: the host was not reached */
        snprintf(err, errcap, "unreachable: %s", *safe ? safe : "ssh exited with status 255");
    else if (*safe && code == 127)   /* the remote shell did not find drover */
        snprintf(err, errcap, "%s (the remote command is set by --remote-cmd or DROVER_REMOTE)", safe);
    else if (*safe)
        snprintf(err, errcap, "%s", safe);
    else if (exited && WIFSIGNALED(status))
        snprintf(err, errcap, "ssh was killed by signal %d", WTERMSIG(status));
    else if (code > 0)
        snprintf(err, errcap, "the remote command exited with status %d", code);
    else
        snprintf(err, errcap, "the connection ended");
}

sshlink *sshlink_start(const sshlink_target *t, const char *remote, const char *ns, const char *socket_dir,
                       char *err, size_t errcap)
{
    static sshlink_cmdline cl;   /* the CLI's one thread; consumed by posix_spawnp below */
    if (sshlink_argv(t, remote, ns, socket_dir, &cl, err, errcap) != 0)
        return NULL;
    char **argv = cl.argv;

    sshlink *l = calloc(1, sizeof *l);
    int sv[2] = {-1, -1}, ep[2] = {-1, -1};
    if (!l || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0 || pipe2(ep, O_CLOEXEC) != 0) {
        snprintf(err, errcap, "cannot start ssh: %s", strerror(errno));
        goto fail;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    /* dup2 clears close-on-exec on 0, 1, 2; every other descriptor of ours is CLOEXEC */
    posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
    posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
    /* the CLI ignores SIGPIPE, which exec would pass on: ssh gets the defaults */
    sigset_t def, none;
    sigemptyset(&def);
    sigaddset(&def, SIGPIPE);
    sigaddset(&def, SIGINT);
    sigaddset(&def, SIGTERM);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&at, &def);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    int rc = posix_spawnp(&l->pid, argv[0], &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        l->pid = 0;
        snprintf(err, errcap, "cannot start %s: %s", argv[0], strerror(rc));
        goto fail;
    }
    close(sv[1]);
    close(ep[1]);
    l->fd = sv[0];
    l->err_fd = ep[0];
    fcntl(l->err_fd, F_SETFL, fcntl(l->err_fd, F_GETFL) | O_NONBLOCK);
    return l;
fail:
    for (int i = 0; i < 2; i++) {
        if (sv[i] >= 0)
            close(sv[i]);
        if (ep[i] >= 0)
            close(ep[i]);
    }
    free(l);
    return NULL;
}

int sshlink_fd(const sshlink *l)
{
    return l->fd;
}

int sshlink_err_fd(const sshlink *l)
{
    return l->err_fd;
}

void sshlink_read_err(sshlink *l)
{
    while (l->err_fd >= 0) {
        char buf[SSHLINK_ERR_KEEP / 2];
        ssize_t r = read(l->err_fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return;
        if (r <= 0) {
            close(l->err_fd);
            l->err_fd = -1;
            return;
        }
        /* keep the last SSHLINK_ERR_KEEP bytes: the reason is at the end (buf is smaller) */
        size_t n = (size_t)r;
        if (l->err_len + n > sizeof l->err) {
            size_t drop = l->err_len + n - sizeof l->err;
            memmove(l->err, l->err + drop, l->err_len - drop);
            l->err_len -= drop;
        }
        memcpy(l->err + l->err_len, buf, n);
        l->err_len += n;
    }
}

static long sshlink_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reaps ssh if it has ended; true once reaped. */
static bool sshlink_reap(sshlink *l)
{
    if (l->pid > 0 && waitpid(l->pid, &l->status, WNOHANG) == l->pid)
        l->pid = 0;
    return l->pid == 0;
}

int sshlink_error(sshlink *l, char *err, size_t errcap)
{
    /* ssh's stderr ends when it exits: wait for that (bounded), then reap it */
    long deadline = sshlink_ms() + 2000;
    while (l->err_fd >= 0 && sshlink_ms() < deadline) {
        struct pollfd pf = {.fd = l->err_fd, .events = POLLIN};
        if (poll(&pf, 1, (int)(deadline - sshlink_ms())) > 0)
            sshlink_read_err(l);
    }
    while (!sshlink_reap(l) && sshlink_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000000};   /* ssh closed stderr and is exiting */
        nanosleep(&ts, NULL);
    }
    if (l->err_len == 0 && l->pid == 0 && WIFEXITED(l->status) && WEXITSTATUS(l->status) == 0)
        return -1;   /* nothing to say: the remote side just closed */
    sshlink_why(l->err, l->err_len, l->pid == 0, l->status, err, errcap);
    return 0;
}

void sshlink_free(sshlink *l)
{
    if (!l)
        return;
    close(l->fd);
    if (l->err_fd >= 0)
        close(l->err_fd);
    if (!sshlink_reap(l)) {
        kill(l->pid, SIGTERM);
        while (waitpid(l->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    free(l);
}
