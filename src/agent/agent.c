/* SPDX-License-Identifier: MIT */
/* vmctl-agent: the guest side of docs/agent-protocol.md (v2, answers v1 hosts too). A
 * single-threaded poll loop over its host connections, a signalfd (SIGCHLD, SIGIO, termination)
 * and the fds of the running jobs: commands (EXEC, several at once), file uploads (FILE_PUT) and
 * downloads (FILE_GET).
 *
 * Sessions: every host connection is a session of its own, with its own input buffer, output
 * queue and jobs: each virtio-serial port named org.vmctl.agent or org.vmctl.agent.<N>, and each
 * accepted AF_VSOCK connection on port 1024 (up to MAX_VSOCK_SESSIONS at once). A job's frames go
 * to its session; a session whose host disconnects or sends NEW_SESSION loses only its own jobs.
 * Static; may run as PID 1, and then reaps every child and never exits. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "agent-proto.h"
#include "config.h"

#define DEFAULT_PATH       "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define OUT_HIGH_WATER     (512u * 1024u) /* stop reading a session's jobs' fds above this */
#define EXIT_GRACE_MS      100            /* wait this long for pipes held by background jobs */
#define RECHECK_MS         1000  /* re-poll a disconnected port this often (SIGIO backup) */
#define REOPEN_MS          5     /* retry opening a --port path this often */
#define SCAN_FIRST_MS      5     /* look for new ports this often at first ... */
#define SCAN_MAX_MS        1000  /* ... backing off to this while the guest boots ... */
#define SCAN_SLOW_MS       30000 /* ... and to this once SCAN_SETTLE_MS passed */
#define SCAN_SETTLE_MS     60000
#define SHUTDOWN_FLUSH_MS  2000
#define MAX_SESSION_JOBS   64 /* requests at once per session (protocol: a 65th is EBUSY) */
#define MAX_JOBS           128
#define MAX_PORTS          AGENT_SERIAL_PORTS /* virtio-serial ports: org.vmctl.agent, org.vmctl.agent.1, ... */
#define MAX_VSOCK_SESSIONS 16
#define MAX_SESSIONS       (MAX_PORTS + MAX_VSOCK_SESSIONS)
#define FILE_CHUNK         (256u * 1024u)            /* FILE_GET data frames */
#define ACK_EVERY          (64u * 1024u)             /* STDIN_ACK at least this often */
#define STDIN_QUEUE_MAX    (4u * AGENT_STDIN_WINDOW) /* a host ignoring the window is cut off */
#define META_DIR           "/run/vmctl"
/* A partial frame that gets no new byte for this long is dropped: its sender died, and a quick
 * reconnect hid the disconnect from us (QEMU's close and open reach the guest together). */
#define STALL_MS 500

enum job_kind { JOB_EXEC, JOB_PUT, JOB_GET };

struct job {
    bool used;
    enum job_kind kind;
    int sess; /* index in A.sess: where its frames go */
    uint32_t id;
    uint8_t version; /* frames about this job are sent in the version of its request */
    pid_t pid;       /* EXEC: the command (0 once reaped and reported) */
    int out_fd, err_fd, in_fd;
    uint8_t *inq; /* stdin bytes not yet written */
    size_t inq_len, inq_off, inq_cap;
    bool in_eof;          /* no more input is coming */
    bool stream;          /* stdin fed by STDIN frames (acknowledged) */
    int pty_fd;           /* AGENT_EXEC_TTY: the terminal's master (RESIZE), else -1 */
    size_t unacked;       /* stdin bytes taken but not acknowledged yet */
    uint64_t deadline_ms; /* 0: none */
    uint64_t exited_ms;   /* 0: still running */
    uint64_t activity_ms;
    int status;
    bool timed_out;
    /* FILE_PUT */
    char *path, *tmp_path;
    uint32_t mode;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
    int put_errno;
};

enum sess_kind {
    SESS_VIRTIO, /* a virtio-serial port: stays open; a disconnect waits for SIGIO */
    SESS_PATH,   /* --port PATH (a device or a unix socket): closed and reopened */
    SESS_VSOCK,  /* an accepted AF_VSOCK connection: closed and forgotten on disconnect */
};

/* One host connection. The buffers are allocated when the session opens, never per frame. */
struct session {
    bool used;
    enum sess_kind kind;
    int fd;         /* -1: SESS_PATH waiting to reopen */
    bool connected; /* false after POLLHUP until SIGIO or the re-check */
    uint64_t recheck_ms;
    char *path;  /* SESS_VIRTIO/SESS_PATH: the device or socket */
    uint8_t *in; /* AGENT_MAX_FRAME bytes */
    size_t in_len;
    uint64_t in_last_ms; /* when the last byte arrived */
    uint8_t *out;
    size_t out_len, out_cap;
};

static struct {
    const char *port_path; /* --port: the only session, no sysfs scan, no vsock */
    int listen_fd;         /* AF_VSOCK listener, -1 when not listening */
    bool no_vsock;
    uint64_t scan_ms, scan_every; /* next look for ports (and /dev/vsock), and the interval */
    uint64_t started_ms;
    int sigfd;
    int sig_port; /* the real-time signal the virtio ports raise (F_SETSIG), 0: plain SIGIO */
    bool pid1;
    struct session sess[MAX_SESSIONS];
    struct job jobs[MAX_JOBS];
    int shutdown_action; /* -1: none pending */
    unsigned long garbage;
    uint32_t instance;     /* in PONG: lets a host notice that the agent restarted */
    bool metadata_applied; /* in PONG (AGENT_STATE_METADATA): the host need not push it again */
} A = {.listen_fd = -1, .sigfd = -1, .shutdown_action = -1};

#define SESS(j) (&A.sess[(j)->sess])

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* one write: lines from the agent do not interleave with the command's */
    static const char prefix[] = "vmctl-agent: ";
    char full[sizeof(prefix) + sizeof(line)];
    memcpy(full, prefix, sizeof(prefix) - 1);
    memcpy(full + sizeof(prefix) - 1, line, (size_t)n);
    ssize_t w = write(STDERR_FILENO, full, sizeof(prefix) - 1 + (size_t)n);
    (void)w;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* --- output queue: whole frames per session, flushed as the host takes them --- */

static uint8_t *out_reserve(struct session *s, size_t n)
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
static void out_commit(struct session *s, uint8_t *p, int n, uint8_t version)
{
    if (n > 0) {
        agent_frame_set_version(p, version);
        s->out_len += (size_t)n;
    }
}

static void send_error(struct session *s, uint32_t id, uint8_t version, int errnum, const char *fmt,
                       ...) __attribute__((format(printf, 5, 6)));
static void send_error(struct session *s, uint32_t id, uint8_t version, int errnum, const char *fmt,
                       ...)
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

static void send_simple(struct session *s, uint32_t id, uint8_t version, uint8_t type)
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

static void send_u32(struct session *s, uint32_t id, uint8_t version, uint8_t type, uint32_t v)
{
    uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + 4);
    if (p)
        out_commit(s, p, agent_encode_u32_msg(p, AGENT_HDR_SIZE + 4, type, id, v), version);
}

/* Write what the host takes now. Returns false when the host went away. */
static bool out_flush(struct session *s)
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

static struct session *sess_new(enum sess_kind kind, const char *path)
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

static int sess_count(enum sess_kind kind)
{
    int n = 0;
    for (int i = 0; i < MAX_SESSIONS; i++)
        n += A.sess[i].used && A.sess[i].kind == kind;
    return n;
}

