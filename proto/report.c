/*
 * report.c — encode and decode the agent report datagram (PROTOCOL.md §1).
 *
 * Encoding uses msgpack-c's header-inline packer writing into the caller's
 * fixed buffer, so the agent never allocates.
 *
 * Decoding treats the bytes as hostile. msgpack-c's unpacker allocates a
 * container's declared size before it checks that the elements exist (5 bytes,
 * `dd 01 00 00 00`, make it ask for 512 MiB), so we first walk the raw bytes
 * with a small non-allocating validator (report_walk) that proves the buffer is
 * exactly one well-formed msgpack object whose every length and count is backed
 * by real bytes, nested no deeper than REPORT_MAX_DEPTH. Only then does
 * msgpack-c build objects; its allocation is then bounded by a small multiple
 * of the input size (≤ 8 KiB in, well under 1 MiB out).
 */
#include "proto/report.h"

#include <limits.h>
#include <msgpack.h>
#include <stdint.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Names                                                                    */
/* ------------------------------------------------------------------------ */

static const char *const report_type_names[] = {
    [REPORT_T_HELLO]  = "hello",
    [REPORT_T_REPORT] = "report",
    [REPORT_T_LOG]    = "log",
    [REPORT_T_BYE]    = "bye",
};
#define REPORT_NTYPES (sizeof report_type_names / sizeof report_type_names[0])

/* Returns a short static description of e; "unknown error" for values outside the enum. */
const char *report_strerror(report_error e)
{
    switch (e) {
    case REPORT_OK:          return "ok";
    case REPORT_E_SIZE:      return "empty or too large";
    case REPORT_E_MALFORMED: return "malformed msgpack";
    case REPORT_E_TRAILING:  return "trailing bytes";
    case REPORT_E_NOT_MAP:   return "not a map";
    case REPORT_E_MISSING:   return "missing required key";
    case REPORT_E_TYPE:      return "wrong type";
    case REPORT_E_VERSION:   return "unsupported version";
    }
    return "unknown error";
}

/* Returns the wire name of t, or "?" for a value outside the enum. */
const char *report_type_name(report_type t)
{
    if ((unsigned)t < REPORT_NTYPES)
        return report_type_names[t];
    return "?";
}

/* ------------------------------------------------------------------------ */
/* Encoder                                                                  */
/* ------------------------------------------------------------------------ */

/* The packer's sink: a fixed buffer that latches an overflow instead of growing. */
typedef struct {
    char  *buf;
    size_t cap;
    size_t len;
    bool   overflow;
} report_sink;

/*
 * msgpack_packer write callback: appends len bytes to the sink. Returns 0, or
 * -1 (and latches overflow) when they do not fit; nothing is written then.
 */
static int report_sink_write(void *data, const char *p, size_t len)
{
    report_sink *s = data;
    if (s->overflow || len > s->cap - s->len) {
        s->overflow = true;
        return -1;
    }
    if (len)
        memcpy(s->buf + s->len, p, len);
    s->len += len;
    return 0;
}

/* Packs a key name (a C string literal). Errors are latched in the sink. */
static void report_pack_key(msgpack_packer *pk, const char *k)
{
    size_t n = strlen(k);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, k, n);
}

/* Packs key k with an unsigned integer value in its shortest encoding. */
static void report_pack_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    report_pack_key(pk, k);
    msgpack_pack_uint64(pk, v);
}

/* Packs key k with the string s of n bytes. */
static void report_pack_kv_str(msgpack_packer *pk, const char *k, const char *s, size_t n)
{
    report_pack_key(pk, k);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/*
 * Returns the length of the NUL-terminated string in field[0..cap), or
 * SIZE_MAX when the field holds no NUL (the struct is corrupt).
 */
static size_t report_field_len(const char *field, size_t cap)
{
    size_t n = strnlen(field, cap);
    return n < cap ? n : SIZE_MAX;
}

/*
 * True when h is a valid sparse histogram for the wire: n <= REPORT_HIST_MAX,
 * indices strictly rising and below HIST_NBUCKETS, every count at least 1.
 */
static bool report_hist_ok(const report_hist *h)
{
    if (h->n > REPORT_HIST_MAX)
        return false;
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->idx[i] >= HIST_NBUCKETS || h->count[i] == 0)
            return false;
        if (i > 0 && h->idx[i] <= h->idx[i - 1])
            return false;
    }
    return true;
}

