/* SPDX-License-Identifier: MIT */
/* vmctl image build-default [--force] | list | pull | import | inspect | rm | prune | convert */
#include <stdarg.h>
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
    "  pull URL [--name N] [--sha256 HEX]   download an image into the cache\n"
    "  import PATH [--name N]    copy a local image into the cache\n"
    "  inspect NAME|PATH         format, virtual size, backing file\n"
    "  rm NAME [--force]         remove a cached image\n"
    "  prune [--all]             remove leftovers of interrupted pulls (--all: unused images)\n"
    "  convert SRC DST --format F   convert an image with qemu-img\n"
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

const char cmd_image_pull_help[] =
    "Usage: vmctl image pull URL [--name N] [--sha256 HEX]\n"
    "\n"
    "Download a disk image (http://, https:// or file://) into the cache. With --sha256 the\n"
    "downloaded bytes must have that SHA-256 (vm_manager::image::checksum_mismatch otherwise).\n"
    "Files compressed with zstd or xz are decompressed. The format is detected from the image's\n"
    "header and confirmed with qemu-img. The image appears in the cache only once it is complete\n"
    "and verified; pulling the same URL again is served from the cache. The name defaults to the\n"
    "URL's file name without its extensions. On a terminal a progress bar shows on stderr.\n"
    "\n"
    "Options:\n"
    "      --name N        name in the cache\n"
    "      --sha256 HEX    expected SHA-256 of the downloaded file\n"
    "  -h, --help          show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl image pull https://example.org/debian-12.qcow2 --name debian12\n"
    "  vmctl image pull file:///srv/images/alpine.raw.zst --sha256 3f1c...\n";

const char cmd_image_import_help[] =
    "Usage: vmctl image import PATH [--name N]\n"
    "\n"
    "Copy a local disk image into the cache (a reflink where the filesystem supports it, else\n"
    "its data only: holes stay holes). Its format (qcow2, raw, vmdk, vhdx, vdi, vpc, iso) is\n"
    "detected from its header and confirmed with qemu-img; its SHA-256 is recorded. An image\n"
    "that names other files (a backing file, an external data file, vmdk extents) is refused\n"
    "(vm_manager::image::unsafe). On a terminal a progress bar shows on stderr; Ctrl-C leaves\n"
    "nothing behind.\n"
    "\n"
    "Options:\n"
    "      --name N    name in the cache (default: the file name without extensions)\n"
    "  -h, --help      show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl image import ./debian12.raw --name debian12\n";

const char cmd_image_inspect_help[] =
    "Usage: vmctl image inspect NAME|PATH\n"
    "\n"
    "Show an image's format, virtual size, size on disk and backing file. NAME is a cached\n"
    "image; anything else is read as a path. With --json one object with at least format,\n"
    "virtual_size and backing_file.\n"
    "\n"
    "Options:\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl image inspect debian12\n"
    "  vmctl image inspect ~/.local/share/vmctl/vms/web/disk.qcow2 --json\n";

const char cmd_image_rm_help[] =
    "Usage: vmctl image rm NAME [--force]\n"
    "\n"
    "Remove a cached image. An image that VMs were created from is refused unless --force\n"
    "(their disks would lose their base).\n"
    "\n"
    "Options:\n"
    "  -f, --force    remove it even when VMs use it\n"
    "  -h, --help     show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl image rm debian12\n";

const char cmd_image_prune_help[] =
    "Usage: vmctl image prune [--all]\n"
    "\n"
    "Remove what interrupted pulls and imports left in the cache; with --all also every cached\n"
    "image no VM was created from (the default guest stays).\n"
    "\n"
    "Options:\n"
    "      --all     also remove unused images\n"
    "  -h, --help    show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl image prune\n";

const char cmd_image_convert_help[] =
    "Usage: vmctl image convert SRC DST --format F\n"
    "\n"
    "Convert an image (a cached NAME or a path) to DST in format F (qcow2, raw, vmdk, vdi, vhdx,\n"
    "vpc) with qemu-img convert. DST appears only once complete.\n"
    "\n"
    "Options:\n"
    "  -O, --format F    the target format\n"
    "  -h, --help        show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl image convert debian12 /tmp/debian12.qcow2 --format qcow2\n";

