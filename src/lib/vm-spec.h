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
    char *seed;        /* absolute path of the cloud-init seed ISO, or NULL */
    char *net;         /* "user" | "tap" | "none" */
    vmctl_port_forward *ports;
    size_t n_ports;
    char **env; /* K=V, NULL-terminated (may be NULL) */
    bool agent; /* the guest runs vmctl-agent on the virtio-serial port */
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
