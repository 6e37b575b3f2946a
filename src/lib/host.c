/* SPDX-License-Identifier: MIT */
/* The host: `vmctl doctor`'s checks. The QEMU binary, qemu-img and their accelerators are
 * checked here by name (docs/architecture.md names host.c's doctor checks as QEMU-aware); whether
 * KVM is usable comes from backend.c (kvm_unusable_reason). */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <vmctl/host.h>

#include "arg-check.h"
#include "backend.h"
#include "dl.h"
#include "error.h"
#include "jail.h"
#include "guest.h"
#include "qemu.h"
#include "util/util.h"

extern char **environ;

#define KVM_DEVICE "/dev/kvm"
/* Bound for each helper command doctor runs (qemu --version, qemu -accel help, ...). */
#define HOST_CMD_USEC (3ULL * 1000000ULL)

/* ---------- doctor ---------- */

const char *vmctl_check_status_to_string(vmctl_check_status s)
{
    switch (s) {
    case VMCTL_CHECK_OK:
        return "ok";
    case VMCTL_CHECK_WARN:
        return "warn";
    case VMCTL_CHECK_FAIL:
        return "fail";
    }
    return "unknown";
}

void vmctl_host_check_list_free(vmctl_host_check *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++) {
        free(list[i].name);
        free(list[i].summary);
        free(list[i].help);
    }
    free(list);
}

/* Room for every check below (qemu, qemu-img, kvm, tcg, store, vsock, the tools, the libraries). */
#define MAX_CHECKS 32

typedef struct check_list {
    vmctl_host_check *items; /* MAX_CHECKS entries */
    size_t n;
    bool oom;
} check_list;

static vmctl_host_check *check_add(check_list *l, const char *name, vmctl_check_status status,
                                   char *summary, const char *help)
{
    if (!l->items || l->n >= MAX_CHECKS) {
        free(summary);
        l->oom = true;
        return NULL;
    }
    vmctl_host_check *c = &l->items[l->n++];
    *c = (vmctl_host_check){
        .name = strdup(name),
        .status = status,
        .summary = summary,
        .help = help ? strdup(help) : NULL,
    };
    if (!c->name || !c->summary || (help && !c->help))
        l->oom = true;
    return c;
}

/* Run argv (argv[0] a path) with stdout captured (stderr discarded), bounded by HOST_CMD_USEC.
 * Returns the exit status (>= 0), or -errno when it could not run or timed out. */