static void sess_attach(struct session *s, int fd)
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
static int open_path(const char *path)
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
static void scan(uint64_t now)
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

static void accept_vsock(void)
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

static void jobs_abandon(int sess);

/* The host of session s went away: forget everything that belonged to it. */
static void host_disconnected(struct session *s)
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
    }
}

/* --- jobs --- */

static struct job *job_find(struct session *s, uint32_t id)
{
    int idx = (int)(s - A.sess);
    for (int i = 0; i < MAX_JOBS; i++)
        if (A.jobs[i].used && A.jobs[i].sess == idx && A.jobs[i].id == id)
            return &A.jobs[i];
    return NULL;
}

static int session_jobs(int idx)
{
    int n = 0;
    for (int i = 0; i < MAX_JOBS; i++)
        n += A.jobs[i].used && A.jobs[i].sess == idx;
    return n;
}

static struct job *job_new(struct session *s, uint32_t id, uint8_t version, enum job_kind kind)
{
    int idx = (int)(s - A.sess);
    bool room = session_jobs(idx) < MAX_SESSION_JOBS;
    if (job_find(s, id)) {
        send_error(s, id, version, EEXIST, "request id %u is already in use", id);
        return NULL;
    }
    for (int i = 0; i < MAX_JOBS && room; i++) {
        struct job *j = &A.jobs[i];
        if (!j->used) {
            *j = (struct job){.used = true,
                              .kind = kind,
                              .sess = idx,
                              .id = id,
                              .version = version,
                              .out_fd = -1,
                              .err_fd = -1,
                              .in_fd = -1,
                              .pty_fd = -1};
            return j;
        }
    }
    send_error(s, id, version, EBUSY, "too many requests at once (at most %d)", MAX_SESSION_JOBS);
    return NULL;
}

static void job_free(struct job *j)
{
    close_fd(&j->out_fd);
    close_fd(&j->err_fd);
    close_fd(&j->in_fd);
    close_fd(&j->pty_fd);
    free(j->inq);
    if (j->tmp_path)
        unlink(j->tmp_path);
    free(j->tmp_path);
    free(j->path);
    *j = (struct job){.out_fd = -1, .err_fd = -1, .in_fd = -1, .pty_fd = -1};
}

static void job_kill(struct job *j, int sig)
{
    if (j->kind == JOB_EXEC && j->pid > 0 && !j->exited_ms) {
        kill(-j->pid, sig);
        kill(j->pid, sig);
    }
}

/* Kill the process group of every command of session sess (-1: of all sessions); zombies are
 * reaped by the SIGCHLD handler. */
static void jobs_abandon(int sess)
{
    for (int i = 0; i < MAX_JOBS; i++) {
        struct job *j = &A.jobs[i];
        if (!j->used || (sess >= 0 && j->sess != sess))
            continue;
        if (j->kind == JOB_EXEC)
            logmsg("abandoned command (pid %d)", (int)j->pid);
        job_kill(j, SIGKILL);
        job_free(j);
    }
}

static int running_jobs(void)
{
    int n = 0;
    for (int i = 0; i < MAX_JOBS; i++)
        n += A.jobs[i].used;
    return n;
}

static int inq_append(struct job *j, const uint8_t *data, size_t len)
{
    if (!len)
        return 0;
    if (j->inq_off && j->inq_off == j->inq_len)
        j->inq_off = j->inq_len = 0;
    if (j->inq_cap - j->inq_len < len) {
        if (j->inq_off) {
            memmove(j->inq, j->inq + j->inq_off, j->inq_len - j->inq_off);
            j->inq_len -= j->inq_off;
            j->inq_off = 0;
        }
        size_t cap = j->inq_cap ? j->inq_cap : 64 * 1024;
        while (cap - j->inq_len < len)
            cap *= 2;
        if (cap != j->inq_cap) {
            uint8_t *p = realloc(j->inq, cap);
            if (!p)
                return -ENOMEM;
            j->inq = p;
            j->inq_cap = cap;
        }
    }
    memcpy(j->inq + j->inq_len, data, len);
    j->inq_len += len;
    return 0;
}

static void job_ack(struct job *j, bool force)
{
    if (j->stream && j->unacked && (force || j->unacked >= ACK_EVERY)) {
        send_u32(SESS(j), j->id, j->version, AGENT_MSG_STDIN_ACK, (uint32_t)j->unacked);
        j->unacked = 0;
    }
}

/* Filled by a vfork()ed child that failed before or at exec (it shares our memory). */
struct exec_fail {
    int err;
    int stage; /* 1 chdir, 2 exec, 3 switching user */
};

/* EXEC with AGENT_EXEC_USER: who to become (resolved in the agent, applied in the child). */
#define RUN_AS_MAX_GROUPS 64
struct run_as {
    uid_t uid;
    gid_t gid;
    gid_t groups[RUN_AS_MAX_GROUPS];
    size_t n_groups;
    char name[64];
    char home[256];
    char env_home[8 + 256], env_user[8 + 64], env_logname[10 + 64];
};

/* Split a colon-separated line of /etc/passwd or /etc/group in place; returns the field count. */
static size_t split_fields(char *line, char **f, size_t max)
{
    size_t n = 0;
    line[strcspn(line, "\n")] = 0;
    while (n < max) {
        f[n++] = line;
        char *c = strchr(line, ':');
        if (!c)
            break;
        *c = 0;
        line = c + 1;
    }
    return n;
}

static bool parse_id(const char *s, unsigned long *v)
{
    char *end = NULL;
    if (!*s || *s < '0' || *s > '9')
        return false;
    errno = 0;
    *v = strtoul(s, &end, 10);
    return !errno && !*end && *v < 0xffffffffUL;
}

/* "NAME", "UID" or "UID:GID" against the guest's /etc/passwd and /etc/group (a static agent has
 * no NSS). A number needs no passwd entry; a name does. 0, or -errno with *why set. */
static int resolve_user(const char *spec, struct run_as *u, const char **why)
{
    memset(u, 0, sizeof(*u));
    char idpart[32] = "";
    unsigned long uid = 0, gid = 0;
    bool by_id = false, have_gid = false;
    const char *colon = strchr(spec, ':');
    if (strlen(spec) < sizeof(idpart)) {
        memcpy(idpart, spec, strlen(spec) + 1);
        if (colon)
            idpart[colon - spec] = 0;
        by_id = parse_id(idpart, &uid);
        have_gid = by_id && colon && parse_id(colon + 1, &gid);
    }
    if ((colon && !have_gid) || (!by_id && strlen(spec) >= sizeof(u->name))) {
        *why = "expected NAME, UID or UID:GID";
        return -EINVAL;
    }
    bool found = false;
    FILE *pw = fopen("/etc/passwd", "re");
    char *line = NULL;
    size_t cap = 0;
    while (pw && !found && getline(&line, &cap, pw) > 0) {
        char *f[7];
        unsigned long puid, pgid;
        if (split_fields(line, f, 7) < 7 || !parse_id(f[2], &puid) || !parse_id(f[3], &pgid))
            continue;
        if (by_id ? puid == uid : strcmp(f[0], spec) == 0) {
            found = true;
            uid = puid;
            if (!have_gid)
                gid = pgid;
            snprintf(u->name, sizeof(u->name), "%s", f[0]);
            snprintf(u->home, sizeof(u->home), "%s", f[5][0] ? f[5] : "/");
        }
    }
    if (pw)
        fclose(pw);
    if (!found && !by_id) {
        free(line);
        *why = "no such user in the guest's /etc/passwd";
        return -ENOENT;
    }
    if (!found) { /* a bare number: its own group, home / */
        if (!have_gid)
            gid = uid;
        snprintf(u->name, sizeof(u->name), "%lu", uid);
        snprintf(u->home, sizeof(u->home), "/");
    }
    u->uid = (uid_t)uid;
    u->gid = (gid_t)gid;
    u->groups[u->n_groups++] = u->gid;
    FILE *gr = found ? fopen("/etc/group", "re") : NULL;
    while (gr && getline(&line, &cap, gr) > 0 && u->n_groups < RUN_AS_MAX_GROUPS) {
        char *f[4];
        unsigned long g;
        if (split_fields(line, f, 4) < 4 || !parse_id(f[2], &g) || g == gid)
            continue;
        for (char *m = strtok(f[3], ","); m; m = strtok(NULL, ","))
            if (strcmp(m, u->name) == 0) {
                u->groups[u->n_groups++] = (gid_t)g;
                break;
            }
    }
    if (gr)
        fclose(gr);
    free(line);
    snprintf(u->env_home, sizeof(u->env_home), "HOME=%s", u->home);
    snprintf(u->env_user, sizeof(u->env_user), "USER=%s", u->name);
    snprintf(u->env_logname, sizeof(u->env_logname), "LOGNAME=%s", u->name);
    return 0;
}

