/*
 * main.c — the drover command line: parses a subcommand and its options and
 * hands over to the hub (or, later, the console).
 */
#include "client.h"
#include "proto/control.h"
#include "columns.h"
#include "commands.h"
#include "console.h"
#include "hub.h"
#include "paths.h"

#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef DROVER_VERSION
#define DROVER_VERSION "dev"
#endif

static const char usage_text[] =
    "usage: drover COMMAND [OPTIONS]\n"
    "\n"
    "drover supervises and monitors clustered apps. Workers linked with the\n"
    "drover agent (libdrover, or the Node.js agent) report to a hub over a Unix\n"
    "datagram socket; the hub adds /proc figures and shows them in a console,\n"
    "or streams them as NDJSON or Prometheus text.\n"
    "\n"
    "commands:\n"
    "  run [RUN OPTIONS] -- CMD [ARGS...]\n"
    "                      start N workers running CMD, restart them when they\n"
    "                      die, reload them one by one on SIGHUP. In a terminal:\n"
    "                      the hub goes to the background and the console opens;\n"
    "                      otherwise (or with --headless) figures stream to stdout\n"
    "  attach PID          monitor the children of a cluster master drover did not\n"
    "                      start (SIGHUP to drover restarts them one by one)\n"
    "  monit               the console, attached to the namespace's running hub (or\n"
    "                      to a monitor-only hub it starts when none runs)\n"
    "  monit --headless    stream the figures of every process that reports\n"
    "  ls [--json] [--sort COL]\n"
    "                      list the workers of the running hub (COL: id pid uptime\n"
    "                      restarts cpu mem rps errors lag)\n"
    "  logs [TARGET] [-n LINES] [-f]\n"
    "                      print captured output (TARGET: APP or APP:ID), -f follows\n"
    "  kill TARGET         stop a worker (or an app) for good\n"
    "  restart TARGET      stop and start again\n"
    "  reload [APP]        replace workers one at a time, each once its replacement\n"
    "                      is ready; waits and prints the progress\n"
    "  stop [TARGET]       without a target: stop every worker and the hub\n"
    "  scale APP N         run N workers of APP\n"
    "\n"
    "run options:\n"
    "  -i N|max            workers to run (default 1; max = online CPUs)\n"
    "  -n NAME             app name (default: the command's or script's name)\n"
    "  --listen SPEC       open [HOST:]PORT or unix:PATH once and give it to every\n"
    "                      worker as fd 3 (LISTEN_FDS=1, LISTEN_PID=its own pid)\n"
    "  --kill-timeout MS   SIGKILL a worker this long after SIGTERM (default 5000)\n"
    "  --ready-timeout MS  a replacement must be ready within this (default 10000)\n"
    "  --max-memory SIZE   replace a worker whose RSS exceeds SIZE (K, M, G suffixes)\n"
    "  --log-dir DIR       worker output files APP-ID.out.log, APP-ID.err.log\n"
    "                      (default $LOGS_DIRECTORY/NAME under systemd, else\n"
    "                      $XDG_STATE_HOME/drover/NAME/logs, else\n"
    "                      ~/.local/state/drover/NAME/logs)\n"
    "  --no-echo           do not copy worker output to stderr as \"[app:id] line\"\n"
    "  -d, --detach        start the hub in the background and return\n"
    "  --no-agent          do not preload the Node.js agent into node commands\n"
    "                      (by default NODE_OPTIONS gets --require <drover>/node/index.js)\n"
    "\n"
    "attach options:\n"
    "  -n NAME             app name (default: the master's process name)\n"
    "  --kill-timeout MS, --ready-timeout MS   as for run\n"
    "\n"
    "output options (run, attach, monit):\n"
    "  --headless          print figures to stdout instead of opening the console\n"
    "  --interval MS       print every MS milliseconds (default 1000, 50..3600000)\n"
    "  --count N           exit after N intervals (run: stops the workers first)\n"
    "  --format FMT        ndjson (default) or prom (Prometheus text, one exposition\n"
    "                      per interval, each followed by an empty line)\n"
    "  -L NAME             hub namespace (default \"default\"), as tmux -L\n"
    "  --socket-dir DIR    put agent.sock in DIR instead of\n"
    "                      $XDG_RUNTIME_DIR/drover/NAME or /tmp/drover-UID/NAME\n"
    "\n"
    "ls, logs, kill, restart, reload, stop, scale take -L NAME and --socket-dir DIR\n"
    "to find the hub, as above.\n"
    "\n"
    "signals to the hub: TERM/INT stop (run: every worker gracefully first),\n"
    "HUP rolling reload, USR1 reopen log files, TTIN/TTOU one worker more/less.\n"
    "\n"
    "  drover --help       this text\n"
    "  drover --version    the version\n"
    "\n"
    "Exit status: 0 ok, 1 failed, 2 usage error.\n";

