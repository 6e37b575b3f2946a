/* SPDX-License-Identifier: MIT */
/* The QEMU backend: argv from a vm_spec, a detached launch, and the QMP actions.
 *
 * The launch goes through supervise.c: QEMU runs under a supervisor of its own that records how
 * it ended, so QEMU outlives vmctl, is reaped at once (no zombie waiting for init) and its exit
 * status is known: a guest that powered itself off (exit 0) is `stopped`, not `crashed`
 * (docs/architecture.md). QEMU's stdout and stderr are appended to DIR/qemu.log
 * (VM_FILE_BACKEND_LOG) for its whole life, so startup errors ("could not open kernel file") and
 * runtime messages ("terminating on signal 15") both land there. QEMU is up when it completes the
 * QMP handshake: the reply to qmp_capabilities comes from its main loop, which runs only once the
 * machine is built and the kernel loaded. A QEMU that dies first closes the socket, so failures are
 * seen at once.
 *
 * (QEMU's own -daemonize was tried and rejected: without -D it points stderr at /dev/null once
 * initialised, and with -D it truncates the log file and moves stderr onto it.) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent-client.h"
#include "agent-proto.h"
#include "backend.h"
#include "error.h"
#include "image-format.h"
#include "qemu-fs.h"
#include "podnet.h"
#include "qemu.h"
#include "qmp.h"
#include "supervise.h"
#include "util/util.h"
#include "agent-client.h" /* agent_vhost_vsock_present */
#include "jail.h"

/* How long QEMU may take to initialise (machine, kernel load) and answer on QMP. */
#define QEMU_STARTUP_USEC (30ULL * 1000000ULL)
/* How long to wait for a process we killed after a failed launch, and for the launcher. */
#define QEMU_REAP_USEC (5ULL * 1000000ULL)
/* How much of qemu.log goes into an error note. */
#define QEMU_LOG_NOTE_BYTES 2048
#define QEMU_LOG_NOTE_LINES 12

/* ---------- the binary ---------- */

int qemu_find_binary(char **ret, vmctl_error **reterr)
{
    const char *env = getenv(QEMU_BINARY_ENV);
    const char *name = env && *env ? env : QEMU_BINARY_DEFAULT;
    char *path = find_in_path(name);
    if (!path) {
        int r = err_make(reterr, VMCTL_E_QEMU_SPAWN_FAILED, ENOENT,
                         "QEMU binary '%s'%s not found or not executable", name,
                         env && *env ? " (from $" QEMU_BINARY_ENV ")" : " (searched in $PATH)");
        err_detail(reterr, "binary", "%s", name);
        return r;
    }
    *ret = path;
    return 0;
}

/* ---------- argv ---------- */

static int oom(vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
}

static void remove_runtime_files(const char *dir);

/* backend_ops.cleanup: the runtime files and the jail's cgroup */
static void qemu_cleanup(const char *dir)
{
    remove_runtime_files(dir);
    (void)jail_cgroup_remove(dir);
}

static void remove_runtime_files(const char *dir)
{
    qemu_fs_cleanup(dir);
    static const char *const files[] = {
        QEMU_FILE_QMP_SOCK, VM_FILE_CONSOLE_SOCK,   VM_FILE_PID, VM_FILE_EXIT, VM_FILE_VSOCK_MISS,
        VM_FILE_RESTORED,   VM_FILE_BACKEND_VERSION};
    for (size_t i = 0; i < ELEMENTSOF(files); i++) {
        cleanup_free char *p = str_printf("%s/%s", dir, files[i]);
        if (p)
            (void)unlink(p);
    }
    for (unsigned i = 0; i < AGENT_SERIAL_PORTS; i++) {
        char name[32];
        vm_agent_port_file(i, "sock", name, sizeof(name));
        cleanup_free char *p = str_printf("%s/%s", dir, name);
        if (p)
            (void)unlink(p);
    }
}

/* DIR/qemu.version: the greeting's version, for qemu_version. No fsync: it lives as long as the
 * process, and one that is missing or does not parse is asked of QEMU again. */
static void note_version(const char *dir, const char *version)
{
    cleanup_free char *path = str_printf("%s/" VM_FILE_BACKEND_VERSION, dir);
    if (!path)
        return;
    (void)unlink(path);
    if (!version)
        return;
    cleanup_close int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0 && write(fd, version, strlen(version)) != (ssize_t)strlen(version))
        (void)unlink(path);
}

