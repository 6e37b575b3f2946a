/* SPDX-License-Identifier: MIT */
/* Host side of the guest agent protocol (docs/agent-protocol.md) over QEMU's unix socket. */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <linux/vhost.h>
#include <linux/vm_sockets.h>

#include "agent-client.h"
#include "agent-proto.h"
#include "backend.h"
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
/* How long agent_connect_vm gives AF_VSOCK before it uses virtio-serial instead. */
#define VSOCK_TRY_USEC (200 * 1000)
/* Virtio-serial ports looked for in a VM directory (QEMU gives VM_AGENT_PORTS). */
#define AGENT_MAX_SERIAL_PORTS 8

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
    uint32_t instance; /* of the agent that answered the first pong */
    uint8_t state;     /* AGENT_STATE_* bits of the last pong (and of our own pushes) */
    struct agent_proc *procs;
    uint64_t last_rx;      /* when a frame last arrived */
    uint32_t keepalive_id; /* ping sent while requests are pending, 0 if none */
    uint64_t keepalive_at; /* when it was sent */
    uint64_t silence_usec; /* no frame this long with a keepalive unanswered: the agent is gone */
    bool (*silence_ok)(void *userdata); /* true: the silence is expected (the VM is paused) */
    void *silence_userdata;
    char *label;                         /* the VM's name, for errors */
    char *silence_reason, *silence_help; /* why the agent is silent, when the caller knows */
    uint64_t probed_at;                  /* when the silence callback was last asked early */
    int broken; /* < 0: the connection failed; every later call fails alike */
};

enum { PROC_EXEC, PROC_PUT, PROC_GET, PROC_SIMPLE };

struct agent_proc {
    agent_conn *c;
    struct agent_proc *next;
    uint32_t id;
    int kind;
    char *what; /* for messages */
    agent_data_fn fn;
    void *userdata;
    bool done;
    bool stdin_closed;
    size_t in_flight;
    double timeout_sec;
    vmctl_exec_status st;
    bool timed_out;
    int rc; /* < 0: failed (err holds the error, unless a callback's code) */
    vmctl_error *err;
    int guest_errno;
    bool have_info;
    agent_file_info info;
    uint64_t got;      /* PROC_GET: data bytes received, checked against info.size */
    uint8_t reply[64]; /* PROC_SIMPLE: the answer's payload */
    uint32_t reply_len;
    uint8_t reply_type;
};

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
    /* PING goes in v1 frames: every agent answers it, and its PONG says what it speaks */
    agent_frame_set_version(frame, 1);
    return send_all(c, frame, (size_t)n, deadline, operation, start, reterr);
}

/* A connection object for path, without a stream yet; with lock, holding agent.lock next to
 * path (taken within the deadline). */
static int conn_new(const char *path, bool lock, uint64_t deadline, uint64_t start,
                    agent_conn **ret, vmctl_error **reterr)
{
    agent_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    cleanup_agent agent_conn *conn = c;
    c->fd = -1;
    c->lock_fd = -1;
    c->path = strdup(path);
    c->buf = malloc(AGENT_MAX_FRAME);
    if (!c->path || !c->buf)
        return -ENOMEM;
    c->next_id = random_id();
    c->silence_usec = AGENT_SILENCE_USEC;
    if (lock) {
        int r = take_lock(path, deadline, start, &c->lock_fd, reterr);
        if (r < 0)
            return r;
    }
    *ret = TAKE_PTR(conn);
    return 0;
}

/* The stream is connected: non-blocking, and the session ping goes out at once (queued by QEMU
 * until the agent runs, answered by agent_wait_ready and awaited by the first exec/shutdown). */
static int conn_start(agent_conn *c, uint64_t deadline, uint64_t start, vmctl_error **reterr)
{
    if (fcntl(c->fd, F_SETFL, O_NONBLOCK) < 0)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "fcntl: %s", strerror(errno));
    return send_ping(c, &c->ping_lo, deadline, "agent connect", start, reterr);
}

/* connect() to a unix socket, retrying while it is missing or nobody listens yet (QEMU creates
 * the socket early, but the caller may be quicker). */
static int connect_unix_retry(agent_conn *c, const char *socket_path, uint64_t deadline,
                              uint64_t start, vmctl_error **reterr)
{
    for (;;) {
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "socket: %s", strerror(errno));
        int r = connect_unix(c->fd, socket_path);
        if (r == 0)
            return 0;
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
}

