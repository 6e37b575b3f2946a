/* SPDX-License-Identifier: MIT */
/* Our own QMP client: greeting, capability negotiation, commands with deadlines, events
 * skipped. Deadlines are absolute CLOCK_MONOTONIC usec (util's now_usec()); a deadline already
 * past still allows what is immediately possible.
 *
 * Errors (return value, and the error's code):
 *   -errno of connect(), qemu::qmp_connect_failed (detail path): the socket cannot be reached
 *       (qmp_connect retries while it is missing or refusing, until the deadline);
 *   -ECONNRESET, qemu::qmp_connect_failed: QEMU closed the connection before its greeting;
 *   -ECONNRESET, qemu::qmp_command_failed: QEMU closed it before replying (expected after
 *       "quit"); the connection is then unusable (-ENOTCONN for further commands);
 *   -EIO (-EOPNOTSUPP for CommandNotFound), qemu::qmp_command_failed: QEMU's error reply, with
 *       QEMU's desc as a note and details command and class;
 *   -EMSGSIZE, qemu::qmp_command_failed: a line longer than 16 MiB;
 *   -ETIMEDOUT, timeout (details operation "qmp <command>" or "qmp greeting",
 *       timeout_seconds): the deadline passed; a reply arriving later is skipped by id. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include <vmctl/error.h>

typedef struct qmp qmp;

int qmp_connect(const char *socket_path, uint64_t deadline, qmp **ret, vmctl_error **reterr);
/* Wrap an already connected fd (takes ownership); for tests and socketpairs. */
int qmp_connect_fd(int fd, uint64_t deadline, qmp **ret, vmctl_error **reterr);
/* args may be NULL (borrowed). *ret gets the "return" value (new reference) when ret != NULL. */
int qmp_execute(qmp *q, const char *command, json_t *args, json_t **ret, uint64_t deadline,
                vmctl_error **reterr);
/* QMP getfd: pass fd (SCM_RIGHTS; the caller keeps its copy) under fdname, for commands that take
 * "fd:NAME" (migrate, migrate-incoming). */
int qmp_getfd(qmp *q, int fd, const char *fdname, uint64_t deadline, vmctl_error **reterr);
void qmp_close(qmp *q);

/* The parser of what QEMU sends, without I/O (tests/fuzz/fuzz-qmp.c): one line, NUL-terminated,
 * read while request id (named command) is outstanding. QMP_REPLY_SKIP for what is not its
 * reply (not JSON, not an object, an event, a greeting, a late reply to another id); 0 for its
 * {"return": ...} (*ret: the value, a new reference, when ret != NULL); QEMU's {"error": ...}
 * as above (-EIO or -EOPNOTSUPP, qemu::qmp_command_failed). */
#define QMP_REPLY_SKIP 1
int qmp_parse_reply(const char *line, uint64_t id, const char *command, json_t **ret,
                    vmctl_error **reterr);
/* Is the line QEMU's greeting ({"QMP": {...}})? ret_version (may be NULL): the version it names,
 * "MAJOR.MINOR.MICRO" (malloc'd), NULL when it names none. */
bool qmp_parse_greeting(const char *line, char **ret_version);
/* "MAJOR.MINOR.MICRO" (malloc'd) of {"qemu": {"major": ..., "minor": ..., "micro": ...}}, the
 * version object of the greeting and of query-version; NULL when v is not one. */
char *qmp_version_string(json_t *v);
/* The version QEMU's greeting named on this connection ("7.2.0"), NULL when it named none. */
const char *qmp_version(const qmp *q);
static inline void qmp_closep(qmp **q)
{
    qmp_close(*q);
}
#define cleanup_qmp __attribute__((cleanup(qmp_closep)))
