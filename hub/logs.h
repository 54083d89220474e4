/*
 * logs.h — captures workers' stdout and stderr (issue "Supervisor" §4).
 *
 * One logs_stream per worker slot (app + worker id): it survives restarts of
 * the slot's process, so every generation appends to the same files and ring.
 * Lines are split on '\n'; none is dropped or torn: when the disk or the
 * stderr echo cannot keep up, the hub stops reading the worker's pipe, the
 * pipe fills, and the worker's own write() blocks (back-pressure). A full
 * disk (ENOSPC, EDQUOT) pauses every pipe; the bytes a failed write left are
 * held (at most 128 KiB per file) and retried every 250 ms, with one warning
 * on stderr when it starts and one when output resumes.
 *
 * Files. In cfg.dir: APP-ID.out.log (stdout) and APP-ID.err.log (stderr),
 * e.g. web-0.out.log; mode 0640, opened O_APPEND, the worker's bytes exactly,
 * one whole line per line (a partial last line gets its newline at exit).
 * Each batch read from a pipe goes out with one write(), so `tail -f` sees a
 * line within milliseconds. Rotation: when a line would take a file past
 * max_bytes, NAME.(keep-1) → NAME.keep (the oldest is replaced), …, NAME →
 * NAME.1, and a new NAME is started; a line never spans two files.
 *
 * Where cfg.dir points is the hub's choice (`--log-dir DIR`, else
 * hub_default_log_dir: $LOGS_DIRECTORY/NAME under systemd, else
 * $XDG_STATE_HOME/drover/NAME/logs, else ~/.local/state/drover/NAME/logs
 * with the home from the password database when $HOME is unset). The
 * directory and missing parents are created 0700; logs_new fails with a
 * message naming --log-dir when it cannot be written (a read-only root), or
 * naming the directory when it is not owned by the hub's user (or root) or
 * is writable by group or others. Files are opened relative to that checked
 * directory, never through a symlink and never blocking; a symlink, FIFO,
 * hard link or other user's file found where a log file goes is renamed
 * aside to NAME.unsafe-TIME (warned on stderr) and a new file started.
 *
 * Echo (cfg.echo, for headless `run`, so a container user sees worker output
 * in `docker logs` / the journal): every line also goes to the hub's stderr
 * as "[app:id] line" (stdout) or "[app:id!] line" (stderr). It is written
 * without ever blocking the loop, through a descriptor of its own (a terminal
 * or pipe on fd 2 is reopened, so fd 2 itself never becomes non-blocking;
 * a socket is written with MSG_DONTWAIT; a regular file synchronously), from
 * a 256 KiB queue; when the queue is full the worker pipes stop being read
 * until it drains. If the reader of stderr goes away (EPIPE) the echo stops
 * for good; the files keep everything. The hub must ignore SIGPIPE.
 *
 * Memory is fixed per slot and does not grow with log volume or uptime:
 * ring_bytes for the ring, 16 KiB per open pipe, at most 8 open pipes per
 * slot (the oldest generation's are closed, after reading what they hold, when
 * a grandchild that inherited its stdout keeps them open across restarts);
 * plus 64 KiB of file scratch and the 256 KiB echo queue per manager.
 * Streams (ring and names) live until logs_free; a stream's two files are
 * held open only while one of its pipes is open, and reopened on its next
 * line, so a worker id scaled away holds no descriptor.
 */
#ifndef DROVER_HUB_LOGS_H
#define DROVER_HUB_LOGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>
#include <jansson.h>

#define LOGS_LINE_MAX 8192   /* longer lines are split into pieces of this size
                                (each piece a line of its own); this many bytes
                                plus '\n' is still one line */

typedef struct {
    const char *dir;          /* directory for the files (created 0700 if missing); required */
    uint64_t    max_bytes;    /* rotate a file when it would exceed this; 0 = 10 MiB */
    unsigned    keep;         /* rotated files kept per stream (NAME.1 … NAME.keep); 0 = 3 */
    size_t      ring_bytes;   /* in-memory ring per slot, both streams; a line takes
                                 16 + len rounded up to 8 bytes; 0 = 32 KiB, min 256 */
    bool        echo;         /* also write "[app:id] line" / "[app:id!] line" to the hub's stderr */
    bool        timestamps;   /* files: each line starts with an RFC 3339 UTC time in ms and a space */
    bool        json;         /* files: one JSON object a line {ts, app, id, pid, stream, line} */
} logs_config;

typedef enum { LOGS_OUT = 0, LOGS_ERR = 1 } logs_fd;

/* One captured line as the ring returns it. */
typedef struct {
    double      ts;           /* wall clock, Unix seconds, when the hub read it */
    logs_fd     stream;
    const char *text;         /* not NUL-terminated; valid during the callback only */
    size_t      len;
    const char *app;          /* the stream's app and worker id (logs_foreach, hooks) */
    int         id;
    pid_t       pid;          /* > 0 only for an agent's line of a process drover did not start (agentlog.h) */
} logs_line;

typedef struct logs logs;
typedef struct logs_stream logs_stream;

/*
 * Returns a log manager reading on loop, or NULL with a one-line message in
 * err (e.g. the directory cannot be created or written). With cfg->echo it
 * sets up its own descriptor for fd 2 now: later changes to fd 2 do not move
 * the echo.
 */
