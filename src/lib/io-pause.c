/* SPDX-License-Identifier: MIT */
/* A VM paused by its hypervisor after a disk I/O error: see io-pause.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "error.h"
#include "io-pause.h"
#include "util/util.h"
#include "vm-internal.h"

#define IO_PAUSE_QUERY_USEC (2 * 1000 * 1000)

int vm_io_paused(const store_vm *v, const vm_spec *spec, char **cause)
{
    *cause = NULL;
    if (v->state != VMCTL_VM_RUNNING || !spec->disk)
        return 0; /* no disk, no disk error */
    const backend_ops *be = backend_find(spec->backend, NULL);
    if (!be || !be->io_paused)
        return 0;
    int r = be->io_paused(v->dir, now_usec() + IO_PAUSE_QUERY_USEC, cause, NULL);
    return r > 0 ? 1 : 0;
}

void vm_info_io_pause(const store_vm *v, const vm_spec *spec, vmctl_vm_info *info)
{
    char *cause = NULL;
    if (vm_io_paused(v, spec, &cause) <= 0)
        return;
    char *by = strdup("io-error");
    if (!by) {
        free(cause);
        return;
    }
    info->state = VMCTL_VM_PAUSED;
    info->paused_by = by;
    info->pause_cause = cause;
}

const char *vm_backend_title(const vm_spec *spec)
{
    const backend_ops *be = spec ? backend_find(spec->backend, NULL) : NULL;
    return be && be->title ? be->title : "the hypervisor";
}

char *vm_io_pause_help(const char *name, const char *dir, const vm_spec *spec, const char *cause)
{
    return str_printf("%s paused the vm after a write to its disk failed (%s): the host "
                      "filesystem holding '%s' is full or failing. Free space there, then "
                      "`vmctl resume %s`.",
                      vm_backend_title(spec), cause, dir, name);
}

int vm_io_pause_resume(vmctl_ctx *ctx, const char *name, vmctl_error **reterr)
{
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_load(ctx, name, &v, &spec, reterr);
    if (r < 0)
        return r;
    cleanup_free char *cause = NULL;
    if (vm_io_paused(v, spec, &cause) <= 0)
        return 0;
    cleanup_close int lock = -1;
    r = vm_lock(ctx, name, VM_LOCK_TIMEOUT, &lock, reterr);
    if (r < 0)
        return r;
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    /* "cont" retries the failed requests: with the space still missing it stops again */
    r = be->resume(v->dir, now_usec() + IO_PAUSE_QUERY_USEC * 5, reterr);
    if (r < 0)
        return err_prefix(reterr, r, "while resuming vm '%s'", name);
    return 1;
}
