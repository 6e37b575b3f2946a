/* SPDX-License-Identifier: MIT */
/* The agent session on a connected byte stream (docs/agent-protocol.md): framing, the session
 * ping and its pong (version, capabilities), the v2 table of requests in flight, the dispatch of
 * the frames answering them, keepalive and the agent's silence. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent-conn.h"
#include "error.h"
#include "util/util.h"

/* A ping is resent this often while waiting for a pong. QEMU keeps bytes the guest has not
 * accepted yet in the socket (it reads only when the guest port is open), so the first ping is
 * answered as soon as the agent runs; resending covers an agent that restarted, and a first ping
 * swallowed by the partial frame of a client that died mid-frame (the agent drops such a frame
 * after 500 ms without data, so the next ping gets through). */
#define PING_RESEND_USEC (600 * 1000)
/* alive() is polled this often. */
#define ALIVE_POLL_USEC (50 * 1000)
/* After the socket closes, how long to wait for QEMU to be seen dead before blaming the agent. */
#define EOF_GRACE_USEC (500 * 1000)

static void dispatch(agent_conn *c, const agent_hdr *h, const uint8_t *payload);

void agent_close(agent_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    if (c->lock_fd >= 0)
        close(c->lock_fd); /* releases the flock */
    for (struct agent_proc *p = c->procs; p; p = p->next)
        p->c = NULL; /* orphaned: agent_proc_free still works */
    free(c->path);
    free(c->label);
    free(c->silence_reason);
    free(c->silence_help);
    free(c->buf);
    free(c);
}

uint32_t agent_new_id(agent_conn *c)
{
    if (c->next_id == 0)
        c->next_id = 1;
    return c->next_id++;
}

int agent_closed_error(agent_conn *c, vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_AGENT_FAILED, EPIPE,
                    "the agent connection '%s' was closed (the hypervisor exited?)", c->path);
}

int agent_send_all(agent_conn *c, const uint8_t *p, size_t n, uint64_t deadline,
                   const char *operation, uint64_t start, vmctl_error **reterr)
{
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w >= 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EPIPE || errno == ECONNRESET)
            return agent_closed_error(c, reterr);
        if (errno != EAGAIN)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "cannot write to the agent socket '%s'", c->path);
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        int r = poll(&pfd, 1, ms_until(deadline));
        if (r < 0 && errno != EINTR)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "cannot wait for the agent socket");
        if (r == 0)
            return err_timeout(reterr, operation, span_seconds(start, deadline),
                               "the agent did not take the request within %.1f s",
                               span_seconds(start, deadline));
    }
    return 0;
}

/* The next frame, waiting until `until` at most. 1: *h and *payload set (valid until the next
 * call); 0: `until` passed; < 0: error (connection closed: -EPIPE). Garbage is skipped. */
int agent_next_frame(agent_conn *c, uint64_t until, agent_hdr *h, const uint8_t **payload,
                     vmctl_error **reterr)
{
    *payload = c->buf + AGENT_HDR_SIZE; /* where a frame's payload always is */
    if (c->pending) {
        memmove(c->buf, c->buf + c->pending, c->len - c->pending);
        c->len -= c->pending;
        c->pending = 0;
    }
    for (;;) {
        size_t consumed = 0;
        int r = agent_frame_next(c->buf, c->len, h, &consumed);
        if (r == AGENT_OK) {
            c->pending = consumed;
            *payload = c->buf + AGENT_HDR_SIZE;
            return 1;
        }
        if (r == AGENT_E_VERSION)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, EPROTONOSUPPORT,
                            "the agent answered in protocol version %u; this vmctl speaks %d",
                            h->version, AGENT_PROTO_VERSION);
        if (r != AGENT_E_SHORT) { /* garbage: resynchronise */
            memmove(c->buf, c->buf + consumed, c->len - consumed);
            c->len -= consumed;
            continue;
        }
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int k = poll(&pfd, 1, ms_until(until));
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "cannot wait for the agent socket");
        }
        if (k == 0)
            return 0;
        ssize_t n = recv(c->fd, c->buf + c->len, AGENT_MAX_FRAME - c->len, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            if (errno == ECONNRESET)
                return agent_closed_error(c, reterr);
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "cannot read from the agent socket '%s'", c->path);
        }
        if (n == 0)
            return agent_closed_error(c, reterr);
        c->len += (size_t)n;
    }
}

