/* SPDX-License-Identifier: MIT */
/* Option parsing, usage errors, value parsing and the library context, shared by all commands. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>

#include "cli.h"
#include "render.h"

static const struct option global_options[] = {
    {"home", required_argument, NULL, CLI_OPT_HOME},
    {"json", no_argument, NULL, CLI_OPT_JSON},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
};

static int getopt_init(cli *c, int argc, char **argv, const char *shortopts,
                       const struct option *longopts)
{
    size_t n = 0;
    while (longopts && longopts[n].name)
        n++;
    free(c->opt_long);
    free(c->opt_short);
    free(c->args);
    c->opt_long = calloc(n + ELEMENTSOF(global_options) + 1, sizeof(struct option));
    c->opt_short = malloc(strlen(shortopts ? shortopts : "") + 8);
    c->args = calloc((size_t)argc + 1, sizeof(char *));
    if (!c->opt_long || !c->opt_short || !c->args)
        return -ENOMEM;
    if (n)
        memcpy(c->opt_long, longopts, n * sizeof(struct option));
    memcpy(c->opt_long + n, global_options, sizeof(global_options));
    /* "+": stop at non-options (we collect them ourselves, so options may follow positionals);
     * ":": report a missing argument as ':' so we can word the error. */
    sprintf(c->opt_short, "+:%shv", shortopts ? shortopts : "");
    c->opt_argv = argv;
    c->n_args = 0;
    c->rest = NULL;
    c->n_rest = 0;
    c->dashdash = false;
    /* glibc keeps state between calls (the rest of a "-abc" cluster): reinitialise it fully
     * (optind = 0) on a dummy vector, so optind is a plain index from here on. */
    char *dummy[] = {argv[0], NULL};
    opterr = 0;
    optind = 0;
    (void)getopt_long(1, dummy, c->opt_short, c->opt_long, NULL);
    optind = 1;
    c->opt_mid_cluster = false;
    return 0;
}

static int getopt_error(cli *c, int o, int argc, char **argv)
{
    const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "";
    c->opt_argv = NULL;
    if (o == ':') {
        if (strncmp(arg, "--", 2) == 0)
            c->exit_code = cli_usage_error(c, "option '%s' needs a value", arg);
        else
            c->exit_code = cli_usage_error(c, "option '-%c' needs a value", optopt);
        return CLI_OPT_EXIT;
    }
    if (strncmp(arg, "--", 2) == 0) {
        const char *eq = strchr(arg, '=');
        if (eq && optopt != 0)
            c->exit_code =
                cli_usage_error(c, "option '%.*s' does not take a value", (int)(eq - arg), arg);
        else
            c->exit_code = cli_usage_error(c, "unknown option '%s'", arg);
    } else {
        c->exit_code = cli_usage_error(c, "unknown option '-%c'", optopt ? optopt : '?');
    }
    return CLI_OPT_EXIT;
}

/* exec, run, ssh: once the positionals before the guest command are there (NAME), the next
 * positional starts the command, and everything from it on is the command's, options included
 * (as after "--"): `vmctl exec web grep -i root /etc/passwd` runs exactly that. */
static bool command_starts(cli *c, int argc, char **argv)
{
    if (c->opt_command_at == 0 || c->n_args < c->opt_command_at)
        return false;
    c->dashdash = true;
    c->rest = argv + optind;
    c->n_rest = (size_t)(argc - optind);
    return true;
}