/* Prints a usage error and the hint to --help; returns the usage exit status. */
__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("drover: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry 'drover --help'.\n", stderr);
    return 2;
}

/* Parses a decimal integer in [lo, hi]; returns false if s is not one. */
static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

/* Parses a size with an optional K/M/G (1024-based) suffix; false if invalid. */
static bool parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-')
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

/* Derives an app name from a command: the script for interpreters, else the program. */
static void derive_app(char *const *argv, char *out, size_t cap)
{
    static const char *interp[] = {"node", "nodejs", "python", "python3", "ruby", "perl",
                                   "bash", "sh", "php", "bun", "deno", NULL};
    const char *base = strrchr(argv[0], '/');
    base = base ? base + 1 : argv[0];
    const char *pick = base;
    for (int i = 0; interp[i]; i++)
        if (strcmp(base, interp[i]) == 0 && argv[1] && argv[1][0] != '-') {
            pick = strrchr(argv[1], '/');
            pick = pick ? pick + 1 : argv[1];
            break;
        }
    snprintf(out, cap, "%s", pick);
    char *dot = strrchr(out, '.');
    if (dot && dot != out)
        *dot = '\0';
    /* App names end up in file names and labels: keep them plain. */
    for (char *c = out; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '-' && *c != '.')
            *c = '_';
}

enum {
    O_HEADLESS = 256, O_INTERVAL, O_COUNT, O_FORMAT, O_SOCKDIR, O_HELP,
    O_LISTEN, O_KILL_TIMEOUT, O_READY_TIMEOUT, O_MAX_MEMORY, O_LOG_DIR, O_NO_ECHO, O_NO_AGENT,
    O_DETACH, O_BACKGROUND,
};

/*
 * Parses the options of run, attach and monit into o (options that do not
 * belong to the command are refused). Returns -1 when parsing succeeded,
 * else the exit status to return (0 after --help, 2 on a usage error).
 */
