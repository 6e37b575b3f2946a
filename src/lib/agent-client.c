/* SPDX-License-Identifier: MIT */
/* The requests of the agent protocol (docs/agent-protocol.md) on a session: exec (captured, or
 * streamed both ways), file copies, metadata, guest info, shutdown. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent-conn.h"
#include "error.h"
#include "util/util.h"

/* Append to a NUL-terminated growing buffer. */
static int append(char **buf, size_t *len, size_t *cap, const uint8_t *data, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 4096;
        while (*len + n + 1 > nc)
            nc *= 2;
        char *p = realloc(*buf, nc);
        if (!p)
            return -ENOMEM;
        *buf = p;
        *cap = nc;
    }
    if (n)
        memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

static int need_v2(agent_conn *c, uint64_t cap, const char *what, vmctl_error **reterr)
{
    if (c->caps & cap)
        return 0;
    return err_make(reterr, VMCTL_E_AGENT_FAILED, EOPNOTSUPP,
                    "the guest agent (protocol %u) does not support %s; update the agent in the "
                    "guest",
                    c->agent_version, what);
}

/* An agent without AGENT_CAP_TTY (older than exec -t): exec::unavailable, saying what to do. */
static int no_tty_error(agent_conn *c, vmctl_error **reterr)
{
    const char *vm = c->label ? c->label : "NAME";
    static const char reason[] = "the guest agent has no terminal support";
    cleanup_free char *fix = str_printf(
        "The VM's vmctl-agent is older than terminal support (protocol %u, capabilities 0x%llx): "
        "rebuild the default guest with `vmctl image build-default` (or update vmctl-agent in the "
        "image) and recreate the VM, or run the command without -t (`vmctl exec %s -i -- CMD`).",
        c->agent_version, (unsigned long long)c->caps, vm);
    int r = err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, EOPNOTSUPP,
                     "cannot give the command a terminal in vm '%s': %s", vm, reason);
    err_detail(reterr, "vm", "%s", vm);
    err_detail(reterr, "reason", "%s", reason);
    err_detail(reterr, "remediation", "%s", fix ? fix : "Update vmctl-agent in the guest.");
    err_help(reterr, "%s", fix ? fix : "Update vmctl-agent in the guest.");
    return r;
}

static uint32_t clamp_tty(unsigned v)
{
    return v > AGENT_TTY_MAX ? AGENT_TTY_MAX : v;
}

static uint32_t timeout_ms_of(double sec)
{
    if (sec <= 0)
        return 0;
    double ms = sec * 1000.0;
    if (ms >= (double)UINT32_MAX)
        return UINT32_MAX;
    uint32_t t = (uint32_t)ms;
    if ((double)t < ms)
        t++; /* round up: never kill earlier than asked */
    return t ? t : 1;
}

