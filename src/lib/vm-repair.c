/* SPDX-License-Identifier: MIT */
/* What `vmctl doctor` checks between the store and the host, and `vmctl doctor --fix` repairs:
 *   - "vm directories": a directory under vms/ without a store row (the store was moved aside,
 *     or its row was lost). With vm.json it is adopted (its row made again: running when its
 *     hypervisor still runs, else stopped); one holding only a create mark (an interrupted create
 * of a vmctl whose row went too) is removed; anything else is reported, never touched;
 *   - "vm rows": a row whose directory is gone: removed with its ports, as destroy does;
 *   - "vm processes": a hypervisor process of a VM directory that no row records as running:
 *     killed;
 *   - "vm network": TAPs and firewall rules of vmctl's that belong to no running VM: removed
 *     (vm-net.c).
 * Every repair holds the VM's lock (vm_lock), so it never races a create, start or destroy. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vmctl/host.h>

#include "arg-check.h"
#include "backend.h"
#include "ctx.h"
#include "error.h"
#include "store.h"
#include "util/util.h"
#include "vm-dir.h"
#include "vm-internal.h"
#include "vm-net.h"
#include "vm-spec.h"

#define REPAIR_LOCK_TIMEOUT 30.0
#define REPAIR_KILL_USEC    (10ULL * 1000000ULL)

/* A growing "a, b, c" list. */
typedef struct text {
    char *s;
    size_t n; /* items */
} text;

__attribute__((format(printf, 2, 3))) static void text_add(text *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *item = str_vprintf(fmt, ap);
    va_end(ap);
    if (!item)
        return;
    char *joined = t->s ? str_printf("%s; %s", t->s, item) : strdup(item);
    if (!joined)
        return;
    free(t->s);
    t->s = joined;
    t->n++;
}

static bool file_in(const char *dir, const char *name)
{
    cleanup_free char *p = str_printf("%s/%s", dir, name);
    return p && access(p, F_OK) == 0;
}

static bool kill_dead(pid_t pid, uint64_t start)
{
    if (kill(pid, SIGKILL) < 0 && errno != ESRCH)
        return false;
    uint64_t deadline = now_usec() + REPAIR_KILL_USEC;
    while (proc_alive(pid, start)) {
        if (now_usec() > deadline)
            return false;
        sleep_usec(5000);
    }
    return true;
}

/* ---------- hypervisor processes of a VM ---------- */

/* What a backend's scan found: the first 64 processes, each with its VM's name. */
typedef struct proc_list {
    char name[64][64];
    pid_t pid[64];
    uint64_t start[64];
    size_t n;
} proc_list;

static int on_proc(const char *name, pid_t pid, uint64_t start, void *userdata)
{
    proc_list *l = userdata;
    if (l->n < ELEMENTSOF(l->pid)) {
        snprintf(l->name[l->n], sizeof(l->name[0]), "%s", name ? name : "");
        l->pid[l->n] = pid;
        l->start[l->n++] = start;
    }
    return 0;
}

static char *vms_real(vmctl_ctx *ctx)
{
    cleanup_free char *vms = str_printf("%s/vms", ctx->home);
    return vms ? realpath(vms, NULL) : NULL;
}

/* ---------- adopting a directory ---------- */

/* Make the row of directory `name` again from its vm.json. Under the VM's lock. */
static int adopt(vmctl_ctx *ctx, const char *name, const char *dir, text *done, text *left)
{
    cleanup_free char *cfg = str_printf("%s/" VM_FILE_CONFIG, dir);
    cleanup_free char *json = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_error vmctl_error *e = NULL;
    if (!cfg || read_file(cfg, &json, NULL) < 0 || vm_spec_from_json(json, &spec, &e) < 0 ||
        !spec->name || !streq(spec->name, name)) {
        text_add(left, "'%s': its vm.json cannot be read (%s)", name,
                 e ? vmctl_error_get_message(e) : "missing, or another VM's");
        return -EBADMSG;
    }
    const backend_ops *be = backend_find(spec->backend, NULL);
    proc_list f = {0};
    cleanup_free char *vms = vms_real(ctx);
    if (be && be->scan && vms)
        (void)be->scan(vms, name, on_proc, &f);
    store_vm row = {
        .name = (char *)name,
        .state = VMCTL_VM_STOPPED,
        .config = json,
        .dir = (char *)dir,
        .complete = true,
    };
    struct stat st;
    if (stat(cfg, &st) == 0)
        row.created_at = st.st_mtime; /* written by its create */
    if (f.n == 1) {
        row.state = VMCTL_VM_RUNNING;
        row.pid = f.pid[0];
        row.pid_start = f.start[0];
    } else {
        for (size_t i = 0; i < f.n; i++) /* two at once: neither is trustworthy */
            (void)kill_dead(f.pid[i], f.start[i]);
        if (be)
            be->cleanup(dir);
    }
    int r = store_vm_insert_ports(ctx->store, &row, spec->ports, spec->n_ports, &e);
    if (r < 0) {
        cleanup_free char *why = err_describe(e);
        text_add(left, "'%s': cannot be adopted: %s", name, why ? why : "out of memory");
        return r;
    }
    cleanup_free char *mark = str_printf("%s/" VM_FILE_CREATE_OWNER, dir);
    if (mark)
        (void)unlink(mark);
    if (row.state == VMCTL_VM_RUNNING)
        text_add(done, "adopted '%s' (running, pid %d)", name, (int)row.pid);
    else
        text_add(done, "adopted '%s' (stopped)", name);
    return 0;
}

