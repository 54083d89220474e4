/*
 * cli.c — `drover ls|logs|kill|restart|reload|stop|scale`: one request to the
 * namespace's hub over its control socket, its reply printed; reload follows
 * its events to the outcome; logs -f follows the lines.
 */
#include "tui/cli.h"

#include "hub/paths.h"
#include "tui/client.h"
#include "tui/columns.h"
#include "tui/sshlink.h"
#include "proto/text.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char cli_ns_options[] =
    "  -L NAME             the hub's namespace (default \"default\")\n"
    "  --socket-dir DIR    the hub's socket directory, when it was started with one\n";

const char cli_host_options[] =
    "  --host [USER@]HOST[:PORT]  the hub on HOST, over ssh (runs 'drover bridge'\n"
    "                      there; -L and --socket-dir then name the remote hub).\n"
    "                      Repeatable: host by host, in order; a command that acts\n"
    "                      stops at the first host where it fails (exit 1)\n"
    "  --remote-cmd CMD    the drover command on the hosts (default $DROVER_REMOTE,\n"
    "                      else \"drover\"); ssh itself is $DROVER_SSH (default \"ssh\")\n";

#define CLI_HOSTS_MAX 64

typedef struct {
    const char *ns, *socket_dir;
    bool json, follow, env;
    long lines;
    const char *sort;
    const char *remote;                      /* --remote-cmd, NULL for the default */
    size_t nhosts;                           /* 0: the local hub */
    sshlink_target hosts[CLI_HOSTS_MAX];     /* --host, in order */
} cli_options;

/*
 * "HOST: " while a command talks to a host given with --host, else "": every
 * line that carries a hub's answer or error starts with it, so a reply names
 * the host it came from.
 */
static char cli_where[SSHLINK_SPEC_MAX + 2];

const char *cli_options_help(const ctl_command *cmd)
{
    switch (cmd->cmd) {
    case CTL_LS:
        return "  --json              the hub's snapshot as one JSON object\n"
               "  --sort COL          sort by COL: id pid uptime restarts cpu mem rps share errors lag\n";
    case CTL_LOGS:
        return "  -n, --lines N       the last N lines (default 20)\n"
               "  -f, --follow        then keep printing new lines\n";
    case CTL_DESCRIBE:
        return "  --env               also print the environment's values (never shown otherwise)\n"
               "  --json              the hub's answer as one JSON object\n";
    default:
        return "";
    }
}

/* Prints cmd's own help. */
static void cli_help(const ctl_command *cmd)
{
    /* upgrade acts on the local hub only (the hub re-executes its own binary) */
    bool hosts = cmd->cmd != CTL_UPGRADE;
    printf("usage: drover %s [-L NAME] [--socket-dir DIR]%s\n\n%s.\n\noptions:\n%s%s%s", cmd->usage,
           hosts ? " [--host [USER@]HOST[:PORT]]..." : "", cmd->help, cli_options_help(cmd), cli_ns_options,
           hosts ? cli_host_options : "");
}

/* Prints a usage error for cmd; returns 2. */
__attribute__((format(printf, 2, 3)))
static int cli_usage(const ctl_command *cmd, const char *fmt, ...)
{
    va_list ap;
    fputs("drover: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: drover %s\nTry 'drover %s --help'.\n", cmd->usage, cmd->name);
    return 2;
}

bool cli_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/*
 * Parses the options of a hub-talking subcommand. Returns -1 when parsing
 * succeeded (optind at the first operand), else the exit status.
 */
