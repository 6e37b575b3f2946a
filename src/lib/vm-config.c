/* SPDX-License-Identifier: MIT */
/* Config resolution: a vmctl_vm_config checked and turned into the vm_spec that create records,
 * and the VM's disk and cloud-init seed made from it. */
#include <errno.h>
#include <sys/random.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "cloudinit.h"
#include "ctx.h"
#include "error.h"
#include "guest.h"
#include "image-cache.h"
#include "ssh.h"
#include "util/util.h"
#include "vm-dir.h"
#include "vm-internal.h"
#include "vm-net.h"
#include "vm-spec.h"

#define DEFAULT_VCPUS      1
#define DEFAULT_MEMORY_MIB 256
#define MAX_VCPUS          255
#define MIN_MEMORY_MIB     32
#define MAX_MEMORY_MIB     (1024u * 1024u)
#define MAX_DISK_GIB       65536

/* config::invalid unless min <= value <= max; unit ("", " MiB", " GiB") follows the bounds. */
static int check_range(vmctl_error **reterr, const char *field, unsigned value, unsigned min,
                       unsigned max, const char *unit)
{
    if (value >= min && value <= max)
        return 0;
    char v[32], allowed[96];
    snprintf(v, sizeof(v), "%u", value);
    snprintf(allowed, sizeof(allowed), "%u to %u%s", min, max, unit);
    return err_invalid_field(reterr, field, v, allowed, "%s %s is out of range", field, v);
}

static int check_readable(vmctl_error **reterr, const char *field, const char *path)
{
    struct stat st;
    int e = stat(path, &st) < 0      ? errno
            : S_ISDIR(st.st_mode)    ? EISDIR
            : !S_ISREG(st.st_mode)   ? EINVAL
            : access(path, R_OK) < 0 ? errno
                                     : 0;
    if (!e)
        return 0;
    int r = err_invalid_field(reterr, field, path, "a readable regular file",
                              "%s '%s' does not exist or is not readable", field, path);
    err_cause(reterr, e);
    return r;
}

/* A file for the cloud-init seed: readable, and only for disk images (the default guest has no
 * cloud-init). */
static int check_seed_file(vmctl_error **reterr, const char *field, const char *path,
                           bool default_guest)
{
    int r = check_readable(reterr, field, path);
    if (r < 0)
        return r;
    if (default_guest)
        return err_invalid_field(
            reterr, field, path, "unset for the default guest, which has no cloud-init",
            "%s '%s' needs a disk image with cloud-init (--image)", field, path);
    return 0;
}

/* The mounts of c, checked (SRC an existing directory, DST absolute and safe on the kernel
 * command line, no DST twice), into s with the transport decided: virtiofs where virtiofsd can
 * run (it is installed and we are root: its sandbox needs namespaces), else 9p. */
