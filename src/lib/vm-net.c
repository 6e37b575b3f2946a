/* SPDX-License-Identifier: MIT */
/* `--net tap` for one VM. See vm-net.h and docs/networking.md.
 *
 * Routed, one /30 per VM: the host's end of the link is the guest's gateway, so every packet of a
 * guest crosses the host's IP stack, where the firewall (one nftables table, firewall.c) sees it
 * on the input or forward path. Nothing is bridged: two guests never share a link layer. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>

#include "arg-check.h"
#include "error.h"
#include "ctx.h"
#include "firewall.h"
#include "tap.h"
#include "util/util.h"
#include "podnet.h"
#include "vm-net.h"

#define MAX_DNS 3

static int setup_failed_errno(vmctl_error **reterr, const char *ifname)
{
    int r =
        err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, errno, "cannot hand TAP '%s' on", ifname);
    err_detail(reterr, "device", "%s", ifname);
    return r;
}

int vmnet_pool(uint32_t *ret_net, unsigned *ret_prefix, const char **ret_text, vmctl_error **reterr)
{
    const char *text = getenv(VMNET_POOL_ENV);
    if (!text || !*text)
        text = VMNET_DEFAULT_POOL;
    uint32_t net = 0;
    unsigned prefix = 0;
    if (tap_parse_cidr(text, &net, &prefix) < 0 || prefix < 8 || prefix > VMNET_LINK_PREFIX) {
        int r = err_make(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, EINVAL,
                         "invalid address pool '%s' in $" VMNET_POOL_ENV, text);
        err_detail(reterr, "field", "pool");
        err_detail(reterr, "value", "%s", text);
        err_detail(reterr, "allowed", "an IPv4 network A.B.C.D/LEN with LEN from 8 to %d",
                   VMNET_LINK_PREFIX);
        err_help(reterr, "Set $" VMNET_POOL_ENV " to a network such as " VMNET_DEFAULT_POOL
                         " (without host bits), or unset it.");
        return r;
    }
    *ret_net = net;
    *ret_prefix = prefix;
    if (ret_text)
        *ret_text = text;
    return 0;
}

static int needs_tap(vmctl_error **reterr, const char *field, const char *net)
{
    int r = err_make(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, EINVAL,
                     "--%s needs tap networking, not '%s'", field, net);
    err_detail(reterr, "field", "%s", field);
    err_detail(reterr, "allowed", "--net tap");
    err_help(reterr, "Add `--net tap` (VMFile: network \"tap\"), or drop --%s.", field);
    return r;
}

int vmnet_check_config(const vmctl_vm_config *c, vm_spec *s, vmctl_error **reterr)
{
    bool tap = streq(s->net, "tap");
    if (!tap) {
        if (c->n_allow)
            return needs_tap(reterr, "allow", s->net);
        if (c->allow_dns)
            return needs_tap(reterr, "allow-dns", s->net);
        if (c->allow_all)
            return needs_tap(reterr, "allow-all", s->net);
        if (c->rate_limit_mbps)
            return needs_tap(reterr, "rate-limit-mbps", s->net);
    }
    if (c->disk_iops && !s->disk) {
        int r = err_make(reterr, VMCTL_E_CONFIG_INVALID, EINVAL,
                         "--disk-iops limits the VM's disk, and this VM has none (the default "
                         "guest runs from its initrd)");
        err_detail(reterr, "field", "disk-iops");
        err_detail_num(reterr, "value", c->disk_iops);
        err_help(reterr, "Give --image for a VM with a disk, or drop --disk-iops.");
        return r;
    }
    if (c->n_allow && !c->allow)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "n_allow without allow");
    size_t n = 0;
    for (size_t i = 0; i < c->n_allow; i++) {
        fw_allow a;
        int r = fw_allow_parse("allow", c->allow[i], &a, reterr);
        if (r < 0)
            return r;
        char buf[64];
        fw_allow_format(&a, buf, sizeof(buf));
        if (strv_push(&s->allow, &n, buf) < 0)
            return -ENOMEM;
    }
    s->allow_dns = c->allow_dns;
    s->allow_all = c->allow_all;
    s->rate_limit_mbps = c->rate_limit_mbps;
    s->disk_iops = c->disk_iops;
    if (tap) {
        /* the pool is checked at create, not only at the first lease */
        uint32_t pn;
        unsigned pp;
        int r = vmnet_pool(&pn, &pp, NULL, reterr);
        if (r < 0)
            return r;
    }
    return 0;
}

