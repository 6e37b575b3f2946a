/* SPDX-License-Identifier: MIT */
/* Warm pools (include/vmctl/snapshot.h, docs/snapshots.md "Warm pool"): hypervisors launched
 * ahead of time for one snapshot, waiting for its state (-incoming defer, the template's RAM file
 * mapped), so that a clone only loads the device state, continues the guest and gives it its
 * identity. A pool's process is an ordinary VM row named pool-HEX (hidden from `vmctl list` by
 * the pool_vms table); a clone takes one by renaming that row and its directory to the clone's
 * name (the hypervisor's sockets move with the directory: a socket is found by its inode, and
 * QEMU opens nothing in the directory by name after its start), in this order:
 *   1. the create mark (this vmctl) into the process's directory;
 *   2. one transaction: the row renamed, incomplete and owned by this vmctl, out of the pool;
 *   3. the directory renamed; 4. the state loaded, the identity given; 5. the row complete.
 * A vmctl killed after 2 leaves an incomplete row with a live hypervisor: the next look at it
 * kills that hypervisor and removes row and directory (vm_reconcile); a directory left under its
 * pool name (killed between 2 and 3) is swept by the next pool command. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <vmctl/snapshot.h>

#include "arg-check.h"
#include "backend.h"
#include "ctx.h"
#include "error.h"
#include "net.h"
#include "snapshot-internal.h"
#include "ssh.h"
#include "store-snapshot.h"
#include "util/util.h"
#include "vm-internal.h"

#define POOL_PREFIX "pool-"
/* pool-<16 hex> */
#define POOL_NAME_LEN 21
/* the longest name of a socket in a VM directory ("/console.sock", "/agent.N.sock") and then
 * some: a clone whose directory leaves less room than this in sun_path is not taken from a pool
 * (cloned without it, it gets the error that says so) */
#define SOCKET_NAME_ROOM 20
/* the most processes one pool keeps (each is a hypervisor waiting: its own memory, not the
 * guest's, docs/benchmarks.md) */
#define POOL_MAX_SIZE VMCTL_POOL_MAX
/* a fill stops while the host has less memory available than this */
#define POOL_MIN_AVAILABLE_MIB 512

static int oom(vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
}

static void pool_name(char out[POOL_NAME_LEN + 1])
{
    static const char hexd[] = "0123456789abcdef";
    uint8_t raw[(POOL_NAME_LEN - sizeof(POOL_PREFIX) + 1 + 1) / 2];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        uint64_t t = now_usec() ^ (uint64_t)getpid() << 32;
        for (size_t i = 0; i < sizeof(raw); i++)
            raw[i] = (uint8_t)(t >> (8 * (i % 8))) ^ (uint8_t)i;
    }
    memcpy(out, POOL_PREFIX, sizeof(POOL_PREFIX) - 1);
    size_t k = sizeof(POOL_PREFIX) - 1;
    for (size_t i = 0; k < POOL_NAME_LEN; i++) {
        out[k++] = hexd[raw[i / 2] >> ((i % 2) ? 0 : 4) & 0xf];
    }
    out[POOL_NAME_LEN] = '\0';
}

/* MemAvailable in MiB (UINT64_MAX when it cannot be read). */
static uint64_t mem_available_mib(void)
{
    cleanup_free char *text = NULL;
    if (read_file("/proc/meminfo", &text, NULL) < 0)
        return UINT64_MAX;
    const char *p = strstr(text, "MemAvailable:");
    return p ? strtoull(p + strlen("MemAvailable:"), NULL, 10) / 1024 : UINT64_MAX;
}

