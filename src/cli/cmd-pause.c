/* SPDX-License-Identifier: MIT */
/* vmctl pause NAME */
#include "cli.h"
#include "render.h"

const char cmd_pause_help[] =
    "Usage: vmctl pause NAME\n"
    "\n"
    "Freeze a running VM's vCPUs. Its memory stays allocated and its QEMU keeps running; resume\n"
    "it with `vmctl resume NAME`.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl pause web\n";

int cmd_pause(cli *c, int argc, char **argv)
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
    if (vmctl_vm_pause(ctx, c->args[0], &e) < 0)
        return render_error(c, e);
    return cli_vm_done(c, c->args[0], "Paused");
}