/* "vm-<up to 6 characters of the name>-<the link's number, 5 hex digits>": names carry the VM,
 * and the number (unique in the pool) keeps them unique; the MAC is the guest's address. */
static void lease_names(const char *vm, uint32_t subnet, char ifname[16], char mac[18])
{
    snprintf(ifname, 16, TAP_PREFIX "%.6s-%05x", vm, (subnet >> 2) & 0xfffff);
    uint32_t g = subnet + 2;
    snprintf(mac, 18, "52:54:%02x:%02x:%02x:%02x", g >> 24, (g >> 16) & 0xff, (g >> 8) & 0xff,
             g & 0xff);
}

int vmnet_lease(store *st, const char *name, store_lease *ret, vmctl_error **reterr)
{
    uint32_t pool;
    unsigned prefix;
    int r = vmnet_pool(&pool, &prefix, NULL, reterr);
    if (r < 0)
        return r;
    return store_lease_alloc(st, name, pool, prefix, VMNET_LINK_PREFIX, lease_names, ret, reterr);
}

/* The host's IPv4 resolvers (/etc/resolv.conf), loopback ones excepted: a guest cannot reach
 * those. */
static size_t host_resolvers(uint32_t dns[MAX_DNS])
{
    cleanup_fclose FILE *f = fopen("/etc/resolv.conf", "re");
    size_t n = 0;
    char line[256];
    while (f && n < MAX_DNS && fgets(line, sizeof(line), f)) {
        char addr[64];
        struct in_addr in;
        if (sscanf(line, " nameserver %63s", addr) == 1 && inet_pton(AF_INET, addr, &in) == 1 &&
            (ntohl(in.s_addr) >> 24) != 127)
            dns[n++] = ntohl(in.s_addr);
    }
    return n;
}

char *vmnet_cloudinit_config(const store_lease *l)
{
    char g[16], h[16], d[16];
    uint32_t dns[MAX_DNS];
    size_t n_dns = host_resolvers(dns);
    return str_printf("version: 2\n"
                      "ethernets:\n"
                      "  eth0:\n"
                      "    match:\n"
                      "      macaddress: \"%s\"\n"
                      "    set-name: eth0\n"
                      "    addresses: [\"%s/%u\"]\n"
                      "    routes: [{to: \"0.0.0.0/0\", via: \"%s\"}]\n"
                      "%s%s%s",
                      l->mac, tap_ip_str(vmnet_guest_ip(l), g), l->prefix,
                      tap_ip_str(vmnet_host_ip(l), h),
                      n_dns ? "    nameservers: {addresses: [\"" : "",
                      n_dns ? tap_ip_str(dns[0], d) : "", n_dns ? "\"]}\n" : "");
}

