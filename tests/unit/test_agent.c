/*
 * test_agent.c — the agent (agent/agent.c) against a real AF_UNIX datagram
 * socket standing in for the hub: what arrives is decoded with report_decode()
 * and the sender's pid is checked against the kernel's SCM_CREDENTIALS.
 *
 * The agent is a process-wide singleton, so the tests run in order and each
 * one stops it before returning.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent/drover.h"
#include "agent/drover_uv.h"
#include "proto/report.h"
#include "proto/buckets.h"

#define WAIT_MS 3000     /* generous: sanitizer builds are slow */

static char tmpdir[64];
static char hub_path[128];
static int  hub_fd = -1;

/* Per-sender sequence tracking: every datagram must carry the previous seq + 1. */
static struct {
    pid_t    pid;
    uint64_t next;
    bool     strict;
} seq_track;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Binds a hub socket at path with SO_PASSCRED, so every datagram carries its sender's pid. */
static int hub_bind(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    assert_true(strlen(path) < sizeof a.sun_path);
    strcpy(a.sun_path, path);
    /* SO_PASSCRED before bind: a datagram queued in between would carry pid 0. */
    int on = 1;
    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
    unlink(path);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

/*
 * Receives one datagram within timeout_ms into *r. Returns false on timeout.
 * Asserts that it decodes and that its pid is the kernel-reported sender pid.
 */
static bool hub_recv(int fd, int timeout_ms, report *r)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    if (poll(&p, 1, timeout_ms) <= 0)
        return false;

    unsigned char buf[REPORT_MAX_BYTES + 1];
    union {
        struct cmsghdr h;
        char           space[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = { buf, sizeof buf };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof ctl };
    ssize_t n = recvmsg(fd, &mh, MSG_DONTWAIT);
    if (n < 0)
        return false;
    assert_true(n > 0 && (size_t)n <= REPORT_MAX_BYTES);
    report_error e = report_decode(buf, (size_t)n, r);
    if (e != REPORT_OK)
        fail_msg("datagram does not decode: %s", report_strerror(e));

    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    assert_non_null(c);
    assert_int_equal(c->cmsg_type, SCM_CREDENTIALS);
    struct ucred cred;
    memcpy(&cred, CMSG_DATA(c), sizeof cred);
    assert_int_equal(r->pid, (uint32_t)cred.pid);

    if (seq_track.strict && (pid_t)r->pid == seq_track.pid) {
        assert_int_equal(r->seq, seq_track.next);
        seq_track.next = r->seq + 1;
    }
    return true;
}

/* Discards everything queued on the hub socket. */
static void hub_drain(int fd)
{
    unsigned char buf[REPORT_MAX_BYTES];
    while (recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
    }
}

/* Predicate over a received datagram. */
typedef bool (*report_pred)(const report *r, void *arg);

/* Receives until pred holds (returns true, *r is the match) or timeout_ms passes. */
static bool hub_wait(int fd, int timeout_ms, report *r, report_pred pred, void *arg)
{
    uint64_t end = now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t t = now_ms();
        if (t >= end)
            return false;
        if (hub_recv(fd, (int)(end - t), r) && pred(r, arg))
            return true;
    }
}

static bool is_type(const report *r, void *arg)
{
    return r->type == *(report_type *)arg;
}

/* Sets the standard test environment and remembers where the hub listens. */
static void env_standard(unsigned interval_ms)
{
    char iv[16];
    snprintf(iv, sizeof iv, "%u", interval_ms);
    setenv("DROVER_SOCKET", hub_path, 1);
    setenv("DROVER_NAME", "testapp", 1);
    setenv("DROVER_WORKER_ID", "7", 1);
    setenv("DROVER_INTERVAL_MS", iv, 1);
    unsetenv("DROVER_AGENT");
}

/* Starts the agent and waits for its hello, returned in *r. */
static void start_expect_hello(report *r)
{
    hub_drain(hub_fd);
    assert_int_equal(drover_start(), 0);
    report_type t = REPORT_T_HELLO;
    assert_true(hub_wait(hub_fd, WAIT_MS, r, is_type, &t));
    assert_int_equal(r->pid, (uint32_t)getpid());
}