static void __attribute__((noreturn))
child_run(char **argv, char **envp, const char *cwd, int in, int out, int err, bool tty,
          const struct run_as *u, volatile struct exec_fail *f);

/* vfork in a frame of its own: nothing of the caller's is live across it, so the compiler need
 * not assume the child clobbered the caller's registers (-Wclobbered). */
static __attribute__((noinline)) pid_t spawn_child(char **argv, char **envp, const char *cwd,
                                                   int in, int out, int err, bool tty,
                                                   const struct run_as *u,
                                                   volatile struct exec_fail *f)
{
    pid_t pid = vfork();
    if (pid == 0)
        child_run(argv, envp, cwd, in, out, err, tty, u, f);
    return pid;
}

/* environ with req's K=V entries replacing or added (a command's environment is the agent's plus
 * the request's). The strings are borrowed. */
static char **merge_env(char **add, size_t n_add)
{
    size_t n = 0;
    while (environ && environ[n])
        n++;
    char **e = calloc(n + n_add + 1, sizeof(char *));
    if (!e)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool replaced = false;
        for (size_t a = 0; a < n_add && !replaced; a++)
            replaced = strncmp(add[a], environ[i], klen) == 0 && add[a][klen] == '=';
        if (!replaced)
            e[k++] = environ[i];
    }
    for (size_t a = 0; a < n_add; a++) {
        const char *eq = strchr(add[a], '=');
        bool dup = false; /* a later entry of the request wins, as with putenv */
        for (size_t b = a + 1; b < n_add && !dup; b++)
            dup = strncmp(add[a], add[b], (size_t)(eq - add[a]) + 1) == 0;
        if (!dup)
            e[k++] = add[a];
    }
    return e;
}

/* The child of vfork(): it runs on the agent's memory until execve, so it only makes system
 * calls and reports a failure through *f (never returns, never touches the heap). vfork rather
 * than fork: under TCG, copying the agent's page tables and taking the copy-on-write faults
 * afterwards was the largest part of an exec of `true`. */
static void __attribute__((noreturn))
child_run(char **argv, char **envp, const char *cwd, int in, int out, int err, bool tty,
          const struct run_as *u, volatile struct exec_fail *f)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGPIPE, &dfl, NULL); /* per process: not shared with the agent */
    setsid();
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) {
        f->err = errno;
        f->stage = 2;
        _exit(127);
    }
    /* a terminal: the new session's controlling terminal (job control, Ctrl-C as SIGINT) */
    if (tty && ioctl(0, TIOCSCTTY, 0) < 0) {
        f->err = errno;
        f->stage = 4;
        _exit(127);
    }
    /* raw system calls: they change this task only (glibc's wrappers would try to reach every
     * thread of the process, whose memory we share until exec) */
    if (u && (syscall(SYS_setgroups, u->n_groups, u->groups) < 0 ||
              syscall(SYS_setgid, u->gid) < 0 || syscall(SYS_setuid, u->uid) < 0)) {
        f->err = errno;
        f->stage = 3;
        _exit(127);
    }
    if (chdir(cwd) < 0) {
        f->err = errno;
        f->stage = 1;
        _exit(127);
    }
    execvpe(argv[0], argv, envp);
    f->err = errno;
    f->stage = 2;
    /* as a shell: 127 when there is no such command, 126 when it cannot be executed */
    _exit(errno == ENOENT ? 127 : 126);
}

#define DEVPTS_MAGIC 0x1cd1

/* A new pseudo-terminal of rows x cols (0: left as the kernel makes it): its master and its
 * slave (both O_CLOEXEC), or -errno. Mounts /dev/pts when nothing is there yet (the default
 * guest's /init mounts it in the background while the agent starts). */
static int pty_open(uint32_t rows, uint32_t cols, int *master, int *slave)
{
    struct statfs sf;
    if (statfs("/dev/pts", &sf) < 0 || sf.f_type != DEVPTS_MAGIC) {
        mkdir("/dev/pts", 0755);
        if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                  "mode=0620,ptmxmode=0666") < 0 &&
            errno != EBUSY)
            logmsg("cannot mount /dev/pts: %s", strerror(errno));
    }
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0)
        return -errno;
    if (unlockpt(m) < 0) {
        int e = errno;
        close(m);
        return -e;
    }
    /* the peer by fd (no path lookup), else by its name */
    int sl = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (sl < 0) {
        char name[64];
        if (ptsname_r(m, name, sizeof(name)) != 0 ||
            (sl = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
            int e = errno;
            close(m);
            return -e;
        }
    }
    if (rows && cols) {
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        ioctl(m, TIOCSWINSZ, &ws);
    }
    *master = m;
    *slave = sl;
    return 0;
}

