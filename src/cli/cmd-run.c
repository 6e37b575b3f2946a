/* SPDX-License-Identifier: MIT */
/* vmctl run NAME [create options] [--rm] [--timeout S] [-- CMD ARGS...] */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <vmctl/snapshot.h>

#include "cli.h"
#include "render.h"

const char cmd_run_help[] =
    "Usage: vmctl run NAME [VM options | --from VM/SNAP] [--rm] [--timeout S] [[--] CMD "
    "[ARGS...]]\n"
    "\n"
    "Create a VM, start it and wait until its guest agent answers (with --from: clone snapshot\n"
    "SNAP of VM as NAME, as `vmctl clone VM SNAP NAME` does; its configuration is the\n"
    "snapshot's). Then:\n"
    "vmctl's options go before CMD: from CMD's first word on, every argument is the command's.\n"
    "  - with CMD, run it in the VM like `vmctl exec` (its output streams through byte for byte\n"
    "    as it is produced) and exit with its status;\n"
    "  - with --rm, destroy the VM at the end, also when a step failed or was interrupted;\n"
    "  - without CMD and --rm, leave the VM running and print its status.\n"
    "With --json, print the exec object {exit_code, signal, stdout, stderr} when CMD is given,\n"
    "else the VM's status object.\n"
    "\n" CREATE_OPTIONS_HELP
    "      --from VM/SNAP       restore a new clone of snapshot SNAP of VM instead of booting\n"
    "      --rm                 destroy the VM at the end (even on failure)\n"
    "      --timeout S          how long to wait for the VM to be ready (default 120 s under\n"
    "                           TCG, 60 s with KVM)\n"
    "  -h, --help               show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl run demo --rm -- uname -a\n"
    "  vmctl run ci --memory 1G --env CI=1 --rm -- sh -c 'make test'\n"
    "  vmctl run web --net user --port 8080:80\n"
    "  vmctl run job1 --from base/ready --rm -- sh -c 'make test'\n";

enum { OPT_RM = 0x100, OPT_TIMEOUT, OPT_FROM };

static const struct option options[] = {
    CREATE_LONG_OPTIONS,
    {"rm", no_argument, NULL, OPT_RM},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"from", required_argument, NULL, OPT_FROM},
    {},
};

/* Start + wait + exec: the part of run that can take long. With --rm it runs in a worker thread
 * (with its own context) so that a signal can end it at once: the main thread then kills the VM,
 * which makes the worker's wait or exec fail quickly, and destroys it once the worker is done. */
struct run_job {
    cli *c;
    const char *home;
    const char *name;
    const char *from_vm, *from_snap; /* --from: clone instead of start */
    double timeout;
    char *const *cmd;
    bool started;
    bool exec_ok;
    bool streamed; /* the output went straight through (not --json): st holds the status */
    vmctl_error *err;
    vmctl_exec_result res;
    vmctl_exec_status st;
    atomic_bool done;
};

static void run_job(struct run_job *j, vmctl_ctx *ctx)
{
    if (j->from_vm ? vmctl_snapshot_clone(ctx, j->from_vm, j->from_snap, j->name, 1, j->timeout,
                                          &j->err) < 0
                   : vmctl_vm_start(ctx, j->name, true, j->timeout, &j->err) < 0)
        return;
    j->started = true;
    if (j->from_vm)
        cli_pool_refill_later(j->c, ctx, j->from_vm, j->from_snap, false);
    if (!j->cmd)
        return;
    vmctl_exec_opts opts = {.argv = j->cmd};
    if (!j->c->json) {
        /* streamed as the command produces it, as `vmctl exec` does */
        vmctl_exec_io io = {.on_stdout = cli_pass_stdout, .on_stderr = cli_pass_stderr};
        fflush(stdout);
        j->streamed = true;
        if (vmctl_exec_stream(ctx, j->name, &opts, &io, -1, &j->st, &j->err) < 0)
            return;
    } else if (cli_exec_collect(j->c, ctx, j->name, &opts, -1, &j->res, &j->err) < 0) {
        return;
    }
    j->exec_ok = true;
}