int agent_proc_exec(agent_conn *c, const vmctl_exec_opts *opts, bool stdin_open, agent_data_fn fn,
                    void *userdata, uint64_t deadline, agent_proc **ret, vmctl_error **reterr)
{
    if (!opts->argv || !opts->argv[0] || !opts->argv[0][0])
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "no command to run");
    int r = agent_ensure_sync(c, deadline, "agent exec", reterr);
    if (r < 0)
        return r;
    if (!(c->caps & AGENT_CAP_EXEC))
        return err_make(reterr, VMCTL_E_AGENT_FAILED, EOPNOTSUPP,
                        "the guest agent does not support exec");
    if (stdin_open && (r = need_v2(c, AGENT_CAP_STDIN_STREAM, "streamed input", reterr)) < 0)
        return r;
    bool busy = false;
    for (struct agent_proc *p = c->procs; p; p = p->next)
        busy |= !p->done;
    if (busy && (r = need_v2(c, AGENT_CAP_CONCURRENT, "several commands at once", reterr)) < 0)
        return r;
    const char *user = opts->user && *opts->user ? opts->user : NULL;
    if (user && (r = need_v2(c, AGENT_CAP_USER, "running commands as another user", reterr)) < 0)
        return r;
    if (opts->tty && !(c->caps & AGENT_CAP_TTY))
        return no_tty_error(c, reterr);
    const char *root = opts->root && *opts->root ? opts->root : NULL;
    if (root && root[0] != '/')
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "the root to run in must be an absolute guest path, not '%s'", root);
    if (root && !(c->caps & AGENT_CAP_ROOT))
        return err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, EOPNOTSUPP,
                        "the guest agent cannot run a command in another root (chroot)");
    agent_exec_args a = {
        .flags = (stdin_open ? AGENT_EXEC_STDIN_STREAM : 0) | (user ? AGENT_EXEC_USER : 0) |
                 (opts->tty ? AGENT_EXEC_TTY : 0) | (root ? AGENT_EXEC_ROOT : 0),
        .timeout_ms = timeout_ms_of(opts->timeout_sec),
        .argv = opts->argv,
        .env = opts->env,
        .cwd = opts->cwd,
        .stdin_data = opts->stdin_data,
        .stdin_len = opts->stdin_len,
        .user = user,
        .tty_rows = opts->tty ? clamp_tty(opts->tty_rows) : 0,
        .tty_cols = opts->tty ? clamp_tty(opts->tty_cols) : 0,
        .root = root,
    };
    size_t size = agent_exec_args_frame_size(&a);
    if (size > AGENT_MAX_FRAME) {
        r = err_make(reterr, VMCTL_E_CONFIG_INVALID, E2BIG,
                     "the command line, environment and input are too large for one "
                     "request (at most %u bytes)",
                     AGENT_MAX_PAYLOAD);
        err_help(reterr, "Stream large input (vmctl exec -i) or copy it with `vmctl cp`.");
        return r;
    }
    cleanup_free uint8_t *frame = malloc(size);
    if (!frame)
        return -ENOMEM;
    agent_proc *p = agent_proc_new(c, PROC_EXEC, opts->argv[0]);
    if (!p)
        return -ENOMEM;
    p->fn = fn;
    p->userdata = userdata;
    p->timeout_sec = opts->timeout_sec;
    p->stdin_closed = !stdin_open;
    int n = agent_encode_exec_args(frame, size, p->id, &a);
    if (n < 0) {
        agent_proc_free(p);
        if (n == AGENT_E_INVALID)
            return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                            "invalid exec request: environment entries must be K=V with K not "
                            "empty");
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "encoding EXEC: %s",
                        agent_proto_strerror(n));
    }
    c->last_rx = now_usec();
    r = agent_send_frame(c, frame, (size_t)n, deadline, "agent exec", reterr);
    if (r < 0) {
        agent_proc_free(p);
        return r;
    }
    *ret = p;
    return 0;
}

int agent_proc_put(agent_conn *c, const char *path, uint32_t mode, int64_t mtime_sec,
                   uint32_t mtime_nsec, uint64_t deadline, agent_proc **ret, vmctl_error **reterr)
{
    int r = agent_ensure_sync(c, deadline, "agent put", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_FILES, "file copies", reterr)) < 0)
        return r;
    agent_proc *p = agent_proc_new(c, PROC_PUT, path);
    if (!p)
        return -ENOMEM;
    uint8_t frame[AGENT_HDR_SIZE + 32 + 4096 + 8];
    agent_file_put fp = {
        .mode = mode & 07777, .mtime_sec = mtime_sec, .mtime_nsec = mtime_nsec, .path = path};
    int n = agent_encode_file_put(frame, sizeof(frame), p->id, &fp);
    if (n < 0) {
        agent_proc_free(p);
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "cannot copy to '%s': the guest path must be absolute", path);
    }
    c->last_rx = now_usec();
    r = agent_send_frame(c, frame, (size_t)n, deadline, "agent put", reterr);
    if (r < 0) {
        agent_proc_free(p);
        return r;
    }
    *ret = p;
    return 0;
}

int agent_proc_get(agent_conn *c, const char *path, agent_data_fn fn, void *userdata,
                   uint64_t deadline, agent_proc **ret, vmctl_error **reterr)
{
    int r = agent_ensure_sync(c, deadline, "agent get", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_FILES, "file copies", reterr)) < 0)
        return r;
    agent_proc *p = agent_proc_new(c, PROC_GET, path);
    if (!p)
        return -ENOMEM;
    p->fn = fn;
    p->userdata = userdata;
    uint8_t frame[AGENT_HDR_SIZE + 8 + 4096 + 8];
    int n = agent_encode_file_get(frame, sizeof(frame), p->id, path);
    if (n < 0) {
        agent_proc_free(p);
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "cannot copy from '%s': the guest path must be absolute", path);
    }
    c->last_rx = now_usec();
    r = agent_send_frame(c, frame, (size_t)n, deadline, "agent get", reterr);
    if (r < 0) {
        agent_proc_free(p);
        return r;
    }
    *ret = p;
    return 0;
}

static int pump_or_timeout(agent_conn *c, uint64_t deadline, const char *operation,
                           vmctl_error **reterr)
{
    uint64_t start = now_usec();
    int r = agent_pump(c, deadline, reterr);
    if (r == 0 && now_usec() >= deadline)
        return err_timeout(reterr, operation, span_seconds(start, deadline),
                           "no answer from the guest agent in time");
    return r < 0 ? r : 0;
}

