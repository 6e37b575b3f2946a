/* SPDX-License-Identifier: MIT */
/* The KDL parser's internals, shared by kdl.c (arena, buffers, parser state, documents),
 * kdl-lex.c (whitespace, comments, strings), kdl-parse.c (numbers, values, entries, nodes) and
 * kdl-format.c (diagnostics, the canonical printer, the public API). Not installed. The character
 * classes are static inline here: they are the parser's inner loop. */
#pragma once

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmctl/kdl.h>

#include "error.h"
#include "kdl.h"
#include "util/util.h"

#define ARENA_CHUNK ((size_t)64 * 1024)

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, size;
    max_align_t data[];
};

struct kdl_arena {
    struct arena_chunk *head;
};

struct buf {
    char *data;
    size_t len, cap;
};

struct stack {
    void *data;
    size_t n, cap;
};

/* --- characters --- */

enum {
    C_ID1 = 1 << 0,     /* identifier character in KDL v1 */
    C_ID2 = 1 << 1,     /* identifier character in KDL v2 */
    C_SPACE = 1 << 2,   /* unicode-space */
    C_NEWLINE = 1 << 3, /* newline (CR, LF, VT, FF) */
    C_BAD = 1 << 4,     /* disallowed literal code point */
    C_DIGIT = 1 << 5,
};
#define ID (C_ID1 | C_ID2)

static const uint8_t ascii[128] = {
    [0x00 ... 0x08] = C_BAD,
    ['\t'] = C_SPACE,
    ['\n'] = C_NEWLINE,
    [0x0b] = C_NEWLINE,
    [0x0c] = C_NEWLINE,
    ['\r'] = C_NEWLINE,
    [0x0e ... 0x1f] = C_BAD,
    [' '] = C_SPACE,
    ['!'] = ID,
    ['#'] = C_ID1,
    ['$' ... '\''] = ID,
    ['*' ... '+'] = ID,
    [','] = C_ID2,
    ['-' ... '.'] = ID,
    ['0' ... '9'] = ID | C_DIGIT,
    [':'] = ID,
    ['<'] = C_ID2,
    ['>'] = C_ID2,
    ['?' ... 'Z'] = ID,
    ['^' ... 'z'] = ID,
    ['|'] = ID,
    ['~'] = ID,
    [0x7f] = C_BAD,
};
#undef ID

#define CP_EOF (-2)
#define CP_BAD (-1)

/* Decode the UTF-8 sequence at s[i] (i < len): the code point and its length, or CP_BAD (length
 * 1) for anything that is not the shortest encoding of a Unicode scalar value. */
