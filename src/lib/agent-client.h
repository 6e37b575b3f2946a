/* SPDX-License-Identifier: MIT */
/* Host side of the guest agent protocol (docs/agent-protocol.md). Deadlines are absolute
 * CLOCK_MONOTONIC usec. Errors: agent::failed, timeout (operation "agent ..."),
 * exec::unavailable. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>
#include <vmctl/exec.h>

typedef struct agent_conn agent_conn;

/* Connect to the host end of the agent port (a unix socket) and lock it for this process. */
int agent_connect(const char *socket_path, uint64_t deadline, agent_conn **ret,
                  vmctl_error **reterr);
void agent_close(agent_conn *c);
static inline void agent_closep(agent_conn **c)
{
    agent_close(*c);
}
#define cleanup_agent __attribute__((cleanup(agent_closep)))

/* Ping until answered or deadline. alive(userdata) is polled between tries; returning false
 * (the VM died) ends the wait early with -ECHILD and no error object filled. */
int agent_wait_ready(agent_conn *c, uint64_t deadline, bool (*alive)(void *), void *userdata,
                     vmctl_error **reterr);
int agent_ping(agent_conn *c, uint64_t deadline, vmctl_error **reterr);
int agent_exec(agent_conn *c, const vmctl_exec_opts *opts, vmctl_exec_result *result,
               uint64_t deadline, vmctl_error **reterr);
/* Ask the guest to power off (reboot = false) or reboot; returns once the agent acknowledged. */
int agent_shutdown(agent_conn *c, bool reboot, uint64_t deadline, vmctl_error **reterr);
