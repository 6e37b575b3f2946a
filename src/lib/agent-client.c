/* SPDX-License-Identifier: MIT */
/* Host side of the guest agent protocol (docs/agent-protocol.md) over QEMU's unix socket. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent-client.h"
#include "agent-proto.h"
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

struct agent_conn {
    int fd;
    int lock_fd;
    char *path;
    uint32_t next_id;
    uint8_t *buf; /* AGENT_MAX_FRAME bytes */
    size_t len;
    size_t pending;   /* bytes of the frame last returned by next_frame, dropped on the next call */
    bool have_pong;   /* the connection is in sync: a pong came back on it */
    uint32_t ping_lo; /* first id of the pings that may still be answered */
    uint64_t last_ping;
    uint8_t agent_version;
    uint64_t caps;
};

void agent_close(agent_conn *c)
{
    if (!c)
        return;
    if (c->fd >= 0)
        close(c->fd);
    if (c->lock_fd >= 0)
        close(c->lock_fd); /* releases the flock */
    free(c->path);
    free(c->buf);
    free(c);
}

static double span_seconds(uint64_t start, uint64_t deadline)
{
    if (deadline == UINT64_MAX)
        return 0;
    return deadline > start ? (double)(deadline - start) / 1e6 : 0;
}

/* poll() timeout in ms until an absolute CLOCK_MONOTONIC usec, rounded up. */
static int ms_until(uint64_t until)
{
    if (until == UINT64_MAX)
        return -1;
    uint64_t now = now_usec();
    if (until <= now)
        return 0;
    uint64_t ms = (until - now + 999) / 1000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static uint32_t new_id(agent_conn *c)
{
    if (c->next_id == 0)
        c->next_id = 1;
    return c->next_id++;
}

static uint32_t random_id(void)
{
    uint32_t v = 0;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = (uint32_t)(now_usec() ^ ((uint64_t)getpid() << 16));
    return v ? v : 1;
}

static int closed_error(agent_conn *c, vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_AGENT_FAILED, EPIPE,
                    "the agent connection '%s' was closed (QEMU exited?)", c->path);
}

static int send_all(agent_conn *c, const uint8_t *p, size_t n, uint64_t deadline,
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
            return closed_error(c, reterr);
        if (errno != EAGAIN)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "cannot write to the agent socket '%s': %s", c->path, strerror(errno));
        struct pollfd pfd = {.fd = c->fd, .events = POLLOUT};
        int r = poll(&pfd, 1, ms_until(deadline));
        if (r < 0 && errno != EINTR)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "poll: %s", strerror(errno));
        if (r == 0)
            return err_timeout(reterr, operation, span_seconds(start, deadline),
                               "the agent did not take the request within %.1f s",
                               span_seconds(start, deadline));
    }
    return 0;
}

/* The next frame, waiting until `until` at most. 1: *h and *payload set (valid until the next
 * call); 0: `until` passed; < 0: error (connection closed: -EPIPE). Garbage is skipped. */
static int next_frame(agent_conn *c, uint64_t until, agent_hdr *h, const uint8_t **payload,
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
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "poll: %s", strerror(errno));
        }
        if (k == 0)
            return 0;
        ssize_t n = recv(c->fd, c->buf + c->len, AGENT_MAX_FRAME - c->len, 0);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            if (errno == ECONNRESET)
                return closed_error(c, reterr);
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "cannot read from the agent socket '%s': %s", c->path, strerror(errno));
        }
        if (n == 0)
            return closed_error(c, reterr);
        c->len += (size_t)n;
    }
}

/* Lock dir(socket_path)/agent.lock, bounded by the deadline. */
static int take_lock(const char *socket_path, uint64_t deadline, uint64_t start, int *ret,
                     vmctl_error **reterr)
{
    cleanup_free char *dir = strdup(socket_path);
    if (!dir)
        return -ENOMEM;
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    cleanup_free char *lock_path = str_printf("%s/agent.lock", slash ? (*dir ? dir : "/") : ".");
    if (!lock_path)
        return -ENOMEM;
    cleanup_close int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int r = err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot open '%s': %s", lock_path,
                         strerror(errno));
        err_detail(reterr, "path", "%s", lock_path);
        return r;
    }
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot lock '%s': %s", lock_path,
                            strerror(errno));
        if (now_usec() >= deadline) {
            int r = err_timeout(reterr, "agent connect", span_seconds(start, deadline),
                                "another vmctl process is talking to the agent ('%s' is locked)",
                                lock_path);
            err_detail(reterr, "path", "%s", lock_path);
            return r;
        }
        sleep_usec(5000);
    }
    *ret = TAKE_FD(fd);
    return 0;
}

