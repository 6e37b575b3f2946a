/* SPDX-License-Identifier: MIT */
/* vmctl kdl fmt [--kdl-version V] FILE: a KDL document in canonical form. */
#include "cli.h"
#include "render.h"

const char cmd_kdl_help[] =
    "Usage: vmctl kdl SUBCOMMAND\n"
    "\n"
    "KDL tools: the parser vmctl reads VMFile.kdl with, on its own.\n"
    "\n"
    "Subcommands:\n"
    "  fmt [--kdl-version V] FILE   print FILE in canonical form\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help (vmctl kdl fmt --help for the subcommand)\n"
    "\n"
    "Examples:\n"
    "  vmctl kdl fmt VMFile.kdl\n";

static const char cmd_kdl_fmt_help[] =
    "Usage: vmctl kdl fmt [--kdl-version V] FILE\n"
    "\n"
    "Parse the KDL document FILE (`-` reads standard input) and print it in the canonical form\n"
    "of the KDL test suites: comments and blank lines dropped, one node per line indented by 4\n"
    "spaces, arguments in order, properties sorted by key with only the rightmost of duplicate\n"
    "keys kept, children blocks only when they have children, strings unquoted when they are\n"
    "valid identifiers (else quoted with escapes), numbers in decimal (hex, octal and binary\n"
    "converted, exponents written E+N/E-N).\n"
    "\n"
    "The document is read as KDL v2, or as KDL v1 when it starts with `/- kdl-version 1`. With\n"
    "--kdl-version auto, a document without that marker that is not valid KDL v2 is read as\n"
    "KDL v1 (the two versions never give the same text different meanings).\n"
    "\n"
    "A syntax error exits 1 with vm_manager::vmfile::parse_failed, naming FILE:LINE:COLUMN and\n"
    "showing the line with a caret under the column. With --json, the result is\n"
    "{\"canonical\": TEXT}.\n"
    "\n"
    "Options:\n"
    "      --kdl-version V   marker (the default: the version marker, else v2), auto (the\n"
    "                        marker, else v2 falling back to v1), 1 or 2\n"
    "  -h, --help            show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl kdl fmt VMFile.kdl\n"
    "  vmctl kdl fmt --kdl-version auto old-v1.kdl\n"
    "  vmctl kdl fmt --json - < VMFile.kdl | jq -r .canonical\n";

static int kdl_fmt(cli *c, int argc, char **argv);

static const cli_command subcommands[] = {
    {"fmt", kdl_fmt, "print a KDL document in canonical form", cmd_kdl_fmt_help, NULL},
};

const cli_command *kdl_subcommand_at(size_t i)
{
    return i < ELEMENTSOF(subcommands) ? &subcommands[i] : NULL;
}

int cmd_kdl(cli *c, int argc, char **argv)
{
    int idx = argc;
    if (cli_getopt_subcommand(c, argc, argv, NULL, &idx) != -1)
        return c->exit_code;
    if (idx >= argc)
        return cli_usage_error(c, "missing SUBCOMMAND (fmt)");
    const cli_command *sub = NULL;
    for (size_t i = 0; i < ELEMENTSOF(subcommands); i++)
        if (streq(subcommands[i].name, argv[idx]))
            sub = &subcommands[i];
    if (!sub)
        return cli_usage_error(c, "unknown kdl subcommand '%s'", argv[idx]);
    c->cmd = sub;
    c->cmd_path = "kdl fmt";
    return sub->fn(c, argc - idx, argv + idx);
}

/* All of standard input; NULL on a read error (errno set). */
static char *read_stdin(size_t *ret_len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    for (;;) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(STDIN_FILENO, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int saved = errno;
            free(buf);
            errno = saved;
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *ret_len = n;
    return buf;
}

enum {
    OPT_KDL_VERSION = 0x100,
};

static int kdl_fmt(cli *c, int argc, char **argv)
{
    static const struct option options[] = {
        {"kdl-version", required_argument, NULL, OPT_KDL_VERSION},
        {},
    };
    vmctl_kdl_version version = VMCTL_KDL_VERSION_MARKER;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", options)) != -1) {
        if (o == CLI_OPT_EXIT)
            return c->exit_code;
        if (o == OPT_KDL_VERSION) {
            if (streq(optarg, "marker"))
                version = VMCTL_KDL_VERSION_MARKER;
            else if (streq(optarg, "auto"))
                version = VMCTL_KDL_VERSION_FALLBACK;
            else if (streq(optarg, "1"))
                version = VMCTL_KDL_VERSION_1;
            else if (streq(optarg, "2"))
                version = VMCTL_KDL_VERSION_2;
            else
                return cli_invalid_value(c, "--kdl-version", optarg, "marker, auto, 1 or 2");
        }
    }
    int r = cli_expect_args(c, 1, 1, "FILE");
    if (r)
        return r;

    const char *path = c->args[0];
    vmctl_error *e = NULL;
    cleanup_free char *out = NULL;
    if (streq(path, "-")) {
        size_t len = 0;
        cleanup_free char *data = read_stdin(&len);
        if (!data) {
            vmctl_error_new(&e, VMCTL_E_IO, errno, "cannot read standard input");
            return render_error(c, e);
        }
        r = vmctl_kdl_format_buffer("<stdin>", data, len, version, &out, &e);
    } else {
        r = vmctl_kdl_format(path, version, &out, &e);
    }
    if (r < 0)
        return render_error(c, e);

    if (c->json)
        return render_json(json_pack("{s:o}", "canonical", render_json_bytes(out, strlen(out))));
    if (cli_write_all(STDOUT_FILENO, out, strlen(out)) < 0) {
        vmctl_error_new(&e, VMCTL_E_IO, errno, "cannot write to standard output");
        return render_error(c, e);
    }
    return EXIT_OK;
}