int agent_proc_write(agent_proc *p, const void *data, size_t len, uint64_t deadline,
                     vmctl_error **reterr)
{
    const uint8_t *d = data;
    static __thread uint8_t *frame;
    if (!frame && !(frame = malloc(AGENT_HDR_SIZE + AGENT_STDIN_CHUNK)))
        return -ENOMEM;
    while (len > 0) {
        if (!p->c)
            return -EPIPE;
        if (p->done || p->stdin_closed)
            return -EPIPE;
        size_t k = len < AGENT_STDIN_CHUNK ? len : AGENT_STDIN_CHUNK;
        if (p->in_flight + k > AGENT_STDIN_WINDOW) {
            int r = pump_or_timeout(p->c, deadline, "agent stdin", reterr);
            if (r < 0)
                return r;
            continue;
        }
        int n = agent_encode_raw(frame, AGENT_HDR_SIZE + AGENT_STDIN_CHUNK, AGENT_MSG_STDIN, p->id,
                                 d, k);
        if (n < 0)
            return -EINVAL;
        int r = agent_send_frame(p->c, frame, (size_t)n, deadline, "agent stdin", reterr);
        if (r < 0)
            return r;
        p->in_flight += k;
        d += k;
        len -= k;
    }
    return 0;
}

int agent_proc_close_stdin(agent_proc *p, uint64_t deadline, vmctl_error **reterr)
{
    if (!p->c || p->stdin_closed || p->done) {
        p->stdin_closed = true;
        return 0;
    }
    uint8_t frame[AGENT_HDR_SIZE];
    int n = agent_encode_raw(frame, sizeof(frame), AGENT_MSG_STDIN, p->id, NULL, 0);
    p->stdin_closed = true;
    return agent_send_frame(p->c, frame, (size_t)n, deadline, "agent stdin", reterr);
}

int agent_proc_signal(agent_proc *p, int sig, uint64_t deadline, vmctl_error **reterr)
{
    if (!p->c || p->done)
        return 0;
    int r = need_v2(p->c, AGENT_CAP_SIGNAL, "signals", reterr);
    if (r < 0)
        return r;
    uint8_t frame[AGENT_HDR_SIZE + 4];
    int n = agent_encode_u32_msg(frame, sizeof(frame), AGENT_MSG_SIGNAL, p->id, (uint32_t)sig);
    return agent_send_frame(p->c, frame, (size_t)n, deadline, "agent signal", reterr);
}

int agent_proc_resize(agent_proc *p, unsigned rows, unsigned cols, uint64_t deadline,
                      vmctl_error **reterr)
{
    if (!p->c || p->done)
        return 0;
    if (!(p->c->caps & AGENT_CAP_TTY))
        return no_tty_error(p->c, reterr);
    uint8_t frame[AGENT_HDR_SIZE + 8];
    int n = agent_encode_resize(frame, sizeof(frame), p->id, clamp_tty(rows), clamp_tty(cols));
    return agent_send_frame(p->c, frame, (size_t)n, deadline, "agent resize", reterr);
}

int agent_proc_wait(agent_proc *p, uint64_t deadline, vmctl_exec_status *status,
                    vmctl_error **reterr)
{
    uint64_t start = now_usec();
    while (!p->done) {
        if (!p->c)
            return agent_closed_error(p->c, reterr);
        int r = agent_pump(p->c, deadline, reterr);
        if (r < 0 && !p->done)
            return r;
        if (r < 0) {
            if (reterr) {
                vmctl_error_free(*reterr);
                *reterr = NULL;
            }
            break;
        }
        if (r == 0 && !p->done)
            return err_timeout(reterr, p->kind == PROC_EXEC ? "agent exec" : "agent copy",
                               span_seconds(start, deadline),
                               "no answer from the guest agent within %.1f s",
                               span_seconds(start, deadline));
    }
    if (status)
        *status = p->st;
    if (p->rc < 0) {
        if (p->err) {
            if (reterr) {
                *reterr = p->err;
                p->err = NULL;
            }
        }
        return p->rc;
    }
    if (p->timed_out)
        return err_timeout(reterr, "exec", p->timeout_sec,
                           "'%s' did not finish within %g s and was killed in the guest", p->what,
                           p->timeout_sec);
    return 0;
}

/* --- the capture call (v1 and v2 agents) --- */

struct capture {
    vmctl_exec_result *res;
    size_t out_cap, err_cap;
};