static int cli_parse(const ctl_command *cmd, int argc, char **argv, cli_options *co)
{
    static const struct option opts[] = {
        {"socket-dir", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'j'},
        {"follow", no_argument, NULL, 'f'},
        {"lines", required_argument, NULL, 'n'},
        {"sort", required_argument, NULL, 's'},
        {"env", no_argument, NULL, 'e'},
        {"host", required_argument, NULL, 'H'},
        {"remote-cmd", required_argument, NULL, 'R'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    bool ls = cmd->cmd == CTL_LS, logs = cmd->cmd == CTL_LOGS, describe = cmd->cmd == CTL_DESCRIBE;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":L:n:fh", opts, NULL)) != -1) {
        switch (c) {
        case 'L':
            if (!paths_valid_name(optarg))
                return cli_usage(cmd, "invalid namespace name '%s': use 1-64 of A-Z a-z 0-9 _ . -", optarg);
            co->ns = optarg;
            break;
        case 'S': co->socket_dir = optarg; break;
        case 'e':
            if (!describe)
                return cli_usage(cmd, "option '--env' does not apply to %s", cmd->name);
            co->env = true;
            break;
        case 'j':
            if (!ls && !describe)
                return cli_usage(cmd, "option '--json' does not apply to %s", cmd->name);
            co->json = true;
            break;
        case 's':
            if (!ls)
                return cli_usage(cmd, "option '--sort' does not apply to %s", cmd->name);
            if (!columns_find(optarg) || !columns_find(optarg)->sort_key)
                return cli_usage(cmd, "cannot sort by '%s': use id, pid, uptime, restarts, cpu, mem, rps, share, errors or lag",
                                 optarg);
            co->sort = optarg;
            break;
        case 'f':
            if (!logs)
                return cli_usage(cmd, "option '-f' does not apply to %s", cmd->name);
            co->follow = true;
            break;
        case 'n':
            if (!logs)
                return cli_usage(cmd, "option '-n' does not apply to %s", cmd->name);
            if (!cli_long(optarg, 0, CTL_LINES_MAX, &co->lines))
                return cli_usage(cmd, "-n takes a number of lines from 0 to %d, not '%s'", CTL_LINES_MAX, optarg);
            break;
        case 'H': {
            char err[300];
            if (co->nhosts == CLI_HOSTS_MAX)
                return cli_usage(cmd, "at most %d --host", CLI_HOSTS_MAX);
            if (sshlink_parse(optarg, &co->hosts[co->nhosts], err, sizeof err) != 0)
                return cli_usage(cmd, "%s", err);
            co->nhosts++;
            break;
        }
        case 'R':
            if (!*optarg)
                return cli_usage(cmd, "--remote-cmd takes a command");
            co->remote = optarg;
            break;
        case 'h': cli_help(cmd); return 0;
        case ':': return cli_usage(cmd, "option %s needs a value", argv[optind - 1]);
        default: return cli_usage(cmd, "unknown option '%s' for %s", argv[optind - 1], cmd->name);
        }
    }
    if (co->follow && co->nhosts > 1)
        return cli_usage(cmd, "logs -f follows one host, not %zu", co->nhosts);
    if (co->remote && co->nhosts == 0)
        return cli_usage(cmd, "--remote-cmd goes with --host");
    return -1;
}

/*
 * Connects to the hub of host (NULL: the namespace's local hub), or prints
 * why not and returns NULL.
 */
static client_sync *cli_connect(const cli_options *co, const sshlink_target *host)
{
    char path[PATHS_MAX + 16], err[1200];
    if (host) {
        client_sync *c = client_sync_open_ssh(host, co->remote, co->ns, co->socket_dir, CTL_VERSION, NULL, err,
                                              sizeof err);
        if (!c)
            fprintf(stderr, "drover: %s%s\n", cli_where, err);
        return c;
    }
    if (paths_ctl(co->socket_dir, co->ns, false, path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "drover: no hub is running in namespace '%s' (%s)\n", co->ns, err);
        return NULL;
    }
    client_sync *c = client_sync_open(path, CTL_VERSION, NULL, err, sizeof err);
    if (!c)
        fprintf(stderr, "drover: %s\n", err);
    return c;
}

/*
 * Sends r and waits for its reply. Returns the reply when ok; else prints
 * the hub's error (or why there was none) and returns NULL.
 */
static json_t *cli_call(client_sync *c, const ctl_request *r, int timeout_ms)
{
    char err[512];
    json_t *req = ctl_request_json(r);
    json_t *rep = client_sync_call(c, req, timeout_ms, err, sizeof err);
    json_decref(req);
    if (!rep) {
        fprintf(stderr, "drover: %s%s\n", cli_where, err);
        return NULL;
    }
    if (!json_is_true(json_object_get(rep, "ok"))) {
        fprintf(stderr, "drover: %s", cli_where);
        text_print_safe(stderr, json_string_value(json_object_get(rep, "error")), SIZE_MAX);
        fputc('\n', stderr);
        json_decref(rep);
        return NULL;
    }
    return rep;
}

/* ---- ls -------------------------------------------------------------------- */

static const column *cli_sort_col;

static int cli_ls_cmp(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    double kx = cli_sort_col->sort_key(x), ky = cli_sort_col->sort_key(y);
    if (isnan(kx) != isnan(ky))
        return isnan(kx) ? 1 : -1;
    return (kx < ky) - (kx > ky);
}

