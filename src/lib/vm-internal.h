/* SPDX-License-Identifier: MIT */
/* Shared between vm.c, vm-config.c, vm-load.c, vm-launch.c, snapshot.c and exec.c. */
#pragma once

#include "ctx.h"
#include "state.h"
#include "store.h"
#include "vm-dir.h"
#include "vm-spec.h"

typedef struct agent_conn agent_conn;

/* Read a VM's row (repairing an abandoned create, marking a dead hypervisor crashed) and its spec
 * (ret_spec may be NULL). vm::not_found when absent. */
int vm_load(vmctl_ctx *ctx, const char *name, store_vm **ret_row, vm_spec **ret_spec,
            vmctl_error **reterr);
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
/* Connect to the agent of v at the endpoint its backend gives for cid (v->cid, or 0: the
 * virtio-serial ports only); see agent_connect_endpoint (exec.c). */
int vm_agent_connect(const store_vm *v, const vm_spec *spec, uint32_t cid, uint64_t deadline,
                     uint64_t queue_usec, agent_conn **ret, vmctl_error **reterr);
/* Push the VM's hostname and env to an agent that lacks them (exec.c). */
int guest_sync_metadata(agent_conn *c, const vm_spec *spec, bool at_ready, uint64_t deadline,
                        vmctl_error **reterr);

/* ---------- vm-load.c ---------- */

/* how long a stop waits for the hypervisor to go, at each step */
#define DEFAULT_STOP_TIMEOUT 10.0
/* now + seconds in microseconds; past 10^9 s (or not finite): as good as never */
uint64_t vm_deadline_after(double seconds);
/* Wait until pid (started at start) is gone: false when still alive at deadline. */
bool vm_wait_dead(pid_t pid, uint64_t start, uint64_t deadline);
/* Remove the directory of a VM whose hypervisor (pid; 0: none ran) is dead, with what the VM had
 * outside it (its jail cgroup, a snapshottable VM's RAM file on tmpfs; spec may be NULL): after
 * its supervisor's record (which that supervisor writes into the directory: racing the removal,
 * it left the directory behind), and again while something still writes there. 0 or -errno. */
int vm_dir_remove(const store_vm *v, const vm_spec *spec, pid_t pid);
/* Write the create mark (VM_FILE_CREATE_OWNER) naming this process into dir: -EEXIST if there. */
int vm_owner_mark(const char *dir);
/* Bring a row in line with reality. Returns 1 when the row was an abandoned create and has been
 * removed, 2 when it is being created by a live process (hidden), 0 otherwise. locked: the
 * caller holds the VM's lock. */
int vm_reconcile(vmctl_ctx *ctx, store_vm *v, bool locked);
/* vm_load, for a caller holding the VM's lock when locked. */
int vm_load_locked(vmctl_ctx *ctx, const char *name, bool locked, store_vm **ret_row,
                   vm_spec **ret_spec, vmctl_error **reterr);
/* exec::unavailable (EAGAIN) "vm 'NAME' is STATE, not running", for what needs a running VM (the
 * agent, SSH, readiness): details vm, reason, remediation; the help names `vmctl start NAME`
 * (`vmctl resume NAME` when paused). */
int vm_not_running(vmctl_error **reterr, const char *name, vmctl_vm_state state);
/* vm::invalid_state unless op is allowed from v's state; *to: the state it leads to. */
int vm_check_transition(const store_vm *v, vm_op op, vmctl_vm_state *to, vmctl_error **reterr);
/* Load and lock a VM, re-read it under the lock (another vmctl may have acted meanwhile), stop
 * any hypervisor of it the row does not record, and check that op is allowed (_VM_OP_MAX: no
 * check). */
int vm_begin_op(vmctl_ctx *ctx, const char *name, vm_op op, store_vm **ret_v, vm_spec **ret_spec,
                vmctl_vm_state *to, int *ret_lock, vmctl_error **reterr);

/* ---------- vm-config.c ---------- */

/* Check a vmctl_vm_config and resolve it (defaults, image, default guest, accelerator) into the
 * spec create records. */
int vm_spec_from_config(vmctl_ctx *ctx, const vmctl_vm_config *c, vm_spec **ret,
                        vmctl_error **reterr);
/* The VM's disk (overlay or rootfs clone) and its cloud-init seed, in the VM directory. */
int vm_prepare_disk(vmctl_ctx *ctx, const vmctl_vm_config *c, const vm_spec *spec,
                    vmctl_error **reterr);

/* ---------- vm-launch.c ---------- */

/* What vm_launch does besides the backend's launch. */
typedef struct vm_launch_opts {
    bool jail; /* jail the hypervisor (unless the VM has --no-jail or the host cannot) */
    bool net;  /* bring up --net tap first (released again when the launch fails) */
} vm_launch_opts;
/* A launched hypervisor: hold is the launch handshake (closing it unrecorded kills it). */
typedef struct vm_launched {
    pid_t pid;
    uint64_t start;
    int hold;
} vm_launched;
/* Launch v (its lock held) as spec says: the backend's leftovers cleaned, a guest CID free in the
 * store and on the host when the backend needs one (v->cid, spec->guest_cid), the jail's uid and
 * the TAP as o says, then the backend's launch (again with the next CID when another process
 * took it meanwhile). Not yet recorded: see vm_launch_record. */
int vm_launch(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const vm_launch_opts *o, vm_launched *ret,
              vmctl_error **reterr);
/* Record l as v's running hypervisor (state to, compare-and-set from v->state) and commit the
 * launch handshake; v updated. On failure the hypervisor is killed (SIGKILL, hold closed). */
int vm_launch_record(vmctl_ctx *ctx, store_vm *v, vmctl_vm_state to, vm_launched *l,
                     vmctl_error **reterr);

/* ---------- snapshot.c ---------- */

/* Where template RAM files live: /dev/shm/vmctl-UID (tmpfs; made 0700 when used). malloc'd. */
char *snapshot_ram_dir(void);
/* One clone of snapshot vm/snap named name, owned by project (a VMFile's canonical path, or
 * NULL): what `vmctl up` does for a machine with `from` (provision.c). */
int snapshot_clone_for_project(vmctl_ctx *ctx, const char *vm, const char *snap, const char *name,
                               const char *project, double timeout_sec, vmctl_error **reterr);

/* ---------- pool.c ---------- */

/* vmctl_pool_set, the pool recorded as set by project (a VMFile's canonical path: `vmctl up` of
 * a machine with from "VM/SNAP" pool=N, provision.c), or by hand (NULL). */
int pool_set_for_project(vmctl_ctx *ctx, const char *vm, const char *snap, unsigned size,
                         const char *project, vmctl_error **reterr);