static void exec_start(struct session *s, uint32_t id, uint8_t version, const agent_exec_req *req)
{
    if (version < 2 && req->flags) {
        send_error(s, id, version, EINVAL, "malformed EXEC request");
        return;
    }
    struct job *j = job_new(s, id, version, JOB_EXEC);
    if (!j)
        return;
    bool stream = req->flags & AGENT_EXEC_STDIN_STREAM;
    bool tty = req->flags & AGENT_EXEC_TTY;
    bool has_input = !tty && (stream || req->stdin_len);
    size_t argc = req->argv.count, envc = req->env.count;
    struct run_as *u = NULL;
    if (req->user) {
        const char *why = NULL;
        int r;
        if (!(u = malloc(sizeof(*u)))) {
            send_error(s, id, version, ENOMEM, "out of memory");
            job_free(j);
            return;
        }
        if ((r = resolve_user(req->user, u, &why)) < 0) {
            send_error(s, id, version, -r, "cannot run as user '%s': %s", req->user, why);
            free(u);
            job_free(j);
            return;
        }
    }
    char **argv = calloc(argc + 1, sizeof(char *));
    char **env = calloc(envc + 4, sizeof(char *));
    int pout[2] = {-1, -1}, perr[2] = {-1, -1}, pin[2] = {-1, -1};
    int devnull = -1, master = -1, slave = -1, pty_dup = -1;
    char **envp = NULL;
    bool ok = false;
    if (!argv || !env || inq_append(j, req->stdin_data, req->stdin_len) < 0) {
        send_error(s, id, version, ENOMEM, "out of memory");
        goto out;
    }
    size_t i = 0;
    for (const char *a = agent_strv_next(&req->argv, NULL); a; a = agent_strv_next(&req->argv, a))
        argv[i++] = (char *)a;
    i = 0;
    if (u) { /* the user's own first: the request's entries win */
        env[i++] = u->env_home;
        env[i++] = u->env_user;
        env[i++] = u->env_logname;
    }
    for (const char *e = agent_strv_next(&req->env, NULL); e; e = agent_strv_next(&req->env, e))
        env[i++] = (char *)e;
    envc = i;

    if (tty) {
        /* one terminal for stdin, stdout and stderr; the master is read (out), written (in)
         * and resized (pty) through three descriptors, each closed on its own */
        int r = pty_open(req->tty_rows, req->tty_cols, &master, &slave);
        if (r < 0) {
            send_error(s, id, version, -r, "cannot create a terminal: %s", strerror(-r));
            goto out;
        }
        if (u) { /* the user owns its terminal, as after a login */
            if (fchown(slave, u->uid, u->gid) < 0)
                logmsg("cannot chown the terminal: %s", strerror(errno));
        }
        pout[0] = master;
        master = -1;
        if ((pin[1] = fcntl(pout[0], F_DUPFD_CLOEXEC, 3)) < 0 ||
            (pty_dup = fcntl(pout[0], F_DUPFD_CLOEXEC, 3)) < 0) {
            send_error(s, id, version, errno, "cannot create a terminal: %s", strerror(errno));
            goto out;
        }
    } else if (pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0 ||
               (has_input ? pipe2(pin, O_CLOEXEC)
                          : (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC))) < 0) {
        send_error(s, id, version, errno, "cannot create pipes: %s", strerror(errno));
        goto out;
    }
    envp = merge_env(env, envc);
    if (!envp) {
        send_error(s, id, version, ENOMEM, "out of memory");
        goto out;
    }
    volatile struct exec_fail f = {0, 0};
    const char *cwd = req->cwd ? req->cwd : "/";
    int in = tty ? slave : has_input ? pin[0] : devnull;
    /* the parent resumes once the child called execve (or _exit): f is then final */
    pid_t pid = tty ? spawn_child(argv, envp, cwd, slave, slave, slave, true, u, &f)
                    : spawn_child(argv, envp, cwd, in, pout[1], perr[1], false, u, &f);
    if (pid < 0) {
        send_error(s, id, version, errno, "cannot fork: %s", strerror(errno));
        goto out;
    }
    close_fd(&pout[1]);
    close_fd(&perr[1]);
    close_fd(&pin[0]);
    close_fd(&slave); /* the command holds it now: its end (EIO on the master) is the end */
    if (f.stage == 2) {
        /* no such command, or not executable: like a shell, a message on the command's stderr
         * and an exit status of 127 or 126 (the child's), reported by the usual EXIT */
        char msg[AGENT_MAX_ERROR_MSG];
        int n = f.err == ENOENT && !strchr(argv[0], '/')
                    ? snprintf(msg, sizeof(msg), "vmctl-agent: %s: command not found\n", argv[0])
                    : snprintf(msg, sizeof(msg), "vmctl-agent: %s: %s\n", argv[0], strerror(f.err));
        size_t len = n < 0 ? 0 : (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1;
        uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + len);
        if (p && len) {
            memcpy(p + AGENT_HDR_SIZE, msg, len);
            out_commit(s, p,
                       agent_encode_header(p, AGENT_HDR_SIZE, AGENT_MSG_STDERR, id, len) + (int)len,
                       version);
        }
    } else if (f.stage) {
        /* exec never happened: reap now, answer ERROR and no EXIT */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (f.stage == 1)
            send_error(s, id, version, f.err, "cannot change directory to '%s': %s", cwd,
                       strerror(f.err));
        else if (f.stage == 3)
            send_error(s, id, version, f.err, "cannot switch to user '%s' (uid %u, gid %u): %s",
                       req->user, (unsigned)u->uid, (unsigned)u->gid, strerror(f.err));
        else if (f.stage == 4)
            send_error(s, id, version, f.err, "cannot make the terminal controlling: %s",
                       strerror(f.err));
        else
            send_error(s, id, version, f.err, "cannot execute '%s': %s", argv[0], strerror(f.err));
        goto out;
    }
    j->pid = pid;
    j->out_fd = pout[0];
    j->err_fd = perr[0];
    j->in_fd = pin[1];
    j->pty_fd = pty_dup;
    pty_dup = -1;
    j->stream = stream;
    j->in_eof = !stream;
    j->deadline_ms = req->timeout_ms ? now_ms() + req->timeout_ms : 0;
    pout[0] = perr[0] = pin[1] = -1;
    fcntl(j->out_fd, F_SETFL, O_NONBLOCK);
    if (j->err_fd >= 0)
        fcntl(j->err_fd, F_SETFL, O_NONBLOCK);
    if (j->in_fd >= 0)
        fcntl(j->in_fd, F_SETFL, O_NONBLOCK);
    ok = true;
out:
    for (int k = 0; k < 2; k++) {
        close_fd(&pout[k]);
        close_fd(&perr[k]);
        close_fd(&pin[k]);
    }
    close_fd(&devnull);
    close_fd(&master);
    close_fd(&slave);
    close_fd(&pty_dup);
    free(argv);
    free(env);
    free(envp);
    free(u);
    if (!ok)
        job_free(j);
}

/* Read one chunk of a job's output (command pipe or file) into a STDOUT/STDERR frame. */
static void job_read(struct job *j, int *fd, uint8_t type)
{
    size_t chunk = j->kind == JOB_GET ? FILE_CHUNK : AGENT_CHUNK_SIZE;
    uint8_t *p = out_reserve(SESS(j), AGENT_HDR_SIZE + chunk);
    if (!p)
        return;
    ssize_t n = read(*fd, p + AGENT_HDR_SIZE, chunk);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n < 0 && j->kind == JOB_GET) {
        send_error(SESS(j), j->id, j->version, errno, "cannot read '%s': %s", j->path,
                   strerror(errno));
        job_free(j);
        return;
    }
    if (n <= 0) {
        close_fd(fd);
        return;
    }
    j->activity_ms = now_ms();
    out_commit(SESS(j), p, agent_encode_header(p, AGENT_HDR_SIZE, type, j->id, (size_t)n) + (int)n,
               j->version);
}

static void job_write_stdin(struct job *j)
{
    while (j->inq_off < j->inq_len) {
        ssize_t w = write(j->in_fd, j->inq + j->inq_off, j->inq_len - j->inq_off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            /* EPIPE: the command does not read its input: drop it (acknowledged all the same,
             * so that the host never waits for window) */
            j->unacked += j->inq_len - j->inq_off;
            j->inq_off = j->inq_len;
            close_fd(&j->in_fd);
            break;
        }
        j->inq_off += (size_t)w;
        j->unacked += (size_t)w;
    }
    bool drained = j->inq_off == j->inq_len;
    job_ack(j, drained);
    if (drained && j->in_eof)
        close_fd(&j->in_fd);
}

/* --- files --- */

