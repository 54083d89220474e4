/*
 * main.c — the drover command line: one table of subcommands drives the
 * dispatch, the global usage and each subcommand's --help. Subcommands
 * that start a hub (run, up, attach, monit) and those that need none
 * (startup: tui/startup.c) are here; those that talk to a running hub are
 * the protocol's command table (proto/control.h) and live in tui/cli.c.
 */
#include "hub/attach.h"
#include "hub/config.h"
#include "hub/hub.h"
#include "hub/listen.h"
#include "hub/metrics.h"
#include "hub/paths.h"
#include "hub/upgrade.h"
#include "proto/control.h"
#include "tui/bridge.h"
#include "tui/cli.h"
#include "tui/console.h"
#include "tui/fleet.h"
#include "tui/launch.h"
#include "tui/startup.h"

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef DROVER_VERSION
#define DROVER_VERSION "dev"
#endif

/* ---- help texts -------------------------------------------------------------- */

static const char intro_text[] =
    "drover supervises and monitors clustered apps. Workers linked with the\n"
    "drover agent (libdrover, or the Node.js agent) report to a hub over a Unix\n"
    "datagram socket; the hub adds /proc figures and shows them in a console,\n"
    "or streams them as NDJSON or Prometheus text.\n";

static const char run_options[] =
    "  -i N|max            workers to run (default 1; max = online CPUs)\n"
    "  -n NAME             app name (default: the command's or script's name)\n"
    "  --listen SPEC       open [HOST:]PORT or unix:PATH once and give it to every\n"
    "                      worker as fd 3 (LISTEN_FDS=1, LISTEN_PID=its own pid)\n"
    "  --balance MODE      reuseport (default for TCP): a SO_REUSEPORT socket per\n"
    "                      worker as its fd 3, new connections dealt evenly; shared:\n"
    "                      one socket for all (even only if the server accepts\n"
    "                      fairly); unix: and fd: listeners are always shared\n"
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
    "  --env KEY=VALUE     set a variable for the workers (repeatable)\n"
    "  --env-file FILE     variables from a file of KEY=VALUE lines\n"
    "  --no-inherit-env    start from an empty environment, not the hub's\n"
    "  --cwd DIR           the workers' working directory\n"
    "  --user USER, --group GROUP  run the workers as them (the hub must run as root)\n"
    "  --restart POLICY    always (default), on-failure (not after exit 0), never\n"
    "  --stop-signal SIG   the signal that asks a worker to stop (default TERM)\n"
    "  --ready MODE        auto (learned, default), notify, agent, none\n"
    "  --log-timestamps    start each line in the files with an RFC 3339 time in ms\n"
    "  --log-format FMT    text (default), or json: one object a line\n"
    "                      {ts, app, id, pid, stream, line}\n"
    "  --log-max-size SIZE rotate a log file at this size (default 10M)\n"
    "  --log-keep N        rotated files kept per log file, 1..100 (default 3)\n"
    "                      (--env … --log-keep are the keys of `drover up`'s file,\n"
    "                      parsed by the same table; see 'drover up --keys')\n";

static const char up_options[] =
    "  -f FILE             the config file (default ./drover.conf)\n"
    "  -d, --detach        start the hub in the background and return\n"
    "  --log-dir DIR       worker output files (wins over the file's [hub] log_dir)\n"
    "  --no-echo           do not copy worker output to stderr as \"[app:id] line\"\n"
    "  --no-agent          do not preload the Node.js agent into node commands\n"
    "  --keys              print every key the file takes, with its default, and exit\n"
    "  --check             check the file (as an apply would), list its apps, and exit\n";

static const char startup_options_text[] =
    "  -f FILE             the config file (default ./drover.conf)\n"
    "  -L NAME             the hub's namespace: the units are drover-NAME.service and\n"
    "                      .socket (default: the file's [hub] namespace)\n"
    "  --socket-dir DIR    the hub's --socket-dir (default: as any hub)\n"
    "  --user              a unit for 'systemctl --user' (installed into\n"
    "                      $XDG_CONFIG_HOME/systemd/user, ~/.config by default)\n"
    "  --install           write the units (to /etc/systemd/system, or the --user\n"
    "                      directory) instead of printing them; an identical unit\n"
    "                      already there is left as is\n"
    "  --force             with --install: replace a different unit already there\n"
    "  --dir DIR           with --install: write into DIR instead\n";

static const char attach_options[] =
    "  -n NAME             app name (default: the master's process name)\n"
    "  --kill-signal SIG   the signal that stops a child (kill, stop, restart;\n"
    "                      default TERM, nginx QUIT)\n"
    "  --reload MODE       ONE: stop the children one at a time, the master forks\n"
    "                      each replacement (default); MASTER: one signal to the\n"
    "                      master, which replaces its children itself (nginx,\n"
    "                      gunicorn, uwsgi)\n"
    "  --reload-signal SIG what reload sends (MASTER: to the master, default HUP;\n"
    "                      ONE: to each child, default the kill signal)\n"
    "  --scale-up SIG, --scale-down SIG  the master's signals for one worker\n"
    "                      more/less (gunicorn: TTIN, TTOU); scale needs both\n"
    "  --kill-timeout MS   SIGKILL a child this long after the kill signal\n"
    "                      (default 5000)\n"
    "  --ready-timeout MS  a replacement must appear (and be ready) within this\n"
    "                      (default 10000); a MASTER reload must be complete\n"
    "                      within it, and each step of a scale\n";

