/*
 * report.h — the agent report datagram (PROTOCOL.md §1), shared by both ends.
 *
 * One struct describes a datagram. The agent fills it and calls report_encode();
 * the hub calls report_decode() on untrusted bytes and gets either a fully valid
 * struct or an error code, never a half-applied one.
 */
#ifndef DROVER_PROTO_REPORT_H
#define DROVER_PROTO_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/buckets.h"

#define REPORT_VERSION      2     /* what report_encode() writes */
#define REPORT_VERSION_MIN  1     /* the oldest version report_decode() accepts */
#define REPORT_HIST_MAX     HIST_NBUCKETS /* non-zero buckets per histogram on the wire */
#define REPORT_MAX_BYTES    8192  /* largest datagram either end accepts */
#define REPORT_NAME_MAX     64    /* app name incl. NUL */
#define REPORT_LVL_MAX      16    /* log level incl. NUL */
#define REPORT_MSG_MAX      4096  /* one log line incl. NUL */
#define REPORT_METRIC_KEY_MAX 48  /* custom metric name incl. NUL */
#define REPORT_METRICS_MAX  32    /* custom metrics per datagram */
#define REPORT_MAX_DEPTH    8     /* nesting limit for values, incl. unknown keys */

typedef enum {
    REPORT_T_HELLO = 0,
    REPORT_T_REPORT,
    REPORT_T_LOG,
    REPORT_T_BYE,
} report_type;

/* Presence bits for optional keys (report.has). */
enum {
    REPORT_HAS_TS       = 1u << 0,
    REPORT_HAS_NAME     = 1u << 1,
    REPORT_HAS_WID      = 1u << 2,
    REPORT_HAS_CPU      = 1u << 3,
    REPORT_HAS_RSS      = 1u << 4,
    REPORT_HAS_REQ      = 1u << 5,
    REPORT_HAS_ERR      = 1u << 6,
    REPORT_HAS_INFLIGHT = 1u << 7,
    REPORT_HAS_LAT      = 1u << 8,   /* lat_p50, lat_p99 (either; v1 senders) */
    REPORT_HAS_LAG      = 1u << 9,   /* lag_mean, lag_p99 (either; v1 senders) */
    REPORT_HAS_READY    = 1u << 10,
    REPORT_HAS_DROPS    = 1u << 11,
    REPORT_HAS_METRICS  = 1u << 12,
    REPORT_HAS_LOG      = 1u << 13,  /* lvl and/or msg */
    REPORT_HAS_LAT_MAX  = 1u << 14,  /* lat_max */
    REPORT_HAS_LAG_MAX  = 1u << 15,  /* lag_max */
    REPORT_HAS_LAT_H    = 1u << 16,  /* lat_h (v2) */
    REPORT_HAS_LAG_H    = 1u << 17,  /* lag_h (v2) */
};

/*
 * A cumulative histogram on the wire (`lat_h`, `lag_h`; layout in
 * proto/buckets.h): the n non-zero buckets, indices strictly rising and
 * below HIST_NBUCKETS, each count at least 1.
 */
typedef struct {
    uint32_t n;
    uint16_t idx[REPORT_HIST_MAX];
    uint64_t count[REPORT_HIST_MAX];
} report_hist;

typedef struct {
    char   key[REPORT_METRIC_KEY_MAX];
    double value;
} report_metric;

typedef struct {
    uint32_t    has;        /* REPORT_HAS_* bits for the optional keys below */
    uint32_t    v;          /* version decoded (report_encode() always writes REPORT_VERSION) */
    report_type type;
    uint32_t    pid;
    uint64_t    seq;
    uint64_t    ts;         /* ms since the epoch */
    char        name[REPORT_NAME_MAX];
    uint64_t    wid;
    uint64_t    cpu_us;
    uint64_t    rss;        /* bytes */
    uint64_t    req, err, inflight;
    uint64_t    lat_p50, lat_p99, lat_max;    /* µs; p50/p99 from v1 senders only */
    uint64_t    lag_mean, lag_p99, lag_max;   /* µs; mean/p99 from v1 senders only */
    report_hist lat_h, lag_h;                 /* cumulative since the agent started (v2) */
    bool        ready;
    uint64_t    drops;
    uint32_t    nmetrics;
    report_metric metrics[REPORT_METRICS_MAX];
    char        lvl[REPORT_LVL_MAX];
    char        msg[REPORT_MSG_MAX];
} report;

/* Why report_decode() refused a datagram. */
typedef enum {
    REPORT_OK = 0,
    REPORT_E_SIZE,        /* empty or larger than REPORT_MAX_BYTES */
    REPORT_E_MALFORMED,   /* not valid msgpack, truncated, too deep, or a count past the end */
    REPORT_E_TRAILING,    /* bytes after the top-level object */
    REPORT_E_NOT_MAP,     /* top level is not a map */
    REPORT_E_MISSING,     /* a required key (v, t, pid, seq) is absent */
    REPORT_E_TYPE,        /* a known key carries the wrong type or an out-of-range value */
    REPORT_E_VERSION,     /* v is not in REPORT_VERSION_MIN..REPORT_VERSION */
} report_error;

/* Returns a short static description of an error code, e.g. "wrong type". */
const char *report_strerror(report_error e);

/* Returns the wire name of a type ("hello", "report", "log", "bye"). */
const char *report_type_name(report_type t);

/*
 * Encodes r as one msgpack map into buf (capacity cap) without allocating.
 * Only keys whose presence bit is set in r->has are written (v, t, pid, seq always).
 * Returns the number of bytes written, or 0 if it would not fit in cap (or in
 * REPORT_MAX_BYTES), or if report_decode() would refuse the result: type not a
 * report_type, pid outside 1..INT32_MAX, a present string field without its
 * NUL, nmetrics > REPORT_METRICS_MAX, or an empty metric name.
 */
size_t report_encode(const report *r, void *buf, size_t cap);

/*
 * Decodes one datagram of len bytes into *out after validating all of it:
 * size ≤ REPORT_MAX_BYTES, a single top-level map with no trailing bytes,
 * every container count bounded by the bytes left before anything is
 * allocated, nesting ≤ REPORT_MAX_DEPTH, required keys present, known keys of
 * the right type. `v` may be REPORT_VERSION_MIN..REPORT_VERSION (out->v
 * says which); `lat_h`/`lag_h` are read from v2 on and skipped as unknown
 * keys of a v1 datagram. Unknown keys are skipped. Strings longer than their field
 * or holding a NUL byte are a type error, as are more than REPORT_METRICS_MAX
 * metrics.
 * On any error *out is all zero and the caller must drop the datagram.
 * Returns REPORT_OK on success. Strings in *out are copied, not referenced.
 */
report_error report_decode(const void *buf, size_t len, report *out);

#endif
