/*
 * state.h — the hub's model of every worker (docs/ARCHITECTURE.md, "The state model").
 *
 * One owner: ingest, sampler, supervisor and attach change it only through
 * these functions, on the loop thread. Views read copies (worker_view).
 * Memory per worker is fixed; nothing grows with uptime.
 */
#ifndef DROVER_HUB_STATE_H
#define DROVER_HUB_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto/report.h"
#include "proto/notify.h"

#define STATE_HISTORY 120      /* samples kept per series for sparklines */
#define STATE_GONE_INTERVALS 3 /* a gone worker is shown this many intervals, then dropped */
#define STATE_AGENT_INTERVALS 3 /* `agent` is true if a report came within this many intervals */
#define STATE_DEAD_PIDS 64     /* reaped supervised pids whose late datagrams are ignored */
#define STATE_HUB_CPU_WINDOW 10 /* the hub's own CPU % is averaged over this many samples */

typedef enum {
    WS_STARTING = 0,
    WS_ONLINE,
    WS_STOPPING,
    WS_STOPPED,
    WS_BACKOFF,
    WS_ERRORED,
    WS_GONE,
    WS_N
} worker_state;

#define STATE_TREE_MAX 64      /* processes kept per worker's tree (the worker and its descendants) */

/* One process as read from /proc by the sampler. */
typedef struct {
    pid_t    pid;
    pid_t    ppid;              /* parent pid (descendants of a worker: its parent in the tree) */
    bool     alive;             /* false: no such process (exited) or a zombie */
    uint64_t start_ticks;       /* start time since boot, clock ticks: detects pid reuse */
    uint64_t cpu_ticks;         /* utime + stime (/proc/PID/stat), the fallback */
    uint64_t cpu_ns;            /* CPU time of every thread, ns (the process CPU clock) */
    bool     has_cpu_ns;        /* false: the clock could not be read; use cpu_ticks */
    uint64_t rss_bytes;         /* VmRSS */
    double   elapsed_s;         /* seconds since the process started */
    int64_t  pss_bytes;         /* Pss from smaps_rollup; -1: not read this round (rate-limited) or unreadable */
    uint32_t threads;           /* threads of the process (where to look for its children) */
    char     comm[32];          /* process name */
} proc_sample;

/* One process of a worker's tree as views see it (the worker itself first). */
typedef struct {
    pid_t    pid, ppid;
    uint64_t start_ticks;       /* with pid, the member's identity: a reused pid is a new member */
    double   cpu_pct;           /* % of one core over the last interval; NAN for its first */
    int64_t  rss_bytes;
    int64_t  pss_bytes;         /* -1: never read (not readable, or not yet) */
    char     comm[32];          /* as the kernel gives it: views sanitize before printing */
} tree_member;

/* The host as read from /proc/stat, /proc/meminfo and /proc/loadavg by the sampler. */
typedef struct {
    bool     ok;                /* false: the read failed (every figure unknown) */
    uint64_t cpu_total_ticks;   /* every core, every state, since boot */
    uint64_t cpu_idle_ticks;    /* idle + iowait */
    uint64_t mem_total_bytes;
    uint64_t mem_used_bytes;    /* total - available */
    double   load[3];           /* 1, 5 and 15 minute load averages */
    long     ncpu;              /* online cores */
} host_sample;

/* The host's figures for views (the snapshot's `host` object); unknown: NAN / -1. */
typedef struct {
    double  cpu_pct;            /* all cores busy = 100, over the last interval */
    int64_t mem_total_bytes;
    int64_t mem_used_bytes;
    double  load[3];
    int64_t ncpu;
} host_figures;

/*
 * A sparse histogram the model owns: n buckets (layout of proto/buckets.h),
 * indices rising, counts > 0; storage grows to the buckets used, never past
 * HIST_NBUCKETS.
 */
typedef struct {
    uint32_t  n, cap;
    uint16_t *idx;
    uint64_t *count;
} state_hist;

/*
 * A worker as views see it. Unknown values: integers -1, doubles NAN,
 * strings "" (printers turn them into null).
 */
