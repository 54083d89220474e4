/*
 * client.h — the view side of the control protocol (proto/PROTOCOL.md §4).
 *
 * Two ways to talk to a hub: a blocking one for CLI commands (connect, hello,
 * one request, its reply; optionally keep reading pushed messages), and an
 * asynchronous one on a libuv loop for the console, which must never block.
 * Messages are jansson objects exactly as the protocol defines them.
 */
#ifndef DROVER_TUI_CLIENT_H
#define DROVER_TUI_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "proto/control.h"
#include "tui/sshlink.h"

/*
 * Resolves the namespace's ctl.sock path (same rule as the hub: socket_dir,
 * else $XDG_RUNTIME_DIR/drover/NS, else /tmp/drover-UID/NS) into out.
 * Returns 0, or -1 with a message in err.
 */
int client_ctl_path(const char *socket_dir, const char *ns, char *out, size_t cap,
                    char *err, size_t errcap);

/*
 * Connects a stream socket to path. Returns the descriptor (close-on-exec),
 * or -1 with a one-line message in err ("no hub is running here (…)").
 */
int client_unix_connect(const char *path, char *err, size_t errcap);

/* ---- blocking (CLI) ------------------------------------------------------ */

typedef struct client_sync client_sync;

/*
 * Connects to path and says hello (version `version`, normally
 * CTL_VERSION). Returns the connection, or NULL with a one-line message
 * in err ("no hub is running in namespace …", "protocol version …").
 * *hello (if not NULL) gets the hub's hello object (new reference).
 */
client_sync *client_sync_open(const char *path, int version, json_t **hello, char *err, size_t errcap);

/*
 * As client_sync_open, over ssh to t: the transport is the ssh child's
 * stdin and stdout, running `REMOTE bridge -L ns [--socket-dir socket_dir]`
 * there (tui/sshlink.h; remote NULL: $DROVER_REMOTE or "drover"). The hello
 * and the version check are the same as over the socket. When the host
 * cannot be reached, err says why (ssh's own message: "unreachable: …").
 */
client_sync *client_sync_open_ssh(const sshlink_target *t, const char *remote, const char *ns,
                                  const char *socket_dir, int version, json_t **hello, char *err, size_t errcap);

/*
 * Sends req (borrowed; an "id" is added) and waits up to timeout_ms for its
 * reply, which is returned (new reference) whether ok or not. Pushed
 * messages that arrive meanwhile are kept for client_sync_next (up to a
 * bound), so an event a command causes at once is not lost. NULL with err
 * on failure.
 */
json_t *client_sync_call(client_sync *c, json_t *req, int timeout_ms, char *err, size_t errcap);

/* Reads the next pushed message (blocking; -1 = no timeout). NULL on EOF/timeout. */
json_t *client_sync_next(client_sync *c, int timeout_ms);

void client_sync_close(client_sync *c);

/* ---- asynchronous (console) ---------------------------------------------- */

typedef struct client client;

typedef struct {
    /* Connected and the hub said hello (hello object borrowed). */
    void (*on_hello)(void *ctx, const json_t *hello);
    /* Any later message: {"type":"reply"|"state"|"event"|"log"|"error", …} (borrowed). */
    void (*on_message)(void *ctx, const json_t *msg);
    /* The connection failed or ended; why is one line. The client retries by
     * itself every retry_ms until client_free. */
    void (*on_disconnect)(void *ctx, const char *why);
} client_callbacks;

/*
 * Starts connecting to path on loop; retries every retry_ms while the hub is
 * absent. Returns NULL only when out of memory.
 */
client *client_new(uv_loop_t *loop, const char *path, unsigned retry_ms,
                   const client_callbacks *cb, void *ctx);

/*
 * As client_new, over ssh to t (the same transport as client_sync_open_ssh).
 * Each attempt is one ssh child; when one ends, on_disconnect gets why
 * ("unreachable: ssh: connect to host …", the remote's own message, or
 * "unreachable: no answer within 20 s") whether or not a hello came first,
 * and the next attempt waits retry_ms, doubled after each failed attempt up
 * to 30 s (back to retry_ms after a hello).
 */
client *client_new_ssh(uv_loop_t *loop, const sshlink_target *t, const char *remote, const char *ns,
                       const char *socket_dir, unsigned retry_ms, const client_callbacks *cb, void *ctx);

/* True while connected and past the hello. */
bool client_connected(const client *c);

/*
 * Sends req (stolen); adds an "id" and returns it, or -1 when not connected
 * (req is then released).
 */
long client_send(client *c, json_t *req);

/* Closes the connection and frees c once libuv has closed its handles. */
void client_free(client *c);

#endif
