/*
 * ingest.h — the report socket, drained by a thread that does nothing else.
 *
 * The kernel queues only ~11 datagrams per Unix datagram socket by default
 * (net.unix.max_dgram_qlen); a loop that stops reading for a few ms while it
 * samples /proc or draws would make senders drop reports. So a dedicated
 * thread blocks in recvmmsg(), copies each datagram with the sender's kernel
 * credentials into a bounded in-memory queue, and wakes the loop. The loop
 * then decodes and applies them at its own pace.
 */
#ifndef DROVER_HUB_INGEST_H
#define DROVER_HUB_INGEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define INGEST_QUEUE_BYTES (128 * 1024)

typedef struct ingest ingest;

/*
 * Called on the loop thread for each datagram, in arrival order. pid is the
 * sender's pid from SCM_CREDENTIALS (0 if the kernel gave none); truncated is
 * true when the datagram was larger than REPORT_MAX_BYTES (buf then holds only
 * its beginning).
 */
typedef void (*ingest_cb)(void *ctx, const void *buf, size_t len, pid_t pid, int truncated);

/*
 * Binds the report socket at path and starts the ingest thread. A live socket
 * at path (another hub answers) is refused; a stale socket file is replaced.
 * On failure returns NULL with a one-line message in err.
 */
ingest *ingest_start(uv_loop_t *loop, const char *path, ingest_cb cb, void *ctx,
                     char *err, size_t errcap);

/*
 * Delivers every queued datagram to the callback now (on the loop thread).
 * The loop also does this by itself when woken; call it before printing so
 * an interval's output includes what already arrived.
 */
void ingest_flush(ingest *in);

/*
 * Stops the thread, closes the socket, unlinks the socket file if it is still
 * ours, and frees everything once libuv has closed its handle.
 */
void ingest_stop(ingest *in);

/*
 * As ingest_start, on fd: a report socket already bound at path (handed
 * over by `drover upgrade`); fd -1 binds a new one.
 */
ingest *ingest_adopt(uv_loop_t *loop, const char *path, int fd, ingest_cb cb, void *ctx,
                     char *err, size_t errcap);

/*
 * `drover upgrade`: stops the thread, delivers what it queued, frees the
 * ingest and returns the socket, still bound and open (its file stays):
 * datagrams sent meanwhile wait in the kernel for the next image.
 */
int ingest_detach(ingest *in);

/* The report socket (for `drover upgrade`'s dry run). */
int ingest_fd(const ingest *in);

#endif