/* Prints the snapshot as the worker table (or as JSON). */
static void cli_ls_print(const cli_options *co, json_t *r)
{
    json_t *ws = json_object_get(r, "workers");
    if (co->json) {
        json_t *out = json_pack("{s:O, s:O, s:O, s:O?}", "workers", ws, "apps", json_object_get(r, "apps"),
                                "hub", json_object_get(r, "hub"), "host", json_object_get(r, "host"));
        if (json_object_get(r, "remote"))   /* --host: the target it came from */
            json_object_set(out, "remote", json_object_get(r, "remote"));
        json_dumpf(out, stdout, JSON_COMPACT | JSON_REAL_PRECISION(15));
        putchar('\n');
        json_decref(out);
        return;
    }
    size_t n = json_array_size(ws);
    json_t **rows = calloc(n ? n : 1, sizeof *rows);
    if (!rows)
        return;
    for (size_t i = 0; i < n; i++)
        rows[i] = json_array_get(ws, i);
    if (co->sort) {
        cli_sort_col = columns_find(co->sort);
        qsort(rows, n, sizeof *rows, cli_ls_cmp);
    }
    for (const column *col = columns_table; col->name; col++)
        if (!col->fleet)
            printf("%s%*s", col == columns_table ? "" : " ", col->right ? col->width : -col->width, col->title);
    putchar('\n');
    for (size_t i = 0; i < n; i++) {
        for (const column *col = columns_table; col->name; col++) {
            char cell[128], safe[128];
            if (col->fleet)
                continue;
            col->format(rows[i], cell, sizeof cell);
            text_sanitize(cell, safe, sizeof safe);   /* names come from workers */
            printf("%s%*.*s", col == columns_table ? "" : " ", col->right ? col->width : -col->width,
                   col->width, safe);
        }
        putchar('\n');
    }
    /* One row per app from the same columns: figures of all its workers,
     * latency and lag from their merged histograms. */
    json_t *apps = json_object_get(r, "apps");
    for (size_t i = 0; i < json_array_size(apps); i++) {
        json_t *a = json_array_get(apps, i);
        for (const column *col = columns_table; col->name; col++) {
            char cell[128], safe[128];
            if (col->fleet)
                continue;
            if (!strcmp(col->name, "state"))
                snprintf(cell, sizeof cell, "%lld/%lld", (long long)json_integer_value(json_object_get(a, "online")),
                         (long long)json_integer_value(json_object_get(a, "workers")));
            else if (!strcmp(col->name, "id"))
                snprintf(cell, sizeof cell, "*");
            else
                col->format(a, cell, sizeof cell);
            text_sanitize(cell, safe, sizeof safe);
            printf("%s%*.*s", col == columns_table ? "" : " ", col->right ? col->width : -col->width,
                   col->width, safe);
        }
        putchar('\n');
    }
    /* Then how evenly each app's requests are spread over its workers. */
    for (size_t i = 0; i < json_array_size(apps); i++) {
        json_t *a = json_array_get(apps, i);
        const char *name = json_string_value(json_object_get(a, "app"));
        char spread[64], safe[128];
        columns_spread(a, spread, sizeof spread);
        text_sanitize(name ? name : "-", safe, sizeof safe);
        printf("%s: %lld/%lld online, %s\n", safe, (long long)json_integer_value(json_object_get(a, "online")),
               (long long)json_integer_value(json_object_get(a, "workers")), spread);
    }
    json_t *hub = json_object_get(r, "hub");
    printf("%lld workers, %lld reports, %lld dropped\n",
           (long long)json_integer_value(json_object_get(hub, "workers")),
           (long long)json_integer_value(json_object_get(hub, "reports_total")),
           (long long)json_integer_value(json_object_get(hub, "dropped_total")));
    free(rows);
}

/* ---- logs ------------------------------------------------------------------ */

/* Prints one log object as "[app:id] text" ("[app:id!] text" for stderr), control characters escaped. */
static void cli_print_log(const json_t *l)
{
    const char *stream = json_string_value(json_object_get(l, "stream"));
    json_t *text = json_object_get(l, "text");
    json_t *id = json_object_get(l, "id");
    fputc('[', stdout);
    text_print_safe(stdout, json_string_value(json_object_get(l, "app")), SIZE_MAX);
    if (json_is_integer(id))
        printf(":%lld", (long long)json_integer_value(id));
    printf("%s] ", stream && strcmp(stream, "err") == 0 ? "!" : "");
    text_print_safe(stdout, json_string_value(text), json_string_length(text));
    fputc('\n', stdout);
}

/* After the reply to `logs -f`: prints pushed lines until the hub goes away. */
static void cli_follow_logs(client_sync *c)
{
    json_t *m;
    signal(SIGPIPE, SIG_DFL);
    while ((m = client_sync_next(c, -1))) {
        const char *type = json_string_value(json_object_get(m, "type"));
        if (type && strcmp(type, "log") == 0) {
            cli_print_log(m);
            fflush(stdout);
        }
        json_decref(m);
    }
}

/* ---- reload ---------------------------------------------------------------- */

/*
 * Follows the reload events of app (NULL: of every app the reply named)
 * until each has ended. The hub always sends an outcome; the connection
 * closing first (the hub went away) is a failure. Returns the exit status.
 */
