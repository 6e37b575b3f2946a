/* SPDX-License-Identifier: MIT */
/* KDL documents: a parser for KDL v2 (shared/reference/kdl-v2-spec.md) that also reads KDL v1
 * documents, and the canonical printer of the KDL test suites (kdl-canonical-form.md).
 *
 * Versions: a document starting with the marker `/- kdl-version 1` (or `2`), after an optional
 * BOM, is parsed as that version. Without a marker it is parsed as v2 or, in the fallback mode,
 * as v2 and, when that fails, as v1 (the v2 error is reported when both fail). The grammars are
 * designed so that a document valid in both means the same in both; the fallback is not the
 * default because the v2 conformance suite requires rejecting v1-only syntax (`r"raw"`, `\/`,
 * literal newlines in quoted strings).
 *
 * Errors are vm_manager::vmfile::parse_failed: the message is "FILE:LINE:COLUMN: what", details
 * path, line and column (numbers), and one note with the source line, a caret under the column
 * and a short label. Lines and columns count from 1; columns count code points; every KDL newline
 * (CRLF, CR, LF, NEL, VT, FF, LS, PS) ends a line.
 *
 * Everything a document holds (strings, arrays, the source copy) lives in one arena freed by
 * kdl_document_free(). Strings are UTF-8, NUL-terminated, and carry their length: a `\u{0}`
 * escape puts a NUL byte inside one. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>

/* How kdl_parse picks the grammar (the values of the public vmctl_kdl_version). */
enum {
    KDL_VERSION_MARKER = 0,   /* the version marker, else v2 */
    KDL_VERSION_1 = 1,        /* v1 only */
    KDL_VERSION_2 = 2,        /* v2 only */
    KDL_VERSION_FALLBACK = 3, /* the marker, else v2 and, when that fails, v1 */
};

/* Children blocks nested deeper than this are rejected (the parser recurses per level). */
#define KDL_MAX_DEPTH 256

typedef struct kdl_str {
    const char *data; /* NUL-terminated */
    size_t len;       /* bytes, without the terminating NUL */
} kdl_str;

typedef enum kdl_value_type {
    KDL_VALUE_STRING,
    KDL_VALUE_NUMBER,
    KDL_VALUE_BOOL,
    KDL_VALUE_NULL,
} kdl_value_type;

typedef enum kdl_number_kind {
    KDL_NUMBER_INTEGER, /* decimal without fraction or exponent, hex, octal or binary */
    KDL_NUMBER_DECIMAL, /* decimal with a fraction and/or an exponent */
    KDL_NUMBER_INF,     /* #inf */
    KDL_NUMBER_NEG_INF, /* #-inf */
    KDL_NUMBER_NAN,     /* #nan */
} kdl_number_kind;

typedef struct kdl_number {
    /* The canonical text, exact at any size: integers in decimal ("-42", hex/octal/binary
     * converted), decimals as written with underscores and a '+' sign dropped, leading zeros of
     * the integer part removed and the exponent as E, sign, digits ("1.0E+10"); "#inf", "#-inf",
     * "#nan" for the keywords. */
    kdl_str text;
    double value; /* nearest double (+-HUGE_VAL beyond its range) */
    int64_t i64;  /* the value when is_int64 */
    kdl_number_kind kind;
    bool is_int64; /* an integer that fits int64_t */
} kdl_number;

typedef struct kdl_value {
    kdl_value_type type;
    bool has_type; /* a type annotation, (type)value */
    kdl_str type_annotation;
    union {
        kdl_str string;    /* KDL_VALUE_STRING */
        kdl_number number; /* KDL_VALUE_NUMBER */
        bool boolean;      /* KDL_VALUE_BOOL */
    };
    size_t offset; /* byte offset in the source of the value (of its annotation when present) */
} kdl_value;

typedef struct kdl_prop {
    kdl_str key;
    kdl_value value;
    size_t offset; /* of the key */
} kdl_prop;

typedef struct kdl_node kdl_node;
struct kdl_node {
    bool has_type;
    kdl_str type_annotation;
    kdl_str name;
    kdl_value *args; /* in order */
    size_t n_args;
    /* Properties with duplicates resolved: one entry per key, holding the rightmost value, in
     * the order of those rightmost occurrences. */
    kdl_prop *props;
    size_t n_props;
    kdl_node *children; /* in order; an empty `{}` leaves none */
    size_t n_children;
    size_t offset; /* of the node (its annotation when present) */
};

typedef struct kdl_document {
    kdl_node *nodes;
    size_t n_nodes;
    int version; /* 1 or 2: the grammar the document was parsed with */
    /* For diagnostics about positions after parsing (kdl_error_at): */
    const char *path;
    const char *source;
    size_t source_len;
    struct kdl_arena *arena;
} kdl_document;

/* Parse len bytes of buf (need not be NUL-terminated). path names the source in diagnostics.
 * version: one of KDL_VERSION_*. */
int kdl_parse(const char *path, const char *buf, size_t len, int version, kdl_document **ret,
              vmctl_error **reterr);
void kdl_document_free(kdl_document *doc);
static inline void kdl_document_freep(kdl_document **d)
{
    kdl_document_free(*d);
}
#define cleanup_kdl_document __attribute__((cleanup(kdl_document_freep)))

/* The canonical form: one node per line, 4-space indents, no comments, arguments in order,
 * properties sorted by key (bytewise), children only when there are some, strings bare when
 * they can be, numbers in decimal. An empty document is "\n". ret is malloc'd, NUL-terminated
 * (the output has no NUL inside: a NUL in a string is written \u{0}); *ret_len may be NULL. */
int kdl_format(const kdl_document *doc, char **ret, size_t *ret_len);

/* The property named key (a NUL-free C string), or NULL. */
const kdl_prop *kdl_node_prop(const kdl_node *node, const char *key);
/* True when s is a valid KDL v2 identifier string, so the printer writes it without quotes. */
bool kdl_is_bare_identifier(const char *s, size_t len);

/* 1-based line and column (in code points) of a byte offset into src. */
void kdl_position(const char *src, size_t len, size_t offset, unsigned *ret_line,
                  unsigned *ret_column);
/* Line numbers of many offsets in one pass (kdl_position is linear in the offset, so calling it
 * for every node of a large document is quadratic). Start with a zeroed cursor; offsets must be
 * code-point starts (node and value offsets are) and are fastest in increasing order (a smaller
 * one restarts from the beginning). Same numbering as kdl_position. */
typedef struct kdl_line_cursor {
    size_t offset;
    unsigned line; /* 0: not started */
} kdl_line_cursor;
unsigned kdl_line_at(const char *src, size_t len, kdl_line_cursor *cur, size_t offset);
/* The miette-like snippet of a position: the source line, a caret under the column and label.
 * malloc'd, NULL when out of memory. */
char *kdl_snippet(const char *path, const char *src, size_t len, size_t offset, const char *label);
/* An error about a position in a parsed document (for later checks, e.g. VMFile validation):
 * message "PATH:LINE:COLUMN: <fmt>", details path/line/column, the snippet as a note. Returns
 * -EINVAL. */
int kdl_error_at(const kdl_document *doc, vmctl_error **reterr, vmctl_error_kind kind,
                 size_t offset, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
