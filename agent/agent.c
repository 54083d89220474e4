/*
 * agent.c — the drover agent (drover.h): counts what a worker does and sends
 * it to the hub as msgpack datagrams (proto/report.h, PROTOCOL.md §1).
 *
 * The agent is a guest in someone else's process (README, "The agent"):
 *   - it never blocks the caller: hot-path calls are relaxed atomics, sends use
 *     MSG_DONTWAIT and a failure is only counted (`drops`), never retried;
 *   - it never allocates after drover_start(): the reporter encodes into a
 *     static buffer, drover_log() into one of a few static slots;
 *   - it never prints, exits or aborts, whatever the environment or the hub do;
 *   - it survives the hub being absent, restarted or replaced: the socket is
 *     unconnected and every datagram is sent to the path again;
 *   - it is fork-safe: a forked child resets its identity and counters and
 *     starts its own reporter, so it reports as itself.
 *
 * Threads: any application thread calls the hot path and drover_log();
 * drover_start()/drover_stop() serialise on agent_life; one reporter thread
 * (all signals blocked) sends `report` every interval and `bye` at stop.
 */
#include "agent/drover.h"
#include "agent/hist.h"
#include "proto/report.h"
#include "proto/sockpath.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Constants                                                                */
/* ------------------------------------------------------------------------ */

#define AGENT_INTERVAL_DEFAULT_MS 1000u
#define AGENT_INTERVAL_MIN_MS     10u
#define AGENT_INTERVAL_MAX_MS     3600000u
#define AGENT_WID_MAX             UINT32_MAX
#define AGENT_METRIC_SLOTS        REPORT_METRICS_MAX
#define AGENT_LOG_SLOTS           4        /* concurrent drover_log() calls before dropping */
#define AGENT_LAG_DEFAULT_MS      10u
#define AGENT_MIN_GAP_NS          5000000u /* readiness flapping sends at most one report per 5 ms */
#define AGENT_STACK_BYTES         (256u * 1024u) /* needs ~6 KiB; room for sanitizer builds, far below 8 MiB */
#define AGENT_CLAIM_SPINS         4096     /* wait for a concurrent first metric_set of a slot */

#define AGENT_SEND_FLAGS (MSG_DONTWAIT | MSG_NOSIGNAL)

/* Metric slot states. A slot never goes back to FREE (except in a fork child). */
enum { AGENT_SLOT_FREE = 0, AGENT_SLOT_CLAIMING, AGENT_SLOT_READY };

/* ------------------------------------------------------------------------ */
/* State                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Settings read by drover_start(). Written only while agent_running is false
 * and no drover_log() is inside a slot (see agent_wait_log_slots()), so the
 * reporter and drover_log() read them without locks.
 */
static struct {
    struct sockaddr_un addr;
    socklen_t          addrlen;
    char               name[REPORT_NAME_MAX];
    bool               has_name;
    uint64_t           wid;
    bool               has_wid;
    unsigned           interval_ms;
    uint64_t           page_size;
} agent_cfg;

/* Lifecycle: drover_start/stop and the fork handlers hold agent_life. */
static pthread_mutex_t agent_life = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t  agent_once = PTHREAD_ONCE_INIT;
static _Atomic bool    agent_running;   /* a reporter exists and the socket is open */
static _Atomic bool    agent_stopping;  /* tells the reporter to send `bye` and exit */
static _Atomic bool    agent_hello_pending; /* a forked child says hello with its first report */
static pthread_t       agent_thread;
static sem_t           agent_wake;      /* posted by drover_ready() and drover_stop() */

/*
 * The socket. agent_sock_ino identifies it: before each send the fd is checked
 * with fstat(), because an application that closes every fd (daemonising, a
 * close-all loop after fork) may reuse the number for one of its own files or
 * TCP connections, which must never receive our bytes.
 */
static _Atomic int      agent_sock = -1;
static _Atomic uint64_t agent_sock_ino;
static _Atomic uint64_t agent_sock_dev;

static uint32_t agent_pid;              /* cached; reset in a fork child */

/* Hot counters, on their own cache line so the reporter's traffic does not share it. */
static struct {
    _Alignas(64) _Atomic uint64_t req;
    _Atomic uint64_t err;
    _Atomic uint64_t inflight;
} agent_ctr;

static _Alignas(64) _Atomic uint64_t agent_seq;
static _Atomic uint64_t agent_drops;
static _Atomic bool     agent_ready_flag;

