/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
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
/* The store against the host: "vm directories" (a directory under vms/ without a row),
 * "vm rows" (a row whose directory is gone), "vm processes" (a hypervisor no row records as
 * running). With fix: adopt directories that have vm.json (running when their QEMU runs), remove
 * half-made ones and rows without a directory, kill unrecorded hypervisors; each summary then
 * says what was done. Never removes a directory that could hold a VM's disk. */
int vmctl_vm_check_all(vmctl_ctx *ctx, bool fix, vmctl_host_check **ret, size_t *n,
                       vmctl_error **reterr);
const char *vmctl_check_status_to_string(vmctl_check_status s);

#ifdef __cplusplus
}
#endif
