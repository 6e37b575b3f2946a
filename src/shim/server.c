/* SPDX-License-Identifier: MIT */
/* The ttRPC server: frames (ttrpc.c) on a unix socket, one thread per connection reading
 * requests and one thread per request (Wait blocks until its process ends), responses written
 * under the connection's lock. Only the service containerd.task.v2.Task is served. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "shim.h"
#include "ttrpc.h"
#include "ttrpc.pb-c.h"

#define TASK_SERVICE "containerd.task.v2.Task"

typedef struct conn {
    int fd;
    pthread_mutex_t wlock;
    atomic_int refs;
} conn;

typedef struct request {
    conn *c;
    uint32_t stream_id;
    Vmctl__Ttrpc__Request *req;
} request;

static int exit_pipe[2] = {-1, -1};
static atomic_bool exit_requested;

void shim_request_exit(void)
{
    exit_requested = true;
}

static void conn_unref(conn *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        close(c->fd);
        pthread_mutex_destroy(&c->wlock);
        free(c);
    }
}

static void respond(conn *c, uint32_t stream_id, const shim_status *st, const uint8_t *payload,
                    size_t len)
{
    Vmctl__Ttrpc__Response resp = VMCTL__TTRPC__RESPONSE__INIT;
    Vmctl__Ttrpc__Status status = VMCTL__TTRPC__STATUS__INIT;
    if (st->code) {
        status.code = st->code;
        status.message = (char *)st->msg;
        resp.status = &status;
    } else {
        resp.payload.data = (uint8_t *)payload;
        resp.payload.len = len;
    }
    size_t n = vmctl__ttrpc__response__get_packed_size(&resp);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return;
    vmctl__ttrpc__response__pack(&resp, buf);
    ttrpc_header h = {.length = (uint32_t)n, .stream_id = stream_id, .type = TTRPC_TYPE_RESPONSE};
    pthread_mutex_lock(&c->wlock);
    int r = ttrpc_frame_write(c->fd, &h, buf);
    pthread_mutex_unlock(&c->wlock);
    if (r < 0)
        shim_log("cannot send a response: %s", strerror(-r));
    free(buf);
}

static void *request_thread(void *arg)
{
    request *rq = arg;
    shim_status st = {0};
    uint8_t *out = NULL;
    size_t out_len = 0;
    shim_method_fn fn = NULL;
    if (!rq->req->service || strcmp(rq->req->service, TASK_SERVICE) != 0)
        shim_fail(&st, GRPC_UNIMPLEMENTED, "service %s is not served by containerd-shim-vmctl-v2",
                  rq->req->service ? rq->req->service : "");
    else if (!(fn = shim_task_method(rq->req->method)))
        shim_fail(&st, GRPC_UNIMPLEMENTED, "%s.%s is not implemented", TASK_SERVICE,
                  rq->req->method ? rq->req->method : "");
    else if (fn(rq->req->payload.data, rq->req->payload.len, &out, &out_len, &st) < 0 && !st.code)
        shim_fail(&st, GRPC_INTERNAL, "%s failed", rq->req->method);
    if (shim_opts.debug)
        shim_log("%s: %s%s", rq->req->method, st.code ? "failed: " : "ok", st.msg);
    respond(rq->c, rq->stream_id, &st, out, out_len);
    free(out);
    vmctl__ttrpc__request__free_unpacked(rq->req, NULL);
    conn_unref(rq->c);
    free(rq);
    if (exit_requested) {
        char b = 'x';
        if (write(exit_pipe[1], &b, 1) < 0)
            _exit(0);
    }
    return NULL;
}

static void *conn_thread(void *arg)
{
    conn *c = arg;
    for (;;) {
        ttrpc_header h;
        uint8_t *payload = NULL;
        int r = ttrpc_frame_read(c->fd, &h, &payload);
        if (r < 0)
            break;
        if (h.type != TTRPC_TYPE_REQUEST) {
            free(payload);
            continue;
        }
        Vmctl__Ttrpc__Request *req = vmctl__ttrpc__request__unpack(NULL, h.length, payload);
        free(payload);
        if (!req) {
            shim_status st;
            shim_fail(&st, GRPC_INVALID_ARGUMENT, "malformed ttrpc request");
            respond(c, h.stream_id, &st, NULL, 0);
            continue;
        }
        request *rq = malloc(sizeof(*rq));
        pthread_t t;
        if (!rq) {
            vmctl__ttrpc__request__free_unpacked(req, NULL);
            continue;
        }
        *rq = (request){c, h.stream_id, req};
        atomic_fetch_add(&c->refs, 1);
        if (pthread_create(&t, NULL, request_thread, rq) != 0) {
            conn_unref(c);
            vmctl__ttrpc__request__free_unpacked(req, NULL);
            free(rq);
            continue;
        }
        pthread_detach(t);
    }
    conn_unref(c);
    return NULL;
}

int shim_serve(int listen_fd)
{
    if (pipe2(exit_pipe, O_CLOEXEC) < 0)
        return 1;
    for (;;) {
        struct pollfd fds[2] = {{.fd = listen_fd, .events = POLLIN},
                                {.fd = exit_pipe[0], .events = POLLIN}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (fds[1].revents)
            return 0;
        if (!(fds[0].revents & POLLIN))
            continue;
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        conn *c = calloc(1, sizeof(*c));
        pthread_t t;
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->refs = 1;
        pthread_mutex_init(&c->wlock, NULL);
        if (pthread_create(&t, NULL, conn_thread, c) != 0) {
            conn_unref(c);
            continue;
        }
        pthread_detach(t);
    }
}