/* Until the first pong, pings say "new session": the agent then drops what earlier clients
 * left behind (their running command). */
int agent_send_ping(agent_conn *c, uint32_t *id, uint64_t deadline, const char *operation,
                    uint64_t start, vmctl_error **reterr)
{
    uint8_t frame[AGENT_HDR_SIZE];
    *id = agent_new_id(c);
    c->last_ping = now_usec();
    int n = agent_encode_ping(frame, sizeof(frame), *id, c->have_pong ? 0 : AGENT_FLAG_NEW_SESSION);
    if (n < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "encoding a ping: %s",
                        agent_proto_strerror(n));
    /* PING goes in v1 frames: every agent answers it, and its PONG says what it speaks */
    agent_frame_set_version(frame, 1);
    return agent_send_all(c, frame, (size_t)n, deadline, operation, start, reterr);
}

/* Wait for a PONG answering one of the pings sent since c->ping_lo. On a connection not yet in
 * sync, the session ping agent_connect sent is still outstanding; otherwise send a fresh one. */
static int ping_loop(agent_conn *c, uint64_t deadline, bool (*alive)(void *), void *userdata,
                     const char *operation, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    uint32_t id;
    int r;
    if (c->have_pong) {
        r = agent_send_ping(c, &c->ping_lo, deadline, operation, start, reterr);
        if (r < 0)
            return r;
    }
    uint64_t next_resend = c->last_ping + PING_RESEND_USEC;
    for (;;) {
        uint64_t until = deadline;
        if (alive && now_usec() + ALIVE_POLL_USEC < until)
            until = now_usec() + ALIVE_POLL_USEC;
        if (next_resend < until)
            until = next_resend;
        agent_hdr h;
        const uint8_t *payload = NULL;
        r = agent_next_frame(c, until, &h, &payload, reterr);
        if (r == -EPIPE && alive) {
            /* QEMU closed the socket: most likely it is exiting; say so if it is */
            uint64_t give_up = now_usec() + EOF_GRACE_USEC;
            while (now_usec() < give_up && now_usec() < deadline) {
                if (!alive(userdata)) {
                    if (reterr) {
                        vmctl_error_free(*reterr);
                        *reterr = NULL;
                    }
                    return -ECHILD;
                }
                sleep_usec(10 * 1000);
            }
        }
        if (r < 0)
            return r;
        if (r == 1) {
            /* ids of the pings we sent: ping_lo .. next_id - 1 (modulo 2^32) */
            if (h.type != AGENT_MSG_PONG ||
                (uint32_t)(h.id - c->ping_lo) >= (uint32_t)(c->next_id - c->ping_lo)) {
                dispatch(c, &h, payload); /* other requests' frames, or stale */
                continue;
            }
            agent_pong p;
            if (agent_decode_pong(payload, h.len, &p) < 0)
                return err_make(reterr, VMCTL_E_AGENT_FAILED, EBADMSG,
                                "the agent sent a malformed PONG");
            c->have_pong = true;
            c->agent_version = p.version;
            c->caps = p.version >= 2 ? p.caps : p.caps & (AGENT_CAP_EXEC | AGENT_CAP_SHUTDOWN);
            c->instance = p.instance;
            c->state = p.version >= 2 ? p.state : 0;
            return 0;
        }
        uint64_t now = now_usec();
        if (alive && !alive(userdata))
            return -ECHILD;
        if (now >= deadline)
            return err_timeout(reterr, operation, span_seconds(start, deadline),
                               "the guest agent did not answer within %.1f s",
                               span_seconds(start, deadline));
        if (now >= next_resend) {
            r = agent_send_ping(c, &id, deadline, operation, start, reterr);
            if (r < 0)
                return r;
            next_resend = now + PING_RESEND_USEC;
        }
    }
}

