/*
 * test_upgrade.c — the blob that carries a hub across `drover upgrade`:
 * hex both ways, the memfd round trip and its size bound, and the
 * validation that must refuse every malformed field before the new image
 * acts on it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "hub/upgrade.h"

/* A valid document: one app with an online and a stopped slot, one log stream. */
static json_t *valid_doc(void)
{
    json_error_t je;
    json_t *d = json_loads(
        "{\"format\":\"drover-upgrade\",\"version\":1,\"from\":\"0.1.0\",\"upgrades\":2,\"failures\":0,"
        "\"lock\":9,\"guard\":12,\"guard_pid\":700,\"agent\":11,\"ctl\":15,\"group\":null,"
        "\"apps\":[{\"name\":\"web\",\"want\":2,\"ready_learned\":true,\"listen_fd\":17,\"listen_spec\":\"127.0.0.1:8080\","
        "\"slots\":[{\"id\":0,\"state\":\"online\",\"pid\":701,\"restarts\":3,\"fails\":0,\"lsock\":-1,\"age_ms\":5000},"
        "{\"id\":1,\"state\":\"stopped\",\"pid\":0,\"restarts\":0,\"fails\":0,\"lsock\":-1,\"age_ms\":0}]}],"
        "\"logs\":[{\"app\":\"web\",\"id\":0,\"pid\":701,\"pipes\":[{\"fd\":20,\"which\":0,\"pid\":701,\"partial\":\"6869\"}],"
        "\"ring\":[[1700000000.5,1,\"6f6b\"]]}]}",
        0, &je);
    assert_non_null(d);
    return d;
}

static void test_hex_round_trip(void **st)
{
    (void)st;
    unsigned char in[256], out[256];
    for (int i = 0; i < 256; i++)
        in[i] = (unsigned char)i;
    json_t *h = upgrade_hex(in, sizeof in);
    assert_int_equal(json_string_length(h), 512);
    assert_int_equal(upgrade_unhex(h, out, sizeof out), 256);
    assert_memory_equal(in, out, sizeof in);
    assert_int_equal(upgrade_unhex(h, out, 255), -1);          /* does not fit */
    json_decref(h);
    json_t *odd = json_string("abc"), *bad = json_string("zz"), *num = json_integer(1);
    assert_int_equal(upgrade_unhex(odd, out, sizeof out), -1);
    assert_int_equal(upgrade_unhex(bad, out, sizeof out), -1);
    assert_int_equal(upgrade_unhex(num, out, sizeof out), -1);
    json_decref(odd);
    json_decref(bad);
    json_decref(num);
}

static void test_blob_round_trip(void **st)
{
    (void)st;
    char err[256];
    json_t *d = valid_doc();
    int fd = upgrade_blob_write(d, err, sizeof err);
    assert_true(fd >= 0);
    assert_int_equal(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);      /* crosses the exec */
    json_t *back = upgrade_blob_read(fd, err, sizeof err);
    assert_non_null(back);
    assert_true(json_equal(d, back));
    json_decref(back);
    close(fd);
    json_decref(d);
}

static void test_blob_not_json_or_empty(void **st)
{
    (void)st;
    char err[256];
    int fd = memfd_create("t", 0);
    assert_null(upgrade_blob_read(fd, err, sizeof err));
    assert_non_null(strstr(err, "bytes"));
    assert_int_equal(write(fd, "{nope", 5), 5);
    assert_null(upgrade_blob_read(fd, err, sizeof err));
    assert_non_null(strstr(err, "not JSON"));
    close(fd);
    int p[2];
    assert_int_equal(pipe(p), 0);                                 /* not a memfd: refused, not read */
    assert_null(upgrade_blob_read(p[0], err, sizeof err));
    close(p[0]);
    close(p[1]);
}

/* Sets path (a.b.c, numbers index arrays) in a valid document to v and expects a refusal naming what. */
static void refuses(const char *what, const char *path, json_t *v)
{
    json_t *d = valid_doc(), *o = d;
    char buf[128], *save = NULL;
    snprintf(buf, sizeof buf, "%s", path);
    char *tok = strtok_r(buf, ".", &save), *next;
    while ((next = strtok_r(NULL, ".", &save))) {
        o = json_is_array(o) ? json_array_get(o, (size_t)atoi(tok)) : json_object_get(o, tok);
        assert_non_null(o);
        tok = next;
    }
    if (json_is_array(o))
        json_array_set_new(o, (size_t)atoi(tok), v);
    else
        json_object_set_new(o, tok, v);
    char err[256] = "";
    assert_int_equal(upgrade_validate(d, err, sizeof err), -1);
    assert_non_null(strstr(err, what));
    json_decref(d);
}

static void test_validate_refuses_each_bad_field(void **st)
{
    (void)st;
    char err[256];
    json_t *d = valid_doc();
    assert_int_equal(upgrade_validate(d, err, sizeof err), 0);
    json_decref(d);
    refuses("not a drover upgrade blob", "format", json_string("other"));
    refuses("version 2", "version", json_integer(2));
    refuses("header", "lock", json_integer(-1));
    refuses("header", "agent", json_integer(70000));
    refuses("header", "guard_pid", json_string("1"));
    refuses("no apps", "apps", json_null());
    refuses("valid name", "apps.0.name", json_string("../x"));
    refuses("bad want", "apps.0.want", json_integer(5000));
    refuses("slot 0", "apps.0.slots.0.state", json_string("starting"));
    refuses("slot 0", "apps.0.slots.0.pid", json_integer(0));       /* online needs a pid */
    refuses("slot 1", "apps.0.slots.1.pid", json_integer(55));      /* stopped has none */
    refuses("slot 0", "apps.0.slots.0.id", json_integer(-1));
    refuses("pipe", "logs.0.pipes.0.which", json_integer(2));
    refuses("pipe", "logs.0.pipes.0.partial", json_string("abc"));
    refuses("ring line", "logs.0.ring.0", json_pack("[f, i]", 1.0, 0));
    refuses("listening group", "group", json_pack("{s:i}", "anchor", 3));
    refuses("listening group", "apps.0.group", json_pack("{s:i}", "anchor", 3));   /* a file app's own */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_round_trip),
        cmocka_unit_test(test_blob_round_trip),
        cmocka_unit_test(test_blob_not_json_or_empty),
        cmocka_unit_test(test_validate_refuses_each_bad_field),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
