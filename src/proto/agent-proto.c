/* SPDX-License-Identifier: MIT */
/* The agent protocol codec. See agent-proto.h and docs/agent-protocol.md. */
#include <string.h>

#include "agent-proto.h"

static const uint8_t magic[3] = {'V', 'M', 'A'};

const char *agent_proto_strerror(int r)
{
    switch (r) {
    case AGENT_OK:
        return "ok";
    case AGENT_E_SHORT:
        return "incomplete frame";
    case AGENT_E_MAGIC:
        return "bad magic";
    case AGENT_E_VERSION:
        return "unsupported protocol version";
    case AGENT_E_TOO_BIG:
        return "frame too large";
    case AGENT_E_MALFORMED:
        return "malformed payload";
    case AGENT_E_NOSPACE:
        return "buffer too small";
    case AGENT_E_INVALID:
        return "invalid argument";
    default:
        return "unknown error";
    }
}

/* --- little-endian primitives --- */

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* --- header and stream framing --- */

static void put_hdr(uint8_t *p, uint8_t type, uint32_t id, size_t len)
{
    memcpy(p, magic, sizeof(magic));
    p[3] = AGENT_PROTO_VERSION;
    p[4] = type;
    p[5] = 0;
    p[6] = 0;
    p[7] = 0;
    put_u32(p + 8, id);
    put_u32(p + 12, (uint32_t)len);
}

void agent_frame_set_version(void *frame, uint8_t version)
{
    ((uint8_t *)frame)[3] = version;
}

int agent_hdr_decode(const void *buf, size_t n, agent_hdr *h)
{
    const uint8_t *b = buf;
    if (n < AGENT_HDR_SIZE)
        return memcmp(b, magic, n < sizeof(magic) ? n : sizeof(magic)) == 0 ? AGENT_E_SHORT
                                                                            : AGENT_E_MAGIC;
    if (memcmp(b, magic, sizeof(magic)) != 0)
        return AGENT_E_MAGIC;
    h->version = b[3];
    h->type = b[4];
    h->flags = b[5];
    h->id = get_u32(b + 8);
    h->len = get_u32(b + 12);
    if (h->len > AGENT_MAX_PAYLOAD)
        return AGENT_E_TOO_BIG;
    if (h->version < AGENT_PROTO_MIN_VERSION || h->version > AGENT_PROTO_VERSION)
        return AGENT_E_VERSION;
    return AGENT_OK;
}

/* Smallest offset >= from where a frame could start: the bytes there are the magic or, at the
 * end of the buffer, a prefix of it. n when there is none. */
static size_t resync(const uint8_t *b, size_t n, size_t from)
{
    for (size_t i = from; i < n; i++) {
        size_t m = n - i < sizeof(magic) ? n - i : sizeof(magic);
        if (memcmp(b + i, magic, m) == 0)
            return i;
    }
    return n;
}

int agent_frame_next(const void *buf, size_t n, agent_hdr *h, size_t *consumed)
{
    const uint8_t *b = buf;
    *consumed = 0;
    size_t m = n < sizeof(magic) ? n : sizeof(magic);
    if (memcmp(b, magic, m) != 0) {
        *consumed = resync(b, n, 1);
        return AGENT_E_MAGIC;
    }
    if (n < AGENT_HDR_SIZE)
        return AGENT_E_SHORT;
    int r = agent_hdr_decode(b, n, h);
    if (r == AGENT_E_TOO_BIG) {
        *consumed = resync(b, n, 1);
        return r;
    }
    size_t total = AGENT_HDR_SIZE + (size_t)h->len;
    if (n < total)
        return AGENT_E_SHORT;
    *consumed = total;
    return r;
}

/* --- encoders --- */

/* Check room for a payload of len bytes; returns the frame size or an error. */
static int frame_room(size_t cap, size_t len)
{
    if (len > AGENT_MAX_PAYLOAD)
        return AGENT_E_TOO_BIG;
    if (cap < AGENT_HDR_SIZE + len)
        return AGENT_E_NOSPACE;
    return (int)(AGENT_HDR_SIZE + len);
}

