/* SPDX-License-Identifier: MIT */
/* Provisioners and the up/down/reload/provision orchestration of a VMFile. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <vmctl/exec.h>
#include <vmctl/image.h>
#include <vmctl/snapshot.h>
#include <vmctl/vmfile.h>

#include "arg-check.h"
#include "ctx.h"
#include "error.h"
#include "provision.h"
#include "util/util.h"
#include "vm-internal.h"

/* --- output: whole lines to the callback and to provision.log --- */

typedef struct line_buf {
    char *data;
    size_t len, cap;
} line_buf;

typedef struct step_out {
    const provision_sink *sink;
    const char *vm;
    int log_fd;
    line_buf buf[3]; /* by vmctl_provision_stream */
} step_out;

static void emit_line(step_out *o, vmctl_provision_stream stream, const char *data, size_t len)
{
    if (o->log_fd >= 0) {
        /* provision.log: stderr lines marked, vmctl's own lines as they are. */
        if (stream == VMCTL_PROVISION_STDERR)
            (void)!write(o->log_fd, "! ", 2);
        (void)!write(o->log_fd, data, len);
    }
    if (o->sink && o->sink->fn) {
        if (o->sink->lock)
            pthread_mutex_lock(o->sink->lock);
        o->sink->fn(o->sink->userdata, o->vm, stream, data, len);
        if (o->sink->lock)
            pthread_mutex_unlock(o->sink->lock);
    }
}

static void out_printf(step_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(step_out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *s = str_vprintf(fmt, ap);
    va_end(ap);
    if (s)
        emit_line(o, VMCTL_PROVISION_INFO, s, strlen(s));
}

static int out_feed(step_out *o, vmctl_provision_stream stream, const char *data, size_t len)
{
    line_buf *b = &o->buf[stream];
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t take = nl ? (size_t)(nl - data) + 1 : len;
        if (b->len + take > b->cap) {
            size_t cap = b->cap ? b->cap * 2 : 256;
            while (cap < b->len + take)
                cap *= 2;
            char *nd = realloc(b->data, cap);
            if (!nd)
                return -ENOMEM;
            b->data = nd;
            b->cap = cap;
        }
        memcpy(b->data + b->len, data, take);
        b->len += take;
        data += take;
        len -= take;
        /* A whole line, or a very long one: pass it on. */
        if (nl || b->len >= 65536) {
            emit_line(o, stream, b->data, b->len);
            b->len = 0;
        }
    }
    return 0;
}

/* The unterminated rest of each stream, with a newline added. */
static void out_flush(step_out *o)
{
    for (int s = 1; s <= 2; s++) {
        line_buf *b = &o->buf[s];
        if (b->len) {
            if (out_feed(o, (vmctl_provision_stream)s, "\n", 1) < 0)
                b->len = 0;
        }
    }
}

static void out_done(step_out *o)
{
    for (int s = 0; s < 3; s++)
        free(o->buf[s].data);
    if (o->log_fd >= 0)
        close(o->log_fd);
}

static int on_stdout(const void *data, size_t len, void *userdata)
{
    return out_feed(userdata, VMCTL_PROVISION_STDOUT, data, len);
}

static int on_stderr(const void *data, size_t len, void *userdata)
{
    return out_feed(userdata, VMCTL_PROVISION_STDERR, data, len);
}

static char *step_label(const vmfile_step *s)
{
    if (s->kind == VMFILE_STEP_FILE)
        return str_printf("file %s -> %s", s->source, s->destination);
    if (s->script)
        return str_printf("shell script %s", s->script);
    const char *nl = strchr(s->inline_cmd, '\n');
    size_t n = nl ? (size_t)(nl - s->inline_cmd) : strlen(s->inline_cmd);
    return str_printf("shell inline '%.*s%s'", (int)(n > 60 ? 60 : n), s->inline_cmd,
                      n > 60 || nl ? "…" : "");
}

