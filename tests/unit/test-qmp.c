/* SPDX-License-Identifier: MIT */
/* The QMP client against a scripted fake QEMU on a socketpair (a thread plays the peer), and
 * against a real qemu-system-x86_64 (TCG, -S, no guest) when one is installed. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "qmp.h"
#include "skip.h"
#include "util/util.h"

extern char **environ;

#define GREETING                                                                                   \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "              \
    "\"package\": \"\"}, \"capabilities\": [\"oob\"]}}\n"

/* ---------- the fake peer ---------- */

typedef struct peer {
    int fd; /* the peer's end */
    void (*script)(struct peer *p);
    pthread_t thread;
    json_t *last_request; /* the last request the peer read */
    int scratch;
} peer;

static void peer_send(peer *p, const char *s)
{
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t n = send(p->fd, s, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return; /* the client went away: the test checks what it saw */
        }
        s += n;
        len -= (size_t)n;
    }
}

static void peer_sendf(peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void peer_sendf(peer *p, const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (s)
        peer_send(p, s);
    free(s);
}

/* One byte per write, with a pause so that the client sees many short reads. */
static void peer_send_bytewise(peer *p, const char *s)
{
    for (; *s; s++) {
        if (send(p->fd, s, 1, MSG_NOSIGNAL) != 1)
            return;
        sleep_usec(300);
    }
}

/* Read one request line; returns its id (or -1 on EOF/garbage). */
static json_int_t peer_read_request(peer *p)
{
    char line[4096];
    size_t n = 0;
    for (;;) {
        char c;
        ssize_t r = read(p->fd, &c, 1);
        if (r <= 0)
            return -1;
        if (c == '\n')
            break;
        if (n + 1 < sizeof(line))
            line[n++] = c;
    }
    line[n] = 0;
    json_decref(p->last_request);
    p->last_request = json_loads(line, 0, NULL);
    json_t *id = json_object_get(p->last_request, "id");
    return json_is_integer(id) ? json_integer_value(id) : -1;
}

static const char *peer_last_command(peer *p)
{
    return json_string_value(json_object_get(p->last_request, "execute"));
}

/* Greeting and capability negotiation, as QEMU does them. */
static bool peer_handshake(peer *p)
{
    peer_send(p, GREETING);
    json_int_t id = peer_read_request(p);
    if (id < 0 || !peer_last_command(p) || !streq(peer_last_command(p), "qmp_capabilities"))
        return false;
    peer_sendf(p, "{\"return\": {}, \"id\": %lld}\n", (long long)id);
    return true;
}

/* Wait until the client closes its end. */
static void peer_drain(peer *p)
{
    char buf[256];
    while (read(p->fd, buf, sizeof(buf)) > 0)
        ;
}

static void *peer_main(void *arg)
{
    peer *p = arg;
    p->script(p);
    return NULL;
}

static int start_peer(peer *p, void (*script)(peer *p))
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    memset(p, 0, sizeof(*p));
    p->fd = sv[1];
    p->script = script;
    assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
    return sv[0];
}

static void stop_peer(peer *p)
{
    pthread_join(p->thread, NULL);
    close(p->fd);
    json_decref(p->last_request);
}

static uint64_t deadline_in(uint64_t usec)
{
    return now_usec() + usec;
}

static bool has_note_containing(const vmctl_error *e, const char *needle)
{
    for (size_t i = 0; i < vmctl_error_get_n_notes(e); i++)
        if (strstr(vmctl_error_get_note(e, i), needle))
            return true;
    return false;
}

/* ---------- greeting, capabilities, a command's return value ---------- */

static void script_query_status(peer *p)
{
    if (!peer_handshake(p))
        return;
    json_int_t id = peer_read_request(p);
    if (peer_last_command(p) && streq(peer_last_command(p), "query-status"))
        peer_sendf(p,
                   "{\"return\": {\"status\": \"running\", \"singlestep\": false, "
                   "\"running\": true}, \"id\": %lld}\n",
                   (long long)id);
    peer_drain(p);
}

static void test_handshake_and_return(void **state)
{
    peer p;
    int fd = start_peer(&p, script_query_status);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    assert_null(err);
    json_t *ret = NULL;
    assert_int_equal(qmp_execute(q, "query-status", NULL, &ret, deadline_in(5000000), &err), 0);
    assert_non_null(ret);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "running");
    assert_true(json_is_true(json_object_get(ret, "running")));
    json_decref(ret);
    qmp_close(q);
    stop_peer(&p);
}

