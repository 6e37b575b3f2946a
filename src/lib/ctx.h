/* SPDX-License-Identifier: MIT */
#pragma once

#include <vmctl/vm.h>

#include "store.h"

struct vmctl_ctx {
    char *home;
    store *store;
    vmctl_log_fn log;
    void *log_userdata;
    bool no_store; /* opened with VMCTL_CTX_NO_CREATE where there was no store: in memory */
    const volatile sig_atomic_t *cancel; /* vmctl_ctx_set_cancel, may be NULL */
};

static inline bool ctx_cancelled(const vmctl_ctx *ctx)
{
    return ctx && ctx->cancel && *ctx->cancel;
}

void ctx_log(vmctl_ctx *ctx, vmctl_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* $home/vms/<name> (malloc'd) */
char *ctx_vm_dir(const vmctl_ctx *ctx, const char *name);
