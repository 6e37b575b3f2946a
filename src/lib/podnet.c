/* SPDX-License-Identifier: MIT */
/* `--net netns:PATH`: see podnet.h. Everything runs in a thread that entered the namespace
 * (setns(CLONE_NEWNET) moves only the calling thread): the TAP made there belongs to it, and the
 * netlink sockets tap.c opens are in it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/magic.h>
#include <sys/statfs.h>

#include "error.h"
#include "podnet.h"
#include "tap.h"
#include "util/util.h"

static int invalid(vmctl_error **reterr, const char *net, const char *why)
{
    int r =
        err_make(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, EINVAL, "invalid net '%s': %s", net, why);
    err_detail(reterr, "field", "net");
    err_detail(reterr, "value", "%s", net);
    err_help(reterr, "Give the network namespace as `netns:PATH` with an absolute PATH, e.g. "
                     "`--net netns:/var/run/netns/pod1` (`ip netns add pod1` makes one).");
    return r;
}

int podnet_check(const char *net, vmctl_error **reterr)
{
    const char *path = podnet_path(net);
    if (!path)
        return 0;
    if (path[0] != '/')
        return invalid(reterr, net, "the namespace path is not absolute");
    struct statfs sf;
    if (statfs(path, &sf) < 0) {
        int e = errno;
        int r = invalid(reterr, net, e == ENOENT ? "no such file" : strerror(e));
        err_cause(reterr, e);
        return r;
    }
    /* a namespace file: a bind mount of nsfs, or /proc/PID/ns/net (procfs before nsfs) */
    if (sf.f_type != NSFS_MAGIC && sf.f_type != PROC_SUPER_MAGIC)
        return invalid(reterr, net, "not a network namespace file (nsfs)");
    return 0;
}

struct uplink {
    char ifname[IF_NAMESIZE + 1];
    unsigned char mac[6];
    uint32_t ip, gateway; /* host order */
    unsigned prefix;
};

/* The interface of the namespace's IPv4 default route and its gateway, from the thread's own
 * view of /proc (/proc/self/net would be the process's namespace). */
static int default_route(struct uplink *u)
{
    FILE *f = fopen("/proc/thread-self/net/route", "re");
    if (!f)
        return -errno;
    char line[256];
    int r = -ENETUNREACH;
    while (fgets(line, sizeof(line), f)) {
        char ifname[IF_NAMESIZE + 1];
        unsigned dest, gw, flags;
        if (sscanf(line, "%16s %x %x %x", ifname, &dest, &gw, &flags) == 4 && dest == 0 &&
            (flags & 0x3) == 0x3 /* RTF_UP | RTF_GATEWAY */) {
            snprintf(u->ifname, sizeof(u->ifname), "%s", ifname);
            u->gateway = ntohl(gw);
            r = 0;
            break;
        }
    }
    fclose(f);
    return r;
}

