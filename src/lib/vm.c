/* SPDX-License-Identifier: MIT */
/* Orchestration: the public VM lifecycle API on top of the store, the backend, the default guest
 * and the agent. Each state change is checked against the transition table (state.c), done under
 * the VM's lock file, and recorded in the store by compare-and-set. Config resolution is in
 * vm-config.c, row loading (locks, reconcile, vm_begin_op) in vm-load.c. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "arg-check.h"
#include "agent-client.h"
#include "backend.h"
#include "ctx.h"
#include "error.h"
#include "net.h"
#include "ssh.h"
#include "state.h"
#include "store.h"
#include "store-snapshot.h"
#include "util/util.h"
#include "io-pause.h"
#include "jail.h"
#include "vm-internal.h"
#include "podnet.h"
#include "vm-net.h"
#include "vm-spec.h"

#define CONTROL_TIMEOUT 10.0 /* a request on the hypervisor's control socket */

/* The tails of the hypervisor's log and of the console, for a VM whose hypervisor died. */
static char *crash_note(const char *dir, const vm_spec *spec)
{
    const backend_ops *be = backend_find(spec->backend, NULL);
    cleanup_free char *qlog = str_printf("%s/" VM_FILE_BACKEND_LOG, dir);
    cleanup_free char *clog = str_printf("%s/" VM_FILE_CONSOLE_LOG, dir);
    cleanup_free char *qtail = NULL, *ctail = NULL;
    if (qlog)
        (void)read_file_tail(qlog, 1024, &qtail);
    if (clog)
        (void)read_file_tail(clog, 1024, &ctail);
    /* the jail's memory cgroup killed it (jail.c records it when it removes the cgroup) */
    cleanup_free char *oomp = str_printf("%s/" VM_FILE_JAIL_OOM, dir);
    cleanup_free char *oom = NULL;
    if (oomp)
        (void)read_file_tail(oomp, 64, &oom);
    return str_printf("%s%s log tail:\n%s\nconsole tail:\n%s",
                      oom && *oom ? "out of memory: the vm's memory ceiling was reached and the "
                                    "hypervisor was killed (cgroup oom_kill)\n"
                                  : "",
                      be ? be->title : "hypervisor", qtail && *qtail ? qtail : "(empty)",
                      ctail && *ctail ? ctail : "(empty)");
}

/* ---------- create ---------- */

