/* SPDX-License-Identifier: MIT */
/* vmctl serve: libmicrohttpd with a thread per connection (a slow client only holds its own
 * thread), a pool of library contexts (a vmctl_ctx is not thread-safe: each request takes one for
 * itself), the store as the only state. docs/api.md describes the API. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <dlfcn.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "render.h"
#include "serve-route.h"
#include "serve.h"
#include "serve-mhd.h"

/* Contexts kept for reuse between requests (each request takes one for itself). */
#define POOL_MAX 16
static const size_t pool_max = POOL_MAX;

serve_mhd serve_mhd_fn;

/* dlopen libmicrohttpd (Debian: libmicrohttpd12) once; host::missing_dependency when absent. */
static int mhd_load(vmctl_error **reterr)
{
    static const char soname[] = "libmicrohttpd.so.12";
    void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        int r = vmctl_error_new(reterr, VMCTL_E_HOST_MISSING_DEPENDENCY, ENOENT,
                                "cannot load %s: %s", soname, dlerror());
        if (reterr && *reterr)
            vmctl_error_set_help(*reterr, "Install libmicrohttpd12 (`apt-get install "
                                          "libmicrohttpd12`): vmctl serve needs it");
        return r;
    }
#define SYM(field, name)                                                                           \
    do {                                                                                           \
        *(void **)&serve_mhd_fn.field = dlsym(h, name);                                            \
        if (!serve_mhd_fn.field)                                                                   \
            return vmctl_error_new(reterr, VMCTL_E_HOST_MISSING_DEPENDENCY, ENOENT,                \
                                   "%s has no %s", soname, name);                                  \
    } while (0)
    SYM(start_daemon, "MHD_start_daemon");
    SYM(stop_daemon, "MHD_stop_daemon");
    SYM(queue_response, "MHD_queue_response");
    SYM(destroy_response, "MHD_destroy_response");
    SYM(create_response_from_buffer, "MHD_create_response_from_buffer");
    SYM(create_response_from_callback, "MHD_create_response_from_callback");
    SYM(create_response_from_fd, "MHD_create_response_from_fd");
    SYM(add_response_header, "MHD_add_response_header");
    SYM(lookup_connection_value, "MHD_lookup_connection_value");
    SYM(get_connection_info, "MHD_get_connection_info");
#undef SYM
    return 0;
}

typedef struct job job;

struct serve_server {
    struct MHD_Daemon *unix_d, *tcp_d;
    char *home;
    char *token;
    uint64_t max_upload;
    volatile int stopping;

    pthread_mutex_t pool_lock;
    vmctl_ctx *pool[POOL_MAX];
    size_t n_pool;

    pthread_mutex_t jobs_lock;
    job *jobs;
    unsigned next_job;
};

typedef struct listener {
    serve_server *srv;
    bool tcp;
} listener;

static listener listeners[2];

/* --- contexts --- */

static int ctx_get(serve_server *srv, vmctl_ctx **ret, vmctl_error **reterr)
{
    pthread_mutex_lock(&srv->pool_lock);
    vmctl_ctx *c = srv->n_pool > 0 ? srv->pool[--srv->n_pool] : NULL;
    pthread_mutex_unlock(&srv->pool_lock);
    if (c) {
        *ret = c;
        return 0;
    }
    return vmctl_ctx_open(srv->home, 0, ret, reterr);
}

static void ctx_put(serve_server *srv, vmctl_ctx *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&srv->pool_lock);
    if (srv->n_pool < pool_max) {
        srv->pool[srv->n_pool++] = c;
        c = NULL;
    }
    pthread_mutex_unlock(&srv->pool_lock);
    vmctl_ctx_free(c);
}

/* --- responses --- */

static enum MHD_Result queue(struct MHD_Connection *conn, unsigned status,
                             struct MHD_Response *resp)
{
    if (!resp)
        return MHD_NO;
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static struct MHD_Response *json_response(json_t *doc)
{
    if (!doc)
        return NULL;
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!text)
        return NULL;
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps' NUL becomes the newline: the body is one JSON line */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len + 1, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return resp;
}

static enum MHD_Result respond_json(struct MHD_Connection *conn, unsigned status, json_t *doc)
{
    return queue(conn, status, json_response(doc));
}

