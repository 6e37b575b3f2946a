/* SPDX-License-Identifier: MIT */
/* Image format detection from the file's own header (qcow2, vmdk, vhdx, vdi, vpc, ISO 9660,
 * else raw), qemu-img info as the second opinion, SHA-256 of files, and a small bounded
 * process runner for the qemu-img / genisoimage calls. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dl.h"
#include "error.h"
#include "image-format.h"
#include "util/util.h"

/* libcrypto (SHA-256) is loaded when a checksum is first needed (dl.h). */
static DLSYM_PROTOTYPE(EVP_MD_CTX_new);
static DLSYM_PROTOTYPE(EVP_MD_CTX_free);
static DLSYM_PROTOTYPE(EVP_sha256);
static DLSYM_PROTOTYPE(EVP_DigestInit_ex);
static DLSYM_PROTOTYPE(EVP_DigestUpdate);
static DLSYM_PROTOTYPE(EVP_DigestFinal_ex);
static const dl_symbol crypto_symbols[] = {
    DL_SYMBOL(EVP_MD_CTX_new),    DL_SYMBOL(EVP_MD_CTX_free),  DL_SYMBOL(EVP_sha256),
    DL_SYMBOL(EVP_DigestInit_ex), DL_SYMBOL(EVP_DigestUpdate), DL_SYMBOL(EVP_DigestFinal_ex),
};
dl_library dl_lib_crypto =
    DL_LIBRARY("libcrypto.so.3", "libssl3", "SHA-256 checksums of images", crypto_symbols);

extern char **environ;

#define PROBE_BYTES (64 * 1024)

/* why: NULL when errnum is the cause (the reason detail is then its text) */
static int detection_failed(vmctl_error **reterr, int errnum, const char *path, const char *why)
{
    int r = err_make(reterr, VMCTL_E_IMAGE_FORMAT_DETECTION_FAILED, errnum,
                     "cannot detect the format of '%s'%s%s", path, why ? ": " : "", why ? why : "");
    err_detail(reterr, "path", "%s", path);
    err_detail(reterr, "reason", "%s", why ? why : strerror(errnum));
    if (!why)
        err_cause(reterr, errnum); /* a system call's: shown even if it is EIO */
    return r;
}

int image_probe_file(const char *path, image_probe *ret, vmctl_error **reterr)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return detection_failed(reterr, errno, path, NULL);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return detection_failed(reterr, errno, path, NULL);
    if (S_ISDIR(st.st_mode))
        return detection_failed(reterr, EISDIR, path, NULL);
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return detection_failed(reterr, EINVAL, path, "not a regular file");
    cleanup_free uint8_t *buf = calloc(1, PROBE_BYTES);
    if (!buf)
        return -ENOMEM;
    size_t got = 0;
    while (got < PROBE_BYTES) {
        ssize_t n = pread(fd, buf + got, PROBE_BYTES - got, (off_t)got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return detection_failed(reterr, errno, path, NULL);
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    const char *why = "unknown";
    int r = image_probe_buffer(buf, got, (uint64_t)st.st_size, ret, &why);
    if (r == -ENOMEM)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "out of memory");
    if (r < 0)
        return detection_failed(reterr, -r, path, why);
    return 0;
}

const char *image_format_qemu_name(const char *format)
{
    return format && streq(format, "iso") ? "raw" : format;
}

/* ---------- processes ---------- */

static int drain(int fd, char **buf, size_t *len)
{
    char tmp[4096];
    ssize_t n = read(fd, tmp, sizeof(tmp));
    if (n <= 0)
        return n < 0 && (errno == EINTR || errno == EAGAIN) ? 1 : 0;
    if (*len < 1024 * 1024) { /* keep at most 1 MiB */
        char *nb = realloc(*buf, *len + (size_t)n + 1);
        if (!nb)
            return -ENOMEM;
        memcpy(nb + *len, tmp, (size_t)n);
        *len += (size_t)n;
        nb[*len] = 0;
        *buf = nb;
    }
    return 1;
}

