/* SPDX-License-Identifier: MIT */
/* KDL: a recursive-descent parser for KDL v2 (and v1) over a byte buffer: the arena, scratch
 * buffers, the parser state and its errors, and whole documents. The grammar is
 * shared/reference/kdl-v2-spec.md ("Full Grammar"); comments name its productions. One parser
 * serves both versions: the few places where KDL v1 differs check p->version. kdl-internal.h
 * lists the other files. */
#include "kdl-internal.h"

/* --- arena: everything a document holds, freed at once --- */

void *kdl_arena_alloc(struct kdl_arena *a, size_t n)
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
int kdl_arena_str(struct kdl_arena *a, const void *data, size_t len, kdl_str *out)
{
    char *s = kdl_arena_alloc(a, len + 1);
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

int kdl_buf_reserve(struct buf *b, size_t extra)
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

int kdl_buf_put(struct buf *b, const void *data, size_t n)
{
    if (kdl_buf_reserve(b, n) < 0)
        return -ENOMEM;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int kdl_buf_putc(struct buf *b, char c)
{
    if (kdl_buf_reserve(b, 1) < 0)
        return -ENOMEM;
    b->data[b->len++] = c;
    b->data[b->len] = 0;
    return 0;
}

int kdl_buf_puts(struct buf *b, const char *s)
{
    return kdl_buf_put(b, s, strlen(s));
}

int kdl_buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int kdl_buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || kdl_buf_reserve(b, (size_t)n + 1) < 0)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

size_t kdl_utf8_encode(uint32_t cp, char out[4])
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

void *kdl_stack_push(struct stack *s, size_t elem)
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

/* --- the parser --- */

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

int kdl_oom(struct parser *p)
{
    p->oom = true;
    return -ENOMEM;
}

int kdl_fail(struct parser *p, size_t pos, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int kdl_fail(struct parser *p, size_t pos, const char *label, const char *fmt, ...)
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

void kdl_describe_cp(int32_t c, const unsigned char *at, unsigned n, char *buf, size_t size)
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
int kdl_fail_unexpected(struct parser *p, size_t pos, const char *expected)
{
    unsigned n;
    int32_t c = peek(p, pos, &n);
    if (c == CP_BAD)
        return kdl_fail(p, pos, "invalid UTF-8",
                        "invalid UTF-8 byte 0x%02x: KDL documents are UTF-8", p->s[pos]);
    if (is_disallowed(p, c)) {
        if (c == 0xfeff)
            return kdl_fail(
                p, pos, "byte order mark",
                "a byte order mark (U+FEFF) is only allowed at the start of a document");
        return kdl_fail(
            p, pos, "disallowed code point",
            "disallowed code point U+%04X: control and text-direction characters cannot "
            "appear literally (in a quoted string, write \\u{%X})",
            (unsigned)c, (unsigned)c);
    }
    char what[64], label[96];
    kdl_describe_cp(c, p->s + pos, n, what, sizeof(what));
    snprintf(label, sizeof(label), "expected %s", expected);
    return kdl_fail(p, pos, label, "unexpected %s, expected %s", what, expected);
}

/* At most max bytes of s[0..n) for a message, cut at a code point boundary. */
int kdl_clip(const unsigned char *s, size_t n, size_t max)
{
    if (n <= max)
        return (int)n;
    while (max > 0 && (s[max] & 0xc0) == 0x80)
        max--;
    return (int)max;
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
    int r = kdl_parse_document(p);
    if (r < 0)
        return p->oom ? -ENOMEM : -EINVAL;
    size_t n = p->nodes.n;
    if (n) {
        doc->nodes = kdl_arena_alloc(doc->arena, n * sizeof(kdl_node));
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
    char *src = doc->arena ? kdl_arena_alloc(doc->arena, len + 1) : NULL;
    kdl_str path_copy;
    if (!src || kdl_arena_str(doc->arena, path, strlen(path), &path_copy) < 0) {
        kdl_document_free(doc);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory parsing '%s'", path);
    }
    if (len)
        memcpy(src, buf, len);
    src[len] = 0;
    doc->source = src;
    doc->source_len = len;
    doc->path = path_copy.data;

    int marker = kdl_detect_version((const unsigned char *)src, len);
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
            kdl_position_error(reterr, VMCTL_E_VMFILE_PARSE_FAILED, path, src, len, p.err_pos,
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
