/* SPDX-License-Identifier: MIT */
/* The agent protocol codec: round trips, truncation, bad magic/version, oversize, garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent-proto.h"

static uint8_t buf[AGENT_MAX_FRAME + 64];
static uint8_t input[AGENT_MAX_PAYLOAD + 64]; /* stdin data: must not overlap buf */

/* Parse one whole frame from buf[0..n) and check it is exactly n bytes. */
static agent_hdr frame_of(const uint8_t *b, size_t n)
{
    agent_hdr h;
    size_t consumed = 0;
    assert_int_equal(agent_frame_next(b, n, &h, &consumed), AGENT_OK);
    assert_int_equal(consumed, n);
    assert_int_equal(h.len + AGENT_HDR_SIZE, n);
    return h;
}

static void test_header_layout(void **state)
{
    int n = agent_encode_ping(buf, sizeof(buf), 0x01020304, 0);
    assert_int_equal(n, AGENT_HDR_SIZE);
    const uint8_t want[AGENT_HDR_SIZE] = {'V',  'M',  'A',  2,    0x01, 0, 0, 0,
                                          0x04, 0x03, 0x02, 0x01, 0,    0, 0, 0};
    assert_memory_equal(buf, want, sizeof(want));
    agent_hdr h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_PING);
    assert_int_equal(h.id, 0x01020304);
    assert_int_equal(h.version, AGENT_PROTO_VERSION);
    assert_int_equal(h.flags, 0);

    n = agent_encode_ping(buf, sizeof(buf), 5, AGENT_FLAG_NEW_SESSION);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(h.flags, AGENT_FLAG_NEW_SESSION);
}

static void test_pong_roundtrip(void **state)
{
    int n = agent_encode_pong(buf, sizeof(buf), 7, AGENT_CAP_EXEC | AGENT_CAP_SHUTDOWN, "0.1.0");
    assert_true(n > 0);
    agent_hdr h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_PONG);
    assert_int_equal(h.id, 7);
    agent_pong p;
    assert_int_equal(agent_decode_pong(buf + AGENT_HDR_SIZE, h.len, &p), AGENT_OK);
    assert_int_equal(p.version, AGENT_PROTO_VERSION);
    assert_int_equal(p.instance, 0);
    assert_int_equal(p.caps, AGENT_CAP_EXEC | AGENT_CAP_SHUTDOWN);
    assert_string_equal(p.agent_version, "0.1.0");

    /* empty version string */
    n = agent_encode_pong(buf, sizeof(buf), 8, 0, NULL);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(agent_decode_pong(buf + AGENT_HDR_SIZE, h.len, &p), AGENT_OK);
    assert_string_equal(p.agent_version, "");
}

static void test_error_roundtrip(void **state)
{
    const char *msg = "cannot execute 'foo': No such file or directory";
    int n = agent_encode_error(buf, sizeof(buf), 42, 2, msg);
    agent_hdr h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_ERROR);
    agent_error_msg e;
    assert_int_equal(agent_decode_error(buf + AGENT_HDR_SIZE, h.len, &e), AGENT_OK);
    assert_int_equal(e.errnum, 2);
    assert_string_equal(e.message, msg);

    /* long messages are truncated, not rejected */
    char *big = malloc(10000);
    assert_non_null(big);
    memset(big, 'x', 9999);
    big[9999] = 0;
    n = agent_encode_error(buf, sizeof(buf), 1, 5, big);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(agent_decode_error(buf + AGENT_HDR_SIZE, h.len, &e), AGENT_OK);
    assert_int_equal(strlen(e.message), AGENT_MAX_ERROR_MSG);
    free(big);
}

static void test_data_exit_shutdown_ack(void **state)
{
    int n = agent_encode_data(buf, sizeof(buf), 3, AGENT_MSG_STDERR, "abc", 3);
    agent_hdr h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_STDERR);
    assert_int_equal(h.len, 3);
    assert_memory_equal(buf + AGENT_HDR_SIZE, "abc", 3);
    assert_int_equal(agent_encode_data(buf, sizeof(buf), 3, AGENT_MSG_EXIT, "abc", 3),
                     AGENT_E_INVALID);

    agent_exit e = {.exit_code = -5, .signal = 9, .flags = AGENT_EXIT_TIMED_OUT}, d;
    n = agent_encode_exit(buf, sizeof(buf), 4, &e);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(agent_decode_exit(buf + AGENT_HDR_SIZE, h.len, &d), AGENT_OK);
    assert_int_equal(d.exit_code, -5);
    assert_int_equal(d.signal, 9);
    assert_int_equal(d.flags, AGENT_EXIT_TIMED_OUT);
    assert_int_equal(agent_decode_exit(buf + AGENT_HDR_SIZE, h.len - 1, &d), AGENT_E_MALFORMED);

    uint32_t action = 99;
    n = agent_encode_shutdown(buf, sizeof(buf), 5, AGENT_SHUTDOWN_REBOOT);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(agent_decode_shutdown(buf + AGENT_HDR_SIZE, h.len, &action), AGENT_OK);
    assert_int_equal(action, AGENT_SHUTDOWN_REBOOT);

    n = agent_encode_ack(buf, sizeof(buf), 6);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_ACK);
    assert_int_equal(h.len, 0);
}

