/*
 * test_logs.c — worker log capture (hub/logs.h) with real child processes.
 *
 * Writers are real processes: /bin/sh for the small cases, and this test
 * binary re-executed as "writer" for the bursts, so the
 * writer runs as fast as a compiled program can and is not slowed by
 * valgrind (which does not follow exec by default).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hub/logs.h"

/* ---- the writer (runs in the re-executed child) ------------------------- */

/* Formats line n into out (no newline); fixed-length lines are 31 bytes. */
static size_t line_fmt(char *out, unsigned n, bool fixed)
{
    int k = snprintf(out, 16, "L%07u ", n);
    size_t len = (size_t)k;
    size_t plen = fixed ? 22 : (n * 7u) % 61u;
    char c = fixed ? 'x' : (char)('a' + n % 26);
    memset(out + len, c, plen);
    return len + plen;
}

/* Writes all of buf to fd; returns false on error. */
static bool write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        buf += w;
        len -= (size_t)w;
    }
    return true;
}

/* A byte buffer per fd, written out in chunks of pseudo-random sizes so that
 * lines straddle write() and read() boundaries everywhere. */
typedef struct {
    int      fd;
    char     buf[1 << 16];
    size_t   len;
    size_t   target;
    uint32_t rng;
} wr_out;

static uint32_t wr_rand(uint32_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static bool wr_put(wr_out *o, const char *s, size_t len)
{
    while (len > 0) {
        size_t n = sizeof o->buf - o->len < len ? sizeof o->buf - o->len : len;
        memcpy(o->buf + o->len, s, n);
        o->len += n;
        s += n;
        len -= n;
        if (o->len >= o->target) {
            if (!write_all(o->fd, o->buf, o->len))
                return false;
            o->len = 0;
            o->target = 1 + wr_rand(&o->rng) % 20000;
        }
    }
    return true;
}

/*
 * writer num N [S]    N lines line_fmt(n) from S on stdout, in chunks of random sizes
 * writer numw N       the same, one write() per line (as unbuffered loggers do)
 * writer fixed N S    N fixed-length lines numbered from S on stdout
 * writer both N       line n on stderr when n % 3 == 0, else on stdout
 * writer long         the long-line pattern of test_long_line_split
 */
static int writer_main(int argc, char **argv)
{
    static wr_out o[3];
    char line[128];
    const char *mode = argc > 2 ? argv[2] : "";
    unsigned n = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 0;
    unsigned start = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 0;
    for (int i = 1; i <= 2; i++) {
        o[i].fd = i;
        o[i].rng = 2463534242u + (uint32_t)i;
        o[i].target = 1000;
    }
    if (strcmp(mode, "long") == 0) {
        static char big[20000];
        memset(big, 'x', 20000);
        wr_put(&o[1], big, 20000);
        wr_put(&o[1], "\n", 1);
        memset(big, 'y', LOGS_LINE_MAX);
        wr_put(&o[1], big, LOGS_LINE_MAX);
        wr_put(&o[1], "\nshort\n", 7);
        memset(big, 'z', 9000);
        wr_put(&o[1], big, 9000);   /* no newline: the partial last line */
    } else {
        bool fixed = strcmp(mode, "fixed") == 0, both = strcmp(mode, "both") == 0;
        bool each = strcmp(mode, "numw") == 0;
        for (unsigned i = start; i < start + n; i++) {
            size_t len = line_fmt(line, i, fixed);
            line[len++] = '\n';
            if (each ? !write_all(1, line, len) : !wr_put(&o[both && i % 3 == 0 ? 2 : 1], line, len))
                return 1;
        }
    }
    for (int i = 1; i <= 2; i++)
        if (!write_all(i, o[i].buf, o[i].len))
            return 1;
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

/* Starts argv[0] with stdout and stderr on fresh pipes; returns the pid and
 * the read ends. */
static pid_t spawn_piped(char *const argv[], int *out_rd, int *err_rd)
{
    int o[2], e[2];
    assert_int_equal(pipe2(o, O_CLOEXEC), 0);
    assert_int_equal(pipe2(e, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (dup2(o[1], 1) < 0 || dup2(e[1], 2) < 0)
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    close(o[1]);
    close(e[1]);
    *out_rd = o[0];
    *err_rd = e[0];
    return pid;
}

/* Starts /bin/sh -c script. */
static pid_t spawn_sh(const char *script, int *out_rd, int *err_rd)
{
    char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    return spawn_piped(argv, out_rd, err_rd);
}

/* This binary's path, read in main: exec'ing "/proc/self/exe" itself would
 * start valgrind's tool, not the test, when the tests run under valgrind. */
static char self_exe[4096];

/* Starts this binary as a writer with up to three arguments. */
static pid_t spawn_writer(const char *mode, const char *a1, const char *a2, int *out_rd, int *err_rd)
{
    char *argv[] = {self_exe, "writer", (char *)mode, (char *)a1, (char *)a2, NULL};
    return spawn_piped(argv, out_rd, err_rd);
}

/* Starts a process and attaches both its pipes to st. */
static pid_t attach_sh(logs_stream *st, const char *script)
{
    int o, e;
    pid_t pid = spawn_sh(script, &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    return pid;
}

/* Waits for pid and checks that it exited with 0. */
static void reap_ok(pid_t pid)
{
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void tick_noop(uv_timer_t *t) { (void)t; }

/* Runs the loop until every pipe of st closed, at most timeout_ms. */
static bool run_until_closed(uv_loop_t *loop, logs_stream *st, int timeout_ms)
{
    uv_timer_t t;
    uint64_t end = uv_hrtime() + (uint64_t)timeout_ms * 1000000u;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick_noop, 10, 10);   /* so that UV_RUN_ONCE returns */
    while (logs_stream_open(st) && uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return !logs_stream_open(st);
}

/* Runs the loop for about ms milliseconds. */
static void run_for(uv_loop_t *loop, int ms)
{
    uv_timer_t t;
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000u;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, tick_noop, 5, 5);
    while (uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

/* Frees lg, lets libuv close its handles and checks nothing is left open. */
static void finish(uv_loop_t *loop, logs *lg)
{
    logs_free(lg);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* A fresh temporary directory per test (state), removed at teardown. */
static int setup_dir(void **state)
{
    char *dir = strdup("/tmp/drover-test-logs-XXXXXX");
    if (!dir || !mkdtemp(dir))
        return -1;
    *state = dir;
    return 0;
}

static int teardown_dir(void **state)
{
    nftw(*state, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(*state);
    return 0;
}

/* Returns the path dir/name in a static buffer (one at a time). */
static const char *pathof(const char *dir, const char *name)
{
    static char buf[2][512];
    static int which;
    which ^= 1;
    snprintf(buf[which], sizeof buf[which], "%s/%s", dir, name);
    return buf[which];
}

/* Reads a whole file; returns NULL if it does not exist. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    assert_non_null(buf);
    *len = n;
    return buf;
}

/* Checks that a whole file equals expect. */
static void assert_file(const char *path, const char *expect)
{
    size_t len;
    char *buf = slurp(path, &len);
    assert_non_null(buf);
    if (len != strlen(expect) || memcmp(buf, expect, len) != 0)
        fail_msg("%s holds '%.*s', expected '%s'", path, (int)len, buf, expect);
    free(buf);
}

/*
 * Checks that buf holds exactly the lines line_fmt(first), …,
 * line_fmt(first + count - 1), each whole and ending in '\n'.
 */
static void assert_numbered(const char *buf, size_t len, unsigned first, unsigned count, bool fixed)
{
    char want[128];
    size_t off = 0;
    for (unsigned i = first; i < first + count; i++) {
        size_t n = line_fmt(want, i, fixed);
        want[n++] = '\n';
        if (len - off < n || memcmp(buf + off, want, n) != 0)
            fail_msg("line %u missing or torn at byte %zu: '%.*s'", i, off,
                     (int)(len - off < n ? len - off : n), buf + off);
        off += n;
    }
    if (off != len)
        fail_msg("%zu unexpected bytes after line %u", len - off, first + count - 1);
}

/* Counts the '\n' in a file (0 if it does not exist). */
static unsigned count_lines(const char *path)
{
    size_t len;
    char *buf = slurp(path, &len);
    unsigned n = 0;
    for (size_t i = 0; buf && i < len; i++)
        n += buf[i] == '\n';
    free(buf);
    return n;
}

static logs *new_logs(uv_loop_t *loop, const char *dir, uint64_t max_bytes, unsigned keep,
                      size_t ring_bytes, bool echo)
{
    char err[256] = "";
    logs_config cfg = {.dir = dir, .max_bytes = max_bytes, .keep = keep,
                       .ring_bytes = ring_bytes, .echo = echo};
    assert_int_equal(uv_loop_init(loop), 0);
    logs *lg = logs_new(loop, &cfg, err, sizeof err);
    if (!lg)
        fail_msg("logs_new: %s", err);
    return lg;
}

static logs_stream *get_stream(logs *lg, const char *app, int id)
{
    char err[256] = "";
    logs_stream *st = logs_stream_get(lg, app, id, err, sizeof err);
    if (!st)
        fail_msg("logs_stream_get: %s", err);
    return st;
}

/* Collects tail lines into a fixed table. */
typedef struct {
    unsigned n;
    size_t   bytes;
    char     text[2000][96];
    logs_fd  stream[2000];
    double   ts[2000];
} tail_buf;

static void tail_collect(void *ctx, const logs_line *line)
{
    tail_buf *t = ctx;
    if (t->n < 2000) {
        snprintf(t->text[t->n], sizeof t->text[0], "%.*s", (int)line->len, line->text);
        t->stream[t->n] = line->stream;
        t->ts[t->n] = line->ts;
    }
    t->n++;
    t->bytes += line->len;
}

/* ---- tests -------------------------------------------------------------- */

/* 100 000 lines from a writer in mode "num" or "numw": all in the file, in
 * order, whole; prints the throughput. */
static void burst(const char *dir, const char *mode)
{
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 1ull << 30, 0, 0, false);
    logs_stream *st = get_stream(lg, "burst", 0);
    int o, e;
    uint64_t t0 = uv_hrtime();
    pid_t pid = spawn_writer(mode, "100000", NULL, &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    assert_true(logs_stream_open(st));
    assert_true(run_until_closed(&loop, st, 15000));
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    reap_ok(pid);
    print_message("[   INFO   ] 100000 lines (%s) in %.3f s: %.0f lines/s, exec included\n",
                  mode, secs, 100000 / secs);

    size_t len;
    char *buf = slurp(pathof(dir, "burst-0.out.log"), &len);
    assert_non_null(buf);
    assert_numbered(buf, len, 0, 100000, false);
    free(buf);
    assert_file(pathof(dir, "burst-0.err.log"), "");

    tail_buf *t = calloc(1, sizeof *t);
    assert_int_equal(logs_stream_tail(st, 1, tail_collect, t), 1);
    char want[128];
    want[line_fmt(want, 99999, false)] = '\0';
    assert_string_equal(t->text[0], want);
    free(t);
    finish(&loop, lg);
}

/* Written in chunks of random sizes, so lines straddle every boundary. */
static void test_burst_100k(void **state)
{
    burst(*state, "num");
}

/* One write() per line: many small reads. */
static void test_burst_100k_per_line(void **state)
{
    burst(*state, "numw");
}

/* stdout lines go to .out.log, stderr lines to .err.log; the ring has both, tagged. */
static void test_stdout_stderr(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 0, false);
    logs_stream *st = get_stream(lg, "web", 3);
    double t0 = (double)time(NULL) - 1;
    pid_t pid = attach_sh(st, "echo out1; echo err1 >&2; echo out2; printf err2 >&2");
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);
    assert_file(pathof(dir, "web-3.out.log"), "out1\nout2\n");
    assert_file(pathof(dir, "web-3.err.log"), "err1\nerr2\n");

    tail_buf *t = calloc(1, sizeof *t);
    assert_int_equal(logs_stream_tail(st, 100, tail_collect, t), 4);
    unsigned outs = 0, errs = 0;
    for (unsigned i = 0; i < 4; i++) {
        bool is_err = t->text[i][0] == 'e';
        assert_int_equal(t->stream[i], is_err ? LOGS_ERR : LOGS_OUT);
        assert_string_equal(t->text[i] + 3, is_err ? (errs++ ? "2" : "1") : (outs++ ? "2" : "1"));
        assert_true(t->ts[i] >= t0 && t->ts[i] <= (double)time(NULL) + 1);
    }
    free(t);
    struct stat sb;
    assert_int_equal(stat(pathof(dir, "web-3.out.log"), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0640);
    finish(&loop, lg);
}

/* A last line without newline is kept (with one added) when the process exits. */
static void test_partial_last_line(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 0, false);
    logs_stream *st = get_stream(lg, "p", 0);
    pid_t pid = attach_sh(st, "printf 'a\\nb\\nno newline'");
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);
    assert_file(pathof(dir, "p-0.out.log"), "a\nb\nno newline\n");
    finish(&loop, lg);
}

/* A restarted slot, and a new hub, append to the same files. */
static void test_restart_appends(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 0, false);
    logs_stream *st = get_stream(lg, "r", 1);
    pid_t pid = attach_sh(st, "echo gen1; echo e1 >&2");
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);
    assert_ptr_equal(get_stream(lg, "r", 1), st);
    pid = attach_sh(st, "echo gen2; echo e2 >&2");
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);
    finish(&loop, lg);

    lg = new_logs(&loop, dir, 0, 0, 0, false);
    st = get_stream(lg, "r", 1);
    pid = attach_sh(st, "echo gen3");
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);
    finish(&loop, lg);
    assert_file(pathof(dir, "r-1.out.log"), "gen1\ngen2\ngen3\n");
    assert_file(pathof(dir, "r-1.err.log"), "e1\ne2\n");
}

/* Reads NAME.keep … NAME.1, NAME in order and checks they hold consecutive
 * fixed lines ending at last; returns how many lines they hold. */
static unsigned check_rotated(const char *dir, unsigned keep, uint64_t max_bytes, unsigned last)
{
    char name[64];
    size_t total = 0, cap = 1 << 20;
    char *all = malloc(cap);
    for (unsigned i = keep + 1; i-- > 0;) {
        if (i)
            snprintf(name, sizeof name, "rot-0.out.log.%u", i);
        else
            snprintf(name, sizeof name, "rot-0.out.log");
        size_t len;
        char *buf = slurp(pathof(dir, name), &len);
        if (!buf)
            continue;
        assert_true(len <= max_bytes);
        assert_true(total + len <= cap);
        memcpy(all + total, buf, len);
        total += len;
        free(buf);
    }
    unsigned lines = (unsigned)(total / 32);
    assert_int_equal(total % 32, 0);
    assert_numbered(all, total, last + 1 - lines, lines, true);
    free(all);
    return lines;
}

/* Rotation at max_bytes keeps NAME.1 … NAME.keep and no more, with no line
 * lost or split at a boundary. */
static void test_rotation(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    /* 32-byte lines, 128 per file of 4096 bytes. */
    logs *lg = new_logs(&loop, dir, 4096, 3, 0, false);
    logs_stream *st = get_stream(lg, "rot", 0);
    int o, e;
    pid_t pid = spawn_writer("fixed", "400", "0", &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);
    /* 400 lines: .3, .2, .1 full (384 lines), 16 in NAME; every line kept. */
    assert_int_equal(count_lines(pathof(dir, "rot-0.out.log.3")), 128);
    assert_int_equal(count_lines(pathof(dir, "rot-0.out.log")), 16);
    assert_int_equal(check_rotated(dir, 3, 4096, 399), 400);

    pid = spawn_writer("fixed", "1000", "400", &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);
    finish(&loop, lg);
    /* 1400 lines = 10 full files + 120: the newest 3 full files and NAME remain. */
    assert_int_equal(access(pathof(dir, "rot-0.out.log.4"), F_OK), -1);
    assert_int_equal(count_lines(pathof(dir, "rot-0.out.log")), 120);
    assert_int_equal(check_rotated(dir, 3, 4096, 1399), 3 * 128 + 120);
}

/* logs_reopen after the file was moved away (logrotate) starts a new file. */
static void test_reopen(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 0, false);
    logs_stream *st = get_stream(lg, "ro", 0);
    int o, e;
    pid_t pid = spawn_writer("num", "10", NULL, &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);

    char moved[512];
    snprintf(moved, sizeof moved, "%s", pathof(dir, "ro-0.out.log.moved"));
    assert_int_equal(rename(pathof(dir, "ro-0.out.log"), moved), 0);
    assert_int_equal(unlink(pathof(dir, "ro-0.err.log")), 0);
    logs_reopen(lg);
    assert_int_equal(access(pathof(dir, "ro-0.out.log"), F_OK), 0);
    assert_int_equal(access(pathof(dir, "ro-0.err.log"), F_OK), 0);

    /* Lines from here on: numbers 10..19 ("num" starts at argv[4]). */
    pid = spawn_writer("num", "10", "10", &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);
    finish(&loop, lg);

    size_t len;
    char *buf = slurp(moved, &len);
    assert_numbered(buf, len, 0, 10, false);
    free(buf);
    buf = slurp(pathof(dir, "ro-0.out.log"), &len);
    assert_numbered(buf, len, 10, 10, false);
    free(buf);
}

/* The ring returns the last n lines oldest first and holds at most ring_bytes. */
static void test_ring_tail(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 4096, false);
    logs_stream *st = get_stream(lg, "ring", 0);
    tail_buf *t = calloc(1, sizeof *t);
    assert_int_equal(logs_stream_tail(st, 10, tail_collect, t), 0);

    int o, e;
    pid_t pid = spawn_writer("num", "1000", NULL, &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);

    char want[128];
    assert_int_equal(logs_stream_tail(st, 10, tail_collect, t), 10);
    for (unsigned i = 0; i < 10; i++) {
        want[line_fmt(want, 990 + i, false)] = '\0';
        assert_string_equal(t->text[i], want);
        assert_int_equal(t->stream[i], LOGS_OUT);
    }
    memset(t, 0, sizeof *t);
    assert_int_equal(logs_stream_tail(st, 0, tail_collect, t), 0);
    size_t all = logs_stream_tail(st, SIZE_MAX, tail_collect, t);
    assert_int_equal(all, t->n);
    /* Bounded: the text alone fits in ring_bytes, so far fewer than 1000 lines;
     * but the ring is used, not nearly empty (records are 16 + ≤ 72 bytes). */
    assert_true(t->bytes <= 4096);
    assert_true(all >= 4096 / 88 && all < 1000);
    for (unsigned i = 0; i < all; i++) {
        want[line_fmt(want, 1000 - (unsigned)all + i, false)] = '\0';
        assert_string_equal(t->text[i], want);
    }
    free(t);
    finish(&loop, lg);
}

