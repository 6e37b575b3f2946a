/* SPDX-License-Identifier: MIT */
/* vmctl serve: route table, body parsing, status table (pure: see serve-route.h). */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "macros.h"
#include "serve-route.h"
#include "vmctl-cleanup.h"

static const serve_route routes[] = {
    {SERVE_R_VERSION, "GET", "/v1/version", false},
    {SERVE_R_OPENAPI, "GET", "/v1/openapi.json", false},
    {SERVE_R_VMS_LIST, "GET", "/v1/vms", false},
    {SERVE_R_VMS_CREATE, "POST", "/v1/vms", true},
    {SERVE_R_VM_GET, "GET", "/v1/vms/{name}", false},
    {SERVE_R_VM_DESTROY, "DELETE", "/v1/vms/{name}", false},
    {SERVE_R_VM_START, "POST", "/v1/vms/{name}/start", true},
    {SERVE_R_VM_STOP, "POST", "/v1/vms/{name}/stop", true},
    {SERVE_R_VM_KILL, "POST", "/v1/vms/{name}/kill", true},
    {SERVE_R_VM_PAUSE, "POST", "/v1/vms/{name}/pause", true},
    {SERVE_R_VM_RESUME, "POST", "/v1/vms/{name}/resume", true},
    {SERVE_R_VM_STATS, "GET", "/v1/vms/{name}/stats", false},
    {SERVE_R_VM_EXEC, "POST", "/v1/vms/{name}/exec", true},
    {SERVE_R_EXEC_STDIN, "POST", "/v1/exec/{id}/stdin", false},
    {SERVE_R_EXEC_SIGNAL, "POST", "/v1/exec/{id}/signal", true},
    {SERVE_R_EXEC_RESIZE, "POST", "/v1/exec/{id}/resize", true},
    {SERVE_R_EXEC_KILL, "DELETE", "/v1/exec/{id}", false},
    {SERVE_R_FILES_PUT, "PUT", "/v1/vms/{name}/files", false},
    {SERVE_R_FILES_GET, "GET", "/v1/vms/{name}/files", false},
    {SERVE_R_IMAGES, "GET", "/v1/images", false},
    {SERVE_R_EVENTS, "GET", "/v1/events", false},
    {SERVE_R_SNAP_LIST, "GET", "/v1/vms/{name}/snapshots", false},
    {SERVE_R_SNAP_CREATE, "POST", "/v1/vms/{name}/snapshots", true},
    {SERVE_R_SNAP_CLONE, "POST", "/v1/vms/{name}/snapshots/{snapshot}/clone", true},
    {SERVE_R_SNAP_RM, "DELETE", "/v1/vms/{name}/snapshots/{snapshot}", false},
    {SERVE_R_SNAP_RESTORE, "POST", "/v1/vms/{name}/snapshots/{snapshot}/restore", true},
    {SERVE_R_POOLS_LIST, "GET", "/v1/pools", false},
    {SERVE_R_POOL_SET, "PUT", "/v1/vms/{name}/snapshots/{snapshot}/pool", true},
    {SERVE_R_POOL_RM, "DELETE", "/v1/vms/{name}/snapshots/{snapshot}/pool", false},
};

const serve_route *serve_route_at(size_t i)
{
    return i < ELEMENTSOF(routes) ? &routes[i] : NULL;
}