int agent_connect(const char *socket_path, uint64_t deadline, agent_conn **ret,
                  vmctl_error **reterr)
{
    uint64_t start = now_usec();
    cleanup_agent agent_conn *c = NULL;
    int r = conn_new(socket_path, true, deadline, start, &c, reterr);
    if (r < 0 || (r = connect_unix_retry(c, socket_path, deadline, start, reterr)) < 0 ||
        (r = conn_start(c, deadline, start, reterr)) < 0)
        return r;
    *ret = TAKE_PTR(c);
    return 0;
}

/* --- a VM's agent: vsock, or the first free of its virtio-serial ports --- */

/* One AF_VSOCK attempt, bounded by `until`: 0 connected (c->fd set), < 0 -errno. */
static int vsock_try(agent_conn *c, uint32_t cid, uint32_t port, uint64_t until)
{
    struct sockaddr_vm sa;
    agent_vsock_addr(cid, port, &sa);
    cleanup_close int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno != EINPROGRESS)
            return -errno;
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        int k;
        while ((k = poll(&pfd, 1, ms_until(until))) < 0 && errno == EINTR)
            ;
        if (k <= 0)
            return k < 0 ? -errno : -ETIMEDOUT;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -errno;
        if (err)
            return -err;
    }
    c->fd = TAKE_FD(fd);
    return 0;
}

/* The virtio-serial ports of the VM in dir: port 0 always, the others when their socket exists
 * (a VM started before it had several ports has agent.sock only). */
static size_t serial_ports(const char *dir, char socks[][PATH_MAX], char locks[][PATH_MAX])
{
    size_t n = 0;
    for (unsigned i = 0; i < AGENT_MAX_SERIAL_PORTS; i++) {
        char name[32];
        vm_agent_port_file(i, "sock", name, sizeof(name));
        snprintf(socks[n], PATH_MAX, "%s/%s", dir, name);
        if (i > 0 && access(socks[n], F_OK) < 0)
            continue;
        vm_agent_port_file(i, "lock", name, sizeof(name));
        snprintf(locks[n], PATH_MAX, "%s/%s", dir, name);
        n++;
    }
    return n;
}

/* A guest without a vsock listener (no driver, or not loaded yet) would cost every client the
 * vsock try: the first miss is written down in the VM directory and vsock is skipped for
 * AGENT_VSOCK_MISS_USEC after it (the file's mtime); a new launch removes the mark. */
bool agent_vsock_missed_recently(const char *dir)
{
    char path[PATH_MAX];
    struct stat st;
    if (snprintf(path, sizeof(path), "%s/" VM_FILE_VSOCK_MISS, dir) >= (int)sizeof(path) ||
        stat(path, &st) < 0)
        return false;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t age_usec = ((int64_t)now.tv_sec - (int64_t)st.st_mtim.tv_sec) * 1000000 +
                       ((int64_t)now.tv_nsec - (int64_t)st.st_mtim.tv_nsec) / 1000;
    return age_usec >= 0 && (uint64_t)age_usec < AGENT_VSOCK_MISS_USEC;
}

void agent_vsock_mark_missed(const char *dir)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/" VM_FILE_VSOCK_MISS, dir) >= (int)sizeof(path))
        return;
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        (void)futimens(fd, NULL); /* now, also when it existed */
        close(fd);
    }
}