static hist agent_lat;                  /* request latency, µs (cumulative) */
static hist agent_lag;                  /* event-loop lag, µs (cumulative) */
static uint64_t agent_lat_seen, agent_lag_seen; /* totals at the last report (reporter only) */

/* Custom metrics: open addressing on the name's hash, no deletion. */
static struct {
    _Atomic int      state;             /* AGENT_SLOT_* */
    uint32_t         hash;              /* written before state becomes READY */
    char             name[REPORT_METRIC_KEY_MAX];
    _Atomic uint64_t bits;              /* the double's bit pattern */
} agent_metrics[AGENT_METRIC_SLOTS];

/* The reporter's datagram; used by one thread at a time (start, reporter, fork child). */
static report        agent_rep;
static unsigned char agent_rep_buf[REPORT_MAX_BYTES];

/* drover_log() slots: taken with an atomic exchange on busy; all busy → the line is dropped. */
static struct {
    _Atomic bool  busy;
    report        rep;
    unsigned char buf[REPORT_MAX_BYTES];
} agent_logs[AGENT_LOG_SLOTS];

static uint64_t agent_rng;              /* jitter PRNG, reporter thread only */

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* Returns CLOCK_MONOTONIC in ns. */
static uint64_t agent_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Returns the wall clock in ms since the epoch. */
static uint64_t agent_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Converts a timespec to ns (negative fields read as zero). */
static uint64_t agent_ts_ns(const struct timespec *ts)
{
    if (ts->tv_sec < 0 || ts->tv_nsec < 0)
        return 0;
    return (uint64_t)ts->tv_sec * 1000000000u + (uint64_t)ts->tv_nsec;
}

/* Tells the CPU we are spinning (cheaper for the sibling hyperthread). */
static void agent_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* xorshift64*: returns the next pseudo-random number from agent_rng. */
static uint64_t agent_random(void)
{
    uint64_t x = agent_rng ? agent_rng : 0x9e3779b97f4a7c15u;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    agent_rng = x;
    return x * 0x2545f4914f6cdd1du;
}

/*
 * Returns the gap to the next report in ns: the interval shortened by a
 * random 0..20 % (mean 0.9×), so a fleet started together drifts apart and
 * yet a hub with the same interval gets at least one report in each of its
 * intervals (a gap never exceeds one interval). Two reports in one hub
 * interval cost nothing: the histograms are cumulative.
 */
static uint64_t agent_jittered_interval_ns(void)
{
    uint64_t base = (uint64_t)agent_cfg.interval_ms * 1000000u;
    uint64_t span = base / 5;                        /* 20 % of the interval */
    if (span == 0)
        return base;
    return base - agent_random() % (span + 1);
}

/*
 * Parses s as a plain decimal integer (digits only, no sign or blanks) into
 * *out. Returns 0, or -EINVAL when s is empty, not decimal or above max.
 */
static int agent_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return -EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -EINVAL;
        unsigned d = (unsigned)(*s - '0');
        if (v > (max - d) / 10)
            return -EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Configuration                                                            */
/* ------------------------------------------------------------------------ */

/* True when DROVER_AGENT asks for the agent to be off ("0", "false", "no", "off"). */
static bool agent_env_disabled(void)
{
    const char *v = getenv("DROVER_AGENT");
    return v && (strcmp(v, "0") == 0 || strcasecmp(v, "false") == 0 ||
                 strcasecmp(v, "no") == 0 || strcasecmp(v, "off") == 0);
}

/*
 * Fills agent_cfg.addr with the report socket path: DROVER_SOCKET, else the
 * default namespace's agent.sock by the rule every part of drover shares
 * (proto/sockpath.h). Returns 0, or -ENAMETOOLONG when the path does not fit
 * in sun_path.
 */
