/* SPDX-License-Identifier: MIT */
/* vmctl serve: the HTTP server (libmicrohttpd), its handlers and its listeners. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vmctl/vmctl.h>

typedef struct serve_opts {
    const char *home;     /* the context's home (NULL: the default) */
    int unix_fd;          /* a bound, listening unix socket, or -1 */
    int tcp_fd;           /* a bound, listening TCP socket, or -1 */
    const char *token;    /* bearer token required on TCP */
    unsigned timeout_sec; /* inactivity timeout of a connection */
    uint64_t max_upload;  /* bytes */
    unsigned max_conns;
} serve_opts;

typedef struct serve_server serve_server;

int serve_start(const serve_opts *opts, serve_server **ret, vmctl_error **reterr);
/* Stops accepting, ends the streams, waits for the connection threads, frees. */
void serve_stop(serve_server *srv);

/* The OpenAPI document built into the binary (serve-openapi.c, generated). */
extern const char serve_openapi[];
extern const size_t serve_openapi_len;
