/* SPDX-License-Identifier: MIT */
/* `--net netns:PATH`: the VM takes over the network of an existing network namespace (a
 * Kubernetes pod's, made by its CNI plugin; docs/networking.md "A pod's network namespace"). In
 * that namespace vmctl makes a TAP and joins it to the namespace's uplink (the interface of its
 * default route) by two tc redirects (ingress of each to egress of the other, as Kata's
 * tcfilter model); the guest gets the uplink's MAC, address, prefix and gateway, so to the
 * network it is the pod. Nothing is made in the host's namespace: no lease, no firewall (the
 * pod's network policy is the CNI's). */
#pragma once

#include <stdbool.h>
#include <string.h>

#include <vmctl/error.h>

#include "vm-spec.h"

#define PODNET_PREFIX "netns:"
#define PODNET_TAP    "vmctl0"

/* The namespace path of a net value "netns:PATH", or NULL for every other value (inline: the
 * VMFile checker uses it without the rest). */
static inline const char *podnet_path(const char *net)
{
    return net && strncmp(net, PODNET_PREFIX, sizeof(PODNET_PREFIX) - 1) == 0
               ? net + sizeof(PODNET_PREFIX) - 1
               : NULL;
}

/* Whether net is a valid "netns:PATH": an absolute path to a network namespace file (checked
 * at create: network::config_invalid naming the field "net"). */
int podnet_check(const char *net, vmctl_error **reterr);

/* At start: the TAP in the namespace (spec->tap_fd, numbered 3 or more), the redirects, the
 * guest's MAC (spec->mac) and its address on the kernel command line (vmctl.net=). The guest's
 * address must be on the uplink: network::setup_failed naming what is missing otherwise. */
int podnet_up(vm_spec *spec, vmctl_error **reterr);

/* At stop, crash and destroy (the hypervisor gone, and with it its TAP): the uplink's ingress
 * redirect removed, unless another VM's TAP is there (it has the namespace); quietly: the
 * namespace may be gone with its pod. */
void podnet_down(const char *net);
