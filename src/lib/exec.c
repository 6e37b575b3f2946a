/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "arg-check.h"
#include "agent-client.h"
#include "agent-proto.h"
#include "backend.h"
#include "error.h"
#include "ssh.h"
#include "tar.h"
#include "io-pause.h"
#include "util/util.h"
#include "vm-internal.h"

#define AGENT_CONNECT_TIMEOUT 10.0
/* Time allowed beyond the command's own timeout for the agent to report it. */
#define EXEC_GRACE 10.0
/* A ping unanswered this long makes a session ask QEMU about an I/O-error pause. */
#define IO_PAUSE_PING_USEC (1500 * 1000ull)

static int unavailable(vmctl_error **reterr, const char *vm, int errnum, const char *reason,
                       const char *remediation)
{
    int r = err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, errnum, "cannot run commands in vm '%s': %s",
                     vm, reason);
    err_detail(reterr, "vm", "%s", vm);
    err_detail(reterr, "reason", "%s", reason);
    err_detail(reterr, "remediation", "%s", remediation);
    err_help(reterr, "%s", remediation);
    return r;
}

static int check_env(char *const *envv, vmctl_error **reterr)
{
    for (char *const *e = envv; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq || !env_name_is_valid(*e, (size_t)(eq - *e))) {
            return err_invalid_field(reterr, "env", *e,
                                     "K=V with K matching [A-Za-z_][A-Za-z0-9_]*",
                                     "invalid env entry '%s'", *e);
        }
    }
    return 0;
}

/* A terminal comes from the agent only (`vmctl ssh NAME` is the SSH way to one). */
static int tty_over_ssh(const char *name, vmctl_error **reterr)
{
    int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                     "a command for vm '%s' cannot get a terminal over SSH here", name);
    err_detail(reterr, "field", "tty");
    err_help(reterr,
             "Use the guest agent (`vmctl exec --via agent -t`), or `vmctl ssh %s` for an "
             "SSH terminal.",
             name);
    return r;
}

/* The VM's own metadata (its name as the guest's hostname, its create --env for every later
 * command) for an agent that does not have it yet: pushed when the VM becomes ready (at_ready),
 * and before the first request of a session when the agent's pong says it never got it (a VM
 * started without --wait, an agent that restarted). An agent too old to tell gets it at ready
 * only. A VM with a cloud-init seed has its hostname from there (local-hostname, or the user's
 * own user-data): only the env is pushed. */
int guest_sync_metadata(agent_conn *c, const vm_spec *spec, bool at_ready, uint64_t deadline,
                        vmctl_error **reterr)
{
    uint64_t caps = agent_conn_caps(c);
    if (!(caps & AGENT_CAP_METADATA) || agent_conn_metadata_applied(c) ||
        (!at_ready && !(caps & AGENT_CAP_META_STATE)))
        return 0;
    int r = agent_push_metadata(c, spec->seed ? NULL : spec->name, spec->env, NULL, NULL, NULL,
                                deadline, reterr);
    return r < 0 ? err_prefix(reterr, r, "cannot give vm '%s' its hostname and environment",
                              spec->name)
                 : 0;
}

struct vmctl_exec_session {
    agent_conn *conn;
    vmctl_ctx *ctx;
    char *name;
};

/* The agent is silent while the VM is paused: that is no reason to give up on it. */
static bool silence_expected(void *userdata)
{
    vmctl_exec_session *s = userdata;
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    cleanup_error vmctl_error *e = NULL;
    if (vm_load(s->ctx, s->name, &v, &spec, &e) < 0)
        return false;
    if (v->state == VMCTL_VM_PAUSED)
        return true;
    /* paused by the hypervisor itself (a full host disk): not expected to end by itself, and the
     * error should say so rather than blame the agent */
    cleanup_free char *cause = NULL;
    if (vm_io_paused(v, spec, &cause) > 0) {
        cleanup_free char *reason = str_printf("vm was paused by %s after a disk I/O error (%s)",
                                               vm_backend_title(spec), cause);
        cleanup_free char *help = vm_io_pause_help(s->name, v->dir, spec, cause);
        agent_conn_set_silence_reason(s->conn, reason, help);
    }
    return false;
}

/* exec::unavailable for a VM that its hypervisor paused after a disk I/O error. */
static int io_paused_error(vmctl_error **reterr, const char *name, const store_vm *v,
                           const vm_spec *spec, const char *cause)
{
    cleanup_free char *reason =
        str_printf("paused by %s after a disk I/O error (%s)", vm_backend_title(spec), cause);
    cleanup_free char *help = vm_io_pause_help(name, v->dir, spec, cause);
    return unavailable(reterr, name, EIO, reason ? reason : "paused after a disk I/O error",
                       help ? help : "Free space on the host, then `vmctl resume NAME`.");
}