int agent_connect_vm(const char *dir, uint32_t cid, uint64_t deadline, uint64_t queue_usec,
                     agent_conn **ret, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    if (agent_transport_pick(cid, agent_vhost_vsock_present(NULL)) == AGENT_TRANSPORT_VSOCK &&
        !agent_vsock_missed_recently(dir)) {
        /* every vsock connection is a session of its own: no lock. An agent that does not
         * listen (yet: the guest loads vsock late; or an older agent) leaves virtio-serial. */
        cleanup_free char *what = str_printf("vsock %u:%u", cid, AGENT_VSOCK_PORT);
        cleanup_agent agent_conn *c = NULL;
        int r = what ? conn_new(what, false, deadline, start, &c, reterr) : -ENOMEM;
        if (r < 0)
            return r;
        uint64_t until = start + VSOCK_TRY_USEC < deadline ? start + VSOCK_TRY_USEC : deadline;
        if (vsock_try(c, cid, AGENT_VSOCK_PORT, until) == 0) {
            if ((r = conn_start(c, deadline, start, reterr)) < 0)
                return r;
            *ret = TAKE_PTR(c);
            return 0;
        }
        agent_vsock_mark_missed(dir); /* the next clients go to the ports at once for a while */
    }

    char socks[AGENT_MAX_SERIAL_PORTS][PATH_MAX], locks[AGENT_MAX_SERIAL_PORTS][PATH_MAX];
    size_t n = serial_ports(dir, socks, locks);
    /* Ports busy with other vmctl processes' commands are waited for longer than an agent that
     * does not answer: a queue, not a failure. The connect budget starts once a port is ours. */
    uint64_t budget = deadline == UINT64_MAX ? UINT64_MAX : deadline - start;
    uint64_t port_deadline =
        deadline == UINT64_MAX || start + queue_usec <= deadline ? deadline : start + queue_usec;
    int lock_fds[AGENT_MAX_SERIAL_PORTS];
    for (size_t i = 0; i < n; i++)
        lock_fds[i] = -1;
    int r = 0;
    size_t got = n;
    for (;;) {
        for (size_t i = 0; i < n && got == n; i++) {
            if (lock_fds[i] < 0)
                lock_fds[i] = open(locks[i], O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (lock_fds[i] < 0) {
                r = err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot open '%s': %s", locks[i],
                             strerror(errno));
                err_detail(reterr, "path", "%s", locks[i]);
                goto out;
            }
            if (flock(lock_fds[i], LOCK_EX | LOCK_NB) == 0)
                got = i;
            else if (errno != EWOULDBLOCK && errno != EINTR) {
                r = err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot lock '%s': %s", locks[i],
                             strerror(errno));
                goto out;
            }
        }
        if (got < n)
            break;
        if (now_usec() >= port_deadline) {
            r = err_timeout(reterr, "agent connect", span_seconds(start, port_deadline),
                            "all %zu agent ports of the VM are in use by other vmctl processes "
                            "('%s' and the others are locked)",
                            n, locks[0]);
            err_detail(reterr, "path", "%s", locks[0]);
            goto out;
        }
        sleep_usec(5000);
    }
    if (budget != UINT64_MAX && now_usec() > start + budget / 2) {
        start = now_usec(); /* waited in the queue: the connect gets its whole budget again */
        deadline = start + budget;
    }
    {
        cleanup_agent agent_conn *c = NULL;
        r = conn_new(socks[got], false, deadline, start, &c, reterr);
        if (r < 0)
            goto out;
        c->lock_fd = lock_fds[got];
        lock_fds[got] = -1;
        if ((r = connect_unix_retry(c, socks[got], deadline, start, reterr)) < 0 ||
            (r = conn_start(c, deadline, start, reterr)) < 0)
            goto out;
        *ret = TAKE_PTR(c);
    }
out:
    for (size_t i = 0; i < n; i++)
        if (lock_fds[i] >= 0)
            close(lock_fds[i]);
    return r;
}

/* --- other transports: AF_VSOCK and Firecracker's hybrid vsock --- */

agent_transport agent_transport_pick(uint32_t cid, bool have_vhost_vsock)
{
    return have_vhost_vsock && cid >= AGENT_VSOCK_MIN_CID && cid != UINT32_MAX
               ? AGENT_TRANSPORT_VSOCK
               : AGENT_TRANSPORT_SERIAL;
}

bool agent_vhost_vsock_present(const char *dev)
{
    return access(dev ? dev : "/dev/vhost-vsock", R_OK | W_OK) == 0;
}

