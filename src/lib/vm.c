/* SPDX-License-Identifier: MIT */
/* Orchestration: the public VM lifecycle API on top of the store, the backend, the default guest
 * and the agent. Each state change is checked against the transition table (state.c), done under
 * the VM's lock file, and recorded in the store by compare-and-set. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "arg-check.h"
#include "agent-client.h"
#include "backend.h"
#include "cloudinit.h"
#include "ctx.h"
#include "error.h"
#include "guest.h"
#include "image-cache.h"
#include "net.h"
#include "ssh.h"
#include "state.h"
#include "store.h"
#include "util/util.h"
#include "io-pause.h"
#include "vm-internal.h"
#include "vm-spec.h"

#define DEFAULT_VCPUS         1
#define DEFAULT_MEMORY_MIB    256
#define MAX_VCPUS             255
#define MIN_MEMORY_MIB        32
#define MAX_MEMORY_MIB        (1024u * 1024u)
#define MAX_DISK_GIB          65536
#define DEFAULT_STOP_TIMEOUT  10.0
#define DEFAULT_READY_TIMEOUT 60.0
#define QMP_TIMEOUT           10.0

static uint64_t deadline_after(double seconds)
{
    /* Past 10^9 s (or not finite) the microseconds overflow: as good as never. */
    if (!(seconds < 1e9))
        return UINT64_MAX / 2;
    return now_usec() + (uint64_t)(seconds * 1e6);
}

/* fmt takes the field name and the value, in that order. */
__attribute__((format(printf, 4, 0))) static int invalid_field(vmctl_error **reterr,
                                                               const char *field, const char *value,
                                                               const char *fmt, const char *allowed)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, fmt, field, value ? value : "");
#pragma GCC diagnostic pop
    err_detail(reterr, "field", "%s", field);
    if (value)
        err_detail(reterr, "value", "%s", value);
    err_detail(reterr, "allowed", "%s", allowed);
    err_help(reterr, "Set %s to %s.", field, allowed);
    return r;
}

/* config::invalid unless min <= value <= max; unit ("", " MiB", " GiB") follows the bounds. */
static int check_range(vmctl_error **reterr, const char *field, unsigned value, unsigned min,
                       unsigned max, const char *unit)
{
    if (value >= min && value <= max)
        return 0;
    char v[32], allowed[96];
    snprintf(v, sizeof(v), "%u", value);
    snprintf(allowed, sizeof(allowed), "%u to %u%s", min, max, unit);
    return invalid_field(reterr, field, v, "%s %s is out of range", allowed);
}

static int check_readable(vmctl_error **reterr, const char *field, const char *path)
{
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || access(path, R_OK) < 0)
        return invalid_field(reterr, field, path, "%s '%s' does not exist or is not readable",
                             "a readable regular file");
    return 0;
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
        return invalid_field(reterr, field, path,
                             "%s '%s' needs a disk image with cloud-init (--image)",
                             "unset for the default guest, which has no cloud-init");
    return 0;
}

static char *lock_path(const vmctl_ctx *ctx, const char *name)
{
    return str_printf("%s/" VM_LOCK_DIR "/%s.lock", ctx->home, name);
}

int vm_lock(vmctl_ctx *ctx, const char *name, double timeout, int *ret_fd, vmctl_error **reterr)
{
    cleanup_free char *path = lock_path(ctx, name);
    if (!path)
        return -ENOMEM;
    uint64_t deadline = deadline_after(timeout);
    for (bool made_dir = false;;) {
        cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0 && errno == ENOENT && !made_dir) {
            cleanup_free char *dir = str_printf("%s/" VM_LOCK_DIR, ctx->home);
            if (!dir)
                return -ENOMEM;
            /* 0700 whatever the umask: nobody else may hold (or plant) a VM's lock */
            int k = mkdir_private(dir);
            if (k < 0)
                return err_make(reterr, VMCTL_E_IO, -k, "cannot create '%s'", dir);
            made_dir = true;
            continue;
        }
        if (fd < 0)
            return err_make(reterr, VMCTL_E_IO, errno, "cannot open lock file '%s'", path);
        while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
            if (errno != EWOULDBLOCK && errno != EINTR)
                return err_make(reterr, VMCTL_E_IO, errno, "cannot lock '%s'", path);
            if (timeout <= 0)
                return -EWOULDBLOCK;
            if (now_usec() > deadline) {
                int r = err_make(reterr, VMCTL_E_STORE_LOCKED, EBUSY,
                                 "another vmctl has been working on vm '%s' for over %g s", name,
                                 timeout);
                err_detail(reterr, "vm", "%s", name);
                return r;
            }
            sleep_usec(5000);
        }
        /* The holder before us may have removed the file (the VM is gone) and a newcomer made a
         * new one: this lock then excludes nobody. Take the file that is there now. */
        struct stat held, now;
        if (fstat(fd, &held) < 0)
            return err_make(reterr, VMCTL_E_IO, errno, "cannot stat lock file '%s'", path);
        if (stat(path, &now) == 0 && now.st_dev == held.st_dev && now.st_ino == held.st_ino) {
            *ret_fd = TAKE_FD(fd);
            return 0;
        }
    }
}

void vm_unlock_remove(vmctl_ctx *ctx, const char *name, int fd)
{
    if (fd < 0)
        return;
    cleanup_free char *path = lock_path(ctx, name);
    if (path)
        (void)unlink(path);
    close(fd);
}

static bool wait_dead(pid_t pid, uint64_t start, uint64_t deadline)
{
    for (;;) {
        if (!proc_alive(pid, start))
            return true;
        if (now_usec() > deadline)
            return false;
        sleep_usec(10000);
    }
}

/* "pid P start S": which vmctl made a VM directory (create.owner, until create is complete). */
static int owner_mark(const char *dir)
{
    cleanup_free char *path = str_printf("%s/" VM_FILE_CREATE_OWNER, dir);
    if (!path)
        return -ENOMEM;
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    char line[64];
    int n = snprintf(line, sizeof(line), "pid %d start %llu\n", (int)getpid(),
                     (unsigned long long)proc_start_time(getpid()));
    if (write(fd, line, (size_t)n) != n)
        return errno ? -errno : -EIO;
    return 0;
}

