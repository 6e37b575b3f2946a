/* SPDX-License-Identifier: MIT */
/* The pure part of format detection: image_probe_buffer() over a file's first bytes. No I/O and
 * no dependencies beyond libc, so tests/fuzz/fuzz-image-probe.c can link it alone. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image-format.h"

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}
static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}
static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p + 4) << 32 | le32(p);
}
static uint16_t le16(const uint8_t *p)
{
    return (uint16_t)(p[1] << 8 | p[0]);
}

void image_probe_clear(image_probe *p)
{
    if (!p)
        return;
    free(p->backing_file);
    free(p->backing_format);
    free(p->data_file);
    *p = (image_probe){};
}

/* The value of key="value" in a vmdk descriptor (text of len bytes), NULL when absent or empty. */
static char *vmdk_desc_value(const char *t, size_t len, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl < len; i++) {
        if ((i && t[i - 1] != '\n') || memcmp(t + i, key, kl) != 0)
            continue;
        size_t j = i + kl;
        while (j < len && t[j] == ' ')
            j++;
        if (j >= len || t[j] != '=')
            continue;
        j++;
        while (j < len && t[j] == ' ')
            j++;
        if (j < len && t[j] == '"')
            j++;
        size_t k = j;
        while (k < len && t[k] != '"' && t[k] != '\n' && t[k] != 0)
            k++;
        return k > j ? strndup(t + j, k - j) : NULL;
    }
    return NULL;
}

/* The file of the first extent line (RW|RDONLY|NOACCESS N TYPE "file" ...) of a vmdk
 * descriptor: "" when there is none with a file (a descriptor has no data of its own). */
static char *vmdk_desc_extent(const char *t, size_t len)
{
    static const char *const access[] = {"RW ", "RDONLY ", "NOACCESS "};
    for (size_t i = 0; i < len; i++) {
        if (i && t[i - 1] != '\n')
            continue;
        for (size_t a = 0; a < sizeof(access) / sizeof(access[0]); a++) {
            size_t al = strlen(access[a]);
            if (len - i < al || memcmp(t + i, access[a], al) != 0)
                continue;
            const char *q = memchr(t + i, '"', len - i);
            const char *nl = memchr(t + i, '\n', len - i);
            if (!q || (nl && q > nl))
                continue;
            const char *e = memchr(q + 1, '"', len - (size_t)(q + 1 - t));
            if (e && (!nl || e < nl) && e > q + 1)
                return strndup(q + 1, (size_t)(e - q - 1));
        }
    }
    return strdup("");
}

static int probe_qcow2(const uint8_t *b, size_t len, uint64_t fsize, image_probe *p,
                       const char **why)
{
    if (len < 72) {
        *why = "qcow2 header is truncated";
        return -EINVAL;
    }
    uint32_t version = be32(b + 4);
    uint32_t cluster_bits = be32(b + 20);
    if (version != 2 && version != 3) {
        *why = "qcow2 header has an unknown version";
        return -EINVAL;
    }
    if (cluster_bits < 9 || cluster_bits > 21) {
        *why = "qcow2 header has an invalid cluster size";
        return -EINVAL;
    }
    uint64_t size = be64(b + 24);
    uint32_t l1_size = be32(b + 36);
    uint64_t l1_off = be64(b + 40);
    uint64_t rt_off = be64(b + 48);
    uint32_t rt_clusters = be32(b + 56);
    uint64_t cluster = 1ull << cluster_bits;
    if (l1_off % cluster || rt_off % cluster || rt_off == 0) {
        *why = "qcow2 header has misaligned table offsets";
        return -EINVAL;
    }
    /* Truncated downloads: the tables must lie inside the file. */
    if (rt_off > fsize || (uint64_t)rt_clusters * cluster > fsize - rt_off ||
        (l1_size && (l1_off > fsize || (uint64_t)l1_size * 8 > fsize - l1_off))) {
        *why = "qcow2 tables lie past the end of the file (truncated?)";
        return -EINVAL;
    }
    uint64_t bf_off = be64(b + 8);
    uint32_t bf_len = be32(b + 16);
    if (bf_off) {
        if (bf_len == 0 || bf_len > 1023 || bf_off > len || bf_len > len - bf_off) {
            *why = "qcow2 backing file name is out of range";
            return -EINVAL;
        }
        p->backing_file = strndup((const char *)b + bf_off, bf_len);
        if (!p->backing_file)
            return -ENOMEM;
    }
    /* header extensions: after the header (v2: 72 bytes, v3: header_length) */
    size_t off = version >= 3 && len >= 104 ? be32(b + 100) : 72;
    if (off < 72)
        off = 72;
    while (off + 8 <= len) {
        uint32_t type = be32(b + off), elen = be32(b + off + 4);
        if (type == 0 || elen > len - off - 8)
            break;
        if (type == 0xE2792ACA && elen > 0 && elen < 32 && !p->backing_format) {
            p->backing_format = strndup((const char *)b + off + 8, elen);
            if (!p->backing_format)
                return -ENOMEM;
        }
        if (type == 0x44415441 && !p->data_file) { /* external data file name */
            p->data_file = strndup((const char *)b + off + 8, elen);
            if (!p->data_file)
                return -ENOMEM;
        }
        off += 8 + (((size_t)elen + 7) & ~(size_t)7);
    }
    /* incompatible feature bit 2: the guest's data lives in an external data file (QEMU opens
     * it, named or not: a name can also come from the command line) */
    if (version >= 3 && len >= 80 && (be64(b + 72) & 4) && !p->data_file &&
        !(p->data_file = strdup("")))
        return -ENOMEM;
    snprintf(p->format, sizeof(p->format), "qcow2");
    p->virtual_size = size;
    return 0;
}