int agent_encode_header(void *buf, size_t cap, uint8_t type, uint32_t id, size_t len)
{
    if (len > AGENT_MAX_PAYLOAD)
        return AGENT_E_TOO_BIG;
    if (cap < AGENT_HDR_SIZE)
        return AGENT_E_NOSPACE;
    put_hdr(buf, type, id, len);
    return AGENT_HDR_SIZE;
}

int agent_encode_ping(void *buf, size_t cap, uint32_t id, uint8_t flags)
{
    int r = frame_room(cap, 0);
    if (r < 0)
        return r;
    put_hdr(buf, AGENT_MSG_PING, id, 0);
    ((uint8_t *)buf)[5] = flags;
    return r;
}

int agent_encode_ack(void *buf, size_t cap, uint32_t id)
{
    int r = frame_room(cap, 0);
    if (r < 0)
        return r;
    put_hdr(buf, AGENT_MSG_ACK, id, 0);
    return r;
}

/* A str of a C string s (length sl): u32 n, then the bytes and a NUL (nothing when empty). */
static size_t str_size(size_t sl)
{
    return 4 + (sl ? sl + 1 : 0);
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t sl)
{
    put_u32(p, sl ? (uint32_t)(sl + 1) : 0);
    p += 4;
    if (sl) {
        memcpy(p, s, sl);
        p[sl] = 0;
        p += sl + 1;
    }
    return p;
}

int agent_encode_pong(void *buf, size_t cap, uint32_t id, uint64_t caps, const char *agent_version)
{
    return agent_encode_pong2(buf, cap, id, caps, agent_version, 0);
}

int agent_encode_pong2(void *buf, size_t cap, uint32_t id, uint64_t caps, const char *agent_version,
                       uint32_t instance)
{
    return agent_encode_pong3(buf, cap, id, caps, agent_version, instance, 0);
}

int agent_encode_pong3(void *buf, size_t cap, uint32_t id, uint64_t caps, const char *agent_version,
                       uint32_t instance, uint8_t state)
{
    size_t vl = agent_version ? strlen(agent_version) : 0;
    if (vl > AGENT_MAX_PAYLOAD)
        return AGENT_E_TOO_BIG;
    size_t len = 8 + 8 + str_size(vl);
    int r = frame_room(cap, len);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_PONG, id, len);
    p += AGENT_HDR_SIZE;
    memset(p, 0, 8);
    p[0] = AGENT_PROTO_VERSION;
    p[1] = state;
    put_u32(p + 4, instance);
    put_u64(p + 8, caps);
    put_str(p + 16, agent_version, vl);
    return r;
}

int agent_encode_error(void *buf, size_t cap, uint32_t id, uint32_t errnum, const char *message)
{
    size_t ml = message ? strnlen(message, AGENT_MAX_ERROR_MSG) : 0;
    size_t len = 4 + str_size(ml);
    int r = frame_room(cap, len);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_ERROR, id, len);
    put_u32(p + AGENT_HDR_SIZE, errnum);
    put_str(p + AGENT_HDR_SIZE + 4, message, ml);
    return r;
}

int agent_encode_data(void *buf, size_t cap, uint32_t id, uint8_t type, const void *data,
                      size_t len)
{
    if (type != AGENT_MSG_STDOUT && type != AGENT_MSG_STDERR)
        return AGENT_E_INVALID;
    int r = frame_room(cap, len);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, type, id, len);
    if (len)
        memcpy(p + AGENT_HDR_SIZE, data, len);
    return r;
}

int agent_encode_exit(void *buf, size_t cap, uint32_t id, const agent_exit *e)
{
    int r = frame_room(cap, 12);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_EXIT, id, 12);
    put_u32(p + AGENT_HDR_SIZE, (uint32_t)e->exit_code);
    put_u32(p + AGENT_HDR_SIZE + 4, e->signal);
    put_u32(p + AGENT_HDR_SIZE + 8, e->flags);
    return r;
}

