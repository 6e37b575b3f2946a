/* SPDX-License-Identifier: MIT */
/* Runs INSIDE the guest (static), started by tests/integration/test-agent-sessions.sh through
 * `vmctl exec`, with vsock_loopback loaded: talks to the guest's own vmctl-agent over AF_VSOCK
 * (CID 1, port 1024), which exercises the agent's vsock sessions without vhost-vsock on the host.
 *
 *   vsock-sessions CID PORT
 *
 * - four connections at once, each a session: the same request id (7) on each runs its own
 *   command, and each gets its own output and EXIT;
 * - a NEW_SESSION ping on one session leaves the others' commands running;
 * - a session closed mid-command loses its command (it would write /tmp/vs-closed.end; the
 *   calling script checks that it never does);
 * - 16 sessions at once are served; a 17th connection is closed by the agent.
 * Prints "vsock sessions ok" and exits 0, or says what failed and exits 1. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "agent-proto.h"

#define WAIT_MS 20000

struct conn {
    int fd;
    uint8_t buf[AGENT_MAX_FRAME];
    size_t len;
    char out[4096];
    size_t out_len;
    int exit_code; /* -1 until EXIT */
};

static unsigned cid, port;

static void die(const char *fmt, const char *what)
{
    fprintf(stdout, fmt, what);
    fputc('\n', stdout);
    exit(1);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static int vconnect(void)
{
    int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_vm sa = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("cannot connect to the agent over vsock: %s", strerror(errno));
    return fd;
}

static void send_all(int fd, const uint8_t *p, int n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, (size_t)n);
        if (w <= 0)
            die("write: %s", strerror(errno));
        p += w;
        n -= (int)w;
    }
}

static void ping(struct conn *c, uint32_t id, uint8_t flags)
{
    uint8_t f[AGENT_HDR_SIZE];
    int n = agent_encode_ping(f, sizeof(f), id, flags);
    agent_frame_set_version(f, 1);
    send_all(c->fd, f, n);
}

static void exec_cmd(struct conn *c, uint32_t id, const char *script)
{
    static uint8_t f[8192];
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    char *env[] = {NULL};
    int n = agent_encode_exec2(f, sizeof(f), id, 0, 0, argv, env, "/", NULL, 0);
    if (n < 0)
        die("encoding EXEC: %s", agent_proto_strerror(n));
    agent_frame_set_version(f, 2);
    send_all(c->fd, f, n);
    c->out_len = 0;
    c->exit_code = -1;
}

/* Read one frame (up to `ms`): 1 got (*h, payload in c->buf + 16, removed on the next call),
 * 0 timeout, -1 EOF. */
static int next_frame(struct conn *c, agent_hdr *h, size_t *drop, int ms)
{
    if (*drop) {
        memmove(c->buf, c->buf + *drop, c->len - *drop);
        c->len -= *drop;
        *drop = 0;
    }
    long until = now_ms() + ms;
    for (;;) {
        size_t consumed = 0;
        int r = agent_frame_next(c->buf, c->len, h, &consumed);
        if (r == AGENT_OK) {
            *drop = consumed;
            return 1;
        }
        if (r != AGENT_E_SHORT)
            die("garbage from the agent: %s", agent_proto_strerror(r));
        long left = until - now_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0)
            continue;
        ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (n <= 0)
            return -1;
        c->len += (size_t)n;
    }
}

/* Wait for the PONG answering id. */
static void wait_pong(struct conn *c, uint32_t id)
{
    agent_hdr h;
    size_t drop = 0;
    for (;;) {
        int r = next_frame(c, &h, &drop, WAIT_MS);
        if (r <= 0)
            die("no pong on a vsock session (%s)", r ? "closed" : "timeout");
        if (h.type == AGENT_MSG_PONG && h.id == id)
            break;
    }
    memmove(c->buf, c->buf + drop, c->len - drop);
    c->len -= drop;
}

