/* SPDX-License-Identifier: MIT */
/* Snapshots, restore and clones (include/vmctl/snapshot.h, docs/snapshots.md): the orchestration
 * on top of the store (store-snapshot.c), the backend's snapshot ops and the agent. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vmctl/snapshot.h>

#include "agent-client.h"
#include "backend.h"
#include "ctx.h"
#include "arg-check.h"
#include "error.h"
#include "image-cache.h"
#include "image-format.h"
#include "jail.h"
#include "qcow2.h"
#include "net.h"
#include "tap.h"
#include "vm-net.h"
#include "ssh.h"
#include "snapshot-internal.h"
#include "store-snapshot.h"
#include "supervise.h"
#include "util/util.h"
#include "vm-internal.h"
#include "vm-spec.h"

#define SNAPSHOT_DIR      "snapshots"
#define SNAP_FILE_STATE   "state"
#define SNAP_FILE_DISK    "disk.qcow2" /* the disk's immutable layer (docs/snapshots.md) */
#define SNAP_FILE_CONFIG  "vm.json"
#define SNAP_FILE_SWITCH  "disk.switch" /* while made: the disk's new and old top nodes */
#define SNAP_MAX_LAYERS   16            /* a disk's chain of layers at most this deep */
#define SAVE_TIMEOUT      120.0         /* a full snapshot writes all of RAM */
#define LOAD_TIMEOUT      120.0
#define CONTROL_TIMEOUT   10.0
#define IDENTITY_TIMEOUT  30.0
#define QUIT_WAIT_TIMEOUT 10.0

static int oom(vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
}

static int not_found(vmctl_error **reterr, const char *vm, const char *snap)
{
    int r = err_make(reterr, VMCTL_E_SNAPSHOT_NOT_FOUND, ENOENT, "vm '%s' has no snapshot '%s'", vm,
                     snap);
    err_detail(reterr, "vm", "%s", vm);
    err_detail(reterr, "snapshot", "%s", snap);
    err_help(reterr, "List the snapshots with `vmctl snapshot list %s`.", vm);
    return r;
}

static int check_name(vmctl_error **reterr, const char *field, const char *name)
{
    if (name && name_is_valid(name))
        return 0;
    int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                     "invalid %s name '%s': use 1-63 letters, digits, '-', '_' and '.'", field,
                     name ? name : "");
    err_detail(reterr, "field", "%s", field);
    return r;
}

static char *snap_dir(vmctl_ctx *ctx, const char *vm, const char *snap)
{
    return str_printf("%s/" SNAPSHOT_DIR "/%s/%s", ctx->home, vm, snap);
}

/* Random hex for file names. */
static void random_hex(char *buf, size_t bytes)
{
    uint8_t raw[16] = {0};
    if (bytes > sizeof(raw))
        bytes = sizeof(raw);
    if (getrandom(raw, bytes, 0) != (ssize_t)bytes) {
        uint64_t t = now_usec() ^ (uint64_t)getpid() << 32;
        memcpy(raw, &t, bytes < 8 ? bytes : 8);
    }
    for (size_t i = 0; i < bytes; i++)
        snprintf(buf + 2 * i, 3, "%02x", raw[i]);
}

/* The directory of template RAM files: /dev/shm/vmctl-UID (tmpfs), 0700. */
char *snapshot_ram_dir(void)
{
    return str_printf("/dev/shm/vmctl-%u", (unsigned)getuid());
}

/* Remove what an incomplete snapshot row names, then the row (its owner is dead). */
static void remove_snapshot_files(const store_snapshot *s)
{
    if (s->ram)
        (void)unlink(s->ram);
    (void)rm_rf(s->dir);
    cleanup_free char *glob_tmp = str_printf("%s.tmp", s->dir);
    if (glob_tmp)
        (void)rm_rf(glob_tmp);
}

/* spec as it was before a snapshot put its disk on a new layer: the top layer taken off. */
static int spec_pop_layer(vm_spec *spec)
{
    free(spec->disk_layer);
    spec->disk_layer = NULL;
    if (!spec->disk_chain || !spec->disk_chain[0])
        return 0;
    spec->disk_layer = spec->disk_chain[0];
    memmove(spec->disk_chain, spec->disk_chain + 1,
            strv_length(spec->disk_chain) * sizeof(*spec->disk_chain));
    return 0;
}

/* The name QEMU opened the disk's node `node` by: the disk's path for the node of its launch
 * (disk0), DISK.NODE for an overlay a disk switch added. A reopen (blockdev-snapshot makes the
 * old top read-only, a commit read-write again) opens that name anew, so it must name that
 * node's file when QEMU changes it. */
static char *node_path(const char *disk, const char *node)
{
    return streq(node, "disk0") ? strdup(disk) : str_printf("%s.%s", disk, node);
}

/* A file that exists, of two: a, else b, else NULL. */
static const char *either(const char *a, const char *b)
{
    return access(a, F_OK) == 0 ? a : access(b, F_OK) == 0 ? b : NULL;
}

/* Undo the disk switch of an incomplete snapshot of v (its disk file disk) whose directory is
 * tmp or dir (docs/snapshots.md "Crash safety of the switch"): the old overlay back in place
 * (and QEMU on it again when it runs), the new one removed, v's configuration orig_json. 0: v's
 * disk is as before the snapshot (nothing names the layer: the snapshot's files may go); < 0:
 * it could not be undone, nothing moved (the files must stay). */
static int disk_switch_undo(vmctl_ctx *ctx, const backend_ops *be, const store_vm *v,
                            const char *disk, const char *orig_json, const char *tmp,
                            const char *dir, vmctl_error **reterr)
{
    cleanup_free char *m_tmp = str_printf("%s/" SNAP_FILE_SWITCH, tmp);
    cleanup_free char *m_dir = str_printf("%s/" SNAP_FILE_SWITCH, dir);
    cleanup_free char *l_tmp = str_printf("%s/" SNAP_FILE_DISK, tmp);
    cleanup_free char *l_dir = str_printf("%s/" SNAP_FILE_DISK, dir);
    cleanup_free char *aside_path = str_printf("%s.undo", disk);
    if (!m_tmp || !m_dir || !l_tmp || !l_dir || !aside_path)
        return oom(reterr);
    const char *marker = either(m_tmp, m_dir);
    if (!marker)
        return 0; /* the switch never began */
    cleanup_free char *text = NULL;
    size_t len = 0;
    char new_node[64] = "", old_node[64] = "";
    if (read_file(marker, &text, &len) < 0 || sscanf(text, "%63s %63s", new_node, old_node) != 2)
        return err_make(reterr, VMCTL_E_SNAPSHOT_FAILED, EIO, "cannot read '%s'", marker);
    cleanup_free char *next = node_path(disk, new_node);
    cleanup_free char *old_name = node_path(disk, old_node);
    if (!next || !old_name)
        return oom(reterr);
    bool old_link = !streq(old_name, disk);
    /* the files first: the commit reopens the old overlay by the name QEMU opened it by, the
     * VM's disk path (its first boot) or disk.qcow2.next (a disk switched before in this
     * process): during the commit both name the old overlay (a hard link) */
    const char *layer = either(l_tmp, l_dir);
    /* the new overlay aside: at the disk's path once the old one moved, else at .next */
    const char *new_at = layer ? disk : next;
    bool aside = false;
    if (access(new_at, F_OK) == 0) {
        if (rename(new_at, aside_path) < 0)
            goto io;
        aside = true;
    }
    int r = 0;
    bool in_qemu = false;
    if (layer && rename(layer, disk) < 0)
        r = -errno;
    else if (old_link && (unlink(old_name), link(disk, old_name) < 0) && errno != ENOENT)
        r = -errno;
    else if (v->pid > 0 && proc_alive(v->pid, v->pid_start) && be->disk_unsnapshot) {
        in_qemu = true;
        r = be->disk_unsnapshot(v->dir, new_node, old_node, vm_deadline_after(SAVE_TIMEOUT),
                                reterr);
    }
    if (r < 0) {
        /* everything back where it was: the layer stays named by the new overlay */
        int saved = -r;
        if (old_link)
            (void)unlink(old_name);
        if (layer && access(layer, F_OK) < 0)
            (void)rename(disk, layer);
        if (aside)
            (void)rename(aside_path, new_at);
        if (in_qemu)
            return err_prefix(reterr, r, "while undoing the disk switch of vm '%s'", v->name);
        errno = saved;
        goto io;
    }
    (void)unlink(aside_path);
    (void)unlink(next);
    if (old_link)
        (void)unlink(old_name);
    (void)unlink(marker);
    if ((r = store_vm_set_config(ctx->store, v->name, orig_json, reterr)) < 0)
        return r;
    ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s': the disk switch of an unfinished snapshot undone",
            v->name);
    return 0;
io:
    return err_make(reterr, VMCTL_E_IO, errno, "cannot move the disk of vm '%s' back: %s", v->name,
                    strerror(errno));
}

/* Repair of a disk snapshot whose maker died: its switch undone. 0 when the snapshot's files
 * may go. */