/* A line longer than LOGS_LINE_MAX is split into pieces, nothing dropped; a
 * line of exactly LOGS_LINE_MAX stays whole. */
static void test_long_line_split(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 0, false);
    logs_stream *st = get_stream(lg, "long", 0);
    int o, e;
    pid_t pid = spawn_writer("long", NULL, NULL, &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    assert_true(run_until_closed(&loop, st, 5000));
    reap_ok(pid);

    struct { char c; size_t len; } want[] = {
        {'x', LOGS_LINE_MAX}, {'x', LOGS_LINE_MAX}, {'x', 20000 - 2 * LOGS_LINE_MAX},
        {'y', LOGS_LINE_MAX}, {'s', 5}, {'z', LOGS_LINE_MAX}, {'z', 9000 - LOGS_LINE_MAX},
    };
    size_t len, off = 0;
    char *buf = slurp(pathof(dir, "long-0.out.log"), &len);
    assert_non_null(buf);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *nl = memchr(buf + off, '\n', len - off);
        assert_non_null(nl);
        assert_int_equal((size_t)(nl - (buf + off)), want[i].len);
        if (want[i].c == 's')
            assert_memory_equal(buf + off, "short", 5);
        else
            for (size_t k = 0; k < want[i].len; k++)
                assert_int_equal(buf[off + k], want[i].c);
        off += want[i].len + 1;
    }
    assert_int_equal(off, len);
    free(buf);
    finish(&loop, lg);
}

