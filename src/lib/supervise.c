/* SPDX-License-Identifier: MIT */
/* The detached spawn, the supervisor and its exit record (supervise.h). Nothing here knows which
 * hypervisor it runs. */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/close_range.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "jail.h"
#include "supervise.h"
#include "util/util.h"
#include "vm-dir.h"

/* How long to wait for the launcher's reports (both writers exit or exec at once). */
#define SUPERVISE_REPORT_USEC (5ULL * 1000000ULL)

/* What the intermediate child and the hypervisor's process (before exec) report on a CLOEXEC pipe.
 * The pipe reaches EOF once the intermediate has exited and the exec has succeeded. */
enum { MSG_PID = 1, MSG_ERRNO = 2 };
struct spawn_msg {
    int kind;
    int value;
    int stage; /* for MSG_ERRNO: what failed */
    int step;  /* for STAGE_JAIL: the jail_step */
};
enum {
    STAGE_SETSID,
    STAGE_FORK,
    STAGE_SETUP,
    STAGE_EXEC,
    STAGE_JAIL,
    STAGE_HELPER,
    STAGE_HELPER_NS
};
static const char *const stage_names[] = {"setsid",
                                          "fork",
                                          "descriptor setup",
                                          "exec",
                                          "jail",
                                          "a helper (its socket did not appear)",
                                          "a helper's read-only mount namespace"};
#define STAGE_LAST STAGE_HELPER_NS

/* How long the supervisor waits for a helper's socket before giving up on the launch (below the
 * caller's SUPERVISE_REPORT_USEC). */
#define HELPER_SOCKET_USEC (4ULL * 1000000ULL)

static void send_msg_step(int fd, int kind, int value, int stage, int step)
{
    struct spawn_msg m = {kind, value, stage, step};
    ssize_t n;
    do
        n = write(fd, &m, sizeof(m));
    while (n < 0 && errno == EINTR);
}

static void send_msg(int fd, int kind, int value, int stage)
{
    send_msg_step(fd, kind, value, stage, 0);
}

/* Child side, after fork: only async-signal-safe calls from here on. */
static _Noreturn void exec_child(const char *binary, char **argv, int nullfd, int logfd, int msgfd,
                                 const jail *jl, const int *keep, size_t n_keep, int keep_fd)
{
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++)
        (void)sigaction(sig, &dfl, NULL);
    if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0 || chdir("/") < 0) {
        send_msg(msgfd, MSG_ERRNO, errno, STAGE_SETUP);
        _exit(127);
    }
    int step = 0;
    int jr = jl ? jail_enter(jl, &step) : 0;
    if (jr < 0) {
        send_msg_step(msgfd, MSG_ERRNO, -jr, STAGE_JAIL, step);
        _exit(127);
    }
    /* nothing of vmctl's (locks, the store, sockets) may leak into the long-lived hypervisor */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        for (int fd = 3; fd < 65536; fd++)
            (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    for (size_t i = 0; i < n_keep; i++)
        if (keep[i] >= 3 && fcntl(keep[i], F_SETFD, 0) < 0) {
            send_msg(msgfd, MSG_ERRNO, errno, STAGE_SETUP);
            _exit(127);
        }
    /* but the one it is told to use (QEMU's -netdev tap,fd=N) */
    if (keep_fd >= 3 && fcntl(keep_fd, F_SETFD, 0) < 0) {
        send_msg(msgfd, MSG_ERRNO, errno, STAGE_SETUP);
        _exit(127);
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(binary, argv);
    send_msg(msgfd, MSG_ERRNO, errno, STAGE_EXEC);
    _exit(127);
}

/* Async-signal-safe decimal. */
static size_t fmt_uint(char *buf, unsigned v)
{
    char tmp[16];
    size_t n = 0, k = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) && n < sizeof(tmp));
    while (n)
        buf[k++] = tmp[--n];
    return k;
}

/* The supervisor, after fork (async-signal-safe calls only). First the launch handshake: until
 * vmctl has recorded the process in the store it holds the write end of gofd; it writes one byte
 * once the record is made. EOF without that byte (vmctl failed, or was killed, before recording
 * it) and the process is killed: it never outlives a vmctl that did not record it. Then wait for
 * it and record how it ended in dirfd/VM_FILE_EXIT (written aside and renamed: never seen
 * half-written). The record: "pid P exit N" or "pid P signal N" (supervise_exit_parse). */