static int cli_follow_reload(client_sync *c, const char *app, const json_t *reply)
{
    size_t wanted = app ? 1 : json_array_size(json_object_get(reply, "apps")), ended = 0;
    int rc = 0;
    json_t *m;
    while (ended < wanted && (m = client_sync_next(c, -1))) {
        ctl_event e;
        const char *type = json_string_value(json_object_get(m, "type"));
        if (type && strcmp(type, "event") == 0 && ctl_event_parse(m, &e) == 0 && e.kind == CTL_EV_RELOAD &&
            e.app && (!app || strcmp(e.app, app) == 0)) {
            fputs(cli_where, stdout);
            text_print_safe(stdout, e.text, SIZE_MAX);
            fputc('\n', stdout);
            fflush(stdout);
            if (ctl_event_ends_reload(&e)) {
                ended++;
                rc |= e.phase == CTL_PHASE_ABORTED;
            }
        }
        json_decref(m);
    }
    if (ended < wanted) {
        fprintf(stderr, "drover: %sthe hub went away before the reload ended\n", cli_where);
        return 1;
    }
    return rc;
}

/* ---- describe -------------------------------------------------------------- */

/* Prints one "key  value" line of describe, the value made terminal-safe. */
static void cli_kv(const char *key, const char *value)
{
    printf("%-12s ", key);
    text_print_safe(stdout, value ? value : "-", SIZE_MAX);
    fputc('\n', stdout);
}

/* Prints describe's answer for an attached master (it has "master"): its profile and children. */
static void cli_describe_attach_print(const json_t *d)
{
    char buf[1024];
    size_t i;
    json_t *v;
    cli_kv("app", json_string_value(json_object_get(d, "app")));
    snprintf(buf, sizeof buf, "pid %lld", (long long)json_integer_value(json_object_get(d, "master")));
    cli_kv("master", buf);
    cli_kv("master name", json_string_value(json_object_get(d, "master_name")));
    cli_kv("profile", json_string_value(json_object_get(d, "profile")));
    snprintf(buf, sizeof buf, "SIG%s", json_string_value(json_object_get(d, "kill_signal")));
    cli_kv("kill", buf);
    const char *mode = json_string_value(json_object_get(d, "reload"));
    bool master = mode && strcmp(mode, "MASTER") == 0;
    snprintf(buf, sizeof buf, "%s: SIG%s %s", mode ? mode : "?", json_string_value(json_object_get(d, "reload_signal")),
             master ? "to the master, which replaces its children" : "to each child in turn");
    cli_kv("reload", buf);
    const char *up = json_string_value(json_object_get(d, "scale_up"));
    const char *down = json_string_value(json_object_get(d, "scale_down"));
    if (up && down)
        snprintf(buf, sizeof buf, "SIG%s / SIG%s to the master, one per worker", up, down);
    else
        snprintf(buf, sizeof buf, "none (attach with --scale-up SIG --scale-down SIG)");
    cli_kv("scale", buf);
    snprintf(buf, sizeof buf, "ready %lld ms, kill %lld ms", (long long)json_integer_value(json_object_get(d, "ready_timeout_ms")),
             (long long)json_integer_value(json_object_get(d, "kill_timeout_ms")));
    cli_kv("timeouts", buf);
    buf[0] = '\0';
    json_array_foreach(json_object_get(d, "workers"), i, v)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%lld:%lld", i ? " " : "",
                 (long long)json_integer_value(json_object_get(v, "id")),
                 (long long)json_integer_value(json_object_get(v, "pid")));
    snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s(id:pid)", buf[0] ? " " : "");
    cli_kv("workers", buf);
}

/*
 * Prints each worker's process tree (describe's "workers"): one line per
 * process, the worker's own first with its id, then its descendants.
 */
static void cli_describe_trees(const json_t *ws)
{
    size_t i, j;
    json_t *w, *t;
    printf("processes:\n  %-4s %-8s %-8s %7s %8s %8s  %s\n", "ID", "PID", "PPID", "CPU%", "RSS", "PSS", "COMM");
    json_array_foreach(ws, i, w) {
        json_array_foreach(json_object_get(w, "tree"), j, t) {
            char id[24] = "", cpu[16], rss[16], pss[16];
            if (j == 0)
                snprintf(id, sizeof id, "%lld", (long long)json_integer_value(json_object_get(w, "id")));
            const json_t *c = json_object_get(t, "cpu_pct");
            if (json_is_number(c))
                snprintf(cpu, sizeof cpu, "%.1f", json_number_value(c));
            else
                snprintf(cpu, sizeof cpu, "-");
            columns_bytes((double)json_integer_value(json_object_get(t, "rss_bytes")), rss, sizeof rss);
            const json_t *p = json_object_get(t, "pss_bytes");
            columns_bytes(json_is_integer(p) ? (double)json_integer_value(p) : -1, pss, sizeof pss);
            printf("  %-4s %-8lld %-8lld %7s %8s %8s  %s", id, (long long)json_integer_value(json_object_get(t, "pid")),
                   (long long)json_integer_value(json_object_get(t, "ppid")), cpu, rss, pss, j ? "`-" : "");
            text_print_safe(stdout, json_string_value(json_object_get(t, "comm")), SIZE_MAX);
            fputc('\n', stdout);
        }
    }
}

