/*
 * test_proto.c — unit tests for proto/: the report datagram codec and the
 * sd_notify text parser (PROTOCOL.md §1, §2).
 *
 * Every malformed decode runs with an allocation watch armed: the largest
 * single allocation request made while report_decode() runs must stay under
 * 1 MiB, which is what proves the walker bounds msgpack-c before it
 * allocates (without it, `dd 01 00 00 00` asks for 512 MiB).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "proto/notify.h"
#include "proto/report.h"

/* ======================================================================== */
/* Allocation watch                                                         */
/* ======================================================================== */

/*
 * Under AddressSanitizer we register a sanitizer malloc hook; otherwise the
 * test binary interposes malloc/calloc/realloc (which also catches calls made
 * from inside libmsgpackc.so) and forwards them to glibc's allocator.
 */
#if defined(__SANITIZE_ADDRESS__)
#define PROTO_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PROTO_TEST_ASAN 1
#endif
#endif

#define PROTO_TEST_ALLOC_LIMIT (1u << 20) /* largest allocation a decode may request */

static bool   watch_armed;     /* count only while a decode runs */
static size_t watch_max;       /* largest single request seen while armed */
static bool   watch_live;      /* the probe in main() saw a request: the watch works here */

/* Records one allocation request of n bytes. */
static void watch_note(size_t n)
{
    if (watch_armed && n > watch_max)
        watch_max = n;
}

#ifdef PROTO_TEST_ASAN
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

/* ASan malloc hook: called after every successful allocation. */
static void watch_asan_malloc(const volatile void *p, size_t n)
{
    (void)p;
    watch_note(n);
}

/* ASan free hook: nothing to count. */
static void watch_asan_free(const volatile void *p)
{
    (void)p;
}

/* Installs the hooks; returns 0 on success. */
static int watch_install(void)
{
    return __sanitizer_install_malloc_and_free_hooks(watch_asan_malloc, watch_asan_free) ? 0 : -1;
}
#else
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);

/* Interposed malloc: counts, then forwards to glibc. */
void *malloc(size_t n)
{
    watch_note(n);
    return __libc_malloc(n);
}

/* Interposed calloc: counts the product (saturated), then forwards to glibc. */
void *calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total))
        total = SIZE_MAX;
    watch_note(total);
    return __libc_calloc(n, size);
}

/* Interposed realloc: counts the new size, then forwards to glibc. */
void *realloc(void *p, size_t n)
{
    watch_note(n);
    return __libc_realloc(p, n);
}

/* Nothing to install: the interposers are always live. */
static int watch_install(void)
{
    return 0;
}
#endif

/* ======================================================================== */
/* Helpers                                                                  */
/* ======================================================================== */

/* True when all n bytes at p are zero. */
static bool all_zero(const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        if (c[i])
            return false;
    return true;
}

/*
 * Decodes n bytes at b expecting error want: checks the code, that *out was
 * zeroed (it starts full of garbage), and that no allocation request during
 * the decode reached PROTO_TEST_ALLOC_LIMIT.
 */
static void expect_err_at(const void *b, size_t n, report_error want, const char *what)
{
    static report r;
    memset(&r, 0xa5, sizeof r);
    watch_max = 0;
    watch_armed = true;
    report_error e = report_decode(b, n, &r);
    watch_armed = false;
    if (e != want)
        print_error("%s: got %s (%d), want %s (%d)\n", what, report_strerror(e), (int)e,
                    report_strerror(want), (int)want);
    assert_int_equal(e, want);
    assert_true(all_zero(&r, sizeof r));
    if (watch_max >= PROTO_TEST_ALLOC_LIMIT)
        print_error("%s: decode asked for %zu bytes at once\n", what, watch_max);
    assert_true(!watch_live || watch_max < PROTO_TEST_ALLOC_LIMIT);
}
#define expect_err(b, n, want) expect_err_at((b), (n), (want), #b)

/* Decodes n bytes at b into *r expecting success. */
static void expect_ok(const void *b, size_t n, report *r)
{
    report_error e = report_decode(b, n, r);
    if (e != REPORT_OK)
        print_error("decode failed: %s\n", report_strerror(e));
    assert_int_equal(e, REPORT_OK);
}

/* A msgpack builder for hand-made datagrams (tests may allocate). */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer  pk;
} mp;

