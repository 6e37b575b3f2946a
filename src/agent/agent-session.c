/* SPDX-License-Identifier: MIT */
/* vmctl-agent: the output queue (whole frames per session) and the sessions: virtio-serial ports,
 * a --port path and AF_VSOCK connections. */
#include "agent.h"

/* --- output queue: whole frames per session, flushed as the host takes them --- */

uint8_t *out_reserve(struct session *s, size_t n)
{
    if (s->out_cap - s->out_len < n) {
        size_t cap = s->out_cap ? s->out_cap : 64 * 1024;
        while (cap - s->out_len < n)
            cap *= 2;
        uint8_t *p = realloc(s->out, cap);
        if (!p)
            return NULL;
        s->out = p;
        s->out_cap = cap;
    }
    return s->out + s->out_len;
}

/* Commit an encoded frame at p (from out_reserve) in the given protocol version. */
void out_commit(struct session *s, uint8_t *p, int n, uint8_t version)
{
    if (n > 0) {
        agent_frame_set_version(p, version);
        s->out_len += (size_t)n;
    }
}

void send_error(struct session *s, uint32_t id, uint8_t version, int errnum, const char *fmt, ...)
{
    char msg[AGENT_MAX_ERROR_MSG + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t need = AGENT_HDR_SIZE + 8 + strlen(msg) + 1;
    uint8_t *p = out_reserve(s, need);
    if (p)
        out_commit(s, p, agent_encode_error(p, need, id, (uint32_t)errnum, msg), version);
}

void send_simple(struct session *s, uint32_t id, uint8_t version, uint8_t type)
{
    uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + 64);
    if (!p)
        return;
    if (type == AGENT_MSG_PONG)
        out_commit(s, p,
                   agent_encode_pong3(p, AGENT_HDR_SIZE + 64, id, AGENT_CAPS_V2, VMCTL_VERSION,
                                      A.instance, A.metadata_applied ? AGENT_STATE_METADATA : 0),
                   version);
    else
        out_commit(s, p, agent_encode_ack(p, AGENT_HDR_SIZE + 64, id), version);
}

void send_u32(struct session *s, uint32_t id, uint8_t version, uint8_t type, uint32_t v)
{
    uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + 4);
    if (p)
        out_commit(s, p, agent_encode_u32_msg(p, AGENT_HDR_SIZE + 4, type, id, v), version);
}

/* Write what the host takes now. Returns false when the host went away. */
bool out_flush(struct session *s)
{
    size_t off = 0;
    bool ok = true;
    while (off < s->out_len) {
        ssize_t w = write(s->fd, s->out + off, s->out_len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            ok = errno == EAGAIN;
            break;
        }
        off += (size_t)w;
    }
    memmove(s->out, s->out + off, s->out_len - off);
    s->out_len -= off;
    return ok;
}

/* --- sessions: ports and vsock connections --- */

struct session *sess_new(enum sess_kind kind, const char *path)
{
    for (int i = 0; i < MAX_SESSIONS; i++) {
        struct session *s = &A.sess[i];
        if (s->used)
            continue;
        *s = (struct session){.used = true, .kind = kind, .fd = -1};
        s->in = malloc(AGENT_MAX_FRAME);
        s->path = path ? strdup(path) : NULL;
        if (!s->in || (path && !s->path)) {
            free(s->in);
            free(s->path);
            *s = (struct session){.fd = -1};
            return NULL;
        }
        return s;
    }
    return NULL;
}

static void sess_free(struct session *s)
{
    close_fd(&s->fd);
    free(s->in);
    free(s->out);
    free(s->path);
    *s = (struct session){.fd = -1};
}

int sess_count(enum sess_kind kind)
{
    int n = 0;
    for (int i = 0; i < MAX_SESSIONS; i++)
        n += A.sess[i].used && A.sess[i].kind == kind;
    return n;
}

void sess_attach(struct session *s, int fd)
{
    if (s->kind == SESS_VIRTIO) {
        /* O_ASYNC: the port raises a signal when the host connects or disconnects (and when
         * data arrives); with F_SETSIG a queued real-time one that names the port's fd. */
        fcntl(fd, F_SETOWN, getpid());
        if (A.sig_port)
            fcntl(fd, F_SETSIG, A.sig_port);
        if (fcntl(fd, F_SETFL, O_NONBLOCK | O_ASYNC) < 0)
            fcntl(fd, F_SETFL, O_NONBLOCK);
    } else {
        /* non-blocking: a virtio port blocks writes while the host is away */
        fcntl(fd, F_SETFL, O_NONBLOCK);
    }
    s->fd = fd;
    s->connected = true;
    s->in_len = 0;
    s->out_len = 0;
}

/* Open a device or a unix socket (--port, for running the agent against a host socket in
 * tests); -errno on failure. */
