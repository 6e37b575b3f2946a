/* SPDX-License-Identifier: MIT */
/* The image cache ($VMCTL_HOME/images): the default guest (images/default, see guest.c) and
 * imported or pulled disk images, one directory each:
 *
 *   images/<name>/disk        the image file, in its own format (never modified)
 *   images/<name>/meta.json   {name, format, virtual_size, sha256, source, created_at,
 *                              download_sha256}
 *
 * A new image is prepared in images/.tmp-<name>-<pid>/ and renamed into place once complete
 * and verified, so a killed pull or import never leaves a directory that looks complete;
 * `image prune` removes the leftovers of dead processes. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vmctl/image.h>

#include "arg-check.h"
#include "ctx.h"
#include "download.h"
#include "error.h"
#include "guest.h"
#include "image-cache.h"
#include "image-format.h"
#include "qcow2.h"
#include "store.h"
#include "util/util.h"
#include "vm-spec.h"

#define TMP_PREFIX ".tmp-"
/* Sparse copies move data in pieces of this size: progress and cancellation between them. */
#define COPY_CHUNK (8 << 20)

int vmctl_image_build_default(vmctl_ctx *ctx, bool force, vmctl_progress_fn progress,
                              void *userdata, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    return guest_build_default(ctx->home, force, progress, userdata, reterr);
}

static uint64_t dir_size(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_blocks * 512;
    }
    closedir(d);
    return total;
}

static int oom(vmctl_error **reterr)
{
    return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
}

static int not_found(vmctl_error **reterr, const char *name)
{
    int r = err_make(reterr, VMCTL_E_IMAGE_NOT_FOUND, ENOENT, "no image '%s' in the cache", name);
    err_detail(reterr, "image", "%s", name);
    return r;
}

static int already_exists(vmctl_error **reterr, const char *name)
{
    int r = err_make(reterr, VMCTL_E_IMAGE_ALREADY_EXISTS, EEXIST,
                     "an image named '%s' already exists", name);
    err_detail(reterr, "image", "%s", name);
    err_help(reterr, "Pick another name with --name, or remove it with `vmctl image rm %s`.", name);
    return r;
}

/* ---------- metadata ---------- */

static char *image_dir(const char *home, const char *name)
{
    return str_printf("%s/images/%s", home, name);
}

static int meta_read(const char *home, const char *name, vmctl_image_info *ret,
                     char **ret_download_sha)
{
    cleanup_free char *dir = image_dir(home, name);
    cleanup_free char *mp = str_printf("%s/meta.json", dir);
    if (!dir || !mp)
        return -ENOMEM;
    json_t *j = json_load_file(mp, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return -ENOENT;
    }
    const char *fmt = json_string_value(json_object_get(j, "format"));
    *ret = (vmctl_image_info){};
    ret->name = strdup(name);
    ret->format = strdup(fmt ? fmt : "raw");
    ret->path = str_printf("%s/disk", dir);
    ret->virtual_size = (uint64_t)json_integer_value(json_object_get(j, "virtual_size"));
    const char *s = json_string_value(json_object_get(j, "sha256"));
    ret->sha256 = s ? strdup(s) : NULL;
    s = json_string_value(json_object_get(j, "source"));
    ret->source = s ? strdup(s) : NULL;
    ret->created_at = (int64_t)json_integer_value(json_object_get(j, "created_at"));
    if (ret_download_sha) {
        s = json_string_value(json_object_get(j, "download_sha256"));
        *ret_download_sha = s ? strdup(s) : NULL;
    }
    json_decref(j);
    struct stat st;
    if (ret->path && stat(ret->path, &st) == 0)
        ret->size = (uint64_t)st.st_blocks * 512;
    if (!ret->name || !ret->format || !ret->path) {
        vmctl_image_info_clear(ret);
        return -ENOMEM;
    }
    return 0;
}

static int meta_write(const char *dir, const char *name, const image_probe *p, const char *sha,
                      const char *source, const char *download_sha)
{
    json_t *j = json_pack("{s:s, s:s, s:I, s:s, s:s, s:I}", "name", name, "format", p->format,
                          "virtual_size", (json_int_t)p->virtual_size, "sha256", sha, "source",
                          source, "created_at", (json_int_t)(realtime_usec() / 1000000));
    if (!j)
        return -ENOMEM;
    if (download_sha)
        json_object_set_new(j, "download_sha256", json_string(download_sha));
    char *text = json_dumps(j, JSON_INDENT(2));
    json_decref(j);
    cleanup_free char *path = str_printf("%s/meta.json", dir);
    if (!text || !path) {
        free(text);
        return -ENOMEM;
    }
    int r = write_file_atomic(path, text, strlen(text), 0600);
    free(text);
    return r;
}