static const char monit_options[] =
    "  --host [USER@]HOST[:PORT]  also the hub on HOST, over ssh: 'ssh -T -o\n"
    "                      BatchMode=yes HOST drover bridge -L NAME' ($DROVER_SSH is\n"
    "                      the ssh command). Repeatable: the console merges the\n"
    "                      hosts (a HOST column, a line per host; keys act on the\n"
    "                      selected worker's host) and leaves their hubs running\n"
    "  --hosts-file FILE   hosts from FILE, one a line ('#' comments)\n"
    "  --no-local          not the local hub, only the hosts\n"
    "  --remote-cmd CMD    the drover command on the hosts (default $DROVER_REMOTE,\n"
    "                      else \"drover\")\n";

static const char output_options[] =
    "  --headless          print figures to stdout instead of opening the console\n"
    "  --interval MS       print every MS milliseconds (default 1000, 50..3600000)\n"
    "  --count N           exit after N intervals (run: stops the workers first)\n"
    "  --format FMT        ndjson (default) or prom (Prometheus text, one exposition\n"
    "                      per interval, each followed by an empty line)\n"
    "  --no-mouse          the console leaves the mouse to the terminal (by default a\n"
    "                      click selects a worker or sorts by a column title and the\n"
    "                      wheel scrolls, as in htop)\n"
    "  --metrics [HOST:]PORT  serve GET /metrics (Prometheus text, this interval's\n"
    "                      figures) and /healthz over HTTP; a bare port binds\n"
    "                      127.0.0.1 (default: off)\n"
    "  --metrics-textfile PATH  write the same text to PATH (write + rename) every\n"
    "                      interval, for node_exporter's textfile collector (*.prom)\n"
    "                      (both are the hub's: monit and up refuse them beside a\n"
    "                      running hub, monit with --host: there they are clients)\n"
    "  -L NAME             hub namespace (default \"default\"), as tmux -L\n"
    "  --socket-dir DIR    put the hub's sockets in DIR instead of\n"
    "                      $XDG_RUNTIME_DIR/drover/NAME or /tmp/drover-UID/NAME\n";

/* A subcommand that starts (or finds) a hub, or needs none (local). */
typedef struct cli_entry {
    const char *name;
    const char *usage;      /* after "drover " */
    const char *help;       /* what it does, a few lines */
    const char *options;    /* its own options ("" for none); output options follow */
    int (*main)(int argc, char **argv);
    bool        local;      /* no hub: its options are all there is (no output options) */
} hub_entry;

static int cmd_run(int argc, char **argv);
static int cmd_attach(int argc, char **argv);
static int cmd_monit(int argc, char **argv);
static int cmd_up(int argc, char **argv);
static int cmd_startup(int argc, char **argv);
static int run_hub_or_console(const hub_options *op, int argc, char **argv, bool headless, bool detach);

static const hub_entry hub_entries[] = {
    {"run", "run [OPTIONS] -- CMD [ARGS...]",
     "start N workers running CMD, restart them when they die, reload them one by\n"
     "one on SIGHUP. In a terminal the hub goes to the background and the console\n"
     "opens; otherwise (or with --headless) figures stream to stdout",
     run_options, cmd_run, false},
    {"up", "up [-f FILE] [-d] [--headless] [OPTIONS]",
     "run every app of a config file (INI: [hub] and [app NAME] sections; 'drover up\n"
     "--keys' lists the keys). With no hub in the namespace, start one, as run does;\n"
     "beside a running hub, apply the file to it and print what changed, app by app:\n"
     "new apps start, removed apps stop gracefully, changed apps get a rolling\n"
     "reload with their new settings, instances alone is a scale. A bad file\n"
     "changes nothing (FILE:LINE: what is wrong). Exit 1 if any part failed\n"
     "(an aborted reload), 2 on usage errors",
     up_options, cmd_up, false},
    {"attach", "attach PID [OPTIONS]",
     "monitor the children of a cluster master drover did not start (PID may be\n"
     "1, a container's master), and command them with the signals its family\n"
     "understands: the master's process name picks a profile (nginx, gunicorn,\n"
     "uwsgi, else default; printed at start and by 'drover describe APP'), the\n"
     "options below override it (with --reload ONE, SIGHUP to\n"
     "drover restarts them one by one)",
     attach_options, cmd_attach, false},
    {"monit", "monit [--headless] [--host [USER@]HOST[:PORT]...] [OPTIONS]",
     "the console on the namespace's running hub (or on a monitor-only hub it\n"
     "starts when none runs); with --headless, the figures as a stream: the\n"
     "running hub's (at its interval), else those of every process that reports.\n"
     "With --host, the local hub and each host (over ssh) merged: one console,\n"
     "or with --headless one stream with a \"host\" key on every line",
     monit_options, cmd_monit, false},
    {"startup", "startup [-f FILE] [-L NAME] [--socket-dir DIR] [--user] [--install [--force] [--dir DIR]]",
     "print the systemd units that run a config file's apps at boot: drover-NAME.service\n"
     "(Type=notify, reload by SIGHUP, timeouts from the apps') and, when an app\n"
     "listens on TCP, drover-NAME.socket (systemd holds the sockets: connections wait\n"
     "while the hub restarts); with --install, write them and print the systemctl\n"
     "line to run next. A different unit already there is kept unless --force",
     startup_options_text, cmd_startup, true},
};
#define HUB_ENTRIES (sizeof hub_entries / sizeof hub_entries[0])