/*
 * Packs key k with the histogram h as an array of (skip, count) pairs: the
 * bucket index of each pair is the previous pair's index + 1 + skip (the
 * first pair's previous index is -1), so runs of buckets cost one byte each
 * for the skip. h is valid (report_hist_ok).
 */
static void report_pack_kv_hist(msgpack_packer *pk, const char *k, const report_hist *h)
{
    report_pack_key(pk, k);
    msgpack_pack_array(pk, 2 * (size_t)h->n);
    int prev = -1;
    for (uint32_t i = 0; i < h->n; i++) {
        msgpack_pack_uint64(pk, (uint64_t)(h->idx[i] - prev - 1));
        msgpack_pack_uint64(pk, h->count[i]);
        prev = h->idx[i];
    }
}

/*
 * Encodes r into buf (capacity cap). Returns the byte count, or 0 when the
 * datagram would not fit in cap (or in REPORT_MAX_BYTES), or when r could not
 * be decoded by report_decode() — unknown type, pid outside 1..INT32_MAX, a
 * string field without its NUL, more than REPORT_METRICS_MAX metrics, an empty
 * metric name, a histogram that is not sparse — so an agent never sends what
 * the hub would count as bad.
 */
size_t report_encode(const report *r, void *buf, size_t cap)
{
    if (!r || !buf)
        return 0;
    if ((unsigned)r->type >= REPORT_NTYPES || r->pid == 0 || r->pid > INT32_MAX)
        return 0;

    size_t name_len = 0, lvl_len = 0, msg_len = 0;
    if (r->has & REPORT_HAS_NAME) {
        name_len = report_field_len(r->name, sizeof r->name);
        if (name_len == SIZE_MAX)
            return 0;
    }
    if (r->has & REPORT_HAS_LOG) {
        lvl_len = report_field_len(r->lvl, sizeof r->lvl);
        msg_len = report_field_len(r->msg, sizeof r->msg);
        if (lvl_len == SIZE_MAX || msg_len == SIZE_MAX)
            return 0;
    }
    if (r->has & REPORT_HAS_METRICS) {
        if (r->nmetrics > REPORT_METRICS_MAX)
            return 0;
        for (uint32_t i = 0; i < r->nmetrics; i++) {
            size_t n = report_field_len(r->metrics[i].key, sizeof r->metrics[i].key);
            if (n == 0 || n == SIZE_MAX)
                return 0;
        }
    }

    if ((r->has & REPORT_HAS_LAT_H) && !report_hist_ok(&r->lat_h))
        return 0;
    if ((r->has & REPORT_HAS_LAG_H) && !report_hist_ok(&r->lag_h))
        return 0;

    /* Count the map's pairs first: a msgpack map header carries its size. */
    static const struct { uint32_t bit; unsigned pairs; } counts[] = {
        { REPORT_HAS_TS, 1 },       { REPORT_HAS_NAME, 1 },    { REPORT_HAS_WID, 1 },
        { REPORT_HAS_CPU, 1 },      { REPORT_HAS_RSS, 1 },     { REPORT_HAS_REQ, 1 },
        { REPORT_HAS_ERR, 1 },      { REPORT_HAS_INFLIGHT, 1 },{ REPORT_HAS_LAT, 2 },
        { REPORT_HAS_LAG, 2 },      { REPORT_HAS_READY, 1 },   { REPORT_HAS_DROPS, 1 },
        { REPORT_HAS_METRICS, 1 },  { REPORT_HAS_LOG, 2 },     { REPORT_HAS_LAT_MAX, 1 },
        { REPORT_HAS_LAG_MAX, 1 },  { REPORT_HAS_LAT_H, 1 },   { REPORT_HAS_LAG_H, 1 },
    };
    size_t npairs = 4; /* v, t, pid, seq */
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (r->has & counts[i].bit)
            npairs += counts[i].pairs;

    report_sink sink = { .buf = buf, .cap = cap < REPORT_MAX_BYTES ? cap : REPORT_MAX_BYTES };
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sink, report_sink_write);

    /* Return values are ignored below: the sink latches the first overflow. */
    msgpack_pack_map(&pk, npairs);
    report_pack_kv_u64(&pk, "v", REPORT_VERSION);
    const char *tn = report_type_names[r->type];
    report_pack_kv_str(&pk, "t", tn, strlen(tn));
    report_pack_kv_u64(&pk, "pid", r->pid);
    report_pack_kv_u64(&pk, "seq", r->seq);

    uint32_t h = r->has;
    if (h & REPORT_HAS_TS)       report_pack_kv_u64(&pk, "ts", r->ts);
    if (h & REPORT_HAS_NAME)     report_pack_kv_str(&pk, "name", r->name, name_len);
    if (h & REPORT_HAS_WID)      report_pack_kv_u64(&pk, "wid", r->wid);
    if (h & REPORT_HAS_CPU)      report_pack_kv_u64(&pk, "cpu_us", r->cpu_us);
    if (h & REPORT_HAS_RSS)      report_pack_kv_u64(&pk, "rss", r->rss);
    if (h & REPORT_HAS_REQ)      report_pack_kv_u64(&pk, "req", r->req);
    if (h & REPORT_HAS_ERR)      report_pack_kv_u64(&pk, "err", r->err);
    if (h & REPORT_HAS_INFLIGHT) report_pack_kv_u64(&pk, "inflight", r->inflight);
    if (h & REPORT_HAS_LAT) {
        report_pack_kv_u64(&pk, "lat_p50", r->lat_p50);
        report_pack_kv_u64(&pk, "lat_p99", r->lat_p99);
    }
    if (h & REPORT_HAS_LAT_MAX)  report_pack_kv_u64(&pk, "lat_max", r->lat_max);
    if (h & REPORT_HAS_LAT_H)    report_pack_kv_hist(&pk, "lat_h", &r->lat_h);
    if (h & REPORT_HAS_LAG) {
        report_pack_kv_u64(&pk, "lag_mean", r->lag_mean);
        report_pack_kv_u64(&pk, "lag_p99", r->lag_p99);
    }
    if (h & REPORT_HAS_LAG_MAX)  report_pack_kv_u64(&pk, "lag_max", r->lag_max);
    if (h & REPORT_HAS_LAG_H)    report_pack_kv_hist(&pk, "lag_h", &r->lag_h);
    if (h & REPORT_HAS_READY) {
        report_pack_key(&pk, "ready");
        if (r->ready)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    if (h & REPORT_HAS_DROPS)    report_pack_kv_u64(&pk, "drops", r->drops);
    if (h & REPORT_HAS_METRICS) {
        report_pack_key(&pk, "m");
        msgpack_pack_map(&pk, r->nmetrics);
        for (uint32_t i = 0; i < r->nmetrics; i++) {
            const char *k = r->metrics[i].key;
            size_t n = strlen(k); /* bounded: checked above */
            msgpack_pack_str(&pk, n);
            msgpack_pack_str_body(&pk, k, n);
            /* Always float64: exact for every double (incl. -0.0 and NaN bits). */
            msgpack_pack_double(&pk, r->metrics[i].value);
        }
    }
    if (h & REPORT_HAS_LOG) {
        report_pack_kv_str(&pk, "lvl", r->lvl, lvl_len);
        report_pack_kv_str(&pk, "msg", r->msg, msg_len);
    }

    return sink.overflow ? 0 : sink.len;
}