int vm_owner_mark_read(const char *dir, pid_t *ret_pid, uint64_t *ret_start)
{
    cleanup_free char *path = str_printf("%s/" VM_FILE_CREATE_OWNER, dir);
    cleanup_free char *text = NULL;
    if (!path)
        return -ENOMEM;
    int r = read_file_tail(path, 64, &text);
    if (r < 0)
        return r;
    int pid = 0;
    unsigned long long start = 0;
    if (!text || sscanf(text, "pid %d start %llu", &pid, &start) != 2)
        return -EBADMSG;
    *ret_pid = pid;
    *ret_start = start;
    return 0;
}

/* Remove the directory of an abandoned create, but only when that create made it: its owner
 * mark names the dead owner, or it is empty (killed between mkdir and the mark). A directory
 * that was there before (a VM whose store row was lost) is never touched. */
static void remove_abandoned_dir(vmctl_ctx *ctx, const store_vm *v)
{
    pid_t pid = 0;
    uint64_t start = 0;
    if (vm_owner_mark_read(v->dir, &pid, &start) >= 0 && pid == v->owner_pid &&
        start == v->owner_start) {
        (void)rm_rf(v->dir);
        return;
    }
    if (rmdir(v->dir) == 0 || errno == ENOENT)
        return;
    ctx_log(ctx, VMCTL_LOG_NOTICE,
            "left directory '%s' alone: the interrupted create of vm '%s' did not make it "
            "(`vmctl doctor` reports it, `vmctl doctor --fix` adopts it)",
            v->dir, v->name);
}

/* Kill every hypervisor process of VM v that the store does not record (a running or paused
 * row's pid): one left by an older vmctl, or running from a directory whose row was lost. Under
 * the VM's lock. */
static void stop_strays(vmctl_ctx *ctx, const store_vm *v, const backend_ops *be);

static char *crash_note(const char *dir)
{
    cleanup_free char *qlog = str_printf("%s/" VM_FILE_BACKEND_LOG, dir);
    cleanup_free char *clog = str_printf("%s/" VM_FILE_CONSOLE_LOG, dir);
    cleanup_free char *qtail = NULL, *ctail = NULL;
    if (qlog)
        (void)read_file_tail(qlog, 1024, &qtail);
    if (clog)
        (void)read_file_tail(clog, 1024, &ctail);
    return str_printf("QEMU log tail:\n%s\nconsole tail:\n%s", qtail && *qtail ? qtail : "(empty)",
                      ctail && *ctail ? ctail : "(empty)");
}

/* How the VM's hypervisor `pid` ended, from its supervisor's record: 1 exit status 0, 0 another
 * end, -ENOENT no record (yet) for that pid. */
static int backend_exit_record(const char *dir, pid_t pid)
{
    cleanup_free char *path = str_printf("%s/" VM_FILE_EXIT, dir);
    cleanup_free char *text = NULL;
    if (!path || read_file_tail(path, 64, &text) < 0 || !text)
        return -ENOENT;
    unsigned long p = 0;
    char what[16];
    unsigned code = 0;
    if (sscanf(text, "pid %lu %15s %u", &p, what, &code) != 3 || p != (unsigned long)pid)
        return -ENOENT;
    return streq(what, "exit") && code == 0;
}

/* The hypervisor is gone: give its supervisor a moment to write the record (it does so right
 * after reaping it, but a reader can see the process gone first). Returns the record's verdict. */
static int backend_wait_exit_record(const char *dir, pid_t pid, uint64_t usec)
{
    uint64_t deadline = now_usec() + usec;
    int r;
    while ((r = backend_exit_record(dir, pid)) == -ENOENT && now_usec() < deadline)
        sleep_usec(2000);
    return r;
}

/* Bring a row in line with reality. Returns 1 when the row was an abandoned create and has been
 * removed, 2 when it is being created by a live process (hidden), 0 otherwise. locked: the
 * caller holds the VM's lock. */
static int vm_reconcile(vmctl_ctx *ctx, store_vm *v, bool locked)
{
    if (!v->complete) {
        if (proc_alive(v->owner_pid, v->owner_start))
            return 2;
        /* A create holds the VM's lock until the row is complete: a lock we cannot have is a
         * create (or a repair) still at work. */
        cleanup_close int lock = -1;
        if (!locked && vm_lock(ctx, v->name, 0, &lock, NULL) < 0)
            return 2;
        /* Claim the row as well (a vmctl before the lock directory did not take the lock). */
        if (store_vm_claim(ctx->store, v->name, v->owner_pid, v->owner_start, getpid(),
                           proc_start_time(getpid()), NULL) != 1)
            return 2;
        /* claimed: the owner recorded in the row is now this process; the mark names the dead
         * one */
        remove_abandoned_dir(ctx, v);
        (void)store_vm_delete(ctx->store, v->name, NULL);
        vm_unlock_remove(ctx, v->name, TAKE_FD(lock));
        ctx_log(ctx, VMCTL_LOG_NOTICE,
                "removed vm '%s': its create was interrupted (vmctl pid %d is gone)", v->name,
                (int)v->owner_pid);
        return 1;
    }
    if ((v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED) &&
        !proc_alive(v->pid, v->pid_start)) {
        /* a hypervisor that exited 0 was told to: the guest powered itself off */
        vmctl_vm_state to = backend_wait_exit_record(v->dir, v->pid, 300000) == 1
                                ? VMCTL_VM_STOPPED
                                : VMCTL_VM_CRASHED;
        if (store_vm_set_state(ctx->store, v->name, v->state, v->pid, to, 0, 0, NULL) >= 0) {
            v->state = to;
            v->pid = 0;
            if (to == VMCTL_VM_STOPPED)
                ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s': the guest powered itself off", v->name);
        } else {
            /* someone else changed it meanwhile: take what the store says now */
            store_vm *fresh = NULL;
            if (store_vm_get(ctx->store, v->name, &fresh, NULL) >= 0) {
                v->state = fresh->state;
                v->pid = fresh->pid;
                v->pid_start = fresh->pid_start;
                store_vm_free(fresh);
            }
        }
    }
    return 0;
}

/* To a vm::not_found for `name`: a directory without a row is worth a word (a lost row). */
static int note_orphan_dir(vmctl_ctx *ctx, const char *name, int r, vmctl_error **reterr)
{
    cleanup_free char *dir = ctx_vm_dir(ctx, name);
    struct stat st;
    if (dir && stat(dir, &st) == 0 && S_ISDIR(st.st_mode)) {
        err_note(reterr, "directory '%s' exists, but the store has no row for it", dir);
        err_help(reterr, "Run `vmctl doctor` to see what it holds and `vmctl doctor --fix` to "
                         "adopt it back into the store.");
    }
    return r;
}