/* A subcommand that is neither a hub nor a command of the protocol: it parses its own options and help. */
typedef struct {
    const char *name;
    const char *usage;      /* after "drover " */
    const char *help;       /* one line for the global usage */
    int (*main)(int argc, char **argv);
} tool_entry;

static const tool_entry tool_entries[] = {
    {"bridge", bridge_usage, "relay stdin/stdout to the hub's control socket (what --host runs over ssh)",
     bridge_main},
};
#define TOOL_ENTRIES (sizeof tool_entries / sizeof tool_entries[0])

/* Prints the global usage: every subcommand from the three tables (hubs, protocol commands, tools). */
static void usage_print(void)
{
    printf("usage: drover COMMAND [OPTIONS]\n\n%s\ncommands:\n", intro_text);
    for (size_t i = 0; i < HUB_ENTRIES; i++)
        printf("  %s\n", hub_entries[i].usage);
    for (int i = 0; i < CTL_CMD_N; i++)
        if (ctl_commands[i].cli || ctl_commands[i].cmd == CTL_LS)
            printf("  %-30s %s\n", ctl_commands[i].usage, ctl_commands[i].help);
    for (size_t i = 0; i < TOOL_ENTRIES; i++)
        printf("  %-30s %s\n", tool_entries[i].usage, tool_entries[i].help);
    printf("\n'drover COMMAND --help' shows a command's options. Commands that talk to a\n"
           "running hub take -L NAME and --socket-dir DIR to find it, and --host\n"
           "[USER@]HOST[:PORT] (repeatable) to reach it on another machine over ssh.\n"
           "\n"
           "signals to the hub: TERM/INT stop (run: every worker gracefully first),\n"
           "HUP rolling reload (a hub started by 'drover up': reread and apply its file),\n"
           "USR1 reopen log files, TTIN/TTOU one worker more/less.\n"
           "\n"
           "  drover --help       this text\n"
           "  drover --version    the version\n"
           "\n"
           "Exit status: 0 ok, 1 failed, 2 usage error.\n");
}

/* Prints one hub subcommand's help. */
static void usage_entry(const hub_entry *e)
{
    printf("usage: drover %s\n\n%s.\n\noptions:\n%s%s", e->usage, e->help, e->options,
           e->local ? "" : output_options);
}

static const hub_entry *current_entry;

/* Prints a usage error and the hint to --help; returns the usage exit status. */
__attribute__((format(printf, 1, 2)))
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs("drover: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (current_entry)
        fprintf(stderr, "\nTry 'drover %s --help'.\n", current_entry->name);
    else
        fputs("\nTry 'drover --help'.\n", stderr);
    return 2;
}

/* Derives an app name from a command: the script for interpreters, else the
 * program, without its extension, made to follow the app name rule. */
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
    char tmp[CTL_APP_MAX];
    snprintf(tmp, sizeof tmp, "%s", pick);
    char *dot = strrchr(tmp, '.');
    if (dot && dot != tmp && dot[1])
        *dot = '\0';   /* "server.js" → "server"; ".run.sh" → ".run" → "run" below */
    ctl_app_name_make(tmp, out, cap);
}

enum {
    O_HEADLESS = 256, O_INTERVAL, O_COUNT, O_FORMAT, O_SOCKDIR, O_HELP,
    O_KILL_SIGNAL, O_RELOAD, O_RELOAD_SIGNAL, O_SCALE_UP, O_SCALE_DOWN,   /* attach's signals */
    O_LISTEN, O_KILL_TIMEOUT, O_READY_TIMEOUT, O_MAX_MEMORY, O_LOG_DIR, O_NO_ECHO, O_NO_AGENT,
    O_DETACH, O_BACKGROUND, O_NO_MOUSE, O_METRICS, O_METRICS_TEXTFILE, O_BALANCE, O_KEYS, O_CHECK,
    O_APP_KEY,   /* --env, --cwd…: a key of the file's [app] table, by the option's name */
    O_HOST, O_HOSTS_FILE, O_NO_LOCAL, O_REMOTE_CMD,
};

/*
 * Parses the options of run, attach and monit into o (options that do not
 * belong to the command are refused). Returns -1 when parsing succeeded,
 * else the exit status to return (0 after --help, 2 on a usage error).
 */
