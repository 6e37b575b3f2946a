/* SPDX-License-Identifier: MIT */
/* KDL: numbers, keywords, values, entries, nodes and the document production. */
#include "kdl-internal.h"

/* --- numbers --- */

static int decimal_text(struct parser *p, struct buf *b, kdl_number *num)
{
    if (b->len == 0 || !b->data)
        return kdl_oom(p);
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
            return kdl_arena_str(p->arena, b->data, b->len, &num->text) < 0 ? kdl_oom(p) : 0;
        }
    }
    num->value = strtod(b->data, NULL);
    return kdl_arena_str(p->arena, b->data, b->len, &num->text) < 0 ? kdl_oom(p) : 0;
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
        uint32_t *slot = kdl_stack_push(&p->limbs, sizeof(uint32_t));
        if (!slot)
            return kdl_oom(p);
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
        if (kdl_buf_printf(b, "%s%" PRIu64, neg && v ? "-" : "", v) < 0)
            return kdl_oom(p);
        num->value = neg ? -(double)v : (double)v;
        num->is_int64 = neg ? v <= (uint64_t)INT64_MAX + 1 : v <= (uint64_t)INT64_MAX;
        num->i64 = !num->is_int64 ? 0 : neg ? (int64_t)(0 - v) : (int64_t)v;
        return kdl_arena_str(p->arena, b->data, b->len, &num->text) < 0 ? kdl_oom(p) : 0;
    }
    /* Beyond 64 bits: base-1e9 limbs, fed several digits at a time. */
    p->limbs.n = 0;
    uint32_t *l0 = kdl_stack_push(&p->limbs, sizeof(uint32_t));
    if (!l0)
        return kdl_oom(p);
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
    if (kdl_buf_printf(b, "%s%" PRIu32, neg ? "-" : "", l[top]) < 0)
        return kdl_oom(p);
    for (size_t i = top; i-- > 0;)
        if (kdl_buf_printf(b, "%09" PRIu32, l[i]) < 0)
            return kdl_oom(p);
    num->is_int64 = false;
    num->value = strtod(b->data, NULL);
    return kdl_arena_str(p->arena, b->data, b->len, &num->text) < 0 ? kdl_oom(p) : 0;
}

static int number_fail(struct parser *p, size_t start, size_t end, size_t bad, const char *why)
{
    const unsigned char *t = p->s + start;
    size_t n = end - start;
    if (why && *why)
        return kdl_fail(p, bad, why, "invalid number '%.*s': %s", kdl_clip(t, n, 40),
                        (const char *)t, why);
    unsigned k;
    int32_t c = peek(p, bad, &k);
    char what[64];
    kdl_describe_cp(c, p->s + bad, k, what, sizeof(what));
    bool letter = c >= 0 && c < 0x80 && ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    return kdl_fail(p, bad, "unexpected here", "invalid number '%.*s': unexpected %s%s",
                    kdl_clip(t, n, 40), (const char *)t, what,
                    letter ? " (an identifier cannot start with a digit: quote strings like this)"
                           : "");
}

/* number := hex | octal | binary | decimal (keyword numbers are parsed with the keywords). The
 * token runs to the next non-identifier character and must all be one number. */
static int parse_number(struct parser *p, kdl_value *v)
{
    const unsigned char *s = p->s;
    size_t start = p->pos, end = kdl_scan_ident(p, start), i = start;
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
    if (kdl_buf_reserve(b, end - start + 4) < 0)
        return kdl_oom(p);
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
    size_t start = p->pos, end = kdl_scan_ident(p, start + 1);
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
        if (kdl_arena_str(p->arena, w - 1, n + 1, &v->number.text) < 0)
            return kdl_oom(p);
    } else {
        if (n == 0)
            return kdl_fail_unexpected(
                p, start + 1,
                "a keyword (#true, #false, #null, #inf, #-inf, #nan) or '\"' "
                "of a raw string after '#'");
        return kdl_fail(
            p, start, "unknown keyword",
            "unknown keyword '#%.*s': the keywords are #true, #false, #null, #inf, #-inf "
            "and #nan",
            kdl_clip((const unsigned char *)w, n, 40), w);
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
        return kdl_fail_unexpected(p, at, what);
    unsigned char c = s[at];
    v->offset = v->has_type ? v->offset : at;
    if (c == '"') {
        v->type = KDL_VALUE_STRING;
        return kdl_parse_quoted(p, &v->string);
    }
    if (p->version == 2 && c == '#') {
        if (at + 1 < p->len && (s[at + 1] == '#' || s[at + 1] == '"')) {
            v->type = KDL_VALUE_STRING;
            return kdl_parse_raw(p, at, &v->string);
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
            return kdl_parse_raw(p, at, &v->string);
        }
    }
    if (is_digit(c) || ((c == '+' || c == '-') && at + 1 < p->len && is_digit(s[at + 1])))
        return parse_number(p, v);
    if (kdl_ident_start(p, at)) {
        bool keyword;
        int r = kdl_parse_identifier(p, v, &keyword);
        *bare = !keyword;
        return r;
    }
    return kdl_fail_unexpected(p, at, what);
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
        return kdl_fail(p, at, "not a string",
                        "expected %s, found a %s: quote it to make it a string", what,
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
    int r = p->version == 2 ? kdl_skip_node_space(p) : 0;
    if (r < 0)
        return r;
    if (p->pos < p->len && p->s[p->pos] == ')')
        return kdl_fail(
            p, open, "empty type annotation",
            "empty type annotation: write a type name in the parentheses, or (\"\") for "
            "an empty one");
    r = parse_string_only(p, out, "a type name");
    if (r < 0)
        return r;
    r = p->version == 2 ? kdl_skip_node_space(p) : 0;
    if (r < 0)
        return r;
    if (p->pos >= p->len || p->s[p->pos] != ')')
        return kdl_fail_unexpected(p, p->pos, "')' to close the type annotation");
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
        r = p->version == 2 ? kdl_skip_node_space(p) : 0;
        if (r < 0)
            return r;
        what = "a value after the type annotation";
    }
    return parse_value(p, v, bare, what);
}