static int vm_load_locked(vmctl_ctx *ctx, const char *name, bool locked, store_vm **ret_row,
                          vm_spec **ret_spec, vmctl_error **reterr)
{
    if (!name_is_valid(name))
        return err_make(reterr, VMCTL_E_VM_NOT_FOUND, ENOENT, "vm '%s' not found",
                        name ? name : "");
    cleanup_store_vm store_vm *v = NULL;
    int r = store_vm_get(ctx->store, name, &v, reterr);
    if (r == -ENOENT)
        return note_orphan_dir(ctx, name, r, reterr);
    if (r < 0)
        return r;
    r = vm_reconcile(ctx, v, locked);
    if (r > 0) {
        r = err_make(reterr, VMCTL_E_VM_NOT_FOUND, ENOENT, "vm '%s' not found", name);
        err_detail(reterr, "vm", "%s", name);
        if (r == 2)
            err_note(reterr, "a create of vm '%s' is still in progress", name);
        return r;
    }
    if (ret_spec) {
        r = vm_spec_from_json(v->config, ret_spec, reterr);
        if (r < 0)
            return err_prefix(reterr, r, "while reading vm '%s'", name);
    }
    *ret_row = TAKE_PTR(v);
    return 0;
}

int vm_load(vmctl_ctx *ctx, const char *name, store_vm **ret_row, vm_spec **ret_spec,
            vmctl_error **reterr)
{
    return vm_load_locked(ctx, name, false, ret_row, ret_spec, reterr);
}

static int check_transition(const store_vm *v, vm_op op, vmctl_vm_state *to, vmctl_error **reterr)
{
    if (vm_transition(v->state, op, to) < 0) {
        int r = err_invalid_state(reterr, v->name, vmctl_vm_state_to_string(v->state),
                                  vm_op_target_name(op));
        err_detail(reterr, "operation", "%s", vm_op_to_string(op));
        return r;
    }
    return 0;
}

/* ---------- create ---------- */

static int spec_from_config(vmctl_ctx *ctx, const vmctl_vm_config *c, vm_spec **ret,
                            vmctl_error **reterr)
{
    if (!c || !c->name)
        return invalid_field(reterr, "name", NULL, "%s is required%s",
                             "1-63 letters, digits, '-', '_' or '.', starting with a letter or "
                             "digit");
    if (!name_is_valid(c->name))
        return invalid_field(reterr, "name", c->name, "invalid %s '%s'",
                             "1-63 letters, digits, '-', '_' or '.', starting with a letter or "
                             "digit");
    if (!backend_find(c->backend, reterr))
        return -EOPNOTSUPP;
    cleanup_vm_spec vm_spec *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->name = strdup(c->name);
    s->backend = strdup(c->backend ? c->backend : "qemu");

    s->vcpus = c->vcpus ? c->vcpus : DEFAULT_VCPUS;
    s->memory_mib = c->memory_mib ? c->memory_mib : DEFAULT_MEMORY_MIB;
    if (check_range(reterr, "vcpus", s->vcpus, 1, MAX_VCPUS, "") < 0 ||
        check_range(reterr, "memory", s->memory_mib, MIN_MEMORY_MIB, MAX_MEMORY_MIB, " MiB") < 0 ||
        check_range(reterr, "disk", c->disk_gib, 0, MAX_DISK_GIB, " GiB") < 0)
        return -EINVAL;
    s->disk_gib = c->disk_gib;

    for (char *const *e = c->env; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !env_name_is_valid(*e, (size_t)(eq - *e)))
            return invalid_field(reterr, "env", *e, "invalid %s entry '%s'",
                                 "K=V with K matching [A-Za-z_][A-Za-z0-9_]*");
    }
    if (c->env && !(s->env = strv_copy(c->env)))
        return -ENOMEM;

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
        s->cmdline = str_printf("%s vmctl.hostname=%s%s%s", gp.cmdline, c->name,
                                c->cmdline ? " " : "", c->cmdline ? c->cmdline : "");
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
                return invalid_field(reterr, "disk", v, "%s %s GiB is smaller than the image",
                                     "at least the image's virtual size (vmctl image inspect)");
            }
            cleanup_free char *dir = ctx_vm_dir(ctx, c->name);
            s->image = strdup(ref.name ? ref.name : ref.path);
            s->base = TAKE_PTR(ref.path);
            s->base_format = TAKE_PTR(ref.format);
            image_ref_clear(&ref);
            if (!dir)
                return -ENOMEM;
            s->disk = str_printf("%s/%s", dir, rootfs ? "rootfs.raw" : "disk.qcow2");
            s->disk_format = strdup(rootfs ? "raw" : "qcow2");
            s->seed = str_printf("%s/seed.iso", dir);
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

    const char *machine = c->machine ? c->machine : (s->kernel ? "microvm" : "q35");
    if (!streq(machine, "microvm") && !streq(machine, "q35"))
        return invalid_field(reterr, "machine", machine, "invalid %s '%s'", "microvm or q35");
    if (!s->kernel && streq(machine, "microvm"))
        return invalid_field(reterr, "machine", machine,
                             "%s '%s' boots a kernel directly: give --kernel with --image",
                             "q35 for disk images booted by firmware");
    s->machine = strdup(machine);

    const char *net = c->net ? c->net : (c->n_ports || s->base ? "user" : "none");
    if (!streq(net, "user") && !streq(net, "tap") && !streq(net, "none"))
        return invalid_field(reterr, "net", net, "invalid %s '%s'", "user, tap or none");
    if (streq(net, "tap")) {
        /* Refused here, not at start: a VM that can never start is not created. */
        int r = err_make(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, EOPNOTSUPP,
                         "tap networking is not supported yet");
        err_detail(reterr, "field", "net");
        err_detail(reterr, "value", "%s", net);
        err_detail(reterr, "allowed", "user or none");
        err_help(reterr, "Use `--net user` (with `--port HOST:GUEST` for inbound connections) or "
                         "`--net none`.");
        return r;
    }
    if (c->n_ports && !streq(net, "user")) {
        int r = err_make(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, EINVAL,
                         "port forwards need user-mode networking, not '%s'", net);
        err_detail(reterr, "field", "port");
        err_help(reterr, "Use `--net user` (the default when --port is given) or drop --port.");
        return r;
    }
    s->net = strdup(net);
    if (c->n_ports) {
        s->ports = calloc(c->n_ports, sizeof(*s->ports));
        if (!s->ports)
            return -ENOMEM;
        for (size_t i = 0; i < c->n_ports; i++) {
            s->ports[i] = c->ports[i];
            if (c->ports[i].guest_port == 0)
                return invalid_field(reterr, "port", "0", "%s: guest port %s is not allowed",
                                     "HOST:GUEST with GUEST in 1-65535");
            /* host port 0: chosen and reserved by net_prepare_ports() in create */
        }
        s->n_ports = c->n_ports;
    }

    cleanup_free char *notice = NULL;
    int r = accel_resolve(c->accel ? c->accel : "auto", &s->accel, &notice, reterr);
    if (r < 0)
        return r;
    if (notice)
        ctx_log(ctx, VMCTL_LOG_NOTICE, "%s", notice);

    if (!s->name || !s->backend || !s->image || !s->machine || !s->net ||
        (s->kernel && !s->cmdline))
        return -ENOMEM;
    *ret = TAKE_PTR(s);
    return 0;
}

