/* SPDX-License-Identifier: MIT */
/* vmctl status NAME: one VM's state and configuration. */
#include "cli.h"
#include "render.h"

const char cmd_status_help[] =
    "Usage: vmctl status NAME\n"
    "\n"
    "Show a VM's state (checked against its QEMU process, not just the store), its resources,\n"
    "ports, QEMU pid and directory. A crashed VM also shows the tail of its logs.\n"
    "\n"
    "With --json, print one object: name, state, backend, machine, accel, vcpus, memory_mib,\n"
    "disk_gib, image, pid (null unless running or paused), ports ([{host, guest, protocol}]),\n"
    "dir, net, created_at (unix seconds), and kernel, initrd, cmdline, env, crash_note when set;\n"
    "project (the VMFile that made it, null: made by hand) and provision ({state:\n"
    "none|pending|ok|failed, step, error, at}).\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl status web\n"
    "  vmctl status web --json | jq -r .state\n";

int cmd_status(cli *c, int argc, char **argv)
{
    int r;
    vmctl_ctx *ctx = cli_open_no_options(c, argc, argv, 1, 1, "NAME", &r);
    if (!ctx)
        return r;

    cleanup_vm_info vmctl_vm_info *vm = NULL;
    vmctl_error *e = NULL;
    if (vmctl_vm_get(ctx, c->args[0], &vm, &e) < 0)
        return render_error(c, e);
    if (c->json)
        return render_json(render_vm_json(vm));
    render_vm_status(c, vm);
    return EXIT_OK;
}
