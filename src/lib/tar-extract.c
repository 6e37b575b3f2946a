/* SPDX-License-Identifier: MIT */
/* The safe extractor for archives from a guest (and the path rules it uses): see tar.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "error.h"
#include "tar.h"
#include "util/util.h"

/* --- paths --- */

int tar_path_clean(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    const char *s = name;
    while (*s) {
        while (*s == '/')
            s++;
        const char *e = s;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - s);
        if (len == 0)
            break;
        if (len == 2 && s[0] == '.' && s[1] == '.')
            return -EINVAL;
        if (!(len == 1 && s[0] == '.')) {
            if (n + (n ? 1 : 0) + len + 1 > cap)
                return -ENAMETOOLONG;
            if (n)
                out[n++] = '/';
            memcpy(out + n, s, len);
            n += len;
        }
        s = e;
    }
    if (cap)
        out[n < cap ? n : cap - 1] = 0;
    return (int)n;
}

/* Open path beneath dfd without following any symbolic link: openat2(RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS), or component by component with O_NOFOLLOW where the kernel has no
 * openat2. path is relative and clean (tar_path_clean). */
static int open_beneath(int dfd, const char *path, int flags)
{
    static int no_openat2;
    if (!__atomic_load_n(&no_openat2, __ATOMIC_RELAXED)) {
        struct open_how how = {
            .flags = (uint64_t)(flags | O_NOFOLLOW | O_CLOEXEC),
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dfd, path, &how, sizeof(how));
        if (fd >= 0)
            return (int)fd;
        if (errno != ENOSYS && errno != EPERM)
            return -errno;
        if (errno == ENOSYS)
            __atomic_store_n(&no_openat2, 1, __ATOMIC_RELAXED);
    }
    cleanup_close int cur = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
    if (cur < 0)
        return -errno;
    const char *s = path;
    for (;;) {
        const char *e = strchr(s, '/');
        char comp[256];
        size_t len = e ? (size_t)(e - s) : strlen(s);
        if (len >= sizeof(comp))
            return -ENAMETOOLONG;
        memcpy(comp, s, len);
        comp[len] = 0;
        int fd = openat(cur, comp,
                        e ? (O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                          : (flags | O_NOFOLLOW | O_CLOEXEC));
        if (fd < 0)
            return errno == ENOTDIR && e ? -ELOOP : -errno;
        close(cur);
        cur = fd;
        if (!e)
            return TAKE_FD(cur);
        s = e + 1;
    }
}

/* --- the extractor --- */

struct dir_rec {
    char *path;
    uint32_t mode;
    int64_t mtime;
    bool set_mtime;
};

#define MAX_NOTES 16

struct tar_extract {
    int root;
    char *label;
    mode_t umask;
    tar_parser *parser;
    int rc;
    vmctl_error *err; /* the first failure, handed out once */
    bool err_given;
    uint64_t entries, skipped;
    char *notes[MAX_NOTES];
    size_t n_notes;
    char path[TAR_PATH_MAX + 1]; /* the current entry, clean */
    /* the regular file being written */
    int file_fd, file_parent;
    char file_tmp[40];
    const char *file_base;
    uint32_t file_mode;
    int64_t file_mtime;
    /* the last parent directory opened */
    char *cur_dir;
    int cur_dir_fd;
    struct dir_rec *dirs;
    size_t n_dirs, cap_dirs;
    char **files; /* regular files this archive created: hard links may point at them */
    size_t n_files, cap_files;
};

static const tar_parser_ops tar_extract_ops; /* the callbacks, defined further down */

mode_t tar_umask(void)
{
    cleanup_free char *status = NULL;
    if (read_file("/proc/self/status", &status, NULL) >= 0) {
        const char *u = strstr(status, "\nUmask:");
        if (u)
            return (mode_t)strtoul(u + 7, NULL, 8) & 0777;
    }
    mode_t m = umask(022);
    umask(m);
    return m;
}

int tar_extract_new(int dirfd, const char *label, tar_extract **ret, vmctl_error **reterr)
{
    tar_extract *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->root = t->file_fd = t->file_parent = t->cur_dir_fd = -1;
    t->root = fcntl(dirfd, F_DUPFD_CLOEXEC, 3);
    if (t->root < 0) {
        int r = err_make(reterr, VMCTL_E_IO, errno, "cannot use the directory '%s'", label);
        free(t);
        return r;
    }
    t->label = strdup(label ? label : "");
    t->umask = tar_umask();
    int r = t->label ? tar_parser_new(&tar_extract_ops, t, &t->parser) : -ENOMEM;
    if (r < 0) {
        tar_extract_free(t);
        return r;
    }
    *ret = t;
    return 0;
}

static void drop_file(tar_extract *t)
{
    if (t->file_fd >= 0) {
        close(t->file_fd);
        t->file_fd = -1;
        unlinkat(t->file_parent, t->file_tmp, 0);
    }
    if (t->file_parent >= 0) {
        close(t->file_parent);
        t->file_parent = -1;
    }
}

void tar_extract_free(tar_extract *t)
{
    if (!t)
        return;
    drop_file(t);
    if (t->root >= 0)
        close(t->root);
    if (t->cur_dir_fd >= 0)
        close(t->cur_dir_fd);
    free(t->cur_dir);
    for (size_t i = 0; i < t->n_dirs; i++)
        free(t->dirs[i].path);
    free(t->dirs);
    for (size_t i = 0; i < t->n_files; i++)
        free(t->files[i]);
    free(t->files);
    for (size_t i = 0; i < t->n_notes; i++)
        free(t->notes[i]);
    tar_parser_free(t->parser);
    vmctl_error_free(t->err);
    free(t->label);
    free(t);
}

uint64_t tar_extract_entries(const tar_extract *t)
{
    return t->entries;
}

uint64_t tar_extract_skipped(const tar_extract *t)
{
    return t->skipped;
}

/* A host-side failure: remembered, the parse stops. */
static int host_fail(tar_extract *t, int errnum, const char *what)
{
    if (!t->err) {
        err_make(&t->err, VMCTL_E_IO, errnum, "cannot %s '%s' in '%s'", what, t->path, t->label);
        err_detail(&t->err, "path", "%s", t->label);
    }
    return t->rc = -errnum;
}

/* An entry left out: counted, named in a note (the first MAX_NOTES). */
static int skip(tar_extract *t, const char *name, const char *why)
{
    t->skipped++;
    if (t->n_notes < MAX_NOTES) {
        char *n = str_printf("'%s': %s", name, why);
        if (n)
            t->notes[t->n_notes++] = n;
    }
    return 0;
}

static int rec_dir(tar_extract *t, const char *path, uint32_t mode, int64_t mtime, bool set_mtime)
{
    for (size_t i = t->n_dirs; i > 0; i--)
        if (streq(t->dirs[i - 1].path, path)) {
            t->dirs[i - 1].mode = mode;
            t->dirs[i - 1].mtime = mtime;
            t->dirs[i - 1].set_mtime = set_mtime;
            return 0;
        }
    if (t->n_dirs == t->cap_dirs) {
        size_t cap = t->cap_dirs ? t->cap_dirs * 2 : 16;
        struct dir_rec *d = realloc(t->dirs, cap * sizeof(*d));
        if (!d)
            return -ENOMEM;
        t->dirs = d;
        t->cap_dirs = cap;
    }
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    t->dirs[t->n_dirs++] = (struct dir_rec){p, mode, mtime, set_mtime};
    return 0;
}

/* Only updates a directory this archive created (a directory that was there keeps its mode). */
static bool update_dir(tar_extract *t, const char *path, uint32_t mode, int64_t mtime)
{
    for (size_t i = t->n_dirs; i > 0; i--)
        if (streq(t->dirs[i - 1].path, path)) {
            t->dirs[i - 1].mode = mode;
            t->dirs[i - 1].mtime = mtime;
            t->dirs[i - 1].set_mtime = true;
            return true;
        }
    return false;
}

static int rec_file(tar_extract *t, const char *path)
{
    if (t->n_files == t->cap_files) {
        size_t cap = t->cap_files ? t->cap_files * 2 : 64;
        char **f = realloc(t->files, cap * sizeof(*f));
        if (!f)
            return -ENOMEM;
        t->files = f;
        t->cap_files = cap;
    }
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    t->files[t->n_files++] = p;
    return 0;
}

static bool is_our_file(const tar_extract *t, const char *path)
{
    for (size_t i = t->n_files; i > 0; i--)
        if (streq(t->files[i - 1], path))
            return true;
    return false;
}

/* The parent directory of the clean path rel (an fd the caller does not close: the cache's),
 * creating missing directories when create. *base points into rel. -ELOOP: a parent is a
 * symbolic link or not a directory. */
static int parent_dir(tar_extract *t, const char *rel, bool create, const char **base)
{
    const char *slash = strrchr(rel, '/');
    *base = slash ? slash + 1 : rel;
    size_t plen = slash ? (size_t)(slash - rel) : 0;
    if (t->cur_dir && strlen(t->cur_dir) == plen && !memcmp(t->cur_dir, rel, plen))
        return t->cur_dir_fd;
    cleanup_free char *parent = strndup(rel, plen);
    if (!parent)
        return -ENOMEM;
    int fd;
    if (plen == 0) {
        fd = fcntl(t->root, F_DUPFD_CLOEXEC, 3);
        if (fd < 0)
            return -errno;
    } else {
        fd = open_beneath(t->root, parent, O_PATH | O_DIRECTORY);
        if (fd == -ENOTDIR)
            fd = -ELOOP;
        if (fd == -ENOENT && create) {
            /* missing parents (an archive without their entries): one at a time */
            cleanup_close int cur = fcntl(t->root, F_DUPFD_CLOEXEC, 3);
            if (cur < 0)
                return -errno;
            for (char *s = parent;;) {
                char *e = strchr(s, '/');
                if (e)
                    *e = 0;
                int nfd = open_beneath(cur, s, O_PATH | O_DIRECTORY);
                if (nfd == -ENOENT) {
                    if (mkdirat(cur, s, 0700) < 0 && errno != EEXIST)
                        return -errno;
                    int rr = rec_dir(t, parent, 0777, 0, false); /* parent ends at s here */
                    if (rr < 0)
                        return rr;
                    nfd = open_beneath(cur, s, O_PATH | O_DIRECTORY);
                }
                if (e)
                    *e = '/';
                if (nfd < 0)
                    return nfd == -ENOTDIR ? -ELOOP : nfd;
                close(cur);
                cur = nfd;
                if (!e)
                    break;
                s = e + 1;
            }
            fd = TAKE_FD(cur);
        }
        if (fd < 0)
            return fd;
    }
    if (t->cur_dir_fd >= 0)
        close(t->cur_dir_fd);
    free(t->cur_dir);
    t->cur_dir = TAKE_PTR(parent);
    t->cur_dir_fd = fd;
    return fd;
}

static int parent_or_skip(tar_extract *t, bool create, const char **base)
{
    int pfd = parent_dir(t, t->path, create, base);
    if (pfd == -ELOOP || pfd == -ENOENT) {
        skip(t, t->path,
             pfd == -ELOOP ? "a parent directory is a symbolic link or not a directory (not "
                             "followed)"
                           : "its directory is missing");
        return -ELOOP;
    }
    if (pfd == -ENOMEM)
        return t->rc = -ENOMEM;
    if (pfd < 0)
        return host_fail(t, -pfd, "open the directory of");
    return pfd;
}

static void tmp_name(char *buf, size_t size)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
        r = now_usec() ^ ((uint64_t)getpid() << 32);
    snprintf(buf, size, ".vmctl-%016" PRIx64, r);
}