/* EXEC as a user (v2 flag AGENT_EXEC_USER): the name travels after the input. */
static void test_exec_user(void **state)
{
    (void)state;
    char *argv[] = {"id", "-u", NULL};
    size_t want = agent_exec3_frame_size(argv, NULL, NULL, 2, "1000:1000");
    int n = agent_encode_exec3(buf, sizeof(buf), 5, AGENT_EXEC_USER, 0, argv, NULL, NULL, "in", 2,
                               "1000:1000");
    assert_int_equal((size_t)n, want);
    agent_hdr h;
    size_t consumed = 0;
    assert_int_equal(agent_frame_next(buf, (size_t)n, &h, &consumed), AGENT_OK);
    agent_exec_req req;
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &req), AGENT_OK);
    assert_string_equal(req.user, "1000:1000");
    assert_int_equal(req.stdin_len, 2);
    assert_memory_equal(req.stdin_data, "in", 2);
    /* without the flag: no user, and the same bytes as agent_encode_exec2 */
    uint8_t b2[512];
    n = agent_encode_exec3(buf, sizeof(buf), 5, 0, 0, argv, NULL, NULL, NULL, 0, NULL);
    assert_int_equal(agent_encode_exec2(b2, sizeof(b2), 5, 0, 0, argv, NULL, NULL, NULL, 0), n);
    assert_memory_equal(buf, b2, (size_t)n);
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, (size_t)n - AGENT_HDR_SIZE, &req),
                     AGENT_OK);
    assert_null(req.user);
    /* the flag and the name go together */
    assert_int_equal(agent_encode_exec3(buf, sizeof(buf), 5, AGENT_EXEC_USER, 0, argv, NULL, NULL,
                                        NULL, 0, NULL),
                     AGENT_E_INVALID);
    assert_int_equal(
        agent_encode_exec3(buf, sizeof(buf), 5, AGENT_EXEC_USER, 0, argv, NULL, NULL, NULL, 0, ""),
        AGENT_E_INVALID);
    assert_int_equal(
        agent_encode_exec3(buf, sizeof(buf), 5, 0, 0, argv, NULL, NULL, NULL, 0, "root"),
        AGENT_E_INVALID);
    /* decoder: the flag without the name, an empty name, or trailing bytes are malformed */
    n = agent_encode_exec3(buf, sizeof(buf), 5, AGENT_EXEC_USER, 0, argv, NULL, NULL, NULL, 0,
                           "root");
    assert_true(n > 0);
    size_t len = (size_t)n - AGENT_HDR_SIZE;
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, len - 9, &req), AGENT_E_MALFORMED);
    uint8_t *flags = buf + AGENT_HDR_SIZE;
    flags[0] &= (uint8_t)~AGENT_EXEC_USER;
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, len, &req), AGENT_E_MALFORMED);
    flags[0] |= AGENT_EXEC_USER;
    uint8_t *tail = buf + n - 9; /* u32 5, "root\0" */
    memset(tail, 0, 4);          /* n = 0: the empty string */
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, len - 5, &req), AGENT_E_MALFORMED);
}

/* EXEC in another root (v2 flag AGENT_EXEC_ROOT, the containerd shim): the root travels last,
 * after the terminal's size. */
static void test_exec_root(void **state)
{
    (void)state;
    char *argv[] = {"uname", "-r", NULL};
    agent_exec_args a = {.flags = AGENT_EXEC_ROOT | AGENT_EXEC_TTY | AGENT_EXEC_USER,
                         .argv = argv,
                         .cwd = "/tmp",
                         .user = "0:0",
                         .tty_rows = 24,
                         .tty_cols = 80,
                         .root = "/run/vmctl-rootfs"};
    size_t want = agent_exec_args_frame_size(&a);
    int n = agent_encode_exec_args(buf, sizeof(buf), 5, &a);
    assert_int_equal((size_t)n, want);
    agent_hdr h;
    size_t consumed = 0;
    assert_int_equal(agent_frame_next(buf, (size_t)n, &h, &consumed), AGENT_OK);
    agent_exec_req req;
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &req), AGENT_OK);
    assert_string_equal(req.root, "/run/vmctl-rootfs");
    assert_string_equal(req.user, "0:0");
    assert_string_equal(req.cwd, "/tmp");
    assert_int_equal(req.tty_rows, 24);
    assert_int_equal(req.tty_cols, 80);
    /* the flag without the root's bytes, or a trailing byte, is malformed */
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len - 1, &req), AGENT_E_MALFORMED);
    buf[AGENT_HDR_SIZE] &= (uint8_t)~AGENT_EXEC_ROOT;
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &req), AGENT_E_MALFORMED);
    /* the flag and an absolute root go together */
    a.root = "rel";
    assert_int_equal(agent_encode_exec_args(buf, sizeof(buf), 5, &a), AGENT_E_INVALID);
    a.root = NULL;
    assert_int_equal(agent_encode_exec_args(buf, sizeof(buf), 5, &a), AGENT_E_INVALID);
    a.flags &= ~AGENT_EXEC_ROOT;
    a.root = "/r";
    assert_int_equal(agent_encode_exec_args(buf, sizeof(buf), 5, &a), AGENT_E_INVALID);
    /* without it: no root */
    a.root = NULL;
    n = agent_encode_exec_args(buf, sizeof(buf), 5, &a);
    assert_true(n > 0);
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, (size_t)n - AGENT_HDR_SIZE, &req),
                     AGENT_OK);
    assert_null(req.root);
}

