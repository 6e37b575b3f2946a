/* SPDX-License-Identifier: MIT */
/* Provisioners: run a machine's VMFile steps through the guest agent, stream their output line
 * by line and append it to the VM's provision.log; and the up/down/reload/provision
 * orchestration over the machines of a VMFile (public API in include/vmctl/vmfile.h). */
#pragma once

#include <pthread.h>

#include <vmctl/vmfile.h>

#include "vmfile.h"

#define PROVISION_LOG "provision.log"
/* A shell step without its own `timeout`. */
#define PROVISION_DEFAULT_TIMEOUT_SEC 3600.0

/* Where output goes: the callback (serialised by lock) and nothing else. */
typedef struct provision_sink {
    vmctl_provision_output_fn fn;
    void *userdata;
    pthread_mutex_t *lock;
} provision_sink;

/* Run m's steps in order on the running VM. *ret_steps_run: steps that succeeded. A step that
 * exits non-zero is provision::failed (details vm, step, kind, exit_code); an agent that does not
 * answer is exec::unavailable. */
int provision_run(vmctl_ctx *ctx, const vmfile_machine *m, const provision_sink *sink,
                  size_t *ret_steps_run, vmctl_error **reterr);
