/*
 * config.c — the config file: libinih reads the lines, the key table below
 * says what each key is, and a value is parsed and checked by its type's
 * one parser. Lines are counted by our own reader (libinih's line numbers
 * reach handlers only when it is built with INI_HANDLER_LINENO, which
 * Debian's is not), so every error names its line.
 */
#include "hub/config.h"
#include "hub/listen.h"
#include "hub/metrics.h"
#include "hub/spawn.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

/* ---- the key table ------------------------------------------------------ */

typedef enum { SEC_HUB, SEC_APP } config_section;

typedef enum {
    T_STRING,      /* any text */
    T_NS,          /* a namespace name (paths_valid_name's rule) */
    T_PATH,        /* a path, relative to the file's directory */
    T_COMMAND,     /* shell-like words */
    T_INSTANCES,   /* 1..CTL_SCALE_MAX or max */
    T_DURATION,    /* ms, s, m */
    T_INTERVAL,    /* a duration from 50 ms to 1 h */
    T_SIZE,        /* K, M, G; "0" or "none" for none where allowed */
    T_BOOL,        /* true/false, yes/no, on/off, 1/0 */
    T_COUNT,       /* 1..100 */
    T_ENUM,        /* one of choices */
    T_SIGNAL,      /* TERM, SIGTERM, 15 */
    T_ENV,         /* K=V, repeatable */
    T_LISTEN,      /* [HOST:]PORT or unix:PATH */
    T_METRICS,     /* [HOST:]PORT of the /metrics endpoint */
} config_type;

typedef struct {
    config_section sec;
    const char    *name;
    config_type    type;
    const char    *def;      /* the default as text (parsed like a value), NULL: none */
    size_t         off;      /* field in config (SEC_HUB) or config_app (SEC_APP) */
    const char *const *choices;   /* T_ENUM: names, index = value */
    const char    *help;
} config_key;

static const char *const restart_names[] = {"always", "on-failure", "never", NULL};
static const char *const ready_names[] = {"auto", "notify", "agent", "none", NULL};
static const char *const log_format_names[] = {"text", "json", NULL};
static const char *const balance_names[] = {"shared", "reuseport", NULL};

#define H(f) offsetof(config, f)
#define A(f) offsetof(config_app, f)

static const config_key config_keys[] = {
    {SEC_HUB, "namespace", T_NS, "default", H(ns), NULL, "hub namespace, as -L (an -L given to `up` wins)"},
    {SEC_HUB, "interval", T_INTERVAL, "1s", H(interval_ms), NULL, "sampling and printing interval (50ms..1h)"},
    {SEC_HUB, "log_dir", T_PATH, NULL, H(log_dir), NULL,
     "worker output files APP-ID.out.log / .err.log (default: as `drover run`)"},
    {SEC_HUB, "log_timestamps", T_BOOL, "false", H(log_timestamps), NULL,
     "prefix each line in the files with an RFC 3339 time in ms (when the hub read it)"},
    {SEC_HUB, "log_format", T_ENUM, "text", H(log_format), log_format_names,
     "text, or json: one object a line {ts, app, id, pid, stream, line}"},
    {SEC_HUB, "log_max_size", T_SIZE, "10M", H(log_max_size), NULL, "rotate a log file at this size"},
    {SEC_HUB, "log_keep", T_COUNT, "3", H(log_keep), NULL, "rotated files kept per log file (1..100)"},
    {SEC_HUB, "metrics", T_METRICS, NULL, H(metrics), NULL,
     "serve GET /metrics on [HOST:]PORT, as --metrics (a bare port binds 127.0.0.1; --metrics wins)"},
    {SEC_APP, "command", T_COMMAND, NULL, 0, NULL,
     "the program and its arguments (required); quoting as in sh, but no shell runs it"},
    {SEC_APP, "instances", T_INSTANCES, "1", A(instances), NULL, "workers to run: 1..1024, or max (online CPUs)"},
    {SEC_APP, "listen", T_LISTEN, NULL, A(listen), NULL,
     "[HOST:]PORT, unix:PATH or fd:NAME, opened by the hub; each worker gets it as fd 3 (see balance)"},
    {SEC_APP, "balance", T_ENUM, NULL, A(balance), balance_names,
     "reuseport: a SO_REUSEPORT socket per worker, even load; shared: one socket for all "
     "(default: reuseport for a TCP listen, shared for unix:, fd: and a socket systemd passed)"},
    {SEC_APP, "env", T_ENV, NULL, 0, NULL, "KEY=VALUE for the workers; repeat the line for more"},
    {SEC_APP, "env_file", T_PATH, NULL, A(env_file), NULL,
     "a file of KEY=VALUE lines (# comments, optional quotes, 'export ' allowed)"},
    {SEC_APP, "inherit_env", T_BOOL, "true", A(inherit_env), NULL, "start from the hub's own environment"},
    {SEC_APP, "cwd", T_PATH, NULL, A(cwd), NULL, "working directory (default: the config file's directory)"},
    {SEC_APP, "user", T_STRING, NULL, A(user), NULL, "run as this user (name or uid; the hub must run as root)"},
    {SEC_APP, "group", T_STRING, NULL, A(group), NULL, "run as this group (default: the user's)"},
    {SEC_APP, "kill_timeout", T_DURATION, "5s", A(kill_timeout_ms), NULL, "SIGKILL this long after stop_signal"},
    {SEC_APP, "ready_timeout", T_DURATION, "10s", A(ready_timeout_ms), NULL,
     "a new worker must be ready within this"},
    {SEC_APP, "ready", T_ENUM, "auto", A(ready), ready_names,
     "auto (learned), notify (sd_notify READY=1), agent (drover_ready), or none (1 s grace)"},
    {SEC_APP, "max_memory", T_SIZE, "none", A(max_memory), NULL, "replace a worker whose RSS exceeds this"},
    {SEC_APP, "restart", T_ENUM, "always", A(restart), restart_names,
     "always, on-failure (not after exit 0), or never"},
    {SEC_APP, "stop_signal", T_SIGNAL, "TERM", A(stop_signal), NULL, "the signal that asks a worker to stop"},
    {SEC_APP, "log_timestamps", T_BOOL, NULL, A(log_timestamps), NULL, "this app's files: as [hub] log_timestamps (default: [hub]'s)"},
    {SEC_APP, "log_format", T_ENUM, NULL, A(log_format), log_format_names, "this app's files: text or json (default: [hub]'s)"},
    {SEC_APP, "log_max_size", T_SIZE, NULL, A(log_max_size), NULL, "this app's files: rotation size (default: [hub]'s)"},
    {SEC_APP, "log_keep", T_COUNT, NULL, A(log_keep), NULL, "this app's files: rotated files kept (default: [hub]'s)"},
};
#define NKEYS (sizeof config_keys / sizeof config_keys[0])