/* The last lines QEMU wrote to its log since offset, as one note. */
static void note_log_tail(vmctl_error **reterr, const char *logpath, off_t offset)
{
    cleanup_close int fd = open(logpath, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= offset)
        return;
    off_t start =
        st.st_size - offset > QEMU_LOG_NOTE_BYTES ? st.st_size - QEMU_LOG_NOTE_BYTES : offset;
    char buf[QEMU_LOG_NOTE_BYTES + 1];
    ssize_t n = pread(fd, buf, QEMU_LOG_NOTE_BYTES, start);
    if (n <= 0)
        return;
    buf[n] = 0;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = 0;
    /* keep the last QEMU_LOG_NOTE_LINES lines, starting at a line boundary */
    char *s = buf;
    if (start > offset) {
        char *nl = strchr(s, '\n');
        if (nl)
            s = nl + 1;
    }
    int lines = 0;
    for (char *p = buf + n; p > s; p--)
        if (p[-1] == '\n' && ++lines == QEMU_LOG_NOTE_LINES) {
            s = p;
            break;
        }
    if (*s)
        err_note(reterr, "%s", s);
}

/* Kill what a failed launch left behind and wait (bounded) until it is gone. */
static void kill_leftover(pid_t pid)
{
    if (pid <= 0)
        return;
    uint64_t start = proc_start_time(pid);
    if (!start || kill(pid, SIGKILL) < 0)
        return;
    uint64_t deadline = now_usec() + QEMU_REAP_USEC;
    while (proc_alive(pid, start) && now_usec() < deadline)
        sleep_usec(2000);
}

/* Wait (bounded) for pid to be gone; true when it is. */
static bool wait_gone(pid_t pid, uint64_t start, uint64_t usec)
{
    uint64_t deadline = now_usec() + usec;
    while (proc_alive(pid, start)) {
        if (now_usec() >= deadline)
            return false;
        sleep_usec(2000);
    }
    return true;
}

static int startup_failed(vmctl_error **reterr, const char *binary, const char *logpath,
                          off_t log_offset)
{
    int r = err_make(reterr, VMCTL_E_QEMU_SPAWN_FAILED, EIO, "QEMU exited during startup");
    err_detail(reterr, "binary", "%s", binary);
    err_detail(reterr, "path", "%s", logpath);
    note_log_tail(reterr, logpath, log_offset);
    return r;
}