void vmctl_image_info_clear(vmctl_image_info *i)
{
    if (!i)
        return;
    free(i->name);
    free(i->format);
    free(i->path);
    free(i->backing_file);
    free(i->sha256);
    free(i->source);
    *i = (vmctl_image_info){};
}

void vmctl_image_info_list_free(vmctl_image_info *list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        vmctl_image_info_clear(&list[i]);
    free(list);
}

static int cmp_info(const void *a, const void *b)
{
    return strcmp(((const vmctl_image_info *)a)->name, ((const vmctl_image_info *)b)->name);
}

int vmctl_image_list(vmctl_ctx *ctx, vmctl_image_info **ret, size_t *n, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    VMCTL_ARG_CHECK(n, reterr);
    *ret = NULL;
    *n = 0;
    image_prune_stale(ctx->home, NULL);
    vmctl_image_info *list = NULL;
    size_t count = 0;
    guest_paths gp = {0};
    if (guest_default_paths(ctx->home, &gp, NULL) >= 0) {
        guest_paths_clear(&gp);
        list = calloc(1, sizeof(*list));
        if (!list)
            return oom(reterr);
        list[0].name = strdup("default");
        list[0].format = strdup("kernel+initrd");
        list[0].path = image_dir(ctx->home, "default");
        list[0].size = list[0].path ? dir_size(list[0].path) : 0;
        count = 1;
        if (!list[0].name || !list[0].format || !list[0].path) {
            vmctl_image_info_list_free(list, count);
            return oom(reterr);
        }
    }
    cleanup_free char *dir = str_printf("%s/images", ctx->home);
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *de;
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.' || streq(de->d_name, "default"))
            continue;
        vmctl_image_info info;
        if (meta_read(ctx->home, de->d_name, &info, NULL) < 0)
            continue;
        vmctl_image_info *nl = realloc(list, (count + 1) * sizeof(*list));
        if (!nl) {
            vmctl_image_info_clear(&info);
            closedir(d);
            vmctl_image_info_list_free(list, count);
            return oom(reterr);
        }
        list = nl;
        list[count++] = info;
    }
    if (d)
        closedir(d);
    if (count > 1)
        qsort(list, count, sizeof(*list), cmp_info);
    *ret = list;
    *n = count;
    return 0;
}

/* ---------- adding images ---------- */

/* Copy [from, to) of in to the same offsets of out: copy_file_range, else read/write. */
static int copy_range(int in, int out, off_t from, off_t to, const image_copy *c, off_t size)
{
    static const volatile sig_atomic_t never = 0;
    const volatile sig_atomic_t *cancel = c && c->cancel ? c->cancel : &never;
    bool plain = false;
    cleanup_free char *buf = NULL;
    while (from < to) {
        if (*cancel)
            return -ECANCELED;
        size_t want = (size_t)(to - from < COPY_CHUNK ? to - from : COPY_CHUNK);
        ssize_t n;
        if (!plain) {
            loff_t io = from, oo = from;
            n = copy_file_range(in, &io, out, &oo, want, 0);
            if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                          errno == EOPNOTSUPP || errno == EBADF)) {
                plain = true;
                continue;
            }
        } else {
            if (!buf && !(buf = malloc(COPY_CHUNK)))
                return -ENOMEM;
            n = pread(in, buf, want, from);
            for (ssize_t done = 0; n > 0 && done < n;) {
                ssize_t w = pwrite(out, buf + done, (size_t)(n - done), from + done);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    return w < 0 ? -errno : -EIO;
                done += w;
            }
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -EIO; /* the source shrank under us */
        from += n;
        if (c && c->progress)
            c->progress(c->userdata, c->step ? c->step : "copying", (uint64_t)from, (uint64_t)size);
        if (c && c->delay_usec)
            sleep_usec(c->delay_usec); /* test hook: VMCTL_TEST_IMAGE_COPY_DELAY_MS */
    }
    return 0;
}

int image_copy_file(const char *src, const char *dst, const image_copy *c)
{
    cleanup_close int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return -errno;
    cleanup_close int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0)
        return -errno;
    if (ioctl(out, FICLONE, in) == 0)
        return 1;
    struct stat st;
    if (fstat(in, &st) < 0)
        return -errno;
    off_t size = st.st_size, pos = 0;
    int r = 0;
    /* the data segments only: holes stay holes (SEEK_DATA/SEEK_HOLE; a filesystem without them
     * reports the whole file as data) */
    while (pos < size && r >= 0) {
        off_t data = lseek(in, pos, SEEK_DATA);
        if (data < 0 && errno == ENXIO)
            break; /* only a hole is left */
        if (data < 0)
            data = pos;
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0 || hole > size)
            hole = size;
        r = copy_range(in, out, data, hole, c, size);
        pos = hole;
    }
    if (r >= 0 && ftruncate(out, size) < 0)
        r = -errno;
    if (r >= 0 && fsync(out) < 0)
        r = -errno;
    if (r < 0) {
        (void)unlink(dst);
        return r;
    }
    if (c && c->progress)
        c->progress(c->userdata, c->step ? c->step : "copying", (uint64_t)size, (uint64_t)size);
    return 0;
}