/* Requests that must not be lost or repeated (exec, shutdown) go out only on a connection known
 * to be in sync: a pong came back after the session ping. One round trip per connection. */
int agent_ensure_sync(agent_conn *c, uint64_t deadline, const char *operation, vmctl_error **reterr)
{
    return c->have_pong ? 0 : ping_loop(c, deadline, NULL, NULL, operation, reterr);
}

int agent_wait_ready(agent_conn *c, uint64_t deadline, bool (*alive)(void *), void *userdata,
                     vmctl_error **reterr)
{
    return ping_loop(c, deadline, alive, userdata, "agent ready", reterr);
}

int agent_ping(agent_conn *c, uint64_t deadline, vmctl_error **reterr)
{
    return ping_loop(c, deadline, NULL, NULL, "agent ping", reterr);
}

int agent_guest_error(const uint8_t *payload, uint32_t len, const char *what, int *guest_errno,
                      vmctl_error **reterr)
{
    agent_error_msg em;
    if (agent_decode_error(payload, len, &em) < 0)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, EBADMSG,
                        "the agent sent a malformed ERROR for %s", what);
    if (guest_errno)
        *guest_errno = (int)em.errnum;
    int r = err_make(reterr, VMCTL_E_AGENT_FAILED, em.errnum ? (int)em.errnum : EIO, "%s",
                     em.message[0] ? em.message : "the agent reported an error");
    err_note(reterr, "reported by the guest agent for %s", what);
    return r;
}

/* --- requests in flight (v2) --- */

int agent_conn_fd(const agent_conn *c)
{
    return c->fd;
}

uint8_t agent_conn_version(const agent_conn *c)
{
    return c->agent_version;
}

uint64_t agent_conn_caps(const agent_conn *c)
{
    return c->caps;
}

bool agent_conn_metadata_applied(const agent_conn *c)
{
    return (c->caps & AGENT_CAP_META_STATE) && (c->state & AGENT_STATE_METADATA);
}

/* Send a whole encoded frame in the version the agent speaks. */
int agent_send_frame(agent_conn *c, uint8_t *frame, size_t n, uint64_t deadline,
                     const char *operation, vmctl_error **reterr)
{
    if (c->broken)
        return agent_closed_error(c, reterr);
    agent_frame_set_version(frame, c->agent_version >= 2 ? 2 : 1);
    int r = agent_send_all(c, frame, n, deadline, operation, now_usec(), reterr);
    if (r < 0)
        c->broken = r;
    return r;
}

static struct agent_proc *proc_find(agent_conn *c, uint32_t id)
{
    for (struct agent_proc *p = c->procs; p; p = p->next)
        if (p->id == id)
            return p;
    return NULL;
}

agent_proc *agent_proc_new(agent_conn *c, int kind, const char *what)
{
    agent_proc *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->what = strdup(what);
    if (!p->what) {
        free(p);
        return NULL;
    }
    p->c = c;
    p->kind = kind;
    p->id = agent_new_id(c);
    while (proc_find(c, p->id) || p->id == c->keepalive_id)
        p->id = agent_new_id(c);
    p->next = c->procs;
    c->procs = p;
    return p;
}

void agent_proc_free(agent_proc *p)
{
    if (!p)
        return;
    if (p->c) {
        for (struct agent_proc **pp = &p->c->procs; *pp; pp = &(*pp)->next)
            if (*pp == p) {
                *pp = p->next;
                break;
            }
    }
    vmctl_error_free(p->err);
    free(p->what);
    free(p);
}

bool agent_proc_done(const agent_proc *p)
{
    return p->done;
}

int agent_proc_errno(const agent_proc *p)
{
    return p->guest_errno;
}

bool agent_proc_file_info(const agent_proc *p, uint32_t *mode, uint64_t *size, int64_t *mtime_sec,
                          uint32_t *mtime_nsec)
{
    if (!p->have_info)
        return false;
    *mode = p->info.mode;
    *size = p->info.size;
    *mtime_sec = p->info.mtime_sec;
    *mtime_nsec = p->info.mtime_nsec;
    return true;
}