/* connect() to a unix socket path of any length (long paths go through /proc/self/fd). */
static int connect_unix(int fd, const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    cleanup_close int dirfd = -1;
    if (strlen(path) < sizeof(sa.sun_path)) {
        memcpy(sa.sun_path, path, strlen(path) + 1);
    } else {
        const char *slash = strrchr(path, '/');
        if (!slash)
            return -ENAMETOOLONG;
        cleanup_free char *dir = strndup(path, (size_t)(slash - path));
        if (!dir)
            return -ENOMEM;
        dirfd = open(*dir ? dir : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
            return -errno;
        int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d/%s", dirfd, slash + 1);
        if (n < 0 || (size_t)n >= sizeof(sa.sun_path))
            return -ENAMETOOLONG;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -errno;
    return 0;
}

/* Until the first pong, pings say "new session": the agent then drops what earlier clients
 * left behind (their running command). */
static int send_ping(agent_conn *c, uint32_t *id, uint64_t deadline, const char *operation,
                     uint64_t start, vmctl_error **reterr)
{
    uint8_t frame[AGENT_HDR_SIZE];
    *id = new_id(c);
    c->last_ping = now_usec();
    int n = agent_encode_ping(frame, sizeof(frame), *id, c->have_pong ? 0 : AGENT_FLAG_NEW_SESSION);
    if (n < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "encoding a ping: %s",
                        agent_proto_strerror(n));
    return send_all(c, frame, (size_t)n, deadline, operation, start, reterr);
}

int agent_connect(const char *socket_path, uint64_t deadline, agent_conn **ret,
                  vmctl_error **reterr)
{
    uint64_t start = now_usec();
    agent_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    cleanup_agent agent_conn *conn = c;
    c->fd = -1;
    c->lock_fd = -1;
    c->path = strdup(socket_path);
    c->buf = malloc(AGENT_MAX_FRAME);
    if (!c->path || !c->buf)
        return -ENOMEM;
    c->next_id = random_id();

    int r = take_lock(socket_path, deadline, start, &c->lock_fd, reterr);
    if (r < 0)
        return r;

    /* QEMU creates the socket early, but the caller may be quicker: retry while it is missing
     * or nobody listens yet. */
    for (;;) {
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "socket: %s", strerror(errno));
        r = connect_unix(c->fd, socket_path);
        if (r == 0)
            break;
        close(c->fd);
        c->fd = -1;
        if (r != -ENOENT && r != -ECONNREFUSED) {
            r = err_make(reterr, VMCTL_E_AGENT_FAILED, r,
                         "cannot connect to the agent socket '%s': %s", socket_path, strerror(-r));
            err_detail(reterr, "path", "%s", socket_path);
            return r;
        }
        if (now_usec() >= deadline) {
            int k = err_timeout(reterr, "agent connect", span_seconds(start, deadline),
                                "cannot connect to the agent socket '%s': %s", socket_path,
                                strerror(-r));
            err_detail(reterr, "path", "%s", socket_path);
            return k;
        }
        sleep_usec(10 * 1000);
    }
    if (fcntl(c->fd, F_SETFL, O_NONBLOCK) < 0)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "fcntl: %s", strerror(errno));
    /* the session ping: queued by QEMU until the agent runs, answered by agent_wait_ready and
     * awaited by the first exec/shutdown */
    r = send_ping(c, &c->ping_lo, deadline, "agent connect", start, reterr);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(conn);
    return 0;
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
        r = send_ping(c, &c->ping_lo, deadline, operation, start, reterr);
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
        r = next_frame(c, until, &h, &payload, reterr);
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
                (uint32_t)(h.id - c->ping_lo) >= (uint32_t)(c->next_id - c->ping_lo))
                continue; /* stale: an earlier client's, or an older request */
            agent_pong p;
            if (agent_decode_pong(payload, h.len, &p) < 0)
                return err_make(reterr, VMCTL_E_AGENT_FAILED, EBADMSG,
                                "the agent sent a malformed PONG");
            c->have_pong = true;
            c->agent_version = p.version;
            c->caps = p.caps;
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
            r = send_ping(c, &id, deadline, operation, start, reterr);
            if (r < 0)
                return r;
            next_resend = now + PING_RESEND_USEC;
        }
    }
}

/* Requests that must not be lost or repeated (exec, shutdown) go out only on a connection known
 * to be in sync: a pong came back after the session ping. One round trip per connection. */
static int ensure_sync(agent_conn *c, uint64_t deadline, const char *operation,
                       vmctl_error **reterr)
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

static int agent_error(const uint8_t *payload, uint32_t len, const char *what, vmctl_error **reterr)
{
    agent_error_msg em;
    if (agent_decode_error(payload, len, &em) < 0)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, EBADMSG,
                        "the agent sent a malformed ERROR for %s", what);
    int r = err_make(reterr, VMCTL_E_AGENT_FAILED, em.errnum ? (int)em.errnum : EIO, "%s",
                     em.message[0] ? em.message : "the agent reported an error");
    err_note(reterr, "reported by the guest agent for %s", what);
    return r;
}

