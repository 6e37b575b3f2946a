/* SPDX-License-Identifier: MIT */
/* Internal error helpers. Call sites read as one line:
 *   return err_make(reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, errno, "cannot connect to '%s'", p);
 * err_make returns -errnum (or -EIO for 0) so it can be returned directly. All helpers accept
 * reterr == NULL and do nothing then (beyond the return value). */
#pragma once

#include <stdarg.h>

#include <vmctl/error.h>

#include "vmctl-cleanup.h" /* cleanup_error */

int err_make(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* err_make for helpers that take a format of their own (invalid(), disk_unsafe(), ...). */
int err_makev(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));
/* Add an outer context line ("while starting VM 'x'") to an existing error; returns r. */
int err_prefix(vmctl_error **reterr, int r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void err_detail(vmctl_error **reterr, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void err_detail_num(vmctl_error **reterr, const char *key, double value);
void err_note(vmctl_error **reterr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void err_help(vmctl_error **reterr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Timeout error with details operation and timeout_seconds. */
int err_timeout(vmctl_error **reterr, const char *operation, double seconds, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* invalid_state with details vm, from, to. */
int err_invalid_state(vmctl_error **reterr, const char *vm, const char *from, const char *to);
