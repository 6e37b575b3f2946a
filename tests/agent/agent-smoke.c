/* SPDX-License-Identifier: MIT */
/* End-to-end check of the default guest and the agent protocol against a real QEMU (TCG):
 * builds the default guest (guest_build_default), boots it by hand on -M microvm with the agent's
 * virtio-serial port, and drives vmctl-agent through agent-client.c. Run by run-smoke.sh, which
 * compiles it; not part of the meson build because it needs QEMU, the Debian archive and ~1 min.
 *
 *   agent-smoke HOME [BOOTS]   (BOOTS extra boots only measure time to ready, default 0)
 *
 * Prints "ok"/"FAIL" per check and the times from QEMU spawn to the agent's console line
 * ("vmctl-agent: listening on", the raw boot) and to the first pong; exits 1 on any failure. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent-client.h"
#include "agent-proto.h"
#include "error.h"
#include "guest.h"
#include "util/util.h"

extern char **environ;

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            printf("ok: ");                                                                        \
        } else {                                                                                   \
            printf("FAIL: ");                                                                      \
            failures++;                                                                            \
        }                                                                                          \
        printf(__VA_ARGS__);                                                                       \
        printf("\n");                                                                              \
        fflush(stdout);                                                                            \
    } while (0)

struct vm {
    pid_t pid;
    int console_fd;
    char dir[48];
    char sock[64];
    uint64_t spawned;
    uint64_t listening; /* when the console showed the agent's first line */
    pthread_t reader;
    char log[65536];
    size_t log_len;
    pthread_mutex_t lock;
};

