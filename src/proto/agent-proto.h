/* SPDX-License-Identifier: MIT */
/* The agent protocol codec (docs/agent-protocol.md), shared by libvmctl and the static guest agent.
 * Pure libc: no allocation, no I/O. Encoders write a whole frame into a caller buffer and return
 * its size; decoders validate and point into the caller's buffer. Every function returns a
 * negative AGENT_E_* code on failure. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_PROTO_VERSION 1
#define AGENT_PORT_NAME     "org.vmctl.agent"
#define AGENT_HDR_SIZE      16
#define AGENT_MAX_PAYLOAD   (1024u * 1024u)
#define AGENT_MAX_FRAME     (AGENT_HDR_SIZE + AGENT_MAX_PAYLOAD)
/* STDOUT/STDERR chunks the agent sends are at most this large. */
#define AGENT_CHUNK_SIZE (32u * 1024u)
/* ERROR messages are truncated to this many bytes by the encoder. */
#define AGENT_MAX_ERROR_MSG 4000u

enum agent_msg_type {
    AGENT_MSG_PING = 0x01,
    AGENT_MSG_PONG = 0x02,
    AGENT_MSG_ERROR = 0x03,
    AGENT_MSG_ACK = 0x04,
    AGENT_MSG_EXEC = 0x10,
    AGENT_MSG_STDOUT = 0x11,
    AGENT_MSG_STDERR = 0x12,
    AGENT_MSG_EXIT = 0x13,
    AGENT_MSG_SHUTDOWN = 0x20,
};

/* Capability bits advertised in PONG. */
#define AGENT_CAP_EXEC     (UINT64_C(1) << 0)
#define AGENT_CAP_SHUTDOWN (UINT64_C(1) << 1)

/* Header flags. PING: the sender is a new client; the agent abandons what earlier clients left
 * (kills their running command) before answering. */
#define AGENT_FLAG_NEW_SESSION 0x01u

/* EXIT flags */
#define AGENT_EXIT_TIMED_OUT (1u << 0)

enum agent_shutdown_action {
    AGENT_SHUTDOWN_POWEROFF = 0,
    AGENT_SHUTDOWN_REBOOT = 1,
};

/* Return codes. */
enum {
    AGENT_OK = 0,
    AGENT_E_SHORT = -1,     /* not enough bytes yet for a whole header/frame */
    AGENT_E_MAGIC = -2,     /* garbage: no magic where a frame should start */
    AGENT_E_VERSION = -3,   /* well-formed frame of a protocol version we do not speak */
    AGENT_E_TOO_BIG = -4,   /* length above AGENT_MAX_PAYLOAD (or encoding would exceed it) */
    AGENT_E_MALFORMED = -5, /* payload does not decode */
    AGENT_E_NOSPACE = -6,   /* encoder: output buffer too small */
    AGENT_E_INVALID = -7,   /* encoder: invalid arguments (empty argv, NUL-free rule, ...) */
};
const char *agent_proto_strerror(int r);

typedef struct agent_hdr {
    uint8_t version;
    uint8_t type;
    uint8_t flags;
    uint32_t id;
    uint32_t len; /* payload length */
} agent_hdr;

/* Decode and check a header (magic, version, length). AGENT_E_VERSION and AGENT_E_TOO_BIG still
 * fill *h. */
int agent_hdr_decode(const void *buf, size_t n, agent_hdr *h);

/* Find the next frame at the start of buf[0..n) in a byte stream.
 *   AGENT_OK: *h filled; the frame (header + payload) is the first *consumed bytes.
 *   AGENT_E_SHORT: wait for more bytes (*consumed is 0).
 *   AGENT_E_VERSION: a whole frame of another version, *h filled; skip *consumed bytes.
 *   AGENT_E_MAGIC, AGENT_E_TOO_BIG: garbage; drop *consumed (>= 1) bytes and call again. */
int agent_frame_next(const void *buf, size_t n, agent_hdr *h, size_t *consumed);

/* A packed list of NUL-terminated strings pointing into a decoded payload. */
typedef struct agent_strv {
    uint32_t count;
    uint32_t size;
    const char *data;
} agent_strv;
/* Iterate: prev NULL gives the first string; NULL after the last. */
const char *agent_strv_next(const agent_strv *v, const char *prev);

typedef struct agent_pong {
    uint8_t version;
    uint64_t caps;
    const char *agent_version; /* "" when empty */
} agent_pong;

typedef struct agent_error_msg {
    uint32_t errnum;
    const char *message; /* "" when empty */
} agent_error_msg;

typedef struct agent_exit {
    int32_t exit_code;
    uint32_t signal;
    uint32_t flags;
} agent_exit;

/* A decoded EXEC request; strings point into the payload. */
typedef struct agent_exec_req {
    uint32_t flags;
    uint32_t timeout_ms;
    agent_strv argv;
    agent_strv env;
    const char *cwd; /* NULL when empty */
    const uint8_t *stdin_data;
    uint32_t stdin_len;
} agent_exec_req;

/* Just a header, for a payload the caller places at buf + AGENT_HDR_SIZE itself (the agent reads
 * command output straight into its send queue). Returns AGENT_HDR_SIZE or an error. */
int agent_encode_header(void *buf, size_t cap, uint8_t type, uint32_t id, size_t len);

/* Encoders: return the frame size (> 0), AGENT_E_NOSPACE when cap is too small, AGENT_E_TOO_BIG
 * when the payload would exceed AGENT_MAX_PAYLOAD. */
/* flags: 0 or AGENT_FLAG_NEW_SESSION */
int agent_encode_ping(void *buf, size_t cap, uint32_t id, uint8_t flags);
int agent_encode_pong(void *buf, size_t cap, uint32_t id, uint64_t caps, const char *agent_version);
/* The message is truncated to AGENT_MAX_ERROR_MSG bytes. */
int agent_encode_error(void *buf, size_t cap, uint32_t id, uint32_t errnum, const char *message);
int agent_encode_ack(void *buf, size_t cap, uint32_t id);
/* type is AGENT_MSG_STDOUT or AGENT_MSG_STDERR. */
int agent_encode_data(void *buf, size_t cap, uint32_t id, uint8_t type, const void *data,
                      size_t len);
int agent_encode_exit(void *buf, size_t cap, uint32_t id, const agent_exit *e);
int agent_encode_shutdown(void *buf, size_t cap, uint32_t id, uint32_t action);

/* EXEC from NULL-terminated vectors (env may be NULL, cwd NULL or "" for /). AGENT_E_INVALID for
 * an empty argv, an empty argv[0] or an env entry without "K=". */
int agent_encode_exec(void *buf, size_t cap, uint32_t id, uint32_t timeout_ms, char *const *argv,
                      char *const *env, const char *cwd, const void *stdin_data, size_t stdin_len);
/* Bytes agent_encode_exec needs (may exceed AGENT_MAX_FRAME: then the request cannot be sent). */
size_t agent_exec_frame_size(char *const *argv, char *const *env, const char *cwd,
                             size_t stdin_len);

/* Payload decoders (payload = the len bytes after the header). */
int agent_decode_pong(const void *payload, size_t n, agent_pong *out);
int agent_decode_error(const void *payload, size_t n, agent_error_msg *out);
int agent_decode_exit(const void *payload, size_t n, agent_exit *out);
int agent_decode_shutdown(const void *payload, size_t n, uint32_t *action);
int agent_decode_exec(const void *payload, size_t n, agent_exec_req *out);
