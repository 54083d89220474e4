/*
 * worker.c — a simulated worker for trying drover: a libuv event loop that
 * "handles" requests at a steady rate, each completing after a random
 * latency, with some errors and, on demand, stalls that create event-loop lag.
 * Everything it does is reported by the linked drover agent.
 *
 *     DROVER_SOCKET=/run/user/1000/drover/default/agent.sock ./worker --rate 200
 *
 * Prints one banner line on stderr at start and nothing else; exits 0 on
 * SIGTERM/SIGINT or after --duration, 2 on a usage error, 1 if the loop
 * cannot be set up.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "agent/drover.h"
#include "agent/drover_uv.h"

#define WORKER_TICK_MS        5      /* request generator period */
#define WORKER_READY_AFTER_MS 200    /* simulated startup time */
#define WORKER_METRICS_MS     250    /* custom metric refresh period */
#define WORKER_POOL_MAX       1000000

/* Command-line options. */
static struct {
    double      rate;          /* requests per second */
    double      latency_ms;    /* mean simulated latency */
    double      error_rate;    /* 0..1 */
    double      block_ms;      /* busy-loop length, 0 = off */
    double      block_every_s; /* busy-loop period */
    double      duration_s;    /* 0 = forever */
    const char *name;
} opt = { 50, 20, 0.01, 0, 5, 0, NULL };

/* One simulated request: in flight while its timer runs. */
typedef struct {
    uv_timer_t timer;
    uint64_t   start_us;
    bool       open;           /* timer handle initialised (needs uv_close) */
} worker_req;

static uv_loop_t  *loop;
static worker_req *pool;
static unsigned   *free_list;  /* indices of idle pool entries */
static unsigned    pool_size, nfree;
static uint64_t    started, t0_ns;
static uint64_t    rng_state;
static double      cache_hit = 0.9;
static bool        shutting_down;

static uv_timer_t  tick_timer, ready_timer, metrics_timer, block_timer, duration_timer, lag_timer;
static uv_signal_t sigterm_h, sigint_h;

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/* Prints the usage text to f. */
static void worker_usage(FILE *f)
{
    fputs("usage: worker [options]\n"
          "  --rate N          requests per second (default 50)\n"
          "  --latency MS      mean simulated latency, each request ±50 % (default 20)\n"
          "  --error-rate F    fraction of requests that fail, 0..1 (default 0.01)\n"
          "  --block MS        busy-loop the event loop for MS ms (default off)\n"
          "  --block-every S   ... every S seconds (default 5)\n"
          "  --duration S      exit after S seconds (default: run until SIGTERM/SIGINT)\n"
          "  --name NAME       app name reported to drover (sets DROVER_NAME)\n"
          "  --help            this text\n"
          "The drover agent reads DROVER_SOCKET, DROVER_WORKER_ID, DROVER_INTERVAL_MS.\n",
          f);
}

/* Reports a usage error on one line and exits 2. */
static void worker_usage_error(const char *what, const char *arg)
{
    fprintf(stderr, "worker: %s: '%s' (see --help)\n", what, arg);
    exit(2);
}

/* Parses a finite number in [lo, hi] for option name, or exits 2. */
static double worker_parse_num(const char *name, const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < lo || v > hi) {
        char what[96];
        snprintf(what, sizeof what, "--%s expects a number from %g to %g", name, lo, hi);
        worker_usage_error(what, s);
    }
    return v;
}