int agent_encode_shutdown(void *buf, size_t cap, uint32_t id, uint32_t action)
{
    int r = frame_room(cap, 4);
    if (r < 0)
        return r;
    put_hdr(buf, AGENT_MSG_SHUTDOWN, id, 4);
    put_u32((uint8_t *)buf + AGENT_HDR_SIZE, action);
    return r;
}

/* Bytes of the strings of a NULL-terminated vector, NULs included; SIZE_MAX past the limit. */
static size_t strv_bytes(char *const *v, size_t *count)
{
    size_t total = 0, c = 0;
    for (; v && v[c]; c++) {
        total += strlen(v[c]) + 1;
        if (total > AGENT_MAX_PAYLOAD || c >= AGENT_MAX_PAYLOAD)
            return SIZE_MAX;
    }
    *count = c;
    return total;
}

size_t agent_exec_frame_size(char *const *argv, char *const *env, const char *cwd, size_t stdin_len)
{
    size_t ac = 0, ec = 0;
    size_t ab = strv_bytes(argv, &ac), eb = strv_bytes(env, &ec);
    size_t cl = cwd ? strlen(cwd) : 0;
    if (ab == SIZE_MAX || eb == SIZE_MAX || cl > AGENT_MAX_PAYLOAD || stdin_len > AGENT_MAX_PAYLOAD)
        return SIZE_MAX;
    return AGENT_HDR_SIZE + 4 + 4 + (8 + ab) + (8 + eb) + str_size(cl) + 4 + stdin_len;
}

static uint8_t *put_strv(uint8_t *p, char *const *v)
{
    size_t count = 0, bytes = strv_bytes(v, &count);
    put_u32(p, (uint32_t)count);
    put_u32(p + 4, (uint32_t)bytes);
    p += 8;
    for (size_t i = 0; i < count; i++) {
        size_t l = strlen(v[i]) + 1;
        memcpy(p, v[i], l);
        p += l;
    }
    return p;
}

int agent_encode_exec(void *buf, size_t cap, uint32_t id, uint32_t timeout_ms, char *const *argv,
                      char *const *env, const char *cwd, const void *stdin_data, size_t stdin_len)
{
    return agent_encode_exec2(buf, cap, id, 0, timeout_ms, argv, env, cwd, stdin_data, stdin_len);
}

size_t agent_exec3_frame_size(char *const *argv, char *const *env, const char *cwd,
                              size_t stdin_len, const char *user)
{
    agent_exec_args a = {.flags = user ? AGENT_EXEC_USER : 0,
                         .argv = argv,
                         .env = env,
                         .cwd = cwd,
                         .stdin_len = stdin_len,
                         .user = user};
    return agent_exec_args_frame_size(&a);
}

size_t agent_exec_args_frame_size(const agent_exec_args *a)
{
    size_t n = agent_exec_frame_size(a->argv, a->env, a->cwd, a->stdin_len);
    size_t ul = a->user ? strlen(a->user) : 0, rl = a->root ? strlen(a->root) : 0;
    if (n == SIZE_MAX || ul > AGENT_MAX_PAYLOAD || rl > AGENT_MAX_PAYLOAD)
        return SIZE_MAX;
    if (a->user && (a->flags & AGENT_EXEC_USER))
        n += str_size(ul);
    if (a->flags & AGENT_EXEC_TTY)
        n += 8;
    if (a->root && (a->flags & AGENT_EXEC_ROOT))
        n += str_size(rl);
    return n;
}

int agent_encode_exec2(void *buf, size_t cap, uint32_t id, uint32_t flags, uint32_t timeout_ms,
                       char *const *argv, char *const *env, const char *cwd, const void *stdin_data,
                       size_t stdin_len)
{
    return agent_encode_exec3(buf, cap, id, flags, timeout_ms, argv, env, cwd, stdin_data,
                              stdin_len, NULL);
}

