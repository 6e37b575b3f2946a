/* SPDX-License-Identifier: MIT */
/* Drives the firewall module (src/lib/firewall.c) for tests/integration/test-firewall.sh and
 * bench/firewall.sh, inside whatever network namespace it runs in (`ip netns exec NS fw-driver`):
 *
 *   fw-driver apply NAME IFNAME GUEST_IP HOST_IP [--allow TEXT]... [--allow-dns] [--dns IP]...
 *             [--allow-all] [--uplink IF] [--fwd HOST:GUEST[/udp]]...
 *   fw-driver parse TEXT...            parse and print the canonical text of each (no netfilter)
 *   fw-driver remove NAME | list | stats | table-remove
 *   fw-driver bench N                  apply N fake VMs (fake TAP names, addresses 10.200.x.y)
 *                                      then remove them: the time per apply and per remove
 *   fw-driver fill N                   the same without the removal (they stay installed)
 *
 * An error is printed as "CODE: message" with its notes on stderr, exit status 1. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "firewall.h"
#include "util/util.h"

static int report(vmctl_error *e, int r)
{
    if (!e) {
        fprintf(stderr, "error: %s\n", strerror(-r));
        return 1;
    }
    fprintf(stderr, "%s: %s\n", vmctl_error_get_code(e), vmctl_error_get_message(e));
    const char *field = vmctl_error_find_detail(e, "field");
    if (field)
        fprintf(stderr, "field: %s\n", field);
    for (size_t i = 0; vmctl_error_get_note(e, i); i++)
        fprintf(stderr, "note: %s\n", vmctl_error_get_note(e, i));
    vmctl_error_free(e);
    return 1;
}

static uint32_t ip_arg(const char *s)
{
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) {
        fprintf(stderr, "not an IPv4 address: '%s'\n", s);
        exit(2);
    }
    return ntohl(a.s_addr);
}

#define MAX 64

static int cmd_apply(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: fw-driver apply NAME IFNAME GUEST_IP HOST_IP [options]\n");
        return 2;
    }
    fw_allow allow[MAX];
    fw_forward fwd[MAX];
    uint32_t dns[MAX];
    fw_vm vm = {.name = argv[2],
                .ifname = argv[3],
                .guest_ip = ip_arg(argv[4]),
                .host_ip = ip_arg(argv[5]),
                .allow = allow,
                .fwd = fwd,
                .dns = dns};
    vmctl_error *e = NULL;
    for (int i = 6; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (streq(o, "--allow-dns"))
            vm.allow_dns = true;
        else if (streq(o, "--allow-all"))
            vm.allow_all = true;
        else if (streq(o, "--allow") && v && vm.n_allow < MAX) {
            int r = fw_allow_parse("allow", v, &allow[vm.n_allow++], &e);
            if (r < 0)
                return report(e, r);
            i++;
        } else if (streq(o, "--dns") && v && vm.n_dns < MAX) {
            dns[vm.n_dns++] = ip_arg(v);
            i++;
        } else if (streq(o, "--uplink") && v) {
            vm.uplink = v;
            i++;
        } else if (streq(o, "--fwd") && v && vm.n_fwd < MAX) {
            unsigned h = 0, g = 0;
            char proto[8] = "tcp";
            if (sscanf(v, "%u:%u/%7s", &h, &g, proto) < 2 || h > 65535 || g > 65535) {
                fprintf(stderr, "bad --fwd '%s'\n", v);
                return 2;
            }
            fwd[vm.n_fwd++] = (fw_forward){(uint16_t)h, (uint16_t)g,
                                           streq(proto, "udp") ? IPPROTO_UDP : IPPROTO_TCP};
            i++;
        } else {
            fprintf(stderr, "unknown option '%s'\n", o);
            return 2;
        }
    }
    int r = fw_vm_apply(&vm, &e);
    return r < 0 ? report(e, r) : 0;
}

static int cmd_bench(int n, bool keep)
{
    uint64_t t0 = now_usec();
    vmctl_error *e = NULL;
    fw_allow allow[3];
    const char *texts[] = {"203.0.113.0/24:443/tcp", "198.51.100.7:80", "10.1.0.0/16:5432/tcp"};
    for (size_t i = 0; i < 3; i++)
        if (fw_allow_parse("allow", texts[i], &allow[i], &e) < 0)
            return report(e, -EINVAL);
    for (int i = 0; i < n; i++) {
        char name[32], ifname[16];
        snprintf(name, sizeof(name), "bench-%d", i);
        snprintf(ifname, sizeof(ifname), "vb%d", i);
        fw_forward fwd = {(uint16_t)(30000 + i), 22, IPPROTO_TCP};
        uint32_t guest = 0x0ac80000u | (uint32_t)(i / 250) << 8 | (uint32_t)(i % 250 + 2);
        fw_vm vm = {.name = name,
                    .ifname = ifname,
                    .guest_ip = guest,
                    .host_ip = 0x0ac90001u,
                    .allow_dns = true,
                    .allow = allow,
                    .n_allow = 3,
                    .fwd = &fwd,
                    .n_fwd = 1};
        int r = fw_vm_apply(&vm, &e);
        if (r < 0)
            return report(e, r);
    }
    uint64_t t1 = now_usec();
    size_t rules = 0, elements = 0;
    int r = fw_stats(&rules, &elements, &e);
    if (r < 0)
        return report(e, r);
    uint64_t t2 = now_usec();
    for (int i = 0; !keep && i < n; i++) {
        char name[32];
        snprintf(name, sizeof(name), "bench-%d", i);
        if ((r = fw_vm_remove(name, &e)) < 0)
            return report(e, r);
    }
    uint64_t t3 = now_usec();
    printf("vms %d rules %zu elements %zu apply_ms_per_vm %.2f", n, rules, elements,
           (double)(t1 - t0) / 1000.0 / n);
    if (!keep)
        printf(" remove_ms_per_vm %.2f", (double)(t3 - t2) / 1000.0 / n);
    putchar('\n');
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: fw-driver apply|parse|remove|list|stats|table-remove|bench ...\n");
        return 2;
    }
    const char *cmd = argv[1];
    vmctl_error *e = NULL;
    int r = 0;
    if (streq(cmd, "apply"))
        return cmd_apply(argc, argv);
    if (streq(cmd, "parse")) {
        for (int i = 2; i < argc; i++) {
            fw_allow a;
            if ((r = fw_allow_parse("allow", argv[i], &a, &e)) < 0)
                return report(e, r);
            char buf[FW_ALLOW_TEXT_MAX];
            fw_allow_format(&a, buf, sizeof(buf));
            puts(buf);
        }
        return 0;
    }
    if (streq(cmd, "remove") && argc == 3)
        r = fw_vm_remove(argv[2], &e);
    else if (streq(cmd, "list")) {
        char **names = NULL;
        size_t n = 0;
        if ((r = fw_list_vms(&names, &n, &e)) >= 0) {
            for (size_t i = 0; i < n; i++)
                puts(names[i]);
            strv_free(names);
        }
    } else if (streq(cmd, "stats")) {
        size_t rules = 0, elements = 0;
        if ((r = fw_stats(&rules, &elements, &e)) >= 0)
            printf("rules %zu elements %zu\n", rules, elements);
    } else if (streq(cmd, "table-remove"))
        r = fw_table_remove(&e);
    else if ((streq(cmd, "bench") || streq(cmd, "fill")) && argc == 3)
        return cmd_bench(atoi(argv[2]), streq(cmd, "fill"));
    else {
        fprintf(stderr, "unknown command '%s'\n", cmd);
        return 2;
    }
    return r < 0 ? report(e, r) : 0;
}