int image_clone_file(const char *src, const char *dst)
{
    return image_copy_file(src, dst, NULL);
}

/* A cache name from a file name or URL: its last component without compression and image
 * extensions, reduced to the name alphabet. */
static char *name_from(const char *s)
{
    const char *slash = strrchr(s, '/');
    const char *base = slash ? slash + 1 : s;
    char *n = strndup(base, strcspn(base, "?#"));
    if (!n)
        return NULL;
    static const char *const exts[] = {".zst",  ".xz",   ".qcow2", ".img", ".raw",
                                       ".vmdk", ".vhdx", ".vdi",   ".vhd", ".iso"};
    for (bool again = true; again;) {
        again = false;
        for (size_t i = 0; i < ELEMENTSOF(exts); i++) {
            size_t l = strlen(n), e = strlen(exts[i]);
            if (l > e && streq(n + l - e, exts[i])) {
                n[l - e] = 0;
                again = true;
            }
        }
    }
    for (char *p = n; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.'))
            *p = '-';
    if (strlen(n) > 63)
        n[63] = 0;
    return n;
}

static int check_new_name(const char *home, const char *name, vmctl_error **reterr)
{
    if (!name_is_valid(name))
        return err_invalid_field(reterr, "name", name,
                                 "1-63 letters, digits, '-', '_' or '.', starting with a letter "
                                 "or digit (--name)",
                                 "invalid image name '%s': use 1-63 letters, digits, '-', '_' or "
                                 "'.', starting with a letter or digit",
                                 name);
    if (streq(name, "default"))
        return err_invalid_field(reterr, "name", name, "any name but 'default' (--name)",
                                 "the image name 'default' is reserved for the default guest");
    cleanup_free char *dir = image_dir(home, name);
    if (dir && file_exists(dir))
        return already_exists(reterr, name);
    return 0;
}

/* The format of a file that is to become a disk, and that it names no other file: our header
 * parser first, so that no tool opens what a hostile header names (qemu-img info would open a
 * data file, or connect to a json: network block device), then qemu-img's opinion of the format
 * (image_detect) and of what the image names, with the format given. */
static int detect_self_contained(const char *path, image_probe *ret, vmctl_error **reterr)
{
    image_probe p = {};
    int r = image_probe_file(path, &p, reterr);
    if (r >= 0)
        r = image_check_self_contained(path, &p, false, reterr);
    image_probe_clear(&p);
    if (r >= 0)
        r = image_detect(path, ret, reterr);
    if (r >= 0 && (r = image_check_self_contained(path, ret, true, reterr)) < 0)
        image_probe_clear(ret);
    return r;
}

/* qcow2 images must also pass `qemu-img check` (a truncated download can keep a valid header). */
static int validate(const char *path, image_probe *p, vmctl_error **reterr)
{
    int r = detect_self_contained(path, p, reterr);
    if (r < 0)
        return r;
    if (!streq(p->format, "qcow2"))
        return 0;
    cleanup_free char *qemu_img = find_in_path("qemu-img");
    if (!qemu_img)
        return 0;
    char *argv[] = {qemu_img, "check", "-U", "-q", (char *)path, NULL};
    cleanup_free char *errs = NULL;
    int k = image_run(argv, NULL, &errs, 120);
    if (k == 0 || k == 3) /* 3: leaked clusters only, harmless */
        return 0;
    r = err_make(reterr, VMCTL_E_IMAGE_FORMAT_DETECTION_FAILED, EBADMSG,
                 "'%s' is a damaged qcow2 image (qemu-img check failed)", path);
    err_detail(reterr, "path", "%s", path);
    err_detail(reterr, "reason", "qemu-img check exit status %d", k);
    if (errs && *errs)
        err_note(reterr, "%s", errs);
    image_probe_clear(p);
    return r;
}

/* Move a finished tmp dir into place and read it back. */
static int commit_tmp(const char *home, const char *tmp, const char *name, vmctl_image_info *ret,
                      vmctl_error **reterr)
{
    cleanup_free char *dir = image_dir(home, name);
    if (!dir)
        return oom(reterr);
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_NOREPLACE) < 0) {
        int e = errno;
        if (e == EEXIST || e == ENOTEMPTY)
            return already_exists(reterr, name);
        int r = err_make(reterr, VMCTL_E_IO, e, "cannot move the image into '%s'", dir);
        err_detail(reterr, "path", "%s", dir);
        return r;
    }
    if (ret) {
        int r = meta_read(home, name, ret, NULL);
        if (r < 0)
            return err_make(reterr, VMCTL_E_IO, -r, "cannot read back image '%s'", name);
    }
    return 0;
}