/* ------------------------------------------------------------------------ */
/* Decoder, step 1: the raw-byte walker                                     */
/* ------------------------------------------------------------------------ */

/* Reads a big-endian unsigned integer of n (1, 2 or 4) bytes at p. */
static uint32_t report_be(const unsigned char *p, unsigned n)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/*
 * Validates that buf[0..len) is exactly one msgpack object without building
 * anything. Every str/bin/ext payload must lie inside the buffer, every
 * array/map count must be backed by at least one byte per element (two per
 * map pair) of what is left, and containers may nest at most REPORT_MAX_DEPTH
 * deep (the top-level map counts as 1). Iterative, O(len), no allocation.
 * Returns REPORT_OK, REPORT_E_MALFORMED or REPORT_E_TRAILING.
 */
static report_error report_walk(const unsigned char *buf, size_t len)
{
    /* Elements still expected by each open container (a map pair counts 2). */
    uint64_t pending[REPORT_MAX_DEPTH];
    unsigned depth = 0;
    size_t pos = 0;

    for (;;) {
        if (pos >= len)
            return REPORT_E_MALFORMED; /* truncated: an element is missing */

        unsigned char b = buf[pos++];
        size_t left = len - pos;
        size_t skip = 0;         /* fixed or length-prefixed payload after the header */
        uint64_t children = 0;   /* elements of a container */
        bool container = false;

        if (b <= 0x7f || b >= 0xe0) {
            /* positive / negative fixint: header only */
        } else if (b <= 0x8f) {
            container = true;
            children = 2u * (b & 0x0f);
        } else if (b <= 0x9f) {
            container = true;
            children = b & 0x0f;
        } else if (b <= 0xbf) {
            skip = b & 0x1f;
        } else {
            /* Header sizes for 0xc0..0xdf: width of the length field (lw) or fixed payload. */
            unsigned lw = 0;
            switch (b) {
            case 0xc0: case 0xc2: case 0xc3: break;                 /* nil, false, true */
            case 0xc1: return REPORT_E_MALFORMED;                    /* never used */
            case 0xc4: case 0xd9: lw = 1; break;                     /* bin8, str8 */
            case 0xc5: case 0xda: lw = 2; break;                     /* bin16, str16 */
            case 0xc6: case 0xdb: lw = 4; break;                     /* bin32, str32 */
            case 0xc7: lw = 1; skip = 1; break;                      /* ext8: len, type */
            case 0xc8: lw = 2; skip = 1; break;                      /* ext16 */
            case 0xc9: lw = 4; skip = 1; break;                      /* ext32 */
            case 0xca: skip = 4; break;                              /* float32 */
            case 0xcb: skip = 8; break;                              /* float64 */
            case 0xcc: case 0xd0: skip = 1; break;                   /* (u)int8 */
            case 0xcd: case 0xd1: skip = 2; break;                   /* (u)int16 */
            case 0xce: case 0xd2: skip = 4; break;                   /* (u)int32 */
            case 0xcf: case 0xd3: skip = 8; break;                   /* (u)int64 */
            case 0xd4: skip = 2; break;                              /* fixext1: type+1 */
            case 0xd5: skip = 3; break;                              /* fixext2 */
            case 0xd6: skip = 5; break;                              /* fixext4 */
            case 0xd7: skip = 9; break;                              /* fixext8 */
            case 0xd8: skip = 17; break;                             /* fixext16 */
            case 0xdc: lw = 2; container = true; break;              /* array16 */
            case 0xdd: lw = 4; container = true; break;              /* array32 */
            case 0xde: lw = 2; container = true; break;              /* map16 */
            case 0xdf: lw = 4; container = true; break;              /* map32 */
            default:   return REPORT_E_MALFORMED;                    /* unreachable */
            }
            if (lw) {
                if (left < lw)
                    return REPORT_E_MALFORMED;
                uint64_t n = report_be(buf + pos, lw);
                pos += lw;
                left -= lw;
                if (container)
                    children = (b == 0xde || b == 0xdf) ? 2 * n : n;
                else
                    skip += n; /* ext: the type byte plus n data bytes */
            }
        }

        if (skip > left)
            return REPORT_E_MALFORMED;
        pos += skip;

        if (container) {
            /* Each element takes at least one byte: refuse counts the bytes cannot back. */
            if (children > len - pos)
                return REPORT_E_MALFORMED;
            if (depth == REPORT_MAX_DEPTH)
                return REPORT_E_MALFORMED;
            if (depth > 0)
                pending[depth - 1]--;  /* the container itself is an element of its parent */
            if (children > 0) {
                pending[depth++] = children;
                continue;
            }
        } else if (depth > 0) {
            pending[depth - 1]--;
        }

        /* Close every container whose elements are all seen. */
        while (depth > 0 && pending[depth - 1] == 0)
            depth--;
        if (depth == 0)
            return pos == len ? REPORT_OK : REPORT_E_TRAILING;
    }
}

