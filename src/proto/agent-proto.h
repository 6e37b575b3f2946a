/* SPDX-License-Identifier: MIT */
/* The agent protocol codec (docs/agent-protocol.md), shared by libvmctl and the static guest agent.
 * Pure libc: no allocation, no I/O. Encoders write a whole frame into a caller buffer and return
 * its size; decoders validate and point into the caller's buffer. Every function returns a
 * negative AGENT_E_* code on failure. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Frames of versions AGENT_PROTO_MIN_VERSION..AGENT_PROTO_VERSION are understood; encoders write
 * AGENT_PROTO_VERSION (agent_frame_set_version() rewrites it for a v1 peer). */
#define AGENT_PROTO_VERSION     2
#define AGENT_PROTO_MIN_VERSION 1
#define AGENT_PORT_NAME         "org.vmctl.agent"
#define AGENT_HDR_SIZE          16
#define AGENT_MAX_PAYLOAD       (1024u * 1024u)
#define AGENT_MAX_FRAME         (AGENT_HDR_SIZE + AGENT_MAX_PAYLOAD)
/* STDOUT/STDERR chunks the agent sends are at most this large. */
#define AGENT_CHUNK_SIZE (32u * 1024u)
/* A host has at most this many STDIN bytes per request not yet acknowledged by STDIN_ACK. */
#define AGENT_STDIN_WINDOW (512u * 1024u)
/* The host sends STDIN chunks of at most this size. */
#define AGENT_STDIN_CHUNK (128u * 1024u)
/* VSOCK port the agent listens on (AF_VSOCK transport, and Firecracker's hybrid vsock). */
#define AGENT_VSOCK_PORT 1024u
/* The virtio-serial ports a VM has for its agent, one session each (so this many host clients at
 * once): AGENT_PORT_NAME is port 0, AGENT_PORT_NAME ".<N>" port N, N = 1 .. AGENT_SERIAL_PORTS - 1.
 * The host creates this many; the agent opens at most this many. */
#define AGENT_SERIAL_PORTS 4
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
    AGENT_MSG_STDIN = 0x14,     /* v2, host -> agent: raw bytes; an empty payload is end of file */
    AGENT_MSG_STDIN_ACK = 0x15, /* v2, agent -> host: u32 bytes taken since the previous ack */
    AGENT_MSG_SIGNAL = 0x16,    /* v2, host -> agent: u32 signal for the command's process group */
    AGENT_MSG_RESIZE = 0x17,    /* v2, host -> agent: u32 rows, u32 cols of a TTY request */
    AGENT_MSG_SHUTDOWN = 0x20,
    AGENT_MSG_FILE_PUT = 0x30,  /* v2: u32 flags, u32 mode, i64 mtime_sec, u32 nsec, str path */
    AGENT_MSG_FILE_GET = 0x31,  /* v2: u32 flags, str path */
    AGENT_MSG_FILE_INFO = 0x32, /* v2, agent -> host: u32 mode, u64 size, i64 mtime_sec, u32 nsec */
    AGENT_MSG_METADATA = 0x40,  /* v2: str hostname, strv env, strv secret names, u32 n, bytes[n] */
    AGENT_MSG_INFO = 0x41,      /* v2, host -> agent: empty */
    AGENT_MSG_INFO_REPLY = 0x42, /* v2: u64 uptime_ms, u64 mem_total, u64 mem_available (bytes),
                                    u32 load1/5/15 (x100), u32 running execs */
    AGENT_MSG_IDENTITY = 0x43,   /* v2: u64 realtime_ns, str machine_id, str mac, u32 n, bytes[n]
                                    entropy (after a restore: docs/snapshots.md) */
};