/* ---- echo with a slow reader ------------------------------------------- */

typedef struct {
    int    fd;
    char  *buf;
    size_t len, cap;
    size_t limit;   /* closes fd and stops after this many bytes */
} slow_reader;

/* Reads 4 KiB at a time with a pause in between, until EOF or limit. */
static void *slow_read(void *arg)
{
    slow_reader *r = arg;
    for (;;) {
        if (r->len >= r->limit) {
            close(r->fd);
            r->fd = -1;
            break;
        }
        if (r->cap - r->len < 4096)
            r->buf = realloc(r->buf, r->cap *= 2);
        ssize_t n = read(r->fd, r->buf + r->len, 4096);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        r->len += (size_t)n;
        usleep(1000);
    }
    return NULL;
}

typedef struct {
    uint64_t last, max_gap;
    unsigned ticks;
    int      hubfd;   /* >= 0: also print a line there per tick, as hub events do */
} tick_stats;

static void tick_measure(uv_timer_t *t)
{
    tick_stats *s = t->data;
    uint64_t now = uv_hrtime();
    if (s->last && now - s->last > s->max_gap)
        s->max_gap = now - s->last;
    s->last = now;
    if (s->hubfd >= 0) {
        char line[64];
        int n = snprintf(line, sizeof line, "drover: tick %u\n", s->ticks);
        assert_true(write_all(s->hubfd, line, (size_t)n));
    }
    s->ticks++;
}