int vmnet_up(store *st, vm_spec *spec, vmctl_error **reterr)
{
    store_lease l = {};
    int r = store_lease_get(st, spec->name, &l, reterr);
    if (r < 0)
        return r;
    if (r == 0) {
        r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, ENOENT,
                     "vm '%s' has no address leased from the pool", spec->name);
        err_detail(reterr, "vm", "%s", spec->name);
        err_help(reterr, "Recreate the VM: `vmctl destroy %s`, then `vmctl create %s --net tap`.",
                 spec->name, spec->name);
        return r;
    }
    cleanup_close int fd = -1;
    uint32_t dns[MAX_DNS];
    size_t n_dns = host_resolvers(dns);
    fw_allow *allow = NULL;
    fw_forward *fwd = NULL;
    size_t n_allow = 0;
    for (char *const *a = spec->allow; a && *a; a++)
        n_allow++;
    if ((n_allow && !(allow = calloc(n_allow, sizeof(*allow)))) ||
        (spec->n_ports && !(fwd = calloc(spec->n_ports, sizeof(*fwd))))) {
        r = err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n_allow; i++)
        if ((r = fw_allow_parse("allow", spec->allow[i], &allow[i], reterr)) < 0)
            goto fail;
    for (size_t i = 0; i < spec->n_ports; i++)
        fwd[i] = (fw_forward){.host_port = spec->ports[i].host_port,
                              .guest_port = spec->ports[i].guest_port,
                              .proto = spec->ports[i].udp ? IPPROTO_UDP : IPPROTO_TCP};

    if ((r = tap_enable_forwarding(reterr)) < 0 || (r = tap_create(l.ifname, &fd, reterr)) < 0 ||
        (r = tap_configure(l.ifname, vmnet_host_ip(&l), l.prefix, reterr)) < 0 ||
        (spec->rate_limit_mbps && (r = tap_set_rate(l.ifname, spec->rate_limit_mbps, reterr)) < 0))
        goto fail;
    if (fd < 3) { /* QEMU gets it under the same number, never one of its stdio */
        int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (hi < 0) {
            r = setup_failed_errno(reterr, l.ifname);
            goto fail;
        }
        close(fd);
        fd = hi;
    }
    fw_vm fv = {
        .name = spec->name,
        .ifname = l.ifname,
        .guest_ip = vmnet_guest_ip(&l),
        .host_ip = vmnet_host_ip(&l),
        .allow_all = spec->allow_all,
        .allow_dns = spec->allow_dns,
        .dns = dns,
        .n_dns = n_dns,
        .allow = allow,
        .n_allow = n_allow,
        .fwd = fwd,
        .n_fwd = spec->n_ports,
    };
    if ((r = fw_vm_apply(&fv, reterr)) < 0)
        goto fail;

    /* Test hook: a guest that never learns its address (network::ip_discovery_timeout) */
    if (spec->kernel && !getenv("VMCTL_TEST_NO_GUEST_ADDRESS")) {
        char g[16], h[16], d[16];
        char *cmd = str_printf("%s%svmctl.net=%s/%u,%s%s%s", spec->cmdline ? spec->cmdline : "",
                               spec->cmdline ? " " : "", tap_ip_str(vmnet_guest_ip(&l), g),
                               l.prefix, tap_ip_str(vmnet_host_ip(&l), h), n_dns ? "," : "",
                               n_dns ? tap_ip_str(dns[0], d) : "");
        if (!cmd) {
            r = err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
            goto fail;
        }
        free(spec->cmdline);
        spec->cmdline = cmd;
    }
    free(spec->mac);
    spec->mac = TAKE_PTR(l.mac);
    spec->tap_fd = TAKE_FD(fd);
    free(allow);
    free(fwd);
    store_lease_clear(&l);
    return 0;

fail:
    (void)fw_vm_remove(spec->name, NULL);
    free(allow);
    free(fwd);
    r = err_prefix(reterr, r, "while setting up the network of vm '%s'", spec->name);
    store_lease_clear(&l);
    return r;
}

int vmnet_down(const char *name, vmctl_error **reterr)
{
    return fw_vm_remove(name, reterr);
}

int vmnet_wait_ip(store *st, const char *name, uint64_t deadline, bool (*alive)(void *userdata),
                  void *userdata, vmctl_error **reterr)
{
    store_lease l = {};
    int r = store_lease_get(st, name, &l, reterr);
    if (r <= 0)
        return r;
    uint64_t start = now_usec();
    r = tap_probe_guest(l.ifname, vmnet_host_ip(&l), vmnet_guest_ip(&l), deadline, alive, userdata);
    if (r == 0 || r == -ENODEV) {
        char g[16];
        r = err_make(reterr, VMCTL_E_NETWORK_IP_DISCOVERY_TIMEOUT, ETIMEDOUT,
                     "vm '%s' did not answer on its address %s within %.1f s", name,
                     tap_ip_str(vmnet_guest_ip(&l), g), (double)(now_usec() - start) / 1e6);
        err_detail(reterr, "vm", "%s", name);
        err_detail(reterr, "ip", "%s", g);
        err_detail(reterr, "device", "%s", l.ifname);
        err_help(reterr,
                 "The guest did not configure its address: the default guest reads vmctl.net= "
                 "from its kernel command line, disk images need cloud-init (network-config). "
                 "See `vmctl console %s` or `vmctl logs %s`.",
                 name, name);
    } else if (r == 1)
        r = 0;
    else if (r < 0 && r != -ECHILD)
        r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, -r,
                     "cannot probe the address of vm '%s' on '%s'", name, l.ifname);
    store_lease_clear(&l);
    return r;
}