static mode_t file_mode(const tar_extract *t, uint32_t mode)
{
    return (mode_t)(mode & 0777) & ~t->umask;
}

static int do_dir(tar_extract *t, const tar_entry *e)
{
    if (!t->path[0])
        return 0; /* the archive's root ("./"): the destination keeps its mode and times */
    const char *base;
    int pfd = parent_or_skip(t, true, &base);
    if (pfd < 0)
        return pfd == -ELOOP ? 0 : pfd;
    if (mkdirat(pfd, base, 0700) == 0)
        return rec_dir(t, t->path, e->mode, e->mtime, true) < 0 ? (t->rc = -ENOMEM) : 0;
    if (errno != EEXIST)
        return host_fail(t, errno, "create the directory");
    struct stat st;
    if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return host_fail(t, errno, "look at");
    if (S_ISDIR(st.st_mode)) {
        update_dir(t, t->path, e->mode, e->mtime);
        return 0;
    }
    if (!S_ISLNK(st.st_mode))
        return skip(t, t->path, "exists on the host and is not a directory");
    /* a symbolic link in the way (made by an earlier copy, say): replaced, never followed */
    if (unlinkat(pfd, base, 0) < 0 || mkdirat(pfd, base, 0700) < 0)
        return host_fail(t, errno, "replace the symbolic link");
    return rec_dir(t, t->path, e->mode, e->mtime, true) < 0 ? (t->rc = -ENOMEM) : 0;
}