static int reconcile_disk(vmctl_ctx *ctx, const store_snapshot *s)
{
    cleanup_vm_spec vm_spec *orig = NULL;
    if (!s->config || vm_spec_from_json(s->config, &orig, NULL) < 0 || !orig->disk ||
        !orig->disk_layer)
        return 0;
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    if (vm_load(ctx, s->vm, &v, &spec, NULL) < 0)
        return 0; /* the source is gone: nothing names the layer */
    const backend_ops *be = backend_find(spec->backend, NULL);
    cleanup_free char *json = NULL;
    cleanup_free char *tmp = str_printf("%s.tmp", s->dir);
    if (!be || !tmp || spec_pop_layer(orig) < 0 || vm_spec_to_json(orig, &json) < 0)
        return -ENOMEM;
    cleanup_close int lock = -1;
    cleanup_error vmctl_error *e = NULL;
    int r = vm_lock(ctx, s->vm, CONTROL_TIMEOUT, &lock, &e);
    if (r >= 0)
        r = disk_switch_undo(ctx, be, v, orig->disk, json, tmp, s->dir, &e);
    if (r < 0)
        ctx_log(ctx, VMCTL_LOG_WARNING,
                "snapshot '%s/%s' left incomplete: its disk switch is not undone (%s), its "
                "files stay",
                s->vm, s->name, e ? vmctl_error_get_message(e) : strerror(-r));
    return r;
}

/* Repair: rows of snapshots whose maker died before completing them go, with their files. */
static int own_like_dir(const char *path, const char *dir, vmctl_error **reterr);

void snapshot_reconcile(vmctl_ctx *ctx)
{
    store_snapshot **list = NULL;
    size_t n = 0;
    if (store_snapshot_list(ctx->store, NULL, &list, &n, NULL) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        store_snapshot *s = list[i];
        if (s->complete || proc_alive(s->owner_pid, s->owner_start))
            continue;
        if (reconcile_disk(ctx, s) < 0)
            continue;
        ctx_log(ctx, VMCTL_LOG_INFO, "removing snapshot '%s/%s' left incomplete by pid %d", s->vm,
                s->name, (int)s->owner_pid);
        cleanup_store_vm store_vm *v = NULL;
        cleanup_vm_spec vm_spec *spec = NULL;
        bool running = vm_load(ctx, s->vm, &v, &spec, NULL) >= 0 && v->state == VMCTL_VM_RUNNING;
        /* killed after the source's RAM file became the template's (the immutability rule's
         * rename) but before the snapshot was complete: that file is the one the still running
         * source maps; it goes back to the source's name and owner, not away with the snapshot */
        if (running && s->ram && spec->ram_file && access(spec->ram_file, F_OK) < 0 &&
            errno == ENOENT && access(s->ram, F_OK) == 0) {
            if (rename(s->ram, spec->ram_file) == 0) {
                (void)own_like_dir(spec->ram_file, v->dir, NULL);
                (void)chmod(spec->ram_file, 0600);
                ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s': its RAM file is its own again", s->vm);
            }
        }
        remove_snapshot_files(s);
        (void)store_snapshot_delete(ctx->store, s->vm, s->name, true, NULL, NULL, NULL);
        /* killed while saving: the guest may still be stopped for the save; the store says
         * running (a VM paused by request is `paused` there), so let it run again */
        const backend_ops *be = NULL;
        if (running && (be = backend_find(spec->backend, NULL)))
            (void)be->resume(v->dir, vm_deadline_after(CONTROL_TIMEOUT), NULL);
    }
    store_snapshot_list_free(list, n);
}

static size_t count_refs(vmctl_ctx *ctx, const char *vm, const char *snap)
{
    /* a delete that is refused counts them without deleting */
    size_t n = 0;
    (void)store_snapshot_ref_count(ctx->store, vm, snap, &n, NULL);
    return n;
}

static int info_from_row(vmctl_ctx *ctx, const store_snapshot *s, vmctl_snapshot_info **ret)
{
    vmctl_snapshot_info *i = calloc(1, sizeof(*i));
    if (!i)
        return -ENOMEM;
    i->vm = strdup(s->vm);
    i->name = strdup(s->name);
    i->kind = strdup(s->kind);
    i->dir = strdup(s->dir);
    i->qemu_version = strdup(s->qemu_version);
    i->machine = strdup(s->machine);
    i->memory_mib = s->memory_mib;
    i->created_at = s->created_at;
    i->n_refs = count_refs(ctx, s->vm, s->name);
    if (!i->vm || !i->name || !i->kind || !i->dir || !i->qemu_version || !i->machine) {
        vmctl_snapshot_info_free(i);
        return -ENOMEM;
    }
    *ret = i;
    return 0;
}

void vmctl_snapshot_info_free(vmctl_snapshot_info *i)
{
    if (!i)
        return;
    free(i->vm);
    free(i->name);
    free(i->kind);
    free(i->dir);
    free(i->qemu_version);
    free(i->machine);
    free(i);
}

void vmctl_snapshot_info_list_free(vmctl_snapshot_info **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        vmctl_snapshot_info_free(list[i]);
    free(list);
}

/* Copy src to dst keeping holes (a RAM file on tmpfs is mostly holes). */
static int sparse_copy(const char *src, const char *dst, vmctl_error **reterr)
{
    cleanup_close int in = open(src, O_RDONLY | O_CLOEXEC);
    cleanup_close int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    int r;
    if (in < 0 || out < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot copy '%s' to '%s': %s", src, dst,
                     strerror(errno));
        err_detail(reterr, "path", "%s", in < 0 ? src : dst);
        return r;
    }
    cleanup_free char *buf = malloc(1 << 20);
    if (!buf)
        return oom(reterr);
    struct stat st;
    if (fstat(in, &st) < 0 || ftruncate(out, st.st_size) < 0)
        goto fail;
    off_t off = 0;
    for (;;) {
        off_t data = lseek(in, off, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO)
                return 0;
            goto fail;
        }
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0)
            goto fail;
        for (off = data; off < hole;) {
            size_t want = (size_t)(hole - off) < (1u << 20) ? (size_t)(hole - off) : (1u << 20);
            ssize_t k = pread(in, buf, want, off);
            if (k <= 0 || pwrite(out, buf, (size_t)k, off) != k)
                goto fail;
            off += k;
        }
    }
fail:
    r = err_make(reterr, VMCTL_E_IO, errno ? errno : EIO, "cannot copy '%s' to '%s': %s", src, dst,
                 strerror(errno ? errno : EIO));
    (void)unlink(dst);
    return r;
}

/* ---------- create ---------- */

/* A template's RAM file is opened read-write by every clone's hypervisor (QEMU 7.2 does so even
 * for a private mapping), and a clone's jail cannot give write access to one file but not
 * another: root's, 0660, in a group of its own (an id of the jail range, `jail_uids` row
 * "@VM/SNAP", released with the snapshot) that only its clones' jails join. Unjailed (vmctl
 * not root), the user's 0600 (docs/isolation.md, "Snapshots"). */
static int template_share(vmctl_ctx *ctx, const char *vm, const char *snap, const char *ram,
                          vmctl_error **reterr)
{
    if (geteuid() != 0)
        return 0;
    cleanup_free char *key = str_printf("@%s/%s", vm, snap);
    if (!key)
        return oom(reterr);
    uint32_t base, count, gid = 0;
    jail_uid_range(&base, &count);
    int r = store_vm_jail_uid(ctx->store, key, base, count, true, &gid, reterr);
    if (r < 0)
        return err_prefix(reterr, r, "while giving snapshot '%s/%s' a group", vm, snap);
    if (chown(ram, 0, gid) < 0 || chmod(ram, 0660) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot share '%s' with the clones' jails: %s", ram,
                     strerror(errno));
        err_detail(reterr, "path", "%s", ram);
        return r;
    }
    return 0;
}

/* A new disk file in a VM directory: owned as the directory is (a jailed VM's directory is its
 * jail uid's). */
static int own_like_dir(const char *path, const char *dir, vmctl_error **reterr)
{
    struct stat st;
    if (stat(dir, &st) < 0 || st.st_uid == getuid())
        return 0;
    if (chown(path, st.st_uid, st.st_gid) < 0)
        return err_make(reterr, VMCTL_E_IO, errno, "cannot give '%s' to the VM's jail: %s", path,
                        strerror(errno));
    return 0;
}

