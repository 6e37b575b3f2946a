/* SPDX-License-Identifier: MIT */
/* Writing qcow2 overlays in-process (what `qemu-img create -f qcow2 -b BASE -F FMT` makes). */
#pragma once

#include <stdint.h>

#include <vmctl/error.h>

/* Create path (O_EXCL, mode 0600) as an empty qcow2 v3 image of virtual_size bytes (64 KiB
 * clusters, 16-bit refcounts) whose backing file is backing (absolute path, may be NULL) of
 * format backing_format (recorded in the header extension). The file is written in full,
 * fsynced, and removed again on failure. overlay_creation_failed on errors (details: path). */
int qcow2_create_overlay(const char *path, uint64_t virtual_size, const char *backing,
                         const char *backing_format, vmctl_error **reterr);
