/* SPDX-License-Identifier: MIT */
/* vmctl exec NAME [--env K=V]... [--cwd DIR] [--timeout S] [-i] -- CMD ARGS... */
#include <signal.h>
#include <sys/signalfd.h>

#include "cli.h"
#include "render.h"

const char cmd_exec_help[] =
    "Usage: vmctl exec NAME [--env K=V]... [--cwd DIR] [--user U] [--timeout S] [-i] -- CMD "
    "[ARGS...]\n"
    "\n"
    "Run CMD in a running VM through its guest agent (no SSH, no network needed). CMD is looked\n"
    "up in the guest's PATH. Its stdout and stderr are streamed byte for byte to vmctl's stdout\n"
    "and stderr as they are produced, and vmctl exits with its exit status (128+N when signal N\n"
    "ended it; 127 when CMD does not exist, 126 when it cannot be executed). Errors of vmctl\n"
    "itself exit 1 and are rendered on stderr. The VM's create --env applies (--env wins).\n"
    "Ctrl-C (SIGINT), SIGTERM, SIGHUP and SIGQUIT are forwarded to the command; the third\n"
    "Ctrl-C kills it.\n"
    "\n"
    "With --json, print one object {exit_code, signal, stdout, stderr}: exit_code is null when a\n"
    "signal ended the command, signal is null otherwise; output that is not UTF-8 has its invalid\n"
    "bytes replaced by U+FFFD.\n"
    "\n"
    "Options:\n"
    "      --env K=V      set an environment variable for the command (repeatable)\n"
    "      --cwd DIR      working directory in the guest (default /)\n"
    "      --timeout S    kill the command after S seconds (vm_manager::timeout); default none\n"
    "  -u, --user U       run as guest user U: NAME (from the guest's /etc/passwd, with its\n"
    "                     groups), UID or UID:GID; default root (agent only)\n"
    "  -i, --interactive  stream vmctl's stdin to the command until end of file (without -i\n"
    "                     its stdin is /dev/null)\n"
    "      --via CHANNEL  agent or ssh; default: the agent when it answers, else SSH (as user\n"
    "                     vmctl, with the VM's key, over its forwarded SSH port)\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl exec web -- uname -a\n"
    "  vmctl exec web --env GREETING=hi -- sh -c 'echo $GREETING'\n"
    "  vmctl exec web --user 1000 --cwd /tmp -- id\n"
    "  tar c src | vmctl exec web -i --cwd /tmp -- tar x\n"
    "  vmctl exec web --json -- cat /etc/os-release | jq -r .stdout\n";

enum { OPT_ENV = 0x100, OPT_CWD, OPT_TIMEOUT, OPT_VIA };

static const struct option options[] = {
    {"env", required_argument, NULL, OPT_ENV},
    {"cwd", required_argument, NULL, OPT_CWD},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"interactive", no_argument, NULL, 'i'},
    {"via", required_argument, NULL, OPT_VIA},
    {"user", required_argument, NULL, 'u'},
    {},
};

char *const *cli_command_argv(cli *c, size_t first)
{
    if (c->dashdash)
        return c->n_rest > 0 ? c->rest : NULL;
    return c->n_args > first ? c->args + first : NULL;
}

static int read_all(int fd, char **ret, size_t *ret_len)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (len == cap) {
            char *n = realloc(buf, cap * 2);
            if (!n) {
                free(buf);
                return -ENOMEM;
            }
            buf = n;
            cap *= 2;
        }
        ssize_t k = read(fd, buf + len, cap - len);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            int r = -errno;
            free(buf);
            return r;
        }
        if (k == 0)
            break;
        len += (size_t)k;
    }
    *ret = buf;
    *ret_len = len;
    return 0;
}

int cli_exec_report(cli *c, vmctl_exec_result *res)
{
    int status = res->signal ? 128 + res->signal : res->exit_code & 0xff;
    if (c->json) {
        json_t *o = json_object();
        json_object_set_new(o, "exit_code",
                            res->signal ? json_null() : json_integer(res->exit_code));
        json_object_set_new(o, "signal", res->signal ? json_integer(res->signal) : json_null());
        json_object_set_new(o, "stdout", render_json_bytes(res->out ? res->out : "", res->out_len));
        json_object_set_new(o, "stderr", render_json_bytes(res->err ? res->err : "", res->err_len));
        vmctl_exec_result_clear(res);
        if (render_json(o) != EXIT_OK)
            return EXIT_ERROR;
        return status;
    }

    fflush(stdout);
    fflush(stderr);
    int r1 = res->out_len ? cli_write_all(STDOUT_FILENO, res->out, res->out_len) : 0;
    int r2 = res->err_len ? cli_write_all(STDERR_FILENO, res->err, res->err_len) : 0;
    vmctl_exec_result_clear(res);
    if (r1 < 0 || r2 < 0)
        return EXIT_ERROR;
    return status;
}

int cli_exec_and_report(cli *c, const char *name, const vmctl_exec_opts *opts)
{
    vmctl_exec_result res = {};
    vmctl_error *e = NULL;

    if (vmctl_exec(c->ctx, name, opts, &res, &e) < 0) {
        vmctl_exec_result_clear(&res);
        return render_error(c, e);
    }
    return cli_exec_report(c, &res);
}