int vmctl_snapshot_create(vmctl_ctx *ctx, const char *vm, const char *snap,
                          const vmctl_snapshot_options *opt, vmctl_snapshot_info **ret,
                          vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(vm, reterr);
    VMCTL_ARG_CHECK(snap, reterr);
    vmctl_snapshot_options dflt = {0};
    if (!opt)
        opt = &dflt;
    int r;
    if ((r = check_name(reterr, "vm", vm)) < 0 || (r = check_name(reterr, "snapshot", snap)) < 0)
        return r;
    if (opt->kind && !streq(opt->kind, "template") && !streq(opt->kind, "full"))
        return err_invalid_field(reterr, "kind", opt->kind, "template or full", "invalid kind '%s'",
                                 opt->kind);
    snapshot_reconcile(ctx);

    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_close int lock = -1;
    if ((r = vm_begin_op(ctx, vm, _VM_OP_MAX, &v, &spec, NULL, &lock, reterr)) < 0)
        return r;
    if (v->state != VMCTL_VM_RUNNING && v->state != VMCTL_VM_PAUSED) {
        r = err_invalid_state(reterr, vm, vmctl_vm_state_to_string(v->state), "snapshotted");
        err_detail(reterr, "operation", "snapshot");
        err_help(reterr, "Only a running or paused VM can be snapshotted: `vmctl start %s`.", vm);
        return r;
    }
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    if (!be->snapshot_save || !be->snapshot_load || !be->version)
        return err_make(reterr, VMCTL_E_BACKEND_NOT_AVAILABLE, EOPNOTSUPP,
                        "the %s backend cannot snapshot a VM", be->title);
    /* a writable disk: its qcow2 overlay becomes the snapshot's layer, on the layers it is on
     * already (a raw root filesystem or a throttled disk cannot) */
    const char *no_disk = !spec->disk ? NULL
                          : spec->disk_format && streq(spec->disk_format, "raw")
                              ? "a raw root filesystem (no qcow2 overlay to freeze)"
                          : spec->disk_iops ? "a throttled disk (--disk-iops)"
                          : !be->disk_snapshot || !be->disk_top || !be->disk_unsnapshot
                              ? "a disk this backend cannot switch"
                              : NULL;
    if (no_disk) {
        r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EOPNOTSUPP,
                     "vm '%s' has %s: its disk cannot be snapshotted", vm, no_disk);
        err_detail(reterr, "field", "disk");
        err_help(reterr, "Snapshot a VM with a qcow2 overlay disk (`vmctl create --image`), "
                         "or one without a disk.");
        return r;
    }
    size_t depth = spec->disk_layer ? 1 + strv_length(spec->disk_chain) : 0;
    if (spec->disk && depth >= SNAP_MAX_LAYERS) {
        r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EOPNOTSUPP,
                     "vm '%s' has its disk on %zu snapshot layers already: at most %d", vm, depth,
                     SNAP_MAX_LAYERS);
        err_detail(reterr, "field", "disk");
        err_help(reterr,
                 "Flatten the disk: stop the VM, `qemu-img convert -O qcow2 %s flat.qcow2`, and "
                 "create a new VM from it (`vmctl create --image flat.qcow2`).",
                 spec->disk);
        return r;
    }
    /* the RAM is the VM's file only while it runs from a cold boot: a restored VM maps its
     * snapshot's file privately */
    cleanup_free char *restored_mark = str_printf("%s/" VM_FILE_RESTORED, v->dir);
    if (!restored_mark)
        return oom(reterr);
    bool ram_is_file = spec->ram_file && access(restored_mark, F_OK) < 0;
    bool template = opt->kind ? streq(opt->kind, "template") : ram_is_file;
    if (template && !ram_is_file) {
        r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                     spec->ram_file ? "vm '%s' runs from a snapshot: its RAM is not its own file "
                                      "(take a full snapshot, or stop and start it first)"
                                    : "vm '%s' keeps its RAM in anonymous memory: a template "
                                      "snapshot needs a VM created with --snapshottable",
                     vm);
        err_detail(reterr, "field", "kind");
        err_detail(reterr, "value", "template");
        err_help(reterr,
                 "Use `--kind full`, or create the VM with `vmctl create --snapshottable`.");
        return r;
    }

    uint64_t deadline = vm_deadline_after(CONTROL_TIMEOUT);
    cleanup_free char *version = NULL;
    if ((r = be->version(v->dir, deadline, &version, reterr)) < 0)
        return err_prefix(reterr, r, "while snapshotting vm '%s'", vm);

    cleanup_free char *dir = snap_dir(ctx, vm, snap);
    cleanup_free char *parent = str_printf("%s/" SNAPSHOT_DIR "/%s", ctx->home, vm);
    cleanup_free char *tmp = str_printf("%s.tmp", dir ? dir : "");
    cleanup_free char *ramdir = snapshot_ram_dir();
    char hex[17];
    random_hex(hex, 8);
    cleanup_free char *ram = template ? str_printf("%s/%s.%s.%s.ram", ramdir, vm, snap, hex) : NULL;
    if (!dir || !parent || !tmp || !ramdir || (template && !ram))
        return oom(reterr);
    /* the disk: the VM's overlay moves into the snapshot as its layer (tmp while it is made), a
     * new overlay on it takes its place in the VM directory */
    cleanup_free char *layer = spec->disk ? str_printf("%s/" SNAP_FILE_DISK, dir) : NULL;
    cleanup_free char *tmp_layer = spec->disk ? str_printf("%s/" SNAP_FILE_DISK, tmp) : NULL;
    if (spec->disk && (!layer || !tmp_layer))
        return oom(reterr);
    bool disk_switched = false;
    /* the source's config before, for an undo */
    cleanup_free char *orig_json = NULL;
    if (vm_spec_to_json(spec, &orig_json) < 0)
        return oom(reterr);
    /* the snapshot's config, and the source's once its disk switched: the disk on the layer,
     * on the layers it was on */
    if (spec->disk) {
        char *top = strdup(layer);
        if (!top)
            return oom(reterr);
        if (spec->disk_layer) {
            cleanup_strv char **chain = NULL;
            size_t n = 0;
            if (strv_push(&chain, &n, spec->disk_layer) < 0) {
                free(top);
                return oom(reterr);
            }
            for (char *const *l = spec->disk_chain; l && *l; l++)
                if (strv_push(&chain, &n, *l) < 0) {
                    free(top);
                    return oom(reterr);
                }
            strv_free(spec->disk_chain);
            spec->disk_chain = TAKE_PTR(chain);
        }
        free(spec->disk_layer);
        spec->disk_layer = top;
    }
    cleanup_free char *json = NULL;
    if (vm_spec_to_json(spec, &json) < 0)
        return oom(reterr);

    store_snapshot row = {
        .vm = (char *)vm,
        .name = (char *)snap,
        .kind = template ? "template" : "full",
        .dir = dir,
        .ram = ram,
        .config = json,
        .qemu_version = version,
        .machine = spec->machine,
        .memory_mib = spec->memory_mib,
        .created_at = (int64_t)(realtime_usec() / 1000000),
        .complete = false,
        .owner_pid = getpid(),
        .owner_start = proc_start_time(getpid()),
    };
    r = store_snapshot_insert(ctx->store, &row, reterr);
    if (r == -EEXIST) {
        r = err_make(reterr, VMCTL_E_SNAPSHOT_ALREADY_EXISTS, EEXIST,
                     "vm '%s' has a snapshot '%s' already", vm, snap);
        err_detail(reterr, "vm", "%s", vm);
        err_detail(reterr, "snapshot", "%s", snap);
        err_help(reterr, "Choose another name, or remove it first with `vmctl snapshot rm %s %s`.",
                 vm, snap);
        return r;
    }
    if (r < 0)
        return r;

    /* Test hook: a window in which a killed vmctl leaves an incomplete row. */
    const char *delay = getenv("VMCTL_TEST_SNAPSHOT_DELAY_MS");
    if (delay)
        sleep_usec((uint64_t)strtoul(delay, NULL, 10) * 1000);

    bool was_running = v->state == VMCTL_VM_RUNNING;
    double save_ms = 0;
    if ((r = mkdir_private(parent)) < 0 || (r = mkdir_private(ramdir)) < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot create '%s': %s", parent, strerror(-r));
        goto undo;
    }
    (void)rm_rf(tmp);
    if (mkdir(tmp, 0700) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot create '%s': %s", tmp, strerror(errno));
        goto undo;
    }
    {
        cleanup_free char *state = str_printf("%s/" SNAP_FILE_STATE, tmp);
        cleanup_free char *cfg = str_printf("%s/" SNAP_FILE_CONFIG, tmp);
        if (!state || !cfg) {
            r = oom(reterr);
            goto undo;
        }
        if ((r = write_file_atomic(cfg, json, strlen(json), 0600)) < 0) {
            r = err_make(reterr, VMCTL_E_IO, -r, "cannot write '%s': %s", cfg, strerror(-r));
            goto undo;
        }
        cleanup_close int fd = open(state, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0) {
            r = err_make(reterr, VMCTL_E_IO, errno, "cannot create '%s': %s", state,
                         strerror(errno));
            goto undo;
        }
        /* Test hook: the guest stopped for the save, and a window to kill vmctl in. */
        const char *save_delay = getenv("VMCTL_TEST_SAVE_DELAY_MS");
        if (save_delay) {
            (void)be->pause(v->dir, vm_deadline_after(CONTROL_TIMEOUT), NULL);
            sleep_usec((uint64_t)strtoul(save_delay, NULL, 10) * 1000);
        }
        uint64_t t0 = now_usec();
        if (spec->disk) {
            /* the guest stopped, the disk switched to a new overlay (its header naming the
             * layer where the snapshot will keep it), then the old overlay moved into tmp: the
             * process keeps its descriptor */
            image_probe ov = {};
            if ((r = image_probe_file(spec->disk, &ov, reterr)) < 0)
                goto undo_resume;
            uint64_t vsize = ov.virtual_size;
            image_probe_clear(&ov);
            char node[32];
            random_hex(hex, 8);
            snprintf(node, sizeof(node), "disk0-%s", hex);
            /* what an undo needs, recorded before the switch: the new top node and the old */
            cleanup_free char *old_top = NULL;
            cleanup_free char *marker = str_printf("%s/" SNAP_FILE_SWITCH, tmp);
            if (!marker) {
                r = oom(reterr);
                goto undo_resume;
            }
            if ((r = be->disk_top(v->dir, vm_deadline_after(CONTROL_TIMEOUT), &old_top, reterr)) <
                0) {
                err_prefix(reterr, r, "while snapshotting the disk of vm '%s'", vm);
                goto undo_resume;
            }
            cleanup_free char *nodes = str_printf("%s %s\n", node, old_top);
            if (!nodes || (r = write_file_atomic(marker, nodes, strlen(nodes), 0600)) < 0) {
                r = err_make(reterr, VMCTL_E_IO, nodes ? -r : ENOMEM, "cannot write '%s'", marker);
                goto undo_resume;
            }
            /* the new overlay made as DISK.NODE; the old top's name (node_path) names the old
             * overlay while blockdev-snapshot reopens it */
            cleanup_free char *next_disk = node_path(spec->disk, node);
            cleanup_free char *old_name = node_path(spec->disk, old_top);
            if (!next_disk || !old_name) {
                r = oom(reterr);
                goto undo_resume;
            }
            bool old_link = !streq(old_name, spec->disk);
            disk_switched = true;
            if (old_link) {
                (void)unlink(old_name);
                if (link(spec->disk, old_name) < 0) {
                    r = err_make(reterr, VMCTL_E_IO, errno, "cannot link '%s': %s", old_name,
                                 strerror(errno));
                    goto undo_resume;
                }
            }
            (void)unlink(next_disk);
            if ((r = qcow2_create_overlay(next_disk, vsize, layer, "qcow2", reterr)) < 0)
                goto undo_resume;
            if ((r = own_like_dir(next_disk, v->dir, reterr)) < 0) {
                (void)unlink(next_disk);
                goto undo_resume;
            }
            if ((r = be->disk_snapshot(v->dir, next_disk, node, vm_deadline_after(SAVE_TIMEOUT),
                                       reterr)) < 0) {
                err_prefix(reterr, r, "while snapshotting the disk of vm '%s'", vm);
                goto undo_resume;
            }
            if (rename(spec->disk, tmp_layer) < 0 || rename(next_disk, spec->disk) < 0) {
                r = err_make(reterr, VMCTL_E_IO, errno, "cannot move the disk of vm '%s': %s", vm,
                             strerror(errno));
                goto undo_resume;
            }
            if (old_link)
                (void)unlink(old_name);
            /* the cloud-init seed too: clones outlive the source's directory */
            if (spec->seed) {
                cleanup_free char *seed = str_printf("%s/" VM_FILE_SEED, tmp);
                if (!seed) {
                    r = oom(reterr);
                    goto undo_resume;
                }
                if ((r = image_clone_file(spec->seed, seed)) < 0) {
                    r = err_make(reterr, VMCTL_E_IO, -r, "cannot copy '%s': %s", spec->seed,
                                 strerror(-r));
                    goto undo_resume;
                }
            }
            /* the source's disk is on the layer from now on: it maps the snapshot */
            if ((r = store_vm_set_config(ctx->store, vm, json, reterr)) < 0 ||
                (r = store_snapshot_ref_add(ctx->store, vm, vm, snap, reterr)) < 0)
                goto undo_resume;
            /* Test hook: the disk switched, the save not yet done: a window to kill vmctl in. */
            const char *switch_delay = getenv("VMCTL_TEST_DISK_SWITCH_DELAY_MS");
            if (switch_delay)
                sleep_usec((uint64_t)strtoul(switch_delay, NULL, 10) * 1000);
        }
        /* Test hook: the save fails (after the disk switched). */
        if (getenv("VMCTL_TEST_SNAPSHOT_SAVE_FAIL"))
            r = err_make(reterr, VMCTL_E_SNAPSHOT_FAILED, EIO,
                         "the save failed (VMCTL_TEST_SNAPSHOT_SAVE_FAIL)");
        else
            r = be->snapshot_save(v->dir, fd, template, vm_deadline_after(SAVE_TIMEOUT), reterr);
        save_ms = (double)(now_usec() - t0) / 1000.0;
        if (r < 0) {
            err_prefix(reterr, r, "while snapshotting vm '%s'", vm);
            goto undo_resume;
        }
        if (fsync(fd) < 0) {
            r = err_make(reterr, VMCTL_E_IO, errno, "cannot write '%s': %s", state,
                         strerror(errno));
            goto undo_resume;
        }
    }
    if (template && opt->keep_running) {
        /* the source goes on writing its own file: the snapshot keeps a copy */
        if ((r = sparse_copy(spec->ram_file, ram, reterr)) < 0)
            goto undo_resume;
    } else if (template) {
        /* the immutability rule: the source's file becomes the snapshot's; the source stops
         * (`snapshot restore` continues it from the snapshot, as clone zero) */
        if (rename(spec->ram_file, ram) < 0) {
            r = err_make(reterr, VMCTL_E_IO, errno, "cannot move '%s' to '%s': %s", spec->ram_file,
                         ram, strerror(errno));
            goto undo_resume;
        }
    }
    if (template && (r = template_share(ctx, vm, snap, ram, reterr)) < 0) {
        if (!opt->keep_running)
            (void)rename(ram, spec->ram_file);
        goto undo_resume;
    }
    /* Test hook: a window, the source's RAM file already the template's, to kill vmctl in. */
    const char *moved_delay = getenv("VMCTL_TEST_RAM_MOVED_DELAY_MS");
    if (moved_delay && template && !opt->keep_running)
        sleep_usec((uint64_t)strtoul(moved_delay, NULL, 10) * 1000);
    if (rename(tmp, dir) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot rename '%s' to '%s': %s", tmp, dir,
                     strerror(errno));
        if (template && !opt->keep_running)
            (void)rename(ram, spec->ram_file);
        goto undo_resume;
    }
    if ((r = store_snapshot_set_complete(ctx->store, vm, snap, reterr)) < 0)
        return r;
    if (spec->disk) {
        cleanup_free char *marker = str_printf("%s/" SNAP_FILE_SWITCH, dir);
        if (marker)
            (void)unlink(marker);
    }
    if (template && !opt->keep_running) {
        if (be->quit)
            (void)be->quit(v->dir, vm_deadline_after(CONTROL_TIMEOUT), NULL);
        if (!vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(QUIT_WAIT_TIMEOUT)))
            (void)kill(v->pid, SIGKILL);
        (void)vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(QUIT_WAIT_TIMEOUT));
        (void)store_vm_set_state(ctx->store, vm, v->state, v->pid, VMCTL_VM_STOPPED, 0, 0, NULL);
        be->cleanup(v->dir);
        (void)unlink(restored_mark);
    } else if (was_running) {
        (void)be->resume(v->dir, vm_deadline_after(CONTROL_TIMEOUT), NULL);
    }
    ctx_log(ctx, VMCTL_LOG_INFO, "saved vm '%s' as snapshot '%s' (%s) in %.1f ms", vm, snap,
            row.kind, save_ms);
    if (ret) {
        store_snapshot *s = NULL;
        if (store_snapshot_get(ctx->store, vm, snap, &s, NULL) >= 0) {
            if (info_from_row(ctx, s, ret) >= 0)
                (*ret)->save_ms = save_ms;
            store_snapshot_free(s);
        }
    }
    return 0;

