/* SPDX-License-Identifier: MIT */
/* TAP devices, addresses, tbf qdiscs and the guest's ARP answer. See tap.h.
 *
 * Netlink here is one request and its acknowledgement at a time on a fresh NETLINK_ROUTE socket:
 * a few messages per VM start, so no library (libnl-route-3 would be one more shared object
 * mapped by every `vmctl` command, docs/architecture.md "Libraries loaded on first use"). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/pkt_cls.h>
#include <linux/pkt_sched.h>
#include <linux/rtnetlink.h>
#include <linux/tc_act/tc_mirred.h>

#include "error.h"
#include "tap.h"
#include "util/util.h"

const char *tap_ip_str(uint32_t ip, char buf[static 16])
{
    snprintf(buf, 16, "%u.%u.%u.%u", ip >> 24, (ip >> 16) & 0xff, (ip >> 8) & 0xff, ip & 0xff);
    return buf;
}

int tap_parse_cidr(const char *s, uint32_t *ret_net, unsigned *ret_prefix)
{
    if (!s)
        return -EINVAL;
    const char *slash = strchr(s, '/');
    if (!slash || slash - s > 15 || !slash[1] || strlen(slash + 1) > 2)
        return -EINVAL;
    char a[16];
    memcpy(a, s, (size_t)(slash - s));
    a[slash - s] = 0;
    struct in_addr in;
    if (inet_pton(AF_INET, a, &in) != 1)
        return -EINVAL;
    unsigned prefix = 0;
    for (const char *p = slash + 1; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        prefix = prefix * 10 + (unsigned)(*p - '0');
    }
    if (prefix > 32)
        return -EINVAL;
    uint32_t net = ntohl(in.s_addr);
    uint32_t mask = prefix ? ~0u << (32 - prefix) : 0;
    if (net & ~mask)
        return -EINVAL;
    *ret_net = net;
    *ret_prefix = prefix;
    return 0;
}

static int setup_failed(vmctl_error **reterr, int e, const char *ifname, const char *what)
{
    int r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, e, "cannot %s of TAP '%s': %s", what,
                     ifname, strerror(e));
    err_detail(reterr, "device", "%s", ifname);
    return r;
}

int tap_create(const char *ifname, int *ret_fd, vmctl_error **reterr)
{
    if (strlen(ifname) >= IFNAMSIZ)
        return setup_failed(reterr, ENAMETOOLONG, ifname, "create the device");
    cleanup_close int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int r = setup_failed(reterr, errno, ifname, "open /dev/net/tun for the device");
        err_help(reterr, "Load the tun module (`modprobe tun`) and run vmctl with CAP_NET_ADMIN, "
                         "or use `--net user`.");
        return r;
    }
    struct ifreq ifr = {.ifr_flags = IFF_TAP | IFF_NO_PI};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
        int e = errno;
        int r = setup_failed(reterr, e, ifname, "create the device");
        if (e == EBUSY)
            err_help(reterr, "Another process holds a TAP of that name: `vmctl doctor` shows "
                             "hypervisors the store does not know, `vmctl doctor --fix` stops "
                             "them.");
        else if (e == EPERM)
            err_help(reterr, "TAP networking needs CAP_NET_ADMIN: run vmctl as root, or use "
                             "`--net user`.");
        return r;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

/* --- rtnetlink: one request, one acknowledgement --- */

struct nlreq {
    union {
        struct nlmsghdr h;
        char buf[512];
    };
};

static void *nl_tail(struct nlreq *q)
{
    return q->buf + NLMSG_ALIGN(q->h.nlmsg_len);
}

static struct rtattr *nl_attr(struct nlreq *q, unsigned short type, const void *data, size_t len)
{
    struct rtattr *a = nl_tail(q);
    a->rta_type = type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len)
        memcpy(RTA_DATA(a), data, len);
    q->h.nlmsg_len = NLMSG_ALIGN(q->h.nlmsg_len) + RTA_ALIGN(a->rta_len);
    return a;
}

static void nl_nest_end(struct nlreq *q, struct rtattr *nest)
{
    nest->rta_len = (unsigned short)((char *)nl_tail(q) - (char *)nest);
}

