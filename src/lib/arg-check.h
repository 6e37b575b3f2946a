/* SPDX-License-Identifier: MIT */
/* Argument checks of the public entry points (systemd's assert_return): a caller's bug (a NULL
 * context, name or result pointer, an unknown flag) returns -EINVAL with
 * vm_manager::invalid_argument naming the function and the check, instead of crashing.
 * They are the first lines of every vmctl_* function; internal functions trust their callers.
 *   VMCTL_ARG_CHECK(ctx, reterr);        returns -EINVAL and sets *reterr
 *   VMCTL_ARG_CHECK_RET(p, -EINVAL);      for functions without an error object: returns the value
 */
#pragma once

#include <errno.h>

#include "error.h"

static inline int arg_check_failed(vmctl_error **reterr, const char *func, const char *check)
{
    int r = err_make(reterr, VMCTL_E_INVALID_ARGUMENT, EINVAL,
                     "invalid argument to %s(): check '%s' failed", func, check);
    err_detail(reterr, "function", "%s", func);
    err_detail(reterr, "check", "%s", check);
    return r;
}

#define VMCTL_ARG_CHECK(cond, reterr)                                                              \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0))                                                          \
            return arg_check_failed((reterr), __func__, #cond);                                    \
    } while (0)

#define VMCTL_ARG_CHECK_RET(cond, retval)                                                          \
    do {                                                                                           \
        if (__builtin_expect(!(cond), 0))                                                          \
            return (retval);                                                                       \
    } while (0)