static int capture_fn(void *userdata, int stream, const void *data, size_t len)
{
    struct capture *cap = userdata;
    if (stream == 1)
        return append(&cap->res->out, &cap->res->out_len, &cap->out_cap, data, len);
    return append(&cap->res->err, &cap->res->err_len, &cap->err_cap, data, len);
}

int agent_exec(agent_conn *c, const vmctl_exec_opts *opts, vmctl_exec_result *result,
               uint64_t deadline, vmctl_error **reterr)
{
    memset(result, 0, sizeof(*result));
    struct capture cap = {.res = result};
    if (append(&result->out, &result->out_len, &cap.out_cap, (const uint8_t *)"", 0) < 0 ||
        append(&result->err, &result->err_len, &cap.err_cap, (const uint8_t *)"", 0) < 0)
        return -ENOMEM;
    agent_proc *p = NULL;
    int r = agent_proc_exec(c, opts, false, capture_fn, &cap, deadline, &p, reterr);
    if (r < 0)
        return r;
    vmctl_exec_status st = {0};
    r = agent_proc_wait(p, deadline, &st, reterr);
    result->exit_code = st.exit_code;
    result->signal = st.signal;
    agent_proc_free(p);
    return r;
}

/* A request answered by one frame (ACK or INFO_REPLY). */
static int simple_request(agent_conn *c, agent_proc *p, uint8_t *frame, int n, uint64_t deadline,
                          const char *operation, vmctl_error **reterr)
{
    if (n < 0) {
        agent_proc_free(p);
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "invalid %s request: %s", operation,
                        agent_proto_strerror(n));
    }
    c->last_rx = now_usec();
    int r = agent_send_frame(c, frame, (size_t)n, deadline, operation, reterr);
    if (r >= 0)
        r = agent_proc_wait(p, deadline, NULL, reterr);
    return r;
}

int agent_get_info(agent_conn *c, uint64_t deadline, agent_guest_info *ret, vmctl_error **reterr)
{
    int r = agent_ensure_sync(c, deadline, "agent info", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_INFO, "info", reterr)) < 0)
        return r;
    agent_proc *p = agent_proc_new(c, PROC_SIMPLE, "info");
    if (!p)
        return -ENOMEM;
    uint8_t frame[AGENT_HDR_SIZE];
    int n = agent_encode_raw(frame, sizeof(frame), AGENT_MSG_INFO, p->id, NULL, 0);
    r = simple_request(c, p, frame, n, deadline, "agent info", reterr);
    agent_info in;
    if (r >= 0 && (p->reply_type != AGENT_MSG_INFO_REPLY ||
                   agent_decode_info_reply(p->reply, p->reply_len, &in) < 0))
        r = err_make(reterr, VMCTL_E_AGENT_FAILED, EBADMSG, "the agent sent a malformed INFO");
    if (r >= 0)
        *ret =
            (agent_guest_info){.uptime_ms = in.uptime_ms,
                               .mem_total = in.mem_total,
                               .mem_available = in.mem_available,
                               .load = {in.load[0] / 100.0, in.load[1] / 100.0, in.load[2] / 100.0},
                               .running = in.running};
    agent_proc_free(p);
    return r;
}

int agent_push_metadata(agent_conn *c, const char *hostname, char *const *env,
                        char *const *secret_names, const void *const *values,
                        const size_t *value_lens, uint64_t deadline, vmctl_error **reterr)
{
    int r = agent_ensure_sync(c, deadline, "agent metadata", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_METADATA, "metadata", reterr)) < 0)
        return r;
    agent_proc *p = agent_proc_new(c, PROC_SIMPLE, "metadata");
    if (!p)
        return -ENOMEM;
    cleanup_free uint8_t *frame = malloc(AGENT_MAX_FRAME);
    if (!frame) {
        agent_proc_free(p);
        return -ENOMEM;
    }
    int n = agent_encode_metadata(frame, AGENT_MAX_FRAME, p->id, hostname, env, secret_names,
                                  values, value_lens);
    r = simple_request(c, p, frame, n, deadline, "agent metadata", reterr);
    agent_proc_free(p);
    if (r >= 0)
        c->state |= AGENT_STATE_METADATA;
    return r;
}

int agent_push_identity(agent_conn *c, const agent_identity *id, uint64_t deadline,
                        vmctl_error **reterr)
{
    int r = agent_ensure_sync(c, deadline, "agent identity", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_IDENTITY, "a new identity after a restore", reterr)) < 0)
        return r;
    agent_proc *p = agent_proc_new(c, PROC_SIMPLE, "identity");
    if (!p)
        return -ENOMEM;
    uint8_t frame[AGENT_HDR_SIZE + 1024];
    int n = agent_encode_identity(frame, sizeof(frame), p->id, id);
    r = simple_request(c, p, frame, n, deadline, "agent identity", reterr);
    agent_proc_free(p);
    explicit_bzero(frame, sizeof(frame));
    return r;
}