/* 0 or the kernel's negative errno. */
static int nl_talk(struct nlreq *q)
{
    cleanup_close int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -errno;
    q->h.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
    q->h.nlmsg_seq = 1;
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(fd, q, q->h.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -errno;
    for (;;) {
        char buf[4096];
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int k = poll(&p, 1, 5000);
        if (k == 0)
            return -ETIMEDOUT;
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != 1)
                continue;
            if (h->nlmsg_type == NLMSG_ERROR) {
                const struct nlmsgerr *e = NLMSG_DATA(h);
                return e->error;
            }
            if (h->nlmsg_type == NLMSG_DONE)
                return 0;
        }
    }
}

static int ifindex_of(const char *ifname, vmctl_error **reterr, const char *what)
{
    unsigned idx = if_nametoindex(ifname);
    if (idx == 0)
        return setup_failed(reterr, errno ? errno : ENODEV, ifname, what);
    return (int)idx;
}

int tap_link_up(const char *ifname, vmctl_error **reterr)
{
    int idx = ifindex_of(ifname, reterr, "bring up the link");
    if (idx < 0)
        return idx;
    struct nlreq l = {
        .h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)), .nlmsg_type = RTM_NEWLINK}};
    struct ifinfomsg *ifi = NLMSG_DATA(&l.h);
    *ifi = (struct ifinfomsg){
        .ifi_family = AF_UNSPEC, .ifi_index = idx, .ifi_flags = IFF_UP, .ifi_change = IFF_UP};
    int r = nl_talk(&l);
    if (r < 0)
        return setup_failed(reterr, -r, ifname, "bring up the link");
    return 0;
}

int tap_configure(const char *ifname, uint32_t host_ip, unsigned prefix, vmctl_error **reterr)
{
    int idx = ifindex_of(ifname, reterr, "set the address");
    if (idx < 0)
        return idx;

    struct nlreq q = {.h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifaddrmsg)),
                            .nlmsg_type = RTM_NEWADDR,
                            .nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE}};
    struct ifaddrmsg *ifa = NLMSG_DATA(&q.h);
    *ifa = (struct ifaddrmsg){.ifa_family = AF_INET,
                              .ifa_prefixlen = (unsigned char)prefix,
                              .ifa_scope = RT_SCOPE_UNIVERSE,
                              .ifa_index = (unsigned)idx};
    uint32_t a = htonl(host_ip);
    nl_attr(&q, IFA_LOCAL, &a, 4);
    nl_attr(&q, IFA_ADDRESS, &a, 4);
    int r = nl_talk(&q);
    if (r < 0)
        return setup_failed(reterr, -r, ifname, "set the address");
    return tap_link_up(ifname, reterr);
}

int tap_set_rate(const char *ifname, unsigned mbps, vmctl_error **reterr)
{
    int idx = ifindex_of(ifname, reterr, "set the rate limit");
    if (idx < 0)
        return idx;
    uint64_t bps = (uint64_t)mbps * 1000000 / 8; /* bytes per second */
    /* a burst of 10 ms at the rate (at least 32 KiB: a few full frames), a queue of 50 ms more */
    uint32_t burst = (uint32_t)(bps / 100 > 32768 ? bps / 100 : 32768);
    uint64_t limit = burst + bps / 20;

    struct nlreq q = {.h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg)),
                            .nlmsg_type = RTM_NEWQDISC,
                            .nlmsg_flags = NLM_F_CREATE | NLM_F_REPLACE}};
    struct tcmsg *tc = NLMSG_DATA(&q.h);
    *tc = (struct tcmsg){.tcm_family = AF_UNSPEC,
                         .tcm_ifindex = idx,
                         .tcm_handle = 1u << 16,
                         .tcm_parent = TC_H_ROOT};
    nl_attr(&q, TCA_KIND, "tbf", 4);
    struct rtattr *opts = nl_attr(&q, TCA_OPTIONS, NULL, 0);
    struct tc_tbf_qopt qopt = {
        .rate = {.linklayer = TC_LINKLAYER_ETHERNET,
                 .rate = bps > UINT32_MAX ? UINT32_MAX : (uint32_t)bps},
        .limit = limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit,
    };
    nl_attr(&q, TCA_TBF_PARMS, &qopt, sizeof(qopt));
    if (bps > UINT32_MAX)
        nl_attr(&q, TCA_TBF_RATE64, &bps, sizeof(bps));
    nl_attr(&q, TCA_TBF_BURST, &burst, sizeof(burst));
    nl_nest_end(&q, opts);
    int r = nl_talk(&q);
    if (r < 0)
        return setup_failed(reterr, -r, ifname, "set the rate limit (tbf qdisc)");
    return 0;
}