static _Noreturn void supervise(pid_t child, int dirfd, int gofd, int ownerfd, const pid_t *helpers,
                                size_t n_helpers)
{
    char go = 0;
    ssize_t k;
    do
        k = read(gofd, &go, 1);
    while (k < 0 && errno == EINTR);
    if (k != 1)
        (void)kill(child, SIGKILL);
    close(gofd);
    /* The owner's end (its pidfd becomes readable) kills the process. */
    int childfd = ownerfd >= 0 ? (int)syscall(SYS_pidfd_open, child, 0) : -1;
    while (childfd >= 0) {
        struct pollfd pf[2] = {{.fd = childfd, .events = POLLIN},
                               {.fd = ownerfd, .events = POLLIN}};
        int n = poll(pf, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 || pf[0].revents)
            break;
        if (pf[1].revents) {
            (void)kill(child, SIGKILL);
            break;
        }
    }
    int status = 0;
    pid_t w;
    for (;;) { /* helpers that end first are reaped on the way */
        w = waitpid(-1, &status, 0);
        if (w == child || (w < 0 && errno != EINTR))
            break;
    }
    for (size_t i = 0; i < n_helpers; i++)
        (void)kill(helpers[i], SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    if (w != child)
        _exit(1);
    char line[48] = "pid ";
    size_t n = 4;
    n += fmt_uint(line + n, (unsigned)child);
    const char *what = WIFSIGNALED(status) ? " signal " : " exit ";
    for (const char *c = what; *c; c++)
        line[n++] = *c;
    n += fmt_uint(line + n,
                  (unsigned)(WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status)));
    line[n++] = '\n';
    /* O_NOFOLLOW: a jailed hypervisor's uid owns the directory (a link planted there must not
     * make root write elsewhere) */
    int fd = openat(dirfd, VM_FILE_EXIT ".tmp",
                    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd >= 0) {
        bool ok = write(fd, line, n) == (ssize_t)n;
        close(fd);
        if (ok)
            (void)renameat(dirfd, VM_FILE_EXIT ".tmp", dirfd, VM_FILE_EXIT);
    }
    _exit(0);
}

/* Close every descriptor from 3 up but keep[0..n) (ascending; negative entries ignored). */
static void close_all_but(const int *keep, size_t n)
{
    unsigned from = 3;
    for (size_t i = 0; i < n; i++) {
        if (keep[i] < (int)from)
            continue;
        if ((unsigned)keep[i] > from)
            (void)syscall(SYS_close_range, from, (unsigned)keep[i] - 1, 0U);
        from = (unsigned)keep[i] + 1;
    }
    (void)syscall(SYS_close_range, from, ~0U, 0U);
}

/* A file server for the guest (virtiofsd) runs as root on the host and does what the guest
 * asks: without this, a guest's root could leave a set-user-ID-root program or a device node in
 * the shared directory for the host's users to run or open. The filter refuses (EPERM) every
 * mode with S_ISUID or S_ISGID to chmod, fchmod, fchmodat, fchmodat2, open, openat and creat,
 * and character and block devices (or those bits) to mknod and mknodat; openat2, whose mode
 * the filter cannot see, is ENOSYS (glibc and virtiofsd fall back to openat). Extended
 * attributes (file capabilities) are off in virtiofsd by default (no_xattr). */
#define SC_ARG(n)  offsetof(struct seccomp_data, args[n]) /* the low 32 bits (little endian) */
#define SC_DENY    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM)
#define SC_ALLOW   BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)
#define SC_MODE(n) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, SC_ARG(n))
#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif
static int deny_privileged_modes(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        SC_ALLOW,
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        /* which argument holds the mode: 1 (chmod, fchmod, creat, open, mknod), 2 (fchmodat,
         * fchmodat2, mknodat), 3 (openat) */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_chmod, 9, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fchmod, 8, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_creat, 7, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_open, 6, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fchmodat, 7, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_fchmodat2, 6, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 7, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mknod, 8, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mknodat, 12, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat2, 16, 18),
        /* chmod, fchmod, creat, open: the mode in argument 1 */
        SC_MODE(1),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 06000, 15, 16),
        /* fchmodat, fchmodat2: argument 2 */
        SC_MODE(2),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 06000, 13, 14),
        /* openat: argument 3 */
        SC_MODE(3),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 06000, 11, 12),
        /* mknod: argument 1, its type too */
        SC_MODE(1),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 06000, 9, 0),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0170000),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0020000, 7, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0060000, 6, 7),
        /* mknodat: argument 2 */
        SC_MODE(2),
        BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 06000, 4, 0),
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0170000),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0020000, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0060000, 1, 2),
        /* openat2 */
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        SC_DENY,
        SC_ALLOW,
    };
    struct sock_fprog prog = {.len = (unsigned short)ELEMENTSOF(f), .filter = f};
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