/* Prints describe's answer d for people. */
static void cli_describe_print(const json_t *d, bool with_values)
{
    char buf[1024];
    size_t i;
    json_t *v;
    if (json_object_get(d, "master")) {
        cli_describe_attach_print(d);
        return;
    }
    const char *app = json_string_value(json_object_get(d, "app"));
    cli_kv("app", app);
    buf[0] = '\0';
    json_array_foreach(json_object_get(d, "command"), i, v)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? " " : "", json_string_value(v));
    cli_kv("command", buf);
    cli_kv("path", json_string_value(json_object_get(d, "path")));
    cli_kv("cwd", json_string_value(json_object_get(d, "cwd")));
    if (json_is_integer(json_object_get(d, "uid"))) {
        snprintf(buf, sizeof buf, "%s (uid %lld, gid %lld)", json_string_value(json_object_get(d, "user"))
                 ? json_string_value(json_object_get(d, "user")) : "-",
                 (long long)json_integer_value(json_object_get(d, "uid")),
                 (long long)json_integer_value(json_object_get(d, "gid")));
        cli_kv("user", buf);
    } else {
        cli_kv("user", "(the hub's)");
    }
    cli_kv("listen", json_string_value(json_object_get(d, "listen")));
    snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(json_object_get(d, "instances")));
    cli_kv("instances", buf);
    const char *ready = json_string_value(json_object_get(d, "ready"));
    bool learned = json_is_true(json_object_get(d, "ready_learned"));
    snprintf(buf, sizeof buf, "%s%s", ready ? ready : "?",
             ready && strcmp(ready, "auto") == 0
                 ? (learned ? " (learned: its workers signal readiness; a new one must)"
                            : " (nothing signalled yet: a silent worker is online after 1 s)")
                 : "");
    cli_kv("ready", buf);
    snprintf(buf, sizeof buf, "ready %lld ms, kill %lld ms", (long long)json_integer_value(json_object_get(d, "ready_timeout_ms")),
             (long long)json_integer_value(json_object_get(d, "kill_timeout_ms")));
    cli_kv("timeouts", buf);
    json_t *mm = json_object_get(d, "max_memory");
    if (json_is_integer(mm))
        snprintf(buf, sizeof buf, "%lld bytes", (long long)json_integer_value(mm));
    cli_kv("max_memory", json_is_integer(mm) ? buf : "none");
    cli_kv("restart", json_string_value(json_object_get(d, "restart")));
    cli_kv("stop_signal", json_string_value(json_object_get(d, "stop_signal")));
    const char *ld = json_string_value(json_object_get(d, "log_dir"));
    if (ld) {
        snprintf(buf, sizeof buf, "%s/%s-ID.out.log, %s-ID.err.log", ld, app ? app : "?", app ? app : "?");
        cli_kv("logs", buf);
    }
    json_t *env = json_object_get(d, "env");
    if (with_values) {
        const char *k;
        printf("env:\n");
        json_object_foreach(env, k, v) {
            fputs("  ", stdout);
            text_print_safe(stdout, k, SIZE_MAX);
            fputc('=', stdout);
            text_print_safe(stdout, json_string_value(v), SIZE_MAX);
            fputc('\n', stdout);
        }
    } else {
        printf("%-12s ", "env keys");
        json_array_foreach(env, i, v) {
            if (i)
                fputc(' ', stdout);
            text_print_safe(stdout, json_string_value(v), SIZE_MAX);
        }
        printf("\n%-12s (values: describe --env)\n", "");
    }
    cli_describe_trees(json_object_get(d, "workers"));
    /* restarts first (what ended or replaced workers, and why: a ring of
     * their own in the hub), then every event */
    for (int pass = 0; pass < 2; pass++) {
        printf(pass ? "last events:\n" : "last restarts:\n");
        json_array_foreach(json_object_get(d, pass ? "events" : "restarts"), i, v) {
            const char *cause = json_string_value(json_object_get(v, "cause"));
            if (!pass && !cause)
                continue;
            time_t t = (time_t)json_real_value(json_object_get(v, "ts"));
            struct tm tm;
            char ts[32];
            localtime_r(&t, &tm);
            strftime(ts, sizeof ts, "%H:%M:%S", &tm);
            printf("  %s ", ts);
            if (!pass)
                printf("%-10s ", cause);
            text_print_safe(stdout, json_string_value(json_object_get(v, "text")), SIZE_MAX);
            fputc('\n', stdout);
        }
    }
}