static void mp_begin(mp *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_end(mp *m)
{
    msgpack_sbuffer_destroy(&m->sb);
}

static void mp_str(mp *m, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(&m->pk, n);
    msgpack_pack_str_body(&m->pk, s, n);
}

static void mp_strn(mp *m, const char *s, size_t n)
{
    msgpack_pack_str(&m->pk, n);
    msgpack_pack_str_body(&m->pk, s, n);
}

static void mp_uint(mp *m, uint64_t v)
{
    msgpack_pack_uint64(&m->pk, v);
}

static void mp_raw(mp *m, const void *p, size_t n)
{
    msgpack_sbuffer_write(&m->sb, p, n);
}

static const char *const required_keys[] = { "v", "t", "pid", "seq" };

/*
 * Starts a map holding the required keys (v=1, t=report, pid=100, seq=1)
 * except `omit` (NULL: none), sized for `extra` more pairs the caller packs.
 */
static void mp_required(mp *m, const char *omit, uint32_t extra)
{
    mp_begin(m);
    msgpack_pack_map(&m->pk, 4 - (omit ? 1 : 0) + extra);
    for (size_t i = 0; i < 4; i++) {
        const char *k = required_keys[i];
        if (omit && strcmp(omit, k) == 0)
            continue;
        mp_str(m, k);
        if (strcmp(k, "t") == 0)
            mp_str(m, "report");
        else if (strcmp(k, "pid") == 0)
            mp_uint(m, 100);
        else
            mp_uint(m, 1);
    }
}

/* A report with every key set, as an agent would send it. */
static void fill_full(report *r)
{
    memset(r, 0, sizeof *r);
    r->has = (REPORT_HAS_LAG_H << 1) - 1;
    r->v = REPORT_VERSION;
    r->type = REPORT_T_REPORT;
    r->pid = 4242;
    r->seq = UINT64_MAX - 1;
    r->ts = 1732600000123ull;
    strcpy(r->name, "api");
    r->wid = 3;
    r->cpu_us = 123456789;
    r->rss = 50u << 20;
    r->req = 100000;
    r->err = 7;
    r->inflight = 2;
    r->lat_p50 = 150;
    r->lat_p99 = 2400;
    r->lat_max = 90000;
    r->lag_mean = 300;
    r->lag_p99 = 1200;
    r->lag_max = 5000;
    /* Sparse cumulative histograms: first bucket, a run, a gap, the last bucket. */
    static const uint16_t li[] = { 0, 40, 41, 42, 300, HIST_NBUCKETS - 1 };
    r->lat_h.n = sizeof li / sizeof li[0];
    for (uint32_t i = 0; i < r->lat_h.n; i++) {
        r->lat_h.idx[i] = li[i];
        r->lat_h.count[i] = i == 3 ? UINT64_MAX : 1 + i * 1000;
    }
    r->lag_h.n = 1;
    r->lag_h.idx[0] = 7;
    r->lag_h.count[0] = 12;
    r->ready = true;
    r->drops = 5;
    r->nmetrics = 4;
    strcpy(r->metrics[0].key, "queue");
    r->metrics[0].value = 3;
    strcpy(r->metrics[1].key, "ratio");
    r->metrics[1].value = -0.25;
    strcpy(r->metrics[2].key, "big");
    r->metrics[2].value = 1e300;
    strcpy(r->metrics[3].key, "neg_zero");
    r->metrics[3].value = -0.0;
    strcpy(r->lvl, "warn");
    strcpy(r->msg, "disk 91% full \xe2\x80\x94 \xc3\xbcnicode");
}

/* ======================================================================== */
/* Round trips                                                              */
/* ======================================================================== */

/* Every key, every has bit, metrics and a log line survive encode → decode. */
static void test_roundtrip_full(void **state)
{
    (void)state;
    static report in, out;
    unsigned char buf[REPORT_MAX_BYTES];
    fill_full(&in);
    size_t n = report_encode(&in, buf, sizeof buf);
    assert_true(n > 0);
    expect_ok(buf, n, &out);
    assert_memory_equal(&in, &out, sizeof in);

    /* Each type round trips too. */
    for (int t = REPORT_T_HELLO; t <= REPORT_T_BYE; t++) {
        in.type = (report_type)t;
        n = report_encode(&in, buf, sizeof buf);
        assert_true(n > 0);
        expect_ok(buf, n, &out);
        assert_int_equal(out.type, t);
        assert_memory_equal(&in, &out, sizeof in);
    }
}

/* Every optional key alone round trips and sets only its own bit. */
static void test_roundtrip_each_bit(void **state)
{
    (void)state;
    static report full, in, out;
    unsigned char buf[REPORT_MAX_BYTES];
    fill_full(&full);
    for (uint32_t bit = 1; bit <= REPORT_HAS_LAG_H; bit <<= 1) {
        memset(&in, 0, sizeof in);
        in.v = REPORT_VERSION;
        in.type = full.type;
        in.pid = full.pid;
        in.seq = full.seq;
        in.has = bit;
        /* Copy only the fields this bit covers. */
        switch (bit) {
        case REPORT_HAS_TS:       in.ts = full.ts; break;
        case REPORT_HAS_NAME:     memcpy(in.name, full.name, sizeof in.name); break;
        case REPORT_HAS_WID:      in.wid = full.wid; break;
        case REPORT_HAS_CPU:      in.cpu_us = full.cpu_us; break;
        case REPORT_HAS_RSS:      in.rss = full.rss; break;
        case REPORT_HAS_REQ:      in.req = full.req; break;
        case REPORT_HAS_ERR:      in.err = full.err; break;
        case REPORT_HAS_INFLIGHT: in.inflight = full.inflight; break;
        case REPORT_HAS_LAT:      in.lat_p50 = full.lat_p50; in.lat_p99 = full.lat_p99; break;
        case REPORT_HAS_LAG:      in.lag_mean = full.lag_mean; in.lag_p99 = full.lag_p99; break;
        case REPORT_HAS_LAT_MAX:  in.lat_max = full.lat_max; break;
        case REPORT_HAS_LAG_MAX:  in.lag_max = full.lag_max; break;
        case REPORT_HAS_LAT_H:    in.lat_h = full.lat_h; break;
        case REPORT_HAS_LAG_H:    in.lag_h = full.lag_h; break;
        case REPORT_HAS_READY:    in.ready = full.ready; break;
        case REPORT_HAS_DROPS:    in.drops = full.drops; break;
        case REPORT_HAS_METRICS:
            in.nmetrics = full.nmetrics;
            memcpy(in.metrics, full.metrics, sizeof in.metrics);
            break;
        case REPORT_HAS_LOG:
            memcpy(in.lvl, full.lvl, sizeof in.lvl);
            memcpy(in.msg, full.msg, sizeof in.msg);
            break;
        }
        size_t n = report_encode(&in, buf, sizeof buf);
        assert_true(n > 0);
        expect_ok(buf, n, &out);
        assert_int_equal(out.has, bit);
        assert_memory_equal(&in, &out, sizeof in);
    }
}

/* The largest legal report (every string at its limit, 32 metrics) fits and round trips. */
static void test_roundtrip_limits(void **state)
{
    (void)state;
    static report in, out;
    unsigned char buf[REPORT_MAX_BYTES];
    fill_full(&in);
    in.pid = INT32_MAX;
    in.seq = in.ts = in.wid = in.cpu_us = in.rss = in.req = in.err = UINT64_MAX;
    memset(in.name, 'n', REPORT_NAME_MAX - 1);
    memset(in.lvl, 'l', REPORT_LVL_MAX - 1);
    memset(in.msg, 'x', REPORT_MSG_MAX - 1);
    in.nmetrics = REPORT_METRICS_MAX;
    for (unsigned i = 0; i < REPORT_METRICS_MAX; i++) {
        memset(in.metrics[i].key, 'a' + (int)(i % 26), REPORT_METRIC_KEY_MAX - 1);
        in.metrics[i].key[0] = (char)('A' + i); /* distinct keys */
        in.metrics[i].value = (double)i * 1.5;
    }
    size_t n = report_encode(&in, buf, sizeof buf);
    assert_true(n > 0 && n <= REPORT_MAX_BYTES);
    expect_ok(buf, n, &out);
    assert_memory_equal(&in, &out, sizeof in);
}

/* Only v, t, pid, seq: decodes with has == 0 and the encoder writes a 4-pair map. */
static void test_minimal(void **state)
{
    (void)state;
    static const unsigned char dg[] = {
        0x84, 0xa1, 'v', 0x01, 0xa1, 't', 0xa5, 'h', 'e', 'l', 'l', 'o',
        0xa3, 'p', 'i', 'd', 0xcd, 0x30, 0x39, 0xa3, 's', 'e', 'q', 0x00,
    };
    static report r;
    expect_ok(dg, sizeof dg, &r);
    assert_int_equal(r.has, 0);
    assert_int_equal(r.v, 1);               /* a v1 sender is still accepted */
    assert_int_equal(r.type, REPORT_T_HELLO);
    assert_int_equal(r.pid, 12345);
    assert_int_equal(r.seq, 0);

    /* The encoder writes the current version, else the same bytes. */
    unsigned char buf[64], want[sizeof dg];
    memcpy(want, dg, sizeof dg);
    want[3] = REPORT_VERSION;
    size_t n = report_encode(&r, buf, sizeof buf);
    assert_int_equal(n, sizeof dg);
    assert_memory_equal(buf, want, sizeof dg);
}

/*
 * Another producer's encodings: Python's msgpack module (verbatim bytes),
 * then hand-made variants: str8 key headers, non-negative values in signed
 * and oversized encodings, float32 / negative int metrics, unknown keys
 * carrying every kind of value, keys in another order.
 */
static void test_foreign_encodings(void **state)
{
    (void)state;
    static report r;

    /* msgpack.packb({'v':1,'t':'report','pid':4242,'seq':7,'ts':1732600000123,
     *   'name':'api','wid':3,'req':100,'ready':True,
     *   'm':{'queue':3,'temp':-2,'ratio':0.5},'future':[1,{'x':None}]},
     *   use_bin_type=True)  — python3-msgpack 1.0.3 */
    static const unsigned char py[] = {
        0x8b, 0xa1, 0x76, 0x01, 0xa1, 0x74, 0xa6, 0x72, 0x65, 0x70, 0x6f, 0x72, 0x74, 0xa3,
        0x70, 0x69, 0x64, 0xcd, 0x10, 0x92, 0xa3, 0x73, 0x65, 0x71, 0x07, 0xa2, 0x74, 0x73,
        0xcf, 0x00, 0x00, 0x01, 0x93, 0x67, 0x01, 0xee, 0x7b, 0xa4, 0x6e, 0x61, 0x6d, 0x65,
        0xa3, 0x61, 0x70, 0x69, 0xa3, 0x77, 0x69, 0x64, 0x03, 0xa3, 0x72, 0x65, 0x71, 0x64,
        0xa5, 0x72, 0x65, 0x61, 0x64, 0x79, 0xc3, 0xa1, 0x6d, 0x83, 0xa5, 0x71, 0x75, 0x65,
        0x75, 0x65, 0x03, 0xa4, 0x74, 0x65, 0x6d, 0x70, 0xfe, 0xa5, 0x72, 0x61, 0x74, 0x69,
        0x6f, 0xcb, 0x3f, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa6, 0x66, 0x75, 0x74,
        0x75, 0x72, 0x65, 0x92, 0x01, 0x81, 0xa1, 0x78, 0xc0,
    };
    expect_ok(py, sizeof py, &r);
    assert_int_equal(r.type, REPORT_T_REPORT);
    assert_int_equal(r.pid, 4242);
    assert_int_equal(r.seq, 7);
    assert_int_equal(r.ts, 1732600000123ull);
    assert_string_equal(r.name, "api");
    assert_int_equal(r.wid, 3);
    assert_int_equal(r.req, 100);
    assert_true(r.ready);
    assert_int_equal(r.has, REPORT_HAS_TS | REPORT_HAS_NAME | REPORT_HAS_WID | REPORT_HAS_REQ |
                                REPORT_HAS_READY | REPORT_HAS_METRICS);
    assert_int_equal(r.nmetrics, 3);
    assert_string_equal(r.metrics[0].key, "queue");
    assert_true(r.metrics[0].value == 3.0);
    assert_string_equal(r.metrics[1].key, "temp");
    assert_true(r.metrics[1].value == -2.0);
    assert_string_equal(r.metrics[2].key, "ratio");
    assert_true(r.metrics[2].value == 0.5);

    static const unsigned char odd[] = {
        0x89,
        0xd9, 0x03, 's', 'e', 'q', 0xd3, 0, 0, 0, 0, 0, 0, 0, 9,     /* str8 key, int64 9 */
        0xd9, 0x01, 't', 0xd9, 0x03, 'b', 'y', 'e',                  /* str8 key and value */
        0xda, 0x00, 0x03, 'p', 'i', 'd', 0xd2, 0, 0, 0x01, 0x00,     /* str16 key, int32 256 */
        0xdb, 0, 0, 0, 1, 'v', 0xd0, 0x01,                           /* str32 key, int8 1 */
        0xa3, 'r', 's', 's', 0xcf, 0, 0, 0, 0, 0, 0, 0, 42,          /* uint64 42 */
        0xa1, 'm', 0x82,
            0xa1, 'f', 0xca, 0x3f, 0xc0, 0x00, 0x00,                 /* float32 1.5 */
            0xa1, 'n', 0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, /* int64 -2 */
        0xa3, 'b', 'i', 'n', 0xc4, 0x02, 0xde, 0xad,                 /* unknown: bin */
        0xa3, 'e', 'x', 't', 0xc7, 0x01, 0x05, 0x00,                 /* unknown: ext8 */
        0xa2, 'f', 'x', 0xd8, 0x01, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, /* unknown: fixext16 */
    };
    expect_ok(odd, sizeof odd, &r);
    assert_int_equal(r.type, REPORT_T_BYE);
    assert_int_equal(r.pid, 256);
    assert_int_equal(r.seq, 9);
    assert_int_equal(r.rss, 42);
    assert_int_equal(r.has, REPORT_HAS_RSS | REPORT_HAS_METRICS);
    assert_int_equal(r.nmetrics, 2);
    assert_true(r.metrics[0].value == 1.5);
    assert_true(r.metrics[1].value == -2.0);
}

/* Repeated keys: the last one wins, at the top level and inside `m`. */
static void test_duplicates(void **state)
{
    (void)state;
    static report r;
    mp m;
    mp_required(&m, NULL, 3);
    mp_str(&m, "req"); mp_uint(&m, 1);
    mp_str(&m, "m");
    msgpack_pack_map(&m.pk, 3);
    mp_str(&m, "a"); mp_uint(&m, 1);
    mp_str(&m, "b"); mp_uint(&m, 2);
    mp_str(&m, "a"); mp_uint(&m, 3);
    mp_str(&m, "req"); mp_uint(&m, 2);
    expect_ok(m.sb.data, m.sb.size, &r);
    assert_int_equal(r.req, 2);
    assert_int_equal(r.nmetrics, 2);
    assert_string_equal(r.metrics[0].key, "a");
    assert_true(r.metrics[0].value == 3.0);
    assert_string_equal(r.metrics[1].key, "b");
    mp_end(&m);

    /* A shorter repeat leaves no bytes of the longer value behind (found by the fuzzer). */
    mp_required(&m, NULL, 2);
    mp_str(&m, "name"); mp_str(&m, "report");
    mp_str(&m, "name"); mp_str(&m, "api");
    expect_ok(m.sb.data, m.sb.size, &r);
    assert_string_equal(r.name, "api");
    assert_true(all_zero(r.name + 3, sizeof r.name - 3));
    mp_end(&m);
}

/* A datagram of exactly REPORT_MAX_BYTES is accepted; one byte more is not. */
static void test_size_boundary(void **state)
{
    (void)state;
    static report r;
    static char pad[REPORT_MAX_BYTES];
    mp m;
    mp_required(&m, NULL, 1);
    size_t base = m.sb.size;
    mp_str(&m, "pad");
    size_t binlen = REPORT_MAX_BYTES - base - 4 - 3; /* key "pad" = 4 bytes, bin16 header = 3 */
    msgpack_pack_bin(&m.pk, binlen);
    msgpack_pack_bin_body(&m.pk, pad, binlen);
    assert_int_equal(m.sb.size, REPORT_MAX_BYTES);
    expect_ok(m.sb.data, m.sb.size, &r);
    assert_int_equal(r.pid, 100);
    mp_end(&m);

    mp_required(&m, NULL, 1);
    mp_str(&m, "pad");
    msgpack_pack_bin(&m.pk, binlen + 1);
    msgpack_pack_bin_body(&m.pk, pad, binlen + 1);
    assert_int_equal(m.sb.size, REPORT_MAX_BYTES + 1);
    expect_err(m.sb.data, m.sb.size, REPORT_E_SIZE);
    mp_end(&m);

    expect_err("", 0, REPORT_E_SIZE);
    expect_err(NULL, 0, REPORT_E_SIZE);
}

/* Nesting: the top-level map plus 7 levels is fine, one more is malformed. */
static void test_depth(void **state)
{
    (void)state;
    static report r;
    for (unsigned levels = REPORT_MAX_DEPTH - 1; levels <= REPORT_MAX_DEPTH; levels++) {
        mp m;
        mp_required(&m, NULL, 1);
        mp_str(&m, "x");
        for (unsigned i = 0; i < levels; i++) {
            msgpack_pack_map(&m.pk, 1);
            mp_str(&m, "a");
        }
        mp_uint(&m, 1);
        if (levels + 1 <= REPORT_MAX_DEPTH)
            expect_ok(m.sb.data, m.sb.size, &r);
        else
            expect_err(m.sb.data, m.sb.size, REPORT_E_MALFORMED);
        mp_end(&m);
    }
}

/* ======================================================================== */
/* Malformed input                                                          */
/* ======================================================================== */

/* Every strict prefix of a valid full datagram is refused. */
static void test_every_prefix(void **state)
{
    (void)state;
    static report in;
    unsigned char buf[REPORT_MAX_BYTES];
    fill_full(&in);
    size_t n = report_encode(&in, buf, sizeof buf);
    assert_true(n > 0);
    for (size_t len = 0; len < n; len++) {
        char what[64];
        snprintf(what, sizeof what, "prefix %zu/%zu", len, n);
        expect_err_at(buf, len, len == 0 ? REPORT_E_SIZE : REPORT_E_MALFORMED, what);
    }
    /* And one byte too many is trailing. */
    buf[n] = 0xc0;
    expect_err(buf, n + 1, REPORT_E_TRAILING);
}

/* The kinds of wrong value tried on each key. */
typedef enum {
    BAD_STR, BAD_NEG, BAD_FLOAT, BAD_NIL, BAD_BOOL, BAD_ARRAY, BAD_MAP, BAD_BIN, BAD_INT,
    BAD_EXT, BAD_NKINDS
} bad_kind;

static const char *const bad_names[] = {
    "str", "negative int", "float", "nil", "bool", "array", "map", "bin", "int", "ext",
};

/* Packs one value of the given wrong kind. */
static void mp_bad(mp *m, bad_kind k)
{
    switch (k) {
    case BAD_STR:   mp_str(m, "1"); break;
    case BAD_NEG:   msgpack_pack_int64(&m->pk, -1); break;
    case BAD_FLOAT: msgpack_pack_double(&m->pk, 1.0); break;
    case BAD_NIL:   msgpack_pack_nil(&m->pk); break;
    case BAD_BOOL:  msgpack_pack_true(&m->pk); break;
    case BAD_ARRAY: msgpack_pack_array(&m->pk, 1); mp_uint(m, 1); break;
    case BAD_MAP:   msgpack_pack_map(&m->pk, 0); break;
    case BAD_BIN:   msgpack_pack_bin(&m->pk, 1); msgpack_pack_bin_body(&m->pk, "x", 1); break;
    case BAD_INT:   mp_uint(m, 1); break;
    case BAD_EXT:   msgpack_pack_ext(&m->pk, 1, 1); msgpack_pack_ext_body(&m->pk, "x", 1); break;
    case BAD_NKINDS: break;
    }
}

/* Each known key with each value kind its type forbids is a type error. */
static void test_wrong_types(void **state)
{
    (void)state;
    static const char *const uint_keys[] = {
        "seq", "ts", "wid", "cpu_us", "rss", "req", "err", "inflight", "lat_p50", "lat_p99",
        "lat_max", "lag_mean", "lag_p99", "lag_max", "drops", "pid", "v",
    };
    static const char *const str_keys[] = { "t", "name", "lvl", "msg" };
    static const struct { const char *key; bad_kind ok1, ok2; } groups[] = {
        { "ready", BAD_BOOL, BAD_BOOL },
        { "m",     BAD_MAP,  BAD_MAP },
    };
    unsigned cases = 0;
    char what[64];

    for (size_t i = 0; i < sizeof uint_keys / sizeof uint_keys[0]; i++) {
        for (bad_kind k = 0; k < BAD_NKINDS; k++) {
            if (k == BAD_INT)
                continue;
            const char *key = uint_keys[i];
            bool required = !strcmp(key, "v") || !strcmp(key, "pid") || !strcmp(key, "seq");
            mp m;
            mp_required(&m, required ? key : NULL, 1);
            mp_str(&m, key);
            mp_bad(&m, k);
            snprintf(what, sizeof what, "%s as %s", key, bad_names[k]);
            expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, what);
            mp_end(&m);
            cases++;
        }
    }
    for (size_t i = 0; i < sizeof str_keys / sizeof str_keys[0]; i++) {
        for (bad_kind k = 0; k < BAD_NKINDS; k++) {
            if (k == BAD_STR)
                continue;
            const char *key = str_keys[i];
            mp m;
            mp_required(&m, !strcmp(key, "t") ? key : NULL, 1);
            mp_str(&m, key);
            mp_bad(&m, k);
            snprintf(what, sizeof what, "%s as %s", key, bad_names[k]);
            expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, what);
            mp_end(&m);
            cases++;
        }
    }
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        for (bad_kind k = 0; k < BAD_NKINDS; k++) {
            if (k == groups[i].ok1 || k == groups[i].ok2)
                continue;
            mp m;
            mp_required(&m, NULL, 1);
            mp_str(&m, groups[i].key);
            mp_bad(&m, k);
            snprintf(what, sizeof what, "%s as %s", groups[i].key, bad_names[k]);
            expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, what);
            mp_end(&m);
            cases++;
        }
    }
    assert_true(cases > 150);
}