static int parse_options(const char *cmd, int argc, char **argv, hub_options *o, bool *headless,
                         bool *detach)
{
    static const struct option opts[] = {
        {"headless", no_argument, NULL, O_HEADLESS},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"count", required_argument, NULL, O_COUNT},
        {"format", required_argument, NULL, O_FORMAT},
        {"socket-dir", required_argument, NULL, O_SOCKDIR},
        {"help", no_argument, NULL, O_HELP},
        {"listen", required_argument, NULL, O_LISTEN},
        {"kill-timeout", required_argument, NULL, O_KILL_TIMEOUT},
        {"ready-timeout", required_argument, NULL, O_READY_TIMEOUT},
        {"max-memory", required_argument, NULL, O_MAX_MEMORY},
        {"log-dir", required_argument, NULL, O_LOG_DIR},
        {"no-echo", no_argument, NULL, O_NO_ECHO},
        {"no-agent", no_argument, NULL, O_NO_AGENT},
        {"detach", no_argument, NULL, O_DETACH},
        {"background", no_argument, NULL, O_BACKGROUND},   /* internal: the hub half of a console */
        {0, 0, 0, 0},
    };
    bool run = o->mode == HUB_RUN, att = o->mode == HUB_ATTACH;
    long v;
    int c;

    optind = 1;
    opterr = 0;
    /* run stops at the command; the others take options anywhere. */
    while ((c = getopt_long(argc, argv, run ? "+:L:i:n:d" : ":L:i:n:", opts, NULL)) != -1) {
        bool ok = true;
        switch (c) {
        case O_HEADLESS: *headless = true; break;
        case O_INTERVAL:
            if (!parse_long(optarg, 50, 3600000, &v))
                return usage_error("--interval takes milliseconds from 50 to 3600000, not '%s'", optarg);
            o->interval_ms = (unsigned)v;
            break;
        case O_COUNT:
            if (!parse_long(optarg, 1, LONG_MAX, &v))
                return usage_error("--count takes a positive number, not '%s'", optarg);
            o->count = v;
            break;
        case O_FORMAT:
            if (strcmp(optarg, "ndjson") == 0)
                o->format = HEADLESS_NDJSON;
            else if (strcmp(optarg, "prom") == 0)
                o->format = HEADLESS_PROM;
            else
                return usage_error("--format is ndjson or prom, not '%s'", optarg);
            break;
        case 'L':
            if (!paths_valid_name(optarg))
                return usage_error("invalid namespace name '%s': use 1-64 of A-Z a-z 0-9 _ . -", optarg);
            o->ns = optarg;
            break;
        case O_SOCKDIR: o->socket_dir = optarg; break;
        case O_HELP: fputs(usage_text, stdout); return 0;
        case 'i':
            ok = run;
            if (!ok)
                break;
            if (strcmp(optarg, "max") == 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                o->instances = n > 0 ? (int)n : 1;
            } else if (parse_long(optarg, 1, 1024, &v)) {
                o->instances = (int)v;
            } else {
                return usage_error("-i takes a number of workers (1..1024) or 'max', not '%s'", optarg);
            }
            break;
        case 'n':
            ok = run || att;
            if (ok && (!*optarg || strlen(optarg) >= 64 || strpbrk(optarg, "/: \t\n")))
                return usage_error("-n takes an app name of 1-63 characters without '/', ':' or spaces, not '%s'", optarg);
            o->app = optarg;
            break;
        case O_LISTEN: ok = run; o->listen = optarg; break;
        case O_KILL_TIMEOUT:
        case O_READY_TIMEOUT:
            ok = run || att;
            if (ok && !parse_long(optarg, 1, 3600000, &v))
                return usage_error("%s takes milliseconds from 1 to 3600000, not '%s'",
                                   c == O_KILL_TIMEOUT ? "--kill-timeout" : "--ready-timeout", optarg);
            if (c == O_KILL_TIMEOUT)
                o->kill_timeout_ms = (unsigned)v;
            else
                o->ready_timeout_ms = (unsigned)v;
            break;
        case O_MAX_MEMORY:
            ok = run;
            if (ok && !parse_size(optarg, &o->max_memory))
                return usage_error("--max-memory takes a size like 200M or 1G, not '%s'", optarg);
            break;
        case O_LOG_DIR: ok = run; o->log_dir = optarg; break;
        case O_NO_ECHO: ok = run; o->echo_logs = false; break;
        case O_NO_AGENT: ok = run; o->no_agent = true; break;
        case 'd':
        case O_DETACH: ok = run; *detach = true; break;
        case O_BACKGROUND: o->background = o->quiet = true; break;
        case ':': return usage_error("option %s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option '%s' for %s", argv[optind - 1], cmd);
        }
        if (!ok)
            return usage_error("option '%s' does not apply to %s", argv[optind - 1], cmd);
    }
    return -1;
}

static hub_options default_options(hub_mode mode)
{
    return (hub_options){
        .mode = mode, .ns = "default", .interval_ms = 1000, .format = HEADLESS_NDJSON,
        .instances = 1, .kill_timeout_ms = 5000, .ready_timeout_ms = 10000, .echo_logs = true,
    };
}

/* ---- hub in the background + console ----------------------------------- */