int agent_push_clone_identity(agent_conn *c, const char *hostname, char *const *env,
                              const agent_identity *id, uint64_t deadline, vmctl_error **reterr)
{
    int r = agent_ensure_sync(c, deadline, "agent identity", reterr);
    if (r < 0)
        return r;
    if (!(c->caps & AGENT_CAP_CONCURRENT)) {
        /* one request at a time */
        if ((r = agent_push_metadata(c, hostname, env, NULL, NULL, NULL, deadline, reterr)) < 0)
            return r;
        return agent_push_identity(c, id, deadline, reterr);
    }
    if ((r = need_v2(c, AGENT_CAP_METADATA, "metadata", reterr)) < 0 ||
        (r = need_v2(c, AGENT_CAP_IDENTITY, "a new identity after a restore", reterr)) < 0)
        return r;
    /* both frames in one write, then both answers: one round trip to the guest, not two */
    agent_proc *pm = agent_proc_new(c, PROC_SIMPLE, "metadata");
    agent_proc *pi = pm ? agent_proc_new(c, PROC_SIMPLE, "identity") : NULL;
    cleanup_free uint8_t *frame = pi ? malloc(AGENT_MAX_FRAME) : NULL;
    if (!frame) {
        agent_proc_free(pi);
        agent_proc_free(pm);
        return -ENOMEM;
    }
    int nm = agent_encode_metadata(frame, AGENT_MAX_FRAME, pm->id, hostname, env, NULL, NULL, NULL);
    int ni =
        nm < 0 ? nm : agent_encode_identity(frame + nm, AGENT_MAX_FRAME - (size_t)nm, pi->id, id);
    if (nm < 0 || ni < 0) {
        r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "invalid identity request: %s",
                     agent_proto_strerror(nm < 0 ? nm : ni));
    } else {
        /* agent_send_frame sets the version of the first header only */
        agent_frame_set_version(frame + nm, c->agent_version >= 2 ? 2 : 1);
        c->last_rx = now_usec();
        r = agent_send_frame(c, frame, (size_t)nm + (size_t)ni, deadline, "agent identity", reterr);
        if (r >= 0)
            r = agent_proc_wait(pm, deadline, NULL, reterr);
        if (r >= 0) {
            c->state |= AGENT_STATE_METADATA;
            r = agent_proc_wait(pi, deadline, NULL, reterr);
        }
    }
    explicit_bzero(frame, (size_t)(nm > 0 ? nm : 0) + (size_t)(ni > 0 ? ni : 0));
    agent_proc_free(pi);
    agent_proc_free(pm);
    return r;
}

int agent_shutdown(agent_conn *c, bool reboot, uint64_t deadline, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    if (c->have_pong && !(c->caps & AGENT_CAP_SHUTDOWN))
        return err_make(reterr, VMCTL_E_AGENT_FAILED, EOPNOTSUPP,
                        "the guest agent does not support shutdown");
    int r = agent_ensure_sync(c, deadline, "agent shutdown", reterr);
    if (r < 0)
        return r;
    uint8_t frame[AGENT_HDR_SIZE + 4];
    uint32_t id = agent_new_id(c);
    int n = agent_encode_shutdown(frame, sizeof(frame), id,
                                  reboot ? AGENT_SHUTDOWN_REBOOT : AGENT_SHUTDOWN_POWEROFF);
    if (n < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "encoding SHUTDOWN: %s",
                        agent_proto_strerror(n));
    r = agent_send_all(c, frame, (size_t)n, deadline, "agent shutdown", start, reterr);
    if (r < 0)
        return r;
    for (;;) {
        agent_hdr h;
        const uint8_t *payload = NULL;
        r = agent_next_frame(c, deadline, &h, &payload, reterr);
        if (r < 0)
            return r;
        if (r == 0)
            return err_timeout(reterr, "agent shutdown", span_seconds(start, deadline),
                               "the guest agent did not acknowledge the shutdown within %.1f s",
                               span_seconds(start, deadline));
        if (h.id != id)
            continue;
        if (h.type == AGENT_MSG_ACK)
            return 0;
        if (h.type == AGENT_MSG_ERROR)
            return agent_guest_error(payload, h.len, "shutdown", NULL, reterr);
    }
}
