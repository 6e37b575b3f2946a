/* SPDX-License-Identifier: MIT */
/* vmctl-agent: the guest side of docs/agent-protocol.md. A single-threaded poll loop over the
 * virtio-serial port org.vmctl.agent, a signalfd (SIGCHLD, SIGIO, termination) and the pipes of
 * the running command. Static; may run as PID 1 (the default guest's /init execs it), and then
 * reaps every child and never exits. */
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
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent-proto.h"
#include "config.h"

#define DEFAULT_PATH      "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define OUT_HIGH_WATER    (256u * 1024u) /* stop reading the command's pipes above this */
#define EXIT_GRACE_MS     100            /* wait this long for pipes held by background jobs */
#define RECHECK_MS        1000           /* re-poll a disconnected port this often (SIGIO backup) */
#define REOPEN_MS         5              /* retry finding/opening the port this often */
#define SHUTDOWN_FLUSH_MS 2000
/* A partial frame that gets no new byte for this long is dropped: its sender died, and a quick
 * reconnect hid the disconnect from us (QEMU's close and open reach the guest together). */
#define STALL_MS 500

struct exec_state {
    pid_t pid; /* 0: no command */
    uint32_t id;
    int out_fd, err_fd, in_fd;
    uint8_t *in_data;
    size_t in_len, in_off;
    uint64_t deadline_ms; /* 0: none */
    uint64_t exited_ms;   /* 0: still running */
    uint64_t activity_ms; /* last output read, or last time the send queue held the pipes back */
    int status;
    bool timed_out;
};

static struct {
    const char *port_path; /* --port, else found in sysfs */
    int port;
    bool port_is_virtio; /* a disconnect keeps the fd open and waits for SIGIO */
    bool connected;      /* false after POLLHUP until SIGIO or the re-check */
    uint64_t recheck_ms;
    int sigfd;
    bool pid1;
    uint8_t *in; /* in_buf: kept out of this initialised struct so it stays in .bss */
    size_t in_len;
    uint64_t in_last_ms; /* when the last byte arrived */
    uint8_t *out;
    size_t out_len, out_cap;
    struct exec_state ex;
    int shutdown_action; /* -1: none pending */
    unsigned long garbage;
} A = {.port = -1, .sigfd = -1, .shutdown_action = -1};
static uint8_t in_buf[AGENT_MAX_FRAME];

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

/* --- output queue: whole frames, flushed to the port as it accepts them --- */

static uint8_t *out_reserve(size_t n)
{
    if (A.out_cap - A.out_len < n) {
        size_t cap = A.out_cap ? A.out_cap : 64 * 1024;
        while (cap - A.out_len < n)
            cap *= 2;
        uint8_t *p = realloc(A.out, cap);
        if (!p)
            return NULL;
        A.out = p;
        A.out_cap = cap;
    }
    return A.out + A.out_len;
}

static void out_commit(int n)
{
    if (n > 0)
        A.out_len += (size_t)n;
}

