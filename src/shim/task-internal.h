/* SPDX-License-Identifier: MIT */
/* Shared by task.c and task-ops.c: decoding requests, packing responses, finding processes. */
#pragma once

#include <protobuf-c/protobuf-c.h>

#include "shim.h"

/* req: the decoded Containerd__Task__V2__T (a malformed payload fails the call) */
#define DECODE(T, t)                                                                               \
    Containerd__Task__V2__##T *req = containerd__task__v2__##t##__unpack(NULL, len, data);         \
    if (!req)                                                                                      \
    return shim_fail(st, GRPC_INVALID_ARGUMENT, "malformed " #T)
#define FREE(t) containerd__task__v2__##t##__free_unpacked(req, NULL)

int task_pack(const ProtobufCMessage *m, uint8_t **resp, size_t *resp_len);
shim_proc *task_find(const char *id, const char *exec_id, shim_status *st);
void task_teardown(shim_task *t);

#define TASK_METHOD(name)                                                                          \
    int name(const uint8_t *data, size_t len, uint8_t **resp, size_t *resp_len, shim_status *st)
TASK_METHOD(task_m_state);
TASK_METHOD(task_m_pids);
TASK_METHOD(task_m_pause);
TASK_METHOD(task_m_resume);
TASK_METHOD(task_m_stats);
TASK_METHOD(task_m_connect);
TASK_METHOD(task_m_close_io);
TASK_METHOD(task_m_resize_pty);
TASK_METHOD(task_m_update);
TASK_METHOD(task_m_checkpoint);