static int bad_request(vmctl_error **reterr, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad_request(vmctl_error **reterr, const char *field, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vmctl_error_newv(reterr, VMCTL_E_API_BAD_REQUEST, EINVAL, fmt, ap);
    va_end(ap);
    if (reterr && *reterr && field)
        vmctl_error_add_detail(*reterr, "field", field);
    return r;
}

/* Does path match template t? Captures the {x} segments. */
static bool path_matches(const char *t, const char *path, serve_match *m)
{
    size_t n_param = 0;
    while (*t && *path) {
        if (*t == '{') {
            const char *end = strchr(path, '/');
            size_t len = end ? (size_t)(end - path) : strlen(path);
            if (len == 0 || len >= SERVE_MAX_PARAM || n_param >= ELEMENTSOF(m->params))
                return false;
            memcpy(m->params[n_param], path, len);
            m->params[n_param][len] = '\0';
            n_param++;
            path += len;
            t = strchr(t, '}');
            if (!t)
                return false;
            t++;
            continue;
        }
        if (*t != *path)
            return false;
        t++;
        path++;
    }
    return *t == '\0' && *path == '\0';
}

int serve_route_match(const char *method, const char *path, serve_match *m, vmctl_error **reterr)
{
    if (!method || !path || !m)
        return vmctl_error_new(reterr, VMCTL_E_INTERNAL, EINVAL, "serve_route_match: no request");
    memset(m, 0, sizeof(*m));
    /* One trailing slash is forgiven ("/v1/vms/"), nothing else is normalised. */
    char buf[1024];
    size_t len = strlen(path);
    if (len >= sizeof(buf))
        return vmctl_error_new(reterr, VMCTL_E_API_ROUTE_NOT_FOUND, ENOENT,
                               "no API route for a path of %zu bytes", len);
    memcpy(buf, path, len + 1);
    if (len > 1 && buf[len - 1] == '/')
        buf[len - 1] = '\0';
    bool path_known = false;
    for (size_t i = 0; i < ELEMENTSOF(routes); i++) {
        serve_match tmp = {0};
        if (!path_matches(routes[i].path, buf, &tmp))
            continue;
        if (streq(routes[i].method, method)) {
            memcpy(m->params, tmp.params, sizeof(m->params));
            m->route = &routes[i];
            return 0;
        }
        size_t used = strlen(m->allowed);
        if (used + strlen(routes[i].method) + 3 < sizeof(m->allowed))
            snprintf(m->allowed + used, sizeof(m->allowed) - used, "%s%s", used ? ", " : "",
                     routes[i].method);
        path_known = true;
    }
    vmctl_error *e = NULL;
    int r;
    if (path_known) {
        r = vmctl_error_new(&e, VMCTL_E_API_METHOD_NOT_ALLOWED, EOPNOTSUPP,
                            "route '%s' does not take %s", buf, method);
        if (e)
            vmctl_error_add_detail(e, "allowed", m->allowed);
    } else {
        r = vmctl_error_new(&e, VMCTL_E_API_ROUTE_NOT_FOUND, ENOENT, "no API route '%s %s'", method,
                            buf);
    }
    if (e)
        vmctl_error_add_detail(e, "path", buf);
    if (reterr)
        *reterr = e;
    else
        vmctl_error_free(e);
    return r;
}

unsigned serve_http_status(vmctl_error_kind kind)
{
    switch (kind) {
    case VMCTL_E_CONFIG_INVALID:
    case VMCTL_E_CLI_USAGE:
    case VMCTL_E_INVALID_ARGUMENT:
    case VMCTL_E_NETWORK_CONFIG_INVALID:
    case VMCTL_E_VMFILE_PARSE_FAILED:
    case VMCTL_E_VMFILE_VALIDATION:
    case VMCTL_E_API_BAD_REQUEST:
        return 400;
    case VMCTL_E_API_UNAUTHORIZED:
        return 401;
    case VMCTL_E_VM_NOT_FOUND:
    case VMCTL_E_IMAGE_NOT_FOUND:
    case VMCTL_E_SNAPSHOT_NOT_FOUND:
    case VMCTL_E_VMFILE_NOT_FOUND:
    case VMCTL_E_API_ROUTE_NOT_FOUND:
        return 404;
    case VMCTL_E_API_METHOD_NOT_ALLOWED:
        return 405;
    case VMCTL_E_VM_ALREADY_EXISTS:
    case VMCTL_E_IMAGE_ALREADY_EXISTS:
    case VMCTL_E_SNAPSHOT_ALREADY_EXISTS:
    case VMCTL_E_VM_INVALID_STATE:
    case VMCTL_E_IMAGE_IN_USE:
    case VMCTL_E_SNAPSHOT_IN_USE:
    case VMCTL_E_SNAPSHOT_INCOMPATIBLE:
    case VMCTL_E_EXEC_UNAVAILABLE:
        return 409;
    case VMCTL_E_API_TOO_LARGE:
        return 413;
    case VMCTL_E_API_NOT_IMPLEMENTED:
        return 501;
    case VMCTL_E_STORE_LOCKED:
        return 503;
    case VMCTL_E_TIMEOUT:
    case VMCTL_E_NETWORK_IP_DISCOVERY_TIMEOUT:
        return 504;
    default:
        return 500;
    }
}

int serve_parse_object(const char *body, size_t len, const char *const *allowed, json_t **ret,
                       vmctl_error **reterr)
{
    if (len > SERVE_MAX_JSON_BODY) {
        int r = vmctl_error_new(reterr, VMCTL_E_API_TOO_LARGE, EFBIG,
                                "request body of %zu bytes is over the limit", len);
        if (reterr && *reterr) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%zu", SERVE_MAX_JSON_BODY);
            vmctl_error_add_detail(*reterr, "limit_bytes", buf);
        }
        return r;
    }
    size_t i = 0;
    while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
        i++;
    json_t *o;
    if (i == len) {
        o = json_object();
    } else {
        json_error_t jerr;
        o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!o)
            return bad_request(reterr, NULL, "request body is not JSON: %s (line %d, column %d)",
                               jerr.text, jerr.line, jerr.column);
    }
    if (!o)
        return vmctl_error_new(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    if (!json_is_object(o)) {
        json_decref(o);
        return bad_request(reterr, NULL, "request body is not a JSON object");
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v)
    {
        bool ok = false;
        for (size_t k = 0; allowed && allowed[k]; k++)
            ok = ok || streq(allowed[k], key);
        if (!ok) {
            int r = bad_request(reterr, key, "unknown field '%s' in the request body", key);
            json_decref(o);
            return r;
        }
    }
    *ret = o;
    return 0;
}

