/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Every fallible libvmctl call returns a negative errno and, when its last
 * argument `reterr` is non-NULL, stores a newly allocated error object there.
 * The caller frees it with vmctl_error_free().
 *
 * Code strings (vm_manager::<area>::<kind>) are API: never renamed, never reused.
 */
typedef enum vmctl_error_kind {
    /* vm-manager seed table, verbatim codes */
    VMCTL_E_QEMU_SPAWN_FAILED,
    VMCTL_E_QEMU_QMP_CONNECT_FAILED,
    VMCTL_E_QEMU_QMP_COMMAND_FAILED,
    VMCTL_E_IMAGE_OVERLAY_CREATION_FAILED,
    VMCTL_E_NETWORK_IP_DISCOVERY_TIMEOUT,
    VMCTL_E_PROPOLIS_UNREACHABLE,
    VMCTL_E_CLOUDINIT_ISO_FAILED,
    VMCTL_E_SSH_FAILED,
    VMCTL_E_SSH_KEYGEN_FAILED,
    VMCTL_E_IMAGE_DOWNLOAD_FAILED,
    VMCTL_E_IMAGE_FORMAT_DETECTION_FAILED,
    VMCTL_E_IMAGE_CONVERSION_FAILED,
    VMCTL_E_VM_NOT_FOUND,
    VMCTL_E_VM_INVALID_STATE,
    VMCTL_E_BACKEND_NOT_AVAILABLE,
    VMCTL_E_VMFILE_NOT_FOUND,
    VMCTL_E_VMFILE_PARSE_FAILED,
    VMCTL_E_VMFILE_VALIDATION,
    VMCTL_E_PROVISION_FAILED,
    VMCTL_E_IO,
    /* microVM runtime seed classes */
    VMCTL_E_VM_ALREADY_EXISTS,
    VMCTL_E_SNAPSHOT_ALREADY_EXISTS,
    VMCTL_E_SNAPSHOT_NOT_FOUND,
    VMCTL_E_STORE_LOCKED,
    VMCTL_E_STORE_CORRUPT,
    VMCTL_E_METRICS_FAILED,
    VMCTL_E_VM_SHUTDOWN_FAILED,
    VMCTL_E_NETWORK_FIREWALL_FAILED,
    VMCTL_E_NETWORK_CONFIG_INVALID,
    VMCTL_E_NETWORK_SETUP_FAILED,
    VMCTL_E_JAILER_FAILED,
    VMCTL_E_IMAGE_ROOTFS_FAILED,
    VMCTL_E_IMAGE_CHECKSUM_MISMATCH,
    VMCTL_E_SNAPSHOT_UFFD_FAILED,
    VMCTL_E_AGENT_FAILED,
    /* SDK seed classes */
    VMCTL_E_CONFIG_INVALID,
    VMCTL_E_HOST_KVM_UNAVAILABLE,
    VMCTL_E_HOST_MISSING_DEPENDENCY,
    VMCTL_E_TIMEOUT,
    VMCTL_E_EXEC_UNAVAILABLE,
    /* our own */
    VMCTL_E_CLI_USAGE,
    VMCTL_E_INTERNAL,
    VMCTL_E_CP_UNSAFE_ENTRY,
    VMCTL_E_IMAGE_NOT_FOUND,
    VMCTL_E_IMAGE_ALREADY_EXISTS,
    VMCTL_E_IMAGE_IN_USE,
    VMCTL_E_IMAGE_UNSAFE,
    VMCTL_E_INVALID_ARGUMENT,
    /* vmctl serve (docs/api.md) */
    VMCTL_E_API_BAD_REQUEST,
    VMCTL_E_API_UNAUTHORIZED,
    VMCTL_E_API_ROUTE_NOT_FOUND,
    VMCTL_E_API_METHOD_NOT_ALLOWED,
    VMCTL_E_API_TOO_LARGE,
    VMCTL_E_API_NOT_IMPLEMENTED,
    _VMCTL_E_MAX,
} vmctl_error_kind;

typedef struct vmctl_error vmctl_error;

/* One catalogue row: stable code, what triggers it, the default help line. */
typedef struct vmctl_error_info {
    vmctl_error_kind kind;
    const char *code;
    const char *trigger;
    const char *help;
} vmctl_error_info;

/* The catalogue, indexed by vmctl_error_kind; NULL past the end. */
const vmctl_error_info *vmctl_error_catalogue(size_t index);
/* Look a code string up; NULL when unknown. */
const vmctl_error_info *vmctl_error_lookup(const char *code);

vmctl_error_kind vmctl_error_get_kind(const vmctl_error *e);
const char *vmctl_error_get_code(const vmctl_error *e);
const char *vmctl_error_get_message(const vmctl_error *e);
const char *vmctl_error_get_help(const vmctl_error *e);
int vmctl_error_get_errno(const vmctl_error *e);
/* The errno worth telling a person as the error's cause ("caused by: ..."): 0 when there is none,
 * when it is a placeholder (the errno of a usage or input error, the ENOENT of a lookup, a
 * state's or a timeout's errno, an EINVAL, EBADMSG or EIO that stands for "no errno"), or when
 * the message already says it. vmctl_error_get_errno() gives the errno itself. */
int vmctl_error_get_cause_errno(const vmctl_error *e);

/* Details are ordered key/value pairs; is_number tells JSON renderers not to quote the value. */
size_t vmctl_error_get_n_details(const vmctl_error *e);
int vmctl_error_get_detail(const vmctl_error *e, size_t i, const char **key, const char **value,
                           int *is_number);
const char *vmctl_error_find_detail(const vmctl_error *e, const char *key);

/* Context chain (outermost first) and notes (QEMU stderr tail, QMP desc, ...). */
size_t vmctl_error_get_n_context(const vmctl_error *e);
const char *vmctl_error_get_context(const vmctl_error *e, size_t i);
size_t vmctl_error_get_n_notes(const vmctl_error *e);
const char *vmctl_error_get_note(const vmctl_error *e, size_t i);

void vmctl_error_free(vmctl_error *e);

/* Build errors from outside the library (the CLI's usage errors, bindings). */
int vmctl_error_new(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int vmctl_error_newv(vmctl_error **reterr, vmctl_error_kind kind, int errnum, const char *fmt,
                     va_list ap) __attribute__((format(printf, 4, 0)));
void vmctl_error_set_help(vmctl_error *e, const char *help);
void vmctl_error_add_detail(vmctl_error *e, const char *key, const char *value);
void vmctl_error_add_note(vmctl_error *e, const char *note);

#ifdef __cplusplus
}
#endif