static int run_capture(char *const argv[], char **out)
{
    *out = NULL;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -errno;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    pid_t pid = 0;
    int r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (r != 0) {
        close(pfd[0]);
        return -r;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    uint64_t deadline = now_usec() + HOST_CMD_USEC;
    bool timed_out = false;
    while (buf) {
        uint64_t now = now_usec();
        if (now >= deadline) {
            timed_out = true;
            break;
        }
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        int k = poll(&p, 1, (int)((deadline - now) / 1000 + 1));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            continue;
        if (len + 1 >= cap) {
            if (cap >= 1 << 20)
                break; /* enough: we only want the first lines */
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(pfd[0], buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(pfd[0]);
    if (timed_out)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!buf)
        return -ENOMEM;
    buf[len] = 0;
    *out = buf;
    if (timed_out)
        return -ETIMEDOUT;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -EIO;
}

static char *first_line(const char *s)
{
    size_t n = strcspn(s, "\n");
    return strndup(s, n);
}

/* A tool by name: $PATH first, then the sbin directories a non-root $PATH often lacks. */
static char *find_tool(const char *name)
{
    char *p = find_in_path(name);
    if (p)
        return p;
    static const char *const dirs[] = {"/usr/sbin", "/sbin"};
    for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
        p = str_printf("%s/%s", dirs[i], name);
        if (p && is_executable(p))
            return p;
        free(p);
    }
    return NULL;
}

/* A tool's `--version`: its first line, or `status` with the reinstall help when it fails. */
static void check_version(check_list *l, const char *name, const char *path,
                          vmctl_check_status status, const char *package)
{
    cleanup_free char *out = NULL;
    char *argv[] = {(char *)path, "--version", NULL};
    int r = run_capture(argv, &out);
    if (r != 0 || !out || !*out) {
        cleanup_free char *help =
            str_printf("Reinstall it with `apt-get install --reinstall %s`.", package);
        check_add(
            l, name, status,
            str_printf("%s: `--version` failed (%s)", path, r < 0 ? strerror(-r) : "non-zero exit"),
            help ? help : "Reinstall it.");
        return;
    }
    cleanup_free char *line = first_line(out);
    check_add(l, name, VMCTL_CHECK_OK, str_printf("%s: %s", path, line ? line : "?"), NULL);
}

static void check_qemu(check_list *l, const char *qemu)
{
    if (!qemu) {
        const char *env = getenv(QEMU_BINARY_ENV);
        check_add(l, "qemu", VMCTL_CHECK_FAIL,
                  str_printf("'%s' not found%s", env && *env ? env : QEMU_BINARY_DEFAULT,
                             env && *env ? " ($" QEMU_BINARY_ENV ")" : " in $PATH"),
                  "Install QEMU with `apt-get install qemu-system-x86`, or point $VMCTL_QEMU at "
                  "the binary.");
        return;
    }
    check_version(l, "qemu", qemu, VMCTL_CHECK_FAIL, "qemu-system-x86");
}

static void check_qemu_img(check_list *l)
{
    cleanup_free char *img = find_tool("qemu-img");
    if (!img) {
        check_add(l, "qemu-img", VMCTL_CHECK_WARN,
                  strdup("qemu-img not found: disk images, overlays and snapshots need it"),
                  "Install it with `apt-get install qemu-utils`.");
        return;
    }
    check_version(l, "qemu-img", img, VMCTL_CHECK_WARN, "qemu-utils");
}

/* 1: QEMU lists tcg; 0: it does not; -errno: could not ask. */
static int qemu_has_tcg(const char *qemu)
{
    if (!qemu)
        return -ENOENT;
    cleanup_free char *out = NULL;
    char *argv[] = {(char *)qemu, "-accel", "help", NULL};
    int r = run_capture(argv, &out);
    if (r < 0)
        return r;
    if (r != 0 || !out)
        return -EIO;
    for (char *line = out; line && *line;) {
        size_t n = strcspn(line, "\n");
        if (n == 3 && strncmp(line, "tcg", 3) == 0)
            return 1;
        line = line[n] ? line + n + 1 : NULL;
    }
    return 0;
}

static void check_accel(check_list *l, const char *qemu)
{
    cleanup_free char *reason = kvm_unusable_reason();
    int tcg = qemu_has_tcg(qemu);
    bool kvm_ok = !reason;

    if (kvm_ok)
        check_add(l, "kvm", VMCTL_CHECK_OK,
                  str_printf(KVM_DEVICE " usable (KVM API %d)", KVM_API_VERSION), NULL);
    else if (tcg == 1)
        check_add(l, "kvm", VMCTL_CHECK_WARN, str_printf("KVM not usable: %s", reason),
                  "VMs run under TCG, which is slower; on a host with working KVM, `--accel "
                  "auto` (the default) uses it automatically.");
    else
        check_add(l, "kvm", VMCTL_CHECK_FAIL, str_printf("KVM not usable: %s", reason),
                  "Neither KVM nor TCG works, so no VM can run: install QEMU with TCG "
                  "(`apt-get install qemu-system-x86`) or use a host with working KVM.");

    if (tcg == 1)
        check_add(l, "tcg", VMCTL_CHECK_OK, strdup("TCG available (qemu -accel help lists tcg)"),
                  NULL);
    else if (tcg == 0)
        check_add(l, "tcg", kvm_ok ? VMCTL_CHECK_WARN : VMCTL_CHECK_FAIL,
                  strdup("this QEMU is built without TCG"),
                  kvm_ok ? "VMs can use KVM only; `--accel tcg` will not work."
                         : "Install a QEMU with TCG (`apt-get install qemu-system-x86`): with "
                           "neither KVM nor TCG no VM can run.");
    else
        check_add(l, "tcg", kvm_ok ? VMCTL_CHECK_WARN : VMCTL_CHECK_FAIL,
                  str_printf("cannot ask QEMU for its accelerators (%s)",
                             qemu ? strerror(-tcg) : "QEMU not found"),
                  "Install QEMU with `apt-get install qemu-system-x86`.");
}

static void check_store(check_list *l, vmctl_ctx *ctx)
{
    const char *home = ctx ? vmctl_ctx_get_home(ctx) : NULL;
    if (!home) {
        check_add(l, "store", VMCTL_CHECK_FAIL, strdup("no $VMCTL_HOME known"),
                  "Set $VMCTL_HOME or pass `--home DIR`.");
        return;
    }
    struct stat st;
    if (stat(home, &st) < 0) {
        /* not created yet: the nearest existing parent must let us create it */
        cleanup_free char *parent = strdup(home);
        char *slash;
        while (parent && (slash = strrchr(parent, '/'))) {
            *slash = 0;
            const char *p = *parent ? parent : "/";
            if (access(p, F_OK) == 0) {
                bool ok = access(p, W_OK) == 0;
                check_add(l, "store", ok ? VMCTL_CHECK_OK : VMCTL_CHECK_FAIL,
                          ok ? str_printf("'%s' does not exist yet; '%s' is writable", home, p)
                             : str_printf("'%s' cannot be created: '%s' is not writable", home, p),
                          ok ? NULL : "Choose a writable `--home DIR` or fix the permissions.");
                return;
            }
            if (!*parent)
                break;
        }
        check_add(l, "store", VMCTL_CHECK_FAIL, str_printf("'%s' cannot be created", home),
                  "Choose a writable `--home DIR`.");
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        check_add(l, "store", VMCTL_CHECK_FAIL, str_printf("'%s' is not a directory", home),
                  "Point $VMCTL_HOME (or `--home`) at a directory.");
        return;
    }
    /* a real write (root passes access(W_OK) even on a read-only filesystem) */
    int fd = open(home, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    int e = errno;
    if (fd < 0 && (e == EOPNOTSUPP || e == EISDIR || e == EINVAL)) {
        cleanup_free char *tmp = str_printf("%s/.doctor-XXXXXX", home);
        if (tmp) {
            fd = mkostemp(tmp, O_CLOEXEC);
            e = errno;
            if (fd >= 0)
                unlink(tmp);
        }
    }
    if (fd < 0) {
        check_add(l, "store", VMCTL_CHECK_FAIL,
                  str_printf("'%s' is not writable: %s", home, strerror(e)),
                  "Fix the permissions or free space of $VMCTL_HOME, or choose another `--home`.");
        return;
    }
    close(fd);
    check_add(l, "store", VMCTL_CHECK_OK, str_printf("'%s' is writable", home), NULL);
}

/* VMs created without --image or --kernel boot the default guest: a host without it has nothing
 * to boot yet, which doctor must say rather than "can run VMs". */
static void check_default_guest(check_list *l, vmctl_ctx *ctx)
{
    const char *home = ctx ? vmctl_ctx_get_home(ctx) : NULL;
    if (!home)
        return;
    guest_paths p = {0};
    cleanup_error vmctl_error *e = NULL;
    if (guest_default_paths(home, &p, &e) < 0) {
        check_add(l, "default-guest", VMCTL_CHECK_WARN,
                  str_printf("%s", e ? vmctl_error_get_message(e) : "cannot be read"),
                  "Run `vmctl image build-default` (VMs without --image or --kernel boot it).");
        return;
    }
    check_add(l, "default-guest", VMCTL_CHECK_OK, str_printf("%s", p.kernel), NULL);
    guest_paths_clear(&p);
}

static void check_vsock(check_list *l)
{
    if (access("/dev/vhost-vsock", F_OK) == 0)
        check_add(l, "vsock", VMCTL_CHECK_OK,
                  strdup("/dev/vhost-vsock present; the agent can use AF_VSOCK"), NULL);
    else
        check_add(l, "vsock", VMCTL_CHECK_WARN,
                  strdup("/dev/vhost-vsock absent; the agent uses virtio-serial"),
                  "Nothing to do: virtio-serial works everywhere; `modprobe vhost_vsock` "
                  "enables the AF_VSOCK transport.");
}

static void check_tools(check_list *l)
{
    static const struct {
        const char *tool;
        const char *package;
    } tools[] = {
        {"apt-get", "apt"}, {"dpkg-deb", "dpkg"}, {"cpio", "cpio"},
        {"lz4", "lz4"},     {"modinfo", "kmod"},  {"gzip", "gzip"},
    };
    for (size_t i = 0; i < ELEMENTSOF(tools); i++) {
        cleanup_free char *p = find_tool(tools[i].tool);
        if (p) {
            check_add(l, tools[i].tool, VMCTL_CHECK_OK, str_printf("%s", p), NULL);
            continue;
        }
        cleanup_free char *help =
            str_printf("Install it with `apt-get install %s`.", tools[i].package);
        check_add(l, tools[i].tool, VMCTL_CHECK_WARN,
                  str_printf("%s not found: `vmctl image build-default` needs it (Debian "
                             "package %s)",
                             tools[i].tool, tools[i].package),
                  help);
    }
}

/* The libraries loaded on first use: each must load, else the feature that needs it fails. */
static void check_libraries(check_list *l)
{
    dl_library *libs[] = {&dl_lib_curl, &dl_lib_zstd,     &dl_lib_lzma,   &dl_lib_crypto,
                          &dl_lib_ssh,  &dl_lib_nftables, &dl_lib_systemd};
    for (size_t i = 0; i < ELEMENTSOF(libs); i++) {
        cleanup_error vmctl_error *e = NULL;
        if (dl_open(libs[i], &e) >= 0) {
            check_add(l, libs[i]->soname, VMCTL_CHECK_OK,
                      str_printf("loads (for %s)", libs[i]->purpose), NULL);
            continue;
        }
        cleanup_free char *help =
            str_printf("Install it with `apt-get install %s`.", libs[i]->package);
        check_add(l, libs[i]->soname, VMCTL_CHECK_WARN,
                  str_printf("%s", vmctl_error_get_message(e)), help);
    }
}

/* docs/isolation.md: what of the jail and the per-VM limits is in force here */
static void check_jail(check_list *l)
{
    bool ok = false;
    const char *help = NULL;
    char *summary = jail_host_summary(&ok, &help);
    check_add(l, "jail", ok ? VMCTL_CHECK_OK : VMCTL_CHECK_WARN, summary, help);
    summary = jail_cgroup_summary(&ok, &help);
    check_add(l, "limits", ok ? VMCTL_CHECK_OK : VMCTL_CHECK_WARN, summary, help);
}

int vmctl_host_check_all(vmctl_ctx *ctx, vmctl_host_check **ret, size_t *n, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    check_list l = {.items = calloc(MAX_CHECKS, sizeof(vmctl_host_check))};
    if (!l.items)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    cleanup_free char *qemu = NULL;
    (void)qemu_find_binary(&qemu, NULL);

    check_qemu(&l, qemu);
    check_qemu_img(&l);
    check_accel(&l, qemu);
    check_store(&l, ctx);
    check_default_guest(&l, ctx);
    check_vsock(&l);
    check_tools(&l);
    check_libraries(&l);
    check_jail(&l);

    if (l.oom) {
        vmctl_host_check_list_free(l.items, l.n);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    }
    *ret = l.items;
    *n = l.n;
    return 0;
}
