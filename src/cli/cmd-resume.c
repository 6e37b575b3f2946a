/* SPDX-License-Identifier: MIT */
/* vmctl resume NAME... */
#include "cli.h"
#include "render.h"

const char cmd_resume_help[] =
    "Usage: vmctl resume NAME...\n"
    "\n"
    "Let a paused VM's vCPUs run again. Several names are handled one after the\n"
    "other; vmctl exits 1 when any failed.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl resume web\n"
    "  vmctl resume web db\n";

int cmd_resume(cli *c, int argc, char **argv)
{
    return cli_vm_action(c, argc, argv, vmctl_vm_resume, "Resumed");
}