/* A pool's fill lock ($VMCTL_HOME/locks/pool.VM.SNAP.lock): one fill at a time per pool. */
static int pool_lock(vmctl_ctx *ctx, const char *vm, const char *snap, bool wait, int *ret_fd)
{
    cleanup_free char *dir = str_printf("%s/" VM_LOCK_DIR, ctx->home);
    cleanup_free char *path = str_printf("%s/" VM_LOCK_DIR "/pool.%s.%s.lock", ctx->home, vm, snap);
    if (!dir || !path)
        return -ENOMEM;
    (void)mkdir_private(dir);
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    uint64_t deadline = vm_deadline_after(VM_LOCK_TIMEOUT);
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK && errno != EINTR)
            return -errno;
        if (!wait || now_usec() > deadline)
            return -EWOULDBLOCK;
        sleep_usec(10000);
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

/* Remove a pool's process (its hypervisor killed, its row, directory and RAM file gone). */
static void member_remove(vmctl_ctx *ctx, const char *name)
{
    cleanup_error vmctl_error *e = NULL;
    if (vmctl_vm_destroy(ctx, name, true, &e) < 0 && e &&
        vmctl_error_get_kind(e) != VMCTL_E_VM_NOT_FOUND)
        ctx_log(ctx, VMCTL_LOG_NOTICE, "cannot remove pool vm '%s': %s", name,
                vmctl_error_get_message(e));
}

/* Is v a process ready to be taken: complete, recorded running, alive. */
static bool member_ready(const store_vm *v)
{
    return v->complete && v->state == VMCTL_VM_RUNNING && proc_alive(v->pid, v->pid_start);
}

/* Repair: incomplete rows of dead owners (a killed take or fill) go with their hypervisors;
 * the pool's processes that died go; directories under a pool name without a row go. */
static void pool_reconcile(vmctl_ctx *ctx)
{
    store_vm **rows = NULL;
    size_t n = 0;
    if (store_vm_list(ctx->store, &rows, &n, NULL) >= 0) {
        for (size_t i = 0; i < n; i++)
            if (!rows[i]->complete)
                (void)vm_reconcile(ctx, rows[i], false);
        store_vm_list_free(rows, n);
    }
    cleanup_strv char **members = NULL;
    if (store_pool_members(ctx->store, NULL, NULL, &members, NULL) >= 0)
        for (size_t i = 0; members[i]; i++) {
            cleanup_store_vm store_vm *v = NULL;
            if (store_vm_get(ctx->store, members[i], &v, NULL) < 0 || !v->complete)
                continue;
            if (vm_reconcile(ctx, v, false) == 0 && !member_ready(v)) {
                ctx_log(ctx, VMCTL_LOG_NOTICE, "pool vm '%s' is %s: removing it", v->name,
                        vmctl_vm_state_to_string(v->state));
                member_remove(ctx, v->name);
            }
        }
    cleanup_free char *vms = str_printf("%s/vms", ctx->home);
    DIR *d = vms ? opendir(vms) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (strncmp(de->d_name, POOL_PREFIX, strlen(POOL_PREFIX)) != 0)
            continue;
        cleanup_store_vm store_vm *v = NULL;
        if (store_vm_get(ctx->store, de->d_name, &v, NULL) != -ENOENT)
            continue;
        cleanup_free char *dir = str_printf("%s/%s", vms, de->d_name);
        pid_t pid = 0;
        uint64_t start = 0;
        if (dir && vm_owner_mark_read(dir, &pid, &start) >= 0 && !proc_alive(pid, start)) {
            ctx_log(ctx, VMCTL_LOG_NOTICE, "removing '%s': left by a clone that was interrupted",
                    dir);
            (void)rm_rf(dir);
        }
    }
    if (d)
        closedir(d);
}

/* One process for the pool of s: a VM row (incomplete until it waits for the state), its
 * directory, the hypervisor launched with -incoming defer and recorded, the member row. */
