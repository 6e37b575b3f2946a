/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <vmctl/error.h>
#include <vmctl/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which channel runs the command: auto = the agent when it answers, else SSH (vmctl/ssh.h). */
typedef enum vmctl_exec_via {
    VMCTL_EXEC_VIA_AUTO,
    VMCTL_EXEC_VIA_AGENT,
    VMCTL_EXEC_VIA_SSH,
} vmctl_exec_via;

typedef struct vmctl_exec_opts {
    char *const *argv;  /* NULL-terminated, argv[0] looked up in the guest's PATH */
    char *const *env;   /* "K=V" added to the guest environment, may be NULL */
    const char *cwd;    /* NULL: / */
    double timeout_sec; /* 0: none */
    const void *stdin_data;
    size_t stdin_len;
    vmctl_exec_via via; /* vmctl_exec, vmctl_exec_stream: 0 (auto) by default */
    /* Run as this guest user: "NAME" (from the guest's /etc/passwd, with its groups), "UID" or
     * "UID:GID"; HOME, USER and LOGNAME follow it. NULL: root, as the agent runs. Agent only. */
    const char *user;
    /* Run the command on a new pseudo-terminal in the guest (agent only): its controlling
     * terminal, its stdin, stdout and stderr (so its output all comes as stdout, with the
     * terminal's \r\n), in a session of its own (job control, Ctrl-C as a byte). tty_rows and
     * tty_cols are the terminal's size (0: unknown); vmctl_exec_resize changes it. An agent
     * without terminal support fails the call with exec::unavailable. */
    bool tty;
    unsigned tty_rows, tty_cols;
    /* Run chrooted into this absolute guest directory (agent only; a container's root in the
     * containerd shim): cwd, the PATH lookup of argv[0] and a user's name are taken inside it.
     * NULL: the guest's /. An agent without it fails the call with exec::unavailable. */
    const char *root;
} vmctl_exec_opts;

typedef struct vmctl_exec_result {
    int exit_code; /* valid when signal == 0 */
    int signal;    /* terminating signal, or 0 */
    char *out;
    size_t out_len;
    char *err;
    size_t err_len;
} vmctl_exec_result;

typedef struct vmctl_exec_status {
    int exit_code; /* exit status, or 128 + signal */
    int signal;    /* terminating signal, or 0 */
} vmctl_exec_status;

/* Output callbacks: each chunk of the command's stdout/stderr as it arrives (in the order the
 * guest read them). NULL drops that stream. Returning < 0 stops: the call fails with that code. */
typedef struct vmctl_exec_io {
    int (*on_stdout)(const void *data, size_t len, void *userdata);
    int (*on_stderr)(const void *data, size_t len, void *userdata);
    void *userdata;
    /* Keep the command's stdin open after opts->stdin_data: feed it with vmctl_exec_write and
     * end it with vmctl_exec_close_stdin. Otherwise it ends after opts->stdin_data. */
    bool stdin_open;
    /* vmctl_exec_stream only: when on_signal is set, signal_fd (e.g. a signalfd for SIGINT,
     * SIGTERM, SIGHUP) is watched too; once it is readable on_signal(signal_fd, userdata) is
     * called and returns the signal to send to the command's process group (0: none; < 0: stop
     * waiting, the call fails with that code). */
    int signal_fd;
    int (*on_signal)(int fd, void *userdata);
    /* vmctl_exec_stream only, may be NULL: called once the command was handed to the guest (a
     * CLI blocks the signals it forwards from then on; before, they may just end it). */
    void (*on_started)(void *userdata);
    /* vmctl_exec_stream with opts->tty only, may be NULL: when resize_fd (e.g. a signalfd for
     * SIGWINCH) is readable, on_resize(resize_fd, &rows, &cols, userdata) is called; returning
     * > 0 sends that size to the guest's terminal (0: nothing; < 0: stop, the call fails). */
    int resize_fd;
    int (*on_resize)(int fd, unsigned *rows, unsigned *cols, void *userdata);
} vmctl_exec_io;

/* A connection to a VM's guest agent; it can run several commands at once. A VM serves up to 4
 * sessions at once over virtio-serial (any number over AF_VSOCK); further ones wait for a port. */
