/* SPDX-License-Identifier: MIT */
/* libcurl download into a file, and streaming .zst / .xz decompression. The three libraries are
 * loaded on first use (dl.h). */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <lzma.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "dl.h"
#include "download.h"
#include "error.h"
#include "util/util.h"

/* libcurl, libzstd and liblzma are loaded when a download or a decompression starts (dl.h). */
static DLSYM_PROTOTYPE(curl_global_init);
static DLSYM_PROTOTYPE(curl_easy_init);
static DLSYM_PROTOTYPE(curl_easy_setopt);
static DLSYM_PROTOTYPE(curl_easy_perform);
static DLSYM_PROTOTYPE(curl_easy_getinfo);
static DLSYM_PROTOTYPE(curl_easy_cleanup);
static DLSYM_PROTOTYPE(curl_easy_strerror);
static const dl_symbol curl_symbols[] = {
    DL_SYMBOL(curl_global_init),   DL_SYMBOL(curl_easy_init),    DL_SYMBOL(curl_easy_setopt),
    DL_SYMBOL(curl_easy_perform),  DL_SYMBOL(curl_easy_getinfo), DL_SYMBOL(curl_easy_cleanup),
    DL_SYMBOL(curl_easy_strerror),
};
dl_library dl_lib_curl = DL_LIBRARY("libcurl.so.4", "libcurl4", "downloading images", curl_symbols);

static DLSYM_PROTOTYPE(ZSTD_createDCtx);
static DLSYM_PROTOTYPE(ZSTD_decompressStream);
static DLSYM_PROTOTYPE(ZSTD_freeDCtx);
static DLSYM_PROTOTYPE(ZSTD_getErrorName);
static DLSYM_PROTOTYPE(ZSTD_isError);
static const dl_symbol zstd_symbols[] = {
    DL_SYMBOL(ZSTD_createDCtx),   DL_SYMBOL(ZSTD_decompressStream), DL_SYMBOL(ZSTD_freeDCtx),
    DL_SYMBOL(ZSTD_getErrorName), DL_SYMBOL(ZSTD_isError),
};
dl_library dl_lib_zstd =
    DL_LIBRARY("libzstd.so.1", "libzstd1", "decompressing .zst images", zstd_symbols);

static DLSYM_PROTOTYPE(lzma_stream_decoder);
static DLSYM_PROTOTYPE(lzma_code);
static DLSYM_PROTOTYPE(lzma_end);
static const dl_symbol lzma_symbols[] = {
    DL_SYMBOL(lzma_stream_decoder),
    DL_SYMBOL(lzma_code),
    DL_SYMBOL(lzma_end),
};
dl_library dl_lib_lzma =
    DL_LIBRARY("liblzma.so.5", "liblzma5", "decompressing .xz images", lzma_symbols);

struct xfer {
    int fd;
    int werr;
    vmctl_progress_fn progress;
    void *userdata;
    const volatile sig_atomic_t *cancel;
};

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct xfer *x = ud;
    size_t len = size * nmemb, done = 0;
    while (done < len) {
        ssize_t n = write(x->fd, ptr + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            x->werr = n < 0 ? errno : EIO;
            return 0; /* aborts the transfer */
        }
        done += (size_t)n;
    }
    return len;
}

