/* SPDX-License-Identifier: MIT */
/* vmctl list [-q]: every VM in the store, as a table (or names) or a JSON array. */
#include <vmctl/snapshot.h>

#include "cli.h"
#include "render.h"

const char cmd_list_help[] =
    "Usage: vmctl list [-q]\n"
    "\n"
    "List the VMs of this vmctl home with their state and size. The state is checked, not\n"
    "trusted: a VM recorded as running whose QEMU has gone is shown as crashed.\n"
    "\n"
    "With --json, print an array of the objects `vmctl status NAME --json` prints. The VMs of\n"
    "warm pools (`vmctl pool`) are not users' VMs: they are left out, and counted in a last line\n"
    "of the table.\n"
    "\n"
    "Options:\n"
    "  -q, --quiet   print only the names, one per line (with --json: an array of names)\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl list\n"
    "  vmctl list --json | jq -r '.[] | select(.state == \"running\") | .name'\n"
    "  vmctl destroy --force $(vmctl list -q)\n";

int cmd_list(cli *c, int argc, char **argv)
{
    static const struct option options[] = {
        {"quiet", no_argument, NULL, 'q'},
        {},
    };
    bool quiet = false;
    int o, r;
    while ((o = cli_getopt(c, argc, argv, "q", options)) != -1) {
        if (o != 'q')
            return c->exit_code;
        quiet = true;
    }
    vmctl_ctx *ctx = cli_open_with_args(c, 0, 0, "", &r);
    if (!ctx)
        return r;

    vmctl_vm_info **vms = NULL;
    size_t n = 0;
    vmctl_error *e = NULL;
    if (vmctl_vm_list(ctx, &vms, &n, &e) < 0)
        return render_error(c, e);

    if (quiet && !c->json) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", vms[i]->name);
        vmctl_vm_info_list_free(vms, n);
        return EXIT_OK; /* a write error is reported at exit */
    }
    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, quiet ? json_string(vms[i]->name) : render_vm_json(vms[i]));
        vmctl_vm_info_list_free(vms, n);
        return render_json(a);
    }

    unsigned pooled = 0, pools = 0;
    {
        vmctl_pool_info **pl = NULL;
        size_t np = 0;
        if (vmctl_pool_list(ctx, &pl, &np, NULL) >= 0) {
            for (size_t i = 0; i < np; i++)
                for (size_t j = 0; pl[i]->members && pl[i]->members[j]; j++)
                    pooled++;
            pools = (unsigned)np;
            vmctl_pool_info_list_free(pl, np);
        }
    }
    if (n == 0 && pooled) {
        printf("No VMs yet; %u pooled in %u warm pool%s (`vmctl pool list`).\n", pooled, pools,
               pools == 1 ? "" : "s");
        vmctl_vm_info_list_free(vms, n);
        return EXIT_OK;
    }
    if (n == 0) {
        printf("No VMs yet. Create one with `vmctl create NAME` or try `vmctl run demo --rm -- "
               "uname -a`.\n");
        vmctl_vm_info_list_free(vms, n);
        return EXIT_OK;
    }

    table *t = table_new(10, "NAME", "STATE", "VCPUS", "MEMORY", "ACCEL", "MACHINE", "PID", "PORTS",
                         "CREATED", "PROVISION");
    for (size_t i = 0; i < n; i++) {
        const vmctl_vm_info *vm = vms[i];
        char vcpus[16], mem[32], pid[24], age[32], prov[64];
        snprintf(vcpus, sizeof(vcpus), "%u", vm->vcpus);
        snprintf(mem, sizeof(mem), "%u MiB", vm->memory_mib);
        bool has_pid =
            vm->pid > 0 && (vm->state == VMCTL_VM_RUNNING || vm->state == VMCTL_VM_PAUSED);
        snprintf(pid, sizeof(pid), has_pid ? "%d" : "-", (int)vm->pid);
        cleanup_free char *ports = render_ports(vm->ports, vm->n_ports);
        table_add_row(t, vm->name, vmctl_vm_state_to_string(vm->state), vcpus, mem, vm->accel,
                      vm->machine, pid, ports && *ports ? ports : "-",
                      render_age(vm->created_at, age, sizeof(age)),
                      render_provision(vm, prov, sizeof(prov)));
    }
    table_print(t, stdout);
    table_free(t);
    if (pooled)
        printf("(and %u pooled in %u warm pool%s: `vmctl pool list`)\n", pooled, pools,
               pools == 1 ? "" : "s");
    vmctl_vm_info_list_free(vms, n);
    return EXIT_OK;
}
