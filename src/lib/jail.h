/* SPDX-License-Identifier: MIT */
/* The jail a VM's hypervisor runs in (docs/isolation.md): its own unprivileged uid, a private
 * mount namespace whose root is an empty read-only tmpfs holding read-only bind mounts of exactly
 * what the hypervisor needs (its binary, libraries and firmware, the kernel, initrd and base
 * disks) and the VM directory read-write, its own PID, IPC and UTS namespaces, no capabilities,
 * no-new-privileges, and a cgroup of its own with the VM's limits (CPU quota, memory ceiling,
 * pids, disk I/O weight) on cgroup v1 or v2.
 *
 * The parent prepares everything that allocates (jail_prepare: paths, the cgroup and its limits);
 * the child of the supervisor enters it (jail_enter: system calls only, async-signal-safe) just
 * before exec. The supervisor itself unshares the PID namespace (supervise.c), so that the
 * hypervisor is the first process (init) of the new namespace and the supervisor still sees (and
 * reports, and waits for) its pid as the host sees it: no extra process per VM. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>
#include <vmctl/vm.h> /* VMCTL_LIMIT_* */

/* The uid range jailed hypervisors run as (one uid per VM, gid the same): VMCTL_JAIL_UID_BASE
 * and VMCTL_JAIL_UID_COUNT in the environment override it. */
#define JAIL_UID_BASE_DEFAULT  2000000000u
#define JAIL_UID_COUNT_DEFAULT 65536u
void jail_uid_range(uint32_t *base, uint32_t *count);

/* The memory ceiling of a VM of guest_mib MiB: guest RAM plus QEMU's own overhead (the TCG
 * translation buffer, device state, thread stacks): guest + guest/4 + 192 MiB, and 1 GiB more
 * under TCG (its translation cache, tb-size 1 GiB by default on QEMU 7.2). */
uint64_t jail_memory_ceiling(unsigned guest_mib, bool tcg);
/* The pids ceiling (QEMU's threads: vCPUs, I/O workers, RCU, ...). */
#define JAIL_PIDS_MAX 512u
/* Disk I/O weight (cgroup v2 io.weight, v1 blkio.weight or blkio.bfq.weight), where the host
 * has one. */
#define JAIL_IO_WEIGHT 100u

/* The steps of jail_enter and jail_prepare, named in jailer::failed. */
typedef enum jail_step {
    JAIL_STEP_CGROUP_CREATE,
    JAIL_STEP_CGROUP_LIMIT,
    JAIL_STEP_CGROUP_JOIN,
    JAIL_STEP_PID_NAMESPACE,
    JAIL_STEP_NAMESPACES,
    JAIL_STEP_HOSTNAME,
    JAIL_STEP_MOUNT_PRIVATE,
    JAIL_STEP_ROOT,
    JAIL_STEP_BIND,
    JAIL_STEP_PROC,
    JAIL_STEP_PIVOT,
    JAIL_STEP_CAPABILITIES,
    JAIL_STEP_NO_NEW_PRIVS,
    JAIL_STEP_GROUPS,
    JAIL_STEP_UID,
    JAIL_STEP_OWNERSHIP,
    JAIL_STEP_VHOST_VSOCK,   /* vmctl opens /dev/vhost-vsock for the jailed hypervisor */
    JAIL_STEP_SYSTEMD_SCOPE, /* the VM's transient scope under systemd (jail-systemd.h) */
    _JAIL_STEP_MAX,
} jail_step;
const char *jail_step_name(int step);

/* Whether "/" is a mount's root (false in a chroot into a plain directory, where the jail cannot
 * keep its mounts private and VMs run unjailed with a notice). */
bool jail_root_is_mount(void);
/* Why this host cannot jail a VM although vmctl runs as root (a chroot into a plain directory,
 * capabilities missing), or NULL. VMs then run unjailed with a notice saying this. */
const char *jail_unavailable(void);

typedef struct jail_config {
    const char *name;            /* the VM's: the hostname and the cgroup's name */
    const char *vmdir;           /* absolute: bind-mounted read-write */
    const char *binary;          /* the hypervisor: bind-mounted read-only with / usr, lib* */
    const char *const *ro_files; /* kernel, initrd, base, ...: read-only, NULL-terminated */
    /* a snapshottable VM's RAM file, or the template snapshot's a restore maps: bind-mounted
     * read-write (QEMU 7.2 opens even a private mapping O_RDWR; docs/isolation.md) */
    const char *ram_file;
    gid_t ram_gid;           /* a template's group (its clones share it), 0: none */
    uid_t uid;               /* gid the same */
    bool kvm;                /* bind /dev/kvm and add its group */
    double cpu_quota;        /* host CPUs (0.5: half of one); 0: no quota */
    uint64_t memory_bytes;   /* 0: no ceiling */
    unsigned pids_max;       /* 0: no ceiling */
    unsigned weight_threads; /* CPU weight: this many tasks' worth (vCPUs + 1), at least 1 */
} jail_config;