static int bare_value_v1(struct parser *p, size_t at)
{
    if (p->s[at] == '#')
        return kdl_fail(p, at, "KDL v2 syntax",
                        "'#' keywords and #\"raw\"# strings are KDL v2: this document is read as "
                        "KDL v1 (write true, false, null, r\"raw\"), or drop its kdl-version 1 "
                        "marker");
    return kdl_fail(p, at, "bare identifier",
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
        r = kdl_skip_node_space(p);
        if (r < 0)
            return r;
        if (p->pos < p->len && p->s[p->pos] == '=') {
            if (typed)
                return kdl_fail(
                    p, at, "type annotation on a key",
                    "a property key cannot have a type annotation: put it on the value, "
                    "key=(type)value");
            if (p->version == 1 && r > 0)
                return kdl_fail(p, save, "space before '='",
                                "KDL v1 allows no whitespace between a property key and '='");
            size_t eq = p->pos++;
            r = p->version == 2 ? kdl_skip_node_space(p) : 0;
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
            kdl_prop *prop = kdl_stack_push(&p->props, sizeof(kdl_prop));
            if (!prop)
                return kdl_oom(p);
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
    kdl_value *slot = kdl_stack_push(&p->values, sizeof(kdl_value));
    if (!slot)
        return kdl_oom(p);
    *slot = v;
    return 0;
}

int kdl_keys_cmp(const kdl_str *a, const kdl_str *b)
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
    int c = kdl_keys_cmp(&props[ia].key, &props[ib].key);
    return c ? c : ia < ib ? -1 : ia > ib;
}

/* Move the entries parsed for a node (values[vbase..], props[pbase..]) into the arena, the
 * properties with duplicates resolved (the rightmost wins). */
static int finish_entries(struct parser *p, kdl_node *n, size_t vbase, size_t pbase)
{
    size_t na = p->values.n - vbase, np = p->props.n - pbase;
    if (na) {
        n->args = kdl_arena_alloc(p->arena, na * sizeof(kdl_value));
        if (!n->args)
            return kdl_oom(p);
        memcpy(n->args, (kdl_value *)p->values.data + vbase, na * sizeof(kdl_value));
        n->n_args = na;
    }
    p->values.n = vbase;
    if (!np)
        return 0;
    kdl_prop *props = (kdl_prop *)p->props.data + pbase;
    p->marks.n = 0;
    for (size_t i = 0; i < np; i++)
        if (!kdl_stack_push(&p->marks, 1))
            return kdl_oom(p);
    uint8_t *dead = p->marks.data;
    memset(dead, 0, np);
    size_t alive = np;
    if (np <= 16) {
        for (size_t i = 0; i < np; i++)
            for (size_t j = i + 1; j < np && !dead[i]; j++)
                if (kdl_keys_cmp(&props[i].key, &props[j].key) == 0)
                    dead[i] = 1, alive--;
    } else {
        size_t *idx = malloc(np * sizeof(size_t));
        if (!idx)
            return kdl_oom(p);
        for (size_t i = 0; i < np; i++)
            idx[i] = i;
        qsort_r(idx, np, sizeof(size_t), prop_index_cmp, props);
        for (size_t i = 0; i + 1 < np; i++)
            if (kdl_keys_cmp(&props[idx[i]].key, &props[idx[i + 1]].key) == 0)
                dead[idx[i]] = 1, alive--;
        free(idx);
    }
    n->props = kdl_arena_alloc(p->arena, alive * sizeof(kdl_prop));
    if (!n->props)
        return kdl_oom(p);
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
        return kdl_fail(p, open, "too deep", "children blocks nested more than %d levels deep",
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
        n->children = kdl_arena_alloc(p->arena, cnt * sizeof(kdl_node));
        if (!n->children)
            return kdl_oom(p);
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
        r = p->version == 2 ? kdl_skip_node_space(p) : 0;
        if (r < 0)
            return r;
    }
    r = parse_string_only(p, &n.name, "a node name");
    if (r < 0)
        return r;

    bool entries_ok = true, children = false, any_children = false;
    for (;;) {
        int sp = kdl_skip_node_space(p);
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
                return kdl_fail(p, sd, "missing whitespace", "KDL v1 needs whitespace before '/-'");
            p->pos += 2;
            r = p->version == 2 ? kdl_skip_line_space(p) : kdl_skip_ws(p);
            if (r < 0)
                return r;
            if (at2(p, p->pos, '/', '-'))
                return kdl_fail(p, p->pos, "second slashdash", "'/-' cannot follow another '/-'");
            if (p->pos >= p->len || s[p->pos] == '}' || s[p->pos] == ';' ||
                newline_at(s, p->len, p->pos))
                return kdl_fail(p, sd, "comments out nothing",
                                "'/-' must be followed by an argument, a property or a children "
                                "block to comment out");
            if (s[p->pos] == '{') {
                if (p->version == 1 && any_children)
                    return kdl_fail(p, p->pos, "second children block",
                                    "a node has at most one children block in KDL v1");
                r = parse_children(p, &n, false);
                if (r < 0)
                    return r;
                entries_ok = false;
                any_children = true;
                continue;
            }
            if (!entries_ok)
                return kdl_fail(p, sd, "after the children block",
                                "arguments and properties must come before the node's children "
                                "block");
            r = parse_entry(p, false);
            if (r < 0)
                return r;
            continue;
        }
        if (c == '{') {
            if (children || (p->version == 1 && any_children))
                return kdl_fail(
                    p, p->pos, "second children block",
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
                return kdl_fail_unexpected(p, p->pos, "';' or a newline");
            return kdl_fail(p, p->pos, "expected ';' or a newline",
                            "a node ends after its children block: put ';' or a newline before the "
                            "next node, and arguments and properties before the '{'");
        }
        if (c == '=')
            return kdl_fail(p, p->pos, "unexpected '='",
                            "unexpected '=': a property key must be a string (quote numbers and "
                            "keywords used as keys)");
        if (!sp)
            return kdl_fail_unexpected(
                p, p->pos, "whitespace between a node's name, arguments and properties");
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
            r = kdl_skip_line_comment(p);
            if (r < 0)
                return r;
        } else if (!in_block) {
            return kdl_fail(p, p->pos, "no block to close",
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
    kdl_node *slot = kdl_stack_push(&p->nodes, sizeof(kdl_node));
    if (!slot)
        return kdl_oom(p);
    *slot = n;
    return 0;
}

/* nodes := (line-space* node)* line-space* */
static int parse_nodes(struct parser *p, bool in_block, size_t open)
{
    const unsigned char *s = p->s;
    for (;;) {
        int r = kdl_skip_line_space(p);
        if (r < 0)
            return r;
        if (p->pos >= p->len) {
            if (in_block)
                return kdl_fail(p, open, "block opened here",
                                "unterminated children block: '{' without a matching '}'");
            return 0;
        }
        if (s[p->pos] == '}') {
            if (in_block)
                return 0;
            return kdl_fail(p, p->pos, "no block to close",
                            "unexpected '}': there is no children block to close");
        }
        bool keep = true;
        if (at2(p, p->pos, '/', '-')) {
            size_t sd = p->pos;
            p->pos += 2;
            r = p->version == 2 ? kdl_skip_line_space(p) : kdl_skip_ws(p);
            if (r < 0)
                return r;
            if (at2(p, p->pos, '/', '-'))
                return kdl_fail(p, p->pos, "second slashdash", "'/-' cannot follow another '/-'");
            if (p->pos >= p->len || s[p->pos] == '}')
                return kdl_fail(p, sd, "comments out nothing",
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
int kdl_detect_version(const unsigned char *s, size_t len)
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
int kdl_parse_document(struct parser *p)
{
    if (p->len >= 3 && memcmp(p->s, "\xef\xbb\xbf", 3) == 0)
        p->pos = 3;
    int r = parse_nodes(p, false, 0);
    if (r < 0)
        return r;
    return 0;
}
