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
 * Static; may run as PID 1, and then reaps every child and never exits.
 *
 * This file: the state, logging, shutdown, the requests and the main loop. agent-session.c: the
 * output queue and the sessions; agent-jobs.c: commands; agent-files.c: file transfers;
 * agent-meta.c: metadata and info (agent.h). */
#include "agent.h"

struct agent_state A = {.listen_fd = -1, .sigfd = -1, .shutdown_action = -1};

void logmsg(const char *fmt, ...)
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

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
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
    case AGENT_MSG_IDENTITY: {
        agent_identity in;
        if (agent_decode_identity(payload, h->len, &in) < 0) {
            send_error(s, h->id, v, EINVAL, "malformed IDENTITY request");
            break;
        }
        identity_apply(s, h->id, v, &in);
        break;
    }
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
