/*
 * ingest_sender.c — load generator for the hub's report socket (bench/run.sh).
 *
 *   ingest_sender SOCK PROCS SECONDS HZ [aligned]
 *
 * Forks PROCS sender processes. Each sends agent-format `report` datagrams
 * (built with report_encode(), the agent's own encoder) to SOCK with
 * MSG_DONTWAIT for SECONDS: flat out when HZ is 0, else HZ per second with a
 * random phase, as agents do (with `aligned`, every sender
 * fires at the same instants: the worst case for the socket's short queue).
 * Like the agent, a sender never waits: EAGAIN
 * (the socket's queue is full) is counted as a drop and the sequence number
 * still advances, so the hub sees the gap and counts it too.
 *
 * Prints one JSON line on stdout:
 *   {"procs":P,"seconds":S,"hz":H,"attempted":A,"sent":N,"eagain":E,"errors":X}
 * Built by the Makefile rule $(B)/bench/%: bench/%.c (linked with libdrover.a,
 * which carries proto/report.o). Exit status 0, or 2 on a usage error.
 */
#include "proto/report.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS 1024

typedef struct {
    uint64_t attempted, sent, eagain, errors;
} tally;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Sleeps until monotonic time t (seconds). */
static void sleep_until(double t)
{
    struct timespec ts = {.tv_sec = (time_t)t, .tv_nsec = (long)((t - (double)(time_t)t) * 1e9)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* One sender process: sends until the deadline, returns its tally. */
static tally sender(const char *path, int index, double seconds, double hz, bool aligned,
                    double t0)
{
    tally t = {0};
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        t.errors = 1;
        return t;
    }
    static report r;
    r.has = REPORT_HAS_TS | REPORT_HAS_NAME | REPORT_HAS_WID | REPORT_HAS_CPU | REPORT_HAS_RSS |
            REPORT_HAS_REQ | REPORT_HAS_ERR | REPORT_HAS_INFLIGHT | REPORT_HAS_LAT_H |
            REPORT_HAS_LAT_MAX | REPORT_HAS_LAG_H | REPORT_HAS_LAG_MAX | REPORT_HAS_READY | REPORT_HAS_DROPS;
    r.type = REPORT_T_REPORT;
    r.pid = (uint32_t)getpid();
    snprintf(r.name, sizeof r.name, "bench");
    r.wid = (uint64_t)index;
    r.rss = 5u << 20;
    r.lat_max = 15000;
    r.lag_max = 2000;
    /* cumulative histograms of a typical size: 30 latency and 12 lag buckets */
    for (unsigned i = 0; i < 30; i++) {
        r.lat_h.idx[i] = (uint16_t)(160 + i * 2);
        r.lat_h.count[i] = 10000u + i;
    }
    r.lat_h.n = 30;
    for (unsigned i = 0; i < 12; i++) {
        r.lag_h.idx[i] = (uint16_t)(10 + i * 4);
        r.lag_h.count[i] = 500u + i;
    }
    r.lag_h.n = 12;
    r.ready = true;
    unsigned char buf[REPORT_MAX_BYTES];

    srand((unsigned)getpid());
    double start = aligned ? t0 : now_s(), end = start + seconds;
    double next = start + (hz > 0 && !aligned ? (double)rand() / RAND_MAX / hz : 0);
    for (uint64_t i = 0;; i++) {
        if (hz > 0) {
            if (next >= end)
                break;
            sleep_until(next);
            next += 1.0 / hz;
        } else if ((i & 63) == 0 && now_s() >= end) {
            break;
        }
        r.seq = i + 1;
        r.ts = wall_ms();
        r.req = i * 10;
        r.cpu_us = i;
        r.drops = t.eagain + t.errors;
        size_t n = report_encode(&r, buf, sizeof buf);
        t.attempted++;
        if (send(fd, buf, n, MSG_DONTWAIT) == (ssize_t)n)
            t.sent++;
        else if (errno == EAGAIN || errno == EWOULDBLOCK)
            t.eagain++;
        else
            t.errors++;
    }
    close(fd);
    return t;
}

int main(int argc, char **argv)
{
    bool aligned = argc == 6 && strcmp(argv[5], "aligned") == 0;
    if (argc != 5 && !aligned) {
        fprintf(stderr, "usage: ingest_sender SOCK PROCS SECONDS HZ [aligned]  (HZ 0 = flat out)\n");
        return 2;
    }
    const char *path = argv[1];
    int procs = atoi(argv[2]);
    double seconds = atof(argv[3]), hz = atof(argv[4]);
    if (procs < 1 || procs > MAX_PROCS || seconds <= 0 || seconds > 600 || hz < 0) {
        fprintf(stderr, "ingest_sender: PROCS 1..%d, SECONDS 0..600, HZ >= 0\n", MAX_PROCS);
        return 2;
    }

    int go[2], res[2];
    if (pipe(go) != 0 || pipe(res) != 0) {
        perror("ingest_sender: pipe");
        return 1;
    }
    static pid_t kids[MAX_PROCS];
    /* Aligned senders start together a little after every fork is done. */
    double t0 = now_s() + 0.2 + procs * 0.002;
    int started = 0;
    for (int i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("ingest_sender: fork");
            break;
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);   /* never outlive the bench */
            close(go[1]);
            close(res[0]);
            char c;
            if (read(go[0], &c, 1) < 0) { /* EOF = start */ }
            tally t = sender(path, i, seconds, hz, aligned, t0);
            /* sizeof(tally) < PIPE_BUF: the write is atomic beside the siblings'. */
            if (write(res[1], &t, sizeof t) != (ssize_t)sizeof t)
                _exit(1);
            _exit(0);
        }
        kids[started++] = pid;
    }
    close(go[0]);
    close(res[1]);
    close(go[1]);                  /* all start at once */

    tally sum = {0};
    tally t;
    int got = 0;
    while (got < started && read(res[0], &t, sizeof t) == (ssize_t)sizeof t) {
        sum.attempted += t.attempted;
        sum.sent += t.sent;
        sum.eagain += t.eagain;
        sum.errors += t.errors;
        got++;
    }
    for (int i = 0; i < started; i++)
        waitpid(kids[i], NULL, 0);
    printf("{\"procs\":%d,\"seconds\":%g,\"hz\":%g,\"attempted\":%llu,\"sent\":%llu,"
           "\"eagain\":%llu,\"errors\":%llu}\n", got, seconds, hz,
           (unsigned long long)sum.attempted, (unsigned long long)sum.sent,
           (unsigned long long)sum.eagain, (unsigned long long)sum.errors);
    return got == procs ? 0 : 1;
}
