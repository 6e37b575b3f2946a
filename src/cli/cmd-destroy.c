/* SPDX-License-Identifier: MIT */
/* vmctl destroy NAME [--force] */
#include "cli.h"
#include "render.h"

const char cmd_destroy_help[] =
    "Usage: vmctl destroy NAME [--force]\n"
    "\n"
    "Remove a VM: its directory (disk overlay, seed ISO, keys, logs, sockets) and its store row.\n"
    "A running or paused VM is refused with vm_manager::vm::invalid_state unless --force, which\n"
    "kills it first. Destroy finishes what an interrupted destroy left, and removes the row (and\n"
    "host ports) of a VM whose directory has vanished.\n"
    "\n"
    "With --json, print {\"name\": NAME, \"destroyed\": true}.\n"
    "\n"
    "Options:\n"
    "      --force    kill the VM first if it is running or paused\n"
    "  -h, --help     show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl destroy web\n"
    "  vmctl destroy web --force\n";

enum { OPT_FORCE = 0x100 };

static const struct option options[] = {
    {"force", no_argument, NULL, OPT_FORCE},
    {},
};

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
    vmctl_ctx *ctx = cli_open_with_args(c, 1, 1, "NAME", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    if (vmctl_vm_destroy(ctx, c->args[0], force, &e) < 0)
        return render_error(c, e);
    if (c->json)
        return render_json(json_pack("{s:s, s:b}", "name", c->args[0], "destroyed", 1));
    printf("Destroyed VM '%s'\n", c->args[0]);
    return EXIT_OK;
}
