/* SPDX-License-Identifier: MIT */
/* Host side of the guest agent protocol (docs/agent-protocol.md). Deadlines are absolute
 * CLOCK_MONOTONIC usec (UINT64_MAX: none). Errors: agent::failed (protocol or guest-side failure;
 * a guest error's message is the agent's own, e.g. "cannot execute 'foo': No such file or
 * directory"), timeout (details operation "agent connect" | "agent ready" | "agent ping" |
 * "agent exec" | "agent shutdown" | "exec", and timeout_seconds), config::invalid (a request
 * that cannot be encoded). Frames answering other requests (earlier pings, an earlier client's
 * command) are discarded by request id. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>
#include <vmctl/exec.h>

typedef struct agent_conn agent_conn;

/* Connect to the host end of the agent port (a unix socket; QEMU is the server) and take an
 * exclusive flock on agent.lock in the socket's directory, so one client talks at a time. While
 * the socket is missing or refuses, retry until the deadline (then timeout "agent connect"). */
int agent_connect(const char *socket_path, uint64_t deadline, agent_conn **ret,
                  vmctl_error **reterr);
void agent_close(agent_conn *c);
static inline void agent_closep(agent_conn **c)
{
    agent_close(*c);
}
#define cleanup_agent __attribute__((cleanup(agent_closep)))

/* Ping until answered or deadline. alive(userdata) is polled between tries (every 50 ms);
 * returning false (the VM died) ends the wait early with -ECHILD and no error object filled.
 * QEMU holds pings until the guest opens its port, so the first pong comes as soon as the agent
 * runs; a ping is resent every second in case the agent restarted. */
int agent_wait_ready(agent_conn *c, uint64_t deadline, bool (*alive)(void *), void *userdata,
                     vmctl_error **reterr);
int agent_ping(agent_conn *c, uint64_t deadline, vmctl_error **reterr);
/* Run a command and capture its output. result is zeroed first, then filled (out/err always
 * allocated and NUL-terminated, also on error: free with vmctl_exec_result_clear). exit_code is
 * 128 + signal when a signal killed the command. A command that cannot start is agent::failed
 * (no exit code); one killed at opts->timeout_sec in the guest is timeout with operation "exec"
 * (result still filled: signal 9); the deadline bounds the whole call ("agent exec"). After a
 * timeout close the connection: the agent then kills what is left of the command. */
int agent_exec(agent_conn *c, const vmctl_exec_opts *opts, vmctl_exec_result *result,
               uint64_t deadline, vmctl_error **reterr);
/* Ask the guest to power off (reboot = false) or reboot; returns once the agent acknowledged. */
int agent_shutdown(agent_conn *c, bool reboot, uint64_t deadline, vmctl_error **reterr);
