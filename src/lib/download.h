/* SPDX-License-Identifier: MIT */
/* Fetching a URL to a file (libcurl: http, https, file) and decompressing .zst / .xz. libcurl,
 * libzstd and liblzma are loaded on first use (dl.h): host::missing_dependency when one cannot be.
 */
#pragma once

#include <signal.h>

#include <vmctl/error.h>
#include <vmctl/image.h>

/* Download url into dest (created/truncated, fsynced). image::download_failed on failure with
 * details url and status_code (HTTP >= 400) or reason (curl's message: connection refused,
 * transfer closed with bytes remaining, ...). A transfer that stalls (under 1 byte/s) for
 * $VMCTL_DOWNLOAD_STALL_SECONDS (default 60) fails too. */
int download_file(const char *url, const char *dest, vmctl_progress_fn progress, void *userdata,
                  const volatile sig_atomic_t *cancel, vmctl_error **reterr);

/* "zst", "xz" or NULL: from the magic bytes of the file. */
const char *download_compression(const char *path);

/* Both stop with -ECANCELED (vm_manager::io, dest removed) once *cancel (may be NULL) is set:
 * image pull and import cancel on SIGINT/SIGTERM (vmctl_ctx_set_cancel). */

/* Decompress src into dst. image::download_failed (reason) on corrupt or truncated input. */
int download_decompress(const char *src, const char *dst, const char *kind,
                        vmctl_progress_fn progress, void *userdata,
                        const volatile sig_atomic_t *cancel, vmctl_error **reterr);
