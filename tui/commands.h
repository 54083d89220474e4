/*
 * commands.h — the commands views send to a hub, as one table shared by the
 * CLI subcommands and the console's keys (tmux's habit): a key and the
 * matching subcommand build the same request.
 */
#ifndef DROVER_TUI_COMMANDS_H
#define DROVER_TUI_COMMANDS_H

#include <jansson.h>
#include <stdbool.h>

typedef enum {
    CMD_ARG_NONE,        /* no target */
    CMD_ARG_TARGET,      /* APP or APP:ID, required */
    CMD_ARG_TARGET_OPT,  /* APP or APP:ID, optional */
    CMD_ARG_TARGET_N,    /* APP and a number of workers */
} command_args;

typedef struct {
    const char  *name;     /* subcommand and protocol "cmd" */
    command_args args;
    const char  *usage;    /* "kill TARGET" */
    const char  *help;     /* one line */
    const char  *keys;     /* console keys bound to it, for the help overlay */
    bool         confirm;  /* the console asks y/n first */
} command_entry;

/* The table, ended by an entry whose name is NULL. */
extern const command_entry commands_table[];

/* The entry for name, or NULL. */
const command_entry *commands_find(const char *name);

/*
 * Builds the request for command c: {"cmd":name,"target":target,"n":n}
 * (target NULL and n < 0 are left out). New reference.
 */
json_t *commands_request(const command_entry *c, const char *target, long n);

/* The same for a relative scale (console + and -): {"cmd":"scale","target":app,"delta":d}. */
json_t *commands_scale_by(const char *app, int delta);

#endif