int open_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
        return fd < 0 ? -errno : fd;
    }
    int fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* org.vmctl.agent or org.vmctl.agent.<N> */
static bool agent_port_name(const char *name)
{
    size_t n = strlen(AGENT_PORT_NAME);
    if (strncmp(name, AGENT_PORT_NAME, n) != 0)
        return false;
    if (!name[n])
        return true;
    if (name[n] != '.' || !name[n + 1])
        return false;
    for (const char *p = name + n + 1; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

static bool port_known(const char *dev)
{
    for (int i = 0; i < MAX_SESSIONS; i++)
        if (A.sess[i].used && A.sess[i].kind == SESS_VIRTIO && strcmp(A.sess[i].path, dev) == 0)
            return true;
    return false;
}

/* Open every agent port in /sys/class/virtio-ports not open yet; the number opened. */
static int scan_ports(void)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return 0;
    int opened = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[512], name[128];
        snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, name, sizeof(name) - 1);
        close(fd);
        if (n <= 0)
            continue;
        name[n] = 0;
        name[strcspn(name, "\n")] = 0;
        if (!agent_port_name(name))
            continue;
        snprintf(path, sizeof(path), "/dev/%s", de->d_name);
        if (port_known(path) || sess_count(SESS_VIRTIO) >= MAX_PORTS)
            continue;
        int pfd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (pfd < 0)
            continue; /* the /dev node may not be there yet: next scan */
        struct session *s = sess_new(SESS_VIRTIO, path);
        if (!s) {
            close(pfd);
            continue;
        }
        sess_attach(s, pfd);
        logmsg("listening on %s (%s)", path, name);
        opened++;
    }
    closedir(d);
    return opened;
}

/* AF_VSOCK: listen on AGENT_VSOCK_PORT when the guest has a vsock transport. */
static int listen_vsock(void)
{
    if (access("/dev/vsock", F_OK) < 0)
        return -ENOENT;
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_vm sa = {
        .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = AGENT_VSOCK_PORT};
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, MAX_VSOCK_SESSIONS) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    A.listen_fd = fd;
    logmsg("listening on vsock port %u", AGENT_VSOCK_PORT);
    return 0;
}

/* Look for ports (and vsock) that appeared since the last look. */
void scan(uint64_t now)
{
    int found = scan_ports();
    if (A.listen_fd < 0 && !A.no_vsock && listen_vsock() == 0)
        found++;
    if (found || !sess_count(SESS_VIRTIO))
        A.scan_every = SCAN_FIRST_MS; /* more may follow at once (ports are named one by one) */
    else if (now - A.started_ms > SCAN_SETTLE_MS)
        A.scan_every = SCAN_SLOW_MS;
    else if ((A.scan_every *= 2) > SCAN_MAX_MS)
        A.scan_every = SCAN_MAX_MS;
    A.scan_ms = now + A.scan_every;
}

void accept_vsock(void)
{
    for (;;) {
        int fd = accept4(A.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        struct session *s =
            sess_count(SESS_VSOCK) < MAX_VSOCK_SESSIONS ? sess_new(SESS_VSOCK, NULL) : NULL;
        if (!s) {
            logmsg("refusing a vsock connection: %d sessions already", MAX_VSOCK_SESSIONS);
            close(fd);
            continue;
        }
        sess_attach(s, fd);
    }
}

/* The host of session s went away: forget everything that belonged to it. */
void host_disconnected(struct session *s)
{
    int idx = (int)(s - A.sess);
    bool busy = s->in_len || s->out_len;
    for (int i = 0; i < MAX_JOBS; i++)
        busy |= A.jobs[i].used && A.jobs[i].sess == idx;
    if (s->connected && busy)
        logmsg("host disconnected (%s)", s->path ? s->path : "vsock");
    s->connected = false;
    s->recheck_ms = now_ms() + RECHECK_MS;
    s->in_len = 0;
    s->out_len = 0;
    jobs_abandon(idx);
    if (s->kind == SESS_VSOCK) {
        sess_free(s);
    } else if (s->kind == SESS_PATH) {
        close_fd(&s->fd);
        s->recheck_ms = now_ms() + REOPEN_MS;
    } else if (s->kind == SESS_VIRTIO && s->fd >= 0) {
        /* The host may be back already: its connect's SIGIO can come in the same poll round as
         * the hangup it follows, and the signals are handled first, so that signal is spent.
         * A port whose host is connected does not poll POLLHUP: take the new client now, not at
         * its next data (the host's ping resend, 600 ms) or the re-check. */
        struct pollfd p = {.fd = s->fd, .events = POLLIN};
        if (poll(&p, 1, 0) >= 0 && !(p.revents & (POLLHUP | POLLERR | POLLNVAL)))
            s->connected = true;
    }
}
