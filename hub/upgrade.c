/*
 * upgrade.c — the blob that carries a hub across `drover upgrade`, the
 * check run of the new binary, and the exec itself (see upgrade.h).
 */
#include "hub/upgrade.h"
#include "proto/control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef DROVER_VERSION
#define DROVER_VERSION "0"
#endif

extern char **environ;

#define UPGRADE_FD_MAX 65535

/* ---- hex ----------------------------------------------------------------- */

json_t *upgrade_hex(const void *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    char *s = malloc(2 * n + 1);
    if (!s)
        return NULL;
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        s[2 * i] = digits[b[i] >> 4];
        s[2 * i + 1] = digits[b[i] & 15];
    }
    s[2 * n] = '\0';
    json_t *j = json_stringn(s, 2 * n);
    free(s);
    return j;
}

/* The value of hex digit c, or -1. */
static int upgrade_nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

long upgrade_unhex(const json_t *s, void *out, size_t cap)
{
    if (!json_is_string(s))
        return -1;
    size_t len = json_string_length(s);
    const char *t = json_string_value(s);
    if (len % 2 || len / 2 > cap)
        return -1;
    unsigned char *o = out;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = upgrade_nibble(t[2 * i]), lo = upgrade_nibble(t[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        o[i] = (unsigned char)(hi << 4 | lo);
    }
    return (long)(len / 2);
}

/* ---- descriptors ---------------------------------------------------------- */

json_t *upgrade_keep_fd(int fd)
{
    if (fd < 0)
        return json_null();
    int fl = fcntl(fd, F_GETFD);
    if (fl >= 0)
        fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC);
    return json_integer(fd);
}

json_t *upgrade_fd_json(int fd)
{
    return fd >= 0 ? json_integer(fd) : json_null();
}

int upgrade_fd(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return -1;
    json_int_t fd = json_integer_value(v);
    if (fd < 0 || fd > UPGRADE_FD_MAX)
        return -1;
    /* Ours from now on: no later child inherits it. */
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
}

/* ---- the blob ------------------------------------------------------------- */

int upgrade_blob_write(const json_t *doc, char *err, size_t errcap)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    if (!text) {
        snprintf(err, errcap, "cannot encode the hub's state: out of memory");
        return -1;
    }
    size_t len = strlen(text);
    if (len > UPGRADE_MAX_BYTES) {
        snprintf(err, errcap, "the hub's state takes %zu bytes, more than the %u an upgrade carries",
                 len, UPGRADE_MAX_BYTES);
        free(text);
        return -1;
    }
    int fd = memfd_create("drover-upgrade", 0);
    if (fd < 0) {
        snprintf(err, errcap, "cannot create the upgrade blob: %s", strerror(errno));
        free(text);
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errcap, "cannot write the upgrade blob: %s", strerror(errno));
            free(text);
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    free(text);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

