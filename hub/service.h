/*
 * service.h — the hub as a systemd service: sd_notify(3) messages to the
 * NOTIFY_SOCKET the hub itself was started with (never the workers', who
 * get the hub's agent.sock instead), and the watchdog keep-alive.
 *
 *   READY=1      once the initial workers are online (monit, attach: once set up)
 *   RELOADING=1  with MONOTONIC_USEC= when a reload starts; READY=1 when it ends
 *   STOPPING=1   when a graceful stop begins
 *   STATUS=…     each interval: "2/2 online, 310 req/s"
 *   WATCHDOG=1   from the loop, every third of WATCHDOG_USEC
 *
 * Every function takes NULL (no NOTIFY_SOCKET and no watchdog) and then
 * does nothing.
 */
#ifndef DROVER_HUB_SERVICE_H
#define DROVER_HUB_SERVICE_H

#include <stdbool.h>
#include <uv.h>

typedef struct service service;

/* Starts talking to systemd if the hub's environment asks for it; NULL otherwise. */
service *service_start(uv_loop_t *loop);

/* READY=1 (with the status line): the hub is up, or a reload ended. */
void service_ready(service *s, const char *status);

/* True once READY=1 was sent (after the initial start). */
bool service_was_ready(const service *s);

/* RELOADING=1 with MONOTONIC_USEC= now. */
void service_reloading(service *s);

/* STATUS=text, when it changed since the last one. */
void service_status(service *s, const char *text);

/* STOPPING=1. */
void service_stopping(service *s);

/* Stops the watchdog timer and frees s once its handle is closed. */
void service_stop(service *s);

#endif
