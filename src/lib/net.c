/* SPDX-License-Identifier: MIT */
/* Host ports for user-mode forwards. See net.h.
 *
 * Choosing: bind 127.0.0.1:0 and let the kernel pick, then skip ports the store has reserved
 * (a stopped VM holds its ports without binding them). Two creates can still pick the same port
 * in the same instant; the store's primary key on (host_port, proto) lets only one commit, and
 * the loser picks again (net_repick). */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error.h"
#include "net.h"
#include "util/util.h"

#define PICK_ATTEMPTS 64

static int bind_loopback(uint16_t port, bool udp, uint16_t *ret)
{
    cleanup_close int fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -errno;
    if (ret) {
        if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
            return -errno;
        *ret = ntohs(sa.sin_port);
    }
    return 0;
}

bool net_port_is_free(uint16_t port, bool udp)
{
    return port != 0 && bind_loopback(port, udp, NULL) == 0;
}

static int pick(store *st, bool udp, const vm_spec *spec, size_t upto, uint16_t *ret,
                vmctl_error **reterr)
{
    for (int i = 0; i < PICK_ATTEMPTS; i++) {
        uint16_t p = 0;
        int r = bind_loopback(0, udp, &p);
        if (r < 0)
            return err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, -r,
                            "cannot find a free host port on 127.0.0.1");
        bool dup = false; /* the same VM must not use one port twice either */
        for (size_t k = 0; k < upto; k++)
            if (spec->ports[k].host_port == p && spec->ports[k].udp == udp)
                dup = true;
        if (dup)
            continue;
        cleanup_free char *owner = NULL;
        r = store_port_owner(st, p, udp, &owner, reterr);
        if (r < 0)
            return r;
        if (r == 0) {
            *ret = p;
            return 0;
        }
    }
    return err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRINUSE,
                    "no free host port found in %d attempts", PICK_ATTEMPTS);
}

uint16_t net_ssh_port(const vm_spec *spec)
{
    for (size_t i = 0; spec && i < spec->n_ports; i++)
        if (spec->ports[i].guest_port == NET_SSH_GUEST_PORT && !spec->ports[i].udp)
            return spec->ports[i].host_port;
    return 0;
}

int net_prepare_ports(store *st, vm_spec *spec, bool **auto_ports, vmctl_error **reterr)
{
    *auto_ports = NULL;
    if (!spec->net || (!streq(spec->net, "user") && !streq(spec->net, "tap")))
        return 0;
    bool has_ssh = !streq(spec->net, "user"); /* tap: SSH goes to the guest's address */
    for (size_t i = 0; i < spec->n_ports; i++)
        if (spec->ports[i].guest_port == NET_SSH_GUEST_PORT && !spec->ports[i].udp)
            has_ssh = true;
    if (!has_ssh) {
        vmctl_port_forward *np = realloc(spec->ports, (spec->n_ports + 1) * sizeof(*np));
        if (!np)
            return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
        np[spec->n_ports++] = (vmctl_port_forward){.guest_port = NET_SSH_GUEST_PORT};
        spec->ports = np;
    }
    cleanup_free bool *autos = calloc(spec->n_ports, sizeof(bool));
    if (!autos)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < spec->n_ports; i++) {
        vmctl_port_forward *p = &spec->ports[i];
        const char *proto = p->udp ? "udp" : "tcp";
        if (p->host_port == 0) {
            autos[i] = true;
            continue;
        }
        for (size_t k = 0; k < i; k++)
            if (spec->ports[k].host_port == p->host_port && spec->ports[k].udp == p->udp) {
                int r = err_make(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, EINVAL,
                                 "host port %u/%s is forwarded twice", p->host_port, proto);
                err_detail(reterr, "field", "port");
                err_detail_num(reterr, "port", p->host_port);
                return r;
            }
        cleanup_free char *owner = NULL;
        int r = store_port_owner(st, p->host_port, p->udp, &owner, reterr);
        if (r < 0)
            return r;
        if (r > 0 || !net_port_is_free(p->host_port, p->udp)) {
            r = err_make(reterr, VMCTL_E_NETWORK_SETUP_FAILED, EADDRINUSE,
                         "host port %u/%s is already %s", p->host_port, proto,
                         owner ? "reserved by another VM" : "in use on this host");
            err_detail_num(reterr, "port", p->host_port);
            err_detail(reterr, "protocol", "%s", proto);
            if (owner)
                err_detail(reterr, "holder", "%s", owner);
            err_help(reterr,
                     "Choose another host port, or 0 (`--port 0:%u`) to let vmctl pick "
                     "a free one.",
                     p->guest_port);
            return r;
        }
    }
    int r = net_repick(st, spec, autos, reterr);
    if (r < 0)
        return r;
    *auto_ports = TAKE_PTR(autos);
    return 0;
}

int net_repick(store *st, vm_spec *spec, const bool *auto_ports, vmctl_error **reterr)
{
    for (size_t i = 0; auto_ports && i < spec->n_ports; i++) {
        if (!auto_ports[i])
            continue;
        spec->ports[i].host_port = 0;
        int r =
            pick(st, spec->ports[i].udp, spec, spec->n_ports, &spec->ports[i].host_port, reterr);
        if (r < 0)
            return r;
    }
    return 0;
}
