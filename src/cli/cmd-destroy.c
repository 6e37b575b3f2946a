/* SPDX-License-Identifier: MIT */
/* vmctl destroy NAME... [--force] */
#include "cli.h"
#include "render.h"

#include <stdint.h>

const char cmd_destroy_help[] =
    "Usage: vmctl destroy NAME... [--force]\n"
    "\n"
    "Remove VMs, one after the other, each reported on its own: its directory (disk overlay, seed "
    "ISO, keys, logs, sockets) and its store row.\n"
    "A running or paused VM is refused with vm_manager::vm::invalid_state unless --force, which\n"
    "kills it first. Destroy finishes what an interrupted destroy left, and removes the row (and\n"
    "host ports) of a VM whose directory has vanished.\n"
    "\n"
    "With --json, print {\"name\": NAME, \"destroyed\": true}; for several names, an array of\n"
    "those (or {\"name\", \"error\"} for one that failed). Exits 1 when any failed.\n"
    "\n"
    "Options:\n"
    "      --force    kill the VM first if it is running or paused\n"
    "  -h, --help     show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl destroy web\n"
    "  vmctl destroy web --force\n"
    "  vmctl destroy a b c\n";

enum { OPT_FORCE = 0x100 };

static const struct option options[] = {
    {"force", no_argument, NULL, OPT_FORCE},
    {},
};

static int destroy_one(cli *c, const char *name, void *userdata, vmctl_error **reterr)
{
    return vmctl_vm_destroy(c->ctx, name, *(bool *)userdata, reterr);
}

int cmd_destroy(cli *c, int argc, char **argv)
{
    bool force = false;
    int o;

    while ((o = cli_getopt(c, argc, argv, "f", options)) != -1) {
        switch (o) {
        case 'f':
        case OPT_FORCE:
            force = true;
            break;
        default:
            return c->exit_code;
        }
    }
    int r;
    vmctl_ctx *ctx = cli_open_with_args(c, 1, SIZE_MAX, "NAME", &r);
    if (!ctx)
        return r;
    return cli_vm_each(c, destroy_one, &force, "Destroyed", true);
}
