/* SPDX-License-Identifier: MIT */
/* Overlay and seed-ISO creation: in-process (qcow2.c, iso9660.c via cloudinit.c) against
 * spawning `qemu-img create -f qcow2 -b BASE -F raw` and genisoimage for the same result, in
 * the same run, alternating, N rounds each. Prints medians and ratios.
 *   image-create BASE-IMAGE WORKDIR [N] */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloudinit.h"
#include "image-format.h"
#include "qcow2.h"
#include "util/util.h"

extern char **environ;

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int spawn_wait(char *const argv[])
{
    pid_t pid;
    if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0)
        return -1;
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: image-create BASE-IMAGE WORKDIR [N]\n");
        return 2;
    }
    const char *base = argv[1], *dir = argv[2];
    int n = argc > 3 ? atoi(argv[3]) : 50;
    if (n < 1 || n > 100000)
        return 2;
    image_probe p = {};
    if (image_probe_file(base, &p, NULL) < 0) {
        fprintf(stderr, "cannot probe %s\n", base);
        return 1;
    }
    char size[32];
    snprintf(size, sizeof(size), "%llu", (unsigned long long)p.virtual_size);
    const char *fmt = image_format_qemu_name(p.format);
    double *ov_in = calloc((size_t)n, sizeof(double)), *ov_ext = calloc((size_t)n, sizeof(double));
    double *iso_in = calloc((size_t)n, sizeof(double)),
           *iso_ext = calloc((size_t)n, sizeof(double));
    cleanup_free char *key = str_printf("%s/key.pub", dir);
    const char k[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBENCHMARKKEY bench@host\n";
    write_file_atomic(key, k, strlen(k), 0644);
    cloudinit_seed seed = {.hostname = "bench", .ssh_key = key, .network = true};
    for (int i = 0; i < n; i++) {
        cleanup_free char *a = str_printf("%s/ov-in-%d.qcow2", dir, i);
        cleanup_free char *b = str_printf("%s/ov-ext-%d.qcow2", dir, i);
        cleanup_free char *c = str_printf("%s/seed-in-%d.iso", dir, i);
        cleanup_free char *d = str_printf("%s/seed-ext-%d.iso", dir, i);
        uint64_t t = now_usec();
        if (qcow2_create_overlay(a, p.virtual_size, base, fmt, NULL) < 0)
            return 1;
        ov_in[i] = (double)(now_usec() - t) / 1000.0;
        char *qargv[] = {"qemu-img",   "create", "-q",        "-f", "qcow2", "-b",
                         (char *)base, "-F",     (char *)fmt, b,    size,    NULL};
        t = now_usec();
        if (spawn_wait(qargv) != 0)
            return 1;
        ov_ext[i] = (double)(now_usec() - t) / 1000.0;
        unsetenv("VMCTL_SEED_TOOL");
        t = now_usec();
        if (cloudinit_write_seed(c, &seed, NULL) < 0)
            return 1;
        iso_in[i] = (double)(now_usec() - t) / 1000.0;
        setenv("VMCTL_SEED_TOOL", "genisoimage", 1);
        t = now_usec();
        if (cloudinit_write_seed(d, &seed, NULL) < 0)
            return 1;
        iso_ext[i] = (double)(now_usec() - t) / 1000.0;
        unlink(a);
        unlink(b);
        unlink(c);
        unlink(d);
    }
    double a = median(ov_in, n), b = median(ov_ext, n), c = median(iso_in, n),
           d = median(iso_ext, n);
    printf("overlay  in-process %.3f ms   qemu-img create %.3f ms   ratio %.1fx\n", a, b, b / a);
    printf("seed ISO in-process %.3f ms   genisoimage     %.3f ms   ratio %.1fx\n", c, d, d / c);
    printf("(medians of %d alternating rounds; base %s, %s, %s bytes)\n", n, base, fmt, size);
    image_probe_clear(&p);
    return 0;
}