static char *tmp_dir(const char *home, const char *name)
{
    return str_printf("%s/images/" TMP_PREFIX "%s-%d", home, name, (int)getpid());
}

/* The pid of a .tmp-<name>-<pid> directory, 0 when the name has none. */
static pid_t tmp_pid(const char *nm)
{
    const char *dash = strrchr(nm, '-');
    char *end = NULL;
    long pid = dash ? strtol(dash + 1, &end, 10) : 0;
    return pid > 0 && end && !*end ? (pid_t)pid : 0;
}

void image_prune_stale(const char *home, char ***ret_removed)
{
    cleanup_free char *dir = str_printf("%s/images", home);
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *de;
    size_t k = 0;
    while (d && (de = readdir(d))) {
        if (!str_startswith(de->d_name, TMP_PREFIX))
            continue;
        pid_t pid = tmp_pid(de->d_name);
        if (pid > 0 && proc_alive(pid, 0))
            continue;
        cleanup_free char *path = str_printf("%s/%s", dir, de->d_name);
        if (path && rm_rf(path) >= 0 && ret_removed)
            (void)strv_push(ret_removed, &k, de->d_name);
    }
    if (d)
        closedir(d);
}

/* images/ (0700) and a fresh images/.tmp-<name>-<pid>/ (0700) in it. */
static int make_tmp(const char *home, const char *tmp, vmctl_error **reterr)
{
    cleanup_free char *images = str_printf("%s/images", home);
    if (!images)
        return oom(reterr);
    int r = mkdir_private(images);
    if (r >= 0) {
        (void)rm_rf(tmp);
        r = mkdir(tmp, 0700) < 0 ? -errno : 0;
    }
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot create '%s'", tmp);
        err_detail(reterr, "path", "%s", tmp);
    }
    return r;
}

static int interrupted(vmctl_error **reterr, const char *what)
{
    return err_make(reterr, VMCTL_E_IO, ECANCELED, "%s interrupted", what);
}

static unsigned test_copy_delay_usec(void)
{
    const char *e = getenv("VMCTL_TEST_IMAGE_COPY_DELAY_MS");
    return e ? (unsigned)strtoul(e, NULL, 10) * 1000 : 0;
}

int vmctl_image_import(vmctl_ctx *ctx, const char *path, const char *name,
                       vmctl_progress_fn progress, void *userdata, vmctl_image_info *ret,
                       vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(path, reterr);
    image_prune_stale(ctx->home, NULL);
    struct stat st;
    int e = stat(path, &st) < 0      ? errno
            : S_ISDIR(st.st_mode)    ? EISDIR
            : !S_ISREG(st.st_mode)   ? EINVAL
            : access(path, R_OK) < 0 ? errno
                                     : 0;
    if (e == EINVAL)
        return err_invalid_field(reterr, "path", path, "a readable image file",
                                 "image file '%s' is not a regular file", path);
    if (e) {
        err_invalid_field(reterr, "path", path, "a readable image file",
                          "cannot read image file '%s'", path);
        return err_cause(reterr, e);
    }
    cleanup_free char *n = name ? strdup(name) : name_from(path);
    if (!n)
        return oom(reterr);
    int r = check_new_name(ctx->home, n, reterr);
    if (r < 0)
        return r;
    cleanup_free char *abs = realpath(path, NULL);
    if (!abs)
        return oom(reterr);
    image_probe p = {};
    /* a backing file, external data file or vmdk extent would hand the guest that host file */
    if ((r = detect_self_contained(abs, &p, reterr)) < 0)
        return r;
    cleanup_free char *tmp = tmp_dir(ctx->home, n);
    cleanup_free char *disk = str_printf("%s/disk", tmp);
    if (!tmp || !disk) {
        image_probe_clear(&p);
        return oom(reterr);
    }
    if ((r = make_tmp(ctx->home, tmp, reterr)) < 0) {
        image_probe_clear(&p);
        return r;
    }
    image_copy copy = {.progress = progress,
                       .userdata = userdata,
                       .cancel = ctx->cancel,
                       .step = "copying",
                       .delay_usec = test_copy_delay_usec()};
    char sha[65];
    r = image_copy_file(abs, disk, &copy);
    if (r < 0) {
        if (r == -ECANCELED)
            r = interrupted(reterr, "image import");
        else
            r = err_make(reterr, VMCTL_E_IO, -r, "cannot copy '%s' into the cache", path);
        err_detail(reterr, "path", "%s", path);
    } else {
        if (progress)
            progress(userdata, "checksumming", 0, 0);
        r = image_sha256_file(disk, sha, reterr);
        if (r >= 0 && ctx_cancelled(ctx))
            r = interrupted(reterr, "image import");
        if (r >= 0 && (r = meta_write(tmp, n, &p, sha, abs, NULL)) < 0)
            r = err_make(reterr, VMCTL_E_IO, -r, "cannot write the image metadata");
    }
    image_probe_clear(&p);
    if (r >= 0)
        r = commit_tmp(ctx->home, tmp, n, ret, reterr);
    if (r < 0)
        (void)rm_rf(tmp);
    return r;
}

