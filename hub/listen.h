/*
 * listen.h — the listening socket the hub opens once and shares with every
 * worker (systemd socket activation: fd 3, LISTEN_FDS=1). The hub keeps it
 * open for its whole life, so restarting a worker never closes it.
 */
#ifndef DROVER_HUB_LISTEN_H
#define DROVER_HUB_LISTEN_H

#include <stdbool.h>
#include <jansson.h>
#include <stddef.h>
#include <netdb.h>

/*
 * Opens a listening socket for spec: "PORT", "HOST:PORT", "[V6]:PORT" (TCP;
 * without HOST, all interfaces) or "unix:PATH"; or takes "fd:N" / "fd:NAME",
 * a socket inherited by systemd's socket activation (LISTEN_FDS). A TCP
 * spec takes an inherited listening socket bound to exactly the address
 * the hub would bind (listen_resolve) when there is one — a .socket unit's
 * ListenStream= (`drover startup`) — and binds its own otherwise.
 * Inherited sockets are duplicated: the caller owns (and may close) the
 * returned fd, the inherited one stays open for the hub's life. The fd is
 * close-on-exec (the spawner hands it over as fd 3). Returns the fd, or -1
 * with a one-line message in err.
 */
int listen_open(const char *spec, char *err, size_t errcap);

/*
 * True when listen_open(spec) would take a socket systemd passed
 * (LISTEN_FDS): "fd:…", or a TCP address an inherited socket is bound to.
 * Such a socket cannot be one of a reuseport group (hub/lgroup.h).
 */
bool listen_inherited_for(const char *spec);

/*
 * Resolves a "[HOST:]PORT" spec as the hub binds it (getaddrinfo, passive:
 * no HOST is every interface); the first result is the address the hub
 * binds. Returns 0 with *res (freeaddrinfo), or -1 with a message in err.
 */
int listen_resolve(const char *spec, struct addrinfo **res, char *err, size_t errcap);

/*
 * Opens a TCP socket for a "[HOST:]PORT" spec as listen_open does, with
 * SO_REUSEPORT set before bind when reuseport (--balance reuseport), and
 * only bound, not listening, when bind_only (the group's anchor). Returns
 * the fd (close-on-exec), or -1 with a one-line message in err.
 */
int listen_tcp(const char *spec, bool reuseport, bool bind_only, char *err, size_t errcap);

/*
 * Checks spec's syntax only (what a usage error is): a port 0-65535, a host
 * that fits, a unix path that fits sun_path and is not empty. Returns 0, or
 * -1 with a one-line message in err.
 */
int listen_check(const char *spec, char *err, size_t errcap);

/*
 * `drover upgrade`, new image: fd is the socket the old image had opened
 * for spec; the next listen_open(spec) returns it instead of opening one.
 * Returns 0, or -1 (table full, out of memory: the caller closes fd).
 */
int listen_hand_over(const char *spec, int fd);

/* True when a socket was handed over for spec and no listen_open took it yet. */
bool listen_handed_for(const char *spec);

/* Closes the handed-over sockets no listen_open took (an app that is gone). */
void listen_hand_over_end(void);

/*
 * `drover upgrade`: the sockets systemd passed (LISTEN_FDS, read once and
 * removed from the environment) as their names in order (new reference);
 * when final they are kept open across the exec under the same numbers.
 * listen_restore, in the new image, takes them back from those names.
 */
json_t *listen_save(bool final);
void listen_restore(const json_t *names);

#endif