static int image_build_default(cli *c, int argc, char **argv);
static int image_list(cli *c, int argc, char **argv);
static int image_pull(cli *c, int argc, char **argv);
static int image_import(cli *c, int argc, char **argv);
static int image_inspect(cli *c, int argc, char **argv);
static int image_rm(cli *c, int argc, char **argv);
static int image_prune(cli *c, int argc, char **argv);
static int image_convert(cli *c, int argc, char **argv);

static const cli_command subcommands[] = {
    {"build-default", image_build_default, "build the default guest from Debian packages",
     cmd_image_build_default_help, NULL},
    {"list", image_list, "list the images", cmd_image_list_help, NULL},
    {"pull", image_pull, "download an image into the cache", cmd_image_pull_help, NULL},
    {"import", image_import, "copy a local image into the cache", cmd_image_import_help, NULL},
    {"inspect", image_inspect, "show an image's format and sizes", cmd_image_inspect_help, NULL},
    {"rm", image_rm, "remove a cached image", cmd_image_rm_help, NULL},
    {"prune", image_prune, "remove leftovers and unused images", cmd_image_prune_help, NULL},
    {"convert", image_convert, "convert an image with qemu-img", cmd_image_convert_help, NULL},
};

const cli_command *image_subcommand_at(size_t i)
{
    return i < ELEMENTSOF(subcommands) ? &subcommands[i] : NULL;
}

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
        return cli_usage_error(c, "missing SUBCOMMAND (build-default, list, pull, import, "
                                  "inspect, rm, prune or convert)");

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

/* An image as one element of `image list --json` (and the result of build-default). */
static json_t *list_json(const vmctl_image_info *i)
{
    return json_pack("{s:s, s:s, s:I, s:s}", "name", i->name ? i->name : "", "format",
                     i->format ? i->format : "", "size", (json_int_t)i->size, "path",
                     i->path ? i->path : "");
}

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
    int r;
    c->home_create = true;
    vmctl_ctx *ctx = cli_open_with_args(c, 0, 0, "", &r);
    if (!ctx)
        return r;

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
        json_t *o2 = found ? list_json(&img) : json_pack("{s:s}", "name", "default");
        vmctl_image_info_clear(&img);
        return render_json(o2);
    }
    if (found) {
        char size[32];
        printf("Default guest ready in %.1f s: %s (%s, %s)\n", secs, img.path ? img.path : "-",
               img.format ? img.format : "-", render_size(img.size, size, sizeof(size)));
    } else {
        printf("Default guest ready in %.1f s\n", secs);
    }
    vmctl_image_info_clear(&img);
    return EXIT_OK;
}

/* --- list --- */