void vmnet_release(store *st, const char *name, const char *net)
{
    podnet_down(net); /* --net netns:PATH: in that namespace; nothing else to do */
    if (podnet_path(net))
        return;
    store_lease l = {};
    if (store_lease_get(st, name, &l, NULL) > 0)
        (void)vmnet_down(name, NULL);
    store_lease_clear(&l);
}

int vmnet_info(store *st, const vm_spec *s, vmctl_vm_info *i)
{
    i->disk_iops = s->disk_iops; /* any VM with a disk */
    if (!streq(s->net, "tap"))
        return 0;
    i->allow_dns = s->allow_dns;
    i->allow_all = s->allow_all;
    i->rate_limit_mbps = s->rate_limit_mbps;
    if (s->allow && !(i->allow = strv_copy(s->allow)))
        return -ENOMEM;
    store_lease l = {};
    if (store_lease_get(st, s->name, &l, NULL) <= 0)
        return 0;
    char g[16], h[16];
    i->ip = str_printf("%s/%u", tap_ip_str(vmnet_guest_ip(&l), g), l.prefix);
    i->gateway = strdup(tap_ip_str(vmnet_host_ip(&l), h));
    i->mac = TAKE_PTR(l.mac);
    i->ifname = TAKE_PTR(l.ifname);
    store_lease_clear(&l);
    return i->ip && i->gateway ? 0 : -ENOMEM;
}

/* ---------- doctor: what belongs to no running VM ---------- */

static bool runs_with_lease(store *st, const char *name, const char *ifname)
{
    cleanup_store_vm store_vm *v = NULL;
    if (store_vm_get(st, name, &v, NULL) < 0 ||
        (v->state != VMCTL_VM_RUNNING && v->state != VMCTL_VM_PAUSED))
        return false;
    if (!ifname)
        return true;
    store_lease l = {};
    bool same = store_lease_get(st, name, &l, NULL) > 0 && streq(l.ifname, ifname);
    store_lease_clear(&l);
    return same;
}

static void list_add(char **list, const char *what, const char *a)
{
    char *n = *list ? str_printf("%s, %s %s", *list, what, a) : str_printf("%s %s", what, a);
    if (n) {
        free(*list);
        *list = n;
    }
}

/* A name lease_names() makes: "vm-", 1-6 characters, "-", 5 hex digits; and a TAP. */
static bool is_vmctl_tap(const char *ifname)
{
    size_t n = strlen(ifname);
    if (n < strlen(TAP_PREFIX) + 7 || n > 15 || ifname[n - 6] != '-')
        return false;
    for (size_t i = n - 5; i < n; i++)
        if (!strchr("0123456789abcdef", ifname[i]))
            return false;
    cleanup_free char *flags = str_printf("/sys/class/net/%s/tun_flags", ifname);
    return flags && access(flags, F_OK) == 0;
}