/* A helper's child (async-signal-safe calls only): dies with the supervisor, sees ro_dir
 * read-only, may not make privileged files, then execs like the hypervisor. */
static _Noreturn void exec_helper(const supervise_helper *h, int nullfd, int logfd, int msgfd)
{
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (h->ro_dir &&
        (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
         mount(h->ro_dir, h->ro_dir, NULL, MS_BIND | MS_REC, NULL) < 0 ||
         mount(NULL, h->ro_dir, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)) {
        send_msg(msgfd, MSG_ERRNO, errno, STAGE_HELPER_NS);
        _exit(127);
    }
    if (h->no_privileged_files && deny_privileged_modes() < 0) {
        send_msg(msgfd, MSG_ERRNO, errno, STAGE_HELPER_NS);
        _exit(127);
    }
    exec_child(h->binary, h->argv, nullfd, logfd, msgfd, NULL, NULL, 0, -1);
}

/* Start the helpers and wait for their sockets (in the supervisor). 0, or an errno reported on
 * msgfd (the helpers started are killed). */
static int start_helpers(const supervise_helper *hs, size_t n, pid_t *pids, int dirfd, int nullfd,
                         int logfd, int msgfd, uid_t socket_uid)
{
    size_t started = 0;
    int e = 0, stage = STAGE_FORK;
    for (; started < n; started++) {
        pid_t h = _Fork();
        if (h == 0)
            exec_helper(&hs[started], nullfd, logfd, msgfd);
        if (h < 0) {
            e = errno;
            break;
        }
        pids[started] = h;
    }
    struct timespec tick = {.tv_nsec = 2 * 1000 * 1000};
    for (size_t i = 0; !e && i < n; i++) {
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct stat st;
        while (fstatat(dirfd, hs[i].socket, &st, 0) < 0) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            uint64_t waited = (uint64_t)(t.tv_sec - t0.tv_sec) * 1000000ULL +
                              (uint64_t)((t.tv_nsec - t0.tv_nsec) / 1000);
            if (waitpid(pids[i], NULL, WNOHANG) == pids[i]) {
                e = ECHILD;
                stage = STAGE_HELPER;
                break;
            }
            if (waited > HELPER_SOCKET_USEC) {
                e = ETIMEDOUT;
                stage = STAGE_HELPER;
                break;
            }
            nanosleep(&tick, NULL);
        }
        /* a jailed hypervisor runs as the VM's uid: the helper's socket (made 0600 by root
         * under the supervisor's umask) becomes its */
        if (!e && socket_uid && fchownat(dirfd, hs[i].socket, socket_uid, socket_uid, 0) < 0) {
            e = errno;
            stage = STAGE_HELPER;
        }
    }
    if (!e)
        return 0;
    for (size_t i = 0; i < started; i++)
        (void)kill(pids[i], SIGKILL);
    while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
        ;
    send_msg(msgfd, MSG_ERRNO, e, stage);
    return -e;
}