static int resolve_mounts(const vmctl_vm_config *c, vm_spec *s, vmctl_error **reterr)
{
    if (!c->n_mounts)
        return 0;
    if (!c->mounts)
        return err_invalid_field(reterr, "mount", NULL, NULL, "n_mounts is set, mounts is NULL");
    if (c->mount_type && !streq(c->mount_type, "virtiofs") && !streq(c->mount_type, "9p"))
        return err_invalid_field(reterr, "mount-type", c->mount_type, "virtiofs or 9p",
                                 "unknown mount type '%s'", c->mount_type);
    if (c->n_mounts > VM_MAX_MOUNTS) {
        char v[32];
        snprintf(v, sizeof(v), "%zu", c->n_mounts);
        return err_invalid_field(reterr, "mount", v, "at most 16",
                                 "%zu mounts: at most %d are supported", c->n_mounts,
                                 VM_MAX_MOUNTS);
    }
    s->mounts = calloc(c->n_mounts, sizeof(*s->mounts));
    if (!s->mounts)
        return -ENOMEM;
    for (size_t i = 0; i < c->n_mounts; i++) {
        const vmctl_mount *m = &c->mounts[i];
        const char *src = m->source ? m->source : "";
        struct stat st;
        int e = stat(src, &st) < 0 ? errno : !S_ISDIR(st.st_mode) ? ENOTDIR : 0;
        if (e) {
            int r = err_invalid_field(reterr, "mount", src, "an existing host directory",
                                      "mount source '%s' is not an existing directory", src);
            err_cause(reterr, e);
            return r;
        }
        const char *dst = m->target ? m->target : "";
        if (dst[0] != '/' || strpbrk(dst, " \t\n,:\"'\\") || strlen(dst) > 255)
            return err_invalid_field(reterr, "mount", dst,
                                     "an absolute guest path without whitespace, quotes, ',', ':' "
                                     "or '\\'",
                                     "mount target '%s' is not a usable absolute path", dst);
        for (size_t j = 0; j < i; j++)
            if (streq(s->mounts[j].target, dst))
                return err_invalid_field(reterr, "mount", dst, "each target once",
                                         "mount target '%s' is given twice", dst);
        s->mounts[i].source = realpath(src, NULL);
        s->mounts[i].target = strdup(dst);
        s->mounts[i].read_only = m->read_only;
        s->n_mounts++;
        if (!s->mounts[i].source || !s->mounts[i].target)
            return -ENOMEM;
    }
    const char *type = c->mount_type;
    if (!type)
        type = geteuid() == 0 && access(VIRTIOFSD_PATH, X_OK) == 0 ? "virtiofs" : "9p";
    else if (streq(type, "virtiofs") && access(VIRTIOFSD_PATH, X_OK) < 0) {
        int r = err_invalid_field(reterr, "mount-type", type, "9p, or install virtiofsd",
                                  "mount type virtiofs needs '%s'", VIRTIOFSD_PATH);
        err_cause(reterr, errno);
        err_help(reterr, "Install the Debian package qemu-system-common, or use --mount-type 9p.");
        return r;
    }
    s->mount_type = strdup(type);
    return s->mount_type ? 0 : -ENOMEM;
}

/* vmctl.mounts=TAG:DST:ro|rw,... vmctl.fs=virtiofs|9p: what the default guest's /init mounts */
static char *mounts_cmdline(const vm_spec *s)
{
    if (!s->n_mounts)
        return strdup("");
    char *out = str_printf(" vmctl.fs=%s vmctl.mounts=", s->mount_type);
    for (size_t i = 0; out && i < s->n_mounts; i++) {
        char *next = str_printf("%s%sm%zu:%s:%s", out, i ? "," : "", i, s->mounts[i].target,
                                s->mounts[i].read_only ? "ro" : "rw");
        free(out);
        out = next;
    }
    return out;
}

