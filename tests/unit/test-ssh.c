/* SPDX-License-Identifier: MIT */
/* The libssh client (src/lib/ssh.c) against real OpenSSH: an sshd run on 127.0.0.1 at a free high
 * port with its own config, host key and authorized_keys (no guest needed). Exit codes, stderr
 * apart from stdout, stdin, a large output compared byte for byte, an SFTP round trip, host key
 * pinning and the refusal of a changed key, authentication refused, and the timeout while no
 * sshd listens. Skipped (77) when sshd is not installed or we are not root. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "net.h"
#include "ssh.h"
#include "skip.h"
#include "util/util.h"

#define SSHD        "/usr/sbin/sshd"
#define SFTP_SERVER "/usr/lib/openssh/sftp-server"

static char *dir;      /* test directory */
static uint16_t port;  /* sshd's port */
static pid_t sshd_pid; /* running sshd or 0 */

static char *path_in(const char *name)
{
    char *p = str_printf("%s/%s", dir, name);
    assert_non_null(p);
    return p;
}

static int run(char *const argv[])
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void sshd_stop(void)
{
    if (sshd_pid > 0) {
        kill(sshd_pid, SIGTERM);
        waitpid(sshd_pid, NULL, 0);
        sshd_pid = 0;
    }
}

/* Start sshd and wait (bounded) until its port accepts connections. */
static void sshd_start(void)
{
    cleanup_free char *conf = path_in("sshd_config");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cleanup_free char *log = path_in("sshd.log");
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 2);
        execl(SSHD, SSHD, "-D", "-e", "-f", conf, (char *)NULL);
        _exit(127);
    }
    sshd_pid = pid;
    uint64_t deadline = now_usec() + 10000000;
    while (net_port_is_free(port, false)) {
        assert_true(now_usec() < deadline);
        int st;
        assert_int_equal(waitpid(pid, &st, WNOHANG), 0); /* sshd must not have died */
        sleep_usec(10000);
    }
}

static void write_config(void)
{
    cleanup_free char *conf = path_in("sshd_config");
    cleanup_free char *text = str_printf("Port %u\n"
                                         "ListenAddress 127.0.0.1\n"
                                         "HostKey %s/host/id_ed25519\n"
                                         "AuthorizedKeysFile %s/authorized_keys\n"
                                         "PidFile %s/sshd.pid\n"
                                         "StrictModes no\n"
                                         "UsePAM no\n"
                                         "PasswordAuthentication no\n"
                                         "KbdInteractiveAuthentication no\n"
                                         "PermitRootLogin prohibit-password\n"
                                         "Subsystem sftp " SFTP_SERVER "\n"
                                         "LogLevel ERROR\n",
                                         port, dir, dir, dir);
    assert_non_null(text);
    assert_int_equal(write_file_atomic(conf, text, strlen(text), 0644), 0);
}

static void host_key_new(void)
{
    cleanup_free char *host = path_in("host");
    (void)rm_rf(host);
    assert_int_equal(mkdir_p(host, 0700), 0);
    assert_int_equal(sshc_keygen(host, "host", NULL), 0);
}

static int group_setup(void **state)
{
    if (geteuid() != 0 || access(SSHD, X_OK) < 0 || access(SFTP_SERVER, X_OK) < 0) {
        exit(skip_exit(NULL, "needs root and OpenSSH's sshd (apt-get install openssh-server)"));
    }
    char tmpl[] = "/tmp/vmctl-test-ssh.XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    dir = strdup(tmpl);
    (void)mkdir("/run/sshd", 0755); /* sshd's privilege separation directory */
    /* the client's key, authorized by the server */
    cleanup_free char *client = path_in("client");
    assert_int_equal(mkdir_p(client, 0700), 0);
    assert_int_equal(sshc_keygen(client, "client", NULL), 0);
    cleanup_free char *pub = path_in("client/" SSHC_PUBKEY_FILE);
    cleanup_free char *ak = path_in("authorized_keys");
    cleanup_free char *text = NULL;
    assert_int_equal(read_file(pub, &text, NULL), 0);
    assert_int_equal(write_file_atomic(ak, text, strlen(text), 0600), 0);
    host_key_new();
    /* a free port, not reserved by anyone (there is no store here) */
    for (port = 40000 + (uint16_t)(getpid() % 20000); !net_port_is_free(port, false); port++)
        ;
    write_config();
    sshd_start();
    (void)state;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    sshd_stop();
    if (dir)
        (void)rm_rf(dir);
    free(dir);
    return 0;
}