/* ---- value parsers ------------------------------------------------------ */

bool config_parse_duration(const char *s, uint64_t *ms)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || v > UINT32_MAX)
        return false;
    uint64_t mul;
    if (strcmp(end, "") == 0 || strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else
        return false;
    *ms = (uint64_t)v * mul;
    return true;
}

bool config_parse_size(const char *s, uint64_t *out)
{
    char *end;
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return false;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case '\0': break;
    case 'K': shift = 10; end++; break;
    case 'M': shift = 20; end++; break;
    case 'G': shift = 30; end++; break;
    default: return false;
    }
    if ((*end == 'B' || *end == 'b') && shift)
        end++;
    if (*end || v == 0 || v > (UINT64_MAX >> shift))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

/* Reads a boolean; false if s is not one. */
static bool config_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

int config_parse_signal(const char *s)
{
    if (strncasecmp(s, "SIG", 3) == 0)
        s += 3;
    /* every standard signal by its abbreviation (TERM, QUIT, HUP, TTIN…), from libc */
    for (int sig = 1; sig < 32; sig++) {
        const char *name = sigabbrev_np(sig);
        if (name && strcasecmp(s, name) == 0)
            return sig;
    }
    char *end;
    long v = strtol(s, &end, 10);
    if (isdigit((unsigned char)*s) && !*end && v >= 1 && v <= 64)
        return (int)v;
    return 0;
}

const char *config_ready_name(config_ready r)
{
    return (unsigned)r < 4 ? ready_names[r] : "?";
}

const char *config_restart_name(config_restart r)
{
    return (unsigned)r < 3 ? restart_names[r] : "?";
}

/* ---- commands ----------------------------------------------------------- */

void config_argv_free(char **argv)
{
    if (!argv)
        return;
    for (char **v = argv; *v; v++)
        free(*v);
    free(argv);
}

char **config_split_command(const char *s, char *err, size_t errcap)
{
    size_t cap = 8, n = 0, len = strlen(s);
    char **argv = calloc(cap, sizeof *argv);
    char *word = malloc(len + 1);
    if (!argv || !word) {
        free(argv);
        free(word);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        size_t w = 0;
        while (*p && *p != ' ' && *p != '\t') {
            if (*p == '\'') {
                const char *q = strchr(p + 1, '\'');
                if (!q) {
                    snprintf(err, errcap, "unterminated ' in the command");
                    goto fail;
                }
                memcpy(word + w, p + 1, (size_t)(q - p - 1));
                w += (size_t)(q - p - 1);
                p = q + 1;
            } else if (*p == '"') {
                p++;
                while (*p && *p != '"') {
                    if (*p == '\\' && (p[1] == '"' || p[1] == '\\' || p[1] == '$' || p[1] == '`'))
                        p++;
                    word[w++] = *p++;
                }
                if (*p != '"') {
                    snprintf(err, errcap, "unterminated \" in the command");
                    goto fail;
                }
                p++;
            } else if (*p == '\\') {
                if (!p[1]) {
                    snprintf(err, errcap, "a command cannot end with a backslash");
                    goto fail;
                }
                word[w++] = p[1];
                p += 2;
            } else {
                word[w++] = *p++;
            }
        }
        if (n + 2 > cap) {
            cap *= 2;
            char **na = realloc(argv, cap * sizeof *na);
            if (!na) {
                snprintf(err, errcap, "out of memory");
                goto fail;
            }
            argv = na;
        }
        word[w] = '\0';
        if (!(argv[n] = strdup(word))) {
            snprintf(err, errcap, "out of memory");
            goto fail;
        }
        argv[++n] = NULL;
    }
    free(word);
    if (n == 0) {
        snprintf(err, errcap, "the command is empty");
        free(argv);
        return NULL;
    }
    return argv;
fail:
    free(word);
    config_argv_free(argv);
    return NULL;
}