static int fill_one(vmctl_ctx *ctx, const store_snapshot *s, vmctl_error **reterr)
{
    char name[POOL_NAME_LEN + 1];
    pool_name(name);
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = snapshot_clone_spec(ctx, s, name, &spec, reterr);
    if (r < 0)
        return r;
    int lock = -1;
    cleanup_free char *dir = NULL;
    if ((r = snapshot_clone_begin(ctx, spec, NULL, &lock, &dir, reterr)) < 0)
        return r;
    {
        vm_launched l = {.hold = -1};
        cleanup_store_vm store_vm *v = NULL;
        if ((r = store_vm_get(ctx->store, name, &v, reterr)) < 0 ||
            (r = snapshot_incoming_launch(ctx, v, spec, s, &l, reterr)) < 0 ||
            (r = vm_launch_record(ctx, v, VMCTL_VM_RUNNING, &l, reterr)) < 0)
            goto undo;
        /* Test hook: a window in which a killed vmctl leaves an incomplete row whose hypervisor
         * was recorded (it outlives vmctl). */
        const char *delay = getenv("VMCTL_TEST_POOL_FILL_DELAY_MS");
        if (delay)
            sleep_usec((uint64_t)strtoul(delay, NULL, 10) * 1000);
        if ((r = snapshot_warm(ctx, v, spec, s, reterr)) < 0 ||
            (r = store_pool_member_add(ctx->store, name, s->vm, s->name, reterr)) < 0 ||
            (r = snapshot_clone_complete(ctx, name, dir, reterr)) < 0) {
            (void)kill(v->pid, SIGKILL);
            (void)vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(DEFAULT_STOP_TIMEOUT));
            goto undo;
        }
    }
    close(lock);
    ctx_log(ctx, VMCTL_LOG_DEBUG, "pool of '%s/%s': launched '%s'", s->vm, s->name, name);
    return 0;
undo:
    if (spec->ram_file)
        (void)unlink(spec->ram_file);
    snapshot_clone_abort(ctx, name, dir, lock);
    return r;
}

/* Bring the pool of s to its size: processes over it go, missing ones are launched (while the
 * host has memory to spare). Under the pool's fill lock. The members are counted again after
 * each launch: a clone may take one while this fill runs (takes do not wait for the fill lock),
 * and the fill it starts then waits for this one, which must not stop short of the size. */
static int pool_fill_locked(vmctl_ctx *ctx, const store_snapshot *s, vmctl_error **reterr)
{
    for (unsigned launched = 0;; launched++) {
        unsigned size = 0;
        int r = store_pool_size(ctx->store, s->vm, s->name, &size, reterr);
        if (r < 0)
            return r;
        cleanup_strv char **members = NULL;
        if ((r = store_pool_members(ctx->store, s->vm, s->name, &members, reterr)) < 0)
            return r;
        size_t have = strv_length(members);
        for (size_t i = size; i < have; i++)
            member_remove(ctx, members[i]);
        /* bounded: a pool whose members keep vanishing does not keep this fill forever */
        if (have >= size || launched >= 2 * POOL_MAX_SIZE)
            return 0;
        uint64_t avail = mem_available_mib();
        if (avail < POOL_MIN_AVAILABLE_MIB) {
            ctx_log(ctx, VMCTL_LOG_NOTICE,
                    "pool of '%s/%s': %zu of %u ready; the host has %llu MiB available, the pool "
                    "stops filling below %u MiB",
                    s->vm, s->name, have, size, (unsigned long long)avail, POOL_MIN_AVAILABLE_MIB);
            return 0;
        }
        if ((r = fill_one(ctx, s, reterr)) < 0)
            return err_prefix(reterr, r, "while filling the pool of '%s/%s'", s->vm, s->name);
    }
}

static int check_pool_args(vmctl_error **reterr, const char *vm, const char *snap)
{
    if (name_is_valid(vm) && name_is_valid(snap))
        return 0;
    int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "invalid snapshot '%s/%s'", vm, snap);
    err_detail(reterr, "field", "snapshot");
    return r;
}

