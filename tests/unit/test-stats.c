/* SPDX-License-Identifier: MIT */
/* stats.c's pure parts: the /proc parsers and the Prometheus text (label escaping, what an
 * unavailable source leaves out, HELP and TYPE before every family). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "skip.h"
#include "stats-internal.h"

__attribute__((noinline)) static char *render(vmctl_vm_stats *const *s, size_t n)
{
    char *text = NULL;
    assert_int_equal(vmctl_vm_stats_prometheus(s, n, &text, NULL), 0);
    assert_non_null(text);
    return text;
}

static char *escaped(const char *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    stats_prom_label_value(f, v);
    fclose(f);
    return buf;
}

static void test_label_escaping(void **state)
{
    (void)state;
    struct {
        const char *in, *out;
    } cases[] = {
        {"disk0", "disk0"},
        {"a\"b", "a\\\"b"},
        {"back\\slash", "back\\\\slash"},
        {"two\nlines", "two\\nlines"},
        {"\\\"\n", "\\\\\\\"\\n"},
        {"", ""},
        {"caf\xc3\xa9", "caf\xc3\xa9"}, /* UTF-8 stays as it is */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = escaped(cases[i].in);
        assert_string_equal(got, cases[i].out);
        free(got);
    }
}

static void test_prometheus_labels_and_families(void **state)
{
    (void)state;
    vmctl_vm_stats_disk disks[] = {{.device = "we\"ird\\dev\nice", .write_bytes = 4096}};
    vmctl_vm_stats s = {
        .name = "web",
        .state = VMCTL_VM_RUNNING,
        .vcpus = 2,
        .mem_bytes = 256u << 20,
        .cpu_user_seconds = 1.5,
        .cpu_system_seconds = 0.25,
        .cpu_seconds = 1.75,
        .rss_bytes = 1000,
        .pss_bytes = 500,
        .disks = disks,
        .n_disks = 1,
    };
    s.available[VMCTL_STATS_CPU] = s.available[VMCTL_STATS_MEMORY] = true;
    s.available[VMCTL_STATS_DISK] = true;
    s.why_unavailable[VMCTL_STATS_NETWORK] = "user-mode networking";
    /* uptime and guest: failed (no why) */
    vmctl_vm_stats *list[] = {&s};
    char *text = render(list, 1);
    assert_non_null(strstr(text, "vmctl_vm_disk_write_bytes_total{vm=\"web\",device=\"we\\\"ird\\\\"
                                 "dev\\nice\"} 4096\n"));
    assert_non_null(strstr(text, "vmctl_vm_cpu_seconds_total{vm=\"web\",mode=\"user\"} 1.5\n"));
    assert_non_null(strstr(text, "vmctl_vm_cpu_seconds_total{vm=\"web\",mode=\"system\"} 0.25\n"));
    assert_non_null(strstr(text, "vmctl_vm_memory_rss_bytes{vm=\"web\"} 1000\n"));
    /* unavailable sources: no samples, and source_up says which failed */
    assert_null(strstr(text, "vmctl_vm_uptime_seconds{"));
    assert_null(strstr(text, "vmctl_vm_guest_"));
    assert_null(strstr(text, "vmctl_vm_network_"));
    assert_non_null(strstr(text, "vmctl_vm_source_up{vm=\"web\",source=\"guest\"} 0\n"));
    assert_non_null(strstr(text, "vmctl_vm_source_up{vm=\"web\",source=\"cpu\"} 1\n"));
    assert_null(strstr(text, "source=\"network\""));

    /* every sample line follows a HELP and a TYPE of its family; counters end in _total */
    char *save = NULL, *copy = strdup(text);
    char family[128] = "", type[16] = "";
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            assert_true(sscanf(line + 7, "%127s", family) == 1);
            type[0] = 0;
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128];
            assert_true(sscanf(line + 7, "%127s %15s", name, type) == 2);
            assert_string_equal(name, family);
            size_t n = strlen(name);
            bool total = n > 6 && strcmp(name + n - 6, "_total") == 0;
            assert_true(strcmp(type, "counter") == 0 ? total : !total);
            continue;
        }
        assert_true(type[0] != 0);
        assert_int_equal(strncmp(line, family, strlen(family)), 0);
        assert_int_equal(line[strlen(family)], '{');
    }
    free(copy);
    free(text);
}

