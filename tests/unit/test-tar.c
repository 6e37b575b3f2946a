/* SPDX-License-Identifier: MIT */
/* tar.c: path cleaning, the parser on archives built here byte by byte (ustar/GNU headers, long
 * names, pax, base-256 sizes, checksums, truncation), and the extractor against hostile entries
 * in a temporary directory: a file through a symlink made by the same archive, setuid modes,
 * devices, FIFOs, "..", a "./" entry, a symlink planted in the destination, a truncated file. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tar.h"
#include "util/util.h"

struct buf {
    uint8_t *d;
    size_t len;
};

static void put(struct buf *b, const void *d, size_t n)
{
    b->d = realloc(b->d, b->len + n);
    assert_non_null(b->d);
    memcpy(b->d + b->len, d, n);
    b->len += n;
}

/* One GNU-style header (magic "ustar  "), then data padded to 512. */
static void entry(struct buf *b, const char *name, char type, unsigned mode, const void *data,
                  size_t size, const char *link)
{
    uint8_t h[512] = {0};
    strncpy((char *)h, name, 100);
    snprintf((char *)h + 100, 8, "%07o", mode);
    snprintf((char *)h + 108, 8, "%07o", 0);
    snprintf((char *)h + 116, 8, "%07o", 0);
    snprintf((char *)h + 124, 12, "%011zo", size);
    snprintf((char *)h + 136, 12, "%011o", 1600000000u);
    h[156] = (uint8_t)type;
    if (link)
        strncpy((char *)h + 157, link, 100);
    memcpy(h + 257, "ustar  ", 8);
    memset(h + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += h[i];
    snprintf((char *)h + 148, 8, "%06o", sum);
    put(b, h, 512);
    if (size) {
        put(b, data, size);
        uint8_t zero[512] = {0};
        put(b, zero, (512 - size % 512) % 512);
    }
}

static void end(struct buf *b)
{
    uint8_t zero[1024] = {0};
    put(b, zero, sizeof(zero));
}

static void test_path_clean(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(tar_path_clean("./a/b", out, sizeof(out)), 3);
    assert_string_equal(out, "a/b");
    assert_int_equal(tar_path_clean("/abs//x/./y/", out, sizeof(out)), 7);
    assert_string_equal(out, "abs/x/y");
    assert_int_equal(tar_path_clean("./", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(tar_path_clean("a/../b", out, sizeof(out)), -EINVAL);
    assert_int_equal(tar_path_clean("..", out, sizeof(out)), -EINVAL);
    assert_int_equal(tar_path_clean("a/..x", out, sizeof(out)), 5);
    assert_int_equal(tar_path_clean("0123456789", out, 5), -ENAMETOOLONG);
}

struct seen {
    char names[16][256];
    uint64_t sizes[16], got[16];
    size_t namelen[16];
    int n;
};

static int s_entry(void *u, const tar_entry *e)
{
    struct seen *s = u;
    assert_true(s->n < 16);
    snprintf(s->names[s->n], 256, "%c:%s%s%s", e->type, e->name, e->link[0] ? "->" : "", e->link);
    s->sizes[s->n] = e->size;
    s->namelen[s->n] = strlen(e->name);
    s->n++;
    return 0;
}

static int s_data(void *u, const void *d, size_t n)
{
    struct seen *s = u;
    (void)d;
    s->got[s->n - 1] += n;
    return 0;
}

static const tar_parser_ops seen_ops = {s_entry, s_data, NULL};

static void parse_all(const struct buf *b, size_t step, struct seen *s, int want_rc)
{
    memset(s, 0, sizeof(*s));
    tar_parser *p = NULL;
    assert_int_equal(tar_parser_new(&seen_ops, s, &p), 0);
    const char *why = NULL;
    int r = 0;
    for (size_t off = 0; off < b->len && r == 0; off += step)
        r = tar_parser_feed(p, b->d + off, b->len - off < step ? b->len - off : step, &why);
    if (r == 0)
        r = tar_parser_finish(p, &why);
    assert_int_equal(r, want_rc);
    if (r < 0)
        assert_non_null(why);
    tar_parser_free(p);
}

static void test_parser(void **state)
{
    (void)state;
    struct buf b = {0};
    entry(&b, "./", '5', 0755, NULL, 0, NULL);
    entry(&b, "./f", '0', 0644, "hello", 5, NULL);
    char longname[300];
    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = 0;
    entry(&b, "././@LongLink", 'L', 0, longname, sizeof(longname), NULL);
    entry(&b, "nnnn-truncated", '0', 0644, "x", 1, NULL);
    const char pax[] = "21 path=pax/name.txt\n";
    entry(&b, "PaxHeader", 'x', 0, pax, strlen(pax), NULL);
    entry(&b, "short", '0', 0644, "yy", 2, NULL);
    entry(&b, "./l", '2', 0777, NULL, 0, "/etc");
    end(&b);
    for (size_t step = 1; step <= 4096; step *= 8) {
        struct seen s;
        parse_all(&b, step, &s, 0);
        assert_int_equal(s.n, 5);
        assert_string_equal(s.names[0], "5:./");
        assert_string_equal(s.names[1], "0:./f");
        assert_int_equal(s.got[1], 5);
        assert_int_equal(s.namelen[2], 299);
        assert_string_equal(s.names[3], "0:pax/name.txt");
        assert_int_equal(s.got[3], 2);
        assert_string_equal(s.names[4], "2:./l->/etc");
    }
    /* a wrong checksum is not a tar stream */
    struct buf bad = {0};
    put(&bad, b.d, b.len);
    bad.d[0] ^= 1;
    struct seen s;
    parse_all(&bad, 512, &s, -EBADMSG);
    /* truncated inside the file's data */
    struct buf tr = {0};
    put(&tr, b.d, 512 + 512 + 3);
    parse_all(&tr, 100, &s, -EBADMSG);
    /* base-256 size */
    struct buf big = {0};
    entry(&big, "f", '0', 0644, "abc", 3, NULL);
    memset(big.d + 124, 0, 12);
    big.d[124] = 0x80;
    big.d[135] = 3;
    memset(big.d + 148, ' ', 8);
    unsigned sum = 0;
    for (int i = 0; i < 512; i++)
        sum += big.d[i];
    snprintf((char *)big.d + 148, 8, "%06o", sum);
    end(&big);
    parse_all(&big, 7, &s, 0);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.got[0], 3);
    free(b.d);
    free(bad.d);
    free(tr.d);
    free(big.d);
}

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    umask(022);
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-tar-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return rm_rf(tmpdir);
}

static unsigned mode_at(const char *rel)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", tmpdir, rel);
    struct stat st;
    if (lstat(p, &st) < 0)
        return 0;
    return st.st_mode;
}