/* VMCTL_AGENT_SILENCE_SECONDS: how long a silent agent is waited for (default 30, 0: forever). */
static uint64_t silence_usec(void)
{
    const char *e = getenv("VMCTL_AGENT_SILENCE_SECONDS");
    char *end = NULL;
    double v = e && *e ? strtod(e, &end) : -1;
    if (!e || !*e || *end || v < 0 || v > 86400.0 * 365)
        return AGENT_SILENCE_USEC;
    return (uint64_t)(v * 1e6);
}

struct vmctl_exec_proc {
    vmctl_exec_session *s;
    agent_proc *p;
    vmctl_exec_io io;
    uint64_t deadline;
};

int vm_agent_connect(const store_vm *v, const vm_spec *spec, uint32_t cid, uint64_t deadline,
                     uint64_t queue_usec, agent_conn **ret, vmctl_error **reterr)
{
    const backend_ops *be = backend_find(spec->backend, reterr);
    if (!be)
        return -EOPNOTSUPP;
    if (!be->agent_endpoint)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, EOPNOTSUPP,
                        "the %s backend has no guest agent transport", be->name);
    agent_endpoint ep;
    int r = be->agent_endpoint(spec, v->dir, cid, &ep, reterr);
    return r < 0 ? r : agent_connect_endpoint(&ep, deadline, queue_usec, ret, reterr);
}

/* Connect to the VM's agent and see it answer: exec::unavailable otherwise. */
int vmctl_exec_session_open(vmctl_ctx *ctx, const char *name, vmctl_exec_session **ret,
                            vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    cleanup_store_vm store_vm *v = NULL;
    cleanup_vm_spec vm_spec *spec = NULL;
    int r = vm_load(ctx, name, &v, &spec, reterr);
    if (r < 0)
        return r;
    if (v->state != VMCTL_VM_RUNNING)
        return vm_not_running(reterr, name, v->state);
    if (!spec->agent)
        return unavailable(reterr, name, EOPNOTSUPP, "image without vmctl-agent",
                           "Use the default guest, or an image that runs vmctl-agent.");

    uint64_t deadline = now_usec() + (uint64_t)(AGENT_CONNECT_TIMEOUT * 1e6);
    cleanup_agent agent_conn *conn = NULL;
    r = vm_agent_connect(v, spec, v->cid, deadline, AGENT_PORT_QUEUE_USEC, &conn, reterr);
    if (r >= 0) {
        /* no pong soon: ask QEMU whether it paused the VM after a disk I/O error (then the agent
         * cannot answer and waiting the whole deadline is pointless) */
        uint64_t soon = now_usec() + IO_PAUSE_PING_USEC;
        r = agent_ping(conn, soon < deadline ? soon : deadline, reterr);
        cleanup_free char *cause = NULL;
        if (r == -ETIMEDOUT && vm_io_paused(v, spec, &cause) > 0) {
            if (reterr) {
                vmctl_error_free(*reterr);
                *reterr = NULL;
            }
            return io_paused_error(reterr, name, v, spec, cause);
        }
        if (r == -ETIMEDOUT && now_usec() < deadline) {
            if (reterr) {
                vmctl_error_free(*reterr);
                *reterr = NULL;
            }
            r = agent_ping(conn, deadline, reterr);
        }
    }
    if (r >= 0 && (r = guest_sync_metadata(conn, spec, false, deadline, reterr)) < 0)
        return r;
    if (r < 0) {
        cleanup_error vmctl_error *cause = reterr ? *reterr : NULL;
        if (reterr)
            *reterr = NULL;
        r = unavailable(reterr, name, r == -ETIMEDOUT ? ETIMEDOUT : -r, "agent not answering",
                        "Wait for the VM with `vmctl start NAME --wait`, or look at `vmctl logs "
                        "NAME`.");
        cleanup_free char *why = cause ? err_describe(cause) : NULL;
        if (why)
            err_note(reterr, "%s", why);
        return r;
    }
    vmctl_exec_session *s = calloc(1, sizeof(*s));
    if (!s || !(s->name = strdup(name))) {
        free(s);
        return -ENOMEM;
    }
    s->conn = TAKE_PTR(conn);
    s->ctx = ctx;
    agent_conn_set_silence(s->conn, silence_usec(), silence_expected, s);
    if (agent_conn_set_label(s->conn, name) < 0) {
        vmctl_exec_session_close(s);
        return -ENOMEM;
    }
    *ret = s;
    return 0;
}

void vmctl_exec_session_close(vmctl_exec_session *s)
{
    if (!s)
        return;
    agent_close(s->conn);
    free(s->name);
    free(s);
}

