/* SPDX-License-Identifier: MIT */
/* KDL: a recursive-descent parser for KDL v2 (and v1) over a byte buffer, the canonical printer
 * and the diagnostics. The grammar is shared/reference/kdl-v2-spec.md ("Full Grammar"); comments
 * below name its productions. One parser serves both versions: the few places where KDL v1
 * differs check p->version. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vmctl/kdl.h>

#include "arg-check.h"
#include "error.h"
#include "kdl.h"
#include "util/util.h"

/* --- arena: everything a document holds, freed at once --- */

#define ARENA_CHUNK ((size_t)64 * 1024)

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, size;
    max_align_t data[];
};

struct kdl_arena {
    struct arena_chunk *head;
};

static void *arena_alloc(struct kdl_arena *a, size_t n)
{
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
        c = malloc(sizeof(*c) + size);
        if (!c)
            return NULL;
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

static void arena_free(struct kdl_arena *a)
{
    if (!a)
        return;
    for (struct arena_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

/* gcc -fanalyzer loses the chunk (owned through a->head) at the memcpy into its interior and
 * reports it leaked; kdl_document_free() frees every chunk (ASan's leak checker agrees). */
#if !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wanalyzer-malloc-leak"
#endif
static int arena_str(struct kdl_arena *a, const void *data, size_t len, kdl_str *out)
{
    char *s = arena_alloc(a, len + 1);
    if (!s)
        return -ENOMEM;
    if (len)
        memcpy(s, data, len);
    s[len] = 0;
    out->data = s;
    out->len = len;
    return 0;
}
#if !defined(__clang__)
#pragma GCC diagnostic pop
#endif

/* --- growable byte buffers and stacks (parser scratch space, printer output) --- */

struct buf {
    char *data;
    size_t len, cap;
};

static int buf_reserve(struct buf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return 0;
    if (extra > SIZE_MAX / 4 - b->len)
        return -ENOMEM;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len <= extra)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
        return -ENOMEM;
    b->data = d;
    b->cap = cap;
    return 0;
}

static int buf_put(struct buf *b, const void *data, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

static int buf_putc(struct buf *b, char c)
{
    if (buf_reserve(b, 1) < 0)
        return -ENOMEM;
    b->data[b->len++] = c;
    b->data[b->len] = 0;
    return 0;
}

static int buf_puts(struct buf *b, const char *s)
{
    return buf_put(b, s, strlen(s));
}

static int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || buf_reserve(b, (size_t)n + 1) < 0)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

static size_t utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

struct stack {
    void *data;
    size_t n, cap;
};

static void *stack_push(struct stack *s, size_t elem)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        void *d = realloc(s->data, cap * elem);
        if (!d)
            return NULL;
        s->data = d;
        s->cap = cap;
    }
    void *slot = (char *)s->data + s->n * elem;
    s->n++;
    return slot; /* uninitialized */
}

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
static int32_t utf8_decode(const unsigned char *s, size_t len, size_t i, unsigned *n)
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

