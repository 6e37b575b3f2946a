/* SPDX-License-Identifier: MIT */
/* `--net tap` for one VM (docs/networking.md): its options checked at create, its link leased
 * from the IP pool, and at start its TAP, address, rate limit and firewall (firewall.c); all of it
 * removed again when it stops, crashes or is destroyed. The pieces: tap.c (devices, netlink),
 * firewall.c (nftables), store.c (the pool's leases). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <vmctl/error.h>
#include <vmctl/host.h>
#include <vmctl/network.h>
#include <vmctl/vm.h>

#include "store.h"
#include "vm-spec.h"

/* Every VM gets a /30 of the pool: network, the host's end (the guest's gateway), the guest's
 * address, broadcast. */
#define VMNET_LINK_PREFIX  30
#define VMNET_DEFAULT_POOL "10.88.0.0/16"
#define VMNET_POOL_ENV     "VMCTL_NET_POOL"

/* The pool: $VMCTL_NET_POOL or VMNET_DEFAULT_POOL; network::config_invalid (field "pool") when
 * it is not a CIDR of /8 to /30. *ret_text: the text, borrowed. */
int vmnet_pool(uint32_t *ret_net, unsigned *ret_prefix, const char **ret_text,
               vmctl_error **reterr);

/* The network options of c into s (net decided already): allow-list texts validated
 * (fw_allow_parse) and stored in canonical form, the flags and limits; network::config_invalid
 * naming the field when an option does not fit the network mode or is malformed. Touches
 * nothing on the host. */
int vmnet_check_config(const vmctl_vm_config *c, vm_spec *s, vmctl_error **reterr);

/* The VM's lease (made when it has none): create, after the row is inserted. */
int vmnet_lease(store *st, const char *name, store_lease *ret, vmctl_error **reterr);

/* Addresses of a lease (host byte order). */
static inline uint32_t vmnet_host_ip(const store_lease *l)
{
    return l->subnet + 1;
}
static inline uint32_t vmnet_guest_ip(const store_lease *l)
{
    return l->subnet + 2;
}

/* cloud-init network-config (version 2) giving the NIC of MAC its static address (malloc'd). */
char *vmnet_cloudinit_config(const store_lease *l);

/* Before launch: the TAP (its descriptor in spec->tap_fd, the MAC in spec->mac), its address and
 * route, the rate limit and the firewall; for kernels vmctl boots, vmctl.net=ADDR/LEN,GW[,DNS] on
 * the command line. On failure everything done here is undone. The caller closes spec->tap_fd
 * once the hypervisor has it (the TAP lives as long as some process holds it). */
int vmnet_up(store *st, vm_spec *spec, vmctl_error **reterr);
/* After the VM ended (stop, crash, destroy, a failed start): its firewall rules go (the TAP went
 * with the last descriptor of it). Idempotent; errors are logged into *reterr only. */
int vmnet_down(const char *name, vmctl_error **reterr);

/* vmnet_down for a VM that has a lease (any other: nothing), errors ignored: stop, kill,
 * destroy, the reconcile of a crashed VM, a failed start. */
void vmnet_release(store *st, const char *name, const char *net);

/* The lease and the egress policy into the info (`vmctl status`); -ENOMEM. */
int vmnet_info(store *st, const vm_spec *s, vmctl_vm_info *i);

/* The guest answers ARP on its address before the deadline, else network::ip_discovery_timeout. */
int vmnet_wait_ip(store *st, const char *name, uint64_t deadline, bool (*alive)(void *userdata),
                  void *userdata, vmctl_error **reterr);

/* `vmctl doctor`'s "vm network": TAPs with vmctl's prefix and firewall rules of VMs that do not
 * run; with fix, removed. */
void vmnet_check(store *st, bool fix, vmctl_host_check *c);
