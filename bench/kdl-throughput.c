/* SPDX-License-Identifier: MIT */
/* KDL parse throughput on a generated 10 MiB document, against a floor measured on the same
 * buffer in the same run: counting its lines with memchr (what `wc -l` does). Prints MiB/s for
 * the floor, for kdl_parse alone and for kdl_parse + kdl_format (what `vmctl kdl fmt` does), and
 * the ratios to the floor. Best of --runs runs each.
 *
 * Usage: kdl-throughput [--mib N] [--runs N] [--write FILE]
 *   --write FILE   also save the generated document (for end-to-end runs of `vmctl kdl fmt`)
 *
 * The VMFile case (issue 16: validation was quadratic in the number of steps):
 *        kdl-throughput --vmfile STEPS [--runs N] [--write FILE]
 * generates a VMFile of STEPS shell steps, 40 per machine (so it stays within the caps of
 * src/lib/vmfile.h up to 40,960 steps), and times vmfile_parse (KDL parse + validation) on it,
 * then on a quarter and a half of it: the ratios show whether the time grows linearly. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error.h"
#include "kdl.h"
#include "vmfile.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A VMFile-like document that touches every syntax: nodes with arguments, properties and
 * children, type annotations, quoted strings with escapes, raw and multi-line strings, all number
 * forms, keywords, comments, slashdash and line continuations. Deterministic. */
static char *generate(size_t target, size_t *ret_len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    fputs("// generated for the KDL throughput benchmark\n/- kdl-version 2\n", f);
    uint32_t x = 12345;
    for (unsigned i = 0; (size_t)ftello(f) < target; i++) {
        x = x * 1103515245u + 12345u;
        fprintf(f,
                "vm \"machine-%u\" {\n"
                "    image \"debian-12-generic-amd64\" format=qcow2 digest=(sha256)#\"%08x%08x\"#\n"
                "    vcpus %u; memory %u /* MiB */; disk 0x%x\n"
                "    network user mac=\"52:54:00:%02x:%02x:%02x\"\n"
                "    port 8080 80 proto=tcp; port (u16)2222 22\n"
                "    env RUST_LOG=info PATH=\"/usr/local/bin:/usr/bin\\t\\\"quoted\\\"\" n=%u\n"
                "    limits cpu=1.5e3 io=-0.25 mask=0b1010_1010 mode=0o755 big=1_000_000 "
                "ratio=#inf off=#false none=#null\n"
                "    /- cloud-init \"user-data.yaml\"\n"
                "    provision \"shell\" \\\n"
                "        timeout=300 {\n"
                "        inline \"\"\"\n"
                "            apt-get update && apt-get install -y nginx\n"
                "            echo \"node %u ready\" > /etc/motd\n"
                "            \"\"\"\n"
                "    }\n"
                "    provision file source=\"site/\" destination=#\"/var/www/html\"# mode=420\n"
                "}\n",
                i, x, x ^ 0x5a5a5a5au, 1 + x % 8, 256u << (x % 4), 10u + x % 90, x & 0xff,
                (x >> 8) & 0xff, (x >> 16) & 0xff, i, i);
    }
    fclose(f);
    *ret_len = size;
    return buf;
}

/* A valid VMFile of `steps` shell steps, 40 per machine. */
static char *generate_vmfile(size_t steps, size_t *ret_len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    for (size_t i = 0; i < steps; i++) {
        if (i % 40 == 0)
            fprintf(f, "%svm \"m%zu\" {\n    vcpus 1\n    memory 256\n", i ? "}\n" : "", i / 40);
        fprintf(f, "    provision \"shell\" {\n        inline \"echo step %zu\"\n    }\n", i);
    }
    fputs("}\n", f);
    fclose(f);
    *ret_len = size;
    return buf;
}

/* Best time of vmfile_parse on a generated VMFile of `steps` steps. */
static double time_vmfile(size_t steps, int runs, size_t *ret_len, const char *write_to)
{
    size_t len = 0;
    char *doc = generate_vmfile(steps, &len);
    if (!doc)
        return -1;
    if (write_to) {
        FILE *f = fopen(write_to, "we");
        if (!f || fwrite(doc, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "cannot write '%s': %s\n", write_to, strerror(errno));
            return -1;
        }
    }
    double best = 1e9;
    for (int r = 0; r < runs; r++) {
        vmfile *vf = NULL;
        vmctl_error *e = NULL;
        double t0 = now();
        if (vmfile_parse("bench.kdl", "/", doc, len, &vf, &e) < 0) {
            fprintf(stderr, "vmfile_parse failed: %s\n", vmctl_error_get_message(e));
            return -1;
        }
        double t = now() - t0;
        vmfile_free(vf);
        if (t < best)
            best = t;
    }
    free(doc);
    *ret_len = len;
    return best;
}