int agent_vsock_cid_busy(const char *dev, uint32_t cid)
{
    cleanup_close int fd = open(dev ? dev : "/dev/vhost-vsock", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    /* what QEMU's vhost-vsock does at start; the CID is ours until close */
    uint64_t guest_cid = cid;
    if (ioctl(fd, VHOST_VSOCK_SET_GUEST_CID, &guest_cid) == 0)
        return 0;
    return errno == EADDRINUSE ? 1 : -errno;
}

void agent_vsock_addr(uint32_t cid, uint32_t port, struct sockaddr_vm *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->svm_family = AF_VSOCK;
    sa->svm_cid = cid;
    sa->svm_port = port;
}

int agent_connect_vsock(uint32_t cid, uint32_t port, uint64_t deadline, agent_conn **ret,
                        vmctl_error **reterr)
{
    uint64_t start = now_usec();
    cleanup_agent agent_conn *c = NULL;
    cleanup_free char *what = str_printf("vsock %u:%u", cid, port);
    int r = what ? conn_new(what, false, deadline, start, &c, reterr) : -ENOMEM;
    if (r < 0)
        return r;
    struct sockaddr_vm sa;
    agent_vsock_addr(cid, port, &sa);
    for (;;) {
        c->fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "vsock socket: %s",
                            strerror(errno));
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        int e = errno;
        close(c->fd);
        c->fd = -1;
        /* ECONNRESET/ECONNREFUSED: the guest is up but the agent does not listen (yet) */
        if ((e != ECONNRESET && e != ECONNREFUSED && e != EINTR) || now_usec() >= deadline) {
            r = err_make(reterr, VMCTL_E_AGENT_FAILED, e,
                         "cannot connect to the agent on vsock %u:%u: %s", cid, port, strerror(e));
            err_detail(reterr, "cid", "%u", cid);
            return r;
        }
        sleep_usec(10 * 1000);
    }
    if ((r = conn_start(c, deadline, start, reterr)) < 0)
        return r;
    *ret = TAKE_PTR(c);
    return 0;
}

int agent_hybrid_handshake(int fd, uint32_t port, uint64_t deadline, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    char req[32];
    int n = snprintf(req, sizeof(req), "CONNECT %u\n", port);
    for (int off = 0; off < n;) {
        ssize_t w = send(fd, req + off, (size_t)(n - off), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, ms_until(deadline)) == 0)
                goto timeout;
            continue;
        }
        if (w < 0)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "hybrid vsock: cannot send CONNECT: %s", strerror(errno));
        off += (int)w;
    }
    /* the answer, read a byte at a time so that no frame byte after it is consumed */
    char line[64];
    size_t len = 0;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, ms_until(deadline));
        if (pr == 0)
            goto timeout;
        if (pr < 0 && errno == EINTR)
            continue;
        char ch;
        ssize_t k = recv(fd, &ch, 1, MSG_DONTWAIT);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k < 0)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "hybrid vsock: cannot read the answer to CONNECT %u: %s", port,
                            strerror(errno));
        if (k == 0)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, ECONNREFUSED,
                            "hybrid vsock: the connection was closed after CONNECT %u (nothing "
                            "listens on that port in the guest?)",
                            port);
        if (ch == '\n')
            break;
        if (len == sizeof(line) - 1)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, EBADMSG,
                            "hybrid vsock: garbled answer to CONNECT %u (no end of line in %zu "
                            "bytes)",
                            port, len);
        line[len++] = ch;
    }
    line[len] = 0;
    /* "OK <host port>" */
    const char *p = line + 3;
    bool ok = strncmp(line, "OK ", 3) == 0 && *p >= '0' && *p <= '9';
    while (ok && *p >= '0' && *p <= '9')
        p++;
    if (!ok || *p)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, ECONNREFUSED,
                        "hybrid vsock: CONNECT %u was not accepted: '%.40s'", port, line);
    return 0;
timeout:
    return err_timeout(reterr, "agent connect", span_seconds(start, deadline),
                       "hybrid vsock: no answer to CONNECT %u", port);
}

int agent_connect_hybrid(const char *uds_path, uint32_t port, uint64_t deadline, agent_conn **ret,
                         vmctl_error **reterr)
{
    uint64_t start = now_usec();
    cleanup_agent agent_conn *c = NULL;
    int r = conn_new(uds_path, true, deadline, start, &c, reterr);
    if (r < 0 || (r = connect_unix_retry(c, uds_path, deadline, start, reterr)) < 0)
        return r;
    if (fcntl(c->fd, F_SETFL, O_NONBLOCK) < 0)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "fcntl: %s", strerror(errno));
    if ((r = agent_hybrid_handshake(c->fd, port, deadline, reterr)) < 0 ||
        (r = conn_start(c, deadline, start, reterr)) < 0)
        return r;
    *ret = TAKE_PTR(c);
    return 0;
}

