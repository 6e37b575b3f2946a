/* SPDX-License-Identifier: MIT */
/* The default guest: build it with guest/build-default.sh, locate it, and the kernel command line
 * it boots with. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "guest.h"
#include "util/util.h"

extern char **environ;

/* Bounds for a whole build (downloads ~30 MB, extracts ~100 MB). */
#define BUILD_TIMEOUT_SEC (30 * 60)
#define STDERR_TAIL       4096
/* cryptomgr.notests: the crypto self-tests cost ~0.5 s of boot under TCG (crypto_algapi_init,
 * measured with initcall_debug) and guard against miscompiled ciphers, not against attackers. */
/* tsc=reliable: under TCG on a loaded host the clocksource watchdog finds the TSC skewed against
 * jiffies at boot, marks it unstable and falls back to refined-jiffies - no high-resolution timers,
 * a periodic tick and coarse time. QEMU's TSC follows the host clock, so it is reliable. */
#define BASE_CMDLINE "console=ttyS0 rdinit=/init panic=-1 quiet cryptomgr.notests tsc=reliable"

void guest_paths_clear(guest_paths *p)
{
    if (!p)
        return;
    free(p->kernel);
    free(p->initrd);
    free(p->cmdline);
    *p = (guest_paths){0};
}

char *resource_path(const char *file)
{
    const char *env = getenv("VMCTL_LIBEXEC_DIR");
    if (env && *env)
        return str_printf("%s/%s", env, file);

    cleanup_free char *exe_dir = self_exe_dir();
    if (exe_dir) {
        cleanup_free char *p = str_printf("%s/%s", exe_dir, file);
        if (p && file_exists(p))
            return TAKE_PTR(p);
        /* a binary of the build tree (src/cli/vmctl, tests/...): the resources are built in
         * src/agent/ (vmctl-agent, and build-default.sh copied there by meson) */
        size_t n = strlen(VMCTL_BUILD_ROOT);
        if (strncmp(exe_dir, VMCTL_BUILD_ROOT, n) == 0 && (exe_dir[n] == '/' || !exe_dir[n])) {
            cleanup_free char *b = str_printf("%s/src/agent/%s", VMCTL_BUILD_ROOT, file);
            if (b && file_exists(b))
                return TAKE_PTR(b);
        }
    }
    return str_printf("%s/%s", VMCTL_LIBEXECDIR, file);
}

/* --- paths and command line --- */

/* The host TSC frequency in kHz, 0 when unknown. */
static unsigned long host_tsc_khz(void)
{
    cleanup_free char *s = NULL;
    if (read_file("/sys/devices/system/cpu/cpu0/tsc_freq_khz", &s, NULL) >= 0) {
        unsigned long khz = strtoul(s, NULL, 10);
        if (khz > 0)
            return khz;
    }
    cleanup_fclose FILE *f = fopen("/proc/cpuinfo", "re");
    if (!f)
        return 0;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        if (!str_startswith(line, "cpu MHz"))
            continue;
        const char *colon = strchr(line, ':');
        if (!colon)
            return 0;
        double mhz = strtod(colon + 1, NULL);
        return mhz > 0 ? (unsigned long)(mhz * 1000.0 + 0.5) : 0;
    }
    return 0;
}

static char *default_dir(const char *home)
{
    return str_printf("%s/images/default", home);
}

int guest_default_paths(const char *home, guest_paths *ret, vmctl_error **reterr)
{
    guest_paths p = {0};
    cleanup_free char *dir = default_dir(home);
    cleanup_free char *manifest = dir ? str_printf("%s/manifest", dir) : NULL;
    p.kernel = dir ? str_printf("%s/vmlinux", dir) : NULL;
    p.initrd = dir ? str_printf("%s/initrd.img", dir) : NULL;
    if (!manifest || !p.kernel || !p.initrd) {
        guest_paths_clear(&p);
        return -ENOMEM;
    }
    const char *missing = !file_exists(p.kernel)   ? p.kernel
                          : !file_exists(p.initrd) ? p.initrd
                          : !file_exists(manifest) ? manifest
                                                   : NULL;
    if (missing) {
        int r = err_make(reterr, VMCTL_E_HOST_MISSING_DEPENDENCY, ENOENT,
                         "the default guest has not been built ('%s' is missing)", missing);
        err_detail(reterr, "path", "%s", missing);
        err_help(reterr, "Run `vmctl image build-default`.");
        guest_paths_clear(&p);
        return r;
    }
    /* tsc_early_khz: under TCG the PIT calibration of the TSC fails now and then and the kernel
     * hangs in calibrate_delay (no HPET or PM timer on microvm); telling it the frequency avoids
     * that. */
    unsigned long khz = host_tsc_khz();
    p.cmdline = khz ? str_printf(BASE_CMDLINE " tsc_early_khz=%lu", khz) : strdup(BASE_CMDLINE);
    if (!p.cmdline) {
        guest_paths_clear(&p);
        return -ENOMEM;
    }
    *ret = p;
    return 0;
}

