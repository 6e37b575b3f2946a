/* SPDX-License-Identifier: MIT */
/* Our own QMP client: greeting, capability negotiation, commands with deadlines, events
 * skipped. Errors: qemu::qmp_connect_failed, qemu::qmp_command_failed (QEMU's desc as a note),
 * timeout (operation "qmp"). */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include <vmctl/error.h>

typedef struct qmp qmp;

int qmp_connect(const char *socket_path, uint64_t deadline, qmp **ret, vmctl_error **reterr);
/* Wrap an already connected fd (takes ownership); for tests and socketpairs. */
int qmp_connect_fd(int fd, uint64_t deadline, qmp **ret, vmctl_error **reterr);
/* args may be NULL (borrowed). *ret gets the "return" value (new reference) when ret != NULL. */
int qmp_execute(qmp *q, const char *command, json_t *args, json_t **ret, uint64_t deadline,
                vmctl_error **reterr);
void qmp_close(qmp *q);
static inline void qmp_closep(qmp **q)
{
    qmp_close(*q);
}
#define cleanup_qmp __attribute__((cleanup(qmp_closep)))
