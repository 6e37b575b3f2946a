/* SPDX-License-Identifier: MIT */
/* Where a VM's guest agent is reached: the backend says (backend_ops.agent_endpoint), the agent
 * client connects (agent_connect_endpoint in agent-client.h). Plain data, no allocation: the
 * client knows nothing of a VM directory's layout, the backend nothing of the protocol. */
#pragma once

#include <limits.h>
#include <stdint.h>

#include "agent-proto.h"

typedef enum {
    /* the first free of the virtio-serial ports below (a flock on each port's lock file) */
    AGENT_ENDPOINT_SERIAL,
    /* AF_VSOCK to (cid, port), no lock; with serial ports listed, tried for 0.2 s only, and
     * skipped for a while after a client found nobody listening (vsock_miss), before them */
    AGENT_ENDPOINT_VSOCK,
    /* Firecracker's hybrid vsock: the unix socket path, "CONNECT <port>" */
    AGENT_ENDPOINT_HYBRID_VSOCK,
} agent_endpoint_kind;

typedef struct agent_endpoint {
    agent_endpoint_kind kind;
    uint32_t cid;  /* VSOCK: the guest CID */
    uint32_t port; /* VSOCK, HYBRID_VSOCK: the agent's vsock port (AGENT_VSOCK_PORT) */
    /* HYBRID_VSOCK: the hypervisor's vsock unix socket (a flock on agent.lock beside it) */
    char path[PATH_MAX];
    /* VSOCK: the file whose mtime says when a client last found no agent on vsock ("": none) */
    char vsock_miss[PATH_MAX];
    /* SERIAL, and VSOCK's fallback: the ports in the order they are tried */
    unsigned n_ports;
    struct {
        char sock[PATH_MAX]; /* the host end: a unix socket the hypervisor listens on */
        char lock[PATH_MAX]; /* flocked by the one client using the port */
    } ports[AGENT_SERIAL_PORTS];
} agent_endpoint;