static int extract(const struct buf *b, const char *into, size_t step, vmctl_error **e)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", tmpdir, into);
    int dfd = open(p, O_RDONLY | O_DIRECTORY);
    assert_true(dfd >= 0);
    tar_extract *t = NULL;
    assert_int_equal(tar_extract_new(dfd, p, &t, e), 0);
    close(dfd);
    int r = 0;
    for (size_t off = 0; off < b->len && r == 0; off += step)
        r = tar_extract_feed(t, b->d + off, b->len - off < step ? b->len - off : step, e);
    int rf = tar_extract_finish(t, r < 0 ? NULL : e);
    tar_extract_free(t);
    return r < 0 ? r : rf;
}

static void test_extract_hostile(void **state)
{
    (void)state;
    char victim[128], dest[128];
    snprintf(victim, sizeof(victim), "%s/victim", tmpdir);
    snprintf(dest, sizeof(dest), "%s/dest", tmpdir);
    assert_int_equal(mkdir(victim, 0755), 0);
    assert_int_equal(mkdir(dest, 0700), 0);
    /* planted by an "earlier copy": dest/old -> victim */
    char old[160];
    snprintf(old, sizeof(old), "%s/old", dest);
    assert_int_equal(symlink(victim, old), 0);

    struct buf b = {0};
    entry(&b, "./", '5', 0777, NULL, 0, NULL);
    entry(&b, "./l", '2', 0777, NULL, 0, victim);
    entry(&b, "./l/through", '0', 0644, "x", 1, NULL);
    entry(&b, "./old/through-old", '0', 0644, "x", 1, NULL);
    entry(&b, "./old", '0', 0644, "replaced", 8, NULL); /* renamed over the planted link */
    entry(&b, "../up", '0', 0644, "x", 1, NULL);
    entry(&b, "./suid", '0', 04777, "#!", 2, NULL);
    entry(&b, "./sticky", '5', 01777, NULL, 0, NULL);
    entry(&b, "./sticky/in", '0', 0600, "in", 2, NULL);
    entry(&b, "./ro", '5', 0555, NULL, 0, NULL);
    entry(&b, "./ro/f", '0', 0444, "ro", 2, NULL);
    entry(&b, "./mem", '3', 0666, NULL, 0, NULL);
    entry(&b, "./fifo", '6', 0666, NULL, 0, NULL);
    entry(&b, "./hl", '1', 0644, NULL, 0, "suid");
    entry(&b, "./hl-out", '1', 0644, NULL, 0, "../victim/x");
    entry(&b, "deep/er/file", '0', 0644, "d", 1, NULL); /* parents not in the archive */
    end(&b);

    vmctl_error *e = NULL;
    int r = extract(&b, "dest", 300, &e);
    assert_int_equal(r, -EPERM);
    assert_non_null(e);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::cp::unsafe_entry");
    vmctl_error_free(e);

    char p[256];
    snprintf(p, sizeof(p), "%s/through", victim);
    assert_int_equal(access(p, F_OK), -1);
    snprintf(p, sizeof(p), "%s/through-old", victim);
    assert_int_equal(access(p, F_OK), -1);
    assert_int_equal(mode_at("up"), 0);
    assert_true(S_ISLNK(mode_at("dest/l")));
    assert_true(S_ISREG(mode_at("dest/old")));
    assert_int_equal(mode_at("dest") & 07777, 0700); /* "./" did not change it */
    assert_int_equal(mode_at("dest/suid") & 07777, 0755);
    assert_int_equal(mode_at("dest/sticky") & 07777, 0755);
    assert_int_equal(mode_at("dest/sticky/in") & 07777, 0600);
    assert_int_equal(mode_at("dest/ro") & 07777, 0555); /* set after its contents */
    assert_int_equal(mode_at("dest/ro/f") & 07777, 0444);
    assert_int_equal(mode_at("dest/mem"), 0);
    assert_int_equal(mode_at("dest/fifo"), 0);
    assert_true(S_ISREG(mode_at("dest/hl")));
    assert_int_equal(mode_at("dest/hl-out"), 0);
    assert_int_equal(mode_at("dest/deep/er") & 07777, 0755);
    assert_true(S_ISREG(mode_at("dest/deep/er/file")));
    /* no temporary left */
    snprintf(p, sizeof(p), "%s/ro", dest);
    chmod(p, 0755);
    free(b.d);
}