/* Each required key missing alone is REPORT_E_MISSING. */
static void test_missing_required(void **state)
{
    (void)state;
    for (size_t i = 0; i < 4; i++) {
        mp m;
        mp_required(&m, required_keys[i], 1);
        mp_str(&m, "req");
        mp_uint(&m, 5);
        expect_err_at(m.sb.data, m.sb.size, REPORT_E_MISSING, required_keys[i]);
        mp_end(&m);
    }
    static const unsigned char empty_map[] = { 0x80 };
    expect_err(empty_map, sizeof empty_map, REPORT_E_MISSING);
}

/* Builds {v:V, t:report, pid:100, seq:1, lat_h:[elems…]} into m (mp_end frees it). */
static void mp_hist(mp *m, uint64_t v, const uint64_t *elems, uint32_t n)
{
    mp_begin(m);
    msgpack_pack_map(&m->pk, 5);
    mp_str(m, "v"); mp_uint(m, v);
    mp_str(m, "t"); mp_str(m, "report");
    mp_str(m, "pid"); mp_uint(m, 100);
    mp_str(m, "seq"); mp_uint(m, 1);
    mp_str(m, "lat_h");
    msgpack_pack_array(&m->pk, n);
    for (uint32_t i = 0; i < n; i++)
        mp_uint(m, elems[i]);
}

