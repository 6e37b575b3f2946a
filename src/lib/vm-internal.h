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
/* Where VM locks live: $VMCTL_HOME/locks/NAME.lock, beside vms/ (never in the VM directory,
 * which destroy removes: a lock there excluded nobody once create made the directory again). */
#define VM_LOCK_DIR "locks"
/* Files of a VM directory that only vm.c writes. */
#define VM_FILE_CONFIG       "vm.json"      /* the vm_spec JSON, to adopt a directory (doctor) */
#define VM_FILE_CREATE_OWNER "create.owner" /* "pid P start S" of the create making it */
/* Take the VM's lock (flock on $VMCTL_HOME/locks/NAME.lock), waiting up to timeout seconds:
 * store::locked past it; timeout 0: one try, -EWOULDBLOCK (no error object) when it is held.
 * Held by every state change, by create until the row is complete, and by repairs. */
/* how long a command waits for another holding a VM's lock */
#define VM_LOCK_TIMEOUT 120.0
int vm_lock(vmctl_ctx *ctx, const char *name, double timeout, int *ret_fd, vmctl_error **reterr);
/* Release a lock taken by vm_lock and remove its file: only when the VM's row is gone. */
void vm_unlock_remove(vmctl_ctx *ctx, const char *name, int fd);
/* The create mark in dir: 0 and the owner, -ENOENT without one. */
int vm_owner_mark_read(const char *dir, pid_t *ret_pid, uint64_t *ret_start);
/* Kill every hypervisor process of v (found by the backend's scan) that v does not record as
 * running; under the VM's lock. */
int vm_stop_strays(vmctl_ctx *ctx, const store_vm *v);
/* Push the VM's hostname and env to an agent that lacks them (exec.c). */
int guest_sync_metadata(agent_conn *c, const vm_spec *spec, bool at_ready, uint64_t deadline,
                        vmctl_error **reterr);
