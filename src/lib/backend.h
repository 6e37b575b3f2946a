/* SPDX-License-Identifier: MIT */
/* A hypervisor backend as an operation table. vm.c talks only to this; nothing here assumes
 * QEMU (no QMP types). Every call takes the VM directory, which holds the backend's sockets,
 * logs and pid record (see docs/architecture.md). Deadlines are absolute CLOCK_MONOTONIC usec. */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <vmctl/error.h>

#include "vm-spec.h"

/* Files in a VM directory that vm.c and the backends agree on. */
#define VM_FILE_AGENT_SOCK "agent.sock" /* host end of the agent's virtio-serial port */
/* The agent's virtio-serial ports (one session each, so this many clients at once): port 0 is
 * org.vmctl.agent on agent.sock, port N org.vmctl.agent.N on agent.N.sock. */
#define VM_AGENT_PORTS 4
/* "agent.<ext>" for port 0, "agent.<i>.<ext>" for the others (ext: "sock", or "lock": the
 * flock a host client holds while it uses the port). */
static inline void vm_agent_port_file(unsigned i, const char *ext, char *buf, size_t size)
{
    if (i == 0)
        snprintf(buf, size, "agent.%s", ext);
    else
        snprintf(buf, size, "agent.%u.%s", i, ext);
}
#define VM_FILE_CONSOLE_SOCK "console.sock" /* serial console, attachable */
#define VM_FILE_CONSOLE_LOG  "console.log"  /* everything the guest wrote to its console */
#define VM_FILE_BACKEND_LOG  "qemu.log"     /* the hypervisor's own stderr */
#define VM_FILE_PID          "qemu.pid"
#define VM_FILE_VSOCK_MISS   "agent.vsock-miss" /* a client found no agent on vsock (when) */
#define VM_FILE_EXIT         "qemu.exit" /* how it ended: "pid P exit N" or "pid P signal N" */

/* For backend_ops.scan: one hypervisor process of VM `name`; < 0 stops the scan. */
typedef int (*backend_proc_fn)(const char *name, pid_t pid, uint64_t start, void *userdata);

typedef struct backend_ops {
    const char *name;
    /* Launch detached (the VM outlives vmctl and is not vmctl's child: wait for its death with
     * proc_alive, not waitpid; once it is dead, VM_FILE_EXIT says how it ended, when known).
     * Returns once the hypervisor answers on its control socket, with its pid and start time,
     * within an internal bound (30 s, then vm_manager::timeout). On failure nothing is left
     * running, stale sockets are removed, and the error (qemu::spawn_failed) carries the
     * hypervisor's stderr tail from this launch as a note. Port forwards must have non-zero host
     * ports (config::invalid otherwise).
     * *ret_hold is the launch handshake: the hypervisor is killed by its supervisor when that
     * descriptor is closed before backend_launch_commit() (the caller failed to record it, or was
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
} backend_ops;

/* The launch is recorded: the supervisor keeps the hypervisor from now on. Closes hold. */
static inline void backend_launch_commit(int hold)
{
    if (hold < 0)
        return;
    char go = 1;
    ssize_t n;
    do
        n = send(hold, &go, 1, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    close(hold);
}

extern const backend_ops qemu_backend;

/* NULL (and backend::not_available) for firecracker/propolis or an unknown name. */
const backend_ops *backend_find(const char *name, vmctl_error **reterr);

/* Accel resolution: "auto" -> "kvm" only when KVM really works here, else "tcg" with a notice
 * (*notice malloc'd, may be NULL). "kvm" when KVM cannot work -> host::kvm_unavailable. */
int accel_resolve(const char *requested, char **ret, char **notice, vmctl_error **reterr);

/* Why KVM is unusable on this host, or NULL when it is usable (malloc'd). */
char *kvm_unusable_reason(void);