/* ------------------------------------------------------------------------ */
/* Group setup                                                              */
/* ------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/drover-test-agent-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(hub_path, sizeof hub_path, "%s/agent.sock", tmpdir);
    hub_fd = hub_bind(hub_path);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    drover_stop();
    if (hub_fd >= 0)
        close(hub_fd);
    unlink(hub_path);
    char p[160];
    snprintf(p, sizeof p, "%s/drover/default/agent.sock", tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/drover/default", tmpdir);
    rmdir(p);
    snprintf(p, sizeof p, "%s/drover", tmpdir);
    rmdir(p);
    rmdir(tmpdir);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                    */
/* ------------------------------------------------------------------------ */

/* Every call is safe before drover_start(): nothing is sent, nothing breaks. */
static void test_calls_before_start(void **state)
{
    (void)state;
    drover_stop();
    drover_log("info", "not started");
    drover_ready(false);
    drover_count_request();
    drover_lag_timerfd_service(-1);
    drover_stop();
    report r;
    assert_false(hub_recv(hub_fd, 100, &r));
}

/* Malformed DROVER_* variables make drover_start() fail with a negative errno. */
static void test_bad_environment(void **state)
{
    (void)state;
    env_standard(50);
    static const char *const bad_interval[] = { "abc", "5", "3600001", "-100", "100ms", " 100" };
    for (size_t i = 0; i < sizeof bad_interval / sizeof bad_interval[0]; i++) {
        setenv("DROVER_INTERVAL_MS", bad_interval[i], 1);
        assert_int_equal(drover_start(), -EINVAL);
    }
    env_standard(50);
    static const char *const bad_wid[] = { "-1", "3x", "99999999999", "0x10" };
    for (size_t i = 0; i < sizeof bad_wid / sizeof bad_wid[0]; i++) {
        setenv("DROVER_WORKER_ID", bad_wid[i], 1);
        assert_int_equal(drover_start(), -EINVAL);
    }
    env_standard(50);
    char longname[REPORT_NAME_MAX + 1];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    setenv("DROVER_NAME", longname, 1);
    assert_int_equal(drover_start(), -EINVAL);

    env_standard(50);
    char longpath[200];
    memset(longpath, 'p', sizeof longpath - 1);
    longpath[0] = '/';
    longpath[sizeof longpath - 1] = '\0';
    setenv("DROVER_SOCKET", longpath, 1);
    assert_int_equal(drover_start(), -ENAMETOOLONG);

    /* A failed start leaves the agent off. */
    drover_log("info", "x");
    drover_stop();
    report r;
    assert_false(hub_recv(hub_fd, 100, &r));
}

/* DROVER_AGENT=0: drover_start() succeeds and nothing is ever sent. */
static void test_disabled(void **state)
{
    (void)state;
    env_standard(20);
    setenv("DROVER_AGENT", "0", 1);
    assert_int_equal(drover_start(), 0);
    drover_count_request();
    drover_log("info", "disabled");
    drover_ready(true);
    drover_ready(false);
    report r;
    assert_false(hub_recv(hub_fd, 200, &r));
    drover_stop();
    unsetenv("DROVER_AGENT");
}

struct counts_want {
    uint64_t req, err, inflight;
};

static bool has_counts(const report *r, void *arg)
{
    const struct counts_want *w = arg;
    return r->type == REPORT_T_REPORT && r->req == w->req && r->err == w->err && r->inflight == w->inflight;
}

static bool is_report_without_samples(const report *r, void *arg)
{
    (void)arg;
    return r->type == REPORT_T_REPORT && !(r->has & (REPORT_HAS_LAT | REPORT_HAS_LAG));
}

/*
 * hello, then reports with the right counters, identity in every one, seq
 * +1 per datagram, latency percentiles, LAT/LAG absent for an empty interval,
 * metrics, and bye at stop.
 */