/* Capability bits advertised in PONG. */
#define AGENT_CAP_EXEC     (UINT64_C(1) << 0)
#define AGENT_CAP_SHUTDOWN (UINT64_C(1) << 1)
/* v2 */
#define AGENT_CAP_CONCURRENT   (UINT64_C(1) << 2) /* several requests at once */
#define AGENT_CAP_STDIN_STREAM (UINT64_C(1) << 3) /* EXEC flag AGENT_EXEC_STDIN_STREAM, STDIN */
#define AGENT_CAP_FILES        (UINT64_C(1) << 4) /* FILE_PUT, FILE_GET */
#define AGENT_CAP_METADATA     (UINT64_C(1) << 5)
#define AGENT_CAP_INFO         (UINT64_C(1) << 6)
#define AGENT_CAP_SIGNAL       (UINT64_C(1) << 7)
#define AGENT_CAP_USER         (UINT64_C(1) << 8) /* EXEC flag AGENT_EXEC_USER */
#define AGENT_CAP_TTY          (UINT64_C(1) << 9) /* EXEC flag AGENT_EXEC_TTY, RESIZE */
/* PONG state byte 1 is meaningful (AGENT_STATE_METADATA) */
#define AGENT_CAP_META_STATE (UINT64_C(1) << 10)
/* IDENTITY (a restored clone's clock, entropy, machine-id, MAC) */
#define AGENT_CAP_IDENTITY (UINT64_C(1) << 11)
/* EXEC flag AGENT_EXEC_ROOT (the containerd shim: a command in a container's root) */
#define AGENT_CAP_ROOT (UINT64_C(1) << 12)
/* PONG state bits: a METADATA request was applied since this agent started */
#define AGENT_STATE_METADATA 0x01
#define AGENT_CAPS_V2                                                                              \
    (AGENT_CAP_EXEC | AGENT_CAP_SHUTDOWN | AGENT_CAP_CONCURRENT | AGENT_CAP_STDIN_STREAM |         \
     AGENT_CAP_FILES | AGENT_CAP_METADATA | AGENT_CAP_INFO | AGENT_CAP_SIGNAL | AGENT_CAP_USER |   \
     AGENT_CAP_TTY | AGENT_CAP_META_STATE | AGENT_CAP_IDENTITY | AGENT_CAP_ROOT)

/* EXEC flags (v2; a v1 EXEC has flags 0). STDIN_STREAM: the command's standard input stays open
 * after the initial bytes and is fed by STDIN frames until an empty one. */
#define AGENT_EXEC_STDIN_STREAM (1u << 0)
/* USER: the payload ends with `str user` ("NAME", "UID" or "UID:GID"): run the command as that
 * user (its groups, HOME, USER, LOGNAME). */
#define AGENT_EXEC_USER (1u << 1)
/* TTY: the payload ends (after the user, if any) with `u32 rows, u32 cols` (each at most 65535;
 * 0: unknown): the command runs on a new pseudo-terminal, as its controlling terminal; stdin,
 * stdout and stderr are that terminal (output comes as STDOUT only). RESIZE changes its size. */
#define AGENT_EXEC_TTY (1u << 2)
/* ROOT: the payload ends (after the terminal's size, if any) with `str root` (an absolute guest
 * directory): the command runs chrooted there (cwd, PATH lookup and a user's name are taken
 * inside it). */
#define AGENT_EXEC_ROOT (1u << 3)
#define AGENT_EXEC_FLAGS_V2                                                                        \
    (AGENT_EXEC_STDIN_STREAM | AGENT_EXEC_USER | AGENT_EXEC_TTY | AGENT_EXEC_ROOT)
/* Largest row or column count of a terminal (struct winsize holds unsigned short). */
#define AGENT_TTY_MAX 65535u

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

