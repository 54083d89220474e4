/*
 * logs.h — captures workers' stdout and stderr (issue "Supervisor" §4).
 *
 * One logs_stream per worker slot (app + worker id): it survives restarts of
 * the slot's process, so every generation appends to the same files and ring.
 * Lines are split on '\n'; none is dropped or torn: when the disk or the
 * stderr echo cannot keep up, the hub stops reading the worker's pipe, the
 * pipe fills, and the worker's own write() blocks (back-pressure).
 */
#ifndef DROVER_HUB_LOGS_H
#define DROVER_HUB_LOGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define LOGS_LINE_MAX 8192   /* longer lines are split into pieces of this size */

typedef struct {
    const char *dir;          /* directory for the files (created 0700 if missing); required */
    uint64_t    max_bytes;    /* rotate a file when it would exceed this; 0 = 10 MiB */
    unsigned    keep;         /* rotated files kept per stream (NAME.1 … NAME.keep); 0 = 3 */
    size_t      ring_bytes;   /* in-memory ring per slot, both streams; 0 = 64 KiB */
    bool        echo;         /* also write "[app:id] line" / "[app:id!] line" to the hub's stderr */
} logs_config;

typedef enum { LOGS_OUT = 0, LOGS_ERR = 1 } logs_fd;

/* One captured line as the ring returns it. */
typedef struct {
    double      ts;           /* wall clock, Unix seconds, when the hub read it */
    logs_fd     stream;
    const char *text;         /* not NUL-terminated; valid during the callback only */
    size_t      len;
} logs_line;

typedef struct logs logs;
typedef struct logs_stream logs_stream;

/* Returns a log manager, or NULL with a one-line message in err. */
logs *logs_new(uv_loop_t *loop, const logs_config *cfg, char *err, size_t errcap);

/*
 * Returns the stream of slot app:id, creating it (and opening
 * DIR/APP-ID.out.log and DIR/APP-ID.err.log for appending) on first use;
 * NULL with a message in err on failure.
 */
logs_stream *logs_stream_get(logs *lg, const char *app, int id, char *err, size_t errcap);

/*
 * Starts capturing a new process of the slot from the read ends of its
 * stdout and stderr pipes (ownership of both fds passes to the stream; -1 to
 * skip one). Any previous process's pipes keep being read until they close.
 */
int logs_stream_attach(logs_stream *st, int out_fd, int err_fd);

/* True while any pipe of the stream is still open (the process, or a child
 * that inherited its stdout, may still write). */
bool logs_stream_open(const logs_stream *st);

/*
 * Calls cb for up to the last n lines in the ring, oldest first. Returns how
 * many lines were passed.
 */
size_t logs_stream_tail(const logs_stream *st, size_t n,
                        void (*cb)(void *ctx, const logs_line *line), void *ctx);

/* Reopens every file (after logrotate moved them away; SIGUSR1). */
void logs_reopen(logs *lg);

/*
 * Flushes and closes everything; pending partial lines are written with a
 * newline added. Pipes still open are closed (their writers get EPIPE).
 * Frees lg once libuv has closed its handles (run the loop afterwards).
 */
void logs_free(logs *lg);

#endif
