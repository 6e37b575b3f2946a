/* SPDX-License-Identifier: MIT */
/* vmctl exec NAME [--env K=V]... [--cwd DIR] [--timeout S] [-i] [-t] -- CMD ARGS... */
#include <signal.h>
#include <sys/ioctl.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <termios.h>

#include "cli.h"
#include "render.h"

const char cmd_exec_help[] =
    "Usage: vmctl exec NAME [--env K=V]... [--cwd DIR] [--user U] [--timeout S] [-i] [-t] [--] CMD "
    "[ARGS...]\n"
    "\n"
    "Run CMD in a running VM through its guest agent (no SSH, no network needed). CMD is looked\n"
    "up in the guest's PATH. vmctl's options go before CMD: from CMD's first word on, every\n"
    "argument is the command's, options included (`vmctl exec web grep -i root /etc/passwd`).\n"
    "Its stdout and stderr are streamed byte for byte to vmctl's stdout and stderr as they are\n"
    "produced, and vmctl exits with its exit status (128+N when signal N ended it; 127 when\n"
    "CMD does not exist, 126 when it cannot be executed). Errors of vmctl itself exit 1 and are\n"
    "rendered on stderr. The VM's create --env applies (--env wins). Ctrl-C (SIGINT),\n"
    "SIGTERM, SIGHUP and SIGQUIT are forwarded to the command; the third Ctrl-C kills it.\n"
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
    "  -t, --tty          run the command on a terminal in the guest (implies -i): vmctl's\n"
    "                     terminal is put in raw mode (restored on exit), keys such as Ctrl-C\n"
    "                     go to the guest as bytes, the window size follows vmctl's, TERM is\n"
    "                     passed on; stdout and stderr come merged on stdout. stdin must be a\n"
    "                     terminal (config::invalid otherwise); agent only, no --json\n"
    "      --via CHANNEL  agent or ssh; default: the agent when it answers, else SSH (as user\n"
    "                     vmctl, with the VM's key, over its forwarded SSH port)\n"
    "      --max-output MiB  with --json: collect at most this much of each of stdout and\n"
    "                     stderr (default 64; 1G also works); past it the command is stopped\n"
    "                     and vmctl fails with vm_manager::io\n"
    "  -h, --help         show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl exec web -- uname -a\n"
    "  vmctl exec web --env GREETING=hi -- sh -c 'echo $GREETING'\n"
    "  vmctl exec web --user 1000 --cwd /tmp -- id\n"
    "  vmctl exec -t web -- top\n"
    "  tar c src | vmctl exec web -i --cwd /tmp -- tar x\n"
    "  vmctl exec web --json -- cat /etc/os-release | jq -r .stdout\n";

enum { OPT_TIMEOUT = 0x100, OPT_VIA, OPT_MAX_OUTPUT };

static const struct option options[] = {
    CLI_GUEST_OPTIONS,
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"interactive", no_argument, NULL, 'i'},
    {"via", required_argument, NULL, OPT_VIA},
    {"max-output", required_argument, NULL, OPT_MAX_OUTPUT},
    {"tty", no_argument, NULL, 't'},
    {},
};

