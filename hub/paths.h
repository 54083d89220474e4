/*
 * paths.h — where a hub namespace keeps its sockets (PROTOCOL.md §1), and
 * the one mkdir -p.
 */
#ifndef DROVER_HUB_PATHS_H
#define DROVER_HUB_PATHS_H

#include <stdbool.h>
#include <stddef.h>

#define PATHS_MAX 108   /* sun_path size: longer socket paths cannot be bound */

/*
 * Returns true if name can be a namespace: 1-64 bytes of [A-Za-z0-9_.-],
 * not "." or "..".
 */
bool paths_valid_name(const char *name);

/*
 * Resolves the namespace directory into out: socket_dir when non-NULL, else
 * $XDG_RUNTIME_DIR/drover/NAME, else /tmp/drover-UID/NAME. With create, makes
 * missing directories (mode 0700) and checks that the final directory is
 * owned by this user and not accessible to others. Returns 0, or -1 with a
 * one-line, actionable message in err.
 */
int paths_dir(const char *socket_dir, const char *name, bool create,
              char *out, size_t cap, char *err, size_t errcap);

/*
 * The namespace's ctl.sock path (paths_dir, then "ctl.sock") into out.
 * Returns 0, or -1 with a one-line message in err.
 */
int paths_ctl(const char *socket_dir, const char *name, bool create, char *out, size_t cap,
              char *err, size_t errcap);

/*
 * Creates dir and its missing parents with mode 0700; an existing directory
 * is success. Returns 0, or -1 with errno (ENOTDIR when dir is not one).
 */
int paths_mkdirs(const char *dir);

/* Joins dir and file into out; returns 0, or -1 if the result does not fit. */
int paths_join(const char *dir, const char *file, char *out, size_t cap);

#endif
