/* SPDX-License-Identifier: MIT */
/* Our QMP client. QMP is newline-delimited JSON over a stream socket: QEMU greets with
 * {"QMP":{...}}, we negotiate with qmp_capabilities, then each command gets exactly one reply
 * ({"return":...} or {"error":{"class":...,"desc":...}}) carrying our "id", possibly preceded by
 * asynchronous events ({"event":...}) and by late replies to commands we gave up on. The socket
 * is non-blocking and every read and write is bounded by the caller's deadline. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "error.h"
#include "qmp.h"
#include "util/util.h"

/* Longest line we accept from QEMU. query-qmp-schema, the largest reply in practice, is a few
 * hundred KiB; anything past this is not QMP. */
#define QMP_MAX_LINE   (16u * 1024 * 1024)
#define QMP_READ_CHUNK 65536u
/* Pause between connection attempts while the socket does not exist yet. */
#define QMP_CONNECT_RETRY_USEC 10000u

struct qmp {
    int fd;
    char *buf; /* received bytes not yet consumed: [0, len) */
    size_t len;
    size_t cap;
    uint64_t next_id;
    bool broken;   /* framing lost or peer gone: no further commands */
    char *version; /* the greeting's, "7.2.0" */
};

void qmp_close(qmp *q)
{
    if (!q)
        return;
    if (q->fd >= 0)
        close(q->fd);
    free(q->buf);
    free(q->version);
    free(q);
}

static int poll_timeout_ms(uint64_t deadline)
{
    uint64_t now = now_usec();
    if (now >= deadline)
        return 0;
    uint64_t ms = (deadline - now + 999) / 1000;
    return ms > 60000 ? 60000 : (int)ms;
}

static double seconds_between(uint64_t start, uint64_t deadline)
{
    return deadline > start ? (double)(deadline - start) / 1e6 : 0.0;
}

/* Wait until fd is ready for events or the deadline passes: 1 ready, 0 deadline, -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, poll_timeout_ms(deadline));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r > 0)
            return 1;
        if (now_usec() >= deadline)
            return 0;
        /* poll's timeout is capped at 60 s per round */
    }
}

/* Take one complete line out of the buffer (without '\n', NUL-terminated); NULL when none. */
static char *take_line(qmp *q)
{
    char *nl = memchr(q->buf, '\n', q->len);
    if (!nl)
        return NULL;
    size_t n = (size_t)(nl - q->buf);
    char *line = malloc(n + 1);
    if (!line)
        return NULL;
    memcpy(line, q->buf, n);
    line[n] = 0;
    if (n > 0 && line[n - 1] == '\r')
        line[n - 1] = 0;
    q->len -= n + 1;
    memmove(q->buf, nl + 1, q->len);
    return line;
}

typedef enum {
    READ_OK,
    READ_DEADLINE,
    READ_EOF,
    READ_TOO_LONG,
    READ_ERROR,
} read_status;

/* Read one line: from the buffer if a whole one is there, else from the socket until one is. */
static read_status read_line(qmp *q, uint64_t deadline, char **ret, int *ret_errno)
{
    for (;;) {
        if (q->len > 0 && memchr(q->buf, '\n', q->len)) {
            char *line = take_line(q);
            if (!line) {
                *ret_errno = ENOMEM;
                return READ_ERROR;
            }
            *ret = line;
            return READ_OK;
        }
        if (q->len >= QMP_MAX_LINE)
            return READ_TOO_LONG;
        if (q->cap - q->len < QMP_READ_CHUNK / 4) {
            size_t ncap = q->cap ? q->cap * 2 : QMP_READ_CHUNK;
            if (ncap > QMP_MAX_LINE + 1)
                ncap = QMP_MAX_LINE + 1;
            char *nb = realloc(q->buf, ncap);
            if (!nb) {
                *ret_errno = ENOMEM;
                return READ_ERROR;
            }
            q->buf = nb;
            q->cap = ncap;
        }
        ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len);
        if (n > 0) {
            q->len += (size_t)n;
            continue;
        }
        if (n == 0)
            return READ_EOF;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            *ret_errno = errno;
            return errno == ECONNRESET ? READ_EOF : READ_ERROR;
        }
        int r = wait_fd(q->fd, POLLIN, deadline);
        if (r < 0) {
            *ret_errno = -r;
            return READ_ERROR;
        }
        if (r == 0)
            return READ_DEADLINE;
    }
}

