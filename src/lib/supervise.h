/* SPDX-License-Identifier: MIT */
/* A hypervisor launched detached, under a supervisor of its own, and the record of how it ended.
 *
 * supervise_spawn() forks three times: an intermediate child starts its own session, forks the
 * supervisor and exits, so the supervisor is reparented to init and is never the caller's child.
 * The supervisor (named vmctl-supervise) closes everything of the caller's, forks the hypervisor
 * and waits for it; when it ends it writes how into the VM directory (VM_FILE_EXIT) and exits.
 * So the hypervisor outlives vmctl, is reaped at once (no zombie waiting for init) and its exit
 * status is known. Only this module knows the record's format: read it with supervise_exit_*().
 *
 * The launch handshake: until the caller has recorded the process (in the store), it holds the
 * other end of a socketpair (*ret_hold). supervise_commit() writes one byte; EOF without it (the
 * caller failed, or was killed) and the supervisor kills the process at once. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <vmctl/error.h>

/* A helper process the hypervisor needs (virtiofsd): started by the supervisor before the
 * hypervisor, killed by it when the hypervisor ends (and by the kernel when the supervisor dies:
 * PR_SET_PDEATHSIG), so that none outlives its VM. */
typedef struct supervise_helper {
    const char *binary;
    char **argv;
    const char *socket;       /* a file it makes in the VM directory: the hypervisor starts after it
                                 exists (within 4 s, else the launch fails) */
    const char *ro_dir;       /* or NULL: a directory the helper sees read-only (a read-only bind
                                 mount in a mount namespace of its own) */
    bool no_privileged_files; /* a seccomp filter: no set-user/group-ID mode, no device node
                                 (a file server for the guest: supervise.c) */
} supervise_helper;

#define SUPERVISE_MAX_HELPERS 16

typedef struct supervise_spawn_args {
    const char *binary; /* executed as is (a path) */
    char **argv;        /* argv[0] included, NULL-terminated */
    int logfd;          /* the process's stdout and stderr (its stdin is /dev/null) */
    int dirfd;          /* the VM directory: the exit record goes there */
    int keep_fd;        /* >= 3: a descriptor the process inherits (a TAP); 0 or < 0: none */
    /* the code of spawn errors: the backend's own (qemu::spawn_failed) */
    vmctl_error_kind error_kind;
    /* NULL: none. Else the supervisor unshares the PID namespace before forking the process
     * (which is then the init of its namespace, its host pid still the one reported) and the
     * process enters the jail before exec; a failure there is jailer::failed naming the step. */
    const struct jail *jail;
    /* descriptors the process inherits at the same numbers (all others of the caller's are
     * closed at exec) */
    const int *keep_fds;
    size_t n_keep_fds;
    const supervise_helper *helpers;
    size_t n_helpers; /* at most SUPERVISE_MAX_HELPERS */
    /* The owner (pid + start time; pid 0: none): when it is gone (watched by pidfd), the
     * supervisor kills the process. An owner already gone fails the spawn. */
    pid_t owner_pid;
    uint64_t owner_start;
} supervise_spawn_args;

/* Start a->binary detached (own session, umask 0177, every signal at its default, descriptors
 * 3 and up closed but a->keep_fd). *ret_pid gets its pid once exec has succeeded, *ret_hold the
 * caller's end of the launch handshake. A failed exec (or fork, setsid, ...) is an error of
 * a->error_kind naming the step that failed. */
int supervise_spawn(const supervise_spawn_args *a, pid_t *ret_pid, int *ret_hold,
                    vmctl_error **reterr);

/* The launch is recorded: the supervisor keeps the process from now on. Closes hold (< 0: no-op).
 */
void supervise_commit(int hold);

/* How a supervised process ended. */
typedef struct supervise_exit {
    bool signaled; /* killed by signal `code`; else exited with status `code` */
    int code;
} supervise_exit;

/* The record's text ("pid P exit N" or "pid P signal N") for process pid: 0 and *ret, -ENOENT
 * when it is about another process, -EBADMSG when it is not a record. */
int supervise_exit_parse(const char *text, pid_t pid, supervise_exit *ret);
/* The record in dir for process pid: 0 and *ret, -ENOENT when there is none (yet) for pid. */
int supervise_exit_read(const char *dir, pid_t pid, supervise_exit *ret);
/* The process is gone: give its supervisor up to usec to write the record (it does so right after
 * reaping it, but a reader can see the process gone first). As supervise_exit_read. */
int supervise_exit_wait(const char *dir, pid_t pid, uint64_t usec, supervise_exit *ret);
/* Exited with status 0 (the guest powered itself off, or the hypervisor was asked to quit). */
static inline bool supervise_exit_clean(const supervise_exit *e)
{
    return !e->signaled && e->code == 0;
}