/* ---- loading ------------------------------------------------------------ */

typedef struct {
    config     *cfg;
    FILE       *f;
    int         line;            /* of the line inih is handling */
    config_app *app;             /* section being read; NULL in [hub] or none */
    bool        in_hub;
    char       *err;
    size_t      errcap;
    int         err_line;        /* 0: no error yet */
    char       *buf;             /* getline's */
    size_t      bufcap;
} config_ctx;

/* Records the first error, at line (0: none). Returns 0 (inih's "error"). */
__attribute__((format(printf, 3, 4)))
static int config_fail(config_ctx *c, int line, const char *fmt, ...)
{
    if (c->err_line)
        return 0;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!c->cfg->file[0])   /* one app from the command line (config_app_set) */
        snprintf(c->err, c->errcap, "%s", msg);
    else if (line > 0)
        snprintf(c->err, c->errcap, "%s:%d: %s", c->cfg->file, line, msg);
    else
        snprintf(c->err, c->errcap, "%s: %s", c->cfg->file, msg);
    c->err_line = line > 0 ? line : -1;
    return 0;
}

static int config_section_start(config_ctx *c, const char *section);

/* inih's reader: one line per call, counted; a line too long is an error. */
static char *config_reader(char *str, int num, void *stream)
{
    config_ctx *c = stream;
    ssize_t n = getline(&c->buf, &c->bufcap, c->f);
    if (n < 0)
        return NULL;
    c->line++;
    if (n >= num) {
        config_fail(c, c->line, "line longer than %d bytes", num - 1);
        snprintf(str, (size_t)num, "\n");   /* handled as an empty line */
        return str;
    }
    memcpy(str, c->buf, (size_t)n + 1);
    /* Section headers are taken here, not from inih's handler: it never
     * sees a section without keys, nor the header's line. */
    const char *p = c->buf;
    while (*p == ' ' || *p == '\t')
        p++;
    if (p != c->buf && *p && *p != '\n' && *p != '\r' && *p != '#' && *p != ';' && *p != '[')
        config_fail(c, c->line, "a line that starts with blanks would continue the previous value: "
                                "start KEY = VALUE at the beginning of the line");
    if (*p == '[' && !c->err_line) {
        const char *close = strchr(p, ']');
        if (close) {
            char name[256];
            const char *b = p + 1, *e = close;
            while (b < e && (*b == ' ' || *b == '\t'))
                b++;
            while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            snprintf(name, sizeof name, "%.*s", (int)(e - b), b);
            config_section_start(c, name);
        }
    }
    return str;
}

/* Joins rel to dir unless it is absolute; malloc'd, or NULL. */
static char *config_join(const char *dir, const char *rel)
{
    if (rel[0] == '/')
        return strdup(rel);
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", dir, rel);
    return s;
}

/* Appends a malloc'd string to a vector with a terminating NULL. */
static int config_vec_push(char ***v, size_t *n, char *s)
{
    if (!s)
        return -1;
    char **nv = realloc(*v, (*n + 2) * sizeof *nv);
    if (!nv) {
        free(s);
        return -1;
    }
    nv[(*n)++] = s;
    nv[*n] = NULL;
    *v = nv;
    return 0;
}

/* True if k (up to '=') is a valid environment variable name. */
static bool config_env_key_ok(const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv)
        return false;
    for (const char *p = kv; p < eq; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_') || (p == kv && isdigit((unsigned char)*p)))
            return false;
    return true;
}

