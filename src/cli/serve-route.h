/* SPDX-License-Identifier: MIT */
/* vmctl serve: the pure part of request handling (route matching, JSON bodies to library
 * structures, query values, the HTTP status of an error code). No I/O: fuzzed by
 * tests/fuzz/fuzz-api-request.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <vmctl/vmctl.h>

/* The largest JSON request body. */
#define SERVE_MAX_JSON_BODY ((size_t)1 << 20)
#define SERVE_MAX_PARAM     256

typedef enum serve_route_id {
    SERVE_R_VERSION,
    SERVE_R_OPENAPI,
    SERVE_R_VMS_LIST,
    SERVE_R_VMS_CREATE,
    SERVE_R_VM_GET,
    SERVE_R_VM_DESTROY,
    SERVE_R_VM_START,
    SERVE_R_VM_STOP,
    SERVE_R_VM_KILL,
    SERVE_R_VM_PAUSE,
    SERVE_R_VM_RESUME,
    SERVE_R_VM_STATS,
    SERVE_R_VM_EXEC,
    SERVE_R_EXEC_STDIN,
    SERVE_R_EXEC_SIGNAL,
    SERVE_R_EXEC_RESIZE,
    SERVE_R_EXEC_KILL,
    SERVE_R_FILES_PUT,
    SERVE_R_FILES_GET,
    SERVE_R_IMAGES,
    SERVE_R_EVENTS,
    SERVE_R_SNAP_LIST,
    SERVE_R_SNAP_CREATE,
    SERVE_R_SNAP_CLONE,
    SERVE_R_SNAP_RM,
    SERVE_R_SNAP_RESTORE,
    SERVE_R_POOLS_LIST,
    SERVE_R_POOL_SET,
    SERVE_R_POOL_RM,
    _SERVE_R_MAX,
} serve_route_id;

typedef struct serve_route {
    serve_route_id id;
    const char *method;
    const char *path; /* template: {x} matches one non-empty segment */
    bool json_body;   /* the body is a JSON object (else raw bytes, streamed) */
} serve_route;

/* The i-th route, NULL past the end (vmctl serve --list-routes prints them). */
const serve_route *serve_route_at(size_t i);

typedef struct serve_match {
    const serve_route *route;
    char params[2][SERVE_MAX_PARAM]; /* the {x} segments, in order */
    char allowed[64];                /* -EOPNOTSUPP: the methods the path has ("GET, DELETE") */
} serve_match;

/* 0 and *m filled; api::route_not_found (-ENOENT) when no route has that path,
 * api::method_not_allowed (-EOPNOTSUPP, m->allowed set) when the path has other methods only. */
int serve_route_match(const char *method, const char *path, serve_match *m, vmctl_error **reterr);

/* The HTTP status of an error, by its code's family (docs/api.md). */
unsigned serve_http_status(vmctl_error_kind kind);

/* A JSON request body: an object (an empty body is {}), each member one of allowed (NULL
 * terminated). api::bad_request otherwise, details field. */
int serve_parse_object(const char *body, size_t len, const char *const *allowed, json_t **ret,
                       vmctl_error **reterr);
/* Typed members of o: absent leaves *ret alone; a wrong type is api::bad_request (field). */
int serve_get_bool(json_t *o, const char *key, bool *ret, vmctl_error **reterr);
int serve_get_string(json_t *o, const char *key, const char **ret, vmctl_error **reterr);
int serve_get_uint(json_t *o, const char *key, unsigned min, unsigned max, unsigned *ret,
                   vmctl_error **reterr);
int serve_get_seconds(json_t *o, const char *key, double *ret, vmctl_error **reterr);
/* An array of strings as a NULL-terminated vector borrowed from o (*ret freed by the caller;
 * absent: NULL). */
int serve_get_strv(json_t *o, const char *key, char ***ret, size_t *n, vmctl_error **reterr);

/* Query values: "1", "true", "yes" / "0", "false", "no", "" (absent: def). */
int serve_parse_bool(const char *key, const char *value, bool def, bool *ret, vmctl_error **reterr);
/* A signal by number or name ("TERM", "SIGTERM", 15). */
int serve_parse_signal(json_t *v, int *ret, vmctl_error **reterr);

/* POST /v1/vms */
typedef struct serve_create {
    json_t *doc;
    vmctl_vm_config config;
    vmctl_port_forward *ports;
    char **env;
    bool start, wait;
    double timeout;
} serve_create;
int serve_parse_create(const char *body, size_t len, serve_create *ret, vmctl_error **reterr);
void serve_create_done(serve_create *c);

/* POST /v1/vms/{name}/exec */
typedef struct serve_exec {
    json_t *doc;
    vmctl_exec_opts opts;
    char **argv, **env;
    void *stdin_data;
    bool stdin_open;
    char *owned[2]; /* strings of argv it owns (freed by serve_exec_done) */
} serve_exec;
int serve_parse_exec(const char *body, size_t len, serve_exec *ret, vmctl_error **reterr);
void serve_exec_done(serve_exec *e);

/* Base64 (RFC 4648, with padding). encode: malloc'd NUL-terminated; decode: -EINVAL on bad input.
 */
char *serve_base64_encode(const void *data, size_t len);
int serve_base64_decode(const char *s, size_t len, void **ret, size_t *ret_len);
