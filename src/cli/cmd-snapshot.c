/* SPDX-License-Identifier: MIT */
/* vmctl snapshot create|list|rm|restore, and vmctl clone (docs/snapshots.md). */
#include <vmctl/snapshot.h>

#include "cli.h"
#include "render.h"

const char cmd_snapshot_help[] =
    "Usage: vmctl snapshot SUBCOMMAND\n"
    "\n"
    "Save a running VM and bring it back, or clone it (`vmctl clone`). A template snapshot (of a\n"
    "VM created with --snapshottable) leaves the guest's RAM in a file the clones map\n"
    "copy-on-write, so restoring takes the same time whatever the RAM size; a full snapshot\n"
    "carries the RAM in its stream. docs/snapshots.md has the design.\n"
    "\n"
    "Subcommands:\n"
    "  create NAME SNAP [--kind template|full] [--keep-running]   save a running VM\n"
    "  list [NAME]                 list snapshots (of one VM, or all)\n"
    "  rm NAME SNAP                remove a snapshot no VM maps\n"
    "  restore NAME SNAP           run a stopped VM from its snapshot\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help (vmctl snapshot SUBCOMMAND --help for a subcommand)\n"
    "\n"
    "Examples:\n"
    "  vmctl snapshot create web base\n"
    "  vmctl snapshot list --json\n";

const char cmd_snapshot_create_help[] =
    "Usage: vmctl snapshot create NAME SNAP [--kind template|full] [--keep-running]\n"
    "\n"
    "Save running VM NAME as snapshot SNAP. The guest is stopped while its devices are saved\n"
    "(milliseconds for a template). A template snapshot takes over the VM's RAM file: the VM is\n"
    "then stopped (`vmctl snapshot restore NAME SNAP` continues it) unless --keep-running, which\n"
    "copies the RAM file first. A full snapshot (the default for VMs without --snapshottable)\n"
    "writes the RAM into the snapshot and lets the VM continue.\n"
    "\n"
    "Options:\n"
    "      --kind K          template or full (default: template when the VM keeps its RAM in\n"
    "                        a file, i.e. was created snapshottable)\n"
    "      --keep-running    template: the VM continues (its RAM file is copied)\n"
    "  -h, --help            show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl snapshot create web base\n"
    "  vmctl snapshot create web warm --keep-running --json\n";

const char cmd_snapshot_list_help[] =
    "Usage: vmctl snapshot list [NAME]\n"
    "\n"
    "List the snapshots of VM NAME, or of every VM: name, kind, RAM size, the VMs that map it,\n"
    "age, QEMU version. With --json an array of {vm, name, kind, memory_mib, refs, created_at,\n"
    "qemu_version, machine, dir}.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl snapshot list\n"
    "  vmctl snapshot list web --json\n";

const char cmd_snapshot_rm_help[] =
    "Usage: vmctl snapshot rm NAME SNAP\n"
    "\n"
    "Remove snapshot SNAP of VM NAME and its files. A snapshot that VMs map (its clones, or NAME\n"
    "restored from it) is refused (vm_manager::snapshot::in_use): destroy them first.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl snapshot rm web base\n";

const char cmd_snapshot_restore_help[] =
    "Usage: vmctl snapshot restore NAME SNAP [--timeout S]\n"
    "\n"
    "Run VM NAME (stopped, created or crashed) from its snapshot SNAP: the guest continues from\n"
    "the instant of the snapshot, its clock set and its RNG reseeded. Returns once its agent\n"
    "answers. Refused for a snapshot another QEMU version or machine made\n"
    "(vm_manager::snapshot::incompatible).\n"
    "\n"
    "Options:\n"
    "      --timeout S    how long the agent may take to answer (default 30)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl snapshot restore web base\n";

const char cmd_clone_help[] =
    "Usage: vmctl clone NAME SNAP NEWNAME [--count N] [--timeout S]\n"
    "\n"
    "Make new VMs from snapshot SNAP of VM NAME, each running from the snapshot's instant with\n"
    "its own hostname (its name), MAC, vsock CID, host ports, clock, machine-id and a reseeded\n"
    "RNG. With --count N they are NEWNAME-1 .. NEWNAME-N. Returns once each one's agent\n"
    "answered. A clone maps the snapshot: `vmctl snapshot rm` is refused until it is destroyed.\n"
    "\n"
    "Options:\n"
    "      --count N      how many clones (default 1)\n"
    "      --timeout S    how long each agent may take to answer (default 30)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl clone web base web2\n"
    "  vmctl clone web base worker --count 10 --json\n";

