/* SPDX-License-Identifier: MIT */
/* containerd.task.v2.Task: queries (State, Pids, Stats, Connect), the VM-wide Pause/Resume
 * (QEMU stop/cont), a process's stdin and terminal (CloseIO, ResizePty), and what the vmctl
 * runtime refuses (Update, Checkpoint). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim.pb-c.h"
#include "task-internal.h"
#include "task.pb-c.h"

TASK_METHOD(task_m_state)
{
    DECODE(StateRequest, state_request);
    int r = -1;
    pthread_mutex_lock(&shim_lock);
    shim_proc *p = task_find(req->id, req->exec_id, st);
    Containerd__Task__V2__StateResponse out = CONTAINERD__TASK__V2__STATE_RESPONSE__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    char *strs[5] = {0};
    if (p) {
        shim_task *t = shim_the_task;
        strs[0] = strdup(t->id);
        strs[1] = strdup(t->bundle);
        strs[2] = strdup(p->stdin_path);
        strs[3] = strdup(p->stdout_path);
        strs[4] = strdup(p->stderr_path);
        out.id = strs[0];
        out.bundle = strs[1];
        out.stdin = strs[2];
        out.stdout = strs[3];
        out.stderr = strs[4];
        out.exec_id = req->exec_id;
        out.pid = (uint32_t)t->vm_pid;
        out.status = p->status == ST_RUNNING && t->paused ? (int)ST_PAUSED : p->status;
        out.terminal = p->terminal;
        out.exit_status = p->exit_status;
        ts.seconds = p->exited_at.tv_sec;
        ts.nanos = (int32_t)p->exited_at.tv_nsec;
        out.exited_at = &ts;
        r = 0;
        for (int i = 0; i < 5; i++)
            if (!strs[i])
                r = shim_fail(st, GRPC_INTERNAL, "out of memory");
    }
    pthread_mutex_unlock(&shim_lock);
    if (r == 0)
        r = task_pack(&out.base, resp, resp_len);
    for (int i = 0; i < 5; i++)
        free(strs[i]);
    FREE(state_request);
    return r;
}

/* The task's one host process is the VM's hypervisor: its pid is the task's. */
TASK_METHOD(task_m_pids)
{
    DECODE(PidsRequest, pids_request);
    int r = -1;
    pthread_mutex_lock(&shim_lock);
    shim_proc *p = task_find(req->id, NULL, st);
    pid_t pid = p ? shim_the_task->vm_pid : 0;
    pthread_mutex_unlock(&shim_lock);
    if (p) {
        Containerd__V1__Types__ProcessInfo pi = CONTAINERD__V1__TYPES__PROCESS_INFO__INIT;
        Containerd__V1__Types__ProcessInfo *list[] = {&pi};
        Containerd__Task__V2__PidsResponse out = CONTAINERD__TASK__V2__PIDS_RESPONSE__INIT;
        pi.pid = (uint32_t)pid;
        out.n_processes = 1;
        out.processes = list;
        r = task_pack(&out.base, resp, resp_len);
    }
    FREE(pids_request);
    return r;
}

static int pause_resume(const char *id, bool pause, shim_status *st)
{
    pthread_mutex_lock(&shim_lock);
    shim_proc *p = task_find(id, NULL, st);
    shim_task *t = shim_the_task;
    char *vm = p ? strdup(t->vm) : NULL;
    bool running = p && p->status == ST_RUNNING;
    pthread_mutex_unlock(&shim_lock);
    if (!p)
        return -1;
    if (!vm)
        return shim_fail(st, GRPC_INTERNAL, "out of memory");
    if (!running) {
        free(vm);
        return shim_fail(st, GRPC_FAILED_PRECONDITION, "task %s is not running", id);
    }
    vmctl_ctx *ctx = NULL;
    vmctl_error *err = NULL;
    int r = shim_ctx(&ctx, &err);
    if (r >= 0)
        r = pause ? vmctl_vm_pause(ctx, vm, &err) : vmctl_vm_resume(ctx, vm, &err);
    if (r < 0)
        shim_fail(st, GRPC_FAILED_PRECONDITION, "cannot %s vm '%s': %s", pause ? "pause" : "resume",
                  vm, err ? vmctl_error_get_message(err) : strerror(-r));
    vmctl_error_free(err);
    vmctl_ctx_free(ctx);
    free(vm);
    if (r < 0)
        return -1;
    pthread_mutex_lock(&shim_lock);
    t->paused = pause;
    pthread_mutex_unlock(&shim_lock);
    pbw ev = {0};
    pbw_str_field(&ev, 1, id);
    shim_publish(pause ? "/tasks/paused" : "/tasks/resumed", pause ? "TaskPaused" : "TaskResumed",
                 &ev);
    pbw_free(&ev);
    return 0;
}

TASK_METHOD(task_m_pause)
{
    (void)resp;
    (void)resp_len;
    DECODE(PauseRequest, pause_request);
    int r = pause_resume(req->id, true, st);
    FREE(pause_request);
    return r;
}

TASK_METHOD(task_m_resume)
{
    (void)resp;
    (void)resp_len;
    DECODE(ResumeRequest, resume_request);
    int r = pause_resume(req->id, false, st);
    FREE(resume_request);
    return r;
}

