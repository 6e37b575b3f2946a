/* SPDX-License-Identifier: MIT */
/* A qcow2 v3 image with no data clusters: header (+ backing format extension + backing file
 * name) in cluster 0, the refcount table in cluster 1, one refcount block in cluster 2, the L1
 * table from cluster 3. Every L1 entry is 0, so every read falls through to the backing file;
 * QEMU allocates L2 tables and data clusters on the first writes. The layout is what
 * `qemu-img create` produces, and `qemu-img check` verifies the refcounts. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "qcow2.h"
#include "util/util.h"

#define CLUSTER_BITS 16
#define CLUSTER      (1ull << CLUSTER_BITS)

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}
static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* what: NULL when errnum is the cause */
static int failed(vmctl_error **reterr, int errnum, const char *path, const char *what)
{
    int r = err_make(reterr, VMCTL_E_IMAGE_OVERLAY_CREATION_FAILED, errnum,
                     "cannot create overlay '%s'%s%s", path, what ? ": " : "", what ? what : "");
    err_detail(reterr, "path", "%s", path);
    if (!what)
        err_cause(reterr, errnum); /* a system call's: shown even if it is EIO */
    return r;
}

int qcow2_create_overlay(const char *path, uint64_t virtual_size, const char *backing,
                         const char *backing_format, vmctl_error **reterr)
{
    if (!path || virtual_size == 0 || virtual_size > (1ull << 50))
        return failed(reterr, EINVAL, path ? path : "", "virtual size out of range");
    /* one L2 table maps CLUSTER/8 clusters */
    uint64_t l2_span = CLUSTER * (CLUSTER / 8);
    uint64_t l1_size = (virtual_size + l2_span - 1) / l2_span;
    uint64_t l1_clusters = (l1_size * 8 + CLUSTER - 1) / CLUSTER;
    uint64_t n_clusters = 3 + l1_clusters;
    if (n_clusters > CLUSTER / 2) /* one refcount block of 16-bit entries */
        return failed(reterr, EINVAL, path, "virtual size out of range");
    size_t blen = backing ? strlen(backing) : 0;
    size_t flen = backing_format ? strlen(backing_format) : 0;
    if (blen > 1023 || flen > 16)
        return failed(reterr, ENAMETOOLONG, path, "backing file name too long");

    uint64_t total = n_clusters * CLUSTER;
    cleanup_free uint8_t *img = calloc(1, (size_t)total);
    if (!img)
        return failed(reterr, ENOMEM, path, "out of memory");
    uint8_t *h = img;
    memcpy(h, "QFI\xfb", 4);
    put32(h + 4, 3);                  /* version */
    put32(h + 20, CLUSTER_BITS);      /* cluster_bits */
    put64(h + 24, virtual_size);      /* size */
    put32(h + 32, 0);                 /* crypt_method */
    put32(h + 36, (uint32_t)l1_size); /* l1_size */
    put64(h + 40, 3 * CLUSTER);       /* l1_table_offset */
    put64(h + 48, 1 * CLUSTER);       /* refcount_table_offset */
    put32(h + 56, 1);                 /* refcount_table_clusters */
    put32(h + 96, 4);                 /* refcount_order: 16 bits */
    put32(h + 100, 104);              /* header_length */
    size_t off = 104;
    if (backing_format && flen) {
        put32(h + off, 0xE2792ACA); /* backing file format name */
        put32(h + off + 4, (uint32_t)flen);
        memcpy(h + off + 8, backing_format, flen);
        off += 8 + ((flen + 7) & ~(size_t)7);
    }
    put32(h + off, 0); /* end of extensions */
    put32(h + off + 4, 0);
    off += 8;
    if (blen) {
        put64(h + 8, off); /* backing_file_offset */
        put32(h + 16, (uint32_t)blen);
        memcpy(h + off, backing, blen);
    }
    put64(img + CLUSTER, 2 * CLUSTER); /* refcount table -> block in cluster 2 */
    for (uint64_t i = 0; i < n_clusters; i++)
        put16(img + 2 * CLUSTER + 2 * i, 1);

    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return failed(reterr, errno, path, NULL);
    size_t done = 0;
    while (done < total) {
        ssize_t n = write(fd, img + done, (size_t)total - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            (void)unlink(path);
            return failed(reterr, e, path, NULL);
        }
        done += (size_t)n;
    }
    if (fsync(fd) < 0) {
        int e = errno;
        (void)unlink(path);
        return failed(reterr, e, path, NULL);
    }
    return 0;
}