int vmctl_exec_session_fd(vmctl_exec_session *s)
{
    VMCTL_ARG_CHECK_RET(s, -EINVAL);
    return agent_conn_fd(s->conn);
}

int vmctl_exec_session_dispatch(vmctl_exec_session *s, int timeout_ms, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(s, reterr);
    uint64_t until = timeout_ms < 0 ? UINT64_MAX : now_usec() + (uint64_t)timeout_ms * 1000;
    int r = agent_pump(s->conn, until, reterr);
    /* then every frame already there: one read can bring several, and those left in the
     * buffer would not make the fd readable again (a caller polling it would wait forever for
     * an EXIT that came) */
    while (r == 1)
        r = agent_pump(s->conn, 0, reterr);
    return r < 0 ? r : 0;
}

static int io_fn(void *userdata, int stream, const void *data, size_t len)
{
    vmctl_exec_proc *xp = userdata;
    if (stream == 1)
        return xp->io.on_stdout ? xp->io.on_stdout(data, len, xp->io.userdata) : 0;
    return xp->io.on_stderr ? xp->io.on_stderr(data, len, xp->io.userdata) : 0;
}

static uint64_t exec_deadline(const vmctl_exec_opts *opts)
{
    /* Past 10^9 s (or not finite) the microseconds overflow: no deadline then. */
    return opts->timeout_sec > 0 && opts->timeout_sec < 1e9
               ? now_usec() + (uint64_t)((opts->timeout_sec + EXEC_GRACE) * 1e6)
               : UINT64_MAX;
}

int vmctl_exec_start(vmctl_exec_session *s, const vmctl_exec_opts *opts, const vmctl_exec_io *io,
                     vmctl_exec_proc **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(s, reterr);
    VMCTL_ARG_CHECK(opts, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    if (!opts || !opts->argv || !opts->argv[0])
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "no command given to run");
    int r = check_env(opts->env, reterr);
    if (r < 0)
        return r;
    vmctl_exec_proc *xp = calloc(1, sizeof(*xp));
    if (!xp)
        return -ENOMEM;
    xp->s = s;
    if (io)
        xp->io = *io;
    xp->deadline = exec_deadline(opts);
    r = agent_proc_exec(s->conn, opts, xp->io.stdin_open, io_fn, xp, xp->deadline, &xp->p, reterr);
    if (r < 0) {
        free(xp);
        return err_prefix(reterr, r, "while running '%s' in vm '%s'", opts->argv[0], s->name);
    }
    *ret = xp;
    return 0;
}

int vmctl_exec_write(vmctl_exec_proc *p, const void *data, size_t len, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(p, reterr);
    VMCTL_ARG_CHECK(data || !len, reterr);
    return agent_proc_write(p->p, data, len, p->deadline, reterr);
}

int vmctl_exec_close_stdin(vmctl_exec_proc *p, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(p, reterr);
    return agent_proc_close_stdin(p->p, p->deadline, reterr);
}

int vmctl_exec_signal(vmctl_exec_proc *p, int sig, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(p, reterr);
    return agent_proc_signal(p->p, sig, UINT64_MAX, reterr);
}

int vmctl_exec_resize(vmctl_exec_proc *p, unsigned rows, unsigned cols, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(p, reterr);
    return agent_proc_resize(p->p, rows, cols, UINT64_MAX, reterr);
}

bool vmctl_exec_done(const vmctl_exec_proc *p)
{
    VMCTL_ARG_CHECK_RET(p, true);
    return agent_proc_done(p->p);
}

int vmctl_exec_wait(vmctl_exec_proc *p, vmctl_exec_status *status, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(p, reterr);
    int r = agent_proc_wait(p->p, p->deadline, status, reterr);
    return r < 0 ? err_prefix(reterr, r, "in vm '%s'", p->s->name) : 0;
}

void vmctl_exec_proc_free(vmctl_exec_proc *p)
{
    if (!p)
        return;
    agent_proc_free(p->p);
    free(p);
}

static inline void exec_proc_freep(vmctl_exec_proc **p)
{
    vmctl_exec_proc_free(*p);
}
static inline void exec_session_closep(vmctl_exec_session **s)
{
    vmctl_exec_session_close(*s);
}
#define cleanup_exec_proc    __attribute__((cleanup(exec_proc_freep)))
#define cleanup_exec_session __attribute__((cleanup(exec_session_closep)))

/* Deliver every frame already received or waiting in the socket, without blocking (poll() does
 * not see frames the connection has buffered). */
static int pump_ready(agent_conn *conn, agent_proc *p, vmctl_error **reterr)
{
    int r;
    while ((r = agent_pump(conn, 0, reterr)) > 0 && !agent_proc_done(p))
        ;
    return r < 0 ? r : 0;
}

