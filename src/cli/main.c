/* SPDX-License-Identifier: MIT */
/* vmctl: the command table, global options and dispatch. Each command lives in cmd-<verb>.c. */
#include "cli.h"
#include "render.h"

static int cmd_help(cli *c, int argc, char **argv);

static const char cmd_help_help[] =
    "Usage: vmctl help [COMMAND [SUBCOMMAND]]\n"
    "\n"
    "Show the list of commands, or the help of one command (the same as `vmctl COMMAND --help`).\n"
    "\n"
    "Examples:\n"
    "  vmctl help\n"
    "  vmctl help exec\n"
    "  vmctl help image build-default\n";

#define PLANNED(n, s)                                                                              \
    {                                                                                              \
        n, NULL, s, NULL, "not implemented yet", NULL                                              \
    }

static const cli_command commands[] = {
    {"doctor", cmd_doctor, "check the host: QEMU, qemu-img, KVM (usable or not, and why), TCG",
     cmd_doctor_help, NULL},
    {"image", cmd_image, "build the default guest, list images", cmd_image_help, NULL,
     image_subcommand_at},
    {"create", cmd_create, "create a VM (overlay, seed, keys, store row) without starting it",
     cmd_create_help, NULL},
    {"run", cmd_run, "create + start + wait until ready (+ run a command, + destroy with --rm)",
     cmd_run_help, NULL},
    {"start", cmd_start, "start a VM (with --wait: until its agent answers)", cmd_start_help, NULL},
    {"stop", cmd_stop, "stop a VM gracefully, escalating to SIGTERM and SIGKILL", cmd_stop_help,
     NULL},
    {"kill", cmd_kill, "stop a VM at once (SIGKILL)", cmd_kill_help, NULL},
    {"pause", cmd_pause, "freeze a running VM's vCPUs", cmd_pause_help, NULL},
    {"resume", cmd_resume, "unfreeze a paused VM", cmd_resume_help, NULL},
    {"destroy", cmd_destroy, "remove a VM: its directory and its store row", cmd_destroy_help,
     NULL},
    {"list", cmd_list, "list VMs", cmd_list_help, NULL},
    {"status", cmd_status, "show one VM's state and configuration", cmd_status_help, NULL},
    {"console", cmd_console, "attach to a VM's serial console (Ctrl-] detaches)", cmd_console_help,
     NULL},
    {"logs", cmd_logs, "print a VM's console log (or QEMU's, with --qemu)", cmd_logs_help, NULL},
    {"exec", cmd_exec, "run a command in a VM through its agent; exits with its status",
     cmd_exec_help, NULL},
    {"errors", cmd_errors, "list the error codes, or explain one", cmd_errors_help, NULL},
    {"help", cmd_help, "show help for a command", cmd_help_help, NULL},
    {"cp", cmd_cp, "copy files or directories to or from a VM (NAME:/path)", cmd_cp_help, NULL},
    {"ssh", cmd_ssh, "open an SSH session to a VM (its own key and pinned host key)", cmd_ssh_help,
     NULL},
    {"shell", cmd_shell, "an interactive login shell in a VM, on a terminal, through its agent",
     cmd_shell_help, NULL},
    {"snapshot", cmd_snapshot, "create, restore, list and remove snapshots", cmd_snapshot_help,
     NULL, snapshot_subcommand_at},
    {"clone", cmd_clone, "new running VMs from another VM's snapshot", cmd_clone_help, NULL},
    {"pool", cmd_pool, "a snapshot's warm pool: hypervisors launched ahead for its clones",
     cmd_pool_help, NULL},
    {"stats", cmd_stats,
     "CPU, memory, disk, network and guest statistics of VMs (--watch, --prometheus)",
     cmd_stats_help, NULL},
    {"up", cmd_up, "create, start and provision the VMs of a VMFile.kdl", cmd_up_help, NULL},
    {"down", cmd_down, "stop (or --destroy) the VMs of a VMFile.kdl", cmd_down_help, NULL},
    {"reload", cmd_reload, "restart and re-provision the VMs of a VMFile.kdl", cmd_reload_help,
     NULL},
    {"provision", cmd_provision, "run the provisioners of a VMFile.kdl again", cmd_provision_help,
     NULL},
    {"kdl", cmd_kdl, "KDL tools: print a document in canonical form (kdl fmt FILE)", cmd_kdl_help,
     NULL, kdl_subcommand_at},
    {"serve", cmd_serve,
     "serve the REST/JSON API (docs/api.md) on a unix socket, and TCP with a token", cmd_serve_help,
     NULL},
    {"network", cmd_network, "host networking of --net tap VMs: the pool, addresses, rules",
     cmd_network_help, NULL, network_subcommand_at},
    {"completion", cmd_completion, "print a shell completion script for bash, zsh or fish",
     cmd_completion_help, NULL},
};