typedef struct {
    uint32_t key;               /* the model's handle for this worker */
    bool     owned;             /* drover started it (run) or adopted it from a master (attach): its id is drover's */
    uint64_t start_ticks;       /* its process's start time (0: not sampled yet): with pid, its identity */
    char     app[REPORT_NAME_MAX];
    int64_t  id;
    pid_t    pid;               /* 0: no process now (backoff, stopped, errored) */
    worker_state state;
    bool     agent;
    int      agent_v;           /* report protocol version its agent speaks; 0: no report yet */
    int64_t  restarts;
    bool     has_exit;          /* last_status is the waitpid status of the last exit */
    int      last_status;
    double   uptime_s;
    double   cpu_pct;
    int      cpu_decimals;      /* decimals the CPU clock's resolution allows */
    int64_t  rss_bytes;         /* the tree's sum (RSS counts shared pages once per process) */
    int64_t  pss_bytes;         /* the tree's sum of PSS; -1 unless every member's is known */
    int64_t  procs;             /* processes in the tree; -1 when not running */
    uint32_t ntree;             /* members in tree */
    const tree_member *tree;    /* points into the model, like lat_h */
    int64_t  req_total;
    /* Figures of the last completed interval; NAN when no report came in it. */
    double   req_per_s;
    int64_t  err_total;
    int64_t  inflight;
    double   lat_p50_ms, lat_p99_ms, lat_max_ms;
    double   lag_p99_ms, lag_max_ms;
    /* The last interval's samples (NULL: none, or a v1 sender). They point
     * into the model: valid until the next call that changes it. */
    const state_hist *lat_h, *lag_h;
    int      ready;             /* 1, 0, or -1 unknown */
    bool     has_metrics;       /* false: no agent report yet (metrics null) */
    uint32_t nmetrics;
    report_metric metrics[REPORT_METRICS_MAX];
} worker_view;

/* The hub's own health counters (the `hub` headless line). */
typedef struct {
    uint64_t workers;           /* workers not gone */
    uint64_t reports_total;     /* valid datagrams applied (reports, hellos, logs, byes, notify) */
    uint64_t dropped_total;     /* reports missed: sequence gaps + hub queue overflow */
    uint64_t bad_total;         /* datagrams refused by the decoder */
    uint64_t spoofed_total;     /* pid key differs from the kernel's SCM_CREDENTIALS pid */
    double   cpu_pct;           /* the hub process, % of one core over the last cpu_window_s */
    double   cpu_window_s;      /* the window cpu_pct is averaged over (STATE_HUB_CPU_WINDOW samples) */
    int64_t  rss_bytes;         /* the hub process */
    host_figures host;          /* the machine the hub runs on */
} hub_counters;

typedef struct state state;

/* Returns a new empty model, or NULL when out of memory. */
state *state_new(void);

/* Frees the model and every worker in it. NULL is allowed. */
void state_free(state *s);

/* The wire name of a worker state ("online", "gone"…). */
const char *state_name(worker_state ws);

/*
 * Applies one decoded datagram whose pid the kernel has confirmed. Creates the
 * worker on first contact (state online), updates counters, the cumulative
 * histograms, the interval's maxima and sequence-gap counts. Interval
 * figures are computed at the interval's end, by state_tick().
 * now is the hub's monotonic time in seconds.
 */
void state_apply_report(state *s, const report *r, double now);

/* Applies an sd_notify datagram from pid (READY=1 marks the worker ready). */
void state_apply_notify(state *s, pid_t pid, const notify_msg *m, double now);

/* Counts a refused datagram, or a spoofed one. */
void state_count_bad(state *s);
void state_count_spoofed(state *s);

/* Copies into out (capacity cap) the pids the sampler must read; returns how many. */
size_t state_pids(const state *s, pid_t *out, size_t cap);

/*
 * Applies one /proc sample taken at monotonic time now: the worker's process
 * ps and its ndesc descendants desc (NULL when 0): CPU % since the previous
 * sample, RSS and PSS summed over the tree, procs, uptime, process name. The
 * tree's CPU is the sum of each member's own delta, members matched by (pid,
 * start time): one that left takes its ticks with it (the sum never goes
 * down by them), one that joined counts from its start if that was within
 * the interval. A sample that is not alive, or whose start time differs from
 * the first one seen (the pid was reused), marks the worker gone.
 */
void state_apply_sample(state *s, const proc_sample *ps, const proc_sample *desc, size_t ndesc, double now);

/* Records the hub's own /proc sample for the hub counters. */
void state_apply_hub_sample(state *s, const proc_sample *ps, double now);

/*
 * Records the host's sample: memory and load as read, CPU % from the ticks
 * since the previous sample (unknown after the first, or when the read
 * failed).
 */
void state_apply_host_sample(state *s, const host_sample *hs);

