/* SPDX-License-Identifier: MIT */
/* Transports of the agent protocol (docs/agent-protocol.md): the byte streams a session runs on.
 * A unix socket (QEMU's virtio-serial chardevs, one client per port under a flock), AF_VSOCK,
 * and Firecracker's hybrid vsock (a unix socket and a CONNECT handshake). */
#include <errno.h>
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

#include "agent-conn.h"
#include "error.h"
#include "util/util.h"

/* How long agent_connect_endpoint gives AF_VSOCK before it uses virtio-serial instead. */
#define VSOCK_TRY_USEC (200 * 1000)

static uint32_t random_id(void)
{
    uint32_t v = 0;
    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = (uint32_t)(now_usec() ^ ((uint64_t)getpid() << 16));
    return v ? v : 1;
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
        int r = err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot open '%s'", lock_path);
        err_detail(reterr, "path", "%s", lock_path);
        return r;
    }
    for (;;) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            break;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot lock '%s'", lock_path);
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
        return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot set up the agent socket");
    return agent_send_ping(c, &c->ping_lo, deadline, "agent connect", start, reterr);
}

/* connect() to a unix socket, retrying while it is missing or nobody listens yet (QEMU creates
 * the socket early, but the caller may be quicker). */
static int connect_unix_retry(agent_conn *c, const char *socket_path, uint64_t deadline,
                              uint64_t start, vmctl_error **reterr)
{
    for (;;) {
        c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno,
                            "cannot create a socket for the agent");
        int r = connect_unix(c->fd, socket_path);
        if (r == 0)
            return 0;
        close(c->fd);
        c->fd = -1;
        if (r != -ENOENT && r != -ECONNREFUSED) {
            r = err_make(reterr, VMCTL_E_AGENT_FAILED, r, "cannot connect to the agent socket '%s'",
                         socket_path);
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

/* --- an endpoint: vsock, or the first free of its virtio-serial ports --- */

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

/* A guest without a vsock listener (no driver, or not loaded yet) would cost every client the
 * vsock try: the first miss is written down (the endpoint's vsock_miss file, which the backend
 * removes at a new launch) and vsock is skipped for AGENT_VSOCK_MISS_USEC after its mtime. */
bool agent_vsock_missed_recently(const char *mark)
{
    struct stat st;
    if (!mark || !*mark || stat(mark, &st) < 0)
        return false;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t age_usec = ((int64_t)now.tv_sec - (int64_t)st.st_mtim.tv_sec) * 1000000 +
                       ((int64_t)now.tv_nsec - (int64_t)st.st_mtim.tv_nsec) / 1000;
    return age_usec >= 0 && (uint64_t)age_usec < AGENT_VSOCK_MISS_USEC;
}

void agent_vsock_mark_missed(const char *mark)
{
    if (!mark || !*mark)
        return;
    int fd = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        (void)futimens(fd, NULL); /* now, also when it existed */
        close(fd);
    }
}

/* The first free of the endpoint's virtio-serial ports (a flock on its lock file), waiting for
 * one while all are taken. */
static int connect_serial(const agent_endpoint *ep, uint64_t start, uint64_t deadline,
                          uint64_t queue_usec, agent_conn **ret, vmctl_error **reterr)
{
    size_t n = ep->n_ports < AGENT_SERIAL_PORTS ? ep->n_ports : AGENT_SERIAL_PORTS;
    if (n == 0)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, ENOENT, "the vm has no agent port");
    /* Ports busy with other vmctl processes' commands are waited for longer than an agent that
     * does not answer: a queue, not a failure. The connect budget starts once a port is ours. */
    uint64_t budget = deadline == UINT64_MAX ? UINT64_MAX : deadline - start;
    uint64_t port_deadline =
        deadline == UINT64_MAX || start + queue_usec <= deadline ? deadline : start + queue_usec;
    int lock_fds[AGENT_SERIAL_PORTS];
    for (size_t i = 0; i < n; i++)
        lock_fds[i] = -1;
    int r = 0;
    size_t got = n;
    for (;;) {
        for (size_t i = 0; i < n && got == n; i++) {
            const char *lock = ep->ports[i].lock;
            if (lock_fds[i] < 0)
                lock_fds[i] = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
            if (lock_fds[i] < 0) {
                r = err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot open '%s'", lock);
                err_detail(reterr, "path", "%s", lock);
                goto out;
            }
            if (flock(lock_fds[i], LOCK_EX | LOCK_NB) == 0)
                got = i;
            else if (errno != EWOULDBLOCK && errno != EINTR) {
                r = err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot lock '%s'", lock);
                goto out;
            }
        }
        if (got < n)
            break;
        if (now_usec() >= port_deadline) {
            r = err_timeout(reterr, "agent connect", span_seconds(start, port_deadline),
                            "all %zu agent ports of the VM are in use by other vmctl processes "
                            "('%s' and the others are locked)",
                            n, ep->ports[0].lock);
            err_detail(reterr, "path", "%s", ep->ports[0].lock);
            goto out;
        }
        sleep_usec(5000);
    }
    if (budget != UINT64_MAX && now_usec() > start + budget / 2) {
        start = now_usec(); /* waited in the queue: the connect gets its whole budget again */
        deadline = start + budget;
    }
    {
        const char *sock = ep->ports[got].sock;
        cleanup_agent agent_conn *c = NULL;
        r = conn_new(sock, false, deadline, start, &c, reterr);
        if (r < 0)
            goto out;
        c->lock_fd = lock_fds[got];
        lock_fds[got] = -1;
        if ((r = connect_unix_retry(c, sock, deadline, start, reterr)) < 0 ||
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

int agent_connect_endpoint(const agent_endpoint *ep, uint64_t deadline, uint64_t queue_usec,
                           agent_conn **ret, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    switch (ep->kind) {
    case AGENT_ENDPOINT_HYBRID_VSOCK:
        return agent_connect_hybrid(ep->path, ep->port, deadline, ret, reterr);
    case AGENT_ENDPOINT_VSOCK:
        if (ep->n_ports == 0) /* vsock alone: its whole budget */
            return agent_connect_vsock(ep->cid, ep->port, deadline, ret, reterr);
        if (!agent_vsock_missed_recently(ep->vsock_miss)) {
            /* every vsock connection is a session of its own: no lock. An agent that does not
             * listen (yet: the guest loads vsock late; or an older agent) leaves virtio-serial. */
            cleanup_free char *what = str_printf("vsock %u:%u", ep->cid, ep->port);
            cleanup_agent agent_conn *c = NULL;
            int r = what ? conn_new(what, false, deadline, start, &c, reterr) : -ENOMEM;
            if (r < 0)
                return r;
            uint64_t until = start + VSOCK_TRY_USEC < deadline ? start + VSOCK_TRY_USEC : deadline;
            if (vsock_try(c, ep->cid, ep->port, until) == 0) {
                if ((r = conn_start(c, deadline, start, reterr)) < 0)
                    return r;
                *ret = TAKE_PTR(c);
                return 0;
            }
            /* the next clients go to the ports at once for a while */
            agent_vsock_mark_missed(ep->vsock_miss);
        }
        break;
    case AGENT_ENDPOINT_SERIAL:
        break;
    }
    return connect_serial(ep, start, deadline, queue_usec, ret, reterr);
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
            return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot create a vsock socket");
        if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        int e = errno;
        close(c->fd);
        c->fd = -1;
        /* ECONNRESET/ECONNREFUSED: the guest is up but the agent does not listen (yet) */
        if ((e != ECONNRESET && e != ECONNREFUSED && e != EINTR) || now_usec() >= deadline) {
            r = err_make(reterr, VMCTL_E_AGENT_FAILED, e,
                         "cannot connect to the agent on vsock %u:%u", cid, port);
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
                            "hybrid vsock: cannot send CONNECT");
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
                            "hybrid vsock: cannot read the answer to CONNECT %u", port);
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
        return err_make(reterr, VMCTL_E_AGENT_FAILED, errno, "cannot set up the agent socket");
    if ((r = agent_hybrid_handshake(c->fd, port, deadline, reterr)) < 0 ||
        (r = conn_start(c, deadline, start, reterr)) < 0)
        return r;
    *ret = TAKE_PTR(c);
    return 0;
}