int serve_get_bool(json_t *o, const char *key, bool *ret, vmctl_error **reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return bad_request(reterr, key, "field '%s' must be true or false", key);
    *ret = json_is_true(v);
    return 0;
}

int serve_get_string(json_t *o, const char *key, const char **ret, vmctl_error **reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return bad_request(reterr, key, "field '%s' must be a string", key);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return bad_request(reterr, key, "field '%s' contains a NUL character", key);
    *ret = json_string_value(v);
    return 0;
}

int serve_get_uint(json_t *o, const char *key, unsigned min, unsigned max, unsigned *ret,
                   vmctl_error **reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
        json_integer_value(v) > (json_int_t)max)
        return bad_request(reterr, key, "field '%s' must be an integer from %u to %u", key, min,
                           max);
    *ret = (unsigned)json_integer_value(v);
    return 0;
}

int serve_get_seconds(json_t *o, const char *key, double *ret, vmctl_error **reterr)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    double d = json_is_number(v) ? json_number_value(v) : -1;
    /* 7 days at most, as the CLI's durations */
    if (!json_is_number(v) || !(d >= 0 && d <= 604800.0))
        return bad_request(reterr, key, "field '%s' must be a number of seconds from 0 to 604800",
                           key);
    *ret = d;
    return 0;
}

int serve_get_strv(json_t *o, const char *key, char ***ret, size_t *n, vmctl_error **reterr)
{
    json_t *v = json_object_get(o, key);
    *ret = NULL;
    if (n)
        *n = 0;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return bad_request(reterr, key, "field '%s' must be an array of strings", key);
    size_t count = json_array_size(v);
    char **strv = calloc(count + 1, sizeof(char *));
    if (!strv)
        return vmctl_error_new(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    for (size_t i = 0; i < count; i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s)) {
            free(strv);
            return bad_request(reterr, key, "field '%s' must be an array of strings", key);
        }
        strv[i] = (char *)json_string_value(s);
    }
    *ret = strv;
    if (n)
        *n = count;
    return 0;
}

