/* SPDX-License-Identifier: MIT */
/* KDL: whitespace, comments and strings (identifier, quoted, raw, multi-line). */
#include "kdl-internal.h"

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
                return kdl_fail_unexpected(p, p->pos, "a comment character");
            p->pos++;
        } else {
            unsigned n;
            int32_t cp = peek(p, p->pos, &n);
            if (is_disallowed(p, cp))
                return kdl_fail_unexpected(p, p->pos, "a comment character");
            p->pos += n;
        }
    }
    return kdl_fail(p, start, "comment starts here",
                    "unterminated block comment: '/*' without a matching '*/'");
}

/* single-line-comment: '//' up to and including the newline (or the end of the file). */
int kdl_skip_line_comment(struct parser *p)
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
                return kdl_fail_unexpected(p, p->pos, "a comment character");
            p->pos++;
            continue;
        }
        unsigned n;
        int32_t cp = peek(p, p->pos, &n);
        if (is_disallowed(p, cp))
            return kdl_fail_unexpected(p, p->pos, "a comment character");
        p->pos += n;
    }
    return 0;
}

/* ws*: unicode-space and block comments. Returns 1 when something was skipped, else 0. */
int kdl_skip_ws(struct parser *p)
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
    int r = kdl_skip_ws(p);
    if (r < 0)
        return r;
    if (p->pos >= p->len) {
        if (p->version == 1)
            return kdl_fail(p, start, "line continuation",
                            "a line continuation '\\' must be followed by a newline");
        return 0;
    }
    if (at2(p, p->pos, '/', '/'))
        return kdl_skip_line_comment(p);
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
        return kdl_fail_unexpected(p, p->pos, "a newline");
    kdl_describe_cp(c, p->s + p->pos, n, what, sizeof(what));
    return kdl_fail(p, start, "not a line continuation",
                    "unexpected '\\': outside strings, a backslash continues the node on the next "
                    "line and must be followed by a newline or a comment, not %s",
                    what);
}