static void test_exec_roundtrip(void **state)
{
    char *argv[] = {"sh", "-c", "echo hi", "", NULL};
    char *env[] = {"A=1", "EMPTY=", "X=a=b", NULL};
    const char in[] = {'i', 0, 'n'};
    size_t want = agent_exec_frame_size(argv, env, "/tmp", sizeof(in));
    int n = agent_encode_exec(buf, sizeof(buf), 9, 1500, argv, env, "/tmp", in, sizeof(in));
    assert_int_equal(n, want);
    agent_hdr h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_EXEC);
    agent_exec_req r;
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &r), AGENT_OK);
    assert_int_equal(r.timeout_ms, 1500);
    assert_int_equal(r.argv.count, 4);
    const char *s = NULL;
    for (int i = 0; i < 4; i++) {
        s = agent_strv_next(&r.argv, s);
        assert_non_null(s);
        assert_string_equal(s, argv[i]);
    }
    assert_null(agent_strv_next(&r.argv, s));
    assert_int_equal(r.env.count, 3);
    s = NULL;
    for (int i = 0; i < 3; i++) {
        s = agent_strv_next(&r.env, s);
        assert_string_equal(s, env[i]);
    }
    assert_null(agent_strv_next(&r.env, s));
    assert_string_equal(r.cwd, "/tmp");
    assert_int_equal(r.stdin_len, sizeof(in));
    assert_memory_equal(r.stdin_data, in, sizeof(in));

    /* minimal: no env, no cwd, no stdin */
    char *argv1[] = {"true", NULL};
    n = agent_encode_exec(buf, sizeof(buf), 10, 0, argv1, NULL, NULL, NULL, 0);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &r), AGENT_OK);
    assert_int_equal(r.argv.count, 1);
    assert_string_equal(agent_strv_next(&r.argv, NULL), "true");
    assert_int_equal(r.env.count, 0);
    assert_null(agent_strv_next(&r.env, NULL));
    assert_null(r.cwd);
    assert_int_equal(r.stdin_len, 0);
}

static void test_exec_encoder_rejects(void **state)
{
    char *empty[] = {NULL};
    char *blank[] = {"", NULL};
    char *ok[] = {"ls", NULL};
    char *badenv[] = {"NOEQUALS", NULL};
    char *badenv2[] = {"=v", NULL};
    assert_int_equal(agent_encode_exec(buf, sizeof(buf), 1, 0, NULL, NULL, NULL, NULL, 0),
                     AGENT_E_INVALID);
    assert_int_equal(agent_encode_exec(buf, sizeof(buf), 1, 0, empty, NULL, NULL, NULL, 0),
                     AGENT_E_INVALID);
    assert_int_equal(agent_encode_exec(buf, sizeof(buf), 1, 0, blank, NULL, NULL, NULL, 0),
                     AGENT_E_INVALID);
    assert_int_equal(agent_encode_exec(buf, sizeof(buf), 1, 0, ok, badenv, NULL, NULL, 0),
                     AGENT_E_INVALID);
    assert_int_equal(agent_encode_exec(buf, sizeof(buf), 1, 0, ok, badenv2, NULL, NULL, 0),
                     AGENT_E_INVALID);
    /* too small a buffer */
    assert_int_equal(agent_encode_exec(buf, 20, 1, 0, ok, NULL, NULL, NULL, 0), AGENT_E_NOSPACE);
    assert_int_equal(agent_encode_ping(buf, AGENT_HDR_SIZE - 1, 1, 0), AGENT_E_NOSPACE);
    /* stdin that cannot fit in one frame */
    assert_int_equal(
        agent_encode_exec(buf, sizeof(buf), 1, 0, ok, NULL, NULL, input, AGENT_MAX_PAYLOAD),
        AGENT_E_TOO_BIG);
    assert_true(agent_exec_frame_size(ok, NULL, NULL, AGENT_MAX_PAYLOAD) > AGENT_MAX_FRAME);
    /* the largest stdin that fits */
    size_t over = agent_exec_frame_size(ok, NULL, NULL, 0);
    size_t max_in = AGENT_MAX_FRAME - over;
    int n = agent_encode_exec(buf, sizeof(buf), 1, 0, ok, NULL, NULL, input, max_in);
    assert_int_equal(n, AGENT_MAX_FRAME);
    agent_hdr h = frame_of(buf, (size_t)n);
    assert_int_equal(h.len, AGENT_MAX_PAYLOAD);
    assert_int_equal(agent_encode_exec(buf, sizeof(buf), 1, 0, ok, NULL, NULL, input, max_in + 1),
                     AGENT_E_TOO_BIG);
    assert_int_equal(
        agent_encode_data(buf, sizeof(buf), 1, AGENT_MSG_STDOUT, input, AGENT_MAX_PAYLOAD + 1),
        AGENT_E_TOO_BIG);
}