/* Rewrite the version byte of an encoded frame (to answer a v1 peer in v1 frames). */
void agent_frame_set_version(void *frame, uint8_t version);

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
    uint32_t instance;         /* v2: random per agent start (0 from v1 agents) */
    uint8_t state;             /* v2: AGENT_STATE_* bits (payload byte 1; 0 from older agents) */
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
    const char *user;            /* AGENT_EXEC_USER: not empty; NULL otherwise */
    uint32_t tty_rows, tty_cols; /* AGENT_EXEC_TTY: the terminal's size (0: unknown) */
    const char *root;            /* AGENT_EXEC_ROOT: not empty; NULL otherwise */
} agent_exec_req;

/* Everything an EXEC can carry, for agent_encode_exec_args. */
typedef struct agent_exec_args {
    uint32_t flags; /* AGENT_EXEC_*: USER iff user, the others as given */
    uint32_t timeout_ms;
    char *const *argv; /* NULL-terminated, argv[0] not empty */
    char *const *env;  /* NULL-terminated K=V, may be NULL */
    const char *cwd;   /* NULL or "": / */
    const void *stdin_data;
    size_t stdin_len;
    const char *user;            /* AGENT_EXEC_USER */
    uint32_t tty_rows, tty_cols; /* AGENT_EXEC_TTY, each <= AGENT_TTY_MAX */
    const char *root;            /* AGENT_EXEC_ROOT: not empty */
} agent_exec_args;

/* Just a header, for a payload the caller places at buf + AGENT_HDR_SIZE itself (the agent reads
 * command output straight into its send queue). Returns AGENT_HDR_SIZE or an error. */
int agent_encode_header(void *buf, size_t cap, uint8_t type, uint32_t id, size_t len);

/* Encoders: return the frame size (> 0), AGENT_E_NOSPACE when cap is too small, AGENT_E_TOO_BIG
 * when the payload would exceed AGENT_MAX_PAYLOAD. */
/* flags: 0 or AGENT_FLAG_NEW_SESSION */
int agent_encode_ping(void *buf, size_t cap, uint32_t id, uint8_t flags);
int agent_encode_pong(void *buf, size_t cap, uint32_t id, uint64_t caps, const char *agent_version);
/* instance: a random non-zero number chosen at agent start (payload bytes 4..7, zero in v1). */
int agent_encode_pong2(void *buf, size_t cap, uint32_t id, uint64_t caps, const char *agent_version,
                       uint32_t instance);
/* state: AGENT_STATE_* bits (payload byte 1, zero in v1 and from older agents). */
int agent_encode_pong3(void *buf, size_t cap, uint32_t id, uint64_t caps, const char *agent_version,
                       uint32_t instance, uint8_t state);
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

/* EXEC with flags (v2). agent_encode_exec is this with flags 0. */
int agent_encode_exec2(void *buf, size_t cap, uint32_t id, uint32_t flags, uint32_t timeout_ms,
                       char *const *argv, char *const *env, const char *cwd, const void *stdin_data,
                       size_t stdin_len);
/* EXEC as a user: user (not empty) iff flags has AGENT_EXEC_USER, else AGENT_E_INVALID. */
int agent_encode_exec3(void *buf, size_t cap, uint32_t id, uint32_t flags, uint32_t timeout_ms,
                       char *const *argv, char *const *env, const char *cwd, const void *stdin_data,
                       size_t stdin_len, const char *user);
/* Bytes agent_encode_exec3 needs. */
size_t agent_exec3_frame_size(char *const *argv, char *const *env, const char *cwd,
                              size_t stdin_len, const char *user);
/* EXEC with every field (agent_encode_exec3 is this without a TTY); AGENT_E_INVALID also for a
 * TTY size above AGENT_TTY_MAX. */
int agent_encode_exec_args(void *buf, size_t cap, uint32_t id, const agent_exec_args *a);
/* Bytes agent_encode_exec_args needs (SIZE_MAX: too large to encode). */
size_t agent_exec_args_frame_size(const agent_exec_args *a);
/* RESIZE: the new size of a TTY request's terminal (each at most AGENT_TTY_MAX). */
int agent_encode_resize(void *buf, size_t cap, uint32_t id, uint32_t rows, uint32_t cols);
int agent_decode_resize(const void *payload, size_t n, uint32_t *rows, uint32_t *cols);