/* Wrap the step's error (or a non-zero exit) as provision::failed. */
static int step_failed(vmctl_error **reterr, const char *vm, size_t index, const vmfile_step *s,
                       int exit_code, vmctl_error *cause)
{
    const char *kind = vmfile_step_kind_to_string(s->kind);
    int r;
    if (cause) {
        cleanup_free char *why = err_describe(cause);
        r = err_make(reterr, VMCTL_E_PROVISION_FAILED, EIO,
                     "provisioner %zu (%s) of VM '%s' failed: %s", index + 1, kind, vm,
                     why ? why : vmctl_error_get_message(cause));
    } else
        r = err_make(reterr, VMCTL_E_PROVISION_FAILED, EIO,
                     "provisioner %zu (%s) of VM '%s' exited with status %d", index + 1, kind, vm,
                     exit_code);
    err_detail(reterr, "vm", "%s", vm);
    err_detail_num(reterr, "step", (double)(index + 1));
    err_detail(reterr, "kind", "%s", kind);
    err_detail_num(reterr, "exit_code", exit_code);
    err_detail_num(reterr, "line", s->line);
    if (cause) {
        err_note(reterr, "cause: %s", vmctl_error_get_code(cause));
        for (size_t i = 0; i < vmctl_error_get_n_notes(cause); i++)
            err_note(reterr, "%s", vmctl_error_get_note(cause, i));
    }
    err_help(reterr,
             "Fix the step (line %u of the VMFile) and run `vmctl provision --name %s`; its "
             "output is in `vmctl logs %s --provision`",
             s->line, vm, vm);
    return r;
}

/* The agent is not there: pass exec::unavailable on, saying that there is no SSH fallback yet. */
static int step_unavailable(vmctl_error **reterr, vmctl_error **e, int r, const char *vm,
                            size_t index, const vmfile_step *s)
{
    if (reterr) {
        *reterr = TAKE_PTR(*e);
        err_note(reterr, "provisioners run through the guest agent only: the SSH fallback for "
                         "images without the agent is not implemented yet");
    }
    return err_prefix(reterr, r, "while running provisioner %zu (%s) of VM '%s'", index + 1,
                      vmfile_step_kind_to_string(s->kind), vm);
}

static int run_step(vmctl_ctx *ctx, const vmfile_machine *m, size_t index, const vmfile_step *s,
                    step_out *o, vmctl_error **reterr)
{
    cleanup_error vmctl_error *e = NULL;
    int r;
    if (s->kind == VMFILE_STEP_FILE) {
        r = vmctl_cp_to_vm(ctx, m->name, s->source, s->destination, &e);
        if (r < 0) {
            if (vmctl_error_get_kind(e) == VMCTL_E_EXEC_UNAVAILABLE)
                return step_unavailable(reterr, &e, r, m->name, index, s);
            return step_failed(reterr, m->name, index, s, -1, e);
        }
        return 0;
    }

    char *argv_inline[] = {"sh", "-c", s->inline_cmd, NULL};
    char *argv_script[] = {"sh", "-s", NULL};
    vmctl_exec_opts opts = {
        .argv = s->inline_cmd ? argv_inline : argv_script,
        .env = m->env,
        .user = s->user,
        /* Every wait has a deadline: also a step without its own timeout, against a hung agent. */
        .timeout_sec = s->timeout_sec > 0 ? s->timeout_sec : PROVISION_DEFAULT_TIMEOUT_SEC,
    };
    vmctl_exec_io io = {.on_stdout = on_stdout, .on_stderr = on_stderr, .userdata = o};
    cleanup_close int fd = -1;
    if (s->script) {
        fd = open(s->script, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
            r = err_make(&e, VMCTL_E_IO, errno, "cannot open script '%s'", s->script);
            return step_failed(reterr, m->name, index, s, -1, e);
        }
    }
    vmctl_exec_status st = {0};
    r = vmctl_exec_stream(ctx, m->name, &opts, &io, fd, &st, &e);
    out_flush(o);
    if (r < 0) {
        if (vmctl_error_get_kind(e) == VMCTL_E_EXEC_UNAVAILABLE)
            return step_unavailable(reterr, &e, r, m->name, index, s);
        return step_failed(reterr, m->name, index, s,
                           vmctl_error_get_kind(e) == VMCTL_E_TIMEOUT ? st.exit_code : -1, e);
    }
    if (st.exit_code != 0)
        return step_failed(reterr, m->name, index, s, st.exit_code, NULL);
    return 0;
}

static int open_log(vmctl_ctx *ctx, const char *name)
{
    cleanup_free char *dir = ctx_vm_dir(ctx, name);
    cleanup_free char *path = dir ? str_printf("%s/%s", dir, PROVISION_LOG) : NULL;
    if (!path)
        return -1;
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
}