int agent_encode_exec3(void *buf, size_t cap, uint32_t id, uint32_t flags, uint32_t timeout_ms,
                       char *const *argv, char *const *env, const char *cwd, const void *stdin_data,
                       size_t stdin_len, const char *user)
{
    if (flags & AGENT_EXEC_TTY)
        return AGENT_E_INVALID; /* a TTY needs its size: agent_encode_exec_args */
    agent_exec_args a = {.flags = flags,
                         .timeout_ms = timeout_ms,
                         .argv = argv,
                         .env = env,
                         .cwd = cwd,
                         .stdin_data = stdin_data,
                         .stdin_len = stdin_len,
                         .user = user};
    return agent_encode_exec_args(buf, cap, id, &a);
}

int agent_encode_exec_args(void *buf, size_t cap, uint32_t id, const agent_exec_args *a)
{
    uint32_t flags = a->flags;
    const char *user = a->user;
    if (flags & ~AGENT_EXEC_FLAGS_V2)
        return AGENT_E_INVALID;
    if (!(flags & AGENT_EXEC_USER) != !(user && user[0]))
        return AGENT_E_INVALID;
    if (!(flags & AGENT_EXEC_ROOT) != !(a->root && a->root[0] == '/'))
        return AGENT_E_INVALID;
    if ((flags & AGENT_EXEC_TTY) && (a->tty_rows > AGENT_TTY_MAX || a->tty_cols > AGENT_TTY_MAX))
        return AGENT_E_INVALID;
    char *const *argv = a->argv, *const *env = a->env;
    if (!argv || !argv[0] || !argv[0][0])
        return AGENT_E_INVALID;
    for (size_t i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq || eq == env[i])
            return AGENT_E_INVALID;
    }
    if (a->stdin_len && !a->stdin_data)
        return AGENT_E_INVALID;
    if (!(flags & AGENT_EXEC_USER))
        user = NULL;
    size_t total = agent_exec_args_frame_size(a);
    if (total == SIZE_MAX)
        return AGENT_E_TOO_BIG;
    int r = frame_room(cap, total - AGENT_HDR_SIZE);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_EXEC, id, total - AGENT_HDR_SIZE);
    p += AGENT_HDR_SIZE;
    put_u32(p, flags);
    put_u32(p + 4, a->timeout_ms);
    p = put_strv(p + 8, argv);
    p = put_strv(p, env);
    p = put_str(p, a->cwd, a->cwd ? strlen(a->cwd) : 0);
    put_u32(p, (uint32_t)a->stdin_len);
    if (a->stdin_len)
        memcpy(p + 4, a->stdin_data, a->stdin_len);
    p += 4 + a->stdin_len;
    if (user)
        p = put_str(p, user, strlen(user));
    if (flags & AGENT_EXEC_TTY) {
        put_u32(p, a->tty_rows);
        put_u32(p + 4, a->tty_cols);
        p += 8;
    }
    if (flags & AGENT_EXEC_ROOT)
        put_str(p, a->root, strlen(a->root));
    return r;
}

int agent_encode_resize(void *buf, size_t cap, uint32_t id, uint32_t rows, uint32_t cols)
{
    if (rows > AGENT_TTY_MAX || cols > AGENT_TTY_MAX)
        return AGENT_E_INVALID;
    uint8_t p[8];
    put_u32(p, rows);
    put_u32(p + 4, cols);
    return agent_encode_raw(buf, cap, AGENT_MSG_RESIZE, id, p, sizeof(p));
}

/* --- decoders --- */

typedef struct reader {
    const uint8_t *p;
    size_t n;
    size_t off;
} reader;

static bool rd_u32(reader *r, uint32_t *v)
{
    if (r->n - r->off < 4)
        return false;
    *v = get_u32(r->p + r->off);
    r->off += 4;
    return true;
}