/* Checks that the lines of buf not from the echo are whole "drover: tick N"
 * lines, N counting up; returns how many there were. */
static unsigned assert_hub_lines(const char *buf, size_t len)
{
    unsigned n = 0;
    size_t off = 0;
    while (off < len) {
        const char *nl = memchr(buf + off, '\n', len - off);
        assert_non_null(nl);
        size_t l = (size_t)(nl - (buf + off));
        if (l < 6 || memcmp(buf + off, "[echo:", 6) != 0) {
            char want[64];
            int k = snprintf(want, sizeof want, "drover: tick %u", n++);
            if ((size_t)k != l || memcmp(buf + off, want, l) != 0)
                fail_msg("torn line on stderr: '%.*s'", (int)l, buf + off);
        }
        off += l + 1;
    }
    return n;
}

/* Extracts the lines of buf that start with prefix (prefix removed) into out. */
static size_t filter_prefix(const char *buf, size_t len, const char *prefix, char *out)
{
    size_t plen = strlen(prefix), n = 0, off = 0;
    while (off < len) {
        const char *nl = memchr(buf + off, '\n', len - off);
        assert_non_null(nl);
        size_t l = (size_t)(nl - (buf + off)) + 1;
        if (l > plen && memcmp(buf + off, prefix, plen) == 0) {
            memcpy(out + n, buf + off + plen, l - plen);
            n += l - plen;
        }
        off += l;
    }
    return n;
}