static void test_extract_truncated(void **state)
{
    (void)state;
    char dest[128];
    snprintf(dest, sizeof(dest), "%s/trunc", tmpdir);
    assert_int_equal(mkdir(dest, 0755), 0);
    struct buf b = {0};
    char data[2000];
    memset(data, 'A', sizeof(data));
    entry(&b, "big", '0', 0644, data, sizeof(data), NULL);
    b.len = 512 + 700;
    vmctl_error *e = NULL;
    int r = extract(&b, "trunc", 512, &e);
    assert_int_equal(r, -EBADMSG);
    assert_string_equal(vmctl_error_get_code(e), "vm_manager::agent::failed");
    vmctl_error_free(e);
    assert_int_equal(mode_at("trunc/big"), 0);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "test -z \"$(ls -A %s)\"", dest);
    assert_int_equal(system(cmd), 0); /* no temporary left */
    free(b.d);
}

static void test_dest_dir(void **state)
{
    (void)state;
    char p[160];
    snprintf(p, sizeof(p), "%s/victim2", tmpdir);
    assert_int_equal(mkdir(p, 0755), 0);
    snprintf(p, sizeof(p), "%s/link", tmpdir);
    assert_int_equal(symlink("victim2", p), 0);
    int parent = open(tmpdir, O_RDONLY | O_DIRECTORY);
    int fd = -1;
    vmctl_error *e = NULL;
    assert_int_equal(tar_dest_dir(parent, "link", p, &fd, &e), 0);
    assert_true(S_ISDIR(mode_at("link")));
    close(fd);
    snprintf(p, sizeof(p), "%s/file", tmpdir);
    assert_int_equal(write_file_atomic(p, "x", 1, 0644), 0);
    assert_true(tar_dest_dir(parent, "file", p, &fd, &e) < 0);
    vmctl_error_free(e);
    close(parent);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_path_clean),      cmocka_unit_test(test_parser),
        cmocka_unit_test(test_extract_hostile), cmocka_unit_test(test_extract_truncated),
        cmocka_unit_test(test_dest_dir),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