/* The VM's disk (overlay or rootfs clone) and its cloud-init seed, in the VM directory. */
static int prepare_disk(vmctl_ctx *ctx, const vmctl_vm_config *c, const vm_spec *spec,
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
    if (spec->seed) {
        cloudinit_seed seed = {
            .hostname = spec->name,
            .user_data = c->cloud_init,
            .ssh_key = c->ssh_key, /* the user's key, and */
            .vm_ssh_key = vm_pub,  /* the VM's own (ssh.c), both authorized */
            .network = !streq(spec->net, "none"),
        };
        r = cloudinit_write_seed(spec->seed, &seed, reterr);
        if (r < 0)
            return err_prefix(reterr, r, "while creating the seed of vm '%s'", spec->name);
    }
    return 0;
}

int vmctl_vm_create(vmctl_ctx *ctx, const vmctl_vm_config *config, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(config, reterr);
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = spec_from_config(ctx, config, &spec, reterr);
    if (r < 0)
        return r;
    /* net.c: the SSH forward, host ports chosen and checked (reserved with the row below) */
    cleanup_free bool *auto_ports = NULL;
    r = net_prepare_ports(ctx->store, spec, &auto_ports, reterr);
    if (r < 0)
        return r;
    cleanup_free char *json = NULL;
    r = vm_spec_to_json(spec, &json);
    if (r < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, -r, "cannot serialise vm '%s'", spec->name);
    cleanup_free char *dir = ctx_vm_dir(ctx, spec->name);
    if (!dir)
        return -ENOMEM;

    /* The VM's lock, until the row is complete (or gone again): no start, destroy or repair of
     * this name runs meanwhile. */
    cleanup_close int lock = -1;
    r = vm_lock(ctx, spec->name, VM_LOCK_TIMEOUT, &lock, reterr);
    if (r < 0)
        return r;

    int64_t now = (int64_t)(realtime_usec() / 1000000);
    store_vm row = {
        .name = spec->name,
        .state = VMCTL_VM_CREATED,
        .config = json,
        .dir = dir,
        .created_at = now,
        .updated_at = now,
        .complete = false,
        .owner_pid = getpid(),
        .owner_start = proc_start_time(getpid()),
        .project = (char *)config->project,
    };
    r = store_vm_insert_ports(ctx->store, &row, spec->ports, spec->n_ports, reterr);
    /* Another create reserved one of the ports we picked in the same instant: pick again. */
    for (int tries = 0; r == -EADDRINUSE && auto_ports && tries < 8; tries++) {
        vmctl_error_free(reterr ? *reterr : NULL);
        if (reterr)
            *reterr = NULL;
        free(json);
        json = NULL;
        if ((r = net_repick(ctx->store, spec, auto_ports, reterr)) < 0)
            return r;
        if ((r = vm_spec_to_json(spec, &json)) < 0)
            return err_make(reterr, VMCTL_E_INTERNAL, -r, "cannot serialise vm '%s'", spec->name);
        row.config = json;
        r = store_vm_insert_ports(ctx->store, &row, spec->ports, spec->n_ports, reterr);
    }
    if (r == -EEXIST) {
        /* An abandoned create under this name is not a real VM: repair and retry once. */
        store_vm *old = NULL;
        if (store_vm_get(ctx->store, spec->name, &old, NULL) >= 0) {
            int k = vm_reconcile(ctx, old, true);
            if (k == 1) {
                vmctl_error_free(reterr ? *reterr : NULL);
                if (reterr)
                    *reterr = NULL;
                r = store_vm_insert_ports(ctx->store, &row, spec->ports, spec->n_ports, reterr);
            } else if (old->complete && access(old->dir, F_OK) < 0 && errno == ENOENT) {
                err_note(reterr, "the directory of vm '%s' ('%s') is gone", spec->name, old->dir);
                err_help(reterr,
                         "Remove what is left of it with `vmctl destroy %s`, then create "
                         "it again.",
                         spec->name);
            }
            store_vm_free(old);
        }
    }
    if (r < 0) {
        bool row_exists = r == -EEXIST;
        if (!row_exists)
            vm_unlock_remove(ctx, spec->name, TAKE_FD(lock));
        return r;
    }

    /* Test hook: widens the window in which a killed vmctl leaves an incomplete row, so the
     * integration tests can kill it there deterministically. */
    const char *delay = getenv("VMCTL_TEST_CREATE_DELAY_MS");
    if (delay)
        sleep_usec((uint64_t)strtoul(delay, NULL, 10) * 1000);

    /* From here on, failure undoes the row, and the directory when this create made it. */
    bool made_dir = false;
    /* A guest CID for AF_VSOCK when the host can give one (start checks it again). */
    uint32_t cid = 0;
    if (agent_vhost_vsock_present(NULL) &&
        (r = store_vm_alloc_cid(ctx->store, spec->name, STORE_MIN_CID, &cid, reterr)) < 0)
        goto undo;
    /* Never into a directory that is there already: without a row it is most likely a VM whose
     * row was lost (a vmctl.db moved aside), its disk included. */
    /* 0700: its sockets (QMP, agent, console) are the keys to the VM */
    if (mkdir(dir, 0700) < 0) {
        if (errno == EEXIST) {
            r = err_make(reterr, VMCTL_E_VM_ALREADY_EXISTS, EEXIST,
                         "vm directory '%s' already exists, but the store has no vm '%s'", dir,
                         spec->name);
            err_detail(reterr, "vm", "%s", spec->name);
            err_detail(reterr, "path", "%s", dir);
            err_help(reterr,
                     "It may hold a VM whose store row was lost: `vmctl doctor` shows it and "
                     "`vmctl doctor --fix` adopts it back; or choose another name.");
        } else {
            r = err_make(reterr, VMCTL_E_IO, errno, "cannot create vm directory '%s'", dir);
            err_detail(reterr, "path", "%s", dir);
        }
        goto undo;
    }
    made_dir = true;
    /* what a repair after a killed create may remove: a directory with our mark */
    if ((r = owner_mark(dir)) < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot write '%s/" VM_FILE_CREATE_OWNER "'", dir);
        goto undo;
    }
    if ((r = sshc_keygen(dir, spec->name, reterr)) < 0)
        goto undo;
    if (spec->base && (r = prepare_disk(ctx, config, spec, reterr)) < 0)
        goto undo;
    /* the configuration beside the disk, so that `vmctl doctor --fix` can adopt the directory
     * should the store lose its row */
    {
        cleanup_free char *cfg = str_printf("%s/" VM_FILE_CONFIG, dir);
        if (!cfg) {
            r = -ENOMEM;
            goto undo;
        }
        if ((r = write_file_atomic(cfg, json, strlen(json), 0600)) < 0) {
            r = err_make(reterr, VMCTL_E_IO, -r, "cannot write '%s': %s", cfg, strerror(-r));
            goto undo;
        }
    }
    r = store_vm_set_complete(ctx->store, spec->name, reterr);
    if (r < 0)
        goto undo;
    {
        cleanup_free char *mark = str_printf("%s/" VM_FILE_CREATE_OWNER, dir);
        if (mark)
            (void)unlink(mark);
    }
    ctx_log(ctx, VMCTL_LOG_INFO, "created vm '%s' in %s", spec->name, dir);
    return 0;

undo:
    if (made_dir)
        (void)rm_rf(dir);
    (void)store_vm_delete(ctx->store, spec->name, NULL);
    vm_unlock_remove(ctx, spec->name, TAKE_FD(lock));
    return r;
}

