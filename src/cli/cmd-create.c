/* SPDX-License-Identifier: MIT */
/* vmctl create NAME [options] [--start]; the VM options are shared with `run`. */
#include "cli.h"
#include "render.h"

const char cmd_create_help[] =
    "Usage: vmctl create NAME [--image X | --kernel K [--initrd I] [--cmdline S]] [--vcpus N]\n"
    "                    [--memory MiB] [--disk GiB] [--machine microvm|q35]\n"
    "                    [--accel auto|kvm|tcg] [--net user|tap|none|netns:PATH]\n"
    "                    [--port HOST:GUEST[/udp]]... [--allow CIDR[:PORT][/tcp|udp]]...\n"
    "                    [--allow-dns] [--allow-all]\n"
    "                    [--rate-limit-mbps N] [--disk-iops N]\n"
    "                    [--cloud-init FILE] [--ssh-key PUB] [--env K=V]... [--snapshottable]\n"
    "                    [--mount SRC:DST[:ro]]... [--mount-type virtiofs|9p]\n"
    "                    [--cpu-quota C] [--no-jail] [--start [--wait [--timeout S]]]\n"
    "\n"
    "Create a VM: check the configuration, then prepare everything it needs (disk overlay, seed\n"
    "ISO, keys, store row) so that `vmctl start` only launches it. Without --image or --kernel\n"
    "the VM boots the default guest (build it once with `vmctl image build-default`). A create\n"
    "that fails removes what it made; invalid input is vm_manager::config::invalid.\n"
    "\n"
    "NAME: 1-63 letters, digits, '-', '_' and '.', starting with a letter or digit.\n"
    "\n" CREATE_OPTIONS_HELP "      --start              start the VM once it is created\n"
    "      --wait               with --start (implied): wait until its agent answers\n"
    "      --timeout S          how long --wait waits (as `vmctl start --timeout`)\n"
    "  -h, --help               show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl create web\n"
    "  vmctl create web --vcpus 2 --memory 1G --env MODE=test --start\n"
    "  vmctl create box --kernel ./vmlinux --initrd ./initrd.gz --cmdline 'console=ttyS0'\n"
    "  vmctl create srv --image debian.qcow2 --disk 20 --net user --port 8080:80\n"
    "  vmctl create box --net tap --allow 10.0.0.0/8:443/tcp --allow-dns --port 8080:80\n"
    "  vmctl create dev --mount $PWD:/src --mount /etc/ssl:/ssl:ro\n";

int create_args_option(cli *c, create_args *a, int opt, const char *arg)
{
    vmctl_vm_config *cfg = &a->config;

    switch (opt) {
    case OPT_CREATE_IMAGE:
        cfg->image = arg;
        return 1;
    case OPT_CREATE_KERNEL:
        cfg->kernel = arg;
        return 1;
    case OPT_CREATE_INITRD:
        cfg->initrd = arg;
        return 1;
    case OPT_CREATE_CMDLINE:
        cfg->cmdline = arg;
        return 1;
    case OPT_CREATE_VCPUS:
        return cli_parse_uint(c, "--vcpus", arg, 1, &cfg->vcpus) < 0 ? -EINVAL : 1;
    case OPT_CREATE_MEMORY:
        return cli_parse_mib(c, "--memory", arg, &cfg->memory_mib) < 0 ? -EINVAL : 1;
    case OPT_CREATE_DISK:
        return cli_parse_uint(c, "--disk", arg, 1, &cfg->disk_gib) < 0 ? -EINVAL : 1;
    case OPT_CREATE_MACHINE:
        cfg->machine = arg;
        return 1;
    case OPT_CREATE_ACCEL:
        cfg->accel = arg;
        return 1;
    case OPT_CREATE_NET:
        cfg->net = arg;
        return 1;
    case OPT_CREATE_BACKEND:
        cfg->backend = arg;
        return 1;
    case OPT_CREATE_NO_JAIL:
        cfg->no_jail = true;
        return 1;
    case OPT_CREATE_CPU_QUOTA: {
        char *end = NULL;
        errno = 0;
        double q = strtod(arg, &end);
        if (errno || !end || end == arg || *end || !(q >= 0.01 && q <= 255)) {
            cli_invalid_value(c, "--cpu-quota", arg,
                              "host CPUs from 0.01 to 255 (0.5: half of one core)");
            return -EINVAL;
        }
        cfg->cpu_quota = q;
        return 1;
    }
    case OPT_CREATE_CLOUD_INIT:
        cfg->cloud_init = arg;
        return 1;
    case OPT_CREATE_SSH_KEY:
        cfg->ssh_key = arg;
        return 1;
    case OPT_CREATE_SNAPSHOTTABLE:
        cfg->snapshottable = true;
        return 1;
    case OPT_CREATE_PORT: {
        vmctl_port_forward pf = {};
        vmctl_error *e = NULL;
        if (vmctl_port_forward_parse(arg, &pf, &e) < 0) {
            render_error(c, e);
            return -EINVAL;
        }
        vmctl_port_forward *n = realloc(a->ports, sizeof(*n) * (a->n_ports + 1));
        if (!n)
            return -ENOMEM;
        a->ports = n;
        a->ports[a->n_ports++] = pf;
        cfg->ports = a->ports;
        cfg->n_ports = a->n_ports;
        return 1;
    }
    case OPT_CREATE_ALLOW: {
        const char **n = realloc(a->allow, sizeof(*n) * (a->n_allow + 1));
        if (!n)
            return -ENOMEM;
        a->allow = n;
        a->allow[a->n_allow++] = arg;
        cfg->allow = a->allow;
        cfg->n_allow = a->n_allow;
        return 1;
    }
    case OPT_CREATE_ALLOW_DNS:
        cfg->allow_dns = true;
        return 1;
    case OPT_CREATE_ALLOW_ALL:
        cfg->allow_all = true;
        return 1;
    case OPT_CREATE_RATE_LIMIT:
        return cli_parse_uint(c, "--rate-limit-mbps", arg, 1, &cfg->rate_limit_mbps) < 0 ? -EINVAL
                                                                                         : 1;
    case OPT_CREATE_DISK_IOPS:
        return cli_parse_uint(c, "--disk-iops", arg, 1, &cfg->disk_iops) < 0 ? -EINVAL : 1;
    case OPT_CREATE_ENV: {
        int r = cli_add_env(c, arg, &a->env, &a->n_env);
        if (r < 0)
            return r;
        cfg->env = a->env;
        return 1;
    }
    case OPT_CREATE_MOUNT: {
        char *copy = strdup(arg);
        vmctl_mount *n = copy ? realloc(a->mounts, sizeof(*n) * (a->n_mounts + 1)) : NULL;
        if (!n) {
            free(copy);
            return -ENOMEM;
        }
        a->mounts = n;
        vmctl_error *e = NULL;
        if (vmctl_mount_parse(copy, &a->mounts[a->n_mounts], &e) < 0) {
            free(copy);
            render_error(c, e);
            return -EINVAL;
        }
        a->n_mounts++;
        cfg->mounts = a->mounts;
        cfg->n_mounts = a->n_mounts;
        return 1;
    }
    case OPT_CREATE_MOUNT_TYPE:
        cfg->mount_type = arg;
        return 1;
    default:
        return 0;
    }
}