/*
 * Histograms on the wire: (skip, count) pairs decode to rising indices; every
 * integer is checked before it is narrowed (odd length, too many pairs, an
 * index past the last bucket, a skip that would wrap, a zero count, a
 * non-integer are type errors); a v1 datagram's lat_h is an unknown key.
 */
static void test_histograms(void **state)
{
    (void)state;
    static report r;
    mp m;

    static const uint64_t ok[] = { 3, 10, 0, 20, 100, UINT64_MAX };
    mp_hist(&m, 2, ok, 6);
    expect_ok(m.sb.data, m.sb.size, &r);
    mp_end(&m);
    assert_true(r.has & REPORT_HAS_LAT_H);
    assert_int_equal(r.lat_h.n, 3);
    assert_int_equal(r.lat_h.idx[0], 3);
    assert_int_equal(r.lat_h.idx[1], 4);
    assert_int_equal(r.lat_h.idx[2], 105);
    assert_int_equal(r.lat_h.count[2], UINT64_MAX);

    /* The last bucket is reachable; one past it is not. */
    const uint64_t last[] = { HIST_NBUCKETS - 1, 1 };
    mp_hist(&m, 2, last, 2);
    expect_ok(m.sb.data, m.sb.size, &r);
    mp_end(&m);
    assert_int_equal(r.lat_h.idx[0], HIST_NBUCKETS - 1);

    static const struct { const char *what; uint64_t e[4]; uint32_t n; } bad[] = {
        { "odd length",            { 1, 1, 2 }, 3 },
        { "index past the end",    { HIST_NBUCKETS, 1 }, 2 },
        { "skip past the end",     { 500, 1, HIST_NBUCKETS - 501, 1 }, 4 },
        { "skip that would wrap",  { 1, 1, UINT64_MAX, 1 }, 4 },
        { "zero count",            { 1, 0 }, 2 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mp_hist(&m, 2, bad[i].e, bad[i].n);
        expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, bad[i].what);
        mp_end(&m);
    }
    /* More pairs than buckets (each a skip of 0 would pass the index check
     * only up to the last bucket; the count bound refuses it first). */
    static uint64_t many[2 * (HIST_NBUCKETS + 1)];
    for (size_t i = 0; i < sizeof many / sizeof many[0]; i++)
        many[i] = i % 2 ? 1 : 0;
    mp_hist(&m, 2, many, 2 * (HIST_NBUCKETS + 1));
    expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, "too many pairs");
    mp_end(&m);
    /* Exactly HIST_NBUCKETS pairs: every bucket. */
    mp_hist(&m, 2, many, 2 * HIST_NBUCKETS);
    expect_ok(m.sb.data, m.sb.size, &r);
    mp_end(&m);
    assert_int_equal(r.lat_h.n, HIST_NBUCKETS);

    /* A negative integer and a map are type errors. */
    mp_begin(&m);
    msgpack_pack_map(&m.pk, 5);
    mp_str(&m, "v"); mp_uint(&m, 2);
    mp_str(&m, "t"); mp_str(&m, "report");
    mp_str(&m, "pid"); mp_uint(&m, 100);
    mp_str(&m, "seq"); mp_uint(&m, 1);
    mp_str(&m, "lag_h");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_int64(&m.pk, -1);
    mp_uint(&m, 1);
    expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, "negative skip");
    mp_end(&m);

    /* In v1 the key is unknown: ignored whatever it holds. */
    mp_hist(&m, 1, bad[0].e, bad[0].n);
    expect_ok(m.sb.data, m.sb.size, &r);
    mp_end(&m);
    assert_false(r.has & REPORT_HAS_LAT_H);
    assert_int_equal(r.v, 1);

    /* The encoder refuses what the decoder would: indices not rising, a zero count. */
    static report in;
    unsigned char buf[REPORT_MAX_BYTES];
    memset(&in, 0, sizeof in);
    in.type = REPORT_T_REPORT;
    in.pid = 1;
    in.has = REPORT_HAS_LAT_H;
    in.lat_h.n = 2;
    in.lat_h.idx[0] = 5; in.lat_h.count[0] = 1;
    in.lat_h.idx[1] = 5; in.lat_h.count[1] = 1;
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    in.lat_h.idx[1] = 6; in.lat_h.count[1] = 0;
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    in.lat_h.count[1] = 1;
    assert_true(report_encode(&in, buf, sizeof buf) > 0);
    /* A full histogram of large counts plus 32 long metrics does not fit: refused, not cut. */
    in.has |= REPORT_HAS_LAG_H | REPORT_HAS_METRICS;
    in.lat_h.n = in.lag_h.n = HIST_NBUCKETS;
    for (unsigned i = 0; i < HIST_NBUCKETS; i++) {
        in.lat_h.idx[i] = in.lag_h.idx[i] = (uint16_t)i;
        in.lat_h.count[i] = in.lag_h.count[i] = UINT64_MAX;
    }
    in.nmetrics = REPORT_METRICS_MAX;
    for (unsigned i = 0; i < REPORT_METRICS_MAX; i++) {
        memset(in.metrics[i].key, 'k', REPORT_METRIC_KEY_MAX - 1);
        in.metrics[i].key[0] = (char)('A' + i);
    }
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
}