/* Parses value for key k into the struct at base; returns 0 or fails. */
static int config_set(config_ctx *c, const config_key *k, void *base, const char *value, int line)
{
    char *field = (char *)base + k->off;
    uint64_t u;
    bool b;
    switch (k->type) {
    case T_STRING:
        if (!*value)
            return config_fail(c, line, "%s needs a value", k->name);
        free(*(char **)field);
        *(char **)field = strdup(value);
        break;
    case T_NS: {
        size_t n = strlen(value);
        bool ok = n >= 1 && n <= 64;
        for (size_t i = 0; ok && i < n; i++)
            ok = isalnum((unsigned char)value[i]) || strchr("_.-", value[i]);
        if (!ok)
            return config_fail(c, line, "namespace '%s': use 1-64 of A-Z a-z 0-9 _ . -", value);
        free(*(char **)field);
        *(char **)field = strdup(value);
        break;
    }
    case T_PATH:
        if (!*value)
            return config_fail(c, line, "%s needs a path", k->name);
        free(*(char **)field);
        *(char **)field = config_join(c->cfg->dir, value);
        break;
    case T_METRICS: {
        struct sockaddr_storage sa;
        char merr[256];
        if (metrics_parse_addr(value, &sa, merr, sizeof merr) != 0)
            return config_fail(c, line, "metrics: %s", merr);
        free(*(char **)field);
        *(char **)field = strdup(value);
        break;
    }
    case T_LISTEN: {
        char lerr[256];
        if (listen_check(value, lerr, sizeof lerr) != 0)
            return config_fail(c, line, "listen: %s", lerr);
        free(*(char **)field);
        *(char **)field = strdup(value);
        break;
    }
    case T_INSTANCES: {
        long v;
        char *end;
        if (strcmp(value, "max") == 0) {
            long n = sysconf(_SC_NPROCESSORS_ONLN);
            v = n > 0 && n <= CTL_SCALE_MAX ? n : 1;
        } else if (errno = 0, v = strtol(value, &end, 10),
                   !isdigit((unsigned char)*value) || *end || errno || v < 1 || v > CTL_SCALE_MAX) {
            return config_fail(c, line, "instances takes a number of workers (1..%d) or max, not '%s'",
                               CTL_SCALE_MAX, value);
        }
        *(int *)field = (int)v;
        break;
    }
    case T_DURATION:
        if (!config_parse_duration(value, &u) || u < 1 || u > 3600000)
            return config_fail(c, line, "%s takes a duration from 1ms to 60m (500ms, 5s, 2m), not '%s'",
                               k->name, value);
        *(unsigned *)field = (unsigned)u;
        break;
    case T_INTERVAL:
        if (!config_parse_duration(value, &u) || u < 50 || u > 3600000)
            return config_fail(c, line, "%s takes a duration from 50ms to 60m, not '%s'", k->name, value);
        *(unsigned *)field = (unsigned)u;
        break;
    case T_SIZE:
        if (strcmp(value, "none") == 0 || strcmp(value, "0") == 0)
            u = 0;
        else if (!config_parse_size(value, &u))
            return config_fail(c, line, "%s takes a size like 512K, 200M or 1G, not '%s'", k->name, value);
        if (u == 0 && strcmp(k->name, "log_max_size") == 0)
            return config_fail(c, line, "log_max_size cannot be none");
        *(uint64_t *)field = u;
        break;
    case T_BOOL:
        if (!config_parse_bool(value, &b))
            return config_fail(c, line, "%s takes true or false, not '%s'", k->name, value);
        *(bool *)field = b;
        break;
    case T_COUNT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (!isdigit((unsigned char)*value) || *end || errno || v < 1 || v > 100)
            return config_fail(c, line, "%s takes a number from 1 to 100, not '%s'", k->name, value);
        *(unsigned *)field = (unsigned)v;
        break;
    }
    case T_ENUM:
        for (int i = 0; k->choices[i]; i++)
            if (strcmp(value, k->choices[i]) == 0) {
                *(int *)field = i;
                return 1;
            }
        {
            char list[128] = "";
            for (int i = 0; k->choices[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", k->choices[i]);
            return config_fail(c, line, "%s is one of %s, not '%s'", k->name, list, value);
        }
    case T_SIGNAL: {
        int sig = config_parse_signal(value);
        if (!sig)
            return config_fail(c, line, "%s takes a signal name (TERM, INT, QUIT, USR1…) or number, not '%s'",
                               k->name, value);
        *(int *)field = sig;
        break;
    }
    case T_COMMAND: {
        config_app *a = base;
        char cerr[256];
        config_argv_free(a->argv);
        a->argv = config_split_command(value, cerr, sizeof cerr);
        if (!a->argv)
            return config_fail(c, line, "command: %s", cerr);
        break;
    }
    case T_ENV: {
        config_app *a = base;
        if (!config_env_key_ok(value))
            return config_fail(c, line, "env takes KEY=VALUE (KEY of letters, digits and _), not '%.*s…'",
                               (int)strcspn(value, "="), value);
        if (a->nenv_lines >= CONFIG_ENV_MAX || config_vec_push(&a->env_lines, &a->nenv_lines, strdup(value)) != 0)
            return config_fail(c, line, "too many env lines (at most %d)", CONFIG_ENV_MAX);
        break;
    }
    }
    return 1;
}

/* Applies every default of section sec to the struct at base. */
static void config_defaults(config_ctx *c, config_section sec, void *base)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].sec == sec && config_keys[i].def)
            config_set(c, &config_keys[i], base, config_keys[i].def, 0);
}

