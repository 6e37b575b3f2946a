/* SPDX-License-Identifier: MIT */
/* vmctl pool VM/SNAP --size N | pool list | pool rm VM/SNAP | pool fill VM/SNAP: a snapshot's
 * warm pool (docs/snapshots.md "Warm pool"), and the background refill after a clone took from
 * one. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmctl/snapshot.h>

#include "cli.h"
#include "render.h"

const char cmd_pool_help[] =
    "Usage: vmctl pool VM/SNAP --size N | vmctl pool SUBCOMMAND\n"
    "\n"
    "Keep N hypervisors launched ahead of time for template snapshot SNAP of VM, waiting for its\n"
    "state: a clone (`vmctl clone VM SNAP NEW`, `vmctl run NEW --from VM/SNAP`) then takes one "
    "and\n"
    "only loads the device state, continues the guest and gives it its identity. After a clone\n"
    "took one, a background `vmctl pool fill` launches its replacement. The pool's VMs are not\n"
    "listed by `vmctl list` (it counts them); `vmctl pool list` shows them. At most 64 per pool;\n"
    "a fill stops while the host has under 512 MiB available.\n"
    "\n"
    "Subcommands:\n"
    "  VM/SNAP --size N    keep N ready (launched before this returns; 0 removes the pool)\n"
    "  list                the pools: snapshot, size, ready, their VMs\n"
    "  rm VM/SNAP          remove the pool and its hypervisors\n"
    "  fill VM/SNAP        launch what the pool misses (what the background refill runs)\n"
    "\n"
    "Options:\n"
    "      --size N    how many to keep ready (0-64)\n"
    "  -h, --help      show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl pool base/ready --size 4\n"
    "  vmctl pool list --json\n"
    "  vmctl pool rm base/ready\n";

enum { OPT_SIZE = 0x100 };

static const struct option pool_options[] = {
    {"size", required_argument, NULL, OPT_SIZE},
    {},
};

/* "VM/SNAP" split in place: -1 (usage error rendered) when it is not that. */
static int split_snapshot(cli *c, char *arg, char **vm, char **snap)
{
    char *slash = arg ? strchr(arg, '/') : NULL;
    if (!slash || slash == arg || !slash[1])
        return cli_usage_error(c, "expected VM/SNAP, not '%s'", arg ? arg : ""), -1;
    *slash = 0;
    *vm = arg;
    *snap = slash + 1;
    return 0;
}

static int pool_print(cli *c, vmctl_ctx *ctx, const char *vm, const char *snap)
{
    vmctl_error *e = NULL;
    vmctl_pool_info **list = NULL;
    size_t n = 0;
    if (vmctl_pool_list(ctx, &list, &n, &e) < 0)
        return render_error(c, e);
    if (c->json) {
        json_t *doc = vm ? render_pool_one_json(list, n, vm, snap) : json_array();
        for (size_t i = 0; !vm && i < n; i++)
            json_array_append_new(doc, render_pool_json(list[i]));
        vmctl_pool_info_list_free(list, n);
        return render_json(doc);
    }
    if (vm) {
        for (size_t i = 0; i < n; i++)
            if (streq(list[i]->vm, vm) && streq(list[i]->snap, snap))
                printf("Pool of '%s/%s': %u of %u ready\n", vm, snap, list[i]->ready,
                       list[i]->size);
        vmctl_pool_info_list_free(list, n);
        return EXIT_OK;
    }
    table *t = table_new(4, "SNAPSHOT", "SIZE", "READY", "VMS");
    for (size_t i = 0; i < n; i++) {
        char snapname[160], size[16], ready[16];
        snprintf(snapname, sizeof(snapname), "%s/%s", list[i]->vm, list[i]->snap);
        snprintf(size, sizeof(size), "%u", list[i]->size);
        snprintf(ready, sizeof(ready), "%u", list[i]->ready);
        size_t nm = 0;
        while (list[i]->members && list[i]->members[nm])
            nm++;
        char vms[64];
        if (nm)
            snprintf(vms, sizeof(vms), "%.20s...%s", list[i]->members[0],
                     nm > 1 ? " (and more)" : "");
        else
            snprintf(vms, sizeof(vms), "-");
        table_add_row(t, snapname, size, ready, vms);
    }
    table_print(t, stdout);
    table_free(t);
    vmctl_pool_info_list_free(list, n);
    return EXIT_OK;
}