static int agent_cfg_socket(void)
{
    struct sockaddr_un *a = &agent_cfg.addr;
    const size_t cap = sizeof a->sun_path;
    const char *p = getenv("DROVER_SOCKET");
    size_t n;

    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (p && *p) {
        n = strlen(p);
        if (n >= cap)
            return -ENAMETOOLONG;
        memcpy(a->sun_path, p, n);
    } else if ((n = sockpath_default(a->sun_path, cap, "default", "agent.sock")) == 0) {
        return -ENAMETOOLONG;
    }
    agent_cfg.addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

/*
 * Reads the DROVER_* environment into agent_cfg. Returns 0 or -EINVAL /
 * -ENAMETOOLONG for a malformed variable (the agent then stays off).
 */
static int agent_cfg_read(void)
{
    const char *v;
    uint64_t n;
    int rc;

    if ((rc = agent_cfg_socket()) != 0)
        return rc;

    agent_cfg.has_name = false;
    agent_cfg.name[0] = '\0';
    v = getenv("DROVER_NAME");
    if (v && *v) {
        size_t len = strlen(v);
        if (len >= sizeof agent_cfg.name)
            return -EINVAL;
        memcpy(agent_cfg.name, v, len + 1);
        agent_cfg.has_name = true;
    }

    agent_cfg.has_wid = false;
    agent_cfg.wid = 0;
    v = getenv("DROVER_WORKER_ID");
    if (v && *v) {
        if ((rc = agent_parse_uint(v, AGENT_WID_MAX, &n)) != 0)
            return rc;
        agent_cfg.wid = n;
        agent_cfg.has_wid = true;
    }

    agent_cfg.interval_ms = AGENT_INTERVAL_DEFAULT_MS;
    v = getenv("DROVER_INTERVAL_MS");
    if (v && *v) {
        if ((rc = agent_parse_uint(v, AGENT_INTERVAL_MAX_MS, &n)) != 0 || n < AGENT_INTERVAL_MIN_MS)
            return -EINVAL;
        agent_cfg.interval_ms = (unsigned)n;
    }

    long ps = sysconf(_SC_PAGESIZE);
    agent_cfg.page_size = ps > 0 ? (uint64_t)ps : 4096u;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Socket and sending                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Opens the unconnected, non-blocking datagram socket and records its
 * identity. Returns 0 or a negative errno.
 */
static int agent_sock_open(void)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    atomic_store(&agent_sock_ino, (uint64_t)st.st_ino);
    atomic_store(&agent_sock_dev, (uint64_t)st.st_dev);
    atomic_store(&agent_sock, fd);
    return 0;
}

/* Closes the socket if it is still ours (the application may have closed it). */
static void agent_sock_close(void)
{
    int fd = atomic_exchange(&agent_sock, -1);
    struct stat st;
    if (fd >= 0 && fstat(fd, &st) == 0 && (uint64_t)st.st_ino == atomic_load(&agent_sock_ino) &&
        (uint64_t)st.st_dev == atomic_load(&agent_sock_dev))
        close(fd);
}

/*
 * Returns the socket fd if it still is the socket we opened, else -1. Any
 * mix of old and new values read during a reopen fails the check, so the
 * worst case is one dropped datagram, never bytes written to a foreign fd.
 */
static int agent_sock_checked(void)
{
    int fd = atomic_load(&agent_sock);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0)
        return -1;
    if ((uint64_t)st.st_ino != atomic_load(&agent_sock_ino) ||
        (uint64_t)st.st_dev != atomic_load(&agent_sock_dev))
        return -1;
    return fd;
}

/*
 * Reopens the socket when the application closed ours (the reporter calls it
 * once per interval). The lost fd number may belong to the application now,
 * so it is left alone; readers that catch the switch half-way fail the
 * identity check and drop one datagram.
 */
static void agent_sock_repair(void)
{
    if (agent_sock_checked() < 0)
        agent_sock_open();
}

/*
 * Numbers, encodes and sends r using buf (REPORT_MAX_BYTES). Every attempt
 * takes the next seq; any failure (no hub: ENOENT or ECONNREFUSED, full queue:
 * EAGAIN, a lost fd…) is counted in drops and not retried. A report that does
 * not fit (two full histograms of large counts beside 32 long metric names)
 * is sent without its custom metrics (PROTOCOL.md §1.3.1). Returns true when
 * the kernel accepted the datagram.
 */
