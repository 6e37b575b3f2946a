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
    char *format;  /* "kernel+initrd" for the default guest, else qcow2, raw, vmdk, vhdx, vdi, vpc,
                      iso */
    uint64_t size; /* bytes on disk */
    char *path;
    /* since the images issue (NULL / 0 when unknown) */
    uint64_t virtual_size; /* bytes the guest sees */
    char *backing_file;    /* qcow2 overlays */
    char *sha256;          /* cached images: of the image file as stored */
    char *source;          /* cached images: the URL or path it came from */
    int64_t created_at;    /* cached images: unix seconds */
} vmctl_image_info;

void vmctl_image_info_clear(vmctl_image_info *info);
void vmctl_image_info_list_free(vmctl_image_info *list, size_t n);

/* Progress: a step name and, where known, done/total (total 0 = unknown). */
typedef void (*vmctl_progress_fn)(void *userdata, const char *step, uint64_t done, uint64_t total);

/* Build the default guest from Debian packages; a no-op when its inputs are unchanged unless
 * force. */
int vmctl_image_build_default(vmctl_ctx *ctx, bool force, vmctl_progress_fn progress,
                              void *userdata, vmctl_error **reterr);
int vmctl_image_list(vmctl_ctx *ctx, vmctl_image_info **ret, size_t *n, vmctl_error **reterr);

/* Copy a local image into the cache as name (NULL: from the file name): a reflink where the
 * filesystem can, else its data only (holes stay holes), reporting "copying" progress (done and
 * total bytes) and "checksumming" to progress (may be NULL). Its format is detected from its
 * header, with qemu-img info as second opinion (image::format_detection_failed); an image that
 * names other files (backing file, external data file, vmdk extents) is image::unsafe; a name
 * in use is image::already_exists. Cancelled by vmctl_ctx_set_cancel's flag (nothing left). */
int vmctl_image_import(vmctl_ctx *ctx, const char *path, const char *name,
                       vmctl_progress_fn progress, void *userdata, vmctl_image_info *ret,
                       vmctl_error **reterr);

/* Download url (http, https, file) into the cache as name (NULL: from the URL). sha256 (hex,
 * may be NULL) is checked against the downloaded bytes (image::checksum_mismatch); .zst and .xz
 * files are decompressed. The cache is atomic: the image appears under its name only once it
 * is complete and verified. An image already pulled from the same URL (with the same sha256
 * when given) is served from the cache: *ret_cached = true. */
int vmctl_image_pull(vmctl_ctx *ctx, const char *url, const char *name, const char *sha256,
                     vmctl_progress_fn progress, void *userdata, vmctl_image_info *ret,
                     bool *ret_cached, vmctl_error **reterr);

/* A cached image by name, or any image file by path: format, virtual size, backing file. */
int vmctl_image_inspect(vmctl_ctx *ctx, const char *name_or_path, vmctl_image_info *ret,
                        vmctl_error **reterr);

/* Remove a cached image (image::not_found when there is none); one that VMs were created from
 * is refused (image::in_use, details image and vms) unless force. */
int vmctl_image_remove(vmctl_ctx *ctx, const char *name, bool force, vmctl_error **reterr);

/* Remove what interrupted pulls and imports left behind (list, pull, import and rm do that
 * too); with all, also every cached image no
 * VM was created from. *ret_removed (may be NULL): the names removed, NULL-terminated. */
int vmctl_image_prune(vmctl_ctx *ctx, bool all, char ***ret_removed, vmctl_error **reterr);

/* Convert an image (cache name or path) to dst in format (qcow2, raw, vmdk, vdi, vhdx, vpc) with
 * qemu-img convert; image::conversion_failed on failure. dst is written atomically. */
int vmctl_image_convert(vmctl_ctx *ctx, const char *src, const char *dst, const char *format,
                        vmctl_image_info *ret, vmctl_error **reterr);

#ifdef __cplusplus
}
#endif
