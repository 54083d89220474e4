/*
 * startup.h — `drover startup`: prints, or installs, the systemd units
 * (hub/unit.h) that run a config file's apps under one hub at boot. A
 * local command: it talks to no hub.
 */
#ifndef DROVER_TUI_STARTUP_H
#define DROVER_TUI_STARTUP_H

#include <stdbool.h>

typedef struct {
    const char *file;         /* -f, or NULL for ./drover.conf */
    const char *ns;           /* -L, or NULL for the file's [hub] namespace */
    const char *socket_dir;   /* --socket-dir for the hub, or NULL */
    bool        user;         /* --user: a systemctl --user unit */
    bool        install;      /* --install: write the units, not print them */
    bool        force;        /* --force: replace a different unit already there */
    const char *dir;          /* --dir: install here instead of the systemd directory */
} startup_options;

/*
 * Loads the file (config_load: a bad file is refused with FILE:LINE), builds
 * the units, and prints them on stdout or, with install, writes those that
 * are missing or differ (all or none: a different file already there, without
 * force, refuses both) and prints what it wrote and the systemctl line to run
 * next. Returns the exit status: 0, or 1 with one line on stderr.
 */
int startup_run(const startup_options *o);

#endif
