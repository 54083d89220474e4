/*
 * config.h — the config file (`drover up`, `drover.conf`): INI parsed with
 * libinih, every key described once in a table (name, section, type,
 * default, help) that drives the parsing, the validation, the defaults and
 * the help text (`drover up --help`, the README's table).
 *
 * A file is loaded whole or not at all: config_load parses every line,
 * validates every value, reads every env_file, looks up every user and
 * group and resolves every command, and on the first problem returns
 * "FILE:LINE: what is wrong" and no config. What it returns is complete:
 * the hub starts or applies it without further checks that could fail
 * half-way (except what the system may still refuse: a port taken, a fork).
 */
#ifndef DROVER_HUB_CONFIG_H
#define DROVER_HUB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "proto/control.h"

#define CONFIG_DEFAULT_FILE "drover.conf"
#define CONFIG_APPS_MAX     256         /* apps one file may hold */
#define CONFIG_LINE_MAX     65536       /* longest line of a file */
#define CONFIG_ENV_MAX      4096        /* env entries an app may set (env lines + env_file) */

typedef enum { CONFIG_RESTART_ALWAYS, CONFIG_RESTART_ON_FAILURE, CONFIG_RESTART_NEVER } config_restart;
typedef enum { CONFIG_READY_AUTO, CONFIG_READY_NOTIFY, CONFIG_READY_AGENT, CONFIG_READY_NONE } config_ready;
typedef enum { CONFIG_LOG_TEXT, CONFIG_LOG_JSON } config_log_format;
typedef enum { CONFIG_BALANCE_SHARED, CONFIG_BALANCE_REUSEPORT } config_balance;

/* How an app's log files are written: its own log keys, else the [hub]'s. */
typedef struct {
    bool        timestamps;
    bool        json;
    uint64_t    max_size;
    unsigned    keep;
} config_logs;

/* One [app NAME] section, validated. Strings are owned (config_free). */
typedef struct config_app {
    char        name[CTL_APP_MAX];
    int         line;            /* of its [app NAME] header */
    char      **argv;            /* command, split (shell-like quoting, no shell) */
    char        path[4096];      /* argv[0] resolved (PATH, or relative to cwd) */
    int         instances;       /* 1..CTL_SCALE_MAX ("max": online CPUs) */
    char       *listen;          /* [HOST:]PORT or unix:PATH; NULL = none */
    config_balance balance;      /* as written (config_app_balance: with its default) */
    char      **env_lines;       /* "K=V" from env lines, in order */
    size_t      nenv_lines;
    char       *env_file;        /* as resolved; NULL = none */
    char      **file_env;        /* "K=V" read from env_file, in order */
    size_t      nfile_env;
    bool        inherit_env;
    char       *cwd;             /* resolved; default the file's directory */
    char       *user, *group;    /* as written; NULL = not set */
    bool        set_ids;         /* user or group given: uid/gid apply */
    uid_t       uid;
    gid_t       gid;
    gid_t      *groups;          /* the user's supplementary groups (set_ids) */
    size_t      ngroups;
    unsigned    kill_timeout_ms;
    unsigned    ready_timeout_ms;
    config_ready ready;
    uint64_t    max_memory;      /* bytes; 0 = no limit */
    config_restart restart;
    int         stop_signal;
    bool        log_timestamps;  /* these four: the [hub] value unless the app gives its own */
    config_log_format log_format;
    uint64_t    log_max_size;
    unsigned    log_keep;
    bool        not_running;     /* apply: it could not be started (the next apply starts it) */
    uint64_t    seen;            /* bits of the keys given (duplicates, required) */
    int         seen_line[32];   /* line of each key given, by key index */
} config_app;

