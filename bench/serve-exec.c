/* SPDX-License-Identifier: MIT */
/* bench/serve-exec VM SOCKET N: exec `true` in VM N times each, interleaved: (a) the library in
 * this process, vmctl_exec() (session, exec, close: what one API request does inside the server);
 * (b) through `vmctl serve` on SOCKET, POST /v1/vms/VM/exec on a new connection, the stream read
 * to its end (the exit event). CLOCK_MONOTONIC around each; prints p50/p99 and b/a. Compiled by
 * bench/serve.sh against the built libvmctl. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <vmctl/vmctl.h>

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(uint64_t *v, int n, int p)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    int i = n * p / 100;
    return (double)v[i >= n ? n - 1 : i] / 1e6;
}

static int http_exec(const char *sock, const char *vm)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    const char *body = "{\"argv\":[\"true\"]}";
    char req[512];
    int n =
        snprintf(req, sizeof(req),
                 "POST /v1/vms/%s/exec HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                 vm, strlen(body), body);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    char buf[8192];
    size_t got = 0;
    ssize_t k;
    while ((k = read(fd, buf + got, sizeof(buf) - 1 - got)) > 0 &&
           got + (size_t)k < sizeof(buf) - 1)
        got += (size_t)k;
    buf[got] = '\0';
    close(fd);
    return strstr(buf, "\"exit\":0") ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    const char *vm = argv[1], *sock = argv[2];
    int n = atoi(argv[3]);
    vmctl_ctx *ctx = NULL;
    vmctl_error *e = NULL;
    if (vmctl_ctx_open(NULL, 0, &ctx, &e) < 0)
        return fprintf(stderr, "%s\n", vmctl_error_get_message(e)), 1;
    uint64_t *a = calloc((size_t)n, sizeof(*a)), *b = calloc((size_t)n, sizeof(*b));
    char *cmd[] = {"true", NULL};
    for (int i = 0; i < n; i++) {
        vmctl_exec_opts o = {.argv = cmd};
        vmctl_exec_result res = {0};
        uint64_t t0 = now_ns();
        if (vmctl_exec(ctx, vm, &o, &res, &e) < 0 || res.exit_code != 0)
            return fprintf(stderr, "library exec failed\n"), 1;
        a[i] = now_ns() - t0;
        vmctl_exec_result_clear(&res);
        t0 = now_ns();
        if (http_exec(sock, vm) < 0)
            return fprintf(stderr, "server exec failed\n"), 1;
        b[i] = now_ns() - t0;
    }
    double a50 = pct(a, n, 50), a99 = pct(a, n, 99), b50 = pct(b, n, 50), b99 = pct(b, n, 99);
    printf("exec true x%d: library p50 %.2f ms p99 %.2f ms; server p50 %.2f ms p99 %.2f ms; "
           "server/library p50 %.2fx\n",
           n, a50, a99, b50, b99, b50 / a50);
    vmctl_ctx_free(ctx);
    return 0;
}