static void test_truncated_frames(void **state)
{
    char *argv[] = {"uname", "-a", NULL};
    int n = agent_encode_exec(buf, sizeof(buf), 11, 0, argv, NULL, "/", "x", 1);
    assert_true(n > AGENT_HDR_SIZE);
    for (size_t k = 0; k < (size_t)n; k++) {
        agent_hdr h;
        size_t consumed = 99;
        assert_int_equal(agent_frame_next(buf, k, &h, &consumed), AGENT_E_SHORT);
        assert_int_equal(consumed, 0);
    }
    /* every truncation of the payload is malformed, never a crash or a success */
    agent_exec_req r;
    for (size_t k = 0; k < (size_t)n - AGENT_HDR_SIZE; k++)
        assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, k, &r), AGENT_E_MALFORMED);
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, (size_t)n - AGENT_HDR_SIZE, &r),
                     AGENT_OK);

    n = agent_encode_pong(buf, sizeof(buf), 1, 3, "v");
    agent_pong p;
    for (size_t k = 0; k < (size_t)n - AGENT_HDR_SIZE; k++)
        assert_int_equal(agent_decode_pong(buf + AGENT_HDR_SIZE, k, &p), AGENT_E_MALFORMED);
    agent_error_msg em;
    n = agent_encode_error(buf, sizeof(buf), 1, 3, "msg");
    for (size_t k = 0; k < (size_t)n - AGENT_HDR_SIZE; k++)
        assert_int_equal(agent_decode_error(buf + AGENT_HDR_SIZE, k, &em), AGENT_E_MALFORMED);
}

static void test_bad_magic_resync(void **state)
{
    /* garbage, then a valid frame: the reader drops exactly the garbage */
    const char garbage[] = "xxVMxVMzVM";
    size_t gl = sizeof(garbage) - 1;
    memcpy(buf, garbage, gl);
    int n = agent_encode_ping(buf + gl, sizeof(buf) - gl, 77, 0);
    size_t total = gl + (size_t)n, off = 0;
    agent_hdr h;
    size_t consumed;
    int r, steps = 0;
    while ((r = agent_frame_next(buf + off, total - off, &h, &consumed)) == AGENT_E_MAGIC) {
        assert_true(consumed >= 1);
        off += consumed;
        assert_true(++steps < 10);
    }
    assert_int_equal(r, AGENT_OK);
    assert_int_equal(off, gl);
    assert_int_equal(h.id, 77);

    /* a buffer ending in a prefix of the magic is kept (it may be the start of a frame) */
    memcpy(buf, "abcVM", 5);
    assert_int_equal(agent_frame_next(buf, 5, &h, &consumed), AGENT_E_MAGIC);
    assert_int_equal(consumed, 3);
    assert_int_equal(agent_frame_next(buf + 3, 2, &h, &consumed), AGENT_E_SHORT);
    assert_int_equal(consumed, 0);
    memcpy(buf, "abcdef", 6);
    assert_int_equal(agent_frame_next(buf, 6, &h, &consumed), AGENT_E_MAGIC);
    assert_int_equal(consumed, 6);
    assert_int_equal(agent_hdr_decode("VMX", 3, &h), AGENT_E_MAGIC);
    assert_int_equal(agent_hdr_decode("VM", 2, &h), AGENT_E_SHORT);
}

static void test_bad_version(void **state)
{
    int n = agent_encode_error(buf, sizeof(buf), 5, 1, "hello");
    agent_hdr h;
    size_t consumed;
    /* v1 and v2 frames are understood */
    agent_frame_set_version(buf, 1);
    assert_int_equal(agent_hdr_decode(buf, (size_t)n, &h), AGENT_OK);
    assert_int_equal(h.version, 1);
    agent_frame_set_version(buf, 2);
    assert_int_equal(agent_hdr_decode(buf, (size_t)n, &h), AGENT_OK);
    buf[3] = 3;
    assert_int_equal(agent_hdr_decode(buf, (size_t)n, &h), AGENT_E_VERSION);
    assert_int_equal(h.version, 3);
    /* incomplete: wait; complete: skip the whole frame */
    assert_int_equal(agent_frame_next(buf, (size_t)n - 1, &h, &consumed), AGENT_E_SHORT);
    assert_int_equal(agent_frame_next(buf, (size_t)n, &h, &consumed), AGENT_E_VERSION);
    assert_int_equal(consumed, n);
    assert_int_equal(h.id, 5);
    buf[3] = 0;
    assert_int_equal(agent_frame_next(buf, (size_t)n, &h, &consumed), AGENT_E_VERSION);
}