/* Parses argv into opt; exits 0 after --help and 2 on a usage error. */
static void worker_parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "rate",        required_argument, NULL, 'r' },
        { "latency",     required_argument, NULL, 'l' },
        { "error-rate",  required_argument, NULL, 'e' },
        { "block",       required_argument, NULL, 'b' },
        { "block-every", required_argument, NULL, 'B' },
        { "duration",    required_argument, NULL, 'd' },
        { "name",        required_argument, NULL, 'n' },
        { "help",        no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    opterr = 0; /* we print our own one-line errors */
    while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
        switch (c) {
        case 'r': opt.rate = worker_parse_num("rate", optarg, 0, 1e6); break;
        case 'l': opt.latency_ms = worker_parse_num("latency", optarg, 0, 3600e3); break;
        case 'e': opt.error_rate = worker_parse_num("error-rate", optarg, 0, 1); break;
        case 'b': opt.block_ms = worker_parse_num("block", optarg, 0, 3600e3); break;
        case 'B': opt.block_every_s = worker_parse_num("block-every", optarg, 0.001, 86400); break;
        case 'd': opt.duration_s = worker_parse_num("duration", optarg, 0.001, 1e9); break;
        case 'n':
            if (!*optarg || strlen(optarg) > 63)
                worker_usage_error("--name expects 1 to 63 bytes", optarg);
            opt.name = optarg;
            break;
        case 'h':
            worker_usage(stdout);
            exit(0);
        case ':':
            worker_usage_error("option needs a value", argv[optind - 1]);
            break;
        default:
            worker_usage_error("unknown option", argv[optind - 1]);
        }
    }
    if (optind < argc)
        worker_usage_error("unexpected argument", argv[optind]);
}

/* ------------------------------------------------------------------------ */
/* Simulated requests                                                       */
/* ------------------------------------------------------------------------ */

/* Returns a uniform double in [0, 1) (xorshift64*). */
static double worker_uniform(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return (double)((x * 0x2545f4914f6cdd1du) >> 11) / 9007199254740992.0;
}

/* A request's latency elapsed: it completes, maybe as an error. */
static void worker_req_done(uv_timer_t *t)
{
    worker_req *r = t->data;
    bool failed = worker_uniform() < opt.error_rate;
    drover_request_done(drover_now_us() - r->start_us, failed);
    free_list[nfree++] = (unsigned)(r - pool);
}

/* Starts one request from the pool; when the pool is exhausted it is shed as an error. */
static void worker_req_start(void)
{
    if (nfree == 0) {
        drover_count_request();
        drover_count_error();
        return;
    }
    worker_req *r = &pool[free_list[--nfree]];
    if (!r->open) {
        uv_timer_init(loop, &r->timer);
        r->timer.data = r;
        r->open = true;
    }
    drover_request_begin();
    r->start_us = drover_now_us();
    double ms = opt.latency_ms * (0.5 + worker_uniform());
    uv_timer_start(&r->timer, worker_req_done, (uint64_t)(ms + 0.5), 0);
}

/* Generator tick: starts as many requests as the rate says are due by now. */
static void worker_tick(uv_timer_t *t)
{
    (void)t;
    double elapsed = (double)(uv_hrtime() - t0_ns) / 1e9;
    uint64_t due = (uint64_t)(opt.rate * elapsed);
    while (started < due) {
        worker_req_start();
        started++;
    }
}

/* Startup is over: the worker can serve. */
static void worker_ready(uv_timer_t *t)
{
    (void)t;
    drover_ready(true);
}

/* Refreshes the custom metrics: queue depth (= in flight) and a wandering cache hit ratio. */
static void worker_metrics(uv_timer_t *t)
{
    (void)t;
    cache_hit += (worker_uniform() - 0.5) * 0.02;
    cache_hit = cache_hit < 0.7 ? 0.7 : cache_hit > 0.99 ? 0.99 : cache_hit;
    drover_metric_set("queue_depth", (double)(pool_size - nfree));
    drover_metric_set("cache_hit_ratio", cache_hit);
}

/* Stalls the loop with a busy wait, as a CPU-heavy handler would. */
static void worker_block(uv_timer_t *t)
{
    (void)t;
    uint64_t end = uv_hrtime() + (uint64_t)(opt.block_ms * 1e6);
    while (uv_hrtime() < end) {
        /* spin */
    }
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

/* Stops serving: tells drover (bye) and ends the loop. */
static void worker_shutdown(void)
{
    if (shutting_down)
        return;
    shutting_down = true;
    drover_ready(false);
    drover_stop();
    uv_stop(loop);
}

static void worker_on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    worker_shutdown();
}