/* ---------- start and readiness ---------- */

struct liveness {
    pid_t pid;
    uint64_t start;
};

static bool still_alive(void *userdata)
{
    struct liveness *l = userdata;
    return proc_alive(l->pid, l->start);
}

static int wait_ready_row(vmctl_ctx *ctx, const store_vm *v, const vm_spec *spec, double timeout,
                          vmctl_error **reterr)
{
    if (timeout <= 0)
        timeout = DEFAULT_READY_TIMEOUT;
    if (v->state != VMCTL_VM_RUNNING) {
        int r = err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, EAGAIN, "vm '%s' is %s, not running",
                         v->name, vmctl_vm_state_to_string(v->state));
        err_detail(reterr, "vm", "%s", v->name);
        err_detail(reterr, "reason", "vm is %s", vmctl_vm_state_to_string(v->state));
        err_detail(reterr, "remediation", "vmctl start %s --wait", v->name);
        return r;
    }
    if (!spec->agent) {
        int r = err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, EOPNOTSUPP,
                         "vm '%s' has no guest agent to wait for", v->name);
        err_detail(reterr, "vm", "%s", v->name);
        err_detail(reterr, "reason", "image without vmctl-agent");
        err_detail(reterr, "remediation", "use the default guest or an image with vmctl-agent");
        return r;
    }
    uint64_t deadline = deadline_after(timeout);
    struct liveness l = {v->pid, v->pid_start};
    cleanup_agent agent_conn *conn = NULL;
    /* virtio-serial: there from the first instant, while the guest may load vsock late (the
     * default guest does), and a vsock connect to a booting guest would only time out */
    int r = agent_connect_vm(v->dir, 0, deadline, 0, &conn, reterr);
    if (r >= 0)
        r = agent_wait_ready(conn, deadline, still_alive, &l, reterr);
    if (r >= 0 && (r = guest_sync_metadata(conn, spec, true, deadline, reterr)) < 0)
        return r;
    if (r >= 0) {
        ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s' is ready", v->name);
        return 0;
    }
    if (!proc_alive(v->pid, v->pid_start)) {
        (void)store_vm_set_state(ctx->store, v->name, VMCTL_VM_RUNNING, v->pid, VMCTL_VM_CRASHED, 0,
                                 0, NULL);
        r = err_make(reterr, VMCTL_E_QEMU_SPAWN_FAILED, ECHILD,
                     "QEMU exited while vm '%s' was booting", v->name);
        err_detail(reterr, "vm", "%s", v->name);
        cleanup_free char *note = crash_note(v->dir);
        if (note)
            err_note(reterr, "%s", note);
        err_help(reterr, "Look at `vmctl logs %s` and `vmctl logs %s --qemu` for why it stopped.",
                 v->name, v->name);
        return r;
    }
    if (r == -ETIMEDOUT) {
        r = err_timeout(reterr, "boot", timeout,
                        "vm '%s' did not become ready within %g s (its agent never answered)",
                        v->name, timeout);
        err_detail(reterr, "vm", "%s", v->name);
        cleanup_free char *clog = str_printf("%s/" VM_FILE_CONSOLE_LOG, v->dir);
        cleanup_free char *tail = NULL;
        if (clog && read_file_tail(clog, 1024, &tail) >= 0 && *tail)
            err_note(reterr, "console tail:\n%s", tail);
    }
    return r;
}

int vmctl_vm_wait_ready(vmctl_ctx *ctx, const char *name, double timeout_sec, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_load(ctx, name, &v, &spec, reterr);
    if (r < 0)
        return r;
    return wait_ready_row(ctx, v, spec, timeout_sec, reterr);
}

struct strays {
    vmctl_ctx *ctx;
    const store_vm *v;
    pid_t pids[16];
    uint64_t starts[16];
    size_t n;
};

static int stray_found(const char *name, pid_t pid, uint64_t start, void *userdata)
{
    struct strays *s = userdata;
    const store_vm *v = s->v;
    if ((v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED) && pid == v->pid &&
        start == v->pid_start)
        return 0; /* the recorded one */
    if (kill(pid, SIGKILL) < 0)
        return 0;
    ctx_log(s->ctx, VMCTL_LOG_NOTICE,
            "stopped a hypervisor of vm '%s' (pid %d) that the store does not record as running",
            name, (int)pid);
    if (s->n < ELEMENTSOF(s->pids)) {
        s->pids[s->n] = pid;
        s->starts[s->n++] = start;
    }
    return 0;
}

