/*
 * test_unit.c — `drover startup`'s systemd units (hub/unit.c): quoting of
 * command-line words (systemd.syntax, systemd.service "Command lines"),
 * refusal of what cannot be quoted, the units built from real config files
 * (sockets, timeouts, user units, errors), no line injected from a path,
 * and the install primitives (compare, write) on links, FIFOs and files.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hub/config.h"
#include "hub/unit.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/drover-test-unit-XXXXXX";

/* Writes text to DIR/name (name may hold a subdirectory that exists); returns its path (static buffer). */
static const char *write_file(const char *name, const char *text)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* Loads text as a config file and builds its units; returns unit_build's result (err filled on -1). */
static int build(const char *text, bool user, unit_files *u, char *err, size_t errcap)
{
    config cfg;
    const char *p = write_file("t.conf", text);
    if (config_load(p, &cfg, err, errcap) != 0)
        fail_msg("config refused: %s", err);
    unit_options o = {.exe = "/usr/local/bin/drover", .ns = cfg.ns, .user = user};
    int rc = unit_build(&cfg, &o, u, err, errcap);
    config_free(&cfg);
    return rc;
}

/* True when text has line as one whole line. */
static bool has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, line, n) == 0 && (p[n] == '\n' || p[n] == '\0'))
            return true;
    return false;
}

/* How many lines of text start with prefix. */
static int count_prefix(const char *text, const char *prefix)
{
    int n = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        n += strncmp(p, prefix, strlen(prefix)) == 0;
    return n;
}

static void expect_quote(const char *in, bool exe, const char *want)
{
    char out[256];
    int n = unit_quote(in, exe, out, sizeof out);
    if (!want) {
        if (n >= 0)
            fail_msg("'%s' was quoted as '%s', expected a refusal", in, out);
        return;
    }
    if (n < 0)
        fail_msg("'%s' was refused, expected '%s'", in, want);
    assert_string_equal(out, want);
    assert_int_equal(n, (int)strlen(want));
}

static void test_unit_quote(void **unused)
{
    (void)unused;
    expect_quote("/usr/local/bin/drover", true, "/usr/local/bin/drover");
    expect_quote("/srv/app-1/drover.conf", false, "/srv/app-1/drover.conf");
    expect_quote("/srv/my app/drover.conf", false, "\"/srv/my app/drover.conf\"");
    /* an argument: $ and % doubled (no variable, no specifier), \ and " escaped */
    expect_quote("/a$HOME/%n/\"q\"/b\\c", false, "\"/a$$HOME/%%n/\\\"q\\\"/b\\\\c\"");
    expect_quote("/it's", false, "\"/it's\"");
    expect_quote("/caf\xc3\xa9", false, "\"/caf\xc3\xa9\"");
    /* the executable: % doubled, $ kept (never expanded there), " ' \ refused as systemd does */
    expect_quote("/opt/my $x%y/drover", true, "\"/opt/my $x%%y/drover\"");
    expect_quote("/opt/it's/drover", true, NULL);
    expect_quote("/opt/a\"b/drover", true, NULL);
    expect_quote("/opt/a\\b/drover", true, NULL);
    /* nothing that could end a line or move a terminal, and only UTF-8 */
    expect_quote("/a\nExecStartPre=/bin/rm -rf /", false, NULL);
    expect_quote("/a\rb", false, NULL);
    expect_quote("/a\tb", false, NULL);
    expect_quote("/a\x1b[2Jb", false, NULL);
    expect_quote("/a\x7f", false, NULL);
    expect_quote("/a\xc2\x9b", false, NULL);   /* C1 control */
    expect_quote("/a\xff" "b", false, NULL);
    expect_quote("/a\xc3", false, NULL);       /* truncated sequence */
    expect_quote("", false, NULL);
    char small[8];
    assert_int_equal(unit_quote("/a b/cdef", false, small, sizeof small), -1);
    assert_int_equal(unit_quote("/abcdefgh", false, small, sizeof small), -1);
}

