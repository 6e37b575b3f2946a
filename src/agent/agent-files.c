/* SPDX-License-Identifier: MIT */
/* vmctl-agent: file transfers: FILE_PUT (written to a temporary file, renamed at the end) and
 * FILE_GET (streamed in FILE_CHUNK frames). */
#include "agent.h"

/* --- files --- */

void put_start(struct session *s, uint32_t id, uint8_t version, const agent_file_put *fp)
{
    struct stat st;
    if (stat(fp->path, &st) == 0 && S_ISDIR(st.st_mode)) {
        send_error(s, id, version, EISDIR, "'%s' is a directory", fp->path);
        return;
    }
    struct job *j = job_new(s, id, version, JOB_PUT);
    if (!j)
        return;
    const char *slash = strrchr(fp->path, '/');
    int dl = (int)(slash - fp->path);
    j->path = strdup(fp->path);
    if (!j->path || asprintf(&j->tmp_path, "%.*s/.%s.vmctl-XXXXXX", dl, fp->path, slash + 1) < 0) {
        j->tmp_path = NULL;
        send_error(s, id, version, ENOMEM, "out of memory");
        job_free(j);
        return;
    }
    j->in_fd = mkostemp(j->tmp_path, O_CLOEXEC);
    if (j->in_fd < 0) {
        int e = errno;
        free(j->tmp_path);
        j->tmp_path = NULL;
        send_error(s, id, version, e, "cannot create '%s': %s", fp->path, strerror(e));
        job_free(j);
        return;
    }
    j->stream = true;
    j->mode = fp->mode;
    j->mtime_sec = fp->mtime_sec;
    j->mtime_nsec = fp->mtime_nsec;
}

/* STDIN data of a FILE_PUT: written at once (a regular file does not block). */
void put_data(struct job *j, const uint8_t *data, size_t len)
{
    size_t off = 0;
    while (off < len && !j->put_errno) {
        ssize_t w = write(j->in_fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            j->put_errno = w < 0 ? errno : EIO;
            break;
        }
        off += (size_t)w;
    }
    j->unacked += len;
    job_ack(j, true);
}

void put_finish(struct job *j)
{
    int e = j->put_errno;
    const char *what = "write";
    if (!e && fchmod(j->in_fd, j->mode) < 0)
        e = errno, what = "chmod";
    if (!e && j->mtime_nsec != UINT32_MAX) {
        struct timespec ts[2] = {{.tv_nsec = UTIME_OMIT},
                                 {.tv_sec = (time_t)j->mtime_sec, .tv_nsec = j->mtime_nsec}};
        if (futimens(j->in_fd, ts) < 0)
            e = errno, what = "set the time of";
    }
    if (!e && close(j->in_fd) < 0)
        e = errno;
    j->in_fd = -1;
    if (!e && rename(j->tmp_path, j->path) < 0)
        e = errno, what = "rename to";
    if (e) {
        send_error(SESS(j), j->id, j->version, e, "cannot %s '%s': %s", what, j->path, strerror(e));
    } else {
        free(j->tmp_path);
        j->tmp_path = NULL;
        agent_exit ex = {0};
        uint8_t *p = out_reserve(SESS(j), AGENT_HDR_SIZE + 12);
        if (p)
            out_commit(SESS(j), p, agent_encode_exit(p, AGENT_HDR_SIZE + 12, j->id, &ex),
                       j->version);
    }
    job_free(j);
}

void get_start(struct session *s, uint32_t id, uint8_t version, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        send_error(s, id, version, e, "cannot open '%s': %s", path, strerror(e));
        return;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        if (S_ISDIR(st.st_mode))
            send_error(s, id, version, EISDIR, "'%s' is a directory", path);
        else
            send_error(s, id, version, EINVAL, "'%s' is not a regular file", path);
        return;
    }
    struct job *j = job_new(s, id, version, JOB_GET);
    if (!j) {
        close(fd);
        return;
    }
    j->out_fd = fd;
    j->path = strdup(path);
    agent_file_info fi = {.mode = st.st_mode,
                          .size = (uint64_t)st.st_size,
                          .mtime_sec = st.st_mtim.tv_sec,
                          .mtime_nsec = (uint32_t)st.st_mtim.tv_nsec};
    uint8_t *p = out_reserve(s, AGENT_HDR_SIZE + 24);
    if (p)
        out_commit(s, p, agent_encode_file_info(p, AGENT_HDR_SIZE + 24, id, &fi), version);
}
