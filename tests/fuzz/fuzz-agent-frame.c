/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the agent protocol decoder (src/proto/agent-proto.c): the input is a byte
 * stream as it arrives on the agent port. Checks that the stream reader accounts for every byte,
 * that every decoder stays inside its payload, that decoded EXEC requests re-encode to the same
 * payload, and that reading the stream in small pieces finds the same frames as reading it whole.
 * Built and run by tests/fuzz/run.sh, or by hand:
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc/proto tests/fuzz/fuzz-agent-frame.c \
 *     src/proto/agent-proto.c -o fuzz-agent-frame && ./fuzz-agent-frame
 * tests/fuzz/corpus/fuzz-agent-frame
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agent-proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_FRAMES 4096

struct seen {
    size_t n;
    uint32_t id[MAX_FRAMES];
    uint8_t type[MAX_FRAMES];
    int result[MAX_FRAMES];
};

static void check_payload(const agent_hdr *h, const uint8_t *p)
{
    agent_pong pong;
    agent_error_msg em;
    agent_exit ex;
    agent_exec_req req;
    uint32_t action;
    if (agent_decode_pong(p, h->len, &pong) == AGENT_OK && strlen(pong.agent_version) >= h->len)
        abort();
    if (agent_decode_error(p, h->len, &em) == AGENT_OK && strlen(em.message) >= h->len)
        abort();
    (void)agent_decode_exit(p, h->len, &ex);
    (void)agent_decode_shutdown(p, h->len, &action);

    /* v2 decoders, host side (FILE_INFO, INFO_REPLY, STDIN_ACK) and guest side (the rest) */
    uint32_t v;
    (void)agent_decode_u32_msg(p, h->len, &v);
    uint32_t rows, cols;
    if (agent_decode_resize(p, h->len, &rows, &cols) == AGENT_OK &&
        (rows > AGENT_TTY_MAX || cols > AGENT_TTY_MAX))
        abort();
    agent_file_info fi;
    if (agent_decode_file_info(p, h->len, &fi) == AGENT_OK && fi.mtime_nsec >= 1000000000u)
        abort();
    agent_info in;
    (void)agent_decode_info_reply(p, h->len, &in);
    const char *path;
    if (agent_decode_file_get(p, h->len, &path) == AGENT_OK &&
        (path[0] != '/' || strlen(path) >= h->len))
        abort();
    agent_file_put fp;
    if (agent_decode_file_put(p, h->len, &fp) == AGENT_OK) {
        /* re-encodes to the same payload */
        uint8_t *out = malloc(AGENT_HDR_SIZE + h->len);
        if (!out)
            abort();
        int n = agent_encode_file_put(out, AGENT_HDR_SIZE + h->len, h->id, &fp);
        if (n != (int)(AGENT_HDR_SIZE + h->len) || memcmp(out + AGENT_HDR_SIZE, p, h->len) != 0)
            abort();
        free(out);
    }
    agent_metadata m;
    if (agent_decode_metadata(p, h->len, &m) == AGENT_OK) {
        size_t off = 0, count = 0;
        const uint8_t *d;
        uint32_t l;
        while (agent_metadata_next_value(&m, &off, &d, &l)) {
            if (d < p || d + l > p + h->len)
                abort();
            count++;
        }
        if (count != m.secret_names.count || off != m.values_len)
            abort();
    }
    if (agent_decode_exec(p, h->len, &req) != AGENT_OK)
        return;

    /* collect the vectors and re-encode: must give the very same payload */
    char **argv = calloc(req.argv.count + 1, sizeof(char *));
    char **env = calloc(req.env.count + 1, sizeof(char *));
    if (!argv || !env)
        abort();
    size_t i = 0;
    for (const char *s = agent_strv_next(&req.argv, NULL); s; s = agent_strv_next(&req.argv, s))
        argv[i++] = (char *)s;
    if (i != req.argv.count)
        abort();
    i = 0;
    for (const char *s = agent_strv_next(&req.env, NULL); s; s = agent_strv_next(&req.env, s))
        env[i++] = (char *)s;
    if (i != req.env.count)
        abort();
    agent_exec_args a = {.flags = req.flags,
                         .timeout_ms = req.timeout_ms,
                         .argv = argv,
                         .env = env,
                         .cwd = req.cwd,
                         .stdin_data = req.stdin_data,
                         .stdin_len = req.stdin_len,
                         .user = req.user,
                         .tty_rows = req.tty_rows,
                         .tty_cols = req.tty_cols};
    size_t need = agent_exec_args_frame_size(&a);
    uint8_t *out = malloc(need);
    if (!out)
        abort();
    int n = agent_encode_exec_args(out, need, h->id, &a);
    if (n < 0 || (size_t)n != need || need != AGENT_HDR_SIZE + h->len ||
        memcmp(out + AGENT_HDR_SIZE, p, h->len) != 0)
        abort();
    free(out);
    free(argv);
    free(env);
}

/* Read the stream through a reader buffer fed `chunk` bytes at a time, as the agent does. */
static void read_stream(const uint8_t *data, size_t size, size_t chunk, struct seen *seen,
                        bool check)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        abort();
    size_t len = 0, fed = 0;
    seen->n = 0;
    while (fed < size || len > 0) {
        if (fed < size) {
            size_t k = size - fed < chunk ? size - fed : chunk;
            memcpy(buf + len, data + fed, k);
            len += k;
            fed += k;
        }
        size_t off = 0;
        for (;;) {
            agent_hdr h;
            size_t consumed = 0;
            int r = agent_frame_next(buf + off, len - off, &h, &consumed);
            if (consumed > len - off)
                abort();
            if (r == AGENT_E_SHORT) {
                if (consumed != 0)
                    abort();
                break;
            }
            if (consumed == 0)
                abort(); /* no progress */
            if (r == AGENT_OK || r == AGENT_E_VERSION) {
                if (consumed != AGENT_HDR_SIZE + (size_t)h.len || h.len > AGENT_MAX_PAYLOAD)
                    abort();
                if (seen->n < MAX_FRAMES) {
                    seen->id[seen->n] = h.id;
                    seen->type[seen->n] = h.type;
                    seen->result[seen->n] = r;
                    seen->n++;
                }
                if (r == AGENT_OK && check)
                    check_payload(&h, buf + off + AGENT_HDR_SIZE);
            } else if (r != AGENT_E_MAGIC && r != AGENT_E_TOO_BIG) {
                abort();
            }
            off += consumed;
        }
        memmove(buf, buf + off, len - off);
        len -= off;
        if (fed == size)
            break; /* what is left is an incomplete frame */
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct seen whole, pieces;
    read_stream(data, size, size ? size : 1, &whole, true);
    /* the piece size comes from the input so the fuzzer explores it too */
    size_t chunk = size ? (size_t)(data[0] % 23) + 1 : 1;
    read_stream(data, size, chunk, &pieces, false);
    if (whole.n != pieces.n)
        abort();
    for (size_t i = 0; i < whole.n; i++)
        if (whole.id[i] != pieces.id[i] || whole.type[i] != pieces.type[i] ||
            whole.result[i] != pieces.result[i])
            abort();
    return 0;
}
