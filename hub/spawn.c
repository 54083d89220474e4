/*
 * spawn.c — fork/exec of workers, and the guard process.
 */
#include "hub/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/close_range.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long the hub waits for a forked worker to reach exec. */
#define SPAWN_EXEC_TIMEOUT_MS 5000

int spawn_resolve(const char *cmd, char *out, size_t cap)
{
    if (strchr(cmd, '/')) {
        if (strlen(cmd) >= cap) {
            errno = ENAMETOOLONG;
            return -1;
        }
        if (access(cmd, X_OK) != 0)
            return -1;
        strcpy(out, cmd);
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    int saw_eacces = 0;
    for (const char *p = path; ; ) {
        const char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int w = snprintf(out, cap, "%.*s%s%s", (int)n, n ? p : ".", "/", cmd);
        if (w > 0 && (size_t)w < cap) {
            struct stat st;
            if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) {
                if (access(out, X_OK) == 0)
                    return 0;
                saw_eacces = 1;
            }
        }
        if (!end)
            break;
        p = end + 1;
    }
    errno = saw_eacces ? EACCES : ENOENT;
    return -1;
}

/* Writes v in decimal into buf (≥ 12 bytes) without libc; async-signal-safe. */
static void spawn_itoa(long v, char *buf)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    for (int i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
}

/* In the child: reports errno on the status pipe and exits. */
static void spawn_child_fail(int status_fd, int err)
{
    ssize_t w = write(status_fd, &err, sizeof err);
    (void)w;
    _exit(127);
}

pid_t spawn_start(const spawn_spec *spec, char *err, size_t errcap)
{
    /* Build everything the child needs before fork: after it, no malloc. */
    size_t nenv = 0;
    while (spec->envp[nenv])
        nenv++;
    char **envp = calloc(nenv + 4, sizeof *envp);
    char listen_pid[32] = "LISTEN_PID=";
    char listen_names[256];
    if (!envp) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    memcpy(envp, spec->envp, nenv * sizeof *envp);
    if (spec->listen_fd >= 0) {
        envp[nenv++] = "LISTEN_FDS=1";
        envp[nenv++] = listen_pid;
        snprintf(listen_names, sizeof listen_names, "LISTEN_FDNAMES=%s",
                 spec->listen_name ? spec->listen_name : "drover");
        envp[nenv++] = listen_names;
    }
    envp[nenv] = NULL;

    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    int status[2];
    if (devnull < 0 || pipe2(status, O_CLOEXEC) != 0) {
        snprintf(err, errcap, "cannot prepare to start a worker: %s", strerror(errno));
        if (devnull >= 0)
            close(devnull);
        free(envp);
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errcap, "fork failed: %s", strerror(errno));
        close(devnull);
        close(status[0]);
        close(status[1]);
        free(envp);
        return -1;
    }
    if (pid == 0) {
        /* ---- child: async-signal-safe calls only ---- */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127);   /* the hub died between fork and here */
        setpgid(0, 0);
        /* Raw system calls: a sanitizer's sigaction wrapper may take a lock
         * that another hub thread held at fork time. An all-zero kernel
         * sigaction is SIG_DFL with no flags whatever the architecture's
         * layout; handled signals reset at exec by themselves, this is for
         * ignored ones (the hub ignores SIGPIPE). */
        static const unsigned long dfl[8];
        static const unsigned long none_mask;
        for (int sig = 1; sig < 65; sig++)
            syscall(SYS_rt_sigaction, sig, dfl, NULL, sizeof none_mask);
        syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none_mask, NULL, sizeof none_mask);

        /* fd 3 may be taken by one of our own fds: move the status pipe and
         * the socket out of the way of the dup2s first. */
        int sfd = fcntl(status[1], F_DUPFD_CLOEXEC, 10);
        int lfd = spec->listen_fd >= 0 ? fcntl(spec->listen_fd, F_DUPFD_CLOEXEC, 10) : -1;
        if (sfd < 0 || (spec->listen_fd >= 0 && lfd < 0))
            _exit(127);
        if (dup2(devnull, 0) < 0 ||
            dup2(spec->out_fd >= 0 ? spec->out_fd : devnull, 1) < 0 ||
            dup2(spec->err_fd >= 0 ? spec->err_fd : devnull, 2) < 0)
            spawn_child_fail(sfd, errno);
        if (lfd >= 0) {
            if (dup2(lfd, 3) < 0)
                spawn_child_fail(sfd, errno);
            spawn_itoa((long)getpid(), listen_pid + strlen("LISTEN_PID="));
        }
        /* Credentials, groups first (setgroups needs root), uid last; a change
         * of credentials clears the parent-death signal, so it is set again. */
        if (spec->set_ids) {
            if (syscall(SYS_setgroups, spec->ngroups, spec->groups) != 0 ||
                syscall(SYS_setresgid, spec->gid, spec->gid, spec->gid) != 0 ||
                syscall(SYS_setresuid, spec->uid, spec->uid, spec->uid) != 0)
                spawn_child_fail(sfd, errno);
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
                _exit(127);
        }
        if (spec->cwd && chdir(spec->cwd) != 0)
            spawn_child_fail(sfd, errno);
        /* Nothing else of the hub's (or of whoever started the hub) leaks in. */
        close_range(lfd >= 0 ? 4 : 3, ~0U, CLOSE_RANGE_CLOEXEC);
        execve(spec->path, spec->argv, envp);
        spawn_child_fail(sfd, errno);
    }
    /* ---- parent ---- */
    close(status[1]);
    close(devnull);
    free(envp);
    /* Wait for exec (the pipe closes) or its failure (errno arrives); never
     * forever, so a child stuck before exec cannot freeze the hub. */
    int child_err = 0;
    ssize_t n = -1;
    struct pollfd pf = {.fd = status[0], .events = POLLIN};
    int pr;
    do
        pr = poll(&pf, 1, SPAWN_EXEC_TIMEOUT_MS);
    while (pr < 0 && errno == EINTR);
    if (pr > 0) {
        do
            n = read(status[0], &child_err, sizeof child_err);
        while (n < 0 && errno == EINTR);
    }
    close(status[0]);
    if (pr == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        snprintf(err, errcap, "cannot run %s: the new process did not reach exec within %d ms",
                 spec->path, SPAWN_EXEC_TIMEOUT_MS);
        return -1;
    }
    if (n == (ssize_t)sizeof child_err) {
        /* exec failed: the child has exited; reap it so it leaves no zombie */
        waitpid(pid, NULL, 0);
        snprintf(err, errcap, "cannot run %s: %s", spec->path, strerror(child_err));
        return -1;
    }
    /* Also from the parent, so no race decides whether kill(-pid) works. */
    setpgid(pid, pid);
    return pid;
}