static void dispatch(agent_conn *c, const agent_hdr *h, const uint8_t *payload);

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

static int agent_error(const uint8_t *payload, uint32_t len, const char *what, int *guest_errno,
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
static int send_frame(agent_conn *c, uint8_t *frame, size_t n, uint64_t deadline,
                      const char *operation, vmctl_error **reterr)
{
    if (c->broken)
        return closed_error(c, reterr);
    agent_frame_set_version(frame, c->agent_version >= 2 ? 2 : 1);
    int r = send_all(c, frame, n, deadline, operation, now_usec(), reterr);
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

static agent_proc *proc_new(agent_conn *c, int kind, const char *what)
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
    p->id = new_id(c);
    while (proc_find(c, p->id) || p->id == c->keepalive_id)
        p->id = new_id(c);
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
        int r = agent_error(payload, h->len, p->what, &p->guest_errno, &e);
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
            int r = send_ping(c, &id, now + KEEPALIVE_USEC, "agent ping", now, reterr);
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
                                       : closed_error(c, reterr);
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
        int r = next_frame(c, wake, &h, &payload, reterr);
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
    int r = ensure_sync(c, deadline, "agent exec", reterr);
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
    agent_exec_args a = {
        .flags = (stdin_open ? AGENT_EXEC_STDIN_STREAM : 0) | (user ? AGENT_EXEC_USER : 0) |
                 (opts->tty ? AGENT_EXEC_TTY : 0),
        .timeout_ms = timeout_ms_of(opts->timeout_sec),
        .argv = opts->argv,
        .env = opts->env,
        .cwd = opts->cwd,
        .stdin_data = opts->stdin_data,
        .stdin_len = opts->stdin_len,
        .user = user,
        .tty_rows = opts->tty ? clamp_tty(opts->tty_rows) : 0,
        .tty_cols = opts->tty ? clamp_tty(opts->tty_cols) : 0,
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
    agent_proc *p = proc_new(c, PROC_EXEC, opts->argv[0]);
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
    r = send_frame(c, frame, (size_t)n, deadline, "agent exec", reterr);
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
    int r = ensure_sync(c, deadline, "agent put", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_FILES, "file copies", reterr)) < 0)
        return r;
    agent_proc *p = proc_new(c, PROC_PUT, path);
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
    r = send_frame(c, frame, (size_t)n, deadline, "agent put", reterr);
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
    int r = ensure_sync(c, deadline, "agent get", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_FILES, "file copies", reterr)) < 0)
        return r;
    agent_proc *p = proc_new(c, PROC_GET, path);
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
    r = send_frame(c, frame, (size_t)n, deadline, "agent get", reterr);
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
        int r = send_frame(p->c, frame, (size_t)n, deadline, "agent stdin", reterr);
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
    return send_frame(p->c, frame, (size_t)n, deadline, "agent stdin", reterr);
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
    return send_frame(p->c, frame, (size_t)n, deadline, "agent signal", reterr);
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
    return send_frame(p->c, frame, (size_t)n, deadline, "agent resize", reterr);
}

int agent_proc_wait(agent_proc *p, uint64_t deadline, vmctl_exec_status *status,
                    vmctl_error **reterr)
{
    uint64_t start = now_usec();
    while (!p->done) {
        if (!p->c)
            return closed_error(p->c, reterr);
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
    int r = send_frame(c, frame, (size_t)n, deadline, operation, reterr);
    if (r >= 0)
        r = agent_proc_wait(p, deadline, NULL, reterr);
    return r;
}

int agent_get_info(agent_conn *c, uint64_t deadline, agent_guest_info *ret, vmctl_error **reterr)
{
    int r = ensure_sync(c, deadline, "agent info", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_INFO, "info", reterr)) < 0)
        return r;
    agent_proc *p = proc_new(c, PROC_SIMPLE, "info");
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
    int r = ensure_sync(c, deadline, "agent metadata", reterr);
    if (r < 0 || (r = need_v2(c, AGENT_CAP_METADATA, "metadata", reterr)) < 0)
        return r;
    agent_proc *p = proc_new(c, PROC_SIMPLE, "metadata");
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
            return agent_error(payload, h.len, "shutdown", NULL, reterr);
    }
}