/* Checks that buf holds, in order, the lines of the "both" writer of stream fd. */
static void assert_both(const char *buf, size_t len, unsigned total, bool err)
{
    char want[128];
    size_t off = 0;
    for (unsigned i = 0; i < total; i++) {
        if ((i % 3 == 0) != err)
            continue;
        size_t n = line_fmt(want, i, false);
        want[n++] = '\n';
        if (len - off < n || memcmp(buf + off, want, n) != 0)
            fail_msg("%s line %u missing or torn at byte %zu", err ? "stderr" : "stdout", i, off);
        off += n;
    }
    assert_int_equal(off, len);
}

typedef enum { ECHO_PIPE, ECHO_SOCKET, ECHO_FILE, ECHO_GONE } echo_kind;

/*
 * Runs the "both" writer for total lines with echo on and fd 2 pointing, while
 * logs_new sets the echo up, at: a pipe read slowly (ECHO_PIPE), a stream
 * socket read slowly (ECHO_SOCKET, as journald's), a regular file
 * (ECHO_FILE), or a pipe whose reader goes away after ~100 KB (ECHO_GONE).
 * Checks that the files are complete, that the echo holds every line of each
 * stream in order (all of it but ECHO_GONE), and that the loop kept running.
 */
static void echo_run(const char *dir, echo_kind kind, unsigned total)
{
    int ep[2];
    if (kind == ECHO_SOCKET)
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ep), 0);
    else if (kind == ECHO_FILE)
        ep[0] = ep[1] = open(pathof(dir, "stderr.txt"), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    else
        assert_int_equal(pipe2(ep, O_CLOEXEC), 0);
    assert_true(ep[1] >= 0);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(ep[1], 2) == 2);
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 0, true);
    /* The echo holds its own descriptor for fd 2: fd 2 goes back now. */
    assert_true(dup2(saved, 2) == 2);
    close(saved);

    slow_reader rd = {.fd = ep[0], .cap = 1 << 20, .limit = kind == ECHO_GONE ? 100000 : SIZE_MAX};
    rd.buf = malloc(rd.cap);
    pthread_t th;
    /* With a pipe, the timer also writes lines of its own to it, as the
     * hub prints its events to fd 2: none may tear an echoed line. */
    tick_stats ts = {.hubfd = kind == ECHO_PIPE ? ep[1] : -1};
    if (kind != ECHO_FILE) {
        if (kind != ECHO_PIPE)
            close(ep[1]);
        assert_int_equal(pthread_create(&th, NULL, slow_read, &rd), 0);
    }

    logs_stream *st = get_stream(lg, "echo", 0);
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    timer.data = &ts;
    uv_timer_start(&timer, tick_measure, 5, 5);

    int o, e;
    char num[16];
    snprintf(num, sizeof num, "%u", total);
    uint64_t t0 = uv_hrtime();
    pid_t pid = spawn_writer("both", num, NULL, &o, &e);
    assert_int_equal(logs_stream_attach(st, o, e), 0);
    assert_true(run_until_closed(&loop, st, 15000));
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    reap_ok(pid);
    uv_close((uv_handle_t *)&timer, NULL);
    if (ts.hubfd >= 0)
        close(ts.hubfd);
    finish(&loop, lg);   /* flushes what the echo still holds, then closes it */
    if (kind != ECHO_FILE) {
        pthread_join(th, NULL);
        if (rd.fd >= 0)   /* ECHO_GONE's reader closed it already */
            close(rd.fd);
    } else {
        close(ep[0]);
        free(rd.buf);
        rd.buf = slurp(pathof(dir, "stderr.txt"), &rd.len);
    }
    print_message("[   INFO   ] echo to %s: %zu bytes in %.3f s, %u ticks, max tick gap %.1f ms\n",
                  (const char *[]){"pipe", "socket", "file", "pipe closed early"}[kind],
                  rd.len, secs, ts.ticks, (double)ts.max_gap / 1e6);
    if (kind == ECHO_PIPE || kind == ECHO_SOCKET) {
        /* The reader takes >= 1 ms per 4 KiB, so the ~50 bytes per line of
         * echo kept the queue full most of the time: the writer was slowed
         * down, and the loop stayed responsive all along. */
        assert_true(secs > (double)total * 50 / 4096 / 1000 / 2);
        assert_true(ts.ticks >= (unsigned)(secs * 1000 / 5 / 4));
        assert_true(ts.max_gap < 250000000u);
    }
    if (kind == ECHO_PIPE)
        assert_int_equal(assert_hub_lines(rd.buf, rd.len), ts.ticks);
    if (kind != ECHO_GONE) {
        char *sel = malloc(rd.len + 1);
        size_t n = filter_prefix(rd.buf, rd.len, "[echo:0] ", sel);
        assert_both(sel, n, total, false);
        n = filter_prefix(rd.buf, rd.len, "[echo:0!] ", sel);
        assert_both(sel, n, total, true);
        free(sel);
    }
    free(rd.buf);

    size_t len;
    char *buf = slurp(pathof(dir, "echo-0.out.log"), &len);
    assert_both(buf, len, total, false);
    free(buf);
    buf = slurp(pathof(dir, "echo-0.err.log"), &len);
    assert_both(buf, len, total, true);
    free(buf);
}