/* Starts section name (at c->line). Returns 1, or 0 on error. */
static int config_section_start(config_ctx *c, const char *section)
{
    config *cfg = c->cfg;
    c->app = NULL;
    c->in_hub = false;
    if (strcmp(section, "hub") == 0) {
        if (cfg->hub_seen & 1)
            return config_fail(c, c->line, "[hub] given twice");
        cfg->hub_seen |= 1;
        c->in_hub = true;
        return 1;
    }
    if (strncmp(section, "app", 3) != 0 || (section[3] != ' ' && section[3] != '\t'))
        return config_fail(c, c->line, "unknown section [%s]: use [hub] or [app NAME]", section);
    const char *name = section + 4;
    while (*name == ' ' || *name == '\t')
        name++;
    if (!ctl_app_name_ok(name))
        return config_fail(c, c->line, "bad app name '%s': use " CTL_APP_NAME_RULE, name);
    for (size_t i = 0; i < cfg->napps; i++)
        if (strcmp(cfg->apps[i].name, name) == 0)
            return config_fail(c, c->line, "app %s is defined twice (first at line %d)", name, cfg->apps[i].line);
    if (cfg->napps >= CONFIG_APPS_MAX)
        return config_fail(c, c->line, "too many apps (at most %d)", CONFIG_APPS_MAX);
    config_app *na = realloc(cfg->apps, (cfg->napps + 1) * sizeof *na);
    if (!na)
        return config_fail(c, c->line, "out of memory");
    cfg->apps = na;
    config_app *a = &cfg->apps[cfg->napps++];
    memset(a, 0, sizeof *a);
    memcpy(a->name, name, strlen(name) + 1);   /* ctl_app_name_ok: < CTL_APP_MAX */
    a->line = c->line;
    config_defaults(c, SEC_APP, a);
    c->app = a;
    return 1;
}

/* inih's handler: one key = value, in the section the reader last saw. */
static int config_handler(void *user, const char *section, const char *name, const char *value)
{
    config_ctx *c = user;
    (void)section;
    if (c->err_line)
        return 1;   /* only the first error is reported */
    if (!c->app && !c->in_hub)
        return config_fail(c, c->line, "'%s' outside a section: put it under [hub] or [app NAME]", name);
    config_section sec = c->in_hub ? SEC_HUB : SEC_APP;
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (k->sec != sec || strcmp(k->name, name) != 0)
            continue;
        uint64_t *seen = c->in_hub ? &c->cfg->hub_seen : &c->app->seen;
        uint64_t bit = 2ull << i;   /* bit 0 of hub_seen: the [hub] header */
        if ((*seen & bit) && k->type != T_ENV)
            return config_fail(c, c->line, "%s given twice in this section", name);
        *seen |= bit;
        if (c->app && i < 32)
            c->app->seen_line[i] = c->line;
        return config_set(c, k, c->in_hub ? (void *)c->cfg : (void *)c->app, value, c->line);
    }
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].sec != sec && strcmp(config_keys[i].name, name) == 0)
            return config_fail(c, c->line, "%s belongs in %s", name,
                               config_keys[i].sec == SEC_HUB ? "[hub]" : "an [app NAME] section");
    return config_fail(c, c->line, "unknown key '%s' in %s", name, c->in_hub ? "[hub]" : "[app]");
}

/* The line of key name in app a (its header's when it was not given). */
static int config_key_line(const config_app *a, const char *name)
{
    for (size_t i = 0; i < NKEYS && i < 32; i++)
        if (config_keys[i].sec == SEC_APP && strcmp(config_keys[i].name, name) == 0 && a->seen_line[i])
            return a->seen_line[i];
    return a->line;
}

/*
 * Reads an env_file: KEY=VALUE lines; blank lines and # comments skipped;
 * an optional "export "; a value in matching '…' or "…" loses its quotes.
 */
static int config_read_env_file(config_ctx *c, config_app *a)
{
    int line = config_key_line(a, "env_file");
    FILE *f = fopen(a->env_file, "re");
    if (!f)
        return config_fail(c, line, "env_file %s: %s", a->env_file, strerror(errno));
    char *buf = NULL;
    size_t cap = 0;
    ssize_t n;
    int ln = 0, rc = 1;
    while ((n = getline(&buf, &cap, f)) >= 0) {
        ln++;
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
            buf[--n] = '\0';
        char *p = buf;
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p || *p == '#')
            continue;
        if (strncmp(p, "export ", 7) == 0)
            p += 7;
        if (!config_env_key_ok(p)) {
            rc = config_fail(c, line, "env_file %s:%d: not KEY=VALUE", a->env_file, ln);
            break;
        }
        char *eq = strchr(p, '=');
        size_t vl = strlen(eq + 1);
        if (vl >= 2 && (eq[1] == '"' || eq[1] == '\'') && eq[vl] == eq[1]) {
            memmove(eq + 1, eq + 2, vl - 2);
            eq[vl - 1] = '\0';
        }
        if (a->nfile_env >= CONFIG_ENV_MAX || config_vec_push(&a->file_env, &a->nfile_env, strdup(p)) != 0) {
            rc = config_fail(c, line, "env_file %s: too many entries (at most %d)", a->env_file, CONFIG_ENV_MAX);
            break;
        }
    }
    if (ferror(f) && rc)
        rc = config_fail(c, line, "env_file %s: %s", a->env_file, strerror(errno));
    free(buf);
    fclose(f);
    return rc;
}