json_t *upgrade_blob_read(int fd, char *err, size_t errcap)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        snprintf(err, errcap, "the upgrade blob (fd %d) is not a memfd", fd);
        return NULL;
    }
    if (sb.st_size <= 0 || (uint64_t)sb.st_size > UPGRADE_MAX_BYTES) {
        snprintf(err, errcap, "the upgrade blob has %lld bytes (1..%u expected)", (long long)sb.st_size,
                 UPGRADE_MAX_BYTES);
        return NULL;
    }
    size_t len = (size_t)sb.st_size;
    char *text = malloc(len);
    if (!text) {
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t r = pread(fd, text + off, len - off, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(err, errcap, "cannot read the upgrade blob: %s", r < 0 ? strerror(errno) : "short");
            free(text);
            return NULL;
        }
        off += (size_t)r;
    }
    json_error_t je;
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!doc) {
        snprintf(err, errcap, "the upgrade blob is not JSON: %s", je.text);
        return NULL;
    }
    if (upgrade_validate(doc, err, errcap) != 0) {
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* ---- validation ----------------------------------------------------------- */

/* True when v is an integer in lo..hi. */
static bool upgrade_int_in(const json_t *v, json_int_t lo, json_int_t hi)
{
    return json_is_integer(v) && json_integer_value(v) >= lo && json_integer_value(v) <= hi;
}

/* True when o[key] is a descriptor number or null (absent counts as null). */
static bool upgrade_fd_ok(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return !v || json_is_null(v) || upgrade_int_in(v, 0, UPGRADE_FD_MAX);
}

static int upgrade_group_ok(const json_t *g, char *err, size_t errcap);

/* Checks one app of "apps". */
static int upgrade_app_ok(const json_t *a, char *err, size_t errcap)
{
    const char *name = json_string_value(json_object_get(a, "name"));
    if (!name || !ctl_app_name_ok(name)) {
        snprintf(err, errcap, "an app without a valid name");
        return -1;
    }
    json_t *ls = json_object_get(a, "listen_spec");
    if (!upgrade_int_in(json_object_get(a, "want"), 0, CTL_SCALE_MAX) || !upgrade_fd_ok(a, "listen_fd") ||
        !(json_is_null(ls) || (json_is_string(ls) && json_string_length(ls) < 4096))) {
        snprintf(err, errcap, "app %s: bad want or listen_fd", name);
        return -1;
    }
    if (upgrade_group_ok(json_object_get(a, "group"), err, errcap) != 0)   /* a file app's own */
        return -1;
    json_t *slots = json_object_get(a, "slots"), *s;
    size_t i;
    if (!json_is_array(slots) || json_array_size(slots) > CTL_SCALE_MAX) {
        snprintf(err, errcap, "app %s: bad slots", name);
        return -1;
    }
    json_array_foreach(slots, i, s) {
        const char *st = json_string_value(json_object_get(s, "state"));
        if (!upgrade_int_in(json_object_get(s, "id"), 0, CTL_ID_MAX) ||
            !upgrade_int_in(json_object_get(s, "pid"), 0, INT32_MAX) ||
            !upgrade_int_in(json_object_get(s, "restarts"), 0, INT64_MAX) ||
            !upgrade_int_in(json_object_get(s, "fails"), 0, 1000000) ||
            !upgrade_int_in(json_object_get(s, "lsock"), -1, 1 << 20) ||
            !upgrade_int_in(json_object_get(s, "age_ms"), 0, INT64_MAX) || !st ||
            (strcmp(st, "online") && strcmp(st, "stopped") && strcmp(st, "errored") && strcmp(st, "backoff")) ||
            (strcmp(st, "online") == 0) != (json_integer_value(json_object_get(s, "pid")) > 0)) {
            snprintf(err, errcap, "app %s: slot %zu is malformed", name, i);
            return -1;
        }
    }
    return 0;
}

/* Checks one stream of "logs". */
static int upgrade_stream_ok(const json_t *l, char *err, size_t errcap)
{
    const char *app = json_string_value(json_object_get(l, "app"));
    json_t *pipes = json_object_get(l, "pipes"), *ring = json_object_get(l, "ring"), *v;
    size_t i;
    if (!app || !ctl_app_name_ok(app) || !upgrade_int_in(json_object_get(l, "id"), 0, CTL_ID_MAX) ||
        !upgrade_int_in(json_object_get(l, "pid"), 0, INT32_MAX) || !json_is_array(pipes) ||
        json_array_size(pipes) > 64 || !json_is_array(ring)) {
        snprintf(err, errcap, "a log stream is malformed");
        return -1;
    }
    json_array_foreach(pipes, i, v) {
        json_t *part = json_object_get(v, "partial");
        if (!upgrade_int_in(json_object_get(v, "fd"), 0, UPGRADE_FD_MAX) ||
            !upgrade_int_in(json_object_get(v, "which"), 0, 1) ||
            !upgrade_int_in(json_object_get(v, "pid"), 0, INT32_MAX) || !json_is_string(part) ||
            json_string_length(part) % 2) {
            snprintf(err, errcap, "log stream %s:%lld: a pipe is malformed", app,
                     (long long)json_integer_value(json_object_get(l, "id")));
            return -1;
        }
    }
    json_array_foreach(ring, i, v) {
        if (!json_is_array(v) || json_array_size(v) != 3 || !json_is_number(json_array_get(v, 0)) ||
            !upgrade_int_in(json_array_get(v, 1), 0, 1) || !json_is_string(json_array_get(v, 2)) ||
            json_string_length(json_array_get(v, 2)) % 2) {
            snprintf(err, errcap, "log stream %s: a ring line is malformed", app);
            return -1;
        }
    }
    return 0;
}

/* Checks "group" (null, or a reuseport group). */
static int upgrade_group_ok(const json_t *g, char *err, size_t errcap)
{
    if (!g || json_is_null(g))
        return 0;
    json_t *mem = json_object_get(g, "members"), *order = json_object_get(g, "order"), *v;
    size_t i;
    if (!json_is_object(g) || !upgrade_int_in(json_object_get(g, "anchor"), 0, UPGRADE_FD_MAX) ||
        !upgrade_fd_ok(g, "socks_map") || !upgrade_fd_ok(g, "ctr_map") ||
        !upgrade_int_in(json_object_get(g, "steer"), 0, 2) ||
        !upgrade_int_in(json_object_get(g, "nsocks_map"), 0, 1 << 20) ||
        !json_is_boolean(json_object_get(g, "prog_on")) || !json_is_array(mem) || !json_is_array(order) ||
        json_array_size(mem) > 4096 || json_array_size(order) > 4096) {
        snprintf(err, errcap, "the listening group is malformed");
        return -1;
    }
    json_array_foreach(mem, i, v) {
        if (!upgrade_int_in(json_object_get(v, "fd"), -1, UPGRADE_FD_MAX) ||
            !upgrade_int_in(json_object_get(v, "st"), 0, 4)) {
            snprintf(err, errcap, "the listening group's member %zu is malformed", i);
            return -1;
        }
    }
    json_array_foreach(order, i, v) {
        if (!upgrade_int_in(v, 0, (json_int_t)json_array_size(mem) - 1)) {
            snprintf(err, errcap, "the listening group's order is malformed");
            return -1;
        }
    }
    return 0;
}

int upgrade_validate(const json_t *doc, char *err, size_t errcap)
{
    const char *fmt = json_string_value(json_object_get(doc, "format"));
    if (!json_is_object(doc) || !fmt || strcmp(fmt, UPGRADE_FORMAT) != 0) {
        snprintf(err, errcap, "not a drover upgrade blob");
        return -1;
    }
    json_t *ver = json_object_get(doc, "version");
    if (!upgrade_int_in(ver, 1, UPGRADE_VERSION)) {
        snprintf(err, errcap, "upgrade blob version %lld is not one this drover (%s) reads (1..%d)",
                 (long long)json_integer_value(ver), DROVER_VERSION, UPGRADE_VERSION);
        return -1;
    }
    if (!json_is_string(json_object_get(doc, "from")) ||
        !upgrade_int_in(json_object_get(doc, "upgrades"), 0, INT32_MAX) ||
        !upgrade_int_in(json_object_get(doc, "failures"), 0, INT32_MAX) ||
        !upgrade_int_in(json_object_get(doc, "lock"), 0, UPGRADE_FD_MAX) ||
        !upgrade_int_in(json_object_get(doc, "agent"), 0, UPGRADE_FD_MAX) ||
        !upgrade_int_in(json_object_get(doc, "ctl"), 0, UPGRADE_FD_MAX) || !upgrade_fd_ok(doc, "exe") ||
        !upgrade_fd_ok(doc, "guard") || !upgrade_int_in(json_object_get(doc, "guard_pid"), 0, INT32_MAX) ||
        !upgrade_fd_ok(doc, "listen")) {
        snprintf(err, errcap, "the upgrade blob's header is malformed");
        return -1;
    }
    json_t *apps = json_object_get(doc, "apps"), *logs = json_object_get(doc, "logs"), *v;
    json_t *inh = json_object_get(doc, "inherited");
    size_t i;
    if (inh && !(json_is_array(inh) && json_array_size(inh) <= 1024)) {
        snprintf(err, errcap, "the upgrade blob's inherited sockets are malformed");
        return -1;
    }
    json_array_foreach(inh, i, v)
        if (!json_is_null(v) && !(json_is_string(v) && json_string_length(v) < 256)) {
            snprintf(err, errcap, "the upgrade blob's inherited sockets are malformed");
            return -1;
        }
    if (!json_is_array(apps) || !json_is_array(logs)) {
        snprintf(err, errcap, "the upgrade blob has no apps or logs section");
        return -1;
    }
    json_array_foreach(apps, i, v)
        if (upgrade_app_ok(v, err, errcap) != 0)
            return -1;
    json_array_foreach(logs, i, v)
        if (upgrade_stream_ok(v, err, errcap) != 0)
            return -1;
    return upgrade_group_ok(json_object_get(doc, "group"), err, errcap);
}

/* ---- the check run and the exec ------------------------------------------ */

int upgrade_check(const char *exe, int blob_fd, char *version, size_t vcap, char *err, size_t errcap)
{
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", blob_fd);
    char *const argv[] = {(char *)exe, (char *)UPGRADE_CHECK_CMD, fdarg, NULL};
    int out[2];
    if (pipe2(out, O_CLOEXEC) != 0) {
        snprintf(err, errcap, "cannot run %s: %s", exe, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errcap, "cannot run %s: %s", exe, strerror(errno));
        close(out[0]);
        close(out[1]);
        return -1;
    }
    if (pid == 0) {
        /* async-signal-safe calls only: other threads exist */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (dup2(out[1], STDOUT_FILENO) < 0)
            _exit(127);
        execve(exe, argv, environ);
        _exit(127);
    }
    close(out[1]);
    char buf[256];
    size_t n = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = UPGRADE_CHECK_MS - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        struct pollfd pf = {.fd = out[0], .events = POLLIN};
        int pr = left > 0 ? poll(&pf, 1, (int)left) : 0;
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            close(out[0]);
            snprintf(err, errcap, "%s did not answer within %d ms (killed)", exe, UPGRADE_CHECK_MS);
            return -1;
        }
        ssize_t r = read(out[0], buf + n, sizeof buf - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || (n += (size_t)r) == sizeof buf - 1)
            break;
    }
    close(out[0]);
    buf[n] = '\0';
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    size_t wl = strlen(UPGRADE_OK_WORD);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && strncmp(buf, UPGRADE_OK_WORD " ", wl + 1) == 0) {
        char *v = buf + wl + 1;
        v[strcspn(v, "\r\n")] = '\0';
        snprintf(version, vcap, "%s", v);
        return 0;
    }
    buf[strcspn(buf, "\r\n")] = '\0';
    char how[64];
    if (WIFSIGNALED(status))
        snprintf(how, sizeof how, "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(how, sizeof how, "exited with status %d", WEXITSTATUS(status));
    snprintf(err, errcap, "%s %s%s%.120s%s", exe, how, n ? " saying \"" : " without a word",
             n ? buf : "", n ? "\"" : "");
    return -1;
}