/* True when ctl.sock at path accepts a connection. */
static bool ctl_alive(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return false;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/*
 * Starts this very command again as a background hub (its own session, so a
 * terminal hangup never reaches it) with --background added, and waits until
 * its control socket answers. Startup errors reach the terminal (the hub
 * redirects its output only once set up). Returns 0, or the exit status.
 */
static int spawn_background_hub(int argc, char **argv, const char *ctl_path)
{
    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args)
        return 1;
    int k = 0;
    args[k++] = "drover";
    args[k++] = argv[0];          /* the subcommand */
    args[k++] = "--background";
    for (int i = 1; i < argc; i++)
        args[k++] = argv[i];
    args[k] = NULL;
    /* exec our own binary by its real path, so `ps` and `pkill drover` see
     * "drover" (execing /proc/self/exe would name the process "exe") */
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        fprintf(stderr, "drover: cannot find my own binary: %s\n", strerror(errno));
        free(args);
        return 1;
    }
    self[sl] = '\0';
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "drover: fork failed: %s\n", strerror(errno));
        free(args);
        return 1;
    }
    if (pid == 0) {
        setsid();
        int dn = open("/dev/null", O_RDWR);
        if (dn >= 0) {
            dup2(dn, 0);
            dup2(dn, 1);   /* stderr stays: errors while starting reach the user */
        }
        execv(self, args);
        fprintf(stderr, "drover: cannot start the hub: %s\n", strerror(errno));
        _exit(1);
    }
    free(args);
    for (int i = 0; i < 200; i++) {   /* up to 10 s */
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
        if (ctl_alive(ctl_path))
            return 0;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "drover: the hub (pid %d) did not open %s within 10 s\n", (int)pid, ctl_path);
    return 1;
}

static bool is_terminal(void)
{
    return isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
}

/* Fills ctl with the namespace's ctl.sock path, creating the directory. */
static int ns_ctl_path(const hub_options *o, char *ctl, size_t cap)
{
    char dir[PATHS_MAX], err[512];
    if (paths_dir(o->socket_dir, o->ns, true, dir, sizeof dir, err, sizeof err) != 0 ||
        paths_join(dir, "ctl.sock", ctl, cap) != 0) {
        fprintf(stderr, "drover: %s\n", err);
        return -1;
    }
    return 0;
}

/*
 * The console half of `run`, `attach` and `monit`: starts this command as a
 * background hub (unless one already answers and may be reused) and opens the
 * console on it. Returns the exit status.
 */
static int hub_and_console(const hub_options *o, int argc, char **argv, bool reuse, console_quit q)
{
    char ctl[PATHS_MAX + 16];
    if (ns_ctl_path(o, ctl, sizeof ctl) != 0)
        return 1;
    if (ctl_alive(ctl)) {
        if (!reuse) {
            fprintf(stderr, "drover: another hub is running in namespace '%s'; use -L NAME for a second "
                    "one, or 'drover monit' to see it\n", o->ns);
            return 1;
        }
        q = CONSOLE_QUIT_LEAVE;   /* not ours: leave it running */
    } else {
        int rc = spawn_background_hub(argc, argv, ctl);
        if (rc)
            return rc;
    }
    console_options co = {.ctl_path = ctl, .on_quit = q};
    return console_run(&co);
}

/* drover monit [--headless] [output options] */
static int cmd_monit(int argc, char **argv)
{
    hub_options o = default_options(HUB_MONIT);
    bool headless = false, detach = false;
    int rc = parse_options("monit", argc, argv, &o, &headless, &detach);
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return usage_error("unexpected argument '%s' for monit", argv[optind]);
    if (headless || o.background)
        return hub_run(&o);
    if (!is_terminal()) {
        fputs("drover: the console needs a terminal; use 'drover monit --headless' for a stream\n", stderr);
        return 2;
    }
    /* a hub that already runs is attached to; else a monitor-only one of our own, ended with us */
    return hub_and_console(&o, argc, argv, true, CONSOLE_QUIT_STOP);
}

/* drover run [run options] [output options] -- CMD [ARGS...] */
static int cmd_run(int argc, char **argv)
{
    hub_options o = default_options(HUB_RUN);
    bool headless = false, detach = false;
    char app[64];
    int rc = parse_options("run", argc, argv, &o, &headless, &detach);
    if (rc >= 0)
        return rc;
    if (optind >= argc)
        return usage_error("run needs a command: drover run [OPTIONS] -- CMD [ARGS...]");
    o.argv = argv + optind;
    if (!o.app) {
        derive_app(o.argv, app, sizeof app);
        o.app = app;
    }
    if (o.background || headless || (!detach && !is_terminal()))
        return hub_run(&o);

    if (!detach)   /* the hub runs apart, in its own session */
        return hub_and_console(&o, argc, argv, false, CONSOLE_QUIT_ASK);
    char ctl[PATHS_MAX + 16];
    if (ns_ctl_path(&o, ctl, sizeof ctl) != 0)
        return 1;
    if (ctl_alive(ctl)) {
        fprintf(stderr, "drover: another hub is running in namespace '%s'; use -L NAME for a second one, "
                "or 'drover monit' to see it\n", o.ns);
        return 1;
    }
    rc = spawn_background_hub(argc, argv, ctl);
    if (rc == 0)
        printf("drover: %s runs in the background (namespace %s); 'drover monit' shows it, "
               "'drover stop' ends it\n", o.app, o.ns);
    return rc;
}

