/* SPDX-License-Identifier: MIT */
/* Snapshot rows and the references to them (schema 5; docs/snapshots.md). Errors are the store's
 * (store::locked, store::corrupt, io); "not there" and "already there" are plain -ENOENT and
 * -EEXIST for snapshot.c to turn into snapshot::not_found and snapshot::already_exists. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>

#include "store.h"

typedef struct store_snapshot {
    char *vm;           /* the VM it was taken of */
    char *name;         /* unique per vm */
    char *kind;         /* "template" | "full" */
    char *dir;          /* its directory ($VMCTL_HOME/snapshots/VM/NAME) */
    char *ram;          /* template: its RAM file; NULL for full */
    char *config;       /* the source's vm_spec JSON at snapshot time */
    char *qemu_version; /* of the hypervisor that saved it */
    char *machine;
    unsigned memory_mib;
    int64_t created_at; /* unix seconds */
    bool complete;      /* false while the snapshot that owns the row is being made */
    pid_t owner_pid;
    uint64_t owner_start;
} store_snapshot;

void store_snapshot_free(store_snapshot *s);
void store_snapshot_list_free(store_snapshot **list, size_t n);
static inline void store_snapshot_freep(store_snapshot **s)
{
    store_snapshot_free(*s);
}
#define cleanup_store_snapshot __attribute__((cleanup(store_snapshot_freep)))

/* -EEXIST (no error object) when (vm, name) is there already. */
int store_snapshot_insert(store *s, const store_snapshot *snap, vmctl_error **reterr);
int store_snapshot_set_complete(store *s, const char *vm, const char *name, vmctl_error **reterr);
/* -ENOENT (no error object) when missing. */
int store_snapshot_get(store *s, const char *vm, const char *name, store_snapshot **ret,
                       vmctl_error **reterr);
/* Of vm (NULL: all), by vm then creation. */
int store_snapshot_list(store *s, const char *vm, store_snapshot ***ret, size_t *n,
                        vmctl_error **reterr);
/* Deletes the row unless a VM references it: -EBUSY (no error object) with *ret_user (malloc'd,
 * when ret_user) the first such VM and *ret_count how many; -ENOENT when missing. force: the
 * references go too (repairs of incomplete rows). */
int store_snapshot_delete(store *s, const char *vm, const char *name, bool force, char **ret_user,
                          size_t *ret_count, vmctl_error **reterr);
/* vm maps snapshot (snap_vm, snap) from now on (idempotent); a VM's references go with its
 * row. */
int store_snapshot_ref_add(store *s, const char *vm, const char *snap_vm, const char *snap,
                           vmctl_error **reterr);
/* Replace vm's recorded vm_spec JSON (a disk snapshot moved its disk onto a layer). */
int store_vm_set_config(store *s, const char *vm, const char *config, vmctl_error **reterr);
/* How many VMs reference snapshot (snap_vm, snap). */
int store_snapshot_ref_count(store *s, const char *snap_vm, const char *snap, size_t *ret,
                             vmctl_error **reterr);

/* ---- warm pools (schema 8, project: 9; docs/snapshots.md "Warm pool") ---- */

typedef struct store_pool {
    char *snap_vm, *snap;
    unsigned size; /* how many ready processes the pool keeps */
    char *project; /* the VMFile whose `up` set it (schema 9), NULL: set by hand */
} store_pool;
void store_pool_list_free(store_pool *list, size_t n);
/* The pool of snapshot (snap_vm, snap) keeps size processes from now on, set by project (the
 * VMFile's path; NULL: by hand); size 0: no pool. */
int store_pool_set(store *s, const char *snap_vm, const char *snap, unsigned size,
                   const char *project, vmctl_error **reterr);
/* Its size, 0 when it has no pool. */
int store_pool_size(store *s, const char *snap_vm, const char *snap, unsigned *ret,
                    vmctl_error **reterr);
/* Every pool, by snapshot. */
int store_pool_list(store *s, store_pool **ret, size_t *n, vmctl_error **reterr);
/* The VM rows that are processes of the pool of (snap_vm, snap); both NULL: of every pool.
 * *ret: a NULL-terminated strv (never NULL on success). */
int store_pool_members(store *s, const char *snap_vm, const char *snap, char ***ret,
                       vmctl_error **reterr);
/* The VM row vm is a process of the pool of (snap_vm, snap) from now on. */
int store_pool_member_add(store *s, const char *vm, const char *snap_vm, const char *snap,
                          vmctl_error **reterr);
/* Take member vm out of its pool as VM name, in one transaction: its row renamed (config, dir,
 * project; incomplete, owned by owner_pid/owner_start until the clone completes it), and its
 * ports, lease, jail uid and snapshot references with it. -ENOENT (no error object) when vm is
 * no longer a member (another clone took it), -EEXIST when name is there already. */
int store_pool_take(store *s, const char *vm, const char *name, const char *config, const char *dir,
                    const char *project, pid_t owner_pid, uint64_t owner_start,
                    vmctl_error **reterr);
