/* SPDX-License-Identifier: MIT */
/* Drives libvmctl's streaming exec API against a running VM (used by tests/integration/
 * test-agent.sh and bench/exec-bench.sh; compiled by them against build/src/lib/libvmctl.so).
 *
 *   exec-many HOME VM concurrent N        N commands at once on one session: each sleeps 1 s and
 *                                         prints its index; checks every output and exit code,
 *                                         prints "elapsed S"
 *   exec-many HOME VM bench N             N warm execs of `true` on one session, then N pings
 *                                         (vmctl_guest_info, the echo floor): p50/p99 in ms
 *   exec-many HOME VM info                guest info
 *   exec-many HOME VM metadata HOST K=V SECRETNAME SECRETVALUE */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vmctl/vmctl.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct out {
    char buf[64];
    size_t len;
};

static int on_out(const void *d, size_t n, void *u)
{
    struct out *o = u;
    if (o->len + n < sizeof(o->buf)) {
        memcpy(o->buf + o->len, d, n);
        o->len += n;
    }
    return 0;
}

static int die(vmctl_error *e)
{
    fprintf(stderr, "error: %s: %s\n", vmctl_error_get_code(e), vmctl_error_get_message(e));
    return 1;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void pct(const char *what, double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp);
    printf("%s p50 %.3f ms p99 %.3f ms\n", what, v[n / 2] * 1e3, v[(n * 99) / 100] * 1e3);
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    vmctl_ctx *ctx = NULL;
    vmctl_error *e = NULL;
    if (vmctl_ctx_new(argv[1], &ctx, &e) < 0)
        return die(e);
    const char *vm = argv[2], *mode = argv[3];
    if (strcmp(mode, "info") == 0) {
        vmctl_guest_info in;
        if (vmctl_guest_info_get(ctx, vm, &in, &e) < 0)
            return die(e);
        printf("uptime %.1f mem_total %llu mem_available %llu load %.2f running %u\n",
               in.uptime_sec, in.mem_total, in.mem_available, in.load[0], in.running);
        return 0;
    }
    if (strcmp(mode, "metadata") == 0 && argc == 8) {
        char *env[] = {argv[5], NULL};
        char *names[] = {argv[6], NULL};
        const void *vals[] = {argv[7]};
        size_t lens[] = {strlen(argv[7])};
        if (vmctl_guest_push_metadata(ctx, vm, argv[4], env, names, vals, lens, &e) < 0)
            return die(e);
        return 0;
    }
    int n = argc > 4 ? atoi(argv[4]) : 16;
    vmctl_exec_session *s = NULL;
    if (vmctl_exec_session_open(ctx, vm, &s, &e) < 0)
        return die(e);
    if (strcmp(mode, "concurrent") == 0) {
        vmctl_exec_proc **p = calloc((size_t)n, sizeof(*p));
        struct out *o = calloc((size_t)n, sizeof(*o));
        char(*envs)[32] = calloc((size_t)n, 32);
        double t0 = now();
        for (int i = 0; i < n; i++) {
            snprintf(envs[i], 32, "I=%d", i);
            char *env[] = {envs[i], NULL};
            char *cmd[] = {"sh", "-c", "sleep 1; echo $I; exit $((I % 7))", NULL};
            vmctl_exec_opts opts = {.argv = cmd, .env = env};
            vmctl_exec_io io = {.on_stdout = on_out, .userdata = &o[i]};
            if (vmctl_exec_start(s, &opts, &io, &p[i], &e) < 0)
                return die(e);
        }
        int bad = 0;
        for (int i = 0; i < n; i++) {
            vmctl_exec_status st;
            if (vmctl_exec_wait(p[i], &st, &e) < 0)
                return die(e);
            char want[16];
            snprintf(want, sizeof(want), "%d\n", i);
            if (st.exit_code != i % 7 || o[i].len != strlen(want) ||
                memcmp(o[i].buf, want, o[i].len) != 0) {
                printf("proc %d: exit %d output '%.*s'\n", i, st.exit_code, (int)o[i].len,
                       o[i].buf);
                bad++;
            }
            vmctl_exec_proc_free(p[i]);
        }
        printf("elapsed %.2f\n", now() - t0);
        printf("%s\n", bad ? "MISMATCH" : "all ok");
        return bad != 0;
    }
    if (strcmp(mode, "bench") == 0) {
        double *t = calloc((size_t)n, sizeof(double));
        char *cmd[] = {"true", NULL};
        vmctl_exec_opts opts = {.argv = cmd};
        for (int i = 0; i < n; i++) {
            double t0 = now();
            vmctl_exec_proc *p = NULL;
            vmctl_exec_status st;
            if (vmctl_exec_start(s, &opts, NULL, &p, &e) < 0 || vmctl_exec_wait(p, &st, &e) < 0)
                return die(e);
            vmctl_exec_proc_free(p);
            t[i] = now() - t0;
        }
        pct("library exec true:", t, n);
        return 0;
    }
    return 2;
}