static int do_file(tar_extract *t, const tar_entry *e)
{
    if (!t->path[0])
        return skip(t, e->name, "a file as the archive's root");
    const char *base;
    int pfd = parent_or_skip(t, true, &base);
    if (pfd < 0)
        return pfd == -ELOOP ? 0 : pfd;
    struct stat st;
    if (fstatat(pfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
        return skip(t, t->path, "a directory of that name exists on the host");
    t->file_parent = fcntl(pfd, F_DUPFD_CLOEXEC, 3);
    if (t->file_parent < 0)
        return host_fail(t, errno, "create");
    for (int i = 0; i < 16; i++) {
        tmp_name(t->file_tmp, sizeof(t->file_tmp));
        t->file_fd = openat(t->file_parent, t->file_tmp,
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (t->file_fd >= 0 || errno != EEXIST)
            break;
    }
    if (t->file_fd < 0) {
        int err = errno;
        close(t->file_parent);
        t->file_parent = -1;
        return host_fail(t, err, "create");
    }
    t->file_base = t->path + (base - t->path);
    t->file_mode = e->mode;
    t->file_mtime = e->mtime;
    return 0;
}

static int file_end(tar_extract *t)
{
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = t->file_mtime}};
    if (fchmod(t->file_fd, file_mode(t, t->file_mode)) < 0 || futimens(t->file_fd, ts) < 0) {
        int err = errno;
        drop_file(t);
        return host_fail(t, err, "set the mode of");
    }
    if (close(t->file_fd) < 0) {
        t->file_fd = -1;
        int err = errno;
        unlinkat(t->file_parent, t->file_tmp, 0);
        drop_file(t);
        return host_fail(t, err, "write");
    }
    t->file_fd = -1;
    /* renamed over what was there: a symbolic link is replaced, not written through */
    if (renameat(t->file_parent, t->file_tmp, t->file_parent, t->file_base) < 0) {
        int err = errno;
        unlinkat(t->file_parent, t->file_tmp, 0);
        drop_file(t);
        if (err == EISDIR || err == ENOTEMPTY || err == EEXIST)
            return skip(t, t->path, "a directory of that name exists on the host");
        return host_fail(t, err, "rename into place");
    }
    drop_file(t);
    return rec_file(t, t->path) < 0 ? (t->rc = -ENOMEM) : 0;
}

/* Put a new name (a symlink or a hard link made at the temporary name) over base. */
static int place(tar_extract *t, int pfd, const char *tmp, const char *base)
{
    if (renameat(pfd, tmp, pfd, base) == 0)
        return 0;
    int err = errno;
    unlinkat(pfd, tmp, 0);
    if (err == EISDIR || err == ENOTEMPTY || err == EEXIST)
        return skip(t, t->path, "a directory of that name exists on the host");
    return host_fail(t, err, "rename into place");
}

static int do_symlink(tar_extract *t, const tar_entry *e)
{
    if (!t->path[0])
        return skip(t, e->name, "a link as the archive's root");
    if (!e->link[0])
        return skip(t, t->path, "a symbolic link with an empty target");
    const char *base;
    int pfd = parent_or_skip(t, true, &base);
    if (pfd < 0)
        return pfd == -ELOOP ? 0 : pfd;
    char tmp[40];
    int r = -1;
    for (int i = 0; i < 16 && r < 0; i++) {
        tmp_name(tmp, sizeof(tmp));
        r = symlinkat(e->link, pfd, tmp);
        if (r < 0 && errno != EEXIST)
            return host_fail(t, errno, "create the symbolic link");
    }
    if (r < 0)
        return host_fail(t, EEXIST, "create the symbolic link");
    struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = e->mtime}};
    utimensat(pfd, tmp, ts, AT_SYMLINK_NOFOLLOW); /* best effort */
    return place(t, pfd, tmp, base);
}