/*
 * Ends an interval at monotonic time now. Per worker: computes the interval's
 * figures from what arrived in it — the request rate between the last
 * reports before this boundary and the previous one, the latency and lag
 * quantiles from the difference of the cumulative histograms at the two
 * boundaries (exact however many reports came: 0, 1 or 3), the maxima over
 * every report in it — or NAN for all of them when no report came; pushes
 * one point per series into the history rings; drops workers gone for more
 * than STATE_GONE_INTERVALS intervals of interval_s.
 */
void state_tick(state *s, double now, double interval_s);

/* Number of workers currently in the model (including recently gone ones). */
size_t state_count(const state *s);

/*
 * Fills out (capacity cap) with views of the workers sorted by app, id, pid,
 * as of monotonic time now; returns how many were written.
 */
size_t state_snapshot(const state *s, worker_view *out, size_t cap, double now, double interval_s);

/* Returns the hub counters. */
hub_counters state_counters(const state *s);

/* The history series kept per worker (one point per interval). */
typedef enum { STATE_CPU, STATE_RSS, STATE_RPS, STATE_LAG, STATE_SERIES_N } state_series;

/*
 * Copies the last (up to cap) points of a worker's series into out, oldest
 * first; unknown points are NAN. Returns how many were copied.
 */
size_t state_history(const state *s, uint32_t key, state_series series, double *out, size_t cap);

/* ---- supervised workers (drover run) and attached ones (drover attach) ---- */

/* Called when a worker's current process becomes ready (agent or READY=1). */
typedef void (*state_ready_fn)(void *ctx, uint32_t key, pid_t pid);
void state_set_ready_hook(state *s, state_ready_fn fn, void *ctx);

/*
 * Adds a supervised worker app:id with no process yet (state stopped,
 * restarts 0). Its state, pid and exits are then driven by the supervisor
 * only; /proc samples and agent reports still fill in its figures.
 * Returns its key (never 0), or 0 when out of memory.
 */
uint32_t state_sup_add(state *s, const char *app, int64_t id);

/* A new process pid now runs worker key: state starting, per-process data reset. */
void state_sup_spawned(state *s, uint32_t key, pid_t pid);

/* Sets a supervised worker's state. */
void state_sup_set(state *s, uint32_t key, worker_state ws);

/* Its process exited with waitpid status wstatus; it has no pid now; state ws. */
void state_sup_exited(state *s, uint32_t key, int wstatus, worker_state ws);

/* Sets its restart count. */
void state_sup_restarts(state *s, uint32_t key, int64_t restarts);

/* Removes it from the model. */
void state_sup_remove(state *s, uint32_t key);

/* Readiness of its current process: 1, 0, or -1 (never said). */
int state_sup_ready(const state *s, uint32_t key);

/* Which signals said its current process is ready (bits). */
enum { STATE_READY_AGENT = 1, STATE_READY_NOTIFY = 2 };
unsigned state_sup_ready_by(const state *s, uint32_t key);

/* True if its current process has sent any datagram (agent or sd_notify). */
bool state_sup_spoke(const state *s, uint32_t key);

/* Resident memory of its current process from the last sample, or -1. */
int64_t state_sup_rss(const state *s, uint32_t key);

/*
 * The supervised app name and worker id of the live process pid; returns
 * false if pid is not a supervised worker's current process.
 */
bool state_pid_slot(const state *s, pid_t pid, const char **app, int64_t *id);

/* Readiness of the live process pid: 1, 0, or -1 (never said, or unknown pid). */
int state_pid_ready(const state *s, pid_t pid);

/*
 * The app and id views show for the worker of pid, whoever started it (the
 * supervisor's, else the agent's name and id, else the process name; id -1:
 * none). *app points into the model. Returns false when pid is no worker.
 */
bool state_pid_label(const state *s, pid_t pid, const char **app, int64_t *id);

/*
 * Gives the unsupervised process pid an app name and worker id (drover
 * attach: the children of a master), creating its entry if needed.
 */
void state_identify(state *s, pid_t pid, const char *app, int64_t id);

/*
 * `drover upgrade`, old image: the hub's counters (reports, dropped, bad,
 * spoofed) and each live worker's history rings by pid (new reference).
 */
struct json_t;
struct json_t *state_save(const state *s);

/*
 * `drover upgrade`, new image: adds the saved counters to this model's and
 * gives each row that already exists (the supervisor's adopted workers) its
 * saved history. Returns the number of rows given one. Malformed parts are
 * skipped.
 */
int state_restore(state *s, const struct json_t *saved);

#endif
