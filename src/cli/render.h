/* SPDX-License-Identifier: MIT */
/* Rendering: errors (miette-style or JSON), JSON documents, aligned tables, VM objects. */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "cli.h"

/* ANSI colours, used only when the stream is a terminal and NO_COLOR is unset. */
#define ANSI_RED    "\033[31m"
#define ANSI_GREEN  "\033[32m"
#define ANSI_YELLOW "\033[33m"
#define ANSI_CYAN   "\033[36m"
#define ANSI_BOLD   "\033[1m"
#define ANSI_DIM    "\033[2m"
#define ANSI_RESET  "\033[0m"

/* Decide colour and glyphs once, from the terminal, NO_COLOR and the locale. */
void render_init(cli *c);

/* Render an error (stderr, or the JSON document on stdout with --json) and free it.
 * Returns the exit code: EXIT_USAGE for vm_manager::cli::usage, else EXIT_ERROR. */
int render_error(cli *c, vmctl_error *e);
/* The {"error": {...}} document of an error. */
json_t *render_error_json(const vmctl_error *e);

/* Print one JSON document on stdout (steals the reference). Returns 0 or EXIT_ERROR (then
 * render_stdout_errno says why; main reports it at exit). */
extern int render_stdout_errno;
int render_json(json_t *doc);

/* Library log messages: notices and warnings always, debug/info with -v. */
void render_log(void *userdata, vmctl_log_level level, const char *msg);
/* Clear a progress line before printing something else on stderr. */
void render_clear_progress(cli *c);

/* A VM as the JSON object of `status --json` (and one element of `list --json`). */
json_t *render_vm_json(const vmctl_vm_info *vm);
/* {state: none|pending|ok|failed, step (failed only, else null), error, at (unix s or null)} */
json_t *render_provision_json(const vmctl_vm_info *vm);
/* "-", "pending", "ok" or "failed (step N)" */
const char *render_provision(const vmctl_vm_info *vm, char *buf, size_t len);
/* `status` without --json: aligned "key: value" lines. */
void render_vm_status(cli *c, const vmctl_vm_info *vm);
/* "8080->80/tcp, 5353->53/udp" (caller frees). */
char *render_ports(const vmctl_port_forward *ports, size_t n);

/* Human sizes and ages: "1.5 GiB", "3m ago". buf of at least 32 bytes. */
const char *render_size(uint64_t bytes, char *buf, size_t len);
const char *render_age(int64_t unix_seconds, char *buf, size_t len);

/* Text from elsewhere (the guest, the library, the user) made safe for a terminal (caller frees):
 * control characters become escapes (ESC "\e", CR "\r", others "\xNN", C1 and bidirectional
 * overrides "\u{NNNN}"), newlines and tabs stay, CR LF becomes LF; invalid UTF-8, and off a
 * UTF-8 locale every non-ASCII byte, becomes "\xNN". Everything rendered for a human passes
 * through it (errors, notes, log messages, table cells, status values); a command's own output
 * (exec, logs, console) does not. */
char *render_sanitize(const char *s);
/* vmctl's own text (help, summaries): as is on UTF-8, its glyphs spelled in ASCII elsewhere. */
void render_fputs(const char *s, FILE *f);

/* A string as valid UTF-8 for JSON (invalid bytes become U+FFFD). */
json_t *render_json_bytes(const char *data, size_t len);
/* A VM's egress policy in words ("deny, allow 10.0.0.0/8:443/tcp, dns"), NULL for --net none. */
char *render_egress(const vmctl_vm_info *vm);

/* Aligned text tables: add cells row by row, then print with column widths from the content. */
typedef struct table table;
table *table_new(size_t n_columns, ...); /* header cells (const char *) */
void table_add_row(table *t, ...);       /* n_columns const char * (NULL prints "-") */
void table_print(table *t, FILE *f);
void table_free(table *t);
/* Display width of a UTF-8 string (code points; the glyphs we print are all single width). */
size_t render_width(const char *s);

/* A warm pool as an element of `pool list --json` (cmd-pool.c, GET /v1/pools). */
json_t *render_pool_json(const vmctl_pool_info *p);
/* The pool of vm/snap in list as render_pool_json gives it; {} when list has none (`pool VM/SNAP
 * --size N --json`, PUT .../pool). */
json_t *render_pool_one_json(vmctl_pool_info **list, size_t n, const char *vm, const char *snap);

/* One VM's statistics as an element of `stats --json` (cmd-stats.c); st or err may be NULL. */
json_t *render_stats_json(const char *name, vmctl_vm_stats *st, vmctl_error *err);