static void send_error(uint32_t id, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void send_error(uint32_t id, int errnum, const char *fmt, ...)
{
    char msg[AGENT_MAX_ERROR_MSG + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t need = AGENT_HDR_SIZE + 8 + strlen(msg) + 1;
    uint8_t *p = out_reserve(need);
    if (p)
        out_commit(agent_encode_error(p, need, id, (uint32_t)errnum, msg));
}

static void send_simple(uint32_t id, uint8_t type)
{
    uint8_t *p = out_reserve(AGENT_HDR_SIZE + 64);
    if (!p)
        return;
    if (type == AGENT_MSG_PONG)
        out_commit(agent_encode_pong(p, AGENT_HDR_SIZE + 64, id,
                                     AGENT_CAP_EXEC | AGENT_CAP_SHUTDOWN, VMCTL_VERSION));
    else
        out_commit(agent_encode_ack(p, AGENT_HDR_SIZE + 64, id));
}

/* Write what the port takes now. Returns false when the host went away. */
static bool out_flush(void)
{
    size_t off = 0;
    while (off < A.out_len) {
        ssize_t w = write(A.port, A.out + off, A.out_len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            memmove(A.out, A.out + off, A.out_len - off);
            A.out_len -= off;
            return false;
        }
        off += (size_t)w;
    }
    memmove(A.out, A.out + off, A.out_len - off);
    A.out_len -= off;
    return true;
}

/* --- the port --- */

/* The /dev node of the virtio port named org.vmctl.agent, or NULL. */
static char *find_virtio_port(void)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    if (!d)
        return NULL;
    char *found = NULL;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
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
        if (strcmp(name, AGENT_PORT_NAME) == 0) {
            snprintf(path, sizeof(path), "/dev/%s", de->d_name);
            found = strdup(path);
        }
    }
    closedir(d);
    return found;
}

static int open_port(void)
{
    char *found = NULL;
    const char *path = A.port_path;
    if (!path) {
        found = find_virtio_port();
        if (!found)
            return -ENOENT;
        path = found;
    }
    struct stat st;
    int fd;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        /* for running the agent on a host against a unix socket (testing) */
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            close(fd);
            fd = -1;
        }
        A.port_is_virtio = false;
    } else {
        fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
        A.port_is_virtio = S_ISCHR(st.st_mode) && strncmp(path, "/dev/vport", 10) == 0;
    }
    int r = fd < 0 ? -errno : 0;
    if (fd >= 0) {
        /* Non-blocking: a virtio port blocks writes while the host is away. O_ASYNC: the port
         * raises SIGIO when the host connects or disconnects (and when data arrives). */
        fcntl(fd, F_SETOWN, getpid());
        if (fcntl(fd, F_SETFL, O_NONBLOCK | O_ASYNC) < 0)
            fcntl(fd, F_SETFL, O_NONBLOCK);
        A.port = fd;
        A.connected = true;
        logmsg("listening on %s", path);
    }
    free(found);
    return r;
}

static void exec_abandon(void);

/* The host went away: forget everything that belonged to it. */
static void host_disconnected(void)
{
    if (A.connected && (A.in_len || A.out_len || A.ex.pid))
        logmsg("host disconnected");
    A.connected = false;
    A.recheck_ms = now_ms() + RECHECK_MS;
    A.in_len = 0;
    A.out_len = 0;
    exec_abandon();
    if (!A.port_is_virtio) {
        close_fd(&A.port);
        A.recheck_ms = now_ms() + REOPEN_MS;
    }
}

/* --- exec --- */

static void exec_close(struct exec_state *ex)
{
    close_fd(&ex->out_fd);
    close_fd(&ex->err_fd);
    close_fd(&ex->in_fd);
    free(ex->in_data);
    *ex = (struct exec_state){.out_fd = -1, .err_fd = -1, .in_fd = -1};
}

/* Kill the running command's process group; its zombie is reaped by the SIGCHLD handler. */
static void exec_abandon(void)
{
    if (A.ex.pid > 0) {
        if (!A.ex.exited_ms) {
            kill(-A.ex.pid, SIGKILL);
            kill(A.ex.pid, SIGKILL);
        }
        logmsg("abandoned command (pid %d)", (int)A.ex.pid);
    }
    exec_close(&A.ex);
}

struct exec_fail {
    int err;
    int stage; /* 1 chdir, 2 exec */
};

static void child_fail(int fd, int stage)
{
    struct exec_fail f = {errno, stage};
    ssize_t w = write(fd, &f, sizeof(f));
    (void)w;
    _exit(127);
}

