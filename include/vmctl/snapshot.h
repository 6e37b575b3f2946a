/* SPDX-License-Identifier: MIT */
/* Snapshots of running VMs, restore, and clones (docs/snapshots.md). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>

typedef struct vmctl_snapshot_info {
    char *vm; /* the VM it was taken of */
    char *name;
    char *kind; /* "template" (RAM in a file the clones map) or "full" (RAM in the stream) */
    char *dir;
    char *qemu_version; /* of the QEMU that saved it: only that version restores it */
    char *machine;
    unsigned memory_mib;
    int64_t created_at; /* unix seconds */
    size_t n_refs;      /* VMs mapping it (its clones, the source continuing from it) */
    double save_ms;     /* create only: how long the save took (the guest was stopped), else 0 */
} vmctl_snapshot_info;

void vmctl_snapshot_info_free(vmctl_snapshot_info *info);
void vmctl_snapshot_info_list_free(vmctl_snapshot_info **list, size_t n);

typedef struct vmctl_snapshot_options {
    const char *kind;  /* "template", "full", or NULL: template when the VM's RAM is a file */
    bool keep_running; /* template: copy the RAM file so that the source continues (else it is
                          stopped, and `restore` continues it as clone zero) */
} vmctl_snapshot_options;

/* Save running (or paused) VM `vm` as snapshot `snap` (NULL opt: the defaults). vm::invalid_state
 * when it is not running; snapshot::already_exists; snapshot::failed with QEMU's words as a note.
 * *ret (may be NULL) gets the new snapshot. */
int vmctl_snapshot_create(vmctl_ctx *ctx, const char *vm, const char *snap,
                          const vmctl_snapshot_options *opt, vmctl_snapshot_info **ret,
                          vmctl_error **reterr);
/* Snapshots of vm (NULL: every VM's). */
int vmctl_snapshot_list(vmctl_ctx *ctx, const char *vm, vmctl_snapshot_info ***ret, size_t *n,
                        vmctl_error **reterr);
/* snapshot::not_found; snapshot::in_use while a VM maps it. */
int vmctl_snapshot_rm(vmctl_ctx *ctx, const char *vm, const char *snap, vmctl_error **reterr);
/* Bring VM `vm` (not running) back to snapshot `snap` and run it; returns once its agent
 * answered. vm::invalid_state when it runs; snapshot::incompatible when another QEMU or machine
 * made it. */
int vmctl_snapshot_restore(vmctl_ctx *ctx, const char *vm, const char *snap, double timeout_sec,
                           vmctl_error **reterr);
/* New VMs from a snapshot, each running with its own hostname (its name), MAC, vsock CID, host
 * ports, clock and a reseeded RNG: `newname` for count 1, else newname-1 .. newname-N. Returns
 * once every one is ready; on a failure the clones made so far stay (named in a note). */
int vmctl_snapshot_clone(vmctl_ctx *ctx, const char *vm, const char *snap, const char *newname,
                         unsigned count, double timeout_sec, vmctl_error **reterr);

/* ---- warm pools (docs/snapshots.md "Warm pool") ---- */

/* The largest warm pool. */
#define VMCTL_POOL_MAX 64

/* A snapshot's warm pool: hypervisors launched ahead of time waiting for its state, so that a
 * clone (vmctl_snapshot_clone, `run --from`) only loads the device state and continues. */
typedef struct vmctl_pool_info {
    char *vm, *snap; /* the snapshot */
    unsigned size;   /* how many processes it keeps */
    unsigned ready;  /* how many are ready now */
    char **members;  /* their VM names (pool-HEX), NULL-terminated */
    char *project;   /* the VMFile whose `vmctl up` set it (from "VM/SNAP" pool=N), NULL: by hand */
} vmctl_pool_info;
void vmctl_pool_info_list_free(vmctl_pool_info **list, size_t n);
/* Keep `size` (0-64) processes ready for template snapshot vm/snap, launched before this
 * returns (fewer while the host has under 512 MiB available); 0 removes the pool and its
 * processes. The pool is then the user's (project NULL), also one a VMFile had set.
 * snapshot::not_found; config::invalid for a full snapshot or a size past 64. */
int vmctl_pool_set(vmctl_ctx *ctx, const char *vm, const char *snap, unsigned size,
                   vmctl_error **reterr);
/* Launch what the pool of vm/snap misses (after clones took from it); returns at once when
 * another fill of that pool is at work. */
int vmctl_pool_fill(vmctl_ctx *ctx, const char *vm, const char *snap, vmctl_error **reterr);
/* Every pool, by snapshot. */
int vmctl_pool_list(vmctl_ctx *ctx, vmctl_pool_info ***ret, size_t *n, vmctl_error **reterr);