/* Drive one command to its end: deliver its output as it arrives, feed fd (-1: none) into its
 * stdin until end of file (then close it), and forward the signals io->on_signal reports. */
static int stream_loop(agent_conn *conn, agent_proc *p, int fd, const vmctl_exec_io *io,
                       uint64_t deadline, vmctl_error **reterr)
{
    cleanup_free uint8_t *buf = fd >= 0 ? malloc(AGENT_STDIN_CHUNK) : NULL;
    if (fd >= 0 && !buf)
        return -ENOMEM;
    bool in_open = fd >= 0, signals = io && io->on_signal && io->signal_fd >= 0;
    bool resizes = io && io->on_resize && io->resize_fd >= 0;
    for (;;) {
        int r = pump_ready(conn, p, reterr);
        if (r < 0 && agent_proc_done(p) && reterr) {
            vmctl_error_free(*reterr); /* agent_proc_wait reports the command's own error */
            *reterr = NULL;
            return 0;
        }
        if (r < 0)
            return r;
        uint64_t now = now_usec();
        if (agent_proc_done(p) || now >= deadline)
            return 0; /* agent_proc_wait reports the end (or the timeout) */
        struct pollfd pfd[4] = {{.fd = agent_conn_fd(conn), .events = POLLIN}};
        int n = 1, in_k = -1, sig_k = -1, rs_k = -1;
        if (in_open) {
            in_k = n;
            pfd[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
        }
        if (signals) {
            sig_k = n;
            pfd[n++] = (struct pollfd){.fd = io->signal_fd, .events = POLLIN};
        }
        if (resizes) {
            rs_k = n;
            pfd[n++] = (struct pollfd){.fd = io->resize_fd, .events = POLLIN};
        }
        /* wake at least every second: the connection's keepalive runs from agent_pump */
        uint64_t wake = deadline - now < 1000000 ? deadline - now : 1000000;
        int k = poll(pfd, (nfds_t)n, (int)((wake + 999) / 1000));
        if (k < 0 && errno != EINTR)
            return err_make(reterr, VMCTL_E_IO, errno, "cannot wait for the command's output");
        if (k <= 0)
            continue;
        if (sig_k >= 0 && pfd[sig_k].revents) {
            int sig = io->on_signal(io->signal_fd, io->userdata);
            if (sig < 0)
                return sig;
            if (sig > 0 && (r = agent_proc_signal(p, sig, deadline, reterr)) < 0)
                return r;
        }
        if (rs_k >= 0 && pfd[rs_k].revents) {
            unsigned rows = 0, cols = 0;
            int k2 = io->on_resize(io->resize_fd, &rows, &cols, io->userdata);
            if (k2 < 0)
                return k2;
            if (k2 > 0 && (r = agent_proc_resize(p, rows, cols, deadline, reterr)) < 0)
                return r;
        }
        if (in_k >= 0 && pfd[in_k].revents) {
            ssize_t got = read(fd, buf, AGENT_STDIN_CHUNK);
            if (got < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (got < 0)
                return err_make(reterr, VMCTL_E_IO, errno, "cannot read the input");
            if (got == 0) {
                in_open = false;
                if ((r = agent_proc_close_stdin(p, deadline, reterr)) < 0)
                    return r;
                continue;
            }
            r = agent_proc_write(p, buf, (size_t)got, deadline, reterr);
            if (r == -EPIPE)
                in_open = false; /* the command is done: the rest of the input is not wanted */
            else if (r < 0)
                return r;
        }
    }
}

int vmctl_exec_stream(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                      const vmctl_exec_io *io, int stdin_fd, vmctl_exec_status *status,
                      vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(opts, reterr);
    if (!opts || !opts->argv || !opts->argv[0])
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "no command given to run");
    int r = check_env(opts->env, reterr);
    if (r < 0)
        return r;
    if (opts->tty && opts->via == VMCTL_EXEC_VIA_SSH)
        return tty_over_ssh(name, reterr);
    cleanup_exec_session vmctl_exec_session *s = NULL;
    r = opts->via == VMCTL_EXEC_VIA_SSH ? -EAGAIN : vmctl_exec_session_open(ctx, name, &s, reterr);
    if (r < 0 && !opts->tty && !opts->root &&
        ssh_exec_use_ssh(ctx, name, opts->via, reterr)) /* ssh-vm.c */
        return vmctl_ssh_exec_stream(ctx, name, opts, io, stdin_fd, status, reterr);
    if (r < 0)
        return r;
    vmctl_exec_io io2 = io ? *io : (vmctl_exec_io){0};
    io2.stdin_open = stdin_fd >= 0;
    cleanup_exec_proc vmctl_exec_proc *p = NULL;
    r = vmctl_exec_start(s, opts, &io2, &p, reterr);
    if (r < 0)
        return r;
    if (io && io->on_started)
        io->on_started(io->userdata);
    r = stream_loop(s->conn, p->p, stdin_fd, io, p->deadline, reterr);
    vmctl_exec_status st = {0};
    if (r >= 0)
        r = agent_proc_wait(p->p, p->deadline, &st, reterr);
    if (status)
        *status = st;
    if (r < 0)
        return err_prefix(reterr, r, "while running '%s' in vm '%s'", opts->argv[0], name);
    return 0;
}

int vmctl_exec(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
               vmctl_exec_result *result, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(opts, reterr);
    VMCTL_ARG_CHECK(result, reterr);
    if (!opts || !opts->argv || !opts->argv[0] || !result)
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "no command given to run");
    memset(result, 0, sizeof(*result));
    int r = check_env(opts->env, reterr);
    if (r < 0)
        return r;
    if (opts->tty && opts->via == VMCTL_EXEC_VIA_SSH)
        return tty_over_ssh(name, reterr);
    cleanup_exec_session vmctl_exec_session *s = NULL;
    r = opts->via == VMCTL_EXEC_VIA_SSH ? -EAGAIN : vmctl_exec_session_open(ctx, name, &s, reterr);
    if (r < 0 && !opts->tty && !opts->root &&
        ssh_exec_use_ssh(ctx, name, opts->via, reterr)) /* ssh-vm.c */
        return vmctl_ssh_exec(ctx, name, opts, result, reterr);
    if (r < 0)
        return r;
    r = agent_exec(s->conn, opts, result, exec_deadline(opts), reterr);
    if (r < 0)
        return err_prefix(reterr, r, "while running '%s' in vm '%s'", opts->argv[0], name);
    return 0;
}