int serve_parse_bool(const char *key, const char *value, bool def, bool *ret, vmctl_error **reterr)
{
    if (!value) {
        *ret = def;
        return 0;
    }
    if (streq(value, "1") || streq(value, "true") || streq(value, "yes") || streq(value, "")) {
        *ret = true;
        return 0;
    }
    if (streq(value, "0") || streq(value, "false") || streq(value, "no")) {
        *ret = false;
        return 0;
    }
    return bad_request(reterr, key, "query parameter '%s' must be 1 or 0", key);
}

int serve_parse_signal(json_t *v, int *ret, vmctl_error **reterr)
{
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n >= 1 && n < NSIG) {
            *ret = (int)n;
            return 0;
        }
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strncmp(s, "SIG", 3) == 0)
            s += 3;
        for (int i = 1; i < NSIG; i++) {
            const char *abbrev = sigabbrev_np(i);
            if (abbrev && streq(abbrev, s)) {
                *ret = i;
                return 0;
            }
        }
    }
    return bad_request(reterr, "signal", "field 'signal' must be a signal number or name (TERM)");
}

/* --- bodies --- */

static const char *const create_fields[] = {
    "name",       "backend",  "image",   "kernel", "initrd",  "cmdline",       "vcpus",
    "memory_mib", "disk_gib", "machine", "accel",  "net",     "ports",         "env",
    "cloud_init", "ssh_key",  "start",   "wait",   "timeout", "snapshottable", NULL,
};

