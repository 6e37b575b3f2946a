/* SPDX-License-Identifier: MIT */
/* The image cache ($VMCTL_HOME/images). For now it holds the default guest only; pulled and
 * imported disk images join it with the images issue. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <vmctl/image.h>

#include "ctx.h"
#include "error.h"
#include "guest.h"
#include "util/util.h"

int vmctl_image_build_default(vmctl_ctx *ctx, bool force, vmctl_progress_fn progress,
                              void *userdata, vmctl_error **reterr)
{
    if (!ctx)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "vmctl_image_build_default: no ctx");
    return guest_build_default(ctx->home, force, progress, userdata, reterr);
}

static uint64_t dir_size(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

int vmctl_image_list(vmctl_ctx *ctx, vmctl_image_info **ret, size_t *n, vmctl_error **reterr)
{
    if (!ctx || !ret || !n)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "vmctl_image_list: bad arguments");
    *ret = NULL;
    *n = 0;
    guest_paths gp = {0};
    if (guest_default_paths(ctx->home, &gp, NULL) < 0)
        return 0; /* nothing built yet: an empty cache */
    cleanup_free char *dir = str_printf("%s/images/default", ctx->home);
    vmctl_image_info *list = calloc(1, sizeof(*list));
    if (!dir || !list) {
        free(list);
        guest_paths_clear(&gp);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    list[0].name = strdup("default");
    list[0].format = strdup("kernel+initrd");
    list[0].size = dir_size(dir);
    list[0].path = strdup(dir);
    guest_paths_clear(&gp);
    if (!list[0].name || !list[0].format || !list[0].path) {
        vmctl_image_info_list_free(list, 1);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    *ret = list;
    *n = 1;
    return 0;
}

void vmctl_image_info_list_free(vmctl_image_info *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].format);
        free(list[i].path);
    }
    free(list);
}
