/* SPDX-License-Identifier: MIT */
/* containerd.task.v2.Task: the task's life (Create: the VM; Start; Wait; Kill; Delete: the VM
 * goes; Shutdown) and its processes (the init process and Exec'd ones). The queries and the
 * VM-wide operations (State, Pids, Stats, Pause, Resume, Connect, ...) are in task-ops.c. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shim.h"
#include "shim.pb-c.h"
#include "task-internal.h"

pthread_mutex_t shim_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t shim_cond = PTHREAD_COND_INITIALIZER;
shim_task *shim_the_task;

int task_pack(const ProtobufCMessage *m, uint8_t **resp, size_t *resp_len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n ? n : 1);
    if (!b)
        return -ENOMEM;
    protobuf_c_message_pack(m, b);
    *resp = b;
    *resp_len = n;
    return 0;
}

/* Under shim_lock: the process (exec_id "" or NULL: init) of task id. */
shim_proc *task_find(const char *id, const char *exec_id, shim_status *st)
{
    shim_task *t = shim_the_task;
    if (!t || t->deleted || !id || strcmp(t->id, id) != 0) {
        shim_fail(st, GRPC_NOT_FOUND, "task %s not found", id ? id : "");
        return NULL;
    }
    const char *e = exec_id ? exec_id : "";
    for (shim_proc *p = t->procs; p; p = p->next)
        if (!strcmp(p->exec_id, e))
            return p;
    shim_fail(st, GRPC_NOT_FOUND, "process %s of task %s not found", e, id);
    return NULL;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

/* CreateTaskRequest.rootfs (an image's snapshot: overlay or bind mounts) on BUNDLE/rootfs */
static int mount_rootfs(Containerd__Task__V2__CreateTaskRequest *req, const char *target,
                        shim_status *st)
{
    mkdir(target, 0711);
    for (size_t i = 0; i < req->n_rootfs; i++) {
        Containerd__Types__Mount *m = req->rootfs[i];
        unsigned long flags = 0;
        char data[8192] = "";
        size_t dl = 0;
        for (size_t k = 0; k < m->n_options; k++) {
            const char *o = m->options[k];
            if (!strcmp(o, "ro"))
                flags |= MS_RDONLY;
            else if (!strcmp(o, "rw"))
                ;
            else if (!strcmp(o, "bind"))
                flags |= MS_BIND;
            else if (!strcmp(o, "rbind"))
                flags |= MS_BIND | MS_REC;
            else if (!strcmp(o, "nosuid"))
                flags |= MS_NOSUID;
            else if (!strcmp(o, "nodev"))
                flags |= MS_NODEV;
            else if (!strcmp(o, "noexec"))
                flags |= MS_NOEXEC;
            else
                dl += (size_t)snprintf(data + dl, dl < sizeof(data) ? sizeof(data) - dl : 0, "%s%s",
                                       dl ? "," : "", o);
        }
        if (dl >= sizeof(data))
            return shim_fail(st, GRPC_INVALID_ARGUMENT, "rootfs mount options are too long");
        const char *type = m->type && *m->type && strcmp(m->type, "bind") ? m->type : NULL;
        if (mount(m->source, target, type, flags, dl ? data : NULL) < 0)
            return shim_fail(st, GRPC_INTERNAL, "cannot mount the rootfs (%s %s) on '%s': %s",
                             m->type, m->source, target, strerror(errno));
    }
    return 0;
}

/* /proc, /sys and /dev inside the container's root, where the rootfs has those directories, and
 * the volumes bound at their destinations. /dev is bound with its submounts once the guest's
 * /init has mounted /dev/pts (in the background, after the agent started): a terminal's slave
 * must have its name in the root. Destinations are plain paths (spec.c): no quoting needed. */
static int guest_setup(vmctl_ctx *ctx, const shim_task *t, shim_status *st)
{
    static const char head[] =
        "r=" SHIM_GUEST_ROOT "; [ -d $r/proc ] && mount -t proc proc $r/proc; "
        "[ -d $r/sys ] && mount -t sysfs sysfs $r/sys; "
        "i=0; until grep -q ' /dev/pts devpts ' /proc/mounts || [ $i -ge 300 ]; do "
        "sleep 0.1; i=$((i + 1)); done; "
        "[ -d $r/dev ] && mount -o rbind /dev $r/dev; true";
    size_t cap = sizeof(head) + 1;
    for (size_t i = 0; i < t->n_vols; i++)
        cap += 2 * strlen(t->vols[i].dest) + 128;
    char *script = malloc(cap);
    if (!script)
        return shim_fail(st, GRPC_INTERNAL, "out of memory");
    size_t n = (size_t)snprintf(script, cap, "%s", head);
    for (size_t i = 0; i < t->n_vols; i++)
        n += (size_t)snprintf(script + n, cap - n,
                              " && mkdir -p $r%s && mount --bind " SHIM_GUEST_VOLUMES "/%zu $r%s",
                              t->vols[i].dest, i, t->vols[i].dest);
    char *argv[] = {"sh", "-c", script, NULL};
    vmctl_exec_opts o = {.argv = argv, .via = VMCTL_EXEC_VIA_AGENT, .timeout_sec = 60};
    vmctl_exec_result res = {0};
    vmctl_error *err = NULL;
    int r = vmctl_exec(ctx, t->vm, &o, &res, &err);
    if (r < 0 || res.exit_code != 0)
        shim_fail(st, GRPC_INTERNAL, "cannot prepare the container's root in vm '%s': %s%.*s",
                  t->vm, r < 0 ? vmctl_error_get_message(err) : "", r < 0 ? 0 : (int)res.err_len,
                  res.err ? res.err : "");
    vmctl_exec_result_clear(&res);
    vmctl_error_free(err);
    free(script);
    return r < 0 || st->code ? -1 : 0;
}

static void task_free(shim_task *t)
{
    while (t->procs) {
        shim_proc *p = t->procs;
        t->procs = p->next;
        shim_proc_free(p);
    }
    free(t->id);
    free(t->bundle);
    free(t->vm);
    free(t->rootfs);
    free(t->net);
    shim_volumes_free(t->vols, t->n_vols);
    free(t);
}

/* The VM and what was mounted for it go; the task stays for its last answers. */
void task_teardown(shim_task *t)
{
    vmctl_ctx *ctx = NULL;
    vmctl_error *err = NULL;
    if (t->vm_made && shim_ctx(&ctx, &err) >= 0 && vmctl_vm_destroy(ctx, t->vm, true, &err) < 0)
        shim_log("cannot destroy vm '%s': %s", t->vm, vmctl_error_get_message(err));
    t->vm_made = false;
    vmctl_error_free(err);
    vmctl_ctx_free(ctx);
    if (t->mounted && umount2(t->rootfs, MNT_DETACH) < 0)
        shim_log("cannot unmount '%s': %s", t->rootfs, strerror(errno));
    t->mounted = false;
}

static int vm_boot(shim_task *t, bool ro, shim_status *st)
{
    vmctl_ctx *ctx = NULL;
    vmctl_error *err = NULL;
    vmctl_mount *m = calloc(t->n_vols + 1, sizeof(*m));
    char(*targets)[48] = calloc(t->n_vols + 1, sizeof(*targets));
    if (!m || !targets) {
        free(m);
        free(targets);
        return shim_fail(st, GRPC_INTERNAL, "out of memory");
    }
    m[0] = (vmctl_mount){.source = t->rootfs, .target = SHIM_GUEST_ROOT, .read_only = ro};
    for (size_t i = 0; i < t->n_vols; i++) {
        snprintf(targets[i], sizeof(targets[i]), SHIM_GUEST_VOLUMES "/%zu", i);
        m[i + 1] = (vmctl_mount){
            .source = t->vols[i].source, .target = targets[i], .read_only = t->vols[i].read_only};
    }
    vmctl_vm_config cfg = {
        .name = t->vm,
        .mounts = m,
        .n_mounts = t->n_vols + 1,
        .owner_bound = true, /* the shim SIGKILLed: its supervisor kills QEMU */
        .memory_mib = 256,
        .net = t->net, /* the pod's network namespace, taken over (docs/networking.md) */
    };
    int r = shim_ctx(&ctx, &err);
    if (r >= 0) {
        /* a VM of an earlier shim of the same task (killed) is in the way */
        vmctl_vm_info *old = NULL;
        if (vmctl_vm_get(ctx, t->vm, &old, NULL) >= 0) {
            vmctl_vm_info_free(old);
            vmctl_vm_destroy(ctx, t->vm, true, NULL);
        }
        r = vmctl_vm_create(ctx, &cfg, &err);
    }
    if (r >= 0) {
        t->vm_made = true;
        if (shim_opts.debug)
            shim_log("vm '%s' created, starting", t->vm);
        r = vmctl_vm_start(ctx, t->vm, true, 0, &err);
        if (r >= 0 && shim_opts.debug)
            shim_log("vm '%s' ready", t->vm);
    }
    vmctl_vm_info *info = NULL;
    if (r >= 0 && (r = vmctl_vm_get(ctx, t->vm, &info, &err)) >= 0) {
        t->vm_pid = info->pid;
        vmctl_vm_info_free(info);
        if ((r = guest_setup(ctx, t, st)) == 0 && shim_opts.debug)
            shim_log("the container's root is prepared");
    } else if (r < 0)
        shim_fail(st, GRPC_INTERNAL, "cannot start vm '%s' for task %s: %s", t->vm, t->id,
                  err ? vmctl_error_get_message(err) : strerror(-r));
    vmctl_error_free(err);
    vmctl_ctx_free(ctx);
    free(m);
    free(targets);
    return r < 0 ? -1 : 0;
}

static int m_create(const uint8_t *data, size_t len, uint8_t **resp, size_t *resp_len,
                    shim_status *st)
{
    DECODE(CreateTaskRequest, create_task_request);
    if (shim_opts.debug)
        shim_log("Create %s", req->id);
    shim_task *t = calloc(1, sizeof(*t));
    shim_proc *p = calloc(1, sizeof(*p));
    char *err = NULL;
    bool ro = false;
    int r = -1;
    if (!t || !p) {
        shim_fail(st, GRPC_INTERNAL, "out of memory");
        goto out;
    }
    if (req->checkpoint && *req->checkpoint) {
        shim_fail(st, GRPC_UNIMPLEMENTED, "the vmctl runtime cannot restore a checkpoint");
        goto out;
    }
    pthread_mutex_lock(&shim_lock);
    bool taken = shim_the_task != NULL;
    pthread_mutex_unlock(&shim_lock);
    if (taken) {
        shim_fail(st, GRPC_ALREADY_EXISTS,
                  "this shim already runs a task: the vmctl runtime runs one task per shim");
        goto out;
    }
    t->id = dup_or_empty(req->id);
    t->bundle = dup_or_empty(req->bundle);
    t->vm = shim_vm_name(shim_opts.namespace, req->id);
    if (shim_bundle_load(t->bundle, &p->spec, &t->rootfs, &ro, &err) < 0) {
        shim_fail(st, GRPC_INVALID_ARGUMENT, "%s", err ? err : "cannot load the bundle");
        goto out;
    }
    if (shim_bundle_volumes(t->bundle, &t->vols, &t->n_vols) < 0 ||
        shim_bundle_netns(t->bundle, &t->net) < 0) {
        shim_fail(st, GRPC_INTERNAL, "out of memory");
        goto out;
    }
    if (req->n_rootfs) {
        free(t->rootfs);
        if (asprintf(&t->rootfs, "%s/rootfs", t->bundle) < 0 || !t->rootfs) {
            t->rootfs = NULL;
            goto out;
        }
        if (mount_rootfs(req, t->rootfs, st) < 0)
            goto out;
        t->mounted = true;
    }
    p->exec_id = strdup("");
    p->stdin_path = dup_or_empty(req->stdin);
    p->stdout_path = dup_or_empty(req->stdout);
    p->stderr_path = dup_or_empty(req->stderr);
    p->terminal = req->terminal;
    p->status = ST_CREATED;
    t->procs = p;
    p = NULL;
    if (vm_boot(t, ro, st) < 0)
        goto out;
    pthread_mutex_lock(&shim_lock);
    shim_the_task = t;
    pthread_mutex_unlock(&shim_lock);

    pbw io = {0}, ev = {0};
    pbw_str_field(&io, 1, req->stdin);
    pbw_str_field(&io, 2, req->stdout);
    pbw_str_field(&io, 3, req->stderr);
    pbw_varint_field(&io, 4, req->terminal);
    pbw_str_field(&ev, 1, t->id);
    pbw_str_field(&ev, 2, t->bundle);
    pbw_msg_field(&ev, 4, &io);
    pbw_varint_field(&ev, 6, (uint32_t)t->vm_pid);
    shim_publish("/tasks/create", "TaskCreate", &ev);
    pbw_free(&io);
    pbw_free(&ev);

    Containerd__Task__V2__CreateTaskResponse out = CONTAINERD__TASK__V2__CREATE_TASK_RESPONSE__INIT;
    out.pid = (uint32_t)t->vm_pid;
    t = NULL;
    r = task_pack(&out.base, resp, resp_len);
out:
    if (t) {
        task_teardown(t);
        task_free(t);
    }
    shim_proc_free(p);
    free(err);
    FREE(create_task_request);
    return r;
}

static int m_start(const uint8_t *data, size_t len, uint8_t **resp, size_t *resp_len,
                   shim_status *st)
{
    DECODE(StartRequest, start_request);
    int r = -1;
    pthread_mutex_lock(&shim_lock);
    shim_proc *p = task_find(req->id, req->exec_id, st);
    shim_task *t = shim_the_task;
    if (p && p->status != ST_CREATED)
        shim_fail(st, GRPC_FAILED_PRECONDITION, "process %s of task %s was started already",
                  p->exec_id, t->id);
    else if (p && t->paused) /* its agent does not answer: resume the task first */
        shim_fail(st, GRPC_FAILED_PRECONDITION, "task %s is paused", t->id);
    else if (p)
        r = shim_proc_run(t, p, st);
    char *exec_id = p ? strdup(p->exec_id) : NULL;
    pid_t pid = t ? t->vm_pid : 0;
    pthread_mutex_unlock(&shim_lock);
    if (r == 0) {
        pbw ev = {0};
        pbw_str_field(&ev, 1, req->id);
        if (exec_id && *exec_id) {
            pbw_str_field(&ev, 2, exec_id);
            pbw_varint_field(&ev, 3, (uint32_t)pid);
            shim_publish("/tasks/exec-started", "TaskExecStarted", &ev);
        } else {
            pbw_varint_field(&ev, 2, (uint32_t)pid);
            shim_publish("/tasks/start", "TaskStart", &ev);
        }
        pbw_free(&ev);
        /* the exit waits for this: start before exit, always */
        pthread_mutex_lock(&shim_lock);
        p->start_published = true;
        pthread_cond_broadcast(&shim_cond);
        pthread_mutex_unlock(&shim_lock);
        Containerd__Task__V2__StartResponse out = CONTAINERD__TASK__V2__START_RESPONSE__INIT;
        out.pid = (uint32_t)pid;
        r = task_pack(&out.base, resp, resp_len);
    }
    free(exec_id);
    FREE(start_request);
    return r;
}

static int m_wait(const uint8_t *data, size_t len, uint8_t **resp, size_t *resp_len,
                  shim_status *st)
{
    DECODE(WaitRequest, wait_request);
    int r = -1;
    pthread_mutex_lock(&shim_lock);
    shim_proc *p = task_find(req->id, req->exec_id, st);
    while (p && p->status != ST_STOPPED) {
        pthread_cond_wait(&shim_cond, &shim_lock);
        p = task_find(req->id, req->exec_id, st); /* it may have been deleted meanwhile */
    }
    Containerd__Task__V2__WaitResponse out = CONTAINERD__TASK__V2__WAIT_RESPONSE__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    if (p) {
        out.exit_status = p->exit_status;
        ts.seconds = p->exited_at.tv_sec;
        ts.nanos = (int32_t)p->exited_at.tv_nsec;
        out.exited_at = &ts;
        r = 0;
    }
    pthread_mutex_unlock(&shim_lock);
    if (r == 0)
        r = task_pack(&out.base, resp, resp_len);
    FREE(wait_request);
    return r;
}

/* Under shim_lock: a process that never started ends as killed by sig. */
static void end_unstarted(shim_proc *p, uint32_t sig)
{
    p->status = ST_STOPPED;
    p->exit_status = 128 + sig;
    clock_gettime(CLOCK_REALTIME, &p->exited_at);
    pthread_cond_broadcast(&shim_cond);
}

static int m_kill(const uint8_t *data, size_t len, uint8_t **resp, size_t *resp_len,
                  shim_status *st)
{
    (void)resp;
    (void)resp_len;
    DECODE(KillRequest, kill_request);
    int r = -1;
    uint32_t sig = req->signal ? req->signal : SIGKILL;
    pthread_mutex_lock(&shim_lock);
    shim_proc *p = task_find(req->id, req->exec_id, st);
    if (p && p->status == ST_STOPPED)
        shim_fail(st, GRPC_NOT_FOUND, "process %s of task %s has already finished", p->exec_id,
                  req->id);
    else if (p) {
        bool init = !*p->exec_id;
        for (shim_proc *q = shim_the_task->procs; q; q = q->next) {
            /* the init process's end is the container's: every process goes with it */
            if (q != p && !(init && (req->all || sig == SIGKILL)))
                continue;
            if (q->status == ST_CREATED)
                end_unstarted(q, sig);
            else if (q->status != ST_STOPPED)
                shim_proc_ctl(q, 'k', sig, 0);
        }
        r = 0;
    }
    pthread_mutex_unlock(&shim_lock);
    FREE(kill_request);
    return r;
}

static int m_delete(const uint8_t *data, size_t len, uint8_t **resp, size_t *resp_len,
                    shim_status *st)
{
    DECODE(DeleteRequest, delete_request);
    int r = -1;
    pthread_mutex_lock(&shim_lock);
    shim_task *t = shim_the_task;
    shim_proc *p = task_find(req->id, req->exec_id, st);
    Containerd__Task__V2__DeleteResponse out = CONTAINERD__TASK__V2__DELETE_RESPONSE__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    bool init = p && !*p->exec_id;
    if (p && (p->status == ST_RUNNING || p->status == ST_PAUSED))
        shim_fail(st, GRPC_FAILED_PRECONDITION, "process %s of task %s is still running",
                  p->exec_id, req->id);
    else if (p) {
        out.pid = (uint32_t)t->vm_pid;
        out.exit_status = p->exit_status;
        ts.seconds = p->exited_at.tv_sec;
        ts.nanos = (int32_t)p->exited_at.tv_nsec;
        out.exited_at = &ts;
        if (init) {
            t->deleted = true;
        } else {
            for (shim_proc **pp = &t->procs; *pp; pp = &(*pp)->next)
                if (*pp == p) {
                    *pp = p->next;
                    break;
                }
            shim_proc_free(p);
        }
        pthread_cond_broadcast(&shim_cond); /* a Wait on it answers: not found */
        r = 0;
    }
    pthread_mutex_unlock(&shim_lock);
    if (r == 0 && init) {
        task_teardown(t);
        pbw ev = {0};
        pbw_str_field(&ev, 1, t->id);
        pbw_varint_field(&ev, 2, out.pid);
        pbw_varint_field(&ev, 3, out.exit_status);
        pbw_timestamp_field(&ev, 4, &(struct timespec){ts.seconds, ts.nanos});
        shim_publish("/tasks/delete", "TaskDelete", &ev);
        pbw_free(&ev);
    }
    if (r == 0)
        r = task_pack(&out.base, resp, resp_len);
    FREE(delete_request);
    return r;
}

static int m_exec(const uint8_t *data, size_t len, uint8_t **resp, size_t *resp_len,
                  shim_status *st)
{
    (void)resp;
    (void)resp_len;
    DECODE(ExecProcessRequest, exec_process_request);
    int r = -1;
    char *err = NULL;
    shim_proc *p = calloc(1, sizeof(*p));
    if (!p || !req->exec_id || !*req->exec_id || !req->spec) {
        shim_fail(st, GRPC_INVALID_ARGUMENT, "an exec needs an id and a process spec");
        goto out;
    }
    if (shim_spec_from_json((const char *)req->spec->value.data, req->spec->value.len, &p->spec,
                            &err) < 0) {
        shim_fail(st, GRPC_INVALID_ARGUMENT, "%s", err ? err : "invalid process spec");
        goto out;
    }
    p->exec_id = strdup(req->exec_id);
    p->stdin_path = dup_or_empty(req->stdin);
    p->stdout_path = dup_or_empty(req->stdout);
    p->stderr_path = dup_or_empty(req->stderr);
    p->terminal = req->terminal;
    p->status = ST_CREATED;
    pthread_mutex_lock(&shim_lock);
    shim_status ignore = {0};
    shim_proc *init = task_find(req->id, NULL, st);
    if (init && task_find(req->id, req->exec_id, &ignore))
        shim_fail(st, GRPC_ALREADY_EXISTS, "task %s has an exec %s already", req->id, req->exec_id);
    else if (init && init->status != ST_RUNNING)
        shim_fail(st, GRPC_FAILED_PRECONDITION, "task %s is not running", req->id);
    else if (init) {
        p->next = init->next;
        init->next = p;
        p = NULL;
        r = 0;
    }
    pthread_mutex_unlock(&shim_lock);
    if (r == 0) {
        pbw ev = {0};
        pbw_str_field(&ev, 1, req->id);
        pbw_str_field(&ev, 2, req->exec_id);
        shim_publish("/tasks/exec-added", "TaskExecAdded", &ev);
        pbw_free(&ev);
    }
out:
    shim_proc_free(p);
    free(err);
    FREE(exec_process_request);
    return r;
}

static int m_shutdown(const uint8_t *data, size_t len, uint8_t **resp, size_t *resp_len,
                      shim_status *st)
{
    (void)resp;
    (void)resp_len;
    (void)st;
    DECODE(ShutdownRequest, shutdown_request);
    pthread_mutex_lock(&shim_lock);
    shim_task *t = shim_the_task;
    bool live = t && !t->deleted;
    pthread_mutex_unlock(&shim_lock);
    if (!live || req->now) { /* as runc's shim: a shim with a live task stays */
        if (t)
            task_teardown(t);
        shim_request_exit();
    }
    FREE(shutdown_request);
    return 0;
}

static const struct {
    const char *name;
    shim_method_fn fn;
} methods[] = {
    {"Create", m_create},
    {"Start", m_start},
    {"Wait", m_wait},
    {"Kill", m_kill},
    {"Delete", m_delete},
    {"Exec", m_exec},
    {"Shutdown", m_shutdown},
    {"State", task_m_state},
    {"Pids", task_m_pids},
    {"Pause", task_m_pause},
    {"Resume", task_m_resume},
    {"Stats", task_m_stats},
    {"Connect", task_m_connect},
    {"CloseIO", task_m_close_io},
    {"ResizePty", task_m_resize_pty},
    {"Update", task_m_update},
    {"Checkpoint", task_m_checkpoint},
};

shim_method_fn shim_task_method(const char *name)
{
    for (size_t i = 0; name && i < sizeof(methods) / sizeof(methods[0]); i++)
        if (!strcmp(methods[i].name, name))
            return methods[i].fn;
    return NULL;
}