static bool up_check;   /* drover up --check */
static config_app run_app;   /* drover run's file-like options (O_APP_KEY) */
static bool run_app_used;
/* monit's other hosts (--host, --hosts-file), --no-local, --remote-cmd */
static sshlink_target monit_hosts[FLEET_HOSTS_MAX];
static size_t monit_nhosts;
static bool monit_no_local;
static const char *monit_remote;

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
        {"balance", required_argument, NULL, O_BALANCE},
        {"kill-timeout", required_argument, NULL, O_KILL_TIMEOUT},
        {"ready-timeout", required_argument, NULL, O_READY_TIMEOUT},
        {"kill-signal", required_argument, NULL, O_KILL_SIGNAL},
        {"reload", required_argument, NULL, O_RELOAD},
        {"reload-signal", required_argument, NULL, O_RELOAD_SIGNAL},
        {"scale-up", required_argument, NULL, O_SCALE_UP},
        {"scale-down", required_argument, NULL, O_SCALE_DOWN},
        {"max-memory", required_argument, NULL, O_MAX_MEMORY},
        {"log-dir", required_argument, NULL, O_LOG_DIR},
        {"no-echo", no_argument, NULL, O_NO_ECHO},
        {"no-agent", no_argument, NULL, O_NO_AGENT},
        {"detach", no_argument, NULL, O_DETACH},
        {"background", no_argument, NULL, O_BACKGROUND},   /* internal: the hub half of a console */
        {"no-mouse", no_argument, NULL, O_NO_MOUSE},
        {"metrics", required_argument, NULL, O_METRICS},
        {"metrics-textfile", required_argument, NULL, O_METRICS_TEXTFILE},
        {"keys", no_argument, NULL, O_KEYS},
        {"check", no_argument, NULL, O_CHECK},
        {"env", required_argument, NULL, O_APP_KEY},
        {"env-file", required_argument, NULL, O_APP_KEY},
        {"no-inherit-env", no_argument, NULL, O_APP_KEY},
        {"cwd", required_argument, NULL, O_APP_KEY},
        {"user", required_argument, NULL, O_APP_KEY},
        {"group", required_argument, NULL, O_APP_KEY},
        {"restart", required_argument, NULL, O_APP_KEY},
        {"stop-signal", required_argument, NULL, O_APP_KEY},
        {"ready", required_argument, NULL, O_APP_KEY},
        {"log-timestamps", no_argument, NULL, O_APP_KEY},
        {"log-format", required_argument, NULL, O_APP_KEY},
        {"log-max-size", required_argument, NULL, O_APP_KEY},
        {"log-keep", required_argument, NULL, O_APP_KEY},
        {"host", required_argument, NULL, O_HOST},
        {"hosts-file", required_argument, NULL, O_HOSTS_FILE},
        {"no-local", no_argument, NULL, O_NO_LOCAL},
        {"remote-cmd", required_argument, NULL, O_REMOTE_CMD},
        {0, 0, 0, 0},
    };
    bool up = strcmp(cmd, "up") == 0, monit = strcmp(cmd, "monit") == 0;
    bool run = o->mode == HUB_RUN && !up, att = o->mode == HUB_ATTACH;
    char lerr[256];
    long v;
    int c, li = -1;

    optind = 1;
    opterr = 0;
    /* run stops at the command; the others take options anywhere. */
    while ((li = -1, c = getopt_long(argc, argv, run ? "+:L:i:n:d" : up ? ":L:f:d" : ":L:i:n:", opts, &li)) != -1) {
        bool ok = true;
        switch (c) {
        case O_HEADLESS: *headless = true; break;
        case O_INTERVAL:
            if (!cli_long(optarg, 50, 3600000, &v))
                return usage_error("--interval takes milliseconds from 50 to 3600000, not '%s'", optarg);
            o->interval_ms = (unsigned)v;
            break;
        case O_COUNT:
            if (!cli_long(optarg, 1, LONG_MAX, &v))
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
        case O_HELP: usage_entry(current_entry); return 0;
        case 'i':
            ok = run;
            if (!ok)
                break;
            if (strcmp(optarg, "max") == 0) {
                long n = sysconf(_SC_NPROCESSORS_ONLN);
                o->instances = n > 0 ? (int)n : 1;
            } else if (cli_long(optarg, 1, 1024, &v)) {
                o->instances = (int)v;
            } else {
                return usage_error("-i takes a number of workers (1..1024) or 'max', not '%s'", optarg);
            }
            break;
        case 'n':
            ok = run || att;
            if (ok && !ctl_app_name_ok(optarg))
                return usage_error("-n takes an app name of " CTL_APP_NAME_RULE ", not '%s'", optarg);
            o->app = optarg;
            break;
        case O_LISTEN:
            ok = run;
            if (ok && listen_check(optarg, lerr, sizeof lerr) != 0)
                return usage_error("%s", lerr);
            o->listen = optarg;
            break;
        case O_BALANCE:
            ok = run;
            if (!ok)
                break;
            if (strcmp(optarg, "shared") == 0)
                o->balance = HUB_BALANCE_SHARED;
            else if (strcmp(optarg, "reuseport") == 0)
                o->balance = HUB_BALANCE_REUSEPORT;
            else
                return usage_error("--balance is shared or reuseport, not '%s'", optarg);
            break;
        case O_KILL_TIMEOUT:
        case O_READY_TIMEOUT:
            ok = run || att;
            if (ok && !cli_long(optarg, 1, 3600000, &v))
                return usage_error("%s takes milliseconds from 1 to 3600000, not '%s'",
                                   c == O_KILL_TIMEOUT ? "--kill-timeout" : "--ready-timeout", optarg);
            if (c == O_KILL_TIMEOUT)
                o->kill_timeout_ms = (unsigned)v;
            else
                o->ready_timeout_ms = (unsigned)v;
            break;
        case O_MAX_MEMORY:
            ok = run;
            if (ok && !config_parse_size(optarg, &o->max_memory))
                return usage_error("--max-memory takes a size like 200M or 1G, not '%s'", optarg);
            break;
        case O_LOG_DIR: ok = run || up; o->log_dir = optarg; break;
        case O_NO_ECHO: ok = run || up; o->echo_logs = false; break;
        case O_NO_AGENT: ok = run || up; o->no_agent = true; break;
        case 'f': ok = up; o->config_file = optarg; break;
        case O_KEYS:
            if (!up)
                return usage_error("option '--keys' does not apply to %s", cmd);
            config_print_keys(stdout);
            return 0;
        case O_CHECK: ok = up; up_check = true; break;
        case O_APP_KEY: {
            ok = run;
            if (!ok || li < 0)
                break;
            /* the option's name is the key's, with '-' for '_' */
            char key[32], kerr[300];
            const char *name = opts[li].name, *value = optarg;
            if (opts[li].has_arg == no_argument) {   /* a boolean key: --no-KEY false, --KEY true */
                bool no = strncmp(name, "no-", 3) == 0;
                name += no ? 3 : 0;
                value = no ? "false" : "true";
            }
            snprintf(key, sizeof key, "%s", name);
            for (char *p = key; *p; p++)
                *p = *p == '-' ? '_' : *p;
            if (!run_app_used)
                config_app_init(&run_app, "run");
            run_app_used = true;
            if (config_app_set(&run_app, key, value, kerr, sizeof kerr) != 0)
                return usage_error("--%s: %s", opts[li].name, kerr);
            break;
        }
        case O_KILL_SIGNAL:
        case O_RELOAD_SIGNAL:
        case O_SCALE_UP:
        case O_SCALE_DOWN: {
            ok = att;
            int sig = ok ? config_parse_signal(optarg) : 0;
            if (ok && !sig)
                return usage_error("--%s takes a signal name (TERM, QUIT, HUP, TTIN…) or number, not '%s'",
                                   li >= 0 ? opts[li].name : "?", optarg);
            *(c == O_KILL_SIGNAL ? &o->kill_signal : c == O_RELOAD_SIGNAL ? &o->reload_signal
              : c == O_SCALE_UP ? &o->scale_up : &o->scale_down) = sig;
            break;
        }
        case O_RELOAD:
            ok = att;
            if (!ok)
                break;
            if (strcasecmp(optarg, "one") == 0)
                o->reload_mode = ATTACH_RELOAD_ONE;
            else if (strcasecmp(optarg, "master") == 0)
                o->reload_mode = ATTACH_RELOAD_MASTER;
            else
                return usage_error("--reload is ONE or MASTER, not '%s'", optarg);
            break;
        case 'd':
        case O_DETACH: ok = run || up; *detach = true; break;
        case O_BACKGROUND: o->background = o->quiet = true; break;
        case O_NO_MOUSE: o->no_mouse = true; break;
        case O_METRICS: {
            struct sockaddr_storage sa;
            if (metrics_parse_addr(optarg, &sa, lerr, sizeof lerr) != 0)
                return usage_error("%s", lerr);
            o->metrics = optarg;
            break;
        }
        case O_METRICS_TEXTFILE:
            if (!*optarg)
                return usage_error("--metrics-textfile takes a file path");
            o->metrics_textfile = optarg;
            break;
        case O_HOST:
            ok = monit;
            if (!ok)
                break;
            if (monit_nhosts == FLEET_HOSTS_MAX)
                return usage_error("at most %d hosts", FLEET_HOSTS_MAX);
            if (sshlink_parse(optarg, &monit_hosts[monit_nhosts], lerr, sizeof lerr) != 0)
                return usage_error("%s", lerr);
            monit_nhosts++;
            break;
        case O_HOSTS_FILE: {
            ok = monit;
            char ferr[600];
            if (ok && fleet_hosts_file(optarg, monit_hosts, &monit_nhosts, ferr, sizeof ferr) != 0) {
                fprintf(stderr, "drover: %s\n", ferr);
                return 2;
            }
            break;
        }
        case O_NO_LOCAL: ok = monit; monit_no_local = true; break;
        case O_REMOTE_CMD:
            ok = monit;
            if (ok && !*optarg)
                return usage_error("--remote-cmd takes a command");
            monit_remote = optarg;
            break;
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
        .reload_mode = -1,
    };
}