/* The request carries our arguments and an id; the reply to a command without ret is fine. */
static void script_check_args(peer *p)
{
    if (!peer_handshake(p))
        return;
    json_int_t id = peer_read_request(p);
    json_t *args = json_object_get(p->last_request, "arguments");
    const char *dev = json_string_value(json_object_get(args, "device"));
    if (dev && streq(dev, "disk0") && id > 0)
        peer_sendf(p, "{\"return\": {}, \"id\": %lld}\n", (long long)id);
    else
        peer_sendf(p,
                   "{\"error\": {\"class\": \"GenericError\", \"desc\": \"bad args\"}, "
                   "\"id\": %lld}\n",
                   (long long)id);
    peer_drain(p);
}

static void test_arguments_sent(void **state)
{
    peer p;
    int fd = start_peer(&p, script_check_args);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    json_t *args = json_pack("{s:s}", "device", "disk0");
    assert_int_equal(qmp_execute(q, "eject", args, NULL, deadline_in(5000000), &err), 0);
    assert_null(err);
    /* args are borrowed */
    assert_int_equal(args->refcount, 1);
    json_decref(args);
    qmp_close(q);
    stop_peer(&p);
}

/* ---------- an error reply ---------- */

static void script_error(peer *p)
{
    if (!peer_handshake(p))
        return;
    json_int_t id = peer_read_request(p);
    peer_sendf(p,
               "{\"id\": %lld, \"error\": {\"class\": \"DeviceNotFound\", "
               "\"desc\": \"Device 'nope' not found\"}}\n",
               (long long)id);
    id = peer_read_request(p);
    peer_sendf(p,
               "{\"id\": %lld, \"error\": {\"class\": \"CommandNotFound\", "
               "\"desc\": \"The command no-such-command has not been found\"}}\n",
               (long long)id);
    peer_drain(p);
}

static void test_error_reply(void **state)
{
    peer p;
    int fd = start_peer(&p, script_error);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    json_t *ret = NULL;
    int r = qmp_execute(q, "device_del", NULL, &ret, deadline_in(5000000), &err);
    assert_int_equal(r, -EIO);
    assert_null(ret);
    assert_non_null(err);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::qmp_command_failed");
    assert_true(has_note_containing(err, "Device 'nope' not found"));
    assert_string_equal(vmctl_error_find_detail(err, "class"), "DeviceNotFound");
    assert_string_equal(vmctl_error_find_detail(err, "command"), "device_del");
    assert_non_null(strstr(vmctl_error_get_message(err), "device_del"));

    /* the connection is still good after an error reply */
    vmctl_error_free(TAKE_PTR(err));
    r = qmp_execute(q, "no-such-command", NULL, NULL, deadline_in(5000000), &err);
    assert_int_equal(r, -EOPNOTSUPP);
    assert_string_equal(vmctl_error_find_detail(err, "class"), "CommandNotFound");
    qmp_close(q);
    stop_peer(&p);
}

/* ---------- events and stale replies before the reply, several documents per write ---------- */

static void script_events(peer *p)
{
    if (!peer_handshake(p))
        return;
    json_int_t id = peer_read_request(p);
    /* one write holding two events, a stale reply, the reply, and an event after it */
    peer_sendf(p,
               "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\n"
               "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 3}, \"event\": \"RESUME\"}\n"
               "{\"return\": {\"status\": \"stale\"}, \"id\": %lld}\n"
               "{\"return\": {\"status\": \"paused\"}, \"id\": %lld}\n"
               "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true}}\n",
               (long long)(id + 1000), (long long)id);
    id = peer_read_request(p);
    peer_sendf(p, "{\"return\": {\"status\": \"second\"}, \"id\": %lld}\n", (long long)id);
    peer_drain(p);
}

static void test_events_interleaved(void **state)
{
    peer p;
    int fd = start_peer(&p, script_events);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    json_t *ret = NULL;
    assert_int_equal(qmp_execute(q, "query-status", NULL, &ret, deadline_in(5000000), &err), 0);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "paused");
    json_decref(ret);
    /* the trailing event in the same read stays buffered and is skipped next time */
    assert_int_equal(qmp_execute(q, "query-status", NULL, &ret, deadline_in(5000000), &err), 0);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "second");
    json_decref(ret);
    qmp_close(q);
    stop_peer(&p);
}

