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
/* config::invalid (EINVAL) for one input field, the message from fmt: details field, value (when
 * non-NULL) and allowed (when non-NULL); then the help is "Set FIELD to ALLOWED." (err_help
 * after it overrides that), else the catalogue's. Replaces the modules' private invalid()
 * builders: return err_invalid_field(reterr, "machine", m, "microvm or q35", "invalid machine
 * '%s'", m); */
int err_invalid_field(vmctl_error **reterr, const char *field, const char *value,
                      const char *allowed, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* The same with another code (network::config_invalid for the firewall's fields). */
int err_invalid_fieldv(vmctl_error **reterr, vmctl_error_kind kind, const char *field,
                       const char *value, const char *allowed, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

/* The system error behind an error whose code is about the input (config::invalid for a file
 * the input names that cannot be read, a VMFile's path that does not exist): stored as its
 * errno, and then shown as its cause whatever the code. Returns -errnum. */
int err_cause(vmctl_error **reterr, int errnum);

/* An error told inside another text (a note of an outer error, a stored provision error, a
 * doctor line): its message with its cause appended once, crun's way: "cannot create '/x':
 * Permission denied". Messages themselves never paste strerror(): pass the errno to err_make and
 * the CLI prints it as "caused by:". Caller frees; NULL only when out of memory. */
char *err_describe(const vmctl_error *e);
