/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arg-check.h"
#include "error.h"
#include "util/util.h"

struct detail {
    char *key;
    char *value;
    int is_number;
};

struct vmctl_error {
    vmctl_error_kind kind;
    int errnum;
    bool errnum_is_cause; /* err_cause: shown whatever the kind */
    char *message;
    char *help; /* NULL: the catalogue's */
    struct detail *details;
    size_t n_details;
    char **context;
    size_t n_context;
    char **notes;
    size_t n_notes;
};

static vmctl_error *error_alloc(vmctl_error_kind kind, int errnum, char *message)
{
    vmctl_error *e = calloc(1, sizeof(*e));
    if (!e) {
        free(message);
        return NULL;
    }
    e->kind = kind < 0 || kind >= _VMCTL_E_MAX ? VMCTL_E_INTERNAL : kind;
    e->errnum = errnum < 0 ? -errnum : errnum;
    e->message = message ? message : strdup("out of memory");
    return e;
}

static int errnum_ret(int errnum)
{
    if (errnum < 0)
        errnum = -errnum;
    return errnum ? -errnum : -EIO;
}

/* The one place that builds an error: replaces *reterr (when non-NULL) and returns -errnum (-EIO
 * for 0). */
static int err_setv(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt,
                    va_list ap) __attribute__((format(printf, 4, 0)));
static int err_setv(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt,
                    va_list ap)
{
    if (reterr) {
        char *msg = str_vprintf(fmt, ap);
        vmctl_error_free(*reterr);
        *reterr = error_alloc(kind, errnum, msg);
    }
    return errnum_ret(errnum);
}

int vmctl_error_new(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt, ...)
{
    VMCTL_ARG_CHECK((unsigned)kind < _VMCTL_E_MAX, reterr);
    VMCTL_ARG_CHECK(fmt, reterr);
    va_list ap;
    va_start(ap, fmt);
    int r = err_setv(reterr, kind, errnum, fmt, ap);
    va_end(ap);
    return r;
}

int vmctl_error_newv(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt,
                     va_list ap)
{
    VMCTL_ARG_CHECK((unsigned)kind < _VMCTL_E_MAX, reterr);
    VMCTL_ARG_CHECK(fmt, reterr);
    return err_setv(reterr, kind, errnum, fmt, ap);
}

int err_make(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_setv(reterr, kind, errnum, fmt, ap);
    va_end(ap);
    return r;
}

int err_makev(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt, va_list ap)
{
    return err_setv(reterr, kind, errnum, fmt, ap);
}

int err_prefix(vmctl_error **reterr, int r, const char *fmt, ...)
{
    if (!reterr || !*reterr)
        return r;
    vmctl_error *e = *reterr;
    va_list ap;
    va_start(ap, fmt);
    char *msg = str_vprintf(fmt, ap);
    va_end(ap);
    if (!msg)
        return r;
    char **nc = realloc(e->context, sizeof(char *) * (e->n_context + 1));
    if (!nc) {
        free(msg);
        return r;
    }
    memmove(nc + 1, nc, sizeof(char *) * e->n_context);
    nc[0] = msg;
    e->context = nc;
    e->n_context++;
    return r;
}

static void add_detail(vmctl_error *e, const char *key, char *value, int is_number)
{
    if (!value)
        return;
    for (size_t i = 0; i < e->n_details; i++)
        if (streq(e->details[i].key, key)) {
            free(e->details[i].value);
            e->details[i].value = value;
            e->details[i].is_number = is_number;
            return;
        }
    struct detail *nd = realloc(e->details, sizeof(*nd) * (e->n_details + 1));
    char *k = strdup(key);
    if (!nd || !k) {
        free(k);
        free(value);
        if (nd)
            e->details = nd;
        return;
    }
    e->details = nd;
    e->details[e->n_details++] = (struct detail){k, value, is_number};
}

void vmctl_error_add_detail(vmctl_error *e, const char *key, const char *value)
{
    if (e && key && value)
        add_detail(e, key, strdup(value), 0);
}