int provision_run(vmctl_ctx *ctx, const vmfile_machine *m, const provision_sink *sink,
                  size_t *ret_steps_run, vmctl_error **reterr)
{
    step_out o = {.sink = sink, .vm = m->name, .log_fd = open_log(ctx, m->name)};
    size_t done = 0;
    int r = 0;
    if (o.log_fd >= 0) {
        char ts[64];
        time_t now = time(NULL);
        struct tm tm;
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
        dprintf(o.log_fd, "==> provisioning started %s (%zu steps)\n", ts, m->n_steps);
    }
    for (size_t i = 0; i < m->n_steps; i++) {
        const vmfile_step *s = &m->steps[i];
        cleanup_free char *label = step_label(s);
        out_printf(&o, "==> step %zu/%zu: %s\n", i + 1, m->n_steps, label ? label : "?");
        uint64_t t0 = now_usec();
        r = run_step(ctx, m, i, s, &o, reterr);
        if (r < 0) {
            const char *code = reterr && *reterr ? vmctl_error_get_code(*reterr) : "?";
            const char *ec =
                reterr && *reterr ? vmctl_error_find_detail(*reterr, "exit_code") : NULL;
            out_printf(&o, "==> step %zu/%zu failed%s%s (%s)\n", i + 1, m->n_steps,
                       ec ? ": exit status " : "", ec ? ec : "", code);
            break;
        }
        out_printf(&o, "==> step %zu/%zu done in %.2f s\n", i + 1, m->n_steps,
                   (double)(now_usec() - t0) / 1e6);
        done++;
    }
    out_done(&o);
    if (ret_steps_run)
        *ret_steps_run = done;
    return r;
}

/* --- orchestration --- */

typedef enum env_op {
    OP_UP,
    OP_DOWN,
    OP_RELOAD,
    OP_PROVISION,
} env_op;

/* At most this many machines are worked on at once (a thread and a context, so a store
 * connection, each): a VMFile of a thousand machines must not end in EMFILE. */
#define ENV_MAX_WORKERS 16

const char *vmctl_env_action_to_string(vmctl_env_action a)
{
    static const char *const names[] = {
        [VMCTL_ENV_UNCHANGED] = "unchanged",     [VMCTL_ENV_CREATED] = "created",
        [VMCTL_ENV_STARTED] = "started",         [VMCTL_ENV_RESUMED] = "resumed",
        [VMCTL_ENV_PROVISIONED] = "provisioned", [VMCTL_ENV_STOPPED] = "stopped",
        [VMCTL_ENV_DESTROYED] = "destroyed",     [VMCTL_ENV_FAILED] = "failed",
    };
    return (unsigned)a < ELEMENTSOF(names) ? names[a] : "unknown";
}

const char *vmctl_provision_state_to_string(vmctl_provision_state s)
{
    const char *n = store_provision_state_name(s);
    return n ? n : "unknown";
}

void vmctl_env_results_free(vmctl_env_result *r, size_t n)
{
    for (size_t i = 0; r && i < n; i++) {
        free(r[i].name);
        vmctl_error_free(r[i].error);
    }
    free(r);
}

int vmctl_provision_log_path(vmctl_ctx *ctx, const char *name, char **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    vmctl_vm_info *info = NULL;
    int r = vmctl_vm_get(ctx, name, &info, reterr);
    if (r < 0)
        return r;
    *ret = str_printf("%s/%s", info->dir, PROVISION_LOG);
    vmctl_vm_info_free(info);
    return *ret ? 0 : -ENOMEM;
}

/* A fingerprint of a machine's steps (what they run, as written), to tell when they changed
 * since the machine was provisioned: FNV-1a 64 as 16 hex digits. */
static void hash_str(uint64_t *h, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++)
        *h = (*h ^ *p) * 1099511628211ULL;
    *h = (*h ^ (s ? 0xff : 0xfe)) * 1099511628211ULL; /* field end; NULL differs from "" */
}