static void *run_job_thread(void *userdata)
{
    struct run_job *j = userdata;
    vmctl_ctx *ctx = NULL;
    if (vmctl_ctx_new(j->home, &ctx, &j->err) >= 0) {
        vmctl_ctx_set_log(ctx, render_log, j->c);
        run_job(j, ctx);
        vmctl_ctx_free(ctx);
    }
    atomic_store(&j->done, true);
    return NULL;
}

/* Run the job in a thread while waiting for signals; returns the first signal, or 0. */
static int run_job_interruptible(cli *c, struct run_job *j)
{
    sigset_t set, old;
    cli_interrupt_signals(&set);
    pthread_sigmask(SIG_BLOCK, &set, &old);

    pthread_t t;
    if (pthread_create(&t, NULL, run_job_thread, j) != 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        run_job(j, c->ctx);
        return 0;
    }

    int sig = 0;
    bool killed = false;
    while (!atomic_load(&j->done)) {
        if (sig && !killed) {
            /* Kill until it works: right after the signal the VM may still be launching. */
            vmctl_error *e = NULL;
            killed = vmctl_vm_kill(c->ctx, j->name, &e) >= 0;
            vmctl_error_free(e);
        }
        struct timespec ts = {.tv_nsec = 100 * 1000 * 1000};
        int s = sigtimedwait(&set, NULL, &ts);
        if (s > 0 && !sig) {
            sig = s;
            render_clear_progress(c);
            fprintf(stderr, "SIG%s: stopping VM '%s' and removing it (--rm)\n", sigabbrev_np(s),
                    j->name);
        } else if (s > 0) {
            /* A second signal: stop waiting for the worker; the caller destroys the VM. */
            break;
        }
    }
    if (atomic_load(&j->done))
        pthread_join(t, NULL);
    else
        pthread_detach(t);

    /* Swallow signals that arrived meanwhile, then restore the mask. */
    struct timespec zero = {};
    while (sigtimedwait(&set, NULL, &zero) > 0)
        ;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return sig;
}

/* Destroy after --rm; returns 0 or the exit code of a rendered error. */
static int remove_vm(cli *c, const char *name)
{
    vmctl_error *e = NULL;
    if (vmctl_vm_destroy(c->ctx, name, true, &e) < 0) {
        if (vmctl_error_get_kind(e) == VMCTL_E_VM_NOT_FOUND) {
            vmctl_error_free(e); /* a clone that failed removed itself */
            return 0;
        }
        cleanup_free char *note =
            cli_printf("the VM was not removed; remove it with `vmctl destroy %s --force`", name);
        vmctl_error_add_note(e, note);
        return render_error(c, e);
    }
    return 0;
}