static void exec_start(uint32_t id, const agent_exec_req *req)
{
    if (A.ex.pid > 0) {
        send_error(id, EBUSY, "another command is running");
        return;
    }
    size_t argc = req->argv.count, envc = req->env.count;
    char **argv = calloc(argc + 1, sizeof(char *));
    char **env = calloc(envc + 1, sizeof(char *));
    uint8_t *in_data = req->stdin_len ? malloc(req->stdin_len) : NULL;
    int pout[2] = {-1, -1}, perr[2] = {-1, -1}, pin[2] = {-1, -1}, pst[2] = {-1, -1};
    int devnull = -1;
    if (!argv || !env || (req->stdin_len && !in_data)) {
        send_error(id, ENOMEM, "out of memory");
        goto out;
    }
    size_t i = 0;
    for (const char *s = agent_strv_next(&req->argv, NULL); s; s = agent_strv_next(&req->argv, s))
        argv[i++] = (char *)s;
    i = 0;
    for (const char *s = agent_strv_next(&req->env, NULL); s; s = agent_strv_next(&req->env, s))
        env[i++] = (char *)s;
    if (in_data)
        memcpy(in_data, req->stdin_data, req->stdin_len);

    if (pipe2(pout, O_CLOEXEC) < 0 || pipe2(perr, O_CLOEXEC) < 0 || pipe2(pst, O_CLOEXEC) < 0 ||
        (req->stdin_len ? pipe2(pin, O_CLOEXEC)
                        : (devnull = open("/dev/null", O_RDONLY | O_CLOEXEC))) < 0) {
        send_error(id, errno, "cannot create pipes: %s", strerror(errno));
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        send_error(id, errno, "cannot fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        sigset_t all;
        sigfillset(&all);
        sigprocmask(SIG_UNBLOCK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        setsid();
        int in = req->stdin_len ? pin[0] : devnull;
        if (dup2(in, 0) < 0 || dup2(pout[1], 1) < 0 || dup2(perr[1], 2) < 0)
            child_fail(pst[1], 2);
        const char *cwd = req->cwd ? req->cwd : "/";
        if (chdir(cwd) < 0)
            child_fail(pst[1], 1);
        for (size_t k = 0; k < envc; k++)
            putenv(env[k]);
        execvp(argv[0], argv);
        child_fail(pst[1], 2);
    }
    close_fd(&pout[1]);
    close_fd(&perr[1]);
    close_fd(&pst[1]);
    close_fd(&pin[0]);
    struct exec_fail f;
    ssize_t n;
    do
        n = read(pst[0], &f, sizeof(f));
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof(f)) {
        /* exec never happened: reap now, answer ERROR and no EXIT */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (f.stage == 1)
            send_error(id, f.err, "cannot change directory to '%s': %s", req->cwd ? req->cwd : "/",
                       strerror(f.err));
        else
            send_error(id, f.err, "cannot execute '%s': %s", argv[0], strerror(f.err));
        goto out;
    }
    A.ex = (struct exec_state){
        .pid = pid,
        .id = id,
        .out_fd = pout[0],
        .err_fd = perr[0],
        .in_fd = pin[1],
        .in_data = in_data,
        .in_len = req->stdin_len,
        .deadline_ms = req->timeout_ms ? now_ms() + req->timeout_ms : 0,
    };
    in_data = NULL;
    pout[0] = perr[0] = pin[1] = -1;
    fcntl(A.ex.out_fd, F_SETFL, O_NONBLOCK);
    fcntl(A.ex.err_fd, F_SETFL, O_NONBLOCK);
    if (A.ex.in_fd >= 0)
        fcntl(A.ex.in_fd, F_SETFL, O_NONBLOCK);
out:
    for (int k = 0; k < 2; k++) {
        close_fd(&pout[k]);
        close_fd(&perr[k]);
        close_fd(&pin[k]);
        close_fd(&pst[k]);
    }
    close_fd(&devnull);
    free(argv);
    free(env);
    free(in_data);
}

/* Read one chunk of the command's output into a STDOUT/STDERR frame. */
static void exec_read(int *fd, uint8_t type)
{
    uint8_t *p = out_reserve(AGENT_HDR_SIZE + AGENT_CHUNK_SIZE);
    if (!p)
        return;
    ssize_t n = read(*fd, p + AGENT_HDR_SIZE, AGENT_CHUNK_SIZE);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return;
    if (n <= 0) {
        close_fd(fd);
        return;
    }
    if (agent_encode_header(p, AGENT_HDR_SIZE, type, A.ex.id, (size_t)n) < 0)
        return;
    A.ex.activity_ms = now_ms();
    out_commit(AGENT_HDR_SIZE + (int)n);
}

static void exec_write_stdin(void)
{
    struct exec_state *ex = &A.ex;
    while (ex->in_off < ex->in_len) {
        ssize_t w = write(ex->in_fd, ex->in_data + ex->in_off, ex->in_len - ex->in_off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            break; /* EPIPE: the command does not read its input */
        }
        ex->in_off += (size_t)w;
    }
    close_fd(&ex->in_fd);
}

/* Background jobs may hold the pipes open after the command exited: stop waiting for them once
 * the pipes were quiet for EXIT_GRACE_MS (never while the send queue holds them back). */
static uint64_t exec_grace_end(const struct exec_state *ex)
{
    uint64_t t = ex->exited_ms > ex->activity_ms ? ex->exited_ms : ex->activity_ms;
    return t + EXIT_GRACE_MS;
}

/* EXIT once the command is reaped and its pipes are closed (or the grace period is over). */
static void exec_maybe_finish(uint64_t now)
{
    struct exec_state *ex = &A.ex;
    if (!ex->pid || !ex->exited_ms)
        return;
    bool open_pipes = ex->out_fd >= 0 || ex->err_fd >= 0;
    if (open_pipes && now < exec_grace_end(ex))
        return;
    agent_exit e = {0};
    if (WIFSIGNALED(ex->status)) {
        e.signal = (uint32_t)WTERMSIG(ex->status);
        e.exit_code = 128 + (int)e.signal;
    } else {
        e.exit_code = WEXITSTATUS(ex->status);
    }
    if (ex->timed_out)
        e.flags |= AGENT_EXIT_TIMED_OUT;
    uint8_t *p = out_reserve(AGENT_HDR_SIZE + 12);
    if (p)
        out_commit(agent_encode_exit(p, AGENT_HDR_SIZE + 12, ex->id, &e));
    exec_close(ex);
}

static void reap_children(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == A.ex.pid && !A.ex.exited_ms) {
            A.ex.status = status;
            A.ex.exited_ms = now_ms();
            if (!A.ex.exited_ms)
                A.ex.exited_ms = 1;
        }
    }
}