/* ------------------------------------------------------------------------ */
/* Decoder, step 2: msgpack objects → struct                                */
/* ------------------------------------------------------------------------ */

/* True when the msgpack string o equals the C string lit. */
static bool report_str_is(const msgpack_object *o, const char *lit)
{
    size_t n = strlen(lit);
    return o->via.str.size == n && memcmp(o->via.str.ptr, lit, n) == 0;
}

/* Stores a non-negative integer value in *dst. Returns REPORT_E_TYPE for any other type. */
static report_error report_get_u64(const msgpack_object *o, uint64_t *dst)
{
    /* msgpack-c types non-negative values as POSITIVE_INTEGER whatever their
     * encoding (e.g. int8 0x05), so producers with signed encoders still pass. */
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return REPORT_E_TYPE;
    *dst = o->via.u64;
    return REPORT_OK;
}

/*
 * Copies the string o into dst (capacity cap, incl. NUL). Returns
 * REPORT_E_TYPE when o is not a string, does not fit with its NUL, or holds a
 * NUL byte (it would silently truncate the field).
 */
static report_error report_get_str(const msgpack_object *o, char *dst, size_t cap)
{
    if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= cap)
        return REPORT_E_TYPE;
    if (o->via.str.size && memchr(o->via.str.ptr, '\0', o->via.str.size))
        return REPORT_E_TYPE;
    if (o->via.str.size)
        memcpy(dst, o->via.str.ptr, o->via.str.size);
    /* Clear the whole tail, not just one NUL: a repeated key must not leave
     * bytes of an earlier, longer value behind (structs compare bytewise). */
    memset(dst + o->via.str.size, 0, cap - o->via.str.size);
    return REPORT_OK;
}