/* The whole file. */
typedef struct {
    char        file[4096];      /* absolute path of the file loaded */
    char        dir[4096];       /* its directory */
    char       *ns;              /* [hub] namespace; default "default" */
    unsigned    interval_ms;
    char       *log_dir;         /* NULL = the default rule */
    char       *metrics;         /* [hub] metrics: [HOST:]PORT, or NULL */
    bool        log_timestamps;
    config_log_format log_format;
    uint64_t    log_max_size;
    unsigned    log_keep;
    config_app *apps;
    size_t      napps;
    uint64_t    hub_seen;
} config;

/*
 * Loads and validates file (relative to the current directory) into *out.
 * Returns 0, or -1 with "FILE:LINE: what is wrong" (or "FILE: …" when no
 * line is at fault) in err, *out then zeroed.
 */
int config_load(const char *file, config *out, char *err, size_t errcap);

/* Frees what config_load allocated; cfg may be zeroed. */
void config_free(config *cfg);

/*
 * One app outside a file (`drover run`'s options): config_app_init sets
 * every default; config_app_set parses one [app] key through the same table
 * (paths relative to the current directory; "command" is not one: the
 * command is given to config_app_complete); config_app_complete checks and
 * completes the app as config_load does (env_file read, user looked up,
 * argv[0] resolved). Both return 0, or -1 with a message (no FILE:LINE).
 * config_app_free frees what they allocated.
 */
void config_app_init(config_app *a, const char *name);
int config_app_set(config_app *a, const char *key, const char *value, char *err, size_t errcap);
int config_app_complete(config_app *a, char *const *argv, char *err, size_t errcap);
void config_app_free(config_app *a);

/*
 * How app a's listen is spread over its workers: balance if given, else
 * reuseport for a TCP address and shared for unix: and fd: (as `drover
 * run`). An app without listen: SHARED. (A reuseport group of a unix: or
 * fd: address is not made: apply.c shares it and says so.)
 */
config_balance config_app_balance(const config_app *a);

/* App a's log settings in cfg: each of its log keys if given, else [hub]'s. */
config_logs config_app_logs(const config *cfg, const config_app *a);

/* The app named name, or NULL. */
const config_app *config_find(const config *cfg, const char *name);

/*
 * Builds app a's environment before drover's own variables: the hub's own
 * (environ, unless inherit_env = false), then env_file, then env lines; a
 * later entry of a key replaces an earlier one. Returns a NULL-terminated
 * malloc'd array of malloc'd strings (config_env_free), or NULL when out of
 * memory.
 */
char **config_env(const config_app *a);
void config_env_free(char **env);

/*
 * Compares the worker-affecting keys of a and b (everything but instances;
 * env_file by its contents). Writes the names of those that differ, comma
 * separated, into out ("" when none). Returns how many differ.
 */
int config_app_diff(const config_app *a, const config_app *b, char *out, size_t cap);

/*
 * Splits a command with shell-like quoting and no shell: words separated by
 * blanks, '…' literal, "…" with \" \\ \$ \` escapes, a backslash outside
 * quotes takes the next byte literally. Returns a NULL-terminated malloc'd
 * argv (config_argv_free), or NULL with a message in err.
 */
char **config_split_command(const char *s, char *err, size_t errcap);
void config_argv_free(char **argv);

/* Parses "500ms", "5s", "2m" or a bare number of milliseconds; false if invalid. */
bool config_parse_duration(const char *s, uint64_t *ms);

/* Parses "512", "64K", "200M", "1G" (1024-based; optional B); false if invalid or 0. */
bool config_parse_size(const char *s, uint64_t *bytes);

/*
 * Reads a signal: "TERM", "SIGTERM", "ttin" (any standard signal's name, any
 * case) or a number 1..64. Returns the signal, or 0 if invalid.
 */
int config_parse_signal(const char *s);

/* The names of config_ready / config_restart values ("auto", "on-failure"…). */
const char *config_ready_name(config_ready r);
const char *config_restart_name(config_restart r);

/* Prints the key table (section, key, default, help) as the help text. */
void config_print_keys(FILE *f);

/* Prints the key table as a Markdown table (the README's). */
void config_print_keys_md(FILE *f);

#endif