static void test_oversize_length(void **state)
{
    int n = agent_encode_ping(buf, sizeof(buf), 1, 0);
    uint32_t big = AGENT_MAX_PAYLOAD + 1;
    memcpy(buf + 12, &big, 4); /* little-endian host assumed by this test only */
    agent_hdr h;
    size_t consumed;
    assert_int_equal(agent_hdr_decode(buf, (size_t)n, &h), AGENT_E_TOO_BIG);
    assert_int_equal(agent_frame_next(buf, (size_t)n, &h, &consumed), AGENT_E_TOO_BIG);
    assert_true(consumed >= 1);
    big = UINT32_MAX;
    memcpy(buf + 12, &big, 4);
    assert_int_equal(agent_frame_next(buf, (size_t)n, &h, &consumed), AGENT_E_TOO_BIG);
    /* the maximum itself is fine (just incomplete here) */
    big = AGENT_MAX_PAYLOAD;
    memcpy(buf + 12, &big, 4);
    assert_int_equal(agent_frame_next(buf, (size_t)n, &h, &consumed), AGENT_E_SHORT);
}

/* Hand-made payloads the encoder would never produce. */
static size_t put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
    return 4;
}

static size_t exec_payload(uint8_t *p, uint32_t flags, uint32_t argc, const void *argb,
                           uint32_t argl, const void *cwd, uint32_t cwdl, uint32_t extra)
{
    size_t o = 0;
    o += put32(p + o, flags);
    o += put32(p + o, 0);
    o += put32(p + o, argc);
    o += put32(p + o, argl);
    memcpy(p + o, argb, argl);
    o += argl;
    o += put32(p + o, 0); /* env count */
    o += put32(p + o, 0); /* env bytes */
    o += put32(p + o, cwdl);
    memcpy(p + o, cwd, cwdl);
    o += cwdl;
    o += put32(p + o, 0); /* stdin */
    memset(p + o, 0, extra);
    return o + extra;
}

