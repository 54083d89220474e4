/*
 * ingest.c — the report socket and its drain thread.
 *
 * The queue is a single-producer single-consumer byte ring: the ingest thread
 * appends records, the loop thread consumes them. Positions are 64-bit byte
 * counters that only grow; head is published with release ordering after a
 * record is written, tail after it has been consumed, so neither side ever
 * takes a lock or waits for the other.
 */
#include "hub/ingest.h"
#include "proto/report.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define INGEST_BATCH 16
#define INGEST_WRAP  UINT32_MAX   /* record length marking "continue at offset 0" */

/* Each queued datagram: this header, then len bytes, padded to 8. */
typedef struct {
    uint32_t len;
    int32_t  pid;
    uint32_t truncated;
    uint32_t pad;
} ingest_rec;

struct ingest {
    uv_loop_t  *loop;
    uv_async_t  async;
    ingest_cb   cb;
    void       *ctx;
    int         fd;
    int         stopfd;
    pthread_t   thread;
    bool        thread_started;
    char        path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    ino_t       ino;
    dev_t       dev;

    uint8_t    *q;
    _Atomic uint64_t head;      /* written by the ingest thread */
    _Atomic uint64_t tail;      /* written by the loop thread */
    _Atomic uint64_t overflows;

    /* recvmmsg batch, owned by the ingest thread */
    struct mmsghdr msgs[INGEST_BATCH];
    struct iovec   iov[INGEST_BATCH];
    uint8_t        bufs[INGEST_BATCH][REPORT_MAX_BYTES];
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(struct ucred))];
    } ctl[INGEST_BATCH];
};

static size_t ingest_pad8(size_t n) { return (n + 7) & ~(size_t)7; }

/* Appends one datagram to the queue; counts an overflow when it does not fit. */
static void ingest_push(ingest *in, const void *buf, size_t len, pid_t pid, int truncated)
{
    const uint64_t cap = INGEST_QUEUE_BYTES;
    uint64_t head = atomic_load_explicit(&in->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&in->tail, memory_order_acquire);
    size_t need = sizeof(ingest_rec) + ingest_pad8(len);
    size_t pos = head % cap;
    size_t skip = (cap - pos < need) ? cap - pos : 0;

    if (cap - (head - tail) < skip + need) {
        atomic_fetch_add_explicit(&in->overflows, 1, memory_order_relaxed);
        return;
    }
    if (skip) {
        ((ingest_rec *)(in->q + pos))->len = INGEST_WRAP;
        pos = 0;
    }
    ingest_rec *r = (ingest_rec *)(in->q + pos);
    r->len = (uint32_t)len;
    r->pid = (int32_t)pid;
    r->truncated = (uint32_t)truncated;
    memcpy(r + 1, buf, len);
    atomic_store_explicit(&in->head, head + skip + need, memory_order_release);
}

/* Returns the pid from a received message's SCM_CREDENTIALS, or 0. */
static pid_t ingest_creds_pid(struct msghdr *mh)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            struct ucred uc;
            memcpy(&uc, CMSG_DATA(c), sizeof uc);
            return uc.pid;
        }
    }
    return 0;
}

/* The drain thread: waits for datagrams and moves them to the queue in batches. */
static void *ingest_thread(void *arg)
{
    ingest *in = arg;
    struct pollfd pf[2] = {{.fd = in->fd, .events = POLLIN}, {.fd = in->stopfd, .events = POLLIN}};

    for (;;) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[1].revents)
            break;
        for (;;) {
            for (int i = 0; i < INGEST_BATCH; i++) {
                in->iov[i] = (struct iovec){in->bufs[i], sizeof in->bufs[i]};
                in->msgs[i].msg_hdr = (struct msghdr){
                    .msg_iov = &in->iov[i], .msg_iovlen = 1,
                    .msg_control = in->ctl[i].buf, .msg_controllen = sizeof in->ctl[i].buf,
                };
            }
            int n = recvmmsg(in->fd, in->msgs, INGEST_BATCH, MSG_DONTWAIT, NULL);
            if (n <= 0)
                break;
            for (int i = 0; i < n; i++) {
                struct msghdr *mh = &in->msgs[i].msg_hdr;
                int trunc = (mh->msg_flags & MSG_TRUNC) != 0;
                ingest_push(in, in->bufs[i], in->msgs[i].msg_len > sizeof in->bufs[i]
                            ? sizeof in->bufs[i] : in->msgs[i].msg_len,
                            ingest_creds_pid(mh), trunc);
            }
            /* One wakeup per batch. Coalescing them (at most every 20-50 ms)
             * was tried: it did not lower the hub's CPU measurably, and an
             * aligned burst of 64 reports then lost 50-70 % to a full kernel
             * queue instead of 5-10 %. */
            uv_async_send(&in->async);
            if (n < INGEST_BATCH)
                break;
        }
    }
    return NULL;
}

