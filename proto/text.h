/*
 * text.h — making text from workers safe for a terminal (the hub's echo,
 * the CLI and the console). Names, log lines
 * and messages come from processes drover does not trust: before a view
 * prints them, control characters become visible (^[ for ESC, ^J for a
 * newline, \x9b for a C1 control) and bytes that are not UTF-8 become \xNN,
 * so nothing a worker writes can move the cursor, retitle the window or
 * split a row.
 */
#ifndef DROVER_PROTO_TEXT_H
#define DROVER_PROTO_TEXT_H

#include <stddef.h>
#include <stdio.h>

/*
 * Writes the safe form of s (len bytes; SIZE_MAX: up to its NUL) to out.
 * NULL prints nothing.
 */
void text_print_safe(FILE *out, const char *s, size_t len);

/* The safe form of the NUL-terminated s into out (cap bytes, always terminated; cut if longer). */
void text_sanitize(const char *s, char *out, size_t cap);

/*
 * The safe form of len bytes at s into out (cap bytes, not terminated; cut
 * at a whole character if longer). Returns the bytes written. At most
 * TEXT_SAFE_MAX(len) bytes are needed.
 */
size_t text_escape_into(const char *s, size_t len, char *out, size_t cap);

#define TEXT_SAFE_MAX(len) ((len) * 4)   /* each byte at worst "\xNN" */

/*
 * Length of the valid, printable UTF-8 sequence at s (at most n bytes), or 0
 * when s starts with a control character, a C1 control or a byte that is not
 * UTF-8 (the caller escapes it).
 */
size_t text_printable(const unsigned char *s, size_t n);

#endif
