/* SPDX-License-Identifier: MIT */
/* Every file of a VM directory ($VMCTL_HOME/vms/NAME), and where VM locks live. The macro names
 * say what a file is for, whatever the backend; the file names on disk are the ones earlier
 * versions used (some say "qemu"): a VM started by the previous vmctl keeps running under this
 * one (its supervisor writes qemu.exit, its command line names qemu.pid, clients find agent.sock).
 * A second backend uses the same files for the same roles. docs/architecture.md, "On disk". */
#pragma once

#include <stddef.h>
#include <stdio.h>

/* ---- beside vms/ ---- */

/* $VMCTL_HOME/locks/NAME.lock: the VM's lock (never in the VM directory, which destroy removes:
 * a lock there excluded nobody once create made the directory again). */
#define VM_LOCK_DIR "locks"

/* ---- written by vm.c (create) ---- */

#define VM_FILE_CONFIG       "vm.json"      /* the vm_spec JSON, to adopt a directory (doctor) */
#define VM_FILE_CREATE_OWNER "create.owner" /* "pid P start S" of the create making it */
#define VM_FILE_DISK         "disk.qcow2"   /* disk-image VMs: qcow2 overlay on the image */
#define VM_FILE_ROOTFS       "rootfs.raw"   /* raw root filesystem booted with --kernel: a clone */
#define VM_FILE_SEED         "seed.iso"     /* disk-image VMs: cloud-init NoCloud seed */
#define VM_FILE_SSH_KEY      "id_ed25519"   /* the VM's own SSH key (ssh.c) */
#define VM_FILE_SSH_PUBKEY   "id_ed25519.pub"
#define VM_FILE_KNOWN_HOSTS  "known_hosts" /* the guest's SSH host key, pinned on first contact */

/* ---- made by the hypervisor and its supervisor while the VM runs (backend_ops.cleanup removes
 * them) ---- */

#define VM_FILE_CONTROL_SOCK "qmp.sock"     /* the hypervisor's control socket (QEMU: QMP) */
#define VM_FILE_CONSOLE_SOCK "console.sock" /* serial console, attachable */
#define VM_FILE_CONSOLE_LOG  "console.log"  /* everything the guest wrote to its console */
#define VM_FILE_BACKEND_LOG  "qemu.log"     /* the hypervisor's own stdout and stderr */
#define VM_FILE_PID          "qemu.pid"     /* the hypervisor's pid, written by itself */
#define VM_FILE_EXIT         "qemu.exit"    /* how it ended, written by its supervisor */
/* the running hypervisor's version ("7.2.0"), from its QMP greeting at launch: what a snapshot
 * records and a restore checks, without a QMP connection of its own */
#define VM_FILE_BACKEND_VERSION "qemu.version"
/* this run was restored from a snapshot (its name; snapshot.c): its RAM is not its own file */
#define VM_FILE_RESTORED "restored"
/* jail.c: the empty directory a jailed hypervisor's root tmpfs is mounted on (in its own mount
 * namespace: empty on the host), and the OOM kills its memory cgroup saw ("oom_kill N") */
#define VM_FILE_JAIL_ROOT "jail"
#define VM_FILE_JAIL_OOM  "jail.oom"
/* jail.c: the VM's cgroup directories, one a line, for their removal (root's, 0600) */
#define VM_FILE_JAIL_CGROUP "jail.cgroup"
/* the VM's systemd scope (its unit name), while it has one */
#define VM_FILE_JAIL_SCOPE "jail.scope"

/* "fs-<i>.sock": the vhost-user socket of mount i's virtiofsd (made by it, removed by cleanup) */
static inline void vm_fs_sock_file(size_t i, char *buf, size_t size)
{
    snprintf(buf, size, "fs-%zu.sock", i);
}

/* ---- the agent's ports ---- */

#define VM_FILE_AGENT_SOCK "agent.sock" /* host end of the agent's virtio-serial port 0 */
/* The agent's virtio-serial ports (one session each; how many: AGENT_SERIAL_PORTS in
 * src/proto/agent-proto.h): port 0 is org.vmctl.agent on agent.sock, port N org.vmctl.agent.N on
 * agent.N.sock. */
/* "agent.<ext>" for port 0, "agent.<i>.<ext>" for the others (ext: "sock", or "lock": the
 * flock a host client holds while it uses the port). */
static inline void vm_agent_port_file(unsigned i, const char *ext, char *buf, size_t size)
{
    if (i == 0)
        snprintf(buf, size, "agent.%s", ext);
    else
        snprintf(buf, size, "agent.%u.%s", i, ext);
}
#define VM_FILE_VSOCK_MISS "agent.vsock-miss" /* a client found no agent on vsock (when) */