/*
 * Fills out->metrics from the `m` map. Keys: strings of 1..REPORT_METRIC_KEY_MAX-1
 * bytes without NUL; values: any msgpack number, converted to double. A key
 * repeated inside the map keeps its last value. More than REPORT_METRICS_MAX
 * pairs is a type error.
 */
static report_error report_get_metrics(const msgpack_object *o, report *out)
{
    if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size > REPORT_METRICS_MAX)
        return REPORT_E_TYPE;
    out->nmetrics = 0;
    memset(out->metrics, 0, sizeof out->metrics);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object *k = &o->via.map.ptr[i].key;
        const msgpack_object *v = &o->via.map.ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0)
            return REPORT_E_TYPE;
        char key[REPORT_METRIC_KEY_MAX];
        report_error e = report_get_str(k, key, sizeof key);
        if (e)
            return e;

        double d;
        switch (v->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER: d = (double)v->via.u64; break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER: d = (double)v->via.i64; break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:          d = v->via.f64; break;
        default:                              return REPORT_E_TYPE;
        }

        uint32_t j = 0;
        while (j < out->nmetrics && strcmp(out->metrics[j].key, key) != 0)
            j++;
        if (j == out->nmetrics) {
            memcpy(out->metrics[j].key, key, sizeof key);
            out->nmetrics++;
        }
        out->metrics[j].value = d;
    }
    return REPORT_OK;
}

/*
 * Fills *h from a `lat_h`/`lag_h` array of (skip, count) pairs (PROTOCOL.md
 * §1.3). Every integer is checked before it is narrowed or added: an even
 * number of uints, at most REPORT_HIST_MAX pairs, each skip small enough that
 * the index stays below HIST_NBUCKETS, each count at least 1. Anything else
 * is REPORT_E_TYPE.
 */