static void check_dirs(vmctl_ctx *ctx, bool fix, vmctl_host_check *c)
{
    cleanup_free char *vms = str_printf("%s/vms", ctx->home);
    text done = {0}, left = {0};
    DIR *d = vms ? opendir(vms) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        const char *name = de->d_name;
        if (name[0] == '.' || !name_is_valid(name))
            continue;
        cleanup_free char *dir = str_printf("%s/%s", vms, name);
        struct stat st;
        if (!dir || lstat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        store_vm *row = NULL;
        int r = store_vm_get(ctx->store, name, &row, NULL);
        store_vm_free(row);
        if (r != -ENOENT)
            continue; /* it has a row (or the store cannot say: not ours to judge) */
        bool config = file_in(dir, VM_FILE_CONFIG);
        pid_t owner = 0;
        uint64_t owner_start = 0;
        bool half = !config && vm_owner_mark_read(dir, &owner, &owner_start) >= 0 &&
                    !proc_alive(owner, owner_start);
        if (!fix) {
            if (config)
                text_add(&left, "'%s' (adoptable)", name);
            else if (half)
                text_add(&left, "'%s' (half-made by an interrupted create)", name);
            else
                text_add(&left, "'%s' (no vm.json: made by an older vmctl, not adoptable)", name);
            continue;
        }
        cleanup_close int lock = -1;
        if (vm_lock(ctx, name, REPAIR_LOCK_TIMEOUT, &lock, NULL) < 0) {
            text_add(&left, "'%s' (busy: another vmctl holds its lock)", name);
            continue;
        }
        row = NULL;
        r = store_vm_get(ctx->store, name, &row, NULL);
        store_vm_free(row);
        if (r != -ENOENT)
            continue; /* made meanwhile */
        if (config) {
            if (adopt(ctx, name, dir, &done, &left) < 0)
                vm_unlock_remove(ctx, name, TAKE_FD(lock));
        } else if (half) {
            if (rm_rf(dir) >= 0)
                text_add(&done, "removed '%s' (half-made by an interrupted create)", name);
            else
                text_add(&left, "'%s' (half-made, cannot be removed)", name);
            vm_unlock_remove(ctx, name, TAKE_FD(lock));
        } else {
            text_add(&left, "'%s' (no vm.json: made by an older vmctl, not adoptable)", name);
            vm_unlock_remove(ctx, name, TAKE_FD(lock));
        }
    }
    if (d)
        closedir(d);
    c->name = strdup("vm directories");
    if (left.n) {
        c->status = VMCTL_CHECK_WARN;
        c->summary =
            str_printf("%zu director%s under vms/ without a store row: %s%s%s", left.n,
                       left.n == 1 ? "y" : "ies", left.s, done.n ? "; " : "", done.s ? done.s : "");
        c->help = strdup(fix ? "Move the VM directories that cannot be adopted out of vms/, or "
                               "remove them if their disks are not needed."
                             : "Run `vmctl doctor --fix` to adopt the adoptable ones back into "
                               "the store (disks kept, a running VM stays running) and to remove "
                               "half-made ones; the others are left to you.");
    } else {
        c->status = VMCTL_CHECK_OK;
        c->summary = done.n ? strdup(done.s) : strdup("every VM directory has a store row");
    }
    free(done.s);
    free(left.s);
}

/* ---------- rows without a directory ---------- */

static void check_rows(vmctl_ctx *ctx, bool fix, vmctl_host_check *c)
{
    store_vm **rows = NULL;
    size_t n = 0;
    text done = {0}, left = {0};
    if (store_vm_list(ctx->store, &rows, &n, NULL) < 0)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        store_vm *v = rows[i];
        struct stat st;
        if (!v->complete || stat(v->dir, &st) == 0 || errno != ENOENT)
            continue;
        if (!fix) {
            text_add(&left, "'%s' (directory '%s' is gone)", v->name, v->dir);
            continue;
        }
        cleanup_close int lock = -1;
        if (vm_lock(ctx, v->name, REPAIR_LOCK_TIMEOUT, &lock, NULL) < 0) {
            text_add(&left, "'%s' (busy: another vmctl holds its lock)", v->name);
            continue;
        }
        cleanup_store_vm store_vm *cur = NULL;
        if (store_vm_get(ctx->store, v->name, &cur, NULL) < 0 || stat(cur->dir, &st) == 0)
            continue;
        if (cur->pid && proc_alive(cur->pid, cur->pid_start))
            (void)kill_dead(cur->pid, cur->pid_start);
        cur->state = VMCTL_VM_STOPPED; /* so that no process of it counts as recorded */
        (void)vm_stop_strays(ctx, cur);
        if (store_vm_delete(ctx->store, cur->name, NULL) >= 0) {
            text_add(&done, "removed the row of '%s' (its directory was gone)", cur->name);
            vm_unlock_remove(ctx, cur->name, TAKE_FD(lock));
        } else {
            text_add(&left, "'%s' (its row cannot be removed)", cur->name);
        }
    }
    store_vm_list_free(rows, n);
    c->name = strdup("vm rows");
    if (left.n) {
        c->status = VMCTL_CHECK_WARN;
        c->summary = str_printf("%zu VM%s whose directory is gone: %s", left.n,
                                left.n == 1 ? "" : "s", left.s);
        c->help = strdup("Remove each with `vmctl destroy NAME` (or all with `vmctl doctor "
                         "--fix`): its row and its host ports go.");
    } else {
        c->status = VMCTL_CHECK_OK;
        c->summary = done.n ? strdup(done.s) : strdup("every VM row has its directory");
    }
    free(done.s);
    free(left.s);
}

