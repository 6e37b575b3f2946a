/* SPDX-License-Identifier: MIT */
/* Agent transports without vhost-vsock: the AF_VSOCK selection and sockaddr_vm, and Firecracker's
 * hybrid-vsock CONNECT handshake against a fake peer (socketpair, and a real unix socket with a
 * whole session: handshake, session ping, pong, exec-ready); the choice of a free virtio-serial
 * port of a VM directory (the QEMU backend's endpoint, agent_connect_endpoint) against listening
 * unix sockets standing in for QEMU's chardevs, by several clients of one process and of another;
 * an endpoint's vsock falling back to its ports, and the miss mark skipping vsock for a while. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include <cmocka.h>

#include "agent-client.h"
#include "agent-proto.h"
#include "backend.h"
#include "error.h"
#include "qemu.h"
#include "util/util.h"

static void test_pick(void **state)
{
    (void)state;
    assert_int_equal(agent_transport_pick(3, true), AGENT_TRANSPORT_VSOCK);
    assert_int_equal(agent_transport_pick(1234, true), AGENT_TRANSPORT_VSOCK);
    assert_int_equal(agent_transport_pick(3, false), AGENT_TRANSPORT_SERIAL);
    /* no CID allocated, or a reserved one: virtio-serial */
    assert_int_equal(agent_transport_pick(0, true), AGENT_TRANSPORT_SERIAL);
    assert_int_equal(agent_transport_pick(1, true), AGENT_TRANSPORT_SERIAL);
    assert_int_equal(agent_transport_pick(2, true), AGENT_TRANSPORT_SERIAL);
    assert_int_equal(agent_transport_pick(UINT32_MAX, true), AGENT_TRANSPORT_SERIAL);
}

static void test_vhost_present(void **state)
{
    (void)state;
    assert_false(agent_vhost_vsock_present("/nonexistent/vhost-vsock"));
    char path[] = "/tmp/test-agent-transport.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_true(agent_vhost_vsock_present(path));
    close(fd);
    unlink(path);
}

static void test_vsock_addr(void **state)
{
    (void)state;
    struct sockaddr_vm sa;
    memset(&sa, 0xff, sizeof(sa));
    agent_vsock_addr(42, AGENT_VSOCK_PORT, &sa);
    assert_int_equal(sa.svm_family, AF_VSOCK);
    assert_int_equal(sa.svm_cid, 42);
    assert_int_equal(sa.svm_port, 1024);
    assert_int_equal(sa.svm_reserved1, 0);
    for (size_t i = 0; i < sizeof(sa.svm_zero); i++)
        assert_int_equal(sa.svm_zero[i], 0);
}

/* --- the fake Firecracker peer --- */

struct peer {
    int fd;
    const char *reply; /* written after the CONNECT line; NULL: close instead */
    size_t reply_len;
    bool session;       /* then read the session ping and answer a v2 PONG */
    char got[64];       /* the line received */
    uint8_t ping_flags; /* of the session ping */
    bool got_ping;
};

static void read_line(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    char ch;
    while (n + 1 < cap && read(fd, &ch, 1) == 1) {
        buf[n++] = ch;
        if (ch == '\n')
            break;
    }
    buf[n] = 0;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    read_line(p->fd, p->got, sizeof(p->got));
    if (!p->reply) {
        close(p->fd);
        return NULL;
    }
    if (write(p->fd, p->reply, p->reply_len) != (ssize_t)p->reply_len)
        return NULL;
    if (p->session) {
        uint8_t b[AGENT_HDR_SIZE];
        size_t n = 0;
        while (n < sizeof(b)) {
            ssize_t k = read(p->fd, b + n, sizeof(b) - n);
            if (k <= 0)
                return NULL;
            n += (size_t)k;
        }
        agent_hdr h;
        size_t used = 0;
        if (agent_frame_next(b, n, &h, &used) == AGENT_OK && h.type == AGENT_MSG_PING) {
            p->got_ping = true;
            p->ping_flags = h.flags;
            uint8_t pong[256];
            int m = agent_encode_pong2(pong, sizeof(pong), h.id, AGENT_CAP_EXEC, "fake", 7);
            if (m > 0 && write(p->fd, pong, (size_t)m) != m)
                return NULL;
        }
    }
    return NULL;
}

/* Handshake on a socketpair against a peer answering `reply`; returns the handshake's result,
 * the error in *e. */
