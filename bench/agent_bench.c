/*
 * agent_bench.c — what the drover agent costs the worker it lives in.
 *
 * Prints one markdown table:
 *   - ns per hot-path call, from 1 thread and from 2 threads at once;
 *   - µs to encode a full report and send it, to a hub that drains its
 *     socket (a child process) and to no hub at all (ENOENT);
 *   - the reporter thread's whole cost per report (wake-up, getrusage,
 *     /proc/self/statm, histograms, metrics, encode, send), measured by
 *     running it at a 10 ms interval for 5 s, and what that makes per hour
 *     at the default 1 s interval; beside it, the CPU of an empty thread
 *     waking every 10 ms, the floor any periodic reporter pays here.
 *
 * Usage: agent_bench [--seconds S]   (reporter run length, default 5)
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/drover.h"
#include "agent/hist.h"
#include "proto/report.h"

#define HOT_CALLS    20000000u   /* per measurement and thread */
#define SEND_CALLS   200000u
#define TARGET_HOT   "≤ 20 ns"
#define TARGET_SEND  "≤ 5 µs"
#define TARGET_HOT_NS  20.0
#define TARGET_SEND_US 5.0

static char missed[512];   /* the measures that missed their target, for the last line */

/* Notes a missed target. */
static void note_missed(const char *what)
{
    size_t n = strlen(missed);
    snprintf(missed + n, sizeof missed - n, "%s%s", n ? "; " : "", what);
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* This thread's CPU time in ns: what the calls cost it, not the time it waited for a
 * CPU on a shared machine (wall time there counts other processes' turns too). */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Process CPU time (user + system, all threads) in µs. */
static uint64_t process_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec +
           (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void die(const char *what)
{
    fprintf(stderr, "agent_bench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void row(const char *what, const char *result, const char *target)
{
    printf("| %s | %s | %s |\n", what, result, target);
}

/* ------------------------------------------------------------------------ */
/* Hot path                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum { HOT_REQUEST_DONE, HOT_COUNT_REQUEST, HOT_LAG_OBSERVE, HOT_METRIC_SET, HOT_N } hot_fn;

static const char *const hot_names[HOT_N] = {
    "drover_request_done", "drover_count_request", "drover_lag_observe",
    "drover_metric_set (existing name)",
};

/* Calls fn n times; the arguments vary so nothing can be hoisted. */
static void hot_loop(hot_fn fn, unsigned n)
{
    switch (fn) {
    case HOT_REQUEST_DONE:
        for (unsigned i = 0; i < n; i++)
            drover_request_done(100 + (i & 1023), (i & 255) == 0);
        break;
    case HOT_COUNT_REQUEST:
        for (unsigned i = 0; i < n; i++)
            drover_count_request();
        break;
    case HOT_LAG_OBSERVE:
        for (unsigned i = 0; i < n; i++)
            drover_lag_observe(i & 4095);
        break;
    case HOT_METRIC_SET:
        for (unsigned i = 0; i < n; i++)
            drover_metric_set("queue_depth", (double)i);
        break;
    case HOT_N:
        break;
    }
}

typedef struct {
    hot_fn             fn;
    pthread_barrier_t *go;
    int                cpu;
} hot_arg;

static void *hot_thread(void *p)
{
    hot_arg *a = p;
    /* One thread per CPU: otherwise the scheduler may run them one after the other. */
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(a->cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    pthread_barrier_wait(a->go);
    hot_loop(a->fn, HOT_CALLS);
    return NULL;
}

/*
 * Returns ns per call of fn with nthreads threads calling at once, each on
 * its own CPU: wall time / calls per thread, i.e. what one caller sees when
 * another hammers the same counters. One thread alone: its CPU time per call.
 */
static double hot_measure(hot_fn fn, int nthreads)
{
    hot_loop(fn, HOT_CALLS / 10);   /* warm up */
    if (nthreads == 1) {
        uint64_t t0 = thread_cpu_ns();
        hot_loop(fn, HOT_CALLS);
        return (double)(thread_cpu_ns() - t0) / HOT_CALLS;
    }
    pthread_t th[8];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)nthreads + 1);
    hot_arg a[8];
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    for (int i = 0; i < nthreads; i++) {
        a[i] = (hot_arg){ fn, &go, ncpu > 0 ? (int)(i % ncpu) : 0 };
        if (pthread_create(&th[i], NULL, hot_thread, &a[i]) != 0)
            die("pthread_create");
    }
    pthread_barrier_wait(&go);
    uint64_t t0 = mono_ns();
    for (int i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    uint64_t dt = mono_ns() - t0;
    pthread_barrier_destroy(&go);
    return (double)dt / HOT_CALLS;
}

/* ------------------------------------------------------------------------ */
/* Hub stand-in                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    pid_t pid;
    int   result_fd;   /* the child writes its counts here when it ends */
} drain_child;

/*
 * Forks a process that binds path and reads datagrams until SIGTERM (or a
 * `bye` when count_reports), then writes {datagrams, reports} to a pipe. A
 * separate process, so its CPU time is not in the bench's getrusage().
 */
static drain_child drain_start(const char *path, bool count_reports)
{
    int pfd[2], ready[2];
    if (pipe(pfd) != 0 || pipe(ready) != 0)
        die("pipe");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(pfd[0]);
        close(ready[0]);
        int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
        unlink(path);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
            _exit(1);
        struct timeval tv = { 0, 100000 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        signal(SIGTERM, SIG_DFL);
        sigset_t term;
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        sigprocmask(SIG_BLOCK, &term, NULL);
        if (write(ready[1], "x", 1) != 1)
            _exit(1);
        uint64_t counts[2] = { 0, 0 };
        static unsigned char buf[REPORT_MAX_BYTES];
        static report r;
        for (;;) {
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n > 0) {
                counts[0]++;
                if (count_reports && report_decode(buf, (size_t)n, &r) == REPORT_OK) {
                    if (r.type == REPORT_T_REPORT)
                        counts[1]++;
                    else if (r.type == REPORT_T_BYE)
                        break;
                }
                continue;
            }
            sigset_t pend;
            sigpending(&pend);
            if (sigismember(&pend, SIGTERM))
                break;
        }
        unlink(path);
        if (write(pfd[1], counts, sizeof counts) != (ssize_t)sizeof counts)
            _exit(1);
        _exit(0);
    }
    close(pfd[1]);
    close(ready[1]);
    char c;
    if (read(ready[0], &c, 1) != 1) {
        fprintf(stderr, "agent_bench: the hub stand-in could not bind %s\n", path);
        exit(1);
    }
    close(ready[0]);
    return (drain_child){ pid, pfd[0] };
}

/* Ends the stand-in (SIGTERM unless it ends by itself) and returns its counts. */
static void drain_stop(drain_child *d, bool signal_it, uint64_t counts[2])
{
    if (signal_it)
        kill(d->pid, SIGTERM);
    counts[0] = counts[1] = 0;
    if (read(d->result_fd, counts, 2 * sizeof(uint64_t)) != (ssize_t)(2 * sizeof(uint64_t)))
        counts[0] = counts[1] = 0;
    close(d->result_fd);
    waitpid(d->pid, NULL, 0);
}

/* ------------------------------------------------------------------------ */
/* Report encode + send                                                     */
/* ------------------------------------------------------------------------ */

/* A report as the agent sends it every interval: every key, a name, four metrics. */
static void fill_typical_report(report *r)
{
    memset(r, 0, sizeof *r);
    r->type = REPORT_T_REPORT;
    r->pid = (uint32_t)getpid();
    r->has = REPORT_HAS_TS | REPORT_HAS_NAME | REPORT_HAS_WID | REPORT_HAS_CPU | REPORT_HAS_RSS |
             REPORT_HAS_REQ | REPORT_HAS_ERR | REPORT_HAS_INFLIGHT | REPORT_HAS_LAT_H |
             REPORT_HAS_LAT_MAX | REPORT_HAS_LAG_H | REPORT_HAS_LAG_MAX | REPORT_HAS_READY |
             REPORT_HAS_DROPS | REPORT_HAS_METRICS;
    /* Cumulative histograms as a server's after a while: 40 latency buckets
     * (about 1-100 ms), 24 lag buckets, counts in the millions. */
    for (unsigned i = 0; i < 40; i++) {
        r->lat_h.idx[i] = (uint16_t)(150 + i * 3);
        r->lat_h.count[i] = 2000000u + i * 12345u;
    }
    r->lat_h.n = 40;
    for (unsigned i = 0; i < 24; i++) {
        r->lag_h.idx[i] = (uint16_t)(20 + i * 5);
        r->lag_h.count[i] = 50000u + i * 321u;
    }
    r->lag_h.n = 24;
    r->ts = 1700000000000u;
    strcpy(r->name, "api-server");
    r->wid = 3;
    r->cpu_us = 123456789;
    r->rss = 85u << 20;
    r->req = 98765432;
    r->err = 1234;
    r->inflight = 17;
    r->lat_max = 98304;
    r->lag_max = 12001;
    r->ready = true;
    r->drops = 2;
    static const char *const keys[] = { "queue_depth", "cache_hit_ratio", "db_pool_busy", "sessions" };
    for (unsigned i = 0; i < 4; i++) {
        strcpy(r->metrics[i].key, keys[i]);
        r->metrics[i].value = 0.5 + i;
    }
    r->nmetrics = 4;
}

typedef struct {
    double   us_per_report;
    uint64_t failed;           /* sendto() errors (EAGAIN when the stand-in lags, ENOENT without hub) */
    size_t   bytes;
} send_result;

/*
 * Encodes and sends a typical report SEND_CALLS times to path, with the
 * agent's flags (non-blocking, unconnected, address every time).
 */
static send_result send_measure(const char *path)
{
    static report r;
    static unsigned char buf[REPORT_MAX_BYTES];
    fill_typical_report(&r);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(a.sun_path) + 1);

    send_result res = { 0, 0, 0 };
    uint64_t t0 = thread_cpu_ns();     /* the sender's cost, not its waits for a CPU */
    for (unsigned i = 0; i < SEND_CALLS; i++) {
        r.seq = i;
        r.req++;
        size_t n = report_encode(&r, buf, sizeof buf);
        if (sendto(fd, buf, n, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&a, alen) < 0)
            res.failed++;
        res.bytes = n;
    }
    res.us_per_report = (double)(thread_cpu_ns() - t0) / 1000.0 / SEND_CALLS;
    close(fd);
    return res;
}

/* µs per hist_snapshot() of a histogram holding typical samples (~40 buckets in use). */
static double hist_snapshot_measure(void)
{
    static hist h;
    static report_hist out;
    uint64_t max;
    const unsigned rounds = 20000;
    uint64_t spent = 0;
    for (unsigned i = 0; i < rounds; i++) {
        for (unsigned k = 0; k < 200; k++)
            hist_record(&h, 500 + k * 97);     /* ~200 samples over ~40 buckets */
        uint64_t t0 = thread_cpu_ns();
        hist_snapshot(&h, &out, &max);
        spent += thread_cpu_ns() - t0;
    }
    return (double)spent / 1000.0 / rounds;
}

/* A thread that only sleeps on a semaphore with a 10 ms deadline, as the reporter does. */
static void *bare_waker(void *arg)
{
    unsigned wakes = *(unsigned *)arg;
    sem_t never;
    sem_init(&never, 0, 0);
    for (unsigned i = 0; i < wakes; i++) {
        struct timespec d;
        clock_gettime(CLOCK_MONOTONIC, &d);
        d.tv_nsec += 10000000L;
        if (d.tv_nsec >= 1000000000L) {
            d.tv_sec++;
            d.tv_nsec -= 1000000000L;
        }
        while (sem_clockwait(&never, CLOCK_MONOTONIC, &d) != 0 && errno == EINTR) {
        }
    }
    sem_destroy(&never);
    return NULL;
}

/*
 * Returns the process CPU (µs) per wake-up of bare_waker over `seconds`:
 * the price of any thread that wakes every 10 ms on this machine, which the
 * reporter's figure includes and cannot go below.
 */
static double bare_wake_measure(unsigned seconds)
{
    unsigned wakes = seconds * 100;
    pthread_t th;
    uint64_t cpu0 = process_cpu_us();
    if (pthread_create(&th, NULL, bare_waker, &wakes) != 0)
        die("pthread_create");
    pthread_join(th, NULL);
    return (double)(process_cpu_us() - cpu0) / wakes;
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    unsigned seconds = 5;
    if (argc == 3 && strcmp(argv[1], "--seconds") == 0 && atoi(argv[2]) > 0) {
        seconds = (unsigned)atoi(argv[2]);
    } else if (argc != 1) {
        fprintf(stderr, "usage: agent_bench [--seconds S]\n");
        return 2;
    }

    char dir[] = "/tmp/drover-bench-XXXXXX";
    if (!mkdtemp(dir))
        die("mkdtemp");
    char hub[128], nohub[128];
    snprintf(hub, sizeof hub, "%s/agent.sock", dir);
    snprintf(nohub, sizeof nohub, "%s/absent.sock", dir);

    /* The hot path is measured with the agent running, as in production, at 1 s. */
    setenv("DROVER_SOCKET", nohub, 1);
    setenv("DROVER_INTERVAL_MS", "1000", 1);
    unsetenv("DROVER_AGENT");
    if (drover_start() != 0) {
        fprintf(stderr, "agent_bench: drover_start failed\n");
        return 1;
    }
    drover_metric_set("queue_depth", 0);

    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("drover agent bench — %ld CPUs, %u calls per hot-path figure\n\n", ncpu, HOT_CALLS);
    printf("| measure | result | target |\n|---|---|---|\n");

    char res[128];
    for (int f = 0; f < HOT_N; f++) {
        for (int nt = 1; nt <= 2; nt++) {
            double ns = hot_measure((hot_fn)f, nt);
            char what[96];
            snprintf(what, sizeof what, "%s, %d thread%s", hot_names[f], nt, nt > 1 ? "s at once" : "");
            snprintf(res, sizeof res, "%.1f ns/call", ns);
            row(what, res, nt == 1 ? TARGET_HOT : "(contended cache lines)");
            if (nt == 1 && ns > TARGET_HOT_NS)
                note_missed(what);
        }
    }
    drover_stop();

    snprintf(res, sizeof res, "%.2f µs", hist_snapshot_measure());
    row("hist_snapshot (one cumulative histogram, 528 buckets, ~40 in use)", res, "");

    drain_child d = drain_start(hub, false);
    send_result s = send_measure(hub);
    uint64_t counts[2];
    drain_stop(&d, true, counts);
    snprintf(res, sizeof res, "%.2f µs (%zu bytes; %llu of %u got EAGAIN)", s.us_per_report, s.bytes,
             (unsigned long long)s.failed, SEND_CALLS);
    row("report encode + sendto, hub bound and draining", res, TARGET_SEND);
    if (s.us_per_report > TARGET_SEND_US)
        note_missed("report encode + sendto, hub bound");

    s = send_measure(nohub);
    snprintf(res, sizeof res, "%.2f µs (%llu of %u failed: ENOENT)", s.us_per_report,
             (unsigned long long)s.failed, SEND_CALLS);
    row("report encode + sendto, no hub", res, TARGET_SEND);
    if (s.us_per_report > TARGET_SEND_US)
        note_missed("report encode + sendto, no hub");

    /*
     * The reporter thread, all-in: at a 10 ms interval for `seconds`, while
     * this thread sleeps, so the process CPU is the reporter's.
     */
    d = drain_start(hub, true);
    setenv("DROVER_SOCKET", hub, 1);
    setenv("DROVER_INTERVAL_MS", "10", 1);
    for (int i = 0; i < 4; i++) {
        char k[16];
        snprintf(k, sizeof k, "metric_%d", i);
        drover_metric_set(k, i);
    }
    uint64_t cpu0 = process_cpu_us();
    if (drover_start() != 0) {
        fprintf(stderr, "agent_bench: drover_start failed\n");
        return 1;
    }
    sleep_ms(seconds * 1000);
    uint64_t cpu = process_cpu_us() - cpu0;
    drover_stop();
    drain_stop(&d, false, counts);
    uint64_t reports = counts[1] ? counts[1] : 1;
    double per_report_us = (double)cpu / (double)reports;
    snprintf(res, sizeof res, "%.1f µs CPU (%llu reports in %u s, %.1f ms CPU)", per_report_us,
             (unsigned long long)counts[1], seconds, (double)cpu / 1000.0);
    row("reporter thread, whole cycle per report (10 ms interval)", res, "");
    double bare_us = bare_wake_measure(seconds);
    snprintf(res, sizeof res, "%.1f µs CPU per wake-up (so the agent's own work is ≈ %.1f µs)", bare_us,
             per_report_us > bare_us ? per_report_us - bare_us : 0.0);
    row("for comparison: an empty thread waking every 10 ms", res, "");
    double per_hour_s = per_report_us * 3600.0 / 1e6;
    snprintf(res, sizeof res, "%.3f CPU-s per hour = %.4f %% of a core", per_hour_s,
             per_hour_s / 3600.0 * 100.0);
    row("reporter thread at the default 1 Hz", res, "");

    printf("\n%s%s\n", missed[0] ? "Missed targets: " : "All targets met.", missed);
    rmdir(dir);
    return 0;
}