static bool cp_is_space(uint32_t c)
{
    return c == 0x09 || c == 0x20 || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

static bool cp_is_newline(uint32_t c)
{
    return (c >= 0x0a && c <= 0x0d) || c == 0x85 || c == 0x2028 || c == 0x2029;
}

static bool cp_is_disallowed(uint32_t c)
{
    return c <= 0x08 || (c >= 0x0e && c <= 0x1f) || c == 0x7f || (c >= 0xd800 && c <= 0xdfff) ||
           (c >= 0x200e && c <= 0x200f) || (c >= 0x202a && c <= 0x202e) ||
           (c >= 0x2066 && c <= 0x2069) || c == 0xfeff;
}

/* Length of the newline at s[i] (CRLF counts as one), 0 when there is none. */
static unsigned newline_at(const unsigned char *s, size_t len, size_t i)
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

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int digit_value(unsigned char c, unsigned radix)
{
    int v = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
            : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                   : 99;
    return v < (int)radix ? v : -1;
}

/* Display width of a code point in a terminal: 0 for combining marks, 2 for East Asian wide and
 * emoji, else 1 (good enough to put a caret under the right column). */
static unsigned cp_width(uint32_t c)
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

/* --- the parser --- */

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

static void parser_done(struct parser *p)
{
    free(p->nodes.data);
    free(p->values.data);
    free(p->props.data);
    free(p->offsets.data);
    free(p->limbs.data);
    free(p->marks.data);
    free(p->sbuf.data);
    free(p->mbuf.data);
    free(p->nbuf.data);
}

static int oom(struct parser *p)
{
    p->oom = true;
    return -ENOMEM;
}

static int fail(struct parser *p, size_t pos, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(struct parser *p, size_t pos, const char *label, const char *fmt, ...)
{
    if (!p->failed) {
        p->failed = true;
        p->err_pos = pos;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err_msg, sizeof(p->err_msg), fmt, ap);
        va_end(ap);
        snprintf(p->err_label, sizeof(p->err_label), "%s", label);
    }
    return -EINVAL;
}

static int32_t peek(const struct parser *p, size_t at, unsigned *n)
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

static bool is_space(const struct parser *p, int32_t c)
{
    return c >= 0 && (cp_is_space((uint32_t)c) || (p->version == 1 && c == 0xfeff));
}

static bool is_disallowed(const struct parser *p, int32_t c)
{
    return c == CP_BAD ||
           (c >= 0 && cp_is_disallowed((uint32_t)c) && !(p->version == 1 && c == 0xfeff));
}

/* Code point as text for messages: 'x' for visible ASCII, else U+XXXX ('x'). */
static void describe_cp(int32_t c, const unsigned char *at, unsigned n, char *buf, size_t size)
{
    if (c == CP_EOF)
        snprintf(buf, size, "end of file");
    else if (c == CP_BAD)
        snprintf(buf, size, "invalid UTF-8 (byte 0x%02x)", at[0]);
    else if (cp_is_newline((uint32_t)c))
        snprintf(buf, size, "end of line");
    else if (c > 0x20 && c < 0x7f)
        snprintf(buf, size, "'%c'", (char)c);
    else if (cp_is_space((uint32_t)c))
        snprintf(buf, size, "whitespace (U+%04X)", (unsigned)c);
    else if (c < 0x80 || cp_is_space((uint32_t)c) || cp_is_disallowed((uint32_t)c))
        snprintf(buf, size, "U+%04X", (unsigned)c);
    else
        snprintf(buf, size, "'%.*s' (U+%04X)", (int)n, (const char *)at, (unsigned)c);
}

/* Fail at pos with "unexpected X, expected <expected>", or with the precise complaint when pos
 * holds invalid UTF-8 or a disallowed code point. */
static int fail_unexpected(struct parser *p, size_t pos, const char *expected)
{
    unsigned n;
    int32_t c = peek(p, pos, &n);
    if (c == CP_BAD)
        return fail(p, pos, "invalid UTF-8", "invalid UTF-8 byte 0x%02x: KDL documents are UTF-8",
                    p->s[pos]);
    if (is_disallowed(p, c)) {
        if (c == 0xfeff)
            return fail(p, pos, "byte order mark",
                        "a byte order mark (U+FEFF) is only allowed at the start of a document");
        return fail(p, pos, "disallowed code point",
                    "disallowed code point U+%04X: control and text-direction characters cannot "
                    "appear literally (in a quoted string, write \\u{%X})",
                    (unsigned)c, (unsigned)c);
    }
    char what[64], label[96];
    describe_cp(c, p->s + pos, n, what, sizeof(what));
    snprintf(label, sizeof(label), "expected %s", expected);
    return fail(p, pos, label, "unexpected %s, expected %s", what, expected);
}

/* At most max bytes of s[0..n) for a message, cut at a code point boundary. */
static int clip(const unsigned char *s, size_t n, size_t max)
{
    if (n <= max)
        return (int)n;
    while (max > 0 && (s[max] & 0xc0) == 0x80)
        max--;
    return (int)max;
}

/* --- whitespace and comments --- */

/* '/' '*' commented-block: nested block comments, counted rather than recursed. */
static int skip_block_comment(struct parser *p)
{
    size_t start = p->pos;
    unsigned long depth = 0;
    const unsigned char *s = p->s;
    while (p->pos < p->len) {
        unsigned char c = s[p->pos];
        if (c == '/' && p->pos + 1 < p->len && s[p->pos + 1] == '*') {
            depth++;
            p->pos += 2;
        } else if (c == '*' && p->pos + 1 < p->len && s[p->pos + 1] == '/') {
            p->pos += 2;
            if (--depth == 0)
                return 0;
        } else if (c < 0x80) {
            if (ascii[c] & C_BAD)
                return fail_unexpected(p, p->pos, "a comment character");
            p->pos++;
        } else {
            unsigned n;
            int32_t cp = peek(p, p->pos, &n);
            if (is_disallowed(p, cp))
                return fail_unexpected(p, p->pos, "a comment character");
            p->pos += n;
        }
    }
    return fail(p, start, "comment starts here",
                "unterminated block comment: '/*' without a matching '*/'");
}

/* single-line-comment: '//' up to and including the newline (or the end of the file). */
static int skip_line_comment(struct parser *p)
{
    const unsigned char *s = p->s;
    p->pos += 2;
    while (p->pos < p->len) {
        unsigned char c = s[p->pos];
        if (c >= 0x20 && c < 0x7f) {
            p->pos++;
            continue;
        }
        unsigned nl = newline_at(s, p->len, p->pos);
        if (nl) {
            p->pos += nl;
            return 0;
        }
        if (c < 0x80) {
            if (ascii[c] & C_BAD)
                return fail_unexpected(p, p->pos, "a comment character");
            p->pos++;
            continue;
        }
        unsigned n;
        int32_t cp = peek(p, p->pos, &n);
        if (is_disallowed(p, cp))
            return fail_unexpected(p, p->pos, "a comment character");
        p->pos += n;
    }
    return 0;
}

/* ws*: unicode-space and block comments. Returns 1 when something was skipped, else 0. */
static int skip_ws(struct parser *p)
{
    size_t start = p->pos;
    const unsigned char *s = p->s;
    while (p->pos < p->len) {
        unsigned char c = s[p->pos];
        if (c == ' ' || c == '\t') {
            p->pos++;
            continue;
        }
        if (c == '/' && p->pos + 1 < p->len && s[p->pos + 1] == '*') {
            int r = skip_block_comment(p);
            if (r < 0)
                return r;
            continue;
        }
        if (c < 0x80)
            break;
        unsigned n;
        int32_t cp = peek(p, p->pos, &n);
        if (!is_space(p, cp))
            break;
        p->pos += n;
    }
    return p->pos > start;
}

/* escline: '\' ws* (single-line-comment | newline | eof) */
static int skip_escline(struct parser *p)
{
    size_t start = p->pos;
    p->pos++;
    int r = skip_ws(p);
    if (r < 0)
        return r;
    if (p->pos >= p->len) {
        if (p->version == 1)
            return fail(p, start, "line continuation",
                        "a line continuation '\\' must be followed by a newline");
        return 0;
    }
    if (at2(p, p->pos, '/', '/'))
        return skip_line_comment(p);
    unsigned nl = newline_at(p->s, p->len, p->pos);
    if (nl) {
        p->pos += nl;
        return 0;
    }
    if (p->failed)
        return -EINVAL;
    unsigned n;
    char what[64];
    int32_t c = peek(p, p->pos, &n);
    if (is_disallowed(p, c))
        return fail_unexpected(p, p->pos, "a newline");
    describe_cp(c, p->s + p->pos, n, what, sizeof(what));
    return fail(p, start, "not a line continuation",
                "unexpected '\\': outside strings, a backslash continues the node on the next "
                "line and must be followed by a newline or a comment, not %s",
                what);
}

/* node-space*: returns 1 when something was skipped, else 0. */
static int skip_node_space(struct parser *p)
{
    size_t start = p->pos;
    for (;;) {
        int r = skip_ws(p);
        if (r < 0)
            return r;
        if (p->pos < p->len && p->s[p->pos] == '\\') {
            r = skip_escline(p);
            if (r < 0)
                return r;
            continue;
        }
        break;
    }
    return p->pos > start;
}

/* line-space*: node-space, newlines and single-line comments. */
static int skip_line_space(struct parser *p)
{
    for (;;) {
        int r = skip_node_space(p);
        if (r < 0)
            return r;
        unsigned nl = newline_at(p->s, p->len, p->pos);
        if (nl) {
            p->pos += nl;
            continue;
        }
        if (at2(p, p->pos, '/', '/')) {
            r = skip_line_comment(p);
            if (r < 0)
                return r;
            continue;
        }
        return 0;
    }
}

/* --- strings --- */

/* End of the run of identifier characters starting at i. */
static size_t scan_ident(const struct parser *p, size_t i)
{
    const unsigned char *s = p->s;
    uint8_t mask = p->version == 1 ? C_ID1 : C_ID2;
    while (i < p->len) {
        unsigned char c = s[i];
        if (c < 0x80) {
            if (!(ascii[c] & mask))
                break;
            i++;
            continue;
        }
        unsigned n;
        int32_t cp = utf8_decode(s, p->len, i, &n);
        if (cp < 0 || is_space(p, cp) || cp_is_newline((uint32_t)cp) || is_disallowed(p, cp))
            break;
        i += n;
    }
    return i;
}

static bool ident_start(const struct parser *p, size_t i)
{
    if (i >= p->len)
        return false;
    unsigned char c = p->s[i];
    if (c < 0x80)
        return (ascii[c] & (p->version == 1 ? C_ID1 : C_ID2)) && !is_digit(c);
    return scan_ident(p, i) > i;
}

/* A '\' escape in a quoted string at p->pos. Appends the code point it stands for to b, or, when
 * verbatim (multi-line strings, whose escapes are resolved after dedenting), the escape's own
 * text. Whitespace escapes ('\' followed by whitespace and newlines) append nothing. */
static int parse_escape(struct parser *p, struct buf *b, bool verbatim)
{
    const unsigned char *s = p->s;
    size_t at = p->pos, i = at + 1;
    if (i >= p->len)
        return fail(p, at, "escape", "unterminated string: the file ends after '\\'");
    unsigned char c = s[i];
    char out = 0;
    switch (c) {
    case 'n':
        out = '\n';
        break;
    case 'r':
        out = '\r';
        break;
    case 't':
        out = '\t';
        break;
    case '\\':
        out = '\\';
        break;
    case '"':
        out = '"';
        break;
    case 'b':
        out = '\b';
        break;
    case 'f':
        out = '\f';
        break;
    case 's':
        if (p->version == 1)
            goto invalid;
        out = ' ';
        break;
    case '/':
        if (p->version != 1)
            goto invalid;
        out = '/';
        break;
    case 'u': {
        if (i + 1 >= p->len || s[i + 1] != '{')
            return fail(p, at, "unicode escape",
                        "invalid unicode escape: write \\u{XXXX} with 1 to 6 hex digits");
        size_t j = i + 2;
        uint32_t cp = 0;
        unsigned nd = 0;
        while (j < p->len && digit_value(s[j], 16) >= 0) {
            if (nd < 7)
                cp = cp * 16 + (uint32_t)digit_value(s[j], 16);
            nd++;
            j++;
        }
        if (j >= p->len || s[j] != '}' || nd == 0 || nd > 6)
            return fail(p, at, "unicode escape",
                        "invalid unicode escape: write \\u{XXXX} with 1 to 6 hex digits");
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return fail(p, at, "not a scalar value",
                        "invalid unicode escape \\u{%.*s}: not a Unicode scalar value (surrogates "
                        "D800-DFFF and values above 10FFFF are not characters)",
                        (int)(j - i - 2), (const char *)s + i + 2);
        p->pos = j + 1;
        if (verbatim)
            return buf_put(b, s + at, p->pos - at) < 0 ? oom(p) : 0;
        char enc[4];
        return buf_put(b, enc, utf8_encode(cp, enc)) < 0 ? oom(p) : 0;
    }
    default: {
        if (p->version == 1)
            goto invalid;
        /* ws-escape: '\' (unicode-space | newline)+ */
        size_t j = i;
        for (;;) {
            unsigned nl = newline_at(s, p->len, j);
            if (nl) {
                j += nl;
                continue;
            }
            unsigned n;
            int32_t cp = peek(p, j, &n);
            if (!is_space(p, cp))
                break;
            j += n;
        }
        if (j == i)
            goto invalid;
        p->pos = j;
        return 0;
    }
    }
    p->pos = i + 1;
    if (verbatim)
        return buf_put(b, s + at, 2) < 0 ? oom(p) : 0;
    return buf_putc(b, out) < 0 ? oom(p) : 0;

invalid:;
    unsigned n;
    int32_t cp = peek(p, i, &n);
    if (is_disallowed(p, cp))
        return fail_unexpected(p, i, "an escape character");
    return fail(p, at, "invalid escape",
                "invalid escape '\\%.*s' in a string: the escapes are \\n \\r \\t \\\\ \\\" \\b "
                "\\f %s\\u{XXXX}%s",
                (int)n, (const char *)s + i, p->version == 1 ? "\\/ " : "\\s ",
                p->version == 1 ? "" : " and '\\' before whitespace");
}

static bool all_space(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned k;
        int32_t cp = utf8_decode(u, n, i, &k);
        if (cp < 0 || !cp_is_space((uint32_t)cp))
            return false;
        i += k;
    }
    return true;
}

/* Resolve the (already validated) escapes of s in place; returns the new length. */
static size_t resolve_escapes(char *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (s[i] != '\\') {
            s[o++] = s[i++];
            continue;
        }
        char c = s[i + 1];
        i += 2;
        switch (c) {
        case 'n':
            s[o++] = '\n';
            break;
        case 'r':
            s[o++] = '\r';
            break;
        case 't':
            s[o++] = '\t';
            break;
        case 'b':
            s[o++] = '\b';
            break;
        case 'f':
            s[o++] = '\f';
            break;
        case 's':
            s[o++] = ' ';
            break;
        case 'u': {
            uint32_t cp = 0;
            for (i++; s[i] != '}'; i++)
                cp = cp * 16 + (uint32_t)digit_value((unsigned char)s[i], 16);
            i++;
            char enc[4];
            size_t k = utf8_encode(cp, enc);
            memcpy(s + o, enc, k);
            o += k;
            break;
        }
        default: /* '\\', '"' */
            s[o++] = c;
            break;
        }
    }
    return o;
}

