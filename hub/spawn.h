/*
 * spawn.h — starting worker processes, and the guard that kills them if the
 * hub dies without a chance to do it itself.
 *
 * libuv's uv_spawn cannot set LISTEN_PID to the child's own pid (it must be
 * written after fork, before exec), so workers are started with fork/exec
 * here. Between the two the child calls only async-signal-safe functions.
 */
#ifndef DROVER_HUB_SPAWN_H
#define DROVER_HUB_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
    const char  *path;        /* executable, already resolved (spawn_resolve) */
    char *const *argv;
    char *const *envp;        /* the worker's environment, without LISTEN_* */
    int          listen_fd;   /* -1, or a listening socket passed as fd 3 with
                                 LISTEN_FDS=1, LISTEN_PID=<child pid>, LISTEN_FDNAMES */
    const char  *listen_name; /* LISTEN_FDNAMES value */
    int          out_fd;      /* the child's stdout (write end of a pipe); -1 = /dev/null */
    int          err_fd;      /* the child's stderr; -1 = /dev/null */
    const char  *cwd;         /* working directory; NULL = the hub's */
    bool         set_ids;     /* become uid/gid with groups (the hub runs as root) */
    uid_t        uid;
    gid_t        gid;
    const gid_t *groups;      /* supplementary groups, ngroups of them */
    size_t       ngroups;
} spawn_spec;

/*
 * Resolves cmd like execvp would: as given when it contains '/', else the
 * first executable match in $PATH. Returns 0 with the path in out, or -1 with
 * errno set (ENOENT, EACCES, ENAMETOOLONG).
 */
int spawn_resolve(const char *cmd, char *out, size_t cap);

/*
 * Forks and execs a worker. The child gets stdin from /dev/null, its own
 * process group (so the hub can signal it and everything it starts), default
 * signal dispositions and an empty signal mask, and PR_SET_PDEATHSIG=SIGKILL
 * so it dies with the hub; then, between fork and exec, its groups, gid and
 * uid (set_ids), and its working directory (cwd). Returns the pid once exec has succeeded, or -1
 * with a one-line message in err when fork or exec failed.
 */
pid_t spawn_start(const spawn_spec *spec, char *err, size_t errcap);

/*
 * Starts the guard: a small child process that, when the hub dies by any
 * path (even SIGKILL), kills every worker process group it was told about.
 * Call before any thread starts. Returns 0, or -1 with a message in err.
 */
int spawn_guard_start(char *err, size_t errcap);

/* Tells the guard about a worker's process group, or that it is gone. */
void spawn_guard_add(pid_t pgid);
void spawn_guard_del(pid_t pgid);

/* The guard's pid (0 when none): a child of the hub that is not a worker. */
pid_t spawn_guard_pid(void);

/* Ends the guard normally (after the hub stopped every worker itself) and reaps it. */
void spawn_guard_stop(void);

/* `drover upgrade`, old image: the guard's pipe (returned) and pid, which cross the exec. */
int spawn_guard_save(pid_t *pid);

/* `drover upgrade`, new image: the guard of the old image is ours (fd -1: none). */
void spawn_guard_adopt(int fd, pid_t pid);

#endif