typedef struct jail jail;

/* Make the VM's cgroup (removing an empty stale one; under systemd with its manager answering,
 * the VM's transient scope instead: docs/isolation.md), set its limits, chown the VM directory
 * and what QEMU writes in it to the VM's uid, and compute the mounts. jailer::failed naming the
 * step (and the limit the host cannot do). */
int jail_prepare(const jail_config *c, jail **ret, vmctl_error **reterr);
void jail_free(jail *j);
/* The uid the jailed process runs as (async-signal-safe: a field). */
uid_t jail_uid(const jail *j);
static inline void jail_freep(jail **j)
{
    jail_free(*j);
}
#define cleanup_jail __attribute__((cleanup(jail_freep)))

/* In the child, right before exec (async-signal-safe): join the cgroup, unshare the mount, IPC
 * and UTS namespaces, build the root and pivot into it, drop every capability and the uid, set
 * no-new-privileges. 0, or -errno with *ret_step. Call it in the first process of the new PID
 * namespace (the supervisor unshares it: jail_unshare_pid). */
int jail_enter(const jail *j, int *ret_step);
/* In the supervisor, before forking the hypervisor (async-signal-safe). */
int jail_unshare_pid(void);

/* The VMs' cgroups are JAIL_CGROUP_DIR/NAME-HASH under a base: the hierarchy's root when
 * systemd does not run the host, else the cgroup vmctl runs in (docs/isolation.md); vmctl's own
 * processes go into JAIL_CGROUP_DIR/JAIL_CGROUP_SELF of a delegated v2 base that needs it. */
#define JAIL_CGROUP_DIR  "vmctl"
#define JAIL_CGROUP_SELF "supervise"
/* The cgroup of the VM whose directory is vmdir, relative to the base
 * ("vmctl/NAME-HASH": malloc'd). */
char *jail_cgroup_name(const char *vmdir);
/* Under systemd, the VM's transient scope instead: "vmctl-NAME-HASH.scope" (malloc'd). */
char *jail_scope_name(const char *vmdir);
/* Remove VM vmdir's cgroup directories (bounded wait while the last process leaves); under
 * systemd, stop its scope first (VM_FILE_JAIL_SCOPE: systemd kills what is left in it). 0 when none
 * is left. Also records an OOM kill seen there (VM_FILE_JAIL_OOM in vmdir). */
int jail_cgroup_remove(const char *vmdir);
/* Write c's limits into the cgroup directory dir (version 2, or 1 with v1_ctl the controllers
 * of dir's hierarchy, "cpu,cpuacct"): each one whose file is there; *seen |= the VMCTL_LIMIT_*
 * written. jailer::failed (step "cgroup limit") when a write fails. For jail_prepare and the
 * unit tests (a plain directory with the files stands for a cgroup). */
int jail_cgroup_limits(const jail_config *c, int version, const char *v1_ctl, const char *dir,
                       unsigned *seen, vmctl_error **reterr);

/* A running VM's cgroup as /proc/PID/cgroup and the cgroup files say. */
typedef struct jail_cgroup_info {
    int version;         /* 1 or 2 */
    char *path;          /* within the hierarchy, no leading '/' (v1: the memory controller's) */
    unsigned enforced;   /* VMCTL_LIMIT_*: the limit's file is there */
    unsigned unenforced; /* of the wanted ones, those not enforced */
    double cpu_quota;    /* host CPUs, 0: none */
    uint64_t memory_limit, pids_limit;
    bool have_cpu_usage, have_memory, have_pids;
    uint64_t cpu_usec;     /* v2 cpu.stat usage_usec, v1 cpuacct.usage */
    uint64_t memory_bytes; /* v2 memory.current, v1 memory.usage_in_bytes */
    uint64_t pids;         /* pids.current */
    uint64_t oom_kills;
} jail_cgroup_info;
/* Read it for process pid of VM vmdir; wanted: the VMCTL_LIMIT_* the VM should have.
 * -ENOENT when the process is not in the VM's cgroup, -EOPNOTSUPP without cgroups. */
int jail_cgroup_read(pid_t pid, const char *vmdir, unsigned wanted, jail_cgroup_info *out);
void jail_cgroup_info_clear(jail_cgroup_info *i);
/* The mode cgroups work in here: "v2", "v2 (systemd)", "v1", "v1 (hybrid)" (systemd's
 * layout: cgroup2 at unified/ without the controllers), ... or NULL (none mounted). */
const char *jail_cgroup_mode(void);

/* What doctor shows: the jail's state on this host (*ret_ok false: something cannot be done;
 * *ret_help then says what), and the cgroup limits. Both malloc'd. */
char *jail_host_summary(bool *ret_ok, const char **ret_help);
char *jail_cgroup_summary(bool *ret_ok, const char **ret_help);

/* The jail is on for this spec (vmctl runs as root and the VM was not made with --no-jail). */
bool jail_wanted(bool no_jail);