/* A multi-line string: p->pos at its opening '"""' (after the '#'s of a raw one, start at the
 * first of them). Dedents after resolving whitespace escapes and before the other escapes. */
static int parse_multiline(struct parser *p, size_t start, unsigned hashes, bool raw, kdl_str *out)
{
    const unsigned char *s = p->s;
    p->pos += 3;
    unsigned nl = newline_at(s, p->len, p->pos);
    if (!nl)
        return fail(p, p->pos, "expected a newline",
                    "a multi-line string needs a newline right after its opening \"\"\" (for a "
                    "single-line string, use one quote: \"...\")");
    p->pos += nl;

    struct buf *m = &p->mbuf;
    m->len = 0;
    if (buf_reserve(m, 1) < 0)
        return oom(p);
    p->offsets.n = 0;
    size_t *off = stack_push(&p->offsets, sizeof(size_t));
    if (!off)
        return oom(p);
    *off = p->pos;
    size_t close = 0;
    for (;;) {
        if (p->pos >= p->len)
            return fail(p, start, "string starts here",
                        "unterminated multi-line string: no closing \"\"\"%.*s",
                        (int)(hashes > 32 ? 32 : hashes), "################################");
        unsigned char c = s[p->pos];
        if (c == '"' && p->len - p->pos >= 3 + (size_t)hashes && s[p->pos + 1] == '"' &&
            s[p->pos + 2] == '"') {
            size_t h = 0;
            while (h < hashes && s[p->pos + 3 + h] == '#')
                h++;
            if (h == hashes) {
                close = p->pos;
                p->pos += 3 + hashes;
                break;
            }
        }
        if (c == '\\' && !raw) {
            int r = parse_escape(p, m, true);
            if (r < 0)
                return r;
            continue;
        }
        nl = newline_at(s, p->len, p->pos);
        if (nl) {
            if (buf_putc(m, '\n') < 0)
                return oom(p);
            p->pos += nl;
            off = stack_push(&p->offsets, sizeof(size_t));
            if (!off)
                return oom(p);
            *off = p->pos;
            continue;
        }
        if (c >= 0x20 && c < 0x7f) {
            if (buf_putc(m, (char)c) < 0)
                return oom(p);
            p->pos++;
            continue;
        }
        unsigned n;
        int32_t cp = peek(p, p->pos, &n);
        if (is_disallowed(p, cp))
            return fail_unexpected(p, p->pos, "a string character");
        if (buf_put(m, s + p->pos, n) < 0)
            return oom(p);
        p->pos += n;
    }

    /* The last line holds the closing quotes: only whitespace may precede them, and that
     * whitespace is the prefix every other non-blank line must start with. */
    const char *d = m->data;
    const char *last_nl = memrchr(d, '\n', m->len);
    const char *prefix = last_nl ? last_nl + 1 : d;
    size_t plen = m->len - (size_t)(prefix - d);
    if (!all_space(prefix, plen))
        return fail(p, close, "closing quotes",
                    "the closing \"\"\" of a multi-line string must be on its own line, after "
                    "only whitespace");
    struct buf *o = &p->sbuf;
    o->len = 0;
    if (buf_reserve(o, m->len) < 0)
        return oom(p);
    if (last_nl) {
        size_t line = 0;
        for (const char *l = d; l <= last_nl; line++) {
            const char *e = memchr(l, '\n', (size_t)(last_nl - l) + 1);
            size_t ll = (size_t)(e - l);
            if (line > 0)
                o->data[o->len++] = '\n';
            if (!all_space(l, ll)) {
                if (ll < plen || memcmp(l, prefix, plen) != 0)
                    return fail(p, ((size_t *)p->offsets.data)[line], "indentation differs",
                                "every non-blank line of a multi-line string must start with the "
                                "exact whitespace before its closing \"\"\" (%zu code point%s)",
                                plen, plen == 1 ? "" : "s");
                memcpy(o->data + o->len, l + plen, ll - plen);
                o->len += ll - plen;
            }
            l = e + 1;
        }
    }
    size_t len = raw ? o->len : resolve_escapes(o->data, o->len);
    return arena_str(p->arena, o->data, len, out) < 0 ? oom(p) : 0;
}

/* quoted-string: '"' single-line-string-body '"', or a multi-line string. */
static int parse_quoted(struct parser *p, kdl_str *out)
{
    const unsigned char *s = p->s;
    size_t start = p->pos;
    if (p->version == 2 && at3(p, start, '"', '"', '"'))
        return parse_multiline(p, start, 0, false, out);
    p->pos++;
    size_t seg = p->pos;
    bool escaped = false;
    struct buf *b = &p->sbuf;
    b->len = 0;
    for (;;) {
        if (p->pos >= p->len)
            return fail(p, start, "string starts here", "unterminated string: no closing '\"'");
        unsigned char c = s[p->pos];
        if (c == '"')
            break;
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            p->pos++;
            continue;
        }
        if (c == '\\') {
            if (buf_put(b, s + seg, p->pos - seg) < 0)
                return oom(p);
            int r = parse_escape(p, b, false);
            if (r < 0)
                return r;
            seg = p->pos;
            escaped = true;
            continue;
        }
        unsigned n = newline_at(s, p->len, p->pos);
        if (n) {
            if (p->version == 1) {
                p->pos += n;
                continue;
            }
            return fail(p, p->pos, "string not closed on this line",
                        "unterminated string: a quoted string cannot contain a literal newline "
                        "(escape it as \\n, or use a multi-line \"\"\" string)");
        }
        int32_t cp = peek(p, p->pos, &n);
        if (is_disallowed(p, cp))
            return fail_unexpected(p, p->pos, "a string character");
        p->pos += n;
    }
    size_t end = p->pos++;
    if (!escaped)
        return arena_str(p->arena, s + seg, end - seg, out) < 0 ? oom(p) : 0;
    if (buf_put(b, s + seg, end - seg) < 0)
        return oom(p);
    return arena_str(p->arena, b->data, b->len, out) < 0 ? oom(p) : 0;
}

/* raw-string: '#'+ '"' ... '"' '#'+ (v2), or r '#'* '"' ... '"' '#'* (v1). p->pos at the first
 * '#' (v2) or after the 'r' (v1). */
static int parse_raw(struct parser *p, size_t start, kdl_str *out)
{
    const unsigned char *s = p->s;
    unsigned hashes = 0;
    while (p->pos < p->len && s[p->pos] == '#') {
        if (hashes == UINT16_MAX)
            return fail(p, start, "raw string", "too many '#' around a raw string");
        hashes++;
        p->pos++;
    }
    if (p->pos >= p->len || s[p->pos] != '"')
        return fail_unexpected(p, p->pos, "'\"' after the '#' of a raw string");
    if (p->version == 2 && at3(p, p->pos, '"', '"', '"'))
        return parse_multiline(p, start, hashes, true, out);
    size_t body = ++p->pos;
    for (;;) {
        if (p->pos >= p->len)
            return fail(p, start, "string starts here",
                        "unterminated raw string: no closing '\"%.*s'",
                        (int)(hashes > 32 ? 32 : hashes), "################################");
        unsigned char c = s[p->pos];
        if (c == '"') {
            size_t h = 0;
            while (h < hashes && p->pos + 1 + h < p->len && s[p->pos + 1 + h] == '#')
                h++;
            if (h == hashes) {
                size_t end = p->pos;
                p->pos += 1 + hashes;
                return arena_str(p->arena, s + body, end - body, out) < 0 ? oom(p) : 0;
            }
            p->pos++;
            continue;
        }
        if (c >= 0x20 && c < 0x7f) {
            p->pos++;
            continue;
        }
        unsigned n = newline_at(s, p->len, p->pos);
        if (n) {
            if (p->version == 1) {
                p->pos += n;
                continue;
            }
            return fail(p, p->pos, "string not closed on this line",
                        "unterminated raw string: no closing '\"%.*s' before the end of the line "
                        "(a multi-line raw string is written #\"\"\" ... \"\"\"#)",
                        (int)(hashes > 32 ? 32 : hashes), "################################");
        }
        int32_t cp = peek(p, p->pos, &n);
        if (is_disallowed(p, cp))
            return fail_unexpected(p, p->pos, "a string character");
        p->pos += n;
    }
}

/* disallowed-keyword-identifiers: 'true' | 'false' | 'null' | 'inf' | '-inf' | 'nan' */
static bool is_reserved(const unsigned char *t, size_t n)
{
    switch (n) {
    case 3:
        return memcmp(t, "inf", 3) == 0 || memcmp(t, "nan", 3) == 0;
    case 4:
        return memcmp(t, "true", 4) == 0 || memcmp(t, "null", 4) == 0 || memcmp(t, "-inf", 4) == 0;
    case 5:
        return memcmp(t, "false", 5) == 0;
    default:
        return false;
    }
}

