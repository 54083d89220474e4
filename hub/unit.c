/*
 * unit.c — the systemd units of `drover startup` (see unit.h).
 */
#include "hub/unit.h"
#include "hub/listen.h"
#include "hub/paths.h"
#include "proto/text.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef DROVER_VERSION
#define DROVER_VERSION "dev"
#endif

int unit_quote(const char *s, bool exe, char *out, size_t cap)
{
    static const char plain[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_.,:+=@-";
    size_t n = strlen(s), o = 0;
    bool quote = false;
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n;) {
        size_t k = text_printable((const unsigned char *)s + i, n - i);
        if (k == 0)
            return -1;   /* a control character or not UTF-8: refused, not escaped */
        if (exe && (s[i] == '"' || s[i] == '\'' || s[i] == '\\'))
            return -1;   /* systemd refuses them in an executable's name */
        if (k > 1 || !strchr(plain, s[i]))
            quote = true;
        i += k;
    }
    if (!quote) {
        if (n + 1 > cap)
            return -1;
        memcpy(out, s, n + 1);
        return (int)n;
    }
    /* Worst case: every byte becomes two, plus the quotes and the NUL. */
    if (2 * n + 3 > cap)
        return -1;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\' || c == '"')
            out[o++] = '\\';          /* C escapes, in quotes and out */
        else if (c == '%' || (c == '$' && !exe))
            out[o++] = c;             /* %%: no specifier; $$: no variable (never expanded in the executable) */
        out[o++] = c;
    }
    out[o++] = '"';
    out[o] = '\0';
    return (int)o;
}

/* One TCP listener of the .socket unit. */
typedef struct {
    const char *app;
    char        addr[128];   /* ListenStream= value, specifiers escaped */
} unit_listen;

/*
 * The ListenStream= value for a TCP spec: the first address the hub would
 * bind (listen_resolve), numeric, "[V6]:PORT" for IPv6, with '%' (an IPv6
 * scope) doubled. Returns 0, or -1 with err.
 */
static int unit_listen_addr(const config_app *a, char *out, size_t cap, char *err, size_t errcap)
{
    struct addrinfo *res;
    char lerr[300], host[NI_MAXHOST], port[NI_MAXSERV];
    if (listen_resolve(a->listen, &res, lerr, sizeof lerr) != 0) {
        snprintf(err, errcap, "app %s: %s", a->name, lerr);
        return -1;
    }
    int rc = getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof host, port, sizeof port,
                         NI_NUMERICHOST | NI_NUMERICSERV);
    bool v6 = res->ai_family == AF_INET6;
    freeaddrinfo(res);
    if (rc != 0) {
        snprintf(err, errcap, "app %s: listen = %s: %s", a->name, a->listen, gai_strerror(rc));
        return -1;
    }
    if (strcmp(port, "0") == 0) {
        snprintf(err, errcap, "app %s: listen = %s: port 0 (any free port) cannot be held by a .socket unit",
                 a->name, a->listen);
        return -1;
    }
    char esc[2 * NI_MAXHOST];
    size_t o = 0;
    for (const char *p = host; *p && o + 2 < sizeof esc; p++) {
        if (*p == '%')
            esc[o++] = '%';
        esc[o++] = *p;
    }
    esc[o] = '\0';
    if (snprintf(out, cap, v6 ? "[%s]:%s" : "%s:%s", esc, port) >= (int)cap) {
        snprintf(err, errcap, "app %s: listen = %s: address too long", a->name, a->listen);
        return -1;
    }
    return 0;
}

/* Collects the TCP listeners of cfg's apps into ls (cfg->napps entries). Returns how many, or -1 with err. */
static int unit_listeners(const config *cfg, unit_listen *ls, char *err, size_t errcap)
{
    int n = 0;
    for (size_t i = 0; i < cfg->napps; i++) {
        const config_app *a = &cfg->apps[i];
        if (!a->listen || strncmp(a->listen, "unix:", 5) == 0)
            continue;   /* no socket, or one the hub makes itself */
        if (strncmp(a->listen, "fd:", 3) == 0) {
            snprintf(err, errcap,
                     "app %s: listen = %s names an inherited socket whose address is not in the file; write its "
                     "[HOST:]PORT instead (the hub then takes the .socket unit's socket by that address)",
                     a->name, a->listen);
            return -1;
        }
        ls[n].app = a->name;
        if (unit_listen_addr(a, ls[n].addr, sizeof ls[n].addr, err, errcap) != 0)
            return -1;
        for (int j = 0; j < n; j++)
            if (strcmp(ls[j].addr, ls[n].addr) == 0) {
                snprintf(err, errcap, "apps %s and %s both listen on %s", ls[j].app, a->name, ls[n].addr);
                return -1;
            }
        n++;
    }
    return n;
}