int image_run(char *const argv[], char **ret_out, char **ret_err, double timeout_sec)
{
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(err, O_CLOEXEC) < 0) {
        int e = -errno;
        close(out[0]);
        close(out[1]);
        return e;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    pid_t pid;
    int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(out[1]);
    close(err[1]);
    if (r != 0) {
        close(out[0]);
        close(err[0]);
        return -r;
    }
    char *obuf = NULL, *ebuf = NULL;
    size_t olen = 0, elen = 0;
    uint64_t deadline = now_usec() + (uint64_t)(timeout_sec * 1e6);
    struct pollfd pfd[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
    bool timed_out = false;
    while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
        uint64_t now = now_usec();
        if (now >= deadline) {
            timed_out = true;
            break;
        }
        int k = poll(pfd, 2, (int)((deadline - now) / 1000) + 1);
        if (k < 0 && errno != EINTR)
            break;
        for (int i = 0; i < 2 && k > 0; i++) {
            if (pfd[i].fd < 0 || !pfd[i].revents)
                continue;
            int d = i == 0 ? drain(pfd[i].fd, &obuf, &olen) : drain(pfd[i].fd, &ebuf, &elen);
            if (d <= 0) {
                close(pfd[i].fd);
                pfd[i].fd = -1;
            }
        }
    }
    if (pfd[0].fd >= 0)
        close(pfd[0].fd);
    if (pfd[1].fd >= 0)
        close(pfd[1].fd);
    if (timed_out)
        kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (ret_out)
        *ret_out = obuf ? obuf : strdup("");
    else
        free(obuf);
    if (ret_err)
        *ret_err = ebuf ? ebuf : strdup("");
    else
        free(ebuf);
    if (timed_out)
        return -ETIMEDOUT;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void strip(char *s)
{
    size_t n = s ? strlen(s) : 0;
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = 0;
}

/* `qemu-img info -U [-f format] --output=json path` parsed: a JSON object in *ret. */
static int qemu_img_info_json(const char *qemu_img, const char *path, const char *format,
                              json_t **ret, vmctl_error **reterr)
{
    char *argv[8];
    size_t n = 0;
    argv[n++] = (char *)qemu_img;
    argv[n++] = "info";
    argv[n++] = "-U";
    if (format) {
        argv[n++] = "-f";
        argv[n++] = (char *)format;
    }
    argv[n++] = "--output=json";
    argv[n++] = (char *)path;
    argv[n] = NULL;
    cleanup_free char *out = NULL, *errs = NULL;
    int r = image_run(argv, &out, &errs, 30);
    if (r != 0) {
        strip(errs);
        r = detection_failed(reterr, r < 0 ? -r : EIO, path,
                             r == -ETIMEDOUT ? "qemu-img info timed out" : "qemu-img info failed");
        if (errs && *errs)
            err_note(reterr, "%s", errs);
        return r;
    }
    json_t *j = json_loads(out, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return detection_failed(reterr, EIO, path, "qemu-img info printed no JSON");
    }
    *ret = j;
    return 0;
}

int image_qemu_img_info(const char *path, char **ret_format, uint64_t *ret_virtual_size,
                        vmctl_error **reterr)
{
    cleanup_free char *qemu_img = find_in_path("qemu-img");
    if (!qemu_img)
        return -ENOENT;
    json_t *j = NULL;
    int r = qemu_img_info_json(qemu_img, path, NULL, &j, reterr);
    if (r < 0)
        return r;
    const char *fmt = json_string_value(json_object_get(j, "format"));
    if (!fmt) {
        json_decref(j);
        return detection_failed(reterr, EIO, path, "qemu-img info printed no format");
    }
    *ret_format = strdup(fmt);
    *ret_virtual_size = (uint64_t)json_integer_value(json_object_get(j, "virtual-size"));
    json_decref(j);
    return *ret_format ? 0 : -ENOMEM;
}

int image_detect(const char *path, image_probe *ret, vmctl_error **reterr)
{
    image_probe p = {};
    int r = image_probe_file(path, &p, reterr);
    if (r < 0)
        return r;
    if (p.data_file) { /* qemu-img info would open that file (or connect to a json: device) */
        *ret = p;
        return 0;
    }
    cleanup_free char *qfmt = NULL;
    uint64_t qsize = 0;
    r = image_qemu_img_info(path, &qfmt, &qsize, reterr);
    if (r == -ENOENT) { /* no qemu-img: our answer alone */
        *ret = p;
        return 0;
    }
    if (r < 0) {
        image_probe_clear(&p);
        return r;
    }
    if (!streq(qfmt, image_format_qemu_name(p.format))) {
        r = err_make(reterr, VMCTL_E_IMAGE_FORMAT_DETECTION_FAILED, EINVAL,
                     "the format of '%s' is unclear: its header says %s, qemu-img says %s", path,
                     p.format, qfmt);
        err_detail(reterr, "path", "%s", path);
        err_detail(reterr, "format", "%s", p.format);
        err_detail(reterr, "qemu_img_format", "%s", qfmt);
        image_probe_clear(&p);
        return r;
    }
    if (!p.virtual_size)
        p.virtual_size = qsize;
    *ret = p;
    return 0;
}

static int unsafe(vmctl_error **reterr, const char *path, const char *key, const char *file,
                  const char *what)
{
    int r = err_make(reterr, VMCTL_E_IMAGE_UNSAFE, EPERM, "'%s' %s '%s': refused", path, what,
                     file && *file ? file : "(unnamed)");
    err_detail(reterr, "path", "%s", path);
    err_detail(reterr, key, "%s", file ? file : "");
    err_note(reterr, "a disk that names another file would give the guest that host file");
    return r;
}

/* Does name (relative names are relative to the image's directory) name path itself? */
static bool same_file(const char *path, const char *name)
{
    cleanup_free char *dir = strdup(path);
    if (!dir)
        return false;
    char *slash = strrchr(dir, '/');
    cleanup_free char *full = name[0] == '/' ? strdup(name)
                              : slash        ? (slash[1] = 0, str_printf("%s%s", dir, name))
                                             : strdup(name);
    struct stat a, b;
    return full && stat(path, &a) == 0 && stat(full, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

int image_check_self_contained(const char *path, const image_probe *p, bool ask_qemu_img,
                               vmctl_error **reterr)
{
    if (p->backing_file)
        return unsafe(reterr, path, "backing_file", p->backing_file,
                      "is an overlay: its backing file is");
    if (p->data_file)
        return unsafe(reterr, path, "data_file", p->data_file, "keeps its data in another file,");
    /* the second opinion, with the format given: what would QEMU open besides path? */
    cleanup_free char *qemu_img = ask_qemu_img ? find_in_path("qemu-img") : NULL;
    if (!qemu_img)
        return 0;
    json_t *j = NULL;
    int r = qemu_img_info_json(qemu_img, path, image_format_qemu_name(p->format), &j, reterr);
    if (r < 0)
        return r;
    const char *bf = json_string_value(json_object_get(j, "backing-filename"));
    json_t *data = json_object_get(json_object_get(j, "format-specific"), "data");
    const char *df = json_string_value(json_object_get(data, "data-file"));
    json_t *extents = json_object_get(data, "extents");
    if (bf)
        r = unsafe(reterr, path, "backing_file", bf, "is an overlay: its backing file is");
    else if (df)
        r = unsafe(reterr, path, "data_file", df, "keeps its data in another file,");
    for (size_t i = 0; r >= 0 && json_is_array(extents) && i < json_array_size(extents); i++) {
        const char *ef = json_string_value(json_object_get(json_array_get(extents, i), "filename"));
        if (ef && !same_file(path, ef))
            r = unsafe(reterr, path, "data_file", ef, "keeps its data in another file,");
    }
    json_decref(j);
    return r;
}

int image_sha256_file(const char *path, char hex[65], vmctl_error **reterr)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int r = err_make(reterr, VMCTL_E_IO, errno, "cannot open '%s'", path);
        err_detail(reterr, "path", "%s", path);
        return r;
    }
    int k = dl_open(&dl_lib_crypto, reterr);
    if (k < 0)
        return err_prefix(reterr, k, "while computing the SHA-256 of '%s'", path);
    EVP_MD_CTX *md = sym_EVP_MD_CTX_new();
    if (!md || sym_EVP_DigestInit_ex(md, sym_EVP_sha256(), NULL) != 1) {
        sym_EVP_MD_CTX_free(md);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot initialise SHA-256");
    }
    cleanup_free uint8_t *buf = malloc(1 << 20);
    if (!buf) {
        sym_EVP_MD_CTX_free(md);
        return -ENOMEM;
    }
    for (;;) {
        ssize_t n = read(fd, buf, 1 << 20);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int r = err_make(reterr, VMCTL_E_IO, errno, "cannot read '%s'", path);
            err_detail(reterr, "path", "%s", path);
            sym_EVP_MD_CTX_free(md);
            return r;
        }
        if (n == 0)
            break;
        sym_EVP_DigestUpdate(md, buf, (size_t)n);
    }
    unsigned char dig[32];
    unsigned int dl = 0;
    sym_EVP_DigestFinal_ex(md, dig, &dl);
    sym_EVP_MD_CTX_free(md);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", dig[i]);
    return 0;
}