undo_resume:
    if (disk_switched) {
        /* the source back on its old overlay before the layer can go; if that fails, the
         * snapshot stays incomplete with its files (the repair of the next snapshot command
         * tries again) */
        cleanup_error vmctl_error *e = NULL;
        int u = disk_switch_undo(ctx, be, v, spec->disk, orig_json, tmp, dir, &e);
        if (u < 0) {
            ctx_log(ctx, VMCTL_LOG_WARNING,
                    "vm '%s': the disk switch of the failed snapshot is not undone (%s): '%s' "
                    "stays for the next snapshot command to repair",
                    vm, e ? vmctl_error_get_message(e) : strerror(-u), tmp);
            if (was_running)
                (void)be->resume(v->dir, vm_deadline_after(CONTROL_TIMEOUT), NULL);
            return r;
        }
    }
    if (was_running)
        (void)be->resume(v->dir, vm_deadline_after(CONTROL_TIMEOUT), NULL);
undo:
    if (ram && (!template || opt->keep_running))
        (void)unlink(ram);
    (void)rm_rf(tmp);
    (void)store_snapshot_delete(ctx->store, vm, snap, true, NULL, NULL, NULL);
    return r;
}

/* ---------- list, rm ---------- */

int vmctl_snapshot_list(vmctl_ctx *ctx, const char *vm, vmctl_snapshot_info ***ret, size_t *n,
                        vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    snapshot_reconcile(ctx);
    store_snapshot **rows = NULL;
    size_t count = 0;
    int r = store_snapshot_list(ctx->store, vm, &rows, &count, reterr);
    if (r < 0)
        return r;
    vmctl_snapshot_info **list = calloc(count ? count : 1, sizeof(*list));
    size_t k = 0;
    for (size_t i = 0; list && i < count; i++) {
        if (!rows[i]->complete)
            continue; /* being made */
        if (info_from_row(ctx, rows[i], &list[k]) < 0) {
            vmctl_snapshot_info_list_free(list, k);
            list = NULL;
            break;
        }
        k++;
    }
    store_snapshot_list_free(rows, count);
    if (!list)
        return oom(reterr);
    *ret = list;
    *n = k;
    return 0;
}

