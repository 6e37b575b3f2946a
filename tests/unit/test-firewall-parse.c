/* SPDX-License-Identifier: MIT */
/* The firewall's allow-list parser and the VM validation (firewall.c), which run before any
 * netfilter call: every good text parses to the entry it means and formats back canonically;
 * every bad one is network::config_invalid naming the field and the bad part. */
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "error.h"
#include "firewall.h"
#include "util/util.h"

#define IP(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))

static void test_good(void **state)
{
    static const struct {
        const char *text;
        fw_allow want;
        const char *canonical;
    } cases[] = {
        {"203.0.113.7", {IP(203, 0, 113, 7), 32, 0, 0, 0}, "203.0.113.7/32"},
        {"10.0.0.0/8", {IP(10, 0, 0, 0), 8, 0, 0, 0}, "10.0.0.0/8"},
        {"0.0.0.0/0", {0, 0, 0, 0, 0}, "0.0.0.0/0"},
        {"10.0.0.0/8:443", {IP(10, 0, 0, 0), 8, 443, 443, 0}, "10.0.0.0/8:443"},
        {"10.0.0.0/8:443/tcp", {IP(10, 0, 0, 0), 8, 443, 443, IPPROTO_TCP}, "10.0.0.0/8:443/tcp"},
        {"1.2.3.4:53/udp", {IP(1, 2, 3, 4), 32, 53, 53, IPPROTO_UDP}, "1.2.3.4/32:53/udp"},
        {"1.2.3.0/24:8000-8100/tcp",
         {IP(1, 2, 3, 0), 24, 8000, 8100, IPPROTO_TCP},
         "1.2.3.0/24:8000-8100/tcp"},
        {"1.2.3.0/24:1-65535", {IP(1, 2, 3, 0), 24, 1, 65535, 0}, "1.2.3.0/24:1-65535"},
        {"255.255.255.255/32:65535-65535/udp",
         {UINT32_MAX, 32, 65535, 65535, IPPROTO_UDP},
         "255.255.255.255/32:65535/udp"},
        {"8.8.8.8:53-53", {IP(8, 8, 8, 8), 32, 53, 53, 0}, "8.8.8.8/32:53"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        fw_allow a;
        vmctl_error *e = NULL;
        int r = fw_allow_parse("allow", cases[i].text, &a, &e);
        if (r < 0)
            fail_msg("'%s' refused: %s", cases[i].text, vmctl_error_get_message(e));
        assert_int_equal(a.addr, cases[i].want.addr);
        assert_int_equal(a.prefix, cases[i].want.prefix);
        assert_int_equal(a.port_lo, cases[i].want.port_lo);
        assert_int_equal(a.port_hi, cases[i].want.port_hi);
        assert_int_equal(a.proto, cases[i].want.proto);
        char buf[FW_ALLOW_TEXT_MAX];
        fw_allow_format(&a, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].canonical);
        /* the canonical text parses to the same entry */
        fw_allow b;
        assert_int_equal(fw_allow_parse("allow", buf, &b, NULL), 0);
        assert_true(a.addr == b.addr && a.prefix == b.prefix && a.port_lo == b.port_lo &&
                    a.port_hi == b.port_hi && a.proto == b.proto);
    }
}

static void test_bad(void **state)
{
    static const struct {
        const char *text;
        const char *part; /* what the message must quote */
    } cases[] = {
        {"", "empty"},
        {"10.0.0", "'10.0.0'"},
        {"10.0.0.256", "'10.0.0.256'"},
        {"10.0.0.0.1", "unexpected '.1'"},
        {"010.0.0.1", "'010.0.0.1'"},
        {"-1.0.0.0", "'-1.0.0.0'"},
        {"example.com", "'example.com'"},
        {"10.0.0.0/33", "prefix length '33'"},
        {"10.0.0.0/", "prefix length ''"},
        {"10.0.0.0/x", "prefix length 'x'"},
        {"10.0.0.0/08", "prefix length '08'"},
        {"10.0.0.1/8", "host bits set (the network is '10.0.0.0/8')"},
        {"192.168.1.1/24:80", "host bits set (the network is '192.168.1.0/24')"},
        {"10.0.0.0/8:", "port ''"},
        {"10.0.0.0/8:0", "port '0'"},
        {"10.0.0.0/8:65536", "port '65536'"},
        {"10.0.0.0/8:http", "port 'http'"},
        {"10.0.0.0/8:100-90", "port range '100-90' ends before it starts"},
        {"10.0.0.0/8:80-", "port ''"},
        {"10.0.0.0/8:80-0", "port '0'"},
        {"10.0.0.0/8:80/icmp", "protocol 'icmp'"},
        {"10.0.0.0/8:80/TCP", "protocol 'TCP'"},
        {"10.0.0.0/8:80/", "protocol ''"},
        {"10.0.0.0/8:80/tcp ", "protocol 'tcp '"},
        {" 10.0.0.0/8", "' 10.0.0.0/8'"},
        {"10.0.0.0/8 ", "prefix length '8 '"},
        {"10.0.0.0/8:80:90", "unexpected ':90'"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        fw_allow a = {.addr = 42};
        vmctl_error *e = NULL;
        int r = fw_allow_parse("allow", cases[i].text, &a, &e);
        if (r >= 0)
            fail_msg("'%s' accepted", cases[i].text);
        assert_int_equal(r, -EINVAL);
        assert_non_null(e);
        assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_NETWORK_CONFIG_INVALID);
        const char *msg = vmctl_error_get_message(e);
        if (!strstr(msg, cases[i].part))
            fail_msg("'%s': message '%s' does not say '%s'", cases[i].text, msg, cases[i].part);
        assert_string_equal(vmctl_error_find_detail(e, "field"), "allow");
        assert_string_equal(vmctl_error_find_detail(e, "value"), cases[i].text);
        assert_non_null(strstr(msg, "allow"));
        assert_int_equal(a.addr, 42); /* *ret untouched */
        vmctl_error_free(e);
    }
    /* the field named is the caller's */
    vmctl_error *e = NULL;
    assert_int_equal(fw_allow_parse("network.allow", "1.2.3.4:0", &(fw_allow){0}, &e), -EINVAL);
    assert_string_equal(vmctl_error_find_detail(e, "field"), "network.allow");
    assert_non_null(strstr(vmctl_error_get_message(e), "network.allow"));
    vmctl_error_free(e);
    assert_int_equal(fw_allow_parse("allow", NULL, &(fw_allow){0}, NULL), -EINVAL);
}