/* ---- the hub subcommands ----------------------------------------------------- */

/* Fills ctl with the namespace's ctl.sock path, creating the directory. */
static int ns_ctl_path(const hub_options *o, char *ctl, size_t cap)
{
    char err[512];
    if (paths_ctl(o->socket_dir, o->ns, true, ctl, cap, err, sizeof err) != 0) {
        fprintf(stderr, "drover: %s\n", err);
        return -1;
    }
    return 0;
}

/* The "-L NAME --socket-dir DIR" that reaches o's hub, for hints ("" for the defaults). */
static void ns_args(const hub_options *o, char *out, size_t cap)
{
    int n = 0;
    out[0] = '\0';
    if (strcmp(o->ns, "default") != 0)
        n = snprintf(out, cap, " -L %s", o->ns);
    if (o->socket_dir && n >= 0 && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, " --socket-dir %s", o->socket_dir);
}

/*
 * The console half of `run`, `attach` and `monit`: starts this command as a
 * background hub (unless one already answers and may be reused) and opens
 * the console on it. Returns the exit status.
 */
static int hub_and_console(const hub_options *o, int argc, char **argv, bool reuse, console_quit q)
{
    char ctl[PATHS_MAX + 16], hint[PATHS_MAX + 64];
    if (ns_ctl_path(o, ctl, sizeof ctl) != 0)
        return 1;
    if (launch_ctl_alive(ctl)) {
        if (!reuse) {
            ns_args(o, hint, sizeof hint);
            fprintf(stderr, "drover: another hub is running in namespace '%s'; use -L NAME for a second "
                    "one, or 'drover monit%s' to see it\n", o->ns, hint);
            return 1;
        }
        q = CONSOLE_QUIT_LEAVE;   /* not ours: leave it running */
    } else {
        int rc = launch_background_hub(argc, argv, ctl);
        if (rc)
            return rc;
    }
    console_options co = {.ctl_path = ctl, .on_quit = q, .no_mouse = o->no_mouse};
    return console_run(&co);
}