static void worker_on_duration(uv_timer_t *t)
{
    (void)t;
    worker_shutdown();
}

/* uv_walk callback: closes every handle still open. */
static void worker_close_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Sizes the request pool for the expected concurrency plus a stall's backlog. */
static unsigned worker_pool_size(void)
{
    double stall_s = opt.block_ms > 0 ? opt.block_ms / 1e3 : 0;
    double want = opt.rate * (opt.latency_ms * 1.5 / 1e3 + stall_s + 0.1) * 2 + 64;
    return want > WORKER_POOL_MAX ? WORKER_POOL_MAX : (unsigned)want;
}

int main(int argc, char **argv)
{
    worker_parse_args(argc, argv);
    if (opt.name)
        setenv("DROVER_NAME", opt.name, 1);

    loop = uv_default_loop();
    rng_state = (uint64_t)getpid() * 0x9e3779b97f4a7c15u ^ uv_hrtime();
    if (!rng_state)
        rng_state = 1;
    pool_size = worker_pool_size();
    pool = calloc(pool_size, sizeof *pool);
    free_list = calloc(pool_size, sizeof *free_list);
    if (!pool || !free_list) {
        fprintf(stderr, "worker: cannot allocate %u request slots\n", pool_size);
        return 1;
    }
    for (unsigned i = 0; i < pool_size; i++)
        free_list[i] = pool_size - 1 - i;
    nfree = pool_size;

    int arc = drover_start();
    const char *name = getenv("DROVER_NAME");
    char block[48] = "off";
    if (opt.block_ms > 0)
        snprintf(block, sizeof block, "%gms every %gs", opt.block_ms, opt.block_every_s);
    char dur[32] = "forever";
    if (opt.duration_s > 0)
        snprintf(dur, sizeof dur, "%gs", opt.duration_s);
    fprintf(stderr, "worker: pid %d name %s rate %g/s latency %gms±50%% errors %g%% block %s duration %s agent %s%s\n",
            (int)getpid(), name && *name ? name : "-", opt.rate, opt.latency_ms, opt.error_rate * 100,
            block, dur, arc == 0 ? "on" : "off: ", arc == 0 ? "" : strerror(-arc));

    char line[160];
    snprintf(line, sizeof line, "worker started: rate %g/s, latency %g ms, error rate %g", opt.rate,
             opt.latency_ms, opt.error_rate);
    drover_log("info", line);

    t0_ns = uv_hrtime();
    if (uv_signal_init(loop, &sigterm_h) || uv_signal_start(&sigterm_h, worker_on_signal, SIGTERM) ||
        uv_signal_init(loop, &sigint_h) || uv_signal_start(&sigint_h, worker_on_signal, SIGINT)) {
        fprintf(stderr, "worker: cannot watch SIGTERM/SIGINT\n");
        return 1;
    }
    uv_timer_init(loop, &tick_timer);
    uv_timer_start(&tick_timer, worker_tick, WORKER_TICK_MS, WORKER_TICK_MS);
    uv_timer_init(loop, &ready_timer);
    uv_timer_start(&ready_timer, worker_ready, WORKER_READY_AFTER_MS, 0);
    uv_timer_init(loop, &metrics_timer);
    uv_timer_start(&metrics_timer, worker_metrics, 0, WORKER_METRICS_MS);
    if (opt.block_ms > 0) {
        uint64_t every = (uint64_t)(opt.block_every_s * 1e3);
        uv_timer_init(loop, &block_timer);
        uv_timer_start(&block_timer, worker_block, every, every);
    }
    if (opt.duration_s > 0) {
        uv_timer_init(loop, &duration_timer);
        uv_timer_start(&duration_timer, worker_on_duration, (uint64_t)(opt.duration_s * 1e3), 0);
    }
    drover_lag_uv_start(loop, &lag_timer, 10);

    uv_run(loop, UV_RUN_DEFAULT);

    /* Close everything (in-flight requests included) so the loop can be closed cleanly. */
    worker_shutdown();
    uv_walk(loop, worker_close_handle, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    free(pool);
    free(free_list);
    return 0;
}
