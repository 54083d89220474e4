/*
 * logs.c — capture of workers' stdout and stderr: line splitting, per-slot
 * files with size rotation, a fixed in-memory ring per slot, and the optional
 * echo of every line to the hub's stderr.
 *
 * Data path, for each read callback of one worker pipe:
 *
 *   pipe ─read─▶ pipe buffer ─split─▶ line ─┬─▶ file scratch ─(one write() per batch)─▶ DIR/APP-ID.out.log
 *                                           ├─▶ the slot's ring (oldest lines evicted)
 *                                           └─▶ echo queue ─(non-blocking writes)─▶ fd 2
 *
 * Back-pressure instead of loss: a line is only taken out of a pipe buffer
 * once the echo queue has room for it. When it has none, that pipe stops
 * reading (uv_read_stop) and waits in the blocked queue; the kernel pipe then
 * fills and the worker's own write() blocks. When the echo queue drains below
 * its low-water mark, blocked pipes resume in the order they blocked. Disk
 * writes are synchronous in the read callback (fast and bounded by one
 * batch), so the file path needs no queue at all.
 *
 * Every buffer has a fixed size chosen at creation: per pipe (LOGS_PIPE_BUF,
 * at most LOGS_PIPES_MAX pipes per slot), per slot (ring_bytes), per manager
 * (one file scratch, one echo queue). Nothing grows with log volume or uptime.
 */
#include "hub/logs.h"
#include "hub/paths.h"
#include "hub/upgrade.h"
#include "proto/control.h"
#include "proto/text.h"
#include "proto/utf8.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- sizes ------------------------------------------------------------- */

#define LOGS_PIPE_BUF     (16 * 1024)    /* per pipe; holds at most LOGS_LINE_MAX between reads */
#define LOGS_TURN_BYTES   (64 * 1024)    /* read from all pipes before yielding a loop turn */
#define LOGS_PIPES_MAX    8              /* open pipes per slot (4 generations of out+err) */
#define LOGS_WBUF         (64 * 1024)    /* file scratch: one write() per batch */
#define LOGS_ECHO_CAP     (256 * 1024)   /* echo queue; readers stop when a line does not fit */
#define LOGS_ECHO_LOW     (64 * 1024)    /* ... and resume once it drained to this */
#define LOGS_APP_MAX      64
#define LOGS_RING_MIN     256
#define LOGS_FREE_WAIT_NS 1000000000ull  /* logs_free waits this long at most for stderr */
#define LOGS_FINAL_READ   (1024 * 1024)  /* read at most this from a pipe being force-closed */
#define LOGS_RETRY_MS     1000           /* retry opening a file that could not be opened */
#define LOGS_DISK_RETRY_MS 250           /* retry writing held bytes while the disk is full */
#define LOGS_PEND_CAP     (2 * LOGS_WBUF) /* bytes held per file while the disk is full */

#define LOGS_DEF_MAX_BYTES (10ull * 1024 * 1024)
#define LOGS_DEF_KEEP      3u
#define LOGS_DEF_RING      (32 * 1024)

/* One line in a slot's ring: this header, then len bytes padded to 8. */
typedef struct {
    double   ts;
    uint32_t len;       /* LOGS_RING_WRAP: the rest of the buffer is unused, continue at 0 */
    uint32_t stream;
} logs_rec;

#define LOGS_RING_WRAP UINT32_MAX

typedef enum { LOGS_ECHO_OFF, LOGS_ECHO_POLL, LOGS_ECHO_SYNC } logs_echo_mode;
typedef enum { LOGS_DRAIN_DONE, LOGS_DRAIN_BLOCKED } logs_drain_result;

typedef struct {
    int      fd;                /* -1 when it could not be opened */
    uint64_t size;              /* bytes in the file, as far as we know */
    uint64_t retry_at;          /* uv_now() after which opening is tried again */
    bool     warned;            /* a failure was reported; quiet until it recovers */
    char    *path;              /* DIR/NAME, for messages */
    char    *name;              /* NAME, opened relative to lg->dirfd */
    char    *pend;              /* bytes not yet written because the disk was full */
    size_t   plen;              /* ... in order, written before anything newer */
    double   last_ts;           /* the last timestamp written: they never go back in a file */
    uint64_t max_bytes;         /* rotate past this (its stream's setting) */
    unsigned keep;              /* rotated files kept */
} logs_file;

typedef struct logs_pipe logs_pipe;

struct logs_pipe {
    uv_pipe_t    h;             /* h.data = this */
    logs_stream *st;
    logs_pipe   *next;          /* in st->pipes, oldest first */
    logs_pipe   *bnext;         /* in lg's blocked queue */
    logs_fd      which;
    pid_t        pid;           /* the process writing to it (logs_stream_set_pid); 0 unknown */
    bool         eof;           /* the pipe reached EOF or an error; drain, then close */
    bool         blocked;       /* waiting for room in the echo queue, not reading */
    bool         closing;       /* uv_close called; every byte was emitted */
    size_t       len;           /* bytes in buf not yet emitted */
    char         buf[LOGS_PIPE_BUF];
};

struct logs_stream {
    logs        *lg;
    logs_stream *next;
    char         app[LOGS_APP_MAX + 1];
    int          id;
    logs_file    file[2];       /* by logs_fd */
    char         pfx[2][LOGS_APP_MAX + 32];   /* "[app:id] " / "[app:id!] " */
    size_t       pfxlen[2];
    logs_pipe   *pipes;
    pid_t        pid;           /* the process attached last (logs_stream_set_pid) */
    bool         timestamps, json;   /* how its files' lines are written (logs_stream_format) */

    /* The ring: byte positions only grow; each is taken modulo rcap. */
    char        *ring;
    size_t       rcap;
    uint64_t     rhead, rtail;
    size_t       rcount;
};

struct logs {
    uv_loop_t   *loop;
    logs_line_fn on_line;
    void        *on_line_ctx;
    char        *dir;
    int          dirfd;         /* the log directory, checked once (logs_dir_open) */
    uint64_t     max_bytes;
    unsigned     keep;
    size_t       ring_bytes;
    logs_stream *streams;
    double       now;           /* wall clock of the batch being split */

    /* Decorated file lines (timestamps, json): fbuf holds one, ubuf its UTF-8 form. */
    bool         timestamps, json;
    char        *fbuf, *ubuf;

    /* File scratch: lines of one file, written with one write() per batch. */
    char        *wbuf;
    size_t       wlen;
    logs_file   *wfile;

    /* Echo: a byte queue written to a private, non-blocking descriptor of fd 2. */
    logs_echo_mode emode;
    int          efd;
    bool         esock;         /* efd is a stream socket: send(MSG_DONTWAIT) */
    bool         etty;          /* fd 2 is a terminal: lines are made safe for it first */
    bool         epoll_init, epoll_active;
    uv_poll_t    epoll;
    char        *ebuf;
    uint64_t     ehead, etail;

    logs_pipe   *bhead, *btail; /* pipes blocked on the echo or the disk, in blocking order */
    bool         disk_full;     /* a write failed with ENOSPC/EDQUOT: pipes pause */
    uv_timer_t   disk_timer;    /* retries the held bytes every LOGS_DISK_RETRY_MS */
    uv_idle_t    kick;          /* runs logs_resume outside any callback chain */
    size_t       turn_bytes;    /* read from pipes since the last kick */
    unsigned     handles;       /* open libuv handles; lg is freed when 0 after logs_free */
    bool         freeing;
    uint64_t     deadline;      /* uv_hrtime() bound for waits during logs_free */
};

static void logs_resume(logs *lg);
static void logs_file_flush(logs *lg);
static void logs_kick_cb(uv_idle_t *h);
static void logs_pipe_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf);

/* ---- small helpers ----------------------------------------------------- */

/* Returns the wall clock in Unix seconds. */
static double logs_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Rounds n up to a multiple of 8 (ring records stay aligned for the header). */
static size_t logs_pad8(size_t n) { return (n + 7) & ~(size_t)7; }


/* ---- files ------------------------------------------------------------- */

