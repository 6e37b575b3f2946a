/* SPDX-License-Identifier: MIT */
/* Internals of the QEMU backend (qemu.c), exposed for backend.c's registry, host.c's doctor
 * checks and the unit tests. Everything else goes through backend_find() (backend.h). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>

#include "agent-endpoint.h"
#include "vm-spec.h"

/* The QMP socket in a VM directory (QEMU is the server). */
#define QEMU_FILE_QMP_SOCK VM_FILE_CONTROL_SOCK

/* The backend's table (backend.h): backend.c's registry has it as its first row, the default. */
struct backend_ops;
extern const struct backend_ops qemu_backend;

/* Name of the environment variable that overrides the QEMU binary (a path, or a name looked up
 * in $PATH). */
#define QEMU_BINARY_ENV     "VMCTL_QEMU"
#define QEMU_BINARY_DEFAULT "qemu-system-x86_64"
/* The host's vhost-vsock device, opened by vmctl for a jailed QEMU (vhostfd=). */
#define QEMU_VHOST_VSOCK_DEV "/dev/vhost-vsock"

/* The QEMU binary: $VMCTL_QEMU, else qemu-system-x86_64, resolved through $PATH. Fails with
 * qemu::spawn_failed naming the binary when it is missing or not executable. */
int qemu_find_binary(char **ret, vmctl_error **reterr);

/* The full argv (argv[0] = binary, NULL-terminated) that launches spec detached, with its
 * sockets, logs and pid file in dir (must be absolute: QEMU changes to / when it daemonizes).
 * Fails with config::invalid for a spec QEMU cannot run (unknown machine or accel, nothing to
 * boot, unresolved host port, paths too long for a unix socket) and network::setup_failed for
 * tap networking (not supported yet). */
int qemu_build_argv(const vm_spec *spec, const char *binary, const char *dir, char ***ret,
                    vmctl_error **reterr);
/* The same with the base image's format checked at launch and, base_fd >= 0, the base as a
 * descriptor QEMU inherits (fdset 1: a jailed QEMU's uid may not open the image cache's files);
 * layer_fds (a jailed disk on snapshots' layers; NULL: none): one descriptor per layer, top
 * down (spec->disk_layer, then spec->disk_chain), as fdsets 2, 3, ..., likewise.
 * vhost_fd >= 0 (with a guest CID): /dev/vhost-vsock as a descriptor QEMU inherits, the vsock
 * device's vhostfd= (the device is root's: a jailed QEMU cannot open it). */
int qemu_build_argv_fd(const vm_spec *spec, const char *binary, const char *dir,
                       const char *base_format, int base_fd, const int *layer_fds, int vhost_fd,
                       char ***ret, vmctl_error **reterr);
/* The deepest chain of snapshot layers a disk may be on (docs/snapshots.md). */
#define QEMU_MAX_LAYERS 16

/* backend_ops.agent_endpoint with the host's vhost-vsock given: the agent sockets of the VM in
 * dir (agent.sock, then agent.N.sock for N < AGENT_SERIAL_PORTS that exist; agent[.N].lock
 * beside each), after vsock (cid, AGENT_VSOCK_PORT; misses marked in agent.vsock-miss) when
 * agent_transport_pick(cid, have_vhost_vsock) says so. */
int qemu_agent_endpoint_at(const char *dir, uint32_t cid, bool have_vhost_vsock,
                           agent_endpoint *ret, vmctl_error **reterr);

/* ---------- qemu-snapshot.c: backend_ops.version, snapshot_save, snapshot_load ---------- */
/* A QMP connection to the QEMU of the VM directory dir (qmp_connect's errors). */
struct qmp;
int qemu_qmp_open(const char *dir, uint64_t deadline, struct qmp **ret, vmctl_error **reterr);

int qemu_version(const char *dir, uint64_t deadline, char **ret, vmctl_error **reterr);
int qemu_disk_snapshot(const char *dir, const char *overlay, const char *node_name,
                       uint64_t deadline, vmctl_error **reterr);
int qemu_disk_top(const char *dir, uint64_t deadline, char **ret, vmctl_error **reterr);
int qemu_disk_unsnapshot(const char *dir, const char *node_name, const char *old_node,
                         uint64_t deadline, vmctl_error **reterr);
int qemu_snapshot_save(const char *dir, int state_fd, bool ram_in_file, uint64_t deadline,
                       vmctl_error **reterr);
int qemu_snapshot_load(const char *dir, int state_fd, bool ram_in_file, uint64_t deadline,
                       vmctl_error **reterr);
/* The RAM file of a snapshottable VM (vm_spec.ram_file) made anew for a cold boot: 0600, its
 * directory 0700 (a guest's memory); owned by owner (a jailed hypervisor's uid) unless 0. */
int qemu_ram_file_prepare(const char *path, uid_t owner, vmctl_error **reterr);