/* Values out of range for their key, and version errors. */
static void test_bad_values(void **state)
{
    (void)state;
    static const struct {
        const char  *key;
        uint64_t     value;
        report_error want;
    } cases[] = {
        { "v",   0,                       REPORT_E_VERSION },
        { "v",   REPORT_VERSION + 1,      REPORT_E_VERSION },
        { "v",   UINT64_MAX,              REPORT_E_VERSION },
        { "pid", 0,                       REPORT_E_TYPE },
        { "pid", (uint64_t)INT32_MAX + 1, REPORT_E_TYPE },
        { "pid", UINT64_MAX,              REPORT_E_TYPE },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        mp m;
        mp_required(&m, cases[i].key, 1);
        mp_str(&m, cases[i].key);
        mp_uint(&m, cases[i].value);
        expect_err_at(m.sb.data, m.sb.size, cases[i].want, cases[i].key);
        mp_end(&m);
    }

    /* v=3 wins over a type error elsewhere: a future version may retype keys. */
    mp m;
    mp_required(&m, "v", 2);
    mp_str(&m, "req"); mp_str(&m, "a string in v3");
    mp_str(&m, "v"); mp_uint(&m, REPORT_VERSION + 1);
    expect_err(m.sb.data, m.sb.size, REPORT_E_VERSION);
    mp_end(&m);

    /* Unknown `t`, and `t` matching a name only by prefix. */
    static const char *const bad_t[] = { "status", "", "hell", "hellox", "REPORT" };
    for (size_t i = 0; i < sizeof bad_t / sizeof bad_t[0]; i++) {
        mp_required(&m, "t", 1);
        mp_str(&m, "t");
        mp_str(&m, bad_t[i]);
        expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, bad_t[i]);
        mp_end(&m);
    }

    /* pid at its upper limit is fine. */
    static report r;
    mp_required(&m, "pid", 1);
    mp_str(&m, "pid");
    mp_uint(&m, INT32_MAX);
    expect_ok(m.sb.data, m.sb.size, &r);
    assert_int_equal(r.pid, INT32_MAX);
    mp_end(&m);
}

