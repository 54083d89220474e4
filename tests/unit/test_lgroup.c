/*
 * test_lgroup.c — --balance reuseport's pure parts: a slot socket's machine,
 * the mirror of the kernel's group array, the steering programs' shapes;
 * and, with real sockets on 127.0.0.1, that the group steers connections
 * away from a draining socket and round-robins (or hashes) over the rest.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "hub/lgroup.h"

static void test_lsock_table(void **st)
{
    (void)st;
    struct { lsock_state s; lsock_input in; lsock_state next; lsock_action act; } rows[] = {
        {LSOCK_OPEN,     LSOCK_IN_PARK,    LSOCK_PARKED,   LSOCK_DO_STEER},
        {LSOCK_OPEN,     LSOCK_IN_SERVE,   LSOCK_OPEN,     LSOCK_DO_NOTHING},
        {LSOCK_PARKED,   LSOCK_IN_SERVE,   LSOCK_OPEN,     LSOCK_DO_STEER},
        {LSOCK_PARKED,   LSOCK_IN_PARK,    LSOCK_PARKED,   LSOCK_DO_NOTHING},
        {LSOCK_OPEN,     LSOCK_IN_DRAIN,   LSOCK_DRAINING, LSOCK_DO_DRAIN},
        {LSOCK_PARKED,   LSOCK_IN_DRAIN,   LSOCK_DRAINING, LSOCK_DO_DRAIN},
        /* a restart during a drain keeps the socket out of rotation */
        {LSOCK_DRAINING, LSOCK_IN_SERVE,   LSOCK_DRAINING, LSOCK_DO_NOTHING},
        {LSOCK_DRAINING, LSOCK_IN_PARK,    LSOCK_DRAINING, LSOCK_DO_NOTHING},
        {LSOCK_DRAINING, LSOCK_IN_DRAINED, LSOCK_DRAINED,  LSOCK_DO_REPORT},
        {LSOCK_DRAINED,  LSOCK_IN_SERVE,   LSOCK_DRAINED,  LSOCK_DO_NOTHING},
        {LSOCK_DRAINED,  LSOCK_IN_DRAIN,   LSOCK_DRAINED,  LSOCK_DO_NOTHING},
        {LSOCK_OPEN,     LSOCK_IN_CLOSE,   LSOCK_CLOSED,   LSOCK_DO_CLOSE},
        {LSOCK_DRAINING, LSOCK_IN_CLOSE,   LSOCK_CLOSED,   LSOCK_DO_CLOSE},
        {LSOCK_DRAINED,  LSOCK_IN_CLOSE,   LSOCK_CLOSED,   LSOCK_DO_CLOSE},
        {LSOCK_CLOSED,   LSOCK_IN_CLOSE,   LSOCK_CLOSED,   LSOCK_DO_NOTHING},
        {LSOCK_CLOSED,   LSOCK_IN_SERVE,   LSOCK_CLOSED,   LSOCK_DO_NOTHING},
        {LSOCK_OPEN,     LSOCK_IN_DRAINED, LSOCK_OPEN,     LSOCK_DO_NOTHING},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        lsock_decision d = lsock_next(rows[i].s, rows[i].in);
        assert_int_equal(d.next, rows[i].next);
        assert_int_equal(d.act, rows[i].act);
    }
    assert_string_equal(lsock_name(LSOCK_DRAINING), "draining");
}

static void test_order_mirrors_the_kernel(void **st)
{
    (void)st;
    int order[5] = {10, 11, 12, 13, 14};
    size_t n = 5;
    lgroup_order_remove(order, &n, 11);           /* the last takes its place */
    assert_int_equal(n, 4);
    int want1[] = {10, 14, 12, 13};
    assert_memory_equal(order, want1, sizeof want1);
    lgroup_order_remove(order, &n, 13);           /* the last itself */
    assert_int_equal(n, 3);
    lgroup_order_remove(order, &n, 99);           /* absent: no change */
    assert_int_equal(n, 3);
    int want2[] = {10, 14, 12};
    assert_memory_equal(order, want2, sizeof want2);
}

static void test_programs(void **st)
{
    (void)st;
    struct sock_filter code[64];
    unsigned keep[3] = {0, 2, 3};
    assert_int_equal(lgroup_prog(keep, 0, code, 64), 0);
    size_t n = lgroup_prog(keep, 3, code, 64);
    assert_true(n > 0);
    /* ends with the last index returned; the two before it choose the others */
    assert_int_equal(code[n - 1].code, BPF_RET | BPF_K);
    assert_int_equal(code[n - 1].k, 3);
    assert_int_equal(code[n - 2].k, 2);
    assert_int_equal(lgroup_prog(keep, 3, code, 5), 0);   /* does not fit */
    struct bpf_insn rr[32];
    assert_int_equal(lgroup_rr_prog(3, 4, 0, rr, 32), 0);
    n = lgroup_rr_prog(3, 4, 5, rr, 32);
    assert_true(n > 0);
    assert_int_equal(rr[n - 1].code, BPF_JMP | BPF_EXIT);
}

