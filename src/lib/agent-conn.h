/* SPDX-License-Identifier: MIT */
/* Internal to the host side of the agent protocol: the connection and request objects shared by
 * agent-transport.c (making the byte stream), agent-session.c (framing, ping, the v2 multiplexing)
 * and agent-client.c (the requests). Nothing outside those three includes this. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent-client.h"
#include "agent-proto.h"
#include "util/util.h"

struct agent_conn {
    int fd;
    int lock_fd;
    char *path;
    uint32_t next_id;
    uint8_t *buf; /* AGENT_MAX_FRAME bytes */
    size_t len;
    size_t pending;   /* bytes of the frame last returned by next_frame, dropped on the next call */
    bool have_pong;   /* the connection is in sync: a pong came back on it */
    uint32_t ping_lo; /* first id of the pings that may still be answered */
    uint64_t last_ping;
    uint8_t agent_version;
    uint64_t caps;
    uint32_t instance; /* of the agent that answered the first pong */
    uint8_t state;     /* AGENT_STATE_* bits of the last pong (and of our own pushes) */
    struct agent_proc *procs;
    uint64_t last_rx;      /* when a frame last arrived */
    uint32_t keepalive_id; /* ping sent while requests are pending, 0 if none */
    uint64_t keepalive_at; /* when it was sent */
    uint64_t silence_usec; /* no frame this long with a keepalive unanswered: the agent is gone */
    bool (*silence_ok)(void *userdata); /* true: the silence is expected (the VM is paused) */
    void *silence_userdata;
    char *label;                         /* the VM's name, for errors */
    char *silence_reason, *silence_help; /* why the agent is silent, when the caller knows */
    uint64_t probed_at;                  /* when the silence callback was last asked early */
    int broken; /* < 0: the connection failed; every later call fails alike */
};

enum { PROC_EXEC, PROC_PUT, PROC_GET, PROC_SIMPLE };

struct agent_proc {
    agent_conn *c;
    struct agent_proc *next;
    uint32_t id;
    int kind;
    char *what; /* for messages */
    agent_data_fn fn;
    void *userdata;
    bool done;
    bool stdin_closed;
    size_t in_flight;
    double timeout_sec;
    vmctl_exec_status st;
    bool timed_out;
    int rc; /* < 0: failed (err holds the error, unless a callback's code) */
    vmctl_error *err;
    int guest_errno;
    bool have_info;
    agent_file_info info;
    uint64_t got;      /* PROC_GET: data bytes received, checked against info.size */
    uint8_t reply[64]; /* PROC_SIMPLE: the answer's payload */
    uint32_t reply_len;
    uint8_t reply_type;
};

static inline double span_seconds(uint64_t start, uint64_t deadline)
{
    if (deadline == UINT64_MAX)
        return 0;
    return deadline > start ? (double)(deadline - start) / 1e6 : 0;
}

/* poll() timeout in ms until an absolute CLOCK_MONOTONIC usec, rounded up. */
static inline int ms_until(uint64_t until)
{
    if (until == UINT64_MAX)
        return -1;
    uint64_t now = now_usec();
    if (until <= now)
        return 0;
    uint64_t ms = (until - now + 999) / 1000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* --- agent-session.c, for the transports and the requests --- */

uint32_t agent_new_id(agent_conn *c);
int agent_closed_error(agent_conn *c, vmctl_error **reterr);
/* Write all n bytes, waiting for room until the deadline (timeout `operation`). */
int agent_send_all(agent_conn *c, const uint8_t *p, size_t n, uint64_t deadline,
                   const char *operation, uint64_t start, vmctl_error **reterr);
/* The next frame, waiting until `until` at most. 1: *h and *payload set (valid until the next
 * call); 0: `until` passed; < 0: error (connection closed: -EPIPE). Garbage is skipped. */
int agent_next_frame(agent_conn *c, uint64_t until, agent_hdr *h, const uint8_t **payload,
                     vmctl_error **reterr);
/* A PING (v1 frame; "new session" until the first pong), its id in *id. */
int agent_send_ping(agent_conn *c, uint32_t *id, uint64_t deadline, const char *operation,
                    uint64_t start, vmctl_error **reterr);
/* Requests that must not be lost or repeated go out only on a connection in sync (a pong came
 * back after the session ping). */
int agent_ensure_sync(agent_conn *c, uint64_t deadline, const char *operation,
                      vmctl_error **reterr);
/* agent::failed from an ERROR frame answering `what` (*guest_errno: its errno, when not NULL). */
int agent_guest_error(const uint8_t *payload, uint32_t len, const char *what, int *guest_errno,
                      vmctl_error **reterr);
/* Send a whole encoded frame in the version the agent speaks; a failure breaks the connection. */
int agent_send_frame(agent_conn *c, uint8_t *frame, size_t n, uint64_t deadline,
                     const char *operation, vmctl_error **reterr);
/* A request in the connection's table (kind PROC_*; what: for messages), with a fresh id. */
agent_proc *agent_proc_new(agent_conn *c, int kind, const char *what);