static int disk_unsafe(vmctl_error **reterr, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int disk_unsafe(vmctl_error **reterr, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = err_makev(reterr, VMCTL_E_IMAGE_UNSAFE, EPERM, fmt, ap);
    va_end(ap);
    err_detail(reterr, "path", "%s", path);
    return r;
}

/* Each start checks again what QEMU will open (a base given by path is anyone's file, and may
 * have changed since create): the overlay is ours (qcow2, backing file the recorded base, no
 * data file); the base, unless raw, is of its recorded format and names no other file. The
 * format QEMU is told for the base: *ret_base_format (spec's, or the overlay header's copied into
 * buf; NULL without a base). */
static int check_disks(const vm_spec *spec, char buf[static 32], const char **ret_base_format,
                       vmctl_error **reterr)
{
    *ret_base_format = spec->base_format;
    if (!spec->disk || (spec->disk_format && streq(spec->disk_format, "raw")))
        return 0; /* a raw disk is raw: QEMU is told so */
    image_probe ov = {};
    vmctl_error *e = NULL;
    if (image_probe_file(spec->disk, &ov, &e) < 0) {
        vmctl_error_free(e); /* a missing overlay: QEMU says so in its own words */
        return 0;
    }
    int r = 0;
    if (!streq(ov.format, "qcow2") || ov.data_file)
        r = disk_unsafe(reterr, spec->disk, "the vm disk '%s' is no longer a plain qcow2 overlay",
                        spec->disk);
    else if ((spec->disk_layer || spec->base) &&
             (!ov.backing_file ||
              !streq(ov.backing_file, spec->disk_layer ? spec->disk_layer : spec->base)))
        r = disk_unsafe(reterr, spec->disk, "the backing file of vm disk '%s' changed to '%s'",
                        spec->disk, ov.backing_file ? ov.backing_file : "(none)");
    else if (spec->base && !spec->disk_layer && !spec->base_format && ov.backing_format) {
        snprintf(buf, 32, "%s", ov.backing_format);
        *ret_base_format = buf;
    }
    image_probe_clear(&ov);
    /* snapshots' layers, top down: each a plain qcow2 image whose backing file is the next
     * layer's, the last's the base */
    for (size_t i = 0; r >= 0 && spec->disk_layer && i <= strv_length(spec->disk_chain); i++) {
        const char *layer = i ? spec->disk_chain[i - 1] : spec->disk_layer;
        const char *below =
            spec->disk_chain && spec->disk_chain[i] ? spec->disk_chain[i] : spec->base;
        image_probe ly = {};
        if ((r = image_probe_file(layer, &ly, reterr)) < 0)
            return err_prefix(reterr, r, "while checking snapshot layer '%s'", layer);
        if (!streq(ly.format, "qcow2") || ly.data_file ||
            (below ? !ly.backing_file || !streq(ly.backing_file, below) : ly.backing_file != NULL))
            r = disk_unsafe(reterr, layer,
                            "the snapshot layer '%s' is no longer a plain qcow2 image on '%s'",
                            layer, below ? below : "(none)");
        image_probe_clear(&ly);
    }
    const char *bf = *ret_base_format ? image_format_qemu_name(*ret_base_format) : NULL;
    if (r < 0 || !spec->base || !bf || streq(bf, "raw"))
        return r;
    image_probe base = {};
    if ((r = image_probe_file(spec->base, &base, reterr)) < 0)
        return err_prefix(reterr, r, "while checking base image '%s'", spec->base);
    if (!streq(image_format_qemu_name(base.format), bf))
        r = disk_unsafe(reterr, spec->base, "base image '%s' is %s now, not %s", spec->base,
                        base.format, bf);
    else
        r = image_check_self_contained(spec->base, &base, false, reterr);
    image_probe_clear(&base);
    if (r < 0)
        err_help(reterr, "The base image changed since the VM was created: restore it, or "
                         "destroy the VM (`vmctl destroy NAME`) and create it from a "
                         "self-contained image.");
    return r;
}

/* Closes the first *n of fds when it goes out of scope. */
typedef struct qemu_fds_closer {
    int *fds;
    size_t *n;
} qemu_fds_closer;

static void qemu_fds_close(qemu_fds_closer *c)
{
    for (size_t i = 0; i < *c->n; i++)
        close(c->fds[i]);
}

static int qemu_launch(const vm_spec *spec, const char *dir, pid_t *ret_pid, uint64_t *ret_start,
                       int *ret_hold, vmctl_error **reterr)
{
    if (!spec || !dir || !ret_pid || !ret_start || !ret_hold)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qemu launch: invalid arguments");

    cleanup_free char *binary = NULL;
    int r = qemu_find_binary(&binary, reterr);
    if (r < 0)
        return r;
    cleanup_free char *absdir = realpath(dir, NULL);
    if (!absdir) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot resolve VM directory '%s'", dir);
        err_detail(reterr, "path", "%s", dir);
        return r;
    }
    const char *base_format = NULL;
    char fmtbuf[32];
    if ((r = check_disks(spec, fmtbuf, &base_format, reterr)) < 0)
        return r;
    /* jailed: the base goes in as a descriptor (read-only), not by path */
    cleanup_close int base_fd = -1;
    if (spec->jail_uid && spec->base) {
        base_fd = open(spec->base, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (base_fd < 0) {
            r = err_make(reterr, VMCTL_E_IO, errno, "cannot open base image '%s': %s", spec->base,
                         strerror(errno));
            err_detail(reterr, "path", "%s", spec->base);
            return r;
        }
    }
    /* snapshots' layers, likewise (top down) */
    int layer_fds[QEMU_MAX_LAYERS];
    size_t n_layers = 0;
    size_t want_layers = spec->disk_layer ? 1 + strv_length(spec->disk_chain) : 0;
    if (want_layers > QEMU_MAX_LAYERS)
        return err_invalid_field(reterr, "disk", NULL, NULL,
                                 "the disk of vm '%s' is on %zu snapshot layers: at most %d",
                                 spec->name, want_layers, QEMU_MAX_LAYERS);
    if (spec->jail_uid && spec->disk) {
        for (; n_layers < want_layers; n_layers++) {
            const char *layer = n_layers ? spec->disk_chain[n_layers - 1] : spec->disk_layer;
            layer_fds[n_layers] = open(layer, O_RDONLY | O_CLOEXEC | O_NOCTTY);
            if (layer_fds[n_layers] < 0) {
                r = err_make(reterr, VMCTL_E_IO, errno, "cannot open disk layer '%s': %s", layer,
                             strerror(errno));
                err_detail(reterr, "path", "%s", layer);
                break;
            }
        }
    }
    __attribute__((cleanup(qemu_fds_close))) qemu_fds_closer layers_closer = {layer_fds, &n_layers};
    if (r < 0)
        return r;
    /* jailed with vsock: /dev/vhost-vsock opened here (root's 0600 device: the VM's uid cannot
     * open it) and inherited; QEMU sets the guest CID on it (a CID taken fails the launch, and
     * the retry with the next CID opens it anew) */
    cleanup_close int vhost_fd = -1;
    if (spec->jail_uid && spec->guest_cid) {
        vhost_fd = open(QEMU_VHOST_VSOCK_DEV, O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (vhost_fd < 0) {
            r = err_make(reterr, VMCTL_E_JAILER_FAILED, errno,
                         "cannot open '%s' for the jailed hypervisor of vm '%s': %s",
                         QEMU_VHOST_VSOCK_DEV, spec->name, strerror(errno));
            err_detail(reterr, "step", "%s", jail_step_name(JAIL_STEP_VHOST_VSOCK));
            err_detail(reterr, "path", "%s", QEMU_VHOST_VSOCK_DEV);
            return r;
        }
    }
    cleanup_strv char **argv = NULL;
    r = qemu_build_argv_fd(spec, binary, absdir, base_format, base_fd, n_layers ? layer_fds : NULL,
                           vhost_fd, &argv, reterr);
    if (r < 0)
        return r;

    cleanup_free char *logpath = str_printf("%s/" VM_FILE_BACKEND_LOG, absdir);
    cleanup_free char *qmppath = str_printf("%s/" QEMU_FILE_QMP_SOCK, absdir);
    if (!logpath || !qmppath)
        return oom(reterr);
    remove_runtime_files(absdir);
    if (spec->ram_file && !spec->restore_ram &&
        (r = qemu_ram_file_prepare(spec->ram_file, spec->jail_uid, reterr)) < 0)
        return r;

    cleanup_close int logfd =
        open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
    if (logfd < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot open QEMU log '%s'", logpath);
        err_detail(reterr, "path", "%s", logpath);
        return r;
    }
    /* a marker per launch; error notes quote only what this launch wrote */
    {
        time_t t = time(NULL);
        struct tm tm;
        char when[64] = "";
        if (gmtime_r(&t, &tm))
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        cleanup_free char *marker = str_printf("vmctl: starting %s for vm '%s' at %s\n", binary,
                                               spec->name ? spec->name : "?", when);
        if (marker) {
            /* best effort: the marker only helps a human reading the log */
            ssize_t wr = write(logfd, marker, strlen(marker));
            (void)wr;
        }
    }
    off_t log_offset = lseek(logfd, 0, SEEK_END);
    if (log_offset < 0)
        log_offset = 0;

    pid_t pid = 0;
    cleanup_close int dirfd = open(absdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot open VM directory '%s'", absdir);
        err_detail(reterr, "path", "%s", absdir);
        return r;
    }
    cleanup_jail jail *jl = NULL;
    if (spec->jail_uid) {
        const char *ro[6];
        size_t k = 0;
        const char *cand[] = {spec->kernel, spec->initrd, spec->seed};
        for (size_t i = 0; i < ELEMENTSOF(cand); i++)
            if (cand[i])
                ro[k++] = cand[i];
        ro[k] = NULL;
        /* a restore maps the template's RAM file (0660, the template's group: docs/isolation.md
         * "Snapshots"), a snapshottable VM its own (0600, its uid) */
        const char *ram = spec->restore_ram ? spec->restore_ram : spec->ram_file;
        struct stat ram_st;
        gid_t ram_gid = 0;
        if (spec->restore_ram && stat(spec->restore_ram, &ram_st) == 0 && ram_st.st_gid != 0)
            ram_gid = ram_st.st_gid;
        jail_config jc = {
            .name = spec->name,
            .vmdir = absdir,
            .binary = binary,
            .ro_files = ro,
            .ram_file = ram,
            .ram_gid = ram_gid,
            .uid = spec->jail_uid,
            .kvm = spec->accel && streq(spec->accel, "kvm"),
            .cpu_quota = spec->cpu_quota,
            .memory_bytes = jail_memory_ceiling(spec->memory_mib ? spec->memory_mib : 256,
                                                !spec->accel || !streq(spec->accel, "kvm")),
            .pids_max = JAIL_PIDS_MAX,
            .weight_threads = (spec->vcpus ? spec->vcpus : 1) + 1,
        };
        if ((r = jail_prepare(&jc, &jl, reterr)) < 0) {
            (void)jail_cgroup_remove(absdir);
            return err_prefix(reterr, r, "while jailing vm '%s'", spec->name);
        }
    }
    cleanup_close int hold = -1; /* closed on every failure below: the supervisor kills QEMU */
    qemu_fs fs = {};             /* the mounts' virtiofsd, run and killed by QEMU's supervisor */
    const char *machine = spec->machine ? spec->machine : (spec->kernel ? "microvm" : "q35");
    if ((r = qemu_fs_prepare(spec, absdir, streq(machine, "microvm"), &fs, reterr)) < 0)
        return r;
    int keep[2 + QEMU_MAX_LAYERS];
    size_t n_keep = 0;
    if (base_fd >= 0)
        keep[n_keep++] = base_fd;
    for (size_t i = 0; i < n_layers; i++)
        keep[n_keep++] = layer_fds[i];
    if (vhost_fd >= 0)
        keep[n_keep++] = vhost_fd;
    supervise_spawn_args sa_spawn = {
        .jail = jl,
        .keep_fds = n_keep ? keep : NULL,
        .n_keep_fds = n_keep,
        .binary = binary,
        .argv = argv,
        .logfd = logfd,
        .dirfd = dirfd,
        .keep_fd = spec->mac ? spec->tap_fd : -1,
        .error_kind = VMCTL_E_QEMU_SPAWN_FAILED,
        .helpers = fs.helpers,
        .n_helpers = fs.n_helpers,
        .owner_pid = spec->owner_pid,
        .owner_start = spec->owner_start,
    };
    r = supervise_spawn(&sa_spawn, &pid, &hold, reterr);
    qemu_fs_clear(&fs);
    if (r < 0)
        return r;
    uint64_t start = proc_start_time(pid);
    if (!start || !proc_alive(pid, start)) {
        qemu_cleanup(absdir);
        return startup_failed(reterr, binary, logpath, log_offset);
    }

    /* Up means a completed QMP handshake. Until the socket exists, watch the process. */
    uint64_t deadline = now_usec() + QEMU_STARTUP_USEC;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strncpy(sa.sun_path, qmppath, sizeof(sa.sun_path) - 1); /* length checked by build_argv */
    int fd = -1;
    for (;;) {
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            r = err_make(reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, errno,
                         "cannot create a socket for QMP");
            goto fail;
        }
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            break;
        int e = errno;
        close(fd);
        fd = -1;
        if (!proc_alive(pid, start)) {
            qemu_cleanup(absdir);
            return startup_failed(reterr, binary, logpath, log_offset);
        }
        if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN && e != EINTR) {
            r = err_make(reterr, VMCTL_E_QEMU_QMP_CONNECT_FAILED, e,
                         "cannot connect to QMP socket '%s'", qmppath);
            err_detail(reterr, "path", "%s", qmppath);
            goto fail;
        }
        if (now_usec() >= deadline) {
            r = err_timeout(reterr, "qemu startup", (double)QEMU_STARTUP_USEC / 1e6,
                            "QEMU did not create its QMP socket within %llu s",
                            (unsigned long long)(QEMU_STARTUP_USEC / 1000000));
            goto fail;
        }
        /* 1 ms: QEMU takes ~50 ms to make the socket here, and each miss costs a connect() and a
         * read of /proc/PID/stat; at 5 ms the wait lost 2.5 ms on average */
        sleep_usec(1000);
    }
    {
        cleanup_qmp qmp *q = NULL;
        vmctl_error *qerr = NULL;
        r = qmp_connect_fd(fd, deadline, &q, &qerr);
        if (r >= 0) {
            vmctl_error_free(qerr);
            note_version(absdir, qmp_version(q));
            *ret_pid = pid;
            *ret_start = start;
            *ret_hold = TAKE_FD(hold);
            return 0;
        }
        /* a QEMU that failed after creating the socket closes it: it is exiting */
        if (r != -ETIMEDOUT && wait_gone(pid, start, 2000000)) {
            vmctl_error_free(qerr);
            qemu_cleanup(absdir);
            return startup_failed(reterr, binary, logpath, log_offset);
        }
        if (reterr) {
            vmctl_error_free(*reterr);
            *reterr = qerr;
        } else {
            vmctl_error_free(qerr);
        }
        err_prefix(reterr, r, "QEMU (pid %d) started but does not answer on QMP", (int)pid);
    }
fail:
    kill_leftover(pid);
    qemu_cleanup(absdir);
    note_log_tail(reterr, logpath, log_offset);
    return r;
}