static int uplink_find(struct uplink *u, vmctl_error **reterr, const char *path)
{
    int r = default_route(u);
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, -r,
                     "the network namespace '%s' has no IPv4 default route", path);
        err_detail(reterr, "netns", "%s", path);
        err_help(reterr, "The VM takes the namespace's uplink (the interface of its default "
                         "route): give the namespace an address and a default route first (its "
                         "CNI plugin does, for a pod).");
        return r;
    }
    struct ifaddrs *ifa = NULL;
    if (getifaddrs(&ifa) < 0)
        return err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, errno,
                        "cannot list the interfaces of the network namespace '%s'", path);
    bool have_ip = false, have_mac = false;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
        if (!i->ifa_addr || !streq(i->ifa_name, u->ifname))
            continue;
        if (i->ifa_addr->sa_family == AF_INET && !have_ip) {
            u->ip = ntohl(((struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr);
            uint32_t mask =
                i->ifa_netmask ? ntohl(((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr) : 0;
            u->prefix = (unsigned)__builtin_popcount(mask);
            have_ip = true;
        } else if (i->ifa_addr->sa_family == AF_PACKET && !have_mac) {
            const struct sockaddr_ll *ll = (const struct sockaddr_ll *)i->ifa_addr;
            if (ll->sll_halen == 6) {
                memcpy(u->mac, ll->sll_addr, 6);
                have_mac = true;
            }
        }
    }
    freeifaddrs(ifa);
    if (!have_ip || !have_mac) {
        r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRNOTAVAIL,
                     "the uplink '%s' of the network namespace '%s' has no %s", u->ifname, path,
                     have_mac ? "IPv4 address" : "Ethernet address");
        err_detail(reterr, "netns", "%s", path);
        err_detail(reterr, "device", "%s", u->ifname);
        return r;
    }
    return 0;
}

struct job {
    const char *path;
    bool up;
    /* up: */
    struct uplink u;
    int tap_fd;
    int r;
    vmctl_error *err;
};

static void *in_netns(void *userdata)
{
    struct job *j = userdata;
    cleanup_close int ns = open(j->path, O_RDONLY | O_CLOEXEC);
    if (ns < 0 || setns(ns, CLONE_NEWNET) < 0) {
        int e = errno;
        j->r = err_make(&j->err, VMCTL_E_NETWORK_SETUP_FAILED, e,
                        "cannot enter the network namespace '%s'", j->path);
        err_detail(&j->err, "netns", "%s", j->path);
        return NULL;
    }
    if (!j->up) {
        /* Our TAP went with our hypervisor's descriptor. One that exists is another VM's, which
         * has the namespace now (this one never took it, or lost it): its redirects stay. */
        if (!tap_exists(PODNET_TAP) && default_route(&j->u) == 0)
            tap_redirect_remove(j->u.ifname);
        j->r = 0;
        return NULL;
    }
    if ((j->r = uplink_find(&j->u, &j->err, j->path)) < 0)
        return NULL;
    /* the TAP is not persistent: it exists while a hypervisor holds it, so another VM has this
     * namespace's uplink (two VMs cannot both be the pod) */
    if (tap_exists(PODNET_TAP)) {
        j->r = err_make(&j->err, VMCTL_E_NETWORK_SETUP_FAILED, EBUSY,
                        "the network namespace '%s' is taken over by another VM already (its "
                        "TAP '%s' exists)",
                        j->path, PODNET_TAP);
        err_detail(&j->err, "netns", "%s", j->path);
        err_help(&j->err, "One VM per network namespace: stop the other VM, or give this one "
                          "a namespace of its own.");
        return NULL;
    }
    int fd = -1;
    if ((j->r = tap_create(PODNET_TAP, &fd, &j->err)) < 0)
        return NULL;
    if ((j->r = tap_link_up(PODNET_TAP, &j->err)) < 0 ||
        (j->r = tap_redirect(j->u.ifname, PODNET_TAP, &j->err)) < 0 ||
        (j->r = tap_redirect(PODNET_TAP, j->u.ifname, &j->err)) < 0) {
        tap_redirect_remove(j->u.ifname);
        close(fd);
        return NULL;
    }
    j->tap_fd = fd;
    return NULL;
}

static int run_in_netns(struct job *j)
{
    pthread_t t;
    int e = pthread_create(&t, NULL, in_netns, j);
    if (e != 0)
        return err_make(&j->err, VMCTL_E_NETWORK_SETUP_FAILED, e,
                        "cannot start a thread for the network namespace '%s'", j->path);
    pthread_join(t, NULL);
    return j->r;
}

int podnet_up(vm_spec *spec, vmctl_error **reterr)
{
    const char *path = podnet_path(spec->net);
    if (!path)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "podnet_up: not a netns network");
    struct job j = {.path = path, .up = true, .tap_fd = -1};
    int r = run_in_netns(&j);
    if (r < 0) {
        if (reterr) {
            vmctl_error_free(*reterr);
            *reterr = j.err;
        } else {
            vmctl_error_free(j.err);
        }
        return r < 0 ? r : -EIO;
    }
    cleanup_close int fd = j.tap_fd;
    if (fd < 3) { /* QEMU gets it under the same number, never one of its stdio */
        int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (hi < 0) {
            r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, errno,
                         "cannot move the TAP's descriptor");
            podnet_down(spec->net);
            return r;
        }
        close(fd);
        fd = hi;
    }
    char mac[18], ip[16], gw[16];
    snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", j.u.mac[0], j.u.mac[1], j.u.mac[2],
             j.u.mac[3], j.u.mac[4], j.u.mac[5]);
    if (spec->kernel) {
        char *cmd = str_printf("%s%svmctl.net=%s/%u,%s", spec->cmdline ? spec->cmdline : "",
                               spec->cmdline ? " " : "", tap_ip_str(j.u.ip, ip), j.u.prefix,
                               tap_ip_str(j.u.gateway, gw));
        if (!cmd) {
            podnet_down(spec->net);
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        }
        free(spec->cmdline);
        spec->cmdline = cmd;
    }
    free(spec->mac);
    if (!(spec->mac = strdup(mac))) {
        podnet_down(spec->net);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    spec->tap_fd = TAKE_FD(fd);
    return 0;
}

void podnet_down(const char *net)
{
    const char *path = podnet_path(net);
    if (!path)
        return;
    struct job j = {.path = path, .up = false, .tap_fd = -1};
    (void)run_in_netns(&j);
    vmctl_error_free(j.err);
}