/* drover attach PID [attach options] [output options] */
static int cmd_attach(int argc, char **argv)
{
    hub_options o = default_options(HUB_ATTACH);
    bool headless = false, detach = false;
    int rc = parse_options("attach", argc, argv, &o, &headless, &detach);
    if (rc >= 0)
        return rc;
    long pid;
    if (optind >= argc)
        return usage_error("attach needs the pid of a cluster master: drover attach PID");
    if (!parse_long(argv[optind], 2, INT_MAX, &pid))
        return usage_error("attach takes a pid, not '%s'", argv[optind]);
    if (optind + 1 < argc)
        return usage_error("unexpected argument '%s' for attach", argv[optind + 1]);
    o.master = (pid_t)pid;
    if (o.background || headless || !is_terminal())
        return hub_run(&o);
    return hub_and_console(&o, argc, argv, false, CONSOLE_QUIT_STOP);
}

/* ---- commands to a running hub ------------------------------------------ */

typedef struct {
    const char *ns, *socket_dir;
    bool json, follow;
    long lines;
    const char *sort;
} ctl_options;

/*
 * Parses the options of ls/logs/kill/… (-L, --socket-dir, --json, -n, -f,
 * --sort). Returns -1 when parsing succeeded, else the exit status.
 */
static int parse_ctl_options(const char *cmd, int argc, char **argv, ctl_options *co)
{
    static const struct option opts[] = {
        {"socket-dir", required_argument, NULL, 'S'},
        {"json", no_argument, NULL, 'j'},
        {"follow", no_argument, NULL, 'f'},
        {"lines", required_argument, NULL, 'n'},
        {"sort", required_argument, NULL, 's'},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    bool ls = strcmp(cmd, "ls") == 0, logs = strcmp(cmd, "logs") == 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":L:n:f", opts, NULL)) != -1) {
        switch (c) {
        case 'L':
            if (!paths_valid_name(optarg))
                return usage_error("invalid namespace name '%s'", optarg);
            co->ns = optarg;
            break;
        case 'S': co->socket_dir = optarg; break;
        case 'j':
            if (!ls)
                return usage_error("option '--json' does not apply to %s", cmd);
            co->json = true;
            break;
        case 's':
            if (!ls)
                return usage_error("option '--sort' does not apply to %s", cmd);
            if (!columns_find(optarg) || !columns_find(optarg)->sort_key)
                return usage_error("cannot sort by '%s': use id, pid, uptime, restarts, cpu, mem, rps, errors or lag", optarg);
            co->sort = optarg;
            break;
        case 'f':
            if (!logs)
                return usage_error("option '-f' does not apply to %s", cmd);
            co->follow = true;
            break;
        case 'n':
            if (!logs || !parse_long(optarg, 0, 1000000, &co->lines))
                return usage_error(logs ? "-n takes a number of lines, not '%s'" : "option '-n' does not apply to %s",
                                   logs ? optarg : cmd);
            break;
        case 'h': fputs(usage_text, stdout); return 0;
        case ':': return usage_error("option %s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option '%s' for %s", argv[optind - 1], cmd);
        }
    }
    return -1;
}

/* Connects to the namespace's hub, or prints why not and returns NULL. */
static client_sync *ctl_connect(const ctl_options *co)
{
    char path[PATHS_MAX + 16], err[512];
    if (client_ctl_path(co->socket_dir, co->ns, path, sizeof path, err, sizeof err) != 0) {
        fprintf(stderr, "drover: no hub is running in namespace '%s' (%s)\n", co->ns, err);
        return NULL;
    }
    client_sync *c = client_sync_open(path, CTL_VERSION, NULL, err, sizeof err);
    if (!c)
        fprintf(stderr, "drover: %s\n", err);
    return c;
}

static const char *ls_sort_col;

