/* SPDX-License-Identifier: MIT */
/* A container process: run in the VM through the guest agent (one agent session per process,
 * chrooted into the rootfs), its stdio wired to the FIFOs containerd passed, driven by a thread
 * of its own that also takes commands (signal, close stdin, resize) through a pipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

typedef struct io_run {
    shim_task *t;
    shim_proc *p;
    vmctl_ctx *ctx;
    vmctl_exec_session *s;
    vmctl_exec_proc *ep;
    int in_fd, out_fd, err_fd;
} io_run;

/* A FIFO's write side without blocking on a reader that is not there yet. */
static int open_out(const char *path)
{
    if (!path || !*path)
        return -1;
    int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENXIO) /* no reader yet: keep one end open ourselves */
        fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    else
        shim_log("cannot open '%s': %s", path, strerror(errno));
    return fd;
}

static int write_out(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (fd >= 0 && len) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return 0; /* the reader went away: the output is dropped, the process goes on */
        p += k;
        len -= (size_t)k;
    }
    return 0;
}

static int on_stdout(const void *data, size_t len, void *userdata)
{
    io_run *io = userdata;
    return write_out(io->out_fd, data, len);
}

static int on_stderr(const void *data, size_t len, void *userdata)
{
    io_run *io = userdata;
    return write_out(io->err_fd >= 0 ? io->err_fd : io->out_fd, data, len);
}

static void io_close(io_run *io)
{
    if (io->ep)
        vmctl_exec_proc_free(io->ep);
    if (io->s)
        vmctl_exec_session_close(io->s);
    vmctl_ctx_free(io->ctx);
    if (io->in_fd >= 0)
        close(io->in_fd);
    if (io->out_fd >= 0)
        close(io->out_fd);
    if (io->err_fd >= 0)
        close(io->err_fd);
    free(io);
}

static void handle_ctl(io_run *io, bool *stdin_open)
{
    char buf[9];
    ssize_t n = read(io->p->ctl[0], buf, sizeof(buf));
    if (n != (ssize_t)sizeof(buf))
        return;
    uint32_t a, b;
    memcpy(&a, buf + 1, 4);
    memcpy(&b, buf + 5, 4);
    vmctl_error *err = NULL;
    switch (buf[0]) {
    case 'k':
        vmctl_exec_signal(io->ep, (int)a, &err);
        break;
    case 'c':
        if (*stdin_open) {
            vmctl_exec_close_stdin(io->ep, &err);
            *stdin_open = false;
        }
        break;
    case 'r':
        vmctl_exec_resize(io->ep, b, a, &err);
        break;
    }
    if (err)
        shim_log("process '%s': %s", io->p->exec_id, vmctl_error_get_message(err));
    vmctl_error_free(err);
}

static void *io_thread(void *arg)
{
    io_run *io = arg;
    shim_proc *p = io->p;
    bool stdin_open = io->in_fd >= 0;
    vmctl_error *err = NULL;
    for (;;) {
        /* first what has arrived already (vmctl_exec_start may have read it into the session's
         * buffer, where it does not make the fd readable), then wait */
        if (vmctl_exec_session_dispatch(io->s, 0, &err) < 0) {
            shim_log("process '%s': %s", p->exec_id, vmctl_error_get_message(err));
            vmctl_error_free(err);
            err = NULL;
            break;
        }
        if (vmctl_exec_done(io->ep))
            break;
        struct pollfd fds[3] = {
            {.fd = vmctl_exec_session_fd(io->s), .events = POLLIN},
            {.fd = p->ctl[0], .events = POLLIN},
            {.fd = stdin_open ? io->in_fd : -1, .events = POLLIN},
        };
        if (poll(fds, 3, 1000) < 0 && errno != EINTR)
            break;
        if (fds[1].revents & POLLIN)
            handle_ctl(io, &stdin_open);
        if (stdin_open && fds[2].revents) {
            char buf[16384];
            ssize_t n = read(io->in_fd, buf, sizeof(buf));
            if (n > 0) {
                if (vmctl_exec_write(io->ep, buf, (size_t)n, &err) < 0) {
                    vmctl_error_free(err);
                    err = NULL;
                    stdin_open = false;
                }
            } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                vmctl_exec_close_stdin(io->ep, &err); /* the writer is gone: end of input */
                vmctl_error_free(err);
                err = NULL;
                stdin_open = false;
            }
        }
    }
    vmctl_exec_status status = {.exit_code = 255};
    if (vmctl_exec_wait(io->ep, &status, &err) < 0 && err) {
        shim_log("process '%s': %s", p->exec_id, vmctl_error_get_message(err));
        status.exit_code = 255;
    }
    vmctl_error_free(err);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    /* closing the FIFOs first: containerd's copy of the output ends before the exit is seen */
    if (io->out_fd >= 0)
        close(io->out_fd);
    if (io->err_fd >= 0)
        close(io->err_fd);
    io->out_fd = io->err_fd = -1;
    pthread_mutex_lock(&shim_lock);
    while (!p->start_published) /* Start publishes first: start before exit */
        pthread_cond_wait(&shim_cond, &shim_lock);
    pthread_mutex_unlock(&shim_lock);
    pbw ev = {0};
    pbw_str_field(&ev, 1, io->t->id);
    pbw_str_field(&ev, 2, *p->exec_id ? p->exec_id : io->t->id);
    pbw_varint_field(&ev, 3, (uint32_t)io->t->vm_pid);
    pbw_varint_field(&ev, 4, (uint32_t)status.exit_code);
    pbw_timestamp_field(&ev, 5, &now);
    shim_publish("/tasks/exit", "TaskExit", &ev);
    pbw_free(&ev);
    pthread_mutex_lock(&shim_lock);
    p->status = ST_STOPPED;
    p->exit_status = (uint32_t)status.exit_code;
    p->exited_at = now;
    p->io_done = true;
    /* the container ends with its init process (as runc's PID namespace does): its execs go */
    for (shim_proc *q = io->t->procs; !*p->exec_id && q; q = q->next)
        if (q != p && q->status == ST_RUNNING)
            shim_proc_ctl(q, 'k', SIGKILL, 0);
    pthread_cond_broadcast(&shim_cond);
    pthread_mutex_unlock(&shim_lock);
    io_close(io);
    return NULL;
}