static void *console_reader(void *arg)
{
    struct vm *vm = arg;
    char buf[4096];
    for (;;) {
        ssize_t n = read(vm->console_fd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        uint64_t now = now_usec();
        pthread_mutex_lock(&vm->lock);
        size_t room = sizeof(vm->log) - 1 - vm->log_len;
        size_t k = (size_t)n < room ? (size_t)n : room;
        memcpy(vm->log + vm->log_len, buf, k);
        vm->log_len += k;
        vm->log[vm->log_len] = 0;
        if (!vm->listening && strstr(vm->log, "vmctl-agent: listening on"))
            vm->listening = now;
        pthread_mutex_unlock(&vm->lock);
    }
    return NULL;
}

static bool vm_alive(void *userdata)
{
    struct vm *vm = userdata;
    return proc_alive(vm->pid, 0);
}

static int vm_start(struct vm *vm, const guest_paths *gp)
{
    snprintf(vm->dir, sizeof(vm->dir), "/tmp/agent-smoke.XXXXXX");
    if (!mkdtemp(vm->dir))
        return -errno;
    snprintf(vm->sock, sizeof(vm->sock), "%s/agent.sock", vm->dir);
    char chardev[400];
    snprintf(chardev, sizeof(chardev), "socket,id=agent,path=%s,server=on,wait=off", vm->sock);
    char *argv[] = {"qemu-system-x86_64",
                    "-M",
                    "microvm",
                    "-accel",
                    "tcg",
                    "-m",
                    "256",
                    "-nodefaults",
                    "-no-user-config",
                    "-nographic",
                    "-serial",
                    "stdio",
                    "-kernel",
                    gp->kernel,
                    "-initrd",
                    gp->initrd,
                    "-append",
                    gp->cmdline,
                    "-no-reboot",
                    "-device",
                    "virtio-serial-device",
                    "-chardev",
                    chardev,
                    "-device",
                    "virtserialport,chardev=agent,name=" AGENT_PORT_NAME,
                    NULL};
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    vm->spawned = now_usec();
    vm->listening = 0;
    vm->log_len = 0;
    int r = posix_spawnp(&vm->pid, "qemu-system-x86_64", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (r != 0) {
        close(p[0]);
        return -r;
    }
    vm->console_fd = p[0];
    pthread_mutex_init(&vm->lock, NULL);
    pthread_create(&vm->reader, NULL, console_reader, vm);
    return 0;
}

/* Wait for QEMU to exit within timeout; kill it otherwise. Returns true when it exited alone. */
static bool vm_wait_exit(struct vm *vm, double timeout)
{
    uint64_t until = now_usec() + (uint64_t)(timeout * 1e6);
    int status;
    bool exited = false;
    while (now_usec() < until) {
        pid_t r = waitpid(vm->pid, &status, WNOHANG);
        if (r == vm->pid) {
            exited = true;
            break;
        }
        sleep_usec(10000);
    }
    if (!exited) {
        kill(vm->pid, SIGKILL);
        waitpid(vm->pid, &status, 0);
    }
    pthread_join(vm->reader, NULL);
    close(vm->console_fd);
    rm_rf(vm->dir);
    return exited;
}

/* vmctl_exec_result_clear lives in exec.c, which this checker does not link */
static void result_clear(vmctl_exec_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

static uint64_t after(double sec)
{
    return now_usec() + (uint64_t)(sec * 1e6);
}

static const char *code_of(const vmctl_error *e)
{
    return e ? vmctl_error_get_code(e) : "(none)";
}

static void progress(void *ud, const char *step, uint64_t done, uint64_t total)
{
    printf("  build: %s\n", step);
    fflush(stdout);
}

static int exec_simple(agent_conn *c, char **argv, char **env, const char *cwd, const char *in,
                       double timeout, vmctl_exec_result *res, vmctl_error **err)
{
    vmctl_exec_opts o = {.argv = argv,
                         .env = env,
                         .cwd = cwd,
                         .timeout_sec = timeout,
                         .stdin_data = in,
                         .stdin_len = in ? strlen(in) : 0};
    return agent_exec(c, &o, res, after(timeout > 0 ? timeout + 10 : 20), err);
}

/* Raw socket: garbage, then a valid ping; the agent must resync and answer. */
static void check_garbage(const char *sock)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        CHECK(false, "raw connect for the garbage test: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    uint8_t frame[256];
    size_t n = 0;
    const char junk[] = "\x00\xffVMgarbageVMA\x01\x10\x00\x00\x00\x01\x00\x00\x00\xff\xff\xff\xff";
    memcpy(frame, junk, sizeof(junk) - 1);
    n += sizeof(junk) - 1;
    /* a frame of protocol version 9: answered with ERROR */
    int k = agent_encode_ping(frame + n, sizeof(frame) - n, 0x1234, 0);
    frame[n + 3] = 9;
    n += (size_t)k;
    k = agent_encode_ping(frame + n, sizeof(frame) - n, 0x4242, 0);
    n += (size_t)k;
    bool wrote = write(fd, frame, n) == (ssize_t)n;
    uint8_t buf[4096];
    size_t len = 0;
    bool pong = false, version_error = false;
    uint64_t until = after(10);
    while (wrote && !pong && now_usec() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = read(fd, buf + len, sizeof(buf) - len);
        if (r <= 0)
            break;
        len += (size_t)r;
        agent_hdr h;
        size_t used;
        int fr;
        while ((fr = agent_frame_next(buf, len, &h, &used)) != AGENT_E_SHORT) {
            if (fr == AGENT_OK && h.type == AGENT_MSG_PONG && h.id == 0x4242)
                pong = true;
            if (fr == AGENT_OK && h.type == AGENT_MSG_ERROR && h.id == 0x1234) {
                agent_error_msg em;
                version_error = agent_decode_error(buf + AGENT_HDR_SIZE, h.len, &em) == 0 &&
                                strstr(em.message, "unsupported protocol version 9");
            }
            memmove(buf, buf + used, len - used);
            len -= used;
        }
    }
    close(fd);
    CHECK(version_error, "a frame of protocol version 9 is answered with an ERROR");
    CHECK(pong, "after garbage on the port the agent resyncs and answers a ping");
}

/* A client killed in the middle of a frame (here: the first 20 bytes of a 1 MiB EXEC) must not
 * confuse the next client: the agent drops the partial frame when the host side closes. */
static void check_dead_client(struct vm *vm)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", vm->sock);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        CHECK(false, "raw connect for the dead-client test: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    uint8_t hdr[AGENT_HDR_SIZE + 4];
    agent_encode_header(hdr, sizeof(hdr), AGENT_MSG_EXEC, 99, AGENT_MAX_PAYLOAD);
    memset(hdr + AGENT_HDR_SIZE, 0, 4);
    bool wrote = write(fd, hdr, sizeof(hdr)) == (ssize_t)sizeof(hdr);
    sleep_usec(200 * 1000); /* let the agent read the partial frame */
    close(fd);
    /* reconnect at once: the agent cannot tell the disconnect, the stall rule and the resent
     * session ping must recover */
    cleanup_error vmctl_error *err = NULL;
    cleanup_agent agent_conn *c = NULL;
    uint64_t t0 = now_usec();
    vmctl_exec_result res = {0};
    int r = agent_connect(vm->sock, after(5), &c, &err);
    if (r == 0)
        r = exec_simple(c, (char *[]){"echo", "in sync", NULL}, NULL, NULL, NULL, 0, &res, &err);
    double took = (double)(now_usec() - t0) / 1e6;
    CHECK(wrote && r == 0 && res.out && streq(res.out, "in sync\n") && took < 2,
          "a client that died mid-frame does not confuse the next: exec done after %.3f s", took);
    result_clear(&res);
}

static void functional_checks(struct vm *vm)
{
    cleanup_error vmctl_error *err = NULL;
    cleanup_agent agent_conn *c = NULL;
    int r = agent_connect(vm->sock, after(5), &c, &err);
    CHECK(r == 0, "connect again%s%s", r < 0 ? ": " : "", r < 0 ? code_of(err) : "");
    if (r < 0)
        return;
    r = agent_ping(c, after(5), &err);
    CHECK(r == 0, "ping");

    vmctl_exec_result res = {0};
    r = exec_simple(c, (char *[]){"uname", "-a", NULL}, NULL, NULL, NULL, 0, &res, &err);
    CHECK(r == 0 && res.exit_code == 0 && res.signal == 0 && strstr(res.out, "Linux") &&
              strstr(res.out, "6.1.0"),
          "exec uname -a: exit %d, stdout '%.*s'", res.exit_code,
          res.out_len && res.out[res.out_len - 1] == '\n' ? (int)res.out_len - 1 : (int)res.out_len,
          res.out ? res.out : "");
    result_clear(&res);

    r = exec_simple(c, (char *[]){"sh", "-c", "echo err >&2; exit 3", NULL}, NULL, NULL, NULL, 0,
                    &res, &err);
    CHECK(r == 0 && res.exit_code == 3 && res.signal == 0 && res.err_len == 4 &&
              memcmp(res.err, "err\n", 4) == 0 && res.out_len == 0,
          "exec sh -c 'echo err >&2; exit 3': exit %d, stderr '%s'", res.exit_code,
          res.err ? res.err : "");
    result_clear(&res);

    r = exec_simple(c, (char *[]){"sh", "-c", "kill -9 $$", NULL}, NULL, NULL, NULL, 0, &res, &err);
    CHECK(r == 0 && res.signal == 9 && res.exit_code == 137,
          "exec sh -c 'kill -9 $$': signal %d, exit code %d", res.signal, res.exit_code);
    result_clear(&res);

    r = exec_simple(c, (char *[]){"no-such-command", "x", NULL}, NULL, NULL, NULL, 0, &res, &err);
    CHECK(r == 0 && res.exit_code == 127 && res.signal == 0 && res.err &&
              streq(res.err, "vmctl-agent: no-such-command: command not found\n"),
          "missing binary: exit %d, stderr '%s'", res.exit_code, res.err ? res.err : "");
    result_clear(&res);

    r = exec_simple(c, (char *[]){"ls", NULL}, NULL, "/nonexistent", NULL, 0, &res, &err);
    CHECK(r < 0 && err && vmctl_error_get_kind(err) == VMCTL_E_AGENT_FAILED &&
              streq(vmctl_error_get_message(err),
                    "cannot change directory to '/nonexistent': No such file or directory"),
          "missing cwd: %s: %s", code_of(err), err ? vmctl_error_get_message(err) : "");
    result_clear(&res);

    uint64_t t0 = now_usec();
    r = exec_simple(c, (char *[]){"sh", "-c", "echo before; sleep 30", NULL}, NULL, NULL, NULL, 0.5,
                    &res, &err);
    double took = (double)(now_usec() - t0) / 1e6;
    const char *op = err ? vmctl_error_find_detail(err, "operation") : NULL;
    const char *ts = err ? vmctl_error_find_detail(err, "timeout_seconds") : NULL;
    CHECK(r < 0 && err && vmctl_error_get_kind(err) == VMCTL_E_TIMEOUT && op && streq(op, "exec") &&
              ts && atof(ts) == 0.5 && res.signal == 9 && streq(res.out, "before\n") && took < 3,
          "timeout 0.5 s on 'sleep 30': %s operation=%s timeout_seconds=%s signal %d after %.2f s",
          code_of(err), op ? op : "-", ts ? ts : "-", res.signal, took);
    result_clear(&res);

    r = exec_simple(c, (char *[]){"sh", "-c", "cat; echo \"$FOO\"; pwd", NULL},
                    (char *[]){"FOO=bar baz", NULL}, "/tmp", "hello\n", 0, &res, &err);
    CHECK(r == 0 && res.exit_code == 0 && streq(res.out, "hello\nbar baz\n/tmp\n"),
          "stdin, env and cwd: '%s'", res.out ? res.out : "");
    result_clear(&res);

    /* 3 MB of output, both streams */
    r = exec_simple(c,
                    (char *[]){"sh", "-c",
                               "dd if=/dev/zero bs=1000 count=3000 2>/dev/null; echo done >&2",
                               NULL},
                    NULL, NULL, NULL, 0, &res, &err);
    CHECK(r == 0 && res.exit_code == 0 && res.out_len == 3000000 && streq(res.err, "done\n"),
          "3 MB of stdout: %zu bytes, stderr '%s'", res.out_len, res.err ? res.err : "");
    result_clear(&res);

    /* 1 MB-ish of stdin */
    size_t big = AGENT_MAX_PAYLOAD - 4096;
    char *in = malloc(big + 1);
    memset(in, 'a', big);
    in[big] = 0;
    r = exec_simple(c, (char *[]){"wc", "-c", NULL}, NULL, NULL, in, 0, &res, &err);
    CHECK(r == 0 && res.out && (size_t)atol(res.out) == big, "%zu bytes of stdin: wc says %s", big,
          res.out ? res.out : "");
    result_clear(&res);
    free(in);

    /* one client at a time: a second connect times out on the lock */
    {
        cleanup_error vmctl_error *e2 = NULL;
        cleanup_agent agent_conn *c2 = NULL;
        r = agent_connect(vm->sock, after(0.3), &c2, &e2);
        const char *o2 = e2 ? vmctl_error_find_detail(e2, "operation") : NULL;
        CHECK(r < 0 && e2 && vmctl_error_get_kind(e2) == VMCTL_E_TIMEOUT && o2 &&
                  streq(o2, "agent connect"),
              "a second client waits for the lock and times out: %s", code_of(e2));
    }

    /* the host deadline passes mid-exec; closing the connection kills the command */
    agent_close(TAKE_PTR(c));
    r = agent_connect(vm->sock, after(5), &c, &err);
    if (r == 0) {
        vmctl_exec_opts o = {.argv = (char *[]){"sleep", "32", NULL}};
        r = agent_exec(c, &o, &res, after(0.5), &err);
        op = err ? vmctl_error_find_detail(err, "operation") : NULL;
        CHECK(r < 0 && err && vmctl_error_get_kind(err) == VMCTL_E_TIMEOUT && op &&
                  streq(op, "agent exec"),
              "host deadline mid-exec: %s operation=%s", code_of(err), op ? op : "-");
        result_clear(&res);
        agent_close(TAKE_PTR(c));
    }
    /* reconnect at once: QEMU's close and open reach the guest together, the agent does not see
     * the disconnect; the new client's session ping must end the old command */
    r = agent_connect(vm->sock, after(5), &c, &err);
    if (r == 0) {
        r = exec_simple(c, (char *[]){"ps", NULL}, NULL, NULL, NULL, 0, &res, &err);
        CHECK(r == 0 && res.out && !strstr(res.out, "sleep 32"),
              "after the client went away the agent killed its command (no 'sleep 32' in ps)");
        result_clear(&res);
        agent_close(TAKE_PTR(c));
    }
    check_garbage(vm->sock);
    check_dead_client(vm);

    r = agent_connect(vm->sock, after(5), &c, &err);
    CHECK(r == 0, "connect for shutdown");
    if (r == 0) {
        r = agent_wait_ready(c, after(5), vm_alive, vm, &err);
        CHECK(r == 0, "ready again after the garbage");
        r = agent_shutdown(c, false, after(5), &err);
        CHECK(r == 0, "shutdown acknowledged%s%s", r < 0 ? ": " : "", r < 0 ? code_of(err) : "");
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: agent-smoke HOME [BOOTS]\n");
        return 2;
    }
    const char *home = argv[1];
    int boots = argc > 2 ? atoi(argv[2]) : 0;
    setvbuf(stdout, NULL, _IOLBF, 0);

    cleanup_error vmctl_error *err = NULL;
    uint64_t t0 = now_usec();
    int r = guest_build_default(home, false, progress, NULL, &err);
    CHECK(r == 0, "guest_build_default (%.1f s)%s%s", (double)(now_usec() - t0) / 1e6,
          err ? ": " : "", err ? vmctl_error_get_message(err) : "");
    if (r < 0) {
        for (size_t i = 0; err && i < vmctl_error_get_n_notes(err); i++)
            printf("  note: %s\n", vmctl_error_get_note(err, i));
        return 1;
    }
    guest_paths gp = {0};
    r = guest_default_paths(home, &gp, &err);
    CHECK(r == 0, "guest_default_paths: cmdline '%s'", gp.cmdline ? gp.cmdline : "");
    if (r < 0)
        return 1;

    double sum_ready = 0, sum_listen = 0;
    int n_ok = 0;
    for (int boot = 0; boot <= boots; boot++) {
        struct vm vm = {0};
        r = vm_start(&vm, &gp);
        if (r < 0) {
            CHECK(false, "spawn qemu: %s", strerror(-r));
            return 1;
        }
        cleanup_agent agent_conn *c = NULL;
        r = agent_connect(vm.sock, after(30), &c, &err);
        if (r == 0)
            r = agent_wait_ready(c, after(60), vm_alive, &vm, &err);
        uint64_t ready = now_usec();
        pthread_mutex_lock(&vm.lock);
        uint64_t listening = vm.listening;
        pthread_mutex_unlock(&vm.lock);
        double t_ready = (double)(ready - vm.spawned) / 1e6;
        double t_listen = listening ? (double)(listening - vm.spawned) / 1e6 : -1;
        CHECK(r == 0,
              "boot %d: ready (first pong) %.3f s after spawn; agent console line at %.3f s", boot,
              t_ready, t_listen);
        if (r < 0) {
            printf("  error: %s: %s\n", code_of(err), err ? vmctl_error_get_message(err) : "");
            vm_wait_exit(&vm, 0);
            printf("  console:\n%s\n", vm.log);
            continue;
        }
        n_ok++;
        sum_ready += t_ready;
        sum_listen += t_listen;
        if (boot == 0) {
            agent_close(TAKE_PTR(c));
            functional_checks(&vm);
        } else {
            r = agent_shutdown(c, false, after(5), &err);
            CHECK(r == 0, "boot %d: shutdown acknowledged", boot);
        }
        uint64_t s0 = now_usec();
        bool exited = vm_wait_exit(&vm, 15);
        CHECK(exited, "boot %d: QEMU exited %.2f s after the shutdown request", boot,
              (double)(now_usec() - s0) / 1e6);
        if (!exited || boot == 0)
            printf("  console tail:\n%s\n", vm.log_len > 600 ? vm.log + vm.log_len - 600 : vm.log);
    }
    if (n_ok)
        printf("time to ready over %d boots: mean %.3f s to first pong, mean %.3f s to the "
               "agent's console line\n",
               n_ok, sum_ready / n_ok, sum_listen / n_ok);
    guest_paths_clear(&gp);
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
