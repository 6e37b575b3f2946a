/* SPDX-License-Identifier: MIT */
/* The host side of exec -t against a fake agent on a unix socket: the EXEC frame carries the TTY
 * flag and the terminal's size, agent_proc_resize sends RESIZE with the request's id, and an
 * agent that does not advertise AGENT_CAP_TTY (an older one) fails the request up front with
 * exec::unavailable saying so, without sending anything. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent-client.h"
#include "agent-proto.h"
#include "error.h"
#include "util/util.h"

struct fake {
    int listen_fd;
    uint64_t caps;
    /* what it saw */
    int execs;
    uint32_t exec_flags, rows, cols;
    int resizes;
    uint32_t resize_id, exec_id, new_rows, new_cols;
};

static bool read_full(int fd, uint8_t *b, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t k = read(fd, b + off, n - off);
        if (k <= 0)
            return false;
        off += (size_t)k;
    }
    return true;
}

static void put(int fd, const uint8_t *b, int n)
{
    if (n > 0 && write(fd, b, (size_t)n) != n)
        fail_msg("fake agent: short write");
}

/* One connection: PONG with f->caps; EXEC recorded; RESIZE recorded and answered by the EXEC's
 * EXIT (status 0), so that the host's wait ends. */
static void *fake_main(void *arg)
{
    struct fake *f = arg;
    int fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    static uint8_t b[AGENT_MAX_FRAME];
    for (;;) {
        if (!read_full(fd, b, AGENT_HDR_SIZE))
            break;
        agent_hdr h;
        if (agent_hdr_decode(b, AGENT_HDR_SIZE, &h) != AGENT_OK ||
            !read_full(fd, b + AGENT_HDR_SIZE, h.len))
            break;
        uint8_t out[256];
        const uint8_t *payload = b + AGENT_HDR_SIZE;
        if (h.type == AGENT_MSG_PING) {
            put(fd, out, agent_encode_pong2(out, sizeof(out), h.id, f->caps, "fake", 9));
        } else if (h.type == AGENT_MSG_EXEC) {
            agent_exec_req req;
            if (agent_decode_exec(payload, h.len, &req) == AGENT_OK) {
                f->execs++;
                f->exec_id = h.id;
                f->exec_flags = req.flags;
                f->rows = req.tty_rows;
                f->cols = req.tty_cols;
            }
        } else if (h.type == AGENT_MSG_RESIZE) {
            f->resizes++;
            f->resize_id = h.id;
            agent_decode_resize(payload, h.len, &f->new_rows, &f->new_cols);
            agent_exit e = {0};
            put(fd, out, agent_encode_exit(out, sizeof(out), f->exec_id, &e));
        }
    }
    close(fd);
    return NULL;
}

static int nop_fn(void *userdata, int stream, const void *data, size_t len)
{
    (void)userdata, (void)stream, (void)data, (void)len;
    return 0;
}

static void run_case(uint64_t caps, struct fake *f, vmctl_error **e, int *r)
{
    char dir[] = "/tmp/test-agent-tty.XXXXXX";
    assert_non_null(mkdtemp(dir));
    cleanup_free char *path = str_printf("%s/agent.sock", dir);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 1), 0);
    *f = (struct fake){.listen_fd = l, .caps = caps};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fake_main, f), 0);

    uint64_t deadline = now_usec() + 10 * 1000000ull;
    agent_conn *c = NULL;
    *r = agent_connect(path, deadline, &c, e);
    if (*r == 0)
        *r = agent_ping(c, deadline, e);
    if (*r == 0)
        assert_int_equal(agent_conn_set_label(c, "box"), 0);
    char *argv[] = {"sh", NULL};
    vmctl_exec_opts opts = {.argv = argv, .tty = true, .tty_rows = 30, .tty_cols = 100};
    agent_proc *p = NULL;
    if (*r == 0)
        *r = agent_proc_exec(c, &opts, true, nop_fn, NULL, deadline, &p, e);
    if (*r == 0)
        *r = agent_proc_resize(p, 50, 70000, deadline, e); /* cols clamped to 65535 */
    vmctl_exec_status st = {.exit_code = -1};
    if (*r == 0)
        *r = agent_proc_wait(p, deadline, &st, e);
    if (*r == 0)
        assert_int_equal(st.exit_code, 0);
    agent_proc_free(p);
    agent_close(c); /* the fake sees the end of the stream */
    pthread_join(t, NULL);
    close(l);
    unlink(path);
    cleanup_free char *lock = str_printf("%s/agent.lock", dir);
    unlink(lock);
    rmdir(dir);
}

static void test_tty_exec_and_resize(void **state)
{
    (void)state;
    struct fake f;
    vmctl_error *e = NULL;
    int r;
    run_case(AGENT_CAPS_V2, &f, &e, &r);
    if (r < 0)
        fail_msg("exec -t against the fake agent failed: %s", vmctl_error_get_message(e));
    assert_int_equal(f.execs, 1);
    assert_int_equal(f.exec_flags, AGENT_EXEC_TTY | AGENT_EXEC_STDIN_STREAM);
    assert_int_equal(f.rows, 30);
    assert_int_equal(f.cols, 100);
    assert_int_equal(f.resizes, 1);
    assert_int_equal(f.resize_id, f.exec_id);
    assert_int_equal(f.new_rows, 50);
    assert_int_equal(f.new_cols, 65535);
}

static void test_old_agent_without_tty(void **state)
{
    (void)state;
    struct fake f;
    vmctl_error *e = NULL;
    int r;
    run_case(AGENT_CAPS_V2 & ~AGENT_CAP_TTY, &f, &e, &r);
    assert_true(r < 0);
    assert_non_null(e);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::exec::unavailable");
    assert_string_equal(vmctl_error_find_detail(e, "vm"), "box");
    assert_string_equal(vmctl_error_find_detail(e, "reason"),
                        "the guest agent has no terminal support");
    assert_non_null(strstr(vmctl_error_get_help(e), "vmctl image build-default"));
    assert_int_equal(f.execs, 0); /* nothing was sent */
    vmctl_error_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tty_exec_and_resize),
        cmocka_unit_test(test_old_agent_without_tty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