/* Seconds for a duration in ms, rounded up. */
static unsigned unit_secs(unsigned ms)
{
    return ms / 1000 + (ms % 1000 != 0);
}

/* The service unit's text into f. */
static void unit_service_text(FILE *f, const config *cfg, const unit_options *o, const char *name, bool socket,
                              const char *exe, const char *file, const char *sockdir)
{
    unsigned kill = 0, ready = 0;
    for (size_t i = 0; i < cfg->napps; i++) {
        if (cfg->apps[i].kill_timeout_ms > kill)
            kill = cfg->apps[i].kill_timeout_ms;
        if (cfg->apps[i].ready_timeout_ms > ready)
            ready = cfg->apps[i].ready_timeout_ms;
    }
    unsigned start = unit_secs(ready) + UNIT_START_MARGIN_SEC;
    if (start < UNIT_START_MIN_SEC)
        start = UNIT_START_MIN_SEC;

    fprintf(f, "# %s.service, written by 'drover startup' (drover %s) from the file in ExecStart=.\n"
               "# Run 'drover startup' again after changing the file's listen, kill_timeout or\n"
               "# ready_timeout; anything else in the file is read by the hub when it starts, or\n"
               "# on 'systemctl reload %s' (SIGHUP: the hub applies the file again).\n",
            name, DROVER_VERSION, name);
    fprintf(f, "[Unit]\nDescription=drover hub %s:", o->ns);
    size_t len = 0;
    for (size_t i = 0; i < cfg->napps; i++) {
        if (len > 160) {
            fprintf(f, " and %zu more", cfg->napps - i);
            break;
        }
        fprintf(f, " %s", cfg->apps[i].name);
        len += strlen(cfg->apps[i].name) + 1;
    }
    fputc('\n', f);
    /* A user manager has no network.target. */
    if (socket)
        fprintf(f, "Requires=%s.socket\nAfter=%s.socket%s\n", name, name, o->user ? "" : " network.target");
    else if (!o->user)
        fprintf(f, "After=network.target\n");
    fprintf(f, "\n[Service]\n"
               "Type=notify\n"
               "NotifyAccess=main\n"
               "ExecStart=%s up --headless -f %s -L %s%s%s\n"
               "ExecReload=/bin/kill -HUP $MAINPID\n"
               "# SIGTERM to the hub alone: it stops every worker gracefully (stop_signal,\n"
               "# SIGKILL after kill_timeout); systemd SIGKILLs what is left after TimeoutStopSec.\n"
               "KillMode=mixed\n"
               "TimeoutStartSec=%u\n"
               "TimeoutStopSec=%u\n"
               "WatchdogSec=%d\n"
               "Restart=on-failure\n"
               "# The hub's figures (NDJSON) are not for the journal; its events and the\n"
               "# workers' lines (stderr) are.\n"
               "StandardOutput=null\n"
               "LogsDirectory=drover\n"
               "\n[Install]\nWantedBy=%s\n",
            exe, file, o->ns, sockdir ? " --socket-dir " : "", sockdir ? sockdir : "", start,
            unit_secs(kill) + UNIT_STOP_MARGIN_SEC, UNIT_WATCHDOG_SEC, o->user ? "default.target" : "multi-user.target");
}

/* The socket unit's text into f. */
static void unit_socket_text(FILE *f, const unit_options *o, const char *name, const unit_listen *ls, int n)
{
    fprintf(f, "# %s.socket, written by 'drover startup' (drover %s): the apps' listening\n"
               "# sockets, held by systemd, so connections wait in the kernel's queue while\n"
               "# %s.service restarts. The hub takes each app's socket by its address.\n"
               "[Unit]\nDescription=drover hub %s: listening sockets\n\n[Socket]\n",
            name, DROVER_VERSION, name, o->ns);
    for (int i = 0; i < n; i++)
        fprintf(f, "# app %s\nListenStream=%s\n", ls[i].app, ls[i].addr);
    fprintf(f, "Service=%s.service\n\n[Install]\nWantedBy=sockets.target\n", name);
}

/* Closes a memstream into *text; -1 when it failed. */
static int unit_close(FILE *f, char **text, char **buf)
{
    bool bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(*buf);
        *buf = NULL;
        return -1;
    }
    *text = *buf;
    return 0;
}

