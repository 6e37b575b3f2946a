/* SPDX-License-Identifier: MIT */
/* The host side of `--net tap` (docs/networking.md): the VM's TAP device, its address, its qdisc
 * and the check that the guest answers on its address. Raw rtnetlink and ioctls: no `ip` or `tc`
 * subprocess, no library. Every function works in the network namespace of the calling thread.
 *
 * The TAP is not persistent: it exists while a descriptor of it is open (vmctl's during start,
 * then QEMU's), so a QEMU that dies, however, takes its TAP, the TAP's address and route and its
 * qdisc with it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>

/* Names vmctl gives its TAPs start with this (doctor lists them). */
#define TAP_PREFIX "vm-"

/* Open /dev/net/tun and create TAP ifname on it (IFF_TAP | IFF_NO_PI): *ret_fd (O_CLOEXEC)
 * holds it. network::setup_failed naming the device: EBUSY when another process holds a TAP of
 * that name (a stray QEMU), EPERM without CAP_NET_ADMIN. */
int tap_create(const char *ifname, int *ret_fd, vmctl_error **reterr);
/* host_ip/prefix (host byte order) on ifname, replaced when there (idempotent), and the link up:
 * the kernel then routes the prefix to the TAP. */
int tap_configure(const char *ifname, uint32_t host_ip, unsigned prefix, vmctl_error **reterr);
/* A tbf qdisc at the root of ifname capping what the host sends to the guest at mbps
 * (megabits/s); replaces one there. */
int tap_set_rate(const char *ifname, unsigned mbps, vmctl_error **reterr);
/* net.ipv4.ip_forward = 1 when it is 0 (routing to the TAPs needs it). */
int tap_enable_forwarding(vmctl_error **reterr);
/* Whether a link of that name exists. */
bool tap_exists(const char *ifname);
/* Links whose name starts with TAP_PREFIX (malloc'd strings). */
int tap_list(char ***ret, size_t *n);
/* Remove link ifname; 0 when there is none. */
int tap_delete(const char *ifname, vmctl_error **reterr);
/* ARP for guest_ip on ifname from host_ip until it answers (1), the deadline passes (0), or
 * alive() says the VM is gone (-ECHILD). Independent of any firewall (ARP is not IP). */
int tap_probe_guest(const char *ifname, uint32_t host_ip, uint32_t guest_ip, uint64_t deadline,
                    bool (*alive)(void *userdata), void *userdata);
/* "a.b.c.d" of a host-byte-order address into buf (16 bytes). */
const char *tap_ip_str(uint32_t ip, char buf[static 16]);
/* "a.b.c.d/len" -> network (host order), prefix; -EINVAL when not one (host bits set too). */
int tap_parse_cidr(const char *s, uint32_t *ret_net, unsigned *ret_prefix);

/* Bring ifname up. */
int tap_link_up(const char *ifname, vmctl_error **reterr);
/* Every frame arriving on `from` leaves by `to` (an ingress qdisc and a matchall filter with a
 * mirred egress redirect on `from`, replacing one there already). In the calling thread's
 * network namespace, as every function here. */
int tap_redirect(const char *from, const char *to, vmctl_error **reterr);
/* The ingress qdisc of `from` (with its redirect) removed, if any. */
void tap_redirect_remove(const char *from);