/* pass_fd >= 0: sent with the first bytes (SCM_RIGHTS), as QMP's getfd wants it. */
static int send_all(qmp *q, const char *data, size_t len, int pass_fd, uint64_t deadline,
                    int *ret_errno)
{
    while (len > 0) {
        ssize_t n;
        if (pass_fd >= 0) {
            struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
            union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
            } u = {};
            struct msghdr mh = {.msg_iov = &iov,
                                .msg_iovlen = 1,
                                .msg_control = u.buf,
                                .msg_controllen = sizeof(u.buf)};
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
            n = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
            if (n > 0)
                pass_fd = -1;
        } else
            n = send(q->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
            n = write(q->fd, data, len);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(q->fd, POLLOUT, deadline);
            if (r < 0) {
                *ret_errno = -r;
                return -1;
            }
            if (r == 0)
                return 0;
            continue;
        }
        *ret_errno = n < 0 ? errno : EPIPE;
        return -1;
    }
    return 1;
}

/* The peer went away or framing broke: report it and refuse further use of the connection. */
static int fail_stream(qmp *q, read_status st, int errnum, const char *what, uint64_t start,
                       uint64_t deadline, vmctl_error **reterr)
{
    int r;
    switch (st) {
    case READ_DEADLINE: {
        cleanup_free char *op = str_printf("qmp %s", what);
        r = err_timeout(reterr, op ? op : "qmp", seconds_between(start, deadline),
                        "no QMP reply to '%s' before the deadline", what);
        /* a late reply is recognised by its id and skipped, so the connection stays usable */
        return r;
    }
    case READ_EOF:
        q->broken = true;
        r = err_make(reterr, VMCTL_E_QEMU_QMP_COMMAND_FAILED, ECONNRESET,
                     "QEMU closed the QMP connection before replying to '%s'", what);
        err_detail(reterr, "command", "%s", what);
        if (q->len > 0)
            err_note(reterr, "%zu bytes of an unfinished reply were received", q->len);
        return r;
    case READ_TOO_LONG:
        q->broken = true;
        r = err_make(reterr, VMCTL_E_QEMU_QMP_COMMAND_FAILED, EMSGSIZE,
                     "QMP line longer than %u bytes while waiting for '%s'", QMP_MAX_LINE, what);
        err_detail(reterr, "command", "%s", what);
        return r;
    case READ_ERROR:
    default:
        q->broken = true;
        r = err_make(reterr, VMCTL_E_QEMU_QMP_COMMAND_FAILED, errnum,
                     "reading the QMP reply to '%s' failed", what);
        err_detail(reterr, "command", "%s", what);
        return r;
    }
}

/* Is this reply the one to request `id`? A reply without an id is QEMU answering a request it
 * could not parse far enough to see the id: with one request outstanding, it is ours. */
static bool reply_matches(json_t *msg, uint64_t id)
{
    json_t *jid = json_object_get(msg, "id");
    if (!jid)
        return true;
    return json_is_integer(jid) && (uint64_t)json_integer_value(jid) == id;
}

static int handle_error_reply(json_t *err, const char *command, vmctl_error **reterr)
{
    const char *cls = json_string_value(json_object_get(err, "class"));
    const char *desc = json_string_value(json_object_get(err, "desc"));
    int errnum = cls && streq(cls, "CommandNotFound") ? EOPNOTSUPP : EIO;
    int r = err_make(reterr, VMCTL_E_QEMU_QMP_COMMAND_FAILED, errnum, "QMP command '%s' failed: %s",
                     command, desc ? desc : "no description");
    err_detail(reterr, "command", "%s", command);
    if (cls)
        err_detail(reterr, "class", "%s", cls);
    if (desc)
        err_note(reterr, "QEMU: %s", desc);
    return r;
}