int cli_pass_stdout(const void *data, size_t len, void *userdata)
{
    (void)userdata;
    return cli_write_all(STDOUT_FILENO, data, len) < 0 ? -EIO : 0;
}

int cli_pass_stderr(const void *data, size_t len, void *userdata)
{
    (void)userdata;
    return cli_write_all(STDERR_FILENO, data, len) < 0 ? -EIO : 0;
}

/* SIGINT, SIGTERM, SIGHUP and SIGQUIT go to the command, as if it ran here; after the third
 * SIGINT the command gets SIGKILL (a command that ignores Ctrl-C can still be stopped). Until the
 * command started they are not blocked: they end vmctl, and with it the request. */
struct fwd {
    sigset_t mask;
    unsigned n_int;
    bool blocked;
};

static int forward_signal(int fd, void *userdata)
{
    struct fwd *f = userdata;
    struct signalfd_siginfo si;
    ssize_t n = read(fd, &si, sizeof(si));
    if (n != (ssize_t)sizeof(si))
        return 0;
    int sig = (int)si.ssi_signo;
    if (sig == SIGINT && ++f->n_int >= 3) {
        if (f->n_int == 3)
            fprintf(stderr, "vmctl: third interrupt: killing the command (SIGKILL)\n");
        sig = SIGKILL;
    }
    return sig;
}

static void block_forwarded(void *userdata)
{
    struct fwd *f = userdata;
    f->blocked = sigprocmask(SIG_BLOCK, &f->mask, NULL) == 0;
}

/* Output streamed as it comes, input streamed with -i, signals forwarded. */
static int exec_streamed(cli *c, const char *name, const vmctl_exec_opts *opts, bool interactive)
{
    struct fwd f = {};
    cli_interrupt_signals(&f.mask);
    cleanup_close int sfd = signalfd(-1, &f.mask, SFD_CLOEXEC | SFD_NONBLOCK);
    vmctl_exec_io io = {.on_stdout = cli_pass_stdout,
                        .on_stderr = cli_pass_stderr,
                        .signal_fd = sfd,
                        .on_signal = sfd >= 0 ? forward_signal : NULL,
                        .on_started = sfd >= 0 ? block_forwarded : NULL,
                        .userdata = &f};
    vmctl_exec_status st = {0};
    vmctl_error *e = NULL;
    fflush(stdout);
    fflush(stderr);
    int r = vmctl_exec_stream(c->ctx, name, opts, &io, interactive ? STDIN_FILENO : -1, &st, &e);
    if (f.blocked) {
        /* what came after the command's end is not for vmctl either */
        struct signalfd_siginfo si;
        while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
            ;
        sigprocmask(SIG_UNBLOCK, &f.mask, NULL);
    }
    if (r < 0)
        return render_error(c, e);
    return st.signal ? 128 + st.signal : st.exit_code & 0xff;
}

int cmd_exec(cli *c, int argc, char **argv)
{
    cleanup_free char **env = NULL;
    cleanup_free char *input = NULL;
    size_t n_env = 0;
    vmctl_exec_opts opts = {};
    bool interactive = false;
    int o;

    while ((o = cli_getopt(c, argc, argv, "iu:", options)) != -1) {
        switch (o) {
        case OPT_ENV: {
            const char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg)
                return cli_invalid_value(c, "--env", optarg, "K=V with a non-empty name K");
            char **n = realloc(env, sizeof(char *) * (n_env + 2));
            if (!n)
                return EXIT_ERROR;
            env = n;
            env[n_env++] = optarg;
            env[n_env] = NULL;
            break;
        }
        case OPT_CWD:
            opts.cwd = optarg;
            break;
        case 'u':
            if (!*optarg)
                return cli_invalid_value(c, "--user", optarg, "NAME, UID or UID:GID");
            opts.user = optarg;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_seconds(c, "--timeout", optarg, &opts.timeout_sec) < 0)
                return EXIT_ERROR;
            break;
        case 'i':
            interactive = true;
            break;
        case OPT_VIA:
            if (streq(optarg, "ssh"))
                opts.via = VMCTL_EXEC_VIA_SSH;
            else if (streq(optarg, "agent"))
                opts.via = VMCTL_EXEC_VIA_AGENT;
            else
                return cli_invalid_value(c, "--via", optarg, "ssh or agent");
            break;
        default:
            return c->exit_code;
        }
    }
    int r = cli_expect_name_and_command(c, &opts.argv);
    if (r)
        return r;
    if (!opts.argv)
        return cli_usage_error(c, "missing the command to run (give it after `--`)");
    opts.env = env;

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;

    if (!c->json)
        return exec_streamed(c, c->args[0], &opts, interactive);
    if (interactive) {
        size_t len = 0;
        r = read_all(STDIN_FILENO, &input, &len);
        if (r < 0) {
            vmctl_error *e = NULL;
            vmctl_error_new(&e, VMCTL_E_IO, -r, "cannot read standard input: %s", strerror(-r));
            return render_error(c, e);
        }
        opts.stdin_data = input;
        opts.stdin_len = len;
    }
    return cli_exec_and_report(c, c->args[0], &opts);
}
