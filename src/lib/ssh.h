/* SPDX-License-Identifier: MIT */
/* The SSH channel (libssh): per-VM Ed25519 keys, connect with retry until a deadline, host keys
 * pinned in a per-VM known_hosts file on first contact (a changed key is refused), exec with
 * streamed output and the exit status, SFTP upload/download.
 *
 * Names use the prefix sshc_ because libssh owns ssh_*. Errors: ssh::keygen_failed,
 * ssh::failed (detail `step`: connect, handshake, hostkey, auth, channel, exec, sftp),
 * timeout (operation "ssh") when the deadline passes before the server answers. libssh is loaded
 * by the first sshc_keygen/sshc_connect (dl.h): host::missing_dependency when it cannot be. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>
#include <vmctl/exec.h>

#include "vm-dir.h"

#define SSHC_KEY_FILE         VM_FILE_SSH_KEY
#define SSHC_PUBKEY_FILE      VM_FILE_SSH_PUBKEY
#define SSHC_KNOWN_HOSTS_FILE VM_FILE_KNOWN_HOSTS
#define SSHC_DEFAULT_USER     "vmctl"

/* Write dir/id_ed25519 (OpenSSH format, mode 0600) and dir/id_ed25519.pub ("ssh-ed25519 ...
 * vmctl@<comment>"). Refuses to overwrite an existing key. */
int sshc_keygen(const char *dir, const char *comment, vmctl_error **reterr);

typedef struct sshc_target {
    const char *host; /* numeric IPv4/IPv6 address */
    uint16_t port;
    const char *user;
    const char *key_path;    /* private key */
    const char *known_hosts; /* pinned host keys; created on first contact */
    const char *vm;          /* for error details; may be NULL */
} sshc_target;

typedef struct sshc_conn sshc_conn;

/* Connect, check the host key, authenticate with the key. Connection and handshake failures
 * (sshd not up yet) are retried with backoff until deadline (CLOCK_MONOTONIC usec); a refused
 * authentication is retried too (cloud-init may still be installing the key) and reported as
 * ssh::failed step auth at the deadline. A changed host key fails at once. */
int sshc_connect(const sshc_target *t, uint64_t deadline, sshc_conn **ret, vmctl_error **reterr);
void sshc_close(sshc_conn *c);
static inline void sshc_closep(sshc_conn **c)
{
    sshc_close(*c);
}
#define cleanup_sshc __attribute__((cleanup(sshc_closep)))

/* Run command (a shell command line) with stdin_data (then EOF), delivering output to io as it
 * arrives. status: the exit status (255 when the server reported none, e.g. a signal). */
int sshc_exec(sshc_conn *c, const char *command, const void *stdin_data, size_t stdin_len,
              const vmctl_exec_io *io, uint64_t deadline, vmctl_exec_status *status,
              vmctl_error **reterr);

/* SFTP: copy a regular file up (mode kept) or down (written atomically). */
int sshc_upload(sshc_conn *c, const char *local, const char *remote, vmctl_error **reterr);
int sshc_download(sshc_conn *c, const char *remote, const char *local, vmctl_error **reterr);

/* argv as one POSIX shell command line, every word single-quoted. */
char *sshc_quote_argv(char *const *argv);

/* exec's choice (exec.c): true for via ssh, and for auto when *reterr (the agent's failure) is
 * exec::unavailable with the VM running and an SSH forward; then *reterr is cleared. */
#include <vmctl/ssh.h>
#include <vmctl/vm.h>
bool ssh_exec_use_ssh(vmctl_ctx *ctx, const char *name, vmctl_exec_via via, vmctl_error **reterr);
