/* SPDX-License-Identifier: MIT */
/* vmctl stop NAME... [--timeout S] [--force] */
#include "cli.h"
#include "render.h"

const char cmd_stop_help[] = "Usage: vmctl stop NAME... [--timeout S] [--force]\n"
                             "\n"
                             "Stop running or paused VMs, one after the other: first gracefully "
                             "(agent shutdown or ACPI power-down), then\n"
                             "SIGTERM, then SIGKILL, each step bounded by --timeout. Fails with\n"
                             "vm_manager::vm::shutdown_failed when even that does not work.\n"
                             "\n"
                             "Options:\n"
                             "      --timeout S    seconds each step may take (default 10)\n"
                             "      --force        skip the graceful step\n"
                             "  -h, --help         show this help\n"
                             "\n"
                             "Examples:\n"
                             "  vmctl stop web\n"
                             "  vmctl stop web --timeout 30\n"
                             "  vmctl stop web --force\n"
                             "  vmctl stop web db cache\n";

struct stop_args {
    double timeout;
    bool force;
};

static int stop_one(cli *c, const char *name, void *userdata, vmctl_error **reterr)
{
    struct stop_args *a = userdata;
    return vmctl_vm_stop(c->ctx, name, a->timeout, a->force, reterr);
}

int cmd_stop(cli *c, int argc, char **argv)
{
    struct stop_args a = {};
    int r;
    vmctl_ctx *ctx = cli_open_name_timeout(c, argc, argv, "force", &a.force, &a.timeout, &r);
    if (!ctx)
        return r;
    return cli_vm_each(c, stop_one, &a, "Stopped", false);
}
