/*
 * service.c — sd_notify(3) and the watchdog, with libsystemd's sd_notify
 * (one small, well-tested implementation of the protocol).
 */
#include "hub/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

struct service {
    bool       notify;         /* NOTIFY_SOCKET is set */
    bool       ready;          /* READY=1 sent once */
    bool       watchdog;
    uv_timer_t timer;          /* the watchdog's keep-alive */
    char       status[256];    /* the last STATUS= sent */
};

static void service_on_watchdog(uv_timer_t *t)
{
    (void)t;
    sd_notify(0, "WATCHDOG=1");
}

service *service_start(uv_loop_t *loop)
{
    const char *ns = getenv("NOTIFY_SOCKET");
    uint64_t usec = 0;
    bool wd = sd_watchdog_enabled(0, &usec) > 0 && usec > 0;
    if (!(ns && *ns) && !wd)
        return NULL;
    service *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->notify = ns && *ns;
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    if (wd) {
        /* A third of the period: two keep-alives may be late before systemd acts. */
        uint64_t ms = usec / 3000;
        s->watchdog = true;
        uv_timer_start(&s->timer, service_on_watchdog, 0, ms ? ms : 1);
    }
    return s;
}

void service_ready(service *s, const char *status)
{
    if (!s || !s->notify)
        return;
    s->ready = true;
    if (status) {
        snprintf(s->status, sizeof s->status, "%s", status);
        sd_notifyf(0, "READY=1\nSTATUS=%s", status);
    } else {
        sd_notify(0, "READY=1");
    }
}

bool service_was_ready(const service *s)
{
    return s && s->ready;
}

void service_reloading(service *s)
{
    if (!s || !s->notify)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
               (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000ull);
}

void service_status(service *s, const char *text)
{
    if (!s || !s->notify || strcmp(s->status, text) == 0)
        return;
    snprintf(s->status, sizeof s->status, "%s", text);
    sd_notifyf(0, "STATUS=%s", text);
}

void service_stopping(service *s)
{
    if (s && s->notify)
        sd_notify(0, "STOPPING=1");
}

static void service_on_closed(uv_handle_t *h)
{
    free(h->data);
}

void service_stop(service *s)
{
    if (!s)
        return;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, service_on_closed);
}