const cli_command *cli_command_at(size_t i)
{
    return i < ELEMENTSOF(commands) ? &commands[i] : NULL;
}

const cli_command *cli_find_command(const char *name)
{
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (streq(commands[i].name, name))
            return &commands[i];
    return NULL;
}

void cli_print_main_help(FILE *f)
{
    fprintf(f, "vmctl %s: virtual machines on QEMU, with a guest agent\n\n", vmctl_version());
    fputs("Usage: vmctl [--home DIR] [--json] [-v] COMMAND [ARGS...]\n\nCommands:\n", f);
    size_t w = 0;
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (commands[i].fn && strlen(commands[i].name) > w)
            w = strlen(commands[i].name);
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (commands[i].fn)
            fprintf(f, "  %-*s  %s\n", (int)w, commands[i].name, commands[i].summary);
    bool planned = false;
    for (size_t i = 0; i < ELEMENTSOF(commands); i++)
        if (!commands[i].fn) {
            fprintf(f, "%s %s", planned ? "" : "\nPlanned, not implemented yet:", commands[i].name);
            planned = true;
        }
    fputs("\n\n"
          "Global options (before or after the command):\n"
          "      --home DIR   use DIR as the vmctl home (default $VMCTL_HOME, else\n"
          "                   $XDG_DATA_HOME/vmctl, else ~/.local/share/vmctl)\n"
          "      --json       print exactly one JSON document on stdout: the result or the error\n"
          "  -v, --verbose    also print the library's debug and info messages\n"
          "  -h, --help       show help (vmctl COMMAND --help for a command)\n"
          "      --version    print the version\n"
          "\n"
          "Exit status: 0 success, 1 error, 2 usage error; `exec` and `run -- CMD` exit with the\n"
          "command's status (128+N when a signal N ended it).\n"
          "\n"
          "Examples:\n"
          "  vmctl doctor\n"
          "  vmctl image build-default\n"
          "  vmctl run demo --rm -- uname -a\n"
          "  vmctl list --json\n"
          "  vmctl errors vm_manager::timeout\n",
          f);
}

void cli_print_help(cli *c)
{
    if (c->cmd && c->cmd->help) {
        render_fputs(c->cmd->help, stdout);
        fputs("\nGlobal options: --home DIR, --json, -v (before or after the command; see `vmctl "
              "--help`)\n",
              stdout);
    } else
        cli_print_main_help(stdout);
    fflush(stdout);
}

static int not_implemented(cli *c, const char *what)
{
    vmctl_error *e = NULL;
    vmctl_error_new(&e, VMCTL_E_CLI_USAGE, ENOSYS, "'%s' is not implemented yet", what);
    cleanup_free char *help = cli_printf("`vmctl %s` is planned for a later release; `vmctl "
                                         "--help` lists the commands available now",
                                         what);
    vmctl_error_set_help(e, help);
    vmctl_error_add_detail(e, "command", what);
    vmctl_error_add_detail(e, "issue", "not implemented yet");
    return render_error(c, e);
}

