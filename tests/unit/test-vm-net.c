/* SPDX-License-Identifier: MIT */
/* vm-net.c and tap.c without the kernel: the pool setting, the option checks of create, the
 * cloud-init network-config of a lease, CIDR parsing. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "tap.h"
#include "util/util.h"
#include "vm-net.h"

static void test_pool(void **state)
{
    (void)state;
    uint32_t net = 0;
    unsigned prefix = 0;
    const char *text = NULL;
    unsetenv(VMNET_POOL_ENV);
    assert_int_equal(vmnet_pool(&net, &prefix, &text, NULL), 0);
    assert_int_equal(net, 0x0a580000);
    assert_int_equal(prefix, 16);
    assert_string_equal(text, "10.88.0.0/16");
    setenv(VMNET_POOL_ENV, "172.30.4.0/24", 1);
    assert_int_equal(vmnet_pool(&net, &prefix, NULL, NULL), 0);
    assert_int_equal(net, 0xac1e0400);
    assert_int_equal(prefix, 24);
    static const char *const bad[] = {"10.88.0.1/16",
                                      "10.88.0.0/31",
                                      "10.0.0.0/7",
                                      "10.88.0.0",
                                      "300.0.0.0/8",
                                      "10.88.0.0/1x",
                                      ""};
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        setenv(VMNET_POOL_ENV, bad[i], 1);
        cleanup_error vmctl_error *e = NULL;
        if (!*bad[i]) { /* empty: the default */
            assert_int_equal(vmnet_pool(&net, &prefix, NULL, &e), 0);
            continue;
        }
        assert_int_equal(vmnet_pool(&net, &prefix, NULL, &e), -EINVAL);
        assert_string_equal(vmctl_error_get_code(e), "vm_manager::network::config_invalid");
        assert_string_equal(vmctl_error_find_detail(e, "field"), "pool");
    }
    unsetenv(VMNET_POOL_ENV);
}

static vm_spec *spec(const char *net, bool disk)
{
    vm_spec *s = calloc(1, sizeof(*s));
    s->name = strdup("box");
    s->net = strdup(net);
    s->disk = disk ? strdup("/v/box/disk.qcow2") : NULL;
    return s;
}

static void check_invalid(const vmctl_vm_config *c, const char *net, bool disk, const char *code,
                          const char *field)
{
    cleanup_vm_spec vm_spec *s = spec(net, disk);
    cleanup_error vmctl_error *e = NULL;
    assert_true(vmnet_check_config(c, s, &e) < 0);
    assert_string_equal(vmctl_error_get_code(e), code);
    assert_string_equal(vmctl_error_find_detail(e, "field"), field);
}

static void test_check_config(void **state)
{
    (void)state;
    const char *allow[] = {"10.0.0.0/8:443/tcp", "192.168.1.7"};
    vmctl_vm_config c = {.allow = allow, .n_allow = 2, .allow_dns = true, .rate_limit_mbps = 5};
    {
        cleanup_vm_spec vm_spec *s = spec("tap", false);
        cleanup_error vmctl_error *e = NULL;
        assert_int_equal(vmnet_check_config(&c, s, &e), 0);
        assert_non_null(s->allow);
        assert_string_equal(s->allow[0], "10.0.0.0/8:443/tcp");
        assert_string_equal(s->allow[1], "192.168.1.7/32");
        assert_null(s->allow[2]);
        assert_true(s->allow_dns);
        assert_int_equal(s->rate_limit_mbps, 5);
    }
    /* tap options without tap, named */
    check_invalid(&c, "user", false, "vm_manager::network::config_invalid", "allow");
    vmctl_vm_config d = {.allow_dns = true};
    check_invalid(&d, "none", false, "vm_manager::network::config_invalid", "allow-dns");
    vmctl_vm_config r = {.rate_limit_mbps = 1};
    check_invalid(&r, "user", false, "vm_manager::network::config_invalid", "rate-limit-mbps");
    /* a malformed entry */
    const char *bad[] = {"10.0.0.0/8:0-"};
    vmctl_vm_config b = {.allow = bad, .n_allow = 1};
    check_invalid(&b, "tap", false, "vm_manager::network::config_invalid", "allow");
    /* disk IOPS need a disk; with one, any network */
    vmctl_vm_config io = {.disk_iops = 100};
    check_invalid(&io, "tap", false, "vm_manager::config::invalid", "disk-iops");
    cleanup_vm_spec vm_spec *s = spec("none", true);
    assert_int_equal(vmnet_check_config(&io, s, NULL), 0);
    assert_int_equal(s->disk_iops, 100);
}

static void test_cloudinit_config(void **state)
{
    (void)state;
    store_lease l = {.vm = "box", .subnet = 0x0a580004, .prefix = 30, .mac = "52:54:0a:58:00:06"};
    cleanup_free char *nc = vmnet_cloudinit_config(&l);
    assert_non_null(nc);
    assert_non_null(strstr(nc, "version: 2\n"));
    assert_non_null(strstr(nc, "macaddress: \"52:54:0a:58:00:06\""));
    assert_non_null(strstr(nc, "addresses: [\"10.88.0.6/30\"]"));
    assert_non_null(strstr(nc, "via: \"10.88.0.5\""));
}

static void test_cidr(void **state)
{
    (void)state;
    uint32_t n;
    unsigned p;
    assert_int_equal(tap_parse_cidr("0.0.0.0/0", &n, &p), 0);
    assert_int_equal(p, 0);
    assert_int_equal(tap_parse_cidr("10.88.0.4/30", &n, &p), 0);
    assert_int_equal(n, 0x0a580004);
    assert_int_equal(tap_parse_cidr("10.88.0.5/30", &n, &p), -EINVAL); /* host bits */
    assert_int_equal(tap_parse_cidr("10.88.0.0/33", &n, &p), -EINVAL);
    assert_int_equal(tap_parse_cidr("10.88.0.0/", &n, &p), -EINVAL);
    assert_int_equal(tap_parse_cidr("/8", &n, &p), -EINVAL);
    char buf[16];
    assert_string_equal(tap_ip_str(0xc0a80101, buf), "192.168.1.1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_check_config),
        cmocka_unit_test(test_cloudinit_config),
        cmocka_unit_test(test_cidr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
