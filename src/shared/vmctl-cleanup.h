/* SPDX-License-Identifier: MIT */
/* Cleanup helpers for libvmctl's public objects, shared by the library and the CLI (header-only,
 * through the public API alone). */
#pragma once

#include <vmctl/vmctl.h>

#include "macros.h"

DEFINE_POINTER_CLEANUP(vmctl_error_free, vmctl_error, vmctl_error_free)
DEFINE_POINTER_CLEANUP(vmctl_vm_info_free, vmctl_vm_info, vmctl_vm_info_free)

#define cleanup_error   __attribute__((cleanup(vmctl_error_freep)))
#define cleanup_vm_info __attribute__((cleanup(vmctl_vm_info_freep)))
