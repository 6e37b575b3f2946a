/* SPDX-License-Identifier: MIT */
/* The image cache seen from VM creation: resolving --image, making a VM's disk from it. */
#pragma once

#include <stdint.h>

#include <vmctl/error.h>

typedef struct image_ref {
    char *name;   /* cache name, NULL for a path */
    char *path;   /* absolute path of the image file */
    char *format; /* our name for it: qcow2, raw, ... */
    uint64_t virtual_size;
    char *sha256; /* the cache's stamp, NULL for a path */
} image_ref;

void image_ref_clear(image_ref *r);

/* A cache name, or a path (containing '/' or an existing file). Missing or unreadable:
 * image::overlay_creation_failed (details: image, path). */
int image_resolve(const char *home, const char *image, image_ref *ret, vmctl_error **reterr);

/* A qcow2 overlay at path on base, virtual size max(size, base). */
int image_make_overlay(const char *path, const image_ref *base, uint64_t size,
                       vmctl_error **reterr);

/* Raw root filesystems: check the template's SHA-256 against its stamp (image::rootfs_failed
 * on a mismatch), then clone it to path by reflink, else copy; grown to size when larger. */
int image_clone_rootfs(const char *path, const image_ref *base, uint64_t size,
                       vmctl_error **reterr);

/* Clone src to dst: FICLONE where the filesystem supports it, else copy_file_range. 1 when
 * reflinked, 0 when copied. */
int image_clone_file(const char *src, const char *dst);