static void test_prometheus_several_vms_grouped(void **state)
{
    (void)state;
    vmctl_vm_stats a = {.name = "a", .rss_bytes = 1, .pss_bytes = 1};
    vmctl_vm_stats b = {.name = "b", .rss_bytes = 2, .pss_bytes = 2};
    a.available[VMCTL_STATS_MEMORY] = b.available[VMCTL_STATS_MEMORY] = true;
    vmctl_vm_stats *list[] = {&a, &b};
    char *text = render(list, 2);
    /* one family, then both VMs' samples together */
    const char *fam = strstr(text, "# TYPE vmctl_vm_memory_rss_bytes gauge\n");
    assert_non_null(fam);
    assert_ptr_equal(strstr(fam, "\nvmctl_vm_memory_rss_bytes{vm=\"a\"} 1\n"
                                 "vmctl_vm_memory_rss_bytes{vm=\"b\"} 2\n"),
                     strchr(fam, '\n'));
    assert_null(strstr(fam + 1, "# TYPE vmctl_vm_memory_rss_bytes"));
    free(text);
}

static void test_prometheus_no_vms(void **state)
{
    (void)state;
    char *text = render(NULL, 0);
    assert_string_equal(text, ""); /* no family without samples */
    free(text);
}

static void test_proc_stat(void **state)
{
    (void)state;
    uint64_t ut = 0, st = 0, start = 0;
    /* a comm with a space and a ')' in it: fields count from the last ')' */
    const char *line = "4242 (qemu) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 56 0 0 20 0 3 "
                       "0 987654 1000000 2000 18446744073709551615\n";
    assert_int_equal(stats_parse_proc_stat(line, &ut, &st, &start), 0);
    assert_int_equal(ut, 1234);
    assert_int_equal(st, 56);
    assert_int_equal(start, 987654);
    assert_int_equal(stats_parse_proc_stat("4242 (qemu S 1", &ut, &st, &start), -EINVAL);
    assert_int_equal(stats_parse_proc_stat("4242 (q) S 1 2 3", &ut, &st, &start), -EINVAL);
}

static void test_smaps_rollup(void **state)
{
    (void)state;
    uint64_t rss = 0, pss = 0;
    const char *text = "55a0c0000000-7ffd00000000 ---p 00000000 00:00 0   [rollup]\n"
                       "Rss:              247304 kB\n"
                       "Pss:              193842 kB\n"
                       "Pss_Anon:         180000 kB\n"
                       "Shared_Clean:      10000 kB\n";
    assert_int_equal(stats_parse_smaps_rollup(text, &rss, &pss), 0);
    assert_int_equal(rss, 247304ull * 1024);
    assert_int_equal(pss, 193842ull * 1024); /* not Pss_Anon */
    assert_int_equal(stats_parse_smaps_rollup("Rss: 1 kB\n", &rss, &pss), -EINVAL);
}

static void test_net_dev(void **state)
{
    (void)state;
    const char *text =
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
        "drop fifo colls carrier compressed\n"
        "    lo:     120       2    0    0    0     0          0         0      120       2    0 "
        "   0    0     0       0          0\n"
        "  eth0:     468       5    0    0    0     0          0         0      938      11    0 "
        "   0    0     0       0          0\n"
        "eth1:1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n";
    vmctl_vm_stats_net *n = NULL;
    size_t count = 0;
    assert_int_equal(stats_parse_net_dev(text, &n, &count), 0);
    assert_int_equal(count, 2); /* lo left out */
    assert_string_equal(n[0].interface, "eth0");
    assert_int_equal(n[0].rx_bytes, 468);
    assert_int_equal(n[0].rx_packets, 5);
    assert_int_equal(n[0].tx_bytes, 938);
    assert_int_equal(n[0].tx_packets, 11);
    assert_string_equal(n[1].interface, "eth1"); /* no space after the colon */
    assert_int_equal(n[1].rx_bytes, 1);
    assert_int_equal(n[1].tx_bytes, 9);
    assert_int_equal(n[1].tx_packets, 10);
    for (size_t i = 0; i < count; i++)
        free(n[i].interface);
    free(n);
    assert_int_equal(stats_parse_net_dev("  eth0: 1 2 3\n", &n, &count), -EINVAL);
}

