/* SPDX-License-Identifier: MIT */
/* The vmctl command-line tool: shared state, option parsing and command declarations.
 * The CLI sees libvmctl only through its public headers. */
#pragma once

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <vmctl/vmctl.h>

/* cleanup_free, cleanup_close, TAKE_PTR, ELEMENTSOF, streq, ...: the set the library, the agent
 * and the codec use too (src/shared/macros.h); cleanup_error, cleanup_vm_info: vmctl-cleanup.h */
#include "macros.h"
#include "vmctl-cleanup.h"

static inline void cli_json_decrefp(json_t **j)
{
    json_decref(*j);
}
#define cleanup_json __attribute__((cleanup(cli_json_decrefp)))

/* Exit codes of the contract. */
enum {
    EXIT_OK = 0,
    EXIT_ERROR = 1,
    EXIT_USAGE = 2,
};

typedef struct cli cli;
typedef int (*cli_command_fn)(cli *c, int argc, char **argv);

typedef struct cli_command {
    const char *name;
    cli_command_fn fn; /* NULL: planned, not implemented yet */
    const char *summary;
    const char *help;  /* full help: usage, description, options, examples */
    const char *issue; /* for planned commands: where it stands */
    /* commands with subcommands (image, kdl): the i-th one, NULL past the end */
    const struct cli_command *(*sub_at)(size_t i);
} cli_command;

struct cli {
    /* global options */
    const char *home;
    bool json;
    int verbose;

    /* terminal facts, computed once */
    bool color_err; /* colour on stderr */
    bool color_out; /* colour on stdout */
    bool unicode;

    const cli_command *cmd; /* the command being run (NULL: vmctl itself) */
    const char *cmd_path;   /* "create", "image list", ... for messages */
    vmctl_ctx *ctx;         /* opened on demand by cli_ctx() */
    bool home_create;       /* set by commands that make things: cli_ctx() may create the home */
    size_t exec_max_output; /* exec --max-output in bytes (0: CLI_EXEC_MAX_OUTPUT_DEFAULT) */
    bool progress_active;   /* a progress line is on stderr, clear it before printing */

    /* option parser state, see cli_getopt() */
    char **opt_argv;
    struct option *opt_long;
    char *opt_short;
    bool opt_mid_cluster; /* inside a "-abc" cluster */
    int exit_code;
    char **args; /* positional arguments, in order */
    size_t n_args;
    char **rest; /* everything after "--" */
    size_t n_rest;
    bool dashdash;
    /* Set by exec, run and ssh before parsing: once this many positionals are there, the next
     * one starts the guest command (taken as if after "--"). 0: off. */
    size_t opt_command_at;
};

/* The longest duration an option takes (7 days): beyond it the millisecond arithmetic of
 * deadlines overflows. */
#define CLI_MAX_SECONDS 604800u

/* Values for the global options; command options use values >= 0x100 or short letters. */
enum {
    CLI_OPT_EXIT = -2, /* cli_getopt: return c->exit_code (help printed or usage error shown) */
    CLI_OPT_HOME = 0x1000,
    CLI_OPT_JSON,
    CLI_OPT_VERSION,
};

/* getopt_long over a command's options plus the global ones (--home, --json, -v, --help), which
 * are accepted anywhere before "--". Positional arguments are collected into c->args (options may
 * follow them), everything after "--" into c->rest. Returns the next command option, -1 at the
 * end, or CLI_OPT_EXIT after printing help or a usage error (return c->exit_code then). */
int cli_getopt(cli *c, int argc, char **argv, const char *shortopts, const struct option *longopts);
/* Same, but stops at the first positional argument (for vmctl itself and commands with
 * subcommands): at -1, *ret_index is its index in argv (argc when there is none). */
int cli_getopt_subcommand(cli *c, int argc, char **argv, const struct option *longopts,
                          int *ret_index);