static void put_start(struct session *s, uint32_t id, uint8_t version, const agent_file_put *fp)
{
    struct stat st;
    if (stat(fp->path, &st) == 0 && S_ISDIR(st.st_mode)) {
        send_error(s, id, version, EISDIR, "'%s' is a directory", fp->path);
        return;
    }
    struct job *j = job_new(s, id, version, JOB_PUT);
    if (!j)
        return;
    const char *slash = strrchr(fp->path, '/');
    int dl = (int)(slash - fp->path);
    j->path = strdup(fp->path);
    if (!j->path || asprintf(&j->tmp_path, "%.*s/.%s.vmctl-XXXXXX", dl, fp->path, slash + 1) < 0) {
        j->tmp_path = NULL;
        send_error(s, id, version, ENOMEM, "out of memory");
        job_free(j);
        return;
    }
    j->in_fd = mkostemp(j->tmp_path, O_CLOEXEC);
    if (j->in_fd < 0) {
        int e = errno;
        free(j->tmp_path);
        j->tmp_path = NULL;
        send_error(s, id, version, e, "cannot create '%s': %s", fp->path, strerror(e));
        job_free(j);
        return;
    }
    j->stream = true;
    j->mode = fp->mode;
    j->mtime_sec = fp->mtime_sec;
    j->mtime_nsec = fp->mtime_nsec;
}

/* STDIN data of a FILE_PUT: written at once (a regular file does not block). */
static void put_data(struct job *j, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len && !j->put_errno) {
        ssize_t w = write(j->in_fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            j->put_errno = w < 0 ? errno : EIO;
            break;
        }
        off += (size_t)w;
    }
    j->unacked += len;
    job_ack(j, true);
}

static void put_finish(struct job *j)
{
    int e = j->put_errno;
    const char *what = "write";
    if (!e && fchmod(j->in_fd, j->mode) < 0)
        e = errno, what = "chmod";
    if (!e && j->mtime_nsec != UINT32_MAX) {
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                                 {.tv_sec = (time_t)j->mtime_sec, .tv_nsec = j->mtime_nsec}};
        if (futimens(j->in_fd, ts) < 0)
            e = errno, what = "set the time of";
    }
    if (!e && close(j->in_fd) < 0)
        e = errno;
    j->in_fd = -1;
    if (!e && rename(j->tmp_path, j->path) < 0)
        e = errno, what = "rename to";
    if (e) {
        send_error(SESS(j), j->id, j->version, e, "cannot %s '%s': %s", what, j->path, strerror(e));
    } else {
        free(j->tmp_path);
        j->tmp_path = NULL;
        agent_exit ex = {0};
        uint8_t *p = out_reserve(SESS(j), AGENT_HDR_SIZE + 12);
        if (p)
            out_commit(SESS(j), p, agent_encode_exit(p, AGENT_HDR_SIZE + 12, j->id, &ex),
                       j->version);
    }
    job_free(j);
}

static void get_start(struct session *s, uint32_t id, uint8_t version, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        send_error(s, id, version, e, "cannot open '%s': %s", path, strerror(e));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        if (S_ISDIR(st.st_mode))
            send_error(s, id, version, EISDIR, "'%s' is a directory", path);
        else
            send_error(s, id, version, EINVAL, "'%s' is not a regular file", path);
        return;
    }
    struct job *j = job_new(s, id, version, JOB_GET);
    if (!j) {
        close(fd);
        return;
    }
    j->out_fd = fd;
    j->path = strdup(path);
    agent_file_info fi = {.mode = st.st_mode,
                          .size = (uint64_t)st.st_size,
                          .mtime_sec = st.st_mtim.tv_sec,
                          .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec};
    uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + 24);
    if (p)
        out_commit(s, p, agent_encode_file_info(p, AGENT_HDR_SIZE + 24, id, &fi), version);
}

/* --- metadata and info --- */

static int write_file_mode(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[512];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    int r = 0;
    while (off < len) {
        ssize_t w = write(fd, (const uint8_t *)data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            r = w < 0 ? -errno : -EIO;
            break;
        }
        off += (size_t)w;
    }
    if (r == 0 && fchmod(fd, mode) < 0)
        r = -errno;
    close(fd);
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

/* Append n bytes of s to a growing buffer, shell-quoted as '...' when quote is set. */
static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n, bool quote)
{
    size_t need = *len + 4 * n + 3;
    if (need > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < need)
            c *= 2;
        char *p = realloc(*buf, c);
        if (!p)
            return -ENOMEM;
        *buf = p;
        *cap = c;
    }
    if (quote)
        (*buf)[(*len)++] = '\'';
    for (size_t i = 0; i < n; i++) {
        if (quote && s[i] == '\'') {
            memcpy(*buf + *len, "'\\''", 4);
            *len += 4;
        } else {
            (*buf)[(*len)++] = s[i];
        }
    }
    if (quote)
        (*buf)[(*len)++] = '\'';
    return 0;
}

static void metadata_apply(struct session *s, uint32_t id, uint8_t version, const agent_metadata *m)
{
    mkdir(META_DIR, 0755);
    if (m->hostname[0]) {
        if (sethostname(m->hostname, strlen(m->hostname)) < 0) {
            send_error(s, id, version, errno, "cannot set the hostname: %s", strerror(errno));
            return;
        }
        char line[80];
        int n = snprintf(line, sizeof(line), "%s\n", m->hostname);
        write_file_mode("/etc/hostname", line, (size_t)n, 0644);
    }
    if (m->env.count) {
        /* for later commands (inherited from the agent) and for login shells (/run/vmctl/env) */
        char *buf = NULL;
        size_t len = 0, cap = 0;
        int r = 0;
        for (const char *e = agent_strv_next(&m->env, NULL); e && r == 0;
             e = agent_strv_next(&m->env, e)) {
            const char *eq = strchr(e, '=');
            char *copy = strdup(e);
            if (!copy || putenv(copy) != 0) { /* putenv keeps the string */
                free(copy);
                r = -ENOMEM;
                break;
            }
            if (append(&buf, &len, &cap, "export ", 7, false) < 0 ||
                append(&buf, &len, &cap, e, (size_t)(eq - e) + 1, false) < 0 ||
                append(&buf, &len, &cap, eq + 1, strlen(eq + 1), true) < 0 ||
                append(&buf, &len, &cap, "\n", 1, false) < 0)
                r = -ENOMEM;
        }
        if (r == 0)
            r = write_file_mode(META_DIR "/env", buf ? buf : "", len, 0644);
        free(buf);
        if (r < 0) {
            send_error(s, id, version, -r, "cannot write " META_DIR "/env: %s", strerror(-r));
            return;
        }
    }
    if (m->secret_names.count) {
        if (mkdir(META_DIR "/secrets", 0700) < 0 && errno != EEXIST) {
            send_error(s, id, version, errno, "cannot create " META_DIR "/secrets: %s",
                       strerror(errno));
            return;
        }
        chmod(META_DIR "/secrets", 0700);
        size_t off = 0;
        for (const char *sn = agent_strv_next(&m->secret_names, NULL); sn;
             sn = agent_strv_next(&m->secret_names, sn)) {
            const uint8_t *d = NULL;
            uint32_t l = 0;
            agent_metadata_next_value(m, &off, &d, &l);
            char path[400];
            snprintf(path, sizeof(path), META_DIR "/secrets/%s", sn);
            int r = write_file_mode(path, d, l, 0600);
            if (r < 0) {
                send_error(s, id, version, -r, "cannot write %s: %s", path, strerror(-r));
                return;
            }
        }
    }
    A.metadata_applied = true;
    send_simple(s, id, version, AGENT_MSG_ACK);
}

static uint64_t meminfo_kb(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : 0;
}