/* Takes e. */
static enum MHD_Result respond_error(struct MHD_Connection *conn, vmctl_error *e)
{
    if (!e)
        vmctl_error_new(&e, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    if (!e)
        return MHD_NO;
    unsigned status = serve_http_status(vmctl_error_get_kind(e));
    struct MHD_Response *resp = json_response(render_error_json(e));
    if (resp && vmctl_error_get_kind(e) == VMCTL_E_API_METHOD_NOT_ALLOWED) {
        const char *allowed = vmctl_error_find_detail(e, "allowed");
        if (allowed)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allowed);
    }
    if (resp && vmctl_error_get_kind(e) == VMCTL_E_API_UNAUTHORIZED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    vmctl_error_free(e);
    return queue(conn, status, resp);
}

static enum MHD_Result respond_empty(struct MHD_Connection *conn, unsigned status)
{
    return queue(conn, status,
                 MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

/* --- exec jobs --- */

struct job {
    serve_server *srv;
    unsigned id;
    int refs; /* under srv->jobs_lock */
    job *next;
    bool listed;

    pthread_mutex_t lock; /* the session, the proc and out */
    vmctl_ctx *ctx;
    vmctl_exec_session *s;
    vmctl_exec_proc *p;
    serve_exec req;
    bool raw;      /* a download: stdout is the response body, stderr kept for the error */
    bool finished; /* the last event is in out */
    bool failed;   /* raw: end the body with an error (the client sees a truncated stream) */
    char *out;
    size_t out_len, out_off;
    char err_tail[1024];
    size_t err_tail_len;
    int client_fd;
    uint64_t started_usec;
};

static uint64_t now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int job_append(job *j, const char *data, size_t len)
{
    if (j->out_off > 0 && j->out_off == j->out_len)
        j->out_off = j->out_len = 0;
    char *n = realloc(j->out, j->out_len + len + 1);
    if (!n)
        return -ENOMEM;
    memcpy(n + j->out_len, data, len);
    j->out = n;
    j->out_len += len;
    return 0;
}

static int job_append_json(job *j, json_t *doc)
{
    if (!doc)
        return -ENOMEM;
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!text)
        return -ENOMEM;
    size_t len = strlen(text);
    text[len] = '\n';
    int r = job_append(j, text, len + 1);
    free(text);
    return r;
}

static int job_output(job *j, const char *stream, const void *data, size_t len)
{
    cleanup_free char *b64 = serve_base64_encode(data, len);
    if (!b64)
        return -ENOMEM;
    return job_append_json(j, json_pack("{s:s, s:s}", "stream", stream, "data", b64));
}

static int on_stdout(const void *data, size_t len, void *userdata)
{
    job *j = userdata;
    return j->raw ? job_append(j, data, len) : job_output(j, "stdout", data, len);
}

static int on_stderr(const void *data, size_t len, void *userdata)
{
    job *j = userdata;
    if (!j->raw)
        return job_output(j, "stderr", data, len);
    size_t room = sizeof(j->err_tail) - 1 - j->err_tail_len;
    if (len > room)
        len = room;
    memcpy(j->err_tail + j->err_tail_len, data, len);
    j->err_tail_len += len;
    j->err_tail[j->err_tail_len] = '\0';
    return 0;
}

static void job_unref(job *j)
{
    if (!j)
        return;
    serve_server *srv = j->srv;
    pthread_mutex_lock(&srv->jobs_lock);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&srv->jobs_lock);
    if (!last)
        return;
    vmctl_exec_proc_free(j->p);
    vmctl_exec_session_close(j->s); /* kills what still runs */
    ctx_put(srv, j->ctx);
    serve_exec_done(&j->req);
    pthread_mutex_destroy(&j->lock);
    free(j->out);
    free(j);
}

static void job_unlist(job *j)
{
    serve_server *srv = j->srv;
    pthread_mutex_lock(&srv->jobs_lock);
    for (job **p = &srv->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    j->listed = false;
    pthread_mutex_unlock(&srv->jobs_lock);
}

static job *job_find(serve_server *srv, const char *id, vmctl_error **reterr)
{
    char *end = NULL;
    errno = 0;
    unsigned long n = strtoul(id, &end, 10);
    job *found = NULL;
    pthread_mutex_lock(&srv->jobs_lock);
    if (errno == 0 && end != id && *end == '\0')
        for (job *j = srv->jobs; j; j = j->next)
            if (j->id == n) {
                found = j;
                found->refs++;
                break;
            }
    pthread_mutex_unlock(&srv->jobs_lock);
    if (!found) {
        vmctl_error_new(reterr, VMCTL_E_API_ROUTE_NOT_FOUND, ENOENT,
                        "no running command with exec id '%s'", id);
        if (reterr && *reterr)
            vmctl_error_add_detail(*reterr, "exec_id", id);
    }
    return found;
}

/* The last event: the exit, or the error. Under j->lock. */
static void job_finish(job *j)
{
    vmctl_exec_status st = {0};
    cleanup_error vmctl_error *e = NULL;
    int r = vmctl_exec_wait(j->p, &st, &e);
    if (j->raw) {
        if (r < 0 || st.exit_code != 0)
            j->failed = true;
    } else if (r < 0) {
        job_append_json(j, render_error_json(e));
    } else {
        job_append_json(j, json_pack("{s:i, s:i}", "exit", st.exit_code, "signal", st.signal));
    }
    j->finished = true;
}

static ssize_t job_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    job *j = cls;
    for (;;) {
        pthread_mutex_lock(&j->lock);
        if (j->out_len > j->out_off) {
            size_t n = j->out_len - j->out_off;
            if (n > max)
                n = max;
            memcpy(buf, j->out + j->out_off, n);
            j->out_off += n;
            pthread_mutex_unlock(&j->lock);
            return (ssize_t)n;
        }
        if (j->finished) {
            bool failed = j->failed;
            pthread_mutex_unlock(&j->lock);
            return failed ? MHD_CONTENT_READER_END_WITH_ERROR : MHD_CONTENT_READER_END_OF_STREAM;
        }
        if (vmctl_exec_done(j->p)) {
            job_finish(j);
            pthread_mutex_unlock(&j->lock);
            continue;
        }
        /* The host's own deadline, in case the guest never answers the timeout. */
        if (j->req.opts.timeout_sec > 0 &&
            now_usec() - j->started_usec > (uint64_t)((j->req.opts.timeout_sec + 5) * 1e6)) {
            job_finish(j);
            pthread_mutex_unlock(&j->lock);
            continue;
        }
        int fd = vmctl_exec_session_fd(j->s);
        pthread_mutex_unlock(&j->lock);
        if (j->srv->stopping)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        struct pollfd pfd[2] = {{.fd = fd, .events = POLLIN},
                                {.fd = j->client_fd, .events = POLLRDHUP}};
        int n = poll(pfd, j->client_fd >= 0 ? 2 : 1, 200);
        if (n < 0 && errno != EINTR)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (n > 0 && j->client_fd >= 0 && (pfd[1].revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return MHD_CONTENT_READER_END_WITH_ERROR; /* the client went: the free kills it */
        pthread_mutex_lock(&j->lock);
        cleanup_error vmctl_error *e = NULL;
        if (vmctl_exec_session_dispatch(j->s, 0, &e) < 0) {
            if (j->raw)
                j->failed = true;
            else
                job_append_json(j, render_error_json(e));
            j->finished = true;
        }
        pthread_mutex_unlock(&j->lock);
    }
}

static void job_response_free(void *cls)
{
    job *j = cls;
    job_unlist(j);
    job_unref(j);
}

static int client_fd(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

/* Start req's command in vm `name` and answer with its stream. Takes req. */
static enum MHD_Result exec_respond(serve_server *srv, struct MHD_Connection *conn,
                                    const char *name, serve_exec *req, bool raw,
                                    const char *content_type)
{
    job *j = calloc(1, sizeof(*j));
    if (!j) {
        serve_exec_done(req);
        return respond_error(conn, NULL);
    }
    j->srv = srv;
    j->refs = 1;
    j->raw = raw;
    j->req = *req;
    memset(req, 0, sizeof(*req));
    j->client_fd = client_fd(conn);
    pthread_mutex_init(&j->lock, NULL);
    vmctl_error *e = NULL;
    int r = ctx_get(srv, &j->ctx, &e);
    if (r >= 0)
        r = vmctl_exec_session_open(j->ctx, name, &j->s, &e);
    vmctl_exec_io io = {
        .on_stdout = on_stdout,
        .on_stderr = on_stderr,
        .userdata = j,
        .stdin_open = j->req.stdin_open,
        .signal_fd = -1,
        .resize_fd = -1,
    };
    if (r >= 0)
        r = vmctl_exec_start(j->s, &j->req.opts, &io, &j->p, &e);
    if (r < 0) {
        job_unref(j);
        return respond_error(conn, e);
    }
    j->started_usec = now_usec();
    pthread_mutex_lock(&srv->jobs_lock);
    j->id = ++srv->next_job;
    j->next = srv->jobs;
    srv->jobs = j;
    j->listed = true;
    pthread_mutex_unlock(&srv->jobs_lock);
    if (!raw) {
        char id[16];
        snprintf(id, sizeof(id), "%u", j->id);
        job_append_json(j, json_pack("{s:s, s:s}", "event", "started", "id", id));
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024,
                                                                  job_read, j, job_response_free);
    if (!resp) {
        job_response_free(j);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return queue(conn, 200, resp);
}

/* --- events --- */

typedef struct vm_state {
    char *name;
    vmctl_vm_state state;
} vm_state;

typedef struct events {
    serve_server *srv;
    int client_fd;
    vm_state *vms;
    size_t n_vms;
    bool primed;
    char *out;
    size_t out_len, out_off;
} events;

static double wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void events_emit(events *ev, const char *type, const char *vm, const char *from,
                        const char *to)
{
    json_t *doc = json_pack("{s:s, s:s, s:s?, s:s?, s:f}", "type", type, "vm", vm, "from", from,
                            "to", to, "time", wall_time());
    char *text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(doc);
    if (!text)
        return;
    size_t len = strlen(text);
    char *n = realloc(ev->out, ev->out_len + len + 1);
    if (n) {
        memcpy(n + ev->out_len, text, len);
        n[ev->out_len + len] = '\n';
        ev->out = n;
        ev->out_len += len + 1;
    }
    free(text);
}

static void vm_states_free(vm_state *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
}

/* One look at the store: what changed since the last. */
static void events_poll(events *ev)
{
    vmctl_ctx *ctx = NULL;
    vmctl_vm_info **list = NULL;
    size_t n = 0;
    if (ctx_get(ev->srv, &ctx, NULL) < 0)
        return;
    int r = vmctl_vm_list(ctx, &list, &n, NULL);
    ctx_put(ev->srv, ctx);
    if (r < 0)
        return;
    vm_state *now = calloc(n + 1, sizeof(*now));
    if (!now) {
        vmctl_vm_info_list_free(list, n);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        now[i].name = strdup(list[i]->name);
        now[i].state = list[i]->state;
    }
    vmctl_vm_info_list_free(list, n);
    if (ev->primed) {
        for (size_t i = 0; i < n; i++) {
            if (!now[i].name)
                continue;
            const vm_state *old = NULL;
            for (size_t k = 0; k < ev->n_vms && !old; k++)
                if (ev->vms[k].name && streq(ev->vms[k].name, now[i].name))
                    old = &ev->vms[k];
            const char *to = vmctl_vm_state_to_string(now[i].state);
            if (!old) {
                events_emit(ev, "created", now[i].name, NULL, to);
            } else if (old->state != now[i].state) {
                bool exit =
                    (now[i].state == VMCTL_VM_STOPPED || now[i].state == VMCTL_VM_CRASHED) &&
                    (old->state == VMCTL_VM_RUNNING || old->state == VMCTL_VM_PAUSED);
                events_emit(ev, exit ? "exit" : "state", now[i].name,
                            vmctl_vm_state_to_string(old->state), to);
            }
        }
        for (size_t k = 0; k < ev->n_vms; k++) {
            bool gone = ev->vms[k].name != NULL;
            for (size_t i = 0; i < n && gone; i++)
                if (now[i].name && streq(now[i].name, ev->vms[k].name))
                    gone = false;
            if (gone)
                events_emit(ev, "destroyed", ev->vms[k].name,
                            vmctl_vm_state_to_string(ev->vms[k].state), NULL);
        }
    }
    vm_states_free(ev->vms, ev->n_vms);
    ev->vms = now;
    ev->n_vms = n;
    ev->primed = true;
}

static ssize_t events_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    events *ev = cls;
    for (;;) {
        if (ev->out_len > ev->out_off) {
            size_t n = ev->out_len - ev->out_off;
            if (n > max)
                n = max;
            memcpy(buf, ev->out + ev->out_off, n);
            ev->out_off += n;
            if (ev->out_off == ev->out_len)
                ev->out_off = ev->out_len = 0;
            return (ssize_t)n;
        }
        if (ev->srv->stopping)
            return MHD_CONTENT_READER_END_OF_STREAM;
        struct pollfd pfd = {.fd = ev->client_fd, .events = POLLRDHUP};
        int n = poll(&pfd, ev->client_fd >= 0 ? 1 : 0, 200);
        if (n > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)))
            return MHD_CONTENT_READER_END_WITH_ERROR;
        events_poll(ev);
    }
}

static void events_free(void *cls)
{
    events *ev = cls;
    vm_states_free(ev->vms, ev->n_vms);
    free(ev->out);
    free(ev);
}

static enum MHD_Result events_respond(serve_server *srv, struct MHD_Connection *conn)
{
    events *ev = calloc(1, sizeof(*ev));
    if (!ev)
        return respond_error(conn, NULL);
    ev->srv = srv;
    ev->client_fd = client_fd(conn);
    events_poll(ev);
    events_emit(ev, "ready", "", NULL, NULL);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, events_read, ev, events_free);
    if (!resp) {
        events_free(ev);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-ndjson");
    return queue(conn, 200, resp);
}

/* --- requests --- */

typedef struct req {
    serve_match m;
    char *body;
    size_t len;
    vmctl_error *err; /* found while the body came: answered at its end */
    /* PUT files: the spool */
    int spool_fd;
    char *spool_dir, *spool_path;
    uint64_t spool_len;
    /* POST exec/{id}/stdin */
    job *stdin_job;
} req;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 ? 0 : 0;
}

static void spool_remove(req *rq)
{
    if (rq->spool_fd >= 0)
        close(rq->spool_fd);
    rq->spool_fd = -1;
    if (rq->spool_dir)
        nftw(rq->spool_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(rq->spool_dir);
    free(rq->spool_path);
    rq->spool_dir = rq->spool_path = NULL;
}

static void req_free(req *rq)
{
    if (!rq)
        return;
    spool_remove(rq);
    job_unref(rq->stdin_job);
    vmctl_error_free(rq->err);
    free(rq->body);
    free(rq);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    req_free(*con_cls);
    *con_cls = NULL;
}

static const char *query(struct MHD_Connection *conn, const char *key)
{
    return MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, key);
}

/* A spool directory under $VMCTL_HOME/tmp, holding `base`. */
static int spool_open(serve_server *srv, req *rq, const char *guest_path, vmctl_error **reterr)
{
    vmctl_ctx *ctx = NULL;
    int r = ctx_get(srv, &ctx, reterr);
    if (r < 0)
        return r;
    cleanup_free char *tmp = cli_printf("%s/tmp", vmctl_ctx_get_home(ctx));
    ctx_put(srv, ctx);
    if (!tmp)
        return vmctl_error_new(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
        return vmctl_error_new(reterr, VMCTL_E_IO, errno, "cannot create '%s'", tmp);
    rq->spool_dir = cli_printf("%s/serve-XXXXXX", tmp);
    if (!rq->spool_dir || !mkdtemp(rq->spool_dir)) {
        int err = rq->spool_dir ? errno : ENOMEM;
        free(rq->spool_dir);
        rq->spool_dir = NULL;
        return vmctl_error_new(reterr, VMCTL_E_IO, err, "cannot create a spool directory in '%s'",
                               tmp);
    }
    const char *base = guest_path ? strrchr(guest_path, '/') : NULL;
    base = base && base[1] ? base + 1 : "upload";
    if (streq(base, ".") || streq(base, ".."))
        base = "upload";
    rq->spool_path = cli_printf("%s/%s", rq->spool_dir, base);
    if (!rq->spool_path)
        return vmctl_error_new(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    rq->spool_fd = open(rq->spool_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (rq->spool_fd < 0)
        return vmctl_error_new(reterr, VMCTL_E_IO, errno, "cannot create '%s'", rq->spool_path);
    return 0;
}

static bool is_tar(struct MHD_Connection *conn)
{
    const char *ct =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    return ct && strncmp(ct, "application/x-tar", 17) == 0;
}

/* The body of a request as it comes (called for each piece). */
static void take_body(serve_server *srv, struct MHD_Connection *conn, req *rq, const char *data,
                      size_t len)
{
    if (rq->err)
        return; /* answered at the end */
    switch (rq->m.route->id) {
    case SERVE_R_FILES_PUT:
        if (rq->spool_len + len > srv->max_upload) {
            vmctl_error_new(&rq->err, VMCTL_E_API_TOO_LARGE, EFBIG,
                            "upload is over the limit of %" PRIu64 " bytes", srv->max_upload);
            if (rq->err) {
                char b[32];
                snprintf(b, sizeof(b), "%" PRIu64, srv->max_upload);
                vmctl_error_add_detail(rq->err, "limit_bytes", b);
            }
            return;
        }
        if (cli_write_all(rq->spool_fd, data, len) < 0)
            vmctl_error_new(&rq->err, VMCTL_E_IO, errno, "cannot write '%s'", rq->spool_path);
        rq->spool_len += len;
        return;
    case SERVE_R_EXEC_STDIN: {
        job *j = rq->stdin_job;
        pthread_mutex_lock(&j->lock);
        int r = j->finished ? -EPIPE : vmctl_exec_write(j->p, data, len, &rq->err);
        pthread_mutex_unlock(&j->lock);
        if (r == -EPIPE && !rq->err)
            vmctl_error_new(&rq->err, VMCTL_E_API_ROUTE_NOT_FOUND, EPIPE,
                            "the command of exec id '%u' has finished", j->id);
        return;
    }
    default:
        if (!rq->m.route->json_body) {
            vmctl_error_new(&rq->err, VMCTL_E_API_BAD_REQUEST, EINVAL,
                            "route '%s %s' takes no request body", rq->m.route->method,
                            rq->m.route->path);
            return;
        }
        if (rq->len + len > SERVE_MAX_JSON_BODY) {
            vmctl_error_new(&rq->err, VMCTL_E_API_TOO_LARGE, EFBIG,
                            "request body is over the limit of %zu bytes", SERVE_MAX_JSON_BODY);
            if (rq->err) {
                char b[32];
                snprintf(b, sizeof(b), "%zu", SERVE_MAX_JSON_BODY);
                vmctl_error_add_detail(rq->err, "limit_bytes", b);
            }
            return;
        }
        char *n = realloc(rq->body, rq->len + len + 1);
        if (!n) {
            vmctl_error_new(&rq->err, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
            return;
        }
        memcpy(n + rq->len, data, len);
        rq->body = n;
        rq->len += len;
        rq->body[rq->len] = '\0';
        return;
    }
    (void)conn;
}

/* An action's answer: the VM as it is now. */
static enum MHD_Result respond_vm(serve_server *srv, struct MHD_Connection *conn, vmctl_ctx *ctx,
                                  const char *name, unsigned status)
{
    vmctl_vm_info *info = NULL;
    vmctl_error *e = NULL;
    int r = vmctl_vm_get(ctx, name, &info, &e);
    json_t *doc = r >= 0 ? render_vm_json(info) : NULL;
    vmctl_vm_info_free(info);
    ctx_put(srv, ctx);
    return r < 0 ? respond_error(conn, e) : respond_json(conn, status, doc);
}

static json_t *image_json(const vmctl_image_info *i)
{
    json_t *o = json_pack("{s:s?, s:s?, s:I, s:s?}", "name", i->name, "format", i->format, "size",
                          (json_int_t)i->size, "path", i->path);
    if (!o)
        return NULL;
    json_object_set_new(o, "virtual_size",
                        i->virtual_size ? json_integer((json_int_t)i->virtual_size) : json_null());
    json_object_set_new(o, "backing_file",
                        i->backing_file ? json_string(i->backing_file) : json_null());
    json_object_set_new(o, "sha256", i->sha256 ? json_string(i->sha256) : json_null());
    json_object_set_new(o, "source", i->source ? json_string(i->source) : json_null());
    json_object_set_new(o, "created_at", i->created_at ? json_integer(i->created_at) : json_null());
    return o;
}

static const char *const no_fields[] = {NULL};
static const char *const start_fields[] = {"wait", "timeout", NULL};
static const char *const stop_fields[] = {"force", "timeout", NULL};
static const char *const signal_fields[] = {"signal", NULL};
static const char *const resize_fields[] = {"rows", "cols", NULL};
static const char *const snap_fields[] = {"name", "kind", "keep_running", NULL};
static const char *const restore_fields[] = {"timeout", NULL};
static const char *const clone_fields[] = {"name", "count", "timeout", NULL};
static const char *const pool_fields[] = {"size", NULL};

/* The pool of vm/snap as `vmctl pool VM/SNAP --size N --json` prints it: {} when there is none. */
static int pool_one_json(vmctl_ctx *ctx, const char *vm, const char *snap, json_t **ret,
                         vmctl_error **reterr)
{
    vmctl_pool_info **list = NULL;
    size_t n = 0;
    int r = vmctl_pool_list(ctx, &list, &n, reterr);
    if (r < 0)
        return r;
    *ret = render_pool_one_json(list, n, vm, snap);
    vmctl_pool_info_list_free(list, n);
    return 0;
}

static json_t *snapshot_json(const vmctl_snapshot_info *i)
{
    json_t *o = json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:i, s:I, s:I}", "vm", i->vm,
                          "name", i->name, "kind", i->kind, "dir", i->dir, "qemu_version",
                          i->qemu_version, "machine", i->machine, "memory_mib", (int)i->memory_mib,
                          "created_at", (json_int_t)i->created_at, "refs", (json_int_t)i->n_refs);
    if (o && i->save_ms > 0)
        json_object_set_new(o, "save_ms", json_real(i->save_ms));
    return o;
}

static enum MHD_Result handle(serve_server *srv, struct MHD_Connection *conn, req *rq)
{
    const char *name = rq->m.params[0];
    const char *body = rq->body ? rq->body : "";
    vmctl_error *e = NULL;
    cleanup_json json_t *o = NULL;
    vmctl_ctx *ctx = NULL;
    int r = 0;

    switch (rq->m.route->id) {
    case SERVE_R_VERSION:
        return respond_json(conn, 200,
                            json_pack("{s:s, s:s, s:s}", "version", VMCTL_VERSION, "library",
                                      vmctl_version(), "api", "v1"));
    case SERVE_R_OPENAPI: {
        struct MHD_Response *resp = MHD_create_response_from_buffer(
            serve_openapi_len, (void *)serve_openapi, MHD_RESPMEM_PERSISTENT);
        if (resp)
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        return queue(conn, 200, resp);
    }
    case SERVE_R_EVENTS:
        return events_respond(srv, conn);
    case SERVE_R_VM_EXEC: {
        serve_exec x;
        if (serve_parse_exec(body, rq->len, &x, &e) < 0)
            return respond_error(conn, e);
        return exec_respond(srv, conn, name, &x, false, "application/x-ndjson");
    }
    case SERVE_R_EXEC_STDIN: {
        bool eof = false;
        if (serve_parse_bool("eof", query(conn, "eof"), false, &eof, &e) < 0)
            return respond_error(conn, e);
        job *j = rq->stdin_job;
        if (eof) {
            pthread_mutex_lock(&j->lock);
            r = j->finished ? 0 : vmctl_exec_close_stdin(j->p, &e);
            pthread_mutex_unlock(&j->lock);
            if (r < 0 && r != -EPIPE)
                return respond_error(conn, e);
            vmctl_error_free(e);
        }
        return respond_empty(conn, 204);
    }
    case SERVE_R_EXEC_SIGNAL:
    case SERVE_R_EXEC_RESIZE:
    case SERVE_R_EXEC_KILL: {
        int sig = SIGKILL;
        unsigned rows = 0, cols = 0;
        serve_route_id id = rq->m.route->id;
        if (id == SERVE_R_EXEC_SIGNAL) {
            if (serve_parse_object(body, rq->len, signal_fields, &o, &e) < 0 ||
                serve_parse_signal(json_object_get(o, "signal"), &sig, &e) < 0)
                return respond_error(conn, e);
        } else if (id == SERVE_R_EXEC_RESIZE) {
            if (serve_parse_object(body, rq->len, resize_fields, &o, &e) < 0 ||
                serve_get_uint(o, "rows", 0, 65535, &rows, &e) < 0 ||
                serve_get_uint(o, "cols", 0, 65535, &cols, &e) < 0)
                return respond_error(conn, e);
        }
        job *j = job_find(srv, name, &e);
        if (!j)
            return respond_error(conn, e);
        pthread_mutex_lock(&j->lock);
        if (j->finished || vmctl_exec_done(j->p))
            r = vmctl_error_new(&e, VMCTL_E_API_ROUTE_NOT_FOUND, ESRCH,
                                "the command of exec id '%s' has finished", name);
        else if (id == SERVE_R_EXEC_RESIZE)
            r = vmctl_exec_resize(j->p, rows, cols, &e);
        else
            r = vmctl_exec_signal(j->p, sig, &e);
        pthread_mutex_unlock(&j->lock);
        job_unref(j);
        return r < 0 ? respond_error(conn, e) : respond_empty(conn, 204);
    }
    default:
        break;
    }

    /* The rest use a context of their own. */
    if (ctx_get(srv, &ctx, &e) < 0)
        return respond_error(conn, e);

    switch (rq->m.route->id) {
    case SERVE_R_SNAP_LIST: {
        vmctl_snapshot_info **list = NULL;
        size_t n = 0;
        if (vmctl_snapshot_list(ctx, name, &list, &n, &e) < 0)
            break;
        ctx_put(srv, ctx);
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, snapshot_json(list[i]));
        vmctl_snapshot_info_list_free(list, n);
        return respond_json(conn, 200, json_pack("{s:o}", "snapshots", a));
    }
    case SERVE_R_SNAP_CREATE: {
        const char *snap = NULL;
        vmctl_snapshot_options so = {0};
        vmctl_snapshot_info *info = NULL;
        if (serve_parse_object(body, rq->len, snap_fields, &o, &e) < 0 ||
            serve_get_string(o, "name", &snap, &e) < 0 ||
            serve_get_string(o, "kind", &so.kind, &e) < 0 ||
            serve_get_bool(o, "keep_running", &so.keep_running, &e) < 0)
            break;
        if (!snap) {
            vmctl_error_new(&e, VMCTL_E_API_BAD_REQUEST, EINVAL, "field 'name' is required");
            if (e)
                vmctl_error_add_detail(e, "field", "name");
            break;
        }
        if (vmctl_snapshot_create(ctx, name, snap, &so, &info, &e) < 0)
            break;
        ctx_put(srv, ctx);
        json_t *doc = snapshot_json(info);
        vmctl_snapshot_info_free(info);
        return respond_json(conn, 201, doc);
    }
    case SERVE_R_SNAP_RM:
        if (vmctl_snapshot_rm(ctx, name, rq->m.params[1], &e) < 0)
            break;
        ctx_put(srv, ctx);
        return respond_empty(conn, 204);
    case SERVE_R_SNAP_RESTORE: {
        double timeout = 0;
        if (serve_parse_object(body, rq->len, restore_fields, &o, &e) < 0 ||
            serve_get_seconds(o, "timeout", &timeout, &e) < 0 ||
            vmctl_snapshot_restore(ctx, name, rq->m.params[1], timeout, &e) < 0)
            break;
        return respond_vm(srv, conn, ctx, name, 200);
    }
    case SERVE_R_SNAP_CLONE: {
        const char *newname = NULL;
        unsigned count = 1;
        double timeout = 0;
        if (serve_parse_object(body, rq->len, clone_fields, &o, &e) < 0 ||
            serve_get_string(o, "name", &newname, &e) < 0 ||
            serve_get_uint(o, "count", 1, 1024, &count, &e) < 0 ||
            serve_get_seconds(o, "timeout", &timeout, &e) < 0)
            break;
        if (!newname || count == 0) {
            vmctl_error_new(&e, VMCTL_E_API_BAD_REQUEST, EINVAL,
                            "field 'name' is required and 'count' at least 1");
            if (e)
                vmctl_error_add_detail(e, "field", newname ? "count" : "name");
            break;
        }
        if (vmctl_snapshot_clone(ctx, name, rq->m.params[1], newname, count, timeout, &e) < 0)
            break;
        /* as the CLI's clone: a background `vmctl pool fill` when the clones took from a pool
         * (at once: the server does not exit, there is no vmctl exit to wait for) */
        cli_pool_refill_later(NULL, ctx, name, rq->m.params[1], false);
        json_t *a = json_array();
        for (unsigned i = 0; i < count; i++) {
            char vmname[300];
            if (count == 1)
                snprintf(vmname, sizeof(vmname), "%s", newname);
            else
                snprintf(vmname, sizeof(vmname), "%s-%u", newname, i + 1);
            vmctl_vm_info *info = NULL;
            if (vmctl_vm_get(ctx, vmname, &info, NULL) >= 0)
                json_array_append_new(a, render_vm_json(info));
            vmctl_vm_info_free(info);
        }
        ctx_put(srv, ctx);
        return respond_json(conn, 201, json_pack("{s:o}", "vms", a));
    }
    case SERVE_R_POOLS_LIST: {
        vmctl_pool_info **list = NULL;
        size_t n = 0;
        if (vmctl_pool_list(ctx, &list, &n, &e) < 0)
            break;
        ctx_put(srv, ctx);
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, render_pool_json(list[i]));
        vmctl_pool_info_list_free(list, n);
        return respond_json(conn, 200, json_pack("{s:o}", "pools", a));
    }
    case SERVE_R_POOL_SET: {
        /* the range is the library's to check (config::invalid past 64, as the CLI) */
        unsigned size = 0;
        json_t *doc = NULL;
        if (serve_parse_object(body, rq->len, pool_fields, &o, &e) < 0)
            break;
        if (!json_object_get(o, "size")) {
            vmctl_error_new(&e, VMCTL_E_API_BAD_REQUEST, EINVAL, "field 'size' is required");
            if (e)
                vmctl_error_add_detail(e, "field", "size");
            break;
        }
        if (serve_get_uint(o, "size", 0, 1u << 20, &size, &e) < 0 ||
            vmctl_pool_set(ctx, name, rq->m.params[1], size, &e) < 0 ||
            pool_one_json(ctx, name, rq->m.params[1], &doc, &e) < 0)
            break;
        ctx_put(srv, ctx);
        return respond_json(conn, 200, doc);
    }
    case SERVE_R_POOL_RM:
        if (vmctl_pool_set(ctx, name, rq->m.params[1], 0, &e) < 0)
            break;
        ctx_put(srv, ctx);
        return respond_empty(conn, 204);
    case SERVE_R_VMS_LIST: {
        vmctl_vm_info **list = NULL;
        size_t n = 0;
        r = vmctl_vm_list(ctx, &list, &n, &e);
        ctx_put(srv, ctx);
        if (r < 0)
            return respond_error(conn, e);
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, render_vm_json(list[i]));
        vmctl_vm_info_list_free(list, n);
        return respond_json(conn, 200, json_pack("{s:o}", "vms", a));
    }
    case SERVE_R_VMS_CREATE: {
        serve_create c;
        if (serve_parse_create(body, rq->len, &c, &e) < 0)
            break;
        r = vmctl_vm_create(ctx, &c.config, &e);
        if (r >= 0 && c.start)
            r = vmctl_vm_start(ctx, c.config.name, c.wait, c.timeout, &e);
        cleanup_free char *vm = strdup(c.config.name);
        serve_create_done(&c);
        if (r < 0 || !vm)
            break;
        return respond_vm(srv, conn, ctx, vm, 201);
    }
    case SERVE_R_VM_GET:
        return respond_vm(srv, conn, ctx, name, 200);
    case SERVE_R_VM_START: {
        bool wait = false;
        double timeout = 0;
        if (serve_parse_object(body, rq->len, start_fields, &o, &e) < 0 ||
            serve_get_bool(o, "wait", &wait, &e) < 0 ||
            serve_get_seconds(o, "timeout", &timeout, &e) < 0 ||
            vmctl_vm_start(ctx, name, wait, timeout, &e) < 0)
            break;
        return respond_vm(srv, conn, ctx, name, 200);
    }
    case SERVE_R_VM_STOP: {
        bool force = false;
        double timeout = 0;
        if (serve_parse_object(body, rq->len, stop_fields, &o, &e) < 0 ||
            serve_get_bool(o, "force", &force, &e) < 0 ||
            serve_get_seconds(o, "timeout", &timeout, &e) < 0 ||
            vmctl_vm_stop(ctx, name, timeout, force, &e) < 0)
            break;
        return respond_vm(srv, conn, ctx, name, 200);
    }
    case SERVE_R_VM_KILL:
    case SERVE_R_VM_PAUSE:
    case SERVE_R_VM_RESUME: {
        serve_route_id id = rq->m.route->id;
        if (serve_parse_object(body, rq->len, no_fields, &o, &e) < 0)
            break;
        r = id == SERVE_R_VM_KILL    ? vmctl_vm_kill(ctx, name, &e)
            : id == SERVE_R_VM_PAUSE ? vmctl_vm_pause(ctx, name, &e)
                                     : vmctl_vm_resume(ctx, name, &e);
        if (r < 0)
            break;
        return respond_vm(srv, conn, ctx, name, 200);
    }
    case SERVE_R_VM_DESTROY: {
        bool force = false;
        if (serve_parse_bool("force", query(conn, "force"), false, &force, &e) < 0 ||
            vmctl_vm_destroy(ctx, name, force, &e) < 0)
            break;
        ctx_put(srv, ctx);
        return respond_empty(conn, 204);
    }
    case SERVE_R_VM_STATS: {
        bool guest = true;
        vmctl_vm_stats *st = NULL;
        if (serve_parse_bool("guest", query(conn, "guest"), true, &guest, &e) < 0 ||
            vmctl_vm_stats_get(ctx, name, guest ? 0 : VMCTL_STATS_NO_GUEST, &st, &e) < 0)
            break;
        ctx_put(srv, ctx);
        json_t *doc = render_stats_json(name, st, NULL);
        vmctl_vm_stats_free(st);
        return respond_json(conn, 200, doc);
    }
    case SERVE_R_IMAGES: {
        vmctl_image_info *list = NULL;
        size_t n = 0;
        r = vmctl_image_list(ctx, &list, &n, &e);
        ctx_put(srv, ctx);
        if (r < 0)
            return respond_error(conn, e);
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(a, image_json(&list[i]));
        vmctl_image_info_list_free(list, n);
        return respond_json(conn, 200, json_pack("{s:o}", "images", a));
    }
    case SERVE_R_FILES_PUT: {
        const char *path = query(conn, "path");
        if (is_tar(conn)) {
            /* tar -x in the guest, its stdin the spool */
            if (close(rq->spool_fd) < 0) {
                rq->spool_fd = -1;
                vmctl_error_new(&e, VMCTL_E_IO, errno, "cannot write '%s'", rq->spool_path);
                break;
            }
            rq->spool_fd = -1;
            cleanup_close int in = open(rq->spool_path, O_RDONLY | O_CLOEXEC);
            if (in < 0) {
                vmctl_error_new(&e, VMCTL_E_IO, errno, "cannot open '%s'", rq->spool_path);
                break;
            }
            /* the target directory is made as `cp -r` into a new directory would */
            char *argv[] = {"sh", "-c",         "mkdir -p -- \"$1\" && exec tar -xf - -C \"$1\"",
                            "sh", (char *)path, NULL};
            vmctl_exec_opts x = {.argv = argv};
            char errbuf[1024] = "";
            job tail = {.raw = true};
            vmctl_exec_io io = {
                .on_stderr = on_stderr, .userdata = &tail, .signal_fd = -1, .resize_fd = -1};
            vmctl_exec_status st = {0};
            if (vmctl_exec_stream(ctx, name, &x, &io, in, &st, &e) < 0)
                break;
            if (st.exit_code != 0) {
                snprintf(errbuf, sizeof(errbuf), "%s", tail.err_tail);
                vmctl_error_new(&e, VMCTL_E_AGENT_FAILED, EIO,
                                "extracting the upload into '%s' failed (tar status %d)", path,
                                st.exit_code);
                if (e && errbuf[0])
                    vmctl_error_add_note(e, errbuf);
                break;
            }
        } else {
            const char *mode_s = query(conn, "mode");
            unsigned long mode = 0644;
            char *end = NULL;
            if (mode_s && ((mode = strtoul(mode_s, &end, 8)) > 07777 || !*mode_s || *end)) {
                vmctl_error_new(&e, VMCTL_E_API_BAD_REQUEST, EINVAL,
                                "query parameter 'mode' must be an octal mode such as 0644");
                if (e)
                    vmctl_error_add_detail(e, "field", "mode");
                break;
            }
            if (fchmod(rq->spool_fd, (mode_t)mode) < 0 || close(rq->spool_fd) < 0) {
                rq->spool_fd = -1;
                vmctl_error_new(&e, VMCTL_E_IO, errno, "cannot write '%s'", rq->spool_path);
                break;
            }
            rq->spool_fd = -1;
            if (vmctl_cp_to_vm(ctx, name, rq->spool_path, path, &e) < 0)
                break;
        }
        ctx_put(srv, ctx);
        return respond_empty(conn, 204);
    }
    case SERVE_R_FILES_GET: {
        const char *path = query(conn, "path");
        const char *format = query(conn, "format");
        if (!path || path[0] != '/') {
            vmctl_error_new(&e, VMCTL_E_API_BAD_REQUEST, EINVAL,
                            "query parameter 'path' must be an absolute guest path");
            if (e)
                vmctl_error_add_detail(e, "field", "path");
            break;
        }
        if (format && !streq(format, "raw") && !streq(format, "tar")) {
            vmctl_error_new(&e, VMCTL_E_API_BAD_REQUEST, EINVAL,
                            "query parameter 'format' must be raw or tar");
            if (e)
                vmctl_error_add_detail(e, "field", "format");
            break;
        }
        bool tar = format && streq(format, "tar");
        if (!tar) {
            if (spool_open(srv, rq, path, &e) < 0)
                break;
            close(rq->spool_fd);
            rq->spool_fd = -1;
            unlink(rq->spool_path);
            if (vmctl_cp_from_vm(ctx, name, path, rq->spool_path, &e) < 0)
                break;
            struct stat st;
            int fd = open(rq->spool_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
                ctx_put(srv, ctx);
                spool_remove(rq);
                struct MHD_Response *resp = MHD_create_response_from_fd((uint64_t)st.st_size, fd);
                if (!resp) {
                    close(fd);
                    return MHD_NO;
                }
                MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
                                        "application/octet-stream");
                return queue(conn, 200, resp);
            }
            if (fd >= 0)
                close(fd);
            spool_remove(rq); /* a directory: as a tar */
        }
        ctx_put(srv, ctx);
        /* tar -c in the guest, streamed */
        cleanup_free char *dir = strdup(path);
        if (!dir)
            return respond_error(conn, NULL);
        char *slash = strrchr(dir, '/');
        const char *base = slash[1] ? slash + 1 : ".";
        *slash = '\0';
        serve_exec x = {0};
        x.argv = calloc(7, sizeof(char *));
        x.owned[0] = strdup(dir[0] ? dir : "/");
        x.owned[1] = strdup(base);
        if (!x.argv || !x.owned[0] || !x.owned[1]) {
            serve_exec_done(&x);
            return respond_error(conn, NULL);
        }
        x.argv[0] = "tar";
        x.argv[1] = "-cf";
        x.argv[2] = "-";
        x.argv[3] = "-C";
        x.argv[4] = x.owned[0];
        x.argv[5] = x.owned[1];
        x.opts.argv = x.argv;
        return exec_respond(srv, conn, name, &x, true, "application/x-tar");
    }
    default:
        vmctl_error_new(&e, VMCTL_E_INTERNAL, EINVAL, "route without a handler");
        break;
    }
    ctx_put(srv, ctx);
    return respond_error(conn, e);
}