static report_error report_get_hist(const msgpack_object *o, report_hist *h)
{
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size % 2 != 0 ||
        o->via.array.size / 2 > REPORT_HIST_MAX)
        return REPORT_E_TYPE;
    memset(h, 0, sizeof *h);            /* a repeated key leaves nothing of the earlier value */
    uint32_t n = o->via.array.size / 2;
    uint64_t next = 0;                  /* lowest index the next pair may name */
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *sk = &o->via.array.ptr[2 * i];
        const msgpack_object *ct = &o->via.array.ptr[2 * i + 1];
        if (sk->type != MSGPACK_OBJECT_POSITIVE_INTEGER || ct->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return REPORT_E_TYPE;
        if (sk->via.u64 >= HIST_NBUCKETS - next || ct->via.u64 == 0)
            return REPORT_E_TYPE;
        uint64_t idx = next + sk->via.u64;  /* < HIST_NBUCKETS: checked above */
        h->idx[i] = (uint16_t)idx;
        h->count[i] = ct->via.u64;
        next = idx + 1;
    }
    h->n = n;
    return REPORT_OK;
}

/* Which required keys were seen (bits for the decode's bookkeeping only). */
enum { REPORT_REQ_T = 1, REPORT_REQ_PID = 2, REPORT_REQ_SEQ = 4 };

/*
 * Applies one key/value pair (other than `v`) to out. Unknown keys are
 * ignored whatever their value. *req collects the required keys seen.
 */
static report_error report_apply(const msgpack_object *k, const msgpack_object *v,
                                 report *out, unsigned *req)
{
    /* uint keys: name, field, presence bit (0 for required ones). */
    static const struct {
        const char *name;
        size_t      off;
        uint32_t    bit;
    } u64keys[] = {
        { "seq",      offsetof(report, seq),      0 },
        { "ts",       offsetof(report, ts),       REPORT_HAS_TS },
        { "wid",      offsetof(report, wid),      REPORT_HAS_WID },
        { "cpu_us",   offsetof(report, cpu_us),   REPORT_HAS_CPU },
        { "rss",      offsetof(report, rss),      REPORT_HAS_RSS },
        { "req",      offsetof(report, req),      REPORT_HAS_REQ },
        { "err",      offsetof(report, err),      REPORT_HAS_ERR },
        { "inflight", offsetof(report, inflight), REPORT_HAS_INFLIGHT },
        { "lat_p50",  offsetof(report, lat_p50),  REPORT_HAS_LAT },
        { "lat_p99",  offsetof(report, lat_p99),  REPORT_HAS_LAT },
        { "lat_max",  offsetof(report, lat_max),  REPORT_HAS_LAT_MAX },
        { "lag_mean", offsetof(report, lag_mean), REPORT_HAS_LAG },
        { "lag_p99",  offsetof(report, lag_p99),  REPORT_HAS_LAG },
        { "lag_max",  offsetof(report, lag_max),  REPORT_HAS_LAG_MAX },
        { "drops",    offsetof(report, drops),    REPORT_HAS_DROPS },
    };
    report_error e;

    for (size_t i = 0; i < sizeof u64keys / sizeof u64keys[0]; i++) {
        if (!report_str_is(k, u64keys[i].name))
            continue;
        uint64_t val;
        if ((e = report_get_u64(v, &val)))
            return e;
        memcpy((char *)out + u64keys[i].off, &val, sizeof val);
        out->has |= u64keys[i].bit;
        if (u64keys[i].bit == 0)
            *req |= REPORT_REQ_SEQ;
        return REPORT_OK;
    }

    if (report_str_is(k, "t")) {
        if (v->type != MSGPACK_OBJECT_STR)
            return REPORT_E_TYPE;
        for (unsigned i = 0; i < REPORT_NTYPES; i++) {
            if (report_str_is(v, report_type_names[i])) {
                out->type = (report_type)i;
                *req |= REPORT_REQ_T;
                return REPORT_OK;
            }
        }
        return REPORT_E_TYPE;
    }
    if (report_str_is(k, "pid")) {
        uint64_t pid;
        if ((e = report_get_u64(v, &pid)))
            return e;
        if (pid == 0 || pid > INT32_MAX)
            return REPORT_E_TYPE;
        out->pid = (uint32_t)pid;
        *req |= REPORT_REQ_PID;
        return REPORT_OK;
    }
    if (report_str_is(k, "name")) {
        if ((e = report_get_str(v, out->name, sizeof out->name)))
            return e;
        out->has |= REPORT_HAS_NAME;
        return REPORT_OK;
    }
    if (report_str_is(k, "ready")) {
        if (v->type != MSGPACK_OBJECT_BOOLEAN)
            return REPORT_E_TYPE;
        out->ready = v->via.boolean;
        out->has |= REPORT_HAS_READY;
        return REPORT_OK;
    }
    if (report_str_is(k, "m")) {
        if ((e = report_get_metrics(v, out)))
            return e;
        out->has |= REPORT_HAS_METRICS;
        return REPORT_OK;
    }
    /* Histograms exist from v2 on; in a v1 datagram they are unknown keys. */
    if (out->v >= 2 && (report_str_is(k, "lat_h") || report_str_is(k, "lag_h"))) {
        bool lat = report_str_is(k, "lat_h");
        if ((e = report_get_hist(v, lat ? &out->lat_h : &out->lag_h)))
            return e;
        out->has |= lat ? REPORT_HAS_LAT_H : REPORT_HAS_LAG_H;
        return REPORT_OK;
    }
    if (report_str_is(k, "lvl")) {
        if ((e = report_get_str(v, out->lvl, sizeof out->lvl)))
            return e;
        out->has |= REPORT_HAS_LOG;
        return REPORT_OK;
    }
    if (report_str_is(k, "msg")) {
        if ((e = report_get_str(v, out->msg, sizeof out->msg)))
            return e;
        out->has |= REPORT_HAS_LOG;
        return REPORT_OK;
    }
    return REPORT_OK; /* unknown key: forward compatible */
}