/* Reports a file failure once per episode (until a write succeeds again).
 * Direct to fd 2: this is the hub's own diagnostic, not worker output. */
static void logs_file_warn(logs_file *f, const char *what, int err)
{
    if (f->warned)
        return;
    f->warned = true;
    fprintf(stderr, "drover: cannot %s %s: %s; lines for it are lost until it works again (check --log-dir)\n",
            what, f->path, strerror(err));
}

/*
 * Opens the log directory dir for lg->dirfd use: returns an O_DIRECTORY fd,
 * or -1 with a message in err naming dir and what is wrong. Refused unless it
 * is owned by the hub's user (or root) and not writable by group or others:
 * anyone else who can write there could plant a symlink, FIFO or hard link
 * where a log file goes, and a root hub would write worker output through it.
 */
static int logs_dir_open(const char *dir, char *err, size_t errcap)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        snprintf(err, errcap, "cannot use log directory %s: %s; create it or choose another with --log-dir DIR",
                 dir, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (sb.st_uid != geteuid() && sb.st_uid != 0) {
        snprintf(err, errcap, "refusing log directory %s: owned by uid %u, not by the hub's user (uid %u) or root; "
                 "use a directory of your own with --log-dir DIR", dir, (unsigned)sb.st_uid, (unsigned)geteuid());
        close(fd);
        return -1;
    }
    if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(err, errcap, "refusing log directory %s: mode %04o lets %s write in it (chmod go-w %s, or choose "
                 "another with --log-dir DIR)", dir, (unsigned)(sb.st_mode & 07777),
                 (sb.st_mode & S_IWOTH) ? "other users" : "its group", dir);
        close(fd);
        return -1;
    }
    if (faccessat(fd, ".", W_OK | X_OK, AT_EACCESS) != 0) {
        snprintf(err, errcap, "cannot use log directory %s: %s; create it or choose another with --log-dir DIR",
                 dir, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Returns true if sb is a file the hub may append worker output to: a
 * regular file owned by the hub's user with a single link (a hard link to
 * another file would write into that file). */
static bool logs_file_safe(const struct stat *sb)
{
    return S_ISREG(sb->st_mode) && sb->st_uid == geteuid() && sb->st_nlink == 1;
}

/*
 * Opens f (relative to the log directory fd) for appending, creating it 0640,
 * never following a symlink and never blocking (a FIFO without a reader fails
 * with ENXIO at once instead of hanging the hub). Anything there that is not
 * a regular file of ours is renamed aside to NAME.unsafe-TIME with a warning
 * and a fresh file is created; it is never written through. Returns the fd
 * (O_NONBLOCK cleared; writes to a regular file block briefly by nature), or
 * -1 with errno set.
 */
static int logs_file_openat(logs *lg, logs_file *f)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY;
        int fd = openat(lg->dirfd, f->name, flags | (attempt ? O_EXCL : 0), 0640);
        struct stat sb;
        if (fd >= 0) {
            if (fstat(fd, &sb) == 0 && logs_file_safe(&sb)) {
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
                return fd;
            }
            close(fd);
        } else if (errno != ELOOP && errno != ENXIO && errno != EEXIST && errno != EOPNOTSUPP &&
                   errno != EISDIR && errno != ETXTBSY) {
            return -1;
        }
        /* Something unsafe is there: move it aside (the rename acts on the
         * entry itself, not on what a symlink points to). */
        if (fstatat(lg->dirfd, f->name, &sb, AT_SYMLINK_NOFOLLOW) != 0)
            continue;   /* gone meanwhile: try again */
        if (S_ISDIR(sb.st_mode)) {
            errno = EISDIR;   /* a directory cannot be written through: plain error */
            return -1;
        }
        char aside[LOGS_APP_MAX + 64];
        snprintf(aside, sizeof aside, "%s.unsafe-%lld", f->name, (long long)time(NULL));
        if (renameat(lg->dirfd, f->name, lg->dirfd, aside) != 0) {
            int e = errno;
            fprintf(stderr, "drover: %s is not a regular file owned by the hub's user and cannot be moved aside (%s); "
                    "not writing to it\n", f->path, strerror(e));
            errno = EPERM;
            return -1;
        }
        fprintf(stderr, "drover: %s was not a regular file owned by the hub's user (mode %06o, uid %u, %u links); "
                "moved it aside to %s/%s and started a new file\n", f->path, (unsigned)sb.st_mode,
                (unsigned)sb.st_uid, (unsigned)sb.st_nlink, lg->dir, aside);
    }
    errno = EPERM;
    return -1;
}

/* Opens f for appending (see logs_file_openat) and learns its size.
 * Returns 0, or -1 with f->fd == -1 and the failure reported. */