/* ---------- hypervisor processes nobody recorded ---------- */

static bool row_records(const store_vm *v, pid_t pid, uint64_t start)
{
    return (v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED) && v->pid == pid &&
           v->pid_start == start;
}

/* name: the VM the process's command line names. A clone taken from a warm pool (pool.c) runs
 * in a hypervisor launched under the pool's name: any row recording the process counts. */
static bool recorded(vmctl_ctx *ctx, const char *name, pid_t pid, uint64_t start)
{
    {
        cleanup_store_vm store_vm *v = NULL;
        if (store_vm_get(ctx->store, name, &v, NULL) >= 0 && row_records(v, pid, start))
            return true;
    }
    store_vm **rows = NULL;
    size_t n = 0;
    bool found = false;
    if (store_vm_list(ctx->store, &rows, &n, NULL) < 0)
        return false;
    for (size_t i = 0; i < n && !found; i++)
        found = row_records(rows[i], pid, start);
    store_vm_list_free(rows, n);
    return found;
}

static void check_procs(vmctl_ctx *ctx, bool fix, vmctl_host_check *c)
{
    text done = {0}, left = {0};
    cleanup_free char *vms = vms_real(ctx);
    cleanup_free proc_list *l = calloc(1, sizeof(*l));
    const backend_ops *be;
    for (size_t i = 0; vms && l && (be = backend_at(i)); i++)
        if (be->scan)
            (void)be->scan(vms, NULL, on_proc, l);
    for (size_t i = 0; l && i < l->n; i++) {
        if (recorded(ctx, l->name[i], l->pid[i], l->start[i]))
            continue;
        /* a start at work holds the lock and records its hypervisor before letting go */
        cleanup_close int lock = -1;
        if (vm_lock(ctx, l->name[i], fix ? REPAIR_LOCK_TIMEOUT : 0, &lock, NULL) < 0)
            continue;
        bool has_row = false;
        {
            store_vm *v = NULL;
            has_row = store_vm_get(ctx->store, l->name[i], &v, NULL) >= 0;
            store_vm_free(v);
        }
        if (!has_row) /* no lock file for a VM the store does not know */
            vm_unlock_remove(ctx, l->name[i], TAKE_FD(lock));
        if (recorded(ctx, l->name[i], l->pid[i], l->start[i]) ||
            !proc_alive(l->pid[i], l->start[i]))
            continue;
        if (!fix)
            text_add(&left, "pid %d of '%s'", (int)l->pid[i], l->name[i]);
        else if (kill_dead(l->pid[i], l->start[i]))
            text_add(&done, "killed pid %d of '%s' (no row recorded it)", (int)l->pid[i],
                     l->name[i]);
        else
            text_add(&left, "pid %d of '%s' (survived SIGKILL)", (int)l->pid[i], l->name[i]);
    }
    c->name = strdup("vm processes");
    if (left.n) {
        c->status = VMCTL_CHECK_WARN;
        c->summary = str_printf("%zu hypervisor process%s that no VM row records as running: %s",
                                left.n, left.n == 1 ? "" : "es", left.s);
        c->help = strdup("Run `vmctl doctor --fix` to stop them (adopt their directories first: "
                         "--fix does that too), or kill them yourself.");
    } else {
        c->status = VMCTL_CHECK_OK;
        c->summary =
            done.n ? strdup(done.s) : strdup("every hypervisor process is recorded by its VM");
    }
    free(done.s);
    free(left.s);
}

int vmctl_vm_check_all(vmctl_ctx *ctx, bool fix, vmctl_host_check **ret, size_t *n,
                       vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    vmctl_host_check *c = calloc(4, sizeof(*c));
    if (!c)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    /* adopting first: a directory's running hypervisor becomes recorded instead of killed */
    check_dirs(ctx, fix, &c[0]);
    check_rows(ctx, fix, &c[1]);
    check_procs(ctx, fix, &c[2]);
    vmnet_check(ctx->store, fix, &c[3]); /* after the strays: a TAP goes with its QEMU */
    for (size_t i = 0; i < 4; i++)
        if (!c[i].name || !c[i].summary) {
            vmctl_host_check_list_free(c, 4);
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
    *ret = c;
    *n = 4;
    return 0;
}