/* identifier-string, checked against the patterns the grammar forbids. */
static int parse_identifier(struct parser *p, kdl_value *v, bool *keyword)
{
    const unsigned char *s = p->s;
    size_t start = p->pos, end = scan_ident(p, start);
    const unsigned char *t = s + start;
    size_t n = end - start;
    *keyword = false;
    if (p->version == 2) {
        /* dotted-ident and signed-ident may not continue with a digit: that is a number */
        size_t i = (t[0] == '+' || t[0] == '-') ? 1 : 0;
        if (i < n && t[i] == '.' && i + 1 < n && is_digit(t[i + 1])) {
            bool numeric = true;
            for (size_t k = i + 1; k < n; k++)
                if (!is_digit(t[k]) && !strchr("_eE+-", t[k]))
                    numeric = false;
            if (numeric)
                return fail(p, start, "not a number",
                            "invalid number '%.*s': a number needs a digit before its decimal "
                            "point (write %.*s0%.*s, or quote it for a string)",
                            clip(t, n, 40), (const char *)t, (int)i, (const char *)t,
                            clip(t + i, n - i, 40), (const char *)t + i);
            return fail(p, start, "not a number or identifier",
                        "'%.*s' is neither a number nor an identifier (an identifier cannot start "
                        "with a digit after '.'): quote it",
                        clip(t, n, 40), (const char *)t);
        }
        static const char *const reserved[] = {"true", "false", "null", "inf", "-inf", "nan"};
        for (size_t k = 0; k < ELEMENTSOF(reserved) && is_reserved(t, n); k++)
            if (n == strlen(reserved[k]) && memcmp(t, reserved[k], n) == 0)
                return fail(p, start, "reserved word",
                            "'%s' cannot be a bare identifier: write #%s for the %s, or "
                            "\"%s\" for the string",
                            reserved[k], reserved[k],
                            k < 2    ? "boolean"
                            : k == 2 ? "null"
                                     : "number",
                            reserved[k]);
    } else {
        if ((n == 4 && memcmp(t, "true", 4) == 0) || (n == 5 && memcmp(t, "false", 5) == 0)) {
            v->type = KDL_VALUE_BOOL;
            v->boolean = t[0] == 't';
            *keyword = true;
            p->pos = end;
            return 0;
        }
        if (n == 4 && memcmp(t, "null", 4) == 0) {
            v->type = KDL_VALUE_NULL;
            *keyword = true;
            p->pos = end;
            return 0;
        }
    }
    v->type = KDL_VALUE_STRING;
    p->pos = end;
    return arena_str(p->arena, t, n, &v->string) < 0 ? oom(p) : 0;
}

/* --- numbers --- */

static int decimal_text(struct parser *p, struct buf *b, kdl_number *num)
{
    if (b->len == 0 || !b->data)
        return oom(p);
    num->is_int64 = false;
    num->i64 = 0;
    if (num->kind == KDL_NUMBER_INTEGER) {
        const char *t = b->data;
        bool neg = *t == '-';
        uint64_t v = 0;
        for (t += neg; *t; t++) {
            unsigned d = (unsigned)(*t - '0');
            if (v > (UINT64_MAX - d) / 10)
                break;
            v = v * 10 + d;
        }
        if (!*t) {
            num->value = neg ? -(double)v : (double)v;
            num->is_int64 = neg ? v <= (uint64_t)INT64_MAX + 1 : v <= (uint64_t)INT64_MAX;
            num->i64 = !num->is_int64 ? 0 : neg ? (int64_t)(0 - v) : (int64_t)v;
            return arena_str(p->arena, b->data, b->len, &num->text) < 0 ? oom(p) : 0;
        }
    }
    num->value = strtod(b->data, NULL);
    return arena_str(p->arena, b->data, b->len, &num->text) < 0 ? oom(p) : 0;
}

/* Multiply the base-1e9 number in p->limbs by mult and add add. */
static int limbs_mul_add(struct parser *p, uint64_t mult, uint64_t add)
{
    uint32_t *l = p->limbs.data;
    uint64_t carry = add;
    for (size_t i = 0; i < p->limbs.n; i++) {
        uint64_t x = (uint64_t)l[i] * mult + carry;
        l[i] = (uint32_t)(x % 1000000000u);
        carry = x / 1000000000u;
    }
    while (carry) {
        uint32_t *slot = stack_push(&p->limbs, sizeof(uint32_t));
        if (!slot)
            return oom(p);
        *slot = (uint32_t)(carry % 1000000000u);
        carry /= 1000000000u;
    }
    return 0;
}

/* Hex, octal or binary digits (underscores allowed, already validated) to decimal text. */
static int radix_to_decimal(struct parser *p, const unsigned char *d, size_t n, unsigned radix,
                            bool neg, kdl_number *num)
{
    struct buf *b = &p->nbuf;
    b->len = 0;
    unsigned bits = radix == 16 ? 4 : radix == 8 ? 3 : 1;
    uint64_t v = 0;
    bool overflow = false;
    for (size_t i = 0; i < n && !overflow; i++) {
        if (d[i] == '_')
            continue;
        if (v >> (64 - bits))
            overflow = true;
        else
            v = v << bits | (uint64_t)digit_value(d[i], radix);
    }
    num->kind = KDL_NUMBER_INTEGER;
    if (!overflow) {
        if (buf_printf(b, "%s%" PRIu64, neg && v ? "-" : "", v) < 0)
            return oom(p);
        num->value = neg ? -(double)v : (double)v;
        num->is_int64 = neg ? v <= (uint64_t)INT64_MAX + 1 : v <= (uint64_t)INT64_MAX;
        num->i64 = !num->is_int64 ? 0 : neg ? (int64_t)(0 - v) : (int64_t)v;
        return arena_str(p->arena, b->data, b->len, &num->text) < 0 ? oom(p) : 0;
    }
    /* Beyond 64 bits: base-1e9 limbs, fed several digits at a time. */
    p->limbs.n = 0;
    uint32_t *l0 = stack_push(&p->limbs, sizeof(uint32_t));
    if (!l0)
        return oom(p);
    *l0 = 0;
    unsigned per = radix == 16 ? 7 : radix == 8 ? 9 : 28, cnt = 0;
    uint64_t chunk = 0, mult = 1;
    for (size_t i = 0; i < n; i++) {
        if (d[i] == '_')
            continue;
        chunk = chunk * radix + (uint64_t)digit_value(d[i], radix);
        mult *= radix;
        if (++cnt == per) {
            if (limbs_mul_add(p, mult, chunk) < 0)
                return -ENOMEM;
            chunk = 0, mult = 1, cnt = 0;
        }
    }
    if (cnt && limbs_mul_add(p, mult, chunk) < 0)
        return -ENOMEM;
    uint32_t *l = p->limbs.data;
    size_t top = p->limbs.n - 1;
    if (buf_printf(b, "%s%" PRIu32, neg ? "-" : "", l[top]) < 0)
        return oom(p);
    for (size_t i = top; i-- > 0;)
        if (buf_printf(b, "%09" PRIu32, l[i]) < 0)
            return oom(p);
    num->is_int64 = false;
    num->value = strtod(b->data, NULL);
    return arena_str(p->arena, b->data, b->len, &num->text) < 0 ? oom(p) : 0;
}

static int number_fail(struct parser *p, size_t start, size_t end, size_t bad, const char *why)
{
    const unsigned char *t = p->s + start;
    size_t n = end - start;
    if (why && *why)
        return fail(p, bad, why, "invalid number '%.*s': %s", clip(t, n, 40), (const char *)t, why);
    unsigned k;
    int32_t c = peek(p, bad, &k);
    char what[64];
    describe_cp(c, p->s + bad, k, what, sizeof(what));
    bool letter = c >= 0 && c < 0x80 && ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    return fail(p, bad, "unexpected here", "invalid number '%.*s': unexpected %s%s", clip(t, n, 40),
                (const char *)t, what,
                letter ? " (an identifier cannot start with a digit: quote strings like this)"
                       : "");
}

/* number := hex | octal | binary | decimal (keyword numbers are parsed with the keywords). The
 * token runs to the next non-identifier character and must all be one number. */