static bool agent_send(report *r, unsigned char *buf)
{
    r->seq = atomic_fetch_add_explicit(&agent_seq, 1, memory_order_relaxed);
    size_t n = report_encode(r, buf, REPORT_MAX_BYTES);
    if (n == 0 && (r->has & REPORT_HAS_METRICS)) {
        r->has &= ~(uint32_t)REPORT_HAS_METRICS;
        n = report_encode(r, buf, REPORT_MAX_BYTES);
    }
    int fd = n ? agent_sock_checked() : -1;
    if (fd < 0 || sendto(fd, buf, n, AGENT_SEND_FLAGS, (const struct sockaddr *)&agent_cfg.addr,
                         agent_cfg.addrlen) < 0) {
        atomic_fetch_add_explicit(&agent_drops, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Building reports                                                         */
/* ------------------------------------------------------------------------ */

/* Sets the keys every datagram carries besides v/t/pid/seq: ts, name, wid. */
static void agent_fill_identity(report *r, report_type t)
{
    r->type = t;
    r->pid = agent_pid;
    r->has = REPORT_HAS_TS;
    r->ts = agent_wall_ms();
    if (agent_cfg.has_name) {
        memcpy(r->name, agent_cfg.name, sizeof r->name);
        r->has |= REPORT_HAS_NAME;
    }
    if (agent_cfg.has_wid) {
        r->wid = agent_cfg.wid;
        r->has |= REPORT_HAS_WID;
    }
}

/*
 * Returns resident memory in bytes from /proc/self/statm (second field, in
 * pages), or 0 when it cannot be read. open/read/close each time: a kept fd
 * could be closed under us, and after fork it must describe the child.
 */
static uint64_t agent_rss_bytes(void)
{
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    const char *p = buf;
    while (*p && *p != ' ')             /* skip "size" */
        p++;
    while (*p == ' ')
        p++;
    uint64_t pages = 0;
    for (; *p >= '0' && *p <= '9'; p++)
        pages = pages * 10 + (uint64_t)(*p - '0');
    return pages * agent_cfg.page_size;
}

/* Copies the published custom metrics into r (sets REPORT_HAS_METRICS if any). */
static void agent_fill_metrics(report *r)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < AGENT_METRIC_SLOTS; i++) {
        if (atomic_load_explicit(&agent_metrics[i].state, memory_order_acquire) != AGENT_SLOT_READY)
            continue;
        memcpy(r->metrics[n].key, agent_metrics[i].name, sizeof r->metrics[n].key);
        uint64_t bits = atomic_load_explicit(&agent_metrics[i].bits, memory_order_relaxed);
        memcpy(&r->metrics[n].value, &bits, sizeof bits);
        n++;
    }
    r->nmetrics = n;
    if (n)
        r->has |= REPORT_HAS_METRICS;
}

/*
 * Fills r as a full `t` datagram: identity, CPU, RSS, counters, readiness,
 * drops, metrics and — when take_hists — the cumulative latency and lag
 * histograms (left out while empty) with the largest value since the
 * previous report (left out when no sample came since).
 */
static void agent_fill_report(report *r, report_type t, bool take_hists)
{
    agent_fill_identity(r, t);

    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        r->cpu_us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
                    (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
        r->has |= REPORT_HAS_CPU;
    }
    uint64_t rss = agent_rss_bytes();
    if (rss) {
        r->rss = rss;
        r->has |= REPORT_HAS_RSS;
    }

    r->req = atomic_load_explicit(&agent_ctr.req, memory_order_relaxed);
    r->err = atomic_load_explicit(&agent_ctr.err, memory_order_relaxed);
    r->inflight = atomic_load_explicit(&agent_ctr.inflight, memory_order_relaxed);
    r->has |= REPORT_HAS_REQ | REPORT_HAS_ERR | REPORT_HAS_INFLIGHT;

    if (take_hists) {
        /* Cumulative counts always (the hub differences them at its own
         * interval boundaries); the max only when samples came since the
         * previous report, as it covers just that span. A sample recorded
         * while the snapshot runs can land in the counts of one snapshot and
         * in the max of the next (hist_record adds to its bucket, then raises
         * max): a non-zero max is therefore sent even when the counts did not
         * move, or that sample's max would be lost. */
        uint64_t max, total = hist_snapshot(&agent_lat, &r->lat_h, &max);
        if (total) {
            r->has |= REPORT_HAS_LAT_H;
            if (total != agent_lat_seen || max) {
                r->lat_max = max;
                r->has |= REPORT_HAS_LAT_MAX;
            }
        }
        agent_lat_seen = total;
        total = hist_snapshot(&agent_lag, &r->lag_h, &max);
        if (total) {
            r->has |= REPORT_HAS_LAG_H;
            if (total != agent_lag_seen || max) {
                r->lag_max = max;
                r->has |= REPORT_HAS_LAG_MAX;
            }
        }
        agent_lag_seen = total;
    }

    r->ready = atomic_load_explicit(&agent_ready_flag, memory_order_relaxed);
    r->drops = atomic_load_explicit(&agent_drops, memory_order_relaxed);
    r->has |= REPORT_HAS_READY | REPORT_HAS_DROPS;
    agent_fill_metrics(r);
}

/* Sends `hello` from the reporter's buffer (before the reporter runs, or from it). */
static void agent_send_hello(void)
{
    agent_fill_identity(&agent_rep, REPORT_T_HELLO);
    agent_rep.ready = atomic_load_explicit(&agent_ready_flag, memory_order_relaxed);
    agent_rep.has |= REPORT_HAS_READY;
    agent_send(&agent_rep, agent_rep_buf);
}

/* ------------------------------------------------------------------------ */
/* The reporter thread                                                      */
/* ------------------------------------------------------------------------ */

/* Converts a CLOCK_MONOTONIC time in ns to a timespec. */
static struct timespec agent_ns_ts(uint64_t ns)
{
    struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000u), .tv_nsec = (long)(ns % 1000000000u) };
    return ts;
}