/* fd 2 on a pipe read slowly: no line lost, the loop never blocks. */
static void test_echo_backpressure(void **state)
{
    echo_run(*state, ECHO_PIPE, 30000);
}

/* The same with fd 2 on a stream socket (journald). */
static void test_echo_socket(void **state)
{
    echo_run(*state, ECHO_SOCKET, 30000);
}

/* fd 2 on a regular file: written synchronously, everything there. */
static void test_echo_file(void **state)
{
    echo_run(*state, ECHO_FILE, 30000);
}

/* The reader of fd 2 goes away (EPIPE): the echo stops, the workers are not
 * left blocked, the files still get every line. */
static void test_echo_reader_gone(void **state)
{
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);   /* as the hub does */
    echo_run(*state, ECHO_GONE, 30000);
    signal(SIGPIPE, old);
}

/* logs_free writes a pending partial line (newline added) and closes pipes
 * that are still open. */
static void test_free_flushes_partial(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 0, false);
    logs_stream *st = get_stream(lg, "f", 0);
    pid_t pid = attach_sh(st, "printf 'whole\\npartial'; exec sleep 10");
    run_for(&loop, 300);
    assert_true(logs_stream_open(st));
    /* Written but not yet read when logs_free comes: kept too. */
    int late[2];
    assert_int_equal(pipe2(late, O_CLOEXEC), 0);
    assert_int_equal(write(late[1], "unread\nunread partial", 21), 21);
    assert_int_equal(logs_stream_attach(st, -1, late[0]), 0);
    finish(&loop, lg);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(late[1]);
    assert_file(pathof(dir, "f-0.out.log"), "whole\npartial\n");
    assert_file(pathof(dir, "f-0.err.log"), "unread\nunread partial\n");
}