static int handshake_with(const char *reply, size_t reply_len, vmctl_error **e, struct peer *pr,
                          int *our_fd)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    *pr = (struct peer){.fd = sv[1], .reply = reply, .reply_len = reply_len};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, peer_main, pr), 0);
    int r = agent_hybrid_handshake(sv[0], AGENT_VSOCK_PORT, now_usec() + 2000000, e);
    pthread_join(t, NULL);
    if (pr->reply)
        close(sv[1]);
    *our_fd = sv[0];
    return r;
}

static void test_handshake_ok(void **state)
{
    (void)state;
    /* OK, then the first bytes of a frame in the same write: they must stay unread */
    static const char reply[] = "OK 1073741824\nVMA";
    vmctl_error *e = NULL;
    struct peer pr;
    int fd;
    int r = handshake_with(reply, sizeof(reply) - 1, &e, &pr, &fd);
    assert_int_equal(r, 0);
    assert_null(e);
    assert_string_equal(pr.got, "CONNECT 1024\n");
    char rest[8] = {0};
    assert_int_equal(read(fd, rest, sizeof(rest)), 3);
    assert_string_equal(rest, "VMA");
    close(fd);
}

static void expect_refused(const char *reply, const char *want_in_msg)
{
    vmctl_error *e = NULL;
    struct peer pr;
    int fd;
    int r = handshake_with(reply, reply ? strlen(reply) : 0, &e, &pr, &fd);
    close(fd);
    assert_true(r < 0);
    assert_non_null(e);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::agent::failed");
    if (want_in_msg && !strstr(vmctl_error_get_message(e), want_in_msg))
        fail_msg("message '%s' lacks '%s'", vmctl_error_get_message(e), want_in_msg);
    vmctl_error_free(e);
}

static void test_handshake_refused(void **state)
{
    (void)state;
    expect_refused(NULL, "closed after CONNECT 1024"); /* Firecracker closes: nobody listens */
    expect_refused("FAILED\n", "not accepted: 'FAILED'");
    expect_refused("OK\n", "not accepted");
    expect_refused("OK abc\n", "not accepted: 'OK abc'");
    expect_refused("OK 12x\n", "not accepted");
    expect_refused("ok 1024\n", "not accepted");
    expect_refused("VMA\x01\x02 a frame instead\n", "not accepted");
    char longline[200];
    memset(longline, 'O', sizeof(longline) - 1);
    longline[sizeof(longline) - 1] = 0;
    expect_refused(longline, "no end of line");
}

static void test_handshake_timeout(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    vmctl_error *e = NULL;
    uint64_t t0 = now_usec();
    int r = agent_hybrid_handshake(sv[0], 1024, now_usec() + 200000, &e); /* peer never answers */
    assert_true(r < 0);
    assert_true(now_usec() - t0 < 2000000);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::timeout");
    vmctl_error_free(e);
    close(sv[0]);
    close(sv[1]);
}

struct cargs {
    const char *path;
    agent_conn **c;
    vmctl_error **e;
    int r;
};

static void *connect_main(void *arg)
{
    struct cargs *x = arg;
    /* through the endpoint a Firecracker backend would give */
    agent_endpoint ep = {.kind = AGENT_ENDPOINT_HYBRID_VSOCK, .port = AGENT_VSOCK_PORT};
    snprintf(ep.path, sizeof(ep.path), "%s", x->path);
    x->r = agent_connect_endpoint(&ep, now_usec() + 3000000, 0, x->c, x->e);
    return NULL;
}