int serve_parse_create(const char *body, size_t len, serve_create *ret, vmctl_error **reterr)
{
    memset(ret, 0, sizeof(*ret));
    /* before the first goto fail: a jump past them would free an uninitialised pointer */
    cleanup_free char **ports = NULL;
    size_t n_ports = 0;
    int r = serve_parse_object(body, len, create_fields, &ret->doc, reterr);
    if (r < 0)
        return r;
    json_t *o = ret->doc;
    vmctl_vm_config *c = &ret->config;
    if ((r = serve_get_string(o, "name", &c->name, reterr)) < 0 ||
        (r = serve_get_string(o, "backend", &c->backend, reterr)) < 0 ||
        (r = serve_get_string(o, "image", &c->image, reterr)) < 0 ||
        (r = serve_get_string(o, "kernel", &c->kernel, reterr)) < 0 ||
        (r = serve_get_string(o, "initrd", &c->initrd, reterr)) < 0 ||
        (r = serve_get_string(o, "cmdline", &c->cmdline, reterr)) < 0 ||
        (r = serve_get_uint(o, "vcpus", 1, 1024, &c->vcpus, reterr)) < 0 ||
        (r = serve_get_uint(o, "memory_mib", 1, 16u << 20, &c->memory_mib, reterr)) < 0 ||
        (r = serve_get_uint(o, "disk_gib", 1, 1u << 16, &c->disk_gib, reterr)) < 0 ||
        (r = serve_get_string(o, "machine", &c->machine, reterr)) < 0 ||
        (r = serve_get_string(o, "accel", &c->accel, reterr)) < 0 ||
        (r = serve_get_string(o, "net", &c->net, reterr)) < 0 ||
        (r = serve_get_string(o, "cloud_init", &c->cloud_init, reterr)) < 0 ||
        (r = serve_get_string(o, "ssh_key", &c->ssh_key, reterr)) < 0 ||
        (r = serve_get_bool(o, "snapshottable", &c->snapshottable, reterr)) < 0 ||
        (r = serve_get_bool(o, "start", &ret->start, reterr)) < 0 ||
        (r = serve_get_bool(o, "wait", &ret->wait, reterr)) < 0 ||
        (r = serve_get_seconds(o, "timeout", &ret->timeout, reterr)) < 0)
        goto fail;
    if (!c->name) {
        r = bad_request(reterr, "name", "field 'name' is required");
        goto fail;
    }
    size_t n_env = 0;
    if ((r = serve_get_strv(o, "env", &ret->env, &n_env, reterr)) < 0)
        goto fail;
    c->env = ret->env;
    if ((r = serve_get_strv(o, "ports", &ports, &n_ports, reterr)) < 0)
        goto fail;
    if (n_ports > 0) {
        ret->ports = calloc(n_ports, sizeof(*ret->ports));
        if (!ret->ports) {
            r = vmctl_error_new(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
            goto fail;
        }
        for (size_t i = 0; i < n_ports; i++)
            if ((r = vmctl_port_forward_parse(ports[i], &ret->ports[i], reterr)) < 0)
                goto fail;
        c->ports = ret->ports;
        c->n_ports = n_ports;
    }
    return 0;
fail:
    serve_create_done(ret);
    return r;
}

void serve_create_done(serve_create *c)
{
    free(c->ports);
    free(c->env);
    json_decref(c->doc);
    memset(c, 0, sizeof(*c));
}

static const char *const exec_fields[] = {
    "argv", "env", "cwd", "user", "timeout", "stdin", "stdin_open", "tty", "rows", "cols", NULL,
};

int serve_parse_exec(const char *body, size_t len, serve_exec *ret, vmctl_error **reterr)
{
    memset(ret, 0, sizeof(*ret));
    int r = serve_parse_object(body, len, exec_fields, &ret->doc, reterr);
    if (r < 0)
        return r;
    json_t *o = ret->doc;
    vmctl_exec_opts *x = &ret->opts;
    size_t n_argv = 0;
    const char *in = NULL;
    if ((r = serve_get_strv(o, "argv", &ret->argv, &n_argv, reterr)) < 0 ||
        (r = serve_get_strv(o, "env", &ret->env, NULL, reterr)) < 0 ||
        (r = serve_get_string(o, "cwd", &x->cwd, reterr)) < 0 ||
        (r = serve_get_string(o, "user", &x->user, reterr)) < 0 ||
        (r = serve_get_seconds(o, "timeout", &x->timeout_sec, reterr)) < 0 ||
        (r = serve_get_string(o, "stdin", &in, reterr)) < 0 ||
        (r = serve_get_bool(o, "stdin_open", &ret->stdin_open, reterr)) < 0 ||
        (r = serve_get_bool(o, "tty", &x->tty, reterr)) < 0 ||
        (r = serve_get_uint(o, "rows", 0, 65535, &x->tty_rows, reterr)) < 0 ||
        (r = serve_get_uint(o, "cols", 0, 65535, &x->tty_cols, reterr)) < 0)
        goto fail;
    if (n_argv == 0) {
        r = bad_request(reterr, "argv", "field 'argv' is required: a non-empty array of strings");
        goto fail;
    }
    if (in && serve_base64_decode(in, strlen(in), &ret->stdin_data, &x->stdin_len) < 0) {
        r = bad_request(reterr, "stdin", "field 'stdin' is not base64");
        goto fail;
    }
    x->argv = ret->argv;
    x->env = ret->env;
    x->stdin_data = ret->stdin_data;
    return 0;
fail:
    serve_exec_done(ret);
    return r;
}

void serve_exec_done(serve_exec *e)
{
    free(e->argv);
    free(e->env);
    free(e->stdin_data);
    free(e->owned[0]);
    free(e->owned[1]);
    json_decref(e->doc);
    memset(e, 0, sizeof(*e));
}

/* --- base64 --- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *serve_base64_encode(const void *data, size_t len)
{
    const unsigned char *p = data;
    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < len)
            v |= p[i + 2];
        out[o++] = b64[v >> 18 & 63];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? b64[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

int serve_base64_decode(const char *s, size_t len, void **ret, size_t *ret_len)
{
    if (len % 4 != 0)
        return -EINVAL;
    unsigned char *out = malloc(len / 4 * 3 + 1);
    if (!out)
        return -ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        size_t pad = 0;
        for (size_t k = 0; k < 4; k++) {
            if (s[i + k] == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (pad > 0 || (v[k] = b64_value(s[i + k])) < 0) {
                free(out);
                return -EINVAL;
            }
        }
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | v[3];
        out[o++] = x >> 16 & 0xff;
        if (pad < 2)
            out[o++] = x >> 8 & 0xff;
        if (pad < 1)
            out[o++] = x & 0xff;
    }
    *ret = out;
    *ret_len = o;
    return 0;
}
