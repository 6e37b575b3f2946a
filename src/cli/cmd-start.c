/* SPDX-License-Identifier: MIT */
/* vmctl start NAME... [--wait] [--timeout S] */
#include "cli.h"
#include "render.h"

const char cmd_start_help[] =
    "Usage: vmctl start NAME... [--wait] [--timeout S]\n"
    "\n"
    "Launch created or stopped VMs, one after the other. QEMU runs detached: the VM keeps running "
    "after vmctl exits.\n"
    "With --wait, return only when the guest agent answers (the VM is ready), or fail with\n"
    "vm_manager::timeout after S seconds.\n"
    "\n"
    "Options:\n"
    "      --wait         wait until the VM is ready\n"
    "      --timeout S    how long --wait waits (default 120 s under TCG, 60 s with KVM);\n"
    "                     also 1.5, 2m\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl start web\n"
    "  vmctl start web --wait --timeout 300\n"
    "  vmctl start web db --wait\n";

struct start_args {
    double timeout;
    bool wait;
};

static int start_one(cli *c, const char *name, void *userdata, vmctl_error **reterr)
{
    struct start_args *a = userdata;
    /* not given: 0, the library's default boot timeout */
    return vmctl_vm_start(c->ctx, name, a->wait, a->timeout < 0 ? 0 : a->timeout, reterr);
}

int cmd_start(cli *c, int argc, char **argv)
{
    struct start_args a = {.timeout = -1};
    int r;
    vmctl_ctx *ctx = cli_open_name_timeout(c, argc, argv, "wait", &a.wait, &a.timeout, &r);
    if (!ctx)
        return r;
    return cli_vm_each(c, start_one, &a, "Started", false);
}