/* snapshot::in_use when s's disk layer is in another snapshot's chain (a snapshot of a disk on
 * s's layer): that one goes first. A VM whose disk is on the chain maps the snapshot whose
 * layer is its top one (a reference), so that holds s too. */
static int check_not_under(vmctl_ctx *ctx, const store_snapshot *s, vmctl_error **reterr)
{
    cleanup_vm_spec vm_spec *own = NULL;
    if (!s->config || vm_spec_from_json(s->config, &own, NULL) < 0 || !own->disk_layer)
        return 0;
    store_snapshot **list = NULL;
    size_t n = 0;
    int r = store_snapshot_list(ctx->store, NULL, &list, &n, reterr);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n && r >= 0; i++) {
        cleanup_vm_spec vm_spec *o = NULL;
        if (streq(list[i]->vm, s->vm) && streq(list[i]->name, s->name))
            continue;
        if (!list[i]->config || vm_spec_from_json(list[i]->config, &o, NULL) < 0)
            continue;
        for (char *const *l = o->disk_chain; l && *l; l++) {
            if (!streq(*l, own->disk_layer))
                continue;
            r = err_make(reterr, VMCTL_E_SNAPSHOT_IN_USE, EBUSY,
                         "snapshot '%s/%s' is under snapshot '%s/%s': its disk layer is in that "
                         "one's chain",
                         s->vm, s->name, list[i]->vm, list[i]->name);
            err_detail(reterr, "vm", "%s", s->vm);
            err_detail(reterr, "snapshot", "%s", s->name);
            err_help(reterr, "Remove the snapshots on it first (`vmctl snapshot rm %s %s`).",
                     list[i]->vm, list[i]->name);
            break;
        }
    }
    store_snapshot_list_free(list, n);
    return r;
}

int vmctl_snapshot_rm(vmctl_ctx *ctx, const char *vm, const char *snap, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(vm, reterr);
    VMCTL_ARG_CHECK(snap, reterr);
    snapshot_reconcile(ctx);
    cleanup_store_snapshot store_snapshot *s = NULL;
    int r = store_snapshot_get(ctx->store, vm, snap, &s, reterr);
    if (r == -ENOENT || (r >= 0 && !s->complete))
        return not_found(reterr, vm, snap);
    if (r < 0)
        return r;
    if ((r = check_not_under(ctx, s, reterr)) < 0)
        return r;
    cleanup_free char *user = NULL;
    size_t users = 0;
    r = store_snapshot_delete(ctx->store, vm, snap, false, &user, &users, reterr);
    if (r == -EBUSY) {
        r = err_make(reterr, VMCTL_E_SNAPSHOT_IN_USE, EBUSY,
                     "snapshot '%s/%s' is mapped by %zu vm%s (%s%s)", vm, snap, users,
                     users == 1 ? "" : "s", user ? user : "?", users > 1 ? ", ..." : "");
        err_detail(reterr, "vm", "%s", vm);
        err_detail(reterr, "snapshot", "%s", snap);
        err_help(reterr, "Destroy the VMs that map it first (`vmctl destroy %s`).",
                 user ? user : "NAME");
        return r;
    }
    if (r == -ENOENT)
        return not_found(reterr, vm, snap);
    if (r < 0)
        return r;
    remove_snapshot_files(s);
    ctx_log(ctx, VMCTL_LOG_INFO, "removed snapshot '%s/%s'", vm, snap);
    return 0;
}

/* ---------- restore: a launch that loads the snapshot ---------- */

/* The complete snapshot (vm, snap), or snapshot::not_found. */
int snapshot_get(vmctl_ctx *ctx, const char *vm, const char *snap, store_snapshot **ret,
                 vmctl_error **reterr)
{
    int r = store_snapshot_get(ctx->store, vm, snap, ret, reterr);
    if (r == -ENOENT || (r >= 0 && !(*ret)->complete)) {
        if (r >= 0) {
            store_snapshot_free(*ret);
            *ret = NULL;
        }
        return not_found(reterr, vm, snap);
    }
    return r;
}

static int incompatible(vmctl_error **reterr, const store_snapshot *s, const char *what,
                        const char *theirs, const char *ours)
{
    int r =
        err_make(reterr, VMCTL_E_SNAPSHOT_INCOMPATIBLE, EPROTO,
                 "snapshot '%s/%s' was made by %s %s, not %s", s->vm, s->name, what, theirs, ours);
    err_detail(reterr, "vm", "%s", s->vm);
    err_detail(reterr, "snapshot", "%s", s->name);
    err_detail(reterr, "qemu_version", "%s", s->qemu_version);
    err_detail(reterr, "machine", "%s", s->machine);
    return r;
}

/* What a restored guest holds already: as the VM it was snapshotted from (same name, so the same
 * hostname, and the same environment), its metadata and machine-id; with the same MAC too, its
 * NIC (snapshot_restored_as). A clone holds none of them. */
typedef struct restore_as {
    bool itself;   /* hostname, environment and machine-id kept */
    bool same_mac; /* the NIC left alone */
} restore_as;

/* The guest's new identity (docs/snapshots.md): its hostname and environment (METADATA), then
 * the clock and fresh entropy always (a second restore of one snapshot must not replay the
 * first one's RNG), and a new machine-id and the NIC's MAC unless `as` says it has them. */
static int push_identity(agent_conn *conn, const vm_spec *spec, restore_as as, uint64_t deadline,
                         vmctl_error **reterr)
{
    uint8_t entropy[64];
    if (getrandom(entropy, sizeof(entropy), 0) != (ssize_t)sizeof(entropy))
        return err_make(reterr, VMCTL_E_IO, errno, "cannot read host entropy: %s", strerror(errno));
    char machine_id[33] = "";
    if (!as.itself)
        random_hex(machine_id, 16);
    const char *mac = spec->mac ? spec->mac : spec->nic_mac;
    agent_identity id = {
        .realtime_ns = realtime_usec() * 1000,
        .entropy = entropy,
        .n_entropy = sizeof(entropy),
        .machine_id = machine_id,
        /* --net tap: the lease's MAC, the one the TAP's firewall and the guest's address go
         * with; "": the NIC left alone (setting it takes the link down and up) */
        .mac = as.same_mac || !mac ? "" : mac,
    };
    int r = as.itself
                ? agent_push_identity(conn, &id, deadline, reterr)
                : agent_push_clone_identity(conn, spec->name, spec->env, &id, deadline, reterr);
    explicit_bzero(entropy, sizeof(entropy));
    return r;
}

/* conn: connected already (its session PING sent), or NULL to connect here. */
static int refresh_identity(const store_vm *v, const vm_spec *spec, agent_conn *conn_in,
                            restore_as as, uint64_t deadline, vmctl_error **reterr)
{
    cleanup_agent agent_conn *conn = conn_in;
    int r = conn ? 0 : vm_agent_connect(v, spec, 0, deadline, 0, &conn, reterr);
    if (r < 0)
        return r;
    if ((r = agent_wait_ready(conn, deadline, NULL, NULL, reterr)) < 0)
        return r;
    return push_identity(conn, spec, as, deadline, reterr);
}

static bool strv_equal(char *const *a, char *const *b)
{
    for (; a && *a && b && *b; a++, b++)
        if (!streq(*a, *b))
            return false;
    return !(a && *a) && !(b && *b);
}

static const char *opt_str(const char *s)
{
    return s ? s : "";
}

/* What the guest of snapshot s holds of spec's identity already (restore_as). */
static restore_as snapshot_restored_as(const store_snapshot *s, const vm_spec *spec)
{
    restore_as as = {0};
    if (!s->config || !streq(s->vm, spec->name))
        return as;
    cleanup_vm_spec vm_spec *then = NULL;
    if (vm_spec_from_json(s->config, &then, NULL) < 0)
        return as;
    as.itself = streq(then->name, spec->name) && strv_equal(then->env, spec->env);
    as.same_mac = as.itself && streq(opt_str(then->mac ? then->mac : then->nic_mac),
                                     opt_str(spec->mac ? spec->mac : spec->nic_mac));
    return as;
}