static void stop_strays(vmctl_ctx *ctx, const store_vm *v, const backend_ops *be)
{
    if (!be->scan)
        return;
    cleanup_free char *vms = str_printf("%s/vms", ctx->home);
    cleanup_free char *real = vms ? realpath(vms, NULL) : NULL;
    if (!real)
        return;
    struct strays s = {.ctx = ctx, .v = v};
    (void)be->scan(real, v->name, stray_found, &s);
    uint64_t deadline = deadline_after(DEFAULT_STOP_TIMEOUT);
    for (size_t i = 0; i < s.n; i++)
        (void)wait_dead(s.pids[i], s.starts[i], deadline);
}

int vm_stop_strays(vmctl_ctx *ctx, const store_vm *v)
{
    cleanup_vm_spec vm_spec *spec = NULL;
    const backend_ops *be = NULL;
    if (vm_spec_from_json(v->config, &spec, NULL) < 0 || !(be = backend_find(spec->backend, NULL)))
        be = &qemu_backend;
    stop_strays(ctx, v, be);
    return 0;
}

/* Load and lock a VM, re-read it under the lock (another vmctl may have acted meanwhile), stop
 * any hypervisor of it the row does not record, and check that op is allowed (_VM_OP_MAX: no
 * check). */
static int begin_op(vmctl_ctx *ctx, const char *name, vm_op op, store_vm **ret_v,
                    vm_spec **ret_spec, vmctl_vm_state *to, int *ret_lock, vmctl_error **reterr)
{
    cleanup_store_vm store_vm *peek = NULL;
    int r = vm_load(ctx, name, &peek, NULL, reterr);
    if (r < 0)
        return r;
    cleanup_close int lock = -1;
    r = vm_lock(ctx, name, VM_LOCK_TIMEOUT, &lock, reterr);
    if (r < 0)
        return r;
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    r = vm_load_locked(ctx, name, true, &v, &spec, reterr);
    if (r == -ENOENT) {
        /* destroyed meanwhile: the lock file goes with it (if the row is really gone) */
        store_vm *gone = NULL;
        if (store_vm_get(ctx->store, name, &gone, NULL) == -ENOENT)
            vm_unlock_remove(ctx, name, TAKE_FD(lock));
        store_vm_free(gone);
    }
    if (r < 0)
        return r;
    const backend_ops *be = backend_find(spec->backend, NULL);
    if (be)
        stop_strays(ctx, v, be);
    if (op != _VM_OP_MAX) {
        r = check_transition(v, op, to, reterr);
        if (r < 0)
            return r;
    }
    *ret_v = TAKE_PTR(v);
    *ret_spec = TAKE_PTR(spec);
    *ret_lock = TAKE_FD(lock);
    return 0;
}

/* CID_TRIES: how many CIDs held by other processes on the host start steps over. */
#define CID_TRIES 64

/* v->cid: the VM's guest CID (allocated when it has none, or below min), free on the host too:
 * a CID another process holds (another vmctl home, another hypervisor) is replaced by the next
 * one free in the store. network::setup_failed when none is found. */
static int choose_cid(vmctl_ctx *ctx, store_vm *v, uint32_t min, vmctl_error **reterr)
{
    int r;
    if ((!v->cid || v->cid < min) &&
        (r = store_vm_alloc_cid(ctx->store, v->name, min, &v->cid, reterr)) < 0)
        return r;
    for (int i = 0; i < CID_TRIES; i++) {
        int busy = agent_vsock_cid_busy(NULL, v->cid);
        if (busy <= 0)
            return 0; /* free (or cannot tell: QEMU will say) */
        ctx_log(ctx, VMCTL_LOG_INFO, "guest CID %u is used by another process; trying the next",
                v->cid);
        if ((r = store_vm_alloc_cid(ctx->store, v->name, v->cid + 1, &v->cid, reterr)) < 0)
            return r;
    }
    r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRINUSE,
                 "no free guest CID for vm '%s': %d in a row are used by other processes on this "
                 "host",
                 v->name, CID_TRIES);
    err_detail(reterr, "vm", "%s", v->name);
    err_detail_num(reterr, "cid", v->cid);
    err_help(reterr, "Stop the other VMs using vsock, or `rmmod vhost_vsock` to run without "
                     "AF_VSOCK (the agent then uses virtio-serial).");
    return r;
}

int vmctl_vm_start(vmctl_ctx *ctx, const char *name, bool wait, double timeout_sec,
                   vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    {
        cleanup_close int lock = -1;
        vmctl_vm_state to;
        int r = begin_op(ctx, name, VM_OP_START, &v, &spec, &to, &lock, reterr);
        if (r < 0)
            return r;
        const backend_ops *be = backend_find(spec->backend, reterr);
        if (!be)
            return -EOPNOTSUPP;
        be->cleanup(v->dir);
        bool vsock = agent_vhost_vsock_present(NULL);
        if (vsock && (r = choose_cid(ctx, v, STORE_MIN_CID, reterr)) < 0)
            return err_prefix(reterr, r, "while starting vm '%s'", name);
        spec->guest_cid = vsock ? v->cid : 0;
        pid_t pid = 0;
        uint64_t pstart = 0;
        cleanup_close int hold = -1; /* closing it unrecorded makes the supervisor kill QEMU */
        r = be->launch(spec, v->dir, &pid, &pstart, &hold, reterr);
        if (r < 0 && spec->guest_cid && agent_vsock_cid_busy(NULL, spec->guest_cid) == 1) {
            /* another process took the CID between our check and QEMU's start: next one */
            vmctl_error_free(reterr ? *reterr : NULL);
            if (reterr)
                *reterr = NULL;
            if ((r = choose_cid(ctx, v, v->cid + 1, reterr)) < 0)
                return err_prefix(reterr, r, "while starting vm '%s'", name);
            spec->guest_cid = v->cid;
            be->cleanup(v->dir);
            r = be->launch(spec, v->dir, &pid, &pstart, &hold, reterr);
        }
        if (r < 0)
            return err_prefix(reterr, r, "while starting vm '%s'", name);
        /* Test hook: widens the window between the launch and its record, so that the
         * integration tests can kill vmctl there deterministically. */
        const char *delay = getenv("VMCTL_TEST_START_DELAY_MS");
        if (delay)
            sleep_usec((uint64_t)strtoul(delay, NULL, 10) * 1000);
        r = store_vm_set_state(ctx->store, name, v->state, -1, to, pid, pstart, reterr);
        if (r < 0) {
            (void)kill(pid, SIGKILL);
            return r;
        }
        backend_launch_commit(TAKE_FD(hold));
        v->state = to;
        v->pid = pid;
        v->pid_start = pstart;
        ctx_log(ctx, VMCTL_LOG_INFO, "started vm '%s' (pid %d)", name, (int)pid);
    } /* the lock is released here: waiting for the guest must not block stop or kill */
    if (!wait)
        return 0;
    return wait_ready_row(ctx, v, spec, timeout_sec, reterr);
}

