/* SPDX-License-Identifier: MIT */
/* vmctl start NAME [--wait] [--timeout S] */
#include "cli.h"
#include "render.h"

const char cmd_start_help[] =
    "Usage: vmctl start NAME [--wait] [--timeout S]\n"
    "\n"
    "Launch a created or stopped VM. QEMU runs detached: the VM keeps running after vmctl exits.\n"
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
    "  vmctl start web --wait --timeout 300\n";

int cmd_start(cli *c, int argc, char **argv)
{
    bool wait = false;
    double timeout = -1;
    int r;
    vmctl_ctx *ctx = cli_open_name_timeout(c, argc, argv, "wait", &wait, &timeout, &r);
    if (!ctx)
        return r;
    const char *name = c->args[0];
    if (wait && timeout < 0)
        timeout = cli_default_wait_timeout(c, name);

    vmctl_error *e = NULL;
    if (vmctl_vm_start(ctx, name, wait, timeout < 0 ? 0 : timeout, &e) < 0)
        return render_error(c, e);
    if (!c->json && wait) {
        printf("Started VM '%s'; it is ready\n", name);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_ERROR;
    }
    return cli_vm_done(c, name, "Started");
}