static bool hex_ok(const char *s)
{
    if (!s || strlen(s) != 64)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F')))
            return false;
    return true;
}

int vmctl_image_pull(vmctl_ctx *ctx, const char *url, const char *name, const char *sha256,
                     vmctl_progress_fn progress, void *userdata, vmctl_image_info *ret,
                     bool *ret_cached, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(url, reterr);
    if (ret_cached)
        *ret_cached = false;
    if (!str_startswith(url, "http://") && !str_startswith(url, "https://") &&
        !str_startswith(url, "file://"))
        return err_invalid_field(reterr, "url", url, "an http://, https:// or file:// URL",
                                 "unsupported URL '%s'", url);
    if (sha256 && !hex_ok(sha256))
        return err_invalid_field(reterr, "sha256", sha256, "the 64 hex digits of the SHA-256",
                                 "invalid SHA-256 '%s'", sha256);
    char want[65] = "";
    if (sha256)
        for (int i = 0; i < 65; i++)
            want[i] = (char)(sha256[i] >= 'A' && sha256[i] <= 'F' ? sha256[i] + 32 : sha256[i]);
    cleanup_free char *n = name ? strdup(name) : name_from(url);
    if (!n)
        return oom(reterr);

    /* served from the cache: same name, same URL, same checksum when one is given */
    vmctl_image_info cached;
    cleanup_free char *cached_dl = NULL;
    if (name_is_valid(n) && meta_read(ctx->home, n, &cached, &cached_dl) == 0) {
        bool same = cached.source && streq(cached.source, url) &&
                    (!sha256 || (cached_dl && streq(cached_dl, want)));
        if (same) {
            if (ret_cached)
                *ret_cached = true;
            if (ret)
                *ret = cached;
            else
                vmctl_image_info_clear(&cached);
            return 0;
        }
        vmctl_image_info_clear(&cached);
    }
    image_prune_stale(ctx->home, NULL);
    int r = check_new_name(ctx->home, n, reterr);
    if (r < 0)
        return r;

    cleanup_free char *tmp = tmp_dir(ctx->home, n);
    cleanup_free char *dl = str_printf("%s/download", tmp);
    cleanup_free char *disk = str_printf("%s/disk", tmp);
    if (!tmp || !dl || !disk)
        return oom(reterr);
    if ((r = make_tmp(ctx->home, tmp, reterr)) < 0)
        return r;

    char got[65];
    image_probe p = {};
    const char *comp = NULL;
    char disk_sha[65];
    if ((r = download_file(url, dl, progress, userdata, ctx->cancel, reterr)) < 0)
        goto fail;
    if (progress)
        progress(userdata, "verifying", 0, 0);
    if ((r = image_sha256_file(dl, got, reterr)) < 0)
        goto fail;
    if (sha256 && !streq(got, want)) {
        r = err_make(reterr, VMCTL_E_IMAGE_CHECKSUM_MISMATCH, EBADMSG,
                     "the SHA-256 of '%s' does not match", url);
        err_detail(reterr, "url", "%s", url);
        err_detail(reterr, "expected", "%s", want);
        err_detail(reterr, "actual", "%s", got);
        goto fail;
    }
    comp = download_compression(dl);
    if (comp) {
        if ((r = download_decompress(dl, disk, comp, progress, userdata, ctx->cancel, reterr)) <
            0) {
            err_detail(reterr, "url", "%s", url);
            goto fail;
        }
        (void)unlink(dl);
    } else if (rename(dl, disk) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot rename '%s'", dl);
        goto fail;
    }
    if (ctx_cancelled(ctx)) {
        r = interrupted(reterr, "image pull");
        goto fail;
    }
    if ((r = validate(disk, &p, reterr)) < 0) {
        err_detail(reterr, "url", "%s", url);
        goto fail;
    }
    if (comp) {
        if ((r = image_sha256_file(disk, disk_sha, reterr)) < 0)
            goto fail;
    } else
        memcpy(disk_sha, got, sizeof(got));
    if ((r = meta_write(tmp, n, &p, disk_sha, url, got)) < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot write the image metadata");
        goto fail;
    }
    image_probe_clear(&p);
    if ((r = commit_tmp(ctx->home, tmp, n, ret, reterr)) < 0)
        goto fail;
    return 0;
fail:
    image_probe_clear(&p);
    (void)rm_rf(tmp);
    return r;
}

