/* SPDX-License-Identifier: MIT */
/* The one set of small macros and cleanup helpers shared by the library (src/lib), the CLI
 * (src/cli), the guest agent (src/agent, a static binary) and the protocol codec (src/proto):
 * header-only and libc-only, so every target can include it without linking anything. Cleanup
 * helpers for libvmctl's public objects (vmctl_error, vmctl_vm_info) are in vmctl-cleanup.h. */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _unused_      __attribute__((unused))
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void freep(void *p)
{
    free(*(void **)p);
}
static inline void closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}
static inline void fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}

/* static inline void NAMEp(type **p) calling func(*p) when *p is non-NULL, for cleanup_NAME. */
#define DEFINE_POINTER_CLEANUP(name, type, func)                                                   \
    static inline void name##p(type **p)                                                           \
    {                                                                                              \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }

#define cleanup_free   __attribute__((cleanup(freep)))
#define cleanup_close  __attribute__((cleanup(closep)))
#define cleanup_fclose __attribute__((cleanup(fclosep)))

#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _tp = (p);                                                                   \
        (p) = NULL;                                                                                \
        _tp;                                                                                       \
    })
#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _tf = (fd);                                                                            \
        (fd) = -1;                                                                                 \
        _tf;                                                                                       \
    })

/* Return a negative errno, never 0 (for paths where errno may be unset). */
static inline int neg_errno(void)
{
    return errno > 0 ? -errno : -EIO;
}

#define streq(a, b) (strcmp((a), (b)) == 0)