int shim_proc_run(shim_task *t, shim_proc *p, shim_status *st)
{
    io_run *io = calloc(1, sizeof(*io));
    if (!io)
        return shim_fail(st, GRPC_INTERNAL, "out of memory");
    io->t = t;
    io->p = p;
    io->in_fd = io->out_fd = io->err_fd = -1;
    vmctl_error *err = NULL;
    int r = shim_ctx(&io->ctx, &err);
    if (r >= 0)
        r = vmctl_exec_session_open(io->ctx, t->vm, &io->s, &err);
    if (r < 0) {
        shim_fail(st, GRPC_INTERNAL, "cannot reach the agent of vm '%s': %s", t->vm,
                  err ? vmctl_error_get_message(err) : strerror(-r));
        vmctl_error_free(err);
        io_close(io);
        return -1;
    }
    if (p->stdin_path && *p->stdin_path &&
        (io->in_fd = open(p->stdin_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
        shim_log("cannot open '%s': %s", p->stdin_path, strerror(errno));
    io->out_fd = open_out(p->stdout_path);
    if (!p->terminal)
        io->err_fd = open_out(p->stderr_path);
    vmctl_exec_opts opts = {
        .argv = p->spec.argv,
        .env = p->spec.env,
        .cwd = p->spec.cwd,
        .user = p->spec.user,
        .via = VMCTL_EXEC_VIA_AGENT,
        .tty = p->terminal,
        .root = SHIM_GUEST_ROOT,
    };
    vmctl_exec_io xio = {
        .on_stdout = on_stdout,
        .on_stderr = on_stderr,
        .userdata = io,
        .stdin_open = io->in_fd >= 0,
        .signal_fd = -1,
        .resize_fd = -1,
    };
    if ((r = vmctl_exec_start(io->s, &opts, &xio, &io->ep, &err)) < 0) {
        shim_fail(st, GRPC_FAILED_PRECONDITION, "cannot start '%s' in vm '%s': %s", p->spec.argv[0],
                  t->vm, err ? vmctl_error_get_message(err) : strerror(-r));
        vmctl_error_free(err);
        io_close(io);
        return -1;
    }
    if (pipe2(p->ctl, O_CLOEXEC | O_NONBLOCK) < 0 ||
        pthread_create(&p->thread, NULL, io_thread, io) != 0) {
        vmctl_exec_signal(io->ep, SIGKILL, NULL);
        io_close(io);
        return shim_fail(st, GRPC_INTERNAL, "cannot start the process's thread");
    }
    pthread_detach(p->thread);
    p->io_started = true;
    p->status = ST_RUNNING;
    return 0;
}

int shim_proc_ctl(shim_proc *p, char op, uint32_t a, uint32_t b)
{
    if (!p->io_started || p->io_done)
        return -ESRCH;
    char buf[9] = {op};
    memcpy(buf + 1, &a, 4);
    memcpy(buf + 5, &b, 4);
    return write(p->ctl[1], buf, sizeof(buf)) == (ssize_t)sizeof(buf) ? 0 : -errno;
}

void shim_proc_free(shim_proc *p)
{
    if (!p)
        return;
    free(p->exec_id);
    free(p->stdin_path);
    free(p->stdout_path);
    free(p->stderr_path);
    shim_spec_clear(&p->spec);
    /* the control pipe stays open while the thread may still read it: closed by the thread's
     * end only when it is done */
    if (p->io_done || !p->io_started) {
        if (p->io_started) {
            close(p->ctl[0]);
            close(p->ctl[1]);
        }
        free(p);
    }
}