int vm_spec_from_config(vmctl_ctx *ctx, const vmctl_vm_config *c, vm_spec **ret,
                        vmctl_error **reterr)
{
    if (!c || !c->name)
        return err_invalid_field(reterr, "name", NULL,
                                 "1-63 letters, digits, '-', '_' or '.', starting with a letter or "
                                 "digit",
                                 "name is required");
    if (!name_is_valid(c->name))
        return err_invalid_field(reterr, "name", c->name,
                                 "1-63 letters, digits, '-', '_' or '.', starting with a letter or "
                                 "digit",
                                 "invalid name '%s'", c->name);
    const backend_ops *be = backend_find(c->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    cleanup_vm_spec vm_spec *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->name = strdup(c->name);
    s->backend = strdup(be->name);

    s->vcpus = c->vcpus ? c->vcpus : DEFAULT_VCPUS;
    s->memory_mib = c->memory_mib ? c->memory_mib : DEFAULT_MEMORY_MIB;
    if (check_range(reterr, "vcpus", s->vcpus, 1, MAX_VCPUS, "") < 0 ||
        check_range(reterr, "memory", s->memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB, " MiB") < 0 ||
        check_range(reterr, "disk", c->disk_gib, 0, MAX_DISK_GIB, " GiB") < 0)
        return -EINVAL;
    s->disk_gib = c->disk_gib;
    s->no_jail = c->no_jail;
    if (c->cpu_quota < 0 || c->cpu_quota > MAX_VCPUS || (c->cpu_quota > 0 && c->cpu_quota < 0.01)) {
        char q[32];
        snprintf(q, sizeof(q), "%g", c->cpu_quota);
        return err_invalid_field(reterr, "cpu-quota", q,
                                 "0.01 to 255 host CPUs (0.5: half of one core)",
                                 "invalid cpu-quota '%s'", q);
    }
    s->cpu_quota = c->cpu_quota;

    for (char *const *e = c->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !env_name_is_valid(*e, (size_t)(eq - *e)))
            return err_invalid_field(reterr, "env", *e,
                                     "K=V with K matching [A-Za-z_][A-Za-z0-9_]*",
                                     "invalid env entry '%s'", *e);
    }
    if (c->env && !(s->env = strv_copy(c->env)))
        return -ENOMEM;

    int rm = resolve_mounts(c, s, reterr);
    if (rm < 0)
        return rm;
    if (c->owner_bound) {
        s->owner_pid = getpid();
        s->owner_start = proc_start_time(s->owner_pid);
    }

    bool default_guest = !c->kernel && (!c->image || streq(c->image, "default"));
    if ((c->cloud_init &&
         check_seed_file(reterr, "cloud-init", c->cloud_init, default_guest) < 0) ||
        (c->ssh_key && check_seed_file(reterr, "ssh-key", c->ssh_key, default_guest) < 0))
        return -EINVAL;

    if (default_guest) {
        guest_paths gp = {0};
        int r = guest_default_paths(ctx->home, &gp, reterr);
        if (r < 0)
            return r;
        s->image = strdup("default");
        s->kernel = gp.kernel;
        s->initrd = gp.initrd;
        /* vmctl.hostname: /init sets it before anything runs (the agent pushes it again) */
        cleanup_free char *mounts = mounts_cmdline(s);
        s->cmdline = mounts ? str_printf("%s vmctl.hostname=%s%s%s%s", gp.cmdline, c->name, mounts,
                                         c->cmdline ? " " : "", c->cmdline ? c->cmdline : "")
                            : NULL;
        free(gp.cmdline);
        s->agent = true;
    } else {
        bool rootfs = false;
        if (c->image) {
            /* A disk image: a qcow2 overlay on it, or (raw root filesystem booted with --kernel)
             * a clone; created by vmctl_vm_create in the VM directory. */
            image_ref ref = {};
            int r = image_resolve(ctx->home, c->image, &ref, reterr);
            if (r < 0)
                return r;
            rootfs = c->kernel && streq(ref.format, "raw");
            if (c->disk_gib && (uint64_t)c->disk_gib << 30 < ref.virtual_size) {
                char v[32];
                snprintf(v, sizeof(v), "%u", c->disk_gib);
                image_ref_clear(&ref);
                return err_invalid_field(reterr, "disk", v,
                                         "at least the image's virtual size (vmctl image inspect)",
                                         "disk %s GiB is smaller than the image", v);
            }
            cleanup_free char *dir = ctx_vm_dir(ctx, c->name);
            s->image = strdup(ref.name ? ref.name : ref.path);
            s->base = TAKE_PTR(ref.path);
            s->base_format = TAKE_PTR(ref.format);
            image_ref_clear(&ref);
            if (!dir)
                return -ENOMEM;
            s->disk = str_printf("%s/%s", dir, rootfs ? VM_FILE_ROOTFS : VM_FILE_DISK);
            s->disk_format = strdup(rootfs ? "raw" : "qcow2");
            s->seed = str_printf("%s/" VM_FILE_SEED, dir);
            if (!s->image || !s->disk || !s->disk_format || !s->seed || !s->base_format)
                return -ENOMEM;
        }
        if (c->kernel) {
            int r = check_readable(reterr, "kernel", c->kernel);
            if (r < 0)
                return r;
            if (c->initrd && (r = check_readable(reterr, "initrd", c->initrd)) < 0)
                return r;
            s->kernel = realpath(c->kernel, NULL);
            s->initrd = c->initrd ? realpath(c->initrd, NULL) : NULL;
            if (!s->image)
                s->image = strdup(s->kernel ? s->kernel : c->kernel);
            const char *dflt =
                rootfs ? "console=ttyS0 panic=-1 root=/dev/vda rw" : "console=ttyS0 panic=-1";
            s->cmdline = strdup(c->cmdline ? c->cmdline : dflt);
        }
        /* The virtio-serial port is there; whether an agent answers depends on the guest. */
        s->agent = true;
    }

    if (c->n_ports) {
        s->ports = calloc(c->n_ports, sizeof(*s->ports));
        if (!s->ports)
            return -ENOMEM;
        memcpy(s->ports, c->ports, c->n_ports * sizeof(*s->ports));
        s->n_ports = c->n_ports;
    }
    /* the machine and the network: what the backend has (it fills in its defaults) */
    if ((c->machine && !(s->machine = strdup(c->machine))) ||
        (c->net && !(s->net = strdup(c->net))))
        return -ENOMEM;
    int r = be->validate(s, reterr);
    if (r < 0)
        return r;
    /* vm-net.c: allow-list, limits (validated before anything exists) */
    r = vmnet_check_config(c, s, reterr);
    if (r < 0)
        return r;
    for (size_t i = 0; i < s->n_ports; i++)
        if (s->ports[i].guest_port == 0)
            return err_invalid_field(reterr, "port", "0", "HOST:GUEST with GUEST in 1-65535",
                                     "port: guest port 0 is not allowed");
    /* host port 0: chosen and reserved by net_prepare_ports() in create */

    cleanup_free char *notice = NULL;
    r = accel_resolve(c->accel ? c->accel : "auto", &s->accel, &notice, reterr);
    if (r < 0)
        return r;
    if (notice)
        ctx_log(ctx, VMCTL_LOG_NOTICE, "%s", notice);

    if (c->snapshottable) {
        /* jailed like any VM: the jail binds the RAM file in (docs/isolation.md, "Snapshots");
         * on tmpfs, named at random: a destroyed VM's name may come back (snapshot.c) */
        cleanup_free char *ramdir = snapshot_ram_dir();
        uint8_t rnd[8] = {0};
        uint64_t fallback = realtime_usec() ^ ((uint64_t)getpid() << 40);
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
            memcpy(rnd, &fallback, sizeof(rnd));
        s->ram_file =
            ramdir ? str_printf("%s/%s.%02x%02x%02x%02x%02x%02x%02x%02x.ram", ramdir, c->name,
                                rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7])
                   : NULL;
        if (!s->ram_file)
            return -ENOMEM;
    }
    if (!s->name || !s->backend || !s->image || !s->machine || !s->net ||
        (s->kernel && !s->cmdline))
        return -ENOMEM;
    *ret = TAKE_PTR(s);
    return 0;
}