/* String limits: each field's size incl. NUL is one byte too many; NUL inside is refused. */
static void test_string_limits(void **state)
{
    (void)state;
    static char big[REPORT_MSG_MAX + 1];
    static report r;
    memset(big, 'x', sizeof big);
    static const struct { const char *key; size_t max; } keys[] = {
        { "name", REPORT_NAME_MAX }, { "lvl", REPORT_LVL_MAX }, { "msg", REPORT_MSG_MAX },
    };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        mp m;
        mp_required(&m, NULL, 1);
        mp_str(&m, keys[i].key);
        mp_strn(&m, big, keys[i].max - 1);
        expect_ok(m.sb.data, m.sb.size, &r);
        mp_end(&m);

        mp_required(&m, NULL, 1);
        mp_str(&m, keys[i].key);
        mp_strn(&m, big, keys[i].max);
        expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, keys[i].key);
        mp_end(&m);

        mp_required(&m, NULL, 1);
        mp_str(&m, keys[i].key);
        mp_strn(&m, "a\0b", 3);
        expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, keys[i].key);
        mp_end(&m);
    }
}

/* Custom metrics: key and value rules, and the count limit. */
static void test_metrics_rules(void **state)
{
    (void)state;
    static report r;
    char key[REPORT_METRIC_KEY_MAX + 1];
    mp m;

    /* 47-byte key ok, 48 refused, empty refused, NUL inside refused. */
    memset(key, 'k', sizeof key);
    for (size_t len = REPORT_METRIC_KEY_MAX - 1; len <= REPORT_METRIC_KEY_MAX; len++) {
        mp_required(&m, NULL, 1);
        mp_str(&m, "m");
        msgpack_pack_map(&m.pk, 1);
        mp_strn(&m, key, len);
        mp_uint(&m, 1);
        if (len < REPORT_METRIC_KEY_MAX) {
            expect_ok(m.sb.data, m.sb.size, &r);
            assert_int_equal(strlen(r.metrics[0].key), len);
        } else {
            expect_err(m.sb.data, m.sb.size, REPORT_E_TYPE);
        }
        mp_end(&m);
    }
    static const char *const bad_keys[] = { "", "a\0b" };
    static const size_t bad_lens[] = { 0, 3 };
    for (size_t i = 0; i < 2; i++) {
        mp_required(&m, NULL, 1);
        mp_str(&m, "m");
        msgpack_pack_map(&m.pk, 1);
        mp_strn(&m, bad_keys[i], bad_lens[i]);
        mp_uint(&m, 1);
        expect_err(m.sb.data, m.sb.size, REPORT_E_TYPE);
        mp_end(&m);
    }

    /* A non-string metric key. */
    mp_required(&m, NULL, 1);
    mp_str(&m, "m");
    msgpack_pack_map(&m.pk, 1);
    mp_uint(&m, 7);
    mp_uint(&m, 1);
    expect_err(m.sb.data, m.sb.size, REPORT_E_TYPE);
    mp_end(&m);

    /* Values: every kind that is not a number. */
    for (bad_kind k = 0; k < BAD_NKINDS; k++) {
        if (k == BAD_NEG || k == BAD_FLOAT || k == BAD_INT)
            continue;
        mp_required(&m, NULL, 1);
        mp_str(&m, "m");
        msgpack_pack_map(&m.pk, 1);
        mp_str(&m, "q");
        mp_bad(&m, k);
        expect_err_at(m.sb.data, m.sb.size, REPORT_E_TYPE, bad_names[k]);
        mp_end(&m);
    }

    /* 32 metrics ok, 33 refused. */
    for (unsigned n = REPORT_METRICS_MAX; n <= REPORT_METRICS_MAX + 1; n++) {
        mp_required(&m, NULL, 1);
        mp_str(&m, "m");
        msgpack_pack_map(&m.pk, n);
        for (unsigned i = 0; i < n; i++) {
            char k[16];
            snprintf(k, sizeof k, "k%u", i);
            mp_str(&m, k);
            mp_uint(&m, i);
        }
        if (n <= REPORT_METRICS_MAX) {
            expect_ok(m.sb.data, m.sb.size, &r);
            assert_int_equal(r.nmetrics, n);
        } else {
            expect_err(m.sb.data, m.sb.size, REPORT_E_TYPE);
        }
        mp_end(&m);
    }
}

