/* SPDX-License-Identifier: MIT */
/* libvmctl: virtual machines on QEMU, with a guest agent, a store and stable error codes. */
#pragma once

#include <vmctl/error.h>
#include <vmctl/exec.h>
#include <vmctl/host.h>
#include <vmctl/image.h>
#include <vmctl/kdl.h>
#include <vmctl/network.h>
#include <vmctl/snapshot.h>
#include <vmctl/ssh.h>
#include <vmctl/stats.h>
#include <vmctl/version.h>
#include <vmctl/vm.h>
#include <vmctl/vmfile.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library loaded; VMCTL_VERSION (<vmctl/version.h>) is the headers' one. */
const char *vmctl_version(void);

#ifdef __cplusplus
}
#endif