int cmd_pool(cli *c, int argc, char **argv)
{
    unsigned size = 0;
    bool have_size = false;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", pool_options)) != -1) {
        if (o != OPT_SIZE)
            return c->exit_code;
        if (cli_parse_uint(c, "--size", optarg, 0, &size) < 0)
            return EXIT_ERROR;
        have_size = true;
    }
    c->home_create = true;
    int r;
    vmctl_ctx *ctx = cli_open_with_args(c, 1, 2, "VM/SNAP --size N | list | rm VM/SNAP", &r);
    if (!ctx)
        return r;
    const char *sub = c->args[0];
    vmctl_error *e = NULL;
    char *vm = NULL, *snap = NULL;
    if (streq(sub, "list")) {
        if (c->n_args != 1 || have_size)
            return cli_usage_error(c, "pool list takes no arguments");
        return pool_print(c, ctx, NULL, NULL);
    }
    if (streq(sub, "rm") || streq(sub, "fill")) {
        if (c->n_args != 2 || have_size)
            return cli_usage_error(c, "usage: vmctl pool %s VM/SNAP", sub);
        if (split_snapshot(c, c->args[1], &vm, &snap) < 0)
            return EXIT_USAGE;
        r = streq(sub, "rm") ? vmctl_pool_set(ctx, vm, snap, 0, &e)
                             : vmctl_pool_fill(ctx, vm, snap, &e);
        if (r < 0)
            return render_error(c, e);
        if (streq(sub, "rm") && !c->json) {
            printf("Removed the pool of '%s/%s'\n", vm, snap);
            return EXIT_OK;
        }
        return pool_print(c, ctx, vm, snap);
    }
    if (c->n_args != 1)
        return cli_usage_error(c, "unknown pool subcommand '%s'", sub);
    if (!have_size)
        return cli_usage_error(c, "vmctl pool VM/SNAP needs --size N");
    if (split_snapshot(c, c->args[0], &vm, &snap) < 0)
        return EXIT_USAGE;
    if (vmctl_pool_set(ctx, vm, snap, size, &e) < 0)
        return render_error(c, e);
    if (!size && !c->json) {
        printf("Removed the pool of '%s/%s'\n", vm, snap);
        return EXIT_OK;
    }
    return pool_print(c, ctx, vm, snap);
}

/* The longest a refill waits for the vmctl that started it to exit (a `run --from` whose
 * command runs on). */
#define REFILL_WAIT_MS 1000

void cli_pool_refill_later(cli *c, vmctl_ctx *ctx, const char *vm, const char *snap, bool gated)
{
    vmctl_pool_info **list = NULL;
    size_t n = 0;
    if (vmctl_pool_list(ctx, &list, &n, NULL) < 0)
        return;
    bool want = false;
    for (size_t i = 0; i < n; i++)
        want |=
            streq(list[i]->vm, vm) && streq(list[i]->snap, snap) && list[i]->ready < list[i]->size;
    vmctl_pool_info_list_free(list, n);
    if (!want)
        return;
    char target[160];
    snprintf(target, sizeof(target), "%s/%s", vm, snap);
    const char *home = vmctl_ctx_get_home(ctx);
    /* The fill starts when this vmctl has exited (the pipe's write end, close-on-exec, closes
     * with it), at most REFILL_WAIT_MS later: a launch would take the CPU from this clone's
     * last steps and from its guest's first moments on a small host. */
    int gate[2] = {-1, -1};
    if (gated && pipe2(gate, O_CLOEXEC) < 0)
        gate[0] = gate[1] = -1;
    /* detached (its own session, a grandchild nobody waits for), its output to /dev/null */
    pid_t pid = fork();
    if (pid < 0) {
        if (gate[0] >= 0) {
            close(gate[0]);
            close(gate[1]);
        }
        return;
    }
    if (pid == 0) {
        if (setsid() < 0 || fork() != 0)
            _exit(0);
        if (gate[1] >= 0)
            close(gate[1]);
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            (void)dup2(null, 0);
            (void)dup2(null, 1);
            (void)dup2(null, 2);
        }
        /* nothing of this vmctl's (a lock's descriptor) outlives it in the wait */
        if (gate[0] > 3)
            (void)close_range(3, (unsigned)gate[0] - 1, 0);
        (void)close_range(gate[0] >= 3 ? (unsigned)gate[0] + 1 : 3, ~0U, 0);
        if (gate[0] >= 0) {
            struct pollfd p = {.fd = gate[0], .events = POLLIN};
            (void)poll(&p, 1, REFILL_WAIT_MS);
        }
        char *args[] = {"vmctl", "--home", (char *)home, "pool", "fill", target, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    if (gate[0] >= 0)
        close(gate[0]); /* gate[1] stays open until this vmctl exits */
    (void)waitpid(pid, NULL, 0);
    (void)c;
}