/* ---------- stop, kill, pause, resume, destroy ---------- */

static int kill_and_wait(const store_vm *v, double timeout, vmctl_error **reterr)
{
    if (!proc_alive(v->pid, v->pid_start))
        return 0;
    if (kill(v->pid, SIGKILL) < 0 && errno != ESRCH) {
        int r = err_make(reterr, VMCTL_E_VM_SHUTDOWN_FAILED, errno,
                         "cannot send SIGKILL to vm '%s' (pid %d)", v->name, (int)v->pid);
        err_detail(reterr, "vm", "%s", v->name);
        return r;
    }
    if (!wait_dead(v->pid, v->pid_start, deadline_after(timeout))) {
        int r =
            err_make(reterr, VMCTL_E_VM_SHUTDOWN_FAILED, ETIMEDOUT,
                     "vm '%s' (pid %d) survived SIGKILL for %g s", v->name, (int)v->pid, timeout);
        err_detail(reterr, "vm", "%s", v->name);
        err_detail(reterr, "operation", "kill");
        err_detail_num(reterr, "timeout_seconds", timeout);
        return r;
    }
    return 0;
}

static int graceful_request(const store_vm *v, const vm_spec *spec, const backend_ops *be,
                            double timeout)
{
    uint64_t deadline = deadline_after(timeout < 3 ? timeout : 3);
    if (v->state == VMCTL_VM_PAUSED && be->resume(v->dir, deadline, NULL) < 0)
        return -EIO;
    if (spec->agent) {
        cleanup_agent agent_conn *conn = NULL;
        if (agent_connect_vm(v->dir, v->cid, deadline, 0, &conn, NULL) >= 0 &&
            agent_shutdown(conn, false, deadline, NULL) >= 0)
            return 0;
    }
    return be->powerdown(v->dir, deadline, NULL);
}

