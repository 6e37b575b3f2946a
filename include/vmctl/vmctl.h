/* SPDX-License-Identifier: MIT */
/* libvmctl: virtual machines on QEMU, with a guest agent, a store and stable error codes. */
#pragma once

#include <vmctl/error.h>
#include <vmctl/exec.h>
#include <vmctl/host.h>
#include <vmctl/image.h>
#include <vmctl/kdl.h>
#include <vmctl/snapshot.h>
#include <vmctl/ssh.h>
#include <vmctl/vm.h>
#include <vmctl/vmfile.h>

#define VMCTL_VERSION "0.1.0"
