/* SPDX-License-Identifier: MIT */
/* vmctl network show: the address pool, the routes, every --net tap VM's address and rules. */
#include "cli.h"
#include "render.h"

const char cmd_network_help[] =
    "Usage: vmctl network SUBCOMMAND\n"
    "\n"
    "Host networking of `--net tap` VMs (docs/networking.md).\n"
    "\n"
    "Subcommands:\n"
    "  show    the address pool, the routes, every VM's address, MAC and egress rules\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help (vmctl network show --help for the subcommand)\n"
    "\n"
    "Examples:\n"
    "  vmctl network show\n";

static const char cmd_network_show_help[] =
    "Usage: vmctl network show\n"
    "\n"
    "Show the address pool ($VMCTL_NET_POOL, default 10.88.0.0/16) and how much of it is\n"
    "leased, whether IPv4 forwarding is on, the size of vmctl's nftables table, and for every\n"
    "VM created with `--net tap`: its address, the host's end of its link (its gateway and\n"
    "route), its MAC, its TAP (up while the VM runs) and its egress policy.\n"
    "\n"
    "With --json: {\"pool\", \"mode\", \"link_prefix\", \"capacity\", \"leased\", \"forwarding\",\n"
    "\"firewall\": {\"rules\", \"elements\", \"error\"}, \"vms\": [{\"name\", \"state\", \"ip\",\n"
    "\"gateway\", \"mac\", \"tap\", \"link_up\", \"egress\"}]}.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl network show\n"
    "  vmctl network show --json | jq -r '.vms[] | \"\\(.name) \\(.ip)\"'\n";

static int network_show(cli *c, int argc, char **argv);

static const cli_command subcommands[] = {
    {"show", network_show, "show the pool, routes, addresses and rules", cmd_network_show_help,
     NULL},
};

const cli_command *network_subcommand_at(size_t i)
{
    return i < ELEMENTSOF(subcommands) ? &subcommands[i] : NULL;
}

int cmd_network(cli *c, int argc, char **argv)
{
    int idx = argc;
    if (cli_getopt_subcommand(c, argc, argv, NULL, &idx) != -1)
        return c->exit_code;
    if (idx >= argc)
        return cli_usage_error(c, "missing SUBCOMMAND (show)");
    const cli_command *sub = NULL;
    for (size_t i = 0; i < ELEMENTSOF(subcommands); i++)
        if (streq(subcommands[i].name, argv[idx]))
            sub = &subcommands[i];
    if (!sub)
        return cli_usage_error(c, "unknown network subcommand '%s'", argv[idx]);
    c->cmd = sub;
    c->cmd_path = "network show";
    return sub->fn(c, argc - idx, argv + idx);
}

static const vmctl_vm_info *find_vm(vmctl_vm_info **vms, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (streq(vms[i]->name, name))
            return vms[i];
    return NULL;
}

static int network_show(cli *c, int argc, char **argv)
{
    int r;
    vmctl_ctx *ctx = cli_open_no_options(c, argc, argv, 0, 0, "", &r);
    if (!ctx)
        return r;
    vmctl_network_info *ni = NULL;
    vmctl_vm_info **vms = NULL;
    size_t n = 0;
    vmctl_error *e = NULL;
    if (vmctl_network_get(ctx, &ni, &e) < 0 || vmctl_vm_list(ctx, &vms, &n, &e) < 0) {
        vmctl_network_info_free(ni);
        return render_error(c, e);
    }
    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < ni->n_leases; i++) {
            const vmctl_network_lease *l = &ni->leases[i];
            const vmctl_vm_info *vm = find_vm(vms, n, l->vm);
            json_t *vj = vm ? render_vm_json(vm) : NULL;
            json_t *egress = vj ? json_incref(json_object_get(vj, "egress")) : NULL;
            json_decref(vj);
            json_array_append_new(
                a, json_pack("{s:s, s:s?, s:s, s:s, s:s, s:s, s:b, s:o?}", "name", l->vm, "state",
                             vm ? vmctl_vm_state_to_string(vm->state) : NULL, "ip", l->ip,
                             "gateway", l->gateway, "mac", l->mac, "tap", l->ifname, "link_up",
                             l->link_up, "egress", egress));
        }
        json_t *o =
            json_pack("{s:s, s:s, s:i, s:I, s:I, s:b, s:{s:I, s:I, s:s?}, s:o}", "pool", ni->pool,
                      "mode", ni->mode, "link_prefix", (int)ni->link_prefix, "capacity",
                      (json_int_t)ni->capacity, "leased", (json_int_t)ni->n_leases, "forwarding",
                      ni->forwarding, "firewall", "rules", (json_int_t)ni->fw_rules, "elements",
                      (json_int_t)ni->fw_elements, "error", ni->fw_error, "vms", a);
        vmctl_network_info_free(ni);
        vmctl_vm_info_list_free(vms, n);
        return render_json(o);
    }
    printf("pool:        %s (%s, a /%u per VM: %zu of %zu leased)\n", ni->pool, ni->mode,
           ni->link_prefix, ni->n_leases, ni->capacity);
    printf("forwarding:  %s\n", ni->forwarding ? "on" : "off (turned on at the first tap start)");
    if (ni->fw_error)
        printf("firewall:    cannot be read: %s\n", ni->fw_error);
    else
        printf("firewall:    table inet vmctl, %zu rules, %zu set elements\n", ni->fw_rules,
               ni->fw_elements);
    if (ni->n_leases == 0) {
        printf("\nNo --net tap VMs. Create one with `vmctl create NAME --net tap`.\n");
    } else {
        putchar('\n');
        table *t = table_new(7, "NAME", "STATE", "IP", "GATEWAY", "MAC", "TAP", "EGRESS");
        for (size_t i = 0; i < ni->n_leases; i++) {
            const vmctl_network_lease *l = &ni->leases[i];
            const vmctl_vm_info *vm = find_vm(vms, n, l->vm);
            char tap[48];
            snprintf(tap, sizeof(tap), "%s%s", l->ifname, l->link_up ? "" : " (down)");
            cleanup_free char *egress = vm ? render_egress(vm) : NULL;
            table_add_row(t, l->vm, vm ? vmctl_vm_state_to_string(vm->state) : "-", l->ip,
                          l->gateway, l->mac, tap, egress ? egress : "-");
        }
        table_print(t, stdout);
        table_free(t);
    }
    vmctl_network_info_free(ni);
    vmctl_vm_info_list_free(vms, n);
    return EXIT_OK;
}