static void test_unit_tcp_apps_get_a_socket_unit(void **unused)
{
    (void)unused;
    unit_files u;
    char err[1024];
    int rc = build("[hub]\nnamespace = shop\n"
                   "[app web]\ncommand = /bin/sleep 1\nlisten = 127.0.0.1:8080\nkill_timeout = 7500ms\n"
                   "[app api]\ncommand = /bin/sleep 1\nlisten = 9000\nready_timeout = 2m\n"
                   "[app v6]\ncommand = /bin/sleep 1\nlisten = [::1]:9001\n"
                   "[app local]\ncommand = /bin/sleep 1\nlisten = unix:/tmp/drover-test-unit.sock\n"
                   "[app bg]\ncommand = /bin/sleep 1\n",
                   false, &u, err, sizeof err);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(u.name, "drover-shop");
    char want[1200];
    snprintf(want, sizeof want, "ExecStart=/usr/local/bin/drover up --headless -f %s/t.conf -L shop", dir);
    assert_true(has_line(u.service, want));
    assert_true(has_line(u.service, "Type=notify"));
    assert_true(has_line(u.service, "NotifyAccess=main"));
    assert_true(has_line(u.service, "ExecReload=/bin/kill -HUP $MAINPID"));
    assert_true(has_line(u.service, "KillMode=mixed"));
    assert_true(has_line(u.service, "TimeoutStopSec=13"));      /* 7.5 s rounded up, + 5 */
    assert_true(has_line(u.service, "TimeoutStartSec=150"));    /* 2 min + 30 */
    assert_true(has_line(u.service, "WatchdogSec=30"));
    assert_true(has_line(u.service, "Restart=on-failure"));
    assert_true(has_line(u.service, "Requires=drover-shop.socket"));
    assert_true(has_line(u.service, "After=drover-shop.socket network.target"));
    assert_true(has_line(u.service, "WantedBy=multi-user.target"));
    assert_true(has_line(u.service, "Description=drover hub shop: web api v6 local bg"));
    assert_non_null(u.socket);
    assert_int_equal(u.nsockets, 3);
    /* the address the hub would bind itself: a bare port is the first passive address */
    assert_true(has_line(u.socket, "ListenStream=127.0.0.1:8080"));
    assert_true(has_line(u.socket, "ListenStream=0.0.0.0:9000") || has_line(u.socket, "ListenStream=[::]:9000"));
    assert_true(has_line(u.socket, "ListenStream=[::1]:9001"));
    assert_int_equal(count_prefix(u.socket, "ListenStream="), 3);   /* not the unix: app */
    assert_true(has_line(u.socket, "Service=drover-shop.service"));
    assert_true(has_line(u.socket, "WantedBy=sockets.target"));
    unit_files_free(&u);
}

static void test_unit_no_listen_no_socket_and_user_units(void **unused)
{
    (void)unused;
    unit_files u;
    char err[1024];
    int rc = build("[app bg]\ncommand = /bin/sleep 1\n[app local]\ncommand = /bin/sleep 1\n"
                   "listen = unix:/tmp/drover-test-unit.sock\n", true, &u, err, sizeof err);
    if (rc != 0)
        fail_msg("%s", err);
    assert_string_equal(u.name, "drover-default");
    assert_null(u.socket);
    assert_int_equal(u.nsockets, 0);
    assert_int_equal(count_prefix(u.service, "Requires="), 0);
    assert_int_equal(count_prefix(u.service, "After="), 0);      /* a user manager has no network.target */
    assert_true(has_line(u.service, "WantedBy=default.target"));
    assert_true(has_line(u.service, "TimeoutStopSec=10"));        /* the default 5 s + 5 */
    assert_true(has_line(u.service, "TimeoutStartSec=90"));       /* never below systemd's default */
    unit_files_free(&u);
}

