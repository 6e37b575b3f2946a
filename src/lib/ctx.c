/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vmctl/vmctl.h>

#include "arg-check.h"
#include "ctx.h"
#include "error.h"
#include "util/util.h"

const char *vmctl_version(void)
{
    return VMCTL_VERSION;
}

static char *default_home(void)
{
    const char *e = getenv("VMCTL_HOME");
    if (e && *e)
        return strdup(e);
    e = getenv("XDG_DATA_HOME");
    if (e && *e == '/')
        return str_printf("%s/vmctl", e);
    e = getenv("HOME");
    if (e && *e)
        return str_printf("%s/.local/share/vmctl", e);
    return NULL;
}

int vmctl_ctx_new(const char *home, vmctl_ctx **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ret, reterr);
    return vmctl_ctx_open(home, 0, ret, reterr);
}

/* A home opened without creating anything, that has no store: an empty store in memory. */
static int open_absent(const char *h, vmctl_ctx **ret, vmctl_error **reterr)
{
    char abs[PATH_MAX];
    cleanup_free char *joined = NULL;
    if (realpath(h, abs))
        h = abs;
    else if (h[0] != '/') {
        if (!getcwd(abs, sizeof(abs)) || !(joined = str_printf("%s/%s", abs, h)))
            return err_make(reterr, VMCTL_E_IO, errno ? errno : ENOMEM,
                            "cannot resolve home directory '%s'", h);
        h = joined;
    }
    vmctl_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx || !(ctx->home = strdup(h))) {
        free(ctx);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    ctx->no_store = true;
    int r = store_open_empty(&ctx->store, reterr);
    if (r < 0) {
        vmctl_ctx_free(ctx);
        return r;
    }
    *ret = ctx;
    return 0;
}

int vmctl_ctx_open(const char *home, unsigned flags, vmctl_ctx **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(!(flags & ~(unsigned)VMCTL_CTX_NO_CREATE), reterr);
    cleanup_free char *h = home ? strdup(home) : default_home();
    if (!h)
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "cannot tell where the store lives: neither VMCTL_HOME nor HOME is set");
    bool create = !(flags & VMCTL_CTX_NO_CREATE);
    if (!create) {
        cleanup_free char *db = str_printf("%s/vmctl.db", h);
        if (!db)
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        if (access(db, F_OK) < 0 && errno == ENOENT)
            return open_absent(h, ret, reterr);
    }
    int r = create ? mkdir_p(h, 0700) : 0; /* an existing home is the user's: its mode stays */
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot create home directory '%s'", h);
        err_detail(reterr, "path", "%s", h);
        return r;
    }
    char abs[PATH_MAX];
    if (!realpath(h, abs))
        return err_make(reterr, VMCTL_E_IO, errno, "cannot resolve home directory '%s'", h);
    vmctl_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx || !(ctx->home = strdup(abs))) {
        free(ctx);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    cleanup_free char *vms = str_printf("%s/vms", ctx->home);
    if (!vms || (create && mkdir_private(vms) < 0)) {
        r = err_make(reterr, VMCTL_E_IO, vms ? errno : ENOMEM, "cannot create '%s/vms'", ctx->home);
        vmctl_ctx_free(ctx);
        return r;
    }
    r = store_open(ctx->home, &ctx->store, reterr);
    if (r < 0) {
        vmctl_ctx_free(ctx);
        return r;
    }
    *ret = ctx;
    return 0;
}

bool vmctl_ctx_has_store(const vmctl_ctx *ctx)
{
    return ctx && !ctx->no_store;
}

void vmctl_ctx_free(vmctl_ctx *ctx)
{
    if (!ctx)
        return;
    store_close(ctx->store);
    free(ctx->home);
    free(ctx);
}

void vmctl_ctx_set_cancel(vmctl_ctx *ctx, const volatile sig_atomic_t *flag)
{
    if (ctx)
        ctx->cancel = flag;
}

const char *vmctl_ctx_get_home(const vmctl_ctx *ctx)
{
    return ctx ? ctx->home : NULL;
}

void vmctl_ctx_set_log(vmctl_ctx *ctx, vmctl_log_fn fn, void *userdata)
{
    if (!ctx)
        return;
    ctx->log = fn;
    ctx->log_userdata = userdata;
}

void ctx_log(vmctl_ctx *ctx, vmctl_log_level level, const char *fmt, ...)
{
    if (!ctx || !ctx->log)
        return;
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = str_vprintf(fmt, ap);
    va_end(ap);
    if (msg)
        ctx->log(ctx->log_userdata, level, msg);
}

char *ctx_vm_dir(const vmctl_ctx *ctx, const char *name)
{
    return str_printf("%s/vms/%s", ctx->home, name);
}
