/* SPDX-License-Identifier: MIT */
/* containerd-shim-vmctl-v2: the binary containerd runs for runtime io.containerd.vmctl.v2.
 *   start:  make the ttRPC socket, fork the serving shim (a daemon of its own session), print the
 *           socket's address (unix://PATH) for containerd to connect to.
 *   delete: containerd's cleanup of a shim that is gone: destroy what is left of the task's VM,
 *           print a DeleteResponse (protobuf) on stdout.
 * Flags as containerd passes them (Go's flag syntax): -namespace NS -address ADDR
 * -publish-binary BIN -id ID [-bundle DIR] [-debug]; the bundle is the working directory. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

static int parse_args(int argc, char **argv, const char **action)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            *action = a;
            continue;
        }
        a += a[1] == '-' ? 2 : 1;
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        const char **dst = NULL;
        if (n == 5 && !strncmp(a, "debug", 5)) {
            shim_opts.debug = !eq || strcmp(eq + 1, "false") != 0;
            continue;
        }
        if (n == 9 && !strncmp(a, "namespace", 9))
            dst = &shim_opts.namespace;
        else if (n == 7 && !strncmp(a, "address", 7))
            dst = &shim_opts.address;
        else if (n == 14 && !strncmp(a, "publish-binary", 14))
            dst = &shim_opts.publish_binary;
        else if (n == 2 && !strncmp(a, "id", 2))
            dst = &shim_opts.id;
        else if (n == 6 && !strncmp(a, "bundle", 6))
            dst = &shim_opts.bundle;
        else if ((n == 1 && a[0] == 'v') || (n == 7 && !strncmp(a, "version", 7))) {
            *action = "version";
            continue;
        } else {
            fprintf(stderr, "containerd-shim-vmctl-v2: unknown flag '%s'\n", argv[i]);
            return -1;
        }
        if (eq)
            *dst = eq + 1;
        else if (i + 1 < argc)
            *dst = argv[++i];
        else {
            fprintf(stderr, "containerd-shim-vmctl-v2: flag '%s' needs a value\n", argv[i]);
            return -1;
        }
    }
    return 0;
}

static int listen_on(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    mkdir(shim_socket_dir(), 0711);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    chmod(path, 0600);
    return fd;
}

static int cmd_start(void)
{
    char *path = shim_socket_path(shim_opts.namespace, shim_opts.id);
    if (!path)
        return 1;
    int fd = listen_on(path);
    if (fd < 0) {
        fprintf(stderr, "containerd-shim-vmctl-v2: cannot listen on '%s': %s\n", path,
                strerror(-fd));
        return 1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "containerd-shim-vmctl-v2: cannot fork: %s\n", strerror(errno));
        unlink(path);
        return 1;
    }
    if (pid > 0) {
        char addr[256];
        snprintf(addr, sizeof(addr), "unix://%s", path);
        FILE *f = fopen("address", "we"); /* containerd reads it to reconnect after a restart */
        if (f) {
            fputs(addr, f);
            fclose(f);
        }
        printf("%s", addr);
        free(path);
        return 0;
    }
    /* the serving shim: a session of its own, stdio away from containerd's pipes (containerd
     * waits for them to close), stderr to the bundle's log FIFO */
    setsid();
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    int log = open("log", O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(log >= 0 ? log : null, STDERR_FILENO);
    if (log >= 0)
        close(log);
    close(null);
    signal(SIGPIPE, SIG_IGN);
    if (!shim_opts.bundle) {
        static char cwd[4096];
        if (getcwd(cwd, sizeof(cwd)))
            shim_opts.bundle = cwd;
    }
    int r = shim_serve(fd);
    close(fd);
    shim_publish_flush();
    unlink(path);
    free(path);
    _exit(r);
}

static int cmd_delete(void)
{
    char *name = shim_vm_name(shim_opts.namespace, shim_opts.id);
    vmctl_ctx *ctx = NULL;
    vmctl_error *err = NULL;
    /* nothing is created here: no store, nothing to clean up */
    if (name && vmctl_ctx_open(NULL, VMCTL_CTX_NO_CREATE, &ctx, &err) >= 0) {
        vmctl_vm_info *info = NULL;
        if (vmctl_vm_get(ctx, name, &info, NULL) >= 0) {
            vmctl_vm_info_free(info);
            if (vmctl_vm_destroy(ctx, name, true, &err) < 0)
                fprintf(stderr, "cannot destroy vm '%s': %s\n", name, vmctl_error_get_message(err));
        }
    }
    vmctl_error_free(err);
    vmctl_ctx_free(ctx);
    free(name);
    /* a rootfs we mounted (CreateTaskRequest.rootfs) */
    char rootfs[4096];
    snprintf(rootfs, sizeof(rootfs), "%s/rootfs", shim_opts.bundle ? shim_opts.bundle : ".");
    umount2(rootfs, MNT_DETACH);
    char *path = shim_socket_path(shim_opts.namespace, shim_opts.id);
    if (path)
        unlink(path);
    free(path);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    pbw w = {0};
    pbw_varint_field(&w, 2, 128 + SIGKILL);
    pbw_timestamp_field(&w, 3, &now);
    if (w.len && fwrite(w.buf, 1, w.len, stdout) != w.len)
        return 1;
    pbw_free(&w);
    return 0;
}

int main(int argc, char **argv)
{
    const char *action = NULL;
    /* containerd under systemd may run without HOME: the store is then the user's by passwd */
    struct passwd *pw = NULL;
    if (!getenv("VMCTL_HOME") && !getenv("XDG_DATA_HOME") && !getenv("HOME") &&
        (pw = getpwuid(getuid())) && pw->pw_dir)
        setenv("HOME", pw->pw_dir, 1);
    if (parse_args(argc, argv, &action) < 0)
        return 2;
    if (action && !strcmp(action, "version")) {
        printf("containerd-shim-vmctl-v2:\n  Version: %s\n", vmctl_version());
        return 0;
    }
    if (!action || !shim_opts.namespace || !shim_opts.id) {
        fprintf(stderr, "usage: containerd-shim-vmctl-v2 -namespace NS -address ADDR "
                        "-publish-binary BIN -id ID [-bundle DIR] start|delete\n");
        return 2;
    }
    if (!strcmp(action, "start"))
        return cmd_start();
    if (!strcmp(action, "delete"))
        return cmd_delete();
    fprintf(stderr, "containerd-shim-vmctl-v2: unknown action '%s'\n", action);
    return 2;
}
