/* SPDX-License-Identifier: MIT */
/* A hypervisor backend as an operation table. vm.c talks only to this; nothing here assumes
 * QEMU (no QMP types). Every call takes the VM directory, which holds the backend's sockets,
 * logs and pid record (vm-dir.h). Deadlines are absolute CLOCK_MONOTONIC usec. A new backend is
 * one file defining its table plus one row in backend.c's registry. Every op is required but
 * quit, io_paused, scan and the snapshot ops (NULL: the backend cannot; vm.c and snapshot.c then
 * do without or say so). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>

#include "agent-endpoint.h"
#include "vm-spec.h"

/* The files of the VM directory every call takes. */
#include "vm-dir.h"

/* For backend_ops.scan: one hypervisor process of VM `name`; < 0 stops the scan. */
typedef int (*backend_proc_fn)(const char *name, pid_t pid, uint64_t start, void *userdata);

typedef struct backend_ops {
    const char *name;  /* as in --backend and vm_spec.backend ("qemu") */
    const char *title; /* in messages ("QEMU") */
    /* Check a spec for this backend at create, before anything is made, and fill in what the
     * backend decides when the spec leaves it NULL (machine, net). Knows the backend's machine
     * types and network modes: config::invalid (field, value, allowed) or
     * network::config_invalid. */
    int (*validate)(vm_spec *spec, vmctl_error **reterr);
    /* Whether a guest of spec needs a guest CID unique on the host (vhost-vsock): vm.c then
     * allocates one (vms.cid) and passes it to launch in spec->guest_cid. */
    bool (*needs_host_cid)(const vm_spec *spec);
    /* The error for a hypervisor that exited while its guest was booting: the backend's spawn
     * error code with a help line saying where to look (vm.c adds the logs' tails as a note). */
    int (*exited_while_booting)(const char *vm, vmctl_error **reterr);
    /* Launch detached (the VM outlives vmctl and is not vmctl's child: wait for its death with
     * proc_alive, not waitpid; once it is dead, supervise_exit_read() says how it ended, when
     * known).
     * Returns once the hypervisor answers on its control socket, with its pid and start time,
     * within an internal bound (30 s, then vm_manager::timeout). On failure nothing is left
     * running, stale sockets are removed, and the error (qemu::spawn_failed) carries the
     * hypervisor's stderr tail from this launch as a note. Port forwards must have non-zero host
     * ports (config::invalid otherwise).
     * *ret_hold is the launch handshake: the hypervisor is killed by its supervisor when that
     * descriptor is closed before supervise_commit() (the caller failed to record it, or was
     * killed), so that it can never outlive a caller that did not record it in the store. */
    int (*launch)(const vm_spec *spec, const char *dir, pid_t *ret_pid, uint64_t *ret_start,
                  int *ret_hold, vmctl_error **reterr);
    int (*pause)(const char *dir, uint64_t deadline, vmctl_error **reterr);
    int (*resume)(const char *dir, uint64_t deadline, vmctl_error **reterr);
    /* Ask the guest to power off (ACPI); returns without waiting for it. */
    int (*powerdown)(const char *dir, uint64_t deadline, vmctl_error **reterr);
    /* Ask the hypervisor to exit now; returns without waiting for the process to go. */
    int (*quit)(const char *dir, uint64_t deadline, vmctl_error **reterr);
    /* Whether the hypervisor stopped the guest by itself after a disk I/O error (QEMU's
     * werror=enospc default: runstate io-error) though the store has it running: 1 with *cause
     * (malloc'd, e.g. "disk0: nospace"), 0 when it runs or is paused by request. May be NULL. */
    int (*io_paused)(const char *dir, uint64_t deadline, char **cause, vmctl_error **reterr);
    /* I/O counters of each of the VM's disks since the hypervisor started (stats.c): cb for
     * each, device naming the disk ("disk0", "seed"); cb returning < 0 stops with that. May be
     * NULL (no block statistics: metrics::failed names the disk source). */
    int (*blockstats)(const char *dir, uint64_t deadline,
                      int (*cb)(const char *device, uint64_t read_bytes, uint64_t write_bytes,
                                uint64_t read_ops, uint64_t write_ops, void *userdata),
                      void *userdata, vmctl_error **reterr);
    /* Remove what a run leaves in the directory of a VM that no longer runs: sockets, the pid
     * file, the exit record. */
    void (*cleanup)(const char *dir);
    /* The hypervisor processes on this host of VM directories in vms (the absolute parent of the
     * VM directories; of VM `only` alone, or of all when NULL), found by their command lines,
     * zombies excluded: cb for each. Returns how many were found, or < 0. vm.c stops the ones
     * the store does not record as running (strays: an older vmctl's, a store moved away). */
    int (*scan)(const char *vms, const char *only, backend_proc_fn cb, void *userdata);
    /* Where the agent of the VM in dir is reached (agent-endpoint.h), for agent_connect_endpoint:
     * the hypervisor's agent sockets and their locks, vsock first when cid (the store's; 0: the
     * ports only, as readiness wants) is a guest CID this host can reach. */
    int (*agent_endpoint)(const vm_spec *spec, const char *dir, uint32_t cid, agent_endpoint *ret,
                          vmctl_error **reterr);
    /* ---- snapshots (docs/snapshots.md); NULL: this backend cannot (snapshot.c says so) ---- */
    /* The version ("7.2.22") of the hypervisor running in dir, recorded with each snapshot: a
     * snapshot is loaded only by the version and machine that saved it. *ret malloc'd. */
    int (*version)(const char *dir, uint64_t deadline, char **ret, vmctl_error **reterr);
    /* Save the running guest of dir into the file state_fd (the hypervisor writes it; the caller
     * keeps its descriptor): the guest is stopped first and left stopped. ram_in_file: the RAM
     * lives in the spec's ram_file and stays out of the stream (a template); else the stream
     * carries it (full). Failure: snapshot::failed with the hypervisor's words as a note, the
     * guest still stopped (the caller resumes it or not). */
    int (*snapshot_save)(const char *dir, int state_fd, bool ram_in_file, uint64_t deadline,
                         vmctl_error **reterr);
    /* Load state_fd into a hypervisor launched with spec->incoming (and spec->restore_ram for a
     * template: ram_in_file) and let the guest run. Failure: snapshot::failed as above. */
    int (*snapshot_load)(const char *dir, int state_fd, bool ram_in_file, uint64_t deadline,
                         vmctl_error **reterr);
    /* Stop the guest and make overlay (a qcow2 file the caller made, empty, its header naming
     * the current disk's file) the disk's new top node (node_name, unique in the process): the
     * old top becomes its read-only backing. Failure: snapshot::failed. May be NULL. */
    int (*disk_snapshot)(const char *dir, const char *overlay, const char *node_name,
                         uint64_t deadline, vmctl_error **reterr);
    /* Stop the guest; *ret (malloc'd): the disk's top node's name (what disk_snapshot puts under
     * the new overlay, and disk_unsnapshot goes back to). NULL when disk_snapshot is. */
    int (*disk_top)(const char *dir, uint64_t deadline, char **ret, vmctl_error **reterr);
    /* Undo disk_snapshot (the guest stopped since): when node_name is the top, commit it into
     * old_node (its backing) and make old_node the top again; nothing when old_node is the top
     * already. Failure: snapshot::failed, the disk as it was. NULL when disk_snapshot is. */
    int (*disk_unsnapshot)(const char *dir, const char *node_name, const char *old_node,
                           uint64_t deadline, vmctl_error **reterr);
} backend_ops;

/* ---------- backend.c: the registry and the accelerator ---------- */

/* The backend called name (NULL: the default, the registry's first row). NULL with
 * backend::not_available for a planned one (firecracker, propolis), config::invalid for an
 * unknown name. */
const backend_ops *backend_find(const char *name, vmctl_error **reterr);
/* The i-th backend of the registry (0: the default), NULL past the last. */
const backend_ops *backend_at(size_t i);

/* Accel resolution: "auto" -> "kvm" only when KVM really works here, else "tcg" with a notice
 * (*notice malloc'd, may be NULL). "kvm" when KVM cannot work -> host::kvm_unavailable. */
int accel_resolve(const char *requested, char **ret, char **notice, vmctl_error **reterr);

/* Why KVM is unusable on this host, or NULL when it is usable (malloc'd). */
char *kvm_unusable_reason(void);
