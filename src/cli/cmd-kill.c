/* SPDX-License-Identifier: MIT */
/* vmctl kill NAME... */
#include "cli.h"
#include "render.h"

const char cmd_kill_help[] =
    "Usage: vmctl kill NAME...\n"
    "\n"
    "Stop a running or paused VM at once: SIGKILL to its QEMU, no graceful shutdown. The guest\n"
    "gets no chance to flush its disks; prefer `vmctl stop` unless the VM is stuck. Several\n"
    "names are handled one after the other; vmctl exits 1 when any failed.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl kill web\n"
    "  vmctl kill web db\n";

int cmd_kill(cli *c, int argc, char **argv)
{
    return cli_vm_action(c, argc, argv, vmctl_vm_kill, "Killed");
}