void ingest_flush(ingest *in)
{
    const uint64_t cap = INGEST_QUEUE_BYTES;
    uint64_t tail = atomic_load_explicit(&in->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&in->head, memory_order_acquire);

    while (tail != head) {
        size_t pos = tail % cap;
        ingest_rec *r = (ingest_rec *)(in->q + pos);
        if (r->len == INGEST_WRAP) {
            tail += cap - pos;
            continue;
        }
        in->cb(in->ctx, r + 1, r->len, (pid_t)r->pid, (int)r->truncated);
        tail += sizeof(ingest_rec) + ingest_pad8(r->len);
        /* Publish as we go so a long backlog frees space for the thread early. */
        atomic_store_explicit(&in->tail, tail, memory_order_release);
    }
}

static void ingest_on_async(uv_async_t *a)
{
    ingest_flush(a->data);
}

/* Frees the ingest once libuv no longer references its async handle. */
static void ingest_on_close(uv_handle_t *h)
{
    ingest *in = h->data;
    free(in->q);
    free(in);
}

ingest *ingest_start(uv_loop_t *loop, const char *path, ingest_cb cb, void *ctx,
                     char *err, size_t errcap)
{
    return ingest_adopt(loop, path, -1, cb, ctx, err, errcap);
}

ingest *ingest_adopt(uv_loop_t *loop, const char *path, int fd, ingest_cb cb, void *ctx,
                     char *err, size_t errcap)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errcap, "socket path too long: %s", path);
        return NULL;
    }
    ingest *in = calloc(1, sizeof *in);
    if (!in || !(in->q = malloc(INGEST_QUEUE_BYTES))) {
        free(in);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    in->loop = loop;
    in->cb = cb;
    in->ctx = ctx;
    in->stopfd = -1;
    snprintf(in->path, sizeof in->path, "%s", path);
    memcpy(sa.sun_path, path, strlen(path) + 1);

    if (fd >= 0) {
        in->fd = fd;   /* an upgrade's: bound, and what it queued is still queued */
    } else {
        in->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        int one = 1;
        if (in->fd < 0 || setsockopt(in->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) < 0) {
            snprintf(err, errcap, "cannot create the report socket: %s", strerror(errno));
            goto fail;
        }
        /* The caller holds the namespace lock, so whatever file is here is stale. */
        unlink(path);
        /* Its mode is set, not left to the umask (0777 under umask 000): the
         * hub's user and root write reports here; workers run as that user. */
        mode_t um = umask(0177);
        int brc = bind(in->fd, (struct sockaddr *)&sa, sizeof sa);
        umask(um);
        if (brc < 0 || chmod(path, 0600) != 0) {
            snprintf(err, errcap, "cannot bind %s: %s", path, strerror(errno));
            goto fail;
        }
    }
    struct stat st;
    if (stat(path, &st) == 0) {
        in->ino = st.st_ino;
        in->dev = st.st_dev;
    }
    in->stopfd = eventfd(0, EFD_CLOEXEC);
    if (in->stopfd < 0 || uv_async_init(loop, &in->async, ingest_on_async) != 0) {
        snprintf(err, errcap, "cannot set up the ingest thread: %s", strerror(errno));
        goto fail;
    }
    in->async.data = in;

    /* The thread must not take the process's signals (SIGCHLD, SIGTERM…). */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&in->thread, NULL, ingest_thread, in);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errcap, "cannot start the ingest thread: %s", strerror(rc));
        unlink(path);
        close(in->fd);
        close(in->stopfd);
        in->fd = in->stopfd = -1;
        uv_close((uv_handle_t *)&in->async, ingest_on_close);
        return NULL;
    }
    in->thread_started = true;
    return in;

fail:
    if (in->fd >= 0)
        close(in->fd);
    if (in->stopfd >= 0)
        close(in->stopfd);
    free(in->q);
    free(in);
    return NULL;
}

void ingest_stop(ingest *in)
{
    if (!in)
        return;
    if (in->thread_started) {
        uint64_t one = 1;
        if (write(in->stopfd, &one, sizeof one) < 0) { /* cannot fail for an eventfd below its max */ }
        pthread_join(in->thread, NULL);
    }
    struct stat st;
    /* Another hub may have replaced the file after ours died; never remove theirs. */
    if (stat(in->path, &st) == 0 && st.st_ino == in->ino && st.st_dev == in->dev)
        unlink(in->path);
    close(in->fd);
    close(in->stopfd);
    uv_close((uv_handle_t *)&in->async, ingest_on_close);
}

int ingest_detach(ingest *in)
{
    if (in->thread_started) {
        uint64_t one = 1;
        if (write(in->stopfd, &one, sizeof one) < 0) { /* cannot fail for an eventfd below its max */ }
        pthread_join(in->thread, NULL);
        in->thread_started = false;
    }
    ingest_flush(in);   /* what the thread took from the socket is applied here */
    int fd = in->fd;
    close(in->stopfd);
    uv_close((uv_handle_t *)&in->async, ingest_on_close);
    return fd;
}

int ingest_fd(const ingest *in)
{
    return in->fd;
}