logs *logs_new(uv_loop_t *loop, const logs_config *cfg, char *err, size_t errcap);

/*
 * Returns the stream of slot app:id, creating it (and opening
 * DIR/APP-ID.out.log and DIR/APP-ID.err.log for appending) on first use;
 * NULL with a message in err on failure. app: 1-64 bytes, no '/', no spaces
 * or control characters, not starting with '.'; id >= 0.
 */
logs_stream *logs_stream_get(logs *lg, const char *app, int id, char *err, size_t errcap);

/*
 * Starts capturing a new process of the slot from the read ends of its
 * stdout and stderr pipes (ownership of both fds passes to the stream; -1 to
 * skip one; the same fd twice is read once, as stdout). The fds are made
 * non-blocking and close-on-exec. Any previous process's pipes keep being
 * read until they close (EOF), within the 8-pipe bound above. Returns 0, or a
 * negative libuv error code: a fd that could not be set up is closed, the
 * other one is still captured.
 */
int logs_stream_attach(logs_stream *st, int out_fd, int err_fd);

/* True while any pipe of the stream is still open (the process, or a child
 * that inherited its stdout, may still write) or holds lines not yet passed
 * on (waiting for the echo). */
bool logs_stream_open(const logs_stream *st);

/*
 * Calls cb for up to the last n lines in the ring, oldest first, stdout and
 * stderr interleaved as they were read. Returns how many lines were passed.
 * line->text points into the ring: copy what you keep.
 */
size_t logs_stream_tail(const logs_stream *st, size_t n,
                        void (*cb)(void *ctx, const logs_line *line), void *ctx);

/* Called for every line as it is captured (after file, ring and echo). */
typedef void (*logs_line_fn)(void *ctx, const char *app, int id, const logs_line *line);

/* Sets the line hook (the control socket's log followers); NULL clears it. */
void logs_on_line(logs *lg, logs_line_fn fn, void *ctx);

/*
 * Calls cb for up to the last n lines of every stream matching app (NULL:
 * every app) and id (-1: every worker), stream by stream, oldest first
 * within a stream. line->app and line->id name the stream.
 */
void logs_foreach(const logs *lg, const char *app, int id, size_t n,
                  void (*cb)(void *ctx, const logs_line *line), void *ctx);

/*
 * Adds a line that did not come through the pipes (e.g. an agent's `log`
 * datagram) to the stream, as if the worker had written it to which.
 */
void logs_stream_line(logs_stream *st, logs_fd which, const char *s, size_t len);

/* Returns the stream of app:id if it exists, else NULL (never creates one). */
logs_stream *logs_stream_find(logs *lg, const char *app, int id);

/*
 * Copies the len bytes of a captured line to out as valid UTF-8 for JSON:
 * every byte that does not start a valid UTF-8 sequence (stray continuation
 * bytes, truncated or overlong sequences, surrogates, code points above
 * U+10FFFF) is replaced by U+FFFD (3 bytes); valid bytes, NUL included, are
 * copied unchanged. out needs LOGS_UTF8_CAP(len) bytes to hold any line
 * whole; with less, the result stops at a character boundary that fits.
 * Returns the bytes written (no NUL is added). The files keep the raw bytes;
 * this is for views (`drover logs`, `-f`, the console) only.
 */
#define LOGS_UTF8_CAP(len) (3 * (len))
size_t logs_line_utf8(const char *text, size_t len, char *out, size_t cap);

/*
 * Sets how the stream's files are written from its next line on: with
 * timestamps and/or as JSON (logs_config's meaning), rotated past max_bytes
 * keeping keep old files (0: the manager's). Returns 0, or -1 when out of
 * memory (nothing changed).
 */
int logs_stream_format(logs_stream *st, bool timestamps, bool json, uint64_t max_bytes, unsigned keep);

/*
 * Names pid as the process whose output the stream's pipes attached last
 * (and that have no pid yet) carry, and the pid of lines logged through
 * logs_stream_line: the "pid" of JSON log lines.
 */
void logs_stream_set_pid(logs_stream *st, pid_t pid);

/* Reopens every file, recreating the directory if needed (after logrotate
 * moved them away; SIGUSR1). Lines go to the new files from the next read. */
void logs_reopen(logs *lg);

/*
 * Flushes and closes everything; pending partial lines are written with a
 * newline added. Pipes still open are read for what they already hold, then
 * closed (their writers get EPIPE). Waits at most 1 s in total for a slow
 * stderr to take the rest of the echo. Frees lg once libuv has closed its
 * handles (run the loop afterwards). NULL is a no-op.
 */
void logs_free(logs *lg);

/*
 * `drover upgrade`, old image: stops reading every pipe and returns what
 * crosses the exec (new reference): per stream its app, id, pid, open
 * pipes (descriptor kept across exec, which, pid, the partial line held)
 * and its ring's lines (hex). Gives the echo queue up to 100 ms to drain
 * first. Unless final (a dry run for the new binary's check), nothing
 * changes; when final the manager must not run again: the process execs next.
 */
json_t *logs_save(logs *lg, bool final);

/*
 * `drover upgrade`, new image: recreates the streams of a logs_save
 * (validated by upgrade_validate), their rings, and reads their pipes on,
 * each with the partial line it held. Returns 0, or -1 with why in err.
 */
int logs_restore(logs *lg, const json_t *streams, char *err, size_t errcap);

#endif