/* ---- the guard ---------------------------------------------------------- */

static int   guard_fd = -1;
static pid_t guard_pid;

/* The guard's main: track process groups until the hub's end of the pipe closes. */
static void spawn_guard_main(int rfd)
{
    enum { MAX = 4096 };
    static pid_t groups[MAX];
    size_t n = 0;
    int32_t rec;

    prctl(PR_SET_NAME, "drover-guard");
    signal(SIGINT, SIG_IGN);    /* a Ctrl-C for the hub's terminal is not for us */
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        ssize_t r = read(rfd, &rec, sizeof rec);
        if (r < 0 && errno == EINTR)
            continue;
        if (r != (ssize_t)sizeof rec)
            break;   /* EOF: the hub is gone (or said goodbye) */
        if (rec > 0 && n < MAX) {
            groups[n++] = rec;
        } else if (rec < 0) {
            for (size_t i = 0; i < n; i++)
                if (groups[i] == -rec) {
                    groups[i] = groups[--n];
                    break;
                }
        }
    }
    for (size_t i = 0; i < n; i++)
        kill(-groups[i], SIGKILL);
    _exit(0);
}

int spawn_guard_start(char *err, size_t errcap)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) {
        snprintf(err, errcap, "cannot start the guard process: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errcap, "cannot start the guard process: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[1]);
        /* Hold nothing of the hub's: no socket, no lock, no terminal input. */
        if (p[0] != 3 && (dup2(p[0], 3) < 0 || close(p[0]) != 0))
            _exit(1);
        close_range(4, ~0U, 0);
        int keep = 3;
        int dn = open("/dev/null", O_RDWR);
        /* Not even stderr: whoever waits for the hub's output to end (a
         * pipe, a terminal) must not wait for the guard too. */
        if (dn >= 0) {
            dup2(dn, 0);
            dup2(dn, 1);
            dup2(dn, 2);
            if (dn > 2)
                close(dn);
        }
        setpgid(0, 0);
        spawn_guard_main(keep);
    }
    close(p[0]);
    guard_fd = p[1];
    guard_pid = pid;
    return 0;
}

/* Sends one record to the guard; a dead guard is not fatal for the hub. */
static void spawn_guard_send(int32_t rec)
{
    if (guard_fd < 0)
        return;
    ssize_t w;
    do
        w = write(guard_fd, &rec, sizeof rec);
    while (w < 0 && errno == EINTR);
}

void spawn_guard_add(pid_t pgid) { spawn_guard_send((int32_t)pgid); }
void spawn_guard_del(pid_t pgid) { spawn_guard_send(-(int32_t)pgid); }

pid_t spawn_guard_pid(void)
{
    return guard_pid;
}

void spawn_guard_stop(void)
{
    if (guard_fd < 0)
        return;
    close(guard_fd);
    guard_fd = -1;
    waitpid(guard_pid, NULL, 0);
    guard_pid = 0;
}

int spawn_guard_save(pid_t *pid)
{
    *pid = guard_pid;
    return guard_fd;
}

void spawn_guard_adopt(int fd, pid_t pid)
{
    guard_fd = fd;
    guard_pid = fd >= 0 ? pid : 0;
}