static int snapshot_create(cli *c, int argc, char **argv);
static int snapshot_list(cli *c, int argc, char **argv);
static int snapshot_rm(cli *c, int argc, char **argv);
static int snapshot_restore(cli *c, int argc, char **argv);

static const cli_command subcommands[] = {
    {"create", snapshot_create, "save a running VM", cmd_snapshot_create_help, NULL},
    {"list", snapshot_list, "list snapshots", cmd_snapshot_list_help, NULL},
    {"rm", snapshot_rm, "remove a snapshot no VM maps", cmd_snapshot_rm_help, NULL},
    {"restore", snapshot_restore, "run a stopped VM from its snapshot", cmd_snapshot_restore_help,
     NULL},
};

const cli_command *snapshot_subcommand_at(size_t i)
{
    return i < ELEMENTSOF(subcommands) ? &subcommands[i] : NULL;
}

int cmd_snapshot(cli *c, int argc, char **argv)
{
    int idx = argc;
    if (cli_getopt_subcommand(c, argc, argv, NULL, &idx) != -1)
        return c->exit_code;
    if (idx >= argc)
        return cli_usage_error(c, "missing SUBCOMMAND (create, list, rm or restore)");
    const cli_command *sub = NULL;
    for (size_t i = 0; i < ELEMENTSOF(subcommands); i++)
        if (streq(subcommands[i].name, argv[idx]))
            sub = &subcommands[i];
    if (!sub)
        return cli_usage_error(c, "unknown snapshot subcommand '%s'", argv[idx]);
    static char path[64];
    snprintf(path, sizeof(path), "snapshot %s", sub->name);
    c->cmd = sub;
    c->cmd_path = path;
    return sub->fn(c, argc - idx, argv + idx);
}

static json_t *info_json(const vmctl_snapshot_info *i)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s, s:s}", "vm", i->vm, "name",
                          i->name, "kind", i->kind, "memory_mib", (json_int_t)i->memory_mib, "refs",
                          (json_int_t)i->n_refs, "created_at", (json_int_t)i->created_at,
                          "qemu_version", i->qemu_version, "machine", i->machine, "dir", i->dir);
    if (o && i->save_ms > 0)
        json_object_set_new(o, "save_ms", json_real(i->save_ms));
    return o;
}

enum {
    OPT_KIND = 0x100,
    OPT_KEEP_RUNNING,
    OPT_TIMEOUT,
    OPT_COUNT,
};

static const struct option create_options[] = {
    {"kind", required_argument, NULL, OPT_KIND},
    {"keep-running", no_argument, NULL, OPT_KEEP_RUNNING},
    {},
};

static int snapshot_create(cli *c, int argc, char **argv)
{
    vmctl_snapshot_options opt = {0};
    int o;
    while ((o = cli_getopt(c, argc, argv, "", create_options)) != -1) {
        if (o == OPT_KIND)
            opt.kind = optarg;
        else if (o == OPT_KEEP_RUNNING)
            opt.keep_running = true;
        else
            return c->exit_code;
    }
    int r;
    vmctl_ctx *ctx = cli_open_with_args(c, 2, 2, "NAME SNAP", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    vmctl_snapshot_info *info = NULL;
    if (vmctl_snapshot_create(ctx, c->args[0], c->args[1], &opt, &info, &e) < 0)
        return render_error(c, e);
    if (c->json) {
        r = render_json(info ? info_json(info) : json_object());
        vmctl_snapshot_info_free(info);
        return r;
    }
    printf("Saved VM '%s' as snapshot '%s' (%s, %.1f ms)%s\n", c->args[0], c->args[1],
           info ? info->kind : "?", info ? info->save_ms : 0.0,
           info && streq(info->kind, "template") && !opt.keep_running ? "; the VM is stopped" : "");
    vmctl_snapshot_info_free(info);
    return EXIT_OK;
}

static int snapshot_list(cli *c, int argc, char **argv)
{
    int r;
    vmctl_ctx *ctx = cli_open_no_options(c, argc, argv, 0, 1, "[NAME]", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    vmctl_snapshot_info **list = NULL;
    size_t n = 0;
    if (vmctl_snapshot_list(ctx, c->n_args ? c->args[0] : NULL, &list, &n, &e) < 0)
        return render_error(c, e);
    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, info_json(list[i]));
        vmctl_snapshot_info_list_free(list, n);
        return render_json(a);
    }
    table *t = table_new(7, "VM", "SNAPSHOT", "KIND", "MEMORY", "REFS", "AGE", "QEMU");
    for (size_t i = 0; i < n; i++) {
        char mem[32], refs[32], age[32];
        snprintf(mem, sizeof(mem), "%u MiB", list[i]->memory_mib);
        snprintf(refs, sizeof(refs), "%zu", list[i]->n_refs);
        table_add_row(t, list[i]->vm, list[i]->name, list[i]->kind, mem, refs,
                      render_age(list[i]->created_at, age, sizeof(age)), list[i]->qemu_version);
    }
    table_print(t, stdout);
    table_free(t);
    vmctl_snapshot_info_list_free(list, n);
    return EXIT_OK;
}

