/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ctx.h"
#include "error.h"
#include "util/util.h"

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
    if (!ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "vmctl_ctx_new: ret is NULL");
    cleanup_free char *h = home ? strdup(home) : default_home();
    if (!h)
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "cannot tell where the store lives: neither VMCTL_HOME nor HOME is set");
    int r = mkdir_p(h, 0700); /* an existing home is the user's: its mode stays */
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot create home directory '%s': %s", h,
                     strerror(-r));
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
    if (!vms || mkdir_private(vms) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot create '%s/vms'", ctx->home);
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
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (r < 0)
        return;
    ctx->log(ctx->log_userdata, level, msg);
    free(msg);
}

char *ctx_vm_dir(const vmctl_ctx *ctx, const char *name)
{
    return str_printf("%s/vms/%s", ctx->home, name);
}