/* io.containerd.cgroups.v2.Metrics of the VM's hypervisor process on the host: CPU time
 * (cpu.usage_usec, user_usec, system_usec), resident memory (memory.usage) against the guest's
 * configured RAM (memory.usage_limit), and one process (pids.current). */
TASK_METHOD(task_m_stats)
{
    DECODE(StatsRequest, stats_request);
    int r = -1;
    pthread_mutex_lock(&shim_lock);
    shim_proc *p = task_find(req->id, NULL, st);
    char *vm = p ? strdup(shim_the_task->vm) : NULL;
    pthread_mutex_unlock(&shim_lock);
    vmctl_ctx *ctx = NULL;
    vmctl_error *err = NULL;
    vmctl_vm_stats *s = NULL;
    if (vm && (r = shim_ctx(&ctx, &err)) >= 0)
        r = vmctl_vm_stats_get(ctx, vm, VMCTL_STATS_NO_GUEST, &s, &err);
    if (vm && r >= 0 && !s->available[VMCTL_STATS_CPU]) {
        r = -1;
        shim_fail(st, GRPC_FAILED_PRECONDITION, "vm '%s' is not running: no metrics", vm);
    } else if (vm && r < 0)
        shim_fail(st, GRPC_INTERNAL, "cannot sample vm '%s': %s", vm,
                  err ? vmctl_error_get_message(err) : strerror(-r));
    if (vm && r >= 0) {
        pbw pids = {0}, cpu = {0}, mem = {0}, m = {0};
        pbw_varint_field(&pids, 1, 1);
        pbw_varint_field(&cpu, 1, (uint64_t)(s->cpu_seconds * 1e6));
        pbw_varint_field(&cpu, 2, (uint64_t)(s->cpu_user_seconds * 1e6));
        pbw_varint_field(&cpu, 3, (uint64_t)(s->cpu_system_seconds * 1e6));
        if (s->available[VMCTL_STATS_MEMORY])
            pbw_varint_field(&mem, 32, s->rss_bytes);
        pbw_varint_field(&mem, 33, s->mem_bytes);
        pbw_msg_field(&m, 1, &pids);
        pbw_msg_field(&m, 2, &cpu);
        pbw_msg_field(&m, 4, &mem);
        Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
        any.type_url = "io.containerd.cgroups.v2.Metrics";
        any.value.data = m.buf;
        any.value.len = m.len;
        Containerd__Task__V2__StatsResponse out = CONTAINERD__TASK__V2__STATS_RESPONSE__INIT;
        out.stats = &any;
        r = m.oom ? shim_fail(st, GRPC_INTERNAL, "out of memory")
                  : task_pack(&out.base, resp, resp_len);
        pbw_free(&pids);
        pbw_free(&cpu);
        pbw_free(&mem);
        pbw_free(&m);
    }
    vmctl_vm_stats_free(s);
    vmctl_error_free(err);
    vmctl_ctx_free(ctx);
    free(vm);
    FREE(stats_request);
    return r < 0 ? -1 : 0;
}

TASK_METHOD(task_m_connect)
{
    DECODE(ConnectRequest, connect_request);
    Containerd__Task__V2__ConnectResponse out = CONTAINERD__TASK__V2__CONNECT_RESPONSE__INIT;
    pthread_mutex_lock(&shim_lock);
    out.shim_pid = (uint32_t)getpid();
    out.task_pid = shim_the_task ? (uint32_t)shim_the_task->vm_pid : 0;
    pthread_mutex_unlock(&shim_lock);
    char version[64];
    snprintf(version, sizeof(version), "vmctl %s", vmctl_version());
    out.version = version;
    int r = task_pack(&out.base, resp, resp_len);
    FREE(connect_request);
    return r;
}

static int proc_ctl(const char *id, const char *exec_id, char op, uint32_t a, uint32_t b,
                    shim_status *st)
{
    pthread_mutex_lock(&shim_lock);
    shim_proc *p = task_find(id, exec_id, st);
    int r = p ? shim_proc_ctl(p, op, a, b) : -1;
    pthread_mutex_unlock(&shim_lock);
    if (p && r < 0) /* not started, or finished: nothing to do */
        r = 0;
    return r;
}

TASK_METHOD(task_m_close_io)
{
    (void)resp;
    (void)resp_len;
    DECODE(CloseIORequest, close_iorequest);
    int r = req->stdin ? proc_ctl(req->id, req->exec_id, 'c', 0, 0, st) : 0;
    FREE(close_iorequest);
    return r;
}

TASK_METHOD(task_m_resize_pty)
{
    (void)resp;
    (void)resp_len;
    DECODE(ResizePtyRequest, resize_pty_request);
    int r = proc_ctl(req->id, req->exec_id, 'r', req->width, req->height, st);
    FREE(resize_pty_request);
    return r;
}

TASK_METHOD(task_m_update)
{
    (void)data;
    (void)len;
    (void)resp;
    (void)resp_len;
    return shim_fail(st, GRPC_UNIMPLEMENTED,
                     "the vmctl runtime cannot update a running task's resources: its VM's CPUs "
                     "and memory are fixed when the task is created");
}

TASK_METHOD(task_m_checkpoint)
{
    (void)data;
    (void)len;
    (void)resp;
    (void)resp_len;
    return shim_fail(st, GRPC_UNIMPLEMENTED,
                     "the vmctl runtime cannot checkpoint a task yet (VM snapshots are not wired "
                     "to containerd's checkpoint API)");
}