static void info_reply(struct session *s, uint32_t id, uint8_t version)
{
    agent_info in = {.running = (uint32_t)running_jobs()};
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    in.uptime_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    char text[4096];
    int fd = open("/proc/meminfo", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n > 0) {
            text[n] = 0;
            in.mem_total = meminfo_kb(text, "MemTotal:") * 1024;
            in.mem_available = meminfo_kb(text, "MemAvailable:") * 1024;
        }
    }
    fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, text, sizeof(text) - 1);
        close(fd);
        if (n > 0) {
            text[n] = 0;
            char *p = text;
            for (int i = 0; i < 3; i++)
                in.load[i] = (uint32_t)(strtod(p, &p) * 100.0 + 0.5);
        }
    }
    uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + 40);
    if (p)
        out_commit(s, p, agent_encode_info_reply(p, AGENT_HDR_SIZE + 40, id, &in), version);
}

/* Background jobs may hold the pipes open after the command exited: stop waiting for them once
 * the pipes were quiet for EXIT_GRACE_MS (never while the send queue holds them back). */
static uint64_t job_grace_end(const struct job *j)
{
    uint64_t t = j->exited_ms > j->activity_ms ? j->exited_ms : j->activity_ms;
    return t + EXIT_GRACE_MS;
}

/* EXIT once the job is done: a command reaped with its pipes closed (or the grace period over),
 * a download at the end of its file. */
static void job_maybe_finish(struct job *j, uint64_t now)
{
    agent_exit e = {0};
    if (j->kind == JOB_GET) {
        if (j->out_fd >= 0)
            return;
    } else if (j->kind == JOB_EXEC) {
        if (!j->exited_ms)
            return;
        bool open_pipes = j->out_fd >= 0 || j->err_fd >= 0;
        if (open_pipes && now < job_grace_end(j))
            return;
        if (WIFSIGNALED(j->status)) {
            e.signal = (uint32_t)WTERMSIG(j->status);
            e.exit_code = 128 + (int)e.signal;
        } else {
            e.exit_code = WEXITSTATUS(j->status);
        }
        if (j->timed_out)
            e.flags |= AGENT_EXIT_TIMED_OUT;
        job_ack(j, true);
    } else {
        return;
    }
    uint8_t *p = out_reserve(SESS(j), AGENT_HDR_SIZE + 12);
    if (p)
        out_commit(SESS(j), p, agent_encode_exit(p, AGENT_HDR_SIZE + 12, j->id, &e), j->version);
    job_free(j);
}

static void reap_children(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (int i = 0; i < MAX_JOBS; i++) {
            struct job *j = &A.jobs[i];
            if (j->used && j->kind == JOB_EXEC && j->pid == pid && !j->exited_ms) {
                j->status = status;
                j->exited_ms = now_ms();
                if (!j->exited_ms)
                    j->exited_ms = 1;
            }
        }
    }
}

/* --- shutdown --- */

static void do_shutdown(int action)
{
    /* flush the ACK first (and whatever else is queued): the host waits for it */
    uint64_t until = now_ms() + SHUTDOWN_FLUSH_MS;
    for (int i = 0; i < MAX_SESSIONS; i++) {
        struct session *s = &A.sess[i];
        while (s->used && s->fd >= 0 && s->out_len && s->connected && now_ms() < until) {
            struct pollfd p = {.fd = s->fd, .events = POLLOUT};
            if (poll(&p, 1, 50) > 0 && (p.revents & POLLOUT) && !out_flush(s))
                break;
            if (p.revents & (POLLHUP | POLLERR))
                break;
        }
    }
    jobs_abandon(-1);
    if (!A.pid1) {
        /* a service in a full system: let its init shut down cleanly */
        pid_t pid = fork();
        if (pid == 0) {
            const char *cmd = action == AGENT_SHUTDOWN_REBOOT ? "reboot" : "poweroff";
            execlp(cmd, cmd, (char *)NULL);
            _exit(127);
        }
        int status = 0;
        if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
            WEXITSTATUS(status) == 0)
            return;
    }
    sync();
    if (reboot(action == AGENT_SHUTDOWN_REBOOT ? RB_AUTOBOOT : RB_POWER_OFF) < 0)
        logmsg("reboot() failed: %s", strerror(errno));
}

/* --- requests --- */

static void handle_frame(struct session *s, const agent_hdr *h, const uint8_t *payload)
{
    uint8_t v = h->version;
    /* v2 message types are not part of v1 */
    if (v < 2 && h->type > AGENT_MSG_EXIT && h->type != AGENT_MSG_SHUTDOWN) {
        send_error(s, h->id, v, ENOSYS, "unsupported message type 0x%02x", h->type);
        return;
    }
    switch (h->type) {
    case AGENT_MSG_PING:
        if (h->flags & AGENT_FLAG_NEW_SESSION)
            jobs_abandon((int)(s - A.sess)); /* a new client: what earlier ones started goes */
        send_simple(s, h->id, v, AGENT_MSG_PONG);
        break;
    case AGENT_MSG_EXEC: {
        agent_exec_req req;
        if (agent_decode_exec(payload, h->len, &req) < 0) {
            send_error(s, h->id, v, EINVAL, "malformed EXEC request");
            break;
        }
        exec_start(s, h->id, v, &req);
        break;
    }
    case AGENT_MSG_STDIN: {
        struct job *j = job_find(s, h->id);
        if (!j || j->in_eof)
            break; /* finished or failed meanwhile: the host learns it from EXIT/ERROR */
        if (j->kind == JOB_PUT) {
            if (h->len)
                put_data(j, payload, h->len);
            else
                put_finish(j);
            break;
        }
        if (j->kind != JOB_EXEC)
            break;
        if (h->len == 0 && j->pty_fd >= 0) {
            /* a terminal has no end of its input: the host's end of file is the terminal's
             * end-of-file character (Ctrl-D), once; the command may go on reading */
            struct termios t;
            uint8_t veof = tcgetattr(j->pty_fd, &t) == 0 && t.c_cc[VEOF] ? t.c_cc[VEOF] : 4;
            if (j->in_fd >= 0 && inq_append(j, &veof, 1) == 0)
                job_write_stdin(j);
            break;
        }
        if (h->len == 0) {
            j->in_eof = true;
        } else if (j->in_fd < 0) {
            j->unacked += h->len; /* the command closed its input: dropped */
            job_ack(j, false);
        } else if (j->inq_len - j->inq_off + h->len > STDIN_QUEUE_MAX ||
                   inq_append(j, payload, h->len) < 0) {
            send_error(s, h->id, v, ENOBUFS,
                       "standard input overrun (the host ignored the window)");
            job_kill(j, SIGKILL);
            j->stream = false;
            close_fd(&j->in_fd);
            break;
        }
        if (j->in_fd >= 0)
            job_write_stdin(j);
        break;
    }
    case AGENT_MSG_SIGNAL: {
        uint32_t sig;
        struct job *j = job_find(s, h->id);
        if (agent_decode_u32_msg(payload, h->len, &sig) < 0 || sig == 0 || sig >= 65) {
            send_error(s, h->id, v, EINVAL, "malformed SIGNAL request");
            break;
        }
        if (j)
            job_kill(j, (int)sig);
        break;
    }
    case AGENT_MSG_RESIZE: {
        uint32_t rows, cols;
        struct job *j = job_find(s, h->id);
        if (agent_decode_resize(payload, h->len, &rows, &cols) < 0) {
            send_error(s, h->id, v, EINVAL, "malformed RESIZE request");
            break;
        }
        /* the kernel sends SIGWINCH to the terminal's foreground process group */
        struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
        if (j && j->pty_fd >= 0 && ioctl(j->pty_fd, TIOCSWINSZ, &ws) < 0)
            logmsg("cannot resize the terminal: %s", strerror(errno));
        break; /* unknown ids and requests without a terminal: ignored */
    }
    case AGENT_MSG_FILE_PUT: {
        agent_file_put fp;
        if (agent_decode_file_put(payload, h->len, &fp) < 0) {
            send_error(s, h->id, v, EINVAL, "malformed FILE_PUT request");
            break;
        }
        put_start(s, h->id, v, &fp);
        break;
    }
    case AGENT_MSG_FILE_GET: {
        const char *path;
        if (agent_decode_file_get(payload, h->len, &path) < 0) {
            send_error(s, h->id, v, EINVAL, "malformed FILE_GET request");
            break;
        }
        get_start(s, h->id, v, path);
        break;
    }
    case AGENT_MSG_METADATA: {
        agent_metadata m;
        if (agent_decode_metadata(payload, h->len, &m) < 0) {
            send_error(s, h->id, v, EINVAL, "malformed METADATA request");
            break;
        }
        metadata_apply(s, h->id, v, &m);
        break;
    }
    case AGENT_MSG_INFO:
        info_reply(s, h->id, v);
        break;
    case AGENT_MSG_SHUTDOWN: {
        uint32_t action;
        if (agent_decode_shutdown(payload, h->len, &action) < 0 ||
            (action != AGENT_SHUTDOWN_POWEROFF && action != AGENT_SHUTDOWN_REBOOT)) {
            send_error(s, h->id, v, EINVAL, "malformed SHUTDOWN request");
            break;
        }
        send_simple(s, h->id, v, AGENT_MSG_ACK);
        A.shutdown_action = (int)action;
        break;
    }
    case AGENT_MSG_PONG:
    case AGENT_MSG_ERROR:
    case AGENT_MSG_ACK:
    case AGENT_MSG_STDOUT:
    case AGENT_MSG_STDERR:
    case AGENT_MSG_EXIT:
    case AGENT_MSG_STDIN_ACK:
    case AGENT_MSG_FILE_INFO:
    case AGENT_MSG_INFO_REPLY:
        break; /* agent-to-host types: not for us */
    default:
        send_error(s, h->id, v, ENOSYS, "unsupported message type 0x%02x", h->type);
        break;
    }
}