typedef struct vmctl_exec_session vmctl_exec_session;
/* A command started on a session. */
typedef struct vmctl_exec_proc vmctl_exec_proc;

/* Errors: exec::unavailable (VM not running, no agent, agent not answering). */
int vmctl_exec_session_open(vmctl_ctx *ctx, const char *name, vmctl_exec_session **ret,
                            vmctl_error **reterr);
/* Kills what still runs on the session (the agent does, when the connection goes). */
void vmctl_exec_session_close(vmctl_exec_session *s);
/* The fd to poll for input; then call vmctl_exec_session_dispatch. */
int vmctl_exec_session_fd(vmctl_exec_session *s);
/* Deliver output and exits of all commands for up to timeout_ms (-1: until something came),
 * then whatever else has already arrived, so that nothing received waits in the session's
 * buffer while its fd is not readable. */
int vmctl_exec_session_dispatch(vmctl_exec_session *s, int timeout_ms, vmctl_error **reterr);

int vmctl_exec_start(vmctl_exec_session *s, const vmctl_exec_opts *opts, const vmctl_exec_io *io,
                     vmctl_exec_proc **ret, vmctl_error **reterr);
/* Blocks while the guest's input window is full (output keeps being delivered meanwhile).
 * -EPIPE (no error object) once the command has finished. */
int vmctl_exec_write(vmctl_exec_proc *p, const void *data, size_t len, vmctl_error **reterr);
int vmctl_exec_close_stdin(vmctl_exec_proc *p, vmctl_error **reterr);
/* Send a signal to the command's process group. */
int vmctl_exec_signal(vmctl_exec_proc *p, int sig, vmctl_error **reterr);
/* New size of the terminal of a command started with opts->tty (the guest's kernel sends its
 * foreground process group SIGWINCH). */
int vmctl_exec_resize(vmctl_exec_proc *p, unsigned rows, unsigned cols, vmctl_error **reterr);
bool vmctl_exec_done(const vmctl_exec_proc *p);
/* Wait for the command's end. Errors: agent::failed (cannot start: the guest's message),
 * timeout (opts->timeout_sec expired: the guest killed its process group; status still filled). */
int vmctl_exec_wait(vmctl_exec_proc *p, vmctl_exec_status *status, vmctl_error **reterr);
void vmctl_exec_proc_free(vmctl_exec_proc *p);

/* One command, streamed: its input read from stdin_fd until end of file (-1: none), its output
 * delivered to io's callbacks as it arrives. */
int vmctl_exec_stream(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                      const vmctl_exec_io *io, int stdin_fd, vmctl_exec_status *status,
                      vmctl_error **reterr);

/* Copy a file or a directory (recursively, through tar) into the VM / out of it. Like cp -r: an
 * existing destination directory receives the source under its own name. Files keep their mode
 * and modification time. */
int vmctl_cp_to_vm(vmctl_ctx *ctx, const char *name, const char *local_path, const char *guest_path,
                   vmctl_error **reterr);
int vmctl_cp_from_vm(vmctl_ctx *ctx, const char *name, const char *guest_path,
                     const char *local_path, vmctl_error **reterr);

/* Guest facts from the agent. */
typedef struct vmctl_guest_info {
    double uptime_sec;
    unsigned long long mem_total, mem_available; /* bytes */
    double load[3];
    unsigned running; /* requests the agent is serving, this one included */
} vmctl_guest_info;
int vmctl_guest_info_get(vmctl_ctx *ctx, const char *name, vmctl_guest_info *ret,
                         vmctl_error **reterr);
/* Push metadata: hostname (NULL: unchanged), env "K=V" for later commands (also written to
 * /run/vmctl/env), secrets written to /run/vmctl/secrets/NAME with mode 0600. */
int vmctl_guest_push_metadata(vmctl_ctx *ctx, const char *name, const char *hostname,
                              char *const *env, char *const *secret_names,
                              const void *const *secret_values, const size_t *secret_lens,
                              vmctl_error **reterr);

/* Run a command through the guest agent and capture its output. The VM must be running. */
int vmctl_exec(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
               vmctl_exec_result *result, vmctl_error **reterr);
void vmctl_exec_result_clear(vmctl_exec_result *result);

#ifdef __cplusplus
}
#endif