static int on_progress(void *ud, curl_off_t total, curl_off_t now, curl_off_t ut, curl_off_t un)
{
    struct xfer *x = ud;
    if (x->cancel && *x->cancel)
        return 1; /* aborts the transfer */
    if (x->progress)
        x->progress(x->userdata, "downloading", (uint64_t)now, (uint64_t)total);
    return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    sym_curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int dl_failed(vmctl_error **reterr, int errnum, const char *url, const char *reason)
{
    int r = err_make(reterr, VMCTL_E_IMAGE_DOWNLOAD_FAILED, errnum, "cannot download '%s': %s", url,
                     reason);
    err_detail(reterr, "url", "%s", url);
    return r;
}

int download_file(const char *url, const char *dest, vmctl_progress_fn progress, void *userdata,
                  const volatile sig_atomic_t *cancel, vmctl_error **reterr)
{
    int k = dl_open(&dl_lib_curl, reterr);
    if (k < 0)
        return err_prefix(reterr, k, "while downloading '%s'", url);
    pthread_once(&curl_once, curl_init_once);
    cleanup_close int fd = open(dest, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        int r = err_make(reterr, VMCTL_E_IO, errno, "cannot create '%s'", dest);
        err_detail(reterr, "path", "%s", dest);
        return r;
    }
    CURL *h = sym_curl_easy_init();
    if (!h)
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot initialise libcurl");
    struct xfer x = {.fd = fd, .progress = progress, .userdata = userdata, .cancel = cancel};
    char errbuf[CURL_ERROR_SIZE] = "";
    const char *stall = getenv("VMCTL_DOWNLOAD_STALL_SECONDS");
    long stall_sec = stall ? strtol(stall, NULL, 10) : 60;
    sym_curl_easy_setopt(h, CURLOPT_URL, url);
    sym_curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https,file");
    sym_curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    sym_curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    sym_curl_easy_setopt(h, CURLOPT_MAXREDIRS, 10L);
    sym_curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
    sym_curl_easy_setopt(h, CURLOPT_WRITEDATA, &x);
    sym_curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    sym_curl_easy_setopt(h, CURLOPT_XFERINFODATA, &x);
    sym_curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    sym_curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
    sym_curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 30L);
    sym_curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
    sym_curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, stall_sec > 0 ? stall_sec : 60L);
    sym_curl_easy_setopt(h, CURLOPT_USERAGENT,
                         "vmctl/"
                         "0.1");
    sym_curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    CURLcode c = sym_curl_easy_perform(h);
    long status = 0;
    sym_curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    sym_curl_easy_cleanup(h);
    int r = 0;
    if (c == CURLE_ABORTED_BY_CALLBACK && cancel && *cancel) {
        r = err_make(reterr, VMCTL_E_IO, ECANCELED, "download of '%s' interrupted", url);
        err_detail(reterr, "url", "%s", url);
    } else if (c == CURLE_WRITE_ERROR && x.werr) {
        r = err_make(reterr, VMCTL_E_IO, x.werr, "cannot write '%s'", dest);
        err_detail(reterr, "path", "%s", dest);
    } else if (c != CURLE_OK) {
        const char *reason = *errbuf ? errbuf : sym_curl_easy_strerror(c);
        r = dl_failed(reterr, EIO, url, reason);
        err_detail(reterr, "reason", "%s", reason);
        err_help(reterr, "Check the URL and the network, then run `vmctl image pull` again.");
    } else if (str_startswith(url, "http") && (status < 200 || status >= 300)) {
        char reason[32];
        snprintf(reason, sizeof(reason), "HTTP status %ld", status);
        r = dl_failed(reterr, status == 404 ? ENOENT : EIO, url, reason);
        err_detail_num(reterr, "status_code", (double)status);
        err_help(reterr, "Check the URL: the server answered with an error status.");
    } else if (fsync(fd) < 0) {
        r = err_make(reterr, VMCTL_E_IO, errno, "cannot write '%s'", dest);
        err_detail(reterr, "path", "%s", dest);
    }
    if (r < 0)
        (void)unlink(dest);
    return r;
}

const char *download_compression(const char *path)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t m[6] = {};
    if (fd < 0 || read(fd, m, sizeof(m)) != (ssize_t)sizeof(m))
        return NULL;
    if (memcmp(m, "\x28\xb5\x2f\xfd", 4) == 0)
        return "zst";
    if (memcmp(m,
               "\xfd"
               "7zXZ\0",
               6) == 0)
        return "xz";
    return NULL;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

#define CHUNK (1 << 20)