int supervise_spawn(const supervise_spawn_args *a, pid_t *ret, int *ret_go, vmctl_error **reterr)
{
    if (!a || !a->binary || !a->argv || !ret || !ret_go || a->n_helpers > SUPERVISE_MAX_HELPERS ||
        (a->n_helpers && !a->helpers))
        return err_make(reterr, VMCTL_E_INTERNAL, EINVAL, "supervise_spawn: invalid arguments");
    /* the owner's pidfd, checked to be the recorded process (pid + start time) once open */
    cleanup_close int ownerfd_low = -1;
    if (a->owner_pid) {
        ownerfd_low = (int)syscall(SYS_pidfd_open, a->owner_pid, 0);
        if (ownerfd_low < 0 && errno != ESRCH)
            return err_make(reterr, a->error_kind, errno,
                            "cannot watch the owner (pid %d) of the VM", (int)a->owner_pid);
        if (ownerfd_low < 0 || proc_start_time(a->owner_pid) != a->owner_start) {
            int r = err_make(reterr, a->error_kind, ESRCH,
                             "the owner of the VM (pid %d) is gone: it is removed with its owner",
                             (int)a->owner_pid);
            err_help(reterr, "Remove it with `vmctl destroy NAME --force`.");
            return r;
        }
        (void)fcntl(ownerfd_low, F_SETFD, FD_CLOEXEC);
    }
    const char *binary = a->binary;
    char **argv = a->argv;
    int logfd_in = a->logfd, dirfd_in = a->dirfd;
    vmctl_error_kind kind = a->error_kind;
    /* descriptors >= 3, so that the dup2s onto 0-2 cannot clobber each other */
    cleanup_close int logfd = fcntl(logfd_in, F_DUPFD_CLOEXEC, 3);
    cleanup_close int dirfd = fcntl(dirfd_in, F_DUPFD_CLOEXEC, 3);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    cleanup_close int nullfd = devnull >= 0 ? fcntl(devnull, F_DUPFD_CLOEXEC, 3) : -1;
    if (devnull >= 0)
        close(devnull);
    int p[2] = {-1, -1}, g[2] = {-1, -1};
    if (logfd < 0 || dirfd < 0 || nullfd < 0 || pipe2(p, O_CLOEXEC) < 0)
        return err_make(reterr, kind, errno, "cannot start '%s'", binary);
    cleanup_close int rd = p[0];
    /* a socket, not a pipe: the commit's send() must not raise SIGPIPE in the caller when the
     * supervisor is gone */
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, g) < 0) {
        int e = errno;
        close(p[1]);
        return err_make(reterr, kind, e, "cannot start '%s'", binary);
    }
    /* the supervisor's end above the others, so that close_all_but() gets them in order */
    cleanup_close int gofd = fcntl(g[0], F_DUPFD_CLOEXEC, dirfd + 1);
    close(g[0]);
    cleanup_close int gowr = g[1];
    /* the owner's pidfd above gofd, for close_all_but() */
    cleanup_close int ownerfd =
        ownerfd_low >= 0 && gofd >= 0 ? fcntl(ownerfd_low, F_DUPFD_CLOEXEC, gofd + 1) : -1;
    if (gofd < 0 || (ownerfd_low >= 0 && ownerfd < 0)) {
        int e = errno;
        close(p[1]);
        return err_make(reterr, kind, e, "cannot start '%s'", binary);
    }

    /* block signals across fork: no handler of the caller's may run in the children (the
     * supervisor keeps them all blocked: it only waits) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t mid = fork();
    if (mid == 0) {
        close(p[0]);
        close(gowr);
        /* the hypervisor creates the sockets (control, agent, console), console.log and the
         * pid file: 0600 whatever the caller's umask (a control socket is root in the guest and
         * on the host) */
        umask(0177);
        if (setsid() < 0) {
            send_msg(p[1], MSG_ERRNO, errno, STAGE_SETSID);
            _exit(1);
        }
        pid_t sup = _Fork();
        if (sup < 0) {
            send_msg(p[1], MSG_ERRNO, errno, STAGE_FORK);
            _exit(1);
        }
        if (sup > 0)
            _exit(0); /* the supervisor goes to init */
        pid_t helpers[SUPERVISE_MAX_HELPERS];
        if (a->n_helpers && start_helpers(a->helpers, a->n_helpers, helpers, dirfd, nullfd, logfd,
                                          p[1], a->jail ? jail_uid(a->jail) : 0) < 0)
            _exit(1);
        /* the hypervisor the init of a PID namespace of its own: the supervisor stays outside
         * (it sees, reports and reaps the host pid) */
        int pr = a->jail ? jail_unshare_pid() : 0;
        if (pr < 0) {
            send_msg_step(p[1], MSG_ERRNO, -pr, STAGE_JAIL, JAIL_STEP_PID_NAMESPACE);
            _exit(1);
        }
        pid_t q = _Fork();
        if (q == 0)
            exec_child(binary, argv, nullfd, logfd, p[1], a->jail, a->keep_fds, a->n_keep_fds,
                       a->keep_fd);
        if (q < 0) {
            send_msg(p[1], MSG_ERRNO, errno, STAGE_FORK);
            _exit(1);
        }
        send_msg(p[1], MSG_PID, (int)q, 0);
        /* nothing of vmctl's (its locks above all, and the terminal or pipe on its stdio: a
         * `$(vmctl start x)` would wait for it) may stay open in the long-lived supervisor */
        (void)dup2(nullfd, 0);
        (void)dup2(nullfd, 1);
        (void)dup2(nullfd, 2);
        int keep[] = {dirfd, gofd, ownerfd};
        close_all_but(keep, 3);
        (void)prctl(PR_SET_NAME, "vmctl-supervise");
        supervise(q, dirfd, gofd, ownerfd, helpers, a->n_helpers);
    }
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(p[1]);
    close(TAKE_FD(gofd)); /* the supervisor's */
    if (mid < 0)
        return err_make(reterr, kind, fork_errno, "cannot start '%s'", binary);
    while (waitpid(mid, NULL, 0) < 0 && errno == EINTR)
        ;

    /* read the reports until EOF (bounded: both writers exit or exec at once) */
    pid_t pid = 0;
    int failed_errno = 0, failed_stage = 0, failed_step = 0;
    uint64_t deadline = now_usec() + SUPERVISE_REPORT_USEC;
    for (;;) {
        struct pollfd pfd = {.fd = rd, .events = POLLIN};
        uint64_t now = now_usec();
        if (now >= deadline)
            break;
        int k = poll(&pfd, 1, (int)((deadline - now) / 1000 + 1));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        struct spawn_msg m;
        ssize_t n = read(rd, &m, sizeof(m));
        if (n < 0 && errno == EINTR)
            continue;
        if (n != (ssize_t)sizeof(m))
            break; /* EOF */
        if (m.kind == MSG_PID)
            pid = (pid_t)m.value;
        else if (m.kind == MSG_ERRNO && !failed_errno) {
            failed_errno = m.value;
            failed_stage = m.stage;
            failed_step = m.step;
        }
    }
    if (failed_errno && failed_stage == STAGE_JAIL) {
        int r =
            err_make(reterr, VMCTL_E_JAILER_FAILED, failed_errno, "cannot jail '%s': %s failed: %s",
                     binary, jail_step_name(failed_step), strerror(failed_errno));
        err_detail(reterr, "step", "%s", jail_step_name(failed_step));
        err_help(reterr, "`vmctl doctor` shows what the jail needs on this host; create the VM "
                         "with `--no-jail` to run it unconfined.");
        return r;
    }
    if (failed_errno) {
        int r = err_make(reterr, kind, failed_errno, "cannot start '%s': %s failed", binary,
                         stage_names[failed_stage >= 0 && failed_stage <= STAGE_LAST ? failed_stage
                                                                                     : STAGE_EXEC]);
        err_detail(reterr, "binary", "%s", binary);
        return r;
    }
    if (pid <= 0)
        return err_make(reterr, kind, EIO, "cannot start '%s': the launcher reported no process",
                        binary);
    *ret = pid;
    *ret_go = TAKE_FD(gowr);
    return 0;
}

