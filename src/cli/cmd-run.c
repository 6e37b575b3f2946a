/* SPDX-License-Identifier: MIT */
/* vmctl run NAME [create options] [--rm] [--timeout S] [-- CMD ARGS...] */
#include "cli.h"
#include "render.h"

const char cmd_run_help[] =
    "Usage: vmctl run NAME [VM options] [--rm] [--timeout S] [-- CMD [ARGS...]]\n"
    "\n"
    "Create a VM, start it and wait until its guest agent answers. Then:\n"
    "  - with CMD, run it in the VM like `vmctl exec` (its output passes through byte for byte)\n"
    "    and exit with its status;\n"
    "  - with --rm, destroy the VM at the end, also when a step failed or was interrupted;\n"
    "  - without CMD and --rm, leave the VM running and print its status.\n"
    "With --json, print the exec object {exit_code, signal, stdout, stderr} when CMD is given,\n"
    "else the VM's status object.\n"
    "\n" CREATE_OPTIONS_HELP
    "      --rm                 destroy the VM at the end (even on failure)\n"
    "      --timeout S          how long to wait for the VM to be ready (default 120 s under\n"
    "                           TCG, 60 s with KVM)\n"
    "  -h, --help               show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl run demo --rm -- uname -a\n"
    "  vmctl run ci --memory 1G --env CI=1 --rm -- sh -c 'make test'\n"
    "  vmctl run web --net user --port 8080:80\n";

enum { OPT_RM = 0x100, OPT_TIMEOUT };

static const struct option options[] = {
    CREATE_LONG_OPTIONS,
    {"rm", no_argument, NULL, OPT_RM},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {},
};

/* Destroy after --rm; returns 0 or the exit code of a rendered error. */
static int remove_vm(cli *c, const char *name)
{
    vmctl_error *e = NULL;
    if (vmctl_vm_destroy(c->ctx, name, true, &e) < 0) {
        cleanup_free char *note = NULL;
        if (asprintf(&note, "the VM was not removed; remove it with `vmctl destroy %s --force`",
                     name) >= 0)
            vmctl_error_add_note(e, note);
        return render_error(c, e);
    }
    return 0;
}

static int interrupted_error(cli *c, const char *step)
{
    vmctl_error *e = NULL;
    vmctl_error_new(&e, VMCTL_E_IO, EINTR, "interrupted by signal %d while %s",
                    (int)cli_interrupted, step);
    vmctl_error_set_help(e, "The VM is removed because of --rm; run the command again");
    render_error(c, e);
    return 128 + (int)cli_interrupted;
}

int cmd_run(cli *c, int argc, char **argv)
{
    create_args a = {};
    bool rm = false;
    double timeout = -1;
    int o, r;

    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        switch (o) {
        case OPT_RM:
            rm = true;
            continue;
        case OPT_TIMEOUT:
            if (cli_parse_seconds(c, "--timeout", optarg, &timeout) < 0) {
                create_args_done(&a);
                return EXIT_ERROR;
            }
            continue;
        }
        r = create_args_option(c, &a, o, optarg);
        if (r > 0)
            continue;
        create_args_done(&a);
        return r < 0 ? EXIT_ERROR : c->exit_code;
    }
    if (c->n_args == 0 || (c->dashdash && c->n_args > 1) || (!c->dashdash && c->n_args > 1)) {
        create_args_done(&a);
        if (c->n_args == 0)
            return cli_usage_error(c, "missing NAME");
        return cli_usage_error(c, "unexpected argument '%s' (give the command after `--`)",
                               c->args[1]);
    }
    const char *name = c->args[0];
    char *const *cmd = cli_command_argv(c, 1);
    if (c->dashdash && !cmd) {
        create_args_done(&a);
        return cli_usage_error(c, "missing the command to run after `--`");
    }
    a.config.name = name;

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx) {
        create_args_done(&a);
        return EXIT_ERROR;
    }

    /* From here on, with --rm, every way out goes through remove_vm(). Signals set a flag (a
     * second one has its default effect) so an interrupted run still cleans up. */
    if (rm)
        cli_catch_signals(true);

    vmctl_error *e = NULL;
    r = vmctl_vm_create(ctx, &a.config, &e);
    create_args_done(&a);
    if (r < 0) {
        cli_restore_signals();
        return render_error(c, e);
    }

    int status = EXIT_OK;
    bool started = false;
    if (rm && cli_interrupted) {
        status = interrupted_error(c, "creating the VM");
        goto finish;
    }

    if (timeout < 0)
        timeout = cli_default_wait_timeout(c, name);
    if (vmctl_vm_start(ctx, name, true, timeout, &e) < 0) {
        if (!rm) {
            cleanup_free char *note = NULL;
            if (asprintf(&note,
                         "VM '%s' is left in place: see `vmctl logs %s`, remove it with "
                         "`vmctl destroy %s --force`",
                         name, name, name) >= 0)
                vmctl_error_add_note(e, note);
        }
        if (rm && cli_interrupted) {
            vmctl_error_free(e);
            status = interrupted_error(c, "booting");
        } else {
            status = render_error(c, e);
        }
        goto finish;
    }
    started = true;
    if (rm && cli_interrupted) {
        status = interrupted_error(c, "booting");
        goto finish;
    }

    if (cmd) {
        vmctl_exec_opts opts = {.argv = cmd};
        status = cli_exec_and_report(c, name, &opts);
        if (rm && cli_interrupted && status == EXIT_ERROR)
            status = 128 + (int)cli_interrupted;
    } else if (c->json && !rm) {
        status = cli_vm_done(c, name, NULL);
    } else if (!rm) {
        vmctl_vm_info *vm = NULL;
        if (vmctl_vm_get(ctx, name, &vm, &e) < 0) {
            status = render_error(c, e);
        } else {
            render_vm_status(c, vm);
            vmctl_vm_info_free(vm);
        }
    }

finish:
    if (rm) {
        /* Without a command there is nothing to print but the outcome. */
        vmctl_vm_info *vm = NULL;
        if (!cmd && started && c->json && vmctl_vm_get(ctx, name, &vm, NULL) >= 0) {
            json_t *doc = render_vm_json(vm);
            vmctl_vm_info_free(vm);
            r = remove_vm(c, name);
            if (r == 0) {
                json_object_set_new(doc, "destroyed", json_true());
                status = render_json(doc);
            } else {
                json_decref(doc);
                status = r;
            }
        } else {
            r = remove_vm(c, name);
            if (r != 0 && status == EXIT_OK)
                status = r;
            else if (r == 0 && !cmd && started && !c->json)
                printf("VM '%s' booted and is ready; destroyed it (--rm)\n", name);
        }
        cli_restore_signals();
    }
    return status;
}
