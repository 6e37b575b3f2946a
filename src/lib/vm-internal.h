/* SPDX-License-Identifier: MIT */
/* Shared between vm.c and exec.c. */
#pragma once

#include "ctx.h"
#include "store.h"
#include "vm-spec.h"

typedef struct agent_conn agent_conn;

/* Read a VM's row (repairing an abandoned create, marking a dead QEMU crashed) and its spec
 * (ret_spec may be NULL). vm::not_found when absent. */
int vm_load(vmctl_ctx *ctx, const char *name, store_vm **ret_row, vm_spec **ret_spec,
            vmctl_error **reterr);
/* Take the VM's lock file (dir/vm.lock), bounded; store::locked past the bound. */
int vm_lock(const char *dir, const char *name, int *ret_fd, vmctl_error **reterr);
/* Push the VM's hostname and env to an agent that lacks them (exec.c). */
int guest_sync_metadata(agent_conn *c, const vm_spec *spec, bool at_ready, uint64_t deadline,
                        vmctl_error **reterr);
