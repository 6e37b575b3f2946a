/* SPDX-License-Identifier: MIT */
/* vmctl resume NAME */
#include "cli.h"
#include "render.h"

const char cmd_resume_help[] = "Usage: vmctl resume NAME\n"
                               "\n"
                               "Let a paused VM's vCPUs run again.\n"
                               "\n"
                               "Options:\n"
                               "  -h, --help    show this help\n"
                               "\n"
                               "Examples:\n"
                               "  vmctl resume web\n";

int cmd_resume(cli *c, int argc, char **argv)
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
    if (vmctl_vm_resume(ctx, c->args[0], &e) < 0)
        return render_error(c, e);
    return cli_vm_done(c, c->args[0], "Resumed");
}
