/* SPDX-License-Identifier: MIT */
/* vmctl up|down [--destroy]|reload|provision [--file F] [--name N]: VMFile.kdl environments. */
#include "cli.h"
#include "render.h"

#define ENV_COMMON_HELP                                                                            \
    "Options:\n"                                                                                   \
    "  -f, --file F       the VMFile (default: VMFile.kdl in the current directory)\n"             \
    "  -n, --name N       only the machine N of the file\n"

const char cmd_up_help[] =
    "Usage: vmctl up [--file F] [--name N] [--timeout S] [--adopt]\n"
    "\n"
    "Bring up the machines a VMFile.kdl describes (docs/vmfile.md), in parallel: a missing one\n"
    "is created, started and provisioned; a created, stopped or crashed one is started and\n"
    "provisioned; a paused one is resumed; a running one is left alone once its provisioning\n"
    "succeeded, and provisioned again while it has not (the last `up` failed on a step: exit\n"
    "status 1 until it passes). Running it twice does nothing the second time.\n"
    "\n"
    "Machines belong to the VMFile that made them (its canonical path): a VM of the same name\n"
    "made by another VMFile or by hand is refused with vm_manager::vm::already_exists and left\n"
    "alone; --adopt takes over one made by hand. down, reload and provision refuse them too.\n"
    "\n"
    "Provisioner output is printed as it comes, each line prefixed with the machine's name\n"
    "(\"[web] ...\"), and appended to the VM's provision.log (`vmctl logs NAME --provision`).\n"
    "A failing step stops that machine's provisioning with vm_manager::provision::failed.\n"
    "With --json, stdout carries [{name, action, provisioned, steps, seconds}, ...] (action:\n"
    "created, started, resumed or unchanged) and the provisioner output goes to stderr.\n"
    "\n" ENV_COMMON_HELP
    "      --timeout S    how long to wait for each machine to boot (default 120 s under\n"
    "                     TCG, 60 s with KVM)\n"
    "      --adopt        take over machines of these names made by hand (`vmctl create`)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl up\n"
    "  vmctl up --file envs/ci.kdl --name db\n"
    "  vmctl up --json | jq -r '.[] | \"\\(.name) \\(.action)\"'\n";

const char cmd_down_help[] =
    "Usage: vmctl down [--destroy] [--file F] [--name N] [--timeout S]\n"
    "\n"
    "Stop the running machines of a VMFile.kdl (in parallel), gracefully first; with --destroy,\n"
    "destroy them (their directories and store rows) instead. Machines that are already\n"
    "stopped or do not exist are left alone (action \"unchanged\").\n"
    "With --json: [{name, action, ...}] with action stopped, destroyed or unchanged.\n"
    "\n" ENV_COMMON_HELP "      --destroy      destroy the machines\n"
    "      --timeout S    bound of each stop step (default 10 s)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl down\n"
    "  vmctl down --destroy\n";

const char cmd_reload_help[] =
    "Usage: vmctl reload [--file F] [--name N] [--timeout S]\n"
    "\n"
    "Stop the machines of a VMFile.kdl that are running, then bring them up again: started and\n"
    "provisioned (missing ones are created). With --json: [{name, action, ...}].\n"
    "\n" ENV_COMMON_HELP "      --timeout S    how long to wait for each machine to boot (default "
    "120 s under\n"
    "                     TCG, 60 s with KVM)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl reload\n"
    "  vmctl reload --name web\n";

const char cmd_provision_help[] =
    "Usage: vmctl provision [--file F] [--name N]\n"
    "\n"
    "Run the provisioners of a VMFile.kdl again on its running machines (in parallel). A machine\n"
    "that is not running is vm_manager::vm::invalid_state (run `vmctl up`). Output as for\n"
    "`vmctl up`; with --json: [{name, action: \"provisioned\", steps, ...}].\n"
    "\n" ENV_COMMON_HELP "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl provision\n"
    "  vmctl provision --name web\n";

enum { OPT_DESTROY = 0x100, OPT_TIMEOUT, OPT_ADOPT };

static const struct option options[] = {
    {"file", required_argument, NULL, 'f'},      {"name", required_argument, NULL, 'n'},
    {"destroy", no_argument, NULL, OPT_DESTROY}, {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"adopt", no_argument, NULL, OPT_ADOPT},     {},
};

typedef int (*env_fn)(vmctl_ctx *, const vmctl_vmfile *, const vmctl_env_opts *,
                      vmctl_env_result **, size_t *, vmctl_error **);

typedef struct out_state {
    cli *c;
} out_state;