int vmctl_pool_fill(vmctl_ctx *ctx, const char *vm, const char *snap, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(vm, reterr);
    VMCTL_ARG_CHECK(snap, reterr);
    int r = check_pool_args(reterr, vm, snap);
    if (r < 0)
        return r;
    cleanup_close int lock = -1;
    /* Another fill of this pool is at it: wait for it, then launch what it left missing (a
     * take during its last launch would otherwise leave the pool short until the next take). */
    if ((r = pool_lock(ctx, vm, snap, true, &lock)) < 0)
        return err_make(reterr, r == -EWOULDBLOCK ? VMCTL_E_STORE_LOCKED : VMCTL_E_IO, -r,
                        "cannot take the fill lock of the pool of '%s/%s'", vm, snap);
    snapshot_reconcile(ctx);
    pool_reconcile(ctx);
    cleanup_store_snapshot store_snapshot *s = NULL;
    if ((r = snapshot_get(ctx, vm, snap, &s, reterr)) < 0)
        return r;
    return pool_fill_locked(ctx, s, reterr);
}

int vmctl_pool_set(vmctl_ctx *ctx, const char *vm, const char *snap, unsigned size,
                   vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(vm, reterr);
    VMCTL_ARG_CHECK(snap, reterr);
    return pool_set_for_project(ctx, vm, snap, size, NULL, reterr);
}

int pool_set_for_project(vmctl_ctx *ctx, const char *vm, const char *snap, unsigned size,
                         const char *project, vmctl_error **reterr)
{
    int r = check_pool_args(reterr, vm, snap);
    if (r < 0)
        return r;
    if (size > POOL_MAX_SIZE) {
        char max[16];
        snprintf(max, sizeof(max), "0 to %d", POOL_MAX_SIZE);
        return err_invalid_field(reterr, "size", NULL, max, "invalid pool size %u: use 0 to %d",
                                 size, POOL_MAX_SIZE);
    }
    cleanup_close int lock = -1;
    if ((r = pool_lock(ctx, vm, snap, true, &lock)) < 0)
        return err_make(reterr, VMCTL_E_STORE_LOCKED, -r,
                        "another vmctl has been filling the pool of '%s/%s' for over %g s", vm,
                        snap, VM_LOCK_TIMEOUT);
    snapshot_reconcile(ctx);
    pool_reconcile(ctx);
    cleanup_store_snapshot store_snapshot *s = NULL;
    if (size && (r = snapshot_get(ctx, vm, snap, &s, reterr)) < 0)
        return r;
    if (s && !streq(s->kind, "template")) {
        r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                     "snapshot '%s/%s' is a full snapshot: a pool needs a template snapshot (its "
                     "RAM file is what the pool's processes map ahead of the clone)",
                     vm, snap);
        err_detail(reterr, "field", "snapshot");
        err_help(reterr, "Take a template snapshot of a VM created with --snapshottable.");
        return r;
    }
    if (s && s->config && strstr(s->config, "\"net\":\"tap\"")) {
        /* a pool's process would get its TAP and firewall under its pool name, which the take
         * cannot rename (docs/snapshots.md, "Networking") */
        r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EOPNOTSUPP,
                     "snapshot '%s/%s' is of a --net tap VM: a warm pool cannot hold its clones",
                     vm, snap);
        err_detail(reterr, "field", "net");
        err_help(reterr,
                 "Clone it without a pool (`vmctl clone %s %s NEW`), or pool a snapshot "
                 "of a VM with --net user or --net none.",
                 vm, snap);
        return r;
    }
    if ((r = store_pool_set(ctx->store, vm, snap, size, project, reterr)) < 0)
        return r;
    if (!size) {
        cleanup_strv char **members = NULL;
        if ((r = store_pool_members(ctx->store, vm, snap, &members, reterr)) < 0)
            return r;
        for (size_t i = 0; members[i]; i++)
            member_remove(ctx, members[i]);
        ctx_log(ctx, VMCTL_LOG_INFO, "removed the pool of '%s/%s'", vm, snap);
        return 0;
    }
    uint64_t t0 = now_usec();
    if ((r = pool_fill_locked(ctx, s, reterr)) < 0)
        return r;
    ctx_log(ctx, VMCTL_LOG_INFO, "pool of '%s/%s': %u ready in %.1f ms", vm, snap, size,
            (double)(now_usec() - t0) / 1000.0);
    return 0;
}

