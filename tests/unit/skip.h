/* SPDX-License-Identifier: MIT */
/* Skips in the cmocka tests say what the host is missing, the way tests/integration/lib.sh's do:
 * one "SKIP: <reason>" line on stdout, which scripts/test.sh counts as a skip (also when the
 * binary as a whole passes). Under CI=true a skip is a failure (CI installs everything
 * scripts/install-deps.sh names, runs as root and builds the default guest first) unless `lacks`
 * names a thing the host may truly lack: one of skip_ci_may_lack, devices no package provides.
 *
 *   skip_test(lacks, fmt, ...)         inside a cmocka test: skip it (or fail it under CI=true)
 *   skip_part(lacks, fmt, ...)         inside a cmocka test: a part of it is skipped, it goes on
 *   return skip_exit(lacks, fmt, ...); from main() or a group setup: 77, or 1 under CI=true
 *
 * lacks is NULL for anything CI must have (a tool, root, the default guest). */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const skip_ci_may_lack[] = {"/dev/kvm", "/dev/vhost-vsock"};

/* Prints the SKIP line, or under CI=true (when not allowed) the FAIL line; true when allowed. */
static inline bool __attribute__((format(printf, 2, 0)))
skip_vreport(const char *lacks, const char *fmt, va_list ap)
{
    char reason[512];
    vsnprintf(reason, sizeof(reason), fmt, ap);
    const char *ci = getenv("CI");
    bool allowed = !ci || strcmp(ci, "true") != 0;
    for (size_t i = 0;
         !allowed && lacks && i < sizeof(skip_ci_may_lack) / sizeof(*skip_ci_may_lack); i++)
        allowed = strcmp(lacks, skip_ci_may_lack[i]) == 0;
    if (allowed)
        printf("SKIP: %s%s%s%s\n", reason, lacks ? " (the host lacks " : "", lacks ? lacks : "",
               lacks ? ")" : "");
    else
        printf("FAIL: skipped under CI=true: %s (only a missing /dev/kvm or /dev/vhost-vsock may "
               "skip in CI)\n",
               reason);
    fflush(stdout);
    return allowed;
}

static inline bool __attribute__((format(printf, 2, 3)))
skip_report(const char *lacks, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool allowed = skip_vreport(lacks, fmt, ap);
    va_end(ap);
    return allowed;
}

static inline int __attribute__((format(printf, 2, 3)))
skip_exit(const char *lacks, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool allowed = skip_vreport(lacks, fmt, ap);
    va_end(ap);
    return allowed ? 77 : 1;
}

#define skip_test(lacks, ...)                                                                      \
    do {                                                                                           \
        if (skip_report(lacks, __VA_ARGS__))                                                       \
            skip();                                                                                \
        else                                                                                       \
            fail_msg("a skip under CI=true is a failure");                                         \
    } while (0)

#define skip_part(lacks, ...)                                                                      \
    do {                                                                                           \
        if (!skip_report(lacks, __VA_ARGS__))                                                      \
            fail_msg("a skip under CI=true is a failure");                                         \
    } while (0)
