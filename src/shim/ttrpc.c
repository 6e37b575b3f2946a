/* SPDX-License-Identifier: MIT */
/* ttRPC framing (ttrpc.h). */
#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "ttrpc.h"

void ttrpc_header_encode(const ttrpc_header *h, uint8_t out[TTRPC_HEADER_SIZE])
{
    for (int i = 0; i < 4; i++) {
        out[i] = (uint8_t)(h->length >> (24 - 8 * i));
        out[4 + i] = (uint8_t)(h->stream_id >> (24 - 8 * i));
    }
    out[8] = h->type;
    out[9] = h->flags;
}

int ttrpc_header_decode(const uint8_t in[TTRPC_HEADER_SIZE], ttrpc_header *ret)
{
    ttrpc_header h = {.type = in[8], .flags = in[9]};
    for (int i = 0; i < 4; i++) {
        h.length = h.length << 8 | in[i];
        h.stream_id = h.stream_id << 8 | in[4 + i];
    }
    if (h.length > TTRPC_MAX_MESSAGE)
        return -EMSGSIZE;
    *ret = h;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* 0, -ENODATA at EOF before any byte, -ECONNRESET at EOF after some */
static int read_all(int fd, uint8_t *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, p + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return got ? -ECONNRESET : -ENODATA;
        got += (size_t)k;
    }
    return 0;
}

int ttrpc_frame_write(int fd, const ttrpc_header *h, const void *payload)
{
    if (h->length > TTRPC_MAX_MESSAGE)
        return -EMSGSIZE;
    uint8_t hdr[TTRPC_HEADER_SIZE];
    ttrpc_header_encode(h, hdr);
    int r = write_all(fd, hdr, sizeof(hdr));
    return r < 0 ? r : write_all(fd, payload, h->length);
}

int ttrpc_frame_read(int fd, ttrpc_header *h, uint8_t **ret_payload)
{
    uint8_t hdr[TTRPC_HEADER_SIZE];
    int r = read_all(fd, hdr, sizeof(hdr));
    if (r < 0)
        return r;
    if ((r = ttrpc_header_decode(hdr, h)) < 0)
        return r;
    uint8_t *p = malloc(h->length ? h->length : 1);
    if (!p)
        return -ENOMEM;
    if ((r = read_all(fd, p, h->length)) < 0) {
        free(p);
        return r == -ENODATA && h->length ? -ECONNRESET : r;
    }
    *ret_payload = p;
    return 0;
}