static void test_hello_reports_bye(void **state)
{
    (void)state;
    report r;
    env_standard(50);
    seq_track.pid = getpid();
    seq_track.strict = false;

    start_expect_hello(&r);
    assert_int_equal(r.type, REPORT_T_HELLO);
    assert_true(r.has & REPORT_HAS_NAME);
    assert_string_equal(r.name, "testapp");
    assert_true(r.has & REPORT_HAS_WID);
    assert_int_equal(r.wid, 7);
    assert_true(r.has & REPORT_HAS_TS);
    seq_track.next = r.seq + 1;
    seq_track.strict = true;

    /* Counters are cumulative over the process: take a baseline first. */
    report_type t = REPORT_T_REPORT;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));
    struct counts_want w = { r.req, r.err, r.inflight };

    for (int i = 1; i <= 10; i++) {
        drover_request_begin();
        drover_request_done((uint64_t)i * 100, i == 4);
    }
    for (int i = 0; i < 3; i++)
        drover_request_begin();
    assert_int_equal(drover_metric_set("queue_depth", 3.5), 0);
    w.req += 10;
    w.err += 1;
    w.inflight += 3;

    assert_true(hub_wait(hub_fd, WAIT_MS, &r, has_counts, &w));
    assert_string_equal(r.name, "testapp");
    assert_int_equal(r.wid, 7);
    assert_true(r.has & REPORT_HAS_CPU);
    assert_true(r.has & REPORT_HAS_RSS);
    assert_true(r.rss > 0);
    assert_true(r.has & REPORT_HAS_READY);
    assert_true(r.has & REPORT_HAS_DROPS);

    /* Wall-clock ts, ms. */
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    uint64_t wall_ms = (uint64_t)wall.tv_sec * 1000u + (uint64_t)wall.tv_nsec / 1000000u;
    assert_true(r.ts <= wall_ms && r.ts + 5000 > wall_ms);

    /* Metrics are in every report. */
    bool found = false;
    for (uint32_t i = 0; i < r.nmetrics; i++)
        if (strcmp(r.metrics[i].key, "queue_depth") == 0) {
            found = true;
            assert_true(r.metrics[i].value == 3.5);
        }
    assert_true(found);

    /* With no new samples a report leaves the LAT/LAG keys out. */
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_report_without_samples, NULL));
    assert_true(r.has & REPORT_HAS_NAME);
    assert_true(r.has & REPORT_HAS_WID);

    /* Back to zero inflight, then stop: bye carries the final counters. */
    for (int i = 0; i < 3; i++)
        drover_request_done(50, false);
    w.req += 3;
    w.inflight -= 3;
    drover_stop();
    t = REPORT_T_BYE;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));
    assert_int_equal(r.req, w.req);
    assert_int_equal(r.inflight, w.inflight);
    seq_track.strict = false;

    /* Nothing after bye. */
    assert_false(hub_recv(hub_fd, 150, &r));
}

static bool has_lat(const report *r, void *arg)
{
    (void)arg;
    return r->type == REPORT_T_REPORT && (r->has & REPORT_HAS_LAT_H);
}

/* Latency percentiles of one interval: 1..1000 µs → p50 ≈ 500, p99 ≈ 990, max 1000. */
static void test_latency_percentiles(void **state)
{
    (void)state;
    report r;
    env_standard(200);
    start_expect_hello(&r);
    /* Right after a report, so all samples land in the same interval. */
    report_type t = REPORT_T_REPORT;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));
    for (uint64_t v = 1; v <= 1000; v++)
        drover_observe_latency(v);
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, has_lat, NULL));
    assert_true(r.has & REPORT_HAS_LAT_MAX);
    assert_int_equal(r.lat_max, 1000);
    /* The histogram is cumulative; these are the only samples so far. */
    uint64_t p50 = hist_quantile_sparse(r.lat_h.idx, r.lat_h.count, r.lat_h.n, 5000, r.lat_max);
    uint64_t p99 = hist_quantile_sparse(r.lat_h.idx, r.lat_h.count, r.lat_h.n, 9900, r.lat_max);
    assert_true(p50 >= 500 && p50 < 500 + 500 / 16 + 1);
    assert_true(p99 >= 990 && p99 < 990 + 990 / 16 + 1);
    assert_false(r.has & (REPORT_HAS_LAG_H | REPORT_HAS_LAG_MAX | REPORT_HAS_LAT | REPORT_HAS_LAG));
    assert_int_equal(r.v, REPORT_VERSION);
    /* The next report has the same counts and no max (no sample since). */
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));
    assert_true(r.has & REPORT_HAS_LAT_H);
    assert_false(r.has & REPORT_HAS_LAT_MAX);
    drover_stop();
}