/* ---------- the agent endpoint ---------- */

static int endpoint_file(char buf[static PATH_MAX], const char *dir, const char *name,
                         vmctl_error **reterr)
{
    int n = snprintf(buf, PATH_MAX, "%s/%s", dir, name);
    if (n < 0 || n >= PATH_MAX)
        return err_make(reterr, VMCTL_E_AGENT_FAILED, ENAMETOOLONG,
                        "the vm directory '%s' is too long for its agent sockets", dir);
    return 0;
}

int qemu_agent_endpoint_at(const char *dir, uint32_t cid, bool have_vhost_vsock,
                           agent_endpoint *ret, vmctl_error **reterr)
{
    int r;
    ret->kind = agent_transport_pick(cid, have_vhost_vsock) == AGENT_TRANSPORT_VSOCK
                    ? AGENT_ENDPOINT_VSOCK
                    : AGENT_ENDPOINT_SERIAL;
    ret->cid = ret->kind == AGENT_ENDPOINT_VSOCK ? cid : 0;
    ret->port = ret->kind == AGENT_ENDPOINT_VSOCK ? AGENT_VSOCK_PORT : 0;
    ret->path[0] = 0;
    ret->vsock_miss[0] = 0;
    if (ret->kind == AGENT_ENDPOINT_VSOCK &&
        (r = endpoint_file(ret->vsock_miss, dir, VM_FILE_VSOCK_MISS, reterr)) < 0)
        return r;
    /* port 0 always; the others when their socket exists (a VM started before it had several
     * ports has agent.sock only) */
    ret->n_ports = 0;
    for (unsigned i = 0; i < AGENT_SERIAL_PORTS; i++) {
        char name[32];
        vm_agent_port_file(i, "sock", name, sizeof(name));
        if ((r = endpoint_file(ret->ports[ret->n_ports].sock, dir, name, reterr)) < 0)
            return r;
        if (i > 0 && access(ret->ports[ret->n_ports].sock, F_OK) < 0)
            continue;
        vm_agent_port_file(i, "lock", name, sizeof(name));
        if ((r = endpoint_file(ret->ports[ret->n_ports].lock, dir, name, reterr)) < 0)
            return r;
        ret->n_ports++;
    }
    return 0;
}