int vmctl_vm_stop(vmctl_ctx *ctx, const char *name, double timeout_sec, bool force,
                  vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_close int lock = -1;
    vmctl_vm_state to;
    int r = begin_op(ctx, name, VM_OP_STOP, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    double timeout = timeout_sec > 0 ? timeout_sec : DEFAULT_STOP_TIMEOUT;
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;

    if (v->state != VMCTL_VM_CRASHED && proc_alive(v->pid, v->pid_start)) {
        bool dead = false;
        if (!force && graceful_request(v, spec, be, timeout) >= 0)
            dead = wait_dead(v->pid, v->pid_start, deadline_after(timeout));
        if (!dead && proc_alive(v->pid, v->pid_start)) {
            ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s' did not power off; sending SIGTERM", name);
            if (kill(v->pid, SIGTERM) < 0 && errno != ESRCH)
                return err_make(reterr, VMCTL_E_VM_SHUTDOWN_FAILED, errno,
                                "cannot send SIGTERM to vm '%s'", name);
            dead = wait_dead(v->pid, v->pid_start, deadline_after(timeout));
        }
        if (!dead) {
            ctx_log(ctx, VMCTL_LOG_NOTICE, "vm '%s' ignored SIGTERM for %g s; sending SIGKILL",
                    name, timeout);
            r = kill_and_wait(v, timeout, reterr);
            if (r < 0)
                return err_prefix(reterr, r, "while stopping vm '%s'", name);
        }
    }
    be->cleanup(v->dir);
    return store_vm_set_state(ctx->store, name, v->state, -1, to, 0, 0, reterr);
}

int vmctl_vm_kill(vmctl_ctx *ctx, const char *name, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_close int lock = -1;
    vmctl_vm_state to;
    int r = begin_op(ctx, name, VM_OP_KILL, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    if (v->state != VMCTL_VM_CRASHED) {
        r = kill_and_wait(v, DEFAULT_STOP_TIMEOUT, reterr);
        if (r < 0)
            return r;
    }
    be->cleanup(v->dir);
    return store_vm_set_state(ctx->store, name, v->state, -1, to, 0, 0, reterr);
}

static int pause_resume(vmctl_ctx *ctx, const char *name, vm_op op, vmctl_error **reterr)
{
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_close int lock = -1;
    vmctl_vm_state to;
    int r = begin_op(ctx, name, op, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    uint64_t deadline = deadline_after(QMP_TIMEOUT);
    r = op == VM_OP_PAUSE ? be->pause(v->dir, deadline, reterr)
                          : be->resume(v->dir, deadline, reterr);
    if (r < 0)
        return err_prefix(reterr, r, "while %s vm '%s'", op == VM_OP_PAUSE ? "pausing" : "resuming",
                          name);
    return store_vm_set_state(ctx->store, name, v->state, v->pid, to, v->pid, v->pid_start, reterr);
}

int vmctl_vm_pause(vmctl_ctx *ctx, const char *name, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    return pause_resume(ctx, name, VM_OP_PAUSE, reterr);
}

int vmctl_vm_resume(vmctl_ctx *ctx, const char *name, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    int r = vm_io_pause_resume(ctx, name, reterr); /* paused by QEMU, running in the store */
    if (r != 0)
        return r < 0 ? r : 0;
    return pause_resume(ctx, name, VM_OP_RESUME, reterr);
}

int vmctl_vm_destroy(vmctl_ctx *ctx, const char *name, bool force, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_close int lock = -1;
    vmctl_vm_state to;
    int r = begin_op(ctx, name, _VM_OP_MAX, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    if (!force) {
        r = check_transition(v, VM_OP_DESTROY, &to, reterr);
        if (r < 0) {
            err_help(reterr, "Stop it first with `vmctl stop %s`, or pass --force to kill it.",
                     name);
            return r;
        }
    } else if (v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED) {
        r = kill_and_wait(v, DEFAULT_STOP_TIMEOUT, reterr);
        if (r < 0)
            return err_prefix(reterr, r, "while destroying vm '%s'", name);
        (void)backend_wait_exit_record(v->dir, v->pid, 1000000); /* not into a removed dir */
    }
    r = rm_rf(v->dir);
    for (int tries = 0; r == -ENOTEMPTY && tries < 20; tries++) {
        sleep_usec(10000); /* something (a supervisor whose record is late) wrote meanwhile */
        r = rm_rf(v->dir);
    }
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot remove vm directory '%s': %s", v->dir,
                     strerror(-r));
        err_detail(reterr, "path", "%s", v->dir);
        return r;
    }
    r = store_vm_delete(ctx->store, name, reterr);
    if (r < 0)
        return r;
    vm_unlock_remove(ctx, name, TAKE_FD(lock));
    ctx_log(ctx, VMCTL_LOG_INFO, "destroyed vm '%s'", name);
    return 0;
}

/* ---------- queries ---------- */

static int info_from_row(const store_vm *v, const vm_spec *s, vmctl_vm_info **ret)
{
    vmctl_vm_info *i = calloc(1, sizeof(*i));
    if (!i)
        return -ENOMEM;
    i->name = strdup(v->name);
    i->state = v->state;
    i->backend = strdup(s->backend);
    i->machine = strdup(s->machine);
    i->accel = strdup(s->accel);
    i->vcpus = s->vcpus;
    i->memory_mib = s->memory_mib;
    i->disk_gib = s->disk_gib;
    i->image = strdup(s->image);
    i->kernel = s->kernel ? strdup(s->kernel) : NULL;
    i->initrd = s->initrd ? strdup(s->initrd) : NULL;
    i->cmdline = s->cmdline ? strdup(s->cmdline) : NULL;
    i->net = strdup(s->net);
    if (s->n_ports) {
        i->ports = calloc(s->n_ports, sizeof(*i->ports));
        if (i->ports) {
            memcpy(i->ports, s->ports, s->n_ports * sizeof(*i->ports));
            i->n_ports = s->n_ports;
        }
    }
    i->env = s->env ? strv_copy(s->env) : NULL;
    i->pid = (v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED) ? v->pid : 0;
    i->dir = strdup(v->dir);
    i->created_at = v->created_at;
    i->cid = v->cid;
    i->project = v->project ? strdup(v->project) : NULL;
    i->provision_state = v->provision_state;
    i->provision_step = v->provision_step;
    i->provision_error = v->provision_error ? strdup(v->provision_error) : NULL;
    i->provisioned_at = v->provisioned_at;
    if (v->state == VMCTL_VM_CRASHED)
        i->crash_note = crash_note(v->dir);
    if (!i->name || !i->backend || !i->machine || !i->accel || !i->image || !i->net || !i->dir) {
        vmctl_vm_info_free(i);
        return -ENOMEM;
    }
    *ret = i;
    return 0;
}

int vmctl_vm_get(vmctl_ctx *ctx, const char *name, vmctl_vm_info **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_load(ctx, name, &v, &spec, reterr);
    if (r < 0)
        return r;
    r = info_from_row(v, spec, ret);
    if (r < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, -r, "out of memory");
    vm_info_io_pause(v, spec, *ret);
    return 0;
}

int vmctl_vm_list(vmctl_ctx *ctx, vmctl_vm_info ***ret, size_t *n, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    store_vm **rows = NULL;
    size_t nrows = 0;
    int r = store_vm_list(ctx->store, &rows, &nrows, reterr);
    if (r < 0)
        return r;
    vmctl_vm_info **out = calloc(nrows + 1, sizeof(*out));
    size_t k = 0;
    if (!out) {
        store_vm_list_free(rows, nrows);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < nrows; i++) {
        if (vm_reconcile(ctx, rows[i], false) != 0)
            continue;
        cleanup_vm_spec vm_spec *spec = NULL;
        r = vm_spec_from_json(rows[i]->config, &spec, reterr);
        if (r >= 0 && (r = info_from_row(rows[i], spec, &out[k])) >= 0)
            vm_info_io_pause(rows[i], spec, out[k]);
        if (r < 0) {
            err_prefix(reterr, r, "while reading vm '%s'", rows[i]->name);
            vmctl_vm_info_list_free(out, k);
            store_vm_list_free(rows, nrows);
            return r;
        }
        k++;
    }
    store_vm_list_free(rows, nrows);
    *ret = out;
    *n = k;
    return 0;
}

void vmctl_vm_info_free(vmctl_vm_info *i)
{
    if (!i)
        return;
    free(i->name);
    free(i->backend);
    free(i->machine);
    free(i->accel);
    free(i->image);
    free(i->kernel);
    free(i->initrd);
    free(i->cmdline);
    free(i->net);
    free(i->ports);
    strv_free(i->env);
    free(i->dir);
    free(i->crash_note);
    free(i->project);
    free(i->provision_error);
    free(i->paused_by);
    free(i->pause_cause);
    free(i);
}

void vmctl_vm_info_list_free(vmctl_vm_info **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        vmctl_vm_info_free(list[i]);
    free(list);
}

int vmctl_vm_log_path(vmctl_ctx *ctx, const char *name, const char *which, char **ret,
                      vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    const char *file;
    if (!which || streq(which, "console"))
        file = VM_FILE_CONSOLE_LOG;
    else if (streq(which, "qemu"))
        file = VM_FILE_BACKEND_LOG;
    else
        return invalid_field(reterr, "log", which, "unknown %s '%s'", "console or qemu");
    cleanup_store_vm store_vm *v = NULL;
    int r = vm_load(ctx, name, &v, NULL, reterr);
    if (r < 0)
        return r;
    *ret = str_printf("%s/%s", v->dir, file);
    return *ret ? 0 : -ENOMEM;
}

int vmctl_vm_console_open(vmctl_ctx *ctx, const char *name, int *ret_fd, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(ret_fd, reterr);
    cleanup_store_vm store_vm *v = NULL;
    int r = vm_load(ctx, name, &v, NULL, reterr);
    if (r < 0)
        return r;
    if (v->state != VMCTL_VM_RUNNING && v->state != VMCTL_VM_PAUSED)
        return err_invalid_state(reterr, name, vmctl_vm_state_to_string(v->state), "running");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/" VM_FILE_CONSOLE_SOCK, v->dir);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
        return err_make(reterr, VMCTL_E_IO, ENAMETOOLONG, "console socket path too long");
    cleanup_close int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot connect to the console of vm '%s'", name);
        err_detail(reterr, "path", "%s", sa.sun_path);
        return r;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}