static void proc_fail(agent_proc *p, int rc, vmctl_error *err)
{
    if (!p->done) {
        p->done = true;
        p->rc = rc;
        p->err = err;
    } else {
        vmctl_error_free(err);
    }
}

/* The agent restarted or the connection broke: every pending request fails. */
static void procs_fail_all(agent_conn *c, int rc, const char *why)
{
    for (struct agent_proc *p = c->procs; p; p = p->next) {
        if (p->done)
            continue;
        vmctl_error *e = NULL;
        int r = err_make(&e, VMCTL_E_AGENT_FAILED, -rc, "%s while '%s' was running", why, p->what);
        proc_fail(p, r, e);
    }
}

/* A download's data: only after its FILE_INFO, never more than the size that announced. What
 * the agent says is checked, not trusted (a guest may run an agent of its own). */
static int get_data_check(agent_proc *p, const agent_hdr *h, vmctl_error **e)
{
    int r = 0;
    if (h->type != AGENT_MSG_STDOUT)
        r = err_make(e, VMCTL_E_AGENT_FAILED, EBADMSG,
                     "the agent sent error output for the download of '%s'", p->what);
    else if (!p->have_info)
        r = err_make(e, VMCTL_E_AGENT_FAILED, EBADMSG,
                     "the agent sent data of '%s' before its FILE_INFO", p->what);
    else if (h->len > p->info.size - p->got)
        r = err_make(e, VMCTL_E_AGENT_FAILED, EBADMSG,
                     "the agent sent more than the %" PRIu64 " bytes it announced for '%s' (the "
                     "file grew while it was copied, or the agent lies)",
                     p->info.size, p->what);
    if (r < 0) {
        proc_fail(p, r, *e);
        *e = NULL;
        return r;
    }
    p->got += h->len;
    return 0;
}

static void dispatch(agent_conn *c, const agent_hdr *h, const uint8_t *payload)
{
    if (h->type == AGENT_MSG_PONG) {
        if (c->keepalive_id && h->id == c->keepalive_id) {
            c->keepalive_id = 0;
            agent_pong pg;
            if (agent_decode_pong(payload, h->len, &pg) == 0 && pg.instance != c->instance) {
                /* a new agent process: what the old one ran is gone */
                c->instance = pg.instance;
                procs_fail_all(c, -ECONNRESET,
                               "the guest agent restarted (it was killed or crashed)");
            }
        }
        return;
    }
    agent_proc *p = proc_find(c, h->id);
    if (!p || p->done)
        return; /* stale: earlier requests, earlier clients */
    vmctl_error *e = NULL;
    switch (h->type) {
    case AGENT_MSG_STDOUT:
    case AGENT_MSG_STDERR:
        if (p->kind == PROC_GET && get_data_check(p, h, &e) < 0)
            break;
        if (p->fn && p->rc == 0 && h->len) {
            int r = p->fn(p->userdata, h->type == AGENT_MSG_STDOUT ? 1 : 2, payload, h->len);
            if (r < 0)
                p->rc = r; /* remembered; the request still runs to its end */
        }
        break;
    case AGENT_MSG_STDIN_ACK: {
        uint32_t n;
        if (agent_decode_u32_msg(payload, h->len, &n) == 0)
            p->in_flight = n > p->in_flight ? 0 : p->in_flight - n;
        break;
    }
    case AGENT_MSG_FILE_INFO:
        if (p->kind != PROC_GET)
            break;
        if (p->have_info || agent_decode_file_info(payload, h->len, &p->info) < 0) {
            int r = err_make(&e, VMCTL_E_AGENT_FAILED, EBADMSG,
                             "the agent sent a %s FILE_INFO for '%s'",
                             p->have_info ? "second" : "malformed", p->what);
            proc_fail(p, r, e);
            break;
        }
        p->have_info = true;
        break;
    case AGENT_MSG_EXIT: {
        agent_exit ex;
        if (agent_decode_exit(payload, h->len, &ex) < 0) {
            int r = err_make(&e, VMCTL_E_AGENT_FAILED, EBADMSG, "the agent sent a malformed EXIT");
            proc_fail(p, r, e);
            break;
        }
        if (p->kind == PROC_GET && (!p->have_info || p->got != p->info.size)) {
            int r = !p->have_info
                        ? err_make(&e, VMCTL_E_AGENT_FAILED, EBADMSG,
                                   "the agent ended the download of '%s' without its FILE_INFO",
                                   p->what)
                        : err_make(&e, VMCTL_E_AGENT_FAILED, EBADMSG,
                                   "the agent sent %" PRIu64 " bytes of '%s' but announced %" PRIu64
                                   " (the file changed while it was copied, or the agent lies)",
                                   p->got, p->what, p->info.size);
            proc_fail(p, r, e);
            break;
        }
        p->st.exit_code = ex.exit_code;
        p->st.signal = (int)ex.signal;
        p->timed_out = ex.flags & AGENT_EXIT_TIMED_OUT;
        p->done = true;
        break;
    }
    case AGENT_MSG_ERROR: {
        int r = agent_guest_error(payload, h->len, p->what, &p->guest_errno, &e);
        proc_fail(p, r, e);
        break;
    }
    case AGENT_MSG_ACK:
    case AGENT_MSG_INFO_REPLY:
        if (p->kind == PROC_SIMPLE) {
            p->reply_type = h->type;
            p->reply_len = h->len < sizeof(p->reply) ? h->len : (uint32_t)sizeof(p->reply);
            memcpy(p->reply, payload, p->reply_len);
            p->done = true;
        }
        break;
    default:
        break;
    }
}