char *const *cli_command_argv(cli *c, size_t first)
{
    if (c->dashdash)
        return c->n_rest > 0 ? c->rest : NULL;
    return c->n_args > first ? c->args + first : NULL;
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

/* --json collects the output, each stream up to a bound: past it the command is stopped (the
 * session closes, the agent kills its process group) and the call fails with io (EFBIG). */
struct collect {
    vmctl_exec_result *res;
    size_t max;
    int over; /* 1: stdout, 2: stderr passed the bound */
    size_t cap[2];
    int stop_fd; /* an eventfd the exec waits on: written once over the bound, so it stops */
};

static int collect_add(struct collect *k, int which, const void *data, size_t len)
{
    char **buf = which == 0 ? &k->res->out : &k->res->err;
    size_t *n = which == 0 ? &k->res->out_len : &k->res->err_len;
    if (len > k->max - *n) {
        if (!k->over && k->stop_fd >= 0) {
            uint64_t one = 1;
            (void)!write(k->stop_fd, &one, sizeof(one));
        }
        k->over = which + 1;
        return -EFBIG;
    }
    if (*n + len + 1 > k->cap[which]) {
        size_t cap = k->cap[which] ? k->cap[which] : 65536;
        while (cap < *n + len + 1)
            cap *= 2;
        char *nb = realloc(*buf, cap);
        if (!nb)
            return -ENOMEM;
        *buf = nb;
        k->cap[which] = cap;
    }
    memcpy(*buf + *n, data, len);
    *n += len;
    (*buf)[*n] = '\0';
    return 0;
}

static int collect_stdout(const void *data, size_t len, void *userdata)
{
    return collect_add(userdata, 0, data, len);
}

static int collect_stderr(const void *data, size_t len, void *userdata)
{
    return collect_add(userdata, 1, data, len);
}

/* Past the bound the output callback only marks the request failed, and the library would wait
 * for the command's end: the eventfd makes it stop waiting (the session closes, the agent kills
 * the command's process group). */
static int collect_stop(int fd, void *userdata)
{
    uint64_t v;
    (void)!read(fd, &v, sizeof(v));
    return -EFBIG;
}

int cli_exec_collect(cli *c, vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                     int stdin_fd, vmctl_exec_result *res, vmctl_error **reterr)
{
    cleanup_close int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct collect k = {.res = res,
                        .max =
                            c->exec_max_output ? c->exec_max_output : CLI_EXEC_MAX_OUTPUT_DEFAULT,
                        .stop_fd = efd};
    vmctl_exec_io io = {.on_stdout = collect_stdout,
                        .on_stderr = collect_stderr,
                        .userdata = &k,
                        .signal_fd = efd,
                        .on_signal = efd >= 0 ? collect_stop : NULL};
    vmctl_exec_status st = {0};
    *res = (vmctl_exec_result){};
    int r = vmctl_exec_stream(ctx, name, opts, &io, stdin_fd, &st, reterr);
    if (r < 0 && k.over) {
        vmctl_error_free(*reterr);
        *reterr = NULL;
        char size[32];
        vmctl_error_new(reterr, VMCTL_E_IO, EFBIG,
                        "the command's %s passed %s, the most --json collects; the command was "
                        "stopped",
                        k.over == 1 ? "stdout" : "stderr", render_size(k.max, size, sizeof(size)));
        vmctl_error_add_detail(*reterr, "vm", name);
        vmctl_error_add_detail(*reterr, "stream", k.over == 1 ? "stdout" : "stderr");
        vmctl_error_set_help(*reterr, "Run it without --json to stream the output (byte for "
                                      "byte, any size), or raise the bound with `vmctl exec "
                                      "--max-output MiB`");
    }
    if (r < 0) {
        vmctl_exec_result_clear(res);
        return r;
    }
    res->signal = st.signal;
    res->exit_code = st.signal ? 128 + st.signal : st.exit_code;
    return 0;
}

int cli_exec_and_report(cli *c, const char *name, const vmctl_exec_opts *opts, int stdin_fd)
{
    vmctl_exec_result res = {};
    vmctl_error *e = NULL;

    if (cli_exec_collect(c, c->ctx, name, opts, stdin_fd, &res, &e) < 0)
        return render_error(c, e);
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
    /* exec -t: the host terminal, raw while the command runs */
    bool tty;
    bool raw;
    struct termios saved;
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
    if (f->tty) {
        /* raw only once the command runs: until then Ctrl-C still ends vmctl */
        struct termios raw = f->saved;
        cfmakeraw(&raw);
        f->raw = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
}

static void tty_restore(struct fwd *f)
{
    if (f->raw)
        tcsetattr(STDIN_FILENO, TCSADRAIN, &f->saved);
    f->raw = false;
}

/* The host terminal's size: stdin's, else stdout's (0 x 0: unknown). */
static void tty_size(unsigned *rows, unsigned *cols)
{
    struct winsize ws = {0};
    if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) < 0 && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) < 0)
        ws = (struct winsize){0};
    *rows = ws.ws_row;
    *cols = ws.ws_col;
}

/* SIGWINCH: the new size goes to the guest's terminal. */
static int on_winch(int fd, unsigned *rows, unsigned *cols, void *userdata)
{
    (void)userdata;
    struct signalfd_siginfo si;
    bool got = false;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        got = true; /* several changes: the last size counts */
    if (!got)
        return 0;
    tty_size(rows, cols);
    return *rows && *cols ? 1 : 0;
}

/* Output streamed as it comes, input streamed with -i, signals forwarded. With opts->tty: the
 * host terminal raw while the command runs (restored on every way out), its size sent at the
 * start and on every SIGWINCH. */