static bool rd_bytes(reader *r, const uint8_t **data, uint32_t *len)
{
    uint32_t l;
    if (!rd_u32(r, &l) || r->n - r->off < l)
        return false;
    *data = r->p + r->off;
    *len = l;
    r->off += l;
    return true;
}

static bool rd_str(reader *r, const char **s)
{
    const uint8_t *d;
    uint32_t l;
    if (!rd_bytes(r, &d, &l))
        return false;
    if (l == 0) {
        *s = "";
        return true;
    }
    /* the empty string is n = 0 only: one encoding per value */
    if (l == 1 || d[l - 1] != 0 || memchr(d, 0, l - 1))
        return false;
    *s = (const char *)d;
    return true;
}

static bool rd_strv(reader *r, agent_strv *v)
{
    uint32_t count;
    const uint8_t *d;
    uint32_t l;
    if (!rd_u32(r, &count) || !rd_bytes(r, &d, &l))
        return false;
    if (count == 0 ? l != 0 : (l == 0 || d[l - 1] != 0))
        return false;
    uint32_t nuls = 0;
    for (const uint8_t *q = d; (q = memchr(q, 0, (size_t)(d + l - q))); q++)
        nuls++;
    if (nuls != count)
        return false;
    *v = (agent_strv){.count = count, .size = l, .data = (const char *)d};
    return true;
}

const char *agent_strv_next(const agent_strv *v, const char *prev)
{
    if (!prev)
        return v->count ? v->data : NULL;
    const char *next = prev + strlen(prev) + 1;
    return next < v->data + v->size ? next : NULL;
}