/* ---- apply (drover up beside a running hub) -------------------------------- */

int cli_apply(const char *ns, const char *socket_dir, const char *file)
{
    cli_options co = {.ns = ns, .socket_dir = socket_dir};
    signal(SIGPIPE, SIG_IGN);
    client_sync *c = cli_connect(&co, NULL);
    if (!c)
        return 1;
    ctl_request sub = ctl_request_make(CTL_SUBSCRIBE, NULL);
    json_t *s = cli_call(c, &sub, 10000);
    if (!s) {
        client_sync_close(c);
        return 1;
    }
    json_decref(s);
    ctl_request r = ctl_request_make(CTL_APPLY, NULL);
    snprintf(r.file, sizeof r.file, "%s", file);
    json_t *rep = cli_call(c, &r, 30000);
    if (!rep) {
        client_sync_close(c);
        return 1;
    }
    size_t i;
    json_t *ch;
    json_array_foreach(json_object_get(rep, "changes"), i, ch) {
        const char *keys = json_string_value(json_object_get(ch, "keys"));
        text_print_safe(stdout, json_string_value(json_object_get(ch, "app")), SIZE_MAX);
        printf(": %s", json_string_value(json_object_get(ch, "action")));
        if (keys)
            printf(" (%s changed)", keys);
        fputs(": ", stdout);
        text_print_safe(stdout, json_string_value(json_object_get(ch, "msg")), SIZE_MAX);
        fputc('\n', stdout);
    }
    text_print_safe(stdout, json_string_value(json_object_get(rep, "msg")), SIZE_MAX);
    fputc('\n', stdout);
    fflush(stdout);
    int rc = json_is_true(json_object_get(rep, "failed"));
    /* Each reload's outcome: aborted is a failure (the old workers keep serving). */
    json_t *reloading = json_object_get(rep, "reloading");
    size_t wanted = json_array_size(reloading), ended = 0;
    json_t *m;
    while (ended < wanted && (m = client_sync_next(c, -1))) {
        ctl_event e;
        const char *type = json_string_value(json_object_get(m, "type"));
        if (type && strcmp(type, "event") == 0 && ctl_event_parse(m, &e) == 0 && e.kind == CTL_EV_RELOAD && e.app) {
            bool ours = false;
            json_array_foreach(reloading, i, ch)
                ours |= strcmp(json_string_value(ch), e.app) == 0;
            if (ours && ctl_event_ends_reload(&e)) {
                text_print_safe(stdout, e.text, SIZE_MAX);
                fputc('\n', stdout);
                if (e.phase == CTL_PHASE_ABORTED) {
                    /* what the app is left with, and how to try again */
                    printf("%s: the new settings are kept; its old workers keep serving until "
                           "'drover reload %s' succeeds (a worker started meanwhile runs the new settings)\n",
                           e.app, e.app);
                }
                fflush(stdout);
                ended++;
                rc |= e.phase == CTL_PHASE_ABORTED;
            }
        }
        json_decref(m);
    }
    if (ended < wanted) {
        fprintf(stderr, "drover: the hub went away before the reloads ended\n");
        rc = 1;
    }
    json_decref(rep);
    client_sync_close(c);
    return rc;
}

/* ---- the subcommand -------------------------------------------------------- */

/* ---- upgrade --------------------------------------------------------------- */

#define CLI_UPGRADE_WAIT_MS 30000   /* for the new hub to answer */

/* An integer field of a hello (0 when absent). */
static long cli_hello_int(const json_t *hello, const char *key)
{
    return (long)json_integer_value(json_object_get(hello, key));
}

/*
 * `drover upgrade`: asks the hub to re-execute itself, then waits for the
 * hub (the same pid) to answer again and says whether it upgraded or went
 * back. Exit 0 when upgraded, 1 when refused or rolled back.
 */