/* --net tap: the clone's link is its own /30 (leased by snapshot_clone_begin, its TAP and
 * firewall made by the launch), but the guest still has the source's address on eth0: the
 * agent runs `ip` in the guest to move it (busybox's in the default guest, iproute2 in a disk
 * image), then the host waits for the guest to answer ARP there, as `start --wait` does. */
static int refresh_address(vmctl_ctx *ctx, const store_vm *v, const vm_spec *spec,
                           uint64_t deadline, vmctl_error **reterr)
{
    store_lease l = {};
    int r = store_lease_get(ctx->store, v->name, &l, reterr);
    if (r <= 0)
        return r;
    char a[16], g[16];
    tap_ip_str(vmnet_guest_ip(&l), a);
    tap_ip_str(vmnet_host_ip(&l), g);
    cleanup_free char *script = str_printf(
        "ip addr flush dev eth0 && ip addr add %s/%u dev eth0 && ip link set eth0 up && "
        "{ ip route replace default via %s 2>/dev/null || ip route add default via %s; }",
        a, l.prefix, g, g);
    store_lease_clear(&l);
    if (!script)
        return oom(reterr);
    cleanup_agent agent_conn *conn = NULL;
    if ((r = vm_agent_connect(v, spec, 0, deadline, 0, &conn, reterr)) < 0)
        return r;
    char *argv[] = {"/bin/sh", "-c", script, NULL};
    vmctl_exec_opts o = {.argv = argv};
    vmctl_exec_result res = {0};
    r = agent_exec(conn, &o, &res, deadline, reterr);
    if (r >= 0 && (res.signal || res.exit_code)) {
        r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EIO,
                     "vm '%s': the guest could not move eth0 to its address %s (exit %d): %.*s",
                     v->name, a, res.signal ? 128 + res.signal : res.exit_code,
                     (int)(res.err_len > 200 ? 200 : res.err_len), res.err ? res.err : "");
        err_detail(reterr, "vm", "%s", v->name);
        err_detail(reterr, "ip", "%s", a);
        err_help(reterr, "The guest needs `ip` (busybox or iproute2) and an eth0.");
    }
    vmctl_exec_result_clear(&res);
    if (r < 0)
        return r;
    return vmnet_wait_ip(ctx->store, v->name, deadline, NULL, NULL, reterr);
}

/* A snapshot with a disk layer: v's disk a new, empty qcow2 overlay on it in v's directory
 * (what v wrote before is gone: restore means the disk of the snapshot), recorded in v's
 * config for its cold boots. */
static int disk_from_layer(vmctl_ctx *ctx, const store_vm *v, vm_spec *spec,
                           const store_snapshot *s, vmctl_error **reterr)
{
    cleanup_vm_spec vm_spec *snap = NULL;
    int r = vm_spec_from_json(s->config, &snap, reterr);
    if (r < 0)
        return r;
    if (!snap->disk_layer)
        return 0;
    image_probe ly = {};
    if ((r = image_probe_file(snap->disk_layer, &ly, reterr)) < 0)
        return err_prefix(reterr, r, "while opening the disk layer of snapshot '%s/%s'", s->vm,
                          s->name);
    uint64_t vsize = ly.virtual_size;
    image_probe_clear(&ly);
    char *disk = str_printf("%s/" VM_FILE_DISK, v->dir);
    char *layer = strdup(snap->disk_layer);
    if (!disk || !layer) {
        free(disk);
        free(layer);
        return oom(reterr);
    }
    free(spec->disk);
    spec->disk = disk;
    free(spec->disk_layer);
    spec->disk_layer = layer;
    char **chain = snap->disk_chain ? strv_copy(snap->disk_chain) : NULL;
    if (snap->disk_chain && !chain)
        return oom(reterr);
    strv_free(spec->disk_chain);
    spec->disk_chain = chain; /* the snapshot's older layers under its own */
    cleanup_free char *next = str_printf("%s.next", disk);
    if (!next)
        return oom(reterr);
    (void)unlink(next);
    if ((r = qcow2_create_overlay(next, vsize, layer, "qcow2", reterr)) < 0)
        return err_prefix(reterr, r, "while making the disk of vm '%s'", v->name);
    if ((r = own_like_dir(next, v->dir, reterr)) < 0) {
        (void)unlink(next);
        return r;
    }
    if (rename(next, disk) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot rename '%s' to '%s': %s", next, disk,
                     strerror(errno));
        (void)unlink(next);
        return r;
    }
    if (snap->seed) {
        /* the seed: the snapshot's copy (else the source's) in v's own directory */
        cleanup_free char *kept = str_printf("%s/" VM_FILE_SEED, s->dir);
        char *seed = str_printf("%s/" VM_FILE_SEED, v->dir);
        if (!kept || !seed) {
            free(seed);
            return oom(reterr);
        }
        const char *from = access(kept, R_OK) == 0 ? kept : snap->seed;
        if (!streq(from, seed)) {
            (void)unlink(seed);
            if ((r = image_clone_file(from, seed)) < 0) {
                r = err_make(reterr, VMCTL_E_IO, -r, "cannot copy '%s': %s", from, strerror(-r));
                free(seed);
                return r;
            }
            if ((r = own_like_dir(seed, v->dir, reterr)) < 0) {
                free(seed);
                return r;
            }
        }
        free(spec->seed);
        spec->seed = seed;
    }
    cleanup_free char *json = NULL;
    if (vm_spec_to_json(spec, &json) < 0)
        return oom(reterr);
    return store_vm_set_config(ctx->store, v->name, json, reterr);
}

int snapshot_incoming_launch(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const store_snapshot *s,
                             vm_launched *ret, vmctl_error **reterr)
{
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    if (!be->snapshot_load || !be->version)
        return err_make(reterr, VMCTL_E_BACKEND_NOT_AVAILABLE, EOPNOTSUPP,
                        "the %s backend cannot restore a snapshot", be->title);
    if (!streq(s->machine, spec->machine ? spec->machine : ""))
        return incompatible(reterr, s, "machine", s->machine, spec->machine);
    if (spec->memory_mib != s->memory_mib) {
        char a[16], b[16];
        snprintf(a, sizeof(a), "%u MiB", s->memory_mib);
        snprintf(b, sizeof(b), "%u MiB", spec->memory_mib);
        return incompatible(reterr, s, "a guest of", a, b);
    }
    bool template = streq(s->kind, "template");
    cleanup_free char *mark = str_printf("%s/" VM_FILE_RESTORED, v->dir);
    if (!mark)
        return oom(reterr);
    /* the mapping counts as a reference from before the launch: rm cannot take it away */
    int r = store_snapshot_ref_add(ctx->store, v->name, s->vm, s->name, reterr);
    if (r < 0)
        return r;
    if ((r = disk_from_layer(ctx, v, spec, s, reterr)) < 0)
        return r;
    (void)unlink(mark);
    free(spec->restore_ram);
    spec->restore_ram = template ? strdup(s->ram) : NULL;
    if (template && !spec->restore_ram)
        return oom(reterr);
    spec->incoming = true;
    /* jailed as a cold boot is: the template's RAM file bound in read-write, its group added
     * (docs/isolation.md, "Snapshots") */
    vm_launch_opts o = {.jail = true, .net = true};
    if ((r = vm_launch(ctx, v, spec, &o, ret, reterr)) < 0)
        return err_prefix(reterr, r, "while restoring vm '%s'", v->name);
    cleanup_free char *version = NULL;
    if ((r = be->version(v->dir, vm_deadline_after(CONTROL_TIMEOUT), &version, reterr)) >= 0 &&
        !streq(version, s->qemu_version))
        r = incompatible(reterr, s, be->title, s->qemu_version, version);
    if (r < 0) {
        (void)kill(ret->pid, SIGKILL);
        close(ret->hold);
        ret->hold = -1;
        be->cleanup(v->dir);
        return err_prefix(reterr, r, "while restoring vm '%s' from snapshot '%s/%s'", v->name,
                          s->vm, s->name);
    }
    return 0;
}

int snapshot_warm(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const store_snapshot *s,
                  vmctl_error **reterr)
{
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    cleanup_free char *state = str_printf("%s/" SNAP_FILE_STATE, s->dir);
    if (!state)
        return oom(reterr);
    cleanup_close int fd = open(state, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int r = err_make(reterr, VMCTL_E_SNAPSHOT_FAILED, errno, "cannot open '%s': %s", state,
                         strerror(errno));
        err_detail(reterr, "path", "%s", state);
        return r;
    }
    uint64_t t0 = now_usec();
    int r = be->snapshot_load(v->dir, fd, streq(s->kind, "template"),
                              vm_deadline_after(LOAD_TIMEOUT), reterr);
    if (r < 0)
        return r;
    uint64_t t1 = now_usec();
    /* the take's mark, written now: the take is left only the state and the identity */
    cleanup_free char *mark = str_printf("%s/" VM_FILE_RESTORED, v->dir);
    if (!mark)
        return oom(reterr);
    (void)write_file_atomic(mark, s->name, strlen(s->name), 0600);
    if (spec->agent) {
        uint64_t deadline = vm_deadline_after(IDENTITY_TIMEOUT);
        cleanup_agent agent_conn *conn = NULL;
        if ((r = vm_agent_connect(v, spec, 0, deadline, 0, &conn, reterr)) < 0 ||
            (r = agent_wait_ready(conn, deadline, NULL, NULL, reterr)) < 0 ||
            (r = push_identity(conn, spec, (restore_as){0}, deadline, reterr)) < 0)
            return r;
    }
    uint64_t t2 = now_usec();
    if ((r = be->pause(v->dir, vm_deadline_after(CONTROL_TIMEOUT), reterr)) < 0)
        return r;
    ctx_log(ctx, VMCTL_LOG_DEBUG,
            "vm '%s' warmed for snapshot '%s/%s': load %.1f ms, agent %.1f ms", v->name, s->vm,
            s->name, (double)(t1 - t0) / 1000.0, (double)(t2 - t1) / 1000.0);
    return 0;
}