static int parse_number(struct parser *p, kdl_value *v)
{
    const unsigned char *s = p->s;
    size_t start = p->pos, end = scan_ident(p, start), i = start;
    bool neg = false;
    if (s[i] == '+' || s[i] == '-')
        neg = s[i++] == '-';
    v->type = KDL_VALUE_NUMBER;
    kdl_number *num = &v->number;
    p->pos = end;

    if (s[i] == '0' && i + 1 < end && (s[i + 1] == 'x' || s[i + 1] == 'o' || s[i + 1] == 'b')) {
        unsigned radix = s[i + 1] == 'x' ? 16 : s[i + 1] == 'o' ? 8 : 2;
        const char *rname = radix == 16 ? "hexadecimal" : radix == 8 ? "octal" : "binary";
        char why[96];
        i += 2;
        if (i >= end || digit_value(s[i], radix) < 0) {
            snprintf(why, sizeof(why), "expected a%s %s digit after '0%c'", radix == 8 ? "n" : "",
                     rname, s[i - 1]);
            return number_fail(p, start, end, i < end ? i : end, why);
        }
        for (size_t j = i; j < end; j++)
            if (s[j] != '_' && digit_value(s[j], radix) < 0) {
                if (s[j] < 0x21 || s[j] > 0x7e)
                    return number_fail(p, start, end, j, "");
                snprintf(why, sizeof(why), "'%c' is not a%s %s digit", s[j], radix == 8 ? "n" : "",
                         rname);
                return number_fail(p, start, end, j, why);
            }
        return radix_to_decimal(p, s + i, end - i, radix, neg, num);
    }

    size_t j = i;
    while (j < end && (is_digit(s[j]) || s[j] == '_'))
        j++;
    size_t int_end = j, frac = 0, frac_end = 0, exp = 0, exp_end = 0;
    bool exp_neg = false;
    if (j < end && s[j] == '.') {
        j++;
        if (j >= end || !is_digit(s[j]))
            return number_fail(p, start, end, j, "expected a digit after the decimal point");
        frac = j;
        while (j < end && (is_digit(s[j]) || s[j] == '_'))
            j++;
        frac_end = j;
    }
    if (j < end && (s[j] == 'e' || s[j] == 'E')) {
        j++;
        if (j < end && (s[j] == '+' || s[j] == '-'))
            exp_neg = s[j++] == '-';
        if (j >= end || !is_digit(s[j]))
            return number_fail(p, start, end, j, "expected a digit in the exponent");
        exp = j;
        while (j < end && (is_digit(s[j]) || s[j] == '_'))
            j++;
        exp_end = j;
    }
    if (j != end)
        return number_fail(p, start, end, j, "");

    struct buf *b = &p->nbuf;
    b->len = 0;
    if (buf_reserve(b, end - start + 4) < 0)
        return oom(p);
    char *o = b->data;
    size_t k = 0;
    if (neg)
        o[k++] = '-';
    size_t digits = k;
    for (size_t x = i; x < int_end; x++)
        if (s[x] != '_' && !(k == digits && s[x] == '0'))
            o[k++] = (char)s[x];
    if (k == digits)
        o[k++] = '0';
    num->kind = frac || exp ? KDL_NUMBER_DECIMAL : KDL_NUMBER_INTEGER;
    if (num->kind == KDL_NUMBER_INTEGER && neg && k == 2 && o[1] == '0')
        o[0] = '0', k = 1; /* -0 is 0 */
    if (frac) {
        o[k++] = '.';
        for (size_t x = frac; x < frac_end; x++)
            if (s[x] != '_')
                o[k++] = (char)s[x];
    }
    if (exp) {
        o[k++] = 'E';
        o[k++] = exp_neg ? '-' : '+';
        size_t ed = k;
        for (size_t x = exp; x < exp_end; x++)
            if (s[x] != '_' && !(k == ed && s[x] == '0'))
                o[k++] = (char)s[x];
        if (k == ed)
            o[k++] = '0';
    }
    o[k] = 0;
    b->len = k;
    return decimal_text(p, b, num);
}

/* keyword := '#true' | '#false' | '#null'; keyword-number := '#inf' | '#-inf' | '#nan' */
static int parse_keyword(struct parser *p, kdl_value *v)
{
    size_t start = p->pos, end = scan_ident(p, start + 1);
    const char *w = (const char *)p->s + start + 1;
    size_t n = end - start - 1;
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(w, lit, n) == 0)
    if (IS("true") || IS("false")) {
        v->type = KDL_VALUE_BOOL;
        v->boolean = w[0] == 't';
    } else if (IS("null")) {
        v->type = KDL_VALUE_NULL;
    } else if (IS("inf") || IS("-inf") || IS("nan")) {
        v->type = KDL_VALUE_NUMBER;
        v->number.kind = w[0] == 'i'   ? KDL_NUMBER_INF
                         : w[0] == '-' ? KDL_NUMBER_NEG_INF
                                       : KDL_NUMBER_NAN;
        v->number.value = w[0] == 'i' ? INFINITY : w[0] == '-' ? -INFINITY : NAN;
        if (arena_str(p->arena, w - 1, n + 1, &v->number.text) < 0)
            return oom(p);
    } else {
        if (n == 0)
            return fail_unexpected(p, start + 1,
                                   "a keyword (#true, #false, #null, #inf, #-inf, #nan) or '\"' "
                                   "of a raw string after '#'");
        return fail(p, start, "unknown keyword",
                    "unknown keyword '#%.*s': the keywords are #true, #false, #null, #inf, #-inf "
                    "and #nan",
                    clip((const unsigned char *)w, n, 40), w);
    }
#undef IS
    p->pos = end;
    return 0;
}

/* --- values, entries, nodes --- */

/* string | number | keyword at p->pos. *bare: it was an identifier string (v1 allows those only
 * as names and keys). */
static int parse_value(struct parser *p, kdl_value *v, bool *bare, const char *what)
{
    const unsigned char *s = p->s;
    size_t at = p->pos;
    *bare = false;
    if (at >= p->len)
        return fail_unexpected(p, at, what);
    unsigned char c = s[at];
    v->offset = v->has_type ? v->offset : at;
    if (c == '"') {
        v->type = KDL_VALUE_STRING;
        return parse_quoted(p, &v->string);
    }
    if (p->version == 2 && c == '#') {
        if (at + 1 < p->len && (s[at + 1] == '#' || s[at + 1] == '"')) {
            v->type = KDL_VALUE_STRING;
            return parse_raw(p, at, &v->string);
        }
        return parse_keyword(p, v);
    }
    if (p->version == 1 && c == 'r') {
        size_t h = at + 1;
        while (h < p->len && s[h] == '#')
            h++;
        if (h < p->len && s[h] == '"') {
            v->type = KDL_VALUE_STRING;
            p->pos++;
            return parse_raw(p, at, &v->string);
        }
    }
    if (is_digit(c) || ((c == '+' || c == '-') && at + 1 < p->len && is_digit(s[at + 1])))
        return parse_number(p, v);
    if (ident_start(p, at)) {
        bool keyword;
        int r = parse_identifier(p, v, &keyword);
        *bare = !keyword;
        return r;
    }
    return fail_unexpected(p, at, what);
}

/* A string where only a string may be: node names and type annotations. */
static int parse_string_only(struct parser *p, kdl_str *out, const char *what)
{
    kdl_value v = {0};
    bool bare;
    size_t at = p->pos;
    int r = parse_value(p, &v, &bare, what);
    if (r < 0)
        return r;
    if (v.type != KDL_VALUE_STRING)
        return fail(p, at, "not a string", "expected %s, found a %s: quote it to make it a string",
                    what,
                    v.type == KDL_VALUE_NUMBER ? "number"
                    : v.type == KDL_VALUE_BOOL ? "boolean"
                                               : "null");
    *out = v.string;
    return 0;
}

/* type := '(' node-space* string node-space* ')' */
static int parse_type(struct parser *p, kdl_str *out)
{
    size_t open = p->pos++;
    int r = p->version == 2 ? skip_node_space(p) : 0;
    if (r < 0)
        return r;
    if (p->pos < p->len && p->s[p->pos] == ')')
        return fail(p, open, "empty type annotation",
                    "empty type annotation: write a type name in the parentheses, or (\"\") for "
                    "an empty one");
    r = parse_string_only(p, out, "a type name");
    if (r < 0)
        return r;
    r = p->version == 2 ? skip_node_space(p) : 0;
    if (r < 0)
        return r;
    if (p->pos >= p->len || p->s[p->pos] != ')')
        return fail_unexpected(p, p->pos, "')' to close the type annotation");
    p->pos++;
    return 0;
}

/* value := type? node-space* (string | number | keyword) */
static int parse_typed_value(struct parser *p, kdl_value *v, bool *bare, const char *what)
{
    if (p->pos < p->len && p->s[p->pos] == '(') {
        v->offset = p->pos;
        v->has_type = true;
        int r = parse_type(p, &v->type_annotation);
        if (r < 0)
            return r;
        r = p->version == 2 ? skip_node_space(p) : 0;
        if (r < 0)
            return r;
        what = "a value after the type annotation";
    }
    return parse_value(p, v, bare, what);
}

static int bare_value_v1(struct parser *p, size_t at)
{
    if (p->s[at] == '#')
        return fail(p, at, "KDL v2 syntax",
                    "'#' keywords and #\"raw\"# strings are KDL v2: this document is read as "
                    "KDL v1 (write true, false, null, r\"raw\"), or drop its kdl-version 1 "
                    "marker");
    return fail(p, at, "bare identifier",
                "KDL v1 does not allow identifiers as values: quote the string");
}