/*
 * monit or up as a client (of a running hub, or of hosts) serves no
 * metrics: the hub does. --metrics or --metrics-textfile there is refused
 * (exit 2), not silently ignored. where says whose hub; returns -1 when
 * neither was given.
 */
static int client_refuse_metrics(const hub_options *o, const char *where)
{
    if (!o->metrics && !o->metrics_textfile)
        return -1;
    return usage_error("%s belongs to the hub: %s; give it to that hub (run, up, attach, or metrics = "
                       "in a file's [hub])", o->metrics ? "--metrics" : "--metrics-textfile", where);
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
    if (o.background)
        return hub_run(&o);
    if (monit_nhosts || monit_no_local || monit_remote) {
        /* other hosts: the console on one of them, the console merging several
         * (the local hub too unless --no-local), or the merged headless stream */
        if (!monit_nhosts)
            return usage_error("--no-local and --remote-cmd go with --host or --hosts-file");
        if ((rc = client_refuse_metrics(&o, "with --host, monit is only a client of each host's hub")) >= 0)
            return rc;
        if (!headless && !launch_is_terminal()) {
            fputs("drover: the console needs a terminal; use 'drover monit --headless' for a stream\n", stderr);
            return 2;
        }
        if (!headless && (monit_nhosts > 1 || !monit_no_local)) {
            char ctl[PATHS_MAX + 16], title[160];
            if (!monit_no_local && ns_ctl_path(&o, ctl, sizeof ctl) != 0)
                return 1;
            size_t n = monit_nhosts + !monit_no_local;
            snprintf(title, sizeof title, "drover \u2014 %zu hosts (%s)", n, o.ns);
            console_options co = {.ctl_path = monit_no_local ? NULL : ctl, .host_ns = o.ns,
                                  .host_socket_dir = o.socket_dir, .host_remote = monit_remote,
                                  .fleet_hosts = monit_hosts, .fleet_nhosts = monit_nhosts,
                                  .fleet_no_local = monit_no_local, .on_quit = CONSOLE_QUIT_LEAVE,
                                  .title = title, .no_mouse = o.no_mouse};
            return console_run(&co);
        }
        if (!headless) {
            char title[SSHLINK_SPEC_MAX + 80];
            snprintf(title, sizeof title, "drover — %s (%s)", monit_hosts[0].spec, o.ns);
            console_options co = {.ctl_path = monit_hosts[0].spec, .host = &monit_hosts[0], .host_ns = o.ns,
                                  .host_socket_dir = o.socket_dir, .host_remote = monit_remote,
                                  .on_quit = CONSOLE_QUIT_LEAVE, .title = title, .no_mouse = o.no_mouse};
            return console_run(&co);
        }
        if (o.format == HEADLESS_PROM)
            return usage_error("--host streams NDJSON only (a \"host\" key on every line), not --format prom");
        char ctl[PATHS_MAX + 16];
        if (!monit_no_local && ns_ctl_path(&o, ctl, sizeof ctl) != 0)
            return 1;
        fleet_options fo = {.ns = o.ns, .socket_dir = o.socket_dir, .remote = monit_remote,
                            .local_ctl = monit_no_local ? NULL : ctl, .hosts = monit_hosts,
                            .nhosts = monit_nhosts, .count = o.count};
        return fleet_stream(&fo);
    }
    char ctl[PATHS_MAX + 16], where[200];
    if (ns_ctl_path(&o, ctl, sizeof ctl) != 0)
        return 1;
    bool running = launch_ctl_alive(ctl);
    snprintf(where, sizeof where, "a hub runs in namespace '%s', and monit beside it is only its client", o.ns);
    if (running && (rc = client_refuse_metrics(&o, where)) >= 0)
        return rc;
    if (headless) {
        /* next to a running hub: its stream, as a client; else a hub of our own */
        if (running)
            return cli_stream(ctl, o.format == HEADLESS_PROM ? CTL_FORMAT_PROM : CTL_FORMAT_NDJSON, o.count);
        return hub_run(&o);
    }
    if (!launch_is_terminal()) {
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
    if (run_app_used) {
        char err[1200];
        int crc = config_app_complete(&run_app, o.argv, err, sizeof err);
        if (crc != 0) {
            config_app_free(&run_app);
            fprintf(stderr, "drover: %s\n", err);
            return 1;
        }
        o.run_app = &run_app;
        rc = run_hub_or_console(&o, argc, argv, headless, detach);
        config_app_free(&run_app);
        return rc;
    }
    return run_hub_or_console(&o, argc, argv, headless, detach);
}

/* The rest of `drover run` once its options are parsed: the hub here, or in the background. */
static int run_hub_or_console(const hub_options *op, int argc, char **argv, bool headless, bool detach)
{
    hub_options o = *op;
    int rc;
    if (o.background || headless || (!detach && !launch_is_terminal()))
        return hub_run(&o);

    if (!detach)   /* the hub runs apart, in its own session */
        return hub_and_console(&o, argc, argv, false, CONSOLE_QUIT_ASK);
    char ctl[PATHS_MAX + 16], hint[PATHS_MAX + 64];
    if (ns_ctl_path(&o, ctl, sizeof ctl) != 0)
        return 1;
    ns_args(&o, hint, sizeof hint);
    if (launch_ctl_alive(ctl)) {
        fprintf(stderr, "drover: another hub is running in namespace '%s'; use -L NAME for a second one, "
                "or 'drover monit%s' to see it\n", o.ns, hint);
        return 1;
    }
    rc = launch_background_hub(argc, argv, ctl);
    if (rc == 0)
        printf("drover: %s runs in the background (namespace %s); 'drover monit%s' shows it, "
               "'drover stop%s' ends it\n", o.app, o.ns, hint, hint);
    return rc;
}

/* drover up [-f FILE] [-d] [--headless] [output options] */
static int cmd_up(int argc, char **argv)
{
    hub_options o = default_options(HUB_RUN);
    bool headless = false, detach = false;
    o.ns = NULL;          /* -L wins over the file's namespace */
    o.interval_ms = 0;    /* --interval wins over the file's */
    int rc = parse_options("up", argc, argv, &o, &headless, &detach);
    if (rc >= 0)
        return rc;
    if (optind < argc)
        return usage_error("unexpected argument '%s' for up", argv[optind]);
    /* The whole file is checked here first: a bad one changes nothing. */
    config cfg;
    char err[1200], file[4096];
    if (config_load(o.config_file ? o.config_file : CONFIG_DEFAULT_FILE, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "drover: %s\n", err);
        return 1;
    }
    snprintf(file, sizeof file, "%s", cfg.file);
    o.config_file = file;
    if (up_check) {
        printf("%s: ok, %zu apps:", file, cfg.napps);
        for (size_t i = 0; i < cfg.napps; i++)
            printf(" %s", cfg.apps[i].name);
        putchar('\n');
        config_free(&cfg);
        return 0;
    }
    char ns[80];
    snprintf(ns, sizeof ns, "%s", cfg.ns);
    if (!o.ns)
        o.ns = ns;
    if (!o.interval_ms)
        o.interval_ms = cfg.interval_ms;
    bool cli_metrics = o.metrics || o.metrics_textfile;   /* given here, not by the file */
    static char metrics_addr[128];   /* the file's [hub] metrics; --metrics wins */
    if (!o.metrics && cfg.metrics && strlen(cfg.metrics) < sizeof metrics_addr) {
        snprintf(metrics_addr, sizeof metrics_addr, "%s", cfg.metrics);
        o.metrics = metrics_addr;
    }
    char first[CTL_APP_MAX];
    snprintf(first, sizeof first, "%s", cfg.apps[0].name);
    o.app = first;        /* for signals that name one app (TTIN/TTOU) */
    size_t napps = cfg.napps;
    config_free(&cfg);

    if (o.background)
        return hub_run(&o);
    char ctl[PATHS_MAX + 16], hint[PATHS_MAX + 64];
    if (ns_ctl_path(&o, ctl, sizeof ctl) != 0)
        return 1;
    if (launch_ctl_alive(ctl)) {
        snprintf(hint, sizeof hint, "a hub runs in namespace '%s', and up only applies the file to it", o.ns);
        if (cli_metrics && (rc = client_refuse_metrics(&o, hint)) >= 0)
            return rc;   /* nothing applied */
        return cli_apply(o.ns, o.socket_dir, file);
    }
    if (headless || (!detach && !launch_is_terminal()))
        return hub_run(&o);
    if (!detach)
        return hub_and_console(&o, argc, argv, false, CONSOLE_QUIT_ASK);
    ns_args(&o, hint, sizeof hint);
    rc = launch_background_hub(argc, argv, ctl);
    if (rc == 0)
        printf("drover: %zu apps from %s run in the background (namespace %s); 'drover monit%s' shows them, "
               "'drover up%s' applies the file again, 'drover stop%s' ends them\n", napps, file, o.ns, hint, hint, hint);
    return rc;
}

/* drover startup [-f FILE] [-L NAME] [--socket-dir DIR] [--user] [--install [--force] [--dir DIR]] */
static int cmd_startup(int argc, char **argv)
{
    enum { S_USER = 300, S_INSTALL, S_FORCE, S_DIR };
    static const struct option opts[] = {
        {"help", no_argument, NULL, O_HELP}, {"socket-dir", required_argument, NULL, O_SOCKDIR},
        {"user", no_argument, NULL, S_USER}, {"install", no_argument, NULL, S_INSTALL},
        {"force", no_argument, NULL, S_FORCE}, {"dir", required_argument, NULL, S_DIR}, {0, 0, 0, 0},
    };
    startup_options so = {0};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:L:", opts, NULL)) != -1) {
        switch (c) {
        case 'f': so.file = optarg; break;
        case 'L':
            if (!paths_valid_name(optarg))
                return usage_error("invalid namespace name '%s': use 1-64 of A-Z a-z 0-9 _ . -", optarg);
            so.ns = optarg;
            break;
        case O_SOCKDIR:
            if (optarg[0] != '/')
                return usage_error("--socket-dir for a unit must be an absolute path, not '%s'", optarg);
            so.socket_dir = optarg;
            break;
        case S_USER: so.user = true; break;
        case S_INSTALL: so.install = true; break;
        case S_FORCE: so.force = true; break;
        case S_DIR:
            if (!*optarg)
                return usage_error("--dir takes a directory");
            so.dir = optarg;
            break;
        case O_HELP: usage_entry(current_entry); return 0;
        case ':': return usage_error("option %s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option '%s' for startup", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s' for startup", argv[optind]);
    if ((so.force || so.dir) && !so.install)
        return usage_error("%s goes with --install", so.force ? "--force" : "--dir");
    return startup_run(&so);
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
    /* 1 too: in a container the master is PID 1 of its namespace */
    if (!cli_long(argv[optind], 1, INT_MAX, &pid))
        return usage_error("attach takes a pid, not '%s'", argv[optind]);
    if (optind + 1 < argc)
        return usage_error("unexpected argument '%s' for attach", argv[optind + 1]);
    o.master = (pid_t)pid;
    if (o.background || headless || !launch_is_terminal())
        return hub_run(&o);
    /* as a run console: q asks whether to stop the hub (the master is never stopped) */
    return hub_and_console(&o, argc, argv, false, CONSOLE_QUIT_ASK);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("missing command");
    const char *cmd = argv[1];
    if (strcmp(cmd, UPGRADE_CHECK_CMD) == 0)   /* internal: a running hub checks this binary */
        return upgrade_check_main(argc - 1, argv + 1);
    /* The command line as given, before getopt permutes it: what an upgrade runs again. */
    static char *self[256];
    if ((size_t)argc < sizeof self / sizeof self[0]) {
        memcpy(self, argv, (size_t)argc * sizeof *argv);
        self[argc] = NULL;
        hub_set_argv(self);
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage_print();
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("drover %s\n", DROVER_VERSION);
        return 0;
    }
    for (size_t i = 0; i < HUB_ENTRIES; i++)
        if (strcmp(cmd, hub_entries[i].name) == 0) {
            current_entry = &hub_entries[i];
            return hub_entries[i].main(argc - 1, argv + 1);
        }
    for (size_t i = 0; i < TOOL_ENTRIES; i++)
        if (strcmp(cmd, tool_entries[i].name) == 0)
            return tool_entries[i].main(argc - 1, argv + 1);
    const ctl_command *ce = ctl_command_find(cmd);
    if (ce && (ce->cli || ce->cmd == CTL_LS))
        return cli_main(ce, argc - 1, argv + 1);
    return usage_error("unknown command '%s'", cmd);
}