int cli_not_implemented(cli *c, const char *what)
{
    return not_implemented(c, what);
}

static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 32 || lb > 32)
        return 99;
    size_t d[33][33];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

static int unknown_command(cli *c, const char *name)
{
    vmctl_error *e = NULL;
    vmctl_error_new(&e, VMCTL_E_CLI_USAGE, EINVAL, "unknown command '%s'", name);
    const char *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i < ELEMENTSOF(commands); i++) {
        size_t d = edit_distance(name, commands[i].name);
        if (d < best_d) {
            best_d = d;
            best = commands[i].name;
        }
    }
    cleanup_free char *help =
        best ? cli_printf("Did you mean `vmctl %s`? `vmctl --help` lists the commands", best)
             : NULL;
    vmctl_error_set_help(e, help ? help : "Run `vmctl --help` for the list of commands");
    return render_error(c, e);
}

static int cmd_help(cli *c, int argc, char **argv)
{
    if (cli_getopt(c, argc, argv, "", NULL) != -1)
        return c->exit_code;
    if (c->n_args == 0) {
        c->cmd = NULL;
        cli_print_help(c);
        return EXIT_OK;
    }
    const cli_command *cmd = cli_find_command(c->args[0]);
    if (!cmd)
        return unknown_command(c, c->args[0]);
    if (!cmd->fn)
        return not_implemented(c, cmd->name);
    if (c->n_args >= 2 && streq(cmd->name, "image")) {
        const cli_command *sub = image_find_subcommand(c->args[1]);
        if (!sub)
            return cli_usage_error(c, "unknown image subcommand '%s'", c->args[1]);
        if (!sub->fn) {
            char what[64];
            snprintf(what, sizeof(what), "image %s", sub->name);
            return not_implemented(c, what);
        }
        cmd = sub;
    } else if (c->n_args >= 2) {
        return cli_usage_error(c, "unexpected argument '%s'", c->args[1]);
    }
    c->cmd = cmd;
    cli_print_help(c);
    return EXIT_OK;
}

static const struct option main_options[] = {
    {"version", no_argument, NULL, CLI_OPT_VERSION},
    {},
};

int main(int argc, char **argv)
{
    cli c = {};
    int idx = argc, o, r;

    render_init(&c);

    while ((o = cli_getopt_subcommand(&c, argc, argv, main_options, &idx)) != -1) {
        switch (o) {
        case CLI_OPT_VERSION:
            if (c.json)
                r = render_json(json_pack("{s:s}", "version", vmctl_version()));
            else
                r = printf("vmctl %s\n", vmctl_version()) < 0 ? EXIT_ERROR : EXIT_OK;
            goto out;
        default:
            r = c.exit_code;
            goto out;
        }
    }

    if (idx >= argc) {
        if (c.json) {
            r = cli_usage_error(&c, "no command given");
        } else {
            cli_print_main_help(stderr);
            r = EXIT_USAGE;
        }
        goto out;
    }

    const cli_command *cmd = cli_find_command(argv[idx]);
    if (!cmd || !cmd->fn) {
        /* The command's own options are not parsed, but --json still decides the output. */
        for (int i = idx + 1; i < argc && !streq(argv[i], "--"); i++)
            if (streq(argv[i], "--json"))
                c.json = true;
    }
    if (!cmd) {
        r = unknown_command(&c, argv[idx]);
        goto out;
    }
    if (!cmd->fn) {
        r = not_implemented(&c, cmd->name);
        goto out;
    }
    c.cmd = cmd;
    r = cmd->fn(&c, argc - idx, argv + idx);

out:
    r = cli_finish_stdout(&c, r);
    if (c.ctx)
        vmctl_ctx_free(c.ctx);
    free(c.opt_long);
    free(c.opt_short);
    free(c.args);
    return r;
}
