/* SPDX-License-Identifier: MIT */
/* Small helpers that depend on nothing else in libvmctl. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "macros.h"

/* --- strings and string vectors (NULL-terminated char **) --- */
char *str_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* vasprintf that returns the string, NULL on failure: for helpers that take a format. */
char *str_vprintf(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
bool str_startswith(const char *s, const char *prefix);
int strv_push(char ***strv, size_t *n, const char *s); /* copies s */
int strv_pushf(char ***strv, size_t *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
size_t strv_length(char *const *strv);
char **strv_copy(char *const *strv);
void strv_free(char **strv);
static inline void strv_freep(char ***p)
{
    strv_free(*p);
}
#define cleanup_strv __attribute__((cleanup(strv_freep)))

/* --- files and paths --- */
int mkdir_p(const char *path, mode_t mode);
/* mkdir_p(path, 0700), and an existing directory of ours (not a symlink) that group or others
 * may enter is narrowed to 0700: vmctl's own directories (vms/, images/, a VM's) whatever the
 * umask was when they were made. */
int mkdir_private(const char *path);
int rm_rf(const char *path);
/* Write atomically: temp file in the same directory, fsync, rename. */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* Read a whole file (NUL-terminated); *len may be NULL. */
int read_file(const char *path, char **ret, size_t *len);
/* Last max bytes of a file, starting at a line boundary when possible. */
int read_file_tail(const char *path, size_t max, char **ret);
bool file_exists(const char *path);
bool is_executable(const char *path);
/* Find an executable in $PATH; returns a malloc'd path or NULL. */
char *find_in_path(const char *name);
/* Directory holding the running executable (/proc/self/exe). */
char *self_exe_dir(void);

/* --- time --- */
uint64_t now_usec(void);      /* CLOCK_MONOTONIC */
uint64_t realtime_usec(void); /* CLOCK_REALTIME */
void sleep_usec(uint64_t usec);

/* --- processes --- */
/* Start time of pid in clock ticks since boot (field 22 of /proc/PID/stat); 0 when gone. */
uint64_t proc_start_time(pid_t pid);
/* One-letter state of pid (R, S, D, Z, T, ...) or 0 when gone. */
char proc_state(pid_t pid);
/* Alive = present, not a zombie, and (when start_time != 0) started at start_time. */
bool proc_alive(pid_t pid, uint64_t start_time);

/* Names: 1-63 of [A-Za-z0-9_.-], starting with a letter or digit. */
bool name_is_valid(const char *s);
/* Environment variable names: [A-Za-z_][A-Za-z0-9_]* */
bool env_name_is_valid(const char *s, size_t len);
