/* SPDX-License-Identifier: MIT */
/* supervise.c: the exit record's parser, and real detached spawns of /bin/sh under a supervisor
 * (exit status, signals, the launch handshake, a failed exec, the supervisor's name). */
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
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "supervise.h"
#include "util/util.h"
#include "vm-dir.h"

#define WAIT_USEC (10ULL * 1000000ULL)

static void test_parse(void **state)
{
    (void)state;
    supervise_exit e = {.signaled = true, .code = -1};
    assert_int_equal(supervise_exit_parse("pid 12 exit 0\n", 12, &e), 0);
    assert_false(e.signaled);
    assert_int_equal(e.code, 0);
    assert_true(supervise_exit_clean(&e));
    assert_int_equal(supervise_exit_parse("pid 12 exit 3\n", 12, &e), 0);
    assert_false(e.signaled);
    assert_int_equal(e.code, 3);
    assert_false(supervise_exit_clean(&e));
    assert_int_equal(supervise_exit_parse("pid 4000000 signal 9\n", 4000000, &e), 0);
    assert_true(e.signaled);
    assert_int_equal(e.code, 9);
    assert_false(supervise_exit_clean(&e));
    /* another process's record (a previous run's) says nothing about this one */
    assert_int_equal(supervise_exit_parse("pid 12 exit 0\n", 13, &e), -ENOENT);
    /* not a record */
    assert_int_equal(supervise_exit_parse("", 12, &e), -EBADMSG);
    assert_int_equal(supervise_exit_parse("pid 12", 12, &e), -EBADMSG);
    assert_int_equal(supervise_exit_parse("pid 12 exited 0", 12, &e), -EBADMSG);
    assert_int_equal(supervise_exit_parse("pid 12 exit 256", 12, &e), -EBADMSG);
    assert_int_equal(supervise_exit_parse("exit 0 pid 12", 12, &e), -EBADMSG);
}

typedef struct fixture {
    char dir[64];
    int dirfd;
    int logfd;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "/tmp/test-supervise-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    f->dirfd = open(f->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    cleanup_free char *log = str_printf("%s/" VM_FILE_BACKEND_LOG, f->dir);
    f->logfd = log ? open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    *state = f;
    return f->dirfd >= 0 && f->logfd >= 0 ? 0 : -1;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close(f->dirfd);
    close(f->logfd);
    /* a supervisor may still be writing its exit record (a failed spawn's supervisor records
     * the child's exit after the caller returned): retry while the directory refills */
    int r = rm_rf(f->dir);
    for (int i = 0; r < 0 && i < 100; i++) {
        usleep(50 * 1000);
        r = rm_rf(f->dir);
    }
    free(f);
    return r < 0 ? -1 : 0;
}

/* Spawn /bin/sh -c script detached; the pid and its start time. */
static void spawn_sh(fixture *f, const char *script, pid_t *pid, uint64_t *start, int *hold)
{
    char *argv[] = {"/bin/sh", "-c", (char *)script, NULL};
    supervise_spawn_args a = {
        .binary = "/bin/sh",
        .argv = argv,
        .logfd = f->logfd,
        .dirfd = f->dirfd,
        .error_kind = VMCTL_E_QEMU_SPAWN_FAILED,
    };
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(supervise_spawn(&a, pid, hold, &err), 0);
    assert_true(*pid > 0);
    assert_true(*hold >= 0);
    *start = proc_start_time(*pid);
    assert_true(*start != 0);
}

static void wait_gone(pid_t pid, uint64_t start)
{
    uint64_t deadline = now_usec() + WAIT_USEC;
    while (proc_alive(pid, start) && now_usec() < deadline)
        sleep_usec(2000);
    assert_false(proc_alive(pid, start));
}

/* A committed launch: the supervisor waits and records the exit status; the process is not our
 * child, and its parent is the supervisor (named vmctl-supervise), not us. */