/* ---------- inspect, rm, prune, convert ---------- */

static bool is_cache_name(const vmctl_ctx *ctx, const char *s)
{
    if (!name_is_valid(s) || streq(s, "default"))
        return false;
    cleanup_free char *mp = str_printf("%s/images/%s/meta.json", ctx->home, s);
    return mp && file_exists(mp);
}

int vmctl_image_inspect(vmctl_ctx *ctx, const char *x, vmctl_image_info *ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(x, reterr);
    VMCTL_ARG_CHECK(ret, reterr);
    vmctl_image_info info = {};
    int r;
    if (is_cache_name(ctx, x)) {
        if ((r = meta_read(ctx->home, x, &info, NULL)) < 0)
            return err_make(reterr, VMCTL_E_IO, -r, "cannot read image '%s'", x);
    } else {
        struct stat st;
        if (stat(x, &st) < 0 || !S_ISREG(st.st_mode)) {
            int k = err_make(reterr, VMCTL_E_IMAGE_NOT_FOUND, ENOENT,
                             "no image '%s' in the cache and no such file", x);
            err_detail(reterr, "image", "%s", x);
            err_help(reterr, "Name a cached image (`vmctl image list`) or an image file.");
            return k;
        }
        info.path = realpath(x, NULL);
        info.size = (uint64_t)st.st_blocks * 512;
        if (!info.path)
            return oom(reterr);
    }
    image_probe p = {};
    if ((r = image_detect(info.path, &p, reterr)) < 0) {
        vmctl_image_info_clear(&info);
        return r;
    }
    free(info.format);
    info.format = strdup(p.format);
    info.virtual_size = p.virtual_size;
    info.backing_file = p.backing_file ? strdup(p.backing_file) : NULL;
    image_probe_clear(&p);
    if (!info.format) {
        vmctl_image_info_clear(&info);
        return oom(reterr);
    }
    *ret = info;
    return 0;
}

/* Names of the VMs whose spec was made from image name (NULL-terminated, may be empty). */
static int vms_using(vmctl_ctx *ctx, const char *name, char ***ret, vmctl_error **reterr)
{
    store_vm **rows = NULL;
    size_t n = 0;
    int r = store_vm_list(ctx->store, &rows, &n, reterr);
    if (r < 0)
        return r;
    char **names = NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        vm_spec *s = NULL;
        if (vm_spec_from_json(rows[i]->config, &s, NULL) < 0)
            continue;
        if (s->image && streq(s->image, name) && strv_push(&names, &k, rows[i]->name) < 0)
            r = -ENOMEM;
        vm_spec_free(s);
    }
    store_vm_list_free(rows, n);
    if (r < 0) {
        strv_free(names);
        return oom(reterr);
    }
    if (!names && !(names = calloc(1, sizeof(char *))))
        return oom(reterr);
    *ret = names;
    return 0;
}

int vmctl_image_remove(vmctl_ctx *ctx, const char *name, bool force, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(name, reterr);
    cleanup_free char *dir = name_is_valid(name) ? image_dir(ctx->home, name) : NULL;
    if (!dir || !file_exists(dir))
        return not_found(reterr, name);
    image_prune_stale(ctx->home, NULL);
    cleanup_strv char **users = NULL;
    int r = vms_using(ctx, name, &users, reterr);
    if (r < 0)
        return r;
    if (users[0] && !force) {
        size_t len = 0;
        for (char **u = users; *u; u++)
            len += strlen(*u) + 2;
        cleanup_free char *list = calloc(1, len + 1);
        for (char **u = users; list && *u; u++) {
            if (u != users)
                strcat(list, ", ");
            strcat(list, *u);
        }
        r = err_make(reterr, VMCTL_E_IMAGE_IN_USE, EBUSY, "image '%s' is used by vm %s", name,
                     list ? list : "?");
        err_detail(reterr, "image", "%s", name);
        err_detail(reterr, "vms", "%s", list ? list : "");
        err_help(reterr, "Destroy those VMs first (`vmctl destroy NAME`), or use --force: their "
                         "disks would then lose their base image.");
        return r;
    }
    if ((r = rm_rf(dir)) < 0) {
        r = err_make(reterr, VMCTL_E_IO, -r, "cannot remove '%s'", dir);
        err_detail(reterr, "path", "%s", dir);
        return r;
    }
    return 0;
}