static void test_unit_refusals(void **unused)
{
    (void)unused;
    unit_files u;
    char err[1024];
    assert_int_equal(build("[app a]\ncommand = /bin/sleep 1\nlisten = fd:web\n", false, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "app a: listen = fd:web"));
    assert_null(u.service);
    assert_int_equal(build("[app a]\ncommand = /bin/sleep 1\nlisten = 127.0.0.1:0\n", false, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "port 0"));
    assert_int_equal(build("[app a]\ncommand = /bin/sleep 1\nlisten = 127.0.0.1:8080\n"
                           "[app b]\ncommand = /bin/sleep 1\nlisten = 127.0.0.1:8080\n", false, &u, err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "apps a and b both listen on 127.0.0.1:8080"));

    /* a config file whose path holds a newline: refused, never written into a unit */
    char sub[300];
    snprintf(sub, sizeof sub, "%s/x\nExecStartPre=y", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    const char *p = write_file("x\nExecStartPre=y/t.conf", "[app a]\ncommand = /bin/sleep 1\n");
    config cfg;
    if (config_load(p, &cfg, err, sizeof err) != 0)
        fail_msg("%s", err);
    unit_options o = {.exe = "/usr/local/bin/drover", .ns = "default"};
    assert_int_equal(unit_build(&cfg, &o, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "the config file's path cannot be written in a unit"));
    assert_null(u.service);
    /* the binary's path, --socket-dir, relative paths, a bad namespace */
    o.exe = "/opt/it's/drover";
    snprintf(cfg.file, sizeof cfg.file, "/srv/drover.conf");
    assert_int_equal(unit_build(&cfg, &o, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "the drover binary's path cannot be written"));
    o.exe = "drover";
    assert_int_equal(unit_build(&cfg, &o, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "must be absolute"));
    o.exe = "/usr/bin/drover";
    o.socket_dir = "/run/dr\tover";
    assert_int_equal(unit_build(&cfg, &o, &u, err, sizeof err), -1);
    assert_non_null(strstr(err, "--socket-dir cannot be written"));
    o.socket_dir = "/run/my drover";
    o.ns = "a/b";
    assert_int_equal(unit_build(&cfg, &o, &u, err, sizeof err), -1);
    o.ns = "prod";
    assert_int_equal(unit_build(&cfg, &o, &u, err, sizeof err), 0);
    assert_true(has_line(u.service, "ExecStart=/usr/bin/drover up --headless -f /srv/drover.conf -L prod "
                                    "--socket-dir \"/run/my drover\""));
    unit_files_free(&u);
    config_free(&cfg);
}

static void test_unit_compare_and_write(void **unused)
{
    (void)unused;
    char d[300], path[400], err[600];
    unit_state st;
    const char *why;
    snprintf(d, sizeof d, "%s/units/sub", dir);   /* created by unit_write */
    assert_int_equal(unit_compare(d, "a.service", "text\n", &st, &why, err, sizeof err), 0);
    assert_int_equal(st, UNIT_ABSENT);
    assert_int_equal(unit_write(d, "a.service", "text\n", err, sizeof err), 0);
    snprintf(path, sizeof path, "%s/a.service", d);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 07777, 0644);
    assert_int_equal(unit_compare(d, "a.service", "text\n", &st, &why, err, sizeof err), 0);
    assert_int_equal(st, UNIT_SAME);
    assert_int_equal(unit_compare(d, "a.service", "text\nmore\n", &st, &why, err, sizeof err), 0);
    assert_int_equal(st, UNIT_DIFFERENT);
    assert_int_equal(unit_compare(d, "a.service", "texT\n", &st, &why, err, sizeof err), 0);
    assert_int_equal(st, UNIT_DIFFERENT);

    /* a link (even to identical text) is different and never followed; writing replaces the link */
    char target[400], link[400];
    snprintf(target, sizeof target, "%s/target", dir);
    write_file("target", "text\n");
    snprintf(link, sizeof link, "%s/b.service", d);
    assert_int_equal(symlink(target, link), 0);
    assert_int_equal(unit_compare(d, "b.service", "text\n", &st, &why, err, sizeof err), 0);
    assert_int_equal(st, UNIT_DIFFERENT);
    assert_non_null(strstr(why, "symbolic link"));
    assert_int_equal(unit_write(d, "b.service", "new\n", err, sizeof err), 0);
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    FILE *f = fopen(target, "r");
    char buf[32] = "";
    assert_non_null(fgets(buf, sizeof buf, f));
    fclose(f);
    assert_string_equal(buf, "text\n");   /* the link's target is untouched */

    /* a FIFO: different, and reading it does not block */
    snprintf(path, sizeof path, "%s/c.service", d);
    assert_int_equal(mkfifo(path, 0600), 0);
    assert_int_equal(unit_compare(d, "c.service", "text\n", &st, &why, err, sizeof err), 0);
    assert_int_equal(st, UNIT_DIFFERENT);
    assert_non_null(strstr(why, "not a regular file"));

    /* no temporary file is left behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test -z \"$(ls -A '%s' | grep '^\\.')\"", d);
    assert_int_equal(system(cmd), 0);
    /* a directory that cannot be created: an error, not a crash */
    snprintf(path, sizeof path, "%s/a.service/x", d);
    assert_int_equal(unit_write(path, "d.service", "t\n", err, sizeof err), -1);
    assert_non_null(strstr(err, "cannot create"));
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
        cmocka_unit_test(test_unit_quote),
        cmocka_unit_test(test_unit_tcp_apps_get_a_socket_unit),
        cmocka_unit_test(test_unit_no_listen_no_socket_and_user_units),
        cmocka_unit_test(test_unit_refusals),
        cmocka_unit_test(test_unit_compare_and_write),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