/*
 * Maps a validated top-level msgpack object into out (already zeroed).
 * `v` is checked before anything else, because a future version may change
 * what the other keys mean: a v=3 datagram is a version error, not a type
 * error on whichever key changed.
 */
static report_error report_from_object(const msgpack_object *root, report *out)
{
    if (root->type != MSGPACK_OBJECT_MAP)
        return REPORT_E_NOT_MAP;
    const msgpack_object_map *m = &root->via.map;

    const msgpack_object *ver = NULL;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return REPORT_E_TYPE; /* our protocol has string keys only */
        if (report_str_is(k, "v"))
            ver = &m->ptr[i].val; /* last wins, as for every key */
    }
    if (!ver)
        return REPORT_E_MISSING;
    if (ver->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return REPORT_E_TYPE;
    if (ver->via.u64 < REPORT_VERSION_MIN || ver->via.u64 > REPORT_VERSION)
        return REPORT_E_VERSION;
    out->v = (uint32_t)ver->via.u64;   /* in 1..REPORT_VERSION: checked above */

    unsigned req = 0;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key;
        if (report_str_is(k, "v"))
            continue;
        report_error e = report_apply(k, &m->ptr[i].val, out, &req);
        if (e)
            return e;
    }
    if (req != (REPORT_REQ_T | REPORT_REQ_PID | REPORT_REQ_SEQ))
        return REPORT_E_MISSING;
    return REPORT_OK;
}

/*
 * Decodes len bytes at buf into *out; see report.h. On success *out holds
 * exactly the keys present (fields of absent keys are zero); on error *out is
 * all zero. Never allocates more than a small multiple of len.
 */
report_error report_decode(const void *buf, size_t len, report *out)
{
    memset(out, 0, sizeof *out);
    if (!buf || len == 0 || len > REPORT_MAX_BYTES)
        return REPORT_E_SIZE;

    report_error e = report_walk(buf, len);
    if (e)
        return e;

    /* The walk proved every count is backed by bytes, so msgpack-c's
     * allocations are now bounded by the input size. Strings and the like are
     * referenced in buf, not copied, so buf must outlive the objects (it does:
     * they die with the zone below). */
    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, MSGPACK_ZONE_CHUNK_SIZE))
        return REPORT_E_MALFORMED; /* out of memory: drop, as the datagram cannot be judged */

    msgpack_object root;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack(buf, len, &off, &zone, &root);
    if (ur != MSGPACK_UNPACK_SUCCESS || off != len)
        e = (ur == MSGPACK_UNPACK_EXTRA_BYTES) ? REPORT_E_TRAILING : REPORT_E_MALFORMED;
    else
        e = report_from_object(&root, out);

    msgpack_zone_destroy(&zone);
    if (e)
        memset(out, 0, sizeof *out);
    return e;
}