static int bench_vmfile(size_t steps, int runs, const char *write_to)
{
    printf("vmfile_parse, best of %d runs (40 steps per machine):\n", runs);
    double base = 0;
    size_t base_steps = steps / 4 ? steps / 4 : 1;
    for (size_t n = base_steps, k = 0; k < 3; k++, n = k == 2 ? steps : base_steps * 2) {
        size_t len = 0;
        double t = time_vmfile(n, runs, &len, k == 2 ? write_to : NULL);
        if (t < 0)
            return 1;
        if (k == 0)
            base = t;
        printf("  %7zu steps  %6.2f MiB  %9.3f ms  %6.2f us/step  (%.1fx the time of %zu steps)\n",
               n, (double)len / (1024.0 * 1024.0), t * 1e3, t * 1e6 / (double)n, t / base,
               base_steps);
    }
    return 0;
}

int main(int argc, char **argv)
{
    size_t mib = 10, vmfile_steps = 0;
    int runs = 5;
    const char *write_to = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--mib") == 0 && i + 1 < argc)
            mib = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--write") == 0 && i + 1 < argc)
            write_to = argv[++i];
        else if (strcmp(argv[i], "--vmfile") == 0 && i + 1 < argc)
            vmfile_steps = strtoul(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: %s [--mib N | --vmfile STEPS] [--runs N] [--write FILE]\n",
                    argv[0]);
            return 2;
        }
    }
    if (mib == 0 || runs < 1)
        return 2;
    if (vmfile_steps)
        return bench_vmfile(vmfile_steps, runs, write_to);

    size_t len = 0;
    char *doc = generate(mib * 1024 * 1024, &len);
    if (!doc) {
        perror("generate");
        return 1;
    }
    double size_mib = (double)len / (1024.0 * 1024.0);
    if (write_to) {
        FILE *f = fopen(write_to, "we");
        if (!f || fwrite(doc, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "cannot write '%s': %s\n", write_to, strerror(errno));
            return 1;
        }
    }

    double best_floor = 1e9, best_parse = 1e9, best_fmt = 1e9;
    size_t lines = 0, nodes = 0, out_len = 0;
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        size_t n = 0;
        for (const char *p = doc, *end = doc + len; (p = memchr(p, '\n', (size_t)(end - p))); p++)
            n++;
        double t1 = now();
        lines = n;
        if (t1 - t0 < best_floor)
            best_floor = t1 - t0;

        kdl_document *d = NULL;
        vmctl_error *e = NULL;
        t0 = now();
        if (kdl_parse("bench.kdl", doc, len, KDL_VERSION_MARKER, &d, &e) < 0) {
            fprintf(stderr, "parse failed: %s\n", vmctl_error_get_message(e));
            return 1;
        }
        t1 = now();
        char *out = NULL;
        if (kdl_format(d, &out, &out_len) < 0)
            return 1;
        double t2 = now();
        nodes = d->n_nodes;
        free(out);
        kdl_document_free(d);
        if (t1 - t0 < best_parse)
            best_parse = t1 - t0;
        if (t2 - t0 < best_fmt)
            best_fmt = t2 - t0;
    }

    printf("document: %.2f MiB, %zu lines, %zu top-level nodes, canonical form %.2f MiB\n",
           size_mib, lines, nodes, (double)out_len / (1024.0 * 1024.0));
    printf("best of %d runs:\n", runs);
    printf("  floor: memchr line count   %9.1f MiB/s\n", size_mib / best_floor);
    printf("  kdl_parse                  %9.1f MiB/s   (%.1fx the floor's time)\n",
           size_mib / best_parse, best_parse / best_floor);
    printf("  kdl_parse + kdl_format     %9.1f MiB/s   (%.1fx the floor's time)\n",
           size_mib / best_fmt, best_fmt / best_floor);
    free(doc);
    return 0;
}
