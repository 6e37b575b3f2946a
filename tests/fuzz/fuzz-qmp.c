/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the QMP reply parser (src/lib/qmp.c: qmp_parse_reply, qmp_parse_greeting),
 * what the host makes of the lines QEMU sends on its QMP socket. The input is that stream: each
 * line (split at '\n', as the client reads them) is parsed as the reply to request 1 and again to
 * request 2 (a late reply to the other id must be skipped). Checks: the result is a skip, a
 * return value (a new reference), or QEMU's error as qemu::qmp_command_failed naming the
 * command; the same with ret and reterr NULL; nothing leaks. Built by meson -Dfuzz=true
 * (tests/fuzz/meson.build) and run by tests/fuzz/run.sh; corpus tests/fuzz/corpus/fuzz-qmp
 * (QEMU 7.2's greeting, replies, errors and events). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz-qmp: check failed: %s (line %d)\n", #cond, __LINE__);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void parse_one(const char *line, uint64_t id)
{
    /* a fresh object: a singleton such as json_true() is what {"return": true} returns */
    json_t *sentinel = json_object();
    CHECK(sentinel);
    json_t *ret = sentinel;
    vmctl_error *e = NULL;
    int r = qmp_parse_reply(line, id, "query-status", &ret, &e);
    CHECK(r == QMP_REPLY_SKIP || r == 0 || r == -EIO || r == -EOPNOTSUPP);
    if (r == 0) {
        CHECK(ret && ret != sentinel && !e);
        json_decref(ret);
    } else if (r < 0) {
        CHECK(ret == sentinel && e);
        CHECK(strcmp(vmctl_error_get_code(e), "vm_manager::qemu::qmp_command_failed") == 0);
        CHECK(strcmp(vmctl_error_find_detail(e, "command"), "query-status") == 0);
        CHECK(vmctl_error_get_message(e) && vmctl_error_get_errno(e) == -r);
    } else {
        CHECK(ret == sentinel && !e);
    }
    vmctl_error_free(e);
    json_decref(sentinel);
    /* without places for the results: the same verdict */
    CHECK(qmp_parse_reply(line, id, "query-status", NULL, NULL) == r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = 0;
    char *line = buf;
    for (;;) {
        char *nl = memchr(line, '\n', size - (size_t)(line - buf));
        if (nl)
            *nl = 0;
        char *version = NULL;
        (void)qmp_parse_greeting(line, &version);
        free(version);
        parse_one(line, 1);
        parse_one(line, 2);
        if (!nl)
            break;
        line = nl + 1;
    }
    free(buf);
    return 0;
}