int vmctl_image_prune(vmctl_ctx *ctx, bool all, char ***ret_removed, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    cleanup_free char *dir = str_printf("%s/images", ctx->home);
    if (!dir)
        return oom(reterr);
    cleanup_strv char **removed = NULL;
    size_t k = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    int r = 0;
    while (d && (de = readdir(d))) {
        const char *nm = de->d_name;
        if (streq(nm, ".") || streq(nm, ".."))
            continue;
        cleanup_free char *path = str_printf("%s/%s", dir, nm);
        if (!path) {
            r = -ENOMEM;
            break;
        }
        if (str_startswith(nm, TMP_PREFIX)) {
            /* .tmp-<name>-<pid>: only when that process is gone */
            pid_t pid = tmp_pid(nm);
            if (pid > 0 && proc_alive(pid, 0))
                continue;
        } else if (!all || streq(nm, "default") || !is_cache_name(ctx, nm)) {
            continue;
        } else {
            cleanup_strv char **users = NULL;
            if ((r = vms_using(ctx, nm, &users, reterr)) < 0)
                break;
            if (users[0])
                continue;
        }
        if (rm_rf(path) < 0)
            continue;
        if (strv_push(&removed, &k, nm) < 0) {
            r = -ENOMEM;
            break;
        }
    }
    if (d)
        closedir(d);
    if (r < 0)
        return r == -ENOMEM ? oom(reterr) : r;
    if (ret_removed) {
        if (!removed && !(removed = calloc(1, sizeof(char *))))
            return oom(reterr);
        *ret_removed = TAKE_PTR(removed);
    }
    return 0;
}

int vmctl_image_convert(vmctl_ctx *ctx, const char *src, const char *dst, const char *format,
                        vmctl_image_info *ret, vmctl_error **reterr)
{
    VMCTL_ARG_CHECK(ctx, reterr);
    VMCTL_ARG_CHECK(src, reterr);
    VMCTL_ARG_CHECK(dst, reterr);
    VMCTL_ARG_CHECK(format, reterr);
    static const char *const formats[] = {"qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc"};
    bool ok = false;
    for (size_t i = 0; i < ELEMENTSOF(formats); i++)
        ok |= streq(format, formats[i]);
    if (!ok)
        return err_invalid_field(reterr, "format", format, "qcow2, raw, vmdk, vdi, vhdx or vpc",
                                 "unknown target format '%s'", format);
    vmctl_image_info in = {};
    int r = vmctl_image_inspect(ctx, src, &in, reterr);
    if (r < 0)
        return r;
    /* qemu-img convert would copy what a backing or data file names into dst */
    image_probe cp = {};
    if ((r = image_probe_file(in.path, &cp, reterr)) >= 0)
        r = image_check_self_contained(in.path, &cp, true, reterr);
    image_probe_clear(&cp);
    if (r < 0) {
        vmctl_image_info_clear(&in);
        return r;
    }
    cleanup_free char *qemu_img = find_in_path("qemu-img");
    cleanup_free char *tmp = str_printf("%s.tmp-%d", dst, (int)getpid());
    if (!qemu_img || !tmp) {
        vmctl_image_info_clear(&in);
        r = err_make(reterr, VMCTL_E_HOST_MISSING_DEPENDENCY, ENOENT, "qemu-img not found");
        err_help(reterr, "Install the Debian package 'qemu-utils'.");
        return r;
    }
    char *argv[] = {
        qemu_img, "convert",      "-U",    "-f", (char *)image_format_qemu_name(in.format),
        "-O",     (char *)format, in.path, tmp,  NULL};
    cleanup_free char *errs = NULL;
    int k = image_run(argv, NULL, &errs, 3600);
    if (k != 0) {
        r = err_make(reterr, VMCTL_E_IMAGE_CONVERSION_FAILED, k < 0 ? -k : EIO,
                     "cannot convert '%s' to %s", src, format);
        err_detail(reterr, "path", "%s", in.path);
        err_detail(reterr, "format", "%s", format);
        if (errs && *errs)
            err_note(reterr, "%s", errs);
        (void)unlink(tmp);
    } else if (rename(tmp, dst) < 0) {
        r = err_make(reterr, VMCTL_E_IMAGE_CONVERSION_FAILED, errno, "cannot rename '%s'", tmp);
        (void)unlink(tmp);
    }
    vmctl_image_info_clear(&in);
    if (r < 0)
        return r;
    if (ret)
        return vmctl_image_inspect(ctx, dst, ret, reterr);
    return 0;
}

