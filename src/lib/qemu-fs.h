/* SPDX-License-Identifier: MIT */
/* Host directories in a QEMU guest (vm_spec.mounts): virtio-fs through one virtiofsd per mount
 * (a supervised helper, supervise.h) or 9p (QEMU's own -fsdev local). Tag "m<i>" for mount i. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <vmctl/error.h>

#include "supervise.h"
#include "vm-spec.h"

/* What a launch needs for spec's mounts; dir is the absolute VM directory. */
typedef struct qemu_fs {
    supervise_helper helpers[VM_MAX_MOUNTS]; /* virtiofs: one virtiofsd each */
    size_t n_helpers;
    char **args; /* QEMU's options for the mounts (NULL-terminated, may be NULL) */
} qemu_fs;

void qemu_fs_clear(qemu_fs *fs);
int qemu_fs_prepare(const vm_spec *spec, const char *dir, bool microvm, qemu_fs *ret,
                    vmctl_error **reterr);
/* Remove the virtiofsd sockets left in dir (backend cleanup). */
void qemu_fs_cleanup(const char *dir);
