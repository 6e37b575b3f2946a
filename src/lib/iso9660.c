/* SPDX-License-Identifier: MIT */
/* ISO 9660 (ECMA-119) with a Joliet supplementary volume descriptor. Layout, in 2048-byte
 * sectors: 0-15 system area, 16 primary descriptor, 17 Joliet descriptor, 18 terminator,
 * 19-22 the L and M path tables of both trees, 23 the primary root directory, 24 the Joliet
 * root directory, then the file data (shared by both trees). Primary names are level-1
 * (8.3, upper case, ";1"); Linux, blkid and isoinfo -J read the Joliet names. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iso9660.h"
#include "util/util.h"

#define SECTOR    2048
#define MAX_FILES 32
#define LBA_PVD   16
#define LBA_SVD   17
#define LBA_TERM  18
#define LBA_PT    19 /* 19 L, 20 M (primary), 21 L, 22 M (Joliet) */
#define LBA_ROOT  23
#define LBA_JROOT 24
#define LBA_DATA  25

static void both16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static void le32w(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void be32w(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[3 - i] = (uint8_t)(v >> (8 * i));
}
static void both32(uint8_t *p, uint32_t v)
{
    le32w(p, v);
    be32w(p + 4, v);
}

/* UTF-8 to UCS-2 code units; -EINVAL outside the BMP or on bad UTF-8. */
static int utf8_to_ucs2(const char *s, uint16_t *out, size_t max, size_t *n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t k = 0;
    while (*p) {
        uint32_t c;
        if (*p < 0x80)
            c = *p++;
        else if ((*p & 0xe0) == 0xc0 && (p[1] & 0xc0) == 0x80) {
            c = (uint32_t)(*p & 0x1f) << 6 | (p[1] & 0x3f);
            p += 2;
        } else if ((*p & 0xf0) == 0xe0 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80) {
            c = (uint32_t)(*p & 0x0f) << 12 | (uint32_t)(p[1] & 0x3f) << 6 | (p[2] & 0x3f);
            p += 3;
        } else
            return -EINVAL;
        if (c < 0x20 || c == '/' || c == '\\' || c == ':' || c == ';' || c == '*' || c == '?' ||
            (c >= 0xd800 && c < 0xe000) || k >= max)
            return -EINVAL;
        out[k++] = (uint16_t)c;
    }
    *n = k;
    return 0;
}

/* Level-1 name: up to 8 d-characters, '.', up to 3, ";1". */
static void primary_name(const char *s, char out[16])
{
    const char *dot = strrchr(s, '.');
    size_t base_len = dot && dot != s ? (size_t)(dot - s) : strlen(s);
    char base[9] = "", ext[4] = "";
    size_t b = 0, e = 0;
    for (size_t i = 0; i < base_len && b < 8; i++) {
        char c = s[i];
        c = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
        base[b++] = ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) ? c : '_';
    }
    base[b] = 0;
    if (dot && dot != s)
        for (const char *q = dot + 1; *q && e < 3; q++) {
            char c = *q;
            c = (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
            ext[e++] = ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) ? c : '_';
        }
    ext[e] = 0;
    if (!b) {
        base[0] = '_';
        base[1] = 0;
    }
    snprintf(out, 16, "%s.%s;1", base, ext);
}

static void dir_date(uint8_t *p, const struct tm *tm)
{
    p[0] = (uint8_t)tm->tm_year;
    p[1] = (uint8_t)(tm->tm_mon + 1);
    p[2] = (uint8_t)tm->tm_mday;
    p[3] = (uint8_t)tm->tm_hour;
    p[4] = (uint8_t)tm->tm_min;
    p[5] = (uint8_t)tm->tm_sec;
    p[6] = 0; /* GMT */
}

static void vd_date(uint8_t *p, const struct tm *tm)
{
    char buf[64];
    snprintf(buf, sizeof(buf), "%04u%02u%02u%02u%02u%02u00", (unsigned)(tm->tm_year + 1900) % 10000,
             (unsigned)(tm->tm_mon + 1) % 100, (unsigned)tm->tm_mday % 100,
             (unsigned)tm->tm_hour % 100, (unsigned)tm->tm_min % 100, (unsigned)tm->tm_sec % 100);
    memcpy(p, buf, 16);
    p[16] = 0;
}

