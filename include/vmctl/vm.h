/* SPDX-License-Identifier: MIT */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* A context: one $VMCTL_HOME and its store. Not thread-safe; use one per thread. */
typedef struct vmctl_ctx vmctl_ctx;

typedef enum vmctl_log_level {
    VMCTL_LOG_DEBUG,
    VMCTL_LOG_INFO,
    VMCTL_LOG_NOTICE, /* one-line notices for the user (e.g. "KVM unusable, using TCG") */
    VMCTL_LOG_WARNING,
} vmctl_log_level;

typedef void (*vmctl_log_fn)(void *userdata, vmctl_log_level level, const char *msg);

/* home == NULL: $VMCTL_HOME, else $XDG_DATA_HOME/vmctl, else ~/.local/share/vmctl. */
int vmctl_ctx_new(const char *home, vmctl_ctx **ret, vmctl_error **reterr);
/* Flags of vmctl_ctx_open. VMCTL_CTX_NO_CREATE: create nothing (for commands that only read):
 * a home without a store (vmctl.db), or no home at all, opens as an empty one kept in memory. */
enum {
    VMCTL_CTX_NO_CREATE = 1u << 0,
};
int vmctl_ctx_open(const char *home, unsigned flags, vmctl_ctx **ret, vmctl_error **reterr);
/* False for a context opened with VMCTL_CTX_NO_CREATE on a home that has no store yet. */
bool vmctl_ctx_has_store(const vmctl_ctx *ctx);
void vmctl_ctx_free(vmctl_ctx *ctx);
const char *vmctl_ctx_get_home(const vmctl_ctx *ctx);
void vmctl_ctx_set_log(vmctl_ctx *ctx, vmctl_log_fn fn, void *userdata);
/* Long operations (image pull and import) stop, undo what they did and fail with -ECANCELED
 * (vm_manager::io) once *flag becomes non-zero: point it at the flag a SIGINT/SIGTERM handler
 * sets. NULL: never cancelled. */
void vmctl_ctx_set_cancel(vmctl_ctx *ctx, const volatile sig_atomic_t *flag);

typedef enum vmctl_vm_state {
    VMCTL_VM_CREATED,
    VMCTL_VM_RUNNING,
    VMCTL_VM_PAUSED,
    VMCTL_VM_STOPPED,
    VMCTL_VM_CRASHED,
    _VMCTL_VM_STATE_MAX,
} vmctl_vm_state;

const char *vmctl_vm_state_to_string(vmctl_vm_state s);
int vmctl_vm_state_from_string(const char *s); /* -EINVAL when unknown */

typedef struct vmctl_port_forward {
    uint16_t host_port; /* 0: pick a free one */
    uint16_t guest_port;
    bool udp;
} vmctl_port_forward;

/* Parse "HOST:GUEST[/udp|/tcp]"; config::invalid on bad input. */
int vmctl_port_forward_parse(const char *s, vmctl_port_forward *ret, vmctl_error **reterr);

/* A host directory shared with the guest (`--mount SRC:DST[:ro]`): through virtio-fs (one
 * virtiofsd per mount, sandboxed in SRC), or 9p where virtio-fs cannot run. Strings borrowed. */
typedef struct vmctl_mount {
    const char *source; /* host directory (must exist) */
    const char *target; /* absolute guest path: no whitespace, ',' or ':' */
    bool read_only;
} vmctl_mount;

/* Parse "SRC:DST[:ro|:rw]"; ret's strings point into s. config::invalid (field "mount") on bad
 * input. Not checked here: whether SRC exists (create does). */
int vmctl_mount_parse(char *s, vmctl_mount *ret, vmctl_error **reterr);

