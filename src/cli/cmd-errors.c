/* SPDX-License-Identifier: MIT */
/* vmctl errors [CODE]: the error catalogue, or one code explained. */
#include "cli.h"
#include "render.h"

const char cmd_errors_help[] =
    "Usage: vmctl errors [CODE]\n"
    "\n"
    "Without CODE, list every error code vmctl can report with what triggers it. With CODE,\n"
    "explain that one: what triggers it and what to do. The `vm_manager::` prefix may be left\n"
    "out (`vmctl errors vm::not_found`).\n"
    "\n"
    "Error codes are stable: scripts may match on them (`--json` puts the code in\n"
    "`.error.code`).\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl errors\n"
    "  vmctl errors vm_manager::timeout\n"
    "  vmctl errors --json | jq -r '.[].code'\n";

static json_t *info_json(const vmctl_error_info *info)
{
    return json_pack("{s:s, s:s, s:s}", "code", info->code, "trigger", info->trigger, "help",
                     info->help);
}

static const vmctl_error_info *lookup(const char *code)
{
    const vmctl_error_info *info = vmctl_error_lookup(code);
    if (!info && strncmp(code, "vm_manager::", 12) != 0) {
        char buf[256];
        snprintf(buf, sizeof(buf), "vm_manager::%s", code);
        info = vmctl_error_lookup(buf);
    }
    return info;
}

int cmd_errors(cli *c, int argc, char **argv)
{
    int r;
    if (!cli_parse_no_options(c, argc, argv, 0, 1, "CODE", &r))
        return r;

    if (c->n_args == 1) {
        const vmctl_error_info *info = lookup(c->args[0]);
        if (!info) {
            vmctl_error *e = NULL;
            vmctl_error_new(&e, VMCTL_E_CONFIG_INVALID, ENOENT, "unknown error code '%s'",
                            c->args[0]);
            vmctl_error_add_detail(e, "code", c->args[0]);
            vmctl_error_set_help(e, "Run `vmctl errors` to list every code");
            return render_error(c, e);
        }
        if (c->json)
            return render_json(info_json(info));
        printf("%s\n\n  trigger: %s\n  help:    %s\n", info->code, info->trigger, info->help);
        return EXIT_OK;
    }

    if (c->json) {
        json_t *a = json_array();
        const vmctl_error_info *info;
        for (size_t i = 0; (info = vmctl_error_catalogue(i)); i++)
            json_array_append_new(a, info_json(info));
        return render_json(a);
    }

    table *t = table_new(2, "CODE", "TRIGGER");
    const vmctl_error_info *info;
    for (size_t i = 0; (info = vmctl_error_catalogue(i)); i++)
        table_add_row(t, info->code, info->trigger);
    table_print(t, stdout);
    table_free(t);
    printf("\nRun `vmctl errors CODE` for what to do about one.\n");
    return EXIT_OK;
}