static void test_cpu_percent(void **state)
{
    (void)state;
    vmctl_vm_stats a = {.pid = 7, .sampled_us = 1000000, .cpu_seconds = 1.0};
    vmctl_vm_stats b = {.pid = 7, .sampled_us = 3000000, .cpu_seconds = 2.0};
    a.available[VMCTL_STATS_CPU] = b.available[VMCTL_STATS_CPU] = true;
    assert_true(vmctl_vm_stats_cpu_percent(&a, &b) > 49.999 &&
                vmctl_vm_stats_cpu_percent(&a, &b) < 50.001);
    assert_true(vmctl_vm_stats_cpu_percent(&b, &a) < 0); /* backwards in time */
    b.pid = 8;
    assert_true(vmctl_vm_stats_cpu_percent(&a, &b) < 0); /* another process */
    b.pid = 7;
    b.available[VMCTL_STATS_CPU] = false;
    assert_true(vmctl_vm_stats_cpu_percent(&a, &b) < 0);
}

/* The child of test_taps, in a network and mount namespace of its own (with its own /sys): a TAP
 * held open, up, with two frames written into it (the host receives them: the guest sent them).
 * Exit 0 when stats_read_taps finds it with those counters; 77 when the host cannot make one. */
static int taps_child(void)
{
    if (unshare(CLONE_NEWNET | CLONE_NEWNS) < 0)
        return 77;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("sysfs", "/sys", "sysfs", 0, NULL) < 0)
        return 77;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return 77;
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "vmst0");
    if (ioctl(fd, TUNSETIFF, &ifr) < 0)
        return 77;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq up = {.ifr_flags = IFF_UP};
    snprintf(up.ifr_name, sizeof(up.ifr_name), "vmst0");
    if (sock < 0 || ioctl(sock, SIOCSIFFLAGS, &up) < 0)
        return 10;
    unsigned char frame[60] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52,
        0x54, 0,    0,    0,    1,    0x88, 0xb5}; /* broadcast, local experimental ethertype */
    for (int i = 0; i < 2; i++)
        if (write(fd, frame, sizeof(frame)) != (ssize_t)sizeof(frame))
            return 11;
    vmctl_vm_stats s = {.name = "t"};
    if (stats_read_taps(&s, getpid()) < 0 || !s.available[VMCTL_STATS_NETWORK] || s.n_errors)
        return 12;
    if (s.n_nets != 1 || strcmp(s.nets[0].interface, "vmst0") != 0)
        return 13;
    /* the host received them: the guest transmitted them */
    if (s.nets[0].tx_packets != 2 || s.nets[0].tx_bytes != 120 || s.nets[0].rx_packets != 0)
        return 14;
    return 0;
}

static void test_taps(void **state)
{
    (void)state;
    if (geteuid() != 0)
        skip_test(NULL, "a TAP in a network namespace of its own needs root");
    if (access("/dev/net/tun", R_OK | W_OK) < 0)
        skip_test(NULL, "/dev/net/tun is missing (modprobe tun)");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(taps_child());
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77)
        skip_test(NULL, "cannot make a TAP in a network namespace here");
    assert_int_equal(WEXITSTATUS(st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_prometheus_labels_and_families),
        cmocka_unit_test(test_prometheus_several_vms_grouped),
        cmocka_unit_test(test_prometheus_no_vms),
        cmocka_unit_test(test_proc_stat),
        cmocka_unit_test(test_smaps_rollup),
        cmocka_unit_test(test_net_dev),
        cmocka_unit_test(test_cpu_percent),
        cmocka_unit_test(test_taps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