static void test_malformed_exec(void **state)
{
    agent_exec_req r;
    uint8_t p[256];
    size_t n = exec_payload(p, 0, 2, "ls\0-l\0", 6, "/\0", 2, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_OK);
    /* count disagrees with the NULs */
    n = exec_payload(p, 0, 3, "ls\0-l\0", 6, "/\0", 2, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    n = exec_payload(p, 0, 1, "ls\0-l\0", 6, "/\0", 2, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    /* last string not terminated */
    n = exec_payload(p, 0, 2, "ls\0-l\0-x", 8, "/\0", 2, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    /* no argv at all, or an empty argv[0] */
    n = exec_payload(p, 0, 0, "", 0, "/\0", 2, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    n = exec_payload(p, 0, 1, "\0", 1, "/\0", 2, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    /* cwd with an interior NUL, or without its NUL */
    n = exec_payload(p, 0, 1, "ls\0", 3, "/a\0b\0", 5, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    n = exec_payload(p, 0, 1, "ls\0", 3, "/a", 2, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    /* unknown flags, trailing bytes */
    n = exec_payload(p, 2, 1, "ls\0", 3, "", 0, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    n = exec_payload(p, AGENT_EXEC_STDIN_STREAM, 1, "ls\0", 3, "", 0, 0);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_OK);
    assert_int_equal(r.flags, AGENT_EXEC_STDIN_STREAM);
    n = exec_payload(p, 0, 1, "ls\0", 3, "", 0, 1);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    /* a length that points past the end */
    n = exec_payload(p, 0, 1, "ls\0", 3, "", 0, 0);
    put32(p + 12, 0xfffffff0u);
    assert_int_equal(agent_decode_exec(p, n, &r), AGENT_E_MALFORMED);
    /* an env entry without '=' */
    char *argv[] = {"env", NULL};
    char *env[] = {"A=1", NULL};
    int fn = agent_encode_exec(buf, sizeof(buf), 1, 0, argv, env, NULL, NULL, 0);
    uint8_t *eq = memchr(buf + AGENT_HDR_SIZE, '=', (size_t)fn - AGENT_HDR_SIZE);
    assert_non_null(eq);
    *eq = 'x';
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, (size_t)fn - AGENT_HDR_SIZE, &r),
                     AGENT_E_MALFORMED);
}

/* Random bytes through the stream reader and every decoder: must terminate, never crash, and
 * account for every byte. */
static void test_garbage(void **state)
{
    srand(12345);
    static uint8_t g[1 << 16];
    for (int round = 0; round < 200; round++) {
        size_t n = (size_t)(rand() % (int)sizeof(g));
        for (size_t i = 0; i < n; i++) {
            int c = rand() % 8;
            /* sprinkle magic and small lengths so the interesting paths are hit */
            g[i] = c == 0 ? 'V' : c == 1 ? 'M' : c == 2 ? 'A' : c == 3 ? 1 : (uint8_t)rand();
        }
        size_t off = 0;
        int guard = 0;
        while (off < n) {
            agent_hdr h;
            size_t consumed = 0;
            int r = agent_frame_next(g + off, n - off, &h, &consumed);
            if (r == AGENT_E_SHORT) {
                if (consumed == 0)
                    break;
            } else if (r == AGENT_OK) {
                const uint8_t *pl = g + off + AGENT_HDR_SIZE;
                agent_exec_req er;
                agent_pong pp;
                agent_error_msg em;
                agent_exit ex;
                uint32_t a;
                (void)agent_decode_exec(pl, h.len, &er);
                (void)agent_decode_pong(pl, h.len, &pp);
                (void)agent_decode_error(pl, h.len, &em);
                (void)agent_decode_exit(pl, h.len, &ex);
                (void)agent_decode_shutdown(pl, h.len, &a);
            }
            assert_true(consumed > 0);
            assert_true(consumed <= n - off);
            off += consumed;
            assert_true(++guard < 1 << 20);
        }
    }
}

static void test_strerror(void **state)
{
    for (int r = AGENT_E_INVALID; r <= AGENT_OK; r++)
        assert_string_not_equal(agent_proto_strerror(r), "unknown error");
    assert_string_equal(agent_proto_strerror(-100), "unknown error");
}

static void test_v2_messages(void **state)
{
    agent_hdr h;
    /* STDIN, STDIN_ACK, SIGNAL */
    int n = agent_encode_raw(buf, sizeof(buf), AGENT_MSG_STDIN, 9, "abc", 3);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_STDIN);
    assert_memory_equal(buf + AGENT_HDR_SIZE, "abc", 3);
    n = agent_encode_u32_msg(buf, sizeof(buf), AGENT_MSG_STDIN_ACK, 9, 65536);
    h = frame_of(buf, (size_t)n);
    uint32_t v;
    assert_int_equal(agent_decode_u32_msg(buf + AGENT_HDR_SIZE, h.len, &v), AGENT_OK);
    assert_int_equal(v, 65536);
    assert_int_equal(agent_decode_u32_msg(buf + AGENT_HDR_SIZE, 3, &v), AGENT_E_MALFORMED);

    /* FILE_PUT */
    agent_file_put fp = {.mode = 0640, .mtime_sec = -5, .mtime_nsec = 999999999, .path = "/a/b"};
    n = agent_encode_file_put(buf, sizeof(buf), 10, &fp);
    h = frame_of(buf, (size_t)n);
    agent_file_put fp2;
    assert_int_equal(agent_decode_file_put(buf + AGENT_HDR_SIZE, h.len, &fp2), AGENT_OK);
    assert_int_equal(fp2.mode, 0640);
    assert_int_equal(fp2.mtime_sec, -5);
    assert_int_equal(fp2.mtime_nsec, 999999999);
    assert_string_equal(fp2.path, "/a/b");
    assert_int_equal(agent_decode_file_put(buf + AGENT_HDR_SIZE, h.len - 1, &fp2),
                     AGENT_E_MALFORMED);
    fp.path = "relative";
    assert_int_equal(agent_encode_file_put(buf, sizeof(buf), 10, &fp), AGENT_E_INVALID);
    fp.path = "/x";
    fp.mode = 0170000;
    assert_int_equal(agent_encode_file_put(buf, sizeof(buf), 10, &fp), AGENT_E_INVALID);

    /* FILE_GET, FILE_INFO */
    n = agent_encode_file_get(buf, sizeof(buf), 11, "/etc/hostname");
    h = frame_of(buf, (size_t)n);
    const char *path;
    assert_int_equal(agent_decode_file_get(buf + AGENT_HDR_SIZE, h.len, &path), AGENT_OK);
    assert_string_equal(path, "/etc/hostname");
    agent_file_info fi = {
        .mode = 0100755, .size = 1ull << 40, .mtime_sec = 1700000000, .mtime_nsec = 5};
    n = agent_encode_file_info(buf, sizeof(buf), 11, &fi);
    h = frame_of(buf, (size_t)n);
    agent_file_info fi2;
    assert_int_equal(agent_decode_file_info(buf + AGENT_HDR_SIZE, h.len, &fi2), AGENT_OK);
    assert_int_equal(fi2.mode, 0100755);
    assert_int_equal(fi2.size, 1ull << 40);
    assert_int_equal(fi2.mtime_sec, 1700000000);
    assert_int_equal(fi2.mtime_nsec, 5);

    /* INFO_REPLY */
    agent_info in = {.uptime_ms = 1234,
                     .mem_total = 1 << 28,
                     .mem_available = 1 << 27,
                     .load = {1, 50, 300},
                     .running = 3};
    n = agent_encode_info_reply(buf, sizeof(buf), 12, &in);
    h = frame_of(buf, (size_t)n);
    agent_info in2;
    assert_int_equal(agent_decode_info_reply(buf + AGENT_HDR_SIZE, h.len, &in2), AGENT_OK);
    assert_memory_equal(&in, &in2, sizeof(in));

    /* METADATA */
    char *env[] = {"A=1", "B=x y", NULL};
    char *names[] = {"token", "key", NULL};
    const void *vals[] = {"s3cret", "\0\1\2"};
    size_t lens[] = {6, 3};
    n = agent_encode_metadata(buf, sizeof(buf), 13, "box", env, names, vals, lens);
    h = frame_of(buf, (size_t)n);
    agent_metadata m;
    assert_int_equal(agent_decode_metadata(buf + AGENT_HDR_SIZE, h.len, &m), AGENT_OK);
    assert_string_equal(m.hostname, "box");
    assert_int_equal(m.env.count, 2);
    assert_int_equal(m.n_values, 2);
    size_t off = 0;
    const uint8_t *d;
    uint32_t l;
    assert_true(agent_metadata_next_value(&m, &off, &d, &l));
    assert_int_equal(l, 6);
    assert_memory_equal(d, "s3cret", 6);
    assert_true(agent_metadata_next_value(&m, &off, &d, &l));
    assert_int_equal(l, 3);
    assert_false(agent_metadata_next_value(&m, &off, &d, &l));
    char *bad[] = {"../x", NULL};
    assert_int_equal(agent_encode_metadata(buf, sizeof(buf), 13, NULL, NULL, bad, vals, lens),
                     AGENT_E_INVALID);
    /* one value short */
    assert_int_equal(agent_decode_metadata(buf + AGENT_HDR_SIZE, h.len - 7, &m), AGENT_E_MALFORMED);

    /* PONG instance */
    n = agent_encode_pong2(buf, sizeof(buf), 14, AGENT_CAPS_V2, "v", 0xdeadbeef);
    h = frame_of(buf, (size_t)n);
    agent_pong p;
    assert_int_equal(agent_decode_pong(buf + AGENT_HDR_SIZE, h.len, &p), AGENT_OK);
    assert_int_equal(p.instance, 0xdeadbeef);
    assert_int_equal(p.caps, AGENT_CAPS_V2);
    assert_int_equal(p.state, 0);

    /* PONG state byte (payload byte 1): metadata applied */
    n = agent_encode_pong3(buf, sizeof(buf), 15, AGENT_CAPS_V2, "v", 7, AGENT_STATE_METADATA);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(buf[AGENT_HDR_SIZE + 1], AGENT_STATE_METADATA);
    assert_int_equal(agent_decode_pong(buf + AGENT_HDR_SIZE, h.len, &p), AGENT_OK);
    assert_int_equal(p.state, AGENT_STATE_METADATA);
    assert_int_equal(p.instance, 7);
    assert_true(p.caps & AGENT_CAP_META_STATE);
}

/* EXEC with a terminal (AGENT_EXEC_TTY): rows and cols after the user, if any. */
static void test_exec_tty(void **state)
{
    (void)state;
    char *argv[] = {"sh", "-l", NULL};
    char *env[] = {"TERM=xterm-256color", NULL};
    agent_exec_args a = {.flags = AGENT_EXEC_TTY | AGENT_EXEC_STDIN_STREAM,
                         .argv = argv,
                         .env = env,
                         .tty_rows = 24,
                         .tty_cols = 80};
    size_t want = agent_exec_args_frame_size(&a);
    assert_int_equal(want, agent_exec_frame_size(argv, env, NULL, 0) + 8);
    int n = agent_encode_exec_args(buf, sizeof(buf), 3, &a);
    assert_int_equal(n, (int)want);
    agent_hdr h = frame_of(buf, (size_t)n);
    agent_exec_req req;
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &req), AGENT_OK);
    assert_int_equal(req.flags, AGENT_EXEC_TTY | AGENT_EXEC_STDIN_STREAM);
    assert_int_equal(req.tty_rows, 24);
    assert_int_equal(req.tty_cols, 80);
    assert_null(req.user);
    /* the size is the last 8 bytes: cols at the very end */
    assert_int_equal(buf[n - 4], 80);
    assert_int_equal(buf[n - 8], 24);

    /* with a user too: user first, then the size */
    a.flags |= AGENT_EXEC_USER;
    a.user = "vmctl";
    a.tty_rows = 65535;
    a.tty_cols = 1;
    n = agent_encode_exec_args(buf, sizeof(buf), 4, &a);
    assert_true(n > 0);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &req), AGENT_OK);
    assert_string_equal(req.user, "vmctl");
    assert_int_equal(req.tty_rows, 65535);
    assert_int_equal(req.tty_cols, 1);
    /* truncated size, trailing bytes, flag without the size */
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len - 4, &req), AGENT_E_MALFORMED);
    uint8_t *flags = buf + AGENT_HDR_SIZE;
    flags[0] &= (uint8_t)~AGENT_EXEC_TTY;
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &req), AGENT_E_MALFORMED);
    flags[0] |= AGENT_EXEC_TTY;
    /* a size beyond a struct winsize */
    buf[n - 2] = 1; /* cols = 65536 + 1 */
    assert_int_equal(agent_decode_exec(buf + AGENT_HDR_SIZE, h.len, &req), AGENT_E_MALFORMED);

    /* encoder: sizes too large; exec3 refuses TTY (it has no size) */
    a.tty_cols = 65536;
    assert_int_equal(agent_encode_exec_args(buf, sizeof(buf), 4, &a), AGENT_E_INVALID);
    assert_int_equal(
        agent_encode_exec3(buf, sizeof(buf), 5, AGENT_EXEC_TTY, 0, argv, NULL, NULL, NULL, 0, NULL),
        AGENT_E_INVALID);
    /* unknown flag bits are still refused */
    a.tty_cols = 80;
    a.flags |= 1u << 3;
    assert_int_equal(agent_encode_exec_args(buf, sizeof(buf), 4, &a), AGENT_E_INVALID);
    /* without TTY: the same bytes as agent_encode_exec3 */
    agent_exec_args b = {.flags = AGENT_EXEC_USER, .argv = argv, .user = "root"};
    static uint8_t b2[256];
    n = agent_encode_exec_args(buf, sizeof(buf), 6, &b);
    assert_int_equal(agent_encode_exec3(b2, sizeof(b2), 6, AGENT_EXEC_USER, 0, argv, NULL, NULL,
                                        NULL, 0, "root"),
                     n);
    assert_memory_equal(buf, b2, (size_t)n);
}

