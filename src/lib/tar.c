/* SPDX-License-Identifier: MIT */
/* The tar reader (pure: bytes in, entries out; fuzzed): see tar.h. The extractor is tar-extract.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tar.h"
#include "util/util.h"

/* --- the parser --- */

enum { ST_HEADER, ST_DATA, ST_PAD, ST_END, ST_FAILED };
enum { M_ENTRY, M_LONGNAME, M_LONGLINK, M_PAX, M_SKIP };

struct tar_parser {
    const tar_parser_ops *ops;
    void *userdata;
    int state;
    int rc;
    const char *why;
    uint8_t hdr[TAR_BLOCK];
    size_t hdr_len;
    int member;         /* what the current data is */
    uint64_t remaining; /* data bytes left of the current member */
    uint64_t pad;       /* padding bytes left after it */
    uint8_t *buf;       /* long name, long link or pax data being collected */
    size_t buf_len, buf_cap;
    bool buf_overflow;
    /* what long-name and pax blocks say about the next entry */
    char next_name[TAR_PATH_MAX + 1], next_link[TAR_PATH_MAX + 1];
    bool have_name, have_link, name_too_long, link_too_long;
    bool have_size, have_mtime;
    uint64_t next_size;
    int64_t next_mtime;
    uint64_t entries;
    char name[TAR_PATH_MAX + 1], link[TAR_PATH_MAX + 1];
};

int tar_parser_new(const tar_parser_ops *ops, void *userdata, tar_parser **ret)
{
    tar_parser *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->ops = ops;
    p->userdata = userdata;
    *ret = p;
    return 0;
}

void tar_parser_free(tar_parser *p)
{
    if (!p)
        return;
    free(p->buf);
    free(p);
}

uint64_t tar_parser_entries(const tar_parser *p)
{
    return p->entries;
}

static int bad(tar_parser *p, const char *why)
{
    p->state = ST_FAILED;
    p->why = why;
    p->rc = -EBADMSG;
    return p->rc;
}

/* An octal field (spaces or NULs around the digits) or a base-256 one (first byte 0x80: a
 * positive number, 0xff: a negative one). false when malformed or out of range. */
static bool parse_number(const uint8_t *f, size_t n, bool is_signed, int64_t *out)
{
    if (n && (f[0] == 0x80 || f[0] == 0xff)) {
        bool neg = f[0] == 0xff;
        if (neg && !is_signed)
            return false;
        uint64_t v = 0;
        for (size_t i = 1; i < n; i++) {
            if (v >> 55)
                return false;
            v = (v << 8) | f[i];
        }
        if (neg) {
            /* two's complement over the field: -(2^(8(n-1)) - v) */
            if (n - 1 >= 8)
                return false; /* only fields of up to 8 bytes after the marker */
            uint64_t span = UINT64_C(1) << (8 * (n - 1));
            uint64_t mag = span - v;
            if (mag > (uint64_t)INT64_MAX)
                return false;
            *out = -(int64_t)mag;
            return true;
        }
        if (v > (uint64_t)INT64_MAX)
            return false;
        *out = (int64_t)v;
        return true;
    }
    size_t i = 0;
    while (i < n && f[i] == ' ')
        i++;
    uint64_t v = 0;
    bool digits = false;
    for (; i < n && f[i] >= '0' && f[i] <= '7'; i++) {
        if (v >> 60)
            return false;
        v = v * 8 + (uint64_t)(f[i] - '0');
        digits = true;
    }
    for (; i < n; i++)
        if (f[i] != ' ' && f[i] != 0)
            return false;
    if (!digits)
        v = 0; /* an empty field is 0 (old archives) */
    *out = (int64_t)v;
    return true;
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static bool checksum_ok(const uint8_t *h)
{
    int64_t stored;
    if (!parse_number(h + 148, 8, false, &stored))
        return false;
    uint64_t usum = 0;
    int64_t ssum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++) {
        uint8_t c = (i >= 148 && i < 156) ? ' ' : h[i];
        usum += c;
        ssum += (int8_t)c;
    }
    return (uint64_t)stored == usum || stored == ssum;
}

/* Copy a fixed-size, maybe unterminated field. */
static size_t field_copy(char *dst, size_t cap, const uint8_t *f, size_t n)
{
    size_t len = strnlen((const char *)f, n);
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, f, len);
    dst[len] = 0;
    return len;
}

static void pending_clear(tar_parser *p)
{
    p->have_name = p->have_link = p->name_too_long = p->link_too_long = false;
    p->have_size = p->have_mtime = false;
}

