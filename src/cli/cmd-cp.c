/* SPDX-License-Identifier: MIT */
/* vmctl cp SRC DST: one of them NAME:/path in a VM */
#include "cli.h"
#include "render.h"

const char cmd_cp_help[] =
    "Usage: vmctl cp [NAME:]SRC [NAME:]DST\n"
    "\n"
    "Copy a file or a directory into a running VM or out of it, through its guest agent.\n"
    "Exactly one of SRC and DST names a VM as NAME:/absolute/path. Like `cp -r`: when DST is\n"
    "an existing directory, SRC goes into it under its own name. Files keep their permission\n"
    "bits (less the umask; never setuid, setgid or sticky) and modification time; directories\n"
    "travel as tar. A file is written to a temporary name and renamed into place.\n"
    "\n"
    "Out of a guest nothing is trusted: no link below DST is followed (a link in the way is\n"
    "replaced), nothing is chowned, and devices, FIFOs and names with '..' are left out (the\n"
    "copy then fails with vm_manager::cp::unsafe_entry naming them). See docs/cli.md.\n"
    "\n"
    "Options:\n"
    "  -h, --help   show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl cp build.tar.gz web:/tmp/\n"
    "  vmctl cp web:/var/log/app.log ./app.log\n"
    "  vmctl cp ./src web:/root/src\n";

static const struct option options[] = {
    {},
};

/* "NAME:/path" -> name, path; false for a local path (no colon before the first slash). */
static bool split_remote(const char *arg, char **name, const char **path)
{
    const char *colon = strchr(arg, ':');
    const char *slash = strchr(arg, '/');
    if (!colon || colon == arg || (slash && slash < colon))
        return false;
    *name = strndup(arg, (size_t)(colon - arg));
    *path = colon + 1;
    return *name != NULL;
}

int cmd_cp(cli *c, int argc, char **argv)
{
    int o;
    while ((o = cli_getopt(c, argc, argv, "", options)) != -1)
        return c->exit_code;
    int r = cli_expect_args(c, 2, 2, "SRC and DST");
    if (r != 0)
        return r;
    cleanup_free char *src_vm = NULL, *dst_vm = NULL;
    const char *src_path = c->args[0], *dst_path = c->args[1];
    bool src_remote = split_remote(c->args[0], &src_vm, &src_path);
    bool dst_remote = split_remote(c->args[1], &dst_vm, &dst_path);
    if (src_remote == dst_remote)
        return cli_usage_error(c, "exactly one of SRC and DST must be NAME:/path in a VM");
    const char *rpath = src_remote ? src_path : dst_path;
    if (rpath[0] != '/')
        return cli_invalid_value(c, src_remote ? "SRC" : "DST", rpath,
                                 "an absolute path in the VM (NAME:/path)");
    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;
    vmctl_error *e = NULL;
    r = src_remote ? vmctl_cp_from_vm(ctx, src_vm, src_path, dst_path, &e)
                   : vmctl_cp_to_vm(ctx, dst_vm, src_path, dst_path, &e);
    if (r < 0)
        return render_error(c, e);
    if (c->json) {
        json_t *o2 = json_object();
        json_object_set_new(o2, "source", json_string(c->args[0]));
        json_object_set_new(o2, "destination", json_string(c->args[1]));
        return render_json(o2);
    }
    return EXIT_OK;
}