/* RESIZE: u32 rows, u32 cols, each at most 65535. */
/* IDENTITY (a restored clone): round trip, limits, truncation. */
static void test_identity(void **state)
{
    uint8_t entropy[64];
    for (size_t i = 0; i < sizeof(entropy); i++)
        entropy[i] = (uint8_t)(i * 7);
    agent_identity in = {.realtime_ns = 1796321790123456789ull,
                         .machine_id = "0123456789abcdef0123456789abcdef",
                         .mac = "52:54:00:aa:bb:cc",
                         .entropy = entropy,
                         .n_entropy = sizeof(entropy)};
    int n = agent_encode_identity(buf, sizeof(buf), 12, &in);
    assert_true(n > 0);
    agent_hdr h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_IDENTITY);
    agent_identity out;
    assert_int_equal(agent_decode_identity(buf + AGENT_HDR_SIZE, h.len, &out), AGENT_OK);
    assert_true(out.realtime_ns == in.realtime_ns);
    assert_string_equal(out.machine_id, in.machine_id);
    assert_string_equal(out.mac, in.mac);
    assert_int_equal(out.n_entropy, sizeof(entropy));
    assert_memory_equal(out.entropy, entropy, sizeof(entropy));
    assert_int_equal(agent_decode_identity(buf + AGENT_HDR_SIZE, h.len - 1, &out),
                     AGENT_E_MALFORMED);
    /* empty machine-id and MAC: leave them alone */
    in.machine_id = NULL;
    in.mac = NULL;
    n = agent_encode_identity(buf, sizeof(buf), 12, &in);
    h = frame_of(buf, (size_t)n);
    assert_int_equal(agent_decode_identity(buf + AGENT_HDR_SIZE, h.len, &out), AGENT_OK);
    assert_string_equal(out.mac, "");
    /* too little entropy is refused on both ends */
    in.n_entropy = 8;
    assert_int_equal(agent_encode_identity(buf, sizeof(buf), 12, &in), AGENT_E_INVALID);
}

