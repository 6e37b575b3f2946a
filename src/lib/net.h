/* SPDX-License-Identifier: MIT */
/* User-mode networking: host ports for forwards. A port is taken when the store reserves it
 * (table `ports`, unique per port and protocol, committed with the VM's row) and, at create,
 * nothing else on the host has it bound. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <vmctl/error.h>

#include "store.h"
#include "vm-spec.h"

#define NET_SSH_GUEST_PORT 22

/* true when 127.0.0.1:port can be bound now (TCP or UDP). */
bool net_port_is_free(uint16_t port, bool udp);

/* For user networking: add the SSH forward (host 0 -> guest 22/tcp) unless the spec already
 * forwards guest port 22/tcp. Then give every forward with host_port 0 a free port (bound by
 * nothing, reserved by no VM) and check the explicit ones (network::setup_failed naming the
 * port and its holder). auto_ports (n_ports entries after the call, caller frees) marks the ports
 * chosen here, for net_repick after a lost reservation race. */
int net_prepare_ports(store *st, vm_spec *spec, bool **auto_ports, vmctl_error **reterr);
/* Choose new ports for the auto ones (another create reserved one of them first). */
int net_repick(store *st, vm_spec *spec, const bool *auto_ports, vmctl_error **reterr);

/* The host port forwarded to guest port 22/tcp, or 0. */
uint16_t net_ssh_port(const vm_spec *spec);