int snapshot_incoming_finish(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const store_snapshot *s,
                             vm_launched *l, double timeout, vmctl_error **reterr)
{
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    bool template = streq(s->kind, "template");
    cleanup_free char *state = str_printf("%s/" SNAP_FILE_STATE, s->dir);
    cleanup_free char *mark = str_printf("%s/" VM_FILE_RESTORED, v->dir);
    if (!state || !mark)
        return oom(reterr);
    /* before any goto: fail's path runs its cleanup */
    cleanup_agent agent_conn *conn = NULL;
    int r;
    uint64_t t_load = now_usec();
    if (!l) {
        /* a warm pool's process (snapshot_warm): loaded and stopped, it only continues */
        if ((r = be->resume(v->dir, vm_deadline_after(CONTROL_TIMEOUT), reterr)) < 0)
            goto fail;
    } else {
        cleanup_close int fd = open(state, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            r = err_make(reterr, VMCTL_E_SNAPSHOT_FAILED, errno, "cannot open '%s': %s", state,
                         strerror(errno));
            err_detail(reterr, "path", "%s", state);
            goto fail;
        }
        if ((r = be->snapshot_load(v->dir, fd, template, vm_deadline_after(LOAD_TIMEOUT), reterr)) <
            0)
            goto fail;
    }
    uint64_t t_loaded = now_usec();
    /* the agent's session PING on its way before the store write: the guest's first answer
     * (cold code under TCG: tens of ms) overlaps the record (a failure here: connect again) */
    uint64_t id_deadline = vm_deadline_after(timeout > 0 ? timeout : IDENTITY_TIMEOUT);
    if (spec->agent)
        (void)vm_agent_connect(v, spec, 0, id_deadline, 0, &conn, NULL);
    if (l && (r = vm_launch_record(ctx, v, VMCTL_VM_RUNNING, l, reterr)) < 0)
        goto fail;
    if (l) /* a pool's process has it from its warm-up */
        (void)write_file_atomic(mark, s->name, strlen(s->name), 0600);
    uint64_t t_recorded = now_usec();
    restore_as as = snapshot_restored_as(s, spec);
    if (spec->agent && (r = refresh_identity(v, spec, TAKE_PTR(conn), as, id_deadline, reterr)) < 0)
        return err_prefix(reterr, r, "while giving vm '%s' its identity", v->name);
    if (spec->agent && streq(spec->net, "tap") &&
        (r = refresh_address(ctx, v, spec,
                             vm_deadline_after(timeout > 0 ? timeout : IDENTITY_TIMEOUT), reterr)) <
            0)
        return err_prefix(reterr, r, "while giving vm '%s' its address", v->name);
    ctx_log(ctx, VMCTL_LOG_DEBUG,
            "vm '%s' from snapshot '%s/%s': %s %.1f ms, record %.1f ms, identity %.1f ms (%s)",
            v->name, s->vm, s->name, l ? "load" : "continue", (double)(t_loaded - t_load) / 1000.0,
            (double)(t_recorded - t_loaded) / 1000.0, (double)(now_usec() - t_recorded) / 1000.0,
            !as.itself    ? "new hostname, environment, machine-id and MAC"
            : as.same_mac ? "its own hostname, environment, machine-id and MAC kept"
                          : "its own hostname, environment and machine-id kept, new MAC");
    return 0;
fail:
    (void)kill(l ? l->pid : v->pid, SIGKILL);
    if (l && l->hold >= 0) {
        close(l->hold);
        l->hold = -1;
    }
    be->cleanup(v->dir);
    return err_prefix(reterr, r, "while restoring vm '%s' from snapshot '%s/%s'", v->name, s->vm,
                      s->name);
}

/* Launch v (created, stopped or crashed; its lock held) from snapshot s and record it running.
 * spec: v's own. */
static int launch_from(vmctl_ctx *ctx, store_vm *v, vm_spec *spec, const store_snapshot *s,
                       double timeout, vmctl_error **reterr)
{
    vm_launched l;
    uint64_t t_launch = now_usec();
    int r = snapshot_incoming_launch(ctx, v, spec, s, &l, reterr);
    if (r < 0)
        return r;
    ctx_log(ctx, VMCTL_LOG_DEBUG, "vm '%s': launched for snapshot '%s/%s' in %.1f ms", v->name,
            s->vm, s->name, (double)(now_usec() - t_launch) / 1000.0);
    /* Test hook: a window in which a killed vmctl leaves a half-made clone. */
    const char *delay = getenv("VMCTL_TEST_RESTORE_DELAY_MS");
    if (delay)
        sleep_usec((uint64_t)strtoul(delay, NULL, 10) * 1000);
    return snapshot_incoming_finish(ctx, v, spec, s, &l, timeout, reterr);
}