static int snapshot_rm(cli *c, int argc, char **argv)
{
    int r;
    vmctl_ctx *ctx = cli_open_no_options(c, argc, argv, 2, 2, "NAME SNAP", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    if (vmctl_snapshot_rm(ctx, c->args[0], c->args[1], &e) < 0)
        return render_error(c, e);
    if (c->json)
        return render_json(
            json_pack("{s:s, s:s, s:b}", "vm", c->args[0], "name", c->args[1], "removed", 1));
    printf("Removed snapshot '%s' of VM '%s'\n", c->args[1], c->args[0]);
    return EXIT_OK;
}

static const struct option restore_options[] = {
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {},
};

static int snapshot_restore(cli *c, int argc, char **argv)
{
    double timeout = 0;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", restore_options)) != -1) {
        if (o != OPT_TIMEOUT || cli_parse_seconds(c, "--timeout", optarg, &timeout) < 0)
            return o == OPT_TIMEOUT ? EXIT_ERROR : c->exit_code;
    }
    int r;
    vmctl_ctx *ctx = cli_open_with_args(c, 2, 2, "NAME SNAP", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    if (vmctl_snapshot_restore(ctx, c->args[0], c->args[1], timeout, &e) < 0)
        return render_error(c, e);
    return cli_vm_done(c, c->args[0], "Restored");
}

static const struct option clone_options[] = {
    {"count", required_argument, NULL, OPT_COUNT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {},
};

int cmd_clone(cli *c, int argc, char **argv)
{
    double timeout = 0;
    unsigned count = 1;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", clone_options)) != -1) {
        if (o == OPT_TIMEOUT) {
            if (cli_parse_seconds(c, "--timeout", optarg, &timeout) < 0)
                return EXIT_ERROR;
        } else if (o == OPT_COUNT) {
            if (cli_parse_uint(c, "--count", optarg, 1, &count) < 0)
                return EXIT_ERROR;
        } else
            return c->exit_code;
    }
    c->home_create = true;
    int r;
    vmctl_ctx *ctx = cli_open_with_args(c, 3, 3, "NAME SNAP NEWNAME", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    if (vmctl_snapshot_clone(ctx, c->args[0], c->args[1], c->args[2], count, timeout, &e) < 0)
        return render_error(c, e);
    cli_pool_refill_later(c, ctx, c->args[0], c->args[1], true);
    if (count == 1)
        return cli_vm_done(c, c->args[2], "Cloned");
    if (c->json) {
        json_t *a = json_array();
        for (unsigned i = 1; i <= count; i++) {
            char name[128];
            snprintf(name, sizeof(name), "%s-%u", c->args[2], i);
            vmctl_vm_info *vm = NULL;
            if (vmctl_vm_get(ctx, name, &vm, NULL) >= 0) {
                json_array_append_new(a, render_vm_json(vm));
                vmctl_vm_info_free(vm);
            }
        }
        return render_json(a);
    }
    printf("Cloned '%s/%s' as VMs '%s-1' to '%s-%u'\n", c->args[0], c->args[1], c->args[2],
           c->args[2], count);
    return EXIT_OK;
}