static int getopt_common(cli *c, int argc, char **argv, const char *shortopts,
                         const struct option *longopts, int *subcommand)
{
    if (c->opt_argv != argv && getopt_init(c, argc, argv, shortopts, longopts) < 0) {
        fprintf(stderr, "Error: out of memory\n");
        c->exit_code = EXIT_ERROR;
        return CLI_OPT_EXIT;
    }

    for (;;) {
        int prev = optind;
        /* "-bad" where 'b' is no short option of this command is an argument, not a typo'd
         * option: `vmctl create -bad` reports the invalid name, `exec NAME ls -la` runs ls. */
        if (!subcommand && !c->opt_mid_cluster && optind < argc && argv[optind][0] == '-' &&
            argv[optind][1] && argv[optind][1] != '-' &&
            !strchr(c->opt_short + 2, argv[optind][1])) {
            if (command_starts(c, argc, argv))
                break;
            c->args[c->n_args++] = argv[optind++];
            continue;
        }
        int o = getopt_long(argc, argv, c->opt_short, c->opt_long, NULL);
        c->opt_mid_cluster = o != -1 && optind == prev;
        if (o == -1) {
            if (optind >= argc) {
                /* a trailing "--" with nothing after it */
                if (optind == prev + 1 && prev < argc && streq(argv[prev], "--")) {
                    c->dashdash = true;
                    c->rest = argv + optind;
                }
                break;
            }
            if (optind == prev + 1 && streq(argv[prev], "--")) {
                c->dashdash = true;
                c->rest = argv + optind;
                c->n_rest = (size_t)(argc - optind);
                break;
            }
            if (subcommand) {
                c->opt_argv = NULL;
                *subcommand = optind;
                return -1;
            }
            if (command_starts(c, argc, argv))
                break;
            c->args[c->n_args++] = argv[optind++];
            continue;
        }
        switch (o) {
        case CLI_OPT_HOME:
            c->home = optarg;
            continue;
        case CLI_OPT_JSON:
            c->json = true;
            continue;
        case 'v':
            c->verbose++;
            continue;
        case 'h':
            cli_print_help(c);
            c->exit_code = EXIT_OK;
            c->opt_argv = NULL;
            return CLI_OPT_EXIT;
        case '?':
        case ':':
            return getopt_error(c, o, argc, argv);
        default:
            return o;
        }
    }
    c->opt_argv = NULL;
    if (subcommand)
        *subcommand = argc;
    return -1;
}

int cli_getopt(cli *c, int argc, char **argv, const char *shortopts, const struct option *longopts)
{
    return getopt_common(c, argc, argv, shortopts, longopts, NULL);
}

int cli_getopt_subcommand(cli *c, int argc, char **argv, const struct option *longopts,
                          int *ret_index)
{
    return getopt_common(c, argc, argv, "", longopts, ret_index);
}

static const char *cmd_path(cli *c)
{
    return c->cmd_path ? c->cmd_path : c->cmd ? c->cmd->name : NULL;
}

int cli_usage_error(cli *c, const char *fmt, ...)
{
    vmctl_error *e = NULL;
    va_list ap;
    va_start(ap, fmt);
    vmctl_error_newv(&e, VMCTL_E_CLI_USAGE, EINVAL, fmt, ap);
    va_end(ap);
    const char *path = cmd_path(c);
    cleanup_free char *help =
        path ? cli_printf("Run `vmctl %s --help` for the options and an example", path) : NULL;
    vmctl_error_set_help(e, help ? help : "Run `vmctl --help` for the list of commands");
    if (path)
        vmctl_error_add_detail(e, "command", path);
    return render_error(c, e);
}

char *cli_printf(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL; /* its contents are undefined on failure */
    va_end(ap);
    return s;
}

int cli_invalid_value(cli *c, const char *option, const char *value, const char *expected)
{
    vmctl_error *e = NULL;
    vmctl_error_new(&e, VMCTL_E_CONFIG_INVALID, EINVAL, "invalid value '%s' for %s: expected %s",
                    value, option, expected);
    vmctl_error_add_detail(e, "field", option[0] == '-' ? option + 2 : option);
    vmctl_error_add_detail(e, "value", value);
    vmctl_error_add_detail(e, "allowed", expected);
    const char *path = cmd_path(c);
    cleanup_free char *help =
        path ? cli_printf("Give %s %s; `vmctl %s --help` lists what is allowed", option, expected,
                          path)
             : NULL;
    vmctl_error_set_help(e, help); /* NULL: keep the catalogue's */
    return render_error(c, e);
}

int cli_add_env(cli *c, const char *arg, char ***env, size_t *n_env)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg) {
        cli_invalid_value(c, "--env", arg, "K=V with a non-empty name K");
        return -EINVAL;
    }
    char **n = realloc(*env, sizeof(char *) * (*n_env + 2));
    if (!n)
        return -ENOMEM;
    *env = n;
    n[(*n_env)++] = (char *)arg;
    n[*n_env] = NULL;
    return 0;
}