int download_decompress(const char *src, const char *dst, const char *kind,
                        vmctl_progress_fn progress, void *userdata,
                        const volatile sig_atomic_t *cancel, vmctl_error **reterr)
{
    cleanup_close int in = open(src, O_RDONLY | O_CLOEXEC);
    cleanup_close int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (in < 0 || out < 0) {
        int r = err_make(reterr, VMCTL_E_IO, errno, "cannot open '%s'", in < 0 ? src : dst);
        err_detail(reterr, "path", "%s", in < 0 ? src : dst);
        return r;
    }
    struct stat st;
    uint64_t total = fstat(in, &st) == 0 ? (uint64_t)st.st_size : 0, consumed = 0;
    cleanup_free uint8_t *ibuf = malloc(CHUNK);
    cleanup_free uint8_t *obuf = malloc(CHUNK);
    if (!ibuf || !obuf)
        return -ENOMEM;
    bool zst = streq(kind, "zst");
    int k = dl_open(zst ? &dl_lib_zstd : &dl_lib_lzma, reterr);
    if (k < 0) {
        (void)unlink(dst);
        return err_prefix(reterr, k, "while decompressing '%s'", src);
    }
    ZSTD_DCtx *z = zst ? sym_ZSTD_createDCtx() : NULL;
    lzma_stream xz = LZMA_STREAM_INIT;
    if (zst && !z) {
        (void)unlink(dst);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot initialise the zstd decoder");
    }
    if (!zst && sym_lzma_stream_decoder(&xz, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK) {
        (void)unlink(dst);
        return err_make(reterr, VMCTL_E_INTERNAL, ENOMEM, "cannot initialise the xz decoder");
    }
    const char *why = NULL;
    int r = 0;
    bool finished = false;
    size_t zlast = 0;
    for (;;) {
        if (cancel && *cancel) {
            r = -ECANCELED;
            why = "interrupted";
            break;
        }
        ssize_t n = read(in, ibuf, CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno; /* the cause: why stays NULL */
            break;
        }
        consumed += (uint64_t)n;
        if (progress)
            progress(userdata, "decompressing", consumed, total);
        if (zst) {
            if (n == 0)
                break;
            ZSTD_inBuffer ib = {ibuf, (size_t)n, 0};
            while (ib.pos < ib.size) {
                ZSTD_outBuffer ob = {obuf, CHUNK, 0};
                zlast = sym_ZSTD_decompressStream(z, &ob, &ib);
                if (sym_ZSTD_isError(zlast)) {
                    why = sym_ZSTD_getErrorName(zlast);
                    r = -EBADMSG;
                    break;
                }
                if ((r = write_all(out, obuf, ob.pos)) < 0)
                    break;
            }
            if (r < 0)
                break;
        } else {
            xz.next_in = ibuf;
            xz.avail_in = (size_t)n;
            lzma_action act = n == 0 ? LZMA_FINISH : LZMA_RUN;
            for (;;) {
                xz.next_out = obuf;
                xz.avail_out = CHUNK;
                lzma_ret lr = sym_lzma_code(&xz, act);
                if ((r = write_all(out, obuf, CHUNK - xz.avail_out)) < 0)
                    break;
                if (lr == LZMA_STREAM_END) {
                    finished = true;
                    break;
                }
                if (lr != LZMA_OK) {
                    why = lr == LZMA_BUF_ERROR ? "truncated xz stream" : "corrupt xz stream";
                    r = -EBADMSG;
                    break;
                }
                if (xz.avail_in == 0 && xz.avail_out != 0)
                    break;
            }
            if (r < 0 || finished || n == 0)
                break;
        }
    }
    if (zst && r >= 0 && zlast != 0) {
        why = "truncated zstd stream";
        r = -EBADMSG;
    }
    if (!zst && r >= 0 && !finished) {
        why = "truncated xz stream";
        r = -EBADMSG;
    }
    if (zst)
        sym_ZSTD_freeDCtx(z);
    else
        sym_lzma_end(&xz);
    if (r >= 0 && fsync(out) < 0)
        r = -errno;
    if (r < 0) {
        (void)unlink(dst);
        if (r == -ECANCELED)
            return err_make(reterr, VMCTL_E_IO, ECANCELED, "decompression of '%s' interrupted",
                            src);
        /* why: what the decoder said; else the errno is the cause */
        k = err_make(reterr, VMCTL_E_IMAGE_DOWNLOAD_FAILED, -r, "cannot decompress '%s'%s%s", src,
                     why ? ": " : "", why ? why : "");
        err_detail(reterr, "path", "%s", src);
        err_detail(reterr, "reason", "%s", why ? why : strerror(-r));
        if (!why)
            err_cause(reterr, r); /* a system call's: shown even if it is EIO */
        return k;
    }
    return 0;
}