/* Hand-made hostile and malformed byte strings, each with the code it must get. */
static void test_hostile_table(void **state)
{
    (void)state;
#define B(...) (const unsigned char[]){ __VA_ARGS__ }, sizeof((const unsigned char[]){ __VA_ARGS__ })
    /* Not static: block-scope compound literals are not constant initialisers. */
    const struct {
        const char          *what;
        const unsigned char *bytes;
        size_t               len;
        report_error         want;
    } table[] = {
        { "array32 of 4G elements",        B(0xdd, 0xff, 0xff, 0xff, 0xff), REPORT_E_MALFORMED },
        { "array32 of 16M elements",       B(0xdd, 0x01, 0x00, 0x00, 0x00), REPORT_E_MALFORMED },
        { "map32 of 4G pairs",             B(0xdf, 0xff, 0xff, 0xff, 0xff), REPORT_E_MALFORMED },
        { "map16 of 64K pairs",            B(0xde, 0xff, 0xff), REPORT_E_MALFORMED },
        { "array16 of 64K elements",       B(0xdc, 0xff, 0xff), REPORT_E_MALFORMED },
        { "str32 of 4G bytes",             B(0xdb, 0xff, 0xff, 0xff, 0xff, 'a'), REPORT_E_MALFORMED },
        { "bin32 of 2G bytes",             B(0xc6, 0x7f, 0xff, 0xff, 0xff), REPORT_E_MALFORMED },
        { "ext32 of 4G bytes",             B(0xc9, 0xff, 0xff, 0xff, 0xff, 0x01), REPORT_E_MALFORMED },
        { "huge array under a known key",  B(0x81, 0xa1, 'm', 0xdd, 0x01, 0, 0, 0), REPORT_E_MALFORMED },
        { "huge map under an unknown key", B(0x81, 0xa1, 'x', 0xdf, 0x10, 0, 0, 0, 0xc0, 0xc0), REPORT_E_MALFORMED },
        { "huge str under an unknown key", B(0x81, 0xa1, 'x', 0xdb, 0x7f, 0xff, 0xff, 0xff), REPORT_E_MALFORMED },
        { "map header cut",                B(0xde, 0x00), REPORT_E_MALFORMED },
        { "map missing a value",           B(0x82, 0xa1, 'v', 0x01, 0xa1, 't'), REPORT_E_MALFORMED },
        { "array missing an element",      B(0x81, 0xa1, 'x', 0x92, 0x01), REPORT_E_MALFORMED },
        { "fixstr cut",                    B(0x81, 0xa3, 'p', 'i'), REPORT_E_MALFORMED },
        { "uint64 cut",                    B(0x81, 0xa1, 'x', 0xcf, 0, 0, 0), REPORT_E_MALFORMED },
        { "fixext16 cut",                  B(0x81, 0xa1, 'x', 0xd8, 0x01, 0, 0), REPORT_E_MALFORMED },
        { "reserved byte 0xc1",            B(0xc1), REPORT_E_MALFORMED },
        { "0xc1 inside a map",             B(0x81, 0xa1, 'x', 0xc1), REPORT_E_MALFORMED },
        { "two maps",                      B(0x80, 0x80), REPORT_E_TRAILING },
        { "map then nil",                  B(0x81, 0xa1, 'x', 0x01, 0xc0), REPORT_E_TRAILING },
        { "top-level array",               B(0x92, 0x01, 0x02), REPORT_E_NOT_MAP },
        { "top-level int",                 B(0x01), REPORT_E_NOT_MAP },
        { "top-level negative int",        B(0xff), REPORT_E_NOT_MAP },
        { "top-level str",                 B(0xa2, 'h', 'i'), REPORT_E_NOT_MAP },
        { "top-level nil",                 B(0xc0), REPORT_E_NOT_MAP },
        { "top-level bool",                B(0xc3), REPORT_E_NOT_MAP },
        { "top-level float64",             B(0xcb, 0, 0, 0, 0, 0, 0, 0, 0), REPORT_E_NOT_MAP },
        { "top-level bin",                 B(0xc4, 0x01, 0x00), REPORT_E_NOT_MAP },
        { "int key at top level",          B(0x81, 0x01, 0x01), REPORT_E_TYPE },
        { "nil key at top level",          B(0x81, 0xc0, 0x01), REPORT_E_TYPE },
        { "bin key \"v\"",                 B(0x81, 0xc4, 0x01, 'v', 0x01), REPORT_E_TYPE },
        { "no v",                          B(0x81, 0xa1, 'x', 0x01), REPORT_E_MISSING },
        { "only v",                        B(0x81, 0xa1, 'v', 0x01), REPORT_E_MISSING },
        { "v = 3, nothing else",           B(0x81, 0xa1, 'v', 0x03), REPORT_E_VERSION },
        { "v = -1",                        B(0x81, 0xa1, 'v', 0xff), REPORT_E_TYPE },
        { "v = true",                      B(0x81, 0xa1, 'v', 0xc3), REPORT_E_TYPE },
        { "v = 1.0",                       B(0x81, 0xa1, 'v', 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0), REPORT_E_TYPE },
    };
#undef B
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        expect_err_at(table[i].bytes, table[i].len, table[i].want, table[i].what);

    /* 5000 nested arrays around a nil, bare and under a key. */
    enum { NEST = 5000 };
    static unsigned char deep[NEST + 8];
    memset(deep, 0x91, NEST);
    deep[NEST] = 0xc0;
    expect_err(deep, NEST + 1, REPORT_E_MALFORMED);
    deep[0] = 0x81;
    deep[1] = 0xa1;
    deep[2] = 'x';
    expect_err(deep, NEST + 1, REPORT_E_MALFORMED);

    /* Deep maps inside an unknown key: {"v":1,…,"x":{"a":{"a":…}}} past the limit. */
    mp m;
    mp_required(&m, NULL, 1);
    mp_str(&m, "x");
    for (unsigned i = 0; i < 100; i++) {
        msgpack_pack_map(&m.pk, 1);
        mp_str(&m, "a");
    }
    msgpack_pack_nil(&m.pk);
    expect_err(m.sb.data, m.sb.size, REPORT_E_MALFORMED);
    mp_end(&m);

    /* A valid datagram followed by garbage. */
    mp_required(&m, NULL, 0);
    mp_raw(&m, "\x00", 1);
    expect_err(m.sb.data, m.sb.size, REPORT_E_TRAILING);
    mp_end(&m);
}

/*
 * The whole hostile set again under a resident-memory check: peak RSS must
 * not grow by 64 MiB (a safety net beside the per-allocation watch).
 */
static void test_hostile_rss(void **state)
{
    (void)state;
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    for (int i = 0; i < 20; i++) {
        test_hostile_table(state);
        test_every_prefix(state);
    }
    getrusage(RUSAGE_SELF, &after);
    assert_true(after.ru_maxrss - before.ru_maxrss < 64 * 1024); /* KiB */
}

/*
 * The watch itself works: msgpack-c alone, given a 1M-element array header
 * with no elements behind it, asks for megabytes at once. If this fails the
 * allocation assertions above prove nothing.
 */
static void test_watch_catches_msgpack_c(void **state)
{
    (void)state;
    if (!watch_live)
        skip();
    static const char hdr[] = { (char)0xdd, 0x00, 0x10, 0x00, 0x00 };
    msgpack_zone zone;
    assert_true(msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE));
    msgpack_object obj;
    size_t off = 0;
    watch_max = 0;
    watch_armed = true;
    (void)msgpack_unpack(hdr, sizeof hdr, &off, &zone, &obj);
    watch_armed = false;
    msgpack_zone_destroy(&zone);
    assert_true(watch_max >= PROTO_TEST_ALLOC_LIMIT);
}

/* ======================================================================== */
/* Encoder edge cases                                                       */
/* ======================================================================== */

/* Too small a buffer yields 0 at every size below the exact need. */
static void test_encode_capacity(void **state)
{
    (void)state;
    static report in;
    unsigned char buf[REPORT_MAX_BYTES], buf2[REPORT_MAX_BYTES];
    fill_full(&in);
    size_t n = report_encode(&in, buf, sizeof buf);
    assert_true(n > 0);
    for (size_t cap = 0; cap < n; cap++)
        assert_int_equal(report_encode(&in, buf2, cap), 0);
    assert_int_equal(report_encode(&in, buf2, n), n);
    assert_memory_equal(buf, buf2, n);
}