static int logs_file_open(logs *lg, logs_file *f)
{
    f->fd = logs_file_openat(lg, f);
    if (f->fd < 0) {
        f->retry_at = uv_now(lg->loop) + LOGS_RETRY_MS;
        logs_file_warn(f, "open", errno);
        return -1;
    }
    struct stat sb;
    f->size = fstat(f->fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    return 0;
}

/* Closes f if open. */
static void logs_file_close(logs_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
}

/* Closes st's files once no pipe of it is open any more (its worker was
 * scaled away, or is between restarts): a slot's files are opened again on
 * its next line (logs_file_flush), so descriptors are held only for slots
 * that can write, not for every worker id ever used. */
static void logs_stream_idle_close(logs_stream *st)
{
    logs *lg = st->lg;
    if (st->pipes)
        return;
    if (lg->wfile == &st->file[0] || lg->wfile == &st->file[1])
        logs_file_flush(lg);
    for (int i = 0; i < 2; i++)
        logs_file_close(&st->file[i]);
}

/* Returns true for the write errors that mean "no space now, maybe later". */
static bool logs_err_full(int err) { return err == ENOSPC || err == EDQUOT; }

/* Writes len bytes to f (opening it if needed). Returns the bytes written;
 * when short, errno tells why (ENOSPC/EDQUOT: the disk is full). */
static size_t logs_file_write(logs *lg, logs_file *f, const char *buf, size_t len)
{
    if (f->fd < 0 && uv_now(lg->loop) >= f->retry_at)
        logs_file_open(lg, f);
    if (f->fd < 0) {
        errno = EBADF;
        return 0;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(f->fd, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            break;
        }
        off += (size_t)w;
        f->size += (uint64_t)w;
    }
    return off;
}

/* Keeps len bytes for f until the disk has room again (after what f already
 * holds, so order is kept). Only lines that cannot be paused (an agent's
 * datagram, a pipe closed at exit) can overflow the fixed LOGS_PEND_CAP:
 * those are lost, reported. */
static void logs_file_hold(logs_file *f, const char *buf, size_t len)
{
    if (!f->pend && !(f->pend = malloc(LOGS_PEND_CAP))) {
        fprintf(stderr, "drover: out of memory holding log output for %s; %zu bytes lost\n", f->path, len);
        return;
    }
    if (LOGS_PEND_CAP - f->plen < len) {
        fprintf(stderr, "drover: log disk full and %s holds %zu bytes already; %zu bytes lost\n",
                f->path, f->plen, len);
        return;
    }
    memcpy(f->pend + f->plen, buf, len);
    f->plen += len;
}

static void logs_disk_retry(uv_timer_t *t);

/* Enters the disk-full state after a write to f failed with err: pipes pause
 * (logs_pipe_drain blocks) and a timer retries. Warned once per episode. */
static void logs_disk_full(logs *lg, logs_file *f, int err)
{
    if (lg->disk_full)
        return;
    lg->disk_full = true;
    fprintf(stderr, "drover: log disk full: cannot write %s: %s; worker output paused until space frees\n",
            f->path, strerror(err));
    if (!lg->freeing)
        uv_timer_start(&lg->disk_timer, logs_disk_retry, LOGS_DISK_RETRY_MS, LOGS_DISK_RETRY_MS);
}

/* Writes what f holds; returns true when nothing is held any more. */
static bool logs_file_unhold(logs *lg, logs_file *f)
{
    if (f->plen == 0)
        return true;
    size_t w = logs_file_write(lg, f, f->pend, f->plen);
    memmove(f->pend, f->pend + w, f->plen - w);
    f->plen -= w;
    if (f->plen == 0) {
        free(f->pend);
        f->pend = NULL;
        f->warned = false;
        return true;
    }
    if (!logs_err_full(errno)) {
        logs_file_warn(f, "write", errno);   /* not a full disk: lost, as any failing write */
        free(f->pend);
        f->pend = NULL;
        f->plen = 0;
        return true;
    }
    return false;
}

/* The disk timer: writes every held byte it can; once all is written, says
 * so, stops, and lets the paused pipes go on. */
static void logs_disk_retry(uv_timer_t *t)
{
    logs *lg = t->data;
    bool all = true;
    for (logs_stream *st = lg->streams; st; st = st->next)
        for (int i = 0; i < 2; i++)
            all &= logs_file_unhold(lg, &st->file[i]);
    if (!all)
        return;
    uv_timer_stop(t);
    lg->disk_full = false;
    fprintf(stderr, "drover: log disk has space again in %s; worker output resumed\n", lg->dir);
    for (logs_stream *st = lg->streams; st; st = st->next)
        logs_stream_idle_close(st);
    if (lg->bhead && !lg->freeing)
        uv_idle_start(&lg->kick, logs_kick_cb);
}

/* Writes the file scratch to its file with one write() (more only on short
 * writes), then empties it. On a full disk (ENOSPC, EDQUOT) the rest is held
 * for the file, in order, and the disk timer retries it: nothing is dropped
 * or torn, as the pipes pause meanwhile. Any other failure loses this batch
 * (reported once): the file cannot take it and holding it would not help. */
static void logs_file_flush(logs *lg)
{
    logs_file *f = lg->wfile;
    size_t len = lg->wlen;
    lg->wlen = 0;
    if (!f || len == 0)
        return;
    if (!logs_file_unhold(lg, f)) {
        logs_file_hold(f, lg->wbuf, len);   /* still full: after what is held */
        return;
    }
    size_t w = logs_file_write(lg, f, lg->wbuf, len);
    if (w == len) {
        f->warned = false;
        return;
    }
    int err = errno;
    if (logs_err_full(err)) {
        logs_file_hold(f, lg->wbuf + w, len - w);
        logs_disk_full(lg, f, err);
    } else if (err != EBADF) {
        logs_file_warn(f, "write", err);
    }
}

/* A file to delete off the loop's thread (its own dup of the directory fd). */
typedef struct {
    uv_work_t req;
    int       dirfd;
    char      name[LOGS_APP_MAX + 80];
} logs_drop;

static void logs_drop_work(uv_work_t *w)
{
    logs_drop *d = w->data;
    unlinkat(d->dirfd, d->name, 0);
}

static void logs_drop_done(uv_work_t *w, int status)
{
    (void)status;
    logs_drop *d = w->data;
    close(d->dirfd);
    free(d);
}

/*
 * Removes the oldest rotated file NAME.keep without blocking the loop:
 * freeing a large file's cached pages takes the kernel tens of
 * milliseconds, which `renameat` over it would spend on this thread. It is
 * renamed aside (to a name that does not exist: cheap) and unlinked by
 * libuv's thread pool; on any failure it is simply left to be replaced.
 */
static void logs_file_drop_oldest(logs *lg, const logs_file *f)
{
    static unsigned seq;
    logs_drop *d = calloc(1, sizeof *d);
    if (!d)
        return;
    char oldest[LOGS_APP_MAX + 64];
    snprintf(oldest, sizeof oldest, "%s.%u", f->name, f->keep);
    snprintf(d->name, sizeof d->name, "%s.%u.dropping-%u", f->name, f->keep, seq++);
    d->req.data = d;
    if (renameat(lg->dirfd, oldest, lg->dirfd, d->name) != 0 ||
        (d->dirfd = fcntl(lg->dirfd, F_DUPFD_CLOEXEC, 0)) < 0) {
        free(d);
        return;
    }
    if (uv_queue_work(lg->loop, &d->req, logs_drop_work, logs_drop_done) != 0) {
        unlinkat(d->dirfd, d->name, 0);
        close(d->dirfd);
        free(d);
    }
}

/* Rotates f: NAME.(keep-1) → NAME.keep (the oldest deleted), …, NAME →
 * NAME.1, then opens a fresh NAME. Call with the scratch flushed. */
static void logs_file_rotate(logs *lg, logs_file *f)
{
    char from[LOGS_APP_MAX + 64], to[LOGS_APP_MAX + 64];
    logs_file_close(f);
    logs_file_drop_oldest(lg, f);
    /* Relative to the directory fd: the names are resolved in the directory
     * that was checked, whatever happens to its path meanwhile. */
    for (unsigned i = f->keep; i >= 2; i--) {
        snprintf(from, sizeof from, "%s.%u", f->name, i - 1);
        snprintf(to, sizeof to, "%s.%u", f->name, i);
        renameat(lg->dirfd, from, lg->dirfd, to);   /* ENOENT while fewer than keep exist: fine */
    }
    snprintf(to, sizeof to, "%s.1", f->name);
    bool moved = renameat(lg->dirfd, f->name, lg->dirfd, to) == 0 || errno == ENOENT;
    int err = errno;
    if (logs_file_open(lg, f) == 0 && !moved) {
        /* Could not move it away (permissions?): keep appending, and try
         * again only after another max_bytes rather than on every line. */
        logs_file_warn(f, "rotate", err);
        f->size = 0;
    }
}

/* Appends one line (newline added) to f through the scratch, rotating first
 * when the line would take the file past max_bytes. A line longer than
 * max_bytes still goes whole into a fresh file: lines are never torn. */
static void logs_file_put(logs *lg, logs_file *f, const char *s, size_t len)
{
    if (lg->wfile != f) {
        logs_file_flush(lg);
        lg->wfile = f;
    }
    uint64_t pending = f->size + f->plen + lg->wlen;
    /* Not while bytes are held: the held part of a line must follow its
     * start in the same file. */
    if (pending > 0 && pending + len + 1 > f->max_bytes && f->plen == 0) {
        logs_file_flush(lg);
        logs_file_rotate(lg, f);
    }
    if (lg->wlen + len + 1 > LOGS_WBUF)
        logs_file_flush(lg);
    memcpy(lg->wbuf + lg->wlen, s, len);
    lg->wbuf[lg->wlen + len] = '\n';
    lg->wlen += len + 1;
}

/* ---- the slot's ring --------------------------------------------------- */

/* Returns true if a record cannot start at byte position pos (too little
 * room before the end of the buffer, or a wrap marker): the reader skips to 0. */
static bool logs_ring_wraps_at(const logs_stream *st, uint64_t pos)
{
    size_t off = (size_t)(pos % st->rcap);
    if (st->rcap - off < sizeof(logs_rec))
        return true;
    const logs_rec *r = (const logs_rec *)(st->ring + off);
    return r->len == LOGS_RING_WRAP;
}

/* Removes the oldest line (and any wrap gap before it). Ring must not be empty. */
static void logs_ring_evict(logs_stream *st)
{
    if (logs_ring_wraps_at(st, st->rtail))
        st->rtail += st->rcap - st->rtail % st->rcap;
    const logs_rec *r = (const logs_rec *)(st->ring + st->rtail % st->rcap);
    st->rtail += sizeof(logs_rec) + logs_pad8(r->len);
    st->rcount--;
}

/* Stores a line in the ring, evicting the oldest lines until it fits. Text is
 * kept contiguous (a wrap gap is left instead of splitting it) so the tail can
 * hand out pointers into the ring. A line larger than the whole ring is
 * truncated here only; the file has it whole. */
static void logs_ring_put(logs_stream *st, double ts, logs_fd which, const char *s, size_t len)
{
    if (len > st->rcap - sizeof(logs_rec))
        len = st->rcap - sizeof(logs_rec);
    size_t need = sizeof(logs_rec) + logs_pad8(len);
    for (;;) {
        if (st->rcount == 0)
            st->rhead = st->rtail = 0;   /* empty: restart at 0 so any line fits */
        size_t off = (size_t)(st->rhead % st->rcap);
        size_t gap = st->rcap - off < need ? st->rcap - off : 0;
        if (st->rcap - (size_t)(st->rhead - st->rtail) >= gap + need) {
            if (gap) {
                if (gap >= sizeof(logs_rec))
                    ((logs_rec *)(st->ring + off))->len = LOGS_RING_WRAP;
                st->rhead += gap;
                off = 0;
            }
            logs_rec *r = (logs_rec *)(st->ring + off);
            r->ts = ts;
            r->len = (uint32_t)len;
            r->stream = (uint32_t)which;
            memcpy(r + 1, s, len);
            st->rhead += need;
            st->rcount++;
            return;
        }
        logs_ring_evict(st);
    }
}

/* ---- echo to the hub's stderr ----------------------------------------- */

/* Called when fd 2 can take more: writes what it can; stops polling once the
 * queue is empty; lets blocked pipes go on once it drained below low water. */
static void logs_echo_writable(uv_poll_t *h, int status, int events);

/* Gives up the echo for good (the reader of our stderr is gone: EPIPE, EIO):
 * nobody can see it any more, and pipes must not stay blocked on it. */
static void logs_echo_disable(logs *lg)
{
    lg->emode = LOGS_ECHO_OFF;
    lg->ehead = lg->etail = 0;
    if (lg->epoll_active) {
        uv_poll_stop(&lg->epoll);
        lg->epoll_active = false;
    }
    if (lg->bhead && !lg->freeing)
        uv_idle_start(&lg->kick, logs_kick_cb);
}

/*
 * Sets iov to the next bytes of the echo queue to write: at most PIPE_BUF,
 * ending after the last '\n' among them when there is one. Why: a write of
 * at most PIPE_BUF bytes to a pipe is atomic (all or EAGAIN), so lines the
 * hub itself prints straight to fd 2 (its events) never land inside an
 * echoed line, and a partial write never leaves half a line behind. Returns
 * the iovec count (1 or 2: the bytes may wrap around the queue's end).
 */
static int logs_echo_chunk(const logs *lg, struct iovec iov[2])
{
    size_t used = (size_t)(lg->ehead - lg->etail);
    size_t n = used < PIPE_BUF ? used : PIPE_BUF;
    size_t off = (size_t)(lg->etail % LOGS_ECHO_CAP);
    size_t n1 = n < LOGS_ECHO_CAP - off ? n : LOGS_ECHO_CAP - off;
    const char *nl;
    if (n > n1 && (nl = memrchr(lg->ebuf, '\n', n - n1)) != NULL)
        n = n1 + (size_t)(nl - lg->ebuf) + 1;
    else if ((nl = memrchr(lg->ebuf + off, '\n', n1)) != NULL)
        n = n1 = (size_t)(nl - (lg->ebuf + off)) + 1;
    iov[0] = (struct iovec){lg->ebuf + off, n1};
    iov[1] = (struct iovec){lg->ebuf, n - n1};
    return n > n1 ? 2 : 1;
}

/* Writes queued echo bytes without blocking. On EAGAIN: with deadline == 0
 * starts the writable poll and returns; otherwise waits with poll() until
 * uv_hrtime() reaches deadline (only logs_free and forced closes do that).
 * In SYNC mode (fd 2 is a file or device that cannot be polled) writes block. */
static void logs_echo_flush(logs *lg, uint64_t deadline)
{
    while (lg->emode != LOGS_ECHO_OFF && lg->ehead != lg->etail) {
        struct iovec iov[2];
        int cnt = logs_echo_chunk(lg, iov);
        ssize_t w;
        if (lg->esock) {
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
            w = sendmsg(lg->efd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        } else {
            w = writev(lg->efd, iov, cnt);
        }
        if (w > 0) {
            lg->etail += (uint64_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            if (lg->emode == LOGS_ECHO_SYNC || deadline) {
                int ms = -1;
                if (lg->emode != LOGS_ECHO_SYNC) {
                    uint64_t t = uv_hrtime();
                    if (t >= deadline)
                        return;
                    ms = (int)((deadline - t) / 1000000) + 1;
                }
                struct pollfd pf = {.fd = lg->efd, .events = POLLOUT};
                if (poll(&pf, 1, ms) < 0 && errno != EINTR)
                    return;
                continue;
            }
            if (!lg->epoll_active) {
                uv_poll_start(&lg->epoll, UV_WRITABLE, logs_echo_writable);
                lg->epoll_active = true;
            }
            return;
        }
        logs_echo_disable(lg);
        return;
    }
}

static void logs_echo_writable(uv_poll_t *h, int status, int events)
{
    logs *lg = h->data;
    (void)status;   /* an error shows up as a failing write below */
    (void)events;
    logs_echo_flush(lg, 0);
    if (lg->ehead == lg->etail && lg->epoll_active) {
        uv_poll_stop(&lg->epoll);
        lg->epoll_active = false;
    }
    if (lg->ehead - lg->etail <= LOGS_ECHO_LOW)
        logs_resume(lg);
}

/* Returns the free bytes in the echo queue (unbounded when the echo is off). */
static size_t logs_echo_room(const logs *lg)
{
    if (lg->emode == LOGS_ECHO_OFF)
        return SIZE_MAX;
    return LOGS_ECHO_CAP - (size_t)(lg->ehead - lg->etail);
}

/* Copies len bytes into the echo queue, which must have room. */
static void logs_echo_copy(logs *lg, const char *s, size_t len)
{
    size_t off = (size_t)(lg->ehead % LOGS_ECHO_CAP);
    size_t n1 = len < LOGS_ECHO_CAP - off ? len : LOGS_ECHO_CAP - off;
    memcpy(lg->ebuf + off, s, n1);
    memcpy(lg->ebuf, s + n1, len - n1);
    lg->ehead += len;
}

/*
 * Returns true if the echo can take a line of len bytes of st's stream
 * `which` now (always when the echo is off). When the queue is full it first
 * tries a non-blocking flush; with force (logs_free, or an old pipe closed to
 * stay within LOGS_PIPES_MAX) it waits up to lg->deadline and then lets the
 * line go to the file and ring without its echo (logs_emit checks the room).
 */
static bool logs_echo_reserve(logs *lg, const logs_stream *st, logs_fd which, size_t len, bool force)
{
    size_t need = st->pfxlen[which] + (lg->etty ? TEXT_SAFE_MAX(len) : len) + 1;
    if (logs_echo_room(lg) >= need)
        return true;
    logs_echo_flush(lg, force ? lg->deadline : 0);
    return force || logs_echo_room(lg) >= need;
}

/*
 * Queues "[app:id] line\n" (or "[app:id!] …" for stderr) when there is
 * room. On a terminal the line is made safe first (^[ for ESC, \xNN for a
 * byte that is not UTF-8), so a worker cannot drive the operator's
 * terminal; a pipe, socket or file gets the exact bytes, as the log file.
 */
static void logs_echo_put(logs *lg, const logs_stream *st, logs_fd which, const char *s, size_t len)
{
    static char safe[TEXT_SAFE_MAX(LOGS_LINE_MAX)];   /* the loop is single-threaded */
    if (lg->emode == LOGS_ECHO_OFF)
        return;
    if (lg->etty) {
        len = text_escape_into(s, len, safe, sizeof safe);
        s = safe;
    }
    if (logs_echo_room(lg) < st->pfxlen[which] + len + 1)
        return;
    logs_echo_copy(lg, st->pfx[which], st->pfxlen[which]);
    logs_echo_copy(lg, s, len);
    logs_echo_copy(lg, "\n", 1);
}

/*
 * Sets up the echo on a descriptor of our own for fd 2, so that making it
 * non-blocking cannot affect anyone else: O_NONBLOCK belongs to the open file
 * description, which fd 2 shares with the hub's own stdio, with the parent
 * shell (a terminal left non-blocking breaks it) and with the container
 * runtime. A terminal is reopened by name and a pipe through /proc (both give
 * a new description); a stream socket (journald) is dup'ed and written with
 * send(MSG_DONTWAIT). Anything else (a regular file, /dev/null) cannot be
 * polled and never blocks for long: written synchronously; so is a terminal
 * that cannot be reopened (libuv's uv_tty_init does the same).
 */
static void logs_echo_open(logs *lg)
{
    struct stat sb;
    int fd = -1;

    lg->emode = LOGS_ECHO_OFF;
    lg->efd = -1;
    if (fstat(STDERR_FILENO, &sb) != 0)
        return;   /* no stderr at all: nobody to echo to */
    lg->etty = isatty(STDERR_FILENO);
    if (lg->etty) {
        char name[PATH_MAX];
        if (ttyname_r(STDERR_FILENO, name, sizeof name) == 0)
            fd = open(name, O_WRONLY | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    } else if (S_ISFIFO(sb.st_mode)) {
        fd = open("/proc/self/fd/2", O_WRONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0) {
            /* No /proc: share fd 2's description after all, as libuv's
             * uv_pipe_open would; a blocked loop would be worse. */
            fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
            if (fd >= 0)
                fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        }
    } else if (S_ISSOCK(sb.st_mode)) {
        int type = 0;
        socklen_t tl = sizeof type;
        if (getsockopt(STDERR_FILENO, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_STREAM) {
            fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
            lg->esock = fd >= 0;
        }
    }
    if (fd >= 0 && uv_poll_init(lg->loop, &lg->epoll, fd) == 0) {
        lg->epoll.data = lg;
        lg->epoll_init = true;
        lg->handles++;
        lg->efd = fd;
        lg->emode = LOGS_ECHO_POLL;
        return;
    }
    if (fd >= 0)
        close(fd);
    lg->esock = false;
    lg->efd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    if (lg->efd >= 0)
        lg->emode = LOGS_ECHO_SYNC;
}

/* ---- splitting --------------------------------------------------------- */

#define LOGS_FBUF (6 * LOGS_UTF8_CAP(LOGS_LINE_MAX) + 512)   /* a decorated line: escapes at most 6x */

/*
 * The file form of a line when the manager decorates them: "TS line" with
 * timestamps, or {"ts","app","id","pid","stream","line"} with json (the line
 * made valid UTF-8, then escaped). TS is the time the hub read the line,
 * RFC 3339 in UTC with milliseconds, never earlier than the file's last one.
 * Returns the length of the result in lg->fbuf.
 */
static size_t logs_decorate(logs *lg, logs_stream *st, logs_fd which, pid_t pid, const char *s, size_t len)
{
    logs_file *f = &st->file[which];
    double ts = lg->now > f->last_ts ? lg->now : f->last_ts;
    f->last_ts = ts;
    time_t sec = (time_t)ts;
    int ms = (int)((ts - (double)sec) * 1000.0);
    ms = ms < 0 ? 0 : ms > 999 ? 999 : ms;
    struct tm tm;
    char t[48];
    gmtime_r(&sec, &tm);
    size_t tn = strftime(t, sizeof t, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(t + tn, sizeof t - tn, ".%03dZ", ms);
    char *o = lg->fbuf;
    if (!st->json) {
        size_t n = (size_t)snprintf(o, LOGS_FBUF, "%s ", t);
        memcpy(o + n, s, len);
        return n + len;
    }
    size_t n = (size_t)snprintf(o, LOGS_FBUF, "{\"ts\":\"%s\",\"app\":\"%s\",\"id\":%d,\"pid\":%ld,\"stream\":\"%s\",\"line\":\"",
                                t, st->app, st->id, (long)pid, which == LOGS_ERR ? "err" : "out");
    size_t u = logs_line_utf8(s, len, lg->ubuf, LOGS_UTF8_CAP(LOGS_LINE_MAX));
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < u; i++) {
        unsigned char c = (unsigned char)lg->ubuf[i];
        if (c == '"' || c == '\\') {
            o[n++] = '\\';
            o[n++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o[n++] = '\\';
            o[n++] = 'u';
            o[n++] = '0';
            o[n++] = '0';
            o[n++] = hex[c >> 4];
            o[n++] = hex[c & 15];
        } else {
            o[n++] = (char)c;
        }
    }
    o[n++] = '"';
    o[n++] = '}';
    return n;
}

/* Passes one line (without its newline) from pid to the file, the ring and the echo. */
static void logs_emit(logs_stream *st, logs_fd which, pid_t pid, const char *s, size_t len)
{
    logs *lg = st->lg;
    if (st->timestamps || st->json)
        logs_file_put(lg, &st->file[which], lg->fbuf, logs_decorate(lg, st, which, pid, s, len));
    else
        logs_file_put(lg, &st->file[which], s, len);
    logs_ring_put(st, lg->now, which, s, len);
    logs_echo_put(lg, st, which, s, len);
    if (lg->on_line) {
        logs_line line = {.ts = lg->now, .stream = which, .text = s, .len = len,
                          .app = st->app, .id = st->id};
        lg->on_line(lg->on_line_ctx, st->app, st->id, &line);
    }
}

/*
 * Emits every complete line in p's buffer: a line ends at '\n', or after
 * LOGS_LINE_MAX bytes without one (the rest follows as further pieces). With
 * final, also the partial rest (a newline is added). Stops early, keeping the
 * rest, when the echo has no room (LOGS_DRAIN_BLOCKED; never with force).
 * The rest moves to the front of the buffer; then the batch goes to the file
 * and the echo queue starts draining.
 */
static logs_drain_result logs_pipe_drain(logs_pipe *p, bool final, bool force)
{
    logs_stream *st = p->st;
    logs *lg = st->lg;
    logs_drain_result r = LOGS_DRAIN_DONE;
    size_t off = 0;

    lg->now = logs_clock();
    while (off < p->len) {
        const char *s = p->buf + off;
        size_t rest = p->len - off;
        /* LINE_MAX + 1: a line of exactly LOGS_LINE_MAX bytes stays whole
         * rather than becoming a piece and a spurious empty line. */
        const char *nl = memchr(s, '\n', rest < LOGS_LINE_MAX + 1 ? rest : LOGS_LINE_MAX + 1);
        size_t len, used;
        if (nl) {
            len = (size_t)(nl - s);
            used = len + 1;
        } else if (rest > LOGS_LINE_MAX) {
            len = used = LOGS_LINE_MAX;
        } else if (final) {
            len = used = rest;
        } else {
            break;
        }
        if ((lg->disk_full && !force) || !logs_echo_reserve(lg, st, p->which, len, force)) {
            r = LOGS_DRAIN_BLOCKED;
            break;
        }
        logs_emit(st, p->which, p->pid, s, len);
        off += used;
    }
    memmove(p->buf, p->buf + off, p->len - off);
    p->len -= off;
    logs_file_flush(lg);
    logs_echo_flush(lg, 0);
    return r;
}

/*
 * Adds one line that did not come through a pipe (an agent's drover_log) to
 * the stream's file, ring, echo and hook. Never blocks: when the echo queue
 * is full the line still reaches file and ring (force), as the worker that
 * sent it cannot be slowed down through a pipe.
 */
void logs_stream_line(logs_stream *st, logs_fd which, const char *s, size_t len)
{
    logs *lg = st->lg;
    if (len > LOGS_LINE_MAX)
        len = LOGS_LINE_MAX;
    lg->now = logs_clock();
    logs_echo_reserve(lg, st, which, len, true);
    logs_emit(st, which, st->pid, s, len);
    logs_file_flush(lg);
    logs_echo_flush(lg, 0);
    logs_stream_idle_close(st);
}

/* ---- views ------------------------------------------------------------ */

size_t logs_line_utf8(const char *text, size_t len, char *out, size_t cap)
{
    static const char repl[3] = {(char)0xef, (char)0xbf, (char)0xbd};
    const unsigned char *s = (const unsigned char *)text;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_decode(s + i, len - i, &cp);
        const char *src = n ? text + i : repl;
        size_t w = n ? n : sizeof repl;
        if (cap - o < w)
            break;
        memcpy(out + o, src, w);
        o += w;
        i += n ? n : 1;
    }
    return o;
}

/* ---- pipes ------------------------------------------------------------- */

/* Final release of a pipe once libuv closed it; frees lg if it was the last
 * handle after logs_free. */
static void logs_pipe_closed(uv_handle_t *h);
static void logs_handle_closed(uv_handle_t *h);

/* Closes p (all its bytes were emitted); its writers get EPIPE from now on. */
static void logs_pipe_close(logs_pipe *p)
{
    p->closing = true;
    uv_close((uv_handle_t *)&p->h, logs_pipe_closed);
}

/* Appends p to the blocked queue and stops reading it. */
static void logs_pipe_block(logs_pipe *p)
{
    logs *lg = p->st->lg;
    uv_read_stop((uv_stream_t *)&p->h);
    p->blocked = true;
    p->bnext = NULL;
    if (lg->btail)
        lg->btail->bnext = p;
    else
        lg->bhead = p;
    lg->btail = p;
}

/* Removes p from the blocked queue if it is there. */
static void logs_pipe_unblock(logs_pipe *p)
{
    logs *lg = p->st->lg;
    if (!p->blocked)
        return;
    logs_pipe *prev = NULL;
    for (logs_pipe *q = lg->bhead; q; prev = q, q = q->bnext) {
        if (q != p)
            continue;
        if (prev)
            prev->bnext = q->bnext;
        else
            lg->bhead = q->bnext;
        if (lg->btail == q)
            lg->btail = prev;
        break;
    }
    p->blocked = false;
    p->bnext = NULL;
}

/* Hands libuv the free end of the pipe's buffer (at least
 * LOGS_PIPE_BUF - LOGS_LINE_MAX bytes whenever the pipe is reading). */
static void logs_pipe_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    logs_pipe *p = h->data;
    (void)suggested;
    buf->base = p->buf + p->len;
    buf->len = LOGS_PIPE_BUF - p->len;
}

/* Continues after a drain: blocked → queue; finished at EOF → close;
 * otherwise (re)starts reading. */
static void logs_pipe_after(logs_pipe *p, logs_drain_result r)
{
    if (r == LOGS_DRAIN_BLOCKED)
        logs_pipe_block(p);
    else if (p->eof)
        logs_pipe_close(p);
    else
        uv_read_start((uv_stream_t *)&p->h, logs_pipe_alloc, logs_pipe_read);
}

/* Splits what arrived; at EOF (or a read error, same thing for a pipe)
 * emits the partial last line too and closes. */
static void logs_pipe_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    logs_pipe *p = h->data;
    (void)buf;
    if (nread == 0)
        return;   /* EAGAIN */
    if (nread > 0) {
        logs *lg = p->st->lg;
        p->len += (size_t)nread;
        lg->turn_bytes += (size_t)nread;
        if (logs_pipe_drain(p, false, false) == LOGS_DRAIN_BLOCKED) {
            logs_pipe_block(p);
        } else if (lg->turn_bytes >= LOGS_TURN_BYTES) {
            /* A worker that writes without pause would keep libuv reading
             * its pipe for the whole turn (it reads on while data comes):
             * past LOGS_TURN_BYTES the pipe waits for the next turn, so
             * control requests and other workers are served in between. */
            logs_pipe_block(p);
            uv_idle_start(&lg->kick, logs_kick_cb);
        }
        return;
    }
    p->eof = true;
    uv_read_stop(h);
    logs_pipe_after(p, logs_pipe_drain(p, true, false));
}

/*
 * Lets blocked pipes go on, oldest-blocked first, until one blocks again
 * (then the echo is full and the rest would block at once anyway). Runs from
 * the echo's writable callback or the kick, never inside a drain.
 */
static void logs_resume(logs *lg)
{
    while (lg->bhead && !lg->freeing) {
        logs_pipe *p = lg->bhead;
        logs_pipe_unblock(p);
        logs_drain_result r = logs_pipe_drain(p, p->eof, false);
        logs_pipe_after(p, r);
        if (r == LOGS_DRAIN_BLOCKED)
            break;
    }
}

/* The kick: resume blocked pipes once, from a fresh loop iteration. */
static void logs_kick_cb(uv_idle_t *h)
{
    logs *lg = h->data;
    uv_idle_stop(h);
    lg->turn_bytes = 0;
    logs_resume(lg);
}

/* Drains p completely (echo forced, bounded by lg->deadline) and closes it.
 * What the writer already put in the kernel pipe is read first, so closing
 * loses nothing that was written before; LOGS_FINAL_READ bounds this in case
 * the writer keeps going. */
static void logs_pipe_force_close(logs_pipe *p)
{
    uv_os_fd_t fd;
    size_t total = 0;
    logs_pipe_unblock(p);
    uv_read_stop((uv_stream_t *)&p->h);
    logs_pipe_drain(p, false, true);
    while (!p->eof && total < LOGS_FINAL_READ && uv_fileno((uv_handle_t *)&p->h, &fd) == 0) {
        ssize_t n = read(fd, p->buf + p->len, LOGS_PIPE_BUF - p->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;   /* EAGAIN: nothing more was written; 0: EOF */
        p->len += (size_t)n;
        total += (size_t)n;
        logs_pipe_drain(p, false, true);
    }
    logs_pipe_drain(p, true, true);
    logs_pipe_close(p);
}

/* Starts reading fd as stream `which` of st; takes ownership of fd.
 * Returns 0 or a negative libuv error (fd closed). */
static int logs_pipe_new(logs_stream *st, logs_fd which, int fd)
{
    logs *lg = st->lg;
    /* Later workers must not inherit our read ends: a pipe whose reader is
     * also elsewhere never gives its writer EPIPE when we close it. */
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    /* malloc and clear the header only: calloc would zero (and so make
     * resident) the 16 KiB buffer of every pipe, 2 MiB for 64 idle workers;
     * the buffer's bytes are only read below p->len. */
    logs_pipe *p = malloc(sizeof *p);
    if (!p) {
        close(fd);
        return UV_ENOMEM;
    }
    memset(p, 0, offsetof(logs_pipe, buf));
    p->st = st;
    p->which = which;
    int rc = uv_pipe_init(lg->loop, &p->h, 0);
    if (rc == 0)
        rc = uv_pipe_open(&p->h, fd);   /* also makes fd non-blocking */
    if (rc != 0) {
        close(fd);
        free(p);
        return rc;
    }
    p->h.data = p;
    lg->handles++;
    logs_pipe **tail = &st->pipes;
    while (*tail)
        tail = &(*tail)->next;
    *tail = p;
    rc = uv_read_start((uv_stream_t *)&p->h, logs_pipe_alloc, logs_pipe_read);
    if (rc != 0)
        logs_pipe_close(p);
    return rc;
}

/* ---- streams and the manager ------------------------------------------ */

/* Frees a stream's memory (its pipes are already closed). */
static void logs_stream_destroy(logs_stream *st)
{
    for (int i = 0; i < 2; i++) {
        logs_file_close(&st->file[i]);
        free(st->file[i].path);
        free(st->file[i].name);
        free(st->file[i].pend);
    }
    free(st->ring);
    free(st);
}

/* Frees everything; called when the last handle closed after logs_free. */
static void logs_destroy(logs *lg)
{
    while (lg->streams) {
        logs_stream *st = lg->streams;
        lg->streams = st->next;
        logs_stream_destroy(st);
    }
    if (lg->efd >= 0)
        close(lg->efd);
    if (lg->dirfd >= 0)
        close(lg->dirfd);
    free(lg->ebuf);
    free(lg->wbuf);
    free(lg->fbuf);
    free(lg->ubuf);
    free(lg->dir);
    free(lg);
}

static void logs_handle_closed(uv_handle_t *h)
{
    logs *lg = h->data;
    if (--lg->handles == 0 && lg->freeing)
        logs_destroy(lg);
}

static void logs_pipe_closed(uv_handle_t *h)
{
    logs_pipe *p = h->data;
    logs_stream *st = p->st;
    logs *lg = st->lg;
    for (logs_pipe **pp = &st->pipes; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    free(p);
    if (!lg->freeing)
        logs_stream_idle_close(st);
    if (--lg->handles == 0 && lg->freeing)
        logs_destroy(lg);
}

logs *logs_new(uv_loop_t *loop, const logs_config *cfg, char *err, size_t errcap)
{
    if (!cfg || !cfg->dir || !*cfg->dir) {
        snprintf(err, errcap, "no log directory given; use --log-dir DIR");
        return NULL;
    }
    if (strlen(cfg->dir) + LOGS_APP_MAX + 48 >= PATH_MAX) {
        snprintf(err, errcap, "log directory path too long: %s", cfg->dir);
        return NULL;
    }
    if (paths_mkdirs(cfg->dir) != 0) {
        snprintf(err, errcap, "cannot use log directory %s: %s; create it or choose another with --log-dir DIR",
                 cfg->dir, strerror(errno));
        return NULL;
    }
    int dirfd = logs_dir_open(cfg->dir, err, errcap);
    if (dirfd < 0)
        return NULL;
    logs *lg = calloc(1, sizeof *lg);
    if (!lg || !(lg->dir = strdup(cfg->dir)) || !(lg->wbuf = malloc(LOGS_WBUF)) ||
        (cfg->echo && !(lg->ebuf = malloc(LOGS_ECHO_CAP)))) {
        snprintf(err, errcap, "out of memory for the log buffers");
        if (lg) {
            free(lg->wbuf);
            free(lg->dir);
        }
        free(lg);
        close(dirfd);
        return NULL;
    }
    if (cfg->timestamps || cfg->json) {
        lg->fbuf = malloc(LOGS_FBUF);
        lg->ubuf = malloc(LOGS_UTF8_CAP(LOGS_LINE_MAX));
        if (!lg->fbuf || !lg->ubuf) {
            snprintf(err, errcap, "out of memory for the log buffers");
            free(lg->fbuf);
            free(lg->ubuf);
            free(lg->wbuf);
            free(lg->ebuf);
            free(lg->dir);
            free(lg);
            close(dirfd);
            return NULL;
        }
        lg->timestamps = cfg->timestamps;
        lg->json = cfg->json;
    }
    lg->dirfd = dirfd;
    lg->loop = loop;
    lg->max_bytes = cfg->max_bytes ? cfg->max_bytes : LOGS_DEF_MAX_BYTES;
    lg->keep = cfg->keep ? cfg->keep : LOGS_DEF_KEEP;
    lg->ring_bytes = cfg->ring_bytes ? cfg->ring_bytes : LOGS_DEF_RING;
    if (lg->ring_bytes < LOGS_RING_MIN)
        lg->ring_bytes = LOGS_RING_MIN;
    lg->ring_bytes &= ~(size_t)7;
    lg->efd = -1;
    uv_idle_init(loop, &lg->kick);
    lg->kick.data = lg;
    uv_timer_init(loop, &lg->disk_timer);
    lg->disk_timer.data = lg;
    lg->handles = 2;
    if (cfg->echo)
        logs_echo_open(lg);
    return lg;
}

void logs_on_line(logs *lg, logs_line_fn fn, void *ctx)
{
    lg->on_line = fn;
    lg->on_line_ctx = ctx;
}

logs_stream *logs_stream_find(logs *lg, const char *app, int id)
{
    for (logs_stream *st = lg->streams; st; st = st->next)
        if (st->id == id && strcmp(st->app, app) == 0)
            return st;
    return NULL;
}

logs_stream *logs_stream_get(logs *lg, const char *app, int id, char *err, size_t errcap)
{
    for (logs_stream *st = lg->streams; st; st = st->next)
        if (st->id == id && strcmp(st->app, app) == 0)
            return st;
    if (!ctl_app_name_ok(app) || id < 0) {
        snprintf(err, errcap, "cannot name log files for app '%s' worker %d: app names are " CTL_APP_NAME_RULE,
                 app, id);
        return NULL;
    }
    logs_stream *st = calloc(1, sizeof *st);
    if (!st || !(st->ring = malloc(lg->ring_bytes))) {
        free(st);
        snprintf(err, errcap, "out of memory for the log ring of %s:%d", app, id);
        return NULL;
    }
    st->lg = lg;
    st->id = id;
    st->rcap = lg->ring_bytes;
    st->file[0].fd = st->file[1].fd = -1;   /* before any failure path closes them */
    st->timestamps = lg->timestamps;
    st->json = lg->json;
    for (int i = 0; i < 2; i++) {
        st->file[i].max_bytes = lg->max_bytes;
        st->file[i].keep = lg->keep;
    }
    snprintf(st->app, sizeof st->app, "%s", app);
    st->pfxlen[LOGS_OUT] = (size_t)snprintf(st->pfx[LOGS_OUT], sizeof st->pfx[0], "[%s:%d] ", app, id);
    st->pfxlen[LOGS_ERR] = (size_t)snprintf(st->pfx[LOGS_ERR], sizeof st->pfx[1], "[%s:%d!] ", app, id);
    static const char *const suffix[2] = {"out", "err"};
    for (int i = 0; i < 2; i++) {
        char path[PATH_MAX], name[LOGS_APP_MAX + 32];
        snprintf(name, sizeof name, "%s-%d.%s.log", app, id, suffix[i]);
        snprintf(path, sizeof path, "%s/%s", lg->dir, name);
        if (!(st->file[i].path = strdup(path)) || !(st->file[i].name = strdup(name))) {
            snprintf(err, errcap, "out of memory for the log ring of %s:%d", app, id);
            logs_stream_destroy(st);
            return NULL;
        }
        st->file[i].fd = logs_file_openat(lg, &st->file[i]);
        if (st->file[i].fd < 0) {
            snprintf(err, errcap, "cannot open %s: %s; check --log-dir", path, strerror(errno));
            logs_stream_destroy(st);
            return NULL;
        }
        struct stat sb;
        st->file[i].size = fstat(st->file[i].fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    }
    st->next = lg->streams;
    lg->streams = st;
    return st;
}

int logs_stream_attach(logs_stream *st, int out_fd, int err_fd)
{
    logs *lg = st->lg;
    int fds[2] = {out_fd, err_fd};
    int rc = 0;

    if (out_fd >= 0 && out_fd == err_fd)
        fds[1] = -1;   /* one pipe for both (2>&1): read it once, as stdout */
    if (lg->freeing) {
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0)
                close(fds[i]);
        return UV_ECANCELED;
    }
    /* Bound the pipes per slot: a grandchild that inherited an old
     * generation's stdout could otherwise keep one open per restart. */
    int want = (fds[0] >= 0) + (fds[1] >= 0);
    int live = 0;
    for (logs_pipe *p = st->pipes; p; p = p->next)
        live += !p->closing;
    lg->deadline = uv_hrtime();   /* forced closes here must not wait on stderr */
    for (logs_pipe *p = st->pipes; p && live + want > LOGS_PIPES_MAX; p = p->next) {
        if (!p->closing) {
            logs_pipe_force_close(p);
            live--;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (fds[i] < 0)
            continue;
        int r = logs_pipe_new(st, (logs_fd)i, fds[i]);
        if (r != 0 && rc == 0)
            rc = r;
    }
    return rc;
}

int logs_stream_format(logs_stream *st, bool timestamps, bool json, uint64_t max_bytes, unsigned keep)
{
    logs *lg = st->lg;
    if ((timestamps || json) && !lg->fbuf) {
        char *f = malloc(LOGS_FBUF), *u = malloc(LOGS_UTF8_CAP(LOGS_LINE_MAX));
        if (!f || !u) {
            free(f);
            free(u);
            return -1;
        }
        lg->fbuf = f;
        lg->ubuf = u;
    }
    st->timestamps = timestamps;
    st->json = json;
    for (int i = 0; i < 2; i++) {
        st->file[i].max_bytes = max_bytes ? max_bytes : lg->max_bytes;
        st->file[i].keep = keep ? keep : lg->keep;
    }
    return 0;
}

void logs_stream_set_pid(logs_stream *st, pid_t pid)
{
    st->pid = pid;
    for (logs_pipe *p = st->pipes; p; p = p->next)
        if (!p->pid && !p->closing)
            p->pid = pid;
}

bool logs_stream_open(const logs_stream *st)
{
    for (const logs_pipe *p = st->pipes; p; p = p->next)
        if (!p->closing)
            return true;
    return false;
}

size_t logs_stream_tail(const logs_stream *st, size_t n,
                        void (*cb)(void *ctx, const logs_line *line), void *ctx)
{
    size_t skip = st->rcount > n ? st->rcount - n : 0;
    size_t passed = 0, idx = 0;
    uint64_t pos = st->rtail;
    while (pos < st->rhead) {
        if (logs_ring_wraps_at(st, pos)) {
            pos += st->rcap - pos % st->rcap;
            continue;
        }
        const logs_rec *r = (const logs_rec *)(st->ring + pos % st->rcap);
        if (idx++ >= skip) {
            logs_line line = {.ts = r->ts, .stream = (logs_fd)r->stream,
                              .text = (const char *)(r + 1), .len = r->len,
                              .app = st->app, .id = st->id};
            cb(ctx, &line);
            passed++;
        }
        pos += sizeof(logs_rec) + logs_pad8(r->len);
    }
    return passed;
}

void logs_foreach(const logs *lg, const char *app, int id, size_t n,
                  void (*cb)(void *ctx, const logs_line *line), void *ctx)
{
    for (const logs_stream *st = lg->streams; st; st = st->next)
        if ((!app || strcmp(st->app, app) == 0) && (id < 0 || st->id == id))
            logs_stream_tail(st, n, cb, ctx);
}

void logs_reopen(logs *lg)
{
    logs_file_flush(lg);
    /* logrotate may have removed the directory too; recreating it is cheap.
     * The directory is checked again like at start; one that fails the
     * check is not used (the old directory fd stays). */
    char err[512];
    int fd = -1;
    if (paths_mkdirs(lg->dir) != 0)
        snprintf(err, sizeof err, "cannot create %s: %s", lg->dir, strerror(errno));
    else
        fd = logs_dir_open(lg->dir, err, sizeof err);
    if (fd >= 0) {
        close(lg->dirfd);
        lg->dirfd = fd;
    } else {
        fprintf(stderr, "drover: reopening logs: %s; still using the directory opened before\n", err);
    }
    for (logs_stream *st = lg->streams; st; st = st->next) {
        for (int i = 0; i < 2; i++) {
            logs_file_close(&st->file[i]);
            st->file[i].warned = false;
            logs_file_open(lg, &st->file[i]);
        }
        logs_stream_idle_close(st);   /* created, but not held without a writer */
    }
}

void logs_free(logs *lg)
{
    if (!lg || lg->freeing)
        return;
    /* Everything still buffered goes out now; stderr gets at most
     * LOGS_FREE_WAIT_NS in total to take its share. */
    lg->deadline = uv_hrtime() + LOGS_FREE_WAIT_NS;
    for (logs_stream *st = lg->streams; st; st = st->next)
        for (logs_pipe *p = st->pipes; p; p = p->next)
            if (!p->closing)
                logs_pipe_force_close(p);
    lg->freeing = true;
    lg->bhead = lg->btail = NULL;
    logs_file_flush(lg);
    logs_echo_flush(lg, lg->deadline);
    /* Held bytes get one last try; what the disk still cannot take is lost. */
    for (logs_stream *st = lg->streams; st; st = st->next)
        for (int i = 0; i < 2; i++)
            if (!logs_file_unhold(lg, &st->file[i]))
                fprintf(stderr, "drover: log disk still full at exit; %zu bytes for %s lost\n",
                        st->file[i].plen, st->file[i].path);
    for (logs_stream *st = lg->streams; st; st = st->next)
        for (int i = 0; i < 2; i++)
            logs_file_close(&st->file[i]);
    uv_timer_stop(&lg->disk_timer);
    uv_close((uv_handle_t *)&lg->disk_timer, logs_handle_closed);
    uv_idle_stop(&lg->kick);
    uv_close((uv_handle_t *)&lg->kick, logs_handle_closed);
    if (lg->epoll_init)
        uv_close((uv_handle_t *)&lg->epoll, logs_handle_closed);
}

/* ---- upgrade ------------------------------------------------------------ */

/* logs_stream_tail's callback for logs_save: one ring line as [ts, stream, hex]. */
static void logs_save_line(void *ctx, const logs_line *l)
{
    json_array_append_new(ctx, json_pack("[f, i, o]", l->ts, (int)l->stream, upgrade_hex(l->text, l->len)));
}

json_t *logs_save(logs *lg, bool final)
{
    json_t *out = json_array();
    if (!out)
        return NULL;
    /* The echo queue does not cross the exec: give stderr its lines now. */
    if (final && lg->efd >= 0)
        logs_echo_flush(lg, uv_hrtime() + 100 * 1000000ull);
    for (logs_stream *st = lg->streams; st; st = st->next) {
        json_t *pipes = json_array(), *ring = json_array();
        for (logs_pipe *p = st->pipes; p; p = p->next) {
            if (p->closing)
                continue;
            uv_os_fd_t fd;
            if (uv_fileno((uv_handle_t *)&p->h, &fd) != 0)
                continue;
            /* No more reads in this image: what the pipe holds waits in the kernel. */
            if (final)
                uv_read_stop((uv_stream_t *)&p->h);
            json_array_append_new(pipes, json_pack("{s:o, s:i, s:i, s:o}", "fd",
                                                   final ? upgrade_keep_fd(fd) : upgrade_fd_json(fd),
                                                   "which", (int)p->which, "pid", (int)p->pid,
                                                   "partial", upgrade_hex(p->buf, p->len)));
        }
        logs_stream_tail(st, SIZE_MAX, logs_save_line, ring);
        json_array_append_new(out, json_pack("{s:s, s:i, s:i, s:o, s:o}", "app", st->app, "id", st->id,
                                             "pid", (int)st->pid, "pipes", pipes, "ring", ring));
    }
    return out;
}

int logs_restore(logs *lg, const json_t *streams, char *err, size_t errcap)
{
    size_t i, j;
    json_t *s, *v;
    char *buf = malloc(LOGS_PIPE_BUF > LOGS_LINE_MAX + 1 ? LOGS_PIPE_BUF : LOGS_LINE_MAX + 1);
    if (!buf) {
        snprintf(err, errcap, "out of memory");
        return -1;
    }
    json_array_foreach(streams, i, s) {
        const char *app = json_string_value(json_object_get(s, "app"));
        int id = (int)json_integer_value(json_object_get(s, "id"));
        logs_stream *st = logs_stream_get(lg, app, id, err, errcap);
        if (!st) {
            /* its pipes must still be read by somebody: close them (EPIPE to the writer) */
            json_array_foreach(json_object_get(s, "pipes"), j, v)
                close((int)json_integer_value(json_object_get(v, "fd")));
            continue;
        }
        json_array_foreach(json_object_get(s, "ring"), j, v) {
            long n = upgrade_unhex(json_array_get(v, 2), buf, LOGS_LINE_MAX + 1);
            if (n >= 0)
                logs_ring_put(st, json_number_value(json_array_get(v, 0)),
                              (logs_fd)json_integer_value(json_array_get(v, 1)), buf, (size_t)n);
        }
        st->pid = (pid_t)json_integer_value(json_object_get(s, "pid"));
        json_array_foreach(json_object_get(s, "pipes"), j, v) {
            int fd = upgrade_fd(v, "fd");
            logs_fd which = (logs_fd)json_integer_value(json_object_get(v, "which"));
            long n = upgrade_unhex(json_object_get(v, "partial"), buf, LOGS_PIPE_BUF);
            if (fd < 0 || n < 0 || logs_pipe_new(st, which, fd) != 0)
                continue;
            /* the newest pipe is last: give it the partial line the old image held */
            logs_pipe *p = st->pipes;
            while (p->next)
                p = p->next;
            memcpy(p->buf, buf, (size_t)n);
            p->len = (size_t)n;
            p->pid = (pid_t)json_integer_value(json_object_get(v, "pid"));
            if (p->len)   /* whole lines held back (echo full) go out now */
                logs_pipe_after(p, logs_pipe_drain(p, false, false));
        }
    }
    free(buf);
    return 0;
}