static inline int32_t utf8_decode(const unsigned char *s, size_t len, size_t i, unsigned *n)
{
    unsigned char c = s[i];
    if (c < 0x80) {
        *n = 1;
        return c;
    }
    uint32_t cp, min;
    unsigned k;
    if ((c & 0xe0) == 0xc0) {
        k = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        k = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        k = 4, cp = c & 0x07, min = 0x10000;
    } else {
        *n = 1;
        return CP_BAD;
    }
    *n = 1;
    if (len - i < k)
        return CP_BAD;
    for (unsigned j = 1; j < k; j++) {
        if ((s[i + j] & 0xc0) != 0x80)
            return CP_BAD;
        cp = (cp << 6) | (s[i + j] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return CP_BAD;
    *n = k;
    return (int32_t)cp;
}

static inline bool cp_is_space(uint32_t c)
{
    return c == 0x09 || c == 0x20 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

static inline bool cp_is_newline(uint32_t c)
{
    return (c >= 0x0a && c <= 0x0d) || c == 0x85 || c == 0x2028 || c == 0x2029;
}

static inline bool cp_is_disallowed(uint32_t c)
{
    return c <= 0x08 || (c >= 0x0e && c <= 0x1f) || c == 0x7f || (c >= 0xd800 && c <= 0xdfff) ||
           (c >= 0x200e && c <= 0x200f) || (c >= 0x202a && c <= 0x202e) ||
           (c >= 0x2066 && c <= 0x2069) || c == 0xfeff;
}

/* Length of the newline at s[i] (CRLF counts as one), 0 when there is none. */
static inline unsigned newline_at(const unsigned char *s, size_t len, size_t i)
{
    if (i >= len)
        return 0;
    unsigned char c = s[i];
    if (c == '\r')
        return i + 1 < len && s[i + 1] == '\n' ? 2 : 1;
    if (c == '\n' || c == 0x0b || c == 0x0c)
        return 1;
    if (c == 0xc2 && i + 1 < len && s[i + 1] == 0x85)
        return 2;
    if (c == 0xe2 && i + 2 < len && s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9))
        return 3;
    return 0;
}

static inline bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline int digit_value(unsigned char c, unsigned radix)
{
    int v = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : 99;
    return v < (int)radix ? v : -1;
}

/* Display width of a code point in a terminal: 0 for combining marks, 2 for East Asian wide and
 * emoji, else 1 (good enough to put a caret under the right column). */
static inline unsigned cp_width(uint32_t c)
{
    if ((c >= 0x300 && c <= 0x36f) || (c >= 0x200b && c <= 0x200d))
        return 0;
    if ((c >= 0x1100 && c <= 0x115f) || (c >= 0x2e80 && c <= 0xa4cf && c != 0x303f) ||
        (c >= 0xac00 && c <= 0xd7a3) || (c >= 0xf900 && c <= 0xfaff) ||
        (c >= 0xfe30 && c <= 0xfe4f) || (c >= 0xff00 && c <= 0xff60) ||
        (c >= 0xffe0 && c <= 0xffe6) || (c >= 0x1f300 && c <= 0x1f64f) ||
        (c >= 0x1f900 && c <= 0x1f9ff) || (c >= 0x20000 && c <= 0x3fffd))
        return 2;
    return 1;
}

struct parser {
    const unsigned char *s;
    size_t len, pos;
    int version;
    unsigned depth;
    struct kdl_arena *arena;
    struct stack nodes, values, props, offsets, limbs, marks;
    struct buf sbuf, mbuf, nbuf; /* string, multi-line and number scratch */
    bool failed, oom;
    size_t err_pos;
    char err_msg[320];
    char err_label[96];
};

static inline int32_t peek(const struct parser *p, size_t at, unsigned *n)
{
    if (at >= p->len) {
        *n = 0;
        return CP_EOF;
    }
    return utf8_decode(p->s, p->len, at, n);
}

/* Whether the two (three) characters at `at` are a, b (and c). */
static inline bool at2(const struct parser *p, size_t at, char a, char b)
{
    return at + 1 < p->len && p->s[at] == (unsigned char)a && p->s[at + 1] == (unsigned char)b;
}

static inline bool at3(const struct parser *p, size_t at, char a, char b, char c)
{
    return at + 2 < p->len && at2(p, at, a, b) && p->s[at + 2] == (unsigned char)c;
}

static inline bool is_space(const struct parser *p, int32_t c)
{
    return c >= 0 && (cp_is_space((uint32_t)c) || (p->version == 1 && c == 0xfeff));
}

static inline bool is_disallowed(const struct parser *p, int32_t c)
{
    return c == CP_BAD ||
           (c >= 0 && cp_is_disallowed((uint32_t)c) && !(p->version == 1 && c == 0xfeff));
}

/* Code point as text for messages: 'x' for visible ASCII, else U+XXXX ('x'). */

/* kdl-format.c */ int kdl_position_error(vmctl_error **reterr, vmctl_error_kind kind,
                                          const char *path, const char *src, size_t len,
                                          size_t offset, const char *label, const char *msg);
/* kdl-lex.c */ bool kdl_ident_start(const struct parser *p, size_t i);
/* kdl-lex.c */ bool kdl_is_reserved(const unsigned char *t, size_t n);
/* kdl-lex.c */ int kdl_parse_identifier(struct parser *p, kdl_value *v, bool *keyword);
/* kdl-lex.c */ int kdl_parse_quoted(struct parser *p, kdl_str *out);
/* kdl-lex.c */ int kdl_parse_raw(struct parser *p, size_t start, kdl_str *out);
/* kdl-lex.c */ size_t kdl_scan_ident(const struct parser *p, size_t i);
/* kdl-lex.c */ int kdl_skip_line_comment(struct parser *p);
/* kdl-lex.c */ int kdl_skip_line_space(struct parser *p);
/* kdl-lex.c */ int kdl_skip_node_space(struct parser *p);
/* kdl-lex.c */ int kdl_skip_ws(struct parser *p);
/* kdl-parse.c */ int kdl_detect_version(const unsigned char *s, size_t len);
/* kdl-parse.c */ int kdl_keys_cmp(const kdl_str *a, const kdl_str *b);
/* kdl-parse.c */ int kdl_parse_document(struct parser *p);
/* kdl.c */ void *kdl_arena_alloc(struct kdl_arena *a, size_t n);
/* kdl.c */ int kdl_arena_str(struct kdl_arena *a, const void *data, size_t len, kdl_str *out);
/* kdl.c */ int kdl_buf_printf(struct buf *b, const char *fmt, ...);
/* kdl.c */ int kdl_buf_put(struct buf *b, const void *data, size_t n);
/* kdl.c */ int kdl_buf_putc(struct buf *b, char c);
/* kdl.c */ int kdl_buf_puts(struct buf *b, const char *s);
/* kdl.c */ int kdl_buf_reserve(struct buf *b, size_t extra);
/* kdl.c */ int kdl_clip(const unsigned char *s, size_t n, size_t max);
/* kdl.c */ void kdl_describe_cp(int32_t c, const unsigned char *at, unsigned n, char *buf,
                                 size_t size);
/* kdl.c */ int kdl_fail(struct parser *p, size_t pos, const char *label, const char *fmt, ...);
/* kdl.c */ int kdl_fail_unexpected(struct parser *p, size_t pos, const char *expected);
/* kdl.c */ int kdl_oom(struct parser *p);
/* kdl.c */ void *kdl_stack_push(struct stack *s, size_t elem);
/* kdl.c */ size_t kdl_utf8_encode(uint32_t cp, char out[4]);
