/* SPDX-License-Identifier: MIT */
/* cloud-init NoCloud seed: an ISO 9660 volume labelled "cidata" holding user-data, meta-data
 * and network-config. */
#pragma once

#include <stdbool.h>

#include <vmctl/error.h>

/* The MAC address QEMU gives the first NIC when none is set; network-config matches it. */
#define CLOUDINIT_NIC_MAC "52:54:00:12:34:56"

typedef struct cloudinit_seed {
    const char *hostname;       /* also the instance-id prefix */
    const char *instance_id;    /* NULL: "<hostname>-<random hex>" */
    const char *user_data;      /* path of the user's own user-data, or NULL for the default */
    const char *ssh_key;        /* path of a public key for the default user, or NULL */
    const char *vm_ssh_key;     /* path of the VM's own public key (also authorized), or NULL */
    const char *user;           /* default user's name (NULL: "vmctl") */
    bool network;               /* write a network-config enabling DHCP on the first NIC */
    const char *network_config; /* with network: this network-config instead (--net tap) */
} cloudinit_seed;

/* The default user-data: a user with passwordless sudo and the keys (each may be NULL). */
int cloudinit_default_user_data(const char *user, const char *ssh_key_text, const char *vm_key_text,
                                char **ret);

/* Write the seed ISO to path with our own ISO 9660 writer; with use_tool (or when
 * VMCTL_SEED_TOOL=genisoimage|xorriso is set) with genisoimage/xorriso instead (the fallback,
 * also used by the benchmark). cloudinit::iso_failed on errors (details: path). */
int cloudinit_write_seed(const char *path, const cloudinit_seed *seed, vmctl_error **reterr);

/* Write the same three files into dir (for the external tools). */
int cloudinit_write_files(const char *dir, const cloudinit_seed *seed, vmctl_error **reterr);