/*
 * Sends a `report` every jittered interval and one at once (at most every
 * AGENT_MIN_GAP_NS) when woken by a readiness change; on agent_stopping sends
 * `bye` (a final report) and returns. Signals are blocked for its whole life.
 */
static void *agent_reporter(void *arg)
{
    (void)arg;
    prctl(PR_SET_NAME, "drover-agent", 0, 0, 0);

    uint64_t last = agent_mono_ns();
    uint64_t next = last + agent_jittered_interval_ns();
    bool woken = false;

    for (;;) {
        uint64_t deadline = next;
        if (woken && last + AGENT_MIN_GAP_NS < deadline)
            deadline = last + AGENT_MIN_GAP_NS;
        struct timespec dl = agent_ns_ts(deadline);
        int rc = sem_clockwait(&agent_wake, CLOCK_MONOTONIC, &dl);
        if (atomic_load(&agent_stopping))
            break;
        uint64_t now = agent_mono_ns();
        if (rc == 0) {
            while (sem_trywait(&agent_wake) == 0) {
                /* coalesce wake-ups that arrived together */
            }
            woken = true;
            if (now < last + AGENT_MIN_GAP_NS)
                continue;               /* too soon: send at last + gap */
        } else if (errno == EINTR) {
            continue;
        } else if (now < deadline) {
            continue;                   /* spurious early return */
        }

        agent_sock_repair();
        if (atomic_exchange(&agent_hello_pending, false))
            agent_send_hello();
        agent_fill_report(&agent_rep, REPORT_T_REPORT, true);
        agent_send(&agent_rep, agent_rep_buf);
        last = now;
        woken = false;
        if (now >= next) {
            next += agent_jittered_interval_ns();
            if (next <= now)            /* we were suspended: restart the schedule */
                next = now + agent_jittered_interval_ns();
        }
    }

    agent_sock_repair();
    agent_fill_report(&agent_rep, REPORT_T_BYE, true);
    agent_send(&agent_rep, agent_rep_buf);
    return NULL;
}

/*
 * Starts the reporter with every signal blocked (it inherits the mask), so the
 * application's handlers never run on our thread. Returns 0 or a negative errno.
 */
static int agent_thread_start(void)
{
    sigset_t all, old;
    pthread_attr_t attr;
    int rc;

    agent_rng ^= agent_mono_ns() ^ ((uint64_t)agent_pid << 32);
    atomic_store(&agent_stopping, false);
    if ((rc = pthread_attr_init(&attr)) != 0)
        return -rc;
    pthread_attr_setstacksize(&attr, AGENT_STACK_BYTES);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&agent_thread, &attr, agent_reporter, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return -rc;
}

/*
 * Waits until no drover_log() holds a slot. Called after agent_running was
 * cleared: a drover_log() that takes a slot afterwards sees running false and
 * leaves at once (both sides use seq_cst, so one of them sees the other).
 */
static void agent_wait_log_slots(void)
{
    for (unsigned i = 0; i < AGENT_LOG_SLOTS; i++) {
        while (atomic_exchange(&agent_logs[i].busy, true)) {
            struct timespec ts = { 0, 100000 };
            nanosleep(&ts, NULL);
        }
        atomic_store(&agent_logs[i].busy, false);
    }
}

/* ------------------------------------------------------------------------ */
/* fork                                                                     */
/* ------------------------------------------------------------------------ */

/* Before fork: no start/stop may be half done when the address space is copied. */
static void agent_atfork_prepare(void)
{
    pthread_mutex_lock(&agent_life);
}

