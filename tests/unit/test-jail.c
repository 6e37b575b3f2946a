/* SPDX-License-Identifier: MIT */
/* The jail's cgroup limits as files (src/lib/jail.c, docs/isolation.md "Limits"): each limit is
 * written where its file is (the controller enabled for the group) and only there, in the v2 and
 * v1 formats; a directory without a controller's files gets none of its limits and says so in
 * seen. A plain directory with the files stands for a cgroup (the real v2 and v1 hierarchies:
 * tests/integration/test-jail-v2.sh, test-jail.sh). Also the group's name. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "error.h"
#include "jail.h"
#include "util/util.h"

static char tmpdir[] = "/tmp/vmctl-test-jail.XXXXXX";

/* A fresh "cgroup" directory with empty files. */
static char *fake_group(const char *name, const char *const *files)
{
    char *dir = str_printf("%s/%s", tmpdir, name);
    assert_non_null(dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    for (const char *const *f = files; *f; f++) {
        cleanup_free char *p = str_printf("%s/%s", dir, *f);
        int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        close(fd);
    }
    return dir;
}

static char *content(const char *dir, const char *file)
{
    cleanup_free char *p = str_printf("%s/%s", dir, file);
    char *text = NULL;
    if (read_file(p, &text, NULL) < 0)
        return NULL;
    return text;
}

#define assert_file(dir, file, want)                                                               \
    do {                                                                                           \
        cleanup_free char *got_ = content(dir, file);                                              \
        assert_non_null(got_);                                                                     \
        assert_string_equal(got_, want);                                                           \
    } while (0)

static const jail_config cfg = {
    .name = "t",
    .vmdir = "/v/t",
    .binary = "/usr/bin/qemu",
    .uid = 2000000000u,
    .cpu_quota = 0.5,
    .memory_bytes = 512ull << 20,
    .pids_max = 512,
    .weight_threads = 3,
};

static void test_v2_all(void **state)
{
    (void)state;
    static const char *const files[] = {"cpu.max",  "cpu.weight", "memory.max", "memory.swap.max",
                                        "pids.max", "io.weight",  NULL};
    cleanup_free char *d = fake_group("v2all", files);
    unsigned seen = 0;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(jail_cgroup_limits(&cfg, 2, NULL, d, &seen, &err), 0);
    assert_null(err);
    assert_int_equal(seen,
                     VMCTL_LIMIT_CPU | VMCTL_LIMIT_MEMORY | VMCTL_LIMIT_PIDS | VMCTL_LIMIT_IO);
    assert_file(d, "cpu.max", "50000 100000");
    assert_file(d, "cpu.weight", "300"); /* (vCPUs + 1) x 100 */
    assert_file(d, "memory.max", "536870912");
    assert_file(d, "memory.swap.max", "0");
    assert_file(d, "pids.max", "512");
    assert_file(d, "io.weight", "default 100");
}

/* the host's v2 hierarchy without the memory, pids and io controllers (this CI's: hugetlb
 * only): nothing of theirs written, seen says so; no quota: cpu.max "max" */
static void test_v2_partial(void **state)
{
    (void)state;
    static const char *const files[] = {"cpu.max", NULL};
    cleanup_free char *d = fake_group("v2cpu", files);
    jail_config c = cfg;
    c.cpu_quota = 0;
    unsigned seen = 0;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(jail_cgroup_limits(&c, 2, NULL, d, &seen, &err), 0);
    assert_int_equal(seen, VMCTL_LIMIT_CPU);
    assert_file(d, "cpu.max", "max 100000");
    cleanup_free char *mem = content(d, "memory.max");
    assert_null(mem); /* not made up */

    static const char *const none[] = {"cgroup.procs", NULL};
    cleanup_free char *e = fake_group("v2none", none);
    seen = 0;
    assert_int_equal(jail_cgroup_limits(&cfg, 2, NULL, e, &seen, &err), 0);
    assert_int_equal(seen, 0);
}

/* bfq's weight where the plain one is not */
static void test_v2_bfq(void **state)
{
    (void)state;
    static const char *const files[] = {"io.bfq.weight", NULL};
    cleanup_free char *d = fake_group("v2bfq", files);
    unsigned seen = 0;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(jail_cgroup_limits(&cfg, 2, NULL, d, &seen, &err), 0);
    assert_int_equal(seen, VMCTL_LIMIT_IO);
    assert_file(d, "io.bfq.weight", "default 100");
}

/* v1: one hierarchy per controller, named by its mount (co-mounted cpu,cpuacct counts as cpu) */
static void test_v1(void **state)
{
    (void)state;
    static const char *const cpu[] = {"cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", NULL};
    cleanup_free char *d = fake_group("v1cpu", cpu);
    unsigned seen = 0;
    cleanup_error vmctl_error *err = NULL;
    assert_int_equal(jail_cgroup_limits(&cfg, 1, "cpu,cpuacct", d, &seen, &err), 0);
    assert_int_equal(seen, VMCTL_LIMIT_CPU);
    assert_file(d, "cpu.shares", "3072");
    assert_file(d, "cpu.cfs_period_us", "100000");
    assert_file(d, "cpu.cfs_quota_us", "50000");

    static const char *const mem[] = {"memory.limit_in_bytes", "memory.memsw.limit_in_bytes", NULL};
    cleanup_free char *m = fake_group("v1mem", mem);
    seen = 0;
    assert_int_equal(jail_cgroup_limits(&cfg, 1, "memory", m, &seen, &err), 0);
    assert_int_equal(seen, VMCTL_LIMIT_MEMORY);
    assert_file(m, "memory.limit_in_bytes", "536870912");
    assert_file(m, "memory.memsw.limit_in_bytes", "536870912");

    static const char *const pids[] = {"pids.max", NULL};
    cleanup_free char *p = fake_group("v1pids", pids);
    seen = 0;
    assert_int_equal(jail_cgroup_limits(&cfg, 1, "pids", p, &seen, &err), 0);
    assert_int_equal(seen, VMCTL_LIMIT_PIDS);
    assert_file(p, "pids.max", "512");

    /* blkio without a weight file (this host): no weight, not seen */
    static const char *const blk[] = {"blkio.throttle.io_serviced", NULL};
    cleanup_free char *b = fake_group("v1blk", blk);
    seen = 0;
    assert_int_equal(jail_cgroup_limits(&cfg, 1, "blkio", b, &seen, &err), 0);
    assert_int_equal(seen, 0);
    /* cpuacct alone is not the cpu controller */
    cleanup_free char *a = fake_group("v1acct", (const char *const[]){"cpuacct.usage", NULL});
    seen = 0;
    assert_int_equal(jail_cgroup_limits(&cfg, 1, "cpuacct", a, &seen, &err), 0);
    assert_int_equal(seen, 0);
}

/* a write the kernel refuses is jailer::failed naming the step, not a VM without the limit */
static void test_write_fails(void **state)
{
    (void)state;
    cleanup_free char *d = fake_group("v2ro", (const char *const[]){NULL});
    cleanup_free char *p = str_printf("%s/memory.max", d);
    assert_int_equal(mkdir(p, 0755), 0); /* there, but not writable as a file */
    unsigned seen = 0;
    cleanup_error vmctl_error *err = NULL;
    assert_true(jail_cgroup_limits(&cfg, 2, NULL, d, &seen, &err) < 0);
    assert_non_null(err);
    assert_string_equal(vmctl_error_get_code(err), "vm_manager::jailer::failed");
    assert_string_equal(vmctl_error_find_detail(err, "step"), "cgroup limit");
    assert_int_equal(rmdir(p), 0);
}

static void test_name(void **state)
{
    (void)state;
    cleanup_free char *a = jail_cgroup_name("/home/x/vms/web");
    cleanup_free char *b = jail_cgroup_name("/home/y/vms/web/");
    cleanup_free char *c = jail_cgroup_name("/home/x/vms/web/");
    assert_true(str_startswith(a, JAIL_CGROUP_DIR "/web-"));
    assert_int_equal(strlen(a), strlen(JAIL_CGROUP_DIR "/web-") + 8);
    assert_string_not_equal(a, b); /* two stores, one name: two groups */
    assert_string_equal(a, c);     /* a trailing slash is the same directory */
}

static void rm_tree(void)
{
    cleanup_free char *cmd = str_printf("rm -rf '%s'", tmpdir);
    if (cmd && system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", tmpdir);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v2_all),      cmocka_unit_test(test_v2_partial),
        cmocka_unit_test(test_v2_bfq),      cmocka_unit_test(test_v1),
        cmocka_unit_test(test_write_fails), cmocka_unit_test(test_name),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rm_tree();
    return failed;
}