/* A whole session over a real unix socket: connect, CONNECT/OK, session ping, pong. */
static void test_connect_hybrid(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-agent-hybrid.XXXXXX";
    assert_non_null(mkdtemp(dir));
    cleanup_free char *path = str_printf("%s/v.sock", dir);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 4), 0);

    for (int round = 0; round < 2; round++) {
        struct peer pr = {.reply = round == 0 ? "OK 5000\n" : NULL, .session = true};
        pr.reply_len = pr.reply ? strlen(pr.reply) : 0;
        vmctl_error *e = NULL;
        agent_conn *c = NULL;
        struct cargs ca = {path, &c, &e, 0};
        pthread_t ct, t;
        assert_int_equal(pthread_create(&ct, NULL, connect_main, &ca), 0);
        pr.fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        assert_true(pr.fd >= 0);
        assert_int_equal(pthread_create(&t, NULL, peer_main, &pr), 0);
        pthread_join(ct, NULL);
        int r = ca.r;
        if (r == 0) /* the session: our ping is answered by the fake agent's pong */
            r = agent_wait_ready(c, now_usec() + 3000000, NULL, NULL, &e);
        pthread_join(t, NULL);
        assert_string_equal(pr.got, "CONNECT 1024\n");
        if (round == 0) {
            if (r < 0)
                fail_msg("hybrid session failed: %s", vmctl_error_get_message(e));
            assert_true(pr.got_ping);
            assert_int_equal(pr.ping_flags & AGENT_FLAG_NEW_SESSION, AGENT_FLAG_NEW_SESSION);
            assert_int_equal(agent_conn_caps(c), AGENT_CAP_EXEC);
            agent_close(c);
            close(pr.fd);
        } else {
            assert_true(r < 0);
            assert_null(c);
            assert_string_equal(vmctl_error_get_code(e), "vm_manager::agent::failed");
            vmctl_error_free(e);
        }
    }
    close(l);
    unlink(path);
    cleanup_free char *lock = str_printf("%s/agent.lock", dir);
    unlink(lock);
    rmdir(dir);
}

/* --- agent_connect_endpoint on the QEMU backend's endpoint: the first free port --- */

static int listen_unix(const char *path)
{
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 8), 0);
    return l;
}

/* The socket file the connection reached ("agent.1.sock"), from the peer's address. */
static const char *peer_file(agent_conn *c, char *buf, size_t size)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof(sa);
    assert_int_equal(getpeername(agent_conn_fd(c), (struct sockaddr *)&sa, &len), 0);
    const char *slash = strrchr(sa.sun_path, '/');
    snprintf(buf, size, "%s", slash ? slash + 1 : sa.sun_path);
    return buf;
}

/* What exec.c does: the backend's endpoint for the VM directory, then connect. */
static int connect_dir(const char *dir, uint32_t cid, uint64_t deadline, uint64_t queue_usec,
                       agent_conn **c, vmctl_error **e)
{
    agent_endpoint ep;
    int r = qemu_backend.agent_endpoint(NULL, dir, cid, &ep, e);
    return r < 0 ? r : agent_connect_endpoint(&ep, deadline, queue_usec, c, e);
}

static agent_conn *connect_vm(const char *dir, uint32_t cid, double seconds, vmctl_error **e)
{
    agent_conn *c = NULL;
    int r = connect_dir(dir, cid, now_usec() + (uint64_t)(seconds * 1e6), 0, &c, e);
    assert_true((r == 0) == (c != NULL));
    return c;
}

/* Several clients of one VM: each takes the first port whose lock is free; with every port taken
 * the next one waits, and gets the port released first. */
