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
/* The default guest's files and kernel command line ("console=ttyS0 rdinit=/init panic=-1 quiet
 * tsc_early_khz=<host TSC kHz>"). host::missing_dependency with help "Run `vmctl image
 * build-default`." when it has not been built. Free with guest_paths_clear. */
int guest_default_paths(const char *home, guest_paths *ret, vmctl_error **reterr);
/* Run guest/build-default.sh (OUT=$home/images/default, the agent, the download cache
 * $VMCTL_CACHE_DIR, else $XDG_CACHE_HOME/vmctl, else ~/.cache/vmctl, [--force]); its "STEP x"
 * lines become progress(userdata, "x", 0, 0). A no-op when the inputs are unchanged unless force.
 * Builds of one home are serialised ($home/images/.default.lock); bounded to 30 minutes.
 * Errors: host::missing_dependency (a missing tool, naming its Debian package), io (with the
 * script's stderr tail as a note), timeout. */
int guest_build_default(const char *home, bool force, vmctl_progress_fn progress, void *userdata,
                        vmctl_error **reterr);
/* Where vmctl's own helper files live (vmctl-agent, build-default.sh), first match of:
 * $VMCTL_LIBEXEC_DIR/file (when set, whether or not it exists); the running binary's directory;
 * for a binary inside the build tree, <build>/src/agent/ (meson builds vmctl-agent there and copies
 * build-default.sh next to it); else the install libexecdir ($libexecdir/vmctl). Malloc'd; NULL
 * only when out of memory. */
char *resource_path(const char *file);