int cli_guest_option(cli *c, int o, const char *arg, char ***env, size_t *n_env,
                     vmctl_exec_opts *opts)
{
    switch (o) {
    case CLI_OPT_ENV:
        return cli_add_env(c, arg, env, n_env) < 0 ? -1 : 1;
    case CLI_OPT_CWD:
        opts->cwd = arg;
        return 1;
    case 'u':
        if (!*arg) {
            cli_invalid_value(c, "--user", arg, "NAME, UID or UID:GID");
            return -1;
        }
        opts->user = arg;
        return 1;
    default:
        return 0;
    }
}

int cli_expect_args(cli *c, size_t n_min, size_t n_max, const char *what)
{
    if (c->n_args < n_min)
        return cli_usage_error(c, "missing %s", what);
    if (c->n_args > n_max)
        return cli_usage_error(c, "unexpected argument '%s'", c->args[n_max]);
    return 0;
}

bool cli_parse_no_options(cli *c, int argc, char **argv, size_t n_min, size_t n_max,
                          const char *what, int *ret_exit)
{
    if (cli_getopt(c, argc, argv, "", NULL) != -1) {
        *ret_exit = c->exit_code;
        return false;
    }
    *ret_exit = cli_expect_args(c, n_min, n_max, what);
    return *ret_exit == 0;
}

vmctl_ctx *cli_open_with_args(cli *c, size_t n_min, size_t n_max, const char *what, int *ret_exit)
{
    *ret_exit = cli_expect_args(c, n_min, n_max, what);
    if (*ret_exit)
        return NULL;
    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        *ret_exit = EXIT_ERROR;
    return ctx;
}

vmctl_ctx *cli_open_no_options(cli *c, int argc, char **argv, size_t n_min, size_t n_max,
                               const char *what, int *ret_exit)
{
    if (cli_getopt(c, argc, argv, "", NULL) != -1) {
        *ret_exit = c->exit_code;
        return NULL;
    }
    return cli_open_with_args(c, n_min, n_max, what, ret_exit);
}

vmctl_ctx *cli_open_name_timeout(cli *c, int argc, char **argv, const char *flag, bool *ret_flag,
                                 double *ret_timeout, int *ret_exit)
{
    enum { OPT_FLAG = 0x100, OPT_TIMEOUT };
    const struct option options[] = {
        {flag, no_argument, NULL, OPT_FLAG},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {},
    };
    int o;
    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        switch (o) {
        case OPT_FLAG:
            *ret_flag = true;
            break;
        case OPT_TIMEOUT:
            if (cli_parse_seconds(c, "--timeout", optarg, ret_timeout) < 0) {
                *ret_exit = EXIT_ERROR;
                return NULL;
            }
            break;
        default:
            *ret_exit = c->exit_code;
            return NULL;
        }
    }
    return cli_open_with_args(c, 1, SIZE_MAX, "NAME", ret_exit);
}

int cli_expect_name_and_command(cli *c, char *const **ret_cmd)
{
    if (c->n_args == 0)
        return cli_usage_error(c, "missing NAME");
    if (c->dashdash && c->n_args > 1)
        return cli_usage_error(c, "unexpected argument '%s' before `--`", c->args[1]);
    *ret_cmd = cli_command_argv(c, 1);
    return 0;
}

/* The failure of the cli_parse_*() functions: config::invalid rendered, -EINVAL. */
static int invalid_number(cli *c, const char *option, const char *s, const char *expected)
{
    cli_invalid_value(c, option, s, expected);
    return -EINVAL;
}

int cli_parse_uint(cli *c, const char *option, const char *s, unsigned min, unsigned *ret)
{
    char *end = NULL;
    char expected[64];
    snprintf(expected, sizeof(expected), "a whole number of at least %u", min);
    errno = 0;
    if (!isdigit((unsigned char)s[0]))
        return invalid_number(c, option, s, expected);
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v > UINT32_MAX || v < min)
        return invalid_number(c, option, s, expected);
    *ret = (unsigned)v;
    return 0;
}