static void test_exit_status(void **state)
{
    fixture *f = *state;
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    /* sleep a little: the supervisor's name is read while it waits */
    spawn_sh(f, "sleep 0.5; echo out; echo err >&2; exit 3", &pid, &start, &hold);
    supervise_commit(hold);
    char path[64], *stat = NULL;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    assert_int_equal(read_file(path, &stat, NULL), 0);
    int ppid = 0;
    const char *close_paren = strrchr(stat, ')');
    assert_non_null(close_paren);
    assert_int_equal(sscanf(close_paren + 2, "%*c %d", &ppid), 1);
    free(stat);
    assert_int_not_equal(ppid, getpid());
    char *comm = NULL;
    snprintf(path, sizeof(path), "/proc/%d/comm", ppid);
    assert_int_equal(read_file(path, &comm, NULL), 0);
    assert_string_equal(comm, "vmctl-supervise\n");
    free(comm);

    wait_gone(pid, start);
    supervise_exit e = {0};
    assert_int_equal(supervise_exit_wait(f->dir, pid, WAIT_USEC, &e), 0);
    assert_false(e.signaled);
    assert_int_equal(e.code, 3);
    /* stdout and stderr went to the log */
    cleanup_free char *log = str_printf("%s/" VM_FILE_BACKEND_LOG, f->dir);
    cleanup_free char *text = NULL;
    assert_int_equal(read_file(log, &text, NULL), 0);
    assert_non_null(strstr(text, "out\nerr\n"));
    /* a record names its process: another pid has none */
    assert_int_equal(supervise_exit_read(f->dir, pid + 1, &e), -ENOENT);
}

static void test_exit_clean_and_signal(void **state)
{
    fixture *f = *state;
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    spawn_sh(f, "exit 0", &pid, &start, &hold);
    supervise_commit(hold);
    wait_gone(pid, start);
    supervise_exit e = {0};
    assert_int_equal(supervise_exit_wait(f->dir, pid, WAIT_USEC, &e), 0);
    assert_true(supervise_exit_clean(&e));

    spawn_sh(f, "exec sleep 30", &pid, &start, &hold);
    supervise_commit(hold);
    assert_int_equal(kill(pid, SIGTERM), 0);
    wait_gone(pid, start);
    assert_int_equal(supervise_exit_wait(f->dir, pid, WAIT_USEC, &e), 0);
    assert_true(e.signaled);
    assert_int_equal(e.code, SIGTERM);
}

/* The handshake: a hold closed without the commit (the caller failed or died before recording
 * the process) makes the supervisor kill it at once, and record signal 9. */
static void test_uncommitted(void **state)
{
    fixture *f = *state;
    pid_t pid = 0;
    uint64_t start = 0;
    int hold = -1;
    spawn_sh(f, "exec sleep 30", &pid, &start, &hold);
    assert_true(proc_alive(pid, start));
    close(hold);
    wait_gone(pid, start);
    supervise_exit e = {0};
    assert_int_equal(supervise_exit_wait(f->dir, pid, WAIT_USEC, &e), 0);
    assert_true(e.signaled);
    assert_int_equal(e.code, SIGKILL);
    supervise_commit(-1); /* a no-op */
}

/* A binary that cannot be executed: the caller's error code, naming the step. */
static void test_exec_fails(void **state)
{
    fixture *f = *state;
    char *argv[] = {"/nonexistent/hypervisor", NULL};
    supervise_spawn_args a = {
        .binary = "/nonexistent/hypervisor",
        .argv = argv,
        .logfd = f->logfd,
        .dirfd = f->dirfd,
        .error_kind = VMCTL_E_QEMU_SPAWN_FAILED,
    };
    pid_t pid = 0;
    int hold = -1;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(supervise_spawn(&a, &pid, &hold, &err), -ENOENT);
    assert_non_null(err);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::qemu::spawn_failed");
    assert_non_null(strstr(vmctl_error_get_message(err), "exec failed"));
    assert_int_equal(hold, -1);
    assert_int_equal(supervise_spawn(NULL, &pid, &hold, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test_setup_teardown(test_exit_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_clean_and_signal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_uncommitted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_fails, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