static int cli_upgrade(const cli_options *co)
{
    char path[PATHS_MAX + 16], err[512];
    if (paths_ctl(co->socket_dir, co->ns, false, path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "drover: no hub is running in namespace '%s' (%s)\n", co->ns, err);
        return 1;
    }
    json_t *hello = NULL;
    client_sync *c = client_sync_open(path, CTL_VERSION, &hello, err, sizeof err);
    if (!c) {
        fprintf(stderr, "drover: %s\n", err);
        return 1;
    }
    long pid = cli_hello_int(hello, "hub_pid"), ups = cli_hello_int(hello, "upgrades"),
         fails = cli_hello_int(hello, "upgrade_failures");
    json_decref(hello);
    ctl_request r = ctl_request_make(CTL_UPGRADE, NULL);
    json_t *rep = cli_call(c, &r, 15000);
    if (!rep) {
        client_sync_close(c);
        return 1;
    }
    text_print_safe(stdout, json_string_value(json_object_get(rep, "msg")), SIZE_MAX);
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(rep);
    /* The hub closes every connection when it executes the new binary. */
    json_t *m;
    while ((m = client_sync_next(c, CLI_UPGRADE_WAIT_MS)))
        json_decref(m);
    client_sync_close(c);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        hello = NULL;
        c = client_sync_open(path, CTL_VERSION, &hello, err, sizeof err);
        if (c) {
            client_sync_close(c);
            long npid = cli_hello_int(hello, "hub_pid");
            int rc = -1;
            if (npid != pid) {
                fprintf(stderr, "drover: another hub (pid %ld) answers now; the hub upgraded was pid %ld\n", npid, pid);
                rc = 1;
            } else if (cli_hello_int(hello, "upgrades") > ups) {
                printf("upgraded: the hub (pid %ld) runs drover ", pid);
                text_print_safe(stdout, json_string_value(json_object_get(hello, "drover")), SIZE_MAX);
                printf(" now, its workers kept\n");
                rc = 0;
            } else if (cli_hello_int(hello, "upgrade_failures") > fails) {
                fputs("drover: upgrade failed, the hub went back to its binary: ", stderr);
                text_print_safe(stderr, json_string_value(json_object_get(hello, "upgrade_error")), SIZE_MAX);
                fputc('\n', stderr);
                rc = 1;
            }
            json_decref(hello);
            if (rc >= 0)
                return rc;
        }
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > CLI_UPGRADE_WAIT_MS) {
            fprintf(stderr, "drover: the hub did not answer within %d s after the upgrade (%s)\n",
                    CLI_UPGRADE_WAIT_MS / 1000, c ? "it answers, but as before" : err);
            return 1;
        }
        struct timespec nap = {0, 20 * 1000000};
        nanosleep(&nap, NULL);
    }
}

/*
 * Runs request r of cmd on one hub: host (NULL: the local one). Prints the
 * reply (a table, JSON, or its message), follows a reload to its outcome or
 * logs -f until the hub goes away. Returns the exit status.
 */
static int cli_one(const ctl_command *cmd, const cli_options *co, const ctl_request *r,
                   const sshlink_target *host)
{
    int rc = 0;
    client_sync *c = cli_connect(co, host);
    if (!c)
        return 1;
    bool reload = cmd->cmd == CTL_RELOAD && r->target.id < 0;
    if (reload) {
        /* events reach subscribers: subscribe first so that none is missed */
        ctl_request sub = ctl_request_make(CTL_SUBSCRIBE, NULL);
        json_t *s = cli_call(c, &sub, 10000);
        if (!s) {
            client_sync_close(c);
            return 1;
        }
        json_decref(s);
    }
    json_t *rep = cli_call(c, r, 10000);
    if (!rep) {
        client_sync_close(c);
        return 1;
    }
    /* a table from a host starts with a line naming it */
    bool table = !co->json && (cmd->cmd == CTL_LS || cmd->cmd == CTL_DESCRIBE || cmd->cmd == CTL_LOGS);
    if (host && table)
        printf("== %s ==\n", host->spec);
    switch (cmd->cmd) {
    case CTL_LS:
        if (host && co->json)
            json_object_set_new(rep, "remote", json_string(host->spec));
        cli_ls_print(co, rep);
        break;
    case CTL_DESCRIBE:
        if (co->json) {
            json_t *a = json_object_get(rep, "app");
            if (host && json_is_object(a))
                json_object_set_new(a, "remote", json_string(host->spec));
            json_dumpf(a, stdout, JSON_COMPACT);
            putchar('\n');
        } else {
            cli_describe_print(json_object_get(rep, "app"), co->env);
        }
        break;
    case CTL_LOGS: {
        size_t i;
        json_t *l;
        json_array_foreach(json_object_get(rep, "lines"), i, l)
            cli_print_log(l);
        fflush(stdout);
        if (co->follow)
            cli_follow_logs(c);
        break;
    }
    default:
        fputs(cli_where, stdout);
        text_print_safe(stdout, json_string_value(json_object_get(rep, "msg")), SIZE_MAX);
        fputc('\n', stdout);
        fflush(stdout);
        if (reload)
            rc = cli_follow_reload(c, r->target.app[0] ? r->target.app : NULL, rep);
        break;
    }
    json_decref(rep);
    client_sync_close(c);
    if (fflush(stdout) != 0 || ferror(stdout))
        rc = rc ? rc : 1;
    return rc;
}