/* --- info and metadata --- */

int vmctl_guest_info_get(vmctl_ctx *ctx, const char *name, vmctl_guest_info *ret,
                         vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    cleanup_exec_session vmctl_exec_session *s = NULL;
    int r = vmctl_exec_session_open(ctx, name, &s, reterr);
    if (r < 0)
        return r;
    agent_guest_info in;
    r = agent_get_info(s->conn, now_usec() + 10 * 1000000ull, &in, reterr);
    if (r < 0)
        return r;
    *ret = (vmctl_guest_info){.uptime_sec = (double)in.uptime_ms / 1000.0,
                              .mem_total = in.mem_total,
                              .mem_available = in.mem_available,
                              .load = {in.load[0], in.load[1], in.load[2]},
                              .running = in.running};
    return 0;
}

int vmctl_guest_push_metadata(vmctl_ctx *ctx, const char *name, const char *hostname,
                              char *const *env, char *const *secret_names,
                              const void *const *secret_values, const size_t *secret_lens,
                              vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(!secret_names || (secret_values && secret_lens), reterr);
    int r = check_env(env, reterr);
    if (r < 0)
        return r;
    cleanup_exec_session vmctl_exec_session *s = NULL;
    r = vmctl_exec_session_open(ctx, name, &s, reterr);
    if (r < 0)
        return r;
    return agent_push_metadata(s->conn, hostname, env, secret_names, secret_values, secret_lens,
                               now_usec() + 30 * 1000000ull, reterr);
}

void vmctl_exec_result_clear(vmctl_exec_result *result)
{
    if (!result)
        return;
    free(result->out);
    free(result->err);
    memset(result, 0, sizeof(*result));
}

/* --- cp --- */

extern char **environ;

static int host_tar(const char *const *argv, int pipe_end, bool tar_reads, pid_t *pid,
                    vmctl_error **reterr)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pipe_end, tar_reads ? 0 : 1);
    int r = posix_spawnp(pid, "tar", &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (r != 0)
        return err_make(reterr, VMCTL_E_IO, r, "cannot run tar on the host");
    return 0;
}

static int host_tar_wait(pid_t pid, vmctl_error **reterr)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return err_make(reterr, VMCTL_E_IO, errno, "cannot wait for tar on the host");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return err_make(reterr, VMCTL_E_IO, EIO, "tar on the host failed (status %d)",
                        WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    return 0;
}

static const char *base_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    const char *s = path + n;
    while (s > path && s[-1] != '/')
        s--;
    return s;
}

static int guest_status_error(const char *what, const vmctl_exec_status *st, vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_AGENT_FAILED, EIO, "%s in the guest failed (status %d)", what,
                    st->exit_code);
}

/* The start of a command's stderr, for messages. */
struct errbuf {
    char text[1024];
    size_t len;
};