/* In the parent after fork: nothing changed. */
static void agent_atfork_parent(void)
{
    pthread_mutex_unlock(&agent_life);
}

/*
 * In the child after fork: the only thread is the one that forked, so plain
 * resets are safe. The child gets its own pid, seq from 0, zero counters and
 * histograms, and — when the parent's agent was running — its own socket,
 * semaphore and reporter, after sending its own `hello`. Metrics and
 * readiness are application state and are kept, as the rest of memory is.
 */
static void agent_atfork_child(void)
{
    agent_pid = (uint32_t)getpid();
    atomic_store(&agent_seq, 0);
    atomic_store(&agent_drops, 0);
    atomic_store(&agent_ctr.req, 0);
    atomic_store(&agent_ctr.err, 0);
    atomic_store(&agent_ctr.inflight, 0);
    hist_init(&agent_lat);
    hist_init(&agent_lag);
    agent_lat_seen = agent_lag_seen = 0;
    for (unsigned i = 0; i < AGENT_LOG_SLOTS; i++)
        atomic_store(&agent_logs[i].busy, false);
    for (unsigned i = 0; i < AGENT_METRIC_SLOTS; i++) {
        /* A slot being claimed by a thread that does not exist here would stay blocked. */
        if (atomic_load(&agent_metrics[i].state) == AGENT_SLOT_CLAIMING)
            atomic_store(&agent_metrics[i].state, AGENT_SLOT_FREE);
    }
    sem_init(&agent_wake, 0, 0);

    if (atomic_load(&agent_running)) {
        /* The inherited socket is shared with the parent: use our own. */
        agent_sock_close();
        if (agent_sock_open() != 0) {
            atomic_store(&agent_running, false);
        } else {
            /* No hello yet: most forks exec (or exit) at once, and a child
             * that only lives to exec should not show up in the hub as a
             * worker. Its reporter says hello with its first report. */
            atomic_store(&agent_hello_pending, true);
            if (agent_thread_start() != 0) {
                atomic_store(&agent_running, false);
                agent_sock_close();
            }
        }
    }
    pthread_mutex_unlock(&agent_life);
}

/* Once per process: the semaphore and the fork handlers. */
static void agent_init_once(void)
{
    sem_init(&agent_wake, 0, 0);
    pthread_atfork(agent_atfork_prepare, agent_atfork_parent, agent_atfork_child);
}

/* ------------------------------------------------------------------------ */
/* Public API: lifecycle                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Starts the agent (see drover.h): reads the environment, opens the socket,
 * sends `hello` (seq 0 for a fresh process) and starts the reporter. Counters
 * and seq continue across a stop/start in the same process, so the hub sees
 * no reset. Returns 0 (also when disabled or already running) or a negative errno.
 */
int drover_start(void)
{
    int rc;

    pthread_once(&agent_once, agent_init_once);
    pthread_mutex_lock(&agent_life);
    if (atomic_load(&agent_running) || agent_env_disabled()) {
        pthread_mutex_unlock(&agent_life);
        return 0;
    }
    if ((rc = agent_cfg_read()) != 0 || (rc = agent_sock_open()) != 0) {
        pthread_mutex_unlock(&agent_life);
        return rc;
    }
    agent_pid = (uint32_t)getpid();
    while (sem_trywait(&agent_wake) == 0) {
        /* forget wake-ups posted while stopped */
    }
    agent_send_hello();
    atomic_store(&agent_running, true);
    if ((rc = agent_thread_start()) != 0) {
        atomic_store(&agent_running, false);
        agent_wait_log_slots();
        agent_sock_close();
    }
    pthread_mutex_unlock(&agent_life);
    return rc;
}

/*
 * Stops the agent: the reporter sends `bye` with the final counters and
 * exits; we join it, wait for in-flight drover_log() calls and close the
 * socket. A no-op when not running.
 */
void drover_stop(void)
{
    pthread_mutex_lock(&agent_life);
    if (!atomic_load(&agent_running)) {
        pthread_mutex_unlock(&agent_life);
        return;
    }
    atomic_store(&agent_running, false);
    atomic_store(&agent_stopping, true);
    sem_post(&agent_wake);
    pthread_join(agent_thread, NULL);
    agent_wait_log_slots();
    agent_sock_close();
    pthread_mutex_unlock(&agent_life);
}

/* ------------------------------------------------------------------------ */
/* Public API: hot path (relaxed atomics only)                              */
/* ------------------------------------------------------------------------ */