int vmctl_vm_create(vmctl_ctx *ctx, const vmctl_vm_config *config, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(config, reterr);
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_spec_from_config(ctx, config, &spec, reterr);
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
    /* A guest CID for AF_VSOCK when the backend needs one (start checks it again). */
    uint32_t cid = 0;
    const backend_ops *be = backend_find(spec->backend, NULL);
    if (be && be->needs_host_cid(spec) &&
        (r = store_vm_alloc_cid(ctx->store, spec->name, STORE_MIN_CID, &cid, reterr)) < 0)
        goto undo;
    /* --net tap: its link from the IP pool (vm-net.c), released with the row */
    if (streq(spec->net, "tap")) {
        store_lease l = {};
        if ((r = vmnet_lease(ctx->store, spec->name, &l, reterr)) < 0)
            goto undo;
        store_lease_clear(&l);
    }
    /* Never into a directory that is there already: without a row it is most likely a VM whose
     * row was lost (a vmctl.db moved aside), its disk included. */
    /* 0700: its sockets (control, agent, console) are the keys to the VM */
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
    if ((r = vm_owner_mark(dir)) < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot write '%s/" VM_FILE_CREATE_OWNER "'", dir);
        goto undo;
    }
    if ((r = sshc_keygen(dir, spec->name, reterr)) < 0)
        goto undo;
    if (spec->base && (r = vm_prepare_disk(ctx, config, spec, reterr)) < 0)
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
            r = err_make(reterr, VMCTL_E_IO, -r, "cannot write '%s'", cfg);
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

/* The default boot timeout (include/vmctl/vm.h): decided here only. */
static double vm_boot_timeout(const vm_spec *spec)
{
    return spec->accel && streq(spec->accel, "tcg") ? VMCTL_BOOT_TIMEOUT_TCG_SEC
                                                    : VMCTL_BOOT_TIMEOUT_SEC;
}

static int wait_ready_row(vmctl_ctx *ctx, const store_vm *v, const vm_spec *spec, double timeout,
                          vmctl_error **reterr)
{
    if (timeout <= 0)
        timeout = vm_boot_timeout(spec);
    if (v->state != VMCTL_VM_RUNNING)
        return vm_not_running(reterr, v->name, v->state);
    if (!spec->agent) {
        int r = err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, EOPNOTSUPP,
                         "vm '%s' has no guest agent to wait for", v->name);
        err_detail(reterr, "vm", "%s", v->name);
        err_detail(reterr, "reason", "image without vmctl-agent");
        err_detail(reterr, "remediation", "use the default guest or an image with vmctl-agent");
        return r;
    }
    uint64_t deadline = vm_deadline_after(timeout);
    struct liveness l = {v->pid, v->pid_start};
    cleanup_agent agent_conn *conn = NULL;
    /* virtio-serial: there from the first instant, while the guest may load vsock late (the
     * default guest does), and a vsock connect to a booting guest would only time out */
    int r = vm_agent_connect(v, spec, 0, deadline, 0, &conn, reterr);
    if (r >= 0)
        r = agent_wait_ready(conn, deadline, still_alive, &l, reterr);
    if (r >= 0 && (r = guest_sync_metadata(conn, spec, true, deadline, reterr)) < 0)
        return r;
    if (r >= 0 && streq(spec->net, "tap") &&
        (r = vmnet_wait_ip(ctx->store, v->name, deadline, still_alive, &l, reterr)) < 0)
        return r;
    if (r >= 0) {
        ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s' is ready", v->name);
        return 0;
    }
    if (!proc_alive(v->pid, v->pid_start)) {
        (void)store_vm_set_state(ctx->store, v->name, VMCTL_VM_RUNNING, v->pid, VMCTL_VM_CRASHED, 0,
                                 0, NULL);
        const backend_ops *be = backend_find(spec->backend, reterr);
        if (!be)
            return -EOPNOTSUPP;
        r = be->exited_while_booting(v->name, reterr);
        err_detail(reterr, "vm", "%s", v->name);
        cleanup_free char *note = crash_note(v->dir, spec);
        if (note)
            err_note(reterr, "%s", note);
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

/* The limits a jailed VM of spec has: the memory and pids ceilings, the CPU quota if asked. */
static unsigned vm_limits_wanted(const vm_spec *spec)
{
    return VMCTL_LIMIT_MEMORY | VMCTL_LIMIT_PIDS | (spec->cpu_quota > 0 ? VMCTL_LIMIT_CPU : 0);
}

/* A jailed VM's default ceilings the host cannot enforce (no controller where vmctl makes its
 * cgroups): it runs without them, and says so (docs/isolation.md). */
static void notice_unenforced(vmctl_ctx *ctx, const char *name, const char *dir, pid_t pid,
                              unsigned wanted)
{
    jail_cgroup_info cg = {0};
    if (jail_cgroup_read(pid, dir, wanted, &cg) < 0)
        return;
    unsigned u = cg.unenforced;
    jail_cgroup_info_clear(&cg);
    bool m = u & VMCTL_LIMIT_MEMORY, p = u & VMCTL_LIMIT_PIDS;
    if (m || p)
        ctx_log(ctx, VMCTL_LOG_NOTICE,
                "vm '%s' runs without its %s: this host gives its cgroup no %s "
                "controller (`vmctl doctor`, docs/isolation.md)",
                name,
                m && p ? "memory and pids ceilings"
                : m    ? "memory ceiling"
                       : "pids ceiling",
                m && p ? "memory or pids"
                : m    ? "memory"
                       : "pids");
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
        int r = vm_begin_op(ctx, name, VM_OP_START, &v, &spec, &to, &lock, reterr);
        if (r < 0)
            return r;
        vm_launched l;
        vm_launch_opts o = {.jail = true, .net = true};
        if ((r = vm_launch(ctx, v, spec, &o, &l, reterr)) < 0)
            return err_prefix(reterr, r, "while starting vm '%s'", name);
        /* Test hook: widens the window between the launch and its record, so that the
         * integration tests can kill vmctl there deterministically. */
        const char *delay = getenv("VMCTL_TEST_START_DELAY_MS");
        if (delay)
            sleep_usec((uint64_t)strtoul(delay, NULL, 10) * 1000);
        if ((r = vm_launch_record(ctx, v, to, &l, reterr)) < 0) {
            vmnet_release(ctx->store, name, spec->net);
            return r;
        }
        ctx_log(ctx, VMCTL_LOG_INFO, "started vm '%s' (pid %d)", name, (int)l.pid);
        if (spec->jail_uid)
            notice_unenforced(ctx, name, v->dir, l.pid, vm_limits_wanted(spec));
    } /* the lock is released here: waiting for the guest must not block stop or kill */
    if (!wait)
        return 0;
    return wait_ready_row(ctx, v, spec, timeout_sec, reterr);
}

/* ---------- stop, kill, pause, resume, destroy ---------- */

/* How long the hard stop lets the hypervisor quit by itself before SIGKILL. */
#define QUIT_TIMEOUT 2.0

/* The hard stop (kill, destroy --force, and stop's last step): ask the hypervisor to quit (it
 * exits at once, its own buffers flushed; the guest is not asked), then SIGKILL when it has not
 * gone within QUIT_TIMEOUT (a wedged or SIGSTOPped one does not answer) and wait up to timeout. */
static int kill_and_wait(vmctl_ctx *ctx, const store_vm *v, const backend_ops *be, double timeout,
                         vmctl_error **reterr)
{
    if (!proc_alive(v->pid, v->pid_start))
        return 0;
    if (be && be->quit) {
        uint64_t deadline = vm_deadline_after(QUIT_TIMEOUT);
        if (be->quit(v->dir, deadline, NULL) >= 0 && vm_wait_dead(v->pid, v->pid_start, deadline)) {
            ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s': %s quit when asked", v->name, be->title);
            return 0;
        }
        ctx_log(ctx, VMCTL_LOG_NOTICE, "vm '%s': %s did not quit within %g s; sending SIGKILL",
                v->name, be->title, QUIT_TIMEOUT);
    }
    if (kill(v->pid, SIGKILL) < 0 && errno != ESRCH) {
        int r = err_make(reterr, VMCTL_E_VM_SHUTDOWN_FAILED, errno,
                         "cannot send SIGKILL to vm '%s' (pid %d)", v->name, (int)v->pid);
        err_detail(reterr, "vm", "%s", v->name);
        return r;
    }
    if (!vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(timeout))) {
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
    uint64_t deadline = vm_deadline_after(timeout < 3 ? timeout : 3);
    if (v->state == VMCTL_VM_PAUSED && be->resume(v->dir, deadline, NULL) < 0)
        return -EIO;
    if (spec->agent) {
        cleanup_agent agent_conn *conn = NULL;
        if (vm_agent_connect(v, spec, v->cid, deadline, 0, &conn, NULL) >= 0 &&
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
    int r = vm_begin_op(ctx, name, VM_OP_STOP, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    double timeout = timeout_sec > 0 ? timeout_sec : DEFAULT_STOP_TIMEOUT;
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;

    if (v->state != VMCTL_VM_CRASHED && proc_alive(v->pid, v->pid_start)) {
        bool dead = false;
        if (!force && graceful_request(v, spec, be, timeout) >= 0)
            dead = vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(timeout));
        if (!dead && proc_alive(v->pid, v->pid_start)) {
            ctx_log(ctx, VMCTL_LOG_INFO, "vm '%s' did not power off; sending SIGTERM", name);
            if (kill(v->pid, SIGTERM) < 0 && errno != ESRCH)
                return err_make(reterr, VMCTL_E_VM_SHUTDOWN_FAILED, errno,
                                "cannot send SIGTERM to vm '%s'", name);
            dead = vm_wait_dead(v->pid, v->pid_start, vm_deadline_after(timeout));
        }
        if (!dead) {
            ctx_log(ctx, VMCTL_LOG_NOTICE, "vm '%s' ignored SIGTERM for %g s; stopping it hard",
                    name, timeout);
            r = kill_and_wait(ctx, v, be, timeout, reterr);
            if (r < 0)
                return err_prefix(reterr, r, "while stopping vm '%s'", name);
        }
    }
    be->cleanup(v->dir);
    vmnet_release(ctx->store, name, spec->net);
    if (spec->ram_file)
        (void)unlink(spec->ram_file); /* a stopped VM holds no tmpfs RAM */
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
    int r = vm_begin_op(ctx, name, VM_OP_KILL, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    if (v->state != VMCTL_VM_CRASHED) {
        r = kill_and_wait(ctx, v, be, DEFAULT_STOP_TIMEOUT, reterr);
        if (r < 0)
            return r;
    }
    be->cleanup(v->dir);
    vmnet_release(ctx->store, name, spec->net);
    if (spec->ram_file)
        (void)unlink(spec->ram_file); /* a stopped VM holds no tmpfs RAM */
    return store_vm_set_state(ctx->store, name, v->state, -1, to, 0, 0, reterr);
}

static int pause_resume(vmctl_ctx *ctx, const char *name, vm_op op, vmctl_error **reterr)
{
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_close int lock = -1;
    vmctl_vm_state to;
    int r = vm_begin_op(ctx, name, op, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    uint64_t deadline = vm_deadline_after(CONTROL_TIMEOUT);
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
    /* paused by the hypervisor, running in the store */
    int r = vm_io_pause_resume(ctx, name, reterr);
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
    int r = vm_begin_op(ctx, name, _VM_OP_MAX, &v, &spec, &to, &lock, reterr);
    if (r < 0)
        return r;
    if (!force) {
        r = vm_check_transition(v, VM_OP_DESTROY, &to, reterr);
        if (r < 0) {
            err_help(reterr, "Stop it first with `vmctl stop %s`, or pass --force to kill it.",
                     name);
            return r;
        }
    }
    pid_t killed = 0; /* the hypervisor this destroy killed: its supervisor's record is awaited */
    if (force && (v->state == VMCTL_VM_RUNNING || v->state == VMCTL_VM_PAUSED)) {
        pid_t pid = v->pid;
        r = kill_and_wait(ctx, v, backend_find(spec->backend, NULL), DEFAULT_STOP_TIMEOUT, reterr);
        if (r < 0)
            return err_prefix(reterr, r, "while destroying vm '%s'", name);
        killed = pid;
    }
    r = vm_dir_remove(v, spec, killed);
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot remove vm directory '%s'", v->dir);
        err_detail(reterr, "path", "%s", v->dir);
        return r;
    }
    vmnet_release(ctx->store, name, spec->net);
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
        i->crash_note = crash_note(v->dir, s);
    if (!i->name || !i->backend || !i->machine || !i->accel || !i->image || !i->net || !i->dir) {
        vmctl_vm_info_free(i);
        return -ENOMEM;
    }
    *ret = i;
    return 0;
}

/* The jail's state: what the store allocated, and for a running VM what /proc says of its
 * hypervisor (its uid and seccomp mode) and its cgroup. */
static void vm_info_jail(vmctl_ctx *ctx, const store_vm *v, const vm_spec *spec, vmctl_vm_info *i)
{
    uint32_t base, count;
    jail_uid_range(&base, &count);
    i->jail = !spec->no_jail;
    i->cpu_quota = spec->cpu_quota;
    (void)store_vm_jail_uid(ctx->store, v->name, base, count, false, &i->jail_uid, NULL);
    if (!i->pid)
        return;
    cleanup_free char *path = str_printf("/proc/%d/status", (int)i->pid);
    cleanup_free char *st = NULL;
    if (!path || read_file(path, &st, NULL) < 0)
        return;
    const char *u = strstr(st, "\nUid:"), *sc = strstr(st, "\nSeccomp:");
    unsigned long uid = u ? strtoul(u + 6, NULL, 10) : 0;
    long mode = sc ? strtol(sc + 10, NULL, 10) : 0;
    i->jailed = uid != 0 && mode == 2;
    if (!i->jailed)
        return;
    /* what the cgroup files say, not what was asked: a limit without its controller here
     * is not enforced, and said so */
    jail_cgroup_info cg = {0};
    if (jail_cgroup_read(i->pid, v->dir, vm_limits_wanted(spec), &cg) < 0)
        return;
    i->cgroup = TAKE_PTR(cg.path);
    i->cgroup_version = cg.version;
    i->memory_limit = cg.memory_limit;
    i->pids_limit = cg.pids_limit;
    i->limits_unenforced = cg.unenforced;
    jail_cgroup_info_clear(&cg);
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
    if (r >= 0)
        r = vmnet_info(ctx->store, spec, *ret);
    if (r < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, -r, "out of memory");
    vm_info_io_pause(v, spec, *ret);
    vm_info_jail(ctx, v, spec, *ret);
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
    /* a warm pool's processes are not users' VMs (`vmctl pool list` shows them) */
    cleanup_strv char **pooled = NULL;
    if (store_pool_members(ctx->store, NULL, NULL, &pooled, NULL) < 0)
        pooled = NULL;
    for (size_t i = 0; i < nrows; i++) {
        bool is_pooled = false;
        for (size_t j = 0; pooled && pooled[j] && !is_pooled; j++)
            is_pooled = streq(pooled[j], rows[i]->name);
        if (is_pooled)
            continue;
        if (vm_reconcile(ctx, rows[i], false) != 0)
            continue;
        cleanup_vm_spec vm_spec *spec = NULL;
        r = vm_spec_from_json(rows[i]->config, &spec, reterr);
        if (r >= 0 && (r = info_from_row(rows[i], spec, &out[k])) >= 0 &&
            (r = vmnet_info(ctx->store, spec, out[k])) >= 0) {
            vm_info_io_pause(rows[i], spec, out[k]);
            vm_info_jail(ctx, rows[i], spec, out[k]);
        }
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
    free(i->cgroup);
    free(i->ip);
    free(i->gateway);
    free(i->mac);
    free(i->ifname);
    strv_free(i->allow);
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
    /* the hypervisor's log by that word or by a backend's name (what `vmctl logs --NAME` asks) */
    const char *file = NULL;
    if (!which || streq(which, "console"))
        file = VM_FILE_CONSOLE_LOG;
    else if (streq(which, "hypervisor"))
        file = VM_FILE_BACKEND_LOG;
    for (size_t i = 0; !file && backend_at(i); i++)
        if (streq(which, backend_at(i)->name))
            file = VM_FILE_BACKEND_LOG;
    if (!file)
        return err_invalid_field(reterr, "log", which, "console, hypervisor or the backend's name",
                                 "unknown log '%s'", which);
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