static int exec_streamed(cli *c, const char *name, const vmctl_exec_opts *opts, bool interactive)
{
    struct fwd f = {.tty = opts->tty};
    cli_interrupt_signals(&f.mask);
    cleanup_close int sfd = signalfd(-1, &f.mask, SFD_CLOEXEC | SFD_NONBLOCK);
    cleanup_close int wfd = -1;
    sigset_t winch;
    sigemptyset(&winch);
    sigaddset(&winch, SIGWINCH);
    if (f.tty) {
        if (tcgetattr(STDIN_FILENO, &f.saved) < 0) {
            vmctl_error *e = NULL;
            vmctl_error_new(&e, VMCTL_E_IO, errno, "cannot read the terminal's settings");
            return render_error(c, e);
        }
        /* SIGWINCH is ignored by default: blocking it from now on loses none */
        sigprocmask(SIG_BLOCK, &winch, NULL);
        wfd = signalfd(-1, &winch, SFD_CLOEXEC | SFD_NONBLOCK);
    }
    vmctl_exec_io io = {.on_stdout = cli_pass_stdout,
                        .on_stderr = cli_pass_stderr,
                        .signal_fd = sfd,
                        .on_signal = sfd >= 0 ? forward_signal : NULL,
                        .on_started = sfd >= 0 || f.tty ? block_forwarded : NULL,
                        .resize_fd = wfd,
                        .on_resize = wfd >= 0 ? on_winch : NULL,
                        .userdata = &f};
    vmctl_exec_status st = {0};
    vmctl_error *e = NULL;
    fflush(stdout);
    fflush(stderr);
    int r = vmctl_exec_stream(c->ctx, name, opts, &io, interactive ? STDIN_FILENO : -1, &st, &e);
    tty_restore(&f);
    if (f.tty)
        sigprocmask(SIG_UNBLOCK, &winch, NULL);
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

/* TERM for the guest: the host's (a --env TERM=... given by the user comes later and wins). */
static char **env_with_term(char **env, size_t n_env, char **term)
{
    const char *t = getenv("TERM");
    *term = t && *t ? cli_printf("TERM=%s", t) : NULL;
    if (!*term)
        return NULL;
    char **e = calloc(n_env + 2, sizeof(char *));
    if (!e)
        return NULL;
    e[0] = *term;
    for (size_t i = 0; i < n_env; i++)
        e[i + 1] = env[i];
    return e;
}

int cli_exec_tty(cli *c, const char *name, vmctl_exec_opts *opts, size_t n_env, bool pipe_ok)
{
    if (c->json)
        return cli_usage_error(c, "%s is interactive and has no --json output",
                               c->cmd_path ? c->cmd_path : "exec -t");
    bool tty = isatty(STDIN_FILENO);
    if (!tty && pipe_ok)
        return exec_streamed(c, name, opts, true); /* as ssh does: no terminal, input piped */
    if (!tty) {
        vmctl_error *e = NULL;
        vmctl_error_new(&e, VMCTL_E_CONFIG_INVALID, ENOTTY,
                        "the input device is not a TTY: -t needs vmctl's stdin to be a terminal");
        vmctl_error_add_detail(e, "field", "tty");
        vmctl_error_set_help(e, "Run it from a terminal, or without -t (`vmctl exec NAME -i -- "
                                "CMD` streams a pipe to the command).");
        return render_error(c, e);
    }
    cleanup_free char *term = NULL;
    cleanup_free char **env = env_with_term((char **)opts->env, n_env, &term);
    if (env)
        opts->env = env;
    opts->tty = true;
    tty_size(&opts->tty_rows, &opts->tty_cols);
    return exec_streamed(c, name, opts, true);
}

int cmd_exec(cli *c, int argc, char **argv)
{
    cleanup_free char **env = NULL;
    size_t n_env = 0;
    vmctl_exec_opts opts = {};
    bool interactive = false, tty = false;
    int o;

    c->opt_command_at = 1; /* NAME, then the command: its options are its own */
    while ((o = cli_getopt(c, argc, argv, "itu:", options)) != -1) {
        int k = cli_guest_option(c, o, optarg, &env, &n_env, &opts);
        if (k != 0) {
            if (k < 0)
                return EXIT_ERROR;
            continue;
        }
        switch (o) {
        case OPT_TIMEOUT:
            if (cli_parse_seconds(c, "--timeout", optarg, &opts.timeout_sec) < 0)
                return EXIT_ERROR;
            break;
        case 'i':
            interactive = true;
            break;
        case OPT_MAX_OUTPUT: {
            unsigned mib = 0;
            if (cli_parse_mib(c, "--max-output", optarg, &mib) < 0)
                return EXIT_ERROR;
            c->exec_max_output = (size_t)mib << 20;
            break;
        }
        case 't':
            tty = true;
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

    if (tty)
        return cli_exec_tty(c, c->args[0], &opts, n_env, false);
    if (!c->json)
        return exec_streamed(c, c->args[0], &opts, interactive);
    return cli_exec_and_report(c, c->args[0], &opts, interactive ? STDIN_FILENO : -1);
}