static int errbuf_fn(void *userdata, int stream, const void *data, size_t len)
{
    struct errbuf *eb = userdata;
    if (stream == 2 && eb->len < sizeof(eb->text)) {
        size_t k = len < sizeof(eb->text) - eb->len ? len : sizeof(eb->text) - eb->len;
        memcpy(eb->text + eb->len, data, k);
        eb->len += k;
    }
    return 0;
}

static int cp_file_to(agent_conn *conn, int fd, const struct stat *st, const char *guest,
                      vmctl_error **reterr)
{
    agent_proc *p = NULL;
    int r = agent_proc_put(conn, guest, st->st_mode & 07777, st->st_mtim.tv_sec,
                           (uint32_t)st->st_mtim.tv_nsec, UINT64_MAX, &p, reterr);
    if (r < 0)
        return r;
    r = stream_loop(conn, p, fd, NULL, UINT64_MAX, reterr);
    if (r >= 0 || agent_proc_done(p))
        r = agent_proc_wait(p, UINT64_MAX, NULL, reterr);
    if (r < 0 && agent_proc_errno(p) == EISDIR)
        r = -EISDIR;
    agent_proc_free(p);
    return r;
}

int vmctl_cp_to_vm(vmctl_ctx *ctx, const char *name, const char *local_path, const char *guest_path,
                   vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(local_path, reterr);
    VMCTL_ARG_CHECK(guest_path, reterr);
    if (!guest_path || guest_path[0] != '/')
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "the guest path '%s' is not absolute", guest_path ? guest_path : "");
    /* O_NONBLOCK: a FIFO or a device named by mistake must not hang the open */
    cleanup_close int fd = open(local_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int r = err_make(reterr, VMCTL_E_IO, errno, "cannot open '%s'", local_path);
        err_detail(reterr, "path", "%s", local_path);
        return r;
    }
    cleanup_exec_session vmctl_exec_session *s = NULL;
    int r = vmctl_exec_session_open(ctx, name, &s, reterr);
    if (r < 0)
        return r;
    if (S_ISREG(st.st_mode)) {
        vmctl_error *e = NULL;
        r = cp_file_to(s->conn, fd, &st, guest_path, &e);
        if (r == -EISDIR) { /* into an existing directory, under its own name */
            vmctl_error_free(e);
            e = NULL;
            if (lseek(fd, 0, SEEK_SET) < 0)
                return err_make(reterr, VMCTL_E_IO, errno, "cannot rewind '%s'", local_path);
            cleanup_free char *dest = str_printf(
                "%s%s%s", guest_path, guest_path[strlen(guest_path) - 1] == '/' ? "" : "/",
                base_name(local_path));
            if (!dest)
                return -ENOMEM;
            r = cp_file_to(s->conn, fd, &st, dest, &e);
        }
        if (r < 0 && reterr)
            *reterr = e;
        else
            vmctl_error_free(e);
        return r < 0 ? err_prefix(reterr, r, "copying '%s' to %s:%s", local_path, name, guest_path)
                     : 0;
    }
    if (!S_ISDIR(st.st_mode))
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "'%s' is neither a regular file nor a directory", local_path);
    /* a directory: tar on both sides */
    char *const guest_argv[] = {"sh",
                                "-c",
                                "d=$1; if [ -d \"$d\" ]; then d=\"$d/$2\"; fi; "
                                "mkdir -p \"$d\" && cd \"$d\" && exec tar -xf -",
                                "sh",
                                (char *)guest_path,
                                (char *)base_name(local_path),
                                NULL};
    vmctl_exec_opts opts = {.argv = guest_argv};
    struct errbuf eb = {0};
    agent_proc *p = NULL;
    r = agent_proc_exec(s->conn, &opts, true, errbuf_fn, &eb, UINT64_MAX, &p, reterr);
    if (r < 0)
        return r;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        agent_proc_free(p);
        return -errno;
    }
    const char *tar_argv[] = {"tar", "-C", local_path, "-cf", "-", ".", NULL};
    pid_t pid = 0;
    r = host_tar(tar_argv, pfd[1], false, &pid, reterr);
    close(pfd[1]);
    if (r >= 0) {
        r = stream_loop(s->conn, p, pfd[0], NULL, UINT64_MAX, reterr);
        close(pfd[0]);
        int r2 = host_tar_wait(pid, r < 0 ? NULL : reterr);
        vmctl_exec_status gst = {0};
        if (r >= 0)
            r = agent_proc_wait(p, UINT64_MAX, &gst, reterr);
        if (r >= 0 && r2 < 0)
            r = r2;
        if (r >= 0 && gst.exit_code != 0) {
            r = guest_status_error("tar -x", &gst, reterr);
            if (eb.len)
                err_note(reterr, "%.*s", (int)eb.len, eb.text);
        }
    } else {
        close(pfd[0]);
    }
    agent_proc_free(p);
    return r;
}