/* Looks up user and group of a (set_ids, uid, gid, groups). */
static int config_ids(config_ctx *c, config_app *a)
{
    if (!a->user && !a->group)
        return 1;
    int uline = config_key_line(a, a->user ? "user" : "group");
    struct passwd *pw = NULL;
    char *end;
    if (a->user) {
        errno = 0;
        long v = strtol(a->user, &end, 10);
        pw = isdigit((unsigned char)a->user[0]) && !*end && v >= 0 && v <= INT_MAX ? getpwuid((uid_t)v) : getpwnam(a->user);
        if (!pw)
            return config_fail(c, uline, "unknown user '%s'", a->user);
        a->uid = pw->pw_uid;
        a->gid = pw->pw_gid;
    } else {
        a->uid = geteuid();
        a->gid = getegid();
    }
    if (a->group) {
        int gline = config_key_line(a, "group");
        errno = 0;
        long v = strtol(a->group, &end, 10);
        struct group *gr = isdigit((unsigned char)a->group[0]) && !*end && v >= 0 && v <= INT_MAX
                               ? getgrgid((gid_t)v) : getgrnam(a->group);
        if (!gr)
            return config_fail(c, gline, "unknown group '%s'", a->group);
        a->gid = gr->gr_gid;
    }
    if (geteuid() != 0 && (a->uid != geteuid() || a->gid != getegid()))
        return config_fail(c, uline, "%s: only a hub running as root can run workers as another user or group",
                           a->user ? "user" : "group");
    a->set_ids = geteuid() == 0;
    if (a->set_ids && pw) {
        int ng = 64;
        for (int tries = 0; tries < 4; tries++) {
            gid_t *g = realloc(a->groups, (size_t)ng * sizeof *g);
            if (!g)
                return config_fail(c, uline, "out of memory");
            a->groups = g;
            int want = ng;
            if (getgrouplist(pw->pw_name, a->gid, g, &want) >= 0) {
                a->ngroups = (size_t)want;
                break;
            }
            ng = want > ng ? want : ng * 2;
        }
    } else if (a->set_ids) {
        a->groups = malloc(sizeof *a->groups);
        if (!a->groups)
            return config_fail(c, uline, "out of memory");
        a->groups[0] = a->gid;
        a->ngroups = 1;
    }
    return 1;
}

/* Checks and completes app a once the whole file is read. */
static int config_finish_app(config_ctx *c, config_app *a)
{
    if (!a->argv)
        return config_fail(c, a->line, "app %s has no command", a->name);
    if (!a->cwd && !(a->cwd = strdup(c->cfg->dir)))
        return config_fail(c, a->line, "out of memory");
    if (a->env_file && !config_read_env_file(c, a))
        return 0;
    if (!config_ids(c, a))
        return 0;
    int cline = config_key_line(a, "command");
    if (strchr(a->argv[0], '/')) {
        char *p = config_join(a->cwd, a->argv[0]);
        if (!p)
            return config_fail(c, cline, "out of memory");
        size_t pl = strlen(p);
        int ok = pl < sizeof a->path && access(p, X_OK) == 0;
        int e = pl < sizeof a->path ? errno : ENAMETOOLONG;
        if (ok)
            memcpy(a->path, p, pl + 1);
        free(p);
        if (!ok)
            return config_fail(c, cline, "command %s: %s", a->argv[0], strerror(e));
    } else if (spawn_resolve(a->argv[0], a->path, sizeof a->path) != 0) {
        return config_fail(c, cline, "command %s: %s", a->argv[0],
                           errno == ENOENT ? "not found in PATH" : strerror(errno));
    }
    if (access(a->cwd, X_OK) != 0)
        return config_fail(c, config_key_line(a, "cwd"), "cwd %s: %s", a->cwd, strerror(errno));
    return 1;
}