/* Which of fds (listening) has a connection waiting; -1 if none within 1 s. */
static int which_accepts(const int *fds, int n)
{
    struct pollfd p[16];
    for (int i = 0; i < n; i++)
        p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    if (poll(p, (nfds_t)n, 1000) <= 0)
        return -1;
    for (int i = 0; i < n; i++)
        if (p[i].revents & POLLIN) {
            int c = accept(fds[i], NULL, NULL);
            if (c >= 0)
                close(c);
            return i;
        }
    return -1;
}

static int drained_calls;
static void on_drained(void *ctx, int member, unsigned left)
{
    (void)ctx;
    (void)member;
    (void)left;
    drained_calls++;
}

static void test_group_steers_away_from_a_draining_socket(void **st)
{
    (void)st;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    lgroup *g = lgroup_open(&loop, "127.0.0.1:0", err, sizeof err);
    assert_non_null(g);
    int m[3], fds[3];
    for (int i = 0; i < 3; i++) {
        m[i] = lgroup_add(g, err, sizeof err);
        assert_true(m[i] >= 0);
        fds[i] = lgroup_fd(g, m[i]);
    }
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(fds[0], (struct sockaddr *)&sa, &sl), 0);
    assert_int_equal(lgroup_drain(g, m[1], 1000, on_drained, NULL), 0);
    assert_int_equal(lgroup_state(g, m[1]), LSOCK_DRAINING);
    assert_int_equal(lgroup_drain(g, m[1], 1000, on_drained, NULL), -1);   /* once */
    int got[3] = {0};
    for (int i = 0; i < 60; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        assert_int_equal(connect(c, (struct sockaddr *)&sa, sl), 0);
        int k = which_accepts(fds, 3);
        assert_true(k >= 0);
        got[k]++;
        close(c);
    }
    assert_int_equal(got[1], 0);            /* none to the draining socket */
    assert_true(got[0] > 10 && got[2] > 10);
    /* its queue is empty: drained after the settle time */
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(drained_calls, 1);
    assert_int_equal(lgroup_state(g, m[1]), LSOCK_DRAINED);
    lgroup_close(g, m[1]);
    assert_int_equal(lgroup_fd(g, m[1]), -1);
    /* parked then served again */
    lgroup_serve(g, m[0], false);
    assert_int_equal(lgroup_state(g, m[0]), LSOCK_PARKED);
    lgroup_serve(g, m[0], true);
    assert_int_equal(lgroup_state(g, m[0]), LSOCK_OPEN);
    lgroup_free(g);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* An upgrade's groups: lgroup_open of the spec takes the one handed over (once); the end frees the rest. */
static void test_hand_over(void **st)
{
    (void)st;
    uv_loop_t loop;
    uv_loop_init(&loop);
    char err[256];
    lgroup *a = lgroup_open(&loop, "127.0.0.1:0", err, sizeof err);
    lgroup *b = lgroup_open(&loop, "127.0.0.1:0", err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_true(lgroup_add(a, err, sizeof err) >= 0);
    assert_true(lgroup_add(b, err, sizeof err) >= 0);
    assert_int_equal(lgroup_hand_over("127.0.0.1:7001", a), 0);
    assert_int_equal(lgroup_hand_over("127.0.0.1:0", b), 0);
    assert_ptr_equal(lgroup_open(&loop, "127.0.0.1:7001", err, sizeof err), a);
    assert_int_equal(lgroup_state(a, 0), LSOCK_OPEN);   /* as it was */
    lgroup_hand_over_end();                             /* b: no app took it, freed */
    lgroup *c = lgroup_open(&loop, "127.0.0.1:0", err, sizeof err);
    assert_non_null(c);
    assert_int_equal(lgroup_fd(c, 0), -1);              /* a new group, not b with its member */
    lgroup_free(c);
    lgroup_free(a);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsock_table),
        cmocka_unit_test(test_order_mirrors_the_kernel),
        cmocka_unit_test(test_programs),
        cmocka_unit_test(test_group_steers_away_from_a_draining_socket),
        cmocka_unit_test(test_hand_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