/* node-prop-or-arg := prop | value; prop := string node-space* '=' node-space* value */
static int parse_entry(struct parser *p, bool keep)
{
    size_t at = p->pos;
    kdl_value v = {0};
    bool bare;
    int r;
    bool typed = p->s[at] == '(';
    r = parse_typed_value(p, &v, &bare, "an argument or a property");
    if (r < 0)
        return r;
    if (v.type == KDL_VALUE_STRING) {
        size_t save = p->pos;
        r = skip_node_space(p);
        if (r < 0)
            return r;
        if (p->pos < p->len && p->s[p->pos] == '=') {
            if (typed)
                return fail(p, at, "type annotation on a key",
                            "a property key cannot have a type annotation: put it on the value, "
                            "key=(type)value");
            if (p->version == 1 && r > 0)
                return fail(p, save, "space before '='",
                            "KDL v1 allows no whitespace between a property key and '='");
            size_t eq = p->pos++;
            r = p->version == 2 ? skip_node_space(p) : 0;
            if (r < 0)
                return r;
            kdl_value val = {0};
            size_t vat = p->pos;
            r = parse_typed_value(p, &val, &bare, "a property value after '='");
            if (r < 0)
                return r;
            if (p->version == 1 && bare)
                return bare_value_v1(p, vat);
            (void)eq;
            if (!keep)
                return 0;
            kdl_prop *prop = stack_push(&p->props, sizeof(kdl_prop));
            if (!prop)
                return oom(p);
            prop->key = v.string;
            prop->value = val;
            prop->offset = at;
            return 0;
        }
        p->pos = save;
    }
    if (p->version == 1 && bare)
        return bare_value_v1(p, at);
    if (!keep)
        return 0;
    kdl_value *slot = stack_push(&p->values, sizeof(kdl_value));
    if (!slot)
        return oom(p);
    *slot = v;
    return 0;
}

static int keys_cmp(const kdl_str *a, const kdl_str *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->data, b->data, n);
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static int prop_index_cmp(const void *a, const void *b, void *arg)
{
    const kdl_prop *props = arg;
    size_t ia = *(const size_t *)a, ib = *(const size_t *)b;
    int c = keys_cmp(&props[ia].key, &props[ib].key);
    return c ? c : ia < ib ? -1 : ia > ib;
}

/* Move the entries parsed for a node (values[vbase..], props[pbase..]) into the arena, the
 * properties with duplicates resolved (the rightmost wins). */
static int finish_entries(struct parser *p, kdl_node *n, size_t vbase, size_t pbase)
{
    size_t na = p->values.n - vbase, np = p->props.n - pbase;
    if (na) {
        n->args = arena_alloc(p->arena, na * sizeof(kdl_value));
        if (!n->args)
            return oom(p);
        memcpy(n->args, (kdl_value *)p->values.data + vbase, na * sizeof(kdl_value));
        n->n_args = na;
    }
    p->values.n = vbase;
    if (!np)
        return 0;
    kdl_prop *props = (kdl_prop *)p->props.data + pbase;
    p->marks.n = 0;
    for (size_t i = 0; i < np; i++)
        if (!stack_push(&p->marks, 1))
            return oom(p);
    uint8_t *dead = p->marks.data;
    memset(dead, 0, np);
    size_t alive = np;
    if (np <= 16) {
        for (size_t i = 0; i < np; i++)
            for (size_t j = i + 1; j < np && !dead[i]; j++)
                if (keys_cmp(&props[i].key, &props[j].key) == 0)
                    dead[i] = 1, alive--;
    } else {
        size_t *idx = malloc(np * sizeof(size_t));
        if (!idx)
            return oom(p);
        for (size_t i = 0; i < np; i++)
            idx[i] = i;
        qsort_r(idx, np, sizeof(size_t), prop_index_cmp, props);
        for (size_t i = 0; i + 1 < np; i++)
            if (keys_cmp(&props[idx[i]].key, &props[idx[i + 1]].key) == 0)
                dead[idx[i]] = 1, alive--;
        free(idx);
    }
    n->props = arena_alloc(p->arena, alive * sizeof(kdl_prop));
    if (!n->props)
        return oom(p);
    for (size_t i = 0, k = 0; i < np; i++)
        if (!dead[i])
            n->props[k++] = props[i];
    n->n_props = alive;
    p->props.n = pbase;
    return 0;
}

static int parse_nodes(struct parser *p, bool in_block, size_t open);

/* node-children := '{' nodes final-node? '}' */
static int parse_children(struct parser *p, kdl_node *n, bool keep)
{
    size_t open = p->pos;
    if (p->depth >= KDL_MAX_DEPTH)
        return fail(p, open, "too deep", "children blocks nested more than %d levels deep",
                    KDL_MAX_DEPTH);
    p->pos++;
    p->depth++;
    size_t base = p->nodes.n;
    int r = parse_nodes(p, true, open);
    if (r < 0)
        return r;
    p->pos++; /* '}' */
    p->depth--;
    size_t cnt = p->nodes.n - base;
    if (keep && cnt) {
        n->children = arena_alloc(p->arena, cnt * sizeof(kdl_node));
        if (!n->children)
            return oom(p);
        memcpy(n->children, (kdl_node *)p->nodes.data + base, cnt * sizeof(kdl_node));
        n->n_children = cnt;
    }
    p->nodes.n = base;
    return 0;
}

/* node := base-node node-terminator (final-node before '}'): p->pos at its first character. */
static int parse_node(struct parser *p, bool in_block, bool keep)
{
    const unsigned char *s = p->s;
    kdl_node n = {.offset = p->pos};
    size_t vbase = p->values.n, pbase = p->props.n;
    int r;
    if (s[p->pos] == '(') {
        n.has_type = true;
        r = parse_type(p, &n.type_annotation);
        if (r < 0)
            return r;
        r = p->version == 2 ? skip_node_space(p) : 0;
        if (r < 0)
            return r;
    }
    r = parse_string_only(p, &n.name, "a node name");
    if (r < 0)
        return r;

    bool entries_ok = true, children = false, any_children = false;
    for (;;) {
        int sp = skip_node_space(p);
        if (sp < 0)
            return sp;
        if (p->pos >= p->len)
            break;
        unsigned char c = s[p->pos];
        if (c == ';' || c == '}' || newline_at(s, p->len, p->pos) || at2(p, p->pos, '/', '/'))
            break;
        if (at2(p, p->pos, '/', '-')) {
            size_t sd = p->pos;
            if (p->version == 1 && !sp)
                return fail(p, sd, "missing whitespace", "KDL v1 needs whitespace before '/-'");
            p->pos += 2;
            r = p->version == 2 ? skip_line_space(p) : skip_ws(p);
            if (r < 0)
                return r;
            if (at2(p, p->pos, '/', '-'))
                return fail(p, p->pos, "second slashdash", "'/-' cannot follow another '/-'");
            if (p->pos >= p->len || s[p->pos] == '}' || s[p->pos] == ';' ||
                newline_at(s, p->len, p->pos))
                return fail(p, sd, "comments out nothing",
                            "'/-' must be followed by an argument, a property or a children "
                            "block to comment out");
            if (s[p->pos] == '{') {
                if (p->version == 1 && any_children)
                    return fail(p, p->pos, "second children block",
                                "a node has at most one children block in KDL v1");
                r = parse_children(p, &n, false);
                if (r < 0)
                    return r;
                entries_ok = false;
                any_children = true;
                continue;
            }
            if (!entries_ok)
                return fail(p, sd, "after the children block",
                            "arguments and properties must come before the node's children "
                            "block");
            r = parse_entry(p, false);
            if (r < 0)
                return r;
            continue;
        }
        if (c == '{') {
            if (children || (p->version == 1 && any_children))
                return fail(p, p->pos, "second children block",
                            "a node has at most one children block (comment extra ones out with "
                            "/-, or end the node with ';' or a newline first)");
            r = parse_children(p, &n, keep);
            if (r < 0)
                return r;
            children = any_children = true;
            entries_ok = false;
            continue;
        }
        if (!entries_ok) {
            unsigned k;
            if (is_disallowed(p, peek(p, p->pos, &k)))
                return fail_unexpected(p, p->pos, "';' or a newline");
            return fail(p, p->pos, "expected ';' or a newline",
                        "a node ends after its children block: put ';' or a newline before the "
                        "next node, and arguments and properties before the '{'");
        }
        if (c == '=')
            return fail(p, p->pos, "unexpected '='",
                        "unexpected '=': a property key must be a string (quote numbers and "
                        "keywords used as keys)");
        if (!sp)
            return fail_unexpected(p, p->pos,
                                   "whitespace between a node's name, arguments and properties");
        r = parse_entry(p, keep);
        if (r < 0)
            return r;
    }

    /* node-terminator: single-line-comment | newline | ';' | eof, or the parent's '}' */
    if (p->pos < p->len) {
        unsigned nl = newline_at(s, p->len, p->pos);
        if (nl) {
            p->pos += nl;
        } else if (s[p->pos] == ';') {
            p->pos++;
        } else if (at2(p, p->pos, '/', '/')) {
            r = skip_line_comment(p);
            if (r < 0)
                return r;
        } else if (!in_block) {
            return fail(p, p->pos, "no block to close",
                        "unexpected '}': there is no children block to close");
        }
    }
    if (!keep) {
        p->values.n = vbase;
        p->props.n = pbase;
        return 0;
    }
    r = finish_entries(p, &n, vbase, pbase);
    if (r < 0)
        return r;
    kdl_node *slot = stack_push(&p->nodes, sizeof(kdl_node));
    if (!slot)
        return oom(p);
    *slot = n;
    return 0;
}