int config_load(const char *file, config *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    config_ctx c = {.cfg = out, .err = err, .errcap = errcap};
    char *abs = realpath(file, NULL);
    if (!abs) {
        snprintf(err, errcap, "%s: %s", file, strerror(errno));
        return -1;
    }
    snprintf(out->file, sizeof out->file, "%s", abs);
    snprintf(out->dir, sizeof out->dir, "%s", abs);
    free(abs);
    char *slash = strrchr(out->dir, '/');
    if (slash)
        slash[slash == out->dir] = '\0';
    c.f = fopen(out->file, "re");
    if (!c.f) {
        snprintf(err, errcap, "%s: %s", out->file, strerror(errno));
        return -1;
    }
    config_defaults(&c, SEC_HUB, out);
    /* Debian's libinih takes its line length at run time (ini_max_line). */
    ini_max_line = CONFIG_LINE_MAX;
    int rc = ini_parse_stream(config_reader, &c, config_handler, &c);
    if (rc > 0 && !c.err_line)
        config_fail(&c, rc, "not a key = value line, a [section] or a comment");
    else if (rc < 0 && !c.err_line)
        config_fail(&c, 0, "%s", rc == -2 ? "out of memory" : "cannot read it");
    if (!c.err_line && ferror(c.f))
        config_fail(&c, 0, "cannot read it: %s", strerror(errno));
    fclose(c.f);
    free(c.buf);
    if (!c.err_line && out->napps == 0)
        config_fail(&c, 0, "no [app NAME] section: nothing to run");
    for (size_t i = 0; i < out->napps && !c.err_line; i++)
        config_finish_app(&c, &out->apps[i]);
    if (c.err_line) {
        config_free(out);
        return -1;
    }
    return 0;
}

void config_app_free(config_app *a)
{
    config_argv_free(a->argv);
    config_argv_free(a->env_lines);
    config_argv_free(a->file_env);
    free(a->listen);
    free(a->env_file);
    free(a->cwd);
    free(a->user);
    free(a->group);
    free(a->groups);
    memset(a, 0, sizeof *a);
}

/* A context for one app outside a file: paths relative to the current directory, bare messages. */
static config_ctx config_one_ctx(config *holder, char *err, size_t errcap)
{
    memset(holder, 0, sizeof *holder);
    if (!getcwd(holder->dir, sizeof holder->dir))
        snprintf(holder->dir, sizeof holder->dir, ".");
    return (config_ctx){.cfg = holder, .err = err, .errcap = errcap};
}

void config_app_init(config_app *a, const char *name)
{
    config holder;
    char err[64];
    config_ctx c = config_one_ctx(&holder, err, sizeof err);
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
    config_defaults(&c, SEC_APP, a);
}

int config_app_set(config_app *a, const char *key, const char *value, char *err, size_t errcap)
{
    config holder;
    config_ctx c = config_one_ctx(&holder, err, errcap);
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (k->sec == SEC_APP && strcmp(k->name, key) == 0) {
            if (k->type == T_COMMAND)
                break;
            if (k->type != T_ENV && i < 32 && a->seen_line[i]) {
                snprintf(err, errcap, "%s given twice", key);
                return -1;
            }
            if (i < 32)
                a->seen_line[i] = -1;
            return config_set(&c, k, a, value, 0) ? 0 : -1;
        }
    }
    snprintf(err, errcap, "no such setting: %s", key);
    return -1;
}

int config_app_complete(config_app *a, char *const *argv, char *err, size_t errcap)
{
    config holder;
    config_ctx c = config_one_ctx(&holder, err, errcap);
    size_t n = 0;
    while (argv[n])
        n++;
    config_argv_free(a->argv);
    a->argv = calloc(n + 1, sizeof *a->argv);
    for (size_t i = 0; a->argv && i < n; i++)
        if (!(a->argv[i] = strdup(argv[i]))) {
            config_argv_free(a->argv);
            a->argv = NULL;
        }
    if (!a->argv) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    return config_finish_app(&c, a) ? 0 : -1;
}

void config_free(config *cfg)
{
    for (size_t i = 0; i < cfg->napps; i++)
        config_app_free(&cfg->apps[i]);
    free(cfg->apps);
    free(cfg->ns);
    free(cfg->log_dir);
    free(cfg->metrics);
    memset(cfg, 0, sizeof *cfg);
}

const config_app *config_find(const config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->napps; i++)
        if (strcmp(cfg->apps[i].name, name) == 0)
            return &cfg->apps[i];
    return NULL;
}

/* True when app a gave key name itself (an [app] key). */
static bool config_app_given(const config_app *a, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].sec == SEC_APP && strcmp(config_keys[i].name, name) == 0)
            return (a->seen & (2ull << i)) != 0;
    return false;
}

config_balance config_app_balance(const config_app *a)
{
    if (!a->listen)
        return CONFIG_BALANCE_SHARED;
    if (config_app_given(a, "balance"))
        return a->balance;
    return strncmp(a->listen, "unix:", 5) == 0 || strncmp(a->listen, "fd:", 3) == 0 ? CONFIG_BALANCE_SHARED
                                                                                    : CONFIG_BALANCE_REUSEPORT;
}