static void test_resize(void **state)
{
    (void)state;
    int n = agent_encode_resize(buf, sizeof(buf), 9, 50, 132);
    assert_int_equal(n, AGENT_HDR_SIZE + 8);
    agent_hdr h = frame_of(buf, (size_t)n);
    assert_int_equal(h.type, AGENT_MSG_RESIZE);
    assert_int_equal(h.type, 0x17);
    assert_int_equal(h.id, 9);
    uint32_t rows = 0, cols = 0;
    assert_int_equal(agent_decode_resize(buf + AGENT_HDR_SIZE, h.len, &rows, &cols), AGENT_OK);
    assert_int_equal(rows, 50);
    assert_int_equal(cols, 132);
    assert_int_equal(agent_decode_resize(buf + AGENT_HDR_SIZE, 7, &rows, &cols), AGENT_E_MALFORMED);
    assert_int_equal(agent_decode_resize(buf + AGENT_HDR_SIZE, 4, &rows, &cols), AGENT_E_MALFORMED);
    buf[AGENT_HDR_SIZE + 2] = 1; /* rows 65536 + 50 */
    assert_int_equal(agent_decode_resize(buf + AGENT_HDR_SIZE, 8, &rows, &cols), AGENT_E_MALFORMED);
    uint8_t nine[9] = {0};
    assert_int_equal(agent_decode_resize(nine, 9, &rows, &cols), AGENT_E_MALFORMED);
    assert_int_equal(agent_encode_resize(buf, sizeof(buf), 9, 65536, 1), AGENT_E_INVALID);
    assert_int_equal(agent_encode_resize(buf, 20, 9, 1, 1), AGENT_E_NOSPACE);
    /* the agent advertises it */
    assert_true(AGENT_CAPS_V2 & AGENT_CAP_TTY);
    assert_int_equal(AGENT_CAP_TTY, UINT64_C(1) << 9);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_layout),
        cmocka_unit_test(test_pong_roundtrip),
        cmocka_unit_test(test_error_roundtrip),
        cmocka_unit_test(test_data_exit_shutdown_ack),
        cmocka_unit_test(test_exec_roundtrip),
        cmocka_unit_test(test_exec_user),
        cmocka_unit_test(test_exec_root),
        cmocka_unit_test(test_exec_tty),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_identity),
        cmocka_unit_test(test_exec_encoder_rejects),
        cmocka_unit_test(test_truncated_frames),
        cmocka_unit_test(test_bad_magic_resync),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_oversize_length),
        cmocka_unit_test(test_malformed_exec),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_v2_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