/* "N key=value\n" records: path, linkpath, size, mtime. */
static int pax_parse(tar_parser *p, const uint8_t *b, size_t n)
{
    size_t off = 0;
    while (off < n) {
        size_t len = 0, i = off;
        while (i < n && b[i] >= '0' && b[i] <= '9') {
            len = len * 10 + (size_t)(b[i] - '0');
            if (len > n)
                return bad(p, "a pax record longer than its header");
            i++;
        }
        if (i == off || i >= n || b[i] != ' ' || len < (i - off) + 3 || off + len > n ||
            b[off + len - 1] != '\n')
            return bad(p, "a malformed pax record");
        const uint8_t *kv = b + i + 1;
        size_t kvlen = off + len - 1 - (i + 1);
        const uint8_t *eq = memchr(kv, '=', kvlen);
        if (!eq || eq == kv)
            return bad(p, "a pax record without a key");
        size_t klen = (size_t)(eq - kv);
        const char *val = (const char *)eq + 1;
        size_t vlen = kvlen - klen - 1;
        if (memchr(val, 0, vlen))
            return bad(p, "a pax value with a NUL byte");
        if (klen == 4 && !memcmp(kv, "path", 4)) {
            p->name_too_long = vlen > TAR_PATH_MAX;
            size_t k = vlen > TAR_PATH_MAX ? TAR_PATH_MAX : vlen;
            memcpy(p->next_name, val, k);
            p->next_name[k] = 0;
            p->have_name = true;
        } else if (klen == 8 && !memcmp(kv, "linkpath", 8)) {
            p->link_too_long = vlen > TAR_PATH_MAX;
            size_t k = vlen > TAR_PATH_MAX ? TAR_PATH_MAX : vlen;
            memcpy(p->next_link, val, k);
            p->next_link[k] = 0;
            p->have_link = true;
        } else if ((klen == 4 && !memcmp(kv, "size", 4)) ||
                   (klen == 5 && !memcmp(kv, "mtime", 5))) {
            bool is_size = klen == 4;
            size_t j = 0;
            bool neg = !is_size && vlen > 0 && val[0] == '-';
            if (neg)
                j++;
            uint64_t v = 0;
            size_t start = j;
            for (; j < vlen && val[j] >= '0' && val[j] <= '9'; j++) {
                if (v > (UINT64_MAX - 9) / 10)
                    return bad(p, "a pax number out of range");
                v = v * 10 + (uint64_t)(val[j] - '0');
            }
            if (j == start || (j < vlen && (is_size || val[j] != '.')))
                return bad(p, "a malformed pax number");
            for (size_t q = j + 1; q < vlen; q++) /* the fraction of mtime: ignored */
                if (val[q] < '0' || val[q] > '9')
                    return bad(p, "a malformed pax number");
            if (v > (uint64_t)INT64_MAX)
                return bad(p, "a pax number out of range");
            if (is_size) {
                p->next_size = v;
                p->have_size = true;
            } else {
                p->next_mtime = neg ? -(int64_t)v : (int64_t)v;
                p->have_mtime = true;
            }
        }
        off += len;
    }
    return 0;
}

static int member_done(tar_parser *p)
{
    switch (p->member) {
    case M_ENTRY:
        return p->ops->entry_end ? p->ops->entry_end(p->userdata) : 0;
    case M_LONGNAME:
    case M_LONGLINK: {
        bool is_name = p->member == M_LONGNAME;
        char *dst = is_name ? p->next_name : p->next_link;
        size_t len = strnlen((const char *)p->buf, p->buf_len);
        bool too_long = p->buf_overflow || len > TAR_PATH_MAX;
        if (len > TAR_PATH_MAX)
            len = TAR_PATH_MAX;
        memcpy(dst, p->buf, len);
        dst[len] = 0;
        if (is_name) {
            p->have_name = true;
            p->name_too_long = too_long;
        } else {
            p->have_link = true;
            p->link_too_long = too_long;
        }
        return 0;
    }
    case M_PAX:
        return pax_parse(p, p->buf, p->buf_len);
    default:
        return 0;
    }
}

static int start_member(tar_parser *p, int member, uint64_t size)
{
    p->member = member;
    p->remaining = size;
    p->pad = (TAR_BLOCK - size % TAR_BLOCK) % TAR_BLOCK;
    p->buf_len = 0;
    p->buf_overflow = false;
    if (member == M_PAX && size > TAR_PAX_MAX)
        return bad(p, "a pax header larger than 64 KiB");
    if (member == M_LONGNAME || member == M_LONGLINK || member == M_PAX) {
        size_t want = member == M_PAX ? (size_t)size : TAR_PATH_MAX + 1;
        if (want > p->buf_cap) {
            uint8_t *nb = realloc(p->buf, want ? want : 1);
            if (!nb)
                return p->rc = -ENOMEM;
            p->buf = nb;
            p->buf_cap = want;
        }
    }
    p->state = ST_DATA;
    if (size == 0) {
        p->state = ST_HEADER;
        return member_done(p);
    }
    return 0;
}