int cli_main(const ctl_command *cmd, int argc, char **argv)
{
    cli_options co = {.ns = "default", .lines = 20};
    int rc = cli_parse(cmd, argc, argv, &co);
    if (rc >= 0)
        return rc;
    ctl_request r = ctl_request_make(cmd->cmd, NULL);
    r.lines = co.lines;
    r.follow = co.follow;
    r.env = co.env;
    if (optind < argc && cmd->target != CTL_TARGET_NONE) {
        char err[256];
        if (ctl_target_parse(argv[optind], &r.target, err, sizeof err) != 0)
            return cli_usage(cmd, "%s", err);
        if (cmd->target == CTL_TARGET_APP && r.target.id >= 0)
            return cli_usage(cmd, "%s takes an app, not a worker ('%s')", cmd->name, argv[optind]);
        optind++;
    } else if (cmd->target == CTL_TARGET_REQUIRED || cmd->target == CTL_TARGET_APP) {
        return cli_usage(cmd, "%s needs a target", cmd->name);
    }
    if (cmd->args & CTL_ARG_N) {
        if (optind >= argc || !cli_long(argv[optind], 0, CTL_SCALE_MAX, &r.n))
            return cli_usage(cmd, "%s needs a number of workers from 0 to %d", cmd->name, CTL_SCALE_MAX);
        r.has_n = true;
        optind++;
    }
    if (optind < argc)
        return cli_usage(cmd, "unexpected argument '%s' for %s", argv[optind], cmd->name);

    signal(SIGPIPE, SIG_IGN);   /* a hub that closes early is an error message, not a death */
    if (cmd->cmd == CTL_UPGRADE) {
        if (co.nhosts)
            return cli_usage(cmd, "upgrade acts on the local hub only: run it on each host (ssh HOST drover upgrade)");
        return cli_upgrade(&co);
    }
    if (co.nhosts == 0)
        return cli_one(cmd, &co, &r, NULL);
    /* Host by host, in the order given. A command that acts stops at the
     * first host where it failed (a rolling reload must not go on after an
     * abort); one that only reads goes on and fails at the end. */
    rc = 0;
    for (size_t i = 0; i < co.nhosts; i++) {
        snprintf(cli_where, sizeof cli_where, "%s: ", co.hosts[i].spec);
        int hrc = cli_one(cmd, &co, &r, &co.hosts[i]);
        rc = rc ? rc : hrc;
        if (hrc && cmd->acts && i + 1 < co.nhosts) {
            fprintf(stderr, "drover: %s failed on %s; not run on", cmd->name, co.hosts[i].spec);
            for (size_t j = i + 1; j < co.nhosts; j++)
                fprintf(stderr, " %s", co.hosts[j].spec);
            fputc('\n', stderr);
            break;
        }
    }
    cli_where[0] = '\0';
    return rc;
}

/* ---- stream ---------------------------------------------------------------- */

int cli_stream(const char *ctl_path, ctl_format fmt, long count)
{
    char err[512];
    signal(SIGPIPE, SIG_IGN);
    client_sync *c = client_sync_open(ctl_path, CTL_VERSION, NULL, err, sizeof err);
    if (!c) {
        fprintf(stderr, "drover: %s\n", err);
        return 1;
    }
    ctl_request r = ctl_request_make(CTL_STREAM, NULL);
    r.format = fmt;
    json_t *rep = cli_call(c, &r, 10000);
    if (!rep) {
        client_sync_close(c);
        return 1;
    }
    json_decref(rep);
    long printed = 0;
    int rc = 1;   /* the hub going away ends the stream with a failure */
    json_t *m;
    while ((m = client_sync_next(c, -1))) {
        const char *type = json_string_value(json_object_get(m, "type"));
        json_t *text = json_object_get(m, "text");
        if (type && strcmp(type, "output") == 0 && json_is_string(text)) {
            /* already JSON-escaped NDJSON or Prometheus text: written as the hub would */
            if (fwrite(json_string_value(text), 1, json_string_length(text), stdout) != json_string_length(text) ||
                fflush(stdout) != 0) {
                rc = 0;   /* the reader went away (| head): a normal end */
                json_decref(m);
                break;
            }
            if (count > 0 && ++printed >= count) {
                rc = 0;
                json_decref(m);
                break;
            }
        }
        json_decref(m);
    }
    if (rc)
        fprintf(stderr, "drover: the hub went away\n");
    client_sync_close(c);
    return rc;
}
