/* SPDX-License-Identifier: MIT */
/* KDL documents in canonical form (`vmctl kdl fmt`): the parser VMFile.kdl is read with, exposed
 * for conformance testing against the KDL test suites. */
#pragma once

#include <stddef.h>

#include <vmctl/error.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which KDL grammar a document is read with. */
typedef enum vmctl_kdl_version {
    VMCTL_KDL_VERSION_MARKER = 0,   /* `/- kdl-version 1` at the top means v1; otherwise v2 */
    VMCTL_KDL_VERSION_1 = 1,        /* KDL v1 only */
    VMCTL_KDL_VERSION_2 = 2,        /* KDL v2 only */
    VMCTL_KDL_VERSION_FALLBACK = 3, /* the marker, else v2 and, when that fails, v1 */
} vmctl_kdl_version;

/* Parse the KDL document at path and return its canonical form (malloc'd, NUL-terminated): one
 * node per line, 4-space indents, no comments, properties sorted by key with the rightmost
 * duplicate winning, strings unquoted where possible, numbers in decimal. A syntax error is
 * vm_manager::vmfile::parse_failed, its message "PATH:LINE:COLUMN: what", details path, line and
 * column, and a note with the source line and a caret. A missing file is
 * vm_manager::vmfile::not_found, another read failure vm_manager::io. */
int vmctl_kdl_format(const char *path, vmctl_kdl_version version, char **ret, vmctl_error **reterr);
/* The same for a document in memory; name stands for it in diagnostics. */
int vmctl_kdl_format_buffer(const char *name, const char *data, size_t len,
                            vmctl_kdl_version version, char **ret, vmctl_error **reterr);

#ifdef __cplusplus
}
#endif
