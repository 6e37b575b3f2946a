/* SPDX-License-Identifier: MIT */
/* bench/exec-rtt SOCKET N [CMD [IDLE_MS]]: on one agent connection, N echo round trips (PING/PONG:
 * the floor of the channel) and N execs of CMD (default `true`) through the library's exec path
 * (agent_proc_exec + wait), alternating so both see the same machine load. Prints p50/p99 in ms.
 * With IDLE_MS, only execs, each on a new session after IDLE_MS without traffic: connect, session
 * ping and exec timed together, as one `vmctl exec` process does them (under TCG an idle guest
 * answers several ms slower than a busy one, so this is the library figure to hold the CLI to).
 * Compiled by bench/exec-bench.sh against the library sources. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent-client.h"
#include "error.h"
#include "util/util.h"

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    printf("%-28s p50 %7.3f ms   p99 %7.3f ms\n", what, (double)v[n / 2] / 1e3,
           (double)v[(n * 99) / 100] / 1e3);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    int n = atoi(argv[2]);
    uint64_t *ping = calloc((size_t)n, sizeof(uint64_t)), *ex = calloc((size_t)n, sizeof(uint64_t));
    cleanup_error vmctl_error *e = NULL;
    cleanup_agent agent_conn *c = NULL;
    uint64_t deadline = now_usec() + 30 * 1000000ull;
    if (agent_connect(argv[1], deadline, &c, &e) < 0 || agent_ping(c, deadline, &e) < 0) {
        fprintf(stderr, "%s\n", vmctl_error_get_message(e));
        return 1;
    }
    char *cmd[] = {argc > 3 ? argv[3] : "true", NULL};
    vmctl_exec_opts opts = {.argv = cmd};
    /* IDLE_MS: the CLI's cadence - the guest idles IDLE_MS before each exec, which runs on a
     * fresh connection (connect, session ping, exec, close), as one `vmctl exec` does */
    int idle_ms = argc > 4 ? atoi(argv[4]) : -1;
    for (int i = 0; i < n; i++) {
        if (idle_ms >= 0) {
            agent_close(c);
            c = NULL;
            sleep_usec((uint64_t)idle_ms * 1000);
        }
        uint64_t t0 = now_usec();
        if (idle_ms >= 0 && agent_connect(argv[1], t0 + 10000000, &c, &e) < 0)
            return 1;
        if (agent_ping(c, UINT64_MAX, &e) < 0)
            return 1;
        uint64_t t1 = now_usec();
        agent_proc *p = NULL;
        vmctl_exec_status st;
        if (agent_proc_exec(c, &opts, false, NULL, NULL, UINT64_MAX, &p, &e) < 0 ||
            agent_proc_wait(p, UINT64_MAX, &st, &e) < 0) {
            fprintf(stderr, "%s\n", vmctl_error_get_message(e));
            return 1;
        }
        agent_proc_free(p);
        ping[i] = t1 - t0;
        ex[i] = now_usec() - (idle_ms >= 0 ? t0 : t1);
    }
    if (idle_ms >= 0) {
        char what[80];
        snprintf(what, sizeof(what), "library, new session, %d ms idle", idle_ms);
        report(what, ex, n);
        return 0;
    }
    report("echo round trip (floor)", ping, n);
    char what[64];
    snprintf(what, sizeof(what), "library exec of %s",
             strrchr(cmd[0], '/') ? strrchr(cmd[0], '/') + 1 : cmd[0]);
    report(what, ex, n);
    return 0;
}
