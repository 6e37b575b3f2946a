/* SPDX-License-Identifier: MIT */
/* vmctl pause NAME... */
#include "cli.h"
#include "render.h"

const char cmd_pause_help[] =
    "Usage: vmctl pause NAME...\n"
    "\n"
    "Freeze a running VM's vCPUs. Its memory stays allocated and its QEMU keeps running; resume\n"
    "it with `vmctl resume NAME`. Several names are handled one after the other; vmctl exits 1\n"
    "when any failed.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl pause web\n"
    "  vmctl pause web db\n";

int cmd_pause(cli *c, int argc, char **argv)
{
    return cli_vm_action(c, argc, argv, vmctl_vm_pause, "Paused");
}