void err_detail(vmctl_error **reterr, const char *key, const char *fmt, ...)
{
    if (!reterr || !*reterr)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *v = str_vprintf(fmt, ap);
    va_end(ap);
    add_detail(*reterr, key, v, 0);
}

void err_detail_num(vmctl_error **reterr, const char *key, double value)
{
    if (!reterr || !*reterr)
        return;
    add_detail(*reterr, key, str_printf("%.15g", value), 1);
}

void vmctl_error_add_note(vmctl_error *e, const char *note)
{
    if (!e || !note)
        return;
    char *n = strdup(note);
    char **nn = realloc(e->notes, sizeof(char *) * (e->n_notes + 1));
    if (!n || !nn) {
        free(n);
        if (nn)
            e->notes = nn;
        return;
    }
    e->notes = nn;
    e->notes[e->n_notes++] = n;
}

void err_note(vmctl_error **reterr, const char *fmt, ...)
{
    if (!reterr || !*reterr)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *v = str_vprintf(fmt, ap);
    va_end(ap);
    if (v)
        vmctl_error_add_note(*reterr, v);
    free(v);
}

void vmctl_error_set_help(vmctl_error *e, const char *help)
{
    if (!e || !help)
        return;
    char *h = strdup(help);
    if (!h)
        return;
    free(e->help);
    e->help = h;
}

void err_help(vmctl_error **reterr, const char *fmt, ...)
{
    if (!reterr || !*reterr)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *v = str_vprintf(fmt, ap);
    va_end(ap);
    if (v) {
        free((*reterr)->help);
        (*reterr)->help = v;
    }
}

int err_timeout(vmctl_error **reterr, const char *operation, double seconds, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_setv(reterr, VMCTL_E_TIMEOUT, ETIMEDOUT, fmt, ap);
    va_end(ap);
    err_detail(reterr, "operation", "%s", operation);
    err_detail_num(reterr, "timeout_seconds", seconds);
    return r;
}

int err_invalid_state(vmctl_error **reterr, const char *vm, const char *from, const char *to)
{
    int r = err_make(reterr, VMCTL_E_VM_INVALID_STATE, EBUSY,
                     "invalid vm transition for '%s': %s -> %s", vm, from, to);
    err_detail(reterr, "vm", "%s", vm);
    err_detail(reterr, "from", "%s", from);
    err_detail(reterr, "to", "%s", to);
    return r;
}

int err_invalid_fieldv(vmctl_error **reterr, vmctl_error_kind kind, const char *field,
                       const char *value, const char *allowed, const char *fmt, va_list ap)
{
    int r = err_setv(reterr, kind, EINVAL, fmt, ap);
    err_detail(reterr, "field", "%s", field);
    if (value)
        err_detail(reterr, "value", "%s", value);
    if (allowed) {
        err_detail(reterr, "allowed", "%s", allowed);
        err_help(reterr, "Set %s to %s.", field, allowed);
    }
    return r;
}

int err_invalid_field(vmctl_error **reterr, const char *field, const char *value,
                      const char *allowed, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_invalid_fieldv(reterr, VMCTL_E_CONFIG_INVALID, field, value, allowed, fmt, ap);
    va_end(ap);
    return r;
}

int err_cause(vmctl_error **reterr, int errnum)
{
    if (errnum < 0)
        errnum = -errnum;
    if (reterr && *reterr && errnum > 0) {
        (*reterr)->errnum = errnum;
        (*reterr)->errnum_is_cause = true;
    }
    return errnum_ret(errnum);
}

char *err_describe(const vmctl_error *e)
{
    int errnum = vmctl_error_get_cause_errno(e);
    const char *msg = vmctl_error_get_message(e);
    return errnum ? str_printf("%s: %s", msg, strerror(errnum)) : strdup(msg);
}

vmctl_error_kind vmctl_error_get_kind(const vmctl_error *e)
{
    return e ? e->kind : VMCTL_E_INTERNAL;
}

