/* SPDX-License-Identifier: MIT */
/* The default guest: stock Debian cloud kernel (raw vmlinux for PVH boot), a busybox initramfs
 * with the virtio modules and vmctl-agent. Lives in $VMCTL_HOME/images/default/. */
#pragma once

#include <stdbool.h>

#include <vmctl/error.h>
#include <vmctl/image.h>

typedef struct guest_paths {
    char *kernel;  /* .../images/default/vmlinux */
    char *initrd;  /* .../images/default/initrd.img */
    char *cmdline; /* the kernel arguments the default guest needs (console, init, timing) */
} guest_paths;

void guest_paths_clear(guest_paths *p);
/* config::invalid-free: host::missing_dependency with help "run `vmctl image build-default`"
 * when the default guest has not been built. */
int guest_default_paths(const char *home, guest_paths *ret, vmctl_error **reterr);
int guest_build_default(const char *home, bool force, vmctl_progress_fn progress, void *userdata,
                        vmctl_error **reterr);
/* Where vmctl's own helper files live (vmctl-agent, build-default.sh): $VMCTL_LIBEXEC_DIR, else
 * the running binary's directory when it holds vmctl-agent, else the install libexecdir. */
char *resource_path(const char *file);
