/* SPDX-License-Identifier: MIT */
/* vmctl kill NAME */
#include "cli.h"
#include "render.h"

const char cmd_kill_help[] =
    "Usage: vmctl kill NAME\n"
    "\n"
    "Stop a running or paused VM at once: SIGKILL to its QEMU, no graceful shutdown. The guest\n"
    "gets no chance to flush its disks; prefer `vmctl stop` unless the VM is stuck.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl kill web\n";

int cmd_kill(cli *c, int argc, char **argv)
{
    if (cli_getopt(c, argc, argv, "", NULL) != -1)
        return c->exit_code;
    int r = cli_expect_args(c, 1, 1, "NAME");
    if (r)
        return r;

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;
    vmctl_error *e = NULL;
    if (vmctl_vm_kill(ctx, c->args[0], &e) < 0)
        return render_error(c, e);
    return cli_vm_done(c, c->args[0], "Killed");
}
