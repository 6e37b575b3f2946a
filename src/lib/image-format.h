/* SPDX-License-Identifier: MIT */
/* Disk image formats: detection from the file's own header, qemu-img as the second opinion,
 * and SHA-256 of files. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>

typedef struct image_probe {
    char format[8];        /* qcow2, raw, vmdk, vhdx, vdi, vpc, iso */
    uint64_t virtual_size; /* bytes; 0 when the header does not say (vhdx) */
    uint64_t file_size;    /* bytes on disk (st_size) */
    char *backing_file;    /* qcow2 only, NULL when none */
    char *backing_format;  /* qcow2 header extension, NULL when absent */
    /* Data kept in another file: a qcow2 external data file (its name, "" when the header sets
     * the feature bit but names none) or a vmdk descriptor's extent ("" when it names none).
     * NULL when the image is self-contained. */
    char *data_file;
} image_probe;

void image_probe_clear(image_probe *p);

/* Detect from the first bytes of a buffer (at least 64 KiB or the whole file when shorter) and
 * the file size. Returns 0 and fills format/virtual_size (and the qcow2 backing file), or
 * -EINVAL with a reason in *why (static string) for a header we recognise but that is corrupt
 * or truncated (e.g. a qcow2 whose tables lie past the end of the file), or -ENODATA for an
 * empty file. Pure: no I/O, so fuzzable. */
int image_probe_buffer(const uint8_t *buf, size_t len, uint64_t file_size, image_probe *ret,
                       const char **why);

/* Probe a file: format_detection_failed on an unreadable, empty or corrupt file (details:
 * path, reason). */
int image_probe_file(const char *path, image_probe *ret, vmctl_error **reterr);

/* `qemu-img info -U --output=json PATH`: the format and virtual size qemu-img sees. -ENOENT
 * when qemu-img is not installed, format_detection_failed when it cannot read the file. */
int image_qemu_img_info(const char *path, char **ret_format, uint64_t *ret_virtual_size,
                        vmctl_error **reterr);

/* Our format name as qemu-img calls it (iso -> raw). */
const char *image_format_qemu_name(const char *format);

/* Probe with our parser, then check qemu-img agrees (when installed): disagreement is
 * format_detection_failed with both answers in the details. Fills virtual_size from qemu-img
 * where our header parser has none. An image our parser finds a data file in is not shown to
 * qemu-img (it would open that file): our answer alone. */
int image_detect(const char *path, image_probe *ret, vmctl_error **reterr);

/* Is the image at path, of the format p says, self-contained? A backing file or data in
 * another file (qcow2 backing file or external data file, vmdk parent or descriptor extents)
 * would hand the guest whatever host file it names: image::unsafe (details: path, and
 * backing_file or data_file). With ask_qemu_img, when qemu-img is installed it is asked too, with
 * the format given
 * (-f, never probed): a backing file, data file or extent it reports that is not path itself is
 * refused the same way. */
int image_check_self_contained(const char *path, const image_probe *p, bool ask_qemu_img,
                               vmctl_error **reterr);

/* Lower-case hex SHA-256 of a file (65 bytes incl. NUL). libcrypto is loaded on the first call:
 * host::missing_dependency when it cannot be. */
int image_sha256_file(const char *path, char hex[65], vmctl_error **reterr);

/* Run argv (argv[0] looked up in $PATH), stdout to *ret_out when non-NULL, stderr captured into
 * *ret_err (both may be NULL). Returns the exit status (>= 0), or -errno when it could not be
 * spawned. Bounded by timeout_sec: a child still running then is killed (returns -ETIMEDOUT). */
int image_run(char *const argv[], char **ret_out, char **ret_err, double timeout_sec);