int tap_enable_forwarding(vmctl_error **reterr)
{
    static const char path[] = "/proc/sys/net/ipv4/ip_forward";
    cleanup_close int fd = open(path, O_RDWR | O_CLOEXEC);
    char c = 0;
    if (fd >= 0 && pread(fd, &c, 1, 0) == 1 && c == '1')
        return 0;
    if (fd < 0 || pwrite(fd, "1\n", 2, 0) != 2) {
        int r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, errno ? errno : EIO,
                         "cannot enable IPv4 forwarding ('%s')", path);
        err_detail(reterr, "path", "%s", path);
        err_help(reterr, "TAP networking needs root (CAP_NET_ADMIN): run vmctl as root, or set "
                         "net.ipv4.ip_forward=1 yourself, or use `--net user`.");
        return r;
    }
    return 0;
}

bool tap_exists(const char *ifname)
{
    return if_nametoindex(ifname) != 0;
}

int tap_list(char ***ret, size_t *n)
{
    *ret = NULL;
    *n = 0;
    struct if_nameindex *ni = if_nameindex();
    if (!ni)
        return -errno;
    int r = 0;
    for (struct if_nameindex *i = ni; i->if_index && r >= 0; i++)
        if (strncmp(i->if_name, TAP_PREFIX, strlen(TAP_PREFIX)) == 0)
            r = strv_push(ret, n, i->if_name);
    if_freenameindex(ni);
    return r;
}

int tap_delete(const char *ifname, vmctl_error **reterr)
{
    unsigned idx = if_nametoindex(ifname);
    if (idx == 0)
        return 0;
    struct nlreq q = {
        .h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg)), .nlmsg_type = RTM_DELLINK}};
    struct ifinfomsg *ifi = NLMSG_DATA(&q.h);
    *ifi = (struct ifinfomsg){.ifi_family = AF_UNSPEC, .ifi_index = (int)idx};
    int r = nl_talk(&q);
    if (r < 0 && r != -ENODEV)
        return setup_failed(reterr, -r, ifname, "remove the device");
    return 0;
}

/* --- a TAP joined to another link by tc redirects (podnet.c) --- */

static int ingress_qdisc(int idx, bool add)
{
    struct nlreq q = {.h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg)),
                            .nlmsg_type = add ? RTM_NEWQDISC : RTM_DELQDISC,
                            .nlmsg_flags = add ? NLM_F_CREATE | NLM_F_EXCL : 0}};
    struct tcmsg *tc = NLMSG_DATA(&q.h);
    *tc = (struct tcmsg){.tcm_family = AF_UNSPEC,
                         .tcm_ifindex = idx,
                         .tcm_handle = TC_H_MAKE(TC_H_INGRESS, 0),
                         .tcm_parent = TC_H_INGRESS};
    nl_attr(&q, TCA_KIND, "ingress", sizeof("ingress"));
    return nl_talk(&q);
}