int vmctl_pool_list(vmctl_ctx *ctx, vmctl_pool_info ***ret, size_t *n, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    pool_reconcile(ctx);
    store_pool *pools = NULL;
    size_t np = 0;
    int r = store_pool_list(ctx->store, &pools, &np, reterr);
    if (r < 0)
        return r;
    vmctl_pool_info **list = calloc(np ? np : 1, sizeof(*list));
    size_t k = 0;
    for (size_t i = 0; list && i < np; i++) {
        vmctl_pool_info *p = calloc(1, sizeof(*p));
        if (!p)
            break;
        list[k++] = p;
        p->vm = strdup(pools[i].snap_vm);
        p->snap = strdup(pools[i].snap);
        p->size = pools[i].size;
        p->project = pools[i].project ? strdup(pools[i].project) : NULL;
        if (!p->vm || !p->snap || (pools[i].project && !p->project) ||
            (r = store_pool_members(ctx->store, p->vm, p->snap, &p->members, reterr)) < 0)
            break;
        for (size_t j = 0; p->members[j]; j++) {
            cleanup_store_vm store_vm *v = NULL;
            if (store_vm_get(ctx->store, p->members[j], &v, NULL) >= 0 && member_ready(v))
                p->ready++;
        }
    }
    bool failed = !list || k < np || (k && (!list[k - 1]->members));
    store_pool_list_free(pools, np);
    if (failed) {
        vmctl_pool_info_list_free(list, k);
        return r < 0 ? r : oom(reterr);
    }
    *ret = list;
    *n = k;
    return 0;
}

void vmctl_pool_info_list_free(vmctl_pool_info **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) {
        if (!list[i])
            continue;
        free(list[i]->vm);
        free(list[i]->snap);
        free(list[i]->project);
        strv_free(list[i]->members);
        free(list[i]);
    }
    free(list);
}

/* ---------- take ---------- */

/* Try to take member m of the pool of s as name. 0 done; -ENOENT (no error object): m is not
 * there to take (taken by another, dead, busy), try the next; -EEXIST (no error object): name is
 * taken, clone without the pool (it says so); < 0 otherwise: failed. */