static sshc_target target(void)
{
    static char key[512], kh[512];
    snprintf(key, sizeof(key), "%s/client/" SSHC_KEY_FILE, dir);
    snprintf(kh, sizeof(kh), "%s/known_hosts", dir);
    return (sshc_target){.host = "127.0.0.1",
                         .port = port,
                         .user = "root",
                         .key_path = key,
                         .known_hosts = kh,
                         .vm = "test"};
}

struct buf {
    char *data;
    size_t len;
    size_t chunks;
};

static int append(const void *data, size_t len, void *userdata)
{
    struct buf *b = userdata;
    char *n = realloc(b->data, b->len + len + 1);
    assert_non_null(n);
    memcpy(n + b->len, data, len);
    b->data = n;
    b->len += len;
    b->data[b->len] = 0;
    b->chunks++;
    return 0;
}

struct out {
    struct buf out, err;
};

static int on_out(const void *d, size_t n, void *u)
{
    return append(d, n, &((struct out *)u)->out);
}
static int on_err(const void *d, size_t n, void *u)
{
    return append(d, n, &((struct out *)u)->err);
}

static int exec_cmd(const char *cmd, const void *in, size_t in_len, struct out *o,
                    vmctl_exec_status *st, vmctl_error **err)
{
    sshc_target t = target();
    cleanup_sshc sshc_conn *c = NULL;
    uint64_t deadline =
        now_usec() + 120000000; /* a bound, not a measure: 24 MiB under ASan on a loaded host */
    int r = sshc_connect(&t, deadline, &c, err);
    if (r < 0)
        return r;
    vmctl_exec_io io = {.on_stdout = on_out, .on_stderr = on_err, .userdata = o};
    return sshc_exec(c, cmd, in, in_len, &io, deadline, st, err);
}

static void out_clear(struct out *o)
{
    free(o->out.data);
    free(o->err.data);
    memset(o, 0, sizeof(*o));
}

