/* SPDX-License-Identifier: MIT */
/* ttRPC framing and the Request/Response messages: the header bytes as containerd writes them,
 * a request frame through a socketpair and back, oversized and truncated frames refused. */
#include <errno.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "ttrpc.h"
#include "ttrpc.pb-c.h"
#ifdef HAVE_CONTAINERD_PB
#include "shim.pb-c.h"
#endif

static void test_header(void **state)
{
    (void)state;
    ttrpc_header h = {.length = 0x01020304, .stream_id = 7, .type = TTRPC_TYPE_REQUEST};
    uint8_t b[TTRPC_HEADER_SIZE];
    ttrpc_header_encode(&h, b);
    const uint8_t want[] = {1, 2, 3, 4, 0, 0, 0, 7, 1, 0};
    assert_memory_equal(b, want, sizeof(want));
    ttrpc_header back;
    assert_int_equal(ttrpc_header_decode(b, &back), -EMSGSIZE); /* 16 MiB > 4 MiB */
    b[0] = 0;
    assert_int_equal(ttrpc_header_decode(b, &back), 0);
    assert_int_equal(back.length, 0x020304);
    assert_int_equal(back.stream_id, 7);
    assert_int_equal(back.type, TTRPC_TYPE_REQUEST);
}

static void test_request_roundtrip(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    Vmctl__Ttrpc__Request req = VMCTL__TTRPC__REQUEST__INIT;
    req.service = "containerd.task.v2.Task";
    req.method = "State";
    uint8_t payload[] = {0x0a, 0x02, 'i', 'd'};
    req.payload = (ProtobufCBinaryData){sizeof(payload), payload};
    size_t n = vmctl__ttrpc__request__get_packed_size(&req);
    uint8_t *buf = malloc(n);
    vmctl__ttrpc__request__pack(&req, buf);
    ttrpc_header h = {.length = (uint32_t)n, .stream_id = 1, .type = TTRPC_TYPE_REQUEST};
    assert_int_equal(ttrpc_frame_write(sv[0], &h, buf), 0);
    free(buf);
    ttrpc_header got;
    uint8_t *p = NULL;
    assert_int_equal(ttrpc_frame_read(sv[1], &got, &p), 0);
    assert_int_equal(got.stream_id, 1);
    Vmctl__Ttrpc__Request *r = vmctl__ttrpc__request__unpack(NULL, got.length, p);
    free(p);
    assert_non_null(r);
    assert_string_equal(r->service, "containerd.task.v2.Task");
    assert_string_equal(r->method, "State");
    assert_int_equal(r->payload.len, sizeof(payload));
    vmctl__ttrpc__request__free_unpacked(r, NULL);

    /* EOF before a frame, and in the middle of one */
    uint8_t half[5] = {0, 0, 0, 9, 0};
    assert_int_equal(write(sv[0], half, sizeof(half)), (ssize_t)sizeof(half));
    close(sv[0]);
    assert_int_equal(ttrpc_frame_read(sv[1], &got, &p), -ECONNRESET);
    assert_int_equal(ttrpc_frame_read(sv[1], &got, &p), -ENODATA);
    close(sv[1]);
}

/* containerd's task v2 service as protoc-c generated it: the 17 methods the shim serves */
static void test_task_service(void **state)
{
    (void)state;
#ifdef HAVE_CONTAINERD_PB
    const ProtobufCServiceDescriptor *d = &containerd__task__v2__task__descriptor;
    assert_string_equal(d->name, "containerd.task.v2.Task");
    assert_int_equal(d->n_methods, 17);
    static const char *const want[] = {
        "State", "Create",    "Start",   "Delete", "Pids", "Pause", "Resume",  "Checkpoint", "Kill",
        "Exec",  "ResizePty", "CloseIO", "Update", "Wait", "Stats", "Connect", "Shutdown"};
    for (size_t i = 0; i < 17; i++) {
        bool found = false;
        for (unsigned j = 0; j < d->n_methods; j++)
            found = found || !strcmp(d->methods[j].name, want[i]);
        if (!found)
            fail_msg("method %s missing", want[i]);
    }
#else
    skip();
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_task_service),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_request_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