int image_probe_buffer(const uint8_t *b, size_t len, uint64_t fsize, image_probe *p,
                       const char **why)
{
    static const char *dummy;
    if (!why)
        why = &dummy;
    *p = (image_probe){.file_size = fsize};
    if (fsize == 0 || len == 0) {
        *why = "the file is empty";
        return -ENODATA;
    }
    if (len >= 4 && memcmp(b, "QFI\xfb", 4) == 0) {
        int r = probe_qcow2(b, len, fsize, p, why);
        if (r < 0)
            image_probe_clear(p);
        p->file_size = fsize;
        return r;
    }
    if (len >= 4 && memcmp(b, "KDMV", 4) == 0) { /* VMDK sparse extent */
        if (len < 20 || le32(b + 4) < 1 || le32(b + 4) > 3) {
            *why = "vmdk header is truncated or has an unknown version";
            return -EINVAL;
        }
        snprintf(p->format, sizeof(p->format), "vmdk");
        p->virtual_size = le64(b + 12) * 512;
        /* the embedded descriptor (sector desc_offset): a parent is a backing file */
        uint64_t doff = len >= 44 ? le64(b + 28) : 0, dsize = len >= 44 ? le64(b + 36) : 0;
        if (doff && dsize && doff < len / 512) {
            size_t dl = (size_t)(dsize < (len / 512 - doff) ? dsize : len / 512 - doff) * 512;
            p->backing_file =
                vmdk_desc_value((const char *)b + doff * 512, dl, "parentFileNameHint");
        }
        return 0;
    }
    if (len >= 21 && memcmp(b, "# Disk DescriptorFile", 21) == 0) { /* VMDK descriptor */
        snprintf(p->format, sizeof(p->format), "vmdk");
        /* every extent is another file, and a parent is a backing file */
        p->backing_file = vmdk_desc_value((const char *)b, len, "parentFileNameHint");
        p->data_file = vmdk_desc_extent((const char *)b, len);
        if (!p->data_file) {
            image_probe_clear(p);
            return -ENOMEM;
        }
        return 0;
    }
    if (len >= 8 && memcmp(b, "vhdxfile", 8) == 0) {
        snprintf(p->format, sizeof(p->format), "vhdx");
        return 0; /* the size lives in the metadata region: qemu-img tells it */
    }
    if (len >= 0x178 && le32(b + 0x40) == 0xbeda107f) { /* VirtualBox VDI */
        if (le32(b + 0x44) >> 16 != 1) {
            *why = "vdi header has an unknown version";
            return -EINVAL;
        }
        snprintf(p->format, sizeof(p->format), "vdi");
        p->virtual_size = le64(b + 0x170);
        return 0;
    }
    if (len >= 8 && memcmp(b, "conectix", 8) == 0) { /* VHD (vpc) with its footer copy first */
        snprintf(p->format, sizeof(p->format), "vpc");
        p->virtual_size = len >= 0x38 ? be64(b + 0x30) : 0;
        return 0;
    }
    if (len >= 0x8000 + 130 && memcmp(b + 0x8001, "CD001", 5) == 0 && b[0x8000] == 1) {
        snprintf(p->format, sizeof(p->format), "iso");
        uint32_t blocks = le32(b + 0x8000 + 80);
        uint16_t bs = le16(b + 0x8000 + 128);
        p->virtual_size = (uint64_t)blocks * (bs ? bs : 2048);
        if (p->virtual_size > fsize) {
            *why = "ISO 9660 volume is larger than the file (truncated?)";
            return -EINVAL;
        }
        return 0;
    }
    snprintf(p->format, sizeof(p->format), "raw");
    p->virtual_size = fsize;
    return 0;
}
