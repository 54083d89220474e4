/*
 * unit.h — `drover startup`: the systemd units that run a config file's
 * apps under one hub, generated from the file as config_load read it, and
 * written into a unit directory without clobbering what is there.
 *
 *   drover-NS.service  Type=notify hub (`drover up --headless -f FILE -L NS`),
 *                      HUP to reload (the hub reapplies its file), timeouts
 *                      from the apps' kill_timeout and ready_timeout
 *   drover-NS.socket   only when an app listens on TCP: one ListenStream= per
 *                      such app, the address the hub would bind itself; the
 *                      hub takes the inherited socket by that address
 *                      (hub/listen.c), so the file stays the one place the
 *                      address is written
 *
 * Values are quoted as systemd.syntax(7) and systemd.service(5) "Command
 * lines" read them (double quotes, C escapes, $$ and %% for a literal $ and
 * %); a path with a control character or bytes that are not UTF-8 is
 * refused, never escaped (nothing from the file can start a line of its
 * own), and so is a drover binary whose path holds " ' or \ (systemd
 * itself refuses them in an executable's name). Other values in the units
 * are ours (numeric addresses) or follow the name rules (namespace, apps).
 */
#ifndef DROVER_HUB_UNIT_H
#define DROVER_HUB_UNIT_H

#include <stdbool.h>
#include <stddef.h>

#include "hub/config.h"

#define UNIT_WATCHDOG_SEC     30    /* WatchdogSec=: the hub's loop pings every third of it */
#define UNIT_STOP_MARGIN_SEC  5     /* TimeoutStopSec= = the longest kill_timeout + this */
#define UNIT_START_MARGIN_SEC 30    /* TimeoutStartSec= = the longest ready_timeout + this… */
#define UNIT_START_MIN_SEC    90    /* …and never below systemd's default */

typedef struct {
    const char *exe;          /* absolute path of the drover binary (ExecStart=) */
    const char *ns;           /* the hub's namespace: units drover-NS.* and -L NS */
    const char *socket_dir;   /* --socket-dir for the hub, or NULL */
    bool        user;         /* a user unit (systemctl --user): default.target, no network.target */
} unit_options;

typedef struct {
    char  name[96];           /* "drover-NS" */
    char *service;            /* the .service unit's text */
    char *socket;             /* the .socket unit's text; NULL when no app listens on TCP */
    int   nsockets;           /* ListenStream= lines in it */
} unit_files;

/*
 * Builds the units for cfg's apps (cfg->file is the absolute path written in
 * ExecStart=). Returns 0 with *out filled (unit_files_free), or -1 with one
 * line in err: a path that cannot be written in a unit, an app listening on
 * fd:N (its address is not the file's to know), a TCP address that does not
 * resolve, is port 0 or is another app's, out of memory.
 */
int unit_build(const config *cfg, const unit_options *o, unit_files *out, char *err, size_t errcap);

/* Frees what unit_build allocated; u may be zeroed. */
void unit_files_free(unit_files *u);

/*
 * Writes s as one word of a systemd command line into out (NUL-terminated):
 * as is when every byte is one of A-Z a-z 0-9 / _ . , : + = @ -, else in
 * double quotes with \ and " escaped and % doubled (no specifier), and $
 * doubled (no variable) unless exe: the executable's name (the first word)
 * is never searched for variables, and systemd refuses " ' and \ in it, so
 * they are refused here too. Returns its length, or -1 when s is empty,
 * holds a control character or is not UTF-8 (or, for exe, " ' \), or out
 * is too small.
 */
int unit_quote(const char *s, bool exe, char *out, size_t cap);

/* What unit_compare found at a unit's path. */
typedef enum {
    UNIT_ABSENT,      /* no file: it will be created */
    UNIT_SAME,        /* a regular file with exactly this text: nothing to do */
    UNIT_DIFFERENT,   /* anything else: another text, a symbolic link, not a regular file */
} unit_state;

/*
 * Compares dir/file with text without following a symbolic link or
 * blocking on a FIFO. Returns 0 with *st (and, for UNIT_DIFFERENT, what is
 * there in why), or -1 with err when it cannot be read.
 */
int unit_compare(const char *dir, const char *file, const char *text, unit_state *st, const char **why, char *err,
                 size_t errcap);

/*
 * Writes text to dir/file (mode 0644) through a new temporary file in dir
 * and rename(2), so the unit is whole or untouched and a link there is
 * replaced, never written through; dir and its parents are created if
 * missing. Returns 0, or -1 with err.
 */
int unit_write(const char *dir, const char *file, const char *text, char *err, size_t errcap);

#endif