/* malloc'd printf, NULL on failure. */
char *cli_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Render a usage error (vm_manager::cli::usage) and return EXIT_USAGE. */
int cli_usage_error(cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A bad option value: config::invalid naming the option, exit 1. */
int cli_invalid_value(cli *c, const char *option, const char *value, const char *expected);
/* The options exec and shell share: --env K=V (repeatable), --cwd DIR, -u/--user U. */
enum { CLI_OPT_ENV = 0x800, CLI_OPT_CWD };
// clang-format off
#define CLI_GUEST_OPTIONS                                                                          \
    {"env", required_argument, NULL, CLI_OPT_ENV},                                                 \
    {"cwd", required_argument, NULL, CLI_OPT_CWD},                                                 \
    {"user", required_argument, NULL, 'u'}
// clang-format on
/* Option o (from cli_getopt) if it is one of those: 1, its value in *env (cli_add_env) or
 * opts->cwd, opts->user; 0 when o is another option; -1 after rendering its error. */
int cli_guest_option(cli *c, int o, const char *arg, char ***env, size_t *n_env,
                     vmctl_exec_opts *opts);
/* One --env K=V: appended to the NULL-terminated *env of *n_env entries (it points into arg, not
 * copied). 0; -EINVAL after rendering config::invalid for an entry without '=' or name; -ENOMEM.
 */
int cli_add_env(cli *c, const char *arg, char ***env, size_t *n_env);
/* Exactly n_min..n_max positional arguments, named for the message (e.g. "NAME"). */
int cli_expect_args(cli *c, size_t n_min, size_t n_max, const char *what);
/* Where a command begins. Each returns what the command goes on with (true, the context), or
 * false/NULL after printing help or rendering an error: the command returns *ret_exit then.
 * cli_parse_no_options: a command without options of its own (only the global ones) and with
 *   n_min..n_max positional arguments, named `what` in the message (cli_expect_args);
 * cli_open_with_args: once a command has parsed its options: the positional arguments, then
 *   the library context (cli_ctx);
 * cli_open_no_options: both. */
bool cli_parse_no_options(cli *c, int argc, char **argv, size_t n_min, size_t n_max,
                          const char *what, int *ret_exit);
vmctl_ctx *cli_open_with_args(cli *c, size_t n_min, size_t n_max, const char *what, int *ret_exit);
vmctl_ctx *cli_open_no_options(cli *c, int argc, char **argv, size_t n_min, size_t n_max,
                               const char *what, int *ret_exit);
/* start and stop: NAME..., --timeout S (*ret_timeout keeps its value when not given) and one flag
 * option named `flag` (*ret_flag); then the context, as cli_open_with_args(). */
vmctl_ctx *cli_open_name_timeout(cli *c, int argc, char **argv, const char *flag, bool *ret_flag,
                                 double *ret_timeout, int *ret_exit);
/* The positional arguments of exec and ssh: NAME, then the guest command after "--" or as
 * further positionals (*ret_cmd, NULL when there is none). 0, or the exit code of a usage error. */
int cli_expect_name_and_command(cli *c, char *const **ret_cmd);

/* Number parsing; on failure they render config::invalid and return -EINVAL. */
int cli_parse_uint(cli *c, const char *option, const char *s, unsigned min, unsigned *ret);
int cli_parse_mib(cli *c, const char *option, const char *s, unsigned *ret);
int cli_parse_seconds(cli *c, const char *option, const char *s, double *ret);

/* The library context for c->home, opened once (renders the error and returns NULL on failure).
 * It creates nothing unless the command set c->home_create first (a home without a store reads
 * as empty, with a note on stderr). */
vmctl_ctx *cli_ctx(cli *c);

/* Help text of the current command (or vmctl's own) on stdout. */
void cli_print_help(cli *c);
void cli_print_main_help(FILE *f);
const cli_command *cli_find_command(const char *name);
/* `image` subcommands (cmd-image.c); NULL when unknown. */
const cli_command *image_find_subcommand(const char *name);
/* The i-th command of vmctl's table, the i-th subcommand of image and kdl; NULL past the end. */
const cli_command *cli_command_at(size_t i);
const cli_command *image_subcommand_at(size_t i);
const cli_command *kdl_subcommand_at(size_t i);
const cli_command *network_subcommand_at(size_t i);
int cmd_network(cli *c, int argc, char **argv);
extern const char cmd_network_help[];
/* Usage error for a planned command: "'WHAT' is not implemented yet", exit 2. */
int cli_not_implemented(cli *c, const char *what);

/* Signal handling shared by long-running commands: a flag set by SIGINT/SIGTERM/SIGHUP. */
extern volatile sig_atomic_t cli_interrupted;
void cli_catch_signals(bool reset_after_first);
void cli_restore_signals(void);

/* At exit: flush and close stdout; when that fails, render vm_manager::io on stderr and return
 * EXIT_ERROR (or r when it is already a failure). */
int cli_finish_stdout(cli *c, int r);

/* Write all of buf to fd (EINTR-safe). */
int cli_write_all(int fd, const void *buf, size_t len);

/* --- commands (one file each) --- */
int cmd_doctor(cli *c, int argc, char **argv);
int cmd_image(cli *c, int argc, char **argv);
int cmd_create(cli *c, int argc, char **argv);
int cmd_run(cli *c, int argc, char **argv);
int cmd_start(cli *c, int argc, char **argv);
int cmd_stop(cli *c, int argc, char **argv);
int cmd_kill(cli *c, int argc, char **argv);
int cmd_pause(cli *c, int argc, char **argv);
int cmd_snapshot(cli *c, int argc, char **argv);
int cmd_clone(cli *c, int argc, char **argv);
int cmd_pool(cli *c, int argc, char **argv);
extern const char cmd_pool_help[];
/* After a clone of vm/snap: when its warm pool misses processes, `vmctl pool fill vm/snap` in
 * the background (detached; cmd-pool.c). */
/* gated: the fill waits until this vmctl has exited (at most 1 s). */
void cli_pool_refill_later(cli *c, vmctl_ctx *ctx, const char *vm, const char *snap, bool gated);
extern const char cmd_snapshot_help[], cmd_clone_help[];
const struct cli_command *snapshot_subcommand_at(size_t i);
int cmd_resume(cli *c, int argc, char **argv);
int cmd_destroy(cli *c, int argc, char **argv);
int cmd_list(cli *c, int argc, char **argv);
int cmd_status(cli *c, int argc, char **argv);
int cmd_console(cli *c, int argc, char **argv);
int cmd_logs(cli *c, int argc, char **argv);
int cmd_exec(cli *c, int argc, char **argv);
int cmd_cp(cli *c, int argc, char **argv);
extern const char cmd_cp_help[];
int cmd_ssh(cli *c, int argc, char **argv);
extern const char cmd_ssh_help[];
int cmd_shell(cli *c, int argc, char **argv);
extern const char cmd_shell_help[];
int cmd_errors(cli *c, int argc, char **argv);
int cmd_kdl(cli *c, int argc, char **argv);
int cmd_completion(cli *c, int argc, char **argv);
int cmd_stats(cli *c, int argc, char **argv);
extern const char cmd_stats_help[];
extern const char cmd_completion_help[];
int cmd_serve(cli *c, int argc, char **argv);
extern const char cmd_serve_help[];

extern const char cmd_doctor_help[], cmd_image_help[], cmd_image_build_default_help[],
    cmd_image_list_help[], cmd_create_help[], cmd_run_help[], cmd_start_help[], cmd_stop_help[],
    cmd_kill_help[], cmd_pause_help[], cmd_resume_help[], cmd_destroy_help[], cmd_list_help[],
    cmd_status_help[], cmd_console_help[], cmd_logs_help[], cmd_exec_help[], cmd_errors_help[];
extern const char cmd_kdl_help[];
int cmd_up(cli *c, int argc, char **argv), cmd_down(cli *c, int argc, char **argv),
    cmd_reload(cli *c, int argc, char **argv), cmd_provision(cli *c, int argc, char **argv);
extern const char cmd_up_help[], cmd_down_help[], cmd_reload_help[], cmd_provision_help[];

/* --- create options, shared by create and run (cmd-create.c) --- */
typedef struct create_args {
    vmctl_vm_config config;
    vmctl_port_forward *ports;
    size_t n_ports;
    char **env; /* NULL-terminated, borrowed strings */
    size_t n_env;
    const char **allow; /* --allow texts, borrowed */
    size_t n_allow;
    vmctl_mount *mounts; /* each source is the start of a malloc'd copy of its --mount */
    size_t n_mounts;
} create_args;

enum {
    OPT_CREATE_IMAGE = 0x200,
    OPT_CREATE_KERNEL,
    OPT_CREATE_INITRD,
    OPT_CREATE_CMDLINE,
    OPT_CREATE_VCPUS,
    OPT_CREATE_MEMORY,
    OPT_CREATE_DISK,
    OPT_CREATE_MACHINE,
    OPT_CREATE_ACCEL,
    OPT_CREATE_NET,
    OPT_CREATE_PORT,
    OPT_CREATE_CLOUD_INIT,
    OPT_CREATE_SSH_KEY,
    OPT_CREATE_ENV,
    OPT_CREATE_BACKEND,
    OPT_CREATE_NO_JAIL,
    OPT_CREATE_CPU_QUOTA,
    OPT_CREATE_ALLOW,
    OPT_CREATE_ALLOW_DNS,
    OPT_CREATE_ALLOW_ALL,
    OPT_CREATE_RATE_LIMIT,
    OPT_CREATE_DISK_IOPS,
    OPT_CREATE_SNAPSHOTTABLE,
    OPT_CREATE_MOUNT,
    OPT_CREATE_MOUNT_TYPE,
};

#define CREATE_LONG_OPTIONS                                                                        \
    {"image", required_argument, NULL, OPT_CREATE_IMAGE},                                          \
        {"kernel", required_argument, NULL, OPT_CREATE_KERNEL},                                    \
        {"initrd", required_argument, NULL, OPT_CREATE_INITRD},                                    \
        {"cmdline", required_argument, NULL, OPT_CREATE_CMDLINE},                                  \
        {"vcpus", required_argument, NULL, OPT_CREATE_VCPUS},                                      \
        {"memory", required_argument, NULL, OPT_CREATE_MEMORY},                                    \
        {"disk", required_argument, NULL, OPT_CREATE_DISK},                                        \
        {"machine", required_argument, NULL, OPT_CREATE_MACHINE},                                  \
        {"accel", required_argument, NULL, OPT_CREATE_ACCEL},                                      \
        {"net", required_argument, NULL, OPT_CREATE_NET},                                          \
        {"port", required_argument, NULL, OPT_CREATE_PORT},                                        \
        {"cloud-init", required_argument, NULL, OPT_CREATE_CLOUD_INIT},                            \
        {"ssh-key", required_argument, NULL, OPT_CREATE_SSH_KEY},                                  \
        {"env", required_argument, NULL, OPT_CREATE_ENV},                                          \
        {"no-jail", no_argument, NULL, OPT_CREATE_NO_JAIL},                                        \
        {"cpu-quota", required_argument, NULL, OPT_CREATE_CPU_QUOTA},                              \
        {"allow", required_argument, NULL, OPT_CREATE_ALLOW},                                      \
        {"allow-dns", no_argument, NULL, OPT_CREATE_ALLOW_DNS},                                    \
        {"allow-all", no_argument, NULL, OPT_CREATE_ALLOW_ALL},                                    \
        {"rate-limit-mbps", required_argument, NULL, OPT_CREATE_RATE_LIMIT},                       \
        {"disk-iops", required_argument, NULL, OPT_CREATE_DISK_IOPS},                              \
        {"snapshottable", no_argument, NULL, OPT_CREATE_SNAPSHOTTABLE},                            \
        {"mount", required_argument, NULL, OPT_CREATE_MOUNT},                                      \
        {"mount-type", required_argument, NULL, OPT_CREATE_MOUNT_TYPE},                            \
    {                                                                                              \
        "backend", required_argument, NULL, OPT_CREATE_BACKEND                                     \
    }

/* Handle one create option: 1 handled, 0 not a create option, <0 error already rendered. */
int create_args_option(cli *c, create_args *a, int opt, const char *arg);
void create_args_done(create_args *a);
/* The end of create and run: a.config named NAME, the context, vmctl_vm_create(); a is done
 * with either way. The context, or NULL after rendering the error (return *ret_exit). */
vmctl_ctx *create_args_create(cli *c, create_args *a, const char *name, int *ret_exit);
/* The options part of the help, shared by create and run. */
#define CREATE_OPTIONS_HELP                                                                        \
    "VM options:\n"                                                                                \
    "      --image X            disk image: a name in the image cache or a path (q35 machine)\n"   \
    "      --kernel K           boot this kernel directly (microvm machine)\n"                     \
    "      --initrd I           initramfs for --kernel\n"                                          \
    "      --cmdline S          extra kernel command-line arguments\n"                             \
    "      --vcpus N            virtual CPUs (default 1)\n"                                        \
    "      --memory MiB         memory in MiB, at least 32; 2G and 512M also work (default 256)\n" \
    "      --disk GiB           disk size in GiB (default: the image's size)\n"                    \
    "      --machine M          microvm or q35 (default: microvm for kernels, q35 for images)\n"   \
    "      --accel A            auto, kvm or tcg (default auto: KVM only where it really works)\n" \
    "      --net N              user, tap or none (default none for the default guest, else\n"     \
    "                           user); tap: a routed TAP with an address from the pool, egress\n"  \
    "                           denied but for --allow (docs/networking.md)\n"                     \
    "      --port HOST:GUEST[/udp]\n"                                                              \
    "                           forward a host port to the guest (repeatable; HOST 0 picks one)\n" \
    "      --allow CIDR[:PORT[-PORT]][/tcp|udp]\n"                                                 \
    "                           tap: let the guest reach this (repeatable)\n"                      \
    "      --allow-dns          tap: let the guest reach the host's resolvers on port 53\n"        \
    "      --allow-all          tap: let the guest reach everything but the host and other VMs\n"  \
    "      --rate-limit-mbps N  tap: cap what the guest receives at N megabit/s\n"                 \
    "      --disk-iops N        cap the disk at N read+write operations per second\n"              \
    "      --cloud-init FILE    cloud-init user-data for the seed ISO\n"                           \
    "      --ssh-key PUB        public key to authorize in the guest\n"                            \
    "      --env K=V            environment variable for the guest (repeatable)\n"                 \
    "      --mount SRC:DST[:ro] share host directory SRC at guest path DST (repeatable)\n"         \
    "      --mount-type T       virtiofs (default where virtiofsd runs) or 9p\n"                   \
    "      --backend B          qemu (default); firecracker and propolis are not available yet\n"  \
    "      --snapshottable      keep the guest's RAM in a file on tmpfs, for template snapshots\n" \
    "                           (`vmctl snapshot create`; docs/snapshots.md)\n"                    \
    "      --cpu-quota C        host CPUs the VM may use, e.g. 0.5 (cgroup quota; default none)\n" \
    "      --no-jail            run QEMU unconfined, as root (debugging; docs/isolation.md)\n"

/* After an action on a VM: "<done> VM 'NAME'" on stdout, or with --json its status object.
 * Returns EXIT_OK (or EXIT_ERROR when stdout cannot be written). */
int cli_vm_done(cli *c, const char *name, const char *done);

/* Act on every VM named in c->args (NAME...), one after the other, each reported on its own:
 * "<done> VM 'NAME'" on stdout or its error on stderr. --json: one name gives its status object
 * ({"name", "destroyed": true} when `destroys`) or the error document, as before; several give
 * an array with one such object per name, an error as {"error": {...}, "name": NAME}. Returns
 * EXIT_ERROR when any failed. */
int cli_vm_each(cli *c, int (*act)(cli *c, const char *name, void *userdata, vmctl_error **reterr),
                void *userdata, const char *done, bool destroys);

/* The whole of a command that takes NAME... and no options and calls one library action on each
 * (kill, pause, resume): parse, then cli_vm_each(). */
int cli_vm_action(cli *c, int argc, char **argv,
                  int (*action)(vmctl_ctx *, const char *, vmctl_error **), const char *done);

/* Run argv in the VM (its stdin from stdin_fd, -1: none) and report it as one JSON object.
 * Returns the command's status (128+N for signal N), or EXIT_ERROR after rendering an error. */
int cli_exec_and_report(cli *c, const char *name, const vmctl_exec_opts *opts, int stdin_fd);
/* Like vmctl_exec, but each of stdout and stderr is collected up to c->exec_max_output (0: the
 * default, 64 MiB); past it the command is stopped and the call fails with vm_manager::io. */
#define CLI_EXEC_MAX_OUTPUT_DEFAULT ((size_t)64 << 20)
int cli_exec_collect(cli *c, vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                     int stdin_fd, vmctl_exec_result *res, vmctl_error **reterr);
/* The output part of it, for a result obtained elsewhere (clears res). */
int cli_exec_report(cli *c, vmctl_exec_result *res);
/* Output callbacks that pass a command's stdout/stderr through to vmctl's, byte for byte. */
int cli_pass_stdout(const void *data, size_t len, void *userdata);
int cli_pass_stderr(const void *data, size_t len, void *userdata);
/* The signals that end or interrupt a command run in a VM (exec forwards them, run --rm tears the
 * VM down on them): SIGINT, SIGTERM, SIGHUP, SIGQUIT. */
void cli_interrupt_signals(sigset_t *set);
/* exec -t and shell: opts->argv in vm `name` on a guest terminal (opts->env has n_env entries;
 * TERM is added), the host terminal raw meanwhile. Stdin must be a terminal, else config::invalid
 * (pipe_ok: then the command runs without a terminal, its input piped). Returns the command's
 * status, or an exit code after rendering an error. */
int cli_exec_tty(cli *c, const char *name, vmctl_exec_opts *opts, size_t n_env, bool pipe_ok);
/* The guest command of exec/run: what follows "--", or the extra positionals after NAME. */
char *const *cli_command_argv(cli *c, size_t first_positional);
