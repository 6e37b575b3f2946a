/* SPDX-License-Identifier: MIT */
/* libFuzzer target for vmctl serve's own request parsing (src/cli/serve-route.c): route
 * matching, query values, JSON bodies to vmctl_vm_config and vmctl_exec_opts, base64.
 * libmicrohttpd parses HTTP itself; this is what vmctl does with what it hands over.
 * Input: "METHOD PATH\n", "QUERY-VALUE\n", then the body.
 *
 * fuzz-sources: src/cli/serve-route.c src/lib/vm-spec.c src/lib/error.c src/lib/error-table.c
 *   src/lib/util/util.c (tests/fuzz/meson.build)
 * Its corpus (tests/fuzz/corpus/fuzz-api-request) holds the requests of docs/api.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/cli/serve-route.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz-api-request: check failed: %s (line %d)\n", #cond, __LINE__);    \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_error(vmctl_error *e, int r)
{
    CHECK(r < 0);
    CHECK(e);
    unsigned st = serve_http_status(vmctl_error_get_kind(e));
    CHECK(st >= 400 && st < 600);
    CHECK(vmctl_error_get_message(e));
    vmctl_error_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    char *line = buf, *nl = memchr(buf, '\n', size);
    char *query = NULL, *body = buf + size;
    if (nl) {
        *nl = '\0';
        query = nl + 1;
        char *nl2 = memchr(query, '\n', (size_t)(buf + size - query));
        if (nl2) {
            *nl2 = '\0';
            body = nl2 + 1;
        }
    }
    size_t body_len = (size_t)(buf + size - body);
    char *sp = strchr(line, ' ');
    const char *method = "GET", *path = line;
    if (sp) {
        *sp = '\0';
        method = line;
        path = sp + 1;
    }

    serve_match m;
    vmctl_error *e = NULL;
    int r = serve_route_match(method, path, &m, &e);
    if (r < 0) {
        CHECK(vmctl_error_get_kind(e) == VMCTL_E_API_ROUTE_NOT_FOUND ||
              vmctl_error_get_kind(e) == VMCTL_E_API_METHOD_NOT_ALLOWED);
        check_error(e, r);
        m.route = serve_route_at((size_t)(size % 24));
        memset(m.params, 0, sizeof(m.params));
        if (!m.route) {
            free(buf);
            return 0;
        }
    } else {
        CHECK(m.route && strcmp(m.route->method, method) == 0);
        for (size_t i = 0; i < 2; i++)
            CHECK(!strchr(m.params[i], '/'));
    }

    bool b = false;
    e = NULL;
    r = serve_parse_bool("force", query, false, &b, &e);
    if (r < 0)
        check_error(e, r);

    e = NULL;
    switch (m.route->id) {
    case SERVE_R_VMS_CREATE: {
        serve_create c;
        r = serve_parse_create(body, body_len, &c, &e);
        if (r < 0) {
            check_error(e, r);
        } else {
            CHECK(c.config.name);
            CHECK(c.config.n_ports == 0 || c.config.ports);
            serve_create_done(&c);
        }
        break;
    }
    case SERVE_R_VM_EXEC: {
        serve_exec x;
        r = serve_parse_exec(body, body_len, &x, &e);
        if (r < 0) {
            check_error(e, r);
        } else {
            CHECK(x.opts.argv && x.opts.argv[0]);
            CHECK(x.opts.stdin_len == 0 || x.opts.stdin_data);
            serve_exec_done(&x);
        }
        break;
    }
    default: {
        static const char *const fields[] = {"signal", "wait", "timeout", "rows", NULL};
        json_t *o = NULL;
        r = serve_parse_object(body, body_len, fields, &o, &e);
        if (r < 0) {
            check_error(e, r);
            break;
        }
        int sig = 0;
        double t = 0;
        unsigned rows = 0;
        e = NULL;
        if ((r = serve_parse_signal(json_object_get(o, "signal"), &sig, &e)) < 0)
            check_error(e, r);
        else
            CHECK(sig >= 1 && sig < 65);
        e = NULL;
        if ((r = serve_get_seconds(o, "timeout", &t, &e)) < 0)
            check_error(e, r);
        else
            CHECK(t >= 0 && t <= 604800.0);
        e = NULL;
        if ((r = serve_get_uint(o, "rows", 0, 65535, &rows, &e)) < 0)
            check_error(e, r);
        e = NULL;
        if ((r = serve_get_bool(o, "wait", &b, &e)) < 0)
            check_error(e, r);
        json_decref(o);
        break;
    }
    }

    /* base64: what is encoded decodes back */
    char *enc = serve_base64_encode(body, body_len);
    CHECK(enc);
    void *dec = NULL;
    size_t dec_len = 0;
    CHECK(serve_base64_decode(enc, strlen(enc), &dec, &dec_len) == 0);
    CHECK(dec_len == body_len && memcmp(dec, body, body_len) == 0);
    free(dec);
    free(enc);
    if (serve_base64_decode(body, body_len, &dec, &dec_len) == 0)
        free(dec);
    free(buf);
    return 0;
}