/* One directory record; returns its length. name: raw identifier bytes. */
static size_t dir_record(uint8_t *p, uint32_t lba, uint32_t size, bool dir, const uint8_t *name,
                         size_t nlen, const struct tm *tm)
{
    size_t len = 33 + nlen + (nlen % 2 == 0 ? 1 : 0);
    memset(p, 0, len);
    p[0] = (uint8_t)len;
    both32(p + 2, lba);
    both32(p + 10, size);
    dir_date(p + 18, tm);
    p[25] = dir ? 2 : 0;
    both16(p + 28, 1);
    p[32] = (uint8_t)nlen;
    memcpy(p + 33, name, nlen);
    return len;
}

static void pad_str(uint8_t *p, size_t n, const char *s)
{
    memset(p, ' ', n);
    size_t l = strlen(s);
    memcpy(p, s, l < n ? l : n);
}

static void pad_ucs2(uint8_t *p, size_t n, const char *s)
{
    for (size_t i = 0; i + 1 < n; i += 2) {
        p[i] = 0;
        p[i + 1] = ' ';
    }
    for (size_t i = 0; s[i] && 2 * i + 1 < n; i++)
        p[2 * i + 1] = (uint8_t)s[i];
}

struct entry {
    const iso_file *f;
    char pname[16];
    uint16_t jname[64];
    size_t jlen;
    uint32_t lba;
};

static int cmp_primary(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->pname, ((const struct entry *)b)->pname);
}

static int cmp_joliet(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    for (size_t i = 0; i < x->jlen && i < y->jlen; i++)
        if (x->jname[i] != y->jname[i])
            return x->jname[i] < y->jname[i] ? -1 : 1;
    return (x->jlen > y->jlen) - (x->jlen < y->jlen);
}

static void volume_descriptor(uint8_t *v, bool joliet, const char *volid, uint32_t total,
                              uint32_t pt_lba, uint32_t root_lba, const struct tm *tm)
{
    v[0] = joliet ? 2 : 1;
    memcpy(v + 1, "CD001", 5);
    v[6] = 1;
    if (joliet) {
        pad_ucs2(v + 8, 32, "");
        pad_ucs2(v + 40, 32, volid);
        memcpy(v + 88, "%/E", 3); /* UCS-2 level 3 */
    } else {
        pad_str(v + 8, 32, "");
        pad_str(v + 40, 32, volid);
    }
    both32(v + 80, total);
    both16(v + 120, 1);
    both16(v + 124, 1);
    both16(v + 128, SECTOR);
    both32(v + 132, 10); /* path table: the root alone */
    le32w(v + 140, pt_lba);
    be32w(v + 148, pt_lba + 1);
    static const uint8_t root_name = 0;
    dir_record(v + 156, root_lba, SECTOR, true, &root_name, 1, tm);
    if (joliet) {
        for (size_t off = 190; off < 702; off += 128)
            pad_ucs2(v + off, 128, "");
        pad_ucs2(v + 574, 128, "VMCTL");
        pad_ucs2(v + 702, 36, "");
        pad_ucs2(v + 739, 36, "");
        pad_ucs2(v + 776, 36, "");
    } else {
        pad_str(v + 190, 512, "");
        pad_str(v + 574, 128, "VMCTL");
        pad_str(v + 702, 111, "");
    }
    vd_date(v + 813, tm);
    vd_date(v + 830, tm);
    memset(v + 847, '0', 16);
    memset(v + 864, '0', 16);
    v[881] = 1;
}

static void path_table(uint8_t *p, uint32_t root_lba, bool big_endian)
{
    p[0] = 1; /* length of the identifier */
    if (big_endian)
        be32w(p + 2, root_lba);
    else
        le32w(p + 2, root_lba);
    p[6] = big_endian ? 0 : 1; /* parent directory number 1 */
    p[7] = big_endian ? 1 : 0;
    p[8] = 0; /* identifier: root */
}