int agent_decode_pong(const void *payload, size_t n, agent_pong *out)
{
    reader r = {payload, n, 0};
    if (n < 16)
        return AGENT_E_MALFORMED;
    out->version = r.p[0];
    out->state = r.p[1];
    out->instance = get_u32(r.p + 4);
    out->caps = get_u64(r.p + 8);
    r.off = 16;
    if (!rd_str(&r, &out->agent_version) || r.off != n)
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

int agent_decode_error(const void *payload, size_t n, agent_error_msg *out)
{
    reader r = {payload, n, 0};
    if (!rd_u32(&r, &out->errnum) || !rd_str(&r, &out->message) || r.off != n)
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

int agent_decode_exit(const void *payload, size_t n, agent_exit *out)
{
    reader r = {payload, n, 0};
    uint32_t code;
    if (!rd_u32(&r, &code) || !rd_u32(&r, &out->signal) || !rd_u32(&r, &out->flags) || r.off != n)
        return AGENT_E_MALFORMED;
    out->exit_code = (int32_t)code;
    return AGENT_OK;
}

int agent_decode_shutdown(const void *payload, size_t n, uint32_t *action)
{
    reader r = {payload, n, 0};
    if (!rd_u32(&r, action) || r.off != n)
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

int agent_decode_exec(const void *payload, size_t n, agent_exec_req *out)
{
    reader r = {payload, n, 0};
    const char *cwd;
    const char *user = NULL;
    if (!rd_u32(&r, &out->flags) || !rd_u32(&r, &out->timeout_ms) || !rd_strv(&r, &out->argv) ||
        !rd_strv(&r, &out->env) || !rd_str(&r, &cwd) ||
        !rd_bytes(&r, &out->stdin_data, &out->stdin_len) ||
        ((out->flags & AGENT_EXEC_USER) && (!rd_str(&r, &user) || !user[0])))
        return AGENT_E_MALFORMED;
    out->tty_rows = out->tty_cols = 0;
    if ((out->flags & AGENT_EXEC_TTY) &&
        (!rd_u32(&r, &out->tty_rows) || !rd_u32(&r, &out->tty_cols) ||
         out->tty_rows > AGENT_TTY_MAX || out->tty_cols > AGENT_TTY_MAX))
        return AGENT_E_MALFORMED;
    const char *root = NULL;
    if ((out->flags & AGENT_EXEC_ROOT) && (!rd_str(&r, &root) || root[0] != '/'))
        return AGENT_E_MALFORMED;
    out->root = root;
    if (r.off != n)
        return AGENT_E_MALFORMED;
    out->user = user;
    if ((out->flags & ~AGENT_EXEC_FLAGS_V2) || out->argv.count == 0 || out->argv.data[0] == 0)
        return AGENT_E_MALFORMED;
    for (const char *e = agent_strv_next(&out->env, NULL); e; e = agent_strv_next(&out->env, e)) {
        const char *eq = strchr(e, '=');
        if (!eq || eq == e)
            return AGENT_E_MALFORMED;
    }
    out->cwd = cwd[0] ? cwd : NULL;
    return AGENT_OK;
}

/* --- v2 messages --- */

int agent_encode_raw(void *buf, size_t cap, uint8_t type, uint32_t id, const void *data, size_t len)
{
    int r = frame_room(cap, len);
    if (r < 0)
        return r;
    put_hdr(buf, type, id, len);
    if (len)
        memcpy((uint8_t *)buf + AGENT_HDR_SIZE, data, len);
    return r;
}

int agent_encode_u32_msg(void *buf, size_t cap, uint8_t type, uint32_t id, uint32_t v)
{
    uint8_t p[4];
    put_u32(p, v);
    return agent_encode_raw(buf, cap, type, id, p, 4);
}

int agent_decode_u32_msg(const void *payload, size_t n, uint32_t *v)
{
    reader r = {payload, n, 0};
    if (!rd_u32(&r, v) || r.off != n)
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

int agent_decode_resize(const void *payload, size_t n, uint32_t *rows, uint32_t *cols)
{
    reader r = {payload, n, 0};
    if (!rd_u32(&r, rows) || !rd_u32(&r, cols) || r.off != n || *rows > AGENT_TTY_MAX ||
        *cols > AGENT_TTY_MAX)
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

static bool rd_u64(reader *r, uint64_t *v)
{
    if (r->n - r->off < 8)
        return false;
    *v = get_u64(r->p + r->off);
    r->off += 8;
    return true;
}

static bool path_ok(const char *path)
{
    return path && path[0] == '/' && strlen(path) < 4096;
}

int agent_encode_file_put(void *buf, size_t cap, uint32_t id, const agent_file_put *fp)
{
    if (!path_ok(fp->path) || (fp->mode & ~07777u) || fp->flags ||
        (fp->mtime_nsec >= 1000000000u && fp->mtime_nsec != UINT32_MAX))
        return AGENT_E_INVALID;
    size_t pl = strlen(fp->path);
    size_t len = 4 + 4 + 8 + 4 + str_size(pl);
    int r = frame_room(cap, len);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_FILE_PUT, id, len);
    p += AGENT_HDR_SIZE;
    put_u32(p, fp->flags);
    put_u32(p + 4, fp->mode);
    put_u64(p + 8, (uint64_t)fp->mtime_sec);
    put_u32(p + 16, fp->mtime_nsec);
    put_str(p + 20, fp->path, pl);
    return r;
}

int agent_decode_file_put(const void *payload, size_t n, agent_file_put *out)
{
    reader r = {payload, n, 0};
    uint64_t t;
    if (!rd_u32(&r, &out->flags) || !rd_u32(&r, &out->mode) || !rd_u64(&r, &t) ||
        !rd_u32(&r, &out->mtime_nsec) || !rd_str(&r, &out->path) || r.off != n)
        return AGENT_E_MALFORMED;
    out->mtime_sec = (int64_t)t;
    if (out->flags || (out->mode & ~07777u) || !path_ok(out->path) ||
        (out->mtime_nsec >= 1000000000u && out->mtime_nsec != UINT32_MAX))
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

int agent_encode_file_get(void *buf, size_t cap, uint32_t id, const char *path)
{
    if (!path_ok(path))
        return AGENT_E_INVALID;
    size_t pl = strlen(path);
    size_t len = 4 + str_size(pl);
    int r = frame_room(cap, len);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_FILE_GET, id, len);
    put_u32(p + AGENT_HDR_SIZE, 0);
    put_str(p + AGENT_HDR_SIZE + 4, path, pl);
    return r;
}

int agent_decode_file_get(const void *payload, size_t n, const char **path)
{
    reader r = {payload, n, 0};
    uint32_t flags;
    if (!rd_u32(&r, &flags) || !rd_str(&r, path) || r.off != n || flags || !path_ok(*path))
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

int agent_encode_file_info(void *buf, size_t cap, uint32_t id, const agent_file_info *fi)
{
    int r = frame_room(cap, 24);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_FILE_INFO, id, 24);
    p += AGENT_HDR_SIZE;
    put_u32(p, fi->mode);
    put_u64(p + 4, fi->size);
    put_u64(p + 12, (uint64_t)fi->mtime_sec);
    put_u32(p + 20, fi->mtime_nsec);
    return r;
}

int agent_decode_file_info(const void *payload, size_t n, agent_file_info *out)
{
    reader r = {payload, n, 0};
    uint64_t t;
    if (!rd_u32(&r, &out->mode) || !rd_u64(&r, &out->size) || !rd_u64(&r, &t) ||
        !rd_u32(&r, &out->mtime_nsec) || r.off != n || out->mtime_nsec >= 1000000000u)
        return AGENT_E_MALFORMED;
    out->mtime_sec = (int64_t)t;
    return AGENT_OK;
}

int agent_encode_info_reply(void *buf, size_t cap, uint32_t id, const agent_info *in)
{
    int r = frame_room(cap, 40);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_INFO_REPLY, id, 40);
    p += AGENT_HDR_SIZE;
    put_u64(p, in->uptime_ms);
    put_u64(p + 8, in->mem_total);
    put_u64(p + 16, in->mem_available);
    put_u32(p + 24, in->load[0]);
    put_u32(p + 28, in->load[1]);
    put_u32(p + 32, in->load[2]);
    put_u32(p + 36, in->running);
    return r;
}

int agent_decode_info_reply(const void *payload, size_t n, agent_info *out)
{
    reader r = {payload, n, 0};
    if (!rd_u64(&r, &out->uptime_ms) || !rd_u64(&r, &out->mem_total) ||
        !rd_u64(&r, &out->mem_available) || !rd_u32(&r, &out->load[0]) ||
        !rd_u32(&r, &out->load[1]) || !rd_u32(&r, &out->load[2]) || !rd_u32(&r, &out->running) ||
        r.off != n)
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

static bool secret_name_ok(const char *s)
{
    return s[0] && strcmp(s, ".") != 0 && strcmp(s, "..") != 0 && !strchr(s, '/') &&
           strlen(s) < 256;
}

int agent_encode_metadata(void *buf, size_t cap, uint32_t id, const char *hostname,
                          char *const *env, char *const *secret_names, const void *const *values,
                          const size_t *value_lens)
{
    size_t hl = hostname ? strlen(hostname) : 0;
    size_t ec = 0, sc = 0;
    size_t eb = strv_bytes(env, &ec), sb = strv_bytes(secret_names, &sc);
    if (eb == SIZE_MAX || sb == SIZE_MAX || hl > 64)
        return hl > 64 ? AGENT_E_INVALID : AGENT_E_TOO_BIG;
    for (size_t i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq || eq == env[i])
            return AGENT_E_INVALID;
    }
    size_t vb = 0;
    for (size_t i = 0; i < sc; i++) {
        if (!secret_name_ok(secret_names[i]) || (value_lens[i] && !values[i]))
            return AGENT_E_INVALID;
        if (value_lens[i] > AGENT_MAX_PAYLOAD)
            return AGENT_E_TOO_BIG;
        vb += 4 + value_lens[i];
        if (vb > AGENT_MAX_PAYLOAD)
            return AGENT_E_TOO_BIG;
    }
    size_t len = str_size(hl) + 8 + eb + 8 + sb + 4 + vb;
    int r = frame_room(cap, len);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_METADATA, id, len);
    p += AGENT_HDR_SIZE;
    p = put_str(p, hostname, hl);
    p = put_strv(p, env);
    p = put_strv(p, secret_names);
    put_u32(p, (uint32_t)vb);
    p += 4;
    for (size_t i = 0; i < sc; i++) {
        put_u32(p, (uint32_t)value_lens[i]);
        if (value_lens[i])
            memcpy(p + 4, values[i], value_lens[i]);
        p += 4 + value_lens[i];
    }
    return r;
}

bool agent_metadata_next_value(const agent_metadata *m, size_t *off, const uint8_t **data,
                               uint32_t *len)
{
    reader r = {m->values, m->values_len, *off};
    if (*off >= m->values_len || !rd_bytes(&r, data, len))
        return false;
    *off = r.off;
    return true;
}

int agent_decode_metadata(const void *payload, size_t n, agent_metadata *out)
{
    reader r = {payload, n, 0};
    const uint8_t *vals;
    uint32_t vl;
    if (!rd_str(&r, &out->hostname) || !rd_strv(&r, &out->env) ||
        !rd_strv(&r, &out->secret_names) || !rd_bytes(&r, &vals, &vl) || r.off != n)
        return AGENT_E_MALFORMED;
    if (strlen(out->hostname) > 64)
        return AGENT_E_MALFORMED;
    for (const char *e = agent_strv_next(&out->env, NULL); e; e = agent_strv_next(&out->env, e)) {
        const char *eq = strchr(e, '=');
        if (!eq || eq == e)
            return AGENT_E_MALFORMED;
    }
    for (const char *s = agent_strv_next(&out->secret_names, NULL); s;
         s = agent_strv_next(&out->secret_names, s))
        if (!secret_name_ok(s))
            return AGENT_E_MALFORMED;
    out->values = vals;
    out->values_len = vl;
    out->n_values = 0;
    /* exactly one value per name, and nothing else */
    size_t off = 0;
    const uint8_t *d;
    uint32_t l;
    while (off < vl) {
        if (!agent_metadata_next_value(out, &off, &d, &l))
            return AGENT_E_MALFORMED;
        out->n_values++;
    }
    if (out->n_values != out->secret_names.count)
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}

int agent_encode_identity(void *buf, size_t cap, uint32_t id, const agent_identity *in)
{
    const char *mid = in->machine_id ? in->machine_id : "";
    const char *mac = in->mac ? in->mac : "";
    size_t ml = strlen(mid), al = strlen(mac);
    if (ml > 64 || al > 32 || in->n_entropy < 16 || in->n_entropy > 512 || !in->entropy)
        return AGENT_E_INVALID;
    size_t len = 8 + str_size(ml) + str_size(al) + 4 + in->n_entropy;
    int r = frame_room(cap, len);
    if (r < 0)
        return r;
    uint8_t *p = buf;
    put_hdr(p, AGENT_MSG_IDENTITY, id, len);
    p += AGENT_HDR_SIZE;
    put_u64(p, in->realtime_ns);
    p += 8;
    p = put_str(p, mid, ml);
    p = put_str(p, mac, al);
    put_u32(p, in->n_entropy);
    memcpy(p + 4, in->entropy, in->n_entropy);
    return (int)(AGENT_HDR_SIZE + len);
}

int agent_decode_identity(const void *payload, size_t n, agent_identity *out)
{
    reader r = {payload, n, 0};
    if (!rd_u64(&r, &out->realtime_ns) || !rd_str(&r, &out->machine_id) || !rd_str(&r, &out->mac) ||
        !rd_bytes(&r, &out->entropy, &out->n_entropy) || r.off != n)
        return AGENT_E_MALFORMED;
    if (strlen(out->machine_id) > 64 || strlen(out->mac) > 32 || out->n_entropy < 16 ||
        out->n_entropy > 512)
        return AGENT_E_MALFORMED;
    return AGENT_OK;
}
