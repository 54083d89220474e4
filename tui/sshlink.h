/*
 * sshlink.h — a hub on another host, reached through ssh: the target
 * ([USER@]HOST[:PORT]), and the ssh child that runs `drover bridge` there
 * with its stdin and stdout on one end of a socketpair (the other end is a
 * stream the control protocol travels over, exactly like ctl.sock) and its
 * stderr kept, bounded, for the reason a host could not be reached.
 *
 * The ssh command is $DROVER_SSH (words split on blanks, default "ssh"),
 * followed by -T -o BatchMode=yes [-p PORT] -- [USER@]HOST and one remote
 * command line: REMOTE bridge -L NS [--socket-dir 'DIR'], REMOTE being the
 * remote-cmd option, else $DROVER_REMOTE, else "drover".
 */
#ifndef DROVER_TUI_SSHLINK_H
#define DROVER_TUI_SSHLINK_H

#include <stddef.h>

#define SSHLINK_SPEC_MAX 256

typedef struct {
    char spec[SSHLINK_SPEC_MAX];   /* as given, for messages */
    char dest[SSHLINK_SPEC_MAX];   /* [USER@]HOST, what ssh is given */
    int  port;                     /* 1..65535, or 0 for ssh's default */
} sshlink_target;

/*
 * Parses [USER@]HOST[:PORT] (HOST may be [IPv6]) into t. USER and HOST take
 * letters, digits, '.', '-', '_' (and ':' inside brackets) and may not start
 * with '-', so a target can never be read by ssh as an option. Returns 0, or
 * -1 with a message in err.
 */
int sshlink_parse(const char *spec, sshlink_target *t, char *err, size_t errcap);

/*
 * The remote command used when none is given: $DROVER_REMOTE, else "drover".
 * remote (if not NULL) wins. The string is given to the remote shell as is.
 */
const char *sshlink_remote(const char *remote);

typedef struct sshlink sshlink;

/*
 * Starts ssh to t running `REMOTE bridge -L ns [--socket-dir socket_dir]`
 * (ns must be a valid namespace name; socket_dir may be NULL and is quoted
 * for the remote shell). Returns the link, or NULL with a message in err
 * (ssh could not be started). The connection itself is not waited for: the
 * hub's hello, or EOF and sshlink_error, tell.
 */
sshlink *sshlink_start(const sshlink_target *t, const char *remote, const char *ns, const char *socket_dir,
                       char *err, size_t errcap);

/* The stream to the remote hub (owned by the link). */
int sshlink_fd(const sshlink *l);

/* ssh's stderr (non-blocking, owned by the link), or -1 once it ended. */
int sshlink_err_fd(const sshlink *l);

/* Reads what ssh wrote on stderr so far, keeping the last 1 KiB. Never blocks. */
void sshlink_read_err(sshlink *l);

/*
 * After the stream ended: why, in one line, into err ("unreachable: ssh:
 * connect to host … Connection refused", or the remote bridge's own message,
 * e.g. "no hub is running here …"). Waits up to about 2 s for ssh to end.
 * Returns 0, or -1 when there is nothing to say.
 */
int sshlink_error(sshlink *l, char *err, size_t errcap);

/* Closes the stream, ends ssh (SIGTERM) if it still runs, reaps it, frees l. */
void sshlink_free(sshlink *l);

#endif