static int qemu_agent_endpoint(const vm_spec *spec, const char *dir, uint32_t cid,
                               agent_endpoint *ret, vmctl_error **reterr)
{
    return qemu_agent_endpoint_at(dir, cid, agent_vhost_vsock_present(NULL), ret, reterr);
}

/* ---------- finding a VM's processes ---------- */

/* The VM name when the NUL-separated argv (len bytes) has `-pidfile VMS/NAME/qemu.pid`, with
 * vms = "VMS/" (n bytes); NULL otherwise. Points into argv. */
static const char *argv_vm_name(char *argv, size_t len, const char *vms, size_t n, size_t *ret_len)
{
    static const char suffix[] = "/" VM_FILE_PID;
    const size_t sn = sizeof(suffix) - 1;
    bool after_pidfile = false;
    for (char *a = argv; a < argv + len; a += strlen(a) + 1) {
        if (after_pidfile) {
            size_t al = strlen(a);
            if (al > n + sn && strncmp(a, vms, n) == 0 && streq(a + al - sn, suffix) &&
                !memchr(a + n, '/', al - n - sn)) {
                *ret_len = al - n - sn;
                return a + n;
            }
            return NULL;
        }
        after_pidfile = streq(a, "-pidfile");
    }
    return NULL;
}

static int qemu_scan(const char *vms, const char *only, backend_proc_fn cb, void *userdata)
{
    if (!vms || !cb)
        return -EINVAL;
    cleanup_free char *prefix = str_printf("%s/", vms);
    enum { MAX_CMDLINE = 256 * 1024 };
    cleanup_free char *buf = malloc(MAX_CMDLINE + 1);
    if (!prefix || !buf)
        return -ENOMEM;
    size_t n = strlen(prefix);
    DIR *d = opendir("/proc");
    if (!d)
        return -errno;
    pid_t self = getpid();
    int found = 0, r = 0;
    struct dirent *de;
    while (r >= 0 && (de = readdir(d))) {
        char *end = NULL;
        long pid = strtol(de->d_name, &end, 10);
        if (pid <= 0 || *end || pid == self)
            continue;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%ld/cmdline", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        size_t len = 0;
        ssize_t k;
        while (len < MAX_CMDLINE && (k = read(fd, buf + len, MAX_CMDLINE - len)) != 0) {
            if (k < 0) {
                if (errno == EINTR)
                    continue;
                break;
            }
            len += (size_t)k;
        }
        close(fd);
        if (len == 0)
            continue; /* a kernel thread or a zombie */
        buf[len] = 0;
        size_t nl = 0;
        const char *name = argv_vm_name(buf, len, prefix, n, &nl);
        if (!name || (only && (strlen(only) != nl || strncmp(name, only, nl) != 0)))
            continue;
        uint64_t start = proc_start_time((pid_t)pid);
        if (!start || !proc_alive((pid_t)pid, start))
            continue;
        char vm[256];
        snprintf(vm, sizeof(vm), "%.*s", (int)(nl < sizeof(vm) ? nl : sizeof(vm) - 1), name);
        found++;
        r = cb(vm, (pid_t)pid, start, userdata);
    }
    closedir(d);
    return r < 0 ? r : found;
}