void vmnet_check(store *st, bool fix, vmctl_host_check *c)
{
    cleanup_free char *done = NULL, *left = NULL;
    size_t n_left = 0;
    store_lease *leases = NULL;
    size_t n_leases = 0;
    (void)store_lease_list(st, &leases, &n_leases, NULL);

    /* TAPs: a vmctl name that no running VM's lease has (a persistent one, made by hand or by
     * another tool: vmctl's own go with their last holder) */
    char **taps = NULL;
    size_t n_taps = 0;
    (void)tap_list(&taps, &n_taps);
    for (size_t i = 0; i < n_taps; i++) {
        if (!is_vmctl_tap(taps[i]))
            continue; /* someone else's "vm-..." device: not ours to judge */
        bool owned = false;
        for (size_t k = 0; k < n_leases && !owned; k++)
            owned = streq(leases[k].ifname, taps[i]) &&
                    runs_with_lease(st, leases[k].vm, leases[k].ifname);
        if (owned)
            continue;
        if (fix && tap_delete(taps[i], NULL) >= 0) {
            list_add(&done, "removed TAP", taps[i]);
        } else {
            list_add(&left, "TAP", taps[i]);
            n_left++;
        }
    }
    strv_free(taps);

    /* firewall rules of VMs that do not run (a start or a vmctl killed midway) */
    char **fw = NULL;
    size_t n_fw = 0;
    vmctl_error *e = NULL;
    int r = fw_list_vms(&fw, &n_fw, &e);
    for (size_t i = 0; r >= 0 && i < n_fw; i++) {
        if (runs_with_lease(st, fw[i], NULL))
            continue;
        if (fix && fw_vm_remove(fw[i], NULL) >= 0) {
            list_add(&done, "removed the firewall rules of", fw[i]);
        } else {
            list_add(&left, "the firewall rules of", fw[i]);
            n_left++;
        }
    }
    strv_free(fw);
    store_lease_list_free(leases, n_leases);

    c->name = strdup("vm network");
    if (r < 0 && n_leases) {
        c->status = VMCTL_CHECK_WARN;
        c->summary = str_printf("cannot read the firewall: %s", vmctl_error_get_message(e));
        c->help = strdup("Run vmctl as root (CAP_NET_ADMIN) to check the rules of --net tap VMs.");
    } else if (n_left) {
        c->status = VMCTL_CHECK_WARN;
        c->summary = str_printf("%zu network object%s of no running VM: %s", n_left,
                                n_left == 1 ? "" : "s", left);
        c->help = strdup("Run `vmctl doctor --fix` to remove them.");
    } else {
        c->status = VMCTL_CHECK_OK;
        c->summary = done ? strdup(done)
                          : strdup("every TAP and firewall rule of vmctl belongs to a running VM");
    }
    vmctl_error_free(e);
}

/* ---------- vmctl network show ---------- */

int vmctl_network_get(vmctl_ctx *ctx, vmctl_network_info **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    uint32_t pool;
    unsigned prefix;
    const char *text;
    int r = vmnet_pool(&pool, &prefix, &text, reterr);
    if (r < 0)
        return r;
    vmctl_network_info *i = calloc(1, sizeof(*i));
    if (!i)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    i->pool = strdup(text);
    i->mode = strdup("routed");
    i->link_prefix = VMNET_LINK_PREFIX;
    i->capacity = (size_t)1 << (VMNET_LINK_PREFIX - prefix);
    store_lease *leases = NULL;
    size_t n = 0;
    r = store_lease_list(ctx->store, &leases, &n, reterr);
    if (r < 0) {
        vmctl_network_info_free(i);
        return r;
    }
    i->leases = calloc(n + 1, sizeof(*i->leases));
    for (size_t k = 0; i->leases && k < n; k++) {
        char g[16], h[16];
        vmctl_network_lease *o = &i->leases[k];
        o->vm = TAKE_PTR(leases[k].vm);
        o->ifname = TAKE_PTR(leases[k].ifname);
        o->mac = TAKE_PTR(leases[k].mac);
        o->ip = str_printf("%s/%u", tap_ip_str(leases[k].subnet + 2, g), leases[k].prefix);
        o->gateway = strdup(tap_ip_str(leases[k].subnet + 1, h));
        o->link_up = tap_exists(o->ifname);
        i->n_leases++;
    }
    store_lease_list_free(leases, n);
    vmctl_error *e = NULL;
    if (fw_stats(&i->fw_rules, &i->fw_elements, &e) < 0)
        i->fw_error = strdup(vmctl_error_get_message(e));
    vmctl_error_free(e);
    char c = 0;
    cleanup_close int fd = open("/proc/sys/net/ipv4/ip_forward", O_RDONLY | O_CLOEXEC);
    i->forwarding = fd >= 0 && read(fd, &c, 1) == 1 && c == '1';
    if (!i->pool || !i->mode || !i->leases) {
        vmctl_network_info_free(i);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    *ret = i;
    return 0;
}

void vmctl_network_info_free(vmctl_network_info *i)
{
    if (!i)
        return;
    for (size_t k = 0; i->leases && k < i->n_leases; k++) {
        free(i->leases[k].vm);
        free(i->leases[k].ip);
        free(i->leases[k].gateway);
        free(i->leases[k].mac);
        free(i->leases[k].ifname);
    }
    free(i->leases);
    free(i->pool);
    free(i->mode);
    free(i->fw_error);
    free(i);
}
