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

enum { OPT_FORCE = 0x100, OPT_TIMEOUT };

static const struct option options[] = {
    {"force", no_argument, NULL, OPT_FORCE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {},
};

int cmd_stop(cli *c, int argc, char **argv)
{
    bool force = false;
    double timeout = 0;
    int o;

    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        switch (o) {
        case OPT_FORCE:
            force = true;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_seconds(c, "--timeout", optarg, &timeout) < 0)
                return EXIT_ERROR;
            break;
        default:
            return c->exit_code;
        }
    }
    int r = cli_expect_args(c, 1, 1, "NAME");
    if (r)
        return r;

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;
    vmctl_error *e = NULL;
    if (vmctl_vm_stop(ctx, c->args[0], timeout, force, &e) < 0)
        return render_error(c, e);
    return cli_vm_done(c, c->args[0], "Stopped");
}