static int ls_cmp(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    const column *c = columns_find(ls_sort_col);
    double kx = c->sort_key(x), ky = c->sort_key(y);
    if (isnan(kx) != isnan(ky))
        return isnan(kx) ? 1 : -1;
    return (kx < ky) - (kx > ky);
}

/* drover ls [--json] [--sort COL] */
static int cmd_ls(int argc, char **argv)
{
    ctl_options co = {.ns = "default"};
    int rc = parse_ctl_options("ls", argc, argv, &co);
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return usage_error("unexpected argument '%s' for ls", argv[optind]);
    client_sync *c = ctl_connect(&co);
    if (!c)
        return 1;
    char err[512];
    json_t *req = json_pack("{s:s}", "cmd", "ls");
    json_t *r = client_sync_call(c, req, 5000, err, sizeof err);
    json_decref(req);
    client_sync_close(c);
    if (!r) {
        fprintf(stderr, "drover: %s\n", err);
        return 1;
    }
    json_t *ws = json_object_get(r, "workers");
    if (co.json) {
        json_t *out = json_pack("{s:O, s:O, s:O}", "workers", ws, "apps", json_object_get(r, "apps"),
                                "hub", json_object_get(r, "hub"));
        json_dumpf(out, stdout, JSON_COMPACT | JSON_REAL_PRECISION(15));
        putchar('\n');
        json_decref(out);
        json_decref(r);
        return 0;
    }
    size_t n = json_array_size(ws);
    json_t **rows = calloc(n ? n : 1, sizeof *rows);
    for (size_t i = 0; i < n; i++)
        rows[i] = json_array_get(ws, i);
    if (co.sort) {
        ls_sort_col = co.sort;
        qsort(rows, n, sizeof *rows, ls_cmp);
    }
    for (const column *col = columns_table; col->name; col++)
        printf("%s%*s", col == columns_table ? "" : " ", col->right ? col->width : -col->width, col->title);
    putchar('\n');
    for (size_t i = 0; i < n; i++) {
        for (const column *col = columns_table; col->name; col++) {
            char cell[128];
            col->format(rows[i], cell, sizeof cell);
            printf("%s%*.*s", col == columns_table ? "" : " ", col->right ? col->width : -col->width,
                   col->width, cell);
        }
        putchar('\n');
    }
    json_t *hub = json_object_get(r, "hub");
    printf("%lld workers, %lld reports, %lld dropped\n",
           (long long)json_integer_value(json_object_get(hub, "workers")),
           (long long)json_integer_value(json_object_get(hub, "reports_total")),
           (long long)json_integer_value(json_object_get(hub, "dropped_total")));
    free(rows);
    json_decref(r);
    return 0;
}

/* Prints one log object as "[app:id] text" ("[app:id!] text" for stderr). */
static void print_log(const json_t *l)
{
    const char *app = json_string_value(json_object_get(l, "app"));
    const char *stream = json_string_value(json_object_get(l, "stream"));
    json_t *text = json_object_get(l, "text");
    printf("[%s:%lld%s] %.*s\n", app ? app : "?", (long long)json_integer_value(json_object_get(l, "id")),
           stream && strcmp(stream, "err") == 0 ? "!" : "", (int)json_string_length(text),
           json_string_value(text) ? json_string_value(text) : "");
}

/* drover logs [TARGET] [-n LINES] [-f] */
static int cmd_logs(int argc, char **argv)
{
    ctl_options co = {.ns = "default", .lines = 20};
    int rc = parse_ctl_options("logs", argc, argv, &co);
    if (rc >= 0)
        return rc;
    const char *target = optind < argc ? argv[optind++] : NULL;
    if (optind < argc)
        return usage_error("unexpected argument '%s' for logs", argv[optind]);
    client_sync *c = ctl_connect(&co);
    if (!c)
        return 1;
    char err[512];
    json_t *req = json_pack("{s:s, s:I, s:b}", "cmd", "logs", "lines", (json_int_t)co.lines, "follow", co.follow);
    if (target)
        json_object_set_new(req, "target", json_string(target));
    json_t *r = client_sync_call(c, req, 5000, err, sizeof err);
    json_decref(req);
    if (!r || !json_is_true(json_object_get(r, "ok"))) {
        fprintf(stderr, "drover: %s\n", r ? json_string_value(json_object_get(r, "error")) : err);
        json_decref(r);
        client_sync_close(c);
        return 1;
    }
    size_t i;
    json_t *l;
    json_array_foreach(json_object_get(r, "lines"), i, l)
        print_log(l);
    json_decref(r);
    fflush(stdout);
    if (co.follow) {
        signal(SIGPIPE, SIG_DFL);
        json_t *m;
        while ((m = client_sync_next(c, -1))) {
            const char *type = json_string_value(json_object_get(m, "type"));
            if (type && strcmp(type, "log") == 0) {
                print_log(m);
                fflush(stdout);
            }
            json_decref(m);
        }
    }
    client_sync_close(c);
    return 0;
}

