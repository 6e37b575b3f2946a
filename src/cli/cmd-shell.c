/* SPDX-License-Identifier: MIT */
/* vmctl shell NAME [--user U] [--cwd DIR] [--env K=V]...: a login shell in the guest on a
 * terminal of its own, through the agent (as `limactl shell` and `multipass shell`). */
#include "cli.h"
#include "render.h"

const char cmd_shell_help[] =
    "Usage: vmctl shell NAME [--user U] [--cwd DIR] [--env K=V]...\n"
    "\n"
    "Open an interactive login shell in a running VM through its guest agent (no SSH, no\n"
    "network needed): the user's shell from the guest's /etc/passwd (/bin/sh when it has none,\n"
    "or nologin/false), started as a login shell (-l) in the user's home directory, on a new\n"
    "terminal in the guest with job control. TERM and the window size come from vmctl's\n"
    "terminal (which is in raw mode until the shell exits: Ctrl-C, Ctrl-Z and Ctrl-D go to the\n"
    "guest); vmctl exits with the shell's exit status. The same as\n"
    "`vmctl exec -t NAME -- SHELL -l`.\n"
    "\n"
    "When stdin is not a terminal, the shell gets no terminal and reads its commands from\n"
    "stdin (as `ssh` does): `echo uname -a | vmctl shell web`.\n"
    "\n"
    "Options:\n"
    "  -u, --user U       log in as guest user U: NAME (from the guest's /etc/passwd), UID or\n"
    "                     UID:GID; default root\n"
    "      --cwd DIR      start in DIR instead of the user's home directory\n"
    "      --env K=V      set an environment variable for the shell (repeatable)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl shell web\n"
    "  vmctl shell web --user vmctl\n";

static const struct option options[] = {
    CLI_GUEST_OPTIONS,
    {},
};

/* Finds the user's shell and home in /etc/passwd with the shell's own read (no awk, no getent:
 * a busybox guest may lack them); $1 is the --cwd (empty: the home directory). */
static const char shell_script[] = "u=$(id -u 2>/dev/null) || u=0; s= h=\n"
                                   "while IFS=: read -r _n _p i _g _c d l; do\n"
                                   "  if [ \"$i\" = \"$u\" ]; then s=$l h=$d; break; fi\n"
                                   "done </etc/passwd\n"
                                   "case $s in '' | */nologin | */false) s=/bin/sh ;; esac\n"
                                   "[ -x \"$s\" ] || s=/bin/sh\n"
                                   "[ -n \"$HOME\" ] || export HOME=${h:-/}\n"
                                   "export SHELL=$s\n"
                                   "cd \"${1:-$HOME}\" 2>/dev/null || cd /\n"
                                   "exec \"$s\" -l\n";

int cmd_shell(cli *c, int argc, char **argv)
{
    cleanup_free char **env = NULL;
    size_t n_env = 0;
    vmctl_exec_opts opts = {};
    int o;
    while ((o = cli_getopt(c, argc, argv, "u:", options)) != -1) {
        int k = cli_guest_option(c, o, optarg, &env, &n_env, &opts);
        if (k <= 0)
            return k < 0 ? EXIT_ERROR : c->exit_code;
    }
    /* --cwd is the shell script's: it falls back to the user's home directory */
    const char *cwd = opts.cwd;
    opts.cwd = NULL;
    int r;
    if (!cli_open_with_args(c, 1, 1, "NAME", &r))
        return r;
    char *const shell_argv[] = {
        "/bin/sh", "-c", (char *)shell_script, "vmctl-shell", (char *)(cwd ? cwd : ""), NULL};
    opts.argv = shell_argv;
    opts.env = env;
    return cli_exec_tty(c, c->args[0], &opts, n_env, true);
}
