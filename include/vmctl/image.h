/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmctl_image_info {
    char *name;
    char *format;  /* "kernel+initrd" for the default guest, else qcow2, raw, ... */
    uint64_t size; /* bytes on disk */
    char *path;
} vmctl_image_info;

void vmctl_image_info_list_free(vmctl_image_info *list, size_t n);

/* Progress: a step name and, where known, done/total (total 0 = unknown). */
typedef void (*vmctl_progress_fn)(void *userdata, const char *step, uint64_t done, uint64_t total);

/* Build the default guest from Debian packages; a no-op when its inputs are unchanged unless
 * force. */
int vmctl_image_build_default(vmctl_ctx *ctx, bool force, vmctl_progress_fn progress,
                              void *userdata, vmctl_error **reterr);
int vmctl_image_list(vmctl_ctx *ctx, vmctl_image_info **ret, size_t *n, vmctl_error **reterr);

#ifdef __cplusplus
}
#endif