/* Returns CLOCK_MONOTONIC in µs (a vDSO call, no syscall). */
uint64_t drover_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Raises inflight by one. */
void drover_request_begin(void)
{
    atomic_fetch_add_explicit(&agent_ctr.inflight, 1, memory_order_relaxed);
}

/*
 * Counts a finished request (and an error if failed), records its latency and
 * lowers inflight unless it is already zero — so drover_request_done()
 * without a matching begin never makes inflight wrap.
 */
void drover_request_done(uint64_t latency_us, bool failed)
{
    atomic_fetch_add_explicit(&agent_ctr.req, 1, memory_order_relaxed);
    if (failed)
        atomic_fetch_add_explicit(&agent_ctr.err, 1, memory_order_relaxed);
    hist_record(&agent_lat, latency_us);
    uint64_t cur = atomic_load_explicit(&agent_ctr.inflight, memory_order_relaxed);
    while (cur > 0 && !atomic_compare_exchange_weak_explicit(&agent_ctr.inflight, &cur, cur - 1,
                                                             memory_order_relaxed,
                                                             memory_order_relaxed)) {
        /* cur reloaded; retry */
    }
}

/* Counts one request. */
void drover_count_request(void)
{
    atomic_fetch_add_explicit(&agent_ctr.req, 1, memory_order_relaxed);
}

/* Counts one error. */
void drover_count_error(void)
{
    atomic_fetch_add_explicit(&agent_ctr.err, 1, memory_order_relaxed);
}

/* Records a latency sample in µs. */
void drover_observe_latency(uint64_t latency_us)
{
    hist_record(&agent_lat, latency_us);
}

/* Records an event-loop lag sample in µs. */
void drover_lag_observe(uint64_t late_us)
{
    hist_record(&agent_lag, late_us);
}

/*
 * Sets readiness; on a change wakes the reporter with sem_post (non-blocking
 * and async-signal-safe) so the hub hears of it within milliseconds.
 */
void drover_ready(bool ready)
{
    bool old = atomic_exchange(&agent_ready_flag, ready);
    if (old != ready && atomic_load(&agent_running))
        sem_post(&agent_wake);
}

/* FNV-1a over the name; also returns its length in *len (stops past the limit). */
static uint32_t agent_metric_hash(const char *name, size_t *len)
{
    uint32_t h = 2166136261u;
    size_t n = 0;
    while (n < REPORT_METRIC_KEY_MAX && name[n]) {
        h = (h ^ (unsigned char)name[n]) * 16777619u;
        n++;
    }
    *len = n;
    return h;
}

/*
 * Sets metric name to value (see drover.h). Lock-free: the slot is found by
 * linear probing from the name's hash; a new name claims the first free slot
 * on its path with a CAS. A slot another thread is claiming right now is
 * waited for briefly (it could hold the same name); if that thread does not
 * finish within AGENT_CLAIM_SPINS pauses the call gives up with -EAGAIN
 * rather than risk a duplicate name. Returns 0, -EINVAL, -ENOSPC or -EAGAIN.
 */
int drover_metric_set(const char *name, double value)
{
    size_t len;
    if (!name)
        return -EINVAL;
    uint32_t h = agent_metric_hash(name, &len);
    if (len == 0 || len >= REPORT_METRIC_KEY_MAX)
        return -EINVAL;
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);

    unsigned i = h % AGENT_METRIC_SLOTS;
    for (unsigned probes = 0; probes < AGENT_METRIC_SLOTS;) {
        int st = atomic_load_explicit(&agent_metrics[i].state, memory_order_acquire);
        if (st == AGENT_SLOT_READY) {
            if (agent_metrics[i].hash == h && memcmp(agent_metrics[i].name, name, len + 1) == 0) {
                atomic_store_explicit(&agent_metrics[i].bits, bits, memory_order_relaxed);
                return 0;
            }
        } else if (st == AGENT_SLOT_FREE) {
            if (!atomic_compare_exchange_strong(&agent_metrics[i].state, &st, AGENT_SLOT_CLAIMING))
                continue;               /* lost the race: look at this slot again */
            agent_metrics[i].hash = h;
            memset(agent_metrics[i].name, 0, sizeof agent_metrics[i].name);
            memcpy(agent_metrics[i].name, name, len);
            atomic_store_explicit(&agent_metrics[i].bits, bits, memory_order_relaxed);
            atomic_store_explicit(&agent_metrics[i].state, AGENT_SLOT_READY, memory_order_release);
            return 0;
        } else {
            int spins = 0;
            while (atomic_load_explicit(&agent_metrics[i].state, memory_order_acquire) ==
                   AGENT_SLOT_CLAIMING) {
                if (++spins > AGENT_CLAIM_SPINS)
                    return -EAGAIN;
                agent_cpu_relax();
            }
            continue;                   /* now READY: compare it */
        }
        i = (i + 1) % AGENT_METRIC_SLOTS;
        probes++;
    }
    return -ENOSPC;
}