const char *vmctl_error_get_code(const vmctl_error *e)
{
    return vmctl_error_catalogue(vmctl_error_get_kind(e))->code;
}

const char *vmctl_error_get_message(const vmctl_error *e)
{
    return e ? e->message : "unknown error";
}

const char *vmctl_error_get_help(const vmctl_error *e)
{
    if (e && e->help)
        return e->help;
    return vmctl_error_catalogue(vmctl_error_get_kind(e))->help;
}

int vmctl_error_get_errno(const vmctl_error *e)
{
    return e ? e->errnum : EIO;
}

int vmctl_error_get_cause_errno(const vmctl_error *e)
{
    if (!e || e->errnum <= 0)
        return 0;
    /* a message that says it already (a guest's, QEMU's text) is not told twice */
    if (e->message && strcasestr(e->message, strerror(e->errnum)))
        return 0;
    if (e->errnum_is_cause)
        return e->errnum;
    switch (e->kind) {
    case VMCTL_E_CLI_USAGE:
    case VMCTL_E_CONFIG_INVALID:
    case VMCTL_E_VM_NOT_FOUND:
    case VMCTL_E_VM_INVALID_STATE:
    case VMCTL_E_VM_ALREADY_EXISTS:
    case VMCTL_E_SNAPSHOT_NOT_FOUND:
    case VMCTL_E_SNAPSHOT_ALREADY_EXISTS:
    case VMCTL_E_VMFILE_NOT_FOUND:
    case VMCTL_E_VMFILE_PARSE_FAILED:
    case VMCTL_E_VMFILE_VALIDATION:
    case VMCTL_E_NETWORK_CONFIG_INVALID:
    case VMCTL_E_TIMEOUT:
        return 0;
    default:
        break;
    }
    /* EIO, EINVAL and EBADMSG are what call sites pass when there is no errno to tell (a tool's
     * exit status, bad input, a corrupt file): only io's EIO is news */
    if ((e->errnum == EIO && e->kind != VMCTL_E_IO) || e->errnum == EINVAL || e->errnum == EBADMSG)
        return 0;
    return e->errnum;
}

size_t vmctl_error_get_n_details(const vmctl_error *e)
{
    return e ? e->n_details : 0;
}

int vmctl_error_get_detail(const vmctl_error *e, size_t i, const char **key, const char **value,
                           int *is_number)
{
    if (!e || i >= e->n_details)
        return -ERANGE;
    if (key)
        *key = e->details[i].key;
    if (value)
        *value = e->details[i].value;
    if (is_number)
        *is_number = e->details[i].is_number;
    return 0;
}

const char *vmctl_error_find_detail(const vmctl_error *e, const char *key)
{
    VMCTL_ARG_CHECK_RET(key, NULL);
    for (size_t i = 0; e && i < e->n_details; i++)
        if (streq(e->details[i].key, key))
            return e->details[i].value;
    return NULL;
}

size_t vmctl_error_get_n_context(const vmctl_error *e)
{
    return e ? e->n_context : 0;
}

const char *vmctl_error_get_context(const vmctl_error *e, size_t i)
{
    return e && i < e->n_context ? e->context[i] : NULL;
}

size_t vmctl_error_get_n_notes(const vmctl_error *e)
{
    return e ? e->n_notes : 0;
}

const char *vmctl_error_get_note(const vmctl_error *e, size_t i)
{
    return e && i < e->n_notes ? e->notes[i] : NULL;
}

void vmctl_error_free(vmctl_error *e)
{
    if (!e)
        return;
    free(e->message);
    free(e->help);
    for (size_t i = 0; i < e->n_details; i++) {
        free(e->details[i].key);
        free(e->details[i].value);
    }
    free(e->details);
    for (size_t i = 0; i < e->n_context; i++)
        free(e->context[i]);
    free(e->context);
    for (size_t i = 0; i < e->n_notes; i++)
        free(e->notes[i]);
    free(e->notes);
    free(e);
}