static int do_hardlink(tar_extract *t, const tar_entry *e)
{
    char target[TAR_PATH_MAX + 1];
    int n = tar_path_clean(e->link, target, sizeof(target));
    if (n <= 0 || !t->path[0])
        return skip(t, t->path[0] ? t->path : e->name, "a hard link out of the copied tree");
    if (!is_our_file(t, target))
        return skip(t, t->path, "a hard link to a file this copy did not create");
    /* the target's directory first: parent_dir's cache is reused for the new name */
    const char *tbase;
    char tpath[TAR_PATH_MAX + 1];
    memcpy(tpath, target, (size_t)n + 1);
    int tfd = parent_dir(t, tpath, false, &tbase);
    if (tfd < 0)
        return skip(t, t->path, "its target's directory cannot be opened without a link");
    cleanup_close int tdir = fcntl(tfd, F_DUPFD_CLOEXEC, 3);
    if (tdir < 0)
        return host_fail(t, errno, "open the directory of");
    const char *base;
    int pfd = parent_or_skip(t, true, &base);
    if (pfd < 0)
        return pfd == -ELOOP ? 0 : pfd;
    char tmp[40];
    tmp_name(tmp, sizeof(tmp));
    /* flags 0: a symbolic link at the target is linked itself, never followed */
    if (linkat(tdir, tbase, pfd, tmp, 0) < 0) {
        if (errno == ENOENT || errno == EPERM || errno == EXDEV || errno == EMLINK)
            return skip(t, t->path, "its target cannot be linked");
        return host_fail(t, errno, "create the hard link");
    }
    int r = place(t, pfd, tmp, base);
    if (r < 0)
        return r;
    return rec_file(t, t->path) < 0 ? (t->rc = -ENOMEM) : 0;
}

