/* SPDX-License-Identifier: MIT */
/* The image cache seen from VM creation: resolving --image, making a VM's disk from it. */
#pragma once

#include <stdint.h>

#include <signal.h>

#include <vmctl/error.h>
#include <vmctl/image.h>

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

/* Clone src to dst (created 0600): FICLONE where the filesystem supports it, else the data
 * segments only (SEEK_DATA/SEEK_HOLE, copy_file_range or read/write), so holes stay holes.
 * 1 when reflinked, 0 when copied, -errno (dst removed). */
int image_clone_file(const char *src, const char *dst);

/* image_clone_file with progress (step, bytes done of the file size) and cancellation: stops
 * with -ECANCELED once *cancel is set. delay_usec: a pause after each piece (test hook). */
typedef struct image_copy {
    vmctl_progress_fn progress;
    void *userdata;
    const volatile sig_atomic_t *cancel;
    const char *step;
    unsigned delay_usec;
} image_copy;
int image_copy_file(const char *src, const char *dst, const image_copy *c);

/* Remove images/.tmp-<name>-<pid>/ directories whose process is gone (an import or pull that
 * was killed); their names appended to *ret_removed when non-NULL. */
void image_prune_stale(const char *home, char ***ret_removed);