static int image_list(cli *c, int argc, char **argv)
{
    int r;
    vmctl_ctx *ctx = cli_open_no_options(c, argc, argv, 0, 0, "", &r);
    if (!ctx)
        return r;

    vmctl_image_info *list = NULL;
    size_t n = 0;
    vmctl_error *e = NULL;
    if (vmctl_image_list(ctx, &list, &n, &e) < 0)
        return render_error(c, e);

    if (c->json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, list_json(&list[i]));
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

/* --- pull, import, inspect, rm, prune, convert --- */

static json_t *info_json(const vmctl_image_info *i)
{
    json_t *o = json_pack("{s:s?, s:s, s:I, s:s, s:I, s:s?}", "name", i->name, "format",
                          i->format ? i->format : "", "size", (json_int_t)i->size, "path",
                          i->path ? i->path : "", "virtual_size", (json_int_t)i->virtual_size,
                          "backing_file", i->backing_file);
    if (o && i->sha256)
        json_object_set_new(o, "sha256", json_string(i->sha256));
    if (o && i->source)
        json_object_set_new(o, "source", json_string(i->source));
    return o;
}

static void print_info(const vmctl_image_info *i)
{
    char size[32], vsize[32];
    if (i->name)
        printf("name:          %s\n", i->name);
    printf("format:        %s\n", i->format ? i->format : "-");
    printf("virtual size:  %s (%llu bytes)\n", render_size(i->virtual_size, vsize, sizeof(vsize)),
           (unsigned long long)i->virtual_size);
    printf("size on disk:  %s\n", render_size(i->size, size, sizeof(size)));
    printf("path:          %s\n", i->path ? i->path : "-");
    printf("backing file:  %s\n", i->backing_file ? i->backing_file : "-");
    if (i->sha256)
        printf("sha256:        %s\n", i->sha256);
    if (i->source)
        printf("source:        %s\n", i->source);
}

/* The result of pull, import, inspect and convert, then info cleared: with --json its object
 * (plus "cached" for pull, when cached >= 0); else the line fmt... " (FORMAT, SIZE virtual)", or
 * the inspect lines when fmt is NULL. */
static int image_done(cli *c, vmctl_image_info *info, int cached, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int image_done(cli *c, vmctl_image_info *info, int cached, const char *fmt, ...)
{
    if (c->json) {
        json_t *j = info_json(info);
        if (cached >= 0)
            json_object_set_new(j, "cached", json_boolean(cached));
        vmctl_image_info_clear(info);
        return render_json(j);
    }
    if (fmt) {
        char size[32];
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf(" (%s, %s virtual)\n", info->format,
               render_size(info->virtual_size, size, sizeof(size)));
    } else {
        print_info(info);
    }
    vmctl_image_info_clear(info);
    return EXIT_OK;
}

/* SIGINT/SIGTERM/SIGHUP/SIGQUIT during a pull or import cancel it: the library removes its
 * temporary directory and returns; the command then exits 128+N as the signal would have. */
static void begin_cancellable(vmctl_ctx *ctx)
{
    cli_interrupted = 0;
    cli_catch_signals(true);
    vmctl_ctx_set_cancel(ctx, &cli_interrupted);
}

static int end_cancellable(vmctl_ctx *ctx, int status)
{
    vmctl_ctx_set_cancel(ctx, NULL);
    cli_restore_signals();
    return cli_interrupted ? 128 + cli_interrupted : status;
}

enum { OPT_NAME = 0x100, OPT_SHA256, OPT_ALL, OPT_FORCE, OPT_FORMAT };

static const struct option pull_options[] = {
    {"name", required_argument, NULL, OPT_NAME},
    {"sha256", required_argument, NULL, OPT_SHA256},
    {},
};

static int image_pull(cli *c, int argc, char **argv)
{
    const char *name = NULL, *sha = NULL;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", pull_options)) != -1) {
        if (o == OPT_NAME)
            name = optarg;
        else if (o == OPT_SHA256)
            sha = optarg;
        else
            return c->exit_code;
    }
    int r;
    c->home_create = true;
    vmctl_ctx *ctx = cli_open_with_args(c, 1, 1, "URL", &r);
    if (!ctx)
        return r;
    struct progress p = {.c = c, .tty = !c->json && isatty(STDERR_FILENO), .percent = -2};
    vmctl_error *e = NULL;
    vmctl_image_info info = {};
    bool cached = false;
    begin_cancellable(ctx);
    r = vmctl_image_pull(ctx, c->args[0], name, sha, on_progress, &p, &info, &cached, &e);
    render_clear_progress(c);
    if (r < 0)
        return end_cancellable(ctx, render_error(c, e));
    end_cancellable(ctx, 0);
    return image_done(c, &info, cached, "%s image '%s'", cached ? "Cached" : "Pulled", info.name);
}

static const struct option import_options[] = {
    {"name", required_argument, NULL, OPT_NAME},
    {},
};

static int image_import(cli *c, int argc, char **argv)
{
    const char *name = NULL;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", import_options)) != -1) {
        if (o != OPT_NAME)
            return c->exit_code;
        name = optarg;
    }
    int r;
    c->home_create = true;
    vmctl_ctx *ctx = cli_open_with_args(c, 1, 1, "PATH", &r);
    if (!ctx)
        return r;
    struct progress p = {.c = c, .tty = !c->json && isatty(STDERR_FILENO), .percent = -2};
    vmctl_error *e = NULL;
    vmctl_image_info info = {};
    begin_cancellable(ctx);
    r = vmctl_image_import(ctx, c->args[0], name, on_progress, &p, &info, &e);
    render_clear_progress(c);
    if (r < 0)
        return end_cancellable(ctx, render_error(c, e));
    end_cancellable(ctx, 0);
    return image_done(c, &info, -1, "Imported image '%s'", info.name);
}

