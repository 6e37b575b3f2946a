/* SPDX-License-Identifier: MIT */
/* The host firewall of TAP VMs: nftables through libnftables (loaded on first use, dl.h), one
 * table `inet vmctl`. Library-internal, not installed. The interface agreed between net-tap (which
 * calls it) and net-fw (which implements it); docs/networking.md "Firewall" describes the rules.
 *
 * Every function works in the network namespace of the calling thread, so a test that runs under
 * `ip netns exec NS` gets its rules in NS only. Nothing here touches netfilter before every input
 * has been validated: a bad allow entry, forward, name or interface is network::config_invalid and
 * nothing is created. A netfilter failure is network::firewall_failed with libnftables' message as
 * a note; a host without libnftables.so.1 is host::missing_dependency naming libnftables1.
 *
 * Call fw_vm_apply before the VM's TAP carries traffic (before QEMU gets the descriptor): a TAP
 * the table does not know yet is not filtered. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>

/* One allow entry: "CIDR[:PORT[-PORT][/tcp|udp]]", IPv4. port_lo == 0: every port. proto 0: both.
 */
typedef struct fw_allow {
    uint32_t addr;  /* network, host byte order */
    uint8_t prefix; /* 0..32 */
    uint16_t port_lo, port_hi;
    uint8_t proto; /* 0, IPPROTO_TCP or IPPROTO_UDP */
} fw_allow;

typedef struct fw_forward { /* host port -> guest port, DNAT from the host */
    uint16_t host_port, guest_port;
    uint8_t proto; /* IPPROTO_TCP or IPPROTO_UDP */
} fw_forward;

typedef struct fw_vm {
    const char *name;   /* VM name: every object vmctl creates carries it */
    const char *ifname; /* the VM's TAP on the host */
    uint32_t guest_ip;  /* host byte order */
    uint32_t host_ip;   /* the host's address on that link (the guest's gateway) */
    const char *uplink; /* NULL: masquerade out through whatever the route picks */
    bool allow_all, allow_dns;
    const uint32_t *dns; /* resolvers allowed by allow_dns (udp+tcp 53); n_dns 0: any resolver */
    size_t n_dns;
    const fw_allow *allow;
    size_t n_allow;
    const fw_forward *fwd;
    size_t n_fwd;
} fw_vm;

/* The longest canonical text of an allow entry, with its NUL ("255.255.255.255/32:65535-65535/udp")
 */
#define FW_ALLOW_TEXT_MAX 40

/* Parse and validate one --allow text: network::config_invalid naming field (e.g. "allow") and
 * the bad part; never touches netfilter. A CIDR with host bits set ("10.0.0.1/8") is refused
 * (the message names the network it probably means). */
int fw_allow_parse(const char *field, const char *text, fw_allow *ret, vmctl_error **reterr);
/* Format back (canonical text) into buf: always with the prefix ("203.0.113.7/32:443/tcp"). */
void fw_allow_format(const fw_allow *a, char *buf, size_t size);
/* Validate a whole VM (name, interface, addresses, every allow entry and forward) as
 * fw_vm_apply does before its first netfilter call; network::config_invalid naming the field. */
int fw_vm_validate(const fw_vm *vm, vmctl_error **reterr);
/* Install (or replace, atomically: one libnftables transaction) the VM's rules: egress
 * default-deny with its allow-list, established/related back, private ranges and 169.254.0.0/16
 * denied unless allowed explicitly, VM-to-VM and VM-to-host denied (input path too, except what
 * the VM needs from the host: e.g. nothing, or DHCP/DNS when allowed), masquerade, DNAT forwards.
 * network::firewall_failed with libnftables' message as a note. */
int fw_vm_apply(const fw_vm *vm, vmctl_error **reterr);
/* Remove everything of VM name; 0 when there was nothing (idempotent). */
int fw_vm_remove(const char *name, vmctl_error **reterr);
/* The VM names that have rules installed now (for doctor / reconcile to remove orphans).
 * *ret: malloc'd array of malloc'd strings. */
int fw_list_vms(char ***ret, size_t *n, vmctl_error **reterr);
/* Rule / set element counts of the vmctl table (for `network show`, benchmarks); 0 and 0 when the
 * table does not exist. Elements count named sets and maps and the anonymous sets inside rules. */
int fw_stats(size_t *ret_rules, size_t *ret_elements, vmctl_error **reterr);
/* Delete the whole vmctl table (every VM's rules too); 0 when there was none. For tests and for
 * `doctor --fix` on a host with no TAP VM left. */
int fw_table_remove(vmctl_error **reterr);