static void test_connect_vm_ports(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-agent-ports.XXXXXX";
    assert_non_null(mkdtemp(dir));
    static const char *const socks[] = {"agent.sock", "agent.1.sock", "agent.2.sock"};
    int l[3];
    for (int i = 0; i < 3; i++) {
        cleanup_free char *p = str_printf("%s/%s", dir, socks[i]);
        l[i] = listen_unix(p);
    }
    char buf[128];
    vmctl_error *e = NULL;
    /* a CID without /dev/vhost-vsock (this host, or a missing device): virtio-serial */
    agent_conn *a = connect_vm(dir, agent_vhost_vsock_present(NULL) ? 0 : 42, 2, &e);
    assert_non_null(a);
    assert_string_equal(peer_file(a, buf, sizeof(buf)), "agent.sock");
    agent_conn *b = connect_vm(dir, 0, 2, &e);
    assert_non_null(b);
    assert_string_equal(peer_file(b, buf, sizeof(buf)), "agent.1.sock");
    agent_conn *c = connect_vm(dir, 0, 2, &e);
    assert_non_null(c);
    assert_string_equal(peer_file(c, buf, sizeof(buf)), "agent.2.sock");

    /* all three taken: a fourth waits until its deadline */
    uint64_t t0 = now_usec();
    agent_conn *d = connect_vm(dir, 0, 0.3, &e);
    assert_null(d);
    assert_true(now_usec() - t0 >= 250000);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::timeout");
    assert_string_equal(vmctl_error_find_detail(e, "operation"), "agent connect");
    assert_non_null(strstr(vmctl_error_get_message(e), "all 3 agent ports"));
    vmctl_error_free(e);
    e = NULL;

    /* the middle one goes: the next client gets its port */
    agent_close(b);
    d = connect_vm(dir, 0, 2, &e);
    assert_non_null(d);
    assert_string_equal(peer_file(d, buf, sizeof(buf)), "agent.1.sock");

    /* another process waiting for a port (queued) gets the first one released */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* the copies of our lock descriptors would keep the locks (flock is per open file) */
        agent_close(a);
        agent_close(c);
        agent_close(d);
        vmctl_error *ce = NULL;
        agent_conn *x = NULL;
        /* a connect deadline shorter than the wait, but a queue of 5 s: ports held by others
         * are waited for beyond the deadline */
        int r = connect_dir(dir, 0, now_usec() + 100000, 5000000, &x, &ce);
        char pb[128];
        _exit(r == 0 && streq(peer_file(x, pb, sizeof(pb)), "agent.2.sock") ? 0 : 1);
    }
    sleep_usec(200000); /* the child is waiting now (or soon): every port is taken */
    agent_close(c);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    agent_close(a);
    agent_close(d);
    for (int i = 0; i < 3; i++) {
        close(l[i]);
        cleanup_free char *p = str_printf("%s/%s", dir, socks[i]);
        unlink(p);
        static const char *const locks[] = {"agent.lock", "agent.1.lock", "agent.2.lock"};
        cleanup_free char *k = str_printf("%s/%s", dir, locks[i]);
        unlink(k);
    }
    rmdir(dir);
}

/* A vsock miss is remembered for a while in the VM directory, then forgotten. */
static void test_vsock_miss_mark(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-agent-miss.XXXXXX";
    assert_non_null(mkdtemp(dir));
    cleanup_free char *mark = str_printf("%s/agent.vsock-miss", dir);
    assert_false(agent_vsock_missed_recently(mark));
    agent_vsock_mark_missed(mark);
    assert_true(agent_vsock_missed_recently(mark));
    /* no mark file: never skipped, nothing written */
    assert_false(agent_vsock_missed_recently(""));
    assert_false(agent_vsock_missed_recently(NULL));
    agent_vsock_mark_missed("");
    /* older than AGENT_VSOCK_MISS_USEC: vsock is tried again */
    struct timespec old[2] = {{.tv_sec = time(NULL) - 61}, {.tv_sec = time(NULL) - 61}};
    assert_int_equal(utimensat(AT_FDCWD, mark, old, 0), 0);
    assert_false(agent_vsock_missed_recently(mark));
    /* a new miss renews it */
    agent_vsock_mark_missed(mark);
    assert_true(agent_vsock_missed_recently(mark));
    unlink(mark);
    rmdir(dir);
}

/* A VM started before it had several ports: agent.sock only, so clients take turns on it and
 * never try a port whose socket does not exist. */
static void test_connect_vm_single_port(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-agent-port0.XXXXXX";
    assert_non_null(mkdtemp(dir));
    cleanup_free char *sock = str_printf("%s/agent.sock", dir);
    int l = listen_unix(sock);
    vmctl_error *e = NULL;
    char buf[128];
    agent_conn *a = connect_vm(dir, 0, 2, &e);
    assert_non_null(a);
    assert_string_equal(peer_file(a, buf, sizeof(buf)), "agent.sock");
    agent_conn *b = connect_vm(dir, 0, 0.2, &e);
    assert_null(b);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::timeout");
    vmctl_error_free(e);
    e = NULL;
    cleanup_free char *lock1 = str_printf("%s/agent.1.lock", dir);
    assert_int_equal(access(lock1, F_OK), -1); /* no other port was considered */
    agent_close(a);
    b = connect_vm(dir, 0, 2, &e);
    assert_non_null(b);
    agent_close(b);
    close(l);
    unlink(sock);
    cleanup_free char *lock = str_printf("%s/agent.lock", dir);
    unlink(lock);
    rmdir(dir);
}

static int64_t mtime_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (int64_t)st.st_mtim.tv_sec;
}

/* A VSOCK endpoint with ports: nobody answers on vsock (no vhost-vsock here; a CID nobody has
 * elsewhere), so the client takes the first port and marks the miss; while the mark is recent,
 * vsock is not tried again (the mark is left as it was); once it is old, it is tried again. */