/* ---------- a reply in 1-byte writes ---------- */

static void script_bytewise(peer *p)
{
    peer_send_bytewise(p, GREETING);
    json_int_t id = peer_read_request(p);
    char buf[256];
    snprintf(buf, sizeof(buf), "{\"return\": {}, \"id\": %lld}\r\n", (long long)id);
    peer_send_bytewise(p, buf);
    id = peer_read_request(p);
    snprintf(buf, sizeof(buf),
             "{\"event\": \"RTC_CHANGE\", \"data\": {\"offset\": 1}}\n"
             "{\"return\": {\"name\": \"vm-\\u00e9\\n\"}, \"id\": %lld}\n",
             (long long)id);
    peer_send_bytewise(p, buf);
    peer_drain(p);
}

static void test_bytewise_reply(void **state)
{
    peer p;
    int fd = start_peer(&p, script_bytewise);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(10000000), &q, &err), 0);
    json_t *ret = NULL;
    assert_int_equal(qmp_execute(q, "query-name", NULL, &ret, deadline_in(10000000), &err), 0);
    assert_string_equal(json_string_value(json_object_get(ret, "name")), "vm-\xc3\xa9\n");
    json_decref(ret);
    qmp_close(q);
    stop_peer(&p);
}

/* ---------- the peer closes mid-reply ---------- */

static void script_close_mid_reply(peer *p)
{
    if (!peer_handshake(p))
        return;
    json_int_t id = peer_read_request(p);
    peer_sendf(p, "{\"return\": {\"status\": \"runn");
    (void)id;
    shutdown(p->fd, SHUT_RDWR);
}

static void test_peer_closes_mid_reply(void **state)
{
    peer p;
    int fd = start_peer(&p, script_close_mid_reply);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    json_t *ret = NULL;
    int r = qmp_execute(q, "query-status", NULL, &ret, deadline_in(5000000), &err);
    assert_int_equal(r, -ECONNRESET);
    assert_null(ret);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::qmp_command_failed");
    assert_non_null(strstr(vmctl_error_get_message(err), "closed"));
    /* the connection refuses further use instead of hanging */
    vmctl_error_free(TAKE_PTR(err));
    r = qmp_execute(q, "query-status", NULL, NULL, deadline_in(5000000), &err);
    assert_int_equal(r, -ENOTCONN);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::qmp_command_failed");
    qmp_close(q);
    stop_peer(&p);
}

static void script_close_before_greeting(peer *p)
{
    peer_send(p, "{\"QMP\": {\"vers");
    shutdown(p->fd, SHUT_RDWR);
}

static void test_peer_closes_before_greeting(void **state)
{
    peer p;
    int fd = start_peer(&p, script_close_before_greeting);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    int r = qmp_connect_fd(fd, deadline_in(5000000), &q, &err);
    assert_int_equal(r, -ECONNRESET);
    assert_null(q);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::qmp_connect_failed");
    stop_peer(&p);
}

/* ---------- deadlines ---------- */

static void script_never_reply(peer *p)
{
    if (!peer_handshake(p))
        return;
    (void)peer_read_request(p);
    /* say nothing until the client gives up and closes */
    peer_drain(p);
}

static void test_deadline_passes(void **state)
{
    peer p;
    int fd = start_peer(&p, script_never_reply);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    uint64_t deadline = deadline_in(200000);
    int r = qmp_execute(q, "query-status", NULL, NULL, deadline, &err);
    assert_int_equal(r, -ETIMEDOUT);
    /* it gave up no earlier than asked */
    assert_true(now_usec() >= deadline);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::timeout");
    assert_string_equal(vmctl_error_find_detail(err, "operation"), "qmp query-status");
    assert_non_null(vmctl_error_find_detail(err, "timeout_seconds"));
    qmp_close(q);
    stop_peer(&p);
}

static void script_silent(peer *p)
{
    peer_drain(p);
}

