/* SPDX-License-Identifier: MIT */
/* vmctl ssh NAME [--timeout S] [-- CMD ARGS...]: the system `ssh` with the VM's key and its own
 * known_hosts file. The library first waits for the guest's sshd and pins its host key (or
 * refuses a changed one); ssh then runs with StrictHostKeyChecking=yes against that pin. */
#include <vmctl/ssh.h>

#include "cli.h"
#include "render.h"

const char cmd_ssh_help[] =
    "Usage: vmctl ssh NAME [--timeout S] [--print] [[--] CMD [ARGS...]]\n"
    "\n"
    "Open an SSH session to a running VM as the user 'vmctl' (a shell, or CMD), through the\n"
    "system `ssh` with the VM's own key (made by `vmctl create`, given to the guest through\n"
    "cloud-init) and the VM's own known_hosts file. vmctl waits until the guest's sshd answers\n"
    "and pins its host key on first contact; a host key that changed later is refused\n"
    "(vm_manager::ssh::failed, step hostkey). The VM needs user-mode networking (its SSH\n"
    "forward is shown in `vmctl status`). vmctl's options go before CMD: from CMD's first word\n"
    "on, every argument is the command's.\n"
    "\n"
    "Options:\n"
    "      --timeout S   wait at most S seconds for sshd (default 120)\n"
    "      --print       print the ssh command line instead of running it\n"
    "  -h, --help        show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl ssh web\n"
    "  vmctl ssh web -- uname -a\n";

enum { OPT_TIMEOUT = 0x100, OPT_PRINT };

static const struct option options[] = {
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"print", no_argument, NULL, OPT_PRINT},
    {},
};

int cmd_ssh(cli *c, int argc, char **argv)
{
    double timeout = 0;
    bool print = false;
    int o;
    c->opt_command_at = 1; /* NAME, then the command: its options are its own */
    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        switch (o) {
        case OPT_TIMEOUT:
            if (cli_parse_seconds(c, "--timeout", optarg, &timeout) < 0)
                return EXIT_ERROR;
            break;
        case OPT_PRINT:
            print = true;
            break;
        default:
            return c->exit_code;
        }
    }
    char *const *cmd = NULL;
    int r = cli_expect_name_and_command(c, &cmd);
    if (r)
        return r;

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;
    vmctl_ssh_info info = {};
    vmctl_error *e = NULL;
    if (vmctl_ssh_prepare(ctx, c->args[0], timeout, &info, &e) < 0)
        return render_error(c, e);

    cleanup_free char *port = cli_printf("%u", info.port);
    cleanup_free char *kh = cli_printf("UserKnownHostsFile=%s", info.known_hosts);
    cleanup_free char *dest = cli_printf("%s@%s", info.user, info.host);
    const char *fixed[] = {"ssh",
                           "-i",
                           info.key_path,
                           "-p",
                           port,
                           "-o",
                           kh,
                           "-o",
                           "GlobalKnownHostsFile=/dev/null",
                           "-o",
                           "StrictHostKeyChecking=yes",
                           "-o",
                           "IdentitiesOnly=yes",
                           "-o",
                           "IdentityAgent=none",
                           "-o",
                           "LogLevel=ERROR",
                           "-F",
                           "/dev/null",
                           cmd ? "-T" : "-t",
                           dest,
                           "--"};
    size_t nf = sizeof(fixed) / sizeof(fixed[0]), nc = 0;
    while (cmd && cmd[nc])
        nc++;
    cleanup_free char **args = calloc(nf + nc + 1, sizeof(char *));
    if (!args || !port || !kh || !dest) {
        vmctl_ssh_info_clear(&info);
        return EXIT_ERROR;
    }
    for (size_t i = 0; i < nf; i++)
        args[i] = (char *)fixed[i];
    for (size_t i = 0; i < nc; i++)
        args[nf + i] = cmd[i];
    if (print) {
        for (size_t i = 0; args[i]; i++)
            printf("%s%s", i ? " " : "", args[i]);
        printf("\n");
        vmctl_ssh_info_clear(&info);
        return EXIT_OK;
    }
    fflush(stdout);
    fflush(stderr);
    execvp("ssh", args);
    int err = errno;
    vmctl_ssh_info_clear(&info);
    vmctl_error_new(&e, VMCTL_E_HOST_MISSING_DEPENDENCY, err, "cannot run ssh");
    vmctl_error_set_help(e, "Install the OpenSSH client (apt-get install openssh-client).");
    return render_error(c, e);
}
