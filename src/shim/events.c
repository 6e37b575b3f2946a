/* SPDX-License-Identifier: MIT */
/* Events to containerd through the -publish-binary it passes (containerd 1.6's
 * cmd/containerd/command/publish.go: `BIN --address ADDR publish --topic T --namespace NS` reads
 * one google.protobuf.Any from stdin and publishes it), and a small protobuf writer for the event
 * messages (api/events/task.proto) and the metrics (cgroups v2 Metrics). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "shim.h"

extern char **environ;

static void pbw_put(pbw *w, const void *data, size_t n)
{
    if (w->oom)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *b = realloc(w->buf, cap);
        if (!b) {
            w->oom = true;
            return;
        }
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
}

static void pbw_varint(pbw *w, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    do {
        b[n] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v)
            b[n] |= 0x80;
        n++;
    } while (v);
    pbw_put(w, b, n);
}

void pbw_varint_field(pbw *w, unsigned field, uint64_t v)
{
    if (!v) /* proto3: defaults are not sent */
        return;
    pbw_varint(w, (uint64_t)field << 3);
    pbw_varint(w, v);
}

void pbw_bytes_field(pbw *w, unsigned field, const void *data, size_t len)
{
    pbw_varint(w, (uint64_t)field << 3 | 2);
    pbw_varint(w, len);
    pbw_put(w, data, len);
}

void pbw_str_field(pbw *w, unsigned field, const char *s)
{
    if (s && *s)
        pbw_bytes_field(w, field, s, strlen(s));
}

void pbw_msg_field(pbw *w, unsigned field, const pbw *sub)
{
    pbw_bytes_field(w, field, sub->buf, sub->len);
    w->oom |= sub->oom;
}

void pbw_timestamp_field(pbw *w, unsigned field, const struct timespec *ts)
{
    pbw t = {0};
    pbw_varint_field(&t, 1, (uint64_t)ts->tv_sec);
    pbw_varint_field(&t, 2, (uint64_t)ts->tv_nsec);
    pbw_msg_field(w, field, &t);
    pbw_free(&t);
}

void pbw_free(pbw *w)
{
    free(w->buf);
    *w = (pbw){0};
}

/* Events go out one at a time, in the order they happened, from a thread of their own: a
 * `containerd publish` process costs 0.1 s or more, which no request should wait for. */
typedef struct event_item {
    struct event_item *next;
    char *topic;
    pbw any;
} event_item;

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static event_item *queue_head, **queue_tail = &queue_head;
static bool publisher_running, publisher_busy;

static void publish_now(const char *topic, const pbw *any)
{
    int in[2] = {-1, -1};
    pid_t pid = -1;
    int r = pipe2(in, O_CLOEXEC);
    if (r == 0) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        char *argv[] = {(char *)shim_opts.publish_binary,
                        "--address",
                        (char *)shim_opts.address,
                        "publish",
                        "--topic",
                        (char *)topic,
                        "--namespace",
                        (char *)shim_opts.namespace,
                        NULL};
        r = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(in[0]);
        if (r == 0) {
            size_t off = 0;
            while (off < any->len) {
                ssize_t k = write(in[1], any->buf + off, any->len - off);
                if (k < 0 && errno == EINTR)
                    continue;
                if (k <= 0)
                    break;
                off += (size_t)k;
            }
        }
        close(in[1]);
    }
    int ws = 0;
    if (r == 0)
        while (waitpid(pid, &ws, 0) < 0 && errno == EINTR)
            ;
    if (r != 0)
        shim_log("cannot run '%s' to publish %s: %s", shim_opts.publish_binary, topic, strerror(r));
    else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
        shim_log("publishing %s failed (status 0x%x)", topic, (unsigned)ws);
    else if (shim_opts.debug)
        shim_log("published %s", topic);
}

static void *publisher(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&queue_lock);
    for (;;) {
        while (!queue_head)
            pthread_cond_wait(&queue_cond, &queue_lock);
        event_item *e = queue_head;
        if (!(queue_head = e->next))
            queue_tail = &queue_head;
        publisher_busy = true;
        pthread_mutex_unlock(&queue_lock);
        publish_now(e->topic, &e->any);
        free(e->topic);
        pbw_free(&e->any);
        free(e);
        pthread_mutex_lock(&queue_lock);
        publisher_busy = false;
        pthread_cond_broadcast(&queue_cond);
    }
    return NULL;
}

void shim_publish(const char *topic, const char *name, const pbw *event)
{
    if (!shim_opts.publish_binary || !*shim_opts.publish_binary) {
        shim_log("no -publish-binary: event %s not published", topic);
        return;
    }
    char type_url[128];
    snprintf(type_url, sizeof(type_url), "containerd.events.%s", name);
    event_item *e = calloc(1, sizeof(*e));
    if (e) {
        pbw_str_field(&e->any, 1, type_url);
        pbw_bytes_field(&e->any, 2, event->buf, event->len);
        e->topic = strdup(topic);
    }
    if (!e || !e->topic || e->any.oom || event->oom) {
        shim_log("out of memory: event %s not published", topic);
        if (e) {
            free(e->topic);
            pbw_free(&e->any);
        }
        free(e);
        return;
    }
    pthread_mutex_lock(&queue_lock);
    if (!publisher_running) {
        pthread_t t;
        publisher_running = pthread_create(&t, NULL, publisher, NULL) == 0;
        if (publisher_running)
            pthread_detach(t);
    }
    if (publisher_running) {
        *queue_tail = e;
        queue_tail = &e->next;
        pthread_cond_broadcast(&queue_cond);
    }
    pthread_mutex_unlock(&queue_lock);
    if (!publisher_running) { /* no thread: publish in the caller */
        publish_now(e->topic, &e->any);
        free(e->topic);
        pbw_free(&e->any);
        free(e);
    }
}

void shim_publish_flush(void)
{
    pthread_mutex_lock(&queue_lock);
    while (queue_head || publisher_busy)
        pthread_cond_wait(&queue_cond, &queue_lock);
    pthread_mutex_unlock(&queue_lock);
}