static void steps_hash(const vmfile_machine *m, char out[17])
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < m->n_steps; i++) {
        const vmfile_step *s = &m->steps[i];
        char t[32];
        snprintf(t, sizeof(t), "%d %.17g", (int)s->kind, s->timeout_sec);
        hash_str(&h, t);
        hash_str(&h, s->inline_cmd);
        hash_str(&h, s->script);
        hash_str(&h, s->user);
        hash_str(&h, s->source);
        hash_str(&h, s->destination);
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

typedef struct job {
    env_op op;
    const vmfile_machine *m;
    const char *project; /* the VMFile's canonical path */
    const vmctl_env_opts *opts;
    const provision_sink *sink;
    vmctl_env_result *res;
    int r;
} job;

/* The machine's row, or -ENOENT (*ret NULL) when the store does not know it. */
static int vm_info(vmctl_ctx *ctx, const char *name, vmctl_vm_info **ret, vmctl_error **reterr)
{
    cleanup_error vmctl_error *e = NULL;
    *ret = NULL;
    int r = vmctl_vm_get(ctx, name, ret, &e);
    if (r < 0) {
        if (vmctl_error_get_kind(e) == VMCTL_E_VM_NOT_FOUND)
            return -ENOENT;
        if (reterr)
            *reterr = TAKE_PTR(e);
        return r;
    }
    return 0;
}

/* A machine of this VMFile is ours only when this VMFile made it: one made by another VMFile
 * or by hand is refused (vm::already_exists, details vm, owner, project), never taken over,
 * provisioned, stopped or destroyed, unless up --adopt takes over one made by hand. */
static int check_owner(job *j, vmctl_ctx *ctx, const vmctl_vm_info *info, vmctl_error **reterr)
{
    const char *name = j->m->name;
    if (info->project && streq(info->project, j->project))
        return 0;
    if (!info->project && j->op == OP_UP && j->opts->adopt) {
        int r = store_vm_set_project(ctx->store, name, j->project, reterr);
        if (r >= 0)
            ctx_log(ctx, VMCTL_LOG_NOTICE, "vm '%s' made by hand now belongs to '%s'", name,
                    j->project);
        return r;
    }
    int r;
    if (info->project) {
        r = err_make(reterr, VMCTL_E_VM_ALREADY_EXISTS, EEXIST,
                     "VM '%s' belongs to another project: it was made by the VMFile '%s', not by "
                     "'%s'",
                     name, info->project, j->project);
        err_detail(reterr, "owner", "vmfile");
        err_detail(reterr, "project", "%s", info->project);
        err_help(reterr,
                 "Rename the vm in this VMFile, or manage '%s' from its own project "
                 "(`vmctl up --file %s`); `vmctl destroy %s --force` removes it",
                 name, info->project, name);
    } else {
        r = err_make(reterr, VMCTL_E_VM_ALREADY_EXISTS, EEXIST,
                     "VM '%s' was not made by a VMFile (vmctl create, or a vmctl older than store "
                     "schema 4), so the VMFile '%s' leaves it alone",
                     name, j->project);
        err_detail(reterr, "owner", "none");
        err_help(reterr,
                 "Rename the vm in this VMFile, run `vmctl up --adopt` to take the VM over (it is "
                 "then provisioned by this VMFile), or `vmctl destroy %s --force` first",
                 name);
    }
    err_detail(reterr, "vm", "%s", name);
    err_detail(reterr, "this_project", "%s", j->project);
    return r;
}

/* The row and its ownership: 0 ours, -ENOENT absent, < 0 refused or an error. */
static int own_vm(job *j, vmctl_ctx *ctx, vmctl_vm_info **ret, vmctl_error **reterr)
{
    int r = vm_info(ctx, j->m->name, ret, reterr);
    if (r < 0)
        return r;
    r = check_owner(j, ctx, *ret, reterr);
    if (r < 0) {
        vmctl_vm_info_free(*ret);
        *ret = NULL;
    }
    return r;
}

/* Run the steps and record how it went in the store (pending, then ok or failed). */
static int do_provision(job *j, vmctl_ctx *ctx, vmctl_error **reterr)
{
    const char *name = j->m->name;
    char hash[17];
    steps_hash(j->m, hash);
    int r =
        store_vm_set_provision(ctx->store, name, VMCTL_PROVISION_PENDING, 0, NULL, hash, reterr);
    if (r < 0)
        return r;
    r = provision_run(ctx, j->m, j->sink, &j->res->steps_run, reterr);
    if (r >= 0) {
        j->res->provisioned = true;
        return store_vm_set_provision(ctx->store, name, VMCTL_PROVISION_OK, 0, NULL, NULL, reterr);
    }
    cleanup_free char *msg =
        reterr && *reterr ? err_describe(*reterr) : str_printf("%s", strerror(-r));
    /* the step's error is what the caller needs: a store failure here is only logged */
    cleanup_error vmctl_error *e = NULL;
    if (store_vm_set_provision(ctx->store, name, VMCTL_PROVISION_FAILED,
                               (unsigned)j->res->steps_run + 1, msg, NULL, &e) < 0) {
        cleanup_free char *why = err_describe(e);
        ctx_log(ctx, VMCTL_LOG_WARNING, "cannot record the failed provisioning of vm '%s': %s",
                name, why ? why : "out of memory");
    }
    return r;
}

/* A running machine of ours: provision it again unless its last provisioning succeeded. */
static int up_running(job *j, vmctl_ctx *ctx, const vmctl_vm_info *info, vmctl_env_action done,
                      vmctl_error **reterr)
{
    if (info->provision_state == VMCTL_PROVISION_OK) {
        char hash[17];
        steps_hash(j->m, hash);
        cleanup_store_vm store_vm *row = NULL;
        if (store_vm_get(ctx->store, j->m->name, &row, NULL) >= 0 && row->provision_hash &&
            !streq(row->provision_hash, hash))
            ctx_log(ctx, VMCTL_LOG_NOTICE,
                    "the provisioning steps of vm '%s' changed since it was provisioned: run "
                    "`vmctl provision --name %s` to run them",
                    j->m->name, j->m->name);
        j->res->action = done;
        return 0;
    }
    if (info->provision_state == VMCTL_PROVISION_FAILED)
        ctx_log(ctx, VMCTL_LOG_NOTICE,
                "the last provisioning of vm '%s' failed at step %u: provisioning it again",
                j->m->name, info->provision_step);
    j->res->action = done == VMCTL_ENV_UNCHANGED ? VMCTL_ENV_PROVISIONED : done;
    return do_provision(j, ctx, reterr);
}

static int do_up(job *j, vmctl_ctx *ctx, vmctl_error **reterr)
{
    const vmfile_machine *m = j->m;
    cleanup_vm_info vmctl_vm_info *info = NULL;
    int r = own_vm(j, ctx, &info, reterr);
    if (r < 0 && r != -ENOENT)
        return r;
    if (r == -ENOENT && m->from_vm) {
        /* from "VM/SNAP": a clone, running with its identity, instead of create and boot */
        r = snapshot_clone_for_project(ctx, m->from_vm, m->from_snap, m->name, j->project,
                                       j->opts->boot_timeout_sec, reterr);
        if (r < 0)
            return r;
        j->res->action = VMCTL_ENV_CREATED;
        return do_provision(j, ctx, reterr);
    }
    if (r == -ENOENT) {
        vmctl_vm_config cfg = m->config;
        cfg.project = j->project;
        vmctl_image_info img = {};
        if (m->image_url) {
            bool cached = false;
            r = vmctl_image_pull(ctx, m->image_url, m->image_name, m->image_sha256, NULL, NULL,
                                 &img, &cached, reterr);
            if (r < 0)
                return err_prefix(reterr, r, "while pulling the image of VM '%s'", m->name);
            cfg.image = img.name;
        }
        r = vmctl_vm_create(ctx, &cfg, reterr);
        vmctl_image_info_clear(&img);
        if (r == -EEXIST && vm_info(ctx, m->name, &info, NULL) >= 0) {
            /* made meanwhile (another up, a create): whose it is decides */
            vmctl_error_free(reterr ? *reterr : NULL);
            if (reterr)
                *reterr = NULL;
            r = check_owner(j, ctx, info, reterr);
            if (r < 0)
                return r;
            return err_make(reterr, VMCTL_E_VM_ALREADY_EXISTS, EEXIST,
                            "VM '%s' was created by another `vmctl up` of this VMFile at the "
                            "same time",
                            m->name);
        }
        if (r < 0)
            return r;
        j->res->action = VMCTL_ENV_CREATED;
    } else if (info->state == VMCTL_VM_RUNNING) {
        return up_running(j, ctx, info, VMCTL_ENV_UNCHANGED, reterr);
    } else if (info->state == VMCTL_VM_PAUSED) {
        r = vmctl_vm_resume(ctx, m->name, reterr);
        if (r < 0)
            return r;
        return up_running(j, ctx, info, VMCTL_ENV_RESUMED, reterr);
    } else {
        j->res->action = VMCTL_ENV_STARTED;
    }
    r = vmctl_vm_start(ctx, m->name, true, j->opts->boot_timeout_sec, reterr);
    if (r < 0)
        return r;
    return do_provision(j, ctx, reterr);
}

static int do_down(job *j, vmctl_ctx *ctx, bool destroy, vmctl_error **reterr)
{
    const char *name = j->m->name;
    cleanup_vm_info vmctl_vm_info *info = NULL;
    int r = own_vm(j, ctx, &info, reterr);
    if (r == -ENOENT) {
        j->res->action = VMCTL_ENV_UNCHANGED;
        return 0;
    }
    if (r < 0)
        return r;
    if (destroy) {
        r = vmctl_vm_destroy(ctx, name, true, reterr);
        if (r >= 0)
            j->res->action = VMCTL_ENV_DESTROYED;
        return r;
    }
    if (info->state != VMCTL_VM_RUNNING && info->state != VMCTL_VM_PAUSED) {
        j->res->action = VMCTL_ENV_UNCHANGED;
        return 0;
    }
    r = vmctl_vm_stop(ctx, name, j->opts->stop_timeout_sec, false, reterr);
    if (r >= 0)
        j->res->action = VMCTL_ENV_STOPPED;
    return r;
}

static int do_reprovision(job *j, vmctl_ctx *ctx, vmctl_error **reterr)
{
    const char *name = j->m->name;
    cleanup_vm_info vmctl_vm_info *info = NULL;
    int r = own_vm(j, ctx, &info, reterr);
    if (r == -ENOENT) {
        r = err_make(reterr, VMCTL_E_VM_NOT_FOUND, ENOENT,
                     "VM '%s' does not exist: run `vmctl up` first", name);
        err_detail(reterr, "vm", "%s", name);
        return r;
    }
    if (r < 0)
        return r;
    if (info->state != VMCTL_VM_RUNNING) {
        r = err_invalid_state(reterr, name, vmctl_vm_state_to_string(info->state), "running");
        err_help(reterr, "Provisioners run on running machines: run `vmctl up --name %s`", name);
        return r;
    }
    j->res->action = VMCTL_ENV_PROVISIONED;
    return do_provision(j, ctx, reterr);
}

static int job_run(job *j, vmctl_ctx *ctx, vmctl_error **reterr)
{
    switch (j->op) {
    case OP_UP:
        return do_up(j, ctx, reterr);
    case OP_DOWN:
        return do_down(j, ctx, j->opts->destroy, reterr);
    case OP_RELOAD: {
        int r = do_down(j, ctx, false, reterr);
        if (r < 0)
            return r;
        return do_up(j, ctx, reterr);
    }
    case OP_PROVISION:
        return do_reprovision(j, ctx, reterr);
    }
    return -EINVAL;
}

static void job_do(job *j, vmctl_ctx *ctx, int ctx_r, vmctl_error *ctx_err)
{
    uint64_t t0 = now_usec();
    vmctl_error *e = NULL;
    j->r = ctx_r;
    if (ctx_r < 0 && ctx_err)
        err_make(&e, vmctl_error_get_kind(ctx_err), -ctx_r, "%s", vmctl_error_get_message(ctx_err));
    else if (ctx_r >= 0)
        j->r = job_run(j, ctx, &e);
    if (j->r < 0) {
        j->res->action = VMCTL_ENV_FAILED;
        if (!e)
            err_make(&e, VMCTL_E_INTERNAL, -j->r, "VM '%s' failed", j->m->name);
        j->res->error = e;
    }
    j->res->seconds = (double)(now_usec() - t0) / 1e6;
}

/* A worker: one context of its own, the next job until none is left. */
typedef struct pool {
    job *jobs;
    size_t n;
    size_t next; /* under lock */
    pthread_mutex_t lock;
    const char *home;
    vmctl_log_fn log;
    void *log_userdata;
} pool;

static void *worker(void *arg)
{
    pool *p = arg;
    vmctl_ctx *ctx = NULL;
    vmctl_error *e = NULL;
    int r = vmctl_ctx_new(p->home, &ctx, &e);
    if (r >= 0)
        vmctl_ctx_set_log(ctx, p->log, p->log_userdata);
    for (;;) {
        pthread_mutex_lock(&p->lock);
        size_t i = p->next < p->n ? p->next++ : p->n;
        pthread_mutex_unlock(&p->lock);
        if (i == p->n)
            break;
        job_do(&p->jobs[i], ctx, r, e);
    }
    vmctl_error_free(e);
    vmctl_ctx_free(ctx);
    return NULL;
}

/* The pool of vm/snap in list, NULL when it has none. */
static const vmctl_pool_info *pool_find(vmctl_pool_info **list, size_t n, const char *vm,
                                        const char *snap)
{
    for (size_t i = 0; i < n; i++)
        if (streq(list[i]->vm, vm) && streq(list[i]->snap, snap))
            return list[i];
    return NULL;
}

/* A pool step failed: the failure of result res (its machine was made; its pool was not). */
static void pool_failed(vmctl_env_result *res, vmctl_error *e, int r, const char *vm,
                        const char *snap)
{
    if (vm)
        err_prefix(&e, r, "the warm pool of '%s/%s'", vm, snap);
    else
        err_prefix(&e, r, "the warm pools");
    if (res->action == VMCTL_ENV_FAILED) {
        vmctl_error_free(e);
        return;
    }
    res->action = VMCTL_ENV_FAILED;
    res->error = e;
}

/* from "VM/SNAP" pool=N (docs/vmfile.md "A warm pool"), once the machines are done: up sets each
 * declared pool to N (recorded as this project's) and, for the whole file, removes the pools this
 * project set that the file no longer declares; down removes this project's pools. A pool set by
 * hand or by another VMFile is left alone (up --adopt takes over one set by hand). sel[k] is the
 * machine of res[k]. */
static void env_pools(env_op op, vmctl_ctx *ctx, const vmctl_env_opts *opts, const char *project,
                      const vmfile_machine *const *sel, vmctl_env_result *res, size_t n,
                      bool whole_file)
{
    if (op != OP_UP && op != OP_DOWN)
        return;
    vmctl_pool_info **list = NULL;
    size_t np = 0;
    vmctl_error *e = NULL;
    int r = vmctl_pool_list(ctx, &list, &np, &e);
    if (r < 0) {
        if (n > 0)
            pool_failed(&res[0], e, r, NULL, NULL);
        else
            vmctl_error_free(e);
        return;
    }
    for (size_t k = 0; op == OP_UP && k < n; k++) {
        const vmfile_machine *m = sel[k];
        bool first = m->has_pool && res[k].action != VMCTL_ENV_FAILED;
        for (size_t j = 0; first && j < k; j++) /* one set per snapshot */
            first = !(sel[j]->has_pool && res[j].action != VMCTL_ENV_FAILED &&
                      streq(sel[j]->from_vm, m->from_vm) && streq(sel[j]->from_snap, m->from_snap));
        if (!first)
            continue;
        const vmctl_pool_info *p = pool_find(list, np, m->from_vm, m->from_snap);
        if (p && !(p->project && streq(p->project, project)) && !(!p->project && opts->adopt)) {
            if (p->project)
                ctx_log(ctx, VMCTL_LOG_NOTICE,
                        "the warm pool of '%s/%s' belongs to the VMFile '%s': left at size %u",
                        m->from_vm, m->from_snap, p->project, p->size);
            else
                ctx_log(ctx, VMCTL_LOG_NOTICE,
                        "the warm pool of '%s/%s' was set by hand: left at size %u (`vmctl up "
                        "--adopt` takes it over)",
                        m->from_vm, m->from_snap, p->size);
            continue;
        }
        if (!p && m->pool == 0)
            continue;
        if (p && p->size == m->pool && p->project && streq(p->project, project) &&
            p->ready == p->size)
            continue;
        r = pool_set_for_project(ctx, m->from_vm, m->from_snap, m->pool, project, &e);
        if (r < 0)
            pool_failed(&res[k], e, r, m->from_vm, m->from_snap);
        else if (m->pool)
            ctx_log(ctx, VMCTL_LOG_INFO, "warm pool of '%s/%s': %u", m->from_vm, m->from_snap,
                    m->pool);
    }
    for (size_t i = 0; i < np; i++) {
        const vmctl_pool_info *p = list[i];
        if (!p->project || !streq(p->project, project))
            continue;
        /* up: one the file still declares stays; down: one of the selected machines goes (any
         * of the file's with the whole file, which also takes the ones it no longer names) */
        size_t k_of = n;
        for (size_t k = 0; k < n && k_of == n; k++)
            if (sel[k]->from_vm && streq(sel[k]->from_vm, p->vm) &&
                streq(sel[k]->from_snap, p->snap) && (op == OP_DOWN || sel[k]->has_pool))
                k_of = k;
        bool remove = op == OP_UP ? whole_file && k_of == n : whole_file || k_of < n;
        if (!remove)
            continue;
        r = pool_set_for_project(ctx, p->vm, p->snap, 0, NULL, &e);
        if (r < 0 && n > 0)
            pool_failed(&res[k_of < n ? k_of : 0], e, r, p->vm, p->snap);
        else if (r < 0)
            vmctl_error_free(e);
    }
    vmctl_pool_info_list_free(list, np);
}

static int env_run(env_op op, vmctl_ctx *ctx, const vmctl_vmfile *pf, const vmctl_env_opts *opts,
                   vmctl_env_result **ret, size_t *ret_n, vmctl_error **reterr)
{
    static const vmctl_env_opts no_opts = {};
    if (!opts)
        opts = &no_opts;
    *ret = NULL;
    *ret_n = 0;
    const vmfile *f = pf->f;
    if (opts->name && !vmfile_find(f, opts->name)) {
        int r = err_make(reterr, VMCTL_E_VM_NOT_FOUND, ENOENT, "the VMFile '%s' has no vm \"%s\"",
                         f->path, opts->name);
        err_detail(reterr, "vm", "%s", opts->name);
        err_help(reterr, "Pick one of the vm nodes of the VMFile, or drop --name");
        return r;
    }
    size_t n = opts->name ? 1 : f->n_machines;
    size_t n_workers = n < ENV_MAX_WORKERS ? n : ENV_MAX_WORKERS;
    vmctl_env_result *res = calloc(n, sizeof(*res));
    job *jobs = calloc(n, sizeof(*jobs));
    pthread_t *tids = calloc(n_workers, sizeof(*tids));
    bool *started = calloc(n_workers, sizeof(*started));
    if (!res || !jobs || !tids || !started) {
        free(res);
        free(jobs);
        free(tids);
        free(started);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    provision_sink sink = {.fn = opts->output, .userdata = opts->userdata, .lock = &lock};
    const char *project = f->project ? f->project : f->path;
    size_t k = 0;
    for (size_t i = 0; i < f->n_machines; i++) {
        const vmfile_machine *m = &f->machines[i];
        if (opts->name && !streq(opts->name, m->name))
            continue;
        res[k].name = strdup(m->name);
        jobs[k] = (job){
            .op = op, .m = m, .project = project, .opts = opts, .sink = &sink, .res = &res[k]};
        k++;
    }
    /* One machine: on the caller's thread and context. Several: a pool of workers, each with
     * a context of its own. */
    if (n == 1) {
        job_do(&jobs[0], ctx, 0, NULL);
    } else {
        pool p = {.jobs = jobs,
                  .n = n,
                  .lock = PTHREAD_MUTEX_INITIALIZER,
                  .home = vmctl_ctx_get_home(ctx),
                  .log = ctx->log,
                  .log_userdata = ctx->log_userdata};
        size_t n_started = 0;
        for (size_t i = 0; i < n_workers; i++)
            if (pthread_create(&tids[i], NULL, worker, &p) == 0)
                started[i] = true, n_started++;
        if (n_started == 0)
            worker(&p); /* no thread at all: do them here, one after the other */
        for (size_t i = 0; i < n_workers; i++)
            if (started[i])
                pthread_join(tids[i], NULL);
        pthread_mutex_destroy(&p.lock);
    }
    free(tids);
    free(started);
    const vmfile_machine **sel = calloc(n ? n : 1, sizeof(*sel));
    for (size_t i = 0; sel && i < n; i++)
        sel[i] = jobs[i].m;
    free(jobs);
    if (sel)
        env_pools(op, ctx, opts, project, sel, res, n, !opts->name);
    free(sel);

    int r = 0;
    vmctl_error *first = NULL;
    for (size_t i = 0; i < n; i++) {
        if (res[i].action != VMCTL_ENV_FAILED)
            continue;
        if (!first) {
            first = TAKE_PTR(res[i].error);
            r = -vmctl_error_get_errno(first);
            if (r >= 0)
                r = -EIO;
        } else {
            cleanup_free char *why = err_describe(res[i].error);
            cleanup_free char *note =
                str_printf("VM '%s' failed too: %s: %s", res[i].name,
                           vmctl_error_get_code(res[i].error), why ? why : "out of memory");
            if (note)
                vmctl_error_add_note(first, note);
        }
    }
    if (reterr)
        *reterr = first;
    else
        vmctl_error_free(first);
    *ret = res;
    *ret_n = n;
    return r;
}

int vmctl_up(vmctl_ctx *ctx, const vmctl_vmfile *f, const vmctl_env_opts *opts,
             vmctl_env_result **ret, size_t *n, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(f, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    return env_run(OP_UP, ctx, f, opts, ret, n, reterr);
}

int vmctl_down(vmctl_ctx *ctx, const vmctl_vmfile *f, const vmctl_env_opts *opts,
               vmctl_env_result **ret, size_t *n, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(f, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    return env_run(OP_DOWN, ctx, f, opts, ret, n, reterr);
}

int vmctl_reload(vmctl_ctx *ctx, const vmctl_vmfile *f, const vmctl_env_opts *opts,
                 vmctl_env_result **ret, size_t *n, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(f, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    return env_run(OP_RELOAD, ctx, f, opts, ret, n, reterr);
}

int vmctl_provision(vmctl_ctx *ctx, const vmctl_vmfile *f, const vmctl_env_opts *opts,
                    vmctl_env_result **ret, size_t *n, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(f, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    return env_run(OP_PROVISION, ctx, f, opts, ret, n, reterr);
}
