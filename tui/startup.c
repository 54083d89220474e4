/*
 * startup.c — `drover startup` (see startup.h).
 */
#include "tui/startup.h"
#include "hub/config.h"
#include "hub/unit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The directory --install writes to: --dir, else systemd's for the system or the user. */
static int startup_dir(const startup_options *o, char *out, size_t cap)
{
    if (o->dir)
        return snprintf(out, cap, "%s", o->dir) < (int)cap ? 0 : -1;
    if (!o->user)
        return snprintf(out, cap, "/etc/systemd/system") < (int)cap ? 0 : -1;
    /* systemd --user reads $XDG_CONFIG_HOME/systemd/user (~/.config by default) */
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
    if (xdg && xdg[0] == '/')
        return snprintf(out, cap, "%s/systemd/user", xdg) < (int)cap ? 0 : -1;
    if (home && home[0] == '/')
        return snprintf(out, cap, "%s/.config/systemd/user", home) < (int)cap ? 0 : -1;
    return -1;
}

/* This binary's absolute path, as ExecStart= runs it. Returns 0, or -1 with err. */
static int startup_exe(char *out, size_t cap, char *err, size_t errcap)
{
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    if (n <= 0 || (size_t)n >= cap - 1) {
        snprintf(err, errcap, "cannot find this drover binary's path (/proc/self/exe)");
        return -1;
    }
    out[n] = '\0';
    if (access(out, X_OK) != 0) {   /* "/usr/bin/drover (deleted)": replaced under us */
        snprintf(err, errcap, "this drover binary (%.300s) is no longer on disk: run the installed one", out);
        return -1;
    }
    return 0;
}

/* Installs the units into dir: all or none. Returns the exit status. */
static int startup_install(const startup_options *o, const unit_files *u, const char *dir)
{
    char fname[2][128], err[4600];
    const char *text[2] = {u->service, u->socket};
    unit_state st[2] = {UNIT_ABSENT, UNIT_ABSENT};
    snprintf(fname[0], sizeof fname[0], "%s.service", u->name);
    snprintf(fname[1], sizeof fname[1], "%s.socket", u->name);
    /* Check both first: a unit that cannot be replaced leaves the other unwritten too. */
    for (int i = 0; i < 2; i++) {
        const char *why;
        if (unit_compare(dir, fname[i], text[i] ? text[i] : "", &st[i], &why, err, sizeof err) != 0) {
            fprintf(stderr, "drover: %s\n", err);
            return 1;
        }
        if (text[i] && st[i] == UNIT_DIFFERENT && !o->force) {
            fprintf(stderr, "drover: %s/%s exists and is %s; nothing was written ('--force' replaces it)\n", dir,
                    fname[i], why);
            return 1;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (!text[i])
            continue;
        if (st[i] == UNIT_SAME) {
            printf("unchanged %s/%s\n", dir, fname[i]);
            continue;
        }
        if (unit_write(dir, fname[i], text[i], err, sizeof err) != 0) {
            fprintf(stderr, "drover: %s%s\n", err, !o->user && !o->dir ? " (run as root, or use --user)" : "");
            return 1;
        }
        printf("wrote %s/%s\n", dir, fname[i]);
    }
    const char *sc = o->user ? "systemctl --user" : "systemctl";
    if (!text[1] && st[1] != UNIT_ABSENT)
        printf("note: %s/%s is from an earlier 'drover startup': no app listens on TCP now; "
               "'%s disable --now %s' and remove it\n", dir, fname[1], sc, fname[1]);
    printf("next: %s daemon-reload && %s enable --now %s%s%s\n", sc, sc, text[1] ? fname[1] : "",
           text[1] ? " " : "", fname[0]);
    return 0;
}

int startup_run(const startup_options *o)
{
    config cfg;
    char err[1200], exe[4096], dir[4096];
    if (o->install && startup_dir(o, dir, sizeof dir) != 0) {
        fprintf(stderr, "drover: cannot tell where systemd --user reads units: set HOME or XDG_CONFIG_HOME, or "
                "give --dir DIR\n");
        return 1;
    }
    if (startup_exe(exe, sizeof exe, err, sizeof err) != 0) {
        fprintf(stderr, "drover: %s\n", err);
        return 1;
    }
    if (config_load(o->file ? o->file : CONFIG_DEFAULT_FILE, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "drover: %s\n", err);
        return 1;
    }
    unit_options uo = {.exe = exe, .ns = o->ns ? o->ns : cfg.ns, .socket_dir = o->socket_dir, .user = o->user};
    unit_files u;
    int rc = unit_build(&cfg, &uo, &u, err, sizeof err);
    config_free(&cfg);
    if (rc != 0) {
        fprintf(stderr, "drover: %s\n", err);
        return 1;
    }
    if (o->install) {
        rc = startup_install(o, &u, dir);
    } else {
        fputs(u.service, stdout);
        if (u.socket)
            printf("\n%s", u.socket);
        rc = fflush(stdout) == 0 ? 0 : 1;
    }
    unit_files_free(&u);
    return rc;
}
