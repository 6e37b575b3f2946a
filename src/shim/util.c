/* SPDX-License-Identifier: MIT */
/* What every part of the shim shares: its flags, its log, the gRPC-style failure of a request,
 * a context on the VM store, and the names a task's VM and socket get. */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

shim_args shim_opts;

void shim_log(const char *fmt, ...)
{
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int h = snprintf(buf, sizeof(buf), "containerd-shim-vmctl-v2 %02d:%02d:%02d.%03ld [%d] ",
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + h, sizeof(buf) - 1 - (size_t)h, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    n += h;
    if ((size_t)n > sizeof(buf) - 2)
        n = (int)sizeof(buf) - 2;
    buf[n++] = '\n';
    /* containerd reads the log FIFO (stderr of the serving shim); never block on it */
    if (write(STDERR_FILENO, buf, (size_t)n) < 0)
        return;
}

int shim_fail(shim_status *st, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
    va_end(ap);
    st->code = code;
    return -1;
}

int shim_ctx(vmctl_ctx **ret, vmctl_error **reterr)
{
    return vmctl_ctx_new(NULL, ret, reterr);
}

static uint64_t fnv64(const char *a, const char *b)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *s = a; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    h = (h ^ '/') * 0x100000001b3ULL;
    for (const char *s = b; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

/* "ctd-HASH-ID" (a valid VM name: at most 63 of [A-Za-z0-9_.-]) */
char *shim_vm_name(const char *ns, const char *id)
{
    char *name = NULL;
    char clean[32];
    size_t k = 0;
    for (const char *s = id; *s && k < sizeof(clean) - 1; s++)
        clean[k++] = (char)((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                                    (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'
                                ? *s
                                : '_');
    clean[k] = 0;
    if (asprintf(&name, "ctd-%012llx-%s", (unsigned long long)(fnv64(ns, id) & 0xffffffffffffULL),
                 clean) < 0)
        return NULL;
    return name;
}

const char *shim_socket_dir(void)
{
    return geteuid() == 0 ? "/run/vmctl-shim" : "/tmp/vmctl-shim";
}

char *shim_socket_path(const char *ns, const char *id)
{
    char *p = NULL;
    /* containerd's address is part of the hash: two containerds, two sockets */
    uint64_t h = fnv64(shim_opts.address ? shim_opts.address : "", ns) ^ fnv64(ns, id);
    if (asprintf(&p, "%s/%016llx.sock", shim_socket_dir(), (unsigned long long)h) < 0)
        return NULL;
    return p;
}