/* ------------------------------------------------------------------------ */
/* Public API: log                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Copies at most cap-1 bytes of src into dst, NUL-terminated, shortened to a
 * UTF-8 character boundary so a cut line stays valid UTF-8 for the hub's JSON.
 */
static void agent_copy_utf8(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap);
    if (n >= cap) {
        n = cap - 1;
        /* Back off continuation bytes (10xxxxxx), then the lead byte they belong to. */
        size_t k = n;
        while (k > 0 && ((unsigned char)src[k] & 0xc0) == 0x80)
            k--;
        n = k;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/*
 * Sends one `log` datagram at once from a static slot. A NULL lvl reads as
 * "info", a NULL msg as "". When every slot is busy (more than
 * AGENT_LOG_SLOTS threads logging at this instant) the line is dropped and
 * counted in drops. A no-op when the agent is not running.
 */
void drover_log(const char *lvl, const char *msg)
{
    if (!atomic_load_explicit(&agent_running, memory_order_relaxed))
        return;
    unsigned i = 0;
    while (i < AGENT_LOG_SLOTS && atomic_exchange(&agent_logs[i].busy, true))
        i++;
    if (i == AGENT_LOG_SLOTS) {
        atomic_fetch_add_explicit(&agent_drops, 1, memory_order_relaxed);
        return;
    }
    /* Checked again while holding the slot: drover_stop() waits for held slots. */
    if (atomic_load(&agent_running)) {
        report *r = &agent_logs[i].rep;
        agent_fill_identity(r, REPORT_T_LOG);
        agent_copy_utf8(r->lvl, sizeof r->lvl, lvl ? lvl : "info");
        agent_copy_utf8(r->msg, sizeof r->msg, msg ? msg : "");
        r->has |= REPORT_HAS_LOG;
        agent_send(r, agent_logs[i].buf);
    }
    atomic_store(&agent_logs[i].busy, false);
}

/* ------------------------------------------------------------------------ */
/* Public API: event-loop lag with a timerfd                                */
/* ------------------------------------------------------------------------ */

/* Creates a non-blocking CLOCK_MONOTONIC timerfd firing every period_ms (0 → 10 ms). */
int drover_lag_timerfd(unsigned period_ms)
{
    if (period_ms == 0)
        period_ms = AGENT_LAG_DEFAULT_MS;
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct itimerspec its;
    its.it_interval.tv_sec = (time_t)(period_ms / 1000u);
    its.it_interval.tv_nsec = (long)(period_ms % 1000u) * 1000000L;
    its.it_value = its.it_interval;
    if (timerfd_settime(fd, 0, &its, NULL) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/*
 * Reads the timerfd and records how late its first unread expiration was
 * serviced: with k expirations, period P and R left until the next one,
 * lateness = (k-1)*P + (P-R). Stateless: everything comes from the fd. A
 * fd that is not readable (or not a periodic timerfd) records nothing. If
 * the timer fires again between the read and timerfd_gettime() the sample is
 * one period low (never high), which keeps a busy loop from inventing spikes.
 */
void drover_lag_timerfd_service(int fd)
{
    uint64_t k;
    if (read(fd, &k, sizeof k) != (ssize_t)sizeof k || k == 0)
        return;
    struct itimerspec cur;
    if (timerfd_gettime(fd, &cur) != 0)
        return;
    uint64_t p = agent_ts_ns(&cur.it_interval);
    uint64_t rem = agent_ts_ns(&cur.it_value);
    if (p == 0)
        return;
    if (rem > p)
        rem = p;
    /* k*P bounds the sum; past UINT64_MAX the histogram clamps anyway. */
    uint64_t late_ns = k > UINT64_MAX / p ? UINT64_MAX : (k - 1) * p + (p - rem);
    hist_record(&agent_lag, late_ns / 1000u);
}