/* While requests are pending and the agent is silent this long, ping it: a PONG from another
 * agent instance means the agent restarted and the requests are lost. */
#define KEEPALIVE_USEC (1000 * 1000)
/* Silence this long (since the keepalive ping) asks the silence callback once before the limit. */
#define SILENCE_PROBE_USEC (3000 * 1000)

void agent_conn_set_silence(agent_conn *c, uint64_t usec, bool (*ok)(void *), void *userdata)
{
    c->silence_usec = usec;
    c->silence_ok = ok;
    c->silence_userdata = userdata;
}

int agent_conn_set_label(agent_conn *c, const char *label)
{
    char *l = strdup(label);
    if (!l)
        return -ENOMEM;
    free(c->label);
    c->label = l;
    return 0;
}

void agent_conn_set_silence_reason(agent_conn *c, const char *reason, const char *help)
{
    free(c->silence_reason);
    free(c->silence_help);
    c->silence_reason = reason ? strdup(reason) : NULL;
    c->silence_help = help ? strdup(help) : NULL;
}

/* The caller knows why the agent is silent (the VM was paused by an I/O error): say that. */
static int silence_reason_error(agent_conn *c, vmctl_error **reterr)
{
    for (struct agent_proc *p = c->procs; p; p = p->next) {
        if (p->done)
            continue;
        vmctl_error *e = NULL;
        int r = err_make(&e, VMCTL_E_EXEC_UNAVAILABLE, EIO, "the %s while '%s' was running",
                         c->silence_reason, p->what);
        if (c->label)
            err_detail(&e, "vm", "%s", c->label);
        err_detail(&e, "reason", "%s", c->silence_reason);
        if (c->silence_help) {
            err_detail(&e, "remediation", "%s", c->silence_help);
            err_help(&e, "%s", c->silence_help);
        }
        proc_fail(p, r, e);
    }
    c->broken = -ETIMEDOUT;
    return err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, EIO, "the %s", c->silence_reason);
}