/* What create needs. Strings are borrowed; NULL means "default". */
typedef struct vmctl_vm_config {
    const char *name;
    const char *backend; /* "qemu" (default), "firecracker", "propolis" */
    const char *image;   /* disk image (name in the image cache or a path); NULL + no kernel: the
                            default guest */
    const char *kernel;
    const char *initrd;
    const char *cmdline; /* extra kernel arguments */
    unsigned vcpus;      /* 0: 1 */
    unsigned memory_mib; /* 0: 256 */
    unsigned disk_gib;   /* 0: the image's size */
    const char *machine; /* "microvm" | "q35" | NULL (microvm for kernels, q35 for disk images) */
    const char *accel;   /* "auto" | "kvm" | "tcg" | NULL (auto) */
    const char *net; /* "user" | "tap" | "none" | NULL (none for the default guest, else user) */
    const vmctl_port_forward *ports;
    size_t n_ports;
    const char *cloud_init; /* user-data file */
    const char *ssh_key;    /* public key file */
    char *const *env;       /* "K=V", NULL-terminated, may be NULL */
    const vmctl_mount *mounts;
    size_t n_mounts;
    const char *mount_type; /* "virtiofs" | "9p" | NULL (virtiofs where virtiofsd can run) */
    /* Bound to the creating process: when it is gone, the VM is killed (by its supervisor) and
     * removed (by the next command that looks at it): `vmctl run --rm`, the containerd shim. */
    bool owner_bound;
    /* The canonical path of the VMFile that makes this VM (vmctl up); NULL: made by hand. */
    const char *project;
    /* The jail (docs/isolation.md): on by default when vmctl runs as root; true: off. */
    bool no_jail;
    /* Host CPUs the VM may use (cgroup CPU quota: 0.5 is half of one core); 0: no quota. */
    double cpu_quota;
    /* --net tap (docs/networking.md): egress is denied but for these. allow: n_allow texts
     * "CIDR[:PORT[-PORT]][/tcp|udp]"; allow_dns: the host's resolvers on port 53; allow_all:
     * everything but other VMs and the host. */
    const char *const *allow;
    size_t n_allow;
    bool allow_dns, allow_all;
    unsigned rate_limit_mbps; /* 0: none; --net tap: what the host sends the guest, megabit/s */
    unsigned disk_iops;       /* 0: none; the disk's read+write operations per second */
    /* The guest's RAM in a file on tmpfs (/dev/shm), so that template snapshots leave it out of
     * the stream (include/vmctl/snapshot.h). */
    bool snapshottable;
} vmctl_vm_config;

/* How a VM's last provisioning went (VMFile steps, docs/vmfile.md). */
typedef enum vmctl_provision_state {
    VMCTL_PROVISION_NONE,    /* never provisioned (made by hand, or no steps yet) */
    VMCTL_PROVISION_PENDING, /* started and not finished (or interrupted) */
    VMCTL_PROVISION_OK,
    VMCTL_PROVISION_FAILED,
} vmctl_provision_state;

const char *vmctl_provision_state_to_string(vmctl_provision_state s);

typedef struct vmctl_vm_info {
    char *name;
    vmctl_vm_state state;
    char *backend;
    char *machine;
    char *accel; /* resolved: "kvm" or "tcg" */
    unsigned vcpus;
    unsigned memory_mib;
    unsigned disk_gib;
    char *image; /* "default" for the default guest, else the image or kernel path */
    char *kernel;
    char *initrd;
    char *cmdline;
    char *net;
    vmctl_port_forward *ports;
    size_t n_ports;
    char **env;
    pid_t pid; /* 0 unless running or paused */
    char *dir;
    int64_t created_at; /* unix seconds */
    char *crash_note;   /* crashed only: tail of the QEMU log */
    uint32_t cid;       /* guest CID for AF_VSOCK (3 or more), 0: none */
    char *project;      /* the VMFile that made it (canonical path), NULL: made by hand */
    vmctl_provision_state provision_state;
    unsigned provision_step; /* failed: the step that failed (1-based) */
    char *provision_error;   /* failed: what went wrong */
    int64_t provisioned_at;  /* unix seconds of the last successful provisioning, 0: never */
    char *paused_by;         /* state paused by the hypervisor itself: "io-error"; NULL otherwise */
    char *pause_cause;       /* with paused_by: the devices and their error, "disk0: nospace" */
    /* The jail (docs/isolation.md). jail: the VM is made to be jailed (not --no-jail);
     * jail_uid: the uid allocated to it (0: none yet); running only: jailed (its hypervisor runs
     * as jail_uid under seccomp), cgroup (its path under /sys/fs/cgroup: "vmctl/NAME-HASH"). */
    bool jail;
    uint32_t jail_uid;
    bool jailed;
    char *cgroup;
    double cpu_quota;      /* host CPUs, 0: no quota */
    uint64_t memory_limit; /* the cgroup's memory ceiling in bytes while jailed (read from the
                            * cgroup), else 0: also where the host has no memory controller */
    uint64_t pids_limit;   /* the same for pids.max */
    int cgroup_version;    /* while jailed: 1 or 2, else 0 */
    /* While jailed: the VMCTL_LIMIT_* the VM should have and the host does not enforce (no
     * controller for them where vmctl makes its cgroups: docs/isolation.md). */
    unsigned limits_unenforced;
    /* --net tap: the guest's address ("10.88.0.2/30"), its gateway (the host's end), MAC and
     * the TAP on the host; NULL otherwise. The egress policy: allow (NULL-terminated, may be
     * NULL), allow_dns, allow_all. */
    char *ip;
    char *gateway;
    char *mac;
    char *ifname;
    char **allow;
    bool allow_dns, allow_all;
    unsigned rate_limit_mbps;
    unsigned disk_iops;
} vmctl_vm_info;

