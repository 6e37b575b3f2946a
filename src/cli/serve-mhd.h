/* SPDX-License-Identifier: MIT */
/* libmicrohttpd, loaded on first use (dlopen of its SONAME) so that the other vmctl commands do
 * not load it and GnuTLS under it at every start (docs/architecture.md). Include after
 * <microhttpd.h>: the MHD_* calls of serve.c go through these pointers. */
#pragma once

#include <microhttpd.h>

typedef struct serve_mhd {
    struct MHD_Daemon *(*start_daemon)(unsigned int flags, uint16_t port,
                                       MHD_AcceptPolicyCallback apc, void *apc_cls,
                                       MHD_AccessHandlerCallback dh, void *dh_cls, ...);
    void (*stop_daemon)(struct MHD_Daemon *daemon);
    enum MHD_Result (*queue_response)(struct MHD_Connection *connection, unsigned int status_code,
                                      struct MHD_Response *response);
    void (*destroy_response)(struct MHD_Response *response);
    struct MHD_Response *(*create_response_from_buffer)(size_t size, void *buffer,
                                                        enum MHD_ResponseMemoryMode mode);
    struct MHD_Response *(*create_response_from_callback)(uint64_t size, size_t block_size,
                                                          MHD_ContentReaderCallback crc,
                                                          void *crc_cls,
                                                          MHD_ContentReaderFreeCallback crfc);
    struct MHD_Response *(*create_response_from_fd)(uint64_t size, int fd);
    enum MHD_Result (*add_response_header)(struct MHD_Response *response, const char *header,
                                           const char *content);
    const char *(*lookup_connection_value)(struct MHD_Connection *connection,
                                           enum MHD_ValueKind kind, const char *key);
    const union MHD_ConnectionInfo *(*get_connection_info)(struct MHD_Connection *connection,
                                                           enum MHD_ConnectionInfoType info_type,
                                                           ...);
} serve_mhd;

extern serve_mhd serve_mhd_fn;

#define MHD_start_daemon                  serve_mhd_fn.start_daemon
#define MHD_stop_daemon                   serve_mhd_fn.stop_daemon
#define MHD_queue_response                serve_mhd_fn.queue_response
#define MHD_destroy_response              serve_mhd_fn.destroy_response
#define MHD_create_response_from_buffer   serve_mhd_fn.create_response_from_buffer
#define MHD_create_response_from_callback serve_mhd_fn.create_response_from_callback
#define MHD_create_response_from_fd       serve_mhd_fn.create_response_from_fd
#define MHD_add_response_header           serve_mhd_fn.add_response_header
#define MHD_lookup_connection_value       serve_mhd_fn.lookup_connection_value
#define MHD_get_connection_info           serve_mhd_fn.get_connection_info
