/* SPDX-License-Identifier: MIT */
/* ttRPC framing (containerd's unix-socket RPC): a 10-byte header, length (4, big-endian), stream
 * id (4, big-endian), type (1: request, 2: response, 3: data), flags (1), then length bytes of
 * protobuf (a vmctl.ttrpc.Request or Response, ttrpc.proto). The base of the shim (issue 13). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define TTRPC_HEADER_SIZE 10
#define TTRPC_MAX_MESSAGE (4u << 20) /* ttrpc's messageLengthMax */

enum { TTRPC_TYPE_REQUEST = 1, TTRPC_TYPE_RESPONSE = 2, TTRPC_TYPE_DATA = 3 };

typedef struct ttrpc_header {
    uint32_t length;
    uint32_t stream_id;
    uint8_t type;
    uint8_t flags;
} ttrpc_header;

void ttrpc_header_encode(const ttrpc_header *h, uint8_t out[TTRPC_HEADER_SIZE]);
/* 0, or -EMSGSIZE when length is over TTRPC_MAX_MESSAGE. */
int ttrpc_header_decode(const uint8_t in[TTRPC_HEADER_SIZE], ttrpc_header *ret);

/* One frame on fd: 0, or -errno (-ECONNRESET on EOF mid-frame, -ENODATA on EOF before it).
 * read: *ret_payload malloc'd (h->length bytes). */
int ttrpc_frame_write(int fd, const ttrpc_header *h, const void *payload);
int ttrpc_frame_read(int fd, ttrpc_header *h, uint8_t **ret_payload);
