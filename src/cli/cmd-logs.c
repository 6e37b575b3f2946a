/* SPDX-License-Identifier: MIT */
/* vmctl logs NAME [--follow] [--tail N] [--qemu] */
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#include "cli.h"
#include "render.h"

const char cmd_logs_help[] =
    "Usage: vmctl logs NAME [--follow] [--tail N] [--qemu | --provision]\n"
    "\n"
    "Print what the VM wrote to its serial console (kernel messages, init, the agent), or with\n"
    "--qemu what QEMU itself wrote to its stderr. A VM that never ran has an empty log.\n"
    "\n"
    "With --json, print {name, log, path, content}; --follow cannot be combined with --json.\n"
    "\n"
    "Options:\n"
    "  -f, --follow    keep printing what is appended, until Ctrl-C or the VM stops running\n"
    "  -n, --tail N    start with the last N lines only\n"
    "      --qemu      QEMU's log instead of the console's\n"
    "      --provision the output of the VMFile provisioners (vmctl up/provision)\n"
    "  -h, --help      show this help\n"
    "\n"
    "Examples:\n"
    "  vmctl logs web\n"
    "  vmctl logs web --tail 20 --follow\n"
    "  vmctl logs web --qemu\n";

enum { OPT_QEMU = 0x100, OPT_PROVISION };

static const struct option options[] = {
    {"follow", no_argument, NULL, 'f'},
    {"tail", required_argument, NULL, 'n'},
    {"qemu", no_argument, NULL, OPT_QEMU},
    {"provision", no_argument, NULL, OPT_PROVISION},
    {},
};

/* Offset where the last n lines of fd begin. */
static off_t tail_offset(int fd, off_t size, unsigned n)
{
    char buf[65536];
    unsigned count = 0;
    off_t end = size;
    if (n == 0)
        return size;
    while (end > 0) {
        off_t start = end > (off_t)sizeof(buf) ? end - (off_t)sizeof(buf) : 0;
        ssize_t k = pread(fd, buf, (size_t)(end - start), start);
        if (k <= 0)
            return 0;
        for (ssize_t i = k - 1; i >= 0; i--) {
            off_t pos = start + i;
            if (buf[i] != '\n' || pos == size - 1)
                continue; /* a final newline ends the last line, it does not start one */
            if (++count == n)
                return pos + 1;
        }
        end = start;
    }
    return 0;
}

/* Copy fd from *off to its current end to stdout (or into a memstream). */
static int copy_out(int fd, off_t *off, FILE *into)
{
    char buf[65536];
    for (;;) {
        ssize_t k = pread(fd, buf, sizeof(buf), *off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return 0;
        *off += k;
        if (into) {
            if (fwrite(buf, 1, (size_t)k, into) != (size_t)k)
                return -EIO;
        } else if (cli_write_all(STDOUT_FILENO, buf, (size_t)k) < 0) {
            return -EPIPE;
        }
    }
}

static bool vm_is_live(cli *c, const char *name)
{
    vmctl_vm_info *vm = NULL;
    if (vmctl_vm_get(c->ctx, name, &vm, NULL) < 0 || !vm)
        return false;
    bool live = vm->state == VMCTL_VM_RUNNING || vm->state == VMCTL_VM_PAUSED;
    vmctl_vm_info_free(vm);
    return live;
}

int cmd_logs(cli *c, int argc, char **argv)
{
    bool follow = false, qemu = false, provision = false;
    unsigned tail = 0;
    bool have_tail = false;
    int o;

    while ((o = cli_getopt(c, argc, argv, "fn:", options)) != -1) {
        switch (o) {
        case 'f':
            follow = true;
            break;
        case 'n':
            if (cli_parse_uint(c, "--tail", optarg, 0, &tail) < 0)
                return EXIT_ERROR;
            have_tail = true;
            break;
        case OPT_QEMU:
            qemu = true;
            break;
        case OPT_PROVISION:
            provision = true;
            break;
        default:
            return c->exit_code;
        }
    }
    int r = cli_expect_args(c, 1, 1, "NAME");
    if (r)
        return r;
    if (follow && c->json)
        return cli_usage_error(c, "--follow cannot be combined with --json");
    const char *name = c->args[0];
    const char *which = provision ? "provision" : qemu ? "qemu" : "console";

    vmctl_ctx *ctx = cli_ctx(c);
    if (!ctx)
        return EXIT_ERROR;

    cleanup_free char *path = NULL;
    vmctl_error *e = NULL;
    if ((provision ? vmctl_provision_log_path(ctx, name, &path, &e)
                   : vmctl_vm_log_path(ctx, name, which, &path, &e)) < 0)
        return render_error(c, e);

    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno != ENOENT) {
        vmctl_error_new(&e, VMCTL_E_IO, errno, "cannot open %s log '%s'", which, path);
        vmctl_error_add_detail(e, "path", path);
        return render_error(c, e);
    }

    off_t off = 0;
    if (fd >= 0 && have_tail) {
        struct stat st;
        if (fstat(fd, &st) == 0)
            off = tail_offset(fd, st.st_size, tail);
    }

    if (c->json) {
        cleanup_free char *data = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&data, &len);
        if (!m)
            return EXIT_ERROR;
        r = fd >= 0 ? copy_out(fd, &off, m) : 0;
        fclose(m);
        if (r < 0) {
            vmctl_error_new(&e, VMCTL_E_IO, -r, "cannot read %s log '%s'", which, path);
            return render_error(c, e);
        }
        return render_json(json_pack("{s:s, s:s, s:s, s:o}", "name", name, "log", which, "path",
                                     path, "content", render_json_bytes(data ? data : "", len)));
    }

    if (fd >= 0 && copy_out(fd, &off, NULL) < 0)
        return EXIT_ERROR;
    if (!follow)
        return EXIT_OK;

    /* Follow: poll the file a few times a second and the VM's state about once a second. */
    cli_catch_signals(false);
    int ticks = 0;
    bool live = true;
    while (!cli_interrupted) {
        poll(NULL, 0, 200);
        if (fd < 0) {
            fd = open(path, O_RDONLY | O_CLOEXEC);
            off = 0;
        }
        if (fd >= 0) {
            struct stat st, cur;
            /* A new file at the path (the VM was started again): drain the old one, switch. */
            if (stat(path, &cur) == 0 && fstat(fd, &st) == 0 &&
                (cur.st_ino != st.st_ino || cur.st_dev != st.st_dev)) {
                copy_out(fd, &off, NULL);
                close(fd);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                off = 0;
                if (fd < 0)
                    continue;
            }
            if (fstat(fd, &st) == 0 && st.st_size < off)
                off = 0; /* truncated: the VM was started again */
            if (copy_out(fd, &off, NULL) < 0)
                break;
        }
        if (!live)
            break; /* that was the final drain */
        if (ticks++ % 5 == 0 && !vm_is_live(c, name))
            live = false;
    }
    cli_restore_signals();
    return EXIT_OK;
}
