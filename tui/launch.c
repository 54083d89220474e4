/*
 * launch.c — starting a hub in the background for a console (`drover run`,
 * `attach` and `monit` in a terminal, `run -d`), and finding out whether
 * one already answers.
 */
#include "tui/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include "hub/upgrade.h"
#include <time.h>
#include <unistd.h>

/* True when ctl.sock at path accepts a connection. */
bool launch_ctl_alive(const char *path)
{
    /* A hub executed again by `drover upgrade`: the socket is its own,
     * listening (a connect would succeed into its backlog) but not answered
     * until it is set up; whatever the command line says, it is the hub. */
    if (getenv(UPGRADE_ENV))
        return false;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path)
        return false;
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/*
 * Starts this very command again as a background hub (its own session, so a
 * terminal hangup never reaches it) with --background added, and waits until
 * its control socket answers. Startup errors reach the terminal (the hub
 * redirects its output only once set up). Returns 0, or the exit status.
 */
int launch_background_hub(int argc, char **argv, const char *ctl_path)
{
    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args)
        return 1;
    int k = 0;
    args[k++] = "drover";
    args[k++] = argv[0];          /* the subcommand */
    args[k++] = "--background";
    for (int i = 1; i < argc; i++)
        args[k++] = argv[i];
    args[k] = NULL;
    /* exec our own binary by its real path, so `ps` and `pkill drover` see
     * "drover" (execing /proc/self/exe would name the process "exe") */
    char self[4096];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        fprintf(stderr, "drover: cannot find my own binary: %s\n", strerror(errno));
        free(args);
        return 1;
    }
    self[sl] = '\0';
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "drover: fork failed: %s\n", strerror(errno));
        free(args);
        return 1;
    }
    if (pid == 0) {
        setsid();
        int dn = open("/dev/null", O_RDWR);
        if (dn >= 0) {
            dup2(dn, 0);
            dup2(dn, 1);   /* stderr stays: errors while starting reach the user */
        }
        execv(self, args);
        fprintf(stderr, "drover: cannot start the hub: %s\n", strerror(errno));
        _exit(1);
    }
    free(args);
    for (int i = 0; i < 200; i++) {   /* up to 10 s */
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) && WEXITSTATUS(status) ? WEXITSTATUS(status) : 1;
        if (launch_ctl_alive(ctl_path))
            return 0;
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "drover: the hub (pid %d) did not open %s within 10 s\n", (int)pid, ctl_path);
    return 1;
}

bool launch_is_terminal(void)
{
    return isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
}