static int on_entry(void *userdata, const tar_entry *e)
{
    tar_extract *t = userdata;
    t->entries++;
    int n = tar_path_clean(e->name, t->path, sizeof(t->path));
    if (e->name_too_long || n == -ENAMETOOLONG) {
        t->path[0] = 0;
        return skip(t, e->name, "a name longer than 4096 bytes");
    }
    if (n < 0) {
        snprintf(t->path, sizeof(t->path), "%s", e->name);
        return skip(t, e->name, "a path with '..' (out of the copied tree)");
    }
    switch (e->type) {
    case '0':
        return do_file(t, e);
    case '5':
        return do_dir(t, e);
    case '2':
        return do_symlink(t, e);
    case '1':
        return do_hardlink(t, e);
    case '3':
        return skip(t, t->path, "a character device (not created on the host)");
    case '4':
        return skip(t, t->path, "a block device (not created on the host)");
    case '6':
        return skip(t, t->path, "a FIFO (not created on the host)");
    default: {
        char why[64];
        snprintf(why, sizeof(why), "an entry of tar type '%c' (not created on the host)",
                 e->type >= 0x20 && e->type < 0x7f ? e->type : '?');
        return skip(t, t->path[0] ? t->path : e->name, why);
    }
    }
}

static int on_data(void *userdata, const void *data, size_t len)
{
    tar_extract *t = userdata;
    if (t->file_fd < 0)
        return 0; /* a skipped entry's data, or a non-file's */
    const uint8_t *d = data;
    while (len > 0) {
        ssize_t w = write(t->file_fd, d, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int err = errno;
            drop_file(t);
            return host_fail(t, err, "write");
        }
        d += w;
        len -= (size_t)w;
    }
    return 0;
}

static int on_entry_end(void *userdata)
{
    tar_extract *t = userdata;
    if (t->file_fd < 0)
        return 0;
    return file_end(t);
}