static void process_input(struct session *s)
{
    size_t off = 0;
    while (off < s->in_len && s->used && s->connected) {
        agent_hdr h;
        size_t consumed = 0;
        int r = agent_frame_next(s->in + off, s->in_len - off, &h, &consumed);
        if (r == AGENT_E_SHORT)
            break;
        if (r == AGENT_OK)
            handle_frame(s, &h, s->in + off + AGENT_HDR_SIZE);
        else if (r == AGENT_E_VERSION)
            send_error(s, h.id, 1, EPROTONOSUPPORT, "unsupported protocol version %u", h.version);
        else if (A.garbage++ % 4096 == 0)
            logmsg("discarding garbage on the port (%s)", agent_proto_strerror(r));
        off += consumed;
    }
    if (!s->used || !s->connected)
        return; /* the buffer was dropped with the session */
    memmove(s->in, s->in + off, s->in_len - off);
    s->in_len -= off;
}

static void read_port(struct session *s)
{
    while (s->in_len < AGENT_MAX_FRAME) { /* a full buffer always holds a frame or garbage */
        ssize_t n = read(s->fd, s->in + s->in_len, AGENT_MAX_FRAME - s->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                host_disconnected(s);
            return;
        }
        if (n == 0) {
            host_disconnected(s); /* a virtio port reads 0 when the host side is closed */
            return;
        }
        s->in_len += (size_t)n;
        s->in_last_ms = now_ms();
        process_input(s);
        if (!s->used || s->fd < 0 || !s->connected)
            return;
    }
}

/* A port raised SIGIO: its host connected (or sent data). fd -1: unknown port, look at all. */
static void port_signalled(int fd)
{
    for (int i = 0; i < MAX_SESSIONS; i++) {
        struct session *s = &A.sess[i];
        if (s->used && s->kind == SESS_VIRTIO && s->fd >= 0 && (fd < 0 || s->fd == fd))
            s->connected = true;
    }
}

static void handle_signals(void)
{
    struct signalfd_siginfo si[16];
    ssize_t n;
    while ((n = read(A.sigfd, si, sizeof(si))) >= (ssize_t)sizeof(si[0])) {
        for (size_t k = 0; k < (size_t)n / sizeof(si[0]); k++) {
            int sig = (int)si[k].ssi_signo;
            if (sig == SIGCHLD) {
                reap_children();
            } else if (A.sig_port && sig == A.sig_port) {
                port_signalled(si[k].ssi_fd);
            } else if (sig == SIGIO) {
                port_signalled(-1); /* plain SIGIO (or the real-time queue overflowed) */
            } else if (!A.pid1) {
                logmsg("exiting on signal %d", sig);
                jobs_abandon(-1);
                exit(0);
            }
        }
    }
}

static void usage(void)
{
    fprintf(stdout, "Usage: vmctl-agent [--port PATH] [--no-vsock] [--init]\n\n"
                    "The vmctl guest agent. Talks docs/agent-protocol.md on every virtio-serial "
                    "port named " AGENT_PORT_NAME " or " AGENT_PORT_NAME ".<N>, and on AF_VSOCK "
                    "port 1024 when the guest has /dev/vsock (one session per port or "
                    "connection). --port PATH (a device or a unix socket) replaces both.\n");
}

enum { P_SIG, P_PORT, P_LISTEN, P_OUT, P_ERR, P_IN };