int upgrade_check_main(int argc, char **argv)
{
    char err[512];
    long fd = argc == 2 ? strtol(argv[1], NULL, 10) : -1;
    if (fd < 0 || fd > UPGRADE_FD_MAX) {
        fprintf(stderr, "drover: usage: drover %s FD (internal: run by `drover upgrade`)\n", UPGRADE_CHECK_CMD);
        return 2;
    }
    json_t *doc = upgrade_blob_read((int)fd, err, sizeof err);
    if (!doc) {
        printf("refused: %s\n", err);
        return 1;
    }
    json_decref(doc);
    printf("%s %s\n", UPGRADE_OK_WORD, DROVER_VERSION);
    return 0;
}

/* True when environment entry e is VAR=… */
static bool upgrade_is_var(const char *e, const char *var)
{
    size_t n = strlen(var);
    return strncmp(e, var, n) == 0 && e[n] == '=';
}

void upgrade_exec(const char *exe, int exec_fd, int rollback_fd, char *const argv[], int blob_fd,
                  const char *failed, char *err, size_t errcap)
{
    size_t n = 0;
    while (environ[n])
        n++;
    char **envp = calloc(n + 4, sizeof *envp);
    char fdvar[64], exevar[64], *failvar = NULL;
    if (!envp) {
        snprintf(err, errcap, "out of memory");
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!upgrade_is_var(environ[i], UPGRADE_ENV) && !upgrade_is_var(environ[i], UPGRADE_FAILED_ENV) &&
            !upgrade_is_var(environ[i], UPGRADE_EXE_ENV))
            envp[k++] = environ[i];
    snprintf(fdvar, sizeof fdvar, "%s=%d", UPGRADE_ENV, blob_fd);
    envp[k++] = fdvar;
    if (rollback_fd >= 0) {
        snprintf(exevar, sizeof exevar, "%s=%d", UPGRADE_EXE_ENV, rollback_fd);
        envp[k++] = exevar;
    }
    if (failed) {
        size_t len = strlen(UPGRADE_FAILED_ENV) + strlen(failed) + 2;
        failvar = malloc(len);
        if (failvar) {
            snprintf(failvar, len, "%s=%s", UPGRADE_FAILED_ENV, failed);
            envp[k++] = failvar;
        }
    }
    envp[k] = NULL;
    upgrade_keep_fd(blob_fd);
    if (rollback_fd >= 0)
        upgrade_keep_fd(rollback_fd);
    if (exec_fd >= 0)
        fexecve(exec_fd, argv, envp);
    else
        execve(exe, argv, envp);
    snprintf(err, errcap, "cannot execute %s: %s", exe, strerror(errno));
    free(failvar);
    free(envp);
}

/* The descriptor number in environment variable var, or -1. */
static int upgrade_env_fd(const char *var)
{
    const char *v = getenv(var);
    if (!v)
        return -1;
    char *end;
    errno = 0;
    long fd = strtol(v, &end, 10);
    if (errno || *end || end == v || fd < 0 || fd > UPGRADE_FD_MAX)
        return -1;
    fcntl((int)fd, F_SETFD, FD_CLOEXEC);
    return (int)fd;
}

int upgrade_inherited(int *rollback_fd, char *failed, size_t cap)
{
    const char *f = getenv(UPGRADE_FAILED_ENV);
    if (failed && cap)
        snprintf(failed, cap, "%s", f ? f : "");
    int fd = upgrade_env_fd(UPGRADE_ENV);
    *rollback_fd = fd >= 0 ? upgrade_env_fd(UPGRADE_EXE_ENV) : -1;
    unsetenv(UPGRADE_ENV);
    unsetenv(UPGRADE_FAILED_ENV);
    unsetenv(UPGRADE_EXE_ENV);
    return fd;
}