static const tar_parser_ops tar_extract_ops = {
    .entry = on_entry,
    .data = on_data,
    .entry_end = on_entry_end,
};

static int hand_out(tar_extract *t, vmctl_error **reterr)
{
    if (t->err && !t->err_given) {
        t->err_given = true;
        if (reterr) {
            *reterr = t->err;
            t->err = NULL;
        }
    }
    return t->rc;
}

static int malformed(tar_extract *t, int r, const char *why)
{
    if (!t->err && r == -EBADMSG) {
        err_make(&t->err, VMCTL_E_AGENT_FAILED, EBADMSG,
                 "the archive the guest sent for '%s' is malformed: %s", t->label,
                 why ? why : "unknown");
        err_detail(&t->err, "path", "%s", t->label);
    }
    return t->rc = r;
}

int tar_extract_feed(tar_extract *t, const void *data, size_t len, vmctl_error **reterr)
{
    if (t->rc < 0)
        return hand_out(t, reterr);
    const char *why = NULL;
    int r = tar_parser_feed(t->parser, data, len, &why);
    if (r < 0)
        malformed(t, r, why);
    return hand_out(t, reterr);
}

static int set_dir_modes(tar_extract *t)
{
    for (size_t i = t->n_dirs; i > 0; i--) {
        const struct dir_rec *d = &t->dirs[i - 1];
        cleanup_close int fd = open_beneath(t->root, d->path, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
            continue; /* replaced since (or the path went through a link): nothing to set */
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = d->mtime}};
        if (fchmod(fd, file_mode(t, d->mode)) < 0 || (d->set_mtime && futimens(fd, ts) < 0)) {
            snprintf(t->path, sizeof(t->path), "%s", d->path);
            return host_fail(t, errno, "set the mode of");
        }
    }
    return 0;
}

int tar_extract_finish(tar_extract *t, vmctl_error **reterr)
{
    if (t->rc >= 0) {
        const char *why = NULL;
        int r = tar_parser_finish(t->parser, &why);
        if (r < 0)
            malformed(t, r, why);
    }
    drop_file(t); /* a file the archive ended inside of */
    int saved = t->rc;
    t->rc = 0;
    int r = set_dir_modes(t);
    if (saved < 0)
        t->rc = saved;
    else if (r < 0)
        return hand_out(t, reterr);
    if (t->rc < 0)
        return hand_out(t, reterr);
    if (t->skipped) {
        r = err_make(reterr, VMCTL_E_CP_UNSAFE_ENTRY, EPERM,
                     "%" PRIu64 " of the %" PRIu64
                     " entries the guest sent for '%s' were not copied (the others were)",
                     t->skipped, t->entries, t->label);
        err_detail(reterr, "path", "%s", t->label);
        err_detail_num(reterr, "skipped", (double)t->skipped);
        for (size_t i = 0; i < t->n_notes; i++)
            err_note(reterr, "%s", t->notes[i]);
        if (t->skipped > t->n_notes)
            err_note(reterr, "... and %" PRIu64 " more", t->skipped - t->n_notes);
        return r;
    }
    return 0;
}

int tar_dest_dir(int parentfd, const char *name, const char *label, int *ret, vmctl_error **reterr)
{
    bool made = mkdirat(parentfd, name, 0777) == 0;
    if (!made && errno != EEXIST)
        return err_make(reterr, VMCTL_E_IO, errno, "cannot create '%s'", label);
    int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && !made && (errno == ELOOP || errno == ENOTDIR)) {
        struct stat st;
        if (fstatat(parentfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
            /* a symbolic link where the directory goes (an earlier copy from a guest may have
             * made it): replaced by a directory, never followed */
            if (unlinkat(parentfd, name, 0) < 0 || mkdirat(parentfd, name, 0777) < 0)
                return err_make(reterr, VMCTL_E_IO, errno, "cannot replace the symbolic link '%s'",
                                label);
            fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        } else {
            errno = ENOTDIR;
        }
    }
    if (fd < 0)
        return err_make(reterr, VMCTL_E_IO, errno, "cannot copy a directory to '%s'", label);
    *ret = fd;
    return 0;
}