/* ---------- QMP actions ---------- */

int qemu_qmp_open(const char *dir, uint64_t deadline, qmp **ret, vmctl_error **reterr)
{
    cleanup_free char *path = str_printf("%s/" QEMU_FILE_QMP_SOCK, dir);
    if (!path)
        return oom(reterr);
    return qmp_connect(path, deadline, ret, reterr);
}

/* A query-block or query-blockstats entry's name: -blockdev disks have no "device" and are named
 * by their node (disk0, seed), in "inserted" for query-block. */
static const char *block_name(json_t *b, bool inserted)
{
    const char *dev = json_string_value(json_object_get(b, "device"));
    if (!dev || !*dev)
        dev = json_string_value(
            json_object_get(inserted ? json_object_get(b, "inserted") : b, "node-name"));
    if (!dev || !*dev)
        dev = json_string_value(json_object_get(b, "qdev"));
    return dev && *dev ? dev : NULL;
}

static int qmp_simple(const char *dir, const char *command, uint64_t deadline, bool closed_ok,
                      vmctl_error **reterr)
{
    if (!dir)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qemu %s: invalid arguments", command);
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    vmctl_error *err = NULL;
    r = qmp_execute(q, command, NULL, NULL, deadline, &err);
    if (r == -ECONNRESET && closed_ok) {
        /* quit: QEMU may close the socket before its reply reaches us */
        vmctl_error_free(err);
        return 0;
    }
    if (r < 0) {
        if (reterr) {
            vmctl_error_free(*reterr);
            *reterr = err;
        } else {
            vmctl_error_free(err);
        }
    }
    return r;
}