int qmp_parse_reply(const char *line, uint64_t id, const char *command, json_t **ret,
                    vmctl_error **reterr)
{
    json_t *msg = json_loads(line, 0, NULL);
    if (!json_is_object(msg)) {
        json_decref(msg); /* not QMP: skip it */
        return QMP_REPLY_SKIP;
    }
    json_t *retv = json_object_get(msg, "return");
    json_t *errv = json_object_get(msg, "error");
    if ((!retv && !json_is_object(errv)) || !reply_matches(msg, id)) {
        json_decref(msg); /* an event, a greeting, or a stale reply */
        return QMP_REPLY_SKIP;
    }
    if (json_is_object(errv)) {
        int r = handle_error_reply(errv, command, reterr);
        json_decref(msg);
        return r;
    }
    if (ret)
        *ret = json_incref(retv);
    json_decref(msg);
    return 0;
}

/* "MAJOR.MINOR.MICRO" of a {"qemu": {"major": M, "minor": m, "micro": u}} object (the greeting's
 * and query-version's), NULL when it is not one. */
char *qmp_version_string(json_t *v)
{
    json_t *qv = json_object_get(v, "qemu");
    json_t *ma = json_object_get(qv, "major"), *mi = json_object_get(qv, "minor"),
           *mu = json_object_get(qv, "micro");
    if (!json_is_integer(ma) || !json_is_integer(mi) || !json_is_integer(mu))
        return NULL;
    return str_printf("%lld.%lld.%lld", (long long)json_integer_value(ma),
                      (long long)json_integer_value(mi), (long long)json_integer_value(mu));
}

bool qmp_parse_greeting(const char *line, char **ret_version)
{
    json_t *msg = json_loads(line, 0, NULL);
    json_t *g = json_object_get(msg, "QMP");
    bool greeting = json_is_object(g);
    if (ret_version)
        *ret_version = greeting ? qmp_version_string(json_object_get(g, "version")) : NULL;
    json_decref(msg);
    return greeting;
}

const char *qmp_version(const qmp *q)
{
    return q ? q->version : NULL;
}

static int execute_raw(qmp *q, const char *command, json_t *args, int pass_fd, json_t **ret,
                       uint64_t deadline, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    if (q->broken)
        return err_make(reterr, VMCTL_E_QEMU_QMP_COMMAND_FAILED, ENOTCONN,
                        "QMP connection is no longer usable (peer closed or framing lost); "
                        "cannot send '%s'",
                        command);

    uint64_t id = q->next_id++;
    json_t *req = json_pack("{s:s, s:I}", "execute", command, "id", (json_int_t)id);
    if (!req)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot build QMP request '%s'", command);
    if (args && json_object_set(req, "arguments", args) < 0) {
        json_decref(req);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot build QMP request '%s'", command);
    }
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!text)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot build QMP request '%s'", command);
    size_t tl = strlen(text);
    cleanup_free char *wire = realloc(text, tl + 2);
    if (!wire) {
        free(text);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot build QMP request '%s'", command);
    }
    wire[tl] = '\n';
    wire[tl + 1] = 0;

    int errnum = 0;
    int w = send_all(q, wire, tl + 1, pass_fd, deadline, &errnum);
    if (w == 0) {
        /* part of the request may be out: the stream can no longer be trusted */
        q->broken = true;
        cleanup_free char *op = str_printf("qmp %s", command);
        return err_timeout(reterr, op ? op : "qmp", seconds_between(start, deadline),
                           "cannot send QMP command '%s' before the deadline", command);
    }
    if (w < 0) {
        q->broken = true;
        int r =
            err_make(reterr, VMCTL_E_QEMU_QMP_COMMAND_FAILED, errnum == EPIPE ? ECONNRESET : errnum,
                     "cannot send QMP command '%s'", command);
        err_detail(reterr, "command", "%s", command);
        return r;
    }

    for (;;) {
        char *line = NULL;
        read_status st = read_line(q, deadline, &line, &errnum);
        if (st != READ_OK)
            return fail_stream(q, st, errnum, command, start, deadline, reterr);
        int r = qmp_parse_reply(line, id, command, ret, reterr);
        free(line);
        if (r != QMP_REPLY_SKIP)
            return r;
    }
}

