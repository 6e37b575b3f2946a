/* SPDX-License-Identifier: MIT */
/* Host networking of `--net tap` VMs (docs/networking.md): the address pool and its leases. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmctl_network_lease {
    char *vm;
    char *ip;      /* the guest's, "10.88.0.2/30" */
    char *gateway; /* the host's end of the link */
    char *mac;
    char *ifname; /* the TAP on the host */
    bool link_up; /* the TAP exists now (the VM runs) */
} vmctl_network_lease;

typedef struct vmctl_network_info {
    char *pool;           /* "10.88.0.0/16" ($VMCTL_NET_POOL) */
    char *mode;           /* "routed": one link per VM, no bridge */
    unsigned link_prefix; /* 30 */
    size_t capacity;      /* links in the pool */
    vmctl_network_lease *leases;
    size_t n_leases;
    bool forwarding;              /* net.ipv4.ip_forward is on */
    size_t fw_rules, fw_elements; /* of vmctl's nftables table */
    char *fw_error;               /* why they could not be read, or NULL */
} vmctl_network_info;

int vmctl_network_get(vmctl_ctx *ctx, vmctl_network_info **ret, vmctl_error **reterr);
void vmctl_network_info_free(vmctl_network_info *info);

#ifdef __cplusplus
}
#endif