/* The encoder refuses structs the decoder would refuse. */
static void test_encode_refuses_invalid(void **state)
{
    (void)state;
    static report in;
    unsigned char buf[REPORT_MAX_BYTES];

    fill_full(&in);
    in.pid = 0;
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    fill_full(&in);
    in.pid = (uint32_t)INT32_MAX + 1;
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    fill_full(&in);
    in.type = (report_type)4;
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    fill_full(&in);
    memset(in.name, 'n', sizeof in.name); /* no NUL */
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    in.has &= ~(uint32_t)REPORT_HAS_NAME;  /* ignored when its bit is clear */
    assert_true(report_encode(&in, buf, sizeof buf) > 0);
    fill_full(&in);
    memset(in.msg, 'm', sizeof in.msg);
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    fill_full(&in);
    in.nmetrics = REPORT_METRICS_MAX + 1;
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    fill_full(&in);
    in.metrics[1].key[0] = '\0';
    assert_int_equal(report_encode(&in, buf, sizeof buf), 0);
    assert_int_equal(report_encode(NULL, buf, sizeof buf), 0);
}

/* Names of errors and types. */
static void test_names(void **state)
{
    (void)state;
    assert_string_equal(report_type_name(REPORT_T_HELLO), "hello");
    assert_string_equal(report_type_name(REPORT_T_REPORT), "report");
    assert_string_equal(report_type_name(REPORT_T_LOG), "log");
    assert_string_equal(report_type_name(REPORT_T_BYE), "bye");
    assert_string_equal(report_type_name((report_type)99), "?");
    for (int e = REPORT_OK; e <= REPORT_E_VERSION; e++) {
        const char *s = report_strerror((report_error)e);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
    }
    assert_string_equal(report_strerror(REPORT_E_TYPE), "wrong type");
    assert_string_equal(report_strerror((report_error)99), "unknown error");
}

/* ======================================================================== */
/* sd_notify text                                                           */
/* ======================================================================== */

/* Parses a C string as a notify datagram. */
static bool notify_str(const char *s, notify_msg *out)
{
    return notify_parse(s, strlen(s), out);
}

static void test_notify_valid(void **state)
{
    (void)state;
    notify_msg n;
    assert_true(notify_str("READY=1", &n));
    assert_true(n.ready);
    assert_false(n.stopping || n.reloading || n.watchdog || n.has_status);

    assert_true(notify_str("READY=1\nSTATUS=Serving 12 clients\nWATCHDOG=1\n", &n));
    assert_true(n.ready && n.watchdog && n.has_status);
    assert_string_equal(n.status, "Serving 12 clients");

    assert_true(notify_str("STOPPING=1\n", &n));
    assert_true(n.stopping);
    assert_true(notify_str("RELOADING=1\nMONOTONIC_USEC=123456", &n));
    assert_true(n.reloading);

    /* Empty lines are ignored; unknown keys and other values are accepted and ignored. */
    assert_true(notify_str("\n\nMAINPID=42\n\nREADY=0\nX_CUSTOM=hello world\n", &n));
    assert_false(n.ready);
    assert_false(n.has_status);

    /* Empty STATUS is a status; UTF-8 is allowed; the last STATUS wins. */
    assert_true(notify_str("STATUS=", &n));
    assert_true(n.has_status);
    assert_string_equal(n.status, "");
    assert_true(notify_str("STATUS=one\nSTATUS=d\xc3\xa9j\xc3\xa0 vu", &n));
    assert_string_equal(n.status, "d\xc3\xa9j\xc3\xa0 vu");

    /* Long STATUS is truncated, never in the middle of a UTF-8 character. */
    char longs[400] = "STATUS=";
    size_t p = strlen(longs);
    for (int i = 0; i < 100; i++) {
        memcpy(longs + p, "\xe2\x82\xac", 3); /* € */
        p += 3;
    }
    longs[p] = '\0';
    assert_true(notify_str(longs, &n));
    assert_int_equal(strlen(n.status), 126); /* 42 whole euros in 127 bytes */
    memset(longs + 7, 'a', 300);
    longs[307] = '\0';
    assert_true(notify_str(longs, &n));
    assert_int_equal(strlen(n.status), NOTIFY_STATUS_MAX - 1);
}

static void test_notify_invalid(void **state)
{
    (void)state;
    notify_msg n;
    static const struct { const char *s; size_t len; } bad[] = {
        { "", 0 },
        { "\n", 1 },
        { "\n\n", 2 },
        { "READY", 5 },
        { "ready=1", 7 },
        { "Ready=1", 7 },
        { "=1", 2 },
        { "READY =1", 8 },
        { "READY=1\nnope", 12 },
        { "READY=1\tx", 9 },
        { "READY=1\r\n", 9 },
        { "READY=1\0", 8 },
        { "STATUS=a\x7f", 9 },
        { "STATUS=\x1b[31m", 12 },
        { "\x84\xa1v\x01", 4 },
        { "\xff\xfe\x00\x01", 4 },
        { "READ\xc3\x89=1", 8 },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&n, 0xa5, sizeof n);
        bool ok = notify_parse(bad[i].s, bad[i].len, &n);
        if (ok)
            print_error("accepted bad notify #%zu\n", i);
        assert_false(ok);
        assert_true(all_zero(&n, sizeof n));
    }
    assert_false(notify_parse(NULL, 0, &n));
}

int main(void)
{
    /* Probe the watch: under valgrind (which replaces malloc, our interposer
     * included) it sees nothing, and the allocation checks are skipped. */
    if (watch_install() == 0) {
        void *(*volatile alloc)(size_t) = malloc;
        watch_max = 0;
        watch_armed = true;
        free(alloc(PROTO_TEST_ALLOC_LIMIT));
        watch_armed = false;
        watch_live = watch_max >= PROTO_TEST_ALLOC_LIMIT;
    }
    if (!watch_live)
        fprintf(stderr, "test_proto: allocation watch unavailable here (valgrind?); "
                        "allocation-size checks skipped\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_full),
        cmocka_unit_test(test_roundtrip_each_bit),
        cmocka_unit_test(test_roundtrip_limits),
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_foreign_encodings),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_size_boundary),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_missing_required),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_string_limits),
        cmocka_unit_test(test_metrics_rules),
        cmocka_unit_test(test_histograms),
        cmocka_unit_test(test_hostile_table),
        cmocka_unit_test(test_hostile_rss),
        cmocka_unit_test(test_watch_catches_msgpack_c),
        cmocka_unit_test(test_encode_capacity),
        cmocka_unit_test(test_encode_refuses_invalid),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_notify_valid),
        cmocka_unit_test(test_notify_invalid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