static bool token_ok(serve_server *srv, struct MHD_Connection *conn)
{
    const char *h =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    size_t a = strlen(h), b = strlen(srv->token);
    unsigned char diff = a != b;
    for (size_t i = 0; i < a && i < b; i++)
        diff |= (unsigned char)(h[i] ^ srv->token[i]);
    return diff == 0;
}

/* An error found before the body came: answered once it is read (a client that sends its body
 * whole, as most do, would otherwise see its connection closed under it). */
static enum MHD_Result defer_error(req *rq, vmctl_error *e)
{
    if (!e)
        vmctl_error_new(&e, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    rq->err = e;
    return MHD_YES;
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                      const char *method, const char *version,
                                      const char *upload_data, size_t *upload_data_size,
                                      void **con_cls)
{
    (void)version;
    listener *l = cls;
    serve_server *srv = l->srv;
    req *rq = *con_cls;
    vmctl_error *e = NULL;

    if (!rq) {
        if (l->tcp && !token_ok(srv, conn)) {
            vmctl_error_new(&e, VMCTL_E_API_UNAUTHORIZED, EACCES, "missing or wrong bearer token");
            return respond_error(conn, e);
        }
        rq = calloc(1, sizeof(*rq));
        if (!rq)
            return MHD_NO;
        rq->spool_fd = -1;
        *con_cls = rq;
        if (serve_route_match(method, url, &rq->m, &e) < 0)
            return defer_error(rq, e);
        if (rq->m.route->id == SERVE_R_FILES_PUT) {
            const char *path = query(conn, "path");
            if (!path || path[0] != '/') {
                vmctl_error_new(&e, VMCTL_E_API_BAD_REQUEST, EINVAL,
                                "query parameter 'path' must be an absolute guest path");
                if (e)
                    vmctl_error_add_detail(e, "field", "path");
                return defer_error(rq, e);
            }
            if (spool_open(srv, rq, is_tar(conn) ? NULL : path, &e) < 0)
                return defer_error(rq, e);
        } else if (rq->m.route->id == SERVE_R_EXEC_STDIN) {
            rq->stdin_job = job_find(srv, rq->m.params[0], &e);
            if (!rq->stdin_job)
                return defer_error(rq, e);
            if (!rq->stdin_job->req.stdin_open) {
                vmctl_error_new(&e, VMCTL_E_API_BAD_REQUEST, EINVAL,
                                "exec id '%s' was not started with stdin_open", rq->m.params[0]);
                return defer_error(rq, e);
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        take_body(srv, conn, rq, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->err) {
        e = TAKE_PTR(rq->err);
        return respond_error(conn, e);
    }
    return handle(srv, conn, rq);
}

static struct MHD_Daemon *start_daemon(serve_server *srv, listener *l, int fd,
                                       const serve_opts *opts)
{
    l->srv = srv;
    return MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, access_handler, l, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_CONNECTION_TIMEOUT,
        opts->timeout_sec ? opts->timeout_sec : 30u, MHD_OPTION_CONNECTION_LIMIT,
        opts->max_conns ? opts->max_conns : 256u, MHD_OPTION_NOTIFY_COMPLETED, request_completed,
        NULL, MHD_OPTION_END);
}

int serve_start(const serve_opts *opts, serve_server **ret, vmctl_error **reterr)
{
    int r = mhd_load(reterr);
    if (r < 0)
        return r;
    serve_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return vmctl_error_new(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    pthread_mutex_init(&srv->pool_lock, NULL);
    pthread_mutex_init(&srv->jobs_lock, NULL);
    srv->max_upload = opts->max_upload;
    srv->home = opts->home ? strdup(opts->home) : NULL;
    srv->token = opts->token ? strdup(opts->token) : NULL;
    if (opts->unix_fd >= 0) {
        listeners[0].tcp = false;
        srv->unix_d = start_daemon(srv, &listeners[0], opts->unix_fd, opts);
    }
    if (opts->tcp_fd >= 0 && srv->token) {
        listeners[1].tcp = true;
        srv->tcp_d = start_daemon(srv, &listeners[1], opts->tcp_fd, opts);
    }
    if ((opts->unix_fd >= 0 && !srv->unix_d) || (opts->tcp_fd >= 0 && !srv->tcp_d)) {
        int err = errno ? errno : EIO;
        serve_stop(srv);
        return vmctl_error_new(reterr, VMCTL_E_IO, err, "cannot start the HTTP server");
    }
    *ret = srv;
    return 0;
}

void serve_stop(serve_server *srv)
{
    if (!srv)
        return;
    srv->stopping = 1;
    if (srv->unix_d)
        MHD_stop_daemon(srv->unix_d);
    if (srv->tcp_d)
        MHD_stop_daemon(srv->tcp_d);
    for (size_t i = 0; i < srv->n_pool; i++)
        vmctl_ctx_free(srv->pool[i]);
    free(srv->home);
    free(srv->token);
    free(srv);
}