int unit_build(const config *cfg, const unit_options *o, unit_files *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    if (!paths_valid_name(o->ns)) {
        snprintf(err, errcap, "invalid namespace name '%.80s'", o->ns);
        return -1;
    }
    snprintf(out->name, sizeof out->name, "drover-%s", o->ns);
    /* Every word of ExecStart= that is not ours: quoted, or refused. */
    char exe[2 * 4096 + 3], file[2 * 4096 + 3], sockdir[2 * 4096 + 3];
    struct { const char *what, *value; char *out; } words[] = {
        {"the drover binary's path", o->exe, exe}, {"the config file's path", cfg->file, file},
        {"--socket-dir", o->socket_dir, sockdir}};
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        if (!words[i].value)
            continue;
        if (words[i].value[0] != '/') {
            snprintf(err, errcap, "%s must be absolute in a unit, not '%.200s'", words[i].what, words[i].value);
            return -1;
        }
        if (unit_quote(words[i].value, i == 0, words[i].out, sizeof exe) < 0) {
            snprintf(err, errcap, "%s cannot be written in a unit: it holds a control character or bytes that "
                     "are not UTF-8%s (or is too long)", words[i].what, i == 0 ? ", or one of \" ' \\" : "");
            return -1;
        }
    }
    unit_listen *ls = calloc(cfg->napps ? cfg->napps : 1, sizeof *ls);
    if (!ls) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    int n = unit_listeners(cfg, ls, err, errcap);
    if (n < 0) {
        free(ls);
        return -1;
    }
    char *buf = NULL;
    size_t len;
    FILE *f = open_memstream(&buf, &len);
    int rc = f ? 0 : -1;
    if (f) {
        unit_service_text(f, cfg, o, out->name, n > 0, exe, file, o->socket_dir ? sockdir : NULL);
        rc = unit_close(f, &out->service, &buf);
    }
    if (rc == 0 && n > 0) {
        buf = NULL;
        f = open_memstream(&buf, &len);
        rc = f ? 0 : -1;
        if (f) {
            unit_socket_text(f, o, out->name, ls, n);
            rc = unit_close(f, &out->socket, &buf);
        }
    }
    free(ls);
    if (rc != 0) {
        unit_files_free(out);
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    out->nsockets = n;
    return 0;
}

void unit_files_free(unit_files *u)
{
    free(u->service);
    free(u->socket);
    u->service = u->socket = NULL;
    u->nsockets = 0;
}

int unit_compare(const char *dir, const char *file, const char *text, unit_state *st, const char **why, char *err,
                 size_t errcap)
{
    char path[4200];
    *why = "";
    if (paths_join(dir, file, path, sizeof path) != 0) {
        snprintf(err, errcap, "%.200s/%s: path too long", dir, file);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ENOENT) {
            *st = UNIT_ABSENT;
            return 0;
        }
        if (errno == ELOOP) {
            *st = UNIT_DIFFERENT;
            *why = "a symbolic link (a masked or linked unit?)";
            return 0;
        }
        snprintf(err, errcap, "cannot read %.300s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        *st = UNIT_DIFFERENT;
        *why = "not a regular file";
        return 0;
    }
    size_t n = strlen(text);
    *st = UNIT_DIFFERENT;
    *why = "a different unit";
    if ((size_t)sb.st_size == n) {
        char *buf = malloc(n + 1);
        size_t got = 0;
        ssize_t r = 1;
        while (buf && got < n + 1 && (r = read(fd, buf + got, n + 1 - got)) > 0)
            got += (size_t)r;
        if (buf && r >= 0 && got == n && memcmp(buf, text, n) == 0)
            *st = UNIT_SAME;
        free(buf);
    }
    close(fd);
    return 0;
}

int unit_write(const char *dir, const char *file, const char *text, char *err, size_t errcap)
{
    char path[4200], tmp[4300];
    if (paths_join(dir, file, path, sizeof path) != 0 ||
        snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, file) >= (int)sizeof tmp) {
        snprintf(err, errcap, "%.200s/%s: path too long", dir, file);
        return -1;
    }
    if (paths_mkdirs(dir) != 0) {
        snprintf(err, errcap, "cannot create %.300s: %s", dir, strerror(errno));
        return -1;
    }
    int fd = mkostemp(tmp, O_CLOEXEC);   /* O_EXCL: a new file of ours, never someone's link */
    if (fd < 0) {
        snprintf(err, errcap, "cannot write in %.300s: %s", dir, strerror(errno));
        return -1;
    }
    size_t n = strlen(text), done = 0;
    int e = 0;
    while (done < n && !e) {
        ssize_t w = write(fd, text + done, n - done);
        if (w < 0 && errno != EINTR)
            e = errno;
        else if (w > 0)
            done += (size_t)w;
    }
    if (!e && (fchmod(fd, 0644) != 0 || fsync(fd) != 0))
        e = errno;
    if (close(fd) != 0 && !e)
        e = errno;
    if (!e && rename(tmp, path) != 0)
        e = errno;
    if (e) {
        unlink(tmp);
        snprintf(err, errcap, "cannot write %.300s: %s", path, strerror(e));
        return -1;
    }
    return 0;
}
