/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the tar reader and extractor (src/lib/tar.c), which take archives from
 * guests. The input is parsed twice: fed in one piece to the pure parser, checking that each
 * entry gets exactly its size in data and that entries end in order; then fed in small pieces
 * to the real extractor inside a fresh directory of a sandbox, after which the sandbox must hold
 * that directory only (nothing written beside or above it) and the directory nothing but
 * regular files, directories and symbolic links without setuid, setgid or sticky bits.
 * Corpus: archives made by busybox tar -c in the default guest, GNU tar and Python's tarfile
 * (GNU long names, pax headers, links, devices, '..', a truncated entry). Built and run by
 * tests/fuzz/run.sh. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tar.h"
#include "util/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct check {
    bool in_entry;
    uint64_t want, got;
};

static int c_entry(void *u, const tar_entry *e)
{
    struct check *c = u;
    if (c->in_entry || !e->name || !e->link)
        abort();
    c->in_entry = true;
    c->want = e->size;
    c->got = 0;
    if (e->size == 0)
        c->in_entry = false; /* entry_end comes at once */
    return 0;
}

static int c_data(void *u, const void *d, size_t n)
{
    struct check *c = u;
    (void)d;
    c->got += n;
    if (c->got > c->want)
        abort();
    return 0;
}

static int c_end(void *u)
{
    struct check *c = u;
    if (c->got != c->want)
        abort();
    c->in_entry = false;
    return 0;
}

static const tar_parser_ops check_ops = {c_entry, c_data, c_end};

static char sandbox[64];

static void sandbox_remove(void)
{
    rmdir(sandbox);
}

/* Everything under dfd: regular files, directories, symlinks; no 07000 bits. */
static void check_tree(int dfd)
{
    DIR *d = fdopendir(dfd);
    if (!d)
        abort();
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            abort();
        if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode))
            abort();
        if (!S_ISLNK(st.st_mode) && (st.st_mode & 07000))
            abort();
        if (S_ISDIR(st.st_mode)) {
            int sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
            if (sub < 0)
                abort();
            check_tree(sub);
        }
    }
    closedir(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct check c = {0};
    tar_parser *p = NULL;
    if (tar_parser_new(&check_ops, &c, &p) < 0)
        return 0;
    const char *why = NULL;
    if (tar_parser_feed(p, data, size, &why) == 0)
        (void)tar_parser_finish(p, &why);
    tar_parser_free(p);

    if (!sandbox[0]) {
        snprintf(sandbox, sizeof(sandbox), "/tmp/fuzz-tar-XXXXXX");
        if (!mkdtemp(sandbox))
            abort();
        atexit(sandbox_remove);
    }
    char root[96];
    snprintf(root, sizeof(root), "%s/root", sandbox);
    if (mkdir(root, 0755) < 0)
        abort();
    int dfd = open(root, O_RDONLY | O_DIRECTORY);
    tar_extract *t = NULL;
    vmctl_error *e = NULL;
    if (dfd < 0 || tar_extract_new(dfd, root, &t, &e) < 0)
        abort();
    for (size_t off = 0; off < size;) {
        size_t n = size - off < 777 ? size - off : 777;
        if (tar_extract_feed(t, data + off, n, &e) < 0)
            break;
        off += n;
    }
    vmctl_error_free(e);
    e = NULL;
    (void)tar_extract_finish(t, &e);
    vmctl_error_free(e);
    tar_extract_free(t);
    /* the sandbox holds root and nothing else */
    DIR *sd = opendir(sandbox);
    struct dirent *de;
    while (sd && (de = readdir(sd)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, "root"))
            abort();
    if (sd)
        closedir(sd);
    check_tree(dfd); /* closes dfd */
    if (rm_rf(root) < 0)
        abort();
    return 0;
}
