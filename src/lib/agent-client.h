/* SPDX-License-Identifier: MIT */
/* Host side of the guest agent protocol (docs/agent-protocol.md). Deadlines are absolute
 * CLOCK_MONOTONIC usec (UINT64_MAX: none). Errors: agent::failed (protocol or guest-side failure;
 * a guest error's message is the agent's own, e.g. "cannot execute 'foo': No such file or
 * directory"), timeout (details operation "agent connect" | "agent ready" | "agent ping" |
 * "agent exec" | "agent shutdown" | "exec", and timeout_seconds), config::invalid (a request
 * that cannot be encoded). Frames answering other requests (earlier pings, an earlier client's
 * command) are discarded by request id. Implemented in three files: agent-transport.c (the
 * connects), agent-session.c (ping, pump, the connection's settings, the proc table) and
 * agent-client.c (the requests). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/error.h>
#include <vmctl/exec.h>

#include "agent-endpoint.h"
#include "agent-proto.h"

typedef struct agent_conn agent_conn;

/* Connect to the host end of the agent port (a unix socket; QEMU is the server) and take an
 * exclusive flock on agent.lock in the socket's directory, so one client talks at a time. While
 * the socket is missing or refuses, retry until the deadline (then timeout "agent connect"). */
int agent_connect(const char *socket_path, uint64_t deadline, agent_conn **ret,
                  vmctl_error **reterr);
void agent_close(agent_conn *c);
/* Connect to a VM's agent at the endpoint its backend gave (backend_ops.agent_endpoint; several
 * vmctl processes at once, each its own agent session). VSOCK: AF_VSOCK to (cid, port), no lock
 * (each connection is a session); with serial ports as well, only when the agent accepts within
 * 0.2 s and no client missed it recently (vsock_miss), else those ports. SERIAL: the first free
 * port: a non-blocking flock on each port's lock file in order claims its socket; when all are
 * taken, wait for any until the deadline (then timeout "agent connect"). HYBRID_VSOCK:
 * agent_connect_hybrid. */
/* queue_usec: while other processes hold every port, wait for one until start + queue_usec when
 * that is later than the deadline (the connect then gets its whole budget again): ports busy with
 * other commands are a queue, not an agent that does not answer. 0: the deadline bounds it all. */
#define AGENT_PORT_QUEUE_USEC (600ull * 1000 * 1000)
/* vsock is skipped this long after a client found no agent listening on it (the endpoint's
 * vsock_miss file, touched by agent_vsock_mark_missed; "" or NULL: never skipped). */
#define AGENT_VSOCK_MISS_USEC (60ull * 1000 * 1000)
bool agent_vsock_missed_recently(const char *mark);
void agent_vsock_mark_missed(const char *mark);
int agent_connect_endpoint(const agent_endpoint *ep, uint64_t deadline, uint64_t queue_usec,
                           agent_conn **ret, vmctl_error **reterr);

/* --- transports (docs/agent-protocol.md): the same frames over another byte stream --- */
struct sockaddr_vm;
typedef enum { AGENT_TRANSPORT_SERIAL, AGENT_TRANSPORT_VSOCK } agent_transport;
/* CIDs 0-2 are reserved (hypervisor, local, host). */
#define AGENT_VSOCK_MIN_CID 3u
/* AF_VSOCK when the VM has a guest CID (>= 3) and the host has vhost-vsock; else virtio-serial. */
agent_transport agent_transport_pick(uint32_t cid, bool have_vhost_vsock);
/* Whether dev (NULL: /dev/vhost-vsock) exists and can be opened read-write. */
bool agent_vhost_vsock_present(const char *dev);
/* Whether another process on the host holds guest CID cid (dev NULL: /dev/vhost-vsock): 1 taken,
 * 0 free, -errno when it cannot tell (no vhost-vsock). Racy by nature: QEMU may still lose it. */
int agent_vsock_cid_busy(const char *dev, uint32_t cid);
void agent_vsock_addr(uint32_t cid, uint32_t port, struct sockaddr_vm *sa);
/* AF_VSOCK to (cid, port), retrying while refused/reset until the deadline. No lock: every
 * vsock connection is a session of its own in the agent. */
int agent_connect_vsock(uint32_t cid, uint32_t port, uint64_t deadline, agent_conn **ret,
                        vmctl_error **reterr);
/* Firecracker's hybrid vsock on a connected stream: send "CONNECT <port>\n", expect
 * "OK <hostport>\n" (read byte by byte: nothing after the line is consumed). A refusal (closed
 * connection) or any other answer is agent::failed; no answer by the deadline is timeout. */
int agent_hybrid_handshake(int fd, uint32_t port, uint64_t deadline, vmctl_error **reterr);
/* Connect to Firecracker's vsock unix socket uds_path, handshake, then the same session. */
int agent_connect_hybrid(const char *uds_path, uint32_t port, uint64_t deadline, agent_conn **ret,
                         vmctl_error **reterr);
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
/* --- v2: several requests at once on one connection, streamed in both directions --- */

typedef struct agent_proc agent_proc;
/* stream 1 = stdout (or file data), 2 = stderr. Return < 0 to fail the wait with that code. */
typedef int (*agent_data_fn)(void *userdata, int stream, const void *data, size_t len);

/* Start a command. stdin_open: its input stays open for agent_proc_write until
 * agent_proc_close_stdin (needs a v2 agent). The proc belongs to the connection's table until
 * agent_proc_free. */