static bool has_ready(const report *r, void *arg)
{
    return r->type == REPORT_T_REPORT && r->ready == *(bool *)arg;
}

/* A readiness change is sent at once, not at the next (2 s) interval. */
static void test_ready_prompt(void **state)
{
    (void)state;
    report r;
    drover_ready(false);
    env_standard(2000);
    start_expect_hello(&r);
    assert_false(r.ready);

    bool want = true;
    uint64_t t0 = now_ms();
    drover_ready(true);
    assert_true(hub_wait(hub_fd, 1000, &r, has_ready, &want));
    uint64_t took = now_ms() - t0;
    assert_true(took < 500);

    /* Setting the same value again sends nothing. */
    drover_ready(true);
    assert_false(hub_recv(hub_fd, 200, &r));

    want = false;
    t0 = now_ms();
    drover_ready(false);
    assert_true(hub_wait(hub_fd, 1000, &r, has_ready, &want));
    assert_true(now_ms() - t0 < 500);
    drover_stop();
}

static bool has_drops(const report *r, void *arg)
{
    return r->type == REPORT_T_REPORT && r->drops >= *(uint64_t *)arg;
}

/*
 * No hub: drover_start() still succeeds and calls return at once; once the
 * hub binds the socket, reports arrive and `drops` counts what was lost.
 */
static void test_no_hub(void **state)
{
    (void)state;
    report r;
    close(hub_fd);
    hub_fd = -1;
    unlink(hub_path);
    env_standard(20);
    assert_int_equal(drover_start(), 0);

    uint64_t t0 = now_ms();
    for (int i = 0; i < 100000; i++) {
        drover_request_begin();
        drover_request_done(10, false);
        drover_lag_observe(1);
    }
    for (int i = 0; i < 20; i++)
        drover_log("info", "nobody listens");
    drover_ready(true);
    drover_ready(false);
    assert_true(now_ms() - t0 < 2000); /* nothing waited on a hub */

    sleep_ms(200);                     /* several failed reports */
    hub_fd = hub_bind(hub_path);
    uint64_t min_drops = 5;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, has_drops, &min_drops));
    assert_true(r.seq >= min_drops);   /* attempts took seq numbers too */
    drover_stop();
}

/*
 * The hub is replaced (socket file unlinked and bound again by a new hub):
 * the agent finds it again with no restart.
 */
static void test_hub_replaced(void **state)
{
    (void)state;
    report r;
    env_standard(20);
    start_expect_hello(&r);
    report_type t = REPORT_T_REPORT;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));
    close(hub_fd);
    hub_fd = hub_bind(hub_path);       /* unlinks and binds a new socket */
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));
    drover_stop();
}

/*
 * Returns the agent's socket: the one unbound AF_UNIX datagram socket of this
 * process other than the hub's, or -1.
 */
static int find_agent_socket(void)
{
    for (int fd = 3; fd < 1024; fd++) {
        struct stat st;
        if (fd == hub_fd || fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
            continue;
        int type;
        socklen_t tl = sizeof type;
        struct sockaddr_un a;
        socklen_t al = sizeof a;
        if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_DGRAM &&
            getsockname(fd, (struct sockaddr *)&a, &al) == 0 && a.sun_family == AF_UNIX &&
            al == sizeof(sa_family_t))
            return fd;
    }
    return -1;
}

/* Returns a connected TCP pair over loopback: c[0] the client end, c[1] the accepted one. */
static void tcp_pair(int c[2])
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    c[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(c[0], (struct sockaddr *)&a, sizeof a), 0);
    c[1] = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    assert_true(c[1] >= 0);
    close(l);
}

