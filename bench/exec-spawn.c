/* SPDX-License-Identifier: MIT */
/* bench/exec-spawn N [MiB [PATH]]: in the guest, N x (fork + execve PATH + wait) against N x
 * (vfork + ...), with MiB of touched heap in the parent; PATH defaults to /bin/true. Shows what
 * starting a command costs the guest under TCG (why the agent uses vfork, and the floor of an
 * exec). Built static by bench/exec-bench.sh and copied into the guest, with bench/exec-tiny.c
 * (the smallest program: exit at once) as the floor of any process start. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static const char *path = "/bin/true";

static double run(int n, int use_vfork)
{
    char *av[] = {"true", NULL};
    double t0 = now_ms();
    for (int i = 0; i < n; i++) {
        pid_t p = use_vfork ? vfork() : fork();
        if (p == 0) {
            execve(path, av, environ);
            _exit(127);
        }
        if (p < 0 || waitpid(p, NULL, 0) != p)
            return -1;
    }
    return (now_ms() - t0) / n;
}

int main(int argc, char **argv)
{
    if (argc > 3)
        path = argv[3];
    int n = argc > 1 ? atoi(argv[1]) : 100;
    size_t mib = argc > 2 ? (size_t)atoi(argv[2]) : 0;
    char *ballast = mib ? malloc(mib << 20) : NULL;
    if (ballast)
        memset(ballast, 1, mib << 20); /* touched heap, as in a busy agent */
    if (n <= 0)
        return 2;
    const char *what = argc > 3 ? argv[3] : "true";
    printf("guest fork+exec+wait %-8s %7.3f ms per run (mean of %d)\n", what, run(n, 0), n);
    printf("guest vfork+exec+wait %-7s %7.3f ms per run (mean of %d)\n", what, run(n, 1), n);
    free(ballast);
    return 0;
}