/* Provisioner output: "[name] line" on stdout (guest stderr on stderr); all on stderr with
 * --json, where stdout is the result document's. Calls come serialised from several threads. */
static void on_output(void *userdata, const char *vm, vmctl_provision_stream stream,
                      const char *data, size_t len)
{
    out_state *o = userdata;
    cli *c = o->c;
    bool to_err = c->json || stream == VMCTL_PROVISION_STDERR;
    FILE *f = to_err ? stderr : stdout;
    bool color = to_err ? c->color_err : c->color_out;
    if (to_err)
        fflush(stdout);
    if (color)
        fprintf(f, "%s[%s]%s ", stream == VMCTL_PROVISION_INFO ? ANSI_BOLD ANSI_CYAN : ANSI_CYAN,
                vm, ANSI_RESET);
    else
        fprintf(f, "[%s] ", vm);
    fwrite(data, 1, len, f);
    fflush(f);
}

static int env_command(cli *c, int argc, char **argv, env_fn fn, bool is_down)
{
    const char *file = NULL;
    vmctl_env_opts opts = {};
    double timeout = -1;
    int o;

    while ((o = cli_getopt(c, argc, argv, "f:n:", options)) != -1) {
        switch (o) {
        case 'f':
            file = optarg;
            break;
        case 'n':
            opts.name = optarg;
            break;
        case OPT_DESTROY:
            if (!is_down)
                return cli_usage_error(c, "--destroy is an option of `vmctl down` only");
            opts.destroy = true;
            break;
        case OPT_ADOPT:
            if (fn != vmctl_up)
                return cli_usage_error(c, "--adopt is an option of `vmctl up` only");
            opts.adopt = true;
            break;
        case OPT_TIMEOUT:
            if (fn == vmctl_provision)
                return cli_usage_error(c, "`vmctl provision` takes no --timeout");
            if (cli_parse_seconds(c, "--timeout", optarg, &timeout) < 0)
                return EXIT_ERROR;
            break;
        default:
            return c->exit_code;
        }
    }
    int r = cli_expect_args(c, 0, 0, "");
    if (r)
        return r;

    vmctl_error *e = NULL;
    vmctl_vmfile *vf = NULL;
    if (vmctl_vmfile_load(file, &vf, &e) < 0)
        return render_error(c, e);

    c->home_create = !is_down && fn != vmctl_provision; /* up and reload create VMs */
    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx) {
        vmctl_vmfile_free(vf);
        return EXIT_ERROR;
    }
    if (is_down)
        opts.stop_timeout_sec = timeout < 0 ? 0 : timeout;
    else
        opts.boot_timeout_sec = timeout < 0 ? 0 : timeout; /* 0: the library's default */
    out_state os = {.c = c};
    opts.output = on_output;
    opts.userdata = &os;

    vmctl_env_result *res = NULL;
    size_t n = 0;
    r = fn(ctx, vf, &opts, &res, &n, &e);
    vmctl_vmfile_free(vf);

    int ret = EXIT_OK;
    if (c->json) {
        if (r < 0) {
            ret = render_error(c, e);
            e = NULL;
        } else {
            json_t *arr = json_array();
            for (size_t i = 0; i < n; i++)
                json_array_append_new(
                    arr, json_pack("{s:s, s:s, s:b, s:I, s:f}", "name", res[i].name, "action",
                                   vmctl_env_action_to_string(res[i].action), "provisioned",
                                   res[i].provisioned, "steps", (json_int_t)res[i].steps_run,
                                   "seconds", res[i].seconds));
            ret = render_json(arr);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            const vmctl_env_result *x = &res[i];
            printf("%s: %s", x->name, vmctl_env_action_to_string(x->action));
            if (x->provisioned)
                printf(", %zu provisioning step%s run", x->steps_run, x->steps_run == 1 ? "" : "s");
            printf(" (%.1f s)\n", x->seconds);
        }
        if (fflush(stdout) != 0)
            ret = EXIT_ERROR;
        if (r < 0) {
            ret = render_error(c, e);
            e = NULL;
        }
    }
    vmctl_env_results_free(res, n);
    return ret;
}

int cmd_up(cli *c, int argc, char **argv)
{
    return env_command(c, argc, argv, vmctl_up, false);
}

int cmd_down(cli *c, int argc, char **argv)
{
    return env_command(c, argc, argv, vmctl_down, true);
}

int cmd_reload(cli *c, int argc, char **argv)
{
    return env_command(c, argc, argv, vmctl_reload, false);
}

int cmd_provision(cli *c, int argc, char **argv)
{
    return env_command(c, argc, argv, vmctl_provision, false);
}