static void test_keygen(void **state)
{
    (void)state;
    cleanup_free char *priv = path_in("client/" SSHC_KEY_FILE);
    cleanup_free char *pub = path_in("client/" SSHC_PUBKEY_FILE);
    struct stat st;
    assert_int_equal(stat(priv, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    cleanup_free char *text = NULL;
    assert_int_equal(read_file(pub, &text, NULL), 0);
    assert_true(str_startswith(text, "ssh-ed25519 AAAA"));
    assert_non_null(strstr(text, " vmctl@client\n"));
    /* the system's ssh-keygen reads our private key and derives the same public key */
    cleanup_free char *derived = path_in("derived.pub");
    cleanup_free char *cmd = str_printf("/usr/bin/ssh-keygen -y -f '%s' > '%s'", priv, derived);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    assert_int_equal(run(argv), 0);
    cleanup_free char *d = NULL;
    assert_int_equal(read_file(derived, &d, NULL), 0);
    d[strcspn(d, "\n")] = 0;
    assert_true(str_startswith(text, d));
    /* never overwritten */
    cleanup_error vmctl_error *err = NULL;
    cleanup_free char *client = path_in("client");
    assert_true(sshc_keygen(client, "again", &err) < 0);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::ssh::keygen_failed");
}

static void test_exit_codes(void **state)
{
    (void)state;
    static const int codes[] = {0, 1, 3, 42, 255};
    for (size_t i = 0; i < ELEMENTSOF(codes); i++) {
        cleanup_free char *cmd = str_printf("exit %d", codes[i]);
        struct out o = {};
        vmctl_exec_status st = {-1, -1};
        cleanup_error vmctl_error *err = NULL;
        assert_int_equal(exec_cmd(cmd, NULL, 0, &o, &st, &err), 0);
        assert_int_equal(st.exit_code, codes[i]);
        out_clear(&o);
    }
    /* pinned on first contact */
    cleanup_free char *kh = path_in("known_hosts");
    cleanup_free char *text = NULL;
    assert_int_equal(read_file(kh, &text, NULL), 0);
    cleanup_free char *want = str_printf("[127.0.0.1]:%u ssh-ed25519 ", port);
    assert_true(str_startswith(text, want));
}

/* A command killed by a signal: 128+N and the signal, from the server's exit-signal message. */
static void test_exit_signal(void **state)
{
    (void)state;
    struct out o = {};
    vmctl_exec_status st = {-1, -1};
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(exec_cmd("kill -TERM $$", NULL, 0, &o, &st, &err), 0);
    assert_int_equal(st.signal, SIGTERM);
    assert_int_equal(st.exit_code, 128 + SIGTERM);
    out_clear(&o);
}

static void test_stderr_and_stdin(void **state)
{
    (void)state;
    struct out o = {};
    vmctl_exec_status st = {-1, -1};
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(exec_cmd("echo to-out; echo to-err >&2; tr a-z A-Z; exit 7", "hello stdin", 11,
                              &o, &st, &err),
                     0);
    assert_int_equal(st.exit_code, 7);
    assert_string_equal(o.out.data, "to-out\nHELLO STDIN");
    assert_string_equal(o.err.data, "to-err\n");
    out_clear(&o);
}

static void test_large_output(void **state)
{
    (void)state;
    /* 24 MiB of random bytes in a file; the output of `cat` must be the same bytes */
    size_t len = 24u << 20;
    char *data = malloc(len);
    assert_non_null(data);
    int ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    for (size_t off = 0; off < len;) {
        ssize_t n = read(ufd, data + off, len - off);
        assert_true(n > 0);
        off += (size_t)n;
    }
    close(ufd);
    cleanup_free char *file = path_in("big.bin");
    assert_int_equal(write_file_atomic(file, data, len, 0644), 0);
    cleanup_free char *cmd = str_printf("cat '%s'; cat '%s' | sha256sum >&2", file, file);
    struct out o = {};
    vmctl_exec_status st = {-1, -1};
    cleanup_error vmctl_error *err = NULL;
    uint64_t t0 = now_usec();
    assert_int_equal(exec_cmd(cmd, NULL, 0, &o, &st, &err), 0);
    fprintf(stderr, "# 24 MiB over ssh in %.3f s, %zu chunks\n", (double)(now_usec() - t0) / 1e6,
            o.out.chunks);
    assert_int_equal(st.exit_code, 0);
    assert_int_equal(o.out.len, len);
    assert_memory_equal(o.out.data, data, len);
    assert_true(o.out.chunks > 1); /* streamed, not delivered at the end in one piece */
    assert_int_equal(strlen(o.err.data), 64 + 4); /* "<sha256>  -\n" */
    free(data);
    out_clear(&o);
}

static void test_sftp_round_trip(void **state)
{
    (void)state;
    size_t len = 3u << 20;
    char *data = malloc(len);
    assert_non_null(data);
    for (size_t i = 0; i < len; i++)
        data[i] = (char)(i * 2654435761u >> 13);
    cleanup_free char *src = path_in("up.src");
    cleanup_free char *remote = path_in("remote.bin");
    cleanup_free char *back = path_in("down.bin");
    assert_int_equal(write_file_atomic(src, data, len, 0640), 0);
    assert_int_equal(chmod(src, 0640), 0);

    sshc_target t = target();
    cleanup_sshc sshc_conn *c = NULL;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(sshc_connect(&t, now_usec() + 20000000, &c, &err), 0);
    assert_int_equal(sshc_upload(c, src, remote, &err), 0);
    assert_int_equal(sshc_download(c, remote, back, &err), 0);
    cleanup_free char *got = NULL;
    size_t got_len = 0;
    assert_int_equal(read_file(back, &got, &got_len), 0);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, data, len);
    struct stat st;
    assert_int_equal(stat(remote, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    assert_int_equal(stat(back, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);
    /* a missing remote file: ssh::failed at step sftp, the local file untouched */
    cleanup_free char *missing = path_in("no-such-file");
    assert_true(sshc_download(c, missing, back, &err) < 0);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::ssh::failed");
    assert_string_equal(vmctl_error_find_detail(err, "step"), "sftp");
    assert_int_equal(stat(back, &st), 0);
    assert_int_equal((size_t)st.st_size, len);
    free(data);
}

static void test_auth_refused(void **state)
{
    (void)state;
    cleanup_free char *other = path_in("other");
    assert_int_equal(mkdir_p(other, 0700), 0);
    assert_int_equal(sshc_keygen(other, "other", NULL), 0);
    sshc_target t = target();
    cleanup_free char *key = path_in("other/" SSHC_KEY_FILE);
    t.key_path = key;
    cleanup_sshc sshc_conn *c = NULL;
    cleanup_error vmctl_error *err = NULL;
    assert_true(sshc_connect(&t, now_usec() + 1500000, &c, &err) < 0);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::ssh::failed");
    assert_string_equal(vmctl_error_find_detail(err, "step"), "auth");
}

static void test_changed_host_key_refused(void **state)
{
    (void)state;
    /* the key is pinned by the earlier tests; the server gets a new one */
    sshd_stop();
    host_key_new();
    sshd_start();
    sshc_target t = target();
    cleanup_sshc sshc_conn *c = NULL;
    cleanup_error vmctl_error *err = NULL;
    uint64_t t0 = now_usec();
    assert_true(sshc_connect(&t, now_usec() + 20000000, &c, &err) < 0);
    assert_true(now_usec() - t0 < 5000000); /* refused at once, not retried */
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::ssh::failed");
    assert_string_equal(vmctl_error_find_detail(err, "step"), "hostkey");
    assert_non_null(strstr(vmctl_error_get_message(err), "differs from the one pinned"));
    assert_non_null(strstr(vmctl_error_get_help(err), "known_hosts"));
    /* and no command ran: the pinned key is still the old one */
    cleanup_free char *kh = path_in("known_hosts");
    cleanup_free char *text = NULL;
    assert_int_equal(read_file(kh, &text, NULL), 0);
    size_t lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 1);
    /* forgetting the pin (what the help says) lets the new key be pinned */
    assert_int_equal(unlink(kh), 0);
    vmctl_error_free(err);
    err = NULL;
    assert_int_equal(sshc_connect(&t, now_usec() + 20000000, &c, &err), 0);
}

static void test_timeout_when_sshd_stopped(void **state)
{
    (void)state;
    sshd_stop();
    sshc_target t = target();
    cleanup_sshc sshc_conn *c = NULL;
    cleanup_error vmctl_error *err = NULL;
    uint64_t t0 = now_usec();
    assert_true(sshc_connect(&t, now_usec() + 1500000, &c, &err) < 0);
    uint64_t took = now_usec() - t0;
    assert_true(took >= 1400000 && took < 4000000);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::timeout");
    assert_string_equal(vmctl_error_find_detail(err, "operation"), "ssh");
    assert_string_equal(vmctl_error_find_detail(err, "step"), "connect");
    /* sshd coming up during the retries is found */
    vmctl_error_free(err);
    err = NULL;
    pid_t child = fork();
    if (child == 0) {
        sleep_usec(700000);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    sshd_start();
    assert_int_equal(sshc_connect(&t, now_usec() + 20000000, &c, &err), 0);
}

static void test_quote(void **state)
{
    (void)state;
    char *argv[] = {"echo", "it's", "a b", "$HOME", NULL};
    cleanup_free char *q = sshc_quote_argv(argv);
    assert_string_equal(q, "'echo' 'it'\\''s' 'a b' '$HOME'");
    struct out o = {};
    vmctl_exec_status st = {-1, -1};
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(exec_cmd(q, NULL, 0, &o, &st, &err), 0);
    assert_string_equal(o.out.data, "it's a b $HOME\n");
    out_clear(&o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keygen),
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_exit_signal),
        cmocka_unit_test(test_stderr_and_stdin),
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_large_output),
        cmocka_unit_test(test_sftp_round_trip),
        cmocka_unit_test(test_auth_refused),
        cmocka_unit_test(test_changed_host_key_refused),
        cmocka_unit_test(test_timeout_when_sshd_stopped),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