int vmctl_snapshot_restore(vmctl_ctx *ctx, const char *vm, const char *snap, double timeout_sec,
                           vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(vm, reterr);
    VMCTL_ARG_CHECK(snap, reterr);
    snapshot_reconcile(ctx);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_close int lock = -1;
    vmctl_vm_state to;
    int r = vm_begin_op(ctx, vm, _VM_OP_MAX, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    if (v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED) {
        /* vm::invalid_state with its from/to details, in words that say what to do */
        const char *st = vmctl_vm_state_to_string(v->state);
        r = err_make(reterr, VMCTL_E_VM_INVALID_STATE, EBUSY,
                     "vm '%s' is %s: a restore needs it stopped", vm, st);
        err_detail(reterr, "vm", "%s", vm);
        err_detail(reterr, "from", "%s", st);
        err_detail(reterr, "to", "running");
        err_detail(reterr, "operation", "restore");
        err_help(reterr, "Stop it first (`vmctl stop %s`), then restore it.", vm);
        return r;
    }
    cleanup_store_snapshot store_snapshot *s = NULL;
    if ((r = snapshot_get(ctx, vm, snap, &s, reterr)) < 0)
        return r;
    uint64_t t0 = now_usec();
    if ((r = launch_from(ctx, v, spec, s, timeout_sec, reterr)) < 0)
        return r;
    ctx_log(ctx, VMCTL_LOG_INFO, "restored vm '%s' from snapshot '%s' in %.1f ms", vm, snap,
            (double)(now_usec() - t0) / 1000.0);
    return 0;
}

/* ---------- clone ---------- */

/* "... vmctl.hostname=OLD ..." with NEW instead (the default guest names itself from it when it
 * boots cold). */
static char *cmdline_rename(const char *cmdline, const char *name)
{
    if (!cmdline)
        return NULL;
    const char *p = strstr(cmdline, "vmctl.hostname=");
    if (!p)
        return strdup(cmdline);
    const char *end = p + strlen("vmctl.hostname=");
    end += strcspn(end, " ");
    return str_printf("%.*svmctl.hostname=%s%s", (int)(p - cmdline), cmdline, name, end);
}

int snapshot_clone_spec(vmctl_ctx *ctx, const store_snapshot *s, const char *name, vm_spec **ret,
                        vmctl_error **reterr)
{
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_spec_from_json(s->config, &spec, reterr);
    if (r < 0)
        return r;
    if ((r = snapshot_spec_rename(spec, name)) < 0)
        return oom(reterr);
    char hex[7];
    random_hex(hex, 3);
    free(spec->nic_mac);
    spec->nic_mac =
        str_printf("52:54:00:%c%c:%c%c:%c%c", hex[0], hex[1], hex[2], hex[3], hex[4], hex[5]);
    if (spec->ram_file) {
        /* its own file for its cold boots: a clone is snapshottable as its source was */
        cleanup_free char *ramdir = snapshot_ram_dir();
        char h[17];
        random_hex(h, 8);
        free(spec->ram_file);
        spec->ram_file = ramdir ? str_printf("%s/%s.%s.ram", ramdir, name, h) : NULL;
    }
    if (!spec->nic_mac || (s->config && strstr(s->config, "\"ram_file\"") && !spec->ram_file))
        return oom(reterr);
    for (size_t i = 0; i < spec->n_ports; i++)
        spec->ports[i].host_port = 0; /* new host ports */
    cleanup_free bool *auto_ports = NULL;
    if ((r = net_prepare_ports(ctx->store, spec, &auto_ports, reterr)) < 0)
        return r;
    *ret = TAKE_PTR(spec);
    return 0;
}

int snapshot_spec_rename(vm_spec *spec, const char *name)
{
    char *n = strdup(name);
    char *cl = spec->cmdline ? cmdline_rename(spec->cmdline, name) : NULL;
    if (!n || (spec->cmdline && !cl)) {
        free(n);
        free(cl);
        return -ENOMEM;
    }
    free(spec->name);
    spec->name = n;
    free(spec->cmdline);
    spec->cmdline = cl;
    return 0;
}

/* One clone: a process of the snapshot's warm pool when it has one ready (pool.c), else a new
 * VM row (incomplete until it runs: a killed clone is repaired like a killed create), its
 * directory, then the restore. */
int snapshot_clone_begin(vmctl_ctx *ctx, const vm_spec *spec, const char *project, int *ret_lock,
                         char **ret_dir, vmctl_error **reterr)
{
    const char *name = spec->name;
    cleanup_free char *json = NULL;
    if (vm_spec_to_json(spec, &json) < 0)
        return oom(reterr);
    cleanup_free char *dir = ctx_vm_dir(ctx, name);
    if (!dir)
        return oom(reterr);
    cleanup_close int lock = -1;
    int r = vm_lock(ctx, name, VM_LOCK_TIMEOUT, &lock, reterr);
    if (r < 0)
        return r;
    int64_t now = (int64_t)(realtime_usec() / 1000000);
    store_vm row = {
        .name = (char *)name,
        .state = VMCTL_VM_CREATED,
        .config = json,
        .dir = dir,
        .created_at = now,
        .updated_at = now,
        .complete = false,
        .owner_pid = getpid(),
        .owner_start = proc_start_time(getpid()),
        .project = (char *)project,
    };
    r = store_vm_insert_ports(ctx->store, &row, spec->ports, spec->n_ports, reterr);
    if (r == -EEXIST) {
        /* an abandoned clone or create under this name: repair it and try again once */
        store_vm *old = NULL;
        if (store_vm_get(ctx->store, name, &old, NULL) >= 0) {
            if (vm_reconcile(ctx, old, true) == 1) {
                vmctl_error_free(reterr ? *reterr : NULL);
                if (reterr)
                    *reterr = NULL;
                r = store_vm_insert_ports(ctx->store, &row, spec->ports, spec->n_ports, reterr);
            }
            store_vm_free(old);
        }
    }
    if (r < 0) {
        if (r != -EEXIST)
            vm_unlock_remove(ctx, name, TAKE_FD(lock));
        return r;
    }
    /* --net tap: a link of its own from the IP pool (released with the row) */
    if (streq(spec->net, "tap")) {
        store_lease l = {};
        if ((r = vmnet_lease(ctx->store, name, &l, reterr)) < 0) {
            (void)store_vm_delete(ctx->store, name, NULL);
            vm_unlock_remove(ctx, name, TAKE_FD(lock));
            return r;
        }
        store_lease_clear(&l);
    }
    if (mkdir(dir, 0700) < 0) {
        r = err_make(reterr, errno == EEXIST ? VMCTL_E_VM_ALREADY_EXISTS : VMCTL_E_IO, errno,
                     "cannot create vm directory '%s': %s", dir, strerror(errno));
        err_detail(reterr, "path", "%s", dir);
        (void)store_vm_delete(ctx->store, name, NULL);
        vm_unlock_remove(ctx, name, TAKE_FD(lock));
        return r;
    }
    if ((r = vm_owner_mark(dir)) < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot write '%s/" VM_FILE_CREATE_OWNER "'", dir);
        goto undo;
    }
    if ((r = sshc_keygen(dir, name, reterr)) < 0)
        goto undo;
    {
        cleanup_free char *cfg = str_printf("%s/" VM_FILE_CONFIG, dir);
        if (!cfg || (r = write_file_atomic(cfg, json, strlen(json), 0600)) < 0) {
            r = err_make(reterr, VMCTL_E_IO, cfg ? -r : ENOMEM, "cannot write the config of '%s'",
                         name);
            goto undo;
        }
    }
    *ret_lock = TAKE_FD(lock);
    *ret_dir = TAKE_PTR(dir);
    return 0;
undo:
    snapshot_clone_abort(ctx, name, dir, TAKE_FD(lock));
    return r;
}

void snapshot_clone_abort(vmctl_ctx *ctx, const char *name, const char *dir, int lock)
{
    (void)rm_rf(dir);
    (void)store_vm_delete(ctx->store, name, NULL);
    vm_unlock_remove(ctx, name, lock);
}

int snapshot_clone_complete(vmctl_ctx *ctx, const char *name, const char *dir, vmctl_error **reterr)
{
    int r = store_vm_set_complete(ctx->store, name, reterr);
    if (r < 0)
        return r;
    cleanup_free char *mark = str_printf("%s/" VM_FILE_CREATE_OWNER, dir);
    if (mark)
        (void)unlink(mark);
    return 0;
}

static int clone_one(vmctl_ctx *ctx, const store_snapshot *s, const char *name, const char *project,
                     double timeout, vmctl_error **reterr)
{
    int r = pool_take(ctx, s, name, project, timeout, reterr);
    if (r != -ENOENT)
        return r;
    cleanup_vm_spec vm_spec *spec = NULL;
    if ((r = snapshot_clone_spec(ctx, s, name, &spec, reterr)) < 0)
        return r;
    int lock = -1;
    cleanup_free char *dir = NULL;
    if ((r = snapshot_clone_begin(ctx, spec, project, &lock, &dir, reterr)) < 0)
        return r;
    {
        cleanup_store_vm store_vm *v = NULL;
        if ((r = store_vm_get(ctx->store, name, &v, reterr)) < 0)
            goto undo;
        if ((r = launch_from(ctx, v, spec, s, timeout, reterr)) < 0) {
            if (v->state == VMCTL_VM_RUNNING) {
                /* running, but without its identity: it must not pass for a good clone */
                (void)kill(v->pid, SIGKILL);
                (void)vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(QUIT_WAIT_TIMEOUT));
            }
            goto undo;
        }
    }
    if ((r = snapshot_clone_complete(ctx, name, dir, reterr)) < 0)
        goto undo;
    close(lock);
    return 0;
undo:
    snapshot_clone_abort(ctx, name, dir, lock);
    return r;
}

int vmctl_snapshot_clone(vmctl_ctx *ctx, const char *vm, const char *snap, const char *newname,
                         unsigned count, double timeout_sec, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(vm, reterr);
    VMCTL_ARG_CHECK(snap, reterr);
    VMCTL_ARG_CHECK(newname, reterr);
    int r;
    if ((r = check_name(reterr, "vm", newname)) < 0)
        return r;
    if (count == 0 || count > 1000)
        return err_invalid_field(reterr, "count", NULL, "1 to 1000",
                                 "invalid count: use 1 to 1000");
    snapshot_reconcile(ctx);
    cleanup_store_snapshot store_snapshot *s = NULL;
    if ((r = snapshot_get(ctx, vm, snap, &s, reterr)) < 0)
        return r;
    for (unsigned i = 1; i <= count; i++) {
        cleanup_free char *name = count == 1 ? strdup(newname) : str_printf("%s-%u", newname, i);
        if (!name)
            return oom(reterr);
        if (count > 1 && (r = check_name(reterr, "vm", name)) < 0)
            return r;
        uint64_t t0 = now_usec();
        if ((r = clone_one(ctx, s, name, NULL, timeout_sec, reterr)) < 0) {
            if (i > 1)
                err_note(reterr, "clones %s-1 to %s-%u were made and run", newname, newname, i - 1);
            return err_prefix(reterr, r, "while cloning '%s/%s' as '%s'", vm, snap, name);
        }
        ctx_log(ctx, VMCTL_LOG_INFO, "cloned '%s/%s' as vm '%s' in %.1f ms", vm, snap, name,
                (double)(now_usec() - t0) / 1000.0);
    }
    return 0;
}

int snapshot_clone_for_project(vmctl_ctx *ctx, const char *vm, const char *snap, const char *name,
                               const char *project, double timeout_sec, vmctl_error **reterr)
{
    int r = check_name(reterr, "vm", name);
    if (r < 0)
        return r;
    snapshot_reconcile(ctx);
    cleanup_store_snapshot store_snapshot *s = NULL;
    if ((r = snapshot_get(ctx, vm, snap, &s, reterr)) < 0)
        return r;
    uint64_t t0 = now_usec();
    if ((r = clone_one(ctx, s, name, project, timeout_sec, reterr)) < 0)
        return err_prefix(reterr, r, "while cloning '%s/%s' as '%s'", vm, snap, name);
    ctx_log(ctx, VMCTL_LOG_INFO, "cloned '%s/%s' as vm '%s' in %.1f ms", vm, snap, name,
            (double)(now_usec() - t0) / 1000.0);
    return 0;
}