struct get_sink {
    int fd;
};

static int sink_fn(void *userdata, int stream, const void *data, size_t len)
{
    struct get_sink *g = userdata;
    if (stream != 1)
        return 0;
    const uint8_t *d = data;
    while (len > 0) {
        ssize_t w = write(g->fd, d, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        d += w;
        len -= (size_t)w;
    }
    return 0;
}

/* The guest's tar stream, extracted in-process (tar.c): nothing the guest sends is followed. */
struct tar_sink {
    tar_extract *t;
    vmctl_error *err;
    int rc;
};

static int tar_sink_fn(void *userdata, int stream, const void *data, size_t len)
{
    struct tar_sink *ts = userdata;
    if (stream != 1 || ts->rc < 0)
        return 0;
    ts->rc = tar_extract_feed(ts->t, data, len, &ts->err);
    return ts->rc < 0 ? ts->rc : 0;
}

/* "", "." and "..": no name to copy under (the guest path is "/" or ends in a dot). */
static bool plain_name(const char *s)
{
    return *s && !streq(s, ".") && !streq(s, "..") && !strchr(s, '/');
}

/* A directory: `tar -c` in the guest, extracted here by tar.c beneath the destination's fd. The
 * destination is DST itself, or DST/<name> when DST is a directory; a symbolic link in its
 * place is replaced by a directory. */
static int cp_dir_from(agent_conn *conn, const char *name, const char *guest_path,
                       const char *local_path, bool into_dir, const char *dest,
                       vmctl_error **reterr)
{
    cleanup_close int parent = -1, dfd = -1;
    const char *base = base_name(guest_path);
    if (into_dir && !plain_name(base)) {
        /* `cp vm:/ DIR`: into DIR itself */
        dfd = open(local_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            return err_make(reterr, VMCTL_E_IO, errno, "cannot open '%s'", local_path);
    } else {
        /* DST's own path is the user's and followed; below it nothing is */
        cleanup_free char *pdir = NULL;
        const char *leaf;
        if (into_dir) {
            pdir = strdup(local_path);
            leaf = base;
        } else {
            const char *b = base_name(local_path);
            if (!plain_name(b))
                return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                                "cannot copy a directory to '%s': name a directory", local_path);
            pdir = b == local_path ? strdup(".") : strndup(local_path, (size_t)(b - local_path));
            leaf = b;
        }
        if (!pdir)
            return -ENOMEM;
        parent = open(pdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (parent < 0)
            return err_make(reterr, VMCTL_E_IO, errno, "cannot open '%s'", pdir);
        cleanup_free char *leafdup = strdup(leaf);
        if (!leafdup)
            return -ENOMEM;
        size_t n = strlen(leafdup);
        while (n > 1 && leafdup[n - 1] == '/')
            leafdup[--n] = 0;
        int r = tar_dest_dir(parent, leafdup, dest, &dfd, reterr);
        if (r < 0)
            return r;
    }
    cleanup_tar_extract tar_extract *t = NULL;
    int r = tar_extract_new(dfd, dest, &t, reterr);
    if (r < 0)
        return r;
    char *const guest_argv[] = {"tar", "-cf", "-", "-C", (char *)guest_path, ".", NULL};
    vmctl_exec_opts opts = {.argv = guest_argv};
    struct tar_sink ts = {.t = t};
    vmctl_exec_status gst = {0};
    agent_proc *p = NULL;
    r = agent_proc_exec(conn, &opts, false, tar_sink_fn, &ts, UINT64_MAX, &p, reterr);
    if (r < 0)
        return r;
    vmctl_error *werr = NULL;
    bool killed = false;
    while (!agent_proc_done(p)) {
        if (ts.rc < 0 && !killed) { /* the extraction failed: stop the guest's tar */
            killed = true;
            (void)agent_proc_signal(p, SIGKILL, now_usec() + 5000000ull, NULL);
        }
        if (agent_pump(conn, UINT64_MAX, NULL) < 0)
            break;
    }
    r = agent_proc_wait(p, UINT64_MAX, &gst, &werr);
    agent_proc_free(p);
    /* the directories' modes are set, and a truncated archive is found, even after a failure */
    vmctl_error *ferr = NULL;
    int rf = ts.rc < 0 ? ts.rc : tar_extract_finish(t, &ferr);
    if (ts.rc < 0) {
        (void)tar_extract_finish(t, NULL);
        vmctl_error_free(werr);
        if (reterr)
            *reterr = ts.err;
        else
            vmctl_error_free(ts.err);
        return ts.rc;
    }
    if (r < 0) {
        vmctl_error_free(ferr);
        if (reterr)
            *reterr = werr;
        else
            vmctl_error_free(werr);
        return r;
    }
    if (gst.exit_code != 0) {
        vmctl_error_free(ferr);
        return guest_status_error("tar -c", &gst, reterr);
    }
    if (rf < 0) {
        if (reterr)
            *reterr = ferr;
        else
            vmctl_error_free(ferr);
        return err_prefix(reterr, rf, "copying %s:%s to '%s'", name, guest_path, local_path);
    }
    return 0;
}

static int cp_from_agent(agent_conn *conn, const char *name, const char *guest_path,
                         const char *local_path, vmctl_error **reterr);

int vmctl_cp_from_vm(vmctl_ctx *ctx, const char *name, const char *guest_path,
                     const char *local_path, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    VMCTL_ARG_CHECK(guest_path, reterr);
    VMCTL_ARG_CHECK(local_path, reterr);
    if (!guest_path || guest_path[0] != '/')
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "the guest path '%s' is not absolute", guest_path ? guest_path : "");
    cleanup_exec_session vmctl_exec_session *s = NULL;
    int r = vmctl_exec_session_open(ctx, name, &s, reterr);
    if (r < 0)
        return r;
    return cp_from_agent(s->conn, name, guest_path, local_path, reterr);
}

static int cp_from_agent(agent_conn *conn, const char *name, const char *guest_path,
                         const char *local_path, vmctl_error **reterr)
{
    if (!guest_path || guest_path[0] != '/')
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "the guest path '%s' is not absolute", guest_path ? guest_path : "");
    struct stat lst;
    bool into_dir = stat(local_path, &lst) == 0 && S_ISDIR(lst.st_mode);
    const char *gbase = base_name(guest_path);
    cleanup_free char *dest =
        into_dir && plain_name(gbase) ? str_printf("%s/%s", local_path, gbase) : strdup(local_path);
    if (!dest)
        return -ENOMEM;
    size_t dl = strlen(dest);
    while (dl > 1 && dest[dl - 1] == '/')
        dest[--dl] = 0;
    int r;

    /* a file: into a temporary next to the destination, renamed at the end (over whatever is
     * there: a symbolic link is replaced, never written through) */
    cleanup_free char *tmp = str_printf("%s.vmctl-XXXXXX", dest);
    if (!tmp)
        return -ENOMEM;
    cleanup_close int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        if (errno == EISDIR || errno == ENOTDIR || errno == ENOENT) {
            /* no place for a file (e.g. `cp vm:/ DIR`): only a directory can go there */
            vmctl_error *e = NULL;
            r = cp_dir_from(conn, name, guest_path, local_path, into_dir, dest, &e);
            if (r < 0 && reterr)
                *reterr = e;
            else
                vmctl_error_free(e);
            return r;
        }
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot create '%s'", dest);
        err_detail(reterr, "path", "%s", dest);
        return r;
    }
    struct get_sink sink = {.fd = fd};
    agent_proc *p = NULL;
    vmctl_error *e = NULL;
    r = agent_proc_get(conn, guest_path, sink_fn, &sink, UINT64_MAX, &p, &e);
    if (r >= 0)
        r = agent_proc_wait(p, UINT64_MAX, NULL, &e);
    bool is_dir = r < 0 && p && agent_proc_errno(p) == EISDIR;
    uint32_t mode = 0, nsec = 0;
    uint64_t size = 0;
    int64_t sec = 0;
    bool have = p && agent_proc_file_info(p, &mode, &size, &sec, &nsec);
    agent_proc_free(p);
    if (r >= 0 && !have)
        r = err_make(&e, VMCTL_E_AGENT_FAILED, EBADMSG, "the agent sent no FILE_INFO");
    if (r >= 0) {
        /* the permission bits only, less the umask: no setuid, setgid or sticky bit, and the
         * file belongs to the caller (no chown) */
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                                 {.tv_sec = sec, .tv_nsec = nsec < 1000000000u ? nsec : 0}};
        if (fchmod(fd, (mode & 0777) & ~tar_umask()) < 0 || futimens(fd, ts) < 0 ||
            rename(tmp, dest) < 0)
            r = err_make(&e, VMCTL_E_IO, errno, "cannot write '%s'", dest);
    }
    if (r >= 0 || !is_dir) {
        if (r < 0) {
            unlink(tmp);
            if (reterr)
                *reterr = e;
            else
                vmctl_error_free(e);
            return err_prefix(reterr, r, "copying %s:%s to '%s'", name, guest_path, local_path);
        }
        return 0;
    }
    vmctl_error_free(e);
    unlink(tmp);
    e = NULL;
    r = cp_dir_from(conn, name, guest_path, local_path, into_dir, dest, &e);
    if (r < 0 && reterr)
        *reterr = e;
    else
        vmctl_error_free(e);
    return r;
}
