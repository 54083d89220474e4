/*
 * test_sshlink.c — the --host target parser (nothing ssh could read as an
 * option gets through), the ssh command line ($DROVER_SSH words, the
 * remote command, the socket dir quoted for the remote shell) and the
 * one-line reason an ssh child ended.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tui/sshlink.h"

static void test_parse_good(void **state)
{
    (void)state;
    static const struct { const char *spec, *dest; int port; } ok[] = {
        {"web1", "web1", 0},
        {"deploy@web2", "deploy@web2", 0},
        {"web3.example.com:2222", "web3.example.com", 2222},
        {"u_1@10.0.0.7:22", "u_1@10.0.0.7", 22},
        {"[::1]:2200", "::1", 2200},
        {"ops@[fe80::1]", "ops@fe80::1", 0},
        {"h:65535", "h", 65535},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        sshlink_target t;
        char err[300];
        assert_int_equal(sshlink_parse(ok[i].spec, &t, err, sizeof err), 0);
        assert_string_equal(t.dest, ok[i].dest);
        assert_string_equal(t.spec, ok[i].spec);
        assert_int_equal(t.port, ok[i].port);
    }
}

static void test_parse_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "", "-oProxyCommand=touch /tmp/x", "a@-b", "-u@h", "@h", "h:", "h:0", "h:65536", "h:22x", "h:-1",
        "us er@h", "h;id", "h$(id)", "[::1", "[]:22", "[::1]x", "h\n", "a@b@c",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sshlink_target t;
        char err[300];
        assert_int_equal(sshlink_parse(bad[i], &t, err, sizeof err), -1);
        assert_non_null(strstr(err, "use [USER@]HOST[:PORT]"));
    }
}

static void test_argv(void **state)
{
    (void)state;
    sshlink_target t;
    sshlink_cmdline cl;
    char err[300];
    assert_int_equal(sshlink_parse("ops@web:2222", &t, err, sizeof err), 0);
    setenv("DROVER_SSH", "ssh  -i /k\t-o X=y", 1);
    unsetenv("DROVER_REMOTE");
    assert_int_equal(sshlink_argv(&t, NULL, "api", "/run/it's here", &cl, err, sizeof err), 0);
    static const char *const want[] = {"ssh", "-i", "/k", "-o", "X=y", "-T", "-o", "BatchMode=yes", "-p", "2222",
                                       "--", "ops@web", NULL};
    size_t i = 0;
    for (; want[i]; i++)
        assert_string_equal(cl.argv[i], want[i]);
    /* the socket dir is one word for the remote shell, whatever it holds */
    assert_string_equal(cl.argv[i], "drover bridge -L api --socket-dir '/run/it'\\''s here'");
    assert_null(cl.argv[i + 1]);
    /* the remote command: the option, else $DROVER_REMOTE, else drover */
    setenv("DROVER_REMOTE", "/opt/drover/bin/drover", 1);
    assert_int_equal(sshlink_argv(&t, NULL, "default", NULL, &cl, err, sizeof err), 0);
    assert_string_equal(cl.argv[10], "--");
    assert_string_equal(cl.argv[12], "/opt/drover/bin/drover bridge -L default");
    assert_int_equal(sshlink_argv(&t, "sudo -n drover", "default", NULL, &cl, err, sizeof err), 0);
    assert_string_equal(cl.argv[12], "sudo -n drover bridge -L default");
    /* a namespace is a checked name; an empty DROVER_SSH is plain ssh */
    assert_int_equal(sshlink_argv(&t, NULL, "a;b", NULL, &cl, err, sizeof err), -1);
    setenv("DROVER_SSH", "", 1);
    assert_int_equal(sshlink_argv(&t, NULL, "x", NULL, &cl, err, sizeof err), 0);
    assert_string_equal(cl.argv[0], "ssh");
    setenv("DROVER_SSH", "   ", 1);
    assert_int_equal(sshlink_argv(&t, NULL, "x", NULL, &cl, err, sizeof err), -1);
    unsetenv("DROVER_SSH");
    unsetenv("DROVER_REMOTE");
}

static void test_why(void **state)
{
    (void)state;
    char err[600];
    const char *refused = "Warning: something\nssh: connect to host h port 22: Connection refused\r\n";
    sshlink_why(refused, strlen(refused), true, W_EXITCODE(255, 0), err, sizeof err);
    assert_string_equal(err, "unreachable: ssh: connect to host h port 22: Connection refused");
    const char *nohub = "drover: no hub is running here (/x/ctl.sock)\n";
    sshlink_why(nohub, strlen(nohub), true, W_EXITCODE(1, 0), err, sizeof err);
    assert_string_equal(err, "no hub is running here (/x/ctl.sock)");
    const char *nf = "bash: line 1: drover: command not found\n";
    sshlink_why(nf, strlen(nf), true, W_EXITCODE(127, 0), err, sizeof err);
    assert_non_null(strstr(err, "command not found (the remote command is set by --remote-cmd or DROVER_REMOTE)"));
    /* what another machine wrote cannot reach the terminal raw */
    const char *esc = "evil \x1b]0;title\x07 text\n";
    sshlink_why(esc, strlen(esc), true, W_EXITCODE(1, 0), err, sizeof err);
    assert_null(strchr(err, '\x1b'));
    assert_null(strchr(err, '\x07'));
    sshlink_why("", 0, true, W_EXITCODE(255, 0), err, sizeof err);
    assert_string_equal(err, "unreachable: ssh exited with status 255");
    sshlink_why("", 0, true, W_EXITCODE(0, SIGTERM), err, sizeof err);
    assert_string_equal(err, "ssh was killed by signal 15");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_argv),
        cmocka_unit_test(test_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