static void test_greeting_deadline(void **state)
{
    peer p;
    int fd = start_peer(&p, script_silent);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    uint64_t deadline = deadline_in(150000);
    int r = qmp_connect_fd(fd, deadline, &q, &err);
    assert_int_equal(r, -ETIMEDOUT);
    assert_true(now_usec() >= deadline);
    assert_null(q);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::timeout");
    assert_string_equal(vmctl_error_find_detail(err, "operation"), "qmp greeting");
    stop_peer(&p);
}

/* A reply that arrives after the deadline is recognised as stale by the next command. */
static void script_late_reply(peer *p)
{
    if (!peer_handshake(p))
        return;
    json_int_t first = peer_read_request(p);
    json_int_t second = peer_read_request(p); /* sent after the client gave up on the first */
    peer_sendf(p, "{\"return\": {\"which\": \"first\"}, \"id\": %lld}\n", (long long)first);
    peer_sendf(p, "{\"return\": {\"which\": \"second\"}, \"id\": %lld}\n", (long long)second);
    peer_drain(p);
}

static void test_late_reply_skipped(void **state)
{
    peer p;
    int fd = start_peer(&p, script_late_reply);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    assert_int_equal(qmp_execute(q, "query-name", NULL, NULL, deadline_in(100000), &err),
                     -ETIMEDOUT);
    vmctl_error_free(TAKE_PTR(err));
    json_t *ret = NULL;
    assert_int_equal(qmp_execute(q, "query-name", NULL, &ret, deadline_in(5000000), &err), 0);
    assert_string_equal(json_string_value(json_object_get(ret, "which")), "second");
    json_decref(ret);
    qmp_close(q);
    stop_peer(&p);
}

/* ---------- garbage ---------- */

static void script_garbage(peer *p)
{
    peer_send(p, "garbage before the greeting\n\n{\"event\": \"EARLY\"}\n");
    if (!peer_handshake(p))
        return;
    json_int_t id = peer_read_request(p);
    peer_send(p, "this is not json\n"
                 "{\"unterminated\": \n"
                 "[1, 2, 3]\n"
                 "\"a string\"\n"
                 "{\"neither\": \"return nor error\"}\n"
                 "{\"error\": \"not an object\"}\n"
                 "\n");
    peer_sendf(p, "{\"return\": [1, 2], \"id\": %lld}\n", (long long)id);
    peer_drain(p);
}

static void test_garbage_lines(void **state)
{
    peer p;
    int fd = start_peer(&p, script_garbage);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    json_t *ret = NULL;
    assert_int_equal(qmp_execute(q, "query-x", NULL, &ret, deadline_in(5000000), &err), 0);
    assert_true(json_is_array(ret));
    assert_int_equal(json_array_size(ret), 2);
    json_decref(ret);
    qmp_close(q);
    stop_peer(&p);
}

/* A line that never ends must not make the client buffer without bound. */
static void script_endless_line(peer *p)
{
    if (!peer_handshake(p))
        return;
    (void)peer_read_request(p);
    static char chunk[65536];
    memset(chunk, 'x', sizeof(chunk) - 1);
    chunk[sizeof(chunk) - 1] = 0;
    peer_send(p, "{\"return\": \"");
    for (int i = 0; i < 400; i++) { /* ~25 MiB, more than the limit */
        if (send(p->fd, chunk, sizeof(chunk) - 1, MSG_NOSIGNAL) < 0)
            break;
    }
    shutdown(p->fd, SHUT_RDWR);
}

static void test_line_too_long(void **state)
{
    peer p;
    int fd = start_peer(&p, script_endless_line);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect_fd(fd, deadline_in(5000000), &q, &err), 0);
    int r = qmp_execute(q, "query-x", NULL, NULL, deadline_in(30000000), &err);
    assert_int_equal(r, -EMSGSIZE);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::qmp_command_failed");
    qmp_close(q);
    stop_peer(&p);
}

/* ---------- connecting to a path ---------- */

static char tmpdir[] = "/tmp/test-qmp-XXXXXX";

static void test_connect_missing_socket(void **state)
{
    cleanup_free char *path = str_printf("%s/missing.sock", tmpdir);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    uint64_t deadline = deadline_in(100000);
    int r = qmp_connect(path, deadline, &q, &err);
    assert_int_equal(r, -ENOENT);
    assert_true(now_usec() >= deadline); /* it retried until the deadline */
    assert_null(q);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::qmp_connect_failed");
    assert_string_equal(vmctl_error_find_detail(err, "path"), path);
}