/* (Re)open the --port path. */
static void open_port_path(uint64_t now, bool *warned, uint64_t waiting_since)
{
    struct session *s = &A.sess[0];
    int fd = open_path(A.port_path);
    if (fd < 0) {
        s->recheck_ms = now + REOPEN_MS;
        if (!*warned && now - waiting_since > 5000) {
            logmsg("still waiting for the port %s (%s)", A.port_path, strerror(-fd));
            *warned = true;
        }
        return;
    }
    /* a virtio port stays open while its host is away (it signals the reconnect) */
    struct stat st;
    s->kind =
        fstat(fd, &st) == 0 && S_ISCHR(st.st_mode) && strncmp(A.port_path, "/dev/vport", 10) == 0
            ? SESS_VIRTIO
            : SESS_PATH;
    sess_attach(s, fd);
    logmsg("listening on %s", A.port_path);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'}, {"no-vsock", no_argument, NULL, 'n'},
        {"init", no_argument, NULL, 'i'},       {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},    {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "p:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            A.port_path = optarg;
            break;
        case 'n':
            A.no_vsock = true;
            break;
        case 'i':
            A.pid1 = true; /* started by a minimal /init: behave as PID 1 (never exit on
                              SIGTERM, power off with reboot() itself) */
            break;
        case 'h':
            usage();
            return 0;
        case 'V':
            printf("vmctl-agent %s (protocol %d)\n", VMCTL_VERSION, AGENT_PROTO_VERSION);
            return 0;
        default:
            usage();
            return 2;
        }
    }
    A.pid1 = A.pid1 || getpid() == 1;
    /* orphans of commands come to us, not to an init that may not reap them */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        A.instance = (uint32_t)(ts.tv_nsec ^ ((uint32_t)getpid() << 20) ^ (uint32_t)ts.tv_sec);
        if (!A.instance)
            A.instance = 1;
    }
    for (int i = 0; i < MAX_JOBS; i++)
        A.jobs[i] = (struct job){.out_fd = -1, .err_fd = -1, .in_fd = -1, .pty_fd = -1};
    for (int i = 0; i < MAX_SESSIONS; i++)
        A.sess[i] = (struct session){.fd = -1};
    if (!getenv("PATH"))
        setenv("PATH", DEFAULT_PATH, 1);

    /* Ports raise a queued real-time signal naming their fd (so a connect on one port is not
     * lost in another port's data signal); plain SIGIO covers an overflowing queue. */
    A.sig_port = SIGRTMIN + 1 <= SIGRTMAX ? SIGRTMIN + 1 : 0;
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGIO);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    if (A.sig_port)
        sigaddset(&mask, A.sig_port);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    while ((A.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        logmsg("signalfd: %s", strerror(errno));
        if (!A.pid1)
            return 1;
        sleep(1); /* PID 1 must not exit */
    }

    /* children that exited before SIGCHLD was blocked (the /init's background job) */
    reap_children();

    uint64_t waiting_since = now_ms();
    A.started_ms = waiting_since;
    bool warned = false;
    if (A.port_path && !sess_new(SESS_PATH, A.port_path)) {
        logmsg("out of memory");
        return 1;
    }
    static struct pollfd pfd[2 + MAX_SESSIONS + 3 * MAX_JOBS];
    static struct {
        int kind;
        int idx; /* session or job */
    } what[2 + MAX_SESSIONS + 3 * MAX_JOBS];
    for (;;) {
        uint64_t now = now_ms();
        uint64_t next = UINT64_MAX;
        if (A.port_path) {
            if (A.sess[0].fd < 0 && now >= A.sess[0].recheck_ms)
                open_port_path(now, &warned, waiting_since);
        } else {
            if (now >= A.scan_ms)
                scan(now);
            if (!warned && !sess_count(SESS_VIRTIO) && A.listen_fd < 0 &&
                now - waiting_since > 5000) {
                logmsg("still waiting for the port %s", AGENT_PORT_NAME);
                warned = true;
            }
            next = A.scan_ms;
        }

        int np = 0;
        pfd[np] = (struct pollfd){.fd = A.sigfd, .events = POLLIN};
        what[np++].kind = P_SIG;
        for (int i = 0; i < MAX_SESSIONS; i++) {
            struct session *s = &A.sess[i];
            if (!s->used)
                continue;
            if (s->fd >= 0 && !s->connected && now >= s->recheck_ms)
                s->connected = true; /* look again: SIGIO is the fast path, this the safety net */
            if (s->fd >= 0 && s->connected) {
                pfd[np] = (struct pollfd){.fd = s->fd,
                                          .events = (short)(POLLIN | (s->out_len ? POLLOUT : 0))};
                what[np].kind = P_PORT;
                what[np++].idx = i;
            } else if (s->recheck_ms < next) {
                next = s->recheck_ms;
            }
            if (s->in_len && s->in_last_ms + STALL_MS < next)
                next = s->in_last_ms + STALL_MS;
        }
        if (A.listen_fd >= 0) {
            pfd[np] = (struct pollfd){.fd = A.listen_fd, .events = POLLIN};
            what[np++].kind = P_LISTEN;
        }
        for (int i = 0; i < MAX_JOBS; i++) {
            struct job *j = &A.jobs[i];
            if (!j->used)
                continue;
            bool room = SESS(j)->out_len < OUT_HIGH_WATER;
            if (!room)
                j->activity_ms = now;
            if (j->out_fd >= 0 && room) {
                pfd[np] = (struct pollfd){.fd = j->out_fd, .events = POLLIN};
                what[np].kind = P_OUT;
                what[np++].idx = i;
            }
            if (j->err_fd >= 0 && room) {
                pfd[np] = (struct pollfd){.fd = j->err_fd, .events = POLLIN};
                what[np].kind = P_ERR;
                what[np++].idx = i;
            }
            if (j->kind == JOB_EXEC && j->in_fd >= 0 && (j->inq_off < j->inq_len || j->in_eof)) {
                pfd[np] = (struct pollfd){.fd = j->in_fd, .events = POLLOUT};
                what[np].kind = P_IN;
                what[np++].idx = i;
            }
            /* timers: command deadline, exit grace */
            if (j->kind == JOB_EXEC && j->deadline_ms && !j->exited_ms && !j->timed_out &&
                j->deadline_ms < next)
                next = j->deadline_ms;
            if (j->kind == JOB_EXEC && j->exited_ms && job_grace_end(j) < next)
                next = job_grace_end(j);
        }
        int timeout = -1;
        if (next != UINT64_MAX)
            timeout = next <= now ? 0 : (int)(next - now > 60000 ? 60000 : next - now);

        int r = poll(pfd, (nfds_t)np, timeout);
        if (r < 0 && errno != EINTR) {
            logmsg("poll: %s", strerror(errno));
            sleep(1);
            continue;
        }
        now = now_ms();
        for (int k = 0; r > 0 && k < np; k++) {
            short rev = pfd[k].revents;
            if (!rev)
                continue;
            struct job *j = what[k].kind >= P_OUT ? &A.jobs[what[k].idx] : NULL;
            struct session *s = what[k].kind == P_PORT ? &A.sess[what[k].idx] : NULL;
            switch (what[k].kind) {
            case P_SIG:
                handle_signals();
                break;
            case P_PORT:
                if (!s->used || s->fd != pfd[k].fd || !s->connected)
                    break;
                if (rev & (POLLHUP | POLLERR | POLLNVAL)) {
                    host_disconnected(s);
                } else {
                    if (rev & POLLIN)
                        read_port(s);
                    if (s->used && s->fd >= 0 && s->connected && (rev & POLLOUT) && !out_flush(s))
                        host_disconnected(s);
                }
                break;
            case P_LISTEN:
                accept_vsock();
                break;
            case P_OUT:
                if (j->used && j->out_fd == pfd[k].fd)
                    job_read(j, &j->out_fd, AGENT_MSG_STDOUT);
                break;
            case P_ERR:
                if (j->used && j->err_fd == pfd[k].fd)
                    job_read(j, &j->err_fd, AGENT_MSG_STDERR);
                break;
            case P_IN:
                if (j->used && j->in_fd == pfd[k].fd)
                    job_write_stdin(j);
                break;
            }
        }

        for (int i = 0; i < MAX_SESSIONS; i++) {
            struct session *s = &A.sess[i];
            if (s->used && s->in_len && now >= s->in_last_ms + STALL_MS) {
                logmsg("dropping a partial frame (%zu bytes) after %d ms without data", s->in_len,
                       STALL_MS);
                s->in_len = 0;
            }
        }
        for (int i = 0; i < MAX_JOBS; i++) {
            struct job *j = &A.jobs[i];
            if (!j->used)
                continue;
            if (j->kind == JOB_EXEC && j->deadline_ms && !j->exited_ms && !j->timed_out &&
                now >= j->deadline_ms) {
                job_kill(j, SIGKILL);
                j->timed_out = true;
            }
            job_maybe_finish(j, now);
        }

        /* try to send right away rather than waiting for the next POLLOUT round */
        for (int i = 0; i < MAX_SESSIONS; i++) {
            struct session *s = &A.sess[i];
            if (!s->used)
                continue;
            if (s->out_len && s->fd >= 0 && s->connected && !out_flush(s))
                host_disconnected(s);
            if (s->used && !s->connected)
                s->out_len = 0;
        }

        if (A.shutdown_action >= 0) {
            int action = A.shutdown_action;
            A.shutdown_action = -1;
            do_shutdown(action);
        }
    }
}