int cli_parse_mib(cli *c, const char *option, const char *s, unsigned *ret)
{
    static const char expected[] = "a size in MiB of at least 1 (e.g. 512, 512M or 2G)";
    char *end = NULL;
    errno = 0;
    if (!isdigit((unsigned char)s[0]))
        return invalid_number(c, option, s, expected);
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return invalid_number(c, option, s, expected);
    if (*end == '\0' || strcasecmp(end, "M") == 0 || strcasecmp(end, "MiB") == 0 ||
        strcasecmp(end, "MB") == 0)
        ;
    else if (strcasecmp(end, "G") == 0 || strcasecmp(end, "GiB") == 0 || strcasecmp(end, "GB") == 0)
        v *= 1024;
    else
        return invalid_number(c, option, s, expected);
    if (v == 0 || v > UINT32_MAX)
        return invalid_number(c, option, s, expected);
    *ret = (unsigned)v;
    return 0;
}

int cli_parse_seconds(cli *c, const char *option, const char *s, double *ret)
{
    char expected[128];
    snprintf(expected, sizeof(expected),
             "a positive number of seconds of at most %u (%u days), e.g. 30, 1.5, 2m or 1h",
             CLI_MAX_SECONDS, CLI_MAX_SECONDS / 86400);
    char *end = NULL;
    errno = 0;
    /* Digits and one dot only: no sign, no "inf"/"nan", no hex, no exponent (1e308). */
    size_t n = strspn(s, "0123456789.");
    size_t dots = 0;
    for (size_t i = 0; i < n; i++)
        dots += s[i] == '.';
    if (n == 0 || dots > 1)
        return invalid_number(c, option, s, expected);
    double v = strtod(s, &end);
    if (errno || end != s + n || !isfinite(v))
        return invalid_number(c, option, s, expected);
    if (*end == '\0' || streq(end, "s"))
        ;
    else if (streq(end, "m"))
        v *= 60;
    else if (streq(end, "h"))
        v *= 3600;
    else
        return invalid_number(c, option, s, expected);
    if (!(v > 0) || v > CLI_MAX_SECONDS)
        return invalid_number(c, option, s, expected);
    *ret = v;
    return 0;
}

vmctl_ctx *cli_ctx(cli *c)
{
    if (c->ctx)
        return c->ctx;
    vmctl_error *e = NULL;
    /* Only the commands that make something (create, run, up, image build-default, ...) create
     * the home: a mistyped --home with `list` must not leave a new home behind. */
    if (vmctl_ctx_open(c->home, c->home_create ? 0 : VMCTL_CTX_NO_CREATE, &c->ctx, &e) < 0) {
        c->ctx = NULL;
        if (!e)
            vmctl_error_new(&e, VMCTL_E_INTERNAL, EIO, "cannot open the vmctl home");
        render_error(c, e);
        return NULL;
    }
    vmctl_ctx_set_log(c->ctx, render_log, c);
    if (!vmctl_ctx_has_store(c->ctx) && !c->json) {
        cleanup_free char *msg = cli_printf("there is no vmctl home at '%s' yet (nothing was "
                                            "created there)",
                                            vmctl_ctx_get_home(c->ctx));
        render_log(c, VMCTL_LOG_NOTICE, msg ? msg : "there is no vmctl home here yet");
    }
    return c->ctx;
}

int cli_vm_done(cli *c, const char *name, const char *done)
{
    if (!c->json) {
        printf("%s VM '%s'\n", done, name);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_ERROR;
    }
    vmctl_vm_info *vm = NULL;
    vmctl_error *e = NULL;
    if (vmctl_vm_get(c->ctx, name, &vm, &e) < 0) {
        /* The action worked; only the read-back failed: say what we know. */
        vmctl_error_free(e);
        return render_json(json_pack("{s:s}", "name", name));
    }
    int r = render_json(render_vm_json(vm));
    vmctl_vm_info_free(vm);
    return r;
}

/* The result object of one VM in --json: its status object (or just its name when it cannot be
 * read back), or {"name", "destroyed": true}. */
static json_t *vm_result_json(cli *c, const char *name, bool destroyed)
{
    if (destroyed)
        return json_pack("{s:s, s:b}", "name", name, "destroyed", 1);
    vmctl_vm_info *vm = NULL;
    if (vmctl_vm_get(c->ctx, name, &vm, NULL) < 0 || !vm)
        return json_pack("{s:s}", "name", name);
    json_t *o = render_vm_json(vm);
    vmctl_vm_info_free(vm);
    return o;
}