typedef struct agent_file_put {
    uint32_t flags; /* 0 */
    uint32_t mode;  /* permission bits (07777) */
    int64_t mtime_sec;
    uint32_t mtime_nsec; /* < 1e9; UINT32_MAX: leave the time as written */
    const char *path;    /* absolute, not empty */
} agent_file_put;

typedef struct agent_file_info {
    uint32_t mode; /* st_mode (type and permissions) */
    uint64_t size;
    int64_t mtime_sec;
    uint32_t mtime_nsec;
} agent_file_info;

typedef struct agent_info {
    uint64_t uptime_ms;
    uint64_t mem_total;
    uint64_t mem_available;
    uint32_t load[3]; /* 1, 5, 15 minutes, times 100 */
    uint32_t running;
} agent_info;

/* METADATA: secrets are name/value pairs; names are file names (no '/', not "." or ".."). */
typedef struct agent_metadata {
    const char *hostname; /* "" = unchanged */
    agent_strv env;
    agent_strv secret_names;
    uint32_t n_values;
    const uint8_t *values; /* n_values bytes: per secret u32 len then the bytes */
    size_t values_len;
} agent_metadata;

/* IDENTITY: machine_id "" = leave /etc/machine-id alone, mac "" = leave the NIC alone;
 * entropy 16..512 bytes. */
typedef struct agent_identity {
    uint64_t realtime_ns;
    const char *machine_id;
    const char *mac;
    const uint8_t *entropy;
    uint32_t n_entropy;
} agent_identity;
int agent_encode_identity(void *buf, size_t cap, uint32_t id, const agent_identity *in);
int agent_decode_identity(const void *payload, size_t n, agent_identity *out);

int agent_encode_u32_msg(void *buf, size_t cap, uint8_t type, uint32_t id, uint32_t v);
int agent_encode_file_put(void *buf, size_t cap, uint32_t id, const agent_file_put *fp);
int agent_encode_file_get(void *buf, size_t cap, uint32_t id, const char *path);
int agent_encode_file_info(void *buf, size_t cap, uint32_t id, const agent_file_info *fi);
int agent_encode_info_reply(void *buf, size_t cap, uint32_t id, const agent_info *in);
/* secrets: n names and n values (values[i] of value_lens[i] bytes). */
int agent_encode_metadata(void *buf, size_t cap, uint32_t id, const char *hostname,
                          char *const *env, char *const *secret_names, const void *const *values,
                          const size_t *value_lens);
/* Header + raw payload of any type (STDIN, empty requests). */
int agent_encode_raw(void *buf, size_t cap, uint8_t type, uint32_t id, const void *data,
                     size_t len);

/* Payload decoders (payload = the len bytes after the header). */
int agent_decode_u32_msg(const void *payload, size_t n, uint32_t *v);
int agent_decode_file_put(const void *payload, size_t n, agent_file_put *out);
int agent_decode_file_get(const void *payload, size_t n, const char **path);
int agent_decode_file_info(const void *payload, size_t n, agent_file_info *out);
int agent_decode_info_reply(const void *payload, size_t n, agent_info *out);
int agent_decode_metadata(const void *payload, size_t n, agent_metadata *out);
/* Iterate the secret values of a decoded METADATA: *off starts at 0. */
bool agent_metadata_next_value(const agent_metadata *m, size_t *off, const uint8_t **data,
                               uint32_t *len);
int agent_decode_pong(const void *payload, size_t n, agent_pong *out);
int agent_decode_error(const void *payload, size_t n, agent_error_msg *out);
int agent_decode_exit(const void *payload, size_t n, agent_exit *out);
int agent_decode_shutdown(const void *payload, size_t n, uint32_t *action);
int agent_decode_exec(const void *payload, size_t n, agent_exec_req *out);