/* Prints the replies' message; for reload, follows its events to the end. */
static int cmd_control(const command_entry *ce, int argc, char **argv)
{
    ctl_options co = {.ns = "default"};
    int rc = parse_ctl_options(ce->name, argc, argv, &co);
    if (rc >= 0)
        return rc;
    const char *target = optind < argc ? argv[optind++] : NULL;
    long n = -1;
    if (ce->args == CMD_ARG_TARGET && !target)
        return usage_error("usage: drover %s", ce->usage);
    if (ce->args == CMD_ARG_TARGET_N) {
        if (!target || optind >= argc || !parse_long(argv[optind++], 0, 1024, &n))
            return usage_error("usage: drover %s (N from 0 to 1024)", ce->usage);
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s' for %s", argv[optind], ce->name);
    client_sync *c = ctl_connect(&co);
    if (!c)
        return 1;
    char err[512];
    bool reload = strcmp(ce->name, "reload") == 0 && (!target || !strchr(target, ':'));
    if (reload) {
        /* events reach subscribers: subscribe first so none is missed */
        json_t *sub = json_pack("{s:s}", "cmd", "subscribe");
        json_decref(client_sync_call(c, sub, 5000, err, sizeof err));
        json_decref(sub);
    }
    json_t *req = commands_request(ce, target, n);
    json_t *r = client_sync_call(c, req, 10000, err, sizeof err);
    json_decref(req);
    if (!r) {
        fprintf(stderr, "drover: %s\n", err);
        client_sync_close(c);
        return 1;
    }
    bool ok = json_is_true(json_object_get(r, "ok"));
    const char *msg = json_string_value(json_object_get(r, ok ? "msg" : "error"));
    fprintf(ok ? stdout : stderr, "%s%s\n", ok ? "" : "drover: ", msg ? msg : "");
    json_t *r2 = r;
    rc = ok ? 0 : 1;
    if (ok && reload) {
        /* Follow the reload events of the app (or of every app the reply
         * names) until each has ended; the hub always sends an outcome. */
        json_t *apps = json_object_get(r2, "apps");
        size_t wanted = target ? 1 : json_array_size(apps), ended = 0;
        json_t *m;
        while (ended < wanted && (m = client_sync_next(c, 3600 * 1000))) {
            ctl_event e;
            const char *type = json_string_value(json_object_get(m, "type"));
            if (type && strcmp(type, "event") == 0 && ctl_event_parse(m, &e) == 0 &&
                e.kind == CTL_EV_RELOAD && e.app && (!target || strcmp(e.app, target) == 0)) {
                puts(e.text);
                fflush(stdout);
                if (ctl_event_ends_reload(&e)) {
                    ended++;
                    if (e.phase == CTL_PHASE_ABORTED)
                        rc = 1;
                }
            }
            json_decref(m);
        }
        if (ended < wanted) {
            fprintf(stderr, "drover: the hub went away before the reload ended\n");
            rc = 1;
        }
    }
    json_decref(r2);
    client_sync_close(c);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing command");
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("drover %s\n", DROVER_VERSION);
        return 0;
    }
    if (strcmp(cmd, "monit") == 0)
        return cmd_monit(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "attach") == 0)
        return cmd_attach(argc - 1, argv + 1);
    if (strcmp(cmd, "ls") == 0)
        return cmd_ls(argc - 1, argv + 1);
    if (strcmp(cmd, "logs") == 0)
        return cmd_logs(argc - 1, argv + 1);
    const command_entry *ce = commands_find(cmd);
    if (ce)
        return cmd_control(ce, argc - 1, argv + 1);
    return usage_error("unknown command '%s'", cmd);
}
