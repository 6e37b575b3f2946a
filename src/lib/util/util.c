/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

char *str_vprintf(const char *fmt, va_list ap)
{
    char *s = NULL;
    return vasprintf(&s, fmt, ap) < 0 ? NULL : s; /* s is undefined on failure */
}

char *str_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = str_vprintf(fmt, ap);
    va_end(ap);
    return s;
}

bool str_startswith(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int strv_push_take(char ***strv, size_t *n, char *s)
{
    if (!s)
        return -ENOMEM;
    char **nv = realloc(*strv, sizeof(char *) * (*n + 2));
    if (!nv) {
        free(s);
        return -ENOMEM;
    }
    nv[(*n)++] = s;
    nv[*n] = NULL;
    *strv = nv;
    return 0;
}

int strv_push(char ***strv, size_t *n, const char *s)
{
    return strv_push_take(strv, n, strdup(s));
}

int strv_pushf(char ***strv, size_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = str_vprintf(fmt, ap);
    va_end(ap);
    return s ? strv_push_take(strv, n, s) : -ENOMEM;
}

size_t strv_length(char *const *strv)
{
    size_t n = 0;
    while (strv && strv[n])
        n++;
    return n;
}

char **strv_copy(char *const *strv)
{
    size_t n = strv_length(strv);
    char **c = calloc(n + 1, sizeof(char *));
    if (!c)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        c[i] = strdup(strv[i]);
        if (!c[i]) {
            strv_free(c);
            return NULL;
        }
    }
    return c;
}

void strv_free(char **strv)
{
    if (!strv)
        return;
    for (char **p = strv; *p; p++)
        free(*p);
    free(strv);
}

int mkdir_p(const char *path, mode_t mode)
{
    cleanup_free char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int mkdir_private(const char *path)
{
    int r = mkdir_p(path, 0700);
    if (r < 0)
        return r;
    struct stat st;
    if (lstat(path, &st) < 0)
        return -errno;
    if (S_ISDIR(st.st_mode) && st.st_uid == geteuid() && (st.st_mode & 077) &&
        chmod(path, 0700) < 0)
        return -errno;
    return 0;
}

static int rm_rf_at(int parent, const char *name)
{
    if (unlinkat(parent, name, 0) == 0 || errno == ENOENT)
        return 0;
    if (errno != EISDIR && errno != EPERM)
        return -errno;
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -errno;
    }
    int r = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (streq(de->d_name, ".") || streq(de->d_name, ".."))
            continue;
        int k = rm_rf_at(dirfd(d), de->d_name);
        if (k < 0 && r == 0)
            r = k;
    }
    closedir(d);
    if (unlinkat(parent, name, AT_REMOVEDIR) < 0 && errno != ENOENT && r == 0)
        r = -errno;
    return r;
}

int rm_rf(const char *path)
{
    return rm_rf_at(AT_FDCWD, path);
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    cleanup_free char *tmp = str_printf("%s.tmp.%d", path, (int)getpid());
    if (!tmp)
        return -ENOMEM;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    const char *p = data;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int r = -errno;
            close(fd);
            unlink(tmp);
            return r;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        int r = -errno;
        unlink(tmp);
        return r;
    }
    if (rename(tmp, path) < 0) {
        int r = -errno;
        unlink(tmp);
        return r;
    }
    return 0;
}

int read_file(const char *path, char **ret, size_t *len)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t cap = 4096, n = 0;
    cleanup_free char *buf = malloc(cap);
    if (!buf)
        return -ENOMEM;
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                return -ENOMEM;
            buf = nb;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    buf[n] = 0;
    if (len)
        *len = n;
    *ret = TAKE_PTR(buf);
    return 0;
}

int read_file_tail(const char *path, size_t max, char **ret)
{
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    off_t start = st.st_size > (off_t)max ? st.st_size - (off_t)max : 0;
    cleanup_free char *buf = malloc(max + 1);
    if (!buf)
        return -ENOMEM;
    ssize_t n = pread(fd, buf, max, start);
    if (n < 0)
        return -errno;
    buf[n] = 0;
    char *s = buf;
    if (start > 0) {
        char *nl = strchr(buf, '\n');
        if (nl)
            s = nl + 1;
    }
    char *out = strdup(s);
    if (!out)
        return -ENOMEM;
    *ret = out;
    return 0;
}

bool file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

bool is_executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

char *find_in_path(const char *name)
{
    if (strchr(name, '/'))
        return is_executable(name) ? strdup(name) : NULL;
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";
    cleanup_free char *copy = strdup(path);
    if (!copy)
        return NULL;
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
        char *p = str_printf("%s/%s", dir, name);
        if (p && is_executable(p))
            return p;
        free(p);
    }
    return NULL;
}

char *self_exe_dir(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n < 0)
        return NULL;
    buf[n] = 0;
    char *slash = strrchr(buf, '/');
    if (slash)
        *slash = 0;
    return strdup(buf);
}

uint64_t now_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

uint64_t realtime_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

void sleep_usec(uint64_t usec)
{
    struct timespec ts = {.tv_sec = (time_t)(usec / 1000000ULL),
                          .tv_nsec = (long)(usec % 1000000ULL) * 1000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Parse /proc/PID/stat: the comm field may contain spaces and ')' so scan from the last ')'. */
static int proc_stat_fields(pid_t pid, char *state, uint64_t *start)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    cleanup_close int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0)
        return -EIO;
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -EIO;
    p += 2;
    if (state)
        *state = *p;
    /* p is at field 3 (state); start time is field 22 */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -EIO;
        p++;
    }
    if (start)
        *start = strtoull(p, NULL, 10);
    return 0;
}

uint64_t proc_start_time(pid_t pid)
{
    uint64_t st = 0;
    if (pid <= 0 || proc_stat_fields(pid, NULL, &st) < 0)
        return 0;
    return st;
}

char proc_state(pid_t pid)
{
    char s = 0;
    if (pid <= 0 || proc_stat_fields(pid, &s, NULL) < 0)
        return 0;
    return s;
}

bool proc_alive(pid_t pid, uint64_t start_time)
{
    char s = 0;
    uint64_t st = 0;
    if (pid <= 0 || proc_stat_fields(pid, &s, &st) < 0)
        return false;
    if (s == 'Z' || s == 'X' || s == 'x')
        return false;
    return start_time == 0 || st == start_time;
}

bool name_is_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 63 || !isalnum((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '-' && c != '_' && c != '.')
            return false;
    }
    return true;
}

bool env_name_is_valid(const char *s, size_t len)
{
    if (len == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < len; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}