/*
 * The application closes the agent's fd (a close-all loop) and the number is
 * reused for one of its TCP connections — where sendto() ignores the address
 * and would inject our bytes into the stream. The agent must never write
 * there, and its reports must resume on a new socket.
 */
static void test_fd_stolen(void **state)
{
    (void)state;
    report r;
    env_standard(20);
    start_expect_hello(&r);
    int afd = find_agent_socket();
    assert_true(afd >= 0);

    int c[2];
    tcp_pair(c);
    assert_int_equal(dup2(c[0], afd), afd);   /* the agent's number is now our connection */
    drover_log("info", "must not reach the connection");
    for (int i = 0; i < 20; i++)
        drover_count_request();

    report_type t = REPORT_T_REPORT;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));   /* recovered */
    char ch;
    assert_int_equal(recv(c[1], &ch, 1, MSG_DONTWAIT), -1);   /* nothing was injected */
    assert_int_equal(errno, EAGAIN);
    assert_true(r.drops >= 1);                                 /* the log line was dropped */

    drover_stop();
    assert_int_equal(recv(c[1], &ch, 1, MSG_DONTWAIT), -1);   /* not even the bye */
    /* stop must not close what is not the agent's anymore */
    assert_true(fcntl(afd, F_GETFD) >= 0);
    close(afd);
    close(c[0]);
    close(c[1]);
}

static bool is_log(const report *r, void *arg)
{
    (void)arg;
    return r->type == REPORT_T_LOG;
}

/* drover_log() arrives as t=log with lvl and msg; long lines are cut on a UTF-8 boundary. */
static void test_log(void **state)
{
    (void)state;
    report r;
    env_standard(1000);
    start_expect_hello(&r);
    seq_track.pid = getpid();
    seq_track.next = r.seq + 1;
    seq_track.strict = true;

    drover_log("warn", "hello world");
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_log, NULL));
    assert_string_equal(r.lvl, "warn");
    assert_string_equal(r.msg, "hello world");
    assert_string_equal(r.name, "testapp");
    assert_int_equal(r.wid, 7);

    drover_log(NULL, NULL);
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_log, NULL));
    assert_string_equal(r.lvl, "info");
    assert_string_equal(r.msg, "");

    static char big[6000];
    memset(big, 'a', sizeof big - 1);
    drover_log("error", big);
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_log, NULL));
    assert_int_equal(strlen(r.msg), REPORT_MSG_MAX - 1);

    /* 4094 'a' then "é" (2 bytes): byte 4095 would split the character. */
    memset(big, 'a', REPORT_MSG_MAX - 2);
    strcpy(big + REPORT_MSG_MAX - 2, "\xc3\xa9zz");
    drover_log("error", big);
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_log, NULL));
    assert_int_equal(strlen(r.msg), REPORT_MSG_MAX - 2);

    seq_track.strict = false;
    drover_stop();
}

/*
 * fork: the child reports as itself — its own pid, seq from 0, its own
 * counters — while the parent carries on with its own.
 */
static void test_fork(void **state)
{
    (void)state;
    report r;
    env_standard(30);
    start_expect_hello(&r);
    report_type t = REPORT_T_REPORT;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));
    uint64_t parent_req0 = r.req;
    uint64_t parent_seq = r.seq;
    for (int i = 0; i < 5; i++)
        drover_count_request();

    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        for (int i = 0; i < 3; i++)
            drover_count_request();
        drover_log("info", "from the child");
        sleep_ms(200);
        drover_stop();
        _exit(0);
    }

    bool child_hello = false, child_report = false, child_log = false, child_bye = false;
    bool parent_report = false;
    uint64_t child_next = 0;
    uint64_t end = now_ms() + WAIT_MS;
    while (now_ms() < end && !(child_bye && parent_report)) {
        if (!hub_recv(hub_fd, 100, &r))
            continue;
        if ((pid_t)r.pid == child) {
            assert_int_equal(r.seq, child_next);   /* 0, 1, 2… with no gap */
            child_next++;
            if (r.type == REPORT_T_HELLO) {
                /* a child's hello waits for its reporter's first round, so
                 * the log line sent at once may come first */
                assert_false(child_hello);
                assert_string_equal(r.name, "testapp");
                child_hello = true;
            } else if (r.type == REPORT_T_REPORT) {
                assert_true(child_hello);
                assert_true(r.req <= 3);        /* the parent's requests are not the child's */
                if (r.req == 3)
                    child_report = true;
            } else if (r.type == REPORT_T_LOG) {
                assert_string_equal(r.msg, "from the child");
                child_log = true;
            } else if (r.type == REPORT_T_BYE) {
                assert_int_equal(r.req, 3);
                child_bye = true;
            }
        } else {
            assert_int_equal(r.pid, (uint32_t)getpid());
            assert_true(r.seq > parent_seq);      /* the parent's seq goes on */
            parent_seq = r.seq;
            if (r.type == REPORT_T_REPORT && r.req == parent_req0 + 5)
                parent_report = true;
        }
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(child_hello);
    assert_true(child_report);
    assert_true(child_log);
    assert_true(child_bye);
    assert_true(parent_report);
    drover_stop();
}