int tap_redirect(const char *from, const char *to, vmctl_error **reterr)
{
    int fi = ifindex_of(from, reterr, "redirect the traffic");
    if (fi < 0)
        return fi;
    int ti = ifindex_of(to, reterr, "redirect the traffic");
    if (ti < 0)
        return ti;
    (void)ingress_qdisc(fi, false); /* an earlier start's, whose target is gone */
    int r = ingress_qdisc(fi, true);
    if (r < 0)
        return setup_failed(reterr, -r, from, "add the ingress qdisc");
    /* u32 with one key that matches everything (matchall is not in every kernel; u32 is where
     * tc is): every frame arriving on `from` leaves by `to`, before `from`'s own stack */
    struct nlreq q = {.h = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct tcmsg)),
                            .nlmsg_type = RTM_NEWTFILTER,
                            .nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL}};
    struct tcmsg *tc = NLMSG_DATA(&q.h);
    *tc = (struct tcmsg){.tcm_family = AF_UNSPEC,
                         .tcm_ifindex = fi,
                         .tcm_parent = TC_H_MAKE(TC_H_INGRESS, 0),
                         .tcm_info = TC_H_MAKE(1u << 16, htons(ETH_P_ALL))};
    nl_attr(&q, TCA_KIND, "u32", sizeof("u32"));
    struct rtattr *opts = nl_attr(&q, TCA_OPTIONS, NULL, 0);
    struct {
        struct tc_u32_sel sel;
        struct tc_u32_key key;
    } sel = {.sel = {.flags = TC_U32_TERMINAL, .nkeys = 1}, .key = {.mask = 0, .val = 0}};
    nl_attr(&q, TCA_U32_SEL, &sel, sizeof(sel));
    struct rtattr *acts = nl_attr(&q, TCA_U32_ACT, NULL, 0);
    struct rtattr *act = nl_attr(&q, 1, NULL, 0); /* the first action */
    nl_attr(&q, TCA_ACT_KIND, "mirred", sizeof("mirred"));
    struct rtattr *aopts = nl_attr(&q, TCA_ACT_OPTIONS, NULL, 0);
    struct tc_mirred m = {.action = TC_ACT_STOLEN, .eaction = TCA_EGRESS_REDIR, .ifindex = ti};
    nl_attr(&q, TCA_MIRRED_PARMS, &m, sizeof(m));
    nl_nest_end(&q, aopts);
    nl_nest_end(&q, act);
    nl_nest_end(&q, acts);
    nl_nest_end(&q, opts);
    r = nl_talk(&q);
    if (r < 0)
        return setup_failed(reterr, -r, from, "add the redirect filter");
    return 0;
}

void tap_redirect_remove(const char *from)
{
    unsigned idx = if_nametoindex(from);
    if (idx)
        (void)ingress_qdisc((int)idx, false);
}

/* --- the guest's ARP answer --- */

struct arp_ip4 {
    struct arphdr h;
    unsigned char sha[6], spa[4], tha[6], tpa[4];
} __attribute__((packed));

int tap_probe_guest(const char *ifname, uint32_t host_ip, uint32_t guest_ip, uint64_t deadline,
                    bool (*alive)(void *userdata), void *userdata)
{
    unsigned idx = if_nametoindex(ifname);
    if (idx == 0)
        return -ENODEV;
    cleanup_close int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
    if (fd < 0)
        return -errno;
    struct ifreq ifr = {};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0)
        return -errno;
    struct sockaddr_ll sll = {
        .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ARP), .sll_ifindex = (int)idx};
    if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0)
        return -errno;
    struct arp_ip4 req = {.h = {.ar_hrd = htons(ARPHRD_ETHER),
                                .ar_pro = htons(ETH_P_IP),
                                .ar_hln = 6,
                                .ar_pln = 4,
                                .ar_op = htons(ARPOP_REQUEST)}};
    memcpy(req.sha, ifr.ifr_hwaddr.sa_data, 6);
    uint32_t hs = htonl(host_ip), gs = htonl(guest_ip);
    memcpy(req.spa, &hs, 4);
    memcpy(req.tpa, &gs, 4);
    struct sockaddr_ll to = sll;
    to.sll_halen = 6;
    memset(to.sll_addr, 0xff, 6);

    uint64_t next_send = 0;
    for (;;) {
        uint64_t now = now_usec();
        if (now >= deadline)
            return 0;
        if (alive && !alive(userdata))
            return -ECHILD;
        if (now >= next_send) {
            (void)sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&to, sizeof(to));
            next_send = now + 200000;
        }
        uint64_t wait = (next_send < deadline ? next_send : deadline) - now;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int k = poll(&p, 1, (int)(wait / 1000) + 1);
        if (k <= 0)
            continue;
        struct arp_ip4 rep;
        ssize_t n = recv(fd, &rep, sizeof(rep), MSG_DONTWAIT);
        if (n >= (ssize_t)sizeof(rep) && rep.h.ar_op == htons(ARPOP_REPLY) &&
            memcmp(rep.spa, &gs, 4) == 0)
            return 1;
    }
}