void create_args_done(create_args *a)
{
    for (size_t i = 0; i < a->n_mounts; i++)
        free((char *)a->mounts[i].source);
    free(a->mounts);
    free(a->ports);
    free(a->env);
    free(a->allow);
    *a = (create_args){};
}

vmctl_ctx *create_args_create(cli *c, create_args *a, const char *name, int *ret_exit)
{
    a->config.name = name;
    c->home_create = true;
    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx) {
        create_args_done(a);
        *ret_exit = EXIT_ERROR;
        return NULL;
    }
    vmctl_error *e = NULL;
    int r = vmctl_vm_create(ctx, &a->config, &e);
    create_args_done(a);
    if (r < 0) {
        *ret_exit = render_error(c, e);
        return NULL;
    }
    return ctx;
}

enum { OPT_START = 0x100, OPT_WAIT, OPT_TIMEOUT };

static const struct option options[] = {
    CREATE_LONG_OPTIONS,
    {"start", no_argument, NULL, OPT_START},
    {"wait", no_argument, NULL, OPT_WAIT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {},
};

int cmd_create(cli *c, int argc, char **argv)
{
    create_args a = {};
    bool start = false, wait = false;
    double timeout = 0;
    int o, r;

    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        if (o == OPT_START || o == OPT_WAIT) {
            start = true;
            wait = wait || o == OPT_WAIT;
            continue;
        }
        if (o == OPT_TIMEOUT) {
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
        if (r == -ENOMEM)
            fprintf(stderr, "Error: out of memory\n");
        return r < 0 ? EXIT_ERROR : c->exit_code;
    }
    r = cli_expect_args(c, 1, 1, "NAME");
    if (r) {
        create_args_done(&a);
        return r;
    }
    const char *name = c->args[0];
    vmctl_ctx *ctx = create_args_create(c, &a, name, &r);
    if (!ctx)
        return r;

    vmctl_error *e = NULL;
    if (start) {
        if (vmctl_vm_start(ctx, name, wait, timeout, &e) < 0) {
            /* Keep the VM (create worked) and say so: the user can fix and start it. */
            cleanup_free char *note =
                cli_printf("VM '%s' was created and is left in place; start it with `vmctl "
                           "start %s` or remove it with `vmctl destroy %s`",
                           name, name, name);
            vmctl_error_add_note(e, note);
            return render_error(c, e);
        }
        return cli_vm_done(c, name, "Created and started");
    }
    return cli_vm_done(c, name, "Created");
}