static bool lag_at_least(const report *r, void *arg)
{
    return r->type == REPORT_T_REPORT && (r->has & REPORT_HAS_LAG_MAX) && r->lag_max >= *(uint64_t *)arg;
}

/* timerfd lag: a loop that blocks 50 ms before servicing records ≥ 40 ms. */
static void test_timerfd_lag(void **state)
{
    (void)state;
    report r;
    env_standard(50);
    start_expect_hello(&r);
    uint64_t t0 = drover_now_us();
    int fd = drover_lag_timerfd(10);
    uint64_t t1 = drover_now_us();
    assert_true(fd >= 0);
    sleep_ms(50);
    uint64_t t2 = drover_now_us();
    drover_lag_timerfd_service(fd);
    uint64_t t3 = drover_now_us();
    uint64_t min = 40000;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, lag_at_least, &min));
    /* The first expiry was due 10 ms after creation: the sample lies between these bounds. */
    assert_true(r.lag_max + 1000 >= t2 - t1 - 10000);
    assert_true(r.lag_max <= t3 - t0 - 10000 + 1000);

    /* Not readable yet: nothing recorded, nothing blocks. */
    drover_lag_timerfd_service(fd);
    close(fd);
    assert_true(drover_lag_timerfd(0) >= 0);   /* 0 → default period; leaked on purpose: the test ends */
    drover_stop();
}

static void uv_noop_cb(uv_timer_t *t)
{
    (void)t;
}

/*
 * A one-shot libuv timer callback that stalls the loop for 60 ms, then starts
 * the timer in t->data 30 ms later to hold the loop open: its due time is
 * counted from the loop time cached before the stall, so the lag timer (due
 * earlier) fires before it, however late this callback itself ran.
 */
static void uv_stall_cb(uv_timer_t *t)
{
    uint64_t end = uv_hrtime() + 60 * 1000000u;
    while (uv_hrtime() < end) {
    }
    assert_int_equal(uv_timer_start((uv_timer_t *)t->data, uv_noop_cb, 30, 0), 0);
}

/* drover_uv.h: a loop stalled for 60 ms records a lag sample of about 50-60 ms. */
static void test_uv_lag(void **state)
{
    (void)state;
    report r;
    env_standard(50);
    start_expect_hello(&r);

    uv_loop_t loop;
    uv_timer_t lag, stall, keep;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(drover_lag_uv_start(&loop, &lag, 10), 0);
    assert_int_equal(uv_timer_init(&loop, &stall), 0);
    /* The lag timer is unref'd: `keep`, started by the stall, holds the loop
     * open until the lag timer has fired once after the stall. */
    assert_int_equal(uv_timer_init(&loop, &keep), 0);
    stall.data = &keep;
    assert_int_equal(uv_timer_start(&stall, uv_stall_cb, 30, 0), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    drover_lag_uv_stop(&lag);
    uv_close((uv_handle_t *)&lag, NULL);
    uv_close((uv_handle_t *)&stall, NULL);
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);

    uint64_t min = 45000;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, lag_at_least, &min));
    assert_true(r.lag_max < 200000);
    drover_stop();
}

