/* SPDX-License-Identifier: MIT */
/* bench/exec-cli VMCTL VM SOCKET N: what the CLI adds to an exec. Interleaved, N times each:
 * (a) the library as one `vmctl exec` process uses it - connect to the VM's agent socket, session
 * ping, exec `true`, close; (b) `vmctl exec VM -- true` spawned and waited for; (c) `vmctl
 * --version` spawned and waited for (the process start alone). Timed here with CLOCK_MONOTONIC
 * around each, so no shell or date(1) start is in the figures. Prints p50/p99 and b - a. Compiled
 * by bench/exec-bench.sh against the library sources. */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "agent-client.h"
#include "error.h"
#include "util/util.h"

extern char **environ;

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, int n, int p)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    return (double)v[(n * p) / 100 >= n ? n - 1 : (n * p) / 100] / 1e3;
}

static uint64_t run(char **argv)
{
    uint64_t t0 = now_usec();
    pid_t pid;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
        exit(1);
    posix_spawn_file_actions_destroy(&fa);
    int st;
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        exit(1);
    return now_usec() - t0;
}

int main(int argc, char **argv)
{
    if (argc < 5)
        return 2;
    int n = atoi(argv[4]);
    uint64_t *lib = calloc((size_t)n, 8), *cli = calloc((size_t)n, 8), *ver = calloc((size_t)n, 8);
    char *cmd[] = {"true", NULL};
    vmctl_exec_opts opts = {.argv = cmd};
    char *exec_argv[] = {argv[1], "exec", argv[2], "--", "true", NULL};
    char *ver_argv[] = {argv[1], "--version", NULL};
    for (int i = 0; i < n; i++) {
        cleanup_error vmctl_error *e = NULL;
        uint64_t t0 = now_usec();
        agent_conn *c = NULL;
        agent_proc *p = NULL;
        vmctl_exec_status st;
        if (agent_connect(argv[3], t0 + 10000000, &c, &e) < 0 ||
            agent_ping(c, UINT64_MAX, &e) < 0 ||
            agent_proc_exec(c, &opts, false, NULL, NULL, UINT64_MAX, &p, &e) < 0 ||
            agent_proc_wait(p, UINT64_MAX, &st, &e) < 0) {
            fprintf(stderr, "%s\n", vmctl_error_get_message(e));
            return 1;
        }
        agent_proc_free(p);
        agent_close(c);
        lib[i] = now_usec() - t0;
        cli[i] = run(exec_argv);
        ver[i] = run(ver_argv);
    }
    double l50 = pct(lib, n, 50), l99 = pct(lib, n, 99), c50 = pct(cli, n, 50),
           c99 = pct(cli, n, 99), v50 = pct(ver, n, 50), v99 = pct(ver, n, 99);
    printf("%-36s p50 %7.3f ms   p99 %7.3f ms\n", "library: connect, ping, exec, close", l50, l99);
    printf("%-36s p50 %7.3f ms   p99 %7.3f ms\n", "CLI: vmctl exec VM -- true", c50, c99);
    printf("%-36s p50 %7.3f ms   p99 %7.3f ms\n", "CLI process alone: vmctl --version", v50, v99);
    printf("CLI adds (p50 CLI - p50 library)     %7.3f ms\n", c50 - l50);
    return 0;
}
