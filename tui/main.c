/*
 * main.c — the drover command line: parses a subcommand and its options and
 * hands over to the hub (or, later, the console).
 */
#include "hub.h"
#include "paths.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef DROVER_VERSION
#define DROVER_VERSION "dev"
#endif

static const char usage_text[] =
    "usage: drover COMMAND [OPTIONS]\n"
    "\n"
    "drover supervises and monitors clustered apps. Workers linked with the\n"
    "drover agent (libdrover) report to a hub over a Unix datagram socket; the\n"
    "hub adds /proc figures and prints them.\n"
    "\n"
    "commands:\n"
    "  monit --headless    stream every reporting process's figures to stdout\n"
    "\n"
    "monit options:\n"
    "  --headless          print to stdout instead of a console (required for now:\n"
    "                      the console is not built yet)\n"
    "  --interval MS       print every MS milliseconds (default 1000, 50..3600000)\n"
    "  --count N           exit after N intervals (default: run until SIGINT/SIGTERM)\n"
    "  --format FMT        ndjson (default) or prom (Prometheus text, one exposition\n"
    "                      per interval, each followed by an empty line)\n"
    "  -L NAME             hub namespace (default \"default\"), as tmux -L\n"
    "  --socket-dir DIR    put agent.sock in DIR instead of\n"
    "                      $XDG_RUNTIME_DIR/drover/NAME or /tmp/drover-UID/NAME\n"
    "\n"
    "  drover --help       this text\n"
    "  drover --version    the version\n"
    "\n"
    "Workers find the hub through DROVER_SOCKET (else the same default path).\n"
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

/* drover monit [--headless] [--interval MS] [--count N] [--format F] [-L NAME] [--socket-dir DIR] */
static int cmd_monit(int argc, char **argv)
{
    enum { O_HEADLESS = 256, O_INTERVAL, O_COUNT, O_FORMAT, O_SOCKDIR, O_HELP };
    static const struct option opts[] = {
        {"headless", no_argument, NULL, O_HEADLESS},
        {"interval", required_argument, NULL, O_INTERVAL},
        {"count", required_argument, NULL, O_COUNT},
        {"format", required_argument, NULL, O_FORMAT},
        {"socket-dir", required_argument, NULL, O_SOCKDIR},
        {"help", no_argument, NULL, O_HELP},
        {0, 0, 0, 0},
    };
    hub_options o = {.ns = "default", .interval_ms = 1000, .format = HEADLESS_NDJSON};
    bool headless = false;
    long v;
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+L:", opts, NULL)) != -1) {
        switch (c) {
        case O_HEADLESS: headless = true; break;
        case O_INTERVAL:
            if (!parse_long(optarg, 50, 3600000, &v))
                return usage_error("--interval takes milliseconds from 50 to 3600000, not '%s'", optarg);
            o.interval_ms = (unsigned)v;
            break;
        case O_COUNT:
            if (!parse_long(optarg, 1, LONG_MAX, &v))
                return usage_error("--count takes a positive number, not '%s'", optarg);
            o.count = v;
            break;
        case O_FORMAT:
            if (strcmp(optarg, "ndjson") == 0)
                o.format = HEADLESS_NDJSON;
            else if (strcmp(optarg, "prom") == 0)
                o.format = HEADLESS_PROM;
            else
                return usage_error("--format is ndjson or prom, not '%s'", optarg);
            break;
        case 'L':
            if (!paths_valid_name(optarg))
                return usage_error("invalid namespace name '%s': use 1-64 of A-Z a-z 0-9 _ . -", optarg);
            o.ns = optarg;
            break;
        case O_SOCKDIR: o.socket_dir = optarg; break;
        case O_HELP: fputs(usage_text, stdout); return 0;
        case ':': return usage_error("option %s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option '%s' for monit", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s' for monit", argv[optind]);
    if (!headless) {
        fputs("drover: the interactive console is not built yet; use 'drover monit --headless'\n", stderr);
        return 2;
    }
    return hub_run_headless(&o);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("%s", "missing command");
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
    return usage_error("unknown command '%s'", cmd);
}