/* ---------- VM disks ---------- */

void image_ref_clear(image_ref *r)
{
    if (!r)
        return;
    free(r->name);
    free(r->path);
    free(r->format);
    free(r->sha256);
    *r = (image_ref){};
}

int image_resolve(const char *home, const char *image, image_ref *ret, vmctl_error **reterr)
{
    *ret = (image_ref){};
    vmctl_image_info info = {};
    bool cached = !strchr(image, '/') && name_is_valid(image) && !streq(image, "default") &&
                  meta_read(home, image, &info, NULL) == 0;
    int r;
    if (cached) {
        ret->name = strdup(image);
        ret->path = TAKE_PTR(info.path);
        ret->sha256 = TAKE_PTR(info.sha256);
        vmctl_image_info_clear(&info);
    } else {
        ret->path = realpath(image, NULL);
        if (!ret->path || access(ret->path, R_OK) < 0) {
            int e = ret->path ? errno : errno ? errno : ENOENT;
            image_ref_clear(ret);
            r = err_make(reterr, VMCTL_E_IMAGE_OVERLAY_CREATION_FAILED, e,
                         "base image '%s' is missing or unreadable", image);
            err_detail(reterr, "image", "%s", image);
            err_help(reterr, "Name a cached image (`vmctl image list`, `vmctl image import`) or a "
                             "readable image file.");
            return r;
        }
    }
    /* A path is anyone's file: a backing file, an external data file or vmdk extents would give
     * the guest the host files they name, and qemu-img must agree on its format (a qed or other
     * format our parser does not know would pass as raw) and on what it names. A cached image
     * was checked when it came in (its directory is vmctl's, 0700): its header again. */
    image_probe p = {};
    if (cached) {
        r = image_probe_file(ret->path, &p, reterr);
        if (r >= 0 && (r = image_check_self_contained(ret->path, &p, false, reterr)) < 0)
            image_probe_clear(&p);
    } else {
        r = detect_self_contained(ret->path, &p, reterr);
    }
    if (r < 0) {
        err_detail(reterr, "image", "%s", image);
        image_ref_clear(ret);
        return r;
    }
    ret->format = strdup(p.format);
    ret->virtual_size = p.virtual_size;
    if (!p.virtual_size && streq(p.format, "vhdx")) {
        cleanup_free char *qf = NULL;
        (void)image_qemu_img_info(ret->path, &qf, &ret->virtual_size, NULL);
    }
    image_probe_clear(&p);
    if (!ret->format || (cached && !ret->name)) {
        image_ref_clear(ret);
        return oom(reterr);
    }
    return 0;
}

int image_make_overlay(const char *path, const image_ref *base, uint64_t size, vmctl_error **reterr)
{
    if (access(base->path, R_OK) < 0) {
        int r = err_make(reterr, VMCTL_E_IMAGE_OVERLAY_CREATION_FAILED, errno,
                         "base image '%s' is missing or unreadable", base->path);
        err_detail(reterr, "path", "%s", base->path);
        return r;
    }
    uint64_t vsize = size > base->virtual_size ? size : base->virtual_size;
    return qcow2_create_overlay(path, vsize, base->path, image_format_qemu_name(base->format),
                                reterr);
}

int image_clone_rootfs(const char *path, const image_ref *base, uint64_t size, vmctl_error **reterr)
{
    char sha[65];
    int r = image_sha256_file(base->path, sha, reterr);
    if (r < 0)
        return r;
    if (base->sha256 && !streq(sha, base->sha256)) {
        r = err_make(reterr, VMCTL_E_IMAGE_ROOTFS_FAILED, EBADMSG,
                     "root filesystem template '%s' changed since it was cached", base->path);
        err_detail(reterr, "path", "%s", base->path);
        err_detail(reterr, "expected", "%s", base->sha256);
        err_detail(reterr, "actual", "%s", sha);
        err_help(reterr, "Remove the image (`vmctl image rm %s`) and import or pull it again.",
                 base->name ? base->name : base->path);
        return r;
    }
    r = image_clone_file(base->path, path);
    if (r < 0) {
        r = err_make(reterr, VMCTL_E_IMAGE_ROOTFS_FAILED, -r, "cannot clone root filesystem '%s'",
                     base->path);
        err_detail(reterr, "path", "%s", path);
        return r;
    }
    if (size > base->virtual_size && truncate(path, (off_t)size) < 0) {
        r = err_make(reterr, VMCTL_E_IMAGE_ROOTFS_FAILED, errno, "cannot grow '%s'", path);
        err_detail(reterr, "path", "%s", path);
        return r;
    }
    return 0;
}
