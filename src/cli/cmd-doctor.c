/* SPDX-License-Identifier: MIT */
/* vmctl doctor: host checks. */
#include "cli.h"
#include "render.h"

const char cmd_doctor_help[] =
    "Usage: vmctl doctor [--fix]\n"
    "\n"
    "Check what vmctl needs on this host and say what to do about anything missing: QEMU and\n"
    "qemu-img, whether KVM is usable (a /dev/kvm that cannot run a stock guest, such as a nested\n"
    "paravirtual one, is detected and reported), TCG, the helper tools and the store. One line\n"
    "per check: ok (\u2713), works with a limitation (!), or failed (\u2717).\n"
    "\n"
    "Then the store against the host: VM directories without a store row (\"vm directories\":\n"
    "after vmctl.db was moved aside, say), rows whose directory is gone (\"vm rows\") and QEMU\n"
    "processes that no row records as running (\"vm processes\"). --fix repairs them: a\n"
    "directory with its vm.json is adopted back into the store (running if its QEMU still runs,\n"
    "else stopped; disk kept), a half-made one (an interrupted create) is removed, a row without\n"
    "a directory is removed with its ports, an unrecorded QEMU is killed. A directory that\n"
    "cannot be adopted is only reported.\n"
    "\n"
    "Exits 1 only when a check failed (vmctl cannot run VMs until it is fixed); warnings exit 0.\n"
    "With --json, print an array of {name, status (ok|warn|fail), summary, help}.\n"
    "\n"
    "Options:\n"
    "      --fix     adopt, remove or kill what the store checks found (see above)\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl doctor\n"
    "  vmctl doctor --fix\n"
    "  vmctl doctor --json | jq -r '.[] | select(.status != \"ok\") | .name'\n";

enum { OPT_FIX = 0x100 };

static const struct option options[] = {
    {"fix", no_argument, NULL, OPT_FIX},
    {},
};

int cmd_doctor(cli *c, int argc, char **argv)
{
    bool fix = false;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        if (o != OPT_FIX)
            return c->exit_code;
        fix = true;
    }
    int r;
    if ((r = cli_expect_args(c, 0, 0, "")) != 0)
        return r;
    /* A store that cannot be opened (corrupt, unreadable) is a finding, not the end of doctor. */
    cleanup_error vmctl_error *store_err = NULL;
    /* --fix writes what it adopts: it makes the store when there is none (vmctl.db moved away);
     * a plain doctor creates nothing */
    if (vmctl_ctx_open(c->home, fix ? 0 : VMCTL_CTX_NO_CREATE, &c->ctx, &store_err) < 0)
        c->ctx = NULL;
    else
        vmctl_ctx_set_log(c->ctx, render_log, c);

    vmctl_host_check *checks = NULL, *vchecks = NULL;
    size_t n = 0, vn = 0;
    vmctl_error *e = NULL;
    if (vmctl_host_check_all(c->ctx, &checks, &n, &e) < 0)
        return render_error(c, e);
    for (size_t i = 0; i < n && store_err; i++)
        if (checks[i].name && streq(checks[i].name, "store")) {
            free(checks[i].summary);
            free(checks[i].help);
            checks[i].status = VMCTL_CHECK_FAIL;
            int cause = vmctl_error_get_cause_errno(store_err);
            checks[i].summary =
                cli_printf("%s%s%s (%s)", vmctl_error_get_message(store_err), cause ? ": " : "",
                           cause ? strerror(cause) : "", vmctl_error_get_code(store_err));
            const char *h = vmctl_error_get_help(store_err);
            checks[i].help = h ? strdup(h) : NULL;
        }
    if (c->ctx && vmctl_vm_check_all(c->ctx, fix, &vchecks, &vn, &e) < 0) {
        vmctl_host_check_list_free(checks, n);
        return render_error(c, e);
    }
    vmctl_host_check *all = realloc(checks, (n + vn) * sizeof(*all));
    if (!all) {
        vmctl_host_check_list_free(checks, n);
        vmctl_host_check_list_free(vchecks, vn);
        fprintf(stderr, "vmctl: out of memory\n");
        return EXIT_ERROR;
    }
    checks = all;
    memcpy(checks + n, vchecks, vn * sizeof(*vchecks));
    n += vn;
    free(vchecks); /* its strings now belong to checks */

    bool failed = false;
    for (size_t i = 0; i < n; i++)
        if (checks[i].status == VMCTL_CHECK_FAIL)
            failed = true;

    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(
                a, json_pack("{s:s, s:s, s:s, s:s?}", "name", checks[i].name ? checks[i].name : "",
                             "status", vmctl_check_status_to_string(checks[i].status), "summary",
                             checks[i].summary ? checks[i].summary : "", "help", checks[i].help));
        vmctl_host_check_list_free(checks, n);
        r = render_json(a);
        return r ? r : failed ? EXIT_ERROR : EXIT_OK;
    }

    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (checks[i].name && strlen(checks[i].name) > w)
            w = strlen(checks[i].name);
    size_t n_warn = 0, n_fail = 0;
    bool no_guest = false;
    for (size_t i = 0; i < n; i++) {
        const vmctl_host_check *ch = &checks[i];
        const char *mark, *col;
        switch (ch->status) {
        case VMCTL_CHECK_OK:
            mark = c->unicode ? "\u2713" : "ok";
            col = ANSI_GREEN;
            break;
        case VMCTL_CHECK_WARN:
            mark = "!";
            col = ANSI_YELLOW;
            n_warn++;
            break;
        case VMCTL_CHECK_FAIL:
        default:
            mark = c->unicode ? "\u2717" : "x";
            col = ANSI_RED;
            n_fail++;
            break;
        }
        int mw = c->unicode ? 1 : 2;
        cleanup_free char *summary = render_sanitize(ch->summary ? ch->summary : "");
        cleanup_free char *help = render_sanitize(ch->help ? ch->help : "");
        printf("%s%-*s%s %-*s  %s\n", c->color_out ? col : "", mw, mark,
               c->color_out ? ANSI_RESET : "", (int)w, ch->name ? ch->name : "",
               summary ? summary : "");
        if (ch->status != VMCTL_CHECK_OK && help && *help)
            printf("%*s  %shelp:%s %s\n", mw + 1 + (int)w, "", c->color_out ? ANSI_CYAN : "",
                   c->color_out ? ANSI_RESET : "", help);
        if (ch->status != VMCTL_CHECK_OK && ch->name && streq(ch->name, "default-guest"))
            no_guest = true;
    }
    vmctl_host_check_list_free(checks, n);

    if (n_fail)
        printf("\n%zu check(s) failed: vmctl cannot run VMs until they are fixed.\n", n_fail);
    else if (no_guest)
        printf("\nThe host can run VMs, but there is no default guest to boot yet: run `vmctl "
               "image build-default`%s.\n",
               n_warn > 1 ? " (other limitations are shown above)" : "");
    else if (n_warn)
        printf("\nvmctl can run VMs here, with %zu limitation(s) shown above.\n", n_warn);
    else
        printf("\nAll checks passed.\n");
    return failed ? EXIT_ERROR : EXIT_OK;
}