/* --- build --- */

static char *cache_dir(void)
{
    const char *e = getenv("VMCTL_CACHE_DIR");
    if (e && *e)
        return strdup(e);
    e = getenv("XDG_CACHE_HOME");
    if (e && *e)
        return str_printf("%s/vmctl", e);
    e = getenv("HOME");
    if (e && *e)
        return str_printf("%s/.cache/vmctl", e);
    return str_printf("/tmp/vmctl-cache-%u", (unsigned)getuid());
}

struct build_output {
    char line[1024]; /* stdout line being assembled */
    size_t line_len;
    char missing_tool[128];
    char missing_pkg[128];
    char tail[STDERR_TAIL]; /* last bytes of stderr */
    size_t tail_len;
    vmctl_progress_fn progress;
    void *userdata;
};

static void handle_line(struct build_output *o, char *line)
{
    if (str_startswith(line, "STEP ")) {
        if (o->progress)
            o->progress(o->userdata, line + 5, 0, 0);
    } else if (str_startswith(line, "MISSING ")) {
        char tool[128] = "", pkg[128] = "";
        if (sscanf(line + 8, "%127s %127s", tool, pkg) >= 1) {
            snprintf(o->missing_tool, sizeof(o->missing_tool), "%s", tool);
            snprintf(o->missing_pkg, sizeof(o->missing_pkg), "%s", pkg[0] ? pkg : tool);
        }
    }
}

static void feed_stdout(struct build_output *o, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || o->line_len == sizeof(o->line) - 1) {
            o->line[o->line_len] = 0;
            handle_line(o, o->line);
            o->line_len = 0;
            if (buf[i] == '\n')
                continue;
        }
        o->line[o->line_len++] = buf[i];
    }
}

static void feed_stderr(struct build_output *o, const char *buf, size_t n)
{
    if (n >= sizeof(o->tail)) {
        memcpy(o->tail, buf + n - sizeof(o->tail), sizeof(o->tail));
        o->tail_len = sizeof(o->tail);
        return;
    }
    if (o->tail_len + n > sizeof(o->tail)) {
        size_t drop = o->tail_len + n - sizeof(o->tail);
        memmove(o->tail, o->tail + drop, o->tail_len - drop);
        o->tail_len -= drop;
    }
    memcpy(o->tail + o->tail_len, buf, n);
    o->tail_len += n;
}

/* Serialise builds of one home: $home/images/.default.lock. */
static int lock_build(const char *home, uint64_t deadline, int *ret, vmctl_error **reterr)
{
    cleanup_free char *path = str_printf("%s/images/.default.lock", home);
    if (!path)
        return -ENOMEM;
    cleanup_close int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return err_make(reterr, VMCTL_E_IO, errno, "cannot open '%s'", path);
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK && errno != EINTR)
            return err_make(reterr, VMCTL_E_IO, errno, "cannot lock '%s'", path);
        if (now_usec() >= deadline)
            return err_timeout(reterr, "image build-default", BUILD_TIMEOUT_SEC,
                               "another `vmctl image build-default` holds '%s'", path);
        sleep_usec(100 * 1000);
    }
    *ret = TAKE_FD(fd);
    return 0;
}

static int missing_resource(vmctl_error **reterr, const char *path)
{
    int r = err_make(reterr, VMCTL_E_HOST_MISSING_DEPENDENCY, ENOENT,
                     "cannot find '%s', which vmctl needs to build the default guest", path);
    err_detail(reterr, "path", "%s", path);
    err_help(reterr, "Reinstall vmctl, or set VMCTL_LIBEXEC_DIR to the directory holding "
                     "vmctl-agent and build-default.sh.");
    return r;
}

