/* SPDX-License-Identifier: MIT */
/* bench/agent-ping SOCKET [TIMEOUT_S]: wait until the guest agent behind SOCKET answers a ping.
 * The baseline half of the time-to-ready benchmark: it is what a hand-written QEMU command line
 * needs at the least to know the guest is ready, with no store and no orchestration. */
#include <stdio.h>
#include <stdlib.h>

#include "agent-client.h"
#include "error.h"
#include "util/util.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: agent-ping SOCKET [TIMEOUT_S]\n");
        return 2;
    }
    double timeout = argc > 2 ? atof(argv[2]) : 60;
    uint64_t deadline = now_usec() + (uint64_t)(timeout * 1e6);
    cleanup_error vmctl_error *e = NULL;
    cleanup_agent agent_conn *c = NULL;
    int r = agent_connect(argv[1], deadline, &c, &e);
    if (r >= 0)
        r = agent_wait_ready(c, deadline, NULL, NULL, &e);
    if (r < 0) {
        fprintf(stderr, "agent-ping: %s: %s\n", vmctl_error_get_code(e),
                vmctl_error_get_message(e));
        return 1;
    }
    return 0;
}