static int qemu_pause(const char *dir, uint64_t deadline, vmctl_error **reterr)
{
    return qmp_simple(dir, "stop", deadline, false, reterr);
}

static int qemu_resume(const char *dir, uint64_t deadline, vmctl_error **reterr)
{
    return qmp_simple(dir, "cont", deadline, false, reterr);
}

static int qemu_powerdown(const char *dir, uint64_t deadline, vmctl_error **reterr)
{
    return qmp_simple(dir, "system_powerdown", deadline, false, reterr);
}

static int qemu_quit(const char *dir, uint64_t deadline, vmctl_error **reterr)
{
    return qmp_simple(dir, "quit", deadline, true, reterr);
}

/* query-status says "io-error" when QEMU stopped the guest after a failed write (a full host
 * disk: werror=enospc is QEMU's default); query-block names the devices and their io-status. */
static int qemu_io_paused(const char *dir, uint64_t deadline, char **cause, vmctl_error **reterr)
{
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    json_t *st = NULL;
    r = qmp_execute(q, "query-status", NULL, &st, deadline, reterr);
    if (r < 0)
        return r;
    const char *status = json_string_value(json_object_get(st, "status"));
    bool io_error = status && streq(status, "io-error");
    json_decref(st);
    if (!io_error)
        return 0;
    json_t *blocks = NULL;
    cleanup_free char *text = NULL;
    if (qmp_execute(q, "query-block", NULL, &blocks, deadline, NULL) >= 0) {
        size_t i;
        json_t *b;
        json_array_foreach(blocks, i, b)
        {
            const char *dev = block_name(b, true);
            const char *ios = json_string_value(json_object_get(b, "io-status"));
            if (!ios || streq(ios, "ok"))
                continue;
            char *t =
                str_printf("%s%s%s: %s", text ? text : "", text ? ", " : "", dev ? dev : "?", ios);
            free(text);
            text = t;
        }
        json_decref(blocks);
    }
    *cause = text ? TAKE_PTR(text) : strdup("a disk");
    return *cause ? 1 : oom(reterr);
}

/* query-blockstats: one entry per disk device; -blockdev disks have no "device" and are named by
 * their node (disk0, seed). */