/* nodes := (line-space* node)* line-space* */
static int parse_nodes(struct parser *p, bool in_block, size_t open)
{
    const unsigned char *s = p->s;
    for (;;) {
        int r = skip_line_space(p);
        if (r < 0)
            return r;
        if (p->pos >= p->len) {
            if (in_block)
                return fail(p, open, "block opened here",
                            "unterminated children block: '{' without a matching '}'");
            return 0;
        }
        if (s[p->pos] == '}') {
            if (in_block)
                return 0;
            return fail(p, p->pos, "no block to close",
                        "unexpected '}': there is no children block to close");
        }
        bool keep = true;
        if (at2(p, p->pos, '/', '-')) {
            size_t sd = p->pos;
            p->pos += 2;
            r = p->version == 2 ? skip_line_space(p) : skip_ws(p);
            if (r < 0)
                return r;
            if (at2(p, p->pos, '/', '-'))
                return fail(p, p->pos, "second slashdash", "'/-' cannot follow another '/-'");
            if (p->pos >= p->len || s[p->pos] == '}')
                return fail(p, sd, "comments out nothing",
                            "'/-' must be followed by a node to comment out");
            keep = false;
        }
        r = parse_node(p, in_block, keep);
        if (r < 0)
            return r;
    }
}

/* version := '/-' unicode-space* 'kdl-version' unicode-space+ ('1' | '2') unicode-space* newline
 * (after an optional BOM). Returns 1 or 2, or 0 when the document has no marker. */
static int detect_version(const unsigned char *s, size_t len)
{
    size_t i = len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    unsigned n;
    if (len - i < 2 || memcmp(s + i, "/-", 2) != 0)
        return 0;
    for (i += 2; i < len; i += n) {
        int32_t c = utf8_decode(s, len, i, &n);
        if (c < 0 || !cp_is_space((uint32_t)c))
            break;
    }
    if (len - i < 11 || memcmp(s + i, "kdl-version", 11) != 0)
        return 0;
    size_t sp = i += 11;
    for (; i < len; i += n) {
        int32_t c = utf8_decode(s, len, i, &n);
        if (c < 0 || !cp_is_space((uint32_t)c))
            break;
    }
    if (i == sp || i >= len || (s[i] != '1' && s[i] != '2'))
        return 0;
    int v = s[i++] - '0';
    for (; i < len; i += n) {
        int32_t c = utf8_decode(s, len, i, &n);
        if (c < 0 || !cp_is_space((uint32_t)c))
            break;
    }
    return i >= len || newline_at(s, len, i) ? v : 0;
}

/* document := bom? version? nodes */
static int parse_document(struct parser *p)
{
    if (p->len >= 3 && memcmp(p->s, "\xef\xbb\xbf", 3) == 0)
        p->pos = 3;
    int r = parse_nodes(p, false, 0);
    if (r < 0)
        return r;
    return 0;
}

/* --- diagnostics --- */

void kdl_position(const char *src, size_t len, size_t offset, unsigned *ret_line,
                  unsigned *ret_column)
{
    const unsigned char *s = (const unsigned char *)src;
    if (offset > len)
        offset = len;
    size_t line_start = len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
    unsigned line = 1, col = 1;
    for (size_t i = line_start; i < offset;) {
        unsigned nl = newline_at(s, len, i);
        if (nl && i + nl <= offset) {
            i += nl;
            line++;
            line_start = i;
            continue;
        }
        i++;
    }
    for (size_t i = line_start; i < offset; i++)
        if ((s[i] & 0xc0) != 0x80)
            col++;
    if (ret_line)
        *ret_line = line;
    if (ret_column)
        *ret_column = col;
}

char *kdl_snippet(const char *path, const char *src, size_t len, size_t offset, const char *label)
{
    const unsigned char *s = (const unsigned char *)src;
    unsigned line, col;
    if (offset > len)
        offset = len;
    kdl_position(src, len, offset, &line, &col);

    /* the line around offset */
    size_t ls = offset;
    while (ls > 0) {
        size_t k = ls - 1;
        /* step back over one code point and see whether it is a newline */
        while (k > 0 && (s[k] & 0xc0) == 0x80 && ls - k < 4)
            k--;
        if (newline_at(s, len, k) && k + newline_at(s, len, k) <= ls)
            break;
        ls = k;
    }
    if (ls == 0 && len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0 && offset >= 3)
        ls = 3;
    size_t le = ls;
    while (le < len && !newline_at(s, len, le))
        le++;

    /* Show at most ~100 columns: a window around the column on long lines. */
    size_t from = ls, to = le;
    unsigned before = 0;
    for (size_t i = ls; i < offset && i < le; i++)
        if ((s[i] & 0xc0) != 0x80)
            before++;
    if (before > 60) {
        unsigned skip = before - 40;
        while (skip > 0 && from < offset) {
            from++;
            while (from < le && (s[from] & 0xc0) == 0x80)
                from++;
            skip--;
        }
    }
    struct buf out = {0}, text = {0};
    unsigned caret = 0, width = 0, shown = 0;
    if (from > ls) {
        buf_puts(&text, "...");
        width = 3;
    }
    size_t i = from;
    for (; i < to && shown < 100;) {
        if (i == offset)
            caret = width;
        unsigned n;
        int32_t c = utf8_decode(s, len, i, &n);
        if (c == '\t') {
            buf_puts(&text, "    ");
            width += 4;
        } else if (c < 0 || cp_is_disallowed((uint32_t)c) || c < 0x20) {
            buf_puts(&text, "\xef\xbf\xbd"); /* U+FFFD */
            width += 1;
        } else {
            buf_put(&text, s + i, n);
            width += cp_width((uint32_t)c);
        }
        i += n;
        shown++;
    }
    if (i < to) {
        if (offset >= i)
            caret = width + 1;
        buf_puts(&text, " ...");
        width += 4;
    } else if (offset >= i) {
        caret = width;
    }

    char num[16];
    int w = snprintf(num, sizeof(num), "%u", line);
    buf_printf(&out, " %*s ,-[%s:%u:%u]\n", w, "", path, line, col);
    buf_printf(&out, " %s | %s\n", num, text.data ? text.data : "");
    buf_printf(&out, " %*s | %*s^%s%s\n", w, "", (int)caret, "", label && *label ? " " : "",
               label ? label : "");
    buf_printf(&out, " %*s `----", w, "");
    free(text.data);
    return out.data;
}

unsigned kdl_line_at(const char *src, size_t len, kdl_line_cursor *cur, size_t offset)
{
    const unsigned char *s = (const unsigned char *)src;
    if (offset > len)
        offset = len;
    if (cur->line == 0 || offset < cur->offset) {
        cur->offset = len >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0 ? 3 : 0;
        cur->line = 1;
    }
    size_t i = cur->offset;
    unsigned line = cur->line;
    while (i < offset) {
        unsigned nl = newline_at(s, len, i);
        if (nl && i + nl <= offset) {
            i += nl;
            line++;
            continue;
        }
        i++;
    }
    cur->offset = i;
    cur->line = line;
    return line;
}

static int position_error(vmctl_error **reterr, vmctl_error_kind kind, const char *path,
                          const char *src, size_t len, size_t offset, const char *label,
                          const char *msg)
{
    unsigned line, col;
    kdl_position(src, len, offset, &line, &col);
    int r = err_make(reterr, kind, EINVAL, "%s:%u:%u: %s", path, line, col, msg);
    err_detail(reterr, "path", "%s", path);
    err_detail_num(reterr, "line", line);
    err_detail_num(reterr, "column", col);
    char *snip = kdl_snippet(path, src, len, offset, label);
    if (snip)
        err_note(reterr, "%s", snip);
    free(snip);
    return r;
}

int kdl_error_at(const kdl_document *doc, vmctl_error **reterr, vmctl_error_kind kind,
                 size_t offset, const char *label, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    int r = position_error(reterr, kind, doc->path, doc->source, doc->source_len, offset, label,
                           msg ? msg : "out of memory");
    free(msg);
    return r;
}

/* --- documents --- */

void kdl_document_free(kdl_document *doc)
{
    if (!doc)
        return;
    arena_free(doc->arena);
    free(doc);
}

static int run_parser(kdl_document *doc, int version, struct parser *p)
{
    *p = (struct parser){
        .s = (const unsigned char *)doc->source,
        .len = doc->source_len,
        .version = version,
        .arena = doc->arena,
    };
    int r = parse_document(p);
    if (r < 0)
        return p->oom ? -ENOMEM : -EINVAL;
    size_t n = p->nodes.n;
    if (n) {
        doc->nodes = arena_alloc(doc->arena, n * sizeof(kdl_node));
        if (!doc->nodes)
            return -ENOMEM;
        memcpy(doc->nodes, p->nodes.data, n * sizeof(kdl_node));
    }
    doc->n_nodes = n;
    doc->version = version;
    return 0;
}

