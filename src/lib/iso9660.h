/* SPDX-License-Identifier: MIT */
/* A small ISO 9660 writer: one root directory of regular files, with Joliet names (what
 * genisoimage -J writes), enough for a cloud-init NoCloud seed. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct iso_file {
    const char *name; /* UTF-8, 1-64 characters of the Basic Multilingual Plane, no '/' */
    const void *data;
    size_t len;
} iso_file;

/* Build the image in memory: *ret (malloc'd) of *ret_len bytes. volume_id: up to 32 characters
 * (written as-is to the primary descriptor and in UCS-2 to the Joliet one). mtime: unix seconds
 * for every timestamp. -EINVAL for bad names (empty, too long, '/', not UTF-8, duplicates) or
 * more than 32 files, -ENOMEM. */
int iso9660_build(const char *volume_id, const iso_file *files, size_t n, int64_t mtime,
                  uint8_t **ret, size_t *ret_len);

/* Build and write atomically to path (temp file, fsync, rename). */
int iso9660_write(const char *path, const char *volume_id, const iso_file *files, size_t n,
                  int64_t mtime);