/* The agent stopped answering: every pending request fails with exec::unavailable. */
static int silence_error(agent_conn *c, double sec, vmctl_error **reterr)
{
    if (c->silence_reason)
        return silence_reason_error(c, reterr);
    const char *vm = c->label ? c->label : "NAME";
    cleanup_free char *fix = str_printf(
        "The guest agent is stopped, hung or overloaded; `vmctl logs %s` shows the guest's "
        "console. Restart the VM (`vmctl stop %s`, then `vmctl start %s --wait`) if it does not "
        "recover.",
        vm, vm, vm);
    for (struct agent_proc *p = c->procs; p; p = p->next) {
        if (p->done)
            continue;
        vmctl_error *e = NULL;
        int r = err_make(&e, VMCTL_E_EXEC_UNAVAILABLE, ETIMEDOUT,
                         "the guest agent stopped answering: nothing for %.0f s while '%s' was "
                         "running",
                         sec, p->what);
        if (c->label)
            err_detail(&e, "vm", "%s", c->label);
        err_detail(&e, "reason", "agent not answering");
        err_detail(&e, "remediation", "%s", fix ? fix : "Restart the VM.");
        err_help(&e, "%s", fix ? fix : "Restart the VM.");
        proc_fail(p, r, e);
    }
    c->broken = -ETIMEDOUT;
    return err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, ETIMEDOUT,
                    "the guest agent stopped answering: nothing for %.0f s", sec);
}

/* Keepalive while requests are pending: ping after KEEPALIVE_USEC without a frame; when nothing
 * at all came for silence_usec since that ping, the agent is gone (unless silence_ok says the
 * silence is expected). Returns when to look again. */
static int keepalive(agent_conn *c, uint64_t now, uint64_t *next, vmctl_error **reterr)
{
    if (!c->keepalive_id) {
        if (now >= c->last_rx + KEEPALIVE_USEC) {
            uint32_t id;
            int r = agent_send_ping(c, &id, now + KEEPALIVE_USEC, "agent ping", now, reterr);
            if (r < 0) {
                c->broken = r;
                return r;
            }
            c->keepalive_id = id;
            c->keepalive_at = now;
        } else {
            *next = c->last_rx + KEEPALIVE_USEC;
            return 0;
        }
    }
    if (!c->silence_usec) {
        *next = UINT64_MAX;
        return 0;
    }
    uint64_t since = c->last_rx > c->keepalive_at ? c->last_rx : c->keepalive_at;
    if (now >= since + c->silence_usec) {
        if (c->silence_ok && c->silence_ok(c->silence_userdata)) {
            c->keepalive_at = now; /* e.g. the VM is paused: wait on */
            since = now;
        } else {
            return silence_error(c, (double)c->silence_usec / 1e6, reterr);
        }
    }
    /* once per silence, early: the callback may know the cause already (a VM QEMU paused after
     * a disk I/O error will not answer before someone frees space and resumes it) */
    uint64_t probe = since + SILENCE_PROBE_USEC;
    if (c->silence_ok && c->probed_at < since && probe < since + c->silence_usec) {
        if (now >= probe) {
            c->probed_at = now;
            if (!c->silence_ok(c->silence_userdata) && c->silence_reason)
                return silence_error(c, (double)(now - since) / 1e6, reterr);
        } else {
            *next = probe;
            return 0;
        }
    }
    *next = since + c->silence_usec;
    return 0;
}

int agent_pump(agent_conn *c, uint64_t until, vmctl_error **reterr)
{
    if (c->broken)
        return c->broken == -ETIMEDOUT ? err_make(reterr, VMCTL_E_EXEC_UNAVAILABLE, ETIMEDOUT,
                                                  "the guest agent stopped answering")
                                       : agent_closed_error(c, reterr);
    for (;;) {
        uint64_t now = now_usec();
        uint64_t wake = until;
        bool pending = false;
        for (struct agent_proc *p = c->procs; p; p = p->next)
            pending |= !p->done;
        if (pending && c->agent_version >= 2) {
            uint64_t next = UINT64_MAX;
            int r = keepalive(c, now, &next, reterr);
            if (r < 0)
                return r;
            if (next < wake)
                wake = next > now ? next : now;
        }
        agent_hdr h;
        const uint8_t *payload;
        int r = agent_next_frame(c, wake, &h, &payload, reterr);
        if (r < 0) {
            c->broken = r;
            procs_fail_all(c, r, "the connection to the guest agent was lost");
            return r;
        }
        if (r == 1) {
            c->last_rx = now_usec();
            dispatch(c, &h, payload);
            return 1;
        }
        if (now_usec() >= until)
            return 0;
    }
}