static void test_connect_vsock_fallback(void **state)
{
    (void)state;
    char dir[] = "/tmp/test-agent-vsock.XXXXXX";
    assert_non_null(mkdtemp(dir));
    agent_endpoint ep = {
        .kind = AGENT_ENDPOINT_VSOCK, .cid = 0x7ffffff3u, .port = AGENT_VSOCK_PORT, .n_ports = 1};
    snprintf(ep.vsock_miss, sizeof(ep.vsock_miss), "%s/miss", dir);
    snprintf(ep.ports[0].sock, sizeof(ep.ports[0].sock), "%s/port.sock", dir);
    snprintf(ep.ports[0].lock, sizeof(ep.ports[0].lock), "%s/port.lock", dir);
    int l = listen_unix(ep.ports[0].sock);
    char buf[128];
    for (int round = 0; round < 3; round++) {
        if (round > 0) {
            /* round 1: a miss 30 s ago (recent); round 2: 61 s ago (forgotten) */
            time_t then = time(NULL) - (round == 1 ? 30 : 61);
            struct timespec t[2] = {{.tv_sec = then}, {.tv_sec = then}};
            assert_int_equal(utimensat(AT_FDCWD, ep.vsock_miss, t, 0), 0);
        }
        vmctl_error *e = NULL;
        agent_conn *c = NULL;
        int r = agent_connect_endpoint(&ep, now_usec() + 3000000, 0, &c, &e);
        if (r < 0)
            fail_msg("round %d: %s", round, vmctl_error_get_message(e));
        assert_string_equal(peer_file(c, buf, sizeof(buf)), "port.sock");
        agent_close(c);
        int64_t age = (int64_t)time(NULL) - mtime_of(ep.vsock_miss);
        if (round == 1)
            assert_true(age >= 29); /* skipped: not marked again */
        else
            assert_true(age <= 5); /* tried, missed, marked now */
    }
    close(l);
    unlink(ep.ports[0].sock);
    unlink(ep.ports[0].lock);
    unlink(ep.vsock_miss);
    rmdir(dir);
}

/* An endpoint with nothing behind it fails as agent::failed: vsock alone (no ports to fall back
 * to: its whole deadline, no mark written), and no port at all. */
static void test_connect_endpoint_unreachable(void **state)
{
    (void)state;
    agent_endpoint ep = {
        .kind = AGENT_ENDPOINT_VSOCK, .cid = 0x7ffffff3u, .port = AGENT_VSOCK_PORT};
    vmctl_error *e = NULL;
    agent_conn *c = NULL;
    uint64_t t0 = now_usec();
    assert_true(agent_connect_endpoint(&ep, now_usec() + 300000, 0, &c, &e) < 0);
    assert_null(c);
    assert_true(now_usec() - t0 < 3000000);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::agent::failed");
    assert_non_null(strstr(vmctl_error_get_message(e), "vsock"));
    vmctl_error_free(e);
    e = NULL;

    ep = (agent_endpoint){.kind = AGENT_ENDPOINT_SERIAL};
    assert_true(agent_connect_endpoint(&ep, now_usec() + 300000, 0, &c, &e) < 0);
    assert_null(c);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::agent::failed");
    assert_string_equal(vmctl_error_get_message(e), "the vm has no agent port");
    vmctl_error_free(e);
}

/* Without vhost-vsock, nobody's CID can be checked. */
static void test_cid_busy_without_device(void **state)
{
    (void)state;
    assert_int_equal(agent_vsock_cid_busy("/nonexistent/vhost-vsock", 3), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pick),
        cmocka_unit_test(test_vhost_present),
        cmocka_unit_test(test_vsock_addr),
        cmocka_unit_test(test_handshake_ok),
        cmocka_unit_test(test_handshake_refused),
        cmocka_unit_test(test_handshake_timeout),
        cmocka_unit_test(test_connect_hybrid),
        cmocka_unit_test(test_connect_vm_ports),
        cmocka_unit_test(test_connect_vm_single_port),
        cmocka_unit_test(test_vsock_miss_mark),
        cmocka_unit_test(test_connect_vsock_fallback),
        cmocka_unit_test(test_connect_endpoint_unreachable),
        cmocka_unit_test(test_cid_busy_without_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