/* The VM's disk (overlay or rootfs clone) and its cloud-init seed, in the VM directory. */
int vm_prepare_disk(vmctl_ctx *ctx, const vmctl_vm_config *c, const vm_spec *spec,
                    vmctl_error **reterr)
{
    cleanup_free char *vm_dir = ctx_vm_dir(ctx, spec->name);
    cleanup_free char *vm_pub = vm_dir ? str_printf("%s/" SSHC_PUBKEY_FILE, vm_dir) : NULL;
    if (!vm_pub)
        return -ENOMEM;
    image_ref ref = {};
    int r = image_resolve(ctx->home, spec->image, &ref, reterr);
    if (r < 0)
        return r;
    uint64_t size = (uint64_t)spec->disk_gib << 30;
    if (spec->disk_format && streq(spec->disk_format, "raw"))
        r = image_clone_rootfs(spec->disk, &ref, size, reterr);
    else
        r = image_make_overlay(spec->disk, &ref, size, reterr);
    image_ref_clear(&ref);
    if (r < 0)
        return err_prefix(reterr, r, "while creating the disk of vm '%s'", spec->name);
    cleanup_free char *nc = NULL; /* --net tap: the address leased at create (vm-net.c) */
    if (spec->seed && streq(spec->net, "tap")) {
        store_lease l = {};
        r = store_lease_get(ctx->store, spec->name, &l, reterr);
        if (r < 0)
            return r;
        nc = r > 0 ? vmnet_cloudinit_config(&l) : NULL;
        store_lease_clear(&l);
        if (!nc)
            return err_make(reterr, VMCTL_E_INTERNAL, r > 0 ? ENOMEM : ENOENT,
                            "no network configuration for vm '%s'", spec->name);
    }
    if (spec->seed) {
        cloudinit_seed seed = {
            .hostname = spec->name,
            .user_data = c->cloud_init,
            .ssh_key = c->ssh_key, /* the user's key, and */
            .vm_ssh_key = vm_pub,  /* the VM's own (ssh.c), both authorized */
            .network = !streq(spec->net, "none"),
            .network_config = nc,
        };
        r = cloudinit_write_seed(spec->seed, &seed, reterr);
        if (r < 0)
            return err_prefix(reterr, r, "while creating the seed of vm '%s'", spec->name);
    }
    return 0;
}