int qmp_execute(qmp *q, const char *command, json_t *args, json_t **ret, uint64_t deadline,
                vmctl_error **reterr)
{
    if (!q || !command)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qmp_execute: invalid arguments");
    if (ret)
        *ret = NULL;
    return execute_raw(q, command, args, -1, ret, deadline, reterr);
}

int qmp_getfd(qmp *q, int fd, const char *fdname, uint64_t deadline, vmctl_error **reterr)
{
    if (!q || fd < 0 || !fdname)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qmp_getfd: invalid arguments");
    json_t *args = json_pack("{s:s}", "fdname", fdname);
    if (!args)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot build QMP request 'getfd'");
    int r = execute_raw(q, "getfd", args, fd, NULL, deadline, reterr);
    json_decref(args);
    return r;
}

/* Read the greeting and negotiate capabilities. */
static int handshake(qmp *q, uint64_t deadline, vmctl_error **reterr)
{
    uint64_t start = now_usec();
    for (;;) {
        char *line = NULL;
        int errnum = 0;
        read_status st = read_line(q, deadline, &line, &errnum);
        if (st == READ_DEADLINE)
            return err_timeout(reterr, "qmp greeting", seconds_between(start, deadline),
                               "no QMP greeting from QEMU before the deadline");
        if (st == READ_EOF) {
            q->broken = true;
            return err_make(reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, ECONNRESET,
                            "QEMU closed the QMP connection before its greeting");
        }
        if (st != READ_OK) {
            q->broken = true;
            return err_make(
                reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, st == READ_TOO_LONG ? EMSGSIZE : errnum,
                "reading the QMP greeting failed%s", st == READ_TOO_LONG ? ": line too long" : "");
        }
        free(q->version);
        bool greeting = qmp_parse_greeting(line, &q->version);
        free(line);
        if (greeting)
            break;
        /* anything before the greeting (garbage, events) is skipped */
    }
    return execute_raw(q, "qmp_capabilities", NULL, -1, NULL, deadline, reterr);
}

int qmp_connect_fd(int fd, uint64_t deadline, qmp **ret, vmctl_error **reterr)
{
    if (fd < 0 || !ret) {
        if (fd >= 0)
            close(fd);
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qmp_connect_fd: invalid arguments");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
        int e = errno;
        close(fd);
        return err_make(reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, e,
                        "cannot configure the QMP socket");
    }
    qmp *q = calloc(1, sizeof(*q));
    if (!q) {
        close(fd);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    q->fd = fd;
    q->next_id = 1;
    int r = handshake(q, deadline, reterr);
    if (r < 0) {
        qmp_close(q);
        return r;
    }
    *ret = q;
    return 0;
}

int qmp_connect(const char *socket_path, uint64_t deadline, qmp **ret, vmctl_error **reterr)
{
    if (!socket_path || !ret)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qmp_connect: invalid arguments");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof(sa.sun_path)) {
        int r = err_make(reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, ENAMETOOLONG,
                         "QMP socket path '%s' is longer than %zu bytes", socket_path,
                         sizeof(sa.sun_path) - 1);
        err_detail(reterr, "path", "%s", socket_path);
        return r;
    }
    strcpy(sa.sun_path, socket_path);

    /* QEMU creates the socket shortly after it starts: retry while it is missing or not yet
     * listening, until the deadline. Always try at least once. */
    int last = 0;
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return err_make(reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, errno,
                            "cannot create a socket for QMP");
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return qmp_connect_fd(fd, deadline, ret, reterr);
        /* unix sockets connect at once, or fail with EAGAIN when the backlog is full */
        last = errno;
        close(fd);
        bool transient = last == ENOENT || last == ECONNREFUSED || last == EAGAIN ||
                         last == EINPROGRESS || last == EINTR;
        if (!transient || now_usec() >= deadline)
            break;
        uint64_t left = deadline - now_usec();
        sleep_usec(left < QMP_CONNECT_RETRY_USEC ? left : QMP_CONNECT_RETRY_USEC);
    }
    int r = err_make(reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, last,
                     "cannot connect to QMP socket '%s'", socket_path);
    err_detail(reterr, "path", "%s", socket_path);
    return r;
}
