/*
 * control.h — the control protocol (PROTOCOL.md §4) as code, shared by the
 * hub (hub/control.c, hub/commands.c) and every view (the CLI, the console).
 *
 * One table of commands: name, what target it takes, its arguments, which
 * kinds of hub accept it, its usage and help line and the console keys bound
 * to it. One target parser (APP, APP:ID). One version constant. One line
 * framing. Typed events, sent as structured JSON that views match on fields,
 * never on text.
 */
#ifndef DROVER_PROTO_CONTROL_H
#define DROVER_PROTO_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CTL_VERSION       2
#define CTL_LINE_MAX      (1024 * 1024)   /* longest line either end accepts */
#define CTL_APP_MAX       64              /* app names: 1-63 bytes (PROTOCOL.md §4.2) */
#define CTL_ID_MAX        1000000         /* largest worker id a target may name */
#define CTL_SCALE_MAX     1024            /* most workers an app may run */
#define CTL_LINES_MAX     1000000         /* most log lines one request may ask for */
#define CTL_FILE_MAX      4096            /* a "file" argument: shorter than this */

/* ---- commands ------------------------------------------------------------ */

typedef enum {
    CTL_LS, CTL_SUBSCRIBE, CTL_UNSUBSCRIBE, CTL_LOGS, CTL_STREAM,
    CTL_KILL, CTL_RESTART, CTL_RELOAD, CTL_STOP, CTL_SCALE,
    CTL_APPLY, CTL_DESCRIBE, CTL_UPGRADE,
    CTL_CMD_N
} ctl_cmd;

typedef enum {
    CTL_TARGET_NONE,       /* takes no target */
    CTL_TARGET_OPTIONAL,   /* APP or APP:ID, or none */
    CTL_TARGET_REQUIRED,   /* APP or APP:ID */
    CTL_TARGET_APP,        /* APP only */
} ctl_target_kind;

/* Arguments a request may carry besides the target (bits). */
enum {
    CTL_ARG_LINES  = 1 << 0,   /* "lines": integer 0..CTL_LINES_MAX */
    CTL_ARG_FOLLOW = 1 << 1,   /* "follow": boolean */
    CTL_ARG_N      = 1 << 2,   /* "n": integer 0..CTL_SCALE_MAX */
    CTL_ARG_DELTA  = 1 << 3,   /* "delta": integer -CTL_SCALE_MAX..CTL_SCALE_MAX */
    CTL_ARG_FORMAT = 1 << 4,   /* "format": "ndjson" or "prom" */
    CTL_ARG_FILE   = 1 << 5,   /* "file": an absolute path, 1..CTL_FILE_MAX-1 bytes, required */
    CTL_ARG_ENV    = 1 << 6,   /* "env": boolean (describe: show environment values) */
    CTL_ARG_LEAN   = 1 << 7,   /* "lean": boolean (subscribe: leave out what repeats, PROTOCOL.md §4.4) */
};

/* Kinds of hub (bits), as named in the hello's "mode". */
enum {
    CTL_HUB_MONIT  = 1 << 0,
    CTL_HUB_RUN    = 1 << 1,
    CTL_HUB_ATTACH = 1 << 2,
    CTL_HUB_ANY    = CTL_HUB_MONIT | CTL_HUB_RUN | CTL_HUB_ATTACH,
};

typedef struct {
    ctl_cmd         cmd;
    const char     *name;      /* protocol "cmd", and the CLI subcommand when cli */
    ctl_target_kind target;
    unsigned        args;      /* CTL_ARG_* */
    unsigned        hubs;      /* CTL_HUB_*: kinds of hub that accept it */
    bool            cli;       /* a `drover NAME` subcommand of its own */
    bool            acts;      /* changes workers (the console confirms or shows its outcome) */
    bool            confirm;   /* the console asks y/n first */
    const char     *usage;     /* "kill TARGET": after "drover " */
    const char     *help;      /* one line */
    const char     *keys;      /* console keys bound to it ("x F9"), "" for none */
} ctl_command;

/* The table, indexed by ctl_cmd. */
extern const ctl_command ctl_commands[CTL_CMD_N];

/* The command named name, or NULL. */
const ctl_command *ctl_command_find(const char *name);

/* The hub-kind bit for a hello's "mode" string; 0 when unknown. */
unsigned ctl_hub_kind(const char *mode);

/* The "mode" string of one hub-kind bit. */
const char *ctl_hub_name(unsigned kind);

/* ---- targets ------------------------------------------------------------- */

typedef struct {
    char app[CTL_APP_MAX];   /* "" = none */
    int  id;                 /* -1 = every worker of app (or the one named by pid) */
    int  pid;                /* > 0: the worker of app whose process is pid (APP:pid:PID) */
} ctl_target;

#define CTL_PID_MAX 4194304  /* the kernel's largest pid_max (PID_MAX_LIMIT on 64-bit) */

/*
 * Parses "APP", "APP:ID" (ID 0..CTL_ID_MAX) or "APP:pid:PID" (PID
 * 1..CTL_PID_MAX: a worker without an id, a process drover did not start)
 * into t. Returns 0, or -1 with "bad target '…': use APP, APP:ID or
 * APP:pid:PID" in err.
 */
int ctl_target_parse(const char *s, ctl_target *t, char *err, size_t errcap);

/*
 * The target naming one worker: "APP:ID" when id >= 0, else "APP:pid:PID"
 * (pid > 0), else "APP". Returns out.
 */
const char *ctl_target_format(const char *app, long long id, long long pid, char *out, size_t cap);

/* ---- app names ------------------------------------------------------------- */

/* The rule for names of apps a hub runs (`run -n`, `attach -n`, derived from
 * a command): they become log file names and labels, and ':' separates a
 * worker id. (Names reporters give themselves are shown, sanitized, as sent.) */