/* node-space*: returns 1 when something was skipped, else 0. */
int kdl_skip_node_space(struct parser *p)
{
    size_t start = p->pos;
    for (;;) {
        int r = kdl_skip_ws(p);
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
int kdl_skip_line_space(struct parser *p)
{
    for (;;) {
        int r = kdl_skip_node_space(p);
        if (r < 0)
            return r;
        unsigned nl = newline_at(p->s, p->len, p->pos);
        if (nl) {
            p->pos += nl;
            continue;
        }
        if (at2(p, p->pos, '/', '/')) {
            r = kdl_skip_line_comment(p);
            if (r < 0)
                return r;
            continue;
        }
        return 0;
    }
}

/* --- strings --- */

/* End of the run of identifier characters starting at i. */
size_t kdl_scan_ident(const struct parser *p, size_t i)
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

bool kdl_ident_start(const struct parser *p, size_t i)
{
    if (i >= p->len)
        return false;
    unsigned char c = p->s[i];
    if (c < 0x80)
        return (ascii[c] & (p->version == 1 ? C_ID1 : C_ID2)) && !is_digit(c);
    return kdl_scan_ident(p, i) > i;
}

/* A '\' escape in a quoted string at p->pos. Appends the code point it stands for to b, or, when
 * verbatim (multi-line strings, whose escapes are resolved after dedenting), the escape's own
 * text. Whitespace escapes ('\' followed by whitespace and newlines) append nothing. */
static int parse_escape(struct parser *p, struct buf *b, bool verbatim)
{
    const unsigned char *s = p->s;
    size_t at = p->pos, i = at + 1;
    if (i >= p->len)
        return kdl_fail(p, at, "escape", "unterminated string: the file ends after '\\'");
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
            return kdl_fail(p, at, "unicode escape",
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
            return kdl_fail(p, at, "unicode escape",
                            "invalid unicode escape: write \\u{XXXX} with 1 to 6 hex digits");
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return kdl_fail(
                p, at, "not a scalar value",
                "invalid unicode escape \\u{%.*s}: not a Unicode scalar value (surrogates "
                "D800-DFFF and values above 10FFFF are not characters)",
                (int)(j - i - 2), (const char *)s + i + 2);
        p->pos = j + 1;
        if (verbatim)
            return kdl_buf_put(b, s + at, p->pos - at) < 0 ? kdl_oom(p) : 0;
        char enc[4];
        return kdl_buf_put(b, enc, kdl_utf8_encode(cp, enc)) < 0 ? kdl_oom(p) : 0;
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
        return kdl_buf_put(b, s + at, 2) < 0 ? kdl_oom(p) : 0;
    return kdl_buf_putc(b, out) < 0 ? kdl_oom(p) : 0;

invalid:;
    unsigned n;
    int32_t cp = peek(p, i, &n);
    if (is_disallowed(p, cp))
        return kdl_fail_unexpected(p, i, "an escape character");
    return kdl_fail(
        p, at, "invalid escape",
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
            size_t k = kdl_utf8_encode(cp, enc);
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
        return kdl_fail(p, p->pos, "expected a newline",
                        "a multi-line string needs a newline right after its opening \"\"\" (for a "
                        "single-line string, use one quote: \"...\")");
    p->pos += nl;

    struct buf *m = &p->mbuf;
    m->len = 0;
    if (kdl_buf_reserve(m, 1) < 0)
        return kdl_oom(p);
    p->offsets.n = 0;
    size_t *off = kdl_stack_push(&p->offsets, sizeof(size_t));
    if (!off)
        return kdl_oom(p);
    *off = p->pos;
    size_t close = 0;
    for (;;) {
        if (p->pos >= p->len)
            return kdl_fail(p, start, "string starts here",
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
            if (kdl_buf_putc(m, '\n') < 0)
                return kdl_oom(p);
            p->pos += nl;
            off = kdl_stack_push(&p->offsets, sizeof(size_t));
            if (!off)
                return kdl_oom(p);
            *off = p->pos;
            continue;
        }
        if (c >= 0x20 && c < 0x7f) {
            if (kdl_buf_putc(m, (char)c) < 0)
                return kdl_oom(p);
            p->pos++;
            continue;
        }
        unsigned n;
        int32_t cp = peek(p, p->pos, &n);
        if (is_disallowed(p, cp))
            return kdl_fail_unexpected(p, p->pos, "a string character");
        if (kdl_buf_put(m, s + p->pos, n) < 0)
            return kdl_oom(p);
        p->pos += n;
    }

    /* The last line holds the closing quotes: only whitespace may precede them, and that
     * whitespace is the prefix every other non-blank line must start with. */
    const char *d = m->data;
    const char *last_nl = memrchr(d, '\n', m->len);
    const char *prefix = last_nl ? last_nl + 1 : d;
    size_t plen = m->len - (size_t)(prefix - d);
    if (!all_space(prefix, plen))
        return kdl_fail(p, close, "closing quotes",
                        "the closing \"\"\" of a multi-line string must be on its own line, after "
                        "only whitespace");
    struct buf *o = &p->sbuf;
    o->len = 0;
    if (kdl_buf_reserve(o, m->len) < 0)
        return kdl_oom(p);
    if (last_nl) {
        size_t line = 0;
        for (const char *l = d; l <= last_nl; line++) {
            const char *e = memchr(l, '\n', (size_t)(last_nl - l) + 1);
            size_t ll = (size_t)(e - l);
            if (line > 0)
                o->data[o->len++] = '\n';
            if (!all_space(l, ll)) {
                if (ll < plen || memcmp(l, prefix, plen) != 0)
                    return kdl_fail(
                        p, ((size_t *)p->offsets.data)[line], "indentation differs",
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
    return kdl_arena_str(p->arena, o->data, len, out) < 0 ? kdl_oom(p) : 0;
}

/* quoted-string: '"' single-line-string-body '"', or a multi-line string. */
int kdl_parse_quoted(struct parser *p, kdl_str *out)
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
            return kdl_fail(p, start, "string starts here", "unterminated string: no closing '\"'");
        unsigned char c = s[p->pos];
        if (c == '"')
            break;
        if (c >= 0x20 && c < 0x7f && c != '\\') {
            p->pos++;
            continue;
        }
        if (c == '\\') {
            if (kdl_buf_put(b, s + seg, p->pos - seg) < 0)
                return kdl_oom(p);
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
            return kdl_fail(p, p->pos, "string not closed on this line",
                            "unterminated string: a quoted string cannot contain a literal newline "
                            "(escape it as \\n, or use a multi-line \"\"\" string)");
        }
        int32_t cp = peek(p, p->pos, &n);
        if (is_disallowed(p, cp))
            return kdl_fail_unexpected(p, p->pos, "a string character");
        p->pos += n;
    }
    size_t end = p->pos++;
    if (!escaped)
        return kdl_arena_str(p->arena, s + seg, end - seg, out) < 0 ? kdl_oom(p) : 0;
    if (kdl_buf_put(b, s + seg, end - seg) < 0)
        return kdl_oom(p);
    return kdl_arena_str(p->arena, b->data, b->len, out) < 0 ? kdl_oom(p) : 0;
}

/* raw-string: '#'+ '"' ... '"' '#'+ (v2), or r '#'* '"' ... '"' '#'* (v1). p->pos at the first
 * '#' (v2) or after the 'r' (v1). */
int kdl_parse_raw(struct parser *p, size_t start, kdl_str *out)
{
    const unsigned char *s = p->s;
    unsigned hashes = 0;
    while (p->pos < p->len && s[p->pos] == '#') {
        if (hashes == UINT16_MAX)
            return kdl_fail(p, start, "raw string", "too many '#' around a raw string");
        hashes++;
        p->pos++;
    }
    if (p->pos >= p->len || s[p->pos] != '"')
        return kdl_fail_unexpected(p, p->pos, "'\"' after the '#' of a raw string");
    if (p->version == 2 && at3(p, p->pos, '"', '"', '"'))
        return parse_multiline(p, start, hashes, true, out);
    size_t body = ++p->pos;
    for (;;) {
        if (p->pos >= p->len)
            return kdl_fail(p, start, "string starts here",
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
                return kdl_arena_str(p->arena, s + body, end - body, out) < 0 ? kdl_oom(p) : 0;
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
            return kdl_fail(
                p, p->pos, "string not closed on this line",
                "unterminated raw string: no closing '\"%.*s' before the end of the line "
                "(a multi-line raw string is written #\"\"\" ... \"\"\"#)",
                (int)(hashes > 32 ? 32 : hashes), "################################");
        }
        int32_t cp = peek(p, p->pos, &n);
        if (is_disallowed(p, cp))
            return kdl_fail_unexpected(p, p->pos, "a string character");
        p->pos += n;
    }
}

/* disallowed-keyword-identifiers: 'true' | 'false' | 'null' | 'inf' | '-inf' | 'nan' */
bool kdl_is_reserved(const unsigned char *t, size_t n)
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
int kdl_parse_identifier(struct parser *p, kdl_value *v, bool *keyword)
{
    const unsigned char *s = p->s;
    size_t start = p->pos, end = kdl_scan_ident(p, start);
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
                return kdl_fail(p, start, "not a number",
                                "invalid number '%.*s': a number needs a digit before its decimal "
                                "point (write %.*s0%.*s, or quote it for a string)",
                                kdl_clip(t, n, 40), (const char *)t, (int)i, (const char *)t,
                                kdl_clip(t + i, n - i, 40), (const char *)t + i);
            return kdl_fail(
                p, start, "not a number or identifier",
                "'%.*s' is neither a number nor an identifier (an identifier cannot start "
                "with a digit after '.'): quote it",
                kdl_clip(t, n, 40), (const char *)t);
        }
        static const char *const reserved[] = {"true", "false", "null", "inf", "-inf", "nan"};
        for (size_t k = 0; k < ELEMENTSOF(reserved) && kdl_is_reserved(t, n); k++)
            if (n == strlen(reserved[k]) && memcmp(t, reserved[k], n) == 0)
                return kdl_fail(p, start, "reserved word",
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
    return kdl_arena_str(p->arena, t, n, &v->string) < 0 ? kdl_oom(p) : 0;
}