static void test_validate(void **state)
{
    fw_allow allow[] = {{IP(203, 0, 113, 0), 24, 443, 443, IPPROTO_TCP}};
    fw_forward fwd[] = {{18080, 8080, IPPROTO_TCP}, {18080, 8080, IPPROTO_UDP}};
    uint32_t dns[] = {IP(1, 1, 1, 1)};
    fw_vm good = {.name = "web-1.a_b",
                  .ifname = "vt-web1",
                  .guest_ip = IP(10, 77, 0, 2),
                  .host_ip = IP(10, 77, 0, 1),
                  .allow_dns = true,
                  .dns = dns,
                  .n_dns = 1,
                  .allow = allow,
                  .n_allow = 1,
                  .fwd = fwd,
                  .n_fwd = 2};
    assert_int_equal(fw_vm_validate(&good, NULL), 0);

    fw_vm v;
    vmctl_error *e = NULL;
#define EXPECT_BAD(FIELD, STMT)                                                                    \
    do {                                                                                           \
        v = good;                                                                                  \
        STMT;                                                                                      \
        e = NULL;                                                                                  \
        assert_int_equal(fw_vm_validate(&v, &e), -EINVAL);                                         \
        assert_int_equal(vmctl_error_get_kind(e), VMCTL_E_NETWORK_CONFIG_INVALID);                 \
        assert_string_equal(vmctl_error_find_detail(e, "field"), FIELD);                           \
        vmctl_error_free(e);                                                                       \
    } while (0)
    EXPECT_BAD("name", v.name = "");
    EXPECT_BAD("name", v.name = "-web");
    EXPECT_BAD("name", v.name = "we b");
    EXPECT_BAD("name", v.name = "web\"; flush ruleset");
    EXPECT_BAD("ifname", v.ifname = NULL);
    EXPECT_BAD("ifname", v.ifname = "a-very-long-ifname");
    EXPECT_BAD("ifname", v.ifname = "vt\"0");
    EXPECT_BAD("guest_ip", v.guest_ip = 0);
    EXPECT_BAD("uplink", v.uplink = "eth0 }");
    EXPECT_BAD("dns", v.dns = (const uint32_t[]){0});
    fw_allow hostbits = {IP(10, 0, 0, 1), 8, 0, 0, 0};
    EXPECT_BAD("allow", v.allow = &hostbits);
    fw_allow prefix = {0, 33, 0, 0, 0};
    EXPECT_BAD("allow", v.allow = &prefix);
    fw_allow proto = {0, 0, 1, 2, IPPROTO_ICMP};
    EXPECT_BAD("allow", v.allow = &proto);
    fw_allow range = {0, 0, 9, 2, 0};
    EXPECT_BAD("allow", v.allow = &range);
    fw_forward zero = {0, 80, IPPROTO_TCP};
    EXPECT_BAD("port", (v.fwd = &zero, v.n_fwd = 1));
    fw_forward icmp = {80, 80, IPPROTO_ICMP};
    EXPECT_BAD("port", (v.fwd = &icmp, v.n_fwd = 1));
    fw_forward twice[] = {{80, 80, IPPROTO_TCP}, {80, 81, IPPROTO_TCP}};
    EXPECT_BAD("port", (v.fwd = twice, v.n_fwd = 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