static int take_member(vmctl_ctx *ctx, const store_snapshot *s, const char *m, const char *name,
                       const char *project, double timeout, vmctl_error **reterr)
{
    cleanup_close int mlock = -1;
    if (vm_lock(ctx, m, 0, &mlock, NULL) < 0)
        return -ENOENT; /* a fill or another take is at it */
    cleanup_store_vm store_vm *pv = NULL;
    if (store_vm_get(ctx->store, m, &pv, NULL) < 0)
        return -ENOENT;
    if (!member_ready(pv)) {
        close(TAKE_FD(mlock));
        member_remove(ctx, m);
        return -ENOENT;
    }
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_spec_from_json(pv->config, &spec, reterr);
    if (r < 0)
        return r;
    if (snapshot_spec_rename(spec, name) < 0)
        return oom(reterr);
    cleanup_free char *json = NULL;
    cleanup_free char *dir = ctx_vm_dir(ctx, name);
    if (vm_spec_to_json(spec, &json) < 0 || !dir)
        return oom(reterr);
    if (strlen(dir) + SOCKET_NAME_ROOM >= sizeof(((struct sockaddr_un *)NULL)->sun_path) ||
        access(dir, F_OK) == 0)
        return -EEXIST; /* its sockets' paths would be too long; or it is there */
    cleanup_close int lock = -1;
    if ((r = vm_lock(ctx, name, VM_LOCK_TIMEOUT, &lock, reterr)) < 0)
        return r;
    /* 1. the mark: the directory is this vmctl's to remove should it be killed from here on */
    cleanup_free char *pmark = str_printf("%s/" VM_FILE_CREATE_OWNER, pv->dir);
    if (!pmark)
        return oom(reterr);
    (void)unlink(pmark);
    if ((r = vm_owner_mark(pv->dir)) < 0)
        return err_make(reterr, VMCTL_E_IO, -r, "cannot write '%s'", pmark);
    /* 2. the row */
    r = store_pool_take(ctx->store, m, name, json, dir, project, getpid(),
                        proc_start_time(getpid()), reterr);
    if (r == -ENOENT || r == -EEXIST) {
        (void)unlink(pmark);
        if (r == -EEXIST)
            vmctl_error_free(reterr ? TAKE_PTR(*reterr) : NULL);
        return r;
    }
    if (r < 0) {
        (void)unlink(pmark);
        return r;
    }
    vm_unlock_remove(ctx, m, TAKE_FD(mlock));
    /* 3. the directory */
    cleanup_store_vm store_vm *v = NULL;
    if (rename(pv->dir, dir) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot rename '%s' to '%s': %s", pv->dir, dir,
                     strerror(errno));
        (void)kill(pv->pid, SIGKILL);
        (void)rm_rf(pv->dir);
        goto undo;
    }
    {
        cleanup_free char *cfg = str_printf("%s/" VM_FILE_CONFIG, dir);
        if (cfg)
            (void)write_file_atomic(cfg, json, strlen(json), 0600);
    }
    /* Test hook: a window in which a killed vmctl leaves a half-taken pool process. */
    const char *delay = getenv("VMCTL_TEST_POOL_TAKE_DELAY_MS");
    if (delay)
        sleep_usec((uint64_t)strtoul(delay, NULL, 10) * 1000);
    /* 4. the state and the identity */
    if ((r = store_vm_get(ctx->store, name, &v, reterr)) < 0)
        goto undo_kill;
    if ((r = snapshot_incoming_finish(ctx, v, spec, s, NULL, timeout, reterr)) < 0)
        goto undo_kill;
    /* 5. complete */
    if ((r = store_vm_set_complete(ctx->store, name, reterr)) < 0)
        goto undo_kill;
    {
        cleanup_free char *mark = str_printf("%s/" VM_FILE_CREATE_OWNER, dir);
        if (mark)
            (void)unlink(mark);
    }
    return 0;
undo_kill:
    (void)kill(pv->pid, SIGKILL);
    (void)vm_wait_dead(pv->pid, pv->pid_start, vm_deadline_after(DEFAULT_STOP_TIMEOUT));
    (void)rm_rf(dir);
undo:
    if (spec->ram_file)
        (void)unlink(spec->ram_file);
    (void)store_vm_delete(ctx->store, name, NULL);
    vm_unlock_remove(ctx, name, TAKE_FD(lock));
    return r;
}

int pool_take(vmctl_ctx *ctx, const store_snapshot *s, const char *name, const char *project,
              double timeout, vmctl_error **reterr)
{
    unsigned size = 0;
    if (store_pool_size(ctx->store, s->vm, s->name, &size, NULL) < 0 || !size)
        return -ENOENT;
    cleanup_strv char **members = NULL;
    if (store_pool_members(ctx->store, s->vm, s->name, &members, NULL) < 0)
        return -ENOENT;
    for (size_t i = 0; members[i]; i++) {
        uint64_t t0 = now_usec();
        int r = take_member(ctx, s, members[i], name, project, timeout, reterr);
        if (r == -ENOENT)
            continue;
        if (r == -EEXIST)
            return -ENOENT;
        if (r >= 0)
            ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s' taken from the pool of '%s/%s' in %.1f ms", name,
                    s->vm, s->name, (double)(now_usec() - t0) / 1000.0);
        return r;
    }
    ctx_log(ctx, VMCTL_LOG_INFO, "the pool of '%s/%s' has no process ready: cloning without it",
            s->vm, s->name);
    return -ENOENT;
}