struct late_server {
    char *path;
    int listen_fd;
};

/* Create the socket only after a while (as QEMU does), then act as the peer. */
static void *late_server_main(void *arg)
{
    struct late_server *s = arg;
    sleep_usec(150000);
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, s->path, sizeof(sa.sun_path) - 1);
    if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0)
        return NULL;
    int cfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    close(lfd);
    if (cfd < 0)
        return NULL;
    peer p = {.fd = cfd};
    script_query_status(&p);
    json_decref(p.last_request);
    close(cfd);
    return NULL;
}

static void test_connect_retries_until_socket_appears(void **state)
{
    cleanup_free char *path = str_printf("%s/late.sock", tmpdir);
    struct late_server s = {.path = path};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, late_server_main, &s), 0);
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect(path, deadline_in(5000000), &q, &err), 0);
    json_t *ret = NULL;
    assert_int_equal(qmp_execute(q, "query-status", NULL, &ret, deadline_in(5000000), &err), 0);
    assert_string_equal(json_string_value(json_object_get(ret, "status")), "running");
    json_decref(ret);
    qmp_close(q);
    pthread_join(th, NULL);
    unlink(path);
}

static void test_connect_path_too_long(void **state)
{
    char path[200];
    memset(path, 'a', sizeof(path) - 1);
    path[0] = '/';
    path[sizeof(path) - 1] = 0;
    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    assert_int_equal(qmp_connect(path, deadline_in(100000), &q, &err), -ENAMETOOLONG);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::qmp_connect_failed");
}

/* ---------- a real QEMU ---------- */

static const char *qemu_binary(void)
{
    const char *env = getenv("VMCTL_QEMU");
    return env && *env ? env : "qemu-system-x86_64";
}

static bool wait_child(pid_t pid, uint64_t deadline, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return true;
        if (now_usec() >= deadline)
            return false;
        sleep_usec(5000);
    }
}

static const char *status_of(qmp *q, vmctl_error **err)
{
    static char buf[64];
    json_t *ret = NULL;
    if (qmp_execute(q, "query-status", NULL, &ret, deadline_in(10000000), err) < 0)
        return "error";
    snprintf(buf, sizeof(buf), "%s", json_string_value(json_object_get(ret, "status")));
    json_decref(ret);
    return buf;
}

/* The parser alone (what fuzz-qmp fuzzes): skip, return, error, greeting; no I/O. */
static void test_parse_reply(void **state)
{
    (void)state;
    json_t *v = NULL;
    vmctl_error *e = NULL;
    assert_int_equal(
        qmp_parse_reply("{\"return\": {\"running\": true}, \"id\": 7}", 7, "query-status", &v, &e),
        0);
    assert_true(json_is_true(json_object_get(v, "running")));
    json_decref(v);
    v = NULL;
    assert_int_equal(qmp_parse_reply("{\"return\": {}, \"id\": 6}", 7, "x", &v, &e),
                     QMP_REPLY_SKIP);
    assert_int_equal(qmp_parse_reply("{\"event\": \"STOP\"}", 7, "x", &v, &e), QMP_REPLY_SKIP);
    assert_int_equal(qmp_parse_reply("{\"QMP\": {}}", 7, "x", &v, &e), QMP_REPLY_SKIP);
    assert_int_equal(qmp_parse_reply("not json", 7, "x", &v, &e), QMP_REPLY_SKIP);
    assert_null(v);
    assert_null(e);
    assert_int_equal(qmp_parse_reply("{\"id\": 7, \"error\": {\"class\": \"CommandNotFound\", "
                                     "\"desc\": \"The command nosuch has not been found\"}}",
                                     7, "nosuch", &v, &e),
                     -EOPNOTSUPP);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::qemu::qmp_command_failed");
    assert_string_equal(vmctl_error_find_detail(e, "class"), "CommandNotFound");
    vmctl_error_free(e);
    char *gv = (char *)1;
    assert_true(qmp_parse_greeting("{\"QMP\": {\"capabilities\": [\"oob\"]}}", &gv));
    assert_null(gv);
    assert_false(qmp_parse_greeting("{\"return\": {}}", NULL));
    assert_false(qmp_parse_greeting("{", &gv));
    assert_null(gv);
    assert_true(
        qmp_parse_greeting("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 19, \"minor\": 2, "
                           "\"major\": 7}, \"package\": \"Debian 1:7.2+dfsg-7\"}, "
                           "\"capabilities\": [\"oob\"]}}",
                           &gv));
    assert_string_equal(gv, "7.2.19");
    free(gv);
    /* a version that is not numbers names none */
    assert_true(qmp_parse_greeting(
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": \"x\", \"minor\": 2, \"major\": 7}}}}",
        &gv));
    assert_null(gv);
}