void supervise_commit(int hold)
{
    if (hold < 0)
        return;
    char go = 1;
    ssize_t n;
    do
        n = send(hold, &go, 1, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    close(hold);
}

/* ---------- the exit record ---------- */

int supervise_exit_parse(const char *text, pid_t pid, supervise_exit *ret)
{
    if (!text || !ret)
        return -EINVAL;
    unsigned long p = 0;
    char what[16];
    unsigned code = 0;
    if (sscanf(text, "pid %lu %15s %u", &p, what, &code) != 3 ||
        (!streq(what, "exit") && !streq(what, "signal")) || code > 255)
        return -EBADMSG;
    if (p != (unsigned long)pid)
        return -ENOENT;
    *ret = (supervise_exit){.signaled = streq(what, "signal"), .code = (int)code};
    return 0;
}

int supervise_exit_read(const char *dir, pid_t pid, supervise_exit *ret)
{
    cleanup_free char *path = str_printf("%s/" VM_FILE_EXIT, dir);
    cleanup_free char *text = NULL;
    if (!path || read_file_tail(path, 64, &text) < 0 || !text)
        return -ENOENT;
    return supervise_exit_parse(text, pid, ret) < 0 ? -ENOENT : 0;
}

int supervise_exit_wait(const char *dir, pid_t pid, uint64_t usec, supervise_exit *ret)
{
    uint64_t deadline = now_usec() + usec;
    int r;
    while ((r = supervise_exit_read(dir, pid, ret)) == -ENOENT && now_usec() < deadline)
        sleep_usec(2000);
    return r;
}