/* Old generations whose pipes stay open (a grandchild kept stdout) are
 * closed, partial line kept, once a slot would have more than 8 pipes. */
static void test_pipes_bounded(void **state)
{
    const char *dir = *state;
    uv_loop_t loop;
    logs *lg = new_logs(&loop, dir, 0, 0, 0, false);
    logs_stream *st = get_stream(lg, "b", 0);
    int w[8][2];
    for (int g = 0; g < 8; g++) {
        int p[2], q[2] = {-1, -1};
        char msg[32];
        assert_int_equal(pipe2(p, O_CLOEXEC), 0);
        if (g >= 4)   /* gen0-3: stdout only; gen4-7: stdout and stderr */
            assert_int_equal(pipe2(q, O_CLOEXEC), 0);
        int n = snprintf(msg, sizeof msg, "gen%d", g);
        assert_int_equal(write(p[1], msg, (size_t)n), n);
        assert_int_equal(logs_stream_attach(st, p[0], q[0]), 0);
        w[g][0] = p[1];
        w[g][1] = q[1];
        run_for(&loop, 20);
        if (g == 5)   /* 4 + 2 + 2 = 8 pipes: all still open, no line complete */
            assert_file(pathof(dir, "b-0.out.log"), "");
    }
    /* gen6 closed gen0 and gen1 to make room, gen7 closed gen2 and gen3. */
    assert_file(pathof(dir, "b-0.out.log"), "gen0\ngen1\ngen2\ngen3\n");
    assert_true(logs_stream_open(st));
    for (int g = 0; g < 8; g++)
        for (int i = 0; i < 2; i++)
            if (w[g][i] >= 0)
                close(w[g][i]);
    assert_true(run_until_closed(&loop, st, 5000));
    finish(&loop, lg);
    /* The rest arrive at EOF, in whichever order the pipes close. */
    size_t len;
    char *buf = slurp(pathof(dir, "b-0.out.log"), &len);
    assert_int_equal(len, 8 * 5);
    assert_memory_equal(buf, "gen0\ngen1\ngen2\ngen3\n", 20);
    for (int g = 4; g < 8; g++) {
        char want[] = "genN\n";
        want[3] = (char)('0' + g);
        assert_non_null(memmem(buf + 20, len - 20, want, 5));
    }
    free(buf);
}