/* The per-VM limits of the jail (vmctl_vm_info.limits_unenforced). */
enum {
    VMCTL_LIMIT_CPU = 1u << 0,    /* --cpu-quota */
    VMCTL_LIMIT_MEMORY = 1u << 1, /* the memory ceiling */
    VMCTL_LIMIT_PIDS = 1u << 2,   /* the pids ceiling */
    VMCTL_LIMIT_IO = 1u << 3,     /* the disk I/O weight */
};

void vmctl_vm_info_free(vmctl_vm_info *info);
void vmctl_vm_info_list_free(vmctl_vm_info **list, size_t n);

int vmctl_vm_create(vmctl_ctx *ctx, const vmctl_vm_config *config, vmctl_error **reterr);
/* How long a boot is waited for (readiness: the guest agent answers) when the caller passes a
 * timeout of 0 or less: the library's default, VMCTL_BOOT_TIMEOUT_TCG_SEC for a VM under TCG
 * (emulated: slower boots), VMCTL_BOOT_TIMEOUT_SEC otherwise. */
#define VMCTL_BOOT_TIMEOUT_SEC     60.0
#define VMCTL_BOOT_TIMEOUT_TCG_SEC 120.0
/* Start; with wait, block until the guest agent answers or timeout_sec passes (0 or less: the
 * default boot timeout above). */
int vmctl_vm_start(vmctl_ctx *ctx, const char *name, bool wait, double timeout_sec,
                   vmctl_error **reterr);
/* Wait for a running VM to be ready, as vmctl_vm_start with wait (timeout_sec as there). */
int vmctl_vm_wait_ready(vmctl_ctx *ctx, const char *name, double timeout_sec, vmctl_error **reterr);
/* Graceful: agent shutdown or ACPI power-down, then SIGTERM, then SIGKILL, each bounded by
 * timeout_sec (0: 10 s). force skips the graceful step. */
int vmctl_vm_stop(vmctl_ctx *ctx, const char *name, double timeout_sec, bool force,
                  vmctl_error **reterr);
int vmctl_vm_kill(vmctl_ctx *ctx, const char *name, vmctl_error **reterr);
int vmctl_vm_pause(vmctl_ctx *ctx, const char *name, vmctl_error **reterr);
int vmctl_vm_resume(vmctl_ctx *ctx, const char *name, vmctl_error **reterr);
/* A running or paused VM is refused unless force (then it is killed first). */
int vmctl_vm_destroy(vmctl_ctx *ctx, const char *name, bool force, vmctl_error **reterr);
int vmctl_vm_get(vmctl_ctx *ctx, const char *name, vmctl_vm_info **ret, vmctl_error **reterr);
int vmctl_vm_list(vmctl_ctx *ctx, vmctl_vm_info ***ret, size_t *n, vmctl_error **reterr);

/* Paths of a VM's logs: which is "console" (guest serial) or "qemu" (QEMU's own stderr). */
int vmctl_vm_log_path(vmctl_ctx *ctx, const char *name, const char *which, char **ret,
                      vmctl_error **reterr);
/* A connected stream socket to the VM's serial console (caller owns the fd). */
int vmctl_vm_console_open(vmctl_ctx *ctx, const char *name, int *ret_fd, vmctl_error **reterr);

#ifdef __cplusplus
}
#endif
