/* SPDX-License-Identifier: MIT */
/* Row loading: a VM's lock, its row read and brought in line with reality (an abandoned create
 * removed, a dead hypervisor marked crashed or stopped, strays killed), and the start of every
 * state change (vm_begin_op). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "ctx.h"
#include "error.h"
#include "jail.h"
#include "state.h"
#include "store.h"
#include "supervise.h"
#include "util/util.h"
#include "vm-dir.h"
#include "vm-internal.h"
#include "vm-net.h"
#include "vm-spec.h"

uint64_t vm_deadline_after(double seconds)
{
    /* Past 10^9 s (or not finite) the microseconds overflow: as good as never. */
    if (!(seconds < 1e9))
        return UINT64_MAX / 2;
    return now_usec() + (uint64_t)(seconds * 1e6);
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
    uint64_t deadline = vm_deadline_after(timeout);
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

bool vm_wait_dead(pid_t pid, uint64_t start, uint64_t deadline)
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
int vm_owner_mark(const char *dir)
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

int vm_dir_remove(const store_vm *v, const vm_spec *spec, pid_t pid)
{
    if (pid > 0) {
        supervise_exit ex;
        (void)supervise_exit_wait(v->dir, pid, 1000000, &ex);
    }
    if (spec && spec->ram_file)
        (void)unlink(spec->ram_file);
    (void)jail_cgroup_remove(v->dir); /* nothing of the VM's left under /sys/fs/cgroup */
    int r = rm_rf(v->dir);
    for (int tries = 0; r == -ENOTEMPTY && tries < 20; tries++) {
        sleep_usec(10000); /* something (a supervisor whose record is late) wrote meanwhile */
        r = rm_rf(v->dir);
    }
    return r;
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

/* Bring a row in line with reality. Returns 1 when the row was an abandoned create and has been
 * removed, 2 when it is being created by a live process (hidden), 0 otherwise. locked: the
 * caller holds the VM's lock. */
int vm_reconcile(vmctl_ctx *ctx, store_vm *v, bool locked)
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
         * one. A clone taken from a warm pool (pool.c) has a hypervisor already: it goes too. */
        if (v->pid && proc_alive(v->pid, v->pid_start)) {
            (void)kill(v->pid, SIGKILL);
            (void)vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(DEFAULT_STOP_TIMEOUT));
            supervise_exit ex; /* its supervisor's record: not into a removed directory */
            (void)supervise_exit_wait(v->dir, v->pid, 1000000, &ex);
        }
        remove_abandoned_dir(ctx, v);
        {
            /* a snapshottable VM's RAM file is on tmpfs, outside its directory */
            cleanup_vm_spec vm_spec *spec = NULL;
            if (vm_spec_from_json(v->config, &spec, NULL) >= 0 && spec->ram_file)
                (void)unlink(spec->ram_file);
        }
        (void)store_vm_delete(ctx->store, v->name, NULL);
        vm_unlock_remove(ctx, v->name, TAKE_FD(lock));
        ctx_log(ctx, VMCTL_LOG_NOTICE,
                "removed vm '%s': its create was interrupted (vmctl pid %d is gone)", v->name,
                (int)v->owner_pid);
        return 1;
    }
    /* Bound to an owner that is gone (vmctl run --rm SIGKILLed, a killed containerd shim): its
     * supervisor killed it (here too, in case); remove it. */
    if (v->config && strstr(v->config, "\"owner\"")) {
        cleanup_vm_spec vm_spec *spec = NULL;
        if (vm_spec_from_json(v->config, &spec, NULL) >= 0 && spec->owner_pid &&
            !proc_alive(spec->owner_pid, spec->owner_start)) {
            cleanup_close int lock = -1;
            if (!locked && vm_lock(ctx, v->name, 0, &lock, NULL) < 0)
                return 0; /* someone is at it: the next look removes it */
            bool ran = v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED;
            if (ran && proc_alive(v->pid, v->pid_start)) {
                (void)kill(v->pid, SIGKILL);
                if (!vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(5.0)))
                    return 0;
            }
            /* its supervisor may still be writing its record there (seen in CI: the row went,
             * the directory stayed) */
            (void)vm_dir_remove(v, spec, ran ? v->pid : 0);
            vmnet_release(ctx->store, v->name, spec->net); /* before its lease goes */
            (void)store_vm_delete(ctx->store, v->name, NULL);
            if (lock >= 0)
                vm_unlock_remove(ctx, v->name, TAKE_FD(lock));
            ctx_log(ctx, VMCTL_LOG_NOTICE, "removed vm '%s': its owner (pid %d) is gone", v->name,
                    (int)spec->owner_pid);
            return 1;
        }
    }
    if ((v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED) &&
        !proc_alive(v->pid, v->pid_start)) {
        /* a hypervisor that exited 0 was told to: the guest powered itself off */
        supervise_exit ex;
        vmctl_vm_state to =
            supervise_exit_wait(v->dir, v->pid, 300000, &ex) == 0 && supervise_exit_clean(&ex)
                ? VMCTL_VM_STOPPED
                : VMCTL_VM_CRASHED;
        /* its cgroup goes with it (and an OOM kill seen there is recorded for the crash note) */
        (void)jail_cgroup_remove(v->dir);
        if (store_vm_set_state(ctx->store, v->name, v->state, v->pid, to, 0, 0, NULL) >= 0) {
            v->state = to;
            v->pid = 0;
            /* --net tap: its firewall rules; netns: the redirect in that namespace */
            cleanup_vm_spec vm_spec *spec = NULL;
            (void)vm_spec_from_json(v->config, &spec, NULL);
            vmnet_release(ctx->store, v->name, spec ? spec->net : NULL);
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

int vm_load_locked(vmctl_ctx *ctx, const char *name, bool locked, store_vm **ret_row,
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

int vm_not_running(vmctl_error **reterr, const char *name, vmctl_vm_state state)
{
    const char *st = vmctl_vm_state_to_string(state);
    bool paused = state == VMCTL_VM_PAUSED;
    int r =
        err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, EAGAIN, "vm '%s' is %s, not running", name, st);
    err_detail(reterr, "vm", "%s", name);
    err_detail(reterr, "reason", "vm is %s", st);
    err_detail(reterr, "remediation", "vmctl %s %s", paused ? "resume" : "start", name);
    if (paused)
        err_help(reterr, "Resume it with `vmctl resume %s`.", name);
    else
        err_help(reterr, "Start it with `vmctl start %s`.", name);
    return r;
}

int vm_check_transition(const store_vm *v, vm_op op, vmctl_vm_state *to, vmctl_error **reterr)
{
    if (vm_transition(v->state, op, to) < 0) {
        int r = err_invalid_state(reterr, v->name, vmctl_vm_state_to_string(v->state),
                                  vm_op_target_name(op));
        err_detail(reterr, "operation", "%s", vm_op_to_string(op));
        return r;
    }
    return 0;
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

/* Kill every hypervisor process of VM v that the store does not record (a running or paused
 * row's pid): one left by an older vmctl, or running from a directory whose row was lost. Under
 * the VM's lock. */
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
    uint64_t deadline = vm_deadline_after(DEFAULT_STOP_TIMEOUT);
    for (size_t i = 0; i < s.n; i++)
        (void)vm_wait_dead(s.pids[i], s.starts[i], deadline);
}

int vm_stop_strays(vmctl_ctx *ctx, const store_vm *v)
{
    cleanup_vm_spec vm_spec *spec = NULL;
    const backend_ops *be = NULL;
    if (vm_spec_from_json(v->config, &spec, NULL) < 0 || !(be = backend_find(spec->backend, NULL)))
        be = backend_find(NULL, NULL); /* the default */
    stop_strays(ctx, v, be);
    return 0;
}

/* Load and lock a VM, re-read it under the lock (another vmctl may have acted meanwhile), stop
 * any hypervisor of it the row does not record, and check that op is allowed (_VM_OP_MAX: no
 * check). */
int vm_begin_op(vmctl_ctx *ctx, const char *name, vm_op op, store_vm **ret_v, vm_spec **ret_spec,
                vmctl_vm_state *to, int *ret_lock, vmctl_error **reterr)
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
        r = vm_check_transition(v, op, to, reterr);
        if (r < 0)
            return r;
    }
    *ret_v = TAKE_PTR(v);
    *ret_spec = TAKE_PTR(spec);
    *ret_lock = TAKE_FD(lock);
    return 0;
}