static int qemu_blockstats(const char *dir, uint64_t deadline,
                           int (*cb)(const char *device, uint64_t read_bytes, uint64_t write_bytes,
                                     uint64_t read_ops, uint64_t write_ops, void *userdata),
                           void *userdata, vmctl_error **reterr)
{
    cleanup_qmp qmp *q = NULL;
    int r = qemu_qmp_open(dir, deadline, &q, reterr);
    if (r < 0)
        return r;
    json_t *list = NULL;
    r = qmp_execute(q, "query-blockstats", NULL, &list, deadline, reterr);
    if (r < 0)
        return r;
    size_t i;
    json_t *b;
    json_array_foreach(list, i, b)
    {
        const char *dev = block_name(b, false);
        json_t *st = json_object_get(b, "stats");
        if (!dev || !json_is_object(st))
            continue;
#define N(k) ((uint64_t)json_integer_value(json_object_get(st, k)))
        r = cb(dev, N("rd_bytes"), N("wr_bytes"), N("rd_operations"), N("wr_operations"), userdata);
#undef N
        if (r < 0)
            break;
    }
    json_decref(list);
    return r < 0 ? r : 0;
}

/* ---------- what vm.c asks the backend ---------- */

/* QEMU's machines: microvm boots a kernel directly (the default with one), q35 boots disk images
 * by firmware. Networks: user-mode (slirp, the default with port forwards or a disk image, whose
 * cloud-init expects a network), tap (a TAP vmctl makes and passes as a descriptor) or none. */
static int qemu_validate(vm_spec *spec, vmctl_error **reterr)
{
    if (!spec)
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "qemu validate: invalid arguments");
    const char *machine = spec->machine ? spec->machine : (spec->kernel ? "microvm" : "q35");
    if (!streq(machine, "microvm") && !streq(machine, "q35"))
        return err_invalid_field(reterr, "machine", machine, "microvm or q35",
                                 "invalid machine '%s'", machine);
    if (!spec->kernel && streq(machine, "microvm"))
        return err_invalid_field(
            reterr, "machine", machine, "q35 for disk images booted by firmware",
            "machine '%s' boots a kernel directly: give --kernel with --image", machine);
    const char *net = spec->net ? spec->net : (spec->n_ports || spec->base ? "user" : "none");
    if (podnet_path(net)) {
        int r = podnet_check(net, reterr);
        if (r < 0)
            return r;
        if (!spec->kernel)
            return err_invalid_field(reterr, "net", net, "user, tap or none for a disk image",
                                     "a network namespace's address reaches the guest on its "
                                     "kernel command line: '%s' needs a kernel-booted guest (the "
                                     "default guest)",
                                     net);
    } else if (!streq(net, "user") && !streq(net, "tap") && !streq(net, "none"))
        return err_invalid_field(reterr, "net", net, "user, tap, none or netns:PATH",
                                 "invalid net '%s'", net);
    if (spec->n_ports && streq(net, "none")) {
        int r = err_make(reterr, VMCTL_E_NETWORK_CONFIG_INVALID, EINVAL,
                         "port forwards need user or tap networking, not '%s'", net);
        err_detail(reterr, "field", "port");
        err_help(reterr, "Use `--net user` (the default when --port is given), `--net tap`, or "
                         "drop --port.");
        return r;
    }
    if (!spec->machine && !(spec->machine = strdup(machine)))
        return oom(reterr);
    if (!spec->net && !(spec->net = strdup(net)))
        return oom(reterr);
    return 0;
}

/* The agent's vsock: QEMU's vhost-vsock device takes a CID unique on the host. */
static bool qemu_needs_host_cid(const vm_spec *spec)
{
    (void)spec;
    return agent_vhost_vsock_present(NULL);
}

static int qemu_exited_while_booting(const char *vm, vmctl_error **reterr)
{
    int r = err_make(reterr, VMCTL_E_QEMU_SPAWN_FAILED, ECHILD,
                     "QEMU exited while vm '%s' was booting", vm);
    err_help(reterr, "Look at `vmctl logs %s` and `vmctl logs %s --qemu` for why it stopped.", vm,
             vm);
    return r;
}

const backend_ops qemu_backend = {
    .name = "qemu",
    .title = "QEMU",
    .validate = qemu_validate,
    .needs_host_cid = qemu_needs_host_cid,
    .exited_while_booting = qemu_exited_while_booting,
    .launch = qemu_launch,
    .pause = qemu_pause,
    .resume = qemu_resume,
    .powerdown = qemu_powerdown,
    .quit = qemu_quit,
    .io_paused = qemu_io_paused,
    .blockstats = qemu_blockstats,
    .cleanup = qemu_cleanup,
    .scan = qemu_scan,
    .agent_endpoint = qemu_agent_endpoint,
    .version = qemu_version,
    .snapshot_save = qemu_snapshot_save,
    .snapshot_load = qemu_snapshot_load,
    .disk_snapshot = qemu_disk_snapshot,
    .disk_top = qemu_disk_top,
    .disk_unsnapshot = qemu_disk_unsnapshot,
};