/* --- shutdown --- */

static void do_shutdown(int action)
{
    /* flush the ACK first: the host waits for it */
    uint64_t until = now_ms() + SHUTDOWN_FLUSH_MS;
    while (A.out_len && A.connected && now_ms() < until) {
        struct pollfd p = {.fd = A.port, .events = POLLOUT};
        if (poll(&p, 1, 50) > 0 && (p.revents & POLLOUT) && !out_flush())
            break;
        if (p.revents & (POLLHUP | POLLERR))
            break;
    }
    exec_abandon();
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

static void handle_frame(const agent_hdr *h, const uint8_t *payload)
{
    switch (h->type) {
    case AGENT_MSG_PING:
        if (h->flags & AGENT_FLAG_NEW_SESSION)
            exec_abandon(); /* a new client: what the earlier one started goes */
        send_simple(h->id, AGENT_MSG_PONG);
        break;
    case AGENT_MSG_EXEC: {
        agent_exec_req req;
        if (agent_decode_exec(payload, h->len, &req) < 0) {
            send_error(h->id, EINVAL, "malformed EXEC request");
            break;
        }
        exec_start(h->id, &req);
        break;
    }
    case AGENT_MSG_SHUTDOWN: {
        uint32_t action;
        if (agent_decode_shutdown(payload, h->len, &action) < 0 ||
            (action != AGENT_SHUTDOWN_POWEROFF && action != AGENT_SHUTDOWN_REBOOT)) {
            send_error(h->id, EINVAL, "malformed SHUTDOWN request");
            break;
        }
        send_simple(h->id, AGENT_MSG_ACK);
        A.shutdown_action = (int)action;
        break;
    }
    case AGENT_MSG_PONG:
    case AGENT_MSG_ERROR:
    case AGENT_MSG_ACK:
    case AGENT_MSG_STDOUT:
    case AGENT_MSG_STDERR:
    case AGENT_MSG_EXIT:
        break; /* agent-to-host types: not for us */
    default:
        send_error(h->id, ENOSYS, "unsupported message type 0x%02x", h->type);
        break;
    }
}

static void process_input(void)
{
    size_t off = 0;
    while (off < A.in_len) {
        agent_hdr h;
        size_t consumed = 0;
        int r = agent_frame_next(A.in + off, A.in_len - off, &h, &consumed);
        if (r == AGENT_E_SHORT)
            break;
        if (r == AGENT_OK)
            handle_frame(&h, A.in + off + AGENT_HDR_SIZE);
        else if (r == AGENT_E_VERSION)
            send_error(h.id, EPROTONOSUPPORT, "unsupported protocol version %u", h.version);
        else if (A.garbage++ % 4096 == 0)
            logmsg("discarding garbage on the port (%s)", agent_proto_strerror(r));
        off += consumed;
    }
    memmove(A.in, A.in + off, A.in_len - off);
    A.in_len -= off;
}

static void read_port(void)
{
    while (A.in_len < sizeof(in_buf)) { /* a full buffer always holds a frame or garbage */
        ssize_t n = read(A.port, A.in + A.in_len, sizeof(in_buf) - A.in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                host_disconnected();
            return;
        }
        if (n == 0) {
            host_disconnected(); /* a virtio port reads 0 when the host side is closed */
            return;
        }
        A.in_len += (size_t)n;
        A.in_last_ms = now_ms();
        process_input();
    }
}

static void handle_signals(void)
{
    struct signalfd_siginfo si;
    while (read(A.sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap_children();
            break;
        case SIGIO:
            /* the host connected (or sent data): poll the port again */
            if (A.port >= 0)
                A.connected = true;
            break;
        default:
            if (!A.pid1) {
                logmsg("exiting on signal %u", si.ssi_signo);
                exec_abandon();
                exit(0);
            }
            break;
        }
    }
}

static void usage(void)
{
    fprintf(stdout, "Usage: vmctl-agent [--port PATH]\n\n"
                    "The vmctl guest agent. Talks docs/agent-protocol.md on the virtio-serial "
                    "port named " AGENT_PORT_NAME " (or PATH: a device or a unix socket).\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "p:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            A.port_path = optarg;
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
    A.pid1 = getpid() == 1;
    A.in = in_buf;
    A.ex = (struct exec_state){.out_fd = -1, .err_fd = -1, .in_fd = -1};
    if (!getenv("PATH"))
        setenv("PATH", DEFAULT_PATH, 1);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGIO);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
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
    bool warned = false;
    for (;;) {
        uint64_t now = now_ms();
        if (A.port < 0 && now >= A.recheck_ms) {
            int r = open_port();
            if (r < 0) {
                A.recheck_ms = now + REOPEN_MS;
                if (!warned && now - waiting_since > 5000) {
                    logmsg("still waiting for the port %s (%s)",
                           A.port_path ? A.port_path : AGENT_PORT_NAME, strerror(-r));
                    warned = true;
                }
            }
        }
        if (A.port >= 0 && !A.connected && now >= A.recheck_ms)
            A.connected = true; /* look again: SIGIO is the fast path, this the safety net */

        struct pollfd pfd[5];
        int np = 0, i_port = -1, i_out = -1, i_err = -1, i_in = -1;
        pfd[np++] = (struct pollfd){.fd = A.sigfd, .events = POLLIN};
        if (A.port >= 0 && A.connected) {
            i_port = np;
            pfd[np++] = (struct pollfd){.fd = A.port,
                                        .events = (short)(POLLIN | (A.out_len ? POLLOUT : 0))};
        }
        bool room = A.out_len < OUT_HIGH_WATER;
        if (!room && A.ex.pid)
            A.ex.activity_ms = now;
        if (A.ex.pid && A.ex.out_fd >= 0 && room) {
            i_out = np;
            pfd[np++] = (struct pollfd){.fd = A.ex.out_fd, .events = POLLIN};
        }
        if (A.ex.pid && A.ex.err_fd >= 0 && room) {
            i_err = np;
            pfd[np++] = (struct pollfd){.fd = A.ex.err_fd, .events = POLLIN};
        }
        if (A.ex.pid && A.ex.in_fd >= 0) {
            i_in = np;
            pfd[np++] = (struct pollfd){.fd = A.ex.in_fd, .events = POLLOUT};
        }

        /* the next timer: command deadline, exit grace, port re-check */
        uint64_t next = UINT64_MAX;
        if (A.ex.pid && A.ex.deadline_ms && !A.ex.exited_ms && !A.ex.timed_out)
            next = A.ex.deadline_ms;
        if (A.ex.pid && A.ex.exited_ms && exec_grace_end(&A.ex) < next)
            next = exec_grace_end(&A.ex);
        if ((A.port < 0 || !A.connected) && A.recheck_ms < next)
            next = A.recheck_ms;
        if (A.in_len && A.in_last_ms + STALL_MS < next)
            next = A.in_last_ms + STALL_MS;
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
        if (r > 0 && pfd[0].revents)
            handle_signals();

        if (i_port >= 0 && A.port >= 0 && A.connected) {
            short rev = pfd[i_port].revents;
            if (rev & (POLLHUP | POLLERR | POLLNVAL)) {
                host_disconnected();
            } else {
                if (rev & POLLIN)
                    read_port();
                if (A.connected && (rev & POLLOUT) && !out_flush())
                    host_disconnected();
            }
        }
        if (i_out >= 0 && A.ex.pid && (pfd[i_out].revents & (POLLIN | POLLHUP | POLLERR)))
            exec_read(&A.ex.out_fd, AGENT_MSG_STDOUT);
        if (i_err >= 0 && A.ex.pid && (pfd[i_err].revents & (POLLIN | POLLHUP | POLLERR)))
            exec_read(&A.ex.err_fd, AGENT_MSG_STDERR);
        if (i_in >= 0 && A.ex.pid && A.ex.in_fd >= 0 && pfd[i_in].revents)
            exec_write_stdin();

        if (A.in_len && now >= A.in_last_ms + STALL_MS) {
            logmsg("dropping a partial frame (%zu bytes) after %d ms without data", A.in_len,
                   STALL_MS);
            A.in_len = 0;
        }
        if (A.ex.pid && A.ex.deadline_ms && !A.ex.exited_ms && !A.ex.timed_out &&
            now >= A.ex.deadline_ms) {
            kill(-A.ex.pid, SIGKILL);
            kill(A.ex.pid, SIGKILL);
            A.ex.timed_out = true;
        }
        exec_maybe_finish(now);

        /* try to send right away rather than waiting for the next POLLOUT round */
        if (A.out_len && A.port >= 0 && A.connected && !out_flush())
            host_disconnected();
        if (!A.connected)
            A.out_len = 0;

        if (A.shutdown_action >= 0) {
            int action = A.shutdown_action;
            A.shutdown_action = -1;
            do_shutdown(action);
        }
    }
}