static int image_inspect(cli *c, int argc, char **argv)
{
    int r;
    vmctl_ctx *ctx = cli_open_no_options(c, argc, argv, 1, 1, "NAME|PATH", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    vmctl_image_info info = {};
    if (vmctl_image_inspect(ctx, c->args[0], &info, &e) < 0)
        return render_error(c, e);
    return image_done(c, &info, -1, NULL);
}

static const struct option rm_options[] = {
    {"force", no_argument, NULL, 'f'},
    {},
};

static int image_rm(cli *c, int argc, char **argv)
{
    bool force = false;
    int o;
    while ((o = cli_getopt(c, argc, argv, "f", rm_options)) != -1) {
        if (o != 'f')
            return c->exit_code;
        force = true;
    }
    int r;
    vmctl_ctx *ctx = cli_open_with_args(c, 1, 1, "NAME", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    if (vmctl_image_remove(ctx, c->args[0], force, &e) < 0)
        return render_error(c, e);
    if (c->json)
        return render_json(json_pack("{s:s, s:b}", "name", c->args[0], "removed", 1));
    printf("Removed image '%s'\n", c->args[0]);
    return EXIT_OK;
}

static const struct option prune_options[] = {
    {"all", no_argument, NULL, OPT_ALL},
    {},
};

static int image_prune(cli *c, int argc, char **argv)
{
    bool all = false;
    int o;
    while ((o = cli_getopt(c, argc, argv, "", prune_options)) != -1) {
        if (o != OPT_ALL)
            return c->exit_code;
        all = true;
    }
    int r;
    vmctl_ctx *ctx = cli_open_with_args(c, 0, 0, "", &r);
    if (!ctx)
        return r;
    vmctl_error *e = NULL;
    char **removed = NULL;
    if (vmctl_image_prune(ctx, all, &removed, &e) < 0)
        return render_error(c, e);
    if (c->json) {
        json_t *a = json_array();
        for (char **p = removed; p && *p; p++)
            json_array_append_new(a, json_string(*p));
        for (char **p = removed; p && *p; p++)
            free(*p);
        free(removed);
        return render_json(json_pack("{s:o}", "removed", a));
    }
    size_t n = 0;
    for (char **p = removed; p && *p; p++, n++) {
        printf("Removed %s\n", *p);
        free(*p);
    }
    free(removed);
    if (!n)
        printf("Nothing to prune\n");
    return EXIT_OK;
}

static const struct option convert_options[] = {
    {"format", required_argument, NULL, 'O'},
    {},
};

static int image_convert(cli *c, int argc, char **argv)
{
    const char *format = NULL;
    int o;
    while ((o = cli_getopt(c, argc, argv, "O:", convert_options)) != -1) {
        if (o != 'O')
            return c->exit_code;
        format = optarg;
    }
    int r = cli_expect_args(c, 2, 2, "SRC DST");
    if (r)
        return r;
    if (!format)
        return cli_usage_error(c, "missing --format (qcow2, raw, vmdk, vdi, vhdx or vpc)");
    c->home_create = true;
    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;
    vmctl_error *e = NULL;
    vmctl_image_info info = {};
    if (vmctl_image_convert(ctx, c->args[0], c->args[1], format, &info, &e) < 0)
        return render_error(c, e);
    return image_done(c, &info, -1, "Converted to %s", info.path);
}
