/* SPDX-License-Identifier: MIT */
/* KDL: diagnostics (positions, snippets), the canonical printer and the public API. */
#include "arg-check.h"
#include "kdl-internal.h"

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
        kdl_buf_puts(&text, "...");
        width = 3;
    }
    size_t i = from;
    for (; i < to && shown < 100;) {
        if (i == offset)
            caret = width;
        unsigned n;
        int32_t c = utf8_decode(s, len, i, &n);
        if (c == '\t') {
            kdl_buf_puts(&text, "    ");
            width += 4;
        } else if (c < 0 || cp_is_disallowed((uint32_t)c) || c < 0x20) {
            kdl_buf_puts(&text, "\xef\xbf\xbd"); /* U+FFFD */
            width += 1;
        } else {
            kdl_buf_put(&text, s + i, n);
            width += cp_width((uint32_t)c);
        }
        i += n;
        shown++;
    }
    if (i < to) {
        if (offset >= i)
            caret = width + 1;
        kdl_buf_puts(&text, " ...");
        width += 4;
    } else if (offset >= i) {
        caret = width;
    }

    char num[16];
    int w = snprintf(num, sizeof(num), "%u", line);
    kdl_buf_printf(&out, " %*s ,-[%s:%u:%u]\n", w, "", path, line, col);
    kdl_buf_printf(&out, " %s | %s\n", num, text.data ? text.data : "");
    kdl_buf_printf(&out, " %*s | %*s^%s%s\n", w, "", (int)caret, "", label && *label ? " " : "",
                   label ? label : "");
    kdl_buf_printf(&out, " %*s `----", w, "");
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

int kdl_position_error(vmctl_error **reterr, vmctl_error_kind kind, const char *path,
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
    va_list ap;
    va_start(ap, fmt);
    cleanup_free char *msg = str_vprintf(fmt, ap);
    va_end(ap);
    return kdl_position_error(reterr, kind, doc->path, doc->source, doc->source_len, offset, label,
                              msg ? msg : "out of memory");
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
    return !kdl_is_reserved(s, len);
}

static int put_string(struct buf *b, const kdl_str *str)
{
    if (kdl_is_bare_identifier(str->data, str->len))
        return kdl_buf_put(b, str->data, str->len);
    const unsigned char *s = (const unsigned char *)str->data;
    if (kdl_buf_reserve(b, str->len + 2) < 0)
        return -ENOMEM;
    kdl_buf_putc(b, '"');
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
            if (kdl_buf_put(b, s + seg, i - seg) < 0 || kdl_buf_puts(b, esc) < 0)
                return -ENOMEM;
            seg = i + n;
        }
        i += n;
    }
    if (kdl_buf_put(b, s + seg, str->len - seg) < 0)
        return -ENOMEM;
    return kdl_buf_putc(b, '"');
}

static int put_value(struct buf *b, const kdl_value *v)
{
    if (v->has_type && (kdl_buf_putc(b, '(') < 0 || put_string(b, &v->type_annotation) < 0 ||
                        kdl_buf_putc(b, ')') < 0))
        return -ENOMEM;
    switch (v->type) {
    case KDL_VALUE_STRING:
        return put_string(b, &v->string);
    case KDL_VALUE_NUMBER:
        return kdl_buf_put(b, v->number.text.data, v->number.text.len);
    case KDL_VALUE_BOOL:
        return kdl_buf_puts(b, v->boolean ? "#true" : "#false");
    case KDL_VALUE_NULL:
    default:
        return kdl_buf_puts(b, "#null");
    }
}

static int prop_ptr_cmp(const void *a, const void *b)
{
    const kdl_prop *pa = *(const kdl_prop *const *)a, *pb = *(const kdl_prop *const *)b;
    return kdl_keys_cmp(&pa->key, &pb->key);
}

static int put_indent(struct buf *b, unsigned depth)
{
    if (kdl_buf_reserve(b, depth * 4) < 0)
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
    if (n->has_type && (kdl_buf_putc(b, '(') < 0 || put_string(b, &n->type_annotation) < 0 ||
                        kdl_buf_putc(b, ')') < 0))
        return -ENOMEM;
    if (put_string(b, &n->name) < 0)
        return -ENOMEM;
    for (size_t i = 0; i < n->n_args; i++)
        if (kdl_buf_putc(b, ' ') < 0 || put_value(b, &n->args[i]) < 0)
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
            if (kdl_buf_putc(b, ' ') < 0 || put_string(b, &sorted[i]->key) < 0 ||
                kdl_buf_putc(b, '=') < 0 || put_value(b, &sorted[i]->value) < 0)
                r = -ENOMEM;
        free(sorted);
        if (r < 0)
            return r;
    }
    if (n->n_children) {
        if (kdl_buf_puts(b, " {\n") < 0)
            return -ENOMEM;
        for (size_t i = 0; i < n->n_children; i++)
            if (put_node(b, &n->children[i], depth + 1) < 0)
                return -ENOMEM;
        if (put_indent(b, depth) < 0 || kdl_buf_putc(b, '}') < 0)
            return -ENOMEM;
    }
    return kdl_buf_putc(b, '\n');
}

int kdl_format(const kdl_document *doc, char **ret, size_t *ret_len)
{
    struct buf b = {0};
    int r = 0;
    for (size_t i = 0; i < doc->n_nodes && r == 0; i++)
        r = put_node(&b, &doc->nodes[i], 0);
    if (r == 0 && doc->n_nodes == 0)
        r = kdl_buf_putc(&b, '\n');
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
                     "cannot read '%s'", path);
        err_detail(reterr, "path", "%s", path);
        if (r == -ENOENT)
            err_help(reterr, "Check the file name; `vmctl kdl fmt -` reads standard input");
        return r;
    }
    return vmctl_kdl_format_buffer(path, data, len, version, ret, reterr);
}
