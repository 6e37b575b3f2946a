/* SPDX-License-Identifier: MIT */
/* Shared between snapshot.c and pool.c (the warm pool, docs/snapshots.md "Warm pool"). */
#pragma once

#include "store-snapshot.h"
#include "vm-internal.h"

/* Repair snapshots left incomplete by a dead maker (and let a source stopped for a save run). */
void snapshot_reconcile(vmctl_ctx *ctx);
/* The complete snapshot (vm, snap), or snapshot::not_found. */
int snapshot_get(vmctl_ctx *ctx, const char *vm, const char *snap, store_snapshot **ret,
                 vmctl_error **reterr);
/* The spec of a new clone of s named name: the source's configuration with that name (and
 * hostname on the kernel command line), a new MAC, new host ports and its own RAM file. */
int snapshot_clone_spec(vmctl_ctx *ctx, const store_snapshot *s, const char *name, vm_spec **ret,
                        vmctl_error **reterr);
/* A new clone's VM row (incomplete, owned by this vmctl; an abandoned one of that name repaired
 * first) with its ports, and its directory (create mark, SSH key, config), under its lock:
 * *ret_lock, *ret_dir (malloc'd). On failure nothing is left. */
int snapshot_clone_begin(vmctl_ctx *ctx, const vm_spec *spec, const char *project, int *ret_lock,
                         char **ret_dir, vmctl_error **reterr);
/* Undo snapshot_clone_begin (directory, row, lock file). */
void snapshot_clone_abort(vmctl_ctx *ctx, const char *name, const char *dir, int lock);
/* The row complete, the create mark gone. */
int snapshot_clone_complete(vmctl_ctx *ctx, const char *name, const char *dir,
                            vmctl_error **reterr);
/* spec renamed name (and vmctl.hostname= on its command line): -ENOMEM or 0. */
int snapshot_spec_rename(vm_spec *spec, const char *name);
/* The first half of a restore: v (its lock held) launched waiting for the snapshot's state
 * (-incoming defer, the template's RAM file mapped privately), the reference to s recorded
 * before, the hypervisor's version checked after. Not recorded in the store: *ret holds the
 * launch handshake. On failure the hypervisor is gone. */
int snapshot_incoming_launch(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const store_snapshot *s,
                             vm_launched *ret, vmctl_error **reterr);
/* A warm pool's process, ahead of its clone: the state loaded, the guest run until its agent
 * answers (the hypervisor's TCG translations of the guest's paths are then made), and stopped.
 * Recorded already. */
int snapshot_warm(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const store_snapshot *s,
                  vmctl_error **reterr);
/* The second half: the state loaded and the guest running, recorded as v's running hypervisor
 * (l: launched, not yet recorded), or (l NULL) a warm pool's process continued; then its
 * identity through the agent. On failure before the identity, the hypervisor is killed. */
int snapshot_incoming_finish(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const store_snapshot *s,
                             vm_launched *l, double timeout, vmctl_error **reterr);

/* ---------- pool.c ---------- */

/* A clone of s named name from a process of s's warm pool: 0 done, -ENOENT (no error object)
 * when the pool has none ready (the caller clones without it), < 0 failed. */
int pool_take(vmctl_ctx *ctx, const store_snapshot *s, const char *name, const char *project,
              double timeout, vmctl_error **reterr);
