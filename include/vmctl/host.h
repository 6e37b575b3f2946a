/* SPDX-License-Identifier: MIT */
#pragma once

#include <stddef.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vmctl_check_status {
    VMCTL_CHECK_OK,
    VMCTL_CHECK_WARN, /* works, with a limitation (e.g. KVM unusable, TCG used) */
    VMCTL_CHECK_FAIL, /* vmctl cannot run VMs until this is fixed */
} vmctl_check_status;

typedef struct vmctl_host_check {
    char *name; /* "qemu", "qemu-img", "kvm", "tcg", "store", ... */
    vmctl_check_status status;
    char *summary; /* one line: version, path, or what is wrong */
    char *help;    /* what to do, or NULL */
} vmctl_host_check;

int vmctl_host_check_all(vmctl_ctx *ctx, vmctl_host_check **ret, size_t *n, vmctl_error **reterr);
void vmctl_host_check_list_free(vmctl_host_check *list, size_t n);
const char *vmctl_check_status_to_string(vmctl_check_status s);

#ifdef __cplusplus
}
#endif