int cli_vm_each(cli *c, int (*act)(cli *c, const char *name, void *userdata, vmctl_error **reterr),
                void *userdata, const char *done, bool destroys)
{
    size_t n = c->n_args, n_failed = 0;
    int last = EXIT_OK;
    json_t *results = n > 1 && c->json ? json_array() : NULL;
    for (size_t i = 0; i < n; i++) {
        const char *name = c->args[i];
        vmctl_error *e = NULL;
        if (act(c, name, userdata, &e) < 0) {
            n_failed++;
            if (!e)
                vmctl_error_new(&e, VMCTL_E_INTERNAL, EIO, "VM '%s': failed", name);
            if (results) {
                json_t *doc = render_error_json(e);
                json_object_set_new(doc, "name", json_string(name));
                json_array_append_new(results, doc);
                vmctl_error_free(e);
            } else {
                last = render_error(c, e);
            }
            continue;
        }
        if (results)
            json_array_append_new(results, vm_result_json(c, name, destroys));
        else if (c->json)
            last = render_json(vm_result_json(c, name, destroys));
        else if (printf("%s VM '%s'\n", done, name) < 0 || fflush(stdout) != 0)
            last = EXIT_ERROR;
    }
    if (results && render_json(results) != EXIT_OK)
        return EXIT_ERROR;
    if (n > 1 && n_failed && !c->json) {
        render_clear_progress(c);
        fprintf(stderr, "%zu of %zu VMs failed\n", n_failed, n);
    }
    return n_failed ? EXIT_ERROR : last;
}

struct simple_action {
    int (*action)(vmctl_ctx *, const char *, vmctl_error **);
};

static int simple_act(cli *c, const char *name, void *userdata, vmctl_error **reterr)
{
    struct simple_action *a = userdata;
    return a->action(c->ctx, name, reterr);
}

int cli_vm_action(cli *c, int argc, char **argv,
                  int (*action)(vmctl_ctx *, const char *, vmctl_error **), const char *done)
{
    int r;
    vmctl_ctx *ctx = cli_open_no_options(c, argc, argv, 1, SIZE_MAX, "NAME", &r);
    if (!ctx)
        return r;
    struct simple_action a = {action};
    return cli_vm_each(c, simple_act, &a, done, false);
}

int cli_finish_stdout(cli *c, int r)
{
    /* A full disk, a closed pipe without SIGPIPE, /dev/full: output that never arrived is a
     * failure, not a success that printed nothing. */
    errno = 0;
    bool bad = fflush(stdout) != 0 || ferror(stdout);
    int err = errno ? errno : render_stdout_errno;
    if (fclose(stdout) != 0 && !bad) {
        bad = true;
        err = errno;
    }
    if (!bad)
        return r;
    vmctl_error *e = NULL;
    vmctl_error_new(&e, VMCTL_E_IO, err ? err : EIO, "cannot write to standard output");
    vmctl_error_set_help(e, "Check where standard output goes: the disk may be full, or the "
                            "reader gone; run the command again with its output elsewhere");
    c->json = false; /* stdout is what failed: the error goes to stderr */
    render_error(c, e);
    return r == EXIT_OK ? EXIT_ERROR : r;
}

/* --- signals --- */

volatile sig_atomic_t cli_interrupted = 0;
static const int caught_signals[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};
static struct sigaction saved_actions[ELEMENTSOF(caught_signals)];
static bool signals_caught;

static void on_signal(int sig)
{
    cli_interrupted = sig;
}

void cli_catch_signals(bool reset_after_first)
{
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    /* No SA_RESTART: blocking calls return EINTR so loops notice the flag. With
     * reset_after_first, a second signal has its default effect (a way out of a stuck wait). */
    sa.sa_flags = reset_after_first ? SA_RESETHAND : 0;
    for (size_t i = 0; i < ELEMENTSOF(caught_signals); i++)
        sigaction(caught_signals[i], &sa, signals_caught ? NULL : &saved_actions[i]);
    signals_caught = true;
}

void cli_restore_signals(void)
{
    if (!signals_caught)
        return;
    for (size_t i = 0; i < ELEMENTSOF(caught_signals); i++)
        sigaction(caught_signals[i], &saved_actions[i], NULL);
    signals_caught = false;
}

int cli_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void cli_interrupt_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGQUIT);
}
