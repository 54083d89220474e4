/*
 * upgrade.h — `drover upgrade`: the hub re-executes the drover binary now
 * installed at its path, in place (same pid), and hands everything over.
 *
 * The old image writes the state it hands over into a blob: a JSON document
 * (jansson) in a memfd, at most UPGRADE_MAX_BYTES, headed by a format name
 * and a version. Descriptors cross the exec by number: the old image clears
 * FD_CLOEXEC on exactly the ones the blob names (listening sockets, worker
 * pipes, the agent and control sockets, the namespace lock, the guard's
 * pipe, the old binary itself for a rollback); every other one closes.
 * Bytes that need not be UTF-8 (a partial line, a log ring's lines) travel
 * as hex strings.
 *
 * The sequence:
 *   1. refuse while anything is in flight (a reload, a growth, a slot
 *      starting or stopping): what is in flight lives in timers and
 *      callbacks that do not survive an exec;
 *   2. write the blob; run the new binary as `drover __upgrade-check FD`:
 *      it must read, validate and answer "drover-upgrade-ok VERSION" within
 *      UPGRADE_CHECK_MS, else the upgrade is refused and nothing changed
 *      (the "binary that exits at once" case);
 *   3. execve the new binary with the hub's own argv and UPGRADE_ENV=FD;
 *   4. the new image validates the blob again before it acts on anything;
 *      if it refuses it, it re-executes the old binary (fexecve of the fd
 *      the blob names) with the same blob and UPGRADE_FAILED_ENV=why, and
 *      the old image resumes and records the failure.
 */
#ifndef DROVER_HUB_UPGRADE_H
#define DROVER_HUB_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <jansson.h>

#define UPGRADE_FORMAT      "drover-upgrade"
#define UPGRADE_VERSION     1
#define UPGRADE_MAX_BYTES   (64u * 1024 * 1024)
#define UPGRADE_CHECK_MS    5000
#define UPGRADE_ENV         "DROVER_UPGRADE_FD"
#define UPGRADE_FAILED_ENV  "DROVER_UPGRADE_FAILED"
#define UPGRADE_EXE_ENV     "DROVER_UPGRADE_EXE"
#define UPGRADE_CHECK_CMD   "__upgrade-check"
#define UPGRADE_OK_WORD     "drover-upgrade-ok"

/* A JSON string of n bytes as lowercase hex (new reference), or NULL. */
json_t *upgrade_hex(const void *p, size_t n);

/*
 * Decodes hex string s into out (cap bytes). Returns the bytes written, or
 * -1 when s is not a string of an even number of hex digits fitting cap.
 */
long upgrade_unhex(const json_t *s, void *out, size_t cap);

/*
 * Marks fd to survive the exec (clears FD_CLOEXEC) and returns it as a JSON
 * integer (new reference); fd < 0 gives JSON null.
 */
json_t *upgrade_keep_fd(int fd);

/* fd as a JSON integer left close-on-exec (a dry run's blob); fd < 0 gives JSON null. */
json_t *upgrade_fd_json(int fd);

/*
 * Reads an fd field of a validated blob: key's value as a descriptor
 * number, or -1 when null or absent. The new image owns it from then on.
 */
int upgrade_fd(const json_t *o, const char *key);

/*
 * Writes doc into a new memfd (not close-on-exec), rewound. Returns the
 * fd, or -1 with why in err (too large, no memory).
 */
int upgrade_blob_write(const json_t *doc, char *err, size_t errcap);

/*
 * Reads and validates the blob in fd: size bound, JSON, format name,
 * version, and the shape of every section (upgrade_validate). Returns the
 * document (new reference), or NULL with why in err.
 */
json_t *upgrade_blob_read(int fd, char *err, size_t errcap);

/*
 * Checks the shape of a blob document: every field the new image will act
 * on has its type and range (descriptors 0..65535 or null, pids > 0,
 * worker ids 0..CTL_ID_MAX, hex strings). Returns 0, or -1 with why in err.
 */
int upgrade_validate(const json_t *doc, char *err, size_t errcap);

/*
 * Runs exe as `exe __upgrade-check FD` with the blob fd and waits at most
 * UPGRADE_CHECK_MS for its word. Returns 0 with the new binary's version
 * in version, or -1 with why in err (it did not start, exited, answered
 * something else, timed out: killed).
 */
int upgrade_check(const char *exe, int blob_fd, char *version, size_t vcap, char *err, size_t errcap);

/*
 * The `__upgrade-check FD` entry of a new binary: validates the blob and
 * prints the word and its version. Returns the exit status.
 */
int upgrade_check_main(int argc, char **argv);

/*
 * Replaces the process image with exe (exec_fd >= 0: that open file, for a
 * rollback to a binary renamed over since) run with argv, the environment
 * plus UPGRADE_ENV=blob_fd, UPGRADE_EXE_ENV=rollback_fd (when >= 0: the
 * binary to go back to) and UPGRADE_FAILED_ENV=failed (when not NULL).
 * Returns only on failure, with why in err.
 */
void upgrade_exec(const char *exe, int exec_fd, int rollback_fd, char *const argv[], int blob_fd,
                  const char *failed, char *err, size_t errcap);

/*
 * The blob fd this process was started with (UPGRADE_ENV), or -1, with the
 * binary to roll back to in *rollback_fd (-1: none) and the failure a
 * rollback reports in failed (empty: none). Removes the variables from the
 * environment (the workers must not see them).
 */
int upgrade_inherited(int *rollback_fd, char *failed, size_t cap);

#endif