int guest_build_default(const char *home, bool force, vmctl_progress_fn progress, void *userdata,
                        vmctl_error **reterr)
{
    uint64_t deadline = now_usec() + (uint64_t)BUILD_TIMEOUT_SEC * 1000000u;
    cleanup_free char *script = resource_path("build-default.sh");
    cleanup_free char *agent = resource_path("vmctl-agent");
    cleanup_free char *cache = cache_dir();
    cleanup_free char *images = str_printf("%s/images", home);
    cleanup_free char *out = default_dir(home);
    if (!script || !agent || !cache || !images || !out)
        return -ENOMEM;
    if (!file_exists(script))
        return missing_resource(reterr, script);
    if (!is_executable(agent))
        return missing_resource(reterr, agent);
    cleanup_free char *bash = find_in_path("bash");
    if (!bash) {
        int r = err_make(reterr, VMCTL_E_HOST_MISSING_DEPENDENCY, ENOENT,
                         "'bash' is needed to build the default guest");
        err_help(reterr, "Install the Debian package 'bash' (`apt-get install bash`).");
        return r;
    }
    int r = mkdir_private(images); /* images/ is 0700: cached disks are private */
    if (r < 0)
        return err_make(reterr, VMCTL_E_IO, r, "cannot create '%s'", images);
    r = mkdir_p(cache, 0755);
    if (r < 0)
        return err_make(reterr, VMCTL_E_IO, r, "cannot create the download cache '%s'", cache);
    cleanup_close int lock = -1;
    r = lock_build(home, deadline, &lock, reterr);
    if (r < 0)
        return r;

    int pout[2] = {-1, -1}, perr[2] = {-1, -1};
    if (pipe2(pout, O_CLOEXEC) < 0)
        return err_make(reterr, VMCTL_E_IO, errno, "cannot create a pipe for the build");
    cleanup_close int out_r = pout[0], out_w = pout[1];
    if (pipe2(perr, O_CLOEXEC) < 0)
        return err_make(reterr, VMCTL_E_IO, errno, "cannot create a pipe for the build");
    cleanup_close int err_r = perr[0], err_w = perr[1];

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    posix_spawn_file_actions_adddup2(&fa, err_w, 2);
    posix_spawnattr_init(&attr);
    /* own process group, so a timeout kills the whole build; default signal handling */
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGCHLD);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                        POSIX_SPAWN_SETSIGDEF);
    char *argv[] = {bash, script, out, agent, cache, force ? "--force" : NULL, NULL};
    pid_t pid;
    r = posix_spawn(&pid, bash, &fa, &attr, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (r != 0)
        return err_make(reterr, VMCTL_E_IO, r, "cannot run '%s'", script);
    close(TAKE_FD(out_w));
    close(TAKE_FD(err_w));

    struct build_output *o = calloc(1, sizeof(*o));
    if (!o) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -ENOMEM;
    }
    cleanup_free struct build_output *o_free = o;
    o->progress = progress;
    o->userdata = userdata;
    bool timed_out = false;
    while (out_r >= 0 || err_r >= 0) {
        struct pollfd p[2] = {{.fd = out_r, .events = POLLIN}, {.fd = err_r, .events = POLLIN}};
        uint64_t now = now_usec();
        if (now >= deadline) {
            timed_out = true;
            break;
        }
        uint64_t left_ms = (deadline - now) / 1000 + 1;
        int k = poll(p, 2, left_ms > 60000 ? 60000 : (int)left_ms);
        if (k < 0 && errno != EINTR)
            break;
        char buf[4096];
        for (int i = 0; i < 2; i++) {
            if (p[i].fd < 0 || !p[i].revents)
                continue;
            ssize_t n = read(p[i].fd, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                close(i == 0 ? TAKE_FD(out_r) : TAKE_FD(err_r));
                continue;
            }
            if (i == 0)
                feed_stdout(o, buf, (size_t)n);
            else
                feed_stderr(o, buf, (size_t)n);
        }
    }
    if (timed_out || out_r >= 0 || err_r >= 0)
        kill(-pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (o->line_len) {
        o->line[o->line_len] = 0;
        handle_line(o, o->line);
    }
    char tail[STDERR_TAIL + 1];
    memcpy(tail, o->tail, o->tail_len);
    tail[o->tail_len] = 0;
    while (o->tail_len && tail[o->tail_len - 1] == '\n')
        tail[--o->tail_len] = 0;

    if (timed_out) {
        r = err_timeout(reterr, "image build-default", BUILD_TIMEOUT_SEC,
                        "building the default guest took longer than %d minutes",
                        BUILD_TIMEOUT_SEC / 60);
        if (tail[0])
            err_note(reterr, "%s", tail);
        return r;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3 && o->missing_tool[0]) {
        r = err_make(reterr, VMCTL_E_HOST_MISSING_DEPENDENCY, ENOENT,
                     "'%s' is needed to build the default guest (Debian package '%s')",
                     o->missing_tool, o->missing_pkg);
        err_detail(reterr, "package", "%s", o->missing_pkg);
        err_help(reterr,
                 "Install the Debian package '%s' (`apt-get install %s`), then run `vmctl image "
                 "build-default` again.",
                 o->missing_pkg, o->missing_pkg);
        return r;
    }
    if (WIFEXITED(status))
        r = err_make(reterr, VMCTL_E_IO, EIO,
                     "building the default guest failed (build-default.sh exited with status %d)",
                     WEXITSTATUS(status));
    else
        r = err_make(reterr, VMCTL_E_IO, EIO,
                     "building the default guest failed (build-default.sh killed by signal %d)",
                     WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    err_detail(reterr, "path", "%s", script);
    if (tail[0])
        err_note(reterr, "%s", tail);
    err_help(reterr, "The note holds the end of the build script's error output: fix what it names "
                     "(for a package that cannot be found, `apt-get update`), then run `vmctl "
                     "image build-default` again.");
    return r;
}
