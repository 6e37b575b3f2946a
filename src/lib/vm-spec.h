/* SPDX-License-Identifier: MIT */
/* The resolved, stored configuration of one VM (what `create` decided), serialised as JSON in
 * the store's `config` column. Everything start needs is here: start only launches. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/vm.h>

/* A host directory shared with the guest (vmctl_mount, resolved): tag m<i> for mount i. */
typedef struct vm_spec_mount {
    char *source; /* canonical absolute host path */
    char *target; /* absolute guest path */
    bool read_only;
} vm_spec_mount;

#define VM_MAX_MOUNTS 16
/* Debian's qemu-system-common */
#define VIRTIOFSD_PATH "/usr/lib/qemu/virtiofsd"

typedef struct vm_spec {
    char *name;
    char *backend; /* "qemu" */
    char *machine; /* "microvm" | "q35" */
    char *accel;   /* resolved at create: "kvm" | "tcg" */
    unsigned vcpus;
    unsigned memory_mib;
    unsigned disk_gib;
    char *image;       /* "default" or the image name/path */
    char *kernel;      /* absolute path or NULL */
    char *initrd;      /* absolute path or NULL */
    char *cmdline;     /* full kernel command line or NULL */
    char *disk;        /* absolute path of the VM's disk (overlay) or NULL */
    char *disk_format; /* format of disk: "qcow2" (overlay, also when NULL) or "raw" (rootfs) */
    char *base;        /* absolute path of the image the disk was made from, or NULL */
    char *base_format; /* its format (qcow2, raw, vmdk, ...; QEMU is told, never probes), or NULL
                          (VMs made before it was recorded: the overlay's header says) */
    char *disk_layer;  /* a snapshot's immutable qcow2 layer between disk and base (its backing
                          file is base, or the first of disk_chain), or NULL (docs/snapshots.md
                          "On disk") */
    char **disk_chain; /* the older layers under disk_layer, top down: each the backing file of
                          the one before, the last's the base (NULL-terminated, may be NULL) */
    char *seed;        /* absolute path of the cloud-init seed ISO, or NULL */
    char *net;         /* "user" | "tap" | "none" */
    vmctl_port_forward *ports;
    size_t n_ports;
    char **env; /* K=V, NULL-terminated (may be NULL) */
    bool agent; /* the guest runs vmctl-agent on the virtio-serial port */
    /* --net tap (docs/networking.md): the egress allow-list (canonical "CIDR[:PORT[-PORT]]
     * [/tcp|udp]" texts, NULL-terminated, may be NULL), DNS, everything */
    char **allow;
    bool allow_dns, allow_all;
    unsigned rate_limit_mbps; /* 0: none (tbf on the TAP) */
    unsigned disk_iops;       /* 0: none (QEMU throttle group on the disk) */
    /* Not part of the JSON, set by vm.c before launch for --net tap: the TAP's descriptor
     * (handed to QEMU; valid when mac is set) and the guest's MAC. */
    int tap_fd;
    char *mac;
    /* --snapshottable: the guest's RAM is this file (on tmpfs, shared with the hypervisor), so
     * that a template snapshot leaves RAM out of the stream (docs/snapshots.md); NULL: anonymous
     * RAM. */
    char *ram_file;
    char *nic_mac; /* a clone's NIC MAC ("52:54:00:..."), NULL: the hypervisor's default */
    /* Not part of the JSON: set by snapshot.c for a launch that restores a snapshot. restore_ram:
     * map this file privately as the guest's RAM (copy-on-write: a template's); incoming: start
     * with the guest not running, waiting for backend_ops.snapshot_load. */
    char *restore_ram;
    bool incoming;
    bool no_jail;     /* --no-jail: the hypervisor runs unconfined (JSON "jail": false) */
    double cpu_quota; /* host CPUs the VM may use (0.5: half of one); 0: no quota */
    vm_spec_mount *mounts;
    size_t n_mounts;
    char *mount_type; /* with mounts: "virtiofs" | "9p" (decided at create), else NULL */
    /* Bound to its owner (vmctl_vm_config.owner_bound): the process (pid + start time) whose
     * end kills the VM and removes it. owner_pid 0: not bound. */
    pid_t owner_pid;
    uint64_t owner_start;
    /* Not part of the JSON: the store's cid column, set by vm.c before launch. 0: none (no
     * vsock device); else >= 3. */
    uint32_t guest_cid;
    /* Not part of the JSON: the store's jail uid, set by vm.c before launch when the jail is on
     * (jail_wanted). 0: no jail. */
    uint32_t jail_uid;
} vm_spec;

void vm_spec_free(vm_spec *s);
static inline void vm_spec_freep(vm_spec **s)
{
    vm_spec_free(*s);
}
#define cleanup_vm_spec __attribute__((cleanup(vm_spec_freep)))

/* JSON round trip. to_json: 0, -EINVAL when a required string (name, backend, machine, accel,
 * net) is NULL, -ENOMEM. from_json: store::corrupt with detail `field` naming the missing or
 * invalid field ("config" when the text is not a JSON object). */
int vm_spec_to_json(const vm_spec *s, char **ret);
int vm_spec_from_json(const char *json, vm_spec **ret, vmctl_error **reterr);