int kdl_parse(const char *path, const char *buf, size_t len, int version, kdl_document **ret,
              vmctl_error **reterr)
{
    if (!path)
        path = "<input>";
    if (!ret || (!buf && len) || version < 0 || version > KDL_VERSION_FALLBACK)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "kdl_parse: invalid arguments");
    kdl_document *doc = calloc(1, sizeof(*doc));
    if (!doc)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory parsing '%s'", path);
    doc->arena = calloc(1, sizeof(struct kdl_arena));
    char *src = doc->arena ? arena_alloc(doc->arena, len + 1) : NULL;
    kdl_str path_copy;
    if (!src || arena_str(doc->arena, path, strlen(path), &path_copy) < 0) {
        kdl_document_free(doc);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory parsing '%s'", path);
    }
    if (len)
        memcpy(src, buf, len);
    src[len] = 0;
    doc->source = src;
    doc->source_len = len;
    doc->path = path_copy.data;

    int marker = detect_version((const unsigned char *)src, len);
    int first = version == KDL_VERSION_1 || (version != KDL_VERSION_2 && marker == 1) ? 1 : 2;
    struct parser p;
    int r = run_parser(doc, first, &p);
    if (r == -EINVAL && first == 2 && version == KDL_VERSION_FALLBACK && marker == 0) {
        struct parser p1;
        if (run_parser(doc, 1, &p1) == 0)
            r = 0;
        parser_done(&p1);
    }
    if (r < 0) {
        if (r == -ENOMEM)
            err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory parsing '%s'", path);
        else
            position_error(reterr, VMCTL_E_VMFILE_PARSE_FAILED, path, src, len, p.err_pos,
                           p.err_label, p.err_msg);
        parser_done(&p);
        kdl_document_free(doc);
        return r;
    }
    parser_done(&p);
    *ret = doc;
    return 0;
}

const kdl_prop *kdl_node_prop(const kdl_node *node, const char *key)
{
    size_t n = strlen(key);
    for (size_t i = 0; i < node->n_props; i++)
        if (node->props[i].key.len == n && memcmp(node->props[i].key.data, key, n) == 0)
            return &node->props[i];
    return NULL;
}

/* --- the canonical printer --- */

bool kdl_is_bare_identifier(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    if (len == 0 || is_digit(s[0]))
        return false;
    for (size_t i = 0; i < len;) {
        unsigned n;
        int32_t c = utf8_decode(s, len, i, &n);
        if (c < 0)
            return false;
        if (c < 0x80 ? !(ascii[c] & C_ID2)
                     : cp_is_space((uint32_t)c) || cp_is_newline((uint32_t)c) ||
                           cp_is_disallowed((uint32_t)c))
            return false;
        i += n;
    }
    size_t i = s[0] == '+' || s[0] == '-' ? 1 : 0;
    if (i == 1 && len > 1 && is_digit(s[1]))
        return false;
    if (i < len && s[i] == '.' && i + 1 < len && is_digit(s[i + 1]))
        return false;
    return !is_reserved(s, len);
}

static int put_string(struct buf *b, const kdl_str *str)
{
    if (kdl_is_bare_identifier(str->data, str->len))
        return buf_put(b, str->data, str->len);
    const unsigned char *s = (const unsigned char *)str->data;
    if (buf_reserve(b, str->len + 2) < 0)
        return -ENOMEM;
    buf_putc(b, '"');
    size_t seg = 0;
    for (size_t i = 0; i < str->len;) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
            i++;
            continue;
        }
        unsigned n;
        int32_t cp = utf8_decode(s, str->len, i, &n);
        const char *esc = NULL;
        char tmp[16];
        switch (cp) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (cp < 0) {
                esc = "\\u{fffd}";
            } else if (cp < 0x20 || cp_is_newline((uint32_t)cp) || cp_is_disallowed((uint32_t)cp)) {
                snprintf(tmp, sizeof(tmp), "\\u{%x}", (unsigned)cp);
                esc = tmp;
            }
        }
        if (esc) {
            if (buf_put(b, s + seg, i - seg) < 0 || buf_puts(b, esc) < 0)
                return -ENOMEM;
            seg = i + n;
        }
        i += n;
    }
    if (buf_put(b, s + seg, str->len - seg) < 0)
        return -ENOMEM;
    return buf_putc(b, '"');
}

static int put_value(struct buf *b, const kdl_value *v)
{
    if (v->has_type &&
        (buf_putc(b, '(') < 0 || put_string(b, &v->type_annotation) < 0 || buf_putc(b, ')') < 0))
        return -ENOMEM;
    switch (v->type) {
    case KDL_VALUE_STRING:
        return put_string(b, &v->string);
    case KDL_VALUE_NUMBER:
        return buf_put(b, v->number.text.data, v->number.text.len);
    case KDL_VALUE_BOOL:
        return buf_puts(b, v->boolean ? "#true" : "#false");
    case KDL_VALUE_NULL:
    default:
        return buf_puts(b, "#null");
    }
}

static int prop_ptr_cmp(const void *a, const void *b)
{
    const kdl_prop *pa = *(const kdl_prop *const *)a, *pb = *(const kdl_prop *const *)b;
    return keys_cmp(&pa->key, &pb->key);
}

static int put_indent(struct buf *b, unsigned depth)
{
    if (buf_reserve(b, depth * 4) < 0)
        return -ENOMEM;
    memset(b->data + b->len, ' ', depth * 4);
    b->len += depth * 4;
    b->data[b->len] = 0;
    return 0;
}

static int put_node(struct buf *b, const kdl_node *n, unsigned depth)
{
    if (put_indent(b, depth) < 0)
        return -ENOMEM;
    if (n->has_type &&
        (buf_putc(b, '(') < 0 || put_string(b, &n->type_annotation) < 0 || buf_putc(b, ')') < 0))
        return -ENOMEM;
    if (put_string(b, &n->name) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < n->n_args; i++)
        if (buf_putc(b, ' ') < 0 || put_value(b, &n->args[i]) < 0)
            return -ENOMEM;
    if (n->n_props) {
        const kdl_prop **sorted = malloc(n->n_props * sizeof(*sorted));
        if (!sorted)
            return -ENOMEM;
        for (size_t i = 0; i < n->n_props; i++)
            sorted[i] = &n->props[i];
        qsort(sorted, n->n_props, sizeof(*sorted), prop_ptr_cmp);
        int r = 0;
        for (size_t i = 0; i < n->n_props && r == 0; i++)
            if (buf_putc(b, ' ') < 0 || put_string(b, &sorted[i]->key) < 0 ||
                buf_putc(b, '=') < 0 || put_value(b, &sorted[i]->value) < 0)
                r = -ENOMEM;
        free(sorted);
        if (r < 0)
            return r;
    }
    if (n->n_children) {
        if (buf_puts(b, " {\n") < 0)
            return -ENOMEM;
        for (size_t i = 0; i < n->n_children; i++)
            if (put_node(b, &n->children[i], depth + 1) < 0)
                return -ENOMEM;
        if (put_indent(b, depth) < 0 || buf_putc(b, '}') < 0)
            return -ENOMEM;
    }
    return buf_putc(b, '\n');
}

int kdl_format(const kdl_document *doc, char **ret, size_t *ret_len)
{
    struct buf b = {0};
    int r = 0;
    for (size_t i = 0; i < doc->n_nodes && r == 0; i++)
        r = put_node(&b, &doc->nodes[i], 0);
    if (r == 0 && doc->n_nodes == 0)
        r = buf_putc(&b, '\n');
    if (r < 0) {
        free(b.data);
        return -ENOMEM;
    }
    if (ret_len)
        *ret_len = b.len;
    *ret = b.data;
    return 0;
}

/* --- public API --- */

int vmctl_kdl_format_buffer(const char *name, const char *data, size_t len,
                            vmctl_kdl_version version, char **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(data || !len, reterr);
    cleanup_kdl_document kdl_document *doc = NULL;
    int r = kdl_parse(name, data, len, (int)version, &doc, reterr);
    if (r < 0)
        return r;
    if (kdl_format(doc, ret, NULL) < 0)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory formatting '%s'",
                        name ? name : "<input>");
    return 0;
}

int vmctl_kdl_format(const char *path, vmctl_kdl_version version, char **ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(path, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    cleanup_free char *data = NULL;
    size_t len = 0;
    int r = read_file(path, &data, &len);
    if (r < 0) {
        r = err_make(reterr, r == -ENOENT ? VMCTL_E_VMFILE_NOT_FOUND : VMCTL_E_IO, -r,
                     "cannot read '%s': %s", path, strerror(-r));
        err_detail(reterr, "path", "%s", path);
        if (r == -ENOENT)
            err_help(reterr, "Check the file name; `vmctl kdl fmt -` reads standard input");
        return r;
    }
    return vmctl_kdl_format_buffer(path, data, len, version, ret, reterr);
}
