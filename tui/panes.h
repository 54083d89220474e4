/*
 * panes.h — the console's screen, pane by pane: the header (title, hub
 * totals, connection), the worker list, the detail of the selected worker,
 * the logs, the status line, the footer (key hints or the current prompt),
 * and over them the help overlay or a dialog. Drawn from the model and the
 * keys' state with the primitives of draw.h.
 */
#ifndef DROVER_TUI_PANES_H
#define DROVER_TUI_PANES_H

#include "tui/draw.h"
#include "tui/keys.h"

/*
 * Draws the whole screen into ncurses' buffer (the caller refreshes). Only
 * the rows that fit are formatted. Keeps the selection visible (the model's
 * list_top) and notes the log pane's height (log_rows, for paging).
 * title: the header's; NULL for "drover — NAMESPACE".
 */
void panes_draw(keys_state *k, const draw_ctx *d, const char *title);

#endif
