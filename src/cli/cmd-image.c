/* SPDX-License-Identifier: MIT */
/* vmctl image build-default [--force] | list */
#include <sys/ioctl.h>
#include <time.h>

#include "cli.h"
#include "render.h"

const char cmd_image_help[] =
    "Usage: vmctl image SUBCOMMAND\n"
    "\n"
    "Manage the image cache.\n"
    "\n"
    "Subcommands:\n"
    "  build-default [--force]   build the default guest from Debian packages\n"
    "  list                      list the images\n"
    "  pull, import, inspect, rm, convert: planned, not implemented yet\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help (vmctl image SUBCOMMAND --help for a subcommand)\n"
    "\n"
    "Examples:\n"
    "  vmctl image build-default\n"
    "  vmctl image list --json\n";

const char cmd_image_build_default_help[] =
    "Usage: vmctl image build-default [--force]\n"
    "\n"
    "Build the default guest: the stock Debian cloud kernel, a busybox initramfs with the kernel\n"
    "modules it needs and vmctl-agent, all from Debian packages (nothing else is downloaded).\n"
    "VMs created without --image or --kernel boot it. When its inputs are unchanged the build\n"
    "is skipped unless --force. On a terminal a progress line shows on stderr.\n"
    "\n"
    "With --json, print the image's {name, format, size, path}.\n"
    "\n"
    "Options:\n"
    "      --force    rebuild even when the inputs are unchanged\n"
    "  -h, --help     show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl image build-default\n"
    "  vmctl image build-default --force\n";

const char cmd_image_list_help[] =
    "Usage: vmctl image list\n"
    "\n"
    "List the images in the cache: name, format (\"kernel+initrd\" for the default guest, qcow2,\n"
    "raw, ...), size on disk and path. With --json, an array of {name, format, size, path}\n"
    "(size in bytes).\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl image list\n"
    "  vmctl image list --json\n";

static int image_build_default(cli *c, int argc, char **argv);
static int image_list(cli *c, int argc, char **argv);

#define PLANNED_SUB(n)                                                                             \
    {                                                                                              \
        n, NULL, NULL, NULL, "not implemented yet"                                                 \
    }

static const cli_command subcommands[] = {
    {"build-default", image_build_default, "build the default guest from Debian packages",
     cmd_image_build_default_help, NULL},
    {"list", image_list, "list the images", cmd_image_list_help, NULL},
    PLANNED_SUB("pull"),
    PLANNED_SUB("import"),
    PLANNED_SUB("inspect"),
    PLANNED_SUB("rm"),
    PLANNED_SUB("convert"),
};

const cli_command *image_find_subcommand(const char *name)
{
    for (size_t i = 0; i < ELEMENTSOF(subcommands); i++)
        if (streq(subcommands[i].name, name))
            return &subcommands[i];
    return NULL;
}

int cmd_image(cli *c, int argc, char **argv)
{
    int idx = argc;
    if (cli_getopt_subcommand(c, argc, argv, NULL, &idx) != -1)
        return c->exit_code;
    if (idx >= argc)
        return cli_usage_error(c, "missing SUBCOMMAND (build-default or list)");

    const cli_command *sub = image_find_subcommand(argv[idx]);
    if (!sub)
        return cli_usage_error(c, "unknown image subcommand '%s'", argv[idx]);
    static char path[64];
    snprintf(path, sizeof(path), "image %s", sub->name);
    if (!sub->fn)
        return cli_not_implemented(c, path);
    c->cmd = sub;
    c->cmd_path = path;
    return sub->fn(c, argc - idx, argv + idx);
}

/* --- build-default --- */

struct progress {
    cli *c;
    bool tty;
    char step[128];
    int percent;
    uint64_t last_usec;
    unsigned spin;
};

static uint64_t mono_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int term_columns(void)
{
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 20)
        return ws.ws_col;
    return 80;
}

