/*
 * test_config.c — the config file: every key parsed, defaults, the env
 * order, command quoting, durations and sizes, and each kind of bad file
 * refused with its FILE:LINE.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hub/config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[] = "/tmp/drover-test-config-XXXXXX";

/* Writes text to DIR/name; returns its path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text as a file; expects it refused with an error containing want (and ":LINE:"). */
static void expect_error(const char *text, int line, const char *want)
{
    config cfg;
    char err[1024], tag[32];
    const char *p = write_file("bad.conf", text);
    assert_int_equal(config_load(p, &cfg, err, sizeof err), -1);
    if (line > 0) {
        snprintf(tag, sizeof tag, "bad.conf:%d: ", line);
        if (!strstr(err, tag))
            fail_msg("'%s' does not name line %d", err, line);
    }
    if (!strstr(err, want))
        fail_msg("'%s' does not say '%s'", err, want);
    assert_int_equal(cfg.napps, 0);
}

static void test_config_full_file(void **unused)
{
    (void)unused;
    write_file("app.env", "# comment\nexport A=from_file\nB='quoted value'\nC=\"dq\"\n");
    const char *p = write_file("full.conf",
        "; a comment\n"
        "[hub]\n"
        "namespace = prod\n"
        "interval = 500ms\n"
        "log_format = json\n"
        "log_timestamps = yes\n"
        "log_max_size = 1M\n"
        "log_keep = 5\n"
        "\n"
        "[app web]\n"
        "command = /bin/sh -c 'echo \"hi there\"' x\\ y\n"
        "instances = 3\n"
        "listen = 127.0.0.1:0\n"
        "env = A=from_line\n"
        "env = D=d\n"
        "env_file = app.env\n"
        "kill_timeout = 2s\n"
        "ready_timeout = 1m\n"
        "ready = notify\n"
        "max_memory = 200M\n"
        "restart = on-failure\n"
        "stop_signal = SIGINT\n"
        "inherit_env = false\n"
        "\n"
        "[app worker]\n"
        "command = sleep 1000\n"
        "log_format = text\n"
        "log_keep = 2\n");
    config cfg;
    char err[1024];
    if (config_load(p, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_string_equal(cfg.ns, "prod");
    assert_int_equal(cfg.interval_ms, 500);
    assert_int_equal(cfg.log_format, CONFIG_LOG_JSON);
    assert_true(cfg.log_timestamps);
    assert_int_equal(cfg.log_max_size, 1 << 20);
    assert_int_equal(cfg.log_keep, 5);
    assert_int_equal(cfg.napps, 2);
    const config_app *w = config_find(&cfg, "web");
    assert_non_null(w);
    assert_string_equal(w->argv[0], "/bin/sh");
    assert_string_equal(w->argv[1], "-c");
    assert_string_equal(w->argv[2], "echo \"hi there\"");
    assert_string_equal(w->argv[3], "x y");
    assert_null(w->argv[4]);
    assert_int_equal(w->instances, 3);
    assert_string_equal(w->listen, "127.0.0.1:0");
    assert_int_equal(w->kill_timeout_ms, 2000);
    assert_int_equal(w->ready_timeout_ms, 60000);
    assert_int_equal(w->ready, CONFIG_READY_NOTIFY);
    assert_int_equal(w->max_memory, 200u << 20);
    assert_int_equal(w->restart, CONFIG_RESTART_ON_FAILURE);
    assert_int_equal(w->stop_signal, 2);
    assert_string_equal(w->cwd, cfg.dir);
    /* env: (no hub env) env_file, then env lines; a later key replaces an earlier one */
    char **env = config_env(w);
    assert_non_null(env);
    assert_string_equal(env[0], "A=from_line");
    assert_string_equal(env[1], "B=quoted value");
    assert_string_equal(env[2], "C=dq");
    assert_string_equal(env[3], "D=d");
    assert_null(env[4]);
    config_env_free(env);

    /* log keys: an app's own, else the [hub]'s */
    config_logs lw = config_app_logs(&cfg, w);
    assert_true(lw.json && lw.timestamps && lw.max_size == 1 << 20 && lw.keep == 5);
    const config_app *k = config_find(&cfg, "worker");
    assert_non_null(k);
    assert_int_equal(k->instances, 1);              /* defaults */
    assert_int_equal(k->kill_timeout_ms, 5000);
    assert_int_equal(k->ready_timeout_ms, 10000);
    assert_int_equal(k->ready, CONFIG_READY_AUTO);
    assert_int_equal(k->restart, CONFIG_RESTART_ALWAYS);
    assert_int_equal(k->stop_signal, 15);
    assert_int_equal(k->max_memory, 0);
    assert_true(k->inherit_env);
    assert_null(k->listen);
    assert_true(strstr(k->path, "/sleep") != NULL);
    config_logs lk = config_app_logs(&cfg, k);
    assert_true(!lk.json && lk.timestamps && lk.max_size == 1 << 20 && lk.keep == 2);
    config_free(&cfg);
}

static void test_config_hub_env_first(void **unused)
{
    (void)unused;
    setenv("DROVER_TEST_HUBVAR", "hub", 1);
    setenv("DROVER_TEST_OVER", "hub", 1);
    const char *p = write_file("env.conf", "[app a]\ncommand = true\nenv = DROVER_TEST_OVER=line\n");
    config cfg;
    char err[512];
    assert_int_equal(config_load(p, &cfg, err, sizeof err), 0);
    char **env = config_env(&cfg.apps[0]);
    int hub = 0, over = 0;
    for (char **e = env; *e; e++) {
        hub += strcmp(*e, "DROVER_TEST_HUBVAR=hub") == 0;
        over += strcmp(*e, "DROVER_TEST_OVER=line") == 0;
        assert_string_not_equal(*e, "DROVER_TEST_OVER=hub");
    }
    assert_int_equal(hub, 1);
    assert_int_equal(over, 1);
    config_env_free(env);
    config_free(&cfg);
}

static void test_config_diff(void **unused)
{
    (void)unused;
    config a, b;
    char err[512], what[256];
    write_file("e1.env", "X=1\n");
    assert_int_equal(config_load(write_file("d1.conf", "[app a]\ncommand = sleep 5\nenv_file = e1.env\n"),
                                 &a, err, sizeof err), 0);
    assert_int_equal(config_load(write_file("d2.conf", "[app a]\ncommand = sleep 5\nenv_file = e1.env\ninstances = 4\n"),
                                 &b, err, sizeof err), 0);
    assert_int_equal(config_app_diff(&a.apps[0], &b.apps[0], what, sizeof what), 0);   /* instances only */
    config_free(&b);
    write_file("e1.env", "X=2\n");   /* the env_file's contents alone */
    assert_int_equal(config_load(write_file("d2.conf", "[app a]\ncommand = sleep 5\nenv_file = e1.env\n"),
                                 &b, err, sizeof err), 0);
    assert_int_equal(config_app_diff(&a.apps[0], &b.apps[0], what, sizeof what), 1);
    assert_string_equal(what, "env_file");
    config_free(&b);
    assert_int_equal(config_load(write_file("d2.conf", "[app a]\ncommand = sleep 6\nenv = Y=1\n"),
                                 &b, err, sizeof err), 0);
    assert_int_equal(config_app_diff(&a.apps[0], &b.apps[0], what, sizeof what), 3);
    assert_string_equal(what, "command, env, env_file");
    config_free(&b);
    config_free(&a);
}

/* balance: its default follows listen (as --balance does), and only the mode in effect counts as a change. */
static void test_config_balance(void **unused)
{
    (void)unused;
    config c;
    char err[512], what[256];
    assert_int_equal(config_load(write_file("b.conf",
                                            "[app tcp]\ncommand = true\nlisten = 127.0.0.1:8080\n"
                                            "[app v6]\ncommand = true\nlisten = [::1]:8080\n"
                                            "[app unix]\ncommand = true\nlisten = unix:/tmp/x.sock\n"
                                            "[app fd]\ncommand = true\nlisten = fd:web\n"
                                            "[app none]\ncommand = true\n"
                                            "[app pinned]\ncommand = true\nlisten = 8080\nbalance = shared\n"
                                            "[app same]\ncommand = true\nlisten = 127.0.0.1:8080\nbalance = reuseport\n"
                                            "[app asked]\ncommand = true\nlisten = unix:/tmp/y.sock\nbalance = reuseport\n"),
                                 &c, err, sizeof err), 0);
    static const struct { const char *app; config_balance want; } t[] = {
        {"tcp", CONFIG_BALANCE_REUSEPORT}, {"v6", CONFIG_BALANCE_REUSEPORT}, {"unix", CONFIG_BALANCE_SHARED},
        {"fd", CONFIG_BALANCE_SHARED}, {"none", CONFIG_BALANCE_SHARED}, {"pinned", CONFIG_BALANCE_SHARED},
        {"same", CONFIG_BALANCE_REUSEPORT}, {"asked", CONFIG_BALANCE_REUSEPORT},   /* apply.c shares it, saying so */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (config_app_balance(config_find(&c, t[i].app)) != t[i].want)
            fail_msg("app %s: balance %d, want %d", t[i].app, config_app_balance(config_find(&c, t[i].app)),
                     t[i].want);
    /* reuseport written out on a TCP address is the default: no change */
    assert_int_equal(config_app_diff(config_find(&c, "tcp"), config_find(&c, "same"), what, sizeof what), 0);
    assert_int_equal(config_app_diff(config_find(&c, "tcp"), config_find(&c, "pinned"), what, sizeof what), 2);
    assert_string_equal(what, "listen, balance");
    config_free(&c);
    expect_error("[app a]\ncommand = true\nlisten = 8080\nbalance = random\n", 4,
                 "balance is one of shared, reuseport, not 'random'");
}

static void test_config_values(void **unused)
{
    (void)unused;
    uint64_t v;
    assert_true(config_parse_duration("250ms", &v) && v == 250);
    assert_true(config_parse_duration("5s", &v) && v == 5000);
    assert_true(config_parse_duration("2m", &v) && v == 120000);
    assert_true(config_parse_duration("42", &v) && v == 42);
    assert_false(config_parse_duration("5h", &v));
    assert_false(config_parse_duration("-5s", &v));
    assert_false(config_parse_duration(" 5s", &v));
    assert_false(config_parse_duration("99999999999s", &v));
    assert_true(config_parse_size("64K", &v) && v == 65536);
    assert_true(config_parse_size("1G", &v) && v == 1ull << 30);
    assert_true(config_parse_size("3MB", &v) && v == 3ull << 20);
    assert_false(config_parse_size("0", &v));
    assert_false(config_parse_size("1T", &v));
    assert_false(config_parse_size("99999999999999999999K", &v));
    char err[128];
    assert_null(config_split_command("a 'b", err, sizeof err));
    assert_null(config_split_command("a \"b", err, sizeof err));
    assert_null(config_split_command("   ", err, sizeof err));
    char **argv = config_split_command("  a\t'' \"\\$x\" b\\\"c ", err, sizeof err);
    assert_non_null(argv);
    assert_string_equal(argv[0], "a");
    assert_string_equal(argv[1], "");
    assert_string_equal(argv[2], "$x");
    assert_string_equal(argv[3], "b\"c");
    assert_null(argv[4]);
    config_argv_free(argv);
}

static void test_config_refused(void **unused)
{
    (void)unused;
    expect_error("[app a]\ncommand = true\nbogus = 1\n", 3, "unknown key 'bogus'");
    expect_error("[app a]\ncommand = true\ninstances = 0\n", 3, "instances");
    expect_error("[app a]\ncommand = true\ninstances = 1025\n", 3, "instances");
    expect_error("[app a]\ncommand = true\n\n[app a]\ncommand = true\n", 4, "defined twice (first at line 1)");
    expect_error("[app a]\ninstances = 2\n", 1, "has no command");
    expect_error("[app a]\ncommand = true\nenv_file = /nonexistent/x.env\n", 3, "env_file");
    expect_error("[app a]\ncommand = true\nuser = no-such-user-drover\n", 3, "unknown user");
    expect_error("[app a]\ncommand = true\nkill_timeout = 5 s\n", 3, "kill_timeout");
    expect_error("[app a]\ncommand = true\nmax_memory = lots\n", 3, "max_memory");
    expect_error("[app a]\ncommand = true\nrestart = sometimes\n", 3, "always, on-failure, never");
    expect_error("[app a]\ncommand = true\nready = maybe\n", 3, "ready");
    expect_error("[app a]\ncommand = true\nstop_signal = NOPE\n", 3, "stop_signal");
    expect_error("[app a]\ncommand = true\nlisten = 127.0.0.1:99999\n", 3, "listen");
    expect_error("[app a]\ncommand = true\ncommand = false\n", 3, "given twice");
    expect_error("[app a]\ncommand = true\nenv = 1X=2\n", 3, "KEY=VALUE");
    expect_error("[app a]\ncommand = 'true\n", 2, "unterminated");
    expect_error("[app a]\ncommand = no-such-program-drover\n", 2, "not found");
    expect_error("[app a]\ncommand = true\n[web]\n", 3, "unknown section [web]");
    expect_error("[app .bad]\ncommand = true\n", 1, "bad app name");
    expect_error("command = true\n", 1, "outside a section");
    expect_error("[app a]\ncommand = true\nthis line is nonsense\n", 3, "not a key = value");
    expect_error("[hub]\ninterval = 10ms\n[app a]\ncommand = true\n", 2, "interval");
    expect_error("[hub]\ncommand = true\n", 2, "belongs in an [app NAME] section");
    expect_error("[hub]\n", 0, "no [app NAME] section");
    expect_error("[app a]\ncommand = true\n  instances = 2\n", 3, "starts with blanks");
    expect_error("[app a]\ncommand = true\ncwd = /nonexistent-drover\n", 3, "cwd");
    expect_error("[app a]\ncommand = true\nlog_dir = /tmp\n", 3, "log_dir belongs in [hub]");
    expect_error("[app a]\ncommand = true\nlog_max_size = none\n", 3, "cannot be none");
}

static void test_config_long_lines(void **unused)
{
    (void)unused;
    char *text = malloc(CONFIG_LINE_MAX + 64);
    assert_non_null(text);
    /* a long env value is fine */
    int n = snprintf(text, CONFIG_LINE_MAX, "[app a]\ncommand = true\nenv = X=");
    memset(text + n, 'v', 3000);
    snprintf(text + n + 3000, 64, "\n");
    config cfg;
    char err[512];
    if (config_load(write_file("long.conf", text), &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    assert_int_equal(strlen(cfg.apps[0].env_lines[0]), 3002);
    config_free(&cfg);
    free(text);
}

static int setup(void **unused)
{
    (void)unused;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **unused)
{
    (void)unused;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_full_file),
        cmocka_unit_test(test_config_hub_env_first),
        cmocka_unit_test(test_config_diff),
        cmocka_unit_test(test_config_balance),
        cmocka_unit_test(test_config_values),
        cmocka_unit_test(test_config_refused),
        cmocka_unit_test(test_config_long_lines),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
