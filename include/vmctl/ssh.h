/* SPDX-License-Identifier: MIT */
/* SSH to a VM: the fallback channel for images without vmctl-agent, and real shells. Each VM has
 * its own Ed25519 key pair (made at create, private key 0600 in the VM directory, public key
 * given to the guest through cloud-init) and its own known_hosts file in the VM directory, where
 * the guest's host key is pinned on first contact; a changed key is refused
 * (vm_manager::ssh::failed, step hostkey). SSH goes through the user-mode forward of guest port 22
 * on 127.0.0.1 (see `ports` in vmctl_vm_info). */
#pragma once

#include <stdint.h>

#include <vmctl/error.h>
#include <vmctl/exec.h>
#include <vmctl/vm.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vmctl_ssh_info {
    char *host; /* "127.0.0.1" */
    uint16_t port;
    char *user;        /* "vmctl", the cloud-init default user */
    char *key_path;    /* the VM's private key */
    char *known_hosts; /* the VM's known_hosts (the pinned host key) */
} vmctl_ssh_info;

void vmctl_ssh_info_clear(vmctl_ssh_info *info);

/* Wait (timeout_sec, 0: 120 s) until the VM's sshd accepts its key, pinning the host key on
 * first contact, and say how to reach it. Errors: exec::unavailable (not running),
 * network::ip_discovery_timeout (no network to reach it on: --net none), timeout (operation
 * ssh), ssh::failed (step: connect, handshake, hostkey, auth). */
int vmctl_ssh_prepare(vmctl_ctx *ctx, const char *name, double timeout_sec, vmctl_ssh_info *ret,
                      vmctl_error **reterr);

/* Run opts->argv over SSH (quoted for the guest's shell; opts->env and opts->cwd applied by the
 * shell), output streamed to io, stdin read from stdin_fd until EOF (-1: none). */
int vmctl_ssh_exec_stream(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                          const vmctl_exec_io *io, int stdin_fd, vmctl_exec_status *status,
                          vmctl_error **reterr);
/* The same, output captured. */
int vmctl_ssh_exec(vmctl_ctx *ctx, const char *name, const vmctl_exec_opts *opts,
                   vmctl_exec_result *result, vmctl_error **reterr);

/* SFTP copies of one regular file. */
int vmctl_ssh_upload(vmctl_ctx *ctx, const char *name, const char *local_path,
                     const char *guest_path, vmctl_error **reterr);
int vmctl_ssh_download(vmctl_ctx *ctx, const char *name, const char *guest_path,
                       const char *local_path, vmctl_error **reterr);

#ifdef __cplusplus
}
#endif