static int header(tar_parser *p)
{
    const uint8_t *h = p->hdr;
    if (all_zero(h, TAR_BLOCK)) {
        p->state = ST_END; /* the end-of-archive marker: the rest is padding */
        return 0;
    }
    if (!checksum_ok(h))
        return bad(p, "a header with a wrong checksum (not a tar stream)");
    int64_t mode, size, mtime;
    if (!parse_number(h + 100, 8, false, &mode) || !parse_number(h + 124, 12, false, &size) ||
        !parse_number(h + 136, 12, true, &mtime))
        return bad(p, "a header with a malformed number");
    char type = (char)h[156];
    if (type == 0 || type == '7')
        type = '0';
    uint64_t usize = (uint64_t)size;
    switch (type) {
    case 'L':
        return start_member(p, M_LONGNAME, usize);
    case 'K':
        return start_member(p, M_LONGLINK, usize);
    case 'x':
        return start_member(p, M_PAX, usize);
    case 'g':
        return start_member(p, M_SKIP, usize); /* global pax header: nothing we use */
    default:
        break;
    }
    bool posix = !memcmp(h + 257, "ustar\0", 6);
    bool too_long = false;
    if (p->have_name) {
        memcpy(p->name, p->next_name, sizeof(p->name));
        too_long = p->name_too_long;
    } else if (posix && h[345]) {
        size_t k = field_copy(p->name, sizeof(p->name), h + 345, 155);
        p->name[k++] = '/';
        field_copy(p->name + k, sizeof(p->name) - k, h, 100);
    } else {
        field_copy(p->name, sizeof(p->name), h, 100);
    }
    if (p->have_link) {
        memcpy(p->link, p->next_link, sizeof(p->link));
        too_long |= p->link_too_long;
    } else {
        field_copy(p->link, sizeof(p->link), h + 157, 100);
    }
    if (p->have_size)
        usize = p->next_size;
    if (p->have_mtime)
        mtime = p->next_mtime;
    pending_clear(p);
    tar_entry e = {
        .type = type,
        .name = p->name,
        .link = (type == '1' || type == '2') ? p->link : "",
        .mode = (uint32_t)(mode & 07777777),
        .size = usize,
        .mtime = mtime,
        .name_too_long = too_long,
    };
    p->entries++;
    int r = p->ops->entry ? p->ops->entry(p->userdata, &e) : 0;
    if (r < 0)
        return p->rc = r;
    return start_member(p, M_ENTRY, usize);
}

int tar_parser_feed(tar_parser *p, const void *data, size_t len, const char **why)
{
    const uint8_t *d = data;
    while (len > 0 && p->rc == 0) {
        switch (p->state) {
        case ST_HEADER: {
            size_t k = TAR_BLOCK - p->hdr_len < len ? TAR_BLOCK - p->hdr_len : len;
            memcpy(p->hdr + p->hdr_len, d, k);
            p->hdr_len += k;
            d += k;
            len -= k;
            if (p->hdr_len == TAR_BLOCK) {
                p->hdr_len = 0;
                int r = header(p);
                if (r < 0)
                    p->rc = r;
            }
            break;
        }
        case ST_DATA: {
            size_t k = p->remaining < len ? (size_t)p->remaining : len;
            int r = 0;
            if (p->member == M_ENTRY) {
                if (p->ops->data)
                    r = p->ops->data(p->userdata, d, k);
            } else if (p->member != M_SKIP) {
                size_t room = p->buf_cap - p->buf_len;
                size_t c = k < room ? k : room;
                memcpy(p->buf + p->buf_len, d, c);
                p->buf_len += c;
                if (c < k)
                    p->buf_overflow = true;
            }
            if (r < 0) {
                p->rc = r;
                break;
            }
            d += k;
            len -= k;
            p->remaining -= k;
            if (p->remaining == 0) {
                p->state = p->pad ? ST_PAD : ST_HEADER;
                if (p->state == ST_HEADER && (r = member_done(p)) < 0)
                    p->rc = r;
            }
            break;
        }
        case ST_PAD: {
            size_t k = p->pad < len ? (size_t)p->pad : len;
            d += k;
            len -= k;
            p->pad -= k;
            if (p->pad == 0) {
                p->state = ST_HEADER;
                int r = member_done(p);
                if (r < 0)
                    p->rc = r;
            }
            break;
        }
        case ST_END:
            len = 0; /* after the end marker: ignored */
            break;
        default:
            break;
        }
    }
    if (p->rc < 0 && why)
        *why = p->why;
    return p->rc;
}

int tar_parser_finish(tar_parser *p, const char **why)
{
    if (p->rc < 0) {
        if (why)
            *why = p->why;
        return p->rc;
    }
    if (p->state == ST_END || (p->state == ST_HEADER && p->hdr_len == 0 && !p->have_name &&
                               !p->have_link && !p->have_size && !p->have_mtime))
        return 0;
    p->rc = -EBADMSG;
    p->why = p->state == ST_HEADER && p->hdr_len == 0
                 ? "the archive ends after a long-name or pax header"
             : p->state == ST_HEADER ? "the archive ends inside a header"
                                     : "the archive ends inside an entry";
    if (why)
        *why = p->why;
    return p->rc;
}