/* Bad configuration and names fail with a message, not a crash. */
static void test_errors(void **state)
{
    const char *dir = *state;
    char err[256] = "";
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    logs_config cfg = {.dir = NULL};
    assert_null(logs_new(&loop, &cfg, err, sizeof err));
    assert_true(strlen(err) > 0);
    cfg.dir = "/proc/drover-cannot-create";
    err[0] = '\0';
    assert_null(logs_new(&loop, &cfg, err, sizeof err));
    assert_non_null(strstr(err, "/proc/drover-cannot-create"));
    assert_int_equal(uv_loop_close(&loop), 0);

    /* Missing parents are created. */
    logs *lg = new_logs(&loop, pathof(dir, "a/b/c"), 0, 0, 0, false);
    err[0] = '\0';
    assert_null(logs_stream_get(lg, "../x", 0, err, sizeof err));
    assert_true(strlen(err) > 0);
    assert_null(logs_stream_get(lg, "a/b", 0, err, sizeof err));
    assert_null(logs_stream_get(lg, "", 0, err, sizeof err));
    assert_non_null(get_stream(lg, "ok", 0));
    /* A directory where a file should be: a clear error, and nothing else
     * (such as fd 0) closed on the way out. */
    assert_int_equal(mkdir(pathof(dir, "a/b/c/bad-0.out.log"), 0700), 0);
    err[0] = '\0';
    assert_null(logs_stream_get(lg, "bad", 0, err, sizeof err));
    assert_non_null(strstr(err, "bad-0.out.log"));
    assert_true(fcntl(0, F_GETFD) != -1);
    assert_int_equal(access(pathof(dir, "a/b/c/ok-0.err.log"), F_OK), 0);
    finish(&loop, lg);
}

/* Checks that logs_line_utf8 turns in (inlen bytes) into want (wantlen bytes). */
static void check_utf8(const char *in, size_t inlen, const char *want, size_t wantlen)
{
    char out[64];
    size_t n = logs_line_utf8(in, inlen, out, sizeof out);
    assert_int_equal(n, wantlen);
    assert_memory_equal(out, want, wantlen);
}

/* Invalid UTF-8 in a line becomes U+FFFD byte by byte (a line that jansson
 * would refuse vanished from every view); valid text, NUL included, stays. */
static void test_utf8_for_views(void **state)
{
    (void)state;
#define U(lit) lit, sizeof lit - 1
#define R "\xef\xbf\xbd"
    check_utf8(U("plain ascii"), U("plain ascii"));
    check_utf8(U("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), U("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
    check_utf8(U("a\0b"), U("a\0b"));
    check_utf8(U("latin1 caf\xe9!"), U("latin1 caf" R "!"));          /* ISO-8859-1 byte */
    check_utf8(U("\x80\xbf"), U(R R));                                /* stray continuations */
    check_utf8(U("\xc0\xaf"), U(R R));                                /* overlong '/' */
    check_utf8(U("\xe0\x80\xaf"), U(R R R));                          /* overlong, 3 bytes */
    check_utf8(U("\xed\xa0\x80"), U(R R R));                          /* surrogate U+D800 */
    check_utf8(U("\xf4\x90\x80\x80"), U(R R R R));                    /* above U+10FFFF */
    check_utf8(U("\xf5\xff\xfe"), U(R R R));
    check_utf8(U("cut \xe2\x82"), U("cut " R R));                     /* truncated at the end */
    check_utf8(U("\xe2\x82x"), U(R R "x"));                           /* truncated in the middle */
    check_utf8(U("\xf0\x9f\x98"), U(R R R));
    check_utf8(U("\xef\xbf\xbd"), U(R));                              /* U+FFFD itself is valid */
#undef R
#undef U

    /* Worst case: every byte invalid needs LOGS_UTF8_CAP(len); with less the
     * output stops at a whole character. */
    char in[LOGS_LINE_MAX], out[LOGS_UTF8_CAP(LOGS_LINE_MAX)];
    memset(in, 0xff, sizeof in);
    assert_int_equal(logs_line_utf8(in, sizeof in, out, sizeof out), sizeof out);
    assert_int_equal(logs_line_utf8(in, sizeof in, out, 7), 6);
    assert_int_equal(logs_line_utf8("\xe2\x82\xac", 3, out, 2), 0);
    assert_int_equal(logs_line_utf8("", 0, out, sizeof out), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "writer") == 0)
        return writer_main(argc, argv);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0)
        return 1;
    self_exe[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_burst_100k, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_burst_100k_per_line, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_stdout_stderr, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_partial_last_line, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_restart_appends, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_rotation, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_reopen, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_ring_tail, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_long_line_split, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_echo_backpressure, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_echo_socket, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_echo_file, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_echo_reader_gone, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_free_flushes_partial, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_pipes_bounded, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_errors, setup_dir, teardown_dir),
        cmocka_unit_test(test_utf8_for_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
