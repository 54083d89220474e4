/*
 * paths.c — namespace directory resolution and checks.
 */
#include "hub/paths.h"
#include "proto/sockpath.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool paths_valid_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64 || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

int paths_join(const char *dir, const char *file, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", dir, file);
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

int paths_mkdirs(const char *dir)
{
    char tmp[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(tmp, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -1;
        tmp[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}


int paths_dir(const char *socket_dir, const char *name, bool create,
              char *out, size_t cap, char *err, size_t errcap)
{
    char parent[PATHS_MAX * 2];
    int n;

    if (!paths_valid_name(name)) {
        snprintf(err, errcap, "invalid namespace name '%s': use 1-64 of A-Z a-z 0-9 _ . -", name);
        return -1;
    }
    if (socket_dir) {
        n = snprintf(out, cap, "%s", socket_dir);
        parent[0] = '\0';
    } else {
        if (sockpath_parent(parent, sizeof parent) == 0) {
            snprintf(err, errcap, "socket directory path too long; use --socket-dir DIR");
            return -1;
        }
        n = snprintf(out, cap, "%s/%s", parent, name);
    }
    /* Leave room for "/agent.sock" so binding cannot fail on length later. */
    if (n < 0 || (size_t)n + sizeof "/agent.sock" > cap || (size_t)n + sizeof "/agent.sock" > PATHS_MAX) {
        snprintf(err, errcap, "socket directory path too long (max %d bytes): %s", PATHS_MAX - 12, out);
        return -1;
    }
    if (create) {
        if (paths_mkdirs(out) != 0) {
            snprintf(err, errcap, "cannot create %s: %s", parent[0] && access(parent, F_OK) != 0 ? parent : out,
                     strerror(errno));
            return -1;
        }
    }
    struct stat st;
    /* In /tmp another user could create /tmp/drover-UID first and later swap
     * the namespace directory inside it: the parent must be ours too. */
    if (parent[0] && lstat(parent, &st) != 0) {
        snprintf(err, errcap, "%s: %s", parent, strerror(errno));   /* "No such file or directory" */
        return -1;
    }
    if (parent[0] && (!S_ISDIR(st.st_mode) || st.st_uid != getuid())) {
        snprintf(err, errcap, "%s is not a directory owned by you (uid %u); remove it or use --socket-dir DIR",
                 parent, (unsigned)getuid());
        return -1;
    }
    if (stat(out, &st) != 0) {
        snprintf(err, errcap, "%s: %s", out, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errcap, "%s is not a directory", out);
        return -1;
    }
    /* Another user's directory could hold a socket that impersonates our hub. */
    if (st.st_uid != getuid()) {
        snprintf(err, errcap, "%s is owned by uid %u, not by you (uid %u); use --socket-dir DIR",
                 out, (unsigned)st.st_uid, (unsigned)getuid());
        return -1;
    }
    if (create && (st.st_mode & 077) && !socket_dir) {
        if (chmod(out, 0700) != 0) {
            snprintf(err, errcap, "%s is accessible to others and chmod 0700 failed: %s", out, strerror(errno));
            return -1;
        }
    }
    return 0;
}

int paths_ctl(const char *socket_dir, const char *name, bool create, char *out, size_t cap,
              char *err, size_t errcap)
{
    char dir[PATHS_MAX];
    if (paths_dir(socket_dir, name, create, dir, sizeof dir, err, errcap) != 0)
        return -1;
    if (paths_join(dir, "ctl.sock", out, cap) != 0) {
        snprintf(err, errcap, "socket path too long: %s/ctl.sock", dir);
        return -1;
    }
    return 0;
}