/* Collect output and the EXIT of request id. */
static void wait_exit(struct conn *c, uint32_t id)
{
    agent_hdr h;
    size_t drop = 0;
    while (c->exit_code < 0) {
        int r = next_frame(c, &h, &drop, WAIT_MS);
        if (r <= 0)
            die("no EXIT on a vsock session (%s)", r ? "closed" : "timeout");
        const uint8_t *payload = c->buf + AGENT_HDR_SIZE;
        if (h.id != id)
            continue;
        if (h.type == AGENT_MSG_STDOUT && c->out_len + h.len < sizeof(c->out)) {
            memcpy(c->out + c->out_len, payload, h.len);
            c->out_len += h.len;
        } else if (h.type == AGENT_MSG_EXIT) {
            agent_exit e;
            if (agent_decode_exit(payload, h.len, &e) < 0)
                die("%s", "malformed EXIT");
            c->exit_code = e.exit_code;
        } else if (h.type == AGENT_MSG_ERROR) {
            die("%s", "the agent answered ERROR to an EXEC");
        }
    }
    c->out[c->out_len] = 0;
    memmove(c->buf, c->buf + drop, c->len - drop);
    c->len -= drop;
}

static struct conn conns[17];

int main(int argc, char **argv)
{
    if (argc != 3)
        die("%s", "usage: vsock-sessions CID PORT");
    cid = (unsigned)strtoul(argv[1], NULL, 10);
    port = (unsigned)strtoul(argv[2], NULL, 10);

    /* four sessions, the same request id on each */
    for (int i = 0; i < 4; i++) {
        conns[i].fd = vconnect();
        ping(&conns[i], 1, AGENT_FLAG_NEW_SESSION);
        wait_pong(&conns[i], 1);
    }
    for (int i = 0; i < 3; i++) {
        char script[128];
        snprintf(script, sizeof(script), "sleep 1; echo done-%d", i);
        exec_cmd(&conns[i], 7, script);
    }
    exec_cmd(&conns[3], 7, "echo started >/tmp/vs-closed.start; sleep 2; echo >/tmp/vs-closed.end");
    /* session 1 says "new session" again while its neighbours' commands run */
    ping(&conns[1], 2, AGENT_FLAG_NEW_SESSION);
    /* session 3 goes away mid-command (once its command runs) */
    for (int k = 0; k < 100 && access("/tmp/vs-closed.start", F_OK) < 0; k++)
        usleep(20000);
    close(conns[3].fd);
    for (int i = 0; i < 3; i++) {
        if (i == 1) {
            /* its own command went with its NEW_SESSION: only the pong comes */
            wait_pong(&conns[1], 2);
            continue;
        }
        wait_exit(&conns[i], 7);
        char want[32];
        snprintf(want, sizeof(want), "done-%d\n", i);
        if (conns[i].exit_code != 0 || strcmp(conns[i].out, want) != 0) {
            fprintf(stdout, "session %d: exit %d, output '%s', expected 0 and '%s'\n", i,
                    conns[i].exit_code, conns[i].out, want);
            return 1;
        }
    }
    /* session 1 is usable after its NEW_SESSION */
    exec_cmd(&conns[1], 7, "echo again");
    wait_exit(&conns[1], 7);
    if (conns[1].exit_code != 0 || strcmp(conns[1].out, "again\n") != 0)
        die("session 1 after NEW_SESSION: '%s'", conns[1].out);

    /* up to 16 at once: thirteen more next to the three still open */
    for (int i = 3; i < 16; i++) {
        conns[i].fd = vconnect();
        conns[i].len = 0;
        ping(&conns[i], 1, AGENT_FLAG_NEW_SESSION);
        wait_pong(&conns[i], 1);
    }
    /* the 17th is accepted by the kernel and closed by the agent */
    conns[16].fd = vconnect();
    ping(&conns[16], 1, AGENT_FLAG_NEW_SESSION);
    agent_hdr h;
    size_t drop = 0;
    int r = next_frame(&conns[16], &h, &drop, WAIT_MS);
    if (r != -1)
        die("a 17th vsock session was %s", r == 1 ? "served" : "left hanging");
    close(conns[16].fd);
    /* closing one makes room for another (once the agent has seen it close) */
    close(conns[0].fd);
    for (int k = 0;; k++) {
        conns[0].fd = vconnect();
        conns[0].len = 0;
        ping(&conns[0], 1, AGENT_FLAG_NEW_SESSION);
        drop = 0;
        r = next_frame(&conns[0], &h, &drop, WAIT_MS);
        if (r == 1 && h.type == AGENT_MSG_PONG)
            break;
        close(conns[0].fd);
        if (r != -1 || k == 50)
            die("%s", "no room for a new vsock session after one closed");
        usleep(100000);
    }
    printf("vsock sessions ok\n");
    return 0;
}