static void test_real_qemu(void **state)
{
    cleanup_free char *bin = find_in_path(qemu_binary());
    if (!bin) {
        skip_test(NULL, "%s not found in PATH (apt-get install qemu-system-x86)", qemu_binary());
    }
    cleanup_free char *sock = str_printf("%s/qmp.sock", tmpdir);
    cleanup_free char *qmparg = str_printf("unix:%s,server=on,wait=off", sock);
    cleanup_free char *log = str_printf("%s/qemu.log", tmpdir);
    char *argv[] = {bin,    "-M",   "microvm",  "-accel", "tcg",         "-m",
                    "64",   "-S",   "-display", "none",   "-nodefaults", "-no-user-config",
                    "-qmp", qmparg, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = 0;
    assert_int_equal(posix_spawn(&pid, bin, &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);

    cleanup_error vmctl_error *err = NULL;
    qmp *q = NULL;
    int r = qmp_connect(sock, deadline_in(20000000), &q, &err);
    if (r < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("qmp_connect: %s", vmctl_error_get_message(err));
    }
    assert_string_equal(status_of(q, &err), "prelaunch");
    assert_int_equal(qmp_execute(q, "cont", NULL, NULL, deadline_in(10000000), &err), 0);
    assert_string_equal(status_of(q, &err), "running");
    assert_int_equal(qmp_execute(q, "stop", NULL, NULL, deadline_in(10000000), &err), 0);
    assert_string_equal(status_of(q, &err), "paused");
    assert_int_equal(qmp_execute(q, "cont", NULL, NULL, deadline_in(10000000), &err), 0);
    assert_string_equal(status_of(q, &err), "running");

    /* a large reply (the schema is hundreds of KiB on one line) */
    json_t *schema = NULL;
    assert_int_equal(qmp_execute(q, "query-qmp-schema", NULL, &schema, deadline_in(20000000), &err),
                     0);
    assert_true(json_array_size(schema) > 100);
    json_decref(schema);

    /* QEMU's own error for a bad command, with its class and desc */
    r = qmp_execute(q, "no-such-command", NULL, NULL, deadline_in(10000000), &err);
    assert_int_equal(r, -EOPNOTSUPP);
    assert_string_equal(vmctl_error_find_detail(err, "class"), "CommandNotFound");
    assert_true(has_note_containing(err, "no-such-command"));
    vmctl_error_free(TAKE_PTR(err));

    /* quit: QEMU replies and/or closes; both are fine */
    r = qmp_execute(q, "quit", NULL, NULL, deadline_in(10000000), &err);
    assert_true(r == 0 || r == -ECONNRESET);
    qmp_close(q);
    int status = 0;
    bool exited = wait_child(pid, deadline_in(20000000), &status);
    if (!exited) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    assert_true(exited);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    unlink(sock);
    unlink(log);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_reply),
        cmocka_unit_test(test_handshake_and_return),
        cmocka_unit_test(test_arguments_sent),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_events_interleaved),
        cmocka_unit_test(test_bytewise_reply),
        cmocka_unit_test(test_peer_closes_mid_reply),
        cmocka_unit_test(test_peer_closes_before_greeting),
        cmocka_unit_test(test_deadline_passes),
        cmocka_unit_test(test_greeting_deadline),
        cmocka_unit_test(test_late_reply_skipped),
        cmocka_unit_test(test_garbage_lines),
        cmocka_unit_test(test_line_too_long),
        cmocka_unit_test(test_connect_missing_socket),
        cmocka_unit_test(test_connect_retries_until_socket_appears),
        cmocka_unit_test(test_connect_path_too_long),
        cmocka_unit_test(test_real_qemu),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rm_rf(tmpdir);
    return failed;
}