int agent_proc_exec(agent_conn *c, const vmctl_exec_opts *opts, bool stdin_open, agent_data_fn fn,
                    void *userdata, uint64_t deadline, agent_proc **ret, vmctl_error **reterr);
/* Upload: FILE_PUT of path with mode/mtime (mtime_nsec UINT32_MAX: leave it); then feed the
 * data with agent_proc_write and finish with agent_proc_close_stdin + agent_proc_wait. */
int agent_proc_put(agent_conn *c, const char *path, uint32_t mode, int64_t mtime_sec,
                   uint32_t mtime_nsec, uint64_t deadline, agent_proc **ret, vmctl_error **reterr);
/* Download: data arrives through fn (stream 1); agent_proc_file_info once it is known. */
int agent_proc_get(agent_conn *c, const char *path, agent_data_fn fn, void *userdata,
                   uint64_t deadline, agent_proc **ret, vmctl_error **reterr);
/* Send input, waiting for window (while delivering everyone's output). -EPIPE without an error
 * object when the command already finished (its input is then dropped). */
int agent_proc_write(agent_proc *p, const void *data, size_t len, uint64_t deadline,
                     vmctl_error **reterr);
int agent_proc_close_stdin(agent_proc *p, uint64_t deadline, vmctl_error **reterr);
int agent_proc_signal(agent_proc *p, int sig, uint64_t deadline, vmctl_error **reterr);
/* RESIZE the terminal of a command started with opts->tty (rows, cols above 65535 are clamped).
 * An agent without terminal support: exec::unavailable (as agent_proc_exec with opts->tty). */
int agent_proc_resize(agent_proc *p, unsigned rows, unsigned cols, uint64_t deadline,
                      vmctl_error **reterr);
/* Until the proc is done: 0 with *exit filled, or the proc's error (agent::failed with the
 * guest's message; timeout "exec" when the guest killed it at its timeout, *exit still filled). */
int agent_proc_wait(agent_proc *p, uint64_t deadline, vmctl_exec_status *status,
                    vmctl_error **reterr);
bool agent_proc_done(const agent_proc *p);
/* FILE_INFO of a download: false until it arrived. */
bool agent_proc_file_info(const agent_proc *p, uint32_t *mode, uint64_t *size, int64_t *mtime_sec,
                          uint32_t *mtime_nsec);
/* The guest errno of a failed proc (EISDIR for a directory, ...), 0 otherwise. */
int agent_proc_errno(const agent_proc *p);
void agent_proc_free(agent_proc *p);
/* Handle frames until `until` (or one batch of input): 1 something was handled, 0 timeout. */
int agent_pump(agent_conn *c, uint64_t until, vmctl_error **reterr);
/* While requests are pending, a silent agent is pinged every second; when nothing at all comes
 * back for `usec` (default AGENT_SILENCE_USEC; 0: wait forever), every pending request fails with
 * exec::unavailable (reason "agent not answering") and the connection is broken - unless
 * ok(userdata) says the silence is expected (the VM is paused), which restarts the count. */
#define AGENT_SILENCE_USEC (30ull * 1000 * 1000)
void agent_conn_set_silence(agent_conn *c, uint64_t usec, bool (*ok)(void *), void *userdata);
/* The VM's name, for the details of errors. */
/* Set by the silence callback when it knows why the agent is silent ("vm was paused by ..."):
 * the requests then fail with exec::unavailable saying so, help as the help line. */
void agent_conn_set_silence_reason(agent_conn *c, const char *reason, const char *help);
int agent_conn_set_label(agent_conn *c, const char *label);
int agent_conn_fd(const agent_conn *c);
uint8_t agent_conn_version(const agent_conn *c);
uint64_t agent_conn_caps(const agent_conn *c);
/* The agent said (in its last pong) that a METADATA push reached it since it started, or one
 * was pushed on this connection. False for agents without AGENT_CAP_META_STATE. */
bool agent_conn_metadata_applied(const agent_conn *c);

typedef struct agent_guest_info {
    uint64_t uptime_ms, mem_total, mem_available;
    double load[3];
    unsigned running;
} agent_guest_info;
int agent_get_info(agent_conn *c, uint64_t deadline, agent_guest_info *ret, vmctl_error **reterr);
/* METADATA: hostname (NULL: unchanged), env K=V, secrets (n names, values and lengths). */
int agent_push_metadata(agent_conn *c, const char *hostname, char *const *env,
                        char *const *secret_names, const void *const *values,
                        const size_t *value_lens, uint64_t deadline, vmctl_error **reterr);

/* IDENTITY (a restored clone): the clock, entropy for the kernel RNG (credited, then the CRNG
 * reseeded), a new /etc/machine-id, the NIC's MAC. agent::failed for an agent without it. */
int agent_push_identity(agent_conn *c, const agent_identity *id, uint64_t deadline,
                        vmctl_error **reterr);

/* A restored clone's METADATA (hostname, env) and IDENTITY, both sent before either answer is
 * read when the agent takes several requests at once (AGENT_CAP_CONCURRENT), else one after the
 * other. Either failing fails the call. */
int agent_push_clone_identity(agent_conn *c, const char *hostname, char *const *env,
                              const agent_identity *id, uint64_t deadline, vmctl_error **reterr);

/* Ask the guest to power off (reboot = false) or reboot; returns once the agent acknowledged. */
int agent_shutdown(agent_conn *c, bool reboot, uint64_t deadline, vmctl_error **reterr);