#define CTL_APP_NAME_RULE "1-63 letters, digits, '_', '-' or '.', the first a letter, digit or '_'"

/* True if name follows CTL_APP_NAME_RULE. */
bool ctl_app_name_ok(const char *name);

/*
 * Makes a name that follows the rule from any text (a command's base name):
 * other bytes become '_', leading '.' and '-' are dropped, it is cut to 63
 * bytes; "app" when nothing is left. out holds at least CTL_APP_MAX bytes.
 */
void ctl_app_name_make(const char *from, char *out, size_t cap);

/* ---- requests ------------------------------------------------------------ */

/* The headless output formats a `stream` request may ask for. */
typedef enum { CTL_FORMAT_NDJSON, CTL_FORMAT_PROM } ctl_format;

/* "ndjson", "prom". */
const char *ctl_format_name(ctl_format f);

/* The format named name; returns 0, or -1 when there is none. */
int ctl_format_parse(const char *name, ctl_format *out);

typedef struct {
    const ctl_command *cmd;
    ctl_target target;     /* app "" when the request names none */
    long   lines;          /* CTL_ARG_LINES, default 100 */
    bool   follow;
    bool   has_n, has_delta;
    long   n, delta;
    ctl_format format;     /* CTL_ARG_FORMAT, default ndjson */
    char   file[CTL_FILE_MAX]; /* CTL_ARG_FILE */
    bool   env;            /* CTL_ARG_ENV */
    bool   lean;           /* CTL_ARG_LEAN */
} ctl_request;

/*
 * Validates a request object against the table: a known "cmd", a target of
 * the kind the command takes, every argument of the right type and within
 * its range (checked as 64-bit integers before any narrowing), no argument
 * the command does not take. Returns 0, or -1 with one line in err.
 */
int ctl_request_parse(const json_t *req, ctl_request *out, char *err, size_t errcap);

/*
 * Builds the request object for r (what the CLI and the console send; the
 * same command from a key and from a subcommand is the same object). New
 * reference.
 */
json_t *ctl_request_json(const ctl_request *r);

/* Shorthand: a request for cmd with target (NULL: none). */
ctl_request ctl_request_make(ctl_cmd cmd, const char *target);

/* ---- line framing --------------------------------------------------------- */

/* Splits a byte stream into lines of at most max bytes (both ends use it). */
typedef struct {
    char  *buf;
    size_t len, cap, max;
    size_t used;    /* after ctl_framer_feed: how many of its bytes it consumed */
} ctl_framer;

/* Called with each complete line (NUL-terminated, without its '\n'). Return false to stop. */
typedef bool (*ctl_line_fn)(void *ctx, char *line, size_t len);

/*
 * Feeds n bytes. Empty lines are skipped. Returns 0, 1 when fn asked to stop
 * (the bytes after that line, from f->used on, are left to the caller), or
 * -1 when a line is longer than max (the framer is then unusable) or memory
 * ran out.
 */
int ctl_framer_feed(ctl_framer *f, const char *data, size_t n, ctl_line_fn fn, void *ctx);

/* Frees the buffer; the framer can be fed again afterwards. */
void ctl_framer_free(ctl_framer *f);

/*
 * Serializes obj (released) as one line ending in '\n' into a malloc'd
 * buffer; *len gets its length. NULL when obj is NULL or out of memory.
 */
char *ctl_line(json_t *obj, size_t *len);

/* ---- events --------------------------------------------------------------- */

typedef enum {
    CTL_EV_RELOAD,     /* a rolling reload of an app: started, progress, done, aborted */
    CTL_EV_REPLACE,    /* one worker replaced by a ready one: started, done, aborted */
    CTL_EV_EXIT,       /* a worker ended: phase none; reason says how and what follows */
    CTL_EV_KILL,       /* a process did not stop in time and was SIGKILLed */
    CTL_EV_SCALE,      /* an app's number of workers changed */
    CTL_EV_READY,      /* a worker is (or is not, reason) ready */
    CTL_EV_ERROR,      /* something failed: reason */
    CTL_EV_APPLY,      /* a config file applied: one per app changed (app set), then the summary */
    CTL_EV_UPGRADE,    /* drover upgrade: started (checked), done (in the new image), aborted (refused, rolled back) */
    CTL_EV_N
} ctl_event_kind;

typedef enum {
    CTL_PHASE_NONE, CTL_PHASE_STARTED, CTL_PHASE_PROGRESS, CTL_PHASE_DONE, CTL_PHASE_ABORTED,
    CTL_PHASE_N
} ctl_phase;

typedef struct {
    ctl_event_kind kind;
    ctl_phase      phase;
    const char    *app;      /* NULL: none */
    int            id;       /* -1: none */
    long           pid;      /* 0: none */
    int            done;     /* reload: workers replaced so far; -1: none */
    int            total;    /* reload: workers to replace; -1: none */
    const char    *reason;   /* why (aborted, exit, error); NULL: none */
    const char    *text;     /* the human-readable line */
} ctl_event;

/* An event with no optional field set. */
ctl_event ctl_event_make(ctl_event_kind kind, ctl_phase phase, const char *app, int id, long pid);

/* {"type":"event","event":KIND,"phase":…,"app":…,…,"text":…}. New reference. */
json_t *ctl_event_json(const ctl_event *e);

/*
 * Reads an event message into e (strings borrowed from msg). Returns 0, or
 * -1 when msg is not an event this version knows.
 */
int ctl_event_parse(const json_t *msg, ctl_event *e);

/* The wire name of an event kind ("reload", "exit"…). */
const char *ctl_event_kind_name(ctl_event_kind kind);

/* True when e ends a reload (phase done or aborted). */
bool ctl_event_ends_reload(const ctl_event *e);

#endif
