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

#include <stdbool.h>
#include <stddef.h>

#define SSHLINK_SPEC_MAX  256
#define SSHLINK_ERR_KEEP  1024   /* bytes of ssh's stderr kept (the last ones) */
#define SSHLINK_WORDS_MAX 32     /* words of $DROVER_SSH */
#define SSHLINK_CMD_MAX   8192   /* the remote command line */

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

/* The ssh command line for a target: argv points into the other fields. */
typedef struct {
    char *argv[SSHLINK_WORDS_MAX + 12];
    char  words[1024];                 /* $DROVER_SSH, split in place */
    char  port[16];
    char  dest[SSHLINK_SPEC_MAX];
    char  cmd[SSHLINK_CMD_MAX];        /* the remote command line */
} sshlink_cmdline;

/*
 * Builds the ssh command line for t (see the top of this file) into out.
 * Returns 0, or -1 with a message in err ($DROVER_SSH empty or too long, a
 * bad namespace, a remote command too long).
 */
int sshlink_argv(const sshlink_target *t, const char *remote, const char *ns, const char *socket_dir,
                 sshlink_cmdline *out, char *err, size_t errcap);

/*
 * Why an ssh child ended, in one line, into err: from the tail of its stderr
 * (len bytes) and, when exited, its wait status. Status 255 is ssh's own
 * failure ("unreachable: …"); a remote "drover: " prefix is dropped; the
 * text is made terminal-safe.
 */
void sshlink_why(const char *tail, size_t len, bool exited, int status, char *err, size_t errcap);

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
