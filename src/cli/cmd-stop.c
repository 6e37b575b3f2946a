/* SPDX-License-Identifier: MIT */
/* vmctl stop NAME [--timeout S] [--force] */
#include "cli.h"
#include "render.h"

const char cmd_stop_help[] =
    "Usage: vmctl stop NAME [--timeout S] [--force]\n"
    "\n"
    "Stop a running or paused VM: first gracefully (agent shutdown or ACPI power-down), then\n"
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
    "  vmctl stop web --force\n";

int cmd_stop(cli *c, int argc, char **argv)
{
    bool force = false;
    double timeout = 0;
    int r;
    vmctl_ctx *ctx = cli_open_name_timeout(c, argc, argv, "force", &force, &timeout, &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    if (vmctl_vm_stop(ctx, c->args[0], timeout, force, &e) < 0)
        return render_error(c, e);
    return cli_vm_done(c, c->args[0], "Stopped");
}