int cmd_run(cli *c, int argc, char **argv)
{
    create_args a = {};
    bool rm = false;
    double timeout = -1;
    int o, r;
    char *from = NULL;
    bool vm_opts = false; /* a create option was given */

    c->opt_command_at = 1; /* NAME, then the command: its options are its own */
    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        switch (o) {
        case OPT_RM:
            rm = true;
            continue;
        case OPT_FROM:
            from = optarg;
            continue;
        case OPT_TIMEOUT:
            if (cli_parse_seconds(c, "--timeout", optarg, &timeout) < 0) {
                create_args_done(&a);
                return EXIT_ERROR;
            }
            continue;
        }
        r = create_args_option(c, &a, o, optarg);
        if (r > 0) {
            vm_opts = true;
            continue;
        }
        create_args_done(&a);
        return r < 0 ? EXIT_ERROR : c->exit_code;
    }
    if (c->n_args != 1) {
        create_args_done(&a);
        if (c->n_args == 0)
            return cli_usage_error(c, "missing NAME");
        return cli_usage_error(c, "unexpected argument '%s'", c->args[1]);
    }
    const char *name = c->args[0];
    char *const *cmd = cli_command_argv(c, 1);
    if (c->dashdash && !cmd) {
        create_args_done(&a);
        return cli_usage_error(c, "missing the command to run after `--`");
    }
    char *from_snap = from ? strchr(from, '/') : NULL;
    if (from && (!from_snap || from_snap == from || !from_snap[1])) {
        create_args_done(&a);
        return cli_usage_error(c, "--from takes VM/SNAP, not '%s'", from);
    }
    if (from && vm_opts) {
        create_args_done(&a);
        return cli_usage_error(c, "--from takes the snapshot's configuration: no VM options "
                                  "with it");
    }
    if (from_snap)
        *from_snap++ = 0;
    vmctl_ctx *ctx = NULL;
    /* --rm: the VM must not outlive this vmctl, even SIGKILLed (its supervisor kills it, the
     * next command that looks at it removes it) */
    a.config.owner_bound = rm;
    if (from) {
        create_args_done(&a);
        c->home_create = true;
        if (!(ctx = cli_ctx(c)))
            return EXIT_ERROR;
    } else if (!(ctx = create_args_create(c, &a, name, &r)))
        return r;

    struct run_job j = {
        .c = c,
        .home = vmctl_ctx_get_home(ctx),
        .name = name,
        .from_vm = from,
        .from_snap = from_snap,
        .timeout = timeout >= 0 ? timeout : 0, /* 0: the library's default boot timeout */
        .cmd = cmd,
    };
    int sig = 0;
    if (rm)
        sig = run_job_interruptible(c, &j);
    else
        run_job(&j, ctx);

    int status = EXIT_OK;
    vmctl_error *e = NULL;
    if (sig) {
        /* What failed after the signal is a consequence of the teardown, not news. */
        if (atomic_load(&j.done)) { /* else a worker we stopped waiting for still owns them */
            vmctl_error_free(TAKE_PTR(j.err));
            vmctl_exec_result_clear(&j.res);
        }
        r = remove_vm(c, name);
        vmctl_error_new(&e, VMCTL_E_IO, EINTR, "interrupted by SIG%s", sigabbrev_np(sig));
        vmctl_error_add_detail(e, "vm", name);
        vmctl_error_set_help(e, r == 0 ? "The VM was removed (--rm); run the command again"
                                       : "Remove the VM with `vmctl destroy NAME --force`");
        render_error(c, e);
        return 128 + sig;
    }

    if (!j.started) {
        if (!rm) {
            cleanup_free char *note = cli_printf("VM '%s' is left in place: see `vmctl logs %s`, "
                                                 "remove it with `vmctl destroy %s --force`",
                                                 name, name, name);
            vmctl_error_add_note(j.err, note);
        }
        status = render_error(c, TAKE_PTR(j.err));
    } else if (cmd) {
        if (j.exec_ok && j.streamed)
            status = j.st.signal ? 128 + j.st.signal : j.st.exit_code & 0xff;
        else if (j.exec_ok)
            status = cli_exec_report(c, &j.res);
        else
            status = render_error(c, TAKE_PTR(j.err));
    } else if (!rm) {
        if (c->json) {
            status = cli_vm_done(c, name, NULL);
        } else {
            vmctl_vm_info *vm = NULL;
            if (vmctl_vm_get(ctx, name, &vm, &e) < 0) {
                status = render_error(c, e);
            } else {
                render_vm_status(c, vm);
                vmctl_vm_info_free(vm);
            }
        }
    }
    vmctl_exec_result_clear(&j.res);
    if (!rm)
        return status;

    /* --rm: destroy, whatever happened above. Without a command, the outcome is the output. */
    vmctl_vm_info *vm = NULL;
    if (!cmd && j.started && c->json && vmctl_vm_get(ctx, name, &vm, NULL) >= 0) {
        json_t *doc = render_vm_json(vm);
        vmctl_vm_info_free(vm);
        r = remove_vm(c, name);
        if (r != 0) {
            json_decref(doc);
            return r;
        }
        json_object_set_new(doc, "destroyed", json_true());
        return render_json(doc);
    }
    r = remove_vm(c, name);
    if (r != 0)
        return status == EXIT_OK ? r : status;
    if (!cmd && j.started && !c->json)
        printf("VM '%s' booted and became ready; destroyed it (--rm)\n", name);
    return status;
}