static void on_progress(void *userdata, const char *step, uint64_t done, uint64_t total)
{
    struct progress *p = userdata;
    if (!p->tty || !step)
        return;

    int percent = total ? (int)(done >= total ? 100 : done * 100 / total) : -1;
    uint64_t now = mono_usec();
    bool same_step = strncmp(p->step, step, sizeof(p->step) - 1) == 0;
    /* Redraw on a new step, a new percentage, or a few times a second for the spinner. */
    if (same_step && percent == p->percent && now - p->last_usec < 150000)
        return;
    snprintf(p->step, sizeof(p->step), "%s", step);
    p->percent = percent;
    p->last_usec = now;

    int cols = term_columns();
    char line[512];
    if (percent >= 0) {
        int barw = 24;
        char bar[32];
        int fill = percent * barw / 100;
        for (int i = 0; i < barw; i++)
            bar[i] = i < fill ? '#' : '-';
        bar[barw] = '\0';
        snprintf(line, sizeof(line), "[%s] %3d%%  %s", bar, percent, step);
    } else {
        static const char spin[] = "|/-\\";
        snprintf(line, sizeof(line), "%c %s", spin[p->spin++ % 4], step);
    }
    /* Never wrap: a wrapped line cannot be overwritten with \r. */
    if ((int)strlen(line) > cols - 1)
        line[cols - 1] = '\0';
    fprintf(stderr, "\r\033[K%s", line);
    fflush(stderr);
    p->c->progress_active = true;
}

static const struct option build_options[] = {
    {"force", no_argument, NULL, 0x100},
    {},
};

static bool find_default_image(vmctl_ctx *ctx, vmctl_image_info *ret)
{
    vmctl_image_info *list = NULL;
    size_t n = 0;
    bool found = false;
    if (vmctl_image_list(ctx, &list, &n, NULL) < 0)
        return false;
    for (size_t i = 0; i < n && !found; i++)
        if (list[i].name && streq(list[i].name, "default")) {
            *ret = list[i];
            list[i] = (vmctl_image_info){};
            found = true;
        }
    vmctl_image_info_list_free(list, n);
    return found;
}

static int image_build_default(cli *c, int argc, char **argv)
{
    bool force = false;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", build_options)) != -1) {
        if (o != 0x100)
            return c->exit_code;
        force = true;
    }
    int r = cli_expect_args(c, 0, 0, "");
    if (r)
        return r;

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;

    struct progress p = {.c = c, .tty = !c->json && isatty(STDERR_FILENO), .percent = -2};
    vmctl_error *e = NULL;
    uint64_t t0 = mono_usec();
    r = vmctl_image_build_default(ctx, force, on_progress, &p, &e);
    render_clear_progress(c);
    if (r < 0)
        return render_error(c, e);
    double secs = (double)(mono_usec() - t0) / 1e6;

    vmctl_image_info img = {};
    bool found = find_default_image(ctx, &img);
    if (c->json) {
        json_t *o2 = found ? json_pack("{s:s, s:s, s:I, s:s}", "name", img.name, "format",
                                       img.format ? img.format : "", "size", (json_int_t)img.size,
                                       "path", img.path ? img.path : "")
                           : json_pack("{s:s}", "name", "default");
        free(img.name);
        free(img.format);
        free(img.path);
        return render_json(o2);
    }
    if (found) {
        char size[32];
        printf("Default guest ready in %.1f s: %s (%s, %s)\n", secs, img.path ? img.path : "-",
               img.format ? img.format : "-", render_size(img.size, size, sizeof(size)));
    } else {
        printf("Default guest ready in %.1f s\n", secs);
    }
    free(img.name);
    free(img.format);
    free(img.path);
    return EXIT_OK;
}

/* --- list --- */

static int image_list(cli *c, int argc, char **argv)
{
    if (cli_getopt(c, argc, argv, "", NULL) != -1)
        return c->exit_code;
    int r = cli_expect_args(c, 0, 0, "");
    if (r)
        return r;

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;

    vmctl_image_info *list = NULL;
    size_t n = 0;
    vmctl_error *e = NULL;
    if (vmctl_image_list(ctx, &list, &n, &e) < 0)
        return render_error(c, e);

    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(
                a, json_pack("{s:s, s:s, s:I, s:s}", "name", list[i].name ? list[i].name : "",
                             "format", list[i].format ? list[i].format : "", "size",
                             (json_int_t)list[i].size, "path", list[i].path ? list[i].path : ""));
        vmctl_image_info_list_free(list, n);
        return render_json(a);
    }
    if (n == 0) {
        printf("No images yet. Build the default guest with `vmctl image build-default`.\n");
        vmctl_image_info_list_free(list, n);
        return EXIT_OK;
    }
    table *t = table_new(4, "NAME", "FORMAT", "SIZE", "PATH");
    for (size_t i = 0; i < n; i++) {
        char size[32];
        table_add_row(t, list[i].name, list[i].format, render_size(list[i].size, size, 32),
                      list[i].path);
    }
    table_print(t, stdout);
    table_free(t);
    vmctl_image_info_list_free(list, n);
    return EXIT_OK;
}