int agent_exec(agent_conn *c, const vmctl_exec_opts *opts, vmctl_exec_result *result,
               uint64_t deadline, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    memset(result, 0, sizeof(*result));
    if (!opts->argv || !opts->argv[0] || !opts->argv[0][0])
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL, "no command to run");
    if (c->have_pong && !(c->caps & AGENT_CAP_EXEC))
        return err_make(reterr, VMCTL_E_AGENT_FAILED, EOPNOTSUPP,
                        "the guest agent does not support exec");
    uint32_t timeout_ms = 0;
    if (opts->timeout_sec > 0) {
        double ms = opts->timeout_sec * 1000.0;
        if (ms >= (double)UINT32_MAX)
            timeout_ms = UINT32_MAX;
        else {
            timeout_ms = (uint32_t)ms;
            if ((double)timeout_ms < ms)
                timeout_ms++; /* round up: never kill earlier than asked */
        }
    }
    size_t size = agent_exec_frame_size(opts->argv, opts->env, opts->cwd, opts->stdin_len);
    if (size > AGENT_MAX_FRAME) {
        int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, E2BIG,
                         "the command line, environment and input are too large for one "
                         "request (at most %u bytes)",
                         AGENT_MAX_PAYLOAD);
        err_help(reterr, "Pass large input as a file (`vmctl cp`) instead of on stdin.");
        return r;
    }
    cleanup_free uint8_t *frame = malloc(size);
    if (!frame)
        return -ENOMEM;
    int r = ensure_sync(c, deadline, "agent exec", reterr);
    if (r < 0)
        return r;
    uint32_t id = new_id(c);
    int n = agent_encode_exec(frame, size, id, timeout_ms, opts->argv, opts->env, opts->cwd,
                              opts->stdin_data, opts->stdin_len);
    if (n == AGENT_E_INVALID)
        return err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                        "invalid exec request: environment entries must be K=V with K not empty");
    if (n < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "encoding EXEC: %s",
                        agent_proto_strerror(n));
    r = send_all(c, frame, (size_t)n, deadline, "agent exec", start, reterr);
    if (r < 0)
        return r;

    size_t out_cap = 0, err_cap = 0;
    if (append(&result->out, &result->out_len, &out_cap, (const uint8_t *)"", 0) < 0 ||
        append(&result->err, &result->err_len, &err_cap, (const uint8_t *)"", 0) < 0)
        return -ENOMEM;
    for (;;) {
        agent_hdr h;
        const uint8_t *payload = NULL;
        r = next_frame(c, deadline, &h, &payload, reterr);
        if (r < 0)
            return r;
        if (r == 0)
            return err_timeout(reterr, "agent exec", span_seconds(start, deadline),
                               "no answer from the guest agent within %.1f s",
                               span_seconds(start, deadline));
        if (h.id != id)
            continue; /* stale frames: earlier requests, earlier clients */
        switch (h.type) {
        case AGENT_MSG_STDOUT:
            if (append(&result->out, &result->out_len, &out_cap, payload, h.len) < 0)
                return -ENOMEM;
            break;
        case AGENT_MSG_STDERR:
            if (append(&result->err, &result->err_len, &err_cap, payload, h.len) < 0)
                return -ENOMEM;
            break;
        case AGENT_MSG_EXIT: {
            agent_exit e;
            if (agent_decode_exit(payload, h.len, &e) < 0)
                return err_make(reterr, VMCTL_E_AGENT_FAILED, EBADMSG,
                                "the agent sent a malformed EXIT");
            result->exit_code = e.exit_code;
            result->signal = (int)e.signal;
            if (e.flags & AGENT_EXIT_TIMED_OUT)
                return err_timeout(reterr, "exec", opts->timeout_sec,
                                   "'%s' did not finish within %g s and was killed in the guest",
                                   opts->argv[0], opts->timeout_sec);
            return 0;
        }
        case AGENT_MSG_ERROR:
            return agent_error(payload, h.len, "exec", reterr);
        default:
            break;
        }
    }
}

int agent_shutdown(agent_conn *c, bool reboot, uint64_t deadline, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    if (c->have_pong && !(c->caps & AGENT_CAP_SHUTDOWN))
        return err_make(reterr, VMCTL_E_AGENT_FAILED, EOPNOTSUPP,
                        "the guest agent does not support shutdown");
    int r = ensure_sync(c, deadline, "agent shutdown", reterr);
    if (r < 0)
        return r;
    uint8_t frame[AGENT_HDR_SIZE + 4];
    uint32_t id = new_id(c);
    int n = agent_encode_shutdown(frame, sizeof(frame), id,
                                  reboot ? AGENT_SHUTDOWN_REBOOT : AGENT_SHUTDOWN_POWEROFF);
    if (n < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "encoding SHUTDOWN: %s",
                        agent_proto_strerror(n));
    r = send_all(c, frame, (size_t)n, deadline, "agent shutdown", start, reterr);
    if (r < 0)
        return r;
    for (;;) {
        agent_hdr h;
        const uint8_t *payload = NULL;
        r = next_frame(c, deadline, &h, &payload, reterr);
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
            return agent_error(payload, h.len, "shutdown", reterr);
    }
}