/* Without DROVER_SOCKET the agent uses $XDG_RUNTIME_DIR/drover/default/agent.sock. */
static void test_default_socket_path(void **state)
{
    (void)state;
    char dir[160], path[200];
    snprintf(dir, sizeof dir, "%s/drover", tmpdir);
    mkdir(dir, 0700);
    snprintf(dir, sizeof dir, "%s/drover/default", tmpdir);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/agent.sock", dir);
    int fd = hub_bind(path);

    env_standard(50);
    unsetenv("DROVER_SOCKET");
    char *old_xdg = getenv("XDG_RUNTIME_DIR");
    char saved[256] = "";
    if (old_xdg)
        snprintf(saved, sizeof saved, "%s", old_xdg);
    setenv("XDG_RUNTIME_DIR", tmpdir, 1);
    assert_int_equal(drover_start(), 0);
    report r;
    report_type t = REPORT_T_HELLO;
    assert_true(hub_wait(fd, WAIT_MS, &r, is_type, &t));
    drover_stop();
    if (old_xdg)
        setenv("XDG_RUNTIME_DIR", saved, 1);
    else
        unsetenv("XDG_RUNTIME_DIR");
    close(fd);
    unlink(path);
}

/* drover_start() twice is one agent (one hello); stop twice is harmless. */
static void test_idempotent(void **state)
{
    (void)state;
    report r;
    env_standard(1000);
    start_expect_hello(&r);
    assert_int_equal(drover_start(), 0);
    report_type t = REPORT_T_HELLO;
    assert_false(hub_wait(hub_fd, 200, &r, is_type, &t));
    drover_stop();
    drover_stop();
}

/* Metric names: validation, 32 slots, updates of existing names after the table is full. */
static void test_metric_slots(void **state)
{
    (void)state;
    char name[64];
    assert_int_equal(drover_metric_set(NULL, 1), -EINVAL);
    assert_int_equal(drover_metric_set("", 1), -EINVAL);
    memset(name, 'm', 48);
    name[48] = '\0';
    assert_int_equal(drover_metric_set(name, 1), -EINVAL);     /* 48 bytes: too long */
    name[47] = '\0';
    assert_int_equal(drover_metric_set(name, 1), 0);           /* 47 bytes: fits */

    /* Earlier tests set queue_depth; fill the rest. */
    int added = 0;
    for (int i = 0; i < 64 && added >= 0; i++) {
        snprintf(name, sizeof name, "metric_%d", i);
        int rc = drover_metric_set(name, i);
        if (rc == -ENOSPC)
            break;
        assert_int_equal(rc, 0);
        added++;
    }
    assert_int_equal(added, REPORT_METRICS_MAX - 2);
    assert_int_equal(drover_metric_set("one_too_many", 1), -ENOSPC);
    assert_int_equal(drover_metric_set("queue_depth", 9), 0);  /* existing: still fine */

    report r;
    env_standard(50);
    start_expect_hello(&r);
    report_type t = REPORT_T_REPORT;
    assert_true(hub_wait(hub_fd, WAIT_MS, &r, is_type, &t));
    assert_int_equal(r.nmetrics, REPORT_METRICS_MAX);
    bool found = false;
    for (uint32_t i = 0; i < r.nmetrics; i++)
        if (strcmp(r.metrics[i].key, "queue_depth") == 0)
            found = r.metrics[i].value == 9.0;
    assert_true(found);
    drover_stop();
}

/* After each test: the agent is off whatever the test did (a failure must not cascade). */
static int test_teardown(void **state)
{
    (void)state;
    drover_stop();
    seq_track.strict = false;
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, test_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_calls_before_start),
        T(test_bad_environment),
        T(test_disabled),
        T(test_hello_reports_bye),
        T(test_latency_percentiles),
        T(test_ready_prompt),
        T(test_no_hub),
        T(test_hub_replaced),
        T(test_fd_stolen),
        T(test_log),
        T(test_fork),
        T(test_timerfd_lag),
        T(test_uv_lag),
        T(test_default_socket_path),
        T(test_idempotent),
        T(test_metric_slots),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