config_logs config_app_logs(const config *cfg, const config_app *a)
{
    return (config_logs){
        .timestamps = config_app_given(a, "log_timestamps") ? a->log_timestamps : cfg->log_timestamps,
        .json = (config_app_given(a, "log_format") ? a->log_format : cfg->log_format) == CONFIG_LOG_JSON,
        .max_size = config_app_given(a, "log_max_size") ? a->log_max_size : cfg->log_max_size,
        .keep = config_app_given(a, "log_keep") ? a->log_keep : cfg->log_keep,
    };
}

/* ---- environment -------------------------------------------------------- */

void config_env_free(char **env)
{
    config_argv_free(env);
}

/* Sets "K=V" in env (n entries): replaces an entry of the same key in place, else appends. */
static int config_env_put(char ***env, size_t *n, const char *kv)
{
    size_t kl = strcspn(kv, "=");
    for (size_t i = 0; i < *n; i++)
        if (strncmp((*env)[i], kv, kl) == 0 && (*env)[i][kl] == '=') {
            char *s = strdup(kv);
            if (!s)
                return -1;
            free((*env)[i]);
            (*env)[i] = s;
            return 0;
        }
    return config_vec_push(env, n, strdup(kv));
}

char **config_env(const config_app *a)
{
    char **env = calloc(1, sizeof *env);
    size_t n = 0;
    if (!env)
        return NULL;
    for (char **e = a->inherit_env ? environ : NULL; e && *e; e++)
        if (strchr(*e, '=') && config_env_put(&env, &n, *e) != 0)
            goto oom;
    for (size_t i = 0; i < a->nfile_env; i++)
        if (config_env_put(&env, &n, a->file_env[i]) != 0)
            goto oom;
    for (size_t i = 0; i < a->nenv_lines; i++)
        if (config_env_put(&env, &n, a->env_lines[i]) != 0)
            goto oom;
    return env;
oom:
    config_argv_free(env);
    return NULL;
}

/* ---- comparing ---------------------------------------------------------- */

/* True if two NULL-terminated vectors (either may be NULL) hold the same strings. */
static bool config_vec_eq(char *const *x, char *const *y)
{
    size_t i = 0;
    for (; x && y && x[i] && y[i]; i++)
        if (strcmp(x[i], y[i]) != 0)
            return false;
    return (!x || !x[i]) && (!y || !y[i]);
}

static bool config_str_eq(const char *x, const char *y)
{
    return (!x && !y) || (x && y && strcmp(x, y) == 0);
}

int config_app_diff(const config_app *a, const config_app *b, char *out, size_t cap)
{
    struct { const char *name; bool same; } keys[] = {
        {"command", config_vec_eq(a->argv, b->argv) && strcmp(a->path, b->path) == 0},
        {"listen", config_str_eq(a->listen, b->listen)},
        {"balance", config_app_balance(a) == config_app_balance(b)},
        {"env", config_vec_eq(a->env_lines, b->env_lines)},
        {"env_file", config_str_eq(a->env_file, b->env_file) && config_vec_eq(a->file_env, b->file_env)},
        {"inherit_env", a->inherit_env == b->inherit_env},
        {"cwd", config_str_eq(a->cwd, b->cwd)},
        {"user", a->set_ids == b->set_ids && a->uid == b->uid},
        {"group", a->set_ids == b->set_ids && a->gid == b->gid},
        {"kill_timeout", a->kill_timeout_ms == b->kill_timeout_ms},
        {"ready_timeout", a->ready_timeout_ms == b->ready_timeout_ms},
        {"ready", a->ready == b->ready},
        {"max_memory", a->max_memory == b->max_memory},
        {"restart", a->restart == b->restart},
        {"stop_signal", a->stop_signal == b->stop_signal},
    };
    int n = 0;
    if (cap)
        out[0] = '\0';
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (keys[i].same)
            continue;
        size_t len = strlen(out);
        if (len < cap)
            snprintf(out + len, cap - len, "%s%s", n ? ", " : "", keys[i].name);
        n++;
    }
    return n;
}

/* ---- help --------------------------------------------------------------- */

void config_print_keys(FILE *f)
{
    config_section last = SEC_APP;
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (i == 0 || k->sec != last)
            fprintf(f, "%s[%s]\n", i ? "\n" : "", k->sec == SEC_HUB ? "hub" : "app NAME");
        last = k->sec;
        fprintf(f, "  %-15s %s%s%s\n", k->name, k->help, k->def ? "; default " : "", k->def ? k->def : "");
    }
}

void config_print_keys_md(FILE *f)
{
    fprintf(f, "| section | key | default | meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key *k = &config_keys[i];
        fprintf(f, "| `[%s]` | `%s` | %s%s%s | %s |\n", k->sec == SEC_HUB ? "hub" : "app NAME", k->name,
                k->def ? "`" : "", k->def ? k->def : "—", k->def ? "`" : "", k->help);
    }
}