int iso9660_build(const char *volume_id, const iso_file *files, size_t n, int64_t mtime,
                  uint8_t **ret, size_t *ret_len)
{
    if (!volume_id || strlen(volume_id) > 32 || n > MAX_FILES || (n && !files))
        return -EINVAL;
    struct entry ent[MAX_FILES] = {};
    uint32_t lba = LBA_DATA;
    for (size_t i = 0; i < n; i++) {
        ent[i].f = &files[i];
        if (!files[i].name || !*files[i].name || files[i].len > UINT32_MAX ||
            utf8_to_ucs2(files[i].name, ent[i].jname, 64, &ent[i].jlen) < 0)
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (streq(files[i].name, files[j].name))
                return -EINVAL;
        primary_name(files[i].name, ent[i].pname);
        /* unique level-1 names: replace the last base character with a digit */
        for (unsigned k = 0; k < 10; k++) {
            bool clash = false;
            for (size_t j = 0; j < i; j++)
                clash |= streq(ent[j].pname, ent[i].pname);
            if (!clash)
                break;
            char *dot = strchr(ent[i].pname, '.');
            dot[-1] = (char)('0' + k);
        }
        ent[i].lba = lba;
        lba += (uint32_t)((files[i].len + SECTOR - 1) / SECTOR);
    }
    uint32_t total = lba;
    size_t size = (size_t)total * SECTOR;
    uint8_t *img = calloc(1, size);
    if (!img)
        return -ENOMEM;
    time_t t = (time_t)mtime;
    struct tm tm;
    gmtime_r(&t, &tm);

    volume_descriptor(img + LBA_PVD * SECTOR, false, volume_id, total, LBA_PT, LBA_ROOT, &tm);
    volume_descriptor(img + LBA_SVD * SECTOR, true, volume_id, total, LBA_PT + 2, LBA_JROOT, &tm);
    uint8_t *term = img + LBA_TERM * SECTOR;
    term[0] = 255;
    memcpy(term + 1, "CD001", 5);
    term[6] = 1;
    path_table(img + (LBA_PT + 0) * SECTOR, LBA_ROOT, false);
    path_table(img + (LBA_PT + 1) * SECTOR, LBA_ROOT, true);
    path_table(img + (LBA_PT + 2) * SECTOR, LBA_JROOT, false);
    path_table(img + (LBA_PT + 3) * SECTOR, LBA_JROOT, true);

    struct entry sorted[MAX_FILES];
    for (int tree = 0; tree < 2; tree++) {
        memcpy(sorted, ent, sizeof(ent[0]) * n);
        qsort(sorted, n, sizeof(sorted[0]), tree ? cmp_joliet : cmp_primary);
        uint32_t self = tree ? LBA_JROOT : LBA_ROOT;
        uint8_t *d = img + (size_t)self * SECTOR;
        size_t off = 0;
        static const uint8_t dot = 0, dotdot = 1;
        off += dir_record(d + off, self, SECTOR, true, &dot, 1, &tm);
        off += dir_record(d + off, self, SECTOR, true, &dotdot, 1, &tm);
        for (size_t i = 0; i < n; i++) {
            uint8_t name[128];
            size_t nl;
            if (tree) {
                for (size_t k = 0; k < sorted[i].jlen; k++) {
                    name[2 * k] = (uint8_t)(sorted[i].jname[k] >> 8);
                    name[2 * k + 1] = (uint8_t)sorted[i].jname[k];
                }
                nl = 2 * sorted[i].jlen;
            } else {
                nl = strlen(sorted[i].pname);
                memcpy(name, sorted[i].pname, nl);
            }
            if (off + 33 + nl + 1 > SECTOR) {
                free(img);
                return -EINVAL; /* the root directory is one sector */
            }
            off += dir_record(d + off, sorted[i].f->len ? sorted[i].lba : 0,
                              (uint32_t)sorted[i].f->len, false, name, nl, &tm);
        }
    }
    for (size_t i = 0; i < n; i++)
        if (files[i].len)
            memcpy(img + (size_t)ent[i].lba * SECTOR, files[i].data, files[i].len);
    *ret = img;
    *ret_len = size;
    return 0;
}

int iso9660_write(const char *path, const char *volume_id, const iso_file *files, size_t n,
                  int64_t mtime)
{
    cleanup_free uint8_t *img = NULL;
    size_t len = 0;
    int r = iso9660_build(volume_id, files, n, mtime, &img, &len);
    if (r < 0)
        return r;
    return write_file_atomic(path, img, len, 0600); /* a seed can hold passwords */
}
